#pragma once
/* RTSP URLs and SDP (RFC 4566/8866) as an RTSP proxy needs them.
 *
 * The proxy keeps paths and rewrites authorities: a URL the server hands out
 * (rtsp://camera:554/live/trackID=1) reaches the client as the same path under the authority the
 * client used (rtsp://proxy:8554/live/trackID=1), and a URL the client sends is mapped back by
 * the reverse swap. Credentials in a server URL never reach the client.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rtp/rtp.h"

#define MSM_SDP_MAX_MEDIA 8
#define MSM_RTSP_URL_MAX 1024

struct msm_rtsp_url {
    const char *scheme; /* "rtsp", "rtsps", "rtspu" */
    size_t scheme_len;
    const char *host; /* without brackets for IPv6 */
    size_t host_len;
    uint32_t port;    /* 0 when absent */
    const char *path; /* from the first '/' after the authority up to '?' (may be empty) */
    size_t path_len;
    const char *query; /* after '?', without it (may be empty) */
    size_t query_len;
    const char *rest; /* path + query: everything after the authority */
    size_t rest_len;
};

/* Parse an absolute rtsp[s|u]:// URL of <n> bytes. 0, or -1 when malformed (bad scheme, empty or
 * invalid host, bad port, control characters or spaces). */
int msm_rtsp_url_parse(const char *s, size_t n, struct msm_rtsp_url *u);
/* True when <s> starts with a scheme ("xxx://"). */
bool msm_rtsp_url_is_absolute(const char *s, size_t n);
/* Write "<scheme>://<authority><rest of s>" into <out>: <s>'s userinfo, host and port are
 * replaced by <authority>. Returns the length, or -1 when <s> is not an absolute URL or <out> is
 * too small. */
int msm_rtsp_url_rebase(const char *s, size_t n, const char *authority, char *out, size_t cap);
/* Resolve an SDP control attribute against <base> (RFC 2326 C.1.1 as players do it: "*" is the
 * base, an absolute URL is itself, anything else is appended with one '/'). -1 on overflow. */
int msm_rtsp_url_resolve(const char *base, const char *control, char *out, size_t cap);

struct msm_sdp_media {
    char type[16];        /* "video", "audio", "application" */
    int pt;               /* first payload type of the m= line, -1 if none */
    uint32_t clock_rate;  /* from a=rtpmap of <pt>, or the static payload table; 0 unknown */
    char control[512];    /* a=control value as written ("" when absent) */
    struct msm_rtp_pt_set rtx; /* payload types of a=rtpmap:<pt> rtx/<clock> (RFC 4588) */
    bool nack;            /* a=rtcp-fb:<pt or *> nack (generic NACK, RFC 4585 §4.2) */
};

/* Media sections of <sdp> (up to <max>), and the session-level a=control into
 * <session_control> (may be NULL). Returns the number of media sections, or -1 when the text is
 * not SDP at all (no v= line). */
int msm_sdp_parse(const char *sdp, size_t n, struct msm_sdp_media *m, int max,
                  char *session_control, size_t sc_cap);

/* Rewrite <sdp> for a client of the proxy: every absolute a=control URL gets <authority>
 * (msm_rtsp_url_rebase), unicast c= (and a=rtcp) addresses become <conn_addr> with its address
 * type, multicast c= become <conn_addr> too (the proxy delivers unicast), and o= keeps its
 * values. Lines are normalized to CRLF. Returns a new NUL-terminated string (msm_xmalloc; the
 * caller frees) and its length in *out_len. */
char *msm_sdp_rewrite(const char *sdp, size_t n, const char *authority, const char *conn_addr,
                      size_t *out_len);
