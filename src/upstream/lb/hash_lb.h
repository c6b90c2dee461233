#pragma once
/* Consistent-hash load balancers, built once per cluster version (immutable, shared by all
 * workers): RING_HASH (Ketama-style ring of xxHash64 points, as Envoy's ring_hash) and MAGLEV
 * (Google's Maglev lookup table, as Envoy's maglev). */
#include <stdbool.h>
#include <stdint.h>

struct msm_host_set;
struct msm_host;
struct msm_address;

/* Envoy's source-IP hash (HTTP and TCP hash policies): XXH64, seed 0, of the IP as text;
 * false for an address that is not IPv4 or IPv6. 0 is given as 1: 0 means "no hash" to the
 * balancers. */
bool msm_lb_hash_ip(const struct msm_address *a, uint64_t *out);

struct msm_ring {
    uint64_t *hash;  /* sorted */
    uint32_t *host;  /* host index for each point */
    uint32_t n;
};

struct msm_maglev {
    uint32_t *table; /* host index per slot */
    uint32_t size;   /* prime */
};

struct msm_ring *msm_ring_new(const struct msm_host_set *hs, uint64_t min_size,
                              uint64_t max_size);
void msm_ring_free(struct msm_ring *r);
/* Host index for <hash>, -1 if empty. <attempt> > 0 (a retry avoiding previous hosts) moves on
 * as Envoy's: the ring <attempt> points further, maglev with the hash's bits flipped. */
int msm_ring_pick(const struct msm_ring *r, uint64_t hash, uint32_t attempt);

struct msm_maglev *msm_maglev_new(const struct msm_host_set *hs, uint64_t table_size);
void msm_maglev_free(struct msm_maglev *m);
int msm_maglev_pick(const struct msm_maglev *m, uint64_t hash, uint32_t attempt);
