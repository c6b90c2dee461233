/* placeholder while the filter is written */
#include "filters/http/cors/cors.h"

const struct msm_http_filter_ops msm_cors_ops = {
    .name = "envoy.filters.http.cors",
    .config_type = "envoy.extensions.filters.http.cors.v3.Cors",
};
