/* Upgrades and CONNECT in the codecs and route configurations: the HTTP/1.1 server and client
 * switching to a tunnel after an Upgrade/101 or a CONNECT/2xx (bytes on the wire, half-closes,
 * a refused upgrade, an h2c offer ignored), the raw TCP tunnel codec, RFC 8441 extended CONNECT
 * on HTTP/2 (client and server back to back), and RouteAction.upgrade_configs and
 * connect_matcher (src/http/http1.c, tunnel.c, http2.c, route.c, route_match.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/pbjson.h"
#include "config/types.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "filters/network/http_connection_manager/hcm.h"
#include "stats/stats.h"
#include "http/codec.h"
#include "test/unit/http/codec_owner.h"
#include "http/route.h"
#include "test/unit/http/route_json.h"

static void expect_out(struct owner *o, const char *want)
{
    char *w = take_out(o);
    assert_string_equal(w, want);
    free(w);
}

static void expect_body(struct rec *r, const char *want)
{
    char *s = calloc(1, r->body.len + 1);
    msm_buf_copyout(&r->body, 0, s, r->body.len);
    msm_buf_drain(&r->body, r->body.len);
    assert_string_equal(s, want);
    free(s);
}

static void send_data(struct msm_hstream *s, const char *d, bool end)
{
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_append(&b, d, strlen(d));
    s->codec->ops->encode_data(s, &b, end);
    msm_buf_deinit(&b);
}

static void send_headers(struct msm_hstream *s, int end, ...)
{
    struct msm_hdrs h;
    msm_hdrs_init(&h);
    va_list ap;
    va_start(ap, end);
    const char *k;
    while ((k = va_arg(ap, const char *))) {
        msm_hdrs_addz(&h, k, va_arg(ap, const char *));
    }
    va_end(ap);
    s->codec->ops->encode_headers(s, &h, end != 0);
    msm_hdrs_deinit(&h);
}

/* ---- HTTP/1.1 server ---------------------------------------------------------------------- */

static void test_h1_server_websocket(void **state)
{
    (void)state;
    struct owner o;
    owner_init(&o);
    o.c = msm_http1_server_new(NULL, &ocbs, &o);
    /* Bytes after the header block are the tunnel's, even before the 101. */
    assert_int_equal(feeds(&o, "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                               "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n"
                               "EARLY GET / HTTP/1.1\r\n"),
                     0);
    assert_int_equal(o.n, 1);
    struct rec *r = &o.r[0];
    assert_true(r->headers);
    assert_false(r->end);
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":method"), "GET");
    assert_string_equal(msm_hdrs_get(&r->hdrs, "upgrade"), "websocket");
    assert_string_equal(msm_hdrs_get(&r->hdrs, "connection"), "keep-alive, Upgrade");
    expect_body(r, "EARLY GET / HTTP/1.1\r\n");
    send_headers(r->s, false, ":status", "101", "upgrade", "websocket", "connection", "upgrade",
                 "sec-websocket-accept", "xyz", "content-length", "0", NULL);
    expect_out(&o, "HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept: xyz\r\n"
                   "connection: upgrade\r\nupgrade: websocket\r\n\r\n");
    assert_true(r->s->tunnel);
    send_data(r->s, "0\r\n\r\n", false); /* raw, never chunked */
    expect_out(&o, "0\r\n\r\n");
    assert_int_equal(feeds(&o, "\x81\x85more"), 0);
    expect_body(r, "\x81\x85more");
    /* The response direction half-closes first; the client's keeps going. */
    send_data(r->s, "bye", true);
    expect_out(&o, "bye");
    assert_int_equal(o.shut, 1);
    assert_int_equal(o.done, 0);
    assert_int_equal(feeds(&o, "still"), 0);
    expect_body(r, "still");
    assert_false(r->end);
    assert_int_equal(o.c->ops->dispatch_eof(o.c), 0);
    assert_true(r->end);
    assert_int_equal(o.done, 1);
    assert_true(o.c->close_connection);
    assert_int_equal(o.c->ops->active_streams(o.c), 0);
    r->s->codec->ops->release(r->s);
    owner_deinit(&o);
}

