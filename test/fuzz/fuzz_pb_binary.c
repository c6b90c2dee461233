/* Fuzz the JSON encoder with arbitrary binary: protobuf_c_message_unpack() of
 * envoy.config.bootstrap.v3.Bootstrap, then encode to JSON, which expands every Any through the
 * registry and so unpacks nested payloads of any type. The encoder must never crash; when its
 * output decodes again, encoding that must print the same JSON (the encoder normalizes what
 * JSON cannot carry, e.g. invalid UTF-8 or unnormalized durations, once and for all). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/merge.h"
#include "config/pbjson.h"
#include "config/types.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ProtobufCMessageDescriptor *desc = msm_types_find("envoy.config.bootstrap.v3.Bootstrap");
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, size, data);
    if (!m) {
        return 0;
    }
    struct msm_err err;
    /* deep copy and merge walk the same arbitrary structure */
    ProtobufCMessage *copy = msm_pb_dup(m);
    if (msm_pb_merge(copy, m, &err) != 0) {
        abort();
    }
    protobuf_c_message_free_unpacked(copy, NULL);

    json_t *j = msm_pbjson_encode(m, NULL, &err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (!j) {
        return 0;
    }
    char *text = msm_pbjson_dumps(j, false);
    ProtobufCMessage *m2 = msm_pbjson_decode_text(desc, text, strlen(text), NULL, &err);
    if (m2) {
        json_t *j2 = msm_pbjson_encode(m2, NULL, &err);
        if (!j2 || !json_equal(j, j2)) {
            char *t2 = j2 ? msm_pbjson_dumps(j2, false) : NULL;
            fprintf(stderr, "encode(decode(encode(x))) != encode(x):\n%s\n%s\n", text,
                    t2 ? t2 : err.msg);
            abort();
        }
        json_decref(j2);
        protobuf_c_message_free_unpacked(m2, NULL);
    }
    free(text);
    json_decref(j);
    return 0;
}
