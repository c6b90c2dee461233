/* tls_inspector: real ClientHellos from OpenSSL (whole, truncated, re-fragmented into many
 * records), hand-built ones (bad SNI, duplicate extensions, malformed ALPN), and what is not
 * TLS at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "net/inspect_tls.h"

/* A ClientHello as OpenSSL's client sends it. */
static size_t openssl_hello(const char *sni, const char *alpn_wire, size_t alpn_len, uint8_t *out,
                            size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    if (sni) {
        SSL_set_tlsext_host_name(ssl, sni);
    }
    if (alpn_wire) {
        SSL_set_alpn_protos(ssl, (const unsigned char *)alpn_wire, (unsigned)alpn_len);
    }
    SSL_set_connect_state(ssl);
    assert_int_equal(SSL_do_handshake(ssl), -1);
    int n = BIO_read(wb, out, (int)cap);
    assert_true(n > 0);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return (size_t)n;
}

/* Cut the handshake bytes of <in> (records) into records of at most <frag> bytes. */
static size_t refragment(const uint8_t *in, size_t n, size_t frag, uint8_t *out)
{
    uint8_t hs[70000];
    size_t h = 0;
    for (size_t i = 0; i + 5 <= n;) {
        size_t l = ((size_t)in[i + 3] << 8) | in[i + 4];
        memcpy(hs + h, in + i + 5, l);
        h += l;
        i += 5 + l;
    }
    size_t o = 0;
    for (size_t i = 0; i < h; i += frag) {
        size_t l = h - i < frag ? h - i : frag;
        out[o++] = 22;
        out[o++] = 3;
        out[o++] = 1;
        out[o++] = (uint8_t)(l >> 8);
        out[o++] = (uint8_t)l;
        memcpy(out + o, hs + i, l);
        o += l;
    }
    return o;
}

static void check_prefixes(const uint8_t *d, size_t n)
{
    struct msm_tls_hello h;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(msm_tls_inspect(d, i, &h), MSM_INSPECT_NEED_MORE);
    }
}

static void test_openssl_hello(void **state)
{
    (void)state;
    static const char alpn[] = "\x13istio-peer-exchange\x05istio\x02h2";
    uint8_t buf[4096], frag[8192];
    size_t n = openssl_hello("outbound_.8080_._.echo.default.svc.cluster.local", alpn,
                             sizeof(alpn) - 1, buf, sizeof(buf));
    struct msm_tls_hello h;
    assert_int_equal(msm_tls_inspect(buf, n, &h), MSM_INSPECT_YES);
    assert_true(h.has_sni);
    assert_string_equal(h.sni, "outbound_.8080_._.echo.default.svc.cluster.local");
    assert_int_equal(h.n_alpn, 3);
    assert_string_equal(h.alpn[0], "istio-peer-exchange");
    assert_string_equal(h.alpn[1], "istio");
    assert_string_equal(h.alpn[2], "h2");
    assert_false(h.too_large);
    check_prefixes(buf, n);
    /* The same hello in records of 7 bytes. */
    size_t m = refragment(buf, n, 7, frag);
    assert_int_equal(msm_tls_inspect(frag, m, &h), MSM_INSPECT_YES);
    assert_string_equal(h.alpn[2], "h2");
    assert_string_equal(h.sni, "outbound_.8080_._.echo.default.svc.cluster.local");
    check_prefixes(frag, m);
    /* Application bytes after the hello change nothing. */
    memcpy(buf + n, "\x17\x03\x03\x00\x01X", 6);
    assert_int_equal(msm_tls_inspect(buf, n + 6, &h), MSM_INSPECT_YES);
    /* No SNI, no ALPN: still TLS. */
    n = openssl_hello(NULL, NULL, 0, buf, sizeof(buf));
    assert_int_equal(msm_tls_inspect(buf, n, &h), MSM_INSPECT_YES);
    assert_false(h.has_sni);
    assert_string_equal(h.sni, "");
    assert_int_equal(h.n_alpn, 0);
}

static void test_not_tls(void **state)
{
    (void)state;
    struct msm_tls_hello h;
    static const char *const texts[] = {
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "OPTIONS rtsp://cam/stream RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        "INVITE sip:bob@example.com SIP/2.0\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        assert_int_equal(msm_tls_inspect((const uint8_t *)texts[i], strlen(texts[i]), &h),
                         MSM_INSPECT_NO);
    }
    /* SSLv2-compatible hello, wrong record versions, another handshake message, empty record. */
    static const uint8_t v2[] = {0x80, 0x2e, 0x01, 0x03, 0x01};
    static const uint8_t badver[] = {0x16, 0x02, 0x00};
    static const uint8_t server_hello[] = {0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00};
    static const uint8_t empty_rec[] = {0x16, 0x03, 0x01, 0x00, 0x00, 0x01};
    assert_int_equal(msm_tls_inspect(v2, sizeof(v2), &h), MSM_INSPECT_NO);
    assert_int_equal(msm_tls_inspect(badver, sizeof(badver), &h), MSM_INSPECT_NO);
    assert_int_equal(msm_tls_inspect(server_hello, sizeof(server_hello), &h), MSM_INSPECT_NO);
    assert_int_equal(msm_tls_inspect(empty_rec, sizeof(empty_rec), &h), MSM_INSPECT_NO);
    /* A TLS record start, undecided. */
    static const uint8_t start[] = {0x16, 0x03, 0x01};
    assert_int_equal(msm_tls_inspect(start, sizeof(start), &h), MSM_INSPECT_NEED_MORE);
    /* A ClientHello larger than we look at. */
    static const uint8_t huge[] = {0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x01};
    assert_int_equal(msm_tls_inspect(huge, sizeof(huge), &h), MSM_INSPECT_NO);
    assert_true(h.too_large);
}

