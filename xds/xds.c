/* xDS client, main-thread side: configuration, subscriptions and their stats and init timers,
 * applying responses and turning the result into ACK/NACK decisions for the xDS thread
 * (xds_thread.c). See xds/README.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "xds/xds-private.h"

void msm__xds_cmd_free(struct msm_xds_cmd *c)
{
    msm_xds_target_deinit(&c->target);
    free(c->type_url);
    for (int i = 0; i < c->n; i++) {
        free(c->names[i]);
    }
    free(c->names);
    free(c->nonce);
    free(c->version_info);
    free(c->error);
    free(c);
}

/* ---- stats and subscriptions ---------------------------------------------------------------- */

#define SINK_OF(n) && b->s.n->sink
/* NULL when the stats_matcher rejects every stat of the block (10k EDS clusters' "cluster.<name>."
 * stats under Istio's matcher): nothing to count, nothing kept. */
static struct msm_xds_stat_block *block_new(struct msm_stats_store *st, const char *prefix)
{
    struct msm_xds_stat_block *b = MSM_NEW(struct msm_xds_stat_block);
    bool was = msm_stats_sink_rejected(true);
    msm_xds_sub_stats_init(st, prefix, &b->s);
    b->version_text = msm_stats_getf(st, MSM_STAT_TEXT, "%sversion_text", prefix);
    msm_stats_sink_rejected(was);
    if (b->version_text->sink MSM_XDS_SUB_STATS(SINK_OF, SINK_OF, SINK_OF)) {
        free(b);
        return NULL;
    }
    return b;
}
#undef SINK_OF

static void block_free(struct msm_xds_stat_block *b)
{
    if (!b) {
        return;
    }
    msm_xds_sub_stats_deinit(&b->s);
    msm_stat_unref(b->version_text);
    free(b);
}

/* "<a>{}<b>" with <name> in place of "{}"; a copy of <pattern> when it has none. */
static char *expand_prefix(const char *pattern, const char *name)
{
    const char *p = strstr(pattern, "{}");
    if (!p) {
        return msm_xstrdup(pattern);
    }
    return msm_xasprintf("%.*s%s%s", (int)(p - pattern), pattern, name ? name : "", p + 2);
}

static void on_init_timeout(struct ev_loop *loop, ev_timer *w, int revents);

static struct msm_xds_name_sub *name_sub_new(struct msm_xds *x, struct msm_xds_type_sub *ts,
                                             const char *name, const char *prefix,
                                             int64_t timeout_ms)
{
    struct msm_xds_name_sub *ns = MSM_NEW(struct msm_xds_name_sub);
    ns->x = x;
    ns->ts = ts;
    ns->name = name ? msm_name_intern(name) : NULL;
    if (prefix) {
        ns->stats = block_new(x->st, prefix);
    }
    ev_timer_init(&ns->init_timer, on_init_timeout, (double)timeout_ms / 1000.0, 0.0);
    if (timeout_ms > 0) {
        ev_timer_start(x->loop, &ns->init_timer);
        ns->timer_on = true;
    }
    return ns;
}

static void name_sub_free(struct msm_xds_name_sub *ns)
{
    if (!ns) {
        return;
    }
    if (ns->timer_on) {
        ev_timer_stop(ns->x->loop, &ns->init_timer);
    }
    block_free(ns->stats);
    msm_name_unref(ns->name);
    free(ns);
}

static void type_sub_free(struct msm_xds_type_sub *ts)
{
    void *v;
    for (size_t i = 0; msm_strmap_next(&ts->names, &i, NULL, &v);) {
        name_sub_free(v);
    }
    msm_strmap_deinit(&ts->names);
    name_sub_free(ts->wild);
    free(ts->type_url);
    free(ts);
}

static struct msm_xds_type_sub *find_type_sub(struct msm_xds_source *s, const char *type_url)
{
    for (int i = 0; i < s->n_types; i++) {
        if (!strcmp(s->types[i]->type_url, type_url)) {
            return s->types[i];
        }
    }
    return NULL;
}

/* Stat blocks of <subs> without repeats (subscriptions may share one block, or blocks with the
 * same stats). A response can touch every EDS cluster, each with its own block: the repeats are
 * found with a hash set on the blocks' update_attempt stat, not a scan. */
struct block_set {
    struct msm_xds_stat_block **v;
    size_t n, cap;
    const void **seen; /* open addressing on the stat pointer; NULL = empty */
    size_t seen_cap;   /* power of two or 0 */
};

static size_t ptr_slot(const void *const *seen, size_t cap, const void *p)
{
    size_t i = (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull) & (cap - 1);
    while (seen[i] && seen[i] != p) {
        i = (i + 1) & (cap - 1);
    }
    return i;
}

