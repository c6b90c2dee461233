"""x-forwarded-client-cert (HCM forward_client_cert_details / set_current_client_cert_details)
as Envoy builds it, checked against values the test computes itself from the certificates
(Python's ssl/hashlib for the hash and PEM, `openssl x509 -nameopt RFC2253` for the subject):

- Istio's inbound shape: client -> sidecar A (outbound, mTLS origination) -> sidecar B
  (inbound, APPEND_FORWARD with subject, cert, dns, uri) -> origin; the origin sees
  By=<B's URI SAN>;Hash=<sha256 of A's certificate>;Cert="<url-encoded PEM>";Subject="...";
  URI=<A's URI SAN>, and A dropped what the client sent (SANITIZE, its default);
- every mode on one proxy with a Python mTLS client whose certificate has two URI SANs, two DNS
  SANs and a subject that needs RFC 2253 escaping: APPEND_FORWARD appends to what came with ',',
  SANITIZE_SET replaces (Cert, and Chain = leaf + CA as the client sent them), FORWARD_ONLY
  keeps, SANITIZE (default) removes, no client certificate or plaintext removes,
  ALWAYS_FORWARD_ONLY keeps even in plaintext."""
import hashlib
import json
import socket
import ssl
import subprocess

import harness as H
import http_peers as P
import test_tls as T

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
XFCC = "x-forwarded-client-cert"
SECOND_URI = "spiffe://cluster.local/ns/other/sa/second"


def setUpModule():
    T.setUpModule()
    pki = T.PKI
    # A client certificate with several SANs and a subject RFC 2253 must escape.
    key, csr, pem = (pki.path("xfcc" + e) for e in (".key", ".csr", ".pem"))
    ext = pki.path("xfcc.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=URI:%s,URI:%s,DNS:client.example,DNS:c2.example\n"
                "extendedKeyUsage=clientAuth\n" % (T.CLIENT_ID, SECOND_URI))
    pki._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", '/O=Acme\\, Inc./CN=Doe "JD"')
    pki._run("x509", "-req", "-in", csr, "-CA", pki.path("ca.pem"), "-CAkey",
             pki.path("ca.key"), "-CAcreateserial", "-out", pem, "-days", "2", "-extfile", ext)
    pki.xfcc = (pem, key)


def tearDownModule():
    T.tearDownModule()


def url_pem(path):
    """Envoy's URL encoding of a PEM certificate."""
    with open(path) as f:
        pem = f.read()
    for a, b in (("\n", "%0A"), (" ", "%20"), ("+", "%2B"), ("/", "%2F"), ("=", "%3D")):
        pem = pem.replace(a, b)
    return pem


def sha256_hex(path):
    with open(path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def subject_rfc2253(path):
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-subject", "-nameopt",
                          "RFC2253"], capture_output=True, check=True, text=True).stdout
    return out.strip().split("=", 1)[1].strip() if out.startswith("subject=") else out.strip()


