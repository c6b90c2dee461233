/* /stats and /stats/prometheus rendering (src/admin/stats_render.c) over a stats store with
 * Istio's stats_config: exact Prometheus text, grouping and TYPE lines, histogram buckets,
 * custom namespace without the envoy_ prefix, stats_matcher, usedonly, filter, JSON shape. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "envoy/config/metrics/v3/stats.pb-c.h"

#include "admin/stats_render.h"
#include "common/alloc.h"
#include "config/pbjson.h"
#include "stats/sort.h"
#include "stats/stats.h"
#include "stats/tags.h"

static char *render(struct msm_buf *b)
{
    char *s = msm_xmalloc(b->len + 1);
    msm_buf_copyout(b, 0, s, b->len);
    s[b->len] = '\0';
    return s;
}

/* Istio's stats_config (default_golden.json), trimmed to what the test uses. */
static const char *istio_stats_config =
    "{\"use_all_default_tags\": false,"
    " \"stats_tags\": ["
    "  {\"tag_name\": \"cluster_name\", \"regex\": \"^cluster(\\\\.(.+);)\"},"
    "  {\"tag_name\": \"tcp_prefix\", \"regex\": \"^tcp\\\\.((.*?)\\\\.)\\\\w+?$\"},"
    "  {\"regex\": \"_rq(_(\\\\d{3}))$\", \"tag_name\": \"response_code\"}],"
    " \"stats_matcher\": {\"inclusion_list\": {\"patterns\": ["
    "  {\"prefix\": \"reporter=\"}, {\"prefix\": \"cluster_manager\"},"
    "  {\"prefix\": \"listener_manager\"}, {\"prefix\": \"server\"},"
    "  {\"prefix\": \"cluster.xds-grpc\"}, {\"prefix\": \"wasm\"},"
    "  {\"suffix\": \"rbac.allowed\"},"
    "  {\"safe_regex\": {\"regex\": \"vhost\\\\..*\\\\.route\\\\..*\"}},"
    "  {\"prefix\": \"component\"}, {\"prefix\": \"istio\"}, {\"prefix\": \"tcp.\"}]}}}";

static struct msm_stats_store *istio_store(void)
{
    struct msm_stats_store *st = msm_stats_store_new();
    struct msm_err err = {{0}};
    ProtobufCMessage *sc = msm_pbjson_decode_text(
        &envoy__config__metrics__v3__stats_config__descriptor, istio_stats_config,
        strlen(istio_stats_config), NULL, &err);
    if (!sc) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(msm_stats_configure(st, sc, NULL, 0, &err), 0);
    protobuf_c_message_free_unpacked(sc, NULL);
    return st;
}

