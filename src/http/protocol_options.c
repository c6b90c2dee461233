#include "http/protocol_options.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>

#include "common/alloc.h"
#include "config/pbutil.h"

#define MIB (1024u * 1024u)

/* custom_settings_parameters as Envoy validates them, plus the value ranges nghttp2 checks
 * (one bad value would make it refuse the whole SETTINGS frame). */
static int custom_settings(const Envoy__Config__Core__V3__Http2ProtocolOptions *p,
                           struct msm_hcodec_opts *o, struct msm_err *err)
{
    char clash[160] = "";
    size_t cl = 0;
    for (size_t i = 0; i < p->n_custom_settings_parameters; i++) {
        const Envoy__Config__Core__V3__Http2ProtocolOptions__SettingsParameter *e =
            p->custom_settings_parameters[i];
        if (!e->identifier || !e->value) {
            return msm_err_set(err, "http2_protocol_options.custom_settings_parameters[%zu]: "
                                    "identifier and value are required", i);
        }
        uint32_t id = e->identifier->value, v = e->value->value;
        if (id < 1 || id > 65535) {
            return msm_err_set(err, "http2_protocol_options.custom_settings_parameters[%zu]."
                                    "identifier: must be in [1, 65535]", i);
        }
        const char *named = NULL;
        switch (id) {
        case NGHTTP2_SETTINGS_ENABLE_PUSH:
            if (v) {
                return msm_err_set(err, "server push is not supported by Envoy and can not be "
                                        "enabled via a SETTINGS parameter.");
            }
            break;
        case NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL:
            return msm_err_set(err, "the \"allow_connect\" SETTINGS parameter must only be "
                                    "configured through the named field");
        case NGHTTP2_SETTINGS_HEADER_TABLE_SIZE:
            named = p->hpack_table_size ? "hpack_table_size" : NULL;
            break;
        case NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS:
            named = p->max_concurrent_streams ? "max_concurrent_streams" : NULL;
            break;
        case NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE:
            named = p->initial_stream_window_size ? "initial_stream_window_size" : NULL;
            if (v > 2147483647) {
                return msm_err_set(err, "http2_protocol_options.custom_settings_parameters[%zu]: "
                                        "window size over 2^31-1", i);
            }
            break;
        case NGHTTP2_SETTINGS_MAX_FRAME_SIZE:
            if (v < 16384 || v > 16777215) {
                return msm_err_set(err, "http2_protocol_options.custom_settings_parameters[%zu]: "
                                        "max frame size must be in [16384, 16777215]", i);
            }
            break;
        case NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES:
            if (v > 1) {
                return msm_err_set(err, "http2_protocol_options.custom_settings_parameters[%zu]: "
                                        "SETTINGS_NO_RFC7540_PRIORITIES must be 0 or 1", i);
            }
            break;
        default:
            break;
        }
        if (named && cl < sizeof(clash) - 32) {
            cl += (size_t)snprintf(clash + cl, sizeof(clash) - cl, "%s%s", cl ? "," : "", named);
        }
        bool dup = false;
        for (uint8_t k = 0; k < o->n_custom_settings; k++) {
            if (o->custom_settings[k].id == id) {
                if (o->custom_settings[k].value != v) {
                    return msm_err_set(err, "inconsistent HTTP/2 custom SETTINGS parameter(s) "
                                            "detected; identifiers = {0x%02x}", id);
                }
                dup = true;
            }
        }
        if (dup) {
            continue;
        }
        if (o->n_custom_settings == MSM_H2_MAX_CUSTOM_SETTINGS) {
            return msm_err_set(err, "http2_protocol_options.custom_settings_parameters: more than "
                                    "%d distinct identifiers", MSM_H2_MAX_CUSTOM_SETTINGS);
        }
        o->custom_settings[o->n_custom_settings++] = (struct msm_h2_setting){(uint16_t)id, v};
    }
    if (cl) {
        return msm_err_set(err, "the {%s} HTTP/2 SETTINGS parameter(s) can not be configured "
                                "through both named and custom parameters", clash);
    }
    return 0;
}

int msm_h1_options_from_proto(const Envoy__Config__Core__V3__Http1ProtocolOptions *p,
                              struct msm_hcodec_opts *o, bool server, struct msm_err *err)
{
    if (!p) {
        return 0;
    }
    if (p->allow_chunked_length) {
        return msm_err_set(err, "http_protocol_options.allow_chunked_length: not supported "
                                "(messages with both Content-Length and chunked encoding are "
                                "rejected)");
    }
    if (p->header_key_format) {
        return msm_err_set(err, "http_protocol_options.header_key_format: not supported");
    }
    if (p->allow_custom_methods) {
        return msm_err_set(err, "http_protocol_options.allow_custom_methods: not supported "
                                "(http-parser takes the registered methods only)");
    }
    if (!server && p->send_fully_qualified_url) {
        return msm_err_set(err, "http_protocol_options.send_fully_qualified_url: not supported");
    }
    /* use_balsa_parser picks Envoy's parser; allow_absolute_url keeps its default (true). */
    o->enable_trailers = p->enable_trailers;
    if (server) {
        o->accept_http_10 = p->accept_http_10;
        if (p->default_host_for_http_10 && p->default_host_for_http_10[0]) {
            o->default_host_for_http_10 = msm_xstrdup(p->default_host_for_http_10);
        }
    }
    return 0;
}

