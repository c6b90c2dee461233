/* Request mirroring: the router's copies of a request to mirror clusters (see shadow.h).
 *
 * Two objects:
 * - struct msm_shadow: one per request, owned by the router while the request arrives: the
 *   copies still fed by it (attached), which it feeds body chunks and trailers.
 * - struct mirror: one copy in flight, owned by the worker's registry (msm_loop_local): pool
 *   request, upstream stream, the body not yet handed to the codec, timeout. It ends on its
 *   response's end (request sent), a reset, a pool failure, its timeout, a buffer overflow or
 *   the router's cancel, and is freed through msm_defer since codec callbacks may be on the
 *   stack. While attached, the mirror and the msm_shadow point at each other; whichever goes
 *   first clears the other's pointer. The registry is created after the pool registry, so at
 *   loop teardown mirrors go first and never hold a pool request of a freed pool. */
#include "filters/http/router/shadow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer/buf.h"
#include "common/alloc.h"
#include "common/log.h"
#include "config/snapshot.h"
#include "event/deferred.h"
#include "filter/http.h"
#include "http/codec.h"
#include "http/pool.h"
#include "http/route.h"
#include "net/conn.h"
#include "server/worker.h"
#include "upstream/cluster.h"
#include "upstream/cluster_http.h"
#include "upstream/outlier.h"

struct target {
    char *cluster;
    bool keep_host;
};

struct mirror;

struct msm_shadow {
    struct target *t; /* the policies that fired (shadow_pick) */
    int n;
    struct msm_hdrs hdrs;
    const struct msm_shadow_stats *stats;
    struct mirror **m; /* n slots: the copies still attached (NULL: gone or never started) */
    struct msm_cluster *main; /* reference: counts a copy abandoned over the buffer limit */
    uint32_t limit;
    uint32_t timeout_ms;
};

struct registry;

struct mirror {
    struct mirror *next, *prev;
    struct registry *reg;
    struct ev_loop *loop;
    struct msm_cluster *cluster; /* reference */
    struct msm_host *host;       /* reference */
    struct msm_pool_req *pending;
    struct msm_hstream *cs;
    struct msm_shadow *sh; /* attached: the router still feeds it */
    int idx;               /* its slot in sh->m */
    struct msm_hdrs hdrs;
    struct msm_buf body; /* not yet handed to the codec */
    struct msm_hdrs *trailers;
    bool rq_reserved;
    bool active; /* counted in upstream_rq_active */
    bool req_end; /* the whole request is known (body end or trailers) */
    bool req_end_sent;
    bool resp_end;
    bool above; /* the codec holds too much of this stream's output */
    bool flushing;
    bool done;
    ev_timer timeout;
    uint32_t timeout_ms;
    double start;
};

struct registry {
    struct ev_loop *loop;
    struct mirror *head;
};

static const int reg_key;

/* ---- host ------------------------------------------------------------------------------------ */

char *msm_shadow_host(const char *host)
{
    /* Envoy's HeaderUtility::getPortStart: the last ':' unless a ']' follows it. */
    const char *colon = strrchr(host, ':');
    const char *br = strrchr(host, ']');
    if (!colon || (br && br > colon)) {
        return msm_xasprintf("%s-shadow", host);
    }
    return msm_xasprintf("%.*s-shadow%s", (int)(colon - host), host, colon);
}

/* ---- requests in flight ---------------------------------------------------------------------- */

static void mirror_free(void *p)
{
    struct mirror *m = p;
    msm_hdrs_deinit(&m->hdrs);
    msm_buf_deinit(&m->body);
    msm_hdrs_free(m->trailers);
    msm_host_unref(m->host);
    msm_cluster_unref(m->cluster);
    free(m);
}

static struct msm_cluster_http_stats *hstats(struct mirror *m)
{
    return &m->cluster->sh->http.stats;
}

/* The router stops feeding <m>: its slot in the msm_shadow is cleared. */
static void detach_from_shadow(struct mirror *m)
{
    if (m->sh) {
        m->sh->m[m->idx] = NULL;
        m->sh = NULL;
    }
}

