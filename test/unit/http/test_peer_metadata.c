/* Istio's HTTP peer metadata exchange (filters/http/peer_metadata): the x-envoy-peer-metadata
 * header codec (base64 of a google.protobuf.Struct, Envoy's Base64::decodeWithoutPadding rules)
 * against hand-computed vectors and a header value produced by a real Envoy (istio/proxy's
 * filter_test.cc SampleIstioHeader, an Istio 1.5 productpage sidecar, unpadded), and the
 * mapping of Istio's null-VM Wasm plugins onto the native filters (src/filter/http_registry.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/istio/http/peer_metadata/config.pb-c.h"
#include "stats/config.pb-c.h"

#include "config/pbjson.h"
#include "config/types.h"
#include "filter/http.h"
#include "filters/http/istio_stats/istio_stats.h"
#include "filters/http/peer_metadata/peer_metadata.h"
#include "filters/network/metadata_exchange/workload.h"

static const char sample[] =
    "ChIKBWlzdGlvEgkaB3NpZGVjYXIKDgoIU1RTX1BPUlQSAhoAChEKB01FU0hfSUQSBhoEbWVzaAocChZTVEFDS0RS"
    "SVZFUl9UT0tFTl9GSUxFEgIaAAowCihTVEFDS0RSSVZFUl9MT0dHSU5HX0VYUE9SVF9JTlRFUlZBTF9TRUNTEgQa"
    "AjIwCjYKDElOU1RBTkNFX0lQUxImGiQxMC41Mi4wLjM0LGZlODA6OmEwNzU6MTFmZjpmZTVlOmYxY2QKFAoDYXBw"
    "Eg0aC3Byb2R1Y3RwYWdlCisKG1NFQ1VSRV9TVEFDS0RSSVZFUl9FTkRQT0lOVBIMGgpsb2NhbGhvc3Q6Cl0KGmt1"
    "YmVybmV0ZXMuaW8vbGltaXQtcmFuZ2VyEj8aPUxpbWl0UmFuZ2VyIHBsdWdpbiBzZXQ6IGNwdSByZXF1ZXN0IGZv"
    "ciBjb250YWluZXIgcHJvZHVjdHBhZ2UKIQoNV09SS0xPQURfTkFNRRIQGg5wcm9kdWN0cGFnZS12MQofChFJTlRF"
    "UkNFUFRJT05fTU9ERRIKGghSRURJUkVDVAoeCgpDTFVTVEVSX0lEEhAaDmNsaWVudC1jbHVzdGVyCkkKD0lTVElP"
    "X1BST1hZX1NIQRI2GjRpc3Rpby1wcm94eTo0N2U0NTU5YjhlNGYwZDUxNmMwZDE3YjIzM2QxMjdhM2RlYjNkN2Nl"
    "ClIKBU9XTkVSEkkaR2t1YmVybmV0ZXM6Ly9hcGlzL2FwcHMvdjEvbmFtZXNwYWNlcy9kZWZhdWx0L2RlcGxveW1l"
    "bnRzL3Byb2R1Y3RwYWdlLXYxCsEBCgZMQUJFTFMStgEqswEKFAoDYXBwEg0aC3Byb2R1Y3RwYWdlCiEKEXBvZC10"
    "ZW1wbGF0ZS1oYXNoEgwaCjg0OTc1YmM3NzgKMwofc2VydmljZS5pc3Rpby5pby9jYW5vbmljYWwtbmFtZRIQGg5w"
    "cm9kdWN0cGFnZS12MQoyCiNzZXJ2aWNlLmlzdGlvLmlvL2Nhbm9uaWNhbC1yZXZpc2lvbhILGgl2ZXJzaW9uLTEK"
    "DwoHdmVyc2lvbhIEGgJ2MQopCgROQU1FEiEaH3Byb2R1Y3RwYWdlLXYxLTg0OTc1YmM3NzgtcHh6MncKLQoIUE9E"
    "X05BTUUSIRofcHJvZHVjdHBhZ2UtdjEtODQ5NzViYzc3OC1weHoydwoaCg1JU1RJT19WRVJTSU9OEgkaBzEuNS1k"
    "ZXYKHwoVSU5DTFVERV9JTkJPVU5EX1BPUlRTEgYaBDkwODAKmwEKEVBMQVRGT1JNX01FVEFEQVRBEoUBKoIBCiYK"
    "FGdjcF9na2VfY2x1c3Rlcl9uYW1lEg4aDHRlc3QtY2x1c3RlcgocCgxnY3BfbG9jYXRpb24SDBoKdXMtZWFzdDQt"
    "YgodCgtnY3BfcHJvamVjdBIOGgx0ZXN0LXByb2plY3QKGwoSZ2NwX3Byb2plY3RfbnVtYmVyEgUaAzEyMwopCg9T"
    "RVJWSUNFX0FDQ09VTlQSFhoUYm9va2luZm8tcHJvZHVjdHBhZ2UKHQoQQ09ORklHX05BTUVTUEFDRRIJGgdkZWZh"
    "dWx0Cg8KB3ZlcnNpb24SBBoCdjEKHgoYU1RBQ0tEUklWRVJfUk9PVF9DQV9GSUxFEgIaAAohChFwb2QtdGVtcGxh"
    "dGUtaGFzaBIMGgo4NDk3NWJjNzc4Ch8KDkFQUF9DT05UQUlORVJTEg0aC3Rlc3QsYm9uemFpChYKCU5BTUVTUEFD"
    "RRIJGgdkZWZhdWx0CjMKK1NUQUNLRFJJVkVSX01PTklUT1JJTkdfRVhQT1JUX0lOVEVSVkFMX1NFQ1MSBBoCMjA";

static void test_base64(void **state)
{
    (void)state;
    unsigned char *b;
    size_t n;
    assert_true(msm_pm_base64_decode("QQ==", 4, &b, &n));
    assert_int_equal(n, 1);
    assert_int_equal(b[0], 'A');
    free(b);
    /* Padding is optional. */
    assert_true(msm_pm_base64_decode("QUI", 3, &b, &n));
    assert_int_equal(n, 2);
    assert_memory_equal(b, "AB", 2);
    free(b);
    assert_true(msm_pm_base64_decode("", 0, &b, &n));
    assert_int_equal(n, 0);
    free(b);
    /* Not base64: a character outside the standard alphabet, a lone sixth of a byte, bits set
     * past the end, padding inside. */
    static const char *const bad[] = {"QQ-_", "Q", "QR==", "QUJ", "Q=Q=", "QUJD\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(msm_pm_base64_decode(bad[i], strlen(bad[i]), &b, &n));
        assert_int_equal(n, 0);
        free(b);
    }
}

