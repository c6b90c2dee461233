#pragma once
/* RTSP 1.0 (RFC 2326) and 2.0 (RFC 7826) messages: an incremental parser over a flat byte
 * range and small helpers to read headers and build messages.
 *
 * The parser is lenient where real devices are sloppy (bare LF line ends, folded header lines,
 * spaces around ':', any header case) and strict where safety needs it: bounded head size,
 * header count and body size, no NUL or control bytes in the head, a Content-Length that is a
 * plain decimal number, a version it understands. It never allocates: a parsed message points
 * into the caller's bytes, which must stay valid while the message is used.
 *
 * The stream of an RTSP connection interleaves messages with binary frames ('$', channel,
 * 16-bit big-endian length, payload; RFC 2326 §10.12): msm_rtsp_next tells which comes next.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSM_RTSP_MAX_HEADERS 64

enum msm_rtsp_method {
    MSM_RTSP_M_UNKNOWN = 0,
    MSM_RTSP_M_OPTIONS,
    MSM_RTSP_M_DESCRIBE,
    MSM_RTSP_M_ANNOUNCE,
    MSM_RTSP_M_SETUP,
    MSM_RTSP_M_PLAY,
    MSM_RTSP_M_PAUSE,
    MSM_RTSP_M_RECORD,
    MSM_RTSP_M_REDIRECT,
    MSM_RTSP_M_GET_PARAMETER,
    MSM_RTSP_M_SET_PARAMETER,
    MSM_RTSP_M_TEARDOWN,
    MSM_RTSP_M_PLAY_NOTIFY,
    MSM_RTSP_M_COUNT
};

/* A byte range inside the parsed input (not NUL-terminated). */
struct msm_rtsp_str {
    const char *p;
    size_t n;
};

struct msm_rtsp_hdr {
    struct msm_rtsp_str name, value; /* value trimmed; folded lines keep their inner CRLF */
};

struct msm_rtsp_limits {
    size_t max_head;  /* start line + headers, bytes */
    int max_headers;  /* <= MSM_RTSP_MAX_HEADERS */
    size_t max_body;  /* Content-Length limit */
};

struct msm_rtsp_msg {
    bool is_response;
    int ver_major, ver_minor;
    /* request */
    enum msm_rtsp_method method;
    struct msm_rtsp_str method_str, uri;
    /* response */
    int status;
    struct msm_rtsp_str reason;
    struct msm_rtsp_hdr hdr[MSM_RTSP_MAX_HEADERS];
    int n_hdr;
    struct msm_rtsp_str body;
    size_t total; /* bytes of head + body */
};

/* What comes next in an RTSP stream. */
enum msm_rtsp_next {
    MSM_RTSP_NEED_MORE = 0,
    MSM_RTSP_MESSAGE = 1,
    MSM_RTSP_FRAME = 2,
};

/* Parse errors (negative), mapped to the status a server answers. */
enum msm_rtsp_perr {
    MSM_RTSP_E_BAD = -1,         /* 400 Bad Request */
    MSM_RTSP_E_HEAD_TOO_BIG = -2, /* 431 / 400: head over max_head, or too many headers */
    MSM_RTSP_E_BODY_TOO_BIG = -3, /* 413 Request Entity Too Large */
    MSM_RTSP_E_VERSION = -4,     /* 505 RTSP Version Not Supported */
};

/* Look at the start of <data>: a complete interleaved frame (MSM_RTSP_FRAME, with *channel,
 * *payload and *total set), a complete message (MSM_RTSP_MESSAGE, parsed into <msg>), not enough
 * bytes yet (MSM_RTSP_NEED_MORE), or a negative enum msm_rtsp_perr. Leading empty lines before a
 * message are skipped (counted in msg->total). */
int msm_rtsp_next(const char *data, size_t len, const struct msm_rtsp_limits *lim,
                  struct msm_rtsp_msg *msg, uint8_t *channel, const uint8_t **payload,
                  size_t *plen, size_t *total);

/* Parse one message at the start of <data>: >0 bytes consumed, 0 need more, <0 error. */
int msm_rtsp_parse(const char *data, size_t len, const struct msm_rtsp_limits *lim,
                   struct msm_rtsp_msg *msg, size_t *total);

/* First header named <name> (case-insensitive), or NULL. */
const struct msm_rtsp_hdr *msm_rtsp_header(const struct msm_rtsp_msg *m, const char *name);
/* CSeq as a number; false when absent or malformed. */
bool msm_rtsp_cseq(const struct msm_rtsp_msg *m, uint32_t *out);
/* Session id (without ";timeout=..."), or an empty range. */
struct msm_rtsp_str msm_rtsp_session_id(const struct msm_rtsp_msg *m);

enum msm_rtsp_method msm_rtsp_method_parse(const char *p, size_t n);
const char *msm_rtsp_method_name(enum msm_rtsp_method m);
const char *msm_rtsp_reason(int status);

/* Small string helpers shared by the RTSP code. */
bool msm_rtsp_str_eq(struct msm_rtsp_str s, const char *lit);     /* exact */
bool msm_rtsp_str_ieq(struct msm_rtsp_str s, const char *lit);    /* case-insensitive */
bool msm_rtsp_str_iprefix(struct msm_rtsp_str s, const char *lit); /* case-insensitive prefix */
struct msm_rtsp_str msm_rtsp_trim(struct msm_rtsp_str s);
