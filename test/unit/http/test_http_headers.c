/* Header maps (src/http/headers.c): lookups by name, replace / remove keeping order, pseudo-
 * headers in front, values that alias the map's own storage, big maps and values (the chunked
 * string storage), the name filter against a reference scan, the character checks against
 * byte-by-byte references; and the address formatting the router and HCM use per request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer/buf.h"
#include "common/fmt.h"
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
    /* The same value again: the first entry stays as it is (not copied), the others go. */
    size_t bytes = h.bytes;
    msm_hdrs_add(&h, "x-c", 3, "b", 1);
    const char *kept = msm_hdrs_get(&h, "x-c");
    msm_hdrs_set(&h, "x-c", "a");
    assert_ptr_equal(msm_hdrs_get(&h, "x-c"), kept);
    assert_int_equal(msm_hdrs_count(&h, "x-c"), 1);
    assert_int_equal(h.bytes, bytes);
    msm_hdrs_set(&h, "x-c", "ab");
    assert_string_equal(msm_hdrs_get(&h, "x-c"), "ab");
    assert_int_equal(h.bytes, bytes + 1);
    msm_hdrs_set(&h, "x-c", "a");
    assert_int_equal(h.bytes, bytes);
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

/* Reference scan: the lookups must answer exactly this whatever the name filter says. */
static int ref_count(const struct msm_hdrs *h, const char *name, int *first)
{
    int n = 0;
    *first = -1;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!strcmp(h->v[i].name, name)) {
            if (*first < 0) {
                *first = (int)i;
            }
            n++;
        }
    }
    return n;
}

static void check_lookups(const struct msm_hdrs *h, const char *name)
{
    int first;
    int n = ref_count(h, name, &first);
    assert_int_equal(msm_hdrs_count(h, name), n);
    if (n) {
        assert_ptr_equal(msm_hdrs_find(h, name), &h->v[first]);
        assert_ptr_equal(msm_hdrs_get(h, name), h->v[first].value);
    } else {
        assert_null(msm_hdrs_find(h, name));
        assert_null(msm_hdrs_get(h, name));
    }
}

/* The name filter (headers.h): lookups, duplicates, order, removal (bits stay set), setn, copy
 * into an empty map and into a non-empty one, names given upper-case (folded on add, and
 * taken as is by add_lc), many names sharing the 64 bits. */
