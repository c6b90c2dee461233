/* Request mirror policies (src/http/route.c: parsing, defaults, the most specific non-empty
 * level wins; filters/http/router/shadow.c: the "-shadow" host, which policies fire) and the
 * x-forwarded-client-cert element the connection manager builds (hcm_headers.c: keys, order,
 * quoting, repeated SANs), its generated x-request-id (an RFC 4122 version 4 UUID) and its
 * local replies to gRPC requests (status mapping, percent-encoded grpc-message). */
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
#include "filters/network/http_connection_manager/hcm_private.h"
#include "http/route.h"
#include "test/unit/http/route_json.h"

/* The statics and the opaque struct msm_shadow (shadow_pick: which policies fired). */
#include "filters/http/router/shadow.c"

static void test_mirror_policies(void **state)
{
    (void)state;
    struct msm_err err = {{0}};
    /* Istio's VirtualService mirror (numerator 100 of HUNDRED) and mirrorPercentage 12.5
     * (125000 of MILLION); no runtime_fraction = 100 %; the config level and a vhost level. */
    struct msm_route_config *rc = build(
        "{\"name\":\"rc\",\"request_mirror_policies\":[{\"cluster\":\"rc-m\"}],"
        "\"virtual_hosts\":["
        "{\"name\":\"v\",\"domains\":[\"v\"],"
        " \"request_mirror_policies\":[{\"cluster\":\"vh-m\"}],\"routes\":["
        "  {\"name\":\"own\",\"match\":{\"prefix\":\"/own\"},\"route\":{\"cluster\":\"a\","
        "   \"request_mirror_policies\":[{\"cluster\":\"m1\",\"runtime_fraction\":{"
        "    \"default_value\":{\"numerator\":100}},\"trace_sampled\":false},"
        "    {\"cluster_header\":\"X-Mirror\",\"runtime_fraction\":{\"default_value\":"
        "    {\"numerator\":125000,\"denominator\":\"MILLION\"}},"
        "    \"disable_shadow_host_suffix_append\":true},"
        "    {\"cluster\":\"m3\",\"runtime_fraction\":{\"runtime_key\":\"k\"}}]}},"
        "  {\"name\":\"inherit\",\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"}}]},"
        "{\"name\":\"w\",\"domains\":[\"*\"],\"routes\":["
        "  {\"name\":\"top\",\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\"}}]}]}",
        &err);
    assert_non_null(rc);
    const struct msm_route *own = &rc->vhosts[0].routes[0];
    assert_non_null(own->mirrors);
    assert_int_equal(own->mirrors->n, 3);
    const struct msm_mirror_policy *p = own->mirrors->v;
    assert_string_equal(p[0].cluster, "m1");
    assert_null(p[0].cluster_header);
    assert_true(p[0].num == 100 && p[0].den == 100 && !p[0].keep_host);
    assert_null(p[1].cluster);
    assert_string_equal(p[1].cluster_header, "x-mirror");
    assert_true(p[1].num == 125000 && p[1].den == 1000000 && p[1].keep_host);
    assert_true(p[2].num == 0 && p[2].den == 100); /* a runtime key without default: never */
    assert_string_equal(rc->vhosts[0].routes[1].mirrors->v[0].cluster, "vh-m");
    assert_string_equal(rc->vhosts[1].routes[0].mirrors->v[0].cluster, "rc-m");
    assert_int_equal(rc->vhosts[1].routes[0].mirrors->v[0].num, 100);

    /* Which policies fire: 100 % always, a header naming the cluster, 0 % never. */
    struct msm_hdrs *down = msm_hdrs_new(), *up = msm_hdrs_new();
    msm_hdrs_addz(down, "x-mirror", "from-header");
    msm_hdrs_addz(up, ":authority", "svc:80");
    struct msm_shadow_stats st = {0};
    int fired_header = 0;
    for (int i = 0; i < 2000; i++) {
        struct msm_shadow *sh = shadow_pick(own->mirrors, down, up, &st);
        assert_non_null(sh);
        assert_string_equal(sh->t[0].cluster, "m1"); /* 100 %: always */
        assert_false(sh->t[0].keep_host);
        assert_true(sh->n == 1 || sh->n == 2);       /* m3 (0 %) never */
        if (sh->n == 2) {
            assert_string_equal(sh->t[1].cluster, "from-header");
            assert_true(sh->t[1].keep_host);
            fired_header++;
        }
        assert_string_equal(msm_hdrs_get(&sh->hdrs, ":authority"), "svc:80"); /* a copy */
        msm_shadow_cancel(&sh);
        assert_null(sh);
        assert_null(shadow_pick(NULL, down, up, &st));
    }
    /* 12.5 % of 2000 = 250; 5 standard deviations is about 74 */
    assert_in_range(fired_header, 250 - 80, 250 + 80);
    /* Without the header (or with it empty) the cluster_header policy does not fire. */
    msm_hdrs_set(down, "x-mirror", "");
    for (int i = 0; i < 100; i++) {
        struct msm_shadow *sh = shadow_pick(own->mirrors, down, up, &st);
        assert_int_equal(sh->n, 1);
        msm_shadow_cancel(&sh);
    }
    /* The router's handle goes away once no copy is attached (none started here), at the end
     * of the body, at the trailers; every call is NULL-safe. */
    struct msm_buf chunk;
    msm_buf_init(&chunk);
    msm_buf_append(&chunk, "abc", 3);
    struct msm_shadow *sh = shadow_pick(own->mirrors, down, up, &st);
    assert_non_null(sh);
    msm_shadow_data(&sh, &chunk, false);
    assert_null(sh);
    msm_shadow_data(&sh, &chunk, true);
    msm_shadow_trailers(&sh, up);
    msm_shadow_cancel(&sh);
    assert_int_equal(chunk.len, 3); /* copied, left in place */
    sh = shadow_pick(own->mirrors, down, up, &st);
    msm_shadow_trailers(&sh, up);
    assert_null(sh);
    msm_buf_deinit(&chunk);
    msm_hdrs_free(down);
    msm_hdrs_free(up);
    msm_route_config_unref(rc);

    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"request_mirror_policies\":"
         "[{\"runtime_fraction\":{}}]}]}",
         "virtual_hosts[0] 'v': request_mirror_policies[0]: exactly one of cluster or "
         "cluster_header is required"},
        {"{\"request_mirror_policies\":[{\"cluster\":\"a\"},{\"cluster\":\"b\",\"cluster_header\":"
         "\"h\"}]}",
         "request_mirror_policies[1]: only one of cluster 'b' or cluster_header 'h'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct msm_err e = {{0}};
        struct msm_route_config *r = build(bad[i].json, &e);
        if (r || !strstr(e.msg, bad[i].want)) {
            fail_msg("case %zu: got '%s', want '%s'", i, r ? "(accepted)" : e.msg, bad[i].want);
        }
    }
}

