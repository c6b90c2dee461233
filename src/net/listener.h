#pragma once
/* Listener configuration (from envoy.config.listener.v3.Listener) and filter-chain selection.
 *
 * Invariants:
 * - struct msm_listener_cfg is immutable once built and refcounted; connections hold a reference
 *   to the filter chain's listener while they live, so a listener update never changes the
 *   filters of an existing connection.
 * - The listening socket is not part of the config: the listener manager (main thread) owns
 *   sockets and keeps them across config updates of the same address.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "filter/network.h"
#include "net/address.h"
#include "stats/stats.h"

#define MSM_LISTENER_STATS(C, G, H)                                                               \
    C(downstream_cx_total) C(downstream_cx_destroy) G(downstream_cx_active)                      \
    H(downstream_cx_length_ms) C(downstream_cx_overflow) C(downstream_cx_overload_reject)         \
    C(downstream_global_cx_overflow) G(downstream_pre_cx_active) C(downstream_pre_cx_timeout)    \
    C(no_filter_chain_match) C(downstream_listener_filter_error)                                  \
    C(downstream_listener_filter_remote_close) C(extension_config_missing)                        \
    C(network_extension_config_missing) C(downstream_cx_transport_socket_connect_timeout)
MSM_STATS_STRUCT(msm_listener_stats, MSM_LISTENER_STATS);
MSM_STATS_INIT_FN(msm_listener_stats, MSM_LISTENER_STATS)

struct msm_cidr {
    int family;
    uint8_t addr[16];
    uint32_t len;
};

struct msm_chain_match {
    bool has_dport;
    uint32_t dport;
    struct msm_cidr *prefix, *dsrc, *src;
    int n_prefix, n_dsrc, n_src;
    int source_type; /* 0 any, 1 same IP or loopback, 2 external */
    uint32_t *sports;
    int n_sports;
    char **server_names;
    int n_server_names;
    char *transport_protocol; /* NULL = any */
    char **alpn;
    int n_alpn;
};

enum msm_lf_kind {
    MSM_LF_ORIGINAL_DST = 0,
    MSM_LF_TLS_INSPECTOR = 1,
    MSM_LF_HTTP_INSPECTOR = 2,
};

/* ListenerFilterChainMatchPredicate (filter_disabled): the rules Envoy evaluates on a new
 * connection; only the destination port is known that early. */
enum msm_lf_pred_kind {
    MSM_LFP_ANY = 0,
    MSM_LFP_DPORT = 1,
    MSM_LFP_OR = 2,
    MSM_LFP_AND = 3,
    MSM_LFP_NOT = 4,
};

struct msm_lf_pred {
    enum msm_lf_pred_kind kind;
    int32_t start, end; /* [start, end) */
    struct msm_lf_pred *sub;
    int n_sub;
};

struct msm_listener_filter {
    enum msm_lf_kind kind;
    struct msm_lf_pred *disabled; /* NULL = always enabled */
};

struct msm_filter_factory {
    const struct msm_network_filter_ops *ops;
    void *config;
    char *name;
};

/* A TLS handshake that makes no progress for this long is closed
 * (downstream_cx_transport_socket_connect_timeout), unless the filter chain sets
 * transport_socket_connect_timeout. Envoy has no default; a stalled handshake must not hold a
 * connection forever. */
#define MSM_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000

struct msm_tls_factory;

struct msm_filter_chain {
    char *name;
    struct msm_tls_factory *tls;   /* DownstreamTlsContext; NULL = raw_buffer */
    uint32_t transport_timeout_ms; /* handshake bound */
    uint64_t hash; /* of the FilterChain proto: an unchanged chain keeps its connections */
    struct msm_chain_match match;
    struct msm_filter_factory *f;
    int n;
};

struct msm_listener_cfg {
    atomic_int refs;
    char *name;
    struct msm_address addr;
    bool bind_to_port;
    bool use_original_dst;
    bool reuse_port;
    uint32_t backlog;
    uint32_t buffer_limit; /* per_connection_buffer_limit_bytes, default 1 MiB */
    uint32_t max_accept_per_event;
    char *stat_prefix; /* "listener.<stat_prefix or address>." */
    struct msm_listener_stats stats;
    struct msm_filter_chain **chains;
    int n_chains;
    struct msm_filter_chain *default_chain;
    struct msm_listener_filter *lfs;
    int n_lfs;
    uint32_t lf_timeout_ms;         /* listener_filters_timeout, 0 = none (default 15 s) */
    bool continue_on_lf_timeout;
    uint64_t hash; /* of the serialized proto: detects "modified" on update */
};

/* What is known about a new connection when its filter chain is picked. */
struct msm_conn_meta {
    const struct msm_address *local;  /* destination (original dst after original_dst) */
    const struct msm_address *remote; /* source */
    const struct msm_address *direct_remote;
    const char *sni;       /* NULL when none */
    const char *transport; /* "raw_buffer" or "tls" */
    const char *const *alpn;
    int n_alpn;
};

struct msm_build_opts {
    struct msm_stats_store *stats;
    bool validate_only; /* known-but-unimplemented extensions pass (--mode validate) */
    bool allow_unknown_fields;
    int traffic_direction; /* the Listener's (envoy.config.core.v3.TrafficDirection) */
};

/* Build from an envoy.config.listener.v3.Listener. NULL with <err> naming the field. */
struct msm_listener_cfg *msm_listener_cfg_from_proto(const void *listener_proto,
                                                     const struct msm_build_opts *o,
                                                     struct msm_err *err);
struct msm_listener_cfg *msm_listener_cfg_ref(struct msm_listener_cfg *l);
void msm_listener_cfg_unref(struct msm_listener_cfg *l);
/* Every TLS context of <l>'s chains is warm (msm_tls_factory_warm): the listener may serve.
 * Main thread. */
bool msm_listener_cfg_warm(const struct msm_listener_cfg *l);
/* The chain of <l> whose proto hash is <hash>, or NULL (default chain included). */
const struct msm_filter_chain *msm_listener_chain_by_hash(const struct msm_listener_cfg *l,
                                                          uint64_t hash);
/* Envoy's filter-chain match: most specific chain per criterion, in order (destination port,
 * destination IP, server name, transport protocol, application protocols, direct source IP,
 * source type, source IP, source port); the default chain when none matches; NULL = reject. */
const struct msm_filter_chain *msm_listener_match(const struct msm_listener_cfg *l,
                                                  const struct msm_conn_meta *m);
/* Is listener filter <f> enabled for a connection to <dport>? */
bool msm_listener_filter_enabled(const struct msm_listener_filter *f, uint32_t dport);
int msm_cidr_parse(const char *prefix, uint32_t len, struct msm_cidr *out, struct msm_err *err);
bool msm_cidr_contains(const struct msm_cidr *c, const struct msm_address *a);
/* <n> envoy.config.core.v3.CidrRange into a new array (<*nout> entries, set first so the
 * array can be freed on failure); MSM_EINVAL with <err> naming "<field>[i]". */
struct Envoy__Config__Core__V3__CidrRange;
int msm_cidrs_from_proto(struct Envoy__Config__Core__V3__CidrRange *const *v, size_t n,
                         struct msm_cidr **out, int *nout, const char *field,
                         struct msm_err *err);
