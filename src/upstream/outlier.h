#pragma once
/* Outlier detection (envoy.config.cluster.v3.OutlierDetection), consecutive-error part:
 * consecutive_5xx, consecutive_gateway_failure and consecutive_local_origin_failure, with
 * enforcement percentages, base/max ejection time, max_ejection_percent.
 *
 * Any worker reports results on a host; an ejected host is skipped by the load balancer until
 * its ejection time has passed (checked lazily, no timer). Host state is atomics on the host,
 * which is shared by every version of its cluster. Success-rate and failure-percentage
 * detection are not implemented (rejected when enforced). */
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "stats/stats.h"

struct msm_cluster;
struct msm_host;

#define MSM_OUTLIER_STATS(C, G, H)                                                                \
    G(ejections_active) C(ejections_total) C(ejections_enforced_total) C(ejections_overflow)      \
    C(ejections_enforced_consecutive_5xx) C(ejections_detected_consecutive_5xx)                   \
    C(ejections_enforced_consecutive_gateway_failure)                                             \
    C(ejections_detected_consecutive_gateway_failure)                                             \
    C(ejections_enforced_consecutive_local_origin_failure)                                        \
    C(ejections_detected_consecutive_local_origin_failure)
MSM_STATS_STRUCT(msm_outlier_stats, MSM_OUTLIER_STATS);
MSM_STATS_INIT_FN(msm_outlier_stats, MSM_OUTLIER_STATS)

struct msm_outlier_cfg {
    bool enabled;
    uint32_t consecutive_5xx, enforcing_5xx;
    uint32_t consecutive_gw, enforcing_gw;
    bool split_local;
    uint32_t consecutive_local, enforcing_local;
    uint32_t base_ejection_ms, max_ejection_ms;
    uint32_t max_ejection_percent;
};

enum msm_outlier_result {
    MSM_OUTLIER_SUCCESS = 0,
    MSM_OUTLIER_LOCAL_FAILURE = 1, /* connect failure/timeout, reset before a response */
    MSM_OUTLIER_5XX = 2,           /* an upstream 5xx other than 502/503/504 */
    MSM_OUTLIER_GATEWAY = 3,       /* 502, 503, 504 */
};

/* Fill <o> from a proto (NULL = disabled). MSM_EINVAL with <err> for what cannot be enforced. */
int msm_outlier_cfg_from_proto(const void *outlier_detection_proto, struct msm_outlier_cfg *o,
                               struct msm_err *err);
/* Record a result for <h> of cluster <c>. Any thread. */
void msm_outlier_report(struct msm_cluster *c, struct msm_host *h, enum msm_outlier_result r);
/* Not ejected at <now_ms>? (un-ejects lazily when the time has passed). Any thread. */
bool msm_outlier_host_ok(struct msm_cluster *c, struct msm_host *h, uint64_t now_ms);
uint64_t msm_mono_ms(void);
