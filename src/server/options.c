/* Command-line options with Envoy's semantics, so that pilot-agent (istio-contract.md 1.2) and
 * people used to `envoy --help` can drive msm-proxy unchanged.
 *
 * Envoy parses its command line with TCLAP (source/server/options_impl.cc). What carries over:
 * - the flag set, defaults and value checks of options_impl.cc (drain 600 s, parent shutdown
 *   900 s, flush 10000 ms / 64 KiB, log level info, concurrency = hardware threads, and
 *   "--concurrency 0" runs one worker: Envoy takes max(1, value));
 * - TCLAP's reading of argv: the argument after a value flag is its value whatever it looks like
 *   ("-l --mode" sets the level to "--mode"); a flag given twice is an error ("Argument already
 *   set!"), except the repeatable --stats-tag; "--" and "--ignore_rest" end parsing and what
 *   follows is ignored; "" and "-" are accepted and do nothing; a value may share its flag's
 *   argument after a space ("--concurrency 2" as one argv item, TCLAP's delimiter);
 * - -h/--help and --version win as soon as they are read, before any value is validated.
 * Where we differ, on purpose: "--flag=value" is accepted too (TCLAP rejects it); integer values
 * must be plain decimal digits; messages name the flag as it was spelled.
 *
 * Flags that only matter to Envoy's hot restart are accepted and validated but change nothing
 * here, and --restart-epoch must be 0. Flags older pilot-agents passed and Envoy has since
 * removed (--max-obj-name-len, --allow-unknown-fields, --v2-config-only,
 * --log-format-prefix-with-location) are accepted for those agents.
 *
 * Parsing runs in two passes: scan() reads argv into one raw string per flag (syntax errors
 * only), then apply() converts and validates each value into struct msm_options. */
#include "server/options.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"

enum opt_kind {
    K_SWITCH = 0, /* no value */
    K_STRING = 1, /* one value, given at most once */
    K_U32 = 2,    /* decimal 0..UINT32_MAX */
    K_U64 = 3,    /* decimal 0..UINT64_MAX */
    K_MULTI = 4,  /* one value per occurrence, repeatable (--stats-tag) */
};

enum opt_id {
    O_CONFIG_PATH = 0,
    O_CONFIG_YAML,
    O_MODE,
    O_ALLOW_UNKNOWN_STATIC,
    O_REJECT_UNKNOWN_DYNAMIC,
    O_IGNORE_UNKNOWN_DYNAMIC,
    O_DISABLE_EXTENSIONS,
    O_LOG_LEVEL,
    O_COMPONENT_LOG_LEVEL,
    O_LOG_FORMAT,
    O_LOG_FORMAT_ESCAPED,
    O_LOG_PATH,
    O_SKIP_DEPRECATED_LOGS,
    O_ENABLE_FINE_GRAIN_LOGGING,
    O_LOG_STACKTRACE_SINGLE_ENTRY,
    O_CONCURRENCY,
    O_CPUSET_THREADS,
    O_LOCAL_ADDRESS_IP_VERSION,
    O_DRAIN_TIME_S,
    O_DRAIN_STRATEGY,
    O_PARENT_SHUTDOWN_TIME_S,
    O_FILE_FLUSH_INTERVAL_MSEC,
    O_FILE_FLUSH_MIN_SIZE_KB,
    O_ADMIN_ADDRESS_PATH,
    O_ENABLE_CORE_DUMP,
    O_ENABLE_MUTEX_TRACING,
    O_STATS_TAG,
    O_SERVICE_CLUSTER,
    O_SERVICE_NODE,
    O_SERVICE_ZONE,
    O_DISABLE_HOT_RESTART,
    O_RESTART_EPOCH,
    O_BASE_ID,
    O_USE_DYNAMIC_BASE_ID,
    O_BASE_ID_PATH,
    O_SOCKET_PATH,
    O_SOCKET_MODE,
    O_SKIP_HOT_RESTART_ON_NO_PARENT,
    O_SKIP_HOT_RESTART_PARENT_STATS,
    O_HOT_RESTART_VERSION,
    O_ALLOW_UNKNOWN_FIELDS,
    O_MAX_OBJ_NAME_LEN,
    O_V2_CONFIG_ONLY,
    O_LOG_FORMAT_PREFIX_WITH_LOCATION,
    O_VERSION,
    O_HELP,
    O_COUNT
};

