/* Cluster manager bookkeeping behind the xDS apply path: the name index, the EDS service index
 * (several clusters on one service name, replacement, removal, cached assignments for clusters
 * added later) and the warming count that the gauges and start-up read, also at the scale of
 * an Istio sidecar with thousands of clusters (bench/xds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"

#include "config/pbjson.h"
#include "stats/stats.h"
#include "upstream/cluster_manager.h"
#include "upstream/packed.h"
#include "upstream_fixtures.h"

static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, const char *json)
{
    struct msm_err err = {{0}};
    ProtobufCMessage *m = msm_pbjson_decode_text(d, json, strlen(json), NULL, &err);
    if (!m) {
        fail_msg("decode: %s\n%s", err.msg, json);
    }
    return m;
}

static int add_eds(struct msm_cluster_manager *cm, const char *name, const char *service,
                   int timeout_s)
{
    char j[512];
    snprintf(j, sizeof(j),
             "{\"name\":\"%s\",\"type\":\"EDS\",\"connect_timeout\":\"%ds\","
             "\"eds_cluster_config\":{\"eds_config\":{\"ads\":{}}%s%s%s}}",
             name, timeout_s, service ? ",\"service_name\":\"" : "", service ? service : "",
             service ? "\"" : "");
    ProtobufCMessage *m = decode(&envoy__config__cluster__v3__cluster__descriptor, j);
    struct msm_err err = {{0}};
    int r = msm_cm_add(cm, m, "1", false, false, &err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (r < 0) {
        fail_msg("msm_cm_add %s: %s", name, err.msg);
    }
    return r;
}

static void apply_cla(struct msm_cluster_manager *cm, const char *service, int n_hosts)
{
    char j[1024];
    int l = snprintf(j, sizeof(j), "{\"cluster_name\":\"%s\",\"endpoints\":[{\"lb_endpoints\":[",
                     service);
    for (int i = 0; i < n_hosts; i++) {
        l += snprintf(j + l, sizeof(j) - (size_t)l,
                      "%s{\"endpoint\":{\"address\":{\"socket_address\":{\"address\":"
                      "\"10.0.0.%d\",\"port_value\":80}}}}",
                      i ? "," : "", i + 1);
    }
    snprintf(j + l, sizeof(j) - (size_t)l, "]}]}");
    ProtobufCMessage *m =
        decode(&envoy__config__endpoint__v3__cluster_load_assignment__descriptor, j);
    struct msm_err err = {{0}};
    assert_int_equal(msm_cm_apply_eds(cm, m, "1", &err), 0);
    protobuf_c_message_free_unpacked(m, NULL);
}

static uint64_t gauge(const char *name)
{
    struct msm_stat *s = msm_stats_find(msm_stats, name);
    assert_non_null(s);
    return atomic_load(&s->value);
}

static int count_eds(const struct msm_cluster_manager *cm)
{
    int n = 0;
    char **names = msm_cm_eds_names(cm, &n);
    msm_strv_free(names, n);
    return n;
}

static void count_cb(void *arg, const char *service, const uint8_t *cla, size_t len,
                     const char *version, double last_updated)
{
    (void)service;
    (void)cla;
    (void)len;
    (void)version;
    (void)last_updated;
    (*(int *)arg)++;
}

static int cached_assignments(const struct msm_cluster_manager *cm)
{
    int n = 0;
    msm_cm_dump_eds(cm, count_cb, &n);
    return n;
}

static void test_shared_service_and_warming(void **state)
{
    (void)state;
    struct msm_cluster_manager *cm = msm_cm_new(NULL, msm_stats, NULL, NULL);
    /* a and b share service "s"; c uses its own name. */
    assert_int_equal(add_eds(cm, "a", "s", 1), MSM_CM_ADDED);
    assert_int_equal(add_eds(cm, "b", "s", 1), MSM_CM_ADDED);
    assert_int_equal(add_eds(cm, "c", NULL, 1), MSM_CM_ADDED);
    assert_int_equal(msm_cm_warming(cm), 3);
    assert_int_equal(gauge("cluster_manager.warming_clusters"), 3);
    assert_int_equal(gauge("cluster_manager.active_clusters"), 0);
    assert_int_equal(count_eds(cm), 2); /* "c" and "s" */
    assert_true(msm_cm_eds_names_changed(cm));
    assert_false(msm_cm_eds_names_changed(cm));

    apply_cla(cm, "s", 2); /* both users of "s" warm */
    assert_int_equal(msm_cm_warming(cm), 1);
    assert_int_equal(gauge("cluster_manager.active_clusters"), 2);
    assert_int_equal(gauge("cluster.a.membership_total"), 2);
    assert_int_equal(gauge("cluster.b.membership_total"), 2);

    /* A modified cluster on a service whose assignment is cached is warm at once. */
    assert_int_equal(add_eds(cm, "a", "s", 2), MSM_CM_MODIFIED);
    assert_int_equal(add_eds(cm, "a", "s", 2), MSM_CM_UNCHANGED);
    assert_int_equal(msm_cm_warming(cm), 1);
    assert_false(msm_cm_eds_names_changed(cm)); /* same service names: no new subscription */
    apply_cla(cm, "s", 3); /* reaches the replacement and b, not the freed entry */
    assert_int_equal(gauge("cluster.a.membership_total"), 3);
    assert_int_equal(gauge("cluster.b.membership_total"), 3);

    /* Removing b leaves a as the only user of "s". */
    assert_int_equal(msm_cm_remove(cm, "b"), 0);
    assert_int_equal(msm_cm_remove(cm, "b"), MSM_ENOTFOUND);
    assert_false(msm_cm_eds_names_changed(cm)); /* a still uses "s" */
    apply_cla(cm, "s", 1);
    assert_int_equal(gauge("cluster.a.membership_total"), 1);
    assert_int_equal(msm_cm_count(cm), 2);

    /* The initial fetch of c times out: warm with no hosts; a timeout of a warm one is moot. */
    assert_int_equal(add_eds(cm, "c", NULL, 3), MSM_CM_MODIFIED); /* c: the only user */
    assert_false(msm_cm_eds_names_changed(cm));
    msm_cm_eds_timeout(cm, "c");
    msm_cm_eds_timeout(cm, "s");
    msm_cm_eds_timeout(cm, "nothing");
    assert_int_equal(msm_cm_warming(cm), 0);
    assert_int_equal(gauge("cluster.c.assignment_timeout_received"), 1);
    assert_int_equal(gauge("cluster.a.assignment_timeout_received"), 0);

    /* Delta removal of "s": a keeps no hosts but stays warm; the cache forgets "s". */
    assert_int_equal(cached_assignments(cm), 1);
    msm_cm_remove_eds(cm, "s");
    assert_int_equal(cached_assignments(cm), 0);
    assert_int_equal(gauge("cluster.a.membership_total"), 0);
    assert_int_equal(msm_cm_warming(cm), 0);

    /* A cluster added after its assignment arrived is warm at once. */
    apply_cla(cm, "late", 2);
    assert_int_equal(add_eds(cm, "late", NULL, 1), MSM_CM_ADDED);
    assert_true(msm_cm_eds_names_changed(cm));
    assert_int_equal(msm_cm_warming(cm), 0);
    assert_int_equal(gauge("cluster.late.membership_total"), 2);
    assert_int_equal(gauge("cluster_manager.active_clusters"), 3);
    assert_int_equal(msm_cm_remove(cm, "c"), 0); /* its last user: "c" leaves the set */
    assert_true(msm_cm_eds_names_changed(cm));
    assert_int_equal(count_eds(cm), 2);
    msm_cm_free(cm);
}

