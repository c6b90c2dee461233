/* istio.stats as a network filter (stats.PluginConfig on TCP filter chains, before tcp_proxy):
 * Istio's TCP metrics for the downstream connection, after istio_stats.cc's reportHelper.
 *
 * A connection is reported once its peer is known (the metadata exchange set the stream info's
 * peer, or said there is none) or at close, whichever comes first: opened += 1 then, byte
 * counters every tcp_reporting_duration (and at close) with what the downstream connection
 * sent/received since the last report, closed += 1 at close. Without a metadata exchange that
 * means everything is reported at close, as Envoy does. Labels: stats/istio_stats.h. */
#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include "stats/config.pb-c.h"

#include "accesslog/stream_info.h"
#include "common/alloc.h"
#include "filter/network.h"
#include "filters/network/istio_stats/istio_stats.h"
#include "server/worker.h"
#include "stats/istio_stats.h"
#include "upstream/cluster.h"

struct isf {
    struct msm_istio_config *cfg;
    struct msm_filter_handle *h;
    struct ev_loop *loop;
    struct msm_stream_info *si;
    struct msm_istio_tcp *series; /* set once reported */
    uint64_t sent, received;      /* already reported */
    ev_timer timer;
    bool timer_on;
};

static int config_new(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    return msm_istio_filter_config_new(msg, ctx->traffic_direction, ctx->stats, out, err);
}

static bool peer_done(const struct isf *f)
{
    return msm_istio_reporter(f->cfg) == MSM_ISTIO_CLIENT ? f->si->upstream_peer_done
                                                             : f->si->downstream_peer_done;
}

/* populatePeerInfo's inputs from the stream info. */
static void conn_view(const struct isf *f, struct msm_istio_conn *v, char *flags, size_t fn)
{
    const struct msm_stream_info *si = f->si;
    memset(v, 0, sizeof(*v));
    bool client = msm_istio_reporter(f->cfg) == MSM_ISTIO_CLIENT;
    v->peer = client ? si->upstream_peer : si->downstream_peer;
    v->cluster_name = si->upstream_cluster ? si->upstream_cluster->name : NULL;
    v->service_host = si->upstream_cluster ? si->upstream_cluster->istio_service_host : NULL;
    v->service_name = si->upstream_cluster ? si->upstream_cluster->istio_service_name : NULL;
    v->route_name = si->route_name;
    /* Client side: the upstream connection's certificates (as istio_stats.cc's ClientSidecar). */
    v->peer_san = client ? si->upstream_peer_uri_san : si->downstream_peer_uri_san;
    v->local_san = client ? si->upstream_local_uri_san : si->downstream_local_uri_san;
    if (!client && !v->peer_san && !v->local_san) {
        /* The downstream TLS handshake's identities (Envoy: the connection's ssl() URI SANs):
         * source/destination_principal and connection_security_policy on the server side. */
        const struct msm_conn *c = msm_filter_conn(f->h);
        const struct msm_tls_info *t = c ? msm_conn_tls_info(c) : NULL;
        if (t && t->peer_cert_validated && t->n_uri_sans) {
            v->peer_san = t->uri_sans[0];
        }
        if (t) {
            v->local_san = t->local_uri_san;
        }
    }
    msm_si_flags_str(si, false, flags, fn);
    v->response_flags = flags;
    v->request_protocol = "tcp";
}

static void report(struct isf *f, bool end_stream)
{
    if (!f->series && (peer_done(f) || end_stream)) {
        struct msm_istio_conn v;
        char flags[128];
        conn_view(f, &v, flags, sizeof(flags));
        f->series = msm_istio_tcp_series(f->cfg, &v);
        msm_istio_tcp_opened(f->series);
    }
    if (!f->series) {
        return;
    }
    uint64_t sent = f->si->bytes_sent, received = f->si->bytes_received;
    if (!end_stream) {
        const struct msm_conn *c = msm_filter_conn(f->h);
        if (c) {
            sent = c->tx_bytes;
            received = c->rx_bytes;
        }
    }
    msm_istio_tcp_bytes(f->series, sent - f->sent, received - f->received);
    f->sent = sent;
    f->received = received;
    if (end_stream) {
        msm_istio_tcp_closed(f->series);
    }
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct isf *f = MSM_CONTAINER_OF(w, struct isf, timer);
    report(f, false);
}

static void *filter_new(void *config, struct msm_filter_handle *h)
{
    struct isf *f = MSM_NEW(struct isf);
    f->cfg = config;
    f->h = h;
    f->loop = msm_filter_worker(h)->loop;
    f->si = msm_filter_stream_info(h);
    return f;
}

static enum msm_filter_status on_new_connection(void *p)
{
    struct isf *f = p;
    uint32_t ms = msm_istio_tcp_reporting_ms(f->cfg);
    if (ms) {
        ev_timer_init(&f->timer, on_timer, ms / 1000.0, ms / 1000.0);
        ev_timer_start(f->loop, &f->timer);
        f->timer_on = true;
    }
    return MSM_FILTER_CONTINUE;
}

static void stop_timer(struct isf *f)
{
    if (f->timer_on) {
        ev_timer_stop(f->loop, &f->timer);
        f->timer_on = false;
    }
}

static void on_event(void *p, enum msm_conn_event ev)
{
    struct isf *f = p;
    (void)ev;
    stop_timer(f);
    report(f, true);
}

static void filter_free(void *p)
{
    struct isf *f = p;
    stop_timer(f);
    free(f);
}

const struct msm_network_filter_ops msm_istio_stats_ops = {
    .name = "istio.stats",
    .config_type = "stats.PluginConfig",
    .config_new = config_new,
    .config_free = msm_istio_filter_config_free,
    .filter_new = filter_new,
    .on_new_connection = on_new_connection,
    .on_event = on_event,
    .filter_free = filter_free,
};
