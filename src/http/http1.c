/* HTTP/1.1 codecs on http-parser: a server (downstream) and a client (upstream) behind the
 * msm_hcodec vtable.
 *
 * One exchange at a time. The server parses one request, then pauses the parser at its end
 * until the response is complete (pipelined requests wait in the owner's input buffer; the
 * owner re-dispatches on on_stream_done). The client sends one request and parses one response;
 * after both ends, a keep-alive connection is idle again (on_stream_done).
 *
 * Request smuggling and malformed input (Envoy's behaviour): both Content-Length and
 * Transfer-Encoding -> 400; a Transfer-Encoding other than "chunked" -> 501; bad chunk sizes,
 * bare CR/LF, obs-fold, invalid tokens -> 400; header block over max_headers_kb or more than
 * max_headers_count headers -> 431; HTTP/1.0 without accept_http_10 -> 426; a request without
 * Host -> 400.
 */
#include <ctype.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer/recycle.h"
#include "common/alloc.h"
#include "common/err.h"
#include "http/codec.h"

struct h1;

struct h1_stream {
    struct msm_hstream s;
    struct h1 *c;
    bool head;            /* the request is HEAD: the response has no body */
    bool chunked_out;     /* our body goes out chunked */
    bool close_delim_out; /* server: HTTP/1.0 body until close */
    bool headers_out;     /* our headers went out */
    bool headers_in;      /* the peer's headers arrived */
    bool done;            /* exchange over */
    bool released;        /* the owner let go: no callbacks; freed once done */
    bool reset;
    struct h1_stream *znext;
    struct h1_stream *rnext; /* on the codec's retired list: done, not yet released */
    int status;           /* client: final response status */
    /* Tunnels: the request is an Upgrade (Connection: upgrade + Upgrade) or a CONNECT; once the
     * answer is 101 / 2xx our output is raw bytes (tunnel_out) and end_stream a FIN. */
    bool upgrade_req;
    bool connect_req;
    bool tunnel_out;
    char *upgrade;        /* server: the request's Upgrade value, for the 101 */
};

struct h1 {
    struct msm_hcodec base;
    struct msm_hcodec_opts o;
    http_parser p;
    struct h1_stream *active;
    struct h1_stream *zombies; /* done and released during dispatch: freed when it returns */
    /* Done but not released: the codec frees those whose owner detached when it goes, and
     * tells the others (their release frees them). */
    struct h1_stream *retired;
    /* Body bytes parsed in the current dispatch, delivered together (with end_stream when the
     * message ends in the same read, so an HTTP/2 peer gets one final DATA frame). */
    struct msm_buf body;
    /* Header block being parsed. */
    struct msm_hdrs hdrs;
    char *field, *value, *url;
    size_t flen, fcap, vlen, vcap, ulen, ucap;
    bool in_value, in_trailers;
    size_t header_bytes;
    uint32_t header_count;
    bool have_cl, have_te;
    bool interim;          /* client: parsing a 1xx response */
    bool paused;           /* server: request complete, waiting for the response */
    int read_disabled;
    bool in_dispatch;
    bool keep_alive;
    bool goaway;
    const char *chunk;     /* the buffer http-parser is executing (obs-fold detection) */           /* server: close after the current exchange */
    bool broken;           /* after a dispatch error: no more parsing */
    bool tunnel;           /* the parser is done: every byte in is the active stream's data */
    const char *err;
    int err_status;
};

static const http_parser_settings server_settings;
static const http_parser_settings client_settings;

const char *msm_http_reset_name(enum msm_http_reset r)
{
    switch (r) {
    case MSM_RESET_LOCAL: return "local reset";
    case MSM_RESET_REMOTE: return "remote reset";
    case MSM_RESET_CONNECTION_FAILURE: return "connection failure";
    case MSM_RESET_CONNECTION_TERMINATION: return "connection termination";
    case MSM_RESET_REFUSED: return "remote refused stream reset";
    case MSM_RESET_OVERFLOW: return "overflow";
    case MSM_RESET_PROTOCOL_ERROR: return "protocol error";
    }
    return "unknown";
}

void msm_hcodec_opts_default(struct msm_hcodec_opts *o)
{
    static const struct msm_hcodec_opts d = MSM_HCODEC_OPTS_DEFAULT(2147483647);
    memcpy(o, &d, sizeof(d));
}

/* ---- small helpers -------------------------------------------------------------------------- */

#define H1_INC(c, f)                                                                              \
    do {                                                                                          \
        if ((c)->o.h1stats) {                                                                     \
            msm_stat_inc((c)->o.h1stats->f);                                                      \
        }                                                                                         \
    } while (0)

