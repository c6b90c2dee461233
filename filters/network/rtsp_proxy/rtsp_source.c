/* The upstream side of the RTSP proxy: one RTSP session towards the server per source, shared
 * by its subscribers (fan-out), and the relay of its media (see rtsp_private.h for the model).
 *
 * States of a source:
 *   CONNECTING  control connection to the chosen host in flight;
 *   DESCRIBING  DESCRIBE sent (with the creating client's end-to-end headers);
 *   READY       SDP cached; tracks are set up upstream on demand (first client asking), PLAY is
 *               sent upstream once, by the first client that plays;
 *   FAILED      connect or DESCRIBE failed, the server closed, a request timed out: clients
 *               still waiting get <fail_status>, playing ones are disconnected; no longer in the
 *               registry, so the next client starts afresh.
 * A hub is destroyed when no client and no mirror is bound: at once without fan-out, after the
 * linger time with it (a new client or mirror stops the timer; the timer gives way to a mirror
 * still on its way, see rtsp_stream_busy). Destruction sends TEARDOWN, closes the control
 * connection (flushing), closes every UDP socket and frees the memory after the current
 * callback stack. Mirrors (rtsp_xworker.c) share this struct, the binding of clients and the
 * state fields clients read; they never touch the upstream.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "accesslog/stream_info.h"
#include "common/alloc.h"
#include "common/log.h"
#include "event/deferred.h"
#include "filter/upstream.h"
#include "filter/manager.h"
#include "filters/network/rtsp_proxy/rtsp_private.h"
#include "server/worker.h"

#define RR_INTERVAL 5.0

static void src_destroy(struct rtsp_source *s, bool teardown);

/* ---- upstream control connection --------------------------------------------------------- */

static void up_on_read(struct msm_conn *c, void *ctx, bool end_stream);
static void up_on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev);

static const struct msm_conn_handler up_handler = {
    .on_read = up_on_read,
    .on_event = up_on_event,
};

static void detached_read(struct msm_conn *c, void *ctx, bool end_stream)
{
    (void)ctx;
    (void)end_stream;
    msm_buf_drain(&c->in, c->in.len);
}

static void detached_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev)
{
    (void)c;
    (void)ctx;
    (void)ev;
}

/* A connection we no longer listen to while it flushes its last bytes (TEARDOWN). */
static const struct msm_conn_handler detached_handler = {
    .on_read = detached_read,
    .on_event = detached_event,
};

/* Release the upstream connection's accounting and the connection itself. */
static void up_release(struct rtsp_source *s, bool flush, bool remote)
{
    if (s->up) {
        struct msm_conn *up = s->up;
        s->up = NULL;
        msm_conn_set_handler(up, &detached_handler, NULL);
        msm_conn_close(up, flush ? MSM_CLOSE_FLUSH : MSM_CLOSE_NOFLUSH);
        if (s->cluster) {
            struct msm_cluster_stats *cs = &s->cluster->sh->stats;
            msm_stat_dec(cs->upstream_cx_active);
            msm_stat_dec(cs->upstream_rq_active);
            msm_stat_inc(cs->upstream_cx_destroy);
            msm_stat_inc(remote ? cs->upstream_cx_destroy_remote : cs->upstream_cx_destroy_local);
        }
    }
    if (s->host) {
        atomic_fetch_sub(&s->host->active_cx, 1);
        atomic_fetch_sub(&s->host->active_rq, 1);
        msm_host_unref(s->host);
        s->host = NULL;
    }
    if (s->cluster) {
        if (s->cx_reserved) {
            msm_cluster_cx_release(s->cluster);
            s->cx_reserved = false;
        }
        msm_cluster_unref(s->cluster);
        s->cluster = NULL;
    }
}

static void pending_free_all(struct rtsp_source *s)
{
    while (s->pend) {
        struct rtsp_pending *p = s->pend;
        s->pend = p->next;
        free(p);
    }
    s->pend_tail = NULL;
}

static void rq_timer_arm(struct rtsp_source *s)
{
    ev_timer_stop(s->loop, &s->rq_timer);
    if (s->pend && s->cfg->request_timeout_ms) {
        double left = s->pend->sent + s->cfg->request_timeout_ms / 1000.0 - ev_now(s->loop);
        ev_timer_set(&s->rq_timer, left > 0.001 ? left : 0.001, 0);
        ev_timer_start(s->loop, &s->rq_timer);
    }
}

void rtsp_source_up_write(struct rtsp_source *s, struct msm_buf *b)
{
    if (!s->up) {
        msm_buf_drain(b, b->len);
        return;
    }
    if (s->upf) {
        msm_upstream_chain_on_write(s->upf, b, false);
        rtsp_upeer_capture(s); /* the exchange may be over at once (no ALPN: no peer) */
    }
    if (s->up) {
        msm_conn_write(s->up, b, false);
    } else {
        msm_buf_drain(b, b->len);
    }
}

/* Send a request upstream. <extra>: more header lines ("Name: value\r\n"...). */
static void src_send(struct rtsp_source *s, enum msm_rtsp_method m, const char *url,
                     const char *extra, int track, bool tcp, const struct rtsp_who *who)
{
    if (!s->up) {
        return;
    }
    struct msm_buf b;
    msm_buf_init(&b);
    uint32_t cseq = ++s->cseq;
    msm_buf_appendf(&b, "%s %s RTSP/1.0\r\nCSeq: %u\r\n", msm_rtsp_method_name(m), url, cseq);
    msm_buf_appendf(&b, "User-Agent: %s\r\n", s->user_agent ? s->user_agent : "msm-proxy");
    if (s->has_session && m != MSM_RTSP_M_DESCRIBE) {
        msm_buf_appendf(&b, "Session: %s\r\n", s->session);
    }
    if (extra) {
        msm_buf_append(&b, extra, strlen(extra));
    }
    msm_buf_append(&b, "\r\n", 2);
    if (m != MSM_RTSP_M_TEARDOWN) {
        struct rtsp_pending *p = MSM_NEW(struct rtsp_pending);
        p->cseq = cseq;
        p->method = m;
        p->track = track;
        p->tcp = tcp;
        p->who = *who;
        p->sent = ev_now(s->loop);
        if (s->pend_tail) {
            s->pend_tail->next = p;
        } else {
            s->pend = p;
        }
        s->pend_tail = p;
        if (s->pend == p) {
            rq_timer_arm(s);
        }
    }
    msm_stat_inc(s->cfg->stats.upstream_rq_total);
    msm_log(MSM_LOG_DEBUG, MSM_LC_RTSP, "[C%llu] rtsp upstream: %s %s (CSeq %u)", s->up->id,
            msm_rtsp_method_name(m), url, cseq);
    rtsp_source_up_write(s, &b);
    msm_buf_deinit(&b);
}

