/* Stats store: get-or-create sharing, removal on last unref, listing order, histograms,
 * X-macro blocks, concurrent updates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "stats/stats.h"

#define DEMO_STATS(C, G, H) C(rx_total) G(active) H(length_ms)
MSM_STATS_STRUCT(demo_stats, DEMO_STATS);
MSM_STATS_INIT_FN(demo_stats, DEMO_STATS)

static void test_share_and_remove(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats;
    struct msm_stat *a = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.x.upstream_cx_total");
    struct msm_stat *b = msm_stats_getf(st, MSM_STAT_COUNTER, "cluster.%s.upstream_cx_total", "x");
    assert_ptr_equal(a, b);
    msm_stat_inc(a);
    msm_stat_add(b, 4);
    assert_int_equal(msm_stat_value(a), 5);
    msm_stat_unref(a);
    assert_non_null(msm_stats_find(st, "cluster.x.upstream_cx_total"));
    msm_stat_unref(b);
    assert_null(msm_stats_find(st, "cluster.x.upstream_cx_total"));
    /* Recreated after removal: starts from zero. */
    a = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.x.upstream_cx_total");
    assert_int_equal(msm_stat_value(a), 0);
    assert_false(atomic_load(&a->used));
    msm_stat_unref(a);
}

static void test_many_and_list(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats;
    struct msm_stat *v[3000];
    for (int i = 0; i < 3000; i++) {
        v[i] = msm_stats_getf(st, MSM_STAT_GAUGE, "g.%04d", 2999 - i);
    }
    size_t n = 0;
    struct msm_stat **l = msm_stats_list(st, &n);
    assert_int_equal(n, 3000);
    for (size_t i = 1; i < n; i++) {
        assert_true(strcmp(l[i - 1]->name, l[i]->name) < 0);
    }
    msm_stats_list_free(l, n);
    for (int i = 0; i < 3000; i++) {
        msm_stat_unref(v[i]);
    }
    l = msm_stats_list(st, &n);
    assert_int_equal(n, 0);
    msm_stats_list_free(l, n);
}

static void test_histogram_and_block(void **state)
{
    (void)state;
    struct demo_stats d;
    demo_stats_init(msm_stats, "demo.", &d);
    assert_string_equal(d.rx_total->name, "demo.rx_total");
    assert_int_equal(d.active->type, MSM_STAT_GAUGE);
    assert_true(isnan(msm_stat_quantile(d.length_ms, 0.5)));
    for (int i = 1; i <= 100; i++) {
        msm_stat_record(d.length_ms, (uint64_t)i);
    }
    assert_int_equal(atomic_load(&d.length_ms->hcount), 100);
    assert_int_equal(atomic_load(&d.length_ms->hsum), 5050);
    double p50 = msm_stat_quantile(d.length_ms, 0.5);
    assert_true(p50 >= 25 && p50 <= 100);
    assert_true(msm_stat_quantile(d.length_ms, 1.0) <= 100);
    msm_stat_inc(d.active);
    msm_stat_dec(d.active);
    assert_int_equal(msm_stat_value(d.active), 0);
    demo_stats_deinit(&d);
    assert_null(msm_stats_find(msm_stats, "demo.rx_total"));
}

static struct msm_stat *shared;

static void *bump(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++) {
        msm_stat_inc(shared);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    shared = msm_stats_get(msm_stats, MSM_STAT_COUNTER, "c");
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        pthread_create(&t[i], NULL, bump, NULL);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    assert_int_equal(msm_stat_value(shared), 400000);
    msm_stat_unref(shared);
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
    msm_stats = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_share_and_remove),
        cmocka_unit_test(test_many_and_list),
        cmocka_unit_test(test_histogram_and_block),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
