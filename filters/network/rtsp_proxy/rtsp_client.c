/* The downstream side of the RTSP proxy: one instance per client connection. It parses the
 * client's requests (pipelined, served one at a time in order), routes the session to a
 * cluster, binds it to a source (rtsp_source.c) and answers every request itself: DESCRIBE
 * from the source's cached SDP (addresses rewritten), SETUP with its own Transport (the
 * source's shared downstream ports, or the client's interleaved channels), PLAY with RTP-Info
 * consistent with the packets the client will get. See rtsp_private.h for the wait/rerun model.
 *
 * States of a client: no session -> session (after the first SETUP) -> playing (PLAY) ->
 * paused (PAUSE) / no session again (TEARDOWN); the session ends with the connection or after
 * <session_timeout> without requests or RTCP from the client.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/alloc.h"
#include "common/log.h"
#include "filter/manager.h"
#include "filters/network/rtsp_proxy/rtsp_private.h"
#include "filters/network/tcp_proxy/tcp_proxy.h"
#include "server/worker.h"

#define PUBLIC_METHODS "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, " \
                       "SET_PARAMETER"
/* While a request waits on the upstream, the client's further input is buffered up to this. */
#define MAX_BUFFERED_INPUT (256 * 1024)

enum handled {
    HANDLED = 0, /* answered: drop the request from the input */
    WAIT = 1,    /* keep it at the head and run it again when woken */
};

static void process(struct rtsp_client *c);

static struct msm_conn *conn_of(struct rtsp_client *c)
{
    return msm_filter_conn(c->h);
}

/* ---- answers ------------------------------------------------------------------------------- */

static void count_status(struct rtsp_client *c, int status)
{
    struct msm_rtsp_stats *st = &c->cfg->stats;
    struct msm_stat *by_class[] = {st->downstream_rq_1xx, st->downstream_rq_2xx,
                                   st->downstream_rq_3xx, st->downstream_rq_4xx,
                                   st->downstream_rq_5xx};
    int k = status / 100 - 1;
    if (k >= 0 && k < 5) {
        msm_stat_inc(by_class[k]);
    }
}

/* Write a response to <req> (NULL: a parse error, answered as 1.0 without CSeq). <extra>: more
 * header lines; <body>/<blen>: the entity (with its Content-Type in <extra>). */
static void respond(struct rtsp_client *c, const struct msm_rtsp_msg *req, int status,
                    const char *extra, const char *body, size_t blen, bool with_session)
{
    if (c->closed) {
        return;
    }
    struct msm_buf b;
    msm_buf_init(&b);
    int major = req && req->ver_major == 2 ? 2 : 1;
    msm_buf_appendf(&b, "RTSP/%d.0 %d %s\r\n", major, status, msm_rtsp_reason(status));
    uint32_t cseq;
    if (req && msm_rtsp_cseq(req, &cseq)) {
        msm_buf_appendf(&b, "CSeq: %u\r\n", cseq);
    }
    msm_buf_appendf(&b, "Server: msm-proxy/%s\r\n", MSM_VERSION);
    if (with_session && c->has_session) {
        if (c->cfg->session_timeout_ms) {
            msm_buf_appendf(&b, "Session: %s;timeout=%u\r\n", c->session_id,
                            (c->cfg->session_timeout_ms + 999) / 1000);
        } else {
            msm_buf_appendf(&b, "Session: %s\r\n", c->session_id);
        }
    }
    if (extra) {
        msm_buf_append(&b, extra, strlen(extra));
    }
    if (blen) {
        msm_buf_appendf(&b, "Content-Length: %zu\r\n", blen);
    }
    msm_buf_append(&b, "\r\n", 2);
    if (blen) {
        msm_buf_append(&b, body, blen);
    }
    count_status(c, status);
    msm_filter_write(c->h, &b, false);
    msm_buf_deinit(&b);
}

static enum handled fail(struct rtsp_client *c, const struct msm_rtsp_msg *req, int status)
{
    respond(c, req, status, NULL, NULL, 0, false);
    return HANDLED;
}

/* ---- sessions ------------------------------------------------------------------------------ */

/* Start or stop <c>'s media. For a client of a mirror, the hub already linked its records
 * (SUB_PLAY, answered before this runs) or is told to stop them here (unless <quiet>: the
 * records are about to be removed anyway); locally, its interleaved subtracks wait for the
 * packet RTP-Info announced. */
static void set_playing_ex(struct rtsp_client *c, bool on, bool quiet)
{
    if (c->playing == on) {
        return;
    }
    c->playing = on;
    if (!on && c->src && c->src->remote && c->x_subs && !quiet) {
        rtsp_mirror_sub_pause(c->src, c);
    }
    if (on) {
        msm_stat_inc(c->cfg->stats.subscribers_active);
    } else {
        msm_stat_dec(c->cfg->stats.subscribers_active);
    }
    for (int i = 0; i < RTSP_MAX_TRACKS; i++) {
        struct rtsp_subtrack *st = &c->st[i];
        if (!st->t) {
            continue;
        }
        st->playing = on;
        if (on) {
            const struct rtsp_seqinfo *si = &c->x_info[i];
            st->await_start = st->tcp && c->src && c->src->remote && si->valid;
            st->start_seq = si->seq;
            rtsp_track_link(st->t, st);
        } else {
            rtsp_track_unlink(st->t, st);
        }
    }
}

