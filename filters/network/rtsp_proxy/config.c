/* Config glue for msm.filters.network.rtsp_proxy: proto -> struct msm_rtsp_config, and the URL
 * routes built from it. Every field has a default, so the empty config works: fan-out on, ports
 * [16384, 32768), 60 s sessions, routing by the chain's tcp_proxy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "msm/extensions/filters/network/rtsp_proxy/v1/rtsp_proxy.pb-c.h"

#include "admin/admin.h"
#include "common/alloc.h"
#include "common/log.h"
#include "config/pbutil.h"
#include "filters/network/rtsp_proxy/rtsp_private.h"

#define DEFAULT_PORT_START 16384
#define DEFAULT_PORT_END 32768
#define DEFAULT_SESSION_TIMEOUT_MS (60 * 1000)
#define DEFAULT_LINGER_MS (5 * 1000)
#define DEFAULT_REQUEST_TIMEOUT_MS (15 * 1000)
#define DEFAULT_SUB_BUFFER (1024 * 1024)
#define REGEX_MATCH_LIMIT 10000
#define REGEX_DEPTH_LIMIT 1000

/* The generated names are longer than a line. */
#define PB(x) MSM__EXTENSIONS__FILTERS__NETWORK__RTSP_PROXY__V1__RTSP_PROXY__##x

typedef Msm__Extensions__Filters__Network__RtspProxy__V1__RtspProxy pb_rtsp;
typedef Msm__Extensions__Filters__Network__RtspProxy__V1__RtspProxy__Route pb_route;

static void routes_free(struct msm_rtsp_route *r, int n)
{
    for (int i = 0; i < n; i++) {
        free(r[i].path);
        free(r[i].host);
        if (r[i].re) {
            pcre2_code_free(r[i].re);
        }
        for (int k = 0; k < r[i].n_clusters; k++) {
            free(r[i].clusters[k].name);
        }
        free(r[i].clusters);
    }
    free(r);
}

static void config_destroy(struct msm_rtsp_config *c)
{
    routes_free(c->routes, c->n_routes);
    if (c->mctx) {
        pcre2_match_context_free(c->mctx);
    }
    if (c->stat_prefix) {
        msm_rtsp_stats_deinit(&c->stats);
    }
    free(c->stat_prefix);
    free(c);
}

struct msm_rtsp_config *msm_rtsp_config_ref(struct msm_rtsp_config *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void msm_rtsp_config_unref(struct msm_rtsp_config *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1) {
        config_destroy(c);
    }
}

static void config_free(void *p)
{
    msm_rtsp_config_unref(p);
}

static int duration_ms(const Google__Protobuf__Duration *d, uint32_t dflt, const char *field,
                       uint32_t *out, struct msm_err *err)
{
    int64_t ms = msm_pb_duration_ms(d, dflt);
    if (ms < 0 || ms > UINT32_MAX) {
        return msm_err_set(err, "%s: out of range", field);
    }
    *out = (uint32_t)ms;
    return 0;
}

