#include "stats/stats.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "envoy/config/metrics/v3/stats.pb-c.h"

#include "common/alloc.h"
#include "config/matcher.h"
#include "stats/sort.h"
#include "stats/tags.h"

const double msm_hist_bounds[MSM_HIST_BUCKETS] = {
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000};

struct msm_stats_store *msm_stats;

enum matcher_mode {
    MATCH_ALL = 0,       /* no stats_matcher */
    MATCH_REJECT_ALL = 1,
    MATCH_INCLUDE = 2,   /* inclusion_list: only what matches */
    MATCH_EXCLUDE = 3,   /* exclusion_list: all but what matches */
};

/* A caller's memo of interned export strings (the main thread's in the store, one per prefetch
 * thread): the few hundred tag-extracted names with their Prometheus names, and the last labels
 * (consecutive stats in name order share a cluster's), so most views take no lock. Interned
 * strings live as long as the store. */
#define EXPORT_MEMO_SLOTS 1024
struct export_name {
    uint64_t h; /* XXH3 of the <len> bytes of <tag_name> */
    size_t len;
    const char *tag_name, *prom_name;
    uint32_t prom_len; /* strlen(prom_name), 0 when NULL */
};
struct export_memo {
    struct export_name names[EXPORT_MEMO_SLOTS];
    const char *labels;
    size_t labels_len;
};

/* Open-addressing hash table of stats by name; tombstones are compacted on rehash. */
struct msm_stats_store {
    pthread_mutex_t mu;
    struct msm_stat **slots;
    uint32_t *htags; /* high half of each live slot's name hash: probes stay in two arrays */
    size_t cap; /* power of two */
    size_t used; /* live + tombstones */
    size_t live;
    /* stats_config (msm_stats_configure) */
    struct msm_tag_producer *tags;
    enum matcher_mode mode;
    struct msm_str_matcher *match;
    int n_match;
    /* Bumped (under <mu>) whenever a stat is created or destroyed, or the config changes:
     * sorted lists cached for exports stay valid while it does not move. */
    uint64_t generation;
    uint64_t cfg_gen; /* bumped by msm_stats_configure (rejects_join's cache) */
    struct order_cache {
        uint64_t gen;
        bool valid;
        msm_stats_cmp_fn *cmp;
        struct msm_stat **v;
        size_t n;
    } orders[MSM_STATS_ORDERS];
    /* msm_stats_order_prefetch: the name order sorted by a thread of its own */
    struct order_job {
        pthread_t th;
        bool running; /* started, not joined yet */
        bool collected; /* its order was offered to the cache (job_collect) */
        bool exports;   /* after sorting, compute export views (msm_stats_order_prefetch) */
        atomic_bool done; /* sorted */
        atomic_bool finished; /* its export pass too */
        atomic_bool stop; /* end the export pass */
        uint64_t gen; /* generation of the snapshot */
        struct msm_stat **v; /* the snapshot (not referenced: see <dead>) */
        struct msm_sort_item *items; /* it as sort keys, made with it (the thread frees it) */
        size_t n;
        /* Stats whose last reference went while the thread may read their names (under <mu>
         * of the store, as <running>): destroyed when the sort is collected. */
        struct msm_stat **dead;
        size_t n_dead, dead_cap;
        pthread_mutex_t mu;
        pthread_cond_t cv;
    } job;
    /* interned export strings (never freed before the store) */
    pthread_mutex_t intern_mu;
    char **strs;
    uint64_t *strs_h; /* XXH3 of each strs[] entry: probes compare it before the string */
    size_t strs_cap, strs_n;
    /* interned tag-extracted name -> its interned Prometheus name (a few hundred families
     * shared by 500k stats: computed once each) */
    const char **pm_key, **pm_val;
    size_t pm_cap, pm_n;
    struct export_memo *memo; /* the main thread's (export_extracted) */
    /* msm_stats_prewarm: a pass over the slots computing missing export views */
    size_t warm_cursor;
    uint64_t warm_gen, warm_start_gen;
    bool warm_active, warm_done;
    /* The shared null stat of each type (msm_stats_sink_rejected) */
    struct msm_stat sinks[MSM_STAT_TEXT + 1];
    atomic_uint_fast64_t sink_buckets[MSM_HIST_BUCKETS + 1];
};

static _Thread_local bool sink_scope;
/* Source of cfg_gen values, unique across stores (a new store may reuse a freed one's address). */
static atomic_uint_fast64_t cfg_epoch;

static struct msm_stat tombstone;

struct msm_stats_store *msm_stats_store_new(void)
{
    struct msm_stats_store *st = MSM_NEW(struct msm_stats_store);
    pthread_mutex_init(&st->mu, NULL);
    pthread_mutex_init(&st->intern_mu, NULL);
    st->cap = 1024;
    st->slots = msm_xcalloc(st->cap, sizeof(*st->slots));
    st->htags = msm_xcalloc(st->cap, sizeof(*st->htags));
    st->cfg_gen = atomic_fetch_add(&cfg_epoch, 1) + 1;
    pthread_mutex_init(&st->job.mu, NULL);
    pthread_cond_init(&st->job.cv, NULL);
    for (int t = 0; t <= MSM_STAT_TEXT; t++) {
        struct msm_stat *s = &st->sinks[t];
        s->name = "";
        s->store = st;
        s->type = (enum msm_stat_type)t;
        s->sink = true;
        s->hidden = true;
        s->detached = true;
        atomic_init(&s->refs, 1);
        s->buckets = st->sink_buckets;
    }
    return st;
}

bool msm_stats_sink_rejected(bool on)
{
    bool was = sink_scope;
    sink_scope = on;
    return was;
}

/* Export strings are interned per store: families share their names and the ~60 stats of one
 * cluster share their label string, which keeps a 500k-stat store's export views small. */
static const char *intern(struct msm_stats_store *st, char *s);

static void export_free(struct msm_stat_export *e)
{
    if (!e) {
        return;
    }
    if (e->tags) {
        msm_tags_free(e->tags, e->n_tags);
    }
    if (e->own_labels) {
        free((char *)e->prom_labels);
    }
    free(e);
}

static char detached_name[] = "";

static void stat_destroy(struct msm_stat *s);

/* The last reference to stored stat <s> went (st->mu held): destroy it, or keep it until the
 * running prefetch sort, which may be reading its name, is collected. */
