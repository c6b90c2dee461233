// Validates Kubernetes manifests (multi-document YAML) against real schemas:
//   1. the OpenAPI schema of each object's apiVersion/kind: core and apps types from the
//      `kubernetes-models` package (generated from Kubernetes' OpenAPI), Istio's CRDs from
//      `@kubernetes-models/istio` (generated from Istio's CRD OpenAPI schemas); their
//      `.validate()` runs the compiled JSON-schema validators (types, enums, required fields,
//      patterns, formats);
//   2. unknown fields, which those schemas do not forbid but the API server does (kubectl's
//      strict field validation, and pruning for CRDs): every key of the document must be a
//      property of the generated TypeScript interface for its position, walked with the
//      TypeScript compiler's type checker; maps (index signatures) and open objects
//      (x-kubernetes-preserve-unknown-fields, e.g. an EnvoyFilter patch value) stop the walk.
// Usage: node validate.mjs <file.yaml>...   (run from anywhere; the packages are resolved from
// the directory this script was installed in, see test/integration/test_istio_manifests.py)
// Output: one line per document, "ok <file>#<n> <Kind>/<name>" or
// "error <file>#<n> <Kind>/<name>: <reason>"; exit status 1 when any document fails.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import ts from "typescript";

const here = path.dirname(fileURLToPath(import.meta.url));

function modulePath(apiVersion, kind) {
  const slash = apiVersion.indexOf("/");
  if (slash < 0) {
    return `kubernetes-models/${apiVersion}/${kind}`;
  }
  const group = apiVersion.slice(0, slash);
  const version = apiVersion.slice(slash + 1);
  if (group.endsWith("istio.io")) {
    return `@kubernetes-models/istio/${group}/${version}/${kind}`;
  }
  return `kubernetes-models/${group}/${version}/${kind}`;
}

function readDocs(file) {
  const text = fs.readFileSync(file, "utf8");
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true });
  const out = [];
  docs.forEach((d, i) => {
    if (d.errors.length) {
      out.push({ file, index: i, error: `YAML: ${d.errors.map((e) => e.message).join("; ")}` });
      return;
    }
    const value = d.toJS({ maxAliasCount: 0 });
    if (value === null || value === undefined) {
      return; // empty document (e.g. after a trailing ---)
    }
    out.push({ file, index: i, value });
  });
  return out;
}

function label(doc) {
  const v = doc.value || {};
  const name = (v.metadata && v.metadata.name) || "?";
  return `${doc.file}#${doc.index} ${v.kind || "?"}/${name}`;
}

// ---- unknown-field check with the TypeScript checker -------------------------------------

function buildChecker(specs) {
  // One synthetic module importing the interface of every apiVersion/kind in use.
  const lines = specs.map((s, i) => `import type { I${s.kind} as T${i} } from "${s.module}";\n` +
    `export type X${i} = T${i};`);
  const entry = path.join(here, "__types_check.ts");
  const source = lines.join("\n") + "\n";
  const options = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const orig = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, onErr, create) =>
    path.resolve(name) === entry ? ts.createSourceFile(name, source, lang, true) : orig(name, lang, onErr, create);
  const origExists = host.fileExists.bind(host);
  host.fileExists = (name) => path.resolve(name) === entry || origExists(name);
  const program = ts.createProgram([entry], options, host);
  const diags = ts.getPreEmitDiagnostics(program).filter((d) => d.file && path.resolve(d.file.fileName) === entry);
  if (diags.length) {
    const msg = diags.map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n")).join("; ");
    throw new Error(`cannot load the model types: ${msg}`);
  }
  const checker = program.getTypeChecker();
  const sf = program.getSourceFile(entry);
  const types = [];
  for (const st of sf.statements) {
    if (ts.isTypeAliasDeclaration(st)) {
      types.push(checker.getTypeAtLocation(st.name));
    }
  }
  return { checker, types };
}

