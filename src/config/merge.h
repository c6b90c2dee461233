#pragma once
/* protobuf MergeFrom() over protobuf-c messages, as Envoy merges --config-yaml over -c, and a
 * deep copy. Both work on messages allocated as protobuf-c's unpack allocates them (system
 * malloc; e.g. results of msm_pbjson_decode() or protobuf_c_message_unpack(..., NULL, ...)). */
#include <protobuf-c/protobuf-c.h>

#include "common/err.h"

/* Merge <src> into <dst> (same type; <src> is not modified):
 * - singular scalars, strings, bytes and enums set in <src> overwrite <dst>; "set" means a
 *   non-default value for proto3 implicit-presence fields, the has_ flag or a non-NULL
 *   pointer for optional fields, the case for oneof members;
 * - singular messages merge recursively (deep copy when absent in <dst>);
 * - repeated fields are appended (deep copies); map fields are merged by key, a <src> entry
 *   replacing the <dst> entry with the same key;
 * - oneof: a different case in <src> frees <dst>'s current member first; the same message
 *   case merges recursively;
 * - unknown fields of <src> are appended.
 * Returns 0, or MSM_EINVAL with <err> set when the types differ (then <dst> is unchanged). */
int msm_pb_merge(ProtobufCMessage *dst, const ProtobufCMessage *src, struct msm_err *err);

/* Deep copy of <msg>, owned by the caller (protobuf_c_message_free_unpacked(copy, NULL)).
 * Never NULL. */
ProtobufCMessage *msm_pb_dup(const ProtobufCMessage *msg);