/* Blocks with the same stats are one; a shared sink stat says nothing about that. */
static const void *block_key(const struct msm_xds_stat_block *b)
{
    return b->s.update_attempt->sink ? (const void *)b : (const void *)b->s.update_attempt;
}

static void block_set_add(struct block_set *bs, struct msm_xds_stat_block *b)
{
    if (!b) {
        return;
    }
    const void *key = block_key(b);
    if (bs->seen_cap && bs->seen[ptr_slot(bs->seen, bs->seen_cap, key)]) {
        return;
    }
    if ((bs->n + 1) * 2 > bs->seen_cap) {
        free(bs->seen);
        bs->seen_cap = bs->seen_cap ? bs->seen_cap * 2 : 16;
        bs->seen = msm_xcalloc(bs->seen_cap, sizeof(*bs->seen));
        for (size_t i = 0; i < bs->n; i++) {
            const void *k = block_key(bs->v[i]);
            bs->seen[ptr_slot(bs->seen, bs->seen_cap, k)] = k;
        }
    }
    bs->seen[ptr_slot(bs->seen, bs->seen_cap, key)] = key;
    bs->v = msm_xgrow(bs->v, sizeof(*bs->v), &bs->cap, bs->n + 1);
    bs->v[bs->n++] = b;
}

static void block_set_free(struct block_set *bs)
{
    free(bs->v);
    free(bs->seen);
}

static void block_set_all(struct block_set *bs, struct msm_xds_type_sub *ts)
{
    if (ts->wild) {
        block_set_add(bs, ts->wild->stats);
    }
    void *v;
    for (size_t i = 0; msm_strmap_next(&ts->names, &i, NULL, &v);) {
        block_set_add(bs, ((struct msm_xds_name_sub *)v)->stats);
    }
}

/* Fire the ready callback for the named subscriptions of <ts> in <names> (NULL entry = the
 * wildcard subscription), once each. Callbacks may change subscriptions: look each one up
 * again. */
static void make_ready(struct msm_xds *x, struct msm_xds_type_sub *ts, char **names, size_t n,
                       bool timed_out)
{
    for (size_t i = 0; i < n; i++) {
        struct msm_xds_name_sub *ns;
        if (!names[i]) {
            ns = ts->wild;
        } else {
            void **slot = msm_strmap_find(&ts->names, names[i]);
            ns = slot ? *slot : NULL;
        }
        if (!ns || ns->ready) {
            continue;
        }
        ns->ready = true;
        if (ns->timer_on) {
            ev_timer_stop(x->loop, &ns->init_timer);
            ns->timer_on = false;
        }
        if (timed_out && ns->stats) {
            msm_stat_inc(ns->stats->s.init_fetch_timeout);
            msm_stat_inc(ns->stats->s.update_attempt);
        }
        if (x->ready) {
            x->ready(x->ready_arg, ts->type_url, names[i]);
        }
    }
}

static void on_init_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_xds_name_sub *ns = MSM_CONTAINER_OF(w, struct msm_xds_name_sub, init_timer);
    ns->timer_on = false;
    msm_log(MSM_LOG_WARN, MSM_LC_XDS, "gRPC config: initial fetch timed out for %s%s%s",
            ns->ts->type_url, ns->name ? " " : "", ns->name ? ns->name : "");
    char *name = ns->name;
    make_ready(ns->x, ns->ts, &name, 1, true);
}

/* ---- config sources ------------------------------------------------------------------------ */

static const struct {
    const char *type; /* full message name */
    const char *sotw;
    const char *delta;
} standalone_methods[] = {
    {"envoy.config.listener.v3.Listener",
     "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners",
     "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners"},
    {"envoy.config.cluster.v3.Cluster",
     "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
     "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters"},
    {"envoy.config.endpoint.v3.ClusterLoadAssignment",
     "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints",
     "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints"},
    {"envoy.config.route.v3.RouteConfiguration",
     "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes",
     "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes"},
    {"envoy.config.route.v3.ScopedRouteConfiguration",
     "/envoy.service.route.v3.ScopedRoutesDiscoveryService/StreamScopedRoutes",
     "/envoy.service.route.v3.ScopedRoutesDiscoveryService/DeltaScopedRoutes"},
    {"envoy.config.route.v3.VirtualHost", NULL,
     "/envoy.service.route.v3.VirtualHostDiscoveryService/DeltaVirtualHosts"},
    {"envoy.extensions.transport_sockets.tls.v3.Secret",
     "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
     "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"},
    {"envoy.service.runtime.v3.Runtime",
     "/envoy.service.runtime.v3.RuntimeDiscoveryService/StreamRuntime",
     "/envoy.service.runtime.v3.RuntimeDiscoveryService/DeltaRuntime"},
    {"envoy.config.core.v3.TypedExtensionConfig",
     "/envoy.service.extension.v3.ExtensionConfigDiscoveryService/StreamExtensionConfigs",
     "/envoy.service.extension.v3.ExtensionConfigDiscoveryService/DeltaExtensionConfigs"},
};

