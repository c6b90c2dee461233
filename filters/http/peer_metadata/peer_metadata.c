/* istio.metadata_exchange, the HTTP peer metadata filter (see peer_metadata.h). */
#include <stdlib.h>
#include <string.h>

#include "io/istio/http/peer_metadata/config.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/node.h"
#include "config/snapshot.h"
#include "filters/http/peer_metadata/peer_metadata.h"
#include "filters/network/metadata_exchange/workload.h"
#include "http/route.h"
#include "server/worker.h"
#include "stats/istio_stats.h"
#include "upstream/cluster.h"

typedef Io__Istio__Http__PeerMetadata__Config PbConfig;
typedef Io__Istio__Http__PeerMetadata__Config__DiscoveryMethod PbDiscovery;
typedef Io__Istio__Http__PeerMetadata__Config__PropagationMethod PbPropagation;
#define DISCOVERY(m) IO__ISTIO__HTTP__PEER_METADATA__CONFIG__DISCOVERY_METHOD__METHOD_SPECIFIER_##m
#define PROPAGATION(m)                                                                            \
    IO__ISTIO__HTTP__PEER_METADATA__CONFIG__PROPAGATION_METHOD__METHOD_SPECIFIER_##m

struct pm_cfg {
    bool down_discovery, up_discovery;     /* istio_headers among the discovery methods */
    bool down_propagation, up_propagation; /* istio_headers among the propagation methods */
    /* Every istio_headers propagation entry of that direction sets skip_external_clusters. */
    bool down_skip_external, up_skip_external;
    char **labels; /* additional_labels */
    int n_labels;
    char *value; /* our x-envoy-peer-metadata */
    char *id;    /* our x-envoy-peer-metadata-id: the node id */
};

struct pm_peer {
    struct msm_istio_peer labels; /* strings point into <wl> */
    struct msm_mx_workload wl;
};

struct pm {
    struct pm_cfg *cfg;
    struct msm_http_stream *s;
    bool req_peer, req_peer_id; /* the request carried the header (even empty) */
    struct pm_peer *down, *up;
};

/* ---- config --------------------------------------------------------------------------------- */

static void config_free(void *p)
{
    struct pm_cfg *c = p;
    if (!c) {
        return;
    }
    for (int i = 0; i < c->n_labels; i++) {
        free(c->labels[i]);
    }
    free(c->labels);
    free(c->value);
    free(c->id);
    free(c);
}

static const char *discovery_name(int k)
{
    switch (k) {
    case DISCOVERY(BAGGAGE):
        return "baggage";
    case DISCOVERY(WORKLOAD_DISCOVERY):
        return "workload_discovery";
    case DISCOVERY(UPSTREAM_FILTER_STATE):
        return "upstream_filter_state";
    default:
        return "an empty method";
    }
}

/* Whether <list> has istio_headers; the other methods find nothing here (peer_metadata.h). */
static bool discovery_from(PbDiscovery *const *list, size_t n, const char *field,
                           const struct msm_http_factory_ctx *ctx)
{
    bool mx = false;
    for (size_t i = 0; i < n; i++) {
        int k = list[i]->method_specifier_case;
        if (k == DISCOVERY(ISTIO_HEADERS)) {
            mx = true;
        } else {
            msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "http filter '%s': %s[%zu] is %s, not "
                    "available in this build: it finds no peer", ctx->filter_name, field, i,
                    discovery_name(k));
        }
    }
    return mx;
}

static bool propagation_from(PbPropagation *const *list, size_t n, const char *field,
                             const struct msm_http_factory_ctx *ctx, bool *skip_external)
{
    bool mx = false;
    *skip_external = true;
    for (size_t i = 0; i < n; i++) {
        if (list[i]->method_specifier_case == PROPAGATION(ISTIO_HEADERS)) {
            mx = true;
            *skip_external = *skip_external && list[i]->istio_headers &&
                             list[i]->istio_headers->skip_external_clusters;
        } else {
            msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "http filter '%s': %s[%zu] is not "
                    "istio_headers (baggage): not sent by this build", ctx->filter_name, field,
                    i);
        }
    }
    *skip_external = mx && *skip_external;
    return mx;
}

