/* TLS contexts from protos: UpstreamTlsContext / DownstreamTlsContext (CommonTlsContext),
 * CertificateValidationContext, TlsCertificate and Secret, into plain C (tls_private.h).
 * Fields that are set but not implemented are errors naming the field (a NACK), never
 * silently ignored. */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"

#include "common/alloc.h"
#include "config/pbutil.h"
#include "tls/tls_private.h"
#include "xds/strmap.h"

/* Envoy's defaults (context_config_impl.cc), in OpenSSL syntax: BoringSSL's equal-preference
 * groups "[A|B]" become plain order. */
#define DEFAULT_CIPHERS                                                                           \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"   \
    "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
#define DEFAULT_CURVES "X25519:P-256"
static const char default_ciphers[] = DEFAULT_CIPHERS;
static const char default_curves[] = DEFAULT_CURVES;

/* Enum constants of envoy.extensions.transport_sockets.tls.v3, shortened. */
#define TLSV3(x) ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__##x

typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext common_pb;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext cvc_pb;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig sds_pb;

/* ---- small helpers ------------------------------------------------------------------------- */

static char *read_file(const char *path, struct msm_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        msm_err_set(err, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = msm_xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            buf = msm_xrealloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            break;
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        msm_err_set(err, "cannot read '%s'", path);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* A DataSource as a NUL-terminated string (PEM is text); *out NULL when <ds> is unset. */
static int datasource(const Envoy__Config__Core__V3__DataSource *ds, char **out,
                      struct msm_err *err)
{
    *out = NULL;
    if (!ds) {
        return 0;
    }
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME:
        *out = read_file(ds->filename, err);
        return *out ? 0 : MSM_EINVAL;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        *out = msm_xstrdup(ds->inline_string);
        return 0;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        *out = msm_xstrndup((const char *)ds->inline_bytes.data, ds->inline_bytes.len);
        return 0;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE: {
        const char *v = getenv(ds->environment_variable);
        if (!v) {
            return msm_err_set(err, "environment variable '%s' is not set",
                               ds->environment_variable);
        }
        *out = msm_xstrdup(v);
        return 0;
    }
    default:
        return 0;
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The file of a DataSource, NULL when inline or unset (for /certs). */
static char *datasource_path(const Envoy__Config__Core__V3__DataSource *ds)
{
    if (ds && ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME &&
        ds->filename) {
        return msm_xstrdup(ds->filename);
    }
    return NULL;
}

/* verify_certificate_hash: 64 hex digits, or 95 with colons. */
static int parse_hash(const char *s, uint8_t out[32], struct msm_err *err)
{
    char hex[65];
    size_t k = 0, l = strlen(s);
    for (size_t i = 0; i < l; i++) {
        if (l == 95 && s[i] == ':') {
            continue;
        }
        if (k == 64) {
            k++;
            break;
        }
        hex[k++] = s[i];
    }
    if (k != 64) {
        return msm_err_set(err, "Invalid hex-encoded SHA-256 %s", s);
    }
    for (int i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return msm_err_set(err, "Invalid hex-encoded SHA-256 %s", s);
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* verify_certificate_spki: base64 of a SHA-256. */
static int parse_spki(const char *s, uint8_t out[32], struct msm_err *err)
{
    size_t l = strlen(s);
    uint8_t buf[64];
    if (l != 44 || s[43] != '=' || s[42] == '=') {
        return msm_err_set(err, "Invalid base64-encoded SHA-256 %s", s);
    }
    int n = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)l);
    if (n != 33) {
        return msm_err_set(err, "Invalid base64-encoded SHA-256 %s", s);
    }
    memcpy(out, buf, 32);
    return 0;
}

/* ---- certificate validation context ---------------------------------------------------------- */

/* Shared SAN matcher sets (struct msm_san_set), by content; any thread (contexts are freed on
 * workers). */
static pthread_mutex_t san_mu = PTHREAD_MUTEX_INITIALIZER;
static struct msm_strmap san_sets; /* key -> struct msm_san_set * */

/* The content of <n> matchers as one string: type, kind, ignore_case, length and pattern of
 * each. */
static char *san_key(const struct msm_san_matcher *m, int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++) {
        len += 64 + m[i].m.len;
    }
    char *k = msm_xmalloc(len), *p = k;
    for (int i = 0; i < n; i++) {
        size_t l = m[i].m.s ? strlen(m[i].m.s) : 0;
        p += snprintf(p, 64, "%d/%d/%d/%zu:", (int)m[i].type, (int)m[i].m.kind,
                      (int)m[i].m.ignore_case, l);
        memcpy(p, m[i].m.s ? m[i].m.s : "", l);
        p += l;
    }
    *p = '\0';
    return k;
}

static void sans_free(struct msm_san_matcher *m, int n)
{
    for (int i = 0; i < n; i++) {
        msm_str_matcher_deinit(&m[i].m);
    }
}

/* Turn <v>'s own array of matchers into a reference to the shared set with that content. */
static void sans_seal(struct msm_tls_validation *v)
{
    if (!v->n_sans || v->san_set) {
        return;
    }
    char *k = san_key(v->sans, v->n_sans);
    pthread_mutex_lock(&san_mu);
    void **slot = msm_strmap_put(&san_sets, k, NULL, NULL);
    struct msm_san_set *set = *slot;
    if (set) {
        set->refs++;
        pthread_mutex_unlock(&san_mu);
        sans_free(v->sans, v->n_sans);
    } else {
        set = msm_xmalloc(offsetof(struct msm_san_set, m) + (size_t)v->n_sans * sizeof(set->m[0]));
        set->refs = 1;
        set->key = msm_name_intern(k);
        set->n = v->n_sans;
        memcpy(set->m, v->sans, (size_t)v->n_sans * sizeof(set->m[0]));
        *slot = set;
        pthread_mutex_unlock(&san_mu);
    }
    free(k);
    free(v->sans);
    v->san_set = set;
    v->sans = set->m;
}

static void san_set_unref(struct msm_san_set *set)
{
    pthread_mutex_lock(&san_mu);
    bool last = --set->refs == 0;
    if (last) {
        msm_strmap_del(&san_sets, set->key, NULL);
        if (!san_sets.n) {
            msm_strmap_deinit(&san_sets);
        }
    }
    pthread_mutex_unlock(&san_mu);
    if (last) {
        sans_free(set->m, set->n);
        msm_name_unref(set->key);
        free(set);
    }
}

/* Number of distinct SAN matcher sets alive (tests). */
size_t msm_tls_san_sets(void)
{
    pthread_mutex_lock(&san_mu);
    size_t n = san_sets.n;
    pthread_mutex_unlock(&san_mu);
    return n;
}

static void sans_release(struct msm_tls_validation *v)
{
    if (v->san_set) {
        san_set_unref(v->san_set);
    } else {
        sans_free(v->sans, v->n_sans);
        free(v->sans);
    }
    v->sans = NULL;
    v->n_sans = 0;
    v->san_set = NULL;
}

void msm_tls_validation_deinit(struct msm_tls_validation *v)
{
    free(v->trusted_ca);
    free(v->trusted_ca_path);
    free(v->crl);
    sans_release(v);
    free(v->hashes);
    free(v->spkis);
    memset(v, 0, sizeof(*v));
}

static void add_sans(struct msm_tls_validation *dst, const struct msm_tls_validation *src)
{
    if (!src->n_sans) {
        return;
    }
    if (!dst->n_sans && src->san_set) {
        /* A copy (a context's validation from its factory's): the same set. */
        pthread_mutex_lock(&san_mu);
        src->san_set->refs++;
        pthread_mutex_unlock(&san_mu);
        sans_release(dst);
        dst->san_set = src->san_set;
        dst->sans = src->san_set->m;
        dst->n_sans = src->san_set->n;
        return;
    }
    /* Appending (MergeFrom): copies of both lists, shared again as a set of its own. */
    int n = dst->n_sans + src->n_sans;
    struct msm_san_matcher *v = msm_xcalloc((size_t)n, sizeof(*v));
    for (int i = 0; i < n; i++) {
        const struct msm_san_matcher *m =
            i < dst->n_sans ? &dst->sans[i] : &src->sans[i - dst->n_sans];
        v[i].type = m->type;
        msm_str_matcher_copy(&v[i].m, &m->m);
    }
    sans_release(dst);
    dst->sans = v;
    dst->n_sans = n;
    sans_seal(dst);
}

static void add_digests(uint8_t (**dst)[32], int *nd, uint8_t (*src)[32], int ns)
{
    if (!ns) {
        return;
    }
    *dst = msm_xrealloc(*dst, (size_t)(*nd + ns) * 32);
    memcpy(*dst + *nd, src, (size_t)ns * 32);
    *nd += ns;
}

void msm_tls_validation_copy(struct msm_tls_validation *dst, const struct msm_tls_validation *src)
{
    memset(dst, 0, sizeof(*dst));
    msm_tls_validation_merge(dst, src);
}

void msm_tls_validation_merge(struct msm_tls_validation *dst, const struct msm_tls_validation *src)
{
    /* Proto MergeFrom: set scalars and messages override, repeated fields append. */
    if (src->trusted_ca) {
        free(dst->trusted_ca);
        dst->trusted_ca = msm_xstrdup(src->trusted_ca);
        free(dst->trusted_ca_path);
        dst->trusted_ca_path = src->trusted_ca_path ? msm_xstrdup(src->trusted_ca_path) : NULL;
    }
    if (src->crl) {
        free(dst->crl);
        dst->crl = msm_xstrdup(src->crl);
    }
    dst->system_roots |= src->system_roots;
    add_sans(dst, src);
    add_digests(&dst->hashes, &dst->n_hashes, src->hashes, src->n_hashes);
    add_digests(&dst->spkis, &dst->n_spkis, src->spkis, src->n_spkis);
    dst->allow_expired |= src->allow_expired;
    dst->accept_untrusted |= src->accept_untrusted;
    dst->only_leaf_crl |= src->only_leaf_crl;
    if (src->max_depth) {
        dst->max_depth = src->max_depth;
    }
}

static int san_from_proto(const Envoy__Type__Matcher__V3__StringMatcher *m,
                          enum msm_san_type type, struct msm_tls_validation *v,
                          struct msm_err *err)
{
    struct msm_san_matcher sm = {.type = type};
    if (!m) {
        return msm_err_set(err, "matcher is required");
    }
    if (msm_str_matcher_from_proto(m, &sm.m, err) < 0) {
        return MSM_EINVAL;
    }
    v->sans = msm_xrealloc(v->sans, (size_t)(v->n_sans + 1) * sizeof(*v->sans));
    v->sans[v->n_sans++] = sm;
    return 0;
}

static int unsupported_cvc(const cvc_pb *p, struct msm_err *err)
{
    if (p->ca_certificate_provider_instance) {
        return msm_err_set(err, "ca_certificate_provider_instance: not supported");
    }
    if (p->watched_directory) {
        return msm_err_set(err, "watched_directory: not supported (use SDS for rotation)");
    }
    if (p->require_signed_certificate_timestamp && p->require_signed_certificate_timestamp->value) {
        return msm_err_set(err, "require_signed_certificate_timestamp: not supported");
    }
    if (p->custom_validator_config) {
        return msm_err_set(err, "custom_validator_config '%s': not supported",
                           p->custom_validator_config->name);
    }
    return 0;
}

int msm_tls_validation_from_proto(const void *proto, struct msm_tls_validation *v,
                                  struct msm_err *err)
{
    const cvc_pb *p = proto;
    memset(v, 0, sizeof(*v));
    if (unsupported_cvc(p, err) < 0) {
        return MSM_EINVAL;
    }
    if (datasource(p->trusted_ca, &v->trusted_ca, err) < 0) {
        msm_err_prefix(err, "trusted_ca");
        goto fail;
    }
    v->trusted_ca_path = datasource_path(p->trusted_ca);
    if (v->trusted_ca && msm_tls_check_ca(v->trusted_ca, "trusted_ca", err) < 0) {
        goto fail;
    }
    if (datasource(p->crl, &v->crl, err) < 0) {
        msm_err_prefix(err, "crl");
        goto fail;
    }
    v->system_roots = p->system_root_certs != NULL;
    for (size_t i = 0; i < p->n_match_typed_subject_alt_names; i++) {
        const Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher *m =
            p->match_typed_subject_alt_names[i];
        int t = (int)m->san_type;
        if (t == TLSV3(SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__OTHER_NAME)) {
            msm_err_set(err, "match_typed_subject_alt_names[%zu]: san_type OTHER_NAME is not "
                             "supported", i);
            goto fail;
        }
        if (t < MSM_SAN_EMAIL || t > MSM_SAN_IP) {
            msm_err_set(err, "match_typed_subject_alt_names[%zu]: san_type must be EMAIL, DNS, "
                             "URI or IP_ADDRESS", i);
            goto fail;
        }
        if (san_from_proto(m->matcher, (enum msm_san_type)t, v, err) < 0) {
            msm_err_prefix(err, "match_typed_subject_alt_names[%zu]", i);
            goto fail;
        }
    }
    /* Deprecated in Envoy's API, but what istiod sends sidecars. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    for (size_t i = 0; i < p->n_match_subject_alt_names; i++) {
        if (san_from_proto(p->match_subject_alt_names[i], MSM_SAN_ANY, v, err) < 0) {
            msm_err_prefix(err, "match_subject_alt_names[%zu]", i);
            goto fail;
        }
    }
#pragma GCC diagnostic pop
    if (p->n_verify_certificate_hash) {
        v->hashes = msm_xcalloc(p->n_verify_certificate_hash, 32);
        for (size_t i = 0; i < p->n_verify_certificate_hash; i++) {
            if (parse_hash(p->verify_certificate_hash[i], v->hashes[i], err) < 0) {
                msm_err_prefix(err, "verify_certificate_hash[%zu]", i);
                goto fail;
            }
            v->n_hashes++;
        }
    }
    if (p->n_verify_certificate_spki) {
        v->spkis = msm_xcalloc(p->n_verify_certificate_spki, 32);
        for (size_t i = 0; i < p->n_verify_certificate_spki; i++) {
            if (parse_spki(p->verify_certificate_spki[i], v->spkis[i], err) < 0) {
                msm_err_prefix(err, "verify_certificate_spki[%zu]", i);
                goto fail;
            }
            v->n_spkis++;
        }
    }
    v->allow_expired = p->allow_expired_certificate;
    v->accept_untrusted =
        p->trust_chain_verification ==
        TLSV3(CERTIFICATE_VALIDATION_CONTEXT__TRUST_CHAIN_VERIFICATION__ACCEPT_UNTRUSTED);
    v->only_leaf_crl = p->only_verify_leaf_cert_crl;
    v->max_depth = msm_pb_u32(p->max_verify_depth, 0);
    if (p->max_verify_depth && v->max_depth == 0) {
        /* OpenSSL cannot express "leaf only" differently from its default. */
        v->max_depth = 1;
    }
    sans_seal(v);
    return 0;
fail:
    msm_tls_validation_deinit(v);
    return MSM_EINVAL;
}

/* ---- certificates ------------------------------------------------------------------------- */

void msm_tls_cert_deinit(struct msm_tls_cert *c)
{
    free(c->chain);
    free(c->chain_path);
    if (c->key) {
        OPENSSL_cleanse(c->key, strlen(c->key));
    }
    free(c->key);
    free(c->password);
    memset(c, 0, sizeof(*c));
}

int msm_tls_cert_from_proto(const void *proto, struct msm_tls_cert *c, struct msm_err *err)
{
    const Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *p = proto;
    memset(c, 0, sizeof(*c));
    if (p->private_key_provider) {
        return msm_err_set(err, "private_key_provider '%s': not supported",
                           p->private_key_provider->provider_name);
    }
    if (p->pkcs12) {
        return msm_err_set(err, "pkcs12: not supported (use certificate_chain and "
                                "private_key)");
    }
    if (p->watched_directory) {
        return msm_err_set(err, "watched_directory: not supported (use SDS for rotation)");
    }
    if (p->ocsp_staple) {
        return msm_err_set(err, "ocsp_staple: not supported");
    }
    if (p->n_signed_certificate_timestamp) {
        return msm_err_set(err, "signed_certificate_timestamp: not supported");
    }
    if (datasource(p->certificate_chain, &c->chain, err) < 0) {
        msm_err_prefix(err, "certificate_chain");
        goto fail;
    }
    c->chain_path = datasource_path(p->certificate_chain);
    if (datasource(p->private_key, &c->key, err) < 0) {
        msm_err_prefix(err, "private_key");
        goto fail;
    }
    if (datasource(p->password, &c->password, err) < 0) {
        msm_err_prefix(err, "password");
        goto fail;
    }
    if (!c->chain || !c->key) {
        msm_err_set(err, "%s is required", !c->chain ? "certificate_chain" : "private_key");
        goto fail;
    }
    if (msm_tls_check_cert(c, err) < 0) {
        goto fail;
    }
    return 0;
fail:
    msm_tls_cert_deinit(c);
    return MSM_EINVAL;
}

/* ---- secrets ------------------------------------------------------------------------------ */

void msm_secret_free(struct msm_secret *s)
{
    if (!s) {
        return;
    }
    msm_tls_cert_deinit(&s->cert);
    msm_tls_validation_deinit(&s->val);
    free(s);
}

struct msm_secret *msm_secret_from_proto(const void *proto, struct msm_err *err)
{
    const Envoy__Extensions__TransportSockets__Tls__V3__Secret *p = proto;
    struct msm_secret *s = MSM_NEW(struct msm_secret);
    switch (p->type_case) {
    case TLSV3(SECRET__TYPE_TLS_CERTIFICATE):
        s->type = MSM_SECRET_TLS_CERTIFICATE;
        if (msm_tls_cert_from_proto(p->tls_certificate, &s->cert, err) < 0) {
            msm_err_prefix(err, "tls_certificate");
            goto fail;
        }
        return s;
    case TLSV3(SECRET__TYPE_VALIDATION_CONTEXT):
        s->type = MSM_SECRET_VALIDATION_CONTEXT;
        if (msm_tls_validation_from_proto(p->validation_context, &s->val, err) < 0) {
            msm_err_prefix(err, "validation_context");
            goto fail;
        }
        return s;
    case TLSV3(SECRET__TYPE_SESSION_TICKET_KEYS):
    case TLSV3(SECRET__TYPE_GENERIC_SECRET):
        s->type = MSM_SECRET_OTHER;
        return s;
    default:
        msm_err_set(err, "secret '%s' has no type (tls_certificate, validation_context, ...)",
                    p->name);
        goto fail;
    }
fail:
    msm_secret_free(s);
    return NULL;
}

/* ---- SAN matching ------------------------------------------------------------------------- */

bool msm_tls_dns_match(const char *name, const char *pattern, size_t plen)
{
    size_t nl = strlen(name);
    if (nl == plen && !strncasecmp(name, pattern, plen)) {
        return true;
    }
    /* "*.example.com" matches exactly one label in front of ".example.com". */
    if (plen > 1 && pattern[0] == '*' && pattern[1] == '.' && nl > plen - 1) {
        size_t off = nl - (plen - 1);
        return !memchr(name, '.', off) && !strncasecmp(name + off, pattern + 1, plen - 1);
    }
    return false;
}

static bool san_one(const struct msm_san_matcher *m, const GENERAL_NAME *g)
{
    enum msm_san_type t;
    const char *s;
    size_t l;
    char ip[INET6_ADDRSTRLEN];
    switch (g->type) {
    case GEN_DNS:
        t = MSM_SAN_DNS;
        s = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
        l = (size_t)ASN1_STRING_length(g->d.dNSName);
        break;
    case GEN_URI:
        t = MSM_SAN_URI;
        s = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        l = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
        break;
    case GEN_EMAIL:
        t = MSM_SAN_EMAIL;
        s = (const char *)ASN1_STRING_get0_data(g->d.rfc822Name);
        l = (size_t)ASN1_STRING_length(g->d.rfc822Name);
        break;
    case GEN_IPADD: {
        t = MSM_SAN_IP;
        int n = ASN1_STRING_length(g->d.iPAddress);
        const unsigned char *b = ASN1_STRING_get0_data(g->d.iPAddress);
        if ((n != 4 && n != 16) || !inet_ntop(n == 4 ? AF_INET : AF_INET6, b, ip, sizeof(ip))) {
            return false;
        }
        s = ip;
        l = strlen(ip);
        break;
    }
    default:
        return false;
    }
    if (m->type != MSM_SAN_ANY && m->type != t) {
        return false;
    }
    if (memchr(s, 0, l)) {
        return false; /* embedded NUL: never a match */
    }
    if (t == MSM_SAN_DNS && m->m.kind == MSM_STR_EXACT) {
        return msm_tls_dns_match(m->m.s, s, l);
    }
    return msm_str_matcher_match(&m->m, s, l);
}

bool msm_tls_san_match(const struct msm_san_matcher *m, int n, void *x509)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x509, NID_subject_alt_name, NULL, NULL);
    if (!names) {
        return false;
    }
    bool ok = false;
    for (int i = 0; i < n && !ok; i++) {
        for (int j = 0; j < sk_GENERAL_NAME_num(names) && !ok; j++) {
            ok = san_one(&m[i], sk_GENERAL_NAME_value(names, j));
        }
    }
    GENERAL_NAMES_free(names);
    return ok;
}