static int route_from_proto(const pb_route *p, struct msm_rtsp_route *r, size_t i,
                            struct msm_err *err)
{
    const Msm__Extensions__Filters__Network__RtspProxy__V1__RtspProxy__RouteMatch *m = p->match;
    if (m) {
        switch (m->path_specifier_case) {
        case PB(ROUTE_MATCH__PATH_SPECIFIER_PATH):
            r->kind = MSM_RTSP_PATH_EXACT;
            r->path = msm_xstrdup(m->path);
            break;
        case PB(ROUTE_MATCH__PATH_SPECIFIER_PREFIX):
            r->kind = MSM_RTSP_PATH_PREFIX;
            r->path = msm_xstrdup(m->prefix);
            break;
        case PB(ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX): {
            if (!m->safe_regex || !m->safe_regex->regex[0]) {
                return msm_err_set(err, "routes[%zu].match.safe_regex.regex: must not be empty",
                                   i);
            }
            int ec;
            PCRE2_SIZE eo;
            r->kind = MSM_RTSP_PATH_REGEX;
            r->re = pcre2_compile((PCRE2_SPTR)m->safe_regex->regex, PCRE2_ZERO_TERMINATED,
                                  PCRE2_NEVER_BACKSLASH_C, &ec, &eo, NULL);
            if (!r->re) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(ec, msg, sizeof(msg));
                return msm_err_set(err, "routes[%zu].match.safe_regex.regex: invalid at offset "
                                   "%zu: %s", i, (size_t)eo, (const char *)msg);
            }
            break;
        }
        default:
            r->kind = MSM_RTSP_PATH_ANY;
            break;
        }
        if (m->host[0]) {
            r->host = msm_xstrdup(m->host);
        }
    }
    switch (p->cluster_specifier_case) {
    case PB(ROUTE__CLUSTER_SPECIFIER_CLUSTER):
        if (!p->cluster[0]) {
            return msm_err_set(err, "routes[%zu].cluster: must not be empty", i);
        }
        r->clusters = msm_xcalloc(1, sizeof(*r->clusters));
        r->clusters[0].name = msm_xstrdup(p->cluster);
        r->clusters[0].weight = 1;
        r->n_clusters = 1;
        r->total_weight = 1;
        return 0;
    case PB(ROUTE__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS): {
        const Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster *wc =
            p->weighted_clusters;
        if (!wc || wc->n_clusters < 1) {
            return msm_err_set(err, "routes[%zu].weighted_clusters.clusters: at least one "
                               "cluster is required", i);
        }
        r->clusters = msm_xcalloc(wc->n_clusters, sizeof(*r->clusters));
        for (size_t k = 0; k < wc->n_clusters; k++) {
            if (!wc->clusters[k]->name[0]) {
                return msm_err_set(err, "routes[%zu].weighted_clusters.clusters[%zu].name: must "
                                   "not be empty", i, k);
            }
            r->clusters[k].name = msm_xstrdup(wc->clusters[k]->name);
            r->clusters[k].weight = wc->clusters[k]->weight;
            r->total_weight += wc->clusters[k]->weight;
            r->n_clusters++;
        }
        if (!r->total_weight) {
            return msm_err_set(err, "routes[%zu].weighted_clusters: the sum of weights must be "
                               "positive", i);
        }
        return 0;
    }
    default:
        return msm_err_set(err, "routes[%zu]: one of cluster or weighted_clusters is required", i);
    }
}

static int ports_from_proto(const pb_rtsp *p, struct msm_rtsp_config *c, struct msm_err *err)
{
    uint32_t start = DEFAULT_PORT_START, end = DEFAULT_PORT_END;
    if (p->rtp_port_range && p->rtp_port_range->start) {
        start = p->rtp_port_range->start;
        end = p->rtp_port_range->end;
    }
    if (end > 65536) {
        return msm_err_set(err, "rtp_port_range.end: must be <= 65536");
    }
    msm_rtp_port_range_init(&c->ports, start, end);
    if (!msm_rtp_port_range_pairs(&c->ports)) {
        return msm_err_set(err, "rtp_port_range: [%u, %u) holds no even/odd port pair", start,
                           end);
    }
    return 0;
}

static int config_new(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    const pb_rtsp *p = (const void *)msg;
    struct msm_rtsp_config *c = MSM_NEW(struct msm_rtsp_config);
    atomic_init(&c->refs, 1);
    if (ports_from_proto(p, c, err) < 0) {
        goto fail;
    }
    if (p->n_routes) {
        c->routes = msm_xcalloc(p->n_routes, sizeof(*c->routes));
        for (size_t i = 0; i < p->n_routes; i++) {
            c->n_routes = (int)i + 1;
            if (route_from_proto(p->routes[i], &c->routes[i], i, err) < 0) {
                goto fail;
            }
        }
        c->mctx = pcre2_match_context_create(NULL);
        pcre2_set_match_limit(c->mctx, REGEX_MATCH_LIMIT);
        pcre2_set_depth_limit(c->mctx, REGEX_DEPTH_LIMIT);
    }
    if (duration_ms(p->session_timeout, DEFAULT_SESSION_TIMEOUT_MS, "session_timeout",
                    &c->session_timeout_ms, err) < 0 ||
        duration_ms(p->fanout_linger, DEFAULT_LINGER_MS, "fanout_linger", &c->fanout_linger_ms,
                    err) < 0 ||
        duration_ms(p->request_timeout, DEFAULT_REQUEST_TIMEOUT_MS, "request_timeout",
                    &c->request_timeout_ms, err) < 0) {
        goto fail;
    }
    if (c->session_timeout_ms && c->session_timeout_ms < 1000) {
        msm_err_set(err, "session_timeout: must be 0 (never) or at least 1s");
        goto fail;
    }
    c->fanout = msm_pb_bool(p->fanout, true);
    switch (p->upstream_transport) {
    case PB(UPSTREAM_TRANSPORT__UDP):
        c->upstream_transport = MSM_RTSP_UP_UDP;
        break;
    case PB(UPSTREAM_TRANSPORT__TCP):
        c->upstream_transport = MSM_RTSP_UP_TCP;
        break;
    case PB(UPSTREAM_TRANSPORT__AUTO):
        c->upstream_transport = MSM_RTSP_UP_AUTO;
        break;
    default:
        msm_err_set(err, "upstream_transport: unknown value %d", (int)p->upstream_transport);
        goto fail;
    }
    if (p->media_protection) {
        c->media_protection = (int)p->media_protection->mode;
        if (c->media_protection < 0 || c->media_protection > 2) {
            msm_err_set(err, "media_protection.mode: unknown value %d", c->media_protection);
            goto fail;
        }
    }
    if (p->max_sessions) {
        c->has_max_sessions = true;
        c->max_sessions = p->max_sessions->value;
    }
    c->subscriber_buffer_limit = msm_pb_u32(p->subscriber_buffer_limit_bytes, DEFAULT_SUB_BUFFER);
    c->max_session_stats = msm_pb_u32(p->max_session_stats, MSM_RTSP_DEFAULT_MAX_SESSION_STATS);
    c->limits.max_head = 16 * 1024;
    c->limits.max_headers = MSM_RTSP_MAX_HEADERS;
    c->limits.max_body = 64 * 1024;
    c->stat_prefix = msm_xasprintf("rtsp.%s.", p->stat_prefix[0] ? p->stat_prefix : "default");
    c->store = ctx->stats;
    msm_rtsp_stats_init(ctx->stats, c->stat_prefix, &c->stats);
    /* GET /rtsp/sessions lists the sessions of every config (main thread, idempotent). */
    msm_admin_set_rtsp_sessions_provider(rtsp_smetrics_admin, NULL);
    *out = c;
    return 0;
fail:
    config_destroy(c);
    return MSM_EINVAL;
}

