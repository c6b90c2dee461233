#pragma once
/* HTTP filters: the plug-in interface of the HTTP connection manager's filter chain, after
 * Envoy's Http::StreamDecoderFilter / StreamEncoderFilter.
 *
 * Contract of struct msm_http_filter_ops (one const instance per filter type):
 * - name / config_type: Envoy's extension name and the full proto name of its typed_config
 *   (the registry key). route_config_type: the proto of its typed_per_filter_config entries
 *   (NULL: the filter takes none).
 * - config_new (main thread): validate the decoded proto, build an immutable plain-C config.
 *   0, or MSM_EINVAL with <err> naming the field. config_free releases it (any thread).
 * - route_config_new / route_config_free: the same for per-route configs.
 * - filter_new (worker): one instance per request; never fails.
 * - decode_* run in chain order on the request, encode_* in reverse order on the response.
 *   MSM_HF_CONTINUE passes the frame on; MSM_HF_STOP stops iteration at this filter (it resumes
 *   with msm_hs_continue_decoding / _encoding). While decoding is stopped, body and trailers
 *   that arrive are buffered by the connection manager (up to the buffer limit, then 413) and
 *   delivered when the filter continues. A filter that sends a local reply returns STOP.
 *   decode_data/encode_data: move out the bytes a filter keeps; what remains goes on.
 * - terminal: the router; must be last.
 * - on_destroy: the stream ends (complete or reset); no other callback follows but filter_free.
 * - on_watermark: the downstream cannot take more response bytes for now (above) / can again.
 * - filter_free: free the instance (after every filter got on_destroy).
 * Optional slots may be NULL.
 */
#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "buffer/buf.h"
#include "common/err.h"
#include "http/headers.h"
#include "net/address.h"
#include "stats/stats.h"

enum msm_hf_status {
    MSM_HF_CONTINUE = 0,
    MSM_HF_STOP = 1,
};

struct msm_hstream_info;
struct msm_http_stream; /* the connection manager's stream: what filters act on */
struct msm_istio_peer;
struct msm_host;

struct msm_http_factory_ctx {
    struct msm_stats_store *stats;
    const char *stat_prefix; /* "http.<hcm stat_prefix>." */
    const char *filter_name; /* http_filters[].name */
    bool allow_unknown_fields;
    /* The listener's envoy.config.core.v3.TrafficDirection (0 unspecified, 1 inbound, 2
     * outbound): istio.stats's reporter, the Wasm metadata exchange's propagation. */
    int traffic_direction;
};

struct msm_http_filter_ops {
    const char *name;
    const char *config_type;
    const char *route_config_type;
    bool terminal;
    int (*config_new)(const ProtobufCMessage *msg, struct msm_http_factory_ctx *ctx,
                      void **config, struct msm_err *err);
    void (*config_free)(void *config);
    int (*route_config_new)(const ProtobufCMessage *msg, void **config, struct msm_err *err);
    void (*route_config_free)(void *config);
    void *(*filter_new)(void *config, struct msm_http_stream *s);
    enum msm_hf_status (*decode_headers)(void *f, struct msm_hdrs *h, bool end_stream);
    enum msm_hf_status (*decode_data)(void *f, struct msm_buf *data, bool end_stream);
    enum msm_hf_status (*decode_trailers)(void *f, struct msm_hdrs *t);
    enum msm_hf_status (*encode_headers)(void *f, struct msm_hdrs *h, bool end_stream);
    enum msm_hf_status (*encode_data)(void *f, struct msm_buf *data, bool end_stream);
    enum msm_hf_status (*encode_trailers)(void *f, struct msm_hdrs *t);
    void (*on_destroy)(void *f);
    void (*on_watermark)(void *f, bool above);
    void (*filter_free)(void *f);
};

/* Registry (src/filter/http_registry.c). By config type, else by name (no typed_config).
 * <known> is set when the type exists in the API but is not implemented. */
const struct msm_http_filter_ops *msm_http_filter_find(const char *config_type, const char *name,
                                                       bool *known);
/* The filter whose route_config_type is <type> (typed_per_filter_config entries), or NULL. */
const struct msm_http_filter_ops *msm_http_filter_find_route_type(const char *type);
/* Telemetry-only HTTP filters accepted as no-ops, by config type (see http_registry.c); NULL
 * when <type> is not one of them. */
