/* The HTTP filter registry: an explicit list of the HTTP filters this build implements (as the
 * network filter registry), plus the list of telemetry-only filters accepted as no-ops.
 *
 * Rules (issue 8, contract section 5):
 * - A filter in http_filters[] must be implemented, or be one of the accepted no-ops below, or
 *   be marked is_optional; anything else is NACKed with its name and type.
 * - Only filters whose sole effect is telemetry may be accepted as no-ops. Security filters
 *   (rbac, ext_authz, jwt_authn, ...) are never accepted without an implementation. */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "config/types.h"
#include "filter/http.h"
#include "filters/http/cors/cors.h"
#include "filters/http/fault/fault.h"
#include "filters/http/grpc_stats/grpc_stats.h"
#include "filters/http/istio_alpn/istio_alpn.h"
#include "filters/http/rbac/rbac.h"
#include "filters/http/router/router.h"

static const struct msm_http_filter_ops *const http_filters[] = {
    &msm_router_ops,
    &msm_fault_ops,
    &msm_cors_ops,
    &msm_grpc_stats_ops,
    &msm_istio_alpn_ops,
    &msm_http_rbac_ops,
};

/* Accepted no-ops: telemetry-only filters whose data plane effect is nil until the
 * observability issue (Istio metrics, peer metadata exchange, access logs) implements them.
 * Each entry says why it is safe to pass traffic through untouched. */
static const struct {
    const char *type;
    const char *reason;
} noop_filters[] = {
    {"stats.PluginConfig", "istio.stats: Istio standard metrics (observability issue)"},
    {"io.istio.http.peer_metadata.Config",
     "istio.metadata_exchange: x-envoy-peer-metadata headers feed telemetry labels only "
     "(observability issue)"},
    /* Only Istio's null-VM plugins pass: the HCM config checks the Wasm module first. */
    {"envoy.extensions.filters.http.wasm.v3.Wasm",
     "envoy.wasm.stats / envoy.wasm.metadata_exchange null-VM plugins of Istio <= 1.18 "
     "(observability issue)"},
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
