"""CLI: run one pod's sidecar by hand, or print a rendered bootstrap.

  python3 -m agent [run] --binary B --run-dir D --pod P --namespace N --service-account S
                   --pod-ip IP [--xds-dump dump.json] [--netns NAME] [--no-uid] ...
  python3 -m agent render [--proxycfg F] [--pod ...] [--template T]
"""
import argparse
import json
import os
import signal
import sys
import threading

from .agent import DEFAULT_TEMPLATE, Agent
from . import bootstrap as B


def _kv(items):
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        out[k] = v
    return out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = "run"
    if argv and argv[0] in ("run", "render"):
        mode = argv.pop(0)
    ap = argparse.ArgumentParser(prog="python3 -m agent " + mode)
    ap.add_argument("--pod", default="pod")
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--service-account", default="default")
    ap.add_argument("--pod-ip", default="127.0.0.1")
    ap.add_argument("--label", action="append", help="k=v (repeatable)")
    ap.add_argument("--annotation", action="append", help="k=v (repeatable)")
    ap.add_argument("--proxycfg", help="ProxyConfig text proto file (overlaid on the mesh default)")
    ap.add_argument("--template", default=DEFAULT_TEMPLATE)
    if mode == "render":
        ap.add_argument("--run-dir", default=".")
        a = ap.parse_args(argv)
        pc = B.merge_proxy_config(B.DEFAULT_PROXY_CONFIG, B.load_proxy_config(a.proxycfg))
        envs = ["POD_NAME=" + a.pod, "POD_NAMESPACE=" + a.namespace,
                "SERVICE_ACCOUNT=" + a.service_account]
        labels = _kv(a.label)
        if labels:
            envs.append("ISTIO_METAJSON_LABELS=" + json.dumps(labels))
        node = B.get_node_metadata(
            "sidecar~%s~%s.%s~%s.svc.cluster.local" % (a.pod_ip, a.pod, a.namespace, a.namespace),
            envs, pc, instance_ips=[a.pod_ip], pilot_san=["istiod.istio-system.svc"])
        node.meta.setdefault("ANNOTATIONS", {}).update(_kv(a.annotation))
        with open(a.template) as f:
            sys.stdout.write(B.render(f.read(), node))
        return 0
    ap.add_argument("--binary", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--build-dir", help="build tree with envoy-api/proto (default: binary's dir)")
    ap.add_argument("--xds-dump", help="config_dump JSON file served over XDS")
    ap.add_argument("--netns", help="network namespace name or path for the proxy")
    ap.add_argument("--no-uid", action="store_true", help="do not switch the proxy to uid 1337")
    ap.add_argument("--status-port", type=int, default=15020)
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--component-log-level", default="misc:error")
    ap.add_argument("--termination-drain", type=float, default=5.0)
    ap.add_argument("--exit-on-zero-active-connections", action="store_true")
    a = ap.parse_args(argv)
    dump = None
    if a.xds_dump:
        with open(a.xds_dump) as f:
            dump = json.load(f)
    agent = Agent(a.run_dir, a.binary, pod=a.pod, namespace=a.namespace,
                  service_account=a.service_account, pod_ip=a.pod_ip, labels=_kv(a.label),
                  annotations=_kv(a.annotation), proxycfg=a.proxycfg, xds_dump=dump,
                  netns=a.netns, uid=None if a.no_uid else 1337,
                  gid=None if a.no_uid else 1337, status_port=a.status_port,
                  log_level=a.log_level, component_log_level=a.component_log_level,
                  termination_drain_duration=a.termination_drain,
                  exit_on_zero_active_connections=a.exit_on_zero_active_connections,
                  build_dir=a.build_dir, template=a.template)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent.start()
    print("agent: proxy pid %d: %s" % (agent.proc.pid, " ".join(agent.proxy_argv)), flush=True)
    print("agent: XDS %s, SDS %s, status :%d, log %s" % (agent.xds_socket, agent.sds_socket,
                                                          agent.status_port, agent.log_path),
          flush=True)
    announced = False
    while not stop.is_set():
        if agent.proc.poll() is not None:
            print("agent: proxy exited with %s" % agent.proc.returncode, flush=True)
            agent.close()
            return 1
        if not announced and agent.ready()[0]:
            print("agent: ready", flush=True)
            announced = True
        stop.wait(0.5)
    print("agent: draining (%.1fs) then SIGKILL" % agent.termination_drain_duration, flush=True)
    rc = agent.shutdown()
    agent.close()
    print("agent: proxy exit status %s" % rc, flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
