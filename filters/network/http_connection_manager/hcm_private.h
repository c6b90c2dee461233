#pragma once
/* What hcm.c, hcm_stream.c and hcm_headers.c share. Worker thread only.
 *
 * A connection (struct hcm_conn) owns its codec and its active streams. A stream
 * (struct hstream) lives from its request headers until both its response was fully encoded
 * and its request fully received, or until a reset; then it is destroyed (filters get
 * on_destroy, stats are counted) and freed later (msm_defer), since a filter callback may be on
 * the stack. The connection is freed by the session (filter_free) after every stream went. */
#include <ev.h>

#include "event/tqueue.h"
#include "filters/network/http_connection_manager/hcm.h"
#include "net/conn.h"

struct msm_worker;
struct hstream;

struct hcm_conn {
    struct msm_filter_handle *h;
    const struct msm_hcm_config *cfg;
    struct msm_worker *w;
    struct ev_loop *loop;
    struct msm_hcodec *codec; /* NULL until the protocol is known (AUTO) */
    enum msm_http_proto proto;
    struct hstream *streams;
    int n_streams;
    uint64_t requests;
    ev_timer idle;    /* no stream for idle_timeout */
    ev_timer max_dur; /* max_connection_duration */
    ev_timer drain;   /* HTTP/2: close after the GOAWAY drain time */
    ev_timer resume;  /* re-dispatch buffered input outside any callback */
    double start;
    double last_activity;
    size_t rx_seen;          /* read-buffer bytes already counted in rx_bytes_total */
    int codec_read_disabled; /* the HTTP/1 codec asked to stop reading */
    bool pipeline_paused;    /* buffered pipelined requests: socket reading paused */
    bool closing;            /* close requested */
    bool gone;               /* connection closed: no more I/O */
    bool draining;           /* GOAWAY / connection: close sent */
    bool above_wm;
    bool in_dispatch;
    bool remote_eof; /* HTTP/1 tunnel (half-close on): the client's FIN arrived ... */
    bool eof_done;   /* ... and went to the codec after the bytes before it */
    char remote[64], local[64];
};

struct msm_http_stream {
    struct hstream *st;
    int idx;
};

struct hfilter {
    struct msm_http_stream h; /* the filter's handle */
    const struct msm_hcm_filter *f;
    void *inst;
};

struct hstream {
    struct hstream *next, *prev;
    struct hcm_conn *hc;
    struct msm_hstream *cs; /* codec stream; NULL after it ended or was reset */
    enum msm_http_proto proto; /* this request's: HTTP/1.0 and 1.1 share a connection type */
    struct msm_hdrs req;
    struct msm_hstream_info info;
    struct msm_route_config *rc; /* referenced while the stream lives */
    const struct msm_route *route;
    bool route_done;
    int wc;
    struct hfilter *f; /* recycled (buffer/recycle.h): f_size bytes */
    size_t f_size;
    int nf;
    /* Decoding (request): headers went through filters [0, dec_pos); a filter that stopped
     * iteration holds dec_pos; frames arriving meanwhile wait in dec_buf/dec_trailers. */
    int dec_pos;
    bool dec_headers_done;
    struct msm_buf dec_buf;
    bool dec_buf_end;
    struct msm_hdrs *dec_trailers;
    bool remote_end;
    double remote_end_at; /* ev_now when the request was complete, 0 before */
    /* Encoding (response), symmetric: enc_pos is the lowest filter index still to run. */
    int enc_pos;
    bool enc_headers_done;
    struct msm_hdrs *enc_headers; /* held while an encoder filter stopped on headers */
    bool enc_headers_end;
    struct msm_buf enc_buf;
    bool enc_buf_end;
    struct msm_hdrs *enc_trailers;
    /* Access log (cfg->logs set): copies of what went to the client, freed with the stream. */
    struct msm_hdrs *log_resp_headers, *log_resp_trailers;
    bool resp_started; /* response headers entered the encoder chain */
    bool local_end;    /* the response end went to the codec */
    bool is_head, is_grpc;
    bool destroyed;
    bool in_decode;
    int read_disabled;
    ev_timer req_timer;  /* request_timeout */
    ev_timer dur_timer;  /* max_stream_duration, or the grpc-timeout it lets in */
    int grpc_status;     /* of the next local reply to a gRPC request; -1: from the HTTP one */
    /* stream_idle_timeout, or the route's idle_timeout: a timeout queue entry (no timer-heap
     * update per request); it fires at last_activity + idle_ms. */
    struct msm_tq_entry idle_timer;
    uint32_t idle_ms;    /* the idle timeout in force, 0 = none */
    double last_activity;
    /* Upgrade and CONNECT (hcm_upgrade.c): the request's upgrade type ("websocket", "CONNECT")
     * or NULL; accepted (counted in downstream_cx_upgrades_active); the answer opened the
     * tunnel (101, or 2xx to a CONNECT): the stream then lives until both directions ended. */
    char *upgrade;
    bool connect;
    bool upgrade_ok;
    bool tunneling;
    char request_id[40];
};

