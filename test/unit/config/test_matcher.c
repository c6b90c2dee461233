/* String matchers (config/matcher.h): the literal prefix taken from a safe_regex must never
 * change a result, only spare running PCRE2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/matcher.h"
#include "http/regex.h"

static void regex_matcher(struct msm_str_matcher *m, const char *pattern)
{
    struct msm_err err;
    if (msm_str_matcher_regex(m, pattern, &err) < 0) {
        fail_msg("regex %s: %s", pattern, err.msg);
    }
}

static void expect_prefix(const char *pattern, const char *want)
{
    struct msm_str_matcher m;
    regex_matcher(&m, pattern);
    if (!want) {
        assert_null(m.re_prefix);
    } else {
        assert_non_null(m.re_prefix);
        assert_string_equal(m.re_prefix, want);
        assert_int_equal(m.re_prefix_len, strlen(want));
    }
    msm_str_matcher_deinit(&m);
}

static void test_regex_prefix(void **state)
{
    (void)state;
    expect_prefix("vhost\\..*\\.route\\..*", "vhost.");  /* Istio's stats_matcher */
    expect_prefix("abc", "abc");
    expect_prefix("ab*c", "a");                          /* b may be absent */
    expect_prefix("ab+", "a");
    expect_prefix("ab?", "a");
    expect_prefix("ab{2}", "a");
    expect_prefix("a\\d", "a");
    expect_prefix("\\.x", ".x");
    expect_prefix("a|b", NULL);                          /* alternation anywhere: none */
    expect_prefix("abc(d|e)", NULL);
    expect_prefix("(?i)abc", NULL);
    expect_prefix("^abc", NULL);
    expect_prefix("[a]bc", NULL);
    expect_prefix(".*", NULL);
    expect_prefix("a\\Qb", "a");
    expect_prefix("caf\xc3\xa9", "caf");
    expect_prefix("x y", "x");
}

/* Same answers as the bare regex over a set of patterns and subjects. */
static void test_regex_same_results(void **state)
{
    (void)state;
    static const char *const patterns[] = {
        "vhost\\..*\\.route\\..*", "abc", "ab*c", "ab+c", "a.c", "a\\.c", "a|abc", "(?i)ABC",
        "cluster\\.(outbound|inbound)\\|.*", "x{0}abc", "ab?c", "a\\d+", "[ab]c", "abc$",
        "\\Qa.b\\E", "a\\x41", "a{", "ab\\*c",
    };
    static const char *const subjects[] = {
        "", "a", "ab", "abc", "ac", "abbc", "a.c", "axc", "ABC", "abcd", "a1", "a12", "bc",
        "vhost.v.route.r", "vhost.v.route", "vhostx.route.r", "cluster.outbound|8080||x",
        "a.b", "aA", "a{", "ab*c", "abcabc",
    };
    for (size_t i = 0; i < sizeof(patterns) / sizeof(*patterns); i++) {
        struct msm_str_matcher m;
        regex_matcher(&m, patterns[i]);
        for (size_t j = 0; j < sizeof(subjects) / sizeof(*subjects); j++) {
            size_t len = strlen(subjects[j]);
            bool want = msm_regex_full_match(m.re, subjects[j], len);
            if (msm_str_matcher_match(&m, subjects[j], len) != want) {
                fail_msg("pattern '%s' subject '%s': want %d", patterns[i], subjects[j], want);
            }
        }
        struct msm_str_matcher c;
        msm_str_matcher_copy(&c, &m);
        assert_int_equal(c.re_prefix_len, m.re_prefix_len);
        msm_str_matcher_deinit(&c);
        msm_str_matcher_deinit(&m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regex_prefix),
        cmocka_unit_test(test_regex_same_results),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
