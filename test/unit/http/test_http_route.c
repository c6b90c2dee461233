/* Route configurations (src/http/route.c, route_match.c): building from Envoy JSON, NACK
 * reasons, virtual host selection by domain, route matching (path kinds, headers, query
 * parameters, case sensitivity, runtime fraction), weighted clusters, rewrites, redirects,
 * header operations; and HCM path normalization. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "config/pbjson.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "filters/network/http_connection_manager/hcm.h"
#include "http/route.h"
#include "test/unit/http/route_json.h"

static struct msm_hdrs *req(const char *authority, const char *path, ...)
{
    struct msm_hdrs *h = msm_hdrs_new();
    msm_hdrs_addz(h, ":method", "GET");
    msm_hdrs_addz(h, ":path", path);
    if (authority) {
        msm_hdrs_addz(h, ":authority", authority);
    }
    va_list ap;
    va_start(ap, path);
    const char *k;
    while ((k = va_arg(ap, const char *))) {
        msm_hdrs_addz(h, k, va_arg(ap, const char *));
    }
    va_end(ap);
    return h;
}

/* The route name selected for (authority, path, headers...), "" for none. */
static const char *pick(const struct msm_route_config *rc, struct msm_hdrs *h)
{
    const struct msm_route *r = msm_route_select(rc, h, 0);
    msm_hdrs_free(h);
    return r ? r->name : "";
}

static const char *VHOSTS =
    "{\"name\":\"rc\",\"virtual_hosts\":["
    "{\"name\":\"exact\",\"domains\":[\"www.example.com\",\"www.example.com:8080\"],"
    " \"routes\":[{\"name\":\"exact\",\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"}}]},"
    "{\"name\":\"sfx-long\",\"domains\":[\"*.foo.example.com\"],"
    " \"routes\":[{\"name\":\"sfx-long\",\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"}}]},"
    "{\"name\":\"sfx\",\"domains\":[\"*.example.com\"],"
    " \"routes\":[{\"name\":\"sfx\",\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"}}]},"
    "{\"name\":\"pfx\",\"domains\":[\"api.*\"],"
    " \"routes\":[{\"name\":\"pfx\",\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"}}]},"
    "{\"name\":\"any\",\"domains\":[\"*\"],"
    " \"routes\":[{\"name\":\"any\",\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"}}]}]}";

static void test_domains(void **state)
{
    (void)state;
    struct msm_err err = {{0}};
    struct msm_route_config *rc = build(VHOSTS, &err);
    assert_non_null(rc);
    assert_string_equal(pick(rc, req("www.example.com", "/", NULL)), "exact");
    assert_string_equal(pick(rc, req("WWW.Example.COM", "/", NULL)), "exact");
    assert_string_equal(pick(rc, req("www.example.com:8080", "/", NULL)), "exact");
    /* with a port not listed, no domain matches (ignore_port is off) */
    assert_string_equal(pick(rc, req("www.example.com:9090", "/", NULL)), "any");
    assert_string_equal(pick(rc, req("a.foo.example.com", "/", NULL)), "sfx-long");
    assert_string_equal(pick(rc, req("b.example.com", "/", NULL)), "sfx");
    /* a wildcard never matches the empty string */
    assert_string_equal(pick(rc, req(".example.com", "/", NULL)), "any");
    assert_string_equal(pick(rc, req("api.internal", "/", NULL)), "pfx");
    assert_string_equal(pick(rc, req("other", "/", NULL)), "any");
    assert_string_equal(pick(rc, req(NULL, "/", NULL)), "any");
    msm_route_config_unref(rc);

    rc = build("{\"ignore_port_in_host_matching\":true,\"virtual_hosts\":["
               "{\"name\":\"v\",\"domains\":[\"svc\"],\"routes\":[{\"name\":\"svc\","
               "\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"}}]},"
               "{\"name\":\"v6\",\"domains\":[\"[::1]\"],\"routes\":[{\"name\":\"v6\","
               "\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"}}]}]}", &err);
    assert_non_null(rc);
    assert_string_equal(pick(rc, req("svc:80", "/", NULL)), "svc");
    assert_string_equal(pick(rc, req("[::1]:80", "/", NULL)), "v6");
    assert_string_equal(pick(rc, req("[::1]", "/", NULL)), "v6");
    msm_route_config_unref(rc);
}