static const char *standalone_method(const char *type_url, bool delta)
{
    const char *slash = strrchr(type_url, '/');
    const char *name = slash ? slash + 1 : type_url;
    for (size_t i = 0; i < MSM_ARRAY_SIZE(standalone_methods); i++) {
        if (!strcmp(standalone_methods[i].type, name)) {
            return delta ? standalone_methods[i].delta : standalone_methods[i].sotw;
        }
    }
    return NULL;
}

/* Check an ApiConfigSource the way Envoy does for gRPC transports. */
static int check_api_source(const Envoy__Config__Core__V3__ApiConfigSource *a, const char *what,
                            bool *delta, struct msm_err *err)
{
    switch (a->api_type) {
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC:
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__AGGREGATED_GRPC:
        *delta = false;
        break;
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__DELTA_GRPC:
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__AGGREGATED_DELTA_GRPC:
        *delta = true;
        break;
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__REST:
        return msm_err_set(err, "%s: api_type REST is not supported (use GRPC or DELTA_GRPC)",
                           what);
    default:
        return msm_err_set(err, "%s: api_type %d is not supported (use GRPC or DELTA_GRPC)",
                           what, (int)a->api_type);
    }
    if (a->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3) {
        return msm_err_set(err, "%s: V2 (and AUTO) xDS transport protocol versions are "
                                "deprecated and not supported: set transport_api_version V3",
                           what);
    }
    if (a->n_cluster_names) {
        return msm_err_set(err, "%s: cluster_names is for REST; a gRPC config source needs "
                                "grpc_services", what);
    }
    if (a->n_grpc_services != 1) {
        return msm_err_set(err, "%s: exactly one grpc_services entry is required (got %zu)",
                           what, a->n_grpc_services);
    }
    return 0;
}

static struct msm_xds_source *source_add(struct msm_xds *x, const char *key, bool delta,
                                         bool node_first_only, struct msm_xds_target *tg,
                                         const char *cp_prefix, const char *method)
{
    struct msm_xds_source *s = MSM_NEW(struct msm_xds_source);
    s->id = x->n_sources;
    s->key = msm_xstrdup(key);
    s->delta = delta;
    s->node_first_only = node_first_only;
    s->target = *tg;
    memset(tg, 0, sizeof(*tg));
    struct msm_xds_cmd *c = MSM_NEW(struct msm_xds_cmd);
    c->kind = MSM_XDS_CMD_ADD_SOURCE;
    c->src = s->id;
    c->delta = delta;
    c->node_first_only = node_first_only;
    c->method = method;
    msm_xds_target_copy(&c->target, &s->target);
    if (cp_prefix) {
        msm_xds_cp_stats_init(x->st, cp_prefix, &s->cp);
        msm_stat_set(s->cp.connected_state, 0);
        msm_stat_set(s->cp.pending_requests, 0);
        c->cp = &s->cp;
    }
    if (s->target.stat_cluster) {
        char *pfx = msm_xasprintf("cluster.%s.", s->target.stat_cluster);
        msm_xds_cx_stats_init(x->st, pfx, &s->cx);
        free(pfx);
        c->cx = &s->cx;
    }
    x->sources = msm_xrealloc(x->sources, sizeof(*x->sources) * (size_t)(x->n_sources + 1));
    x->sources[x->n_sources++] = s;
    msm__xds_thread_post(x->thread, c);
    return s;
}

static void source_free(struct msm_xds_source *s)
{
    for (int i = 0; i < s->n_types; i++) {
        type_sub_free(s->types[i]);
    }
    free(s->types);
    msm_xds_target_deinit(&s->target);
    if (s->cp.connected_state) {
        msm_xds_cp_stats_deinit(&s->cp);
    }
    if (s->cx.upstream_cx_total) {
        msm_xds_cx_stats_deinit(&s->cx);
    }
    free(s->key);
    free(s);
}

