/* envoy.filters.network.tcp_proxy, per-connection logic.
 *
 * States of one proxied connection:
 *   CONNECTING: upstream connect in flight; downstream reading is disabled, early bytes wait in
 *               the downstream read buffer.
 *   OPEN:       bytes flow both ways; each side's FIN is passed on as a half-close.
 *   CLOSED:     either side closed (or a timeout fired); the other side is closed after its
 *               pending bytes are flushed.
 * Back-pressure: upstream write buffer above its limit pauses downstream reads; downstream
 * write buffer above its limit pauses upstream reads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "filter/manager.h"
#include "filter/upstream.h"
#include "filters/network/tcp_proxy/tcp_proxy.h"
#include "server/worker.h"
#include "upstream/cluster.h"
#include "upstream/lb/hash_lb.h"

/* Record a response flag for the access log (the session may be gone already). */
#define SI_FLAG(t, f)                                                                             \
    do {                                                                                          \
        if ((t)->si) {                                                                            \
            msm_si_set_flag((t)->si, (f));                                                        \
        }                                                                                         \
    } while (0)

/* Lifetime: a tp lives until both its session freed it (filter_free) and its upstream
 * connection is gone, because the upstream may still be flushing bytes the downstream sent
 * before closing. <h> is NULL once the session is gone. */
struct tp {
    struct msm_filter_handle *h;
    struct ev_loop *loop;
    bool session_gone;
    double last_active; /* ev_now of the last byte either way, for the idle timeout */
    struct msm_tcp_proxy_config *cfg;
    struct msm_cluster *cluster; /* reference while an upstream is attached */
    struct msm_host *host;       /* reference */
    struct msm_conn *up;
    bool connected;
    bool down_eof, up_eof; /* FIN seen from that side (and passed on) */
    bool closed;
    bool cx_reserved;
    bool up_read_paused, down_read_paused;
    uint32_t attempts;
    double up_start;
    ev_timer idle, max_dur;
    struct msm_stream_info *si; /* the session's; NULL once the session is gone */
    char fail_reason[96];       /* %UPSTREAM_TRANSPORT_FAILURE_REASON% */
    bool started;               /* on_new_connection ran (the chain got the connection) */
    /* The cluster's upstream filters on <up> (filter/upstream.h; istio.metadata_exchange), or
     * NULL. They see bytes only once <up> is established: until then the downstream's bytes
     * wait in its read buffer (<held>). */
    struct msm_upstream_chain *upf;
    bool held;
    /* The upstream TLS handshake's identities (peer's first URI SAN, ours), copied: the stream
     * info points at them for istio.stats (client-side destination/source_principal) and they
     * must outlive the upstream connection. */
    char *up_peer_san, *up_local_san;
};

static void up_on_read(struct msm_conn *c, void *ctx, bool end_stream);
static void up_on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev);
static void up_on_watermark(struct msm_conn *c, void *ctx, bool above);

static const struct msm_conn_handler up_handler = {
    .on_read = up_on_read,
    .on_event = up_on_event,
    .on_watermark = up_on_watermark,
};

const char *msm_tcp_proxy_pick_cluster(const struct msm_tcp_proxy_config *cfg, uint64_t rnd)
{
    if (cfg->n_clusters == 1) {
        return cfg->clusters[0].name;
    }
    uint64_t r = rnd % cfg->total_weight;
    for (int i = 0; i < cfg->n_clusters; i++) {
        if (r < cfg->clusters[i].weight) {
            return cfg->clusters[i].name;
        }
        r -= cfg->clusters[i].weight;
    }
    return cfg->clusters[cfg->n_clusters - 1].name;
}

static struct ev_loop *loop_of(struct tp *t)
{
    return t->loop;
}

static void tp_free(struct tp *t)
{
    msm_upstream_chain_free(t->upf);
    free(t->up_peer_san);
    free(t->up_local_san);
    free(t);
}

/* Activity only records a time; the idle timer re-arms itself from it when it fires (libev's
 * "be smart about timeouts"), so the data path never touches the timer heap. */
static void touch(struct tp *t)
{
    t->last_active = ev_now(loop_of(t));
}