static void test_h1_server_connect(void **state)
{
    (void)state;
    struct owner o;
    owner_init(&o);
    o.c = msm_http1_server_new(NULL, &ocbs, &o);
    assert_int_equal(feeds(&o, "CONNECT origin.example:443 HTTP/1.1\r\n"
                               "Host: origin.example:443\r\nContent-Length: 5\r\n\r\nhello"),
                     0);
    struct rec *r = &o.r[0];
    assert_false(r->end);
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":method"), "CONNECT");
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":authority"), "origin.example:443");
    assert_null(msm_hdrs_get(&r->hdrs, ":path"));
    assert_null(msm_hdrs_get(&r->hdrs, ":scheme"));
    expect_body(r, "hello"); /* a CONNECT has no body: these bytes are the tunnel's */
    send_headers(r->s, false, ":status", "200", "content-length", "12", NULL);
    expect_out(&o, "HTTP/1.1 200 OK\r\n\r\n");
    assert_int_equal(o.c->ops->dispatch_eof(o.c), 0); /* client half-closes first */
    assert_true(r->end);
    send_data(r->s, "reply", true);
    expect_out(&o, "reply");
    assert_int_equal(o.shut, 1);
    assert_true(o.c->close_connection);
    r->s->codec->ops->release(r->s);
    owner_deinit(&o);
}

