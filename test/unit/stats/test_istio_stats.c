/* Istio's standard metric labels (src/stats/istio_stats.c) against istio/proxy's expectation
 * files (fixtures/istio/metrics/ *.yaml.tmpl): names, order and values for the client
 * (reporter=source) and server (reporter=destination) sides, the PluginConfig overrides, the
 * series and istio_build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "stats/config.pb-c.h"

#include "common/alloc.h"
#include "config/pbjson.h"
#include "stats/istio_stats.h"
#include "stats/stats.h"

#define METRICS MSM_SHARED_DIR "/fixtures/istio/metrics/"

/* The label list of a metric expectation file: "- name: x / value: y" pairs, with Go template
 * conditionals resolved to their "else" branch (or skipped when they have none, unless
 * <with_if>). */
struct expected {
    char name[64][64];
    char value[64][128];
    int n;
};

static void load_expected(const char *file, bool with_if, struct expected *e)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        fail_msg("cannot open %s", file);
    }
    memset(e, 0, sizeof(*e));
    char line[512];
    int mode = 0; /* 0 normal, 1 inside if (skip unless with_if), 2 inside else */
    bool in_labels = false;
    while (fgets(line, sizeof(line), f)) {
        if (strstr(line, "{{- if")) {
            mode = 1;
            continue;
        }
        if (strstr(line, "{{- else")) {
            mode = 2;
            continue;
        }
        if (strstr(line, "{{- end")) {
            mode = 0;
            continue;
        }
        if (mode == 1 && !with_if) {
            continue;
        }
        if (strstr(line, "label:")) {
            in_labels = true;
            continue;
        }
        char *p;
        if (in_labels && (p = strstr(line, "- name: "))) {
            snprintf(e->name[e->n], sizeof(e->name[0]), "%s", p + 8);
            e->name[e->n][strcspn(e->name[e->n], "\r\n")] = '\0';
        } else if (in_labels && (p = strstr(line, "value: "))) {
            p += 7;
            if (*p == '"') {
                p++;
            }
            snprintf(e->value[e->n], sizeof(e->value[0]), "%s", p);
            e->value[e->n][strcspn(e->value[e->n], "\"\r\n")] = '\0';
            e->n++;
        }
    }
    fclose(f);
}

static void set_node(const char *json)
{
    struct msm_err err = {{0}};
    ProtobufCMessage *n = msm_pbjson_decode_text(&envoy__config__core__v3__node__descriptor, json,
                                                 strlen(json), NULL, &err);
    if (!n) {
        fail_msg("%s", err.msg);
    }
    msm_istio_set_node(n);
    protobuf_c_message_free_unpacked(n, NULL);
}

static struct msm_istio_config *config(const char *json, int direction,
                                       struct msm_stats_store *st)
{
    struct msm_err err = {{0}};
    ProtobufCMessage *p = msm_pbjson_decode_text(&stats__plugin_config__descriptor, json,
                                                 strlen(json), NULL, &err);
    if (!p) {
        fail_msg("%s", err.msg);
    }
    struct msm_istio_config *c = msm_istio_config_new(p, direction, st, &err);
    protobuf_c_message_free_unpacked(p, NULL);
    assert_non_null(c);
    return c;
}

static void check(const struct msm_istio_config *c, const char *metric,
                  const struct msm_istio_conn *conn, const struct expected *e)
{
    const char *names[64], *values[64];
    int n = msm_istio_labels(c, metric, conn, names, values, 64);
    for (int i = 0; i < n && i < e->n; i++) {
        if (strcmp(names[i], e->name[i]) != 0 || strcmp(values[i], e->value[i]) != 0) {
            fail_msg("%s label %d: got %s=\"%s\", want %s=\"%s\"", metric, i, names[i],
                     values[i], e->name[i], e->value[i]);
        }
    }
    assert_int_equal(n, e->n);
}

static const struct msm_istio_peer ratings = {
    .workload_name = "ratings-v1", .namespace_name = "default", .canonical_name = "ratings",
    .canonical_revision = "version-1", .app_name = "ratings", .app_version = "v1",
    .cluster_id = "server-cluster"};
static const struct msm_istio_peer productpage = {
    .workload_name = "productpage-v1", .namespace_name = "default",
    .canonical_name = "productpage-v1", .canonical_revision = "version-1",
    .app_name = "productpage", .app_version = "v1", .cluster_id = "client-cluster"};