/* ---- TLS contexts ------------------------------------------------------------------------- */

static int version_from_proto(int v, int dflt, const char *field, int *out, struct msm_err *err)
{
    switch (v) {
    case TLSV3(TLS_PARAMETERS__TLS_PROTOCOL__TLS_AUTO):
        *out = dflt;
        return 0;
    case TLSV3(TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_0):
        *out = TLS1_VERSION;
        return 0;
    case TLSV3(TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_1):
        *out = TLS1_1_VERSION;
        return 0;
    case TLSV3(TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_2):
        *out = TLS1_2_VERSION;
        return 0;
    case TLSV3(TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_3):
        *out = TLS1_3_VERSION;
        return 0;
    default:
        return msm_err_set(err, "tls_params.%s: unknown value %d", field, v);
    }
}

/* Join list entries with ':' (BoringSSL "[A|B]" groups flattened). */
static char *join_list(char **v, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++) {
        len += strlen(v[i]) + 1;
    }
    char *s = msm_xmalloc(len), *o = s;
    for (size_t i = 0; i < n; i++) {
        for (const char *c = v[i]; *c; c++) {
            if (*c == '[' || *c == ']') {
                continue;
            }
            *o++ = *c == '|' ? ':' : *c;
        }
        if (i + 1 < n) {
            *o++ = ':';
        }
    }
    *o = '\0';
    return s;
}

