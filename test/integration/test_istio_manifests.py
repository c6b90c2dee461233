"""istio-integration/ assets checked against real schemas and the real proxy, not by eye.

- Every YAML object under istio-integration/ (sample manifests, EnvoyFilters, injection samples)
  is validated by istio-integration/validate/validate.mjs: the Kubernetes OpenAPI schemas
  (npm `kubernetes-models`) and Istio's CRD OpenAPI schemas (npm `@kubernetes-models/istio`),
  plus an unknown-field walk over their generated types. The npm packages are pinned with
  integrity hashes in validate/package-lock.json and installed by `npm ci` into the build tree
  (<build dir>/istio-validate), never into git. No npm registry: the test fails and says so.
- Broken copies of the manifests (made in a temp dir) must fail validation with the expected
  reason: the validator validates.
- Each EnvoyFilter's TypedStruct is decoded by msm-proxy itself (`--mode validate`) on a
  bootstrap whose listeners are what istiod would produce after the patch, so a field typo in
  an EnvoyFilter is caught; a typo planted on purpose must be rejected.
- The msm-media injection template is rendered (its Go template calls substituted as the
  injector would) and the pod it produces is validated; the annotations, labels, image name and
  binaryPath agree across the samples, the template, the EnvoyFilter selector and the Dockerfile.
- The Dockerfile is linted structurally (pinned ARGs, stages, COPY sources exist in the context
  or are produced by the build stage, final binary paths match binaryPath), and its runtime
  library bundle (image/bundle-runtime.sh) is built from the real binary and run in a root that
  holds nothing but glibc (what the distroless proxyv2 flavour offers), as uid 1337.
"""
import copy
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import harness as H

try:
    import yaml
except ImportError:  # Debian: python3-yaml (scripts/deps.sh test group)
    sys.exit("test_istio_manifests needs PyYAML for /usr/bin/python3 (apt-get install python3-yaml)")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ISTIO_DIR = os.path.join(REPO, "istio-integration")
VALIDATE_SRC = os.path.join(ISTIO_DIR, "validate")
# Folders of istio-integration/ that other parts own and that hold no deployable manifests.
NOT_MANIFESTS = ("istiogen", "agent", "e2e", "validate")
# YAML files that are not Kubernetes objects, each with its own check below.
NON_OBJECT_FILES = {
    "injection/helm-values.yaml": "Helm values for the istiod chart",
    "injection/msm-media-template.yaml": "injection template body",
}
RTSP_FILTER = "msm.filters.network.rtsp_proxy"
RTSP_TYPE = "type.googleapis.com/msm.extensions.filters.network.rtsp_proxy.v1.RtspProxy"
TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
MSM_LABEL = ("sidecar.msm.io/proxy", "msm-proxy")

_validator_dir = None


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def rel(path):
    return os.path.relpath(path, ISTIO_DIR)


def yaml_files():
    out = []
    for p in sorted(glob.glob(os.path.join(ISTIO_DIR, "**", "*.y*ml"), recursive=True)):
        parts = rel(p).split(os.sep)
        if parts[0] in NOT_MANIFESTS or "node_modules" in parts:
            continue
        out.append(p)
    return out


def object_files():
    return [p for p in yaml_files() if rel(p) not in NON_OBJECT_FILES]


def all_objects():
    return [(p, d) for p in object_files() for d in load_all(p)]


def validator_dir():
    """npm ci the pinned validator into the build tree once per lockfile (stamp = its sha256)."""
    global _validator_dir
    if _validator_dir:
        return _validator_dir
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        raise AssertionError("node and npm are required (scripts/deps.sh installs nodejs npm)")
    dest = os.path.join(os.path.dirname(H.BINARY), "istio-validate")
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(VALIDATE_SRC, "package-lock.json"), "rb") as f:
        lock = f.read()
    stamp = os.path.join(dest, ".installed")
    want = hashlib.sha256(lock).hexdigest()
    for name in ("package.json", "package-lock.json", "validate.mjs"):
        shutil.copyfile(os.path.join(VALIDATE_SRC, name), os.path.join(dest, name))
    have = open(stamp).read().strip() if os.path.exists(stamp) else ""
    if have != want or not os.path.isdir(os.path.join(dest, "node_modules")):
        try:
            r = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund",
                                "--prefer-offline", "--loglevel=error"],
                               cwd=dest, capture_output=True, text=True, timeout=240)
        except subprocess.TimeoutExpired:
            raise AssertionError("npm ci of istio-integration/validate timed out: is the npm "
                                 "registry reachable?")
        if r.returncode != 0:
            raise AssertionError(
                "npm ci of istio-integration/validate failed (the npm registry must be "
                "reachable; the packages are pinned with integrity in package-lock.json):\n%s"
                % (r.stdout + r.stderr)[-4000:])
        with open(stamp, "w") as f:
            f.write(want + "\n")
    _validator_dir = dest
    return dest


