#include "upstream/lb/hash_lb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <xxhash.h>

#include "common/alloc.h"
#include "net/address.h"
#include "upstream/cluster.h"

/* The key Envoy hashes for a host: its address string ("10.0.0.1:80"), or the hostname when
 * the host has one (DNS clusters). */
static void host_key(const struct msm_host *h, char *buf, size_t n)
{
    if (h->hostname && h->hostname[0]) {
        snprintf(buf, n, "%s:%u", h->hostname, msm_address_port(&h->addr));
    } else {
        msm_address_str(&h->addr, buf, n);
    }
}

struct point {
    uint64_t hash;
    uint32_t host;
};

static int by_hash(const void *a, const void *b)
{
    const struct point *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash;
}

struct msm_ring *msm_ring_new(const struct msm_host_set *hs, uint64_t min_size, uint64_t max_size)
{
    struct msm_ring *r = MSM_NEW(struct msm_ring);
    if (!hs->n) {
        return r;
    }
    /* Each host gets a share of the ring proportional to its weight, at least one point; the
     * ring is at least min_size points and at most max_size. */
    double total = (double)hs->total_weight;
    double scale = (double)min_size / total;
    uint64_t target = min_size;
    uint64_t min_w = UINT64_MAX;
    for (int i = 0; i < hs->n; i++) {
        min_w = hs->hosts[i]->weight < min_w ? hs->hosts[i]->weight : min_w;
    }
    if (scale * (double)min_w < 1.0) {
        scale = 1.0 / (double)min_w;
        target = (uint64_t)(scale * total);
    }
    if (target > max_size) {
        scale = (double)max_size / total;
    }
    size_t cap = 0;
    struct point *pts = NULL;
    size_t np = 0;
    char key[MSM_ADDRSTRLEN + 32];
    for (int i = 0; i < hs->n; i++) {
        char base[MSM_ADDRSTRLEN + 8];
        host_key(hs->hosts[i], base, sizeof(base));
        uint64_t count = (uint64_t)(scale * hs->hosts[i]->weight + 0.5);
        if (count < 1) {
            count = 1;
        }
        for (uint64_t k = 0; k < count; k++) {
            int len = snprintf(key, sizeof(key), "%s_%llu", base, (unsigned long long)k);
            pts = msm_xgrow(pts, sizeof(*pts), &cap, np + 1);
            pts[np].hash = XXH64(key, (size_t)len, 0);
            pts[np].host = (uint32_t)i;
            np++;
        }
    }
    qsort(pts, np, sizeof(*pts), by_hash);
    r->n = (uint32_t)np;
    r->hash = msm_xcalloc(np, sizeof(uint64_t));
    r->host = msm_xcalloc(np, sizeof(uint32_t));
    for (size_t i = 0; i < np; i++) {
        r->hash[i] = pts[i].hash;
        r->host[i] = pts[i].host;
    }
    free(pts);
    return r;
}

void msm_ring_free(struct msm_ring *r)
{
    if (!r) {
        return;
    }
    free(r->hash);
    free(r->host);
    free(r);
}

int msm_ring_pick(const struct msm_ring *r, uint64_t hash, uint32_t attempt)
{
    if (!r->n) {
        return -1;
    }
    /* First point at or after the hash, wrapping around. */
    uint32_t lo = 0, hi = r->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->hash[mid] < hash) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    uint32_t i = lo == r->n ? 0 : lo;
    if (attempt) {
        i = (uint32_t)(((uint64_t)i + attempt) % r->n);
    }
    return (int)r->host[i];
}

static bool is_prime(uint64_t n)
{
    if (n < 2) {
        return false;
    }
    for (uint64_t d = 2; d * d <= n; d++) {
        if (n % d == 0) {
            return false;
        }
    }
    return true;
}

/* Maglev (Eisenbud et al., NSDI 2016) with weights as in Envoy: hosts take turns filling their
 * next preferred empty slot, a host with more weight taking proportionally more turns. */
struct msm_maglev *msm_maglev_new(const struct msm_host_set *hs, uint64_t table_size)
{
    struct msm_maglev *m = MSM_NEW(struct msm_maglev);
    while (!is_prime(table_size)) {
        table_size++;
    }
    m->size = (uint32_t)table_size;
    if (!hs->n) {
        return m;
    }
    uint32_t M = m->size;
    m->table = msm_xmalloc((size_t)M * sizeof(uint32_t));
    for (uint32_t i = 0; i < M; i++) {
        m->table[i] = UINT32_MAX;
    }
    int n = hs->n;
    uint64_t *offset = msm_xcalloc((size_t)n, sizeof(uint64_t));
    uint64_t *skip = msm_xcalloc((size_t)n, sizeof(uint64_t));
    uint64_t *next = msm_xcalloc((size_t)n, sizeof(uint64_t));
    double *target = msm_xcalloc((size_t)n, sizeof(double));
    uint32_t maxw = 0;
    for (int i = 0; i < n; i++) {
        char key[MSM_ADDRSTRLEN + 8];
        host_key(hs->hosts[i], key, sizeof(key));
        offset[i] = XXH64(key, strlen(key), 0) % M;
        skip[i] = XXH64(key, strlen(key), 1) % (M - 1) + 1;
        maxw = hs->hosts[i]->weight > maxw ? hs->hosts[i]->weight : maxw;
    }
    uint32_t filled = 0;
    while (filled < M) {
        for (int i = 0; i < n && filled < M; i++) {
            /* Weighted turns: the heaviest host fills a slot every round, a host with half its
             * weight every other round. */
            target[i] += (double)hs->hosts[i]->weight / maxw;
            if (target[i] < 1.0) {
                continue;
            }
            target[i] -= 1.0;
            uint64_t c;
            do {
                c = (offset[i] + next[i] * skip[i]) % M;
                next[i]++;
            } while (m->table[c] != UINT32_MAX);
            m->table[c] = (uint32_t)i;
            filled++;
        }
    }
    free(offset);
    free(skip);
    free(next);
    free(target);
    return m;
}

void msm_maglev_free(struct msm_maglev *m)
{
    if (!m) {
        return;
    }
    free(m->table);
    free(m);
}

int msm_maglev_pick(const struct msm_maglev *m, uint64_t hash, uint32_t attempt)
{
    if (!m->table) {
        return -1;
    }
    if (attempt) {
        hash ^= ~0ull - attempt + 1; /* many bits change: retries spread over hosts */
    }
    return (int)m->table[hash % m->size];
}

bool msm_lb_hash_ip(const struct msm_address *a, uint64_t *out)
{
    if (a->sa.ss_family != AF_INET && a->sa.ss_family != AF_INET6) {
        return false;
    }
    char ip[MSM_ADDRSTRLEN];
    msm_address_ip_str(a, ip, sizeof(ip));
    uint64_t h = XXH64(ip, strlen(ip), 0);
    *out = h ? h : 1;
    return true;
}
