/* istio.metadata_exchange: proto -> plain-C config for both roles, and the filter ops. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/tcp/metadataexchange/config/metadata_exchange.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/node.h"
#include "filters/network/metadata_exchange/metadata_exchange.h"
#include "filters/network/metadata_exchange/wire.h"

#define STAT_PREFIX "metadata_exchange."

/* The preamble is the same for every config built from the same node and labels (every
 * cluster of an Istio sidecar has the filter): one refcounted copy is shared. The last one
 * built is findable (weak: cleared by its last unref, under <pre_mu>); configs may be freed on
 * any thread. */
struct mx_preamble {
    atomic_int refs;
    size_t len;
    uint8_t data[];
};

static pthread_mutex_t pre_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mx_preamble *pre_last;

static struct mx_preamble *preamble_share(uint8_t *enc, size_t len)
{
    pthread_mutex_lock(&pre_mu);
    struct mx_preamble *p = pre_last;
    if (p && p->len == len && !memcmp(p->data, enc, len)) {
        atomic_fetch_add(&p->refs, 1);
    } else {
        p = msm_xmalloc(sizeof(*p) + len + 1);
        atomic_init(&p->refs, 1);
        p->len = len;
        memcpy(p->data, enc, len);
        pre_last = p;
    }
    pthread_mutex_unlock(&pre_mu);
    free(enc);
    return p;
}

static void preamble_unref(struct mx_preamble *p)
{
    if (!p) {
        return;
    }
    pthread_mutex_lock(&pre_mu);
    bool last = atomic_fetch_sub(&p->refs, 1) == 1;
    if (last && pre_last == p) {
        pre_last = NULL;
    }
    pthread_mutex_unlock(&pre_mu);
    if (last) {
        free(p);
    }
}

json_t *msm_mx_local_exchange(char *const *additional_labels, int n_additional_labels)
{
    const struct msm_node *node = msm_node_get();
    struct msm_mx_workload wl;
    msm_mx_workload_from_struct(node->metadata, additional_labels, n_additional_labels,
                                node->region, node->zone, &wl);
    json_t *ex = json_object();
    json_object_set_new(ex, MSM_MX_METADATA_KEY, msm_mx_workload_to_struct(&wl));
    if (node->id[0]) {
        json_object_set_new(ex, MSM_MX_METADATA_ID_KEY, json_string(node->id));
    }
    msm_mx_workload_deinit(&wl);
    return ex;
}

void msm_mx_config_free(void *config)
{
    struct msm_mx_config *c = config;
    if (!c) {
        return;
    }
    free(c->protocol);
    for (int i = 0; i < c->n_additional_labels; i++) {
        free(c->additional_labels[i]);
    }
    free(c->additional_labels);
    preamble_unref(c->preamble_blob);
    if (c->has_stats) {
        msm_mx_stats_deinit(&c->stats);
    }
    free(c);
}

int msm_mx_config_new(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx, bool upstream,
                      struct msm_mx_config **out, struct msm_err *err)
{
    const Envoy__Tcp__Metadataexchange__Config__MetadataExchange *p = (const void *)msg;
    if (!p->protocol || !p->protocol[0]) {
        /* Envoy asserts it; an empty protocol would match every connection without ALPN. */
        return msm_err_set(err, "protocol: must not be empty (the ALPN that switches the "
                                "exchange on, e.g. \"istio-peer-exchange\")");
    }
    struct msm_mx_config *c = MSM_NEW(struct msm_mx_config);
    c->protocol = msm_xstrdup(p->protocol);
    c->enable_discovery = p->enable_discovery;
    c->upstream = upstream;
    if (p->n_additional_labels) {
        c->additional_labels = msm_xcalloc(p->n_additional_labels, sizeof(char *));
        for (size_t i = 0; i < p->n_additional_labels; i++) {
            c->additional_labels[c->n_additional_labels++] = msm_xstrdup(p->additional_labels[i]);
        }
    }
    json_t *ex = msm_mx_local_exchange(c->additional_labels, c->n_additional_labels);
    size_t len;
    uint8_t *enc = msm_mx_preamble_encode(ex, &len);
    json_decref(ex);
    c->preamble_blob = preamble_share(enc, len);
    c->preamble = c->preamble_blob->data;
    c->preamble_len = len;
    if (ctx->stats) {
        msm_mx_stats_init(ctx->stats, STAT_PREFIX, &c->stats);
        c->has_stats = true;
    }
    if (c->enable_discovery) {
        msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "%s '%s': istio.metadata_exchange enable_discovery: "
                "no workload discovery in this build; peers without a preamble stay unknown",
                upstream ? "cluster" : "listener", ctx->listener_name ? ctx->listener_name : "?");
    }
    *out = c;
    return 0;
}

static int config_new_downstream(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx,
                                 void **config, struct msm_err *err)
{
    return msm_mx_config_new(msg, ctx, false, (struct msm_mx_config **)config, err);
}

static int config_new_upstream(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx,
                               void **config, struct msm_err *err)
{
    return msm_mx_config_new(msg, ctx, true, (struct msm_mx_config **)config, err);
}

const struct msm_network_filter_ops msm_mx_ops = {
    .name = "istio.metadata_exchange",
    .config_type = "envoy.tcp.metadataexchange.config.MetadataExchange",
    .config_new = config_new_downstream,
    .config_free = msm_mx_config_free,
    .filter_new = msm_mx_filter_new,
    .on_data = msm_mx_on_data,
    .on_write = msm_mx_on_write,
    .filter_free = msm_mx_filter_free,
};

const struct msm_upstream_filter_ops msm_mx_upstream_ops = {
    .name = "istio.metadata_exchange",
    .config_type = "envoy.tcp.metadataexchange.config.MetadataExchange",
    .config_new = config_new_upstream,
    .config_free = msm_mx_config_free,
    .filter_new = msm_mx_upstream_filter_new,
    .on_data = msm_mx_on_data,
    .on_write = msm_mx_on_write,
    .filter_free = msm_mx_filter_free,
};
