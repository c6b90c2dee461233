/* Upstream HTTP connection pools (see pool.h).
 *
 * Connection states: CONNECTING -> READY (codec attached; serves streams) -> DRAINING (no new
 * streams: GOAWAY, Connection: close, max requests) -> CLOSED. A READY connection with no
 * stream is idle: it waits idle_timeout for the next request.
 *
 * Waiting requests are served in FIFO order whenever a connection becomes READY or has room
 * again; that hand-off always runs from the pool's own timer (never inside a codec callback),
 * so a router never opens a stream while the codec that finished the previous one is still on
 * the stack. */
#include "http/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "event/deferred.h"
#include "net/conn.h"
#include "tls/tls.h"
#include "upstream/cluster.h"
#include "upstream/cluster_http.h"

struct pool_reg {
    struct ev_loop *loop;
    struct msm_pool *pools;
};

struct msm_pool_req {
    struct msm_pool_req *next, *prev;
    struct msm_pool *pool;
    const struct msm_pool_cbs *cbs;
    void *ctx;
    bool pending_reserved;
};

struct msm_pool {
    struct msm_pool *next;
    struct pool_reg *reg;
    char *cluster_name;
    struct msm_address addr;
    enum msm_http_proto proto;
    enum msm_pool_kind kind; /* tunnel pools: one stream per connection, never reused */
    /* auto_config over TLS (Envoy's mixed pool): each connection's codec comes from the ALPN
     * its handshake negotiated; proto is then what the last handshake picked (HTTP/2 until
     * one picked something else), which says how many connections waiting requests need. */
    bool mixed;
    uint8_t *alpn; /* ALPN override, wire format (NULL = the cluster's) */
    size_t alpn_len;
    char *host_name; /* auto_sni / auto_san_validation: the requests' host, NULL = none */
    struct msm_cluster *cluster; /* the newest version that asked (reference) */
    struct msm_host *host;       /* reference */
    /* Connections with room first (idle ones moved to the front when they become idle, full
     * ones to the back when they take a stream), so a request rarely scans past busy ones. */
    struct msm_upconn *conns, *conns_tail;
    struct msm_pool_req *pend_head, *pend_tail;
    int n_pending;
    int n_connecting;
    ev_timer serve; /* hands waiting requests to connections */
};

struct msm_upconn {
    struct msm_upconn *next, *prev;
    struct msm_pool *pool;
    struct msm_conn *conn;
    struct msm_hcodec *codec;
    enum msm_http_proto proto;   /* the codec's, once connected */
    struct msm_cluster *cluster; /* version the connection was made for (reference) */
    struct msm_host *host;       /* reference */
    bool connected;
    bool closed;
    bool cx_reserved;
    bool protocol_error; /* closed on a codec error: streams reset with PROTOCOL_ERROR */
    bool own;            /* mixed pools: an HTTP/1.1 connection an upgrade/CONNECT took */
    bool eof;            /* tunnel pools: the peer's FIN arrived (half-close) */
    bool eof_done;       /* ... and went to the codec, after every byte before it */
    bool in_read;        /* up_on_read is dispatching: a stream's end is settled after it */
    bool stream_ended;   /* ... and one ended */
    uint32_t streams_total;
    int read_disabled;
    ev_timer idle;    /* lazy: left running while streams come and go (on_idle) */
    double idle_since; /* when the last stream ended */
    ev_timer resume;
    double start;
    char peer[64];
};

static const int reg_key;

static void conn_close(struct msm_upconn *uc, enum msm_close_type how);

static void conn_unlink(struct msm_pool *p, struct msm_upconn *uc)
{
    if (uc->prev) {
        uc->prev->next = uc->next;
    } else {
        p->conns = uc->next;
    }
    if (uc->next) {
        uc->next->prev = uc->prev;
    } else {
        p->conns_tail = uc->prev;
    }
}

static void conn_push_front(struct msm_pool *p, struct msm_upconn *uc)
{
    uc->prev = NULL;
    uc->next = p->conns;
    if (p->conns) {
        p->conns->prev = uc;
    } else {
        p->conns_tail = uc;
    }
    p->conns = uc;
}

static void conn_push_back(struct msm_pool *p, struct msm_upconn *uc)
{
    uc->next = NULL;
    uc->prev = p->conns_tail;
    if (p->conns_tail) {
        p->conns_tail->next = uc;
    } else {
        p->conns = uc;
    }
    p->conns_tail = uc;
}
static void pool_kick(struct msm_pool *p);

/* ---- registry ----------------------------------------------------------------------------------- */

