/* Fuzz SDP parsing and rewriting, and the URL helpers they use: the first input byte picks an
 * address family for c= lines. A rewritten SDP must parse to the same number of media sections
 * with every absolute control URL now under the proxy's authority. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/network/rtsp_proxy/rtsp_sdp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) {
        return 0;
    }
    const char *addr = data[0] & 1 ? "fd00::1" : "10.1.2.3";
    const char *sdp = (const char *)data + 1;
    size_t n = size - 1;
    struct msm_sdp_media m[MSM_SDP_MAX_MEDIA];
    char sc[256];
    int k = msm_sdp_parse(sdp, n, m, MSM_SDP_MAX_MEDIA, sc, sizeof(sc));
    size_t olen = 0;
    char *out = msm_sdp_rewrite(sdp, n, "proxy.example:8554", addr, &olen);
    if (strlen(out) != olen) {
        abort();
    }
    struct msm_sdp_media m2[MSM_SDP_MAX_MEDIA];
    int k2 = msm_sdp_parse(out, olen, m2, MSM_SDP_MAX_MEDIA, NULL, 0);
    if (k != k2) {
        abort();
    }
    for (int i = 0; i < k2; i++) {
        const char *c = m2[i].control;
        char resolved[MSM_RTSP_URL_MAX + 600];
        (void)msm_rtsp_url_resolve("rtsp://proxy.example:8554/cam/", c, resolved,
                                   sizeof(resolved));
        struct msm_rtsp_url u;
        if (msm_rtsp_url_is_absolute(c, strlen(c)) && msm_rtsp_url_parse(c, strlen(c), &u) == 0 &&
            !(u.host_len == 13 && !memcmp(u.host, "proxy.example", 13))) {
            /* an absolute URL that escaped the rewrite (only one longer than the copy limit
             * can: the parser truncates controls at 511 bytes) */
            if (strlen(c) < sizeof(m2[i].control) - 1) {
                abort();
            }
        }
    }
    free(out);
    return 0;
}
