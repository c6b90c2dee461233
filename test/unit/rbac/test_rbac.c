/* The RBAC engine: policy semantics (ALLOW/DENY/LOG), and/or/not nesting, principals from mTLS
 * SANs (URI, then DNS, then subject), ports and ranges, and config errors for what cannot be
 * enforced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "envoy/config/rbac/v3/rbac.pb-c.h"

#include "config/pbjson.h"
#include "rbac/rbac.h"

static struct msm_rbac *build(const char *json, bool http, struct msm_err *err)
{
    ProtobufCMessage *m = msm_pbjson_decode_text(&envoy__config__rbac__v3__rbac__descriptor, json,
                                                 strlen(json), NULL, err);
    assert_non_null(m);
    struct msm_rbac *r = msm_rbac_from_proto(m, http, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

static struct msm_address addr(const char *ip, uint32_t port)
{
    struct msm_address a;
    assert_int_equal(msm_address_from_ip(ip, port, &a, NULL), 0);
    return a;
}

static void test_allow_deny_log(void **state)
{
    (void)state;
    struct msm_err err;
    struct msm_address src = addr("10.1.2.3", 5555), dst = addr("10.9.9.9", 8080);
    struct msm_rbac_ctx c = {.local = &dst, .remote = &src, .direct_remote = &src};
#define RULE                                                                                      \
    "{\"action\":\"%s\",\"policies\":{\"p\":{\"permissions\":[{\"destination_port\":8080}],"   \
    "\"principals\":[{\"remote_ip\":{\"address_prefix\":\"10.1.0.0\",\"prefix_len\":16}}]}}}"
    char buf[512];
    const char *policy;
    snprintf(buf, sizeof(buf), RULE, "ALLOW");
    struct msm_rbac *r = build(buf, false, &err);
    assert_true(msm_rbac_allowed(r, &c, &policy));
    assert_string_equal(policy, "p");
    msm_rbac_free(r);
    snprintf(buf, sizeof(buf), RULE, "DENY");
    r = build(buf, false, &err);
    assert_false(msm_rbac_allowed(r, &c, &policy));
    struct msm_address other = addr("192.168.0.1", 1);
    c.remote = &other;
    assert_true(msm_rbac_allowed(r, &c, &policy)); /* no match: DENY allows */
    assert_null(policy);
    msm_rbac_free(r);
    snprintf(buf, sizeof(buf), RULE, "LOG");
    r = build(buf, false, &err);
    assert_true(msm_rbac_allowed(r, &c, &policy));
    msm_rbac_free(r);
    /* No policy at all: ALLOW denies everything (Istio's allow-nothing). */
    r = build("{}", false, &err);
    assert_false(msm_rbac_allowed(r, &c, NULL));
    msm_rbac_free(r);
}

static void test_nesting_and_ranges(void **state)
{
    (void)state;
    struct msm_err err;
    struct msm_rbac *r = build(
        "{\"policies\":{\"p\":{\"permissions\":[{\"and_rules\":{\"rules\":[{\"destination_port_"
        "range\":{\"start\":8000,\"end\":8080}},{\"not_rule\":{\"destination_port\":8001}}]}}],"
        "\"principals\":[{\"or_ids\":{\"ids\":[{\"direct_remote_ip\":{\"address_prefix\":\"127.0."
        "0.1\",\"prefix_len\":32}},{\"not_id\":{\"any\":true}}]}}]}}}",
        false, &err);
    assert_non_null(r);
    struct msm_address src = addr("127.0.0.1", 1);
    struct msm_address d8000 = addr("1.1.1.1", 8000), d8001 = addr("1.1.1.1", 8001),
                       d8080 = addr("1.1.1.1", 8080);
    struct msm_rbac_ctx c = {.remote = &src, .direct_remote = &src, .local = &d8000};
    assert_true(msm_rbac_allowed(r, &c, NULL));
    c.local = &d8001; /* excluded by not_rule */
    assert_false(msm_rbac_allowed(r, &c, NULL));
    c.local = &d8080; /* end is exclusive */
    assert_false(msm_rbac_allowed(r, &c, NULL));
    msm_rbac_free(r);
}

