/* The media relay of the RTSP proxy: packets from the server (UDP pair or interleaved frames)
 * go through receiver statistics to every playing subscriber of the track (UDP ones of every
 * worker from the hub's shared socket pair; interleaved ones of other workers through their
 * handoff ring, rtsp_xworker.c); packets from subscribers (RTCP, NAT hole punches) keep their
 * sessions alive and teach their real addresses; receiver reports go to the server (RTCP
 * terminated per leg). RTCP multiplexed on the RTP port (RFC 5761) is told apart by its packet
 * type on both legs. All on the source's worker loop; nothing here waits.
 */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "event/deferred.h"
#include "filters/network/rtsp_proxy/rtsp_private.h"

#define FANOUT_MSGS 1024
#define NACK_FORWARD_PER_S 50 /* per track: re-issued NACK packets, the rest are dropped */

/* ---- downstream sockets -------------------------------------------------------------------- */

static void udp_dn_rtp(struct msm_udp_sock *u, struct msm_udp_pkt *pk, int n);
static void udp_dn_rtcp(struct msm_udp_sock *u, struct msm_udp_pkt *pk, int n);

int rtsp_track_open_downstream(struct rtsp_track *t, int family)
{
    if (t->dn_rtp.fd >= 0) {
        return 0;
    }
    struct rtsp_source *s = t->src;
    int fds[2];
    int rc = msm_rtp_pair_open(&s->cfg->ports, family, fds, &t->dn_port);
    if (rc < 0) {
        if (rc == MSM_ELIMIT) {
            msm_stat_inc(s->cfg->stats.rtp_port_exhausted);
            msm_log(MSM_LOG_WARN, MSM_LC_RTSP, "rtsp: rtp_port_range [%u, %u) exhausted: "
                    "answering 453", s->cfg->ports.start, s->cfg->ports.end);
            return 453;
        }
        return 500;
    }
    msm_udp_sock_start(&t->dn_rtp, s->loop, fds[0], udp_dn_rtp, t);
    msm_udp_sock_start(&t->dn_rtcp, s->loop, fds[1], udp_dn_rtcp, t);
    return 0;
}

void rtsp_track_link(struct rtsp_track *t, struct rtsp_subtrack *st)
{
    if (st->linked) {
        return;
    }
    st->linked = true;
    st->prev = NULL;
    st->next = t->subs;
    if (t->subs) {
        t->subs->prev = st;
    }
    t->subs = st;
    t->n_subs++;
    t->fan_dirty = true;
    if (t->src->sstats && t->idx == 0) {
        msm_stat_inc(t->src->sstats->subscribers);
    }
    if (t->idx == 0 && t->src->ms && t->src->ms->has_stats) {
        msm_stat_inc(t->src->ms->ust.subscribers);
    }
}

void rtsp_track_unlink(struct rtsp_track *t, struct rtsp_subtrack *st)
{
    if (!st->linked) {
        return;
    }
    if (st->prev) {
        st->prev->next = st->next;
    } else {
        t->subs = st->next;
    }
    if (st->next) {
        st->next->prev = st->prev;
    }
    st->next = st->prev = NULL;
    st->linked = false;
    t->n_subs--;
    t->fan_dirty = true;
    if (t->src->sstats && t->idx == 0) {
        msm_stat_dec(t->src->sstats->subscribers);
    }
    if (t->idx == 0 && t->src->ms && t->src->ms->has_stats) {
        msm_stat_dec(t->src->ms->ust.subscribers);
    }
}

/* Scratch for fan-out sends, one per worker loop (freed with it). */
struct fan_scratch {
    struct mmsghdr msg[FANOUT_MSGS];
    struct iovec iov[FANOUT_MSGS];
    struct rtsp_smetrics *dms[FANOUT_MSGS]; /* session of each destination of a send */
};

static const char fan_key;

static void *fan_create(struct ev_loop *loop)
{
    (void)loop;
    return msm_xcalloc(1, sizeof(struct fan_scratch));
}

