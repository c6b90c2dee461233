/* The HTTP filter registry: an explicit list of the HTTP filters this build implements (as the
 * network filter registry), the list of telemetry-only filters accepted as no-ops, and the
 * mapping of Istio's null-VM Wasm plugins onto native filters.
 *
 * Rules (issue 8, contract section 5):
 * - A filter in http_filters[] must be implemented, or be one of the accepted no-ops below, or
 *   be marked is_optional; anything else is NACKed with its name and type.
 * - Only filters whose sole effect is telemetry may be accepted as no-ops. Security filters
 *   (rbac, ext_authz, jwt_authn, ...) are never accepted without an implementation. */
#include <stdio.h>
#include <string.h>

#include "envoy/extensions/filters/http/wasm/v3/wasm.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

#include "common/alloc.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "filter/http.h"
#include "filters/http/cors/cors.h"
#include "filters/http/fault/fault.h"
#include "filters/http/grpc_stats/grpc_stats.h"
#include "filters/http/istio_alpn/istio_alpn.h"
#include "filters/http/istio_stats/istio_stats.h"
#include "filters/http/peer_metadata/peer_metadata.h"
#include "filters/http/rbac/rbac.h"
#include "filters/http/router/router.h"

static const struct msm_http_filter_ops *const http_filters[] = {
    &msm_router_ops,
    &msm_fault_ops,
    &msm_cors_ops,
    &msm_grpc_stats_ops,
    &msm_istio_alpn_ops,
    &msm_http_rbac_ops,
    &msm_istio_http_stats_ops,
    &msm_peer_metadata_ops,
};

/* Accepted no-ops: telemetry-only filters whose data plane effect is nil. Each entry says why
 * it is safe to pass traffic through untouched. */
static const struct {
    const char *type;
    const char *reason;
} noop_filters[] = {
    {"envoy.extensions.filters.http.compressor.v3.Compressor",
     "compressor: responses are sent uncompressed, which every client accepts"},
};

const struct msm_http_filter_ops *msm_http_filter_find(const char *config_type, const char *name,
                                                       bool *known)
{
    *known = false;
    for (size_t i = 0; i < MSM_ARRAY_SIZE(http_filters); i++) {
        const struct msm_http_filter_ops *o = http_filters[i];
        if (config_type ? !strcmp(o->config_type, config_type) : !strcmp(o->name, name)) {
            *known = true;
            return o;
        }
    }
    if (config_type && msm_types_find(config_type)) {
        *known = true;
    }
    return NULL;
}

const struct msm_http_filter_ops *msm_http_filter_find_route_type(const char *type)
{
    for (size_t i = 0; i < MSM_ARRAY_SIZE(http_filters); i++) {
        const struct msm_http_filter_ops *o = http_filters[i];
        if (o->route_config_type && !strcmp(o->route_config_type, type)) {
            return o;
        }
    }
    return NULL;
}

const char *msm_http_filter_noop_reason(const char *config_type)
{
    for (size_t i = 0; i < MSM_ARRAY_SIZE(noop_filters); i++) {
        if (!strcmp(noop_filters[i].type, config_type)) {
            return noop_filters[i].reason;
        }
    }
    return NULL;
}

/* ---- Istio's null-VM Wasm plugins ----------------------------------------------------------- */

#define WASM_TYPE "envoy.extensions.filters.http.wasm.v3.Wasm"

/* Istio <= 1.17 renders the stats plugin's PluginConfig as JSON text in a StringValue, with
 * booleans as strings ("debug": "false"); protobuf's JSON parser took them, ours wants JSON
 * booleans. */
static void fix_bool_strings(json_t *o)
{
    static const char *const keys[] = {"debug", "disable_host_header_fallback",
                                       "disableHostHeaderFallback"};
    for (size_t i = 0; i < MSM_ARRAY_SIZE(keys); i++) {
        json_t *v = json_object_get(o, keys[i]);
        if (json_is_string(v) && (!strcmp(json_string_value(v), "true") ||
                                  !strcmp(json_string_value(v), "false"))) {
            json_object_set_new(o, keys[i], json_boolean(!strcmp(json_string_value(v), "true")));
        }
    }
}

/* envoy.wasm.stats: its plugin configuration as a stats.PluginConfig (unknown JSON fields are
 * ignored, as the plugin's parser did). */
