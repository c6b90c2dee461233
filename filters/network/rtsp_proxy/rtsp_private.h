#pragma once
/* Internals shared by rtsp_client.c (downstream), rtsp_source.c (upstream), rtsp_relay.c (media),
 * rtsp_xworker.c (fan-out across workers) and rtsp_upeer.c (the server side's identity for the
 * clients' stream infos).
 *
 * Object model:
 *   struct rtsp_client   one downstream connection and its RTSP session (filter instance), on
 *                        the worker that accepted it. It is bound to at most one source of its
 *                        worker and holds one subtrack per track it set up.
 *   struct rtsp_source   what clients bind to, one per (cluster, URL) per worker. Two kinds:
 *                        - a *hub* owns the upstream RTSP session: control connection, cached
 *                          DESCRIBE, tracks set up upstream, the relay (UDP sockets, fan-out).
 *                          With fan-out there is at most one hub per (cluster, URL) in the whole
 *                          process (the process-wide registry, rtsp_xworker.c): the worker whose
 *                          client asked first owns it. Without fan-out each client gets a
 *                          private hub;
 *                        - a *mirror* stands for a hub of another worker: it holds a copy of the
 *                          hub's published state (SDP, tracks, play state), forwards what its
 *                          clients ask of the upstream to the hub, and serves its interleaved
 *                          subscribers from the handoff ring. Its UDP subscribers are served by
 *                          the hub directly (records at the hub, the hub's sockets).
 *                        A source lives while clients (or, for a hub, mirrors) are bound; a hub
 *                        then lingers, a mirror goes at once.
 *   struct rtsp_track    one media of a source. Hub: upstream reception (UDP pair or interleaved
 *                        channels), the shared downstream UDP pair every UDP subscriber of the
 *                        process is served from, receiver statistics, the playing subtracks.
 *                        Mirror: the published state of the hub's track and its local playing
 *                        subtracks (interleaved ones get media from the ring).
 *   struct rtsp_subtrack one track of one subscriber: where its media goes (UDP addresses or
 *                        interleaved channels) and whether it is playing. Embedded in a client,
 *                        or (hub side, <peer> set) a record of a client of another worker.
 *
 * Requests are served in order, one at a time: a request that needs the upstream (DESCRIBE of a
 * new URL, SETUP of a track not yet set up, the first PLAY), or an answer from the hub of a
 * mirror, stays at the head of the client's input while the client waits on its source; every
 * progress of the source wakes its waiters, which run the request again from the start. Errors
 * of an operation a client started are handed to it as <fail_status> and answered on that
 * rerun. So every answer is produced in one place (rtsp_client.c) and nothing is half-applied
 * across a wait.
 */
#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "accesslog/stream_info.h"
#include "filters/network/rtsp_proxy/rtsp_proxy.h"
#include "filters/network/rtsp_proxy/rtsp_sdp.h"
#include "filters/network/rtsp_proxy/rtsp_transport.h"
#include "net/conn.h"
#include "stats/istio_stats.h"
#include "upstream/cluster.h"

#define RTSP_MAX_TRACKS MSM_SDP_MAX_MEDIA
#define RTSP_SESSION_ID_LEN 16

struct rtsp_client;
struct rtsp_source;
struct rtsp_track;
struct rtsp_peer;   /* hub side: an attached mirror of another worker (rtsp_xworker.c) */
struct rtsp_ring;   /* handoff of interleaved media from one worker to another */
struct rtsp_smetrics; /* per-session metrics (rtsp_metrics.c) */
struct rtsp_stream; /* an entry of the process-wide fan-out registry */
struct json_t;

/* What the upstream leg of a hub learnt about the server side once the cluster's upstream
 * filters are past the peer exchange (rtsp_upeer.c): the peer workload istio.metadata_exchange
 * read (<has_peer> false: decidedly none), the first URI SANs of the server's certificate and
 * of ours, the host. It is what every client of the session reports as its upstream (Envoy's
 * tcp_proxy gets it for free: its upstream filters write into the client's own stream info).
 * Immutable once made and owned by its references: the hub, each mirror, each client whose
 * stream info points into it, the messages carrying it to mirrors. Any thread may take or drop
 * a reference (atomic count); the last one frees it. */
struct rtsp_upeer {
    atomic_int refs;
    bool has_peer;
    struct msm_istio_peer peer; /* strings in <strs>, NULL for absent ones */
    char *strs;
    struct json_t *metadata, *state; /* deep copies (NULL: none), never modified */
    char *peer_san, *local_san;      /* NULL: none */
    struct msm_host *host;           /* reference, NULL: unknown */
};

