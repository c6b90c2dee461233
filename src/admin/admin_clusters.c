/* /clusters (text and ?format=json, envoy.admin.v3.Clusters) and /listeners (text and
 * ?format=json, envoy.admin.v3.Listeners). Both read the cluster and listener managers on the
 * main thread; host counters are the workers' atomics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/admin/v3/clusters.pb-c.h"
#include "envoy/admin/v3/listeners.pb-c.h"

#include "admin/admin_private.h"
#include "common/alloc.h"
#include "config/pbjson.h"
#include "config/snapshot.h"
#include "server/listener_manager.h"
#include "server/server.h"
#include "upstream/cluster.h"
#include "upstream/cluster_manager.h"

/* Envoy's HIGH priority defaults: this build keeps one (DEFAULT) set of thresholds. */
#define HIGH_MAX_CX 1024
#define HIGH_MAX_PENDING 1024
#define HIGH_MAX_RQ 1024
#define HIGH_MAX_RETRIES 3

struct host_view {
    uint64_t cx_active, cx_connect_fail, cx_total, rq_active, rq_error, rq_success, rq_timeout,
        rq_total;
    bool ejected;
    bool hc_failed;       /* failed active health checking */
    int eds_status;       /* envoy.config.core.v3.HealthStatus, UNKNOWN shown as HEALTHY */
    uint32_t priority;
};

/* Host <i> of <hs>. */
static void host_view(const struct msm_host_set *hs, int i, uint64_t now_ms,
                      struct host_view *v)
{
    const struct msm_host *h = hs->hosts[i];
    memset(v, 0, sizeof(*v));
    v->eds_status = ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY;
    if (hs->topo.attr) {
        v->priority = hs->topo.attr[i].priority;
        if (hs->topo.attr[i].eds_status != ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNKNOWN) {
            v->eds_status = hs->topo.attr[i].eds_status;
        }
    }
    v->hc_failed = atomic_load(&h->hc_unhealthy);
    v->cx_active = atomic_load(&h->active_cx);
    v->cx_connect_fail = atomic_load(&h->cx_connect_fail);
    v->cx_total = atomic_load(&h->cx_total);
    v->rq_active = atomic_load(&h->active_rq);
    v->rq_total = atomic_load(&h->rq_total);
    uint64_t until = atomic_load(&h->ejected_until);
    v->ejected = until && until > now_ms;
}

/* Clusters as the workers see them now (warm ones only, as Envoy's active_clusters), and which
 * of them are static. Release with msm_snapshot_unref. */
struct static_names {
    char **v;
    int n;
    size_t cap;
};

static void on_dump(void *arg, const struct msm_cm_dump_item *it)
{
    struct static_names *s = arg;
    if (it->is_static) {
        s->v = msm_xgrow(s->v, sizeof(char *), &s->cap, (size_t)s->n + 1);
        s->v[s->n++] = msm_xstrdup(it->name);
    }
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Binary search: 10 000 static clusters must not make /clusters quadratic. */
static bool is_static(const struct static_names *s, const char *name)
{
    return s->n && bsearch(&name, s->v, (size_t)s->n, sizeof(*s->v), cmp_name) != NULL;
}

static struct msm_snapshot *current(struct msm_server *srv, struct static_names *statics)
{
    struct msm_snapshot *s = msm_snapshot_new();
    msm_cm_fill_snapshot(srv->cm, s);
    msm_snapshot_seal(s);
    memset(statics, 0, sizeof(*statics));
    msm_cm_dump(srv->cm, on_dump, statics);
    if (statics->n) {
        qsort(statics->v, (size_t)statics->n, sizeof(*statics->v), cmp_name);
    }
    return s;
}

static void statics_free(struct static_names *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->v[i]);
    }
    free(s->v);
}

/* ---- text ----------------------------------------------------------------------------------- */

/* Envoy's HostUtility::healthFlagsToString: the set flags in Envoy's order, or "healthy". */
static void health_flags(const struct host_view *v, char *out, size_t n)
{
    snprintf(out, n, "%s%s%s%s", v->hc_failed ? "/failed_active_hc" : "",
             v->ejected ? "/failed_outlier_check" : "",
             v->eds_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY ||
                     v->eds_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING ||
                     v->eds_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__TIMEOUT
                 ? "/failed_eds_health"
                 : "",
             v->eds_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DEGRADED
                 ? "/degraded_eds_health"
                 : "");
    if (!out[0]) {
        snprintf(out, n, "healthy");
    }
}

