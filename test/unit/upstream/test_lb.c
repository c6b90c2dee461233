/* Load balancing: round robin (plain and weighted, smooth interleaving), random, least
 * request, circuit breaker accounting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "common/alloc.h"
#include "upstream/cluster.h"
#include "upstream_fixtures.h"

/* A cluster of <n> hosts 10.0.0.<first+1>.. with <weights> (NULL = all 1). */
static struct msm_cluster *make_at(enum msm_lb_policy lb, const uint32_t *weights, int n,
                                   uint32_t max_cx, int first)
{
    struct msm_host *hv[16];
    for (int i = 0; i < n; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.0.0.%d", first + i + 1);
        hv[i] = msm_test_host(ip, weights ? weights[i] : 1);
    }
    return msm_test_cluster(msm_test_cluster_cfg("c", lb, max_cx), msm_host_set_new(hv, n));
}

static struct msm_cluster *make(enum msm_lb_policy lb, const uint32_t *weights, int n,
                                uint32_t max_cx)
{
    return make_at(lb, weights, n, max_cx, 0);
}

static int index_of(struct msm_cluster *c, struct msm_host *h)
{
    return msm_test_host_index(c, h);
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
    assert_int_equal(msm_stat_value(c->sh->cb->cx_open), 1);
    msm_cluster_cx_release(c);
    assert_int_equal(msm_stat_value(c->sh->cb->cx_open), 0);
    assert_true(msm_cluster_cx_reserve(c));
    msm_cluster_cx_release(c);
    msm_cluster_cx_release(c);
    msm_cluster_unref(c);
}

/* Hash policies: the same key always maps to the same host, weights are honoured, and
 * removing one host moves only (most of) the keys that were on it. */
static void check_consistent_hash(enum msm_lb_policy lb)
{
    uint32_t w[] = {1, 1, 2};
    struct msm_cluster *c = make(lb, w, 3, 1024);
    int count[3] = {0};
    int before[4000];
    for (int i = 0; i < 4000; i++) {
        uint64_t h = XXH64(&i, sizeof(i), 42);
        struct msm_host *a = msm_lb_choose(c, h), *b = msm_lb_choose(c, h);
        assert_ptr_equal(a, b);
        before[i] = index_of(c, a);
        count[before[i]]++;
    }
    assert_in_range(count[0], 700, 1300);
    assert_in_range(count[1], 700, 1300);
    assert_in_range(count[2], 1600, 2400);
    /* Same addresses minus the first host. */
    struct msm_cluster *d = make_at(lb, w + 1, 2, 1024, 1);
    int moved = 0;
    for (int i = 0; i < 4000; i++) {
        uint64_t h = XXH64(&i, sizeof(i), 42);
        struct msm_host *x = msm_lb_choose(d, h);
        /* d's host k has the address of c's host k+1 */
        char a[MSM_ADDRSTRLEN], b[MSM_ADDRSTRLEN];
        msm_address_str(&x->addr, a, sizeof(a));
        if (before[i] != 0) {
            msm_address_str(&c->hosts->hosts[before[i]]->addr, b, sizeof(b));
            moved += strcmp(a, b) != 0;
        }
    }
    /* Keys not on the removed host should mostly stay (ring: none move; maglev: a few). */
    assert_true(moved < 4000 / 10);
    msm_cluster_unref(d);
    msm_cluster_unref(c);
}

static void test_ring_hash(void **state)
{
    (void)state;
    check_consistent_hash(MSM_LB_RING_HASH);
}

static void test_maglev(void **state)
{
    (void)state;
    check_consistent_hash(MSM_LB_MAGLEV);
}

static void test_outlier_ejection(void **state)
{
    (void)state;
    struct msm_cluster *c = make(MSM_LB_ROUND_ROBIN, NULL, 3, 1024);
    struct msm_outlier_cfg *o = &c->cfg->outlier;
    *o = (struct msm_outlier_cfg){.enabled = true, .consecutive_5xx = 5, .enforcing_5xx = 100,
                                  .consecutive_gw = 5, .enforcing_gw = 0,
                                  .consecutive_local = 5, .enforcing_local = 100,
                                  .base_ejection_ms = 30000, .max_ejection_ms = 300000,
                                  .max_ejection_percent = 50};
    struct msm_host *bad = c->hosts->hosts[0];
    for (int i = 0; i < 4; i++) {
        msm_outlier_report(c, bad, MSM_OUTLIER_LOCAL_FAILURE);
    }
    assert_int_equal(msm_stat_value(c->sh->outlier->ejections_active), 0);
    msm_outlier_report(c, bad, MSM_OUTLIER_SUCCESS); /* resets the streak */
    for (int i = 0; i < 5; i++) {
        msm_outlier_report(c, bad, MSM_OUTLIER_LOCAL_FAILURE);
    }
    assert_int_equal(msm_stat_value(c->sh->outlier->ejections_active), 1);
    assert_int_equal(msm_stat_value(c->sh->outlier->ejections_enforced_consecutive_5xx), 1);
    for (int i = 0; i < 300; i++) {
        assert_ptr_not_equal(msm_lb_choose(c, 0), bad);
    }
    /* Budget: 50% of 3 hosts: a second ejection is allowed (1/3 < 50%), a third is not. */
    for (int k = 1; k < 3; k++) {
        for (int i = 0; i < 5; i++) {
            msm_outlier_report(c, c->hosts->hosts[k], MSM_OUTLIER_LOCAL_FAILURE);
        }
    }
    assert_int_equal(msm_stat_value(c->sh->outlier->ejections_active), 2);
    assert_int_equal(msm_stat_value(c->sh->outlier->ejections_overflow), 1);
    /* Time served: the host comes back. */
    atomic_store(&bad->ejected_until, msm_mono_ms() - 1);
    bool seen = false;
    for (int i = 0; i < 30; i++) {
        seen |= msm_lb_choose(c, 0) == bad;
    }
    assert_true(seen);
    assert_int_equal(msm_stat_value(c->sh->outlier->ejections_active), 1);
    msm_cluster_unref(c);
}

static void test_empty(void **state)
{
    (void)state;
    struct msm_cluster *c = make(MSM_LB_LEAST_REQUEST, NULL, 0, 2);
    assert_null(msm_lb_choose(c, 0));
    msm_cluster_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin),       cmocka_unit_test(test_weighted_round_robin),
        cmocka_unit_test(test_random_uniform),    cmocka_unit_test(test_least_request),
        cmocka_unit_test(test_circuit_breaker),   cmocka_unit_test(test_empty),
        cmocka_unit_test(test_ring_hash),         cmocka_unit_test(test_maglev),
        cmocka_unit_test(test_outlier_ejection),
    };
    return cmocka_run_group_tests(tests, msm_test_stats_setup, msm_test_stats_teardown);
}