static void set_playing(struct rtsp_client *c, bool on)
{
    set_playing_ex(c, on, false);
}

/* End the client's RTSP session (TEARDOWN, timeout, close) and release the source. */
static void session_end(struct rtsp_client *c)
{
    set_playing_ex(c, false, true); /* unbinding removes a mirror client's records */
    for (int i = 0; i < RTSP_MAX_TRACKS; i++) {
        memset(&c->st[i], 0, sizeof(c->st[i]));
        c->st[i].c = c;
    }
    if (c->has_session) {
        c->has_session = false;
        msm_stat_dec(c->cfg->stats.sessions_active);
        atomic_fetch_sub(&c->cfg->sessions, 1);
    }
    /* Its series go now (a hub still holding records of it lets go on SUB_REMOVE). */
    rtsp_smetrics_unref(c->ms);
    c->ms = NULL;
    c->sess_rq = 0;
    if (c->closed) {
        ev_timer_stop(c->loop, &c->session_timer);
    }
    if (c->src) {
        struct rtsp_source *s = c->src;
        c->src = NULL;
        rtsp_source_unbind(s, c);
    }
    c->verified = c->verify_pending = false;
    c->waiting = false;
}

/* No request and no RTCP for session_timeout: the session (or an idle connection that never
 * set one up) ends, and the connection is closed. */
static void on_session_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct rtsp_client *c = MSM_CONTAINER_OF(w, struct rtsp_client, session_timer);
    if (c->has_session) {
        msm_stat_inc(c->cfg->stats.session_timeout);
        msm_log(MSM_LOG_INFO, MSM_LC_RTSP, "[C%llu] rtsp: session %s timed out",
                c->closed ? 0ULL : conn_of(c)->id, c->session_id);
    }
    session_end(c);
    if (!c->closed) {
        msm_filter_close(c->h, MSM_CLOSE_FLUSH);
    }
}

void rtsp_client_activity(struct rtsp_client *c)
{
    if (c->cfg->session_timeout_ms && !c->closed) {
        ev_timer_again(c->loop, &c->session_timer);
    }
}

static void on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct rtsp_client *c = MSM_CONTAINER_OF(w, struct rtsp_client, kick);
    if (c->closed) {
        return;
    }
    if (c->lost) {
        msm_log(MSM_LOG_DEBUG, MSM_LC_RTSP, "[C%llu] rtsp: upstream session lost: closing",
                conn_of(c)->id);
        session_end(c);
        msm_filter_close(c->h, MSM_CLOSE_FLUSH);
        return;
    }
    c->waiting = false;
    process(c);
}

void rtsp_client_wake(struct rtsp_client *c)
{
    if (!c->closed && !ev_is_active(&c->kick)) {
        ev_timer_set(&c->kick, 0, 0);
        ev_timer_start(c->loop, &c->kick);
    }
}

void rtsp_client_source_lost(struct rtsp_client *c)
{
    c->lost = true;
    rtsp_client_wake(c);
}

bool rtsp_client_write_frames(struct rtsp_client *c, struct msm_buf *frames)
{
    if (c->closed) {
        return false;
    }
    if (conn_of(c)->out.len > c->cfg->subscriber_buffer_limit) {
        return false;
    }
    msm_filter_write(c->h, frames, false);
    return true;
}

/* ---- routing ----------------------------------------------------------------------------- */

/* Choose the cluster for a request URI: our routes, else the chain's tcp_proxy. NULL: 404. */
static const char *route(struct rtsp_client *c, const struct msm_rtsp_url *u)
{
    const struct msm_rtsp_route *r =
        msm_rtsp_route_find(c->cfg, u->host, u->host_len, u->path, u->path_len);
    if (r) {
        return msm_rtsp_route_pick(r, msm_random());
    }
    const struct msm_tcp_proxy_config *tp = msm_filter_next_config(c->h, &msm_tcp_proxy_ops);
    if (tp) {
        return msm_tcp_proxy_pick_cluster(tp, msm_random());
    }
    return NULL;
}

static void remember_authority(struct rtsp_client *c, const struct msm_rtsp_url *u)
{
    bool v6 = memchr(u->host, ':', u->host_len) != NULL;
    if (u->port) {
        snprintf(c->authority, sizeof(c->authority), "%s%.*s%s:%u", v6 ? "[" : "",
                 (int)u->host_len, u->host, v6 ? "]" : "", u->port);
    } else {
        snprintf(c->authority, sizeof(c->authority), "%s%.*s%s", v6 ? "[" : "", (int)u->host_len,
                 u->host, v6 ? "]" : "");
    }
}

