/* Priority levels, degraded hosts, panic threshold and locality weights: the loads against
 * Envoy's documented formula (docs "Priority levels", "Degraded endpoints", "Panic threshold",
 * "Locality weighted load balancing"), then the same through msm_lb_choose on real clusters,
 * with EDS health, outlier ejections and active health check state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "upstream/cluster.h"
#include "upstream/priority.h"
#include "upstream_fixtures.h"

/* ---- the formula ---------------------------------------------------------------------------- */

/* Levels of 100 hosts each with the given healthy / degraded percentages. */
static void loads(int n, const int *healthy_pct, const int *degraded_pct, uint32_t threshold,
                  uint32_t *h, uint32_t *d, bool *panic)
{
    struct msm_prio_health lv[8];
    for (int i = 0; i < n; i++) {
        lv[i] = (struct msm_prio_health){.hosts = 100, .healthy = (uint64_t)healthy_pct[i],
                                         .degraded = degraded_pct ? (uint64_t)degraded_pct[i] : 0};
        lv[i].total_w = lv[i].hosts;
        lv[i].healthy_w = lv[i].healthy;
        lv[i].degraded_w = lv[i].degraded;
    }
    msm_prio_loads(lv, n, 140, threshold, h, d, panic);
}

static void test_two_levels(void **state)
{
    (void)state;
    /* P=1 100% healthy; rows of the docs' first table. */
    const int p0[] = {100, 80, 72, 71, 50, 25, 0};
    const uint32_t want0[] = {100, 100, 100, 99, 70, 35, 0};
    for (size_t r = 0; r < sizeof(p0) / sizeof(p0[0]); r++) {
        int hp[2] = {p0[r], 100};
        uint32_t h[2], d[2];
        bool pn[2];
        loads(2, hp, NULL, 50, h, d, pn);
        assert_int_equal(h[0], want0[r]);
        assert_int_equal(h[1], 100 - want0[r]);
        assert_int_equal(d[0] + d[1], 0);
        /* Total availability stays at 100: no level panics, however low P=0 is. */
        assert_false(pn[0]);
        assert_false(pn[1]);
    }
}

static void test_normalized(void **state)
{
    (void)state;
    /* Second table: both levels degrade; below 100 total the health scores are normalized. */
    const int rows[][2] = {{100, 100}, {72, 72}, {71, 71}, {50, 50}, {25, 100}, {25, 25}};
    const uint32_t want[][2] = {{100, 0}, {100, 0}, {99, 1}, {70, 30}, {35, 65}, {50, 50}};
    for (size_t r = 0; r < 6; r++) {
        uint32_t h[2], d[2];
        bool pn[2];
        loads(2, rows[r], NULL, 50, h, d, pn);
        assert_int_equal(h[0], want[r][0]);
        assert_int_equal(h[1], want[r][1]);
    }
    /* Health scores {20, 30} as in the docs' prose: normalized total 50 -> {40, 60}. */
    struct msm_prio_health lv[2] = {{.hosts = 7, .healthy = 1}, {.hosts = 14, .healthy = 3}};
    for (int i = 0; i < 2; i++) {
        lv[i].total_w = lv[i].hosts;
        lv[i].healthy_w = lv[i].healthy;
    }
    uint32_t h[2], d[2];
    bool pn[2];
    msm_prio_loads(lv, 2, 140, 50, h, d, pn); /* scores 140/7=20, 420/14=30 */
    assert_int_equal(h[0], 40);
    assert_int_equal(h[1], 60);
    assert_true(pn[0]); /* 14% healthy < 50% while total availability < 100 */
    assert_true(pn[1]);
}

static void test_three_levels(void **state)
{
    (void)state;
    const int rows[][3] = {{100, 100, 100}, {72, 72, 100}, {71, 71, 100}, {50, 50, 100},
                           {25, 100, 100},  {25, 25, 100}, {25, 25, 20}};
    /* The last row: scores 35/35/28, total 98; 35*100/98 = 35, 28*100/98 = 28 and the 2 left
     * over go to the first healthy level (Envoy's code; the docs table rounds it to
     * 36/36/28). */
    const uint32_t want[][3] = {{100, 0, 0}, {100, 0, 0},  {99, 1, 0}, {70, 30, 0},
                                {35, 65, 0}, {35, 35, 30}, {37, 35, 28}};
    for (size_t r = 0; r < 7; r++) {
        uint32_t h[3], d[3];
        bool pn[3];
        loads(3, rows[r], NULL, 50, h, d, pn);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(h[i], want[r][i]);
        }
        assert_int_equal(h[0] + h[1] + h[2], 100);
    }
}

