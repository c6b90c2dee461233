#pragma once
/* Active health checking (envoy.config.core.v3.HealthCheck), TCP kind: connect, optionally send
 * a payload and expect payloads back (in order, anywhere in the response, as Envoy's TCP
 * checker). Runs on the main thread for every host of a cluster; a host that fails
 * unhealthy_threshold checks in a row is marked unhealthy (the load balancer skips it), and
 * healthy again after healthy_threshold successes. Hosts start healthy (no traffic is held back
 * while the first check runs). HTTP and gRPC checkers arrive with HTTP. */
#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "stats/stats.h"

struct msm_host_set;
struct msm_cluster_shared;

#define MSM_HC_STATS(C, G, H)                                                                     \
    C(attempt) C(success) C(failure) C(network_failure) C(passive_failure) C(verify_cluster)      \
    G(healthy) G(degraded)
MSM_STATS_STRUCT(msm_hc_stats, MSM_HC_STATS);
MSM_STATS_INIT_FN(msm_hc_stats, MSM_HC_STATS)

struct msm_hc_cfg {
    uint32_t timeout_ms, interval_ms, jitter_ms, unhealthy_interval_ms;
    uint32_t unhealthy_threshold, healthy_threshold;
    uint8_t *send;
    size_t send_len;
    uint8_t **recv;
    size_t *recv_len;
    int n_recv;
};

struct msm_hc;

/* Parse the cluster's health_checks (at most one, as Envoy). <out> NULL-able result. */
int msm_hc_cfg_from_proto(const void *const *health_checks, size_t n, struct msm_hc_cfg **out,
                          struct msm_err *err);
void msm_hc_cfg_free(struct msm_hc_cfg *c);

struct msm_hc *msm_hc_new(struct ev_loop *loop, const struct msm_hc_cfg *cfg, const char *stat_name,
                          struct msm_stats_store *st);
void msm_hc_free(struct msm_hc *hc);
/* Check the hosts of <hs> from now on (hosts already checked keep their state). */
void msm_hc_set_hosts(struct msm_hc *hc, const struct msm_host_set *hs);
