#include "config/matcher.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envoy/type/matcher/v3/string.pb-c.h"

#include "common/alloc.h"

static int compile(struct msm_str_matcher *m, struct msm_err *err)
{
    int code;
    PCRE2_SIZE off;
    /* RE2's FullMatch: anchored at both ends, UTF-8. */
    m->re = pcre2_compile((PCRE2_SPTR)m->s, PCRE2_ZERO_TERMINATED,
                          PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF, &code, &off, NULL);
    if (!m->re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(code, msg, sizeof(msg));
        return msm_err_set(err, "safe_regex: invalid regex '%s' at offset %zu: %s", m->s,
                           (size_t)off, (const char *)msg);
    }
    return 0;
}

int msm_str_matcher_from_proto(const void *proto, struct msm_str_matcher *out,
                               struct msm_err *err)
{
    const Envoy__Type__Matcher__V3__StringMatcher *p = proto;
    memset(out, 0, sizeof(*out));
    out->ignore_case = p->ignore_case;
    const char *v = NULL;
    switch (p->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        out->kind = MSM_STR_EXACT;
        v = p->exact;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        out->kind = MSM_STR_PREFIX;
        v = p->prefix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        out->kind = MSM_STR_SUFFIX;
        v = p->suffix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        out->kind = MSM_STR_CONTAINS;
        v = p->contains;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        out->kind = MSM_STR_REGEX;
        if (!p->safe_regex) {
            return msm_err_set(err, "safe_regex: a regex is required");
        }
        v = p->safe_regex->regex;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CUSTOM:
        return msm_err_set(err, "custom string matchers are not supported");
    default:
        return msm_err_set(err, "StringMatcher: one of exact, prefix, suffix, contains, "
                                "safe_regex is required");
    }
    v = v ? v : "";
    if (!v[0] && out->kind != MSM_STR_EXACT) {
        return msm_err_set(err, "StringMatcher: an empty %s is not allowed",
                           out->kind == MSM_STR_PREFIX     ? "prefix"
                           : out->kind == MSM_STR_SUFFIX   ? "suffix"
                           : out->kind == MSM_STR_CONTAINS ? "contains"
                                                           : "regex");
    }
    out->s = msm_xstrdup(v);
    if (out->kind == MSM_STR_REGEX && compile(out, err) < 0) {
        msm_str_matcher_deinit(out);
        return MSM_EINVAL;
    }
    return 0;
}

void msm_str_matcher_copy(struct msm_str_matcher *dst, const struct msm_str_matcher *src)
{
    *dst = *src;
    dst->s = msm_xstrdup(src->s);
    dst->re = NULL;
    if (src->kind == MSM_STR_REGEX) {
        dst->re = pcre2_code_copy(src->re);
    }
}

void msm_str_matcher_deinit(struct msm_str_matcher *m)
{
    free(m->s);
    m->s = NULL;
    if (m->re) {
        pcre2_code_free(m->re);
        m->re = NULL;
    }
}

static bool eq(const char *a, const char *b, size_t n, bool icase)
{
    return icase ? !strncasecmp(a, b, n) : !memcmp(a, b, n);
}

bool msm_str_matcher_match(const struct msm_str_matcher *m, const char *s, size_t len)
{
    size_t pl = strlen(m->s);
    switch (m->kind) {
    case MSM_STR_EXACT:
        return len == pl && eq(s, m->s, pl, m->ignore_case);
    case MSM_STR_PREFIX:
        return len >= pl && eq(s, m->s, pl, m->ignore_case);
    case MSM_STR_SUFFIX:
        return len >= pl && eq(s + len - pl, m->s, pl, m->ignore_case);
    case MSM_STR_CONTAINS:
        for (size_t i = 0; i + pl <= len; i++) {
            if (eq(s + i, m->s, pl, m->ignore_case)) {
                return true;
            }
        }
        return false;
    case MSM_STR_REGEX: {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(m->re, NULL);
        if (!md) {
            return false;
        }
        int rc = pcre2_match(m->re, (PCRE2_SPTR)s, len, 0, 0, md, NULL);
        pcre2_match_data_free(md);
        return rc >= 0;
    }
    }
    return false;
}

void msm_str_matcher_describe(const struct msm_str_matcher *m, char *out, size_t n)
{
    static const char *const names[] = {"exact", "prefix", "suffix", "contains", "safe_regex"};
    snprintf(out, n, "%s%s '%s'", names[m->kind], m->ignore_case ? " (ignore_case)" : "",
             m->s);
}
