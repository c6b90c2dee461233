/* RTSP proxy parsers: messages (requests, responses, pipelining, frames, limits, leniency),
 * the Transport header (camera quirks, strictness, round trip), URLs and SDP rewriting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "filters/network/rtsp_proxy/rtsp_msg.h"
#include "filters/network/rtsp_proxy/rtsp_sdp.h"
#include "filters/network/rtsp_proxy/rtsp_transport.h"

static const struct msm_rtsp_limits lim = {.max_head = 1024, .max_headers = 8, .max_body = 100};

static int parse(const char *s, struct msm_rtsp_msg *m, size_t *total)
{
    return msm_rtsp_parse(s, strlen(s), &lim, m, total);
}

static void test_request_and_pipelining(void **state)
{
    (void)state;
    const char *two = "DESCRIBE rtsp://h/cam RTSP/1.0\r\nCSeq: 2\r\nAccept:application/sdp\r\n\r\n"
                      "OPTIONS * RTSP/1.0\r\nCSeq: 3\r\n\r\n";
    struct msm_rtsp_msg m;
    size_t total;
    assert_true(parse(two, &m, &total) > 0);
    assert_false(m.is_response);
    assert_int_equal(m.method, MSM_RTSP_M_DESCRIBE);
    assert_true(msm_rtsp_str_eq(m.uri, "rtsp://h/cam"));
    uint32_t cseq;
    assert_true(msm_rtsp_cseq(&m, &cseq));
    assert_int_equal(cseq, 2);
    assert_true(msm_rtsp_str_eq(msm_rtsp_header(&m, "accept")->value, "application/sdp"));
    assert_true(parse(two + total, &m, &total) > 0);
    assert_int_equal(m.method, MSM_RTSP_M_OPTIONS);
    /* every strict prefix needs more */
    for (size_t i = 0; i < 40; i++) {
        assert_int_equal(msm_rtsp_parse(two, i, &lim, &m, &total), 0);
    }
}

static void test_response_body_and_frames(void **state)
{
    (void)state;
    static const char s[] = "RTSP/1.0 200 OK\r\nCSeq: 1\r\nSession: 12345678;timeout=60\r\n"
                            "Content-Length: 5\r\n\r\nhello$\x01\x00\x02hi";
    size_t len = sizeof(s) - 1;
    struct msm_rtsp_msg m;
    uint8_t ch;
    const uint8_t *pl;
    size_t pn, total;
    assert_int_equal(msm_rtsp_next(s, len, &lim, &m, &ch, &pl, &pn, &total), MSM_RTSP_MESSAGE);
    assert_true(m.is_response);
    assert_int_equal(m.status, 200);
    assert_true(msm_rtsp_str_eq(m.body, "hello"));
    assert_true(msm_rtsp_str_eq(msm_rtsp_session_id(&m), "12345678"));
    assert_int_equal(msm_rtsp_next(s + total, 4, &lim, &m, &ch, &pl, &pn, &total),
                     MSM_RTSP_NEED_MORE);
    const char *f = s + (len - 6);
    assert_int_equal(msm_rtsp_next(f, 6, &lim, &m, &ch, &pl, &pn, &total), MSM_RTSP_FRAME);
    assert_int_equal(ch, 1);
    assert_int_equal(pn, 2);
    assert_int_equal(total, 6);
}

