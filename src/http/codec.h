#pragma once
/* HTTP codecs: one connection's bytes <-> streams of (headers, data, trailers), after Envoy's
 * Http::Connection. HTTP/1.1 (http1.c, on http-parser) and HTTP/2 (http2.c, on nghttp2), each as
 * a server (downstream) or a client (upstream) codec behind one vtable, so the connection
 * manager and the router are protocol-agnostic.
 *
 * Ownership and lifetime:
 * - The owner (connection manager, upstream pool) creates the codec, feeds it bytes with
 *   dispatch, and frees it (never from inside one of its callbacks: defer).
 * - A stream (struct msm_hstream, inside the codec's private stream struct) is created by the
 *   codec (server: on a new request; client: msm_hcodec_new_stream) and owned by the codec. Its
 *   owner sets <cbs>/<ctx> (server: inside on_new_stream). A stream's exchange ends when both
 *   directions ended (the owner encoded end_stream and the codec delivered end_stream) or on a
 *   reset from either side. The owner calls release exactly once when it drops its pointer
 *   (after the end, after on_reset, or earlier to abandon the rest of the stream: no callback
 *   runs after release). The codec frees the stream once it is both released and over, so the
 *   pointer stays valid until the owner's release however the exchange ended.
 * - After the owner calls reset, no stream callback runs again; on_reset from the codec is the
 *   last callback (the owner still releases).
 * - Callbacks run from inside dispatch (or from encode calls that flush, for HTTP/2 stream
 *   closes): the owner must not free the codec from them.
 *
 * Errors: dispatch returns 0, or a negative code when the connection must close (protocol
 * error, limits). Then <error> names the cause with Envoy's response-code-details
 * ("http1.codec_error", "http1.headers_too_large", "http2.protocol_error"...) and, for an
 * HTTP/1 server, <error_status> is the status of the local reply to send if no response started
 * (400, 413, 431, 501...). An HTTP/2 codec sends its own GOAWAY.
 */
#include <stdbool.h>
#include <stdint.h>

#include "buffer/buf.h"
#include "http/headers.h"
#include "stats/stats.h"

/* Codec stats, process-wide as Envoy's ("http1." / "http2."), shared by every codec of a
 * connection manager config (created on the main thread, updated by workers). */
#define MSM_HTTP1_STATS(C, G, H)                                                                  \
    C(dropped_headers_with_underscores) C(metadata_not_supported_error)                           \
    C(requests_rejected_with_underscores_in_headers) C(response_flood)
MSM_STATS_STRUCT(msm_http1_stats, MSM_HTTP1_STATS);
MSM_STATS_INIT_FN(msm_http1_stats, MSM_HTTP1_STATS)

#define MSM_HTTP2_STATS(C, G, H)                                                                  \
    C(dropped_headers_with_underscores) C(goaway_sent) C(header_overflow) C(headers_cb_no_stream) \
    C(inbound_empty_frames_flood) C(inbound_priority_frames_flood)                                \
    C(inbound_window_update_frames_flood) C(keepalive_timeout) C(metadata_empty_frames)           \
    C(outbound_control_flood) C(outbound_flood) C(requests_rejected_with_underscores_in_headers)  \
    C(rx_messaging_error) C(rx_reset) C(stream_refused_errors) C(trailers) C(tx_flush_timeout)    \
    C(tx_reset) G(streams_active) G(pending_send_bytes) G(deferred_stream_close)                  \
    G(outbound_frames_active) G(outbound_control_frames_active)
MSM_STATS_STRUCT(msm_http2_stats, MSM_HTTP2_STATS);
MSM_STATS_INIT_FN(msm_http2_stats, MSM_HTTP2_STATS)

enum msm_http_proto {
    MSM_HTTP_10 = 0,
    MSM_HTTP_11 = 1,
    MSM_HTTP_2 = 2,
};

/* Envoy's protocol strings ("HTTP/1.0", "HTTP/1.1", "HTTP/2"): %PROTOCOL%. */
static inline const char *msm_http_proto_name(int p)
{
    return p == MSM_HTTP_2 ? "HTTP/2" : p == MSM_HTTP_10 ? "HTTP/1.0" : "HTTP/1.1";
}

