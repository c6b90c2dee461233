#pragma once
/* A RouteConfiguration for the route unit tests, from its proto3 JSON text: NULL with <err> when
 * the JSON or the configuration is refused. */
#include <string.h>

#include "config/pbjson.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "http/route.h"

static inline struct msm_route_config *build(const char *json, struct msm_err *err)
{
    ProtobufCMessage *m = msm_pbjson_decode_text(
        &envoy__config__route__v3__route_configuration__descriptor, json, strlen(json), NULL, err);
    if (!m) {
        return NULL;
    }
    struct msm_route_config *rc = msm_route_config_new(m, NULL, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}