struct rtsp_subtrack {
    struct rtsp_client *c; /* NULL for a record of a client of another worker */
    struct rtsp_track *t;  /* NULL until set up */
    bool tcp;
    bool rtcp_mux; /* RTCP on the RTP port (RFC 5761), as the client offered */
    uint8_t ch[2]; /* interleaved channels the client chose */
    struct sockaddr_storage rtp_to, rtcp_to;
    bool rtp_latched, rtcp_latched; /* confirmed (or learned) from a packet of the client */
    bool playing;
    bool linked; /* in t->subs */
    struct rtsp_subtrack *next, *prev;
    uint64_t drops;
    /* interleaved late joiner on a mirror: skip ring packets older than RTP-Info's seq */
    bool await_start;
    uint16_t start_seq;
    /* hub-side record of a client of another worker */
    struct rtsp_peer *peer;
    uint64_t client_id;
    struct sockaddr_storage peer_ip; /* the client's address (NAT learning) */
    double act_posted;               /* when its activity was last forwarded */
    struct rtsp_subtrack *rnext;     /* peer->subs */
    /* The client session's metrics: borrowed from the client (a local subtrack, set at SETUP)
     * or a reference (a hub-side record; NULL until the client's session exists). */
    struct rtsp_smetrics *ms;
};

/* A UDP destination, compact (the sendmmsg loop reads thousands of them per batch). */
struct rtsp_dst {
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } a;
    socklen_t len;
    struct rtsp_smetrics *ms; /* the subscriber's session metrics, NULL: none kept */
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
    /* Retransmissions: the payload types of its RTX stream (RFC 4588, from the SDP; such
     * packets are counted and relayed, but kept out of <rx> and RTP-Info), and whether the
     * server takes generic NACKs (SDP rtcp-fb nack, or an RTX stream): then NACKs of its
     * subscribers are re-issued to it, at most NACK_FORWARD_PER_S per second. */
    struct msm_rtp_pt_set rtx;
    bool nack_ok;
    double nack_window;
    int nack_in_window;
    struct rtsp_subtrack *subs; /* playing subtracks */
    int n_subs;
    /* RTP destinations of the playing UDP subscribers in one array: the subtracks are scattered
     * in their clients, and the fan-out (and the kernel reading msg_name) touch every one per
     * batch. Rebuilt before the next send when <fan_dirty> (a link, an unlink, a latch). */
    struct rtsp_dst *fan;
    int n_fan, cap_fan;
    bool fan_dirty;
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

/* Who started an upstream operation (its errors are answered to them): a local client, or a
 * client of a mirror (peer + client id), or nobody (gone, or the proxy itself). */
struct rtsp_who {
    struct rtsp_client *client;
    struct rtsp_peer *peer;
    uint64_t client_id;
};

struct rtsp_pending {
    struct rtsp_pending *next;
    uint32_t cseq;
    enum msm_rtsp_method method;
    int track;
    bool tcp;
    struct rtsp_who who;
    double sent;
};

struct rtsp_wstate;
struct rtsp_xmsg;

