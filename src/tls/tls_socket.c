/* The TLS transport socket (Envoy's SslSocket) and its factory.
 *
 * A connection's TLS state: created with the factory's current context (a reference held for
 * the connection's life), then
 *   HANDSHAKE: SSL_do_handshake until done; want-read/want-write become the connection's
 *              io interest; failures are counted (ssl.connection_error, fail_verify_*) and
 *              logged at debug;
 *   OPEN:      SSL_read_ex into the connection's read buffer, with read-ahead: one read()
 *              takes every record the socket holds (a short one means the socket is empty, so
 *              the connection skips the read that would say EAGAIN); records read ahead are
 *              served from OpenSSL's buffer (has_pending) without the fd becoming readable.
 *              SSL_write_ex from the write buffer: the small views of one flush are gathered
 *              into one record (one write() for headers and body), large ones go as they are;
 *   SHUT:      end of the write side: close_notify then shutdown(SHUT_WR); the read side stays
 *              open until the peer's close_notify or FIN;
 * and on close, a best-effort close_notify unless the connection dies on an error. */
#include <errno.h>
#include <ev.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"

#include "buffer/buf.h"
#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "net/conn.h"
#include "tls/tls_private.h"

struct tls_sock {
    struct msm_transport base;
    struct msm_tls_ctx *ctx; /* NULL: the factory had no context (secrets not ready) */
    SSL *ssl;
    bool fd_set;
    bool done;          /* handshake completed */
    bool shutdown_sent; /* close_notify written */
    bool validated;     /* set by the verify callback */
    bool verified;      /* the verify callback accepted the peer without leniency */
    /* The socket BIO's last read (bio_cb): it returned less than asked (the socket is empty),
     * or EAGAIN during the current SSL_read_ex. */
    bool rd_short, rd_eagain;
    bool starved; /* the last SSL_read_ex needs bytes from the socket: buffered ones are not a
                     whole record, only the fd becoming readable helps */
    size_t wretry; /* length of the SSL_write_ex to retry (WANT_WRITE); 0 none */
    struct msm_tls_info info;
    /* x-forwarded-client-cert material, computed on first use (msm_tls_peer_*) */
    char *peer_sha256, *peer_pem, *peer_chain_pem;
    char **local_uris;
    int n_local_uris;
    bool local_uris_done;
    /* msm_tls_transport_new_host: the SNI sent instead of the context's, the host the peer
     * must name instead of the context's SAN matchers, and the session cache key (owned). */
    char *sni, *verify_host, *sess_key;
};

static int sock_idx = -1;
static pthread_once_t sock_once = PTHREAD_ONCE_INIT;

static void sock_init(void)
{
    sock_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

void msm_tls_note_validated(SSL *ssl, bool validated)
{
    struct tls_sock *s = ssl ? SSL_get_ex_data(ssl, sock_idx) : NULL;
    if (s) {
        s->validated = validated;
    }
}

void msm_tls_note_verified(SSL *ssl)
{
    struct tls_sock *s = ssl ? SSL_get_ex_data(ssl, sock_idx) : NULL;
    if (s) {
        s->verified = true;
    }
}

int msm_tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_sock *s = SSL_get_ex_data(ssl, sock_idx);
    /* Only sessions whose server passed verification: resumption skips it. A resumed
     * connection's new tickets continue a verified session. */
    if (!s || !s->ctx || s->ctx->server ||
        !(s->verified || SSL_session_reused(ssl) || s->ctx->verify_mode == SSL_VERIFY_NONE)) {
        return 0;
    }
    return msm_tls_ctx_store_session(s->ctx, sess, s->sess_key ? s->sess_key : s->ctx->sni) ? 1
                                                                                             : 0;
}

const char *msm_tls_ssl_verify_host(SSL *ssl)
{
    struct tls_sock *s = ssl && sock_idx >= 0 ? SSL_get_ex_data(ssl, sock_idx) : NULL;
    return s ? s->verify_host : NULL;
}

struct msm_tls_ctx *msm_tls_ssl_ctx(SSL *ssl)
{
    struct tls_sock *s = ssl && sock_idx >= 0 ? SSL_get_ex_data(ssl, sock_idx) : NULL;
    return s ? s->ctx : NULL;
}

/* ---- errors ------------------------------------------------------------------------------- */

/* Drain OpenSSL's error queue for a failed operation: count like Envoy's drainErrorQueue (a
 * missing client certificate is fail_verify_no_cert, a failed verification was counted by the
 * verify callback, anything else is connection_error), log, and keep a static reason for the
 * connection's close_detail. */
