#pragma once
/* envoy.filters.http.cors: CORS by the route's policy (typed_per_filter_config CorsPolicy at
 * route, virtual host or route configuration level, most specific first). Preflights
 * (OPTIONS + Origin + Access-Control-Request-Method) from an allowed origin are answered here
 * (200 with the access-control-* headers); other requests from an allowed origin get
 * access-control-allow-origin / -credentials / -expose-headers on the response. Stats:
 * http.<stat_prefix>.cors.origin_valid / origin_invalid. */
#include "filter/http.h"

extern const struct msm_http_filter_ops msm_cors_ops;
