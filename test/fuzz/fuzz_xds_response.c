/* Fuzz the xDS client's response decoding (xds/xds_proto.c), exactly what the xDS thread runs
 * on every message: the first byte picks DiscoveryResponse (even) or DeltaDiscoveryResponse
 * (odd), the rest is the message. Every decoded resource is then encoded to JSON as
 * /config_dump would (walking nested Anys), and the ACK or NACK the client would send is
 * packed. With bit 1 of the first byte set, the same bytes are also decoded lazily (as the
 * proxy's xDS client does): that must accept what the eager decoding accepts, with the same
 * names, and each resource must then unpack. No input may crash, leak or trip a sanitizer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/pbjson.h"
#include "xds/xds_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    bool delta = data[0] & 1;
    struct msm_err err;
    struct msm_xds_decoded *d = msm_xds_decode(delta, data + 1, size - 1, &err);
    if (!d) {
        return 0;
    }
    if (data[0] & 2) {
        struct msm_xds_decoded *l = msm_xds_decode_ex(delta, data + 1, size - 1, true, NULL, NULL,
                                                      &err);
        if (!l || (!d->error && (l->error || l->n != d->n))) {
            abort(); /* stricter than protobuf-c: a valid response would be NACKed */
        }
        /* The eager decoding unpacks everything up front; the lazy one only on use. When the
         * eager one failed, the lazy one may accept the response, but then unpacking one of
         * its resources must fail: the proxy NACKs at that point instead. */
        bool failed = false;
        for (int i = 0; i < l->n; i++) {
            if (!d->error && strcmp(l->res[i].name, d->res[i].name) != 0) {
                abort();
            }
            if (!msm_xds_decoded_msg(l, i, &err)) {
                if (!d->error) {
                    abort();
                }
                failed = true;
            }
            msm_xds_decoded_release(l, i);
        }
        if (d->error && !l->error && !failed) {
            abort(); /* laxer than the eager decoding: an invalid response would be applied */
        }
        msm_xds_decoded_free(l);
    }
    for (int i = 0; i < d->n && i < 8; i++) {
        if (!d->res[i].name || !d->res[i].version || !d->res[i].msg) {
            abort();
        }
        json_t *j = msm_pbjson_encode(d->res[i].msg, NULL, &err);
        json_decref(j);
    }
    const char **names = calloc((size_t)d->n + 1, sizeof(*names));
    for (int i = 0; i < d->n; i++) {
        names[i] = d->res[i].name;
    }
    struct msm_xds_req r = {
        .type_url = d->type_url,
        .version_info = d->version_info,
        .names = names,
        .n_names = (size_t)d->n,
        .unsub = d->removed,
        .n_unsub = (size_t)d->n_removed,
        .nonce = d->nonce,
        .error = d->error,
    };
    size_t len;
    uint8_t *out = msm_xds_pack_request(delta, &r, &len);
    free(out);
    free(names);
    msm_xds_decoded_free(d);
    return 0;
}
