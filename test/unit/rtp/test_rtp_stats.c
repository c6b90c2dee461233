/* RTP engine: RFC 3550 receiver statistics (sequence validation, loss, reordering, jitter),
 * RTCP receiver reports and their parsing, and port pairs from a range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "rtp/rtp.h"

static void feed(struct msm_rtp_rx *s, uint16_t seq, uint32_t ts, double now)
{
    struct msm_rtp_hdr h = {.pt = 96, .seq = seq, .ts = ts, .ssrc = 0x1234};
    msm_rtp_rx_update(s, &h, 100, now, 90000);
}

static void test_loss_and_reordering(void **state)
{
    (void)state;
    struct msm_rtp_rx s;
    memset(&s, 0, sizeof(s));
    /* 65530..65535, 0..9 across the wrap, with 3 lost and one swap */
    uint16_t seq = 65530;
    double t = 1.0;
    for (int i = 0; i < 16; i++, seq++, t += 0.01) {
        if (seq == 2 || seq == 3 || seq == 7) {
            continue;
        }
        if (seq == 5) {
            feed(&s, 6, 0, t);
            feed(&s, 5, 0, t);
            seq++;
            i++;
            continue;
        }
        feed(&s, seq, 0, t);
    }
    assert_int_equal(s.cycles, 65536);
    assert_int_equal(msm_rtp_rx_lost(&s), 3);
    assert_int_equal(s.reordered, 1);
    /* a restart: two sequential packets after a big jump re-base the source */
    feed(&s, 30000, 0, t);
    feed(&s, 30001, 0, t);
    assert_int_equal(s.base_seq, 30001);
}

static void test_jitter(void **state)
{
    (void)state;
    struct msm_rtp_rx s;
    memset(&s, 0, sizeof(s));
    /* perfectly paced 25 fps: jitter stays 0 */
    for (int i = 0; i < 50; i++) {
        feed(&s, (uint16_t)i, (uint32_t)(i * 3600), 10.0 + i * 0.04);
    }
    assert_int_equal(msm_rtp_rx_jitter(&s), 0);
    /* every other frame 10 ms late: jitter converges near 900 ticks (10 ms at 90 kHz) */
    for (int i = 50; i < 400; i++) {
        feed(&s, (uint16_t)i, (uint32_t)(i * 3600), 10.0 + i * 0.04 + (i % 2 ? 0.01 : 0));
    }
    assert_in_range(msm_rtp_rx_jitter(&s), 800, 950);
    assert_in_range(msm_rtp_rx_jitter_us(&s), 8800, 10600);
}

static void test_rr_roundtrip(void **state)
{
    (void)state;
    struct msm_rtp_rx s;
    memset(&s, 0, sizeof(s));
    for (int i = 0; i < 100; i++) {
        if (i % 10 != 3) {
            feed(&s, (uint16_t)i, 0, i * 0.01);
        }
    }
    uint8_t buf[128];
    size_t n = msm_rtcp_build_rr(buf, sizeof(buf), 0xabcdef01, "msm", &s, 2.0);
    assert_true(n > 0 && n % 4 == 0);
    assert_true(msm_rtcp_is(buf, n));
    int64_t lost;
    uint32_t jitter;
    assert_true(msm_rtcp_report_summary(buf, n, &lost, &jitter));
    assert_int_equal(lost, 10);
    assert_int_equal(buf[8 + 4], (10 * 256) / 99); /* fraction lost of the first interval */
    assert_int_equal(msm_rtcp_build_rr(buf, 10, 1, "msm", &s, 2.0), 0);
    assert_false(msm_rtcp_report_summary(buf, 3, &lost, &jitter));
}

static void test_port_pairs(void **state)
{
    (void)state;
    struct msm_rtp_port_range r;
    /* above the ephemeral range (32768-60999), so nothing else binds there by chance */
    uint32_t base = 61000 + (uint32_t)(getpid() % 700) * 6;
    msm_rtp_port_range_init(&r, base + 1, base + 6); /* rounded up: two pairs */
    assert_int_equal(msm_rtp_port_range_pairs(&r), 2);
    int a[2], b[2], c[2];
    uint16_t pa, pb, pc;
    assert_int_equal(msm_rtp_pair_open(&r, AF_INET, a, &pa), 0);
    assert_int_equal(pa % 2, 0);
    assert_int_equal(msm_rtp_pair_open(&r, AF_INET, b, &pb), 0);
    assert_int_not_equal(pa, pb);
    assert_int_equal(msm_rtp_pair_open(&r, AF_INET, c, &pc), MSM_ELIMIT);
    close(a[0]);
    close(a[1]);
    assert_int_equal(msm_rtp_pair_open(&r, AF_INET, c, &pc), 0);
    assert_int_equal(pc, pa);
    close(b[0]);
    close(b[1]);
    close(c[0]);
    close(c[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_and_reordering),
        cmocka_unit_test(test_jitter),
        cmocka_unit_test(test_rr_roundtrip),
        cmocka_unit_test(test_port_pairs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