static void *reg_create(struct ev_loop *loop)
{
    struct pool_reg *r = MSM_NEW(struct pool_reg);
    r->loop = loop;
    return r;
}

static void pool_free(struct msm_pool *p)
{
    ev_timer_stop(p->reg->loop, &p->serve);
    while (p->conns) {
        struct msm_upconn *uc = p->conns;
        conn_close(uc, MSM_CLOSE_NOFLUSH); /* unlinks uc */
    }
    while (p->pend_head) {
        struct msm_pool_req *r = p->pend_head;
        p->pend_head = r->next;
        if (r->pending_reserved) {
            msm_cluster_pending_release(p->cluster);
        }
        free(r);
    }
    msm_cluster_unref(p->cluster);
    msm_host_unref(p->host);
    free(p->cluster_name);
    free(p->alpn);
    free(p->host_name);
    free(p);
}

static void reg_destroy(void *state)
{
    struct pool_reg *r = state;
    while (r->pools) {
        struct msm_pool *p = r->pools;
        r->pools = p->next;
        pool_free(p);
    }
    free(r);
}

static void on_serve(struct ev_loop *loop, ev_timer *t, int revents);
static bool must_close(const struct msm_upconn *uc, int active);
static void settle(struct msm_upconn *uc, int active);

struct msm_pool *msm_pool_get(struct ev_loop *loop, struct msm_cluster *c, struct msm_host *h,
                              enum msm_http_proto proto)
{
    return msm_pool_get_alpn(loop, c, h, proto, NULL, 0, NULL);
}

static struct msm_pool *pool_get(struct ev_loop *loop, struct msm_cluster *c, struct msm_host *h,
                                 enum msm_http_proto proto, enum msm_pool_kind kind,
                                 const char *const *alpn, int n, const char *host_name);

struct msm_pool *msm_pool_get_alpn(struct ev_loop *loop, struct msm_cluster *c, struct msm_host *h,
                                   enum msm_http_proto proto, const char *const *alpn, int n,
                                   const char *host_name)
{
    return pool_get(loop, c, h, proto, MSM_POOL_PLAIN, alpn, n, host_name);
}

struct msm_pool *msm_pool_get_tunnel(struct ev_loop *loop, struct msm_cluster *c,
                                     struct msm_host *h, enum msm_pool_kind kind,
                                     const char *const *alpn, int n, const char *host_name)
{
    return pool_get(loop, c, h, MSM_HTTP_11, kind, alpn, n, host_name);
}

static struct msm_pool *pool_get(struct ev_loop *loop, struct msm_cluster *c, struct msm_host *h,
                                 enum msm_http_proto proto, enum msm_pool_kind kind,
                                 const char *const *alpn, int n, const char *host_name)
{
    struct pool_reg *reg = msm_loop_local(loop, &reg_key, reg_create, reg_destroy);
    bool mixed = kind == MSM_POOL_PLAIN && msm_pool_alpn_mixed(c, h);
    if (mixed) {
        proto = MSM_HTTP_2; /* until a handshake picks something else */
    } else if (proto != MSM_HTTP_2 || kind != MSM_POOL_PLAIN) {
        proto = MSM_HTTP_11;
    }
    /* The override in wire format; names that do not fit (empty, > 255 bytes) are left out. */
    uint8_t wire[512];
    size_t wlen = 0;
    for (int i = 0; i < n; i++) {
        const char *name = alpn[i];
        if (kind == MSM_POOL_TUNNEL_HTTP1) {
            /* istio.alpn picked the list by the cluster's protocol, but a tunnel speaks
             * HTTP/1.1: never offer h2 on it (the peer would pick HTTP/2). */
            name = !strcmp(name, "h2") ? "http/1.1"
                   : !strcmp(name, "istio-h2") ? "istio-http/1.1"
                                               : name;
        }
        size_t l = strlen(name);
        if (!l || l > 255 || wlen + 1 + l > sizeof(wire)) {
            continue;
        }
        wire[wlen++] = (uint8_t)l;
        memcpy(wire + wlen, name, l);
        wlen += l;
    }
    if (mixed && !wlen && !msm_tls_factory_has_alpn(msm_cluster_transport(c->cfg, h))) {
        /* Envoy's ALPN fallback for its mixed pool, when neither the TLS context nor an
         * override sets a list: h2 first, then http/1.1. */
        static const uint8_t fallback[] = "\x02h2\x08http/1.1";
        wlen = sizeof(fallback) - 1;
        memcpy(wire, fallback, wlen);
    }
    for (struct msm_pool *p = reg->pools; p; p = p->next) {
        if (p->mixed == mixed && (mixed || p->proto == proto) && p->kind == kind &&
            msm_address_eq(&p->addr, &h->addr) &&
            p->alpn_len == wlen &&
            (!wlen || !memcmp(p->alpn, wire, wlen)) && !strcmp(p->cluster_name, c->cfg->name) &&
            (p->host_name ? host_name && !strcmp(p->host_name, host_name) : !host_name)) {
            if (p->cluster != c) {
                msm_cluster_unref(p->cluster);
                p->cluster = msm_cluster_ref(c);
            }
            return p;
        }
    }
    struct msm_pool *p = MSM_NEW(struct msm_pool);
    p->reg = reg;
    p->cluster_name = msm_xstrdup(c->cfg->name);
    p->addr = h->addr;
    p->proto = proto;
    p->kind = kind;
    p->mixed = mixed;
    p->host_name = host_name ? msm_xstrdup(host_name) : NULL;
    if (wlen) {
        p->alpn = msm_xmalloc(wlen);
        memcpy(p->alpn, wire, wlen);
        p->alpn_len = wlen;
    }
    p->cluster = msm_cluster_ref(c);
    atomic_fetch_add(&h->refs, 1);
    p->host = h;
    ev_timer_init(&p->serve, on_serve, 0, 0);
    p->next = reg->pools;
    reg->pools = p;
    return p;
}

