/* Resumable merge sort (see sort.h). */
#include "stats/sort.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

static int by_key(const void *a, const void *b)
{
    return strcmp(((const struct msm_sort_item *)a)->key, ((const struct msm_sort_item *)b)->key);
}

void msm_sort_init(struct msm_sort *s, struct msm_sort_item *v, size_t n)
{
    memset(s, 0, sizeof(*s));
    s->v = v;
    s->n = n;
    s->width = MSM_SORT_RUN;
    s->src = v;
}

void msm_sort_abandon(struct msm_sort *s)
{
    if (s->dst && s->dst != s->v) {
        free(s->dst);
    } else if (s->src != s->v) {
        free(s->src);
    }
    s->src = s->dst = s->v;
}

static size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

bool msm_sort_step(struct msm_sort *s, size_t budget)
{
    size_t work = 0;
    while (s->run_at < s->n) { /* phase 1: sorted runs */
        size_t len = min_sz(MSM_SORT_RUN, s->n - s->run_at);
        qsort(s->v + s->run_at, len, sizeof(*s->v), by_key);
        s->run_at += len;
        work += len;
        if (work >= budget && s->run_at < s->n) {
            return true;
        }
    }
    while (s->width < s->n) { /* phase 2: merge passes, src -> dst */
        if (!s->dst) {
            s->dst = msm_xcalloc(s->n, sizeof(*s->dst));
        }
        while (s->lo < s->n) {
            size_t mid = min_sz(s->lo + s->width, s->n);
            size_t hi = min_sz(s->lo + 2 * s->width, s->n);
            if (!s->merging) {
                s->i = s->lo;
                s->j = mid;
                s->k = s->lo;
                s->merging = true;
            }
            while (s->k < hi) {
                if (s->j >= hi || (s->i < mid && strcmp(s->src[s->i].key, s->src[s->j].key) <= 0)) {
                    s->dst[s->k++] = s->src[s->i++];
                } else {
                    s->dst[s->k++] = s->src[s->j++];
                }
                if (++work >= budget && s->k < hi) {
                    return true;
                }
            }
            s->merging = false;
            s->lo = hi;
        }
        struct msm_sort_item *t = s->src;
        s->src = s->dst;
        s->dst = t;
        s->lo = 0;
        s->width *= 2;
        if (work >= budget && s->width < s->n) {
            return true;
        }
    }
    if (s->src != s->v) {
        memcpy(s->v, s->src, s->n * sizeof(*s->v));
        free(s->src);
    } else {
        free(s->dst);
    }
    s->src = s->dst = s->v;
    return false;
}

/* ---- msm_sort_radix ------------------------------------------------------------------------ */

struct rrec {
    uint64_t k[2]; /* the 16 key bytes at the current depth, big-endian, NUL-padded */
    struct msm_sort_item it;
};

/* Groups up to this size are sorted by insertion. */
#define RADIX_SMALL 48
/* How far ahead the key loads prefetch. */
#define RADIX_AHEAD 16

/* The 8 bytes of <p> (zeros after its end) in <*k>; false if it ends there. */
static bool chunk_at(const unsigned char *p, uint64_t *k)
{
    uint64_t x = 0;
    int i = 0;
    while (i < 8 && p[i]) {
        x = (x << 8) | p[i];
        i++;
    }
    *k = i ? x << (8 * (8 - i)) : 0;
    return i == 8;
}

/* Load the 16 bytes of <r>'s key at <depth> (strlen(key) >= depth): one cache line or two. */
static void load16(struct rrec *r, size_t depth)
{
    const unsigned char *p = (const unsigned char *)r->it.key + depth;
    if (chunk_at(p, &r->k[0])) {
        chunk_at(p + 8, &r->k[1]);
    } else {
        r->k[1] = 0;
    }
}

static bool rrec_gt(const struct rrec *a, const struct rrec *b)
{
    return a->k[0] != b->k[0] ? a->k[0] > b->k[0] : a->k[1] > b->k[1];
}