static int tls_params(const Envoy__Extensions__TransportSockets__Tls__V3__TlsParameters *tp,
                      struct msm_tls_params *p, struct msm_err *err)
{
    int dmax = p->server ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (version_from_proto(tp ? (int)tp->tls_minimum_protocol_version : 0, TLS1_2_VERSION,
                           "tls_minimum_protocol_version", &p->min_version, err) < 0 ||
        version_from_proto(tp ? (int)tp->tls_maximum_protocol_version : 0, dmax,
                           "tls_maximum_protocol_version", &p->max_version, err) < 0) {
        return MSM_EINVAL;
    }
    if (p->min_version > p->max_version) {
        return msm_err_set(err, "tls_params: tls_minimum_protocol_version is greater than "
                                "tls_maximum_protocol_version");
    }
    /* The defaults are shared, not copied (10k clusters would hold 10k copies). */
    p->cipher_list = tp && tp->n_cipher_suites ? join_list(tp->cipher_suites, tp->n_cipher_suites)
                                               : (char *)default_ciphers;
    p->curves = tp && tp->n_ecdh_curves ? join_list(tp->ecdh_curves, tp->n_ecdh_curves)
                                        : (char *)default_curves;
    if (tp && tp->n_signature_algorithms) {
        p->sigalgs = join_list(tp->signature_algorithms, tp->n_signature_algorithms);
    }
    return msm_tls_check_params(p, err);
}