/* The copy is over: give back what it holds; <reset> resets a stream not finished both ways. */
static void mirror_done(struct mirror *m, bool reset)
{
    if (m->done) {
        return;
    }
    m->done = true;
    detach_from_shadow(m);
    ev_timer_stop(m->loop, &m->timeout);
    if (m->pending) {
        msm_pool_cancel(m->pending);
        m->pending = NULL;
    }
    if (m->cs) {
        struct msm_hstream *cs = m->cs;
        m->cs = NULL;
        if (reset || !(m->req_end_sent && m->resp_end)) {
            msm_stat_inc(hstats(m)->upstream_rq_tx_reset);
            cs->codec->ops->reset(cs);
        }
        cs->codec->ops->release(cs);
    }
    if (m->active) {
        atomic_fetch_sub(&m->host->active_rq, 1);
        msm_stat_dec(m->cluster->sh->stats.upstream_rq_active);
        m->active = false;
    }
    if (m->rq_reserved) {
        msm_cluster_rq_release(m->cluster);
        m->rq_reserved = false;
    }
    msm_buf_drain(&m->body, m->body.len);
    if (m->prev) {
        m->prev->next = m->next;
    } else {
        m->reg->head = m->next;
    }
    if (m->next) {
        m->next->prev = m->prev;
    }
    msm_defer(m->loop, mirror_free, m);
}

static void *reg_create(struct ev_loop *loop)
{
    /* The pools' registry must exist first: loop-locals go away newest first. */
    (void)msm_pool_count_conns(loop);
    struct registry *r = MSM_NEW(struct registry);
    r->loop = loop;
    return r;
}

static void reg_destroy(void *state)
{
    struct registry *r = state;
    while (r->head) {
        mirror_done(r->head, true);
    }
    free(r);
}

static void complete(struct mirror *m)
{
    if (m->resp_end && m->req_end_sent) {
        msm_stat_record(hstats(m)->upstream_rq_time,
                        (uint64_t)((ev_now(m->loop) - m->start) * 1000.0));
        mirror_done(m, false);
    }
}

/* Hand the codec what it may take now: the body held back, then the end or the trailers. */
static void flush(struct mirror *m)
{
    if (!m->cs || m->above || m->req_end_sent || m->flushing || m->done) {
        return;
    }
    m->flushing = true;
    bool end = m->req_end && !m->trailers;
    if (m->body.len || end) {
        m->req_end_sent = end;
        m->cs->codec->ops->encode_data(m->cs, &m->body, end);
        msm_buf_drain(&m->body, m->body.len);
    }
    if (m->cs && m->req_end && m->trailers && !m->req_end_sent) {
        m->req_end_sent = true;
        m->cs->codec->ops->encode_trailers(m->cs, m->trailers);
    }
    m->flushing = false;
    if (!m->done) {
        complete(m);
    }
}

static void up_on_headers(void *ctx, struct msm_hdrs *h, bool end_stream)
{
    struct mirror *m = ctx;
    const char *sv = msm_hdrs_get(h, ":status");
    int status = sv ? atoi(sv) : 0;
    msm_cluster_count_status(m->cluster, status);
    msm_outlier_report(m->cluster, m->host,
                       status >= 502 && status <= 504 ? MSM_OUTLIER_GATEWAY
                       : status >= 500                 ? MSM_OUTLIER_5XX
                                                       : MSM_OUTLIER_SUCCESS);
    m->resp_end = end_stream;
    complete(m);
}

static void up_on_data(void *ctx, struct msm_buf *data, bool end_stream)
{
    struct mirror *m = ctx;
    msm_buf_drain(data, data->len); /* discarded */
    if (end_stream) {
        m->resp_end = true;
        complete(m);
    }
}

static void up_on_trailers(void *ctx, struct msm_hdrs *t)
{
    (void)t;
    struct mirror *m = ctx;
    m->resp_end = true;
    complete(m);
}