static const char *ROUTES =
    "{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":["
    "{\"name\":\"exact\",\"match\":{\"path\":\"/exact\"},\"route\":{\"cluster\":\"a\"}},"
    "{\"name\":\"sep\",\"match\":{\"path_separated_prefix\":\"/sep\"},\"route\":{\"cluster\":\"a\"}},"
    "{\"name\":\"re\",\"match\":{\"safe_regex\":{\"regex\":\"/re/[0-9]+\"}},\"route\":{\"cluster\":\"a\"}},"
    "{\"name\":\"ci\",\"match\":{\"prefix\":\"/CI\",\"case_sensitive\":false},\"route\":{\"cluster\":\"a\"}},"
    "{\"name\":\"hdr\",\"match\":{\"prefix\":\"/h\",\"headers\":["
    "  {\"name\":\"x-exact\",\"string_match\":{\"exact\":\"v\"}},"
    "  {\"name\":\"x-pfx\",\"string_match\":{\"prefix\":\"ab\"}},"
    "  {\"name\":\"x-sfx\",\"string_match\":{\"suffix\":\"yz\",\"ignore_case\":true}},"
    "  {\"name\":\"x-cont\",\"string_match\":{\"contains\":\"mid\"}},"
    "  {\"name\":\"x-re\",\"string_match\":{\"safe_regex\":{\"regex\":\"[a-c]+\"}}},"
    "  {\"name\":\"x-present\",\"present_match\":true},"
    "  {\"name\":\"x-absent\",\"present_match\":false},"
    "  {\"name\":\"x-range\",\"range_match\":{\"start\":10,\"end\":20}},"
    "  {\"name\":\"x-not\",\"string_match\":{\"exact\":\"bad\"},\"invert_match\":true}]},"
    " \"route\":{\"cluster\":\"a\"}},"
    "{\"name\":\"qp\",\"match\":{\"prefix\":\"/q\",\"query_parameters\":["
    "  {\"name\":\"a\",\"string_match\":{\"exact\":\"1\"}},{\"name\":\"b\",\"present_match\":true}]},"
    " \"route\":{\"cluster\":\"a\"}},"
    "{\"name\":\"grpc\",\"match\":{\"prefix\":\"/g\",\"grpc\":{}},\"route\":{\"cluster\":\"a\"}},"
    "{\"name\":\"frac\",\"match\":{\"prefix\":\"/frac\",\"runtime_fraction\":{\"default_value\":"
    "  {\"numerator\":50,\"denominator\":\"HUNDRED\"}}},\"route\":{\"cluster\":\"a\"}},"
    "{\"name\":\"prefix\",\"match\":{\"prefix\":\"/p\"},\"route\":{\"cluster\":\"a\"}}]}]}";

static void test_route_match(void **state)
{
    (void)state;
    struct msm_err err = {{0}};
    struct msm_route_config *rc = build(ROUTES, &err);
    assert_non_null(rc);
    assert_string_equal(pick(rc, req("x", "/exact", NULL)), "exact");
    assert_string_equal(pick(rc, req("x", "/exact?q=1", NULL)), "exact");
    assert_string_equal(pick(rc, req("x", "/exact/", NULL)), "");
    assert_string_equal(pick(rc, req("x", "/sep", NULL)), "sep");
    assert_string_equal(pick(rc, req("x", "/sep/x", NULL)), "sep");
    assert_string_equal(pick(rc, req("x", "/sep?x", NULL)), "sep");
    assert_string_equal(pick(rc, req("x", "/separate", NULL)), "");
    assert_string_equal(pick(rc, req("x", "/re/123", NULL)), "re");
    assert_string_equal(pick(rc, req("x", "/re/123?z", NULL)), "re");
    assert_string_equal(pick(rc, req("x", "/re/12a", NULL)), "");
    assert_string_equal(pick(rc, req("x", "/ci/x", NULL)), "ci");
    assert_string_equal(pick(rc, req("x", "/cI", NULL)), "ci");
    const char *good[] = {"x-exact", "v", "x-pfx", "abc", "x-sfx", "wxYZ", "x-cont", "amidb",
                          "x-re", "abc", "x-present", "", "x-range", "15", "x-not", "good"};
    struct msm_hdrs *h = req("x", "/h", NULL);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i += 2) {
        msm_hdrs_addz(h, good[i], good[i + 1]);
    }
    assert_string_equal(pick(rc, h), "hdr");
    /* each header failing on its own makes the route not match */
    for (size_t bad = 0; bad < sizeof(good) / sizeof(good[0]); bad += 2) {
        h = req("x", "/h", NULL);
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i += 2) {
            if (i != bad) {
                msm_hdrs_addz(h, good[i], good[i + 1]);
            } else if (strcmp(good[i], "x-present") != 0) {
                msm_hdrs_addz(h, good[i], !strcmp(good[i], "x-not") ? "bad" : "zzz-999");
            }
        }
        assert_string_equal(pick(rc, h), "");
    }
    /* x-absent present: no match */
    h = req("x", "/h", NULL);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i += 2) {
        msm_hdrs_addz(h, good[i], good[i + 1]);
    }
    msm_hdrs_addz(h, "x-absent", "1");
    assert_string_equal(pick(rc, h), "");
    assert_string_equal(pick(rc, req("x", "/q?b&a=1", NULL)), "qp");
    assert_string_equal(pick(rc, req("x", "/q?a=1&b=2", NULL)), "qp");
    assert_string_equal(pick(rc, req("x", "/q?a=2&b=2", NULL)), "");
    assert_string_equal(pick(rc, req("x", "/q?a=1", NULL)), "");
    assert_string_equal(pick(rc, req("x", "/g", "content-type", "application/grpc", NULL)),
                        "grpc");
    assert_string_equal(pick(rc, req("x", "/g", "content-type", "application/grpc+proto",
                                     NULL)), "grpc");
    assert_string_equal(pick(rc, req("x", "/g", "content-type", "application/json", NULL)),
                        "");
    assert_string_equal(pick(rc, req("x", "/g", NULL)), "");
    h = req("x", "/frac", NULL);
    assert_string_equal(msm_route_select(rc, h, 10)->name, "frac");
    assert_null(msm_route_select(rc, h, 60));
    msm_hdrs_free(h);
    assert_string_equal(pick(rc, req("x", "/p", NULL)), "prefix");
    assert_string_equal(pick(rc, req("x", "/P", NULL)), "");
    msm_route_config_unref(rc);
}

