#pragma once
/* envoy.filters.http.grpc_stats: per-cluster gRPC counters for gRPC requests
 * (content-type application/grpc*): cluster.<stat name>.grpc.<service>.<method>.{success,
 * failure,total,request_message_count,response_message_count} for methods allowed by
 * stats_for_all_methods / individual_method_stats_allowlist, and cluster.<stat name>.grpc.
 * {success,failure,total,...} for the others. Success is grpc-status 0 (trailers, or the
 * headers of a trailers-only response). emit_filter_state feeds telemetry that is not built yet
 * (observability issue). */
#include "filter/http.h"

extern const struct msm_http_filter_ops msm_grpc_stats_ops;
