/* Header maps (src/http/headers.c): lookups by name, replace / remove keeping order, pseudo-
 * headers in front, values that alias the map's own storage, big maps and values (the chunked
 * string storage); and the address formatting the router and HCM use per request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer/buf.h"
#include "http/headers.h"
#include "net/address.h"

static void test_lookup_set_remove(void **state)
{
    (void)state;
    struct msm_hdrs h;
    msm_hdrs_init(&h);
    msm_hdrs_addz(&h, "Accept", "a");
    msm_hdrs_addz(&h, "x-a", "1");
    msm_hdrs_addz(&h, ":path", "/p");
    msm_hdrs_addz(&h, "X-A", "2");
    msm_hdrs_addz(&h, "x-b", "3");
    assert_string_equal(h.v[0].name, ":path"); /* pseudo-headers first */
    assert_string_equal(msm_hdrs_get(&h, "accept"), "a");
    assert_null(msm_hdrs_get(&h, "Accept")); /* lookups take lower-case names */
    assert_null(msm_hdrs_get(&h, "x-"));
    assert_null(msm_hdrs_get(&h, "x-aa"));
    assert_null(msm_hdrs_get(&h, ""));
    assert_int_equal(msm_hdrs_count(&h, "x-a"), 2);
    assert_int_equal(h.bytes, 6 + 1 + 3 + 1 + 5 + 2 + 3 + 1 + 3 + 1);
    msm_hdrs_set(&h, "x-a", "new");
    assert_int_equal(msm_hdrs_count(&h, "x-a"), 1);
    assert_string_equal(h.v[2].name, "x-a"); /* replaced in place */
    assert_string_equal(h.v[2].value, "new");
    /* A value taken from the map itself. */
    msm_hdrs_set(&h, "x-b", msm_hdrs_get(&h, "x-b"));
    assert_string_equal(msm_hdrs_get(&h, "x-b"), "3");
    msm_hdrs_set(&h, "x-c", msm_hdrs_get(&h, "accept"));
    assert_string_equal(msm_hdrs_get(&h, "x-c"), "a");
    assert_int_equal(msm_hdrs_remove(&h, "x-a"), 1);
    assert_int_equal(msm_hdrs_remove(&h, "x-a"), 0);
    assert_int_equal(msm_hdrs_remove_prefix(&h, "x-"), 2);
    assert_int_equal(h.n, 2);
    assert_int_equal(h.bytes, 6 + 1 + 5 + 2);
    msm_hdrs_deinit(&h);
    assert_int_equal(h.n, 0);
    msm_hdrs_deinit(&h); /* twice is fine */
}

static void test_big_maps(void **state)
{
    (void)state;
    struct msm_hdrs h, c, m;
    msm_hdrs_init(&h);
    msm_hdrs_init(&c);
    msm_hdrs_init(&m);
    char name[32], value[64];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "h-%d", i);
        snprintf(value, sizeof(value), "value-%d", i * 7);
        msm_hdrs_addz(&h, name, value);
    }
    size_t big_len = 100000;
    char *big = malloc(big_len + 1);
    memset(big, 'v', big_len);
    big[big_len] = '\0';
    msm_hdrs_addz(&h, "big", big);
    msm_hdrs_addz(&h, ":status", "200");
    msm_hdrs_copy(&c, &h);
    msm_hdrs_move(&m, &c);
    assert_int_equal(c.n, 0);
    assert_int_equal(m.n, 302);
    assert_string_equal(m.v[0].name, ":status");
    for (int i = 0; i < 300; i += 37) {
        snprintf(name, sizeof(name), "h-%d", i);
        snprintf(value, sizeof(value), "value-%d", i * 7);
        assert_string_equal(msm_hdrs_get(&m, name), value);
    }
    assert_string_equal(msm_hdrs_get(&m, "big"), big);
    assert_int_equal(msm_hdrs_find(&m, "big")->vlen, big_len);
    assert_int_equal(m.bytes, h.bytes);
    free(big);
    msm_hdrs_deinit(&h);
    msm_hdrs_deinit(&c);
    msm_hdrs_deinit(&m);
    struct msm_hdrs *hp = msm_hdrs_new();
    msm_hdrs_addz(hp, "a", "b");
    msm_hdrs_free(hp);
    msm_hdrs_free(NULL);
    msm_buf_thread_cleanup();
}

static void test_address_str_eq(void **state)
{
    (void)state;
    struct msm_address a, b;
    char s[MSM_ADDRSTRLEN];
    static const struct {
        const char *ip;
        uint32_t port;
        const char *want;
    } cases[] = {
        {"10.1.200.3", 8080, "10.1.200.3:8080"},
        {"0.0.0.0", 0, "0.0.0.0:0"},
        {"::1", 443, "[::1]:443"},
        {"fe80::1:2", 15001, "[fe80::1:2]:15001"},
        {"255.255.255.255", 65535, "255.255.255.255:65535"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(msm_address_from_ip(cases[i].ip, cases[i].port, &a, NULL), 0);
        msm_address_str(&a, s, sizeof(s));
        assert_string_equal(s, cases[i].want);
    }
    msm_address_str(&a, s, 8); /* the last case, truncated as snprintf would */
    assert_string_equal(s, "255.255");
    msm_address_str(&a, s, 1);
    assert_string_equal(s, "");
    assert_int_equal(msm_address_from_pipe("/tmp/x.sock", 0, &a, NULL), 0);
    msm_address_str(&a, s, sizeof(s));
    assert_string_equal(s, "/tmp/x.sock");

    assert_int_equal(msm_address_from_ip("10.0.0.1", 80, &a, NULL), 0);
    assert_int_equal(msm_address_from_ip("10.0.0.1", 80, &b, NULL), 0);
    assert_true(msm_address_eq(&a, &b));
    assert_int_equal(msm_address_from_ip("10.0.0.1", 81, &b, NULL), 0);
    assert_false(msm_address_eq(&a, &b));
    assert_int_equal(msm_address_from_ip("10.0.0.2", 80, &b, NULL), 0);
    assert_false(msm_address_eq(&a, &b));
    assert_int_equal(msm_address_from_ip("::ffff:10.0.0.1", 80, &b, NULL), 0);
    assert_false(msm_address_eq(&a, &b)); /* families differ */
    assert_int_equal(msm_address_from_ip("::1", 80, &a, NULL), 0);
    assert_int_equal(msm_address_from_ip("0::1", 80, &b, NULL), 0);
    assert_true(msm_address_eq(&a, &b));
    assert_int_equal(msm_address_from_ip("::2", 80, &b, NULL), 0);
    assert_false(msm_address_eq(&a, &b));
    assert_int_equal(msm_address_from_pipe("/tmp/a", 0, &a, NULL), 0);
    assert_int_equal(msm_address_from_pipe("/tmp/a", 0, &b, NULL), 0);
    assert_true(msm_address_eq(&a, &b));
    assert_int_equal(msm_address_from_pipe("/tmp/b", 0, &b, NULL), 0);
    assert_false(msm_address_eq(&a, &b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_set_remove),
        cmocka_unit_test(test_big_maps),
        cmocka_unit_test(test_address_str_eq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
