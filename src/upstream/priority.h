#pragma once
/* Priority levels, localities and panic mode, with Envoy's semantics:
 *
 * - Each priority level's availability is min(100, overprovisioning_factor * healthy / total)
 *   (and the same for degraded hosts); load goes to the levels in order until their availability
 *   is used up, scaled when the sum of availabilities is below 100; rounding leftovers go to the
 *   first available level.
 * - A level is in panic when its healthy + degraded percentage is below
 *   common_lb_config.healthy_panic_threshold (default 50, 0 disables) — only while the total
 *   availability is below 100; a level in panic is balanced over all of its hosts. With no
 *   availability at all, load is split by host count over every level, all in panic.
 * - With common_lb_config.locality_weighted_lb_config, a level picks a locality first, by its
 *   load_balancing_weight times min(1, overprovisioning_factor * healthy / total) (a locality
 *   without a weight gets nothing), then a host inside it with the cluster's policy.
 * - Healthy means: EDS health_status HEALTHY/UNKNOWN, not ejected by outlier detection and not
 *   failing active health checks. DEGRADED endpoints only take the degraded share of the load.
 *
 * The level and locality host sets are built once per cluster version (with their ring/maglev
 * tables for the hash policies); the loads depend on live health and are recomputed by the
 * first worker that notices a health change (msm_health_changed) or an ejection running out. */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct msm_cluster;
struct msm_cluster_cfg;
struct msm_host;
struct msm_host_set;
struct msm_topology;

#define MSM_PRIO_MAX_LEVELS 128

/* Hosts a load balancing policy picks from: a host set with its hash tables. */
struct msm_lb_source {
    struct msm_host_set *hs;
    struct msm_ring *ring;
    struct msm_maglev *maglev;
};

/* Pick from <src> with <c>'s policy (upstream/cluster.c). NULL when <src> is empty. */
struct msm_host *msm_lb_pick_in(struct msm_cluster *c, const struct msm_lb_source *src,
                                uint64_t hash, uint32_t attempt);

/* ---- the computation, pure (exposed for tests) ---------------------------------------------- */

/* One level: host counts (panic, total panic) and the availability measure (the same counts,
 * or host weights with weighted_priority_health). */
struct msm_prio_health {
    uint64_t hosts, healthy, degraded;
    uint64_t total_w, healthy_w, degraded_w;
};

/* Loads in percent per level (summing to 100) and panic flags, for <n> levels. */
void msm_prio_loads(const struct msm_prio_health *lv, int n, uint32_t overprov,
                    uint32_t panic_threshold, uint32_t *healthy_load, uint32_t *degraded_load,
                    bool *panic);
/* A locality's effective weight, in 1/10000 units of its weight. */
uint64_t msm_locality_effective_weight(uint32_t weight, uint64_t eligible, uint64_t total,
                                       uint32_t overprov);

/* ---- per cluster version -------------------------------------------------------------------- */

/* The topology of a ClusterLoadAssignment (<cla>), endpoint by endpoint in message order;
 * <*n> gets the endpoint count. NACK reason in <err>. */
int msm_topology_from_cla(const void *cla, struct msm_topology *t, int *n, struct msm_err *err);

/* NULL when the plain path is exact: one level, every host healthy by EDS, no locality
 * weighting, no outlier detection or health checks. */
struct msm_prio *msm_prio_new(const struct msm_cluster_cfg *cfg, struct msm_host_set *hs);
void msm_prio_free(struct msm_prio *p);
/* Envoy's host choice for a cluster with a msm_prio. */
struct msm_host *msm_prio_choose(struct msm_cluster *c, uint64_t hash, uint32_t attempt);
/* The loads in force now (recomputed if stale); returns the number of levels (at most <max>). */
int msm_prio_state(struct msm_cluster *c, uint32_t *healthy_load, uint32_t *degraded_load,
                   bool *panic, int max);

/* Some host's health changed (outlier ejection, active health check). Any thread. */
void msm_health_changed(void);
