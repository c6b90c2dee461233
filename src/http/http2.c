/* HTTP/2 codecs on nghttp2: a server (downstream) and a client (upstream) behind the
 * msm_hcodec vtable (codec.h).
 *
 * Bytes: dispatch feeds nghttp2_session_mem_recv; output is pulled with
 * nghttp2_session_mem_send after every dispatch and encode call (never from inside an nghttp2
 * callback) and handed to the owner's write callback, unless the connection's write buffer is
 * above its watermark (then frames wait in nghttp2 until it drains). When the owner set the
 * codec's loop, encode calls and releases made during a round of the event loop only mark the
 * codec, and one pull at the end of the round takes the frames of all of them (a response's
 * HEADERS and DATA, several streams' responses); the owner calls ops->flush before it closes.
 *
 * Per request the codec allocates little: stream structs are recycled per connection, header
 * blocks are converted on the stack, and the output and DATA scratch buffers live as long as
 * the connection. Nor does it copy more than once: a response's fields go to nghttp2 as
 * NO_COPY pointers into a buffer the stream keeps (hold_nv), and DATA payloads leave as views
 * moved behind their frame headers (read_body sizes, send_data moves).
 *
 * Flow control: automatic WINDOW_UPDATE is off. Received DATA is consumed for the connection
 * at once and for the stream once its owner accepted it (a read-disabled stream accumulates
 * unconsumed bytes, so the peer stops sending on that stream only). Each stream's outgoing
 * body waits in its own buffer, pulled by nghttp2's data provider as windows allow; going over
 * stream_buffer_limit tells the owner (on_watermark) to stop producing.
 *
 * Abuse: header blocks over max_headers_kb or max_headers_count reset the stream; too many
 * consecutive empty DATA frames, rapid resets (nghttp2's rate limit plus our premature reset
 * count), excessive CONTINUATION frames and outbound floods end the connection with GOAWAY.
 */
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer/recycle.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "event/deferred.h"
#include "http/codec.h"

#define MAX_ADVERTISED_STREAMS 1024
#define MAX_SEND_HEADER_BLOCK (32u * 1024 * 1024)
#define PREMATURE_RESET_MIN 100
#define SPARE_STREAMS 16 /* freed stream structs a codec keeps for its next streams */

struct h2;

/* The end-of-round pull of a codec (flush_later). Allocated apart from the codec: a codec freed
 * with one queued leaves it to free itself when the round's queue reaches it. */
struct h2_flush {
    struct msm_ready r;
    struct h2 *c; /* NULL once the codec is freed */
    bool queued;
};

struct h2_stream {
    struct msm_hstream s;
    struct h2 *c;
    struct h2_stream *next, *prev; /* the codec's streams (until freed) */
    struct h2_stream *znext;
    int32_t id;                    /* 0 until a client request is submitted */
    struct msm_hdrs in;            /* header block being received */
    size_t in_bytes;
    bool in_overflow;
    bool headers_in;               /* the first (non-1xx) header block arrived */
    struct msm_buf out;
    bool out_end;                  /* end_stream after <out> */
    struct msm_hdrs *out_trailers;
    bool submitted;                /* our HEADERS went to nghttp2 */
    bool deferred;                 /* the data provider is waiting for bytes */
    bool above_wm;
    bool wm_low_pending;           /* tell the owner the buffer drained (after mem_send) */
    bool released;
    bool closed;                   /* nghttp2 closed it */
    bool reset;                    /* reset by the owner */
    bool notified;                 /* on_reset or a complete exchange: no more callbacks */
    bool active;                   /* counted in http2.streams_active */
    bool ext_connect;              /* server: an RFC 8441 extended CONNECT, handed on as an
                                    * HTTP/1.1-style upgrade; its 101 goes out as 200 */
    char *ext_proto;               /* client: the Upgrade sent as an extended CONNECT (its 200
                                    * comes back as a 101 with this Upgrade) */
    struct msm_hdrs *held;         /* client: an extended CONNECT waiting for the peer's first
                                    * SETTINGS (send_held); <held_end>: its end_stream */
    bool held_end;
    bool disposed;                 /* freed or queued for freeing (maybe_free ran) */
    bool send_failed;              /* nghttp2 could not send our HEADERS: we reset it */
    /* Server: the names and values of the response's header block, which nghttp2 points at
     * (NGHTTP2_NV_FLAG_NO_COPY_*) until it packs the HEADERS frame; the stream is freed only
     * after nghttp2 closed it, so after the frame was packed or dropped. Kept across recycling. */
    char *nvbuf;
    size_t nvcap;
    int read_disabled;
    size_t unconsumed;
};

struct h2 {
    struct msm_hcodec base;
    struct msm_hcodec_opts o;
    nghttp2_session *ng;
    struct h2_stream *streams;
    struct h2_stream *zombies;
    struct h2_stream *spare; /* freed streams kept for reuse (through znext) */
    int n_spare;
    /* Scratch buffers kept across calls so that their view arrays are allocated once: output
     * pulled from nghttp2 before it goes to the owner, DATA payload handed to a stream. */
    struct msm_buf wbuf;
    struct msm_buf rbuf;
    struct h2_flush *fl;           /* created on the first flush_later with base.loop set */
    bool wm_low_pending;           /* some stream has wm_low_pending set */
    /* The stream of the header block being received (on_begin_headers to on_stream_close):
     * spares on_header a stream map lookup per field. */
    int32_t hdr_id;
    struct h2_stream *hdr_st;
    int n_open;
    bool in_dispatch;
    bool blocked;                  /* the connection's write buffer is full */
    bool dead;                     /* fatal error: nothing more is processed */
    uint8_t head_seen;             /* client: bytes of the server's first frame header seen */
    uint32_t empty_frames;
    /* Envoy's inbound flood accounting (msm_hcodec_opts): over the connection's life */
    uint64_t in_priority, in_window_update, opened_streams, out_data_frames;
    uint32_t premature_resets;
    int32_t last_peer_stream;
    bool settings_in;              /* the peer's SETTINGS arrived (client: extended CONNECT) */
    /* connection_keepalive: started by msm_http2_keepalive_start */
    struct ev_loop *ka_loop;
    ev_timer ka_interval, ka_timeout; /* ka_timeout active: a PING is outstanding */
    uint64_t ka_ping_id;
    uint32_t ka_rand;
    ev_tstamp last_rx;
    nghttp2_mem mem;               /* nghttp2's allocator; mem_user_data is this codec */
    size_t ng_bytes;               /* bytes nghttp2 holds for this session (prefixes included) */
};

static void flush(struct h2 *c);
static void send_held(struct h2 *c);
static const struct msm_hcodec_ops h2_ops;

#define H2_INC(c, f)                                                                              \
    do {                                                                                          \
        if ((c)->o.h2stats) {                                                                     \
            msm_stat_inc((c)->o.h2stats->f);                                                      \
        }                                                                                         \
    } while (0)
#define H2_DEC(c, f)                                                                              \
    do {                                                                                          \
        if ((c)->o.h2stats) {                                                                     \
            msm_stat_dec((c)->o.h2stats->f);                                                      \
        }                                                                                         \
    } while (0)

/* ---- streams ---------------------------------------------------------------------------------- */

static bool owned(const struct h2_stream *st)
{
    return st && !st->released && !st->reset && !st->notified && st->s.cbs;
}