/* The source for <src>: ADS, or a standalone stream for (api_config_source, type). */
static struct msm_xds_source *source_for(struct msm_xds *x,
                                         const Envoy__Config__Core__V3__ConfigSource *src,
                                         const char *type_url, const char *first_prefix,
                                         struct msm_err *err)
{
    int sp = src ? (int)src->config_source_specifier_case : 0;
    if (src && src->resource_api_version == ENVOY__CONFIG__CORE__V3__API_VERSION__V2) {
        msm_err_set(err, "config source: resource_api_version V2 is not supported");
        return NULL;
    }
    if (!src || sp == ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS ||
        sp == ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_SELF) {
        if (!x->has_ads) {
            msm_err_set(err, "config source: ADS is used but the bootstrap has no "
                             "dynamic_resources.ads_config");
            return NULL;
        }
        return x->sources[0];
    }
    if (sp == ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH ||
        sp == ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH_CONFIG_SOURCE) {
        msm_err_set(err, "config source: filesystem subscriptions (path) are not supported");
        return NULL;
    }
    if (sp != ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE) {
        msm_err_set(err, "config source: one of ads, self or api_config_source is required");
        return NULL;
    }
    const Envoy__Config__Core__V3__ApiConfigSource *a = src->api_config_source;
    bool delta;
    if (check_api_source(a, "api_config_source", &delta, err) < 0) {
        return NULL;
    }
    size_t len = protobuf_c_message_get_packed_size(&a->base);
    uint8_t *buf = msm_xmalloc(len + 1);
    protobuf_c_message_pack(&a->base, buf);
    char *key = msm_xmalloc(len * 2 + strlen(type_url) + 2);
    for (size_t i = 0; i < len; i++) {
        snprintf(key + 2 * i, 3, "%02x", buf[i]);
    }
    sprintf(key + 2 * len, "|%s", type_url);
    free(buf);
    for (int i = 0; i < x->n_sources; i++) {
        if (!strcmp(x->sources[i]->key, key)) {
            free(key);
            return x->sources[i];
        }
    }
    const char *method = standalone_method(type_url, delta);
    if (!method) {
        msm_err_set(err, "api_config_source: no %s discovery service for %s",
                    delta ? "delta" : "state-of-the-world", type_url);
        free(key);
        return NULL;
    }
    struct msm_xds_target tg;
    if (msm_xds_target_resolve(x->bootstrap, a->grpc_services[0], &tg, err) < 0) {
        msm_err_prefix(err, "api_config_source.grpc_services[0]");
        free(key);
        return NULL;
    }
    char *cp = NULL;
    if (first_prefix) {
        cp = msm_xasprintf("%scontrol_plane.", first_prefix);
    }
    struct msm_xds_source *s = source_add(x, key, delta, a->set_node_on_first_message_only,
                                          &tg, cp, method);
    free(cp);
    free(key);
    return s;
}

/* ---- construction ---------------------------------------------------------------------------- */

static Envoy__Config__Core__V3__Node *make_node(const Envoy__Config__Bootstrap__V3__Bootstrap *b)
{
    Envoy__Config__Core__V3__Node *n;
    if (b->node) {
        size_t len = protobuf_c_message_get_packed_size(&b->node->base);
        uint8_t *buf = msm_xmalloc(len + 1);
        protobuf_c_message_pack(&b->node->base, buf);
        n = (Envoy__Config__Core__V3__Node *)protobuf_c_message_unpack(
            &envoy__config__core__v3__node__descriptor, NULL, len, buf);
        free(buf);
    } else {
        n = NULL;
    }
    if (!n) {
        n = msm_xmalloc(sizeof(*n));
        envoy__config__core__v3__node__init(n);
    }
    /* istiod ignores these; Envoy always sends user_agent_name "envoy" and its build version. */
    if (n->user_agent_name != protobuf_c_empty_string) {
        free(n->user_agent_name);
    }
    n->user_agent_name = msm_xstrdup("envoy");
    if (n->user_agent_version_type_case ==
        ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION) {
        if (n->user_agent_version != protobuf_c_empty_string) {
            free(n->user_agent_version);
        }
    } else if (n->user_agent_version_type_case ==
               ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_BUILD_VERSION) {
        protobuf_c_message_free_unpacked(&n->user_agent_build_version->base, NULL);
    }
    Envoy__Config__Core__V3__BuildVersion *bv = msm_xmalloc(sizeof(*bv));
    envoy__config__core__v3__build_version__init(bv);
    Envoy__Type__V3__SemanticVersion *sv = msm_xmalloc(sizeof(*sv));
    envoy__type__v3__semantic_version__init(sv);
    unsigned ma = 0, mi = 0, pa = 0;
    if (sscanf(MSM_VERSION, "%u.%u.%u", &ma, &mi, &pa) == 3) {
        sv->major_number = ma;
        sv->minor_number = mi;
        sv->patch = pa;
    }
    bv->version = sv;
    n->user_agent_version_type_case =
        ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_BUILD_VERSION;
    n->user_agent_build_version = bv;
    return n;
}

