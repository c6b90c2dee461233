#include "upstream/cluster_manager.h"
#include "upstream/packed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <xxhash.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbutil.h"
#include "upstream/cluster.h"
#include "xds/strmap.h"
#include "upstream/priority.h"

struct ep_state {
    struct msm_address *addrs;
    int n;
    bool have;
};

/* One cluster name. <cfg> is the latest accepted config; <cur> the version workers use (it can
 * still carry the previous config while the latest one warms). */
struct cm_entry {
    struct msm_cluster_manager *cm;
    const char *name; /* cfg->name */
    struct msm_cluster_cfg *cfg;
    struct msm_cluster_shared *sh;
    struct msm_cluster *cur;
    bool initialized; /* <cfg> has its first host set */
    bool is_static;
    char *version; /* interned (msm_name_intern), as the service names and the maps' keys */
    double last_updated;
    struct msm_packed proto; /* the Cluster as received (config_dump) */
    uint64_t hash;
    struct msm_hc *hc; /* active health checking of <cur>'s hosts */
    /* Hosts of <cfg> waiting for its TLS secrets (see publish); the entry is warming. */
    struct msm_host_set *held;
    /* DNS */
    ev_timer refresh;
    struct ep_state *eps;
    int pending;
    bool round_failed;
    uint32_t round_ttl;
    uint32_t failures;
    /* Indexes (so that applying N clusters or N assignments is O(N), not O(N^2)): position in
     * cm->e; whether the entry is counted in cm->n_warming (see account); for EDS clusters, the
     * other users of the same service name (list headed in cm->eds_users). */
    int idx;
    bool counted_warming;
    bool eds_linked;
    struct cm_entry *eds_prev, *eds_next;
};

/* An EDS stream subscribed to: <key> the packed api_config_source (NULL = ADS), <src> one of
 * its ConfigSources (to unsubscribe with). */
struct eds_sub {
    uint8_t *key;
    size_t klen;
    uint8_t *src;
    size_t slen;
};

/* The last ClusterLoadAssignment per EDS service name. */
struct eds_cache {
    char *service; /* interned, as <version> */
    struct msm_packed cla;
    char *version;
    double last_updated;
    int idx; /* in cm->eds */
};

struct msm_cluster_manager {
    struct ev_loop *loop;
    struct msm_stats_store *st;
    struct msm_dns *dns;
    struct cm_entry **e;
    int n;
    size_t cap;
    struct msm_strmap by_name; /* cluster name -> struct cm_entry * */
    int n_warming;             /* entries that are warming (kept by account) */
    struct eds_cache **eds;    /* in arrival order (config_dump) */
    int n_eds;
    size_t eds_cap;
    struct msm_strmap eds_by_service; /* service -> struct eds_cache * */
    struct msm_strmap eds_users;      /* service -> first struct cm_entry * using it */
    uint64_t eds_gen, eds_gen_seen;   /* bumped when the set of EDS service names changes */
    struct eds_sub *subs;             /* the groups of the last msm_cm_eds_groups */
    int n_subs;
    struct msm_cm_stats stats;
    struct msm_packed_kind clusters_kind, cla_kind; /* references of the kept bytes */
    msm_cm_cb *changed;
    void *changed_arg;
    msm_cm_cb *init_done;
    void *init_arg;
    bool started, init_reported, stopping;
};

static double wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