/* Bind the client to the source of <path_query> (routing on first use). 0, or a status. */
static int bind_source(struct rtsp_client *c, const struct msm_rtsp_msg *m,
                       const struct msm_rtsp_url *u, size_t path_query_len)
{
    if (!c->cluster || !c->has_session) {
        const char *cl = route(c, u);
        if (!cl) {
            msm_stat_inc(c->cfg->stats.downstream_rq_no_route);
            return 404;
        }
        free(c->cluster);
        c->cluster = msm_xstrdup(cl);
    }
    char *pq = msm_xstrndup(u->rest, path_query_len);
    if (!pq[0]) {
        free(pq);
        pq = msm_xstrdup("/");
    }
    remember_authority(c, u);
    c->src = rtsp_source_bind(c, c->cluster, pq, m);
    free(pq);
    return 0;
}

/* The source is failed: answer its status (with relayed auth challenges) and let go of it. */
static enum handled answer_source_failure(struct rtsp_client *c, const struct msm_rtsp_msg *m)
{
    struct rtsp_source *s = c->src;
    int status = s->fail_status ? s->fail_status : 503;
    respond(c, m, status, s->fail_headers, NULL, 0, false);
    if (!c->has_session) {
        c->src = NULL;
        rtsp_source_unbind(s, c);
    }
    return HANDLED;
}

/* ---- methods ----------------------------------------------------------------------------- */

static enum handled do_describe(struct rtsp_client *c, const struct msm_rtsp_msg *m)
{
    struct msm_rtsp_url u;
    if (msm_rtsp_url_parse(m->uri.p, m->uri.n, &u) < 0) {
        return fail(c, m, 400);
    }
    if (c->src) {
        /* Another URL than the bound source's: allowed before any SETUP. */
        struct msm_rtsp_url su;
        bool same = msm_rtsp_url_parse(c->src->url, strlen(c->src->url), &su) == 0 &&
                    su.rest_len == u.rest_len && !memcmp(su.rest, u.rest, u.rest_len);
        if (!same) {
            if (c->has_session) {
                return fail(c, m, 455);
            }
            struct rtsp_source *old = c->src;
            c->src = NULL;
            rtsp_source_unbind(old, c);
            c->verified = false;
        }
    }
    if (!c->src) {
        int st = bind_source(c, m, &u, u.rest_len);
        if (st) {
            return fail(c, m, st);
        }
        /* The client whose DESCRIBE creates the source is checked by that DESCRIBE itself. */
        c->verified = c->src->refs == 1 && c->src->state == RTSP_SRC_CONNECTING &&
                      !c->src->remote;
    }
    struct rtsp_source *s = c->src;
    if (s->state == RTSP_SRC_FAILED) {
        return answer_source_failure(c, m);
    }
    if (s->state != RTSP_SRC_READY) {
        rtsp_source_wait(s, c);
        return WAIT;
    }
    if (s->auth_gated && !c->verified) {
        /* The server wanted credentials from the first client: every later client's DESCRIBE
         * is checked by the server too, so fan-out never bypasses its authentication. */
        rtsp_source_wait(s, c);
        rtsp_source_verify(s, c, m);
        return WAIT;
    }
    remember_authority(c, &u);
    char base[MSM_RTSP_URL_MAX + 128];
    if (msm_rtsp_url_rebase(s->base, strlen(s->base), c->authority, base, sizeof(base)) < 0) {
        snprintf(base, sizeof(base), "%.*s", (int)m->uri.n, m->uri.p);
    }
    size_t blen = 0;
    char *sdp = msm_sdp_rewrite(s->sdp, s->sdp_len, c->authority, c->local_ip, &blen);
    size_t xl = strlen(base) + strlen(s->describe_headers) + 64;
    char *extra = msm_xmalloc(xl);
    bool has_ct = strstr(s->describe_headers, "Content-Type") != NULL ||
                  strstr(s->describe_headers, "content-type") != NULL;
    snprintf(extra, xl, "Content-Base: %s\r\n%s%s", base, s->describe_headers,
             has_ct ? "" : "Content-Type: application/sdp\r\n");
    respond(c, m, 200, extra, sdp, blen, false);
    free(extra);
    free(sdp);
    return HANDLED;
}

/* Pick the first transport alternative the proxy can serve. NULL with *status when none. */
static const struct msm_rtsp_transport *pick_transport(struct rtsp_client *c,
                                                       const struct msm_rtsp_msg *m,
                                                       struct msm_rtsp_transport *tr, int n,
                                                       int *status)
{
    *status = 461;
    for (int i = 0; i < n; i++) {
        struct msm_rtsp_transport *t = &tr[i];
        if (t->profile != MSM_RTSP_AVP || t->multicast || t->mode_record) {
            continue; /* no SRTP, multicast or RECORD on the client leg yet */
        }
        if (t->lower == MSM_RTSP_LOWER_UDP) {
            if (!t->has_client_port || t->client_port[0] == 0) {
                continue;
            }
            if (msm_conn_tls_info(conn_of(c))) {
                /* The client reached us over (m)TLS: UDP media would leave that protection
                 * and cross the mesh in clear. Only interleaved is offered (461 if the client
                 * insists on UDP; a client listing both alternatives gets TCP). */
                msm_stat_inc(c->cfg->stats.media_protection_refused);
                continue;
            }
            if (t->destination[0]) {
                /* Media only to the address the request came from: no third-party targets
                 * (a reflection vector). */
                struct sockaddr_storage d;
                memset(&d, 0, sizeof(d));
                if (inet_pton(AF_INET, t->destination, &((struct sockaddr_in *)&d)->sin_addr)) {
                    d.ss_family = AF_INET;
                } else if (inet_pton(AF_INET6, t->destination,
                                     &((struct sockaddr_in6 *)&d)->sin6_addr)) {
                    d.ss_family = AF_INET6;
                }
                if (!msm_sockaddr_ip_eq(&d, &c->peer)) {
                    *status = m->ver_major == 2 ? 463 : 403;
                    continue;
                }
            }
        } else if (!t->has_interleaved) {
            /* assigned in do_setup */
        }
        return t;
    }
    return NULL;
}

