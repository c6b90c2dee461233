/* RTSP fan-out across workers: the single-producer single-consumer handoff ring of
 * rtsp_xworker.c (included to reach its statics): records that wrap with skip records,
 * batching by (mirror, track, rtcp), drops (never a wait) when full, and a producer and a
 * consumer thread at full speed (run it under TSan/ASan too). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "filters/network/rtsp_proxy/rtsp_xworker.c"

struct consumer {
    struct rtsp_wstate ws;
    uint32_t next_seq;  /* expected first 4 bytes of the next payload */
    uint64_t received;
    uint64_t batches;
    bool bad;
};

static void on_async_unused(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static void consumer_init(struct consumer *c)
{
    memset(c, 0, sizeof(*c));
    c->ws.loop = ev_loop_new(EVFLAG_AUTO);
    ev_async_init(&c->ws.async, on_async_unused);
    ev_async_start(c->ws.loop, &c->ws.async);
}

static void consumer_deinit(struct consumer *c)
{
    ev_async_stop(c->ws.loop, &c->ws.async);
    ev_loop_destroy(c->ws.loop);
}

static void ring_free(struct rtsp_ring *r)
{
    free(r->buf);
    free(r);
}

/* Payload i: 4-byte sequence number, then bytes (i + k) & 0xff, length 40 + (i * 37) % 1400. */
static size_t fill(uint8_t *b, uint32_t i)
{
    size_t len = 40 + (i * 37u) % 1400u;
    memcpy(b, &i, 4);
    for (size_t k = 4; k < len; k++) {
        b[k] = (uint8_t)(i + k);
    }
    return len;
}

static bool check(const uint8_t *b, size_t len, uint32_t *seq)
{
    uint32_t i;
    memcpy(&i, b, 4);
    if (len != 40 + (i * 37u) % 1400u) {
        return false;
    }
    for (size_t k = 4; k < len; k++) {
        if (b[k] != (uint8_t)(i + k)) {
            return false;
        }
    }
    *seq = i;
    return true;
}

/* Consumer callback: payloads in order (drops allowed: sequence numbers only increase), batches
 * of one (mirror, track, rtcp), mirror = track + 100. */
static void on_batch(void *ctx, uint64_t mirror, int track, bool rtcp, struct msm_udp_pkt *pk,
                     int n)
{
    struct consumer *c = ctx;
    c->batches++;
    if (n < 1 || n > MSM_UDP_BATCH || mirror != (uint64_t)track + 100 || rtcp != (track == 3)) {
        c->bad = true;
    }
    for (int i = 0; i < n; i++) {
        uint32_t seq;
        if (!check(pk[i].data, pk[i].len, &seq) || seq < c->next_seq) {
            c->bad = true;
            return;
        }
        c->next_seq = seq + 1;
        c->received++;
    }
}

static int push_one(struct rtsp_ring *r, uint32_t i, uint8_t *scratch)
{
    struct msm_udp_pkt pk;
    memset(&pk, 0, sizeof(pk));
    pk.data = scratch;
    pk.len = fill(scratch, i);
    int track = (int)(i / 50) % 4; /* runs of 50 packets per track */
    return ring_push(r, (uint64_t)track + 100, track, track == 3, &pk, 1);
}

static void test_wrap_and_batches(void **state)
{
    (void)state;
    struct consumer c;
    consumer_init(&c);
    struct rtsp_ring *r = ring_new(&c.ws);
    uint8_t buf[2048];
    uint32_t i = 0;
    /* ~6 times round the ring, drained every 700 packets (about a third of it) */
    for (int round = 0; round < 40; round++) {
        for (int k = 0; k < 700; k++, i++) {
            assert_int_equal(push_one(r, i, buf), 1);
        }
        assert_true(atomic_load(&r->woken));
        ring_drain(r, on_batch, &c);
        assert_false(atomic_load(&r->woken));
        assert_false(c.bad);
    }
    assert_int_equal(c.received, i);
    assert_true(atomic_load(&r->head) > 5ull * RING_BYTES);
    /* 50-packet runs per track: a batch never spans two, and is at most MSM_UDP_BATCH */
    assert_true(c.batches >= i / MSM_UDP_BATCH);
    ring_free(r);
    consumer_deinit(&c);
}

static void test_full_ring_drops_and_recovers(void **state)
{
    (void)state;
    struct consumer c;
    consumer_init(&c);
    struct rtsp_ring *r = ring_new(&c.ws);
    uint8_t buf[2048];
    uint32_t accepted = 0, i = 0;
    for (; i < 10000; i++) {
        accepted += (uint32_t)push_one(r, i, buf);
    }
    assert_true(accepted < i);       /* it filled up... */
    assert_true(accepted > 2000);    /* ...after holding about RING_BYTES of records */
    ring_drain(r, on_batch, &c);
    assert_false(c.bad);
    assert_int_equal(c.received, accepted);
    /* room again */
    for (uint32_t k = 0; k < 100; k++, i++) {
        assert_int_equal(push_one(r, i, buf), 1);
    }
    ring_drain(r, on_batch, &c);
    assert_false(c.bad);
    assert_int_equal(c.received, accepted + 100);
    ring_free(r);
    consumer_deinit(&c);
}

struct stress {
    struct rtsp_ring *r;
    atomic_bool done;
    uint32_t total, accepted;
};

static void *producer_main(void *arg)
{
    struct stress *st = arg;
    uint8_t buf[2048];
    for (uint32_t i = 0; i < st->total; i++) {
        st->accepted += (uint32_t)push_one(st->r, i, buf);
    }
    atomic_store(&st->done, true);
    return NULL;
}

static void test_producer_and_consumer_threads(void **state)
{
    (void)state;
    struct consumer c;
    consumer_init(&c);
    struct stress st = {.r = ring_new(&c.ws), .total = 300000};
    atomic_init(&st.done, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, producer_main, &st), 0);
    while (!atomic_load(&st.done)) {
        ring_drain(st.r, on_batch, &c);
    }
    pthread_join(th, NULL);
    ring_drain(st.r, on_batch, &c);
    assert_false(c.bad);
    assert_int_equal(c.received, st.accepted);
    assert_true(st.accepted > 0);
    assert_int_equal(atomic_load(&st.r->head), atomic_load(&st.r->tail));
    ring_free(st.r);
    consumer_deinit(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrap_and_batches),
        cmocka_unit_test(test_full_ring_drops_and_recovers),
        cmocka_unit_test(test_producer_and_consumer_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
