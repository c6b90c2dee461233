#pragma once
/* Tag extraction: Envoy's TagProducer. A stat's full name ("cluster.xds-grpc;.upstream_cx_total")
 * becomes a tag-extracted name ("cluster.upstream_cx_total") plus tags
 * ({cluster_name: "xds-grpc"}), which is what Prometheus sees
 * (envoy_cluster_upstream_cx_total{cluster_name="xds-grpc"}).
 *
 * Built from the bootstrap's stats_config and the --stats-tag CLI tags, with Envoy's rules:
 * - use_all_default_tags (default true) adds Envoy's built-in extractors first (regexes, then
 *   token patterns such as "cluster.$.**"; source/common/config/well_known_names.cc), then the
 *   CLI tags (fixed values), then stats_tags in order: a regex, a fixed_value, or an empty
 *   regex naming a built-in extractor.
 * - Every extractor looks at the original name; the characters each one removes are unioned
 *   and removed at the end. Extractors whose regex starts with a literal "^word\." only run on
 *   names whose first token is that word; the others run first, on every name.
 * - Regex semantics: capture group 1 is removed from the name, group 2 (or group 1 when there is
 *   no second group) is the value. PCRE2 stands in for std::regex and RE2: Istio's regexes use
 *   lookahead and POSIX classes, which both accept.
 * - When several extractors share a tag name (Envoy's http_conn_manager_prefix), the first one
 *   that matches wins.
 * - Fixed tags are added to every stat and remove nothing.
 * - Fast path, same results: a name's character pairs are collected once (256-bit set) and an
 *   extractor's literal pre-check substring is only searched when all its pairs are present;
 *   tags point into the name and the producer (msm_tag_producer_produce_refs), no allocation.
 * Immutable once built; msm_tag_producer_produce(_refs) is not reentrant (one caller at a time:
 * the main thread; the match data and removal intervals are the producer's). */
#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

struct msm_tag {
    char *name;
    char *value;
};

struct msm_tag_producer;
struct msm_stats_tag; /* server/options.h: one --stats-tag */

/* From an envoy.config.metrics.v3.StatsConfig (<stats_config>, may be NULL = all defaults) and
 * <n_cli> CLI tags. NULL with <err> for an invalid regex or a tag specifier without a regex
 * whose name has no built-in extractor. */
struct msm_tag_producer *msm_tag_producer_new(const void *stats_config,
                                              const struct msm_stats_tag *cli, int n_cli,
                                              struct msm_err *err);
void msm_tag_producer_free(struct msm_tag_producer *p);
/* Extract the tags of <name>: returns the tag-extracted name (malloc'ed) and sets *<tags> to a
 * malloc'ed array of *<n> tags (free with msm_tags_free), in Envoy's order. */
char *msm_tag_producer_produce(struct msm_tag_producer *p, const char *name,
                               struct msm_tag **tags, int *n);
void msm_tags_free(struct msm_tag *tags, int n);
/* One tag without copies: <name> is the producer's, <value> points into the stat name or the
 * producer (not NUL-terminated: <value_len> bytes). */
struct msm_tag_ref {
    const char *name;
    const char *value;
    size_t value_len;
};
/* msm_tag_producer_produce without allocations (the hot path: one call per exported stat).
 * <name> is NUL-terminated and <len> is strlen(name); <out> (room for len + 1) receives the
 * tag-extracted name and *<out_len> its length; <tags> needs room for
 * msm_tag_producer_count(p) entries. Returns the number of tags. Same results as
 * msm_tag_producer_produce, which is built on it. */
int msm_tag_producer_produce_refs(struct msm_tag_producer *p, const char *name, size_t len,
                                  char *out, size_t *out_len, struct msm_tag_ref *tags);
/* The producer keeps scratch memory for msm_tag_producer_produce_refs (one thread at a time);
 * another thread brings its own: msm_tag_producer_produce_refs_on with a scratch made for <p>
 * (which only reads <p>: any number of threads, each with its own scratch). */
struct msm_tag_scratch;
struct msm_tag_scratch *msm_tag_scratch_new(const struct msm_tag_producer *p);
void msm_tag_scratch_free(struct msm_tag_scratch *sc);
int msm_tag_producer_produce_refs_on(struct msm_tag_producer *p, struct msm_tag_scratch *sc,
                                     const char *name, size_t len, char *out, size_t *out_len,
                                     struct msm_tag_ref *tags);
/* Tests: <plain> turns the pre-filters off (every pre-check substring is searched with strstr)
 * and removes the extracted characters one by one: the reference the fast path is compared to. */
void msm_tag_producer_set_plain(struct msm_tag_producer *p, bool plain);
/* Number of extractors (tests, diagnostics). */
int msm_tag_producer_count(const struct msm_tag_producer *p);
