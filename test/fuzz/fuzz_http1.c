/* The HTTP/1.1 codecs on arbitrary bytes. The first input byte picks the mode: even = server
 * (requests in; every complete request gets a response, body echoed, then more input), odd =
 * client (a request goes out first, then the input is the response). The input is fed in
 * chunks whose sizes come from the next byte, to cover split headers, chunk sizes and CRLFs.
 * Upgrades and CONNECT: bit 2 makes the server answer 101 (an upgrade's tunnel opens; a CONNECT
 * gets 200 either way); bits 2-3 pick the client's request (GET, HEAD via bit 1, an Upgrade,
 * a CONNECT), so 101/2xx answers switch the codec to raw tunnel bytes and the end of input is a
 * half-close. Invariants: no crash, no leak, and after an error no callback fires. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    struct msm_hcodec *c;
    struct msm_hstream *s[8];
    int n;
    bool error;
};

static void on_headers(void *ctx, struct msm_hdrs *h, bool end)
{
    struct fz *f = ctx;
    (void)end;
    if (f->error || !msm_hdrs_get(h, f->c->server ? ":method" : ":status")) {
        abort();
    }
}

static void on_data(void *ctx, struct msm_buf *b, bool end)
{
    (void)ctx;
    (void)end;
    msm_buf_drain(b, b->len);
}

static void on_trailers(void *ctx, struct msm_hdrs *t)
{
    (void)ctx;
    (void)t;
}

static void on_reset(void *ctx, enum msm_http_reset r)
{
    (void)ctx;
    (void)r;
}

static const struct msm_hstream_cbs scbs = {
    .on_headers = on_headers, .on_data = on_data, .on_trailers = on_trailers,
    .on_reset = on_reset,
};

static void new_stream(void *owner, struct msm_hstream *s)
{
    struct fz *f = owner;
    s->cbs = &scbs;
    s->ctx = f;
    if (f->n < 8) {
        f->s[f->n++] = s;
    } else {
        s->codec->ops->reset(s);
        s->codec->ops->release(s);
    }
}

static void write_out(void *owner, struct msm_buf *b)
{
    (void)owner;
    msm_buf_drain(b, b->len);
}

static void shut(void *owner)
{
    (void)owner;
}

static const struct msm_hcodec_cbs ccbs = {.on_new_stream = new_stream, .write = write_out,
                                           .shutdown_write = shut};

/* Answer and release every stream the server announced. */
static void answer(struct fz *f, bool upgrade)
{
    for (int i = 0; i < f->n; i++) {
        struct msm_hstream *s = f->s[i];
        struct msm_hdrs h;
        msm_hdrs_init(&h);
        msm_hdrs_addz(&h, ":status", upgrade ? "101" : "200");
        if (upgrade) {
            msm_hdrs_addz(&h, "upgrade", "websocket");
        }
        s->codec->ops->encode_headers(s, &h, false);
        struct msm_buf b;
        msm_buf_init(&b);
        msm_buf_append(&b, "ok", 2);
        s->codec->ops->encode_data(s, &b, true);
        msm_buf_deinit(&b);
        msm_hdrs_deinit(&h);
        s->codec->ops->release(s);
    }
    f->n = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 1 << 16) {
        return 0;
    }
    struct fz f = {0};
    bool server = !(data[0] & 1);
    struct msm_hcodec_opts o;
    msm_hcodec_opts_default(&o);
    o.max_headers_kb = 4;
    o.max_headers_count = 20;
    f.c = server ? msm_http1_server_new(&o, &ccbs, &f) : msm_http1_client_new(&o, &ccbs, &f);
    bool upgrade = (data[0] & 4) != 0;
    if (!server) {
        int kind = (data[0] >> 2) & 3; /* 0 plain, 1 upgrade, 2 CONNECT, 3 upgrade */
        struct msm_hstream *s = f.c->ops->new_stream(f.c, &scbs, &f);
        struct msm_hdrs h;
        msm_hdrs_init(&h);
        msm_hdrs_addz(&h, ":method", kind == 2 ? "CONNECT" : (data[0] & 2) ? "HEAD" : "GET");
        if (kind != 2) {
            msm_hdrs_addz(&h, ":path", "/");
        }
        msm_hdrs_addz(&h, ":authority", "x:1");
        if (kind & 1) {
            msm_hdrs_addz(&h, "upgrade", "websocket");
        }
        s->codec->ops->encode_headers(s, &h, kind == 0);
        if (kind) {
            struct msm_buf b;
            msm_buf_init(&b);
            msm_buf_append(&b, "tunnel", 6);
            s->codec->ops->encode_data(s, &b, (data[0] & 16) != 0);
            msm_buf_deinit(&b);
        }
        msm_hdrs_deinit(&h);
        f.s[f.n++] = s;
    }
    size_t chunk = (size_t)(data[1] % 64) + 1;
    struct msm_buf in;
    msm_buf_init(&in);
    for (size_t off = 2; off < size && !f.error;) {
        size_t k = size - off < chunk ? size - off : chunk;
        msm_buf_append(&in, data + off, k);
        off += k;
        if (msm_hcodec_dispatch(f.c, &in) < 0) {
            f.error = true;
            if (server && f.c->error_stream && !f.c->error_stream->cbs) {
                f.c->error_stream->codec->ops->encode_headers(f.c->error_stream,
                                                              &(struct msm_hdrs){0}, true);
            }
        }
        if (server) {
            answer(&f, upgrade);
        }
    }
    if (!server) {
        if (!f.error) {
            f.c->ops->dispatch_eof(f.c);
        }
        for (int i = 0; i < f.n; i++) {
            f.s[i]->codec->ops->release(f.s[i]);
        }
        f.n = 0;
    } else {
        answer(&f, upgrade);
        f.c->ops->dispatch_eof(f.c); /* a half-close when the connection became a tunnel */
        answer(&f, upgrade);
    }
    msm_buf_deinit(&in);
    msm_hcodec_free(f.c);
    return 0;
}