static void test_name_filter(void **state)
{
    (void)state;
    static const char *const known[] = {
        ":method", ":path", ":authority", ":scheme", "host", "content-length",
        "transfer-encoding", "connection", "te", "upgrade", "x-request-id", "x-forwarded-for",
        "x-forwarded-proto", "x-envoy-internal", "x-envoy-retry-on", "x-envoy-max-retries",
        "x-envoy-expected-rq-timeout-ms", "x-envoy-upstream-service-time", "a", "",
    };
    struct msm_hdrs h, c;
    msm_hdrs_init(&h);
    msm_hdrs_init(&c);
    assert_int_equal(h.filter, 0);
    msm_hdrs_addz(&h, "X-Forwarded-For", "1");
    msm_hdrs_addz(&h, ":path", "/");
    msm_hdrs_addz(&h, "x-forwarded-for", "2");
    msm_hdrs_add_lc(&h, "te", 2, "trailers", 8);
    msm_hdrs_addz(&h, "Connection", "close");
    msm_hdrs_addz(&h, ":method", "GET");
    assert_string_equal(h.v[0].name, ":path");
    assert_string_equal(h.v[1].name, ":method");
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        check_lookups(&h, known[i]);
    }
    assert_int_equal(msm_hdrs_count(&h, "x-forwarded-for"), 2);
    assert_string_equal(msm_hdrs_get(&h, "x-forwarded-for"), "1"); /* first in order */
    assert_string_equal(msm_hdrs_get(&h, "connection"), "close");
    /* Removing every duplicate; the others keep their order; a removed name stays absent. */
    assert_int_equal(msm_hdrs_remove(&h, "x-forwarded-for"), 2);
    assert_null(msm_hdrs_get(&h, "x-forwarded-for"));
    assert_int_equal(msm_hdrs_remove(&h, "x-forwarded-for"), 0);
    assert_int_equal(h.n, 4);
    assert_string_equal(h.v[2].name, "te");
    assert_string_equal(h.v[3].name, "connection");
    /* setn on a name whose bit is set by another name, then on an absent one. */
    msm_hdrs_setn(&h, "x-forwarded-for", "3", 1);
    assert_string_equal(msm_hdrs_get(&h, "x-forwarded-for"), "3");
    assert_string_equal(h.v[4].name, "x-forwarded-for"); /* appended */
    /* add_lc keeps the bytes given (the codec guarantees lower-case); add folds them. */
    msm_hdrs_add_lc(&h, "x-raw", 5, "v", 1);
    msm_hdrs_addz(&h, "X-MiXeD-\xc3\x89T\xe9-0123456789-ABCZ@[`{", "w");
    assert_string_equal(msm_hdrs_get(&h, "x-raw"), "v");
    assert_string_equal(msm_hdrs_get(&h, "x-mixed-\xc3\x89t\xe9-0123456789-abcz@[`{"), "w");
    /* Many names: every one found, whatever bits they share. */
    char name[32];
    for (int i = 0; i < 500; i++) {
        snprintf(name, sizeof(name), "x-h-%d", i % 250); /* each name twice */
        msm_hdrs_addz(&h, name, i < 250 ? "first" : "second");
    }
    assert_true(__builtin_popcountll(h.filter) < 250); /* names share bits */
    for (int i = 0; i < 260; i++) {
        snprintf(name, sizeof(name), "x-h-%d", i);
        check_lookups(&h, name);
    }
    /* Copy into an empty map: same entries, order, bytes and answers, storage of its own. */
    msm_hdrs_copy(&c, &h);
    assert_int_equal(c.n, h.n);
    assert_int_equal(c.bytes, h.bytes);
    for (uint32_t i = 0; i < h.n; i++) {
        assert_string_equal(c.v[i].name, h.v[i].name);
        assert_string_equal(c.v[i].value, h.v[i].value);
        assert_int_equal(c.v[i].nlen, h.v[i].nlen);
        assert_int_equal(c.v[i].vlen, h.v[i].vlen);
        assert_ptr_not_equal(c.v[i].name, h.v[i].name);
    }
    for (int i = 0; i < 260; i += 7) {
        snprintf(name, sizeof(name), "x-h-%d", i);
        check_lookups(&c, name);
    }
    assert_int_equal(msm_hdrs_remove(&c, "x-h-7"), 2);
    check_lookups(&c, "x-h-7");
    check_lookups(&h, "x-h-7"); /* the source is untouched */
    assert_int_equal(msm_hdrs_count(&h, "x-h-7"), 2);
    msm_hdrs_addz(&c, ":status", "200"); /* a pseudo-header after the copy: still in front */
    assert_string_equal(c.v[2].name, ":status");
    msm_hdrs_deinit(&c);
    /* Copy of a small map, then into a non-empty one (appended). */
    struct msm_hdrs s;
    msm_hdrs_init(&s);
    msm_hdrs_addz(&s, ":authority", "a");
    msm_hdrs_addz(&s, "x-y", "b");
    msm_hdrs_copy(&c, &s);
    msm_hdrs_copy(&c, &s);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.v[0].name, ":authority");
    assert_string_equal(c.v[1].name, ":authority"); /* pseudo-headers before regular ones */
    assert_int_equal(msm_hdrs_count(&c, "x-y"), 2);
    for (int i = 0; i < 40; i++) { /* grows past the copy's spare room */
        msm_hdrs_addz(&c, "x-z", "c");
    }
    assert_int_equal(msm_hdrs_count(&c, "x-z"), 40);
    assert_int_equal(msm_hdrs_remove_prefix(&c, "x-"), 42);
    check_lookups(&c, "x-z");
    assert_int_equal(c.n, 2);
    msm_hdrs_deinit(&s);
    msm_hdrs_deinit(&c);
    msm_hdrs_copy(&c, &s); /* empty into empty */
    assert_int_equal(c.n, 0);
    msm_hdrs_deinit(&c);
    msm_hdrs_deinit(&h);
    msm_buf_thread_cleanup();
}

static bool ref_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The table and word-at-a-time versions of the character checks against byte-by-byte
 * references, for every byte at every position of a word. */