static void drain_errors(struct tls_sock *s, struct msm_conn *c, const char *op)
{
    bool any = false, counted = false;
    const char *reason = NULL;
    char line[512] = "";
    unsigned long e;
    while ((e = ERR_get_error())) {
        any = true;
        if (ERR_GET_LIB(e) == ERR_LIB_SSL) {
            if (ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
                msm_stat_inc(s->ctx->stats->ssl.fail_verify_no_cert);
                counted = true;
            } else if (ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
                counted = true;
            }
        }
        if (!reason) {
            reason = ERR_reason_error_string(e);
        }
        size_t l = strlen(line);
        if (l < sizeof(line) - 1) {
            char one[256];
            ERR_error_string_n(e, one, sizeof(one));
            snprintf(line + l, sizeof(line) - l, "%s%s", l ? "; " : "", one);
        }
    }
    if (any && !counted) {
        msm_stat_inc(s->ctx->stats->ssl.connection_error);
    }
    c->close_detail = reason ? reason : "TLS error";
    msm_log(MSM_LOG_DEBUG, MSM_LC_CONNECTION, "[C%llu] TLS %s failed: %s", c->id, op,
            any ? line : "connection closed by peer");
}

/* ---- handshake ---------------------------------------------------------------------------- */

static char *asn1_dup(const ASN1_STRING *a)
{
    const char *p = (const char *)ASN1_STRING_get0_data(a);
    size_t l = (size_t)ASN1_STRING_length(a);
    return memchr(p, 0, l) ? NULL : msm_xstrndup(p, l);
}

static void push(char ***v, int *n, char *s)
{
    if (!s) {
        return;
    }
    *v = msm_xrealloc(*v, (size_t)(*n + 1) * sizeof(char *));
    (*v)[(*n)++] = s;
}

static void peer_info(struct tls_sock *s, X509 *peer)
{
    struct msm_tls_info *in = &s->info;
    in->peer_cert_presented = true;
    in->peer_cert_validated = s->validated;
    GENERAL_NAMES *names = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_URI) {
            push(&in->uri_sans, &in->n_uri_sans, asn1_dup(g->d.uniformResourceIdentifier));
        } else if (g->type == GEN_DNS) {
            push(&in->dns_sans, &in->n_dns_sans, asn1_dup(g->d.dNSName));
        }
    }
    GENERAL_NAMES_free(names);
    BIO *b = BIO_new(BIO_s_mem());
    X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253);
    char *p = NULL;
    long l = BIO_get_mem_data(b, &p);
    in->peer_subject = msm_xstrndup(p ? p : "", l > 0 ? (size_t)l : 0);
    BIO_free(b);
}

/* BoringSSL's curve names for Envoy's ssl.curves.* */
static const char *curve_name(int nid)
{
    switch (nid) {
    case NID_X25519:
        return "X25519";
    case NID_X9_62_prime256v1:
        return "P-256";
    case NID_secp384r1:
        return "P-384";
    case NID_secp521r1:
        return "P-521";
    case NID_X448:
        return "X448";
    default:
        return NULL;
    }
}

/* BoringSSL's signature algorithm names for Envoy's ssl.sigalgs.* */
static const char *sigalg_name(SSL *ssl)
{
    int type = 0, hash = 0;
    if (!SSL_get_peer_signature_type_nid(ssl, &type)) {
        return NULL;
    }
    SSL_get_peer_signature_nid(ssl, &hash);
    int bits = hash == NID_sha256 ? 256 : hash == NID_sha384 ? 384 : hash == NID_sha512 ? 512 : 1;
    switch (type) {
    case EVP_PKEY_RSA_PSS:
        return bits == 256 ? "rsa_pss_rsae_sha256"
               : bits == 384 ? "rsa_pss_rsae_sha384"
               : bits == 512 ? "rsa_pss_rsae_sha512"
                             : NULL;
    case EVP_PKEY_RSA:
        return bits == 256 ? "rsa_pkcs1_sha256"
               : bits == 384 ? "rsa_pkcs1_sha384"
               : bits == 512 ? "rsa_pkcs1_sha512"
               : hash == NID_sha1 ? "rsa_pkcs1_sha1"
                                  : NULL;
    case EVP_PKEY_EC:
        return bits == 256 ? "ecdsa_secp256r1_sha256"
               : bits == 384 ? "ecdsa_secp384r1_sha384"
               : bits == 512 ? "ecdsa_secp521r1_sha512"
               : hash == NID_sha1 ? "ecdsa_sha1"
                                  : NULL;
    case EVP_PKEY_ED25519:
        return "ed25519";
    default:
        return NULL;
    }
}