static void grow_append(char **buf, size_t *len, size_t *cap, const char *at, size_t n)
{
    if (*len + n + 1 > *cap) {
        *buf = msm_xgrow(*buf, 1, cap, *len + n + 1);
    }
    memcpy(*buf + *len, at, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static int fail(struct h1 *c, const char *err, int status)
{
    if (!c->err) {
        c->err = err;
        c->err_status = status;
    }
    return 1; /* http-parser: stop with HPE_CB_* */
}

static int limit_check(struct h1 *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > (size_t)c->o.max_headers_kb * 1024) {
        return fail(c, c->base.server ? "http1.headers_too_large" : "http1.response_headers_too_large",
                    431);
    }
    return 0;
}

static void reset_header_state(struct h1 *c)
{
    msm_hdrs_deinit(&c->hdrs);
    c->flen = c->vlen = c->ulen = 0;
    c->in_value = false;
    c->in_trailers = false;
    c->header_bytes = 0;
    c->header_count = 0;
    c->have_cl = c->have_te = false;
}

/* Commit the header being parsed (name in <field>, value in <value>). */
static int commit_header(struct h1 *c)
{
    if (!c->in_value) {
        return 0;
    }
    c->in_value = false;
    if (++c->header_count > c->o.max_headers_count) {
        return fail(c, c->base.server ? "http1.too_many_headers" : "http1.too_many_response_headers",
                    431);
    }
    /* http-parser (never lenient here) has rejected every name byte outside RFC 7230 tchar but
     * SP, and every value byte that is a control other than HTAB, or DEL, except the value's
     * first (test_http_codec.c pins this): only those are left to check, not every byte. */
    if (!c->flen || memchr(c->field, ' ', c->flen)) {
        return fail(c, "http1.invalid_characters", 400);
    }
    if (c->o.underscores != MSM_UNDERSCORES_ALLOW && c->base.server &&
        memchr(c->field, '_', c->flen)) {
        if (c->o.underscores == MSM_UNDERSCORES_DROP) {
            H1_INC(c, dropped_headers_with_underscores);
            c->flen = c->vlen = 0;
            return 0;
        }
        H1_INC(c, requests_rejected_with_underscores_in_headers);
        return fail(c, "http1.unexpected_underscore", 400);
    }
    /* Trim optional whitespace around the value (http-parser leaves trailing OWS). */
    size_t s = 0, e = c->vlen;
    while (s < e && (c->value[s] == ' ' || c->value[s] == '\t')) {
        s++;
    }
    while (e > s && (c->value[e - 1] == ' ' || c->value[e - 1] == '\t')) {
        e--;
    }
    if (e > s && ((unsigned char)c->value[s] < 0x20 || c->value[s] == 0x7f)) {
        return fail(c, "http1.invalid_characters", 400); /* HTAB was trimmed */
    }
    if (c->flen == 14 && !strncasecmp(c->field, "content-length", 14)) {
        c->have_cl = true;
    } else if (c->flen == 17 && !strncasecmp(c->field, "transfer-encoding", 17)) {
        c->have_te = true;
    }
    msm_hdrs_add(&c->hdrs, c->field, c->flen, c->value + s, e - s);
    c->flen = c->vlen = 0;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct h1 *c = p->data;
    if (c->in_value && commit_header(c)) {
        return 1;
    }
    if (limit_check(c, n)) {
        return 1;
    }
    grow_append(&c->field, &c->flen, &c->fcap, at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct h1 *c = p->data;
    if (limit_check(c, n)) {
        return 1;
    }
    /* No CR or LF here: http-parser ends a value at either (test_http_codec.c pins it). */
    /* obs-fold (RFC 7230 3.2.4): http-parser accepts a continuation line as more of the value;
     * it shows as a second value callback that follows CRLF and whitespace. Rejected (400). */
    if (c->in_value && c->chunk && at > c->chunk) {
        const char *q = at - 1;
        while (q > c->chunk && (*q == ' ' || *q == '\t')) {
            q--;
        }
        if (*q == '\n') {
            return fail(c, "http1.invalid_characters", 400);
        }
    }
    c->in_value = true;
    grow_append(&c->value, &c->vlen, &c->vcap, at, n);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct h1 *c = p->data;
    if (limit_check(c, n)) {
        return 1;
    }
    grow_append(&c->url, &c->ulen, &c->ucap, at, n);
    return 0;
}

static void stream_free(struct h1_stream *st)
{
    free(st->upgrade);
    msm_recycle_free(st, sizeof(*st));
}

/* Free <st> (done and released) now, or when dispatch returns if parsing is on the stack. */
static void dispose(struct h1 *c, struct h1_stream *st)
{
    if (c->in_dispatch) {
        st->znext = c->zombies;
        c->zombies = st;
    } else {
        stream_free(st);
    }
}

/* The stream's exchange is over: detach it; free it once the owner released it. */
static void retire(struct h1 *c, struct h1_stream *st)
{
    st->done = true;
    if (c->active == st) {
        c->active = NULL;
    }
    if (st->released) {
        dispose(c, st);
    } else {
        st->rnext = c->retired;
        c->retired = st;
    }
}

static void unretire(struct h1 *c, struct h1_stream *st)
{
    for (struct h1_stream **p = &c->retired; *p; p = &(*p)->rnext) {
        if (*p == st) {
            *p = st->rnext;
            st->rnext = NULL;
            return;
        }
    }
}

static bool owned(const struct h1_stream *st)
{
    return st && !st->released && !st->reset && st->s.cbs;
}

/* Both directions ended (or the owner is done and the connection closes): finish the
 * exchange. */
static void maybe_complete(struct h1 *c, struct h1_stream *st)
{
    if (st->done || !st->s.local_end || !st->s.remote_end) {
        return;
    }
    if (!c->keep_alive || c->goaway) {
        c->base.close_connection = true;
    }
    retire(c, st);
    if (c->paused) {
        c->paused = false;
        http_parser_pause(&c->p, 0);
    }
    if (c->base.cbs->on_stream_done) {
        c->base.cbs->on_stream_done(c->base.owner);
    }
}

/* ---- server: requests in -------------------------------------------------------------------- */

static int srv_message_begin(http_parser *p)
{
    struct h1 *c = p->data;
    reset_header_state(c);
    return 0;
}

/* Build :method/:path/:authority/:scheme from the request line and Host. 0, or a failure. */
static int srv_pseudo_headers(struct h1 *c, struct msm_hdrs *h)
{
    const char *method = http_method_str((enum http_method)c->p.method);
    const char *host = msm_hdrs_get(&c->hdrs, "host");
    if (msm_hdrs_count(&c->hdrs, "host") > 1) {
        return fail(c, "http1.codec_error", 400);
    }
    char *path = c->url ? c->url : (char *)"";
    size_t plen = c->ulen;
    char *authority = NULL;
    if (c->p.method != HTTP_CONNECT && plen && path[0] != '/' && !(plen == 1 && path[0] == '*')) {
        /* absolute-form: the authority comes from the URL (RFC 7230 5.4). */
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(path, plen, 0, &u) != 0 || !(u.field_set & (1 << UF_HOST))) {
            return fail(c, "http1.invalid_url", 400);
        }
        size_t aoff = u.field_data[UF_HOST].off, alen = u.field_data[UF_HOST].len;
        if (u.field_set & (1 << UF_PORT)) {
            alen = u.field_data[UF_PORT].off + u.field_data[UF_PORT].len - aoff;
        }
        authority = msm_xstrndup(path + aoff, alen);
        size_t poff = (u.field_set & (1 << UF_PATH)) ? u.field_data[UF_PATH].off : plen;
        if (poff < plen) {
            path += poff;
            plen -= poff;
        } else {
            path = (char *)"/";
            plen = 1;
        }
    }
    msm_hdrs_addz(h, ":method", method);
    if (c->p.method == HTTP_CONNECT) {
        msm_hdrs_add(h, ":authority", 10, path, plen);
    } else {
        msm_hdrs_add(h, ":path", 5, path, plen);
        if (authority) {
            msm_hdrs_addz(h, ":authority", authority);
        } else if (host) {
            msm_hdrs_addz(h, ":authority", host);
        } else if (c->p.http_minor == 0 && c->o.default_host_for_http_10) {
            msm_hdrs_addz(h, ":authority", c->o.default_host_for_http_10);
        } else if (c->p.http_minor != 0) {
            free(authority);
            return fail(c, "http1.missing_host_header", 400);
        }
        msm_hdrs_addz(h, ":scheme", "http");
    }
    free(authority);
    return 0;
}

static int srv_headers_complete(http_parser *p)
{
    struct h1 *c = p->data;
    if (commit_header(c)) {
        return 1;
    }
    if (p->http_major != 1 || p->http_minor > 1) {
        return fail(c, "http1.codec_error", 505);
    }
    if (p->http_minor == 0 && !c->o.accept_http_10) {
        return fail(c, "http1.protocol_unsupported", 426);
    }
    if (c->have_te) {
        const char *te = msm_hdrs_get(&c->hdrs, "transfer-encoding");
        if (c->have_cl) {
            return fail(c, "http1.content_length_and_chunked_not_allowed", 400);
        }
        if (p->http_minor == 0) {
            return fail(c, "http1.codec_error", 400);
        }
        if (msm_hdrs_count(&c->hdrs, "transfer-encoding") > 1 || strcasecmp(te, "chunked") != 0) {
            return fail(c, "http1.invalid_transfer_encoding", 501);
        }
    }
    if (c->have_cl && msm_hdrs_count(&c->hdrs, "content-length") > 1) {
        return fail(c, "http1.content_length_not_allowed", 400);
    }
    bool connect = p->method == HTTP_CONNECT;
    bool upgrade = p->upgrade && !connect;
    const char *offer = msm_hdrs_get(&c->hdrs, "upgrade");
    if (upgrade && offer && !strcasecmp(offer, "h2c")) {
        /* An h2c offer is ignored, as Envoy does: a plain HTTP/1.1 request (Upgrade and
         * HTTP2-Settings go here, the connection manager drops Connection). */
        msm_hdrs_remove(&c->hdrs, "http2-settings");
        msm_hdrs_remove(&c->hdrs, "upgrade");
        upgrade = false;
        p->upgrade = 0;
    }
    struct msm_hdrs h;
    msm_hdrs_init(&h);
    if (srv_pseudo_headers(c, &h) < 0 || c->err) {
        msm_hdrs_deinit(&h);
        return 1;
    }
    /* Regular headers after the pseudo ones; Host became :authority. */
    for (uint32_t i = 0; i < c->hdrs.n; i++) {
        const struct msm_hdr *e = &c->hdrs.v[i];
        if (strcmp(e->name, "host") != 0) {
            msm_hdrs_add(&h, e->name, e->nlen, e->value, e->vlen);
        }
    }
    c->keep_alive = http_should_keep_alive(p) != 0;
    bool body = !connect && ((p->flags & F_CHUNKED) || (c->have_cl && p->content_length > 0));
    struct h1_stream *st = msm_recycle_calloc(sizeof(struct h1_stream));
    st->c = c;
    st->s.codec = &c->base;
    st->s.id = (uint32_t)++c->base.streams_total;
    st->head = p->method == HTTP_HEAD;
    st->headers_in = true;
    st->upgrade_req = upgrade;
    st->connect_req = connect;
    if (upgrade || connect) {
        /* The request's body is the tunnel: it ends with the client's FIN, and the connection
         * carries nothing after it. */
        const char *uv = msm_hdrs_get(&c->hdrs, "upgrade");
        st->upgrade = uv ? msm_xstrdup(uv) : NULL;
        c->keep_alive = false;
        body = true;
    }
    msm_hdrs_deinit(&c->hdrs);
    st->s.remote_end = !body;
    st->s.http10 = p->http_minor == 0;
    c->active = st;
    c->base.cbs->on_new_stream(c->base.owner, &st->s);
    if (!st->s.cbs) {
        msm_hdrs_deinit(&h);
        return fail(c, "http1.codec_error", 500);
    }
    st->s.cbs->on_headers(st->s.ctx, &h, !body);
    msm_hdrs_deinit(&h);
    if (c->err) {
        return 1;
    }
    c->in_trailers = body && (p->flags & F_CHUNKED);
    return 0;
}

static int deliver_body(struct h1 *c, const char *at, size_t n)
{
    struct h1_stream *st = c->active;
    if (!st || st->done || !owned(st)) {
        return 0; /* the owner is done with this stream: discard */
    }
    msm_buf_append(&c->body, at, n);
    return 0;
}

/* Hand the body parsed so far to the stream's owner. */
static void flush_body(struct h1 *c, bool end)
{
    struct h1_stream *st = c->active;
    if (!c->body.len && !end) {
        return;
    }
    if (!st || st->done || !owned(st)) {
        msm_buf_drain(&c->body, c->body.len);
        return;
    }
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_move(&b, &c->body);
    st->s.cbs->on_data(st->s.ctx, &b, end);
    msm_buf_deinit(&b);
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    return deliver_body(p->data, at, n);
}

/* End of a message: the last body bytes with end_stream, or trailers (chunked). */
static void deliver_end(struct h1 *c, struct h1_stream *st)
{
    if (c->in_value) {
        commit_header(c);
    }
    if (!c->o.enable_trailers && c->hdrs.n) {
        msm_hdrs_deinit(&c->hdrs); /* as Envoy without enable_trailers: dropped */
    }
    bool trailers = c->hdrs.n > 0;
    if (st->done || !owned(st)) {
        st->s.remote_end = true;
        msm_buf_drain(&c->body, c->body.len);
        return;
    }
    flush_body(c, !trailers);
    st->s.remote_end = true;
    if (trailers && owned(st)) {
        struct msm_hdrs t;
        msm_hdrs_init(&t);
        msm_hdrs_move(&t, &c->hdrs);
        st->s.cbs->on_trailers(st->s.ctx, &t);
        msm_hdrs_deinit(&t);
    }
}

static int srv_message_complete(http_parser *p)
{
    struct h1 *c = p->data;
    struct h1_stream *st = c->active;
    if (c->err) {
        return 1;
    }
    if (!st) {
        return 0; /* the exchange already finished (response sent before the body ended) */
    }
    if (st->upgrade_req || st->connect_req) {
        return 0; /* the parser stops here: what follows is tunnel data (h1_dispatch) */
    }
    if (!st->s.remote_end) {
        deliver_end(c, st);
        if (c->err) {
            return 1;
        }
    }
    c->keep_alive = c->keep_alive && http_should_keep_alive(p);
    if (c->active == st && !st->done) {
        /* One request at a time: wait for the response before parsing the next one. */
        c->paused = true;
        http_parser_pause(p, 1);
        maybe_complete(c, st);
    }
    return 0;
}

static const http_parser_settings server_settings = {
    .on_message_begin = srv_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = srv_headers_complete,
    .on_body = on_body,
    .on_message_complete = srv_message_complete,
};

/* ---- client: responses in ------------------------------------------------------------------- */

static int cli_message_begin(http_parser *p)
{
    struct h1 *c = p->data;
    reset_header_state(c);
    if (!c->active) {
        return fail(c, "http1.unexpected_response", 0);
    }
    return 0;
}

static int cli_headers_complete(http_parser *p)
{
    struct h1 *c = p->data;
    struct h1_stream *st = c->active;
    if (commit_header(c)) {
        return 1;
    }
    if (!st) {
        return fail(c, "http1.unexpected_response", 0);
    }
    int status = p->status_code;
    if (status < 100 || status > 999) {
        return fail(c, "http1.invalid_status", 0);
    }
    /* The parsed headers become the response map as they are, :status in front. */
    char code[4] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10), '\0'};
    msm_hdrs_add_lc(&c->hdrs, ":status", 7, code, 3);
    struct msm_hdrs h;
    msm_hdrs_init(&h);
    msm_hdrs_move(&h, &c->hdrs);
    if (status == 101 && !st->upgrade_req) {
        msm_hdrs_deinit(&h);
        return fail(c, "http1.unexpected_101", 0);
    }
    if ((st->upgrade_req && status == 101) ||
        (st->connect_req && status >= 200 && status < 300)) {
        /* The tunnel is up: no body, no further response; every byte after the header block is
         * the tunnel's (return 2 tells http-parser to stop there). */
        c->interim = false;
        st->status = status;
        st->headers_in = true;
        st->s.tunnel = true;
        c->keep_alive = false;
        if (owned(st)) {
            st->s.cbs->on_headers(st->s.ctx, &h, false);
        }
        msm_hdrs_deinit(&h);
        return c->err ? 1 : 2;
    }
    if (status >= 100 && status < 200 && status != 101) {
        /* Interim response: no body; the final response follows. */
        c->interim = true;
        if (owned(st) && st->s.cbs->on_info) {
            st->s.cbs->on_info(st->s.ctx, &h);
        }
        msm_hdrs_deinit(&h);
        return 0;
    }
    if (c->have_cl && c->have_te) {
        msm_hdrs_deinit(&h);
        return fail(c, "http1.content_length_and_chunked_not_allowed", 0);
    }
    c->interim = false;
    st->status = status;
    st->headers_in = true;
    bool nobody = st->head || status == 204 || status == 304;
    bool body = !nobody && ((p->flags & F_CHUNKED) || (c->have_cl && p->content_length > 0) ||
                            (!c->have_cl && !(p->flags & F_CHUNKED)));
    c->keep_alive = http_should_keep_alive(p) != 0;
    st->s.remote_end = !body;
    if (owned(st)) {
        st->s.cbs->on_headers(st->s.ctx, &h, !body);
    }
    msm_hdrs_deinit(&h);
    if (c->err) {
        return 1;
    }
    c->in_trailers = body && (p->flags & F_CHUNKED);
    return nobody ? 1 : 0; /* 1: http-parser skips the body */
}

