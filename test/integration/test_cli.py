"""Command line: --help, --version, unknown flags, --mode validate, --config-yaml."""
import glob
import json
import os
import re
import socket

import harness as H


def base_config(listener_port, cluster_name="c", endpoint_port=1234):
    return H.bootstrap(
        listeners=[H.listener("main", H.sock_addr(listener_port),
                              [H.tcp_proxy_filter("p", cluster_name)])],
        clusters=[H.cluster(cluster_name, [H.sock_addr(endpoint_port)])])


class CliTest(H.ProxyTestCase):
    def test_help_exits_0_and_lists_flags(self):
        r = self.run_binary(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        for flag in ("--config-path", "-c", "--config-yaml", "--mode", "--log-level",
                     "--concurrency", "--drain-time-s", "--admin-address-path", "--version",
                     "--allow-unknown-static-fields", "--disable-hot-restart"):
            self.assertRegex(r.stdout, r"(^|\s)%s\b" % re.escape(flag), flag)

    def test_version(self):
        r = self.run_binary(["--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"version: msm-proxy/\d+\.\d+\.\d+/")

    def test_unknown_flag_exits_1_with_message(self):
        r = self.run_binary(["--no-such-flag"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("--no-such-flag", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_bad_flag_value_exits_1(self):
        r = self.run_binary(["--concurrency", "two"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("--concurrency", r.stderr)

    def test_no_config_exits_1(self):
        r = self.run_binary(["--mode", "validate"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("config", r.stderr)


class ValidateTest(H.ProxyTestCase):
    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def validate(self, path, *extra):
        return self.run_binary(["--mode", "validate", "-c", path] + list(extra))

    def assert_rejected(self, cfg_text, name, *needles):
        path = self.write(name, cfg_text)
        r = self.validate(path)
        self.assertEqual(r.returncode, 1, "accepted a broken config:\n%s\n%s" % (cfg_text,
                                                                                 r.stdout))
        self.assertNotIn("OK", r.stdout)
        for n in needles:
            self.assertIn(n, r.stderr)
        return r.stderr

    def test_istio_goldens_validate(self):
        goldens = sorted(glob.glob(os.path.join(H.SHARED, "fixtures", "istio", "bootstrap",
                                                "*_golden.json")))
        self.assertGreaterEqual(len(goldens), 1, "no golden bootstraps under %s" % H.SHARED)
        for g in goldens:
            with self.subTest(golden=os.path.basename(g)):
                r = self.validate(g)
                self.assertEqual(r.returncode, 0, r.stderr[-3000:])
                self.assertIn("configuration '%s' OK" % g, r.stdout)

    def test_valid_config_prints_ok(self):
        path = self.write("ok.json", json.dumps(base_config(10000)))
        r = self.validate(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "configuration '%s' OK" % path)

    def test_valid_yaml_config(self):
        path = self.write("ok.yaml", H.to_yaml(base_config(10000)) + "\n")
        r = self.validate(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OK", r.stdout)

    def test_malformed_json_names_line(self):
        text = '{\n "static_resources": {\n  "clusters": [\n   {"name": "c",, }\n  ]\n }\n}\n'
        err = self.assert_rejected(text, "bad.json")
        self.assertRegex(err, r"line 4\b")

    def test_malformed_yaml_names_line(self):
        text = "static_resources:\n  clusters:\n  - name: c\n     type: STATIC\n"
        err = self.assert_rejected(text, "bad.yaml")
        self.assertRegex(err, r"line 4\b")

    def test_unknown_field(self):
        cfg = base_config(10000)
        cfg["static_resources"]["clusters"][0]["bogus_field"] = 1
        err = self.assert_rejected(json.dumps(cfg), "unknown.json", "bogus_field",
                                   "static_resources.clusters[0]")
        self.assertIn("unknown field", err)

    def test_unknown_field_allowed_with_flag(self):
        cfg = base_config(10000)
        cfg["static_resources"]["clusters"][0]["bogus_field"] = 1
        path = self.write("unknown_ok.json", json.dumps(cfg))
        r = self.validate(path, "--allow-unknown-static-fields")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_wrong_type(self):
        cfg = base_config(10000)
        cfg["static_resources"]["clusters"][0]["connect_timeout"] = 5
        self.assert_rejected(json.dumps(cfg), "type.json",
                             "static_resources.clusters[0].connect_timeout")

    def test_wrong_type_string_for_int(self):
        cfg = base_config(10000)
        cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = \
            "eighty"
        self.assert_rejected(json.dumps(cfg), "type2.json",
                             "static_resources.listeners[0].address.socket_address.port_value")

    def test_out_of_range_port(self):
        cfg = base_config(70000)
        err = self.assert_rejected(json.dumps(cfg), "port.json", "static_resources.listeners[0]",
                                   "70000")
        # The message must point at the port, not at the IP address field.
        self.assertIn("port_value", err)

    def test_unknown_type_url(self):
        cfg = base_config(10000)
        cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
            "typed_config"]["@type"] = "type.googleapis.com/foo.v3.NoSuchFilter"
        self.assert_rejected(json.dumps(cfg), "type_url.json", "foo.v3.NoSuchFilter",
                             "static_resources.listeners[0].filter_chains[0].filters[0]"
                             ".typed_config")

    def test_missing_cluster_name(self):
        cfg = base_config(10000)
        del cfg["static_resources"]["clusters"][0]["name"]
        err = self.assert_rejected(json.dumps(cfg), "noname.json", "static_resources.clusters[0]")
        self.assertIn("name", err)

    def test_static_cluster_with_hostname(self):
        cfg = base_config(10000)
        cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0][
            "lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] = \
            "backend.example.com"
        self.assert_rejected(json.dumps(cfg), "host.json", "static_resources.clusters[0]",
                             "backend.example.com")

    def test_missing_file(self):
        r = self.validate(os.path.join(self.tmp, "does-not-exist.json"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("does-not-exist.json", r.stderr)


class ConfigYamlTest(H.ProxyTestCase):
    def test_config_yaml_adds_cluster_over_file(self):
        up = self.upstream("identify", name="from-overlay")
        port = H.free_port()
        # The file's listener routes to cluster "extra", which only the overlay defines.
        cfg = H.bootstrap(
            listeners=[H.listener("main", H.sock_addr(port), [H.tcp_proxy_filter("p", "extra")])],
            clusters=[H.cluster("unused", [H.sock_addr(1)])])
        overlay = {"static_resources": {"clusters": [H.cluster("extra", [up.address])]}}
        p = self.start_proxy(cfg, config_yaml=json.dumps(overlay))
        s = self.connect(p)
        self.assertEqual(H.recv_line(s), b"from-overlay\n")
        # Repeated fields append (protobuf MergeFrom): the file's cluster is still there.
        self.assertIn("cluster.unused.upstream_cx_total", p.stats())
        self.assertIn("cluster.extra.upstream_cx_total", p.stats())

    def test_config_yaml_yaml_syntax_overrides_scalar(self):
        """A YAML overlay changes a scalar in place (the admin port) and adds a listener."""
        up = self.upstream("identify", name="u")
        port1, port2, admin_port = H.free_port(), H.free_port(), H.free_port()
        cfg = H.bootstrap(
            listeners=[H.listener("main", H.sock_addr(port1), [H.tcp_proxy_filter("p", "c")])],
            clusters=[H.cluster("c", [up.address])])
        overlay = ("admin:\n  address:\n    socket_address:\n      port_value: %d\n"
                   "static_resources:\n  listeners:\n  - name: second\n    address:\n"
                   "      socket_address: {address: 127.0.0.1, port_value: %d}\n"
                   "    filter_chains:\n    - filters:\n      - name: envoy.filters.network."
                   "tcp_proxy\n        typed_config:\n          '@type': %s\n"
                   "          stat_prefix: second\n          cluster: c\n"
                   % (admin_port, port2, H.TCP_PROXY_TYPE))
        p = self.start_proxy(cfg, config_yaml=overlay)
        self.assertEqual(p.admin, "127.0.0.1:%d" % admin_port)
        for lport in (port1, port2):
            s = socket.create_connection(("127.0.0.1", lport), timeout=H.IO_TIMEOUT)
            self.addCleanup(s.close)
            self.assertEqual(H.recv_line(s), b"u\n")
        self.assertEqual(p.stat("tcp.second.downstream_cx_total"), 1)
        self.assertEqual(p.stat("tcp.p.downstream_cx_total"), 1)

    def test_yaml_bootstrap_file_serves(self):
        up = self.upstream("echo")
        p = self.start_proxy(lambda: base_config(H.free_port(), "c", up.port), fmt="yaml")
        self.assertTrue(p.config_path.endswith(".yaml"))
        s = self.connect(p)
        s.sendall(b"yaml")
        self.assertEqual(H.recv_exactly(s, 4), b"yaml")

    def test_config_yaml_alone(self):
        up = self.upstream("echo")

        def cfg():
            return base_config(H.free_port(), "c", up.port)
        # No -c: the whole bootstrap comes from --config-yaml.
        last = None
        for _ in range(3):
            c = cfg()
            p = H.Proxy(self.tmp, None, config_yaml=H.to_yaml(c))
            p.config = c
            self._proxies.append(p)
            self.addCleanup(self._stop_proxy, p)
            try:
                p.start()
                break
            except H.PortRace as e:
                last = e
                p.stop()
        else:
            raise last
        self.assertNotIn("-c", p.argv())
        s = self.connect(p)
        s.sendall(b"ping")
        self.assertEqual(H.recv_exactly(s, 4), b"ping")

    def test_config_yaml_validate_error_is_reported(self):
        r = self.run_binary(["--mode", "validate", "--config-yaml",
                             '{"static_resources": {"clusters": [{"name": 1, "bogus": 2}]}}'])
        self.assertEqual(r.returncode, 1)
        self.assertIn("static_resources.clusters[0]", r.stderr)


if __name__ == "__main__":
    H.main()
