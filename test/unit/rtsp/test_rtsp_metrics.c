/* RTSP per-session metrics (filters/network/rtsp_proxy/rtsp_metrics.c): a session's stats are
 * created with it, updated (packets, bytes, RTX, NACKed packets, receiver-report loss summed
 * over tracks, setup latency once), exported as msm_rtsp_session_* with the session's labels
 * (not interned: they go with the stat), listed for /rtsp/sessions, and removed from the store
 * with the last reference; the max_session_stats bound; two threads updating one session. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "filters/network/rtsp_proxy/rtsp_private.h"

struct fixture {
    struct msm_stats_store *st;
    struct msm_rtsp_config *cfg;
};

static int setup(void **state)
{
    struct fixture *f = MSM_NEW(struct fixture);
    f->st = msm_stats_store_new();
    struct msm_err err = {{0}};
    assert_int_equal(msm_stats_configure(f->st, NULL, NULL, 0, &err), 0);
    struct msm_rtsp_config *c = MSM_NEW(struct msm_rtsp_config);
    atomic_init(&c->refs, 1);
    c->stat_prefix = msm_xstrdup("rtsp.t.");
    c->store = f->st;
    msm_rtsp_stats_init(f->st, c->stat_prefix, &c->stats);
    c->max_session_stats = 2;
    f->cfg = c;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    msm_rtsp_config_unref(f->cfg);
    msm_stats_store_free(f->st);
    free(f);
    return 0;
}

static uint64_t val(struct fixture *f, const char *name)
{
    struct msm_stat *s = msm_stats_find(f->st, name);
    if (!s) {
        fail_msg("no stat %s", name);
    }
    return msm_stat_value(s);
}

#define C "rtsp.t.session.00ff.client.cam."

static void test_lifecycle(void **state)
{
    struct fixture *f = *state;
    struct rtsp_smetrics *m = rtsp_smetrics_new(f->cfg, RTSP_ROLE_CLIENT, "00ff", "cam", 100);
    assert_true(m->has_stats);
    assert_int_equal(val(f, "rtsp.t.sessions_tracked"), 1);
    assert_non_null(msm_stats_find(f->st, C "rtp_tx_packets"));
    assert_non_null(msm_stats_find(f->st, C "reported_lost"));
    assert_null(msm_stats_find(f->st, C "subscribers")); /* upstream only */
    rtsp_smetrics_set_address(m, "10.0.0.1:5000");
    rtsp_smetrics_add_transport(m, false);
    rtsp_smetrics_add_transport(m, true);
    /* updated */
    rtsp_smetrics_tx(m, false, 10, 1000, 2);
    rtsp_smetrics_tx(m, true, 1, 52, 0);
    rtsp_smetrics_rx(m, true, 2, 80, 0);
    rtsp_smetrics_rx(m, false, 1, 30, 0);
    assert_int_equal(val(f, C "rtp_tx_packets"), 10);
    assert_int_equal(val(f, C "rtp_tx_bytes"), 1000);
    assert_int_equal(val(f, C "retransmitted_packets"), 2);
    assert_int_equal(val(f, C "rtcp_tx_packets"), 1);
    assert_int_equal(val(f, C "rtcp_rx_bytes"), 80);
    assert_int_equal(val(f, C "rtp_rx_packets"), 1);
    struct msm_rtcp_summary s = {.reports = 1, .lost = 5, .fraction = 128, .jitter = 9000,
                                 .nack_packets = 3};
    rtsp_smetrics_feedback(m, 0, 90000, &s);
    struct msm_rtcp_summary s2 = {.reports = 1, .lost = 7, .fraction = 64, .jitter = 0};
    rtsp_smetrics_feedback(m, 1, 8000, &s2);
    rtsp_smetrics_feedback(m, 99, 8000, &s2); /* no such track: only NACKs would count */
    assert_int_equal(val(f, C "retransmissions_requested"), 3);
    assert_int_equal(val(f, C "reported_lost"), 12);
    assert_int_equal(val(f, C "reported_fraction_lost_permille"), 500);
    assert_int_equal(val(f, C "reported_jitter_us"), 100000);
    rtsp_smetrics_setup_done(m, 0.25);
    rtsp_smetrics_setup_done(m, 9.0); /* once */
    assert_int_equal(val(f, C "setup_latency_ms"), 250);
    /* exported as one family per metric, labels of its own */
    const struct msm_stat_export *e = msm_stat_export(msm_stats_find(f->st, C "rtp_tx_packets"));
    assert_string_equal(e->prom_name, "msm_rtsp_session_rtp_tx_packets");
    assert_string_equal(e->prom_labels, "msm_rtsp_prefix=\"t\",msm_rtsp_session=\"00ff\","
                                        "msm_rtsp_role=\"client\",msm_rtsp_stream=\"cam\"");
    assert_true(e->own_labels);
    e = msm_stat_export(f->cfg->stats.sessions_tracked);
    assert_false(e->own_labels);
    /* listed */
    json_t *list = json_array();
    rtsp_smetrics_admin(NULL, list);
    assert_int_equal(json_array_size(list), 1);
    json_t *o = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "00ff");
    assert_string_equal(json_string_value(json_object_get(o, "role")), "client");
    assert_string_equal(json_string_value(json_object_get(o, "stat_prefix")), "t");
    assert_string_equal(json_string_value(json_object_get(o, "transport")), "udp+tcp");
    assert_string_equal(json_string_value(json_object_get(o, "client_address")),
                        "10.0.0.1:5000");
    assert_int_equal(json_integer_value(json_object_get(o, "rtp_tx_packets")), 10);
    assert_int_equal(json_integer_value(json_object_get(o, "reported_lost")), 12);
    json_decref(list);
    /* removed with the last reference */
    rtsp_smetrics_ref(m);
    rtsp_smetrics_unref(m);
    assert_non_null(msm_stats_find(f->st, C "rtp_tx_packets"));
    rtsp_smetrics_unref(m);
    assert_null(msm_stats_find(f->st, C "rtp_tx_packets"));
    assert_null(msm_stats_find(f->st, C "reported_lost"));
    assert_int_equal(rtsp_smetrics_count(), 0);
    assert_int_equal(val(f, "rtsp.t.sessions_tracked"), 0);
    rtsp_smetrics_unref(NULL);
}