static bool host_matches(const char *pattern, const char *host, size_t n)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        size_t sl = strlen(pattern + 1); /* ".suffix" */
        return n > sl && !strncasecmp(host + n - sl, pattern + 1, sl);
    }
    return strlen(pattern) == n && !strncasecmp(pattern, host, n);
}

const struct msm_rtsp_route *msm_rtsp_route_find(const struct msm_rtsp_config *c,
                                                 const char *host, size_t host_len,
                                                 const char *path, size_t path_len)
{
    for (int i = 0; i < c->n_routes; i++) {
        const struct msm_rtsp_route *r = &c->routes[i];
        if (r->host && !host_matches(r->host, host, host_len)) {
            continue;
        }
        switch (r->kind) {
        case MSM_RTSP_PATH_ANY:
            return r;
        case MSM_RTSP_PATH_EXACT:
            if (strlen(r->path) == path_len && !memcmp(r->path, path, path_len)) {
                return r;
            }
            break;
        case MSM_RTSP_PATH_PREFIX:
            if (strlen(r->path) <= path_len && !memcmp(r->path, path, strlen(r->path))) {
                return r;
            }
            break;
        case MSM_RTSP_PATH_REGEX: {
            pcre2_match_data *md = pcre2_match_data_create_from_pattern(r->re, NULL);
            int rc = pcre2_match(r->re, (PCRE2_SPTR)path, path_len, 0,
                                 PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, c->mctx);
            pcre2_match_data_free(md);
            if (rc >= 0) {
                return r;
            }
            break; /* no match, or the match limit was hit: treated as no match */
        }
        }
    }
    return NULL;
}

const char *msm_rtsp_route_pick(const struct msm_rtsp_route *r, uint64_t rnd)
{
    if (r->n_clusters == 1) {
        return r->clusters[0].name;
    }
    uint64_t x = rnd % r->total_weight;
    for (int i = 0; i < r->n_clusters; i++) {
        if (x < r->clusters[i].weight) {
            return r->clusters[i].name;
        }
        x -= r->clusters[i].weight;
    }
    return r->clusters[r->n_clusters - 1].name;
}

const struct msm_network_filter_ops msm_rtsp_proxy_ops = {
    .name = "msm.filters.network.rtsp_proxy",
    .config_type = "msm.extensions.filters.network.rtsp_proxy.v1.RtspProxy",
    .terminal = false,
    .may_terminate = true,
    .config_new = config_new,
    .config_free = config_free,
    .filter_new = msm_rtsp_filter_new,
    .on_new_connection = msm_rtsp_on_new_connection,
    .on_data = msm_rtsp_on_data,
    .on_event = msm_rtsp_on_event,
    .on_watermark = msm_rtsp_on_watermark,
    .filter_free = msm_rtsp_filter_free,
};