static void test_actions(void **state)
{
    (void)state;
    struct msm_err err = {{0}};
    struct msm_route_config *rc = build(
        "{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],"
        "\"request_headers_to_add\":[{\"header\":{\"key\":\"x-vh\",\"value\":\"vh\"}}],"
        "\"routes\":["
        "{\"name\":\"w\",\"match\":{\"prefix\":\"/w\"},\"route\":{\"weighted_clusters\":{"
        "  \"clusters\":[{\"name\":\"a\",\"weight\":1},{\"name\":\"b\",\"weight\":3}]}}},"
        "{\"name\":\"pr\",\"match\":{\"prefix\":\"/old/\"},\"route\":{\"cluster\":\"a\","
        "  \"prefix_rewrite\":\"/new/\"}},"
        "{\"name\":\"rr\",\"match\":{\"prefix\":\"/r/\"},\"route\":{\"cluster\":\"a\","
        "  \"regex_rewrite\":{\"pattern\":{\"regex\":\"^/r/([^/]+)/x$\"},"
        "  \"substitution\":\"/\\\\1/y\"}}},"
        "{\"name\":\"redir\",\"match\":{\"prefix\":\"/redir\"},\"redirect\":{"
        "  \"https_redirect\":true,\"port_redirect\":8443,\"prefix_rewrite\":\"/to\"}},"
        "{\"name\":\"redir2\",\"match\":{\"prefix\":\"/r2\"},\"redirect\":{"
        "  \"host_redirect\":\"other\",\"strip_query\":true,\"response_code\":\"PERMANENT_REDIRECT\"}},"
        "{\"name\":\"direct\",\"match\":{\"prefix\":\"/d\"},\"direct_response\":{\"status\":200,"
        "  \"body\":{\"inline_string\":\"hi\"}},"
        "  \"request_headers_to_add\":[{\"header\":{\"key\":\"x-r\",\"value\":\"1\"},"
        "   \"append_action\":\"OVERWRITE_IF_EXISTS_OR_ADD\"},"
        "   {\"header\":{\"key\":\"x-new\",\"value\":\"n\"},\"append_action\":\"ADD_IF_ABSENT\"},"
        "   {\"header\":{\"key\":\"x-addr\",\"value\":\"[%DOWNSTREAM_REMOTE_ADDRESS%]\"}}],"
        "  \"request_headers_to_remove\":[\"x-gone\"]}]}]}",
        &err);
    assert_non_null(rc);
    struct msm_hdrs *h = req("host:80", "/w", NULL);
    const struct msm_route *r = msm_route_select(rc, h, 0);
    assert_int_equal(r->kind, MSM_ROUTE_WEIGHTED);
    int counts[2] = {0, 0};
    for (uint64_t x = 0; x < 400; x++) {
        counts[msm_route_pick_weighted(r, x)]++;
    }
    assert_int_equal(counts[0], 100);
    assert_int_equal(counts[1], 300);
    msm_hdrs_free(h);

    h = req("h", "/old/x?k=v", NULL);
    r = msm_route_select(rc, h, 0);
    char *p = msm_route_rewrite_path(r, "/old/x?k=v");
    assert_string_equal(p, "/new/x?k=v");
    free(p);
    msm_hdrs_free(h);
    h = req("h", "/r/abc/x?q", NULL);
    r = msm_route_select(rc, h, 0);
    p = msm_route_rewrite_path(r, "/r/abc/x?q");
    assert_string_equal(p, "/abc/y?q");
    free(p);
    msm_hdrs_free(h);

    h = req("host:80", "/redir/a?x=1", NULL);
    r = msm_route_select(rc, h, 0);
    assert_int_equal(r->kind, MSM_ROUTE_REDIRECT);
    assert_int_equal(r->redir.status, 301);
    char *loc = msm_route_redirect_location(r, h, false);
    assert_string_equal(loc, "https://host:8443/to/a?x=1");
    free(loc);
    msm_hdrs_free(h);
    h = req("host", "/r2/a?x=1", NULL);
    r = msm_route_select(rc, h, 0);
    assert_int_equal(r->redir.status, 308);
    loc = msm_route_redirect_location(r, h, false);
    assert_string_equal(loc, "http://other/r2/a");
    free(loc);
    msm_hdrs_free(h);

    h = req("h", "/d", "x-r", "old", "x-r", "old2", "x-new", "keep", "x-gone", "1", NULL);
    r = msm_route_select(rc, h, 0);
    assert_int_equal(r->direct_status, 200);
    assert_string_equal(r->direct_body, "hi");
    struct msm_hv_ctx vc = {.downstream_remote = "10.1.2.3:555"};
    msm_header_ops_apply(&r->req, h, &vc);
    msm_header_ops_apply(&r->vh->req, h, &vc);
    assert_int_equal(msm_hdrs_count(h, "x-r"), 1);
    assert_string_equal(msm_hdrs_get(h, "x-r"), "1");
    assert_string_equal(msm_hdrs_get(h, "x-new"), "keep");
    assert_string_equal(msm_hdrs_get(h, "x-addr"), "[10.1.2.3:555]");
    assert_null(msm_hdrs_get(h, "x-gone"));
    assert_string_equal(msm_hdrs_get(h, "x-vh"), "vh");
    msm_hdrs_free(h);
    msm_route_config_unref(rc);
}