struct rtsp_source {
    struct rtsp_source *next, *prev; /* worker registry (fan-out sources only) */
    struct rtsp_source *anext, *aprev; /* every source of the worker (lookup by id) */
    struct rtsp_wstate *ws;
    uint64_t id; /* process-unique: messages between workers name sources by id */
    bool in_registry;
    bool dead; /* destroyed; memory freed after the current callback stack */
    bool remote; /* a mirror: the upstream session belongs to another worker's hub */
    int owner_wid;  /* mirror: the hub's worker */
    uint64_t hub_id; /* mirror: the hub */
    struct rtsp_stream *stream; /* fan-out: the registry entry (hub: while listed; mirror: held) */
    struct rtsp_peer *peers;    /* hub: attached mirrors */
    int n_peers;
    struct msm_rtsp_config *cfg; /* reference */
    struct ev_loop *loop;
    char *key; /* "<cluster>\n<path?query>" */
    char *cluster_name;
    struct msm_cluster *cluster; /* reference */
    struct msm_host *host;       /* reference */
    bool cx_reserved;
    struct msm_conn *up;
    /* The cluster's upstream network filters on <up> (filter/upstream.h): Istio's
     * istio.metadata_exchange writes and strips the istio-peer-exchange preamble on mTLS legs
     * between sidecars. The chain reads <up> and <upf_si> through pointers to these fields. */
    struct msm_upstream_chain *upf;
    struct msm_stream_info *upf_si;
    /* What the chain writes into (<upf_si> points here): the upstream leg's peer, read by
     * rtsp_upeer_capture() into <upeer> once the exchange is over. */
    struct msm_stream_info up_si;
    /* The server side of the session (hub: captured; mirror: published by the hub); NULL until
     * known. Reference; attached to every bound client (rtsp_upeer_attach). */
    struct rtsp_upeer *upeer;
    /* The original destination of the connection of the client that opened the hub: the host
     * of an ORIGINAL_DST cluster (Istio's inbound|<port>|| on virtualInbound). Clients sharing
     * the hub come in on the same chain, i.e. to the same pod address and port. */
    struct msm_address orig_dst;
    bool up_tls; /* the control connection to the host is TLS: media goes interleaved */
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
    char stream_name[80]; /* the path as a stat token (per-stream and per-session stats) */
    struct rtsp_smetrics *ms; /* hub: the upstream session's metrics */
};

/* What a client of a mirror waits for from the hub (besides published state). */
enum rtsp_xwait {
    RTSP_XW_NONE = 0,
    RTSP_XW_SETUP = 1, /* its subscriber record for a track (and the hub's server_port) */
    RTSP_XW_PLAY = 2,  /* its records playing, and RTP-Info of the next packets */
};

struct rtsp_seqinfo {
    bool valid;
    uint16_t seq;
    uint32_t ts;
};

struct rtsp_client {
    struct msm_filter_handle *h;
    uint64_t id; /* process-unique (answers from a hub find the client by id) */
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
    double sess_rq; /* first request since the last session ended: its setup latency's start */
    struct rtsp_smetrics *ms; /* while it has a session */
    /* bound to a mirror: the answer awaited from the hub, and what came */
    enum rtsp_xwait xwait;
    uint32_t xseq;  /* of the last request to the hub (older answers are ignored) */
    bool x_ready;   /* an answer for the waiting request is here */
    int x_status;
    uint16_t x_dn_port;
    bool x_have_ssrc;
    uint32_t x_ssrc;
    struct rtsp_seqinfo x_info[RTSP_MAX_TRACKS];
    bool x_subs; /* has subscriber records at the hub */
    struct rtsp_upeer *upeer; /* reference: what the stream info's upstream peer points into */
};

/* ---- rtsp_source.c ------------------------------------------------------------------------- */

/* Find (fan-out: this worker's hub or mirror, else through the process-wide registry) or create
 * the source of (<cluster>, <path_query>) and bind <c> to it. The upstream DESCRIBE carries
 * <req>'s end-to-end headers. Never NULL: a source that cannot reach the cluster is returned
 * FAILED with fail_status set. */
struct rtsp_source *rtsp_source_bind(struct rtsp_client *c, const char *cluster,
                                     const char *path_query, const struct msm_rtsp_msg *req);
void rtsp_source_unbind(struct rtsp_source *s, struct rtsp_client *c);
/* <c> is woken (rtsp_client_wake) at the next progress of <s>. */
void rtsp_source_wait(struct rtsp_source *s, struct rtsp_client *c);
void rtsp_source_unwait(struct rtsp_source *s, struct rtsp_client *c);
/* Wake every waiter of <s> (and, for a hub, publish its state to its mirrors). */
void rtsp_source_wake_all(struct rtsp_source *s);
/* Track whose control URL has the path of <url> (absolute or relative client URL), or -1. */
int rtsp_source_find_track(struct rtsp_source *s, const char *url, size_t n);
/* Start the upstream SETUP of track <idx> (no-op while one is in flight; a mirror asks its
 * hub). 0, or an RTSP status to answer at once (453 when no port pair is free). */
int rtsp_source_setup_track(struct rtsp_source *s, int idx, bool client_tcp,
                            struct rtsp_client *initiator, const struct msm_rtsp_msg *req);
/* Start the upstream PLAY (no-op while in flight or playing). */
void rtsp_source_play(struct rtsp_source *s, struct rtsp_client *initiator,
                      const struct msm_rtsp_msg *req);
/* Forward <c>'s DESCRIBE to the server of an auth-gated source. */
void rtsp_source_verify(struct rtsp_source *s, struct rtsp_client *c,
                        const struct msm_rtsp_msg *req);
