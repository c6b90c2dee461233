#pragma once
/* istio.metadata_exchange as an HTTP filter (io.istio.http.peer_metadata.Config): Istio's HTTP
 * peer metadata exchange, after istio/proxy source/extensions/filters/http/peer_metadata
 * (filter.cc; the null-VM plugin envoy.wasm.metadata_exchange of Istio <= 1.18 behaves the same
 * on the wire and is mapped onto this filter, see src/filter/http_registry.c).
 *
 * On the wire: "x-envoy-peer-metadata" is the base64 (standard alphabet, padded) of a
 * google.protobuf.Struct serialized deterministically (no Any around it, unlike the TCP
 * exchange) holding the workload (filters/network/metadata_exchange/workload.h:
 * convertWorkloadMetadataToStruct), and "x-envoy-peer-metadata-id" is the node id.
 *
 * Per request:
 * - decode_headers: downstream discovery (istio_headers): the request's headers (first value of
 *   each) become the stream's downstream_peer (struct msm_hstream_info), then both headers are
 *   removed so they never reach the application. Upstream propagation (istio_headers): both
 *   headers are set on the request to the upstream, unless the upstream cluster is marked
 *   istio.disable_mx, or skip_external_clusters and it is PassthroughCluster or istio.external.
 * - encode_headers: upstream discovery from the response's headers (upstream_peer), removed
 *   likewise; downstream propagation: our headers on the response, each only when the request
 *   carried it (a client outside the mesh never gets them), with the same cluster rule.
 * As Envoy: the first peer found wins; a value that is not valid base64 decodes to nothing,
 * which parses as an empty Struct (a peer with every field empty); bytes that are not a Struct
 * give no peer.
 *
 * Not available here, accepted as "no peer" (telemetry only): workload_discovery (needs Istio's
 * workload discovery xDS of ztunnel), baggage and upstream_filter_state (HBONE / waypoints).
 * Baggage propagation is not sent. shared_with_upstream has no effect (no upstream filter
 * state). Envoy's per-thread cache of decoded peers by id is not kept: each request decodes its
 * header (a few microseconds). */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "filter/http.h"

#define MSM_PM_HEADER "x-envoy-peer-metadata"
#define MSM_PM_HEADER_ID "x-envoy-peer-metadata-id"

extern const struct msm_http_filter_ops msm_peer_metadata_ops;

/* codec.c: the header value for the workload Struct <st> (a JSON object, see wire.h): base64 of
 * its deterministic serialization. Malloc'ed, NUL-terminated. */
char *msm_pm_header_encode(const json_t *st);
/* The Struct carried by the header value <v> (<n> bytes): a new JSON object in *<out>, or false
 * when the decoded bytes are not a Struct. Envoy's Base64::decodeWithoutPadding: padding is
 * optional, anything else that is not standard base64 decodes to no bytes (an empty Struct). */
bool msm_pm_header_decode(const char *v, size_t n, json_t **out);
/* Envoy's Base64::decodeWithoutPadding into a malloc'ed buffer (*<len> bytes; NULL when
 * empty); false, with an empty result (NULL, 0), on invalid input. */
bool msm_pm_base64_decode(const char *v, size_t n, unsigned char **out, size_t *len);