static void test_prometheus_istio(void **state)
{
    (void)state;
    struct msm_stats_store *st = istio_store();
    struct msm_stat *a = msm_stats_get(st, MSM_STAT_GAUGE, "cluster.xds-grpc;.upstream_cx_active");
    struct msm_stat *b = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.xds-grpc;.upstream_rq_200");
    struct msm_stat *hidden = msm_stats_get(st, MSM_STAT_COUNTER,
                                            "cluster.outbound|80||x;.upstream_cx_total");
    struct msm_stat *up = msm_stats_get(st, MSM_STAT_GAUGE, "server.uptime");
    struct msm_stat *t1 = msm_stats_get(st, MSM_STAT_COUNTER, "tcp.in1.downstream_cx_total");
    struct msm_stat *t2 = msm_stats_get(st, MSM_STAT_COUNTER, "tcp.in2.downstream_cx_total");
    struct msm_stat *h = msm_stats_get(st, MSM_STAT_HISTOGRAM,
                                       "cluster.xds-grpc;.upstream_cx_connect_ms");
    struct msm_tag tags[2] = {{(char *)"component", (char *)"proxy"},
                              {(char *)"tag", (char *)"1.24.0"}};
    struct msm_stat *build = msm_stats_get_tagged(st, MSM_STAT_GAUGE, "istiocustom.istio_build",
                                                  tags, 2);
    assert_string_equal(build->name, "istiocustom.istio_build.component.proxy.tag.1.24.0");
    msm_stat_set(a, 1);
    msm_stat_add(b, 7);
    msm_stat_inc(hidden);
    msm_stat_set(up, 42);
    msm_stat_inc(t1);
    msm_stat_add(t2, 2);
    msm_stat_set(build, 1);
    msm_stat_record(h, 3);
    msm_stat_record(h, 700);
    assert_true(hidden->hidden);
    struct msm_buf out;
    msm_buf_init(&out);
    struct msm_stats_query q = {.types = MSM_SR_ALL};
    size_t fams = msm_stats_render_prometheus(st, &q, &out);
    char *text = render(&out);
    const char *want =
        "# TYPE envoy_cluster_upstream_rq counter\n"
        "envoy_cluster_upstream_rq{cluster_name=\"xds-grpc\",response_code=\"200\"} 7\n"
        "# TYPE envoy_tcp_downstream_cx_total counter\n"
        "envoy_tcp_downstream_cx_total{tcp_prefix=\"in1\"} 1\n"
        "envoy_tcp_downstream_cx_total{tcp_prefix=\"in2\"} 2\n"
        "# TYPE envoy_cluster_upstream_cx_active gauge\n"
        "envoy_cluster_upstream_cx_active{cluster_name=\"xds-grpc\"} 1\n"
        "# TYPE envoy_server_uptime gauge\n"
        "envoy_server_uptime{} 42\n"
        "# TYPE istio_build gauge\n"
        "istio_build{component=\"proxy\",tag=\"1.24.0\"} 1\n"
        "# TYPE envoy_cluster_upstream_cx_connect_ms histogram\n";
    if (strncmp(text, want, strlen(want)) != 0) {
        fail_msg("got:\n%s\nwant prefix:\n%s", text, want);
    }
    assert_int_equal(fams, 6);
    assert_non_null(strstr(text, "envoy_cluster_upstream_cx_connect_ms_bucket{cluster_name="
                                 "\"xds-grpc\",le=\"0.5\"} 0\n"
                                 "envoy_cluster_upstream_cx_connect_ms_bucket{cluster_name="
                                 "\"xds-grpc\",le=\"1\"} 0\n"
                                 "envoy_cluster_upstream_cx_connect_ms_bucket{cluster_name="
                                 "\"xds-grpc\",le=\"5\"} 1\n"));
    assert_non_null(strstr(text, "le=\"3600000\"} 2\n"));
    assert_non_null(strstr(text, "envoy_cluster_upstream_cx_connect_ms_bucket{cluster_name="
                                 "\"xds-grpc\",le=\"+Inf\"} 2\n"
                                 "envoy_cluster_upstream_cx_connect_ms_sum{cluster_name="
                                 "\"xds-grpc\"} 703\n"
                                 "envoy_cluster_upstream_cx_connect_ms_count{cluster_name="
                                 "\"xds-grpc\"} 2\n"));
    assert_null(strstr(text, "outbound"));
    free(text);
    msm_buf_deinit(&out);
    /* A stat the stats_matcher rejects is detached from the store: its holder releases it. */
    msm_stat_unref(hidden);
    msm_stats_store_free(st);
}

static void test_prometheus_escaping_and_usedonly(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats_store_new();
    struct msm_tag tags[1] = {{(char *)"a.b-c", (char *)"q\"uo\\te\nnl"}};
    struct msm_stat *s = msm_stats_get_tagged(st, MSM_STAT_COUNTER, "istiocustom.x-y", tags, 1);
    struct msm_stat *unused = msm_stats_get(st, MSM_STAT_COUNTER, "a.unused");
    struct msm_stat *digit = msm_stats_get_tagged(st, MSM_STAT_COUNTER, "istiocustom.1bad", NULL,
                                                  0);
    msm_stat_inc(s);
    msm_stat_inc(digit);
    struct msm_buf out;
    msm_buf_init(&out);
    struct msm_stats_query q = {.types = MSM_SR_ALL, .usedonly = true};
    msm_stats_render_prometheus(st, &q, &out);
    char *text = render(&out);
    /* Custom namespace: no envoy_ prefix, sanitized; a name starting with a digit is left out. */
    assert_string_equal(text, "# TYPE x_y counter\nx_y{a_b_c=\"q\\\"uo\\\\te\\nnl\"} 1\n");
    free(text);
    msm_buf_deinit(&out);
    msm_stat_unref(unused);
    msm_stats_store_free(st);
}

