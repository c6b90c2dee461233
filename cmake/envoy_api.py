#!/usr/bin/env python3
"""Fetch, verify, preprocess and compile Envoy's API protos for msm-proxy.

Runs at CMake configure time. Steps:
  1. source: ENVOY_API_DIR (a directory laid out like the package's deps/: envoy-api/, xds/,
     googleapis/, protoc-gen-validate/; a data-plane-api checkout with those roots beside it also
     works), or `npm pack @grpc/grpc-js-xds@<pin>` cached in the build tree, its sha512
     integrity checked against the pin before anything is extracted;
  2. preprocess into <out>/proto: strip (validate.*) options and the validate import (PGV fields
     newer than the bundled validate.proto; they never change the wire format), rename the field
     `base` (it collides with protobuf-c's `base` member; the codec maps `base_` back to `base`);
  3. closure: every file reachable through imports from the roots listed in
     cmake/envoy_api_roots.txt plus our own proto/ files;
  4. protoc-c over the closure into <out>/gen; writes <out>/sources.txt for CMake.
Nothing downloaded is ever written outside the build tree.
"""
import argparse
import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile

PIN_NAME = "@grpc/grpc-js-xds"
PIN_VERSION = "1.14.1"
PIN_INTEGRITY = ("sha512-F2mVXwEeMWw1znPUrp+8ykjsIOVnf7Rv+EyIvXOfz73w5tNolCnzokpLkE/d2Ehx30PJmZXq"
                 "CQdMpx8DcBJohA==")
TARBALL = "grpc-grpc-js-xds-%s.tgz" % PIN_VERSION
ROOT_DIRS = ["envoy-api", "xds", "googleapis", "protoc-gen-validate", "."]
SYSTEM_INCLUDE = "/usr/include"
PREP_VERSION = "4"  # bump when the preprocessing changes


def die(msg):
    sys.stderr.write("envoy_api: error: %s\n" % msg)
    sys.exit(1)


def integrity_of(path):
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def fetch_package(cache):
    os.makedirs(cache, exist_ok=True)
    tgz = os.path.join(cache, TARBALL)
    if not os.path.exists(tgz) or integrity_of(tgz) != PIN_INTEGRITY:
        sys.stderr.write("envoy_api: npm pack %s@%s\n" % (PIN_NAME, PIN_VERSION))
        try:
            subprocess.run(["npm", "pack", "--silent", "%s@%s" % (PIN_NAME, PIN_VERSION),
                            "--pack-destination", cache], check=True, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as e:
            die("cannot download %s@%s with npm (%s); set ENVOY_API_DIR to a local copy"
                % (PIN_NAME, PIN_VERSION, e))
    got = integrity_of(tgz)
    if got != PIN_INTEGRITY:
        os.unlink(tgz)
        die("integrity mismatch for %s: expected %s, got %s" % (TARBALL, PIN_INTEGRITY, got))
    dest = os.path.join(cache, "pkg-" + PIN_VERSION)
    stamp = os.path.join(dest, ".ok")
    if not os.path.exists(stamp):
        shutil.rmtree(dest, ignore_errors=True)
        with tarfile.open(tgz) as t:
            members = [m for m in t.getmembers() if m.name.startswith("package/deps/")
                       and m.isfile() and m.name.endswith(".proto") and ".." not in m.name]
            t.extractall(dest, members=members)
        open(stamp, "w").close()
    return os.path.join(dest, "package", "deps")


# ---- preprocessing -------------------------------------------------------------------------

def skip_value(s, i):
    """Return the index just past an option value starting at s[i] (scalar, string or {...})."""
    n = len(s)
    while i < n and s[i].isspace():
        i += 1
    if i < n and s[i] == "{":
        depth = 0
        while i < n:
            c = s[i]
            if c in "\"'":
                i = skip_string(s, i)
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        die("unbalanced braces in option value")
    if i < n and s[i] in "\"'":
        i = skip_string(s, i)
        while True:  # adjacent string literals concatenate
            j = i
            while j < n and s[j].isspace():
                j += 1
            if j < n and s[j] in "\"'":
                i = skip_string(s, j)
            else:
                return i
    while i < n and s[i] not in ",];":
        i += 1
    return i


def skip_string(s, i):
    q = s[i]
    i += 1
    while i < len(s) and s[i] != q:
        if s[i] == "\\":
            i += 1
        i += 1
    return i + 1


OPT_RE = re.compile(r"\(validate\.[a-z_]+\)[A-Za-z0-9_.]*\s*=")


def strip_validate(text):
    text = re.sub(r'^\s*import\s+"validate/validate.proto";\s*$', "", text, flags=re.M)
    # statement options: option (validate.required) = true;
    text = re.sub(r"^\s*option\s+\(validate\.[a-z_]+\)[A-Za-z0-9_.]*\s*=\s*[^;]*;\s*$", "",
                  text, flags=re.M)
    out = []
    i = 0
    while True:
        m = OPT_RE.search(text, i)
        if not m:
            out.append(text[i:])
            break
        start = m.start()
        end = skip_value(text, m.end())
        # drop one adjoining comma so the option list stays well formed
        j = end
        while j < len(text) and text[j].isspace():
            j += 1
        if j < len(text) and text[j] == ",":
            end = j + 1
        else:
            k = start - 1
            while k >= i and text[k].isspace():
                k -= 1
            if k >= i and text[k] == ",":
                start = k
        out.append(text[i:start])
        i = end
    text = "".join(out)
    # option lists left empty: `[ ]`
    text = re.sub(r"\s*\[\s*\]", "", text)
    if "(validate." in text:
        die("a validate option survived preprocessing")
    return text


def rename_base(text):
    return re.sub(r"(\n\s*(?:repeated\s+)?[A-Za-z0-9_.]+\s+)base(\s*=\s*\d+)", r"\1base_\2", text)


def preprocess(src, dst):
    with open(src, encoding="utf-8") as f:
        text = f.read()
    text = rename_base(strip_validate(text))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(text)


# ---- closure and code generation ----------------------------------------------------------

IMPORT_RE = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)";', re.M)