static void up_on_reset(void *ctx, enum msm_http_reset why)
{
    (void)why;
    struct mirror *m = ctx;
    struct msm_hstream *cs = m->cs;
    m->cs = NULL;
    if (cs) {
        cs->codec->ops->release(cs);
    }
    msm_stat_inc(hstats(m)->upstream_rq_rx_reset);
    msm_outlier_report(m->cluster, m->host, MSM_OUTLIER_LOCAL_FAILURE);
    mirror_done(m, false);
}

static void up_on_watermark(void *ctx, bool above)
{
    /* The codec holds too much of this copy: keep the rest here (bounded, see shadow_feed)
     * rather than slow the main request down. */
    struct mirror *m = ctx;
    m->above = above;
    if (!above) {
        flush(m);
    }
}

static const struct msm_hstream_cbs up_cbs = {
    .on_headers = up_on_headers,
    .on_data = up_on_data,
    .on_trailers = up_on_trailers,
    .on_reset = up_on_reset,
    .on_watermark = up_on_watermark,
};

static void on_pool_ready(void *ctx, struct msm_upconn *uc)
{
    struct mirror *m = ctx;
    m->pending = NULL;
    m->cs = msm_upconn_new_stream(uc, &up_cbs, m);
    msm_stat_inc(m->cluster->sh->stats.upstream_rq_total);
    msm_stat_inc(m->cluster->sh->stats.upstream_rq_active);
    atomic_fetch_add(&m->host->active_rq, 1);
    atomic_fetch_add(&m->host->rq_total, 1);
    m->active = true;
    m->start = ev_now(m->loop);
    bool end = m->req_end && !m->body.len && !m->trailers;
    m->req_end_sent = end;
    m->cs->codec->ops->encode_headers(m->cs, &m->hdrs, end);
    flush(m);
}

static void on_pool_failure(void *ctx, enum msm_pool_failure f, const char *detail)
{
    struct mirror *m = ctx;
    m->pending = NULL;
    msm_log(MSM_LOG_DEBUG, MSM_LC_ROUTER, "mirror to cluster '%s' failed: %s",
            m->cluster->cfg->name, detail ? detail : "?");
    if (f != MSM_POOL_OVERFLOW) {
        msm_outlier_report(m->cluster, m->host, MSM_OUTLIER_LOCAL_FAILURE);
    }
    mirror_done(m, false);
}

static const struct msm_pool_cbs pool_cbs = {
    .on_ready = on_pool_ready,
    .on_failure = on_pool_failure,
};

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct mirror *m = MSM_CONTAINER_OF(t, struct mirror, timeout);
    msm_stat_inc(hstats(m)->upstream_rq_timeout);
    msm_outlier_report(m->cluster, m->host, MSM_OUTLIER_LOCAL_FAILURE);
    mirror_done(m, true);
}

/* The request is complete on the router's side: the copy lives on its own from now on, bounded
 * by the route timeout (started now, as the main request's is). */
static void detach(struct mirror *m)
{
    detach_from_shadow(m);
    m->req_end = true;
    if (m->timeout_ms) {
        ev_timer_set(&m->timeout, m->timeout_ms / 1000.0, 0);
        ev_timer_start(m->loop, &m->timeout);
    }
    flush(m);
}

static struct msm_host *pick_host(struct msm_cluster *c, struct msm_http_stream *s)
{
    if (c->cfg->type == MSM_CLUSTER_ORIGINAL_DST) {
        const struct msm_conn *dc = msm_hs_conn(s);
        return dc ? msm_host_new(&dc->local, NULL, 1) : NULL;
    }
    struct msm_host *h = msm_lb_choose(c, 0);
    if (h) {
        atomic_fetch_add(&h->refs, 1);
    }
    return h;
}

/* Start the copy of <sh>'s slot <i> to cluster <c>: the headers leave as soon as the pool has
 * a stream. Attached to <sh> unless <end> (a request without body). */