struct fan_acc {
    uint64_t bytes, sent, dropped;
};

static void fan_rebuild(struct rtsp_track *t)
{
    t->fan_dirty = false;
    t->n_fan = 0;
    for (struct rtsp_subtrack *sub = t->subs; sub; sub = sub->next) {
        if (sub->tcp) {
            continue;
        }
        if (t->n_fan == t->cap_fan) {
            size_t cap = (size_t)t->cap_fan;
            t->fan = msm_xgrow(t->fan, sizeof(*t->fan), &cap, cap + 1);
            t->cap_fan = (int)cap;
        }
        struct rtsp_dst *d = &t->fan[t->n_fan++];
        d->len = msm_sockaddr_len(&sub->rtp_to);
        memcpy(&d->a, &sub->rtp_to, d->len <= sizeof(d->a) ? d->len : sizeof(d->a));
        d->ms = sub->ms && sub->ms->has_stats ? sub->ms : NULL;
    }
}

/* What one send of a fan-out carries: <n> packets (<bytes> bytes, <rtx> of them RTX) per
 * destination. */
struct fan_batch {
    struct msm_udp_pkt *pk;
    int n;
    size_t bytes;
    size_t rtx;
    bool rtcp;
    const struct rtsp_track *t;
};

/* sendmmsg the <k> messages for the <nd> destinations in <f> (each <b>->n of them, in order),
 * and count what each destination's session got: a full socket buffer ends a send, so what went
 * out is a prefix of the messages. */
static void fan_send(struct fan_scratch *f, int fd, int k, int nd, const struct fan_batch *b,
                     struct fan_acc *acc)
{
    int ok = msm_udp_sendmmsg(fd, f->msg, k);
    acc->sent += (uint64_t)ok;
    acc->dropped += (uint64_t)(k - ok);
    for (int j = 0; j < nd && ok > 0; j++, ok -= b->n) {
        struct rtsp_smetrics *m = f->dms[j];
        if (!m) {
            continue;
        }
        if (ok >= b->n) {
            rtsp_smetrics_tx(m, b->rtcp, (uint64_t)b->n, b->bytes, b->rtx);
            continue;
        }
        size_t bytes = 0;
        for (int i = 0; i < ok; i++) {
            bytes += b->pk[i].len;
        }
        size_t rtx = b->rtx ? msm_rtp_count_pt(&b->t->rtx, b->pk, ok) : 0;
        rtsp_smetrics_tx(m, b->rtcp, (uint64_t)ok, bytes, rtx);
    }
}

/* RTP to every UDP subscriber of <t> from socket <fd>, in sendmmsg batches of FANOUT_MSGS. */
static void fan_udp_rtp(struct fan_scratch *f, struct rtsp_track *t, int fd,
                        const struct fan_batch *b, struct fan_acc *acc)
{
    if (t->fan_dirty) {
        fan_rebuild(t);
    }
    struct msm_udp_pkt *pk = b->pk;
    int n = b->n;
    int k = 0, nd = 0;
    for (int d = 0; d < t->n_fan; d++) {
        struct rtsp_dst *to = &t->fan[d];
        f->dms[nd++] = to->ms;
        for (int i = 0; i < n; i++) {
            struct mmsghdr *m = &f->msg[k];
            f->iov[k].iov_base = pk[i].data;
            f->iov[k].iov_len = pk[i].len;
            memset(&m->msg_hdr, 0, sizeof(m->msg_hdr));
            m->msg_hdr.msg_name = &to->a;
            m->msg_hdr.msg_namelen = to->len;
            m->msg_hdr.msg_iov = &f->iov[k];
            m->msg_hdr.msg_iovlen = 1;
            k++;
        }
        acc->bytes += b->bytes;
        if (k + n > FANOUT_MSGS) {
            fan_send(f, fd, k, nd, b, acc);
            k = nd = 0;
        }
    }
    if (k) {
        fan_send(f, fd, k, nd, b, acc);
    }
}

