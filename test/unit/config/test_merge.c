/* protobuf MergeFrom semantics (--config-yaml over -c) and deep copies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "config/merge.h"
#include "config/pbjson.h"
#include "config/types.h"

#define BOOTSTRAP "envoy.config.bootstrap.v3.Bootstrap"

static ProtobufCMessage *dec(const char *t, const char *json)
{
    struct msm_err err;
    ProtobufCMessage *m = msm_pbjson_decode_text(msm_types_find(t), json, strlen(json), NULL, &err);
    if (!m) {
        fail_msg("decode %s: %s", json, err.msg);
    }
    return m;
}

static void expect_encoded(const ProtobufCMessage *m, const char *want)
{
    struct msm_err err;
    char *s = msm_pbjson_encode_text(m, NULL, false, &err);
    assert_non_null(s);
    assert_string_equal(s, want);
    free(s);
}

/* merge(<dst>, <src>) of type <t> encodes as <want>; <src> is unchanged. */
static void expect_merge(const char *t, const char *dst, const char *src, const char *want)
{
    struct msm_err err;
    ProtobufCMessage *d = dec(t, dst);
    ProtobufCMessage *s = dec(t, src);
    char *before = msm_pbjson_encode_text(s, NULL, false, &err);
    assert_int_equal(msm_pb_merge(d, s, &err), 0);
    expect_encoded(d, want);
    expect_encoded(s, before);
    free(before);
    /* the result is a well-formed protobuf-c message: packs, unpacks to the same JSON */
    size_t n = protobuf_c_message_get_packed_size(d);
    uint8_t *buf = msm_xmalloc(n + 1);
    protobuf_c_message_pack(d, buf);
    ProtobufCMessage *u = protobuf_c_message_unpack(d->descriptor, NULL, n, buf);
    assert_non_null(u);
    expect_encoded(u, want);
    protobuf_c_message_free_unpacked(u, NULL);
    free(buf);
    protobuf_c_message_free_unpacked(s, NULL);
    protobuf_c_message_free_unpacked(d, NULL);
}

static void test_scalars_and_nested(void **state)
{
    (void)state;
    expect_merge(BOOTSTRAP,
                 "{\"node\":{\"id\":\"a\",\"cluster\":\"c\",\"locality\":{\"zone\":\"z1\"}},"
                 "\"stats_flush_interval\":\"5s\"}",
                 "{\"node\":{\"id\":\"b\",\"locality\":{\"region\":\"r\"}},"
                 "\"stats_flush_interval\":\"1s\"}",
                 "{\"node\":{\"id\":\"b\",\"cluster\":\"c\",\"locality\":{\"region\":\"r\","
                 "\"zone\":\"z1\"}},\"stats_flush_interval\":\"1s\"}");
    /* proto3 defaults in src never overwrite */
    expect_merge(BOOTSTRAP, "{\"node\":{\"id\":\"a\"},\"enable_dispatcher_stats\":true}",
                 "{\"node\":{\"id\":\"\"},\"enable_dispatcher_stats\":false}",
                 "{\"node\":{\"id\":\"a\"},\"enable_dispatcher_stats\":true}");
    /* absent sub-message in dst: deep copy */
    expect_merge(BOOTSTRAP, "{}",
                 "{\"node\":{\"id\":\"x\",\"metadata\":{\"k\":[1,{\"a\":\"b\"}]}}}",
                 "{\"node\":{\"id\":\"x\",\"metadata\":{\"k\":[1,{\"a\":\"b\"}]}}}");
    /* wrappers are messages: BoolValue{false} merged into BoolValue{true} keeps true (the
     * proto3 MergeFrom gotcha Envoy users meet with --config-yaml) */
    expect_merge("envoy.config.cluster.v3.Cluster", "{\"respect_dns_ttl\":true}",
                 "{\"respect_dns_ttl\":false}", "{\"respect_dns_ttl\":true}");
    expect_merge("envoy.config.core.v3.DataSource", "{\"inline_bytes\":\"AAE=\"}",
                 "{\"inline_bytes\":\"AgM=\"}", "{\"inline_bytes\":\"AgM=\"}");
}

static void test_repeated_append(void **state)
{
    (void)state;
    expect_merge(BOOTSTRAP,
                 "{\"static_resources\":{\"clusters\":[{\"name\":\"c1\"}]},"
                 "\"node\":{\"client_features\":[\"a\"]}}",
                 "{\"static_resources\":{\"clusters\":[{\"name\":\"c2\"},{\"name\":\"c1\","
                 "\"connect_timeout\":\"1s\"}]},\"node\":{\"client_features\":[\"b\",\"a\"]}}",
                 "{\"node\":{\"client_features\":[\"a\",\"b\",\"a\"]},\"static_resources\":{"
                 "\"clusters\":[{\"name\":\"c1\"},{\"name\":\"c2\"},{\"name\":\"c1\","
                 "\"connect_timeout\":\"1s\"}]}}");
    expect_merge("envoy.type.v3.Int64Range", "{\"start\":1}", "{\"end\":2}",
                 "{\"start\":\"1\",\"end\":\"2\"}");
}

static void test_maps(void **state)
{
    (void)state;
    /* by key: a src entry replaces the dst entry (protobuf map semantics), others stay */
    expect_merge("envoy.config.core.v3.Metadata",
                 "{\"filter_metadata\":{\"a\":{\"x\":1},\"b\":{\"y\":2,\"z\":3}}}",
                 "{\"filter_metadata\":{\"b\":{\"y\":20},\"c\":{}}}",
                 "{\"filter_metadata\":{\"a\":{\"x\":1},\"b\":{\"y\":20},\"c\":{}}}");
    /* Struct is a map<string, Value>: same rule */
    expect_merge("google.protobuf.Struct", "{\"a\":1,\"b\":{\"c\":1}}",
                 "{\"b\":{\"d\":2},\"e\":[]}",
                 "{\"a\":1,\"b\":{\"d\":2},\"e\":[]}");
}

