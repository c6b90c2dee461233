/* istio.stats, the HTTP filter (see istio_stats.h). */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "config/snapshot.h"
#include "filters/http/istio_stats/istio_stats.h"
#include "http/route.h"
#include "net/conn.h"
#include "server/worker.h"
#include "stats/istio_stats.h"
#include "upstream/cluster.h"

/* gRPC length-prefixed messages in one direction. */
struct framing {
    uint8_t hdr[5];
    int hn;
    uint32_t left;     /* bytes left in the current message */
    uint64_t msgs;     /* messages started */
    uint64_t reported; /* of which already counted in the series */
};

struct hsf {
    struct msm_istio_config *cfg;
    struct msm_http_stream *s;
    struct ev_loop *loop;
    bool grpc;
    struct framing fr[2]; /* request, response */
    struct msm_istio_grpc *gseries;
    ev_timer timer;
    bool timer_on;
    bool has_grpc_status; /* a grpc-status header or trailer was seen: grpc_status */
    char grpc_status[24];
    bool done;
};

static int config_new(const ProtobufCMessage *msg, struct msm_http_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    return msm_istio_filter_config_new(msg, ctx->traffic_direction, ctx->stats, out, err);
}

/* ---- labels --------------------------------------------------------------------------------- */

/* Grpc::Common::getGrpcStatus of one header value: the number, or -1 (InvalidCode) when it is
 * not a decimal number up to 16 (the last well-known status). */
static void grpc_status_text(const char *v, char *out, size_t n)
{
    uint64_t x = 0;
    size_t len = strlen(v);
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) {
        len--;
    }
    while (len && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    if (!msm_http_parse_u64(v, len, &x) || x > 16) {
        snprintf(out, n, "-1");
    } else {
        snprintf(out, n, "%u", (unsigned)x);
    }
}

struct view {
    struct msm_istio_conn c;
    struct msm_istio_peer endpoint; /* the endpoint's istio.workload, parsed */
    char endpoint_buf[512];
    char flags[128];
    char code[16];
    char grpc[24];
};

/* populatePeerInfo's inputs for this stream, as they stand now. */
static void conn_view(struct hsf *f, struct view *v)
{
    struct msm_http_stream *s = f->s;
    const struct msm_hstream_info *info = msm_hs_info(s);
    bool client = msm_istio_reporter(f->cfg) == MSM_ISTIO_CLIENT;
    struct msm_istio_conn *k = &v->c;
    memset(k, 0, sizeof(*k));
    k->peer = client ? info->upstream_peer : info->downstream_peer;
    if (!k->peer && client && info->upstream_endpoint && info->upstream_endpoint->tsm &&
        msm_istio_peer_parse(info->upstream_endpoint->tsm->istio_workload, v->endpoint_buf,
                             sizeof(v->endpoint_buf), &v->endpoint)) {
        k->peer = &v->endpoint;
    }
    struct msm_worker *w = msm_hs_worker(s);
    const struct msm_cluster *c = info->upstream_cluster[0] && w && w->snap
                                      ? msm_snapshot_cluster(w->snap, info->upstream_cluster)
                                      : NULL;
    if (c) {
        k->cluster_name = c->cfg->name;
        k->service_host = c->cfg->istio_service_host;
        k->service_name = c->cfg->istio_service_name;
    }
    k->host_header = msm_hdrs_get(msm_hs_request_headers(s), ":authority");
    const struct msm_route *rt = msm_hs_route(s);
    k->route_name = rt ? rt->name : NULL;
    if (client) {
        k->peer_san = info->upstream_peer_san;
        k->local_san = info->upstream_local_san;
    } else {
        const struct msm_conn *dc = msm_hs_conn(s);
        const struct msm_tls_info *t = dc ? msm_conn_tls_info(dc) : NULL;
        k->peer_san = t && t->peer_cert_validated && t->n_uri_sans ? t->uri_sans[0] : NULL;
        k->local_san = t ? t->local_uri_san : NULL;
    }
    msm_rf_format(info->flags, v->flags, sizeof(v->flags));
    k->response_flags = v->flags;
    k->request_protocol = f->grpc ? "grpc" : "http";
    snprintf(v->code, sizeof(v->code), "%d", info->status > 0 ? info->status : 0);
    k->response_code = v->code;
    v->grpc[0] = '\0';
    if (f->grpc && f->has_grpc_status) {
        snprintf(v->grpc, sizeof(v->grpc), "%s", f->grpc_status);
    } else if (f->grpc && info->status > 0) {
        snprintf(v->grpc, sizeof(v->grpc), "%d", msm_grpc_status_of_http(info->status));
    }
    k->grpc_status = v->grpc;
}

/* ---- gRPC messages -------------------------------------------------------------------------- */

static void count_msgs(struct framing *fr, const struct msm_buf *b)
{
    size_t off = 0;
    while (off < b->len) {
        if (fr->left) {
            size_t k = b->len - off < fr->left ? b->len - off : fr->left;
            off += k;
            fr->left -= (uint32_t)k;
            continue;
        }
        size_t k = msm_buf_copyout(b, off, fr->hdr + fr->hn, (size_t)(5 - fr->hn));
        fr->hn += (int)k;
        off += k;
        if (fr->hn == 5) {
            fr->msgs++;
            fr->left = (uint32_t)fr->hdr[1] << 24 | (uint32_t)fr->hdr[2] << 16 |
                       (uint32_t)fr->hdr[3] << 8 | fr->hdr[4];
            fr->hn = 0;
        }
    }
}