bool msm_pool_alpn_mixed(const struct msm_cluster *c, const struct msm_host *h)
{
    return msm_cluster_http_cfg_of(c->cfg)->proto == MSM_UPSTREAM_AUTO &&
           msm_cluster_transport(c->cfg, h) != NULL;
}

int msm_pool_count_conns(struct ev_loop *loop)
{
    struct pool_reg *reg = msm_loop_local(loop, &reg_key, reg_create, reg_destroy);
    int n = 0;
    for (struct msm_pool *p = reg->pools; p; p = p->next) {
        for (struct msm_upconn *uc = p->conns; uc; uc = uc->next) {
            n++;
        }
    }
    return n;
}

/* ---- connections --------------------------------------------------------------------------------- */

static const struct msm_cluster_http_cfg *hcfg(const struct msm_upconn *uc)
{
    return msm_cluster_http_cfg_of(uc->cluster->cfg);
}

/* Can <uc> take one more stream now? */
static bool has_room(const struct msm_upconn *uc)
{
    if (!uc->connected || uc->closed || !uc->codec) {
        return false;
    }
    if ((uc->pool->kind != MSM_POOL_PLAIN && uc->streams_total) || uc->own) {
        return false; /* a tunnel's connection is its own */
    }
    uint32_t max = hcfg(uc)->max_requests_per_connection;
    if (max && uc->streams_total >= max) {
        return false;
    }
    return uc->codec->ops->can_new_stream(uc->codec);
}

static void up_write(void *owner, struct msm_buf *b)
{
    struct msm_upconn *uc = owner;
    if (uc->closed) {
        msm_buf_drain(b, b->len);
        return;
    }
    msm_stat_add(uc->cluster->sh->stats.upstream_cx_tx_bytes_total, b->len);
    msm_conn_write(uc->conn, b, false);
}

static void schedule_resume(struct msm_upconn *uc)
{
    if (!uc->closed && !ev_is_active(&uc->resume)) {
        ev_timer_set(&uc->resume, 0, 0);
        ev_timer_start(uc->conn->loop, &uc->resume);
    }
}

/* A stream ended, outside the codec's dispatch. The usual case is settled at once: nothing
 * buffered to parse, no EOF to hand on, no reason to close (no zero-delay timer per request).
 * The rest waits for on_resume. */
static void stream_done(struct msm_upconn *uc)
{
    if (!uc->closed && uc->codec && !uc->conn->in.len && !uc->eof) {
        int active = uc->codec->ops->active_streams(uc->codec);
        if (!must_close(uc, active)) {
            settle(uc, active);
            return;
        }
    }
    schedule_resume(uc);
}

static void up_stream_done(void *owner)
{
    struct msm_upconn *uc = owner;
    if (uc->in_read) {
        uc->stream_ended = true; /* up_on_read settles it once the dispatch returned */
        return;
    }
    stream_done(uc);
}

static void up_goaway(void *owner)
{
    struct msm_upconn *uc = owner;
    pool_kick(uc->pool); /* waiting requests need another connection */
}

static void up_read_disable(void *owner, bool disable)
{
    msm_upconn_read_disable(owner, disable);
}