/* Release the upstream side's accounting (not the connection object itself). */
static void release_upstream(struct tp *t)
{
    if (t->host) {
        atomic_fetch_sub(&t->host->active_cx, 1);
        atomic_fetch_sub(&t->host->active_rq, 1);
        msm_host_unref(t->host);
        t->host = NULL;
    }
    if (t->cluster) {
        if (t->cx_reserved) {
            msm_cluster_cx_release(t->cluster);
            t->cx_reserved = false;
        }
        msm_cluster_unref(t->cluster);
        t->cluster = NULL;
    }
}

static void stop_timers(struct tp *t)
{
    ev_timer_stop(loop_of(t), &t->idle);
    ev_timer_stop(loop_of(t), &t->max_dur);
}

/* Close both sides: the downstream after flushing, the upstream too. */
static void close_all(struct tp *t, enum msm_close_type how)
{
    if (t->closed) {
        return;
    }
    t->closed = true;
    stop_timers(t);
    if (t->up) {
        struct msm_conn *up = t->up;
        msm_conn_close(up, how); /* up_on_event clears t->up */
    }
    if (t->h) {
        msm_filter_close(t->h, how);
    }
}

static int start_upstream(struct tp *t);

static void on_idle(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct tp *t = MSM_CONTAINER_OF(w, struct tp, idle);
    double left = t->last_active + t->cfg->idle_timeout_ms / 1000.0 - ev_now(loop);
    if (left > 0.001) {
        ev_timer_set(w, left, 0);
        ev_timer_start(loop, w);
        return;
    }
    msm_stat_inc(t->cfg->stats.idle_timeout);
    msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "tcp_proxy: idle timeout");
    close_all(t, MSM_CLOSE_NOFLUSH);
}

static void on_max_duration(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct tp *t = MSM_CONTAINER_OF(w, struct tp, max_dur);
    msm_stat_inc(t->cfg->stats.max_downstream_connection_duration);
    SI_FLAG(t, MSM_RF_DURATION_TIMEOUT);
    close_all(t, MSM_CLOSE_NOFLUSH);
}

void *msm_tcp_proxy_filter_new(void *config, struct msm_filter_handle *h)
{
    struct tp *t = MSM_NEW(struct tp);
    t->h = h;
    t->loop = msm_filter_worker(h)->loop;
    t->cfg = config;
    t->si = msm_filter_stream_info(h);
    ev_timer_init(&t->idle, on_idle, t->cfg->idle_timeout_ms / 1000.0, 0);
    ev_timer_init(&t->max_dur, on_max_duration, t->cfg->max_duration_ms / 1000.0, 0);
    return t;
}

void msm_tcp_proxy_filter_free(void *f)
{
    struct tp *t = f;
    /* Envoy logs when the filter goes away: the downstream is closed, its counts are final. */
    /* Also when an earlier filter ended the connection with a reason (network RBAC's deny):
     * Envoy's tcp_proxy logs every connection it saw. */
    if (t->cfg->logs.n && (t->started || (t->si && t->si->connection_termination_details))) {
        msm_access_logs_emit(&t->cfg->logs, t->si, ev_now(t->loop));
    }
    if (t->si) {
        if (t->si->upstream_peer_uri_san == t->up_peer_san) {
            t->si->upstream_peer_uri_san = NULL;
        }
        if (t->si->upstream_local_uri_san == t->up_local_san) {
            t->si->upstream_local_uri_san = NULL;
        }
    }
    t->si = NULL;
    t->session_gone = true;
    t->h = NULL;
    stop_timers(t);
    if (!t->up) {
        release_upstream(t);
        tp_free(t);
    }
    /* else: freed when the upstream finishes flushing (up_on_event). */
}

/* Envoy's SourceIpHashMethod, so one client lands on the same host of the same ring through
 * msm-proxy and through Envoy; 0 (no hash) for a client that has no IP. */
static uint64_t source_hash(struct tp *t)
{
    uint64_t h = 0;
    msm_lb_hash_ip(&msm_filter_conn(t->h)->remote, &h);
    return h;
}

