#pragma once
/* msm.filters.network.rtsp_proxy: an RTSP 1.0/2.0 proxy with media relay and fan-out
 * (docs/rtsp.md). Placed before tcp_proxy it takes the connection over and, when none of its own
 * routes matches, sends the session to that tcp_proxy's cluster(s); it also works alone as the
 * last filter of a chain.
 *
 * Files: rtsp_msg.c (message parser), rtsp_transport.c (Transport header), rtsp_sdp.c (URLs and
 * SDP), config.c (proto -> struct msm_rtsp_config, routes), rtsp_client.c (the downstream side:
 * requests, client sessions, subscribers), rtsp_source.c (the upstream side: one session towards
 * the server, shared by its subscribers), rtsp_relay.c (the media relay), rtsp_xworker.c (one
 * upstream session per (cluster, URL) in the process: mirrors, messages and media handoff
 * between workers). */
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>
#include <stdatomic.h>
#include <stdint.h>

#include "filter/network.h"
#include "filters/network/rtsp_proxy/rtsp_msg.h"
#include "rtp/rtp.h"
#include "stats/stats.h"

#define MSM_RTSP_STATS(C, G, H)                                                                   \
    C(downstream_cx_total) G(downstream_cx_active) C(downstream_rq_total)                         \
    C(downstream_rq_options) C(downstream_rq_describe) C(downstream_rq_setup)                     \
    C(downstream_rq_play) C(downstream_rq_pause) C(downstream_rq_teardown)                        \
    C(downstream_rq_get_parameter) C(downstream_rq_set_parameter) C(downstream_rq_announce)       \
    C(downstream_rq_record) C(downstream_rq_other) C(downstream_rq_1xx) C(downstream_rq_2xx)      \
    C(downstream_rq_3xx) C(downstream_rq_4xx) C(downstream_rq_5xx) C(downstream_rq_parse_error)   \
    C(downstream_rq_no_route) C(sessions_total) G(sessions_active) C(session_timeout)             \
    G(subscribers_active) C(fanout_joins) C(fanout_cross_worker_joins) G(fanout_mirrors_active)  \
    C(upstream_sessions_total) G(upstream_sessions_active)                                        \
    C(upstream_session_failed) C(upstream_rq_total) C(upstream_rq_timeout)                        \
    C(upstream_rtp_rx_packets) C(upstream_rtp_rx_bytes) C(upstream_rtcp_rx_packets)               \
    C(upstream_rtcp_tx_packets) C(downstream_rtp_tx_packets) C(downstream_rtp_tx_bytes)           \
    C(downstream_rtcp_rx_packets) C(downstream_rtcp_tx_packets) C(rtp_dropped_strangers)          \
    C(rtp_dropped_slow_subscriber) C(rtp_dropped_handoff) C(rtp_dropped_send_error)               \
    C(rtp_dropped_malformed)                                                                      \
    C(rtp_port_exhausted) C(media_protection_refused) C(upstream_rtp_lost)                        \
    G(upstream_rtp_jitter_us) G(downstream_rtcp_reported_lost) H(setup_latency_ms)             \
    C(retransmissions_requested) C(retransmitted_packets) C(rtcp_nack_forwarded)                 \
    C(rtcp_nack_rate_limited) G(sessions_tracked) C(sessions_untracked)
MSM_STATS_STRUCT(msm_rtsp_stats, MSM_RTSP_STATS);
MSM_STATS_INIT_FN(msm_rtsp_stats, MSM_RTSP_STATS)

/* Per-stream detail, "rtsp.<stat_prefix>.stream.<sanitized path>.*"; bounded per config. */
#define MSM_RTSP_STREAM_STATS(C, G, H)                                                            \
    G(subscribers) C(rtp_packets) C(rtp_bytes) C(rtp_lost) G(jitter_us) C(rtp_tx_packets)         \
    C(rtp_tx_bytes) C(retransmissions_requested) C(retransmitted_packets)
MSM_STATS_STRUCT(msm_rtsp_stream_stats, MSM_RTSP_STREAM_STATS);
MSM_STATS_INIT_FN(msm_rtsp_stream_stats, MSM_RTSP_STREAM_STATS)
#define MSM_RTSP_MAX_STREAM_STATS 64

/* Per-session detail, "rtsp.<stat_prefix>.session.<id>.<role>.<stream>.*" (rtsp_metrics.c),
 * removed when the session ends, at most max_session_stats per config. rx/tx are what the proxy
 * received/sent on the session's leg; the client role adds what the client's receiver reports
 * say, the upstream role the subscribers it feeds and its own RFC 3550 loss and jitter. */