static void test_text_and_json(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats_store_new();
    struct msm_stat *c = msm_stats_get(st, MSM_STAT_COUNTER, "b.count");
    struct msm_stat *g = msm_stats_get(st, MSM_STAT_GAUGE, "a.gauge");
    struct msm_stat *t = msm_stats_get(st, MSM_STAT_TEXT, "z.version_text");
    struct msm_stat *h = msm_stats_get(st, MSM_STAT_HISTOGRAM, "c.hist");
    msm_stats_get(st, MSM_STAT_HISTOGRAM, "d.empty"); /* freed with the store */
    msm_stat_add(c, 5);
    msm_stat_set(g, 3);
    msm_stat_set_text(t, "v\"1");
    msm_stat_record(h, 10);
    msm_stats_flush_histograms(st); /* the 10 falls in the closed interval */
    struct msm_buf out;
    msm_buf_init(&out);
    struct msm_stats_query q = {.types = MSM_SR_ALL};
    msm_stats_render_text(st, &q, &out);
    char *text = render(&out);
    const char *want = "z.version_text: \"v\\\"1\"\n"
                       "a.gauge: 3\n"
                       "b.count: 5\n"
                       "c.hist: P0(5,5) P25(6.25,6.25) P50(7.5,7.5) P75(8.75,8.75) P90(9.5,9.5) "
                       "P95(9.75,9.75) P99(9.95,9.95) P99.5(9.975,9.975) "
                       "P99.9(9.995000000000001,9.995000000000001) P100(10,10)\n"
                       "d.empty: No recorded values\n";
    if (strcmp(text, want) != 0) {
        fail_msg("got:\n%s\nwant:\n%s", text, want);
    }
    free(text);
    msm_buf_deinit(&out);
    /* filter= and type= */
    int ec;
    PCRE2_SIZE eo;
    q.filter = pcre2_compile((PCRE2_SPTR) "^(a|b)\\.", PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
    q.types = MSM_SR_COUNTERS;
    msm_buf_init(&out);
    msm_stats_render_text(st, &q, &out);
    text = render(&out);
    assert_string_equal(text, "b.count: 5\n");
    free(text);
    msm_buf_deinit(&out);
    pcre2_code_free(q.filter);
    /* JSON: Envoy's shape, and it parses */
    q.filter = NULL;
    q.types = MSM_SR_ALL;
    msm_buf_init(&out);
    msm_stats_render_json(st, &q, &out);
    text = render(&out);
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j) {
        fail_msg("bad JSON (%s): %s", je.text, text);
    }
    json_t *stats = json_object_get(j, "stats");
    assert_int_equal(json_array_size(stats), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(stats, 0), "value")),
                        "v\"1");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(stats, 2), "value")), 5);
    json_t *hist = json_object_get(json_array_get(stats, 3), "histograms");
    assert_int_equal(json_array_size(json_object_get(hist, "supported_quantiles")), 10);
    json_t *cq = json_object_get(hist, "computed_quantiles");
    assert_int_equal(json_array_size(cq), 2);
    json_t *v0 = json_array_get(json_object_get(json_array_get(cq, 1), "values"), 0);
    assert_true(json_is_null(json_object_get(v0, "cumulative")));
    json_decref(j);
    free(text);
    msm_buf_deinit(&out);
    msm_stats_store_free(st);
}

static void test_matcher_modes(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats_store_new();
    struct msm_stat *early = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.a.x");
    const char *cfg = "{\"stats_matcher\": {\"exclusion_list\": {\"patterns\": "
                      "[{\"prefix\": \"cluster.a.\"}]}}}";
    struct msm_err err = {{0}};
    ProtobufCMessage *sc = msm_pbjson_decode_text(
        &envoy__config__metrics__v3__stats_config__descriptor, cfg, strlen(cfg), NULL, &err);
    assert_non_null(sc);
    assert_int_equal(msm_stats_configure(st, sc, NULL, 0, &err), 0);
    protobuf_c_message_free_unpacked(sc, NULL);
    /* Stats created before the matcher are re-evaluated. */
    assert_true(early->hidden);
    struct msm_stat *other = msm_stats_get(st, MSM_STAT_COUNTER, "cluster.b.x");
    assert_false(other->hidden);
    size_t n;
    struct msm_stat **v = msm_stats_list(st, &n);
    assert_int_equal(n, 1);
    msm_stats_list_free(v, n);
    cfg = "{\"stats_matcher\": {\"reject_all\": true}}";
    sc = msm_pbjson_decode_text(&envoy__config__metrics__v3__stats_config__descriptor, cfg,
                                strlen(cfg), NULL, &err);
    assert_int_equal(msm_stats_configure(st, sc, NULL, 0, &err), 0);
    protobuf_c_message_free_unpacked(sc, NULL);
    assert_true(other->hidden);
    /* reset_counters */
    msm_stat_add(other, 9);
    msm_stats_reset_counters(st);
    assert_int_equal(msm_stat_value(other), 0);
    msm_stat_unref(early);
    msm_stat_unref(other);
    msm_stats_store_free(st);
}

