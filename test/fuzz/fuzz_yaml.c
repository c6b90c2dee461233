/* Fuzz the YAML loader and the YAML -> Bootstrap path: YAML text -> JSON tree (dumped, to
 * exercise the serializer on arbitrary trees) -> envoy.config.bootstrap.v3.Bootstrap with the
 * YAML options (lenient scalars). A decoded bootstrap must encode and decode strictly back to
 * the same protobuf bytes. Any violation aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "config/yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct msm_pbjson_opts yaml_opts = {.lenient_scalars = true};
    struct msm_err err;
    json_t *j = msm_yaml_load((const char *)data, size, &err);
    if (!j) {
        return 0;
    }
    char *dump = msm_pbjson_dumps(j, true);
    free(dump);
    const ProtobufCMessageDescriptor *desc = msm_types_find("envoy.config.bootstrap.v3.Bootstrap");
    ProtobufCMessage *m = msm_pbjson_decode(desc, j, &yaml_opts, &err);
    json_decref(j);
    if (!m) {
        return 0;
    }
    char *text = msm_pbjson_encode_text(m, NULL, false, &err);
    if (!text) {
        fprintf(stderr, "encode failed after a successful decode: %s\n", err.msg);
        abort();
    }
    ProtobufCMessage *m2 = msm_pbjson_decode_text(desc, text, strlen(text), NULL, &err);
    if (!m2) {
        fprintf(stderr, "strict re-decode failed: %s\n%s\n", err.msg, text);
        abort();
    }
    size_t n1 = protobuf_c_message_get_packed_size(m);
    size_t n2 = protobuf_c_message_get_packed_size(m2);
    uint8_t *b1 = msm_xmalloc(n1 + 1), *b2 = msm_xmalloc(n2 + 1);
    protobuf_c_message_pack(m, b1);
    protobuf_c_message_pack(m2, b2);
    if (n1 != n2 || memcmp(b1, b2, n1) != 0) {
        fprintf(stderr, "round trip changed the message:\n%s\n", text);
        abort();
    }
    free(b1);
    free(b2);
    protobuf_c_message_free_unpacked(m2, NULL);
    free(text);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