static void test_char_classes(void **state)
{
    (void)state;
    char buf[40], want[40];
    for (int c = 0; c < 256; c++) {
        buf[0] = (char)c;
        assert_int_equal(msm_http_is_token(buf, 1), ref_tchar((unsigned char)c));
        for (size_t pos = 0; pos < 20; pos++) {
            memset(buf, 'a', sizeof(buf));
            buf[pos] = (char)c;
            bool ok = !((c < 0x20 && c != '\t') || c == 0x7f);
            assert_int_equal(msm_http_valid_value(buf, 20), ok);
            assert_true(msm_http_valid_value(buf, pos)); /* the byte just past the end */
        }
        /* Folding on add: every byte at every offset of a 19-byte name. */
        for (size_t pos = 0; pos < 19; pos++) {
            memset(buf, 'Q', 19);
            buf[pos] = (char)c;
            for (size_t i = 0; i < 19; i++) {
                unsigned char b = (unsigned char)buf[i];
                want[i] = (char)(b >= 'A' && b <= 'Z' ? b + 32 : b);
            }
            struct msm_hdrs h;
            msm_hdrs_init(&h);
            msm_hdrs_add(&h, buf, 19, "", 0);
            assert_memory_equal(h.v[0].name, want, 19);
            msm_hdrs_deinit(&h);
        }
    }
    assert_false(msm_http_is_token("", 0));
    assert_true(msm_http_valid_value("", 0));
    char out[21];
    assert_int_equal(msm_fmt_u64(out, 0), 1);
    assert_string_equal(out, "0");
    assert_int_equal(msm_fmt_u64(out, 1234567890), 10);
    assert_string_equal(out, "1234567890");
    assert_int_equal(msm_fmt_u64(out, UINT64_MAX), 20);
    assert_string_equal(out, "18446744073709551615");
    msm_buf_thread_cleanup();
}

/* msm_hdrs_append_lc: at the end in the order given (no pseudo-header placement), past the first
 * capacity, found by every lookup; msm_hdrs_status: three digits, atoi for anything else, the
 * default when absent, the first of duplicates. */
static void test_append_status(void **state)
{
    (void)state;
    struct msm_hdrs h;
    msm_hdrs_init(&h);
    assert_int_equal(msm_hdrs_status(&h, 500), 500);
    char name[32], value[32];
    for (int i = 0; i < 40; i++) {
        int n = snprintf(name, sizeof(name), "x-a-%d", i);
        int v = snprintf(value, sizeof(value), "v%d", i);
        msm_hdrs_append_lc(&h, name, (size_t)n, value, (size_t)v);
    }
    msm_hdrs_append_lc(&h, ":status", 7, "204", 3);
    msm_hdrs_append_lc(&h, ":status", 7, "200", 3);
    assert_int_equal(h.n, 42);
    assert_string_equal(h.v[40].name, ":status"); /* where it was appended */
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "x-a-%d", i);
        snprintf(value, sizeof(value), "v%d", i);
        assert_string_equal(h.v[i].name, name);
        assert_string_equal(msm_hdrs_get(&h, name), value);
        check_lookups(&h, name);
    }
    assert_int_equal(msm_hdrs_status(&h, 0), 204);
    static const struct {
        const char *v;
        int want;
    } cases[] = {{"200", 200}, {"999", 999}, {"099", 99}, {"20", 20}, {"2000", 2000},
                 {"20x", 20},  {"x20", 0},   {"", 0},     {" 404", 404}, {"-1", -1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        msm_hdrs_set(&h, ":status", cases[i].v);
        assert_int_equal(msm_hdrs_status(&h, 7), cases[i].want);
        assert_int_equal(msm_hdrs_status(&h, 7), atoi(cases[i].v));
    }
    msm_hdrs_remove(&h, ":status");
    assert_int_equal(msm_hdrs_status(&h, 7), 7);
    msm_hdrs_deinit(&h);
    msm_buf_thread_cleanup();
}

/* Every name length 0..40 and value length 0..40 (the word-wise copies, compares and case folds
 * switch strategy at 4, 8, 16 and 32 bytes): sources in buffers of their exact size (ASan sees
 * any read past them), names with upper-case letters and bytes >= 0x80 in every position, stored
 * bytes against a byte-by-byte reference; a lookup hits the name and misses it with any one byte
 * changed; the copy into an empty map is byte for byte. */
