#include "upstream/cluster_manager.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "upstream/cluster.h"

struct ep_state {
    struct msm_address *addrs;
    int n;
    bool have;
};

struct cm_entry {
    struct msm_cluster_manager *cm;
    struct msm_cluster_cfg *cfg;
    struct msm_cluster_shared *sh;
    struct msm_cluster *cur;
    bool initialized;
    /* DNS */
    ev_timer refresh;
    struct ep_state *eps;
    int pending;
    bool round_failed;
    uint32_t round_ttl;
    uint32_t failures;
};

struct msm_cluster_manager {
    struct ev_loop *loop;
    struct msm_stats_store *st;
    struct msm_dns *dns;
    struct cm_entry **e;
    int n;
    struct msm_cm_stats stats;
    msm_cm_cb *changed;
    void *changed_arg;
    msm_cm_cb *init_done;
    void *init_arg;
    bool started, init_reported, stopping;
};

struct msm_cluster_manager *msm_cm_new(struct ev_loop *loop, struct msm_stats_store *st,
                                       msm_cm_cb *changed, void *arg)
{
    struct msm_cluster_manager *cm = MSM_NEW(struct msm_cluster_manager);
    cm->loop = loop;
    cm->st = st;
    cm->changed = changed;
    cm->changed_arg = arg;
    msm_cm_stats_init(st, "cluster_manager.", &cm->stats);
    return cm;
}

static void entry_free(struct cm_entry *e)
{
    if (e->cm->loop) {
        ev_timer_stop(e->cm->loop, &e->refresh);
    }
    if (e->eps) {
        for (int i = 0; i < e->cfg->n_dns_eps; i++) {
            free(e->eps[i].addrs);
        }
        free(e->eps);
    }
    msm_cluster_unref(e->cur);
    msm_cluster_shared_unref(e->sh);
    msm_cluster_cfg_unref(e->cfg);
    free(e);
}

void msm_cm_free(struct msm_cluster_manager *cm)
{
    if (!cm) {
        return;
    }
    cm->stopping = true;
    msm_dns_free(cm->dns);
    for (int i = 0; i < cm->n; i++) {
        entry_free(cm->e[i]);
    }
    free(cm->e);
    msm_cm_stats_deinit(&cm->stats);
    free(cm);
}

int msm_cm_count(const struct msm_cluster_manager *cm)
{
    return cm->n;
}

static void publish(struct cm_entry *e, struct msm_host_set *hs)
{
    struct msm_cluster *old = e->cur;
    e->cur = msm_cluster_new(e->cfg, e->sh, hs);
    msm_host_set_unref(hs);
    msm_cluster_unref(old);
    uint64_t healthy = (uint64_t)e->cur->hosts->n;
    msm_stat_set(e->sh->stats.membership_total, healthy);
    msm_stat_set(e->sh->stats.membership_healthy, healthy);
    uint32_t maxw = 0;
    for (int i = 0; i < hs->n; i++) {
        maxw = hs->hosts[i]->weight > maxw ? hs->hosts[i]->weight : maxw;
    }
    msm_stat_set(e->sh->stats.max_host_weight, maxw);
}

static void check_init(struct msm_cluster_manager *cm)
{
    if (!cm->started || cm->init_reported) {
        return;
    }
    int warming = 0;
    for (int i = 0; i < cm->n; i++) {
        warming += !cm->e[i]->initialized;
    }
    msm_stat_set(cm->stats.warming_clusters, (uint64_t)warming);
    msm_stat_set(cm->stats.active_clusters, (uint64_t)(cm->n - warming));
    if (!warming) {
        cm->init_reported = true;
        if (cm->init_done) {
            cm->init_done(cm->init_arg);
        }
    }
}

/* Reuse host objects that stay (their live counters matter to least-request). */
static struct msm_host *find_host(const struct msm_host_set *hs, const struct msm_address *a,
                                  uint32_t w)
{
    for (int i = 0; hs && i < hs->n; i++) {
        if (hs->hosts[i]->weight == w && msm_address_eq(&hs->hosts[i]->addr, a)) {
            atomic_fetch_add(&hs->hosts[i]->refs, 1);
            return hs->hosts[i];
        }
    }
    return NULL;
}