struct opt_def {
    const char *name; /* long name, without "--" */
    char short_name;  /* 0 = none */
    enum opt_kind kind;
    const char *arg;  /* value placeholder for the usage text */
    const char *help; /* one line */
    const char *section; /* usage heading printed before this flag, or NULL */
};

#define COMPAT "accepted for older pilot-agents; "
#define HOTRST "no hot restart here: "

static const struct opt_def defs[O_COUNT] = {
    [O_CONFIG_PATH] = {"config-path", 'c', K_STRING, "<path>",
                       "bootstrap file (.json, .yaml, .pb, .pb_text)", "Configuration"},
    [O_CONFIG_YAML] = {"config-yaml", 0, K_STRING, "<yaml>",
                       "inline YAML/JSON bootstrap, merged over --config-path", NULL},
    [O_MODE] = {"mode", 0, K_STRING, "<mode>",
                "serve (default), validate (check the config, exit) or init_only", NULL},
    [O_ALLOW_UNKNOWN_STATIC] = {"allow-unknown-static-fields", 0, K_SWITCH, NULL,
                                "tolerate unknown fields in the bootstrap", NULL},
    [O_REJECT_UNKNOWN_DYNAMIC] = {"reject-unknown-dynamic-fields", 0, K_SWITCH, NULL,
                                  "reject xDS resources that have unknown fields", NULL},
    [O_IGNORE_UNKNOWN_DYNAMIC] = {"ignore-unknown-dynamic-fields", 0, K_SWITCH, NULL,
                                  "do not even log unknown fields in xDS resources", NULL},
    [O_DISABLE_EXTENSIONS] = {"disable-extensions", 0, K_STRING, "<list>",
                              "comma-separated category/name extensions to disable", NULL},
    [O_LOG_LEVEL] = {"log-level", 'l', K_STRING, "<level>",
                     "trace|debug|info|warning|warn|error|critical|off (default info)",
                     "Logging"},
    [O_COMPONENT_LOG_LEVEL] = {"component-log-level", 0, K_STRING, "<c:lvl,...>",
                               "per-logger levels, e.g. upstream:debug,config:trace", NULL},
    [O_LOG_FORMAT] = {"log-format", 0, K_STRING, "<format>",
                      "spdlog pattern, default " MSM_LOG_DEFAULT_FORMAT, NULL},
    [O_LOG_FORMAT_ESCAPED] = {"log-format-escaped", 0, K_SWITCH, NULL,
                              "escape C-style control characters in log messages", NULL},
    [O_LOG_PATH] = {"log-path", 0, K_STRING, "<path>",
                    "write the application log to this file instead of stderr", NULL},
    [O_SKIP_DEPRECATED_LOGS] = {"skip-deprecated-logs", 0, K_SWITCH, NULL,
                                "do not log uses of deprecated configuration", NULL},
    [O_ENABLE_FINE_GRAIN_LOGGING] = {"enable-fine-grain-logging", 0, K_SWITCH, NULL,
                                     "accepted for Envoy compatibility; no effect", NULL},
    [O_LOG_STACKTRACE_SINGLE_ENTRY] = {"log-stacktrace-single-entry", 0, K_SWITCH, NULL,
                                       "accepted for Envoy compatibility; no effect", NULL},
    [O_CONCURRENCY] = {"concurrency", 0, K_U32, "<n>",
                       "worker threads (default: online CPUs; 0 runs one worker)", "Process"},
    [O_CPUSET_THREADS] = {"cpuset-threads", 0, K_SWITCH, NULL,
                          "without --concurrency, use the CPUs of this process's cpuset", NULL},
    [O_LOCAL_ADDRESS_IP_VERSION] = {"local-address-ip-version", 0, K_STRING, "<v4|v6>",
                                    "IP version of the local address (default v4)", NULL},
    [O_DRAIN_TIME_S] = {"drain-time-s", 0, K_U32, "<s>",
                        "listener drain time in seconds (default 600)", NULL},
    [O_DRAIN_STRATEGY] = {"drain-strategy", 0, K_STRING, "<strategy>",
                          "gradual (default) or immediate", NULL},
    [O_PARENT_SHUTDOWN_TIME_S] = {"parent-shutdown-time-s", 0, K_U32, "<s>",
                                  HOTRST "accepted, unused (default 900)", NULL},
    [O_FILE_FLUSH_INTERVAL_MSEC] = {"file-flush-interval-msec", 0, K_U32, "<ms>",
                                    "access log flush interval (default 10000)", NULL},
    [O_FILE_FLUSH_MIN_SIZE_KB] = {"file-flush-min-size-kb", 0, K_U32, "<kb>",
                                  "buffered access log size that forces a flush (default 64)",
                                  NULL},
    [O_ADMIN_ADDRESS_PATH] = {"admin-address-path", 0, K_STRING, "<path>",
                              "write the admin listener's address to this file", NULL},
    [O_ENABLE_CORE_DUMP] = {"enable-core-dump", 0, K_SWITCH, NULL, "enable core dumps", NULL},
    [O_ENABLE_MUTEX_TRACING] = {"enable-mutex-tracing", 0, K_SWITCH, NULL,
                                "accepted for Envoy compatibility; no effect", NULL},
    [O_STATS_TAG] = {"stats-tag", 0, K_MULTI, "<name:value>",
                     "tag added to every stat; repeatable", NULL},
    [O_SERVICE_CLUSTER] = {"service-cluster", 0, K_STRING, "<name>",
                           "local service cluster (overrides bootstrap node.cluster)", "Node"},
    [O_SERVICE_NODE] = {"service-node", 0, K_STRING, "<name>",
                        "local service node (overrides bootstrap node.id)", NULL},
    [O_SERVICE_ZONE] = {"service-zone", 0, K_STRING, "<zone>",
                        "local zone (overrides bootstrap node.locality.zone)", NULL},
    [O_DISABLE_HOT_RESTART] = {"disable-hot-restart", 0, K_SWITCH, NULL,
                               HOTRST "accepted, always in effect", "Hot restart (Envoy)"},
    [O_RESTART_EPOCH] = {"restart-epoch", 0, K_U32, "<n>", HOTRST "only 0 is accepted", NULL},
    [O_BASE_ID] = {"base-id", 0, K_U32, "<n>", HOTRST "accepted, unused", NULL},
    [O_USE_DYNAMIC_BASE_ID] = {"use-dynamic-base-id", 0, K_SWITCH, NULL,
                               HOTRST "accepted, unused", NULL},
    [O_BASE_ID_PATH] = {"base-id-path", 0, K_STRING, "<path>", HOTRST "accepted, unused", NULL},
    [O_SOCKET_PATH] = {"socket-path", 0, K_STRING, "<path>", HOTRST "accepted, unused", NULL},
    [O_SOCKET_MODE] = {"socket-mode", 0, K_STRING, "<octal>",
                       HOTRST "accepted (octal), unused", NULL},
    [O_SKIP_HOT_RESTART_ON_NO_PARENT] = {"skip-hot-restart-on-no-parent", 0, K_SWITCH, NULL,
                                         HOTRST "accepted, unused", NULL},
    [O_SKIP_HOT_RESTART_PARENT_STATS] = {"skip-hot-restart-parent-stats", 0, K_SWITCH, NULL,
                                         HOTRST "accepted, unused", NULL},
    [O_HOT_RESTART_VERSION] = {"hot-restart-version", 0, K_SWITCH, NULL,
                               "print the hot restart compatibility version and exit", NULL},
    [O_ALLOW_UNKNOWN_FIELDS] = {"allow-unknown-fields", 0, K_SWITCH, NULL,
                                COMPAT "= --allow-unknown-static-fields",
                                "Removed from Envoy, still accepted"},
    [O_MAX_OBJ_NAME_LEN] = {"max-obj-name-len", 0, K_U64, "<n>",
                            COMPAT "at least 60, otherwise unused", NULL},
    [O_V2_CONFIG_ONLY] = {"v2-config-only", 0, K_SWITCH, NULL, COMPAT "no effect", NULL},
    [O_LOG_FORMAT_PREFIX_WITH_LOCATION] = {"log-format-prefix-with-location", 0, K_STRING,
                                           "<0|1>", COMPAT "1 puts [%g:%#] before %v",
                                           NULL},
    [O_VERSION] = {"version", 0, K_SWITCH, NULL, "print the version and exit", "Information"},
    [O_HELP] = {"help", 'h', K_SWITCH, NULL, "print this text and exit", NULL},
};