static int config_new(const ProtobufCMessage *msg, struct msm_http_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    const PbConfig *p = (const void *)msg;
    (void)err;
    struct pm_cfg *c = MSM_NEW(struct pm_cfg);
    c->down_discovery = discovery_from(p->downstream_discovery, p->n_downstream_discovery,
                                       "downstream_discovery", ctx);
    c->up_discovery = discovery_from(p->upstream_discovery, p->n_upstream_discovery,
                                     "upstream_discovery", ctx);
    c->down_propagation = propagation_from(p->downstream_propagation,
                                           p->n_downstream_propagation, "downstream_propagation",
                                           ctx, &c->down_skip_external);
    c->up_propagation = propagation_from(p->upstream_propagation, p->n_upstream_propagation,
                                         "upstream_propagation", ctx, &c->up_skip_external);
    if (p->n_additional_labels) {
        c->labels = msm_xcalloc(p->n_additional_labels, sizeof(char *));
        for (size_t i = 0; i < p->n_additional_labels; i++) {
            c->labels[c->n_labels++] = msm_xstrdup(p->additional_labels[i]);
        }
    }
    /* What we send: the node's workload, fixed for the process (config/node.h). */
    const struct msm_node *node = msm_node_get();
    struct msm_mx_workload wl;
    msm_mx_workload_from_struct(node->metadata, c->labels, c->n_labels, node->region,
                                node->zone, &wl);
    json_t *st = msm_mx_workload_to_struct(&wl);
    c->value = msm_pm_header_encode(st);
    json_decref(st);
    msm_mx_workload_deinit(&wl);
    c->id = msm_xstrdup(node->id);
    *out = c;
    return 0;
}

/* ---- per request ---------------------------------------------------------------------------- */

static void peer_free(struct pm_peer *p)
{
    if (p) {
        msm_mx_workload_deinit(&p->wl);
        free(p);
    }
}

static struct pm_peer *peer_new(const json_t *md, const struct pm_cfg *cfg)
{
    struct pm_peer *p = MSM_NEW(struct pm_peer);
    msm_mx_workload_from_struct(md, cfg->labels, cfg->n_labels, NULL, NULL, &p->wl);
    p->labels = msm_mx_workload_labels(&p->wl);
    return p;
}

/* MXMethod: the peer in <h>'s headers (NULL: none, or not a Struct), then both headers gone. */
static struct pm_peer *discover(struct pm *f, struct msm_hdrs *h, bool request)
{
    const struct msm_hdr *id = msm_hdrs_find(h, MSM_PM_HEADER_ID);
    const struct msm_hdr *md = msm_hdrs_find(h, MSM_PM_HEADER);
    if (request) {
        f->req_peer_id = id != NULL;
        f->req_peer = md != NULL;
    }
    struct pm_peer *p = NULL;
    json_t *st = NULL;
    if (md && md->vlen && msm_pm_header_decode(md->value, md->vlen, &st)) {
        p = peer_new(st, f->cfg);
        json_decref(st);
        msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "istio.metadata_exchange (%s): peer "
                "WORKLOAD_NAME=%s NAMESPACE=%s CLUSTER_ID=%s app=%s version=%s id=%s",
                request ? "downstream" : "upstream", p->wl.workload_name, p->wl.namespace_name,
                p->wl.cluster_name, p->wl.app_name, p->wl.app_version, id ? id->value : "");
    }
    msm_hdrs_remove(h, MSM_PM_HEADER_ID);
    msm_hdrs_remove(h, MSM_PM_HEADER);
    return p;
}

/* skipMXHeaders for one cluster <name>: never to a cluster marked istio.disable_mx, nor with
 * <skip_external> to PassthroughCluster or one marked istio.external. */
static bool cluster_skips(struct msm_worker *w, const char *name, bool skip_external)
{
    const struct msm_cluster *c = name && w && w->snap ? msm_snapshot_cluster(w->snap, name)
                                                       : NULL;
    if (!c) {
        return false;
    }
    if (skip_external && (!strcmp(name, "PassthroughCluster") || c->cfg->istio_external)) {
        return true;
    }
    return c->cfg->istio_disable_mx;
}

