/* TLS read-ahead on a real connection (src/tls/tls_socket.c with src/net/conn.c and the loop):
 * one read() takes every record the socket holds, so records that OpenSSL buffered never make
 * the fd readable again and the connection must drain them itself. A server connection with
 * the TLS transport, and a peer driven by hand whose records are cut into segments at will:
 * several records in one segment and then nothing; records that came with the handshake's last
 * flight while reading is paused (delivered on resume, no busy loop while paused); an
 * incomplete record (no busy loop, the rest arrives later); data then close_notify in one
 * segment; a TLS 1.3 key update ahead of data; one record per flush of several writes, and
 * its retry after WANT_WRITE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "event/deferred.h"
#include "net/conn.h"
#include "test/unit/tls/certs.h"
#include "tls/secrets.h"
#include "tls/tls_private.h"

#define T_DOWN "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

static struct test_cert ca, server;
static struct msm_tls_factory *sf;
static SSL_CTX *peer_ctx;

struct fixture {
    struct ev_loop *loop;
    struct msm_conn *c; /* NULL once closed */
    SSL *peer;
    int pfd;
    BIO *out; /* the peer's records, sent by hand (send_out) */
    char got[65536];
    size_t n_got;
    int n_reads;
    bool connected, closed, pause_on_connect, echo, end;
};

static struct fixture *fx;

static void on_read(struct msm_conn *c, void *ctx, bool end)
{
    (void)ctx;
    fx->end |= end;
    fx->n_reads++;
    size_t n = c->in.len;
    if (fx->n_got + n < sizeof(fx->got)) {
        msm_buf_copyout(&c->in, 0, fx->got + fx->n_got, n);
        fx->n_got += n;
    }
    if (fx->echo) {
        /* Three writes in one round: one flush, one record. */
        struct msm_buf b;
        msm_buf_init(&b);
        for (int i = 0; i < 3; i++) {
            msm_buf_append(&b, "ab", 2);
            msm_conn_write(c, &b, false);
        }
        msm_buf_deinit(&b);
    }
    msm_buf_drain(&c->in, n);
}

static void on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev)
{
    (void)ctx;
    if (ev == MSM_CONN_CONNECTED) {
        fx->connected = true;
        if (fx->pause_on_connect) {
            msm_conn_read_disable(c, true);
        }
    } else {
        fx->closed = true;
        fx->c = NULL;
    }
}

static const struct msm_conn_handler handler = {.on_read = on_read, .on_event = on_event};

