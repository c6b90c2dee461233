#include "filters/http/rbac/rbac.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "net/conn.h"
#include "net/transport.h"
#include "rbac/rbac.h"

struct cfg {
    struct msm_rbac_filter_cfg r;
};

struct inst {
    struct cfg *cfg;
    struct msm_http_stream *s;
};

/* Per-route: an RBAC that replaces the filter's rules (its stats stay the filter's: the
 * route's counters are NULL). */
struct route_cfg {
    struct msm_rbac_filter_cfg r;
};

static int build(const Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *p,
                 struct msm_rbac_filter_cfg *r, struct msm_err *err)
{
    return msm_rbac_filter_cfg_build(r, p->rules, p->shadow_rules,
                                     p->matcher || p->shadow_matcher, true, err);
}

static void cfg_free(void *p)
{
    struct cfg *c = p;
    if (!c) {
        return;
    }
    msm_rbac_filter_cfg_deinit(&c->r);
    free(c);
}

static int cfg_new(const ProtobufCMessage *msg, struct msm_http_factory_ctx *ctx, void **out,
                   struct msm_err *err)
{
    const Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *p = (const void *)msg;
    struct cfg *c = MSM_NEW(struct cfg);
    if (build(p, &c->r, err) < 0) {
        free(c);
        return MSM_EINVAL;
    }
    msm_rbac_filter_cfg_stats(&c->r, ctx->stats, ctx->stat_prefix, p->rules_stat_prefix,
                              p->shadow_rules_stat_prefix);
    *out = c;
    return 0;
}

static void route_cfg_free(void *p)
{
    struct route_cfg *r = p;
    if (!r) {
        return;
    }
    msm_rbac_filter_cfg_deinit(&r->r);
    free(r);
}

static int route_cfg_new(const ProtobufCMessage *msg, void **out, struct msm_err *err)
{
    const Envoy__Extensions__Filters__Http__Rbac__V3__RBACPerRoute *p = (const void *)msg;
    struct route_cfg *r = MSM_NEW(struct route_cfg);
    if (p->rbac && build(p->rbac, &r->r, err) < 0) {
        msm_err_prefix(err, "rbac");
        free(r);
        return MSM_EINVAL;
    }
    *out = r;
    return 0;
}

static void *filter_new(void *config, struct msm_http_stream *s)
{
    struct inst *f = MSM_NEW(struct inst);
    f->cfg = config;
    f->s = s;
    return f;
}

static void filter_free(void *p)
{
    free(p);
}

static enum msm_hf_status decode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    (void)end_stream;
    struct inst *f = p;
    const struct msm_rbac *rules = f->cfg->r.rules, *shadow = f->cfg->r.shadow;
    bool disabled = false;
    const struct route_cfg *rc = msm_hs_per_route_config(f->s, &disabled);
    if (disabled) {
        return MSM_HF_CONTINUE;
    }
    if (rc) {
        rules = rc->r.rules;
        shadow = rc->r.shadow;
    }
    const struct msm_conn *conn = msm_hs_conn(f->s);
    struct msm_rbac_ctx c;
    memset(&c, 0, sizeof(c));
    c.local = &conn->local;
    c.remote = &conn->remote;
    c.direct_remote = &conn->remote;
    const struct msm_tls_info *t = msm_conn_tls_info(conn);
    if (t) {
        c.uri_sans = (const char *const *)t->uri_sans;
        c.n_uri_sans = t->n_uri_sans;
        c.dns_sans = (const char *const *)t->dns_sans;
        c.n_dns_sans = t->n_dns_sans;
        c.subject = t->peer_subject;
        c.peer_validated = t->peer_cert_presented && t->peer_cert_validated;
        c.sni = t->sni;
    }
    c.headers = h;
    /* url_path matches the path without the query string, as Envoy's PathMatcher does. */
    char path[4096];
    const char *full = msm_hdrs_get(h, ":path");
    if (full) {
        size_t n = strcspn(full, "?");
        if (n >= sizeof(path)) {
            n = sizeof(path) - 1;
        }
        memcpy(path, full, n);
        path[n] = '\0';
        c.path = path;
    }
    const char *policy = NULL;
    if (shadow) {
        msm_stat_inc(msm_rbac_allowed(shadow, &c, &policy) ? f->cfg->r.shadow_allowed
                                                            : f->cfg->r.shadow_denied);
    }
    if (!rules) {
        return MSM_HF_CONTINUE;
    }
    if (msm_rbac_allowed(rules, &c, &policy)) {
        msm_stat_inc(f->cfg->r.allowed);
        return MSM_HF_CONTINUE;
    }
    msm_stat_inc(f->cfg->r.denied);
    msm_log(MSM_LOG_DEBUG, MSM_LC_RBAC, "[C%llu] rbac: request denied%s%s", conn->id,
            policy ? ", matched policy " : "", policy ? policy : "");
    msm_hs_send_local_reply(f->s, 403, "RBAC: access denied", "rbac_access_denied", 0);
    return MSM_HF_STOP;
}

const struct msm_http_filter_ops msm_http_rbac_ops = {
    .name = "envoy.filters.http.rbac",
    .config_type = "envoy.extensions.filters.http.rbac.v3.RBAC",
    .route_config_type = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
    .config_new = cfg_new,
    .config_free = cfg_free,
    .route_config_new = route_cfg_new,
    .route_config_free = route_cfg_free,
    .filter_new = filter_new,
    .decode_headers = decode_headers,
    .filter_free = filter_free,
};
