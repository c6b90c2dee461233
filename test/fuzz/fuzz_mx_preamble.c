/* Fuzz the istio-peer-exchange preamble parser (filters/network/metadata_exchange/wire.c and the
 * workload rules in workload.c): the input is what a peer sends after the TLS handshake. Checks:
 * no crash or leak on any bytes; a payload that decodes is a Struct (JSON object) that survives
 * re-encoding unchanged; the peer's metadata converts to a workload and back. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/network/metadata_exchange/wire.h"
#include "filters/network/metadata_exchange/workload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* json_equal(), but object keys compared with their length (protobuf keys may hold NULs,
 * which jansson's json_equal cuts at). */
static bool same(const json_t *a, const json_t *b)
{
    if (json_typeof(a) != json_typeof(b)) {
        return false;
    }
    if (json_is_object(a)) {
        const char *k;
        size_t kl;
        json_t *v;
        if (json_object_size(a) != json_object_size(b)) {
            return false;
        }
        json_object_keylen_foreach((json_t *)a, k, kl, v) {
            const json_t *w = json_object_getn(b, k, kl);
            if (!w || !same(v, w)) {
                return false;
            }
        }
        return true;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) {
            return false;
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!same(json_array_get(a, i), json_array_get(b, i))) {
                return false;
            }
        }
        return true;
    }
    return json_equal(a, b);
}

static void check_payload(const uint8_t *p, size_t n)
{
    json_t *st = NULL;
    enum msm_mx_payload r = msm_mx_payload_decode(p, n, &st);
    if (r != MSM_MX_PAYLOAD_OK) {
        if (st || (r != MSM_MX_PAYLOAD_BAD_ANY && r != MSM_MX_PAYLOAD_BAD_STRUCT)) {
            abort();
        }
        return;
    }
    if (!json_is_object(st)) {
        abort();
    }
    /* Round trip: what we would send for this Struct reads back as the same Struct. */
    size_t pn;
    uint8_t *pre = msm_mx_preamble_encode(st, &pn);
    uint32_t len;
    if (pn < MSM_MX_HEADER_LEN || !msm_mx_header_parse(pre, &len) ||
        len != pn - MSM_MX_HEADER_LEN) {
        abort();
    }
    json_t *again = NULL;
    if (msm_mx_payload_decode(pre + MSM_MX_HEADER_LEN, len, &again) != MSM_MX_PAYLOAD_OK ||
        !same(st, again)) {
        abort();
    }
    json_decref(again);
    free(pre);
    /* The peer's metadata, as the filter reads it. */
    json_t *md = json_object_get(st, MSM_MX_METADATA_KEY);
    char *extra[] = {"role", "app"};
    struct msm_mx_workload w;
    msm_mx_workload_from_struct(json_is_object(md) ? md : NULL, extra, 2, NULL, NULL, &w);
    json_t *a = msm_mx_workload_to_struct(&w), *b = msm_mx_workload_state(&w);
    if (!json_is_object(a) || !json_is_object(b) || !json_is_object(json_object_get(a, "LABELS"))) {
        abort();
    }
    json_decref(a);
    json_decref(b);
    msm_mx_workload_deinit(&w);
    json_decref(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* As a stream: header, then up to N bytes of payload. */
    uint32_t n;
    if (size >= MSM_MX_HEADER_LEN && msm_mx_header_parse(data, &n)) {
        size_t rest = size - MSM_MX_HEADER_LEN;
        check_payload(data + MSM_MX_HEADER_LEN, n < rest ? n : rest);
    }
    /* And the whole input as a payload, so the Any/Struct reader is reached directly. */
    check_payload(data, size);
    return 0;
}