/* Envoy's logHandshake, then what filters may ask (msm_conn_tls_info). */
static void handshake_done(struct tls_sock *s, struct msm_conn *c)
{
    SSL *ssl = s->ssl;
    struct msm_tls_stats *st = s->ctx->stats;
    s->done = true;
    msm_stat_inc(st->ssl.handshake);
    if (SSL_session_reused(ssl)) {
        msm_stat_inc(st->ssl.session_reused);
    }
    msm_named_inc(&st->versions, SSL_get_version(ssl));
    msm_named_inc(&st->ciphers, SSL_get_cipher_name(ssl));
    int group = SSL_get_negotiated_group(ssl);
    if (group > 0) {
        msm_named_inc(&st->curves, curve_name(group));
    }
    const char *sig = sigalg_name(ssl);
    if (sig || SSL_get_peer_signature_type_nid(ssl, &(int){0})) {
        msm_named_inc(&st->sigalgs, sig);
    }
    struct msm_tls_info *in = &s->info;
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (SSL_session_reused(ssl)) {
        /* No verify callback ran: the session carries the original verdict (X509_V_OK only
         * when the chain was validated against a CA, see verify_cb). */
        s->validated = peer && s->ctx->has_ca && s->ctx->verify_mode != SSL_VERIFY_NONE &&
                       SSL_get_verify_result(ssl) == X509_V_OK;
    }
    if (peer) {
        peer_info(s, peer);
    } else {
        msm_stat_inc(st->ssl.no_certificate);
    }
    X509 *own = SSL_get_certificate(ssl);
    GENERAL_NAMES *own_names = own ? X509_get_ext_d2i(own, NID_subject_alt_name, NULL, NULL)
                                   : NULL;
    for (int i = 0; own_names && i < sk_GENERAL_NAME_num(own_names) && !in->local_uri_san; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(own_names, i);
        if (g->type == GEN_URI) {
            in->local_uri_san = asn1_dup(g->d.uniformResourceIdentifier);
        }
    }
    GENERAL_NAMES_free(own_names);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (sni) {
        in->sni = msm_xstrdup(sni);
    }
    const unsigned char *a = NULL;
    unsigned al = 0;
    SSL_get0_alpn_selected(ssl, &a, &al);
    if (al) {
        in->alpn = msm_xstrndup((const char *)a, al);
    }
    in->version = SSL_get_version(ssl);
    in->cipher = SSL_get_cipher_name(ssl);
    msm_log(MSM_LOG_DEBUG, MSM_LC_CONNECTION, "[C%llu] TLS handshake done: %s %s alpn=%s sni=%s "
            "peer=%s", c->id, in->version, in->cipher, in->alpn ? in->alpn : "-",
            in->sni ? in->sni : "-", in->n_uri_sans ? in->uri_sans[0] : peer ? "(cert)" : "-");
}

/* What the socket's reads returned, for tls_read (SSL_set_fd's BIO serves both directions). */
static long bio_cb(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
                   size_t *processed)
{
    (void)argp;
    (void)argi;
    (void)argl;
    if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
        struct tls_sock *s = (struct tls_sock *)BIO_get_callback_arg(b);
        if (ret > 0) {
            s->rd_short = processed && *processed < len;
        } else {
            s->rd_short = false;
            s->rd_eagain = BIO_should_retry(b);
        }
    }
    return ret;
}

static int tls_handshake(struct msm_transport *t, struct msm_conn *c)
{
    struct tls_sock *s = (struct tls_sock *)t;
    if (!s->ctx) {
        c->close_detail = "TLS context not ready (secrets missing)";
        return -EPROTO;
    }
    if (!s->fd_set) {
        if (!SSL_set_fd(s->ssl, c->fd)) {
            ERR_clear_error();
            c->close_detail = "TLS socket BIO allocation failed";
            return -ENOMEM;
        }
        BIO *b = SSL_get_rbio(s->ssl);
        BIO_set_callback_arg(b, (char *)s);
        BIO_set_callback_ex(b, bio_cb);
        s->fd_set = true;
    }
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        handshake_done(s, c);
        return 0;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        t->want = EV_READ;
        return MSM_EAGAIN;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        t->want = EV_WRITE;
        return MSM_EAGAIN;
    }
    int sys = errno;
    drain_errors(s, c, "handshake");
    if (e == SSL_ERROR_SYSCALL && sys) {
        c->close_detail = strerror(sys);
    } else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && !sys)) {
        c->close_detail = "peer closed during the TLS handshake";
    }
    return -EPROTO;
}

/* ---- data --------------------------------------------------------------------------------- */

