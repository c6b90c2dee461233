/* Priority levels, localities, panic mode: see priority.h. */
#include "upstream/priority.h"

#include <stdlib.h>
#include <string.h>

#include "envoy/config/endpoint/v3/endpoint.pb-c.h"

#include "common/alloc.h"
#include "config/pbutil.h"
#include "upstream/cluster.h"
#include "upstream/lb/hash_lb.h"

/* Bumped on every host health change anywhere; a level state computed at an older value is
 * stale. Starts at 1: a state's epoch 0 means "never computed with live health". */
static atomic_uint health_epoch = 1;

void msm_health_changed(void)
{
    atomic_fetch_add_explicit(&health_epoch, 1, memory_order_release);
}

/* ---- the computation ------------------------------------------------------------------------ */

static uint32_t availability(uint64_t part, uint64_t total, uint32_t overprov)
{
    if (!total) {
        return 0;
    }
    uint64_t a = (uint64_t)overprov * part / total;
    return a > 100 ? 100 : (uint32_t)a;
}

static bool level_in_panic(const struct msm_prio_health *h, uint32_t threshold)
{
    if (!threshold) {
        return false;
    }
    if (!h->hosts) {
        return true;
    }
    /* By host count, whatever weighted_priority_health says (as Envoy). */
    double pct = 100.0 * (double)h->healthy / (double)h->hosts +
                 100.0 * (double)h->degraded / (double)h->hosts;
    return pct < (double)threshold;
}

/* Give each level up to its share of <*left>, in level order; returns the first level with
 * availability (-1 if none). */
static int distribute(const uint32_t *avail, int n, uint32_t norm, uint32_t *load, uint32_t *left)
{
    int first = -1;
    for (int i = 0; i < n; i++) {
        if (first < 0 && avail[i] > 0) {
            first = i;
        }
        uint32_t share = avail[i] * 100 / norm;
        load[i] = share < *left ? share : *left;
        *left -= load[i];
    }
    return first;
}

void msm_prio_loads(const struct msm_prio_health *lv, int n, uint32_t overprov,
                    uint32_t panic_threshold, uint32_t *healthy_load, uint32_t *degraded_load,
                    bool *panic)
{
    uint32_t health[MSM_PRIO_MAX_LEVELS], degraded[MSM_PRIO_MAX_LEVELS];
    uint64_t sum = 0, hosts = 0;
    if (n > MSM_PRIO_MAX_LEVELS) {
        n = MSM_PRIO_MAX_LEVELS;
    }
    for (int i = 0; i < n; i++) {
        healthy_load[i] = degraded_load[i] = 0;
        panic[i] = false;
        /* Availability is by weight when weighted_priority_health is on: the caller fills
         * total/healthy_w/degraded_w accordingly. */
        health[i] = availability(lv[i].healthy_w, lv[i].total_w, overprov);
        degraded[i] = availability(lv[i].degraded_w, lv[i].total_w, overprov);
        sum += health[i] + degraded[i];
        hosts += lv[i].hosts;
    }
    if (!n) {
        return;
    }
    uint32_t norm = sum > 100 ? 100 : (uint32_t)sum;
    if (norm == 0) {
        if (!panic_threshold || !hosts) {
            /* Nothing available and panic disabled (or no host at all): P0 takes the load and
             * finds no host. */
            healthy_load[0] = 100;
            for (int i = 0; i < n && panic_threshold; i++) {
                panic[i] = true;
            }
            return;
        }
        /* Total panic: every level in panic, load split by host count. */
        uint32_t left = 100;
        int first = -1;
        for (int i = 0; i < n; i++) {
            panic[i] = true;
            healthy_load[i] = (uint32_t)(100 * lv[i].hosts / hosts);
            left -= healthy_load[i];
            if (first < 0 && lv[i].hosts) {
                first = i;
            }
        }
        healthy_load[first] += left;
        return;
    }
    for (int i = 0; i < n; i++) {
        panic[i] = norm < 100 && level_in_panic(&lv[i], panic_threshold);
    }
    uint32_t left = 100;
    int first_h = distribute(health, n, norm, healthy_load, &left);
    int first_d = distribute(degraded, n, norm, degraded_load, &left);
    if (left) {
        if (first_h >= 0) {
            healthy_load[first_h] += left;
        } else if (first_d >= 0) {
            degraded_load[first_d] += left;
        }
    }
}

uint64_t msm_locality_effective_weight(uint32_t weight, uint64_t eligible, uint64_t total,
                                       uint32_t overprov)
{
    if (!weight || !total) {
        return 0;
    }
    uint64_t a = (uint64_t)overprov * eligible * 100 / total; /* 1/10000 */
    if (a > 10000) {
        a = 10000;
    }
    return (uint64_t)weight * a;
}

