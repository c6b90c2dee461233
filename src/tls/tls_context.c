/* Building SSL_CTXs (Envoy's ContextImpl / DefaultCertValidator on OpenSSL 3) and the
 * per-context stats. Main thread, except the verify callback (workers, during handshakes). */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "tls/tls_private.h"
#include "xds/strmap.h"

#include <xxhash.h>

/* Memos for what every cluster of an Istio sidecar repeats with the same inputs (thousands of
 * times in one CDS response): the check of a TLS parameter set and the cipher names of the
 * ssl.ciphers.* stats. Each builds throwaway SSL_CTXs; the last inputs and result are kept. */
static pthread_mutex_t memo_mu = PTHREAD_MUTEX_INITIALIZER;
static char *params_ok_key;  /* the last parameter set that passed msm_tls_check_params */
static char *ciphers_key;    /* versions + cipher list of <ciphers_names> */
static char **ciphers_names; /* NULL-terminated */

static char *params_key(const struct msm_tls_params *p)
{
    size_t n = strlen(p->cipher_list) + strlen(p->curves) + (p->sigalgs ? strlen(p->sigalgs) : 0) +
               64;
    char *k = msm_xmalloc(n);
    snprintf(k, n, "%d|%d|%s|%s|%d%s", p->min_version, p->max_version, p->cipher_list, p->curves,
             p->sigalgs != NULL, p->sigalgs ? p->sigalgs : "");
    return k;
}

/* ---- stats -------------------------------------------------------------------------------- */

static const char *const version_names[] = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"};
/* Curves and signature algorithms by their BoringSSL (Envoy) names. */
static const char *const curve_names[] = {"X25519", "P-256", "P-384", "P-521", "X448"};
static const char *const sigalg_names[] = {
    "rsa_pkcs1_sha1",         "rsa_pkcs1_sha256",       "rsa_pkcs1_sha384",
    "rsa_pkcs1_sha512",       "ecdsa_sha1",             "ecdsa_secp256r1_sha256",
    "ecdsa_secp384r1_sha384", "ecdsa_secp521r1_sha512", "rsa_pss_rsae_sha256",
    "rsa_pss_rsae_sha384",    "rsa_pss_rsae_sha512",    "ed25519",
};

/* Stats whose every member is a sink of the store (every cluster's, with Istio's
 * stats_matcher) behave the same whoever holds them: one such block is shared (weak: cleared
 * by its last unref, under memo_mu). */
static _Atomic(struct msm_tls_stats *) sink_stats;

static bool all_sinks(const struct msm_tls_stats *s)
{
    struct msm_stat *const *v = (struct msm_stat *const *)&s->ssl;
    for (size_t i = 0; i < sizeof(s->ssl) / sizeof(*v); i++) {
        if (!v[i]->sink) {
            return false;
        }
    }
    v = (struct msm_stat *const *)&s->fac;
    for (size_t i = 0; i < sizeof(s->fac) / sizeof(*v); i++) {
        if (!v[i]->sink) {
            return false;
        }
    }
    const struct msm_named_stats *ns[] = {&s->versions, &s->ciphers, &s->curves, &s->sigalgs};
    for (size_t i = 0; i < MSM_ARRAY_SIZE(ns); i++) {
        if (ns[i]->n || (ns[i]->fallback && !ns[i]->fallback->sink)) {
            return false;
        }
    }
    return true;
}

static void stats_free(struct msm_tls_stats *s);

/* <s>, or the shared all-sink block of the same store in its place. */
static struct msm_tls_stats *share_sinks(struct msm_tls_stats *s)
{
    if (!all_sinks(s)) {
        return s;
    }
    pthread_mutex_lock(&memo_mu);
    struct msm_tls_stats *sh = atomic_load(&sink_stats);
    if (sh && sh->ssl.handshake == s->ssl.handshake) { /* the same store's sink */
        atomic_fetch_add(&sh->refs, 1);
        pthread_mutex_unlock(&memo_mu);
        stats_free(s);
        return sh;
    }
    atomic_store(&sink_stats, s);
    pthread_mutex_unlock(&memo_mu);
    return s;
}

void msm_tls_stats_unref(struct msm_tls_stats *s)
{
    if (!s) {
        return;
    }
    if (s == atomic_load(&sink_stats)) {
        /* share_sinks may take it meanwhile: decide under the lock. (A block never becomes
         * the shared one after it was handed out.) */
        pthread_mutex_lock(&memo_mu);
        bool last = atomic_fetch_sub(&s->refs, 1) == 1;
        if (last && atomic_load(&sink_stats) == s) {
            atomic_store(&sink_stats, NULL);
        }
        pthread_mutex_unlock(&memo_mu);
        if (last) {
            stats_free(s);
        }
        return;
    }
    if (atomic_fetch_sub(&s->refs, 1) == 1) {
        stats_free(s);
    }
}

static void named_add(struct msm_named_stats *ns, const char *prefix, const char *name)
{
    for (int i = 0; i < ns->n; i++) {
        if (!strcmp(ns->v[i].name, name)) {
            return;
        }
    }
    struct msm_stat *s = msm_stats_get_join(msm_stats, MSM_STAT_COUNTER, prefix, name);
    if (s->sink && ns->fallback && ns->fallback->sink) {
        /* Rejected by the stats_matcher, as its fallback: counting either is a no-op, so the
         * name is not kept (some 30 per context, times 10k clusters). */
        return;
    }
    ns->v = msm_xrealloc(ns->v, (size_t)(ns->n + 1) * sizeof(*ns->v));
    ns->v[ns->n].name = msm_xstrdup(name);
    ns->v[ns->n].s = s;
    ns->n++;
}

