/* The x-envoy-peer-metadata header codec (see peer_metadata.h): base64 around the Struct codec
 * of the TCP exchange (filters/network/metadata_exchange/wire.c). Pure functions: the filter,
 * the unit tests and the fuzz target call them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "filters/http/peer_metadata/peer_metadata.h"
#include "filters/network/metadata_exchange/wire.h"

char *msm_pm_header_encode(const json_t *st)
{
    size_t len;
    uint8_t *d = msm_mx_struct_encode(st, &len);
    char *out = msm_base64_encode(d, len);
    free(d);
    return out;
}

bool msm_pm_base64_decode(const char *v, size_t n, unsigned char **out, size_t *len)
{
    /* Envoy's decodeWithoutPadding: padding optional, and exact to the bit. */
    return msm_base64_decode(v, n, MSM_BASE64_PARTIAL_PAD | MSM_BASE64_STRICT_TAIL, out, len) == 0;
}

bool msm_pm_header_decode(const char *v, size_t n, json_t **out)
{
    unsigned char *bytes;
    size_t len;
    msm_pm_base64_decode(v, n, &bytes, &len); /* invalid: no bytes, as Envoy */
    bool ok = msm_mx_struct_decode(bytes, len, out);
    free(bytes);
    return ok;
}
