/* The network filter registry: an explicit list of what this build implements (like nginx's
 * ngx_modules.c), looked up by config type, else by name. Types that exist in the Envoy API but
 * are not implemented are reported as known so the error says "not supported yet". */
#include <string.h>

#include "config/types.h"
#include "filter/network.h"
#include "filters/network/http_connection_manager/hcm.h"
#include "filters/network/istio_stats/istio_stats.h"
#include "filters/network/metadata_exchange/metadata_exchange.h"
#include "filters/network/rbac/rbac.h"
#include "filters/network/rtsp_proxy/rtsp_proxy.h"
#include "filters/network/tcp_proxy/tcp_proxy.h"

static const struct msm_network_filter_ops *const network_filters[] = {
    &msm_tcp_proxy_ops,
    &msm_hcm_ops,
    &msm_rtsp_proxy_ops,
    &msm_istio_stats_ops,
    &msm_rbac_network_ops,
    &msm_istio_authn_ops,
    &msm_mx_ops,
};

const struct msm_network_filter_ops *msm_network_filter_find(const char *config_type,
                                                             const char *name, bool *known)
{
    *known = false;
    for (size_t i = 0; i < sizeof(network_filters) / sizeof(network_filters[0]); i++) {
        const struct msm_network_filter_ops *o = network_filters[i];
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
