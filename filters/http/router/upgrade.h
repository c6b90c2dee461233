#pragma once
/* envoy.filters.http.router: the upgrade and CONNECT path (upgrade.c). The connection manager
 * has already accepted the upgrade type (hcm_upgrade.c); the router picks how the request goes
 * upstream and when the tunnel is up. */
#include <stdbool.h>

#include "http/headers.h"
#include "http/pool.h"
#include "http/route.h"

/* The upstream for request <h> on route <rt>: MSM_POOL_PLAIN (an ordinary request, pooled),
 * MSM_POOL_TUNNEL_HTTP1 (an Upgrade, or a CONNECT forwarded as a CONNECT: a fresh HTTP/1.1
 * connection of its own, or a stream of the HTTP/2 pool when the request goes upstream as
 * HTTP/2: router.c start_attempt), MSM_POOL_TUNNEL_TCP (a CONNECT the route terminates with
 * upgrade_configs[].connect_config: a raw TCP connection to the host). */
enum msm_pool_kind msm_router_tunnel_kind(const struct msm_route *rt, const struct msm_hdrs *h);
/* Does upstream response <status> to request <req> open the tunnel (101 to an Upgrade, 2xx to
 * a CONNECT)? */
bool msm_router_opens_tunnel(const struct msm_hdrs *req, int status);
