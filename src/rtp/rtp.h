#pragma once
/* The RTP engine: what RTSP (and later SIP) relays need to move media over UDP on a worker loop.
 *
 * - Port pairs: RTP on an even port, RTCP on the next odd one (RFC 3550 §11), both bound, taken
 *   from a configured range shared by all workers. The kernel is the arbiter of what is free (a
 *   pair in use by anyone is skipped), so workers need no shared table, only a shared cursor.
 * - UDP sockets: non-blocking, read in batches with recvmmsg into per-thread slots, written in
 *   batches with sendmmsg. A socket belongs to one worker loop for life.
 * - Receiver statistics per SSRC after RFC 3550 A.1 (sequence validation), A.3 (loss) and A.8
 *   (interarrival jitter), and RTCP receiver reports built from them.
 * Nothing here blocks or allocates on the packet path.
 */
#include <ev.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* ---- port pairs ------------------------------------------------------------------------- */

struct msm_rtp_port_range {
    uint32_t start; /* even */
    uint32_t end;   /* exclusive */
    atomic_uint cursor; /* next pair index to try, shared by workers */
};

/* Initialize a range [start, end): <start> is rounded up to even. */
void msm_rtp_port_range_init(struct msm_rtp_port_range *r, uint32_t start, uint32_t end);
/* Number of pairs in the range. */
uint32_t msm_rtp_port_range_pairs(const struct msm_rtp_port_range *r);
/* Bind a fresh RTP/RTCP socket pair of <family> on the wildcard address, non-blocking and
 * close-on-exec. 0 with fds[0] (RTP, port *port), fds[1] (RTCP, port *port + 1); MSM_ELIMIT when
 * every pair of the range is taken; another negative errno on socket errors. The caller owns
 * the fds. */
int msm_rtp_pair_open(struct msm_rtp_port_range *r, int family, int fds[2], uint16_t *port);

/* ---- UDP sockets ------------------------------------------------------------------------ */

#define MSM_UDP_BATCH 32
#define MSM_UDP_MTU 2048

struct msm_udp_pkt {
    uint8_t *data;
    size_t len;
    struct sockaddr_storage from;
    socklen_t fromlen;
};

struct msm_udp_sock;
typedef void msm_udp_recv_fn(struct msm_udp_sock *s, struct msm_udp_pkt *pkts, int n);

struct msm_udp_sock {
    int fd; /* -1 when closed */
    struct ev_loop *loop;
    ev_io io;
    msm_udp_recv_fn *on_recv;
    void *ctx;
    void *slots; /* the loop's receive slots */
    uint64_t truncated; /* datagrams larger than MSM_UDP_MTU (dropped) */
};

/* Take ownership of <fd> and start reading: <on_recv> gets batches of up to MSM_UDP_BATCH
 * datagrams whose buffers are valid only during the call (per-loop slots; <loop> must come
 * from msm_loop_new). */
void msm_udp_sock_start(struct msm_udp_sock *s, struct ev_loop *loop, int fd,
                        msm_udp_recv_fn *on_recv, void *ctx);
/* Stop the watcher and close the fd (idempotent). */
void msm_udp_sock_close(struct msm_udp_sock *s);
/* sendmmsg all of <msgs>; returns how many were sent. A full socket buffer (EAGAIN) or a per-
 * destination error drops the rest of that datagram only, never blocks: the caller counts
 * <n> - return value as drops. */
int msm_udp_sendmmsg(int fd, struct mmsghdr *msgs, int n);
/* One datagram; 0 or -errno. */
int msm_udp_sendto(int fd, const void *p, size_t n, const struct sockaddr *to, socklen_t tolen);

/* Socket addresses (IPv4/IPv6) compared by IP and port, or by IP only. */
bool msm_sockaddr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
bool msm_sockaddr_ip_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
uint16_t msm_sockaddr_port(const struct sockaddr_storage *a);
void msm_sockaddr_set_port(struct sockaddr_storage *a, uint16_t port);
socklen_t msm_sockaddr_len(const struct sockaddr_storage *a);

/* ---- RTP / RTCP packets ----------------------------------------------------------------- */

/* Network-order 32-bit fields of RTP/RTCP headers. */
static inline uint32_t msm_rtp_rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void msm_rtp_wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

struct msm_rtp_hdr {
    uint8_t pt;
    bool marker;
    uint16_t seq;
    uint32_t ts;
    uint32_t ssrc;
};

/* Parse the fixed header of an RTP packet (version 2, CSRCs and extension within bounds). */
bool msm_rtp_parse(const uint8_t *p, size_t n, struct msm_rtp_hdr *h);
/* True for an RTCP packet (version 2, packet type 200..207 in the first header). */
bool msm_rtcp_is(const uint8_t *p, size_t n);

/* ---- RFC 3550 receiver statistics ------------------------------------------------------------ */

