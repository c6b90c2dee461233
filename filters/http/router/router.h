#pragma once
/* envoy.filters.http.router: the terminal HTTP filter. Picks the route's cluster (single,
 * weighted, from a header), a host (load balancer, previous-hosts retry predicate), an upstream
 * connection pool (src/http/pool.h; HTTP/1.1 or HTTP/2 by the cluster's protocol options),
 * forwards the request and streams the response back, with Envoy's timeouts (route timeout,
 * per-try timeout), retries (retry_on, num_retries, retriable status codes, backoff, circuit
 * breaker max_retries), redirects, direct responses, header rewriting, x-envoy-* request and
 * response headers, and the upstream_rq_* / http.<prefix>.* stats.
 *
 * Files: config.c (Router proto), router.c (per request), shadow.c (request mirroring),
 * upgrade.c (upgrades and CONNECT: which upstream, when the tunnel is up). */
#include <stdbool.h>

#include "filter/http.h"
#include "filters/http/router/shadow.h"
#include "stats/stats.h"

/* Router stats on the connection manager's scope ("http.<stat_prefix>."). */
#define MSM_ROUTER_STATS(C, G, H)                                                                 \
    C(no_route) C(no_cluster) C(rq_redirect) C(rq_direct_response) C(rq_total)                    \
    C(rq_reset_after_downstream_response_started) C(passthrough_internal_redirect_bad_location)   \
    C(passthrough_internal_redirect_unsafe_scheme) C(passthrough_internal_redirect_too_many_redirects) \
    C(passthrough_internal_redirect_no_route) C(passthrough_internal_redirect_predicate)
MSM_STATS_STRUCT(msm_router_stats, MSM_ROUTER_STATS);
MSM_STATS_INIT_FN(msm_router_stats, MSM_ROUTER_STATS)

struct msm_router_config {
    bool suppress_envoy_headers;
    bool respect_expected_rq_timeout;
    char **strict_check_headers;
    int n_strict_check_headers;
    struct msm_router_stats stats;
    struct msm_shadow_stats shadow_stats;
};

extern const struct msm_http_filter_ops msm_router_ops;

/* Per-request entry points (router.c). */
void *msm_router_filter_new(void *config, struct msm_http_stream *s);
enum msm_hf_status msm_router_decode_headers(void *f, struct msm_hdrs *h, bool end_stream);
enum msm_hf_status msm_router_decode_data(void *f, struct msm_buf *data, bool end_stream);
enum msm_hf_status msm_router_decode_trailers(void *f, struct msm_hdrs *t);
void msm_router_on_destroy(void *f);
void msm_router_on_watermark(void *f, bool above);
void msm_router_filter_free(void *f);