static int alpn_wire(char **v, size_t n, struct msm_tls_params *p, struct msm_err *err)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(v[i]);
        if (l == 0 || l > 255) {
            return msm_err_set(err, "alpn_protocols[%zu]: a protocol name must have 1 to 255 "
                                    "bytes", i);
        }
        len += l + 1;
    }
    if (!n) {
        return 0;
    }
    if (len >= 65535) {
        return msm_err_set(err, "alpn_protocols: Invalid ALPN protocol string");
    }
    p->alpn = msm_xmalloc(len);
    p->alpn_len = len;
    uint8_t *o = p->alpn;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(v[i]);
        *o++ = (uint8_t)l;
        memcpy(o, v[i], l);
        o += l;
    }
    return 0;
}

static int sds_ref(const sds_pb *s, struct msm_secret_provider **out, struct msm_err *err)
{
    if (!s->name || !s->name[0]) {
        return msm_err_set(err, "name: an SDS secret needs a name");
    }
    if (!msm_secrets) {
        return msm_err_set(err, "secret '%s': no secret manager", s->name);
    }
    if (s->sds_config && !s->sds_config->config_source_specifier_case) {
        return msm_err_set(err, "secret '%s': sds_config has no config source", s->name);
    }
    return msm_secrets_provider(msm_secrets, s->name, s->sds_config, out, err);
}