static void stream_free(struct h2_stream *st)
{
    free(st->nvbuf);
    free(st->ext_proto);
    msm_hdrs_free(st->held);
    msm_hdrs_deinit(&st->in);
    msm_buf_deinit(&st->out);
    msm_hdrs_free(st->out_trailers);
    free(st);
}

/* Free <st>, or keep it for the codec's next stream (one allocation less per request). */
static void stream_recycle(struct h2 *c, struct h2_stream *st)
{
    if (c->n_spare >= SPARE_STREAMS) {
        stream_free(st);
        return;
    }
    free(st->ext_proto);
    st->ext_proto = NULL;
    msm_hdrs_free(st->held);
    st->held = NULL;
    msm_hdrs_deinit(&st->in);
    msm_buf_deinit(&st->out);
    msm_hdrs_free(st->out_trailers);
    st->znext = c->spare;
    c->spare = st;
    c->n_spare++;
}

static void unlink_stream(struct h2 *c, struct h2_stream *st)
{
    if (st->prev) {
        st->prev->next = st->next;
    } else if (c->streams == st) {
        c->streams = st->next;
    }
    if (st->next) {
        st->next->prev = st->prev;
    }
    st->next = st->prev = NULL;
}

/* Free <st> once it is released and nghttp2 no longer knows it (or it never was submitted). */
static void maybe_free(struct h2 *c, struct h2_stream *st)
{
    if (st->disposed || !st->released || (!st->closed && st->id)) {
        return;
    }
    st->disposed = true;
    unlink_stream(c, st);
    if (c->hdr_st == st) {
        c->hdr_id = 0;
        c->hdr_st = NULL;
    }
    /* No stream user data to clear: on_stream_close did (a stream with an id is freed only
     * once nghttp2 closed it). */
    if (c->in_dispatch) {
        st->znext = c->zombies;
        c->zombies = st;
    } else {
        stream_recycle(c, st);
    }
}

static struct h2_stream *stream_new(struct h2 *c)
{
    struct h2_stream *st = c->spare;
    if (st) {
        c->spare = st->znext;
        c->n_spare--;
        char *nvbuf = st->nvbuf;
        size_t nvcap = st->nvcap;
        memset(st, 0, sizeof(*st));
        st->nvbuf = nvbuf;
        st->nvcap = nvcap;
    } else {
        st = MSM_NEW(struct h2_stream);
    }
    st->c = c;
    st->s.codec = &c->base;
    msm_hdrs_init(&st->in);
    msm_buf_init(&st->out);
    st->next = c->streams;
    if (c->streams) {
        c->streams->prev = st;
    }
    c->streams = st;
    return st;
}

static struct h2_stream *get(struct h2 *c, int32_t id)
{
    return nghttp2_session_get_stream_user_data(c->ng, id);
}

static void fatal(struct h2 *c, const char *err, uint32_t code)
{
    if (c->dead) {
        return;
    }
    c->dead = true;
    c->base.error = err;
    c->base.close_connection = true;
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, c->last_peer_stream, code, NULL, 0);
    H2_INC(c, goaway_sent);
}

/* ---- connection_keepalive ------------------------------------------------------------------- */

/* A PING with a fresh payload; the timeout runs until its ACK or any other input. */
static void ka_ping(struct h2 *c)
{
    /* Pending: the timeout expired in this loop iteration and its callback is still queued
     * (a stalled process: the interval's came first). Restarting it then would report the
     * connection dead twice. */
    if (c->dead || ev_is_active(&c->ka_timeout) || ev_is_pending(&c->ka_timeout)) {
        return; /* the outstanding one decides */
    }
    c->ka_ping_id++;
    uint8_t data[8];
    memcpy(data, &c->ka_ping_id, 8);
    if (nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, data) != 0) {
        return;
    }
    ev_timer_set(&c->ka_timeout, c->o.keepalive_timeout_ms / 1000.0, 0);
    ev_timer_start(c->ka_loop, &c->ka_timeout);
    flush(c);
}

static void ka_arm_interval(struct h2 *c)
{
    double iv = c->o.keepalive_interval_ms / 1000.0;
    c->ka_rand = c->ka_rand * 1103515245u + 12345u;
    double jitter = iv * c->o.keepalive_jitter_pct / 100.0 * ((c->ka_rand >> 8) % 1000) / 1000.0;
    ev_timer_set(&c->ka_interval, iv + jitter, 0);
    ev_timer_start(c->ka_loop, &c->ka_interval);
}

/* Input arrived: the peer is alive. As Envoy, any frame extends an outstanding PING's timeout
 * (a big response ahead of the ACK must not end the connection). */
static void ka_on_input(struct h2 *c)
{
    c->last_rx = ev_now(c->ka_loop);
    if (ev_is_active(&c->ka_timeout)) {
        ev_timer_stop(c->ka_loop, &c->ka_timeout);
        ev_timer_set(&c->ka_timeout, c->o.keepalive_timeout_ms / 1000.0, 0);
        ev_timer_start(c->ka_loop, &c->ka_timeout);
    }
}

static void on_ka_interval(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct h2 *c = MSM_CONTAINER_OF(t, struct h2, ka_interval);
    ka_ping(c);
    if (!c->dead) {
        ka_arm_interval(c);
    }
}

static void on_ka_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct h2 *c = MSM_CONTAINER_OF(t, struct h2, ka_timeout);
    ev_timer_stop(loop, &c->ka_interval);
    if (c->dead) {
        return; /* already failed (protocol error, GOAWAY): nothing more to report */
    }
    H2_INC(c, keepalive_timeout);
    msm_log(MSM_LOG_DEBUG, MSM_LC_HTTP2, "no answer to a keepalive PING in %u ms: closing",
            c->o.keepalive_timeout_ms);
    c->dead = true;
    c->base.error = "http2.keepalive_timeout";
    c->base.close_connection = true;
    if (c->base.cbs->on_error) {
        c->base.cbs->on_error(c->base.owner); /* last: the owner may free the codec */
    }
}

void msm_http2_keepalive_start(struct msm_hcodec *codec, struct ev_loop *loop)
{
    if (!codec || codec->proto != MSM_HTTP_2 || codec->ops != &h2_ops) {
        return;
    }
    struct h2 *c = (struct h2 *)codec;
    if (c->ka_loop || !c->o.keepalive_timeout_ms ||
        (!c->o.keepalive_interval_ms && !c->o.keepalive_idle_ms)) {
        return;
    }
    c->ka_loop = loop;
    c->last_rx = ev_now(loop);
    c->ka_rand = (uint32_t)(uintptr_t)c;
    ev_timer_init(&c->ka_interval, on_ka_interval, 0, 0);
    ev_timer_init(&c->ka_timeout, on_ka_timeout, 0, 0);
    if (c->o.keepalive_interval_ms) {
        ka_arm_interval(c);
    }
}

