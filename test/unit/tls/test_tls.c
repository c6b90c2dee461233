/* TLS: SAN matching (legacy and typed matchers, DNS wildcards), context building errors,
 * handshakes through the transport socket over a socketpair (ALPN, SNI, mTLS with SPIFFE
 * SANs, verification failures and their counters), SDS secrets (warming, rotation, NACK). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "net/conn.h"
#include "test/unit/tls/certs.h"
#include "tls/secrets.h"
#include "tls/tls_private.h"
#include "xds/xds.h"

#define T_UP "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define T_DOWN "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define SPIFFE_SERVER "spiffe://cluster.local/ns/default/sa/server"
#define SPIFFE_CLIENT "spiffe://cluster.local/ns/default/sa/client"

static struct test_cert ca, other_ca, server, client, rogue;

static int setup(void **state)
{
    (void)state;
    msm_stats = msm_stats_store_new();
    msm_secrets = msm_secrets_new(msm_stats);
    ca = test_cert_new(NULL, "root", NULL, true);
    other_ca = test_cert_new(NULL, "other-root", NULL, true);
    server = test_cert_new(&ca, "server", "URI:" SPIFFE_SERVER ",DNS:*.example.com,IP:10.0.0.1,"
                                          "email:ops@example.com", false);
    client = test_cert_new(&ca, "client", "URI:" SPIFFE_CLIENT, false);
    rogue = test_cert_new(&other_ca, "rogue", "URI:" SPIFFE_CLIENT, false);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_cert_free(&ca);
    test_cert_free(&other_ca);
    test_cert_free(&server);
    test_cert_free(&client);
    test_cert_free(&rogue);
    msm_secrets_free(msm_secrets);
    msm_stats_store_free(msm_stats);
    msm_stats = NULL;
    return 0;
}

static uint64_t stat_of(const char *name)
{
    struct msm_stat *s = msm_stats_find(msm_stats, name);
    return s ? msm_stat_value(s) : 0;
}

static json_t *pem(const char *s)
{
    return json_pack("{s:s}", "inline_string", s);
}

static json_t *cert_json(const struct test_cert *c)
{
    return json_pack("[{s:o, s:o}]", "certificate_chain", pem(c->cert_pem), "private_key",
                     pem(c->key_pem));
}

static ProtobufCMessage *decode(const char *type, json_t *j)
{
    struct msm_err err = {{0}};
    ProtobufCMessage *m = msm_pbjson_decode(msm_types_find(type), j, NULL, &err);
    if (!m) {
        fail_msg("decode %s: %s", type, err.msg);
    }
    json_decref(j);
    return m;
}

/* A factory from a TLS context (typed_config object, consumed). */
static int factory(bool srv, json_t *ctx, const char *scope, struct msm_tls_factory **f,
                   struct msm_err *err)
{
    json_t *ts = json_pack("{s:s, s:o}", "name", "envoy.transport_sockets.tls", "typed_config",
                           ctx);
    ProtobufCMessage *m = decode("envoy.config.core.v3.TransportSocket", ts);
    int rc = msm_tls_factory_from_proto(m, srv, scope, "test", f, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static struct msm_tls_factory *must(bool srv, json_t *ctx, const char *scope)
{
    struct msm_err err = {{0}};
    struct msm_tls_factory *f = NULL;
    if (factory(srv, ctx, scope, &f, &err) < 0) {
        fail_msg("factory: %s", err.msg);
    }
    return f;
}

/* Istio's inbound context: mTLS, SANs under the trust domain, ALPN for TCP with MX. */
static json_t *server_ctx(const struct test_cert *cert, const char *san_prefix, bool require)
{
    json_t *val = json_pack("{s:o}", "trusted_ca", pem(ca.cert_pem));
    if (san_prefix) {
        json_object_set_new(val, "match_subject_alt_names",
                            json_pack("[{s:s}]", "prefix", san_prefix));
    }
    return json_pack("{s:s, s:b, s:{s:[s,s,s], s:o, s:o}}", "@type", T_DOWN,
                     "require_client_certificate", require, "common_tls_context",
                     "alpn_protocols", "istio-peer-exchange", "h2", "http/1.1",
                     "tls_certificates", cert_json(cert), "validation_context", val);
}

/* Istio's outbound context for ISTIO_MUTUAL (inline instead of SDS). */
static json_t *client_ctx(const struct test_cert *cert, const char *san, const char *trust_pem)
{
    json_t *c = json_pack("{s:{s:s, s:s}, s:[s,s]}", "tls_params", "tls_minimum_protocol_version",
                          "TLSv1_2", "tls_maximum_protocol_version", "TLSv1_3", "alpn_protocols",
                          "istio-peer-exchange", "istio");
    if (cert) {
        json_object_set_new(c, "tls_certificates", cert_json(cert));
    }
    json_t *val = json_pack("{s:o}", "trusted_ca", pem(trust_pem));
    if (san) {
        json_object_set_new(val, "match_subject_alt_names", json_pack("[{s:s}]", "exact", san));
    }
    json_object_set_new(c, "validation_context", val);
    return json_pack("{s:s, s:s, s:o}", "@type", T_UP, "sni",
                     "outbound_.8080_._.echo.default.svc.cluster.local", "common_tls_context", c);
}

/* ---- a connection pair driven by hand ------------------------------------------------------ */

struct end {
    struct msm_conn c;
};

static void end_init(struct end *e, int fd, struct msm_transport *t)
{
    memset(e, 0, sizeof(*e));
    e->c.fd = fd;
    e->c.id = (unsigned long long)fd;
    e->c.tr = t;
    msm_buf_init(&e->c.in);
    msm_buf_init(&e->c.out);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void end_deinit(struct end *e)
{
    e->c.tr->ops->free(e->c.tr);
    msm_buf_deinit(&e->c.in);
    msm_buf_deinit(&e->c.out);
    close(e->c.fd);
}

struct pair {
    struct end cl, sv;
    int rc_cl, rc_sv;
};

static void pair_run(struct pair *p, struct msm_tls_factory *cf, struct msm_tls_factory *sf)
{
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    end_init(&p->cl, fds[0], msm_tls_transport_new(cf));
    end_init(&p->sv, fds[1], msm_tls_transport_new(sf));
    p->rc_cl = p->rc_sv = MSM_EAGAIN;
    for (int i = 0; i < 200 && (p->rc_cl == MSM_EAGAIN || p->rc_sv == MSM_EAGAIN); i++) {
        if (p->rc_cl == MSM_EAGAIN) {
            p->rc_cl = p->cl.c.tr->ops->handshake(p->cl.c.tr, &p->cl.c);
        }
        if (p->rc_sv == MSM_EAGAIN) {
            p->rc_sv = p->sv.c.tr->ops->handshake(p->sv.c.tr, &p->sv.c);
        }
    }
}

static void pair_free(struct pair *p)
{
    end_deinit(&p->cl);
    end_deinit(&p->sv);
}

/* Move <msg> from <a> to <b> through TLS. */
static void send_recv(struct end *a, struct end *b, const char *msg)
{
    msm_buf_append(&a->c.out, msg, strlen(msg));
    assert_int_equal(a->c.tr->ops->write(a->c.tr, &a->c), (ssize_t)strlen(msg));
    ssize_t r = -EAGAIN;
    for (int i = 0; i < 100 && r == -EAGAIN; i++) {
        r = b->c.tr->ops->read(b->c.tr, &b->c, 65536);
    }
    assert_int_equal(r, (ssize_t)strlen(msg));
    char got[256] = "";
    msm_buf_copyout(&b->c.in, 0, got, b->c.in.len);
    assert_string_equal(got, msg);
    msm_buf_drain(&b->c.in, b->c.in.len);
}

/* ---- SAN matching --------------------------------------------------------------------------- */

static void test_dns_match(void **state)
{
    (void)state;
    assert_true(msm_tls_dns_match("foo.example.com", "foo.example.com", 15));
    assert_true(msm_tls_dns_match("FOO.example.com", "foo.EXAMPLE.com", 15));
    assert_true(msm_tls_dns_match("foo.example.com", "*.example.com", 13));
    assert_false(msm_tls_dns_match("a.foo.example.com", "*.example.com", 13));
    assert_false(msm_tls_dns_match("example.com", "*.example.com", 13));
    assert_false(msm_tls_dns_match(".example.com", "*.example.com", 13));
    assert_false(msm_tls_dns_match("foo.example.org", "*.example.com", 13));
}

static struct msm_tls_validation validation(json_t *cvc)
{
    ProtobufCMessage *m =
        decode("envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext", cvc);
    struct msm_tls_validation v;
    struct msm_err err = {{0}};
    if (msm_tls_validation_from_proto(m, &v, &err) < 0) {
        fail_msg("validation: %s", err.msg);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return v;
}

/* Does <server>'s certificate satisfy this validation context JSON? */
static bool san_ok(json_t *cvc)
{
    struct msm_tls_validation v = validation(cvc);
    bool ok = msm_tls_san_match(v.sans, v.n_sans, server.x509);
    msm_tls_validation_deinit(&v);
    return ok;
}

static bool legacy(const char *kind, const char *value)
{
    return san_ok(json_pack("{s:[{s:s}]}", "match_subject_alt_names", kind, value));
}

static bool typed(const char *type, const char *kind, const char *value)
{
    return san_ok(json_pack("{s:[{s:s, s:{s:s}}]}", "match_typed_subject_alt_names", "san_type",
                            type, "matcher", kind, value));
}

static void test_san_legacy(void **state)
{
    (void)state;
    /* What istiod sends sidecars: exact SPIFFE ids (outbound), trust-domain prefix (inbound). */
    assert_true(legacy("exact", SPIFFE_SERVER));
    assert_false(legacy("exact", SPIFFE_CLIENT));
    assert_true(legacy("prefix", "spiffe://cluster.local/"));
    assert_false(legacy("prefix", "spiffe://other.domain/"));
    assert_true(legacy("suffix", "/sa/server"));
    assert_true(legacy("contains", "ns/default"));
    assert_false(legacy("contains", "ns/prod"));
    /* Any SAN type: DNS with wildcard semantics for exact, IP, email. */
    assert_true(legacy("exact", "api.example.com"));
    assert_false(legacy("exact", "a.b.example.com"));
    assert_true(legacy("exact", "10.0.0.1"));
    assert_true(legacy("exact", "ops@example.com"));
    assert_true(san_ok(json_pack("{s:[{s:s, s:b}]}", "match_subject_alt_names", "exact",
                                 "SPIFFE://CLUSTER.LOCAL/ns/default/sa/server", "ignore_case",
                                 1)));
    assert_false(legacy("exact", "SPIFFE://CLUSTER.LOCAL/ns/default/sa/server"));
    /* safe_regex is a full match (RE2 semantics). */
    assert_true(san_ok(json_pack("{s:[{s:{s:s}}]}", "match_subject_alt_names", "safe_regex",
                                 "regex", "spiffe://cluster\\.local/ns/[^/]+/sa/server")));
    assert_false(san_ok(json_pack("{s:[{s:{s:s}}]}", "match_subject_alt_names", "safe_regex",
                                  "regex", "cluster")));
    /* Any of several matchers. */
    assert_true(san_ok(json_pack("{s:[{s:s},{s:s}]}", "match_subject_alt_names", "exact", "x",
                                 "exact", SPIFFE_SERVER)));
}

static void test_san_typed(void **state)
{
    (void)state;
    assert_true(typed("URI", "exact", SPIFFE_SERVER));
    assert_false(typed("DNS", "exact", SPIFFE_SERVER));
    assert_true(typed("DNS", "exact", "www.example.com"));
    assert_false(typed("URI", "exact", "www.example.com"));
    assert_true(typed("IP_ADDRESS", "exact", "10.0.0.1"));
    assert_false(typed("DNS", "exact", "10.0.0.1"));
    assert_true(typed("EMAIL", "suffix", "@example.com"));
    /* A certificate without SANs matches nothing. */
    struct test_cert bare = test_cert_new(&ca, "bare", NULL, false);
    struct msm_san_matcher m = {.type = MSM_SAN_ANY,
                                .m = {.kind = MSM_STR_PREFIX, .s = (char *)""}};
    assert_false(msm_tls_san_match(&m, 1, bare.x509));
    test_cert_free(&bare);
}

/* SAN matchers are shared by content: equal lists are one set, a copy is the same set, a
 * merge that appends makes a set of its own with both lists in order, and the last reference
 * frees it (the count goes back to where it was). */
static void test_san_sets_shared(void **state)
{
    (void)state;
    size_t base = msm_tls_san_sets();
    struct msm_tls_validation a = validation(
        json_pack("{s:[{s:s}]}", "match_subject_alt_names", "exact", SPIFFE_SERVER));
    struct msm_tls_validation b = validation(
        json_pack("{s:[{s:s}]}", "match_subject_alt_names", "exact", SPIFFE_SERVER));
    /* Same pattern, other kind: another set. */
    struct msm_tls_validation c = validation(
        json_pack("{s:[{s:s}]}", "match_subject_alt_names", "prefix", SPIFFE_SERVER));
    assert_non_null(a.san_set);
    assert_ptr_equal(a.san_set, b.san_set);
    assert_ptr_equal(a.sans, b.sans);
    assert_ptr_not_equal(a.san_set, c.san_set);
    assert_int_equal(msm_tls_san_sets(), base + 2);
    struct msm_tls_validation d;
    msm_tls_validation_copy(&d, &a);
    assert_ptr_equal(d.san_set, a.san_set);
    assert_int_equal(d.n_sans, 1);
    msm_tls_validation_merge(&d, &c);
    assert_int_equal(d.n_sans, 2);
    assert_ptr_not_equal(d.san_set, a.san_set);
    assert_int_equal(d.sans[0].m.kind, MSM_STR_EXACT);
    assert_int_equal(d.sans[1].m.kind, MSM_STR_PREFIX);
    assert_true(msm_tls_san_match(d.sans, d.n_sans, server.x509));
    assert_int_equal(msm_tls_san_sets(), base + 3);
    msm_tls_validation_deinit(&a);
    msm_tls_validation_deinit(&d);
    assert_int_equal(msm_tls_san_sets(), base + 2);
    assert_true(msm_tls_san_match(b.sans, b.n_sans, server.x509));
    msm_tls_validation_deinit(&b);
    msm_tls_validation_deinit(&c);
    assert_int_equal(msm_tls_san_sets(), base);
}

/* ---- context building errors ------------------------------------------------------------ */

static void expect_error(bool srv, json_t *ctx, const char *want)
{
    struct msm_err err = {{0}};
    struct msm_tls_factory *f = NULL;
    assert_int_equal(factory(srv, ctx, "err.", &f, &err), MSM_EINVAL);
    assert_null(f);
    if (!strstr(err.msg, want)) {
        fail_msg("expected '%s' in '%s'", want, err.msg);
    }
}

static void test_context_errors(void **state)
{
    (void)state;
    expect_error(false, json_pack("{s:s, s:b}", "@type", T_UP, "allow_renegotiation", 1),
                 "allow_renegotiation");
    expect_error(true, json_pack("{s:s, s:{}}", "@type", T_DOWN, "common_tls_context"),
                 "No TLS certificates found for server context");
    expect_error(false, json_pack("{s:s, s:{s:{s:[s]}}}", "@type", T_UP, "common_tls_context",
                                  "tls_params", "cipher_suites", "NOT-A-CIPHER"),
                 "NOT-A-CIPHER");
    expect_error(false, json_pack("{s:s, s:{s:{s:[s]}}}", "@type", T_UP, "common_tls_context",
                                  "tls_params", "ecdh_curves", "P-999"),
                 "ECDH curves");
    expect_error(false, json_pack("{s:s, s:{s:{s:s, s:s}}}", "@type", T_UP, "common_tls_context",
                                  "tls_params", "tls_minimum_protocol_version", "TLSv1_3",
                                  "tls_maximum_protocol_version", "TLSv1_2"),
                 "greater than");
    expect_error(false, json_pack("{s:s, s:{s:[s]}}", "@type", T_UP, "common_tls_context",
                                  "alpn_protocols", ""),
                 "alpn_protocols[0]");
    /* A key that does not belong to the certificate. */
    expect_error(false, json_pack("{s:s, s:{s:[{s:o, s:o}]}}", "@type", T_UP,
                                  "common_tls_context", "tls_certificates", "certificate_chain",
                                  pem(server.cert_pem), "private_key", pem(client.key_pem)),
                 "does not match");
    expect_error(false, json_pack("{s:s, s:{s:[{s:o, s:o}]}}", "@type", T_UP,
                                  "common_tls_context", "tls_certificates", "certificate_chain",
                                  pem("garbage"), "private_key", pem(client.key_pem)),
                 "certificate chain");
    expect_error(false, json_pack("{s:s, s:{s:o, s:o}}", "@type", T_UP, "common_tls_context",
                                  "tls_certificates", cert_json(&client),
                                  "tls_certificate_sds_secret_configs",
                                  json_pack("[{s:s}]", "name", "x")),
                 "Multiple TLS certificates");
    expect_error(false, json_pack("{s:s, s:{s:[{s:s}]}}", "@type", T_UP, "common_tls_context",
                                  "tls_certificate_sds_secret_configs", "name", "nope"),
                 "Unknown static secret: nope");
    expect_error(false, json_pack("{s:s, s:{s:{s:o}}}", "@type", T_UP, "common_tls_context",
                                  "validation_context", "trusted_ca", pem("not a pem")),
                 "trusted_ca");
    expect_error(false, json_pack("{s:s, s:{s:{s:[{s:s, s:{s:s}}]}}}", "@type", T_UP,
                                  "common_tls_context", "validation_context",
                                  "match_typed_subject_alt_names", "san_type", "OTHER_NAME",
                                  "matcher", "exact", "x"),
                 "OTHER_NAME");
    expect_error(false, json_pack("{s:s, s:{s:{s:[{s:s}]}}}", "@type", T_UP, "common_tls_context",
                                  "validation_context", "match_subject_alt_names", "prefix", ""),
                 "prefix: must not be empty");
    expect_error(false, json_pack("{s:s, s:{s:{s:[{s:{s:s}}]}}}", "@type", T_UP,
                                  "common_tls_context", "validation_context",
                                  "match_subject_alt_names", "safe_regex", "regex", "(unclosed"),
                 "invalid regex");
    expect_error(false, json_pack("{s:s, s:{s:{s:{s:s}}}}", "@type", T_UP, "common_tls_context",
                                  "validation_context", "custom_validator_config", "name",
                                  "envoy.tls.cert_validator.spiffe"),
                 "custom_validator_config");
    expect_error(true, json_pack("{s:s, s:{s:[{s:s}]}, s:{s:o}}", "@type", T_DOWN,
                                 "session_ticket_keys", "keys", "inline_string", "x",
                                 "common_tls_context", "tls_certificates", cert_json(&server)),
                 "session_ticket_keys");
    /* The wrong direction, and other transport sockets. */
    expect_error(true, json_pack("{s:s}", "@type", T_UP), "expected");
    expect_error(false,
                 json_pack("{s:s}", "@type",
                           "type.googleapis.com/envoy.extensions.transport_sockets.tap.v3.Tap"),
                 "not supported here");
    /* raw_buffer is no TLS factory at all. */
    struct msm_err err = {{0}};
    struct msm_tls_factory *f = (void *)1;
    json_t *raw = json_pack("{s:s}", "@type",
                            "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3."
                            "RawBuffer");
    assert_int_equal(factory(false, raw, "raw.", &f, &err), 0);
    assert_null(f);
}

/* ---- handshakes --------------------------------------------------------------------------- */

static void test_mtls_alpn_sni(void **state)
{
    (void)state;
    struct msm_tls_factory *sf = must(true, server_ctx(&server, "spiffe://cluster.local/", true),
                                      "srv.");
    struct msm_tls_factory *cf = must(false, client_ctx(&client, SPIFFE_SERVER, ca.cert_pem),
                                      "cli.");
    assert_true(msm_tls_factory_ready(sf) && msm_tls_factory_warm(cf));
    struct pair p;
    pair_run(&p, cf, sf);
    assert_int_equal(p.rc_cl, 0);
    assert_int_equal(p.rc_sv, 0);
    const struct msm_tls_info *ci = p.cl.c.tr->ops->info(p.cl.c.tr);
    const struct msm_tls_info *si = p.sv.c.tr->ops->info(p.sv.c.tr);
    /* The server picks by its own preference among what the client offered. */
    assert_string_equal(ci->alpn, "istio-peer-exchange");
    assert_string_equal(si->alpn, "istio-peer-exchange");
    assert_string_equal(si->sni, "outbound_.8080_._.echo.default.svc.cluster.local");
    assert_true(si->peer_cert_presented && si->peer_cert_validated);
    assert_int_equal(si->n_uri_sans, 1);
    assert_string_equal(si->uri_sans[0], SPIFFE_CLIENT);
    assert_string_equal(ci->uri_sans[0], SPIFFE_SERVER);
    assert_int_equal(ci->n_dns_sans, 1);
    assert_string_equal(ci->version, "TLSv1.3");
    assert_non_null(strstr(si->peer_subject, "CN=client"));
    send_recv(&p.cl, &p.sv, "ping");
    send_recv(&p.sv, &p.cl, "pong");
    /* close_notify ends the peer's stream cleanly (half-close). */
    assert_int_equal(p.cl.c.tr->ops->shutdown_write(p.cl.c.tr, &p.cl.c), 0);
    assert_int_equal(p.sv.c.tr->ops->read(p.sv.c.tr, &p.sv.c, 1024), 0);
    send_recv(&p.sv, &p.cl, "still open");
    pair_free(&p);
    assert_int_equal(stat_of("srv.ssl.handshake"), 1);
    assert_int_equal(stat_of("cli.ssl.handshake"), 1);
    assert_int_equal(stat_of("srv.ssl.versions.TLSv1.3"), 1);
    assert_int_equal(stat_of("cli.ssl.curves.X25519"), 1);
    assert_int_equal(stat_of("srv.ssl.ciphers.TLS_AES_256_GCM_SHA384") +
                         stat_of("srv.ssl.ciphers.TLS_AES_128_GCM_SHA256") +
                         stat_of("srv.ssl.ciphers.TLS_CHACHA20_POLY1305_SHA256"),
                     1);
    assert_int_equal(stat_of("srv.ssl.no_certificate"), 0);

    /* Offer ALPN the server does not have: no ALPN, the handshake still succeeds. */
    struct msm_tls_factory *cf2 = must(false,
                                       json_pack("{s:s, s:{s:[s]}}", "@type", T_UP,
                                                 "common_tls_context", "alpn_protocols", "x-y"),
                                       "cli2.");
    struct msm_tls_factory *sf2 = must(true, server_ctx(&server, NULL, false), "srv2.");
    pair_run(&p, cf2, sf2);
    assert_int_equal(p.rc_cl, 0);
    assert_int_equal(p.rc_sv, 0);
    assert_null(p.sv.c.tr->ops->info(p.sv.c.tr)->alpn);
    assert_null(p.sv.c.tr->ops->info(p.sv.c.tr)->sni);
    /* TLS 1.2: Envoy's client default maximum. */
    assert_string_equal(p.cl.c.tr->ops->info(p.cl.c.tr)->version, "TLSv1.2");
    pair_free(&p);
    assert_int_equal(stat_of("srv2.ssl.no_certificate"), 1);
    msm_tls_factory_unref(cf2);
    msm_tls_factory_unref(sf2);
    msm_tls_factory_unref(cf);
    msm_tls_factory_unref(sf);
}

static void test_verify_failures(void **state)
{
    (void)state;
    struct msm_tls_factory *sf = must(true, server_ctx(&server, "spiffe://cluster.local/", true),
                                      "vs.");
    /* Wrong SAN expected by the client. */
    struct msm_tls_factory *cf = must(false, client_ctx(&client, SPIFFE_CLIENT, ca.cert_pem),
                                      "vc.");
    struct pair p;
    pair_run(&p, cf, sf);
    assert_true(p.rc_cl < 0);
    assert_int_equal(stat_of("vc.ssl.fail_verify_san"), 1);
    assert_int_equal(stat_of("vc.ssl.connection_error"), 0);
    pair_free(&p);
    msm_tls_factory_unref(cf);
    /* Server certificate from another CA. */
    cf = must(false, client_ctx(&client, SPIFFE_SERVER, other_ca.cert_pem), "vc2.");
    pair_run(&p, cf, sf);
    assert_true(p.rc_cl < 0);
    assert_int_equal(stat_of("vc2.ssl.fail_verify_error"), 1);
    pair_free(&p);
    msm_tls_factory_unref(cf);
    /* No client certificate although required: the server counts fail_verify_no_cert. */
    cf = must(false, client_ctx(NULL, SPIFFE_SERVER, ca.cert_pem), "vc3.");
    pair_run(&p, cf, sf);
    assert_true(p.rc_sv < 0);
    assert_int_equal(stat_of("vs.ssl.fail_verify_no_cert"), 1);
    pair_free(&p);
    msm_tls_factory_unref(cf);
    /* A client certificate from another CA. */
    cf = must(false, client_ctx(&rogue, SPIFFE_SERVER, ca.cert_pem), "vc4.");
    pair_run(&p, cf, sf);
    assert_true(p.rc_sv < 0);
    assert_int_equal(stat_of("vs.ssl.fail_verify_error"), 1);
    pair_free(&p);
    msm_tls_factory_unref(cf);
    /* The server saw the clients that rejected it as alerts: connection errors. */
    assert_int_equal(stat_of("vs.ssl.connection_error"), 2);
    /* Garbage instead of a ClientHello. */
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    struct end e;
    end_init(&e, fds[1], msm_tls_transport_new(sf));
    assert_int_equal(write(fds[0], "GET / HTTP/1.1\r\n\r\n", 18), 18);
    assert_true(e.c.tr->ops->handshake(e.c.tr, &e.c) < 0);
    assert_non_null(e.c.close_detail);
    assert_int_equal(stat_of("vs.ssl.connection_error"), 3);
    end_deinit(&e);
    close(fds[0]);
    assert_int_equal(stat_of("vs.ssl.handshake"), 0);
    msm_tls_factory_unref(sf);
}

/* Client contexts that differ only in SNI and SAN matchers (one per cluster in an Istio
 * sidecar) share one SSL_CTX; each connection is still verified against its own cluster's
 * matchers and counted in its own stats. Server contexts are not shared. */
static void test_shared_client_ctx(void **state)
{
    (void)state;
    struct msm_tls_factory *sf = must(true, server_ctx(&server, "spiffe://cluster.local/", true),
                                      "shs.");
    struct msm_tls_factory *sf2 = must(true, server_ctx(&server, "spiffe://cluster.local/", true),
                                       "shs2.");
    struct msm_tls_factory *good = must(false, client_ctx(&client, SPIFFE_SERVER, ca.cert_pem),
                                        "shg.");
    struct msm_tls_factory *bad = must(false, client_ctx(&client, SPIFFE_CLIENT, ca.cert_pem),
                                       "shb.");
    struct msm_tls_factory *other = must(false, client_ctx(&client, SPIFFE_SERVER,
                                                           other_ca.cert_pem), "sho.");
    assert_ptr_equal(good->cur->ssl, bad->cur->ssl);
    assert_ptr_not_equal(good->cur->ssl, other->cur->ssl); /* another trust store */
    assert_ptr_not_equal(sf->cur->ssl, sf2->cur->ssl);
    for (int round = 0; round < 2; round++) {
        struct pair p;
        pair_run(&p, bad, sf);
        assert_true(p.rc_cl < 0);
        pair_free(&p);
        pair_run(&p, good, sf);
        assert_int_equal(p.rc_cl, 0);
        assert_int_equal(p.rc_sv, 0);
        send_recv(&p.cl, &p.sv, "shared");
        pair_free(&p);
    }
    assert_int_equal(stat_of("shb.ssl.fail_verify_san"), 2);
    assert_int_equal(stat_of("shg.ssl.fail_verify_san"), 0);
    assert_int_equal(stat_of("shg.ssl.handshake"), 2);
    assert_int_equal(stat_of("shb.ssl.handshake"), 0);
    /* The shared SSL_CTX outlives the factory that built it. */
    msm_tls_factory_unref(good);
    struct pair p;
    pair_run(&p, bad, sf);
    assert_true(p.rc_cl < 0);
    pair_free(&p);
    assert_int_equal(stat_of("shb.ssl.fail_verify_san"), 3);
    msm_tls_factory_unref(bad);
    msm_tls_factory_unref(other);
    msm_tls_factory_unref(sf2);
    msm_tls_factory_unref(sf);
}

/* ---- SDS ---------------------------------------------------------------------------------- */

static ProtobufCMessage *secret_cert(const char *name, const struct test_cert *c,
                                     const char *key_pem)
{
    return decode("envoy.extensions.transport_sockets.tls.v3.Secret",
                  json_pack("{s:s, s:{s:o, s:o}}", "name", name, "tls_certificate",
                            "certificate_chain", pem(c->cert_pem), "private_key",
                            pem(key_pem ? key_pem : c->key_pem)));
}

static ProtobufCMessage *secret_ca(const char *name, const char *ca_pem)
{
    return decode("envoy.extensions.transport_sockets.tls.v3.Secret",
                  json_pack("{s:s, s:{s:o}}", "name", name, "validation_context", "trusted_ca",
                            pem(ca_pem)));
}

static int push_s(const char *name, ProtobufCMessage *m, const char *version, struct msm_err *err)
{
    struct msm_xds_resource r = {.name = name, .version = version, .msg = m};
    struct msm_xds_update u = {.type_url = MSM_XDS_TYPE_SECRET, .resources = &r, .n = 1,
                               .version_info = version};
    int rc = msm_secrets_apply(msm_secrets, &u, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* Istio's outbound context: certificate and root from SDS (names default / ROOTCA). */
static json_t *istio_client_ctx(void)
{
    return json_pack("{s:s, s:{s:[s,s], s:[{s:s, s:{s:{}}}], "
                     "s:{s:{s:[{s:s}]}, s:{s:s, s:{s:{}}}}}}",
                     "@type", T_UP, "common_tls_context", "alpn_protocols", "istio-peer-exchange",
                     "istio", "tls_certificate_sds_secret_configs", "name", "default",
                     "sds_config", "ads", "combined_validation_context",
                     "default_validation_context", "match_subject_alt_names", "exact",
                     SPIFFE_SERVER, "validation_context_sds_secret_config", "name", "ROOTCA",
                     "sds_config", "ads");
}

static void test_sds_warming_rotation(void **state)
{
    (void)state;
    struct msm_tls_factory *cf = must(false, istio_client_ctx(), "sds.");
    assert_false(msm_tls_factory_ready(cf));
    assert_false(msm_tls_factory_warm(cf));
    /* A connection now fails its handshake and is counted. */
    struct msm_transport *t = msm_tls_transport_new(cf);
    struct end e;
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    end_init(&e, fds[0], t);
    assert_true(t->ops->handshake(t, &e.c) < 0);
    end_deinit(&e);
    close(fds[1]);
    assert_int_equal(
        stat_of("sds.client_ssl_socket_factory.upstream_context_secrets_not_ready"), 1);

    struct msm_err err = {{0}};
    /* A bad secret is NACKed and changes nothing. */
    assert_int_equal(push_s("default", secret_cert("default", &client, server.key_pem), "0", &err),
                     MSM_EINVAL);
    assert_non_null(strstr(err.msg, "does not match"));
    assert_int_equal(push_s("default", secret_cert("default", &client, NULL), "1", &err), 1);
    assert_false(msm_tls_factory_ready(cf));
    assert_int_equal(push_s("ROOTCA", secret_ca("ROOTCA", ca.cert_pem), "1", &err), 1);
    assert_true(msm_tls_factory_ready(cf));
    assert_int_equal(stat_of("sds.client_ssl_socket_factory.ssl_context_update_by_sds"), 1);
    /* The same secret again: nothing changes. */
    assert_int_equal(push_s("ROOTCA", secret_ca("ROOTCA", ca.cert_pem), "2", &err), 0);

    struct msm_tls_factory *sf = must(true, server_ctx(&server, "spiffe://cluster.local/", true),
                                      "sdss.");
    struct pair p;
    pair_run(&p, cf, sf);
    assert_int_equal(p.rc_cl, 0);
    assert_int_equal(p.rc_sv, 0);
    assert_string_equal(p.sv.c.tr->ops->info(p.sv.c.tr)->uri_sans[0], SPIFFE_CLIENT);
    /* Rotation: new connections present the new certificate; the old one keeps working. */
    struct test_cert next = test_cert_new(&ca, "client-2", "URI:spiffe://cluster.local/ns/default/"
                                                           "sa/client2", false);
    assert_int_equal(push_s("default", secret_cert("default", &next, NULL), "3", &err), 1);
    assert_int_equal(stat_of("sds.client_ssl_socket_factory.ssl_context_update_by_sds"), 2);
    struct pair q;
    pair_run(&q, cf, sf);
    assert_int_equal(q.rc_cl, 0);
    assert_int_equal(q.rc_sv, 0);
    assert_string_equal(q.sv.c.tr->ops->info(q.sv.c.tr)->uri_sans[0],
                        "spiffe://cluster.local/ns/default/sa/client2");
    send_recv(&p.cl, &p.sv, "old connection");
    pair_free(&q);
    pair_free(&p);
    test_cert_free(&next);
    msm_tls_factory_unref(sf);
    msm_tls_factory_unref(cf);

    /* Initial fetch timeout: warm without being ready. */
    struct msm_tls_factory *late = must(
        false,
        json_pack("{s:s, s:{s:[{s:s, s:{s:{}}}]}}", "@type", T_UP, "common_tls_context",
                  "tls_certificate_sds_secret_configs", "name", "late", "sds_config", "ads"),
        "late.");
    assert_false(msm_tls_factory_warm(late));
    assert_int_equal(msm_secrets_fetch_timeout(msm_secrets, "late"), 1);
    assert_true(msm_tls_factory_warm(late));
    assert_false(msm_tls_factory_ready(late));
    msm_tls_factory_unref(late);
    msm_secrets_gc(msm_secrets);
}

static void test_static_secret(void **state)
{
    (void)state;
    struct msm_err err = {{0}};
    ProtobufCMessage *s = secret_cert("static-cert", &client, NULL);
    assert_int_equal(msm_secrets_add_static(msm_secrets, s, &err), 0);
    assert_int_equal(msm_secrets_add_static(msm_secrets, s, &err), MSM_EINVAL);
    assert_non_null(strstr(err.msg, "Duplicate"));
    protobuf_c_message_free_unpacked(s, NULL);
    struct msm_tls_factory *f = must(false,
                                     json_pack("{s:s, s:{s:[{s:s}]}}", "@type", T_UP,
                                               "common_tls_context",
                                               "tls_certificate_sds_secret_configs", "name",
                                               "static-cert"),
                                     "st.");
    assert_true(msm_tls_factory_ready(f));
    msm_tls_factory_unref(f);
}

int main(void)
{
    msm_log_set_all(MSM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dns_match),
        cmocka_unit_test(test_san_legacy),
        cmocka_unit_test(test_san_typed),
        cmocka_unit_test(test_san_sets_shared),
        cmocka_unit_test(test_context_errors),
        cmocka_unit_test(test_mtls_alpn_sni),
        cmocka_unit_test(test_verify_failures),
        cmocka_unit_test(test_shared_client_ctx),
        cmocka_unit_test(test_sds_warming_rotation),
        cmocka_unit_test(test_static_secret),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