/* Records that carry no application data (TLS 1.3 tickets, key updates) processed in one
 * tls_read before it gives the turn back; the connection comes back for the rest. */
#define NON_DATA_RECORDS 32
/* Gather the write buffer's views into one record up to this size (TLS's maximum plaintext). */
#define GATHER_MAX 16384

static ssize_t tls_read(struct msm_transport *t, struct msm_conn *c, size_t max)
{
    struct tls_sock *s = (struct tls_sock *)t;
    size_t avail;
    char *p = msm_buf_reserve(&c->in, max < MSM_BUF_BLOCK ? max : MSM_BUF_BLOCK, &avail);
    if (avail > max) {
        avail = max;
    }
    t->drained = false;
    s->starved = false;
    for (int i = 0;; i++) {
        ERR_clear_error();
        errno = 0;
        s->rd_eagain = false;
        size_t n = 0;
        int r = SSL_read_ex(s->ssl, p, avail, &n);
        if (r == 1) {
            msm_buf_commit(&c->in, n);
            /* Nothing read ahead and the last read() did not fill the buffer: the socket was
             * empty then; bytes that came since make the fd readable. */
            t->drained = s->rd_short && !SSL_has_pending(s->ssl);
            return (ssize_t)n;
        }
        int e = SSL_get_error(s->ssl, r);
        switch (e) {
        case SSL_ERROR_WANT_READ:
            /* Without SSL_MODE_AUTO_RETRY, a record without application data (a ticket, a
             * key update) also ends here: go on while the socket was not found empty. */
            if (!s->rd_eagain && SSL_has_pending(s->ssl) && i < NON_DATA_RECORDS) {
                continue;
            }
            s->starved = s->rd_eagain;
            msm_buf_commit(&c->in, 0);
            return -EAGAIN;
        case SSL_ERROR_WANT_WRITE:
            msm_buf_commit(&c->in, 0);
            t->want |= EV_WRITE;
            return -EAGAIN;
        case SSL_ERROR_ZERO_RETURN:
            msm_buf_commit(&c->in, 0);
            return 0; /* close_notify (or EOF: SSL_OP_IGNORE_UNEXPECTED_EOF) */
        case SSL_ERROR_SYSCALL:
            msm_buf_commit(&c->in, 0);
            if (errno) {
                int sys = errno;
                ERR_clear_error();
                return -sys;
            }
            ERR_clear_error();
            return 0;
        default:
            msm_buf_commit(&c->in, 0);
            drain_errors(s, c, "read");
            return -EPROTO;
        }
    }
}

/* The next bytes of the write buffer for one SSL_write_ex: the first view as it is when it is
 * large or alone, else the views gathered into <tmp> up to one record (one record and one
 * write() instead of one per view; a later view of half a record or more is left for the next
 * call, uncopied). A retry after WANT_WRITE must pass at least the <min> bytes of the failed
 * call, which are still the buffer's first (it was not drained, views only grow at the tail;
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows another address). */
static const void *next_chunk(struct msm_conn *c, char *tmp, size_t min, size_t *len)
{
    struct iovec v[16];
    int n = msm_buf_iov(&c->out, v, 16);
    int k = 0;
    size_t l = 0;
    while (k < n && l < GATHER_MAX && (k == 0 || l < min || v[k].iov_len < GATHER_MAX / 2)) {
        l += v[k++].iov_len;
    }
    if (k <= 1) {
        *len = v[0].iov_len;
        return v[0].iov_base;
    }
    l = 0;
    for (int i = 0; i < k && l < GATHER_MAX; i++) {
        size_t m = v[i].iov_len < GATHER_MAX - l ? v[i].iov_len : GATHER_MAX - l;
        memcpy(tmp + l, v[i].iov_base, m);
        l += m;
    }
    *len = l;
    return tmp;
}

static ssize_t tls_write(struct msm_transport *t, struct msm_conn *c)
{
    struct tls_sock *s = (struct tls_sock *)t;
    static _Thread_local char tmp[GATHER_MAX];
    ssize_t total = 0;
    while (c->out.len) {
        size_t len;
        const void *p = next_chunk(c, tmp, s->wretry, &len);
        ERR_clear_error();
        errno = 0;
        size_t w = 0;
        int r = SSL_write_ex(s->ssl, p, len, &w);
        if (r == 1) {
            s->wretry = 0;
            msm_buf_drain(&c->out, w);
            total += (ssize_t)w;
            continue;
        }
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            s->wretry = len;
            if (e == SSL_ERROR_WANT_READ) {
                t->want |= EV_READ;
            }
            return total ? total : -EAGAIN;
        }
        if (e == SSL_ERROR_SYSCALL && errno) {
            int sys = errno;
            ERR_clear_error();
            return -sys;
        }
        drain_errors(s, c, "write");
        return -EPROTO;
    }
    return total;
}

