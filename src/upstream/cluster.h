#pragma once
/* Clusters and hosts.
 *
 * Object model (all shared across threads; immutable after publication unless noted):
 * - struct msm_cluster_cfg: what the Cluster proto said, in plain C. Immutable, refcounted.
 * - struct msm_cluster_shared: per cluster *name*, survives config updates of that name: its
 *   stats and the cross-worker counters (circuit breakers, round-robin cursor). Atomics.
 * - struct msm_host: one upstream endpoint. Address and weight immutable; the active
 *   connection/request counters are atomics updated by workers.
 * - struct msm_host_set: an immutable list of hosts (plus a precomputed weighted schedule).
 * - struct msm_cluster: {cfg, shared, hosts} — one version of a cluster as published in a
 *   config snapshot. A host update (DNS, EDS) publishes a new msm_cluster sharing cfg and shared.
 * References are counted with atomics; the last unref may run on any thread.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "net/address.h"
#include "stats/stats.h"
#include "upstream/lb/hash_lb.h"
#include "upstream/health_check.h"
#include "upstream/outlier.h"
#include "upstream/cluster_http.h"

struct msm_conn;
struct msm_upstream_filters;

enum msm_cluster_type {
    MSM_CLUSTER_STATIC = 0,
    MSM_CLUSTER_STRICT_DNS = 1,
    MSM_CLUSTER_LOGICAL_DNS = 2,
    MSM_CLUSTER_EDS = 3,
    MSM_CLUSTER_ORIGINAL_DST = 4,
};

enum msm_lb_policy {
    MSM_LB_ROUND_ROBIN = 0,
    MSM_LB_LEAST_REQUEST = 1,
    MSM_LB_RING_HASH = 2,
    MSM_LB_RANDOM = 3,
    MSM_LB_MAGLEV = 5,
};

enum msm_dns_family {
    MSM_DNS_AUTO = 0, /* IPv6 if any, else IPv4 (Envoy's AUTO) */
    MSM_DNS_V4_ONLY = 1,
    MSM_DNS_V6_ONLY = 2,
    MSM_DNS_V4_PREFERRED = 3,
    MSM_DNS_ALL = 4,
};

/* Cluster stats, Envoy names under "cluster.<stat name>.". */
#define MSM_CLUSTER_STATS(C, G, H)                                                                \
    C(upstream_cx_total) G(upstream_cx_active) C(upstream_cx_connect_fail)                        \
    C(upstream_cx_connect_timeout) C(upstream_cx_overflow) C(upstream_cx_destroy)                 \
    C(upstream_cx_destroy_local) C(upstream_cx_destroy_remote) C(upstream_cx_rx_bytes_total)      \
    G(upstream_cx_rx_bytes_buffered) C(upstream_cx_tx_bytes_total)                                \
    G(upstream_cx_tx_bytes_buffered) C(upstream_cx_none_healthy) H(upstream_cx_connect_ms)       \
    H(upstream_cx_length_ms) C(upstream_rq_total) G(upstream_rq_active)                           \
    C(upstream_flow_control_paused_reading_total) C(upstream_flow_control_resumed_reading_total) \
    C(upstream_flow_control_backed_up_total) C(upstream_flow_control_drained_total)               \
    C(membership_change) G(membership_healthy) G(membership_degraded) G(membership_excluded)     \
    G(membership_total) C(lb_healthy_panic) C(update_attempt) C(update_success)                   \
    C(update_failure) C(update_empty) C(update_no_rebuild) G(max_host_weight) G(version)          \
    C(bind_errors) C(retry_or_shadow_abandoned) C(assignment_stale) C(assignment_timeout_received)
MSM_STATS_STRUCT(msm_cluster_stats, MSM_CLUSTER_STATS);
MSM_STATS_INIT_FN(msm_cluster_stats, MSM_CLUSTER_STATS)

/* circuit_breakers.default.* */
#define MSM_CB_STATS(C, G, H)                                                                     \
    G(cx_open) G(cx_pool_open) G(rq_open) G(rq_pending_open) G(rq_retry_open) G(remaining_cx)     \
    G(remaining_pending) G(remaining_rq) G(remaining_retries) G(remaining_cx_pools)
MSM_STATS_STRUCT(msm_cb_stats, MSM_CB_STATS);
MSM_STATS_INIT_FN(msm_cb_stats, MSM_CB_STATS)

