"""/certs (envoy.admin.v3.Certificates, read by istioctl proxy-config secret and bug-report):
one entry per TLS context in use with its CA and certificate details, for files, inline
material and SDS secrets (rotation shows the new serial).

    /usr/bin/python3 test/integration/test_admin_certs.py --binary build/msm-proxy
"""
import calendar
import json
import os
import re
import shutil
import subprocess
import time
import unittest

import harness as H
import test_tls as T


def setUpModule():
    T.setUpModule()


def tearDownModule():
    T.tearDownModule()


def openssl_info(path):
    """serial (lowercase hex), notBefore / notAfter (epoch) and SANs of the PEM at <path>."""
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial", "-startdate",
                          "-enddate", "-ext", "subjectAltName"], check=True, timeout=30,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    serial = re.search(r"serial=([0-9A-Fa-f]+)", out).group(1).lower()
    fmt = "%b %d %H:%M:%S %Y GMT"
    start = re.search(r"notBefore=(.*)", out).group(1).strip()
    end = re.search(r"notAfter=(.*)", out).group(1).strip()
    start = calendar.timegm(time.strptime(re.sub(r"\s+", " ", start), fmt))
    end = calendar.timegm(time.strptime(re.sub(r"\s+", " ", end), fmt))
    sans = []
    for m in re.finditer(r"(URI|DNS):([^,\s]+)", out):
        sans.append({"uri" if m.group(1) == "URI" else "dns": m.group(2)})
    return {"serial": serial, "start": start, "end": end, "sans": sans}