static void dns_round(struct cm_entry *e);

static void schedule_refresh(struct cm_entry *e)
{
    const struct msm_cluster_cfg *c = e->cfg;
    double ms = c->dns_refresh_ms;
    if (e->round_failed) {
        /* Exponential backoff from the failure base, capped, with jitter. */
        double b = c->dns_failure_refresh_base_ms;
        for (uint32_t i = 1; i < e->failures && b < c->dns_failure_refresh_max_ms; i++) {
            b *= 2;
        }
        if (b > c->dns_failure_refresh_max_ms) {
            b = c->dns_failure_refresh_max_ms;
        }
        ms = b * (0.5 + (double)(msm_random() % 1000) / 2000.0);
    } else if (c->respect_dns_ttl && e->round_ttl > 0) {
        ms = e->round_ttl * 1000.0;
    }
    ev_timer_stop(e->cm->loop, &e->refresh);
    ev_timer_set(&e->refresh, ms / 1000.0, 0);
    ev_timer_start(e->cm->loop, &e->refresh);
}

static void round_done(struct cm_entry *e)
{
    const struct msm_cluster_cfg *c = e->cfg;
    struct msm_cluster_stats *cs = &e->sh->stats;
    if (e->round_failed) {
        msm_stat_inc(cs->update_failure);
        e->failures++;
    } else {
        msm_stat_inc(cs->update_success);
        e->failures = 0;
    }
    /* Build the new host set from every endpoint that has an answer (failed endpoints keep
     * their last good answer, as Envoy's resolve targets do). */
    int total = 0;
    for (int i = 0; i < c->n_dns_eps; i++) {
        total += e->eps[i].have ? e->eps[i].n : 0;
    }
    if (c->type == MSM_CLUSTER_LOGICAL_DNS && total > 1) {
        total = 1;
    }
    struct msm_host **hv = msm_xcalloc((size_t)(total + 1), sizeof(*hv));
    int k = 0;
    for (int i = 0; i < c->n_dns_eps && k < total; i++) {
        for (int j = 0; e->eps[i].have && j < e->eps[i].n && k < total; j++) {
            struct msm_address a = e->eps[i].addrs[j];
            msm_address_set_port(&a, c->dns_eps[i].port);
            struct msm_host *h = find_host(e->cur ? e->cur->hosts : NULL, &a, c->dns_eps[i].weight);
            hv[k++] = h ? h : msm_host_new(&a, c->dns_eps[i].hostname, c->dns_eps[i].weight);
        }
    }
    struct msm_host_set *hs = msm_host_set_new(hv, k);
    free(hv);
    bool changed = !e->cur || !msm_host_set_same(e->cur->hosts, hs);
    if (changed) {
        msm_stat_inc(cs->membership_change);
        if (!k) {
            msm_stat_inc(cs->update_empty);
        }
        publish(e, hs);
        msm_log(MSM_LOG_DEBUG, MSM_LC_UPSTREAM, "cluster '%s': %d host(s) after DNS", c->name, k);
    } else {
        msm_stat_inc(cs->update_no_rebuild);
        msm_host_set_unref(hs);
    }
    bool first = !e->initialized;
    e->initialized = true;
    schedule_refresh(e);
    if (first) {
        check_init(e->cm);
    }
    if (changed && e->cm->init_reported && e->cm->changed) {
        e->cm->changed(e->cm->changed_arg);
    }
}

struct dns_req {
    struct cm_entry *e;
    int ep;
};

static void on_dns(void *arg, int status, const char *errmsg, const struct msm_address *addrs,
                   int n, uint32_t ttl)
{
    struct dns_req *r = arg;
    struct cm_entry *e = r->e;
    struct ep_state *s = &e->eps[r->ep];
    free(r);
    if (e->cm->stopping) {
        return;
    }
    if (status < 0) {
        e->round_failed = true;
        msm_log(MSM_LOG_WARN, MSM_LC_DNS, "cluster '%s': DNS resolution failed: %s",
                e->cfg->name, errmsg ? errmsg : "?");
    } else {
        free(s->addrs);
        s->addrs = msm_xcalloc((size_t)n, sizeof(*s->addrs));
        memcpy(s->addrs, addrs, (size_t)n * sizeof(*addrs));
        s->n = n;
        s->have = true;
        if (ttl && (!e->round_ttl || ttl < e->round_ttl)) {
            e->round_ttl = ttl;
        }
    }
    if (--e->pending == 0) {
        round_done(e);
    }
}