/* Pick a host and connect. 0 on success; negative when the downstream must be closed. */
static int start_upstream(struct tp *t)
{
    struct msm_worker *w = msm_filter_worker(t->h);
    struct msm_conn *down = msm_filter_conn(t->h);
    if (!t->cluster) {
        const char *name = msm_tcp_proxy_pick_cluster(t->cfg, msm_random());
        struct msm_cluster *c = w->snap ? msm_snapshot_cluster(w->snap, name) : NULL;
        if (!c) {
            msm_stat_inc(t->cfg->stats.downstream_cx_no_route);
            SI_FLAG(t, MSM_RF_NO_CLUSTER_FOUND);
            msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "[C%llu] tcp_proxy: unknown cluster '%s'",
                    down->id, name);
            return MSM_ENOTFOUND;
        }
        t->cluster = msm_cluster_ref(c);
        if (!msm_cluster_cx_reserve(c)) {
            msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER,
                    "[C%llu] tcp_proxy: cluster '%s' max_connections reached", down->id, name);
            SI_FLAG(t, MSM_RF_UPSTREAM_OVERFLOW);
            return MSM_ELIMIT;
        }
        t->cx_reserved = true;
    }
    struct msm_cluster *c = t->cluster;
    struct msm_cluster_stats *cs = &c->sh->stats;
    struct msm_host *host;
    if (c->cfg->type == MSM_CLUSTER_ORIGINAL_DST) {
        /* CLUSTER_PROVIDED: the destination the client asked for, restored by original_dst or
         * the use_original_dst hand-off. */
        host = msm_host_new(&down->local, NULL, 1);
    } else {
        host = msm_lb_choose(c, t->cfg->hash_source_ip ? source_hash(t) : 0);
        if (!host) {
            msm_stat_inc(cs->upstream_cx_none_healthy);
            SI_FLAG(t, MSM_RF_NO_HEALTHY_UPSTREAM);
            msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "[C%llu] tcp_proxy: no healthy upstream in "
                    "'%s'", down->id, c->cfg->name);
            return MSM_ENOTFOUND;
        }
        atomic_fetch_add(&host->refs, 1);
    }
    if (t->host) {
        msm_host_unref(t->host);
    }
    t->host = host;
    atomic_fetch_add(&host->active_cx, 1);
    atomic_fetch_add(&host->active_rq, 1);
    atomic_fetch_add(&host->cx_total, 1);
    atomic_fetch_add(&host->rq_total, 1);
    t->attempts++;
    if (t->si) {
        msm_si_set_upstream(t->si, c->cfg, host);
        t->si->attempt_count = t->attempts;
    }
    int rc = 0;
    t->up = msm_conn_connect(w->loop, &host->addr, c->cfg->has_bind ? &c->cfg->bind : NULL,
                             c->cfg->connect_timeout_ms, &up_handler, t, &rc);
    msm_stat_inc(cs->upstream_cx_total);
    msm_stat_inc(cs->upstream_rq_total);
    if (!t->up) {
        msm_stat_inc(cs->upstream_cx_connect_fail);
        msm_log(MSM_LOG_WARN, MSM_LC_UPSTREAM, "cluster '%s': cannot create socket: %s",
                c->cfg->name, strerror(-rc));
        atomic_fetch_sub(&host->active_cx, 1);
        atomic_fetch_sub(&host->active_rq, 1);
        return rc;
    }
    /* TLS (transport_socket, or the endpoint's transport_socket_matches entry): CONNECTED
     * comes after the handshake. */
    msm_conn_write_now(t->up, true);
    msm_cluster_attach_transport(c->cfg, host, t->up);
    if (c->cfg->filters) {
        t->upf = msm_upstream_chain_new(c->cfg->filters, &t->up, &t->si);
    }
    msm_stat_inc(cs->upstream_cx_active);
    msm_stat_inc(cs->upstream_rq_active);
    msm_conn_set_watermarks(t->up, c->cfg->per_connection_buffer_limit);
    msm_conn_enable_half_close(t->up, true);
    t->up_start = ev_now(w->loop);
    return 0;
}

enum msm_filter_status msm_tcp_proxy_on_new_connection(void *f)
{
    struct tp *t = f;
    t->started = true;
    msm_stat_inc(t->cfg->stats.downstream_cx_total);
    msm_conn_enable_half_close(msm_filter_conn(t->h), true);
    msm_conn_write_now(msm_filter_conn(t->h), true);
    if (t->cfg->max_duration_ms) {
        ev_timer_start(loop_of(t), &t->max_dur);
    }
    touch(t);
    if (t->cfg->idle_timeout_ms) {
        ev_timer_start(loop_of(t), &t->idle);
    }
    if (start_upstream(t) < 0) {
        close_all(t, MSM_CLOSE_NOFLUSH);
        return MSM_FILTER_STOP;
    }
    /* No reading until the upstream is there: early bytes wait in the kernel. */
    msm_filter_read_disable(t->h, true);
    t->down_read_paused = true;
    return MSM_FILTER_CONTINUE;
}