static void test_lengths(void **state)
{
    (void)state;
    static const char pattern[] = "Ab-Zz9\xc3\x80qX_yM~aZ\xffz0123456789@[`{KLMNOPQRSTU";
    for (size_t nlen = 0; nlen <= 40; nlen++) {
        struct msm_hdrs h, c;
        msm_hdrs_init(&h);
        msm_hdrs_init(&c);
        char *name = malloc(nlen ? nlen : 1), *lower = malloc(nlen + 1);
        for (size_t i = 0; i < nlen; i++) {
            name[i] = pattern[(i * 7 + nlen) % (sizeof(pattern) - 1)];
            unsigned char ch = (unsigned char)name[i];
            lower[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
        lower[nlen] = '\0';
        for (size_t vlen = 0; vlen <= 40; vlen++) {
            char *value = malloc(vlen ? vlen : 1);
            for (size_t i = 0; i < vlen; i++) {
                value[i] = (char)('!' + (i * 5 + vlen) % 90);
            }
            msm_hdrs_add(&h, name, nlen, value, vlen);
            msm_hdrs_add_lc(&h, lower, nlen, value, vlen);
            msm_hdrs_append_lc(&h, lower, nlen, value, vlen);
            for (uint32_t k = h.n - 3; k < h.n; k++) {
                assert_int_equal(h.v[k].nlen, nlen);
                assert_int_equal(h.v[k].vlen, vlen);
                assert_memory_equal(h.v[k].name, lower, nlen + 1);
                assert_true(!vlen || !memcmp(h.v[k].value, value, vlen));
                assert_int_equal(h.v[k].value[vlen], '\0');
            }
            free(value);
        }
        assert_int_equal(msm_hdrs_countn(&h, lower, nlen), 3 * 41);
        assert_ptr_equal(msm_hdrs_findn(&h, lower, nlen), &h.v[0]);
        for (size_t i = 0; i < nlen; i++) { /* one byte off, in each position */
            lower[i] ^= 0x01;
            assert_null(msm_hdrs_findn(&h, lower, nlen));
            assert_int_equal(msm_hdrs_countn(&h, lower, nlen), 0);
            lower[i] ^= 0x01;
        }
        msm_hdrs_copy(&c, &h);
        assert_int_equal(c.n, h.n);
        for (uint32_t k = 0; k < h.n; k++) {
            assert_memory_equal(c.v[k].name, h.v[k].name, h.v[k].nlen + h.v[k].vlen + 2);
        }
        assert_int_equal(msm_hdrs_removen(&c, lower, nlen), 3 * 41);
        assert_int_equal(c.n, 0);
        free(name);
        free(lower);
        msm_hdrs_deinit(&h);
        msm_hdrs_deinit(&c);
    }
    msm_buf_thread_cleanup();
}

/* msm_hdrs_copy of a map whose strings share one chunk, after replacements and removals (dead
 * bytes in the chunk): the copy has the live entries in order, owns its strings (the source is
 * freed first), and takes further adds. */
static void test_copy_one_chunk(void **state)
{
    (void)state;
    struct msm_hdrs h, c;
    msm_hdrs_init(&h);
    msm_hdrs_init(&c);
    msm_hdrs_addz(&h, ":method", "GET");
    msm_hdrs_addz(&h, ":path", "/a/b");
    msm_hdrs_addz(&h, "x-gone", "1");
    msm_hdrs_addz(&h, "Accept", "*/*");
    msm_hdrs_addz(&h, "user-agent", "some agent/1.0 with a longer value than 32 bytes");
    msm_hdrs_set(&h, ":path", "/c");
    msm_hdrs_remove(&h, "x-gone");
    msm_hdrs_addz(&h, "", "");
    assert_non_null(h.chunks); /* one chunk: a first chunk holds these few fields */
    msm_hdrs_copy(&c, &h);
    assert_int_equal(c.n, h.n);
    assert_int_equal(c.bytes, h.bytes);
    static const char *const want[][2] = {{":method", "GET"}, {":path", "/c"}, {"accept", "*/*"},
        {"user-agent", "some agent/1.0 with a longer value than 32 bytes"}, {"", ""}};
    msm_hdrs_deinit(&h);
    assert_int_equal(c.n, 5);
    for (uint32_t i = 0; i < c.n; i++) {
        assert_string_equal(c.v[i].name, want[i][0]);
        assert_string_equal(c.v[i].value, want[i][1]);
        assert_int_equal(c.v[i].nlen, strlen(want[i][0]));
        assert_int_equal(c.v[i].vlen, strlen(want[i][1]));
        assert_ptr_equal(c.v[i].value, c.v[i].name + c.v[i].nlen + 1);
    }
    assert_string_equal(msm_hdrs_get(&c, ":path"), "/c");
    assert_null(msm_hdrs_get(&c, "x-gone"));
    msm_hdrs_set(&c, "accept", "text/plain");
    msm_hdrs_addz(&c, "x-more", "2");
    assert_string_equal(msm_hdrs_get(&c, "accept"), "text/plain");
    assert_string_equal(msm_hdrs_get(&c, "x-more"), "2");
    msm_hdrs_deinit(&c);
    msm_buf_thread_cleanup();
}

/* msm_hdrs_set_lc (lower-case names, the per-request Envoy headers) against msm_hdrs_set_nv on a
 * twin map: absent names appended (pseudo-headers before the regular ones), present ones
 * replaced in place with their duplicates dropped, the same value not copied, values taken from
 * the map itself, past the first entry array. */
static void test_set_lc(void **state)
{
    (void)state;
    struct msm_hdrs a, b;
    msm_hdrs_init(&a);
    msm_hdrs_init(&b);
    struct msm_hdrs *m[2] = {&a, &b};
    for (int k = 0; k < 2; k++) {
        msm_hdrs_addz(m[k], ":status", "200");
        msm_hdrs_addz(m[k], "server", "nginx");
        msm_hdrs_addz(m[k], "x-dup", "1");
        msm_hdrs_addz(m[k], "x-dup", "2");
    }
    static const char *const ops[][2] = {{"server", "envoy"},
        {"x-envoy-upstream-service-time", "7"}, {"x-dup", "3"}, {":new", "p"}, {"x-request-id", "0123456789abcdef0123456789abcdef0123"},
        {"x-envoy-upstream-service-time", "7"}, {"server", "a-longer-server-name"}};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        msm_hdrs_set_lc(&a, ops[i][0], strlen(ops[i][0]), ops[i][1], strlen(ops[i][1]));
        msm_hdrs_set_nv(&b, ops[i][0], strlen(ops[i][0]), ops[i][1], strlen(ops[i][1]));
    }
    const char *st = msm_hdrs_get(&a, "x-envoy-upstream-service-time");
    msm_hdrs_set_lc(&a, "x-envoy-upstream-service-time", 29, "7", 1);
    assert_ptr_equal(msm_hdrs_get(&a, "x-envoy-upstream-service-time"), st); /* not copied */
    msm_hdrs_set_lc(&a, "x-copy", 6, msm_hdrs_get(&a, "server"), 20);
    msm_hdrs_set_nv(&b, "x-copy", 6, msm_hdrs_get(&b, "server"), 20);
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof(name), "x-n%d", i);
        msm_hdrs_set_lc(&a, name, strlen(name), name, strlen(name));
        msm_hdrs_set_nv(&b, name, strlen(name), name, strlen(name));
    }
    assert_int_equal(a.n, b.n);
    assert_int_equal(a.bytes, b.bytes);
    for (uint32_t i = 0; i < a.n; i++) {
        assert_string_equal(a.v[i].name, b.v[i].name);
        assert_string_equal(a.v[i].value, b.v[i].value);
        assert_int_equal(a.v[i].nlen, b.v[i].nlen);
        assert_int_equal(a.v[i].vlen, b.v[i].vlen);
        assert_ptr_equal(msm_hdrs_find(&a, a.v[i].name), &a.v[i]);
    }
    assert_string_equal(a.v[0].name, ":status");
    assert_string_equal(a.v[1].name, ":new");
    assert_string_equal(a.v[2].name, "server");
    assert_string_equal(a.v[2].value, "a-longer-server-name");
    assert_int_equal(msm_hdrs_count(&a, "x-dup"), 1);
    assert_string_equal(msm_hdrs_get(&a, "x-dup"), "3");
    assert_string_equal(msm_hdrs_get(&a, "x-copy"), "a-longer-server-name");
    assert_string_equal(a.v[a.n - 1].name, "x-n39");
    msm_hdrs_deinit(&a);
    msm_hdrs_deinit(&b);
    msm_buf_thread_cleanup();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_set_remove),
        cmocka_unit_test(test_big_maps),
        cmocka_unit_test(test_address_str_eq),
        cmocka_unit_test(test_name_filter),
        cmocka_unit_test(test_char_classes),
        cmocka_unit_test(test_append_status),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_copy_one_chunk),
        cmocka_unit_test(test_set_lc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