/* What scan() read: the raw value of each flag (a pointer into argv, or "" for a switch). */
struct scan {
    const char *val[O_COUNT]; /* for --stats-tag: the last one */
    bool is_short[O_COUNT];   /* spelled -c / -l / -h: error messages use the same spelling */
    const char **tags;        /* every --stats-tag value, in order (room for argc) */
    int n_tags;
};

/* Write "--name" or "-x", as the user spelled flag <id>, into <buf>. */
static const char *flag_name(const struct scan *s, int id, char *buf, size_t n)
{
    if (s->is_short[id]) {
        snprintf(buf, n, "-%c", defs[id].short_name);
    } else {
        snprintf(buf, n, "--%s", defs[id].name);
    }
    return buf;
}

static int find_long(const char *name, size_t len)
{
    for (int i = 0; i < O_COUNT; i++) {
        if (strlen(defs[i].name) == len && !strncmp(defs[i].name, name, len)) {
            return i;
        }
    }
    return -1;
}

static int find_short(char c)
{
    for (int i = 0; i < O_COUNT; i++) {
        if (defs[i].short_name && defs[i].short_name == c) {
            return i;
        }
    }
    return -1;
}

/* Split "name", "name=value" or "name value" (<body> is <arg> without its dashes): returns the
 * flag id, or -1. <*sep> points at the '\0', '=' or ' ' that ends the name. */
