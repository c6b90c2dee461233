#!/usr/bin/env python3
"""Check that every fixture payload of a proto/ type decodes strictly against our .proto files.

The proxy's JSON codec rejects unknown fields, so a field istiod sends that our .proto lacks
would NACK a real config. This walks the fixture JSON for Any (`@type`) and TypedStruct
(`type_url` + `value`) payloads whose type is defined under proto/ and checks every key with
proto3 JSON rules: field name or json_name; enums by name or number; Duration as "<n>s";
wrappers as bare scalars; at most one member per oneof. It prints the fields seen per type.

Usage (after cmake/envoy_api.py has written <out>/proto):
  proto/check_fixtures.py --api-proto <out>/proto --fixtures ../shared/fixtures
Needs protoc and /usr/include/google/protobuf (libprotobuf-dev). Exit status 1 on any error.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys


def descriptor_text(own, api_proto):
    """FileDescriptorSet of proto/ plus imports, as protoc's text format (no python-protobuf)."""
    files = sorted(os.path.relpath(os.path.join(dp, f), own)
                   for dp, _, fns in os.walk(own) for f in fns if f.endswith(".proto"))
    inc = ["-I", own, "-I", api_proto, "-I", "/usr/include"]
    pb = subprocess.run(["protoc"] + inc + ["--include_imports", "--descriptor_set_out=/dev/stdout"]
                        + files, check=True, stdout=subprocess.PIPE).stdout
    return subprocess.run(["protoc", "-I", "/usr/include",
                           "--decode=google.protobuf.FileDescriptorSet",
                           "google/protobuf/descriptor.proto"], input=pb, check=True,
                          stdout=subprocess.PIPE).stdout.decode(), set(files)


def parse_text(text):
    """Text-format message -> nested dicts of lists (enough for descriptors)."""
    root = {}
    stack = [root]
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.endswith("{"):
            d = {}
            stack[-1].setdefault(line[:-1].strip(), []).append(d)
            stack.append(d)
        elif line == "}":
            stack.pop()
        else:
            k, v = line.split(":", 1)
            stack[-1].setdefault(k.strip(), []).append(v.strip().strip('"'))
    return root