static void stat_release(struct msm_stats_store *st, struct msm_stat *s)
{
    struct order_job *j = &st->job;
    if (!j->running) {
        stat_destroy(s);
        return;
    }
    j->dead = msm_xgrow(j->dead, sizeof(*j->dead), &j->dead_cap, j->n_dead + 1);
    j->dead[j->n_dead++] = s;
}

static void stat_destroy(struct msm_stat *s)
{
    if (!s->detached) {
        free(s->name);
    }
    free(s->buckets);
    free(s->text);
    export_free(s->exp);
    free(s->hist_prev);
    free(s->hist_interval);
    free(s);
}

static void job_reap(struct msm_stats_store *st, bool wait);

static void matcher_clear(struct msm_stats_store *st)
{
    for (int i = 0; i < st->n_match; i++) {
        msm_str_matcher_deinit(&st->match[i]);
    }
    free(st->match);
    st->match = NULL;
    st->n_match = 0;
    st->mode = MATCH_ALL;
}

void msm_stats_store_free(struct msm_stats_store *st)
{
    if (!st) {
        return;
    }
    job_reap(st, true);
    free(st->job.dead);
    pthread_mutex_destroy(&st->job.mu);
    pthread_cond_destroy(&st->job.cv);
    for (size_t i = 0; i < st->cap; i++) {
        if (st->slots[i] && st->slots[i] != &tombstone) {
            stat_destroy(st->slots[i]);
        }
    }
    free(st->slots);
    free(st->htags);
    for (int i = 0; i < MSM_STATS_ORDERS; i++) {
        free(st->orders[i].v);
    }
    for (size_t i = 0; i < st->strs_cap; i++) {
        free(st->strs[i]);
    }
    free(st->strs);
    free(st->strs_h);
    free(st->pm_key);
    free(st->pm_val);
    free(st->memo);
    pthread_mutex_destroy(&st->intern_mu);
    msm_tag_producer_free(st->tags);
    matcher_clear(st);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

static uint64_t name_hash(const char *name)
{
    return XXH3_64bits(name, strlen(name));
}

/* Probes compare a tag array, then the stored hash, before the name: with 1M+ stats (10k
 * clusters) a probe sequence of a few slots would otherwise be a few cache-missing
 * dereferences and strcmp()s per stat created. */
static size_t slot_of(const struct msm_stats_store *st, const char *name, uint64_t h,
                      bool *found)
{
    size_t mask = st->cap - 1;
    size_t i = (size_t)h & mask;
    size_t first_free = (size_t)-1;
    uint32_t tag = (uint32_t)(h >> 32);
    for (;;) {
        struct msm_stat *s = st->slots[i];
        if (!s) {
            *found = false;
            return first_free != (size_t)-1 ? first_free : i;
        }
        if (s == &tombstone) {
            if (first_free == (size_t)-1) {
                first_free = i;
            }
        } else if (st->htags[i] == tag && s->hash == h && !strcmp(s->name, name)) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
}

static void rehash(struct msm_stats_store *st)
{
    struct msm_stat **old = st->slots;
    size_t oldcap = st->cap;
    if (st->live * 2 >= st->cap) {
        st->cap *= 2;
    }
    st->slots = msm_xcalloc(st->cap, sizeof(*st->slots));
    free(st->htags);
    st->htags = msm_xcalloc(st->cap, sizeof(*st->htags));
    st->used = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i] && old[i] != &tombstone) {
            size_t j = (size_t)old[i]->hash & (st->cap - 1);
            while (st->slots[j]) {
                j = (j + 1) & (st->cap - 1);
            }
            st->slots[j] = old[i];
            st->htags[j] = (uint32_t)(old[i]->hash >> 32);
            st->used++;
        }
    }
    free(old);
}

static struct msm_stat_export *export_new(struct msm_stats_store *st, const char *tag_name,
                                          struct msm_tag *tags, int n);

/* Get or create under the lock. <exp> (may be NULL) becomes the export view of a new stat;
 * otherwise it is freed. */
static struct msm_stat *get_locked(struct msm_stats_store *st, enum msm_stat_type type,
                                   const char *name, struct msm_stat_export *exp, int rejected)
{
    if (rejected < 0) {
        rejected = msm_stats_rejects(st, name);
    }
    if (sink_scope && type <= MSM_STAT_TEXT && rejected) {
        export_free(exp);
        return &st->sinks[type];
    }
    bool found;
    uint64_t h = name_hash(name);
    size_t i = slot_of(st, name, h, &found);
    struct msm_stat *s;
    if (found) {
        s = st->slots[i];
        atomic_fetch_add(&s->refs, 1);
        export_free(exp);
        return s;
    }
    bool hidden = rejected;
    s = MSM_NEW(struct msm_stat);
    s->type = type;
    s->store = st;
    s->hidden = hidden;
    atomic_init(&s->refs, 1);
    if (type == MSM_STAT_HISTOGRAM) {
        s->buckets = msm_xcalloc(MSM_HIST_BUCKETS + 1, sizeof(*s->buckets));
    }
    /* Rejected counters and histograms stay out of the store (see struct msm_stat). Gauges
     * stay shared by name: some are read back (server.total_connections sums listeners'). */
    if (hidden && (type == MSM_STAT_COUNTER || type == MSM_STAT_HISTOGRAM)) {
        s->detached = true;
        s->name = detached_name;
        export_free(exp);
        return s;
    }
    s->name = msm_xstrdup(name);
    s->hash = h;
    s->exp = exp;
    if (st->slots[i] != &tombstone) {
        st->used++;
    }
    st->slots[i] = s;
    st->htags[i] = (uint32_t)(h >> 32);
    st->live++;
    st->generation++;
    if (st->used * 4 >= st->cap * 3) {
        rehash(st);
    }
    return s;
}

struct msm_stat *msm_stats_get(struct msm_stats_store *st, enum msm_stat_type type,
                               const char *name)
{
    pthread_mutex_lock(&st->mu);
    struct msm_stat *s = get_locked(st, type, name, NULL, -1);
    pthread_mutex_unlock(&st->mu);
    return s;
}

