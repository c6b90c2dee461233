#pragma once
/* Internals shared by rtsp_client.c (downstream) and rtsp_source.c (upstream and media relay).
 *
 * Object model (all on one worker loop):
 *   struct rtsp_client   one downstream connection and its RTSP session (filter instance). It
 *                        is bound to at most one source and holds one subtrack per track it set
 *                        up.
 *   struct rtsp_source   one upstream RTSP session towards the server for one (cluster, URL):
 *                        its control connection, the cached DESCRIBE, the tracks set up
 *                        upstream, and the relay. With fan-out it is shared by every client of
 *                        that URL on this worker (found in the worker's registry); without, each
 *                        client gets a private one. It lives while clients are bound, then for
 *                        the linger time.
 *   struct rtsp_track    one media of a source: upstream reception (UDP pair or interleaved
 *                        channels), the shared downstream UDP pair every UDP subscriber is served
 *                        from, receiver statistics, and the list of playing subtracks.
 *   struct rtsp_subtrack one track of one client: where its media goes (UDP addresses or
 *                        interleaved channels) and whether it is playing.
 *
 * Requests are served in order, one at a time: a request that needs the upstream (DESCRIBE of a
 * new URL, SETUP of a track not yet set up, the first PLAY) stays at the head of the client's
 * input while the client waits on the source; every progress of the source wakes its waiters,
 * which run the request again from the start. Errors of an operation a client started are
 * handed to it as <fail_status> and answered on that rerun. So every answer is produced in one
 * place (rtsp_client.c) and nothing is half-applied across a wait.
 */
#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "filters/network/rtsp_proxy/rtsp_proxy.h"
#include "filters/network/rtsp_proxy/rtsp_sdp.h"
#include "filters/network/rtsp_proxy/rtsp_transport.h"
#include "net/conn.h"
#include "upstream/cluster.h"

#define RTSP_MAX_TRACKS MSM_SDP_MAX_MEDIA
#define RTSP_SESSION_ID_LEN 16

struct rtsp_client;
struct rtsp_source;
struct rtsp_track;

struct rtsp_subtrack {
    struct rtsp_client *c;
    struct rtsp_track *t; /* NULL until set up */
    bool tcp;
    uint8_t ch[2]; /* interleaved channels the client chose */
    struct sockaddr_storage rtp_to, rtcp_to;
    bool rtp_latched, rtcp_latched; /* confirmed (or learned) from a packet of the client */
    bool playing;
    bool linked; /* in t->subs */
    struct rtsp_subtrack *next, *prev;
    uint64_t drops;
};

enum rtsp_track_state {
    RTSP_TRACK_NONE = 0,
    RTSP_TRACK_SETTING_UP = 1,
    RTSP_TRACK_READY = 2,
};

struct rtsp_track {
    struct rtsp_source *src;
    int idx;
    char url[MSM_RTSP_URL_MAX]; /* upstream control URL (absolute) */
    char media[16];
    uint32_t clock_rate;
    enum rtsp_track_state state;
    bool up_tcp;
    bool tried_other; /* AUTO: the other lower transport was tried after a 461 */
    uint8_t up_ch[2];
    struct msm_udp_sock up_rtp, up_rtcp;
    uint16_t up_port;
    struct sockaddr_storage up_rtp_peer, up_rtcp_peer;
    bool up_rtp_latched, up_rtcp_latched;
    uint16_t server_port[2];
    bool has_server_port;
    struct msm_udp_sock dn_rtp, dn_rtcp;
    uint16_t dn_port;
    /* media state, for RTP-Info of late joiners */
    bool have_ssrc;
    uint32_t ssrc;
    bool have_last;
    uint16_t last_seq;
    uint32_t last_ts;
    bool have_info;
    uint16_t info_seq;
    uint32_t info_ts;
    struct msm_rtp_rx rx;
    int64_t lost_counted; /* part of rx loss already added to upstream_rtp_lost */
    struct rtsp_subtrack *subs; /* playing subtracks */
    int n_subs;
};

