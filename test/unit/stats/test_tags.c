/* Tag extraction (src/stats/tags.c): Istio's stats_tags from the bootstrap goldens
 * (use_all_default_tags: false) and Envoy's built-in extractors, against the tag-extracted names
 * and tags Envoy produces for the same stat names (Envoy's tag_extractor_impl_test and
 * well_known_names cases, Istio's Prometheus series). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/metrics/v3/stats.pb-c.h"

#include "common/alloc.h"
#include "config/pbjson.h"
#include "server/options.h"
#include "stats/tags.h"

#define GOLDEN MSM_SHARED_DIR "/fixtures/istio/bootstrap/default_golden.json"

static Envoy__Config__Bootstrap__V3__Bootstrap *load_golden(void)
{
    FILE *f = fopen(GOLDEN, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = msm_xmalloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    struct msm_err err = {{0}};
    struct msm_pbjson_opts o = {.allow_unknown_fields = true};
    const ProtobufCMessageDescriptor *d = &envoy__config__bootstrap__v3__bootstrap__descriptor;
    ProtobufCMessage *m = msm_pbjson_decode_text(d, buf, (size_t)n, &o, &err);
    free(buf);
    if (!m) {
        fail_msg("cannot decode %s: %s", GOLDEN, err.msg);
    }
    return (Envoy__Config__Bootstrap__V3__Bootstrap *)m;
}

/* Expect <name> to become <extracted> with the tags "k=v,k=v" (in order). */
static void expect(struct msm_tag_producer *p, const char *name, const char *extracted,
                   const char *tags)
{
    struct msm_tag *t = NULL;
    int n = 0;
    char *got = msm_tag_producer_produce(p, name, &t, &n);
    char joined[1024] = "";
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(joined + k, sizeof(joined) - k, "%s%s=%s", i ? "," : "",
                              t[i].name, t[i].value);
    }
    if (strcmp(got, extracted) != 0 || strcmp(joined, tags) != 0) {
        fail_msg("%s: got '%s' {%s}, want '%s' {%s}", name, got, joined, extracted, tags);
    }
    free(got);
    msm_tags_free(t, n);
}

static void test_istio_golden_tags(void **state)
{
    (void)state;
    Envoy__Config__Bootstrap__V3__Bootstrap *b = load_golden();
    struct msm_err err = {{0}};
    struct msm_tag_producer *p = msm_tag_producer_new(b->stats_config, NULL, 0, &err);
    if (!p) {
        fail_msg("%s", err.msg);
    }
    /* Istio's 16 regexes, no Envoy defaults, and msm's five media extractors (always on). */
    assert_int_equal(msm_tag_producer_count(p), 21);
    /* Media stats: one family per metric, the filter's stat_prefix and the stream as tags. */
    expect(p, "rtsp.inbound.downstream_rtp_tx_packets", "rtsp.downstream_rtp_tx_packets",
           "msm.rtsp_prefix=inbound");
    expect(p, "rtsp.fan.stream.cam.subscribers", "rtsp.stream.subscribers",
           "msm.rtsp_stream=cam,msm.rtsp_prefix=fan");
    /* Per-session stats: session id, role and stream become labels too. */
    expect(p, "rtsp.fan.session.0123abcd.client.cam.rtp_tx_packets", "rtsp.session.rtp_tx_packets",
           "msm.rtsp_prefix=fan,msm.rtsp_session=0123abcd,msm.rtsp_role=client,"
           "msm.rtsp_stream=cam");
    expect(p, "rtsp.fan.session.up-7.upstream.stream.subscribers", "rtsp.session.subscribers",
           "msm.rtsp_prefix=fan,msm.rtsp_session=up-7,msm.rtsp_role=upstream,"
           "msm.rtsp_stream=stream");
    expect(p, "rtsp.fan.stream.session.rtp_packets", "rtsp.stream.rtp_packets",
           "msm.rtsp_stream=session,msm.rtsp_prefix=fan");
    /* The ';' delimiter from alt_stat_name: the dashboards' xds-grpc series. */
    expect(p, "cluster.xds-grpc;.upstream_cx_active", "cluster.upstream_cx_active",
           "cluster_name=xds-grpc");
    expect(p, "cluster.outbound|9080||reviews.default.svc.cluster.local;.upstream_rq_200",
           "cluster.upstream_rq",
           "cluster_name=outbound|9080||reviews.default.svc.cluster.local,response_code=200");
    expect(p, "cluster.outbound|80||a.b.svc.cluster.local;.upstream_rq_5xx", "cluster.upstream_rq",
           "cluster_name=outbound|80||a.b.svc.cluster.local,response_code_class=5xx");
    expect(p, "tcp.outbound_tcp.downstream_cx_total", "tcp.downstream_cx_total",
           "tcp_prefix=outbound_tcp");
    expect(p, "listener.0.0.0.0_15006.downstream_cx_active", "listener.downstream_cx_active",
           "listener_address=0.0.0.0_15006");
    expect(p, "http.inbound_0.0.0.0_8080;.downstream_rq_2xx", "http.downstream_rq",
           "response_code_class=2xx,http_conn_manager_prefix=inbound_0.0.0.0_8080");
    expect(p, "server.worker_0.watchdog_miss", "server.watchdog_miss", "thread_name=worker_0");
    expect(p, "http.inbound_0.0.0.0_9080;.rbac.allowed", "http.rbac",
           "authz_enforce_result=allowed,http_conn_manager_prefix=inbound_0.0.0.0_9080");
    expect(p, "component.proxy.tag.1.24.0;.istio_build", "istio_build",
           "component=proxy,tag=1.24.0");
    /* Names nobody extracts from keep their name and get no tags. */
    expect(p, "server.state", "server.state", "");
    expect(p, "listener_manager.workers_started", "listener_manager.workers_started", "");
    expect(p, "cluster_manager.cds.update_success", "cluster_manager.cds.update_success", "");
    msm_tag_producer_free(p);
    protobuf_c_message_free_unpacked(&b->base, NULL);
}