def run_validator(files):
    d = validator_dir()
    r = subprocess.run(["node", os.path.join(d, "validate.mjs")] + list(files),
                       capture_output=True, text=True, timeout=120)
    if r.returncode not in (0, 1):
        raise AssertionError("validator crashed (exit %d):\n%s" % (r.returncode, r.stdout + r.stderr))
    return r


def render_template(body, annotations):
    """Substitute the injector's `annotation .ObjectMeta` calls the way istiod renders them;
    anything else left in {{ }} is a construct this check does not know and fails it."""
    def sub(m):
        return annotations.get(m.group(1), m.group(2))
    out = re.sub(r"\{\{\s*annotation\s+\.ObjectMeta\s+`([^`]+)`\s+`([^`]*)`\s*\}\}", sub, body)
    if "{{" in out:
        raise AssertionError("template has Go template calls this test does not render: %s"
                             % re.findall(r"\{\{.*?\}\}", out))
    return yaml.safe_load(out)


def merge_pod(pod, patch):
    """Strategic merge of an injection template result into a pod: maps merge, containers merge
    by name (as the injector's patch does)."""
    def merge(a, b, key=None):
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = merge(a.get(k), v, k) if k in a else v
            return out
        if key in ("containers", "initContainers", "volumes") and isinstance(a, list):
            out = [dict(x) for x in a]
            for item in b:
                for i, x in enumerate(out):
                    if x.get("name") == item.get("name"):
                        out[i] = merge(x, item)
                        break
                else:
                    out.append(item)
            return out
        return b
    return merge(pod, patch)


def parse_dockerfile(path):
    """[(instruction, args-string, line)], continuations joined, comments and parser directives
    dropped."""
    out = []
    buf, start = "", None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            s = line.rstrip("\n")
            if not buf and (not s.strip() or s.lstrip().startswith("#")):
                continue
            if buf and s.lstrip().startswith("#"):
                continue
            if start is None:
                start = n
            if s.endswith("\\"):
                buf += s[:-1] + " "
                continue
            buf += s
            m = re.match(r"\s*([A-Za-z]+)\s+(.*)$", buf)
            if not m:
                raise AssertionError("Dockerfile line %d: cannot parse %r" % (start, buf))
            out.append((m.group(1).upper(), m.group(2).strip(), start))
            buf, start = "", None
    if buf:
        raise AssertionError("Dockerfile ends inside a continued line")
    return out


def deployments_with_pods():
    for p, d in all_objects():
        if d.get("kind") == "Deployment":
            yield p, d, d["spec"]["template"]


def make_istio_like_bootstrap(filters, port_hint):
    """A bootstrap whose listener has the filter chain istiod produces for the RTSP port after
    the EnvoyFilter patch (the patched filter list is passed in), with STATIC stand-ins for the
    clusters the tcp_proxy names."""
    clusters = []
    for f in filters:
        if f["name"] == TCP_PROXY:
            tc = f["typed_config"]
            names = [tc["cluster"]] if "cluster" in tc else \
                [c["name"] for c in tc["weighted_clusters"]["clusters"]]
            for name in names:
                clusters.append(H.cluster(name, [H.sock_addr(1)]))
    return H.bootstrap(listeners=[H.listener("l%d" % port_hint, H.sock_addr(H.free_port()),
                                             filters)],
                       clusters=clusters, admin=False)