static void start_one(struct msm_shadow *sh, int i, struct msm_cluster *c,
                      struct msm_http_stream *s, bool end)
{
    const struct target *t = &sh->t[i];
    struct msm_host *h = pick_host(c, s);
    if (!h) {
        msm_stat_inc(c->sh->stats.upstream_cx_none_healthy);
        return;
    }
    if (!msm_cluster_rq_reserve(c)) {
        msm_host_unref(h);
        return;
    }
    struct ev_loop *loop = msm_hs_loop(s);
    struct registry *reg = msm_loop_local(loop, &reg_key, reg_create, reg_destroy);
    struct mirror *m = MSM_NEW(struct mirror);
    m->reg = reg;
    m->loop = loop;
    m->cluster = msm_cluster_ref(c);
    m->host = h;
    m->rq_reserved = true;
    m->timeout_ms = sh->timeout_ms;
    msm_hdrs_init(&m->hdrs);
    msm_hdrs_copy(&m->hdrs, &sh->hdrs);
    const char *auth = msm_hdrs_get(&m->hdrs, ":authority");
    if (!t->keep_host && auth && auth[0]) {
        char *sa = msm_shadow_host(auth);
        msm_hdrs_set(&m->hdrs, ":authority", sa);
        free(sa);
    }
    msm_buf_init(&m->body);
    ev_timer_init(&m->timeout, on_timeout, 0, 0);
    m->next = reg->head;
    if (reg->head) {
        reg->head->prev = m;
    }
    reg->head = m;
    if (end) {
        detach(m);
    } else {
        m->sh = sh;
        m->idx = i;
        sh->m[i] = m;
    }
    enum msm_http_proto proto =
        msm_cluster_http_request_proto(msm_cluster_http_cfg_of(c->cfg), msm_hs_protocol(s));
    struct msm_pool *p = msm_pool_get(loop, c, h, proto);
    struct msm_pool_req *pr = msm_pool_request(p, &pool_cbs, m);
    if (pr) {
        m->pending = pr; /* neither callback ran: m is still in flight */
    }
}

/* Body bytes for one attached copy: straight to the codec when it takes them, else held here up
 * to the buffer limit; past it the copy is abandoned (reset) rather than slowing the client. */
static void shadow_feed(struct msm_shadow *sh, struct mirror *m, const struct msm_buf *data)
{
    if (data->len) {
        msm_buf_copy(&m->body, data);
    }
    if (m->cs && !m->above) {
        flush(m);
        return;
    }
    if (m->body.len > sh->limit) {
        if (sh->main) {
            msm_stat_inc(sh->main->sh->stats.retry_or_shadow_abandoned);
        }
        msm_log(MSM_LOG_DEBUG, MSM_LC_ROUTER,
                "mirror to cluster '%s' holds over %u bytes: abandoned", m->cluster->cfg->name,
                sh->limit);
        mirror_done(m, true);
    }
}

/* ---- the router's side ----------------------------------------------------------------------- */

static void shadow_free(struct msm_shadow *sh)
{
    for (int i = 0; i < sh->n; i++) {
        free(sh->t[i].cluster);
        if (sh->m[i]) {
            sh->m[i]->sh = NULL;
        }
    }
    free(sh->t);
    free(sh->m);
    msm_hdrs_deinit(&sh->hdrs);
    msm_cluster_unref(sh->main);
    free(sh);
}

static bool shadow_attached(const struct msm_shadow *sh)
{
    for (int i = 0; i < sh->n; i++) {
        if (sh->m[i]) {
            return true;
        }
    }
    return false;
}

/* Which policies fire for this request (runtime fraction drawn now, cluster named); NULL when
 * none. Nothing is sent yet. */