def hcm(prefix, cluster, fcc=None, details=None):
    cfg = {"@type": HCM, "stat_prefix": prefix, "http_filters": [ROUTER],
           "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]}}
    if fcc:
        cfg["forward_client_cert_details"] = fcc
    if details:
        cfg["set_current_client_cert_details"] = details
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": cfg}


ISTIO_DETAILS = {"subject": True, "cert": True, "dns": True, "uri": True}


def tls_listener(name, filters, ctx):
    return {"name": name, "address": H.sock_addr(H.free_port()),
            "filter_chains": [{"filters": filters, "transport_socket": T.tls_socket(ctx)}]}


def exchange(sock, xfcc_in=None):
    """One HTTP/1.1 GET on <sock>; the origin's view of the request headers."""
    extra = b"%s: %s\r\n" % (XFCC.encode(), xfcc_in.encode()) if xfcc_in is not None else b""
    sock.sendall(b"GET /x HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n" + extra + b"\r\n")
    data = H.recv_until_eof(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise AssertionError(data[:300])
    return json.loads(body)["headers"]


class XfccTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.origin = P.HttpUpstream("origin")
        self.addCleanup(self.origin.stop)

    def test_istio_sidecars_append_forward(self):
        def cfg_b():
            return H.bootstrap(
                listeners=[tls_listener("inbound", [hcm("inbound_8080", "origin",
                                                        "APPEND_FORWARD", ISTIO_DETAILS)],
                                        T.server_ctx(alpn=("http/1.1",)))],
                clusters=[H.cluster("origin", [self.origin.address])])
        pb = self.start_proxy(cfg_b)
        b_port = pb.listener_port("inbound")

        def cfg_a():
            cl = H.cluster("outbound|8080||b", [H.sock_addr(b_port)])
            cl["transport_socket"] = T.tls_socket(T.client_ctx(alpn=["http/1.1"]))
            return H.bootstrap(listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                                     [hcm("outbound_8080", "outbound|8080||b")])],
                               clusters=[cl])
        pa = self.start_proxy(cfg_a)
        cert = T.PKI.client[0]
        want = ('By=%s;Hash=%s;Cert="%s";Subject="%s";URI=%s'
                % (T.SERVER_ID, sha256_hex(cert), url_pem(cert), subject_rfc2253(cert),
                   T.CLIENT_ID))
        for i in range(2):  # the second request reuses the upstream connection
            s = socket.create_connection(("127.0.0.1", pa.listener_port()), timeout=H.IO_TIMEOUT)
            self.addCleanup(s.close)
            # What the client claims is dropped by A (SANITIZE, the default).
            got = exchange(s, "By=spiffe://forged;Hash=00")
            self.assertEqual(got[XFCC], [want])
        self.assertEqual(self.origin.requests, 2)

    def test_modes(self):
        server = T.server_ctx(alpn=("http/1.1",))
        no_client_cert = {"@type": T.DOWN, "common_tls_context": {
            "alpn_protocols": ["http/1.1"], "tls_certificates": T.certs(T.PKI.server)}}
        modes = [("append", server, "APPEND_FORWARD", ISTIO_DETAILS),
                 ("set", server, "SANITIZE_SET",
                  {"cert": True, "chain": True, "subject": True, "uri": True}),
                 ("bare", server, "SANITIZE_SET", None),
                 ("fwd", server, "FORWARD_ONLY", ISTIO_DETAILS),
                 ("sanitize", server, None, ISTIO_DETAILS),
                 ("one_way", no_client_cert, "APPEND_FORWARD", ISTIO_DETAILS)]

        def cfg():
            ls = [tls_listener(n, [hcm(n, "origin", f, d)], ctx) for n, ctx, f, d in modes]
            ls.append(H.listener("plain", H.sock_addr(H.free_port()),
                                 [hcm("plain", "origin", "APPEND_FORWARD", ISTIO_DETAILS)]))
            ls.append(H.listener("always", H.sock_addr(H.free_port()),
                                 [hcm("always", "origin", "ALWAYS_FORWARD_ONLY")]))
            return H.bootstrap(listeners=ls, clusters=[H.cluster("origin",
                                                                  [self.origin.address])])
        p = self.start_proxy(cfg)
        cert = T.PKI.xfcc[0]
        subject = subject_rfc2253(cert)
        self.assertIn('\\"JD\\"', subject)  # RFC 2253 escapes: written as they are, quoted
        self.assertIn("\\,", subject)
        h, pem = sha256_hex(cert), url_pem(cert)
        by = "By=" + T.SERVER_ID
        uris = "URI=%s;URI=%s" % (T.CLIENT_ID, SECOND_URI)
        incoming = 'By=spiffe://up;Hash=abc;Subject="O=x,CN=y",By=z'

        def send(name, xfcc_in, client_cert=True):
            ctx = T.py_client_ctx(pair=T.PKI.xfcc if client_cert else None, alpn=["http/1.1"])
            raw = socket.create_connection(("127.0.0.1", p.listener_port(name)),
                                           timeout=H.IO_TIMEOUT)
            s = raw
            if name not in ("plain", "always"):
                s = ctx.wrap_socket(raw, server_hostname=T.SNI)
            try:
                return exchange(s, xfcc_in).get(XFCC)
            finally:
                s.close()
        istio = '%s;Hash=%s;Cert="%s";Subject="%s";%s;DNS=client.example;DNS=c2.example' % (
            by, h, pem, subject, uris)
        self.assertEqual(send("append", None), [istio])
        self.assertEqual(send("append", incoming), [incoming + "," + istio])
        self.assertEqual(send("append", ""), [istio])
        # The chain is what the client sent: OpenSSL completes it from its trust store (CA).
        chain = pem + url_pem(T.PKI.path("ca.pem"))
        self.assertEqual(send("set", incoming), [
            '%s;Hash=%s;Cert="%s";Chain="%s";Subject="%s";%s' % (by, h, pem, chain, subject,
                                                                 uris)])
        self.assertEqual(send("bare", incoming), ["%s;Hash=%s" % (by, h)])
        self.assertEqual(send("fwd", incoming), [incoming])
        self.assertIsNone(send("fwd", None))
        self.assertIsNone(send("sanitize", incoming))
        self.assertIsNone(send("one_way", incoming, client_cert=False))
        self.assertIsNone(send("plain", incoming))
        self.assertEqual(send("always", incoming), [incoming])


if __name__ == "__main__":
    H.main()
