#pragma once
/* envoy.type.matcher.v3.StringMatcher as a plain C value: exact, prefix, suffix, contains (each
 * optionally ignore_case) and safe_regex (full match, PCRE2 standing in for RE2). Used by SAN
 * matching (src/tls) and anything else that matches strings from config (RBAC principals).
 * Immutable once built; matching is thread-safe. */
#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

enum msm_str_match_kind {
    MSM_STR_EXACT = 0,
    MSM_STR_PREFIX = 1,
    MSM_STR_SUFFIX = 2,
    MSM_STR_CONTAINS = 3,
    MSM_STR_REGEX = 4,
};

struct msm_str_matcher {
    enum msm_str_match_kind kind;
    bool ignore_case;
    char *s;  /* the pattern (the regex source for MSM_STR_REGEX) */
    void *re; /* pcre2_code * */
};

/* From an Envoy__Type__Matcher__V3__StringMatcher (<proto>). MSM_EINVAL with <err> naming the
 * problem (unset pattern, empty prefix/suffix/contains, bad regex, custom matcher). */
int msm_str_matcher_from_proto(const void *proto, struct msm_str_matcher *out,
                               struct msm_err *err);
/* Copy <src> into <dst> (regexes are recompiled; cannot fail for a valid <src>). */
void msm_str_matcher_copy(struct msm_str_matcher *dst, const struct msm_str_matcher *src);
void msm_str_matcher_deinit(struct msm_str_matcher *m);
bool msm_str_matcher_match(const struct msm_str_matcher *m, const char *s, size_t len);
/* "exact 'x'", for logs. */
void msm_str_matcher_describe(const struct msm_str_matcher *m, char *out, size_t n);
