#include "stats/stats.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/alloc.h"

const double msm_hist_bounds[MSM_HIST_BUCKETS] = {
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000, 7200000};

struct msm_stats_store *msm_stats;

/* Open-addressing hash table of stats by name; tombstones are compacted on rehash. */
struct msm_stats_store {
    pthread_mutex_t mu;
    struct msm_stat **slots;
    size_t cap; /* power of two */
    size_t used; /* live + tombstones */
    size_t live;
};

static struct msm_stat tombstone;

struct msm_stats_store *msm_stats_store_new(void)
{
    struct msm_stats_store *st = MSM_NEW(struct msm_stats_store);
    pthread_mutex_init(&st->mu, NULL);
    st->cap = 1024;
    st->slots = msm_xcalloc(st->cap, sizeof(*st->slots));
    return st;
}

static void stat_destroy(struct msm_stat *s)
{
    free(s->name);
    free(s->buckets);
    free(s->text);
    free(s);
}

void msm_stats_store_free(struct msm_stats_store *st)
{
    if (!st) {
        return;
    }
    for (size_t i = 0; i < st->cap; i++) {
        if (st->slots[i] && st->slots[i] != &tombstone) {
            stat_destroy(st->slots[i]);
        }
    }
    free(st->slots);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

static size_t slot_of(const struct msm_stats_store *st, const char *name, bool *found)
{
    size_t mask = st->cap - 1;
    size_t i = (size_t)XXH3_64bits(name, strlen(name)) & mask;
    size_t first_free = (size_t)-1;
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
        } else if (!strcmp(s->name, name)) {
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
    st->used = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i] && old[i] != &tombstone) {
            bool found;
            size_t j = slot_of(st, old[i]->name, &found);
            st->slots[j] = old[i];
            st->used++;
        }
    }
    free(old);
}

struct msm_stat *msm_stats_get(struct msm_stats_store *st, enum msm_stat_type type,
                               const char *name)
{
    pthread_mutex_lock(&st->mu);
    bool found;
    size_t i = slot_of(st, name, &found);
    struct msm_stat *s;
    if (found) {
        s = st->slots[i];
        atomic_fetch_add(&s->refs, 1);
    } else {
        s = MSM_NEW(struct msm_stat);
        s->name = msm_xstrdup(name);
        s->type = type;
        s->store = st;
        atomic_init(&s->refs, 1);
        if (type == MSM_STAT_HISTOGRAM) {
            s->buckets = msm_xcalloc(MSM_HIST_BUCKETS + 1, sizeof(*s->buckets));
        }
        if (st->slots[i] != &tombstone) {
            st->used++;
        }
        st->slots[i] = s;
        st->live++;
        if (st->used * 4 >= st->cap * 3) {
            rehash(st);
        }
    }
    pthread_mutex_unlock(&st->mu);
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

struct msm_stat *msm_stat_ref(struct msm_stat *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void msm_stat_unref(struct msm_stat *s)
{
    if (!s) {
        return;
    }
    /* Under the store lock, so a concurrent get of the same name either sees the stat alive or
     * not at all. Unref is rare (config objects going away), never on the data path. */
    struct msm_stats_store *st = s->store;
    pthread_mutex_lock(&st->mu);
    if (atomic_fetch_sub(&s->refs, 1) == 1) {
        bool found;
        size_t i = slot_of(st, s->name, &found);
        if (found && st->slots[i] == s) {
            st->slots[i] = &tombstone;
            st->live--;
        }
        stat_destroy(s);
    }
    pthread_mutex_unlock(&st->mu);
}

struct msm_stat *msm_stats_find(struct msm_stats_store *st, const char *name)
{
    pthread_mutex_lock(&st->mu);
    bool found;
    size_t i = slot_of(st, name, &found);
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

struct msm_stat **msm_stats_list(struct msm_stats_store *st, size_t *n)
{
    pthread_mutex_lock(&st->mu);
    struct msm_stat **v = msm_xcalloc(st->live + 1, sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; i < st->cap; i++) {
        struct msm_stat *s = st->slots[i];
        if (s && s != &tombstone) {
            atomic_fetch_add(&s->refs, 1);
            v[k++] = s;
        }
    }
    pthread_mutex_unlock(&st->mu);
    qsort(v, k, sizeof(*v), by_name);
    *n = k;
    return v;
}

void msm_stats_list_free(struct msm_stat **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        msm_stat_unref(v[i]);
    }
    free(v);
}

void msm_stat_record(struct msm_stat *h, uint64_t v)
{
    if (h->type != MSM_STAT_HISTOGRAM) {
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

double msm_stat_quantile(const struct msm_stat *h, double q)
{
    if (h->type != MSM_STAT_HISTOGRAM) {
        return NAN;
    }
    uint64_t counts[MSM_HIST_BUCKETS + 1], total = 0;
    for (int i = 0; i <= MSM_HIST_BUCKETS; i++) {
        counts[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
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

void msm_stat_set_text(struct msm_stat *s, const char *text)
{
    free(s->text);
    s->text = msm_xstrdup(text);
    atomic_store_explicit(&s->used, true, memory_order_relaxed);
}