struct msm_stat *msm_stats_get_tagged(struct msm_stats_store *st, enum msm_stat_type type,
                                      const char *name, const struct msm_tag *tags, int n_tags)
{
    size_t len = strlen(name) + 1;
    for (int i = 0; i < n_tags; i++) {
        len += strlen(tags[i].name) + strlen(tags[i].value) + 2;
    }
    char *full = msm_xmalloc(len);
    char *p = full;
    p += sprintf(p, "%s", name);
    for (int i = 0; i < n_tags; i++) {
        p += sprintf(p, ".%s.%s", tags[i].name, tags[i].value);
    }
    /* Built outside the lock; thrown away when the stat exists already. */
    struct msm_tag *copy = msm_xcalloc((size_t)n_tags + 1, sizeof(*copy));
    for (int i = 0; i < n_tags; i++) {
        copy[i].name = msm_xstrdup(tags[i].name);
        copy[i].value = msm_xstrdup(tags[i].value);
    }
    struct msm_stat_export *exp = export_new(st, name, copy, n_tags);
    exp->explicit_tags = true;
    pthread_mutex_lock(&st->mu);
    struct msm_stat *s = get_locked(st, type, full, exp, -1);
    pthread_mutex_unlock(&st->mu);
    free(full);
    return s;
}

