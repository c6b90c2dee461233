#pragma once
/* envoy.type.matcher.v3.StringMatcher as a plain C value: exact, prefix, suffix, contains (each
 * optionally ignore_case) and safe_regex (full match, RE2 syntax on PCRE2 with match limits,
 * see http/regex.h). The one string matcher of the proxy: SAN matching (src/tls), RBAC, route
 * header/query matchers (src/http), CORS origins, access-log filters, stats matchers.
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

struct msm_regex;

struct msm_str_matcher {
    enum msm_str_match_kind kind;
    bool ignore_case;      /* literal kinds only (Envoy ignores it for safe_regex) */
    char *s;               /* the pattern (the regex source for MSM_STR_REGEX) */
    size_t len;            /* strlen(s) */
    struct msm_regex *re;  /* MSM_STR_REGEX */
    /* MSM_STR_REGEX: literal text every match starts with ("vhost." for "vhost\\..*"), so most
     * subjects are rejected without running the regex; NULL when none is known. */
    char *re_prefix;
    size_t re_prefix_len;
};

/* From an Envoy__Type__Matcher__V3__StringMatcher (<proto>). MSM_EINVAL with <err> naming the
 * problem as "<field>: <reason>" (unset pattern, empty prefix/suffix/contains, bad regex, custom
 * matcher). */
int msm_str_matcher_from_proto(const void *proto, struct msm_str_matcher *out,
                               struct msm_err *err);
/* A literal matcher (the deprecated HeaderMatcher exact_match/prefix_match/... fields). */
void msm_str_matcher_literal(struct msm_str_matcher *out, enum msm_str_match_kind kind,
                             const char *s, bool ignore_case);
/* A full-match regex matcher from <pattern>; MSM_EINVAL with <err> on a bad pattern. */
int msm_str_matcher_regex(struct msm_str_matcher *out, const char *pattern, struct msm_err *err);
/* Copy <src> into <dst> (regexes are recompiled; cannot fail for a valid <src>). */
void msm_str_matcher_copy(struct msm_str_matcher *dst, const struct msm_str_matcher *src);
void msm_str_matcher_deinit(struct msm_str_matcher *m);
bool msm_str_matcher_match(const struct msm_str_matcher *m, const char *s, size_t len);
/* "exact 'x'", for logs. */
void msm_str_matcher_describe(const struct msm_str_matcher *m, char *out, size_t n);
