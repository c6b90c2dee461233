#pragma once
/* Logging with Envoy's levels, logger (component) names and spdlog-style patterns, so that
 * pilot-agent's flags (-l, --component-log-level) and the bootstrap's application_log_config
 * produce the lines Istio users expect. Thread-safe: one write() per line. */
#include <stdarg.h>
#include <stdbool.h>

enum msm_log_level {
    MSM_LOG_TRACE = 0,
    MSM_LOG_DEBUG = 1,
    MSM_LOG_INFO = 2,
    MSM_LOG_WARN = 3,
    MSM_LOG_ERROR = 4,
    MSM_LOG_CRITICAL = 5,
    MSM_LOG_OFF = 6,
};

/* Envoy's logger names (so --component-log-level accepts what pilot-agent passes), then ours.
 * X(enum-suffix, "name") */
#define MSM_LOG_COMPONENTS(X)                                                                     \
    X(ADMIN, "admin") X(AWS, "aws") X(ASSERT, "assert") X(BACKTRACE, "backtrace")                \
    X(CLIENT, "client") X(CONFIG, "config") X(CONNECTION, "connection")                          \
    X(CONN_HANDLER, "conn_handler") X(DECOMPRESSION, "decompression") X(DNS, "dns")              \
    X(DUBBO, "dubbo") X(ENVOY_BUG, "envoy_bug") X(EXT_AUTHZ, "ext_authz")                        \
    X(EXT_PROC, "ext_proc") X(FILE, "file") X(FILTER, "filter") X(FORWARD_PROXY, "forward_proxy") \
    X(GRPC, "grpc") X(HAPPY_EYEBALLS, "happy_eyeballs") X(HC, "hc")                              \
    X(HEALTH_CHECKER, "health_checker") X(HTTP, "http") X(HTTP2, "http2") X(HYSTRIX, "hystrix")  \
    X(INIT, "init") X(IO, "io") X(JWT, "jwt") X(KAFKA, "kafka") X(KEY_VALUE_STORE,             \
    "key_value_store") X(LUA, "lua") X(MAIN, "main") X(MATCHER, "matcher") X(MISC, "misc")       \
    X(MONGO, "mongo") X(MULTI_CONNECTION, "multi_connection") X(OAUTH2, "oauth2") X(QUIC, "quic") \
    X(QUIC_STREAM, "quic_stream") X(POOL, "pool") X(RATE_LIMIT_QUOTA, "rate_limit_quota")        \
    X(RBAC, "rbac") X(RDS, "rds") X(REDIS, "redis") X(ROUTER, "router") X(RUNTIME, "runtime")    \
    X(STATS, "stats") X(SECRET, "secret") X(TAP, "tap") X(TESTING, "testing") X(THRIFT, "thrift") \
    X(TRACING, "tracing") X(UPSTREAM, "upstream") X(UDP, "udp") X(WASM, "wasm")                  \
    X(WEBSOCKET, "websocket") X(GOLANG, "golang") X(XDS, "xds") X(RTSP, "rtsp") X(SIP, "sip")    \
    X(RTP, "rtp")

enum msm_log_component {
#define MSM_LOG_X(e, s) MSM_LC_##e,
    MSM_LOG_COMPONENTS(MSM_LOG_X)
#undef MSM_LOG_X
        MSM_LC_COUNT
};

/* Level checked before any formatting happens. */
extern int msm_log_levels[MSM_LC_COUNT];

#define msm_log_enabled(lvl, comp) ((int)(lvl) >= msm_log_levels[(comp)])
#define msm_log(lvl, comp, ...)                                                                   \
    do {                                                                                          \
        if (msm_log_enabled((lvl), (comp))) {                                                     \
            msm_log_write((lvl), (comp), __FILE__, __LINE__, __func__, __VA_ARGS__);              \
        }                                                                                         \
    } while (0)

void msm_log_write(enum msm_log_level lvl, enum msm_log_component comp, const char *file,
                   int line, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* "trace".."off" (and Envoy's "warn" alias); -1 when unknown. */
int msm_log_level_parse(const char *s);
const char *msm_log_level_name(enum msm_log_level lvl);
int msm_log_component_find(const char *name);
const char *msm_log_component_name(enum msm_log_component c);
void msm_log_set_all(enum msm_log_level lvl);
void msm_log_set(enum msm_log_component c, enum msm_log_level lvl);

/* Install a spdlog-style text pattern (Envoy's --log-format / application_log_config
 * text_format). Flags: %Y %m %d %H %M %S %T %D %e %f %F %z %l %L %n %t %P %v %_ %j %g %s %#
 * %! %%; unknown flags are copied verbatim. json: when non-NULL, <pattern> is ignored and each
 * line is a JSON object whose values are patterns (application_log_config json_format),
 * given as alternating key/pattern strings, <njson> pairs. Returns 0 or MSM_EINVAL. */
int msm_log_set_format(const char *pattern, const char *const *json, int njson);
/* Envoy's default pattern. */
#define MSM_LOG_DEFAULT_FORMAT "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v"
/* Route log lines to <fd> (default 2). For --log-path. */
void msm_log_set_fd(int fd);