static void new_session(struct rtsp_client *c)
{
    uint64_t r = msm_random();
    snprintf(c->session_id, sizeof(c->session_id), "%016llx", (unsigned long long)r);
    c->has_session = true;
    msm_stat_inc(c->cfg->stats.sessions_total);
    msm_stat_inc(c->cfg->stats.sessions_active);
    rtsp_smetrics_unref(c->ms);
    c->ms = rtsp_smetrics_new(c->cfg, RTSP_ROLE_CLIENT, c->session_id, c->src->stream_name,
                              ev_time());
    struct msm_address a;
    memset(&a, 0, sizeof(a));
    a.sa = c->peer;
    a.len = msm_sockaddr_len(&c->peer);
    char addr[MSM_ADDRSTRLEN];
    msm_address_str(&a, addr, sizeof(addr));
    rtsp_smetrics_set_address(c->ms, addr);
    rtsp_client_activity(c);
}

static bool session_ok(struct rtsp_client *c, const struct msm_rtsp_msg *m)
{
    struct msm_rtsp_str sid = msm_rtsp_session_id(m);
    if (!sid.n) {
        return false;
    }
    return c->has_session && sid.n == strlen(c->session_id) && !memcmp(sid.p, c->session_id, sid.n);
}

static enum handled do_setup(struct rtsp_client *c, const struct msm_rtsp_msg *m)
{
    struct msm_rtsp_url u;
    if (msm_rtsp_url_parse(m->uri.p, m->uri.n, &u) < 0) {
        return fail(c, m, 400);
    }
    struct msm_rtsp_str sid = msm_rtsp_session_id(m);
    if (sid.n && !session_ok(c, m)) {
        return fail(c, m, 454);
    }
    const struct msm_rtsp_hdr *th = msm_rtsp_header(m, "Transport");
    struct msm_rtsp_transport tr[MSM_RTSP_MAX_TRANSPORTS];
    int nt = th ? msm_rtsp_transport_parse(th->value.p, th->value.n, tr, MSM_RTSP_MAX_TRANSPORTS)
                : -1;
    if (nt < 0) {
        return fail(c, m, th ? 400 : 461);
    }
    int tstatus;
    const struct msm_rtsp_transport *want = pick_transport(c, m, tr, nt, &tstatus);
    if (!want) {
        return fail(c, m, tstatus);
    }
    if (!c->src) {
        /* SETUP without DESCRIBE: the aggregate is the URL without its last segment. */
        size_t pq = u.rest_len;
        const char *slash = NULL;
        for (size_t i = 0; i < u.path_len; i++) {
            if (u.path[i] == '/') {
                slash = u.path + i;
            }
        }
        if (slash && slash > u.path) {
            pq = (size_t)(slash - u.rest);
        }
        int st = bind_source(c, m, &u, pq);
        if (st) {
            return fail(c, m, st);
        }
    }
    struct rtsp_source *s = c->src;
    if (s->state == RTSP_SRC_FAILED) {
        return answer_source_failure(c, m);
    }
    if (s->state != RTSP_SRC_READY) {
        rtsp_source_wait(s, c);
        return WAIT;
    }
    int idx = rtsp_source_find_track(s, m->uri.p, m->uri.n);
    if (idx < 0 && s->n_tracks == 1) {
        idx = 0; /* a single-track stream set up by its aggregate URL */
    }
    if (idx < 0) {
        return fail(c, m, 404);
    }
    if (!c->has_session && c->cfg->has_max_sessions &&
        atomic_load(&c->cfg->sessions) >= c->cfg->max_sessions) {
        return fail(c, m, 503);
    }
    struct rtsp_track *t = &s->tracks[idx];
    bool tcp = want->lower == MSM_RTSP_LOWER_TCP;
    if (t->state == RTSP_TRACK_NONE) {
        int st = rtsp_source_setup_track(s, idx, tcp, c, m);
        if (st) {
            return fail(c, m, st);
        }
    }
    if (t->state == RTSP_TRACK_SETTING_UP) {
        rtsp_source_wait(s, c);
        return WAIT;
    }
    if (t->state != RTSP_TRACK_READY) {
        return fail(c, m, 503);
    }
    /* The subscriber as the client asked for it. */
    struct rtsp_subtrack want_sub;
    memset(&want_sub, 0, sizeof(want_sub));
    want_sub.c = c;
    want_sub.t = t;
    want_sub.tcp = tcp;
    if (tcp) {
        want_sub.ch[0] = want->has_interleaved ? want->interleaved[0] : (uint8_t)(2 * idx);
        want_sub.ch[1] = want->has_interleaved ? want->interleaved[1] : (uint8_t)(2 * idx + 1);
    } else {
        want_sub.rtcp_mux = want->rtcp_mux;
        want_sub.rtp_to = c->peer;
        msm_sockaddr_set_port(&want_sub.rtp_to, want->client_port[0]);
        want_sub.rtcp_to = c->peer;
        msm_sockaddr_set_port(&want_sub.rtcp_to,
                              want->rtcp_mux ? want->client_port[0] : want->client_port[1]);
    }
    uint16_t dn_port;
    bool have_ssrc;
    uint32_t ssrc;
    if (s->remote) {
        /* The hub keeps the record (and serves UDP media from its sockets): wait for it. */
        if (c->xwait == RTSP_XW_SETUP || !c->x_ready) {
            if (c->xwait != RTSP_XW_SETUP) {
                rtsp_mirror_sub_setup(s, c, idx, &want_sub);
            }
            rtsp_source_wait(s, c);
            return WAIT;
        }
        c->x_ready = false;
        if (c->x_status != 200) {
            return fail(c, m, c->x_status);
        }
        dn_port = c->x_dn_port;
        have_ssrc = c->x_have_ssrc;
        ssrc = c->x_ssrc;
    } else {
        if (!tcp) {
            int st = rtsp_track_open_downstream(t, c->peer.ss_family);
            if (st) {
                return fail(c, m, st);
            }
        }
        dn_port = t->dn_port;
        have_ssrc = t->have_ssrc;
        ssrc = t->ssrc;
    }
    if (!c->has_session) {
        bool full = false;
        if (c->cfg->has_max_sessions &&
            atomic_fetch_add(&c->cfg->sessions, 1) >= c->cfg->max_sessions) {
            atomic_fetch_sub(&c->cfg->sessions, 1);
            full = true;
        } else if (!c->cfg->has_max_sessions) {
            atomic_fetch_add(&c->cfg->sessions, 1);
        }
        if (full) {
            if (s->remote) {
                rtsp_mirror_sub_remove(s, c, idx);
            }
            return fail(c, m, 503);
        }
        new_session(c);
    }
    struct rtsp_subtrack *sub = &c->st[idx];
    if (sub->linked) {
        rtsp_track_unlink(sub->t, sub);
    }
    *sub = want_sub;
    sub->ms = c->ms;
    rtsp_smetrics_add_transport(c->ms, tcp);
    struct msm_rtsp_transport out;
    memset(&out, 0, sizeof(out));
    out.profile = MSM_RTSP_AVP;
    out.lower = want->lower;
    if (tcp) {
        out.has_interleaved = true;
        out.interleaved[0] = sub->ch[0];
        out.interleaved[1] = sub->ch[1];
    } else {
        out.has_client_port = true;
        out.client_port[0] = want->client_port[0];
        out.client_port[1] = want->client_port[1];
        out.has_server_port = true;
        out.server_port[0] = dn_port;
        out.server_port[1] = (uint16_t)(dn_port + 1);
        out.rtcp_mux = sub->rtcp_mux;
        snprintf(out.source, sizeof(out.source), "%s", c->local_ip);
        if (m->ver_major == 2) {
            snprintf(out.destination, sizeof(out.destination), "%s", want->destination);
        }
    }
    if (have_ssrc) {
        out.has_ssrc = true;
        out.ssrc = ssrc;
    }
    out.has_mode = true;
    char tbuf[512], extra[600];
    if (msm_rtsp_transport_format(&out, m->ver_major == 2, tbuf, sizeof(tbuf)) < 0) {
        return fail(c, m, 500);
    }
    snprintf(extra, sizeof(extra), "Transport: %s\r\n", tbuf);
    if (c->playing) {
        sub->playing = true;
        rtsp_track_link(t, sub);
    }
    rtsp_client_activity(c);
    respond(c, m, 200, extra, NULL, 0, true);
    return HANDLED;
}