static int cli_message_complete(http_parser *p)
{
    struct h1 *c = p->data;
    struct h1_stream *st = c->active;
    if (c->err) {
        return 1; /* headers_complete failed (its 1 only skipped the body) */
    }
    if (c->interim) {
        c->interim = false;
        return 0;
    }
    if (!st || st->s.tunnel) {
        return 0;
    }
    if (!st->s.remote_end) {
        deliver_end(c, st);
    }
    c->keep_alive = c->keep_alive && http_should_keep_alive(p);
    if (!st->s.local_end) {
        /* A response before the whole request went out: this connection cannot be reused. */
        c->keep_alive = false;
    }
    if (c->active == st) {
        maybe_complete(c, st);
    }
    /* Anything after a response nobody asked for is a protocol error (caught at begin). */
    return 0;
}

static const http_parser_settings client_settings = {
    .on_message_begin = cli_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = cli_headers_complete,
    .on_body = on_body,
    .on_message_complete = cli_message_complete,
};

/* ---- dispatch --------------------------------------------------------------------------------- */

static void map_parser_error(struct h1 *c)
{
    if (c->err) {
        return;
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        c->err = c->base.server ? "http1.headers_too_large" : "http1.response_headers_too_large";
        c->err_status = 431;
        break;
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        c->err = "http1.content_length_and_chunked_not_allowed";
        c->err_status = 400;
        break;
    case HPE_INVALID_TRANSFER_ENCODING:
        c->err = "http1.invalid_transfer_encoding";
        c->err_status = 501;
        break;
    case HPE_INVALID_CHUNK_SIZE:
        c->err = "http1.invalid_chunk_size";
        c->err_status = 400;
        break;
    case HPE_INVALID_CONTENT_LENGTH:
        c->err = "http1.content_length_not_allowed";
        c->err_status = 400;
        break;
    case HPE_INVALID_METHOD:
        c->err = "http1.invalid_method";
        c->err_status = 400;
        break;
    case HPE_INVALID_VERSION:
        c->err = "http1.invalid_version";
        c->err_status = 400;
        break;
    case HPE_INVALID_URL:
    case HPE_INVALID_PATH:
    case HPE_INVALID_QUERY_STRING:
    case HPE_INVALID_FRAGMENT:
        c->err = "http1.invalid_url";
        c->err_status = 400;
        break;
    case HPE_INVALID_EOF_STATE:
        c->err = "http1.premature_eof";
        c->err_status = 400;
        break;
    default:
        c->err = "http1.codec_error";
        c->err_status = 400;
        break;
    }
}

