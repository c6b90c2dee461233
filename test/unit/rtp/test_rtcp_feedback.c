/* RTP engine, feedback and retransmissions (src/rtp/rtcp.c): RTCP compound summaries (report
 * blocks, RFC 4585 generic NACKs with PID + BLP), their bounds checks on lying lengths and
 * padding, NACKs re-issued under our SSRC, RTX payload type sets (RFC 4588), and the SDP
 * attributes that announce them (filters/network/rtsp_proxy/rtsp_sdp.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "filters/network/rtsp_proxy/rtsp_sdp.h"
#include "rtp/rtp.h"

static size_t put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return 4;
}

/* A generic NACK with <n> FCIs (pid[i], blp[i]). */
static size_t nack(uint8_t *p, uint32_t sender, uint32_t media, const uint16_t *pid,
                   const uint16_t *blp, int n)
{
    p[0] = 0x81;
    p[1] = 205;
    p[2] = 0;
    p[3] = (uint8_t)(2 + n);
    size_t k = 4;
    k += put32(p + k, sender);
    k += put32(p + k, media);
    for (int i = 0; i < n; i++) {
        k += put32(p + k, (uint32_t)pid[i] << 16 | blp[i]);
    }
    return k;
}

/* An RR with one block: fraction, cumulative lost, jitter. */
static size_t rr(uint8_t *p, uint8_t fraction, int32_t lost, uint32_t jitter)
{
    memset(p, 0, 32);
    p[0] = 0x81;
    p[1] = 201;
    p[3] = 7;
    put32(p + 4, 0xabc);
    put32(p + 8, 0x1234);
    put32(p + 12, (uint32_t)fraction << 24 | ((uint32_t)lost & 0xffffff));
    put32(p + 20, jitter);
    return 32;
}

static void test_nack_summary(void **state)
{
    (void)state;
    uint8_t b[256];
    uint16_t pid[3] = {100, 65535, 7}, blp[3] = {0x0005, 0xffff, 0};
    size_t n = rr(b, 64, -3, 900);
    n += nack(b + n, 0xabc, 0x1234, pid, blp, 3);
    struct msm_rtcp_summary s;
    assert_true(msm_rtcp_summarize(b, n, &s));
    assert_int_equal(s.reports, 1);
    assert_int_equal(s.lost, -3); /* 24-bit signed */
    assert_int_equal(s.fraction, 64);
    assert_int_equal(s.jitter, 900);
    assert_int_equal(s.nacks, 3);
    assert_int_equal(s.nack_packets, 3 + 17 + 1);
    /* FMT other than 1 (e.g. TMMBR, FMT 3) is no NACK; PT 206 (PSFB) neither */
    b[32] = 0x83;
    assert_true(msm_rtcp_summarize(b, n, &s));
    assert_int_equal(s.nack_packets, 0);
    b[32] = 0x81;
    b[33] = 206;
    assert_true(msm_rtcp_summarize(b, n, &s));
    assert_int_equal(s.nacks, 0);
    /* not RTCP */
    assert_false(msm_rtcp_summarize((const uint8_t *)"\x80\x60\x00\x01\x00\x00\x00\x00", 8, &s));
    assert_int_equal(s.nack_packets, 0);
}

static void test_nack_bounds(void **state)
{
    (void)state;
    uint8_t b[64];
    uint16_t pid[2] = {1, 2}, blp[2] = {1, 3};
    size_t n = nack(b, 1, 2, pid, blp, 2);
    struct msm_rtcp_summary s;
    /* every truncation: a packet whose length runs past the end is not read at all */
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *c = malloc(cut ? cut : 1);
        memcpy(c, b, cut);
        msm_rtcp_summarize(c, cut, &s);
        assert_int_equal(s.nack_packets, 0);
        uint8_t out[64];
        assert_int_equal(msm_rtcp_copy_nacks(c, cut, 9, out, sizeof(out)), 0);
        free(c);
    }
    assert_true(msm_rtcp_summarize(b, n, &s));
    assert_int_equal(s.nack_packets, 2 + 3);
    /* a length field larger than the datagram */
    b[3] = 200;
    assert_true(msm_rtcp_summarize(b, n, &s));
    assert_int_equal(s.nack_packets, 0);
    b[3] = 4;
    /* padding (P bit): the last byte counts padding octets, which are not FCIs */
    uint8_t p[64];
    size_t pn = nack(p, 1, 2, pid, blp, 1);
    p[0] |= 0x20;
    memset(p + pn, 0, 4);
    p[pn + 3] = 4;
    p[3] = (uint8_t)((pn + 4) / 4 - 1);
    assert_true(msm_rtcp_summarize(p, pn + 4, &s));
    assert_int_equal(s.nacks, 1);
    assert_int_equal(s.nack_packets, 2);
    /* padding count larger than the packet: ignored */
    p[pn + 3] = 200;
    assert_true(msm_rtcp_summarize(p, pn + 4, &s));
    assert_int_equal(s.nacks, 0);
    /* a sub-packet that is not version 2 ends the walk */
    uint8_t two[80];
    size_t k = rr(two, 0, 5, 0);
    k += nack(two + k, 1, 2, pid, blp, 2);
    two[32] = 0x41;
    assert_true(msm_rtcp_summarize(two, k, &s));
    assert_int_equal(s.reports, 1);
    assert_int_equal(s.nacks, 0);
}

