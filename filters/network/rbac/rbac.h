#pragma once
/* envoy.filters.network.rbac and io.istio.network.authn (see rbac_filter.c). */
#include "filter/network.h"

extern const struct msm_network_filter_ops msm_rbac_network_ops;
extern const struct msm_network_filter_ops msm_istio_authn_ops;
