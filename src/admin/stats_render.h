#pragma once
/* Rendering of the stats store for the admin API, in Envoy's formats:
 * - text (/stats): text readouts, then counters and gauges together, then histograms, each
 *   sorted by name; "name: value", "name: \"text\"", histograms as
 *   "P0(interval,cumulative) P25(...)" or "No recorded values";
 * - JSON (/stats?format=json): {"stats":[{"name","value"}...,{"histograms":{
 *   "supported_quantiles":[...],"computed_quantiles":[{"name","values":[{"interval",
 *   "cumulative"}...]}]}}]};
 * - Prometheus text 0.0.4 (/stats/prometheus): families grouped by their Prometheus name and
 *   sorted, one "# TYPE" line each, counters, then gauges, then text readouts (as gauges with a
 *   text_value label, only with ?text_readouts), then histograms as _bucket{le=...}, _sum and
 *   _count with Envoy's default buckets.
 * Hidden stats (stats_matcher) never appear. Main thread (uses the stats' export caches). */
#include <stdbool.h>

#include "buffer/buf.h"
#include "stats/stats.h"

#define MSM_SR_COUNTERS 0x1u
#define MSM_SR_GAUGES 0x2u
#define MSM_SR_HISTOGRAMS 0x4u
#define MSM_SR_TEXT 0x8u
#define MSM_SR_ALL 0xfu

enum msm_sr_buckets {
    MSM_SR_BUCKETS_NONE = 0,       /* quantiles */
    MSM_SR_BUCKETS_CUMULATIVE = 1, /* B<bound>(interval,cumulative) */
    MSM_SR_BUCKETS_DISJOINT = 2,
};

struct msm_stats_query {
    bool usedonly;
    void *filter;      /* pcre2_code * (partial match on the full name), or NULL */
    unsigned types;    /* MSM_SR_* */
    bool text_readouts; /* Prometheus: include text readouts */
    enum msm_sr_buckets buckets;
};

void msm_stats_render_text(struct msm_stats_store *st, const struct msm_stats_query *q,
                           struct msm_buf *out);
void msm_stats_render_json(struct msm_stats_store *st, const struct msm_stats_query *q,
                           struct msm_buf *out);
/* Returns the number of metric families written. */
size_t msm_stats_render_prometheus(struct msm_stats_store *st, const struct msm_stats_query *q,
                                   struct msm_buf *out);
enum msm_sr_format {
    MSM_SR_FMT_TEXT = 0,
    MSM_SR_FMT_JSON = 1,
    MSM_SR_FMT_PROMETHEUS = 2,
};

/* Preparation work per step: milliseconds, and elements of the snapshot's merge sort. */
#define MSM_SR_STEP_MS 10.0
#define MSM_SR_SORT_STEP 65536

/* A resumable render (streamed admin responses). It renders a consistent snapshot: the visible
 * stats when it starts, each referenced until msm_stats_render_free, so stats created or
 * destroyed meanwhile (xDS removing clusters mid-scrape) neither crash it nor appear twice; the
 * values are read when each line is written. The preparation (snapshot sort when the store's
 * cached order is stale, the query, Prometheus tag extraction and grouping) runs in bounded
 * steps too. <q> is copied; its filter is borrowed and must outlive the render. Main thread. */
struct msm_stats_render;
struct msm_stats_render *msm_stats_render_new(struct msm_stats_store *st,
                                              const struct msm_stats_query *q,
                                              enum msm_sr_format fmt);
/* One step: append about <hint> bytes to <out> (SIZE_MAX: all of it), or one bounded
 * preparation step (~MSM_SR_STEP_MS) that appends nothing. True while more follows. */
bool msm_stats_render_next(struct msm_stats_render *r, struct msm_buf *out, size_t hint);
/* Prometheus: the number of metric families written so far. */
size_t msm_stats_render_families(const struct msm_stats_render *r);
void msm_stats_render_free(struct msm_stats_render *r);

/* The whole body at once (the functions above with no bound). */
/* A double as fmt's "{}" prints it: shortest round trip, integers without a fraction, "nan". */
void msm_sr_double(struct msm_buf *out, double v);