/* RTCP (rare: sender reports) to the UDP subscribers of <t> from socket <fd>: to their RTCP
 * address (<mux> false) or, for those that multiplex, to their RTP address from the RTP socket
 * (<mux> true). */
static void fan_udp_rtcp(struct fan_scratch *f, struct rtsp_track *t, int fd, bool mux,
                         const struct fan_batch *b, struct fan_acc *acc)
{
    struct msm_udp_pkt *pk = b->pk;
    int n = b->n;
    int k = 0, nd = 0;
    for (struct rtsp_subtrack *sub = t->subs; sub; sub = sub->next) {
        if (sub->tcp || sub->rtcp_mux != mux) {
            continue;
        }
        f->dms[nd++] = sub->ms && sub->ms->has_stats ? sub->ms : NULL;
        struct sockaddr_storage *to = mux ? &sub->rtp_to : &sub->rtcp_to;
        socklen_t tolen = msm_sockaddr_len(to);
        for (int i = 0; i < n; i++) {
            struct mmsghdr *m = &f->msg[k];
            f->iov[k].iov_base = pk[i].data;
            f->iov[k].iov_len = pk[i].len;
            memset(&m->msg_hdr, 0, sizeof(m->msg_hdr));
            m->msg_hdr.msg_name = to;
            m->msg_hdr.msg_namelen = tolen;
            m->msg_hdr.msg_iov = &f->iov[k];
            m->msg_hdr.msg_iovlen = 1;
            k++;
        }
        acc->bytes += b->bytes;
        if (k + n > FANOUT_MSGS) {
            fan_send(f, fd, k, nd, b, acc);
            k = nd = 0;
        }
    }
    if (k) {
        fan_send(f, fd, k, nd, b, acc);
    }
}

/* An interleaved late joiner of a mirror starts at the packet RTP-Info announced: the ring may
 * still hold a few older ones (queued for the worker's other subscribers). Index of the first
 * packet to send in <pk>. */
static int first_to_send(struct rtsp_subtrack *sub, const struct msm_udp_pkt *pk, int n)
{
    int i = 0;
    for (; i < n; i++) {
        uint16_t seq = pk[i].len >= 4 ? (uint16_t)(pk[i].data[2] << 8 | pk[i].data[3]) : 0;
        uint16_t behind = (uint16_t)(sub->start_seq - seq);
        if (behind == 0 || behind > 512) {
            break; /* the announced one, a later one, or something unrelated: start here */
        }
    }
    if (i < n) {
        sub->await_start = false;
    }
    return i;
}

/* Send <n> packets to every playing subscriber of <t>: UDP ones in sendmmsg batches from the
 * track's shared downstream socket, interleaved ones as one write per subscriber and batch,
 * interleaved ones of other workers through their rings. A subscriber whose buffer is full
 * loses these packets; nobody waits. */
