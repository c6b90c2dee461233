/* Command-line options: pilot-agent's exact command line, Envoy's defaults and checks, every
 * error path, both value syntaxes, reentrancy and cleanup (run under ASan for leaks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sched.h>

#include "common/log.h"
#include "server/options.h"

#define MAX_ARGS 40

/* argv[0] is "msm-proxy"; <args> ends with NULL. */
static int parse_v(struct msm_options *o, struct msm_err *e, const char *const *args)
{
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = "msm-proxy";
    while (args[argc - 1]) {
        assert_true(argc < MAX_ARGS);
        argv[argc] = (char *)args[argc - 1];
        argc++;
    }
    argv[argc] = NULL;
    memset(e->msg, 0, sizeof(e->msg));
    return msm_options_parse(o, argc, argv, e);
}

#define PARSE(o, e, ...) parse_v((o), (e), (const char *const[]){__VA_ARGS__, NULL})

static uint32_t online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (uint32_t)n : 1;
}

/* A parse that must fail with exactly <msg>; <opts> must then hold nothing. */
static void expect_error(const char *msg, const char *const *args)
{
    struct msm_options o;
    struct msm_err e;
    int rc = parse_v(&o, &e, args);
    if (rc != MSM_EINVAL || strcmp(e.msg, msg) != 0) {
        fprintf(stderr, "args starting '%s': rc %d, got \"%s\", want \"%s\"\n", args[0], rc,
                e.msg, msg);
    }
    assert_int_equal(rc, MSM_EINVAL);
    assert_string_equal(e.msg, msg);
    /* Failure leaves no allocation (ASan's leak check) and a zeroed struct. */
    assert_null(o.command_line);
    assert_null(o.config_path);
    assert_null(o.component_levels);
    assert_null(o.stats_tags);
    msm_options_deinit(&o); /* still safe */
}

#define EXPECT_ERROR(msg, ...) expect_error((msg), (const char *const[]){__VA_ARGS__, NULL})

static const char pilot_yaml[] = "{\"tracing\":{\"http\":{\"name\":\"envoy.tracers.zipkin\"}}}";

/* istio-contract.md 1.2, in pilot-agent's order (pkg/envoy/proxy.go args()). */
static void test_pilot_agent_command_line(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    int rc = PARSE(&o, &e, "-c", "./etc/istio/proxy/envoy-rev.json", "--drain-time-s", "45",
                   "--drain-strategy", "immediate", "--local-address-ip-version", "v4",
                   "--file-flush-interval-msec", "1000", "--disable-hot-restart",
                   "--allow-unknown-static-fields", "-l", "warning", "--component-log-level",
                   "misc:error", "--config-yaml", pilot_yaml, "--concurrency", "2");
    assert_int_equal(rc, 0);
    assert_string_equal(o.config_path, "./etc/istio/proxy/envoy-rev.json");
    assert_string_equal(o.config_yaml, pilot_yaml);
    assert_int_equal(o.drain_time_s, 45);
    assert_int_equal(o.drain_strategy, MSM_DRAIN_IMMEDIATE);
    assert_int_equal(o.local_address_ip_version, MSM_IP_V4);
    assert_int_equal(o.file_flush_interval_msec, 1000);
    assert_int_equal(o.file_flush_min_size_kb, 64);
    assert_true(o.disable_hot_restart);
    assert_true(o.allow_unknown_static_fields);
    assert_false(o.reject_unknown_dynamic_fields);
    assert_int_equal(o.log_level, MSM_LOG_WARN);
    assert_int_equal(o.n_component_levels, 1);
    assert_string_equal(o.component_levels[0].component, "misc");
    assert_int_equal(o.component_levels[0].level, MSM_LOG_ERROR);
    assert_string_equal(o.component_log_level, "misc:error");
    assert_int_equal(o.concurrency, 2);
    assert_int_equal(o.mode, MSM_MODE_SERVE);
    assert_false(o.help);
    assert_false(o.version);
    char want[512];
    snprintf(want, sizeof(want), "msm-proxy -c ./etc/istio/proxy/envoy-rev.json --drain-time-s 45 "
             "--drain-strategy immediate --local-address-ip-version v4 "
             "--file-flush-interval-msec 1000 --disable-hot-restart --allow-unknown-static-fields "
             "-l warning --component-log-level misc:error --config-yaml %s --concurrency 2",
             pilot_yaml);
    assert_string_equal(o.command_line, want);
    msm_options_deinit(&o);
    assert_null(o.config_path);
    assert_null(o.command_line);
}