static const struct rtsp_who nobody;

/* Hand the failure of an operation to whoever started it (unless <keep_first> and they have
 * one already). <headers>: relayed with it (WWW-Authenticate...), or NULL. */
static void who_fail(struct rtsp_source *s, const struct rtsp_who *w, int status,
                     const char *headers, bool keep_first)
{
    if (w->client) {
        if (!keep_first || !w->client->fail_status) {
            w->client->fail_status = status;
            if (headers) {
                free(w->client->fail_headers);
                w->client->fail_headers = msm_xstrdup(headers);
            }
        }
    } else if (w->peer) {
        rtsp_hub_answer(s, w->peer, w->client_id, RTSP_ANSWER_FAIL, status, headers);
    }
}

void rtsp_source_wake_all(struct rtsp_source *s)
{
    /* Waking is asynchronous (the client reruns its request on its next loop iteration). */
    for (int i = 0; i < s->n_waiters; i++) {
        rtsp_client_wake(s->waiters[i]);
    }
    s->n_waiters = 0;
    if (s->n_peers) {
        rtsp_hub_publish(s, NULL); /* mirrors wake theirs */
    }
}

static void wake_all(struct rtsp_source *s)
{
    rtsp_source_wake_all(s);
}

/* The source cannot serve any more: answer waiters with <status>, drop playing clients. */
static void src_fail(struct rtsp_source *s, int status, const char *why)
{
    if (s->state == RTSP_SRC_FAILED || s->dead) {
        return;
    }
    msm_log(MSM_LOG_INFO, MSM_LC_RTSP, "rtsp source %s (cluster '%s'): failed: %s", s->url,
            s->cluster_name, why);
    if (s->state == RTSP_SRC_READY) {
        msm_stat_inc(s->cfg->stats.upstream_session_failed);
    }
    s->state = RTSP_SRC_FAILED;
    if (!s->fail_status) {
        s->fail_status = status;
    }
    rtsp_registry_remove(s);
    for (struct rtsp_pending *p = s->pend; p; p = p->next) {
        who_fail(s, &p->who, s->fail_status, NULL, true);
    }
    pending_free_all(s);
    ev_timer_stop(s->loop, &s->rq_timer);
    ev_timer_stop(s->loop, &s->keepalive);
    ev_timer_stop(s->loop, &s->rr_timer);
    up_release(s, false, true);
    for (struct rtsp_client *c = s->clients; c; c = c->bnext) {
        if (c->has_session) {
            c->lost = true;
            rtsp_client_wake(c);
        }
    }
    wake_all(s);
}

/* ---- the source object ------------------------------------------------------------------- */

static void src_free(void *p)
{
    struct rtsp_source *s = p;
    msm_upstream_chain_free(s->upf);
    msm_si_deinit(&s->up_si);
    rtsp_upeer_unref(s->upeer);
    free(s->key);
    free(s->cluster_name);
    free(s->fwd_headers);
    free(s->fail_headers);
    free(s->sdp);
    free(s->describe_headers);
    free(s->range);
    free(s->waiters);
    free(s->auth);
    free(s->user_agent);
    if (s->sstats) {
        msm_rtsp_stream_stats_deinit(s->sstats);
        free(s->sstats);
        atomic_fetch_sub(&s->cfg->stream_stats, 1);
    }
    rtsp_smetrics_unref(s->ms); /* the upstream session's series go */
    msm_rtsp_config_unref(s->cfg);
    free(s);
}

static void track_close(struct rtsp_track *t)
{
    msm_udp_sock_close(&t->up_rtp);
    msm_udp_sock_close(&t->up_rtcp);
    msm_udp_sock_close(&t->dn_rtp);
    msm_udp_sock_close(&t->dn_rtcp);
    while (t->subs) {
        rtsp_track_unlink(t, t->subs);
    }
    free(t->fan);
    t->fan = NULL;
    t->n_fan = t->cap_fan = 0;
}

/* Tear the source down: TEARDOWN upstream when a session exists (if <teardown>), release
 * everything, free the memory once the callback stack unwound. No client may be bound. */
static void src_destroy(struct rtsp_source *s, bool teardown)
{
    if (s->dead) {
        return;
    }
    s->dead = true;
    rtsp_registry_remove(s);
    rtsp_ws_unlink(s);
    if (s->remote) {
        rtsp_mirror_detach(s);
    } else {
        rtsp_hub_drop_peers(s);
    }
    ev_timer_stop(s->loop, &s->linger);
    ev_timer_stop(s->loop, &s->keepalive);
    ev_timer_stop(s->loop, &s->rq_timer);
    ev_timer_stop(s->loop, &s->rr_timer);
    if (teardown && s->up && s->has_session) {
        char extra[512] = "";
        if (s->auth && strlen(s->auth) < 400) {
            snprintf(extra, sizeof(extra), "Authorization: %s\r\n", s->auth);
        }
        src_send(s, MSM_RTSP_M_TEARDOWN, s->url, extra, -1, false, &nobody);
    }
    pending_free_all(s);
    up_release(s, !s->ws->closing, false);
    for (int i = 0; i < s->n_tracks; i++) {
        track_close(&s->tracks[i]);
    }
    if (s->remote) {
        msm_stat_dec(s->cfg->stats.fanout_mirrors_active);
    } else {
        msm_stat_dec(s->cfg->stats.upstream_sessions_active);
    }
    msm_log(MSM_LOG_DEBUG, MSM_LC_RTSP, "rtsp source %s (cluster '%s') closed", s->url,
            s->cluster_name);
    msm_defer(s->loop, src_free, s);
}

void rtsp_source_destroy(struct rtsp_source *s)
{
    src_destroy(s, true);
}

static void on_linger(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct rtsp_source *s = MSM_CONTAINER_OF(w, struct rtsp_source, linger);
    if (rtsp_stream_busy(s)) {
        return; /* a mirror of another worker is attaching: its detach restarts the linger */
    }
    src_destroy(s, true);
}

static void on_keepalive(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct rtsp_source *s = MSM_CONTAINER_OF(w, struct rtsp_source, keepalive);
    if (s->state == RTSP_SRC_READY && s->up) {
        src_send(s, MSM_RTSP_M_OPTIONS, s->url, NULL, -1, false, &nobody);
    }
}