/* ---- nghttp2 callbacks: input ---------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2 *c = ud;
    (void)ng;
    if (f->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    struct h2_stream *st;
    if (!c->base.server || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        st = get(c, f->hd.stream_id); /* a request opens a stream that has no user data yet */
    } else {
        if (c->dead) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        st = stream_new(c);
        st->id = f->hd.stream_id;
        st->s.id = (uint32_t)st->id;
        c->last_peer_stream = st->id;
        c->base.streams_total++;
        c->n_open++;
        nghttp2_session_set_stream_user_data(c->ng, st->id, st);
    }
    if (st) {
        msm_hdrs_deinit(&st->in);
        st->in_bytes = 0;
        st->in_overflow = false;
    }
    c->hdr_id = f->hd.stream_id;
    c->hdr_st = st;
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    struct h2 *c = ud;
    (void)ng;
    (void)flags;
    struct h2_stream *st =
        f->hd.stream_id == c->hdr_id ? c->hdr_st : get(c, f->hd.stream_id);
    if (!st) {
        return 0;
    }
    st->in_bytes += nlen + vlen;
    if (st->in_bytes > (size_t)c->o.max_headers_kb * 1024 ||
        st->in.n >= c->o.max_headers_count) {
        /* Envoy resets the stream (no 431 on HTTP/2). */
        st->in_overflow = true;
        H2_INC(c, header_overflow);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (c->o.underscores != MSM_UNDERSCORES_ALLOW && c->base.server &&
        memchr(name, '_', nlen)) {
        if (c->o.underscores == MSM_UNDERSCORES_DROP) {
            H2_INC(c, dropped_headers_with_underscores);
            return 0;
        }
        H2_INC(c, requests_rejected_with_underscores_in_headers);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset, as Envoy */
    }
    msm_hdrs_append_lc(&st->in, (const char *)name, nlen, (const char *)value, vlen);
    return 0;
}

static void deliver_end_data(struct h2_stream *st)
{
    st->s.remote_end = true;
    if (owned(st)) {
        struct msm_buf b;
        msm_buf_init(&b);
        st->s.cbs->on_data(st->s.ctx, &b, true);
        msm_buf_deinit(&b);
    }
}

/* Server, allow_connect: an extended CONNECT (RFC 8441: :method CONNECT with :protocol) becomes
 * the HTTP/1.1 upgrade it stands for (Envoy's transformUpgradeRequestFromH2toH1): GET with
 * Upgrade: <protocol> and Connection: upgrade, same :path, :scheme and :authority. */
static void ext_connect_to_upgrade(struct h2_stream *st, struct msm_hdrs *h)
{
    const char *proto = msm_hdrs_get(h, ":protocol");
    const char *method = msm_hdrs_get(h, ":method");
    if (!proto || !method || strcmp(method, "CONNECT") != 0) {
        return;
    }
    char *up = msm_xstrdup(proto);
    msm_hdrs_set(h, ":method", "GET");
    msm_hdrs_remove(h, ":protocol");
    msm_hdrs_set(h, "upgrade", up);
    msm_hdrs_set(h, "connection", "upgrade");
    free(up);
    st->ext_connect = true;
}

/* Client: the answer to an upgrade sent as an extended CONNECT. A 200 opens the tunnel and goes
 * back to the owner as the 101 of the HTTP/1.1 upgrade (Envoy's
 * transformUpgradeResponseFromH2toH1); any other status is an ordinary response. */
static void ext_connect_response(struct h2_stream *st, struct msm_hdrs *h)
{
    const char *status = msm_hdrs_get(h, ":status");
    if (!status || strcmp(status, "200") != 0) {
        return;
    }
    msm_hdrs_set(h, ":status", "101");
    msm_hdrs_set(h, "upgrade", st->ext_proto);
    msm_hdrs_set(h, "connection", "upgrade");
    st->s.tunnel = true;
}

