#pragma once
/* xDS wire messages without gRPC: decoding a (Delta)DiscoveryResponse into resources and
 * packing (Delta)DiscoveryRequests. Pure functions over protobuf-c, reentrant, callable from
 * any thread (the xDS thread decodes; the fuzzer and unit tests call them directly). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/core/v3/base.pb-c.h"

#include "common/err.h"
#include "xds/xds.h"

/* Envoy's limit for error_detail.message (Config::Utility::truncateGrpcStatusMessage). */
#define MSM_XDS_MAX_ERROR_DETAIL 4096

struct msm_xds_mem;

struct msm_xds_decoded {
    bool delta;
    /* Borrowed from <resp> (never NULL; "" when absent). */
    const char *type_url;
    const char *nonce;
    const char *version_info; /* SotW version_info / Delta system_version_info */
    /* Decoded resources, in response order (TTL heartbeats without a body are skipped). Names,
     * versions and messages are owned by this struct (decode arenas: never free a message
     * yourself). A released resource (msm_xds_decoded_release) has msg NULL; its name and
     * version stay. */
    struct msm_xds_resource *res;
    int n;
    const char **removed; /* Delta removed_resources */
    int n_removed;
    /* NULL, or why the response must be NACKed (a resource that does not decode, a type URL
     * mismatch, a duplicate name): then <n> is 0. Owned. */
    char *error;
    struct msm_xds_mem *mem; /* private (xds_proto.c) */
};

/* Decode <len> bytes of a DiscoveryResponse (<delta> false) or DeltaDiscoveryResponse. Returns
 * NULL with <err> set only when the bytes are not such a message at all (the stream is then
 * broken: there is no nonce to NACK). Otherwise a new struct owned by the caller (free with
 * msm_xds_decoded_free), whose <error> is set when the response must be NACKed. Each resource
 * is checked against the response type_url and unpacked with msm_pb_unpack (nesting depth
 * bounded). An unknown response type_url is an <error>. */
struct msm_xds_decoded *msm_xds_decode(bool delta, const uint8_t *data, size_t len,
                                       struct msm_err *err);
/* Same; <release>(<arg>), when not NULL, is called as soon as <data> is not needed any more
 * (before the resources are decoded), so the caller's buffer goes early. <lazy>: resources of
 * the big types (clusters, assignments, listeners) are only checked (every wire error
 * protobuf-c would find, and the nesting bound) and kept as bytes, with msg NULL: each is
 * unpacked when asked for with msm_xds_decoded_msg. */
struct msm_xds_decoded *msm_xds_decode_ex(bool delta, const uint8_t *data, size_t len, bool lazy,
                                          void (*release)(void *arg), void *arg,
                                          struct msm_err *err);
/* Resource <i>'s message: res[i].msg, unpacked first if it was decoded lazily. A lazily decoded
 * message is valid until the next call for another resource or its release (one at a time);
 * NULL with <err> when it cannot be unpacked or was released. */
const ProtobufCMessage *msm_xds_decoded_msg(struct msm_xds_decoded *d, int i, struct msm_err *err);
/* Whether <d>'s resources were decoded lazily. */
bool msm_xds_decoded_lazy(const struct msm_xds_decoded *d);
void msm_xds_decoded_free(struct msm_xds_decoded *d);
/* Free resource <i>'s message now (its memory returns to the system once every resource
 * sharing its arena blocks is released): an applied resource of a big response. */
void msm_xds_decoded_release(struct msm_xds_decoded *d, int i);

/* Name of a decoded resource as Envoy derives it for SotW responses: the message's `name`
 * field, or `cluster_name` (ClusterLoadAssignment). "" when it has neither. Borrowed. */
const char *msm_xds_resource_name(const ProtobufCMessage *m);

/* What one (Delta)DiscoveryRequest carries. Arrays are borrowed. */
struct msm_xds_req {
    const char *type_url;
    const char *version_info;       /* SotW only; NULL = "" */
    const char *const *names;       /* SotW resource_names / Delta resource_names_subscribe */
    size_t n_names;
    const char *const *unsub;       /* Delta resource_names_unsubscribe */
    size_t n_unsub;
    const char *const *irv_names;   /* Delta initial_resource_versions keys ... */
    const char *const *irv_versions; /* ... and values */
    size_t n_irv;
    const char *nonce;              /* NULL = none */
    const char *error;              /* NACK: error_detail {13, error}; NULL = ACK/request */
    const Envoy__Config__Core__V3__Node *node; /* NULL = not sent */
};

/* Pack <r> as a DiscoveryRequest (<delta> false) or DeltaDiscoveryRequest. Returns a malloc'ed
 * buffer of <*len> bytes owned by the caller. */
uint8_t *msm_xds_pack_request(bool delta, const struct msm_xds_req *r, size_t *len);
