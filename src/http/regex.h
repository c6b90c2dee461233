#pragma once
/* Regular expressions from config (envoy.type.matcher.v3.RegexMatcher, RE2 syntax) on PCRE2,
 * with bounded matching: a match limit, a depth limit and a heap limit, so that a hostile
 * pattern from the control plane or a hostile input cannot pin a worker (RE2 is linear-time;
 * PCRE2 backtracks, the limits stand in for that guarantee). A match that hits a limit counts
 * as no match. Compiled once on the main thread, immutable, thread-safe to match. */
#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

struct msm_regex;

/* Compile <pattern> (RE2 syntax, UTF-8). NULL with <err> on a syntax error or a pattern over
 * the size limit. */
struct msm_regex *msm_regex_new(const char *pattern, struct msm_err *err);
void msm_regex_free(struct msm_regex *re);
/* Whole-string match (RE2::FullMatch), as Envoy's safe_regex matchers do. */
bool msm_regex_full_match(const struct msm_regex *re, const char *s, size_t len);
/* Partial match anywhere (RE2::PartialMatch). */
bool msm_regex_search(const struct msm_regex *re, const char *s, size_t len);
/* Replace every match in <s> by <sub> (RE2::GlobalReplace; \0..\9 are groups). Returns a new
 * string, or NULL when nothing can be substituted (limits). */
char *msm_regex_replace_all(const struct msm_regex *re, const char *s, size_t len,
                            const char *sub);
const char *msm_regex_pattern(const struct msm_regex *re);
