#pragma once
/* Command-line options: Envoy's CLI as pilot-agent (and people used to Envoy) call it.
 * See ../shared/reference/istio-contract.md section 1.2 and Envoy's `envoy --help`. */
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

enum msm_mode {
    MSM_MODE_SERVE = 0,
    MSM_MODE_VALIDATE = 1,
    MSM_MODE_INIT_ONLY = 2,
};

enum msm_drain_strategy {
    MSM_DRAIN_GRADUAL = 0,
    MSM_DRAIN_IMMEDIATE = 1,
};

enum msm_ip_version {
    MSM_IP_V4 = 0,
    MSM_IP_V6 = 1,
};

struct msm_component_level {
    char *component; /* logger name, validated against MSM_LOG_COMPONENTS */
    int level;       /* enum msm_log_level */
};

/* One --stats-tag name:value (Envoy: name alphanumeric, value without '.'). */
struct msm_stats_tag {
    char *name;
    char *value;
};

struct msm_options {
    char *config_path;          /* -c / --config-path */
    char *config_yaml;          /* --config-yaml (merged over -c) */
    enum msm_mode mode;         /* --mode serve|validate|init_only */
    uint32_t drain_time_s;      /* --drain-time-s, default 600 (Envoy's) */
    enum msm_drain_strategy drain_strategy; /* --drain-strategy gradual|immediate */
    uint32_t parent_shutdown_time_s; /* --parent-shutdown-time-s, default 900; accepted, unused */
    enum msm_ip_version local_address_ip_version; /* --local-address-ip-version v4|v6 */
    uint32_t file_flush_interval_msec; /* --file-flush-interval-msec, default 10000 */
    uint32_t file_flush_min_size_kb;   /* --file-flush-min-size-kb, default 64 */
    bool disable_hot_restart;          /* --disable-hot-restart */
    bool allow_unknown_static_fields;  /* --allow-unknown-static-fields */
    bool reject_unknown_dynamic_fields; /* --reject-unknown-dynamic-fields */
    bool ignore_unknown_dynamic_fields; /* --ignore-unknown-dynamic-fields */
    int log_level;                     /* -l / --log-level, default info */
    struct msm_component_level *component_levels; /* --component-log-level a:lvl,b:lvl */
    int n_component_levels;
    char *log_format;                  /* --log-format (NULL = default / bootstrap's) */
    bool log_format_set;
    char *log_path;                    /* --log-path */
    uint32_t concurrency;              /* --concurrency, default = number of CPUs */
    char *service_cluster;             /* --service-cluster */
    char *service_node;                /* --service-node */
    char *service_zone;                /* --service-zone */
    uint32_t base_id;                  /* --base-id (accepted; no hot restart) */
    bool use_dynamic_base_id;          /* --use-dynamic-base-id */
    char *base_id_path;                /* --base-id-path */
    bool skip_deprecated_logs;         /* --skip-deprecated-logs */
    bool enable_core_dump;             /* --enable-core-dump */
    bool cpuset_threads;               /* --cpuset-threads */
    uint32_t restart_epoch;            /* --restart-epoch (must be 0: no hot restart) */
    char *admin_address_path;          /* --admin-address-path: write the admin address here */
    bool version;                      /* --version */
    bool help;                         /* --help / -h */
    char *command_line;                /* the whole command line, for /server_info */
    /* Added with the parser: the rest of Envoy's current flags. */
    char *component_log_level;         /* raw --component-log-level text, for /server_info */
    bool log_format_escaped;           /* --log-format-escaped */
    struct msm_stats_tag *stats_tags;  /* --stats-tag name:value, repeatable */
    int n_stats_tags;
    char *disable_extensions;          /* --disable-extensions, raw comma-separated list */
    bool hot_restart_version;          /* --hot-restart-version: print it and exit */
};

/* Parse argv into <opts> (zeroed by the callee first, defaults applied). Returns 0, or
 * MSM_EINVAL with <err> naming the flag: unknown flags, missing or malformed values, bad
 * enumerations ("--mode foo") and unknown log components are errors, as in Envoy. Both
 * "--flag value" and "--flag=value" are accepted; short options -c and -l too. A flag given
 * twice is an error (Envoy/TCLAP "Argument already set!"), except --stats-tag.
 * -h/--help and --version stop parsing at once and return 0 with opts->help/opts->version set
 * (the other fields then hold defaults; command_line is always set). On failure <opts> holds
 * no allocation; msm_options_deinit() is safe either way. Reentrant: no global state.
 * <argv> is not modified and not referenced after the call. */
int msm_options_parse(struct msm_options *opts, int argc, char *const *argv, struct msm_err *err);
/* Free everything msm_options_parse() allocated and zero <opts>. Safe to call twice. */
void msm_options_deinit(struct msm_options *opts);
/* Print the usage text (every flag with a one-line description) to <out> (a FILE *). */
void msm_options_usage(void *out, const char *argv0);
