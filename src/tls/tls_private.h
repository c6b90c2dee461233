#pragma once
/* Internals shared by the files of src/tls. Not for use outside src/tls (and its unit tests). */
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/matcher.h"
#include "stats/stats.h"
#include "tls/secrets.h"
#include "tls/tls.h"

/* Envoy's ALL_SSL_STATS, under "<scope>ssl.". */
#define MSM_SSL_STATS(C, G, H)                                                                    \
    C(connection_error) C(handshake) C(session_reused) C(no_certificate) C(fail_verify_no_cert)   \
    C(fail_verify_error) C(fail_verify_san) C(fail_verify_cert_hash) C(ocsp_staple_failed)        \
    C(ocsp_staple_omitted) C(ocsp_staple_responses) C(ocsp_staple_requests)                       \
    C(was_key_usage_invalid)
MSM_STATS_STRUCT(msm_ssl_stats, MSM_SSL_STATS);
MSM_STATS_INIT_FN(msm_ssl_stats, MSM_SSL_STATS)

/* Envoy's ALL_SSL_SOCKET_FACTORY_STATS, under "<scope>{client,server}_ssl_socket_factory.". */
#define MSM_SSL_FACTORY_STATS(C, G, H)                                                            \
    C(ssl_context_update_by_sds) C(upstream_context_secrets_not_ready)                            \
    C(downstream_context_secrets_not_ready)
MSM_STATS_STRUCT(msm_ssl_factory_stats, MSM_SSL_FACTORY_STATS);
MSM_STATS_INIT_FN(msm_ssl_factory_stats, MSM_SSL_FACTORY_STATS)

/* A counter per negotiated value ("ssl.versions.TLSv1.3"). Created when the factory is built
 * (workers never create stats): the values a context can negotiate, plus Envoy's fallback
 * names (unknown_ssl_version...). */
struct msm_named_stat {
    char *name;
    struct msm_stat *s;
};

struct msm_named_stats {
    struct msm_named_stat *v;
    int n;
    struct msm_stat *fallback;
};

/* Stats of one factory, shared by its contexts (refcounted: a context may outlive its
 * factory while its connections live). */
struct msm_tls_stats {
    atomic_int refs;
    struct msm_ssl_stats ssl;
    struct msm_ssl_factory_stats fac;
    struct msm_named_stats versions, ciphers, curves, sigalgs;
};

/* Subject alt name matching: SAN type (0 = the legacy match_subject_alt_names: DNS, URI, email
 * or IP) and a string matcher. DNS SANs follow DNS semantics for exact matchers (wildcards). */
enum msm_san_type {
    MSM_SAN_ANY = 0,
    MSM_SAN_EMAIL = 1,
    MSM_SAN_DNS = 2,
    MSM_SAN_URI = 3,
    MSM_SAN_IP = 4,
};

struct msm_san_matcher {
    enum msm_san_type type;
    struct msm_str_matcher m;
};

/* A validation context's SAN matchers once built: immutable, refcounted and shared by content
 * (Istio's 10k clusters name a few dozen service accounts, and each context has its factory's
 * matchers again). tls_config.c, msm_tls_validation_*. */
struct msm_san_set {
    int refs; /* under the sets' mutex */
    char *key; /* the content, the sets' map key */
    int n;
    struct msm_san_matcher m[];
};

/* A certificate validation context (inline, static/SDS secret, or both merged). */
struct msm_tls_validation {
    char *trusted_ca; /* PEM bundle (certificates and CRLs), NULL = none */
    char *trusted_ca_path; /* its file, NULL when inline (/certs shows "<inline>") */
    char *crl;
    bool system_roots;
    struct msm_san_matcher *sans; /* <san_set>'s matchers (only while parsing: our own array) */
    int n_sans;
    struct msm_san_set *san_set; /* one reference, NULL when none */
    uint8_t (*hashes)[32];
    int n_hashes;
    uint8_t (*spkis)[32];
    int n_spkis;
    bool allow_expired;
    bool accept_untrusted;
    bool only_leaf_crl;
    uint32_t max_depth; /* 0 = OpenSSL's default */
};

/* A certificate and its key (PEM). */
struct msm_tls_cert {
    char *chain;
    char *chain_path; /* its file, NULL when inline (/certs shows "<inline>") */
    char *key;
    char *password; /* NULL = none */
};

enum msm_secret_type {
    MSM_SECRET_TLS_CERTIFICATE = 0,
    MSM_SECRET_VALIDATION_CONTEXT = 1,
    MSM_SECRET_OTHER = 2, /* generic secrets, session ticket keys: stored, not used */
};

