#pragma once
/* Request mirroring (RouteAction.request_mirror_policies): Envoy's shadow writer, streaming as
 * Envoy does by default since envoy.reloadable_features.streaming_shadow (1.33).
 *
 * On the request headers (msm_shadow_begin) each policy's runtime fraction is drawn and its
 * cluster named (literally or by the first value of cluster_header; a header that is missing or
 * empty skips the policy). A cluster missing then (a header naming no cluster, a CDS removal)
 * skips the copy, counted in http.<stat_prefix>.shadow_no_cluster. Each other copy leaves at
 * once for its cluster with ":authority" suffixed "-shadow" (unless
 * disable_shadow_host_suffix_append): a request without body is sent whole; otherwise the copy
 * stays attached and gets each body chunk (msm_shadow_data) and the trailers
 * (msm_shadow_trailers) as they arrive, and lives on its own once the request is complete.
 *
 * A copy never slows the main request: body its upstream cannot take yet (pool still
 * connecting, codec above its watermark) is held per copy up to the request buffer limit (the
 * one Envoy gives a shadow stream: the route's or listener's, at least 1 byte); past it the
 * copy is reset, counted in the main cluster's retry_or_shadow_abandoned. (Envoy instead
 * pauses reading the client while a shadow stream is above its watermark.) When the main
 * request goes away before it is complete (client reset, the response ended first, a local
 * reply), the copies still attached are reset (msm_shadow_cancel), as Envoy cancels its shadow
 * streams in the router's onDestroy.
 *
 * A copy's response is read and discarded; the route timeout, started when the copy's request
 * is complete, bounds it; nothing a mirror does reaches the main request or its client. A copy
 * counts on its cluster like any upstream request (upstream_rq_total, upstream_rq_<code>,
 * upstream_rq_time, upstream_rq_timeout, upstream_rq_tx_reset, circuit breakers, outlier
 * detection). No retries.
 *
 * Worker thread only. Copies in flight hang off the worker's loop (msm_loop_local) and are
 * dropped when the loop goes away. */
#include <stdbool.h>
#include <stdint.h>

#include "stats/stats.h"

struct msm_buf;
struct msm_cluster;
struct msm_hdrs;
struct msm_http_stream;
struct msm_mirror_policies;
struct msm_shadow;

/* Mirroring stats on the connection manager's scope ("http.<stat_prefix>."). */
#define MSM_SHADOW_STATS(C, G, H) C(shadow_no_cluster)
MSM_STATS_STRUCT(msm_shadow_stats, MSM_SHADOW_STATS);
MSM_STATS_INIT_FN(msm_shadow_stats, MSM_SHADOW_STATS)

/* Start mirroring a request under policies <mp> (NULL: none) on stream <s>. <down> are the
 * request headers as received (cluster_header lookups), <up> the headers the router sends
 * upstream (copied); <st> counts (borrowed: the router config's); <main> (referenced) counts
 * abandoned copies; <timeout_ms> (0 = none) bounds each copy once its request is complete.
 * <end_stream>: the request has no body, the copies leave whole. Returns the attached copies,
 * NULL when none (no policy fired, none could start, <end_stream>, upgrades and CONNECT). */
struct msm_shadow *msm_shadow_begin(const struct msm_mirror_policies *mp,
                                    const struct msm_hdrs *down, const struct msm_hdrs *up,
                                    const struct msm_shadow_stats *st, struct msm_http_stream *s,
                                    struct msm_cluster *main, uint32_t timeout_ms, bool end_stream);
/* Request body <data> arrived (copied, left in place); <end_stream> completes the request and
 * consumes *<sh>. *<sh> is also cleared once no copy is attached any more. NULL-safe. */
void msm_shadow_data(struct msm_shadow **sh, const struct msm_buf *data, bool end_stream);
/* The trailers end the request: forwarded to every attached copy; *<sh> is consumed. */
void msm_shadow_trailers(struct msm_shadow **sh, const struct msm_hdrs *t);
/* The main request went away before it was complete: attached copies are reset. NULL-safe. */
void msm_shadow_cancel(struct msm_shadow **sh);

/* <host> with Envoy's "-shadow" suffix before the port ("a:80" -> "a-shadow:80", "[::1]" ->
 * "[::1]-shadow"). Returns a new string. */
char *msm_shadow_host(const char *host);