/* Thousands of clusters, as one CDS response of an Istio sidecar: every index stays right
 * through adds, assignments, removals and re-adds. */
static void test_many_clusters(void **state)
{
    (void)state;
    enum { N = 5000 };
    struct msm_cluster_manager *cm = msm_cm_new(NULL, msm_stats, NULL, NULL);
    char name[64];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "outbound|80||svc%d.ns.svc.cluster.local", i);
        add_eds(cm, name, NULL, 1);
    }
    assert_int_equal(msm_cm_count(cm), N);
    assert_int_equal(msm_cm_warming(cm), N);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "outbound|80||svc%d.ns.svc.cluster.local", i);
        apply_cla(cm, name, 1 + i % 3);
        assert_int_equal(msm_cm_warming(cm), N - i - 1);
    }
    assert_int_equal(cached_assignments(cm), N);
    for (int i = 0; i < N; i += 2) {
        snprintf(name, sizeof(name), "outbound|80||svc%d.ns.svc.cluster.local", i);
        assert_int_equal(msm_cm_remove(cm, name), 0);
    }
    assert_int_equal(msm_cm_count(cm), N / 2);
    assert_int_equal(count_eds(cm), N / 2);
    /* Re-added: warm from the cache, with the hosts of its assignment. */
    for (int i = 0; i < N; i += 2) {
        snprintf(name, sizeof(name), "outbound|80||svc%d.ns.svc.cluster.local", i);
        assert_int_equal(add_eds(cm, name, NULL, 1), MSM_CM_ADDED);
    }
    assert_int_equal(msm_cm_warming(cm), 0);
    assert_int_equal(gauge("cluster_manager.active_clusters"), N);
    assert_int_equal(gauge("cluster.outbound|80||svc4998.ns.svc.cluster.local.membership_total"),
                     1 + 4998 % 3);
    msm_cm_free(cm);
}

