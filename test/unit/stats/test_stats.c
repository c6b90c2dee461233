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
#include <stdlib.h>
#include <string.h>

#include "envoy/config/metrics/v3/stats.pb-c.h"

#include "common/alloc.h"
#include "config/pbjson.h"
#include "stats/sort.h"
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

/* With a stats_matcher (Istio's inclusion list), rejected counters and histograms are not kept
 * in the store: each owner counts on its own, nothing lists or finds them, the last unref frees
 * them. Gauges stay shared by name (some are read back). Hash probes stay right with many
 * names (1M+ at 10k clusters). */
static void test_rejected_not_stored(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats_store_new();
    const char *cfg = "{\"stats_matcher\": {\"inclusion_list\": {\"patterns\": "
                      "[{\"prefix\": \"cluster_manager\"}]}}}";
    struct msm_err err = {{0}};
    ProtobufCMessage *sc = msm_pbjson_decode_text(
        &envoy__config__metrics__v3__stats_config__descriptor, cfg, strlen(cfg), NULL, &err);
    assert_non_null(sc);
    assert_int_equal(msm_stats_configure(st, sc, NULL, 0, &err), 0);
    protobuf_c_message_free_unpacked(sc, NULL);
    struct msm_stat *c1 = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.a.upstream_cx_total");
    struct msm_stat *c2 = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.a.upstream_cx_total");
    struct msm_stat *h = msm_stats_get(st, MSM_STAT_HISTOGRAM, "cluster.a.upstream_cx_length_ms");
    struct msm_stat *g1 = msm_stats_get(st, MSM_STAT_GAUGE, "listener.x.downstream_cx_active");
    struct msm_stat *g2 = msm_stats_get(st, MSM_STAT_GAUGE, "listener.x.downstream_cx_active");
    struct msm_stat *v = msm_stats_get(st, MSM_STAT_COUNTER, "cluster_manager.cluster_added");
    assert_true(c1->hidden && c1->detached);
    assert_ptr_not_equal(c1, c2);
    msm_stat_add(c1, 3);
    msm_stat_inc(c2);
    assert_int_equal(msm_stat_value(c1), 3);
    assert_int_equal(msm_stat_value(c2), 1);
    msm_stat_record(h, 7);
    assert_true(h->detached);
    assert_null(msm_stats_find(st, "cluster.a.upstream_cx_total"));
    assert_ptr_equal(g1, g2); /* gauges: shared, hidden */
    assert_true(g1->hidden && !g1->detached);
    assert_ptr_equal(msm_stats_find(st, "listener.x.downstream_cx_active"), g1);
    assert_false(v->hidden || v->detached);
    size_t n;
    struct msm_stat **all = msm_stats_list_all(st, true, true, &n);
    assert_int_equal(n, 2); /* the gauge and cluster_manager.cluster_added */
    msm_stats_list_free(all, n);
    msm_stat_unref(c1);
    msm_stat_unref(c2);
    msm_stat_unref(h);
    msm_stat_unref(g1);
    msm_stat_unref(g2);
    /* Many visible names: every one found again through the probes. */
    char name[64];
    enum { N = 20000 };
    struct msm_stat **keep = calloc(N, sizeof(*keep));
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "cluster_manager.x%d", i);
        keep[i] = msm_stats_get(st, MSM_STAT_COUNTER, name);
    }
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "cluster_manager.x%d", i);
        assert_ptr_equal(msm_stats_find(st, name), keep[i]);
        if (i % 2) {
            msm_stat_unref(keep[i]);
        }
    }
    for (int i = 0; i < N; i += 2) {
        snprintf(name, sizeof(name), "cluster_manager.x%d", i);
        assert_ptr_equal(msm_stats_find(st, name), keep[i]);
        snprintf(name, sizeof(name), "cluster_manager.x%d", i + 1);
        assert_null(msm_stats_find(st, name));
        msm_stat_unref(keep[i]);
    }
    free(keep);
    msm_stat_unref(v);
    msm_stats_store_free(st);
}

static struct msm_stats_store *store_with_matcher(const char *cfg)
{
    struct msm_stats_store *st = msm_stats_store_new();
    struct msm_err err = {{0}};
    ProtobufCMessage *sc = msm_pbjson_decode_text(
        &envoy__config__metrics__v3__stats_config__descriptor, cfg, strlen(cfg), NULL, &err);
    assert_non_null(sc);
    assert_int_equal(msm_stats_configure(st, sc, NULL, 0, &err), 0);
    protobuf_c_message_free_unpacked(sc, NULL);
    return st;
}

