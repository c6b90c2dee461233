/* Fuzz the x-envoy-peer-metadata header reader of Istio's HTTP peer metadata exchange
 * (filters/http/peer_metadata/codec.c): the input is a header value a peer (or any client)
 * sends. Checks: no crash or leak on any bytes; base64 that decodes re-encodes to the same
 * bytes; a value that gives a Struct yields a workload whose header reads back as the same
 * Struct. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/http/peer_metadata/peer_metadata.h"
#include "filters/network/metadata_exchange/workload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *v = (const char *)data;
    unsigned char *bytes;
    size_t n;
    bool b64 = msm_pm_base64_decode(v, size, &bytes, &n);
    if (!b64 && n) {
        abort();
    }
    free(bytes);
    json_t *st = NULL;
    if (!msm_pm_header_decode(v, size, &st)) {
        if (st) {
            abort();
        }
        return 0;
    }
    if (!json_is_object(st)) {
        abort();
    }
    char *extra[] = {"role"};
    struct msm_mx_workload w;
    msm_mx_workload_from_struct(st, extra, 1, NULL, NULL, &w);
    json_t *ours = msm_mx_workload_to_struct(&w);
    char *hdr = msm_pm_header_encode(ours);
    json_t *again = NULL;
    if (!msm_pm_header_decode(hdr, strlen(hdr), &again) || !json_equal(again, ours)) {
        abort();
    }
    json_decref(again);
    free(hdr);
    json_decref(ours);
    msm_mx_workload_deinit(&w);
    json_decref(st);
    return 0;
}
