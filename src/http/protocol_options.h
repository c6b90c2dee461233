#pragma once
/* Http1ProtocolOptions and Http2ProtocolOptions (envoy.config.core.v3) onto codec options,
 * shared by the connection manager (downstream) and clusters (upstream): Envoy's validation,
 * our caps, and field-named errors for what is not implemented. */
#include <stdbool.h>

#include "common/err.h"
#include "envoy/config/core/v3/protocol.pb-c.h"
#include "http/codec.h"

/* Apply <p> (NULL: nothing) to <o>. Returns 0, or MSM_EINVAL with <err> naming the field. The
 * stream error setting is the HTTP/2 override, else the deprecated field; the HCM applies its
 * own field between the two. */
/* Apply <p> (NULL: nothing) to <o>; <server>: the HCM's (HTTP/1.0 options apply), else a
 * cluster's. default_host_for_http_10 is copied (the caller frees it). */
int msm_h1_options_from_proto(const Envoy__Config__Core__V3__Http1ProtocolOptions *p,
                              struct msm_hcodec_opts *o, bool server, struct msm_err *err);
int msm_h2_options_from_proto(const Envoy__Config__Core__V3__Http2ProtocolOptions *p,
                              struct msm_hcodec_opts *o, struct msm_err *err);
