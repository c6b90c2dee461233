/* Stats rendering for /stats and /stats/prometheus (see stats_render.h). Output is built in a
 * flat string buffer with hand-rolled number formatting and moved into the response once:
 * a scrape of 500k stats must not do an allocation per line. */
#include "admin/stats_render.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <inttypes.h>
#include <stdint.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "stats/tags.h"

/* ---- a flat output buffer ------------------------------------------------------------------ */

struct sb {
    char *p;
    size_t len, cap;
    struct msm_buf *out;
};

#define SB_FLUSH (256 * 1024)

static void sb_init(struct sb *b, struct msm_buf *out)
{
    b->cap = SB_FLUSH + 4096;
    b->p = msm_xmalloc(b->cap);
    b->len = 0;
    b->out = out;
}

static void sb_flush(struct sb *b)
{
    msm_buf_append(b->out, b->p, b->len);
    b->len = 0;
}

static void sb_done(struct sb *b)
{
    sb_flush(b);
    free(b->p);
}

static void sb_put(struct sb *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        sb_flush(b);
        if (n > b->cap) {
            msm_buf_append(b->out, s, n);
            return;
        }
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    if (b->len >= SB_FLUSH) {
        sb_flush(b);
    }
}

static void sb_str(struct sb *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_u64(struct sb *b, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    sb_put(b, tmp + i, sizeof(tmp) - (size_t)i);
}

static int fmt_double(char *out, size_t n, double v)
{
    if (isnan(v)) {
        return snprintf(out, n, "nan");
    }
    if (isinf(v)) {
        return snprintf(out, n, v > 0 ? "inf" : "-inf");
    }
    if (v == floor(v) && fabs(v) < 1e16) {
        return snprintf(out, n, "%.0f", v);
    }
    int k = snprintf(out, n, "%.15g", v);
    if (strtod(out, NULL) != v) {
        k = snprintf(out, n, "%.17g", v);
    }
    return k;
}

static void sb_double(struct sb *b, double v)
{
    char tmp[48];
    int k = fmt_double(tmp, sizeof(tmp), v);
    sb_put(b, tmp, (size_t)k);
}

void msm_sr_double(struct msm_buf *out, double v)
{
    char tmp[48];
    int k = fmt_double(tmp, sizeof(tmp), v);
    msm_buf_append(out, tmp, (size_t)k);
}

/* JSON string contents (no quotes). */
static void sb_json(struct sb *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            int k = snprintf(e, sizeof(e), "\\u%04x", c);
            sb_put(b, e, (size_t)k);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
}

/* ---- selection ------------------------------------------------------------------------------ */

static unsigned type_bit(enum msm_stat_type t)
{
    switch (t) {
    case MSM_STAT_COUNTER: return MSM_SR_COUNTERS;
    case MSM_STAT_GAUGE: return MSM_SR_GAUGES;
    case MSM_STAT_HISTOGRAM: return MSM_SR_HISTOGRAMS;
    case MSM_STAT_TEXT: return MSM_SR_TEXT;
    }
    return 0;
}

static bool stat_used(const struct msm_stat *s)
{
    return atomic_load_explicit(&s->used, memory_order_relaxed);
}

struct sel {
    struct msm_stat **all;
    size_t n_all;
    struct msm_stat **v; /* the selected ones (borrowed from <all>) */
    size_t n;
    pcre2_match_data *md;
};

static bool wanted(const struct msm_stats_query *q, struct sel *sl, struct msm_stat *s)
{
    if (!(q->types & type_bit(s->type))) {
        return false;
    }
    if (q->usedonly && !stat_used(s)) {
        return false;
    }
    if (q->filter && pcre2_match(q->filter, (PCRE2_SPTR)s->name, PCRE2_ZERO_TERMINATED, 0, 0,
                                 sl->md, NULL) < 0) {
        return false;
    }
    return true;
}

static int phase_of(enum msm_stat_type t);

/* The wanted stats of <st>, sorted by name (the order is cached by the store). */
static void select_stats(struct msm_stats_store *st, const struct msm_stats_query *q,
                         struct sel *sl)
{
    sl->all = msm_stats_list_ordered(st, MSM_STATS_ORDER_NAME, msm_stats_cmp_name, NULL,
                                     &sl->n_all);
    sl->v = msm_xcalloc(sl->n_all + 1, sizeof(*sl->v));
    sl->n = 0;
    sl->md = q->filter ? pcre2_match_data_create_from_pattern(q->filter, NULL) : NULL;
    for (size_t i = 0; i < sl->n_all; i++) {
        if (wanted(q, sl, sl->all[i])) {
            sl->v[sl->n++] = sl->all[i];
        }
    }
}

static void sel_free(struct sel *sl)
{
    pcre2_match_data_free(sl->md);
    free(sl->v);
    msm_stats_list_free(sl->all, sl->n_all);
}

static const double quantiles[] = {0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1};

/* ---- text ----------------------------------------------------------------------------------- */

static void text_histogram(struct sb *b, const struct msm_stats_query *q, struct msm_stat *s)
{
    sb_str(b, s->name);
    sb_put(b, ": ", 2);
    if (q->buckets != MSM_SR_BUCKETS_NONE) {
        uint64_t prev_c = 0, prev_i = 0, acc_c = 0, acc_i = 0;
        for (int i = 0; i < MSM_HIST_BUCKETS; i++) {
            acc_c += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
            acc_i += s->hist_interval ? s->hist_interval[i] : 0;
            bool disj = q->buckets == MSM_SR_BUCKETS_DISJOINT;
            sb_str(b, i ? " B" : "B");
            sb_double(b, msm_hist_bounds[i]);
            sb_put(b, "(", 1);
            sb_u64(b, disj ? acc_i - prev_i : acc_i);
            sb_put(b, ",", 1);
            sb_u64(b, disj ? acc_c - prev_c : acc_c);
            sb_put(b, ")", 1);
            prev_c = acc_c;
            prev_i = acc_i;
        }
        sb_put(b, "\n", 1);
        return;
    }
    if (!atomic_load_explicit(&s->hcount, memory_order_relaxed)) {
        sb_str(b, "No recorded values\n");
        return;
    }
    for (size_t k = 0; k < MSM_ARRAY_SIZE(quantiles); k++) {
        sb_str(b, k ? " P" : "P");
        sb_double(b, quantiles[k] * 100);
        sb_put(b, "(", 1);
        sb_double(b, msm_stat_interval_quantile(s, quantiles[k]));
        sb_put(b, ",", 1);
        sb_double(b, msm_stat_quantile(s, quantiles[k]));
        sb_put(b, ")", 1);
    }
    sb_put(b, "\n", 1);
}

void msm_stats_render_text(struct msm_stats_store *st, const struct msm_stats_query *q,
                           struct msm_buf *out)
{
    struct sel sl;
    select_stats(st, q, &sl);
    struct sb b;
    sb_init(&b, out);
    for (size_t i = 0; i < sl.n; i++) {
        struct msm_stat *s = sl.v[i];
        if (s->type == MSM_STAT_TEXT) {
            sb_str(&b, s->name);
            sb_put(&b, ": \"", 3);
            sb_json(&b, s->text ? s->text : "");
            sb_put(&b, "\"\n", 2);
        }
    }
    for (size_t i = 0; i < sl.n; i++) {
        struct msm_stat *s = sl.v[i];
        if (s->type == MSM_STAT_COUNTER || s->type == MSM_STAT_GAUGE) {
            sb_str(&b, s->name);
            sb_put(&b, ": ", 2);
            sb_u64(&b, msm_stat_value(s));
            sb_put(&b, "\n", 1);
        }
    }
    for (size_t i = 0; i < sl.n; i++) {
        if (sl.v[i]->type == MSM_STAT_HISTOGRAM) {
            text_histogram(&b, q, sl.v[i]);
        }
    }
    sb_done(&b);
    sel_free(&sl);
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static void json_quantile(struct sb *b, double v)
{
    if (isnan(v)) {
        sb_str(b, "null");
    } else {
        sb_double(b, v);
    }
}

void msm_stats_render_json(struct msm_stats_store *st, const struct msm_stats_query *q,
                           struct msm_buf *out)
{
    struct sel sl;
    select_stats(st, q, &sl);
    struct sb b;
    sb_init(&b, out);
    sb_str(&b, "{\"stats\":[");
    bool first = true;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < sl.n; i++) {
            struct msm_stat *s = sl.v[i];
            bool text = s->type == MSM_STAT_TEXT;
            if (s->type == MSM_STAT_HISTOGRAM || text != (pass == 0)) {
                continue;
            }
            sb_str(&b, first ? "{\"name\":\"" : ",{\"name\":\"");
            first = false;
            sb_json(&b, s->name);
            sb_str(&b, "\",\"value\":");
            if (text) {
                sb_put(&b, "\"", 1);
                sb_json(&b, s->text ? s->text : "");
                sb_put(&b, "\"", 1);
            } else {
                sb_u64(&b, msm_stat_value(s));
            }
            sb_put(&b, "}", 1);
        }
    }
    bool any_hist = false;
    for (size_t i = 0; i < sl.n; i++) {
        struct msm_stat *s = sl.v[i];
        if (s->type != MSM_STAT_HISTOGRAM) {
            continue;
        }
        if (!any_hist) {
            sb_str(&b, first ? "{\"histograms\":{\"supported_quantiles\":["
                             : ",{\"histograms\":{\"supported_quantiles\":[");
            for (size_t k = 0; k < MSM_ARRAY_SIZE(quantiles); k++) {
                if (k) {
                    sb_put(&b, ",", 1);
                }
                sb_double(&b, quantiles[k] * 100);
            }
            sb_str(&b, "],\"computed_quantiles\":[");
            any_hist = true;
        } else {
            sb_put(&b, ",", 1);
        }
        sb_str(&b, "{\"name\":\"");
        sb_json(&b, s->name);
        sb_str(&b, "\",\"values\":[");
        for (size_t k = 0; k < MSM_ARRAY_SIZE(quantiles); k++) {
            sb_str(&b, k ? ",{\"interval\":" : "{\"interval\":");
            json_quantile(&b, msm_stat_interval_quantile(s, quantiles[k]));
            sb_str(&b, ",\"cumulative\":");
            json_quantile(&b, msm_stat_quantile(s, quantiles[k]));
            sb_put(&b, "}", 1);
        }
        sb_str(&b, "]}");
    }
    if (any_hist) {
        sb_str(&b, "]}}");
    }
    sb_str(&b, "]}\n");
    sb_done(&b);
    sel_free(&sl);
}

