/* Resumable merge sort (see sort.h). */
#include "stats/sort.h"

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