static void on_rq_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct rtsp_source *s = MSM_CONTAINER_OF(w, struct rtsp_source, rq_timer);
    msm_stat_inc(s->cfg->stats.upstream_rq_timeout);
    src_fail(s, 504, "upstream request timed out");
}

static void on_rr(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct rtsp_source *s = MSM_CONTAINER_OF(w, struct rtsp_source, rr_timer);
    for (int i = 0; i < s->n_tracks; i++) {
        if (s->tracks[i].state == RTSP_TRACK_READY) {
            rtsp_track_send_rr(s, &s->tracks[i]);
        }
    }
}

/* Stat-safe name of a stream: the path without its leading '/', [A-Za-z0-9_-] kept, others '_'. */
static void stream_stat_name(const char *path_query, char *out, size_t cap)
{
    size_t k = 0;
    const char *p = path_query;
    while (*p == '/') {
        p++;
    }
    for (; *p && *p != '?' && k + 1 < cap && k < 64; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        out[k++] = ok ? c : '_';
    }
    if (!k) {
        out[k++] = '_';
    }
    out[k] = '\0';
}

/* Copy a header value of <m> into a new string, or NULL. */
static char *header_dup(const struct msm_rtsp_msg *m, const char *name)
{
    const struct msm_rtsp_hdr *h = msm_rtsp_header(m, name);
    return h ? msm_xstrndup(h->value.p, h->value.n) : NULL;
}

static void src_connect(struct rtsp_source *s, struct msm_worker *w)
{
    struct msm_cluster *c = w->snap ? msm_snapshot_cluster(w->snap, s->cluster_name) : NULL;
    if (!c) {
        msm_log(MSM_LOG_DEBUG, MSM_LC_RTSP, "rtsp: unknown cluster '%s'", s->cluster_name);
        src_fail(s, 503, "unknown cluster");
        return;
    }
    s->cluster = msm_cluster_ref(c);
    if (!msm_cluster_cx_reserve(c)) {
        src_fail(s, 503, "cluster max_connections reached");
        return;
    }
    s->cx_reserved = true;
    struct msm_cluster_stats *cs = &c->sh->stats;
    struct msm_host *host;
    if (c->cfg->type == MSM_CLUSTER_ORIGINAL_DST) {
        /* CLUSTER_PROVIDED: where the client connected to, as tcp_proxy does. */
        host = msm_host_new(&s->orig_dst, NULL, 1);
    } else {
        host = msm_lb_choose(c, 0);
        if (!host) {
            msm_stat_inc(cs->upstream_cx_none_healthy);
            src_fail(s, 503, "no healthy upstream");
            return;
        }
        atomic_fetch_add(&host->refs, 1);
    }
    s->host = host;
    atomic_fetch_add(&host->active_cx, 1);
    atomic_fetch_add(&host->active_rq, 1);
    atomic_fetch_add(&host->cx_total, 1);
    atomic_fetch_add(&host->rq_total, 1);
    msm_address_str(&host->addr, s->up_authority, sizeof(s->up_authority));
    int rc = 0;
    s->up = msm_conn_connect(s->loop, &host->addr, c->cfg->has_bind ? &c->cfg->bind : NULL,
                             c->cfg->connect_timeout_ms, &up_handler, s, &rc);
    msm_stat_inc(cs->upstream_cx_total);
    msm_stat_inc(cs->upstream_rq_total);
    if (!s->up) {
        msm_stat_inc(cs->upstream_cx_connect_fail);
        src_fail(s, 503, "cannot create upstream socket");
        return;
    }
    msm_stat_inc(cs->upstream_cx_active);
    msm_stat_inc(cs->upstream_rq_active);
    msm_conn_set_watermarks(s->up, c->cfg->per_connection_buffer_limit);
    /* TLS to this host (ISTIO_MUTUAL, auto-mTLS): control runs inside it, and so does media
     * (interleaved), so nothing crosses the mesh in clear. */
    s->up_tls = msm_cluster_transport(c->cfg, host) != NULL;
    msm_cluster_attach_transport(c->cfg, host, s->up);
    msm_upstream_chain_free(s->upf);
    s->upf_si = &s->up_si;
    s->upf = c->cfg->filters ? msm_upstream_chain_new(c->cfg->filters, &s->up, &s->upf_si) : NULL;
}

struct rtsp_source *rtsp_source_alloc(struct rtsp_wstate *ws, struct msm_rtsp_config *cfg,
                                      char *key, const char *cluster,
                                      const struct msm_rtsp_msg *req)
{
    struct rtsp_source *s = MSM_NEW(struct rtsp_source);
    s->ws = ws;
    s->id = rtsp_new_id();
    s->cfg = msm_rtsp_config_ref(cfg);
    s->loop = ws->loop;
    s->key = key;
    s->cluster_name = msm_xstrdup(cluster);
    s->created = ev_now(ws->loop);
    const char *pq = strchr(key, '\n');
    stream_stat_name(pq ? pq + 1 : key, s->stream_name, sizeof(s->stream_name));
    snprintf(s->url, sizeof(s->url), "%.*s", (int)req->uri.n, req->uri.p);
    snprintf(s->base, sizeof(s->base), "%s", s->url);
    msm_si_init(&s->up_si, s->created, s->created);
    for (int i = 0; i < RTSP_MAX_TRACKS; i++) {
        s->tracks[i].src = s;
        s->tracks[i].idx = i;
        s->tracks[i].up_rtp.fd = s->tracks[i].up_rtcp.fd = -1;
        s->tracks[i].dn_rtp.fd = s->tracks[i].dn_rtcp.fd = -1;
    }
    ev_init(&s->linger, on_linger);
    ev_init(&s->keepalive, on_keepalive);
    ev_init(&s->rq_timer, on_rq_timeout);
    ev_init(&s->rr_timer, on_rr);
    rtsp_ws_link(s);
    return s;
}