/* The optional flags pilot-agent adds (1.2): min size, core dump, deprecated logs, IPv6. */
static void test_pilot_agent_optional_flags(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    int rc = PARSE(&o, &e, "-c", "envoy-rev.json", "--drain-time-s", "5", "--drain-strategy",
                   "immediate", "--local-address-ip-version", "v6", "--file-flush-interval-msec",
                   "10000", "--disable-hot-restart", "--allow-unknown-static-fields",
                   "--file-flush-min-size-kb", "128", "-l", "trace", "--component-log-level",
                   "misc:error,upstream:debug", "--skip-deprecated-logs", "--enable-core-dump",
                   "--concurrency", "8");
    assert_int_equal(rc, 0);
    assert_int_equal(o.local_address_ip_version, MSM_IP_V6);
    assert_int_equal(o.file_flush_min_size_kb, 128);
    assert_int_equal(o.log_level, MSM_LOG_TRACE);
    assert_int_equal(o.n_component_levels, 2);
    assert_string_equal(o.component_levels[1].component, "upstream");
    assert_int_equal(o.component_levels[1].level, MSM_LOG_DEBUG);
    assert_true(o.skip_deprecated_logs);
    assert_true(o.enable_core_dump);
    assert_int_equal(o.concurrency, 8);
    msm_options_deinit(&o);
}

/* Command lines of older pilot-agents, with flags Envoy has since removed. */
static void test_legacy_pilot_agents(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    /* early 1.x pilot-agents (hot restart era) */
    int rc = PARSE(&o, &e, "-c", "envoy-rev0.json", "--restart-epoch", "0", "--drain-time-s", "2",
                   "--parent-shutdown-time-s", "3", "--service-cluster", "istio-proxy",
                   "--service-node", "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local",
                   "--max-obj-name-len", "189", "--allow-unknown-fields", "--concurrency", "2",
                   "--service-zone", "zone-a", "--v2-config-only");
    assert_int_equal(rc, 0);
    assert_int_equal(o.parent_shutdown_time_s, 3);
    assert_string_equal(o.service_cluster, "istio-proxy");
    assert_string_equal(o.service_node, "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local");
    assert_string_equal(o.service_zone, "zone-a");
    assert_true(o.allow_unknown_static_fields); /* Envoy folds the deprecated flag in */
    assert_int_equal(o.restart_epoch, 0);
    msm_options_deinit(&o);

    /* later ones: --log-format-prefix-with-location 0 and a tab-separated --log-format */
    rc = PARSE(&o, &e, "-c", "envoy-rev0.json", "--restart-epoch", "0",
               "--local-address-ip-version", "v4", "--log-format-prefix-with-location", "0",
               "--log-format",
               "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n\t%v", "-l", "warning");
    assert_int_equal(rc, 0);
    assert_true(o.log_format_set);
    assert_string_equal(o.log_format, "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n\t%v");
    msm_options_deinit(&o);

    /* 1 (older Envoy's default) puts the source location before every %v */
    rc = PARSE(&o, &e, "--log-format", "%l %v|%v", "--log-format-prefix-with-location", "1");
    assert_int_equal(rc, 0);
    assert_string_equal(o.log_format, "%l [%g:%#] %v|[%g:%#] %v");
    msm_options_deinit(&o);
    rc = PARSE(&o, &e, "--log-format-prefix-with-location", "1");
    assert_int_equal(rc, 0);
    assert_null(o.log_format);
    assert_false(o.log_format_set);
    msm_options_deinit(&o);
}

