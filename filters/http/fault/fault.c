/* envoy.filters.http.fault (see fault.h). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"

#include "common/alloc.h"
#include "config/pbutil.h"
#include "filters/http/fault/fault.h"
#include "http/route.h"
#include "upstream/cluster.h"

struct fault_cfg {
    bool has_delay, delay_from_header;
    uint32_t delay_ms;
    uint64_t delay_num, delay_den;
    bool has_abort, abort_from_header;
    uint32_t abort_status;
    bool abort_grpc;
    uint32_t grpc_status;
    uint64_t abort_num, abort_den;
    struct msm_header_match *hdrs;
    int n_hdrs;
    char *upstream_cluster;
    uint32_t max_active; /* 0 = unlimited */
    /* filter-level only */
    struct msm_fault_stats stats;
    bool has_stats;
    atomic_uint *active; /* shared by the filter config and its per-route configs' users */
};

struct fault {
    struct msm_http_stream *s;
    struct fault_cfg *top;     /* the filter's config (stats, active counter) */
    const struct fault_cfg *c; /* the one in effect */
    ev_timer timer;
    struct ev_loop *loop;
    bool delaying, counted;
};

static const uint64_t dens[] = {100, 10000, 1000000};

static void cfg_free(void *p)
{
    struct fault_cfg *c = p;
    if (!c) {
        return;
    }
    for (int i = 0; i < c->n_hdrs; i++) {
        msm_header_match_deinit(&c->hdrs[i]);
    }
    free(c->hdrs);
    free(c->upstream_cluster);
    if (c->has_stats) {
        msm_fault_stats_deinit(&c->stats);
        free(c->active);
    }
    free(c);
}

static int percent(const Envoy__Type__V3__FractionalPercent *p, uint64_t *num, uint64_t *den,
                   const char *field, struct msm_err *err)
{
    *num = 0;
    *den = 100;
    if (!p) {
        return 0; /* unset: 0% (Envoy's default FractionalPercent) */
    }
    if ((int)p->denominator < 0 || (size_t)p->denominator >= sizeof(dens) / sizeof(dens[0])) {
        return msm_err_set(err, "%s.denominator: unknown value", field);
    }
    *num = p->numerator;
    *den = dens[p->denominator];
    return 0;
}

static int build(const ProtobufCMessage *msg, struct fault_cfg **out, struct msm_err *err)
{
    const Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault *p = (const void *)msg;
    struct fault_cfg *c = MSM_NEW(struct fault_cfg);
    *out = c;
    if (p->delay) {
        c->has_delay = true;
        if (percent(p->delay->percentage, &c->delay_num, &c->delay_den, "delay.percentage",
                    err) < 0) {
            return MSM_EINVAL;
        }
        if (p->delay->fault_delay_secifier_case ==
            ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_HEADER_DELAY) {
            c->delay_from_header = true;
        } else if (p->delay->fault_delay_secifier_case ==
                   ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_FIXED_DELAY) {
            int64_t ms = msm_pb_duration_ms(p->delay->fixed_delay, 0);
            if (ms <= 0 || ms > UINT32_MAX) {
                return msm_err_set(err, "delay.fixed_delay: must be positive");
            }
            c->delay_ms = (uint32_t)ms;
        } else {
            return msm_err_set(err, "delay: fixed_delay or header_delay is required");
        }
    }
    if (p->abort) {
        c->has_abort = true;
        if (percent(p->abort->percentage, &c->abort_num, &c->abort_den, "abort.percentage",
                    err) < 0) {
            return MSM_EINVAL;
        }
        switch (p->abort->error_type_case) {
        case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HTTP_STATUS:
            if (p->abort->http_status < 200 || p->abort->http_status > 599) {
                return msm_err_set(err, "abort.http_status: %u is out of range [200, 600)",
                                   p->abort->http_status);
            }
            c->abort_status = p->abort->http_status;
            break;
        case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_GRPC_STATUS:
            c->abort_grpc = true;
            c->grpc_status = p->abort->grpc_status;
            break;
        case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HEADER_ABORT:
            c->abort_from_header = true;
            break;
        default:
            return msm_err_set(err, "abort: http_status, grpc_status or header_abort is required");
        }
    }
    if (p->response_rate_limit) {
        return msm_err_set(err, "response_rate_limit: not supported");
    }
    if (p->n_downstream_nodes) {
        return msm_err_set(err, "downstream_nodes: not supported");
    }
    c->hdrs = p->n_headers ? msm_xcalloc(p->n_headers, sizeof(*c->hdrs)) : NULL;
    for (size_t i = 0; i < p->n_headers; i++) {
        c->n_hdrs++;
        if (msm_header_match_from_proto(p->headers[i], &c->hdrs[i], err) < 0) {
            msm_err_prefix(err, "headers[%zu]", i);
            return MSM_EINVAL;
        }
    }
    if (p->upstream_cluster[0]) {
        c->upstream_cluster = msm_xstrdup(p->upstream_cluster);
    }
    c->max_active = msm_pb_u32(p->max_active_faults, 0);
    return 0;
}

