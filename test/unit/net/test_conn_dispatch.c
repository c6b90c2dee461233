/* Connection dispatch (src/event/deferred.c, src/net/conn.c): connections made ready in one poll
 * are served in the order they became ready (libev alone would serve them last-in first-out),
 * writes made during a round of callbacks leave together after it (unless the connection asked
 * for immediate writes), a hard close still sends
 * what the round wrote, and nothing is deferred outside a round; write interest is armed only for
 * what a flush left, and writes of many views arrive whole and in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "event/deferred.h"
#include "net/conn.h"

#define N 6

struct fixture {
    struct ev_loop *loop;
    struct msm_conn *c[N];
    int peer[N];
    int order[N * 4];
    int n_order;
    size_t out_after_write[N]; /* c->out.len right after the handler's write */
};

static struct fixture *fx;

static int index_of(struct msm_conn *c)
{
    for (int i = 0; i < N; i++) {
        if (fx->c[i] == c) {
            return i;
        }
    }
    return -1;
}

/* Echo what arrived, twice (two writes: coalesced into one flush). */
static void on_read(struct msm_conn *c, void *ctx, bool end)
{
    (void)ctx;
    (void)end;
    int i = index_of(c);
    fx->order[fx->n_order++] = i;
    struct msm_buf a, b;
    msm_buf_init(&a);
    msm_buf_init(&b);
    msm_buf_append(&a, "head:", 5);
    msm_buf_move(&b, &c->in);
    msm_conn_write(c, &a, false);
    msm_conn_write(c, &b, false);
    fx->out_after_write[i] = c->out.len;
    msm_buf_deinit(&a);
    msm_buf_deinit(&b);
}

static void on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev)
{
    (void)c;
    (void)ctx;
    (void)ev;
}

static const struct msm_conn_handler handler = {.on_read = on_read, .on_event = on_event};

static void setup(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    fx = f;
    f->loop = msm_loop_new(NULL, 0);
    assert_non_null(f->loop);
    struct msm_address a;
    memset(&a, 0, sizeof(a));
    a.sa.ss_family = AF_UNIX;
    a.len = sizeof(sa_family_t);
    for (int i = 0; i < N; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        f->c[i] = msm_conn_accepted(f->loop, sv[0], &a, &a);
        msm_conn_set_handler(f->c[i], &handler, NULL);
        msm_conn_start_reading(f->c[i]);
        f->peer[i] = sv[1];
    }
    ev_run(f->loop, EVRUN_NOWAIT); /* the watchers are armed */
}

static void teardown(struct fixture *f)
{
    for (int i = 0; i < N; i++) {
        if (f->c[i]) {
            msm_conn_close(f->c[i], MSM_CLOSE_NOFLUSH);
        }
        close(f->peer[i]);
    }
    msm_loop_free(f->loop);
}

/* Peers write "m<i>" in the order ready[], all before the loop polls. */
static const int ready[N] = {3, 0, 5, 1, 4, 2};

static void make_ready(struct fixture *f)
{
    for (int k = 0; k < N; k++) {
        char m[8];
        int n = snprintf(m, sizeof(m), "m%d", ready[k]);
        assert_int_equal(write(f->peer[ready[k]], m, (size_t)n), n);
    }
}

/* Every connection's echo ("head:" then what it read) reached its peer; nothing is queued. */
static void expect_echoes(struct fixture *f)
{
    for (int i = 0; i < N; i++) {
        assert_int_equal(f->c[i]->out.len, 0);
        char got[32] = {0};
        char want[32];
        snprintf(want, sizeof(want), "head:m%d", i);
        assert_int_equal(read(f->peer[i], got, sizeof(got) - 1), (ssize_t)strlen(want));
        assert_string_equal(got, want);
    }
}

static void test_readiness_order_and_coalesced_writes(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    make_ready(&f);
    ev_run(f.loop, EVRUN_ONCE);
    assert_int_equal(f.n_order, N);
    for (int k = 0; k < N; k++) {
        assert_int_equal(f.order[k], ready[k]);
        /* Both writes were still queued when the handler returned: one flush after the round. */
        assert_int_equal(f.out_after_write[ready[k]], 5 + 2);
    }
    expect_echoes(&f);
    teardown(&f);
}

/* msm_conn_write_now (tcp_proxy's connections): in a round, each write leaves at once, so a
 * connection served early in the round does not wait for the others' reads; order unchanged. */
