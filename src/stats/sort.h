#pragma once
/* A merge sort by string key that runs in bounded steps (the admin API sorts a 500k-stat
 * snapshot by name across main-loop iterations instead of stalling the loop in one qsort):
 * sorted runs of MSM_SORT_RUN items, then bottom-up merge passes that can stop after any item.
 * Items carry their key pointer, so a comparison touches the two strings only (not the objects
 * that own them). Not stable (the stats' names are unique). */
#include <stdbool.h>
#include <stddef.h>

#define MSM_SORT_RUN 1024

struct msm_sort_item {
    const char *key;
    void *val;
};

struct msm_sort {
    struct msm_sort_item *v, *src, *dst;
    size_t n;
    size_t run_at; /* next run to sort (phase 1) */
    size_t width;  /* merge width (phase 2) */
    size_t lo, i, j, k;
    bool merging; /* inside the merge of the block at <lo> */
};

/* Sort <v> (<n> items, owned by the caller) in place by strcmp of their keys. */
void msm_sort_init(struct msm_sort *s, struct msm_sort_item *v, size_t n);
/* Do about <budget> item moves of work; true while unfinished. When it returns false, <v> is
 * sorted and the scratch memory is released. */
bool msm_sort_step(struct msm_sort *s, size_t budget);
/* Release the scratch memory of an unfinished sort (<v> is left in some order). */
void msm_sort_abandon(struct msm_sort *s);

/* Sort <v> (<n> items) by strcmp of their keys in one go, without comparing whole keys: an MSD
 * radix sort on 8-byte big-endian chunks of the keys (levels where a whole group shares the
 * chunk are skipped, as in long common prefixes). Same order as qsort with strcmp (unsigned
 * bytes, a prefix first); items with equal keys end up in some order. Uses ~3 times <n> items
 * of scratch memory for its duration. Touches only <v> and the keys: any thread. */
void msm_sort_radix(struct msm_sort_item *v, size_t n);