/* Unsupported or invalid fields are rejected with their path. */
static void test_nack(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":[{\"match\":"
         "{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\",\"request_mirror_policies\":"
         "[{\"cluster\":\"m\",\"cluster_header\":\"x\"}]}}]}]}",
         "virtual_hosts[0] 'v': routes[0]: route: request_mirror_policies[0]: only one of "
         "cluster 'm' or cluster_header 'x' can be specified"},
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"a\",\"*\"]},"
         "{\"name\":\"w\",\"domains\":[\"a\"]}]}",
         "Only unique values for domains are permitted. Duplicate entry of domain a"},
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"]},{\"name\":\"w\","
         "\"domains\":[\"*\"]}]}",
         "Only a single wildcard domain is permitted"},
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"a*b\"]}]}",
         "virtual_hosts[0] 'v': domains[0] 'a*b': a wildcard may only be the first or last"},
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":[{\"match\":"
         "{\"safe_regex\":{\"regex\":\"(\"}},\"route\":{\"cluster\":\"a\"}}]}]}",
         "routes[0]: match.safe_regex: invalid regex '('"},
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":[{\"match\":"
         "{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\",\"retry_policy\":{\"retry_priority\":"
         "{\"name\":\"p\"}}}}]}]}",
         "route.retry_policy: retry_priority: not supported"},
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":[{\"match\":"
         "{\"prefix\":\"/\"},\"route\":{\"weighted_clusters\":{\"clusters\":[{\"name\":\"a\","
         "\"weight\":0}]}}}]}]}",
         "route.weighted_clusters: the sum of weights must be positive"},
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":[{\"match\":"
         "{\"prefix\":\"/\"},\"direct_response\":{\"status\":99}}]}]}",
         "direct_response.status: 99 is out of range"},
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":[{\"match\":"
         "{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"},\"request_headers_to_add\":"
         "[{\"header\":{\"key\":\"x\",\"value\":\"%UNKNOWN_VAR%\"}}]}]}]}",
         "header formatter %UNKNOWN_VAR% is not supported"},
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":[{\"match\":"
         "{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"},\"typed_per_filter_config\":"
         "{\"x\":{\"@type\":\"type.googleapis.com/envoy.extensions.filters.http.router.v3."
         "Router\"}}}]}]}",
         "typed_per_filter_config['x']: per-route config type "
         "envoy.extensions.filters.http.router.v3.Router is not supported"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct msm_err err = {{0}};
        struct msm_route_config *rc = build(cases[i].json, &err);
        if (rc || !strstr(err.msg, cases[i].want)) {
            fail_msg("case %zu: got '%s', want '%s'", i, rc ? "(accepted)" : err.msg,
                     cases[i].want);
        }
    }
}

