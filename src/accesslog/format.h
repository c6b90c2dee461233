#pragma once
/* Access log formats: Envoy's substitution format strings ("[%START_TIME%] %BYTES_SENT%...") and
 * format dictionaries (json_format, typed or not), compiled once at config time and rendered
 * per log entry on the worker that logs (no allocation but the output buffer's growth).
 *
 * Command operators: %NAME%, %NAME(arg)%, %NAME(arg):<max length>%; "%%" is a literal '%'.
 * Supported (see docs/access_log.md for the full list): START_TIME[(fmt)], DURATION,
 * REQUEST_DURATION, REQUEST_TX_DURATION, RESPONSE_DURATION, RESPONSE_TX_DURATION, BYTES_RECEIVED,
 * BYTES_SENT, PROTOCOL, RESPONSE_CODE, RESPONSE_CODE_DETAILS, CONNECTION_TERMINATION_DETAILS,
 * RESPONSE_FLAGS, RESPONSE_FLAGS_LONG, UPSTREAM_HOST, UPSTREAM_CLUSTER, UPSTREAM_CLUSTER_RAW,
 * UPSTREAM_LOCAL_ADDRESS[_WITHOUT_PORT], UPSTREAM_LOCAL_PORT, UPSTREAM_REMOTE_ADDRESS
 * [_WITHOUT_PORT], UPSTREAM_REMOTE_PORT, UPSTREAM_TRANSPORT_FAILURE_REASON,
 * UPSTREAM_REQUEST_ATTEMPT_COUNT, UPSTREAM_CONNECTION_ID, DOWNSTREAM_REMOTE_ADDRESS
 * [_WITHOUT_PORT], DOWNSTREAM_REMOTE_PORT, DOWNSTREAM_DIRECT_REMOTE_ADDRESS[_WITHOUT_PORT],
 * DOWNSTREAM_LOCAL_ADDRESS[_WITHOUT_PORT], DOWNSTREAM_LOCAL_PORT, REQUESTED_SERVER_NAME,
 * ROUTE_NAME, CONNECTION_ID, HOSTNAME, ENVIRONMENT(X), DOWNSTREAM_PEER_URI_SAN,
 * DOWNSTREAM_LOCAL_URI_SAN, DOWNSTREAM_TLS_VERSION, DOWNSTREAM_TLS_CIPHER,
 * DOWNSTREAM_TRANSPORT_FAILURE_REASON, REQ(X?Y)/REQUEST_HEADER, RESP(X?Y)/RESPONSE_HEADER,
 * TRAILER(X)/RESPONSE_TRAILER, REQ_WITHOUT_QUERY(X?Y). Operators that read data this proxy
 * does not keep (DYNAMIC_METADATA, FILTER_STATE, CEL, TRACE_ID...) are accepted and print "-".
 * Anything else is a config error, as in Envoy ("Not supported field in StreamInfo: X").
 *
 * Unavailable values print "-" in text ("" with omit_empty_values) and null in typed JSON (the
 * key is left out with omit_empty_values). In typed JSON a value made of exactly one operator
 * keeps its type (numbers for byte counts, durations, codes and ports); anything else is a
 * string. Keys are printed in sorted order. Immutable once built: any thread may render. */
#include <stdbool.h>
#include <stddef.h>

#include "accesslog/stream_info.h"
#include "common/err.h"

struct msm_al_formatter;

/* A growable output line. */
struct msm_al_line {
    char *p;
    size_t len, cap;
};

void msm_al_line_reset(struct msm_al_line *l);
void msm_al_line_free(struct msm_al_line *l);

/* Envoy's default format (used when a file access log has none). */
#define MSM_AL_DEFAULT_FORMAT                                                                     \
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "           \
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "                  \
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "     \
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n"

/* Compile a format string. NULL with <err> on a syntax error or an unknown operator. */
struct msm_al_formatter *msm_al_formatter_text(const char *fmt, bool omit_empty,
                                               struct msm_err *err);
/* Compile a format dictionary (a google.protobuf.Struct <st>; nested Structs nest, string values
 * are format strings, other scalars are printed as they are). <typed>: typed_json_format /
 * log_format.json_format; otherwise every value is a string (legacy json_format). */
struct msm_al_formatter *msm_al_formatter_json(const void *st, bool typed, bool omit_empty,
                                               struct msm_err *err);
void msm_al_formatter_free(struct msm_al_formatter *f);
/* Append one entry for <si> to <out> (JSON entries end with "\n"; text formats print what the
 * format says). <now> is the loop time used when the stream has not ended. */
void msm_al_format(const struct msm_al_formatter *f, const struct msm_stream_info *si,
                   double now, struct msm_al_line *out);