static int unsupported_common(const common_pb *c, struct msm_err *err)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    bool providers = c->tls_certificate_provider_instance ||
                     c->tls_certificate_certificate_provider ||
                     c->tls_certificate_certificate_provider_instance;
#pragma GCC diagnostic pop
    if (providers) {
        return msm_err_set(err, "certificate provider instances are not supported (use "
                                "tls_certificates or tls_certificate_sds_secret_configs)");
    }
    if (c->custom_handshaker) {
        return msm_err_set(err, "custom_handshaker '%s': not supported",
                           c->custom_handshaker->name);
    }
    if (c->key_log && c->key_log->path && c->key_log->path[0]) {
        return msm_err_set(err, "key_log: not supported");
    }
    return 0;
}

static int certs_from_common(const common_pb *c, struct msm_tls_params *p, struct msm_err *err)
{
    size_t total = c->n_tls_certificates + c->n_tls_certificate_sds_secret_configs;
    if (p->server && total == 0) {
        return msm_err_set(err, "No TLS certificates found for server context");
    }
    if (p->server && c->n_tls_certificates && c->n_tls_certificate_sds_secret_configs) {
        return msm_err_set(err, "SDS and non-SDS TLS certificates may not be mixed in server "
                                "contexts");
    }
    if (!p->server && total > 1) {
        return msm_err_set(err, "Multiple TLS certificates are not supported for client "
                                "contexts");
    }
    if (total > 1) {
        return msm_err_set(err, "multiple TLS certificates in one server context are not "
                                "supported yet");
    }
    if (c->n_tls_certificates) {
        p->certs = msm_xcalloc(1, sizeof(*p->certs));
        if (msm_tls_cert_from_proto(c->tls_certificates[0], &p->certs[0], err) < 0) {
            free(p->certs);
            p->certs = NULL;
            msm_err_prefix(err, "tls_certificates[0]");
            return MSM_EINVAL;
        }
        p->n_certs = 1;
    }
    if (c->n_tls_certificate_sds_secret_configs &&
        sds_ref(c->tls_certificate_sds_secret_configs[0], &p->cert_provider, err) < 0) {
        msm_err_prefix(err, "tls_certificate_sds_secret_configs[0]");
        return MSM_EINVAL;
    }
    return 0;
}

