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
#include <time.h>

#include "common/alloc.h"
#include "common/fmt.h"
#include "stats/sort.h"
#include "stats/tags.h"

/* Export views computed in hash-slot order between checks of the store's sort thread. */
#define MSM_SR_WARM_STEP 512
/* How many stats ahead the passes over the snapshot prefetch. */
#define SEL_AHEAD 12

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- a flat output buffer ------------------------------------------------------------------ */

struct sb {
    char *p;
    size_t len, cap;
    struct msm_buf *out;
};

#define SB_FLUSH (256 * 1024)

static void sb_flush(struct sb *b)
{
    msm_buf_append(b->out, b->p, b->len);
    b->len = 0;
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

/* Room for <n> more bytes at b->p + b->len (the buffer grows for one oversized item); the
 * caller writes them and ends with sb_done. One bound check per line instead of one per part. */
static char *sb_room(struct sb *b, size_t n)
{
    if (b->len + n > b->cap) {
        sb_flush(b);
        if (n > b->cap) {
            b->cap = n;
            b->p = msm_xrealloc(b->p, n);
        }
    }
    return b->p + b->len;
}

static void sb_done(struct sb *b, char *end)
{
    b->len = (size_t)(end - b->p);
    if (b->len >= SB_FLUSH) {
        sb_flush(b);
    }
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static void sb_str(struct sb *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_u64(struct sb *b, uint64_t v)
{
    char tmp[24];
    sb_put(b, tmp, msm_fmt_u64(tmp, v));
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
    struct msm_stat **all; /* the snapshot: every visible stat, referenced, sorted by name */
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

/* One stat of text pass <pass>: text readouts, then counters and gauges, then histograms. */
static void text_item(struct sb *b, const struct msm_stats_query *q, struct msm_stat *s,
                      int pass)
{
    if (pass == 0 && s->type == MSM_STAT_TEXT) {
        sb_str(b, s->name);
        sb_put(b, ": \"", 3);
        sb_json(b, s->text ? s->text : "");
        sb_put(b, "\"\n", 2);
    } else if (pass == 1 && (s->type == MSM_STAT_COUNTER || s->type == MSM_STAT_GAUGE)) {
        sb_str(b, s->name);
        sb_put(b, ": ", 2);
        sb_u64(b, msm_stat_value(s));
        sb_put(b, "\n", 1);
    } else if (pass == 2 && s->type == MSM_STAT_HISTOGRAM) {
        text_histogram(b, q, s);
    }
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

struct json_state {
    bool started, first, any_hist;
};

/* One stat of JSON pass <pass>: text readouts, then counters and gauges, then histograms. */
static void json_item(struct sb *b, struct json_state *js, struct msm_stat *s, int pass)
{
    bool text = s->type == MSM_STAT_TEXT;
    if (pass < 2) {
        if (s->type == MSM_STAT_HISTOGRAM || text != (pass == 0)) {
            return;
        }
        sb_str(b, js->first ? "{\"name\":\"" : ",{\"name\":\"");
        js->first = false;
        sb_json(b, s->name);
        sb_str(b, "\",\"value\":");
        if (text) {
            sb_put(b, "\"", 1);
            sb_json(b, s->text ? s->text : "");
            sb_put(b, "\"", 1);
        } else {
            sb_u64(b, msm_stat_value(s));
        }
        sb_put(b, "}", 1);
        return;
    }
    if (s->type != MSM_STAT_HISTOGRAM) {
        return;
    }
    if (!js->any_hist) {
        sb_str(b, js->first ? "{\"histograms\":{\"supported_quantiles\":["
                            : ",{\"histograms\":{\"supported_quantiles\":[");
        for (size_t k = 0; k < MSM_ARRAY_SIZE(quantiles); k++) {
            if (k) {
                sb_put(b, ",", 1);
            }
            sb_double(b, quantiles[k] * 100);
        }
        sb_str(b, "],\"computed_quantiles\":[");
        js->any_hist = true;
    } else {
        sb_put(b, ",", 1);
    }
    sb_str(b, "{\"name\":\"");
    sb_json(b, s->name);
    sb_str(b, "\",\"values\":[");
    for (size_t k = 0; k < MSM_ARRAY_SIZE(quantiles); k++) {
        sb_str(b, k ? ",{\"interval\":" : "{\"interval\":");
        json_quantile(b, msm_stat_interval_quantile(s, quantiles[k]));
        sb_str(b, ",\"cumulative\":");
        json_quantile(b, msm_stat_quantile(s, quantiles[k]));
        sb_put(b, "}", 1);
    }
    sb_str(b, "]}");
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

/* The regrouping: the select pass gives each selected stat its family (group_assign: hash of
 * the interned name) and its export view, then the families are sorted and each gets its
 * offset, then PLACE (resumable) puts the stats. */
struct grouping {
    size_t i;
    size_t cap, nf, fcap;
    size_t *slots; /* family index + 1, 0 = empty */
    struct family *fam;
    size_t *which; /* family of each selected stat, SIZE_MAX: not exported */
    const struct msm_stat_export **exps; /* export view of each selected stat */
    size_t *rank;  /* next offset of each family */
    struct pitem *items;
    size_t total;
};

static size_t fam_hash(const char *name, int phase, size_t cap)
{
    return (((uintptr_t)name >> 4) * 31 + (size_t)phase) & (cap - 1);
}

static void group_init(struct grouping *g, size_t n)
{
    g->cap = 1024;
    g->fcap = 64;
    g->slots = msm_xcalloc(g->cap, sizeof(*g->slots));
    g->fam = msm_xcalloc(g->fcap, sizeof(*g->fam));
    g->which = msm_xcalloc(n + 1, sizeof(*g->which));
    g->exps = msm_xcalloc(n + 1, sizeof(*g->exps));
}

/* Selected stat <i> is <s>: its export view (computed now if missing) and family. */
static void group_assign(struct grouping *g, size_t i, struct msm_stat *s)
{
    const struct msm_stat_export *e = msm_stat_export(s);
    g->exps[i] = e;
    g->which[i] = SIZE_MAX;
    if (!e->prom_name) {
        return;
    }
    int ph = phase_of(s->type);
    size_t h = fam_hash(e->prom_name, ph, g->cap);
    while (g->slots[h] && (g->fam[g->slots[h] - 1].name != e->prom_name ||
                           g->fam[g->slots[h] - 1].phase != ph)) {
        h = (h + 1) & (g->cap - 1);
    }
    size_t idx;
    if (g->slots[h]) {
        idx = g->slots[h] - 1;
    } else {
        g->fam = msm_xgrow(g->fam, sizeof(*g->fam), &g->fcap, g->nf + 1);
        g->fam[g->nf] = (struct family){.phase = ph, .name = e->prom_name};
        idx = g->nf;
        g->slots[h] = ++g->nf;
        if (g->nf * 2 > g->cap) { /* grow: rebuild the index */
            g->cap *= 2;
            free(g->slots);
            g->slots = msm_xcalloc(g->cap, sizeof(*g->slots));
            for (size_t f = 0; f < g->nf; f++) {
                size_t k = fam_hash(g->fam[f].name, g->fam[f].phase, g->cap);
                while (g->slots[k]) {
                    k = (k + 1) & (g->cap - 1);
                }
                g->slots[k] = f + 1;
            }
        }
    }
    g->which[i] = idx;
    g->fam[idx].count++;
}

/* Sort the families, then give each its offset. */
static void group_offsets(struct grouping *g)
{
    g->rank = msm_xcalloc(g->nf + 1, sizeof(*g->rank));
    struct family *sorted = msm_xcalloc(g->nf + 1, sizeof(*sorted));
    memcpy(sorted, g->fam, g->nf * sizeof(*g->fam));
    for (size_t f = 0; f < g->nf; f++) {
        sorted[f].at = f; /* remember the unsorted index */
    }
    qsort(sorted, g->nf, sizeof(*sorted), by_family);
    g->total = 0;
    for (size_t f = 0; f < g->nf; f++) {
        g->rank[sorted[f].at] = g->total;
        g->total += sorted[f].count;
    }
    free(sorted);
    g->items = msm_xcalloc(g->total + 1, sizeof(*g->items));
}

/* Place about <chunk> stats per time check (after group_offsets); true when done. */
static bool group_step(struct grouping *g, const struct sel *sl, size_t chunk, double t0)
{
    while (g->i < sl->n) {
        size_t end = sl->n - g->i > chunk ? g->i + chunk : sl->n;
        for (; g->i < end; g->i++) {
            if (g->which[g->i] != SIZE_MAX) {
                size_t at = g->rank[g->which[g->i]]++;
                g->items[at].s = sl->v[g->i];
                g->items[at].e = g->exps[g->i];
            }
        }
        if (now_ms() - t0 > MSM_SR_STEP_MS) {
            return false;
        }
    }
    return true;
}

/* Release the scratch arrays; the items stay (*<items>, *<n>) once done. */
static void group_free(struct grouping *g)
{
    free(g->rank);
    free(g->exps);
    free(g->which);
    free(g->fam);
    free(g->slots);
    free(g->items);
    memset(g, 0, sizeof(*g));
}

/* Each bucket's bound as the end of its line's labels: <bound>"} */
#define LE_MAX 40
static char le_tails[MSM_HIST_BUCKETS][LE_MAX];
static size_t le_lens[MSM_HIST_BUCKETS];

/* <name><suffix>{<labels>} <v> */
static char *prom_line(char *p, const struct msm_stat_export *e, const char *suffix, size_t sl,
                       uint64_t v)
{
    p = put(p, e->prom_name, e->prom_name_len);
    p = put(p, suffix, sl);
    *p++ = '{';
    p = put(p, e->prom_labels, e->prom_labels_len);
    *p++ = '}';
    *p++ = ' ';
    p += msm_fmt_u64(p, v);
    *p++ = '\n';
    return p;
}

/* The bucket lines share their start (<name>_bucket{<labels>,le=") : written once, then copied
 * from the first line. */
static void prom_histogram(struct sb *b, const struct pitem *it)
{
    const struct msm_stat_export *e = it->e;
    uint64_t cum[MSM_HIST_BUCKETS], count, sum;
    msm_stat_hist_snapshot(it->s, cum, &count, &sum);
    size_t line = e->prom_name_len + e->prom_labels_len + 16;
    char *p = sb_room(b, (MSM_HIST_BUCKETS + 3) * (line + LE_MAX + 24));
    char *first = p;
    p = put(p, e->prom_name, e->prom_name_len);
    p = put(p, "_bucket{", 8);
    p = put(p, e->prom_labels, e->prom_labels_len);
    if (e->prom_labels_len) {
        *p++ = ',';
    }
    p = put(p, "le=\"", 4);
    size_t pre = (size_t)(p - first);
    for (int i = 0; i < MSM_HIST_BUCKETS; i++) {
        if (i) {
            p = put(p, first, pre);
        }
        p = put(p, le_tails[i], le_lens[i]);
        p += msm_fmt_u64(p, cum[i]);
        *p++ = '\n';
    }
    p = put(p, first, pre);
    p = put(p, "+Inf\"} ", 7);
    p += msm_fmt_u64(p, count);
    *p++ = '\n';
    p = prom_line(p, e, "_sum", 4, sum);
    p = prom_line(p, e, "_count", 6, count);
    sb_done(b, p);
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

static void le_init(void)
{
    if (!le_lens[0]) {
        for (int i = 0; i < MSM_HIST_BUCKETS; i++) {
            int k = fmt_double(le_tails[i], LE_MAX - 4, msm_hist_bounds[i]);
            memcpy(le_tails[i] + k, "\"} ", 3);
            le_lens[i] = (size_t)k + 3;
        }
    }
}

/* Item <i> of the grouped list; returns 1 when it opened a family. */
static size_t prom_item(struct sb *b, const struct pitem *items, size_t i)
{
    const struct pitem *it = &items[i];
    size_t fam = 0;
    if (i == 0 || phase_of(items[i - 1].s->type) != phase_of(it->s->type) ||
        items[i - 1].e->prom_name != it->e->prom_name) {
        sb_str(b, "# TYPE ");
        sb_str(b, it->e->prom_name);
        sb_put(b, " ", 1);
        sb_str(b, type_word(it->s->type));
        sb_put(b, "\n", 1);
        fam = 1;
    }
    switch (it->s->type) {
    case MSM_STAT_HISTOGRAM: prom_histogram(b, it); break;
    case MSM_STAT_TEXT: prom_text_readout(b, it); break;
    default: {
        char *p = sb_room(b, it->e->prom_name_len + it->e->prom_labels_len + 32);
        sb_done(b, prom_line(p, it->e, "", 0, msm_stat_value(it->s)));
        break;
    }
    }
    return fam;
}

/* ---- the resumable render ------------------------------------------------------------------- */

enum step {
    ST_LIST = 0,   /* take the snapshot (the store's cached name order) */
    ST_SORT = 1,   /* sort it when the cache was stale */
    ST_SELECT = 2, /* apply the query; Prometheus: export views (tag extraction) and families */
    ST_GROUP = 3,  /* Prometheus: regroup by family */
    ST_EMIT = 4,
    ST_DONE = 5,
};

struct msm_stats_render {
    struct msm_stats_store *st;
    struct msm_stats_query q;
    enum msm_sr_format fmt;
    enum step step;
    struct sel sl;
    struct msm_sort sort;
    struct msm_sort_item *keys; /* the snapshot while it is sorted */
    bool prefetched; /* waiting for the store's sort thread (msm_stats_order_prefetch) */
    bool no_prefetch;
    uint64_t gen; /* store generation the snapshot was taken at */
    size_t i;     /* cursor in the current step */
    int pass;     /* text/JSON: which pass of ST_EMIT */
    struct json_state js;
    struct grouping g;
    struct pitem *items; /* borrowed from <g> */
    size_t n_items, families;
    struct sb b;
};

struct msm_stats_render *msm_stats_render_new(struct msm_stats_store *st,
                                              const struct msm_stats_query *q,
                                              enum msm_sr_format fmt)
{
    le_init();
    struct msm_stats_render *r = MSM_NEW(struct msm_stats_render);
    r->st = st;
    r->q = *q;
    if (fmt == MSM_SR_FMT_PROMETHEUS && !r->q.text_readouts) {
        r->q.types &= ~MSM_SR_TEXT;
    }
    r->fmt = fmt;
    r->js.first = true;
    r->b.cap = SB_FLUSH + 4096;
    r->b.p = msm_xmalloc(r->b.cap);
    return r;
}

void msm_stats_render_free(struct msm_stats_render *r)
{
    if (!r) {
        return;
    }
    if (r->step == ST_SORT && !r->prefetched) {
        msm_sort_abandon(&r->sort);
    }
    free(r->keys);
    group_free(&r->g);
    sel_free(&r->sl);
    free(r->b.p);
    free(r);
}

size_t msm_stats_render_families(const struct msm_stats_render *r)
{
    return r->families;
}

/* Wait up to ~MSM_SR_STEP_MS for the store's thread to sort the name order. True when the
 * order is there (<r->sl.all>). */
static bool prefetch_wait(struct msm_stats_render *r, double t0)
{
    double left = MSM_SR_STEP_MS - (now_ms() - t0);
    msm_stats_order_wait(r->st, left > 1 ? left : 1);
    r->sl.all = msm_stats_order_get(r->st, MSM_STATS_ORDER_NAME, msm_stats_cmp_name,
                                    &r->sl.n_all, &r->gen);
    return r->sl.all != NULL;
}

/* Preparation steps: each does at most ~MSM_SR_STEP_MS of work (unbounded with <unbounded>). */
static void prepare(struct msm_stats_render *r, bool unbounded)
{
    double t0 = now_ms();
    size_t chunk = unbounded ? SIZE_MAX : 2048;
    switch (r->step) {
    case ST_LIST:
        r->sl.all = msm_stats_order_get(r->st, MSM_STATS_ORDER_NAME, msm_stats_cmp_name,
                                        &r->sl.n_all, &r->gen);
        if (r->sl.all) {
            r->step = ST_SELECT;
            break;
        }
        if (!unbounded && !r->no_prefetch &&
            msm_stats_order_prefetch(r->st, r->fmt == MSM_SR_FMT_PROMETHEUS)) {
            r->prefetched = true;
            r->step = ST_SORT;
            break;
        }
        r->sl.all = msm_stats_list_all(r->st, false, false, &r->sl.n_all);
        r->keys = msm_xcalloc(r->sl.n_all + 1, sizeof(*r->keys));
        for (size_t i = 0; i < r->sl.n_all; i++) {
            r->keys[i] = (struct msm_sort_item){.key = r->sl.all[i]->name, .val = r->sl.all[i]};
        }
        msm_sort_init(&r->sort, r->keys, r->sl.n_all);
        r->step = ST_SORT;
        break;
    case ST_SORT:
        if (r->prefetched) {
            /* The main thread would idle while the store's thread sorts: compute export views
             * meanwhile, in hash-slot order (msm_stats_prewarm). Both later export passes (this
             * render's from the start of the order, the thread's from its end) skip them. */
            while (r->fmt == MSM_SR_FMT_PROMETHEUS && msm_stats_order_pending(r->st) &&
                   !msm_stats_order_sorted(r->st) && now_ms() - t0 < MSM_SR_STEP_MS &&
                   msm_stats_prewarm(r->st, MSM_SR_WARM_STEP)) {
            }
            if (prefetch_wait(r, t0)) {
                r->prefetched = false;
                r->step = ST_SELECT;
            } else if (!msm_stats_order_pending(r->st)) {
                /* Its result was stale (stats came or went): sort a snapshot here, as a store
                 * that keeps changing could otherwise keep the thread sorting forever. */
                r->prefetched = false;
                r->no_prefetch = true;
                r->step = ST_LIST;
            }
            break;
        }
        if (!msm_sort_step(&r->sort, unbounded ? SIZE_MAX : MSM_SR_SORT_STEP)) {
            for (size_t i = 0; i < r->sl.n_all; i++) {
                r->sl.all[i] = r->keys[i].val;
            }
            free(r->keys);
            r->keys = NULL;
            msm_stats_order_put(r->st, MSM_STATS_ORDER_NAME, msm_stats_cmp_name, r->gen,
                                r->sl.all, r->sl.n_all);
            r->step = ST_SELECT;
        }
        break;
    case ST_SELECT: {
        bool prom = r->fmt == MSM_SR_FMT_PROMETHEUS;
        if (!r->sl.v) {
            r->sl.v = msm_xcalloc(r->sl.n_all + 1, sizeof(*r->sl.v));
            r->sl.md = r->q.filter ? pcre2_match_data_create_from_pattern(r->q.filter, NULL)
                                   : NULL;
            if (prom) {
                group_init(&r->g, r->sl.n_all);
            }
        }
        /* One pass: each stat (two cache lines) and its view are read once, prefetched. */
        while (r->i < r->sl.n_all) {
            size_t end = r->sl.n_all - r->i > chunk ? r->i + chunk : r->sl.n_all;
            for (; r->i < end; r->i++) {
                if (r->i + SEL_AHEAD < r->sl.n_all) {
                    struct msm_stat *a = r->sl.all[r->i + SEL_AHEAD];
                    __builtin_prefetch(a);
                    __builtin_prefetch(&a->exp);
                    /* the view of one whose line came meanwhile */
                    a = r->sl.all[r->i + SEL_AHEAD / 2];
                    __builtin_prefetch(atomic_load_explicit(&a->exp, memory_order_relaxed));
                }
                struct msm_stat *s = r->sl.all[r->i];
                if (wanted(&r->q, &r->sl, s)) {
                    if (prom) {
                        group_assign(&r->g, r->sl.n, s);
                    }
                    r->sl.v[r->sl.n++] = s;
                }
            }
            if (now_ms() - t0 > MSM_SR_STEP_MS) {
                return;
            }
        }
        r->i = 0;
        if (prom) {
            msm_stats_order_release(r->st); /* the views are all there: end the store's thread */
            group_offsets(&r->g);
        }
        r->step = prom ? ST_GROUP : ST_EMIT;
        break;
    }
    case ST_GROUP:
        if (group_step(&r->g, &r->sl, chunk, t0)) {
            r->items = r->g.items;
            r->n_items = r->g.total;
            r->step = ST_EMIT;
        }
        break;
    default: break;
    }
}

/* Emit until <out> got about <hint> more bytes; true when the body is complete. */
static bool emit(struct msm_stats_render *r, struct msm_buf *out, size_t hint)
{
    struct sb *b = &r->b;
    size_t start = out->len;
#define FULL() (out->len - start + b->len >= hint)
    switch (r->fmt) {
    case MSM_SR_FMT_TEXT:
        for (; r->pass < 3; r->pass++, r->i = 0) {
            for (; r->i < r->sl.n; r->i++) {
                if (FULL()) {
                    return false;
                }
                text_item(b, &r->q, r->sl.v[r->i], r->pass);
            }
        }
        return true;
    case MSM_SR_FMT_JSON:
        if (!r->js.started) {
            sb_str(b, "{\"stats\":[");
            r->js.started = true;
        }
        for (; r->pass < 3; r->pass++, r->i = 0) {
            for (; r->i < r->sl.n; r->i++) {
                if (FULL()) {
                    return false;
                }
                json_item(b, &r->js, r->sl.v[r->i], r->pass);
            }
        }
        if (r->js.any_hist) {
            sb_str(b, "]}}");
        }
        sb_str(b, "]}\n");
        return true;
    case MSM_SR_FMT_PROMETHEUS:
        for (; r->i < r->n_items; r->i++) {
            if (FULL()) {
                return false;
            }
            if (r->i + SEL_AHEAD < r->n_items) {
                __builtin_prefetch(r->items[r->i + SEL_AHEAD].s);
                __builtin_prefetch(r->items[r->i + SEL_AHEAD].e);
            }
            r->families += prom_item(b, r->items, r->i);
        }
        return true;
    }
#undef FULL
    return true;
}

bool msm_stats_render_next(struct msm_stats_render *r, struct msm_buf *out, size_t hint)
{
    bool unbounded = hint == SIZE_MAX;
    while (r->step < ST_EMIT) {
        prepare(r, unbounded);
        if (!unbounded && r->step < ST_EMIT) {
            return true; /* one bounded preparation step per call */
        }
    }
    if (r->step == ST_DONE) {
        return false;
    }
    r->b.out = out;
    bool done = emit(r, out, hint);
    sb_flush(&r->b);
    if (done) {
        r->step = ST_DONE;
    }
    return !done;
}

static size_t render_all(struct msm_stats_store *st, const struct msm_stats_query *q,
                         enum msm_sr_format fmt, struct msm_buf *out)
{
    struct msm_stats_render *r = msm_stats_render_new(st, q, fmt);
    while (msm_stats_render_next(r, out, SIZE_MAX)) {
    }
    size_t families = r->families;
    msm_stats_render_free(r);
    return families;
}

void msm_stats_render_text(struct msm_stats_store *st, const struct msm_stats_query *q,
                           struct msm_buf *out)
{
    render_all(st, q, MSM_SR_FMT_TEXT, out);
}

void msm_stats_render_json(struct msm_stats_store *st, const struct msm_stats_query *q,
                           struct msm_buf *out)
{
    render_all(st, q, MSM_SR_FMT_JSON, out);
}

size_t msm_stats_render_prometheus(struct msm_stats_store *st, const struct msm_stats_query *q,
                                   struct msm_buf *out)
{
    return render_all(st, q, MSM_SR_FMT_PROMETHEUS, out);
}
