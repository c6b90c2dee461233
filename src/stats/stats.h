#pragma once
/* Stats store: counters, gauges and histograms under Envoy's names.
 *
 * Invariants:
 * - A stat is created (get-or-create by full name) on the main thread while a config object is
 *   built, and is reference-counted: config objects that share a name share the stat, so values
 *   survive config updates exactly as Envoy's do.
 * - Workers only update values (relaxed atomics); they never create or free stats.
 * - Names are Envoy's full dotted names ("cluster.xds-grpc;.upstream_cx_total"); tag extraction
 *   happens at export time (admin /stats/prometheus), never on the data path, and is cached per
 *   stat (struct msm_stat_export) so a scrape only formats numbers.
 * - stats_matcher (bootstrap stats_config) is decided once per stat, when it is created (and
 *   again for every existing stat when the matcher is installed): a rejected stat still exists
 *   and counts, so code never has to check, but it is <hidden>: no admin output, no Prometheus.
 *   Envoy does not create rejected stats at all; the visible behaviour is the same. A rejected
 *   counter or histogram created after the matcher is installed is not even kept in the store
 *   (<detached>: not shared by name, not found, freed with its owner's last reference); gauges
 *   stay shared because some are read back. Owners that never read their stats back (the
 *   cluster manager's thousands of clusters, EDS subscriptions) create them inside a *sink
 *   scope* (msm_stats_sink_rejected): there a rejected stat of any type is the store's shared
 *   <sink> of that type, which allocates nothing and drops every update (Envoy's null stats).
 * - Stats created with explicit tags (msm_stats_get_tagged: Istio's istio_* metrics) carry their
 *   tags instead of having them extracted; their full name is Envoy's joined name
 *   "<name>.<tag1>.<value1>...". Names in the "istiocustom." namespace are exported without the
 *   envoy_ prefix, as Envoy's custom stat namespaces are.
 * - Histograms keep cumulative bucket counts (live) and, from the stats flush timer, the counts
 *   of the last complete flush interval (Envoy's "interval" quantiles).
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum msm_stat_type {
    MSM_STAT_COUNTER = 0,
    MSM_STAT_GAUGE = 1,
    MSM_STAT_HISTOGRAM = 2,
    MSM_STAT_TEXT = 3,
};

/* Envoy's default histogram bucket bounds (ms or unitless): HistogramSettingsImpl::
 * defaultBuckets(), 0.5 .. 3600000, plus an overflow bucket. */
#define MSM_HIST_BUCKETS 19
extern const double msm_hist_bounds[MSM_HIST_BUCKETS];

/* The custom stat namespace of Istio's metrics ("istiocustom.istio_requests_total"). */
#define MSM_STATS_ISTIO_NS "istiocustom"

struct msm_stats_store;
struct msm_stat;
struct msm_tag;

/* Export orders cached by the store (msm_stats_list_ordered). */
#define MSM_STATS_ORDERS 1
#define MSM_STATS_ORDER_NAME 0
typedef int msm_stats_cmp_fn(const void *a, const void *b); /* on struct msm_stat ** */
typedef void msm_stats_prep_fn(struct msm_stat *s);
struct msm_stats_tag;
struct msm_err;

/* What an export needs besides the value: computed once per stat (main thread), immutable. */
struct msm_stat_export {
    const char *tag_name;    /* tag-extracted name: "cluster.upstream_cx_total" */
    struct msm_tag *tags;    /* explicit tags (msm_stats_get_tagged); NULL for extracted ones */
    /* "envoy_cluster_upstream_cx_total"; NULL when it cannot be exported. Interned in the store:
     * equal names are the same pointer. */
    const char *prom_name;
    const char *prom_labels; /* labels without braces: cluster_name="xds-grpc"; "" if none */
    int n_tags;
    uint32_t prom_name_len, prom_labels_len; /* strlen of the two (0 without a name) */
    bool explicit_tags; /* created with msm_stats_get_tagged */
    bool own_labels;    /* <prom_labels> is this view's, not interned (per-session labels) */
};