static void test_header_codec(void **state)
{
    (void)state;
    /* Struct{fields: {"NAME": Value{string_value: "a"}}}: 0a 0b (entry) 0a 04 NAME 12 03 1a 01 a */
    json_t *st = json_pack("{s:s}", "NAME", "a");
    char *v = msm_pm_header_encode(st);
    assert_string_equal(v, "CgsKBE5BTUUSAxoBYQ==");
    json_t *back;
    assert_true(msm_pm_header_decode(v, strlen(v), &back));
    assert_true(json_equal(back, st));
    json_decref(back);
    assert_true(msm_pm_header_decode("CgsKBE5BTUUSAxoBYQ", 18, &back)); /* unpadded */
    assert_true(json_equal(back, st));
    json_decref(back);
    free(v);
    json_decref(st);
    /* Envoy: an invalid value decodes to no bytes, which is an empty Struct (a peer). */
    assert_true(msm_pm_header_decode("%%%", 3, &back));
    assert_int_equal(json_object_size(back), 0);
    json_decref(back);
    /* Bytes that are not a Struct: no peer. */
    assert_false(msm_pm_header_decode("/w==", 4, &back));
    assert_null(back);
}

static void test_envoy_sample(void **state)
{
    (void)state;
    json_t *st;
    assert_true(msm_pm_header_decode(sample, strlen(sample), &st));
    struct msm_mx_workload wl;
    msm_mx_workload_from_struct(st, NULL, 0, NULL, NULL, &wl);
    assert_string_equal(wl.workload_name, "productpage-v1");
    assert_string_equal(wl.namespace_name, "default");
    assert_string_equal(wl.cluster_name, "client-cluster");
    assert_string_equal(wl.canonical_name, "productpage-v1");
    assert_string_equal(wl.canonical_revision, "version-1");
    assert_string_equal(wl.app_name, "productpage");
    assert_string_equal(wl.app_version, "v1");
    assert_int_equal(wl.type, MSM_MX_WORKLOAD_DEPLOYMENT);
    /* What we would send back for that workload reads the same on the other side. */
    json_t *ours = msm_mx_workload_to_struct(&wl);
    char *v = msm_pm_header_encode(ours);
    json_t *again;
    assert_true(msm_pm_header_decode(v, strlen(v), &again));
    assert_true(json_equal(again, ours));
    json_decref(again);
    json_decref(ours);
    free(v);
    msm_mx_workload_deinit(&wl);
    json_decref(st);
}

/* ---- Wasm null-VM plugins ------------------------------------------------------------------- */

static ProtobufCMessage *wasm(const char *runtime, const char *module, const char *configuration)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"config\": {%s%s%s\"vm_config\": {\"runtime\": \"%s\", \"code\": "
             "{\"local\": {\"inline_string\": \"%s\"}}}}}",
             configuration ? "\"configuration\": " : "", configuration ? configuration : "",
             configuration ? ", " : "", runtime, module);
    struct msm_err err = {{0}};
    ProtobufCMessage *m = msm_pbjson_decode_text(
        msm_types_find("envoy.extensions.filters.http.wasm.v3.Wasm"), json, strlen(json), NULL,
        &err);
    if (!m) {
        fail_msg("%s: %s", json, err.msg);
    }
    return m;
}

