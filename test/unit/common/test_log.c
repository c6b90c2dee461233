/* Log formatting: Istio's application_log_config text pattern, JSON format escaping, level and
 * component names, level filtering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

static int pipefd[2];

static char *read_line(char *buf, size_t n)
{
    ssize_t r = read(pipefd[0], buf, n - 1);
    assert_true(r > 0);
    buf[r] = '\0';
    return buf;
}

static void test_istio_text_format(void **state)
{
    (void)state;
    /* The exact pattern Istio's bootstrap template sets. */
    msm_log_set_format("%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t", NULL, 0);
    msm_log_set_all(MSM_LOG_INFO);
    msm_log(MSM_LOG_WARN, MSM_LC_UPSTREAM, "hello %d", 42);
    char line[1024];
    read_line(line, sizeof(line));
    int y, mo, d, h, mi, s, us;
    assert_int_equal(sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ\t", &y, &mo, &d, &h, &mi, &s, &us),
                     7);
    assert_non_null(strstr(line, "\twarning\tenvoy upstream test/unit/common/test_log.c:"));
    assert_non_null(strstr(line, "\thello 42\tthread="));
    assert_int_equal(line[strlen(line) - 1], '\n');
}

static void test_json_format(void **state)
{
    (void)state;
    const char *kv[] = {"level", "%l", "msg", "%v", "logger", "%n"};
    msm_log_set_format(NULL, kv, 3);
    msm_log(MSM_LOG_ERROR, MSM_LC_MAIN, "quote \" and\nnewline");
    char line[1024];
    read_line(line, sizeof(line));
    assert_string_equal(line,
                        "{\"level\":\"error\",\"msg\":\"quote \\\" and\\nnewline\",\"logger\":\"main\"}\n");
}

static void test_levels(void **state)
{
    (void)state;
    msm_log_set_format("%l:%v", NULL, 0);
    msm_log_set_all(MSM_LOG_ERROR);
    msm_log(MSM_LOG_INFO, MSM_LC_MAIN, "dropped");
    msm_log_set(MSM_LC_MAIN, MSM_LOG_DEBUG);
    msm_log(MSM_LOG_DEBUG, MSM_LC_MAIN, "kept");
    char line[256];
    assert_string_equal(read_line(line, sizeof(line)), "debug:kept\n");
    assert_int_equal(msm_log_level_parse("warn"), MSM_LOG_WARN);
    assert_int_equal(msm_log_level_parse("warning"), MSM_LOG_WARN);
    assert_int_equal(msm_log_level_parse("critical"), MSM_LOG_CRITICAL);
    assert_int_equal(msm_log_level_parse("loud"), -1);
    assert_int_equal(msm_log_component_find("misc"), MSM_LC_MISC);
    assert_int_equal(msm_log_component_find("nope"), -1);
    assert_string_equal(msm_log_component_name(MSM_LC_CONN_HANDLER), "conn_handler");
}

int main(void)
{
    if (pipe(pipefd) != 0) {
        return 1;
    }
    msm_log_set_fd(pipefd[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_istio_text_format),
        cmocka_unit_test(test_json_format),
        cmocka_unit_test(test_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