/* ---- topology from a ClusterLoadAssignment -------------------------------------------------- */

static uint8_t health_of(Envoy__Config__Core__V3__HealthStatus s)
{
    switch (s) {
    case ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNKNOWN:
    case ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY:
        return MSM_HOST_HEALTHY;
    case ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DEGRADED:
        return MSM_HOST_DEGRADED;
    default:
        return MSM_HOST_UNHEALTHY;
    }
}

int msm_topology_from_cla(const void *proto, struct msm_topology *t, int *n, struct msm_err *err)
{
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla = proto;
    memset(t, 0, sizeof(*t));
    *n = 0;
    t->overprov = 140;
    if (cla->policy) {
        if (cla->policy->overprovisioning_factor) {
            t->overprov = cla->policy->overprovisioning_factor->value;
            if (!t->overprov) {
                return msm_err_set(err, "policy.overprovisioning_factor: must be > 0");
            }
        }
        t->weighted_health = cla->policy->weighted_priority_health;
    }
    size_t total = 0;
    for (size_t i = 0; i < cla->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *l = cla->endpoints[i];
        if (l->priority >= MSM_PRIO_MAX_LEVELS) {
            return msm_err_set(err, "endpoints[%zu].priority: %u is above the supported maximum "
                                    "%d", i, l->priority, MSM_PRIO_MAX_LEVELS - 1);
        }
        if (l->load_balancing_weight && !l->load_balancing_weight->value) {
            return msm_err_set(err, "endpoints[%zu].load_balancing_weight: must be >= 1", i);
        }
        total += l->n_lb_endpoints;
    }
    if (total > 1000000) {
        return msm_err_set(err, "too many endpoints (%zu)", total);
    }
    t->attr = msm_xcalloc(total + 1, sizeof(*t->attr));
    t->loc_weight = msm_xcalloc(cla->n_endpoints + 1, sizeof(uint32_t));
    t->n_loc = (int)cla->n_endpoints;
    int k = 0;
    for (size_t i = 0; i < cla->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *l = cla->endpoints[i];
        t->loc_weight[i] = msm_pb_u32(l->load_balancing_weight, 0);
        for (size_t j = 0; j < l->n_lb_endpoints; j++) {
            t->attr[k].priority = l->priority;
            t->attr[k].locality = (uint32_t)i;
            t->attr[k].health = health_of(l->lb_endpoints[j]->health_status);
            t->attr[k].eds_status = (uint8_t)l->lb_endpoints[j]->health_status;
            k++;
        }
    }
    *n = k;
    return 0;
}

/* ---- per cluster version -------------------------------------------------------------------- */

struct prio_loc {
    uint32_t weight;
    struct msm_lb_source healthy, degraded;
};

struct prio_level {
    struct msm_lb_source all, healthy, degraded;
    uint8_t *health; /* per host of all.hs, enum msm_host_health (EDS) */
    int *loc;        /* per host of all.hs, index into locs (-1 without localities) */
    struct prio_loc *locs;
    int n_locs;
    atomic_uint_fast64_t *loc_hw, *loc_dw; /* effective weights, per locs */
};

struct msm_prio {
    int n;
    struct prio_level *lv;
    uint32_t overprov, threshold;
    bool weighted, dynamic, hash_lb;
    atomic_uint epoch; /* health_epoch the loads were computed at; 0 = EDS health only */
    atomic_uint_fast64_t recheck_ms; /* an ejection ends then: recompute */
    atomic_flag busy;
    atomic_uint hload[MSM_PRIO_MAX_LEVELS], dload[MSM_PRIO_MAX_LEVELS];
    atomic_bool panic[MSM_PRIO_MAX_LEVELS];
};

static void source_build(struct msm_lb_source *s, struct msm_host **hv, int n,
                         const struct msm_cluster_cfg *cfg, bool tables)
{
    for (int i = 0; i < n; i++) {
        atomic_fetch_add(&hv[i]->refs, 1);
    }
    s->hs = msm_host_set_new(hv, n);
    if (tables && cfg->lb == MSM_LB_RING_HASH) {
        s->ring = msm_ring_new(s->hs, cfg->ring_min, cfg->ring_max);
    } else if (tables && cfg->lb == MSM_LB_MAGLEV) {
        s->maglev = msm_maglev_new(s->hs, cfg->maglev_size);
    }
}

static void source_free(struct msm_lb_source *s)
{
    msm_ring_free(s->ring);
    msm_maglev_free(s->maglev);
    msm_host_set_unref(s->hs);
}