struct msm_stat *msm_stats_getf(struct msm_stats_store *st, enum msm_stat_type type,
                                const char *fmt, ...)
{
    char name[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    return msm_stats_get(st, type, name);
}

static int rejects_join(struct msm_stats_store *st, const char *prefix, size_t pl,
                        const char *full, size_t len);

struct msm_stat *msm_stats_get_join(struct msm_stats_store *st, enum msm_stat_type type,
                                    const char *prefix, const char *name)
{
    char buf[1024];
    size_t pl = strlen(prefix), nl = strlen(name);
    if (pl + nl >= sizeof(buf)) {
        return msm_stats_getf(st, type, "%s%s", prefix, name); /* truncated as getf does */
    }
    memcpy(buf, prefix, pl);
    memcpy(buf + pl, name, nl + 1);
    int rej = rejects_join(st, prefix, pl, buf, pl + nl);
    pthread_mutex_lock(&st->mu);
    struct msm_stat *s = get_locked(st, type, buf, NULL, rej);
    pthread_mutex_unlock(&st->mu);
    return s;
}

struct msm_stat *msm_stat_ref(struct msm_stat *s)
{
    if (s->sink) {
        return s;
    }
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void msm_stat_unref(struct msm_stat *s)
{
    if (!s || s->sink) {
        return;
    }
    /* Under the store lock, so a concurrent get of the same name either sees the stat alive or
     * not at all. Unref is rare (config objects going away), never on the data path. */
    struct msm_stats_store *st = s->store;
    if (s->detached) {
        if (atomic_fetch_sub(&s->refs, 1) == 1) {
            stat_destroy(s);
        }
        return;
    }
    pthread_mutex_lock(&st->mu);
    if (atomic_fetch_sub(&s->refs, 1) == 1) {
        bool found;
        size_t i = slot_of(st, s->name, s->hash, &found);
        if (found && st->slots[i] == s) {
            st->slots[i] = &tombstone;
            st->live--;
            st->generation++;
        }
        stat_release(st, s);
    }
    pthread_mutex_unlock(&st->mu);
}

struct msm_stat *msm_stats_find(struct msm_stats_store *st, const char *name)
{
    pthread_mutex_lock(&st->mu);
    bool found;
    size_t i = slot_of(st, name, name_hash(name), &found);
    struct msm_stat *s = found ? st->slots[i] : NULL;
    pthread_mutex_unlock(&st->mu);
    return s;
}

static int by_name(const void *a, const void *b)
{
    const struct msm_stat *x = *(struct msm_stat *const *)a;
    const struct msm_stat *y = *(struct msm_stat *const *)b;
    return strcmp(x->name, y->name);
}

struct msm_stat **msm_stats_list_all(struct msm_stats_store *st, bool with_hidden, bool sorted,
                                     size_t *n)
{
    pthread_mutex_lock(&st->mu);
    struct msm_stat **v = msm_xcalloc(st->live + 1, sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; i < st->cap; i++) {
        struct msm_stat *s = st->slots[i];
        if (s && s != &tombstone && (with_hidden || !s->hidden)) {
            atomic_fetch_add(&s->refs, 1);
            v[k++] = s;
        }
    }
    pthread_mutex_unlock(&st->mu);
    if (sorted) {
        qsort(v, k, sizeof(*v), by_name);
    }
    *n = k;
    return v;
}

struct msm_stat **msm_stats_list(struct msm_stats_store *st, size_t *n)
{
    return msm_stats_list_all(st, false, true, n);
}

void msm_stats_list_free(struct msm_stat **v, size_t n)
{
    if (!n) {
        free(v);
        return;
    }
    /* One lock for the whole list (a scrape of a big store releases 100k+ references). */
    struct msm_stats_store *st = v[0]->store;
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < n; i++) {
        struct msm_stat *s = v[i];
        if (atomic_fetch_sub(&s->refs, 1) == 1) {
            bool found;
            size_t j = slot_of(st, s->name, s->hash, &found);
            if (found && st->slots[j] == s) {
                st->slots[j] = &tombstone;
                st->live--;
                st->generation++;
            }
            stat_release(st, s);
        }
    }
    pthread_mutex_unlock(&st->mu);
    free(v);
}

void msm_stat_record(struct msm_stat *h, uint64_t v)
{
    if (h->type != MSM_STAT_HISTOGRAM || h->sink) {
        return;
    }
    int b = 0;
    while (b < MSM_HIST_BUCKETS && (double)v > msm_hist_bounds[b]) {
        b++;
    }
    atomic_fetch_add_explicit(&h->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->hsum, v, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->hcount, 1, memory_order_relaxed);
    atomic_store_explicit(&h->used, true, memory_order_relaxed);
}

double msm_hist_quantile(const uint64_t *counts, double q)
{
    uint64_t total = 0;
    for (int i = 0; i <= MSM_HIST_BUCKETS; i++) {
        total += counts[i];
    }
    if (!total) {
        return NAN;
    }
    double rank = q * (double)total, seen = 0;
    for (int i = 0; i <= MSM_HIST_BUCKETS; i++) {
        if (!counts[i]) {
            continue;
        }
        if (seen + (double)counts[i] >= rank) {
            double lo = i ? msm_hist_bounds[i - 1] : 0;
            double hi = i < MSM_HIST_BUCKETS ? msm_hist_bounds[i] : lo * 2;
            return lo + (hi - lo) * ((rank - seen) / (double)counts[i]);
        }
        seen += (double)counts[i];
    }
    return msm_hist_bounds[MSM_HIST_BUCKETS - 1];
}

double msm_stat_quantile(const struct msm_stat *h, double q)
{
    if (h->type != MSM_STAT_HISTOGRAM) {
        return NAN;
    }
    uint64_t counts[MSM_HIST_BUCKETS + 1];
    for (int i = 0; i <= MSM_HIST_BUCKETS; i++) {
        counts[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    }
    return msm_hist_quantile(counts, q);
}

double msm_stat_interval_quantile(const struct msm_stat *h, double q)
{
    if (h->type != MSM_STAT_HISTOGRAM || !h->hist_interval) {
        return NAN;
    }
    return msm_hist_quantile(h->hist_interval, q);
}

void msm_stat_hist_snapshot(const struct msm_stat *h, uint64_t *out, uint64_t *count,
                            uint64_t *sum)
{
    uint64_t acc = 0;
    for (int i = 0; i < MSM_HIST_BUCKETS; i++) {
        acc += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        out[i] = acc;
    }
    acc += atomic_load_explicit(&h->buckets[MSM_HIST_BUCKETS], memory_order_relaxed);
    /* Count from the buckets, so that +Inf always equals _count even while workers record. */
    *count = acc;
    *sum = atomic_load_explicit(&h->hsum, memory_order_relaxed);
}

void msm_stat_set_text(struct msm_stat *s, const char *text)
{
    if (s->sink) {
        return;
    }
    free(s->text);
    s->text = msm_xstrdup(text);
    atomic_store_explicit(&s->used, true, memory_order_relaxed);
}

/* ---- stats_config: matcher, tags, export views ------------------------------------------- */

/* What the stats_matcher can say about every name "<prefix>...": a stat block's 30-40 names
 * share their prefix ("cluster.<name>."), so the prefix is classified once (per thread, while
 * it repeats) and each name then only meets the suffix patterns. */
enum pclass {
    PC_UNKNOWN = 0,  /* test each name against every pattern */
    PC_MATCH = 1,    /* a prefix pattern matches every such name */
    PC_SUFFIX = 2,   /* only suffix patterns can match such a name */
};

static bool starts(const char *s, size_t n, const char *p, size_t pn)
{
    return n >= pn && !memcmp(s, p, pn);
}

static enum pclass classify(const struct msm_stats_store *st, const char *p, size_t pl)
{
    enum pclass c = PC_SUFFIX;
    for (int i = 0; i < st->n_match; i++) {
        const struct msm_str_matcher *m = &st->match[i];
        if (m->kind != MSM_STR_REGEX && m->ignore_case) {
            return PC_UNKNOWN;
        }
        switch (m->kind) {
        case MSM_STR_PREFIX:
            if (m->len <= pl && starts(p, pl, m->s, m->len)) {
                return PC_MATCH;
            }
            if (m->len > pl && starts(m->s, m->len, p, pl)) {
                c = PC_UNKNOWN; /* longer than the prefix: depends on the rest */
            }
            break;
        case MSM_STR_EXACT:
            if (starts(m->s, m->len, p, pl)) {
                c = PC_UNKNOWN;
            }
            break;
        case MSM_STR_SUFFIX:
            break;
        case MSM_STR_REGEX:
            if (!m->re_prefix ||
                (m->re_prefix_len <= pl ? starts(p, pl, m->re_prefix, m->re_prefix_len)
                                        : starts(m->re_prefix, m->re_prefix_len, p, pl))) {
                c = PC_UNKNOWN;
            }
            break;
        default:
            return PC_UNKNOWN;
        }
    }
    return c;
}

static _Thread_local struct {
    const struct msm_stats_store *st;
    uint64_t cfg_gen;
    char p[256];
    size_t pl;
    enum pclass c;
} pc_cache;

static int rejects_join(struct msm_stats_store *st, const char *prefix, size_t pl,
                        const char *full, size_t len)
{
    if (st->mode == MATCH_ALL || st->mode == MATCH_REJECT_ALL) {
        return st->mode == MATCH_REJECT_ALL;
    }
    if (pl >= sizeof(pc_cache.p)) {
        return msm_stats_rejects(st, full);
    }
    if (pc_cache.st != st || pc_cache.cfg_gen != st->cfg_gen || pc_cache.pl != pl ||
        memcmp(pc_cache.p, prefix, pl) != 0) {
        pc_cache.st = st;
        pc_cache.cfg_gen = st->cfg_gen;
        memcpy(pc_cache.p, prefix, pl);
        pc_cache.pl = pl;
        pc_cache.c = classify(st, prefix, pl);
    }
    bool hit;
    switch (pc_cache.c) {
    case PC_MATCH:
        hit = true;
        break;
    case PC_SUFFIX:
        hit = false;
        for (int i = 0; i < st->n_match && !hit; i++) {
            if (st->match[i].kind == MSM_STR_SUFFIX) {
                hit = msm_str_matcher_match(&st->match[i], full, len);
            }
        }
        break;
    default:
        return msm_stats_rejects(st, full);
    }
    return st->mode == MATCH_INCLUDE ? !hit : hit;
}

bool msm_stats_rejects(const struct msm_stats_store *st, const char *name)
{
    if (st->mode == MATCH_ALL) {
        return false;
    }
    if (st->mode == MATCH_REJECT_ALL) {
        return true;
    }
    size_t len = strlen(name);
    bool hit = false;
    for (int i = 0; i < st->n_match && !hit; i++) {
        hit = msm_str_matcher_match(&st->match[i], name, len);
    }
    return st->mode == MATCH_INCLUDE ? !hit : hit;
}

static int matcher_build(struct msm_stats_store *st,
                         const Envoy__Config__Metrics__V3__StatsMatcher *m, struct msm_err *err)
{
    const Envoy__Type__Matcher__V3__ListStringMatcher *l = NULL;
    switch (m->stats_matcher_case) {
    case ENVOY__CONFIG__METRICS__V3__STATS_MATCHER__STATS_MATCHER_REJECT_ALL:
        st->mode = m->reject_all ? MATCH_REJECT_ALL : MATCH_ALL;
        return 0;
    case ENVOY__CONFIG__METRICS__V3__STATS_MATCHER__STATS_MATCHER_INCLUSION_LIST:
        st->mode = MATCH_INCLUDE;
        l = m->inclusion_list;
        break;
    case ENVOY__CONFIG__METRICS__V3__STATS_MATCHER__STATS_MATCHER_EXCLUSION_LIST:
        st->mode = MATCH_EXCLUDE;
        l = m->exclusion_list;
        break;
    default:
        return 0;
    }
    size_t n = l ? l->n_patterns : 0;
    st->match = msm_xcalloc(n + 1, sizeof(*st->match));
    for (size_t i = 0; i < n; i++) {
        if (msm_str_matcher_from_proto(l->patterns[i], &st->match[i], err) < 0) {
            msm_err_prefix(err, "stats_config.stats_matcher.%s.patterns[%zu]",
                           st->mode == MATCH_INCLUDE ? "inclusion_list" : "exclusion_list", i);
            return MSM_EINVAL;
        }
        st->n_match = (int)i + 1;
    }
    return 0;
}

int msm_stats_configure(struct msm_stats_store *st, const void *stats_config,
                        const struct msm_stats_tag *cli_tags, int n_cli_tags,
                        struct msm_err *err)
{
    const Envoy__Config__Metrics__V3__StatsConfig *sc = stats_config;
    struct msm_tag_producer *tp = msm_tag_producer_new(sc, cli_tags, n_cli_tags, err);
    if (!tp) {
        return MSM_EINVAL;
    }
    job_reap(st, true); /* its export pass reads st->tags */
    pthread_mutex_lock(&st->mu);
    matcher_clear(st);
    st->cfg_gen = atomic_fetch_add(&cfg_epoch, 1) + 1;
    int rc = 0;
    if (sc && sc->stats_matcher && matcher_build(st, sc->stats_matcher, err) < 0) {
        matcher_clear(st);
        rc = MSM_EINVAL;
    }
    st->generation++;
    if (rc == 0) {
        msm_tag_producer_free(st->tags);
        st->tags = tp;
        tp = NULL;
    }
    for (size_t i = 0; rc == 0 && i < st->cap; i++) {
        struct msm_stat *s = st->slots[i];
        if (s && s != &tombstone) {
            s->hidden = msm_stats_rejects(st, s->name);
            if (s->exp && s->exp->explicit_tags) {
                continue;
            }
            export_free(s->exp);
            s->exp = NULL;
        }
    }
    pthread_mutex_unlock(&st->mu);
    msm_tag_producer_free(tp);
    return rc;
}

static bool prom_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_';
}

static void sanitize_into(char *dst, const char *src)
{
    for (; *src; src++) {
        *dst++ = prom_char(*src) ? *src : '_';
    }
    *dst = '\0';
}

/* Envoy's PrometheusStatsFormatter::metricName: custom namespaces lose their prefix and must not
 * start with a digit; everything else gets "envoy_". */
static char *prom_name(const char *tag_name)
{
    static const char ns[] = MSM_STATS_ISTIO_NS ".";
    if (!strncmp(tag_name, ns, sizeof(ns) - 1)) {
        const char *rest = tag_name + sizeof(ns) - 1;
        if (!rest[0] || (rest[0] >= '0' && rest[0] <= '9')) {
            return NULL;
        }
        char *out = msm_xmalloc(strlen(rest) + 1);
        sanitize_into(out, rest);
        return out;
    }
    if (!strncmp(tag_name, "rtsp.", 5)) {
        /* msm's media stats are msm_* in Prometheus (msm_rtsp_..., labels msm_rtsp_prefix and
         * msm_rtsp_stream from the extractors in tags.c), not envoy_*. */
        char *out = msm_xmalloc(strlen(tag_name) + 5);
        memcpy(out, "msm_", 4);
        sanitize_into(out + 4, tag_name);
        return out;
    }
    char *out = msm_xmalloc(strlen(tag_name) + 7);
    memcpy(out, "envoy_", 6);
    sanitize_into(out + 6, tag_name);
    return out;
}

static char *prom_labels(const struct msm_tag *tags, int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++) {
        len += strlen(tags[i].name) + 2 * strlen(tags[i].value) + 4;
    }
    char *out = msm_xmalloc(len);
    char *p = out;
    for (int i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }
        sanitize_into(p, tags[i].name);
        p += strlen(p);
        *p++ = '=';
        *p++ = '"';
        for (const char *v = tags[i].value; *v; v++) {
            if (*v == '\\' || *v == '"') {
                *p++ = '\\';
                *p++ = *v;
            } else if (*v == '\n') {
                *p++ = '\\';
                *p++ = 'n';
            } else {
                *p++ = *v;
            }
        }
        *p++ = '"';
    }
    *p = '\0';
    return out;
}