/* hcm_stream.c */
struct hstream *msm_hcm_stream_new(struct hcm_conn *hc, struct msm_hstream *cs);
/* The stream's filter chain: the <n> entries of <fs> (no-ops left out). Only before any filter
 * was created (an upgrade's own chain, hcm_upgrade.c). */
void msm_hcm_stream_set_chain(struct hstream *st, const struct msm_hcm_filter *fs, int n);
void msm_hcm_stream_destroy(struct hstream *st, bool reset);
extern const struct msm_hstream_cbs msm_hcm_stream_cbs;
/* A response that bypasses the filters (codec errors before a stream exists). */
void msm_hcm_raw_reply(struct hcm_conn *hc, struct msm_hstream *cs, int status,
                       const char *details);
/* The HCM itself replies on a stream (before or instead of the filters). */
void msm_hcm_local_reply(struct hstream *st, int from, int status, const char *body,
                         const char *details, uint32_t flags);

/* hcm_upgrade.c */
/* Before the header mutations: is the request an upgrade (Connection: upgrade + Upgrade) or a
 * CONNECT? Sets st->upgrade / st->connect. */
void msm_hcm_upgrade_detect(struct hstream *st);
/* Do the hop-by-hop "connection" and "upgrade" stay (an upgrade's request, a tunnel's
 * response)? The other hop-by-hop headers never do. */
bool msm_hcm_upgrade_keeps(const struct hstream *st);
/* May the stream's upgrade go on, per route <r> (its upgrade_configs win) or the connection
 * manager's upgrade_configs? Accepting counts it and turns half-close on (HTTP/1). */
bool msm_hcm_upgrade_accept(struct hstream *st, const struct msm_route *r);
/* Response headers with <status> leave for the client: does the tunnel open? */
void msm_hcm_upgrade_on_response(struct hstream *st, int status);
/* The stream goes: the gauge. */
void msm_hcm_upgrade_done(struct hstream *st);

/* hcm.c */
void msm_hcm_conn_stream_gone(struct hcm_conn *hc, struct hstream *st);
void msm_hcm_conn_close(struct hcm_conn *hc, enum msm_close_type how);

/* hcm_headers.c */
/* Validate and mutate request headers as Envoy does. 0, or the status of the local reply to
 * send (400, 404...) with *details set. */
int msm_hcm_prepare_request(struct hstream *st, const char **details);
/* Response headers leaving for the client (server, date, x-request-id...). */
void msm_hcm_finalize_response(struct hstream *st, struct msm_hdrs *h);
/* A local reply to a gRPC request, as Envoy's: trailers-only, HTTP 200, grpc-status mapped
 * from <status> (msm_grpc_status_of_http) unless <grpc_status> >= 0, <text> as the
 * percent-encoded grpc-message. */
void msm_hcm_build_grpc_local_reply(int status, int grpc_status, const char *text,
                                    struct msm_hdrs *h);
/* Build a local reply's headers and body into <h>/<body>. */
void msm_hcm_build_local_reply(struct hcm_conn *hc, int status, const char *text, bool head,
                               struct msm_hdrs *h, struct msm_buf *body);
void msm_hcm_uuid4(char out[37]);
