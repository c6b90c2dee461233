/* Fuzz the RTSP stream parser the way the proxy drives it: messages and interleaved frames
 * back to back, then every reader of a parsed message (CSeq, Session, Transport, URL). The
 * input is fed whole and in two pieces: a message must parse the same either way. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/network/rtsp_proxy/rtsp_msg.h"
#include "filters/network/rtsp_proxy/rtsp_sdp.h"
#include "filters/network/rtsp_proxy/rtsp_transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct msm_rtsp_limits lim = {.max_head = 4096, .max_headers = 32, .max_body = 8192};

static void inspect(const struct msm_rtsp_msg *m)
{
    uint32_t cseq;
    (void)msm_rtsp_cseq(m, &cseq);
    struct msm_rtsp_str sid = msm_rtsp_session_id(m);
    if (sid.n && !sid.p) {
        abort();
    }
    const struct msm_rtsp_hdr *t = msm_rtsp_header(m, "Transport");
    if (t) {
        struct msm_rtsp_transport tr[MSM_RTSP_MAX_TRANSPORTS];
        (void)msm_rtsp_transport_parse(t->value.p, t->value.n, tr, MSM_RTSP_MAX_TRANSPORTS);
    }
    if (!m->is_response) {
        struct msm_rtsp_url u;
        if (msm_rtsp_url_parse(m->uri.p, m->uri.n, &u) == 0) {
            char out[MSM_RTSP_URL_MAX + 64];
            (void)msm_rtsp_url_rebase(m->uri.p, m->uri.n, "proxy:8554", out, sizeof(out));
        }
        (void)msm_rtsp_method_name(m->method);
    } else {
        (void)msm_rtsp_reason(m->status);
    }
    if (m->body.n > lim.max_body) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t left = size;
    for (int guard = 0; left && guard < 1000; guard++) {
        struct msm_rtsp_msg m;
        uint8_t ch;
        const uint8_t *pl;
        size_t pn, total = 0;
        int rc = msm_rtsp_next(p, left, &lim, &m, &ch, &pl, &pn, &total);
        if (rc <= 0) {
            break;
        }
        if (total == 0 || total > left) {
            abort();
        }
        if (rc == MSM_RTSP_MESSAGE) {
            inspect(&m);
            /* incremental delivery: any strict prefix is "need more" (or an error) */
            if (total > 1) {
                struct msm_rtsp_msg m2;
                size_t t2 = 0;
                int r2 = msm_rtsp_parse(p, total - 1, &lim, &m2, &t2);
                if (r2 > 0 && t2 > total - 1) {
                    abort();
                }
            }
        } else if (pl < (const uint8_t *)p || pl + pn > (const uint8_t *)p + left) {
            abort();
        }
        p += total;
        left -= total;
    }
    return 0;
}
