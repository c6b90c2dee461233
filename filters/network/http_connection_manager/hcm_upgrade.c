/* envoy.filters.network.http_connection_manager: upgrades (WebSocket and the like) and
 * CONNECT, after Envoy's upgrade path.
 *
 * A request is an upgrade when it carries Upgrade and a Connection header naming "upgrade"
 * (HTTP/1.1; an HTTP/2 extended CONNECT arrives in this shape from the codec), and a CONNECT
 * when its method is CONNECT. Its type ("websocket", "CONNECT") must be enabled: the route's
 * RouteAction.upgrade_configs decide when they name it, else the connection manager's
 * upgrade_configs (Envoy's table: route beats HCM); an accepted type whose HCM entry has
 * filters runs through that chain instead of http_filters. A disabled type is answered 403
 * (upgrade_failed, downstream_rq_ws_on_non_ws_route) and the HTTP/1 connection closes after,
 * as Envoy does; a request with no route goes on to the router's 404.
 *
 * An accepted upgrade counts in downstream_cx_upgrades_total/_active (until the stream goes)
 * and keeps its Upgrade/Connection headers for the upstream. The request's body is the
 * tunnel's client-to-server bytes; the answer (101, or 2xx to a CONNECT) opens the tunnel:
 * from then on the stream lives until both directions ended (each end is a half-close), with
 * the route's or the connection manager's stream idle timeout. On an HTTP/1 connection the
 * downstream socket is put in half-close mode so a client FIN reaches the upstream as one. */
#include <string.h>

#include "common/alloc.h"
#include "filter/manager.h"
#include "filters/network/http_connection_manager/hcm_private.h"
#include "net/conn.h"

void msm_hcm_upgrade_detect(struct hstream *st)
{
    const struct msm_hdrs *req = &st->req;
    const char *method = msm_hdrs_get(req, ":method");
    if (method && !strcmp(method, "CONNECT")) {
        st->connect = true;
        st->upgrade = msm_xstrdup("CONNECT");
        return;
    }
    const char *up = msm_hdrs_get(req, "upgrade");
    const char *conn = msm_hdrs_get(req, "connection");
    if (up && up[0] && conn && msm_http_token_in_list(conn, "upgrade") &&
        strcasecmp(up, "h2c") != 0) {
        st->upgrade = msm_xstrdup(up);
    }
}

bool msm_hcm_upgrade_keeps(const struct hstream *st)
{
    return st->upgrade && !st->connect;
}

static const struct msm_hcm_upgrade *hcm_upgrade(const struct msm_hcm_config *cfg,
                                                  const char *type)
{
    for (int i = 0; i < cfg->n_upgrades; i++) {
        if (!strcasecmp(cfg->upgrades[i].type, type)) {
            return &cfg->upgrades[i];
        }
    }
    return NULL;
}

bool msm_hcm_upgrade_accept(struct hstream *st, const struct msm_route *r)
{
    struct hcm_conn *hc = st->hc;
    const struct msm_hcm_config *cfg = hc->cfg;
    if (!r) {
        return true; /* no route: the router answers 404 */
    }
    const struct msm_route_upgrade *ru = msm_route_upgrade_find(r, st->upgrade);
    const struct msm_hcm_upgrade *hu = hcm_upgrade(cfg, st->upgrade);
    bool ok = ru ? ru->enabled : hu && hu->enabled;
    if (!ok) {
        msm_stat_inc(cfg->stats.downstream_rq_ws_on_non_ws_route);
        return false;
    }
    if (hu && hu->filters) {
        /* The type's own filter chain, even when the route is what enabled it (Envoy's
         * createUpgradeFilterChain); no filter of the stream exists yet. */
        msm_hcm_stream_set_chain(st, hu->filters, hu->n_filters);
    }
    st->upgrade_ok = true;
    msm_stat_inc(cfg->stats.downstream_cx_upgrades_total);
    msm_stat_inc(cfg->stats.downstream_cx_upgrades_active);
    if (hc->proto != MSM_HTTP_2) {
        struct msm_conn *c = msm_filter_conn(hc->h);
        if (c) {
            msm_conn_enable_half_close(c, true);
        }
    }
    return true;
}

void msm_hcm_upgrade_on_response(struct hstream *st, int status)
{
    if (!st->upgrade_ok || st->tunneling) {
        return;
    }
    st->tunneling = st->connect ? status >= 200 && status < 300 : status == 101;
}

void msm_hcm_upgrade_done(struct hstream *st)
{
    if (st->upgrade_ok) {
        st->upgrade_ok = false;
        msm_stat_dec(st->hc->cfg->stats.downstream_cx_upgrades_active);
    }
}
