/* placeholder while the filter is written */
#include "filters/http/fault/fault.h"

const struct msm_http_filter_ops msm_fault_ops = {
    .name = "envoy.filters.http.fault",
    .config_type = "envoy.extensions.filters.http.fault.v3.HTTPFault",
};
