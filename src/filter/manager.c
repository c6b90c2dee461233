#include "filter/manager.h"

#include <stdlib.h>

#include "common/alloc.h"
#include "common/log.h"
#include "event/deferred.h"
#include "server/worker.h"
#include "tls/tls.h"

static void on_read(struct msm_conn *c, void *ctx, bool end_stream);
static void on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev);
static void on_watermark(struct msm_conn *c, void *ctx, bool above);

static const struct msm_conn_handler session_handler = {
    .on_read = on_read,
    .on_event = on_event,
    .on_watermark = on_watermark,
};

static void session_free(void *p)
{
    struct msm_session *s = p;
    for (int i = 0; i < s->n; i++) {
        if (s->fh[i].inst && s->fh[i].ops->filter_free) {
            s->fh[i].ops->filter_free(s->fh[i].inst);
        }
    }
    free(s->fh);
    msm_si_deinit(&s->si);
    msm_listener_cfg_unref(s->lcfg);
    free(s);
}

/* The downstream part of the stream info (libev's loop time is wall-clock based). */
static void stream_info_start(struct msm_session *s, const struct msm_conn *conn)
{
    msm_si_init(&s->si, s->start, s->start);
    s->si.connection_id = conn->id;
    s->si.downstream_local = conn->local;
    s->si.downstream_remote = conn->remote;
    s->si.downstream_direct_remote = conn->remote;
    s->si.has_downstream = true;
    s->si.listener_name = s->lcfg->name;
}

static void list_remove(struct msm_session *s)
{
    struct msm_worker *w = s->w;
    if (s->prev) {
        s->prev->next = s->next;
    } else if (w->sessions == s) {
        w->sessions = s->next;
    }
    if (s->next) {
        s->next->prev = s->prev;
    }
    s->next = s->prev = NULL;
    w->n_sessions--;
}

/* Feed the read buffer to filters from <from>. */
static void iterate_read(struct msm_session *s, int from, bool end_stream)
{
    for (int i = from; i < s->n_active && !s->closed; i++) {
        struct msm_filter_handle *h = &s->fh[i];
        if (!h->ops->on_data) {
            continue;
        }
        if (h->ops->on_data(h->inst, &s->conn->in, end_stream) == MSM_FILTER_STOP) {
            s->read_pos = i;
            return;
        }
    }
    s->read_pos = -1;
}

/* Run on_new_connection from init_pos; returns true when every filter continued. */
static bool iterate_init(struct msm_session *s)
{
    while (s->init_pos < s->n_active && !s->closed) {
        struct msm_filter_handle *h = &s->fh[s->init_pos++];
        if (h->ops->on_new_connection &&
            h->ops->on_new_connection(h->inst) == MSM_FILTER_STOP) {
            return false;
        }
    }
    s->init_done = !s->closed;
    return s->init_done;
}

struct msm_session *msm_session_new(struct msm_worker *w, struct msm_conn *conn,
                                    struct msm_listener_cfg *lcfg,
                                    const struct msm_filter_chain *chain)
{
    struct msm_session *s = MSM_NEW(struct msm_session);
    s->w = w;
    s->conn = conn;
    s->lcfg = msm_listener_cfg_ref(lcfg);
    s->chain = chain;
    s->n = chain->n;
    s->n_active = chain->n;
    s->read_pos = -1;
    s->start = ev_now(w->loop);
    stream_info_start(s, conn);
    s->fh = msm_xcalloc((size_t)s->n, sizeof(*s->fh));
    s->next = w->sessions;
    if (w->sessions) {
        w->sessions->prev = s;
    }
    w->sessions = s;
    w->n_sessions++;
    msm_stat_inc(lcfg->stats.downstream_cx_total);
    msm_stat_inc(lcfg->stats.downstream_cx_active);
    msm_conn_set_handler(conn, &session_handler, s);
    msm_conn_set_watermarks(conn, lcfg->buffer_limit);
    for (int i = 0; i < s->n; i++) {
        s->fh[i].s = s;
        s->fh[i].index = i;
        s->fh[i].ops = chain->f[i].ops;
        s->fh[i].inst = chain->f[i].ops->filter_new(chain->f[i].config, &s->fh[i]);
    }
    if (chain->tls) {
        /* The filters start once the TLS handshake is done (on_event CONNECTED), so they see
         * the peer's certificate and the negotiated ALPN from on_new_connection on. */
        s->handshaking = true;
        msm_conn_set_transport(conn, msm_tls_transport_new(chain->tls),
                               chain->transport_timeout_ms);
        msm_conn_start_reading(conn);
        return s;
    }
    if (iterate_init(s)) {
        msm_conn_start_reading(conn);
    }
    return s;
}

static void on_read(struct msm_conn *c, void *ctx, bool end_stream)
{
    struct msm_session *s = ctx;
    (void)c;
    if (!s->init_done) {
        return; /* a filter is still initializing; data waits in the buffer */
    }
    iterate_read(s, s->read_pos >= 0 ? s->read_pos : 0, end_stream);
}

