/* Access logs (src/accesslog): Istio's default format taken from a real sidecar config dump
 * (fixtures), Envoy's command operators for TCP and HTTP, typed and untyped JSON, parse
 * errors, filters, and the file sink with its flusher thread (flush, reopen). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"

#include "accesslog/access_log.h"
#include "accesslog/file.h"
#include "accesslog/format.h"
#include "common/alloc.h"
#include "config/pbjson.h"
#include "http/headers.h"
#include "upstream/cluster.h"
#include "xds/strmap.h"

#define DUMP                                                                                      \
    MSM_SHARED_DIR "/fixtures/istio/configdump/deathstarbench_geo_sidecar_1.18.2_config_dump.json"

/* The first FileAccessLog text_format_source of the dump: Istio's default format. */
static json_t *find_format(json_t *j)
{
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            json_t *r = find_format(v);
            if (r) {
                return r;
            }
        }
        return NULL;
    }
    if (!json_is_object(j)) {
        return NULL;
    }
    json_t *t = json_object_get(j, "@type");
    if (t && !strcmp(json_string_value(t),
                     "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog")) {
        json_t *s = json_object_get(json_object_get(json_object_get(j, "log_format"),
                                                    "text_format_source"),
                                    "inline_string");
        if (s) {
            return s;
        }
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        json_t *r = find_format(v);
        if (r) {
            return r;
        }
    }
    return NULL;
}

static char *istio_format(void)
{
    json_error_t je;
    json_t *d = json_load_file(DUMP, 0, &je);
    assert_non_null(d);
    json_t *s = find_format(d);
    assert_non_null(s);
    char *f = msm_xstrdup(json_string_value(s));
    json_decref(d);
    return f;
}

static struct msm_address addr(const char *ip, uint32_t port)
{
    struct msm_address a;
    struct msm_err err;
    assert_int_equal(msm_address_from_ip(ip, port, &a, &err), 0);
    return a;
}

/* A finished TCP connection: 2026-11-23T10:20:30.045Z, 1234 ms, through cluster <cfg>. */
static void tcp_info(struct msm_stream_info *si, struct msm_cluster_cfg *cfg,
                     struct msm_host *h)
{
    msm_si_init(si, 1000.0, 1795429230.045);
    si->end = 1001.234;
    si->has_downstream = true;
    si->downstream_local = addr("10.0.0.5", 9080);
    si->downstream_remote = addr("10.0.0.9", 41234);
    si->downstream_direct_remote = si->downstream_remote;
    si->bytes_received = 120;
    si->bytes_sent = 4567;
    si->connection_id = 42;
    msm_si_set_upstream(si, cfg, h);
    si->upstream_local = addr("10.0.0.5", 50000);
    si->has_upstream_local = true;
}

static struct msm_cluster_cfg *cluster_cfg(void)
{
    struct msm_cluster_cfg *c = MSM_NEW(struct msm_cluster_cfg);
    atomic_init(&c->refs, 1);
    c->name = msm_name_intern("outbound|9080||reviews.default.svc.cluster.local");
    c->stat_name = msm_xstrdup("outbound|9080||reviews.default.svc.cluster.local;");
    return c;
}

static char *fmt_one(const char *fmt, const struct msm_stream_info *si)
{
    struct msm_err err = {{0}};
    struct msm_al_formatter *f = msm_al_formatter_text(fmt, false, &err);
    if (!f) {
        fail_msg("%s: %s", fmt, err.msg);
    }
    struct msm_al_line l = {0};
    msm_al_format(f, si, 2000.0, &l);
    char *s = msm_xstrdup(l.p ? l.p : "");
    msm_al_line_free(&l);
    msm_al_formatter_free(f);
    return s;
}