static Envoy__Config__Bootstrap__V3__Bootstrap *
copy_bootstrap(const Envoy__Config__Bootstrap__V3__Bootstrap *b, struct msm_err *err)
{
    size_t len = protobuf_c_message_get_packed_size(&b->base);
    uint8_t *buf = msm_xmalloc(len + 1);
    protobuf_c_message_pack(&b->base, buf);
    ProtobufCMessage *m =
        msm_pb_unpack(&envoy__config__bootstrap__v3__bootstrap__descriptor, buf, len, err);
    free(buf);
    return (Envoy__Config__Bootstrap__V3__Bootstrap *)m;
}

static int check_config_source(const Envoy__Config__Core__V3__ConfigSource *cs, const char *what,
                               bool has_ads, struct msm_err *err)
{
    if (!cs) {
        return 0;
    }
    switch (cs->config_source_specifier_case) {
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS:
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_SELF:
        if (!has_ads) {
            return msm_err_set(err, "%s: uses ADS but dynamic_resources has no ads_config", what);
        }
        return 0;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE: {
        bool delta;
        if (check_api_source(cs->api_config_source, "api_config_source", &delta, err) < 0) {
            msm_err_prefix(err, "%s", what);
            return MSM_EINVAL;
        }
        return 0;
    }
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH:
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH_CONFIG_SOURCE:
        return msm_err_set(err, "%s: filesystem subscriptions (path) are not supported", what);
    default:
        return msm_err_set(err, "%s: a config source (ads, api_config_source) is required",
                           what);
    }
}

static void xds_free_parts(struct msm_xds *x)
{
    for (int i = 0; i < x->n_sources; i++) {
        source_free(x->sources[i]);
    }
    free(x->sources);
    if (x->node) {
        protobuf_c_message_free_unpacked(&x->node->base, NULL);
    }
    if (x->bootstrap) {
        protobuf_c_message_free_unpacked(&x->bootstrap->base, NULL);
    }
    free(x);
}

struct msm_xds *msm_xds_new(struct ev_loop *main_loop,
                            const Envoy__Config__Bootstrap__V3__Bootstrap *b,
                            msm_xds_apply_fn *apply, void *arg, struct msm_stats_store *st,
                            struct msm_err *err)
{
    err->msg[0] = '\0';
    const Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *dr = b->dynamic_resources;
    if (!dr) {
        return NULL;
    }
    const Envoy__Config__Core__V3__ApiConfigSource *ads = dr->ads_config;
    bool delta = false;
    if (ads && check_api_source(ads, "dynamic_resources.ads_config", &delta, err) < 0) {
        return NULL;
    }
    if (check_config_source(dr->lds_config, "dynamic_resources.lds_config", ads != NULL, err) <
            0 ||
        check_config_source(dr->cds_config, "dynamic_resources.cds_config", ads != NULL, err) <
            0) {
        return NULL;
    }
    struct msm_xds_target tg;
    memset(&tg, 0, sizeof(tg));
    if (ads && msm_xds_target_resolve(b, ads->grpc_services[0], &tg, err) < 0) {
        msm_err_prefix(err, "dynamic_resources.ads_config.grpc_services[0]");
        return NULL;
    }
    struct msm_xds *x = MSM_NEW(struct msm_xds);
    x->bootstrap = copy_bootstrap(b, err);
    if (!x->bootstrap) {
        msm_xds_target_deinit(&tg);
        xds_free_parts(x);
        return NULL;
    }
    x->loop = main_loop;
    x->st = st;
    x->apply = apply;
    x->apply_arg = arg;
    x->node = make_node(b);
    x->has_ads = ads != NULL;
    msm_mailbox_init(&x->mb, main_loop);
    x->thread = msm__xds_thread_new(x);
    if (ads) {
        source_add(x, "ads", delta, ads->set_node_on_first_message_only, &tg, "control_plane.",
                   NULL);
        msm_log(MSM_LOG_INFO, MSM_LC_XDS, "xds: ADS (%s) via %s",
                delta ? "delta" : "state of the world", x->sources[0]->target.desc);
    }
    return x;
}

int msm_xds_start(struct msm_xds *x)
{
    if (x->started) {
        return 0;
    }
    int rc = msm__xds_thread_start(x->thread);
    if (rc == 0) {
        x->started = true;
    }
    return rc;
}

void msm_xds_free(struct msm_xds *x)
{
    if (!x) {
        return;
    }
    x->stopping = true;
    msm__xds_thread_free(x->thread);
    x->thread = NULL;
    /* Events posted before the thread stopped: dropped (stopping). */
    msm_mailbox_drain(&x->mb);
    msm_mailbox_deinit(&x->mb);
    xds_free_parts(x);
}

void msm_xds_set_ready_cb(struct msm_xds *x, msm_xds_ready_fn *cb, void *arg)
{
    x->ready = cb;
    x->ready_arg = arg;
}

bool msm_xds_has_ads(const struct msm_xds *x)
{
    return x->has_ads;
}