void rtsp_track_fan_out(struct rtsp_track *t, struct msm_udp_pkt *pk, int n, bool rtcp)
{
    struct rtsp_source *s = t->src;
    struct msm_rtsp_stats *st = &s->cfg->stats;
    struct fan_scratch *f = msm_loop_local(s->loop, &fan_key, fan_create, free);
    struct fan_acc acc = {0, 0, 0};
    struct fan_batch b = {.pk = pk, .n = n, .rtcp = rtcp, .t = t};
    for (int i = 0; i < n; i++) {
        b.bytes += pk[i].len;
    }
    if (!rtcp && !msm_rtp_pt_set_empty(&t->rtx)) {
        b.rtx = msm_rtp_count_pt(&t->rtx, pk, n);
    }
    if (!rtcp && t->dn_rtp.fd >= 0) {
        fan_udp_rtp(f, t, t->dn_rtp.fd, &b, &acc);
    } else if (rtcp) {
        if (t->dn_rtcp.fd >= 0) {
            fan_udp_rtcp(f, t, t->dn_rtcp.fd, false, &b, &acc);
        }
        if (t->dn_rtp.fd >= 0) {
            fan_udp_rtcp(f, t, t->dn_rtp.fd, true, &b, &acc);
        }
    }
    /* Interleaved subscribers: writing may close a client (and unlink it) under our feet, so
     * the next pointer is taken first; a client only ever unlinks its own subtrack here. */
    struct rtsp_subtrack *next;
    for (struct rtsp_subtrack *sub = t->subs; sub; sub = next) {
        next = sub->next;
        if (!sub->tcp) {
            continue;
        }
        int first = sub->await_start && !rtcp ? first_to_send(sub, pk, n) : 0;
        if (first == n) {
            continue;
        }
        struct msm_buf frames;
        msm_buf_init(&frames);
        size_t bytes = 0;
        for (int i = first; i < n; i++) {
            uint8_t hdr[4] = {'$', sub->ch[rtcp ? 1 : 0], (uint8_t)(pk[i].len >> 8),
                              (uint8_t)pk[i].len};
            msm_buf_append(&frames, hdr, 4);
            msm_buf_append(&frames, pk[i].data, pk[i].len);
            bytes += pk[i].len;
        }
        if (rtsp_client_write_frames(sub->c, &frames)) {
            acc.sent += (uint64_t)(n - first);
            acc.bytes += bytes;
            size_t rtx = !b.rtx ? 0 : first ? msm_rtp_count_pt(&t->rtx, pk + first, n - first)
                                            : b.rtx;
            rtsp_smetrics_tx(sub->ms, rtcp, (uint64_t)(n - first), bytes, rtx);
        } else {
            sub->drops += (uint64_t)(n - first);
            msm_stat_add(st->rtp_dropped_slow_subscriber, (uint64_t)(n - first));
        }
        msm_buf_deinit(&frames);
    }
    if (s->n_peers) {
        rtsp_hub_handoff(t, pk, n, rtcp);
    }
    if (acc.dropped) {
        msm_stat_add(st->rtp_dropped_send_error, acc.dropped);
    }
    if (acc.sent) {
        if (rtcp) {
            msm_stat_add(st->downstream_rtcp_tx_packets, acc.sent);
        } else {
            msm_stat_add(st->downstream_rtp_tx_packets, acc.sent);
            msm_stat_add(st->downstream_rtp_tx_bytes, acc.bytes);
            if (s->sstats) {
                msm_stat_add(s->sstats->rtp_tx_packets, acc.sent);
                msm_stat_add(s->sstats->rtp_tx_bytes, acc.bytes);
            }
        }
    }
}

struct rtsp_seqinfo rtsp_track_next_info(const struct rtsp_track *t)
{
    struct rtsp_seqinfo i = {false, 0, 0};
    if (t->have_last) {
        i.valid = true;
        i.seq = (uint16_t)(t->last_seq + 1);
        i.ts = t->last_ts;
    } else if (t->have_info) {
        i.valid = true;
        i.seq = t->info_seq;
        i.ts = t->info_ts;
    }
    return i;
}

bool rtsp_is_muxed_rtcp(const uint8_t *p, size_t n)
{
    return n >= 8 && (p[0] >> 6) == 2 && p[1] >= 192 && p[1] <= 223;
}