/* prom_labels of extracted tags, into <out> (room for prom_labels_refs_len); returns the length. */
static size_t prom_labels_refs_len(const struct msm_tag_ref *tags, int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++) {
        len += strlen(tags[i].name) + 2 * tags[i].value_len + 4;
    }
    return len;
}

static size_t prom_labels_refs(const struct msm_tag_ref *tags, int n, char *out)
{
    char *p = out;
    for (int i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }
        sanitize_into(p, tags[i].name);
        p += strlen(p);
        *p++ = '=';
        *p++ = '"';
        for (size_t k = 0; k < tags[i].value_len; k++) {
            char v = tags[i].value[k];
            if (v == '\\' || v == '"') {
                *p++ = '\\';
                *p++ = v;
            } else if (v == '\n') {
                *p++ = '\\';
                *p++ = 'n';
            } else {
                *p++ = v;
            }
        }
        *p++ = '"';
    }
    *p = '\0';
    return (size_t)(p - out);
}

/* Room for one more interned string (intern_mu held). */
static void intern_grow(struct msm_stats_store *st)
{
    if ((st->strs_n + 1) * 2 > st->strs_cap) {
        size_t cap = st->strs_cap ? st->strs_cap * 2 : 1024;
        char **v = msm_xcalloc(cap, sizeof(char *));
        uint64_t *h = msm_xcalloc(cap, sizeof(*h));
        for (size_t i = 0; i < st->strs_cap; i++) {
            if (st->strs[i]) {
                size_t j = (size_t)st->strs_h[i] & (cap - 1);
                while (v[j]) {
                    j = (j + 1) & (cap - 1);
                }
                v[j] = st->strs[i];
                h[j] = st->strs_h[i];
            }
        }
        free(st->strs);
        free(st->strs_h);
        st->strs = v;
        st->strs_h = h;
        st->strs_cap = cap;
    }
}

/* The interned copy of the <len> bytes at <s> (no NUL inside), made from <owned> (a malloc'ed
 * copy, freed when the string is already there) or copied when <owned> is NULL. */
