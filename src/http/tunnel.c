/* A raw TCP leg behind the msm_hcodec vtable (client only), for CONNECT requests terminated
 * here (RouteAction.upgrade_configs[].connect_config, Envoy's TCP upstream): the router treats
 * it as any upstream stream, and the pool as a connection that serves one stream.
 *
 * One stream per connection. Its request headers never reach the wire; encoding them reports
 * a 200 response at once (the connection is already up when the pool hands it out). Body bytes
 * go out as they are, and the peer's bytes come back as the stream's data; end_stream either
 * way is a half-close (shutdown_write / the peer's FIN through dispatch_eof). The exchange is
 * over when both directions ended, or on a reset (the connection then closes). */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "http/codec.h"

struct tcp_stream {
    struct msm_hstream s;
    struct tcpc *c; /* NULL once the codec went first */
    bool headers_out;
    bool done;
    bool released;
};

struct tcpc {
    struct msm_hcodec base;
    struct tcp_stream *active; /* the stream, until its exchange is over */
    int read_disabled;
    bool in_dispatch;
    bool reported;         /* the 200 went to the owner */
};

static bool owned(const struct tcp_stream *st)
{
    return st && !st->released && !st->done && st->s.cbs;
}

/* The exchange is over: the connection closes after it (one stream per connection). */
static void retire(struct tcpc *c, struct tcp_stream *st)
{
    st->done = true;
    c->base.close_connection = true;
    if (c->active == st) {
        c->active = NULL;
    }
    if (st->released) {
        free(st);
    } else if (c->base.cbs->on_stream_done) {
        c->base.cbs->on_stream_done(c->base.owner);
    }
}

static void maybe_complete(struct tcpc *c, struct tcp_stream *st)
{
    if (!st->done && st->s.local_end && st->s.remote_end) {
        retire(c, st);
    }
}

static int tcp_dispatch(struct msm_hcodec *base, struct msm_buf *in)
{
    struct tcpc *c = (struct tcpc *)base;
    struct tcp_stream *st = c->active;
    if (!owned(st) || st->s.remote_end || !c->reported) {
        if (!owned(st) || st->s.remote_end) {
            msm_buf_drain(in, in->len); /* nobody reads: the connection is closing */
        }
        return 0; /* before the 200: keep the bytes for later */
    }
    if (c->read_disabled || !in->len) {
        return 0;
    }
    c->in_dispatch = true;
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_move(&b, in);
    st->s.cbs->on_data(st->s.ctx, &b, false);
    msm_buf_deinit(&b);
    c->in_dispatch = false;
    return 0;
}

static int tcp_dispatch_eof(struct msm_hcodec *base)
{
    struct tcpc *c = (struct tcpc *)base;
    struct tcp_stream *st = c->active;
    if (!st || st->done || st->s.remote_end) {
        return 0;
    }
    st->s.remote_end = true;
    if (owned(st) && c->reported) {
        struct msm_buf b;
        msm_buf_init(&b);
        st->s.cbs->on_data(st->s.ctx, &b, true);
        msm_buf_deinit(&b);
    } else if (owned(st)) {
        st->s.cbs->on_reset(st->s.ctx, MSM_RESET_CONNECTION_TERMINATION);
    }
    if (c->active == st) {
        maybe_complete(c, st);
    }
    return 0;
}

static struct msm_hstream *tcp_new_stream(struct msm_hcodec *base,
                                          const struct msm_hstream_cbs *cbs, void *ctx)
{
    struct tcpc *c = (struct tcpc *)base;
    if (base->streams_total || base->close_connection) {
        return NULL;
    }
    struct tcp_stream *st = MSM_NEW(struct tcp_stream);
    st->c = c;
    st->s.codec = base;
    st->s.cbs = cbs;
    st->s.ctx = ctx;
    st->s.id = (uint32_t)++base->streams_total;
    st->s.tunnel = true;
    c->active = st;
    return &st->s;
}

static void tcp_encode_headers(struct msm_hstream *s, struct msm_hdrs *h, bool end_stream)
{
    struct tcp_stream *st = (struct tcp_stream *)s;
    struct tcpc *c = st->c;
    (void)h;
    if (!c || st->done || st->headers_out) {
        return;
    }
    st->headers_out = true;
    if (end_stream) {
        s->local_end = true;
        if (c->base.cbs->shutdown_write) {
            c->base.cbs->shutdown_write(c->base.owner);
        }
    }
    /* The TCP leg is up: the owner gets its 200 now. This runs last, since the owner may
     * release or reset the stream from the callback. */
    c->reported = true;
    if (owned(st)) {
        struct msm_hdrs r;
        msm_hdrs_init(&r);
        msm_hdrs_addz(&r, ":status", "200");
        st->s.cbs->on_headers(st->s.ctx, &r, false);
        msm_hdrs_deinit(&r);
    }
    /* Bytes the peer sent before the 200 wait in the connection: have the owner dispatch
     * again (pools re-read on a stream's done/room notice). */
    if (c->base.cbs->on_stream_done) {
        c->base.cbs->on_stream_done(c->base.owner);
    }
}