static int lookup(const char *arg, const char *body, bool *is_short, const char **sep)
{
    size_t len = strcspn(body, "= ");
    *sep = body + len;
    *is_short = body - arg == 1;
    if (*is_short) {
        return len == 1 ? find_short(body[0]) : -1;
    }
    return find_long(body, len);
}

/* Pass 1: argv to raw values. Only syntax is checked here (unknown flag, positional argument,
 * missing value, value on a switch, repeated flag); values are checked by apply(). */
static int scan(struct scan *s, int argc, char *const *argv, struct msm_err *err)
{
    char name[48];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "") || !strcmp(a, "-")) {
            continue; /* TCLAP matches these as an empty group of short switches */
        }
        if (!strcmp(a, "--") || !strcmp(a, "--ignore_rest")) {
            return 0; /* TCLAP's ignore-rest switch: everything after it is ignored */
        }
        if (a[0] != '-') {
            return msm_err_set(err, "unexpected argument '%s' (msm-proxy takes no positional "
                               "arguments; see --help)", a);
        }
        bool is_short;
        const char *sep;
        int id = lookup(a, a[1] == '-' ? a + 2 : a + 1, &is_short, &sep);
        if (id < 0) {
            return msm_err_set(err, "unknown option '%.*s'",
                               sep > a + 2 ? (int)(sep - a) : (int)strlen(a), a);
        }
        if (s->val[id] && defs[id].kind != K_MULTI) {
            if (defs[id].short_name) {
                return msm_err_set(err, "option '-%c/--%s' given more than once",
                                   defs[id].short_name, defs[id].name);
            }
            return msm_err_set(err, "option '--%s' given more than once", defs[id].name);
        }
        s->is_short[id] = is_short;
        if (defs[id].kind == K_SWITCH) {
            if (*sep) {
                return msm_err_set(err, "option '%s' does not take a value",
                                   flag_name(s, id, name, sizeof(name)));
            }
            s->val[id] = "";
            if (id == O_HELP || id == O_VERSION) {
                return 0; /* TCLAP prints and exits right here, before any validation */
            }
            continue;
        }
        const char *v;
        if (*sep == '=' || (*sep == ' ' && sep[1])) {
            v = sep + 1;
        } else if (i + 1 < argc) {
            v = argv[++i]; /* whatever it looks like, as TCLAP does */
        } else {
            return msm_err_set(err, "option '%s' requires a value",
                               flag_name(s, id, name, sizeof(name)));
        }
        s->val[id] = v;
        if (defs[id].kind == K_MULTI) {
            s->tags[s->n_tags++] = v;
        }
    }
    return 0;
}

/* Decimal digits only, at most <max>. */
static int parse_uint(const char *flag, const char *v, uint64_t max, uint64_t *out,
                      struct msm_err *err)
{
    if (!*v || strspn(v, "0123456789") != strlen(v)) {
        return msm_err_set(err, "option '%s': invalid value '%.64s' (expected an unsigned "
                           "decimal integer)", flag, v);
    }
    uint64_t n = 0;
    for (const char *p = v; *p; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (n > (max - d) / 10) {
            return msm_err_set(err, "option '%s': value '%.64s' out of range (0..%llu)", flag, v,
                               (unsigned long long)max);
        }
        n = n * 10 + d;
    }
    *out = n;
    return 0;
}