static void on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev)
{
    struct msm_session *s = ctx;
    struct msm_listener_cfg *l = s->lcfg;
    if (ev == MSM_CONN_CONNECTED) {
        /* The transport handshake is done: start the filter chain. */
        s->handshaking = false;
        if (iterate_init(s)) {
            msm_conn_start_reading(c);
            if (c->in.len && !s->closed) {
                iterate_read(s, 0, (c->flags & MSM_CONN_F_READ_EOF) != 0);
            }
        }
        return;
    }
    s->closed = true;
    s->si.end = ev_now(s->w->loop);
    s->si.bytes_received = c->rx_bytes;
    s->si.bytes_sent = c->tx_bytes;
    if (s->handshaking) {
        /* Filters never started: nothing to tell them. */
        if (c->flags & MSM_CONN_F_TIMED_OUT) {
            msm_stat_inc(l->stats.downstream_cx_transport_socket_connect_timeout);
        }
    } else {
        for (int i = 0; i < s->n_active; i++) {
            if (s->fh[i].ops->on_event) {
                s->fh[i].ops->on_event(s->fh[i].inst, ev);
            }
        }
    }
    msm_stat_inc(l->stats.downstream_cx_destroy);
    msm_stat_dec(l->stats.downstream_cx_active);
    msm_stat_record(l->stats.downstream_cx_length_ms,
                    (uint64_t)((ev_now(s->w->loop) - s->start) * 1000.0));
    list_remove(s);
    s->conn = NULL;
    msm_defer(s->w->loop, session_free, s);
    msm_worker_session_closed(s->w);
}

static void on_watermark(struct msm_conn *c, void *ctx, bool above)
{
    struct msm_session *s = ctx;
    (void)c;
    for (int i = 0; i < s->n_active; i++) {
        if (s->fh[i].ops->on_watermark) {
            s->fh[i].ops->on_watermark(s->fh[i].inst, above);
        }
    }
}

/* ---- filter-facing API ------------------------------------------------------------------------- */

struct msm_conn *msm_filter_conn(struct msm_filter_handle *h)
{
    return h->s->conn;
}

struct msm_worker *msm_filter_worker(struct msm_filter_handle *h)
{
    return h->s->w;
}

struct msm_stream_info *msm_filter_stream_info(struct msm_filter_handle *h)
{
    return &h->s->si;
}

void msm_filter_continue(struct msm_filter_handle *h)
{
    struct msm_session *s = h->s;
    if (s->closed) {
        return;
    }
    if (!s->init_done) {
        if (h->index != s->init_pos - 1) {
            return; /* only the filter that stopped initialization may resume it */
        }
        if (iterate_init(s)) {
            msm_conn_start_reading(s->conn);
            if (s->conn->in.len) {
                iterate_read(s, 0, (s->conn->flags & MSM_CONN_F_READ_EOF) != 0);
            }
        }
        return;
    }
    if (s->read_pos == h->index) {
        iterate_read(s, h->index + 1, (s->conn->flags & MSM_CONN_F_READ_EOF) != 0);
    }
}

void msm_filter_write(struct msm_filter_handle *h, struct msm_buf *data, bool end_stream)
{
    struct msm_session *s = h->s;
    if (s->closed) {
        msm_buf_drain(data, data->len);
        return;
    }
    for (int i = s->n_active - 1; i >= 0; i--) {
        struct msm_filter_handle *f = &s->fh[i];
        if (f->ops->on_write && f->ops->on_write(f->inst, data, end_stream) == MSM_FILTER_STOP) {
            return;
        }
    }
    msm_conn_write(s->conn, data, end_stream);
}

void msm_filter_inject_write(struct msm_filter_handle *h, struct msm_buf *data)
{
    struct msm_session *s = h->s;
    if (s->closed) {
        msm_buf_drain(data, data->len);
        return;
    }
    for (int i = h->index - 1; i >= 0; i--) {
        struct msm_filter_handle *f = &s->fh[i];
        if (f->ops->on_write && f->ops->on_write(f->inst, data, false) == MSM_FILTER_STOP) {
            return;
        }
    }
    msm_conn_write(s->conn, data, false);
}

void msm_filter_close(struct msm_filter_handle *h, enum msm_close_type how)
{
    if (h->s->conn && !h->s->closed) {
        msm_conn_close(h->s->conn, how);
    }
}

void msm_filter_read_disable(struct msm_filter_handle *h, bool disable)
{
    if (h->s->conn && !h->s->closed) {
        msm_conn_read_disable(h->s->conn, disable);
    }
}

void msm_filter_take_over(struct msm_filter_handle *h)
{
    h->s->n_active = h->index + 1;
}

void *msm_filter_next_config(struct msm_filter_handle *h,
                             const struct msm_network_filter_ops *ops)
{
    const struct msm_filter_chain *chain = h->s->chain;
    for (int i = h->index + 1; i < chain->n; i++) {
        if (chain->f[i].ops == ops) {
            return chain->f[i].config;
        }
    }
    return NULL;
}