static void named_deinit(struct msm_named_stats *ns)
{
    for (int i = 0; i < ns->n; i++) {
        free(ns->v[i].name);
        msm_stat_unref(ns->v[i].s);
    }
    free(ns->v);
    msm_stat_unref(ns->fallback);
}

void msm_named_inc(const struct msm_named_stats *ns, const char *value)
{
    for (int i = 0; value && i < ns->n; i++) {
        if (!strcmp(ns->v[i].name, value)) {
            msm_stat_inc(ns->v[i].s);
            return;
        }
    }
    msm_stat_inc(ns->fallback);
}

/* The ciphers a context built from <p> can negotiate (TLS 1.3 suites included), as a new
 * NULL-terminated array. */
static char **negotiable_ciphers(const struct msm_tls_params *p)
{
    size_t n = 0;
    char **out = msm_xcalloc(1, sizeof(*out));
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx) {
        return out;
    }
    SSL_CTX_set_min_proto_version(ctx, p->min_version);
    SSL_CTX_set_max_proto_version(ctx, p->max_version);
    if (SSL_CTX_set_cipher_list(ctx, p->cipher_list) == 1) {
        STACK_OF(SSL_CIPHER) *v = SSL_CTX_get_ciphers(ctx);
        out = msm_xrealloc(out, ((size_t)sk_SSL_CIPHER_num(v) + 1) * sizeof(*out));
        for (int i = 0; i < sk_SSL_CIPHER_num(v); i++) {
            const char *name = SSL_CIPHER_get_name(sk_SSL_CIPHER_value(v, i));
            bool v13 = !strncmp(name, "TLS_", 4);
            if ((v13 && p->max_version < TLS1_3_VERSION) ||
                (!v13 && p->min_version > TLS1_2_VERSION)) {
                continue;
            }
            out[n++] = msm_xstrdup(name);
        }
    }
    out[n] = NULL;
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return out;
}

static void cipher_stats(struct msm_named_stats *ns, const char *prefix,
                         const struct msm_tls_params *p)
{
    size_t kl = strlen(p->cipher_list) + 32;
    char *key = msm_xmalloc(kl);
    snprintf(key, kl, "%d|%d|%s", p->min_version, p->max_version, p->cipher_list);
    pthread_mutex_lock(&memo_mu);
    if (!ciphers_key || strcmp(ciphers_key, key) != 0) {
        for (size_t i = 0; ciphers_names && ciphers_names[i]; i++) {
            free(ciphers_names[i]);
        }
        free(ciphers_names);
        free(ciphers_key);
        ciphers_names = negotiable_ciphers(p);
        ciphers_key = key;
        key = NULL;
    }
    for (size_t i = 0; ciphers_names[i]; i++) {
        named_add(ns, prefix, ciphers_names[i]);
    }
    pthread_mutex_unlock(&memo_mu);
    free(key);
}

struct msm_tls_stats *msm_tls_stats_new(const char *scope, bool server,
                                        const struct msm_tls_params *p)
{
    struct msm_tls_stats *s = MSM_NEW(struct msm_tls_stats);
    atomic_init(&s->refs, 1);
    char pre[512];
    snprintf(pre, sizeof(pre), "%sssl.", scope);
    msm_ssl_stats_init(msm_stats, pre, &s->ssl);
    snprintf(pre, sizeof(pre), "%s%s_ssl_socket_factory.", scope, server ? "server" : "client");
    msm_ssl_factory_stats_init(msm_stats, pre, &s->fac);
    /* Each fallback first: named_add compares with it. */
    snprintf(pre, sizeof(pre), "%sssl.versions.", scope);
    s->versions.fallback = msm_stats_get_join(msm_stats, MSM_STAT_COUNTER, pre,
                                              "unknown_ssl_version");
    for (int v = p->min_version; v <= p->max_version; v++) {
        if (v >= TLS1_VERSION && v <= TLS1_3_VERSION) {
            named_add(&s->versions, pre, version_names[v - TLS1_VERSION]);
        }
    }
    snprintf(pre, sizeof(pre), "%sssl.ciphers.", scope);
    s->ciphers.fallback = msm_stats_get_join(msm_stats, MSM_STAT_COUNTER, pre,
                                             "unknown_ssl_cipher");
    cipher_stats(&s->ciphers, pre, p);
    snprintf(pre, sizeof(pre), "%sssl.curves.", scope);
    s->curves.fallback = msm_stats_get_join(msm_stats, MSM_STAT_COUNTER, pre,
                                            "unknown_ssl_curve");
    for (size_t i = 0; i < MSM_ARRAY_SIZE(curve_names); i++) {
        if (strstr(p->curves, curve_names[i])) {
            named_add(&s->curves, pre, curve_names[i]);
        }
    }
    snprintf(pre, sizeof(pre), "%sssl.sigalgs.", scope);
    s->sigalgs.fallback = msm_stats_get_join(msm_stats, MSM_STAT_COUNTER, pre,
                                             "unknown_ssl_algorithm");
    for (size_t i = 0; i < MSM_ARRAY_SIZE(sigalg_names); i++) {
        named_add(&s->sigalgs, pre, sigalg_names[i]);
    }
    return share_sinks(s);
}

