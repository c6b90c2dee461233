#pragma once
/* The istio-peer-exchange preamble on the wire (Istio's TCP metadata exchange), as a real Envoy
 * sidecar writes and reads it (istio/proxy source/extensions/filters/network/metadata_exchange/
 * metadata_exchange.cc and metadata_exchange_initial_header.h at 9ba5437151af, identical in
 * envoyproxy/envoy contrib/istio/filters/network/metadata_exchange):
 *
 *   offset 0  uint32 big-endian  magic 0x3D230467
 *   offset 4  uint32 big-endian  N, the length of what follows
 *   offset 8  N bytes            google.protobuf.Any{
 *                                  type_url = "type.googleapis.com/google.protobuf.Struct",
 *                                  value = google.protobuf.Struct, serialized deterministically
 *                                          (map entries sorted by key, bytewise) }
 *
 * The Struct has "x-envoy-peer-metadata" -> Struct (the workload: NAME, NAMESPACE, WORKLOAD_NAME,
 * CLUSTER_ID, IDENTITY, LABELS{...}, OWNER, REGION, AVAILABILITY_ZONE; see workload.h) and,
 * when the node has an id, "x-envoy-peer-metadata-id" -> the node id as a string.
 *
 * Pure functions (no I/O, no globals): the filter (metadata_exchange.c), the unit tests and the
 * fuzz target call them. A protobuf value is represented as JSON (jansson): Struct = object,
 * ListValue = array, string/bool/null, number = real. */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSM_MX_MAGIC 0x3D230467u
#define MSM_MX_HEADER_LEN 8
/* Our bound on N (Envoy has none: it would buffer up to the connection's buffer limit and wait).
 * A real preamble is a few hundred bytes. */
#define MSM_MX_MAX_PAYLOAD (64u * 1024u)
#define MSM_MX_METADATA_KEY "x-envoy-peer-metadata"
#define MSM_MX_METADATA_ID_KEY "x-envoy-peer-metadata-id"
#define MSM_MX_STRUCT_TYPE_URL "type.googleapis.com/google.protobuf.Struct"
/* protobuf's default recursion limit (CodedInputStream): nested messages deeper than this do
 * not parse. */
#define MSM_MX_MAX_DEPTH 100

/* The first MSM_MX_HEADER_LEN bytes at <h>: true with *<len> = N when the magic matches. */
bool msm_mx_header_parse(const uint8_t *h, uint32_t *len);

/* google.protobuf.Struct serialization of <st> (a JSON object; NULL = empty Struct), map entries
 * sorted by key as protobuf's deterministic serialization does. Returns a malloc'ed buffer of
 * *<len> bytes (never NULL; an empty Struct is 0 bytes but still a valid pointer). */
uint8_t *msm_mx_struct_encode(const json_t *st, size_t *len);

/* The whole preamble for <exchange> (the outer Struct with the two keys above): header, then
 * Any(Struct). Malloc'ed, *<len> bytes. */
uint8_t *msm_mx_preamble_encode(const json_t *exchange, size_t *len);

enum msm_mx_payload {
    MSM_MX_PAYLOAD_OK = 0,
    /* Not a google.protobuf.Any (Envoy: Any::ParseFromString failed; header_not_found, the
     * bytes are left in the stream). */
    MSM_MX_PAYLOAD_BAD_ANY = 1,
    /* An Any, but not a Struct (wrong type_url, or its value does not parse as a Struct).
     * Envoy's anyConvert throws there; we count header_not_found and go on without a peer. */
    MSM_MX_PAYLOAD_BAD_STRUCT = 2,
};

/* Decode the N payload bytes at <p>: on MSM_MX_PAYLOAD_OK, *<out> is a new JSON object (the
 * outer Struct) owned by the caller; otherwise *<out> is NULL. Strings must be valid UTF-8
 * (proto3), nesting is bounded by MSM_MX_MAX_DEPTH, unknown fields are skipped, a repeated
 * singular field keeps its last value, as protobuf's parser does. */
enum msm_mx_payload msm_mx_payload_decode(const uint8_t *p, size_t n, json_t **out);

/* Decode <n> bytes at <p> as a bare google.protobuf.Struct (Struct::ParseFromString; the HTTP
 * exchange's x-envoy-peer-metadata header carries one, base64-encoded): a new JSON object in
 * *<out>, or false (and NULL) when the bytes do not parse. Same rules as the payload. */
bool msm_mx_struct_decode(const uint8_t *p, size_t n, json_t **out);