static void test_h1_server_upgrade_refused(void **state)
{
    (void)state;
    struct owner o;
    owner_init(&o);
    o.c = msm_http1_server_new(NULL, &ocbs, &o);
    assert_int_equal(feeds(&o, "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                               "Connection: upgrade\r\n\r\n"),
                     0);
    struct rec *r = &o.r[0];
    send_headers(r->s, true, ":status", "403", "content-length", "0", NULL);
    expect_out(&o, "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    assert_true(o.c->close_connection);
    assert_int_equal(o.shut, 0);
    /* What follows is not parsed as another request. */
    assert_int_equal(feeds(&o, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    assert_int_equal(o.n, 1);
    r->s->codec->ops->release(r->s);
    owner_deinit(&o);
}

static void test_h1_server_h2c_ignored(void **state)
{
    (void)state;
    struct owner o;
    owner_init(&o);
    o.c = msm_http1_server_new(NULL, &ocbs, &o);
    assert_int_equal(feeds(&o, "GET / HTTP/1.1\r\nHost: a\r\n"
                               "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                               "HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
                     0);
    struct rec *r = &o.r[0];
    assert_true(r->end);
    assert_null(msm_hdrs_get(&r->hdrs, "upgrade"));
    assert_null(msm_hdrs_get(&r->hdrs, "http2-settings"));
    send_headers(r->s, true, ":status", "200", "content-length", "0", NULL);
    expect_out(&o, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    assert_false(o.c->close_connection);
    r->s->codec->ops->release(r->s);
    assert_int_equal(feeds(&o, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    assert_int_equal(o.n, 2);
    o.r[1].s->codec->ops->release(o.r[1].s);
    owner_deinit(&o);
}

/* ---- HTTP/1.1 client ---------------------------------------------------------------------- */

static struct rec *cli_stream(struct owner *o)
{
    struct rec *r = new_rec(o);
    r->s = o->c->ops->new_stream(o->c, &scbs, r);
    assert_non_null(r->s);
    return r;
}

static void test_h1_client_websocket(void **state)
{
    (void)state;
    struct owner o;
    owner_init(&o);
    o.c = msm_http1_client_new(NULL, &ocbs, &o);
    struct rec *r = cli_stream(&o);
    send_headers(r->s, false, ":method", "GET", ":path", "/ws", ":authority", "up",
                 ":scheme", "http", "upgrade", "websocket", "connection", "keep-alive, upgrade",
                 "sec-websocket-key", "k", NULL);
    send_data(r->s, "early", false);
    expect_out(&o, "GET /ws HTTP/1.1\r\nhost: up\r\nsec-websocket-key: k\r\n"
                   "connection: upgrade\r\nupgrade: websocket\r\n\r\nearly");
    assert_int_equal(feeds(&o, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\n\r\nHTTP/1.1 200 OK\r\n"),
                     0);
    assert_true(r->headers);
    assert_false(r->end);
    assert_true(r->s->tunnel);
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":status"), "101");
    expect_body(r, "HTTP/1.1 200 OK\r\n"); /* tunnel bytes, not a second response */
    assert_int_equal(o.c->ops->dispatch_eof(o.c), 0);
    assert_true(r->end);
    assert_int_equal(o.done, 0);
    send_data(r->s, "last", true);
    expect_out(&o, "last");
    assert_int_equal(o.shut, 1);
    assert_int_equal(o.done, 1);
    assert_true(o.c->close_connection);
    assert_false(o.c->ops->can_new_stream(o.c));
    r->s->codec->ops->release(r->s);
    owner_deinit(&o);
}

static void test_h1_client_connect_and_refusals(void **state)
{
    (void)state;
    struct owner o;
    owner_init(&o);
    o.c = msm_http1_client_new(NULL, &ocbs, &o);
    struct rec *r = cli_stream(&o);
    send_headers(r->s, false, ":method", "CONNECT", ":authority", "t.example:443", NULL);
    expect_out(&o, "CONNECT t.example:443 HTTP/1.1\r\nhost: t.example:443\r\n\r\n");
    assert_int_equal(feeds(&o, "HTTP/1.1 200 Connection Established\r\n\r\ndata"), 0);
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":status"), "200");
    expect_body(r, "data");
    assert_false(r->end);
    r->s->codec->ops->reset(r->s);
    r->s->codec->ops->release(r->s);
    owner_deinit(&o);
    /* An upgrade answered with a plain response: its body is framed as usual. */
    owner_init(&o);
    o.c = msm_http1_client_new(NULL, &ocbs, &o);
    r = cli_stream(&o);
    send_headers(r->s, false, ":method", "GET", ":path", "/", ":authority", "up", "upgrade",
                 "websocket", NULL);
    free(take_out(&o));
    assert_int_equal(feeds(&o, "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"), 0);
    assert_true(r->end);
    assert_false(r->s->tunnel);
    expect_body(r, "no");
    r->s->codec->ops->reset(r->s);
    r->s->codec->ops->release(r->s);
    owner_deinit(&o);
    /* A 101 nobody asked for is a protocol error. */
    owner_init(&o);
    o.c = msm_http1_client_new(NULL, &ocbs, &o);
    r = cli_stream(&o);
    send_headers(r->s, true, ":method", "GET", ":path", "/", ":authority", "up", NULL);
    assert_true(feeds(&o, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                          "Connection: upgrade\r\n\r\n") < 0);
    assert_int_equal(r->reset, MSM_RESET_PROTOCOL_ERROR + 1);
    r->s->codec->ops->release(r->s);
    owner_deinit(&o);
}

/* ---- the raw TCP leg ---------------------------------------------------------------------- */

static void test_tcp_tunnel(void **state)
{
    (void)state;
    struct owner o;
    owner_init(&o);
    o.c = msm_tcp_tunnel_client_new(&ocbs, &o);
    assert_true(o.c->ops->can_new_stream(o.c));
    /* Bytes before the stream's headers wait in the input buffer. */
    struct msm_buf in;
    msm_buf_init(&in);
    msm_buf_append(&in, "banner", 6);
    struct rec *r = cli_stream(&o);
    assert_false(o.c->ops->can_new_stream(o.c));
    assert_int_equal(msm_hcodec_dispatch(o.c, &in), 0);
    assert_int_equal((int)in.len, 6);
    send_headers(r->s, false, ":method", "CONNECT", ":authority", "x:1", NULL);
    assert_int_equal((int)o.out.len, 0); /* the headers never reach the wire */
    assert_true(r->headers);
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":status"), "200");
    assert_int_equal(o.done, 1); /* the owner is asked to dispatch again */
    assert_int_equal(msm_hcodec_dispatch(o.c, &in), 0);
    expect_body(r, "banner");
    send_data(r->s, "ping", false);
    expect_out(&o, "ping");
    /* read-disabled: input waits */
    r->s->codec->ops->read_disable(r->s, true);
    msm_buf_append(&in, "late", 4);
    assert_int_equal(msm_hcodec_dispatch(o.c, &in), 0);
    assert_int_equal((int)in.len, 4);
    r->s->codec->ops->read_disable(r->s, false);
    assert_int_equal(msm_hcodec_dispatch(o.c, &in), 0);
    expect_body(r, "late");
    send_data(r->s, "", true);
    assert_int_equal(o.shut, 1);
    assert_int_equal(o.c->ops->active_streams(o.c), 1);
    assert_int_equal(o.c->ops->dispatch_eof(o.c), 0);
    assert_true(r->end);
    assert_int_equal(o.c->ops->active_streams(o.c), 0);
    assert_true(o.c->close_connection);
    r->s->codec->ops->release(r->s);
    msm_buf_deinit(&in);
    owner_deinit(&o);
    /* The connection goes under a live stream: reset. */
    owner_init(&o);
    o.c = msm_tcp_tunnel_client_new(&ocbs, &o);
    r = cli_stream(&o);
    send_headers(r->s, false, ":method", "CONNECT", NULL);
    o.c->ops->close_streams(o.c, MSM_RESET_CONNECTION_TERMINATION);
    assert_int_equal(r->reset, MSM_RESET_CONNECTION_TERMINATION + 1);
    r->s->codec->ops->release(r->s);
    owner_deinit(&o);
}

/* ---- HTTP/2 extended CONNECT -------------------------------------------------------------- */

/* A client and a server HTTP/2 codec wired to each other (pump), the server accepting extended
 * CONNECT with <allow_connect>. */
static void h2_pair_new(bool allow_connect, struct owner **cli, struct owner **srv)
{
    *cli = calloc(1, sizeof(**cli));
    *srv = calloc(1, sizeof(**srv));
    owner_init(*cli);
    owner_init(*srv);
    struct msm_hcodec_opts so;
    msm_hcodec_opts_default(&so);
    so.allow_connect = allow_connect;
    (*srv)->c = msm_http2_server_new(&so, &ocbs, *srv);
    (*cli)->c = msm_http2_client_new(NULL, &ocbs, *cli);
}

static void h2_pair_free(struct owner *cli, struct owner *srv)
{
    owner_deinit(cli);
    owner_deinit(srv);
    free(cli);
    free(srv);
}

static void test_h2_extended_connect(void **state)
{
    (void)state;
    struct owner *cli, *srv;
    h2_pair_new(true, &cli, &srv);
    pump(cli, srv);
    struct rec *r = cli_stream(cli);
    send_headers(r->s, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http",
                 ":path", "/chat", ":authority", "a", "sec-websocket-version", "13", NULL);
    pump(cli, srv);
    assert_int_equal(srv->n, 1);
    struct rec *sr = &srv->r[0];
    assert_false(sr->end);
    assert_string_equal(msm_hdrs_get(&sr->hdrs, ":method"), "GET");
    assert_string_equal(msm_hdrs_get(&sr->hdrs, ":path"), "/chat");
    assert_string_equal(msm_hdrs_get(&sr->hdrs, "upgrade"), "websocket");
    assert_string_equal(msm_hdrs_get(&sr->hdrs, "connection"), "upgrade");
    assert_null(msm_hdrs_get(&sr->hdrs, ":protocol"));
    send_headers(sr->s, false, ":status", "101", "upgrade", "websocket", NULL);
    send_data(sr->s, "frame", false);
    pump(cli, srv);
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":status"), "200");
    assert_null(msm_hdrs_get(&r->hdrs, "upgrade"));
    expect_body(r, "frame");
    send_data(r->s, "back", true);
    pump(cli, srv);
    expect_body(sr, "back");
    assert_true(sr->end);
    send_data(sr->s, "", true);
    pump(cli, srv);
    assert_true(r->end);
    assert_int_equal(r->reset, 0);
    assert_int_equal(sr->reset, 0);
    r->s->codec->ops->release(r->s);
    sr->s->codec->ops->release(sr->s);
    pump(cli, srv);
    h2_pair_free(cli, srv);
}

/* Client side (upgrades to an HTTP/2 upstream, Envoy's client codec): an HTTP/1.1-style
 * upgrade goes out as an extended CONNECT and its 200 comes back as a 101; a CONNECT loses
 * :scheme and :path; a server that did not announce ENABLE_CONNECT_PROTOCOL resets. */
static void test_h2_client_upgrade_as_extended_connect(void **state)
{
    (void)state;
    struct owner *cli, *srv;
    h2_pair_new(true, &cli, &srv);
    pump(cli, srv);
    struct rec *r = cli_stream(cli);
    send_headers(r->s, false, ":method", "GET", ":scheme", "http", ":path", "/chat",
                 ":authority", "a", "upgrade", "websocket", "connection", "upgrade",
                 "content-length", "0", "sec-websocket-key", "k", NULL);
    pump(cli, srv);
    assert_int_equal(srv->n, 1);
    struct rec *sr = &srv->r[0];
    /* The server turned the extended CONNECT back into the upgrade: :protocol was sent. */
    assert_string_equal(msm_hdrs_get(&sr->hdrs, ":method"), "GET");
    assert_string_equal(msm_hdrs_get(&sr->hdrs, ":path"), "/chat");
    assert_string_equal(msm_hdrs_get(&sr->hdrs, "upgrade"), "websocket");
    assert_string_equal(msm_hdrs_get(&sr->hdrs, "sec-websocket-key"), "k");
    assert_null(msm_hdrs_get(&sr->hdrs, "content-length"));
    send_headers(sr->s, false, ":status", "101", NULL); /* 200 on the wire */
    send_data(sr->s, "frame", false);
    pump(cli, srv);
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":status"), "101");
    assert_string_equal(msm_hdrs_get(&r->hdrs, "upgrade"), "websocket");
    assert_string_equal(msm_hdrs_get(&r->hdrs, "connection"), "upgrade");
    assert_true(r->s->tunnel);
    expect_body(r, "frame");
    send_data(r->s, "back", true);
    pump(cli, srv);
    expect_body(sr, "back");
    assert_true(sr->end);
    send_data(sr->s, "", true);
    pump(cli, srv);
    assert_true(r->end);
    assert_int_equal(r->reset, 0);
    r->s->codec->ops->release(r->s);
    sr->s->codec->ops->release(sr->s);

    /* A refused upgrade (non-200) is an ordinary response. */
    r = cli_stream(cli);
    send_headers(r->s, false, ":method", "GET", ":scheme", "http", ":path", "/x",
                 ":authority", "a", "upgrade", "websocket", "connection", "upgrade", NULL);
    pump(cli, srv);
    sr = &srv->r[srv->n - 1];
    send_headers(sr->s, true, ":status", "404", NULL);
    pump(cli, srv);
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":status"), "404");
    assert_null(msm_hdrs_get(&r->hdrs, "upgrade"));
    assert_false(r->s->tunnel);
    r->s->codec->ops->reset(r->s);
    r->s->codec->ops->release(r->s);
    sr->s->codec->ops->release(sr->s);

    /* CONNECT: :scheme and :path are not sent (nghttp2 refuses them on a CONNECT). */
    r = cli_stream(cli);
    send_headers(r->s, false, ":method", "CONNECT", ":authority", "o:443", ":scheme", "https",
                 ":path", "/", NULL);
    pump(cli, srv);
    sr = &srv->r[srv->n - 1];
    assert_string_equal(msm_hdrs_get(&sr->hdrs, ":method"), "CONNECT");
    assert_string_equal(msm_hdrs_get(&sr->hdrs, ":authority"), "o:443");
    assert_null(msm_hdrs_get(&sr->hdrs, ":path"));
    assert_null(msm_hdrs_get(&sr->hdrs, ":scheme"));
    assert_int_equal(sr->reset, 0);
    send_headers(sr->s, false, ":status", "200", NULL);
    pump(cli, srv);
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":status"), "200");
    assert_null(msm_hdrs_get(&r->hdrs, "upgrade"));
    r->s->codec->ops->reset(r->s);
    r->s->codec->ops->release(r->s);
    pump(cli, srv);
    sr->s->codec->ops->release(sr->s);
    pump(cli, srv);
    h2_pair_free(cli, srv);

    /* Without allow_connect: sent before the server's SETTINGS arrived, the server resets it
     * (PROTOCOL_ERROR); once they say no ENABLE_CONNECT_PROTOCOL, it is not sent at all. */
    h2_pair_new(false, &cli, &srv);
    for (int i = 0; i < 2; i++) {
        r = cli_stream(cli);
        send_headers(r->s, false, ":method", "GET", ":scheme", "http", ":path", "/chat",
                     ":authority", "a", "upgrade", "websocket", "connection", "upgrade", NULL);
        assert_int_equal(r->reset, i ? MSM_RESET_PROTOCOL_ERROR + 1 : 0);
        pump(cli, srv);
        assert_int_equal(srv->n, 0);
        assert_int_equal(r->reset, MSM_RESET_PROTOCOL_ERROR + 1);
        r->s->codec->ops->release(r->s);
        pump(cli, srv);
    }
    h2_pair_free(cli, srv);
}