static void text_cluster(struct msm_buf *b, const struct msm_cluster *c, bool added_via_api,
                         uint64_t now_ms)
{
    const struct msm_cluster_cfg *cfg = c->cfg;
    const char *n = cfg->name;
    msm_buf_appendf(b, "%s::observability_name::%s\n", n, cfg->stat_name);
    if (cfg->outlier.enabled) {
        msm_buf_appendf(b, "%s::outlier::success_rate_average::-1\n", n);
        msm_buf_appendf(b, "%s::outlier::success_rate_ejection_threshold::-1\n", n);
        msm_buf_appendf(b, "%s::outlier::local_origin_success_rate_average::-1\n", n);
        msm_buf_appendf(b, "%s::outlier::local_origin_success_rate_ejection_threshold::-1\n", n);
    }
    msm_buf_appendf(b, "%s::default_priority::max_connections::%u\n", n, cfg->max_connections);
    msm_buf_appendf(b, "%s::default_priority::max_pending_requests::%u\n", n,
                    cfg->max_pending_requests);
    msm_buf_appendf(b, "%s::default_priority::max_requests::%u\n", n, cfg->max_requests);
    msm_buf_appendf(b, "%s::default_priority::max_retries::%u\n", n, cfg->max_retries);
    msm_buf_appendf(b, "%s::high_priority::max_connections::%u\n", n, HIGH_MAX_CX);
    msm_buf_appendf(b, "%s::high_priority::max_pending_requests::%u\n", n, HIGH_MAX_PENDING);
    msm_buf_appendf(b, "%s::high_priority::max_requests::%u\n", n, HIGH_MAX_RQ);
    msm_buf_appendf(b, "%s::high_priority::max_retries::%u\n", n, HIGH_MAX_RETRIES);
    msm_buf_appendf(b, "%s::added_via_api::%s\n", n, added_via_api ? "true" : "false");
    if (cfg->eds_service_name && cfg->eds_service_name[0]) {
        msm_buf_appendf(b, "%s::eds_service_name::%s\n", n, cfg->eds_service_name);
    }
    for (int i = 0; c->hosts && i < c->hosts->n; i++) {
        const struct msm_host *h = c->hosts->hosts[i];
        char a[MSM_ADDRSTRLEN];
        msm_address_str(&h->addr, a, sizeof(a));
        struct host_view v;
        host_view(c->hosts, i, now_ms, &v);
        /* Envoy sorts the host stats by name. */
        msm_buf_appendf(b,
                        "%s::%s::cx_active::%llu\n%s::%s::cx_connect_fail::%llu\n"
                        "%s::%s::cx_total::%llu\n%s::%s::rq_active::%llu\n"
                        "%s::%s::rq_error::%llu\n%s::%s::rq_success::%llu\n"
                        "%s::%s::rq_timeout::%llu\n%s::%s::rq_total::%llu\n",
                        n, a, (unsigned long long)v.cx_active, n, a,
                        (unsigned long long)v.cx_connect_fail, n, a,
                        (unsigned long long)v.cx_total, n, a, (unsigned long long)v.rq_active, n,
                        a, (unsigned long long)v.rq_error, n, a,
                        (unsigned long long)v.rq_success, n, a,
                        (unsigned long long)v.rq_timeout, n, a, (unsigned long long)v.rq_total);
        msm_buf_appendf(b, "%s::%s::hostname::%s\n", n, a, h->hostname ? h->hostname : "");
        char flags[128];
        health_flags(&v, flags, sizeof(flags));
        msm_buf_appendf(b, "%s::%s::health_flags::%s\n", n, a, flags);
        msm_buf_appendf(b, "%s::%s::weight::%u\n", n, a, h->weight);
        msm_buf_appendf(b, "%s::%s::region::\n%s::%s::zone::\n%s::%s::sub_zone::\n", n, a, n, a,
                        n, a);
        msm_buf_appendf(b, "%s::%s::canary::false\n%s::%s::priority::%u\n", n, a, n, a,
                        v.priority);
        msm_buf_appendf(b, "%s::%s::success_rate::-1\n%s::%s::local_origin_success_rate::-1\n",
                        n, a, n, a);
    }
}

/* ---- JSON ----------------------------------------------------------------------------------- */

/* Storage for one host's JSON view. */
struct host_msg {
    Envoy__Admin__V3__HostStatus hs;
    Envoy__Config__Core__V3__Address addr;
    Envoy__Config__Core__V3__SocketAddress sock;
    Envoy__Config__Core__V3__Pipe pipe;
    Envoy__Admin__V3__HostHealthStatus health;
    Envoy__Config__Core__V3__Locality locality;
    Envoy__Admin__V3__SimpleMetric m[8];
    Envoy__Admin__V3__SimpleMetric *mp[8];
    char ip[MSM_ADDRSTRLEN];
};