static void stats_free(struct msm_tls_stats *s)
{
    msm_ssl_stats_deinit(&s->ssl);
    msm_ssl_factory_stats_deinit(&s->fac);
    named_deinit(&s->versions);
    named_deinit(&s->ciphers);
    named_deinit(&s->curves);
    named_deinit(&s->sigalgs);
    free(s);
}

/* ---- checks ------------------------------------------------------------------------------- */

/* The first OpenSSL error as text (drains the queue). */
static const char *ssl_err(char *buf, size_t n)
{
    unsigned long e = ERR_get_error();
    if (!e) {
        snprintf(buf, n, "unknown error");
    } else {
        ERR_error_string_n(e, buf, n);
    }
    ERR_clear_error();
    return buf;
}

static int check_params(const struct msm_tls_params *p, struct msm_err *err);

int msm_tls_check_params(const struct msm_tls_params *p, struct msm_err *err)
{
    char *key = params_key(p);
    pthread_mutex_lock(&memo_mu);
    bool known = params_ok_key && !strcmp(params_ok_key, key);
    pthread_mutex_unlock(&memo_mu);
    if (known) {
        free(key);
        return 0;
    }
    int rc = check_params(p, err);
    if (rc == 0) {
        pthread_mutex_lock(&memo_mu);
        free(params_ok_key);
        params_ok_key = key;
        key = NULL;
        pthread_mutex_unlock(&memo_mu);
    }
    free(key);
    return rc;
}

static int check_params(const struct msm_tls_params *p, struct msm_err *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx) {
        return msm_err_set(err, "cannot create an SSL_CTX");
    }
    int rc = 0;
    /* Each entry on its own, as Envoy does, so the error names the bad ones. */
    char *list = msm_xstrdup(p->cipher_list), *save = NULL, bad[256] = "";
    for (char *t = strtok_r(list, ":", &save); t; t = strtok_r(NULL, ":", &save)) {
        const char *name = (*t == '-' || *t == '!' || *t == '+') ? t + 1 : t;
        if (!*name || SSL_CTX_set_cipher_list(ctx, name) != 1) {
            size_t l = strlen(bad);
            snprintf(bad + l, sizeof(bad) - l, "%s%s", l ? ", " : "", name);
        }
    }
    free(list);
    if (bad[0]) {
        rc = msm_err_set(err, "tls_params: Failed to initialize cipher suites %s. The following "
                              "ciphers were rejected when tried individually: %s",
                         p->cipher_list, bad);
    } else if (SSL_CTX_set_cipher_list(ctx, p->cipher_list) != 1) {
        rc = msm_err_set(err, "tls_params: Failed to initialize cipher suites %s",
                         p->cipher_list);
    } else if (SSL_CTX_set1_groups_list(ctx, p->curves) != 1) {
        rc = msm_err_set(err, "tls_params: Failed to initialize ECDH curves %s", p->curves);
    } else if (p->sigalgs && SSL_CTX_set1_sigalgs_list(ctx, p->sigalgs) != 1) {
        rc = msm_err_set(err, "tls_params: Failed to initialize TLS signature algorithms %s",
                         p->sigalgs);
    }
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

static int pem_password(char *buf, int size, int rwflag, void *u)
{
    (void)rwflag;
    const char *pw = u;
    if (!pw) {
        return 0;
    }
    int l = (int)strlen(pw);
    if (l > size) {
        l = size;
    }
    memcpy(buf, pw, (size_t)l);
    return l;
}

/* Certificates of a PEM chain: leaf first. NULL with <err> when none parses. */
static STACK_OF(X509) *read_chain(const char *pem, struct msm_err *err)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    STACK_OF(X509) *v = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        sk_X509_push(v, x);
    }
    BIO_free(b);
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
    }
    if (sk_X509_num(v) == 0 || ERR_peek_error()) {
        char buf[256];
        msm_err_set(err, "Failed to load certificate chain: %s",
                    sk_X509_num(v) ? ssl_err(buf, sizeof(buf)) : "no certificate");
        ERR_clear_error();
        sk_X509_pop_free(v, X509_free);
        return NULL;
    }
    return v;
}

static EVP_PKEY *read_key(const struct msm_tls_cert *c, struct msm_err *err)
{
    BIO *b = BIO_new_mem_buf(c->key, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, pem_password, c->password);
    BIO_free(b);
    if (!k) {
        char buf[256];
        msm_err_set(err, "Failed to load private key, Cause: %s", ssl_err(buf, sizeof(buf)));
    }
    return k;
}