static void test_degraded(void **state)
{
    (void)state;
    /* The docs' degraded table, one level: healthy/degraded/unhealthy -> healthy, degraded. */
    const int rows[][2] = {{100, 0}, {71, 0}, {71, 29}, {25, 65}, {5, 0}};
    const uint32_t want[][2] = {{100, 0}, {100, 0}, {99, 1}, {35, 65}, {100, 0}};
    for (size_t r = 0; r < 5; r++) {
        uint32_t h[1], d[1];
        bool pn[1];
        loads(1, &rows[r][0], &rows[r][1], 50, h, d, pn);
        assert_int_equal(h[0], want[r][0]);
        assert_int_equal(d[0], want[r][1]);
        /* 5% healthy: the only level is in panic (balanced over all of its hosts). */
        assert_int_equal(pn[0], r == 4);
    }
    /* Degraded spill to a lower level's healthy hosts comes after every level's healthy share:
     * P0 50% healthy + 50% degraded (70/70), P1 100% healthy: 70% P0 healthy, 30% P1 healthy,
     * nothing left for P0's degraded hosts. */
    int hp[2] = {50, 100}, dp[2] = {50, 0};
    uint32_t h[2], d[2];
    bool pn[2];
    loads(2, hp, dp, 50, h, d, pn);
    assert_int_equal(h[0], 70);
    assert_int_equal(h[1], 30);
    assert_int_equal(d[0], 0);
}

static void test_panic(void **state)
{
    (void)state;
    uint32_t h[2], d[2];
    bool pn[2];
    /* One level, 40% healthy: availability 56 < 100 and 40 < 50: panic. */
    int one[1] = {40};
    loads(1, one, NULL, 50, h, d, pn);
    assert_true(pn[0]);
    assert_int_equal(h[0], 100);
    /* Threshold 30: no panic at 40%. */
    loads(1, one, NULL, 30, h, d, pn);
    assert_false(pn[0]);
    /* Threshold 0 disables panic even with nothing healthy; the load stays on P0. */
    int none[2] = {0, 0};
    loads(2, none, NULL, 0, h, d, pn);
    assert_false(pn[0]);
    assert_false(pn[1]);
    assert_int_equal(h[0], 100);
    /* Nothing healthy anywhere: total panic, load by host count (10 and 30 hosts). */
    struct msm_prio_health lv[2] = {{.hosts = 10, .total_w = 10}, {.hosts = 30, .total_w = 30}};
    msm_prio_loads(lv, 2, 140, 50, h, d, pn);
    assert_true(pn[0]);
    assert_true(pn[1]);
    assert_int_equal(h[0], 25);
    assert_int_equal(h[1], 75);
    /* weighted_priority_health: availability by weight, panic still by count. P0: 4 hosts, the
     * healthy one weighs 3 of 6 -> 70%. */
    struct msm_prio_health w[2] = {{.hosts = 4, .healthy = 1, .total_w = 6, .healthy_w = 3},
                                   {.hosts = 2, .healthy = 2, .total_w = 2, .healthy_w = 2}};
    msm_prio_loads(w, 2, 140, 50, h, d, pn);
    assert_int_equal(h[0], 70);
    assert_int_equal(h[1], 30);
    /* Overprovisioning 100: 80% healthy is 80% of the load. */
    int eighty[2] = {80, 100};
    struct msm_prio_health o[2];
    for (int i = 0; i < 2; i++) {
        o[i] = (struct msm_prio_health){.hosts = 100, .healthy = (uint64_t)eighty[i],
                                        .total_w = 100, .healthy_w = (uint64_t)eighty[i]};
    }
    msm_prio_loads(o, 2, 100, 50, h, d, pn);
    assert_int_equal(h[0], 80);
    assert_int_equal(h[1], 20);
}