/* How many HTTP/2 HEADERS frames <o>'s pending output holds (a client's starts with the
 * connection preface); the output stays in place. */
static int h2_headers_frames(struct owner *o, bool preface)
{
    size_t len = o->out.len;
    uint8_t *b = malloc(len + 1);
    msm_buf_copyout(&o->out, 0, b, len);
    int n = 0;
    for (size_t off = preface ? 24 : 0; off + 9 <= len;) {
        size_t flen = ((size_t)b[off] << 16) | ((size_t)b[off + 1] << 8) | b[off + 2];
        n += b[off + 3] == 0x1;
        off += 9 + flen;
    }
    free(b);
    return n;
}

/* RFC 8441 3: on a new connection the client holds an extended CONNECT until the server's
 * SETTINGS arrived (ordinary requests go at once), with the bytes sent meanwhile; then sends it
 * if they announced ENABLE_CONNECT_PROTOCOL, else fails it as refused (PROTOCOL_ERROR, no
 * HEADERS ever sent). A held stream reset and released, or caught by the connection's close,
 * gets one on_reset at most and leaks nothing (ASan). */
static void test_h2_client_waits_for_settings(void **state)
{
    (void)state;
    struct owner *cli, *srv;
    h2_pair_new(true, &cli, &srv);
    struct rec *plain = cli_stream(cli);
    send_headers(plain->s, true, ":method", "GET", ":scheme", "http", ":path", "/p",
                 ":authority", "a", NULL);
    struct rec *r = cli_stream(cli);
    send_headers(r->s, false, ":method", "GET", ":scheme", "http", ":path", "/chat",
                 ":authority", "a", "upgrade", "websocket", "connection", "upgrade", NULL);
    send_data(r->s, "early", false);
    struct rec *gone = cli_stream(cli);
    send_headers(gone->s, false, ":method", "GET", ":scheme", "http", ":path", "/gone",
                 ":authority", "a", "upgrade", "websocket", "connection", "upgrade", NULL);
    gone->s->codec->ops->reset(gone->s);
    gone->s->codec->ops->release(gone->s);
    assert_int_equal(h2_headers_frames(cli, true), 1); /* only the plain GET */
    assert_int_equal(r->reset, 0);
    pump(cli, srv);
    assert_int_equal(srv->n, 2);
    assert_string_equal(msm_hdrs_get(&srv->r[0].hdrs, ":path"), "/p");
    struct rec *sr = &srv->r[1];
    assert_string_equal(msm_hdrs_get(&sr->hdrs, ":path"), "/chat");
    assert_string_equal(msm_hdrs_get(&sr->hdrs, "upgrade"), "websocket");
    expect_body(sr, "early");
    assert_int_equal(r->reset, 0);
    assert_int_equal(gone->reset, 0);
    send_headers(sr->s, false, ":status", "101", NULL);
    pump(cli, srv);
    assert_string_equal(msm_hdrs_get(&r->hdrs, ":status"), "101");
    r->s->codec->ops->reset(r->s);
    r->s->codec->ops->release(r->s);
    plain->s->codec->ops->release(plain->s);
    pump(cli, srv);
    srv->r[0].s->codec->ops->release(srv->r[0].s);
    sr->s->codec->ops->release(sr->s);
    pump(cli, srv);
    h2_pair_free(cli, srv);

    /* A peer without ENABLE_CONNECT_PROTOCOL never sees the HEADERS. */
    h2_pair_new(false, &cli, &srv);
    r = cli_stream(cli);
    send_headers(r->s, true, ":method", "GET", ":scheme", "http", ":path", "/chat",
                 ":authority", "a", "upgrade", "websocket", "connection", "upgrade", NULL);
    assert_int_equal(h2_headers_frames(cli, true), 0);
    assert_int_equal(r->reset, 0);
    pump(cli, srv);
    assert_int_equal(srv->n, 0);
    assert_int_equal(r->reset, MSM_RESET_PROTOCOL_ERROR + 1);
    r->s->codec->ops->release(r->s);
    pump(cli, srv);
    h2_pair_free(cli, srv);

    /* The connection goes before the SETTINGS came: one on_reset, then the codec is freed. */
    h2_pair_new(true, &cli, &srv);
    r = cli_stream(cli);
    send_headers(r->s, false, ":method", "GET", ":scheme", "http", ":path", "/chat",
                 ":authority", "a", "upgrade", "websocket", "connection", "upgrade", NULL);
    cli->c->ops->close_streams(cli->c, MSM_RESET_CONNECTION_TERMINATION);
    assert_int_equal(r->reset, MSM_RESET_CONNECTION_TERMINATION + 1);
    r->s->codec->ops->release(r->s);
    h2_pair_free(cli, srv);
}