static int validation_from_common(const common_pb *c, struct msm_tls_params *p,
                                  struct msm_err *err)
{
    switch (c->validation_context_type_case) {
    case TLSV3(COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE__NOT_SET):
        return 0;
    case TLSV3(COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT):
        p->has_validation = true;
        if (msm_tls_validation_from_proto(c->validation_context, &p->val, err) < 0) {
            msm_err_prefix(err, "validation_context");
            return MSM_EINVAL;
        }
        return 0;
    case TLSV3(COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG):
        p->has_validation = true;
        if (sds_ref(c->validation_context_sds_secret_config, &p->val_provider, err) < 0) {
            msm_err_prefix(err, "validation_context_sds_secret_config");
            return MSM_EINVAL;
        }
        return 0;
    case TLSV3(COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT): {
        typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext__CombinedCertificateValidationContext
            combined_pb;
        const combined_pb *cc = c->combined_validation_context;
        p->has_validation = true;
        if (!cc->default_validation_context || !cc->validation_context_sds_secret_config) {
            return msm_err_set(err, "combined_validation_context: default_validation_context "
                                    "and validation_context_sds_secret_config are required");
        }
        if (msm_tls_validation_from_proto(cc->default_validation_context, &p->val, err) < 0) {
            msm_err_prefix(err, "combined_validation_context.default_validation_context");
            return MSM_EINVAL;
        }
        if (sds_ref(cc->validation_context_sds_secret_config, &p->val_provider, err) < 0) {
            msm_err_prefix(err, "combined_validation_context.validation_context_sds_secret_config");
            return MSM_EINVAL;
        }
        return 0;
    }
    default:
        return msm_err_set(err, "validation context certificate providers are not supported");
    }
}

