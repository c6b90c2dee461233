/* /certs: the certificates of every TLS context in use, as envoy.admin.v3.Certificates. */
#include "tls/tls_certs.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tls/tls_private.h"

/* The first certificate of a PEM text (NULL when none parses). */
static X509 *first_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    if (!b) {
        return NULL;
    }
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    ERR_clear_error();
    return x;
}

/* An ASN1_TIME as seconds since the epoch (false when it cannot be read). */
static bool asn1_epoch(const ASN1_TIME *t, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
        return false;
    }
    *out = timegm(&tm);
    return true;
}

static json_t *timestamp(time_t t)
{
    struct tm tm;
    char buf[40];
    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

/* Envoy's serial number: lowercase hex of the integer (whole bytes). */
static json_t *serial(X509 *x)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    BN_free(bn);
    if (!hex) {
        return json_string("");
    }
    for (char *p = hex; *p; p++) {
        if (*p >= 'A' && *p <= 'F') {
            *p = (char)(*p - 'A' + 'a');
        }
    }
    json_t *j = json_string(hex);
    OPENSSL_free(hex);
    return j;
}

static json_t *sans(X509 *x)
{
    json_t *arr = json_array();
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const char *key = NULL;
        char ip[INET6_ADDRSTRLEN];
        json_t *val = NULL;
        if (g->type == GEN_URI || g->type == GEN_DNS) {
            const ASN1_STRING *s = g->type == GEN_URI ? g->d.uniformResourceIdentifier
                                                      : g->d.dNSName;
            key = g->type == GEN_URI ? "uri" : "dns";
            val = json_stringn((const char *)ASN1_STRING_get0_data(s),
                               (size_t)ASN1_STRING_length(s));
        } else if (g->type == GEN_IPADD) {
            int n = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *b = ASN1_STRING_get0_data(g->d.iPAddress);
            if ((n == 4 || n == 16) && inet_ntop(n == 4 ? AF_INET : AF_INET6, b, ip, sizeof(ip))) {
                key = "ip_address";
                val = json_string(ip);
            }
        }
        if (key && val) {
            json_t *o = json_object();
            json_object_set_new(o, key, val);
            json_array_append_new(arr, o);
        } else {
            json_decref(val);
        }
    }
    GENERAL_NAMES_free(names);
    return arr;
}

/* envoy.admin.v3.CertificateDetails of the first certificate in <pem> (NULL if none). */
static json_t *details(const char *pem, const char *path, time_t now)
{
    X509 *x = pem ? first_cert(pem) : NULL;
    if (!x) {
        return NULL;
    }
    json_t *d = json_object();
    json_object_set_new(d, "path", json_string(path ? path : "<inline>"));
    json_object_set_new(d, "serial_number", serial(x));
    json_object_set_new(d, "subject_alt_names", sans(x));
    time_t from = 0, to = 0;
    bool have_from = asn1_epoch(X509_get0_notBefore(x), &from);
    bool have_to = asn1_epoch(X509_get0_notAfter(x), &to);
    /* uint64 in proto3 JSON: a string. Whole days left, 0 once expired. */
    long long days = have_to && to > now ? (long long)(to - now) / 86400 : 0;
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", days);
    json_object_set_new(d, "days_until_expiration", json_string(buf));
    if (have_from) {
        json_object_set_new(d, "valid_from", timestamp(from));
    }
    if (have_to) {
        json_object_set_new(d, "expiration_time", timestamp(to));
    }
    X509_free(x);
    return d;
}

/* The certificate and trust material the factory's current context was built from. */
static void factory_certs(const struct msm_tls_factory *f, json_t *out, time_t now)
{
    const struct msm_tls_params *p = &f->p;
    const struct msm_tls_cert *cert = p->n_certs ? &p->certs[0] : NULL;
    if (p->cert_provider) {
        const struct msm_secret *s = p->cert_provider->cur;
        cert = s && s->type == MSM_SECRET_TLS_CERTIFICATE ? &s->cert : NULL;
    }
    const char *ca = p->has_validation ? p->val.trusted_ca : NULL;
    const char *ca_path = p->has_validation ? p->val.trusted_ca_path : NULL;
    if (p->val_provider) {
        const struct msm_secret *s = p->val_provider->cur;
        if (s && s->type == MSM_SECRET_VALIDATION_CONTEXT && s->val.trusted_ca) {
            ca = s->val.trusted_ca;
            ca_path = s->val.trusted_ca_path;
        }
    }
    json_t *c = json_object();
    json_t *cas = json_array();
    json_t *chain = json_array();
    json_t *d = ca ? details(ca, ca_path, now) : NULL;
    if (d) {
        json_array_append_new(cas, d);
    }
    d = cert ? details(cert->chain, cert->chain_path, now) : NULL;
    if (d) {
        json_array_append_new(chain, d);
    }
    json_object_set_new(c, "ca_cert", cas);
    json_object_set_new(c, "cert_chain", chain);
    json_array_append_new(out, c);
}

void msm_tls_admin_certs(void *arg, json_t *certificates)
{
    (void)arg;
    time_t now = time(NULL);
    pthread_mutex_lock(&msm_tls_lock);
    /* The list is newest first; print in creation order. */
    struct msm_tls_factory *last = msm_tls_factories;
    while (last && last->all_next) {
        last = last->all_next;
    }
    for (struct msm_tls_factory *f = last; f; f = f->all_prev) {
        /* Like Envoy, only contexts that exist: a factory still waiting for its secrets has
         * none. */
        if (msm_tls_factory_ready(f)) {
            factory_certs(f, certificates, now);
        }
    }
    pthread_mutex_unlock(&msm_tls_lock);
}