/* Envoy's parseAndValidateLogLevel(): spdlog's names plus "warn". */
static int parse_level(const char *flag, const char *v, int *out, struct msm_err *err)
{
    int lvl = msm_log_level_parse(v);
    if (lvl < 0) {
        return msm_err_set(err, "option '%s': invalid log level specified '%.64s' (expected "
                           "trace, debug, info, warning, warn, error, critical or off)", flag, v);
    }
    *out = lvl;
    return 0;
}

/* Envoy's parseComponentLogLevels(): "" sets nothing; otherwise every comma-separated item must
 * be exactly "component:level", the level is checked first, then the component. */
static int parse_components(struct msm_options *opts, const char *flag, const char *v,
                            struct msm_err *err)
{
    opts->component_log_level = msm_xstrdup(v);
    if (!*v) {
        return 0;
    }
    int n = 1;
    for (const char *p = v; *p; p++) {
        n += *p == ',';
    }
    opts->component_levels = msm_xcalloc((size_t)n, sizeof(*opts->component_levels));
    const char *item = v;
    for (;;) {
        size_t len = strcspn(item, ",");
        const char *colon = memchr(item, ':', len);
        if (!colon || memchr(colon + 1, ':', len - (size_t)(colon + 1 - item))) {
            return msm_err_set(err, "option '%s': component log level not correctly specified "
                               "'%.*s' (expected component:level)", flag, (int)len, item);
        }
        char *comp = msm_xstrndup(item, (size_t)(colon - item));
        char *lvl_s = msm_xstrndup(colon + 1, len - (size_t)(colon + 1 - item));
        int lvl = 0;
        int rc = parse_level(flag, lvl_s, &lvl, err);
        free(lvl_s);
        if (rc == 0 && msm_log_component_find(comp) < 0) {
            rc = msm_err_set(err, "option '%s': invalid component specified '%.64s'", flag, comp);
        }
        if (rc < 0) {
            free(comp);
            return rc;
        }
        opts->component_levels[opts->n_component_levels].component = comp;
        opts->component_levels[opts->n_component_levels].level = lvl;
        opts->n_component_levels++;
        if (!item[len]) {
            return 0;
        }
        item += len + 1;
    }
}

/* --stats-tag name:value, split at the first ':' (Envoy: name alphanumeric, value without '.').
 * A name given twice is refused, as Envoy's help text says. */
static int add_stats_tag(struct msm_options *opts, const char *v, struct msm_err *err)
{
    const char *colon = strchr(v, ':');
    if (!colon) {
        return msm_err_set(err, "option '--stats-tag': misformatted stats-tag '%.64s' (expected "
                           "name:value)", v);
    }
    for (const char *p = v; p < colon; p++) {
        bool alnum = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9');
        if (!alnum) {
            return msm_err_set(err, "option '--stats-tag': misformatted stats-tag '%.64s' "
                               "contains invalid char in '%.*s'", v, (int)(colon - v), v);
        }
    }
    if (strchr(colon + 1, '.')) {
        return msm_err_set(err, "option '--stats-tag': misformatted stats-tag '%.64s' contains "
                           "invalid char in '%.64s'", v, colon + 1);
    }
    for (int i = 0; i < opts->n_stats_tags; i++) {
        const char *prev = opts->stats_tags[i].name;
        if (strlen(prev) == (size_t)(colon - v) && !strncmp(prev, v, (size_t)(colon - v))) {
            return msm_err_set(err, "option '--stats-tag': tag name '%s' given more than once",
                               prev);
        }
    }
    opts->stats_tags = msm_xrealloc(opts->stats_tags,
                                    (size_t)(opts->n_stats_tags + 1) * sizeof(*opts->stats_tags));
    opts->stats_tags[opts->n_stats_tags].name = msm_xstrndup(v, (size_t)(colon - v));
    opts->stats_tags[opts->n_stats_tags].value = msm_xstrdup(colon + 1);
    opts->n_stats_tags++;
    return 0;
}

static uint32_t online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (uint32_t)n : 1;
}

/* Envoy's OptionsImplPlatform::getCpuCount() on Linux: the affinity mask's size, else the
 * hardware count. */
static uint32_t cpuset_cpus(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        return online_cpus();
    }
    int n = CPU_COUNT(&set);
    return n >= 1 ? (uint32_t)n : 1;
}

/* Match <v> against <names> (NULL-terminated); returns the index or -1. */
static int pick(const char *v, const char *const *names)
{
    for (int i = 0; names[i]; i++) {
        if (!strcmp(v, names[i])) {
            return i;
        }
    }
    return -1;
}