/* An endpoint's transport socket match labels: its filter_metadata
 * ["envoy.transport_socket_match"] (the locality's when the endpoint has none), each value in a
 * canonical text form ("s:istio", "n:1", "b:1", "z", or JSON for lists/structs). Immutable. */
struct msm_tsm_meta {
    atomic_int refs; /* one allocation, shared by copies (msm_tsm_meta_copy) */
    int n;
    char **keys, **vals;
    uint64_t hash; /* of the pairs: hosts with other labels are other hosts */
    /* The endpoint's own filter_metadata istio.workload ("name;namespace;canonical-service;
     * canonical-revision;cluster"), NULL when absent: istio.stats's destination workload when
     * no peer metadata came back. Part of <hash>. */
    char *istio_workload;
};

/* One transport_socket_matches entry: the first whose labels are all in an endpoint's match
 * metadata picks the endpoint's transport (Envoy's metadataLabelMatch); none: the cluster's
 * transport_socket. */
struct msm_tls_factory;
struct msm_tsm {
    char *name;
    struct msm_tsm_meta *match; /* NULL = {} (matches every endpoint) */
    struct msm_tls_factory *tls; /* NULL = raw_buffer */
};

/* An endpoint's place in its cluster's priority set (EDS LocalityLbEndpoints.priority, the
 * index of its locality in the assignment) and its EDS health_status. */
enum msm_host_health {
    MSM_HOST_HEALTHY = 0,   /* HEALTHY, UNKNOWN */
    MSM_HOST_DEGRADED = 1,  /* DEGRADED */
    MSM_HOST_UNHEALTHY = 2, /* UNHEALTHY, DRAINING, TIMEOUT */
};

struct msm_host_attr {
    uint32_t priority;
    uint32_t locality;
    uint8_t health; /* enum msm_host_health */
    uint8_t eds_status; /* the envoy.config.core.v3.HealthStatus sent (/clusters shows it) */
};

/* The topology of a load assignment (EDS or a cluster's load_assignment), beside its hosts. */
struct msm_topology {
    struct msm_host_attr *attr; /* per endpoint */
    uint32_t *loc_weight;       /* per locality: load_balancing_weight, 0 = unset */
    int n_loc;
    uint32_t overprov;          /* policy.overprovisioning_factor, default 140 */
    bool weighted_health;       /* policy.weighted_priority_health */
};

struct msm_dns_endpoint {
    char *hostname;
    uint32_t port;
    uint32_t weight;
    struct msm_tsm_meta *meta; /* NULL = none */
};

struct msm_cluster_cfg {
    atomic_int refs;
    char *name;
    char *stat_name; /* alt_stat_name, or <name> itself (not a copy) */
    /* Istio: filter_metadata istio.services[0].{host,name} (destination_service labels);
     * NULL when absent. */
    char *istio_service_host, *istio_service_name;
    bool istio_external, istio_disable_mx; /* istio.external / istio.disable_mx */
    enum msm_cluster_type type;
    enum msm_lb_policy lb;
    uint32_t connect_timeout_ms;
    uint32_t per_connection_buffer_limit; /* bytes, default 1 MiB */
    /* circuit breakers, DEFAULT priority */
    uint32_t max_connections, max_pending_requests, max_requests, max_retries;
    bool track_remaining;
    uint32_t lr_choice_count; /* least_request_lb_config.choice_count, default 2 */
    uint64_t ring_min, ring_max; /* ring_hash_lb_config, default 1024 / 8M */
    uint64_t maglev_size;        /* maglev_lb_config.table_size, default 65537 */
    /* upstream_bind_config */
    bool has_bind;
    struct msm_address bind;
    /* TCP keepalive (upstream_connection_options) */
    bool keepalive;
    uint32_t keepalive_probes, keepalive_time, keepalive_interval;
    /* DNS clusters */
    enum msm_dns_family dns_family;
    uint32_t dns_refresh_ms;
    uint32_t dns_failure_refresh_base_ms, dns_failure_refresh_max_ms;
    bool respect_dns_ttl;
    struct msm_dns_endpoint *dns_eps;
    int n_dns_eps;
    /* STATIC endpoints (addresses + weights) */
    struct msm_address *static_addrs;
    uint32_t *static_weights;
    int n_static;
    char *eds_service_name; /* may be <name> itself */
    uint8_t *eds_source; /* eds_config (packed envoy.config.core.v3.ConfigSource), or NULL */
    size_t eds_source_len;
    /* eds_config's api_config_source (packed): the stream its EDS subscription goes on; NULL for
     * ADS (ads, self, or no eds_config) */
    uint8_t *eds_api;
    size_t eds_api_len;
    struct msm_outlier_cfg outlier;
    struct msm_hc_cfg *hc; /* active health check, or NULL */
    /* transport: transport_socket (NULL = raw_buffer) and transport_socket_matches */
    struct msm_tls_factory *tls;
    struct msm_tsm *tsm;
    int n_tsm;
    struct msm_tsm_meta **static_meta; /* per STATIC endpoint (n_static), entries may be NULL */
    struct msm_topology static_topo;   /* priorities/localities/health of the STATIC endpoints */
    /* common_lb_config */
    double panic_threshold;  /* healthy_panic_threshold, percent, default 50 (0 = never panic) */
    bool locality_weighted;  /* locality_weighted_lb_config is set */
    /* HTTP protocol options (upstream/cluster_http.c); NULL = HTTP/1.1 with defaults */
    struct msm_cluster_http_cfg *http;
    /* `filters`: upstream network filters on each TCP proxy connection (filter/upstream.h);
     * NULL = none */
    struct msm_upstream_filters *filters;
};