static const char *intern_put(struct msm_stats_store *st, const char *s, size_t len, char *owned)
{
    uint64_t h = XXH3_64bits(s, len);
    pthread_mutex_lock(&st->intern_mu);
    intern_grow(st);
    size_t i = (size_t)h & (st->strs_cap - 1);
    while (st->strs[i] &&
           (st->strs_h[i] != h || strncmp(st->strs[i], s, len) != 0 || st->strs[i][len])) {
        i = (i + 1) & (st->strs_cap - 1);
    }
    if (st->strs[i]) {
        free(owned);
    } else {
        st->strs[i] = owned ? owned : msm_xstrndup(s, len);
        st->strs_h[i] = h;
        st->strs_n++;
    }
    const char *r = st->strs[i];
    pthread_mutex_unlock(&st->intern_mu);
    return r;
}

static const char *intern(struct msm_stats_store *st, char *s)
{
    return s ? intern_put(st, s, strlen(s), s) : NULL;
}

/* intern() of the <len> bytes at <s> (no NUL inside): copies them only when new. */
static const char *intern_n(struct msm_stats_store *st, const char *s, size_t len)
{
    return intern_put(st, s, len, NULL);
}

/* The interned Prometheus name of interned <tag_name>, memoized per store. */
static const char *prom_name_of(struct msm_stats_store *st, const char *tag_name)
{
    pthread_mutex_lock(&st->intern_mu);
    if ((st->pm_n + 1) * 2 > st->pm_cap) {
        size_t cap = st->pm_cap ? st->pm_cap * 2 : 256;
        const char **k = msm_xcalloc(cap, sizeof(*k));
        const char **v = msm_xcalloc(cap, sizeof(*v));
        for (size_t i = 0; i < st->pm_cap; i++) {
            if (st->pm_key[i]) {
                size_t j = ((uintptr_t)st->pm_key[i] >> 4) & (cap - 1);
                while (k[j]) {
                    j = (j + 1) & (cap - 1);
                }
                k[j] = st->pm_key[i];
                v[j] = st->pm_val[i];
            }
        }
        free(st->pm_key);
        free(st->pm_val);
        st->pm_key = k;
        st->pm_val = v;
        st->pm_cap = cap;
    }
    size_t i = ((uintptr_t)tag_name >> 4) & (st->pm_cap - 1);
    while (st->pm_key[i] && st->pm_key[i] != tag_name) {
        i = (i + 1) & (st->pm_cap - 1);
    }
    if (st->pm_key[i]) {
        const char *r = st->pm_val[i];
        pthread_mutex_unlock(&st->intern_mu);
        return r;
    }
    pthread_mutex_unlock(&st->intern_mu);
    const char *r = intern(st, prom_name(tag_name)); /* takes intern_mu itself */
    pthread_mutex_lock(&st->intern_mu);
    /* the table may have grown meanwhile: probe again */
    i = ((uintptr_t)tag_name >> 4) & (st->pm_cap - 1);
    while (st->pm_key[i] && st->pm_key[i] != tag_name) {
        i = (i + 1) & (st->pm_cap - 1);
    }
    if (!st->pm_key[i]) {
        st->pm_key[i] = tag_name;
        st->pm_val[i] = r;
        st->pm_n++;
    }
    pthread_mutex_unlock(&st->intern_mu);
    return r;
}

static struct msm_stat_export *export_new(struct msm_stats_store *st, const char *tag_name,
                                          struct msm_tag *tags, int n)
{
    struct msm_stat_export *e = MSM_NEW(struct msm_stat_export);
    e->tag_name = intern(st, msm_xstrdup(tag_name));
    e->n_tags = n;
    e->prom_name = prom_name_of(st, e->tag_name);
    /* Interned strings live as long as the store: labels that name one RTSP session (a random
     * id, a new one per session) are the view's own and go with the stat. */
    for (int i = 0; i < n && !e->own_labels; i++) {
        e->own_labels = !strcmp(tags[i].name, "msm.rtsp_session");
    }
    e->prom_labels = e->own_labels ? prom_labels(tags, n) : intern(st, prom_labels(tags, n));
    e->tags = tags;
    e->prom_name_len = e->prom_name ? (uint32_t)strlen(e->prom_name) : 0;
    e->prom_labels_len = (uint32_t)strlen(e->prom_labels);
    return e;
}

/* The view of a stat whose tags come from tag extraction: no per-stat copies of the
 * tag-extracted name, the tags or the labels (the interned strings are shared). */
static struct msm_stat_export *export_extracted(struct msm_stats_store *st, const char *name,
                                               struct msm_tag_scratch *sc,
                                               struct export_memo *memo)
{
    enum { STACK_NAME = 512, STACK_TAGS = 64, STACK_LABELS = 1024 };
    char tn_s[STACK_NAME], lb_s[STACK_LABELS];
    struct msm_tag_ref refs_s[STACK_TAGS];
    size_t len = strlen(name), tn_len = 0;
    int max = msm_tag_producer_count(st->tags);
    char *tn = len < STACK_NAME ? tn_s : msm_xmalloc(len + 1);
    struct msm_tag_ref *refs = max <= STACK_TAGS ? refs_s : msm_xcalloc((size_t)max, sizeof(*refs));
    int n = msm_tag_producer_produce_refs_on(st->tags, sc, name, len, tn, &tn_len, refs);
    struct msm_stat_export *e = MSM_NEW(struct msm_stat_export);
    uint64_t h = XXH3_64bits(tn, tn_len);
    struct export_name *m = &memo->names[h & (EXPORT_MEMO_SLOTS - 1)];
    if (!m->tag_name || m->h != h || m->len != tn_len || memcmp(m->tag_name, tn, tn_len)) {
        m->tag_name = intern_n(st, tn, tn_len);
        m->prom_name = prom_name_of(st, m->tag_name);
        m->prom_len = m->prom_name ? (uint32_t)strlen(m->prom_name) : 0;
        m->h = h;
        m->len = tn_len;
    }
    e->tag_name = m->tag_name;
    e->n_tags = n;
    e->prom_name = m->prom_name;
    /* Interned strings live as long as the store: labels that name one RTSP session (a random
     * id, a new one per session) are the view's own and go with the stat. */
    for (int i = 0; i < n && !e->own_labels; i++) {
        e->own_labels = !strcmp(refs[i].name, "msm.rtsp_session");
    }
    size_t lb_cap = prom_labels_refs_len(refs, n);
    char *lb = !e->own_labels && lb_cap <= STACK_LABELS ? lb_s : msm_xmalloc(lb_cap);
    size_t lb_len = prom_labels_refs(refs, n, lb);
    e->prom_name_len = m->prom_len;
    e->prom_labels_len = (uint32_t)lb_len;
    if (e->own_labels) {
        e->prom_labels = lb;
    } else {
        if (!memo->labels || memo->labels_len != lb_len || memcmp(memo->labels, lb, lb_len)) {
            memo->labels = intern_n(st, lb, lb_len);
            memo->labels_len = lb_len;
        }
        e->prom_labels = memo->labels;
        if (lb != lb_s) {
            free(lb);
        }
    }
    if (tn != tn_s) {
        free(tn);
    }
    if (refs != refs_s) {
        free(refs);
    }
    return e;
}