static void set_metric(Envoy__Admin__V3__SimpleMetric *m, const char *name, uint64_t v,
                       bool gauge)
{
    envoy__admin__v3__simple_metric__init(m);
    m->name = (char *)name;
    m->value = v;
    m->type = gauge ? ENVOY__ADMIN__V3__SIMPLE_METRIC__TYPE__GAUGE
                    : ENVOY__ADMIN__V3__SIMPLE_METRIC__TYPE__COUNTER;
}

static void host_msg_fill(struct host_msg *m, const struct msm_host_set *hs, int i,
                          uint64_t now_ms)
{
    const struct msm_host *h = hs->hosts[i];
    envoy__admin__v3__host_status__init(&m->hs);
    envoy__config__core__v3__address__init(&m->addr);
    struct host_view v;
    host_view(hs, i, now_ms, &v);
    if (h->addr.sa.ss_family == AF_UNIX) {
        envoy__config__core__v3__pipe__init(&m->pipe);
        msm_address_ip_str(&h->addr, m->ip, sizeof(m->ip));
        m->pipe.path = m->ip;
        m->addr.address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE;
        m->addr.pipe = &m->pipe;
    } else {
        envoy__config__core__v3__socket_address__init(&m->sock);
        msm_address_ip_str(&h->addr, m->ip, sizeof(m->ip));
        m->sock.address = m->ip;
        m->sock.port_specifier_case =
            ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
        m->sock.port_value = msm_address_port(&h->addr);
        m->addr.address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
        m->addr.socket_address = &m->sock;
    }
    m->hs.address = &m->addr;
    /* Envoy's order: counters (cx_connect_fail, cx_total, rq_error, rq_success, rq_timeout,
     * rq_total), then gauges (cx_active, rq_active). */
    set_metric(&m->m[0], "cx_connect_fail", v.cx_connect_fail, false);
    set_metric(&m->m[1], "cx_total", v.cx_total, false);
    set_metric(&m->m[2], "rq_error", v.rq_error, false);
    set_metric(&m->m[3], "rq_success", v.rq_success, false);
    set_metric(&m->m[4], "rq_timeout", v.rq_timeout, false);
    set_metric(&m->m[5], "rq_total", v.rq_total, false);
    set_metric(&m->m[6], "cx_active", v.cx_active, true);
    set_metric(&m->m[7], "rq_active", v.rq_active, true);
    for (int j = 0; j < 8; j++) {
        m->mp[j] = &m->m[j];
    }
    m->hs.n_stats = 8;
    m->hs.stats = m->mp;
    envoy__admin__v3__host_health_status__init(&m->health);
    m->health.failed_outlier_check = v.ejected;
    m->health.failed_active_health_check = v.hc_failed;
    m->health.eds_health_status = (Envoy__Config__Core__V3__HealthStatus)v.eds_status;
    m->hs.health_status = &m->health;
    m->hs.weight = h->weight;
    m->hs.priority = v.priority;
    m->hs.hostname = h->hostname ? h->hostname : "";
    envoy__config__core__v3__locality__init(&m->locality);
    m->hs.locality = &m->locality;
}

static Google__Protobuf__UInt32Value *u32(Google__Protobuf__UInt32Value *w, uint32_t v)
{
    google__protobuf__uint32_value__init(w);
    w->value = v;
    return w;
}

struct cb_msg {
    Envoy__Config__Cluster__V3__CircuitBreakers cb;
    Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds t[2];
    Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *tp[2];
    Google__Protobuf__UInt32Value w[8];
};

static void cb_fill(struct cb_msg *m, const struct msm_cluster_cfg *cfg)
{
    envoy__config__cluster__v3__circuit_breakers__init(&m->cb);
    const uint32_t vals[2][4] = {
        {cfg->max_connections, cfg->max_pending_requests, cfg->max_requests, cfg->max_retries},
        {HIGH_MAX_CX, HIGH_MAX_PENDING, HIGH_MAX_RQ, HIGH_MAX_RETRIES}};
    for (int i = 0; i < 2; i++) {
        Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *t = &m->t[i];
        envoy__config__cluster__v3__circuit_breakers__thresholds__init(t);
        t->priority = i ? ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__HIGH
                        : ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__DEFAULT;
        t->max_connections = u32(&m->w[i * 4], vals[i][0]);
        t->max_pending_requests = u32(&m->w[i * 4 + 1], vals[i][1]);
        t->max_requests = u32(&m->w[i * 4 + 2], vals[i][2]);
        t->max_retries = u32(&m->w[i * 4 + 3], vals[i][3]);
        m->tp[i] = t;
    }
    m->cb.n_thresholds = 2;
    m->cb.thresholds = m->tp;
}