/* Whether our headers must stay off this request: the router's cluster once it chose one,
 * before that the route's (any of a weighted route's clusters that says so). */
static bool skip_mx(struct pm *f, bool skip_external)
{
    struct msm_worker *w = msm_hs_worker(f->s);
    const struct msm_hstream_info *info = msm_hs_info(f->s);
    if (info->upstream_cluster[0]) {
        return cluster_skips(w, info->upstream_cluster, skip_external);
    }
    const struct msm_route *rt = msm_hs_route(f->s);
    const struct msm_hdrs *rq = msm_hs_request_headers(f->s);
    if (!rt) {
        return false;
    }
    switch (rt->kind) {
    case MSM_ROUTE_CLUSTER:
        return cluster_skips(w, rt->cluster, skip_external);
    case MSM_ROUTE_CLUSTER_HEADER:
        return cluster_skips(w, msm_hdrs_get(rq, rt->cluster_header), skip_external);
    case MSM_ROUTE_WEIGHTED:
        for (int i = 0; i < rt->n_wc; i++) {
            const char *name = rt->wc[i].cluster_header
                                   ? msm_hdrs_get(rq, rt->wc[i].cluster_header)
                                   : rt->wc[i].name;
            if (cluster_skips(w, name, skip_external)) {
                return true;
            }
        }
        return false;
    default:
        return false;
    }
}

static void *filter_new(void *config, struct msm_http_stream *s)
{
    struct pm *f = MSM_NEW(struct pm);
    f->cfg = config;
    f->s = s;
    return f;
}

static enum msm_hf_status decode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    struct pm *f = p;
    const struct pm_cfg *c = f->cfg;
    (void)end_stream;
    if (c->down_discovery) {
        struct pm_peer *peer = discover(f, h, true);
        struct msm_hstream_info *info = msm_hs_info(f->s);
        if (peer && !info->downstream_peer && !f->down) {
            f->down = peer;
            info->downstream_peer = &peer->labels;
        } else {
            peer_free(peer); /* the first peer found wins */
        }
    }
    if (c->up_propagation && !skip_mx(f, c->up_skip_external)) {
        msm_hdrs_set(h, MSM_PM_HEADER_ID, c->id);
        msm_hdrs_set(h, MSM_PM_HEADER, c->value);
    }
    return MSM_HF_CONTINUE;
}

static enum msm_hf_status encode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    struct pm *f = p;
    const struct pm_cfg *c = f->cfg;
    (void)end_stream;
    if (c->up_discovery) {
        struct pm_peer *peer = discover(f, h, false);
        struct msm_hstream_info *info = msm_hs_info(f->s);
        if (peer && !info->upstream_peer && !f->up) {
            f->up = peer;
            info->upstream_peer = &peer->labels;
        } else {
            peer_free(peer);
        }
    }
    if (c->down_propagation && (f->req_peer_id || f->req_peer) &&
        !skip_mx(f, c->down_skip_external)) {
        if (f->req_peer_id) {
            msm_hdrs_set(h, MSM_PM_HEADER_ID, c->id);
        }
        if (f->req_peer) {
            msm_hdrs_set(h, MSM_PM_HEADER, c->value);
        }
    }
    return MSM_HF_CONTINUE;
}

static void filter_free(void *p)
{
    struct pm *f = p;
    struct msm_hstream_info *info = msm_hs_info(f->s);
    if (f->down && info->downstream_peer == &f->down->labels) {
        info->downstream_peer = NULL;
    }
    if (f->up && info->upstream_peer == &f->up->labels) {
        info->upstream_peer = NULL;
    }
    peer_free(f->down);
    peer_free(f->up);
    free(f);
}

const struct msm_http_filter_ops msm_peer_metadata_ops = {
    .name = "istio.metadata_exchange",
    .config_type = "io.istio.http.peer_metadata.Config",
    .config_new = config_new,
    .config_free = config_free,
    .filter_new = filter_new,
    .decode_headers = decode_headers,
    .encode_headers = encode_headers,
    .filter_free = filter_free,
};
