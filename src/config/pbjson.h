#pragma once
/* proto3 JSON mapping over protobuf-c descriptors (https://protobuf.dev/programming-guides/json/).
 *
 * Decoding builds a message exactly as protobuf_c_message_unpack() would (message_init,
 * malloc'ed strings, bytes, repeated arrays and sub-messages), so the result is freed with
 * protobuf_c_message_free_unpacked(msg, NULL) and packs to the same bytes as any protobuf
 * implementation would produce. Encoding prints what Envoy's /config_dump prints: original
 * (snake_case) field names by default, fields at their default value omitted, 64-bit integers
 * as strings, enums by name, Any expanded through the type registry (config/types.h).
 *
 * Field names whose descriptor name ends in '_' (the API preprocessing renamed `base` to
 * `base_`) are presented without the underscore in both directions.
 *
 * All functions are reentrant and may run on any thread. See src/config/README.md for the
 * invariants. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "common/err.h"
#include "google/protobuf/any.pb-c.h"

/* Nesting limit for decoding and encoding: JSON objects/arrays (messages, repeated fields,
 * Struct/ListValue levels, Any payloads) deeper than this are rejected. */
#define MSM_PBJSON_MAX_DEPTH 100

struct msm_pbjson_opts {
    /* Unknown JSON field names (and unknown enum value names) are skipped, logged once at
     * debug, instead of being an error (--allow-unknown-static-fields). */
    bool allow_unknown_fields;
    /* For YAML input: a number or bool where a string is expected is accepted as its text
     * (YAML `name: 80`). Reals are printed in their shortest round-trip form. */
    bool lenient_scalars;
};

/* Decode <json> (not consumed) as a message of type <desc>. <opts> may be NULL (strict).
 * Returns a new message owned by the caller (free with protobuf_c_message_free_unpacked(msg,
 * NULL)), or NULL with <err> set to "<field path>: <reason>", e.g.
 * "static_resources.clusters[2].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.
 * socket_address.port_value: value 70000 out of range for uint32". */
ProtobufCMessage *msm_pbjson_decode(const ProtobufCMessageDescriptor *desc, const json_t *json,
                                    const struct msm_pbjson_opts *opts, struct msm_err *err);
/* Same from JSON text <text> of <len> bytes (need not be NUL-terminated). Syntax errors are
 * reported as "line L, column C: <reason>"; duplicate keys in an object are an error. */
ProtobufCMessage *msm_pbjson_decode_text(const ProtobufCMessageDescriptor *desc,
                                         const char *text, size_t len,
                                         const struct msm_pbjson_opts *opts, struct msm_err *err);

struct msm_pbjson_enc_opts {
    bool camel_case; /* lowerCamelCase names; default false = original names, as /config_dump */
    /* Also print fields without presence at their default: proto3 scalars/strings/bytes/enums
     * (0, "", false, first enum value) and empty repeated/map fields ([] / {}); never unset
     * messages, oneof members or optional fields. protobuf's always_print_primitive_fields
     * (always_print_fields_with_no_presence), which Envoy sets for /server_info but not for
     * /config_dump. */
    bool always_print_primitive_fields;
};

/* Encode <msg> (not modified). <opts> may be NULL. Returns a new reference owned by the caller
 * (an object for ordinary messages; a string, number, array... for well-known types), or NULL
 * with <err> set when an Any's type is unknown, its bytes do not parse, or the message nests
 * deeper than MSM_PBJSON_MAX_DEPTH. Invalid UTF-8 in strings is replaced by U+FFFD. */
json_t *msm_pbjson_encode(const ProtobufCMessage *msg, const struct msm_pbjson_enc_opts *opts,
                          struct msm_err *err);
/* Serialize <json> as protobuf's JSON printer does: doubles in shortest round-trip form
 * ("%.15g", else "%.17g"), object keys in insertion order; <pretty> indents by 2 spaces (as
 * /config_dump). Returns a malloc'ed NUL-terminated string owned by the caller; never NULL. */
char *msm_pbjson_dumps(const json_t *json, bool pretty);
/* msm_pbjson_encode() + msm_pbjson_dumps(). NULL with <err> on encoding errors. */
char *msm_pbjson_encode_text(const ProtobufCMessage *msg, const struct msm_pbjson_enc_opts *opts,
                             bool pretty, struct msm_err *err);

/* protobuf_c_message_unpack() of <len> bytes at <data> as <desc>, after checking that message
 * nesting stays within MSM_PBJSON_MAX_DEPTH (protobuf-c itself recurses without a limit).
 * Returns a message owned by the caller (protobuf_c_message_free_unpacked(msg, NULL)), or NULL
 * with <err> set. */
ProtobufCMessage *msm_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                size_t len, struct msm_err *err);
/* Same with protobuf-c <allocator> (NULL = malloc); free the result with the same one. */
ProtobufCMessage *msm_pb_unpack_with(const ProtobufCMessageDescriptor *desc,
                                     ProtobufCAllocator *allocator, const uint8_t *data,
                                     size_t len, struct msm_err *err);

/* Unpack <any> into a new message owned by the caller. udpa.type.v1.TypedStruct and
 * xds.type.v3.TypedStruct are unwrapped: their type_url names the message and their Struct
 * value is decoded with msm_pbjson_decode(<opts>). <expect> may be NULL; otherwise the resolved
 * type must be <expect> (the error names both). NULL with <err> set on failure. */
ProtobufCMessage *msm_pb_any_unpack(const Google__Protobuf__Any *any,
                                    const ProtobufCMessageDescriptor *expect,
                                    const struct msm_pbjson_opts *opts, struct msm_err *err);
