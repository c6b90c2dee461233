#pragma once
/* envoy.filters.network.tcp_proxy: proxies a downstream connection to one upstream host of a
 * cluster (or of one of weighted clusters), both directions, with half-close, back-pressure by
 * watermarks, idle and maximum-duration timeouts, and Envoy's tcp.<stat_prefix>.* stats. */
#include <stdint.h>

#include "accesslog/access_log.h"
#include "filter/network.h"
#include "stats/stats.h"

#define MSM_TCP_PROXY_STATS(C, G, H)                                                              \
    C(downstream_cx_total) C(downstream_cx_no_route) C(downstream_cx_tx_bytes_total)              \
    G(downstream_cx_tx_bytes_buffered) C(downstream_cx_rx_bytes_total)                            \
    G(downstream_cx_rx_bytes_buffered) C(downstream_flow_control_paused_reading_total)            \
    C(downstream_flow_control_resumed_reading_total) C(idle_timeout)                              \
    C(max_downstream_connection_duration) C(upstream_flush_total) G(upstream_flush_active)        \
    C(on_demand_cluster_attempt) C(on_demand_cluster_missing) C(on_demand_cluster_success)        \
    C(on_demand_cluster_timeout)
MSM_STATS_STRUCT(msm_tcp_proxy_stats, MSM_TCP_PROXY_STATS);
MSM_STATS_INIT_FN(msm_tcp_proxy_stats, MSM_TCP_PROXY_STATS)

struct msm_tcp_proxy_cluster {
    char *name;
    uint32_t weight;
};

struct msm_tcp_proxy_config {
    char *stat_prefix;
    struct msm_tcp_proxy_cluster *clusters; /* one for `cluster`, several for weighted */
    int n_clusters;
    uint64_t total_weight;
    uint32_t idle_timeout_ms;     /* 0 = disabled; default 1 h */
    uint32_t max_duration_ms;     /* max_downstream_connection_duration, 0 = none */
    uint32_t max_connect_attempts;
    bool hash_source_ip;
    struct msm_tcp_proxy_stats stats;
    struct msm_access_logs logs; /* access_log: emitted when the connection is done */
};

extern const struct msm_network_filter_ops msm_tcp_proxy_ops;

/* Per-connection callbacks (tcp_proxy.c), wired into msm_tcp_proxy_ops by config.c. */
void *msm_tcp_proxy_filter_new(void *config, struct msm_filter_handle *h);
enum msm_filter_status msm_tcp_proxy_on_new_connection(void *f);
enum msm_filter_status msm_tcp_proxy_on_data(void *f, struct msm_buf *data, bool end_stream);
void msm_tcp_proxy_on_event(void *f, enum msm_conn_event ev);
void msm_tcp_proxy_on_watermark(void *f, bool above);
void msm_tcp_proxy_filter_free(void *f);

/* Pick a cluster name by weight (per connection). Exposed for tests and for filters that
 * follow a chain's tcp_proxy routing (RTSP, SIP). */
const char *msm_tcp_proxy_pick_cluster(const struct msm_tcp_proxy_config *cfg, uint64_t rnd);