struct msm_cluster_shared {
    atomic_int refs;
    char *name;
    struct msm_cluster_stats stats;
    /* circuit_breakers.default.* and outlier_detection.*: the cluster's own, or one block shared
     * by every cluster whose stats there are all sinks (cluster.c, shared_stats) */
    struct msm_cb_stats *cb;
    atomic_uint active_cx; /* for max_connections */
    atomic_uint rr_cursor;
    atomic_uint ejected; /* hosts currently ejected by outlier detection */
    struct msm_outlier_stats *outlier;
    struct msm_cluster_http_shared http; /* router: request breakers, upstream_rq_* stats */
};

struct msm_host {
    atomic_int refs;
    struct msm_address addr;
    char *hostname;
    uint32_t weight;
    atomic_uint active_cx;
    atomic_uint active_rq;
    atomic_uint_fast64_t cx_total, cx_connect_fail, rq_total;
    /* outlier detection */
    atomic_uint cons_5xx, cons_gw, cons_local;
    atomic_uint ejections;
    atomic_uint_fast64_t ejected_until; /* msm_mono_ms deadline, 0 = not ejected */
    atomic_bool hc_unhealthy;           /* failed active health checking */
    struct msm_tsm_meta *tsm; /* transport socket match labels, NULL = none (owned) */
};

struct msm_host_set {
    atomic_int refs;
    struct msm_host **hosts;
    int n;
    int n_excluded; /* known endpoints left out (unhealthy, other priority): membership stats */
    uint64_t total_weight;
    bool weighted;       /* some weight differs from the others */
    uint16_t *schedule;  /* weighted round-robin wheel: host indexes, smooth interleaving */
    uint32_t sched_len;
    /* Priorities, localities and EDS health (msm_host_set_set_topology); attr NULL = every host
     * healthy in priority 0, locality 0. */
    struct msm_topology topo;
};

struct msm_cluster {
    atomic_int refs;
    struct msm_cluster_cfg *cfg;
    struct msm_cluster_shared *sh;
    struct msm_host_set *hosts;
    struct msm_ring *ring;     /* RING_HASH: built with this version */
    struct msm_maglev *maglev; /* MAGLEV */
    struct msm_prio *prio;     /* priority levels and localities (upstream/priority.h), or NULL
                                * when every host is healthy in one level and nothing can
                                * change that (no outlier detection, no health checks) */
};

/* Build a cluster config from an envoy.config.cluster.v3.Cluster. Returns NULL with <err>
 * naming the field for anything invalid or unsupported (this becomes the NACK/exit message).
 * <validate_only> (--mode validate): what is valid but not implemented yet is a warning. */
struct msm_cluster_cfg *msm_cluster_cfg_from_proto(const void *cluster_proto, bool validate_only,
                                                  struct msm_err *err);
void msm_cluster_cfg_unref(struct msm_cluster_cfg *c);

struct msm_cluster_shared *msm_cluster_shared_new(const struct msm_cluster_cfg *cfg,
                                                  struct msm_stats_store *st);