/* The codec ends <st>'s exchange (not the owner): tell the owner, then retire the stream. The
 * owner may reset or release it from on_reset: marked reset first, its h1_reset is a no-op and
 * its release only marks it (not done yet), so retire frees it exactly once. */
static void reset_owner(struct h1 *c, struct h1_stream *st, enum msm_http_reset why)
{
    bool notify = owned(st);
    st->reset = true;
    if (c->active == st) {
        c->active = NULL;
    }
    if (notify) {
        st->s.cbs->on_reset(st->s.ctx, why);
    }
    retire(c, st);
}

/* A dispatch error ends the exchange: the owner gets on_reset (client) or sends the local
 * reply (server, through base.error). */
static int dispatch_failed(struct h1 *c)
{
    map_parser_error(c);
    c->broken = true;
    c->base.error = c->err;
    c->base.error_status = c->err_status;
    c->base.close_connection = true;
    struct h1_stream *st = c->active;
    if (c->base.server) {
        if (!st) {
            /* No request announced yet: a bare stream carries the error response. */
            st = msm_recycle_calloc(sizeof(struct h1_stream));
            st->c = c;
            st->s.codec = &c->base;
            st->s.remote_end = true;
            st->released = true; /* nobody owns it: freed once the error response is out */
            c->active = st;
        }
        c->keep_alive = false;
        if (!st->headers_out && !st->done && !st->reset && c->err_status) {
            st->s.remote_end = true;
            c->base.error_stream = &st->s;
        }
        return MSM_EINVAL;
    }
    if (st && !st->done) {
        reset_owner(c, st, MSM_RESET_PROTOCOL_ERROR);
    }
    return MSM_EINVAL;
}