static void deliver_headers(struct h2 *c, struct h2_stream *st, bool end)
{
    struct msm_hdrs h;
    msm_hdrs_init(&h);
    msm_hdrs_move(&h, &st->in);
    if (c->base.server && !st->headers_in && c->o.allow_connect) {
        ext_connect_to_upgrade(st, &h);
    } else if (!c->base.server && !st->headers_in && st->ext_proto) {
        ext_connect_response(st, &h);
    }
    if (!st->headers_in) {
        const char *status = c->base.server ? NULL : msm_hdrs_get(&h, ":status");
        if (status && status[0] == '1' && strcmp(status, "101") != 0) {
            if (owned(st) && st->s.cbs->on_info) {
                st->s.cbs->on_info(st->s.ctx, &h);
            }
            msm_hdrs_deinit(&h);
            return;
        }
        st->headers_in = true;
        st->s.remote_end = end;
        st->active = true;
        H2_INC(c, streams_active);
        if (c->base.server) {
            c->base.cbs->on_new_stream(c->base.owner, &st->s);
        }
        if (owned(st)) {
            st->s.cbs->on_headers(st->s.ctx, &h, end);
        }
    } else {
        /* A second header block is the trailers. */
        st->s.remote_end = true;
        H2_INC(c, trailers);
        if (!end) {
            nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
            H2_INC(c, tx_reset);
        } else if (owned(st)) {
            st->s.cbs->on_trailers(st->s.ctx, &h);
        }
    }
    msm_hdrs_deinit(&h);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2 *c = ud;
    (void)ng;
    struct h2_stream *st = f->hd.stream_id ? get(c, f->hd.stream_id) : NULL;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (st && (f->hd.flags & NGHTTP2_FLAG_END_HEADERS)) {
            deliver_headers(c, st, end);
        }
        break;
    case NGHTTP2_DATA:
        if (f->hd.length == 0 && !end) {
            if (++c->empty_frames > c->o.max_consecutive_inbound_frames_with_empty_payload) {
                H2_INC(c, inbound_empty_frames_flood);
                fatal(c, "http2.inbound_empty_frames_flood", NGHTTP2_ENHANCE_YOUR_CALM);
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
        } else {
            c->empty_frames = 0;
        }
        if (st && end) {
            deliver_end_data(st);
        }
        break;
    case NGHTTP2_PRIORITY:
        if (++c->in_priority >
            (uint64_t)c->o.max_inbound_priority_frames_per_stream * (1 + c->opened_streams)) {
            H2_INC(c, inbound_priority_frames_flood);
            fatal(c, "http2.inbound_priority_frames_flood", NGHTTP2_ENHANCE_YOUR_CALM);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    case NGHTTP2_WINDOW_UPDATE:
        if (++c->in_window_update >
            5 + 2 * (c->opened_streams +
                     (uint64_t)c->o.max_inbound_window_update_frames_per_data_frame_sent *
                         c->out_data_frames)) {
            H2_INC(c, inbound_window_update_frames_flood);
            fatal(c, "http2.inbound_window_update_frames_flood", NGHTTP2_ENHANCE_YOUR_CALM);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    case NGHTTP2_PING:
        if ((f->hd.flags & NGHTTP2_FLAG_ACK) && c->ka_loop &&
            !memcmp(f->ping.opaque_data, &c->ka_ping_id, 8)) {
            ev_timer_stop(c->ka_loop, &c->ka_timeout);
        }
        break;
    case NGHTTP2_SETTINGS:
        if (!c->settings_in && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
            c->settings_in = true;
            send_held(c);
        }
        break;
    case NGHTTP2_GOAWAY:
        c->base.goaway_received = true;
        if (c->base.cbs->on_goaway) {
            c->base.cbs->on_goaway(c->base.owner);
        }
        break;
    case NGHTTP2_RST_STREAM:
        H2_INC(c, rx_reset);
        if (c->base.server && st && !st->s.local_end) {
            /* Rapid reset: most streams reset by the client before any response. */
            c->premature_resets++;
            if (c->premature_resets >= PREMATURE_RESET_MIN &&
                c->premature_resets * 2 >= c->base.streams_total) {
                fatal(c, "http2.too_many_premature_resets", NGHTTP2_ENHANCE_YOUR_CALM);
            }
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct h2 *c = ud;
    (void)flags;
    nghttp2_session_consume_connection(ng, len);
    struct h2_stream *st = get(c, id);
    if (!owned(st)) {
        nghttp2_session_consume_stream(ng, id, len);
        return 0;
    }
    if (st->read_disabled) {
        st->unconsumed += len;
    } else {
        nghttp2_session_consume_stream(ng, id, len);
    }
    struct msm_buf *b = &c->rbuf;
    msm_buf_append(b, data, len);
    st->s.cbs->on_data(st->s.ctx, b, false);
    msm_buf_drain(b, b->len);
    return 0;
}

static enum msm_http_reset reset_reason(uint32_t code)
{
    switch (code) {
    case NGHTTP2_REFUSED_STREAM: return MSM_RESET_REFUSED;
    case NGHTTP2_PROTOCOL_ERROR: return MSM_RESET_PROTOCOL_ERROR;
    default: return MSM_RESET_REMOTE;
    }
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    struct h2 *c = ud;
    (void)ng;
    if (id == c->hdr_id) {
        c->hdr_id = 0;
        c->hdr_st = NULL;
    }
    struct h2_stream *st = get(c, id);
    if (!st) {
        return 0;
    }
    st->closed = true;
    c->n_open--;
    if (st->active) {
        st->active = false;
        H2_DEC(c, streams_active);
    }
    if (code == NGHTTP2_REFUSED_STREAM && !c->base.server) {
        H2_INC(c, stream_refused_errors);
    }
    if (c->base.server && !st->headers_in) {
        st->released = true; /* never announced: nobody owns it */
    }
    bool complete = st->s.remote_end && st->s.local_end && code == NGHTTP2_NO_ERROR;
    if (!complete && owned(st) && (st->headers_in || !c->base.server)) {
        st->notified = true;
        st->s.cbs->on_reset(st->s.ctx, st->send_failed ? MSM_RESET_LOCAL : reset_reason(code));
    }
    st->notified = true;
    nghttp2_session_set_stream_user_data(c->ng, id, NULL);
    maybe_free(c, st);
    if (!c->base.server && c->base.cbs->on_stream_done) {
        c->base.cbs->on_stream_done(c->base.owner);
    }
    return 0;
}

/* ---- nghttp2 callbacks: output ---------------------------------------------------------------- */

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct h2 *c = ud;
    struct h2_stream *st = src->ptr;
    (void)ng;
    (void)id;
    (void)buf;
    /* No copy here: send_data moves the payload's views behind the frame header. */
    size_t n = st->out.len < length ? st->out.len : length;
    size_t left = st->out.len - n;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (st->above_wm && left < c->o.stream_buffer_limit / 2) {
        st->above_wm = false;
        st->wm_low_pending = true;
        c->wm_low_pending = true;
    }
    if (!left && st->out_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->out_trailers) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_nv *nv = msm_xcalloc(st->out_trailers->n + 1, sizeof(*nv));
            size_t k = 0;
            for (uint32_t i = 0; i < st->out_trailers->n; i++) {
                const struct msm_hdr *e = &st->out_trailers->v[i];
                if (e->name[0] == ':') {
                    continue;
                }
                nv[k].name = (uint8_t *)e->name;
                nv[k].namelen = e->nlen;
                nv[k].value = (uint8_t *)e->value;
                nv[k].valuelen = e->vlen;
                k++;
            }
            nghttp2_submit_trailer(c->ng, st->id, nv, k);
            free(nv);
        }
        return (ssize_t)n;
    }
    if (!n) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* A DATA frame read_body sized (NGHTTP2_DATA_FLAG_NO_COPY), in nghttp2's output order: called
 * from nghttp2_session_mem_send right after read_body, with what came before it already in
 * <wbuf> (flush appends every frame as it is returned). The payload's views move, no bytes. */
static int send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *src, void *ud)
{
    struct h2 *c = ud;
    struct h2_stream *st = src->ptr;
    (void)ng;
    size_t pad = f->data.padlen; /* 0: no padding callback is set */
    c->out_data_frames++;
    msm_buf_append(&c->wbuf, framehd, 9);
    if (pad) {
        uint8_t padlen = (uint8_t)(pad - 1);
        msm_buf_append(&c->wbuf, &padlen, 1);
    }
    msm_buf_move_n(&c->wbuf, &st->out, length);
    if (pad > 1) {
        static const uint8_t zeros[256];
        msm_buf_append(&c->wbuf, zeros, pad - 1);
    }
    return 0;
}

/* Drain nghttp2's output to the owner; then owner notifications deferred from callbacks. */
static void flush(struct h2 *c)
{
    if (c->in_dispatch) {
        return; /* dispatch flushes when it returns */
    }
    if (!c->blocked) {
        struct msm_buf *b = &c->wbuf;
        for (;;) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->ng, &data);
            if (n < 0) {
                fatal(c, "http2.codec_error", NGHTTP2_INTERNAL_ERROR);
                break;
            }
            if (n == 0) {
                break;
            }
            msm_buf_append(b, data, (size_t)n);
            if (b->len >= 64 * 1024) {
                c->base.cbs->write(c->base.owner, b);
            }
        }
        if (b->len) {
            c->base.cbs->write(c->base.owner, b);
        }
        msm_buf_drain(b, b->len); /* the owner moves all; nothing is left in practice */
    }
    bool scan = c->wm_low_pending; /* set again by a read_body that the loop may cause */
    c->wm_low_pending = false;
    for (struct h2_stream *st = scan ? c->streams : NULL; st; st = st->next) {
        if (st->wm_low_pending) {
            st->wm_low_pending = false;
            if (owned(st) && st->s.cbs->on_watermark) {
                st->s.cbs->on_watermark(st->s.ctx, false);
            }
        }
    }
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng)) {
        c->base.close_connection = true;
    }
}

static void on_round_flush(struct msm_ready *r)
{
    struct h2_flush *fl = MSM_CONTAINER_OF(r, struct h2_flush, r);
    struct h2 *c = fl->c;
    fl->queued = false;
    if (!c) {
        free(fl);
        return;
    }
    bool closing = c->base.close_connection;
    flush(c);
    if (!closing && c->base.close_connection && c->base.cbs->on_stream_done) {
        /* The session ended with these frames (GOAWAY received, last stream done): the owner
         * checks close_connection when a stream finished. */
        c->base.cbs->on_stream_done(c->base.owner);
    }
}

/* Flush after an encode call or a release: at the end of the loop's round when the owner gave
 * the loop (one nghttp2_session_mem_send pass and one write for the round), else now. */
static void flush_later(struct h2 *c)
{
    if (c->in_dispatch) {
        return; /* dispatch flushes when it returns */
    }
    if (c->base.loop) {
        if (!c->fl) {
            c->fl = MSM_NEW(struct h2_flush);
            c->fl->c = c;
            c->fl->r.fn = on_round_flush;
        }
        if (c->fl->queued) {
            return;
        }
        if (msm_flush_defer(c->base.loop, &c->fl->r)) {
            c->fl->queued = true;
            return;
        }
    }
    flush(c);
}

static void h2_flush_now(struct msm_hcodec *base)
{
    struct h2 *c = (struct h2 *)base;
    if (c->fl && c->fl->queued) {
        flush(c);
    }
}

/* ---- dispatch --------------------------------------------------------------------------------- */

static void end_dispatch(struct h2 *c)
{
    c->in_dispatch = false;
    while (c->zombies) {
        struct h2_stream *z = c->zombies;
        c->zombies = z->znext;
        stream_recycle(c, z);
    }
}

