#include "xds/strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/alloc.h"

void msm_strmap_init(struct msm_strmap *m)
{
    memset(m, 0, sizeof(*m));
}

void msm_strmap_deinit(struct msm_strmap *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->slots[i].key);
    }
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static size_t hash_str(const char *s)
{
    return (size_t)XXH3_64bits(s, strlen(s));
}

/* Index of <key>'s slot, or of the empty slot where it would go. */
static size_t probe(const struct msm_strmap *m, const char *key, size_t h)
{
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].key && (m->slots[i].hash != h || strcmp(m->slots[i].key, key) != 0)) {
        i = (i + 1) & mask;
    }
    return i;
}

void **msm_strmap_find(const struct msm_strmap *m, const char *key)
{
    if (!m->n) {
        return NULL;
    }
    size_t i = probe(m, key, hash_str(key));
    return m->slots[i].key ? &m->slots[i].val : NULL;
}

static void grow(struct msm_strmap *m)
{
    struct msm_strmap_slot *old = m->slots;
    size_t ocap = m->cap;
    m->cap = ocap ? ocap * 2 : 16;
    m->slots = msm_xcalloc(m->cap, sizeof(*m->slots));
    for (size_t i = 0; i < ocap; i++) {
        if (old[i].key) {
            size_t j = probe(m, old[i].key, old[i].hash);
            m->slots[j] = old[i];
        }
    }
    free(old);
}

void **msm_strmap_put(struct msm_strmap *m, const char *key, void *val, bool *added)
{
    /* Load factor at most 3/4: probes stay short (each slot keeps its key's hash, compared
     * first), and a 10k-name map takes 16k slots, not 32k (a dozen such maps per sidecar). */
    if ((m->n + 1) * 4 > m->cap * 3) {
        grow(m);
    }
    size_t h = hash_str(key);
    size_t i = probe(m, key, h);
    if (added) {
        *added = !m->slots[i].key;
    }
    if (!m->slots[i].key) {
        m->slots[i].key = msm_xstrdup(key);
        m->slots[i].val = val;
        m->slots[i].hash = h;
        m->n++;
    }
    return &m->slots[i].val;
}

bool msm_strmap_del(struct msm_strmap *m, const char *key, void **val)
{
    if (!m->n) {
        return false;
    }
    size_t mask = m->cap - 1;
    size_t i = probe(m, key, hash_str(key));
    if (!m->slots[i].key) {
        return false;
    }
    if (val) {
        *val = m->slots[i].val;
    }
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->n--;
    /* Backward-shift: move later entries of the cluster into the hole when their home slot
     * does not lie cyclically in (hole, j]. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            m->slots[hole] = m->slots[j];
            m->slots[j].key = NULL;
            hole = j;
        }
    }
    return true;
}

bool msm_strmap_next(const struct msm_strmap *m, size_t *pos, const char **key, void **val)
{
    while (*pos < m->cap) {
        size_t i = (*pos)++;
        if (m->slots[i].key) {
            if (key) {
                *key = m->slots[i].key;
            }
            if (val) {
                *val = m->slots[i].val;
            }
            return true;
        }
    }
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char **msm_strmap_sorted_keys(const struct msm_strmap *m)
{
    const char **v = msm_xcalloc(m->n + 1, sizeof(*v));
    size_t k = 0;
    const char *key;
    for (size_t i = 0; msm_strmap_next(m, &i, &key, NULL);) {
        v[k++] = key;
    }
    qsort(v, k, sizeof(*v), cmp_str);
    return v;
}