static struct msm_shadow *shadow_pick(const struct msm_mirror_policies *mp,
                                      const struct msm_hdrs *down, const struct msm_hdrs *up,
                                      const struct msm_shadow_stats *st)
{
    if (!mp || !mp->n) {
        return NULL;
    }
    /* Tunnels (upgrades, CONNECT) are never mirrored (Envoy). */
    const char *method = msm_hdrs_get(down, ":method");
    if (msm_hdrs_find(down, "upgrade") || (method && !strcmp(method, "CONNECT"))) {
        return NULL;
    }
    struct msm_shadow *sh = NULL;
    for (int i = 0; i < mp->n; i++) {
        const struct msm_mirror_policy *p = &mp->v[i];
        /* Envoy's featureEnabled on the default value: random % denominator < numerator. */
        if (!p->den || msm_random() % p->den >= p->num) {
            continue;
        }
        const char *name = p->cluster ? p->cluster : msm_hdrs_get(down, p->cluster_header);
        if (!name || !name[0]) {
            continue;
        }
        if (!sh) {
            sh = MSM_NEW(struct msm_shadow);
            sh->t = msm_xcalloc((size_t)mp->n, sizeof(*sh->t));
            sh->m = msm_xcalloc((size_t)mp->n, sizeof(*sh->m));
            sh->stats = st;
            msm_hdrs_init(&sh->hdrs);
            msm_hdrs_copy(&sh->hdrs, up);
        }
        sh->t[sh->n].cluster = msm_xstrdup(name);
        sh->t[sh->n].keep_host = p->keep_host;
        sh->n++;
    }
    return sh;
}

struct msm_shadow *msm_shadow_begin(const struct msm_mirror_policies *mp,
                                    const struct msm_hdrs *down, const struct msm_hdrs *up,
                                    const struct msm_shadow_stats *st, struct msm_http_stream *s,
                                    struct msm_cluster *main, uint32_t timeout_ms, bool end_stream)
{
    struct msm_shadow *sh = shadow_pick(mp, down, up, st);
    if (!sh) {
        return NULL;
    }
    sh->main = main ? msm_cluster_ref(main) : NULL;
    /* Envoy gives a shadow stream the router's retry/shadow buffer limit, at least 1 byte. */
    uint32_t limit = msm_hs_buffer_limit(s);
    sh->limit = limit ? limit : 1;
    sh->timeout_ms = timeout_ms;
    struct msm_worker *w = msm_hs_worker(s);
    for (int i = 0; i < sh->n; i++) {
        struct msm_cluster *c = w && w->snap ? msm_snapshot_cluster(w->snap, sh->t[i].cluster)
                                             : NULL;
        if (!c) {
            msm_stat_inc(sh->stats->shadow_no_cluster);
            msm_log(MSM_LOG_DEBUG, MSM_LC_ROUTER, "shadow cluster '%s' does not exist",
                    sh->t[i].cluster);
            continue;
        }
        start_one(sh, i, c, s, end_stream);
    }
    if (!shadow_attached(sh)) {
        shadow_free(sh);
        return NULL;
    }
    return sh;
}

void msm_shadow_data(struct msm_shadow **shp, const struct msm_buf *data, bool end_stream)
{
    struct msm_shadow *sh = *shp;
    if (!sh) {
        return;
    }
    for (int i = 0; i < sh->n; i++) {
        struct mirror *m = sh->m[i];
        if (m && data->len) {
            shadow_feed(sh, m, data);
        }
        if (end_stream && sh->m[i]) {
            detach(sh->m[i]);
        }
    }
    if (end_stream || !shadow_attached(sh)) {
        shadow_free(sh);
        *shp = NULL;
    }
}

void msm_shadow_trailers(struct msm_shadow **shp, const struct msm_hdrs *t)
{
    struct msm_shadow *sh = *shp;
    if (!sh) {
        return;
    }
    *shp = NULL;
    for (int i = 0; i < sh->n; i++) {
        struct mirror *m = sh->m[i];
        if (m && !m->trailers) {
            m->trailers = msm_hdrs_new();
            msm_hdrs_copy(m->trailers, t);
        }
        if (m) {
            detach(m);
        }
    }
    shadow_free(sh);
}

void msm_shadow_cancel(struct msm_shadow **shp)
{
    struct msm_shadow *sh = *shp;
    if (!sh) {
        return;
    }
    *shp = NULL;
    for (int i = 0; i < sh->n; i++) {
        if (sh->m[i]) {
            mirror_done(sh->m[i], true); /* Envoy cancels the shadow stream: a reset */
        }
    }
    shadow_free(sh);
}