/* A parsed secret: immutable. */
struct msm_secret {
    enum msm_secret_type type;
    struct msm_tls_cert cert;
    struct msm_tls_validation val;
};

struct msm_tls_factory;

/* A factory waiting on a provider. */
struct msm_secret_watch {
    struct msm_secret_watch *next, *prev; /* doubly linked: removal is O(1) with 10k watchers */
    struct msm_tls_factory *f;
};

/* One secret by (name, config source); static when <source> is NULL. Refcounted: the manager
 * holds one reference, each factory using it one more. <cur>, <version>, <proto> and
 * <timed_out> change on the main thread only; <watch> is guarded by msm_tls_lock. */
struct msm_secret_provider {
    atomic_int refs;
    char *name;
    uint8_t *source; /* packed envoy.config.core.v3.ConfigSource */
    size_t source_len;
    struct msm_secret *cur; /* NULL until delivered */
    char *version;
    double last_updated;
    uint8_t *proto; /* accepted Secret, packed (config_dump) */
    size_t proto_len;
    bool timed_out;   /* initial_fetch_timeout passed without the secret */
    bool subscribed;  /* part of the source's subscription set */
    struct msm_secret_watch *watch;
};

/* Everything a factory needs to build contexts, from the proto. */
struct msm_tls_params {
    bool server;
    int min_version, max_version; /* TLS1_2_VERSION... */
    char *cipher_list;            /* OpenSSL syntax, TLS 1.2 and below */
    char *curves;
    char *sigalgs; /* NULL = default */
    uint8_t *alpn; /* wire format */
    size_t alpn_len;
    char *sni;     /* client; interned (xds/strmap.h), as the contexts' */
    bool require_client_cert, require_sni, no_tickets, no_session_cache;
    uint32_t session_timeout_s; /* 0 = default */
    uint32_t max_session_keys;  /* client: sessions kept for resumption (0 = none) */
    struct msm_tls_cert *certs; /* inline tls_certificates */
    int n_certs;
    struct msm_secret_provider *cert_provider; /* tls_certificate_sds_secret_configs[0] */
    bool has_validation;                      /* some validation context is configured */
    struct msm_tls_validation val;            /* inline, or the combined default */
    struct msm_secret_provider *val_provider; /* validation_context(_sds_secret_config) */
};

/* A built context: the SSL_CTX plus what verification and stats need. Immutable. */
struct msm_tls_ctx {
    atomic_int refs;
    SSL_CTX *ssl;
    bool server;
    char *sni; /* interned: its factory's */
    struct msm_tls_validation val; /* merged */
    bool has_ca;
    int verify_mode;
    struct msm_tls_stats *stats;
    /* Client contexts with the same TLS parameters, certificate and trust share one SSL_CTX
     * (<ssl> then belongs to <shared>); what differs per cluster (SNI, SAN matchers, stats)
     * stays here and the verify callback finds it through the connection's SSL. */
    struct msm_tls_shared_ssl *shared;
    /* Client session resumption (Envoy's max_session_keys): the newest sessions of
     * connections made from this context whose server passed full verification, newest
     * first, at most <max_sessions>; any worker, under <sess_mu>. A new context (SDS
     * rotation) starts empty. */
    pthread_mutex_t sess_mu;
    uint32_t max_sessions;
    struct msm_tls_session *sessions;
    uint32_t n_sessions;
};

struct msm_tls_session {
    SSL_SESSION *s;
    char *sni; /* the server name it was made with, NULL = none */
};

struct msm_tls_factory {
    atomic_int refs;
    char *owner; /* "listener 'x' filter chain 'y'", "cluster 'z'" for logs */
    struct msm_tls_params p;
    struct msm_tls_stats *stats;
    pthread_mutex_t mu; /* guards cur */
    struct msm_tls_ctx *cur;
    struct msm_secret_watch *watch[2]; /* its nodes in the cert / validation providers' lists */
    struct msm_tls_factory *all_next, *all_prev; /* every live factory (msm_tls_lock), /certs */
};

/* Guards every provider's watch list and the list of live factories (factories may be freed on
 * any thread). */
extern pthread_mutex_t msm_tls_lock;
extern struct msm_tls_factory *msm_tls_factories;

/* tls_config.c */
int msm_tls_params_from_proto(const void *ctx_proto, bool server, struct msm_tls_params *p,
                              struct msm_err *err);
void msm_tls_params_deinit(struct msm_tls_params *p);
int msm_tls_validation_from_proto(const void *cvc_proto, struct msm_tls_validation *v,
                                  struct msm_err *err);