static void end_dispatch(struct h1 *c)
{
    c->in_dispatch = false;
    while (c->zombies) {
        struct h1_stream *z = c->zombies;
        c->zombies = z->znext;
        stream_free(z);
    }
}

/* Tunnel bytes in: all of <in> to the active stream (dropped once it is over). */
static void tunnel_input(struct h1 *c, struct msm_buf *in)
{
    struct h1_stream *st = c->active;
    if (!st || st->done || !owned(st) || st->s.remote_end) {
        msm_buf_drain(in, in->len);
        return;
    }
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_move(&b, in);
    st->s.cbs->on_data(st->s.ctx, &b, false);
    msm_buf_deinit(&b);
}

static int h1_dispatch(struct msm_hcodec *base, struct msm_buf *in)
{
    struct h1 *c = (struct h1 *)base;
    if (c->broken) {
        msm_buf_drain(in, in->len);
        return MSM_EINVAL;
    }
    c->in_dispatch = true;
    const http_parser_settings *set = base->server ? &server_settings : &client_settings;
    int rc = 0;
    while (in->len && !c->paused && !c->read_disabled && !c->base.close_connection) {
        if (c->tunnel) {
            tunnel_input(c, in);
            continue;
        }
        struct iovec iov;
        if (msm_buf_iov(in, &iov, 1) < 1) {
            break;
        }
        c->chunk = iov.iov_base;
        size_t n = http_parser_execute(&c->p, set, iov.iov_base, iov.iov_len);
        c->chunk = NULL;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
        if (e == HPE_OK || e == HPE_PAUSED) {
            flush_body(c, false);
        }
        if (e == HPE_PAUSED) {
            msm_buf_drain(in, n);
            if (!c->paused) {
                http_parser_pause(&c->p, 0); /* the exchange completed inside the callback */
            }
            continue;
        }
        if (e != HPE_OK || c->err) {
            msm_buf_drain(in, in->len);
            rc = dispatch_failed(c);
            break;
        }
        msm_buf_drain(in, n);
        if (c->p.upgrade) {
            /* An Upgrade or CONNECT message is complete: the rest is not HTTP/1.1 any more. */
            c->tunnel = true;
            continue;
        }
        if (n < iov.iov_len) {
            msm_buf_drain(in, in->len);
            c->err = "http1.codec_error";
            c->err_status = 400;
            rc = dispatch_failed(c);
            break;
        }
    }
    if (c->base.close_connection && in->len && !rc) {
        msm_buf_drain(in, in->len); /* nothing after a closing exchange is read */
    }
    end_dispatch(c);
    return rc;
}

static int h1_dispatch_eof(struct msm_hcodec *base)
{
    struct h1 *c = (struct h1 *)base;
    if (c->broken) {
        return MSM_EINVAL;
    }
    c->in_dispatch = true;
    if (c->tunnel) {
        /* The peer's FIN ends the tunnel's input: a half-close. */
        struct h1_stream *st = c->active;
        if (st && !st->done && !st->s.remote_end) {
            st->s.remote_end = true;
            if (owned(st)) {
                struct msm_buf b;
                msm_buf_init(&b);
                st->s.cbs->on_data(st->s.ctx, &b, true);
                msm_buf_deinit(&b);
            }
            if (c->active == st) {
                maybe_complete(c, st);
            }
        }
        end_dispatch(c);
        return 0;
    }
    const http_parser_settings *set = base->server ? &server_settings : &client_settings;
    if (c->paused) {
        c->paused = false;
        http_parser_pause(&c->p, 0);
    }
    http_parser_execute(&c->p, set, NULL, 0);
    int rc = 0;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if ((e != HPE_OK && e != HPE_PAUSED) || c->err) {
        rc = dispatch_failed(c);
    }
    struct h1_stream *st = c->active;
    if (!rc && !base->server && st && !st->done && !c->tunnel) {
        /* A half-closed peer (tunnel pools) ended before the exchange did: nothing more can
         * come. A closed connection resets the stream the same way (close_streams). */
        base->close_connection = true;
        reset_owner(c, st, MSM_RESET_CONNECTION_TERMINATION);
    }
    end_dispatch(c);
    return rc;
}

/* ---- encoding ----------------------------------------------------------------------------------- */

static void out(struct h1 *c, struct msm_buf *b)
{
    if (b->len) {
        c->base.cbs->write(c->base.owner, b);
    }
}

/* Headers the codec owns on the wire: never copied from the map. */
static bool skip_on_wire(const struct msm_hdr *e)
{
    if (e->name[0] == ':') {
        return true;
    }
    switch (e->nlen) { /* the length first: most headers are none of these */
    case 7: return !memcmp(e->name, "upgrade", 7);
    case 10: return !memcmp(e->name, "connection", 10) || !memcmp(e->name, "keep-alive", 10);
    case 16: return !memcmp(e->name, "proxy-connection", 16);
    case 17: return !memcmp(e->name, "transfer-encoding", 17);
    default: return false;
    }
}

/* A message head written straight into one reserved region of a buffer's tail: one reserve and
 * one commit per head instead of an append per piece. A piece that does not fit (a head larger
 * than the block reserved) commits what was written and goes on piecewise. */
struct wr {
    struct msm_buf *b;
    char *start, *p, *end;
};

