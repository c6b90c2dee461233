#include "http/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

/* Bounds for one match (see regex.h). Generous for real route patterns, tiny next to a
 * catastrophic backtrack. */
#define MATCH_LIMIT 100000
#define DEPTH_LIMIT 2000
#define HEAP_LIMIT_KB 2048
#define MAX_PATTERN 32768 /* Istio's re2.max_program_size.error_level, as a source length */

struct msm_regex {
    pcre2_code *code;
    pcre2_match_context *mctx;
    char *pattern;
};

struct msm_regex *msm_regex_new(const char *pattern, struct msm_err *err)
{
    size_t len = strlen(pattern);
    if (len > MAX_PATTERN) {
        msm_err_set(err, "regex '%.40s...' is too large (%zu > %d)", pattern, len, MAX_PATTERN);
        return NULL;
    }
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF, &ec, &eo, NULL);
    if (!code) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        msm_err_set(err, "invalid regex '%s': %s at offset %zu", pattern, (const char *)msg,
                    (size_t)eo);
        return NULL;
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* best effort; the interpreter is the fallback */
    struct msm_regex *re = MSM_NEW(struct msm_regex);
    re->code = code;
    re->mctx = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(re->mctx, MATCH_LIMIT);
    pcre2_set_depth_limit(re->mctx, DEPTH_LIMIT);
    pcre2_set_heap_limit(re->mctx, HEAP_LIMIT_KB);
    re->pattern = msm_xstrdup(pattern);
    return re;
}

void msm_regex_free(struct msm_regex *re)
{
    if (!re) {
        return;
    }
    pcre2_code_free(re->code);
    pcre2_match_context_free(re->mctx);
    free(re->pattern);
    free(re);
}

const char *msm_regex_pattern(const struct msm_regex *re)
{
    return re->pattern;
}

static int run(const struct msm_regex *re, const char *s, size_t len, uint32_t opts)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) {
        return -1;
    }
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, 0, opts, md, re->mctx);
    pcre2_match_data_free(md);
    return rc;
}

bool msm_regex_full_match(const struct msm_regex *re, const char *s, size_t len)
{
    return run(re, s, len, PCRE2_ANCHORED | PCRE2_ENDANCHORED) >= 0;
}

bool msm_regex_search(const struct msm_regex *re, const char *s, size_t len)
{
    return run(re, s, len, 0) >= 0;
}

/* RE2 substitutions use \N; PCRE2 wants ${N} and a literal $ as $$. */
static char *convert_sub(const char *sub)
{
    size_t n = strlen(sub);
    char *o = msm_xmalloc(n * 4 + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (sub[i] == '\\' && i + 1 < n && sub[i + 1] >= '0' && sub[i + 1] <= '9') {
            o[k++] = '$';
            o[k++] = '{';
            o[k++] = sub[++i];
            o[k++] = '}';
        } else if (sub[i] == '\\' && i + 1 < n && sub[i + 1] == '\\') {
            o[k++] = '\\';
            i++;
        } else if (sub[i] == '$') {
            o[k++] = '$';
            o[k++] = '$';
        } else {
            o[k++] = sub[i];
        }
    }
    o[k] = '\0';
    return o;
}

char *msm_regex_replace_all(const struct msm_regex *re, const char *s, size_t len,
                            const char *sub)
{
    char *psub = convert_sub(sub);
    PCRE2_SIZE cap = len * 2 + strlen(psub) + 64;
    char *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        out = msm_xmalloc(cap);
        PCRE2_SIZE olen = cap;
        int rc = pcre2_substitute(re->code, (PCRE2_SPTR)s, len, 0,
                                  PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH,
                                  NULL, re->mctx, (PCRE2_SPTR)psub, PCRE2_ZERO_TERMINATED,
                                  (PCRE2_UCHAR *)out, &olen);
        if (rc >= 0) {
            free(psub);
            return out;
        }
        free(out);
        out = NULL;
        if (rc != PCRE2_ERROR_NOMEMORY) {
            break;
        }
        cap = olen + 1;
    }
    free(psub);
    return NULL;
}