void msm_tls_validation_copy(struct msm_tls_validation *dst, const struct msm_tls_validation *src);
/* Envoy's MergeFrom of the dynamic part into the default part of a combined context. */
void msm_tls_validation_merge(struct msm_tls_validation *dst, const struct msm_tls_validation *src);
void msm_tls_validation_deinit(struct msm_tls_validation *v);
/* Distinct SAN matcher sets alive (tests). */
size_t msm_tls_san_sets(void);
int msm_tls_cert_from_proto(const void *tls_cert_proto, struct msm_tls_cert *c,
                            struct msm_err *err);
void msm_tls_cert_deinit(struct msm_tls_cert *c);
/* A Secret proto into a parsed secret, checked (PEM parses, key matches). */
struct msm_secret *msm_secret_from_proto(const void *secret_proto, struct msm_err *err);
void msm_secret_free(struct msm_secret *s);
/* Does the certificate <x509> (X509 *) satisfy one of <m>? */
bool msm_tls_san_match(const struct msm_san_matcher *m, int n, void *x509);
/* Envoy's Utility::dnsNameMatch: <name> against a SAN <pattern> ("*.example.com"). */
bool msm_tls_dns_match(const char *name, const char *pattern, size_t plen);

/* tls_context.c */
struct msm_tls_stats *msm_tls_stats_new(const char *scope, bool server,
                                        const struct msm_tls_params *p);
void msm_tls_stats_unref(struct msm_tls_stats *s);
void msm_named_inc(const struct msm_named_stats *ns, const char *value);
/* Build a context from <p> with certificate <cert> and validation <val> (either may be NULL).
 * NULL with <err> on failure. */
struct msm_tls_ctx *msm_tls_ctx_new(const struct msm_tls_params *p, const struct msm_tls_cert *cert,
                                    const struct msm_tls_validation *val,
                                    struct msm_tls_stats *stats, struct msm_err *err);
void msm_tls_ctx_unref(struct msm_tls_ctx *c);
/* Client resumption: offer the newest stored session for <sni> on <ssl> (TLS 1.3 sessions are
 * single use: taken out of the store). Any thread. */
void msm_tls_ctx_offer_session(struct msm_tls_ctx *t, SSL *ssl, const char *sni);
/* Store <sess> (the caller's reference moves to the store) made with <sni>; false when not
 * stored (max_session_keys 0, or not resumable). Any thread. */
bool msm_tls_ctx_store_session(struct msm_tls_ctx *t, SSL_SESSION *sess, const char *sni);
/* Check cipher list, curves and signature algorithms without building a context. */
int msm_tls_check_params(const struct msm_tls_params *p, struct msm_err *err);
/* Parse PEM material; the key must match the first certificate. */
int msm_tls_check_cert(const struct msm_tls_cert *c, struct msm_err *err);
int msm_tls_check_ca(const char *pem, const char *what, struct msm_err *err);

/* secrets.c */
/* The provider for <name> on config source <src> (an envoy.config.core.v3.ConfigSource, NULL
 * = static secret); a new reference. Static: MSM_EINVAL with <err> when unknown. */
int msm_secrets_provider(struct msm_secret_manager *sm, const char *name, const void *src,
                         struct msm_secret_provider **out, struct msm_err *err);
void msm_secret_provider_unref(struct msm_secret_provider *p);
struct msm_secret_watch *msm_secret_watch_add(struct msm_secret_provider *p,
                                              struct msm_tls_factory *f);
void msm_secret_watch_remove(struct msm_secret_provider *p, struct msm_secret_watch *w);

/* tls_socket.c */
/* The verify callback's verdict for the connection of <ssl>: chain verified against a CA. */
void msm_tls_note_validated(SSL *ssl, bool validated);
/* The verify callback accepted the peer without leniency (accept_untrusted): a session of
 * this connection may be stored for resumption. */
void msm_tls_note_verified(SSL *ssl);
/* SSL_CTX_sess_set_new_cb of client contexts: store the session in the connection's context
 * when its server was verified. */
int msm_tls_new_session_cb(SSL *ssl, SSL_SESSION *sess);
/* The context the connection of <ssl> was made from (NULL if it is not one of ours). */
struct msm_tls_ctx *msm_tls_ssl_ctx(SSL *ssl);
/* The host name the connection of <ssl> must present instead of the context's SAN matchers
 * (msm_tls_transport_new_host), or NULL. */
const char *msm_tls_ssl_verify_host(SSL *ssl);
/* (Re)build the factory's context from its current secrets. 1 when a new context was
 * installed, 0 when secrets are missing, MSM_EINVAL with <err> when building failed (the
 * previous context stays). Main thread. */
int msm_tls_factory_rebuild(struct msm_tls_factory *f, struct msm_err *err);