static void up_shutdown_write(void *owner)
{
    struct msm_upconn *uc = owner;
    if (!uc->closed) {
        msm_conn_write(uc->conn, NULL, true);
    }
}

/* The codec gave up on the connection outside a read (HTTP/2 keepalive timeout). */
static void up_error(void *owner)
{
    struct msm_upconn *uc = owner;
    if (!uc->closed) {
        conn_close(uc, MSM_CLOSE_NOFLUSH);
    }
}

static const struct msm_hcodec_cbs up_codec_cbs = {
    .write = up_write,
    .on_goaway = up_goaway,
    .on_stream_done = up_stream_done,
    .read_disable = up_read_disable,
    .shutdown_write = up_shutdown_write,
    .on_error = up_error,
};

static void uc_free(void *arg)
{
    struct msm_upconn *uc = arg;
    msm_hcodec_free(uc->codec);
    msm_cluster_unref(uc->cluster);
    msm_host_unref(uc->host);
    free(uc);
}

/* After the connection closed or failed: accounting, unlink, free later. */
static void uc_gone(struct msm_upconn *uc, bool remote)
{
    struct msm_pool *p = uc->pool;
    struct msm_cluster_stats *cs = &uc->cluster->sh->stats;
    struct ev_loop *loop = p->reg->loop;
    ev_timer_stop(loop, &uc->idle);
    ev_timer_stop(loop, &uc->resume);
    if (!uc->connected) {
        p->n_connecting--;
    }
    msm_stat_dec(cs->upstream_cx_active);
    msm_stat_inc(cs->upstream_cx_destroy);
    msm_stat_inc(remote ? cs->upstream_cx_destroy_remote : cs->upstream_cx_destroy_local);
    msm_stat_record(cs->upstream_cx_length_ms, (uint64_t)((ev_now(loop) - uc->start) * 1000.0));
    atomic_fetch_sub(&uc->host->active_cx, 1);
    if (uc->cx_reserved) {
        msm_cluster_cx_release(uc->cluster);
        uc->cx_reserved = false;
    }
    conn_unlink(p, uc);
    uc->conn = NULL;
    msm_defer(loop, uc_free, uc);
    if (!p->conns && !p->pend_head && !ev_is_active(&p->serve)) {
        /* Nothing left: the serve timer frees the pool (ORIGINAL_DST clusters make one pool
         * per destination; they must not pile up). */
        ev_timer_set(&p->serve, 0, 0);
        ev_timer_start(loop, &p->serve);
    }
}

static void fail_pending(struct msm_pool *p, enum msm_pool_failure f, const char *detail)
{
    while (p->pend_head) {
        struct msm_pool_req *r = p->pend_head;
        p->pend_head = r->next;
        if (p->pend_head) {
            p->pend_head->prev = NULL;
        } else {
            p->pend_tail = NULL;
        }
        p->n_pending--;
        if (r->pending_reserved) {
            msm_cluster_pending_release(p->cluster);
        }
        const struct msm_pool_cbs *cbs = r->cbs;
        void *ctx = r->ctx;
        free(r);
        cbs->on_failure(ctx, f, detail);
    }
}

static void close_streams(struct msm_upconn *uc, bool remote)
{
    if (!uc->codec) {
        return;
    }
    int active = uc->codec->ops->active_streams(uc->codec);
    if (active) {
        struct msm_cluster_http_stats *hs = &uc->cluster->sh->http.stats;
        msm_stat_inc(hs->upstream_cx_destroy_with_active_rq);
        msm_stat_inc(remote ? hs->upstream_cx_destroy_remote_with_active_rq
                            : hs->upstream_cx_destroy_local_with_active_rq);
    }
    uc->codec->ops->close_streams(uc->codec, uc->protocol_error ? MSM_RESET_PROTOCOL_ERROR
                                                                : MSM_RESET_CONNECTION_TERMINATION);
}

/* The peer's FIN to the codec. A message it cuts short is a protocol error (Envoy's
 * CodecClient: the EOF dispatch fails): counted, and the streams left are reset as such. */
static void codec_eof(struct msm_upconn *uc)
{
    if (uc->codec->ops->dispatch_eof(uc->codec) < 0) {
        msm_stat_inc(uc->cluster->sh->http.stats.upstream_cx_protocol_error);
        uc->protocol_error = true;
    }
}

