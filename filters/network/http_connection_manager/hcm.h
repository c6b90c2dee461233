#pragma once
/* envoy.filters.network.http_connection_manager: a terminal network filter that runs an HTTP
 * codec (HTTP/1.1, HTTP/2, or AUTO by the HTTP/2 preface) on the downstream connection, turns
 * each request into a stream, applies Envoy's request header mutations (x-request-id,
 * x-forwarded-*, x-envoy-* sanitizing), routes it (inline route_config or RDS), and runs the
 * HTTP filter chain (src/filter/http.h) ending in the router.
 *
 * Files: config.c (proto -> struct msm_hcm_config), hcm.c (connection and streams),
 * hcm_stream.c (filter chain iteration, the filter-facing API, and the access_log entry of
 * each request when its stream is destroyed), hcm_headers.c (request and response header
 * mutations, path normalization, local replies), hcm_upgrade.c (Upgrade and CONNECT: which
 * requests may become tunnels, and the tunnel's half-closes). */
#include <stdbool.h>
#include <stdint.h>

#include "accesslog/access_log.h"
#include "filter/http.h"
#include "filter/network.h"
#include "http/codec.h"
#include "http/route.h"
#include "net/listener.h"
#include "stats/stats.h"

#define MSM_HCM_STATS(C, G, H)                                                                    \
    C(downstream_cx_total) G(downstream_cx_active) C(downstream_cx_destroy)                       \
    C(downstream_cx_destroy_remote) C(downstream_cx_destroy_local)                                \
    C(downstream_cx_destroy_active_rq) C(downstream_cx_destroy_local_active_rq)                   \
    C(downstream_cx_destroy_remote_active_rq) C(downstream_cx_http1_total)                        \
    G(downstream_cx_http1_active) C(downstream_cx_http2_total) G(downstream_cx_http2_active)      \
    C(downstream_cx_http3_total) G(downstream_cx_http3_active) C(downstream_cx_ssl_total)         \
    G(downstream_cx_ssl_active) C(downstream_cx_upgrades_total) G(downstream_cx_upgrades_active)  \
    C(downstream_cx_websocket_total) G(downstream_cx_websocket_active)                            \
    C(downstream_cx_protocol_error) C(downstream_cx_idle_timeout)                                 \
    C(downstream_cx_max_duration_reached) C(downstream_cx_max_requests_reached)                   \
    C(downstream_cx_drain_close) C(downstream_cx_delayed_close_timeout)                           \
    C(downstream_cx_overload_disable_keepalive) C(downstream_cx_rx_bytes_total)                   \
    G(downstream_cx_rx_bytes_buffered) C(downstream_cx_tx_bytes_total)                            \
    G(downstream_cx_tx_bytes_buffered) H(downstream_cx_length_ms)                                 \
    C(downstream_flow_control_paused_reading_total)                                               \
    C(downstream_flow_control_resumed_reading_total) C(downstream_rq_total)                       \
    G(downstream_rq_active) C(downstream_rq_completed) C(downstream_rq_http1_total)               \
    C(downstream_rq_http2_total) C(downstream_rq_http3_total) C(downstream_rq_1xx)                \
    C(downstream_rq_2xx) C(downstream_rq_3xx) C(downstream_rq_4xx) C(downstream_rq_5xx)           \
    C(downstream_rq_non_relative_path) C(downstream_rq_too_large) C(downstream_rq_timeout)        \
    C(downstream_rq_header_timeout) C(downstream_rq_idle_timeout)                                 \
    C(downstream_rq_max_duration_reached) C(downstream_rq_response_before_rq_complete)            \
    C(downstream_rq_rx_reset) C(downstream_rq_tx_reset) C(downstream_rq_ws_on_non_ws_route)       \
    C(downstream_rq_overload_close) C(downstream_rq_too_many_premature_resets)                    \
    C(downstream_rq_failed_path_normalization) C(downstream_rq_redirected_with_normalized_path)   \
    H(downstream_rq_time) C(rs_too_large)
MSM_STATS_STRUCT(msm_hcm_stats, MSM_HCM_STATS);
MSM_STATS_INIT_FN(msm_hcm_stats, MSM_HCM_STATS)

enum msm_hcm_codec_type {
    MSM_HCM_AUTO = 0,
    MSM_HCM_HTTP1 = 1,
    MSM_HCM_HTTP2 = 2,
};

/* forward_client_cert_details */
enum msm_hcm_fcc {
    MSM_FCC_SANITIZE = 0,
    MSM_FCC_FORWARD_ONLY = 1,
    MSM_FCC_APPEND_FORWARD = 2,
    MSM_FCC_SANITIZE_SET = 3,
    MSM_FCC_ALWAYS_FORWARD_ONLY = 4,
};

/* set_current_client_cert_details: the x-forwarded-client-cert keys added after By and Hash,
 * in Envoy's order. */
#define MSM_XFCC_CERT 0x01u
#define MSM_XFCC_CHAIN 0x02u
#define MSM_XFCC_SUBJECT 0x04u
#define MSM_XFCC_URI 0x08u
#define MSM_XFCC_DNS 0x10u

struct msm_hcm_filter {
    const struct msm_http_filter_ops *ops; /* NULL: an accepted no-op (see http_registry.c) */
    void *config;
    char *name;
    bool disabled; /* HttpFilter.disabled: runs only where a route enables it (hcm_stream.c) */
};

