/* Fuzz the Transport header parser; whatever it accepts must serialize (1.0 and 2.0 forms)
 * and parse back to the same lower transport, ports and channels. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/network/rtsp_proxy/rtsp_transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct msm_rtsp_transport t[MSM_RTSP_MAX_TRANSPORTS];
    int n = msm_rtsp_transport_parse((const char *)data, size, t, MSM_RTSP_MAX_TRANSPORTS);
    if (n > MSM_RTSP_MAX_TRANSPORTS) {
        abort();
    }
    for (int i = 0; i < n; i++) {
        for (int v2 = 0; v2 < 2; v2++) {
            char buf[1024];
            int len = msm_rtsp_transport_format(&t[i], v2, buf, sizeof(buf));
            if (len < 0) {
                continue;
            }
            if ((size_t)len != strlen(buf)) {
                abort();
            }
            struct msm_rtsp_transport back;
            if (msm_rtsp_transport_parse(buf, (size_t)len, &back, 1) != 1) {
                abort();
            }
            if (back.lower != t[i].lower || back.has_interleaved != t[i].has_interleaved ||
                (t[i].has_interleaved &&
                 memcmp(back.interleaved, t[i].interleaved, sizeof(back.interleaved)))) {
                abort();
            }
            if (!v2 && (back.has_client_port != t[i].has_client_port ||
                        (t[i].has_client_port &&
                         memcmp(back.client_port, t[i].client_port, sizeof(back.client_port))))) {
                abort();
            }
        }
    }
    return 0;
}
