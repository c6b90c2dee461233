#pragma once
/* The fake owner the codec unit tests drive a struct msm_hcodec with (include after cmocka.h):
 * every stream's frames are recorded in a struct rec, the wire output collects in out, and
 * shutdown_write / on_stream_done calls are counted. static inline: each test takes what it
 * uses. */
#include <stdlib.h>
#include <string.h>

#include "http/codec.h"

struct rec {
    struct msm_hstream *s;
    struct msm_hdrs hdrs, trailers;
    struct msm_buf body;
    bool headers, end, has_trailers, info;
    int reset; /* enum msm_http_reset + 1; 0 = none */
};

struct owner {
    struct msm_hcodec *c;
    struct msm_buf out;
    struct rec r[256];
    int n;
    int shut; /* shutdown_write calls */
    int done; /* on_stream_done calls */
};

static inline void s_headers(void *ctx, struct msm_hdrs *h, bool end)
{
    struct rec *r = ctx;
    msm_hdrs_move(&r->hdrs, h);
    r->headers = true;
    r->end = end;
}

static inline void s_data(void *ctx, struct msm_buf *b, bool end)
{
    struct rec *r = ctx;
    msm_buf_move(&r->body, b);
    r->end = r->end || end;
}

static inline void s_trailers(void *ctx, struct msm_hdrs *t)
{
    struct rec *r = ctx;
    msm_hdrs_move(&r->trailers, t);
    r->has_trailers = true;
    r->end = true;
}

static inline void s_reset(void *ctx, enum msm_http_reset why)
{
    struct rec *r = ctx;
    r->reset = (int)why + 1;
}

static inline void s_info(void *ctx, struct msm_hdrs *h)
{
    struct rec *r = ctx;
    (void)h;
    r->info = true;
}

static const struct msm_hstream_cbs scbs = {
    .on_headers = s_headers,
    .on_data = s_data,
    .on_trailers = s_trailers,
    .on_reset = s_reset,
    .on_info = s_info,
};

static inline struct rec *new_rec(struct owner *o)
{
    struct rec *r = &o->r[o->n++];
    memset(r, 0, sizeof(*r));
    msm_hdrs_init(&r->hdrs);
    msm_hdrs_init(&r->trailers);
    msm_buf_init(&r->body);
    return r;
}

static inline void o_new_stream(void *owner, struct msm_hstream *s)
{
    struct rec *r = new_rec(owner);
    r->s = s;
    s->cbs = &scbs;
    s->ctx = r;
}

static inline void o_write(void *owner, struct msm_buf *b)
{
    msm_buf_move(&((struct owner *)owner)->out, b);
}

static inline void o_shut(void *owner)
{
    ((struct owner *)owner)->shut++;
}

static inline void o_done(void *owner)
{
    ((struct owner *)owner)->done++;
}

static const struct msm_hcodec_cbs ocbs = {
    .on_new_stream = o_new_stream,
    .write = o_write,
    .on_stream_done = o_done,
    .shutdown_write = o_shut,
};

static inline void owner_init(struct owner *o)
{
    memset(o, 0, sizeof(*o));
    msm_buf_init(&o->out);
}

static inline void owner_deinit(struct owner *o)
{
    for (int i = 0; i < o->n; i++) {
        msm_hdrs_deinit(&o->r[i].hdrs);
        msm_hdrs_deinit(&o->r[i].trailers);
        msm_buf_deinit(&o->r[i].body);
    }
    msm_buf_deinit(&o->out);
    msm_hcodec_free(o->c);
}

static inline int feed(struct owner *o, const char *s, size_t n)
{
    struct msm_buf in;
    msm_buf_init(&in);
    msm_buf_append(&in, s, n);
    int rc = msm_hcodec_dispatch(o->c, &in);
    msm_buf_deinit(&in);
    return rc;
}

static inline int feeds(struct owner *o, const char *s)
{
    return feed(o, s, strlen(s));
}

/* The output so far as a string (the caller frees it); the output is consumed. */
static inline char *take_out(struct owner *o)
{
    char *s = calloc(1, o->out.len + 1);
    msm_buf_copyout(&o->out, 0, s, o->out.len);
    msm_buf_drain(&o->out, o->out.len);
    return s;
}

/* A client and a server codec back to back: move bytes both ways until both are quiet. */
static inline void pump(struct owner *cli, struct owner *srv)
{
    for (int i = 0; i < 50 && (cli->out.len || srv->out.len); i++) {
        struct msm_buf b;
        msm_buf_init(&b);
        msm_buf_move(&b, &cli->out);
        assert_int_equal(msm_hcodec_dispatch(srv->c, &b), 0);
        msm_buf_move(&b, &srv->out);
        assert_int_equal(msm_hcodec_dispatch(cli->c, &b), 0);
        msm_buf_deinit(&b);
    }
}