struct msm_stat {
    char *name;
    struct msm_stats_store *store;
    enum msm_stat_type type;
    bool sink; /* the store's shared null stat of <type> (see msm_stats_sink_rejected) */
    bool hidden; /* rejected by stats_matcher: never exported (next to <name>: the snapshots
                  * of the name order read both) */
    /* A counter or histogram created while stats_matcher rejects its name: it counts for its
     * owner but is not in the store (no name, no lookup, not shared by name), as Envoy does
     * not create rejected stats. With Istio's inclusion list that is most per-cluster stats. */
    bool detached;
    atomic_uint_fast64_t value; /* counter/gauge value */
    atomic_bool used;           /* ever updated (admin ?usedonly) */
    atomic_int refs;
    bool neverimport;           /* gauge: Envoy's NeverImport (e.g. server.state) */
    /* histogram: cumulative-free bucket counts (last = overflow), sum and count */
    atomic_uint_fast64_t *buckets; /* MSM_HIST_BUCKETS + 1 */
    atomic_uint_fast64_t hsum;      /* sum of recorded values (integers) */
    atomic_uint_fast64_t hcount;
    char *text;                     /* text readout (main thread only) */
    /* export cache (msm_stat_export; also set by the export pass of msm_stats_order_prefetch) */
    _Atomic(struct msm_stat_export *) exp;
    uint64_t *hist_prev;            /* histogram: cumulative counts at the last flush */
    uint64_t *hist_interval;        /* histogram: counts of the last complete interval */
    uint64_t hash;                  /* XXH3 of <name>: the store's probes compare it first */
};

struct msm_stats_store *msm_stats_store_new(void);
void msm_stats_store_free(struct msm_stats_store *st);
/* The process-wide store (created by the server; tests may set their own). */
extern struct msm_stats_store *msm_stats;

/* Get or create a stat; returns a new reference (release with msm_stat_unref). A name that
 * exists with another type returns the existing stat of that type (Envoy logs this; it means a
 * naming bug), so callers never get NULL. Main thread. */
struct msm_stat *msm_stats_get(struct msm_stats_store *st, enum msm_stat_type type,
                               const char *name);