class Checker:
    WKT_STRING = {"google.protobuf.Duration", "google.protobuf.Timestamp",
                  "google.protobuf.FieldMask"}
    WKT_LOOSE = re.compile(r"google\.protobuf\.((Bool|String|Bytes|U?Int(32|64)|Double|Float)"
                           r"Value|Struct|Value|ListValue|Any)$")

    def __init__(self, desc, own_files):
        self.msgs, self.enums, self.own = {}, {}, set()
        for f in desc.get("file", []):
            pkg = f.get("package", [""])[0]
            before = set(self.msgs)
            for m in f.get("message_type", []):
                self._index(m, pkg)
            for e in f.get("enum_type", []):
                self.enums[pkg + "." + e["name"][0]] = e
            if f["name"][0] in own_files:
                self.own |= set(self.msgs) - before
        self.seen = collections.defaultdict(set)
        self.errors = []

    def _index(self, m, pre):
        name = pre + "." + m["name"][0]
        self.msgs[name] = m
        for e in m.get("enum_type", []):
            self.enums[name + "." + e["name"][0]] = e
        for n in m.get("nested_type", []):
            self._index(n, name)

    def message(self, tn, v, path, root):
        if tn in self.WKT_STRING:
            if not isinstance(v, str) or (tn.endswith("Duration")
                                          and not re.fullmatch(r"-?\d+(\.\d+)?s", v)):
                self.errors.append("%s: bad %s %r" % (path, tn, v))
            return
        if self.WKT_LOOSE.match(tn):
            return
        if tn not in self.msgs:
            self.errors.append("%s: no descriptor for %s" % (path, tn))
            return
        if not isinstance(v, dict):
            self.errors.append("%s: %s wants an object" % (path, tn))
            return
        fields = {}
        for fl in self.msgs[tn].get("field", []):
            fields[fl["name"][0]] = fl
            fields[fl.get("json_name", fl["name"])[0]] = fl
        oneofs = collections.Counter()
        for k, x in v.items():
            fl = fields.get(k)
            if fl is None:
                self.errors.append("%s: %s has no field %r" % (path, tn, k))
                continue
            self.seen[root].add(path.split(":", 1)[1] + "." + k)
            if "oneof_index" in fl:
                oneofs[fl["oneof_index"][0]] += 1
            self.field(fl, x, path + "." + k, root)
        if any(n > 1 for n in oneofs.values()):
            self.errors.append("%s: several members of one oneof" % path)

    def field(self, fl, x, path, root):
        t, tn = fl["type"][0], fl.get("type_name", [""])[0].lstrip(".")
        if fl["label"][0] != "LABEL_REPEATED":
            self.value(t, tn, x, path, root)
        elif tn in self.msgs and ["true"] == self.msgs[tn].get("options", [{}])[0].get("map_entry"):
            if not isinstance(x, dict):
                self.errors.append("%s: map wants an object" % path)
        elif not isinstance(x, list):
            self.errors.append("%s: repeated field wants a list" % path)
        else:
            for y in x:
                self.value(t, tn, y, path + "[]", root)

    def value(self, t, tn, x, path, root):
        if t == "TYPE_MESSAGE":
            self.message(tn, x, path, root)
        elif t == "TYPE_ENUM":
            names = [e["name"][0] for e in self.enums[tn].get("value", [])]
            if x not in names and not (isinstance(x, int) and not isinstance(x, bool)):
                self.errors.append("%s: %r is not a %s" % (path, x, tn))
        elif t == "TYPE_BOOL":
            if not isinstance(x, bool):
                self.errors.append("%s: wants a bool" % path)
        elif t in ("TYPE_STRING", "TYPE_BYTES"):
            if not isinstance(x, str):
                self.errors.append("%s: wants a string" % path)
        elif isinstance(x, bool) or not isinstance(x, (int, float, str)):
            self.errors.append("%s: wants a number" % path)

    def payload(self, tn, v, rel):
        self.seen[tn].add("(in %s)" % os.path.basename(rel))
        self.message(tn, v, "%s:%s" % (rel, tn), tn)

    def walk(self, v, rel):
        if isinstance(v, dict):
            t = v.get("@type", "").split("/")[-1]
            if t.endswith("TypedStruct") and "type_url" in v:
                tu = v["type_url"].split("/")[-1]
                if tu in self.own:
                    self.payload(tu, v.get("value", {}), rel)
            elif t in self.own:
                self.payload(t, {k: x for k, x in v.items() if k != "@type"}, rel)
            for x in v.values():
                self.walk(x, rel)
        elif isinstance(v, list):
            for x in v:
                self.walk(x, rel)

    def file(self, path, rel):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            self.walk(json.loads(text), rel)
        except json.JSONDecodeError:
            # istio-agent's bootstrap template is Go-templated JSON: decode the TypedStruct
            # values alone, they hold no template actions.
            for m in re.finditer(r'"type_url":\s*"[^"]*/([\w.]+)",\s*"value":\s*', text):
                if m.group(1) in self.own:
                    val, _ = json.JSONDecoder().raw_decode(text, m.end())
                    self.payload(m.group(1), val, rel)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api-proto", required=True, help="<out>/proto written by envoy_api.py")
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--own", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args()
    text, own_files = descriptor_text(a.own, a.api_proto)
    c = Checker(parse_text(text), own_files)
    for dp, _, fns in os.walk(a.fixtures):
        for fn in sorted(fns):
            if fn.endswith(".json"):
                p = os.path.join(dp, fn)
                c.file(p, os.path.relpath(p, a.fixtures))
    for t in sorted(c.seen):
        print(t)
        for s in sorted(c.seen[t]):
            print("    " + s)
    top = sorted(t for t in c.own if t.rsplit(".", 1)[0] not in c.msgs)
    print("proto/ types absent from the fixtures: " + ", ".join(t for t in top if t not in c.seen))
    for e in c.errors:
        print("ERROR " + e)
    print("%d error(s)" % len(c.errors))
    return 1 if c.errors else 0


if __name__ == "__main__":
    sys.exit(main())