const char *msm_http_filter_noop_reason(const char *config_type);
/* An envoy.extensions.filters.http.wasm.v3.Wasm <msg>: Istio's null-VM plugins (<= 1.18) map
 * onto native filters: envoy.wasm.stats -> istio.stats (its configuration, a StringValue of
 * JSON or a PluginConfig, as stats.PluginConfig), envoy.wasm.metadata_exchange -> the HTTP peer
 * metadata filter (istio_headers discovery both ways, propagation as the plugin did for
 * <traffic_direction>). Returns the filter and *<native>, a new config message for it (free
 * with protobuf_c_message_free_unpacked), or NULL with <err> for any other Wasm module or an
 * unusable configuration. */
const struct msm_http_filter_ops *msm_http_filter_wasm(const ProtobufCMessage *msg,
                                                       int traffic_direction,
                                                       ProtobufCMessage **native,
                                                       struct msm_err *err);

/* --- what an HTTP filter instance may call (worker thread) ------------------------------------ *
 * <s> is the filter's own handle (given to filter_new): calls that move frames start from this
 * filter's position in the chain. */
struct ev_loop;
struct msm_conn;
struct msm_route;
struct msm_route_config;
struct msm_worker;

/* Envoy's response flags (access log %RESPONSE_FLAGS% short names). */
#define MSM_RF_LIST(X)                                                                            \
    X(FAILED_LOCAL_HEALTH_CHECK, "LH") X(NO_HEALTHY_UPSTREAM, "UH")                               \
    X(UPSTREAM_REQUEST_TIMEOUT, "UT") X(LOCAL_RESET, "LR") X(UPSTREAM_REMOTE_RESET, "UR")         \
    X(UPSTREAM_CONNECTION_FAILURE, "UF") X(UPSTREAM_CONNECTION_TERMINATION, "UC")                 \
    X(UPSTREAM_OVERFLOW, "UO") X(NO_ROUTE_FOUND, "NR") X(DELAY_INJECTED, "DI")                    \
    X(FAULT_INJECTED, "FI") X(RATE_LIMITED, "RL") X(UNAUTHORIZED_EXTERNAL_SERVICE, "UAEX")        \
    X(RATELIMIT_SERVICE_ERROR, "RLSE") X(DOWNSTREAM_CONNECTION_TERMINATION, "DC")                 \
    X(UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX") X(STREAM_IDLE_TIMEOUT, "SI")                          \
    X(INVALID_ENVOY_REQUEST_HEADERS, "IH") X(DOWNSTREAM_PROTOCOL_ERROR, "DPE")                    \
    X(UPSTREAM_MAX_STREAM_DURATION_REACHED, "UMSDR") X(RESPONSE_FROM_CACHE_FILTER, "RFCF")        \
    X(NO_FILTER_CONFIG_FOUND, "NFCF") X(DURATION_TIMEOUT, "DT") X(UPSTREAM_PROTOCOL_ERROR, "UPE") \
    X(NO_CLUSTER_FOUND, "NC") X(OVERLOAD_MANAGER, "OM") X(DNS_RESOLUTION_FAILURE, "DF")           \
    X(DROP_OVERLOAD, "DO")

enum msm_rf_bit {
#define MSM__RF_ENUM(e, s) MSM_RF_BIT_##e,
    MSM_RF_LIST(MSM__RF_ENUM)
#undef MSM__RF_ENUM
};
#define MSM_RF(e) (1u << MSM_RF_BIT_##e)
/* "UH,UF" style list of <flags>, or "-" when none, into <out>. */
void msm_rf_format(uint32_t flags, char *out, size_t n);

/* What is known about a stream (Envoy's StreamInfo subset); filters read and add to it. */
struct msm_hstream_info {
    uint32_t flags;       /* MSM_RF(...) bits */
    const char *details;  /* response code details (static string) */
    int status;           /* response status sent downstream, 0 before */
    char upstream_host[64];
    char upstream_cluster[256];
    uint32_t attempts;    /* upstream requests made (x-envoy-attempt-count) */
    uint64_t rx_body, tx_body;
    /* Response headers and trailers sent downstream, names + values (Envoy's byteSize). */
    uint64_t tx_header_bytes;
    double start;         /* ev_now at the first request byte */
    /* istio.alpn: ALPN to offer upstream (the router passes it to TLS pools). */
    const char *const *alpn_override;
    int n_alpn_override;
    /* Istio peer metadata (filters/http/peer_metadata): the workloads read from the request's
     * (downstream) and the response's (upstream) x-envoy-peer-metadata headers; NULL = none.
     * Owned by the filter that set them, valid until its filter_free (istio.stats reads them in
     * on_destroy). */
    const struct msm_istio_peer *downstream_peer, *upstream_peer;
    /* Set by the router when an attempt gets its connection: the chosen endpoint (borrowed, the
     * router holds a reference until its filter_free) and the first URI SANs of the upstream
     * TLS connection's peer and local certificates ("" = none or plaintext). */
    const struct msm_host *upstream_endpoint;
    char upstream_peer_san[256], upstream_local_san[256];
    /* Access log (set by the router): the local address of the last attempt's upstream
     * connection (len 0 = none), when the request's last byte went upstream and the response's
     * first byte came (ev_now, 0 = never), and why the upstream transport failed ("" = it did
     * not). */
    struct msm_address upstream_local;
    double last_upstream_tx, first_upstream_rx;
    char upstream_failure[128];
    /* Room for response code details built per stream (the router's reset details); <details>
     * points here then. */
    char details_buf[192];
};

struct msm_hdrs *msm_hs_request_headers(struct msm_http_stream *s);
/* The route for the request (selected on first call, cached until cleared); NULL = no route
 * (or no route configuration yet). */
const struct msm_route *msm_hs_route(struct msm_http_stream *s);
const struct msm_route_config *msm_hs_route_config(struct msm_http_stream *s);
void msm_hs_clear_route_cache(struct msm_http_stream *s);
/* Weighted cluster chosen by the router (index into route->wc, -1 = none yet). */
int msm_hs_route_wc(struct msm_http_stream *s);
void msm_hs_set_route_wc(struct msm_http_stream *s, int wc);
/* This filter's per-route config for the current route (most specific level), or NULL.
 * <disabled> (may be NULL) is set when the route disables this filter. */
void *msm_hs_per_route_config(struct msm_http_stream *s, bool *disabled);
void msm_hs_continue_decoding(struct msm_http_stream *s);
void msm_hs_continue_encoding(struct msm_http_stream *s);
/* Send a response from this filter (through the encoder filters before it). <body> may be
 * NULL; <details> is Envoy's response code details ("route_not_found"); <flag> MSM_RF bits. */
void msm_hs_send_local_reply(struct msm_http_stream *s, int status, const char *body,
                             const char *details, uint32_t flags);
/* Response frames from this filter toward the client (the router). */
void msm_hs_encode_headers(struct msm_http_stream *s, struct msm_hdrs *h, bool end_stream);
void msm_hs_encode_data(struct msm_http_stream *s, struct msm_buf *data, bool end_stream);
void msm_hs_encode_trailers(struct msm_http_stream *s, struct msm_hdrs *t);
void msm_hs_encode_100_continue(struct msm_http_stream *s);
/* Reset the downstream stream (e.g. upstream reset after the response started). */
void msm_hs_reset(struct msm_http_stream *s);
/* Flow control of the request body: stop / resume reading it (nestable). */
void msm_hs_read_disable(struct msm_http_stream *s, bool disable);
struct msm_hstream_info *msm_hs_info(struct msm_http_stream *s);
struct msm_worker *msm_hs_worker(struct msm_http_stream *s);
struct ev_loop *msm_hs_loop(struct msm_http_stream *s);
const struct msm_conn *msm_hs_conn(struct msm_http_stream *s);
/* Downstream protocol: enum msm_http_proto (http/codec.h). */
int msm_hs_protocol(struct msm_http_stream *s);
/* Bytes of request body a filter may buffer (retries, local-reply decisions). */
uint32_t msm_hs_buffer_limit(struct msm_http_stream *s);
/* "http.<stat_prefix>." of the connection manager, and its stats store. */
const char *msm_hs_stat_prefix(struct msm_http_stream *s);
bool msm_hs_is_grpc(struct msm_http_stream *s);