/* ---- subscribing ------------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int subscribe_impl(struct msm_xds *x, const Envoy__Config__Core__V3__ConfigSource *src,
                          const char *type_url, const char *const *names,
                          const char *const *prefixes, const char *pattern, int n,
                          bool wildcard, struct msm_err *err)
{
    if (!type_url || !msm_types_find_url(type_url)) {
        return msm_err_set(err, "subscribe: unknown type URL '%s'", type_url ? type_url : "");
    }
    if (n < 0 || (n > 0 && !names)) {
        return msm_err_set(err, "subscribe: bad name list");
    }
    char *first = NULL;
    if (pattern) {
        first = expand_prefix(pattern, n > 0 ? names[0] : NULL);
    } else if (prefixes && n > 0 && prefixes[0]) {
        first = msm_xstrdup(prefixes[0]);
    }
    struct msm_xds_source *s = source_for(x, src, type_url, first, err);
    free(first);
    if (!s) {
        return MSM_EINVAL;
    }
    int64_t timeout_ms = MSM_XDS_DEFAULT_INIT_FETCH_TIMEOUT_MS;
    if (src && src->initial_fetch_timeout) {
        timeout_ms = src->initial_fetch_timeout->seconds * 1000 +
                     src->initial_fetch_timeout->nanos / 1000000;
        if (timeout_ms < 0) {
            timeout_ms = 0;
        }
    }
    struct msm_xds_type_sub *ts = find_type_sub(s, type_url);
    if (!ts) {
        ts = MSM_NEW(struct msm_xds_type_sub);
        ts->type_url = msm_xstrdup(type_url);
        s->types = msm_xrealloc(s->types, sizeof(*s->types) * (size_t)(s->n_types + 1));
        s->types[s->n_types++] = ts;
    }
    /* New set: name -> prefix (borrowed). */
    struct msm_strmap want;
    msm_strmap_init_borrowed(&want); /* <names> outlive it */
    for (int i = 0; i < n; i++) {
        if (!names[i]) {
            continue;
        }
        msm_strmap_put(&want, names[i], prefixes ? (void *)prefixes[i] : NULL, NULL);
    }
    /* Drop what is no longer wanted. */
    const char **old = msm_strmap_sorted_keys(&ts->names);
    for (size_t i = 0; old[i]; i++) {
        if (!msm_strmap_has(&want, old[i])) {
            void *v = NULL;
            char *k = msm_xstrdup(old[i]);
            msm_strmap_del(&ts->names, k, &v);
            free(k);
            name_sub_free(v);
        }
    }
    free(old);
    /* Add what is new. */
    const char *key;
    void *pfx;
    for (size_t i = 0; msm_strmap_next(&want, &i, &key, &pfx);) {
        bool added;
        void **slot = msm_strmap_put(&ts->names, key, NULL, &added);
        if (added) {
            char *p = pattern ? expand_prefix(pattern, key) : pfx ? msm_xstrdup(pfx) : NULL;
            *slot = name_sub_new(x, ts, key, p, timeout_ms);
            free(p);
        }
    }
    if (wildcard && !ts->wild) {
        char *p = pattern ? expand_prefix(pattern, NULL) : NULL;
        ts->wild = name_sub_new(x, ts, NULL, p, timeout_ms);
        free(p);
    } else if (!wildcard && ts->wild) {
        name_sub_free(ts->wild);
        ts->wild = NULL;
    }
    ts->wildcard = wildcard;
    struct msm_xds_cmd *c = MSM_NEW(struct msm_xds_cmd);
    c->kind = MSM_XDS_CMD_SUBSCRIBE;
    c->src = s->id;
    c->type_url = msm_xstrdup(type_url);
    c->wildcard = wildcard;
    c->names = msm_xcalloc(want.n + 1, sizeof(char *));
    for (size_t i = 0; msm_strmap_next(&want, &i, &key, NULL);) {
        c->names[c->n++] = msm_xstrdup(key);
    }
    qsort(c->names, (size_t)c->n, sizeof(char *), cmp_str);
    msm_strmap_deinit(&want);
    msm__xds_thread_post(x->thread, c);
    return 0;
}

int msm_xds_subscribe(struct msm_xds *x, const Envoy__Config__Core__V3__ConfigSource *src,
                      const char *type_url, const char *const *names, int n, bool wildcard,
                      const char *stat_prefix, struct msm_err *err)
{
    return subscribe_impl(x, src, type_url, names, NULL, stat_prefix, n, wildcard, err);
}

int msm_xds_subscribe_ex(struct msm_xds *x, const Envoy__Config__Core__V3__ConfigSource *src,
                         const char *type_url, const char *const *names,
                         const char *const *stat_prefixes, int n, bool wildcard,
                         struct msm_err *err)
{
    return subscribe_impl(x, src, type_url, names, stat_prefixes, NULL, n, wildcard, err);
}