static enum handled do_play(struct rtsp_client *c, const struct msm_rtsp_msg *m)
{
    if (!c->src || !session_ok(c, m)) {
        return fail(c, m, 454);
    }
    struct rtsp_source *s = c->src;
    if (s->state == RTSP_SRC_FAILED) {
        return answer_source_failure(c, m);
    }
    if (s->play == RTSP_PLAY_IDLE) {
        rtsp_source_play(s, c, m);
    }
    if (s->play != RTSP_PLAY_ON) {
        rtsp_source_wait(s, c);
        return WAIT;
    }
    if (s->remote) {
        /* The hub links the records and tells which packet each track forwards next. */
        if (c->xwait == RTSP_XW_PLAY || !c->x_ready) {
            if (c->xwait != RTSP_XW_PLAY) {
                rtsp_mirror_sub_play(s, c);
            }
            rtsp_source_wait(s, c);
            return WAIT;
        }
        c->x_ready = false;
    } else {
        for (int i = 0; i < s->n_tracks; i++) {
            c->x_info[i] = rtsp_track_next_info(&s->tracks[i]);
        }
    }
    /* RTP-Info: for late joiners, the next packet each track will forward. */
    struct msm_buf info;
    msm_buf_init(&info);
    int n = 0;
    for (int i = 0; i < s->n_tracks; i++) {
        struct rtsp_subtrack *sub = &c->st[i];
        if (!sub->t) {
            continue;
        }
        struct rtsp_track *t = sub->t;
        char url[MSM_RTSP_URL_MAX + 128];
        if (msm_rtsp_url_rebase(t->url, strlen(t->url), c->authority, url, sizeof(url)) < 0) {
            continue;
        }
        msm_buf_appendf(&info, "%surl=%s", n++ ? "," : "", url);
        if (c->x_info[i].valid) {
            msm_buf_appendf(&info, ";seq=%u;rtptime=%u", c->x_info[i].seq, c->x_info[i].ts);
        }
    }
    char *extra = msm_xmalloc(info.len + 256);
    int off = snprintf(extra, 200, "Range: %s\r\n", s->range ? s->range : "npt=0.000-");
    if (info.len) {
        memcpy(extra + off, "RTP-Info: ", 10);
        off += 10;
        msm_buf_copyout(&info, 0, extra + off, info.len);
        off += (int)info.len;
        memcpy(extra + off, "\r\n", 2);
        off += 2;
    }
    extra[off] = '\0';
    msm_buf_deinit(&info);
    set_playing(c, true);
    rtsp_client_activity(c);
    if (!c->latency_recorded) {
        c->latency_recorded = true;
        msm_stat_record(c->cfg->stats.setup_latency_ms,
                        (uint64_t)((ev_now(c->loop) - c->first_rq) * 1000.0));
    }
    rtsp_smetrics_setup_done(c->ms, ev_now(c->loop) - c->sess_rq);
    respond(c, m, 200, extra, NULL, 0, true);
    free(extra);
    return HANDLED;
}

