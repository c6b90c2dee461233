/* envoy.filters.http.grpc_stats (see grpc_stats.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/http/grpc_stats/v3/config.pb-c.h"

#include "common/alloc.h"
#include "config/pbutil.h"
#include "filters/http/grpc_stats/grpc_stats.h"
#include "server/worker.h"
#include "upstream/cluster.h"

/* Counters are created on first use by any worker (the stats store is locked), cached here by
 * full name for the config's lifetime. */
struct gs_cfg {
    bool all_methods;
    char **allow; /* "service/method" */
    int n_allow;
    bool replace_dots;
    pthread_mutex_t mu;
    struct msm_stat **cache;
    int n_cache, cap_cache;
    struct msm_stats_store *store;
};

struct gs {
    struct msm_http_stream *s;
    struct gs_cfg *cfg;
    bool grpc;
    char svc[128], method[128];
    bool per_method;
    uint64_t req_msgs, resp_msgs;
    uint32_t req_left, resp_left; /* bytes left in the current message */
    uint8_t req_hdr[5], resp_hdr[5];
    int req_hn, resp_hn;
    bool counted;
};

static void config_free(void *p)
{
    struct gs_cfg *c = p;
    if (!c) {
        return;
    }
    for (int i = 0; i < c->n_allow; i++) {
        free(c->allow[i]);
    }
    free(c->allow);
    for (int i = 0; i < c->n_cache; i++) {
        msm_stat_unref(c->cache[i]);
    }
    free(c->cache);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static int config_new(const ProtobufCMessage *msg, struct msm_http_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    const Envoy__Extensions__Filters__Http__GrpcStats__V3__FilterConfig *p = (const void *)msg;
    (void)err;
    struct gs_cfg *c = MSM_NEW(struct gs_cfg);
    pthread_mutex_init(&c->mu, NULL);
    c->store = ctx->stats;
    c->replace_dots = p->replace_dots_in_grpc_service_name;
    if (p->per_method_stat_specifier_case ==
        ENVOY__EXTENSIONS__FILTERS__HTTP__GRPC_STATS__V3__FILTER_CONFIG__PER_METHOD_STAT_SPECIFIER_STATS_FOR_ALL_METHODS) {
        c->all_methods = msm_pb_bool(p->stats_for_all_methods, false);
    } else if (p->per_method_stat_specifier_case ==
               ENVOY__EXTENSIONS__FILTERS__HTTP__GRPC_STATS__V3__FILTER_CONFIG__PER_METHOD_STAT_SPECIFIER_INDIVIDUAL_METHOD_STATS_ALLOWLIST) {
        const Envoy__Config__Core__V3__GrpcMethodList *l = p->individual_method_stats_allowlist;
        for (size_t i = 0; i < l->n_services; i++) {
            for (size_t k = 0; k < l->services[i]->n_method_names; k++) {
                c->allow = msm_xrealloc(c->allow, (size_t)(c->n_allow + 1) * sizeof(char *));
                c->allow[c->n_allow++] = msm_xasprintf("%s/%s", l->services[i]->name,
                                                       l->services[i]->method_names[k]);
            }
        }
    }
    *out = c;
    return 0;
}

static struct msm_stat *counter(struct gs_cfg *c, const char *name)
{
    pthread_mutex_lock(&c->mu);
    struct msm_stat *s = NULL;
    for (int i = 0; i < c->n_cache && !s; i++) {
        if (!strcmp(c->cache[i]->name, name)) {
            s = c->cache[i];
        }
    }
    if (!s) {
        s = msm_stats_get(c->store, MSM_STAT_COUNTER, name);
        if (c->n_cache == c->cap_cache) {
            size_t cap = (size_t)c->cap_cache;
            c->cache = msm_xgrow(c->cache, sizeof(*c->cache), &cap, (size_t)c->n_cache + 1);
            c->cap_cache = (int)cap;
        }
        c->cache[c->n_cache++] = s;
    }
    pthread_mutex_unlock(&c->mu);
    return s;
}

static void *filter_new(void *config, struct msm_http_stream *s)
{
    struct gs *g = MSM_NEW(struct gs);
    g->s = s;
    g->cfg = config;
    return g;
}

static enum msm_hf_status decode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    struct gs *g = p;
    (void)end_stream;
    g->grpc = msm_hs_is_grpc(g->s);
    if (!g->grpc) {
        return MSM_HF_CONTINUE;
    }
    const char *path = msm_hdrs_get(h, ":path");
    /* /package.Service/Method */
    if (path && path[0] == '/') {
        const char *slash = strchr(path + 1, '/');
        if (slash && slash[1] && !strchr(slash + 1, '/')) {
            snprintf(g->svc, sizeof(g->svc), "%.*s", (int)(slash - path - 1), path + 1);
            snprintf(g->method, sizeof(g->method), "%s", slash + 1);
            char key[260];
            snprintf(key, sizeof(key), "%s/%s", g->svc, g->method);
            g->per_method = g->cfg->all_methods;
            for (int i = 0; i < g->cfg->n_allow && !g->per_method; i++) {
                g->per_method = !strcmp(g->cfg->allow[i], key);
            }
            if (g->cfg->replace_dots) {
                for (char *c = g->svc; *c; c++) {
                    *c = *c == '.' ? '_' : *c;
                }
            }
        }
    }
    return MSM_HF_CONTINUE;
}