static void up_on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev)
{
    struct msm_upconn *uc = ctx;
    struct msm_pool *p = uc->pool;
    struct msm_cluster_stats *cs = &uc->cluster->sh->stats;
    switch (ev) {
    case MSM_CONN_CONNECTED: {
        const struct msm_cluster_http_cfg *h = hcfg(uc);
        uc->connected = true;
        p->n_connecting--;
        msm_stat_record(cs->upstream_cx_connect_ms,
                        (uint64_t)((ev_now(c->loop) - c->connect_start) * 1000.0));
        if (p->mixed) {
            /* As Envoy's mixed pool: "h2" is HTTP/2; "http/1.1", no ALPN or anything else is
             * HTTP/1.1. The pool remembers it for the connections it makes next. */
            const struct msm_tls_info *ti = msm_conn_tls_info(c);
            p->proto = ti && ti->alpn && !strcmp(ti->alpn, "h2") ? MSM_HTTP_2 : MSM_HTTP_11;
        }
        uc->proto = p->kind == MSM_POOL_PLAIN ? p->proto : MSM_HTTP_11;
        if (p->kind == MSM_POOL_TUNNEL_TCP) {
            uc->codec = msm_tcp_tunnel_client_new(&up_codec_cbs, uc);
        } else if (p->proto == MSM_HTTP_2) {
            struct msm_hcodec_opts o = h->h2;
            o.h2stats = msm_cluster_http2_stats(uc->cluster);
            uc->codec = msm_http2_client_new(&o, &up_codec_cbs, uc);
            msm_http2_keepalive_start(uc->codec, p->reg->loop);
            msm_stat_inc(uc->cluster->sh->http.stats.upstream_cx_http2_total);
        } else {
            struct msm_hcodec_opts o = h->h1;
            o.h1stats = msm_cluster_http1_stats(uc->cluster);
            uc->codec = msm_http1_client_new(&o, &up_codec_cbs, uc);
            msm_stat_inc(uc->cluster->sh->http.stats.upstream_cx_http1_total);
        }
        msm_outlier_report(uc->cluster, uc->host, MSM_OUTLIER_SUCCESS);
        pool_kick(p);
        return;
    }
    case MSM_CONN_CONNECT_FAILED:
    case MSM_CONN_CONNECT_TIMEOUT: {
        bool timeout = ev == MSM_CONN_CONNECT_TIMEOUT;
        msm_stat_inc(timeout ? cs->upstream_cx_connect_timeout : cs->upstream_cx_connect_fail);
        atomic_fetch_add(&uc->host->cx_connect_fail, 1);
        msm_outlier_report(uc->cluster, uc->host, MSM_OUTLIER_LOCAL_FAILURE);
        const char *detail = c->close_detail ? c->close_detail : "connection failure";
        msm_log(MSM_LOG_DEBUG, MSM_LC_POOL, "[C%llu] connect to %s (cluster '%s') failed: %s",
                c->id, uc->peer, p->cluster_name, detail);
        uc->closed = true;
        uc_gone(uc, true);
        /* Envoy fails the waiting requests with the connection that was made for them. */
        fail_pending(p, timeout ? MSM_POOL_CONNECT_TIMEOUT : MSM_POOL_CONNECT_FAILURE, detail);
        return;
    }
    case MSM_CONN_REMOTE_CLOSE:
    case MSM_CONN_LOCAL_CLOSE:
        if (uc->codec && !uc->closed) {
            codec_eof(uc); /* a close-delimited body ends here */
        }
        uc->closed = true;
        close_streams(uc, ev == MSM_CONN_REMOTE_CLOSE);
        bool was_connected = uc->connected;
        uc_gone(uc, ev == MSM_CONN_REMOTE_CLOSE);
        if (!was_connected) {
            fail_pending(p, MSM_POOL_CONNECTION_LOST, "connection lost");
        } else {
            pool_kick(p);
        }
        return;
    }
}

/* Tunnel pools (half-close on): the peer's FIN goes to the codec once every byte before it
 * did (a read-disabled tunnel leaves bytes in the connection). A connection whose streams are
 * all over by then closes. */
static void deliver_eof(struct msm_upconn *uc)
{
    if (!uc->eof || uc->eof_done || uc->closed || uc->conn->in.len) {
        return;
    }
    uc->eof_done = true;
    codec_eof(uc);
    if (!uc->closed && !uc->codec->ops->active_streams(uc->codec)) {
        conn_close(uc, MSM_CLOSE_FLUSH);
    }
}