/* Why a stream went away (Envoy's StreamResetReason, the parts that matter for retries). */
enum msm_http_reset {
    MSM_RESET_LOCAL = 0,              /* we reset it (owner or codec limits) */
    MSM_RESET_REMOTE = 1,             /* RST_STREAM from the peer, or H1 close mid-stream */
    MSM_RESET_CONNECTION_FAILURE = 2, /* connect failed / timed out (upstream pools) */
    MSM_RESET_CONNECTION_TERMINATION = 3, /* the connection closed under the stream */
    MSM_RESET_REFUSED = 4,            /* REFUSED_STREAM, or beyond a GOAWAY's last stream id */
    MSM_RESET_OVERFLOW = 5,           /* circuit breaker / pool overflow */
    MSM_RESET_PROTOCOL_ERROR = 6,
};

const char *msm_http_reset_name(enum msm_http_reset r);

struct ev_loop;
struct msm_hcodec;
struct msm_hstream;

/* Codec -> stream owner. */
struct msm_hstream_cbs {
    /* Request headers (server) or final response headers (client). Ownership of the map
     * contents moves to the callee (msm_hdrs_move out of <h>, or leave them to be freed). */
    void (*on_headers)(void *ctx, struct msm_hdrs *h, bool end_stream);
    /* Body bytes: the callee moves out what it keeps; the rest is dropped. */
    void (*on_data)(void *ctx, struct msm_buf *data, bool end_stream);
    /* Trailers end the stream. Same ownership as on_headers. */
    void (*on_trailers)(void *ctx, struct msm_hdrs *t);
    /* The stream is gone (last call). */
    void (*on_reset)(void *ctx, enum msm_http_reset r);
    /* Bytes buffered for this stream's output went above (true) or below (false) the limit. */
    void (*on_watermark)(void *ctx, bool above);
    /* Client only, optional: a 1xx informational response (100 Continue). */
    void (*on_info)(void *ctx, struct msm_hdrs *h);
};

struct msm_hstream {
    struct msm_hcodec *codec;
    const struct msm_hstream_cbs *cbs;
    void *ctx;
    uint32_t id;
    bool local_end;  /* the owner encoded end_stream */
    bool remote_end; /* the codec delivered end_stream */
    bool http10;     /* HTTP/1 server: the request line said HTTP/1.0 (known at on_new_stream) */
    /* The exchange became a tunnel (an Upgrade answered 101, a CONNECT answered 2xx, a raw TCP
     * leg): data is opaque bytes both ways and end_stream is a half-close (FIN). */
    bool tunnel;
    /* Server, set by the owner before reset: the CONNECT or upgrade lost its upstream
     * connection (RFC 9113 8.5): HTTP/2 resets with CONNECT_ERROR. */
    bool connect_error;
};

/* Codec -> connection owner. */
struct msm_hcodec_cbs {
    /* Server: a request started; set s->cbs and s->ctx before returning. */
    void (*on_new_stream)(void *owner, struct msm_hstream *s);
    /* Bytes to send: move them out of <b>. */
    void (*write)(void *owner, struct msm_buf *b);
    /* Client: the peer sent GOAWAY (no new streams), or a stream finished and the connection
     * may take another one (pools use it to dispatch waiting requests). Optional. */
    void (*on_goaway)(void *owner);
    void (*on_stream_done)(void *owner);
    /* HTTP/1: a stream asked to stop (true) / resume (false) reading: the owner read-disables
     * the socket, and on resume dispatches what is still buffered. Optional. */
    void (*read_disable)(void *owner, bool disable);
    /* A tunnel's output ended (HTTP/1 upgrade or CONNECT, raw TCP): half-close the connection
     * (FIN) once what was written is flushed. Optional (without it the end is not signalled). */
    void (*shutdown_write)(void *owner);
    /* The codec failed outside a dispatch (HTTP/2 keepalive timeout; codec->error says why):
     * close the connection now. Called last: the owner may free the codec in it. Optional. */
    void (*on_error)(void *owner);
};

