/* placeholder while the filter is written */
#include "filters/http/istio_alpn/istio_alpn.h"

const struct msm_http_filter_ops msm_istio_alpn_ops = {
    .name = "istio.alpn",
    .config_type = "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
};