/* TEARDOWN of a track URL (RFC 7826 §13.7, applied to 1.0 too): that track leaves the session,
 * which goes on with the others. False when the request is for the whole session (the
 * aggregate URL, an unknown one, or the last track). */
static bool teardown_track(struct rtsp_client *c, const struct msm_rtsp_msg *m)
{
    struct rtsp_source *s = c->src;
    struct msm_rtsp_url u, a;
    if (!s || msm_rtsp_url_parse(m->uri.p, m->uri.n, &u) < 0) {
        return false;
    }
    /* The aggregate: the URL the session was described with, or its Content-Base. */
    const char *aggs[2] = {s->url, s->base};
    for (int k = 0; k < 2; k++) {
        if (msm_rtsp_url_parse(aggs[k], strlen(aggs[k]), &a) < 0) {
            continue;
        }
        size_t al = a.path_len, ul = u.path_len;
        while (al > 1 && a.path[al - 1] == '/') {
            al--;
        }
        while (ul > 1 && u.path[ul - 1] == '/') {
            ul--;
        }
        if (al == ul && !memcmp(a.path, u.path, ul)) {
            return false;
        }
    }
    int idx = rtsp_source_find_track(s, m->uri.p, m->uri.n);
    if (idx < 0 || !c->st[idx].t) {
        return false;
    }
    int left = 0;
    for (int i = 0; i < RTSP_MAX_TRACKS; i++) {
        left += i != idx && c->st[i].t;
    }
    if (!left) {
        return false;
    }
    struct rtsp_subtrack *sub = &c->st[idx];
    if (sub->linked) {
        rtsp_track_unlink(sub->t, sub);
    }
    memset(sub, 0, sizeof(*sub));
    sub->c = c;
    if (s->remote) {
        rtsp_mirror_sub_remove(s, c, idx);
    }
    rtsp_client_activity(c);
    return true;
}

static void count_method(struct rtsp_client *c, enum msm_rtsp_method method)
{
    struct msm_rtsp_stats *st = &c->cfg->stats;
    struct msm_stat *s;
    switch (method) {
    case MSM_RTSP_M_OPTIONS: s = st->downstream_rq_options; break;
    case MSM_RTSP_M_DESCRIBE: s = st->downstream_rq_describe; break;
    case MSM_RTSP_M_SETUP: s = st->downstream_rq_setup; break;
    case MSM_RTSP_M_PLAY: s = st->downstream_rq_play; break;
    case MSM_RTSP_M_PAUSE: s = st->downstream_rq_pause; break;
    case MSM_RTSP_M_TEARDOWN: s = st->downstream_rq_teardown; break;
    case MSM_RTSP_M_GET_PARAMETER: s = st->downstream_rq_get_parameter; break;
    case MSM_RTSP_M_SET_PARAMETER: s = st->downstream_rq_set_parameter; break;
    case MSM_RTSP_M_ANNOUNCE: s = st->downstream_rq_announce; break;
    case MSM_RTSP_M_RECORD: s = st->downstream_rq_record; break;
    default: s = st->downstream_rq_other; break;
    }
    msm_stat_inc(s);
}