enum msm_filter_status msm_tcp_proxy_on_data(void *f, struct msm_buf *data, bool end_stream)
{
    struct tp *t = f;
    if (t->closed || !t->up) {
        msm_buf_drain(data, data->len);
        return MSM_FILTER_STOP;
    }
    if (t->upf && !t->connected) {
        t->held = true; /* replayed from up_on_event(CONNECTED) */
        return MSM_FILTER_STOP;
    }
    msm_stat_add(t->cfg->stats.downstream_cx_rx_bytes_total, data->len);
    msm_stat_add(t->cluster->sh->stats.upstream_cx_tx_bytes_total, data->len);
    touch(t);
    if (end_stream) {
        t->down_eof = true;
    }
    if (t->upf) {
        msm_upstream_chain_on_write(t->upf, data, end_stream);
    }
    msm_conn_write(t->up, data, end_stream);
    if (t->down_eof && t->up_eof && t->up) {
        close_all(t, MSM_CLOSE_FLUSH);
    }
    return MSM_FILTER_STOP;
}

void msm_tcp_proxy_on_event(void *f, enum msm_conn_event ev)
{
    struct tp *t = f;
    (void)ev;
    /* The downstream connection closed (by either side): close the upstream after it drained
     * what the downstream sent. */
    stop_timers(t);
    t->closed = true;
    if (t->up) {
        struct msm_conn *up = t->up;
        msm_conn_close(up, MSM_CLOSE_FLUSH);
    }
}

void msm_tcp_proxy_on_watermark(void *f, bool above)
{
    struct tp *t = f;
    /* Downstream write buffer full: stop reading the upstream. */
    if (!t->up) {
        return;
    }
    if (above != t->up_read_paused) {
        t->up_read_paused = above;
        msm_conn_read_disable(t->up, above);
        msm_stat_inc(above ? t->cluster->sh->stats.upstream_flow_control_paused_reading_total
                           : t->cluster->sh->stats.upstream_flow_control_resumed_reading_total);
    }
}

static void up_on_read(struct msm_conn *c, void *ctx, bool end_stream)
{
    struct tp *t = ctx;
    if (!t->h) {
        msm_buf_drain(&c->in, c->in.len); /* downstream gone: nobody to deliver to */
        return;
    }
    if (t->upf && msm_upstream_chain_on_data(t->upf, &c->in, end_stream) == MSM_FILTER_STOP) {
        touch(t);
        return; /* a filter keeps the bytes for now, or closed the connection */
    }
    size_t n = c->in.len;
    msm_stat_add(t->cfg->stats.downstream_cx_tx_bytes_total, n);
    msm_stat_add(t->cluster->sh->stats.upstream_cx_rx_bytes_total, n);
    touch(t);
    if (end_stream) {
        t->up_eof = true;
    }
    msm_filter_write(t->h, &c->in, end_stream);
    if (t->down_eof && t->up_eof && !t->closed) {
        close_all(t, MSM_CLOSE_FLUSH);
    }
}

static void up_on_watermark(struct msm_conn *c, void *ctx, bool above)
{
    struct tp *t = ctx;
    (void)c;
    /* Upstream write buffer full: stop reading the downstream. */
    if (!t->h || above == t->down_read_paused || !t->connected) {
        return;
    }
    t->down_read_paused = above;
    msm_filter_read_disable(t->h, above);
    msm_stat_inc(above ? t->cfg->stats.downstream_flow_control_paused_reading_total
                       : t->cfg->stats.downstream_flow_control_resumed_reading_total);
}