static int keepalive(const Envoy__Config__Core__V3__KeepaliveSettings *k,
                     struct msm_hcodec_opts *o, struct msm_err *err)
{
    o->keepalive_interval_ms = o->keepalive_timeout_ms = o->keepalive_idle_ms = 0;
    if (!k) {
        return 0;
    }
    int64_t iv = msm_pb_duration_ms(k->interval, 0);
    int64_t to = msm_pb_duration_ms(k->timeout, -1);
    int64_t idle = msm_pb_duration_ms(k->connection_idle_interval, 0);
    if (to < 1 || to > UINT32_MAX) {
        return msm_err_set(err, "http2_protocol_options.connection_keepalive.timeout: required, "
                                "at least 1ms");
    }
    if (iv < 0 || iv > UINT32_MAX || idle < 0 || idle > UINT32_MAX) {
        return msm_err_set(err, "http2_protocol_options.connection_keepalive: interval and "
                                "connection_idle_interval must be positive durations");
    }
    double jitter = k->interval_jitter ? k->interval_jitter->value : 15.0;
    if (jitter < 0 || jitter > 100) {
        return msm_err_set(err, "http2_protocol_options.connection_keepalive.interval_jitter: "
                                "must be in [0, 100]");
    }
    o->keepalive_interval_ms = (uint32_t)iv;
    o->keepalive_timeout_ms = (uint32_t)to;
    o->keepalive_idle_ms = (uint32_t)idle;
    o->keepalive_jitter_pct = (uint8_t)jitter;
    return 0;
}

/* <*out> from <v> when set; 0 is an error naming <field>. */
static int at_least_one(const Google__Protobuf__UInt32Value *v, uint32_t *out, const char *field,
                        struct msm_err *err)
{
    *out = msm_pb_u32(v, *out);
    return *out ? 0 : msm_err_set(err, "http2_protocol_options.%s: must be >= 1", field);
}

int msm_h2_options_from_proto(const Envoy__Config__Core__V3__Http2ProtocolOptions *p,
                              struct msm_hcodec_opts *o, struct msm_err *err)
{
    if (!p) {
        return 0;
    }
    o->allow_connect = p->allow_connect; /* RFC 8441 extended CONNECT (servers) */
    if (p->allow_metadata) {
        return msm_err_set(err, "http2_protocol_options.allow_metadata: METADATA frames are not "
                                "supported");
    }
    /* use_oghttp2_codec picks Envoy's implementation of the same protocol: nothing to do. */
    o->hpack_table_size = msm_pb_u32(p->hpack_table_size, o->hpack_table_size);
    o->n_custom_settings = 0;
    if (custom_settings(p, o, err) < 0) {
        return MSM_EINVAL;
    }
    if (at_least_one(p->max_concurrent_streams, &o->max_concurrent_streams,
                     "max_concurrent_streams", err) < 0 ||
        at_least_one(p->max_outbound_frames, &o->max_outbound_frames, "max_outbound_frames",
                     err) < 0 ||
        at_least_one(p->max_outbound_control_frames, &o->max_outbound_control_frames,
                     "max_outbound_control_frames", err) < 0 ||
        at_least_one(p->max_inbound_window_update_frames_per_data_frame_sent,
                     &o->max_inbound_window_update_frames_per_data_frame_sent,
                     "max_inbound_window_update_frames_per_data_frame_sent", err) < 0) {
        return MSM_EINVAL;
    }
    uint32_t sw = msm_pb_u32(p->initial_stream_window_size, 0);
    uint32_t cw = msm_pb_u32(p->initial_connection_window_size, 0);
    if (sw && (sw < 65535 || sw > 2147483647)) {
        return msm_err_set(err, "http2_protocol_options.initial_stream_window_size: must be in "
                                "[65535, 2147483647]");
    }
    if (cw && (cw < 65535 || cw > 2147483647)) {
        return msm_err_set(err, "http2_protocol_options.initial_connection_window_size: must be "
                                "in [65535, 2147483647]");
    }
    /* Envoy's 256 MiB defaults are capped: buffers, not windows, bound memory here. */
    if (sw) {
        o->initial_stream_window_size = sw > 16 * MIB ? 16 * MIB : sw;
    }
    if (cw) {
        o->initial_connection_window_size = cw > 64 * MIB ? 64 * MIB : cw;
    }
    o->max_consecutive_inbound_frames_with_empty_payload =
        msm_pb_u32(p->max_consecutive_inbound_frames_with_empty_payload,
                   o->max_consecutive_inbound_frames_with_empty_payload);
    o->max_inbound_priority_frames_per_stream = msm_pb_u32(
        p->max_inbound_priority_frames_per_stream, o->max_inbound_priority_frames_per_stream);
    if (keepalive(p->connection_keepalive, o, err) < 0) {
        return MSM_EINVAL;
    }
    o->stream_error_on_invalid_messaging =
        p->override_stream_error_on_invalid_http_message
            ? p->override_stream_error_on_invalid_http_message->value
            : p->stream_error_on_invalid_http_messaging;
    return 0;
}
