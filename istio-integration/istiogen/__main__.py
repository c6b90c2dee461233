"""python3 -m istiogen --world f1.yaml [--world f2.yaml] --pod NS/NAME [--out dump.json]
[--mesh mesh.yaml] [--node]: print (or write) the config dump istiod would send that sidecar."""
import argparse
import json
import sys

import yaml

from . import IstiogenError, World, node, render


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m istiogen", description=__doc__.split(":")[0])
    ap.add_argument("--world", action="append", required=True, help="YAML file (repeatable)")
    ap.add_argument("--pod", required=True, help="NAMESPACE/POD of the sidecar")
    ap.add_argument("--mesh", help="YAML file with mesh config fields (trustDomain, ...)")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    ap.add_argument("--node", action="store_true", help="print the xDS node instead of the dump")
    a = ap.parse_args(argv)
    if "/" not in a.pod:
        ap.error("--pod must be NAMESPACE/NAME")
    ns, name = a.pod.split("/", 1)
    try:
        mesh = None
        if a.mesh:
            with open(a.mesh) as f:
                mesh = yaml.safe_load(f) or {}
        w = World.load(a.world, mesh=mesh)
        out = node(w, name, ns) if a.node else render(w, name, ns)
    except IstiogenError as e:
        print("istiogen: %s" % e, file=sys.stderr)
        return 2
    text = json.dumps(out, indent=1) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