static void test_istio_default_tcp(void **state)
{
    (void)state;
    char *fmt = istio_format();
    struct msm_cluster_cfg *cfg = cluster_cfg();
    struct msm_address ha = addr("10.0.0.7", 9080);
    struct msm_host *h = msm_host_new(&ha, NULL, 1);
    struct msm_stream_info si;
    tcp_info(&si, cfg, h);
    char *got = fmt_one(fmt, &si);
    const char *want =
        "[2026-11-23T10:20:30.045Z] \"- - -\" 0 - - - \"-\" 120 4567 1234 - \"-\" \"-\" \"-\" "
        "\"-\" \"10.0.0.7:9080\" outbound|9080||reviews.default.svc.cluster.local; "
        "10.0.0.5:50000 10.0.0.5:9080 10.0.0.9:41234 - -\n";
    assert_string_equal(got, want);
    free(got);
    /* A failed upstream connection, as tcp_proxy records it. */
    msm_si_set_flag(&si, MSM_RF_UPSTREAM_CONNECTION_FAILURE);
    si.upstream_transport_failure_reason = "delayed_connect_error:_Connection_refused";
    si.has_upstream_local = false;
    got = fmt_one(fmt, &si);
    assert_non_null(
        strstr(got, "\"- - -\" 0 UF - - \"delayed_connect_error:_Connection_refused\""));
    assert_non_null(strstr(got, "outbound|9080||reviews.default.svc.cluster.local; - 10.0.0.5"));
    free(got);
    /* The upstream mTLS identities (tcp_proxy and rtsp_proxy record them at connect). */
    got = fmt_one("%UPSTREAM_PEER_URI_SAN% %UPSTREAM_LOCAL_URI_SAN%", &si);
    assert_string_equal(got, "- -");
    free(got);
    si.upstream_peer_uri_san = "spiffe://cluster.local/ns/prod/sa/server";
    si.upstream_local_uri_san = "spiffe://cluster.local/ns/default/sa/client";
    got = fmt_one("%UPSTREAM_PEER_URI_SAN% %UPSTREAM_LOCAL_URI_SAN%", &si);
    assert_string_equal(got, "spiffe://cluster.local/ns/prod/sa/server "
                             "spiffe://cluster.local/ns/default/sa/client");
    free(got);
    msm_si_deinit(&si);
    msm_host_unref(h);
    msm_cluster_cfg_unref(cfg);
    free(fmt);
}

static void test_http_operators(void **state)
{
    (void)state;
    struct msm_stream_info si;
    tcp_info(&si, NULL, NULL);
    struct msm_hdrs *req = msm_hdrs_new(), *resp = msm_hdrs_new();
    msm_hdrs_addz(req, ":method", "GET");
    msm_hdrs_addz(req, ":path", "/api/v1/items?x=1");
    msm_hdrs_addz(req, "user-agent", "curl/8.0");
    msm_hdrs_addz(resp, "x-envoy-upstream-service-time", "12");
    si.request_headers = req;
    si.response_headers = resp;
    si.protocol = "HTTP/1.1";
    si.response_code = 404;
    si.response_code_details = "route_not_found";
    msm_si_set_flag(&si, MSM_RF_NO_ROUTE_FOUND);
    msm_si_set_flag(&si, MSM_RF_UPSTREAM_RETRY_LIMIT_EXCEEDED);
    char *got = fmt_one("%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% "
                        "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG% "
                        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% %REQ(USER-AGENT):4% "
                        "%REQ_WITHOUT_QUERY(:PATH)% %REQUEST_HEADER(X-MISSING)% "
                        "%RESPONSE_CODE_DETAILS% 100%% %CONNECTION_ID%",
                        &si);
    assert_string_equal(got, "GET /api/v1/items?x=1 HTTP/1.1 404 NR,URX "
                             "NoRouteFound,UpstreamRetryLimitExceeded 12 curl /api/v1/items - "
                             "route_not_found 100% 42");
    free(got);
    got = fmt_one("%START_TIME(%Y/%m/%d %H:%M:%S.%3f %s)%|%START_TIME(%E6S)%|"
                  "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%:%DOWNSTREAM_REMOTE_PORT%|"
                  "%UPSTREAM_HOST%|%DURATION%",
                  &si);
    assert_string_equal(got, "2026/11/23 10:20:30.045 1795429230|30.045000|10.0.0.9:41234|-|1234");
    free(got);
    msm_hdrs_free(req);
    msm_hdrs_free(resp);
    msm_si_deinit(&si);
}