/* ---- responses ---------------------------------------------------------------------------- */

static void post_decision(struct msm_xds *x, const struct msm_xds_event *ev,
                          const struct msm_xds_decoded *d, bool accepted, const char *error)
{
    struct msm_xds_cmd *c = MSM_NEW(struct msm_xds_cmd);
    c->kind = MSM_XDS_CMD_DECISION;
    c->src = ev->src;
    c->gen = ev->gen;
    c->type_url = msm_xstrdup(d->type_url);
    c->nonce = msm_xstrdup(d->nonce);
    c->accepted = accepted;
    c->version_info = msm_xstrdup(d->version_info);
    c->error = accepted ? NULL : msm_xstrdup(error);
    msm__xds_thread_post(x->thread, c);
}

static void count_stats(struct block_set *bs, bool accepted, const char *version, double dur_ms,
                        double now_s)
{
    for (size_t i = 0; i < bs->n; i++) {
        struct msm_xds_stat_block *b = bs->v[i];
        msm_stat_inc(b->s.update_attempt);
        if (!accepted) {
            msm_stat_inc(b->s.update_rejected);
            continue;
        }
        msm_stat_inc(b->s.update_success);
        msm_stat_set(b->s.update_time, (uint64_t)(now_s * 1000.0));
        msm_stat_set(b->s.version, XXH64(version, strlen(version), 0));
        msm_stat_set_text(b->version_text, version);
        msm_stat_record(b->s.update_duration, (uint64_t)(dur_ms < 0 ? 0 : dur_ms));
    }
}

/* What msm_xds_update_release needs: the update's resources are a filtered copy of the
 * decoded response's. */
struct update_rel {
    struct msm_xds_decoded *d;
    struct msm_xds_resource *res;
    const int *map;
    int n;
    int cur; /* the resource whose lazily decoded message is live, -1 = none */
};

void msm_xds_update_release(const struct msm_xds_update *u, int i)
{
    struct update_rel *rel = u->priv_;
    if (!rel || i < 0 || i >= rel->n) {
        return;
    }
    rel->res[i].msg = NULL;
    rel->res[i].bytes = NULL;
    rel->res[i].len = 0;
    if (rel->cur == i) {
        rel->cur = -1;
    }
    msm_xds_decoded_release(rel->d, rel->map[i]);
}

const ProtobufCMessage *msm_xds_update_msg(const struct msm_xds_update *u, int i,
                                           struct msm_err *err)
{
    struct update_rel *rel = u->priv_;
    if (i < 0 || i >= u->n) {
        msm_err_set(err, "no resource %d", i);
        return NULL;
    }
    if (!rel || u->resources[i].msg) {
        if (!u->resources[i].msg) {
            msm_err_set(err, "resource '%s' was released", u->resources[i].name);
        }
        return u->resources[i].msg;
    }
    const ProtobufCMessage *m = msm_xds_decoded_msg(rel->d, rel->map[i], err);
    if (msm_xds_decoded_lazy(rel->d)) {
        /* Only one lazily decoded message lives at a time. */
        if (rel->cur >= 0 && rel->cur != i) {
            rel->res[rel->cur].msg = NULL;
        }
        rel->cur = m ? i : -1;
    }
    rel->res[i].msg = m;
    return m;
}

void msm_xds_set_lazy(struct msm_xds *x, bool lazy)
{
    atomic_store(&x->lazy, lazy);
}