static void test_client_labels(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats_store_new();
    set_node("{\"metadata\": {\"WORKLOAD_NAME\": \"productpage-v1\", \"NAMESPACE\": \"default\","
             " \"CLUSTER_ID\": \"client-cluster\", \"ISTIO_VERSION\": \"1.24.0\", \"LABELS\": {"
             " \"app\": \"productpage\", \"version\": \"v1\","
             " \"service.istio.io/canonical-name\": \"productpage-v1\","
             " \"service.istio.io/canonical-revision\": \"version-1\"}}}");
    struct msm_istio_config *c = config("{}", 2 /* OUTBOUND */, st);
    assert_int_equal(msm_istio_reporter(c), MSM_ISTIO_CLIENT);
    struct msm_istio_conn conn = {
        .peer = &ratings, .service_host = "server.default.svc.cluster.local",
        .service_name = "server", .peer_san = "spiffe://cluster.local/ns/default/sa/server",
        .local_san = "spiffe://cluster.local/ns/default/sa/client", .response_flags = "-",
        .request_protocol = "tcp"};
    struct expected e;
    load_expected(METRICS "tcp_client_sent_bytes.yaml.tmpl", false, &e);
    check(c, "tcp_sent_bytes_total", &conn, &e);
    /* The series: four counters in the store, exported without envoy_ and with these labels. */
    struct msm_istio_tcp *s = msm_istio_tcp_series(c, &conn);
    assert_ptr_equal(s, msm_istio_tcp_series(c, &conn));
    msm_istio_tcp_opened(s);
    msm_istio_tcp_bytes(s, 120, 7);
    msm_istio_tcp_closed(s);
    size_t n;
    struct msm_stat **v = msm_stats_list(st, &n);
    assert_int_equal(n, 5); /* istio_build + 4 */
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        const struct msm_stat_export *x = msm_stat_export(v[i]);
        if (!strcmp(x->prom_name, "istio_tcp_sent_bytes_total")) {
            assert_int_equal(msm_stat_value(v[i]), 120);
            assert_non_null(strstr(x->prom_labels, "reporter=\"source\",source_workload="
                                                   "\"productpage-v1\""));
            found++;
        } else if (!strcmp(x->prom_name, "istio_build")) {
            assert_string_equal(x->prom_labels, "component=\"proxy\",tag=\"1.24.0\"");
            assert_int_equal(msm_stat_value(v[i]), 1);
            found++;
        }
    }
    assert_int_equal(found, 2);
    msm_stats_list_free(v, n);
    /* Without peer information every peer label is unknown (latest for the revision). */
    struct msm_istio_conn bare = {.request_protocol = "tcp"};
    const char *names[64], *values[64];
    int k = msm_istio_labels(c, "tcp_sent_bytes_total", &bare, names, values, 64);
    assert_int_equal(k, 23);
    assert_string_equal(values[9], "unknown");  /* destination_workload */
    assert_string_equal(values[16], "latest"); /* destination_canonical_revision */
    assert_string_equal(values[21], "-");      /* response_flags */
    msm_istio_config_free(c);
    msm_istio_shutdown();
    msm_stats_store_free(st);
}