static int h2_dispatch(struct msm_hcodec *base, struct msm_buf *in)
{
    struct h2 *c = (struct h2 *)base;
    if (c->dead) {
        msm_buf_drain(in, in->len);
        return MSM_EINVAL;
    }
    c->in_dispatch = true;
    int rc = 0;
    while (in->len && !c->dead) {
        struct iovec iov;
        if (msm_buf_iov(in, &iov, 1) < 1) {
            break;
        }
        /* The server's connection preface is a SETTINGS frame (RFC 9113 3.4). nghttp2 does not
         * check it on the client side and would skip an unknown "frame" of megabytes: an HTTP/1
         * response ("HTTP/1.1 200...") must be a connection error at once, not a hang. The
         * frame type is byte 3 of the header, the flags (no ACK) byte 4. */
        if (!c->base.server && c->head_seen < 5) {
            const uint8_t *b = iov.iov_base;
            for (size_t i = 0; i < iov.iov_len && c->head_seen < 5; i++, c->head_seen++) {
                if ((c->head_seen == 3 && b[i] != NGHTTP2_SETTINGS) ||
                    (c->head_seen == 4 && (b[i] & NGHTTP2_FLAG_ACK))) {
                    fatal(c, "http2.protocol_error", NGHTTP2_PROTOCOL_ERROR);
                    break;
                }
            }
            if (c->dead) {
                break;
            }
        }
        ssize_t n = nghttp2_session_mem_recv(c->ng, iov.iov_base, iov.iov_len);
        if (n < 0) {
            if (n == NGHTTP2_ERR_FLOODED) {
                H2_INC(c, outbound_control_flood);
            }
            if (!c->base.error) {
                c->base.error = n == NGHTTP2_ERR_FLOODED ? "http2.outbound_control_flood"
                                : n == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? "http2.invalid_preface"
                                                                   : "http2.protocol_error";
            }
            c->dead = true;
            c->base.close_connection = true;
            msm_buf_drain(in, in->len);
            rc = MSM_EINVAL;
            break;
        }
        msm_buf_drain(in, (size_t)n);
        if (c->ka_loop && n > 0) {
            ka_on_input(c);
        }
    }
    if (!c->dead && !rc && !c->base.goaway_received && !nghttp2_session_want_read(c->ng)) {
        /* nghttp2 ended the session on a connection error it handles itself (a frame it cannot
         * parse: an HTTP/1 response to our preface has an oversized "frame" length) and queued a
         * GOAWAY. The connection is over: a codec error for the owner, whose streams would
         * otherwise wait forever. */
        c->dead = true;
        c->base.error = "http2.protocol_error";
        c->base.close_connection = true;
        H2_INC(c, goaway_sent);
    }
    if (c->dead && !rc) {
        msm_buf_drain(in, in->len);
        rc = MSM_EINVAL;
    }
    end_dispatch(c);
    flush(c);
    return rc;
}

static int h2_dispatch_eof(struct msm_hcodec *base)
{
    (void)base;
    return 0;
}

/* ---- encoding --------------------------------------------------------------------------------- */

/* Connection-specific fields do not exist in HTTP/2 (RFC 9113 8.2.2); nor does Host in a
 * request (:authority). TE only as "trailers". Dispatch on the length first: this runs for
 * every header of every message. */
static bool drop_header(const struct msm_hdr *e, bool request)
{
    switch (e->nlen) {
    case 2: return !memcmp(e->name, "te", 2) && strcasecmp(e->value, "trailers") != 0;
    case 4: return request && !memcmp(e->name, "host", 4);
    case 7: return !memcmp(e->name, "upgrade", 7);
    case 10:
        return !memcmp(e->name, "connection", 10) || !memcmp(e->name, "keep-alive", 10);
    case 16: return !memcmp(e->name, "proxy-connection", 16);
    case 17: return !memcmp(e->name, "transfer-encoding", 17);
    default: return false;
    }
}

#define NV_STACK 32

/* The header block of <h> as nghttp2 name/value pairs pointing into <h>: in <stack> (room for
 * NV_STACK) when it fits, else allocated (the caller frees what is not <stack>). */
static nghttp2_nv *make_nv(const struct msm_hdrs *h, size_t *n, bool request, nghttp2_nv *stack)
{
    nghttp2_nv *nv = h->n + 2 <= NV_STACK ? stack : msm_xcalloc(h->n + 2, sizeof(*nv));
    size_t k = 0;
    bool scheme = false;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct msm_hdr *e = &h->v[i];
        if (drop_header(e, request)) {
            continue;
        }
        scheme = scheme || (e->nlen == 7 && !memcmp(e->name, ":scheme", 7));
        nv[k].name = (uint8_t *)e->name;
        nv[k].namelen = e->nlen;
        nv[k].value = (uint8_t *)e->value;
        nv[k].valuelen = e->vlen;
        nv[k].flags = NGHTTP2_NV_FLAG_NONE;
        k++;
    }
    if (request && !scheme) {
        /* Pseudo-headers first: shift and insert :scheme after the existing ones. */
        size_t pos = 0;
        while (pos < k && nv[pos].name[0] == ':') {
            pos++;
        }
        memmove(&nv[pos + 1], &nv[pos], (k - pos) * sizeof(*nv));
        nv[pos].name = (uint8_t *)":scheme";
        nv[pos].namelen = 7;
        nv[pos].value = (uint8_t *)"http";
        nv[pos].valuelen = 4;
        k++;
    }
    *n = k;
    return nv;
}

static bool nv_is(const nghttp2_nv *nv, const char *name, size_t len)
{
    return nv->namelen == len && !memcmp(nv->name, name, len);
}

/* Client: tunnels on HTTP/2 (Envoy's client codec). A CONNECT goes without :scheme and :path
 * (RFC 9113 8.5). An HTTP/1.1 upgrade (the owner kept Upgrade only on accepted ones) becomes an
 * RFC 8441 extended CONNECT: :method CONNECT, :protocol <Upgrade>, same :scheme, :path and
 * :authority; Upgrade and Connection are already dropped, and so is a "content-length: 0"
 * (transformUpgradeRequestFromH1toH2). <nv> has room for one entry more than <h> has fields. */
static void client_tunnel_nv(struct h2_stream *st, const struct msm_hdrs *h, nghttp2_nv *nv,
                             size_t *n)
{
    const char *method = msm_hdrs_get(h, ":method");
    const char *up = msm_hdrs_get(h, "upgrade");
    bool connect = method && !strcmp(method, "CONNECT");
    if ((!connect && !(up && up[0])) || msm_hdrs_find(h, ":protocol")) {
        return; /* not a tunnel, or already an extended CONNECT */
    }
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        if ((connect && (nv_is(&nv[i], ":scheme", 7) || nv_is(&nv[i], ":path", 5))) ||
            (!connect && nv_is(&nv[i], "content-length", 14) && nv[i].valuelen == 1 &&
             nv[i].value[0] == '0')) {
            continue;
        }
        if (!connect && nv_is(&nv[i], ":method", 7)) {
            nv[i].value = (uint8_t *)"CONNECT";
            nv[i].valuelen = 7;
        }
        nv[k++] = nv[i];
    }
    if (!connect) {
        free(st->ext_proto);
        st->ext_proto = msm_xstrdup(up);
        size_t pos = 0;
        while (pos < k && nv[pos].name[0] == ':') {
            pos++;
        }
        memmove(&nv[pos + 1], &nv[pos], (k - pos) * sizeof(*nv));
        nv[pos] = (nghttp2_nv){(uint8_t *)":protocol", (uint8_t *)st->ext_proto, 9,
                               strlen(st->ext_proto), NGHTTP2_NV_FLAG_NONE};
        k++;
    }
    *n = k;
}