/* ---- streamed (resumable) renders ---------------------------------------------------------- */

#define N_CLUSTERS 60
static const char *const cluster_stats[] = {"upstream_cx_total", "upstream_rq_200",
                                            "upstream_cx_active", "lb_healthy_panic"};

/* A store with Envoy's default tags and N_CLUSTERS clusters' stats (refs in <v>). */
static struct msm_stats_store *big_store(struct msm_stat **v, size_t *n)
{
    struct msm_stats_store *st = msm_stats_store_new();
    struct msm_err err = {{0}};
    assert_int_equal(msm_stats_configure(st, NULL, NULL, 0, &err), 0);
    size_t k = 0;
    for (int c = N_CLUSTERS - 1; c >= 0; c--) { /* created out of name order */
        for (size_t i = 0; i < MSM_ARRAY_SIZE(cluster_stats); i++) {
            v[k] = msm_stats_getf(st, i == 2 ? MSM_STAT_GAUGE : MSM_STAT_COUNTER,
                                  "cluster.outbound|%d||svc-%d.%s", 9000 + c, c,
                                  cluster_stats[i]);
            msm_stat_add(v[k], (uint64_t)(c * 7 + (int)i));
            k++;
        }
        v[k] = msm_stats_getf(st, MSM_STAT_HISTOGRAM, "cluster.outbound|%d||svc-%d.rq_ms",
                              9000 + c, c);
        msm_stat_record(v[k], (uint64_t)c);
        k++;
    }
    v[k] = msm_stats_get(st, MSM_STAT_TEXT, "server.version_label");
    msm_stat_set_text(v[k++], "1.0 \"x\"");
    *n = k;
    return st;
}

static char *render_stream(struct msm_stats_store *st, enum msm_sr_format fmt, size_t hint,
                           int *calls)
{
    struct msm_stats_query q = {.types = MSM_SR_ALL, .text_readouts = true};
    struct msm_stats_render *r = msm_stats_render_new(st, &q, fmt);
    struct msm_buf out;
    msm_buf_init(&out);
    *calls = 0;
    while (msm_stats_render_next(r, &out, hint)) {
        (*calls)++;
        assert_true(*calls < 100000);
    }
    msm_stats_render_free(r);
    char *s = render(&out);
    msm_buf_deinit(&out);
    return s;
}

/* Slices of any size concatenate to the whole body, on a cold store (the snapshot is sorted in
 * steps) and a warm one (the store's cached order). */
static void test_stream_equals_whole(void **state)
{
    (void)state;
    struct msm_stat *v[N_CLUSTERS * 5 + 1];
    size_t n;
    for (int fmt = MSM_SR_FMT_TEXT; fmt <= MSM_SR_FMT_PROMETHEUS; fmt++) {
        struct msm_stats_store *st = big_store(v, &n);
        int calls;
        char *cold = render_stream(st, (enum msm_sr_format)fmt, 100, &calls);
        assert_true(calls > 20);
        struct msm_stats_query q = {.types = MSM_SR_ALL, .text_readouts = true};
        struct msm_buf whole;
        msm_buf_init(&whole);
        if (fmt == MSM_SR_FMT_TEXT) {
            msm_stats_render_text(st, &q, &whole);
        } else if (fmt == MSM_SR_FMT_JSON) {
            msm_stats_render_json(st, &q, &whole);
        } else {
            assert_int_equal(msm_stats_render_prometheus(st, &q, &whole), 6);
        }
        char *w = render(&whole);
        assert_string_equal(cold, w);
        char *warm = render_stream(st, (enum msm_sr_format)fmt, 1, &calls);
        assert_string_equal(warm, w);
        if (fmt == MSM_SR_FMT_PROMETHEUS) {
            assert_non_null(strstr(w, "envoy_cluster_upstream_cx_total{envoy_cluster_name="
                                      "\"outbound|9007||svc-7\"} 49\n"));
        }
        free(cold);
        free(warm);
        free(w);
        msm_buf_deinit(&whole);
        for (size_t i = 0; i < n; i++) {
            msm_stat_unref(v[i]);
        }
        msm_stats_store_free(st);
    }
}