static void test_server_labels_and_overrides(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats_store_new();
    set_node("{\"metadata\": {\"WORKLOAD_NAME\": \"ratings-v1\", \"NAMESPACE\": \"default\","
             " \"CLUSTER_ID\": \"server-cluster\", \"LABELS\": {\"app\": \"ratings\","
             " \"version\": \"v1\", \"service.istio.io/canonical-name\": \"ratings\","
             " \"service.istio.io/canonical-revision\": \"version-1\"}}}");
    struct msm_istio_conn conn = {
        .peer = &productpage, .service_host = "server.default.svc.cluster.local",
        .service_name = "server", .peer_san = "spiffe://cluster.local/ns/default/sa/client",
        .local_san = "spiffe://cluster.local/ns/default/sa/server", .response_flags = "-",
        .request_protocol = "tcp"};
    struct msm_istio_config *c = config("{}", 1 /* INBOUND */, st);
    struct expected e;
    load_expected(METRICS "tcp_server_connection_open.yaml.tmpl", false, &e);
    check(c, "tcp_connections_opened_total", &conn, &e);
    msm_istio_config_free(c);
    /* EnableAdditionalLabels: a "role" dimension added to every metric. */
    c = config("{\"metrics\": [{\"dimensions\": {\"role\": \"'client'\"}}]}", 1, st);
    load_expected(METRICS "tcp_server_connection_open.yaml.tmpl", false, &e);
    snprintf(e.name[e.n], sizeof(e.name[0]), "role");
    snprintf(e.value[e.n], sizeof(e.value[0]), "client");
    e.n++;
    check(c, "tcp_connections_opened_total", &conn, &e);
    msm_istio_config_free(c);
    /* Removal, replacement by a literal, drop; unsupported expressions give "unknown". */
    c = config("{\"metrics\": [{\"name\": \"tcp_sent_bytes_total\", \"tags_to_remove\": "
               "[\"source_principal\", \"destination_principal\"]},"
               " {\"name\": \"tcp_connections_closed_total\", \"drop\": true},"
               " {\"dimensions\": {\"request_protocol\": \"'mediatcp'\","
               "   \"peer_role\": \"upstream_peer.labels['role'].value\"}}]}",
               1, st);
    const char *names[64], *values[64];
    int n = msm_istio_labels(c, "tcp_sent_bytes_total", &conn, names, values, 64);
    assert_int_equal(n, 22); /* 23 - 2 removed + 1 added */
    for (int i = 0; i < n; i++) {
        assert_true(strcmp(names[i], "source_principal") != 0);
        if (!strcmp(names[i], "request_protocol")) {
            assert_string_equal(values[i], "mediatcp");
        }
    }
    assert_string_equal(names[n - 1], "peer_role");
    assert_string_equal(values[n - 1], "unknown");
    assert_int_equal(msm_istio_labels(c, "tcp_connections_closed_total", &conn, names, values,
                                      64),
                     -1);
    struct msm_istio_tcp *s = msm_istio_tcp_series(c, &conn);
    msm_istio_tcp_closed(s); /* dropped: a no-op */
    msm_istio_config_free(c);
    msm_istio_shutdown();
    msm_stats_store_free(st);
}

/* The HTTP families (reporter=destination): server_request_total.yaml.tmpl's label set, the
 * series (a counter and three histograms), and the gRPC message counters with the peer labels
 * only. */