static void tcp_encode_100(struct msm_hstream *s)
{
    (void)s;
}

static void tcp_encode_data(struct msm_hstream *s, struct msm_buf *data, bool end_stream)
{
    struct tcp_stream *st = (struct tcp_stream *)s;
    struct tcpc *c = st->c;
    if (!c || st->done || s->local_end) {
        msm_buf_drain(data, data->len);
        return;
    }
    if (data->len) {
        c->base.cbs->write(c->base.owner, data);
    }
    if (end_stream) {
        s->local_end = true;
        if (c->base.cbs->shutdown_write) {
            c->base.cbs->shutdown_write(c->base.owner);
        }
        maybe_complete(c, st);
    }
}

static void tcp_encode_trailers(struct msm_hstream *s, struct msm_hdrs *t)
{
    struct msm_buf b;
    (void)t;
    msm_buf_init(&b);
    tcp_encode_data(s, &b, true); /* a TCP leg has no trailers: just the end */
    msm_buf_deinit(&b);
}

static void tcp_reset(struct msm_hstream *s)
{
    struct tcp_stream *st = (struct tcp_stream *)s;
    if (!st->c || st->done) {
        return;
    }
    retire(st->c, st);
}

static void tcp_release(struct msm_hstream *s)
{
    struct tcp_stream *st = (struct tcp_stream *)s;
    if (st->released) {
        return;
    }
    st->released = true;
    s->cbs = NULL;
    s->ctx = NULL;
    if (!st->c || st->done) {
        free(st);
    }
}

static void tcp_read_disable(struct msm_hstream *s, bool disable)
{
    struct tcp_stream *st = (struct tcp_stream *)s;
    struct tcpc *c = st->c;
    if (!c || st->done) {
        return;
    }
    int before = c->read_disabled;
    c->read_disabled += disable ? 1 : -1;
    if (c->read_disabled < 0) {
        c->read_disabled = 0;
    }
    if (c->base.cbs->read_disable && (before == 0) != (c->read_disabled == 0)) {
        c->base.cbs->read_disable(c->base.owner, c->read_disabled > 0);
    }
}

static void tcp_goaway(struct msm_hcodec *base)
{
    struct tcpc *c = (struct tcpc *)base;
    if (!c->active) {
        base->close_connection = true;
    }
}

static int tcp_active_streams(const struct msm_hcodec *base)
{
    const struct tcpc *c = (const struct tcpc *)base;
    return c->active ? 1 : 0;
}

static void tcp_close_streams(struct msm_hcodec *base, enum msm_http_reset r)
{
    struct tcpc *c = (struct tcpc *)base;
    struct tcp_stream *st = c->active;
    base->close_connection = true;
    if (!st) {
        return;
    }
    bool notify = owned(st);
    st->done = true;
    c->active = NULL;
    if (notify) {
        st->s.cbs->on_reset(st->s.ctx, r); /* done: its owner's release frees it, maybe now */
    } else if (st->released) {
        free(st);
    }
}

static void tcp_conn_watermark(struct msm_hcodec *base, bool above)
{
    struct tcpc *c = (struct tcpc *)base;
    struct tcp_stream *st = c->active;
    if (owned(st) && st->s.cbs->on_watermark) {
        st->s.cbs->on_watermark(st->s.ctx, above);
    }
}

static bool tcp_can_new_stream(const struct msm_hcodec *base)
{
    return !base->streams_total && !base->close_connection;
}

static void tcp_free(struct msm_hcodec *base)
{
    struct tcpc *c = (struct tcpc *)base;
    struct tcp_stream *st = c->active;
    if (st) {
        if (st->released) {
            free(st);
        } else {
            st->done = true; /* its owner's release frees it */
            st->c = NULL;
        }
    }
    free(c);
}

static const struct msm_hcodec_ops tcp_ops = {
    .dispatch = tcp_dispatch,
    .dispatch_eof = tcp_dispatch_eof,
    .new_stream = tcp_new_stream,
    .encode_headers = tcp_encode_headers,
    .encode_100_continue = tcp_encode_100,
    .encode_data = tcp_encode_data,
    .encode_trailers = tcp_encode_trailers,
    .reset = tcp_reset,
    .release = tcp_release,
    .read_disable = tcp_read_disable,
    .goaway = tcp_goaway,
    .active_streams = tcp_active_streams,
    .close_streams = tcp_close_streams,
    .conn_watermark = tcp_conn_watermark,
    .can_new_stream = tcp_can_new_stream,
    .free = tcp_free,
};

struct msm_hcodec *msm_tcp_tunnel_client_new(const struct msm_hcodec_cbs *cbs, void *owner)
{
    struct tcpc *c = MSM_NEW(struct tcpc);
    c->base.ops = &tcp_ops;
    c->base.cbs = cbs;
    c->base.owner = owner;
    c->base.proto = MSM_HTTP_11;
    c->base.server = false;
    return &c->base;
}