static void add_eds_src(struct msm_cluster_manager *cm, const char *name, const char *src_json)
{
    char j[768];
    snprintf(j, sizeof(j),
             "{\"name\":\"%s\",\"type\":\"EDS\",\"connect_timeout\":\"1s\","
             "\"eds_cluster_config\":{\"eds_config\":%s}}",
             name, src_json);
    ProtobufCMessage *m = decode(&envoy__config__cluster__v3__cluster__descriptor, j);
    struct msm_err err = {{0}};
    int r = msm_cm_add(cm, m, "1", false, false, &err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (r < 0) {
        fail_msg("msm_cm_add %s: %s", name, err.msg);
    }
}

#define API_SRC(cluster)                                                                          \
    "{\"api_config_source\":{\"api_type\":\"GRPC\",\"transport_api_version\":\"V3\","           \
    "\"grpc_services\":[{\"envoy_grpc\":{\"cluster_name\":\"" cluster "\"}}]}}"

/* EDS subscriptions per stream: every ads/self source is the ADS stream (whatever its timeout),
 * each api_config_source its own; a stream whose clusters are gone comes back empty once. */
static void test_eds_groups(void **state)
{
    (void)state;
    struct msm_cluster_manager *cm = msm_cm_new(NULL, msm_stats, NULL, NULL);
    add_eds_src(cm, "a", "{\"ads\":{}}");
    add_eds_src(cm, "b", "{\"ads\":{},\"initial_fetch_timeout\":\"0s\"}");
    add_eds_src(cm, "c", "{\"self\":{}}");
    add_eds_src(cm, "d", API_SRC("eds-one"));
    add_eds_src(cm, "e", API_SRC("eds-two"));
    add_eds_src(cm, "f", API_SRC("eds-one"));
    int n = 0;
    struct msm_cm_eds_group *g = msm_cm_eds_groups(cm, &n);
    assert_int_equal(n, 3);
    assert_int_equal(g[0].n, 3); /* a, b, c on ADS */
    assert_string_equal(g[0].names[0], "a");
    assert_string_equal(g[0].names[2], "c");
    assert_int_equal(g[1].n, 2); /* d, f */
    assert_string_equal(g[1].names[1], "f");
    assert_int_equal(g[2].n, 1);
    assert_string_equal(g[2].names[0], "e");
    assert_non_null(g[1].source);
    msm_cm_eds_groups_free(g, n);
    /* e leaves: its stream once with no names, then not at all. */
    assert_int_equal(msm_cm_remove(cm, "e"), 0);
    g = msm_cm_eds_groups(cm, &n);
    assert_int_equal(n, 3);
    assert_int_equal(g[2].n, 0);
    assert_non_null(g[2].source);
    msm_cm_eds_groups_free(g, n);
    g = msm_cm_eds_groups(cm, &n);
    assert_int_equal(n, 2);
    msm_cm_eds_groups_free(g, n);
    msm_cm_free(cm);
}

/* The bytes kept for /config_dump: whatever they are, they come back exactly; resources like
 * the reference keep a fraction of their size, others become the reference. */
static void test_packed(void **state)
{
    (void)state;
    struct msm_packed_kind k = {0};
    struct msm_packed p[64];
    uint8_t raw[64][600];
    size_t len[64];
    memset(p, 0, sizeof(p));
    uint32_t x = 12345;
    for (int i = 0; i < 64; i++) {
        if (i % 16 == 15) { /* noise */
            len[i] = 100 + (size_t)i * 7;
            for (size_t j = 0; j < len[i]; j++) {
                x = x * 1103515245u + 12345u;
                raw[i][j] = (uint8_t)(x >> 16);
            }
        } else if (i == 40) {
            len[i] = 10; /* short: kept as is */
            memcpy(raw[i], "tiny bytes", 10);
        } else {
            len[i] = (size_t)snprintf((char *)raw[i], sizeof(raw[i]),
                                      "\x0a\x30outbound|8080||svc%d.ns%d.svc.cluster.local\x12"
                                      "connect_timeout 10s lb LEAST_REQUEST sni "
                                      "outbound_.8080_._.svc%d.ns%d.svc.cluster.local san "
                                      "spiffe://cluster.local/ns/ns%d/sa/default metadata",
                                      i, i % 5, i, i % 5, i % 5);
        }
        msm_packed_set(&k, &p[i], raw[i], len[i]);
        if (i > 0 && i % 16 != 15 && i != 40) {
            assert_true(p[i].len * 3 < len[i]); /* like the reference */
        }
    }
    msm_packed_set(&k, &p[3], raw[4], len[4]); /* replaced */
    memcpy(raw[3], raw[4], len[4]);
    len[3] = len[4];
    for (int i = 0; i < 64; i++) {
        uint8_t *tmp;
        const uint8_t *b = msm_packed_get(&p[i], &tmp);
        assert_non_null(b);
        assert_int_equal(p[i].raw_len, len[i]);
        assert_memory_equal(b, raw[i], len[i]);
        free(tmp);
    }
    for (int i = 0; i < 64; i++) {
        msm_packed_clear(&p[i]);
    }
    msm_packed_kind_deinit(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shared_service_and_warming, msm_test_stats_setup,
                                        msm_test_stats_teardown),
        cmocka_unit_test_setup_teardown(test_many_clusters, msm_test_stats_setup,
                                        msm_test_stats_teardown),
        cmocka_unit_test_setup_teardown(test_eds_groups, msm_test_stats_setup,
                                        msm_test_stats_teardown),
        cmocka_unit_test(test_packed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