static int common_from_proto(const common_pb *c, struct msm_tls_params *p, struct msm_err *err)
{
    if (unsupported_common(c, err) < 0 || tls_params(c->tls_params, p, err) < 0 ||
        alpn_wire(c->alpn_protocols, c->n_alpn_protocols, p, err) < 0 ||
        certs_from_common(c, p, err) < 0 || validation_from_common(c, p, err) < 0) {
        return MSM_EINVAL;
    }
    return 0;
}

static int upstream(const Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *u,
                    struct msm_tls_params *p, struct msm_err *err)
{
    if (u->allow_renegotiation) {
        return msm_err_set(err, "allow_renegotiation: TLS renegotiation is not supported");
    }
    if (u->sni[0]) {
        if (strlen(u->sni) > 255) {
            return msm_err_set(err, "sni: longer than 255 bytes");
        }
        p->sni = msm_name_intern(u->sni);
    }
    /* max_session_keys: Envoy's default is 1. enforce_rsa_key_usage only changes OpenSSL's
     * own checks; it is accepted. */
    p->max_session_keys = msm_pb_u32(u->max_session_keys, 1);
    if (!u->common_tls_context) {
        static const common_pb empty = TLSV3(COMMON_TLS_CONTEXT__INIT);
        return common_from_proto(&empty, p, err);
    }
    if (common_from_proto(u->common_tls_context, p, err) < 0) {
        msm_err_prefix(err, "common_tls_context");
        return MSM_EINVAL;
    }
    return 0;
}