static void test_envoy_defaults(void **state)
{
    (void)state;
    struct msm_err err = {{0}};
    struct msm_tag_producer *p = msm_tag_producer_new(NULL, NULL, 0, &err);
    assert_non_null(p);
    expect(p, "cluster.xds-grpc.upstream_cx_total", "cluster.upstream_cx_total",
           "envoy.cluster_name=xds-grpc");
    /* Without Istio's regex the ';' stays part of the name. */
    expect(p, "cluster.xds-grpc;.upstream_cx_active", "cluster.upstream_cx_active",
           "envoy.cluster_name=xds-grpc;");
    /* The istio/proxy fixture basic_flow_client_tcp_connection: envoy_tcp_prefix. */
    expect(p, "tcp.outbound_tcp.downstream_cx_total", "tcp.downstream_cx_total",
           "envoy.tcp_prefix=outbound_tcp");
    expect(p, "listener.127.0.0.1_8080.downstream_cx_total", "listener.downstream_cx_total",
           "envoy.listener_address=127.0.0.1_8080");
    expect(p, "listener.[__1]_0.downstream_cx_total", "listener.downstream_cx_total",
           "envoy.listener_address=[__1]_0");
    expect(p, "listener.admin.downstream_cx_total", "listener.admin.downstream_cx_total", "");
    expect(p, "cluster.c.upstream_rq_200", "cluster.upstream_rq",
           "envoy.response_code=200,envoy.cluster_name=c");
    expect(p, "http.ingress.downstream_rq_2xx", "http.downstream_rq_xx",
           "envoy.response_code_class=2,envoy.http_conn_manager_prefix=ingress");
    expect(p, "listener.0.0.0.0_80.worker_3.downstream_cx_active",
           "listener.worker_downstream_cx_active",
           "envoy.worker_id=3,envoy.listener_address=0.0.0.0_80");
    expect(p, "listener_manager.worker_1.dispatcher.loop_duration_us",
           "listener_manager.worker_dispatcher.loop_duration_us", "envoy.worker_id=1");
    expect(p, "vhost.vh1.route.r1.upstream_rq_time", "vhost.route.upstream_rq_time",
           "envoy.virtual_host=vh1,envoy.route=r1");
    expect(p, "cluster.grpc_cluster.grpc.svc.method.success", "cluster.grpc.success",
           "envoy.grpc_bridge_method=method,envoy.grpc_bridge_service=svc,"
           "envoy.cluster_name=grpc_cluster");
    expect(p, "http.rds_prefix.rds.route.name.update_success", "http.rds.update_success",
           "envoy.rds_route_config=route.name,envoy.http_conn_manager_prefix=rds_prefix");
    expect(p, "mongo.mongo_filter.collection.test.callsite.cs.query.total",
           "mongo.collection.callsite.query.total",
           "envoy.mongo_callsite=cs,envoy.mongo_collection=test,"
           "envoy.mongo_prefix=mongo_filter");
    expect(p, "server.uptime", "server.uptime", "");
    msm_tag_producer_free(p);
}

