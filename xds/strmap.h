#pragma once
/* A string-keyed hash map (open addressing, linear probing, backward-shift deletion) for the
 * xDS client's name sets: interest sets, resource versions, per-name subscriptions. Keys are
 * copied and owned by the map; values are opaque (the owner frees them). Not thread-safe: each
 * map belongs to one thread. */
#include <stdbool.h>
#include <stddef.h>

struct msm_strmap_slot {
    char *key; /* NULL = empty */
    void *val;
    size_t hash;
};

struct msm_strmap {
    struct msm_strmap_slot *slots;
    size_t cap; /* power of two or 0 */
    size_t n;
};

/* A zeroed struct is an empty map; msm_strmap_init is the same. */
void msm_strmap_init(struct msm_strmap *m);
/* Free the keys and the table (values are the caller's: free them first with an iteration). */
void msm_strmap_deinit(struct msm_strmap *m);
/* Pointer to the value slot of <key>, or NULL when absent. */
void **msm_strmap_find(const struct msm_strmap *m, const char *key);
static inline bool msm_strmap_has(const struct msm_strmap *m, const char *key)
{
    return msm_strmap_find(m, key) != NULL;
}
/* Insert <key> (copied) with <val> if absent; returns the value slot either way and sets
 * <*added> (may be NULL) to whether it was inserted. */
void **msm_strmap_put(struct msm_strmap *m, const char *key, void *val, bool *added);
/* Remove <key>; returns its value (NULL when absent) through <*val> (may be NULL) and whether
 * it was present. */
bool msm_strmap_del(struct msm_strmap *m, const char *key, void **val);
/* Iteration: for (size_t i = 0; msm_strmap_next(m, &i, &k, &v);) { ... }. Do not insert or
 * delete while iterating. */
bool msm_strmap_next(const struct msm_strmap *m, size_t *pos, const char **key, void **val);
/* The keys, sorted (strcmp), in a new array of borrowed pointers (free() the array only). */
const char **msm_strmap_sorted_keys(const struct msm_strmap *m);
