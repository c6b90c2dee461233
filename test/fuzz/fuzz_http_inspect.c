/* http_inspector on arbitrary first bytes: every prefix of the input must give a decision
 * consistent with the full input (NEED_MORE on a prefix never contradicts a later YES/NO). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/inspect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * MSM_HTTP_INSPECT_MAX) {
        return 0;
    }
    const char *alpn = NULL;
    enum msm_inspect_result full = msm_http_inspect(data, size, &alpn);
    if (full == MSM_INSPECT_YES && (!alpn || (strcmp(alpn, "h2c") && strcmp(alpn, "http/1.0") &&
                                              strcmp(alpn, "http/1.1")))) {
        abort();
    }
    for (size_t n = 0; n < size; n++) {
        const char *a = NULL;
        enum msm_inspect_result r = msm_http_inspect(data, n, &a);
        /* A decided prefix must not be overturned by more bytes. */
        if (r == MSM_INSPECT_NO && full == MSM_INSPECT_YES) {
            abort();
        }
        if (r == MSM_INSPECT_YES && full != MSM_INSPECT_YES) {
            abort();
        }
    }
    return 0;
}
