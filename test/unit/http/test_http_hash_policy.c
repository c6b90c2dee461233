/* RouteAction.hash_policy (src/http/hash_policy.c): each method's value hashed as Envoy's
 * (XXH64, seed 0), header values order-free, the fold of several policies, terminal, Envoy's
 * generated cookie (value and Set-Cookie line), and the NACK reasons. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "http/hash_policy.h"
#include "http/headers.h"
#include "net/address.h"
#include "test/unit/http/route_json.h"

/* One route "/" to cluster "a" with the hash_policy list <policies> (JSON array text). */
static struct msm_route_config *with_policies(const char *policies, struct msm_err *err)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":[{\"match\":"
             "{\"prefix\":\"/\"},\"route\":{\"cluster\":\"a\",\"hash_policy\":%s}}]}]}",
             policies);
    return build(json, err);
}

static const struct msm_hash_policy *policy_of(const struct msm_route_config *rc)
{
    return &rc->vhosts[0].routes[0].hash;
}

struct cookies {
    char v[4][256];
    int n;
};

static void on_cookie(void *ctx, const char *value, size_t len)
{
    struct cookies *c = ctx;
    assert_true(c->n < 4 && len < sizeof(c->v[0]));
    memcpy(c->v[c->n], value, len);
    c->v[c->n++][len] = 0;
}

/* Hash of the request (headers as name/value pairs, NULL-terminated) from 10.1.2.3:4567 to
 * 10.0.0.1:8080; returns false when no policy produced one. */
static bool eval(const char *policies, struct cookies *ck, uint64_t *out, ...)
{
    struct msm_err err = {{0}};
    struct msm_route_config *rc = with_policies(policies, &err);
    if (!rc) {
        fail_msg("refused: %s", err.msg);
    }
    struct msm_hdrs *h = msm_hdrs_new();
    va_list ap;
    va_start(ap, out);
    const char *k;
    while ((k = va_arg(ap, const char *))) {
        msm_hdrs_addz(h, k, va_arg(ap, const char *));
    }
    va_end(ap);
    struct msm_address remote, local;
    struct msm_err e2 = {{0}};
    assert_int_equal(msm_address_from_ip("10.1.2.3", 4567, &remote, &e2), 0);
    assert_int_equal(msm_address_from_ip("10.0.0.1", 8080, &local, &e2), 0);
    struct msm_hash_input in = {.req = h, .remote = &remote, .local = &local};
    bool got = msm_hash_policy_eval(policy_of(rc), &in, ck ? on_cookie : NULL, ck, out);
    msm_hdrs_free(h);
    msm_route_config_unref(rc);
    return got;
}

static uint64_t xx(const char *s)
{
    return XXH64(s, strlen(s), 0);
}

static void test_xxh64_is_envoys(void **state)
{
    (void)state;
    /* Envoy's HashUtil::xxHash64 is XXH64 with seed 0: the reference vectors. */
    assert_true(xx("") == 0xef46db3751d8e999ull);
    assert_true(xx("abc") == 0x44bc2cf5ad770999ull);
}

static void test_header(void **state)
{
    (void)state;
    uint64_t h = 0;
    assert_true(eval("[{\"header\":{\"header_name\":\"X-User\"}}]", NULL, &h, ":path", "/",
                     "x-user", "alice", NULL));
    assert_true(h == xx("alice"));
    assert_false(eval("[{\"header\":{\"header_name\":\"x-user\"}}]", NULL, &h, ":path", "/",
                      NULL));
    /* Several values: sorted, then chained through the seed; the order does not matter. */
    uint64_t ab, ba;
    assert_true(eval("[{\"header\":{\"header_name\":\"x-k\"}}]", NULL, &ab, "x-k", "b", "x-k",
                     "a", NULL));
    assert_true(eval("[{\"header\":{\"header_name\":\"x-k\"}}]", NULL, &ba, "x-k", "a", "x-k",
                     "b", NULL));
    assert_true(ab == ba);
    assert_true(ab == XXH64("b", 1, XXH64("a", 1, 0)));
    /* regex_rewrite applies before hashing. */
    assert_true(eval("[{\"header\":{\"header_name\":\":path\",\"regex_rewrite\":{\"pattern\":"
                     "{\"regex\":\"^/users/([^/]+)/.*$\"},\"substitution\":\"\\\\1\"}}}]",
                     NULL, &h, ":path", "/users/bob/photos", NULL));
    assert_true(h == xx("bob"));
    /* "host" is the authority. */
    assert_true(eval("[{\"header\":{\"header_name\":\"host\"}}]", NULL, &h, ":authority",
                     "svc.ns:80", NULL));
    assert_true(h == xx("svc.ns:80"));
}