static int setup(void **state)
{
    (void)state;
    msm_stats = msm_stats_store_new();
    msm_secrets = msm_secrets_new(msm_stats);
    ca = test_cert_new(NULL, "root", NULL, true);
    server = test_cert_new(&ca, "server", "DNS:server.example.com", false);
    json_t *j = json_pack(
        "{s:s, s:{s:s, s:{s:[{s:{s:s}, s:{s:s}}]}}}", "name", "envoy.transport_sockets.tls",
        "typed_config", "@type", T_DOWN, "common_tls_context", "tls_certificates",
        "certificate_chain", "inline_string", server.cert_pem, "private_key", "inline_string",
        server.key_pem);
    struct msm_err err = {{0}};
    ProtobufCMessage *m = msm_pbjson_decode(msm_types_find("envoy.config.core.v3.TransportSocket"),
                                            j, NULL, &err);
    json_decref(j);
    assert_non_null(m);
    assert_int_equal(msm_tls_factory_from_proto(m, true, "ra.", "test", &sf, &err), 0);
    protobuf_c_message_free_unpacked(m, NULL);
    peer_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(peer_ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(peer_ctx, SSL_VERIFY_NONE, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    SSL_CTX_free(peer_ctx);
    msm_tls_factory_unref(sf);
    test_cert_free(&ca);
    test_cert_free(&server);
    msm_secrets_free(msm_secrets);
    msm_stats_store_free(msm_stats);
    msm_stats = NULL;
    return 0;
}

/* One loop iteration without blocking: a connection that kept feeding itself reads would
 * never return (alarm() ends the test then). */
static void turn(struct fixture *f)
{
    ev_run(f->loop, EVRUN_NOWAIT);
}

/* The peer's handshake against the connection, then its records go to f->out. */
static void start(struct fixture *f, bool pause_on_connect, const char *with_finished)
{
    memset(f, 0, sizeof(*f));
    fx = f;
    f->pause_on_connect = pause_on_connect;
    f->loop = msm_loop_new(NULL, 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct msm_address a;
    memset(&a, 0, sizeof(a));
    a.sa.ss_family = AF_UNIX;
    a.len = sizeof(sa_family_t);
    f->c = msm_conn_accepted(f->loop, sv[0], &a, &a);
    msm_conn_set_transport(f->c, msm_tls_transport_new(sf), 0);
    msm_conn_set_handler(f->c, &handler, NULL);
    msm_conn_start_reading(f->c);
    f->pfd = sv[1];
    f->peer = SSL_new(peer_ctx);
    SSL_set_fd(f->peer, f->pfd);
    SSL_set_connect_state(f->peer);
    int r = 0;
    for (int i = 0; i < 200 && r != 1; i++) {
        r = SSL_do_handshake(f->peer);
        if (r == 1 && with_finished) {
            /* Application data right behind the Finished, before the server read either. */
            size_t w;
            assert_int_equal(SSL_write_ex(f->peer, with_finished, strlen(with_finished), &w),
                             1);
        }
        turn(f);
    }
    assert_int_equal(r, 1);
    for (int i = 0; i < 20 && !f->connected; i++) {
        turn(f);
    }
    assert_true(f->connected);
    f->out = BIO_new(BIO_s_mem());
    BIO_up_ref(f->out);
    SSL_set0_wbio(f->peer, f->out);
}

/* One SSL_read by the peer, turning the proxy's loop until a record arrives; its length. */
static size_t peer_read(struct fixture *f, char *buf, size_t cap)
{
    size_t n = 0;
    int r = 0;
    for (int i = 0; i < 100 && r != 1; i++) {
        r = SSL_read_ex(f->peer, buf, cap, &n);
        if (r != 1) {
            turn(f);
        }
    }
    assert_int_equal(r, 1);
    return n;
}

static void finish(struct fixture *f)
{
    if (f->c) {
        msm_conn_close(f->c, MSM_CLOSE_NOFLUSH);
    }
    SSL_free(f->peer);
    BIO_free(f->out);
    close(f->pfd);
    msm_loop_free(f->loop);
}

static void record(struct fixture *f, const char *msg)
{
    size_t w;
    assert_int_equal(SSL_write_ex(f->peer, msg, strlen(msg), &w), 1);
}

/* Send <n> bytes of the peer's pending records (all: n = 0) in one write(). */
static void send_out(struct fixture *f, size_t n)
{
    char buf[8192];
    size_t l = n ? n : (size_t)BIO_pending(f->out);
    assert_true(l <= sizeof(buf));
    assert_int_equal(BIO_read(f->out, buf, (int)l), (int)l);
    assert_int_equal(write(f->pfd, buf, l), (ssize_t)l);
}

static void run_until_got(struct fixture *f, const char *want)
{
    for (int i = 0; i < 50 && (f->n_got != strlen(want) || memcmp(f->got, want, f->n_got)); i++) {
        ev_run(f->loop, EVRUN_ONCE); /* the fd must be readable, or records fed */
        if (f->n_got == strlen(want)) {
            break;
        }
        usleep(1000);
    }
    assert_int_equal(f->n_got, strlen(want));
    assert_memory_equal(f->got, want, f->n_got);
}

/* Several records in one segment, then nothing: one read takes them all, all are delivered. */
static void test_records_in_one_segment(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, false, NULL);
    record(&f, "one,");
    record(&f, "two,");
    record(&f, "three,");
    record(&f, "four");
    send_out(&f, 0);
    ev_run(f.loop, EVRUN_ONCE);
    assert_int_equal(f.n_got, strlen("one,two,three,four"));
    assert_memory_equal(f.got, "one,two,three,four", f.n_got);
    assert_int_equal(f.n_reads, 1);
    finish(&f);
}

/* Data that came with the handshake's last flight sits in OpenSSL's buffer while the handler
 * keeps reading paused: nothing is delivered, the loop does not spin, and resuming delivers
 * it without the fd becoming readable again. */
static void test_paused_then_resumed(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, true, "early data");
    for (int i = 0; i < 10; i++) {
        turn(&f);
    }
    assert_int_equal(f.n_got, 0);
    char probe;
    assert_int_equal(recv(f.c->fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT), -1); /* all read ahead */
    msm_conn_read_disable(f.c, false);
    turn(&f);
    assert_int_equal(f.n_got, strlen("early data"));
    assert_memory_equal(f.got, "early data", f.n_got);
    finish(&f);
}

/* A whole record and half of the next: the first is delivered, the half waits in OpenSSL's
 * buffer without a busy loop (also across a pause and resume), the rest completes it. */
static void test_incomplete_record(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, false, NULL);
    record(&f, "whole");
    size_t first = (size_t)BIO_pending(f.out);
    record(&f, "split record");
    size_t second = (size_t)BIO_pending(f.out) - first;
    send_out(&f, first + second / 2);
    run_until_got(&f, "whole");
    msm_conn_read_disable(f.c, true);
    msm_conn_read_disable(f.c, false);
    for (int i = 0; i < 10; i++) {
        turn(&f); /* would never return if the half record were fed as readable */
    }
    assert_int_equal(f.n_got, strlen("whole"));
    send_out(&f, 0);
    run_until_got(&f, "wholesplit record");
    finish(&f);
}

/* Data and close_notify in one segment, the socket left open: both are seen (the connection
 * closes; with half-close it stays open for writing). */