static void wr_begin(struct wr *w, struct msm_buf *b, size_t want)
{
    size_t avail;
    w->b = b;
    w->start = w->p = msm_buf_reserve(b, want, &avail);
    w->end = w->p + avail;
}

static void wr_spill(struct wr *w, const char *s, size_t n)
{
    msm_buf_commit(w->b, (size_t)(w->p - w->start));
    msm_buf_append(w->b, s, n);
    wr_begin(w, w->b, 1);
}

static inline void wr_put(struct wr *w, const char *s, size_t n)
{
    if ((size_t)(w->end - w->p) < n) {
        wr_spill(w, s, n);
        return;
    }
    memcpy(w->p, s, n);
    w->p += n;
}

static void wr_end(struct wr *w)
{
    msm_buf_commit(w->b, (size_t)(w->p - w->start));
}

/* Room for the head of a message with the fields of <h> and <extra> bytes more (request or
 * status line, the framing fields the codec adds). */
static size_t head_size(const struct msm_hdrs *h, size_t extra)
{
    return h->bytes + (size_t)h->n * 4 + extra + 64;
}

static void put_headers(struct wr *w, const struct msm_hdrs *h, bool server_host)
{
    for (uint32_t i = 0; i < h->n; i++) {
        const struct msm_hdr *e = &h->v[i];
        if (skip_on_wire(e) || (server_host && e->nlen == 4 && !memcmp(e->name, "host", 4))) {
            continue;
        }
        size_t need = (size_t)e->nlen + e->vlen + 4;
        if ((size_t)(w->end - w->p) < need) {
            wr_put(w, e->name, e->nlen);
            wr_put(w, ": ", 2);
            wr_put(w, e->value, e->vlen);
            wr_put(w, "\r\n", 2);
            continue;
        }
        char *p = w->p;
        memcpy(p, e->name, e->nlen);
        p += e->nlen;
        *p++ = ':';
        *p++ = ' ';
        memcpy(p, e->value, e->vlen);
        p += e->vlen;
        *p++ = '\r';
        *p++ = '\n';
        w->p = p;
    }
}

/* The answer that opens a tunnel: 101 to an Upgrade, 2xx to a CONNECT. */
static bool opens_tunnel(const struct h1_stream *st, int status)
{
    return (st->upgrade_req && status == 101) ||
           (st->connect_req && status >= 200 && status < 300);
}

/* "HTTP/1.<minor> <status> <reason>\r\n" without printf (once per response). */
static void put_status_line(struct wr *w, int minor, int status)
{
    const char *reason = msm_http_reason(status);
    if (status < 100 || status > 999) {
        char l[32];
        int n = snprintf(l, sizeof(l), "HTTP/1.%d %d ", minor, status);
        wr_put(w, l, (size_t)n);
    } else {
        char l[13] = "HTTP/1.1 000 ";
        l[7] = (char)('0' + minor);
        l[9] = (char)('0' + status / 100);
        l[10] = (char)('0' + status / 10 % 10);
        l[11] = (char)('0' + status % 10);
        wr_put(w, l, sizeof(l));
    }
    wr_put(w, reason, strlen(reason));
    wr_put(w, "\r\n", 2);
}

/* A 101 or a CONNECT's 2xx: no body framing; afterwards our output is raw bytes. */
static void srv_encode_tunnel_headers(struct h1_stream *st, struct msm_hdrs *h, int status)
{
    struct h1 *c = st->c;
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_appendf(&b, "HTTP/1.1 %d %s\r\n", status, msm_http_reason(status));
    for (uint32_t i = 0; i < h->n; i++) {
        const struct msm_hdr *e = &h->v[i];
        if (skip_on_wire(e) || !strcmp(e->name, "content-length")) {
            continue;
        }
        msm_buf_append(&b, e->name, e->nlen);
        msm_buf_append(&b, ": ", 2);
        msm_buf_append(&b, e->value, e->vlen);
        msm_buf_append(&b, "\r\n", 2);
    }
    if (st->upgrade_req) {
        const char *up = msm_hdrs_get(h, "upgrade");
        msm_buf_appendf(&b, "connection: upgrade\r\nupgrade: %s\r\n",
                        up ? up : st->upgrade ? st->upgrade : "");
    }
    msm_buf_append(&b, "\r\n", 2);
    st->tunnel_out = true;
    st->s.tunnel = true;
    c->keep_alive = false;
    out(c, &b);
    msm_buf_deinit(&b);
}

static void srv_encode_headers(struct h1_stream *st, struct msm_hdrs *h, bool end_stream)
{
    struct h1 *c = st->c;
    int status = msm_hdrs_status(h, 500);
    if (opens_tunnel(st, status)) {
        srv_encode_tunnel_headers(st, h, status);
        return;
    }
    struct msm_buf b;
    msm_buf_init(&b);
    struct wr w;
    wr_begin(&w, &b, head_size(h, 0));
    /* HTTP/1.0 only for an accepted HTTP/1.0 request; errors and 426 answer in HTTP/1.1. */
    bool v10 = c->o.accept_http_10 && c->p.http_major == 1 && c->p.http_minor == 0 &&
               st->headers_in;
    put_status_line(&w, v10 ? 0 : 1, status);
    put_headers(&w, h, false);
    bool has_cl = msm_hdrs_find(h, "content-length") != NULL;
    bool bodiless = status == 204 || status == 304 || (status >= 100 && status < 200);
    if (!end_stream && !has_cl && !bodiless && !st->head) {
        if (v10) {
            st->close_delim_out = true;
            c->keep_alive = false;
        } else {
            st->chunked_out = true;
            wr_put(&w, "transfer-encoding: chunked\r\n", 28);
        }
    } else if (end_stream && !has_cl && !bodiless && !st->head) {
        wr_put(&w, "content-length: 0\r\n", 19);
    }
    if (!st->s.remote_end && end_stream) {
        /* Responding before the request ended: the rest of it cannot be skipped safely. */
        c->keep_alive = false;
    }
    if (!c->keep_alive || c->goaway) {
        wr_put(&w, "connection: close\r\n", 19);
    } else if (v10) {
        wr_put(&w, "connection: keep-alive\r\n", 24);
    }
    wr_put(&w, "\r\n", 2);
    wr_end(&w);
    out(c, &b);
    msm_buf_deinit(&b);
}

