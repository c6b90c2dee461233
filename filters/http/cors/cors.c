/* envoy.filters.http.cors (see cors.h). */
#include <stdlib.h>
#include <string.h>

#include "envoy/config/route/v3/route_components.pb-c.h"

#include "common/alloc.h"
#include "config/pbutil.h"
#include "filters/http/cors/cors.h"
#include "http/route.h"
#include "upstream/cluster.h"

#define CORS_STATS(C, G, H) C(origin_valid) C(origin_invalid)
MSM_STATS_STRUCT(cors_stats, CORS_STATS);
MSM_STATS_INIT_FN(cors_stats, CORS_STATS)

struct cors_policy {
    struct msm_str_matcher *origins;
    int n_origins;
    char *allow_methods, *allow_headers, *expose_headers, *max_age;
    bool credentials, has_credentials;
    bool forward_not_matching_preflights;
    uint64_t enabled_num, enabled_den; /* filter_enabled; den 0 = always */
};

struct cors_cfg {
    struct cors_stats stats;
};

struct cors {
    struct msm_http_stream *s;
    struct cors_cfg *cfg;
    const struct cors_policy *pol;
    char *origin; /* allowed origin of a simple request */
};

static void policy_free(void *p)
{
    struct cors_policy *c = p;
    if (!c) {
        return;
    }
    for (int i = 0; i < c->n_origins; i++) {
        msm_str_matcher_deinit(&c->origins[i]);
    }
    free(c->origins);
    free(c->allow_methods);
    free(c->allow_headers);
    free(c->expose_headers);
    free(c->max_age);
    free(c);
}

static char *dup_or_null(const char *s)
{
    return s && s[0] ? msm_xstrdup(s) : NULL;
}

static int route_config_new(const ProtobufCMessage *msg, void **out, struct msm_err *err)
{
    const Envoy__Config__Route__V3__CorsPolicy *p = (const void *)msg;
    struct cors_policy *c = MSM_NEW(struct cors_policy);
    c->origins = p->n_allow_origin_string_match
                     ? msm_xcalloc(p->n_allow_origin_string_match, sizeof(*c->origins))
                     : NULL;
    for (size_t i = 0; i < p->n_allow_origin_string_match; i++) {
        c->n_origins++;
        if (msm_str_matcher_from_proto(p->allow_origin_string_match[i], &c->origins[i], err) < 0) {
            msm_err_prefix(err, "allow_origin_string_match[%zu]", i);
            policy_free(c);
            return MSM_EINVAL;
        }
    }
    c->allow_methods = dup_or_null(p->allow_methods);
    c->allow_headers = dup_or_null(p->allow_headers);
    c->expose_headers = dup_or_null(p->expose_headers);
    c->max_age = dup_or_null(p->max_age);
    c->has_credentials = p->allow_credentials != NULL;
    c->credentials = msm_pb_bool(p->allow_credentials, false);
    c->forward_not_matching_preflights = msm_pb_bool(p->forward_not_matching_preflights, true);
    if (p->enabled_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__CORS_POLICY__ENABLED_SPECIFIER_FILTER_ENABLED &&
        p->filter_enabled && p->filter_enabled->default_value) {
        static const uint64_t dens[] = {100, 10000, 1000000};
        const Envoy__Type__V3__FractionalPercent *f = p->filter_enabled->default_value;
        if ((int)f->denominator < 0 || (size_t)f->denominator >= 3) {
            policy_free(c);
            return msm_err_set(err, "filter_enabled.default_value.denominator: unknown");
        }
        c->enabled_num = f->numerator;
        c->enabled_den = dens[f->denominator];
    }
    *out = c;
    return 0;
}

static int config_new(const ProtobufCMessage *msg, struct msm_http_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    (void)msg;
    (void)err;
    struct cors_cfg *c = MSM_NEW(struct cors_cfg);
    char *prefix = msm_xasprintf("%scors.", ctx->stat_prefix);
    cors_stats_init(ctx->stats, prefix, &c->stats);
    free(prefix);
    *out = c;
    return 0;
}