/* Stats destroyed and created while a render is under way: it renders its snapshot (the
 * destroyed ones stay alive until it ends, then go), never the new ones. */
static void test_stream_snapshot(void **state)
{
    (void)state;
    struct msm_stat *v[N_CLUSTERS * 5 + 1];
    size_t n;
    for (int fmt = MSM_SR_FMT_TEXT; fmt <= MSM_SR_FMT_PROMETHEUS; fmt++) {
        struct msm_stats_store *st = big_store(v, &n);
        int calls;
        char *before = render_stream(st, (enum msm_sr_format)fmt, SIZE_MAX, &calls);
        struct msm_stats_query q = {.types = MSM_SR_ALL, .text_readouts = true};
        struct msm_stats_render *r = msm_stats_render_new(st, &q, (enum msm_sr_format)fmt);
        struct msm_buf out;
        msm_buf_init(&out);
        for (int i = 0; i < 8; i++) { /* into the middle of the body */
            assert_true(msm_stats_render_next(r, &out, 200));
        }
        assert_true(out.len > 0);
        /* xDS removes half of the clusters, adds new ones */
        for (size_t i = 0; i < n / 2; i++) {
            msm_stat_unref(v[i]);
            v[i] = NULL;
        }
        assert_non_null(msm_stats_find(st, "cluster.outbound|9059||svc-59.upstream_rq_200"));
        struct msm_stat *fresh = msm_stats_get(st, MSM_STAT_COUNTER,
                                               "cluster.outbound|1||new.ns;.upstream_rq_200");
        struct msm_stat *first = msm_stats_get(st, MSM_STAT_COUNTER, "aaa.first");
        while (msm_stats_render_next(r, &out, 200)) {
        }
        char *during = render(&out);
        assert_string_equal(during, before);
        assert_null(strstr(during, "new.ns"));
        msm_stats_render_free(r);
        /* the render held the last references */
        assert_null(msm_stats_find(st, "cluster.outbound|9059||svc-59.upstream_rq_200"));
        char *after = render_stream(st, (enum msm_sr_format)fmt, 300, &calls);
        assert_non_null(strstr(after, fmt == MSM_SR_FMT_TEXT ? "aaa.first: 0" : "first"));
        assert_null(strstr(after, "svc-59"));
        free(before);
        free(during);
        free(after);
        msm_buf_deinit(&out);
        msm_stat_unref(fresh);
        msm_stat_unref(first);
        for (size_t i = n / 2; i < n; i++) {
            msm_stat_unref(v[i]);
        }
        msm_stats_store_free(st);
    }
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const struct msm_sort_item *)a)->key, ((const struct msm_sort_item *)b)->key);
}

/* A cold streamed render of a store big enough for the threaded sort (the render computes
 * export views in hash-slot order while the thread sorts, the thread then from the end of the
 * order) equals a whole render of the same stats in a store of their own. */
static void test_stream_prefetch(void **state)
{
    (void)state;
    size_t nc = MSM_STATS_PREFETCH_MIN / 4 + 100, n = 0;
    struct msm_stats_store *st[2];
    struct msm_stat **v = msm_xcalloc(2 * nc * 5, sizeof(*v));
    struct msm_err err = {{0}};
    for (int k = 0; k < 2; k++) {
        st[k] = msm_stats_store_new();
        assert_int_equal(msm_stats_configure(st[k], NULL, NULL, 0, &err), 0);
        for (size_t c = 0; c < nc; c++) {
            for (size_t i = 0; i < 4; i++) {
                v[n] = msm_stats_getf(st[k], i == 2 ? MSM_STAT_GAUGE : MSM_STAT_COUNTER,
                                      "cluster.outbound|%zu||svc-%zu.%s", 9000 + c % 1000, c,
                                      cluster_stats[i]);
                msm_stat_add(v[n++], c * 3 + i);
            }
            v[n] = msm_stats_getf(st[k], MSM_STAT_HISTOGRAM, "cluster.outbound|%zu||svc-%zu.rq_ms",
                                  9000 + c % 1000, c);
            msm_stat_record(v[n++], c);
        }
    }
    int calls;
    char *cold = render_stream(st[0], MSM_SR_FMT_PROMETHEUS, 65536, &calls);
    assert_false(msm_stats_order_prefetch(st[0], false)); /* its order is cached now */
    struct msm_stats_query q = {.types = MSM_SR_ALL, .text_readouts = true};
    struct msm_buf whole;
    msm_buf_init(&whole);
    assert_true(msm_stats_render_prometheus(st[1], &q, &whole) >= 4);
    char *w = render(&whole);
    assert_string_equal(cold, w);
    assert_non_null(strstr(w, "envoy_cluster_rq_ms_bucket{envoy_cluster_name="
                              "\"outbound|9007||svc-7\",le=\"10\"} 1\n"));
    free(cold);
    free(w);
    msm_buf_deinit(&whole);
    for (size_t i = 0; i < n; i++) {
        msm_stat_unref(v[i]);
    }
    free(v);
    msm_stats_store_free(st[0]);
    msm_stats_store_free(st[1]);
}