/* A minimal ClientHello carrying extension bytes <ext> (<n> bytes) in one record. */
static size_t build(const uint8_t *ext, size_t n, uint8_t *out)
{
    uint8_t body[4096];
    size_t b = 0;
    body[b++] = 3;
    body[b++] = 3;
    memset(body + b, 0xab, 32);
    b += 32;
    body[b++] = 0;                 /* session id */
    body[b++] = 0;                 /* cipher suites: 2 bytes */
    body[b++] = 2;
    body[b++] = 0x13;
    body[b++] = 0x01;
    body[b++] = 1;                 /* compression: null */
    body[b++] = 0;
    body[b++] = (uint8_t)(n >> 8); /* extensions */
    body[b++] = (uint8_t)n;
    if (n) {
        memcpy(body + b, ext, n);
    }
    b += n;
    size_t o = 0;
    out[o++] = 22;
    out[o++] = 3;
    out[o++] = 1;
    out[o++] = (uint8_t)((b + 4) >> 8);
    out[o++] = (uint8_t)(b + 4);
    out[o++] = 1;
    out[o++] = 0;
    out[o++] = (uint8_t)(b >> 8);
    out[o++] = (uint8_t)b;
    memcpy(out + o, body, b);
    return o + b;
}

static enum msm_inspect_result inspect_ext(const void *ext, size_t n, struct msm_tls_hello *h)
{
    uint8_t buf[8192];
    size_t l = build(ext, n, buf);
    return msm_tls_inspect(buf, l, h);
}

static void test_handcrafted(void **state)
{
    (void)state;
    struct msm_tls_hello h;
    static const uint8_t sni[] = {0, 0, 0, 8, 0, 6, 0, 0, 3, 'a', '.', 'b'};
    assert_int_equal(inspect_ext(sni, sizeof(sni), &h), MSM_INSPECT_YES);
    assert_string_equal(h.sni, "a.b");
    /* No extensions at all. */
    assert_int_equal(inspect_ext(NULL, 0, &h), MSM_INSPECT_YES);
    /* Duplicate extension. */
    uint8_t dup[sizeof(sni) * 2];
    memcpy(dup, sni, sizeof(sni));
    memcpy(dup + sizeof(sni), sni, sizeof(sni));
    assert_int_equal(inspect_ext(dup, sizeof(dup), &h), MSM_INSPECT_NO);
    /* Two names, an empty name, a NUL inside, another name type. */
    static const uint8_t two[] = {0, 0, 0, 12, 0, 10, 0, 0, 1, 'a', 0, 0, 3, 'b', '.', 'c'};
    static const uint8_t empty[] = {0, 0, 0, 5, 0, 3, 0, 0, 0};
    static const uint8_t nul[] = {0, 0, 0, 8, 0, 6, 0, 0, 3, 'a', 0, 'b'};
    static const uint8_t type1[] = {0, 0, 0, 8, 0, 6, 1, 0, 3, 'a', '.', 'b'};
    assert_int_equal(inspect_ext(two, sizeof(two), &h), MSM_INSPECT_NO);
    assert_int_equal(inspect_ext(empty, sizeof(empty), &h), MSM_INSPECT_NO);
    assert_int_equal(inspect_ext(nul, sizeof(nul), &h), MSM_INSPECT_NO);
    assert_int_equal(inspect_ext(type1, sizeof(type1), &h), MSM_INSPECT_NO);
    assert_false(h.has_sni);
    /* An extension running past the block, a block shorter than its header. */
    static const uint8_t over[] = {0, 0, 0, 50, 0, 6};
    static const uint8_t stub[] = {0, 0};
    assert_int_equal(inspect_ext(over, sizeof(over), &h), MSM_INSPECT_NO);
    assert_int_equal(inspect_ext(stub, sizeof(stub), &h), MSM_INSPECT_NO);
    /* A malformed ALPN list is ignored (the TLS stack rejects it later), as Envoy does. */
    static const uint8_t bad_alpn[] = {0, 16, 0, 5, 0, 3, 0, 'h', '2'};
    assert_int_equal(inspect_ext(bad_alpn, sizeof(bad_alpn), &h), MSM_INSPECT_YES);
    assert_int_equal(h.n_alpn, 0);
    /* A name with a NUL byte cannot match any configured protocol: dropped. */
    static const uint8_t nul_alpn[] = {0, 16, 0, 8, 0, 6, 2, 'h', 0, 2, 'h', '2'};
    assert_int_equal(inspect_ext(nul_alpn, sizeof(nul_alpn), &h), MSM_INSPECT_YES);
    assert_int_equal(h.n_alpn, 1);
    assert_string_equal(h.alpn[0], "h2");
    /* More protocols than fit: the first ones are kept. */
    uint8_t many[4 + 2 + 20 * 4];
    size_t k = 6;
    for (int i = 0; i < 20; i++) {
        many[k++] = 3;
        many[k++] = 'p';
        many[k++] = (uint8_t)('a' + i);
        many[k++] = 'x';
    }
    many[0] = 0;
    many[1] = 16;
    many[2] = (uint8_t)((k - 4) >> 8);
    many[3] = (uint8_t)(k - 4);
    many[4] = (uint8_t)((k - 6) >> 8);
    many[5] = (uint8_t)(k - 6);
    assert_int_equal(inspect_ext(many, k, &h), MSM_INSPECT_YES);
    assert_int_equal(h.n_alpn, MSM_TLS_ALPN_MAX);
    assert_true(h.alpn_truncated);
    assert_string_equal(h.alpn[0], "pax");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openssl_hello),
        cmocka_unit_test(test_not_tls),
        cmocka_unit_test(test_handcrafted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