static bool host_up(struct msm_cluster *c, struct msm_host *h, uint64_t now, bool outlier)
{
    return !atomic_load_explicit(&h->hc_unhealthy, memory_order_relaxed) &&
           (!outlier || msm_outlier_host_ok(c, h, now));
}

/* Compute the loads from the EDS health and, with <c>, the live health of every host. */
static void compute(struct msm_prio *p, struct msm_cluster *c)
{
    unsigned epoch = atomic_load_explicit(&health_epoch, memory_order_acquire);
    bool outlier = c && c->cfg->outlier.enabled;
    uint64_t now = c ? msm_mono_ms() : 0, recheck = UINT64_MAX;
    struct msm_prio_health hl[MSM_PRIO_MAX_LEVELS];
    for (int i = 0; i < p->n; i++) {
        struct prio_level *lv = &p->lv[i];
        struct msm_prio_health *ph = &hl[i];
        memset(ph, 0, sizeof(*ph));
        uint64_t *lt = lv->n_locs ? msm_xcalloc((size_t)lv->n_locs * 3, sizeof(uint64_t)) : NULL;
        for (int k = 0; k < lv->all.hs->n; k++) {
            struct msm_host *h = lv->all.hs->hosts[k];
            uint8_t st = lv->health[k];
            if (c && !host_up(c, h, now, outlier)) {
                st = MSM_HOST_UNHEALTHY;
                uint64_t until = atomic_load_explicit(&h->ejected_until, memory_order_relaxed);
                if (outlier && until > now && until < recheck) {
                    recheck = until;
                }
            }
            uint64_t w = p->weighted ? h->weight : 1;
            ph->hosts++;
            ph->total_w += w;
            ph->healthy += st == MSM_HOST_HEALTHY;
            ph->degraded += st == MSM_HOST_DEGRADED;
            ph->healthy_w += st == MSM_HOST_HEALTHY ? w : 0;
            ph->degraded_w += st == MSM_HOST_DEGRADED ? w : 0;
            if (lt && lv->loc[k] >= 0) {
                uint64_t *x = &lt[lv->loc[k] * 3];
                x[0]++;
                x[1] += st == MSM_HOST_HEALTHY;
                x[2] += st == MSM_HOST_DEGRADED;
            }
        }
        for (int l = 0; l < lv->n_locs; l++) {
            uint64_t *x = &lt[l * 3];
            atomic_store_explicit(&lv->loc_hw[l],
                                  msm_locality_effective_weight(lv->locs[l].weight, x[1], x[0],
                                                                p->overprov),
                                  memory_order_relaxed);
            atomic_store_explicit(&lv->loc_dw[l],
                                  msm_locality_effective_weight(lv->locs[l].weight, x[2], x[0],
                                                                p->overprov),
                                  memory_order_relaxed);
        }
        free(lt);
    }
    uint32_t h[MSM_PRIO_MAX_LEVELS], d[MSM_PRIO_MAX_LEVELS];
    bool pn[MSM_PRIO_MAX_LEVELS];
    msm_prio_loads(hl, p->n, p->overprov, p->threshold, h, d, pn);
    for (int i = 0; i < p->n; i++) {
        atomic_store_explicit(&p->hload[i], h[i], memory_order_relaxed);
        atomic_store_explicit(&p->dload[i], d[i], memory_order_relaxed);
        atomic_store_explicit(&p->panic[i], pn[i], memory_order_relaxed);
    }
    atomic_store_explicit(&p->recheck_ms, recheck, memory_order_relaxed);
    atomic_store_explicit(&p->epoch, c ? epoch : 0, memory_order_release);
}

/* Recompute when a health change happened since, or an ejection has run out. One worker at a
 * time; the others use the previous loads meanwhile. */
static void refresh(struct msm_prio *p, struct msm_cluster *c)
{
    if (!p->dynamic) {
        return;
    }
    unsigned e = atomic_load_explicit(&health_epoch, memory_order_acquire);
    if (atomic_load_explicit(&p->epoch, memory_order_acquire) == e) {
        uint64_t r = atomic_load_explicit(&p->recheck_ms, memory_order_relaxed);
        if (r == UINT64_MAX || msm_mono_ms() < r) {
            return;
        }
    }
    if (atomic_flag_test_and_set_explicit(&p->busy, memory_order_acquire)) {
        return;
    }
    compute(p, c);
    atomic_flag_clear_explicit(&p->busy, memory_order_release);
}

