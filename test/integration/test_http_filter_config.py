"""HTTP filters switched per route, as Envoy's filter manager: a filter disabled by default
(HttpFilter.disabled) runs only on the routes, virtual hosts or route configurations whose
typed_per_filter_config enables it (an empty FilterConfig, or a per-route config); a
FilterConfig{disabled: true} leaves any filter out of that route's streams; the terminal filter
cannot be disabled by default, and a disabled filter we do not implement is still refused.

    /usr/bin/python3 test/integration/test_http_filter_config.py --binary build/msm-proxy
"""
import http.client
import json
import os

import harness as H
import http_peers as P

HCM = P.HCM_TYPE
ROUTER = P.ROUTER
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ABORT_ALL = {"abort": {"http_status": 418,
                       "percentage": {"numerator": 100, "denominator": "HUNDRED"}}}
# Deny everything: an ALLOW policy set that nothing matches.
DENY_ALL = {"name": "envoy.filters.http.rbac", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
    "rules": {"action": "ALLOW", "policies": {}}}}


def route(prefix, per_filter=None):
    r = {"match": {"prefix": prefix}, "route": {"cluster": "up"}}
    if per_filter:
        r["typed_per_filter_config"] = per_filter
    return r


class FilterToggleTest(H.ProxyTestCase):
    def start(self, filters, vhosts):
        self.up = P.HttpUpstream("up")
        self.addCleanup(self.up.stop)

        def cfg():
            hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": HCM, "stat_prefix": "in", "http_filters": filters + [ROUTER],
                "route_config": {"virtual_hosts": vhosts}}}
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm])],
                clusters=[H.cluster("up", [self.up.address])])
        self.p = self.start_proxy(cfg)

    def status(self, path, host="svc"):
        c = http.client.HTTPConnection("127.0.0.1", self.p.listener_port("main"),
                                       timeout=H.IO_TIMEOUT)
        try:
            c.request("GET", path, headers={"host": host})
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def test_disabled_by_default_runs_where_enabled(self):
        fault = {"name": "envoy.filters.http.fault", "disabled": True,
                 "typed_config": dict(ABORT_ALL, **{"@type": FAULT})}
        self.start([fault], [
            {"name": "on", "domains": ["on.svc"], "routes": [route("/")],
             "typed_per_filter_config": {"envoy.filters.http.fault": {"@type": FILTER_CONFIG}}},
            {"name": "main", "domains": ["*"], "routes": [
                route("/enabled", {"envoy.filters.http.fault": {"@type": FILTER_CONFIG}}),
                route("/own-config", {"envoy.filters.http.fault": dict(
                    {"@type": FAULT}, abort={"http_status": 429, "percentage": {
                        "numerator": 100, "denominator": "HUNDRED"}})}),
                route("/still-off", {"envoy.filters.http.fault": {
                    "@type": FILTER_CONFIG, "disabled": True}}),
                route("/")]}])
        self.assertEqual(self.status("/plain"), 200)
        self.assertEqual(self.status("/still-off"), 200)
        self.assertEqual(self.status("/enabled"), 418)
        self.assertEqual(self.status("/own-config"), 429)
        self.assertEqual(self.status("/any", host="on.svc"), 418)  # virtual host level
        self.assertEqual(self.p.stat("http.in.fault.aborts_injected"), 3)

    def test_route_disables_an_enabled_filter(self):
        self.start([DENY_ALL], [{"name": "main", "domains": ["*"], "routes": [
            route("/public", {"envoy.filters.http.rbac": {"@type": FILTER_CONFIG,
                                                          "disabled": True}}),
            route("/")]}])
        self.assertEqual(self.status("/public/x"), 200)
        self.assertEqual(self.status("/private"), 403)
        st = self.p.stats()
        self.assertEqual((st["http.in.rbac.allowed"], st["http.in.rbac.denied"]), (0, 1))

    def validate(self, filters):
        cfg = H.bootstrap(listeners=[H.listener("main", H.sock_addr(H.free_port()), [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": HCM, "stat_prefix": "in", "http_filters": filters,
                "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"],
                                                    "routes": [route("/")]}]}}}])],
            clusters=[H.cluster("up", [H.sock_addr(1)])])
        path = os.path.join(self.tmp, "cfg.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        r = self.run_binary(["-c", path, "--mode", "validate"])
        return r.returncode, r.stdout + r.stderr

    def test_refused_configurations(self):
        rc, out = self.validate([dict(ROUTER, disabled=True)])
        self.assertNotEqual(rc, 0)
        self.assertIn("the last (terminal) filter cannot be disabled by default", out)
        unknown = {"name": "envoy.filters.http.ext_authz", "disabled": True, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"}}
        rc, out = self.validate([unknown, ROUTER])
        self.assertNotEqual(rc, 0)
        self.assertIn("envoy.filters.http.ext_authz", out)
        rc, out = self.validate([dict(unknown, is_optional=True), ROUTER])
        self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    H.main()