static void test_bound(void **state)
{
    struct fixture *f = *state;
    struct rtsp_smetrics *up = rtsp_smetrics_new(f->cfg, RTSP_ROLE_UPSTREAM, "up-1", "cam", 1);
    struct rtsp_smetrics *a = rtsp_smetrics_new(f->cfg, RTSP_ROLE_CLIENT, "a1", "cam", 1);
    struct rtsp_smetrics *b = rtsp_smetrics_new(f->cfg, RTSP_ROLE_CLIENT, "b2", "cam", 1);
    assert_true(up->has_stats);
    assert_true(a->has_stats);
    assert_false(b->has_stats);
    assert_non_null(msm_stats_find(f->st, "rtsp.t.session.up-1.upstream.cam.subscribers"));
    assert_null(msm_stats_find(f->st, "rtsp.t.session.up-1.upstream.cam.reported_lost"));
    assert_null(msm_stats_find(f->st, "rtsp.t.session.b2.client.cam.rtp_tx_packets"));
    assert_int_equal(val(f, "rtsp.t.sessions_untracked"), 1);
    assert_int_equal(rtsp_smetrics_count(), 3);
    rtsp_smetrics_tx(b, false, 1, 1, 0); /* without stats: a no-op */
    struct msm_rtcp_summary s = {.reports = 1, .nack_packets = 1};
    rtsp_smetrics_feedback(b, 0, 0, &s);
    rtsp_smetrics_setup_done(b, 1);
    json_t *list = json_array();
    rtsp_smetrics_admin(NULL, list);
    int with = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        with += json_is_true(json_object_get(json_array_get(list, i), "stats"));
    }
    assert_int_equal(with, 2);
    json_decref(list);
    /* a slot freed is taken by the next session */
    rtsp_smetrics_unref(a);
    struct rtsp_smetrics *c = rtsp_smetrics_new(f->cfg, RTSP_ROLE_CLIENT, "c3", "cam", 1);
    assert_true(c->has_stats);
    rtsp_smetrics_unref(c);
    rtsp_smetrics_unref(b);
    rtsp_smetrics_unref(up);
    assert_int_equal(val(f, "rtsp.t.sessions_tracked"), 0);
    assert_int_equal(rtsp_smetrics_count(), 0);
    /* 0: no per-session stats at all */
    f->cfg->max_session_stats = 0;
    struct rtsp_smetrics *d = rtsp_smetrics_new(f->cfg, RTSP_ROLE_CLIENT, "d4", "cam", 1);
    assert_false(d->has_stats);
    rtsp_smetrics_unref(d);
}

struct worker_arg {
    struct rtsp_smetrics *m;
    int n;
};

static void *worker(void *p)
{
    struct worker_arg *w = p;
    for (int i = 0; i < w->n; i++) {
        rtsp_smetrics_tx(w->m, false, 1, 100, i & 1);
        if (!(i & 1023)) {
            struct msm_rtcp_summary s = {.reports = 1, .lost = i, .nack_packets = 1};
            rtsp_smetrics_feedback(w->m, i & 1, 90000, &s);
        }
    }
    rtsp_smetrics_unref(w->m); /* the last one, whichever thread, removes the stats */
    return NULL;
}

static void test_two_threads(void **state)
{
    struct fixture *f = *state;
    struct rtsp_smetrics *m = rtsp_smetrics_new(f->cfg, RTSP_ROLE_CLIENT, "0t", "cam", 1);
    struct msm_stat *tx = msm_stat_ref(m->st.rtp_tx_packets);
    struct worker_arg a = {rtsp_smetrics_ref(m), 200000}, b = {rtsp_smetrics_ref(m), 200000};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, worker, &a);
    pthread_create(&tb, NULL, worker, &b);
    rtsp_smetrics_unref(m);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(msm_stat_value(tx), 400000);
    assert_int_equal(rtsp_smetrics_count(), 0);
    msm_stat_unref(tx); /* the reference this test kept to read the total */
    assert_null(msm_stats_find(f->st, "rtsp.t.session.0t.client.cam.rtp_tx_packets"));
    assert_int_equal(rtsp_smetrics_count(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