/* :method, :path and :authority in one pass, each the first of its name (msm_hdrs_find's). */
static void request_pseudo(const struct msm_hdrs *h, const struct msm_hdr **m,
                           const struct msm_hdr **path, const struct msm_hdr **auth)
{
    *m = *path = *auth = NULL;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct msm_hdr *e = &h->v[i];
        if (e->name[0] != ':') {
            continue;
        }
        const struct msm_hdr **slot = e->nlen == 7 && !memcmp(e->name, ":method", 7) ? m
                                      : e->nlen == 5 && !memcmp(e->name, ":path", 5)  ? path
                                      : e->nlen == 10 && !memcmp(e->name, ":authority", 10)
                                          ? auth
                                          : NULL;
        if (slot && !*slot) {
            *slot = e;
        }
    }
}

static bool method_is(const struct msm_hdr *m, const char *name, size_t len)
{
    return m && m->vlen == len && !memcmp(m->value, name, len);
}

static void cli_encode_headers(struct h1_stream *st, struct msm_hdrs *h, bool end_stream)
{
    struct h1 *c = st->c;
    const struct msm_hdr *m, *path, *auth;
    request_pseudo(h, &m, &path, &auth);
    st->head = method_is(m, "HEAD", 4);
    st->connect_req = method_is(m, "CONNECT", 7);
    const char *up = msm_hdrs_get(h, "upgrade");
    st->upgrade_req = up && !st->connect_req;
    struct msm_buf b;
    msm_buf_init(&b);
    struct wr w;
    wr_begin(&w, &b,
             head_size(h, (m ? m->vlen : 3) + (path ? path->vlen : 1) + (auth ? auth->vlen : 0)));
    if (st->connect_req) {
        wr_put(&w, "CONNECT ", 8);
        if (auth) {
            wr_put(&w, auth->value, auth->vlen);
        }
        wr_put(&w, " HTTP/1.1\r\n", 11);
    } else {
        if (m) {
            wr_put(&w, m->value, m->vlen);
        } else {
            wr_put(&w, "GET", 3);
        }
        wr_put(&w, " ", 1);
        if (path) {
            wr_put(&w, path->value, path->vlen);
        } else {
            wr_put(&w, "/", 1);
        }
        wr_put(&w, " HTTP/1.1\r\n", 11);
    }
    if (auth) {
        wr_put(&w, "host: ", 6);
        wr_put(&w, auth->value, auth->vlen);
        wr_put(&w, "\r\n", 2);
    }
    put_headers(&w, h, auth != NULL);
    bool has_cl = msm_hdrs_find(h, "content-length") != NULL;
    if (st->upgrade_req) {
        wr_put(&w, "connection: upgrade\r\nupgrade: ", 30);
        wr_put(&w, up, strlen(up));
        wr_put(&w, "\r\n", 2);
    }
    if (st->upgrade_req || st->connect_req) {
        /* What follows the request is the tunnel's payload: raw, never chunked. */
        st->tunnel_out = true;
    } else if (!end_stream && !has_cl) {
        st->chunked_out = true;
        wr_put(&w, "transfer-encoding: chunked\r\n", 28);
    } else if (end_stream && !has_cl &&
               (method_is(m, "POST", 4) || method_is(m, "PUT", 3) || method_is(m, "PATCH", 5))) {
        wr_put(&w, "content-length: 0\r\n", 19);
    }
    wr_put(&w, "\r\n", 2);
    wr_end(&w);
    out(c, &b);
    msm_buf_deinit(&b);
}

/* A tunnel's output ended: FIN after what was written. */
static void shutdown_out(struct h1 *c)
{
    if (c->base.cbs->shutdown_write) {
        c->base.cbs->shutdown_write(c->base.owner);
    }
}

static void local_end(struct h1 *c, struct h1_stream *st)
{
    st->s.local_end = true;
    if (st->tunnel_out) {
        shutdown_out(c); /* a half-close: the other direction goes on */
    } else if (c->base.server && !st->s.remote_end) {
        /* Response complete before the request: finish now, close the connection after. */
        c->keep_alive = false;
        st->s.remote_end = true;
    }
    maybe_complete(c, st);
}

static void h1_encode_headers(struct msm_hstream *s, struct msm_hdrs *h, bool end_stream)
{
    struct h1_stream *st = (struct h1_stream *)s;
    if (st->done || st->reset || st->headers_out) {
        return;
    }
    st->headers_out = true;
    if (st->c->base.server) {
        srv_encode_headers(st, h, end_stream);
    } else {
        cli_encode_headers(st, h, end_stream);
    }
    if (end_stream) {
        local_end(st->c, st);
    }
}