/* ---- Prometheus ----------------------------------------------------------------------------- */

struct pitem {
    struct msm_stat *s;
    const struct msm_stat_export *e;
};

static int phase_of(enum msm_stat_type t)
{
    switch (t) {
    case MSM_STAT_COUNTER: return 0;
    case MSM_STAT_GAUGE: return 1;
    case MSM_STAT_TEXT: return 2;
    case MSM_STAT_HISTOGRAM: return 3;
    }
    return 4;
}

static void prom_labels_open(struct sb *b, const struct msm_stat_export *e, bool more)
{
    sb_put(b, "{", 1);
    sb_str(b, e->prom_labels);
    if (more && e->prom_labels[0]) {
        sb_put(b, ",", 1);
    }
}

/* Families (phase, interned Prometheus name) of the selected stats, and the stats regrouped by
 * family without a comparison sort of the stats: they arrive sorted by name, a counting sort
 * keeps that order inside each family, and only the few hundred families are sorted. */
struct family {
    int phase;
    const char *name;
    size_t count, at;
};

static int by_family(const void *a, const void *b)
{
    const struct family *x = a, *y = b;
    return x->phase != y->phase ? x->phase - y->phase : strcmp(x->name, y->name);
}

static struct pitem *group_families(const struct sel *sl, size_t *out_n)
{
    size_t cap = 1024, nf = 0, fcap = 64;
    size_t *slots = msm_xcalloc(cap, sizeof(*slots)); /* family index + 1, 0 = empty */
    struct family *fam = msm_xcalloc(fcap, sizeof(*fam));
    size_t *which = msm_xcalloc(sl->n + 1, sizeof(*which));
    for (size_t i = 0; i < sl->n; i++) {
        const struct msm_stat_export *e = msm_stat_export(sl->v[i]);
        which[i] = SIZE_MAX;
        if (!e->prom_name) {
            continue;
        }
        int ph = phase_of(sl->v[i]->type);
        size_t h = (((uintptr_t)e->prom_name >> 4) * 31 + (size_t)ph) & (cap - 1);
        while (slots[h] && (fam[slots[h] - 1].name != e->prom_name ||
                            fam[slots[h] - 1].phase != ph)) {
            h = (h + 1) & (cap - 1);
        }
        size_t idx;
        if (slots[h]) {
            idx = slots[h] - 1;
        } else {
            fam = msm_xgrow(fam, sizeof(*fam), &fcap, nf + 1);
            fam[nf] = (struct family){.phase = ph, .name = e->prom_name};
            idx = nf;
            slots[h] = ++nf;
            if (nf * 2 > cap) { /* grow: rebuild the index */
                cap *= 2;
                free(slots);
                slots = msm_xcalloc(cap, sizeof(*slots));
                for (size_t f = 0; f < nf; f++) {
                    size_t k = (((uintptr_t)fam[f].name >> 4) * 31 + (size_t)fam[f].phase) &
                               (cap - 1);
                    while (slots[k]) {
                        k = (k + 1) & (cap - 1);
                    }
                    slots[k] = f + 1;
                }
            }
        }
        which[i] = idx;
        fam[idx].count++;
    }
    /* Sort the families, then give each its offset. */
    size_t *rank = msm_xcalloc(nf + 1, sizeof(*rank));
    struct family *sorted = msm_xcalloc(nf + 1, sizeof(*sorted));
    memcpy(sorted, fam, nf * sizeof(*fam));
    for (size_t f = 0; f < nf; f++) {
        sorted[f].at = f; /* remember the unsorted index */
    }
    qsort(sorted, nf, sizeof(*sorted), by_family);
    size_t total = 0;
    for (size_t f = 0; f < nf; f++) {
        rank[sorted[f].at] = total;
        total += sorted[f].count;
    }
    struct pitem *items = msm_xcalloc(total + 1, sizeof(*items));
    for (size_t i = 0; i < sl->n; i++) {
        if (which[i] != SIZE_MAX) {
            size_t at = rank[which[i]]++;
            items[at].s = sl->v[i];
            items[at].e = sl->v[i]->exp;
        }
    }
    free(rank);
    free(sorted);
    free(which);
    free(fam);
    free(slots);
    *out_n = total;
    return items;
}