/* Count gRPC length-prefixed messages crossing in <b>. */
static void count_msgs(struct msm_buf *b, uint8_t *hdr, int *hn, uint32_t *left, uint64_t *n)
{
    size_t off = 0;
    while (off < b->len) {
        if (*left) {
            size_t k = b->len - off < *left ? b->len - off : *left;
            off += k;
            *left -= (uint32_t)k;
            continue;
        }
        size_t k = msm_buf_copyout(b, off, hdr + *hn, (size_t)(5 - *hn));
        *hn += (int)k;
        off += k;
        if (*hn == 5) {
            (*n)++;
            *left = (uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 8 |
                    hdr[4];
            *hn = 0;
        }
    }
}

static enum msm_hf_status decode_data(void *p, struct msm_buf *data, bool end_stream)
{
    struct gs *g = p;
    (void)end_stream;
    if (g->grpc) {
        count_msgs(data, g->req_hdr, &g->req_hn, &g->req_left, &g->req_msgs);
    }
    return MSM_HF_CONTINUE;
}

static void charge(struct gs *g, bool success)
{
    if (!g->grpc || g->counted) {
        return;
    }
    g->counted = true;
    struct msm_hstream_info *info = msm_hs_info(g->s);
    struct msm_worker *w = msm_hs_worker(g->s);
    struct msm_cluster *c = info->upstream_cluster[0] && w->snap
                                ? msm_snapshot_cluster(w->snap, info->upstream_cluster)
                                : NULL;
    if (!c) {
        return;
    }
    char prefix[600], name[800];
    if (g->per_method && g->svc[0]) {
        snprintf(prefix, sizeof(prefix), "cluster.%s.grpc.%s.%s.", c->cfg->stat_name, g->svc,
                 g->method);
    } else {
        snprintf(prefix, sizeof(prefix), "cluster.%s.grpc.", c->cfg->stat_name);
    }
    snprintf(name, sizeof(name), "%s%s", prefix, success ? "success" : "failure");
    msm_stat_inc(counter(g->cfg, name));
    snprintf(name, sizeof(name), "%stotal", prefix);
    msm_stat_inc(counter(g->cfg, name));
    snprintf(name, sizeof(name), "%srequest_message_count", prefix);
    msm_stat_add(counter(g->cfg, name), g->req_msgs);
    snprintf(name, sizeof(name), "%sresponse_message_count", prefix);
    msm_stat_add(counter(g->cfg, name), g->resp_msgs);
}

static enum msm_hf_status encode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    struct gs *g = p;
    if (!g->grpc) {
        return MSM_HF_CONTINUE;
    }
    const char *st = msm_hdrs_get(h, ":status");
    const char *gs = msm_hdrs_get(h, "grpc-status");
    if (gs || end_stream || (st && strcmp(st, "200") != 0)) {
        charge(g, gs && !strcmp(gs, "0") && st && !strcmp(st, "200"));
    }
    return MSM_HF_CONTINUE;
}

static enum msm_hf_status encode_data(void *p, struct msm_buf *data, bool end_stream)
{
    struct gs *g = p;
    if (g->grpc) {
        count_msgs(data, g->resp_hdr, &g->resp_hn, &g->resp_left, &g->resp_msgs);
        if (end_stream) {
            charge(g, false); /* no trailers: no grpc-status */
        }
    }
    return MSM_HF_CONTINUE;
}

static enum msm_hf_status encode_trailers(void *p, struct msm_hdrs *t)
{
    struct gs *g = p;
    const char *gs = msm_hdrs_get(t, "grpc-status");
    charge(g, gs && !strcmp(gs, "0"));
    return MSM_HF_CONTINUE;
}

static void on_destroy(void *p)
{
    struct gs *g = p;
    charge(g, false); /* reset before a status */
}

static void filter_free(void *p)
{
    free(p);
}

const struct msm_http_filter_ops msm_grpc_stats_ops = {
    .name = "envoy.filters.http.grpc_stats",
    .config_type = "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    .config_new = config_new,
    .config_free = config_free,
    .filter_new = filter_new,
    .decode_headers = decode_headers,
    .decode_data = decode_data,
    .encode_headers = encode_headers,
    .encode_data = encode_data,
    .encode_trailers = encode_trailers,
    .on_destroy = on_destroy,
    .filter_free = filter_free,
};