function unknownFields(checker, value, type, where, errs) {
  if (value === null || typeof value !== "object") {
    return;
  }
  type = checker.getNonNullableType(type);
  if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) {
    return;
  }
  const parts = type.isUnion() ? type.types : [type];
  const objs = parts.filter((t) => t.flags & ts.TypeFlags.Object || t.isIntersection());
  if (!objs.length) {
    return; // the schema check reports the type mismatch
  }
  if (Array.isArray(value)) {
    const elem = objs.map((t) => checker.getIndexTypeOfType(t, ts.IndexKind.Number)).find(Boolean);
    if (elem) {
      value.forEach((v, i) => unknownFields(checker, v, elem, `${where}/${i}`, errs));
    }
    return;
  }
  for (const key of Object.keys(value)) {
    let sub = null;
    let open = false;
    for (const t of objs) {
      const prop = checker.getPropertyOfType(t, key);
      if (prop) {
        sub = checker.getTypeOfSymbol(prop);
        break;
      }
      const idx = checker.getIndexTypeOfType(t, ts.IndexKind.String);
      if (idx) {
        sub = idx;
        break;
      }
      if (checker.getPropertiesOfType(t).length === 0) {
        open = true; // `{}`: an object the schema leaves open
      }
    }
    if (sub) {
      unknownFields(checker, value[key], sub, `${where}/${key}`, errs);
    } else if (!open) {
      errs.push(`${where || "/"}: unknown field "${key}"`);
    }
  }
}

// CRDs whose schema is `x-kubernetes-preserve-unknown-fields: true` on the whole object, so the
// generated model has no spec: the API server accepts any field there (istioctl checks an
// IstioOperator's spec itself; the test renders the msm-media template and validates the pod
// it produces instead).
const OPEN_KINDS = new Set(["install.istio.io/v1alpha1 IstioOperator"]);

// ---- main ----------------------------------------------------------------------------------

async function main(files) {
  if (!files.length) {
    console.error("usage: node validate.mjs <file.yaml>...");
    return 2;
  }
  const docs = files.flatMap(readDocs);
  const specs = [];
  const specIndex = new Map();
  for (const d of docs) {
    if (d.error) {
      continue;
    }
    const v = d.value;
    if (typeof v !== "object" || Array.isArray(v) || typeof v.apiVersion !== "string" || typeof v.kind !== "string") {
      d.error = "not a Kubernetes object (apiVersion and kind are required)";
      continue;
    }
    const key = `${v.apiVersion} ${v.kind}`;
    if (!specIndex.has(key)) {
      const module = modulePath(v.apiVersion, v.kind);
      let Model = null;
      try {
        Model = (await import(module))[v.kind];
      } catch (e) {
        Model = null;
      }
      specIndex.set(key, Model ? specs.length : -1);
      if (Model) {
        specs.push({ kind: v.kind, module, Model });
      }
    }
    d.spec = specIndex.get(key);
    if (d.spec < 0) {
      d.error = `no schema for apiVersion ${v.apiVersion}, kind ${v.kind}`;
    }
  }
  const { checker, types } = specs.length ? buildChecker(specs) : { checker: null, types: [] };
  let failed = 0;
  for (const d of docs) {
    const errs = d.error ? [d.error] : [];
    if (!errs.length) {
      const s = specs[d.spec];
      try {
        new s.Model(d.value).validate();
      } catch (e) {
        errs.push(`schema: ${e.message}`);
      }
      if (!OPEN_KINDS.has(`${d.value.apiVersion} ${d.value.kind}`)) {
        unknownFields(checker, d.value, types[d.spec], "", errs);
      }
    }
    if (errs.length) {
      failed++;
      console.log(`error ${label(d)}: ${errs.join("; ")}`);
    } else {
      console.log(`ok ${label(d)}`);
    }
  }
  console.log(`${docs.length - failed} valid, ${failed} invalid`);
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then((rc) => process.exit(rc), (e) => {
  console.error(`validate: ${e.stack || e}`);
  process.exit(2);
});
