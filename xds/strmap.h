#pragma once
/* A string-keyed hash map (open addressing, linear probing, backward-shift deletion) for the
 * xDS client's name sets: interest sets, resource versions, per-name subscriptions. Keys are
 * interned (msm_name_intern) and referenced by the map; values are opaque (the owner frees
 * them). Not thread-safe: each map belongs to one thread. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct msm_strmap_slot {
    char *key; /* NULL = empty; interned */
    void *val;
    uint32_t hash; /* the key's (as in its interned name) */
};

struct msm_strmap {
    struct msm_strmap_slot *slots;
    size_t cap; /* power of two or 0 */
    size_t n;
    bool borrowed; /* msm_strmap_init_borrowed */
};

/* Interned names. The xDS client and the cluster manager keep the same 10k resource names in a
 * dozen maps and structs; each distinct string is stored once, refcounted, and every map key
 * is such a reference (msm_strmap_next's keys may be kept with msm_name_ref). Any thread: the
 * pool is one mutex-guarded table. A name is an ordinary NUL-terminated string; only unref it
 * with msm_name_unref, never free(). */
char *msm_name_intern(const char *s);
char *msm_name_ref(const char *name);
void msm_name_unref(const char *name);
/* Distinct names in the pool (tests). */
size_t msm_name_count(void);

/* A zeroed struct is an empty map; msm_strmap_init is the same. */
void msm_strmap_init(struct msm_strmap *m);
/* An empty map whose keys are the callers' pointers, neither copied nor interned: for a set
 * built and dropped within one call (duplicate checks, "keep" sets of a SotW update), whose
 * keys outlive it. msm_strmap_deinit makes it an ordinary empty map. */
void msm_strmap_init_borrowed(struct msm_strmap *m);
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