static int tls_shutdown_write(struct msm_transport *t, struct msm_conn *c)
{
    struct tls_sock *s = (struct tls_sock *)t;
    (void)c;
    if (s->shutdown_sent || !s->done) {
        return 0;
    }
    ERR_clear_error();
    int r = SSL_shutdown(s->ssl);
    if (r < 0 && SSL_get_error(s->ssl, r) == SSL_ERROR_WANT_WRITE) {
        t->want |= EV_WRITE;
        return MSM_EAGAIN;
    }
    ERR_clear_error();
    s->shutdown_sent = true;
    return 0;
}

/* Decrypted bytes, or records read ahead (unless the last read found them incomplete and the
 * socket empty: reading again before the fd is readable would spin). */
static bool tls_has_pending(const struct msm_transport *t)
{
    const struct tls_sock *s = (const struct tls_sock *)t;
    return s->ssl && s->done &&
           (SSL_pending(s->ssl) > 0 || (!s->starved && SSL_has_pending(s->ssl)));
}

static void tls_close(struct msm_transport *t, struct msm_conn *c, bool abortive)
{
    struct tls_sock *s = (struct tls_sock *)t;
    (void)c;
    if (!abortive && s->done && !s->shutdown_sent) {
        ERR_clear_error();
        SSL_shutdown(s->ssl); /* best effort: the fd closes right after */
        ERR_clear_error();
        s->shutdown_sent = true;
    }
}

static const struct msm_tls_info *tls_info(const struct msm_transport *t)
{
    const struct tls_sock *s = (const struct tls_sock *)t;
    return s->done ? &s->info : NULL;
}

static void tls_free(struct msm_transport *t)
{
    struct tls_sock *s = (struct tls_sock *)t;
    struct msm_tls_info *in = &s->info;
    for (int i = 0; i < in->n_uri_sans; i++) {
        free(in->uri_sans[i]);
    }
    for (int i = 0; i < in->n_dns_sans; i++) {
        free(in->dns_sans[i]);
    }
    free(in->uri_sans);
    free(in->dns_sans);
    free(in->peer_subject);
    free(in->local_uri_san);
    free(in->sni);
    free(in->alpn);
    free(s->sni);
    free(s->verify_host);
    free(s->sess_key);
    free(s->peer_sha256);
    free(s->peer_pem);
    free(s->peer_chain_pem);
    for (int i = 0; i < s->n_local_uris; i++) {
        free(s->local_uris[i]);
    }
    free(s->local_uris);
    SSL_free(s->ssl);
    msm_tls_ctx_unref(s->ctx);
    free(s);
}

/* ---- x-forwarded-client-cert material -------------------------------------------------------- */

static struct tls_sock *sock_of(const struct msm_tls_info *in)
{
    return (struct tls_sock *)((char *)(uintptr_t)in - offsetof(struct tls_sock, info));
}

const char *msm_tls_peer_cert_sha256(const struct msm_tls_info *in)
{
    struct tls_sock *s = sock_of(in);
    X509 *peer = SSL_get0_peer_certificate(s->ssl);
    if (!s->peer_sha256 && peer) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        if (X509_digest(peer, EVP_sha256(), md, &n) == 1) {
            static const char hex[] = "0123456789abcdef";
            s->peer_sha256 = msm_xmalloc(2 * (size_t)n + 1);
            for (unsigned int i = 0; i < n; i++) {
                s->peer_sha256[2 * i] = hex[md[i] >> 4];
                s->peer_sha256[2 * i + 1] = hex[md[i] & 15];
            }
            s->peer_sha256[2 * n] = '\0';
        }
    }
    return s->peer_sha256;
}

/* Append <x>'s PEM to <b>, URL-encoded as Envoy does: '\n' ' ' '+' '/' '=' only. */
static void pem_urlencoded(BIO *tmp, X509 *x, struct msm_buf *b)
{
    (void)BIO_reset(tmp);
    if (PEM_write_bio_X509(tmp, x) != 1) {
        return;
    }
    char *p = NULL;
    long l = BIO_get_mem_data(tmp, &p);
    for (long i = 0; p && i < l; i++) {
        switch (p[i]) {
        case '\n': msm_buf_append(b, "%0A", 3); break;
        case ' ': msm_buf_append(b, "%20", 3); break;
        case '+': msm_buf_append(b, "%2B", 3); break;
        case '/': msm_buf_append(b, "%2F", 3); break;
        case '=': msm_buf_append(b, "%3D", 3); break;
        default: msm_buf_append(b, &p[i], 1); break;
        }
    }
}