static void test_data_then_close_notify(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, false, NULL);
    record(&f, "last words");
    assert_true(SSL_shutdown(f.peer) >= 0);
    send_out(&f, 0);
    for (int i = 0; i < 5 && !f.closed; i++) {
        ev_run(f.loop, EVRUN_ONCE);
    }
    assert_int_equal(f.n_got, strlen("last words"));
    assert_true(f.closed);
    finish(&f);

    /* Half-close (TCP proxy): the end of the peer's stream is delivered with its data, and
     * the connection still writes. */
    start(&f, false, NULL);
    msm_conn_enable_half_close(f.c, true);
    record(&f, "half");
    assert_true(SSL_shutdown(f.peer) >= 0);
    send_out(&f, 0);
    for (int i = 0; i < 5 && !f.end; i++) {
        ev_run(f.loop, EVRUN_ONCE);
    }
    assert_true(f.end && !f.closed);
    assert_int_equal(f.n_got, strlen("half"));
    for (int i = 0; i < 10; i++) {
        turn(&f); /* no read is fed after the end */
    }
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_append(&b, "reply", 5);
    msm_conn_write(f.c, &b, false);
    msm_buf_deinit(&b);
    char buf[16];
    peer_read(&f, buf, sizeof(buf));
    assert_memory_equal(buf, "reply", 5);
    finish(&f);
}

/* A TLS 1.3 key update (the peer asks for ours too) ahead of data in one segment; then data
 * both ways under the new keys. */
static void test_key_update(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, false, NULL);
    assert_int_equal(SSL_key_update(f.peer, SSL_KEY_UPDATE_REQUESTED), 1);
    record(&f, "after update");
    send_out(&f, 0);
    run_until_got(&f, "after update");
    f.echo = true;
    record(&f, "+");
    send_out(&f, 0);
    run_until_got(&f, "after update+");
    /* The peer reads our key update and the echo: one record for the three writes. */
    char buf[64];
    size_t n = peer_read(&f, buf, sizeof(buf));
    assert_int_equal(n, 6);
    assert_memory_equal(buf, "ababab", 6);
    finish(&f);
}

/* Views of the write buffer gathered into one record, the socket full (WANT_WRITE), then the
 * tail view grows past what is gathered: the retry still passes the failed call's bytes (else
 * OpenSSL fails it: bad write retry), and the peer gets the exact byte stream. */
static void test_gathered_write_retry(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, false, NULL);
    int small = 4096;
    setsockopt(f.c->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(f.pfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    static char want[1 << 20], got[1 << 20];
    size_t n_want = 0, n_got = 0;
    struct msm_conn *c = f.c;
    ssize_t w = 0;
    for (int i = 0; i < 10000; i++) {
        /* Two views: 300 bytes, then 1000 in a block of their own. */
        struct msm_buf a, b;
        msm_buf_init(&a);
        msm_buf_init(&b);
        char chunk[1000];
        memset(chunk, 'a' + i % 26, sizeof(chunk));
        msm_buf_append(&a, chunk, 300);
        size_t avail;
        memcpy(msm_buf_reserve(&b, MSM_BUF_BLOCK, &avail), chunk, 1000);
        msm_buf_commit(&b, 1000);
        msm_buf_move(&a, &b);
        memcpy(want + n_want, chunk, 300);
        memcpy(want + n_want + 300, chunk, 1000);
        n_want += 1300;
        msm_buf_move(&c->out, &a);
        msm_buf_deinit(&a);
        msm_buf_deinit(&b);
        w = c->tr->ops->write(c->tr, c);
        if (c->out.len) {
            break;
        }
    }
    assert_int_equal(w, -EAGAIN);
    assert_int_equal(c->out.len, 1300);
    char tail[9000];
    memset(tail, 'z', sizeof(tail));
    msm_buf_append(&c->out, tail, sizeof(tail)); /* the 1000-byte view becomes 10000 */
    struct iovec v[4];
    assert_int_equal(msm_buf_iov(&c->out, v, 4), 2);
    assert_int_equal(v[1].iov_len, 10000);
    memcpy(want + n_want, tail, sizeof(tail));
    n_want += sizeof(tail);
    for (int i = 0; i < 100000 && (n_got < n_want || c->out.len); i++) {
        if (c->out.len) {
            w = c->tr->ops->write(c->tr, c);
            assert_true(w >= 0 || w == -EAGAIN);
        }
        size_t r = 0;
        if (SSL_read_ex(f.peer, got + n_got, sizeof(got) - n_got, &r) == 1) {
            n_got += r;
        }
    }
    assert_int_equal(n_got, n_want);
    assert_memory_equal(got, want, n_want);
    finish(&f);
}

int main(void)
{
    alarm(30);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_in_one_segment),
        cmocka_unit_test(test_paused_then_resumed),
        cmocka_unit_test(test_incomplete_record),
        cmocka_unit_test(test_data_then_close_notify),
        cmocka_unit_test(test_key_update),
        cmocka_unit_test(test_gathered_write_retry),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