static void test_fixed_and_cli_tags(void **state)
{
    (void)state;
    Envoy__Config__Metrics__V3__StatsConfig sc = ENVOY__CONFIG__METRICS__V3__STATS_CONFIG__INIT;
    Google__Protobuf__BoolValue no = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    no.value = false;
    sc.use_all_default_tags = &no;
    Envoy__Config__Metrics__V3__TagSpecifier t1 = ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__INIT;
    t1.tag_name = "mesh";
    t1.tag_value_case = ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__TAG_VALUE_FIXED_VALUE;
    t1.fixed_value = "m1";
    Envoy__Config__Metrics__V3__TagSpecifier t2 = ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__INIT;
    t2.tag_name = "envoy.cluster_name"; /* no regex: the built-in one of that name */
    Envoy__Config__Metrics__V3__TagSpecifier *tags[] = {&t1, &t2};
    sc.n_stats_tags = 2;
    sc.stats_tags = tags;
    struct msm_stats_tag cli[] = {{(char *)"pod", (char *)"p1"}};
    struct msm_err err = {{0}};
    struct msm_tag_producer *p = msm_tag_producer_new(&sc, cli, 1, &err);
    assert_non_null(p);
    expect(p, "cluster.c1.upstream_cx_total", "cluster.upstream_cx_total",
           "pod=p1,mesh=m1,envoy.cluster_name=c1");
    expect(p, "server.uptime", "server.uptime", "pod=p1,mesh=m1");
    msm_tag_producer_free(p);
    /* A name with no built-in extractor and no regex is an error, as in Envoy. */
    t2.tag_name = "no_such_tag";
    p = msm_tag_producer_new(&sc, NULL, 0, &err);
    assert_null(p);
    assert_non_null(strstr(err.msg, "no default regex for name: 'no_such_tag'"));
    /* A bad regex too. */
    t2.tag_name = "x";
    t2.tag_value_case = ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__TAG_VALUE_REGEX;
    t2.regex = "^cluster(\\.(unclosed";
    p = msm_tag_producer_new(&sc, NULL, 0, &err);
    assert_null(p);
    assert_non_null(strstr(err.msg, "invalid regex"));
}

/* One name through the fast path and the plain one (see msm_tag_producer_set_plain): same
 * tag-extracted name, same tags in the same order; and the allocation-free variant agrees. */
static int compare_paths(struct msm_tag_producer *p, const char *name)
{
    struct msm_tag *ft = NULL, *pt = NULL;
    int fn = 0, pn = 0;
    msm_tag_producer_set_plain(p, false);
    char *fast = msm_tag_producer_produce(p, name, &ft, &fn);
    msm_tag_producer_set_plain(p, true);
    char *plain = msm_tag_producer_produce(p, name, &pt, &pn);
    msm_tag_producer_set_plain(p, false);
    if (strcmp(fast, plain) != 0 || fn != pn) {
        fail_msg("%s: fast '%s' (%d tags), plain '%s' (%d tags)", name, fast, fn, plain, pn);
    }
    for (int i = 0; i < fn; i++) {
        if (strcmp(ft[i].name, pt[i].name) != 0 || strcmp(ft[i].value, pt[i].value) != 0) {
            fail_msg("%s: tag %d fast %s=%s, plain %s=%s", name, i, ft[i].name, ft[i].value,
                     pt[i].name, pt[i].value);
        }
    }
    size_t len = strlen(name), out_len = 0;
    char *out = msm_xmalloc(len + 1);
    struct msm_tag_ref *refs = msm_xcalloc((size_t)msm_tag_producer_count(p) + 1, sizeof(*refs));
    int rn = msm_tag_producer_produce_refs(p, name, len, out, &out_len, refs);
    assert_int_equal(rn, fn);
    assert_string_equal(out, fast);
    assert_int_equal(out_len, strlen(fast));
    for (int i = 0; i < rn; i++) {
        assert_string_equal(refs[i].name, ft[i].name);
        assert_int_equal(refs[i].value_len, strlen(ft[i].value));
        assert_memory_equal(refs[i].value, ft[i].value, refs[i].value_len);
    }
    free(out);
    free(refs);
    int tags = fn;
    free(fast);
    free(plain);
    msm_tags_free(ft, fn);
    msm_tags_free(pt, pn);
    return tags;
}

/* Generated names (clusters, listeners, http, tcp, rbac, media, Istio's own) under Envoy's
 * default tags, Istio's stats_config and CLI tags: the fast path gives the plain path's result. */