static void test_defaults(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    char *argv[] = {"msm-proxy", NULL};
    assert_int_equal(msm_options_parse(&o, 1, argv, &e), 0);
    assert_null(o.config_path);
    assert_null(o.config_yaml);
    assert_int_equal(o.mode, MSM_MODE_SERVE);
    assert_int_equal(o.drain_time_s, 600);
    assert_int_equal(o.drain_strategy, MSM_DRAIN_GRADUAL);
    assert_int_equal(o.parent_shutdown_time_s, 900);
    assert_int_equal(o.local_address_ip_version, MSM_IP_V4);
    assert_int_equal(o.file_flush_interval_msec, 10000);
    assert_int_equal(o.file_flush_min_size_kb, 64);
    assert_int_equal(o.log_level, MSM_LOG_INFO);
    assert_int_equal(o.n_component_levels, 0);
    assert_null(o.component_levels);
    assert_null(o.component_log_level);
    assert_null(o.log_format);
    assert_false(o.log_format_set);
    assert_null(o.log_path);
    assert_int_equal(o.concurrency, online_cpus());
    assert_null(o.service_cluster);
    assert_null(o.service_node);
    assert_null(o.service_zone);
    assert_int_equal(o.base_id, 0);
    assert_int_equal(o.restart_epoch, 0);
    assert_false(o.disable_hot_restart);
    assert_false(o.allow_unknown_static_fields);
    assert_false(o.cpuset_threads);
    assert_false(o.help);
    assert_false(o.version);
    assert_string_equal(o.command_line, "msm-proxy");
    msm_options_deinit(&o);

    /* argc 0 (execve with an empty argv) is not an error either */
    assert_int_equal(msm_options_parse(&o, 0, argv, &e), 0);
    assert_string_equal(o.command_line, "");
    msm_options_deinit(&o);
}

/* Every string and switch flag Envoy has, each stored or at least accepted. */
static void test_all_flags(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    int rc = PARSE(&o, &e, "--config-path", "/b.yaml", "--mode", "validate",
                   "--reject-unknown-dynamic-fields", "--ignore-unknown-dynamic-fields",
                   "--disable-extensions", "envoy.filters/a,envoy.filters/b", "--log-level",
                   "critical", "--log-format-escaped", "--log-path", "/tmp/x.log",
                   "--enable-fine-grain-logging", "--log-stacktrace-single-entry",
                   "--parent-shutdown-time-s", "90", "--admin-address-path", "/tmp/admin",
                   "--enable-mutex-tracing", "--stats-tag", "pod:p1", "--stats-tag", "ns:a:b",
                   "--base-id", "7", "--use-dynamic-base-id", "--base-id-path", "/tmp/base",
                   "--socket-path", "/tmp/sock", "--socket-mode", "644",
                   "--skip-hot-restart-on-no-parent", "--skip-hot-restart-parent-stats",
                   "--hot-restart-version");
    if (rc != 0) {
        fprintf(stderr, "%s\n", e.msg);
    }
    assert_int_equal(rc, 0);
    assert_string_equal(o.config_path, "/b.yaml");
    assert_int_equal(o.mode, MSM_MODE_VALIDATE);
    assert_true(o.reject_unknown_dynamic_fields);
    assert_true(o.ignore_unknown_dynamic_fields);
    assert_string_equal(o.disable_extensions, "envoy.filters/a,envoy.filters/b");
    assert_int_equal(o.log_level, MSM_LOG_CRITICAL);
    assert_true(o.log_format_escaped);
    assert_string_equal(o.log_path, "/tmp/x.log");
    assert_int_equal(o.parent_shutdown_time_s, 90);
    assert_string_equal(o.admin_address_path, "/tmp/admin");
    assert_int_equal(o.n_stats_tags, 2);
    assert_string_equal(o.stats_tags[0].name, "pod");
    assert_string_equal(o.stats_tags[0].value, "p1");
    assert_string_equal(o.stats_tags[1].name, "ns");
    assert_string_equal(o.stats_tags[1].value, "a:b");
    assert_int_equal(o.base_id, 7);
    assert_true(o.use_dynamic_base_id);
    assert_string_equal(o.base_id_path, "/tmp/base");
    assert_true(o.hot_restart_version);
    msm_options_deinit(&o);

    rc = PARSE(&o, &e, "--mode", "init_only", "--log-level", "off", "--drain-strategy", "gradual");
    assert_int_equal(rc, 0);
    assert_int_equal(o.mode, MSM_MODE_INIT_ONLY);
    assert_int_equal(o.log_level, MSM_LOG_OFF);
    assert_int_equal(o.drain_strategy, MSM_DRAIN_GRADUAL);
    msm_options_deinit(&o);

    /* Envoy's "warn" alias */
    rc = PARSE(&o, &e, "-l", "warn", "--component-log-level", "upstream:warn");
    assert_int_equal(rc, 0);
    assert_int_equal(o.log_level, MSM_LOG_WARN);
    assert_int_equal(o.component_levels[0].level, MSM_LOG_WARN);
    msm_options_deinit(&o);

    /* an empty --component-log-level sets nothing (Envoy) */
    rc = PARSE(&o, &e, "--component-log-level", "");
    assert_int_equal(rc, 0);
    assert_int_equal(o.n_component_levels, 0);
    msm_options_deinit(&o);
}