static void test_locality_weights(void **state)
{
    (void)state;
    /* Docs: X weight 1, Y weight 2 (100% available); X's healthy share -> X's traffic. */
    const int xh[] = {100, 70, 69, 50, 25, 0};
    const int want[] = {33, 33, 32, 26, 15, 0};
    for (int r = 0; r < 6; r++) {
        uint64_t x = msm_locality_effective_weight(1, (uint64_t)xh[r], 100, 140);
        uint64_t y = msm_locality_effective_weight(2, 100, 100, 140);
        double pct = 100.0 * (double)x / (double)(x + y);
        /* The docs' table rounds loosely (32.6 -> 32, 25.9 -> 26): within one point. */
        assert_true(pct > want[r] - 1.0 && pct < want[r] + 1.0);
    }
    assert_int_equal(msm_locality_effective_weight(1, 69, 100, 140), 9660);
    assert_int_equal(msm_locality_effective_weight(0, 10, 10, 140), 0); /* no weight, no load */
}

/* ---- through the load balancer ---------------------------------------------------------------- */

struct spec {
    uint32_t priority, locality;
    uint8_t health;
};

static struct msm_cluster *make(enum msm_lb_policy lb, const struct spec *sp, int n,
                                const uint32_t *loc_w, int n_loc, bool outlier,
                                bool locality_weighted, uint32_t threshold)
{
    struct msm_cluster_cfg *cfg = msm_test_cluster_cfg("p", lb, 1024);
    cfg->panic_threshold = threshold;
    cfg->locality_weighted = locality_weighted;
    if (outlier) {
        cfg->outlier = (struct msm_outlier_cfg){.enabled = true, .consecutive_5xx = 1,
                                                .enforcing_5xx = 100, .consecutive_gw = 5,
                                                .consecutive_local = 1, .enforcing_local = 100,
                                                .base_ejection_ms = 30000,
                                                .max_ejection_ms = 300000,
                                                .max_ejection_percent = 100};
    }
    struct msm_host *hv[64];
    struct msm_topology t = {.overprov = 140};
    t.attr = msm_xcalloc((size_t)n, sizeof(*t.attr));
    t.loc_weight = msm_xcalloc((size_t)n_loc + 1, sizeof(uint32_t));
    t.n_loc = n_loc;
    for (int i = 0; i < n_loc; i++) {
        t.loc_weight[i] = loc_w[i];
    }
    for (int i = 0; i < n; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.1.%u.%d", sp[i].priority, i + 1);
        hv[i] = msm_test_host(ip, 1);
        t.attr[i] = (struct msm_host_attr){
            .priority = sp[i].priority, .locality = sp[i].locality, .health = sp[i].health};
    }
    struct msm_host_set *hs = msm_host_set_new(hv, n);
    msm_host_set_set_topology(hs, &t);
    msm_topology_deinit(&t);
    return msm_test_cluster(cfg, hs);
}

static int index_of(struct msm_cluster *c, const struct msm_host *h)
{
    return msm_test_host_index(c, h);
}

/* Share of <rounds> picks landing on hosts [from, to). */
static double share(struct msm_cluster *c, int from, int to, int rounds, uint64_t hash)
{
    int hit = 0;
    for (int r = 0; r < rounds; r++) {
        struct msm_host *h = msm_lb_choose(c, hash ? hash + (uint64_t)r * 0x9E3779B97F4A7C15ull
                                                   : 0);
        assert_non_null(h);
        int k = index_of(c, h);
        hit += k >= from && k < to;
    }
    return 100.0 * hit / rounds;
}