/* A new hub for <key> (taking it), in the worker registry with fan-out. */
static struct rtsp_source *hub_new(struct rtsp_client *c, char *key, const char *cluster,
                                   const char *path_query, const struct msm_rtsp_msg *req,
                                   struct rtsp_stream *st)
{
    struct msm_rtsp_config *cfg = c->cfg;
    struct rtsp_source *s = rtsp_source_alloc(rtsp_wstate(c->loop), cfg, key, cluster, req);
    s->own_ssrc = (uint32_t)msm_random();
    snprintf(s->cname, sizeof(s->cname), "msm-proxy-%08x", s->own_ssrc);
    s->auth = header_dup(req, "Authorization");
    s->user_agent = header_dup(req, "User-Agent");
    msm_stat_inc(cfg->stats.upstream_sessions_total);
    msm_stat_inc(cfg->stats.upstream_sessions_active);
    if (atomic_fetch_add(&cfg->stream_stats, 1) < MSM_RTSP_MAX_STREAM_STATS) {
        /* A bounded, rare creation on the worker (once per stream), off the packet path. */
        char prefix[256];
        snprintf(prefix, sizeof(prefix), "%sstream.%s.", cfg->stat_prefix, s->stream_name);
        s->sstats = MSM_NEW(struct msm_rtsp_stream_stats);
        msm_rtsp_stream_stats_init(cfg->store, prefix, s->sstats);
    } else {
        atomic_fetch_sub(&cfg->stream_stats, 1);
    }
    if (st) {
        rtsp_stream_set_hub(st, s);
        rtsp_registry_add(s);
    }
    char id[32];
    snprintf(id, sizeof(id), "up-%llu", (unsigned long long)s->id);
    s->ms = rtsp_smetrics_new(cfg, RTSP_ROLE_UPSTREAM, id, s->stream_name, ev_time());
    s->state = RTSP_SRC_CONNECTING;
    s->orig_dst = msm_filter_conn(c->h)->local;
    src_connect(s, msm_filter_worker(c->h));
    rtsp_smetrics_set_address(s->ms, s->up_authority);
    return s;
}

struct rtsp_source *rtsp_source_bind(struct rtsp_client *c, const char *cluster,
                                     const char *path_query, const struct msm_rtsp_msg *req)
{
    struct msm_rtsp_config *cfg = c->cfg;
    struct rtsp_wstate *ws = rtsp_wstate(c->loop);
    size_t klen = strlen(cluster) + strlen(path_query) + 2;
    char *key = msm_xmalloc(klen);
    snprintf(key, klen, "%s\n%s", cluster, path_query);
    struct rtsp_source *s = NULL;
    if (cfg->fanout) {
        s = rtsp_registry_find(ws, key);
    }
    if (s) {
        /* A hub or a mirror of this worker. */
        free(key);
        if (ev_is_active(&s->linger)) {
            ev_timer_stop(s->loop, &s->linger);
        }
        /* Joined an upstream session that exists (ready, or still being set up: the client
         * waits for it rather than opening its own). */
        msm_stat_inc(cfg->stats.fanout_joins);
        if (s->remote) {
            msm_stat_inc(cfg->stats.fanout_cross_worker_joins);
        }
    } else if (!cfg->fanout) {
        s = hub_new(c, key, cluster, path_query, req, NULL);
    } else {
        /* Process-wide: the hub of another worker (then we get a mirror of it), or ours. */
        struct rtsp_stream *st = rtsp_stream_claim(ws, key);
        if (rtsp_stream_is_remote(st, ws)) {
            s = rtsp_mirror_new(c, st, key, cluster, req);
            msm_stat_inc(cfg->stats.fanout_joins);
            msm_stat_inc(cfg->stats.fanout_cross_worker_joins);
        } else {
            s = hub_new(c, key, cluster, path_query, req, st);
        }
    }
    s->refs++;
    c->bnext = s->clients;
    c->bprev = NULL;
    if (s->clients) {
        s->clients->bprev = c;
    }
    s->clients = c;
    /* The client's connection now follows <cluster>: its stream info names it and the host a
     * hub of this worker chose, as tcp_proxy's would (istio.stats' destination_service labels,
     * access logs' %UPSTREAM_CLUSTER% and %UPSTREAM_HOST%). */
    struct msm_worker *w = msm_filter_worker(c->h);
    struct msm_cluster *cl = w && w->snap ? msm_snapshot_cluster(w->snap, cluster) : NULL;
    struct msm_stream_info *si = msm_filter_stream_info(c->h);
    struct msm_host *host = s->remote ? NULL : s->host;
    if (cl && si && (si->upstream_cluster != cl->cfg || (host && si->upstream_host != host))) {
        msm_si_set_upstream(si, cl->cfg, host ? host : si->upstream_host);
    }
    /* The server side, when the session's exchange is over already (else at capture). */
    rtsp_upeer_attach(c, s->upeer);
    return s;
}

void rtsp_source_release(struct rtsp_source *s)
{
    if (s->refs > 0 || s->n_peers > 0 || s->dead) {
        return;
    }
    if (!s->remote && s->state == RTSP_SRC_READY && s->in_registry && s->cfg->fanout_linger_ms) {
        ev_timer_set(&s->linger, s->cfg->fanout_linger_ms / 1000.0, 0);
        ev_timer_start(s->loop, &s->linger);
        return;
    }
    src_destroy(s, true);
}

void rtsp_source_unbind(struct rtsp_source *s, struct rtsp_client *c)
{
    rtsp_source_unwait(s, c);
    for (struct rtsp_pending *p = s->pend; p; p = p->next) {
        if (p->who.client == c) {
            p->who.client = NULL;
        }
    }
    if (s->remote && c->x_subs) {
        rtsp_mirror_sub_remove(s, c, -1);
    }
    c->x_subs = false;
    c->xwait = RTSP_XW_NONE;
    c->x_ready = false;
    if (c->bprev) {
        c->bprev->bnext = c->bnext;
    } else if (s->clients == c) {
        s->clients = c->bnext;
    }
    if (c->bnext) {
        c->bnext->bprev = c->bprev;
    }
    c->bnext = c->bprev = NULL;
    s->refs--;
    rtsp_source_release(s);
}

void rtsp_source_wait(struct rtsp_source *s, struct rtsp_client *c)
{
    for (int i = 0; i < s->n_waiters; i++) {
        if (s->waiters[i] == c) {
            return;
        }
    }
    if (s->n_waiters == s->cap_waiters) {
        size_t cap = (size_t)s->cap_waiters;
        s->waiters = msm_xgrow(s->waiters, sizeof(*s->waiters), &cap, cap + 1);
        s->cap_waiters = (int)cap;
    }
    s->waiters[s->n_waiters++] = c;
}

void rtsp_source_unwait(struct rtsp_source *s, struct rtsp_client *c)
{
    for (int i = 0; i < s->n_waiters; i++) {
        if (s->waiters[i] == c) {
            s->waiters[i] = s->waiters[--s->n_waiters];
            return;
        }
    }
}