/* Inside a sink scope, rejected stats of every type are the store's shared sinks: nothing is
 * allocated, updates are dropped, ref/unref do nothing; accepted ones are ordinary. Outside,
 * behaviour is unchanged (a rejected counter is detached and counts). */
static void test_sink_scope(void **state)
{
    (void)state;
    struct msm_stats_store *st = store_with_matcher(
        "{\"stats_matcher\": {\"inclusion_list\": {\"patterns\": "
        "[{\"prefix\": \"cluster_manager\"}]}}}");
    bool was = msm_stats_sink_rejected(true);
    assert_false(was);
    struct msm_stat *c1 = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.a.upstream_cx_total");
    struct msm_stat *c2 = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.b.upstream_cx_total");
    struct msm_stat *g = msm_stats_get(st, MSM_STAT_GAUGE, "cluster.a.upstream_cx_active");
    struct msm_stat *h = msm_stats_get(st, MSM_STAT_HISTOGRAM, "cluster.a.upstream_cx_length_ms");
    struct msm_stat *t = msm_stats_get(st, MSM_STAT_TEXT, "cluster.a.version_text");
    struct msm_stat *ok = msm_stats_get(st, MSM_STAT_COUNTER, "cluster_manager.cluster_added");
    assert_true(msm_stats_sink_rejected(was));
    assert_true(c1->sink && c1 == c2);
    assert_true(g->sink && g != c1 && g->type == MSM_STAT_GAUGE);
    assert_true(h->sink && h->type == MSM_STAT_HISTOGRAM);
    assert_true(t->sink && t->type == MSM_STAT_TEXT);
    assert_false(ok->sink || ok->hidden);
    msm_stat_add(c1, 5);
    msm_stat_set(g, 7);
    msm_stat_record(h, 3);
    msm_stat_set_text(t, "v1");
    assert_int_equal(msm_stat_value(c1), 0);
    assert_int_equal(msm_stat_value(g), 0);
    assert_null(t->text);
    assert_ptr_equal(msm_stat_ref(c1), c1);
    msm_stat_unref(c1);
    msm_stat_unref(c1);
    msm_stat_unref(c2);
    msm_stat_unref(g);
    msm_stat_unref(h);
    msm_stat_unref(t);
    assert_null(msm_stats_find(st, "cluster.a.upstream_cx_active"));
    /* Out of the scope: as before. */
    struct msm_stat *d = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.a.upstream_cx_total");
    assert_false(d->sink);
    assert_true(d->detached);
    msm_stat_inc(d);
    assert_int_equal(msm_stat_value(d), 1);
    msm_stat_unref(d);
    msm_stat_unref(ok);
    msm_stats_store_free(st);
}

/* msm_stats_get_join classifies a block's prefix once: its verdicts must be those of the full
 * matcher, whatever the patterns. */