static int apply_enums(struct msm_options *opts, const struct scan *s, struct msm_err *err)
{
    static const char *const modes[] = {"serve", "validate", "init_only", NULL};
    static const char *const strategies[] = {"gradual", "immediate", NULL};
    static const char *const versions[] = {"v4", "v6", NULL};
    char name[48];
    int i;
    if (s->val[O_MODE]) {
        i = pick(s->val[O_MODE], modes);
        if (i < 0) {
            return msm_err_set(err, "option '--mode': unknown mode '%.64s' (expected serve, "
                               "validate or init_only)", s->val[O_MODE]);
        }
        opts->mode = (enum msm_mode)i;
    }
    if (s->val[O_DRAIN_STRATEGY]) {
        i = pick(s->val[O_DRAIN_STRATEGY], strategies);
        if (i < 0) {
            return msm_err_set(err, "option '--drain-strategy': unknown drain-strategy '%.64s' "
                               "(expected gradual or immediate)", s->val[O_DRAIN_STRATEGY]);
        }
        opts->drain_strategy = (enum msm_drain_strategy)i;
    }
    if (s->val[O_LOCAL_ADDRESS_IP_VERSION]) {
        i = pick(s->val[O_LOCAL_ADDRESS_IP_VERSION], versions);
        if (i < 0) {
            return msm_err_set(err, "option '--local-address-ip-version': unknown IP address "
                               "version '%.64s' (expected v4 or v6)",
                               s->val[O_LOCAL_ADDRESS_IP_VERSION]);
        }
        opts->local_address_ip_version = (enum msm_ip_version)i;
    }
    if (s->val[O_LOG_LEVEL]) {
        int rc = parse_level(flag_name(s, O_LOG_LEVEL, name, sizeof(name)), s->val[O_LOG_LEVEL],
                             &opts->log_level, err);
        if (rc < 0) {
            return rc;
        }
    }
    if (s->val[O_COMPONENT_LOG_LEVEL]) {
        return parse_components(opts, "--component-log-level", s->val[O_COMPONENT_LOG_LEVEL],
                                err);
    }
    return 0;
}

/* The plain uint32 flags: where each value goes. */
static uint32_t *u32_field(struct msm_options *opts, int id)
{
    switch (id) {
    case O_DRAIN_TIME_S:
        return &opts->drain_time_s;
    case O_PARENT_SHUTDOWN_TIME_S:
        return &opts->parent_shutdown_time_s;
    case O_FILE_FLUSH_INTERVAL_MSEC:
        return &opts->file_flush_interval_msec;
    case O_FILE_FLUSH_MIN_SIZE_KB:
        return &opts->file_flush_min_size_kb;
    case O_BASE_ID:
        return &opts->base_id;
    case O_RESTART_EPOCH:
        return &opts->restart_epoch;
    case O_CONCURRENCY:
        return &opts->concurrency;
    default:
        return NULL;
    }
}

static int apply_numbers(struct msm_options *opts, const struct scan *s, struct msm_err *err)
{
    char name[48];
    uint64_t n = 0;
    for (int id = 0; id < O_COUNT; id++) {
        if (!s->val[id] || (defs[id].kind != K_U32 && defs[id].kind != K_U64)) {
            continue;
        }
        flag_name(s, id, name, sizeof(name));
        int rc = parse_uint(name, s->val[id], defs[id].kind == K_U32 ? UINT32_MAX : UINT64_MAX,
                            &n, err);
        if (rc < 0) {
            return rc;
        }
        uint32_t *field = u32_field(opts, id);
        if (field) {
            *field = (uint32_t)n;
        }
        if (id == O_MAX_OBJ_NAME_LEN && n < 60) {
            return msm_err_set(err, "option '%s': the value specified (%llu) is less than the "
                               "minimum value of 60", name, (unsigned long long)n);
        }
    }
    if (opts->restart_epoch != 0) {
        return msm_err_set(err, "option '--restart-epoch': hot restart is not supported, only 0 "
                           "is accepted (got %u)", opts->restart_epoch);
    }
    if (s->val[O_CONCURRENCY]) {
        opts->concurrency = opts->concurrency ? opts->concurrency : 1; /* max(1, value) */
    } else {
        opts->concurrency = opts->cpuset_threads ? cpuset_cpus() : online_cpus();
    }
    return 0;
}

/* Envoy checks --socket-mode (octal) only when --socket-path is not an abstract "@name";
 * its default path is abstract. */
