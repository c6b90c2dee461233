/* RTP/RTCP packet helpers and RFC 3550 receiver statistics (see rtp.h). The sequence logic is
 * the RFC's Appendix A.1 code; loss is A.3; jitter is A.8 in the RFC's scaled-integer form. */
#include <math.h>
#include <string.h>

#include "rtp/rtp.h"

#define RTP_SEQ_MOD (1u << 16)
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define MIN_SEQUENTIAL 2

bool msm_rtp_parse(const uint8_t *p, size_t n, struct msm_rtp_hdr *h)
{
    if (n < 12 || (p[0] >> 6) != 2) {
        return false;
    }
    size_t need = 12 + 4 * (size_t)(p[0] & 0x0f);
    if (p[0] & 0x10) {
        if (n < need + 4) {
            return false;
        }
        need += 4 + 4 * (((size_t)p[need + 2] << 8) | p[need + 3]);
    }
    if (n < need) {
        return false;
    }
    h->marker = (p[1] & 0x80) != 0;
    h->pt = p[1] & 0x7f;
    h->seq = (uint16_t)((p[2] << 8) | p[3]);
    h->ts = msm_rtp_rd32(p + 4);
    h->ssrc = msm_rtp_rd32(p + 8);
    return true;
}

bool msm_rtcp_is(const uint8_t *p, size_t n)
{
    return n >= 8 && (p[0] >> 6) == 2 && p[1] >= 200 && p[1] <= 207;
}

static void init_seq(struct msm_rtp_rx *s, uint16_t seq)
{
    s->base_seq = seq;
    s->max_seq = seq;
    s->bad_seq = RTP_SEQ_MOD + 1;
    s->cycles = 0;
    s->received = 0;
    s->received_prior = 0;
    s->expected_prior = 0;
}

/* RFC 3550 A.1 update_seq: false for a packet that is not (yet) valid. */
static bool update_seq(struct msm_rtp_rx *s, uint16_t seq)
{
    uint16_t udelta = (uint16_t)(seq - s->max_seq);
    if (s->probation) {
        if (seq == (uint16_t)(s->max_seq + 1)) {
            s->probation--;
            s->max_seq = seq;
            if (s->probation == 0) {
                init_seq(s, seq);
                s->received++;
                return true;
            }
        } else {
            s->probation = MIN_SEQUENTIAL - 1;
            s->max_seq = seq;
        }
        return false;
    }
    if (udelta < MAX_DROPOUT) {
        if (seq < s->max_seq) {
            s->cycles += RTP_SEQ_MOD;
        }
        s->max_seq = seq;
    } else if (udelta <= RTP_SEQ_MOD - MAX_MISORDER) {
        if (seq == s->bad_seq) {
            init_seq(s, seq); /* two sequential packets after a jump: the source restarted */
        } else {
            s->bad_seq = (seq + 1u) & (RTP_SEQ_MOD - 1);
            return false;
        }
    } else {
        s->reordered++; /* duplicate or out of order */
    }
    s->received++;
    return true;
}

void msm_rtp_rx_update(struct msm_rtp_rx *s, const struct msm_rtp_hdr *h, size_t len, double now,
                       uint32_t clock_rate)
{
    if (!s->init || s->ssrc != h->ssrc) {
        memset(s, 0, sizeof(*s));
        s->init = true;
        s->ssrc = h->ssrc;
        init_seq(s, h->seq);
        s->max_seq = (uint16_t)(h->seq - 1);
        s->probation = MIN_SEQUENTIAL;
    }
    s->bytes += len;
    s->clock_rate = clock_rate;
    if (!update_seq(s, h->seq)) {
        return;
    }
    if (clock_rate) {
        /* A.8: transit = arrival (in timestamp units) - RTP timestamp */
        int64_t arrival = (int64_t)llround(now * (double)clock_rate);
        int64_t transit = arrival - (int64_t)h->ts;
        if (s->have_transit) {
            int64_t d = transit - s->transit;
            /* timestamps wrap at 2^32: reduce the difference to a signed 32-bit range */
            d = (int64_t)(int32_t)(uint32_t)d;
            if (d < 0) {
                d = -d;
            }
            int64_t j = (int64_t)s->jitter_q4 + d - (((int64_t)s->jitter_q4 + 8) >> 4);
            s->jitter_q4 = j < 0 ? 0 : (j > UINT32_MAX ? UINT32_MAX : (uint32_t)j);
        }
        s->transit = transit;
        s->have_transit = true;
    }
    s->last_ts = h->ts;
    s->last_arrival = now;
}