/* upgrade_configs[].filters: built like http_filters (an upgrade's own chain, ending with the
 * router); its errors name the list. hcm_config builds an HCM whose upgrade_configs is the JSON
 * <upgrades>: config_new's error, else n_upgrades + 100 * the first entry's chain length. */
static int hcm_config(const char *upgrades, struct msm_err *err)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"stat_prefix\":\"u\",\"http_filters\":[{\"name\":\"envoy.filters.http.router\","
             "\"typed_config\":{\"@type\":\"type.googleapis.com/envoy.extensions.filters.http."
             "router.v3.Router\"}}],\"route_config\":{\"virtual_hosts\":[{\"name\":\"v\","
             "\"domains\":[\"*\"],\"routes\":[{\"match\":{\"prefix\":\"/\"},\"route\":{"
             "\"cluster\":\"c\"}}]}]},\"upgrade_configs\":%s}",
             upgrades);
    const ProtobufCMessageDescriptor *d = msm_types_find(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    assert_non_null(d);
    struct msm_pbjson_opts jo = {0};
    ProtobufCMessage *m = msm_pbjson_decode_text(d, json, strlen(json), &jo, err);
    if (!m) {
        fail_msg("decode: %s", err->msg);
    }
    struct msm_factory_ctx ctx = {.stats = msm_stats, .listener_name = "t"};
    void *cfg = NULL;
    int rc = msm_hcm_ops.config_new(m, &ctx, &cfg, err);
    if (rc == 0) {
        /* The HCM's config is the first member of its private struct (config.c). */
        const struct msm_hcm_config *c = cfg;
        rc = c->n_upgrades + c->upgrades[0].n_filters * 100;
        msm_hcm_ops.config_free(cfg);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

#define FAULT                                                                                     \
    "{\"name\":\"envoy.filters.http.fault\",\"typed_config\":{\"@type\":"                         \
    "\"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\",\"abort\":{"        \
    "\"http_status\":418,\"percentage\":{\"numerator\":100}}}}"
#define ROUTER                                                                                    \
    "{\"name\":\"envoy.filters.http.router\",\"typed_config\":{\"@type\":"                        \
    "\"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}"

static void test_hcm_upgrade_filters_config(void **state)
{
    (void)state;
    msm_stats = msm_stats_store_new();
    struct msm_err err = {{0}};
    assert_int_equal(hcm_config("[{\"upgrade_type\":\"websocket\"}]", &err), 1);
    assert_int_equal(hcm_config("[{\"upgrade_type\":\"websocket\",\"filters\":[" FAULT "," ROUTER
                                "]},{\"upgrade_type\":\"CONNECT\"}]",
                                &err),
                     202);
    assert_true(hcm_config("[{\"upgrade_type\":\"websocket\",\"filters\":[" FAULT "]}]", &err) <
                0);
    assert_string_equal(err.msg, "upgrade_configs[0].filters: the last http filter must be a "
                                 "terminal filter (envoy.filters.http.router)");
    assert_true(hcm_config("[{\"upgrade_type\":\"CONNECT\"},{\"upgrade_type\":\"websocket\","
                           "\"filters\":[" ROUTER "," FAULT "]}]",
                           &err) < 0);
    assert_string_equal(err.msg, "upgrade_configs[1].filters[0] 'envoy.filters.http.router': "
                                 "terminal filter 'envoy.filters.http.router' must be the last "
                                 "http filter");
    assert_true(hcm_config("[{\"upgrade_type\":\"websocket\",\"filters\":[{\"name\":\"x\"},"
                           ROUTER "]}]",
                           &err) < 0);
    assert_string_equal(err.msg, "upgrade_configs[0].filters[0] 'x': unknown http filter 'x' "
                                 "(no typed_config)");
    msm_stats_store_free(msm_stats);
    msm_stats = NULL;
}

/* ---- route configurations ----------------------------------------------------------------- */

static const char *pick(const struct msm_route_config *rc, const char *method, const char *path)
{
    struct msm_hdrs *h = msm_hdrs_new();
    msm_hdrs_addz(h, ":method", method);
    if (path) {
        msm_hdrs_addz(h, ":path", path);
    }
    msm_hdrs_addz(h, ":authority", "x:443");
    const struct msm_route *r = msm_route_select(rc, h, 0);
    msm_hdrs_free(h);
    return r ? r->name : "";
}

static void test_routes(void **state)
{
    (void)state;
    struct msm_err err = {{0}};
    struct msm_route_config *rc = build(
        "{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":["
        "{\"name\":\"tunnel\",\"match\":{\"connect_matcher\":{}},"
        " \"route\":{\"cluster\":\"c\",\"upgrade_configs\":[{\"upgrade_type\":\"CONNECT\","
        "  \"connect_config\":{}},{\"upgrade_type\":\"WebSocket\",\"enabled\":false}]}},"
        "{\"name\":\"all\",\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"c\","
        " \"idle_timeout\":\"0s\"}}]}]}",
        &err);
    assert_non_null(rc);
    assert_string_equal(pick(rc, "CONNECT", NULL), "tunnel");
    assert_string_equal(pick(rc, "CONNECT", "/x"), "tunnel");
    assert_string_equal(pick(rc, "GET", "/x"), "all");
    const struct msm_route *t = &rc->vhosts[0].routes[0];
    const struct msm_route_upgrade *u = msm_route_upgrade_find(t, "connect");
    assert_non_null(u);
    assert_true(u->enabled && u->connect_terminate);
    u = msm_route_upgrade_find(t, "websocket");
    assert_non_null(u);
    assert_false(u->enabled || u->connect_terminate);
    assert_null(msm_route_upgrade_find(t, "h2c"));
    assert_false(t->has_idle_timeout);
    assert_true(rc->vhosts[0].routes[1].has_idle_timeout);
    assert_int_equal(rc->vhosts[0].routes[1].idle_timeout_ms, 0);
    msm_route_config_unref(rc);
    /* Without a connect_matcher route a CONNECT finds none. */
    rc = build("{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":["
               "{\"name\":\"all\",\"match\":{\"prefix\":\"\"},\"route\":{\"cluster\":\"c\"}}]}]}",
               &err);
    assert_non_null(rc);
    assert_string_equal(pick(rc, "CONNECT", NULL), "");
    msm_route_config_unref(rc);
    static const struct {
        const char *upgrades, *want;
    } bad[] = {
        {"[{\"upgrade_type\":\"websocket\",\"connect_config\":{}}]",
         "non-CONNECT upgrade type websocket has connect_config"},
        {"[{\"upgrade_type\":\"websocket\"},{\"upgrade_type\":\"WEBSOCKET\"}]",
         "duplicate upgrade WEBSOCKET"},
        {"[{\"upgrade_type\":\"\"}]", "upgrade_type: must not be empty"},
        {"[{\"upgrade_type\":\"CONNECT\",\"connect_config\":{\"allow_post\":true}}]",
         "connect_config.allow_post: not supported"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[512];
        snprintf(json, sizeof(json),
                 "{\"virtual_hosts\":[{\"name\":\"v\",\"domains\":[\"*\"],\"routes\":["
                 "{\"match\":{\"prefix\":\"/\"},\"route\":{\"cluster\":\"c\","
                 "\"upgrade_configs\":%s}}]}]}",
                 bad[i].upgrades);
        memset(&err, 0, sizeof(err));
        assert_null(build(json, &err));
        if (!strstr(err.msg, bad[i].want)) {
            fail_msg("case %zu: %s", i, err.msg);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h1_server_websocket),
        cmocka_unit_test(test_h1_server_connect),
        cmocka_unit_test(test_h1_server_upgrade_refused),
        cmocka_unit_test(test_h1_server_h2c_ignored),
        cmocka_unit_test(test_h1_client_websocket),
        cmocka_unit_test(test_h1_client_connect_and_refusals),
        cmocka_unit_test(test_tcp_tunnel),
        cmocka_unit_test(test_h2_extended_connect),
        cmocka_unit_test(test_h2_client_upgrade_as_extended_connect),
        cmocka_unit_test(test_h2_client_waits_for_settings),
        cmocka_unit_test(test_hcm_upgrade_filters_config),
        cmocka_unit_test(test_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
