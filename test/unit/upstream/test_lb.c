/* Load balancing: round robin (plain and weighted, smooth interleaving), random, least
 * request, circuit breaker accounting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "upstream/cluster.h"

static struct msm_cluster *make(enum msm_lb_policy lb, const uint32_t *weights, int n,
                                uint32_t max_cx)
{
    struct msm_cluster_cfg *cfg = MSM_NEW(struct msm_cluster_cfg);
    atomic_init(&cfg->refs, 1);
    cfg->name = msm_xstrdup("c");
    cfg->stat_name = msm_xstrdup("c");
    cfg->lb = lb;
    cfg->lr_choice_count = 2;
    cfg->max_connections = max_cx;
    struct msm_cluster_shared *sh = msm_cluster_shared_new(cfg, msm_stats);
    struct msm_host *hv[16];
    for (int i = 0; i < n; i++) {
        struct msm_address a;
        char ip[32];
        snprintf(ip, sizeof(ip), "10.0.0.%d", i + 1);
        assert_int_equal(msm_address_from_ip(ip, 80, &a, NULL), 0);
        hv[i] = msm_host_new(&a, NULL, weights ? weights[i] : 1);
    }
    struct msm_host_set *hs = msm_host_set_new(hv, n);
    struct msm_cluster *c = msm_cluster_new(cfg, sh, hs);
    msm_host_set_unref(hs);
    msm_cluster_shared_unref(sh);
    msm_cluster_cfg_unref(cfg);
    return c;
}

static int index_of(struct msm_cluster *c, struct msm_host *h)
{
    for (int i = 0; i < c->hosts->n; i++) {
        if (c->hosts->hosts[i] == h) {
            return i;
        }
    }
    return -1;
}

static void test_round_robin(void **state)
{
    (void)state;
    struct msm_cluster *c = make(MSM_LB_ROUND_ROBIN, NULL, 3, 1024);
    int first = index_of(c, msm_lb_choose(c, 0));
    for (int i = 1; i < 30; i++) {
        assert_int_equal(index_of(c, msm_lb_choose(c, 0)), (first + i) % 3);
    }
    msm_cluster_unref(c);
}

static void test_weighted_round_robin(void **state)
{
    (void)state;
    uint32_t w[] = {1, 3};
    struct msm_cluster *c = make(MSM_LB_ROUND_ROBIN, w, 2, 1024);
    int count[2] = {0, 0}, run = 0, maxrun = 0, prev = -1;
    for (int i = 0; i < 400; i++) {
        int k = index_of(c, msm_lb_choose(c, 0));
        count[k]++;
        run = k == prev ? run + 1 : 1;
        maxrun = run > maxrun ? run : maxrun;
        prev = k;
    }
    assert_int_equal(count[0], 100);
    assert_int_equal(count[1], 300);
    assert_true(maxrun <= 3); /* smooth: never more than the weight in a row */
    msm_cluster_unref(c);
}

static void test_random_uniform(void **state)
{
    (void)state;
    struct msm_cluster *c = make(MSM_LB_RANDOM, NULL, 4, 1024);
    int count[4] = {0};
    for (int i = 0; i < 40000; i++) {
        count[index_of(c, msm_lb_choose(c, 0))]++;
    }
    for (int i = 0; i < 4; i++) {
        assert_in_range(count[i], 9000, 11000);
    }
    msm_cluster_unref(c);
}

static void test_least_request(void **state)
{
    (void)state;
    struct msm_cluster *c = make(MSM_LB_LEAST_REQUEST, NULL, 2, 1024);
    atomic_store(&c->hosts->hosts[0]->active_rq, 50);
    int busy = 0;
    for (int i = 0; i < 1000; i++) {
        busy += index_of(c, msm_lb_choose(c, 0)) == 0;
    }
    /* P2C picks the busy host only when both choices land on it: ~25%. */
    assert_in_range(busy, 150, 350);
    msm_cluster_unref(c);
}

static void test_circuit_breaker(void **state)
{
    (void)state;
    struct msm_cluster *c = make(MSM_LB_ROUND_ROBIN, NULL, 1, 2);
    assert_true(msm_cluster_cx_reserve(c));
    assert_true(msm_cluster_cx_reserve(c));
    assert_false(msm_cluster_cx_reserve(c));
    assert_int_equal(msm_stat_value(c->sh->stats.upstream_cx_overflow), 1);
    assert_int_equal(msm_stat_value(c->sh->cb.cx_open), 1);
    msm_cluster_cx_release(c);
    assert_int_equal(msm_stat_value(c->sh->cb.cx_open), 0);
    assert_true(msm_cluster_cx_reserve(c));
    msm_cluster_cx_release(c);
    msm_cluster_cx_release(c);
    msm_cluster_unref(c);
}

static void test_empty(void **state)
{
    (void)state;
    struct msm_cluster *c = make(MSM_LB_LEAST_REQUEST, NULL, 0, 2);
    assert_null(msm_lb_choose(c, 0));
    msm_cluster_unref(c);
}

static int setup(void **state)
{
    (void)state;
    msm_stats = msm_stats_store_new();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    msm_stats_store_free(msm_stats);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin),       cmocka_unit_test(test_weighted_round_robin),
        cmocka_unit_test(test_random_uniform),    cmocka_unit_test(test_least_request),
        cmocka_unit_test(test_circuit_breaker),   cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