/* A source struct with nothing started (hub or mirror), linked in <ws>; takes <key>. */
/* Write <b> (all of it is moved) on the source's upstream control connection, through the
 * cluster's upstream filters. No-op without a connection. */
void rtsp_source_up_write(struct rtsp_source *s, struct msm_buf *b);
struct rtsp_source *rtsp_source_alloc(struct rtsp_wstate *ws, struct msm_rtsp_config *cfg,
                                      char *key, const char *cluster,
                                      const struct msm_rtsp_msg *req);
/* Nobody bound any more (clients, mirrors): linger (a ready fan-out hub) or destroy. */
void rtsp_source_release(struct rtsp_source *s);
/* Tear down now (TEARDOWN upstream for a hub); memory freed after the callback stack. */
void rtsp_source_destroy(struct rtsp_source *s);
/* Hub operations on behalf of <who> (a local client or a mirror's client): as above, with the
 * client's request URI and Authorization value (NULL: the creating client's). */
int rtsp_hub_setup_track(struct rtsp_source *s, int idx, bool client_tcp,
                         const struct rtsp_who *who, const char *uri, const char *auth);
void rtsp_hub_play(struct rtsp_source *s, const struct rtsp_who *who, const char *uri,
                   const char *auth);
void rtsp_hub_verify(struct rtsp_source *s, const struct rtsp_who *who, const char *uri,
                     const char *auth);

/* ---- rtsp_xworker.c: fan-out across workers ------------------------------------------------ */

/* Hub side: an attached mirror of another worker. */
struct rtsp_peer {
    struct rtsp_peer *next;
    uint64_t mirror_id;
    int wid;
    struct rtsp_ring *ring;           /* interleaved media to that worker */
    int tcp_playing[RTSP_MAX_TRACKS]; /* its interleaved subscribers playing, per track */
    struct rtsp_subtrack *subs;       /* records of its subscribers (rnext) */
};

/* Per worker loop (msm_loop_local): its sources, its inbox of messages from other workers, the
 * rings other workers hand it interleaved media through. */
struct rtsp_wstate {
    struct ev_loop *loop;
    int wid; /* index in the process-wide table */
    struct rtsp_source *head; /* fan-out registry: hubs and mirrors, by key */
    struct rtsp_source *all;  /* every live source (lookup by id) */
    bool closing; /* the loop is being freed: nothing may wait for I/O any more */
    ev_async async; /* inbox and rings */
    struct rtsp_xmsg *in_head, *in_tail; /* guarded by the registry lock */
    struct rtsp_ring **rings; /* [producer wid] */
    int n_rings;
};

struct rtsp_wstate *rtsp_wstate(struct ev_loop *loop);
uint64_t rtsp_new_id(void);
void rtsp_ws_link(struct rtsp_source *s);
void rtsp_ws_unlink(struct rtsp_source *s);
/* The worker's fan-out registry (hubs and mirrors). */
struct rtsp_source *rtsp_registry_find(struct rtsp_wstate *ws, const char *key);
void rtsp_registry_add(struct rtsp_source *s);
/* Out of the worker registry and, for a hub, out of the process-wide one. */
void rtsp_registry_remove(struct rtsp_source *s);
/* The process-wide entry of <key>: an existing one (the caller becomes a mirror of it when it
 * belongs to another worker), else a new one this worker is to own (rtsp_stream_set_hub). */
struct rtsp_stream *rtsp_stream_claim(struct rtsp_wstate *ws, const char *key);
bool rtsp_stream_is_remote(const struct rtsp_stream *st, const struct rtsp_wstate *ws);
void rtsp_stream_set_hub(struct rtsp_stream *st, struct rtsp_source *hub);
/* True when a mirror is on its way to the hub <s> (its linger must not end it). */
bool rtsp_stream_busy(struct rtsp_source *s);

/* Mirror side. */
struct rtsp_source *rtsp_mirror_new(struct rtsp_client *c, struct rtsp_stream *st, char *key,
                                    const char *cluster, const struct msm_rtsp_msg *req);
void rtsp_mirror_setup_track(struct rtsp_source *s, int idx, bool tcp, struct rtsp_client *c,
                             const char *uri, const char *auth);
void rtsp_mirror_play(struct rtsp_source *s, struct rtsp_client *c, const char *uri,
                      const char *auth);