/* Server: copy the response's names and values into the stream's <nvbuf> and hand them to
 * nghttp2 as they are: its own copy would allocate and lower-case every name, and map names are
 * lower-case already. One copy per field: a map keeps a field's value right after its name. */
static void hold_nv(struct h2_stream *st, nghttp2_nv *nv, size_t n)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++) {
        need += nv[i].namelen + nv[i].valuelen + 1;
    }
    if (need > st->nvcap) {
        free(st->nvbuf);
        st->nvcap = need < 1024 ? 1024 : need;
        st->nvbuf = msm_xmalloc(st->nvcap);
    }
    uint8_t *p = (uint8_t *)st->nvbuf;
    for (size_t i = 0; i < n; i++) {
        size_t nl = nv[i].namelen, vl = nv[i].valuelen;
        if (nv[i].value == nv[i].name + nl + 1) {
            memcpy(p, nv[i].name, nl + 1 + vl);
        } else {
            memcpy(p, nv[i].name, nl);
            memcpy(p + nl + 1, nv[i].value, vl);
        }
        nv[i].name = p;
        nv[i].value = p + nl + 1;
        nv[i].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
        p += nl + 1 + vl;
    }
}

static void h2_encode_headers(struct msm_hstream *s, struct msm_hdrs *h, bool end_stream)
{
    struct h2_stream *st = (struct h2_stream *)s;
    struct h2 *c = st->c;
    if (!c || st->reset || st->submitted || st->closed || c->dead) {
        return;
    }
    size_t n;
    nghttp2_nv stack[NV_STACK];
    nghttp2_nv *nv = make_nv(h, &n, !c->base.server, stack);
    if (!c->base.server) {
        client_tunnel_nv(st, h, nv, &n);
        if (st->ext_proto && !c->settings_in) {
            /* RFC 8441 3: no :protocol before the peer's SETTINGS said it takes it: the request
             * waits for them (send_held); body bytes wait in <out> meanwhile. */
            if (nv != stack) {
                free(nv);
            }
            st->held = msm_hdrs_new();
            msm_hdrs_copy(st->held, h);
            st->held_end = end_stream;
            st->submitted = true;
            s->local_end = s->local_end || end_stream;
            return;
        }
    }
    if (st->ext_connect) {
        /* The upstream's 101 opens the extended CONNECT's tunnel: 200 on HTTP/2. */
        for (size_t i = 0; i < n; i++) {
            if (nv[i].namelen == 7 && !memcmp(nv[i].name, ":status", 7) && nv[i].valuelen == 3 &&
                !memcmp(nv[i].value, "101", 3)) {
                nv[i].value = (uint8_t *)"200";
                s->tunnel = true;
            }
        }
    }
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
    st->submitted = true;
    c->opened_streams++;
    if (end_stream) {
        s->local_end = true;
    }
    if (c->base.server) {
        hold_nv(st, nv, n);
        if (nghttp2_submit_response(c->ng, st->id, nv, n, end_stream ? NULL : &prd) != 0) {
            nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        }
    } else {
        /* RFC 8441: no :protocol to a server that did not announce ENABLE_CONNECT_PROTOCOL
         * (its SETTINGS arrived: extended CONNECTs wait for them above). */
        bool refused = st->ext_proto &&
                       !nghttp2_session_get_remote_settings(
                           c->ng, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL);
        int32_t id = refused ? NGHTTP2_ERR_INVALID_ARGUMENT
                             : nghttp2_submit_request(c->ng, NULL, nv, n,
                                                      end_stream ? NULL : &prd, st);
        if (id < 0) {
            st->closed = true;
            if (nv != stack) {
                free(nv);
            }
            if (owned(st)) {
                st->notified = true;
                st->s.cbs->on_reset(st->s.ctx,
                                    refused ? MSM_RESET_PROTOCOL_ERROR : MSM_RESET_REFUSED);
            }
            maybe_free(c, st);
            return;
        }
        st->id = id;
        st->s.id = (uint32_t)id;
        c->n_open++;
        c->base.streams_total++;
    }
    if (nv != stack) {
        free(nv);
    }
    flush_later(c);
}

/* Client: the peer's first SETTINGS arrived: the extended CONNECTs held for them go out now,
 * or fail as refused (h2_encode_headers) when the peer did not announce
 * ENABLE_CONNECT_PROTOCOL. Streams reset or released meanwhile just drop theirs. An owner's
 * on_reset may release streams, so the list is walked again from its head after each one. */
static void send_held(struct h2 *c)
{
    for (;;) {
        struct h2_stream *st = c->streams;
        while (st && !st->held) {
            st = st->next;
        }
        if (!st) {
            return;
        }
        struct msm_hdrs *h = st->held;
        st->held = NULL;
        if (owned(st) && !st->closed) {
            st->submitted = false;
            h2_encode_headers(&st->s, h, st->held_end);
            if (!st->id && c->base.cbs->on_stream_done) {
                c->base.cbs->on_stream_done(c->base.owner); /* refused: room for another */
            }
        }
        msm_hdrs_free(h);
    }
}

static void h2_encode_100(struct msm_hstream *s)
{
    struct h2_stream *st = (struct h2_stream *)s;
    struct h2 *c = st->c;
    if (!c || st->submitted || st->closed || st->reset || !c->base.server) {
        return;
    }
    nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE};
    nghttp2_submit_headers(c->ng, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL);
    flush(c);
}

static void resume(struct h2 *c, struct h2_stream *st)
{
    if (st->deferred && st->id && !st->closed) {
        st->deferred = false;
        nghttp2_session_resume_data(c->ng, st->id);
    }
    flush_later(c);
}

static void h2_encode_data(struct msm_hstream *s, struct msm_buf *data, bool end_stream)
{
    struct h2_stream *st = (struct h2_stream *)s;
    struct h2 *c = st->c;
    if (!c || st->reset || st->closed || !st->submitted || s->local_end) {
        msm_buf_drain(data, data->len);
        return;
    }
    msm_buf_move(&st->out, data);
    if (end_stream) {
        st->out_end = true;
        s->local_end = true;
    }
    if (!st->above_wm && st->out.len > c->o.stream_buffer_limit) {
        st->above_wm = true;
        if (owned(st) && st->s.cbs->on_watermark) {
            st->s.cbs->on_watermark(st->s.ctx, true);
        }
    }
    resume(c, st);
}

static void h2_encode_trailers(struct msm_hstream *s, struct msm_hdrs *t)
{
    struct h2_stream *st = (struct h2_stream *)s;
    struct h2 *c = st->c;
    if (!c || st->reset || st->closed || !st->submitted || s->local_end) {
        return;
    }
    st->out_trailers = msm_hdrs_new();
    msm_hdrs_copy(st->out_trailers, t);
    st->out_end = true;
    s->local_end = true;
    resume(c, st);
}

static void h2_reset(struct msm_hstream *s)
{
    struct h2_stream *st = (struct h2_stream *)s;
    struct h2 *c = st->c;
    if (st->reset || st->notified) {
        return;
    }
    st->reset = true;
    if (!c) {
        return;
    }
    if (st->id && !st->closed) {
        /* As Envoy's codec (reasonToReset): a local reset is NO_ERROR, either side; only a
         * CONNECT that lost its upstream says CONNECT_ERROR. */
        uint32_t code = c->base.server && s->connect_error ? NGHTTP2_CONNECT_ERROR
                                                            : NGHTTP2_NO_ERROR;
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, code);
        H2_INC(c, tx_reset);
        flush(c);
    }
}

