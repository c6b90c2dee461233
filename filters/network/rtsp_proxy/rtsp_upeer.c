/* The server side of an RTSP upstream session, as its clients report it (struct rtsp_upeer in
 * rtsp_private.h).
 *
 * A hub runs the cluster's upstream filters on its control connection with a stream info of its
 * own (rtsp_source.up_si): istio.metadata_exchange publishes the server sidecar's peer there,
 * owned by the filter instance. Once the exchange is over (upstream_peer_done: a peer, or
 * decidedly none), the hub copies what the clients need into one immutable, refcounted object
 * and points each bound client's stream info at it: upstream_peer (+ its JSON objects),
 * upstream_peer_done, the URI SANs of the upstream TLS handshake, the host. istio.stats then
 * reports the client's connection (reporter="source") with the server's workload and principal,
 * as Envoy's does for a tcp_proxy connection whose upstream filters wrote into its own stream
 * info. Clients that bind later get it at bind; mirrors get it with the hub's published state
 * and hand it to their clients on their own worker.
 *
 * Lifetime: a client keeps its reference until its filter instance is freed (after the close
 * was reported and logged), and clears the stream info's pointers first, so the stream info
 * never points at freed memory, whatever happened to the source meanwhile. Without any upstream
 * filter nothing marks the exchange over: the connection is reported at close, as Envoy does. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "filter/network.h"
#include "filters/network/rtsp_proxy/rtsp_private.h"

struct rtsp_upeer *rtsp_upeer_ref(struct rtsp_upeer *u)
{
    if (u) {
        atomic_fetch_add_explicit(&u->refs, 1, memory_order_relaxed);
    }
    return u;
}

void rtsp_upeer_unref(struct rtsp_upeer *u)
{
    if (!u || atomic_fetch_sub_explicit(&u->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    free(u->strs);
    json_decref(u->metadata);
    json_decref(u->state);
    free(u->peer_san);
    free(u->local_san);
    msm_host_unref(u->host);
    free(u);
}

#define PEER_FIELDS(X)                                                                            \
    X(workload_name) X(namespace_name) X(canonical_name) X(canonical_revision) X(app_name)      \
    X(app_version) X(cluster_id) X(identity)

/* <from>'s strings into one block owned by <u> (NULL ones stay NULL). */
static void peer_copy(struct rtsp_upeer *u, const struct msm_istio_peer *from)
{
    size_t n = 0;
#define LEN(f) n += from->f ? strlen(from->f) + 1 : 0;
    PEER_FIELDS(LEN)
#undef LEN
    u->strs = msm_xmalloc(n ? n : 1);
    char *p = u->strs;
#define COPY(f)                                                                                   \
    if (from->f) {                                                                                \
        size_t k = strlen(from->f) + 1;                                                           \
        memcpy(p, from->f, k);                                                                    \
        u->peer.f = p;                                                                            \
        p += k;                                                                                   \
    }
    PEER_FIELDS(COPY)
#undef COPY
    u->has_peer = true;
}

static char *dup_or_null(const char *s)
{
    return s ? msm_xstrdup(s) : NULL;
}

void rtsp_upeer_capture(struct rtsp_source *s)
{
    const struct msm_stream_info *si = &s->up_si;
    if (s->upeer || s->remote || s->dead || !si->upstream_peer_done) {
        return;
    }
    struct rtsp_upeer *u = MSM_NEW(struct rtsp_upeer);
    atomic_init(&u->refs, 1);
    if (si->upstream_peer) {
        peer_copy(u, si->upstream_peer);
    }
    if (si->upstream_peer_metadata) {
        u->metadata = json_deep_copy((const json_t *)si->upstream_peer_metadata);
    }
    if (si->upstream_peer_state) {
        u->state = json_deep_copy((const json_t *)si->upstream_peer_state);
    }
    const struct msm_tls_info *t = s->up ? msm_conn_tls_info(s->up) : NULL;
    if (t && t->peer_cert_validated && t->n_uri_sans) {
        u->peer_san = dup_or_null(t->uri_sans[0]);
    }
    if (t) {
        u->local_san = dup_or_null(t->local_uri_san);
    }
    if (s->host) {
        atomic_fetch_add(&s->host->refs, 1);
        u->host = s->host;
    }
    s->upeer = u;
    msm_log(MSM_LOG_DEBUG, MSM_LC_RTSP, "rtsp source %s (cluster '%s'): upstream peer %s/%s "
            "(principal %s), for %d client(s) and %d mirror(s)", s->url, s->cluster_name,
            u->has_peer && u->peer.namespace_name ? u->peer.namespace_name : "-",
            u->has_peer && u->peer.workload_name ? u->peer.workload_name : "-",
            u->peer_san ? u->peer_san : "-", s->refs, s->n_peers);
    for (struct rtsp_client *c = s->clients; c; c = c->bnext) {
        rtsp_upeer_attach(c, u);
    }
    if (s->n_peers) {
        rtsp_hub_publish(s, NULL);
    }
}

void rtsp_upeer_set(struct rtsp_source *s, struct rtsp_upeer *u)
{
    if (!u || s->upeer == u) {
        return;
    }
    rtsp_upeer_ref(u);
    rtsp_upeer_unref(s->upeer);
    s->upeer = u;
    for (struct rtsp_client *c = s->clients; c; c = c->bnext) {
        rtsp_upeer_attach(c, u);
    }
}

void rtsp_upeer_attach(struct rtsp_client *c, struct rtsp_upeer *u)
{
    if (!u || c->upeer == u) {
        return;
    }
    struct msm_stream_info *si = msm_filter_stream_info(c->h);
    rtsp_upeer_detach(c);
    c->upeer = rtsp_upeer_ref(u);
    si->upstream_peer = u->has_peer ? &u->peer : NULL;
    si->upstream_peer_metadata = u->metadata;
    si->upstream_peer_state = u->state;
    si->upstream_peer_uri_san = u->peer_san;
    si->upstream_local_uri_san = u->local_san;
    si->upstream_peer_done = true;
    if (u->host && si->upstream_host != u->host) {
        msm_si_set_upstream(si, si->upstream_cluster, u->host);
    }
}

void rtsp_upeer_detach(struct rtsp_client *c)
{
    struct rtsp_upeer *u = c->upeer;
    if (!u) {
        return;
    }
    struct msm_stream_info *si = msm_filter_stream_info(c->h);
    if (si->upstream_peer == &u->peer) {
        si->upstream_peer = NULL;
    }
    if (si->upstream_peer_metadata == u->metadata) {
        si->upstream_peer_metadata = NULL;
    }
    if (si->upstream_peer_state == u->state) {
        si->upstream_peer_state = NULL;
    }
    if (si->upstream_peer_uri_san == u->peer_san) {
        si->upstream_peer_uri_san = NULL;
    }
    if (si->upstream_local_uri_san == u->local_san) {
        si->upstream_local_uri_san = NULL;
    }
    c->upeer = NULL;
    rtsp_upeer_unref(u);
}