static void up_on_read(struct msm_conn *c, void *ctx, bool end_stream)
{
    struct msm_upconn *uc = ctx;
    if (uc->closed || !uc->codec) {
        msm_buf_drain(&c->in, c->in.len);
        return;
    }
    uc->eof = uc->eof || end_stream;
    msm_stat_add(uc->cluster->sh->stats.upstream_cx_rx_bytes_total, c->in.len);
    bool nested = uc->in_read;
    uc->in_read = true;
    int rc = msm_hcodec_dispatch(uc->codec, &c->in);
    uc->in_read = nested;
    bool ended = uc->stream_ended && !nested;
    if (!nested) {
        uc->stream_ended = false;
    }
    if (rc < 0) {
        msm_stat_inc(uc->cluster->sh->http.stats.upstream_cx_protocol_error);
        uc->protocol_error = true;
        conn_close(uc, MSM_CLOSE_NOFLUSH);
        return;
    }
    if (uc->closed) {
        return;
    }
    if (uc->codec->close_connection && !uc->codec->ops->active_streams(uc->codec)) {
        conn_close(uc, MSM_CLOSE_FLUSH);
        return;
    }
    deliver_eof(uc);
    if (ended) {
        stream_done(uc);
    }
}

static void up_on_watermark(struct msm_conn *c, void *ctx, bool above)
{
    struct msm_upconn *uc = ctx;
    (void)c;
    if (uc->codec && !uc->closed) {
        uc->codec->ops->conn_watermark(uc->codec, above);
    }
}

static const struct msm_conn_handler up_handler = {
    .on_read = up_on_read,
    .on_event = up_on_event,
    .on_watermark = up_on_watermark,
};

static void conn_close(struct msm_upconn *uc, enum msm_close_type how)
{
    if (!uc->conn) {
        return;
    }
    if (uc->closed) {
        return;
    }
    msm_conn_close(uc->conn, how); /* on_event(LOCAL_CLOSE) unlinks */
}

static void on_idle(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_upconn *uc = MSM_CONTAINER_OF(t, struct msm_upconn, idle);
    if (uc->codec && uc->codec->ops->active_streams(uc->codec)) {
        return; /* busy: the next idle moment re-arms it (on_resume) */
    }
    double left = uc->idle_since + hcfg(uc)->idle_timeout_ms / 1000.0 - ev_now(loop);
    if (left > 0.001) {
        ev_timer_set(t, left, 0);
        ev_timer_start(loop, t);
        return;
    }
    msm_stat_inc(uc->cluster->sh->http.stats.upstream_cx_idle_timeout);
    conn_close(uc, MSM_CLOSE_NOFLUSH);
}

/* After a stream finished or reading resumed: buffered input, idleness, waiting requests. */
static void on_resume(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_upconn *uc = MSM_CONTAINER_OF(t, struct msm_upconn, resume);
    if (uc->closed || !uc->codec) {
        return;
    }
    if (uc->conn->in.len && !uc->read_disabled) {
        up_on_read(uc->conn, uc, false);
        if (uc->closed) {
            return;
        }
    }
    deliver_eof(uc);
    if (uc->closed) {
        return;
    }
    int active = uc->codec->ops->active_streams(uc->codec);
    if (must_close(uc, active)) {
        uint32_t max = hcfg(uc)->max_requests_per_connection;
        if (max && uc->streams_total >= max) {
            msm_stat_inc(uc->cluster->sh->http.stats.upstream_cx_max_requests);
        }
        conn_close(uc, MSM_CLOSE_FLUSH);
        pool_kick(uc->pool);
        return;
    }
    settle(uc, active);
}

/* A connection with no stream left closes when its codec or the request limit says so. */
static bool must_close(const struct msm_upconn *uc, int active)
{
    uint32_t max = hcfg(uc)->max_requests_per_connection;
    return !active && (uc->codec->close_connection || uc->codec->goaway_received || uc->own ||
                       (max && uc->streams_total >= max));
}

/* After a stream ended, on a connection that stays: idleness, list order, waiting requests. */
static void settle(struct msm_upconn *uc, int active)
{
    struct ev_loop *loop = uc->conn->loop;
    if (!active && hcfg(uc)->idle_timeout_ms) {
        /* The timer is not stopped when a stream starts (two timer-heap updates per request
         * saved): it only checks, when it fires, that the idle time has run out. */
        uc->idle_since = ev_now(loop);
        if (!ev_is_active(&uc->idle)) {
            ev_timer_set(&uc->idle, hcfg(uc)->idle_timeout_ms / 1000.0, 0);
            ev_timer_start(loop, &uc->idle);
        }
    }
    if (!active && uc->prev) {
        /* Idle connections first: msm_pool_request takes the first one with room. */
        conn_unlink(uc->pool, uc);
        conn_push_front(uc->pool, uc);
    }
    pool_kick(uc->pool);
}

