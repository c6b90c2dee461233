/* Config glue for envoy.filters.network.tcp_proxy: proto -> struct msm_tcp_proxy_config. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbutil.h"
#include "filters/network/tcp_proxy/tcp_proxy.h"

#define DEFAULT_IDLE_TIMEOUT_MS (3600 * 1000)

static void config_free(void *p)
{
    struct msm_tcp_proxy_config *c = p;
    if (!c) {
        return;
    }
    for (int i = 0; i < c->n_clusters; i++) {
        free(c->clusters[i].name);
    }
    free(c->clusters);
    msm_access_logs_deinit(&c->logs);
    if (c->stat_prefix) {
        msm_tcp_proxy_stats_deinit(&c->stats);
    }
    free(c->stat_prefix);
    free(c);
}

static int duration_u32(const Google__Protobuf__Duration *d, uint32_t dflt, const char *field,
                        uint32_t *out, struct msm_err *err)
{
    int64_t ms = msm_pb_duration_ms(d, dflt);
    if (ms < 0 || ms > UINT32_MAX) {
        return msm_err_set(err, "%s: out of range", field);
    }
    *out = (uint32_t)ms;
    return 0;
}

static int config_new(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    const Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy *p = (const void *)msg;
    struct msm_tcp_proxy_config *c = MSM_NEW(struct msm_tcp_proxy_config);
    if (!p->stat_prefix[0]) {
        msm_err_set(err, "stat_prefix: must not be empty");
        goto fail;
    }
    switch (p->cluster_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER:
        if (!p->cluster[0]) {
            msm_err_set(err, "cluster: must not be empty");
            goto fail;
        }
        c->clusters = msm_xcalloc(1, sizeof(*c->clusters));
        c->clusters[0].name = msm_xstrdup(p->cluster);
        c->clusters[0].weight = 1;
        c->n_clusters = 1;
        c->total_weight = 1;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS: {
        const Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster *wc =
            p->weighted_clusters;
        if (wc->n_clusters < 1) {
            msm_err_set(err, "weighted_clusters.clusters: at least one cluster is required");
            goto fail;
        }
        c->clusters = msm_xcalloc(wc->n_clusters, sizeof(*c->clusters));
        for (size_t i = 0; i < wc->n_clusters; i++) {
            if (!wc->clusters[i]->name[0]) {
                msm_err_set(err, "weighted_clusters.clusters[%zu].name: must not be empty", i);
                goto fail;
            }
            if (wc->clusters[i]->metadata_match) {
                msm_err_set(err, "weighted_clusters.clusters[%zu].metadata_match: subset load "
                                 "balancing is not supported", i);
                goto fail;
            }
            c->clusters[c->n_clusters].name = msm_xstrdup(wc->clusters[i]->name);
            c->clusters[c->n_clusters].weight = wc->clusters[i]->weight;
            c->total_weight += wc->clusters[i]->weight;
            c->n_clusters++;
        }
        if (!c->total_weight) {
            msm_err_set(err, "weighted_clusters: the sum of weights must be positive");
            goto fail;
        }
        break;
    }
    default:
        msm_err_set(err, p->on_demand ? "on_demand: on-demand cluster discovery is not supported"
                                      : "cluster_specifier: one of cluster or weighted_clusters "
                                        "is required");
        goto fail;
    }
    if (p->on_demand) {
        msm_err_set(err, "on_demand: on-demand cluster discovery is not supported");
        goto fail;
    }
    if (p->tunneling_config) {
        msm_err_set(err, "tunneling_config: HTTP CONNECT tunneling is not supported yet");
        goto fail;
    }
    if (p->metadata_match) {
        msm_err_set(err, "metadata_match: subset load balancing is not supported");
        goto fail;
    }
    if (duration_u32(p->idle_timeout, DEFAULT_IDLE_TIMEOUT_MS, "idle_timeout",
                     &c->idle_timeout_ms, err) < 0 ||
        duration_u32(p->max_downstream_connection_duration, 0,
                     "max_downstream_connection_duration", &c->max_duration_ms, err) < 0) {
        goto fail;
    }
    if (p->downstream_idle_timeout || p->upstream_idle_timeout) {
        msm_err_set(err, "downstream_idle_timeout/upstream_idle_timeout: not supported yet (use "
                         "idle_timeout)");
        goto fail;
    }
    c->max_connect_attempts = msm_pb_u32(p->max_connect_attempts, 1);
    if (c->max_connect_attempts < 1) {
        msm_err_set(err, "max_connect_attempts: must be >= 1");
        goto fail;
    }
    for (size_t i = 0; i < p->n_hash_policy; i++) {
        if (p->hash_policy[i]->policy_specifier_case ==
            ENVOY__TYPE__V3__HASH_POLICY__POLICY_SPECIFIER_SOURCE_IP) {
            c->hash_source_ip = true;
        }
    }
    if (msm_access_logs_build((void *const *)p->access_log, p->n_access_log, &c->logs,
                              err) < 0) {
        goto fail;
    }
    c->stat_prefix = msm_xasprintf("tcp.%s.", p->stat_prefix);
    msm_tcp_proxy_stats_init(ctx->stats, c->stat_prefix, &c->stats);
    *out = c;
    return 0;
fail:
    config_free(c);
    return MSM_EINVAL;
}

const struct msm_network_filter_ops msm_tcp_proxy_ops = {
    .name = "envoy.filters.network.tcp_proxy",
    .config_type = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    .terminal = true,
    .config_new = config_new,
    .config_free = config_free,
    .filter_new = msm_tcp_proxy_filter_new,
    .on_new_connection = msm_tcp_proxy_on_new_connection,
    .on_data = msm_tcp_proxy_on_data,
    .on_event = msm_tcp_proxy_on_event,
    .on_watermark = msm_tcp_proxy_on_watermark,
    .filter_free = msm_tcp_proxy_filter_free,
};