static int downstream(const Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *d,
                      struct msm_tls_params *p, struct msm_err *err)
{
#define STK(x) TLSV3(DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_##x)
    int stk = (int)d->session_ticket_keys_type_case;
    if (stk == STK(SESSION_TICKET_KEYS) || stk == STK(SESSION_TICKET_KEYS_SDS_SECRET_CONFIG)) {
        return msm_err_set(err, "session_ticket_keys: not supported");
    }
    if (d->ocsp_staple_policy !=
        TLSV3(DOWNSTREAM_TLS_CONTEXT__OCSP_STAPLE_POLICY__LENIENT_STAPLING)) {
        return msm_err_set(err, "ocsp_staple_policy: only LENIENT_STAPLING is supported");
    }
    p->require_client_cert = msm_pb_bool(d->require_client_certificate, false);
    p->require_sni = msm_pb_bool(d->require_sni, false);
    p->no_tickets = stk == STK(DISABLE_STATELESS_SESSION_RESUMPTION) &&
                    d->disable_stateless_session_resumption;
#undef STK
    p->no_session_cache = d->disable_stateful_session_resumption;
    if (d->session_timeout) {
        int64_t ms = msm_pb_duration_ms(d->session_timeout, 0);
        if (ms < 0 || ms / 1000 > UINT32_MAX) {
            return msm_err_set(err, "session_timeout: out of range");
        }
        p->session_timeout_s = (uint32_t)(ms / 1000);
    }
    if (!d->common_tls_context) {
        return msm_err_set(err, "common_tls_context: No TLS certificates found for server "
                                "context");
    }
    if (common_from_proto(d->common_tls_context, p, err) < 0) {
        msm_err_prefix(err, "common_tls_context");
        return MSM_EINVAL;
    }
    return 0;
}

int msm_tls_params_from_proto(const void *proto, bool server, struct msm_tls_params *p,
                              struct msm_err *err)
{
    memset(p, 0, sizeof(*p));
    p->server = server;
    int rc = server ? downstream(proto, p, err) : upstream(proto, p, err);
    if (rc < 0) {
        msm_tls_params_deinit(p);
    }
    return rc;
}

void msm_tls_params_deinit(struct msm_tls_params *p)
{
    if (p->cipher_list != default_ciphers) {
        free(p->cipher_list);
    }
    if (p->curves != default_curves) {
        free(p->curves);
    }
    free(p->sigalgs);
    free(p->alpn);
    msm_name_unref(p->sni);
    for (int i = 0; i < p->n_certs; i++) {
        msm_tls_cert_deinit(&p->certs[i]);
    }
    free(p->certs);
    msm_secret_provider_unref(p->cert_provider);
    msm_tls_validation_deinit(&p->val);
    msm_secret_provider_unref(p->val_provider);
    memset(p, 0, sizeof(*p));
}