/* Lines longer than the render's buffer (a histogram's 22 lines are written at once). */
static void test_prometheus_long_labels(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats_store_new();
    size_t len = 300 * 1024;
    char *val = msm_xmalloc(len + 1);
    memset(val, 'v', len);
    val[len] = '\0';
    struct msm_tag tags[1] = {{(char *)"t", val}};
    struct msm_stat *h = msm_stats_get_tagged(st, MSM_STAT_HISTOGRAM, "istiocustom.h", tags, 1);
    struct msm_stat *c = msm_stats_get_tagged(st, MSM_STAT_COUNTER, "istiocustom.c", tags, 1);
    msm_stat_record(h, 7);
    msm_stat_add(c, 5);
    struct msm_buf out;
    msm_buf_init(&out);
    struct msm_stats_query q = {.types = MSM_SR_ALL};
    assert_int_equal(msm_stats_render_prometheus(st, &q, &out), 2);
    char *text = render(&out);
    size_t lines = 0;
    for (const char *p = text; (p = strchr(p, '\n')); p++) {
        lines++;
    }
    assert_int_equal(lines, 2 + 1 + MSM_HIST_BUCKETS + 3);
    char *want = msm_xmalloc(2 * len + 64);
    snprintf(want, 2 * len + 64, "h_bucket{t=\"%s\",le=\"5\"} 0\nh_bucket{t=\"%s\",le=\"10\"} 1\n",
             val, val);
    assert_non_null(strstr(text, want));
    snprintf(want, 2 * len + 64, "h_sum{t=\"%s\"} 7\nh_count{t=\"%s\"} 1\n", val, val);
    assert_non_null(strstr(text, want));
    snprintf(want, 2 * len + 64, "# TYPE c counter\nc{t=\"%s\"} 5\n", val);
    assert_non_null(strstr(text, want));
    free(want);
    free(text);
    free(val);
    msm_buf_deinit(&out);
    msm_stat_unref(h);
    msm_stat_unref(c);
    msm_stats_store_free(st);
}

/* The stepped merge sort agrees with qsort for every size around the run length. */
static void test_sort_steps(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 2, 1023, 1024, 1025, 3000, 5000};
    unsigned seed = 7;
    for (size_t z = 0; z < MSM_ARRAY_SIZE(sizes); z++) {
        size_t n = sizes[z];
        char(*keys)[12] = msm_xcalloc(n + 1, sizeof(*keys));
        struct msm_sort_item *a = msm_xcalloc(n + 1, sizeof(*a));
        struct msm_sort_item *b = msm_xcalloc(n + 1, sizeof(*b));
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            snprintf(keys[i], sizeof(keys[i]), "k%08x", seed);
            a[i] = b[i] = (struct msm_sort_item){.key = keys[i], .val = (void *)(uintptr_t)i};
        }
        struct msm_sort s;
        msm_sort_init(&s, a, n);
        int steps = 0;
        while (msm_sort_step(&s, 97)) {
            steps++;
        }
        qsort(b, n, sizeof(*b), cmp_key);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(a[i].key, b[i].key);
        }
        assert_true(n < 3000 || steps > 10);
        /* abandoning mid-way frees the scratch (leak check under ASan) */
        msm_sort_init(&s, b, n);
        msm_sort_step(&s, n / 2 + 1);
        msm_sort_abandon(&s);
        free(keys);
        free(a);
        free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prometheus_istio),
        cmocka_unit_test(test_prometheus_escaping_and_usedonly),
        cmocka_unit_test(test_text_and_json),
        cmocka_unit_test(test_matcher_modes),
        cmocka_unit_test(test_stream_equals_whole),
        cmocka_unit_test(test_stream_snapshot),
        cmocka_unit_test(test_stream_prefetch),
        cmocka_unit_test(test_prometheus_long_labels),
        cmocka_unit_test(test_sort_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