static const char *le_strings[MSM_HIST_BUCKETS];

static void prom_histogram(struct sb *b, const struct pitem *it)
{
    const char *name = it->e->prom_name;
    uint64_t cum[MSM_HIST_BUCKETS], count, sum;
    msm_stat_hist_snapshot(it->s, cum, &count, &sum);
    for (int i = 0; i < MSM_HIST_BUCKETS; i++) {
        sb_str(b, name);
        sb_put(b, "_bucket", 7);
        prom_labels_open(b, it->e, true);
        sb_str(b, "le=\"");
        sb_str(b, le_strings[i]);
        sb_put(b, "\"} ", 3);
        sb_u64(b, cum[i]);
        sb_put(b, "\n", 1);
    }
    sb_str(b, name);
    sb_put(b, "_bucket", 7);
    prom_labels_open(b, it->e, true);
    sb_str(b, "le=\"+Inf\"} ");
    sb_u64(b, count);
    sb_put(b, "\n", 1);
    sb_str(b, name);
    sb_put(b, "_sum", 4);
    prom_labels_open(b, it->e, false);
    sb_put(b, "} ", 2);
    sb_u64(b, sum);
    sb_put(b, "\n", 1);
    sb_str(b, name);
    sb_put(b, "_count", 6);
    prom_labels_open(b, it->e, false);
    sb_put(b, "} ", 2);
    sb_u64(b, count);
    sb_put(b, "\n", 1);
}