def rfc3339(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class CertsTest(H.ProxyTestCase):
    def certs(self, p):
        st, body = p.get("/certs")
        self.assertEqual(st, 200, body)
        return json.loads(body)["certificates"]

    def check_details(self, d, pem_path, path):
        info = openssl_info(pem_path)
        self.assertEqual(d["path"], path)
        self.assertEqual(d["serial_number"].lstrip("0"), info["serial"].lstrip("0"))
        self.assertEqual(d["subject_alt_names"], info["sans"])
        self.assertEqual(d["valid_from"], rfc3339(info["start"]))
        self.assertEqual(d["expiration_time"], rfc3339(info["end"]))
        days = (info["end"] - int(time.time())) // 86400
        # Whole days left; +-1 for the clock moving between the certificate and the query.
        self.assertIn(int(d["days_until_expiration"]), (days - 1, days, days + 1))
        self.assertIsInstance(d["days_until_expiration"], str)  # uint64 in proto3 JSON

    def test_static_files_and_inline(self):
        up = self.upstream("echo")
        port = H.free_port()
        client = T.client_ctx()
        # The cluster's certificate and CA inline instead of files: path "<inline>".
        cc = client["common_tls_context"]
        cc["tls_certificates"] = [{
            "certificate_chain": {"inline_string": T.PKI.read(T.PKI.client[0])},
            "private_key": {"inline_string": T.PKI.read(T.PKI.client[1])}}]
        cc["validation_context"]["trusted_ca"] = {"inline_string": T.PKI.read(
            T.PKI.path("ca.pem"))}
        cfg = H.bootstrap(
            listeners=[H.listener("tls-in", H.sock_addr(port), chains=[{
                "transport_socket": T.tls_socket(T.server_ctx()),
                "filters": [H.tcp_proxy_filter("in", "plain")]}])],
            clusters=[H.cluster("plain", [up.address]),
                      H.cluster("mtls-out", [H.sock_addr(port)],
                                transport_socket=T.tls_socket(client))])
        p = self.start_proxy(cfg)
        certs = self.certs(p)
        self.assertEqual(len(certs), 2, certs)
        by_path = {c["cert_chain"][0]["path"]: c for c in certs}
        server = by_path[T.PKI.server[0]]
        self.check_details(server["cert_chain"][0], T.PKI.server[0], T.PKI.server[0])
        self.assertEqual(server["cert_chain"][0]["subject_alt_names"],
                         [{"uri": T.SERVER_ID}, {"dns": "localhost"}])
        self.assertEqual(len(server["ca_cert"]), 1)
        self.check_details(server["ca_cert"][0], T.PKI.path("ca.pem"), T.PKI.path("ca.pem"))
        inline = by_path["<inline>"]
        self.check_details(inline["cert_chain"][0], T.PKI.client[0], "<inline>")
        self.check_details(inline["ca_cert"][0], T.PKI.path("ca.pem"), "<inline>")


class SdsCertsTest(H.ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.C = T.control_plane_module()
        cls.types = cls.C.Types(os.path.dirname(H.BINARY))

    def secret(self, name, pair=None, ca=None):
        d = {"name": name}
        if pair:
            d["tls_certificate"] = {"certificate_chain": {"inline_string": T.PKI.read(pair[0])},
                                    "private_key": {"inline_string": T.PKI.read(pair[1])}}
        else:
            d["validation_context"] = {"trusted_ca": {"inline_string": T.PKI.read(ca)}}
        return self.types.parse_json("envoy.extensions.transport_sockets.tls.v3.Secret", d)

    def test_sds_secret_and_rotation(self):
        cp = self.C.ControlPlane(self.types)
        self.addCleanup(cp.stop)
        sock = os.path.join(self.tmp, "sds.sock")
        cp.listen("unix:" + sock)
        up = self.upstream("echo")
        sds = H.cluster("sds-grpc", [H.pipe_addr(sock)], connect_timeout="1s",
                        http2_protocol_options={})
        out = H.cluster("outbound|8080||echo", [up.address], transport_socket=T.tls_socket({
            "@type": T.UP, "sni": T.SNI,
            "common_tls_context": T.sds_common(T.ISTIO_ALPN, {"exact": T.SERVER_ID})}))
        xds = dict(sds, name="xds-grpc", load_assignment=dict(sds["load_assignment"],
                                                               cluster_name="xds-grpc"))
        # The TLS cluster comes over CDS (Istio's shape), its secrets over SDS.
        cp.resources.set(self.types.parse_json("envoy.config.cluster.v3.Cluster", out))
        boot = H.bootstrap(clusters=[xds, sds], dynamic_resources={
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
            "cds_config": {"ads": {}, "resource_api_version": "V3"}})
        p = H.Proxy(self.tmp, boot, wait_ready=False)
        self._proxies.append(p)
        self.addCleanup(self._stop_proxy, p)
        p.start()

        def admin_up():
            if os.path.exists(p.admin_path):
                with open(p.admin_path) as f:
                    p.admin = f.read().strip()
            return p.admin
        H.wait_for(admin_up, what="admin address")

        def asked():
            names = set()
            for r in cp.reqs(self.C.TYPE_SDS):
                names.update(r.get("names") or [])
            return names >= {"default", "ROOTCA"}
        cp.wait_for(asked)
        # No context before the secrets arrive.
        self.assertEqual(self.certs_of(p), [])
        cp.resources.set(self.secret("default", pair=T.PKI.client))
        cp.resources.set(self.secret("ROOTCA", ca=T.PKI.path("ca.pem")))
        cp.push()
        H.wait_for(lambda: self.certs_of(p), what="SDS certificate in /certs")
        certs = self.certs_of(p)
        self.assertEqual(len(certs), 1, certs)
        CertsTest.check_details(self, certs[0]["cert_chain"][0], T.PKI.client[0], "<inline>")
        CertsTest.check_details(self, certs[0]["ca_cert"][0], T.PKI.path("ca.pem"), "<inline>")
        first = certs[0]["cert_chain"][0]["serial_number"]
        # Rotation: the new certificate's serial.
        cp.resources.set(self.secret("default", pair=T.PKI.server2))
        cp.push()
        want = openssl_info(T.PKI.server2[0])["serial"].lstrip("0")
        H.wait_for(lambda: [c for c in self.certs_of(p)
                            if c["cert_chain"][0]["serial_number"].lstrip("0") == want],
                   what="rotated serial in /certs")
        certs = self.certs_of(p)
        self.assertEqual(len(certs), 1, certs)
        self.assertNotEqual(certs[0]["cert_chain"][0]["serial_number"], first)
        CertsTest.check_details(self, certs[0]["cert_chain"][0], T.PKI.server2[0], "<inline>")

    def certs_of(self, p):
        st, body = p.get("/certs")
        self.assertEqual(st, 200, body)
        return json.loads(body)["certificates"]


if __name__ == "__main__":
    H.main()