/* Media from the server for track <t> (already checked to come from the right peer). */
void rtsp_track_media(struct rtsp_track *t, struct msm_udp_pkt *pk, int n, bool rtcp)
{
    struct rtsp_source *s = t->src;
    struct msm_rtsp_stats *st = &s->cfg->stats;
    double now = ev_now(s->loop);
    if (rtcp) {
        uint64_t rbytes = 0;
        for (int i = 0; i < n; i++) {
            rbytes += pk[i].len;
            if (pk[i].len >= 8 && pk[i].data[1] == 200) {
                msm_rtp_rx_note_sr(&t->rx, pk[i].data, pk[i].len, now);
            }
            struct msm_rtcp_summary sum;
            if (msm_rtcp_summarize(pk[i].data, pk[i].len, &sum) && sum.nack_packets) {
                /* The server asks for retransmissions (of what we never send it): counted. */
                msm_stat_add(st->retransmissions_requested, sum.nack_packets);
                if (s->sstats) {
                    msm_stat_add(s->sstats->retransmissions_requested, sum.nack_packets);
                }
                rtsp_smetrics_feedback(s->ms, t->idx, t->clock_rate, &sum);
            }
        }
        msm_stat_add(st->upstream_rtcp_rx_packets, (uint64_t)n);
        rtsp_smetrics_rx(s->ms, true, (uint64_t)n, rbytes, 0);
        /* Translator behaviour (RFC 3550 §7): sender reports go on to the subscribers, who
         * need them for synchronization; receiver feedback is terminated per leg. */
        rtsp_track_fan_out(t, pk, n, true);
        return;
    }
    int k = 0;
    uint64_t bytes = 0, rtx = 0;
    bool has_rtx = !msm_rtp_pt_set_empty(&t->rtx);
    for (int i = 0; i < n; i++) {
        struct msm_rtp_hdr h;
        if (!msm_rtp_parse(pk[i].data, pk[i].len, &h)) {
            msm_stat_inc(st->rtp_dropped_malformed);
            continue;
        }
        if (has_rtx && msm_rtp_pt_set_has(&t->rtx, h.pt)) {
            /* A retransmission (RFC 4588: its own SSRC and sequence numbers): relayed, but kept
             * out of the media stream's statistics and RTP-Info. */
            rtx++;
        } else {
            msm_rtp_rx_update(&t->rx, &h, pk[i].len, now, t->clock_rate);
            t->have_last = true;
            t->last_seq = h.seq;
            t->last_ts = h.ts;
            if (!t->have_ssrc) {
                t->have_ssrc = true;
                t->ssrc = h.ssrc;
            }
        }
        bytes += pk[i].len;
        if (k != i) {
            pk[k] = pk[i];
        }
        k++;
    }
    if (!k) {
        return;
    }
    msm_stat_add(st->upstream_rtp_rx_packets, (uint64_t)k);
    msm_stat_add(st->upstream_rtp_rx_bytes, bytes);
    if (s->sstats) {
        msm_stat_add(s->sstats->rtp_packets, (uint64_t)k);
        msm_stat_add(s->sstats->rtp_bytes, bytes);
    }
    if (rtx) {
        msm_stat_add(st->retransmitted_packets, rtx);
        if (s->sstats) {
            msm_stat_add(s->sstats->retransmitted_packets, rtx);
        }
    }
    rtsp_smetrics_rx(s->ms, false, (uint64_t)k, bytes, rtx);
    rtsp_track_fan_out(t, pk, k, false);
}

/* Only packets from the server's address count; the first one fixes its port (NAT). */
static int upstream_filter(struct rtsp_track *t, struct msm_udp_pkt *pk, int n,
                           struct sockaddr_storage *peer, bool *latched)
{
    struct rtsp_source *s = t->src;
    int k = 0;
    for (int i = 0; i < n; i++) {
        bool ok;
        if (*latched) {
            ok = msm_sockaddr_eq(&pk[i].from, peer);
        } else {
            ok = s->host && msm_sockaddr_ip_eq(&pk[i].from, &s->host->addr.sa);
            if (ok) {
                *peer = pk[i].from;
                *latched = true;
            }
        }
        if (!ok) {
            msm_stat_inc(s->cfg->stats.rtp_dropped_strangers);
            continue;
        }
        if (k != i) {
            pk[k] = pk[i];
        }
        k++;
    }
    return k;
}

