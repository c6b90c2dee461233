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
    struct msm_rbac *rules;  /* NULL: no enforcement */
    struct msm_rbac *shadow;
    struct msm_stat *allowed, *denied, *shadow_allowed, *shadow_denied;
};

struct inst {
    struct cfg *cfg;
    struct msm_http_stream *s;
};

/* Per-route: an RBAC that replaces the filter's rules (its stats stay the filter's). */
struct route_cfg {
    struct msm_rbac *rules;
    struct msm_rbac *shadow;
};

static int build(const Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *p, struct msm_rbac **rules,
                 struct msm_rbac **shadow, struct msm_err *err)
{
    if (p->matcher || p->shadow_matcher) {
        return msm_err_set(err, "matcher/shadow_matcher: the xDS matcher API is not supported "
                                "(use rules/shadow_rules)");
    }
    if (p->rules && !(*rules = msm_rbac_from_proto(p->rules, true, err))) {
        msm_err_prefix(err, "rules");
        return MSM_EINVAL;
    }
    if (p->shadow_rules && !(*shadow = msm_rbac_from_proto(p->shadow_rules, true, err))) {
        msm_err_prefix(err, "shadow_rules");
        msm_rbac_free(*rules);
        *rules = NULL;
        return MSM_EINVAL;
    }
    return 0;
}

static void cfg_free(void *p)
{
    struct cfg *c = p;
    if (!c) {
        return;
    }
    msm_rbac_free(c->rules);
    msm_rbac_free(c->shadow);
    msm_stat_unref(c->allowed);
    msm_stat_unref(c->denied);
    msm_stat_unref(c->shadow_allowed);
    msm_stat_unref(c->shadow_denied);
    free(c);
}

static int cfg_new(const ProtobufCMessage *msg, struct msm_http_factory_ctx *ctx, void **out,
                   struct msm_err *err)
{
    const Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *p = (const void *)msg;
    struct cfg *c = MSM_NEW(struct cfg);
    if (build(p, &c->rules, &c->shadow, err) < 0) {
        free(c);
        return MSM_EINVAL;
    }
    const char *sp = ctx->stat_prefix;
    c->allowed = msm_stats_getf(ctx->stats, MSM_STAT_COUNTER, "%srbac.%sallowed", sp,
                                p->rules_stat_prefix);
    c->denied = msm_stats_getf(ctx->stats, MSM_STAT_COUNTER, "%srbac.%sdenied", sp,
                               p->rules_stat_prefix);
    c->shadow_allowed = msm_stats_getf(ctx->stats, MSM_STAT_COUNTER, "%srbac.%sshadow_allowed",
                                       sp, p->shadow_rules_stat_prefix);
    c->shadow_denied = msm_stats_getf(ctx->stats, MSM_STAT_COUNTER, "%srbac.%sshadow_denied", sp,
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
    msm_rbac_free(r->rules);
    msm_rbac_free(r->shadow);
    free(r);
}

static int route_cfg_new(const ProtobufCMessage *msg, void **out, struct msm_err *err)
{
    const Envoy__Extensions__Filters__Http__Rbac__V3__RBACPerRoute *p = (const void *)msg;
    struct route_cfg *r = MSM_NEW(struct route_cfg);
    if (p->rbac && build(p->rbac, &r->rules, &r->shadow, err) < 0) {
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
    const struct msm_rbac *rules = f->cfg->rules, *shadow = f->cfg->shadow;
    bool disabled = false;
    const struct route_cfg *rc = msm_hs_per_route_config(f->s, &disabled);
    if (disabled) {
        return MSM_HF_CONTINUE;
    }
    if (rc) {
        rules = rc->rules;
        shadow = rc->shadow;
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
        msm_stat_inc(msm_rbac_allowed(shadow, &c, &policy) ? f->cfg->shadow_allowed
                                                            : f->cfg->shadow_denied);
    }
    if (!rules) {
        return MSM_HF_CONTINUE;
    }
    if (msm_rbac_allowed(rules, &c, &policy)) {
        msm_stat_inc(f->cfg->allowed);
        return MSM_HF_CONTINUE;
    }
    msm_stat_inc(f->cfg->denied);
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