static void test_shadow_host(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"svc.example:8080", "svc.example-shadow:8080"},
        {"svc", "svc-shadow"},
        {"10.0.0.1:80", "10.0.0.1-shadow:80"},
        {"[::1]:443", "[::1]-shadow:443"},
        {"[::1]", "[::1]-shadow"},
        {"a:", "a-shadow:"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = msm_shadow_host(cases[i][0]);
        assert_string_equal(got, cases[i][1]);
        free(got);
    }
}

static void check_xfcc(unsigned details, const struct msm_xfcc_peer *p, const char *want)
{
    char *got = msm_hcm_xfcc_element(details, p);
    assert_string_equal(got, want);
    free(got);
}

static void test_xfcc_element(void **state)
{
    (void)state;
    const char *by[] = {"spiffe://cluster.local/ns/default/sa/server", "spiffe://alt/server"};
    const char *uri[] = {"spiffe://cluster.local/ns/default/sa/client", "spiffe://x/y"};
    const char *dns[] = {"client.example", "c2.example"};
    struct msm_xfcc_peer p = {
        .by = by,
        .n_by = 1,
        .hash = "3f6c",
        .cert = "-----BEGIN%20CERTIFICATE-----%0AMIIB%2Bw%3D%3D%0A",
        .chain = "-----BEGIN%20CERTIFICATE-----%0AMIIB%0Aca%0A",
        .subject = "CN=Doe \\\"JD\\\",O=Acme\\, Inc.",
        .uri = uri,
        .n_uri = 1,
        .dns = dns,
        .n_dns = 1,
    };
    /* Istio's inbound set: subject, cert, dns, uri; Envoy's order puts Cert first. */
    check_xfcc(MSM_XFCC_SUBJECT | MSM_XFCC_CERT | MSM_XFCC_DNS | MSM_XFCC_URI, &p,
               "By=spiffe://cluster.local/ns/default/sa/server;Hash=3f6c;"
               "Cert=\"-----BEGIN%20CERTIFICATE-----%0AMIIB%2Bw%3D%3D%0A\";"
               "Subject=\"CN=Doe \\\"JD\\\",O=Acme\\, Inc.\";"
               "URI=spiffe://cluster.local/ns/default/sa/client;DNS=client.example");
    /* No details: By and Hash only. */
    check_xfcc(0, &p, "By=spiffe://cluster.local/ns/default/sa/server;Hash=3f6c");
    /* Every key, several SANs of each kind, repeated keys in order. */
    p.n_by = 2;
    p.n_uri = 2;
    p.n_dns = 2;
    check_xfcc(MSM_XFCC_CERT | MSM_XFCC_CHAIN | MSM_XFCC_SUBJECT | MSM_XFCC_URI | MSM_XFCC_DNS,
               &p,
               "By=spiffe://cluster.local/ns/default/sa/server;By=spiffe://alt/server;"
               "Hash=3f6c;Cert=\"-----BEGIN%20CERTIFICATE-----%0AMIIB%2Bw%3D%3D%0A\";"
               "Chain=\"-----BEGIN%20CERTIFICATE-----%0AMIIB%0Aca%0A\";"
               "Subject=\"CN=Doe \\\"JD\\\",O=Acme\\, Inc.\";URI=spiffe://cluster.local/ns/"
               "default/sa/client;URI=spiffe://x/y;DNS=client.example;DNS=c2.example");
    /* A peer without SANs or subject: Subject="" and URI= stay (Envoy keeps both keys), DNS
     * goes; no local URI SAN: no By. */
    struct msm_xfcc_peer bare = {.hash = "ab", .subject = ""};
    check_xfcc(MSM_XFCC_SUBJECT | MSM_XFCC_URI | MSM_XFCC_DNS, &bare,
               "Hash=ab;Subject=\"\";URI=");
    check_xfcc(MSM_XFCC_SUBJECT | MSM_XFCC_URI, &(struct msm_xfcc_peer){0}, "Subject=\"\";URI=");
    check_xfcc(MSM_XFCC_CERT | MSM_XFCC_DNS, &(struct msm_xfcc_peer){0}, "");
}