static void test_lenient_and_strict(void **state)
{
    (void)state;
    struct msm_rtsp_msg m;
    size_t total;
    /* bare LF, folded header, leading empty lines */
    assert_true(parse("\r\nOPTIONS rtsp://h/ RTSP/1.0\nCSeq: 9\nX-A: one\n two\n\n", &m, &total) >
                0);
    assert_true(msm_rtsp_str_iprefix(msm_rtsp_header(&m, "x-a")->value, "one"));
    assert_int_equal(parse("OPTIONS rtsp://h/ RTSP/3.0\r\n\r\n", &m, &total), MSM_RTSP_E_VERSION);
    assert_int_equal(parse("OPTIONS rtsp://h/ HTTP/1.1\r\n\r\n", &m, &total), MSM_RTSP_E_BAD);
    assert_int_equal(parse("OPTIONS\r\n\r\n", &m, &total), MSM_RTSP_E_BAD);
    assert_int_equal(parse("OPT(ONS rtsp://h/ RTSP/1.0\r\n\r\n", &m, &total), MSM_RTSP_E_BAD);
    assert_int_equal(parse("OPTIONS rtsp://h/ RTSP/1.0\r\nNoColon\r\n\r\n", &m, &total),
                     MSM_RTSP_E_BAD);
    assert_int_equal(parse("OPTIONS rtsp://h/ RTSP/1.0\r\nContent-Length: 1x\r\n\r\n", &m,
                           &total), MSM_RTSP_E_BAD);
    assert_int_equal(parse("OPTIONS rtsp://h/ RTSP/1.0\r\nContent-Length: 1\r\n"
                           "Content-Length: 2\r\n\r\nab", &m, &total), MSM_RTSP_E_BAD);
    assert_int_equal(parse("ANNOUNCE rtsp://h/ RTSP/1.0\r\nContent-Length: 101\r\n\r\n", &m,
                           &total), MSM_RTSP_E_BODY_TOO_BIG);
    assert_int_equal(parse("OPTIONS rtsp://h/ RTSP/1.0\r\na:1\r\nb:1\r\nc:1\r\nd:1\r\ne:1\r\n"
                           "f:1\r\ng:1\r\nh:1\r\ni:1\r\n\r\n", &m, &total),
                     MSM_RTSP_E_HEAD_TOO_BIG);
    char big[1100];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "OPTIONS ", 8);
    assert_int_equal(parse(big, &m, &total), MSM_RTSP_E_HEAD_TOO_BIG);
    assert_int_equal(msm_rtsp_parse("OPTIONS rtsp://h/ RTSP/1.0\r\nA: \0\r\n\r\n", 33, &lim, &m,
                                    &total), MSM_RTSP_E_BAD);
}

static void test_transport_quirks(void **state)
{
    (void)state;
    struct msm_rtsp_transport t[4];
    const char *v = "RTP/AVP/UDP;unicast;client_port=5000 , RTP/AVP/TCP ; Interleaved = 3-4 ;"
                    "ssrc=1a2B;mode=\"PLAY\", x-foo/bar;y, RTP/SAVP;multicast;port=1-2;ttl=9";
    assert_int_equal(msm_rtsp_transport_parse(v, strlen(v), t, 4), 3);
    assert_int_equal(t[0].lower, MSM_RTSP_LOWER_UDP);
    assert_true(t[0].has_client_port);
    assert_int_equal(t[0].client_port[0], 5000);
    assert_int_equal(t[0].client_port[1], 5001);
    assert_int_equal(t[1].lower, MSM_RTSP_LOWER_TCP);
    assert_int_equal(t[1].interleaved[0], 3);
    assert_int_equal(t[1].interleaved[1], 4);
    assert_int_equal(t[1].ssrc, 0x1a2b);
    assert_true(t[2].multicast);
    assert_int_equal(t[2].profile, MSM_RTSP_SAVP);
    const char *bad[] = {"RTP/AVP;client_port=70000", "RTP/AVP/TCP;interleaved=256-257",
                         "RTP/AVP;ssrc=123456789", "RTP/AVP;destination=a b",
                         "RTP/AVP;mode=DANCE", "", "RTP/AVP;client_port=1-x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(msm_rtsp_transport_parse(bad[i], strlen(bad[i]), t, 4), -1);
    }
    const char *v2 = "RTP/AVP;unicast;dest_addr=\"[fd00::5]:4000\"/\"[fd00::5]:4001\"";
    assert_int_equal(msm_rtsp_transport_parse(v2, strlen(v2), t, 4), 1);
    assert_string_equal(t[0].destination, "fd00::5");
    assert_int_equal(t[0].client_port[0], 4000);
    char buf[256];
    struct msm_rtsp_transport o;
    memset(&o, 0, sizeof(o));
    o.has_server_port = o.has_client_port = o.has_ssrc = o.has_mode = true;
    o.client_port[0] = 5000;
    o.client_port[1] = 5001;
    o.server_port[0] = 20000;
    o.server_port[1] = 20001;
    o.ssrc = 0xdeadbeef;
    strcpy(o.source, "10.0.0.1");
    assert_true(msm_rtsp_transport_format(&o, false, buf, sizeof(buf)) > 0);
    assert_string_equal(buf, "RTP/AVP;unicast;source=10.0.0.1;client_port=5000-5001;"
                             "server_port=20000-20001;ssrc=DEADBEEF;mode=\"PLAY\"");
    assert_int_equal(msm_rtsp_transport_format(&o, false, buf, 20), -1);
    /* RTCP-mux (RFC 5761 / RFC 7826): parsed in any case, echoed when set */
    const char *mux = "RTP/AVP;unicast;client_port=6000-6001;rtcp-mux";
    assert_int_equal(msm_rtsp_transport_parse(mux, strlen(mux), t, 4), 1);
    assert_true(t[0].rtcp_mux);
    o.rtcp_mux = true;
    o.has_ssrc = o.has_mode = false;
    assert_true(msm_rtsp_transport_format(&o, false, buf, sizeof(buf)) > 0);
    assert_string_equal(buf, "RTP/AVP;unicast;source=10.0.0.1;client_port=5000-5001;"
                             "server_port=20000-20001;RTCP-mux");
}