static void test_write_now_is_not_coalesced(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    for (int i = 0; i < N; i++) {
        msm_conn_write_now(f.c[i], i % 2 == 0);
    }
    make_ready(&f);
    ev_run(f.loop, EVRUN_ONCE);
    assert_int_equal(f.n_order, N);
    for (int k = 0; k < N; k++) {
        int i = ready[k];
        assert_int_equal(f.order[k], i);
        /* Even-numbered: already sent when the handler returned; odd: coalesced as before. */
        assert_int_equal(f.out_after_write[i], i % 2 == 0 ? 0 : 5 + 2);
    }
    expect_echoes(&f);
    teardown(&f);
}

/* A write then a hard close in the same round: the bytes still leave before the close. */
static void on_read_close(struct msm_conn *c, void *ctx, bool end)
{
    (void)ctx;
    (void)end;
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_move(&b, &c->in);
    msm_conn_write(c, &b, false);
    msm_buf_deinit(&b);
    msm_conn_close(c, MSM_CLOSE_NOFLUSH);
    fx->c[index_of(c)] = NULL;
}

static const struct msm_conn_handler handler_close = {.on_read = on_read_close,
                                                      .on_event = on_event};

static void test_hard_close_sends_the_rounds_writes(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    msm_conn_set_handler(f.c[0], &handler_close, NULL);
    assert_int_equal(write(f.peer[0], "bye", 3), 3);
    ev_run(f.loop, EVRUN_ONCE);
    assert_null(f.c[0]);
    char got[8] = {0};
    assert_int_equal(read(f.peer[0], got, sizeof(got)), 3);
    assert_string_equal(got, "bye");
    assert_int_equal(read(f.peer[0], got, sizeof(got)), 0); /* then the close */
    teardown(&f);
}

/* An event fed by work queued for the end of the round (a TLS connection whose decrypted
 * records do not make the fd readable again) runs before the loop can block. Regression: it
 * waited for the next poll, and a WebSocket through two mTLS sidecars stalled. */
static ev_timer probe;
static int probe_runs;
static void on_probe(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    probe_runs++;
}

static void on_read_feed(struct msm_conn *c, void *ctx, bool end)
{
    (void)ctx;
    (void)end;
    msm_buf_drain(&c->in, c->in.len);
    ev_feed_event(c->loop, &probe, EV_TIMER);
}

static const struct msm_conn_handler handler_feed = {.on_read = on_read_feed,
                                                     .on_event = on_event};

static void test_event_fed_by_queued_work_runs_in_the_round(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    ev_timer_init(&probe, on_probe, 3600, 0);
    probe_runs = 0;
    msm_conn_set_handler(f.c[1], &handler_feed, NULL);
    assert_int_equal(write(f.peer[1], "x", 1), 1);
    ev_run(f.loop, EVRUN_ONCE); /* one poll, one round: the fed event must not wait for more */
    assert_int_equal(probe_runs, 1);
    teardown(&f);
}

/* Outside a round (start-up and shutdown paths) a write leaves at once. */
static void test_write_outside_a_round_is_immediate(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_append(&b, "now", 3);
    msm_conn_write(f.c[2], &b, false);
    msm_buf_deinit(&b);
    assert_int_equal(f.c[2]->out.len, 0);
    char got[8] = {0};
    assert_int_equal(read(f.peer[2], got, sizeof(got)), 3);
    teardown(&f);
}

/* update_io while the round's flush is queued (a handler pausing or resuming reads after its
 * write) arms no write interest: the flush writes, then asks for what is left. */
static int events_in_round;

static void on_read_resume(struct msm_conn *c, void *ctx, bool end)
{
    (void)ctx;
    (void)end;
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_move(&b, &c->in);
    msm_conn_write(c, &b, false);
    msm_buf_deinit(&b);
    msm_conn_read_disable(c, true);
    msm_conn_read_disable(c, false);
    events_in_round = c->io.events & (EV_READ | EV_WRITE);
}

static const struct msm_conn_handler handler_resume = {.on_read = on_read_resume,
                                                       .on_event = on_event};