enum rtsp_source_state {
    RTSP_SRC_CONNECTING = 0,
    RTSP_SRC_DESCRIBING = 1,
    RTSP_SRC_READY = 2,
    RTSP_SRC_FAILED = 3,
};

enum rtsp_play_state {
    RTSP_PLAY_IDLE = 0,
    RTSP_PLAY_PENDING = 1,
    RTSP_PLAY_ON = 2,
};

struct rtsp_pending {
    struct rtsp_pending *next;
    uint32_t cseq;
    enum msm_rtsp_method method;
    int track;
    bool tcp;
    struct rtsp_client *client; /* who started it (answers its errors), NULL if gone */
    double sent;
};

struct rtsp_wstate;

struct rtsp_source {
    struct rtsp_source *next, *prev; /* worker registry (fan-out sources only) */
    struct rtsp_wstate *ws;
    bool in_registry;
    bool dead; /* destroyed; memory freed after the current callback stack */
    struct msm_rtsp_config *cfg; /* reference */
    struct ev_loop *loop;
    char *key; /* "<cluster>\n<path?query>" */
    char *cluster_name;
    struct msm_cluster *cluster; /* reference */
    struct msm_host *host;       /* reference */
    bool cx_reserved;
    struct msm_conn *up;
    bool connected;
    char up_authority[96]; /* host:port of the chosen upstream */
    char url[MSM_RTSP_URL_MAX]; /* aggregate URL towards the server */
    char base[MSM_RTSP_URL_MAX]; /* Content-Base (or the request URL) of the DESCRIBE */
    char *fwd_headers;           /* end-to-end headers of the DESCRIBE that created it */
    enum rtsp_source_state state;
    int fail_status;
    char *fail_headers; /* relayed with the failure (WWW-Authenticate...) */
    uint32_t cseq;
    struct rtsp_pending *pend, *pend_tail;
    char *sdp; /* as the server sent it */
    size_t sdp_len;
    char *describe_headers; /* extra headers of the 200 (Content-Type, Cache-Control...) */
    bool auth_gated; /* the server wanted credentials: each client's DESCRIBE is verified */
    struct rtsp_track tracks[RTSP_MAX_TRACKS];
    int n_tracks;
    char session[160];
    bool has_session;
    uint32_t up_timeout_s;
    enum rtsp_play_state play;
    char *range; /* Range of the upstream PLAY response */
    int refs;    /* bound clients */
    struct rtsp_client *clients; /* bound clients (bnext/bprev) */
    char *auth;       /* Authorization of the DESCRIBE that created it */
    char *user_agent;
    struct rtsp_client **waiters;
    int n_waiters, cap_waiters;
    ev_timer linger, keepalive, rq_timer, rr_timer;
    uint32_t own_ssrc;
    char cname[48];
    double created;
    struct msm_rtsp_stream_stats *sstats; /* NULL beyond the per-config bound */
};

struct rtsp_client {
    struct msm_filter_handle *h;
    struct msm_rtsp_config *cfg;
    struct ev_loop *loop;
    bool closed;  /* the connection is gone */
    bool waiting; /* the request at the head of the input waits on the source */
    bool head_waited; /* ...and has been counted already (it is rerun, not new) */
    struct rtsp_source *src;
    struct rtsp_client *bnext, *bprev; /* src->clients */
    bool lost; /* the source failed: close at the next wake */
    char *cluster; /* chosen once per session */
    char authority[96]; /* what the client used to reach us (host[:port]) */
    char local_ip[64];  /* our address on the client's connection */
    struct sockaddr_storage peer;
    int fail_status; /* handed over by the source for the waiting request */
    char *fail_headers;
    bool verified, verify_pending;
    char session_id[RTSP_SESSION_ID_LEN + 1];
    bool has_session;
    bool playing;
    bool read_paused;
    struct rtsp_subtrack st[RTSP_MAX_TRACKS];
    ev_timer session_timer;
    ev_timer kick;
    double first_rq;
    bool latency_recorded;
};

