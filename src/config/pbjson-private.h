#pragma once
/* Internals shared by pbjson_decode.c, pbjson_encode.c and pbjson_wkt.c. Not for other
 * subsystems: use config/pbjson.h. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* Well-known types with a special JSON form (Empty is an ordinary message: "{}"). */
enum msm__wkt {
    MSM__WKT_NONE = 0,
    MSM__WKT_ANY,
    MSM__WKT_DURATION,
    MSM__WKT_TIMESTAMP,
    MSM__WKT_FIELD_MASK,
    MSM__WKT_STRUCT,
    MSM__WKT_VALUE,
    MSM__WKT_LIST_VALUE,
    MSM__WKT_WRAPPER, /* DoubleValue .. BytesValue: the JSON form of their field "value" */
};

enum msm__wkt msm__wkt_kind(const ProtobufCMessageDescriptor *desc);
/* google.protobuf.NullValue (JSON null). */
bool msm__is_null_value_enum(const ProtobufCEnumDescriptor *ed);
/* udpa.type.v1.TypedStruct or xds.type.v3.TypedStruct. */
bool msm__is_typed_struct(const ProtobufCMessageDescriptor *desc);

/* JSON name of <f> into <buf> (<cap> bytes, truncated): the proto name without a trailing
 * '_', lowerCamelCased when <camel>. Returns the untruncated length. */
size_t msm__json_name(const ProtobufCFieldDescriptor *f, bool camel, char *buf, size_t cap);
/* The field of <desc> named <key> in JSON (original or lowerCamelCase name), or NULL. */
const ProtobufCFieldDescriptor *msm__find_json_field(const ProtobufCMessageDescriptor *desc,
                                                     const char *key);
/* A repeated field whose element type is the synthesized map entry message: nested in the
 * containing message, named <Field>Entry, fields key = 1 and value = 2. */
bool msm__is_map_field(const ProtobufCMessageDescriptor *parent,
                       const ProtobufCFieldDescriptor *f);
/* Field <f> of <m> is set: exactly what protobuf_c_message_pack() would write (repeated:
 * non-empty; oneof: case selected; optional: has_ / non-default pointer; proto3: non-zero). */
bool msm__field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);
/* In-memory size of one element of a repeated field of <type>. */
size_t msm__elem_size(ProtobufCType type);
/* New message of <desc>, initialized (message_init), allocated as protobuf-c unpack would. */
ProtobufCMessage *msm__msg_new(const ProtobufCMessageDescriptor *desc);

/* Duration "1.5s" <-> seconds/nanos. Parse returns 0 or -1 (syntax or range). */
int msm__duration_parse(const char *s, int64_t *secs, int32_t *nanos);
void msm__duration_format(int64_t secs, int32_t nanos, char *buf, size_t cap);
/* Timestamp RFC 3339 <-> seconds/nanos. Parse returns 0 or -1. */
int msm__timestamp_parse(const char *s, int64_t *secs, int32_t *nanos);
void msm__timestamp_format(int64_t secs, int32_t nanos, char *buf, size_t cap);
/* Shortest decimal forms used by protobuf's printer (SimpleDtoa / SimpleFtoa). */
void msm__format_double(double v, char *buf, size_t cap);
void msm__format_float(float v, char *buf, size_t cap);
/* A JSON number (RFC 8259 grammar) spanning all of <s>. */
bool msm__is_json_number(const char *s);
/* snake_case path <-> lowerCamelCase (FieldMask JSON form); malloc'ed. */
char *msm__snake_to_camel(const char *s);
char *msm__camel_to_snake(const char *s);