static void config_free(void *p)
{
    struct cors_cfg *c = p;
    if (c) {
        cors_stats_deinit(&c->stats);
        free(c);
    }
}

static void *filter_new(void *config, struct msm_http_stream *s)
{
    struct cors *f = MSM_NEW(struct cors);
    f->s = s;
    f->cfg = config;
    return f;
}

static bool origin_allowed(const struct cors_policy *p, const char *origin)
{
    size_t n = strlen(origin);
    for (int i = 0; i < p->n_origins; i++) {
        if (msm_str_matcher_match(&p->origins[i], origin, n)) {
            return true;
        }
    }
    return false;
}

static enum msm_hf_status decode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    struct cors *f = p;
    (void)end_stream;
    bool disabled = false;
    const struct cors_policy *pol = msm_hs_per_route_config(f->s, &disabled);
    const char *origin = msm_hdrs_get(h, "origin");
    if (disabled || !pol || !origin || !origin[0]) {
        return MSM_HF_CONTINUE;
    }
    if (pol->enabled_den && msm_random() % pol->enabled_den >= pol->enabled_num) {
        return MSM_HF_CONTINUE; /* shadow mode / disabled by fraction */
    }
    f->pol = pol;
    if (!origin_allowed(pol, origin)) {
        msm_stat_inc(f->cfg->stats.origin_invalid);
        return MSM_HF_CONTINUE;
    }
    msm_stat_inc(f->cfg->stats.origin_valid);
    const char *method = msm_hdrs_get(h, ":method");
    const char *acrm = msm_hdrs_get(h, "access-control-request-method");
    if (method && !strcmp(method, "OPTIONS") && acrm && acrm[0]) {
        struct msm_hdrs r;
        msm_hdrs_init(&r);
        msm_hdrs_addz(&r, ":status", "200");
        msm_hdrs_addz(&r, "access-control-allow-origin", origin);
        if (pol->credentials) {
            msm_hdrs_addz(&r, "access-control-allow-credentials", "true");
        }
        if (pol->allow_methods) {
            msm_hdrs_addz(&r, "access-control-allow-methods", pol->allow_methods);
        }
        if (pol->allow_headers) {
            msm_hdrs_addz(&r, "access-control-allow-headers", pol->allow_headers);
        }
        if (pol->max_age) {
            msm_hdrs_addz(&r, "access-control-max-age", pol->max_age);
        }
        msm_hs_info(f->s)->details = "cors_response";
        msm_hs_encode_headers(f->s, &r, true);
        msm_hdrs_deinit(&r);
        return MSM_HF_STOP;
    }
    f->origin = msm_xstrdup(origin);
    return MSM_HF_CONTINUE;
}

static enum msm_hf_status encode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    struct cors *f = p;
    (void)end_stream;
    if (!f->origin) {
        return MSM_HF_CONTINUE;
    }
    msm_hdrs_set(h, "access-control-allow-origin", f->origin);
    if (f->pol->credentials) {
        msm_hdrs_set(h, "access-control-allow-credentials", "true");
    }
    if (f->pol->expose_headers) {
        msm_hdrs_set(h, "access-control-expose-headers", f->pol->expose_headers);
    }
    return MSM_HF_CONTINUE;
}

static void filter_free(void *p)
{
    struct cors *f = p;
    free(f->origin);
    free(f);
}

const struct msm_http_filter_ops msm_cors_ops = {
    .name = "envoy.filters.http.cors",
    .config_type = "envoy.extensions.filters.http.cors.v3.Cors",
    .route_config_type = "envoy.config.route.v3.CorsPolicy",
    .config_new = config_new,
    .config_free = config_free,
    .route_config_new = route_config_new,
    .route_config_free = policy_free,
    .filter_new = filter_new,
    .decode_headers = decode_headers,
    .encode_headers = encode_headers,
    .filter_free = filter_free,
};