/* ---- rtsp_source.c ------------------------------------------------------------------------- */

/* Find (fan-out) or create the source of (<cluster>, <path_query>) and bind <c> to it. The
 * upstream DESCRIBE carries <req>'s end-to-end headers. Never NULL: a source that cannot reach
 * the cluster is returned FAILED with fail_status set. */
struct rtsp_source *rtsp_source_bind(struct rtsp_client *c, const char *cluster,
                                     const char *path_query, const struct msm_rtsp_msg *req);
void rtsp_source_unbind(struct rtsp_source *s, struct rtsp_client *c);
/* <c> is woken (rtsp_client_wake) at the next progress of <s>. */
void rtsp_source_wait(struct rtsp_source *s, struct rtsp_client *c);
void rtsp_source_unwait(struct rtsp_source *s, struct rtsp_client *c);
/* Track whose control URL has the path of <url> (absolute or relative client URL), or -1. */
int rtsp_source_find_track(struct rtsp_source *s, const char *url, size_t n);
/* Start the upstream SETUP of track <idx> (no-op while one is in flight). 0, or an RTSP status
 * to answer at once (453 when no port pair is free). */
int rtsp_source_setup_track(struct rtsp_source *s, int idx, bool client_tcp,
                            struct rtsp_client *initiator, const struct msm_rtsp_msg *req);
/* Start the upstream PLAY (no-op while in flight or playing). */
void rtsp_source_play(struct rtsp_source *s, struct rtsp_client *initiator,
                      const struct msm_rtsp_msg *req);
/* Forward <c>'s DESCRIBE to the server of an auth-gated source. */
void rtsp_source_verify(struct rtsp_source *s, struct rtsp_client *c,
                        const struct msm_rtsp_msg *req);
/* ---- rtsp_relay.c -------------------------------------------------------------------------- */

/* Open the shared downstream UDP pair of <t> if needed: 0 or 453. */
int rtsp_track_open_downstream(struct rtsp_track *t, int family);
void rtsp_track_link(struct rtsp_track *t, struct rtsp_subtrack *st);
void rtsp_track_unlink(struct rtsp_track *t, struct rtsp_subtrack *st);
/* Interleaved frame from a client on channel <ch> (RTCP for its odd channel). */
void rtsp_source_client_frame(struct rtsp_source *s, struct rtsp_client *c, uint8_t ch,
                              const uint8_t *p, size_t n);
/* Media from the server for <t> (from its peer): statistics, then to every playing subscriber. */
void rtsp_track_media(struct rtsp_track *t, struct msm_udp_pkt *pk, int n, bool rtcp);
/* Receivers of the upstream UDP pair (only the latched server address gets through). */
void rtsp_relay_up_rtp(struct msm_udp_sock *u, struct msm_udp_pkt *pk, int n);
void rtsp_relay_up_rtcp(struct msm_udp_sock *u, struct msm_udp_pkt *pk, int n);
/* Our receiver report for <t> to the server, and the upstream loss/jitter stats. */
void rtsp_track_send_rr(struct rtsp_source *s, struct rtsp_track *t);

/* ---- rtsp_client.c ------------------------------------------------------------------------- */

/* Run the waiting request again soon (next loop iteration). */
void rtsp_client_wake(struct rtsp_client *c);
/* The bound source failed for good: close the client's connection. */
void rtsp_client_source_lost(struct rtsp_client *c);
/* A packet (RTCP, or a NAT hole punch) came from the client: its session is alive. */
void rtsp_client_activity(struct rtsp_client *c);
/* Write interleaved frames to the client; false when its buffer is over the limit (dropped). */
bool rtsp_client_write_frames(struct rtsp_client *c, struct msm_buf *frames);