static void test_eds_health_spill(void **state)
{
    (void)state;
    /* P0: 10 hosts, 5 unhealthy by EDS (50% -> 70% of the load); P1: 10 healthy. */
    struct spec sp[20];
    for (int i = 0; i < 20; i++) {
        sp[i] = (struct spec){i < 10 ? 0 : 1, i < 10 ? 0 : 1,
                              i < 5 ? MSM_HOST_UNHEALTHY : MSM_HOST_HEALTHY};
    }
    uint32_t lw[2] = {1, 1};
    enum msm_lb_policy pol[] = {MSM_LB_ROUND_ROBIN, MSM_LB_LEAST_REQUEST, MSM_LB_RANDOM,
                                MSM_LB_RING_HASH, MSM_LB_MAGLEV};
    for (size_t k = 0; k < 5; k++) {
        struct msm_cluster *c = make(pol[k], sp, 20, lw, 2, false, false, 50);
        uint32_t h[4], d[4];
        bool pn[4];
        assert_int_equal(msm_prio_state(c, h, d, pn, 4), 2);
        assert_int_equal(h[0], 70);
        assert_int_equal(h[1], 30);
        bool hash = pol[k] == MSM_LB_RING_HASH || pol[k] == MSM_LB_MAGLEV;
        /* No pick lands on an unhealthy host; P0's healthy ones get ~70%. */
        assert_true(share(c, 0, 5, 4000, hash ? 12345 : 0) == 0.0);
        double p0 = share(c, 5, 10, 20000, hash ? 777 : 0);
        assert_true(p0 > 66.0 && p0 < 74.0);
        msm_cluster_unref(c);
    }
}

static void test_outlier_and_hc_spill(void **state)
{
    (void)state;
    /* P0 and P1, 4 hosts each; outlier ejections and health check failures count as
     * unhealthy for the priority loads. */
    struct spec sp[8];
    for (int i = 0; i < 8; i++) {
        sp[i] = (struct spec){(uint32_t)(i / 4), (uint32_t)(i / 4), MSM_HOST_HEALTHY};
    }
    uint32_t lw[2] = {1, 1};
    struct msm_cluster *c = make(MSM_LB_ROUND_ROBIN, sp, 8, lw, 2, true, false, 50);
    uint32_t h[2], d[2];
    bool pn[2];
    msm_prio_state(c, h, d, pn, 2);
    assert_int_equal(h[0], 100);
    assert_true(share(c, 4, 8, 1000, 0) == 0.0);
    /* Eject two of P0 (50%): 70/30. */
    msm_outlier_report(c, c->hosts->hosts[0], MSM_OUTLIER_5XX);
    msm_outlier_report(c, c->hosts->hosts[1], MSM_OUTLIER_5XX);
    assert_int_equal(msm_stat_value(c->sh->outlier->ejections_active), 2);
    msm_prio_state(c, h, d, pn, 2);
    assert_int_equal(h[0], 70);
    assert_int_equal(h[1], 30);
    double p1 = share(c, 4, 8, 20000, 0);
    assert_true(p1 > 26.0 && p1 < 34.0);
    assert_true(share(c, 0, 2, 2000, 0) == 0.0);
    /* One more host fails its health checks: 25% of P0 -> 35/65. */
    atomic_store(&c->hosts->hosts[2]->hc_unhealthy, true);
    msm_health_changed();
    msm_prio_state(c, h, d, pn, 2);
    assert_int_equal(h[0], 35);
    assert_int_equal(h[1], 65);
    /* Ejections run out: back to 75% healthy -> 100% P0 (ejection end found by time). */
    atomic_store(&c->hosts->hosts[0]->ejected_until, msm_mono_ms() - 1);
    atomic_store(&c->hosts->hosts[1]->ejected_until, msm_mono_ms() - 1);
    /* recheck is at the old deadline, 30 s away: tell it a health change happened. */
    msm_health_changed();
    msm_prio_state(c, h, d, pn, 2);
    assert_int_equal(h[0], 100);
    assert_int_equal(msm_stat_value(c->sh->outlier->ejections_active), 0);
    assert_true(share(c, 2, 3, 2000, 0) == 0.0); /* still failing its checks */
    msm_cluster_unref(c);
}