static void dns_round(struct cm_entry *e)
{
    msm_stat_inc(e->sh->stats.update_attempt);
    e->round_failed = false;
    e->round_ttl = 0;
    e->pending = e->cfg->n_dns_eps;
    if (!e->pending) {
        round_done(e);
        return;
    }
    for (int i = 0; i < e->cfg->n_dns_eps; i++) {
        struct dns_req *r = msm_xmalloc(sizeof(*r));
        r->e = e;
        r->ep = i;
        msm_dns_resolve(e->cm->dns, e->cfg->dns_eps[i].hostname, e->cfg->dns_family, on_dns, r);
    }
}

static void on_refresh(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    dns_round(MSM_CONTAINER_OF(w, struct cm_entry, refresh));
}

int msm_cm_add(struct msm_cluster_manager *cm, const void *proto, bool validate_only,
               struct msm_err *err)
{
    struct msm_cluster_cfg *cfg = msm_cluster_cfg_from_proto(proto, validate_only, err);
    if (!cfg) {
        return MSM_EINVAL;
    }
    if (!validate_only && (cfg->type == MSM_CLUSTER_EDS || cfg->type == MSM_CLUSTER_ORIGINAL_DST)) {
        msm_err_set(err, "cluster '%s': %s clusters are not supported yet", cfg->name,
                    cfg->type == MSM_CLUSTER_EDS ? "EDS" : "ORIGINAL_DST");
        msm_cluster_cfg_unref(cfg);
        return MSM_EUNSUPPORTED;
    }
    for (int i = 0; i < cm->n; i++) {
        if (!strcmp(cm->e[i]->cfg->name, cfg->name)) {
            msm_err_set(err, "cluster manager: duplicate cluster '%s' found", cfg->name);
            msm_cluster_cfg_unref(cfg);
            return MSM_EINVAL;
        }
    }
    struct cm_entry *e = MSM_NEW(struct cm_entry);
    e->cm = cm;
    e->cfg = cfg;
    e->sh = msm_cluster_shared_new(cfg, cm->st);
    ev_timer_init(&e->refresh, on_refresh, 0, 0);
    if (cfg->type == MSM_CLUSTER_STATIC || validate_only) {
        struct msm_host **hv = msm_xcalloc((size_t)cfg->n_static + 1, sizeof(*hv));
        for (int i = 0; i < cfg->n_static; i++) {
            hv[i] = msm_host_new(&cfg->static_addrs[i], NULL, cfg->static_weights[i]);
        }
        publish(e, msm_host_set_new(hv, cfg->n_static));
        free(hv);
        e->initialized = true;
    } else {
        e->eps = msm_xcalloc((size_t)cfg->n_dns_eps + 1, sizeof(*e->eps));
        e->cur = msm_cluster_new(cfg, e->sh, msm_host_set_new(NULL, 0));
        /* msm_cluster_new took its own reference to the empty set; drop ours. */
        msm_host_set_unref(e->cur->hosts);
    }
    cm->e = msm_xrealloc(cm->e, (size_t)(cm->n + 1) * sizeof(*cm->e));
    cm->e[cm->n++] = e;
    msm_stat_inc(cm->stats.cluster_added);
    return 0;
}

void msm_cm_start(struct msm_cluster_manager *cm, msm_cm_cb *init_done, void *arg)
{
    cm->init_done = init_done;
    cm->init_arg = arg;
    cm->started = true;
    for (int i = 0; i < cm->n; i++) {
        struct cm_entry *e = cm->e[i];
        if (!e->initialized) {
            if (!cm->dns) {
                cm->dns = msm_dns_new(cm->loop);
            }
            dns_round(e);
        }
    }
    check_init(cm);
}

void msm_cm_fill_snapshot(struct msm_cluster_manager *cm, struct msm_snapshot *s)
{
    for (int i = 0; i < cm->n; i++) {
        msm_snapshot_add_cluster(s, cm->e[i]->cur);
    }
}