/* Envoy accepts RSA keys of 2048 bits or more and P-256 ECDSA. */
static int check_key_type(X509 *leaf, struct msm_err *err)
{
    EVP_PKEY *pub = X509_get0_pubkey(leaf);
    if (!pub) {
        return msm_err_set(err, "certificate has no public key");
    }
    switch (EVP_PKEY_get_base_id(pub)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(pub) < 2048) {
            return msm_err_set(err, "Failed to load certificate chain, only RSA certificates "
                                    "with 2048-bit or larger keys are supported");
        }
        return 0;
    case EVP_PKEY_EC: {
        char group[64] = "";
        size_t gl = 0;
        if (!EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof(group), &gl) ||
            strcmp(group, "prime256v1") != 0) {
            return msm_err_set(err, "Failed to load certificate chain, only P-256 ECDSA "
                                    "certificates are supported");
        }
        return 0;
    }
    default:
        return 0;
    }
}

int msm_tls_check_cert(const struct msm_tls_cert *c, struct msm_err *err)
{
    STACK_OF(X509) *chain = read_chain(c->chain, err);
    if (!chain) {
        return MSM_EINVAL;
    }
    int rc = check_key_type(sk_X509_value(chain, 0), err);
    EVP_PKEY *k = rc < 0 ? NULL : read_key(c, err);
    if (rc == 0 && !k) {
        rc = MSM_EINVAL;
    }
    if (k && X509_check_private_key(sk_X509_value(chain, 0), k) != 1) {
        rc = msm_err_set(err, "private key does not match the certificate");
    }
    EVP_PKEY_free(k);
    sk_X509_pop_free(chain, X509_free);
    ERR_clear_error();
    return rc;
}

int msm_tls_check_ca(const char *pem, const char *what, struct msm_err *err)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    STACK_OF(X509_INFO) *v = PEM_X509_INFO_read_bio(b, NULL, NULL, NULL);
    BIO_free(b);
    int certs = 0;
    for (int i = 0; v && i < sk_X509_INFO_num(v); i++) {
        certs += sk_X509_INFO_value(v, i)->x509 != NULL;
    }
    sk_X509_INFO_pop_free(v, X509_INFO_free);
    ERR_clear_error();
    if (!certs) {
        return msm_err_set(err, "%s: Failed to load trusted CA certificates", what);
    }
    return 0;
}

/* ---- verification ------------------------------------------------------------------------- */

static bool digest_in(const uint8_t (*v)[32], int n, const uint8_t d[32])
{
    for (int i = 0; i < n; i++) {
        if (!memcmp(v[i], d, 32)) {
            return true;
        }
    }
    return false;
}

/* verify_certificate_hash / verify_certificate_spki: either list may accept the leaf. */
static bool hash_ok(const struct msm_tls_validation *v, X509 *leaf)
{
    uint8_t d[32];
    unsigned dl = 0;
    if (v->n_hashes && X509_digest(leaf, EVP_sha256(), d, &dl) == 1 &&
        digest_in((const uint8_t (*)[32])v->hashes, v->n_hashes, d)) {
        return true;
    }
    if (v->n_spkis) {
        unsigned char *der = NULL;
        int l = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf), &der);
        if (l > 0) {
            EVP_Digest(der, (size_t)l, d, &dl, EVP_sha256(), NULL);
            OPENSSL_free(der);
            return digest_in((const uint8_t (*)[32])v->spkis, v->n_spkis, d);
        }
    }
    return false;
}

/* Replaces X509_verify_cert for contexts that verify peers: chain against the trusted CA,
 * then SANs and digests, with Envoy's counters and its success rule (with a CA: nothing
 * failed; without: something was positively checked). */
static int verify_cb(X509_STORE_CTX *x, void *arg)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    /* A shared SSL_CTX has no callback argument: the context is the connection's. */
    struct msm_tls_ctx *t = arg ? arg : msm_tls_ssl_ctx(ssl);
    if (!t) {
        X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    X509 *leaf = X509_STORE_CTX_get0_cert(x);
    if (t->verify_mode == SSL_VERIFY_NONE) {
        msm_tls_note_verified(ssl);
        return 1; /* a client without validation context accepts any server */
    }
    if (!leaf) {
        msm_stat_inc(t->stats->ssl.fail_verify_error);
        return 0;
    }
    bool trusted = false;
    if (t->has_ca) {
        if (X509_verify_cert(x) != 1) {
            msm_stat_inc(t->stats->ssl.fail_verify_error);
            msm_log(MSM_LOG_DEBUG, MSM_LC_CONNECTION, "verify cert failed: %s",
                    X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)));
            if (!t->val.accept_untrusted) {
                return 0;
            }
        } else {
            trusted = true;
        }
    }
    const struct msm_tls_validation *v = &t->val;
    bool checked = false;
    /* auto_san_validation: the request's host replaces the configured SAN matchers (Envoy's
     * verify_subject_alt_name_list override): a DNS SAN matching it (wildcards), or an exact
     * URI / IP SAN. */
    const char *host = msm_tls_ssl_verify_host(ssl);
    struct msm_san_matcher hm = {.type = MSM_SAN_ANY,
                                 .m = {.kind = MSM_STR_EXACT, .s = (char *)host,
                                       .len = host ? strlen(host) : 0}};
    const struct msm_san_matcher *sans = host ? &hm : v->sans;
    int n_sans = host ? 1 : v->n_sans;
    if (n_sans) {
        if (!msm_tls_san_match(sans, n_sans, leaf)) {
            msm_stat_inc(t->stats->ssl.fail_verify_san);
            msm_log(MSM_LOG_DEBUG, MSM_LC_CONNECTION, "verify cert failed: SAN matcher");
            X509_STORE_CTX_set_error(x, X509_V_ERR_SUBJECT_ISSUER_MISMATCH);
            return v->accept_untrusted ? 1 : 0;
        }
        checked = true;
    }
    if (v->n_hashes || v->n_spkis) {
        if (!hash_ok(v, leaf)) {
            msm_stat_inc(t->stats->ssl.fail_verify_cert_hash);
            msm_log(MSM_LOG_DEBUG, MSM_LC_CONNECTION, "verify cert failed: cert hash and spki");
            X509_STORE_CTX_set_error(x, X509_V_ERR_CERT_REJECTED);
            return v->accept_untrusted ? 1 : 0;
        }
        checked = true;
    }
    if (!t->has_ca && !checked && !v->accept_untrusted) {
        msm_stat_inc(t->stats->ssl.fail_verify_error);
        X509_STORE_CTX_set_error(x, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
        return 0;
    }
    /* The verify result is kept in the session: a resumed connection (no verify callback)
     * reads it back as "chain validated against a CA". */
    X509_STORE_CTX_set_error(x, trusted ? X509_V_OK : X509_V_ERR_CERT_UNTRUSTED);
    msm_tls_note_validated(ssl, trusted);
    if (!v->accept_untrusted || trusted) {
        msm_tls_note_verified(ssl);
    }
    return 1;
}