void rtsp_mirror_verify(struct rtsp_source *s, struct rtsp_client *c, const char *uri,
                        const char *auth);
/* <c>'s subscriber record for track <idx> at the hub (answer: RTSP_XW_SETUP), its records
 * playing (answer: RTSP_XW_PLAY), paused, removed (<idx> -1: all). */
void rtsp_mirror_sub_setup(struct rtsp_source *s, struct rtsp_client *c, int idx,
                           const struct rtsp_subtrack *sub);
void rtsp_mirror_sub_play(struct rtsp_source *s, struct rtsp_client *c);
void rtsp_mirror_sub_pause(struct rtsp_source *s, struct rtsp_client *c);
void rtsp_mirror_sub_remove(struct rtsp_source *s, struct rtsp_client *c, int idx);
/* The mirror is being destroyed: let go of the entry, tell the hub. */
void rtsp_mirror_detach(struct rtsp_source *s);

/* Hub side. */
enum rtsp_answer {
    RTSP_ANSWER_FAIL = 0,     /* an operation the client started failed */
    RTSP_ANSWER_VERIFIED = 1, /* the server's answer to the client's DESCRIBE */
};
void rtsp_hub_answer(struct rtsp_source *s, struct rtsp_peer *peer, uint64_t client_id,
                     enum rtsp_answer kind, int status, const char *headers);
/* Post the hub's state to <peer> (NULL: every mirror). */
void rtsp_hub_publish(struct rtsp_source *s, struct rtsp_peer *peer);
/* The hub is being destroyed: mirrors learn it failed, their records go. */
void rtsp_hub_drop_peers(struct rtsp_source *s);
/* Interleaved media of <t> to the workers with interleaved subscribers playing it; never
 * waits (a full ring drops and counts). */
void rtsp_hub_handoff(struct rtsp_track *t, struct msm_udp_pkt *pk, int n, bool rtcp);
/* A packet came from a client of another worker on a shared downstream socket. */
void rtsp_hub_remote_activity(struct rtsp_source *s, struct rtsp_subtrack *sub);

/* ---- rtsp_upeer.c: the server side of a session, for the clients' stream infos ------------ */

struct rtsp_upeer *rtsp_upeer_ref(struct rtsp_upeer *u);
void rtsp_upeer_unref(struct rtsp_upeer *u);
/* Hub: once its upstream chain says the exchange is over (up_si.upstream_peer_done), make
 * <upeer> from it and the connection's TLS identities, attach it to the bound clients and
 * publish it to the mirrors. No-op before, and after the first time. */
void rtsp_upeer_capture(struct rtsp_source *s);
/* Mirror: the hub's <u> (NULL: not known yet) becomes the source's; its clients get it. */
void rtsp_upeer_set(struct rtsp_source *s, struct rtsp_upeer *u);
/* Point <c>'s stream info at <u> (its upstream peer, URI SANs, host; upstream_peer_done), taking
 * a reference and dropping the one of what it pointed at before. */
void rtsp_upeer_attach(struct rtsp_client *c, struct rtsp_upeer *u);
/* The client goes: its stream info no longer points into its reference, which is dropped. */
void rtsp_upeer_detach(struct rtsp_client *c);

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
/* <n> packets to every playing subscriber of <t> (a mirror's track: its interleaved ones). */
void rtsp_track_fan_out(struct rtsp_track *t, struct msm_udp_pkt *pk, int n, bool rtcp);
/* Receivers of the upstream UDP pair (only the latched server address gets through). */
void rtsp_relay_up_rtp(struct msm_udp_sock *u, struct msm_udp_pkt *pk, int n);
void rtsp_relay_up_rtcp(struct msm_udp_sock *u, struct msm_udp_pkt *pk, int n);
/* Our receiver report for <t> to the server, and the upstream loss/jitter stats. */
void rtsp_track_send_rr(struct rtsp_source *s, struct rtsp_track *t);
/* RTP-Info of the next packet <t> forwards (the last one + 1, else the upstream PLAY's). */
struct rtsp_seqinfo rtsp_track_next_info(const struct rtsp_track *t);
/* RFC 5761 §4: an RTCP packet type where an RTP payload type would be. */
bool rtsp_is_muxed_rtcp(const uint8_t *p, size_t n);

/* Generic NACKs (RFC 4585) a subscriber of <t> sent: re-issued to the server (hub only) when
 * the server takes them. */
void rtsp_track_forward_nacks(struct rtsp_track *t, const uint8_t *p, size_t n);

