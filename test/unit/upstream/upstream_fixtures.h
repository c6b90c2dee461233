/* Shared by the upstream unit tests (test_lb.c, test_priority.c, test_cluster_manager.c): the
 * global stats store as a cmocka group fixture, and clusters built by hand (a configuration
 * with the unit tests' defaults, hosts at <ip>:80). Header-only (static inline), so each test
 * stays one source file in its test/unit cmake line. Include after <cmocka.h>. */
#ifndef MSM_TEST_UNIT_UPSTREAM_FIXTURES_H
#define MSM_TEST_UNIT_UPSTREAM_FIXTURES_H

#include "common/alloc.h"
#include "stats/stats.h"
#include "upstream/cluster.h"
#include "xds/strmap.h"

static inline int msm_test_stats_setup(void **state)
{
    (void)state;
    msm_stats = msm_stats_store_new();
    return 0;
}

static inline int msm_test_stats_teardown(void **state)
{
    (void)state;
    msm_stats_store_free(msm_stats);
    return 0;
}

/* A cluster configuration <name> (also its stat name), one reference held by the caller. */
static inline struct msm_cluster_cfg *msm_test_cluster_cfg(const char *name,
                                                           enum msm_lb_policy lb,
                                                           uint32_t max_connections)
{
    struct msm_cluster_cfg *cfg = MSM_NEW(struct msm_cluster_cfg);
    atomic_init(&cfg->refs, 1);
    cfg->name = msm_name_intern(name);
    cfg->stat_name = msm_xstrdup(name);
    cfg->lb = lb;
    cfg->lr_choice_count = 2;
    cfg->ring_min = 1024;
    cfg->ring_max = 8 * 1024 * 1024;
    cfg->maglev_size = 65537;
    cfg->max_connections = max_connections;
    return cfg;
}

/* A host at <ip>:80 of weight <weight>. */
static inline struct msm_host *msm_test_host(const char *ip, uint32_t weight)
{
    struct msm_address a;
    assert_int_equal(msm_address_from_ip(ip, 80, &a, NULL), 0);
    return msm_host_new(&a, NULL, weight);
}

/* The cluster of <cfg> over <hs>, with its shared part; takes the caller's references of
 * <cfg> and <hs>. */
static inline struct msm_cluster *msm_test_cluster(struct msm_cluster_cfg *cfg,
                                                   struct msm_host_set *hs)
{
    struct msm_cluster_shared *sh = msm_cluster_shared_new(cfg, msm_stats);
    struct msm_cluster *c = msm_cluster_new(cfg, sh, hs);
    msm_host_set_unref(hs);
    msm_cluster_shared_unref(sh);
    msm_cluster_cfg_unref(cfg);
    return c;
}

/* Position of <h> in <c>'s hosts, -1 if absent. */
static inline int msm_test_host_index(const struct msm_cluster *c, const struct msm_host *h)
{
    for (int i = 0; i < c->hosts->n; i++) {
        if (c->hosts->hosts[i] == h) {
            return i;
        }
    }
    return -1;
}

#endif