static void h1_encode_100(struct msm_hstream *s)
{
    struct h1_stream *st = (struct h1_stream *)s;
    if (st->done || st->reset || st->headers_out || !st->c->base.server) {
        return;
    }
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_append(&b, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    out(st->c, &b);
    msm_buf_deinit(&b);
}

static void h1_encode_data(struct msm_hstream *s, struct msm_buf *data, bool end_stream)
{
    struct h1_stream *st = (struct h1_stream *)s;
    struct h1 *c = st->c;
    if (st->done || st->reset || !st->headers_out || s->local_end) {
        msm_buf_drain(data, data->len);
        return;
    }
    if (st->head && c->base.server) {
        msm_buf_drain(data, data->len); /* HEAD: headers only */
    }
    struct msm_buf b;
    msm_buf_init(&b);
    if (st->tunnel_out) {
        msm_buf_move(&b, data);
    } else if (st->chunked_out && data->len) {
        msm_buf_appendf(&b, "%zx\r\n", data->len);
        msm_buf_move(&b, data);
        msm_buf_append(&b, "\r\n", 2);
    } else {
        msm_buf_move(&b, data);
    }
    if (end_stream && st->chunked_out && !st->tunnel_out) {
        msm_buf_append(&b, "0\r\n\r\n", 5);
    }
    out(c, &b);
    msm_buf_deinit(&b);
    if (end_stream) {
        if (st->close_delim_out) {
            c->base.close_connection = true;
        }
        local_end(c, st);
    }
}

static void h1_encode_trailers(struct msm_hstream *s, struct msm_hdrs *t)
{
    struct h1_stream *st = (struct h1_stream *)s;
    struct h1 *c = st->c;
    if (st->done || st->reset || !st->headers_out || s->local_end) {
        return;
    }
    struct msm_buf b;
    msm_buf_init(&b);
    if (st->chunked_out) {
        /* without enable_trailers the fields are dropped (Envoy): only the last chunk goes */
        const struct msm_hdrs *keep = c->o.enable_trailers ? t : NULL;
        struct wr w;
        wr_begin(&w, &b, keep ? head_size(keep, 0) : 8);
        wr_put(&w, "0\r\n", 3);
        if (keep) {
            put_headers(&w, keep, false);
        }
        wr_put(&w, "\r\n", 2);
        wr_end(&w);
        out(c, &b);
    }
    msm_buf_deinit(&b);
    if (st->close_delim_out) {
        c->base.close_connection = true;
    }
    local_end(c, st);
}

static void h1_reset(struct msm_hstream *s)
{
    struct h1_stream *st = (struct h1_stream *)s;
    struct h1 *c = st->c;
    if (st->done || st->reset) {
        return;
    }
    /* HTTP/1 has no stream reset: the connection goes. */
    st->reset = true;
    c->base.close_connection = true;
    c->keep_alive = false;
    retire(c, st);
    if (!c->base.server && !c->in_dispatch && c->base.cbs->on_stream_done) {
        /* Outside a read nothing else would tell the pool that this connection is to close:
         * it would linger until the peer sent or closed. */
        c->base.cbs->on_stream_done(c->base.owner);
    }
}

static void h1_release(struct msm_hstream *s)
{
    struct h1_stream *st = (struct h1_stream *)s;
    if (st->released) {
        return;
    }
    st->released = true;
    s->cbs = NULL;
    s->ctx = NULL;
    if (!st->c) {
        stream_free(st); /* the codec went first */
    } else if (st->done) {
        unretire(st->c, st);
        dispose(st->c, st);
    }
}

static void h1_read_disable(struct msm_hstream *s, bool disable)
{
    struct h1_stream *st = (struct h1_stream *)s;
    struct h1 *c = st->c;
    if (st->done) {
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

static struct msm_hstream *h1_new_stream(struct msm_hcodec *base, const struct msm_hstream_cbs *cbs,
                                         void *ctx)
{
    struct h1 *c = (struct h1 *)base;
    if (base->server || c->active || c->broken || base->close_connection) {
        return NULL;
    }
    struct h1_stream *st = msm_recycle_calloc(sizeof(struct h1_stream));
    st->c = c;
    st->s.codec = base;
    st->s.cbs = cbs;
    st->s.ctx = ctx;
    st->s.id = (uint32_t)++base->streams_total;
    c->active = st;
    c->keep_alive = true;
    return &st->s;
}

static void h1_goaway(struct msm_hcodec *base)
{
    struct h1 *c = (struct h1 *)base;
    c->goaway = true;
    if (!c->active) {
        base->close_connection = true;
    }
}

static int h1_active_streams(const struct msm_hcodec *base)
{
    const struct h1 *c = (const struct h1 *)base;
    return c->active ? 1 : 0;
}

static void h1_close_streams(struct msm_hcodec *base, enum msm_http_reset r)
{
    struct h1 *c = (struct h1 *)base;
    struct h1_stream *st = c->active;
    base->close_connection = true;
    c->broken = true;
    if (!st || st->done) {
        return;
    }
    reset_owner(c, st, r);
}

static void h1_conn_watermark(struct msm_hcodec *base, bool above)
{
    struct h1 *c = (struct h1 *)base;
    struct h1_stream *st = c->active;
    if (owned(st) && !st->done && st->s.cbs->on_watermark) {
        st->s.cbs->on_watermark(st->s.ctx, above);
    }
}

static bool h1_can_new_stream(const struct msm_hcodec *base)
{
    const struct h1 *c = (const struct h1 *)base;
    return !c->active && !c->broken && !base->close_connection;
}

static void h1_free(struct msm_hcodec *base)
{
    struct h1 *c = (struct h1 *)base;
    /* Streams still owned were released by their owners before (codec.h); the active one
     * is freed here only if nobody holds it. */
    if (c->active && (c->active->released || !c->active->s.cbs)) {
        stream_free(c->active); /* released, or its owner detached it (connection teardown) */
    } else if (c->active) {
        c->active->done = true; /* the owner's release frees it */
        c->active->c = NULL;
    }
    /* Finished exchanges the owner still holds, or detached from (the connection closed in the
     * middle of writing the response, so the owner never got to release them). */
    while (c->retired) {
        struct h1_stream *st = c->retired;
        c->retired = st->rnext;
        if (!st->s.cbs) {
            stream_free(st);
        } else {
            st->c = NULL;
        }
    }
    end_dispatch(c);
    msm_hdrs_deinit(&c->hdrs);
    msm_buf_deinit(&c->body);
    free(c->field);
    free(c->value);
    free(c->url);
    free(c);
}

static const struct msm_hcodec_ops h1_ops = {
    .dispatch = h1_dispatch,
    .dispatch_eof = h1_dispatch_eof,
    .new_stream = h1_new_stream,
    .encode_headers = h1_encode_headers,
    .encode_100_continue = h1_encode_100,
    .encode_data = h1_encode_data,
    .encode_trailers = h1_encode_trailers,
    .reset = h1_reset,
    .release = h1_release,
    .read_disable = h1_read_disable,
    .goaway = h1_goaway,
    .active_streams = h1_active_streams,
    .close_streams = h1_close_streams,
    .conn_watermark = h1_conn_watermark,
    .can_new_stream = h1_can_new_stream,
    .free = h1_free,
};

static struct msm_hcodec *h1_new(const struct msm_hcodec_opts *o, const struct msm_hcodec_cbs *cbs,
                                 void *owner, bool server)
{
    struct h1 *c = MSM_NEW(struct h1);
    c->base.ops = &h1_ops;
    c->base.cbs = cbs;
    c->base.owner = owner;
    c->base.proto = MSM_HTTP_11;
    c->base.server = server;
    if (o) {
        c->o = *o;
    } else {
        msm_hcodec_opts_default(&c->o);
    }
    http_parser_init(&c->p, server ? HTTP_REQUEST : HTTP_RESPONSE);
    c->p.data = c;
    c->keep_alive = true;
    return &c->base;
}

struct msm_hcodec *msm_http1_server_new(const struct msm_hcodec_opts *o,
                                        const struct msm_hcodec_cbs *cbs, void *owner)
{
    return h1_new(o, cbs, owner, true);
}

struct msm_hcodec *msm_http1_client_new(const struct msm_hcodec_opts *o,
                                        const struct msm_hcodec_cbs *cbs, void *owner)
{
    return h1_new(o, cbs, owner, false);
}