/* ---- responses from the server ---------------------------------------------------------- */

/* Headers of a DESCRIBE 200 worth relaying: all but those the proxy owns or regenerates. */
static char *relay_headers(const struct msm_rtsp_msg *m, bool only_auth)
{
    static const char *const skip[] = {
        "CSeq", "Session", "Content-Length", "Content-Base", "Content-Location", "Date", "Server",
        "Connection", "Transport", "Public", "RTP-Info", "Range", "Via", "Proxy-Require",
        "Keep-Alive", "Accept-Ranges"};
    struct msm_buf b;
    msm_buf_init(&b);
    for (int i = 0; i < m->n_hdr; i++) {
        const struct msm_rtsp_hdr *h = &m->hdr[i];
        bool take = true;
        if (only_auth) {
            take = msm_rtsp_str_ieq(h->name, "WWW-Authenticate");
        } else {
            for (size_t k = 0; k < MSM_ARRAY_SIZE(skip); k++) {
                if (msm_rtsp_str_ieq(h->name, skip[k])) {
                    take = false;
                    break;
                }
            }
        }
        if (take) {
            msm_buf_appendf(&b, "%.*s: %.*s\r\n", (int)h->name.n, h->name.p, (int)h->value.n,
                            h->value.p);
        }
    }
    char *s = msm_xmalloc(b.len + 1);
    msm_buf_copyout(&b, 0, s, b.len);
    s[b.len] = '\0';
    msm_buf_deinit(&b);
    return s;
}

static void on_describe(struct rtsp_source *s, const struct msm_rtsp_msg *m,
                        struct rtsp_pending *p)
{
    if (s->state == RTSP_SRC_READY) {
        /* A client's DESCRIBE verified by the server (auth-gated source). */
        struct rtsp_client *c = p->who.client;
        if (p->who.peer) {
            char *hd = m->status == 200 ? NULL : relay_headers(m, true);
            rtsp_hub_answer(s, p->who.peer, p->who.client_id, RTSP_ANSWER_VERIFIED, m->status,
                            hd);
            free(hd);
        }
        if (c) {
            c->verify_pending = false;
            if (m->status == 200) {
                c->verified = true;
            } else {
                c->fail_status = m->status;
                free(c->fail_headers);
                c->fail_headers = relay_headers(m, true);
            }
            rtsp_client_wake(c);
        }
        return;
    }
    if (m->status != 200) {
        s->fail_status = m->status;
        free(s->fail_headers);
        s->fail_headers = relay_headers(m, true);
        src_fail(s, m->status, "DESCRIBE refused");
        return;
    }
    const struct msm_rtsp_hdr *cb = msm_rtsp_header(m, "Content-Base");
    if (!cb) {
        cb = msm_rtsp_header(m, "Content-Location");
    }
    if (cb && msm_rtsp_url_is_absolute(cb->value.p, cb->value.n) &&
        cb->value.n < sizeof(s->base)) {
        snprintf(s->base, sizeof(s->base), "%.*s", (int)cb->value.n, cb->value.p);
    }
    struct msm_sdp_media media[RTSP_MAX_TRACKS];
    int n = msm_sdp_parse(m->body.p, m->body.n, media, RTSP_MAX_TRACKS, NULL, 0);
    if (n <= 0) {
        src_fail(s, 502, "DESCRIBE without a usable SDP");
        return;
    }
    for (int i = 0; i < n; i++) {
        struct rtsp_track *t = &s->tracks[i];
        if (msm_rtsp_url_resolve(s->base, media[i].control, t->url, sizeof(t->url)) < 0) {
            src_fail(s, 502, "SDP control URL too long");
            return;
        }
        snprintf(t->media, sizeof(t->media), "%s", media[i].type);
        t->clock_rate = media[i].clock_rate;
        t->rtx = media[i].rtx;
        t->nack_ok = media[i].nack || !msm_rtp_pt_set_empty(&media[i].rtx);
    }
    s->n_tracks = n;
    s->sdp = msm_xstrndup(m->body.p, m->body.n);
    s->sdp_len = m->body.n;
    s->describe_headers = relay_headers(m, false);
    s->auth_gated = s->auth != NULL;
    s->state = RTSP_SRC_READY;
    wake_all(s);
}

/* The server's answer to one of our SETUPs. */
static void on_setup(struct rtsp_source *s, const struct msm_rtsp_msg *m, struct rtsp_pending *p)
{
    if (p->track < 0 || p->track >= s->n_tracks) {
        return;
    }
    struct rtsp_track *t = &s->tracks[p->track];
    if (m->status == 461 && s->cfg->upstream_transport == MSM_RTSP_UP_AUTO && !t->tried_other &&
        !s->up_tls) {
        /* Unsupported Transport: try the other lower transport once. */
        t->tried_other = true;
        t->state = RTSP_TRACK_NONE;
        msm_udp_sock_close(&t->up_rtp);
        msm_udp_sock_close(&t->up_rtcp);
        int rc = rtsp_hub_setup_track(s, t->idx, !p->tcp, &p->who, t->url, NULL);
        if (rc) {
            who_fail(s, &p->who, rc, NULL, false);
        }
        wake_all(s);
        return;
    }
    struct msm_rtsp_transport tr[MSM_RTSP_MAX_TRANSPORTS];
    const struct msm_rtsp_hdr *th = msm_rtsp_header(m, "Transport");
    int nt = th ? msm_rtsp_transport_parse(th->value.p, th->value.n, tr, 1) : 0;
    if (m->status != 200 || nt < 1) {
        t->state = RTSP_TRACK_NONE;
        msm_udp_sock_close(&t->up_rtp);
        msm_udp_sock_close(&t->up_rtcp);
        char *hd = m->status == 401 ? relay_headers(m, true) : NULL;
        who_fail(s, &p->who, m->status != 200 ? m->status : 502, hd, false);
        free(hd);
        wake_all(s);
        return;
    }
    struct msm_rtsp_str sid = msm_rtsp_session_id(m);
    if (sid.n && sid.n < sizeof(s->session)) {
        snprintf(s->session, sizeof(s->session), "%.*s", (int)sid.n, sid.p);
        s->has_session = true;
        const struct msm_rtsp_hdr *sh = msm_rtsp_header(m, "Session");
        const char *to = sh ? memmem(sh->value.p, sh->value.n, "timeout=", 8) : NULL;
        s->up_timeout_s = to ? (uint32_t)strtoul(to + 8, NULL, 10) : 60;
        if (s->up_timeout_s < 10 || s->up_timeout_s > 3600) {
            s->up_timeout_s = 60;
        }
    }
    t->up_tcp = tr[0].lower == MSM_RTSP_LOWER_TCP;
    if (t->up_tcp) {
        if (tr[0].has_interleaved) {
            t->up_ch[0] = tr[0].interleaved[0];
            t->up_ch[1] = tr[0].interleaved[1];
        }
        /* else keep what we asked for (servers that omit it, gortsplib#142) */
        msm_udp_sock_close(&t->up_rtp);
        msm_udp_sock_close(&t->up_rtcp);
    } else {
        if (tr[0].has_server_port) {
            t->has_server_port = true;
            t->server_port[0] = tr[0].server_port[0];
            t->server_port[1] = tr[0].server_port[1];
        }
        if (t->up_rtp.fd < 0) {
            t->state = RTSP_TRACK_NONE;
            who_fail(s, &p->who, 461, NULL, false); /* answered UDP to an interleaved request */
            wake_all(s);
            return;
        }
    }
    if (tr[0].has_ssrc) {
        t->have_ssrc = true;
        t->ssrc = tr[0].ssrc;
    }
    t->state = RTSP_TRACK_READY;
    rtsp_smetrics_add_transport(s->ms, t->up_tcp);
    if (!t->up_tcp && s->host && t->has_server_port) {
        /* Open the NAT/firewall path towards the server's ports (a "hole punch" RTCP RR). */
        rtsp_track_send_rr(s, t);
    }
    if (!ev_is_active(&s->keepalive)) {
        double ka = s->up_timeout_s / 2.0;
        ev_timer_set(&s->keepalive, ka, ka);
        ev_timer_start(s->loop, &s->keepalive);
    }
    if (!ev_is_active(&s->rr_timer)) {
        ev_timer_set(&s->rr_timer, RR_INTERVAL, RR_INTERVAL);
        ev_timer_start(s->loop, &s->rr_timer);
    }
    wake_all(s);
}