static void json_clusters(struct msm_server *srv, struct msm_snapshot *snap,
                          const struct static_names *statics, struct msm_admin_resp *rs)
{
    uint64_t now_ms = msm_mono_ms();
    int nc = snap->n_clusters;
    Envoy__Admin__V3__Clusters all = ENVOY__ADMIN__V3__CLUSTERS__INIT;
    Envoy__Admin__V3__ClusterStatus *cs = msm_xcalloc((size_t)nc + 1, sizeof(*cs));
    Envoy__Admin__V3__ClusterStatus **csp = msm_xcalloc((size_t)nc + 1, sizeof(*csp));
    struct cb_msg *cbs = msm_xcalloc((size_t)nc + 1, sizeof(*cbs));
    struct host_msg **hosts = msm_xcalloc((size_t)nc + 1, sizeof(*hosts));
    Envoy__Admin__V3__HostStatus ***hsp = msm_xcalloc((size_t)nc + 1, sizeof(*hsp));
    for (int i = 0; i < nc; i++) {
        const struct msm_cluster *c = snap->clusters[i];
        Envoy__Admin__V3__ClusterStatus *s = &cs[i];
        envoy__admin__v3__cluster_status__init(s);
        s->name = c->cfg->name;
        s->observability_name = c->cfg->stat_name;
        s->added_via_api = !is_static(statics, c->cfg->name);
        s->eds_service_name = c->cfg->eds_service_name ? c->cfg->eds_service_name : "";
        cb_fill(&cbs[i], c->cfg);
        s->circuit_breakers = &cbs[i].cb;
        int nh = c->hosts ? c->hosts->n : 0;
        hosts[i] = msm_xcalloc((size_t)nh + 1, sizeof(struct host_msg));
        hsp[i] = msm_xcalloc((size_t)nh + 1, sizeof(Envoy__Admin__V3__HostStatus *));
        for (int k = 0; k < nh; k++) {
            host_msg_fill(&hosts[i][k], c->hosts, k, now_ms);
            hsp[i][k] = &hosts[i][k].hs;
        }
        s->n_host_statuses = (size_t)nh;
        s->host_statuses = hsp[i];
        csp[i] = s;
    }
    all.n_cluster_statuses = (size_t)nc;
    all.cluster_statuses = csp;
    struct msm_err err;
    char *text = msm_pbjson_encode_text(&all.base, NULL, true, &err);
    if (text) {
        msm_buf_append(&rs->body, text, strlen(text));
        msm_buf_append(&rs->body, "\n", 1);
        free(text);
        rs->status = 200;
        rs->content_type = "application/json";
    } else {
        msm_buf_appendf(&rs->body, "cannot encode clusters: %s\n", err.msg);
        rs->status = 500;
    }
    for (int i = 0; i < nc; i++) {
        free(hosts[i]);
        free(hsp[i]);
    }
    free(hosts);
    free(hsp);
    free(cbs);
    free(csp);
    free(cs);
    (void)srv;
}

struct clusters_stream {
    struct msm_snapshot *snap;
    struct static_names statics;
    uint64_t now_ms;
    int i;
};

static bool clusters_next(void *ctx, struct msm_buf *out, size_t hint)
{
    struct clusters_stream *cs = ctx;
    size_t start = out->len;
    while (cs->i < cs->snap->n_clusters && out->len - start < hint) {
        const struct msm_cluster *c = cs->snap->clusters[cs->i++];
        text_cluster(out, c, !is_static(&cs->statics, c->cfg->name), cs->now_ms);
    }
    return cs->i < cs->snap->n_clusters;
}

static void clusters_free(void *ctx)
{
    struct clusters_stream *cs = ctx;
    statics_free(&cs->statics);
    msm_snapshot_unref(cs->snap);
    free(cs);
}

static const struct msm_admin_stream_ops clusters_stream_ops = {
    .next = clusters_next,
    .free = clusters_free,
};

