/* Fuzz the proto3 JSON decoder: bytes -> JSON text decoded as envoy.config.bootstrap.v3.Bootstrap
 * (strict, then with allow_unknown_fields + lenient_scalars). Whatever decodes must encode, and
 * the encoded text must decode again to the very same protobuf bytes (snake_case and
 * lowerCamelCase). Any violation aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "config/pbjson.h"
#include "config/types.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = msm_xmalloc(*len + 1);
    if (protobuf_c_message_pack(m, buf) != *len) {
        abort();
    }
    return buf;
}

/* encode(m) with <camel>, decode the text: same bytes as <ref>. */
static void check_roundtrip(const ProtobufCMessage *m, const uint8_t *ref, size_t reflen,
                            bool camel)
{
    struct msm_err err;
    struct msm_pbjson_enc_opts eo = {.camel_case = camel};
    char *text = msm_pbjson_encode_text(m, &eo, camel, &err);
    if (!text) {
        fprintf(stderr, "encode failed after a successful decode: %s\n", err.msg);
        abort();
    }
    ProtobufCMessage *m2 = msm_pbjson_decode_text(m->descriptor, text, strlen(text), NULL, &err);
    if (!m2) {
        fprintf(stderr, "re-decode failed: %s\n%s\n", err.msg, text);
        abort();
    }
    size_t n;
    uint8_t *b = pack(m2, &n);
    if (n != reflen || memcmp(b, ref, n) != 0) {
        fprintf(stderr, "round trip changed the message:\n%s\n", text);
        abort();
    }
    free(b);
    protobuf_c_message_free_unpacked(m2, NULL);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct msm_pbjson_opts loose = {.allow_unknown_fields = true,
                                                 .lenient_scalars = true};
    const ProtobufCMessageDescriptor *desc = msm_types_find("envoy.config.bootstrap.v3.Bootstrap");
    struct msm_err err;
    for (int pass = 0; pass < 2; pass++) {
        ProtobufCMessage *m = msm_pbjson_decode_text(desc, (const char *)data, size,
                                                     pass ? &loose : NULL, &err);
        if (!m) {
            continue;
        }
        size_t n;
        uint8_t *ref = pack(m, &n);
        check_roundtrip(m, ref, n, false);
        check_roundtrip(m, ref, n, true);
        free(ref);
        protobuf_c_message_free_unpacked(m, NULL);
        if (!pass) {
            break; /* strict success implies loose success */
        }
    }
    return 0;
}
