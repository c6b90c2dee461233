/* istio.alpn (see istio_alpn.h). */
#include <stdlib.h>
#include <string.h>

#include "istio/envoy/config/filter/http/alpn/v2alpha1/config.pb-c.h"

#include "common/alloc.h"
#include "filters/http/istio_alpn/istio_alpn.h"
#include "http/codec.h"
#include "http/route.h"
#include "server/worker.h"
#include "upstream/cluster.h"

struct alpn_cfg {
    char **list[3]; /* by protocol: HTTP10, HTTP11, HTTP2 */
    int n[3];
};

static void config_free(void *p)
{
    struct alpn_cfg *c = p;
    if (!c) {
        return;
    }
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < c->n[k]; i++) {
            free(c->list[k][i]);
        }
        free(c->list[k]);
    }
    free(c);
}

static int config_new(const ProtobufCMessage *msg, struct msm_http_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    const Istio__Envoy__Config__Filter__Http__Alpn__V2alpha1__FilterConfig *p = (const void *)msg;
    (void)ctx;
    struct alpn_cfg *c = MSM_NEW(struct alpn_cfg);
    for (size_t i = 0; i < p->n_alpn_override; i++) {
        int k = (int)p->alpn_override[i]->upstream_protocol;
        if (k < 0 || k > 2) {
            config_free(c);
            return msm_err_set(err, "alpn_override[%zu].upstream_protocol: unknown value", i);
        }
        for (size_t j = 0; j < p->alpn_override[i]->n_alpn_override; j++) {
            c->list[k] = msm_xrealloc(c->list[k], (size_t)(c->n[k] + 1) * sizeof(char *));
            c->list[k][c->n[k]++] = msm_xstrdup(p->alpn_override[i]->alpn_override[j]);
        }
    }
    *out = c;
    return 0;
}

struct alpn {
    struct msm_http_stream *s;
    struct alpn_cfg *cfg;
};

static void *filter_new(void *config, struct msm_http_stream *s)
{
    struct alpn *a = MSM_NEW(struct alpn);
    a->s = s;
    a->cfg = config;
    return a;
}

static enum msm_hf_status decode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    struct alpn *a = p;
    (void)h;
    (void)end_stream;
    const struct msm_route *r = msm_hs_route(a->s);
    if (!r || r->kind != MSM_ROUTE_CLUSTER) {
        return MSM_HF_CONTINUE; /* weighted/header clusters: decided later; keep the default */
    }
    struct msm_worker *w = msm_hs_worker(a->s);
    struct msm_cluster *c = w->snap ? msm_snapshot_cluster(w->snap, r->cluster) : NULL;
    if (!c) {
        return MSM_HF_CONTINUE;
    }
    const struct msm_cluster_http_cfg *hc = msm_cluster_http_cfg_of(c->cfg);
    /* The list for the protocol the upstream request will use (Envoy's
     * upstreamHttpProtocol): HTTP/2 when the cluster says so, the downstream protocol with
     * use_downstream_protocol_config, else HTTP/1.1. An HTTP/1.0 request goes out as HTTP/1.1
     * even with use_downstream_protocol_config ("HTTP10 upstream is not supported"), so it
     * gets the HTTP11 list: Envoy never selects the HTTP10 one. auto_config (ALPN) lists
     * {HTTP/2, HTTP/1.1} and Istio's filter takes the first: the HTTP/2 list. */
    int k = hc->proto == MSM_UPSTREAM_AUTO ||
                    msm_cluster_http_request_proto(hc, msm_hs_protocol(a->s)) == MSM_HTTP_2
                ? 2
                : 1;
    if (a->cfg->n[k]) {
        struct msm_hstream_info *info = msm_hs_info(a->s);
        info->alpn_override = (const char *const *)a->cfg->list[k];
        info->n_alpn_override = a->cfg->n[k];
    }
    return MSM_HF_CONTINUE;
}

static void filter_free(void *p)
{
    free(p);
}

const struct msm_http_filter_ops msm_istio_alpn_ops = {
    .name = "istio.alpn",
    .config_type = "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
    .config_new = config_new,
    .config_free = config_free,
    .filter_new = filter_new,
    .decode_headers = decode_headers,
    .filter_free = filter_free,
};
