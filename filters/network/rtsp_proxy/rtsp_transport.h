#pragma once
/* The RTSP Transport header (RFC 2326 §12.39, RFC 7826 §18.54): parser and serializer.
 *
 * Lenient with what cameras and players really send: "RTP/AVP/UDP", a single client_port
 * (meaning p-p+1), hex ssrc shorter than 8 digits, spaces around ';' and '=', parameter names in
 * any case, quoted or unquoted mode, RTSP 2.0's dest_addr/src_addr ("host:port" forms).
 * Strict about safety: every number in range, bounded string lengths, at most
 * MSM_RTSP_MAX_TRANSPORTS alternatives; anything else is a parse error (the caller answers 461 or
 * 400). Unknown parameters are ignored: the proxy regenerates the header rather than forwarding
 * it, so nothing it does not understand crosses it.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSM_RTSP_MAX_TRANSPORTS 8
#define MSM_RTSP_ADDR_MAX 64

enum msm_rtsp_profile {
    MSM_RTSP_AVP = 0,
    MSM_RTSP_SAVP = 1,
    MSM_RTSP_AVPF = 2,
    MSM_RTSP_SAVPF = 3,
};

enum msm_rtsp_lower {
    MSM_RTSP_LOWER_UDP = 0,
    MSM_RTSP_LOWER_TCP = 1,
};

struct msm_rtsp_transport {
    enum msm_rtsp_profile profile;
    enum msm_rtsp_lower lower;
    bool multicast;
    bool has_client_port, has_server_port, has_interleaved, has_port, has_ttl, has_ssrc;
    uint16_t client_port[2], server_port[2], port[2];
    uint8_t interleaved[2];
    uint8_t ttl;
    uint32_t ssrc;
    char destination[MSM_RTSP_ADDR_MAX]; /* host only (2.0 dest_addr port goes to client_port) */
    char source[MSM_RTSP_ADDR_MAX];
    bool rtcp_mux;    /* RTCP-mux: RTCP on the RTP port (RFC 5761, RFC 7826 §18.54) */
    bool mode_record; /* mode=RECORD (default PLAY) */
    bool has_mode;
    bool append;
};

/* Parse the comma-separated alternatives in <v> (<n> bytes) into <out> (up to <max>). Returns
 * the number parsed (>= 1) or -1 when the value is malformed. Alternatives with an unknown
 * transport protocol (not RTP/...) are skipped; if none is left, returns 0. */
int msm_rtsp_transport_parse(const char *v, size_t n, struct msm_rtsp_transport *out, int max);

/* Serialize one transport spec into <buf>; RTSP 2.0 names for addresses when <v2>. Returns the
 * length, or -1 when <buf> is too small. */
int msm_rtsp_transport_format(const struct msm_rtsp_transport *t, bool v2, char *buf, size_t n);