struct msm_rtp_rx {
    bool init;
    uint32_t ssrc;
    uint16_t max_seq;
    uint32_t cycles;
    uint32_t base_seq;
    uint32_t bad_seq;
    uint32_t probation;
    uint64_t received;
    uint64_t received_prior, expected_prior;
    uint64_t bytes;
    uint64_t reordered; /* packets that arrived after a later sequence number */
    uint64_t duplicates_or_late;
    /* jitter (A.8), in timestamp units scaled by 16 (as in the RFC's integer code) */
    uint32_t jitter_q4;
    int64_t transit;
    bool have_transit;
    uint32_t last_ts;
    double last_arrival;
    uint32_t clock_rate;
    /* last SR from this source: middle 32 bits of its NTP time and when it came (for LSR/DLSR) */
    uint32_t lsr;
    double lsr_arrival;
};

/* Account one packet of <len> bytes arriving at <now> (seconds). A new SSRC resets the state.
 * <clock_rate> 0 disables jitter (unknown payload clock). */
void msm_rtp_rx_update(struct msm_rtp_rx *s, const struct msm_rtp_hdr *h, size_t len, double now,
                       uint32_t clock_rate);
/* Cumulative lost packets (RFC 3550 A.3; negative with duplicates), and expected packets. */
int64_t msm_rtp_rx_lost(const struct msm_rtp_rx *s);
uint64_t msm_rtp_rx_expected(const struct msm_rtp_rx *s);
/* Interarrival jitter in timestamp units and in microseconds (0 when the clock is unknown). */
uint32_t msm_rtp_rx_jitter(const struct msm_rtp_rx *s);
uint64_t msm_rtp_rx_jitter_us(const struct msm_rtp_rx *s);
/* Note an RTCP SR from this source (LSR/DLSR of the next report). */
void msm_rtp_rx_note_sr(struct msm_rtp_rx *s, const uint8_t *p, size_t n, double now);

/* Build a compound RTCP packet RR (one report block for <s> when it has seen packets) + SDES
 * CNAME into <buf>; returns its length or 0 if <cap> is too small. Updates the interval counters
 * of <s> (fraction lost is per report interval). */
size_t msm_rtcp_build_rr(uint8_t *buf, size_t cap, uint32_t own_ssrc, const char *cname,
                         struct msm_rtp_rx *s, double now);
/* Sum of the "cumulative number of packets lost" of the report blocks in an RR/SR compound
 * packet, and the highest interarrival jitter; false when it carries no report block. */
bool msm_rtcp_report_summary(const uint8_t *p, size_t n, int64_t *lost, uint32_t *jitter);

/* ---- RTCP feedback and retransmissions (rtcp.c) ------------------------------------------ */

/* What an RTCP compound packet says, for statistics: its SR/RR report blocks (RFC 3550 §6.4)
 * and its generic NACKs (RFC 4585 §6.2.1: PT 205, FMT 1; each FCI asks for its PID and for
 * every bit set in its BLP). */
struct msm_rtcp_summary {
    bool sr;               /* a sender report */
    int reports;           /* report blocks */
    int64_t lost;          /* sum of their cumulative number of packets lost (24-bit signed) */
    uint8_t fraction;      /* highest fraction lost, in 1/256 */
    uint32_t jitter;       /* highest interarrival jitter, in timestamp units */
    int nacks;             /* generic NACK FCI entries */
    uint32_t nack_packets; /* packets they request */
};

/* Walk the compound packet <p> of <n> bytes (at most 64 sub-packets; a sub-packet whose header
 * or length does not fit what is there ends the walk, padding is honoured). False (and an empty
 * summary) when <p> is not RTCP. Never reads outside [p, p + n). */
bool msm_rtcp_summarize(const uint8_t *p, size_t n, struct msm_rtcp_summary *out);
/* Copy the generic NACK packets of compound <p> into <out> (at most <cap> bytes), each with its
 * packet-sender SSRC replaced by <own_ssrc> and without padding: a relay that terminates RTCP
 * per leg re-issues the feedback as its own. Returns the bytes written (0: none). */
size_t msm_rtcp_copy_nacks(const uint8_t *p, size_t n, uint32_t own_ssrc, uint8_t *out,
                           size_t cap);

/* A set of RTP payload types (0..127), e.g. those an SDP maps to "rtx" (RFC 4588). */
struct msm_rtp_pt_set {
    uint8_t bits[16];
};
bool msm_rtp_pt_set_has(const struct msm_rtp_pt_set *set, uint8_t pt);
void msm_rtp_pt_set_add(struct msm_rtp_pt_set *set, int pt); /* ignores values out of range */
bool msm_rtp_pt_set_empty(const struct msm_rtp_pt_set *set);
/* How many of the <n> RTP packets of <pk> have a payload type in <set>. */
size_t msm_rtp_count_pt(const struct msm_rtp_pt_set *set, const struct msm_udp_pkt *pk, int n);