void msm_strv_free(char **v, int n)
{
    for (int i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

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

static void entry_stop_dns(struct cm_entry *e)
{
    if (e->cm->loop) {
        ev_timer_stop(e->cm->loop, &e->refresh);
    }
    if (e->eps) {
        for (int i = 0; i < e->cfg->n_dns_eps; i++) {
            free(e->eps[i].addrs);
        }
        free(e->eps);
        e->eps = NULL;
    }
}

static const char *eds_name(const struct cm_entry *e);

/* Keep cm->n_warming in step with the entry's state; call after changing <initialized> or
 * <held>. */
static void account(struct cm_entry *e)
{
    bool w = !e->initialized || e->held;
    if (w != e->counted_warming) {
        e->cm->n_warming += w ? 1 : -1;
        e->counted_warming = w;
    }
}

static void eds_link(struct cm_entry *e)
{
    if (e->cfg->type != MSM_CLUSTER_EDS) {
        return;
    }
    bool added;
    void **slot = msm_strmap_put(&e->cm->eds_users, eds_name(e), e, &added);
    if (added) {
        e->cm->eds_gen++;
    } else {
        struct cm_entry *head = *slot;
        e->eds_next = head;
        head->eds_prev = e;
        *slot = e;
    }
    e->eds_linked = true;
}

static void eds_unlink(struct cm_entry *e)
{
    if (!e->eds_linked) {
        return;
    }
    if (e->eds_prev) {
        e->eds_prev->eds_next = e->eds_next;
    } else if (e->eds_next) {
        *msm_strmap_find(&e->cm->eds_users, eds_name(e)) = e->eds_next;
    } else {
        msm_strmap_del(&e->cm->eds_users, eds_name(e), NULL);
        e->cm->eds_gen++;
    }
    if (e->eds_next) {
        e->eds_next->eds_prev = e->eds_prev;
    }
    e->eds_prev = e->eds_next = NULL;
    e->eds_linked = false;
}

/* The EDS clusters using <service> (a list through eds_next). */
static struct cm_entry *eds_users(const struct msm_cluster_manager *cm, const char *service)
{
    void **slot = msm_strmap_find(&cm->eds_users, service);
    return slot ? *slot : NULL;
}

static void entry_free(struct cm_entry *e)
{
    if (e->counted_warming) {
        e->cm->n_warming--;
        e->counted_warming = false;
    }
    eds_unlink(e);
    entry_stop_dns(e);
    msm_hc_free(e->hc);
    msm_host_set_unref(e->held);
    msm_cluster_unref(e->cur);
    msm_cluster_shared_unref(e->sh);
    msm_cluster_cfg_unref(e->cfg);
    msm_name_unref(e->version);
    msm_packed_clear(&e->proto);
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
    for (int i = 0; i < cm->n_eds; i++) {
        msm_name_unref(cm->eds[i]->service);
        msm_packed_clear(&cm->eds[i]->cla);
        msm_name_unref(cm->eds[i]->version);
        free(cm->eds[i]);
    }
    free(cm->eds);
    msm_packed_kind_deinit(&cm->clusters_kind);
    msm_packed_kind_deinit(&cm->cla_kind);
    msm_strmap_deinit(&cm->by_name);
    msm_strmap_deinit(&cm->eds_by_service);
    msm_strmap_deinit(&cm->eds_users);
    for (int i = 0; i < cm->n_subs; i++) {
        free(cm->subs[i].key);
        free(cm->subs[i].src);
    }
    free(cm->subs);
    msm_cm_stats_deinit(&cm->stats);
    free(cm);
}

int msm_cm_count(const struct msm_cluster_manager *cm)
{
    return cm->n;
}

int msm_cm_warming(const struct msm_cluster_manager *cm)
{
    return cm->n_warming;
}

static void update_gauges(struct msm_cluster_manager *cm)
{
    int warming = msm_cm_warming(cm);
    msm_stat_set(cm->stats.warming_clusters, (uint64_t)warming);
    msm_stat_set(cm->stats.active_clusters, (uint64_t)(cm->n - warming));
}

/* Install <hs> (reference taken over) as the hosts of the entry's latest config. A config whose
 * TLS contexts wait for SDS secrets is held back (the previous version, if any, keeps serving)
 * until msm_cm_secrets_changed finds it warm. */
static void publish(struct cm_entry *e, struct msm_host_set *hs)
{
    if (!msm_cluster_cfg_warm(e->cfg)) {
        msm_host_set_unref(e->held);
        e->held = hs;
        account(e);
        return;
    }
    struct msm_cluster *old = e->cur;
    e->cur = msm_cluster_new(e->cfg, e->sh, hs);
    msm_host_set_unref(hs);
    msm_cluster_unref(old);
    int healthy = 0;
    uint32_t maxw = 0;
    for (int i = 0; i < hs->n; i++) {
        maxw = hs->hosts[i]->weight > maxw ? hs->hosts[i]->weight : maxw;
    }
    int degraded = 0;
    for (int i = 0; i < hs->n; i++) {
        uint8_t st = hs->topo.attr ? hs->topo.attr[i].health : MSM_HOST_HEALTHY;
        healthy += st == MSM_HOST_HEALTHY;
        degraded += st == MSM_HOST_DEGRADED;
    }
    msm_stat_set(e->sh->stats.membership_total, (uint64_t)(hs->n + hs->n_excluded));
    msm_stat_set(e->sh->stats.membership_healthy, (uint64_t)healthy);
    msm_stat_set(e->sh->stats.membership_degraded, (uint64_t)degraded);
    msm_stat_set(e->sh->stats.membership_excluded, (uint64_t)hs->n_excluded);
    msm_stat_set(e->sh->stats.max_host_weight, maxw);
    if (e->cfg->hc && e->cm->loop) {
        if (!e->hc) {
            bool was = msm_stats_sink_rejected(true);
            e->hc = msm_hc_new(e->cm->loop, e->cfg->hc, e->cfg->stat_name, e->cm->st);
            msm_stats_sink_rejected(was);
        }
        msm_hc_set_hosts(e->hc, hs);
    }
}

static void check_init(struct msm_cluster_manager *cm)
{
    update_gauges(cm);
    if (!cm->started || cm->init_reported) {
        return;
    }
    if (!msm_cm_warming(cm)) {
        cm->init_reported = true;
        if (cm->init_done) {
            cm->init_done(cm->init_arg);
        }
    }
}

/* Mark warm; tell the server when this happened asynchronously. */
static void warmed(struct cm_entry *e, bool async_change)
{
    bool first = !e->initialized;
    e->initialized = true;
    account(e);
    struct msm_cluster_manager *cm = e->cm;
    if (first) {
        check_init(cm);
    }
    if ((first || async_change) && cm->init_reported && cm->changed) {
        cm->changed(cm->changed_arg);
    }
}

/* Reuse host objects that stay (their live counters matter to least-request); a host whose
 * transport socket match labels changed is a new host. */
static struct msm_host *find_host(const struct msm_host_set *hs, const struct msm_address *a,
                                  uint32_t w, const struct msm_tsm_meta *m)
{
    uint64_t mh = m ? m->hash : 0;
    for (int i = 0; hs && i < hs->n; i++) {
        if (hs->hosts[i]->weight == w && msm_address_eq(&hs->hosts[i]->addr, a) &&
            msm_host_tsm_hash(hs->hosts[i]) == mh) {
            atomic_fetch_add(&hs->hosts[i]->refs, 1);
            return hs->hosts[i];
        }
    }
    return NULL;
}

/* A host for endpoint <a> with labels <m> (copied): reused from <hs> or new. */
static struct msm_host *get_host(const struct msm_host_set *hs, const struct msm_address *a,
                                 const char *hostname, uint32_t w, const struct msm_tsm_meta *m)
{
    struct msm_host *h = find_host(hs, a, w, m);
    if (!h) {
        h = msm_host_new(a, hostname, w);
        msm_host_set_tsm(h, msm_tsm_meta_copy(m));
    }
    return h;
}

/* ---- DNS ---------------------------------------------------------------------------------- */

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
    /* Failed endpoints keep their last good answer, as Envoy's resolve targets do. */
    int total = 0;
    for (int i = 0; i < c->n_dns_eps; i++) {
        total += e->eps[i].have ? e->eps[i].n : 0;
    }
    if (c->type == MSM_CLUSTER_LOGICAL_DNS && total > 1) {
        total = 1;
    }
    struct msm_host **hv = msm_xcalloc((size_t)(total + 1), sizeof(*hv));
    int k = 0;
    bool same_cfg = e->cur && e->cur->cfg == e->cfg;
    for (int i = 0; i < c->n_dns_eps && k < total; i++) {
        for (int j = 0; e->eps[i].have && j < e->eps[i].n && k < total; j++) {
            struct msm_address a = e->eps[i].addrs[j];
            msm_address_set_port(&a, c->dns_eps[i].port);
            hv[k++] = get_host(e->cur ? e->cur->hosts : NULL, &a, c->dns_eps[i].hostname,
                               c->dns_eps[i].weight, c->dns_eps[i].meta);
        }
    }
    struct msm_host_set *hs = msm_host_set_new(hv, k);
    free(hv);
    bool changed = !same_cfg || !msm_host_set_same(e->cur->hosts, hs);
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
    schedule_refresh(e);
    warmed(e, changed);
}

/* An outstanding query. It names its cluster instead of pointing at the entry, which may be
 * replaced or removed while the query is out; <cfg> (referenced) identifies the round's config
 * so replies for a replaced config are dropped. */
struct dns_req {
    struct msm_cluster_manager *cm;
    char *name;
    struct msm_cluster_cfg *cfg;
    int ep;
};

static struct cm_entry *find_entry(const struct msm_cluster_manager *cm, const char *name, int *idx)
{
    void **slot = msm_strmap_find(&cm->by_name, name);
    if (!slot) {
        return NULL;
    }
    struct cm_entry *e = *slot;
    if (idx) {
        *idx = e->idx;
    }
    return e;
}

static void on_dns(void *arg, int status, const char *errmsg, const struct msm_address *addrs,
                   int n, uint32_t ttl)
{
    struct dns_req *r = arg;
    struct msm_cluster_cfg *cfg = r->cfg;
    struct msm_cluster_manager *cm = r->cm;
    struct cm_entry *e = cm->stopping ? NULL : find_entry(cm, r->name, NULL);
    int ep = r->ep;
    free(r->name);
    free(r);
    bool live = e && e->cfg == cfg && e->eps;
    msm_cluster_cfg_unref(cfg);
    if (!live) {
        return;
    }
    struct ep_state *s = &e->eps[ep];
    if (status < 0) {
        e->round_failed = true;
        msm_log(MSM_LOG_WARN, MSM_LC_DNS, "cluster '%s': DNS resolution failed: %s", e->name,
                errmsg ? errmsg : "?");
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
    if (!e->cm->dns) {
        e->cm->dns = msm_dns_new(e->cm->loop);
    }
    for (int i = 0; i < e->cfg->n_dns_eps; i++) {
        struct dns_req *r = msm_xmalloc(sizeof(*r));
        r->cm = e->cm;
        r->name = msm_xstrdup(e->name);
        r->cfg = e->cfg;
        atomic_fetch_add(&e->cfg->refs, 1);
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

/* ---- EDS ---------------------------------------------------------------------------------- */

/* Hosts from a ClusterLoadAssignment: every endpoint of every priority, with its priority,
 * locality and EDS health as the set's topology; the load balancer spreads load over the
 * levels and localities (upstream/priority.c). */
static int hosts_from_cla(struct cm_entry *e, const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla,
                          struct msm_host_set **out, struct msm_err *err)
{
    struct msm_topology topo;
    int total = 0;
    if (msm_topology_from_cla(cla, &topo, &total, err) < 0) {
        return MSM_EINVAL;
    }
    struct msm_host **hv = msm_xcalloc((size_t)total + 1, sizeof(*hv));
    int k = 0;
    struct msm_tsm_meta *prev = NULL; /* endpoints of a service mostly share their labels */
    for (size_t i = 0; i < cla->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *l = cla->endpoints[i];
        for (size_t j = 0; j < l->n_lb_endpoints; j++) {
            const Envoy__Config__Endpoint__V3__LbEndpoint *lb = l->lb_endpoints[j];
            struct msm_address a;
            if (lb->host_identifier_case !=
                ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT) {
                msm_err_set(err, "endpoints[%zu].lb_endpoints[%zu]: endpoint_name is not "
                                 "supported", i, j);
            } else if (msm_pb_address(lb->endpoint->address, &a, err) < 0) {
                msm_err_prefix(err, "endpoints[%zu].lb_endpoints[%zu].endpoint.address", i, j);
            } else {
                uint32_t w = msm_pb_u32(lb->load_balancing_weight, 1);
                struct msm_tsm_meta *m = msm_tsm_meta_from_proto(lb->metadata, l->metadata);
                if (m && prev && msm_tsm_meta_eq(m, prev)) {
                    msm_tsm_meta_free(m);
                    m = msm_tsm_meta_copy(prev);
                }
                hv[k++] = get_host(e->cur ? e->cur->hosts : NULL, &a, lb->endpoint->hostname,
                                   w ? w : 1, m);
                msm_tsm_meta_free(prev);
                prev = m;
                continue;
            }
            for (int x = 0; x < k; x++) {
                msm_host_unref(hv[x]);
            }
            free(hv);
            msm_tsm_meta_free(prev);
            msm_topology_deinit(&topo);
            return MSM_EINVAL;
        }
    }
    msm_tsm_meta_free(prev);
    struct msm_host_set *hs = msm_host_set_new(hv, k);
    msm_host_set_set_topology(hs, &topo);
    msm_topology_deinit(&topo);
    free(hv);
    *out = hs;
    return 0;
}

/* <wire> (may be NULL) or the packed <pm>, in a new buffer of <*len> bytes. */
static uint8_t *packed_copy(const ProtobufCMessage *pm, const uint8_t *wire, size_t wire_len,
                            size_t *len)
{
    if (wire) {
        uint8_t *b = msm_xmalloc(wire_len + 1);
        memcpy(b, wire, wire_len);
        *len = wire_len;
        return b;
    }
    *len = protobuf_c_message_get_packed_size(pm);
    uint8_t *b = msm_xmalloc(*len + 1);
    protobuf_c_message_pack(pm, b);
    return b;
}

static const char *eds_name(const struct cm_entry *e)
{
    return e->cfg->eds_service_name ? e->cfg->eds_service_name : e->name;
}

static struct eds_cache *find_eds(const struct msm_cluster_manager *cm, const char *service)
{
    void **slot = msm_strmap_find(&cm->eds_by_service, service);
    return slot ? *slot : NULL;
}

/* Apply a CLA to one EDS entry. */
static int apply_cla(struct cm_entry *e, const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla,
                     struct msm_err *err)
{
    /* update_attempt/success/rejected for EDS are the xDS subscription's stats. */
    struct msm_host_set *hs = NULL;
    if (hosts_from_cla(e, cla, &hs, err) < 0) {
        return MSM_EINVAL;
    }
    bool same = e->cur && e->cur->cfg == e->cfg && msm_host_set_same(e->cur->hosts, hs);
    if (same) {
        msm_stat_inc(e->sh->stats.update_no_rebuild);
        msm_host_set_unref(hs);
    } else {
        msm_stat_inc(e->sh->stats.membership_change);
        if (!hs->n) {
            msm_stat_inc(e->sh->stats.update_empty);
        }
        publish(e, hs);
    }
    bool first = !e->initialized;
    e->initialized = true;
    account(e);
    if (first) {
        check_init(e->cm);
    }
    return same ? 0 : 1;
}

int msm_cm_apply_eds(struct msm_cluster_manager *cm, const void *proto, const char *version,
                     struct msm_err *err)
{
    return msm_cm_apply_eds_packed(cm, proto, NULL, 0, version, err);
}

int msm_cm_apply_eds_packed(struct msm_cluster_manager *cm, const void *proto,
                            const uint8_t *wire, size_t wire_len, const char *version,
                            struct msm_err *err)
{
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla = proto;
    if (!cla->cluster_name[0]) {
        return msm_err_set(err, "ClusterLoadAssignment: cluster_name is required");
    }
    for (struct cm_entry *e = eds_users(cm, cla->cluster_name), *next; e; e = next) {
        next = e->eds_next;
        if (apply_cla(e, cla, err) < 0) {
            msm_err_prefix(err, "ClusterLoadAssignment '%s'", cla->cluster_name);
            return MSM_EINVAL;
        }
    }
    struct eds_cache *c = find_eds(cm, cla->cluster_name);
    if (!c) {
        cm->eds = msm_xgrow(cm->eds, sizeof(*cm->eds), &cm->eds_cap, (size_t)cm->n_eds + 1);
        c = MSM_NEW(struct eds_cache);
        c->service = msm_name_intern(cla->cluster_name);
        c->idx = cm->n_eds;
        cm->eds[cm->n_eds++] = c;
        msm_strmap_put(&cm->eds_by_service, c->service, c, NULL);
    }
    msm_name_unref(c->version);
    size_t len;
    uint8_t *own = wire ? NULL : packed_copy(&cla->base, NULL, 0, &len);
    msm_packed_set(&cm->cla_kind, &c->cla, wire ? wire : own, wire ? wire_len : len);
    free(own);
    c->version = msm_name_intern(version ? version : "");
    c->last_updated = wall_now();
    return 0;
}

void msm_cm_remove_eds(struct msm_cluster_manager *cm, const char *service)
{
    struct eds_cache *c = find_eds(cm, service);
    if (c) {
        msm_strmap_del(&cm->eds_by_service, service, NULL);
        cm->eds[c->idx] = cm->eds[--cm->n_eds];
        cm->eds[c->idx]->idx = c->idx;
        msm_name_unref(c->service);
        msm_packed_clear(&c->cla);
        msm_name_unref(c->version);
        free(c);
    }
    for (struct cm_entry *e = eds_users(cm, service), *next; e; e = next) {
        next = e->eds_next;
        publish(e, msm_host_set_new(NULL, 0));
        msm_stat_inc(e->sh->stats.update_empty);
        bool first = !e->initialized;
        e->initialized = true;
        account(e);
        if (first) {
            check_init(cm);
        }
    }
}

void msm_cm_eds_timeout(struct msm_cluster_manager *cm, const char *service)
{
    for (struct cm_entry *e = eds_users(cm, service), *next; e; e = next) {
        next = e->eds_next;
        if (!e->initialized) {
            msm_stat_inc(e->sh->stats.assignment_timeout_received);
            publish(e, msm_host_set_new(NULL, 0));
            warmed(e, true);
        }
    }
}

/* ---- add / remove ------------------------------------------------------------------------- */

/* Start the first host set of a fresh config: STATIC at once, DNS by resolving, EDS from the
 * cache if the assignment already arrived, else it stays warming. */
static void entry_start(struct cm_entry *e, bool validate_only)
{
    struct msm_cluster_cfg *cfg = e->cfg;
    struct msm_cluster_manager *cm = e->cm;
    if (cfg->type == MSM_CLUSTER_ORIGINAL_DST) {
        /* Hosts are the connections' original destinations, made per connection. */
        publish(e, msm_host_set_new(NULL, 0));
        e->initialized = true;
        return;
    }
    if (cfg->type == MSM_CLUSTER_STATIC || validate_only) {
        struct msm_host **hv = msm_xcalloc((size_t)cfg->n_static + 1, sizeof(*hv));
        for (int i = 0; i < cfg->n_static; i++) {
            hv[i] = get_host(e->cur ? e->cur->hosts : NULL, &cfg->static_addrs[i], NULL,
                             cfg->static_weights[i],
                             cfg->static_meta ? cfg->static_meta[i] : NULL);
        }
        struct msm_host_set *hs = msm_host_set_new(hv, cfg->n_static);
        msm_host_set_set_topology(hs, &cfg->static_topo);
        publish(e, hs);
        free(hv);
        e->initialized = true;
        return;
    }
    if (cfg->type == MSM_CLUSTER_EDS) {
        struct eds_cache *c = find_eds(cm, eds_name(e));
        if (c) {
            uint8_t *tmp;
            const uint8_t *b = msm_packed_get(&c->cla, &tmp);
            Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla =
                b ? envoy__config__endpoint__v3__cluster_load_assignment__unpack(NULL,
                                                                                c->cla.raw_len, b)
                  : NULL;
            free(tmp);
            struct msm_err err;
            if (cla && apply_cla(e, cla, &err) >= 0) {
                e->initialized = true;
            }
            if (cla) {
                envoy__config__endpoint__v3__cluster_load_assignment__free_unpacked(cla, NULL);
            }
        }
        return;
    }
    /* DNS */
    e->eps = msm_xcalloc((size_t)cfg->n_dns_eps + 1, sizeof(*e->eps));
    if (cm->started) {
        dns_round(e);
    }
}

static int cm_add(struct msm_cluster_manager *cm, const void *proto, const uint8_t *wire,
                  size_t wire_len, const char *version, bool is_static, bool validate_only,
                  struct msm_err *err);

/* A cluster's stats (and its TLS contexts', upstream filters') are only updated, never read
 * back: those the stats_matcher rejects are the store's sinks, which cost nothing (with
 * Istio's matcher, every per-cluster stat of 10k outbound clusters). */
int msm_cm_add_packed(struct msm_cluster_manager *cm, const void *proto, const uint8_t *wire,
                      size_t wire_len, const char *version, bool is_static, bool validate_only,
                      struct msm_err *err)
{
    bool was = msm_stats_sink_rejected(true);
    int rc = cm_add(cm, proto, wire, wire_len, version, is_static, validate_only, err);
    msm_stats_sink_rejected(was);
    return rc;
}

int msm_cm_add(struct msm_cluster_manager *cm, const void *proto, const char *version,
               bool is_static, bool validate_only, struct msm_err *err)
{
    return msm_cm_add_packed(cm, proto, NULL, 0, version, is_static, validate_only, err);
}

bool msm_cm_same_bytes(struct msm_cluster_manager *cm, const char *name, const uint8_t *bytes,
                       size_t len, const char *version)
{
    struct cm_entry *old = find_entry(cm, name, NULL);
    if (!old || old->is_static || old->proto.raw_len != len ||
        old->hash != XXH3_64bits(bytes, len)) {
        return false;
    }
    msm_name_unref(old->version);
    old->version = msm_name_intern(version ? version : "");
    return true;
}

static int cm_add(struct msm_cluster_manager *cm, const void *proto, const uint8_t *wire,
                  size_t wire_len, const char *version, bool is_static, bool validate_only,
                  struct msm_err *err)
{
    const ProtobufCMessage *pm = proto;
    size_t len = wire_len;
    /* <own>: the message packed when it did not come with its bytes */
    uint8_t *own = wire ? NULL : packed_copy(pm, NULL, 0, &len);
    const uint8_t *bytes = wire ? wire : own;
    uint64_t hash = XXH3_64bits(bytes, len);
    const Envoy__Config__Cluster__V3__Cluster *p = proto;
    int idx = -1;
    struct cm_entry *old = find_entry(cm, p->name, &idx);
    if (old && old->is_static) {
        free(own);
        return msm_err_set(err, "cluster '%s': a static cluster cannot be %s", p->name,
                           is_static ? "defined twice (duplicate cluster name)"
                                     : "updated through CDS");
    }
    if (old && old->hash == hash) {
        free(own);
        msm_name_unref(old->version);
        old->version = msm_name_intern(version ? version : "");
        return MSM_CM_UNCHANGED;
    }
    struct msm_cluster_cfg *cfg = msm_cluster_cfg_from_proto(proto, validate_only, err);
    if (!cfg) {
        free(own);
        return MSM_EINVAL;
    }
    struct cm_entry *e = MSM_NEW(struct cm_entry);
    e->cm = cm;
    e->name = cfg->name; /* the entry's config never changes: a new config is a new entry */
    e->cfg = cfg;
    e->is_static = is_static;
    e->version = msm_name_intern(version ? version : "");
    e->last_updated = wall_now();
    msm_packed_set(&cm->clusters_kind, &e->proto, bytes, len);
    free(own);
    e->hash = hash;
    ev_timer_init(&e->refresh, on_refresh, 0, 0);
    eds_link(e); /* before the old entry goes: a replaced cluster keeps its service name set */
    if (old) {
        /* Same name: keep stats and serve the previous version until this one is warm. */
        e->sh = old->sh;
        atomic_fetch_add(&e->sh->refs, 1);
        e->cur = old->cur ? msm_cluster_ref(old->cur) : NULL;
        if (old->cfg->eds_source_len != cfg->eds_source_len ||
            (cfg->eds_source_len &&
             memcmp(old->cfg->eds_source, cfg->eds_source, cfg->eds_source_len) != 0)) {
            cm->eds_gen++; /* another EDS config source: subscribe again */
        }
        entry_free(old);
        e->idx = idx;
        cm->e[idx] = e;
        *msm_strmap_find(&cm->by_name, e->name) = e;
        msm_stat_inc(cm->stats.cluster_modified);
    } else {
        e->sh = msm_cluster_shared_new(cfg, cm->st);
        cm->e = msm_xgrow(cm->e, sizeof(*cm->e), &cm->cap, (size_t)cm->n + 1);
        e->idx = cm->n;
        cm->e[cm->n++] = e;
        msm_strmap_put(&cm->by_name, e->name, e, NULL);
        msm_stat_inc(cm->stats.cluster_added);
    }
    account(e);
    entry_start(e, validate_only);
    account(e);
    update_gauges(cm);
    return old ? MSM_CM_MODIFIED : MSM_CM_ADDED;
}

int msm_cm_remove(struct msm_cluster_manager *cm, const char *name)
{
    int idx;
    struct cm_entry *e = find_entry(cm, name, &idx);
    if (!e) {
        return MSM_ENOTFOUND;
    }
    if (e->is_static) {
        return MSM_EINVAL;
    }
    msm_strmap_del(&cm->by_name, e->name, NULL);
    cm->e[idx] = cm->e[--cm->n];
    cm->e[idx]->idx = idx;
    entry_free(e);
    msm_stat_inc(cm->stats.cluster_removed);
    update_gauges(cm);
    check_init(cm);
    return 0;
}

void msm_cm_start(struct msm_cluster_manager *cm, msm_cm_cb *init_done, void *arg)
{
    cm->init_done = init_done;
    cm->init_arg = arg;
    cm->started = true;
    for (int i = 0; i < cm->n; i++) {
        struct cm_entry *e = cm->e[i];
        if (!e->initialized && e->eps) {
            dns_round(e);
        }
    }
    check_init(cm);
}

int msm_cm_secrets_changed(struct msm_cluster_manager *cm)
{
    int n = 0;
    for (int i = 0; i < cm->n; i++) {
        struct cm_entry *e = cm->e[i];
        if (!e->held || !msm_cluster_cfg_warm(e->cfg)) {
            continue;
        }
        struct msm_host_set *hs = e->held;
        e->held = NULL;
        publish(e, hs);
        account(e);
        msm_log(MSM_LOG_DEBUG, MSM_LC_UPSTREAM, "cluster '%s': TLS secrets ready, warm",
                e->name);
        n++;
    }
    bool was = cm->init_reported;
    check_init(cm);
    if (n && was && cm->changed) {
        cm->changed(cm->changed_arg);
    }
    return n;
}

void msm_cm_fill_snapshot(struct msm_cluster_manager *cm, struct msm_snapshot *s)
{
    for (int i = 0; i < cm->n; i++) {
        if (cm->e[i]->cur) {
            msm_snapshot_add_cluster(s, cm->e[i]->cur);
        }
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char **msm_cm_eds_names(const struct msm_cluster_manager *cm, int *n)
{
    char **v = msm_xcalloc((size_t)cm->n + 1, sizeof(char *));
    int k = 0;
    for (int i = 0; i < cm->n; i++) {
        if (cm->e[i]->cfg->type == MSM_CLUSTER_EDS) {
            v[k++] = msm_xstrdup(eds_name(cm->e[i]));
        }
    }
    qsort(v, (size_t)k, sizeof(*v), cmp_str);
    int u = 0;
    for (int i = 0; i < k; i++) {
        if (u && !strcmp(v[u - 1], v[i])) {
            free(v[i]);
            continue;
        }
        v[u++] = v[i];
    }
    *n = u;
    return v;
}

bool msm_cm_eds_names_changed(struct msm_cluster_manager *cm)
{
    bool changed = cm->eds_gen != cm->eds_gen_seen || !cm->eds_gen_seen;
    cm->eds_gen_seen = cm->eds_gen;
    return changed;
}

const uint8_t *msm_cm_eds_source(const struct msm_cluster_manager *cm, size_t *len)
{
    for (int i = 0; i < cm->n; i++) {
        if (cm->e[i]->cfg->type == MSM_CLUSTER_EDS && cm->e[i]->cfg->eds_source) {
            *len = cm->e[i]->cfg->eds_source_len;
            return cm->e[i]->cfg->eds_source;
        }
    }
    return NULL;
}

static uint8_t *dup_bytes(const uint8_t *b, size_t n)
{
    if (!b) {
        return NULL;
    }
    uint8_t *d = msm_xmalloc(n + 1);
    memcpy(d, b, n);
    return d;
}

static bool same_key(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    if (!a || !b) {
        return !a && !b;
    }
    return al == bl && !memcmp(a, b, al);
}

static void sort_unique(struct msm_cm_eds_group *g)
{
    qsort(g->names, (size_t)g->n, sizeof(*g->names), cmp_str);
    int u = 0;
    for (int i = 0; i < g->n; i++) {
        if (u && !strcmp(g->names[u - 1], g->names[i])) {
            free(g->names[i]);
            continue;
        }
        g->names[u++] = g->names[i];
    }
    g->n = u;
}

struct msm_cm_eds_group *msm_cm_eds_groups(struct msm_cluster_manager *cm, int *n)
{
    struct msm_cm_eds_group *g = NULL;
    struct eds_sub *keys = NULL; /* per group of <g>: becomes cm->subs */
    size_t gcap = 0, kcap = 0, *ncap = NULL;
    int ng = 0, last = -1;
    for (int i = 0; i < cm->n; i++) {
        const struct msm_cluster_cfg *c = cm->e[i]->cfg;
        if (c->type != MSM_CLUSTER_EDS) {
            continue;
        }
        int k = last; /* clusters mostly share one stream: try the last one first */
        if (k < 0 || !same_key(keys[k].key, keys[k].klen, c->eds_api, c->eds_api_len)) {
            for (k = 0; k < ng; k++) {
                if (same_key(keys[k].key, keys[k].klen, c->eds_api, c->eds_api_len)) {
                    break;
                }
            }
        }
        if (k == ng) {
            g = msm_xgrow(g, sizeof(*g), &gcap, (size_t)ng + 1);
            ncap = msm_xrealloc(ncap, gcap * sizeof(*ncap));
            keys = msm_xgrow(keys, sizeof(*keys), &kcap, (size_t)ng + 1);
            memset(&g[ng], 0, sizeof(g[ng]));
            ncap[ng] = 0;
            g[ng].source = dup_bytes(c->eds_source, c->eds_source_len);
            g[ng].source_len = c->eds_source_len;
            keys[ng].key = dup_bytes(c->eds_api, c->eds_api_len);
            keys[ng].klen = c->eds_api_len;
            keys[ng].src = dup_bytes(c->eds_source, c->eds_source_len);
            keys[ng].slen = c->eds_source_len;
            ng++;
        }
        last = k;
        g[k].names = msm_xgrow(g[k].names, sizeof(char *), &ncap[k], (size_t)g[k].n + 1);
        g[k].names[g[k].n++] = msm_xstrdup(eds_name(cm->e[i]));
    }
    free(ncap);
    for (int k = 0; k < ng; k++) {
        sort_unique(&g[k]);
    }
    /* Streams that had EDS names and have none now: an empty set unsubscribes them. */
    int nout = ng;
    for (int i = 0; i < cm->n_subs; i++) {
        struct eds_sub *o = &cm->subs[i];
        int k = 0;
        while (k < ng && !same_key(keys[k].key, keys[k].klen, o->key, o->klen)) {
            k++;
        }
        free(o->key);
        if (k < ng) {
            free(o->src);
            continue;
        }
        g = msm_xgrow(g, sizeof(*g), &gcap, (size_t)nout + 1);
        memset(&g[nout], 0, sizeof(g[nout]));
        g[nout].source = o->src; /* moved */
        g[nout].source_len = o->slen;
        nout++;
    }
    free(cm->subs);
    cm->subs = keys;
    cm->n_subs = ng;
    *n = nout;
    return g;
}

void msm_cm_eds_groups_free(struct msm_cm_eds_group *g, int n)
{
    for (int i = 0; i < n; i++) {
        msm_strv_free(g[i].names, g[i].n);
        free(g[i].source);
    }
    free(g);
}

char **msm_cm_dynamic_names(const struct msm_cluster_manager *cm, int *n)
{
    char **v = msm_xcalloc((size_t)cm->n + 1, sizeof(char *));
    int k = 0;
    for (int i = 0; i < cm->n; i++) {
        if (!cm->e[i]->is_static) {
            v[k++] = msm_xstrdup(cm->e[i]->name);
        }
    }
    *n = k;
    return v;
}

void msm_cm_dump(const struct msm_cluster_manager *cm, msm_cm_dump_fn *fn, void *arg)
{
    for (int i = 0; i < cm->n; i++) {
        const struct cm_entry *e = cm->e[i];
        uint8_t *tmp;
        const uint8_t *b = msm_packed_get(&e->proto, &tmp);
        struct msm_cm_dump_item it = {.name = e->name, .is_static = e->is_static,
                                      .warming = !e->initialized, .version = e->version,
                                      .last_updated = e->last_updated, .proto = b,
                                      .proto_len = b ? e->proto.raw_len : 0};
        fn(arg, &it);
        free(tmp);
    }
}

void msm_cm_dump_eds(const struct msm_cluster_manager *cm, msm_cm_eds_dump_fn *fn, void *arg)
{
    for (int i = 0; i < cm->n_eds; i++) {
        uint8_t *tmp;
        const uint8_t *b = msm_packed_get(&cm->eds[i]->cla, &tmp);
        if (b) {
            fn(arg, cm->eds[i]->service, b, cm->eds[i]->cla.raw_len, cm->eds[i]->version,
               cm->eds[i]->last_updated);
        }
        free(tmp);
    }
}
