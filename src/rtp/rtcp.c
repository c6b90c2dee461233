/* RTCP compound packets as a relay reads them (see rtp.h): the report blocks of SR/RR (RFC 3550
 * §6.4), generic NACK feedback (RFC 4585 §6.2.1) and RTX packets (RFC 4588). Every length comes
 * from the network: each sub-packet is checked against the bytes that are really there, and a
 * walk stops at the first one that is not (the rest of a compound cannot be trusted then). */
#include <string.h>

#include "rtp/rtp.h"

#define RTCP_SR 200
#define RTCP_RR 201
#define RTCP_RTPFB 205
#define RTPFB_GENERIC_NACK 1
#define MAX_SUBPACKETS 64

/* One sub-packet of a compound: its bytes and the length of its content without padding.
 * False when the header or the length is not sound. */
struct sub {
    const uint8_t *h;
    size_t len;     /* whole sub-packet, header included */
    size_t content; /* without RFC 3550 padding (P bit: the last byte counts the pad) */
};

static bool sub_at(const uint8_t *p, size_t n, size_t off, struct sub *s)
{
    if (off + 4 > n) {
        return false;
    }
    const uint8_t *h = p + off;
    if ((h[0] >> 6) != 2) {
        return false;
    }
    size_t len = 4 * (((size_t)h[2] << 8 | h[3]) + 1);
    if (len > n - off) {
        return false;
    }
    size_t content = len;
    if (h[0] & 0x20) {
        size_t pad = h[len - 1];
        if (!pad || pad > len - 4) {
            return false;
        }
        content = len - pad;
    }
    s->h = h;
    s->len = len;
    s->content = content;
    return true;
}

static int popcount16(uint16_t v)
{
    int c = 0;
    for (; v; v &= (uint16_t)(v - 1)) {
        c++;
    }
    return c;
}

static void summarize_reports(const struct sub *s, size_t first, struct msm_rtcp_summary *out)
{
    int rc = s->h[0] & 0x1f;
    for (int i = 0; i < rc && first + 24 * (size_t)(i + 1) <= s->content; i++) {
        const uint8_t *b = s->h + first + 24 * (size_t)i;
        int32_t l = (int32_t)(((uint32_t)b[5] << 16) | ((uint32_t)b[6] << 8) | b[7]);
        if (l & 0x800000) {
            l -= 0x1000000;
        }
        out->lost += l;
        if (b[4] > out->fraction) {
            out->fraction = b[4];
        }
        uint32_t j = msm_rtp_rd32(b + 12);
        if (j > out->jitter) {
            out->jitter = j;
        }
        out->reports++;
    }
}

static void summarize_nack(const struct sub *s, struct msm_rtcp_summary *out)
{
    /* header, sender SSRC, media source SSRC, then FCIs of PID(16) + BLP(16) */
    for (size_t off = 12; off + 4 <= s->content; off += 4) {
        uint16_t blp = (uint16_t)(s->h[off + 2] << 8 | s->h[off + 3]);
        out->nacks++;
        out->nack_packets += 1u + (uint32_t)popcount16(blp);
    }
}

bool msm_rtcp_summarize(const uint8_t *p, size_t n, struct msm_rtcp_summary *out)
{
    memset(out, 0, sizeof(*out));
    if (!msm_rtcp_is(p, n)) {
        return false;
    }
    size_t off = 0;
    struct sub s;
    for (int k = 0; k < MAX_SUBPACKETS && sub_at(p, n, off, &s); k++) {
        uint8_t pt = s.h[1];
        if (pt == RTCP_SR) {
            out->sr = true;
            summarize_reports(&s, 28, out);
        } else if (pt == RTCP_RR) {
            summarize_reports(&s, 8, out);
        } else if (pt == RTCP_RTPFB && (s.h[0] & 0x1f) == RTPFB_GENERIC_NACK) {
            summarize_nack(&s, out);
        }
        off += s.len;
    }
    return true;
}

size_t msm_rtcp_copy_nacks(const uint8_t *p, size_t n, uint32_t own_ssrc, uint8_t *out,
                           size_t cap)
{
    if (!msm_rtcp_is(p, n)) {
        return 0;
    }
    size_t off = 0, w = 0;
    struct sub s;
    for (int k = 0; k < MAX_SUBPACKETS && sub_at(p, n, off, &s); k++) {
        off += s.len;
        if (s.h[1] != RTCP_RTPFB || (s.h[0] & 0x1f) != RTPFB_GENERIC_NACK || s.content < 16) {
            continue; /* not a NACK, or one without a single FCI */
        }
        /* Padding is dropped: only the last packet of a compound may carry it. */
        size_t len = s.content & ~(size_t)3;
        if (w + len > cap) {
            break;
        }
        memcpy(out + w, s.h, len);
        out[w] = (uint8_t)(0x80 | RTPFB_GENERIC_NACK);
        out[w + 2] = (uint8_t)((len / 4 - 1) >> 8);
        out[w + 3] = (uint8_t)(len / 4 - 1);
        msm_rtp_wr32(out + w + 4, own_ssrc);
        w += len;
    }
    return w;
}

bool msm_rtcp_report_summary(const uint8_t *p, size_t n, int64_t *lost, uint32_t *jitter)
{
    struct msm_rtcp_summary s;
    msm_rtcp_summarize(p, n, &s);
    *lost = s.lost;
    *jitter = s.jitter;
    return s.reports > 0;
}

bool msm_rtp_pt_set_has(const struct msm_rtp_pt_set *set, uint8_t pt)
{
    return pt < 128 && (set->bits[pt >> 3] & (1u << (pt & 7))) != 0;
}

void msm_rtp_pt_set_add(struct msm_rtp_pt_set *set, int pt)
{
    if (pt >= 0 && pt < 128) {
        set->bits[pt >> 3] |= (uint8_t)(1u << (pt & 7));
    }
}

bool msm_rtp_pt_set_empty(const struct msm_rtp_pt_set *set)
{
    for (size_t i = 0; i < sizeof(set->bits); i++) {
        if (set->bits[i]) {
            return false;
        }
    }
    return true;
}

size_t msm_rtp_count_pt(const struct msm_rtp_pt_set *set, const struct msm_udp_pkt *pk, int n)
{
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (pk[i].len >= 12 && msm_rtp_pt_set_has(set, pk[i].data[1] & 0x7f)) {
            k++;
        }
    }
    return k;
}
