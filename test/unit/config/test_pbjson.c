/* proto3 JSON codec: well-known types, edge cases, error texts, Any/TypedStruct unpacking. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/core/v3/address.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

#define TCP_PROXY "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
#define SOCKADDR "envoy.config.core.v3.SocketAddress"

static const struct msm_pbjson_opts lenient_unknown = {.allow_unknown_fields = true};
static const struct msm_pbjson_opts lenient_yaml = {.lenient_scalars = true};

/* ---- helpers ------------------------------------------------------------------------------ */

static const ProtobufCMessageDescriptor *type(const char *name)
{
    const ProtobufCMessageDescriptor *d = msm_types_find(name);
    if (!d) {
        fail_msg("type %s not in the registry", name);
    }
    return d;
}

static ProtobufCMessage *dec(const char *t, const char *json, const struct msm_pbjson_opts *o,
                             struct msm_err *err)
{
    return msm_pbjson_decode_text(type(t), json, strlen(json), o, err);
}

/* Decode <in> as <t> (must succeed), encode compactly: must equal <want>; the bytes must
 * survive a second decode of the output. */
static void roundtrip_opts(const char *t, const char *in, const char *want,
                           const struct msm_pbjson_opts *o)
{
    struct msm_err err = {{0}};
    ProtobufCMessage *m = dec(t, in, o, &err);
    if (!m) {
        fail_msg("decode %s failed: %s", in, err.msg);
    }
    char *out = msm_pbjson_encode_text(m, NULL, false, &err);
    if (!out) {
        fail_msg("encode failed: %s", err.msg);
    }
    assert_string_equal(out, want);
    ProtobufCMessage *m2 = dec(t, out, NULL, &err);
    if (!m2) {
        fail_msg("re-decode of %s failed: %s", out, err.msg);
    }
    size_t n1 = protobuf_c_message_get_packed_size(m);
    size_t n2 = protobuf_c_message_get_packed_size(m2);
    uint8_t *b1 = msm_xmalloc(n1 + 1), *b2 = msm_xmalloc(n2 + 1);
    protobuf_c_message_pack(m, b1);
    protobuf_c_message_pack(m2, b2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b1);
    free(b2);
    protobuf_c_message_free_unpacked(m2, NULL);
    free(out);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void roundtrip(const char *t, const char *in, const char *want)
{
    roundtrip_opts(t, in, want, NULL);
}

/* Decoding <in> as <t> fails with exactly <want>. */
static void expect_error_opts(const char *t, const char *in, const char *want,
                              const struct msm_pbjson_opts *o)
{
    struct msm_err err = {{0}};
    ProtobufCMessage *m = dec(t, in, o, &err);
    if (m) {
        char *out = msm_pbjson_encode_text(m, NULL, false, &err);
        fail_msg("decode of %s succeeded (%s), expected error \"%s\"", in, out, want);
    }
    assert_string_equal(err.msg, want);
}

static void expect_error(const char *t, const char *in, const char *want)
{
    expect_error_opts(t, in, want, NULL);
}

/* Decoding fails and the message contains <part>. */
static void expect_error_part(const char *t, const char *in, const char *part)
{
    struct msm_err err = {{0}};
    ProtobufCMessage *m = dec(t, in, NULL, &err);
    if (m) {
        protobuf_c_message_free_unpacked(m, NULL);
        fail_msg("decode of %s succeeded, expected an error containing \"%s\"", in, part);
    }
    if (!strstr(err.msg, part)) {
        fail_msg("error \"%s\" does not contain \"%s\"", err.msg, part);
    }
}

/* ---- scalars ------------------------------------------------------------------------------ */

static void test_out_of_range_path(void **state)
{
    (void)state;
    expect_error("envoy.config.bootstrap.v3.Bootstrap",
                 "{\"static_resources\":{\"clusters\":[{\"name\":\"a\"},{\"name\":\"b\"},"
                 "{\"name\":\"c\",\"load_assignment\":{\"cluster_name\":\"c\",\"endpoints\":[{"
                 "\"lb_endpoints\":[{\"endpoint\":{\"address\":{\"socket_address\":{"
                 "\"address\":\"1.2.3.4\",\"port_value\":4294967296}}}}]}]}}]}}",
                 "static_resources.clusters[2].load_assignment.endpoints[0].lb_endpoints[0]."
                 "endpoint.address.socket_address.port_value: value 4294967296 out of range for "
                 "uint32");
}

static void test_integers(void **state)
{
    (void)state;
    /* 32-bit from numbers or numeric strings, exponent forms, no fractions */
    roundtrip(SOCKADDR, "{\"port_value\":\"8080\"}", "{\"port_value\":8080}");
    roundtrip(SOCKADDR, "{\"port_value\":1e3}", "{\"port_value\":1000}");
    roundtrip(SOCKADDR, "{\"port_value\":80.0}", "{\"port_value\":80}");
    roundtrip(SOCKADDR, "{\"port_value\":4294967295}", "{\"port_value\":4294967295}");
    expect_error(SOCKADDR, "{\"port_value\":1.5}",
                 "port_value: value 1.5 is not an integer (uint32)");
    expect_error(SOCKADDR, "{\"port_value\":-1}", "port_value: value -1 out of range for uint32");
    expect_error(SOCKADDR, "{\"port_value\":\"12a\"}", "port_value: invalid uint32 value \"12a\"");
    expect_error(SOCKADDR, "{\"port_value\":true}",
                 "port_value: expected uint32 (a number or numeric string), got a boolean");
    /* 64-bit: strings out, numbers or strings in */
    roundtrip("envoy.type.v3.Int64Range", "{\"start\":-5,\"end\":\"9223372036854775807\"}",
              "{\"start\":\"-5\",\"end\":\"9223372036854775807\"}");
    roundtrip("envoy.type.v3.Int64Range", "{\"start\":\"-9223372036854775808\"}",
              "{\"start\":\"-9223372036854775808\"}");
    expect_error("envoy.type.v3.Int64Range", "{\"end\":\"9223372036854775808\"}",
                 "end: value \"9223372036854775808\" out of range for int64");
    roundtrip("google.protobuf.UInt64Value", "\"18446744073709551615\"",
              "\"18446744073709551615\"");
    expect_error("google.protobuf.UInt64Value", "\"18446744073709551616\"",
                 "value \"18446744073709551616\" out of range for uint64");
    roundtrip("google.protobuf.Int32Value", "-2147483648", "-2147483648");
    expect_error("google.protobuf.Int32Value", "2147483648",
                 "value 2147483648 out of range for int32");
}

static void test_floats(void **state)
{
    (void)state;
    roundtrip("envoy.type.v3.DoubleRange", "{\"start\":0.1,\"end\":\"Infinity\"}",
              "{\"start\":0.1,\"end\":\"Infinity\"}");
    roundtrip("envoy.type.v3.DoubleRange", "{\"start\":\"-Infinity\",\"end\":\"NaN\"}",
              "{\"start\":\"-Infinity\",\"end\":\"NaN\"}");
    roundtrip("envoy.type.v3.DoubleRange", "{\"start\":\"1.25e2\"}", "{\"start\":125}");
    roundtrip("envoy.type.v3.DoubleRange", "{\"start\":0.30000000000000004}",
              "{\"start\":0.30000000000000004}");
    /* float: shortest form of the float value, as protobuf prints it */
    roundtrip("google.protobuf.FloatValue", "0.1", "0.1");
    roundtrip("google.protobuf.FloatValue", "3.4028234663852886e38", "3.40282347e+38");
    expect_error("google.protobuf.FloatValue", "1e39", "value 1e+39 out of range for float");
    expect_error("google.protobuf.DoubleValue", "\"1x\"", "invalid double value \"1x\"");
    expect_error("google.protobuf.DoubleValue", "\"nan\"", "invalid double value \"nan\"");
}

static void test_bool_string_bytes(void **state)
{
    (void)state;
    roundtrip(SOCKADDR, "{\"ipv4_compat\":true,\"address\":\"::\"}",
              "{\"address\":\"::\",\"ipv4_compat\":true}");
    expect_error(SOCKADDR, "{\"ipv4_compat\":\"true\"}",
                 "ipv4_compat: expected true or false, got a string");
    expect_error(SOCKADDR, "{\"address\":80}", "address: expected a string, got a number");
    expect_error_part(SOCKADDR, "{\"address\":\"a\\u0000b\"}",
                      "line 1, column 21: \\u0000 is not allowed");
    /* bytes: standard or URL-safe alphabet, padded or not; printed standard + padding */
    roundtrip("envoy.config.core.v3.DataSource", "{\"inline_bytes\":\"aGVsbG8=\"}",
              "{\"inline_bytes\":\"aGVsbG8=\"}");
    roundtrip("envoy.config.core.v3.DataSource", "{\"inline_bytes\":\"aGVsbG8\"}",
              "{\"inline_bytes\":\"aGVsbG8=\"}");
    roundtrip("envoy.config.core.v3.DataSource", "{\"inlineBytes\":\"-_8\"}",
              "{\"inline_bytes\":\"+/8=\"}");
    roundtrip("google.protobuf.BytesValue", "\"\"", "\"\"");
    expect_error("envoy.config.core.v3.DataSource", "{\"inline_bytes\":\"aGVsbG8==\"}",
                 "inline_bytes: invalid base64 \"aGVsbG8==\"");
    expect_error("envoy.config.core.v3.DataSource", "{\"inline_bytes\":\"a\"}",
                 "inline_bytes: invalid base64 \"a\"");
    expect_error("envoy.config.core.v3.DataSource", "{\"inline_bytes\":\"a*bc\"}",
                 "inline_bytes: invalid base64 \"a*bc\"");
    expect_error("envoy.config.core.v3.DataSource", "{\"inline_bytes\":3}",
                 "inline_bytes: expected a base64 string, got a number");
}

static void test_enums(void **state)
{
    (void)state;
    struct msm_err err;
    roundtrip(SOCKADDR, "{\"protocol\":1}", "{\"protocol\":\"UDP\"}");
    roundtrip(SOCKADDR, "{\"protocol\":\"UDP\"}", "{\"protocol\":\"UDP\"}");
    roundtrip(SOCKADDR, "{\"protocol\":0}", "{}"); /* default omitted */
    roundtrip(SOCKADDR, "{\"protocol\":77}", "{\"protocol\":77}"); /* open enum */
    expect_error(SOCKADDR, "{\"protocol\":\"QUIC\"}",
                 "protocol: unknown value \"QUIC\" for enum "
                 "envoy.config.core.v3.SocketAddress.Protocol");
    /* ignored like protobuf's ignore_unknown_fields */
    roundtrip_opts(SOCKADDR, "{\"protocol\":\"QUIC\",\"address\":\"a\"}", "{\"address\":\"a\"}",
                   &lenient_unknown);
    ProtobufCMessage *m = dec(SOCKADDR, "{\"protocol\":\"QUIC\"}", &lenient_unknown, &err);
    assert_non_null(m);
    assert_int_equal(((Envoy__Config__Core__V3__SocketAddress *)m)->protocol, 0);
    protobuf_c_message_free_unpacked(m, NULL);
    expect_error(SOCKADDR, "{\"protocol\":1.5}", "protocol: value 1.5 is not an integer (int32)");
}

/* ---- names, unknown fields, oneofs, nulls ------------------------------------------------- */

static void test_names(void **state)
{
    (void)state;
    struct msm_err err;
    roundtrip(SOCKADDR, "{\"portValue\":80,\"resolverName\":\"r\"}",
              "{\"port_value\":80,\"resolver_name\":\"r\"}");
    ProtobufCMessage *m = dec(SOCKADDR, "{\"port_value\":80,\"resolver_name\":\"r\"}", NULL, &err);
    assert_non_null(m);
    struct msm_pbjson_enc_opts camel = {.camel_case = true};
    char *s = msm_pbjson_encode_text(m, &camel, false, &err);
    assert_string_equal(s, "{\"portValue\":80,\"resolverName\":\"r\"}");
    free(s);
    protobuf_c_message_free_unpacked(m, NULL);
    expect_error(SOCKADDR, "{\"port_value\":80,\"portValue\":81}",
                 "port_value: field given twice (original and lowerCamelCase names)");
    /* the preprocessing renamed `base` to `base_`: JSON still says "base" */
    roundtrip("envoy.config.bootstrap.v3.Runtime", "{\"base\":{\"a\":1}}", "{\"base\":{\"a\":1}}");
    m = dec("envoy.config.bootstrap.v3.Runtime", "{\"base\":{\"k\":\"v\"}}", NULL, &err);
    assert_non_null(m);
    assert_non_null(((Envoy__Config__Bootstrap__V3__Runtime *)m)->base_);
    protobuf_c_message_free_unpacked(m, NULL);
    expect_error("envoy.config.bootstrap.v3.Runtime", "{\"base_\":{}}",
                 "unknown field \"base_\" in envoy.config.bootstrap.v3.Runtime");
}

static void test_unknown_fields(void **state)
{
    (void)state;
    const char *in = "{\"static_resources\":{\"clusters\":[{\"name\":\"a\"},"
                     "{\"name\":\"b\",\"bogus\":{\"x\":1}}]},\"nope\":2}";
    expect_error("envoy.config.bootstrap.v3.Bootstrap", in,
                 "static_resources.clusters[1]: unknown field \"bogus\" in "
                 "envoy.config.cluster.v3.Cluster");
    roundtrip_opts("envoy.config.bootstrap.v3.Bootstrap", in,
                   "{\"static_resources\":{\"clusters\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}",
                   &lenient_unknown);
    expect_error("envoy.config.bootstrap.v3.Bootstrap", "{\"@type\":\"x\"}",
                 "unknown field \"@type\" in envoy.config.bootstrap.v3.Bootstrap");
}

static void test_oneof(void **state)
{
    (void)state;
    expect_error(SOCKADDR, "{\"address\":\"a\",\"port_value\":80,\"named_port\":\"http\"}",
                 "named_port: oneof conflict: \"port_value\" and \"named_port\" are both set");
    /* a set member is printed even at its default value (presence) */
    roundtrip(SOCKADDR, "{\"port_value\":0}", "{\"port_value\":0}");
    roundtrip(SOCKADDR, "{\"named_port\":\"\"}", "{\"named_port\":\"\"}");
    /* null leaves a member unset, so it does not conflict */
    roundtrip(SOCKADDR, "{\"port_value\":null,\"named_port\":\"x\"}", "{\"named_port\":\"x\"}");
}

static void test_nulls_and_defaults(void **state)
{
    (void)state;
    roundtrip("envoy.config.cluster.v3.Cluster",
              "{\"name\":null,\"load_assignment\":null,\"filters\":null,\"metadata\":null}", "{}");
    roundtrip("envoy.config.cluster.v3.Cluster", "{\"name\":\"\",\"ignore_health_on_host_removal\":"
              "false,\"connect_timeout\":\"0s\",\"load_assignment\":{}}",
              "{\"connect_timeout\":\"0s\",\"load_assignment\":{}}");
    expect_error("envoy.config.cluster.v3.Cluster", "{\"filters\":[null]}",
                 "filters[0]: null is not allowed in a repeated field");
    /* google.protobuf.Value: null is a value */
    roundtrip("google.protobuf.Struct", "{\"a\":null,\"b\":[null]}", "{\"a\":null,\"b\":[null]}");
    roundtrip("google.protobuf.Value", "null", "null");
    expect_error("envoy.config.cluster.v3.Cluster", "[]",
                 "expected an object for envoy.config.cluster.v3.Cluster, got an array");
    expect_error("envoy.config.cluster.v3.Cluster", "{\"filters\":{}}",
                 "filters: expected an array, got an object");
}

static void test_maps(void **state)
{
    (void)state;
    roundtrip("envoy.config.core.v3.Metadata",
              "{\"filter_metadata\":{\"istio\":{\"config\":\"/a\",\"n\":2},\"b\":{}}}",
              "{\"filter_metadata\":{\"istio\":{\"config\":\"/a\",\"n\":2},\"b\":{}}}");
    roundtrip("envoy.config.core.v3.Metadata",
              "{\"typedFilterMetadata\":{\"x\":{\"@type\":"
              "\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"2s\"}}}",
              "{\"typed_filter_metadata\":{\"x\":{\"@type\":"
              "\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"2s\"}}}");
    expect_error("envoy.config.core.v3.Metadata", "{\"filter_metadata\":{\"istio\":3}}",
                 "filter_metadata[\"istio\"]: expected an object for google.protobuf.Struct, "
                 "got a number");
    expect_error("envoy.config.core.v3.Metadata", "{\"filter_metadata\":{\"istio\":null}}",
                 "filter_metadata[\"istio\"]: map value cannot be null");
    expect_error("envoy.config.core.v3.Metadata", "{\"filter_metadata\":[]}",
                 "filter_metadata: expected an object (map), got an array");
}

/* ---- well-known types --------------------------------------------------------------------- */

static void check_duration(const char *in, int64_t secs, int32_t nanos, const char *out)
{
    struct msm_err err;
    char json[128];
    snprintf(json, sizeof(json), "\"%s\"", in);
    ProtobufCMessage *m = dec("google.protobuf.Duration", json, NULL, &err);
    if (!m) {
        fail_msg("%s: %s", in, err.msg);
    }
    Google__Protobuf__Duration *d = (Google__Protobuf__Duration *)m;
    assert_int_equal(d->seconds, secs);
    assert_int_equal(d->nanos, nanos);
    char *s = msm_pbjson_encode_text(m, NULL, false, &err);
    snprintf(json, sizeof(json), "\"%s\"", out);
    assert_string_equal(s, json);
    free(s);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_duration(void **state)
{
    (void)state;
    check_duration("1.5s", 1, 500000000, "1.500s");
    check_duration("-0.000000001s", 0, -1, "-0.000000001s");
    check_duration("-1.25s", -1, -250000000, "-1.250s");
    check_duration("0.000010s", 0, 10000, "0.000010s");
    check_duration("10s", 10, 0, "10s");
    check_duration("315576000000s", 315576000000LL, 0, "315576000000s");
    check_duration("-315576000000.999999999s", -315576000000LL, -999999999,
                   "-315576000000.999999999s");
    const char *bad[] = {"315576000001s", "1.0000000001s", "1", "s", "1.s", ".5s", "1s ", "+1s",
                         "1e3s", "-s", "1.5ms"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[64], want[256];
        snprintf(json, sizeof(json), "{\"connect_timeout\":\"%s\"}", bad[i]);
        snprintf(want, sizeof(want), "connect_timeout: invalid duration \"%s\"", bad[i]);
        expect_error_part("envoy.config.cluster.v3.Cluster", json, want);
    }
    expect_error("envoy.config.cluster.v3.Cluster", "{\"connect_timeout\":5}",
                 "connect_timeout: expected a duration string such as \"1.5s\", got a number");
    /* encoding normalizes what arbitrary binary may carry (mixed signs, nanos overflow) */
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 1;
    d.nanos = -500000000;
    struct msm_err err;
    char *s = msm_pbjson_encode_text(&d.base, NULL, false, &err);
    assert_string_equal(s, "\"0.500s\"");
    free(s);
}

static void check_timestamp(const char *in, int64_t secs, int32_t nanos, const char *out)
{
    struct msm_err err;
    char json[128];
    snprintf(json, sizeof(json), "\"%s\"", in);
    ProtobufCMessage *m = dec("google.protobuf.Timestamp", json, NULL, &err);
    if (!m) {
        fail_msg("%s: %s", in, err.msg);
    }
    Google__Protobuf__Timestamp *t = (Google__Protobuf__Timestamp *)m;
    assert_int_equal(t->seconds, secs);
    assert_int_equal(t->nanos, nanos);
    char *s = msm_pbjson_encode_text(m, NULL, false, &err);
    snprintf(json, sizeof(json), "\"%s\"", out);
    assert_string_equal(s, json);
    free(s);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_timestamp(void **state)
{
    (void)state;
    check_timestamp("1972-01-01T10:00:20.021Z", 63108020, 21000000, "1972-01-01T10:00:20.021Z");
    check_timestamp("1970-01-01T00:00:00Z", 0, 0, "1970-01-01T00:00:00Z");
    check_timestamp("1970-01-01T01:00:00+01:00", 0, 0, "1970-01-01T00:00:00Z");
    check_timestamp("1969-12-31T23:59:59.5-00:30", 1799, 500000000,
                    "1970-01-01T00:29:59.500Z");
    check_timestamp("2024-02-29T12:00:00.123456Z", 1709208000, 123456000,
                    "2024-02-29T12:00:00.123456Z");
    check_timestamp("2023-06-20T09:08:58.000000001Z", 1687252138, 1,
                    "2023-06-20T09:08:58.000000001Z");
    check_timestamp("0001-01-01T00:00:00Z", -62135596800LL, 0, "0001-01-01T00:00:00Z");
    check_timestamp("9999-12-31T23:59:59.999999999Z", 253402300799LL, 999999999,
                    "9999-12-31T23:59:59.999999999Z");
    const char *bad[] = {"2023-02-29T00:00:00Z", "2023-13-01T00:00:00Z", "2023-01-01 00:00:00Z",
                         "2023-01-01T24:00:00Z", "2023-01-01T00:00:00", "0000-12-31T00:00:00Z",
                         "0001-01-01T00:00:00+00:01", "2023-01-01T00:00:00.1234567891Z",
                         "2023-1-01T00:00:00Z", "2023-01-01T00:00:60Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[96], want[128];
        snprintf(json, sizeof(json), "\"%s\"", bad[i]);
        snprintf(want, sizeof(want), "invalid timestamp \"%s\"", bad[i]);
        expect_error_part("google.protobuf.Timestamp", json, want);
    }
}

static void test_struct_value_list(void **state)
{
    (void)state;
    roundtrip("google.protobuf.Struct",
              "{\"a\":1,\"b\":[true,null,\"x\",{\"c\":2.5}],\"d\":{},\"e\":[],\"f\":-0.5}",
              "{\"a\":1,\"b\":[true,null,\"x\",{\"c\":2.5}],\"d\":{},\"e\":[],\"f\":-0.5}");
    roundtrip("google.protobuf.ListValue", "[1,\"2\",[3]]", "[1,\"2\",[3]]");
    roundtrip("google.protobuf.Value", "{\"k\":[{}]}", "{\"k\":[{}]}");
    roundtrip("google.protobuf.Value", "\"s\"", "\"s\"");
    expect_error("google.protobuf.Struct", "[]",
                 "expected an object for google.protobuf.Struct, got an array");
    expect_error("google.protobuf.ListValue", "{}",
                 "expected an array for google.protobuf.ListValue, got an object");
    expect_error_part("google.protobuf.Struct", "{\"a\":{\"b\":[\"x\\u0000\"]}}",
                      "line 1, column 20: \\u0000 is not allowed");
}

static void test_wrappers(void **state)
{
    (void)state;
    roundtrip("envoy.config.cluster.v3.Cluster",
              "{\"per_connection_buffer_limit_bytes\":1024,\"respect_dns_ttl\":true}",
              "{\"per_connection_buffer_limit_bytes\":1024,\"respect_dns_ttl\":true}");
    /* a wrapper holding its default is still present */
    roundtrip("envoy.config.cluster.v3.Cluster", "{\"per_connection_buffer_limit_bytes\":0}",
              "{\"per_connection_buffer_limit_bytes\":0}");
    roundtrip("google.protobuf.BoolValue", "false", "false");
    roundtrip("google.protobuf.StringValue", "\"x\"", "\"x\"");
    roundtrip("google.protobuf.Int64Value", "123", "\"123\"");
    roundtrip("google.protobuf.UInt32Value", "\"7\"", "7");
    roundtrip("google.protobuf.DoubleValue", "\"NaN\"", "\"NaN\"");
    roundtrip("google.protobuf.BytesValue", "\"AAE=\"", "\"AAE=\"");
    expect_error("envoy.config.cluster.v3.Cluster", "{\"respect_dns_ttl\":{\"value\":true}}",
                 "respect_dns_ttl: expected true or false, got an object");
}

/* google.protobuf.FieldMask is not in the API closure: a hand-written descriptor (exactly what
 * protoc-c generates) exercises the codec's generic FieldMask support. */
struct test_field_mask {
    ProtobufCMessage base;
    size_t n_paths;
    char **paths;
};
static const ProtobufCMessageDescriptor field_mask_desc;
static void field_mask_init(struct test_field_mask *m)
{
    static const struct test_field_mask init = {PROTOBUF_C_MESSAGE_INIT(&field_mask_desc), 0,
                                                NULL};
    *m = init;
}
static const ProtobufCFieldDescriptor field_mask_fields[1] = {
    {"paths", 1, PROTOBUF_C_LABEL_REPEATED, PROTOBUF_C_TYPE_STRING,
     offsetof(struct test_field_mask, n_paths), offsetof(struct test_field_mask, paths), NULL,
     NULL, 0, 0, NULL, NULL},
};
static const unsigned field_mask_by_name[] = {0};
static const ProtobufCIntRange field_mask_ranges[] = {{1, 0}, {0, 1}};
static const ProtobufCMessageDescriptor field_mask_desc = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "google.protobuf.FieldMask",
    "FieldMask",
    "Google__Protobuf__FieldMask",
    "google.protobuf",
    sizeof(struct test_field_mask),
    1,
    field_mask_fields,
    field_mask_by_name,
    1,
    field_mask_ranges,
    (ProtobufCMessageInit)field_mask_init,
    NULL,
    NULL,
    NULL,
};

static void test_field_mask(void **state)
{
    (void)state;
    struct msm_err err;
    json_t *in = json_string("fooBar.bazQux,a,x.yZ");
    ProtobufCMessage *m = msm_pbjson_decode(&field_mask_desc, in, NULL, &err);
    json_decref(in);
    assert_non_null(m);
    struct test_field_mask *fm = (struct test_field_mask *)m;
    assert_int_equal(fm->n_paths, 3);
    assert_string_equal(fm->paths[0], "foo_bar.baz_qux");
    assert_string_equal(fm->paths[1], "a");
    assert_string_equal(fm->paths[2], "x.y_z");
    char *s = msm_pbjson_encode_text(m, NULL, false, &err);
    assert_string_equal(s, "\"fooBar.bazQux,a,x.yZ\"");
    free(s);
    /* allocated as protobuf-c would: packs and frees */
    uint8_t buf[128];
    size_t n = protobuf_c_message_pack(m, buf);
    ProtobufCMessage *m2 = protobuf_c_message_unpack(&field_mask_desc, NULL, n, buf);
    assert_non_null(m2);
    assert_string_equal(((struct test_field_mask *)m2)->paths[0], "foo_bar.baz_qux");
    protobuf_c_message_free_unpacked(m2, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    in = json_string("");
    m = msm_pbjson_decode(&field_mask_desc, in, NULL, &err);
    json_decref(in);
    assert_non_null(m);
    assert_int_equal(((struct test_field_mask *)m)->n_paths, 0);
    protobuf_c_message_free_unpacked(m, NULL);
    in = json_integer(1);
    assert_null(msm_pbjson_decode(&field_mask_desc, in, NULL, &err));
    assert_string_equal(err.msg, "expected a field mask string, got a number");
    json_decref(in);
}

static void test_empty(void **state)
{
    (void)state;
    roundtrip("google.protobuf.Empty", "{}", "{}");
    expect_error("google.protobuf.Empty", "{\"a\":1}",
                 "unknown field \"a\" in google.protobuf.Empty");
    roundtrip("google.protobuf.Any", "{\"@type\":\"type.googleapis.com/google.protobuf.Empty\"}",
              "{\"@type\":\"type.googleapis.com/google.protobuf.Empty\"}");
    roundtrip("google.protobuf.Any",
              "{\"@type\":\"type.googleapis.com/google.protobuf.Empty\",\"value\":{}}",
              "{\"@type\":\"type.googleapis.com/google.protobuf.Empty\"}");
}

/* ---- Any ---------------------------------------------------------------------------------- */

static void test_any(void **state)
{
    (void)state;
    struct msm_err err;
    const char *in = "{\"@type\":\"type.googleapis.com/" TCP_PROXY "\",\"statPrefix\":\"x\","
                     "\"cluster\":\"c\"}";
    roundtrip("google.protobuf.Any", in,
              "{\"@type\":\"type.googleapis.com/" TCP_PROXY "\",\"stat_prefix\":\"x\","
              "\"cluster\":\"c\"}");
    ProtobufCMessage *m = dec("google.protobuf.Any", in, NULL, &err);
    assert_non_null(m);
    Google__Protobuf__Any *any = (Google__Protobuf__Any *)m;
    assert_string_equal(any->type_url, "type.googleapis.com/" TCP_PROXY);
    ProtobufCMessage *tp = msm_pb_any_unpack(any, type(TCP_PROXY), NULL, &err);
    assert_non_null(tp);
    assert_string_equal(((Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy *)tp)
                            ->stat_prefix, "x");
    protobuf_c_message_free_unpacked(tp, NULL);
    assert_null(msm_pb_any_unpack(any, type(SOCKADDR), NULL, &err));
    assert_string_equal(err.msg, "type " TCP_PROXY " where " SOCKADDR " is expected");
    protobuf_c_message_free_unpacked(m, NULL);

    /* well-known payloads sit under "value"; Any in Any */
    roundtrip("google.protobuf.Any",
              "{\"@type\":\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"1.5s\"}",
              "{\"@type\":\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"1.500s\"}");
    roundtrip("google.protobuf.Any",
              "{\"@type\":\"type.googleapis.com/google.protobuf.Any\",\"value\":{\"@type\":"
              "\"type.googleapis.com/google.protobuf.Struct\",\"value\":{\"a\":[1]}}}",
              "{\"@type\":\"type.googleapis.com/google.protobuf.Any\",\"value\":{\"@type\":"
              "\"type.googleapis.com/google.protobuf.Struct\",\"value\":{\"a\":[1]}}}");
    roundtrip("google.protobuf.Any", "{}", "{}");
    expect_error("envoy.config.listener.v3.Filter",
                 "{\"name\":\"f\",\"typed_config\":{\"@type\":\"type.googleapis.com/foo.Bar\"}}",
                 "typed_config: unknown type \"type.googleapis.com/foo.Bar\" in \"@type\"");
    expect_error("google.protobuf.Any", "{\"stat_prefix\":\"x\"}",
                 "google.protobuf.Any without \"@type\"");
    expect_error("google.protobuf.Any", "{\"@type\":5}",
                 "\"@type\" must be a string, got a number");
    expect_error("google.protobuf.Any",
                 "{\"@type\":\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"1s\","
                 "\"x\":1}",
                 "unknown field \"x\" in google.protobuf.Any holding google.protobuf.Duration");
    expect_error("envoy.config.listener.v3.Filter",
                 "{\"typed_config\":{\"@type\":\"type.googleapis.com/" TCP_PROXY "\","
                 "\"idle_timeout\":\"x\"}}",
                 "typed_config.idle_timeout: invalid duration \"x\" (expected e.g. \"1.5s\", at "
                 "most 9 fractional digits, within +-315576000000s)");

    /* encoding an Any whose type or bytes are bad is an error, with the path */
    Envoy__Config__Core__V3__TypedExtensionConfig tec =
        ENVOY__CONFIG__CORE__V3__TYPED_EXTENSION_CONFIG__INIT;
    Google__Protobuf__Any a = GOOGLE__PROTOBUF__ANY__INIT;
    tec.typed_config = &a;
    a.type_url = "type.googleapis.com/foo.Unknown";
    assert_null(msm_pbjson_encode(&tec.base, NULL, &err));
    assert_string_equal(err.msg,
                        "typed_config: unknown type \"type.googleapis.com/foo.Unknown\" in "
                        "google.protobuf.Any");
    uint8_t junk[] = {0x0a, 0x05, 'a'};
    a.type_url = "type.googleapis.com/" TCP_PROXY;
    a.value.data = junk;
    a.value.len = sizeof(junk);
    assert_null(msm_pbjson_encode(&tec.base, NULL, &err));
    assert_string_equal(err.msg, "typed_config: google.protobuf.Any: " TCP_PROXY
                                 ": cannot parse 3 bytes of protobuf");
    a.type_url = "";
    assert_null(msm_pbjson_encode(&tec.base, NULL, &err));
    assert_string_equal(err.msg,
                        "typed_config: google.protobuf.Any with 3 bytes of value but no type_url");
}

static void typed_struct_case(const char *ts_type)
{
    struct msm_err err;
    char in[512];
    snprintf(in, sizeof(in),
             "{\"@type\":\"type.googleapis.com/%s\",\"type_url\":\"type.googleapis.com/" TCP_PROXY
             "\",\"value\":{\"statPrefix\":\"ts\",\"cluster\":\"c1\",\"idle_timeout\":\"2s\"}}",
             ts_type);
    ProtobufCMessage *m = dec("google.protobuf.Any", in, NULL, &err);
    if (!m) {
        fail_msg("%s", err.msg);
    }
    Google__Protobuf__Any *any = (Google__Protobuf__Any *)m;
    ProtobufCMessage *tp = msm_pb_any_unpack(any, type(TCP_PROXY), NULL, &err);
    if (!tp) {
        fail_msg("%s", err.msg);
    }
    Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy *t = (void *)tp;
    assert_string_equal(t->stat_prefix, "ts");
    assert_string_equal(t->cluster, "c1");
    assert_non_null(t->idle_timeout);
    assert_int_equal(t->idle_timeout->seconds, 2);
    protobuf_c_message_free_unpacked(tp, NULL);
    /* expect = NULL: whatever the TypedStruct names */
    tp = msm_pb_any_unpack(any, NULL, NULL, &err);
    assert_non_null(tp);
    assert_string_equal(tp->descriptor->name, TCP_PROXY);
    protobuf_c_message_free_unpacked(tp, NULL);
    assert_null(msm_pb_any_unpack(any, type(SOCKADDR), NULL, &err));
    char want[256];
    snprintf(want, sizeof(want), "%s carries " TCP_PROXY " where " SOCKADDR " is expected",
             ts_type);
    assert_string_equal(err.msg, want);
    protobuf_c_message_free_unpacked(m, NULL);

    /* the Struct is decoded with the caller's options */
    snprintf(in, sizeof(in),
             "{\"@type\":\"type.googleapis.com/%s\",\"type_url\":\"type.googleapis.com/" TCP_PROXY
             "\",\"value\":{\"stat_prefix\":80,\"extra\":1}}",
             ts_type);
    m = dec("google.protobuf.Any", in, NULL, &err);
    assert_non_null(m);
    assert_null(msm_pb_any_unpack((Google__Protobuf__Any *)m, NULL, NULL, &err));
    snprintf(want, sizeof(want), TCP_PROXY " (in %s): stat_prefix: expected a string, got a number",
             ts_type);
    assert_string_equal(err.msg, want);
    struct msm_pbjson_opts both = {.allow_unknown_fields = true, .lenient_scalars = true};
    tp = msm_pb_any_unpack((Google__Protobuf__Any *)m, NULL, &both, &err);
    assert_non_null(tp);
    assert_string_equal(((Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy *)tp)
                            ->stat_prefix, "80");
    protobuf_c_message_free_unpacked(tp, NULL);
    protobuf_c_message_free_unpacked(m, NULL);

    /* unknown inner type */
    snprintf(in, sizeof(in),
             "{\"@type\":\"type.googleapis.com/%s\",\"type_url\":\"type.googleapis.com/x.Y\"}",
             ts_type);
    m = dec("google.protobuf.Any", in, NULL, &err);
    assert_non_null(m);
    assert_null(msm_pb_any_unpack((Google__Protobuf__Any *)m, NULL, NULL, &err));
    snprintf(want, sizeof(want), "%s: unknown type \"type.googleapis.com/x.Y\"", ts_type);
    assert_string_equal(err.msg, want);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_typed_struct(void **state)
{
    (void)state;
    typed_struct_case("udpa.type.v1.TypedStruct");
    typed_struct_case("xds.type.v3.TypedStruct");
    struct msm_err err;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    assert_null(msm_pb_any_unpack(&any, NULL, NULL, &err));
    assert_string_equal(err.msg, "Any without a type_url");
    any.type_url = "type.googleapis.com/nope.Nope";
    assert_null(msm_pb_any_unpack(&any, NULL, NULL, &err));
    assert_string_equal(err.msg, "unknown type \"type.googleapis.com/nope.Nope\"");
}

/* ---- options, text, limits ---------------------------------------------------------------- */

static void test_lenient_scalars(void **state)
{
    (void)state;
    roundtrip_opts(SOCKADDR, "{\"address\":80,\"resolver_name\":true}",
                   "{\"address\":\"80\",\"resolver_name\":\"true\"}", &lenient_yaml);
    roundtrip_opts(SOCKADDR, "{\"address\":1.5}", "{\"address\":\"1.5\"}", &lenient_yaml);
    roundtrip_opts("google.protobuf.StringValue", "-3", "\"-3\"", &lenient_yaml);
    /* only where a string is expected */
    expect_error_opts(SOCKADDR, "{\"ipv4_compat\":\"true\"}",
                      "ipv4_compat: expected true or false, got a string", &lenient_yaml);
    expect_error_opts(SOCKADDR, "{\"address\":[1]}", "address: expected a string, got an array",
                      &lenient_yaml);
}

static void test_decode_text_errors(void **state)
{
    (void)state;
    expect_error(SOCKADDR, "{\n  \"address\": ,\n}",
                 "line 2, column 14: unexpected token near ','");
    expect_error(SOCKADDR, "{\"address\":\"a\",\"address\":\"b\"}",
                 "line 1, column 24: duplicate object key near '\"address\"'");
    expect_error(SOCKADDR, "", "line 1, column 0: unexpected token near end of file");
}

static void test_depth_limit(void **state)
{
    (void)state;
    struct msm_err err;
    /* 30-character keys: the field path (~100 x 31 characters) overflows the decoder's path
     * buffer; the reason must still be there, after the start of the path. */
    char *deep = msm_xmalloc(8192);
    size_t o = 0;
    for (int i = 0; i < 150; i++) {
        o += (size_t)sprintf(deep + o, "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":");
    }
    o += (size_t)sprintf(deep + o, "1");
    for (int i = 0; i < 150; i++) {
        deep[o++] = '}';
    }
    deep[o] = '\0';
    ProtobufCMessage *m = dec("google.protobuf.Struct", deep, NULL, &err);
    assert_null(m);
    assert_int_equal(strncmp(err.msg, "[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"][", 35), 0);
    assert_non_null(strstr(err.msg, "nested deeper than 100 levels"));
    free(deep);
    /* binary: ListValue -> Value -> ListValue ... 600 levels are refused before protobuf-c
     * recurses into them */
    uint8_t *buf;
    size_t len;
    size_t cap = 1 << 16;
    buf = msm_xmalloc(cap);
    len = 0;
    for (int i = 0; i < 300; i++) {
        /* prepend: ListValue.values(1) LEN [Value.list_value(6) LEN [prev]] */
        uint8_t hdr[16];
        size_t h = 0;
        size_t inner = len;
        uint8_t vhdr[8];
        size_t vh = 0;
        vhdr[vh++] = 0x32;
        for (size_t x = inner; ; x >>= 7) {
            vhdr[vh++] = (uint8_t)((x & 0x7f) | (x >= 0x80 ? 0x80 : 0));
            if (x < 0x80) {
                break;
            }
        }
        size_t value_len = vh + inner;
        hdr[h++] = 0x0a;
        for (size_t x = value_len; ; x >>= 7) {
            hdr[h++] = (uint8_t)((x & 0x7f) | (x >= 0x80 ? 0x80 : 0));
            if (x < 0x80) {
                break;
            }
        }
        memmove(buf + h + vh, buf, len);
        memcpy(buf, hdr, h);
        memcpy(buf + h, vhdr, vh);
        len += h + vh;
    }
    m = msm_pb_unpack(type("google.protobuf.ListValue"), buf, len, &err);
    assert_null(m);
    assert_string_equal(err.msg,
                        "google.protobuf.ListValue: messages nested deeper than 100 levels");
    m = protobuf_c_message_unpack(type("google.protobuf.ListValue"), NULL, len, buf);
    assert_non_null(m); /* protobuf-c itself accepts it ... */
    assert_null(msm_pbjson_encode(m, NULL, &err)); /* ... the encoder refuses the depth */
    assert_non_null(strstr(err.msg, "nested deeper than 100 levels"));
    protobuf_c_message_free_unpacked(m, NULL);
    free(buf);
}

static void test_encode_details(void **state)
{
    (void)state;
    struct msm_err err;
    /* invalid UTF-8 from binary input is replaced, never dropped or crashed on */
    Envoy__Config__Core__V3__SocketAddress sa = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT;
    sa.address = "a\xff" "b\xc3";
    char *s = msm_pbjson_encode_text(&sa.base, NULL, false, &err);
    assert_string_equal(s, "{\"address\":\"a\xef\xbf\xbd" "b\xef\xbf\xbd\"}");
    free(s);
    /* escapes and pretty printing (1-space indent, as /config_dump) */
    sa.address = "q\"\\\n\x01";
    sa.port_specifier_case = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    sa.port_value = 9;
    s = msm_pbjson_encode_text(&sa.base, NULL, true, &err);
    assert_string_equal(s, "{\n \"address\": \"q\\\"\\\\\\n\\u0001\",\n \"port_value\": 9\n}");
    free(s);
    /* always_print_primitive_fields (Envoy's /server_info): fields without presence */
    struct msm_pbjson_enc_opts all = {.always_print_primitive_fields = true};
    Envoy__Config__Core__V3__SocketAddress empty = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT;
    s = msm_pbjson_encode_text(&empty.base, &all, false, &err);
    assert_string_equal(s, "{\"protocol\":\"TCP\",\"address\":\"\",\"resolver_name\":\"\","
                           "\"ipv4_compat\":false}");
    free(s);
    ProtobufCMessage *node = dec("envoy.config.core.v3.Node", "{\"id\":\"n\"}", NULL, &err);
    assert_non_null(node);
    s = msm_pbjson_encode_text(node, &all, false, &err);
    protobuf_c_message_free_unpacked(node, NULL);
    assert_string_equal(s, "{\"id\":\"n\",\"cluster\":\"\",\"user_agent_name\":\"\","
                           "\"extensions\":[],\"client_features\":[],\"listening_addresses\":[],"
                           "\"dynamic_parameters\":{}}");
    free(s);
    json_t *j = json_pack("{s:[], s:{}, s:[i, f, n]}", "a", "b", "c", 1, 2.5);
    s = msm_pbjson_dumps(j, true);
    assert_string_equal(s, "{\n \"a\": [],\n \"b\": {},\n \"c\": [\n  1,\n  2.5,\n  null\n ]\n}");
    free(s);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_of_range_path), cmocka_unit_test(test_integers),
        cmocka_unit_test(test_floats),            cmocka_unit_test(test_bool_string_bytes),
        cmocka_unit_test(test_enums),             cmocka_unit_test(test_names),
        cmocka_unit_test(test_unknown_fields),    cmocka_unit_test(test_oneof),
        cmocka_unit_test(test_nulls_and_defaults), cmocka_unit_test(test_maps),
        cmocka_unit_test(test_duration),          cmocka_unit_test(test_timestamp),
        cmocka_unit_test(test_struct_value_list), cmocka_unit_test(test_wrappers),
        cmocka_unit_test(test_field_mask),        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_any),               cmocka_unit_test(test_typed_struct),
        cmocka_unit_test(test_lenient_scalars),   cmocka_unit_test(test_decode_text_errors),
        cmocka_unit_test(test_depth_limit),       cmocka_unit_test(test_encode_details),
    };
    return cmocka_run_group_tests_name("config_pbjson", tests, NULL, NULL);
}