static void h2_release(struct msm_hstream *s)
{
    struct h2_stream *st = (struct h2_stream *)s;
    if (st->released) {
        return;
    }
    st->released = true;
    s->cbs = NULL;
    s->ctx = NULL;
    if (!st->c) {
        stream_free(st);
        return;
    }
    struct h2 *c = st->c;
    if (st->unconsumed && st->id && !st->closed) {
        nghttp2_session_consume_stream(c->ng, st->id, st->unconsumed);
        st->unconsumed = 0;
    }
    maybe_free(c, st);
    flush_later(c);
}

static void h2_read_disable(struct msm_hstream *s, bool disable)
{
    struct h2_stream *st = (struct h2_stream *)s;
    struct h2 *c = st->c;
    st->read_disabled += disable ? 1 : -1;
    if (st->read_disabled < 0) {
        st->read_disabled = 0;
    }
    if (!c || st->read_disabled || !st->unconsumed || !st->id || st->closed) {
        return;
    }
    nghttp2_session_consume_stream(c->ng, st->id, st->unconsumed);
    st->unconsumed = 0;
    flush(c);
}

static struct msm_hstream *h2_new_stream(struct msm_hcodec *base, const struct msm_hstream_cbs *cbs,
                                         void *ctx)
{
    struct h2 *c = (struct h2 *)base;
    if (base->server || !base->ops->can_new_stream(base)) {
        return NULL;
    }
    if (c->ka_loop && c->o.keepalive_idle_ms && !ev_is_active(&c->ka_timeout) &&
        ev_now(c->ka_loop) - c->last_rx > c->o.keepalive_idle_ms / 1000.0) {
        ka_ping(c); /* quiet for a while: is the peer still there? */
    }
    struct h2_stream *st = stream_new(c);
    st->s.cbs = cbs;
    st->s.ctx = ctx;
    return &st->s;
}

static void h2_goaway(struct msm_hcodec *base)
{
    struct h2 *c = (struct h2 *)base;
    if (c->dead) {
        return;
    }
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, c->last_peer_stream, NGHTTP2_NO_ERROR,
                          NULL, 0);
    H2_INC(c, goaway_sent);
    flush(c);
}

static int h2_active_streams(const struct msm_hcodec *base)
{
    const struct h2 *c = (const struct h2 *)base;
    int n = 0;
    for (const struct h2_stream *st = c->streams; st; st = st->next) {
        n += !st->released;
    }
    return n;
}

static bool h2_can_new_stream(const struct msm_hcodec *base)
{
    const struct h2 *c = (const struct h2 *)base;
    if (c->dead || base->goaway_received || base->close_connection) {
        return false;
    }
    uint32_t peer_max = nghttp2_session_get_remote_settings(
        c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    uint32_t max = c->o.max_concurrent_streams < peer_max ? c->o.max_concurrent_streams : peer_max;
    return (uint32_t)h2_active_streams(base) < max &&
           nghttp2_session_get_next_stream_id(c->ng) < (1u << 31) - 2;
}

static void h2_close_streams(struct msm_hcodec *base, enum msm_http_reset r)
{
    struct h2 *c = (struct h2 *)base;
    c->dead = true;
    base->close_connection = true;
    for (struct h2_stream *st = c->streams; st;) {
        struct h2_stream *next = st->next;
        if (owned(st)) {
            st->notified = true;
            st->s.cbs->on_reset(st->s.ctx, r);
        }
        st = next;
    }
}

static void h2_conn_watermark(struct msm_hcodec *base, bool above)
{
    struct h2 *c = (struct h2 *)base;
    c->blocked = above;
    if (!above) {
        flush(c);
    }
}

static void h2_free(struct msm_hcodec *base)
{
    struct h2 *c = (struct h2 *)base;
    end_dispatch(c);
    while (c->streams) {
        struct h2_stream *st = c->streams;
        if (st->active) {
            st->active = false;
            H2_DEC(c, streams_active);
        }
        unlink_stream(c, st);
        if (st->released || !st->s.cbs) {
            stream_free(st); /* released, or never announced to an owner */
        } else {
            st->c = NULL; /* its owner's release frees it */
        }
    }
    while (c->spare) {
        struct h2_stream *st = c->spare;
        c->spare = st->znext;
        free(st->nvbuf);
        free(st);
    }
    if (c->fl && c->fl->queued) {
        c->fl->c = NULL; /* the round's queue frees it */
    } else {
        free(c->fl);
    }
    if (c->ka_loop) {
        ev_timer_stop(c->ka_loop, &c->ka_interval);
        ev_timer_stop(c->ka_loop, &c->ka_timeout);
    }
    msm_buf_deinit(&c->wbuf);
    msm_buf_deinit(&c->rbuf);
    nghttp2_session_del(c->ng);
    free(c);
}

static const struct msm_hcodec_ops h2_ops = {
    .dispatch = h2_dispatch,
    .dispatch_eof = h2_dispatch_eof,
    .new_stream = h2_new_stream,
    .encode_headers = h2_encode_headers,
    .encode_100_continue = h2_encode_100,
    .encode_data = h2_encode_data,
    .encode_trailers = h2_encode_trailers,
    .reset = h2_reset,
    .release = h2_release,
    .read_disable = h2_read_disable,
    .goaway = h2_goaway,
    .active_streams = h2_active_streams,
    .close_streams = h2_close_streams,
    .conn_watermark = h2_conn_watermark,
    .can_new_stream = h2_can_new_stream,
    .flush = h2_flush_now,
    .free = h2_free,
};

/* nghttp2 could not send a frame. A request's HEADERS: nghttp2 closes the stream itself
 * (REFUSED_STREAM, on_stream_close). A response's or trailers' HEADERS: nghttp2 drops the frame
 * and leaves the stream open, and the peer would wait for an answer until a timeout. Reset it
 * instead; on_stream_close tells the owner (a local reset). */
static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
    struct h2 *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    struct h2_stream *st = get(c, f->hd.stream_id);
    if (!st || st->closed || !nghttp2_session_find_stream(ng, f->hd.stream_id)) {
        return 0;
    }
    msm_log(MSM_LOG_DEBUG, MSM_LC_HTTP2, "HEADERS on stream %d not sent (%s): resetting it",
            (int)f->hd.stream_id, nghttp2_strerror(err));
    st->send_failed = true;
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
    return 0;
}

/* A frame nghttp2 rejected; it has queued the RST_STREAM (or GOAWAY) already. As Envoy's codec:
 * a stream refused beyond SETTINGS_MAX_CONCURRENT_STREAMS costs only that stream; an invalid
 * header or message (RFC 9113 8.1.1, 8.2) only its stream when stream_error_on_invalid_messaging
 * is set, else, by default, the connection (GOAWAY PROTOCOL_ERROR), as does every other
 * protocol, flow-control or closed-stream error. */
