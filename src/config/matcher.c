#include "config/matcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envoy/type/matcher/v3/string.pb-c.h"

#include "common/alloc.h"
#include "http/regex.h"

/* The literal text every full match of <p> starts with, NULL when there is none. The stats
 * matcher of Istio's bootstrap runs its regex on every stat name created (1.5M at 10k clusters):
 * the prefix settles nearly all of them without PCRE2. Conservative: only plain or escaped ASCII
 * punctuation/alphanumerics count, a literal followed by a quantifier is dropped with everything
 * after it, and a pattern with an alternation anywhere has none. */
static char *regex_literal_prefix(const char *p, size_t *n)
{
    *n = 0;
    if (strchr(p, '|')) {
        return NULL;
    }
    size_t cap = strlen(p) + 1, k = 0;
    char *out = msm_xmalloc(cap);
    for (const char *q = p; *q;) {
        char c;
        const char *next;
        unsigned char u = (unsigned char)*q;
        if (u == '\\') {
            unsigned char e = (unsigned char)q[1];
            if (!e || e >= 0x80 || (e >= '0' && e <= '9') || (e >= 'a' && e <= 'z') ||
                (e >= 'A' && e <= 'Z') || e == ' ' || e < 0x20) {
                break; /* \d, \x.., \Q, end of pattern... */
            }
            c = (char)e;
            next = q + 2;
        } else if (u >= 0x80 || u <= 0x20 || strchr("^$.[]()?*+{}#", u)) {
            break;
        } else {
            c = (char)u;
            next = q + 1;
        }
        if (*next == '*' || *next == '?' || *next == '{' || *next == '+') {
            break; /* quantified: maybe absent or repeated */
        }
        out[k++] = c;
        q = next;
    }
    if (!k) {
        free(out);
        return NULL;
    }
    out[k] = '\0';
    *n = k;
    return out;
}

int msm_str_matcher_regex(struct msm_str_matcher *out, const char *pattern, struct msm_err *err)
{
    memset(out, 0, sizeof(*out));
    out->kind = MSM_STR_REGEX;
    out->re = msm_regex_new(pattern, err);
    if (!out->re) {
        return MSM_EINVAL;
    }
    out->s = msm_xstrdup(pattern);
    out->len = strlen(pattern);
    out->re_prefix = regex_literal_prefix(pattern, &out->re_prefix_len);
    return 0;
}

void msm_str_matcher_literal(struct msm_str_matcher *out, enum msm_str_match_kind kind,
                             const char *s, bool ignore_case)
{
    memset(out, 0, sizeof(*out));
    out->kind = kind;
    out->ignore_case = ignore_case;
    out->s = msm_xstrdup(s ? s : "");
    out->len = strlen(out->s);
}

int msm_str_matcher_from_proto(const void *proto, struct msm_str_matcher *out,
                               struct msm_err *err)
{
    const Envoy__Type__Matcher__V3__StringMatcher *p = proto;
    memset(out, 0, sizeof(*out));
    enum msm_str_match_kind kind;
    const char *v = NULL;
    switch (p->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        kind = MSM_STR_EXACT;
        v = p->exact;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        kind = MSM_STR_PREFIX;
        v = p->prefix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        kind = MSM_STR_SUFFIX;
        v = p->suffix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        kind = MSM_STR_CONTAINS;
        v = p->contains;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        if (!p->safe_regex) {
            return msm_err_set(err, "safe_regex: a regex is required");
        }
        if (msm_str_matcher_regex(out, p->safe_regex->regex ? p->safe_regex->regex : "", err) <
            0) {
            msm_err_prefix(err, "safe_regex");
            return MSM_EINVAL;
        }
        return 0;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CUSTOM:
        return msm_err_set(err, "custom: custom string matchers are not supported");
    default:
        return msm_err_set(err, "match_pattern: one of exact, prefix, suffix, contains or "
                                "safe_regex is required");
    }
    v = v ? v : "";
    if (!v[0] && kind != MSM_STR_EXACT) {
        return msm_err_set(err, "%s: must not be empty",
                           kind == MSM_STR_PREFIX   ? "prefix"
                           : kind == MSM_STR_SUFFIX ? "suffix"
                                                    : "contains");
    }
    msm_str_matcher_literal(out, kind, v, p->ignore_case);
    return 0;
}

void msm_str_matcher_copy(struct msm_str_matcher *dst, const struct msm_str_matcher *src)
{
    if (src->kind == MSM_STR_REGEX) {
        struct msm_err err;
        if (msm_str_matcher_regex(dst, src->s, &err) < 0) {
            /* src compiled from the same pattern: unreachable; never match rather than crash */
            memset(dst, 0, sizeof(*dst));
            dst->kind = MSM_STR_REGEX;
            dst->s = msm_xstrdup(src->s);
            dst->len = src->len;
        }
        return;
    }
    msm_str_matcher_literal(dst, src->kind, src->s, src->ignore_case);
}

void msm_str_matcher_deinit(struct msm_str_matcher *m)
{
    free(m->s);
    free(m->re_prefix);
    msm_regex_free(m->re);
    memset(m, 0, sizeof(*m));
}

static bool eq(const char *a, const char *b, size_t n, bool icase)
{
    return icase ? !strncasecmp(a, b, n) : !memcmp(a, b, n);
}

bool msm_str_matcher_match(const struct msm_str_matcher *m, const char *s, size_t len)
{
    size_t pl = m->len;
    /* A first-byte test settles most mismatches without a call (the stats matcher tests every
     * new stat name against a dozen literals). */
    switch (m->kind) {
    case MSM_STR_EXACT:
        return len == pl && (!pl || m->ignore_case || s[0] == m->s[0]) &&
               eq(s, m->s, pl, m->ignore_case);
    case MSM_STR_PREFIX:
        return len >= pl && (!pl || m->ignore_case || s[0] == m->s[0]) &&
               eq(s, m->s, pl, m->ignore_case);
    case MSM_STR_SUFFIX:
        return len >= pl && (!pl || m->ignore_case || s[len - 1] == m->s[pl - 1]) &&
               eq(s + len - pl, m->s, pl, m->ignore_case);
    case MSM_STR_CONTAINS:
        if (!m->ignore_case) {
            return pl <= len && memmem(s, len, m->s, pl) != NULL;
        }
        for (size_t i = 0; i + pl <= len; i++) {
            if (eq(s + i, m->s, pl, true)) {
                return true;
            }
        }
        return false;
    case MSM_STR_REGEX:
        if (m->re_prefix && (len < m->re_prefix_len || memcmp(s, m->re_prefix, m->re_prefix_len))) {
            return false;
        }
        return m->re && msm_regex_full_match(m->re, s, len);
    }
    return false;
}

void msm_str_matcher_describe(const struct msm_str_matcher *m, char *out, size_t n)
{
    static const char *const names[] = {"exact", "prefix", "suffix", "contains", "safe_regex"};
    snprintf(out, n, "%s%s '%s'", names[m->kind], m->ignore_case ? " (ignore_case)" : "",
             m->s ? m->s : "");
}