static enum handled do_method(struct rtsp_client *c, const struct msm_rtsp_msg *m)
{
    switch (m->method) {
    case MSM_RTSP_M_OPTIONS:
        if (session_ok(c, m)) {
            rtsp_client_activity(c);
        }
        respond(c, m, 200, "Public: " PUBLIC_METHODS "\r\n", NULL, 0, session_ok(c, m));
        return HANDLED;
    case MSM_RTSP_M_DESCRIBE:
        return do_describe(c, m);
    case MSM_RTSP_M_SETUP:
        return do_setup(c, m);
    case MSM_RTSP_M_PLAY:
        return do_play(c, m);
    case MSM_RTSP_M_PAUSE:
        if (!session_ok(c, m)) {
            return fail(c, m, 454);
        }
        set_playing(c, false);
        rtsp_client_activity(c);
        respond(c, m, 200, NULL, NULL, 0, true);
        return HANDLED;
    case MSM_RTSP_M_TEARDOWN:
        if (!session_ok(c, m)) {
            return fail(c, m, 454);
        }
        if (teardown_track(c, m)) {
            respond(c, m, 200, NULL, NULL, 0, true);
            return HANDLED;
        }
        session_end(c);
        respond(c, m, 200, NULL, NULL, 0, false);
        return HANDLED;
    case MSM_RTSP_M_GET_PARAMETER:
        if (msm_rtsp_session_id(m).n && !session_ok(c, m)) {
            return fail(c, m, 454);
        }
        rtsp_client_activity(c);
        respond(c, m, 200, NULL, NULL, 0, session_ok(c, m));
        return HANDLED;
    case MSM_RTSP_M_SET_PARAMETER:
        if (msm_rtsp_session_id(m).n && !session_ok(c, m)) {
            return fail(c, m, 454);
        }
        rtsp_client_activity(c);
        respond(c, m, m->body.n ? 451 : 200, NULL, NULL, 0, session_ok(c, m));
        return HANDLED;
    case MSM_RTSP_M_ANNOUNCE:
        return fail(c, m, 501); /* publishing through the proxy: not yet */
    case MSM_RTSP_M_RECORD:
        return fail(c, m, 501);
    default:
        return fail(c, m, 501);
    }
}

static enum handled handle_request(struct rtsp_client *c, const struct msm_rtsp_msg *m,
                                   bool rerun)
{
    uint32_t cseq;
    if (!rerun) {
        msm_stat_inc(c->cfg->stats.downstream_rq_total);
        count_method(c, m->method);
        c->fail_status = 0;
        c->xwait = RTSP_XW_NONE; /* an answer still on its way belongs to an older request */
        c->x_ready = false;
        if (!c->first_rq) {
            c->first_rq = ev_now(c->loop);
        }
        if (!c->sess_rq) {
            c->sess_rq = ev_now(c->loop);
        }
        rtsp_client_activity(c);
    }
    if (!msm_rtsp_cseq(m, &cseq)) {
        return fail(c, m, 400);
    }
    if (c->fail_status) {
        /* An upstream operation this request started failed: answer it now. */
        int status = c->fail_status;
        c->fail_status = 0;
        respond(c, m, status, c->fail_headers, NULL, 0, false);
        free(c->fail_headers);
        c->fail_headers = NULL;
        return HANDLED;
    }
    const struct msm_rtsp_hdr *pr = msm_rtsp_header(m, "Proxy-Require");
    if (pr) {
        char extra[300];
        snprintf(extra, sizeof(extra), "Unsupported: %.*s\r\n",
                 (int)(pr->value.n < 200 ? pr->value.n : 200), pr->value.p);
        respond(c, m, 551, extra, NULL, 0, false);
        return HANDLED;
    }
    return do_method(c, m);
}

/* Parse and serve what the client sent, in order, until a request has to wait. */
static void process(struct rtsp_client *c)
{
    bool rerun = c->head_waited; /* the head request is one that waited */
    c->head_waited = false;
    while (!c->closed && !c->waiting) {
        struct msm_conn *conn = conn_of(c);
        struct msm_buf *in = &conn->in;
        if (!in->len) {
            break;
        }
        size_t cap = c->cfg->limits.max_head + c->cfg->limits.max_body + 8;
        if (cap < 4 + 65535) {
            cap = 4 + 65535;
        }
        size_t want = in->len < cap ? in->len : cap;
        const char *d = msm_buf_linearize(in, want);
        struct msm_rtsp_msg m;
        uint8_t ch = 0;
        const uint8_t *pl = NULL;
        size_t pn = 0, total = 0;
        int rc = msm_rtsp_next(d, want, &c->cfg->limits, &m, &ch, &pl, &pn, &total);
        if (rc == MSM_RTSP_NEED_MORE) {
            break;
        }
        if (rc < 0) {
            int status = rc == MSM_RTSP_E_VERSION        ? 505
                         : rc == MSM_RTSP_E_BODY_TOO_BIG ? 413
                         : rc == MSM_RTSP_E_HEAD_TOO_BIG ? 431
                                                         : 400;
            msm_stat_inc(c->cfg->stats.downstream_rq_parse_error);
            msm_log(MSM_LOG_DEBUG, MSM_LC_RTSP, "[C%llu] rtsp: malformed request: %d",
                    conn->id, status);
            respond(c, NULL, status, NULL, NULL, 0, false);
            msm_buf_drain(in, in->len);
            msm_filter_close(c->h, MSM_CLOSE_FLUSH);
            return;
        }
        if (rc == MSM_RTSP_FRAME) {
            if (c->src) {
                rtsp_source_client_frame(c->src, c, ch, pl, pn);
            }
            rtsp_client_activity(c);
            msm_buf_drain(in, total);
            continue;
        }
        if (m.is_response) {
            msm_buf_drain(in, total); /* answers to requests we never send */
            continue;
        }
        if (handle_request(c, &m, rerun) == WAIT) {
            c->waiting = true;
            c->head_waited = true;
            break;
        }
        rerun = false;
        if (!c->closed) {
            msm_buf_drain(&conn_of(c)->in, total);
        }
    }
    if (c->closed) {
        return;
    }
    /* Back-pressure while waiting: stop reading past a bound, resume when done. */
    bool pause = c->waiting && conn_of(c)->in.len > MAX_BUFFERED_INPUT;
    if (pause != c->read_paused) {
        c->read_paused = pause;
        msm_filter_read_disable(c->h, pause);
    }
}

