#pragma once
/* istio.metadata_exchange (envoy.tcp.metadataexchange.config.MetadataExchange): Istio's TCP
 * metadata exchange, byte-compatible with a real Envoy sidecar (istio/proxy
 * source/extensions/filters/network/metadata_exchange at 9ba5437151af; envoyproxy/envoy
 * contrib/istio/filters/network/metadata_exchange).
 *
 * Two roles, one state machine (metadata_exchange.c):
 * - downstream (server): a network filter in a listener chain (istiod puts it first in every
 *   virtualInbound chain); the peer read becomes the stream info's downstream_peer.
 * - upstream (client): a cluster-level upstream filter (cluster `filters`, filter/upstream.h) on
 *   each connection tcp_proxy opens; the peer read becomes the session's upstream_peer.
 *
 * Per connection, at the first byte either way (on_data or on_write), like Envoy:
 *   ALPN      the negotiated ALPN must equal <protocol> ("istio-peer-exchange"); otherwise
 *             alpn_protocol_not_found, "no peer", and the filter steps aside for good. Raw
 *             connections have no ALPN, so they never match.
 *   WRITE     alpn_protocol_found; our preamble (wire.h) goes out ahead of any application byte
 *             (metadata_added).
 *   HEADER    the peer's 8-byte header: fewer bytes so far counts initial_header_not_found (as
 *             Envoy, which counts every short read) and waits; a FIN first gives up without a
 *             peer (bytes passed on). Wrong magic: initial_header_not_found, "no peer", the
 *             bytes are passed on untouched (the peer has no exchange filter).
 *   PAYLOAD   N bytes, stripped: an Any(Struct) whose "x-envoy-peer-metadata" is the peer.
 *             Not an Any: header_not_found, "no peer", the N bytes are passed on (as Envoy).
 *             An Any that is not a Struct: header_not_found, "no peer" (Envoy throws there).
 *   DONE      everything after the preamble flows untouched.
 * Our bounds where Envoy has none: N > MSM_MX_MAX_PAYLOAD, or a FIN before all N bytes, closes
 * the connection (header_not_found, a warning) instead of buffering or stalling.
 *
 * Stats: metadata_exchange.{alpn_protocol_not_found,alpn_protocol_found,
 * initial_header_not_found,header_not_found,metadata_added}, in the root scope, shared by both
 * roles (Envoy builds both with the server factory context's scope).
 * enable_discovery is accepted; without workload discovery (WDS) in this build a peer that sent
 * no preamble stays unknown, as in an Envoy without the WDS bootstrap extension. */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "filter/network.h"
#include "filter/upstream.h"
#include "filters/network/metadata_exchange/workload.h"
#include "stats/istio_stats.h"
#include "stats/stats.h"

#define MSM_MX_STATS(C, G, H)                                                                     \
    C(alpn_protocol_not_found) C(alpn_protocol_found) C(initial_header_not_found)                \
    C(header_not_found) C(metadata_added)
MSM_STATS_STRUCT(msm_mx_stats, MSM_MX_STATS);
MSM_STATS_INIT_FN(msm_mx_stats, MSM_MX_STATS)

struct msm_mx_config {
    char *protocol; /* the ALPN that switches the exchange on */
    bool enable_discovery;
    char **additional_labels;
    int n_additional_labels;
    bool upstream; /* the cluster (client) role */
    /* What we send: built once from the bootstrap node (config/node.h), which never changes;
     * <preamble> points into <preamble_blob>, shared by the configs with the same preamble. */
    const uint8_t *preamble;
    size_t preamble_len;
    struct mx_preamble *preamble_blob;
    bool has_stats;
    struct msm_mx_stats stats;
};

/* What the exchange learnt about one peer; owned by the filter instance and valid while the
 * session is (the stream info's downstream_peer / upstream_peer point at <labels>, and its
 * *_peer_metadata / *_peer_state at the two JSON objects). */
struct msm_mx_peer {
    struct msm_istio_peer labels; /* strings point into <wl> */
    struct msm_mx_workload wl;
    char *id;        /* x-envoy-peer-metadata-id, "" when absent */
    json_t *metadata; /* the Struct the peer sent under x-envoy-peer-metadata */
    json_t *state;    /* Envoy's filter state object (msm_mx_workload_state) */
};

extern const struct msm_network_filter_ops msm_mx_ops;
extern const struct msm_upstream_filter_ops msm_mx_upstream_ops;

/* config.c: the MetadataExchange proto (<msg>) into a config for either role. Main thread. */
int msm_mx_config_new(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx, bool upstream,
                      struct msm_mx_config **out, struct msm_err *err);
void msm_mx_config_free(void *config);
/* The exchange Struct we send for the current node ({x-envoy-peer-metadata: ...,
 * x-envoy-peer-metadata-id: ...}); a new reference. */
json_t *msm_mx_local_exchange(char *const *additional_labels, int n_additional_labels);

/* metadata_exchange.c: the filter slots, shared by both ops. */
void *msm_mx_filter_new(void *config, struct msm_filter_handle *h);
void *msm_mx_upstream_filter_new(void *config, struct msm_upstream_filter_handle *h);
enum msm_filter_status msm_mx_on_data(void *filter, struct msm_buf *data, bool end_stream);
enum msm_filter_status msm_mx_on_write(void *filter, struct msm_buf *data, bool end_stream);
void msm_mx_filter_free(void *filter);