/* Make <e> the view of <s> unless another thread installed one first (then drop <e>). */
static struct msm_stat_export *export_install(struct msm_stat *s, struct msm_stat_export *e)
{
    struct msm_stat_export *was = NULL;
    if (atomic_compare_exchange_strong_explicit(&s->exp, &was, e, memory_order_acq_rel,
                                                memory_order_acquire)) {
        return e;
    }
    export_free(e);
    return was;
}

const struct msm_stat_export *msm_stat_export(struct msm_stat *s)
{
    struct msm_stat_export *e = atomic_load_explicit(&s->exp, memory_order_acquire);
    if (e) {
        return e;
    }
    struct msm_stats_store *st = s->store;
    if (!st->memo) {
        st->memo = MSM_NEW(struct export_memo);
    }
    return export_install(s, export_extracted(st, s->name, NULL, st->memo));
}

void msm_stats_flush_histograms(struct msm_stats_store *st)
{
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < st->cap; i++) {
        struct msm_stat *s = st->slots[i];
        if (!s || s == &tombstone || s->type != MSM_STAT_HISTOGRAM) {
            continue;
        }
        if (!s->hist_prev) {
            s->hist_prev = msm_xcalloc(MSM_HIST_BUCKETS + 1, sizeof(uint64_t));
            s->hist_interval = msm_xcalloc(MSM_HIST_BUCKETS + 1, sizeof(uint64_t));
        }
        for (int b = 0; b <= MSM_HIST_BUCKETS; b++) {
            uint64_t now = atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
            s->hist_interval[b] = now - s->hist_prev[b];
            s->hist_prev[b] = now;
        }
    }
    pthread_mutex_unlock(&st->mu);
}