static void test_panic_pick(void **state)
{
    (void)state;
    /* One level, 1 of 4 healthy: panic, every host gets load and lb_healthy_panic counts. */
    struct spec sp[4];
    for (int i = 0; i < 4; i++) {
        sp[i] = (struct spec){0, 0, i ? MSM_HOST_UNHEALTHY : MSM_HOST_HEALTHY};
    }
    uint32_t lw[1] = {1};
    struct msm_cluster *c = make(MSM_LB_ROUND_ROBIN, sp, 4, lw, 1, false, false, 50);
    uint64_t before = msm_stat_value(c->sh->stats.lb_healthy_panic);
    double s = share(c, 1, 4, 4000, 0);
    assert_true(s > 70.0 && s < 80.0);
    assert_int_equal(msm_stat_value(c->sh->stats.lb_healthy_panic) - before, 4000);
    msm_cluster_unref(c);
    /* Threshold 0: no panic, only the healthy host. */
    c = make(MSM_LB_ROUND_ROBIN, sp, 4, lw, 1, false, false, 0);
    assert_true(share(c, 1, 4, 1000, 0) == 0.0);
    msm_cluster_unref(c);
    /* Threshold 0 and nothing healthy: no host at all. */
    for (int i = 0; i < 4; i++) {
        sp[i].health = MSM_HOST_UNHEALTHY;
    }
    c = make(MSM_LB_LEAST_REQUEST, sp, 4, lw, 1, false, false, 0);
    assert_null(msm_lb_choose(c, 0));
    msm_cluster_unref(c);
}

static void test_locality_pick(void **state)
{
    (void)state;
    /* Locality X (weight 1) and Y (weight 2), 10 hosts each, in one level. */
    struct spec sp[20];
    for (int i = 0; i < 20; i++) {
        sp[i] = (struct spec){0, (uint32_t)(i / 10), MSM_HOST_HEALTHY};
    }
    uint32_t lw[2] = {1, 2};
    struct msm_cluster *c = make(MSM_LB_ROUND_ROBIN, sp, 20, lw, 2, false, true, 50);
    double x = share(c, 0, 10, 30000, 0);
    assert_true(x > 31.0 && x < 35.7);
    msm_cluster_unref(c);
    /* X at 50% healthy: 26%. */
    for (int i = 0; i < 5; i++) {
        sp[i].health = MSM_HOST_UNHEALTHY;
    }
    c = make(MSM_LB_RANDOM, sp, 20, lw, 2, false, true, 50);
    x = share(c, 5, 10, 30000, 0);
    assert_true(x > 24.0 && x < 28.0);
    msm_cluster_unref(c);
    /* Without locality_weighted_lb_config the locality weights are ignored: by host count,
     * 5 healthy X hosts of 15. */
    c = make(MSM_LB_RANDOM, sp, 20, lw, 2, false, false, 50);
    x = share(c, 5, 10, 30000, 0);
    assert_true(x > 31.0 && x < 35.7);
    msm_cluster_unref(c);
    /* A locality without weight gets nothing. */
    uint32_t lw0[2] = {0, 3};
    c = make(MSM_LB_LEAST_REQUEST, sp, 20, lw0, 2, false, true, 50);
    assert_true(share(c, 0, 10, 3000, 0) == 0.0);
    msm_cluster_unref(c);
}

static void test_degraded_pick(void **state)
{
    (void)state;
    /* 7 healthy, 3 degraded of 10 in P0: healthy 98 (140*7/10), degraded 2. */
    struct spec sp[10];
    for (int i = 0; i < 10; i++) {
        sp[i] = (struct spec){0, 0, i < 3 ? MSM_HOST_DEGRADED : MSM_HOST_HEALTHY};
    }
    uint32_t lw[1] = {1};
    struct msm_cluster *c = make(MSM_LB_ROUND_ROBIN, sp, 10, lw, 1, false, false, 50);
    uint32_t h[1], d[1];
    bool pn[1];
    msm_prio_state(c, h, d, pn, 1);
    assert_int_equal(h[0], 98);
    assert_int_equal(d[0], 2);
    double s = share(c, 0, 3, 50000, 0);
    assert_true(s > 1.5 && s < 2.5);
    msm_cluster_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_levels),        cmocka_unit_test(test_normalized),
        cmocka_unit_test(test_three_levels),      cmocka_unit_test(test_degraded),
        cmocka_unit_test(test_panic),             cmocka_unit_test(test_locality_weights),
        cmocka_unit_test(test_eds_health_spill),  cmocka_unit_test(test_outlier_and_hc_spill),
        cmocka_unit_test(test_panic_pick),        cmocka_unit_test(test_locality_pick),
        cmocka_unit_test(test_degraded_pick),
    };
    return cmocka_run_group_tests(tests, msm_test_stats_setup, msm_test_stats_teardown);
}