static bool rrec_eq(const struct rrec *a, const struct rrec *b)
{
    return a->k[0] == b->k[0] && a->k[1] == b->k[1];
}

/* Byte <b> of the 16 (0: the last). */
static unsigned rrec_byte(const struct rrec *r, int b)
{
    return (unsigned)((b < 8 ? r->k[1] >> (8 * b) : r->k[0] >> (8 * (b - 8))) & 0xff);
}

/* Sort <v> (<n> records) by <k>: insertion sort when small, else an LSD radix sort by byte that
 * skips the bytes all records share (ping-pong with <tmp>). */
static void sort_k(struct rrec *v, struct rrec *tmp, size_t n)
{
    if (n <= RADIX_SMALL) {
        for (size_t i = 1; i < n; i++) {
            struct rrec x = v[i];
            size_t j = i;
            while (j > 0 && rrec_gt(&v[j - 1], &x)) {
                v[j] = v[j - 1];
                j--;
            }
            v[j] = x;
        }
        return;
    }
    size_t cnt[16][256];
    memset(cnt, 0, sizeof(cnt));
    for (size_t i = 0; i < n; i++) {
        uint64_t lo = v[i].k[1], hi = v[i].k[0];
        for (int b = 0; b < 8; b++) {
            cnt[b][(lo >> (8 * b)) & 0xff]++;
            cnt[b + 8][(hi >> (8 * b)) & 0xff]++;
        }
    }
    struct rrec *src = v, *dst = tmp;
    for (int b = 0; b < 16; b++) {
        if (cnt[b][rrec_byte(&v[0], b)] == n) {
            continue; /* every record has this byte */
        }
        size_t at = 0;
        for (int d = 0; d < 256; d++) {
            size_t c = cnt[b][d];
            cnt[b][d] = at;
            at += c;
        }
        for (size_t i = 0; i < n; i++) {
            dst[cnt[b][rrec_byte(&src[i], b)]++] = src[i];
        }
        struct rrec *t = src;
        src = dst;
        dst = t;
    }
    if (src != v) {
        memcpy(v, src, n * sizeof(*v));
    }
}

/* Sort <v> (<n> records whose keys are at least <depth> bytes long and equal before it). */
static void radix_group(struct rrec *v, struct rrec *tmp, size_t n, size_t depth)
{
    if (n < 2) {
        return;
    }
    for (;;) {
        bool same = true;
        for (size_t i = 0; i < n; i++) {
            if (i + RADIX_AHEAD < n) { /* the keys are cache misses: have a few under way */
                __builtin_prefetch(v[i + RADIX_AHEAD].it.key + depth);
            }
            load16(&v[i], depth);
            same = same && rrec_eq(&v[i], &v[0]);
        }
        if (!same) {
            break;
        }
        if (!(v[0].k[1] & 0xff)) {
            return; /* all keys end here: equal */
        }
        depth += 16;
    }
    sort_k(v, tmp, n);
    for (size_t a = 0; a < n;) {
        size_t b = a + 1;
        while (b < n && rrec_eq(&v[b], &v[a])) {
            b++;
        }
        if (b - a > 1 && (v[a].k[1] & 0xff)) { /* equal so far and none ended */
            radix_group(v + a, tmp, b - a, depth + 16);
        }
        a = b;
    }
}

void msm_sort_radix(struct msm_sort_item *v, size_t n)
{
    if (n < 2) {
        return;
    }
    struct rrec *r = msm_xcalloc(n, sizeof(*r));
    struct rrec *tmp = msm_xcalloc(n, sizeof(*tmp));
    for (size_t i = 0; i < n; i++) {
        r[i].it = v[i];
    }
    radix_group(r, tmp, n, 0);
    for (size_t i = 0; i < n; i++) {
        v[i] = r[i].it;
    }
    free(tmp);
    free(r);
}