static void test_queued_flush_arms_no_write_interest(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    msm_conn_set_handler(f.c[4], &handler_resume, NULL);
    assert_int_equal(write(f.peer[4], "ping", 4), 4);
    ev_run(f.loop, EVRUN_ONCE);
    assert_int_equal(events_in_round, EV_READ);
    assert_int_equal(f.c[4]->out.len, 0);
    assert_int_equal(f.c[4]->io.events & (EV_READ | EV_WRITE), EV_READ);
    char got[8] = {0};
    assert_int_equal(read(f.peer[4], got, sizeof(got)), 4);
    assert_string_equal(got, "ping");
    teardown(&f);
}

/* A flush the socket cannot take at once leaves the rest with write interest armed; it all
 * arrives, in order, as the peer reads. */
#define BIG (4 << 20)

static void on_read_big(struct msm_conn *c, void *ctx, bool end)
{
    (void)ctx;
    (void)end;
    msm_buf_drain(&c->in, c->in.len);
    static char chunk[65536];
    struct msm_buf b;
    msm_buf_init(&b);
    for (size_t off = 0; off < BIG; off += sizeof(chunk)) {
        for (size_t k = 0; k < sizeof(chunk); k++) {
            chunk[k] = (char)((off + k) % 251);
        }
        msm_buf_append(&b, chunk, sizeof(chunk));
    }
    msm_conn_write(c, &b, false);
    msm_buf_deinit(&b);
}

static const struct msm_conn_handler handler_big = {.on_read = on_read_big,
                                                    .on_event = on_event};

static void test_partial_flush_arms_write_interest(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    msm_conn_set_handler(f.c[5], &handler_big, NULL);
    assert_int_equal(write(f.peer[5], "go", 2), 2);
    ev_run(f.loop, EVRUN_ONCE);
    assert_true(f.c[5]->out.len > 0);
    assert_true(f.c[5]->io.events & EV_WRITE);
    static char got[65536];
    size_t total = 0;
    for (int spins = 0; total < BIG && spins < 100000; spins++) {
        ssize_t n = read(f.peer[5], got, sizeof(got));
        if (n > 0) {
            for (ssize_t k = 0; k < n; k++) {
                assert_int_equal((unsigned char)got[k], (total + (size_t)k) % 251);
            }
            total += (size_t)n;
        }
        ev_run(f.loop, EVRUN_NOWAIT);
    }
    assert_int_equal(total, BIG);
    assert_int_equal(f.c[5]->out.len, 0);
    assert_int_equal(f.c[5]->io.events & (EV_READ | EV_WRITE), EV_READ);
    teardown(&f);
}

/* Writes of many views, below, at and above the size sent from one copy, arrive whole and in
 * order. */
static void test_views_leave_in_order(void **state)
{
    (void)state;
    static const size_t sizes[] = {7, 1000, 16383, 16384, 16385, 40000};
    for (size_t t = 0; t < sizeof(sizes) / sizeof(sizes[0]); t++) {
        struct fixture f;
        setup(&f);
        size_t want = sizes[t];
        struct msm_buf out;
        msm_buf_init(&out);
        size_t off = 0;
        for (int v = 0; off < want; v++) {
            size_t n = want - off < 97 + (size_t)v * 13 ? want - off : 97 + (size_t)v * 13;
            char piece[1024];
            for (size_t k = 0; k < n; k++) {
                piece[k] = (char)((off + k) % 241);
            }
            struct msm_buf one;
            msm_buf_init(&one);
            msm_buf_append(&one, piece, n);
            msm_buf_move(&out, &one); /* a view of its own block */
            msm_buf_deinit(&one);
            off += n;
        }
        msm_conn_write(f.c[3], &out, false);
        msm_buf_deinit(&out);
        assert_int_equal(f.c[3]->out.len, 0);
        static char got[65536];
        size_t total = 0;
        ssize_t n;
        while (total < want && (n = read(f.peer[3], got + total, sizeof(got) - total)) > 0) {
            total += (size_t)n;
        }
        assert_int_equal(total, want);
        for (size_t k = 0; k < want; k++) {
            assert_int_equal((unsigned char)got[k], k % 241);
        }
        teardown(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readiness_order_and_coalesced_writes),
        cmocka_unit_test(test_write_now_is_not_coalesced),
        cmocka_unit_test(test_hard_close_sends_the_rounds_writes),
        cmocka_unit_test(test_write_outside_a_round_is_immediate),
        cmocka_unit_test(test_event_fed_by_queued_work_runs_in_the_round),
        cmocka_unit_test(test_queued_flush_arms_no_write_interest),
        cmocka_unit_test(test_partial_flush_arms_write_interest),
        cmocka_unit_test(test_views_leave_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
