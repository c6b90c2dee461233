/* envoy.filters.network.http_connection_manager: the connection side. Picks the codec (AUTO:
 * TLS ALPN "h2" or the HTTP/2 client preface, else HTTP/1.1), feeds it the downstream bytes,
 * turns codec events into streams (hcm_stream.c), and runs the connection's timers: idle
 * (no stream), max connection duration, HTTP/2 drain after GOAWAY.
 *
 * States: NEW (no codec yet) -> ACTIVE (codec) -> DRAINING (connection: close / GOAWAY sent,
 * no new streams) -> CLOSING (close requested, flushing) -> GONE (the session's on_event).
 * HTTP/1 pipelining: the codec parses one request at a time; while a response is pending the
 * next requests wait in the connection's read buffer, and reading stops once that buffer holds
 * more than PIPELINE_LIMIT bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "filter/manager.h"
#include "filters/network/http_connection_manager/hcm_private.h"
#include "net/transport.h"
#include "server/worker.h"

#define PIPELINE_LIMIT (64 * 1024)

/* The connection (and its codec) goes away with <st> still open: leave the codec stream to
 * the codec, which frees the streams nobody owns when it is freed (without this an HTTP/1
 * request in flight at exit leaked its stream). */
static void detach_codec_stream(struct hstream *st)
{
    if (st->cs) {
        st->cs->cbs = NULL;
        st->cs->ctx = NULL;
        st->cs = NULL;
    }
}

static void hc_dispatch(struct hcm_conn *hc);

/* ---- codec callbacks ------------------------------------------------------------------------------ */

static void start_drain(struct hcm_conn *hc);

static void cb_new_stream(void *owner, struct msm_hstream *cs)
{
    struct hcm_conn *hc = owner;
    struct hstream *st = msm_hcm_stream_new(hc, cs);
    cs->cbs = &msm_hcm_stream_cbs;
    cs->ctx = st;
    if (hc->w->draining && !hc->draining) {
        /* The server drains (SIGTERM, /drain_listeners): this response carries
         * Connection: close, or the HTTP/2 connection gets its GOAWAY. */
        msm_stat_inc(hc->cfg->stats.downstream_cx_drain_close);
        start_drain(hc);
    }
}

static void cb_write(void *owner, struct msm_buf *b)
{
    struct hcm_conn *hc = owner;
    if (hc->gone) {
        msm_buf_drain(b, b->len);
        return;
    }
    msm_stat_add(hc->cfg->stats.downstream_cx_tx_bytes_total, b->len);
    msm_filter_write(hc->h, b, false);
}

static void schedule_resume(struct hcm_conn *hc)
{
    if (!hc->gone && !ev_is_active(&hc->resume)) {
        ev_timer_set(&hc->resume, 0, 0);
        ev_timer_start(hc->loop, &hc->resume);
    }
}

/* After a stream ended: bytes the codec left (pipelined or held back) or a client EOF waiting for
 * the streams to end need a resume; otherwise the next read drives the codec (no zero-delay
 * timer per request). */
static void resume_if_needed(struct hcm_conn *hc)
{
    struct msm_conn *conn = msm_filter_conn(hc->h);
    if (conn && (conn->in.len || (hc->remote_eof && !hc->eof_done))) {
        schedule_resume(hc);
    }
}

static void cb_stream_done(void *owner)
{
    /* HTTP/1: the exchange finished; pipelined requests may wait in the read buffer. */
    resume_if_needed(owner);
}

static void cb_read_disable(void *owner, bool disable)
{
    struct hcm_conn *hc = owner;
    if (hc->gone) {
        return;
    }
    hc->codec_read_disabled += disable ? 1 : -1;
    msm_filter_read_disable(hc->h, disable);
    msm_stat_inc(disable ? hc->cfg->stats.downstream_flow_control_paused_reading_total
                         : hc->cfg->stats.downstream_flow_control_resumed_reading_total);
    if (!disable) {
        schedule_resume(hc);
    }
}

/* An HTTP/1 tunnel's response direction ended: FIN to the client (its direction goes on). */
static void cb_shutdown_write(void *owner)
{
    struct hcm_conn *hc = owner;
    if (hc->gone) {
        return;
    }
    struct msm_buf b;
    msm_buf_init(&b);
    msm_filter_write(hc->h, &b, true);
    msm_buf_deinit(&b);
}