static void test_principals_from_tls(void **state)
{
    (void)state;
    struct msm_err err;
    struct msm_rbac *r = build(
        "{\"policies\":{\"sa\":{\"permissions\":[{\"any\":true}],\"principals\":["
        "{\"authenticated\":{\"principal_name\":{\"exact\":\"spiffe://cluster.local/ns/a/sa/b\"}}},"
        "{\"filter_state\":{\"key\":\"io.istio.peer_principal\",\"string_match\":{\"prefix\":"
        "\"spiffe://cluster.local/ns/ops/\"}}}]}}}",
        false, &err);
    assert_non_null(r);
    const char *uri1[] = {"spiffe://cluster.local/ns/a/sa/b"};
    const char *uri2[] = {"spiffe://cluster.local/ns/ops/sa/x"};
    const char *uri3[] = {"spiffe://cluster.local/ns/c/sa/d"};
    struct msm_rbac_ctx c = {.uri_sans = uri1, .n_uri_sans = 1, .peer_validated = true};
    assert_true(msm_rbac_allowed(r, &c, NULL));
    c.uri_sans = uri2;
    assert_true(msm_rbac_allowed(r, &c, NULL));
    c.uri_sans = uri3;
    assert_false(msm_rbac_allowed(r, &c, NULL));
    c.uri_sans = uri1;
    c.peer_validated = false; /* an unverified certificate proves nothing */
    assert_false(msm_rbac_allowed(r, &c, NULL));
    msm_rbac_free(r);
    /* authenticated falls back to DNS SANs only when there is no URI SAN */
    r = build("{\"policies\":{\"p\":{\"permissions\":[{\"any\":true}],\"principals\":["
              "{\"authenticated\":{\"principal_name\":{\"exact\":\"svc.local\"}}}]}}}",
              false, &err);
    const char *dns[] = {"svc.local"};
    struct msm_rbac_ctx d = {.dns_sans = dns, .n_dns_sans = 1, .peer_validated = true};
    assert_true(msm_rbac_allowed(r, &d, NULL));
    d.uri_sans = uri3;
    d.n_uri_sans = 1;
    assert_false(msm_rbac_allowed(r, &d, NULL));
    msm_rbac_free(r);
}

static void test_unenforceable_is_an_error(void **state)
{
    (void)state;
    struct msm_err err;
    assert_null(build("{\"policies\":{\"p\":{\"permissions\":[{\"header\":{\"name\":\":method\","
                      "\"exact_match\":\"GET\"}}],\"principals\":[{\"any\":true}]}}}",
                      false, &err));
    assert_non_null(strstr(err.msg, "only valid in the HTTP RBAC filter"));
    assert_null(build("{\"policies\":{\"p\":{\"permissions\":[{\"any\":true}],\"principals\":["
                      "{\"metadata\":{\"filter\":\"envoy.filters.x\",\"path\":[{\"key\":\"a\"}],"
                      "\"value\":{\"string_match\":{\"exact\":\"b\"}}}}]}}}",
                      false, &err));
    assert_non_null(strstr(err.msg, "istio_authn"));
    assert_null(build("{\"policies\":{\"p\":{\"permissions\":[{\"any\":true}],\"principals\":["
                      "{\"filter_state\":{\"key\":\"other.key\",\"string_match\":{\"exact\":"
                      "\"b\"}}}]}}}",
                      false, &err));
    assert_null(build("{\"policies\":{\"p\":{\"permissions\":[{\"any\":true}]}}}", false, &err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allow_deny_log),
        cmocka_unit_test(test_nesting_and_ranges),
        cmocka_unit_test(test_principals_from_tls),
        cmocka_unit_test(test_unenforceable_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
