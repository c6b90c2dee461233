/* tls_inspector: parse the ClientHello from peeked bytes, the way Envoy's inspector sees it
 * through BoringSSL: the record layer (handshake records, any number of them), the ClientHello
 * structure (ssl_client_hello_init), the server_name extension (extract_sni: exactly one
 * non-empty host_name without NUL bytes) and the ALPN list (a malformed list is ignored, not an
 * error, as Envoy's onALPN does). */
#include "net/inspect_tls.h"

#include <string.h>

#define REC_HEADER 5
#define REC_TYPE_HANDSHAKE 22
#define REC_MAX (16384 + 2048)
#define HS_CLIENT_HELLO 1
#define EXT_SERVER_NAME 0
#define EXT_ALPN 16

/* Handshake bytes spread over records: a cursor that skips record headers. */
struct rd {
    const uint8_t *d;
    size_t len;
    size_t pos;      /* offset in d of the next handshake byte */
    size_t rec_left; /* bytes of the current record not consumed yet */
    size_t msg_left; /* bytes of the ClientHello body not consumed yet */
    bool more;       /* ran out of input: need more bytes */
    bool bad;        /* not a (valid) TLS ClientHello */
};

/* Make the next handshake byte available; false when it is not (sets more or bad). */
static bool next_record(struct rd *r)
{
    while (r->rec_left == 0) {
        if (r->len - r->pos < REC_HEADER) {
            r->more = true;
            return false;
        }
        const uint8_t *h = r->d + r->pos;
        size_t n = ((size_t)h[3] << 8) | h[4];
        if (h[0] != REC_TYPE_HANDSHAKE || h[1] != 3 || n == 0 || n > REC_MAX) {
            r->bad = true;
            return false;
        }
        r->pos += REC_HEADER;
        r->rec_left = n;
    }
    if (r->pos >= r->len) {
        r->more = true;
        return false;
    }
    return true;
}

/* Copy (out != NULL) or skip <n> handshake bytes. Callers stop at the first failure. */
static bool take(struct rd *r, uint8_t *out, size_t n)
{
    while (n) {
        if (!next_record(r)) {
            return false;
        }
        size_t k = r->rec_left;
        if (k > r->len - r->pos) {
            k = r->len - r->pos;
        }
        if (k > n) {
            k = n;
        }
        if (out) {
            memcpy(out, r->d + r->pos, k);
            out += k;
        }
        r->pos += k;
        r->rec_left -= k;
        n -= k;
    }
    return true;
}

/* Read from the ClientHello body (bounded by msg_left). */
static bool body(struct rd *r, uint8_t *out, size_t n)
{
    if (n > r->msg_left) {
        r->bad = true;
        return false;
    }
    if (!take(r, out, n)) {
        return false;
    }
    r->msg_left -= n;
    return true;
}

static bool u8(struct rd *r, size_t *v)
{
    uint8_t b;
    if (!body(r, &b, 1)) {
        return false;
    }
    *v = b;
    return true;
}

static bool u16(struct rd *r, size_t *v)
{
    uint8_t b[2];
    if (!body(r, b, 2)) {
        return false;
    }
    *v = ((size_t)b[0] << 8) | b[1];
    return true;
}

/* server_name: a list holding exactly one non-empty host_name of at most 255 bytes, no NUL. */
static bool parse_sni(const uint8_t *e, size_t n, struct msm_tls_hello *out)
{
    if (n < 5) {
        return false;
    }
    size_t list = ((size_t)e[0] << 8) | e[1];
    size_t hl = ((size_t)e[3] << 8) | e[4];
    if (list != n - 2 || e[2] != 0 || hl != list - 3 || hl == 0 || hl > 255 ||
        memchr(e + 5, 0, hl)) {
        return false;
    }
    memcpy(out->sni, e + 5, hl);
    out->sni[hl] = '\0';
    out->has_sni = true;
    return true;
}

