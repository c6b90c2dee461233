#pragma once
/* Test certificates made at run time with OpenSSL: a CA, and leaves with chosen SANs (P-256
 * keys, what Envoy accepts besides RSA-2048). PEM strings are malloc'ed. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct test_cert {
    EVP_PKEY *key;
    X509 *x509;
    char *key_pem, *cert_pem;
};

static char *test_bio_str(BIO *b)
{
    char *p = NULL;
    long l = BIO_get_mem_data(b, &p);
    char *s = malloc((size_t)l + 1);
    memcpy(s, p, (size_t)l);
    s[l] = '\0';
    BIO_free(b);
    return s;
}

static void test_add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (e) {
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
}

/* A certificate for <cn> with SANs <san> ("URI:spiffe://...,DNS:x", NULL = none), signed by
 * <issuer> (NULL = self-signed); a CA when <ca>. */
static struct test_cert test_cert_new(const struct test_cert *issuer, const char *cn,
                                      const char *san, bool ca)
{
    static long serial = 1;
    struct test_cert c = {0};
    c.key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, c.key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer->x509) : n);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer->x509 : x, x, NULL, NULL, 0);
    if (ca) {
        test_add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE");
        test_add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        test_add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment");
        test_add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
    }
    if (san) {
        test_add_ext(x, &ctx, NID_subject_alt_name, san);
    }
    X509_sign(x, issuer ? issuer->key : c.key, EVP_sha256());
    c.x509 = x;
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    c.cert_pem = test_bio_str(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, c.key, NULL, NULL, 0, NULL, NULL);
    c.key_pem = test_bio_str(b);
    return c;
}

static void test_cert_free(struct test_cert *c)
{
    EVP_PKEY_free(c->key);
    X509_free(c->x509);
    free(c->key_pem);
    free(c->cert_pem);
    memset(c, 0, sizeof(*c));
}