struct msm_hcodec_ops {
    int (*dispatch)(struct msm_hcodec *c, struct msm_buf *in);
    /* The peer closed its side (FIN): lets an HTTP/1 client finish a close-delimited body. */
    int (*dispatch_eof)(struct msm_hcodec *c);
    struct msm_hstream *(*new_stream)(struct msm_hcodec *c, const struct msm_hstream_cbs *cbs,
                                      void *ctx);
    void (*encode_headers)(struct msm_hstream *s, struct msm_hdrs *h, bool end_stream);
    void (*encode_100_continue)(struct msm_hstream *s);
    void (*encode_data)(struct msm_hstream *s, struct msm_buf *data, bool end_stream);
    void (*encode_trailers)(struct msm_hstream *s, struct msm_hdrs *t);
    void (*reset)(struct msm_hstream *s);
    /* The owner drops the stream (see above). */
    void (*release)(struct msm_hstream *s);
    /* Stop (true) / resume (false) delivering this stream's input; nestable. */
    void (*read_disable)(struct msm_hstream *s, bool disable);
    /* Drain: HTTP/2 GOAWAY (graceful: last id = highest seen), HTTP/1 close after the current
     * exchange. */
    void (*goaway)(struct msm_hcodec *c);
    int (*active_streams)(const struct msm_hcodec *c);
    /* The connection is gone: every stream still owned gets on_reset(<r>) (client codecs). */
    void (*close_streams)(struct msm_hcodec *c, enum msm_http_reset r);
    /* The connection's write buffer went above (true) / below (false) its limit: streams that
     * write straight to it (HTTP/1) get on_watermark; HTTP/2 holds its frames. */
    void (*conn_watermark)(struct msm_hcodec *c, bool above);
    /* Client: may a new stream be opened now (H1: idle and reusable; H2: under the peer's
     * max concurrent streams and no GOAWAY)? */
    bool (*can_new_stream)(const struct msm_hcodec *c);
    /* Write out now what the codec holds back until the end of the loop round (see <loop>);
     * the owner calls it before closing the connection. Optional (NULL: nothing is held). */
    void (*flush)(struct msm_hcodec *c);
    void (*free)(struct msm_hcodec *c);
};

/* Limits and options of a codec (from HCM / cluster config). */
#define MSM_H2_MAX_CUSTOM_SETTINGS 16

struct msm_hcodec_opts {
    uint32_t max_headers_kb;      /* request/response header block limit, default 60 */
    uint32_t max_headers_count;   /* default 100 */
    uint32_t stream_buffer_limit; /* per-stream output watermark, bytes (default 1 MiB) */
    bool accept_http_10;          /* HTTP/1 server: else 426 */
    bool enable_trailers;         /* HTTP/1: trailers pass (Envoy's default: dropped) */
    const char *default_host_for_http_10;
    /* HTTP/2 */
    uint32_t max_concurrent_streams;        /* default 2147483647 (server advertises 100 if 0) */
    uint32_t initial_stream_window_size;    /* default 256 MiB as Envoy (we cap at 16 MiB) */
    uint32_t initial_connection_window_size;
    uint32_t max_outbound_frames;           /* flood protection, default 10000 */
    uint32_t hpack_table_size;              /* SETTINGS_HEADER_TABLE_SIZE we announce, 4096 */
    /* custom_settings_parameters, sent after ours in the first SETTINGS (validated) */
    struct msm_h2_setting {
        uint16_t id;
        uint32_t value;
    } custom_settings[MSM_H2_MAX_CUSTOM_SETTINGS];
    uint8_t n_custom_settings;
    /* Control frames nghttp2 may hold unsent (SETTINGS and PING ACKs, RST_STREAMs): past it the
     * peer is flooding us (Envoy's max_outbound_control_frames), default 1000 */
    uint32_t max_outbound_control_frames;
    uint32_t max_consecutive_inbound_frames_with_empty_payload; /* default 1 */
    /* Envoy's inbound flood limits over a connection's life: PRIORITY frames past
     * max_inbound_priority_frames_per_stream * (1 + opened streams), WINDOW_UPDATE frames past
     * 5 + 2 * (opened streams + max_inbound_window_update_frames_per_data_frame_sent * DATA
     * frames sent) end the connection. "Opened": a stream we sent HEADERS on. Defaults 100, 10. */
    uint32_t max_inbound_priority_frames_per_stream;
    /* connection_keepalive (HTTP/2, msm_http2_keepalive_start): a PING every interval (+ up to
     * jitter % of it; 0: none), the connection ends when no frame at all arrives within timeout
     * of one; a client also pings before a new stream after idle_ms without input. 0: off. */
    uint32_t keepalive_interval_ms, keepalive_timeout_ms, keepalive_idle_ms;
    uint8_t keepalive_jitter_pct;
    uint32_t max_inbound_window_update_frames_per_data_frame_sent;
    /* An invalid header or message resets only its stream (Envoy's
     * override_stream_error_on_invalid_http_message); default false: the connection ends. */
    bool stream_error_on_invalid_messaging;
    /* Servers: a request header whose name has an underscore (Envoy's
     * headers_with_underscores_action): kept, the request rejected (HTTP/1 400, HTTP/2 stream
     * reset) or the header dropped; counted in h1stats / h2stats. */
    enum msm_underscores { MSM_UNDERSCORES_ALLOW, MSM_UNDERSCORES_REJECT, MSM_UNDERSCORES_DROP }
        underscores;
    /* HTTP/2 server: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441); an extended CONNECT
     * (:protocol) is handed on as an HTTP/1.1-style upgrade (GET + upgrade: <protocol>). */
    bool allow_connect;
    /* Stats to update (may be NULL: tests, upstream pools). Borrowed: the config that owns the
     * options owns them. */
    struct msm_http2_stats *h2stats;
    struct msm_http1_stats *h1stats;
};