void rtsp_relay_up_rtp(struct msm_udp_sock *u, struct msm_udp_pkt *pk, int n)
{
    struct rtsp_track *t = u->ctx;
    n = upstream_filter(t, pk, n, &t->up_rtp_peer, &t->up_rtp_latched);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (rtsp_is_muxed_rtcp(pk[i].data, pk[i].len)) {
            rtsp_track_media(t, &pk[i], 1, true); /* a server multiplexing RTCP (RFC 5761) */
            continue;
        }
        if (k != i) {
            pk[k] = pk[i];
        }
        k++;
    }
    if (k) {
        rtsp_track_media(t, pk, k, false);
    }
}

void rtsp_relay_up_rtcp(struct msm_udp_sock *u, struct msm_udp_pkt *pk, int n)
{
    struct rtsp_track *t = u->ctx;
    n = upstream_filter(t, pk, n, &t->up_rtcp_peer, &t->up_rtcp_latched);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!msm_rtcp_is(pk[i].data, pk[i].len)) {
            msm_stat_inc(t->src->cfg->stats.rtp_dropped_malformed);
            continue;
        }
        pk[k++] = pk[i];
    }
    if (k) {
        rtsp_track_media(t, pk, k, true);
    }
}

/* An RTCP packet from a subscriber of <t> (session metrics <ms>, may be NULL): its receiver
 * report (the loss it sees) and its generic NACKs, counted per prefix, stream and session;
 * the NACKs go on to the server when it takes them. */
static void subscriber_rtcp(struct rtsp_track *t, struct rtsp_smetrics *ms, const uint8_t *p,
                            size_t n)
{
    struct rtsp_source *s = t->src;
    struct msm_rtsp_stats *st = &s->cfg->stats;
    struct msm_rtcp_summary sum;
    msm_stat_inc(st->downstream_rtcp_rx_packets);
    rtsp_smetrics_rx(ms, true, 1, n, 0);
    if (!msm_rtcp_summarize(p, n, &sum)) {
        return;
    }
    if (sum.reports && sum.lost >= 0) {
        msm_stat_set(st->downstream_rtcp_reported_lost, (uint64_t)sum.lost);
    }
    rtsp_smetrics_feedback(ms, t->idx, t->clock_rate, &sum);
    if (!sum.nack_packets) {
        return;
    }
    msm_stat_add(st->retransmissions_requested, sum.nack_packets);
    if (s->sstats) {
        msm_stat_add(s->sstats->retransmissions_requested, sum.nack_packets);
    }
    rtsp_track_forward_nacks(t, p, n);
}

/* Is <sub> (set up on <t>, UDP) the sender of a packet from <from>? Exact address: yes; an
 * unheard-of port from its IP: a candidate. */
static bool sub_matches(struct rtsp_subtrack *sub, const struct sockaddr_storage *ip,
                        const struct sockaddr_storage *from, bool rtcp, bool *cand)
{
    struct sockaddr_storage *to = rtcp ? &sub->rtcp_to : &sub->rtp_to;
    if (msm_sockaddr_eq(to, from)) {
        return true;
    }
    bool latched = rtcp ? sub->rtcp_latched : sub->rtp_latched;
    *cand = !latched && msm_sockaddr_ip_eq(ip, from);
    return false;
}

/* Which subscriber of <t> (a client of this worker or, for a hub, of another) sent this? Exact
 * address first; else learn it for the one subscriber from that IP that has not been heard from
 * (a client behind NAT); else nobody. */
static struct rtsp_subtrack *match_sub(struct rtsp_track *t, const struct sockaddr_storage *from,
                                       bool rtcp)
{
    struct rtsp_subtrack *cand = NULL;
    int ncand = 0;
    bool is_cand;
    for (struct rtsp_client *c = t->src->clients; c; c = c->bnext) {
        struct rtsp_subtrack *sub = &c->st[t->idx];
        if (sub->t != t || sub->tcp) {
            continue;
        }
        if (sub_matches(sub, &c->peer, from, rtcp, &is_cand)) {
            return sub;
        }
        if (is_cand) {
            cand = sub;
            ncand++;
        }
    }
    for (struct rtsp_peer *p = t->src->peers; p; p = p->next) {
        for (struct rtsp_subtrack *sub = p->subs; sub; sub = sub->rnext) {
            if (sub->t != t || sub->tcp) {
                continue;
            }
            if (sub_matches(sub, &sub->peer_ip, from, rtcp, &is_cand)) {
                return sub;
            }
            if (is_cand) {
                cand = sub;
                ncand++;
            }
        }
    }
    return ncand == 1 ? cand : NULL;
}

