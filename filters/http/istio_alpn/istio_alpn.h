#pragma once
/* istio.alpn (istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig): chooses the ALPN list
 * to offer on the upstream TLS connection from the protocol the request will use upstream
 * (HTTP10 / HTTP11 / HTTP2): Istio sends istio-http/1.1, istio-h2... so the peer sidecar's
 * filter chain match recognizes mesh traffic. The list goes into the stream info
 * (alpn_override), where the router's upstream TLS connections read it. */
#include "filter/http.h"

extern const struct msm_http_filter_ops msm_istio_alpn_ops;
