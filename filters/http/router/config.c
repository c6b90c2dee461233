/* placeholder while the filter is written */
#include "filters/http/router/router.h"

const struct msm_http_filter_ops msm_router_ops = {
    .name = "envoy.filters.http.router",
    .config_type = "envoy.extensions.filters.http.router.v3.Router",
};