/* Packets from subscribers on the downstream RTP (<on_rtcp> false) or RTCP socket of <t>. */
static void downstream_in(struct rtsp_track *t, struct msm_udp_pkt *pk, int n, bool on_rtcp)
{
    struct rtsp_source *s = t->src;
    for (int i = 0; i < n; i++) {
        struct rtsp_subtrack *sub = match_sub(t, &pk[i].from, on_rtcp);
        if (!sub) {
            msm_stat_inc(s->cfg->stats.rtp_dropped_strangers);
            continue;
        }
        if (on_rtcp) {
            if (!sub->rtcp_latched) {
                sub->rtcp_to = pk[i].from;
                sub->rtcp_latched = true;
            }
        } else if (!sub->rtp_latched) {
            sub->rtp_to = pk[i].from; /* a hole punch from the client: its real address */
            sub->rtp_latched = true;
            t->fan_dirty = true;
            if (sub->rtcp_mux) {
                sub->rtcp_to = pk[i].from;
                sub->rtcp_latched = true;
            }
        }
        bool is_rtcp = on_rtcp ? msm_rtcp_is(pk[i].data, pk[i].len)
                               : rtsp_is_muxed_rtcp(pk[i].data, pk[i].len);
        if (is_rtcp) {
            subscriber_rtcp(t, sub->ms, pk[i].data, pk[i].len);
        } else {
            rtsp_smetrics_rx(sub->ms, false, 1, pk[i].len, 0); /* a hole punch, or media */
        }
        if (sub->c) {
            rtsp_client_activity(sub->c);
        } else {
            rtsp_hub_remote_activity(s, sub);
        }
    }
}

static void udp_dn_rtp(struct msm_udp_sock *u, struct msm_udp_pkt *pk, int n)
{
    downstream_in(u->ctx, pk, n, false);
}

static void udp_dn_rtcp(struct msm_udp_sock *u, struct msm_udp_pkt *pk, int n)
{
    downstream_in(u->ctx, pk, n, true);
}

void rtsp_source_client_frame(struct rtsp_source *s, struct rtsp_client *c, uint8_t ch,
                              const uint8_t *p, size_t n)
{
    for (int i = 0; i < s->n_tracks; i++) {
        struct rtsp_subtrack *sub = &c->st[i];
        if (sub->t && sub->tcp && ch == sub->ch[1] && msm_rtcp_is(p, n)) {
            subscriber_rtcp(sub->t, c->ms, p, n);
            return;
        }
        if (sub->t && sub->tcp && ch == sub->ch[0]) {
            rtsp_smetrics_rx(c->ms, false, 1, n, 0);
            return;
        }
    }
}

/* An RTCP packet of ours to the server's RTCP address of <t> (interleaved on the control
 * connection, or UDP to the latched or announced port). True when it went out. */
static bool send_up_rtcp(struct rtsp_source *s, struct rtsp_track *t, const uint8_t *buf,
                         size_t n)
{
    if (t->up_tcp) {
        if (!s->up) {
            return false;
        }
        struct msm_buf b;
        msm_buf_init(&b);
        uint8_t hdr[4] = {'$', t->up_ch[1], (uint8_t)(n >> 8), (uint8_t)n};
        msm_buf_append(&b, hdr, 4);
        msm_buf_append(&b, buf, n);
        rtsp_source_up_write(s, &b);
        msm_buf_deinit(&b);
    } else if (t->up_rtcp.fd >= 0 && s->host) {
        struct sockaddr_storage to;
        if (t->up_rtcp_latched) {
            to = t->up_rtcp_peer;
        } else if (t->has_server_port) {
            to = s->host->addr.sa;
            msm_sockaddr_set_port(&to, t->server_port[1]);
        } else {
            return false;
        }
        if (msm_udp_sendto(t->up_rtcp.fd, buf, n, (struct sockaddr *)&to, msm_sockaddr_len(&to)) <
            0) {
            return false;
        }
    } else {
        return false;
    }
    msm_stat_inc(s->cfg->stats.upstream_rtcp_tx_packets);
    rtsp_smetrics_tx(s->ms, true, 1, n, 0);
    return true;
}

