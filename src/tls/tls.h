#pragma once
/* TLS transport sockets (envoy.transport_sockets.tls) on OpenSSL 3.
 *
 * Object model:
 * - struct msm_tls_factory: one per transport_socket in config (a listener filter chain's
 *   DownstreamTlsContext, a cluster's or transport_socket_match's UpstreamTlsContext). Built
 *   on the main thread from the proto; immutable except for its current context; refcounted
 *   (the last unref may run on any thread). Stats live under the owner's scope:
 *   "<scope>ssl.*" and "<scope>{server,client}_ssl_socket_factory.*", scope being
 *   "listener.<stat prefix>." or "cluster.<stat name>.".
 * - struct msm_tls_ctx (private): one SSL_CTX built from the factory's parameters and the
 *   certificate / trust material of its secrets (inline, static or SDS). Immutable and
 *   refcounted; every connection keeps the context it started with. When a secret rotates, the
 *   factory builds a new context and new connections use it.
 * - A factory whose secrets have not all arrived has no context: it is not ready, and the
 *   cluster or listener that uses it keeps warming (see msm_tls_factory_warm). A connection
 *   made through a factory without context fails its handshake and is counted in
 *   <scope>{upstream,downstream}_context_secrets_not_ready.
 *
 * Threads: factories are built and rebuilt on the main thread; msm_tls_transport_new runs on
 * workers (it takes the current context under a short lock).
 */
#include <stdbool.h>

#include "common/err.h"
#include "net/transport.h"

struct msm_tls_factory;

/* From an envoy.config.core.v3.TransportSocket (<ts>, may be NULL). raw_buffer (or NULL, or no
 * typed_config with the raw_buffer name) gives 0 and *out = NULL; a TLS context gives 0 and a
 * new factory in *out (<server>: DownstreamTlsContext expected, else UpstreamTlsContext).
 * <scope> is the stat scope ("listener.0.0.0.0_15006." / "cluster.foo."), <owner> names the
 * user in logs. Anything invalid or unsupported: MSM_EINVAL with <err> naming the field.
 * Main thread. */
int msm_tls_factory_from_proto(const void *ts, bool server, const char *scope,
                               const char *owner, struct msm_tls_factory **out,
                               struct msm_err *err);
struct msm_tls_factory *msm_tls_factory_ref(struct msm_tls_factory *f);
void msm_tls_factory_unref(struct msm_tls_factory *f);
/* A context is built: every secret it needs arrived. Any thread. */
bool msm_tls_factory_ready(struct msm_tls_factory *f);
/* Ready, or every missing SDS secret passed its initial_fetch_timeout: the owner may stop
 * warming (Envoy's init target). Main thread. */
bool msm_tls_factory_warm(struct msm_tls_factory *f);
/* "server"/"client" plus the secret names it waits for, for logs. */
void msm_tls_factory_describe(struct msm_tls_factory *f, char *out, size_t n);

/* A TLS transport for a new connection (worker thread); install it with
 * msm_conn_set_transport. Never NULL. */
struct msm_transport *msm_tls_transport_new(struct msm_tls_factory *f);
/* The same for a client connection that offers <alpn> (wire format: length-prefixed names,
 * <len> bytes) instead of the context's alpn_protocols (Envoy's application protocol override,
 * set by istio.alpn). len 0: the context's list. */
struct msm_transport *msm_tls_transport_new_alpn(struct msm_tls_factory *f, const uint8_t *alpn,
                                                 size_t len);
/* The same for one upstream host name (Envoy's auto_sni / auto_san_validation, from the
 * request's authority): <sni> replaces the context's SNI, <verify_host> its SAN matchers (the
 * peer certificate must name that host); either may be NULL. Sessions are kept per host, so
 * one verified for a host never resumes for another. */
struct msm_transport *msm_tls_transport_new_host(struct msm_tls_factory *f, const uint8_t *alpn,
                                                 size_t len, const char *sni,
                                                 const char *verify_host);
/* The context sets alpn_protocols (a non-empty list): connection pools offer their default
 * list (Envoy's ALPN fallback) only when it does not. Any thread. */
bool msm_tls_factory_has_alpn(const struct msm_tls_factory *f);

/* x-forwarded-client-cert material of a TLS connection, from its msm_conn_tls_info() (the
 * connection's worker only; computed on first use, cached with the connection, valid while it
 * lives). NULL / 0 when the peer sent no certificate.
 * - the lower-case hex SHA-256 of the peer certificate (DER);
 * - the peer certificate, or with <chain> every certificate the peer sent (leaf first), in PEM,
 *   URL-encoded as Envoy does ('\n', ' ', '+', '/', '=' escaped);
 * - the URI SANs of our own certificate. */
const char *msm_tls_peer_cert_sha256(const struct msm_tls_info *in);
const char *msm_tls_peer_cert_pem(const struct msm_tls_info *in, bool chain);
int msm_tls_local_uri_sans(const struct msm_tls_info *in, const char *const **out);