/* ---- filter callbacks -------------------------------------------------------------------- */

void *msm_rtsp_filter_new(void *config, struct msm_filter_handle *h)
{
    struct rtsp_client *c = MSM_NEW(struct rtsp_client);
    c->h = h;
    c->id = rtsp_new_id();
    c->cfg = config;
    c->loop = msm_filter_worker(h)->loop;
    for (int i = 0; i < RTSP_MAX_TRACKS; i++) {
        c->st[i].c = c;
    }
    ev_init(&c->session_timer, on_session_timeout);
    c->session_timer.repeat = c->cfg->session_timeout_ms / 1000.0;
    ev_init(&c->kick, on_kick);
    return c;
}

enum msm_filter_status msm_rtsp_on_new_connection(void *f)
{
    struct rtsp_client *c = f;
    struct msm_conn *conn = conn_of(c);
    /* The filters after us (tcp_proxy) never see this connection: we serve it. */
    msm_filter_take_over(c->h);
    msm_stat_inc(c->cfg->stats.downstream_cx_total);
    msm_stat_inc(c->cfg->stats.downstream_cx_active);
    struct sockaddr_storage local;
    socklen_t llen = sizeof(local);
    if (getsockname(conn->fd, (struct sockaddr *)&local, &llen) < 0) {
        local = conn->local.sa;
    }
    struct msm_address la;
    memset(&la, 0, sizeof(la));
    la.sa = local;
    la.len = llen;
    msm_address_ip_str(&la, c->local_ip, sizeof(c->local_ip));
    c->peer = conn->remote.sa;
    rtsp_client_activity(c); /* an idle connection times out like a session */
    /* IPv4-mapped peers are compared as IPv4 with media sockets. */
    if (c->peer.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&c->peer;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            struct sockaddr_in s4;
            memset(&s4, 0, sizeof(s4));
            s4.sin_family = AF_INET;
            memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
            s4.sin_port = s6->sin6_port;
            memset(&c->peer, 0, sizeof(c->peer));
            memcpy(&c->peer, &s4, sizeof(s4));
            if (!strncmp(c->local_ip, "::ffff:", 7)) {
                memmove(c->local_ip, c->local_ip + 7, strlen(c->local_ip + 7) + 1);
            }
        }
    }
    return MSM_FILTER_CONTINUE;
}

enum msm_filter_status msm_rtsp_on_data(void *f, struct msm_buf *data, bool end_stream)
{
    struct rtsp_client *c = f;
    (void)data;
    (void)end_stream;
    if (!c->waiting) {
        process(c);
    } else if (!c->read_paused && conn_of(c)->in.len > MAX_BUFFERED_INPUT) {
        c->read_paused = true;
        msm_filter_read_disable(c->h, true);
    }
    return MSM_FILTER_STOP;
}

void msm_rtsp_on_event(void *f, enum msm_conn_event ev)
{
    struct rtsp_client *c = f;
    (void)ev;
    if (c->closed) {
        return;
    }
    c->closed = true;
    ev_timer_stop(c->loop, &c->kick);
    session_end(c);
    msm_stat_dec(c->cfg->stats.downstream_cx_active);
}

void msm_rtsp_on_watermark(void *f, bool above)
{
    (void)f;
    (void)above; /* media to a backed-up client is dropped by size (rtsp_client_write_frames) */
}

void msm_rtsp_filter_free(void *f)
{
    struct rtsp_client *c = f;
    if (!c->closed) {
        /* Freed without a close event (session torn down before init): release anyway. */
        c->closed = true;
        session_end(c);
        msm_stat_dec(c->cfg->stats.downstream_cx_active);
    }
    ev_timer_stop(c->loop, &c->kick);
    ev_timer_stop(c->loop, &c->session_timer);
    rtsp_upeer_detach(c); /* the stream info is freed after us: no pointer into it may stay */
    free(c->cluster);
    free(c->fail_headers);
    free(c);
}