/* ALPN: u16 list of u8-prefixed, non-empty names. A malformed list leaves no protocols. */
static void parse_alpn(const uint8_t *e, size_t n, struct msm_tls_hello *out)
{
    if (n < 2 || (((size_t)e[0] << 8) | e[1]) != n - 2 || n - 2 < 2) {
        return;
    }
    for (size_t i = 2; i < n;) {
        size_t l = e[i];
        if (l == 0 || i + 1 + l > n) {
            out->n_alpn = 0;
            out->alpn_truncated = false;
            return;
        }
        i += 1 + l;
    }
    size_t used = 0;
    for (size_t i = 2; i < n; i += 1 + (size_t)e[i]) {
        size_t l = e[i];
        if (memchr(e + i + 1, 0, l)) {
            continue; /* a name with a NUL byte cannot equal any configured protocol */
        }
        if (out->n_alpn == MSM_TLS_ALPN_MAX || used + l + 1 > sizeof(out->alpn_buf)) {
            out->alpn_truncated = true;
            continue;
        }
        char *p = out->alpn_buf + used;
        memcpy(p, e + i + 1, l);
        p[l] = '\0';
        out->alpn[out->n_alpn++] = p;
        used += l + 1;
    }
}

/* The extension block: type/length pairs covering exactly <total> bytes, no duplicates. */
static bool parse_extensions(struct rd *r, size_t total, struct msm_tls_hello *out)
{
    uint8_t seen[65536 / 8];
    memset(seen, 0, sizeof(seen));
    uint8_t ext[65536];
    while (total) {
        size_t type, n;
        if (total < 4 || !u16(r, &type) || !u16(r, &n)) {
            r->bad = r->bad || total < 4;
            return false;
        }
        total -= 4;
        if (n > total) {
            r->bad = true;
            return false;
        }
        if (seen[type / 8] & (1u << (type % 8))) {
            r->bad = true;
            return false;
        }
        seen[type / 8] |= (uint8_t)(1u << (type % 8));
        bool keep = type == EXT_SERVER_NAME || type == EXT_ALPN;
        if (!body(r, keep ? ext : NULL, n)) {
            return false;
        }
        total -= n;
        if (type == EXT_SERVER_NAME && !parse_sni(ext, n, out)) {
            r->bad = true;
            return false;
        }
        if (type == EXT_ALPN) {
            parse_alpn(ext, n, out);
        }
    }
    return true;
}

static bool parse_hello(struct rd *r, struct msm_tls_hello *out)
{
    size_t n;
    /* legacy_version, random */
    if (!body(r, NULL, 2 + 32)) {
        return false;
    }
    /* session_id <0..32> */
    if (!u8(r, &n)) {
        return false;
    }
    if (n > 32) {
        r->bad = true;
        return false;
    }
    if (!body(r, NULL, n)) {
        return false;
    }
    /* cipher_suites <2..2^16-2>, an even length */
    if (!u16(r, &n)) {
        return false;
    }
    if (n < 2 || n % 2) {
        r->bad = true;
        return false;
    }
    if (!body(r, NULL, n)) {
        return false;
    }
    /* compression_methods <1..2^8-1> */
    if (!u8(r, &n)) {
        return false;
    }
    if (n < 1) {
        r->bad = true;
        return false;
    }
    if (!body(r, NULL, n)) {
        return false;
    }
    if (r->msg_left == 0) {
        return true; /* no extensions */
    }
    if (!u16(r, &n)) {
        return false;
    }
    if (n != r->msg_left) {
        r->bad = true;
        return false;
    }
    return parse_extensions(r, n, out);
}

enum msm_inspect_result msm_tls_inspect(const uint8_t *data, size_t len,
                                        struct msm_tls_hello *out)
{
    memset(out, 0, offsetof(struct msm_tls_hello, alpn_buf));
    out->alpn_buf[0] = '\0';
    if (len == 0) {
        return MSM_INSPECT_NEED_MORE;
    }
    if (data[0] != REC_TYPE_HANDSHAKE || (len > 1 && data[1] != 3)) {
        return MSM_INSPECT_NO;
    }
    struct rd r = {.d = data, .len = len};
    uint8_t h[4];
    r.msg_left = sizeof(h);
    if (!body(&r, h, sizeof(h))) {
        return r.bad ? MSM_INSPECT_NO : MSM_INSPECT_NEED_MORE;
    }
    if (h[0] != HS_CLIENT_HELLO) {
        return MSM_INSPECT_NO;
    }
    r.msg_left = ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
    if (r.msg_left > MSM_TLS_CLIENT_HELLO_MAX) {
        out->too_large = true;
        return MSM_INSPECT_NO;
    }
    if (parse_hello(&r, out)) {
        return MSM_INSPECT_YES;
    }
    /* SNI and ALPN only come with a complete, valid hello. */
    memset(out, 0, offsetof(struct msm_tls_hello, alpn_buf));
    return r.bad ? MSM_INSPECT_NO : MSM_INSPECT_NEED_MORE;
}