const char *msm_tls_peer_cert_pem(const struct msm_tls_info *in, bool chain)
{
    struct tls_sock *s = sock_of(in);
    char **cache = chain ? &s->peer_chain_pem : &s->peer_pem;
    X509 *peer = SSL_get0_peer_certificate(s->ssl);
    if (*cache || !peer) {
        return *cache;
    }
    BIO *tmp = BIO_new(BIO_s_mem());
    struct msm_buf b;
    msm_buf_init(&b);
    pem_urlencoded(tmp, peer, &b);
    /* BoringSSL's full chain is the leaf and what followed it; OpenSSL's peer chain leaves the
     * leaf out on a server and has it first on a client. */
    STACK_OF(X509) *sk = chain ? SSL_get_peer_cert_chain(s->ssl) : NULL;
    for (int i = 0; sk && i < sk_X509_num(sk); i++) {
        X509 *x = sk_X509_value(sk, i);
        if (i == 0 && !X509_cmp(x, peer)) {
            continue;
        }
        pem_urlencoded(tmp, x, &b);
    }
    BIO_free(tmp);
    *cache = msm_xmalloc(b.len + 1);
    msm_buf_copyout(&b, 0, *cache, b.len);
    (*cache)[b.len] = '\0';
    msm_buf_deinit(&b);
    return *cache;
}

int msm_tls_local_uri_sans(const struct msm_tls_info *in, const char *const **out)
{
    struct tls_sock *s = sock_of(in);
    if (!s->local_uris_done) {
        s->local_uris_done = true;
        X509 *own = SSL_get_certificate(s->ssl);
        GENERAL_NAMES *names = own ? X509_get_ext_d2i(own, NID_subject_alt_name, NULL, NULL)
                                   : NULL;
        for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
            if (g->type == GEN_URI) {
                push(&s->local_uris, &s->n_local_uris,
                     asn1_dup(g->d.uniformResourceIdentifier));
            }
        }
        GENERAL_NAMES_free(names);
    }
    *out = (const char *const *)s->local_uris;
    return s->n_local_uris;
}

static const struct msm_transport_ops tls_ops = {
    .name = "tls",
    .handshake = tls_handshake,
    .read = tls_read,
    .write = tls_write,
    .shutdown_write = tls_shutdown_write,
    .has_pending = tls_has_pending,
    .close = tls_close,
    .info = tls_info,
    .free = tls_free,
};

static struct msm_transport *tls_new(struct msm_tls_factory *f, const char *sni,
                                     const char *verify_host)
{
    pthread_once(&sock_once, sock_init);
    struct tls_sock *s = MSM_NEW(struct tls_sock);
    s->base.ops = &tls_ops;
    if (sni || verify_host) {
        s->sni = sni ? msm_xstrdup(sni) : NULL;
        s->verify_host = verify_host ? msm_xstrdup(verify_host) : NULL;
        s->sess_key = msm_xstrdup(sni ? sni : verify_host);
    }
    pthread_mutex_lock(&f->mu);
    if (f->cur) {
        s->ctx = f->cur;
        atomic_fetch_add(&s->ctx->refs, 1);
    }
    pthread_mutex_unlock(&f->mu);
    if (!s->ctx) {
        msm_stat_inc(f->p.server ? f->stats->fac.downstream_context_secrets_not_ready
                                 : f->stats->fac.upstream_context_secrets_not_ready);
        return &s->base;
    }
    s->ssl = SSL_new(s->ctx->ssl);
    if (!s->ssl) {
        /* Out of memory inside OpenSSL: fail this connection's handshake. */
        ERR_clear_error();
        msm_tls_ctx_unref(s->ctx);
        s->ctx = NULL;
        return &s->base;
    }
    SSL_set_ex_data(s->ssl, sock_idx, s);
    SSL_set_read_ahead(s->ssl, 1);
    if (f->p.server) {
        SSL_set_accept_state(s->ssl);
    } else {
        SSL_set_connect_state(s->ssl);
        const char *name = s->sni ? s->sni : s->ctx->sni;
        if (name) {
            SSL_set_tlsext_host_name(s->ssl, name);
        }
        msm_tls_ctx_offer_session(s->ctx, s->ssl, s->sess_key ? s->sess_key : s->ctx->sni);
    }
    return &s->base;
}

