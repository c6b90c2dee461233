/* http_inspector decisions: HTTP/1.x request lines and the h2c preface are HTTP; RTSP, SIP,
 * unknown methods and binary are not; prefixes ask for more. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "net/inspect.h"

static enum msm_inspect_result run(const char *s, const char **alpn)
{
    *alpn = NULL;
    return msm_http_inspect((const uint8_t *)s, strlen(s), alpn);
}

static void test_http(void **state)
{
    (void)state;
    const char *a;
    assert_int_equal(run("GET / HTTP/1.1\r\n", &a), MSM_INSPECT_YES);
    assert_string_equal(a, "http/1.1");
    assert_int_equal(run("HEAD /x HTTP/1.0\r\nHost: a\r\n\r\n", &a), MSM_INSPECT_YES);
    assert_string_equal(a, "http/1.0");
    assert_int_equal(run("M-SEARCH * HTTP/1.1\n", &a), MSM_INSPECT_YES);
    assert_int_equal(run("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &a), MSM_INSPECT_YES);
    assert_string_equal(a, "h2c");
}

static void test_not_http(void **state)
{
    (void)state;
    const char *a;
    assert_int_equal(run("OPTIONS rtsp://cam/x RTSP/1.0\r\n", &a), MSM_INSPECT_NO);
    assert_int_equal(run("DESCRIBE rtsp://cam/x RTSP/1.0\r\n", &a), MSM_INSPECT_NO);
    assert_int_equal(run("PLAY rtsp://cam/x RTSP/2.0\r\n", &a), MSM_INSPECT_NO);
    assert_int_equal(run("INVITE sip:bob@x SIP/2.0\r\n", &a), MSM_INSPECT_NO);
    assert_int_equal(run("OPTIONS sip:bob@x SIP/2.0\r\n", &a), MSM_INSPECT_NO);
    assert_int_equal(run("GET / HTTP/2.0\r\n", &a), MSM_INSPECT_NO);
    assert_int_equal(run("GET  / HTTP/1.1\r\n", &a), MSM_INSPECT_NO);
    assert_int_equal(run("get / HTTP/1.1\r\n", &a), MSM_INSPECT_NO);
    assert_int_equal(run("\x16\x03\x01\x02\x00", &a), MSM_INSPECT_NO);
    assert_int_equal(run("SSH-2.0-OpenSSH\r\n", &a), MSM_INSPECT_NO);
}

static void test_need_more(void **state)
{
    (void)state;
    const char *a;
    assert_int_equal(run("", &a), MSM_INSPECT_NEED_MORE);
    assert_int_equal(run("GE", &a), MSM_INSPECT_NEED_MORE);
    assert_int_equal(run("OPTIONS ", &a), MSM_INSPECT_NEED_MORE);
    assert_int_equal(run("OPTIONS rtsp://cam/x", &a), MSM_INSPECT_NEED_MORE);
    assert_int_equal(run("GET / HTTP/1.", &a), MSM_INSPECT_NEED_MORE);
    assert_int_equal(run("GET / HTTP/1.1\r", &a), MSM_INSPECT_NEED_MORE);
    assert_int_equal(run("PRI * HTTP/2", &a), MSM_INSPECT_NEED_MORE);
    /* An endless request target gives up at the limit. */
    static char big[MSM_HTTP_INSPECT_MAX + 64];
    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "GET /", 5);
    assert_int_equal(run(big, &a), MSM_INSPECT_NO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http),
        cmocka_unit_test(test_not_http),
        cmocka_unit_test(test_need_more),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