static int config_new(const ProtobufCMessage *msg, struct msm_http_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    struct fault_cfg *c;
    if (build(msg, &c, err) < 0) {
        cfg_free(c);
        return MSM_EINVAL;
    }
    char *prefix = msm_xasprintf("%sfault.", ctx->stat_prefix);
    msm_fault_stats_init(ctx->stats, prefix, &c->stats);
    free(prefix);
    c->has_stats = true;
    c->active = msm_xcalloc(1, sizeof(*c->active));
    *out = c;
    return 0;
}

static int route_config_new(const ProtobufCMessage *msg, void **out, struct msm_err *err)
{
    struct fault_cfg *c;
    if (build(msg, &c, err) < 0) {
        cfg_free(c);
        return MSM_EINVAL;
    }
    *out = c;
    return 0;
}

static void *filter_new(void *config, struct msm_http_stream *s)
{
    struct fault *f = MSM_NEW(struct fault);
    f->s = s;
    f->top = config;
    f->loop = msm_hs_loop(s);
    return f;
}

static bool chance(uint64_t num, uint64_t den)
{
    return num && msm_random() % den < num;
}

static bool header_u32(const struct msm_hdrs *h, const char *name, uint32_t *out)
{
    const char *v = msm_hdrs_get(h, name);
    uint64_t x;
    if (!v || !msm_http_parse_u64(v, strlen(v), &x) || x > UINT32_MAX) {
        return false;
    }
    *out = (uint32_t)x;
    return true;
}

/* Abort now if the config says so; true when a response was sent. */
static bool maybe_abort(struct fault *f)
{
    const struct fault_cfg *c = f->c;
    if (!c->has_abort || !chance(c->abort_num, c->abort_den)) {
        return false;
    }
    uint32_t status = c->abort_status;
    struct msm_hdrs *req = msm_hs_request_headers(f->s);
    if (c->abort_from_header) {
        uint32_t g;
        if (header_u32(req, "x-envoy-fault-abort-grpc-request", &g)) {
            status = 0;
            (void)g;
        } else if (!header_u32(req, "x-envoy-fault-abort-request", &status) || status < 200 ||
                   status > 599) {
            return false;
        }
    }
    msm_stat_inc(f->top->stats.aborts_injected);
    if (c->abort_grpc || !status) {
        /* A trailers-only gRPC response: 200 with grpc-status. */
        uint32_t gs = c->grpc_status;
        if (c->abort_from_header) {
            header_u32(req, "x-envoy-fault-abort-grpc-request", &gs);
        }
        struct msm_hdrs h;
        msm_hdrs_init(&h);
        char v[16];
        snprintf(v, sizeof(v), "%u", gs);
        msm_hdrs_addz(&h, ":status", "200");
        msm_hdrs_addz(&h, "content-type", "application/grpc");
        msm_hdrs_addz(&h, "grpc-status", v);
        msm_hdrs_addz(&h, "grpc-message", "fault filter abort");
        msm_hs_info(f->s)->flags |= MSM_RF(FAULT_INJECTED);
        msm_hs_info(f->s)->details = "fault_filter_abort";
        msm_hs_encode_headers(f->s, &h, true);
        msm_hdrs_deinit(&h);
        return true;
    }
    msm_hs_send_local_reply(f->s, (int)status, "fault filter abort", "fault_filter_abort",
                            MSM_RF(FAULT_INJECTED));
    return true;
}