static void test_urls(void **state)
{
    (void)state;
    struct msm_rtsp_url u;
    const char *s = "rtsp://admin:pw@[fd00::1]:8554/live/ch1?token=x";
    assert_int_equal(msm_rtsp_url_parse(s, strlen(s), &u), 0);
    assert_int_equal(u.host_len, 7);
    assert_int_equal(u.port, 8554);
    assert_int_equal(u.path_len, 9);
    assert_int_equal(u.query_len, 7);
    char out[256];
    assert_true(msm_rtsp_url_rebase(s, strlen(s), "proxy:554", out, sizeof(out)) > 0);
    assert_string_equal(out, "rtsp://proxy:554/live/ch1?token=x");
    assert_int_equal(msm_rtsp_url_parse("http://h/", 9, &u), -1);
    assert_int_equal(msm_rtsp_url_parse("rtsp://h:99999/", 15, &u), -1);
    assert_int_equal(msm_rtsp_url_parse("rtsp:///x", 9, &u), -1);
    assert_true(msm_rtsp_url_resolve("rtsp://h/cam", "trackID=1", out, sizeof(out)) > 0);
    assert_string_equal(out, "rtsp://h/cam/trackID=1");
    assert_true(msm_rtsp_url_resolve("rtsp://h/cam/", "*", out, sizeof(out)) > 0);
    assert_string_equal(out, "rtsp://h/cam/");
    assert_true(msm_rtsp_url_resolve("rtsp://h/cam/", "rtsp://o/x", out, sizeof(out)) > 0);
    assert_string_equal(out, "rtsp://o/x");
}

static void test_sdp(void **state)
{
    (void)state;
    const char *sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\nc=IN IP4 10.0.0.9\r\n"
                      "a=control:rtsp://admin:pw@10.0.0.9:554/live/\r\n"
                      "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                      "a=control:rtsp://10.0.0.9:554/live/trackID=1\r\n"
                      "m=audio 0 RTP/AVP 0\nc=IN IP4 224.1.1.1/16\na=control:trackID=2\n"
                      "a=rtcp:5001 IN IP4 10.0.0.9\n";
    struct msm_sdp_media m[4];
    char sc[64];
    assert_int_equal(msm_sdp_parse(sdp, strlen(sdp), m, 4, sc, sizeof(sc)), 2);
    assert_string_equal(sc, "rtsp://admin:pw@10.0.0.9:554/live/");
    assert_string_equal(m[0].type, "video");
    assert_int_equal(m[0].pt, 96);
    assert_int_equal(m[0].clock_rate, 90000);
    assert_int_equal(m[1].clock_rate, 8000);
    assert_string_equal(m[1].control, "trackID=2");
    size_t n;
    char *out = msm_sdp_rewrite(sdp, strlen(sdp), "proxy:8554", "192.0.2.7", &n);
    assert_null(strstr(out, "10.0.0.9:554"));
    assert_null(strstr(out, "admin"));
    assert_non_null(strstr(out, "a=control:rtsp://proxy:8554/live/trackID=1\r\n"));
    assert_non_null(strstr(out, "c=IN IP4 192.0.2.7\r\na=control:rtsp://proxy:8554/live/\r\n"));
    assert_non_null(strstr(out, "m=audio 0 RTP/AVP 0\r\nc=IN IP4 192.0.2.7\r\n"));
    assert_non_null(strstr(out, "a=rtcp:5001 IN IP4 192.0.2.7\r\n"));
    assert_non_null(strstr(out, "o=- 1 1 IN IP4 10.0.0.9"));
    free(out);
    assert_int_equal(msm_sdp_parse("not sdp", 7, m, 4, NULL, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_and_pipelining),
        cmocka_unit_test(test_response_body_and_frames),
        cmocka_unit_test(test_lenient_and_strict),
        cmocka_unit_test(test_transport_quirks),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_sdp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
