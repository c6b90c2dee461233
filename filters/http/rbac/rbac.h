#pragma once
/* envoy.filters.http.rbac: the RBAC engine (src/rbac) on HTTP requests — methods, paths,
 * headers, plus everything the network filter sees (mTLS principals, addresses, SNI). Denied
 * requests get 403 "RBAC: access denied". Per-route RBACPerRoute replaces the filter's rules.
 * Stats: http.<prefix>.rbac.[<rules_stat_prefix>]allowed|denied and
 * http.<prefix>.rbac.<shadow_rules_stat_prefix>shadow_allowed|shadow_denied. */
#include "filter/http.h"

extern const struct msm_http_filter_ops msm_http_rbac_ops;