/* RTP-Info: url=...;seq=..;rtptime=.., ... -> per-track first seq/rtptime. */
static void parse_rtp_info(struct rtsp_source *s, struct msm_rtsp_str v)
{
    const char *p = v.p, *end = v.p + v.n;
    while (p < end) {
        const char *comma = p;
        while (comma < end && *comma != ',') {
            comma++;
        }
        const char *u = memmem(p, (size_t)(comma - p), "url=", 4);
        const char *sq = memmem(p, (size_t)(comma - p), "seq=", 4);
        const char *rt = memmem(p, (size_t)(comma - p), "rtptime=", 8);
        if (u) {
            const char *ue = u + 4;
            while (ue < comma && *ue != ';') {
                ue++;
            }
            int idx = rtsp_source_find_track(s, u + 4, (size_t)(ue - (u + 4)));
            if (idx >= 0) {
                struct rtsp_track *t = &s->tracks[idx];
                if (sq) {
                    t->info_seq = (uint16_t)strtoul(sq + 4, NULL, 10);
                    t->have_info = true;
                }
                if (rt) {
                    t->info_ts = (uint32_t)strtoul(rt + 8, NULL, 10);
                }
            }
        }
        p = comma < end ? comma + 1 : end;
    }
}

static void on_play(struct rtsp_source *s, const struct msm_rtsp_msg *m, struct rtsp_pending *p)
{
    if (m->status != 200) {
        s->play = RTSP_PLAY_IDLE;
        who_fail(s, &p->who, m->status, NULL, false);
        wake_all(s);
        return;
    }
    const struct msm_rtsp_hdr *ri = msm_rtsp_header(m, "RTP-Info");
    if (ri) {
        parse_rtp_info(s, ri->value);
    }
    free(s->range);
    s->range = header_dup(m, "Range");
    s->play = RTSP_PLAY_ON;
    rtsp_smetrics_setup_done(s->ms, ev_now(s->loop) - s->created);
    wake_all(s);
}

static void on_response(struct rtsp_source *s, const struct msm_rtsp_msg *m)
{
    uint32_t cseq;
    if (!msm_rtsp_cseq(m, &cseq)) {
        return;
    }
    struct rtsp_pending *p = s->pend, *prev = NULL;
    while (p && p->cseq != cseq) {
        prev = p;
        p = p->next;
    }
    if (!p) {
        return; /* TEARDOWN, or a late answer to a request already failed */
    }
    if (prev) {
        prev->next = p->next;
    } else {
        s->pend = p->next;
    }
    if (s->pend_tail == p) {
        s->pend_tail = prev;
    }
    rq_timer_arm(s);
    msm_log(MSM_LOG_DEBUG, MSM_LC_RTSP, "rtsp upstream: %d for %s (CSeq %u)", m->status,
            msm_rtsp_method_name(p->method), cseq);
    switch (p->method) {
    case MSM_RTSP_M_DESCRIBE:
        on_describe(s, m, p);
        break;
    case MSM_RTSP_M_SETUP:
        on_setup(s, m, p);
        break;
    case MSM_RTSP_M_PLAY:
        on_play(s, m, p);
        break;
    default:
        break; /* keep-alives */
    }
    free(p);
}

/* A request from the server (RTSP lets servers send some): keep-alives get 200, the rest 501;
 * a TEARDOWN (2.0) or REDIRECT ends the source. */
static void on_server_request(struct rtsp_source *s, const struct msm_rtsp_msg *m)
{
    uint32_t cseq = 0;
    msm_rtsp_cseq(m, &cseq);
    int status = 501;
    if (m->method == MSM_RTSP_M_OPTIONS || m->method == MSM_RTSP_M_GET_PARAMETER ||
        m->method == MSM_RTSP_M_SET_PARAMETER || m->method == MSM_RTSP_M_PLAY_NOTIFY) {
        status = 200;
    } else if (m->method == MSM_RTSP_M_TEARDOWN || m->method == MSM_RTSP_M_REDIRECT) {
        status = 200;
    }
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_appendf(&b, "RTSP/%d.0 %d %s\r\nCSeq: %u\r\n\r\n", m->ver_major, status,
                    msm_rtsp_reason(status), cseq);
    rtsp_source_up_write(s, &b);
    msm_buf_deinit(&b);
    if (m->method == MSM_RTSP_M_TEARDOWN || m->method == MSM_RTSP_M_REDIRECT) {
        src_fail(s, 503, "the server ended the session");
    }
}