uint64_t msm_rtp_rx_expected(const struct msm_rtp_rx *s)
{
    if (!s->init || s->probation) {
        return 0;
    }
    uint64_t ext_max = (uint64_t)s->cycles + s->max_seq;
    return ext_max - s->base_seq + 1;
}

int64_t msm_rtp_rx_lost(const struct msm_rtp_rx *s)
{
    return (int64_t)msm_rtp_rx_expected(s) - (int64_t)s->received;
}

uint32_t msm_rtp_rx_jitter(const struct msm_rtp_rx *s)
{
    return s->jitter_q4 >> 4;
}

uint64_t msm_rtp_rx_jitter_us(const struct msm_rtp_rx *s)
{
    if (!s->clock_rate) {
        return 0;
    }
    return (uint64_t)msm_rtp_rx_jitter(s) * 1000000u / s->clock_rate;
}

void msm_rtp_rx_note_sr(struct msm_rtp_rx *s, const uint8_t *p, size_t n, double now)
{
    if (n < 28 || p[1] != 200) {
        return;
    }
    uint32_t msw = msm_rtp_rd32(p + 8), lsw = msm_rtp_rd32(p + 12);
    s->lsr = (msw << 16) | (lsw >> 16);
    s->lsr_arrival = now;
}

size_t msm_rtcp_build_rr(uint8_t *buf, size_t cap, uint32_t own_ssrc, const char *cname,
                         struct msm_rtp_rx *s, double now)
{
    bool block = s && s->init && !s->probation;
    size_t rr_len = 8 + (block ? 24 : 0);
    size_t cl = strlen(cname);
    if (cl > 255) {
        cl = 255;
    }
    size_t sdes_len = 8 + 2 + cl + 1; /* header + ssrc, item type/len, text, END */
    sdes_len = (sdes_len + 3) & ~(size_t)3;
    if (cap < rr_len + sdes_len) {
        return 0;
    }
    memset(buf, 0, rr_len + sdes_len);
    buf[0] = (uint8_t)(0x80 | (block ? 1 : 0));
    buf[1] = 201;
    buf[2] = 0;
    buf[3] = (uint8_t)(rr_len / 4 - 1);
    msm_rtp_wr32(buf + 4, own_ssrc);
    if (block) {
        uint8_t *b = buf + 8;
        uint64_t expected = msm_rtp_rx_expected(s);
        uint64_t exp_int = expected - s->expected_prior;
        uint64_t rec_int = s->received - s->received_prior;
        s->expected_prior = expected;
        s->received_prior = s->received;
        int64_t lost_int = (int64_t)exp_int - (int64_t)rec_int;
        uint8_t fraction = 0;
        if (exp_int && lost_int > 0) {
            fraction = (uint8_t)(((uint64_t)lost_int << 8) / exp_int);
        }
        int64_t lost = msm_rtp_rx_lost(s);
        if (lost > 0x7fffff) {
            lost = 0x7fffff;
        } else if (lost < -0x800000) {
            lost = -0x800000;
        }
        msm_rtp_wr32(b, s->ssrc);
        msm_rtp_wr32(b + 4, ((uint32_t)fraction << 24) | ((uint32_t)lost & 0xffffff));
        msm_rtp_wr32(b + 8, (uint32_t)(s->cycles + s->max_seq));
        msm_rtp_wr32(b + 12, msm_rtp_rx_jitter(s));
        msm_rtp_wr32(b + 16, s->lsr);
        uint32_t dlsr = 0;
        if (s->lsr) {
            dlsr = (uint32_t)((now - s->lsr_arrival) * 65536.0);
        }
        msm_rtp_wr32(b + 20, dlsr);
    }
    uint8_t *d = buf + rr_len;
    d[0] = 0x81;
    d[1] = 202;
    d[2] = (uint8_t)((sdes_len / 4 - 1) >> 8);
    d[3] = (uint8_t)(sdes_len / 4 - 1);
    msm_rtp_wr32(d + 4, own_ssrc);
    d[8] = 1; /* CNAME */
    d[9] = (uint8_t)cl;
    memcpy(d + 10, cname, cl);
    return rr_len + sdes_len;
}