/* The upstream session's loss (sum over its tracks) and jitter (the worst track's). */
static void session_loss(struct rtsp_source *s)
{
    if (!s->ms || !s->ms->has_stats) {
        return;
    }
    int64_t lost = 0;
    uint64_t jitter = 0;
    for (int i = 0; i < s->n_tracks; i++) {
        const struct rtsp_track *t = &s->tracks[i];
        int64_t l = msm_rtp_rx_lost(&t->rx);
        uint64_t j = msm_rtp_rx_jitter_us(&t->rx);
        lost += l > 0 ? l : 0;
        jitter = j > jitter ? j : jitter;
    }
    msm_stat_set(s->ms->ust.rtp_lost, (uint64_t)lost);
    msm_stat_set(s->ms->ust.jitter_us, jitter);
}

/* Our receiver report to the server for <t> (RTCP terminated per leg), and the loss/jitter
 * stats of the upstream leg. */
void rtsp_track_send_rr(struct rtsp_source *s, struct rtsp_track *t)
{
    uint8_t buf[256];
    double now = ev_now(s->loop);
    int64_t lost = msm_rtp_rx_lost(&t->rx);
    if (lost > t->lost_counted) {
        msm_stat_add(s->cfg->stats.upstream_rtp_lost, (uint64_t)(lost - t->lost_counted));
        if (s->sstats) {
            msm_stat_add(s->sstats->rtp_lost, (uint64_t)(lost - t->lost_counted));
        }
        t->lost_counted = lost;
    }
    uint64_t jus = msm_rtp_rx_jitter_us(&t->rx);
    msm_stat_set(s->cfg->stats.upstream_rtp_jitter_us, jus);
    if (s->sstats) {
        msm_stat_set(s->sstats->jitter_us, jus);
    }
    session_loss(s);
    size_t n = msm_rtcp_build_rr(buf, sizeof(buf), s->own_ssrc, s->cname, &t->rx, now);
    if (n) {
        send_up_rtcp(s, t, buf, n);
    }
}

void rtsp_track_forward_nacks(struct rtsp_track *t, const uint8_t *p, size_t n)
{
    struct rtsp_source *s = t->src;
    if (s->remote || s->dead || !t->nack_ok || t->state != RTSP_TRACK_READY) {
        return; /* a mirror's client (its hub's worker would have to do it), or no taker */
    }
    double now = ev_now(s->loop);
    if (now - t->nack_window >= 1.0) {
        t->nack_window = now;
        t->nack_in_window = 0;
    }
    if (t->nack_in_window >= NACK_FORWARD_PER_S) {
        msm_stat_inc(s->cfg->stats.rtcp_nack_rate_limited);
        return;
    }
    /* A compound of ours: an empty RR and our SDES (no report block, so the RR interval of
     * <rx> is untouched), then the subscriber's NACKs re-issued under our SSRC. */
    uint8_t buf[1500];
    size_t k = msm_rtcp_build_rr(buf, sizeof(buf), s->own_ssrc, s->cname, NULL, now);
    size_t nk = k ? msm_rtcp_copy_nacks(p, n, s->own_ssrc, buf + k, sizeof(buf) - k) : 0;
    if (!nk) {
        return;
    }
    t->nack_in_window++;
    if (send_up_rtcp(s, t, buf, k + nk)) {
        msm_stat_inc(s->cfg->stats.rtcp_nack_forwarded);
    }
}