static void test_normalize_path(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
        bool merge;
    } cases[] = {
        {"/a/b/../c", "/a/c", false},
        {"/a/./b/.", "/a/b/", false},
        {"/../../a", "/a", false},
        {"/a/%7Eb/%2f", "/a/~b/%2F", false},
        {"/a//b///c?x=//", "/a/b/c?x=//", true},
        {"/a//b", "/a//b", false},
        {"/a\\b", "/a/b", false},
        {"/", "/", false},
        {"/a/..", "/", false},
        {"/a/b/..?q=/../", "/a/?q=/../", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *o = msm_hcm_normalize_path(cases[i].in, true, cases[i].merge);
        if (!o || strcmp(o, cases[i].out) != 0) {
            fail_msg("case %zu: '%s' -> '%s', want '%s'", i, cases[i].in, o ? o : "(null)",
                     cases[i].out);
        }
        free(o);
    }
    assert_null(msm_hcm_normalize_path("a/b", true, false));
    assert_null(msm_hcm_normalize_path("/a%zz", true, false));
    assert_null(msm_hcm_normalize_path("/a%2", true, false));
}

/* Regression: a route config without virtual hosts (istiod sends such configs, e.g. for ports
 * with no HTTP services yet) passed NULL to qsort, which UBSan reports. */
static void test_no_virtual_hosts(void **state)
{
    (void)state;
    struct msm_err err = {{0}};
    struct msm_route_config *rc = build("{\"name\":\"8080\"}", &err);
    assert_non_null(rc);
    msm_route_config_unref(rc);
    rc = build("{\"name\":\"x\",\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[]}]}", &err);
    if (rc) {
        msm_route_config_unref(rc);
    }
}

static void test_retry_on(void **state)
{
    (void)state;
    uint32_t b = msm_retry_on_parse("connect-failure, refused-stream,unavailable,cancelled,"
                                    "retriable-status-codes,bogus");
    assert_int_equal(b, MSM_RETRY_CONNECT_FAILURE | MSM_RETRY_REFUSED_STREAM |
                            MSM_RETRY_GRPC_UNAVAILABLE | MSM_RETRY_GRPC_CANCELLED |
                            MSM_RETRY_RETRIABLE_STATUS_CODES);
    assert_int_equal(msm_retry_on_parse("5xx"), MSM_RETRY_5XX);
    assert_int_equal(msm_retry_on_parse(""), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domains),      cmocka_unit_test(test_route_match),
        cmocka_unit_test(test_actions),      cmocka_unit_test(test_nack),
        cmocka_unit_test(test_normalize_path), cmocka_unit_test(test_retry_on),
        cmocka_unit_test(test_no_virtual_hosts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
