#pragma once
/* Request mirroring (RouteAction.request_mirror_policies): Envoy's shadow writer.
 *
 * The router opens one struct msm_shadow per request whose route has mirror policies
 * (msm_shadow_begin, on the request headers). Each policy's runtime fraction is drawn then and
 * its cluster named (literally or by the first value of cluster_header; a header that is missing
 * or empty skips the policy). The request body and trailers are copied as they arrive (the
 * router forwards its own); a body beyond the request buffer limit cancels the mirrors, counted
 * in the main cluster's retry_or_shadow_abandoned, as Envoy does.
 *
 * When the request is complete and the main request is still under way (msm_shadow_end), one
 * copy per policy leaves for its cluster with ":authority" suffixed "-shadow" (unless
 * disable_shadow_host_suffix_append), and from then on it lives on its own: fire and forget.
 * Its response is read and discarded; the route timeout bounds it; nothing a mirror does reaches
 * the main request or its client. A cluster missing at that time (a header naming no cluster,
 * a CDS removal) skips the copy, counted in http.<stat_prefix>.shadow_no_cluster. A copy counts
 * on its cluster like any upstream request (upstream_rq_total, upstream_rq_<code>,
 * upstream_rq_time, upstream_rq_timeout, circuit breakers, outlier detection). No retries.
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

/* Start mirroring a request under policies <mp> (NULL: none). <down> are the request headers
 * as received (cluster_header lookups), <up> the headers the router sends upstream (copied);
 * <st> counts (borrowed: the router config's). NULL when no policy fires this time, and for
 * upgrades and CONNECT (tunnels are not mirrored). */
struct msm_shadow *msm_shadow_begin(const struct msm_mirror_policies *mp,
                                    const struct msm_hdrs *down, const struct msm_hdrs *up,
                                    const struct msm_shadow_stats *st);
/* Request body <data> arrived: copy it (left in place). Over <limit> bytes in all, the mirrors
 * are cancelled and *<sh> cleared; <count> says whether to count that in <main>'s
 * retry_or_shadow_abandoned (false when the router counts the same overflow itself). */
void msm_shadow_data(struct msm_shadow **sh, const struct msm_buf *data, uint32_t limit,
                     struct msm_cluster *main, bool count);
void msm_shadow_trailers(struct msm_shadow *sh, const struct msm_hdrs *t);
/* The request is complete: send the copies when <go> (the main request still runs), with
 * <timeout_ms> (0 = none) each. *<sh> is consumed either way. */
void msm_shadow_end(struct msm_shadow **sh, struct msm_http_stream *s, uint32_t timeout_ms,
                    bool go);
/* The request went away before it was complete: nothing is sent. NULL-safe. */
void msm_shadow_cancel(struct msm_shadow **sh);

/* <host> with Envoy's "-shadow" suffix before the port ("a:80" -> "a-shadow:80", "[::1]" ->
 * "[::1]-shadow"). Returns a new string. */
char *msm_shadow_host(const char *host);