static void test_http_labels_and_series(void **state)
{
    (void)state;
    struct msm_stats_store *st = msm_stats_store_new();
    set_node("{\"metadata\": {\"WORKLOAD_NAME\": \"ratings-v1\", \"NAMESPACE\": \"default\","
             " \"CLUSTER_ID\": \"server-cluster\", \"LABELS\": {\"app\": \"ratings\","
             " \"version\": \"v1\", \"service.istio.io/canonical-name\": \"ratings\","
             " \"service.istio.io/canonical-revision\": \"version-1\"}}}");
    struct msm_istio_config *c = config("{\"disable_host_header_fallback\": true}", 1, st);
    struct msm_istio_conn conn = {
        .peer = &productpage, .service_host = "server.default.svc.cluster.local",
        .service_name = "server", .host_header = "ignored:8080", .response_flags = "-",
        .request_protocol = "http", .response_code = "200", .grpc_status = ""};
    struct expected e;
    load_expected(METRICS "server_request_total.yaml.tmpl", false, &e);
    /* The template's "else if" branch of response_code reads as one more value (of an unnamed
     * label): keep the final "else" ("200"); GrpcResponseStatus unset is "". */
    int kept = 0;
    for (int i = 0; i < e.n; i++) {
        if (strstr(e.value[i], "{{ .Vars.ResponseCode")) {
            memcpy(e.name[i + 1], e.name[i], sizeof(e.name[0])); /* (gcc -Wrestrict) */
            continue;
        }
        if (!strcmp(e.name[i], "grpc_response_status")) {
            e.value[i][0] = '\0';
        }
        memmove(e.name[kept], e.name[i], sizeof(e.name[0]));
        memmove(e.value[kept], e.value[i], sizeof(e.value[0]));
        kept++;
    }
    e.n = kept;
    assert_int_equal(e.n, 25);
    check(c, "requests_total", &conn, &e);
    check(c, "request_duration_milliseconds", &conn, &e);
    /* gRPC: the protocol and status labels; the message counters have the first 20 only. */
    struct msm_istio_conn g = conn;
    g.request_protocol = "grpc";
    g.grpc_status = "14";
    const char *names[64], *values[64];
    int n = msm_istio_labels(c, "requests_total", &g, names, values, 64);
    assert_int_equal(n, 25);
    assert_string_equal(names[20], "request_protocol");
    assert_string_equal(values[20], "grpc");
    assert_string_equal(names[22], "grpc_response_status");
    assert_string_equal(values[22], "14");
    e.n = 20;
    check(c, "request_messages_total", &g, &e);
    check(c, "response_messages_total", &g, &e);
    /* Series: one per label set; histograms record samples. */
    struct msm_istio_http *hs = msm_istio_http_series(c, &conn);
    assert_ptr_equal(hs, msm_istio_http_series(c, &conn));
    assert_ptr_not_equal((void *)hs, (void *)msm_istio_http_series(c, &g));
    msm_istio_http_request(hs, 7, 120, 3000);
    msm_istio_http_request(hs, 30, 80, 1000);
    struct msm_istio_grpc *gs = msm_istio_grpc_series(c, &g);
    g.response_code = "503"; /* not part of the message counters' labels */
    assert_ptr_equal(gs, msm_istio_grpc_series(c, &g));
    msm_istio_grpc_messages(gs, 3, 2);
    msm_istio_grpc_messages(gs, 1, 0);
    size_t k;
    struct msm_stat **v = msm_stats_list(st, &k);
    int found = 0;
    for (size_t i = 0; i < k; i++) {
        const struct msm_stat_export *x = msm_stat_export(v[i]);
        uint64_t cum[MSM_HIST_BUCKETS], count, sum;
        if (strstr(x->prom_labels, "request_protocol=\"grpc\"")) {
            continue; /* the gRPC request series: not recorded */
        }
        if (!strcmp(x->prom_name, "istio_requests_total")) {
            assert_int_equal(msm_stat_value(v[i]), 2);
            assert_non_null(strstr(x->prom_labels, "response_code=\"200\",grpc_response_status="
                                                   "\"\",response_flags=\"-\","
                                                   "connection_security_policy=\"none\""));
            found++;
        } else if (!strcmp(x->prom_name, "istio_request_duration_milliseconds")) {
            assert_int_equal(v[i]->type, MSM_STAT_HISTOGRAM);
            msm_stat_hist_snapshot(v[i], cum, &count, &sum);
            assert_int_equal(count, 2);
            assert_int_equal(sum, 37);
            found++;
        } else if (!strcmp(x->prom_name, "istio_request_bytes")) {
            msm_stat_hist_snapshot(v[i], cum, &count, &sum);
            assert_int_equal(sum, 200);
            found++;
        } else if (!strcmp(x->prom_name, "istio_response_bytes")) {
            msm_stat_hist_snapshot(v[i], cum, &count, &sum);
            assert_int_equal(sum, 4000);
            found++;
        } else if (!strcmp(x->prom_name, "istio_request_messages_total")) {
            assert_int_equal(msm_stat_value(v[i]), 4);
            assert_null(strstr(x->prom_labels, "request_protocol"));
            assert_non_null(strstr(x->prom_labels, "destination_cluster=\"server-cluster\""));
            found++;
        } else if (!strcmp(x->prom_name, "istio_response_messages_total")) {
            assert_int_equal(msm_stat_value(v[i]), 2);
            found++;
        }
    }
    assert_int_equal(found, 6);
    msm_stats_list_free(v, k);
    msm_istio_config_free(c);
    /* A dropped metric is not created; the others still count. */
    c = config("{\"metrics\": [{\"name\": \"request_bytes\", \"drop\": true}]}", 2, st);
    assert_int_equal(msm_istio_labels(c, "request_bytes", &conn, names, values, 64), -1);
    msm_istio_http_request(msm_istio_http_series(c, &conn), 1, 1, 1);
    msm_istio_config_free(c);
    msm_istio_shutdown();
    msm_stats_store_free(st);
}

static void test_endpoint_metadata(void **state)
{
    (void)state;
    char buf[128];
    struct msm_istio_peer p;
    assert_true(msm_istio_peer_parse("foo-pod;default;foo-service;v1;my-cluster", buf,
                                     sizeof(buf), &p));
    assert_string_equal(p.workload_name, "foo-pod");
    assert_string_equal(p.namespace_name, "default");
    assert_string_equal(p.canonical_name, "foo-service");
    assert_string_equal(p.canonical_revision, "v1");
    assert_string_equal(p.cluster_id, "my-cluster");
    assert_string_equal(p.app_name, "");
    assert_false(msm_istio_peer_parse("", buf, sizeof(buf), &p));
    assert_false(msm_istio_peer_parse("a;b", buf, sizeof(buf), &p));
    assert_false(msm_istio_peer_parse("a;;;b", buf, sizeof(buf), &p));
    assert_false(msm_istio_peer_parse("a;b;c;d", buf, sizeof(buf), &p));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_labels),
        cmocka_unit_test(test_server_labels_and_overrides),
        cmocka_unit_test(test_http_labels_and_series),
        cmocka_unit_test(test_endpoint_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
