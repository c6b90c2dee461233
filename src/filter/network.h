#pragma once
/* Network filters: the plug-in interface every L4 filter implements (tcp_proxy, rbac, RTSP,
 * SIP, metadata exchange...), after Envoy's Network::ReadFilter/WriteFilter.
 *
 * Contract of struct msm_network_filter_ops (one const instance per filter type):
 * - name: Envoy's canonical extension name ("envoy.filters.network.tcp_proxy").
 * - config_type: full proto message name of its typed_config; the registry key.
 * - config_new (main thread): validate the decoded proto and build an immutable plain-C config
 *   (no pointer into <msg>, which is freed afterwards). 0, or MSM_EINVAL with <err> set.
 * - config_free: release what config_new built (main thread or a worker dropping the last
 *   snapshot reference).
 * - filter_new (worker): per-connection instance; never fails except by OOM (abort).
 * - on_new_connection / on_data / on_write: return MSM_FILTER_CONTINUE to pass on,
 *   MSM_FILTER_STOP to stop iteration (resume with msm_filter_continue). Read filters run in
 *   chain order, write filters in reverse. on_data receives the connection's read buffer: a
 *   filter that keeps bytes moves them out; what remains goes to the next filter.
 * - terminal / may_terminate: a chain must end with a filter that has one of them; a terminal
 *   filter must be last.
 * - on_event: connection closed (remote or local), after which no other callback runs.
 * - on_watermark: the downstream write buffer went above (true) / below (false) its limit.
 * - filter_free: free the instance (deferred, never from inside its own callbacks' stack).
 * - rds_dep (main thread): the RDS route configuration a config serves from (an HCM with
 *   rds), or NULL. The listener manager subscribes to it and keeps the listener warming (not
 *   served) until it is known (see src/http/rds.h).
 * Optional slots may be NULL.
 */
#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "buffer/buf.h"
#include "common/err.h"
#include "net/conn.h"
#include "stats/stats.h"

enum msm_filter_status {
    MSM_FILTER_CONTINUE = 0,
    MSM_FILTER_STOP = 1,
};

struct msm_factory_ctx {
    struct msm_stats_store *stats;
    const char *listener_name;
    bool allow_unknown_fields;
    int traffic_direction; /* the listener's: 0 unspecified, 1 inbound, 2 outbound */
};

struct msm_filter_handle;

/* What a filter config needs from RDS before its listener may serve. */
struct msm_filter_rds_dep {
    const char *name;          /* route_config_name */
    const char *stat_prefix;   /* "http.<hcm stat_prefix>.rds.<name>." */
    const uint8_t *config_source; /* packed envoy.config.core.v3.ConfigSource */
    size_t config_source_len;
};

struct msm_network_filter_ops {
    const char *name;
    const char *config_type;
    bool terminal; /* must be last in its chain (tcp_proxy, http_connection_manager) */
    bool may_terminate; /* may be last in its chain, or be followed by others (rtsp_proxy) */
    int (*config_new)(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx, void **config,
                      struct msm_err *err);
    void (*config_free)(void *config);
    void *(*filter_new)(void *config, struct msm_filter_handle *h);
    enum msm_filter_status (*on_new_connection)(void *filter);
    enum msm_filter_status (*on_data)(void *filter, struct msm_buf *data, bool end_stream);
    enum msm_filter_status (*on_write)(void *filter, struct msm_buf *data, bool end_stream);
    void (*on_event)(void *filter, enum msm_conn_event ev);
    void (*on_watermark)(void *filter, bool above);
    void (*filter_free)(void *filter);
    const struct msm_filter_rds_dep *(*rds_dep)(const void *config);
};

/* Registry (src/filter/registry.c): lookup by config type, else by name (when typed_config is
 * absent). Known-but-unimplemented types return NULL with *known = true so the caller can say
 * "not supported yet" instead of "unknown". */
const struct msm_network_filter_ops *msm_network_filter_find(const char *config_type,
                                                             const char *name, bool *known);

/* --- what a filter instance may call (worker thread) ----------------------------------- */
struct msm_worker;
struct msm_stream_info;

struct msm_conn *msm_filter_conn(struct msm_filter_handle *h);
struct msm_worker *msm_filter_worker(struct msm_filter_handle *h);
/* The session's stream info (accesslog/stream_info.h): the downstream part is filled by the
 * filter manager, the upstream part by the terminal filter; valid until filter_free returns
 * (the byte counts are final from on_event on). */
struct msm_stream_info *msm_filter_stream_info(struct msm_filter_handle *h);
/* Resume read-iteration after this filter with whatever is in the connection's read buffer. */
void msm_filter_continue(struct msm_filter_handle *h);
/* Write to the downstream connection (through the write filters). */
void msm_filter_write(struct msm_filter_handle *h, struct msm_buf *data, bool end_stream);
/* Write <data> (all of it is moved) to the downstream ahead of the bytes being written now:
 * through the write filters that run after this one (those before it in the chain), then the
 * connection (Envoy's injectWriteDataToFilterChain; the metadata exchange's preamble). */
void msm_filter_inject_write(struct msm_filter_handle *h, struct msm_buf *data);
void msm_filter_close(struct msm_filter_handle *h, enum msm_close_type how);
void msm_filter_read_disable(struct msm_filter_handle *h, bool disable);
/* Take the connection over (call from on_new_connection or later): the filters after this one
 * see nothing of it any more (no on_new_connection, on_data, on_write, on_event), as when an
 * RTSP proxy placed before tcp_proxy serves the connection itself. They are still freed. */
void msm_filter_take_over(struct msm_filter_handle *h);
/* Config of the first filter of type <ops> after this one in the chain, or NULL: lets a filter
 * follow the routing of a later one (RTSP uses the next tcp_proxy's cluster(s)). */
void *msm_filter_next_config(struct msm_filter_handle *h, const struct msm_network_filter_ops *ops);