struct msm_stat *msm_stats_getf(struct msm_stats_store *st, enum msm_stat_type type,
                                const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* msm_stats_get of "<prefix><name>" (the stat blocks below: no format string to parse). */
struct msm_stat *msm_stats_get_join(struct msm_stats_store *st, enum msm_stat_type type,
                                    const char *prefix, const char *name);
void msm_stat_unref(struct msm_stat *s);
struct msm_stat *msm_stat_ref(struct msm_stat *s);
/* Open (<on>) or close the calling thread's sink scope; returns the previous setting, to be
 * restored. Inside it, a stat whose name the stats_matcher rejects is the store's shared sink
 * of its type (msm_stat.sink): nothing is allocated, updates are dropped, msm_stat_value reads
 * 0, ref/unref are no-ops. Only for owners that never read their values back. */
bool msm_stats_sink_rejected(bool on);
/* Lookup without creating (NULL if absent); borrowed pointer, main thread. */
struct msm_stat *msm_stats_find(struct msm_stats_store *st, const char *name);

/* Get or create a stat with explicit tags (Envoy's counterFromStatNameWithTags): <name> is the
 * tag-extracted name ("istiocustom.istio_tcp_sent_bytes_total"), the full name joins the tags
 * ("<name>.reporter.source..."). No tag extraction applies to it. Any thread. */
struct msm_stat *msm_stats_get_tagged(struct msm_stats_store *st, enum msm_stat_type type,
                                      const char *name, const struct msm_tag *tags, int n_tags);

/* Snapshot of all stats, sorted by name, each referenced; free with msm_stats_list_free.
 * Hidden stats (stats_matcher) are left out unless <with_hidden>. */
struct msm_stat **msm_stats_list(struct msm_stats_store *st, size_t *n);
struct msm_stat **msm_stats_list_all(struct msm_stats_store *st, bool with_hidden, bool sorted,
                                     size_t *n);
void msm_stats_list_free(struct msm_stat **v, size_t n);
/* The visible stats sorted by <cmp> (after <prep>, may be NULL, ran on each), each referenced;
 * free with msm_stats_list_free. The order is cached in <slot> and reused while no stat was
 * created or destroyed, so a repeated scrape of a big store does not sort again. Main thread. */
struct msm_stat **msm_stats_list_ordered(struct msm_stats_store *st, int slot,
                                         msm_stats_cmp_fn *cmp, msm_stats_prep_fn *prep,
                                         size_t *n);
int msm_stats_cmp_name(const void *a, const void *b);
/* The two halves of msm_stats_list_ordered, for callers that sort in steps (admin renders):
 * _get returns the cached order of <slot> (referenced, like msm_stats_list_ordered) or NULL
 * when it is stale, with *<gen> set to the store's generation either way; _put caches a copy of
 * <v> (sorted by the caller from a msm_stats_list_all snapshot taken at <gen>) when nothing was
 * created or destroyed since. Main thread. */
struct msm_stat **msm_stats_order_get(struct msm_stats_store *st, int slot,
                                      msm_stats_cmp_fn *cmp, size_t *n, uint64_t *gen);
void msm_stats_order_put(struct msm_stats_store *st, int slot, msm_stats_cmp_fn *cmp,
                         uint64_t gen, struct msm_stat *const *v, size_t n);
/* Is the cached order of <slot> fresh (nothing created or destroyed since it was sorted)? */
bool msm_stats_order_fresh(struct msm_stats_store *st, int slot);
/* Stores from this many stats on sort their name order in a thread (msm_stats_order_prefetch). */
#define MSM_STATS_PREFETCH_MIN 16384
/* Start sorting a snapshot of the visible stats by name (msm_stats_cmp_name) in a thread of its
 * own, unless the cached order of MSM_STATS_ORDER_NAME is fresh, the store is smaller than
 * MSM_STATS_PREFETCH_MIN or the thread cannot start; true while such a sort runs. The thread
 * reads only the snapshot's names; its result becomes the cached order at the first
 * msm_stats_order_get after it finished (if nothing was created or destroyed meanwhile), so a
 * cold export does other work (tag extraction) while it sorts. Main thread. */
bool msm_stats_order_prefetch(struct msm_stats_store *st, bool exports);
/* With <exports>, the thread then computes export views (as msm_stat_export) from the end of
 * the order until it meets views the main thread computed from its start (512 in a row; views
 * computed meanwhile in another order, msm_stats_prewarm while it sorts, are skipped), or is
 * stopped by msm_stats_order_release / the next prefetch / msm_stats_configure / the store's
 * end. */
/* Wait up to <ms> milliseconds for a running prefetch sort to finish. Main thread. */
void msm_stats_order_wait(struct msm_stats_store *st, double ms);
/* Is a prefetch sort running (or finished and not yet collected by msm_stats_order_get)? */
bool msm_stats_order_pending(const struct msm_stats_store *st);
/* Has that sort finished (its order is ready for msm_stats_order_get)? Does not wait. */
bool msm_stats_order_sorted(const struct msm_stats_store *st);
/* End the export pass of the prefetch thread if it runs (without waiting: the thread is joined
 * by a later call once it finished). Main thread. */
void msm_stats_order_release(struct msm_stats_store *st);

/* Install the bootstrap's stats_config (envoy.config.metrics.v3.StatsConfig, may be NULL) and
 * the --stats-tag tags: tag extraction and stats_matcher. Existing stats are re-evaluated.
 * MSM_EINVAL with <err> for a bad regex or matcher. Main thread, before the workers start. */
int msm_stats_configure(struct msm_stats_store *st, const void *stats_config,
                        const struct msm_stats_tag *cli_tags, int n_cli_tags,
                        struct msm_err *err);
/* Would stats_matcher reject <name>? */
bool msm_stats_rejects(const struct msm_stats_store *st, const char *name);
/* The export view of <s> (computed on first use). Main thread. */
const struct msm_stat_export *msm_stat_export(struct msm_stat *s);
/* Compute up to <budget> missing export views (tag extraction) ahead of the first scrape;
 * returns 0 when every visible stat has one. The stats flusher runs it from an idle watcher so
 * a scrape of a big store does not extract tags on the spot. Main thread. */
size_t msm_stats_prewarm(struct msm_stats_store *st, size_t budget);
/* Stats flush (main thread, every stats_flush_interval): close the histograms' interval. */
void msm_stats_flush_histograms(struct msm_stats_store *st);
/* /reset_counters: every counter back to 0. */
void msm_stats_reset_counters(struct msm_stats_store *st);

static inline void msm_stat_add(struct msm_stat *s, uint64_t v)
{
    if (s->sink) {
        return;
    }
    atomic_fetch_add_explicit(&s->value, v, memory_order_relaxed);
    atomic_store_explicit(&s->used, true, memory_order_relaxed);
}
static inline void msm_stat_inc(struct msm_stat *s)
{
    msm_stat_add(s, 1);
}
static inline void msm_stat_sub(struct msm_stat *s, uint64_t v)
{
    if (s->sink) {
        return;
    }
    atomic_fetch_sub_explicit(&s->value, v, memory_order_relaxed);
    atomic_store_explicit(&s->used, true, memory_order_relaxed);
}
static inline void msm_stat_dec(struct msm_stat *s)
{
    msm_stat_sub(s, 1);
}
static inline void msm_stat_set(struct msm_stat *s, uint64_t v)
{
    if (s->sink) {
        return;
    }
    atomic_store_explicit(&s->value, v, memory_order_relaxed);
    atomic_store_explicit(&s->used, true, memory_order_relaxed);
}
static inline uint64_t msm_stat_value(const struct msm_stat *s)
{
    return atomic_load_explicit(&s->value, memory_order_relaxed);
}
void msm_stat_record(struct msm_stat *h, uint64_t v);
/* Quantile estimate from the buckets (linear interpolation); NAN when empty. */
double msm_stat_quantile(const struct msm_stat *h, double q);
/* Same over the last complete flush interval (NAN when nothing was recorded in it). */
double msm_stat_interval_quantile(const struct msm_stat *h, double q);
/* Quantile of a bucket count array (MSM_HIST_BUCKETS + 1 entries); NAN when empty. */
double msm_hist_quantile(const uint64_t *counts, double q);
/* Cumulative bucket counts (<out>[i] = samples <= msm_hist_bounds[i]; MSM_HIST_BUCKETS entries)
 * and the total count and sum. */
void msm_stat_hist_snapshot(const struct msm_stat *h, uint64_t *out, uint64_t *count,
                            uint64_t *sum);
void msm_stat_set_text(struct msm_stat *s, const char *text);

/* Stat blocks as X-macros, after Envoy's ALL_*_STATS:
 *   #define FOO_STATS(C, G, H) C(rx_total) G(active) H(length_ms)
 *   MSM_STATS_STRUCT(foo_stats, FOO_STATS);   -> struct foo_stats { struct msm_stat *rx_total; ...}
 *   MSM_STATS_INIT_FN(foo_stats, FOO_STATS)    -> foo_stats_init(st, prefix, out) / _deinit(out)
 * Names are "<prefix><field>": pass a prefix ending in '.'. */
#define MSM__STAT_FIELD(n) struct msm_stat *n;
#define MSM_STATS_STRUCT(tag, LIST) struct tag { LIST(MSM__STAT_FIELD, MSM__STAT_FIELD, MSM__STAT_FIELD) }

#define MSM__STAT_INIT_C(n) o->n = msm_stats_get_join(st, MSM_STAT_COUNTER, prefix, #n);
#define MSM__STAT_INIT_G(n) o->n = msm_stats_get_join(st, MSM_STAT_GAUGE, prefix, #n);
#define MSM__STAT_INIT_H(n) o->n = msm_stats_get_join(st, MSM_STAT_HISTOGRAM, prefix, #n);
#define MSM__STAT_UNREF(n) msm_stat_unref(o->n); o->n = NULL;
#define MSM_STATS_INIT_FN(tag, LIST)                                                              \
    static inline void tag##_init(struct msm_stats_store *st, const char *prefix, struct tag *o)  \
    {                                                                                             \
        LIST(MSM__STAT_INIT_C, MSM__STAT_INIT_G, MSM__STAT_INIT_H)                                \
    }                                                                                             \
    static inline void tag##_deinit(struct tag *o)                                                \
    {                                                                                             \
        LIST(MSM__STAT_UNREF, MSM__STAT_UNREF, MSM__STAT_UNREF)                                   \
    }