static void prom_text_readout(struct sb *b, const struct pitem *it)
{
    sb_str(b, it->e->prom_name);
    prom_labels_open(b, it->e, true);
    sb_str(b, "text_value=\"");
    for (const char *v = it->s->text ? it->s->text : ""; *v; v++) {
        if (*v == '\\' || *v == '"') {
            char e[2] = {'\\', *v};
            sb_put(b, e, 2);
        } else if (*v == '\n') {
            sb_put(b, "\\n", 2);
        } else {
            sb_put(b, v, 1);
        }
    }
    sb_str(b, "\"} 0\n");
}

static const char *type_word(enum msm_stat_type t)
{
    switch (t) {
    case MSM_STAT_COUNTER: return "counter";
    case MSM_STAT_HISTOGRAM: return "histogram";
    default: return "gauge";
    }
}

size_t msm_stats_render_prometheus(struct msm_stats_store *st, const struct msm_stats_query *q,
                                   struct msm_buf *out)
{
    static char le_buf[MSM_HIST_BUCKETS][32];
    if (!le_strings[0]) {
        for (int i = 0; i < MSM_HIST_BUCKETS; i++) {
            fmt_double(le_buf[i], sizeof(le_buf[i]), msm_hist_bounds[i]);
            le_strings[i] = le_buf[i];
        }
    }
    struct msm_stats_query pq = *q;
    if (!pq.text_readouts) {
        pq.types &= ~MSM_SR_TEXT;
    }
    struct sel sl;
    select_stats(st, &pq, &sl);
    size_t n = 0;
    struct pitem *items = group_families(&sl, &n);
    struct sb b;
    sb_init(&b, out);
    size_t families = 0;
    for (size_t i = 0; i < n; i++) {
        const struct pitem *it = &items[i];
        bool new_family = i == 0 || phase_of(items[i - 1].s->type) != phase_of(it->s->type) ||
                          items[i - 1].e->prom_name != it->e->prom_name;
        if (new_family) {
            sb_str(&b, "# TYPE ");
            sb_str(&b, it->e->prom_name);
            sb_put(&b, " ", 1);
            sb_str(&b, type_word(it->s->type));
            sb_put(&b, "\n", 1);
            families++;
        }
        switch (it->s->type) {
        case MSM_STAT_HISTOGRAM: prom_histogram(&b, it); break;
        case MSM_STAT_TEXT: prom_text_readout(&b, it); break;
        default:
            sb_str(&b, it->e->prom_name);
            prom_labels_open(&b, it->e, false);
            sb_put(&b, "} ", 2);
            sb_u64(&b, msm_stat_value(it->s));
            sb_put(&b, "\n", 1);
        }
    }
    sb_done(&b);
    free(items);
    sel_free(&sl);
    return families;
}