static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
    struct h2 *c = ud;
    (void)ng;
    const char *details = "http2.protocol_error";
    switch (err) {
    case NGHTTP2_ERR_REFUSED_STREAM:
        if (c->base.server) {
            H2_INC(c, stream_refused_errors);
        }
        return 0;
    case NGHTTP2_ERR_HTTP_HEADER:
    case NGHTTP2_ERR_HTTP_MESSAGING:
        H2_INC(c, rx_messaging_error);
        if (c->o.stream_error_on_invalid_messaging) {
            return 0;
        }
        details = err == NGHTTP2_ERR_HTTP_HEADER ? "http2.invalid.header.field"
                                                 : "http2.violation.of.messaging.rule";
        break;
    default:
        break;
    }
    msm_log(MSM_LOG_DEBUG, MSM_LC_HTTP2, "invalid frame on stream %d: %s: closing the connection",
            (int)f->hd.stream_id, nghttp2_strerror(err));
    /* the GOAWAY's code as nghttp2 would send it for a connection error of this kind */
    uint32_t code = NGHTTP2_PROTOCOL_ERROR;
    switch (err) {
    case NGHTTP2_ERR_STREAM_CLOSED: code = NGHTTP2_STREAM_CLOSED; break;
    case NGHTTP2_ERR_FLOW_CONTROL: code = NGHTTP2_FLOW_CONTROL_ERROR; break;
    case NGHTTP2_ERR_FRAME_SIZE_ERROR: code = NGHTTP2_FRAME_SIZE_ERROR; break;
    case NGHTTP2_ERR_HEADER_COMP: code = NGHTTP2_COMPRESSION_ERROR; break;
    default: break;
    }
    fatal(c, details, code);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}


/* nghttp2's allocations (streams, frames, header buffers: a few per request, freed before the
 * next) from the thread's recycled size classes instead of malloc. nghttp2's free passes no
 * size: it is kept in a prefix. Sessions stay on one thread; any thread may free (recycle.h).
 * Blocks above NG_RECYCLE_MAX are the session's own (its struct, stream map, HPACK tables,
 * frame buffer) and live as long as the connection: malloc fits them, where a power-of-two
 * class would waste up to half (7 kB per idle connection). Every session counts the bytes it
 * holds (ng_bytes): what one connection costs in nghttp2. */
#define NG_PREFIX 16 /* keeps max_align_t alignment */
#define NG_RECYCLE_MAX 1024

static void *ng_block(size_t total, bool zero)
{
    if (total > NG_RECYCLE_MAX) {
        return zero ? msm_xcalloc(1, total) : msm_xmalloc(total);
    }
    return zero ? msm_recycle_calloc(total) : msm_recycle_alloc(total);
}

static void *ng_malloc(size_t size, void *ud)
{
    struct h2 *c = ud;
    if (size > SIZE_MAX - NG_PREFIX) {
        return NULL;
    }
    size_t *p = ng_block(size + NG_PREFIX, false);
    *p = size + NG_PREFIX;
    c->ng_bytes += *p;
    return (char *)p + NG_PREFIX;
}

static void ng_free(void *ptr, void *ud)
{
    struct h2 *c = ud;
    if (ptr) {
        size_t *p = (size_t *)(void *)((char *)ptr - NG_PREFIX);
        c->ng_bytes -= *p;
        if (*p > NG_RECYCLE_MAX) {
            free(p);
        } else {
            msm_recycle_free(p, *p);
        }
    }
}

static void *ng_calloc(size_t n, size_t size, void *ud)
{
    struct h2 *c = ud;
    if (size && n > (SIZE_MAX - NG_PREFIX) / size) {
        return NULL;
    }
    size_t *p = ng_block(n * size + NG_PREFIX, true);
    *p = n * size + NG_PREFIX;
    c->ng_bytes += *p;
    return (char *)p + NG_PREFIX;
}

static void *ng_realloc(void *ptr, size_t size, void *ud)
{
    if (!ptr) {
        return ng_malloc(size, ud);
    }
    if (!size) {
        ng_free(ptr, ud);
        return NULL;
    }
    size_t old = *(size_t *)(void *)((char *)ptr - NG_PREFIX) - NG_PREFIX;
    void *n = ng_malloc(size, ud);
    if (!n) {
        return NULL;
    }
    memcpy(n, ptr, old < size ? old : size);
    ng_free(ptr, ud);
    return n;
}

size_t msm_http2_session_bytes(const struct msm_hcodec *codec)
{
    if (codec->proto != MSM_HTTP_2) {
        return 0;
    }
    return ((const struct h2 *)(const void *)codec)->ng_bytes;
}

static struct msm_hcodec *h2_new(const struct msm_hcodec_opts *o, const struct msm_hcodec_cbs *cbs,
                                 void *owner, bool server)
{
    struct h2 *c = MSM_NEW(struct h2);
    c->base.ops = &h2_ops;
    c->base.cbs = cbs;
    c->base.owner = owner;
    c->base.proto = MSM_HTTP_2;
    c->base.server = server;
    if (o) {
        c->o = *o;
    } else {
        msm_hcodec_opts_default(&c->o);
    }
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* nghttp2 counts queued SETTINGS / PING ACKs and RST_STREAMs against it (NGHTTP2_ERR_FLOODED):
     * Envoy's control frame limit. */
    nghttp2_option_set_max_outbound_ack(opt, c->o.max_outbound_control_frames);
    /* As Envoy: a closed stream is dropped at once. By default an nghttp2 server keeps up to
     * SETTINGS_MAX_CONCURRENT_STREAMS closed streams for RFC 7540 priorities, which we do not
     * use: about 300 kB per busy connection, and a stream map too big for the cache. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* As Envoy: nghttp2's 64 KiB cap on a header block we send is lifted to 32 MiB. Received
     * blocks are limited by max_headers_kb (up to 8 MiB), which may be raised past 64 KiB. */
    nghttp2_option_set_max_send_header_block_length(opt, MAX_SEND_HEADER_BLOCK);
    c->mem = (nghttp2_mem){c, ng_malloc, ng_free, ng_calloc, ng_realloc};
    if (server) {
        nghttp2_session_server_new3(&c->ng, cb, c, opt, &c->mem);
    } else {
        nghttp2_session_client_new3(&c->ng, cb, c, opt, &c->mem);
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    uint32_t max = c->o.max_concurrent_streams;
    if (server && max > MAX_ADVERTISED_STREAMS) {
        max = MAX_ADVERTISED_STREAMS;
    }
    nghttp2_settings_entry iv[5 + MSM_H2_MAX_CUSTOM_SETTINGS] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->o.initial_stream_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, c->o.max_headers_kb * 1024},
    };
    size_t niv = 3;
    if (!server) {
        iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    } else if (c->o.allow_connect) {
        iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1};
    }
    if (c->o.hpack_table_size != 4096) {
        iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_HEADER_TABLE_SIZE,
                                             c->o.hpack_table_size};
    }
    for (uint8_t i = 0; i < c->o.n_custom_settings && i < MSM_H2_MAX_CUSTOM_SETTINGS; i++) {
        iv[niv++] = (nghttp2_settings_entry){c->o.custom_settings[i].id,
                                             c->o.custom_settings[i].value};
    }
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, niv) != 0) {
        /* only values the configuration check let through: not expected */
        msm_log(MSM_LOG_ERROR, MSM_LC_HTTP2, "SETTINGS refused by nghttp2; sending ours only");
        nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 3);
    }
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)c->o.initial_connection_window_size);
    flush(c);
    return &c->base;
}

struct msm_hcodec *msm_http2_server_new(const struct msm_hcodec_opts *o,
                                        const struct msm_hcodec_cbs *cbs, void *owner)
{
    return h2_new(o, cbs, owner, true);
}

struct msm_hcodec *msm_http2_client_new(const struct msm_hcodec_opts *o,
                                        const struct msm_hcodec_cbs *cbs, void *owner)
{
    return h2_new(o, cbs, owner, false);
}