#define MSM_RTSP_SESSION_STATS(C, G, H)                                                           \
    C(rtp_rx_packets) C(rtp_rx_bytes) C(rtp_tx_packets) C(rtp_tx_bytes) C(rtcp_rx_packets)        \
    C(rtcp_rx_bytes) C(rtcp_tx_packets) C(rtcp_tx_bytes) C(retransmissions_requested)             \
    C(retransmitted_packets) G(setup_latency_ms)
MSM_STATS_STRUCT(msm_rtsp_session_stats, MSM_RTSP_SESSION_STATS);
MSM_STATS_INIT_FN(msm_rtsp_session_stats, MSM_RTSP_SESSION_STATS)
#define MSM_RTSP_CLIENT_SESSION_STATS(C, G, H)                                                    \
    G(reported_lost) G(reported_fraction_lost_permille) G(reported_jitter_us)
MSM_STATS_STRUCT(msm_rtsp_client_session_stats, MSM_RTSP_CLIENT_SESSION_STATS);
MSM_STATS_INIT_FN(msm_rtsp_client_session_stats, MSM_RTSP_CLIENT_SESSION_STATS)
#define MSM_RTSP_UPSTREAM_SESSION_STATS(C, G, H) G(subscribers) G(rtp_lost) G(jitter_us)
MSM_STATS_STRUCT(msm_rtsp_upstream_session_stats, MSM_RTSP_UPSTREAM_SESSION_STATS);
MSM_STATS_INIT_FN(msm_rtsp_upstream_session_stats, MSM_RTSP_UPSTREAM_SESSION_STATS)
#define MSM_RTSP_DEFAULT_MAX_SESSION_STATS 256

enum msm_rtsp_path_match {
    MSM_RTSP_PATH_ANY = 0,
    MSM_RTSP_PATH_EXACT = 1,
    MSM_RTSP_PATH_PREFIX = 2,
    MSM_RTSP_PATH_REGEX = 3,
};

struct msm_rtsp_wcluster {
    char *name;
    uint32_t weight;
};

struct msm_rtsp_route {
    enum msm_rtsp_path_match kind;
    char *path; /* exact or prefix */
    pcre2_code *re;
    char *host; /* NULL = any; "*.suffix" = wildcard */
    struct msm_rtsp_wcluster *clusters;
    int n_clusters;
    uint64_t total_weight;
};

enum msm_rtsp_upstream_transport {
    MSM_RTSP_UP_AUTO = 0,
    MSM_RTSP_UP_UDP = 1,
    MSM_RTSP_UP_TCP = 2,
};

struct msm_rtsp_config {
    atomic_int refs; /* the listener's chain holds one; live sources hold one each */
    char *stat_prefix; /* "rtsp.<stat_prefix>." */
    struct msm_rtp_port_range ports;
    struct msm_rtsp_route *routes;
    int n_routes;
    pcre2_match_context *mctx; /* match limits for safe_regex routes */
    uint32_t session_timeout_ms;  /* 0 = never */
    bool fanout;
    uint32_t fanout_linger_ms;
    uint32_t request_timeout_ms;  /* 0 = none */
    enum msm_rtsp_upstream_transport upstream_transport;
    int media_protection;         /* MediaProtection.Mode; only DISABLED is served today */
    bool has_max_sessions;
    uint32_t max_sessions;
    atomic_uint sessions;         /* live client sessions, all workers */
    atomic_uint stream_stats;     /* live per-stream stat blocks */
    uint32_t max_session_stats;   /* per-session stat blocks allowed */
    atomic_uint session_stats;    /* live per-session stat blocks */
    uint32_t subscriber_buffer_limit; /* interleaved subscriber: drop media above this */
    struct msm_rtsp_limits limits;
    struct msm_stats_store *store;
    struct msm_rtsp_stats stats;
};

extern const struct msm_network_filter_ops msm_rtsp_proxy_ops;

struct msm_rtsp_config *msm_rtsp_config_ref(struct msm_rtsp_config *c);
void msm_rtsp_config_unref(struct msm_rtsp_config *c);

/* Route lookup for a request URI's <host> and <path>: the matching route, or NULL. */
const struct msm_rtsp_route *msm_rtsp_route_find(const struct msm_rtsp_config *c,
                                                 const char *host, size_t host_len,
                                                 const char *path, size_t path_len);
/* Weighted pick among a route's clusters (per session). */
const char *msm_rtsp_route_pick(const struct msm_rtsp_route *r, uint64_t rnd);

/* Per-connection callbacks (rtsp_client.c), wired into msm_rtsp_proxy_ops by config.c. */
void *msm_rtsp_filter_new(void *config, struct msm_filter_handle *h);
enum msm_filter_status msm_rtsp_on_new_connection(void *f);
enum msm_filter_status msm_rtsp_on_data(void *f, struct msm_buf *data, bool end_stream);
void msm_rtsp_on_event(void *f, enum msm_conn_event ev);
void msm_rtsp_on_watermark(void *f, bool above);
void msm_rtsp_filter_free(void *f);