struct msm_prio *msm_prio_new(const struct msm_cluster_cfg *cfg, struct msm_host_set *hs)
{
    const struct msm_topology *t = &hs->topo;
    bool dynamic = cfg->outlier.enabled || cfg->hc;
    bool hash_lb = cfg->lb == MSM_LB_RING_HASH || cfg->lb == MSM_LB_MAGLEV;
    uint32_t maxp = 0;
    bool all_healthy = true;
    for (int i = 0; t->attr && i < hs->n; i++) {
        maxp = t->attr[i].priority > maxp ? t->attr[i].priority : maxp;
        all_healthy = all_healthy && t->attr[i].health == MSM_HOST_HEALTHY;
    }
    /* Locality weights apply to the non-hash policies (ring hash and maglev build over the
     * level's hosts by host weight). */
    bool localities = cfg->locality_weighted && !hash_lb && t->attr && t->n_loc > 1;
    if (!hs->n || (maxp == 0 && all_healthy && !dynamic && !localities)) {
        return NULL;
    }
    struct msm_prio *p = MSM_NEW(struct msm_prio);
    p->n = (int)maxp + 1;
    p->lv = msm_xcalloc((size_t)p->n, sizeof(*p->lv));
    p->overprov = t->attr ? t->overprov : 140;
    p->weighted = t->weighted_health;
    p->threshold = (uint32_t)cfg->panic_threshold;
    p->dynamic = dynamic;
    p->hash_lb = hash_lb;
    atomic_flag_clear(&p->busy);
    struct msm_host **all = msm_xcalloc((size_t)hs->n, sizeof(*all));
    struct msm_host **hv = msm_xcalloc((size_t)hs->n, sizeof(*hv));
    struct msm_host **dv = msm_xcalloc((size_t)hs->n, sizeof(*dv));
    int *gloc = msm_xcalloc((size_t)hs->n, sizeof(int));
    for (int l = 0; l < p->n; l++) {
        struct prio_level *lv = &p->lv[l];
        int na = 0, nh = 0, nd = 0;
        lv->health = msm_xcalloc((size_t)hs->n + 1, 1);
        lv->loc = msm_xcalloc((size_t)hs->n + 1, sizeof(int));
        for (int i = 0; i < hs->n; i++) {
            struct msm_host_attr a = t->attr ? t->attr[i] : (struct msm_host_attr){0};
            if (a.priority != (uint32_t)l) {
                continue;
            }
            lv->health[na] = a.health;
            gloc[na] = (int)a.locality;
            all[na++] = hs->hosts[i];
            if (a.health == MSM_HOST_HEALTHY) {
                hv[nh++] = hs->hosts[i];
            } else if (a.health == MSM_HOST_DEGRADED) {
                dv[nd++] = hs->hosts[i];
            }
        }
        source_build(&lv->all, all, na, cfg, hash_lb);
        source_build(&lv->healthy, hv, nh, cfg, hash_lb);
        source_build(&lv->degraded, dv, nd, cfg, hash_lb && nd);
        /* Localities of this level, in assignment order. */
        for (int k = 0; k < na; k++) {
            lv->loc[k] = -1;
        }
        if (!localities) {
            continue;
        }
        int *map = msm_xcalloc((size_t)t->n_loc, sizeof(int));
        for (int k = 0; k < na; k++) {
            if (!map[gloc[k]]) {
                map[gloc[k]] = ++lv->n_locs;
            }
            lv->loc[k] = map[gloc[k]] - 1;
        }
        lv->locs = msm_xcalloc((size_t)lv->n_locs + 1, sizeof(*lv->locs));
        lv->loc_hw = msm_xcalloc((size_t)lv->n_locs + 1, sizeof(*lv->loc_hw));
        lv->loc_dw = msm_xcalloc((size_t)lv->n_locs + 1, sizeof(*lv->loc_dw));
        for (int g = 0; g < t->n_loc; g++) {
            if (!map[g]) {
                continue;
            }
            struct prio_loc *pl = &lv->locs[map[g] - 1];
            pl->weight = t->loc_weight[g];
            nh = nd = 0;
            for (int k = 0; k < na; k++) {
                if (gloc[k] != g) {
                    continue;
                }
                if (lv->health[k] == MSM_HOST_HEALTHY) {
                    hv[nh++] = all[k];
                } else if (lv->health[k] == MSM_HOST_DEGRADED) {
                    dv[nd++] = all[k];
                }
            }
            source_build(&pl->healthy, hv, nh, cfg, false);
            source_build(&pl->degraded, dv, nd, cfg, false);
        }
        free(map);
    }
    free(all);
    free(hv);
    free(dv);
    free(gloc);
    compute(p, NULL);
    if (!dynamic) {
        atomic_store(&p->epoch, 1);
    }
    return p;
}

