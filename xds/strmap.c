#include "xds/strmap.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/alloc.h"

static size_t hash_str(const char *s)
{
    return (size_t)XXH3_64bits(s, strlen(s));
}

/* ---- interned names ---------------------------------------------------------------------- */

/* One distinct name: its references, its hash and its bytes (the same malloc size class as a
 * strdup of names up to ~50 bytes). */
struct iname {
    uint32_t refs; /* under names_mu */
    uint32_t hash; /* hash_str, truncated */
    char s[];
};

/* The pool's slots keep the hash too: probing compares it without reading the names (cache
 * misses at 50k names). */
struct iname_slot {
    struct iname *n; /* NULL = empty */
    uint32_t hash;
};

static pthread_mutex_t names_mu = PTHREAD_MUTEX_INITIALIZER;
static struct iname_slot *names; /* open addressing, linear probing, load <= 3/4 */
static size_t names_cap, names_n;

static struct iname *iname_of(const char *name)
{
    return (struct iname *)(void *)((char *)(uintptr_t)name - offsetof(struct iname, s));
}

static size_t names_probe(const struct iname_slot *t, size_t cap, const char *s, uint32_t h)
{
    size_t mask = cap - 1;
    size_t i = h & mask;
    while (t[i].n && (t[i].hash != h || strcmp(t[i].n->s, s) != 0)) {
        i = (i + 1) & mask;
    }
    return i;
}

static void names_grow(void)
{
    size_t cap = names_cap ? names_cap * 2 : 64;
    struct iname_slot *t = msm_xcalloc(cap, sizeof(*t));
    for (size_t i = 0; i < names_cap; i++) {
        if (names[i].n) {
            t[names_probe(t, cap, names[i].n->s, names[i].hash)] = names[i];
        }
    }
    free(names);
    names = t;
    names_cap = cap;
}

/* <s> with its hash <h> (hash_str). */
static char *intern_h(const char *s, uint32_t h)
{
    pthread_mutex_lock(&names_mu);
    if ((names_n + 1) * 4 > names_cap * 3) {
        names_grow();
    }
    size_t i = names_probe(names, names_cap, s, h);
    struct iname *n = names[i].n;
    if (n) {
        n->refs++;
    } else {
        size_t len = strlen(s);
        n = msm_xmalloc(offsetof(struct iname, s) + len + 1);
        n->refs = 1;
        n->hash = h;
        memcpy(n->s, s, len + 1);
        names[i].n = n;
        names[i].hash = h;
        names_n++;
    }
    pthread_mutex_unlock(&names_mu);
    return n->s;
}

void msm_name_unref(const char *name)
{
    if (!name) {
        return;
    }
    struct iname *n = iname_of(name);
    pthread_mutex_lock(&names_mu);
    if (--n->refs) {
        pthread_mutex_unlock(&names_mu);
        return;
    }
    size_t mask = names_cap - 1;
    size_t i = n->hash & mask;
    while (names[i].n != n) {
        i = (i + 1) & mask;
    }
    names[i].n = NULL;
    names_n--;
    /* Backward-shift deletion, as msm_strmap_del. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; names[j].n; j = (j + 1) & mask) {
        size_t home = names[j].hash & mask;
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            names[hole] = names[j];
            names[j].n = NULL;
            hole = j;
        }
    }
    if (!names_n) {
        free(names);
        names = NULL;
        names_cap = 0;
    }
    pthread_mutex_unlock(&names_mu);
    free(n);
}

char *msm_name_intern(const char *s)
{
    return intern_h(s, (uint32_t)hash_str(s));
}

char *msm_name_ref(const char *name)
{
    struct iname *n = iname_of(name);
    pthread_mutex_lock(&names_mu);
    n->refs++;
    pthread_mutex_unlock(&names_mu);
    return n->s;
}

size_t msm_name_count(void)
{
    pthread_mutex_lock(&names_mu);
    size_t n = names_n;
    pthread_mutex_unlock(&names_mu);
    return n;
}

/* ---- maps -------------------------------------------------------------------------------- */

void msm_strmap_init(struct msm_strmap *m)
{
    memset(m, 0, sizeof(*m));
}

void msm_strmap_init_borrowed(struct msm_strmap *m)
{
    memset(m, 0, sizeof(*m));
    m->borrowed = true;
}

void msm_strmap_deinit(struct msm_strmap *m)
{
    for (size_t i = 0; i < m->cap && !m->borrowed; i++) {
        msm_name_unref(m->slots[i].key);
    }
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

/* Index of <key>'s slot, or of the empty slot where it would go. */
static size_t probe(const struct msm_strmap *m, const char *key, uint32_t h)
{
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    const char *k;
    while ((k = m->slots[i].key) && k != key && (m->slots[i].hash != h || strcmp(k, key) != 0)) {
        i = (i + 1) & mask;
    }
    return i;
}

void **msm_strmap_find(const struct msm_strmap *m, const char *key)
{
    if (!m->n) {
        return NULL;
    }
    size_t i = probe(m, key, (uint32_t)hash_str(key));
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
     * first, without reading the name), and a 10k-name map takes 16k slots, not 32k (a dozen
     * such maps per sidecar). */
    if ((m->n + 1) * 4 > m->cap * 3) {
        grow(m);
    }
    uint32_t h = (uint32_t)hash_str(key);
    size_t i = probe(m, key, h);
    if (added) {
        *added = !m->slots[i].key;
    }
    if (!m->slots[i].key) {
        m->slots[i].key = m->borrowed ? (char *)(uintptr_t)key : intern_h(key, h);
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
    size_t i = probe(m, key, (uint32_t)hash_str(key));
    if (!m->slots[i].key) {
        return false;
    }
    if (val) {
        *val = m->slots[i].val;
    }
    if (!m->borrowed) {
        msm_name_unref(m->slots[i].key);
    }
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