static void start_conn(struct msm_pool *p)
{
    struct msm_cluster *c = p->cluster;
    struct msm_cluster_stats *cs = &c->sh->stats;
    if (!msm_cluster_cx_reserve(c)) {
        msm_stat_inc(c->sh->http.stats.upstream_cx_pool_overflow);
        return; /* the requests wait for a connection to free up (or their timeout) */
    }
    struct msm_upconn *uc = MSM_NEW(struct msm_upconn);
    uc->pool = p;
    uc->cluster = msm_cluster_ref(c);
    atomic_fetch_add(&p->host->refs, 1);
    uc->host = p->host;
    uc->cx_reserved = true;
    msm_address_str(&p->addr, uc->peer, sizeof(uc->peer));
    ev_timer_init(&uc->idle, on_idle, 0, 0);
    ev_timer_init(&uc->resume, on_resume, 0, 0);
    int rc = 0;
    uc->conn = msm_conn_connect(p->reg->loop, &p->addr, c->cfg->has_bind ? &c->cfg->bind : NULL,
                                c->cfg->connect_timeout_ms, &up_handler, uc, &rc);
    msm_stat_inc(cs->upstream_cx_total);
    atomic_fetch_add(&uc->host->cx_total, 1);
    if (!uc->conn) {
        msm_stat_inc(cs->upstream_cx_connect_fail);
        msm_log(MSM_LOG_WARN, MSM_LC_POOL, "cluster '%s': cannot create socket: %s",
                p->cluster_name, strerror(-rc));
        msm_cluster_cx_release(c);
        msm_cluster_unref(uc->cluster);
        msm_host_unref(uc->host);
        free(uc);
        fail_pending(p, MSM_POOL_CONNECT_FAILURE, "socket creation failure");
        return;
    }
    struct msm_tls_factory *tls =
        p->alpn_len || p->host_name ? msm_cluster_transport(c->cfg, p->host) : NULL;
    if (tls) {
        /* auto_sni sends the host's name unless it is an IP address (Envoy); auto_san_
         * validation checks the certificate against it either way. */
        const struct msm_cluster_http_cfg *hc = msm_cluster_http_cfg_of(c->cfg);
        struct msm_address ip;
        bool is_ip = p->host_name && msm_address_from_ip(p->host_name, 0, &ip, NULL) == 0;
        const char *sni = hc->auto_sni && !is_ip ? p->host_name : NULL;
        const char *verify = hc->auto_san_validation ? p->host_name : NULL;
        msm_conn_set_transport(
            uc->conn, msm_tls_transport_new_host(tls, p->alpn, p->alpn_len, sni, verify), 0);
    } else {
        msm_cluster_attach_transport(c->cfg, p->host, uc->conn);
    }
    msm_conn_set_watermarks(uc->conn, c->cfg->per_connection_buffer_limit);
    if (p->kind != MSM_POOL_PLAIN) {
        msm_conn_enable_half_close(uc->conn, true); /* a tunnel passes half-closes through */
    }
    msm_stat_inc(cs->upstream_cx_active);
    atomic_fetch_add(&uc->host->active_cx, 1);
    uc->start = ev_now(p->reg->loop);
    p->n_connecting++;
    conn_push_front(p, uc);
}

/* Serve waiting requests from connections with room; open connections for the rest. */
static void pool_serve(struct msm_pool *p)
{
    while (p->pend_head) {
        struct msm_upconn *uc = NULL;
        for (struct msm_upconn *x = p->conns; x; x = x->next) {
            if (has_room(x)) {
                uc = x;
                break;
            }
        }
        if (!uc) {
            break;
        }
        struct msm_pool_req *r = p->pend_head;
        p->pend_head = r->next;
        if (p->pend_head) {
            p->pend_head->prev = NULL;
        } else {
            p->pend_tail = NULL;
        }
        p->n_pending--;
        if (r->pending_reserved) {
            msm_cluster_pending_release(p->cluster);
        }
        const struct msm_pool_cbs *cbs = r->cbs;
        void *ctx = r->ctx;
        free(r);
        ev_timer_stop(p->reg->loop, &uc->idle);
        cbs->on_ready(ctx, uc);
    }
    /* HTTP/1 needs a connection per waiting request; HTTP/2 one connection for all (a mixed
     * pool's connection being made counts as HTTP/2 until a handshake picked HTTP/1.1, as
     * Envoy's allow_concurrency_for_alpn_pool). */
    int want = p->proto == MSM_HTTP_2 ? (p->pend_head ? 1 : 0) : p->n_pending;
    while (p->n_connecting < want) {
        int before = p->n_connecting;
        start_conn(p);
        if (p->n_connecting == before) {
            break;
        }
    }
}