struct msm_transport *msm_tls_transport_new(struct msm_tls_factory *f)
{
    return tls_new(f, NULL, NULL);
}

struct msm_transport *msm_tls_transport_new_host(struct msm_tls_factory *f, const uint8_t *alpn,
                                                 size_t len, const char *sni,
                                                 const char *verify_host)
{
    struct msm_transport *t = tls_new(f, f->p.server ? NULL : sni, f->p.server ? NULL : verify_host);
    struct tls_sock *s = (struct tls_sock *)t;
    if (len && s->ssl && !f->p.server && SSL_set_alpn_protos(s->ssl, alpn, (unsigned)len) != 0) {
        ERR_clear_error(); /* keeps the context's list */
    }
    return t;
}

struct msm_transport *msm_tls_transport_new_alpn(struct msm_tls_factory *f, const uint8_t *alpn,
                                                 size_t len)
{
    return msm_tls_transport_new_host(f, alpn, len, NULL, NULL);
}

bool msm_tls_factory_has_alpn(const struct msm_tls_factory *f)
{
    return f->p.alpn_len > 0;
}

/* ---- the factory -------------------------------------------------------------------------- */

pthread_mutex_t msm_tls_lock = PTHREAD_MUTEX_INITIALIZER;
struct msm_tls_factory *msm_tls_factories;

static void list_factory(struct msm_tls_factory *f, bool on)
{
    pthread_mutex_lock(&msm_tls_lock);
    if (on) {
        f->all_next = msm_tls_factories;
        if (msm_tls_factories) {
            msm_tls_factories->all_prev = f;
        }
        msm_tls_factories = f;
    } else {
        if (f->all_prev) {
            f->all_prev->all_next = f->all_next;
        } else if (msm_tls_factories == f) {
            msm_tls_factories = f->all_next;
        }
        if (f->all_next) {
            f->all_next->all_prev = f->all_prev;
        }
        f->all_next = f->all_prev = NULL;
    }
    pthread_mutex_unlock(&msm_tls_lock);
}

static void install(struct msm_tls_factory *f, struct msm_tls_ctx *t)
{
    pthread_mutex_lock(&f->mu);
    struct msm_tls_ctx *old = f->cur;
    f->cur = t;
    pthread_mutex_unlock(&f->mu);
    msm_tls_ctx_unref(old);
}

int msm_tls_factory_rebuild(struct msm_tls_factory *f, struct msm_err *err)
{
    const struct msm_tls_params *p = &f->p;
    const struct msm_tls_cert *cert = p->n_certs ? &p->certs[0] : NULL;
    if (p->cert_provider) {
        const struct msm_secret *s = p->cert_provider->cur;
        if (!s) {
            return 0;
        }
        if (s->type != MSM_SECRET_TLS_CERTIFICATE) {
            return msm_err_set(err, "secret '%s' is not a tls_certificate",
                               p->cert_provider->name);
        }
        cert = &s->cert;
    }
    struct msm_tls_validation merged;
    const struct msm_tls_validation *val = p->has_validation ? &p->val : NULL;
    if (p->val_provider) {
        const struct msm_secret *s = p->val_provider->cur;
        if (!s) {
            return 0;
        }
        if (s->type != MSM_SECRET_VALIDATION_CONTEXT) {
            return msm_err_set(err, "secret '%s' is not a validation_context",
                               p->val_provider->name);
        }
        msm_tls_validation_copy(&merged, &p->val);
        msm_tls_validation_merge(&merged, &s->val);
        val = &merged;
    }
    struct msm_tls_ctx *t = msm_tls_ctx_new(p, cert, val, f->stats, err);
    if (val == &merged) {
        msm_tls_validation_deinit(&merged);
    }
    if (!t) {
        return MSM_EINVAL;
    }
    install(f, t);
    return 1;
}

static const char *type_name(const char *url)
{
    const char *slash = strrchr(url, '/');
    return slash ? slash + 1 : url;
}

#define T_DOWN "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define T_UP "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define T_RAW "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"