static int check_socket_mode(const struct scan *s, struct msm_err *err)
{
    const char *path = s->val[O_SOCKET_PATH];
    const char *mode = s->val[O_SOCKET_MODE];
    if (!mode || !path || path[0] == '@') {
        return 0;
    }
    if (!*mode || strspn(mode, "01234567") != strlen(mode) || strlen(mode) > 6) {
        return msm_err_set(err, "option '--socket-mode': invalid socket-mode '%.64s' (expected "
                           "octal digits)", mode);
    }
    return 0;
}

/* --log-format-prefix-with-location 1 (older Envoy): "%v" becomes "[%g:%#] %v" in the
 * --log-format pattern. 0, or no --log-format, leaves the pattern as it is. */
static int apply_prefix_location(struct msm_options *opts, const char *v, struct msm_err *err)
{
    static const char *const bools[] = {"0", "false", "1", "true", NULL};
    int i = pick(v, bools);
    if (i < 0) {
        return msm_err_set(err, "option '--log-format-prefix-with-location': invalid value "
                           "'%.64s' (expected 0 or 1)", v);
    }
    if (i < 2 || !opts->log_format) {
        return 0;
    }
    const char *f = opts->log_format;
    size_t n = 0;
    for (const char *p = strstr(f, "%v"); p; p = strstr(p + 2, "%v")) {
        n++;
    }
    char *out = msm_xmalloc(strlen(f) + n * strlen("[%g:%#] ") + 1);
    char *o = out;
    for (const char *p = strstr(f, "%v"); p; p = strstr(f, "%v")) {
        memcpy(o, f, (size_t)(p - f));
        o += p - f;
        o = stpcpy(o, "[%g:%#] %v");
        f = p + 2;
    }
    strcpy(o, f);
    free(opts->log_format);
    opts->log_format = out;
    return 0;
}

static char *dup_opt(const struct scan *s, int id)
{
    return s->val[id] ? msm_xstrdup(s->val[id]) : NULL;
}

static void apply_strings(struct msm_options *opts, const struct scan *s)
{
    opts->config_path = dup_opt(s, O_CONFIG_PATH);
    opts->config_yaml = dup_opt(s, O_CONFIG_YAML);
    opts->log_format = dup_opt(s, O_LOG_FORMAT);
    opts->log_format_set = s->val[O_LOG_FORMAT] != NULL;
    opts->log_path = dup_opt(s, O_LOG_PATH);
    opts->service_cluster = dup_opt(s, O_SERVICE_CLUSTER);
    opts->service_node = dup_opt(s, O_SERVICE_NODE);
    opts->service_zone = dup_opt(s, O_SERVICE_ZONE);
    opts->base_id_path = dup_opt(s, O_BASE_ID_PATH);
    opts->admin_address_path = dup_opt(s, O_ADMIN_ADDRESS_PATH);
    opts->disable_extensions = dup_opt(s, O_DISABLE_EXTENSIONS);

    opts->allow_unknown_static_fields = s->val[O_ALLOW_UNKNOWN_STATIC] ||
                                        s->val[O_ALLOW_UNKNOWN_FIELDS];
    opts->reject_unknown_dynamic_fields = s->val[O_REJECT_UNKNOWN_DYNAMIC] != NULL;
    opts->ignore_unknown_dynamic_fields = s->val[O_IGNORE_UNKNOWN_DYNAMIC] != NULL;
    opts->disable_hot_restart = s->val[O_DISABLE_HOT_RESTART] != NULL;
    opts->use_dynamic_base_id = s->val[O_USE_DYNAMIC_BASE_ID] != NULL;
    opts->skip_deprecated_logs = s->val[O_SKIP_DEPRECATED_LOGS] != NULL;
    opts->enable_core_dump = s->val[O_ENABLE_CORE_DUMP] != NULL;
    opts->cpuset_threads = s->val[O_CPUSET_THREADS] != NULL;
    opts->log_format_escaped = s->val[O_LOG_FORMAT_ESCAPED] != NULL;
    opts->hot_restart_version = s->val[O_HOT_RESTART_VERSION] != NULL;
}

