#pragma once
/* Upstream HTTP connection pools, one per (cluster, host address, protocol) per worker, after
 * Envoy's Http::ConnectionPool: HTTP/1.1 pools run one stream per connection and keep idle
 * connections for reuse; HTTP/2 pools multiplex streams on one connection up to the peer's
 * max concurrent streams and open another when it is full or draining (GOAWAY).
 *
 * A request for a stream is served at once when a connection has room (on_ready runs before
 * msm_pool_request returns), else it waits (max_pending_requests) for a connection being made
 * (max_connections). Connect failures fail every waiting request of the pool (the router
 * retries). Connections idle for the cluster's idle_timeout close; so do connections that
 * served max_requests_per_connection streams.
 *
 * Worker thread only. The pools of a worker live in a loop-local registry and are closed when
 * the worker's loop goes away. Cluster stats: upstream_cx_*, upstream_rq_pending_*. */
#include <stdbool.h>
#include <stdint.h>

#include "http/codec.h"

struct ev_loop;
struct msm_address;
struct msm_cluster;
struct msm_host;
struct msm_pool;
struct msm_pool_req;
struct msm_upconn;
struct msm_tls_info;

enum msm_pool_failure {
    MSM_POOL_CONNECT_FAILURE = 0,
    MSM_POOL_CONNECT_TIMEOUT = 1,
    MSM_POOL_OVERFLOW = 2,        /* max_pending_requests */
    MSM_POOL_CONNECTION_LOST = 3, /* closed before serving the request */
};

struct msm_pool_cbs {
    /* A connection can take the stream: open it with msm_upconn_new_stream now. */
    void (*on_ready)(void *ctx, struct msm_upconn *uc);
    /* No connection will come. <detail> is a static description ("connection refused"). */
    void (*on_failure)(void *ctx, enum msm_pool_failure f, const char *detail);
};

/* The pool for <host> of cluster <c> speaking <proto> on <loop>'s worker; created on first use.
 * Borrowed: valid until the loop goes away. */
struct msm_pool *msm_pool_get(struct ev_loop *loop, struct msm_cluster *c, struct msm_host *h,
                              enum msm_http_proto proto);
/* The same for connections whose TLS offers the ALPN list <alpn> (<n> names; istio.alpn's
 * override) instead of the cluster's alpn_protocols: a pool of its own, so connections made
 * with different lists are never shared. Plaintext connections ignore the list.
 * <host_name> (NULL: none): the request's host for a cluster with auto_sni or
 * auto_san_validation, whose TLS then sends it as SNI / checks the certificate against it; its
 * own pool too, so a connection only ever carries requests for the host it was verified for. */
struct msm_pool *msm_pool_get_alpn(struct ev_loop *loop, struct msm_cluster *c, struct msm_host *h,
                                   enum msm_http_proto proto, const char *const *alpn, int n,
                                   const char *host_name);
/* Tunnel pools (upgrades and CONNECT, Envoy's upgrade path): every stream gets a fresh
 * connection of its own, never reused, with half-close passed through both ways.
 * MSM_POOL_TUNNEL_HTTP1 runs an HTTP/1.1 client codec (the Upgrade or CONNECT request, then
 * opaque bytes after the 101 / 2xx); MSM_POOL_TUNNEL_TCP is a raw TCP leg for a CONNECT
 * terminated here (codec.h msm_tcp_tunnel_client_new: a 200 as soon as the leg is up). */
enum msm_pool_kind {
    MSM_POOL_PLAIN = 0,
    MSM_POOL_TUNNEL_HTTP1 = 1,
    MSM_POOL_TUNNEL_TCP = 2,
};
struct msm_pool *msm_pool_get_tunnel(struct ev_loop *loop, struct msm_cluster *c,
                                     struct msm_host *h, enum msm_pool_kind kind,
                                     const char *const *alpn, int n, const char *host_name);
/* The pools of <c> for <h> negotiate the protocol per connection (auto_config and the host's
 * connections use TLS; Envoy's mixed pool): the TLS offers the context's ALPN list, else an
 * istio.alpn override, else h2,http/1.1, and each handshake's pick sets the codec ("h2":
 * HTTP/2, multiplexed; anything else: HTTP/1.1). Requests wait until a connection is up; the
 * pool opens one connection for them all until a handshake picked HTTP/1.1, then one each. */
bool msm_pool_alpn_mixed(const struct msm_cluster *c, const struct msm_host *h);
/* Ask for a stream. Returns NULL when on_ready or on_failure already ran, else a handle that
 * stays valid until one of them runs or msm_pool_cancel is called. */
struct msm_pool_req *msm_pool_request(struct msm_pool *p, const struct msm_pool_cbs *cbs,
                                      void *ctx);
void msm_pool_cancel(struct msm_pool_req *r);
/* Open a stream on a ready connection (inside on_ready). Never NULL there. */
struct msm_hstream *msm_upconn_new_stream(struct msm_upconn *uc, const struct msm_hstream_cbs *cbs,
                                          void *ctx);
/* The stream about to be opened on <uc> (inside on_ready) is an upgrade or CONNECT: on an
 * HTTP/1.1 connection of a mixed pool it takes the connection for good, as a tunnel pool's
 * (half-close passed through, closed after it); elsewhere nothing changes. */
void msm_upconn_claim_tunnel(struct msm_upconn *uc);
/* The peer address of the connection, "ip:port". */
const char *msm_upconn_peer(const struct msm_upconn *uc);
/* The connection's TLS details (net/transport.h), NULL when it is plaintext. */
const struct msm_tls_info *msm_upconn_tls_info(const struct msm_upconn *uc);
/* The connection's local address (%UPSTREAM_LOCAL_ADDRESS%), NULL when unknown. */
const struct msm_address *msm_upconn_local_address(const struct msm_upconn *uc);
/* The stream's owner read-disables the connection (HTTP/1 back-pressure). */
void msm_upconn_read_disable(struct msm_upconn *uc, bool disable);
/* Number of pools and connections on <loop> (tests). */
int msm_pool_count_conns(struct ev_loop *loop);
