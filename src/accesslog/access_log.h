#pragma once
/* Access logs (envoy.config.accesslog.v3.AccessLog): a filter, a format and a sink, built from
 * a repeated access_log field (tcp_proxy, http_connection_manager, listener) and emitted with a
 * stream info when a connection or request ends.
 *
 * Sinks: envoy.access_loggers.file (FileAccessLog: format / json_format / typed_json_format /
 * log_format with text_format, text_format_source or json_format), and the stream loggers
 * envoy.access_loggers.stdout / stderr. Filters (AccessLogFilter): status_code_filter,
 * duration_filter, not_health_check_filter, traceable_filter (nothing is traced: never
 * matches), runtime_filter (its default percentage; no runtime overrides), and_filter,
 * or_filter, header_filter (present / string_match / exact on request headers),
 * response_flag_filter. Other loggers and filters are a config error naming them.
 *
 * How to use (any filter that ends streams):
 *   config time (main thread):  msm_access_logs_build(proto->access_log, proto->n_access_log,
 *                                                     "tcp_proxy", &cfg->logs, err)
 *   end of a stream (worker):   msm_access_logs_emit(&cfg->logs, si, ev_now(loop))
 *   config freed (any thread):  msm_access_logs_deinit(&cfg->logs)
 * The HTTP connection manager fills a struct msm_stream_info per request (protocol, response
 * code, header maps, timings, flags; its MSM_RF bits are the same bit positions as
 * enum msm_response_flag) and calls msm_access_logs_emit once the response is complete. */
#include <stdbool.h>
#include <stddef.h>

#include "accesslog/stream_info.h"
#include "common/err.h"

struct msm_access_log;

struct msm_access_logs {
    struct msm_access_log **v;
    int n;
};

/* Build from <n> envoy.config.accesslog.v3.AccessLog messages. On failure <out> is empty and
 * <err> names the entry ("access_log[1]: ..."). Main thread. */
int msm_access_logs_build(void *const *access_log_protos, size_t n, struct msm_access_logs *out,
                          struct msm_err *err);
void msm_access_logs_deinit(struct msm_access_logs *l);
/* Log <si> to every access log whose filter matches. Any thread (formats into a per-thread
 * buffer, queues to the file). */
void msm_access_logs_emit(const struct msm_access_logs *l, const struct msm_stream_info *si,
                          double now);