static bool peer_known(struct hsf *f)
{
    const struct msm_hstream_info *info = msm_hs_info(f->s);
    return msm_istio_reporter(f->cfg) == MSM_ISTIO_CLIENT ? info->upstream_peer != NULL
                                                              : info->downstream_peer != NULL;
}

/* reportHelper for gRPC: the message counts since the last report, once the peer is known or
 * at the end (the labels are fixed at the first report, as Envoy's tags). */
static void report_messages(struct hsf *f, bool end)
{
    if (!f->gseries && (end || peer_known(f))) {
        struct view v;
        conn_view(f, &v);
        f->gseries = msm_istio_grpc_series(f->cfg, &v.c);
    }
    if (!f->gseries) {
        return;
    }
    msm_istio_grpc_messages(f->gseries, f->fr[0].msgs - f->fr[0].reported,
                            f->fr[1].msgs - f->fr[1].reported);
    f->fr[0].reported = f->fr[0].msgs;
    f->fr[1].reported = f->fr[1].msgs;
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct hsf *f = MSM_CONTAINER_OF(w, struct hsf, timer);
    report_messages(f, false);
}

static void stop_timer(struct hsf *f)
{
    if (f->timer_on) {
        ev_timer_stop(f->loop, &f->timer);
        f->timer_on = false;
    }
}

/* ---- filter --------------------------------------------------------------------------------- */

static void *filter_new(void *config, struct msm_http_stream *s)
{
    struct hsf *f = MSM_NEW(struct hsf);
    f->cfg = config;
    f->s = s;
    f->loop = msm_hs_loop(s);
    return f;
}

static enum msm_hf_status decode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    struct hsf *f = p;
    (void)h;
    (void)end_stream;
    f->grpc = msm_hs_is_grpc(f->s);
    uint32_t ms = msm_istio_tcp_reporting_ms(f->cfg);
    if (f->grpc && ms && !f->timer_on) {
        ev_timer_init(&f->timer, on_timer, ms / 1000.0, ms / 1000.0);
        ev_timer_start(f->loop, &f->timer);
        f->timer_on = true;
    }
    return MSM_HF_CONTINUE;
}

static enum msm_hf_status decode_data(void *p, struct msm_buf *data, bool end_stream)
{
    struct hsf *f = p;
    (void)end_stream;
    if (f->grpc) {
        count_msgs(&f->fr[0], data);
    }
    return MSM_HF_CONTINUE;
}

static void grpc_status_from(struct hsf *f, const struct msm_hdrs *h)
{
    const char *gs = msm_hdrs_get(h, "grpc-status");
    if (gs) {
        grpc_status_text(gs, f->grpc_status, sizeof(f->grpc_status));
        f->has_grpc_status = true;
    }
}

static enum msm_hf_status encode_headers(void *p, struct msm_hdrs *h, bool end_stream)
{
    struct hsf *f = p;
    (void)end_stream;
    if (f->grpc) {
        grpc_status_from(f, h);
    }
    return MSM_HF_CONTINUE;
}

static enum msm_hf_status encode_data(void *p, struct msm_buf *data, bool end_stream)
{
    struct hsf *f = p;
    (void)end_stream;
    if (f->grpc) {
        count_msgs(&f->fr[1], data);
    }
    return MSM_HF_CONTINUE;
}

static enum msm_hf_status encode_trailers(void *p, struct msm_hdrs *t)
{
    struct hsf *f = p;
    if (f->grpc) {
        grpc_status_from(f, t); /* trailers win over headers */
    }
    return MSM_HF_CONTINUE;
}

static void on_destroy(void *p)
{
    struct hsf *f = p;
    if (f->done) {
        return;
    }
    f->done = true;
    stop_timer(f);
    const struct msm_hstream_info *info = msm_hs_info(f->s);
    struct view v;
    conn_view(f, &v);
    double now = ev_now(f->loop);
    double ms = info->start > 0 && now > info->start ? (now - info->start) * 1000.0 : 0;
    uint64_t rq = msm_hs_request_headers(f->s)->bytes + info->rx_body;
    uint64_t rs = info->tx_header_bytes + info->tx_body;
    msm_istio_http_request(msm_istio_http_series(f->cfg, &v.c), (uint64_t)ms, rq, rs);
    if (f->grpc) {
        report_messages(f, true);
    }
}

static void filter_free(void *p)
{
    struct hsf *f = p;
    stop_timer(f);
    free(f);
}

const struct msm_http_filter_ops msm_istio_http_stats_ops = {
    .name = "istio.stats",
    .config_type = "stats.PluginConfig",
    .config_new = config_new,
    .config_free = msm_istio_filter_config_free,
    .filter_new = filter_new,
    .decode_headers = decode_headers,
    .decode_data = decode_data,
    .encode_headers = encode_headers,
    .encode_data = encode_data,
    .encode_trailers = encode_trailers,
    .on_destroy = on_destroy,
    .filter_free = filter_free,
};