/* upgrade_configs[]: an upgrade type the connection manager takes ("websocket", "CONNECT";
 * matched case-insensitively) unless the route says otherwise (hcm_upgrade.c). <filters>: its
 * own filter chain (upgrade_configs[].filters, ending with the router), NULL for http_filters. */
struct msm_hcm_upgrade {
    char *type;
    bool enabled;
    struct msm_hcm_filter *filters;
    int n_filters;
};

struct msm_hcm_config {
    char *stat_prefix; /* "http.<stat_prefix>." */
    struct msm_hcm_stats stats;
    struct msm_http1_stats h1stats;
    struct msm_http2_stats h2stats;
    enum msm_hcm_codec_type codec_type;
    struct msm_hcodec_opts h1opts, h2opts;
    /* Routing: an inline config, or an RDS name looked up in the worker's snapshot. */
    struct msm_route_config *route_config;
    char *rds_name;
    uint8_t *rds_source; /* packed envoy.config.core.v3.ConfigSource */
    size_t rds_source_len;
    char *rds_stat_prefix; /* "http.<stat_prefix>.rds.<name>." */
    struct msm_hcm_filter *filters;
    int n_filters;
    /* Header handling */
    bool use_remote_address;
    /* internal_address_config: which clients are internal (x-envoy-internal); unset: Envoy's
     * legacy default (RFC 1918, loopback, IPv6 ULA, unix sockets) */
    bool has_internal;
    bool internal_unix;
    struct msm_cidr *internal;
    int n_internal;
    uint32_t xff_num_trusted_hops;
    bool skip_xff_append;
    bool generate_request_id;
    bool preserve_external_request_id;
    bool always_set_request_id_in_response;
    char *server_name;
    size_t server_name_len;
    int server_header_transformation; /* 0 overwrite, 1 append if absent, 2 pass through */
    enum msm_hcm_fcc fcc;
    unsigned xfcc_details; /* MSM_XFCC_* */
    char *via;
    bool proxy_100_continue;
    bool normalize_path;
    bool merge_slashes;
    int escaped_slashes_action; /* 0/1 keep, 2 reject, 3 redirect, 4 unescape and forward */
    bool strip_matching_host_port;
    bool strip_any_host_port;
    bool strip_trailing_host_dot;
    bool append_x_forwarded_port;
    /* Timeouts (ms, 0 = disabled) */
    uint32_t stream_idle_timeout_ms;    /* default 5 min */
    uint32_t request_timeout_ms;
    uint32_t request_headers_timeout_ms;
    uint32_t idle_timeout_ms;           /* common_http_protocol_options.idle_timeout, 1 h */
    uint32_t max_connection_duration_ms;
    uint32_t max_stream_duration_ms;
    uint32_t drain_timeout_ms;          /* default 5 s */
    uint32_t delayed_close_timeout_ms;  /* default 1 s */
    uint32_t max_requests_per_connection;
    uint32_t buffer_limit;              /* per-request body buffering, 1 MiB */
    struct msm_access_logs logs;        /* access_log: one entry per request (hcm_stream.c) */
    struct msm_hcm_upgrade *upgrades;
    int n_upgrades;
};

extern const struct msm_network_filter_ops msm_hcm_ops;

/* Per-connection entry points (hcm.c), wired into msm_hcm_ops by config.c. */
void *msm_hcm_filter_new(void *config, struct msm_filter_handle *h);
enum msm_filter_status msm_hcm_on_new_connection(void *f);
enum msm_filter_status msm_hcm_on_data(void *f, struct msm_buf *data, bool end_stream);
void msm_hcm_on_event(void *f, enum msm_conn_event ev);
void msm_hcm_on_watermark(void *f, bool above);
void msm_hcm_filter_free(void *f);

/* The route configuration an HCM config serves from: the inline one, or the RDS one in the
 * worker's snapshot <snap> (NULL while it has not arrived). Borrowed. */
struct msm_snapshot;
struct msm_route_config *msm_hcm_route_config(const struct msm_hcm_config *cfg,
                                              const struct msm_snapshot *snap);

/* Path normalization (hcm_headers.c), exposed for tests: RFC 3986 dot-segment removal and
 * percent-decoding of unreserved characters (normalize_path), merge_slashes. Returns a new
 * path, or NULL when the path is invalid (400). */
char *msm_hcm_normalize_path(const char *path, bool normalize, bool merge_slashes);

/* What an mTLS connection's peer contributes to x-forwarded-client-cert (borrowed strings;
 * NULL / 0 = absent). <cert> and <chain> are URL-encoded PEM. */
struct msm_xfcc_peer {
    const char *const *by; /* URI SANs of our certificate */
    int n_by;
    const char *hash;      /* hex SHA-256 of the peer certificate */
    const char *cert, *chain, *subject;
    const char *const *uri;
    int n_uri;
    const char *const *dns;
    int n_dns;
};
/* The element this hop adds to x-forwarded-client-cert (hcm_headers.c), as Envoy builds it:
 * By=<uri>;...;Hash=<hex>;Cert="<pem>";Chain="<pem>";Subject="<dn>";URI=<uri>;...;DNS=<name>
 * with the keys of <details> (MSM_XFCC_*). Subject is there even when empty, URI too ("URI=");
 * the other keys only with a value. Returns a new string. */
char *msm_hcm_xfcc_element(unsigned details, const struct msm_xfcc_peer *p);