/* Pass 2: convert and validate the raw values, in Envoy's order where it matters. */
static int apply(struct msm_options *opts, const struct scan *s, struct msm_err *err)
{
    apply_strings(opts, s);
    int rc = apply_enums(opts, s, err);
    if (rc == 0) {
        rc = apply_numbers(opts, s, err);
    }
    if (rc == 0) {
        rc = check_socket_mode(s, err);
    }
    if (rc == 0 && s->val[O_LOG_FORMAT_PREFIX_WITH_LOCATION]) {
        rc = apply_prefix_location(opts, s->val[O_LOG_FORMAT_PREFIX_WITH_LOCATION], err);
    }
    for (int i = 0; rc == 0 && i < s->n_tags; i++) {
        rc = add_stats_tag(opts, s->tags[i], err);
    }
    return rc;
}

static char *join_argv(int argc, char *const *argv)
{
    size_t len = 1;
    for (int i = 0; i < argc; i++) {
        len += strlen(argv[i]) + 1;
    }
    char *out = msm_xmalloc(len);
    char *o = out;
    *o = '\0';
    for (int i = 0; i < argc; i++) {
        if (i > 0) {
            *o++ = ' ';
        }
        o = stpcpy(o, argv[i]);
    }
    return out;
}

static void set_defaults(struct msm_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->mode = MSM_MODE_SERVE;
    opts->drain_time_s = 600;
    opts->drain_strategy = MSM_DRAIN_GRADUAL;
    opts->parent_shutdown_time_s = 900;
    opts->local_address_ip_version = MSM_IP_V4;
    opts->file_flush_interval_msec = 10000;
    opts->file_flush_min_size_kb = 64;
    opts->log_level = MSM_LOG_INFO;
    opts->concurrency = online_cpus();
}

int msm_options_parse(struct msm_options *opts, int argc, char *const *argv, struct msm_err *err)
{
    struct scan s;
    memset(&s, 0, sizeof(s));
    set_defaults(opts);
    if (argc < 0) {
        argc = 0;
    }
    opts->command_line = join_argv(argc, argv);
    s.tags = msm_xcalloc((size_t)argc + 1, sizeof(*s.tags));
    int rc = scan(&s, argc, argv, err);
    if (rc == 0 && s.val[O_HELP]) {
        opts->help = true;
    } else if (rc == 0 && s.val[O_VERSION]) {
        opts->version = true;
    } else if (rc == 0) {
        rc = apply(opts, &s, err);
    }
    free(s.tags);
    if (rc < 0) {
        msm_options_deinit(opts);
    }
    return rc;
}

void msm_options_deinit(struct msm_options *opts)
{
    free(opts->config_path);
    free(opts->config_yaml);
    for (int i = 0; i < opts->n_component_levels; i++) {
        free(opts->component_levels[i].component);
    }
    free(opts->component_levels);
    free(opts->component_log_level);
    free(opts->log_format);
    free(opts->log_path);
    free(opts->service_cluster);
    free(opts->service_node);
    free(opts->service_zone);
    free(opts->base_id_path);
    free(opts->admin_address_path);
    free(opts->command_line);
    for (int i = 0; i < opts->n_stats_tags; i++) {
        free(opts->stats_tags[i].name);
        free(opts->stats_tags[i].value);
    }
    free(opts->stats_tags);
    free(opts->disable_extensions);
    memset(opts, 0, sizeof(*opts));
}

#define USAGE_LEFT 31

void msm_options_usage(void *out, const char *argv0)
{
    FILE *f = out;
    fprintf(f, "Usage: %s [options]\n\n"
               "Envoy's command line (what pilot-agent passes works unchanged). A value follows "
               "its flag\nas the next argument or after '=': --drain-time-s 45, "
               "--drain-time-s=45.\n", argv0 ? argv0 : "msm-proxy");
    for (int i = 0; i < O_COUNT; i++) {
        const struct opt_def *d = &defs[i];
        char left[64];
        int n;
        if (d->section) {
            fprintf(f, "\n%s:\n", d->section);
        }
        if (d->short_name) {
            n = snprintf(left, sizeof(left), "-%c, --%s", d->short_name, d->name);
        } else {
            n = snprintf(left, sizeof(left), "    --%s", d->name);
        }
        if (d->arg && n > 0 && (size_t)n < sizeof(left)) {
            snprintf(left + n, sizeof(left) - (size_t)n, " %s", d->arg);
        }
        /* Two columns within 100; a long flag puts its description on the next line. */
        if (strlen(left) > USAGE_LEFT) {
            fprintf(f, "  %s\n  %-*s %s\n", left, USAGE_LEFT, "", d->help);
        } else {
            fprintf(f, "  %-*s %s\n", USAGE_LEFT, left, d->help);
        }
    }
}
