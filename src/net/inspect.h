#pragma once
/* Protocol sniffing on the first bytes of a connection (listener filters). Pure functions over
 * peeked bytes: they never consume data and never allocate. */
#include <stddef.h>
#include <stdint.h>

enum msm_inspect_result {
    MSM_INSPECT_NEED_MORE = 0, /* undecided: peek more bytes */
    MSM_INSPECT_NO = 1,        /* not this protocol */
    MSM_INSPECT_YES = 2,
};

/* envoy.filters.listener.http_inspector: an HTTP/1.0 or HTTP/1.1 request line with a known HTTP
 * method, or the HTTP/2 prior-knowledge preface. On YES, *alpn is "http/1.0", "http/1.1" or
 * "h2c". RTSP ("... RTSP/1.0") and SIP ("... SIP/2.0") request lines are NOT HTTP. A request
 * line longer than MSM_HTTP_INSPECT_MAX bytes is NO. */
#define MSM_HTTP_INSPECT_MAX 8192
/* Envoy's http_inspector stats ("http_inspector." + name). */
#define MSM_HTTP_INSPECTOR_STATS(C, G, H)                                                         \
    C(read_error) C(http10_found) C(http11_found) C(http2_found) C(http_not_found)
enum msm_inspect_result msm_http_inspect(const uint8_t *data, size_t len, const char **alpn);