static void handle_response(struct msm_xds *x, struct msm_xds_event *ev)
{
    struct msm_xds_decoded *d = ev->d;
    struct msm_xds_source *s = x->sources[ev->src];
    struct msm_xds_type_sub *ts = find_type_sub(s, d->type_url);
    if (!ts) {
        /* Not subscribed from here (cannot normally happen: the thread drops those). */
        post_decision(x, ev, d, true, NULL);
        return;
    }
    /* The update: only what is subscribed. */
    struct msm_xds_resource *res = msm_xcalloc((size_t)d->n + 1, sizeof(*res));
    int *map = msm_xcalloc((size_t)d->n + 1, sizeof(*map));
    const char **removed = msm_xcalloc((size_t)d->n_removed + 1, sizeof(*removed));
    int nres = 0, nrem = 0;
    for (int i = 0; i < d->n; i++) {
        if (ts->wildcard || msm_strmap_has(&ts->names, d->res[i].name)) {
            map[nres] = i;
            res[nres++] = d->res[i];
        } else {
            msm_log(MSM_LOG_DEBUG, MSM_LC_XDS, "xds: %s '%s' was not subscribed: ignored",
                    d->type_url, d->res[i].name);
        }
    }
    for (int i = 0; i < d->n_removed; i++) {
        if (ts->wildcard || msm_strmap_has(&ts->names, d->removed[i])) {
            removed[nrem++] = d->removed[i];
        }
    }
    if (!d->error && !ts->wildcard && nres == 0 && nrem == 0) {
        /* Nothing this client asked for (e.g. a SotW push for names dropped meanwhile): as
         * Envoy, no watch is called and the response is ACKed. */
        free(res);
        free(map);
        free(removed);
        post_decision(x, ev, d, true, NULL);
        return;
    }
    /* Names touched, copied: apply may change the subscriptions. */
    char **touched = msm_xcalloc((size_t)(nres + nrem) + 2, sizeof(char *));
    size_t nt = 0;
    for (int i = 0; i < nres; i++) {
        touched[nt++] = msm_xstrdup(res[i].name);
    }
    for (int i = 0; i < nrem; i++) {
        touched[nt++] = msm_xstrdup(removed[i]);
    }
    struct msm_err err;
    err.msg[0] = '\0';
    int rc;
    double t0 = ev_time();
    if (d->error) {
        rc = msm_err_set(&err, "%s", d->error);
    } else {
        struct update_rel rel = {.d = d, .res = res, .map = map, .n = nres, .cur = -1};
        struct msm_xds_update u = {
            .type_url = d->type_url,
            .sotw = !d->delta,
            .resources = res,
            .n = nres,
            .removed = removed,
            .n_removed = nrem,
            .version_info = d->version_info,
            .priv_ = &rel,
        };
        rc = x->apply(x->apply_arg, &u, &err);
        if (rc < 0 && !err.msg[0]) {
            msm_err_set(&err, "update rejected (code %d)", rc);
        }
    }
    double now = ev_time();
    bool accepted = rc >= 0;
    if (accepted) {
        msm_log(MSM_LOG_DEBUG, MSM_LC_XDS, "gRPC config for %s accepted with %d resources "
                "(%d removed) with version %s", d->type_url, nres, nrem, d->version_info);
    } else {
        msm_log(MSM_LOG_WARN, MSM_LC_XDS, "gRPC config for %s rejected: %s", d->type_url,
                err.msg);
    }
    /* Envoy: a rejection counts on every watch of the type; a success on the watches whose
     * resources the response carried. */
    struct block_set bs = {0};
    if (!accepted) {
        block_set_all(&bs, ts);
    } else {
        if (ts->wild) {
            block_set_add(&bs, ts->wild->stats);
        }
        for (size_t i = 0; i < nt; i++) {
            void **slot = msm_strmap_find(&ts->names, touched[i]);
            if (slot) {
                block_set_add(&bs, ((struct msm_xds_name_sub *)*slot)->stats);
            }
        }
    }
    count_stats(&bs, accepted, d->version_info, (now - t0) * 1000.0, now);
    block_set_free(&bs);
    post_decision(x, ev, d, accepted, err.msg);
    /* Readiness: rejected ends init for every subscription of the type (as Envoy). */
    if (!accepted) {
        for (size_t i = 0; i < nt; i++) {
            free(touched[i]);
        }
        free(touched);
        const char **all = msm_strmap_sorted_keys(&ts->names);
        nt = 0;
        touched = msm_xcalloc(ts->names.n + 2, sizeof(char *));
        for (size_t i = 0; all[i]; i++) {
            touched[nt++] = msm_xstrdup(all[i]);
        }
        free(all);
    }
    if (ts->wildcard) {
        touched[nt++] = NULL; /* the wildcard subscription */
    }
    make_ready(x, ts, touched, nt, false);
    for (size_t i = 0; i < nt; i++) {
        free(touched[i]);
    }
    free(touched);
    free(res);
    free(map);
    free(removed);
}

static void handle_stream_down(struct msm_xds *x, struct msm_xds_event *ev)
{
    struct msm_xds_source *s = x->sources[ev->src];
    struct block_set bs = {0};
    for (int i = 0; i < s->n_types; i++) {
        block_set_all(&bs, s->types[i]);
    }
    for (size_t i = 0; i < bs.n; i++) {
        msm_stat_inc(bs.v[i]->s.update_failure);
        msm_stat_inc(bs.v[i]->s.update_attempt);
    }
    block_set_free(&bs);
}

void msm__xds_on_event(void *arg)
{
    struct msm_xds_event *ev = arg;
    struct msm_xds *x = ev->x;
    if (!x->stopping) {
        if (ev->kind == MSM_XDS_EV_RESPONSE) {
            handle_response(x, ev);
        } else if (ev->kind == MSM_XDS_EV_STREAM_DOWN) {
            handle_stream_down(x, ev);
        }
    }
    msm_xds_decoded_free(ev->d);
    free(ev);
}