/* The codec gave up on the connection outside a read (HTTP/2 keepalive timeout). */
static void cb_error(void *owner)
{
    struct hcm_conn *hc = owner;
    if (hc->gone) {
        return;
    }
    msm_log(MSM_LOG_DEBUG, MSM_LC_HTTP, "[C%llu] closing: %s", msm_filter_conn(hc->h)->id,
            hc->codec->error ? hc->codec->error : "codec error");
    msm_hcm_conn_close(hc, MSM_CLOSE_NOFLUSH);
}

static const struct msm_hcodec_cbs codec_cbs = {
    .on_new_stream = cb_new_stream,
    .write = cb_write,
    .on_stream_done = cb_stream_done,
    .read_disable = cb_read_disable,
    .shutdown_write = cb_shutdown_write,
    .on_error = cb_error,
};

/* ---- closing ------------------------------------------------------------------------------------- */

void msm_hcm_conn_close(struct hcm_conn *hc, enum msm_close_type how)
{
    if (hc->closing || hc->gone) {
        return;
    }
    hc->closing = true;
    ev_timer_stop(hc->loop, &hc->idle);
    ev_timer_stop(hc->loop, &hc->max_dur);
    ev_timer_stop(hc->loop, &hc->drain);
    if (hc->codec && hc->codec->ops->flush) {
        hc->codec->ops->flush(hc->codec); /* frames held for the end of the round go first */
    }
    msm_filter_close(hc->h, how);
}

/* Stop taking requests: HTTP/2 GOAWAY (then close after the drain time), HTTP/1 close after the
 * current exchange (or now when idle). */
static void start_drain(struct hcm_conn *hc)
{
    if (hc->draining || hc->gone || hc->closing) {
        return;
    }
    hc->draining = true;
    if (!hc->codec || !hc->n_streams) {
        if (hc->codec) {
            hc->codec->ops->goaway(hc->codec);
        }
        msm_hcm_conn_close(hc, MSM_CLOSE_FLUSH);
        return;
    }
    hc->codec->ops->goaway(hc->codec);
    if (hc->proto == MSM_HTTP_2) {
        ev_timer_set(&hc->drain, hc->cfg->drain_timeout_ms / 1000.0, 0);
        ev_timer_start(hc->loop, &hc->drain);
    }
}

static void on_idle(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct hcm_conn *hc = MSM_CONTAINER_OF(t, struct hcm_conn, idle);
    if (hc->n_streams) {
        return;
    }
    double left = hc->last_activity + hc->cfg->idle_timeout_ms / 1000.0 - ev_now(loop);
    if (left > 0.001) {
        ev_timer_set(t, left, 0);
        ev_timer_start(loop, t);
        return;
    }
    msm_stat_inc(hc->cfg->stats.downstream_cx_idle_timeout);
    start_drain(hc);
}

static void on_max_dur(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct hcm_conn *hc = MSM_CONTAINER_OF(t, struct hcm_conn, max_dur);
    msm_stat_inc(hc->cfg->stats.downstream_cx_max_duration_reached);
    start_drain(hc);
}

static void on_drain_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct hcm_conn *hc = MSM_CONTAINER_OF(t, struct hcm_conn, drain);
    msm_stat_inc(hc->cfg->stats.downstream_cx_drain_close);
    msm_hcm_conn_close(hc, MSM_CLOSE_FLUSH);
}

static void hc_eof(struct hcm_conn *hc);

static void on_resume(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct hcm_conn *hc = MSM_CONTAINER_OF(t, struct hcm_conn, resume);
    if (hc->gone || hc->closing || !hc->codec) {
        return;
    }
    hc_dispatch(hc);
    struct msm_conn *conn = msm_filter_conn(hc->h);
    hc->rx_seen = conn ? conn->in.len : 0;
    hc_eof(hc);
}