def locate(rel, roots):
    for r in roots:
        p = os.path.join(r, rel)
        if os.path.isfile(p):
            return p
    return None


DESC_RE = re.compile(r"^extern const ProtobufCMessageDescriptor (\w+)__descriptor;", re.M)


def write_registry(gen, files):
    """Emit msm_api_registry.c: every message descriptor of the closure, for the type registry
    (Any, TypedStruct and type URLs resolve through it)."""
    incs, descs = [], []
    for rel in files:
        h = rel[:-len(".proto")] + ".pb-c.h"
        with open(os.path.join(gen, h), encoding="utf-8") as f:
            found = DESC_RE.findall(f.read())
        if found:
            incs.append(h)
            descs += found
    with open(os.path.join(gen, "msm_api_registry.c"), "w") as f:
        f.write("/* Generated by cmake/envoy_api.py: do not edit. */\n")
        f.write("#include <stddef.h>\n")
        for h in incs:
            f.write('#include "%s"\n' % h)
        f.write("const ProtobufCMessageDescriptor *const msm_api_messages[] = {\n")
        for d in descs:
            f.write("    &%s__descriptor,\n" % d)
        f.write("};\nconst size_t msm_api_messages_count = %d;\n" % len(descs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--roots", required=True)
    ap.add_argument("--own", required=True, help="our proto/ directory")
    ap.add_argument("--api-dir", default="")
    ap.add_argument("--protoc-c", default="protoc-c")
    a = ap.parse_args()

    if a.api_dir:
        base = os.path.abspath(a.api_dir)
        if not os.path.isdir(base):
            die("ENVOY_API_DIR %s is not a directory" % base)
    else:
        base = fetch_package(os.path.join(a.out, "cache"))
    src_roots = [os.path.join(base, d) for d in ROOT_DIRS if os.path.isdir(os.path.join(base, d))]
    own = os.path.abspath(a.own)

    with open(a.roots) as f:
        roots = [l.split("#")[0].strip() for l in f]
    roots = [r for r in roots if r]
    own_files = []
    for dp, _, fns in os.walk(own):
        for fn in sorted(fns):
            if fn.endswith(".proto"):
                own_files.append(os.path.relpath(os.path.join(dp, fn), own))
    for rel in own_files:
        clash = locate(rel, src_roots)
        if clash:
            die("proto/%s shadows %s from the API package: rename ours" % (rel, clash))
    roots += sorted(own_files)

    prep = os.path.join(a.out, "proto")
    gen = os.path.join(a.out, "gen")
    # Closure over imports; a file is looked up in our proto/ first, then the API package, then
    # the system (google/protobuf well-known types from libprotobuf-dev).
    seen = {}
    todo = list(roots)
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        p = locate(rel, [own] + src_roots + [SYSTEM_INCLUDE])
        if not p:
            die("proto %s not found (looked in proto/, %s and %s)" % (rel, base, SYSTEM_INCLUDE))
        seen[rel] = p
        with open(p, encoding="utf-8") as f:
            for imp in IMPORT_RE.findall(f.read()):
                if imp != "validate/validate.proto":
                    todo.append(imp)

    files = sorted(seen)
    key = hashlib.sha256()
    key.update(PREP_VERSION.encode())
    for rel in files:
        with open(seen[rel], "rb") as f:
            key.update(rel.encode() + b"\0" + f.read())
    digest = key.hexdigest()
    stamp = os.path.join(a.out, "stamp")
    sources = os.path.join(a.out, "sources.txt")
    if os.path.exists(stamp) and open(stamp).read() == digest and os.path.exists(sources):
        return 0

    shutil.rmtree(prep, ignore_errors=True)
    shutil.rmtree(gen, ignore_errors=True)
    for rel in files:
        preprocess(seen[rel], os.path.join(prep, rel))
    os.makedirs(gen)
    # protoc-c on batches (command-line length), all in one include root.
    batch = 200
    for i in range(0, len(files), batch):
        cmd = [a.protoc_c, "-I", prep, "--c_out=" + gen] + files[i:i + batch]
        r = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            die("protoc-c failed:\n" + r.stderr)
    write_registry(gen, files)
    with open(sources, "w") as f:
        for rel in files:
            f.write(os.path.join(gen, rel[:-len(".proto")] + ".pb-c.c") + "\n")
        f.write(os.path.join(gen, "msm_api_registry.c") + "\n")
    with open(stamp, "w") as f:
        f.write(digest)
    sys.stderr.write("envoy_api: generated %d files\n" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
