/* Timeout queues (src/event/tqueue.c): entries fire at their deadline in deadline order, a stop
 * or restart takes effect, an entry restarted from a past time keeps its deadline, a callback may
 * restart its own entry, and many distinct durations do not pile up queues. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ev.h>

#include "event/deferred.h"
#include "event/tqueue.h"

struct probe {
    struct msm_tq_entry e;
    double fired_at;
    int fired;
    int order;
    int restart_ms; /* restart once from the callback */
};

static int seq;

static void on_fire(struct ev_loop *loop, struct msm_tq_entry *e)
{
    struct probe *p = (struct probe *)(void *)e;
    p->fired++;
    p->fired_at = ev_now(loop);
    p->order = ++seq;
    assert_false(msm_tq_active(e));
    if (p->restart_ms) {
        int ms = p->restart_ms;
        p->restart_ms = 0;
        msm_tq_start(loop, e, (uint32_t)ms);
    }
}

static void on_stop_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    (void)w;
    ev_break(loop, EVBREAK_ALL);
}

/* Run the loop for <ms> of real time. */
static void run_for(struct ev_loop *loop, double ms)
{
    ev_timer t;
    ev_timer_init(&t, on_stop_timer, ms / 1000.0, 0);
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
}

static void test_deadlines_and_order(void **state)
{
    (void)state;
    struct ev_loop *loop = msm_loop_new(NULL, 0);
    struct probe a = {0}, b = {0}, c = {0}, d = {0};
    msm_tq_entry_init(&a.e, on_fire);
    msm_tq_entry_init(&b.e, on_fire);
    msm_tq_entry_init(&c.e, on_fire);
    msm_tq_entry_init(&d.e, on_fire);
    seq = 0;
    ev_now_update(loop);
    double t0 = ev_now(loop);
    msm_tq_start(loop, &a.e, 40);
    msm_tq_start(loop, &b.e, 20);
    msm_tq_start(loop, &c.e, 40);
    msm_tq_start(loop, &d.e, 40);
    assert_true(msm_tq_active(&a.e));
    msm_tq_stop(&c.e); /* stopped: never fires */
    assert_false(msm_tq_active(&c.e));
    msm_tq_stop(&a.e); /* the head goes: the lazy timer must still serve d on time */
    msm_tq_start(loop, &a.e, 40); /* restarted behind d */
    run_for(loop, 120);
    assert_int_equal(b.fired, 1);
    assert_int_equal(a.fired, 1);
    assert_int_equal(d.fired, 1);
    assert_int_equal(c.fired, 0);
    assert_true(b.order < d.order && d.order < a.order);
    /* Never early, and within the loop's granularity of the deadline. */
    assert_true(b.fired_at - t0 >= 0.020 - 1e-6 && b.fired_at - t0 < 0.060);
    assert_true(d.fired_at - t0 >= 0.040 - 1e-6 && d.fired_at - t0 < 0.080);
    msm_loop_free(loop);
}

static void test_restart_from_past_and_in_callback(void **state)
{
    (void)state;
    struct ev_loop *loop = msm_loop_new(NULL, 0);
    struct probe late = {0}, early = {0}, again = {0};
    msm_tq_entry_init(&late.e, on_fire);
    msm_tq_entry_init(&early.e, on_fire);
    msm_tq_entry_init(&again.e, on_fire);
    seq = 0;
    ev_now_update(loop);
    double t0 = ev_now(loop);
    msm_tq_start(loop, &late.e, 50);
    /* An idle timeout counted from an activity 30 ms ago: due before <late>, though queued
     * after it. */
    msm_tq_start_from(loop, &early.e, 50, t0 - 0.030);
    again.restart_ms = 30;
    msm_tq_start(loop, &again.e, 10);
    run_for(loop, 150);
    assert_int_equal(early.fired, 1);
    assert_int_equal(late.fired, 1);
    assert_int_equal(again.fired, 2);
    assert_true(early.fired_at - t0 >= 0.020 - 1e-6 && early.fired_at - t0 < 0.045);
    assert_true(early.order < late.order);
    assert_true(late.fired_at - t0 >= 0.050 - 1e-6);
    assert_true(again.fired_at - t0 >= 0.040 - 1e-6);
    msm_loop_free(loop);
}

static void test_many_durations(void **state)
{
    (void)state;
    struct ev_loop *loop = msm_loop_new(NULL, 0);
    struct probe p = {0};
    msm_tq_entry_init(&p.e, on_fire);
    /* Client-chosen timeouts (grpc-timeout): a new duration each time, one running at a time.
     * Empty queues are recycled; the last one still fires. */
    for (uint32_t ms = 100000; ms < 110000; ms++) {
        msm_tq_start(loop, &p.e, ms);
    }
    msm_tq_start(loop, &p.e, 5);
    run_for(loop, 60);
    assert_int_equal(p.fired, 1);
    /* Nothing queued: no timer keeps the loop alive (the guard does not count, ev_unref). */
    ev_timer guard;
    ev_timer_init(&guard, on_stop_timer, 1.0, 0);
    ev_timer_start(loop, &guard);
    ev_unref(loop);
    ev_now_update(loop);
    double t0 = ev_now(loop);
    ev_run(loop, 0);
    ev_now_update(loop);
    assert_true(ev_now(loop) - t0 < 0.5);
    ev_ref(loop);
    ev_timer_stop(loop, &guard);
    msm_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadlines_and_order),
        cmocka_unit_test(test_restart_from_past_and_in_callback),
        cmocka_unit_test(test_many_durations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