static int load_trust(struct msm_tls_ctx *t, const struct msm_tls_validation *v,
                      struct msm_err *err)
{
    X509_STORE *store = SSL_CTX_get_cert_store(t->ssl);
    STACK_OF(X509_NAME) *names = t->server ? sk_X509_NAME_new_null() : NULL;
    bool crls = false;
    if (v->trusted_ca) {
        BIO *b = BIO_new_mem_buf(v->trusted_ca, -1);
        STACK_OF(X509_INFO) *inf = PEM_X509_INFO_read_bio(b, NULL, NULL, NULL);
        BIO_free(b);
        for (int i = 0; inf && i < sk_X509_INFO_num(inf); i++) {
            X509_INFO *it = sk_X509_INFO_value(inf, i);
            if (it->x509) {
                X509_STORE_add_cert(store, it->x509);
                t->has_ca = true;
                if (names) {
                    sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(it->x509)));
                }
            }
            if (it->crl) {
                X509_STORE_add_crl(store, it->crl);
                crls = true;
            }
        }
        sk_X509_INFO_pop_free(inf, X509_INFO_free);
        if (!t->has_ca) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            ERR_clear_error();
            return msm_err_set(err, "trusted_ca: Failed to load trusted CA certificates");
        }
    }
    if (v->system_roots && SSL_CTX_set_default_verify_paths(t->ssl) == 1) {
        t->has_ca = true;
    }
    if (v->crl) {
        BIO *b = BIO_new_mem_buf(v->crl, -1);
        STACK_OF(X509_INFO) *inf = PEM_X509_INFO_read_bio(b, NULL, NULL, NULL);
        BIO_free(b);
        for (int i = 0; inf && i < sk_X509_INFO_num(inf); i++) {
            X509_INFO *it = sk_X509_INFO_value(inf, i);
            if (it->crl) {
                X509_STORE_add_crl(store, it->crl);
                crls = true;
            }
        }
        sk_X509_INFO_pop_free(inf, X509_INFO_free);
    }
    unsigned long fl = X509_V_FLAG_PARTIAL_CHAIN;
    if (crls) {
        fl |= v->only_leaf_crl ? X509_V_FLAG_CRL_CHECK
                               : (X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    }
    if (v->allow_expired) {
        fl |= X509_V_FLAG_NO_CHECK_TIME;
    }
    X509_STORE_set_flags(store, fl);
    if (v->max_depth) {
        X509_STORE_set_depth(store, (int)v->max_depth);
    }
    if (names && sk_X509_NAME_num(names)) {
        SSL_CTX_set_client_CA_list(t->ssl, names);
    } else {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
    }
    ERR_clear_error();
    return 0;
}

static int use_cert(SSL_CTX *ctx, const struct msm_tls_cert *c, struct msm_err *err)
{
    STACK_OF(X509) *chain = read_chain(c->chain, err);
    if (!chain) {
        return MSM_EINVAL;
    }
    EVP_PKEY *k = read_key(c, err);
    int rc = 0;
    if (!k) {
        rc = MSM_EINVAL;
    } else if (SSL_CTX_use_certificate(ctx, sk_X509_value(chain, 0)) != 1 ||
               SSL_CTX_use_PrivateKey(ctx, k) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        char buf[256];
        rc = msm_err_set(err, "cannot use the certificate: %s", ssl_err(buf, sizeof(buf)));
    }
    for (int i = 1; rc == 0 && i < sk_X509_num(chain); i++) {
        SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i));
    }
    EVP_PKEY_free(k);
    sk_X509_pop_free(chain, X509_free);
    ERR_clear_error();
    return rc;
}

/* The server's ALPN list, owned by its SSL_CTX (ex data freed with it). */
struct alpn_ref {
    uint8_t *wire;
    size_t len;
};

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const struct alpn_ref *a = arg;
    /* Server preference order, as Envoy. */
    if (SSL_select_next_proto((unsigned char **)out, outlen, a->wire, (unsigned)a->len, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

static int alpn_idx = -1;
static pthread_once_t alpn_once = PTHREAD_ONCE_INIT;

static void alpn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    struct alpn_ref *a = ptr;
    if (a) {
        free(a->wire);
        free(a);
    }
}

static void alpn_init(void)
{
    alpn_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, alpn_free);
}