static void up_on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev)
{
    struct tp *t = ctx;
    struct msm_cluster_stats *cs = &t->cluster->sh->stats;
    double now = ev_now(c->loop);
    switch (ev) {
    case MSM_CONN_CONNECTED:
        t->connected = true;
        if (t->si) {
            t->si->upstream_local = c->local;
            t->si->has_upstream_local = true;
            t->si->upstream_connection_id = c->id;
            t->si->upstream_connected = now;
            const struct msm_tls_info *ti = msm_conn_tls_info(c);
            if (ti) {
                free(t->up_peer_san);
                free(t->up_local_san);
                t->up_peer_san = ti->peer_cert_validated && ti->n_uri_sans
                                     ? msm_xstrdup(ti->uri_sans[0])
                                     : NULL;
                t->up_local_san = ti->local_uri_san ? msm_xstrdup(ti->local_uri_san) : NULL;
                t->si->upstream_peer_uri_san = t->up_peer_san;
                t->si->upstream_local_uri_san = t->up_local_san;
            }
        }
        msm_outlier_report(t->cluster, t->host, MSM_OUTLIER_SUCCESS);
        msm_stat_record(cs->upstream_cx_connect_ms, (uint64_t)((now - c->connect_start) * 1000.0));
        if (t->h && t->down_read_paused && !(c->flags & MSM_CONN_F_ABOVE_WM)) {
            t->down_read_paused = false;
            msm_filter_read_disable(t->h, false);
        }
        if (t->held && t->h && !t->closed && msm_filter_conn(t->h)) {
            /* What the downstream sent while connecting, now through the upstream filters. */
            struct msm_conn *down = msm_filter_conn(t->h);
            t->held = false;
            msm_tcp_proxy_on_data(t, &down->in, (down->flags & MSM_CONN_F_READ_EOF) != 0);
        }
        return;
    case MSM_CONN_CONNECT_FAILED:
    case MSM_CONN_CONNECT_TIMEOUT:
        msm_stat_inc(ev == MSM_CONN_CONNECT_TIMEOUT ? cs->upstream_cx_connect_timeout
                                                    : cs->upstream_cx_connect_fail);
        atomic_fetch_add(&t->host->cx_connect_fail, 1);
        msm_outlier_report(t->cluster, t->host, MSM_OUTLIER_LOCAL_FAILURE);
        msm_stat_dec(cs->upstream_cx_active);
        msm_stat_dec(cs->upstream_rq_active);
        msm_stat_inc(cs->upstream_cx_destroy);
        msm_stat_inc(cs->upstream_cx_destroy_remote);
        msm_log(MSM_LOG_DEBUG, MSM_LC_UPSTREAM, "[C%llu] connect to cluster '%s' failed: %s",
                c->id, t->cluster->cfg->name, c->close_detail ? c->close_detail : "?");
        t->up = NULL;
        atomic_fetch_sub(&t->host->active_cx, 1);
        atomic_fetch_sub(&t->host->active_rq, 1);
        msm_host_unref(t->host);
        t->host = NULL;
        msm_upstream_chain_free(t->upf); /* this attempt's; a retry makes its own */
        t->upf = NULL;
        if (!t->closed && t->attempts < t->cfg->max_connect_attempts && start_upstream(t) == 0) {
            return;
        }
        if (t->si && !t->closed) {
            SI_FLAG(t, MSM_RF_UPSTREAM_CONNECTION_FAILURE);
            if (ev == MSM_CONN_CONNECT_FAILED && c->close_detail) {
                /* Envoy's "delayed connect error: <reason>", spaces as '_' in the log. */
                snprintf(t->fail_reason, sizeof(t->fail_reason), "delayed_connect_error:_%s",
                         c->close_detail);
                for (char *p = t->fail_reason; *p; p++) {
                    *p = *p == ' ' ? '_' : *p;
                }
                t->si->upstream_transport_failure_reason = t->fail_reason;
            }
        }
        close_all(t, MSM_CLOSE_NOFLUSH);
        if (t->session_gone && !t->up) {
            release_upstream(t);
            tp_free(t);
        }
        return;
    case MSM_CONN_REMOTE_CLOSE:
    case MSM_CONN_LOCAL_CLOSE:
        msm_stat_dec(cs->upstream_cx_active);
        msm_stat_dec(cs->upstream_rq_active);
        msm_stat_inc(cs->upstream_cx_destroy);
        msm_stat_inc(ev == MSM_CONN_REMOTE_CLOSE ? cs->upstream_cx_destroy_remote
                                                 : cs->upstream_cx_destroy_local);
        msm_stat_record(cs->upstream_cx_length_ms, (uint64_t)((now - t->up_start) * 1000.0));
        t->up = NULL;
        release_upstream(t);
        if (t->session_gone) {
            tp_free(t);
            return;
        }
        if (!t->closed) {
            /* Upstream went away: deliver what we have, then close the downstream. */
            close_all(t, MSM_CLOSE_FLUSH);
        }
        return;
    }
}
