#pragma once
/* The HTTP side of a cluster: which protocol the router speaks to it and with which limits
 * (typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
 * and the deprecated cluster-level fields), the request circuit breakers (max_requests,
 * max_pending_requests, max_retries) and Envoy's upstream_rq_* cluster stats.
 *
 * Config (struct msm_cluster_http_cfg) is immutable, built with the cluster config. The
 * counters live in the cluster's shared part and are updated by workers (atomics). */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "http/codec.h"
#include "stats/stats.h"

struct msm_cluster;
struct msm_cluster_cfg;
struct msm_cluster_shared;

enum msm_upstream_http {
    MSM_UPSTREAM_HTTP1 = 0,
    MSM_UPSTREAM_HTTP2 = 1,
    MSM_UPSTREAM_HTTP_DOWNSTREAM = 2, /* use_downstream_protocol_config / USE_DOWNSTREAM_PROTOCOL */
    MSM_UPSTREAM_AUTO = 3, /* auto_config: ALPN picks per connection (http/pool.c); no TLS: 1.1 */
};

struct msm_cluster_http_cfg {
    enum msm_upstream_http proto;
    struct msm_hcodec_opts h1, h2;
    uint32_t idle_timeout_ms;             /* common_http_protocol_options.idle_timeout, 1 h */
    uint32_t max_requests_per_connection; /* 0 = unlimited */
    uint32_t max_connection_duration_ms;
    uint32_t max_stream_duration_ms;      /* per upstream request (router.c), 0 = none */
    /* upstream_http_protocol_options: TLS to the request's host (http/pool.c) */
    bool auto_sni, auto_san_validation;
};

/* The protocol a request from a <down> downstream asks the cluster's pools for: HTTP/2 when
 * the cluster says so or follows an HTTP/2 downstream, else HTTP/1.1 (auto_config too: over
 * TLS its pool negotiates per connection, msm_pool_alpn_mixed). */
static inline enum msm_http_proto msm_cluster_http_request_proto(
    const struct msm_cluster_http_cfg *hc, enum msm_http_proto down)
{
    return hc->proto == MSM_UPSTREAM_HTTP2 ||
                   (hc->proto == MSM_UPSTREAM_HTTP_DOWNSTREAM && down == MSM_HTTP_2)
               ? MSM_HTTP_2
               : MSM_HTTP_11;
}

#define MSM_CLUSTER_HTTP_STATS(C, G, H)                                                           \
    C(upstream_cx_http1_total) C(upstream_cx_http2_total) C(upstream_cx_idle_timeout)             \
    C(upstream_cx_max_requests) C(upstream_cx_max_duration_reached) C(upstream_cx_protocol_error) \
    C(upstream_cx_destroy_with_active_rq) C(upstream_cx_destroy_local_with_active_rq)             \
    C(upstream_cx_destroy_remote_with_active_rq) C(upstream_cx_pool_overflow)                     \
    C(upstream_rq_completed) C(upstream_rq_pending_total) G(upstream_rq_pending_active)           \
    C(upstream_rq_pending_overflow) C(upstream_rq_pending_failure_eject) C(upstream_rq_cancelled) \
    C(upstream_rq_maintenance_mode) C(upstream_rq_timeout) C(upstream_rq_per_try_timeout)         \
    C(upstream_rq_per_try_idle_timeout) C(upstream_rq_rx_reset) C(upstream_rq_tx_reset)           \
    C(upstream_rq_retry) C(upstream_rq_retry_success) C(upstream_rq_retry_overflow)               \
    C(upstream_rq_retry_limit_exceeded) C(upstream_rq_retry_backoff_exponential)                  \
    C(upstream_rq_retry_backoff_ratelimited) C(upstream_rq_max_duration_reached)                  \
    H(upstream_rq_time) C(upstream_rq_1xx) C(upstream_rq_2xx) C(upstream_rq_3xx)                  \
    C(upstream_rq_4xx) C(upstream_rq_5xx) C(upstream_internal_redirect_failed_total)              \
    C(upstream_internal_redirect_succeeded_total)
MSM_STATS_STRUCT(msm_cluster_http_stats, MSM_CLUSTER_HTTP_STATS);
MSM_STATS_INIT_FN(msm_cluster_http_stats, MSM_CLUSTER_HTTP_STATS)

/* Per cluster name, in struct msm_cluster_shared. */
struct msm_cluster_http_shared {
    struct msm_cluster_http_stats stats;
    /* [1000]: upstream_rq_<code>, the array and each counter made on first use */
    _Atomic(_Atomic(struct msm_stat *) *) rq_code;
    char *stat_name;                     /* interned (xds/strmap.h) */
    atomic_uint rq_active, rq_pending, retries_active;
    /* cluster.<name>.http1.* / .http2.*: the upstream codecs' stats, made by the first
     * connection of that protocol (most clusters never have one) */
    struct msm_stats_store *store;
    _Atomic(struct msm_http1_stats *) h1stats;
    _Atomic(struct msm_http2_stats *) h2stats;
};

/* Parse the cluster's HTTP options into c->http (NULL when the cluster has none: HTTP/1.1
 * with defaults). MSM_EINVAL with <err> naming the field. <cluster_proto> is an
 * envoy.config.cluster.v3.Cluster. */
int msm_cluster_http_from_proto(const void *cluster_proto, struct msm_cluster_cfg *c,
                                struct msm_err *err);
void msm_cluster_http_cfg_free(struct msm_cluster_http_cfg *h);
/* The defaults (HTTP/1.1) for clusters without HTTP options. */
const struct msm_cluster_http_cfg *msm_cluster_http_cfg_of(const struct msm_cluster_cfg *c);

void msm_cluster_http_shared_init(struct msm_cluster_http_shared *h, const char *stat_name,
                                  struct msm_stats_store *st);
void msm_cluster_http_shared_deinit(struct msm_cluster_http_shared *h);

/* The cluster's upstream codec stats (any thread): created on first use, then shared by every
 * connection of every worker to this cluster. */
struct msm_http1_stats *msm_cluster_http1_stats(struct msm_cluster *c);
struct msm_http2_stats *msm_cluster_http2_stats(struct msm_cluster *c);

/* Circuit breakers (any thread). reserve returns false and counts the overflow when the
 * threshold is reached; every successful reserve needs one release. */
bool msm_cluster_rq_reserve(struct msm_cluster *c);
void msm_cluster_rq_release(struct msm_cluster *c);
bool msm_cluster_pending_reserve(struct msm_cluster *c);
void msm_cluster_pending_release(struct msm_cluster *c);
bool msm_cluster_retry_reserve(struct msm_cluster *c);
void msm_cluster_retry_release(struct msm_cluster *c);
/* Count a response status on the cluster: upstream_rq_<code>, upstream_rq_<class>xx,
 * upstream_rq_completed. Creates the per-code counter on first use (any thread). */
void msm_cluster_count_status(struct msm_cluster *c, int status);