static void test_wasm_stats(void **state)
{
    (void)state;
    struct msm_err err = {{0}};
    ProtobufCMessage *native;
    /* Istio <= 1.17: PluginConfig as JSON text in a StringValue, booleans as strings. */
    ProtobufCMessage *w = wasm("envoy.wasm.runtime.null", "envoy.wasm.stats",
                               "{\"@type\": \"type.googleapis.com/google.protobuf.StringValue\", "
                               "\"value\": \"{\\\"debug\\\": \\\"false\\\", \\\"stat_prefix\\\": "
                               "\\\"istio\\\", \\\"disable_host_header_fallback\\\": \\\"true\\\","
                               " \\\"unknown_field\\\": 1}\"}");
    assert_ptr_equal(msm_http_filter_wasm(w, 1, &native, &err), &msm_istio_http_stats_ops);
    assert_string_equal(native->descriptor->name, "stats.PluginConfig");
    assert_true(((Stats__PluginConfig *)native)->disable_host_header_fallback);
    assert_string_equal(((Stats__PluginConfig *)native)->stat_prefix, "istio");
    protobuf_c_message_free_unpacked(native, NULL);
    protobuf_c_message_free_unpacked(w, NULL);
    /* No configuration: the defaults. A PluginConfig Any works too. */
    w = wasm("envoy.wasm.runtime.null", "envoy.wasm.stats", NULL);
    assert_ptr_equal(msm_http_filter_wasm(w, 2, &native, &err), &msm_istio_http_stats_ops);
    assert_false(((Stats__PluginConfig *)native)->disable_host_header_fallback);
    protobuf_c_message_free_unpacked(native, NULL);
    protobuf_c_message_free_unpacked(w, NULL);
    w = wasm("envoy.wasm.runtime.null", "envoy.wasm.stats",
             "{\"@type\": \"type.googleapis.com/stats.PluginConfig\", \"reporter\": "
             "\"SERVER_GATEWAY\"}");
    assert_ptr_equal(msm_http_filter_wasm(w, 2, &native, &err), &msm_istio_http_stats_ops);
    assert_int_equal(((Stats__PluginConfig *)native)->reporter, STATS__REPORTER__SERVER_GATEWAY);
    protobuf_c_message_free_unpacked(native, NULL);
    protobuf_c_message_free_unpacked(w, NULL);
    /* Configuration that is not a JSON object: a NACK naming the field. */
    w = wasm("envoy.wasm.runtime.null", "envoy.wasm.stats",
             "{\"@type\": \"type.googleapis.com/google.protobuf.StringValue\", \"value\": \"[\"}");
    assert_null(msm_http_filter_wasm(w, 2, &native, &err));
    assert_null(native);
    assert_non_null(strstr(err.msg, "config.configuration"));
    protobuf_c_message_free_unpacked(w, NULL);
    w = wasm("envoy.wasm.runtime.null", "envoy.wasm.stats",
             "{\"@type\": \"type.googleapis.com/google.protobuf.StringValue\", \"value\": "
             "\"{\\\"tcp_reporting_duration\\\": \\\"soon\\\"}\"}");
    assert_null(msm_http_filter_wasm(w, 2, &native, &err));
    assert_non_null(strstr(err.msg, "tcp_reporting_duration"));
    protobuf_c_message_free_unpacked(w, NULL);
}

static void test_wasm_metadata_exchange(void **state)
{
    (void)state;
    struct msm_err err = {{0}};
    ProtobufCMessage *native;
    ProtobufCMessage *w = wasm("envoy.wasm.runtime.null", "envoy.wasm.metadata_exchange",
                               "{\"@type\": \"type.googleapis.com/envoy.tcp.metadataexchange."
                               "config.MetadataExchange\"}");
    static const struct {
        int direction;
        size_t down, up;
    } cases[] = {{1, 1, 0}, {2, 0, 1}, {0, 1, 1}};
    for (size_t i = 0; i < 3; i++) {
        assert_ptr_equal(msm_http_filter_wasm(w, cases[i].direction, &native, &err),
                         &msm_peer_metadata_ops);
        const Io__Istio__Http__PeerMetadata__Config *c = (const void *)native;
        assert_int_equal(c->n_downstream_discovery, 1);
        assert_int_equal(c->n_upstream_discovery, 1);
        assert_int_equal(c->n_downstream_propagation, cases[i].down);
        assert_int_equal(c->n_upstream_propagation, cases[i].up);
        protobuf_c_message_free_unpacked(native, NULL);
    }
    protobuf_c_message_free_unpacked(w, NULL);
    /* Any other module, or another runtime: refused. */
    w = wasm("envoy.wasm.runtime.null", "my.authz.plugin", NULL);
    assert_null(msm_http_filter_wasm(w, 1, &native, &err));
    assert_non_null(strstr(err.msg, "Wasm is not supported"));
    protobuf_c_message_free_unpacked(w, NULL);
    w = wasm("envoy.wasm.runtime.v8", "envoy.wasm.stats", NULL);
    assert_null(msm_http_filter_wasm(w, 1, &native, &err));
    protobuf_c_message_free_unpacked(w, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_header_codec),
        cmocka_unit_test(test_envoy_sample),
        cmocka_unit_test(test_wasm_stats),
        cmocka_unit_test(test_wasm_metadata_exchange),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