/* Istio's default format on HTTP lines: the request/response timings, the upstream connection's
 * local address, a connect failure's host and reason, a filter's termination details. */
static void test_http_timings_and_failures(void **state)
{
    (void)state;
    char *fmt = istio_format();
    struct msm_cluster_cfg *cfg = cluster_cfg();
    struct msm_address ha = addr("10.0.0.7", 9080);
    struct msm_host *h = msm_host_new(&ha, NULL, 1);
    struct msm_stream_info si;
    tcp_info(&si, cfg, h);
    struct msm_hdrs *req = msm_hdrs_new();
    msm_hdrs_addz(req, ":method", "POST");
    msm_hdrs_addz(req, ":path", "/r");
    msm_hdrs_addz(req, ":authority", "reviews:9080");
    si.request_headers = req;
    si.protocol = "HTTP/2";
    si.response_code = 200;
    si.response_code_details = "via_upstream";
    si.route_name = "default";
    si.last_downstream_rx = 1000.5; /* binary fractions: exact milliseconds */
    si.last_upstream_tx = 1000.625;
    si.first_upstream_rx = 1000.75;
    si.last_downstream_tx = 1001.0;
    char *got = fmt_one("%REQUEST_DURATION% %REQUEST_TX_DURATION% %RESPONSE_DURATION% "
                        "%RESPONSE_TX_DURATION% %UPSTREAM_LOCAL_ADDRESS% "
                        "%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_PORT% %ROUTE_NAME% "
                        "%CONNECTION_TERMINATION_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON%",
                        &si);
    assert_string_equal(got, "500 625 750 250 10.0.0.5:50000 10.0.0.5 50000 default - -");
    free(got);
    got = fmt_one(fmt, &si);
    assert_string_equal(got, "[2026-11-23T10:20:30.045Z] \"POST /r HTTP/2\" 200 - via_upstream - "
                             "\"-\" 120 4567 1234 - \"-\" \"-\" \"-\" \"reviews:9080\" "
                             "\"10.0.0.7:9080\" outbound|9080||reviews.default.svc.cluster.local; "
                             "10.0.0.5:50000 10.0.0.5:9080 10.0.0.9:41234 - default\n");
    free(got);
    /* Connect failure: no local address, no response timing, the host tried and the reason
     * with '_' for spaces (Envoy's formatter). */
    si.has_upstream_local = false;
    si.first_upstream_rx = si.last_upstream_tx = 0;
    si.response_code = 503;
    si.response_code_details = "upstream_reset_before_response_started";
    msm_si_set_flag(&si, MSM_RF_UPSTREAM_CONNECTION_FAILURE);
    si.upstream_transport_failure_reason = "delayed connect error: Connection refused";
    got = fmt_one(fmt, &si);
    assert_non_null(strstr(got, "\" 503 UF upstream_reset_before_response_started - "
                                "\"delayed_connect_error:_Connection_refused\" 120"));
    assert_non_null(strstr(got, "\"10.0.0.7:9080\" outbound|9080||reviews.default.svc.cluster."
                                "local; - 10.0.0.5:9080"));
    free(got);
    got = fmt_one("%RESPONSE_DURATION% %RESPONSE_TX_DURATION% %REQUEST_TX_DURATION%", &si);
    assert_string_equal(got, "- - -");
    free(got);
    /* Network RBAC's deny on a TCP connection. */
    msm_si_set_termination_details(&si, "rbac_access_denied_matched_policy[%s]", "none");
    got = fmt_one("%CONNECTION_TERMINATION_DETAILS%", &si);
    assert_string_equal(got, "rbac_access_denied_matched_policy[none]");
    free(got);
    /* typed JSON keeps durations numeric */
    struct msm_err err = {{0}};
    const char *json = "{\"rq_tx\":\"%REQUEST_TX_DURATION%\",\"dur\":\"%REQUEST_DURATION%\","
                       "\"why\":\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\"}";
    ProtobufCMessage *m = msm_pbjson_decode_text(&google__protobuf__struct__descriptor, json,
                                                 strlen(json), NULL, &err);
    assert_non_null(m);
    struct msm_al_formatter *f = msm_al_formatter_json(m, true, false, &err);
    assert_non_null(f);
    si.last_upstream_tx = 1000.125;
    struct msm_al_line l = {0};
    msm_al_format(f, &si, 2000.0, &l);
    assert_string_equal(l.p, "{\"dur\":500,\"rq_tx\":125,"
                             "\"why\":\"delayed_connect_error:_Connection_refused\"}\n");
    msm_al_line_free(&l);
    msm_al_formatter_free(f);
    protobuf_c_message_free_unpacked(m, NULL);
    msm_hdrs_free(req);
    msm_si_deinit(&si);
    msm_host_unref(h);
    msm_cluster_cfg_unref(cfg);
    free(fmt);
}

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct {
        const char *fmt, *msg;
    } bad[] = {
        {"%NO_SUCH_THING%", "Not supported field in StreamInfo: NO_SUCH_THING"},
        {"[%START_TIME%] %UPSTREAM_TRANSPORT_FAILURE%",
         "Not supported field in StreamInfo: UPSTREAM_TRANSPORT_FAILURE"},
        {"%REQUEST_TX_DURATION(x)%", "REQUEST_TX_DURATION does not take parameters"},
        {"abc %BYTES_SENT", "Couldn't find valid command at position 4"},
        {"%REQ()%", "empty header"},
        {"%REQ%", "REQ requires parameters"},
        {"%BYTES_SENT(x)%", "does not take parameters"},
        {"%REQ(a?b?c)%", "More than 1 alternative header"},
        {"%lower%", "Couldn't find valid command"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct msm_err err = {{0}};
        struct msm_al_formatter *f = msm_al_formatter_text(bad[i].fmt, false, &err);
        if (f || !strstr(err.msg, bad[i].msg)) {
            fail_msg("%s: got '%s', want '%s'", bad[i].fmt, f ? "(accepted)" : err.msg,
                     bad[i].msg);
        }
    }
}