void msm_prio_free(struct msm_prio *p)
{
    if (!p) {
        return;
    }
    for (int l = 0; l < p->n; l++) {
        struct prio_level *lv = &p->lv[l];
        source_free(&lv->all);
        source_free(&lv->healthy);
        source_free(&lv->degraded);
        for (int k = 0; k < lv->n_locs; k++) {
            source_free(&lv->locs[k].healthy);
            source_free(&lv->locs[k].degraded);
        }
        free(lv->locs);
        free(lv->loc_hw);
        free(lv->loc_dw);
        free(lv->health);
        free(lv->loc);
    }
    free(p->lv);
    free(p);
}

/* A locality of <lv> by effective weight; -1 when none has any (use the whole level). */
static int pick_locality(struct prio_level *lv, bool degraded)
{
    atomic_uint_fast64_t *w = degraded ? lv->loc_dw : lv->loc_hw;
    uint64_t sum = 0;
    for (int i = 0; i < lv->n_locs; i++) {
        sum += atomic_load_explicit(&w[i], memory_order_relaxed);
    }
    if (!sum) {
        return -1;
    }
    uint64_t r = msm_random() % sum;
    for (int i = 0; i < lv->n_locs; i++) {
        uint64_t x = atomic_load_explicit(&w[i], memory_order_relaxed);
        if (r < x) {
            return i;
        }
        r -= x;
    }
    return lv->n_locs - 1;
}

static int index_in(const struct msm_host_set *hs, const struct msm_host *h)
{
    for (int i = 0; i < hs->n; i++) {
        if (hs->hosts[i] == h) {
            return i;
        }
    }
    return 0;
}

struct msm_host *msm_prio_choose(struct msm_cluster *c, uint64_t hash, uint32_t attempt)
{
    struct msm_prio *p = c->prio;
    refresh(p, c);
    bool use_hash = p->hash_lb && hash;
    uint64_t x = (use_hash ? hash : msm_random()) % 100;
    int level = -1;
    bool degraded = false;
    uint64_t acc = 0;
    for (int i = 0; i < p->n && level < 0; i++) {
        acc += atomic_load_explicit(&p->hload[i], memory_order_relaxed);
        if (x < acc) {
            level = i;
        }
    }
    for (int i = 0; i < p->n && level < 0; i++) {
        acc += atomic_load_explicit(&p->dload[i], memory_order_relaxed);
        if (x < acc) {
            level = i;
            degraded = true;
        }
    }
    if (level < 0) {
        level = 0; /* loads being rewritten by another worker */
    }
    struct prio_level *lv = &p->lv[level];
    bool panic = atomic_load_explicit(&p->panic[level], memory_order_relaxed);
    const struct msm_lb_source *src;
    if (panic) {
        msm_stat_inc(c->sh->stats.lb_healthy_panic);
        src = &lv->all;
    } else {
        src = degraded ? &lv->degraded : &lv->healthy;
        int l = lv->n_locs ? pick_locality(lv, degraded) : -1;
        if (l >= 0) {
            src = degraded ? &lv->locs[l].degraded : &lv->locs[l].healthy;
        }
    }
    struct msm_host *h = msm_lb_pick_in(c, src, use_hash ? hash : 0, attempt);
    if (!h || panic || !p->dynamic) {
        return h;
    }
    /* The loads say this source has live hosts; skip the ones that went down since. A hash
     * keeps its key: walk on to the next host instead of re-hashing. */
    bool outlier = c->cfg->outlier.enabled;
    uint64_t now = msm_mono_ms();
    int n = src->hs->n;
    for (int i = 0; i < n; i++) {
        if (host_up(c, h, now, outlier)) {
            return h;
        }
        h = use_hash ? src->hs->hosts[(index_in(src->hs, h) + 1) % n]
                     : msm_lb_pick_in(c, src, 0, 0);
    }
    if (!p->threshold) {
        return NULL;
    }
    msm_stat_inc(c->sh->stats.lb_healthy_panic);
    return h;
}

int msm_prio_state(struct msm_cluster *c, uint32_t *healthy_load, uint32_t *degraded_load,
                   bool *panic, int max)
{
    struct msm_prio *p = c->prio;
    if (!p) {
        if (max > 0) {
            healthy_load[0] = 100;
            degraded_load[0] = 0;
            panic[0] = false;
        }
        return 1;
    }
    refresh(p, c);
    int n = p->n < max ? p->n : max;
    for (int i = 0; i < n; i++) {
        healthy_load[i] = atomic_load(&p->hload[i]);
        degraded_load[i] = atomic_load(&p->dload[i]);
        panic[i] = atomic_load(&p->panic[i]);
    }
    return n;
}