static void test_copy_nacks(void **state)
{
    (void)state;
    uint8_t b[128], out[128];
    uint16_t pid[2] = {500, 600}, blp[2] = {0xffff, 0};
    size_t n = rr(b, 0, 1, 0);
    n += nack(b + n, 0xabc, 0x1234, pid, blp, 2);
    n += nack(b + n, 0xdef, 0x5678, pid, blp, 1);
    size_t w = msm_rtcp_copy_nacks(b, n, 0x99, out, sizeof(out));
    assert_int_equal(w, 20 + 16);
    /* sender SSRC ours, media SSRC and FCIs kept */
    const uint8_t first[20] = {0x81, 205, 0, 4, 0, 0, 0, 0x99, 0, 0, 0x12, 0x34,
                               0x01, 0xf4, 0xff, 0xff, 0x02, 0x58, 0, 0};
    assert_memory_equal(out, first, 20);
    struct msm_rtcp_summary s;
    assert_true(msm_rtcp_summarize(out, w, &s));
    assert_int_equal(s.nack_packets, 17 + 1 + 17);
    /* no room for the second: only whole packets are copied */
    assert_int_equal(msm_rtcp_copy_nacks(b, n, 0x99, out, 30), 20);
    /* a NACK without an FCI is not re-issued */
    uint8_t empty[12];
    nack(empty, 1, 2, pid, blp, 0);
    assert_int_equal(msm_rtcp_copy_nacks(empty, sizeof(empty), 0x99, out, sizeof(out)), 0);
    /* the old summary helper is the same walk */
    int64_t lost;
    uint32_t jitter;
    assert_true(msm_rtcp_report_summary(b, n, &lost, &jitter));
    assert_int_equal(lost, 1);
    assert_false(msm_rtcp_report_summary(b + 32, n - 32, &lost, &jitter));
}

static void test_rtx_payload_types(void **state)
{
    (void)state;
    struct msm_rtp_pt_set set;
    memset(&set, 0, sizeof(set));
    assert_true(msm_rtp_pt_set_empty(&set));
    msm_rtp_pt_set_add(&set, 97);
    msm_rtp_pt_set_add(&set, 128); /* out of range: ignored */
    msm_rtp_pt_set_add(&set, -1);
    assert_false(msm_rtp_pt_set_empty(&set));
    assert_true(msm_rtp_pt_set_has(&set, 97));
    assert_false(msm_rtp_pt_set_has(&set, 96));
    assert_false(msm_rtp_pt_set_has(&set, 200));
    uint8_t a[12] = {0x80, 96}, b[12] = {0x80, 0x80 | 97}, c[4] = {0x80, 97};
    struct msm_udp_pkt pk[3];
    memset(pk, 0, sizeof(pk));
    pk[0].data = a;
    pk[0].len = sizeof(a);
    pk[1].data = b; /* marker bit set: still PT 97 */
    pk[1].len = sizeof(b);
    pk[2].data = c; /* too short to be RTP */
    pk[2].len = sizeof(c);
    assert_int_equal(msm_rtp_count_pt(&set, pk, 3), 1);
}

static void test_sdp_rtx_and_nack(void **state)
{
    (void)state;
    const char *sdp = "v=0\r\ns=x\r\nm=video 0 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\n"
                      "a=rtpmap:97 RTX/90000\r\na=fmtp:97 apt=96\r\na=rtcp-fb:96 nack\r\n"
                      "a=control:trackID=0\r\n"
                      "m=audio 0 RTP/AVP 0\r\na=rtcp-fb:* nack pli\r\na=rtpmap:98 rtxx/8000\r\n"
                      "a=rtpmap:99 rtx\r\na=rtcp-fb:0 nackx\r\n"
                      "m=video 0 RTP/AVP 100\r\na=rtcp-fb:*  nack \r\na=rtpmap:300 rtx/90000\r\n";
    struct msm_sdp_media m[4];
    assert_int_equal(msm_sdp_parse(sdp, strlen(sdp), m, 4, NULL, 0), 3);
    assert_int_equal(m[0].pt, 96);
    assert_int_equal(m[0].clock_rate, 90000);
    assert_true(msm_rtp_pt_set_has(&m[0].rtx, 97));
    assert_false(msm_rtp_pt_set_has(&m[0].rtx, 96));
    assert_true(m[0].nack);
    /* "nack pli" is a picture loss indication, not a generic NACK; "rtxx" and a rtpmap
     * without a clock are no RTX */
    assert_false(m[1].nack);
    assert_true(msm_rtp_pt_set_empty(&m[1].rtx));
    assert_true(m[2].nack);
    assert_true(msm_rtp_pt_set_empty(&m[2].rtx));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nack_summary),
        cmocka_unit_test(test_nack_bounds),
        cmocka_unit_test(test_copy_nacks),
        cmocka_unit_test(test_rtx_payload_types),
        cmocka_unit_test(test_sdp_rtx_and_nack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
