"""/clusters shows each endpoint's EDS health as Envoy does: health_flags /failed_eds_health
(UNHEALTHY, DRAINING, TIMEOUT) and /degraded_eds_health (DEGRADED) in text, and
health_status.eds_health_status in format=json; healthy endpoints stay "healthy".

    /usr/bin/python3 test/integration/test_admin_clusters_health.py --binary build/msm-proxy
"""
import json

import harness as H

STATUSES = ["HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED", "UNKNOWN"]
FLAGS = {"HEALTHY": "healthy", "UNKNOWN": "healthy", "UNHEALTHY": "/failed_eds_health",
         "DRAINING": "/failed_eds_health", "TIMEOUT": "/failed_eds_health",
         "DEGRADED": "/degraded_eds_health"}


class ClustersHealthTest(H.ProxyTestCase):
    def test_eds_health_flags(self):
        ports = {}
        lbs = []
        for i, st in enumerate(STATUSES):
            port = 20000 + i
            ports[port] = st
            lbs.append({"endpoint": {"address": H.sock_addr(port)}, "health_status": st})
        c = {"name": "mixed", "type": "STATIC", "connect_timeout": "1s",
             "load_assignment": {"cluster_name": "mixed", "endpoints": [
                 {"lb_endpoints": lbs},
                 {"priority": 1, "lb_endpoints": [
                     {"endpoint": {"address": H.sock_addr(20100)}}]}]}}
        p = self.start_proxy(H.bootstrap(clusters=[c]))
        st, text = p.get("/clusters")
        self.assertEqual(st, 200)
        flags = {}
        prio = {}
        for line in text.splitlines():
            parts = line.split("::")
            if parts[0] == "mixed" and len(parts) == 4 and parts[2] == "health_flags":
                flags[int(parts[1].rsplit(":", 1)[1])] = parts[3]
            if parts[0] == "mixed" and len(parts) == 4 and parts[2] == "priority":
                prio[int(parts[1].rsplit(":", 1)[1])] = parts[3]
        for port, status in ports.items():
            self.assertEqual(flags.get(port), FLAGS[status], (status, text))
        self.assertEqual(flags.get(20100), "healthy")
        self.assertEqual(prio.get(20100), "1")
        self.assertEqual(prio.get(20000), "0")
        st, body = p.get("/clusters?format=json")
        self.assertEqual(st, 200)
        cl = [x for x in json.loads(body)["cluster_statuses"] if x["name"] == "mixed"][0]
        seen = {}
        for h in cl["host_statuses"]:
            port = h["address"]["socket_address"]["port_value"]
            seen[port] = h
        for port, status in ports.items():
            hs = seen[port]["health_status"]
            want = "HEALTHY" if status == "UNKNOWN" else status
            self.assertEqual(hs.get("eds_health_status"), want, (status, hs))
            self.assertFalse(hs.get("failed_outlier_check", False))
            self.assertFalse(hs.get("failed_active_health_check", False))
        self.assertEqual(seen[20100].get("priority"), 1)


if __name__ == "__main__":
    H.main()