static void test_json_formats(void **state)
{
    (void)state;
    const char *dict = "{\"bytes\": \"%BYTES_SENT%\", \"code\": \"%RESPONSE_CODE%\","
                       " \"line\": \"%PROTOCOL% %BYTES_SENT%\", \"proto\": \"%PROTOCOL%\","
                       " \"nested\": {\"host\": \"%UPSTREAM_HOST%\"}, \"n\": 5, \"b\": true,"
                       " \"q\": \"a\\\"b\"}";
    struct msm_err err = {{0}};
    ProtobufCMessage *st = msm_pbjson_decode_text(&google__protobuf__struct__descriptor, dict,
                                                  strlen(dict), NULL, &err);
    assert_non_null(st);
    struct msm_stream_info si;
    tcp_info(&si, NULL, NULL);
    struct msm_al_formatter *typed = msm_al_formatter_json(st, true, false, &err);
    struct msm_al_formatter *untyped = msm_al_formatter_json(st, false, false, &err);
    struct msm_al_formatter *omit = msm_al_formatter_json(st, true, true, &err);
    assert_non_null(typed);
    assert_non_null(untyped);
    assert_non_null(omit);
    struct msm_al_line l = {0};
    msm_al_format(typed, &si, 0, &l);
    assert_string_equal(l.p, "{\"b\":true,\"bytes\":4567,\"code\":0,\"line\":\"- 4567\","
                             "\"n\":5,\"nested\":{\"host\":null},\"proto\":null,"
                             "\"q\":\"a\\\"b\"}\n");
    msm_al_line_reset(&l);
    msm_al_format(untyped, &si, 0, &l);
    assert_string_equal(l.p, "{\"b\":\"true\",\"bytes\":\"4567\",\"code\":\"0\","
                             "\"line\":\"- 4567\","
                             "\"n\":\"5\",\"nested\":{\"host\":\"-\"},\"proto\":\"-\","
                             "\"q\":\"a\\\"b\"}\n");
    msm_al_line_reset(&l);
    msm_al_format(omit, &si, 0, &l);
    assert_string_equal(l.p, "{\"b\":true,\"bytes\":4567,\"code\":0,\"line\":\" 4567\","
                             "\"n\":5,\"nested\":{},\"q\":\"a\\\"b\"}\n");
    msm_al_line_free(&l);
    msm_al_formatter_free(typed);
    msm_al_formatter_free(untyped);
    msm_al_formatter_free(omit);
    protobuf_c_message_free_unpacked(st, NULL);
    msm_si_deinit(&si);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return msm_xstrdup("");
    }
    char *buf = msm_xcalloc(65536, 1);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* AccessLog protos from JSON: file logger with a filter, into <path>. */