/* ---- rtsp_metrics.c: per-session metrics ----------------------------------------------------- */

enum rtsp_role {
    RTSP_ROLE_CLIENT = 0,   /* one client's RTSP session */
    RTSP_ROLE_UPSTREAM = 1, /* a hub's session with the server */
};

#define RTSP_TRANSPORT_UDP 1
#define RTSP_TRANSPORT_TCP 2

/* The metrics of one session: always listed (GET /rtsp/sessions), with stats of its own
 * ("rtsp.<prefix>.session.<id>.<role>.<stream>.*") when the config's max_session_stats allows
 * (<has_stats>). Owned by its references (atomic): the client (or the hub) for its session's
 * life, and the hub-side records of a client of a mirror; the last one removes the stats. */
struct rtsp_smetrics {
    atomic_int refs;
    struct rtsp_smetrics *next, *prev; /* the process-wide list, under its lock */
    struct msm_rtsp_config *cfg;       /* reference */
    enum rtsp_role role;
    char id[40];       /* client: its RTSP session id; upstream: "up-<source id>" */
    char stream[80];
    char address[64];  /* the client's (or the server's) address; under the list lock */
    double created;    /* ev_time() */
    atomic_int transport; /* RTSP_TRANSPORT_* bits of its tracks */
    atomic_bool setup_done;
    bool has_stats;
    struct msm_rtsp_session_stats st;
    struct msm_rtsp_client_session_stats cst;     /* client role */
    struct msm_rtsp_upstream_session_stats ust;   /* upstream role */
    /* client: what its receiver reports said last, per track */
    _Atomic int64_t rep_lost[RTSP_MAX_TRACKS];
    atomic_uint rep_fraction[RTSP_MAX_TRACKS];
    _Atomic uint64_t rep_jitter_us[RTSP_MAX_TRACKS];
};

/* A new session's metrics (one reference), listed; stats when the config's bound allows
 * (else sessions_untracked counts it). <id> and <stream> must be stat tokens (no '.').
 * Any worker. */
struct rtsp_smetrics *rtsp_smetrics_new(struct msm_rtsp_config *cfg, enum rtsp_role role,
                                        const char *id, const char *stream, double now);
struct rtsp_smetrics *rtsp_smetrics_ref(struct rtsp_smetrics *m); /* NULL-safe */
void rtsp_smetrics_unref(struct rtsp_smetrics *m);                 /* NULL-safe, any thread */
void rtsp_smetrics_set_address(struct rtsp_smetrics *m, const char *addr);
void rtsp_smetrics_add_transport(struct rtsp_smetrics *m, bool tcp);
/* Packets sent to / received from the session's peer (<rtx>: how many of these RTP packets
 * were retransmissions). All NULL-safe and no-ops without stats. */
void rtsp_smetrics_tx(struct rtsp_smetrics *m, bool rtcp, uint64_t packets, uint64_t bytes,
                      uint64_t rtx);
void rtsp_smetrics_rx(struct rtsp_smetrics *m, bool rtcp, uint64_t packets, uint64_t bytes,
                      uint64_t rtx);
/* An RTCP packet from the peer about track <track> (clock <clock_rate>): NACKed packets, and
 * for a client its receiver report (loss, fraction lost, jitter). */
void rtsp_smetrics_feedback(struct rtsp_smetrics *m, int track, uint32_t clock_rate,
                            const struct msm_rtcp_summary *sum);
/* The session plays: its setup latency, <seconds> since its first request (once). */
void rtsp_smetrics_setup_done(struct rtsp_smetrics *m, double seconds);
/* The admin view: one JSON object per live session appended to <sessions> (main thread). */
void rtsp_smetrics_admin(void *arg, struct json_t *sessions);
size_t rtsp_smetrics_count(void);

/* ---- rtsp_client.c ------------------------------------------------------------------------- */

/* Run the waiting request again soon (next loop iteration). */
void rtsp_client_wake(struct rtsp_client *c);
/* The bound source failed for good: close the client's connection. */
void rtsp_client_source_lost(struct rtsp_client *c);
/* A packet (RTCP, or a NAT hole punch) came from the client: its session is alive. */
void rtsp_client_activity(struct rtsp_client *c);
/* Write interleaved frames to the client; false when its buffer is over the limit (dropped). */
bool rtsp_client_write_frames(struct rtsp_client *c, struct msm_buf *frames);