static void up_frame(struct rtsp_source *s, uint8_t ch, const uint8_t *p, size_t n)
{
    for (int i = 0; i < s->n_tracks; i++) {
        struct rtsp_track *t = &s->tracks[i];
        if (t->state != RTSP_TRACK_READY || !t->up_tcp) {
            continue;
        }
        if (ch == t->up_ch[0] || ch == t->up_ch[1]) {
            struct msm_udp_pkt pk;
            memset(&pk, 0, sizeof(pk));
            pk.data = (uint8_t *)p;
            pk.len = n;
            rtsp_track_media(t, &pk, 1, ch == t->up_ch[1]);
            return;
        }
    }
}

static void up_on_read(struct msm_conn *c, void *ctx, bool end_stream)
{
    struct rtsp_source *s = ctx;
    if (s->upf && s->up == c) {
        enum msm_filter_status st = msm_upstream_chain_on_data(s->upf, &c->in, end_stream);
        rtsp_upeer_capture(s); /* the server's peer metadata was read (or found absent) */
        if (st == MSM_FILTER_STOP) {
            return; /* a filter keeps the bytes for now (the peer's preamble), or closed */
        }
    }
    const struct msm_rtsp_limits lim = {.max_head = 64 * 1024, .max_headers = 64,
                                        .max_body = 256 * 1024};
    while (s->up == c && c->in.len && !s->dead) {
        size_t want = c->in.len < 4 + 65535 + lim.max_head + lim.max_body
                          ? c->in.len
                          : 4 + 65535 + lim.max_head + lim.max_body;
        const char *d = msm_buf_linearize(&c->in, want);
        struct msm_rtsp_msg m;
        uint8_t ch = 0;
        const uint8_t *pl = NULL;
        size_t pn = 0, total = 0;
        int rc = msm_rtsp_next(d, want, &lim, &m, &ch, &pl, &pn, &total);
        if (rc == MSM_RTSP_NEED_MORE) {
            return;
        }
        if (rc < 0) {
            src_fail(s, 502, "malformed message from the server");
            return;
        }
        if (rc == MSM_RTSP_FRAME) {
            up_frame(s, ch, pl, pn);
        } else if (m.is_response) {
            on_response(s, &m);
        } else {
            on_server_request(s, &m);
        }
        if (s->up == c) {
            msm_buf_drain(&c->in, total);
        }
    }
}

static void up_on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev)
{
    struct rtsp_source *s = ctx;
    if (ev == MSM_CONN_CONNECTED) {
        if (s->cluster) {
            msm_stat_record(s->cluster->sh->stats.upstream_cx_connect_ms,
                            (uint64_t)((ev_now(c->loop) - c->connect_start) * 1000.0));
        }
        s->connected = true;
        s->state = RTSP_SRC_DESCRIBING;
        struct msm_buf extra;
        msm_buf_init(&extra);
        msm_buf_appendf(&extra, "Accept: application/sdp\r\n");
        if (s->auth) {
            msm_buf_appendf(&extra, "Authorization: %s\r\n", s->auth);
        }
        char *x = msm_xmalloc(extra.len + 1);
        msm_buf_copyout(&extra, 0, x, extra.len);
        x[extra.len] = '\0';
        msm_buf_deinit(&extra);
        src_send(s, MSM_RTSP_M_DESCRIBE, s->url, x, -1, false, &nobody);
        free(x);
        return;
    }
    bool failed_connect = ev == MSM_CONN_CONNECT_FAILED || ev == MSM_CONN_CONNECT_TIMEOUT;
    if (failed_connect && s->cluster) {
        struct msm_cluster_stats *cs = &s->cluster->sh->stats;
        msm_stat_inc(ev == MSM_CONN_CONNECT_TIMEOUT ? cs->upstream_cx_connect_timeout
                                                    : cs->upstream_cx_connect_fail);
        if (s->host) {
            atomic_fetch_add(&s->host->cx_connect_fail, 1);
        }
    }
    /* The connection is closed already: account for it without closing it again. */
    if (s->up == c) {
        s->up = NULL;
        if (s->cluster) {
            struct msm_cluster_stats *cs = &s->cluster->sh->stats;
            msm_stat_dec(cs->upstream_cx_active);
            msm_stat_dec(cs->upstream_rq_active);
            msm_stat_inc(cs->upstream_cx_destroy);
            msm_stat_inc(cs->upstream_cx_destroy_remote);
        }
    }
    src_fail(s, 503, failed_connect ? "cannot connect to the server" : "the server closed");
}

/* ---- starting operations for clients ----------------------------------------------------- */

int rtsp_source_find_track(struct rtsp_source *s, const char *url, size_t n)
{
    struct msm_rtsp_url cu;
    const char *cpath = url;
    size_t cplen = n;
    if (msm_rtsp_url_is_absolute(url, n)) {
        if (msm_rtsp_url_parse(url, n, &cu) < 0) {
            return -1;
        }
        cpath = cu.rest;
        cplen = cu.rest_len;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < s->n_tracks; i++) {
            struct msm_rtsp_url tu;
            const struct rtsp_track *t = &s->tracks[i];
            if (msm_rtsp_url_parse(t->url, strlen(t->url), &tu) < 0) {
                continue;
            }
            if (pass == 0 && tu.rest_len == cplen && !memcmp(tu.rest, cpath, cplen)) {
                return i;
            }
            /* second pass: the path alone (clients add or drop query strings) */
            const char *q = memchr(cpath, '?', cplen);
            size_t cpl = q ? (size_t)(q - cpath) : cplen;
            if (pass == 1 && tu.path_len == cpl && !memcmp(tu.path, cpath, cpl)) {
                return i;
            }
        }
    }
    return -1;
}

/* Authorization for a request upstream: the client's (<auth>, NULL if none), else the one of
 * the DESCRIBE that created the source; as a header line in <out>, or "". */
static void auth_line(const struct rtsp_source *s, const char *auth, char *out, size_t cap)
{
    out[0] = '\0';
    if (auth && strlen(auth) < 400) {
        snprintf(out, cap, "Authorization: %s\r\n", auth);
    } else if (!auth && s->auth && strlen(s->auth) < 400) {
        snprintf(out, cap, "Authorization: %s\r\n", s->auth);
    }
}