/* The TLS context proto of <ts>, or NULL for raw_buffer (*raw set). */
static ProtobufCMessage *unpack(const Envoy__Config__Core__V3__TransportSocket *ts, bool server,
                                bool *raw, struct msm_err *err)
{
    const char *name = ts->name ? ts->name : "";
    *raw = false;
    if (ts->config_type_case !=
            ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG ||
        !ts->typed_config) {
        if (!name[0] || !strcmp(name, "envoy.transport_sockets.raw_buffer") ||
            !strcmp(name, "raw_buffer")) {
            *raw = true;
            return NULL;
        }
        msm_err_set(err, "transport_socket '%s': typed_config is required", name);
        return NULL;
    }
    const char *t = type_name(ts->typed_config->type_url);
    if (!strcmp(t, T_RAW)) {
        *raw = true;
        return NULL;
    }
    const char *want = server ? T_DOWN : T_UP;
    if (strcmp(t, want) != 0) {
        msm_err_set(err, "transport_socket '%s': %s is not supported here (expected %s)", name,
                    t, want);
        return NULL;
    }
    ProtobufCMessage *m = msm_pb_any_unpack(ts->typed_config, msm_types_find(want), NULL, err);
    if (!m) {
        msm_err_prefix(err, "transport_socket '%s'", name);
    }
    return m;
}

static void watch(struct msm_tls_factory *f, bool on)
{
    struct msm_secret_provider *v[2] = {f->p.cert_provider, f->p.val_provider};
    for (int i = 0; i < 2; i++) {
        if (v[i] && (i == 0 || v[i] != v[0])) {
            if (on) {
                f->watch[i] = msm_secret_watch_add(v[i], f);
            } else if (f->watch[i]) {
                msm_secret_watch_remove(v[i], f->watch[i]);
                f->watch[i] = NULL;
            }
        }
    }
}

int msm_tls_factory_from_proto(const void *tsp, bool server, const char *scope,
                               const char *owner, struct msm_tls_factory **out,
                               struct msm_err *err)
{
    const Envoy__Config__Core__V3__TransportSocket *ts = tsp;
    *out = NULL;
    if (!ts) {
        return 0;
    }
    bool raw;
    ProtobufCMessage *m = unpack(ts, server, &raw, err);
    if (!m) {
        return raw ? 0 : MSM_EINVAL;
    }
    struct msm_tls_factory *f = MSM_NEW(struct msm_tls_factory);
    atomic_init(&f->refs, 1);
    pthread_mutex_init(&f->mu, NULL);
    f->owner = msm_xstrdup(owner);
    int rc = msm_tls_params_from_proto(m, server, &f->p, err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc < 0) {
        msm_err_prefix(err, "transport_socket '%s'", ts->name);
        pthread_mutex_destroy(&f->mu);
        free(f->owner);
        free(f);
        return MSM_EINVAL;
    }
    f->stats = msm_tls_stats_new(scope, server, &f->p);
    if (msm_tls_factory_rebuild(f, err) < 0) {
        msm_err_prefix(err, "transport_socket '%s'", ts->name);
        msm_tls_factory_unref(f);
        return MSM_EINVAL;
    }
    watch(f, true);
    list_factory(f, true);
    *out = f;
    return 0;
}

struct msm_tls_factory *msm_tls_factory_ref(struct msm_tls_factory *f)
{
    atomic_fetch_add(&f->refs, 1);
    return f;
}

void msm_tls_factory_unref(struct msm_tls_factory *f)
{
    if (!f || atomic_fetch_sub(&f->refs, 1) != 1) {
        return;
    }
    watch(f, false);
    list_factory(f, false);
    msm_tls_ctx_unref(f->cur);
    msm_tls_params_deinit(&f->p);
    msm_tls_stats_unref(f->stats);
    pthread_mutex_destroy(&f->mu);
    free(f->owner);
    free(f);
}

bool msm_tls_factory_ready(struct msm_tls_factory *f)
{
    pthread_mutex_lock(&f->mu);
    bool r = f->cur != NULL;
    pthread_mutex_unlock(&f->mu);
    return r;
}

bool msm_tls_factory_warm(struct msm_tls_factory *f)
{
    if (msm_tls_factory_ready(f)) {
        return true;
    }
    const struct msm_secret_provider *v[2] = {f->p.cert_provider, f->p.val_provider};
    for (int i = 0; i < 2; i++) {
        if (v[i] && !v[i]->cur && !v[i]->timed_out) {
            return false;
        }
    }
    /* Every missing secret timed out (or a present one failed to build: nothing to wait for). */
    return true;
}

void msm_tls_factory_describe(struct msm_tls_factory *f, char *out, size_t n)
{
    snprintf(out, n, "%s TLS context of %s%s%s%s%s", f->p.server ? "server" : "client", f->owner,
             f->p.cert_provider ? ", certificate secret '" : "",
             f->p.cert_provider ? f->p.cert_provider->name : "",
             f->p.val_provider ? "', validation secret '" : f->p.cert_provider ? "'" : "",
             f->p.val_provider ? f->p.val_provider->name : "");
    if (f->p.val_provider) {
        size_t l = strlen(out);
        snprintf(out + l, n - l, "'");
    }
}
