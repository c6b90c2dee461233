#pragma once
/* envoy.filters.http.fault: delay and abort injection (Istio VirtualService fault), from the
 * filter config or, per route, from typed_per_filter_config (HTTPFault, which replaces the
 * filter's). Delays hold the request (DI) then continue; aborts answer with an HTTP status or a
 * gRPC status (FI). Header-controlled faults (x-envoy-fault-*) when header_abort/header_delay
 * are configured; headers matchers; max_active_faults. Stats under
 * "http.<stat_prefix>.fault.". Not implemented (NACKed): response_rate_limit,
 * downstream_nodes. */
#include "filter/http.h"

#define MSM_FAULT_STATS(C, G, H)                                                                  \
    C(delays_injected) C(aborts_injected) C(response_rl_injected) C(faults_overflow)              \
    G(active_faults)
MSM_STATS_STRUCT(msm_fault_stats, MSM_FAULT_STATS);
MSM_STATS_INIT_FN(msm_fault_stats, MSM_FAULT_STATS)

extern const struct msm_http_filter_ops msm_fault_ops;