void msm_stats_reset_counters(struct msm_stats_store *st)
{
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < st->cap; i++) {
        struct msm_stat *s = st->slots[i];
        if (s && s != &tombstone && s->type == MSM_STAT_COUNTER) {
            atomic_store_explicit(&s->value, 0, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&st->mu);
}

/* ---- cached sorted lists ------------------------------------------------------------------ */

static struct msm_stat_export *export_extracted(struct msm_stats_store *st, const char *name,
                                               struct msm_tag_scratch *sc,
                                               struct export_memo *memo);
static struct msm_stat_export *export_install(struct msm_stat *s, struct msm_stat_export *e);

/* How many stats the thread looks at between checks of <stop>, and how many exported ones in a
 * row tell it that the main thread's export pass came from the other end to meet it. */
#define JOB_EXPORT_CHECK 64
#define JOB_EXPORT_MET 512

static void *job_main(void *arg)
{
    struct msm_stats_store *st = arg;
    struct order_job *j = &st->job;
    /* Reads only the names: immutable. */
    struct msm_sort_item *items = j->items;
    msm_sort_radix(items, j->n);
    for (size_t i = 0; i < j->n; i++) {
        j->v[i] = items[i].val;
    }
    free(items);
    pthread_mutex_lock(&j->mu);
    atomic_store(&j->done, true);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    /* Export views from the end of the order while the main thread's export pass works from
     * its start (both install with a compare-and-swap: whoever comes second drops its copy).
     * Until the job is joined no stat of the snapshot is destroyed and st->tags stays. */
    if (j->exports) {
        struct msm_tag_scratch *sc = msm_tag_scratch_new(st->tags);
        struct export_memo *memo = MSM_NEW(struct export_memo);
        size_t met = 0;
        for (size_t i = j->n; i-- > 0 && met < JOB_EXPORT_MET;) {
            if (i % JOB_EXPORT_CHECK == 0 && atomic_load(&j->stop)) {
                break;
            }
            struct msm_stat *s = j->v[i];
            if (atomic_load_explicit(&s->exp, memory_order_acquire)) {
                met++;
                continue;
            }
            met = 0;
            export_install(s, export_extracted(st, s->name, sc, memo));
        }
        free(memo);
        msm_tag_scratch_free(sc);
    }
    atomic_store(&j->finished, true);
    return NULL;
}

/* Join the prefetch thread: with <wait> in any case (stopping its export pass), else when it
 * finished. The order is collected first (as with job_collect). */
static void job_collect(struct msm_stats_store *st, bool wait);

/* No thread reads the snapshot any more: destroy the stats that died meanwhile, drop it. */
static void job_end(struct msm_stats_store *st)
{
    struct order_job *j = &st->job;
    pthread_mutex_lock(&st->mu);
    j->running = false;
    for (size_t i = 0; i < j->n_dead; i++) {
        stat_destroy(j->dead[i]);
    }
    j->n_dead = 0;
    pthread_mutex_unlock(&st->mu);
    free(j->v);
    j->v = NULL;
    j->items = NULL; /* (freed by the thread, or by a failed start) */
    j->n = 0;
}

static void job_join(struct msm_stats_store *st, bool wait)
{
    struct order_job *j = &st->job;
    if (!j->running || (!wait && !atomic_load(&j->finished))) {
        return;
    }
    atomic_store(&j->stop, true);
    pthread_join(j->th, NULL);
    job_collect(st, false);
    job_end(st);
}

/* Once the prefetch thread sorted (or, with <wait>, after waiting for that), make its result
 * the cached name order when nothing was created or destroyed since its snapshot. */
static void job_collect(struct msm_stats_store *st, bool wait)
{
    struct order_job *j = &st->job;
    if (!j->running || j->collected) {
        return;
    }
    if (!atomic_load(&j->done)) {
        if (!wait) {
            return;
        }
        pthread_mutex_lock(&j->mu);
        while (!atomic_load(&j->done)) {
            pthread_cond_wait(&j->cv, &j->mu);
        }
        pthread_mutex_unlock(&j->mu);
    }
    /* A stat that died meanwhile moved the generation: order_put does not cache the result.
     * (The thread only reads <v> from now on.) */
    msm_stats_order_put(st, MSM_STATS_ORDER_NAME, msm_stats_cmp_name, j->gen, j->v, j->n);
    j->collected = true;
}

static void job_reap(struct msm_stats_store *st, bool wait)
{
    job_collect(st, wait);
    job_join(st, wait);
}

bool msm_stats_order_prefetch(struct msm_stats_store *st, bool exports)
{
    struct order_job *j = &st->job;
    job_reap(st, false);
    if (j->running && !j->collected) {
        return true;
    }
    struct order_cache *oc = &st->orders[MSM_STATS_ORDER_NAME];
    pthread_mutex_lock(&st->mu);
    bool fresh = oc->valid && oc->gen == st->generation && oc->cmp == msm_stats_cmp_name;
    bool small = st->live < MSM_STATS_PREFETCH_MIN;
    pthread_mutex_unlock(&st->mu);
    if (fresh || small) {
        return false;
    }
    job_reap(st, true); /* the export pass of the previous job, if it still runs */
    /* No references (a million atomic increments, then decrements, are cache misses on the
     * main thread): while <running>, a stat whose last reference goes is kept (stat_release). */
    pthread_mutex_lock(&st->mu);
    j->v = msm_xcalloc(st->live + 1, sizeof(*j->v));
    j->items = msm_xcalloc(st->live + 1, sizeof(*j->items));
    j->n = 0;
    for (size_t i = 0; i < st->cap; i++) {
        if (i + 16 < st->cap) {
            __builtin_prefetch(st->slots[i + 16]); /* <name> and <hidden> share its start */
        }
        struct msm_stat *s = st->slots[i];
        if (s && s != &tombstone && !s->hidden) {
            j->items[j->n++] = (struct msm_sort_item){.key = s->name, .val = s};
        }
    }
    j->gen = st->generation;
    j->running = true;
    pthread_mutex_unlock(&st->mu);
    j->collected = false;
    j->exports = exports;
    atomic_store(&j->done, false);
    atomic_store(&j->finished, false);
    atomic_store(&j->stop, false);
    if (pthread_create(&j->th, NULL, job_main, st) != 0) {
        free(j->items);
        job_end(st);
        return false;
    }
    return true;
}

bool msm_stats_order_pending(const struct msm_stats_store *st)
{
    return st->job.running && !st->job.collected;
}

bool msm_stats_order_sorted(const struct msm_stats_store *st)
{
    return msm_stats_order_pending(st) && atomic_load(&st->job.done);
}

void msm_stats_order_wait(struct msm_stats_store *st, double ms)
{
    struct order_job *j = &st->job;
    if (!j->running || j->collected) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ns = (long long)ts.tv_nsec + (long long)(ms * 1e6);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    pthread_mutex_lock(&j->mu);
    if (!atomic_load(&j->done)) {
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
    }
    pthread_mutex_unlock(&j->mu);
}

void msm_stats_order_release(struct msm_stats_store *st)
{
    if (st->job.running) {
        atomic_store(&st->job.stop, true);
    }
    job_reap(st, false);
}

struct msm_stat **msm_stats_order_get(struct msm_stats_store *st, int slot,
                                      msm_stats_cmp_fn *cmp, size_t *n, uint64_t *gen)
{
    job_reap(st, false);
    struct order_cache *oc = &st->orders[slot];
    struct msm_stat **v = NULL;
    pthread_mutex_lock(&st->mu);
    *gen = st->generation;
    if (oc->valid && oc->gen == st->generation && oc->cmp == cmp) {
        /* Nothing was created or destroyed since: every cached pointer is alive. */
        v = msm_xcalloc(oc->n + 1, sizeof(*v));
        for (size_t i = 0; i < oc->n; i++) {
            atomic_fetch_add(&oc->v[i]->refs, 1);
            v[i] = oc->v[i];
        }
        *n = oc->n;
    }
    pthread_mutex_unlock(&st->mu);
    return v;
}

void msm_stats_order_put(struct msm_stats_store *st, int slot, msm_stats_cmp_fn *cmp,
                         uint64_t gen, struct msm_stat *const *v, size_t n)
{
    struct order_cache *oc = &st->orders[slot];
    pthread_mutex_lock(&st->mu);
    if (st->generation == gen) {
        free(oc->v);
        oc->v = msm_xcalloc(n + 1, sizeof(*oc->v));
        memcpy(oc->v, v, n * sizeof(*v));
        oc->n = n;
        oc->gen = gen;
        oc->cmp = cmp;
        oc->valid = true;
    }
    pthread_mutex_unlock(&st->mu);
}

bool msm_stats_order_fresh(struct msm_stats_store *st, int slot)
{
    struct order_cache *oc = &st->orders[slot];
    pthread_mutex_lock(&st->mu);
    bool fresh = oc->valid && oc->gen == st->generation;
    pthread_mutex_unlock(&st->mu);
    return fresh;
}

struct msm_stat **msm_stats_list_ordered(struct msm_stats_store *st, int slot,
                                         msm_stats_cmp_fn *cmp, msm_stats_prep_fn *prep,
                                         size_t *n)
{
    uint64_t gen;
    struct msm_stat **v = msm_stats_order_get(st, slot, cmp, n, &gen);
    if (v) {
        return v;
    }
    size_t k;
    v = msm_stats_list_all(st, false, false, &k);
    for (size_t i = 0; prep && i < k; i++) {
        prep(v[i]);
    }
    qsort(v, k, sizeof(*v), cmp);
    msm_stats_order_put(st, slot, cmp, gen, v, k);
    *n = k;
    return v;
}

int msm_stats_cmp_name(const void *a, const void *b)
{
    return by_name(a, b);
}

size_t msm_stats_prewarm(struct msm_stats_store *st, size_t budget)
{
    /* (also collects a finished prefetch sort, whose snapshot keeps stats alive) */
    job_reap(st, false);
    pthread_mutex_lock(&st->mu);
    if (st->warm_done && st->warm_gen == st->generation) {
        pthread_mutex_unlock(&st->mu);
        return 0;
    }
    if (!st->warm_active) {
        st->warm_active = true;
        st->warm_cursor = 0;
        st->warm_start_gen = st->generation;
    }
    size_t done = 0;
    while (st->warm_cursor < st->cap && done < budget) {
        struct msm_stat *s = st->slots[st->warm_cursor++];
        if (s && s != &tombstone && !s->hidden && !s->exp) {
            msm_stat_export(s);
            done++;
        }
    }
    size_t more = 1;
    if (st->warm_cursor >= st->cap) {
        st->warm_active = false;
        st->warm_done = true;
        st->warm_gen = st->warm_start_gen;
        more = st->warm_gen != st->generation;
    }
    pthread_mutex_unlock(&st->mu);
    return more;
}
