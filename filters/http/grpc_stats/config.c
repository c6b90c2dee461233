/* placeholder while the filter is written */
#include "filters/http/grpc_stats/grpc_stats.h"

const struct msm_http_filter_ops msm_grpc_stats_ops = {
    .name = "envoy.filters.http.grpc_stats",
    .config_type = "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
};