void msm_hcm_conn_stream_gone(struct hcm_conn *hc, struct hstream *st)
{
    (void)st;
    hc->n_streams--;
    hc->last_activity = ev_now(hc->loop);
    if (hc->gone) {
        return;
    }
    if (hc->cfg->max_requests_per_connection &&
        hc->requests >= hc->cfg->max_requests_per_connection && !hc->draining) {
        msm_stat_inc(hc->cfg->stats.downstream_cx_max_requests_reached);
        start_drain(hc);
    }
    if (!hc->n_streams) {
        if ((hc->codec && hc->codec->close_connection) || hc->draining) {
            /* Inside dispatch the codec may still have frames to write (GOAWAY): hc_dispatch
             * closes when it returns. */
            if (!hc->in_dispatch) {
                msm_hcm_conn_close(hc, MSM_CLOSE_FLUSH);
            }
            return;
        }
        if (hc->cfg->idle_timeout_ms && !ev_is_active(&hc->idle)) {
            ev_timer_set(&hc->idle, hc->cfg->idle_timeout_ms / 1000.0, 0);
            ev_timer_start(hc->loop, &hc->idle);
        }
    }
    resume_if_needed(hc);
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

static void on_codec_error(struct hcm_conn *hc)
{
    struct msm_hcodec *c = hc->codec;
    msm_stat_inc(hc->cfg->stats.downstream_cx_protocol_error);
    if (c->error && !strcmp(c->error, "http2.too_many_premature_resets")) {
        msm_stat_inc(hc->cfg->stats.downstream_rq_too_many_premature_resets);
    }
    msm_log(MSM_LOG_DEBUG, MSM_LC_HTTP, "[C%llu] %s codec error: %s", msm_filter_conn(hc->h)->id,
            hc->proto == MSM_HTTP_2 ? "HTTP/2" : "HTTP/1", c->error ? c->error : "?");
    struct msm_hstream *es = c->error_stream;
    c->error_stream = NULL;
    if (es && c->error_status) {
        if (es->cbs && es->ctx) {
            struct hstream *st = es->ctx;
            if (!st->resp_started && !st->destroyed) {
                msm_hcm_local_reply(st, -1, c->error_status, msm_http_reason(c->error_status),
                                    c->error, MSM_RF(DOWNSTREAM_PROTOCOL_ERROR));
            }
        } else {
            msm_hcm_raw_reply(hc, es, c->error_status, c->error);
        }
    }
    /* Streams left (HTTP/2 after GOAWAY, or an HTTP/1 request whose response had started) go
     * with the connection. */
    msm_hcm_conn_close(hc, MSM_CLOSE_FLUSH);
}

static void hc_dispatch(struct hcm_conn *hc)
{
    struct msm_conn *conn = msm_filter_conn(hc->h);
    if (!conn || hc->in_dispatch) {
        return;
    }
    hc->in_dispatch = true;
    int rc = msm_hcodec_dispatch(hc->codec, &conn->in);
    hc->in_dispatch = false;
    if (hc->gone) {
        return;
    }
    if (rc < 0) {
        on_codec_error(hc);
        return;
    }
    if (hc->codec->close_connection && !hc->n_streams) {
        msm_hcm_conn_close(hc, MSM_CLOSE_FLUSH);
        return;
    }
    /* Pipelined requests beyond the limit: stop reading until the current exchange ends. */
    bool over = conn->in.len > PIPELINE_LIMIT;
    if (over != hc->pipeline_paused) {
        hc->pipeline_paused = over;
        msm_filter_read_disable(hc->h, over);
    }
}

/* Half-close is on only for HTTP/1 tunnels (hcm_upgrade.c): the client's FIN ends the tunnel's
 * request direction, after every byte before it went to the codec (a read-disabled tunnel
 * leaves bytes in the buffer). With no stream left there is nothing to wait for. */
static void hc_eof(struct hcm_conn *hc)
{
    struct msm_conn *conn = msm_filter_conn(hc->h);
    if (!hc->remote_eof || hc->eof_done || hc->gone || hc->closing || !hc->codec || !conn ||
        conn->in.len || hc->in_dispatch) {
        return;
    }
    hc->eof_done = true;
    if (!hc->n_streams) {
        msm_hcm_conn_close(hc, MSM_CLOSE_FLUSH);
        return;
    }
    hc->in_dispatch = true;
    int rc = hc->codec->ops->dispatch_eof(hc->codec);
    hc->in_dispatch = false;
    if (hc->gone) {
        return;
    }
    if (rc < 0) {
        on_codec_error(hc);
        return;
    }
    if (!hc->n_streams) {
        msm_hcm_conn_close(hc, MSM_CLOSE_FLUSH);
    }
}

static bool pick_codec(struct hcm_conn *hc, struct msm_buf *data)
{
    const struct msm_hcm_config *cfg = hc->cfg;
    enum msm_http_proto p = MSM_HTTP_11;
    if (cfg->codec_type == MSM_HCM_HTTP2) {
        p = MSM_HTTP_2;
    } else if (cfg->codec_type == MSM_HCM_AUTO) {
        const struct msm_tls_info *ti = msm_conn_tls_info(msm_filter_conn(hc->h));
        if (ti && ti->alpn) {
            p = !strcmp(ti->alpn, "h2") ? MSM_HTTP_2 : MSM_HTTP_11;
        } else {
            char head[MSM_H2_PREFACE_LEN];
            size_t n = msm_buf_copyout(data, 0, head, sizeof(head));
            if (memcmp(head, MSM_H2_PREFACE, n) != 0) {
                p = MSM_HTTP_11;
            } else if (n < MSM_H2_PREFACE_LEN) {
                return false; /* could still be the preface: wait for more */
            } else {
                p = MSM_HTTP_2;
            }
        }
    }
    hc->proto = p;
    if (p == MSM_HTTP_2) {
        hc->codec = msm_http2_server_new(&cfg->h2opts, &codec_cbs, hc);
        hc->codec->loop = hc->loop; /* one output pass per loop round (http2.c) */
        msm_http2_keepalive_start(hc->codec, hc->loop);
        msm_stat_inc(cfg->stats.downstream_cx_http2_total);
        msm_stat_inc(cfg->stats.downstream_cx_http2_active);
    } else {
        hc->codec = msm_http1_server_new(&cfg->h1opts, &codec_cbs, hc);
        msm_stat_inc(cfg->stats.downstream_cx_http1_total);
        msm_stat_inc(cfg->stats.downstream_cx_http1_active);
    }
    return true;
}

/* ---- network filter slots ------------------------------------------------------------------------ */

void *msm_hcm_filter_new(void *config, struct msm_filter_handle *h)
{
    struct hcm_conn *hc = MSM_NEW(struct hcm_conn);
    hc->h = h;
    hc->cfg = config;
    hc->w = msm_filter_worker(h);
    hc->loop = hc->w->loop;
    ev_timer_init(&hc->idle, on_idle, 0, 0);
    ev_timer_init(&hc->max_dur, on_max_dur, 0, 0);
    ev_timer_init(&hc->drain, on_drain_timer, 0, 0);
    ev_timer_init(&hc->resume, on_resume, 0, 0);
    return hc;
}

enum msm_filter_status msm_hcm_on_new_connection(void *f)
{
    struct hcm_conn *hc = f;
    const struct msm_hcm_config *cfg = hc->cfg;
    struct msm_conn *conn = msm_filter_conn(hc->h);
    msm_stat_inc(cfg->stats.downstream_cx_total);
    msm_stat_inc(cfg->stats.downstream_cx_active);
    if (msm_conn_tls_info(conn)) {
        msm_stat_inc(cfg->stats.downstream_cx_ssl_total);
        msm_stat_inc(cfg->stats.downstream_cx_ssl_active);
    }
    msm_address_str(&conn->remote, hc->remote, sizeof(hc->remote));
    msm_address_str(&conn->local, hc->local, sizeof(hc->local));
    hc->start = hc->last_activity = ev_now(hc->loop);
    if (cfg->idle_timeout_ms) {
        ev_timer_set(&hc->idle, cfg->idle_timeout_ms / 1000.0, 0);
        ev_timer_start(hc->loop, &hc->idle);
    }
    if (cfg->max_connection_duration_ms) {
        ev_timer_set(&hc->max_dur, cfg->max_connection_duration_ms / 1000.0, 0);
        ev_timer_start(hc->loop, &hc->max_dur);
    }
    if (cfg->codec_type != MSM_HCM_AUTO) {
        pick_codec(hc, NULL);
    }
    return MSM_FILTER_CONTINUE;
}

enum msm_filter_status msm_hcm_on_data(void *f, struct msm_buf *data, bool end_stream)
{
    struct hcm_conn *hc = f;
    /* end_stream: only HTTP/1 tunnels turn half-close on (hc_eof); else a FIN closes. */
    hc->remote_eof = hc->remote_eof || end_stream;
    if (hc->gone || hc->closing) {
        msm_buf_drain(data, data->len);
        return MSM_FILTER_STOP;
    }
    hc->last_activity = ev_now(hc->loop);
    /* Bytes new since the last call (what the codec left stays in the buffer). */
    if (data->len > hc->rx_seen) {
        msm_stat_add(hc->cfg->stats.downstream_cx_rx_bytes_total, data->len - hc->rx_seen);
    }
    if (!hc->codec && !pick_codec(hc, data)) {
        hc->rx_seen = data->len;
        return MSM_FILTER_STOP;
    }
    hc_dispatch(hc);
    hc->rx_seen = data->len;
    hc_eof(hc);
    return MSM_FILTER_STOP;
}

void msm_hcm_on_event(void *f, enum msm_conn_event ev)
{
    struct hcm_conn *hc = f;
    const struct msm_hcm_config *cfg = hc->cfg;
    bool remote = ev == MSM_CONN_REMOTE_CLOSE;
    hc->gone = true;
    ev_timer_stop(hc->loop, &hc->idle);
    ev_timer_stop(hc->loop, &hc->max_dur);
    ev_timer_stop(hc->loop, &hc->drain);
    ev_timer_stop(hc->loop, &hc->resume);
    msm_stat_inc(cfg->stats.downstream_cx_destroy);
    msm_stat_inc(remote ? cfg->stats.downstream_cx_destroy_remote
                        : cfg->stats.downstream_cx_destroy_local);
    if (hc->streams) {
        msm_stat_inc(cfg->stats.downstream_cx_destroy_active_rq);
        msm_stat_inc(remote ? cfg->stats.downstream_cx_destroy_remote_active_rq
                            : cfg->stats.downstream_cx_destroy_local_active_rq);
    }
    while (hc->streams) {
        struct hstream *st = hc->streams;
        detach_codec_stream(st); /* the codec goes with the connection */
        if (remote) {
            st->info.flags |= MSM_RF(DOWNSTREAM_CONNECTION_TERMINATION);
            if (!st->info.details) {
                st->info.details = "downstream_remote_disconnect";
            }
        }
        msm_hcm_stream_destroy(st, true);
    }
    msm_stat_dec(cfg->stats.downstream_cx_active);
    if (hc->codec) {
        msm_stat_dec(hc->proto == MSM_HTTP_2 ? cfg->stats.downstream_cx_http2_active
                                             : cfg->stats.downstream_cx_http1_active);
    }
    if (msm_conn_tls_info(msm_filter_conn(hc->h))) {
        msm_stat_dec(cfg->stats.downstream_cx_ssl_active);
    }
    msm_stat_record(cfg->stats.downstream_cx_length_ms,
                    (uint64_t)((ev_now(hc->loop) - hc->start) * 1000.0));
}

void msm_hcm_on_watermark(void *f, bool above)
{
    struct hcm_conn *hc = f;
    hc->above_wm = above;
    /* The client does not read: every stream's filters (the router) stop reading upstream. */
    for (struct hstream *st = hc->streams; st; st = st->next) {
        for (int i = st->nf - 1; i >= 0 && !st->destroyed; i--) {
            if (st->f[i].f->ops->on_watermark) {
                st->f[i].f->ops->on_watermark(st->f[i].inst, above);
            }
        }
    }
}

void msm_hcm_filter_free(void *f)
{
    struct hcm_conn *hc = f;
    hc->gone = true;
    while (hc->streams) {
        struct hstream *st = hc->streams;
        detach_codec_stream(st);
        msm_hcm_stream_destroy(st, true);
    }
    ev_timer_stop(hc->loop, &hc->idle);
    ev_timer_stop(hc->loop, &hc->max_dur);
    ev_timer_stop(hc->loop, &hc->drain);
    ev_timer_stop(hc->loop, &hc->resume);
    msm_hcodec_free(hc->codec);
    free(hc);
}