/* "--flag=value" (ours) and TCLAP's "--flag value" in one argv item. */
static void test_value_syntaxes(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    int rc = PARSE(&o, &e, "--drain-time-s=45", "--mode=validate", "-l=debug", "-c=/x.json",
                   "--config-yaml={admin: {address: 1}}", "--log-format=[%v] a=b",
                   "--concurrency 3", "--service-node n1", "--service-cluster ", "c1",
                   "--log-path=", "--component-log-level=upstream:trace");
    if (rc != 0) {
        fprintf(stderr, "%s\n", e.msg);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(o.drain_time_s, 45);
    assert_int_equal(o.mode, MSM_MODE_VALIDATE);
    assert_int_equal(o.log_level, MSM_LOG_DEBUG);
    assert_string_equal(o.config_path, "/x.json");
    assert_string_equal(o.config_yaml, "{admin: {address: 1}}");
    assert_string_equal(o.log_format, "[%v] a=b");
    assert_int_equal(o.concurrency, 3);
    assert_string_equal(o.service_node, "n1");
    assert_string_equal(o.service_cluster, "c1"); /* TCLAP: empty after the space: next item */
    assert_string_equal(o.log_path, "");           /* "=" then nothing: an empty value */
    assert_int_equal(o.component_levels[0].level, MSM_LOG_TRACE);
    msm_options_deinit(&o);

    /* The next item is the value whatever it looks like (TCLAP). */
    rc = PARSE(&o, &e, "--service-node", "--mode", "--log-format", "-h", "-c", "--");
    assert_int_equal(rc, 0);
    assert_string_equal(o.service_node, "--mode");
    assert_string_equal(o.log_format, "-h");
    assert_string_equal(o.config_path, "--");
    assert_false(o.help);
    msm_options_deinit(&o);
}

/* "--"/"--ignore_rest" end parsing, "" and "-" are no-ops, as with TCLAP. */
static void test_ignore_rest_and_empty(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    int rc = PARSE(&o, &e, "", "-", "--concurrency", "3", "--", "--concurrency", "5", "stray");
    assert_int_equal(rc, 0);
    assert_int_equal(o.concurrency, 3);
    assert_string_equal(o.command_line, "msm-proxy  - --concurrency 3 -- --concurrency 5 stray");
    msm_options_deinit(&o);
    rc = PARSE(&o, &e, "--ignore_rest", "--bogus");
    assert_int_equal(rc, 0);
    msm_options_deinit(&o);
}

static void test_help_and_version(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    assert_int_equal(PARSE(&o, &e, "-h"), 0);
    assert_true(o.help);
    assert_string_equal(o.command_line, "msm-proxy -h");
    msm_options_deinit(&o);
    assert_int_equal(PARSE(&o, &e, "--help"), 0);
    assert_true(o.help);
    msm_options_deinit(&o);
    assert_int_equal(PARSE(&o, &e, "--version"), 0);
    assert_true(o.version);
    assert_false(o.help);
    msm_options_deinit(&o);
    /* Help wins over values not validated yet and over what follows it... */
    assert_int_equal(PARSE(&o, &e, "--mode", "bogus", "--help", "--bogus", "x"), 0);
    assert_true(o.help);
    assert_int_equal(o.mode, MSM_MODE_SERVE);
    msm_options_deinit(&o);
    /* ...but not over a syntax error before it. */
    EXPECT_ERROR("unknown option '--bogus'", "--bogus", "--help");
    EXPECT_ERROR("option '--help' does not take a value", "--help=1");
}

static void test_concurrency(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    /* Envoy: max(1, value), so 0 runs one worker. */
    assert_int_equal(PARSE(&o, &e, "--concurrency", "0"), 0);
    assert_int_equal(o.concurrency, 1);
    msm_options_deinit(&o);
    assert_int_equal(PARSE(&o, &e, "--concurrency", "4294967295"), 0);
    assert_int_equal(o.concurrency, UINT32_MAX);
    msm_options_deinit(&o);
    assert_int_equal(PARSE(&o, &e, "--concurrency", "007"), 0);
    assert_int_equal(o.concurrency, 7);
    msm_options_deinit(&o);

    cpu_set_t set;
    CPU_ZERO(&set);
    assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
    assert_int_equal(PARSE(&o, &e, "--cpuset-threads"), 0);
    assert_true(o.cpuset_threads);
    assert_int_equal(o.concurrency, (uint32_t)CPU_COUNT(&set));
    msm_options_deinit(&o);
    /* an explicit --concurrency wins over --cpuset-threads (Envoy warns, we just use it) */
    assert_int_equal(PARSE(&o, &e, "--cpuset-threads", "--concurrency", "5"), 0);
    assert_int_equal(o.concurrency, 5);
    msm_options_deinit(&o);
}

static void test_errors_syntax(void **state)
{
    (void)state;
    EXPECT_ERROR("unknown option '--foo'", "--foo");
    EXPECT_ERROR("unknown option '--foo'", "--foo=bar");
    EXPECT_ERROR("unknown option '--foo'", "--foo bar");
    EXPECT_ERROR("unknown option '-x'", "-x");
    EXPECT_ERROR("unknown option '-linfo'", "-linfo");
    EXPECT_ERROR("unknown option '--=x'", "--=x");
    EXPECT_ERROR("unknown option '--log-levle'", "--log-levle", "info");
    EXPECT_ERROR("unknown option '--config'", "--config", "x"); /* no prefix matching */
    EXPECT_ERROR("unexpected argument 'stray' (msm-proxy takes no positional arguments; see "
                 "--help)", "-c", "a.json", "stray");
    EXPECT_ERROR("unexpected argument 'debug' (msm-proxy takes no positional arguments; see "
                 "--help)", "-l", "info", "debug");
    EXPECT_ERROR("unexpected argument 'true' (msm-proxy takes no positional arguments; see "
                 "--help)", "--cpuset-threads", "true");
    EXPECT_ERROR("option '--log-level' requires a value", "--log-level");
    EXPECT_ERROR("option '-l' requires a value", "-c", "x", "-l");
    EXPECT_ERROR("option '--config-yaml' requires a value", "--config-yaml ");
    EXPECT_ERROR("option '--stats-tag' requires a value", "--stats-tag");
    EXPECT_ERROR("option '--disable-hot-restart' does not take a value",
                 "--disable-hot-restart=true");
    EXPECT_ERROR("option '--cpuset-threads' does not take a value", "--cpuset-threads x");
    /* TCLAP: "Argument already set!" for every flag but --stats-tag */
    EXPECT_ERROR("option '-l/--log-level' given more than once", "-l", "info", "--log-level",
                 "debug");
    EXPECT_ERROR("option '--concurrency' given more than once", "--concurrency", "2",
                 "--concurrency=3");
    EXPECT_ERROR("option '--disable-hot-restart' given more than once", "--disable-hot-restart",
                 "--disable-hot-restart");
    EXPECT_ERROR("option '-c/--config-path' given more than once", "-c", "a", "-c", "b");
}

static void test_errors_values(void **state)
{
    (void)state;
    EXPECT_ERROR("option '--mode': unknown mode 'bogus' (expected serve, validate or init_only)",
                 "--mode", "bogus");
    EXPECT_ERROR("option '--drain-strategy': unknown drain-strategy 'fast' (expected gradual or "
                 "immediate)", "--drain-strategy", "fast");
    EXPECT_ERROR("option '--local-address-ip-version': unknown IP address version 'v5' (expected "
                 "v4 or v6)", "--local-address-ip-version", "v5");
    EXPECT_ERROR("option '-l': invalid log level specified 'verbose' (expected trace, debug, "
                 "info, warning, warn, error, critical or off)", "-l", "verbose");
    EXPECT_ERROR("option '--log-level': invalid log level specified 'INFO' (expected trace, "
                 "debug, info, warning, warn, error, critical or off)", "--log-level", "INFO");
    EXPECT_ERROR("option '--component-log-level': invalid component specified 'blah'",
                 "--component-log-level", "upstream:debug,blah:debug");
    EXPECT_ERROR("option '--component-log-level': invalid log level specified 'blah' (expected "
                 "trace, debug, info, warning, warn, error, critical or off)",
                 "--component-log-level", "upstream:blah,connection:trace");
    EXPECT_ERROR("option '--component-log-level': component log level not correctly specified "
                 "'upstream' (expected component:level)", "--component-log-level", "upstream");
    EXPECT_ERROR("option '--component-log-level': component log level not correctly specified "
                 "'upstream:foo:bar' (expected component:level)", "--component-log-level",
                 "upstream:foo:bar");
    EXPECT_ERROR("option '--component-log-level': component log level not correctly specified "
                 "'' (expected component:level)", "--component-log-level", "misc:error,");
    EXPECT_ERROR("option '--component-log-level': invalid component specified ''",
                 "--component-log-level", ":debug");
    EXPECT_ERROR("option '--log-format-prefix-with-location': invalid value 'yes' (expected 0 or "
                 "1)", "--log-format-prefix-with-location", "yes");
    EXPECT_ERROR("option '--socket-mode': invalid socket-mode '999' (expected octal digits)",
                 "--socket-path", "/tmp/s", "--socket-mode", "999");
}

static void test_errors_numbers(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    EXPECT_ERROR("option '--concurrency': invalid value 'two' (expected an unsigned decimal "
                 "integer)", "--concurrency", "two");
    EXPECT_ERROR("option '--drain-time-s': invalid value '-1' (expected an unsigned decimal "
                 "integer)", "--drain-time-s", "-1");
    EXPECT_ERROR("option '--drain-time-s': invalid value '' (expected an unsigned decimal "
                 "integer)", "--drain-time-s", "");
    EXPECT_ERROR("option '--drain-time-s': invalid value '+5' (expected an unsigned decimal "
                 "integer)", "--drain-time-s=+5");
    EXPECT_ERROR("option '--file-flush-interval-msec': invalid value '10s' (expected an unsigned "
                 "decimal integer)", "--file-flush-interval-msec", "10s");
    EXPECT_ERROR("option '--file-flush-min-size-kb': invalid value '0x40' (expected an unsigned "
                 "decimal integer)", "--file-flush-min-size-kb", "0x40");
    EXPECT_ERROR("option '--concurrency': value '4294967296' out of range (0..4294967295)",
                 "--concurrency", "4294967296");
    EXPECT_ERROR("option '--base-id': value '99999999999999999999999' out of range "
                 "(0..4294967295)", "--base-id", "99999999999999999999999");
    EXPECT_ERROR("option '--max-obj-name-len': value '18446744073709551616' out of range "
                 "(0..18446744073709551615)", "--max-obj-name-len", "18446744073709551616");
    EXPECT_ERROR("option '--max-obj-name-len': the value specified (59) is less than the minimum "
                 "value of 60", "--max-obj-name-len", "59");
    EXPECT_ERROR("option '--restart-epoch': hot restart is not supported, only 0 is accepted "
                 "(got 1)", "--restart-epoch", "1");
    /* the largest values are accepted */
    assert_int_equal(PARSE(&o, &e, "--drain-time-s", "4294967295", "--max-obj-name-len",
                           "18446744073709551615"), 0);
    assert_int_equal(o.drain_time_s, UINT32_MAX);
    msm_options_deinit(&o);
}

static void test_stats_tags(void **state)
{
    (void)state;
    EXPECT_ERROR("option '--stats-tag': misformatted stats-tag 'novalue' (expected name:value)",
                 "--stats-tag", "novalue");
    EXPECT_ERROR("option '--stats-tag': misformatted stats-tag 'a-b:c' contains invalid char in "
                 "'a-b'", "--stats-tag", "a-b:c");
    EXPECT_ERROR("option '--stats-tag': misformatted stats-tag 'a:b.c' contains invalid char in "
                 "'b.c'", "--stats-tag", "a:b.c");
    EXPECT_ERROR("option '--stats-tag': tag name 'a' given more than once", "--stats-tag", "a:1",
                 "--stats-tag", "a:2");
}

/* The parser keeps no state between calls (no getopt globals): any sequence works. */
static void test_reentrant(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    for (int round = 0; round < 3; round++) {
        assert_int_equal(PARSE(&o, &e, "-c", "a.json", "-l", "debug", "--concurrency", "2"), 0);
        assert_string_equal(o.config_path, "a.json");
        assert_int_equal(o.log_level, MSM_LOG_DEBUG);
        msm_options_deinit(&o);
        EXPECT_ERROR("unknown option '--nope'", "-c", "a.json", "--nope");
        assert_int_equal(PARSE(&o, &e, "--config-path=b.json"), 0);
        assert_string_equal(o.config_path, "b.json");
        assert_int_equal(o.log_level, MSM_LOG_INFO); /* nothing left over from the last call */
        assert_int_equal(o.concurrency, online_cpus());
        msm_options_deinit(&o);
    }
    /* deinit twice is harmless */
    msm_options_deinit(&o);
}

/* Every allocating field set at once, then freed: ASan's leak check fails the run on a miss. */
static void test_deinit_frees_all(void **state)
{
    (void)state;
    struct msm_options o;
    struct msm_err e;
    int rc = PARSE(&o, &e, "-c", "a", "--config-yaml", "b", "--component-log-level",
                   "upstream:debug,config:trace,admin:off", "--log-format", "%v x %v",
                   "--log-format-prefix-with-location", "1", "--log-path", "p",
                   "--service-cluster", "sc", "--service-node", "sn", "--service-zone", "sz",
                   "--base-id-path", "bp", "--admin-address-path", "ap", "--disable-extensions",
                   "d", "--stats-tag", "a:1", "--stats-tag", "b:2", "--stats-tag", "c:3");
    assert_int_equal(rc, 0);
    assert_int_equal(o.n_component_levels, 3);
    assert_int_equal(o.n_stats_tags, 3);
    msm_options_deinit(&o);
    const unsigned char *p = (const unsigned char *)&o;
    for (size_t i = 0; i < sizeof(o); i++) {
        assert_int_equal(p[i], 0);
    }
    /* a failure late in the second pass frees what the first steps allocated */
    EXPECT_ERROR("option '--stats-tag': misformatted stats-tag 'bad' (expected name:value)",
                 "-c", "a", "--component-log-level", "upstream:debug", "--stats-tag", "ok:1",
                 "--stats-tag", "bad");
}

/* Every flag is listed, one per line, within 100 columns. */
static void test_usage(void **state)
{
    (void)state;
    static const char *const flags[] = {
        "-c, --config-path", "--config-yaml", "--mode", "--drain-time-s", "--drain-strategy",
        "--parent-shutdown-time-s", "--local-address-ip-version", "--file-flush-interval-msec",
        "--file-flush-min-size-kb", "--disable-hot-restart", "--allow-unknown-static-fields",
        "--reject-unknown-dynamic-fields", "--ignore-unknown-dynamic-fields", "-l, --log-level",
        "--component-log-level", "--log-format", "--log-path", "--concurrency",
        "--service-cluster", "--service-node", "--service-zone", "--base-id",
        "--use-dynamic-base-id", "--base-id-path", "--skip-deprecated-logs", "--enable-core-dump",
        "--cpuset-threads", "--restart-epoch", "--admin-address-path", "--version",
        "-h, --help", "--allow-unknown-fields", "--max-obj-name-len", "--v2-config-only",
        "--log-format-prefix-with-location", "--stats-tag", "--disable-extensions",
        "--hot-restart-version", "--socket-path", "--socket-mode", "--log-format-escaped",
        NULL};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    msm_options_usage(f, "msm-proxy");
    fclose(f);
    assert_non_null(strstr(buf, "Usage: msm-proxy [options]"));
    for (int i = 0; flags[i]; i++) {
        char want[64];
        snprintf(want, sizeof(want), "%s ", flags[i]);
        const char *hit = strstr(buf, want);
        if (!hit) {
            snprintf(want, sizeof(want), "%s\n", flags[i]);
            hit = strstr(buf, want);
        }
        if (!hit) {
            fprintf(stderr, "usage lacks %s\n", flags[i]);
        }
        assert_non_null(hit);
    }
    for (const char *line = buf; *line;) {
        size_t n = strcspn(line, "\n");
        assert_true(n <= 100);
        line += n + (line[n] ? 1 : 0);
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pilot_agent_command_line),
        cmocka_unit_test(test_pilot_agent_optional_flags),
        cmocka_unit_test(test_legacy_pilot_agents),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_flags),
        cmocka_unit_test(test_value_syntaxes),
        cmocka_unit_test(test_ignore_rest_and_empty),
        cmocka_unit_test(test_help_and_version),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_errors_syntax),
        cmocka_unit_test(test_errors_values),
        cmocka_unit_test(test_errors_numbers),
        cmocka_unit_test(test_stats_tags),
        cmocka_unit_test(test_reentrant),
        cmocka_unit_test(test_deinit_frees_all),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