static int build(const char *json, struct msm_access_logs *out, struct msm_err *err)
{
    const ProtobufCMessageDescriptor *d = &envoy__config__accesslog__v3__access_log__descriptor;
    ProtobufCMessage *m = msm_pbjson_decode_text(d, json, strlen(json), NULL, err);
    if (!m) {
        return -1;
    }
    void *v[1] = {m};
    int rc = msm_access_logs_build(v, 1, out, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static void test_filters_and_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/msm-al-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], json[1024];
    snprintf(path, sizeof(path), "%s/access.log", dir);
    msm_al_files_configure(50, 1);
    snprintf(json, sizeof(json),
             "{\"name\": \"envoy.access_loggers.file\","
             " \"filter\": {\"or_filter\": {\"filters\": ["
             "   {\"response_flag_filter\": {\"flags\": [\"NR\"]}},"
             "   {\"status_code_filter\": {\"comparison\": {\"op\": \"GE\","
             "      \"value\": {\"default_value\": 500, \"runtime_key\": \"k\"}}}}]}},"
             " \"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions."
             "access_loggers.file.v3.FileAccessLog\", \"path\": \"%s\","
             " \"log_format\": {\"text_format\": \"%%RESPONSE_CODE%% %%RESPONSE_FLAGS%%\\n\"}}}",
             path);
    struct msm_access_logs logs;
    struct msm_err err = {{0}};
    if (build(json, &logs, &err) < 0) {
        fail_msg("%s", err.msg);
    }
    struct msm_stream_info si;
    tcp_info(&si, NULL, NULL);
    msm_access_logs_emit(&logs, &si, 0); /* no flag, code 0: filtered out */
    msm_si_set_flag(&si, MSM_RF_NO_ROUTE_FOUND);
    msm_access_logs_emit(&logs, &si, 0);
    si.response_flags = 0;
    si.response_code = 503;
    msm_access_logs_emit(&logs, &si, 0);
    msm_al_files_flush();
    char *text = read_all(path);
    assert_string_equal(text, "0 NR\n503 -\n");
    free(text);
    /* Reopen (SIGUSR1): logrotate moved the file away. */
    char moved[160];
    snprintf(moved, sizeof(moved), "%s.1", path);
    assert_int_equal(rename(path, moved), 0);
    msm_al_files_reopen();
    msm_al_files_flush();
    msm_access_logs_emit(&logs, &si, 0);
    msm_al_files_flush();
    text = read_all(path);
    assert_string_equal(text, "503 -\n");
    free(text);
    msm_access_logs_deinit(&logs);
    msm_si_deinit(&si);
    /* Config errors name the problem. */
    assert_true(build("{\"name\": \"x\", \"typed_config\": {\"@type\": \"type.googleapis.com/"
                      "envoy.extensions.access_loggers.file.v3.FileAccessLog\", \"path\": "
                      "\"/no/such/dir/log\"}}", &logs, &err) < 0);
    assert_non_null(strstr(err.msg, "unable to open file"));
    assert_true(build("{\"name\": \"x\", \"typed_config\": {\"@type\": \"type.googleapis.com/"
                      "envoy.extensions.access_loggers.file.v3.FileAccessLog\", \"path\": "
                      "\"/dev/null\", \"log_format\": {\"text_format\": \"%BAD%\"}}}", &logs,
                      &err) < 0);
    assert_non_null(strstr(err.msg, "Not supported field in StreamInfo: BAD"));
    msm_al_files_shutdown();
    unlink(path);
    unlink(moved);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_istio_default_tcp),
        cmocka_unit_test(test_http_operators),
        cmocka_unit_test(test_http_timings_and_failures),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_json_formats),
        cmocka_unit_test(test_filters_and_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