static void test_fast_path_matches_plain(void **state)
{
    (void)state;
    static const char *const prefixes[] = {
        "cluster.xds-grpc;.",
        "cluster.outbound|9080||reviews.default.svc.cluster.local;.",
        "cluster.outbound|80||a.b.svc.cluster.local.",
        "cluster.c1.",
        "cluster.rq_.",
        "listener.0.0.0.0_15006.",
        "listener.[::1]_80.",
        "listener.127.0.0.1_8080.",
        "listener.admin.",
        "listener.virtualInbound.",
        "http.inbound_0.0.0.0_8080;.",
        "http.admin.",
        "http.outbound_0.0.0.0_80.",
        "tcp.outbound_tcp.",
        "udp.dns.",
        "server.",
        "listener_manager.",
        "cluster_manager.",
        "vhost.vh1.",
        "mongo.m1.",
        "redis.r1.",
        "rtsp.fan.",
        "rtsp.inbound.",
        "ratelimit.rl.",
        "auth.clientssl.cs.",
        "component.proxy.tag.1.24.0;.",
        "reporter=.destination;.",
        "",
    };
    static const char *const suffixes[] = {
        "upstream_cx_total",
        "upstream_rq_200",
        "upstream_rq_503",
        "upstream_rq_5xx",
        "upstream_rq_2xx",
        "upstream_rq_completed",
        "upstream_rq",
        "downstream_rq_2xx",
        "downstream_rq_404",
        "downstream_cx_active",
        "ssl.ciphers.ECDHE-RSA-AES128-GCM-SHA256",
        "ssl.curves.X25519",
        "ssl.sigalgs.rsa_pss_rsae_sha256",
        "ssl.versions.TLSv1.3",
        "ssl.handshake",
        "grpc.svc.Method.success",
        "grpc.svc.total",
        "ext_authz.ea.ok",
        "http.hcm.downstream_rq_total",
        "http.hcm.rbac.allowed",
        "rbac.allowed",
        "rbac.denied",
        "rbac.shadow_allowed",
        "worker_0.downstream_cx_total",
        "worker_12.watchdog_miss",
        "dynamodb.table.t1.capacity.GetItem.__partition_id=ab12cd3",
        "dynamodb.operation.GetItem.upstream_rq_time",
        "dynamodb.error.t1.Bad",
        "rds.route_cfg.update_success",
        "rds.route-cfg.1.config_reload",
        "user_agent.ios.downstream_cx_total",
        "fault.up.delays_injected",
        "vcluster.vc.upstream_rq_time",
        "route.r1.upstream_rq_time",
        "collection.col.callsite.cs.query.total",
        "collection.col.query.total",
        "cmd.find.total",
        "http_local_rate_limit.enabled",
        "stream.cam.subscribers",
        "session.0123abcd.client.cam.rtp_tx_packets",
        "circuit_breakers.default.rq_open",
        "outlier_detection.ejections_active",
        "watchdog_miss",
        "istio_build",
        "a",
        "",
    };
    Envoy__Config__Bootstrap__V3__Bootstrap *b = load_golden();
    struct msm_err err = {{0}};
    struct msm_stats_tag cli[] = {{.name = "mesh", .value = "m1"}};
    struct msm_tag_producer *ps[] = {
        msm_tag_producer_new(NULL, NULL, 0, &err),
        msm_tag_producer_new(b->stats_config, NULL, 0, &err),
        msm_tag_producer_new(NULL, cli, 1, &err),
    };
    int names = 0, tags = 0;
    char name[512];
    for (size_t k = 0; k < MSM_ARRAY_SIZE(ps); k++) {
        assert_non_null(ps[k]);
        for (size_t i = 0; i < MSM_ARRAY_SIZE(prefixes); i++) {
            for (size_t j = 0; j < MSM_ARRAY_SIZE(suffixes); j++) {
                snprintf(name, sizeof(name), "%s%s", prefixes[i], suffixes[j]);
                tags += compare_paths(ps[k], name);
                names++;
                /* and the suffix alone under each first token: "cluster.upstream_rq_200" */
                const char *dot = strchr(prefixes[i], '.');
                if (dot) {
                    snprintf(name, sizeof(name), "%.*s%s", (int)(dot - prefixes[i] + 1),
                             prefixes[i], suffixes[j]);
                    tags += compare_paths(ps[k], name);
                    names++;
                }
            }
        }
        msm_tag_producer_free(ps[k]);
    }
    /* The generator reaches the extractors: most names get tags. */
    assert_true(names > 3000);
    assert_true(tags > names);
    protobuf_c_message_free_unpacked(&b->base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_istio_golden_tags),
        cmocka_unit_test(test_envoy_defaults),
        cmocka_unit_test(test_fixed_and_cli_tags),
        cmocka_unit_test(test_fast_path_matches_plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
