/* The HTTP/2 server codec on arbitrary bytes after a valid client preface and SETTINGS:
 * frames of any kind, HPACK blocks, resets, window updates, floods. Every announced stream is
 * answered (headers, body, trailers) and released. SETTINGS_ENABLE_CONNECT_PROTOCOL is on, so
 * CONNECT and extended CONNECT (:protocol) requests are parsed too; the first byte picks the
 * codec's policies. Invariants: no crash, no leak, bounded work (the input size caps
 * everything). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    struct msm_hstream *s[64];
    int n;
};

static void on_headers(void *ctx, struct msm_hdrs *h, bool end)
{
    (void)ctx;
    (void)h;
    (void)end;
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
    if (f->n < 64) {
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

static const struct msm_hcodec_cbs ccbs = {.on_new_stream = new_stream, .write = write_out};

static void answer(struct fz *f)
{
    for (int i = 0; i < f->n; i++) {
        struct msm_hstream *s = f->s[i];
        struct msm_hdrs h;
        msm_hdrs_init(&h);
        msm_hdrs_addz(&h, ":status", "200");
        s->codec->ops->encode_headers(s, &h, false);
        struct msm_buf b;
        msm_buf_init(&b);
        msm_buf_append(&b, "ok", 2);
        s->codec->ops->encode_data(s, &b, false);
        msm_buf_deinit(&b);
        msm_hdrs_deinit(&h);
        msm_hdrs_addz(&h, "grpc-status", "0");
        s->codec->ops->encode_trailers(s, &h);
        msm_hdrs_deinit(&h);
        s->codec->ops->release(s);
    }
    f->n = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16) {
        return 0;
    }
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00"
                                  "\x00\x00";
    struct fz f = {0};
    struct msm_hcodec_opts o;
    msm_hcodec_opts_default(&o);
    o.max_headers_kb = 8;
    o.allow_connect = true; /* RFC 8441 extended CONNECT turned into an upgrade */
    /* The first byte picks options, so both sides of each policy are explored: an invalid
     * request resetting its stream or ending the connection, underscores kept, rejected or
     * dropped, a zero HPACK table announced, tight PRIORITY / WINDOW_UPDATE budgets. */
    if (size) {
        uint8_t opt = data[0];
        o.stream_error_on_invalid_messaging = opt & 1;
        o.underscores = (enum msm_underscores)((opt >> 1) % 3);
        o.hpack_table_size = opt & 8 ? 0 : 4096;
        if (opt & 16) {
            o.max_inbound_priority_frames_per_stream = 2;
            o.max_inbound_window_update_frames_per_data_frame_sent = 1;
        }
        data++;
        size--;
    }
    struct msm_hcodec *c = msm_http2_server_new(&o, &ccbs, &f);
    struct msm_buf in;
    msm_buf_init(&in);
    msm_buf_append(&in, preface, sizeof(preface) - 1);
    int rc = msm_hcodec_dispatch(c, &in);
    for (size_t off = 0; off < size && rc == 0;) {
        size_t k = size - off < 97 ? size - off : 97;
        msm_buf_append(&in, data + off, k);
        off += k;
        rc = msm_hcodec_dispatch(c, &in);
        answer(&f);
    }
    answer(&f);
    msm_buf_deinit(&in);
    msm_hcodec_free(c);
    return 0;
}