def istiod_filters(context, port):
    """The network filters istiod builds for the camera's RTSP port (tcp-rtsp: plain TCP) in the
    given context, before EnvoyFilters (reference/istio-contract.md 4.2, 4.3)."""
    host = "camera.media.svc.cluster.local"
    tcp = {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"}
    if context == "SIDECAR_OUTBOUND":
        tcp.update({"stat_prefix": "camera.media", "weighted_clusters": {"clusters": [
            {"name": "outbound|%d|v1|%s" % (port, host), "weight": 90},
            {"name": "outbound|%d|v2|%s" % (port, host), "weight": 10}]}})
    else:
        tcp.update({"stat_prefix": "inbound|%d||" % port, "cluster": "inbound|%d||" % port})
    return [{"name": TCP_PROXY, "typed_config": tcp}]


def apply_network_filter_patch(filters, patch):
    """istiod's INSERT_BEFORE for NETWORK_FILTER with a filter-name match
    (pilot/pkg/networking/core/envoyfilter/listener_patch.go, patchNetworkFilters)."""
    name = patch["match"]["listener"]["filterChain"]["filter"]["name"]
    out = []
    inserted = False
    for f in filters:
        if not inserted and f["name"] == name:
            out.append(copy.deepcopy(patch["patch"]["value"]))
            inserted = True
        out.append(f)
    return out, inserted


def as_struct(v):
    """What a google.protobuf.Struct does to a value on its way through istiod: every number
    becomes a double."""
    if isinstance(v, dict):
        return {k: as_struct(x) for k, x in v.items()}
    if isinstance(v, list):
        return [as_struct(x) for x in v]
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return float(v)
    return v


class ManifestSchemaTest(H.ProxyTestCase):
    def test_every_manifest_is_valid(self):
        files = object_files()
        self.assertGreaterEqual(len(files), 8, files)
        r = run_validator(files)
        self.assertEqual(r.returncode, 0, "schema validation failed:\n" + r.stdout + r.stderr)
        oks = [l for l in r.stdout.splitlines() if l.startswith("ok ")]
        docs = sum(len(load_all(p)) for p in files)
        self.assertEqual(len(oks), docs, r.stdout)
        kinds = {d["kind"] for _, d in all_objects()}
        for k in ("Namespace", "ServiceAccount", "Service", "Deployment", "VirtualService",
                  "DestinationRule", "PeerAuthentication", "AuthorizationPolicy", "EnvoyFilter",
                  "IstioOperator"):
            self.assertIn(k, kinds)

    def test_every_yaml_file_is_accounted_for(self):
        for p in yaml_files():
            docs = load_all(p)
            self.assertTrue(docs, "%s is empty" % rel(p))
            if rel(p) in NON_OBJECT_FILES:
                continue
            for d in docs:
                self.assertIsInstance(d, dict, rel(p))
                self.assertIn("apiVersion", d, "%s: a document without apiVersion" % rel(p))
                self.assertIn("kind", d, rel(p))

    def test_manifests_are_plain_one_object_per_document(self):
        # The e2e generator reads these files: no Helm/Go templating, one object per document.
        for p in glob.glob(os.path.join(ISTIO_DIR, "manifests", "*.yaml")):
            with open(p) as f:
                text = f.read()
            self.assertNotIn("{{", text, rel(p))
            for d in load_all(p):
                self.assertNotEqual(d.get("kind"), "List", rel(p))
                self.assertEqual(d.get("metadata", {}).get("namespace", "media")
                                 if d["kind"] != "Namespace" else "media", "media", rel(p))

    def test_broken_copies_fail(self):
        src = os.path.join(ISTIO_DIR, "manifests")
        # (file, text to replace, replacement, what the validator must say)
        cases = [
            ("traffic.yaml", "weight: 10\n", 'weight: "10"\n', "weight must be integer"),
            ("traffic.yaml", "outlierDetection:", "outlierDetecton:",
             'unknown field "outlierDetecton"'),
            ("traffic.yaml", "mode: ISTIO_MUTUAL", "mode: ISTIO_MUTUALL", "allowed values"),
            ("security.yaml", "mode: STRICT", "mode: STRICTEST", "allowed values"),
            ("security.yaml", "action: ALLOW", "action: PERMIT", "allowed values"),
            ("envoyfilter-rtsp.yaml", "operation: INSERT_BEFORE", "operation: INSERT_BEFOR",
             "allowed values"),
            ("envoyfilter-rtsp.yaml", "context: SIDECAR_INBOUND", "context: SIDECAR_IN",
             "allowed values"),
            ("envoyfilter-rtsp.yaml", "portNumber: 8554", "portNumbr: 8554",
             'unknown field "portNumbr"'),
            ("camera.yaml", "containerPort: 8554", 'containerPort: "8554"', "must be integer"),
            ("camera.yaml", "serviceAccountName: camera", "serviceAcountName: camera",
             'unknown field "serviceAcountName"'),
            ("camera.yaml", "  selector:\n    matchLabels:\n      app: camera\n      version: v1\n",
             "", "must have required property selector"),
            ("clients.yaml", "kind: ServiceAccount", "kind: ServiceAcount", "no schema"),
        ]
        work = os.path.join(self.tmp, "broken")
        for i, (name, old, new, expect) in enumerate(cases):
            with open(os.path.join(src, name)) as f:
                text = f.read()
            self.assertIn(old, text, "case %d: %r not in %s" % (i, old, name))
            d = os.path.join(work, str(i))
            os.makedirs(d)
            with open(os.path.join(d, name), "w") as f:
                f.write(text.replace(old, new, 1))
        # The unmodified copies pass...
        good = os.path.join(work, "good")
        shutil.copytree(src, good)
        r = run_validator(sorted(glob.glob(os.path.join(good, "*.yaml"))))
        self.assertEqual(r.returncode, 0, r.stdout)
        # ...and every broken one fails, for the planted reason.
        for i, (name, old, new, expect) in enumerate(cases):
            r = run_validator([os.path.join(work, str(i), name)])
            self.assertEqual(r.returncode, 1, "case %d (%s: %r -> %r) passed:\n%s"
                             % (i, name, old, new, r.stdout))
            self.assertIn(expect, r.stdout, "case %d" % i)

    def test_validator_packages_are_pinned(self):
        with open(os.path.join(VALIDATE_SRC, "package.json")) as f:
            pkg = json.load(f)
        for name, ver in pkg["dependencies"].items():
            self.assertRegex(ver, r"^\d+\.\d+\.\d+$", "%s must be pinned exactly" % name)
        with open(os.path.join(VALIDATE_SRC, "package-lock.json")) as f:
            lock = json.load(f)
        self.assertGreaterEqual(lock["lockfileVersion"], 2)
        entries = {k: v for k, v in lock["packages"].items() if k}
        self.assertTrue(entries)
        for k, v in entries.items():
            self.assertRegex(v.get("integrity", ""), r"^sha512-", "%s has no sha512 integrity" % k)
            # npm may omit "resolved" (then the configured registry is used); never another host.
            self.assertTrue(v.get("resolved", "https://registry.npmjs.org/")
                            .startswith("https://registry.npmjs.org/"), k)
        for name, ver in pkg["dependencies"].items():
            self.assertEqual(entries["node_modules/" + name]["version"], ver)

    def test_invalid_yaml_fails(self):
        p = os.path.join(self.tmp, "dup.yaml")
        with open(p, "w") as f:
            f.write("apiVersion: v1\nkind: ServiceAccount\nkind: Service\nmetadata: {name: x}\n")
        r = run_validator([p])
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("YAML", r.stdout)


class ScenarioTest(unittest.TestCase):
    """The camera scenario the e2e test also uses: names and wiring agree across objects."""

    def objs(self, kind):
        return [d for _, d in all_objects() if d["kind"] == kind
                and d.get("metadata", {}).get("namespace") == "media"
                and rel(_).startswith("manifests")]

    def test_camera_service_and_versions(self):
        svc = [s for s in self.objs("Service") if s["metadata"]["name"] == "camera"]
        self.assertEqual(len(svc), 1)
        ports = svc[0]["spec"]["ports"]
        self.assertEqual([(p["name"], p["port"]) for p in ports], [("tcp-rtsp", 8554)])
        deps = {d["metadata"]["name"]: d for d in self.objs("Deployment")}
        for v in ("v1", "v2"):
            pod = deps["camera-" + v]["spec"]["template"]
            self.assertEqual(pod["metadata"]["labels"]["app"], "camera")
            self.assertEqual(pod["metadata"]["labels"]["version"], v)
            self.assertEqual(pod["spec"]["serviceAccountName"], "camera")
        self.assertEqual(deps["viewer"]["spec"]["template"]["spec"]["serviceAccountName"], "viewer")
        self.assertEqual(deps["intruder"]["spec"]["template"]["spec"]["serviceAccountName"],
                         "intruder")
        sas = {s["metadata"]["name"] for s in self.objs("ServiceAccount")}
        self.assertEqual(sas, {"camera", "viewer", "intruder"})

    def test_routing_and_policy(self):
        vs = self.objs("VirtualService")[0]["spec"]
        routes = vs["tcp"][0]["route"]
        self.assertEqual([(r["destination"]["subset"], r["weight"]) for r in routes],
                         [("v1", 90), ("v2", 10)])
        dr = self.objs("DestinationRule")[0]["spec"]
        self.assertEqual(dr["trafficPolicy"]["tls"]["mode"], "ISTIO_MUTUAL")
        self.assertIn("loadBalancer", dr["trafficPolicy"])
        self.assertIn("outlierDetection", dr["trafficPolicy"])
        self.assertEqual({s["name"]: s["labels"]["version"] for s in dr["subsets"]},
                         {"v1": "v1", "v2": "v2"})
        pa = self.objs("PeerAuthentication")[0]["spec"]
        self.assertEqual(pa["mtls"]["mode"], "STRICT")
        ap = self.objs("AuthorizationPolicy")
        self.assertEqual(len(ap), 1)
        ap = ap[0]["spec"]
        self.assertEqual(ap["action"], "ALLOW")
        principals = [p for r in ap["rules"] for s in r["from"] for p in s["source"]["principals"]]
        self.assertEqual(principals, ["cluster.local/ns/media/sa/viewer"])
        self.assertNotIn("cluster.local/ns/media/sa/intruder", principals)
        ports = [p for r in ap["rules"] for t in r["to"] for p in t["operation"]["ports"]]
        self.assertEqual(ports, ["8554"])


class EnvoyFilterTest(H.ProxyTestCase):
    def envoyfilters(self):
        efs = [(p, d) for p, d in all_objects() if d["kind"] == "EnvoyFilter"]
        self.assertTrue(efs)
        return efs

    def test_patches_are_exact(self):
        for p, ef in self.envoyfilters():
            seen = set()
            for cp in ef["spec"]["configPatches"]:
                self.assertEqual(cp["applyTo"], "NETWORK_FILTER")
                m = cp["match"]
                self.assertIn(m["context"], ("SIDECAR_INBOUND", "SIDECAR_OUTBOUND"))
                lis = m["listener"]
                # istiod ignores portName (not implemented): never rely on it.
                self.assertNotIn("portName", lis, rel(p))
                self.assertEqual(lis["filterChain"]["filter"]["name"], TCP_PROXY)
                self.assertEqual(cp["patch"]["operation"], "INSERT_BEFORE")
                v = cp["patch"]["value"]
                self.assertEqual(v["name"], RTSP_FILTER)
                tc = v["typed_config"]
                self.assertEqual(tc["@type"], TYPED_STRUCT)
                self.assertEqual(tc["type_url"], RTSP_TYPE)
                self.assertIsInstance(tc["value"], dict)
                seen.add((m["context"], lis["portNumber"]))
                mp = tc["value"].get("media_protection", {}).get("mode", "DISABLED")
                if m["context"] == "SIDECAR_OUTBOUND" and lis["portNumber"] == 8554:
                    # In-mesh cameras: media between sidecars only ever inside mTLS.
                    self.assertEqual(mp, "INTERLEAVED", rel(p))
                if m["context"] == "SIDECAR_INBOUND" or lis["portNumber"] == 554:
                    # The camera leg is pod-local; 554 may be a camera outside the mesh.
                    self.assertEqual(mp, "DISABLED", rel(p))
            for port in (8554, 554):
                for ctx in ("SIDECAR_INBOUND", "SIDECAR_OUTBOUND"):
                    self.assertIn((ctx, port), seen, "%s: no %s patch for %d" % (rel(p), ctx, port))
            sel = ef["spec"]["workloadSelector"]["labels"]
            self.assertEqual(sel, dict([MSM_LABEL]))

    def validate_bootstrap(self, cfg, name):
        path = os.path.join(self.tmp, name + ".json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        return self.run_binary(["--mode", "validate", "-c", path]), path

    def test_typed_struct_decodes_in_msm_proxy(self):
        n = 0
        for p, ef in self.envoyfilters():
            for i, cp in enumerate(ef["spec"]["configPatches"]):
                ctx, port = cp["match"]["context"], cp["match"]["listener"]["portNumber"]
                for struct in (False, True):
                    filters, ok = apply_network_filter_patch(istiod_filters(ctx, port), cp)
                    self.assertTrue(ok)
                    if struct:
                        filters[0]["typed_config"]["value"] = as_struct(
                            filters[0]["typed_config"]["value"])
                    cfg = make_istio_like_bootstrap(filters, port)
                    r, path = self.validate_bootstrap(cfg, "ef%d-%d" % (i, struct))
                    self.assertEqual(r.returncode, 0, "%s patch %d (%s %d) rejected by msm-proxy:"
                                     "\n%s" % (rel(p), i, ctx, port, r.stdout + r.stderr))
                    n += 1
        self.assertGreaterEqual(n, 8)

    def test_typo_in_typed_struct_is_rejected(self):
        _, ef = self.envoyfilters()[0]
        cp = ef["spec"]["configPatches"][0]
        bad_cases = [
            ("stat_prefx", "x", 'unknown field "stat_prefx"'),
            ("session_timeout", "sixty", "session_timeout"),
            ("rtp_port_range", {"start": 20000, "end": 20000}, "rtp_port_range"),
        ]
        for key, val, expect in bad_cases:
            patch = copy.deepcopy(cp)
            patch["patch"]["value"]["typed_config"]["value"][key] = val
            filters, _ = apply_network_filter_patch(
                istiod_filters(cp["match"]["context"], 8554), patch)
            r, _ = self.validate_bootstrap(make_istio_like_bootstrap(filters, 8554), "bad-" + key)
            self.assertEqual(r.returncode, 1, "%s=%r accepted" % (key, val))
            self.assertIn(expect, r.stdout + r.stderr)
        # A wrong type_url is not silently ignored either.
        patch = copy.deepcopy(cp)
        patch["patch"]["value"]["typed_config"]["type_url"] = RTSP_TYPE + "X"
        filters, _ = apply_network_filter_patch(istiod_filters("SIDECAR_OUTBOUND", 8554), patch)
        r, _ = self.validate_bootstrap(make_istio_like_bootstrap(filters, 8554), "bad-url")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)

    def test_no_sip_manifest_until_a_sip_filter_exists(self):
        # SIP is a documented TODO (README): no EnvoyFilter may name a filter that does not exist.
        for p, ef in self.envoyfilters():
            for cp in ef["spec"]["configPatches"]:
                self.assertNotIn("sip", json.dumps(cp["patch"]["value"]).lower(), rel(p))
        with open(os.path.join(ISTIO_DIR, "README.md")) as f:
            self.assertIn("tcp-sip", f.read())


class InjectionTest(H.ProxyTestCase):
    def image_and_paths(self):
        df = parse_dockerfile(os.path.join(ISTIO_DIR, "image", "Dockerfile"))
        final = None
        for i, (ins, args, _) in enumerate(df):
            if ins == "FROM":
                final = i
        dests = set()
        for ins, args, _ in df[final:]:
            if ins == "COPY":
                dests.add(args.split()[-1])
        return dests

    def sample_image(self):
        images = set()
        for p, d, pod in deployments_with_pods():
            a = pod["metadata"].get("annotations", {})
            if "sidecar.istio.io/proxyImage" in a:
                images.add(a["sidecar.istio.io/proxyImage"])
        self.assertEqual(len(images), 1, images)
        return images.pop()

    def test_annotation_route(self):
        dests = self.image_and_paths()
        n = 0
        for p, d, pod in deployments_with_pods():
            a = pod["metadata"].get("annotations", {})
            if "sidecar.istio.io/proxyImage" not in a:
                continue
            n += 1
            img = a["sidecar.istio.io/proxyImage"]
            self.assertIn("/", img, "the injector uses the value verbatim only if it has a '/'")
            self.assertRegex(img, r":1\.\d+\.\d+-msm")
            pc = json.loads(a["proxy.istio.io/config"])
            self.assertIn(pc["binaryPath"], dests, "binaryPath not in the image: %s" % rel(p))
            self.assertEqual(pod["metadata"]["labels"].get(MSM_LABEL[0]), MSM_LABEL[1], rel(p))
            self.assertTrue(a.get("sidecar.istio.io/statsInclusionPrefixes", "")
                            .startswith("rtsp."), rel(p))
        self.assertGreaterEqual(n, 5)
        # Envoy's own path is in the image too (the template route needs no binaryPath).
        self.assertIn("/usr/local/bin/envoy", dests)
        self.assertIn("/usr/local/bin/msm-proxy", dests)

    def test_template_route(self):
        body_file = os.path.join(ISTIO_DIR, "injection", "msm-media-template.yaml")
        with open(body_file) as f:
            body = f.read()
        body = body[body.index("metadata:"):]
        iop = load_all(os.path.join(ISTIO_DIR, "injection", "istio-operator.yaml"))[0]
        helm = load_all(os.path.join(ISTIO_DIR, "injection", "helm-values.yaml"))[0]
        t_iop = iop["spec"]["values"]["sidecarInjectorWebhook"]["templates"]["msm-media"]
        t_helm = helm["sidecarInjectorWebhook"]["templates"]["msm-media"]
        self.assertEqual(t_iop, body)
        self.assertEqual(t_helm, body)
        self.assertEqual(set(helm), {"sidecarInjectorWebhook"})
        # Pods selecting the template list Istio's sidecar template first.
        users = []
        for p, d, pod in deployments_with_pods():
            t = pod["metadata"].get("annotations", {}).get("inject.istio.io/templates")
            if t is None:
                continue
            names = [x.strip() for x in t.split(",")]
            self.assertEqual(names, ["sidecar", "msm-media"], rel(p))
            users.append((p, d, pod))
        self.assertTrue(users)
        # Render it for each such pod (and once with a proxyImage override), merge it into the
        # pod as the injector does, and validate the resulting Pod against the schema.
        image = self.sample_image()
        pods = []
        for p, d, pod in users:
            for override in (None, "registry.example.com/other/proxy:1.24.3-msm9"):
                ann = dict(pod["metadata"].get("annotations", {}))
                if override:
                    ann["sidecar.istio.io/proxyImage"] = override
                patch = render_template(body, ann)
                injected = {"metadata": copy.deepcopy(pod["metadata"]),
                            "spec": copy.deepcopy(pod["spec"])}
                injected["spec"]["containers"].append(
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.3",
                     "args": ["proxy", "sidecar"]})
                out = merge_pod(injected, patch)
                proxy = [c for c in out["spec"]["containers"] if c["name"] == "istio-proxy"]
                self.assertEqual(len(proxy), 1)
                self.assertEqual(proxy[0]["image"], override or image)
                self.assertEqual(proxy[0]["args"], ["proxy", "sidecar"])
                self.assertEqual(out["metadata"]["labels"][MSM_LABEL[0]], MSM_LABEL[1])
                pod_obj = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": dict(out["metadata"], name="%s-x" % d["metadata"]["name"],
                                            namespace="media"),
                           "spec": out["spec"]}
                pods.append(pod_obj)
        path = os.path.join(self.tmp, "rendered-pods.yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(pods, f)
        r = run_validator([path])
        self.assertEqual(r.returncode, 0, r.stdout)


class DockerfileTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.df_path = os.path.join(ISTIO_DIR, "image", "Dockerfile")
        self.df = parse_dockerfile(self.df_path)

    def stages(self):
        stages, cur = [], None
        for ins, args, line in self.df:
            if ins == "FROM":
                cur = {"from": args, "ins": []}
                stages.append(cur)
            elif cur is not None:
                cur["ins"].append((ins, args, line))
        return stages

    def test_pinned_args(self):
        args = {}
        for ins, a, _ in self.df:
            if ins == "FROM":
                break
            self.assertEqual(ins, "ARG")
            k, _, v = a.partition("=")
            args[k] = v
        self.assertRegex(args["ISTIO_VERSION"], r"^1\.2[2-9]\.\d+$", "pin an exact Istio release")
        self.assertEqual(args["ISTIO_HUB"], "docker.io/istio")
        self.assertEqual(args["BUILDER_IMAGE"], "debian:12")
        self.assertIn("PROXYV2_FLAVOR", args)
        # The samples' image tag carries the same Istio version.
        img = InjectionTest.sample_image(self)
        self.assertIn(":%s-msm" % args["ISTIO_VERSION"], img)

    def test_stages(self):
        st = self.stages()
        self.assertEqual(st[0]["from"], "${BUILDER_IMAGE} AS build")
        self.assertEqual(st[-1]["from"], "istio")
        self.assertIn("${ISTIO_HUB}/proxyv2:${ISTIO_VERSION}${PROXYV2_FLAVOR} AS istio",
                      [s["from"] for s in st])
        runs = " ".join(a for i, a, _ in st[0]["ins"] if i == "RUN")
        self.assertIn("scripts/deps.sh build", runs)
        self.assertIn("--target msm-proxy", runs)
        self.assertIn("bundle-runtime.sh /build/msm-proxy /out", runs)
        # The final stage runs on a possibly shell-less base: exec-form RUN only, and it runs
        # both binary paths once.
        finals = [(i, a) for i, a, _ in st[-1]["ins"] if i == "RUN"]
        for _, a in finals:
            self.assertTrue(a.startswith("["), "shell-form RUN in the final stage: " + a)
            json.loads(a)
        ran = {json.loads(a)[0] for _, a in finals}
        self.assertEqual(ran, {"/usr/local/bin/envoy", "/usr/local/bin/msm-proxy"})

    def test_copy_sources_exist(self):
        ignore = []
        with open(self.df_path + ".dockerignore") as f:
            ignore = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        st = self.stages()
        out = os.path.join(self.tmp, "out")
        os.makedirs(out)
        # What the build stage produces: run its bundling script on the real binary.
        self.assertIsNotNone(shutil.which("patchelf"), "patchelf is needed (scripts/deps.sh)")
        r = subprocess.run(["sh", os.path.join(ISTIO_DIR, "image", "bundle-runtime.sh"), H.BINARY,
                            out], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        n_from_build = 0
        for s in st:
            for ins, a, line in s["ins"]:
                if ins != "COPY":
                    continue
                parts = a.split()
                frm = [x for x in parts if x.startswith("--from=")]
                srcs = [x for x in parts[:-1] if not x.startswith("--")]
                self.assertTrue(srcs, "line %d" % line)
                for src in srcs:
                    if not frm:
                        path = os.path.join(REPO, src)
                        self.assertTrue(os.path.exists(path),
                                        "Dockerfile:%d: COPY source %s not in the context" % (line, src))
                        for pat in ignore:
                            self.assertFalse(src.rstrip("/") == pat.rstrip("/"),
                                             "COPY source %s is dockerignored" % src)
                    elif frm == ["--from=build"]:
                        self.assertTrue(src.startswith("/out/"), src)
                        self.assertTrue(os.path.exists(os.path.join(out, src[len("/out/"):])),
                                        "Dockerfile:%d: %s is not produced by the build stage"
                                        % (line, src))
                        n_from_build += 1
                    else:
                        self.assertEqual(frm, ["--from=istio"], "line %d" % line)
                        self.assertEqual(src, "/usr/local/bin/envoy")
        self.assertGreaterEqual(n_from_build, 3)

    def test_build_stage_copies_every_source_dir(self):
        # Every top-level path the root CMakeLists.txt reads must be copied into the build stage
        # (test/ is not: the image builds with -DBUILD_TESTING=OFF).
        with open(os.path.join(REPO, "CMakeLists.txt")) as f:
            cm = f.read()
        needed = set(re.findall(r"\$\{CMAKE_SOURCE_DIR\}/([A-Za-z0-9_.-]+)", cm))
        self.assertTrue(needed)
        copied = set()
        for ins, a, _ in self.stages()[0]["ins"]:
            if ins == "COPY" and "--from" not in a:
                for src in a.split()[:-1]:
                    copied.add(src.rstrip("/").split("/")[0])
        self.assertIn("CMakeLists.txt", copied)
        self.assertFalse(needed - copied, "not copied into the build stage: %s" % (needed - copied))
        runs = " ".join(a for i, a, _ in self.stages()[0]["ins"] if i == "RUN")
        self.assertIn("-DBUILD_TESTING=OFF", runs)

    def test_bundle_runs_with_only_glibc_as_uid_1337(self):
        """The distroless flavour of proxyv2 offers glibc and little else: build a root holding
        only glibc + the bundle, and run msm-proxy there as pilot-agent does (uid 1337),
        including loading a config (protobuf, YAML, regex libraries) with the RTSP filter."""
        if shutil.which("unshare") is None or shutil.which("chroot") is None:
            self.fail("unshare and chroot (util-linux, coreutils) are needed")
        root = os.path.join(self.tmp, "root")
        r = subprocess.run(["sh", os.path.join(ISTIO_DIR, "image", "bundle-runtime.sh"), H.BINARY,
                            root], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        libs = os.listdir(os.path.join(root, "usr/local/lib/msm-proxy"))
        self.assertFalse([l for l in libs if re.match(r"lib(c|m|pthread|dl)\.so", l)], libs)
        # glibc pieces, from wherever this system's loader finds them.
        ld = subprocess.run(["ldd", H.BINARY], capture_output=True, text=True).stdout
        for line in ld.splitlines():
            m = re.search(r"(/\S*/(libc|libm|ld-linux[^/\s]*)\.so[^\s]*)", line)
            if m:
                src = m.group(1)
                dst = os.path.join(root, src.lstrip("/"))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy(os.path.realpath(src), dst)
        os.makedirs(os.path.join(root, "proc"))
        os.makedirs(os.path.join(root, "etc"))
        os.chmod(root, 0o755)
        _, ef = [(p, d) for p, d in all_objects() if d["kind"] == "EnvoyFilter"][0]
        cp = ef["spec"]["configPatches"][0]
        filters, _ = apply_network_filter_patch(istiod_filters(cp["match"]["context"], 8554), cp)
        with open(os.path.join(root, "etc", "boot.json"), "w") as f:
            json.dump(make_istio_like_bootstrap(filters, 8554), f)
        cmd = ("mount -t proc proc %s/proc && "
               "chroot --userspec=1337:1337 %s /usr/local/bin/msm-proxy --version && "
               "chroot --userspec=1337:1337 %s /usr/local/bin/msm-proxy --mode validate "
               "-c /etc/boot.json" % (root, root, root))
        pre = ["unshare", "-m", "-p", "-f"] if os.geteuid() == 0 else \
            ["unshare", "-r", "-m", "-p", "-f"]
        env = dict(os.environ)
        env.update(H.SANITIZER_ENV)
        # An ASan build wants /proc/self/maps and no leak checking of a chrooted helper.
        env["ASAN_OPTIONS"] = env["ASAN_OPTIONS"].replace("detect_leaks=1", "detect_leaks=0")
        r = subprocess.run(pre + ["sh", "-c", cmd], capture_output=True, text=True, timeout=60,
                           env=env)
        self.assertEqual(r.returncode, 0, "bundle does not run with only glibc:\n%s"
                         % (r.stdout + r.stderr))
        self.assertIn("version: msm-proxy/", r.stdout + r.stderr)
        self.assertIn("OK", r.stdout + r.stderr)


if __name__ == "__main__":
    H.main()
