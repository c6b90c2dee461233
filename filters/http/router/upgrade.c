/* envoy.filters.http.router: upgrades and CONNECT (see upgrade.h).
 *
 * As Envoy: an upgrade (WebSocket...) or a CONNECT goes upstream on a connection of its own
 * (HTTP/1.1), or as a stream of the cluster's HTTP/2 pool when the cluster speaks HTTP/2 for the
 * request (the codec sends an extended CONNECT, http2.c), never retried; the request's body is
 * the tunnel's client-to-server bytes and the upstream's answer (101 / 2xx) opens the tunnel,
 * after which the route timeout no longer applies (the stream idle timeout does) and each
 * direction ends with a half-close. A CONNECT whose route has connect_config is terminated
 * here: the upstream leg is raw TCP to the chosen host, and the client gets 200 once it is
 * connected. */
#include "filters/http/router/upgrade.h"

#include <string.h>

static bool is_connect(const struct msm_hdrs *h)
{
    const char *m = msm_hdrs_get(h, ":method");
    return m && !strcmp(m, "CONNECT");
}

enum msm_pool_kind msm_router_tunnel_kind(const struct msm_route *rt, const struct msm_hdrs *h)
{
    if (is_connect(h)) {
        const struct msm_route_upgrade *u = msm_route_upgrade_find(rt, "CONNECT");
        return u && u->connect_terminate ? MSM_POOL_TUNNEL_TCP : MSM_POOL_TUNNEL_HTTP1;
    }
    /* The connection manager keeps Upgrade only on the upgrades it accepted. */
    return msm_hdrs_find(h, "upgrade") ? MSM_POOL_TUNNEL_HTTP1 : MSM_POOL_PLAIN;
}

bool msm_router_opens_tunnel(const struct msm_hdrs *req, int status)
{
    return is_connect(req) ? status >= 200 && status < 300 : status == 101;
}