static void test_cookie(void **state)
{
    (void)state;
    uint64_t h = 0;
    struct cookies ck = {0};
    const char *pol = "[{\"cookie\":{\"name\":\"sticky\",\"ttl\":\"3600s\",\"path\":\"/app\","
                      "\"attributes\":[{\"name\":\"SameSite\",\"value\":\"Lax\"},"
                      "{\"name\":\"Secure\"}]}}]";
    /* Present: its value, quotes and leading spaces removed, other cookies skipped. */
    assert_true(eval(pol, &ck, &h, "cookie", "a=1;  sticky=\"v-42\"; b=2", NULL));
    assert_true(h == xx("v-42"));
    assert_int_equal(ck.n, 0);
    assert_true(eval(pol, &ck, &h, "cookie", "x=1", "cookie", "sticky=v-43", NULL));
    assert_true(h == xx("v-43"));
    /* Absent with a ttl: Envoy's value from the connection's addresses, and its line. */
    assert_true(eval(pol, &ck, &h, "cookie", "stickyx=1", NULL));
    char want[17];
    snprintf(want, sizeof(want), "%016llx", (unsigned long long)xx("10.1.2.3:456710.0.0.1:8080"));
    assert_true(h == xx(want));
    assert_int_equal(ck.n, 1);
    char line[256];
    snprintf(line, sizeof(line),
             "sticky=\"%s\"; Max-Age=3600; Path=/app; SameSite=Lax; Secure; HttpOnly", want);
    assert_string_equal(ck.v[0], line);
    /* Session cookie (ttl 0): no Max-Age; no path: no Path. */
    ck.n = 0;
    assert_true(eval("[{\"cookie\":{\"name\":\"s\",\"ttl\":\"0s\"}}]", &ck, &h, NULL));
    snprintf(line, sizeof(line), "s=\"%s\"; HttpOnly", want);
    assert_string_equal(ck.v[0], line);
    /* Absent without a ttl, or an empty value: no hash, no cookie. */
    ck.n = 0;
    assert_false(eval("[{\"cookie\":{\"name\":\"s\"}}]", &ck, &h, "cookie", "s=", NULL));
    assert_int_equal(ck.n, 0);
    /* No callback (a caller that cannot send a cookie): nothing generated. */
    assert_false(eval("[{\"cookie\":{\"name\":\"s\",\"ttl\":\"5s\"}}]", NULL, &h, NULL));
}

static void test_ip_query_fold_terminal(void **state)
{
    (void)state;
    uint64_t h = 0;
    assert_true(eval("[{\"connection_properties\":{\"source_ip\":true}}]", NULL, &h, NULL));
    assert_true(h == xx("10.1.2.3"));
    /* source_ip false: no method at all, so its terminal flag does not stop the list. */
    assert_true(eval("[{\"connection_properties\":{},\"terminal\":true},"
                     "{\"header\":{\"header_name\":\"x\"}}]", NULL, &h, "x", "1", NULL));
    assert_true(h == xx("1"));
    assert_true(eval("[{\"query_parameter\":{\"name\":\"u\"}}]", NULL, &h, ":path",
                     "/p?a=1&u=carol&u=dave", NULL));
    assert_true(h == xx("carol"));
    assert_true(eval("[{\"query_parameter\":{\"name\":\"u\"}}]", NULL, &h, ":path", "/p?u",
                     NULL));
    assert_true(h == xx(""));
    assert_false(eval("[{\"query_parameter\":{\"name\":\"u\"}}]", NULL, &h, ":path", "/p?uu=1",
                      NULL));
    /* Two policies: the first rotated left by one, xor the second. */
    assert_true(eval("[{\"header\":{\"header_name\":\"a\"}},{\"header\":{\"header_name\":\"b\"}}]",
                     NULL, &h, "a", "1", "b", "2", NULL));
    uint64_t a = xx("1");
    assert_true(h == (((a << 1) | (a >> 63)) ^ xx("2")));
    /* A terminal policy that produced a hash ends the list; one that did not, does not. */
    assert_true(eval("[{\"header\":{\"header_name\":\"a\"},\"terminal\":true},"
                     "{\"header\":{\"header_name\":\"b\"}}]", NULL, &h, "a", "1", "b", "2", NULL));
    assert_true(h == xx("1"));
    assert_true(eval("[{\"header\":{\"header_name\":\"a\"},\"terminal\":true},"
                     "{\"header\":{\"header_name\":\"b\"}}]", NULL, &h, "b", "2", NULL));
    assert_true(h == xx("2"));
    /* filter_state: no object here ever hashes. */
    assert_false(eval("[{\"filter_state\":{\"key\":\"k\"}}]", NULL, &h, NULL));
}

static void test_nack(void **state)
{
    (void)state;
    static const struct {
        const char *policies;
        const char *want;
    } cases[] = {
        {"[{\"header\":{\"header_name\":\"\"}}]",
         "route: hash_policy[0]: header.header_name: '' is not a header name"},
        {"[{\"header\":{\"header_name\":\"x\",\"regex_rewrite\":{\"pattern\":{\"regex\":\"(\"},"
         "\"substitution\":\"\"}}}]",
         "hash_policy[0]: header.regex_rewrite.pattern"},
        {"[{\"connection_properties\":{}},{\"cookie\":{\"name\":\"\"}}]",
         "hash_policy[1]: cookie.name: must not be empty"},
        {"[{\"cookie\":{\"name\":\"a;b\"}}]", "cookie.name: 'a;b' is not a cookie name"},
        {"[{\"cookie\":{\"name\":\"a\",\"path\":\"/x;Domain=evil\"}}]", "cookie.path"},
        {"[{\"cookie\":{\"name\":\"a\",\"attributes\":[{\"name\":\"\"}]}}]",
         "cookie.attributes[0]"},
        {"[{\"query_parameter\":{\"name\":\"\"}}]", "query_parameter.name: must not be empty"},
        {"[{\"filter_state\":{\"key\":\"\"}}]", "filter_state.key: must not be empty"},
        {"[{\"terminal\":true}]", "hash_policy[0]: one of header, cookie"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct msm_err err = {{0}};
        struct msm_route_config *rc = with_policies(cases[i].policies, &err);
        if (rc || !strstr(err.msg, cases[i].want)) {
            fail_msg("case %zu: got '%s', want '%s'", i, rc ? "(accepted)" : err.msg,
                     cases[i].want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xxh64_is_envoys), cmocka_unit_test(test_header),
        cmocka_unit_test(test_cookie), cmocka_unit_test(test_ip_query_fold_terminal),
        cmocka_unit_test(test_nack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