static ProtobufCMessage *wasm_stats_config(const Google__Protobuf__Any *any, struct msm_err *err)
{
    const ProtobufCMessageDescriptor *d = msm_types_find("stats.PluginConfig");
    struct msm_pbjson_opts jo = {.allow_unknown_fields = true};
    if (!d) {
        msm_err_set(err, "internal: stats.PluginConfig not registered");
        return NULL;
    }
    const char *url = any ? any->type_url : "";
    const char *slash = strrchr(url, '/');
    if (!any || !url[0] || (slash && !strcmp(slash + 1, "google.protobuf.StringValue"))) {
        const char *text = "";
        ProtobufCMessage *sv = any && url[0] ? msm_pb_any_unpack(any, NULL, NULL, err) : NULL;
        if (any && url[0] && !sv) {
            msm_err_prefix(err, "config.configuration");
            return NULL;
        }
        if (sv) {
            text = ((Google__Protobuf__StringValue *)sv)->value;
        }
        json_error_t je;
        json_t *j = text[0] ? json_loads(text, JSON_REJECT_DUPLICATES, &je) : json_object();
        protobuf_c_message_free_unpacked(sv, NULL);
        if (!json_is_object(j)) {
            json_decref(j);
            msm_err_set(err, "config.configuration: envoy.wasm.stats configuration is not a "
                             "JSON object (%s)", j ? "not an object" : je.text);
            return NULL;
        }
        fix_bool_strings(j);
        ProtobufCMessage *m = msm_pbjson_decode(d, j, &jo, err);
        json_decref(j);
        if (!m) {
            msm_err_prefix(err, "config.configuration (envoy.wasm.stats as stats.PluginConfig)");
        }
        return m;
    }
    ProtobufCMessage *m = msm_pb_any_unpack(any, d, &jo, err);
    if (!m) {
        msm_err_prefix(err, "config.configuration");
    }
    return m;
}

/* envoy.wasm.metadata_exchange: istio_headers both ways; like the plugin, an inbound listener
 * does not announce us upstream and an outbound one not downstream. Its configuration only ever
 * held max_peer_cache_size (no cache here): not read. */
static ProtobufCMessage *wasm_mx_config(int traffic_direction, struct msm_err *err)
{
    const ProtobufCMessageDescriptor *d = msm_types_find("io.istio.http.peer_metadata.Config");
    if (!d) {
        msm_err_set(err, "internal: io.istio.http.peer_metadata.Config not registered");
        return NULL;
    }
    json_t *j = json_pack("{s:[{s:{}}], s:[{s:{}}]}", "downstream_discovery", "istio_headers",
                          "upstream_discovery", "istio_headers");
    if (traffic_direction != 1) { /* not INBOUND */
        json_object_set_new(j, "upstream_propagation", json_pack("[{s:{}}]", "istio_headers"));
    }
    if (traffic_direction != 2) { /* not OUTBOUND */
        json_object_set_new(j, "downstream_propagation", json_pack("[{s:{}}]", "istio_headers"));
    }
    ProtobufCMessage *m = msm_pbjson_decode(d, j, NULL, err);
    json_decref(j);
    return m;
}

const struct msm_http_filter_ops *msm_http_filter_wasm(const ProtobufCMessage *msg,
                                                       int traffic_direction,
                                                       ProtobufCMessage **native,
                                                       struct msm_err *err)
{
    *native = NULL;
    if (strcmp(msg->descriptor->name, WASM_TYPE) != 0) {
        msm_err_set(err, "internal: not a Wasm filter");
        return NULL;
    }
    const Envoy__Extensions__Filters__Http__Wasm__V3__Wasm *w = (const void *)msg;
    const Envoy__Extensions__Wasm__V3__PluginConfig *pc = w->config;
    const Envoy__Extensions__Wasm__V3__VmConfig *vm =
        pc && pc->vm_case == ENVOY__EXTENSIONS__WASM__V3__PLUGIN_CONFIG__VM_VM_CONFIG
            ? pc->vm_config
            : NULL;
    const Envoy__Config__Core__V3__AsyncDataSource *code = vm ? vm->code : NULL;
    const Envoy__Config__Core__V3__DataSource *local =
        code && code->specifier_case == ENVOY__CONFIG__CORE__V3__ASYNC_DATA_SOURCE__SPECIFIER_LOCAL
            ? code->local
            : NULL;
    const char *module = local && local->specifier_case ==
                                      ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING
                             ? local->inline_string
                             : NULL;
    /* Any other module could do anything, authorization included: never accepted. */
    if (!vm || strcmp(vm->runtime, "envoy.wasm.runtime.null") != 0 || !module ||
        (strcmp(module, "envoy.wasm.stats") != 0 &&
         strcmp(module, "envoy.wasm.metadata_exchange") != 0)) {
        msm_err_set(err, "Wasm is not supported, except Istio's null-VM plugins "
                         "envoy.wasm.stats and envoy.wasm.metadata_exchange (config.vm_config: "
                         "runtime \"envoy.wasm.runtime.null\", code.local.inline_string)");
        return NULL;
    }
    if (!strcmp(module, "envoy.wasm.stats")) {
        *native = wasm_stats_config(pc->configuration, err);
        return *native ? &msm_istio_http_stats_ops : NULL;
    }
    *native = wasm_mx_config(traffic_direction, err);
    return *native ? &msm_peer_metadata_ops : NULL;
}

void msm_rf_format(uint32_t flags, char *out, size_t n)
{
    static const char *const names[] = {
#define MSM__RF_NAME(e, s) s,
        MSM_RF_LIST(MSM__RF_NAME)
#undef MSM__RF_NAME
    };
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < MSM_ARRAY_SIZE(names); i++) {
        if (flags & (1u << i)) {
            int w = snprintf(out + k, n - k, "%s%s", k ? "," : "", names[i]);
            if (w < 0 || (size_t)w >= n - k) {
                break;
            }
            k += (size_t)w;
        }
    }
    if (!k) {
        snprintf(out, n, "-");
    }
}