/* msm_hcm_uuid4: 8-4-4-4-12 lower-case hex, version nibble 4, variant 10xx; every hex digit
 * shows up in each random position over a few hundred ids, and no two ids are equal. */
static void test_request_id(void **state)
{
    (void)state;
    enum { N = 400 };
    static char ids[N][37];
    unsigned seen[36] = {0}; /* per position: a bit per hex digit value */
    for (int i = 0; i < N; i++) {
        char *u = ids[i];
        memset(u, 'X', 37);
        msm_hcm_uuid4(u);
        assert_int_equal(strlen(u), 36);
        for (int k = 0; k < 36; k++) {
            if (k == 8 || k == 13 || k == 18 || k == 23) {
                assert_int_equal(u[k], '-');
                continue;
            }
            const char *d = strchr("0123456789abcdef", u[k]);
            assert_true(d && u[k]);
            seen[k] |= 1u << (d - "0123456789abcdef");
        }
        assert_int_equal(u[14], '4');
        assert_non_null(strchr("89ab", u[19]));
        for (int j = 0; j < i; j++) {
            assert_string_not_equal(ids[j], u);
        }
    }
    for (int k = 0; k < 36; k++) {
        if (k == 8 || k == 13 || k == 18 || k == 23 || k == 14) {
            continue;
        }
        assert_int_equal(seen[k], k == 19 ? 0xf00u : 0xffffu);
    }
}

static void test_grpc_local_reply(void **state)
{
    (void)state;
    static const int map[][2] = {{400, 13}, {401, 16}, {403, 7},  {404, 12}, {429, 14},
                                 {502, 14}, {503, 14}, {504, 14}, {408, 2},  {500, 2}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        assert_int_equal(msm_grpc_status_of_http(map[i][0]), map[i][1]);
    }
    struct msm_hdrs h;
    msm_hdrs_init(&h);
    msm_hcm_build_grpc_local_reply(503, -1, "no healthy upstream: 100% down\n\xc3\xa9", &h);
    assert_string_equal(msm_hdrs_get(&h, ":status"), "200");
    assert_string_equal(msm_hdrs_get(&h, "content-type"), "application/grpc");
    assert_string_equal(msm_hdrs_get(&h, "grpc-status"), "14");
    assert_string_equal(msm_hdrs_get(&h, "grpc-message"),
                        "no healthy upstream: 100%25 down%0A%C3%A9");
    assert_null(msm_hdrs_get(&h, "content-length"));
    msm_hdrs_deinit(&h);
    msm_hdrs_init(&h);
    msm_hcm_build_grpc_local_reply(404, -1, NULL, &h);
    assert_string_equal(msm_hdrs_get(&h, "grpc-status"), "12");
    assert_null(msm_hdrs_get(&h, "grpc-message"));
    msm_hdrs_deinit(&h);
    msm_hdrs_init(&h);
    msm_hcm_build_grpc_local_reply(408, 4, "downstream duration timeout", &h);
    assert_string_equal(msm_hdrs_get(&h, "grpc-status"), "4"); /* given: DEADLINE_EXCEEDED */
    msm_hdrs_deinit(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mirror_policies),
        cmocka_unit_test(test_shadow_host),
        cmocka_unit_test(test_xfcc_element),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_grpc_local_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