void msm_admin_clusters(struct msm_server *srv, const struct msm_admin_req *rq,
                        struct msm_admin_resp *rs)
{
    char fmt[16] = "";
    msm_admin_query_get(rq->query, "format", fmt, sizeof(fmt));
    struct static_names statics;
    struct msm_snapshot *snap = current(srv, &statics);
    if (!strcmp(fmt, "json")) {
        json_clusters(srv, snap, &statics, rs);
        statics_free(&statics);
        msm_snapshot_unref(snap);
        return;
    }
    /* Text: streamed, a slice of clusters per main-loop iteration, from the snapshot taken
     * now (referenced until the end: clusters removed meanwhile stay valid). */
    struct clusters_stream *cs = MSM_NEW(struct clusters_stream);
    cs->snap = snap;
    cs->statics = statics;
    cs->now_ms = msm_mono_ms();
    rs->stream = &clusters_stream_ops;
    rs->stream_ctx = cs;
    rs->status = 200;
}

/* ---- /listeners ----------------------------------------------------------------------------- */

struct lst_ctx {
    struct msm_buf *text;
    Envoy__Admin__V3__ListenerStatus *ls;
    Envoy__Admin__V3__ListenerStatus **lsp;
    Envoy__Config__Core__V3__Address *addr;
    Envoy__Config__Core__V3__SocketAddress *sock;
    Envoy__Config__Core__V3__Pipe *pipe;
    char (*ip)[MSM_ADDRSTRLEN];
    int n, cap;
};

static void on_listener(void *arg, const struct msm_lm_dump_item *it)
{
    struct lst_ctx *c = arg;
    const struct msm_address *a = it->sock ? &it->sock->addr : it->addr;
    if (c->text) {
        char s[MSM_ADDRSTRLEN] = "";
        if (a) {
            msm_address_str(a, s, sizeof(s));
        }
        msm_buf_appendf(c->text, "%s::%s\n", it->name, s);
        return;
    }
    if (c->n >= c->cap) {
        return;
    }
    int i = c->n++;
    envoy__admin__v3__listener_status__init(&c->ls[i]);
    c->ls[i].name = (char *)it->name;
    c->lsp[i] = &c->ls[i];
    if (!a) {
        return;
    }
    envoy__config__core__v3__address__init(&c->addr[i]);
    msm_address_ip_str(a, c->ip[i], sizeof(c->ip[i]));
    if (a->sa.ss_family == AF_UNIX) {
        envoy__config__core__v3__pipe__init(&c->pipe[i]);
        c->pipe[i].path = c->ip[i];
        c->addr[i].address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE;
        c->addr[i].pipe = &c->pipe[i];
    } else {
        envoy__config__core__v3__socket_address__init(&c->sock[i]);
        c->sock[i].address = c->ip[i];
        c->sock[i].port_specifier_case =
            ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
        c->sock[i].port_value = msm_address_port(a);
        c->addr[i].address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
        c->addr[i].socket_address = &c->sock[i];
    }
    c->ls[i].local_address = &c->addr[i];
}

void msm_admin_listeners(struct msm_server *srv, const struct msm_admin_req *rq,
                         struct msm_admin_resp *rs)
{
    char fmt[16] = "";
    msm_admin_query_get(rq->query, "format", fmt, sizeof(fmt));
    struct lst_ctx c = {0};
    if (strcmp(fmt, "json") != 0) {
        c.text = &rs->body;
        msm_lm_dump(srv->lmgr, on_listener, &c);
        rs->status = 200;
        return;
    }
    c.cap = msm_lm_count(srv->lmgr);
    size_t n = (size_t)c.cap + 1;
    c.ls = msm_xcalloc(n, sizeof(*c.ls));
    c.lsp = msm_xcalloc(n, sizeof(*c.lsp));
    c.addr = msm_xcalloc(n, sizeof(*c.addr));
    c.sock = msm_xcalloc(n, sizeof(*c.sock));
    c.pipe = msm_xcalloc(n, sizeof(*c.pipe));
    c.ip = msm_xcalloc(n, sizeof(*c.ip));
    msm_lm_dump(srv->lmgr, on_listener, &c);
    Envoy__Admin__V3__Listeners all = ENVOY__ADMIN__V3__LISTENERS__INIT;
    all.n_listener_statuses = (size_t)c.n;
    all.listener_statuses = c.lsp;
    struct msm_err err;
    char *text = msm_pbjson_encode_text(&all.base, NULL, true, &err);
    if (text) {
        msm_buf_append(&rs->body, text, strlen(text));
        msm_buf_append(&rs->body, "\n", 1);
        free(text);
        rs->status = 200;
        rs->content_type = "application/json";
    } else {
        msm_buf_appendf(&rs->body, "cannot encode listeners: %s\n", err.msg);
        rs->status = 500;
    }
    free(c.ls);
    free(c.lsp);
    free(c.addr);
    free(c.sock);
    free(c.pipe);
    free(c.ip);
}