void msm_cluster_shared_unref(struct msm_cluster_shared *s);

struct msm_host *msm_host_new(const struct msm_address *addr, const char *hostname,
                              uint32_t weight);
void msm_host_unref(struct msm_host *h);
/* Takes ownership of the references in <hosts> (array copied). */
struct msm_host_set *msm_host_set_new(struct msm_host **hosts, int n);
void msm_host_set_unref(struct msm_host_set *hs);
/* Give <hs> (just created, not yet shared) the topology <t> (copied; its attr has hs->n
 * entries). */
void msm_host_set_set_topology(struct msm_host_set *hs, const struct msm_topology *t);
void msm_topology_deinit(struct msm_topology *t);
/* True when both sets hold the same addresses with the same weights, in any order (and the same
 * priorities, localities and health). */
bool msm_host_set_same(const struct msm_host_set *a, const struct msm_host_set *b);

/* New cluster version; takes new references to all three parts. */
struct msm_cluster *msm_cluster_new(struct msm_cluster_cfg *cfg, struct msm_cluster_shared *sh,
                                    struct msm_host_set *hosts);
struct msm_cluster *msm_cluster_ref(struct msm_cluster *c);
void msm_cluster_unref(struct msm_cluster *c);

/* Circuit breaker for connections: reserve a slot or count an overflow. Any thread. */
bool msm_cluster_cx_reserve(struct msm_cluster *c);
void msm_cluster_cx_release(struct msm_cluster *c);

/* Load balancing: pick a host for a new connection. NULL when the cluster has no host
 * (counted as upstream_cx_none_healthy by the caller). <hash> is for RING_HASH and MAGLEV
 * (0 = no hash policy: a random host, as Envoy). */
struct msm_host *msm_lb_choose(struct msm_cluster *c, uint64_t hash);
/* The same for try <attempt> of a host selection that rejects previous hosts: a hash policy
 * moves on from its host, as Envoy's hash balancers (attempt 0 is msm_lb_choose). */
struct msm_host *msm_lb_choose_attempt(struct msm_cluster *c, uint64_t hash, uint32_t attempt);
/* Whether <c>'s load balancer uses a request hash (RING_HASH, MAGLEV). */
bool msm_lb_uses_hash(const struct msm_cluster *c);
/* Per-thread random numbers (xoshiro, seeded from getrandom). */
uint64_t msm_random(void);

/* ---- transport sockets (TLS, auto-mTLS) ------------------------------------------------------ */

/* The labels of an envoy.config.core.v3.Metadata (<md>, may be NULL) under
 * "envoy.transport_socket_match", falling back to <locality_md>'s; NULL when neither has any. */
struct msm_tsm_meta *msm_tsm_meta_from_proto(const void *md, const void *locality_md);
/* Same labels (and istio workload)? */
bool msm_tsm_meta_eq(const struct msm_tsm_meta *a, const struct msm_tsm_meta *b);
/* A new reference (labels are immutable: copies share one block). */
struct msm_tsm_meta *msm_tsm_meta_copy(const struct msm_tsm_meta *m);
/* Drop a reference (any thread). */
void msm_tsm_meta_free(struct msm_tsm_meta *m);
/* Give <h> (just created, not yet shared) its labels; takes ownership of <m>. */
void msm_host_set_tsm(struct msm_host *h, struct msm_tsm_meta *m);
uint64_t msm_host_tsm_hash(const struct msm_host *h);
/* The TLS factory for connections to <h> (NULL = raw_buffer). */
struct msm_tls_factory *msm_cluster_transport(const struct msm_cluster_cfg *c,
                                              const struct msm_host *h);
/* Install the transport for <h> on <conn>, just made by msm_conn_connect for cluster <c>. */
void msm_cluster_attach_transport(const struct msm_cluster_cfg *c, const struct msm_host *h,
                                  struct msm_conn *conn);
/* Every TLS context the cluster uses is warm (msm_tls_factory_warm). Main thread. */
bool msm_cluster_cfg_warm(const struct msm_cluster_cfg *c);
/* msm_cluster_cfg_from_proto's part for transport_socket / transport_socket_matches, and its
 * cleanup (upstream/transport.c). */
int msm_cluster_transport_from_proto(const void *cluster_proto, struct msm_cluster_cfg *c,
                                     struct msm_err *err);
void msm_cluster_transport_deinit(struct msm_cluster_cfg *c);
