#include "http/h2_options.h"

#include "config/pbutil.h"

#define MIB (1024u * 1024u)

int msm_h2_options_from_proto(const Envoy__Config__Core__V3__Http2ProtocolOptions *p,
                              struct msm_hcodec_opts *o, struct msm_err *err)
{
    if (!p) {
        return 0;
    }
    o->allow_connect = p->allow_connect; /* RFC 8441 extended CONNECT (servers) */
    o->max_concurrent_streams = msm_pb_u32(p->max_concurrent_streams, o->max_concurrent_streams);
    if (!o->max_concurrent_streams) {
        return msm_err_set(err, "http2_protocol_options.max_concurrent_streams: must be >= 1");
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
    o->max_outbound_frames = msm_pb_u32(p->max_outbound_frames, o->max_outbound_frames);
    if (!o->max_outbound_frames) {
        return msm_err_set(err, "http2_protocol_options.max_outbound_frames: must be >= 1");
    }
    o->max_outbound_control_frames =
        msm_pb_u32(p->max_outbound_control_frames, o->max_outbound_control_frames);
    if (!o->max_outbound_control_frames) {
        return msm_err_set(err, "http2_protocol_options.max_outbound_control_frames: must be >= 1");
    }
    o->max_consecutive_inbound_frames_with_empty_payload =
        msm_pb_u32(p->max_consecutive_inbound_frames_with_empty_payload,
                   o->max_consecutive_inbound_frames_with_empty_payload);
    o->max_inbound_priority_frames_per_stream = msm_pb_u32(
        p->max_inbound_priority_frames_per_stream, o->max_inbound_priority_frames_per_stream);
    o->max_inbound_window_update_frames_per_data_frame_sent =
        msm_pb_u32(p->max_inbound_window_update_frames_per_data_frame_sent,
                   o->max_inbound_window_update_frames_per_data_frame_sent);
    if (!o->max_inbound_window_update_frames_per_data_frame_sent) {
        return msm_err_set(err, "http2_protocol_options."
                                "max_inbound_window_update_frames_per_data_frame_sent: must be >= 1");
    }
    o->stream_error_on_invalid_messaging =
        p->override_stream_error_on_invalid_http_message
            ? p->override_stream_error_on_invalid_http_message->value
            : p->stream_error_on_invalid_http_messaging;
    return 0;
}