static void test_oneof(void **state)
{
    (void)state;
    /* switching case frees the old member (ASan/valgrind would see a leak) */
    expect_merge("envoy.config.core.v3.SocketAddress",
                 "{\"address\":\"1.2.3.4\",\"named_port\":\"http\"}", "{\"port_value\":8080}",
                 "{\"address\":\"1.2.3.4\",\"port_value\":8080}");
    expect_merge("envoy.config.core.v3.SocketAddress", "{\"port_value\":8080}",
                 "{\"named_port\":\"http\"}", "{\"named_port\":\"http\"}");
    /* a set member at its default value still switches the case */
    expect_merge("envoy.config.core.v3.SocketAddress", "{\"named_port\":\"http\"}",
                 "{\"port_value\":0}", "{\"port_value\":0}");
    /* same message case: merged recursively */
    expect_merge("google.protobuf.Value", "{\"a\":1}", "{\"b\":2}", "{\"a\":1,\"b\":2}");
    /* message case replaced by a scalar case and back */
    expect_merge("google.protobuf.Value", "{\"a\":1}", "\"s\"", "\"s\"");
    expect_merge("google.protobuf.Value", "\"s\"", "[1]", "[1]");
    expect_merge("envoy.config.core.v3.DataSource", "{\"filename\":\"/a\"}",
                 "{\"inline_bytes\":\"AA==\"}", "{\"inline_bytes\":\"AA==\"}");
}

static void test_any_and_errors(void **state)
{
    (void)state;
    /* Any is an ordinary message: type_url and value bytes are scalars, src wins */
    expect_merge("envoy.config.listener.v3.Filter",
                 "{\"name\":\"f\",\"typed_config\":{\"@type\":"
                 "\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"1s\"}}",
                 "{\"typed_config\":{\"@type\":\"type.googleapis.com/google.protobuf.Struct\","
                 "\"value\":{\"a\":1}}}",
                 "{\"name\":\"f\",\"typed_config\":{\"@type\":"
                 "\"type.googleapis.com/google.protobuf.Struct\",\"value\":{\"a\":1}}}");
    struct msm_err err;
    ProtobufCMessage *a = dec("google.protobuf.Struct", "{}");
    ProtobufCMessage *b = dec("google.protobuf.ListValue", "[]");
    assert_int_equal(msm_pb_merge(a, b, &err), MSM_EINVAL);
    assert_string_equal(err.msg, "cannot merge google.protobuf.ListValue into "
                                 "google.protobuf.Struct");
    protobuf_c_message_free_unpacked(a, NULL);
    protobuf_c_message_free_unpacked(b, NULL);
}

static void test_unknown_fields_and_dup(void **state)
{
    (void)state;
    struct msm_err err;
    /* unknown fields (from binary) are carried by merge and dup */
    uint8_t wire[] = {0x0a, 0x01, 'x', 0xf8, 0x3e, 0x07}; /* id="x", field 999 varint 7 */
    const ProtobufCMessageDescriptor *node = msm_types_find("envoy.config.core.v3.Node");
    ProtobufCMessage *src = protobuf_c_message_unpack(node, NULL, sizeof(wire), wire);
    assert_non_null(src);
    assert_int_equal(src->n_unknown_fields, 1);
    ProtobufCMessage *dst = dec("envoy.config.core.v3.Node", "{\"cluster\":\"c\"}");
    assert_int_equal(msm_pb_merge(dst, src, &err), 0);
    assert_int_equal(dst->n_unknown_fields, 1);
    ProtobufCMessage *copy = msm_pb_dup(dst);
    uint8_t b1[64], b2[64];
    size_t n1 = protobuf_c_message_pack(dst, b1);
    size_t n2 = protobuf_c_message_pack(copy, b2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    protobuf_c_message_free_unpacked(copy, NULL);
    protobuf_c_message_free_unpacked(dst, NULL);
    protobuf_c_message_free_unpacked(src, NULL);

    /* dup of a real config: same bytes */
    json_error_t jerr;
    json_t *j = json_load_file(MSM_SHARED_DIR "/fixtures/istio/bootstrap/all_golden.json", 0,
                               &jerr);
    assert_non_null(j);
    ProtobufCMessage *m = msm_pbjson_decode(msm_types_find(BOOTSTRAP), j, NULL, &err);
    assert_non_null(m);
    copy = msm_pb_dup(m);
    size_t n = protobuf_c_message_get_packed_size(m);
    assert_int_equal(n, protobuf_c_message_get_packed_size(copy));
    uint8_t *p1 = msm_xmalloc(n), *p2 = msm_xmalloc(n);
    protobuf_c_message_pack(m, p1);
    protobuf_c_message_pack(copy, p2);
    assert_memory_equal(p1, p2, n);
    /* merging a message into itself-copy doubles every repeated field */
    assert_int_equal(msm_pb_merge(copy, m, &err), 0);
    assert_true(protobuf_c_message_get_packed_size(copy) > n);
    free(p1);
    free(p2);
    protobuf_c_message_free_unpacked(copy, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_and_nested), cmocka_unit_test(test_repeated_append),
        cmocka_unit_test(test_maps),               cmocka_unit_test(test_oneof),
        cmocka_unit_test(test_any_and_errors),     cmocka_unit_test(test_unknown_fields_and_dup),
    };
    return cmocka_run_group_tests_name("config_merge", tests, NULL, NULL);
}