static void server_alpn(SSL_CTX *ctx, const struct msm_tls_params *p)
{
    pthread_once(&alpn_once, alpn_init);
    struct alpn_ref *a = MSM_NEW(struct alpn_ref);
    a->wire = msm_xmalloc(p->alpn_len);
    memcpy(a->wire, p->alpn, p->alpn_len);
    a->len = p->alpn_len;
    SSL_CTX_set_ex_data(ctx, alpn_idx, a);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, a);
}

static int require_sni_cb(SSL *ssl, int *al, void *arg)
{
    (void)arg;
    const unsigned char *d;
    size_t l;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &d, &l)) {
        *al = SSL_AD_MISSING_EXTENSION;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* The verify mode of Envoy's DefaultCertValidator (+ ServerContextImpl for client certs). */
static int verify_mode(const struct msm_tls_params *p, const struct msm_tls_ctx *t)
{
    const struct msm_tls_validation *v = &t->val;
    int mode = SSL_VERIFY_NONE;
    int strict = v->accept_untrusted ? SSL_VERIFY_PEER
                                     : (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    if (v->accept_untrusted) {
        mode = SSL_VERIFY_PEER;
    }
    if (t->has_ca) {
        mode = SSL_VERIFY_PEER;
    }
    if (v->n_sans || v->n_hashes || v->n_spkis) {
        mode = strict;
    }
    if (p->server && p->require_client_cert && t->has_ca) {
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    }
    return mode;
}

/* Session id context: resumption only to contexts with the same identity and trust. */
static void session_id(SSL_CTX *ctx, const struct msm_tls_cert *cert,
                       const struct msm_tls_validation *v)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned ml = 0;
    EVP_MD_CTX *s = EVP_MD_CTX_new();
    EVP_DigestInit_ex(s, EVP_sha256(), NULL);
    if (cert) {
        EVP_DigestUpdate(s, cert->chain, strlen(cert->chain));
    }
    if (v->trusted_ca) {
        EVP_DigestUpdate(s, v->trusted_ca, strlen(v->trusted_ca));
    }
    for (int i = 0; i < v->n_sans; i++) {
        EVP_DigestUpdate(s, v->sans[i].m.s, strlen(v->sans[i].m.s) + 1);
    }
    EVP_DigestFinal_ex(s, md, &ml);
    EVP_MD_CTX_free(s);
    SSL_CTX_set_session_id_context(ctx, md, ml < SSL_MAX_SID_CTX_LENGTH ? ml
                                                                        : SSL_MAX_SID_CTX_LENGTH);
}

static int configure(struct msm_tls_ctx *t, const struct msm_tls_params *p,
                     const struct msm_tls_cert *cert, bool shared, struct msm_err *err)
{
    SSL_CTX *ctx = t->ssl;
    SSL_CTX_set_min_proto_version(ctx, p->min_version);
    SSL_CTX_set_max_proto_version(ctx, p->max_version);
    if (SSL_CTX_set_cipher_list(ctx, p->cipher_list) != 1 ||
        SSL_CTX_set1_groups_list(ctx, p->curves) != 1 ||
        (p->sigalgs && SSL_CTX_set1_sigalgs_list(ctx, p->sigalgs) != 1)) {
        return msm_tls_check_params(p, err) < 0 ? MSM_EINVAL
                                                : msm_err_set(err, "cannot configure ciphers");
    }
    /* No renegotiation; a peer's EOF without close_notify ends the stream like a FIN. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 (p->server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0) |
                                 (p->no_tickets ? SSL_OP_NO_TICKET : 0));
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY);
    if (cert && use_cert(ctx, cert, err) < 0) {
        return MSM_EINVAL;
    }
    if (load_trust(t, &t->val, err) < 0) {
        return MSM_EINVAL;
    }
    t->verify_mode = verify_mode(p, t);
    SSL_CTX_set_verify(ctx, t->verify_mode, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, verify_cb, shared ? NULL : t);
    if (p->alpn_len) {
        if (p->server) {
            server_alpn(ctx, p);
        } else if (SSL_CTX_set_alpn_protos(ctx, p->alpn, (unsigned)p->alpn_len) != 0) {
            return msm_err_set(err, "alpn_protocols: cannot set");
        }
    }
    if (p->server) {
        session_id(ctx, cert, &t->val);
        if (p->no_session_cache) {
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        }
        if (p->session_timeout_s) {
            SSL_CTX_set_timeout(ctx, p->session_timeout_s);
        }
        if (p->require_sni) {
            SSL_CTX_set_client_hello_cb(ctx, require_sni_cb, NULL);
        }
    } else {
        /* Sessions go to the connection's msm_tls_ctx (the SSL_CTX may be shared by contexts
         * of several clusters), never to OpenSSL's internal cache. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                                SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, msm_tls_new_session_cb);
    }
    return 0;
}

/* ---- shared client SSL_CTXs ---------------------------------------------------------------- */

/* An Istio sidecar has one UpstreamTlsContext per cluster that differs from the others only in
 * the SNI and the SAN matchers: the SSL_CTX (parameters, certificate and key, trust store) is
 * the same, and building it is most of the cost of a cluster (time and memory). Client
 * contexts with equal inputs share it; the table is keyed by those inputs, serialized. Server
 * contexts are not shared (their session id context covers the SAN matchers). */
struct msm_tls_shared_ssl {
    struct msm_tls_shared_ssl *next;
    uint64_t hash;
    char *key;
    size_t klen;
    int refs; /* under shared_mu */
    SSL_CTX *ssl;
    bool has_ca;
    int verify_mode;
};

static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static struct msm_tls_shared_ssl **shared_tab;
static size_t shared_cap, shared_n;

struct kbuf {
    char *b;
    size_t n, cap;
};

static void kadd(struct kbuf *k, const void *d, size_t l, bool present)
{
    k->b = msm_xgrow(k->b, 1, &k->cap, k->n + l + 9);
    k->b[k->n++] = present ? 1 : 0;
    memcpy(k->b + k->n, &l, sizeof(l));
    k->n += sizeof(l);
    if (l) {
        memcpy(k->b + k->n, d, l);
        k->n += l;
    }
}

static void kstr(struct kbuf *k, const char *s)
{
    kadd(k, s, s ? strlen(s) : 0, s != NULL);
}

static void kint(struct kbuf *k, long v)
{
    kadd(k, &v, sizeof(v), true);
}

/* Everything configure() reads for a client context except what stays per context. */
static void shared_key(struct kbuf *k, const struct msm_tls_params *p,
                       const struct msm_tls_cert *cert, const struct msm_tls_validation *v)
{
    kint(k, p->min_version);
    kint(k, p->max_version);
    kstr(k, p->cipher_list);
    kstr(k, p->curves);
    kstr(k, p->sigalgs);
    kadd(k, p->alpn, p->alpn_len, p->alpn != NULL);
    kint(k, p->no_tickets);
    kstr(k, cert ? cert->chain : NULL);
    kstr(k, cert ? cert->key : NULL);
    kstr(k, cert ? cert->password : NULL);
    kstr(k, v->trusted_ca);
    kstr(k, v->crl);
    kint(k, v->system_roots);
    kint(k, v->allow_expired);
    kint(k, v->accept_untrusted);
    kint(k, v->only_leaf_crl);
    kint(k, (long)v->max_depth);
    kint(k, v->n_sans > 0);
    kint(k, v->n_hashes > 0);
    kint(k, v->n_spkis > 0);
}

/* A new reference to the shared SSL_CTX for <k>, or NULL. Under shared_mu. */
static struct msm_tls_shared_ssl *shared_find(const struct kbuf *k, uint64_t h)
{
    if (!shared_cap) {
        return NULL;
    }
    for (struct msm_tls_shared_ssl *e = shared_tab[h & (shared_cap - 1)]; e; e = e->next) {
        if (e->hash == h && e->klen == k->n && !memcmp(e->key, k->b, k->n)) {
            e->refs++;
            return e;
        }
    }
    return NULL;
}

static void shared_insert(struct msm_tls_shared_ssl *e)
{
    if (shared_n + 1 > shared_cap) {
        size_t cap = shared_cap ? shared_cap * 2 : 64;
        struct msm_tls_shared_ssl **tab = msm_xcalloc(cap, sizeof(*tab));
        for (size_t i = 0; i < shared_cap; i++) {
            for (struct msm_tls_shared_ssl *x = shared_tab[i], *next; x; x = next) {
                next = x->next;
                x->next = tab[x->hash & (cap - 1)];
                tab[x->hash & (cap - 1)] = x;
            }
        }
        free(shared_tab);
        shared_tab = tab;
        shared_cap = cap;
    }
    e->next = shared_tab[e->hash & (shared_cap - 1)];
    shared_tab[e->hash & (shared_cap - 1)] = e;
    shared_n++;
}

/* Any thread (a context may be released by the last connection using it). */
static void shared_release(struct msm_tls_shared_ssl *e)
{
    pthread_mutex_lock(&shared_mu);
    bool last = --e->refs == 0;
    if (last) {
        struct msm_tls_shared_ssl **pp = &shared_tab[e->hash & (shared_cap - 1)];
        while (*pp != e) {
            pp = &(*pp)->next;
        }
        *pp = e->next;
        shared_n--;
    }
    pthread_mutex_unlock(&shared_mu);
    if (last) {
        SSL_CTX_free(e->ssl);
        free(e->key);
        free(e);
    }
}

/* The PEM trust bundle and CRLs only serve to build the SSL_CTX (verification then uses its
 * store): not kept in every context (10k clusters would hold 10k copies of the root CA). */
static void drop_pem(struct msm_tls_ctx *t)
{
    free(t->val.trusted_ca);
    t->val.trusted_ca = NULL;
    free(t->val.crl);
    t->val.crl = NULL;
}

static void use_shared(struct msm_tls_ctx *t, struct msm_tls_shared_ssl *e)
{
    t->shared = e;
    t->ssl = e->ssl;
    t->has_ca = e->has_ca;
    t->verify_mode = e->verify_mode;
}

struct msm_tls_ctx *msm_tls_ctx_new(const struct msm_tls_params *p, const struct msm_tls_cert *cert,
                                    const struct msm_tls_validation *val,
                                    struct msm_tls_stats *stats, struct msm_err *err)
{
    struct msm_tls_ctx *t = MSM_NEW(struct msm_tls_ctx);
    atomic_init(&t->refs, 1);
    t->server = p->server;
    t->sni = p->sni ? msm_name_ref(p->sni) : NULL;
    pthread_mutex_init(&t->sess_mu, NULL);
    t->max_sessions = p->server ? 0 : p->max_session_keys;
    atomic_fetch_add(&stats->refs, 1);
    t->stats = stats;
    if (val) {
        msm_tls_validation_copy(&t->val, val);
    }
    struct kbuf k = {0};
    uint64_t h = 0;
    if (!p->server) {
        shared_key(&k, p, cert, &t->val);
        h = XXH3_64bits(k.b, k.n);
        pthread_mutex_lock(&shared_mu);
        struct msm_tls_shared_ssl *e = shared_find(&k, h);
        pthread_mutex_unlock(&shared_mu);
        if (e) {
            use_shared(t, e);
            free(k.b);
            drop_pem(t);
            return t;
        }
    }
    t->ssl = SSL_CTX_new(TLS_method());
    if (!t->ssl) {
        msm_err_set(err, "cannot create an SSL_CTX");
        goto fail;
    }
    if (configure(t, p, cert, !p->server, err) < 0) {
        goto fail;
    }
    ERR_clear_error();
    if (!p->server) {
        struct msm_tls_shared_ssl *e = MSM_NEW(struct msm_tls_shared_ssl);
        e->hash = h;
        e->key = k.b;
        e->klen = k.n;
        e->refs = 1;
        e->ssl = t->ssl;
        e->has_ca = t->has_ca;
        e->verify_mode = t->verify_mode;
        k.b = NULL;
        pthread_mutex_lock(&shared_mu);
        shared_insert(e);
        pthread_mutex_unlock(&shared_mu);
        t->shared = e;
    }
    drop_pem(t);
    return t;
fail:
    free(k.b);
    ERR_clear_error();
    msm_tls_ctx_unref(t);
    return NULL;
}

void msm_tls_ctx_unref(struct msm_tls_ctx *t)
{
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1) {
        return;
    }
    if (t->shared) {
        shared_release(t->shared);
    } else {
        SSL_CTX_free(t->ssl);
    }
    for (uint32_t i = 0; i < t->n_sessions; i++) {
        SSL_SESSION_free(t->sessions[i].s);
        free(t->sessions[i].sni);
    }
    free(t->sessions);
    pthread_mutex_destroy(&t->sess_mu);
    msm_tls_validation_deinit(&t->val);
    msm_tls_stats_unref(t->stats);
    msm_name_unref(t->sni);
    free(t);
}

/* ---- client session resumption ------------------------------------------------------------- */

static bool same_sni(const char *a, const char *b)
{
    return a ? (b && !strcmp(a, b)) : !b;
}

static void session_drop(struct msm_tls_ctx *t, uint32_t i)
{
    SSL_SESSION_free(t->sessions[i].s);
    free(t->sessions[i].sni);
    memmove(&t->sessions[i], &t->sessions[i + 1],
            (t->n_sessions - i - 1) * sizeof(*t->sessions));
    t->n_sessions--;
}

void msm_tls_ctx_offer_session(struct msm_tls_ctx *t, SSL *ssl, const char *sni)
{
    if (!t->max_sessions) {
        return;
    }
    time_t now = time(NULL);
    pthread_mutex_lock(&t->sess_mu);
    for (uint32_t i = 0; i < t->n_sessions;) {
        struct msm_tls_session *e = &t->sessions[i];
        if (now >= (time_t)(SSL_SESSION_get_time(e->s) + SSL_SESSION_get_timeout(e->s))) {
            session_drop(t, i); /* expired: no server takes it */
            continue;
        }
        if (!same_sni(e->sni, sni)) {
            i++;
            continue;
        }
        if (SSL_set_session(ssl, e->s) != 1) {
            ERR_clear_error();
        } else if (SSL_SESSION_get_protocol_version(e->s) >= TLS1_3_VERSION) {
            session_drop(t, i); /* TLS 1.3 tickets are single use (RFC 8446 C.4), as Envoy */
        }
        break;
    }
    pthread_mutex_unlock(&t->sess_mu);
}

bool msm_tls_ctx_store_session(struct msm_tls_ctx *t, SSL_SESSION *sess, const char *sni)
{
    if (!t->max_sessions || !SSL_SESSION_is_resumable(sess)) {
        return false;
    }
    pthread_mutex_lock(&t->sess_mu);
    if (t->n_sessions == t->max_sessions) {
        session_drop(t, t->n_sessions - 1); /* the oldest */
    }
    t->sessions = msm_xrealloc(t->sessions, (t->n_sessions + 1) * sizeof(*t->sessions));
    memmove(&t->sessions[1], &t->sessions[0], t->n_sessions * sizeof(*t->sessions));
    t->sessions[0].s = sess;
    t->sessions[0].sni = sni ? msm_xstrdup(sni) : NULL;
    t->n_sessions++;
    pthread_mutex_unlock(&t->sess_mu);
    return true;
}
