/* Fuzz the RTP/RTCP readers of the media relay (src/rtp): the RTP header parser, receiver
 * statistics fed with what it accepts, RTCP compound summaries (report blocks, generic NACKs)
 * and the NACK re-issuing copy. Invariants: the copied NACKs (into a buffer exactly as large as
 * the input, so ASan sees any overrun) request exactly as many packets as the input's, and
 * parse as RTCP again whenever something was copied. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtp/rtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct msm_rtp_hdr h;
    if (msm_rtp_parse(data, size, &h)) {
        struct msm_rtp_rx rx;
        memset(&rx, 0, sizeof(rx));
        msm_rtp_rx_update(&rx, &h, size, 1.0, 90000);
        h.seq++;
        msm_rtp_rx_update(&rx, &h, size, 1.02, 90000);
        (void)msm_rtp_rx_lost(&rx);
        (void)msm_rtp_rx_jitter_us(&rx);
    }
    struct msm_rtcp_summary in, out;
    bool is = msm_rtcp_summarize(data, size, &in);
    if (is != msm_rtcp_is(data, size)) {
        abort();
    }
    int64_t lost;
    uint32_t jitter;
    if (msm_rtcp_report_summary(data, size, &lost, &jitter) != (in.reports > 0)) {
        abort();
    }
    uint8_t *copy = malloc(size ? size : 1);
    size_t w = msm_rtcp_copy_nacks(data, size, 0x01020304, copy, size);
    if (w > size || (w && !msm_rtcp_summarize(copy, w, &out)) ||
        (w ? out.nack_packets : 0) != in.nack_packets) {
        abort();
    }
    free(copy);
    struct msm_rtp_pt_set set;
    memset(&set, 0, sizeof(set));
    msm_rtp_pt_set_add(&set, size ? data[0] : 0);
    struct msm_udp_pkt pk = {.data = (uint8_t *)data, .len = size};
    (void)msm_rtp_count_pt(&set, &pk, 1);
    return 0;
}
