/* Config glue for envoy.filters.http.router. */
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "filters/http/router/router.h"

static void config_free(void *p)
{
    struct msm_router_config *c = p;
    if (!c) {
        return;
    }
    for (int i = 0; i < c->n_strict_check_headers; i++) {
        free(c->strict_check_headers[i]);
    }
    free(c->strict_check_headers);
    msm_router_stats_deinit(&c->stats);
    msm_shadow_stats_deinit(&c->shadow_stats);
    free(c);
}

static int config_new(const ProtobufCMessage *msg, struct msm_http_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    const Envoy__Extensions__Filters__Http__Router__V3__Router *p = (const void *)msg;
    if (p->n_upstream_http_filters) {
        return msm_err_set(err, "upstream_http_filters: not supported");
    }
    if (p->n_strict_check_headers) {
        return msm_err_set(err, "strict_check_headers: not supported yet");
    }
    if (p->respect_expected_rq_timeout) {
        return msm_err_set(err, "respect_expected_rq_timeout: not supported yet");
    }
    struct msm_router_config *c = MSM_NEW(struct msm_router_config);
    c->suppress_envoy_headers = p->suppress_envoy_headers;
    c->respect_expected_rq_timeout = p->respect_expected_rq_timeout;
    if (p->n_strict_check_headers) {
        c->strict_check_headers = msm_xcalloc(p->n_strict_check_headers, sizeof(char *));
        for (size_t i = 0; i < p->n_strict_check_headers; i++) {
            c->strict_check_headers[c->n_strict_check_headers++] =
                msm_xstrdup(p->strict_check_headers[i]);
        }
    }
    if (p->n_upstream_log) {
        msm_log(MSM_LOG_WARN, MSM_LC_ROUTER, "router: upstream_log is not implemented yet; "
                "ignored");
    }
    msm_router_stats_init(ctx->stats, ctx->stat_prefix, &c->stats);
    msm_shadow_stats_init(ctx->stats, ctx->stat_prefix, &c->shadow_stats);
    *out = c;
    return 0;
}

const struct msm_http_filter_ops msm_router_ops = {
    .name = "envoy.filters.http.router",
    .config_type = "envoy.extensions.filters.http.router.v3.Router",
    .terminal = true,
    .config_new = config_new,
    .config_free = config_free,
    .filter_new = msm_router_filter_new,
    .decode_headers = msm_router_decode_headers,
    .decode_data = msm_router_decode_data,
    .decode_trailers = msm_router_decode_trailers,
    .on_destroy = msm_router_on_destroy,
    .on_watermark = msm_router_on_watermark,
    .filter_free = msm_router_filter_free,
};