int rtsp_hub_setup_track(struct rtsp_source *s, int idx, bool client_tcp,
                         const struct rtsp_who *who, const char *uri, const char *auth)
{
    struct rtsp_track *t = &s->tracks[idx];
    if (t->state != RTSP_TRACK_NONE || !s->up) {
        return 0;
    }
    bool tcp = client_tcp;
    if (s->cfg->upstream_transport == MSM_RTSP_UP_UDP) {
        tcp = false;
    } else if (s->cfg->upstream_transport == MSM_RTSP_UP_TCP) {
        tcp = true;
    }
    if (s->cfg->media_protection && !s->up_tls) {
        /* Protection asked for and no mTLS to this upstream: refuse rather than send media in
         * clear. */
        msm_stat_inc(s->cfg->stats.media_protection_refused);
        msm_log(MSM_LOG_WARN, MSM_LC_RTSP, "rtsp: media_protection requires an mTLS upstream; "
                "'%s' is not: answering 503", s->url);
        return 503;
    }
    if (s->up_tls) {
        /* Media rides inside the mTLS control connection (media_protection INTERLEAVED; also
         * SRTP_FROM_TLS until SRTP keying lands; and the default whenever the leg is mTLS). */
        tcp = true;
    }
    char extra[1024], al[512];
    if (tcp) {
        t->up_ch[0] = (uint8_t)(2 * idx);
        t->up_ch[1] = (uint8_t)(2 * idx + 1);
        auth_line(s, auth, al, sizeof(al));
        snprintf(extra, sizeof(extra), "Transport: RTP/AVP/TCP;unicast;interleaved=%u-%u\r\n%s",
                 t->up_ch[0], t->up_ch[1], al);
    } else {
        int fds[2];
        int rc = msm_rtp_pair_open(&s->cfg->ports, s->host ? msm_address_family(&s->host->addr)
                                                           : AF_INET,
                                   fds, &t->up_port);
        if (rc < 0) {
            if (rc == MSM_ELIMIT) {
                msm_stat_inc(s->cfg->stats.rtp_port_exhausted);
                msm_log(MSM_LOG_WARN, MSM_LC_RTSP, "rtsp: rtp_port_range [%u, %u) exhausted: "
                        "answering 453", s->cfg->ports.start, s->cfg->ports.end);
                return 453;
            }
            msm_log(MSM_LOG_WARN, MSM_LC_RTSP, "rtsp: cannot open RTP sockets: %s",
                    strerror(-rc));
            return 500;
        }
        msm_udp_sock_start(&t->up_rtp, s->loop, fds[0], rtsp_relay_up_rtp, t);
        msm_udp_sock_start(&t->up_rtcp, s->loop, fds[1], rtsp_relay_up_rtcp, t);
        t->up_rtp_latched = t->up_rtcp_latched = false;
        auth_line(s, auth, al, sizeof(al));
        snprintf(extra, sizeof(extra), "Transport: RTP/AVP;unicast;client_port=%u-%u\r\n%s",
                 t->up_port, t->up_port + 1, al);
    }
    t->state = RTSP_TRACK_SETTING_UP;
    src_send(s, MSM_RTSP_M_SETUP, uri && uri[0] ? uri : t->url, extra, idx, tcp, who);
    return 0;
}

void rtsp_hub_play(struct rtsp_source *s, const struct rtsp_who *who, const char *uri,
                   const char *auth)
{
    if (s->play != RTSP_PLAY_IDLE || !s->up) {
        return;
    }
    char extra[600], al[512];
    auth_line(s, auth, al, sizeof(al));
    snprintf(extra, sizeof(extra), "Range: npt=0.000-\r\n%s", al);
    s->play = RTSP_PLAY_PENDING;
    src_send(s, MSM_RTSP_M_PLAY, uri && uri[0] ? uri : s->url, extra, -1, false, who);
}

void rtsp_hub_verify(struct rtsp_source *s, const struct rtsp_who *who, const char *uri,
                     const char *auth)
{
    char extra[700];
    int off = snprintf(extra, sizeof(extra), "Accept: application/sdp\r\n");
    if (auth && strlen(auth) < 500) {
        snprintf(extra + off, sizeof(extra) - (size_t)off, "Authorization: %s\r\n", auth);
    }
    src_send(s, MSM_RTSP_M_DESCRIBE, uri, extra, -1, false, who);
}

/* A header value of <req> as a new string (NULL when absent or too long to forward). */
static char *value_dup(const struct msm_rtsp_msg *req, const char *name, size_t max)
{
    const struct msm_rtsp_hdr *h = req ? msm_rtsp_header(req, name) : NULL;
    return h && h->value.n < max ? msm_xstrndup(h->value.p, h->value.n) : NULL;
}

int rtsp_source_setup_track(struct rtsp_source *s, int idx, bool client_tcp,
                            struct rtsp_client *initiator, const struct msm_rtsp_msg *req)
{
    char uri[MSM_RTSP_URL_MAX + 8];
    snprintf(uri, sizeof(uri), "%.*s", (int)req->uri.n, req->uri.p);
    char *auth = value_dup(req, "Authorization", 400);
    int rc = 0;
    if (s->remote) {
        rtsp_mirror_setup_track(s, idx, client_tcp, initiator, uri, auth);
    } else {
        struct rtsp_who who = {.client = initiator};
        rc = rtsp_hub_setup_track(s, idx, client_tcp, &who, uri, auth);
    }
    free(auth);
    return rc;
}

void rtsp_source_play(struct rtsp_source *s, struct rtsp_client *initiator,
                      const struct msm_rtsp_msg *req)
{
    char uri[MSM_RTSP_URL_MAX + 8];
    snprintf(uri, sizeof(uri), "%.*s", (int)req->uri.n, req->uri.p);
    char *auth = value_dup(req, "Authorization", 400);
    if (s->remote) {
        rtsp_mirror_play(s, initiator, uri, auth);
    } else {
        struct rtsp_who who = {.client = initiator};
        rtsp_hub_play(s, &who, uri, auth);
    }
    free(auth);
}

void rtsp_source_verify(struct rtsp_source *s, struct rtsp_client *c,
                        const struct msm_rtsp_msg *req)
{
    if (c->verify_pending) {
        return;
    }
    char uri[MSM_RTSP_URL_MAX + 8];
    snprintf(uri, sizeof(uri), "%.*s", (int)req->uri.n, req->uri.p);
    char *auth = value_dup(req, "Authorization", 500);
    c->verify_pending = true;
    if (s->remote) {
        rtsp_mirror_verify(s, c, uri, auth);
    } else {
        struct rtsp_who who = {.client = c};
        rtsp_hub_verify(s, &who, uri, auth);
    }
    free(auth);
}