struct msm_hcodec {
    const struct msm_hcodec_ops *ops;
    const struct msm_hcodec_cbs *cbs;
    void *owner;
    enum msm_http_proto proto;
    bool server;
    const char *error;   /* response code details of the last dispatch error */
    int error_status;    /* HTTP/1 server: status for the local reply */
    bool goaway_received;
    /* Close the connection once what was written is flushed (HTTP/1: Connection: close, a
     * reset, or a dispatch error). */
    bool close_connection;
    /* HTTP/1 server after a dispatch error: the stream on which to send the error response
     * (its response has not started), or NULL. A bare stream (cbs NULL) when the error came
     * before a request was announced. */
    struct msm_hstream *error_stream;
    uint64_t streams_total;
    /* Set by the owner right after creating the codec (optional): the connection's event loop.
     * An HTTP/2 server codec then pulls the frames of the round's encode calls from nghttp2 once,
     * at the end of the round (event/deferred.h), instead of once per call. */
    struct ev_loop *loop;
};

/* The defaults (Envoy's, but for the capped windows) as an initializer, for static configs;
 * <streams>: max_concurrent_streams. */
#define MSM_HCODEC_OPTS_DEFAULT(streams)                                                          \
    {                                                                                             \
        .max_headers_kb = 60, .max_headers_count = 100, .stream_buffer_limit = 1024 * 1024,      \
        .max_concurrent_streams = (streams), .initial_stream_window_size = 1024 * 1024,          \
        .initial_connection_window_size = 16 * 1024 * 1024, .max_outbound_frames = 10000,        \
        .max_outbound_control_frames = 1000, .hpack_table_size = 4096,                            \
        .max_consecutive_inbound_frames_with_empty_payload = 1,                                   \
        .max_inbound_priority_frames_per_stream = 100,                                            \
        .max_inbound_window_update_frames_per_data_frame_sent = 10,                               \
    }
void msm_hcodec_opts_default(struct msm_hcodec_opts *o);

/* HTTP/1.1 codecs (http1.c). */
struct msm_hcodec *msm_http1_server_new(const struct msm_hcodec_opts *o,
                                        const struct msm_hcodec_cbs *cbs, void *owner);
struct msm_hcodec *msm_http1_client_new(const struct msm_hcodec_opts *o,
                                        const struct msm_hcodec_cbs *cbs, void *owner);
/* HTTP/2 codecs (http2.c). */
struct msm_hcodec *msm_http2_server_new(const struct msm_hcodec_opts *o,
                                        const struct msm_hcodec_cbs *cbs, void *owner);
struct msm_hcodec *msm_http2_client_new(const struct msm_hcodec_opts *o,
                                        const struct msm_hcodec_cbs *cbs, void *owner);
/* Start an HTTP/2 codec's connection_keepalive timers on <loop> (nothing for other codecs or
 * without keepalive options); they stop when the codec is freed. */
struct ev_loop;
void msm_http2_keepalive_start(struct msm_hcodec *codec, struct ev_loop *loop);
/* Bytes nghttp2 holds for an HTTP/2 codec's session (0 for other codecs). */
size_t msm_http2_session_bytes(const struct msm_hcodec *codec);
/* A raw TCP leg behind the codec vtable (tunnel.c), client only: one stream; its request
 * headers are not sent (a CONNECT terminated here) and a 200 response is reported at once;
 * data are the bytes of the connection, end_stream a half-close. */
struct msm_hcodec *msm_tcp_tunnel_client_new(const struct msm_hcodec_cbs *cbs, void *owner);
/* The HTTP/2 client connection preface, for codec_type AUTO sniffing. */
#define MSM_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define MSM_H2_PREFACE_LEN 24

/* Convenience wrappers. */
static inline int msm_hcodec_dispatch(struct msm_hcodec *c, struct msm_buf *in)
{
    return c->ops->dispatch(c, in);
}
static inline void msm_hcodec_free(struct msm_hcodec *c)
{
    if (c) {
        c->ops->free(c);
    }
}
