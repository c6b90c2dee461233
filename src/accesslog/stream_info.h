#pragma once
/* Stream info: what is known about one downstream connection (or, for HTTP, one request) when
 * it is logged: Envoy's StreamInfo, reduced to what the access log command operators and the
 * Istio stats need.
 *
 * Ownership and threads:
 * - One per downstream session (struct msm_session embeds it; msm_filter_stream_info(h) gives
 *   it to any filter of the chain), on the session's worker. The filter manager fills the
 *   downstream part when the session starts and the byte counts when the connection closes.
 * - The filter that picks the upstream (tcp_proxy, the HTTP router) fills the upstream part with
 *   msm_si_set_upstream() and the flags with msm_si_set_flag(); those take references, released
 *   by msm_si_deinit() with the session.
 * - An HTTP stream has its own struct (msm_si_init per request) with the request fields set;
 *   headers are borrowed pointers that must stay valid until the log call returns.
 * Strings given to the setters are borrowed unless said otherwise: static strings or strings
 * that live as long as the stream info.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/address.h"

struct msm_cluster_cfg;
struct msm_host;
struct msm_hdrs;
struct msm_istio_peer;
struct json_t;

/* Envoy's response flags, in the order of ResponseFlagUtils (short strings joined by ","). */
#define MSM_RESPONSE_FLAGS(X)                                                                     \
    X(FAILED_LOCAL_HEALTH_CHECK, "LH", "FailedLocalHealthCheck")                                  \
    X(NO_HEALTHY_UPSTREAM, "UH", "NoHealthyUpstream")                                             \
    X(UPSTREAM_REQUEST_TIMEOUT, "UT", "UpstreamRequestTimeout")                                   \
    X(LOCAL_RESET, "LR", "LocalReset")                                                            \
    X(UPSTREAM_REMOTE_RESET, "UR", "UpstreamRemoteReset")                                         \
    X(UPSTREAM_CONNECTION_FAILURE, "UF", "UpstreamConnectionFailure")                             \
    X(UPSTREAM_CONNECTION_TERMINATION, "UC", "UpstreamConnectionTermination")                     \
    X(UPSTREAM_OVERFLOW, "UO", "UpstreamOverflow")                                                \
    X(NO_ROUTE_FOUND, "NR", "NoRouteFound")                                                       \
    X(DELAY_INJECTED, "DI", "DelayInjected")                                                      \
    X(FAULT_INJECTED, "FI", "FaultInjected")                                                      \
    X(RATE_LIMITED, "RL", "RateLimited")                                                          \
    X(UNAUTHORIZED_EXTERNAL_SERVICE, "UAEX", "UnauthorizedExternalService")                       \
    X(RATELIMIT_SERVICE_ERROR, "RLSE", "RateLimitServiceError")                                   \
    X(DOWNSTREAM_CONNECTION_TERMINATION, "DC", "DownstreamConnectionTermination")                 \
    X(UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX", "UpstreamRetryLimitExceeded")                         \
    X(STREAM_IDLE_TIMEOUT, "SI", "StreamIdleTimeout")                                             \
    X(INVALID_ENVOY_REQUEST_HEADERS, "IH", "InvalidEnvoyRequestHeaders")                          \
    X(DOWNSTREAM_PROTOCOL_ERROR, "DPE", "DownstreamProtocolError")                                \
    X(UPSTREAM_MAX_STREAM_DURATION_REACHED, "UMSDR", "UpstreamMaxStreamDurationReached")          \
    X(RESPONSE_FROM_CACHE_FILTER, "RFCF", "ResponseFromCacheFilter")                              \
    X(NO_FILTER_CONFIG_FOUND, "NFCF", "NoFilterConfigFound")                                      \
    X(DURATION_TIMEOUT, "DT", "DurationTimeout")                                                  \
    X(UPSTREAM_PROTOCOL_ERROR, "UPE", "UpstreamProtocolError")                                    \
    X(NO_CLUSTER_FOUND, "NC", "NoClusterFound")                                                   \
    X(OVERLOAD_MANAGER, "OM", "OverloadManagerTerminated")                                        \
    X(DNS_RESOLUTION_FAILED, "DF", "DnsResolutionFailed")                                         \
    X(DROP_OVERLOAD, "DO", "DropOverload")                                                        \
    X(DOWNSTREAM_REMOTE_RESET, "DR", "DownstreamRemoteReset")                                     \
    X(UNCONDITIONAL_DROP_OVERLOAD, "UDO", "UnconditionalDropOverload")

enum msm_response_flag {
#define MSM_RF_X(e, s, l) MSM_RF_##e,
    MSM_RESPONSE_FLAGS(MSM_RF_X)
#undef MSM_RF_X
        MSM_RF_COUNT
};

struct msm_stream_info {
    /* timing: wall clock (epoch seconds) at the start, monotonic-ish loop time for durations */
    double start_wall;
    double start;          /* ev_now at the start */
    double end;            /* ev_now at the end (0 = not ended: DURATION uses "now") */
    double upstream_connected; /* ev_now when the upstream connection was up, 0 = never */
    double first_upstream_rx, last_upstream_rx; /* HTTP: response timing, 0 = unset */
    double last_upstream_tx;                    /* HTTP: request sent upstream, 0 = unset */
    double last_downstream_rx;                  /* HTTP: request complete, 0 = unset */
    double last_downstream_tx;
    /* downstream */
    unsigned long long connection_id;
    struct msm_address downstream_local;  /* after original_dst */
    struct msm_address downstream_remote;
    struct msm_address downstream_direct_remote;
    bool has_downstream;
    const char *requested_server_name; /* SNI, NULL when none */
    const char *downstream_peer_uri_san, *downstream_local_uri_san; /* TLS, NULL when none */
    const char *downstream_tls_version, *downstream_tls_cipher;
    const char *downstream_transport_failure_reason;
    uint64_t bytes_received, bytes_sent; /* downstream payload bytes */
    /* upstream */
    struct msm_cluster_cfg *upstream_cluster; /* reference */
    struct msm_host *upstream_host;           /* reference */
    struct msm_address upstream_local;
    bool has_upstream_local;
    unsigned long long upstream_connection_id;
    const char *upstream_transport_failure_reason;
    uint32_t attempt_count;
    /* outcome */
    uint64_t response_flags; /* 1 << enum msm_response_flag */
    const char *connection_termination_details; /* see msm_si_set_termination_details */
    char termination_buf[160];
    const char *response_code_details;
    const char *route_name;
    const char *listener_name;
    /* HTTP (absent for TCP: PROTOCOL and RESPONSE_CODE print "-" and 0) */
    const char *protocol; /* "HTTP/1.1", "HTTP/2" */
    uint32_t response_code;
    const struct msm_hdrs *request_headers, *response_headers, *response_trailers;
    bool health_check; /* the request was a health check (not_health_check filter) */
    /* Istio: the peers' metadata read by the metadata exchange (NULL = none; owned by the
     * exchange filter, valid while the session is), and whether the exchange is over (peer known
     * or known to be absent). The istio.stats filter reports a connection once it is. */
    const struct msm_istio_peer *downstream_peer, *upstream_peer;
    bool downstream_peer_done, upstream_peer_done;
    /* The same peers as JSON objects (same owner and lifetime; NULL = none): *_peer_metadata is
     * the Struct the peer sent under x-envoy-peer-metadata (WORKLOAD_NAME, NAMESPACE, LABELS...),
     * *_peer_state Envoy's filter state object "downstream_peer" / "upstream_peer" (workload,
     * namespace, service, revision, app, version, cluster...). */
    const struct json_t *downstream_peer_metadata, *upstream_peer_metadata;
    const struct json_t *downstream_peer_state, *upstream_peer_state;
    /* The upstream TLS connection's URI SANs (NULL = none): the first of the peer certificate
     * (Envoy's upstreamSslConnection()->uriSanPeerCertificate()[0]) and of ours. The client-side
     * istio.stats' destination_principal / source_principal. Set by the filter that owns the
     * upstream connection, with the same lifetime rule as the peers above. */
    const char *upstream_peer_uri_san, *upstream_local_uri_san;
};

/* Start a stream info at <now> (ev_now) and wall time <wall>. */
void msm_si_init(struct msm_stream_info *si, double now, double wall);
/* Release the upstream references. */
void msm_si_deinit(struct msm_stream_info *si);
/* The upstream picked: takes new references to <cluster> and <host> (either may be NULL),
 * replacing earlier ones (a retry picked another host). */
void msm_si_set_upstream(struct msm_stream_info *si, struct msm_cluster_cfg *cluster,
                         struct msm_host *host);
static inline void msm_si_set_flag(struct msm_stream_info *si, enum msm_response_flag f)
{
    si->response_flags |= 1ull << f;
}
static inline bool msm_si_has_flag(const struct msm_stream_info *si, enum msm_response_flag f)
{
    return (si->response_flags >> f) & 1u;
}
/* "UF,URX" (short) or "UpstreamConnectionFailure,..." (long); "-" when no flag. Returns the
 * length written (truncated to <n> - 1). */
int msm_si_flags_str(const struct msm_stream_info *si, bool long_names, char *out, size_t n);
/* Why a filter ended the connection (%CONNECTION_TERMINATION_DETAILS%, e.g. network RBAC's
 * "rbac_access_denied_matched_policy[<policy>]"): formatted into <si>'s own buffer, so it lives
 * as long as the stream info whatever the caller's lifetime. */
void msm_si_set_termination_details(struct msm_stream_info *si, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Parse one short flag ("NR") for response_flag_filter; -1 when unknown. */
int msm_response_flag_parse(const char *s);
