/* Access log formats (src/accesslog/format.c): arbitrary format strings and format dictionaries
 * must compile or fail with a message, never crash; what compiles renders for a populated
 * stream info, and a dictionary always renders valid JSON.
 * Input: first byte even = a format string (the rest), odd = a JSON dictionary (the rest,
 * decoded as a google.protobuf.Struct); bit 1 of the first byte = typed JSON, bit 2 =
 * omit_empty_values. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "accesslog/format.h"
#include "common/alloc.h"
#include "config/pbjson.h"
#include "google/protobuf/struct.pb-c.h"
#include "http/headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct msm_stream_info si;
static struct msm_hdrs *req;

static void setup(void)
{
    if (req) {
        return;
    }
    struct msm_err err;
    msm_si_init(&si, 1000.0, 1795429230.045);
    si.end = 1001.5;
    si.has_downstream = true;
    msm_address_from_ip("10.0.0.1", 8080, &si.downstream_local, &err);
    msm_address_from_ip("::1", 41000, &si.downstream_remote, &err);
    si.bytes_received = 7;
    si.protocol = "HTTP/2";
    si.response_code = 200;
    msm_si_set_flag(&si, MSM_RF_UPSTREAM_OVERFLOW);
    req = msm_hdrs_new();
    msm_hdrs_addz(req, ":path", "/a?b=c");
    msm_hdrs_addz(req, "user-agent", "fuzz\"\\\n\x01");
    si.request_headers = req;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size || size > 4096) {
        return 0;
    }
    setup();
    uint8_t mode = data[0];
    char *text = msm_xstrndup((const char *)data + 1, size - 1);
    struct msm_err err;
    struct msm_al_formatter *f = NULL;
    ProtobufCMessage *st = NULL;
    if (!(mode & 1)) {
        f = msm_al_formatter_text(text, (mode & 4) != 0, &err);
    } else {
        st = msm_pbjson_decode_text(&google__protobuf__struct__descriptor, text, strlen(text),
                                    NULL, &err);
        if (st) {
            f = msm_al_formatter_json(st, (mode & 2) != 0, (mode & 4) != 0, &err);
        }
    }
    if (f) {
        struct msm_al_line l = {0};
        msm_al_format(f, &si, 1002.0, &l);
        if (mode & 1) {
            json_error_t je;
            json_t *j = json_loadb(l.p, l.len, JSON_DISABLE_EOF_CHECK, &je);
            if (!j) {
                abort(); /* a dictionary must render valid JSON */
            }
            json_decref(j);
        }
        msm_al_line_free(&l);
        msm_al_formatter_free(f);
    } else if (!err.msg[0]) {
        abort(); /* a failure always says why */
    }
    if (st) {
        protobuf_c_message_free_unpacked(st, NULL);
    }
    free(text);
    return 0;
}