static void release_active(struct fault *f)
{
    if (f->counted) {
        f->counted = false;
        atomic_fetch_sub(f->top->active, 1);
        msm_stat_dec(f->top->stats.active_faults);
    }
}

static void on_delay(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct fault *f = MSM_CONTAINER_OF(t, struct fault, timer);
    f->delaying = false;
    if (!maybe_abort(f)) {
        release_active(f);
        msm_hs_continue_decoding(f->s);
    }
}

static enum msm_hf_status decode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    struct fault *f = p;
    (void)end_stream;
    bool disabled = false;
    const struct fault_cfg *c = msm_hs_per_route_config(f->s, &disabled);
    if (disabled) {
        return MSM_HF_CONTINUE;
    }
    f->c = c ? c : f->top;
    c = f->c;
    if (!c->has_delay && !c->has_abort) {
        return MSM_HF_CONTINUE;
    }
    for (int i = 0; i < c->n_hdrs; i++) {
        if (!msm_header_match(&c->hdrs[i], h)) {
            return MSM_HF_CONTINUE;
        }
    }
    if (c->upstream_cluster) {
        const struct msm_route *r = msm_hs_route(f->s);
        if (!r || r->kind != MSM_ROUTE_CLUSTER || strcmp(r->cluster, c->upstream_cluster) != 0) {
            return MSM_HF_CONTINUE;
        }
    }
    if (c->max_active && atomic_load(f->top->active) >= c->max_active) {
        msm_stat_inc(f->top->stats.faults_overflow);
        return MSM_HF_CONTINUE;
    }
    atomic_fetch_add(f->top->active, 1);
    msm_stat_inc(f->top->stats.active_faults);
    f->counted = true;
    uint32_t ms = c->delay_ms;
    if (c->has_delay && c->delay_from_header &&
        !header_u32(h, "x-envoy-fault-delay-request", &ms)) {
        ms = 0;
    }
    if (c->has_delay && ms && chance(c->delay_num, c->delay_den)) {
        msm_stat_inc(f->top->stats.delays_injected);
        msm_hs_info(f->s)->flags |= MSM_RF(DELAY_INJECTED);
        f->delaying = true;
        ev_timer_init(&f->timer, on_delay, ms / 1000.0, 0);
        ev_timer_start(f->loop, &f->timer);
        return MSM_HF_STOP;
    }
    if (maybe_abort(f)) {
        return MSM_HF_STOP;
    }
    release_active(f);
    return MSM_HF_CONTINUE;
}

static void on_destroy(void *p)
{
    struct fault *f = p;
    if (f->delaying) {
        ev_timer_stop(f->loop, &f->timer);
        f->delaying = false;
    }
    release_active(f);
}

static void filter_free(void *p)
{
    free(p);
}

const struct msm_http_filter_ops msm_fault_ops = {
    .name = "envoy.filters.http.fault",
    .config_type = "envoy.extensions.filters.http.fault.v3.HTTPFault",
    .route_config_type = "envoy.extensions.filters.http.fault.v3.HTTPFault",
    .config_new = config_new,
    .config_free = cfg_free,
    .route_config_new = route_config_new,
    .route_config_free = cfg_free,
    .filter_new = filter_new,
    .decode_headers = decode_headers,
    .on_destroy = on_destroy,
    .filter_free = filter_free,
};
