#pragma once
/* istio.stats as an HTTP filter (stats.PluginConfig in http_filters): Istio's HTTP metrics for
 * each request, after istio/proxy istio_stats.cc (IstioStatsFilter::log and reportHelper).
 *
 * When a stream ends (completed or reset; Envoy's access log time), one series of
 * stats/istio_stats.h gets istio_requests_total += 1 and three histogram samples:
 * - istio_request_duration_milliseconds: from the first request byte to the end, whole ms;
 * - istio_request_bytes: the request header map's size (names + values, pseudo-headers
 *   included, as Envoy's HeaderMap::byteSize) + the request body bytes; the header map is the
 *   one the router got (after the filters ahead of the router changed it);
 * - istio_response_bytes: the size of the response headers and trailers as they were sent
 *   downstream + the response body bytes sent downstream.
 * That is Envoy's request.total_size / response.total_size, which Istio's Wasm-era stats (the
 * null-VM envoy.wasm.stats mapped onto this filter) reported; today's istio_stats.cc reports
 * the downstream wire bytes instead, which for HTTP/1.1 adds the request/status line and the
 * ": " and CRLF separators (and chunk framing), and for HTTP/2 is HPACK-compressed frames.
 * Labels: reporter and the peer labels (peer from the HTTP peer metadata exchange; on the
 * client, else the chosen endpoint's istio.workload metadata), request_protocol "http" or
 * "grpc", response_code (0 without a response), grpc_response_status (gRPC only: grpc-status
 * of the trailers, else of the headers, else mapped from the HTTP status, as
 * Grpc::Common::getGrpcStatus; -1 when not a number <= 16), response_flags,
 * connection_security_policy; principals from the downstream TLS (server) or the upstream TLS
 * (client).
 * gRPC requests also count messages (5-byte length-prefixed frames) both ways:
 * istio_request_messages_total / istio_response_messages_total, labelled with reporter and the
 * peer labels only, reported every tcp_reporting_duration once the peer is known and at the
 * end (Envoy reads these counts from the grpc_stats filter's emit_filter_state object; here
 * the filter counts them itself). */
#include "filter/http.h"

extern const struct msm_http_filter_ops msm_istio_http_stats_ops;