static void test_join_verdicts(void **state)
{
    (void)state;
    static const char *const cfgs[] = {
        /* Istio's sidecar bootstrap */
        ("{\"stats_matcher\": {\"inclusion_list\": {\"patterns\": [{\"prefix\": \"reporter=\"}, "
         "{\"prefix\": \"cluster_manager\"}, {\"prefix\": \"listener_manager\"}, "
         "{\"prefix\": \"server\"}, {\"prefix\": \"cluster.xds-grpc\"}, {\"prefix\": \"wasm\"}, "
         "{\"suffix\": \"rbac.allowed\"}, {\"suffix\": \"rbac.denied\"}, "
         "{\"suffix\": \"shadow_allowed\"}, {\"suffix\": \"shadow_denied\"}, "
         "{\"safe_regex\": {\"regex\": \"vhost\\\\..*\\\\.route\\\\..*\"}}, "
         "{\"prefix\": \"component\"}, {\"prefix\": \"istio\"}]}}}"),
        ("{\"stats_matcher\": {\"exclusion_list\": {\"patterns\": [{\"prefix\": \"cluster.b.up\"}, "
         "{\"exact\": \"cluster.a.version\"}, {\"contains\": \"_cx_\"}, "
         "{\"suffix\": \"_ms\"}, {\"prefix\": \"cluster.c\", \"ignore_case\": true}, "
         "{\"safe_regex\": {\"regex\": \"cluster\\\\.(a|d)\\\\..*total\"}}]}}}"),
        ("{\"stats_matcher\": {\"inclusion_list\": {\"patterns\": [{\"prefix\": \"cluster.a.\"}, "
         "{\"safe_regex\": {\"regex\": \"clu.*_rq_.*\"}}]}}}"),
    };
    static const char *const prefixes[] = {
        "cluster.a.", "cluster.b.", "cluster.C.", "cluster.d.", "cluster.xds-grpc.", "vhost.",
        "vhost.x.route.", "server.", "cluster.a.circuit_breakers.default.", "c", "",
    };
    static const char *const names[] = {
        "upstream_cx_total", "upstream_rq_total", "version", "rbac.allowed", "shadow_denied",
        "upstream_cx_length_ms", "r.y", "update_attempt",
    };
    for (size_t c = 0; c < sizeof(cfgs) / sizeof(*cfgs); c++) {
        struct msm_stats_store *st = store_with_matcher(cfgs[c]);
        for (size_t p = 0; p < sizeof(prefixes) / sizeof(*prefixes); p++) {
            for (size_t n = 0; n < sizeof(names) / sizeof(*names); n++) {
                char full[256];
                snprintf(full, sizeof(full), "%s%s", prefixes[p], names[n]);
                bool want = msm_stats_rejects(st, full);
                struct msm_stat *s =
                    msm_stats_get_join(st, MSM_STAT_GAUGE, prefixes[p], names[n]);
                if (s->hidden != want) {
                    fail_msg("config %zu, '%s': join says %d, matcher %d", c, full, s->hidden,
                             want);
                }
                msm_stat_unref(s);
            }
        }
        msm_stats_store_free(st);
    }
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

/* Export views of extracted tags: interned (two stats of one family and cluster share the
 * strings), long names and long labels (past the stack buffers), quotes escaped. */
static void test_export_views(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats_store_new();
    struct msm_err err = {{0}};
    assert_int_equal(msm_stats_configure(st, NULL, NULL, 0, &err), 0);
    struct msm_stat *a = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.c1.upstream_rq_200");
    struct msm_stat *b = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.c2.upstream_rq_200");
    struct msm_stat *c = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.c1.upstream_rq_503");
    const struct msm_stat_export *ea = msm_stat_export(a);
    const struct msm_stat_export *eb = msm_stat_export(b);
    const struct msm_stat_export *ec = msm_stat_export(c);
    assert_string_equal(ea->tag_name, "cluster.upstream_rq");
    assert_string_equal(ea->prom_name, "envoy_cluster_upstream_rq");
    assert_string_equal(ea->prom_labels, "envoy_response_code=\"200\",envoy_cluster_name=\"c1\"");
    assert_int_equal(ea->n_tags, 2);
    assert_ptr_equal(ea->tag_name, eb->tag_name);
    assert_ptr_equal(ea->prom_name, ec->prom_name);
    assert_ptr_not_equal(ea->prom_labels, ec->prom_labels);
    /* a 700-byte cluster name with a quote: the labels exceed 1 KiB once escaped */
    char name[800], want[1600];
    memcpy(name, "cluster.", 8);
    for (int i = 0; i < 700; i++) {
        name[8 + i] = i % 100 == 50 ? '"' : 'x';
    }
    strcpy(name + 708, ".upstream_cx_total");
    struct msm_stat *d = msm_stats_get(st, MSM_STAT_COUNTER, name);
    const struct msm_stat_export *ed = msm_stat_export(d);
    assert_string_equal(ed->tag_name, "cluster.upstream_cx_total");
    size_t k = (size_t)sprintf(want, "envoy_cluster_name=\"");
    for (int i = 0; i < 700; i++) {
        if (i % 100 == 50) {
            want[k++] = '\\';
        }
        want[k++] = name[8 + i];
    }
    strcpy(want + k, "\"");
    assert_string_equal(ed->prom_labels, want);
    /* a name of 600 bytes nobody extracts from keeps its name */
    memset(name, 'y', 600);
    name[600] = '\0';
    struct msm_stat *e = msm_stats_get(st, MSM_STAT_COUNTER, name);
    assert_string_equal(msm_stat_export(e)->tag_name, name);
    assert_string_equal(msm_stat_export(e)->prom_labels, "");
    msm_stat_unref(a);
    msm_stat_unref(b);
    msm_stat_unref(c);
    msm_stat_unref(d);
    msm_stat_unref(e);
    msm_stats_store_free(st);
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

static int cmp_item(const void *a, const void *b)
{
    return strcmp(((const struct msm_sort_item *)a)->key, ((const struct msm_sort_item *)b)->key);
}

/* The stepped merge sort agrees with strcmp order on keys with long shared
 * prefixes, keys that are prefixes of others, bytes >= 0x80, duplicates, any step budget. */
static void test_sort_prefixes(void **state)
{
    (void)state;
    static const char *parts[] = {"cluster.outbound|9080||svc-1", "cluster.outbound|9080||svc-10",
                                  "cluster.outbound|908", "cluster.", "c", "", "\xc3\xa9x",
                                  ".upstream_cx_total", ".upstream_cx_total_", "abcdefgh",
                                  "abcdefghi", "abcdefgh\x7f", "abcdefgh\x80"};
    static const size_t sizes[] = {0, 1, 2, 3, 17, 300, 2000};
    static const size_t budgets[] = {1, 7, 1000000};
    unsigned seed = 11;
    for (size_t z = 0; z < MSM_ARRAY_SIZE(sizes); z++) {
        size_t n = sizes[z];
        char(*keys)[96] = calloc(n + 1, sizeof(*keys));
        struct msm_sort_item *a = calloc(n + 1, sizeof(*a));
        struct msm_sort_item *b = calloc(n + 1, sizeof(*b));
        for (size_t i = 0; i < n; i++) {
            size_t at = 0;
            for (int t = 0; t < 3; t++) {
                seed = seed * 1103515245u + 12345u;
                const char *part = parts[(seed >> 16) % MSM_ARRAY_SIZE(parts)];
                size_t l = strlen(part);
                memcpy(keys[i] + at, part, l);
                at += l;
            }
            keys[i][at] = '\0';
        }
        for (size_t bi = 0; bi < MSM_ARRAY_SIZE(budgets); bi++) {
            for (size_t i = 0; i < n; i++) {
                a[i] = b[i] = (struct msm_sort_item){.key = keys[i], .val = (void *)(uintptr_t)i};
            }
            struct msm_sort s;
            msm_sort_init(&s, a, n);
            while (msm_sort_step(&s, budgets[bi])) {
            }
            qsort(b, n, sizeof(*b), cmp_item);
            for (size_t i = 0; i < n; i++) {
                assert_string_equal(a[i].key, b[i].key);
            }
        }
        free(keys);
        free(a);
        free(b);
    }
}

/* The radix sort agrees with strcmp order on keys with long shared prefixes (at and off 8-byte
 * boundaries), keys that are prefixes of others, bytes >= 0x80, duplicates, groups small and
 * large (insertion and radix paths), and returns a permutation of its input. */
static void test_sort_radix(void **state)
{
    (void)state;
    static const char *parts[] = {"cluster.outbound|9080||svc-1", "cluster.outbound|9080||svc-10",
                                  "cluster.outbound|908", "cluster.", "c", "", "\xc3\xa9x",
                                  ".upstream_cx_total", ".upstream_cx_total_", "abcdefgh",
                                  "abcdefghi", "abcdefgh\x7f", "abcdefgh\x80", "\xff\xff",
                                  "\x01", "12345678abcdefgh"};
    static const size_t sizes[] = {0, 1, 2, 3, 17, 49, 300, 2000, 30000};
    unsigned seed = 7;
    for (size_t z = 0; z < MSM_ARRAY_SIZE(sizes); z++) {
        size_t n = sizes[z];
        char(*keys)[160] = calloc(n + 1, sizeof(*keys));
        struct msm_sort_item *a = calloc(n + 1, sizeof(*a));
        struct msm_sort_item *b = calloc(n + 1, sizeof(*b));
        bool *seen = calloc(n + 1, sizeof(*seen));
        for (size_t i = 0; i < n; i++) {
            size_t at = 0;
            seed = seed * 1103515245u + 12345u;
            int np = 1 + (int)((seed >> 16) % 5);
            for (int t = 0; t < np; t++) {
                seed = seed * 1103515245u + 12345u;
                const char *part = parts[(seed >> 16) % MSM_ARRAY_SIZE(parts)];
                size_t l = strlen(part);
                memcpy(keys[i] + at, part, l);
                at += l;
            }
            if (seed & 0x100) { /* a random tail byte, any value but NUL */
                seed = seed * 1103515245u + 12345u;
                keys[i][at++] = (char)(1 + (seed >> 16) % 255);
            }
            keys[i][at] = '\0';
            a[i] = b[i] = (struct msm_sort_item){.key = keys[i], .val = (void *)(uintptr_t)i};
        }
        msm_sort_radix(a, n);
        qsort(b, n, sizeof(*b), cmp_item);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(a[i].key, b[i].key);
            size_t k = (size_t)(uintptr_t)a[i].val;
            assert_true(k < n && !seen[k] && a[i].key == keys[k]);
            seen[k] = true;
        }
        free(seen);
        free(keys);
        free(a);
        free(b);
    }
}

/* A big store sorts its name order in a thread: the result is the order msm_stats_list gives,
 * cached when collected; a stat created meanwhile makes it stale (not cached, nothing pending);
 * freeing the store while the thread runs joins it (leak check under ASan). */
static void test_order_prefetch(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats_store_new();
    size_t n = MSM_STATS_PREFETCH_MIN + 100;
    struct msm_stat **mine = calloc(n, sizeof(*mine));
    for (size_t i = 0; i < n; i++) {
        mine[i] = msm_stats_getf(st, MSM_STAT_COUNTER, "cluster.c%zu.upstream_rq_%zu", i % 97, i);
    }
    assert_true(msm_stats_order_prefetch(st, false));
    assert_true(msm_stats_order_pending(st));
    for (int k = 0; k < 5000 && msm_stats_order_pending(st); k++) {
        msm_stats_order_wait(st, 10);
        uint64_t gen;
        size_t got_n = 0;
        struct msm_stat **got = msm_stats_order_get(st, MSM_STATS_ORDER_NAME, msm_stats_cmp_name,
                                                    &got_n, &gen);
        if (got) {
            size_t want_n = 0;
            struct msm_stat **want = msm_stats_list(st, &want_n);
            assert_int_equal(got_n, want_n);
            for (size_t i = 0; i < got_n; i++) {
                assert_ptr_equal(got[i], want[i]);
            }
            msm_stats_list_free(want, want_n);
            msm_stats_list_free(got, got_n);
            break;
        }
    }
    assert_false(msm_stats_order_pending(st));
    assert_false(msm_stats_order_prefetch(st, false)); /* the cached order is fresh */
    /* stale: a stat comes while the thread sorts */
    msm_stat_unref(mine[0]);
    assert_true(msm_stats_order_prefetch(st, false));
    struct msm_stat *late = msm_stats_get(st, MSM_STAT_GAUGE, "aaa.late");
    while (msm_stats_order_pending(st)) {
        msm_stats_order_wait(st, 10);
        uint64_t gen;
        size_t got_n = 0;
        assert_null(msm_stats_order_get(st, MSM_STATS_ORDER_NAME, msm_stats_cmp_name, &got_n,
                                        &gen));
    }
    size_t k = 0;
    struct msm_stat **v = msm_stats_list_ordered(st, MSM_STATS_ORDER_NAME, msm_stats_cmp_name,
                                                 NULL, &k);
    assert_int_equal(k, n);
    assert_string_equal(v[0]->name, "aaa.late");
    msm_stats_list_free(v, k);
    msm_stat_unref(late);
    /* freed while sorting */
    assert_true(msm_stats_order_prefetch(st, false));
    for (size_t i = 1; i < n; i++) {
        msm_stat_unref(mine[i]);
    }
    free(mine);
    msm_stats_store_free(st);
}

/* With its export pass, the thread computes export views from the end of the order while this
 * thread computes them from the start (and drops stats meanwhile): every view equals the one a
 * single-threaded store computes (Envoy's default tags, regex and token extractors, session
 * labels of their own). Run under TSan (-DMSM_SANITIZE=thread) for the data races. */
static void test_order_prefetch_exports(void **state)
{
    (void)state;
    /* name: part 0, a number, part 1, a number, part 2 */
    static const char *parts[][3] = {{"cluster.c", ".upstream_rq_", ""},
                                     {"http.in", ".downstream_rq_", "xx"},
                                     {"listener.10.0.0.", "_", ".downstream_cx_total"},
                                     {"cluster.outbound|90", "||s", ".ns.svc.cluster.local.x"},
                                     {"rtsp.r", ".msm.rtsp_session.s", ".rx_bytes"},
                                     {"server.x", ".y", ""}};
    struct msm_err err = {{0}};
    struct msm_stats_store *st = msm_stats_store_new(), *ref = msm_stats_store_new();
    assert_int_equal(msm_stats_configure(st, NULL, NULL, 0, &err), 0);
    assert_int_equal(msm_stats_configure(ref, NULL, NULL, 0, &err), 0);
    size_t n = MSM_STATS_PREFETCH_MIN + 3000;
    struct msm_stat **mine = calloc(n, sizeof(*mine)), **refs = calloc(n, sizeof(*refs));
    char name[256];
    for (size_t i = 0; i < n; i++) {
        const char *const *pt = parts[i % MSM_ARRAY_SIZE(parts)];
        snprintf(name, sizeof(name), "%s%zu%s%zu%s", pt[0], i % 89, pt[1], i, pt[2]);
        mine[i] = msm_stats_get(st, MSM_STAT_COUNTER, name);
        refs[i] = msm_stats_get(ref, MSM_STAT_COUNTER, name);
    }
    for (int round = 0; round < 2; round++) {
        assert_true(msm_stats_order_prefetch(st, true));
        while (msm_stats_order_pending(st)) {
            /* the second time as a cold render does: views in hash-slot order while the
             * thread sorts (its export pass skips them) */
            while (round == 1 && !msm_stats_order_sorted(st) && msm_stats_prewarm(st, 512)) {
            }
            msm_stats_order_wait(st, 10);
            uint64_t gen;
            size_t got_n = 0;
            struct msm_stat **got = msm_stats_order_get(st, MSM_STATS_ORDER_NAME,
                                                        msm_stats_cmp_name, &got_n, &gen);
            if (!got) {
                continue;
            }
            /* the thread exports from the end meanwhile; a stat dies (kept until joined) */
            msm_stat_unref(mine[n - 1 - (size_t)round]);
            mine[n - 1 - (size_t)round] = NULL;
            for (size_t i = 0; i < got_n; i++) {
                assert_non_null(msm_stat_export(got[i]));
            }
            msm_stats_order_release(st);
            msm_stats_list_free(got, got_n);
        }
        for (size_t i = 0; i < n; i++) {
            if (!mine[i]) {
                continue;
            }
            const struct msm_stat_export *a = msm_stat_export(mine[i]);
            const struct msm_stat_export *b = msm_stat_export(refs[i]);
            assert_string_equal(a->tag_name, b->tag_name);
            assert_string_equal(a->prom_name, b->prom_name);
            assert_string_equal(a->prom_labels, b->prom_labels);
            assert_int_equal(a->n_tags, b->n_tags);
            assert_int_equal(a->own_labels, b->own_labels);
            assert_int_equal(a->prom_name_len, strlen(a->prom_name));
            assert_int_equal(a->prom_labels_len, strlen(a->prom_labels));
        }
        /* reconfiguring joins the thread and recomputes every view */
        assert_int_equal(msm_stats_configure(st, NULL, NULL, 0, &err), 0);
    }
    /* freed while the thread sorts or exports */
    assert_true(msm_stats_order_prefetch(st, true));
    for (size_t i = 0; i < n; i++) {
        msm_stat_unref(mine[i]);
        msm_stat_unref(refs[i]);
    }
    free(mine);
    free(refs);
    msm_stats_store_free(st);
    msm_stats_store_free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_share_and_remove),
        cmocka_unit_test(test_many_and_list),
        cmocka_unit_test(test_histogram_and_block),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_rejected_not_stored),
        cmocka_unit_test(test_sink_scope),
        cmocka_unit_test(test_join_verdicts),
        cmocka_unit_test(test_export_views),
        cmocka_unit_test(test_sort_prefixes),
        cmocka_unit_test(test_sort_radix),
        cmocka_unit_test(test_order_prefetch),
        cmocka_unit_test(test_order_prefetch_exports),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