static void on_serve(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_pool *p = MSM_CONTAINER_OF(t, struct msm_pool, serve);
    if (!p->conns && !p->pend_head) {
        struct msm_pool **pp = &p->reg->pools;
        while (*pp && *pp != p) {
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = p->next;
        }
        pool_free(p);
        return;
    }
    pool_serve(p);
}

static void pool_kick(struct msm_pool *p)
{
    if (p->pend_head && !ev_is_active(&p->serve)) {
        ev_timer_set(&p->serve, 0, 0);
        ev_timer_start(p->reg->loop, &p->serve);
    }
}

/* ---- requests ------------------------------------------------------------------------------------- */

struct msm_pool_req *msm_pool_request(struct msm_pool *p, const struct msm_pool_cbs *cbs,
                                      void *ctx)
{
    if (!p->pend_head) {
        for (struct msm_upconn *uc = p->conns; uc; uc = uc->next) {
            if (has_room(uc)) {
                cbs->on_ready(ctx, uc);
                return NULL;
            }
        }
    }
    if (!msm_cluster_pending_reserve(p->cluster)) {
        cbs->on_failure(ctx, MSM_POOL_OVERFLOW, "overflow");
        return NULL;
    }
    struct msm_pool_req *r = MSM_NEW(struct msm_pool_req);
    r->pool = p;
    r->cbs = cbs;
    r->ctx = ctx;
    r->pending_reserved = true;
    r->prev = p->pend_tail;
    if (p->pend_tail) {
        p->pend_tail->next = r;
    } else {
        p->pend_head = r;
    }
    p->pend_tail = r;
    p->n_pending++;
    int want = p->proto == MSM_HTTP_2 ? 1 : p->n_pending;
    bool h2_usable = false;
    for (struct msm_upconn *uc = p->conns; uc && p->proto == MSM_HTTP_2; uc = uc->next) {
        h2_usable = h2_usable || (!uc->connected && !uc->closed);
    }
    if (p->n_connecting < want && !h2_usable) {
        start_conn(p);
    }
    return r;
}

void msm_pool_cancel(struct msm_pool_req *r)
{
    struct msm_pool *p = r->pool;
    if (r->prev) {
        r->prev->next = r->next;
    } else {
        p->pend_head = r->next;
    }
    if (r->next) {
        r->next->prev = r->prev;
    } else {
        p->pend_tail = r->prev;
    }
    p->n_pending--;
    if (r->pending_reserved) {
        msm_cluster_pending_release(p->cluster);
    }
    msm_stat_inc(p->cluster->sh->http.stats.upstream_rq_cancelled);
    free(r);
}

struct msm_hstream *msm_upconn_new_stream(struct msm_upconn *uc, const struct msm_hstream_cbs *cbs,
                                          void *ctx)
{
    struct msm_hstream *s = uc->codec->ops->new_stream(uc->codec, cbs, ctx);
    if (s) {
        uc->streams_total++;
        if (uc->next && !has_room(uc)) {
            conn_unlink(uc->pool, uc); /* full: behind the connections with room */
            conn_push_back(uc->pool, uc);
        }
    }
    return s;
}

void msm_upconn_claim_tunnel(struct msm_upconn *uc)
{
    if (uc->pool->kind != MSM_POOL_PLAIN || uc->proto == MSM_HTTP_2 || uc->closed) {
        return; /* a tunnel pool's connection, or a stream among others (extended CONNECT) */
    }
    uc->own = true;
    msm_conn_enable_half_close(uc->conn, true);
}

const char *msm_upconn_peer(const struct msm_upconn *uc)
{
    return uc->peer;
}

const struct msm_tls_info *msm_upconn_tls_info(const struct msm_upconn *uc)
{
    return uc->conn ? msm_conn_tls_info(uc->conn) : NULL;
}

const struct msm_address *msm_upconn_local_address(const struct msm_upconn *uc)
{
    return uc->conn && uc->conn->local.len ? &uc->conn->local : NULL;
}

void msm_upconn_read_disable(struct msm_upconn *uc, bool disable)
{
    if (uc->closed || !uc->conn) {
        return;
    }
    uc->read_disabled += disable ? 1 : -1;
    msm_conn_read_disable(uc->conn, disable);
    if (!disable) {
        schedule_resume(uc);
    }
}
