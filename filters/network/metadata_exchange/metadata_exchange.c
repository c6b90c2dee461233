/* istio.metadata_exchange, per-connection logic for both roles (states and bounds:
 * metadata_exchange.h; wire format: wire.h). */
#include "filters/network/metadata_exchange/metadata_exchange.h"

#include <stdlib.h>
#include <string.h>

#include "accesslog/stream_info.h"
#include "common/alloc.h"
#include "common/log.h"
#include "filters/network/metadata_exchange/wire.h"
#include "net/conn.h"

enum mx_state {
    ST_ALPN = 0, /* nothing moved yet: the ALPN decides at the first byte either way */
    ST_HEADER,   /* our preamble is out; waiting for the peer's 8-byte header */
    ST_PAYLOAD,  /* header read (and stripped); waiting for its N bytes */
    ST_DONE,     /* peer read: pass everything */
    ST_INVALID,  /* no exchange on this connection: pass everything */
};

struct mx {
    const struct msm_mx_config *cfg;
    struct msm_filter_handle *h;           /* downstream role */
    struct msm_upstream_filter_handle *uh; /* upstream role */
    enum mx_state st;
    uint32_t payload_len;
    struct msm_mx_peer *peer;
};

#define STAT(m, name)                                                                             \
    do {                                                                                          \
        if ((m)->cfg->has_stats) {                                                                \
            msm_stat_inc((m)->cfg->stats.name);                                                   \
        }                                                                                         \
    } while (0)

/* ---- the role: where the connection, the stream info and the writes are ------------------- */

static struct msm_conn *conn_of(struct mx *m)
{
    return m->h ? msm_filter_conn(m->h) : msm_upstream_filter_conn(m->uh);
}

static struct msm_stream_info *si_of(struct mx *m)
{
    return m->h ? msm_filter_stream_info(m->h) : msm_upstream_filter_stream_info(m->uh);
}

static const char *role(const struct mx *m)
{
    return m->h ? "downstream" : "upstream";
}

static unsigned long long conn_id(struct mx *m)
{
    const struct msm_conn *c = conn_of(m);
    return c ? c->id : 0;
}

static void inject(struct mx *m, struct msm_buf *b)
{
    if (m->h) {
        msm_filter_inject_write(m->h, b);
    } else {
        msm_upstream_filter_inject(m->uh, b);
    }
}

/* After flushing what we wrote (our preamble): the peer sees a clean end. */
static void close_conn(struct mx *m)
{
    if (m->h) {
        msm_filter_close(m->h, MSM_CLOSE_FLUSH);
    } else {
        msm_upstream_filter_close(m->uh, MSM_CLOSE_FLUSH);
    }
}

/* ---- peer ----------------------------------------------------------------------------------- */

static void peer_free(struct msm_mx_peer *p)
{
    if (!p) {
        return;
    }
    msm_mx_workload_deinit(&p->wl);
    free(p->id);
    json_decref(p->metadata);
    json_decref(p->state);
    free(p);
}

static struct msm_mx_peer *peer_new(json_t *metadata, const char *id,
                                    const struct msm_mx_config *cfg)
{
    struct msm_mx_peer *p = MSM_NEW(struct msm_mx_peer);
    p->metadata = metadata;
    p->id = msm_xstrdup(id);
    msm_mx_workload_from_struct(metadata, cfg->additional_labels, cfg->n_additional_labels,
                                NULL, NULL, &p->wl);
    p->state = msm_mx_workload_state(&p->wl);
    p->labels = msm_mx_workload_labels(&p->wl);
    return p;
}

/* Publish the outcome to the stream info: <p> is the peer, or NULL for "decidedly no peer"
 * (Envoy's peer_not_found filter state). */
static void publish(struct mx *m, const struct msm_mx_peer *p)
{
    struct msm_stream_info *si = si_of(m);
    if (!si) {
        return;
    }
    if (m->cfg->upstream) {
        si->upstream_peer = p ? &p->labels : NULL;
        si->upstream_peer_metadata = p ? p->metadata : NULL;
        si->upstream_peer_state = p ? p->state : NULL;
        si->upstream_peer_done = true;
    } else {
        si->downstream_peer = p ? &p->labels : NULL;
        si->downstream_peer_metadata = p ? p->metadata : NULL;
        si->downstream_peer_state = p ? p->state : NULL;
        si->downstream_peer_done = true;
    }
}

/* The stream info must not keep pointers to a peer we free. */
static void unpublish(struct mx *m)
{
    struct msm_stream_info *si = si_of(m);
    if (!si || !m->peer) {
        return;
    }
    if (m->cfg->upstream && si->upstream_peer == &m->peer->labels) {
        si->upstream_peer = NULL;
        si->upstream_peer_metadata = si->upstream_peer_state = NULL;
    } else if (!m->cfg->upstream && si->downstream_peer == &m->peer->labels) {
        si->downstream_peer = NULL;
        si->downstream_peer_metadata = si->downstream_peer_state = NULL;
    }
}

static void no_peer(struct mx *m)
{
    publish(m, NULL);
}

/* ---- the exchange --------------------------------------------------------------------------- */

/* At the first byte either way: false when the ALPN says no exchange. */
static bool start(struct mx *m)
{
    const struct msm_conn *c = conn_of(m);
    const struct msm_tls_info *ti = c ? msm_conn_tls_info(c) : NULL;
    const char *alpn = ti && ti->alpn ? ti->alpn : "";
    if (strcmp(alpn, m->cfg->protocol) != 0) {
        msm_log(MSM_LOG_TRACE, MSM_LC_FILTER, "[C%llu] Alpn Protocol Not Found. Expected %s, "
                "Got %s", conn_id(m), m->cfg->protocol, alpn);
        no_peer(m);
        m->st = ST_INVALID;
        STAT(m, alpn_protocol_not_found);
        return false;
    }
    STAT(m, alpn_protocol_found);
    struct msm_buf b;
    msm_buf_init(&b);
    msm_buf_append(&b, m->cfg->preamble, m->cfg->preamble_len);
    msm_log(MSM_LOG_TRACE, MSM_LC_FILTER, "[C%llu] Writing metadata to the connection (%s, %zu "
            "bytes)", conn_id(m), role(m), m->cfg->preamble_len);
    inject(m, &b);
    msm_buf_deinit(&b);
    STAT(m, metadata_added);
    m->st = ST_HEADER;
    return true;
}

/* Give up on the exchange and close (our bounds, where Envoy would wait for ever). */
static enum msm_filter_status fail_close(struct mx *m, const char *why)
{
    STAT(m, header_not_found);
    no_peer(m);
    msm_log(MSM_LOG_WARN, MSM_LC_FILTER, "[C%llu] istio-peer-exchange (%s): %s; closing",
            conn_id(m), role(m), why);
    m->st = ST_INVALID;
    close_conn(m);
    return MSM_FILTER_STOP;
}

static void log_peer(struct mx *m, const struct msm_mx_peer *p)
{
    if (!msm_log_enabled(MSM_LOG_DEBUG, MSM_LC_FILTER)) {
        return;
    }
    msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "[C%llu] istio.metadata_exchange (%s): peer "
            "WORKLOAD_NAME=%s NAMESPACE=%s CLUSTER_ID=%s app=%s version=%s id=%s", conn_id(m),
            role(m), p->wl.workload_name, p->wl.namespace_name, p->wl.cluster_name,
            p->wl.app_name, p->wl.app_version, p->id);
}

/* The N payload bytes are at the head of <data>. */
static void read_payload(struct mx *m, struct msm_buf *data)
{
    uint32_t n = m->payload_len;
    uint8_t *buf = msm_xmalloc(n ? n : 1);
    msm_buf_copyout(data, 0, buf, n);
    json_t *ex = NULL;
    enum msm_mx_payload r = msm_mx_payload_decode(buf, n, &ex);
    free(buf);
    if (r == MSM_MX_PAYLOAD_BAD_ANY) {
        /* As Envoy: the N bytes stay in the stream. */
        STAT(m, header_not_found);
        no_peer(m);
        msm_log(MSM_LOG_WARN, MSM_LC_FILTER, "[C%llu] Alpn protocol matched. Magic matched. "
                "Metadata Not found.", conn_id(m));
        m->st = ST_INVALID;
        return;
    }
    msm_buf_drain(data, n);
    if (r == MSM_MX_PAYLOAD_BAD_STRUCT) {
        STAT(m, header_not_found);
        no_peer(m);
        msm_log(MSM_LOG_WARN, MSM_LC_FILTER, "[C%llu] istio-peer-exchange (%s): the metadata is "
                "not a google.protobuf.Struct", conn_id(m), role(m));
        m->st = ST_INVALID;
        return;
    }
    m->st = ST_DONE;
    json_t *md = json_object_get(ex, MSM_MX_METADATA_KEY);
    if (md) {
        /* Envoy: struct_value() of another kind is an empty Struct. */
        json_t *id = json_object_get(ex, MSM_MX_METADATA_ID_KEY);
        m->peer = peer_new(json_is_object(md) ? json_incref(md) : json_object(),
                           json_is_string(id) ? json_string_value(id) : "", m->cfg);
        publish(m, m->peer);
        log_peer(m, m->peer);
    }
    /* No x-envoy-peer-metadata key: as Envoy, neither a peer nor "no peer". */
    json_decref(ex);
}

enum msm_filter_status msm_mx_on_data(void *filter, struct msm_buf *data, bool end_stream)
{
    struct mx *m = filter;
    if (m->st == ST_DONE || m->st == ST_INVALID) {
        return MSM_FILTER_CONTINUE;
    }
    if (m->st == ST_ALPN && !start(m)) {
        return MSM_FILTER_CONTINUE;
    }
    if (m->st == ST_HEADER) {
        if (data->len < MSM_MX_HEADER_LEN) {
            STAT(m, initial_header_not_found);
            if (end_stream) {
                msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "[C%llu] Upstream closed early, aborting "
                        "istio-peer-exchange", conn_id(m));
                m->st = ST_INVALID;
                return MSM_FILTER_CONTINUE;
            }
            msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "[C%llu] Alpn Protocol matched. Waiting to read "
                    "more initial header.", conn_id(m));
            return MSM_FILTER_STOP;
        }
        uint8_t h[MSM_MX_HEADER_LEN];
        msm_buf_copyout(data, 0, h, sizeof(h));
        if (!msm_mx_header_parse(h, &m->payload_len)) {
            STAT(m, initial_header_not_found);
            no_peer(m);
            msm_log(MSM_LOG_WARN, MSM_LC_FILTER, "[C%llu] Incorrect istio-peer-exchange ALPN "
                    "magic. Peer missing TCP MetadataExchange filter.", conn_id(m));
            m->st = ST_INVALID;
            return MSM_FILTER_CONTINUE;
        }
        if (m->payload_len > MSM_MX_MAX_PAYLOAD) {
            return fail_close(m, "metadata larger than 64 KiB");
        }
        msm_buf_drain(data, MSM_MX_HEADER_LEN);
        m->st = ST_PAYLOAD;
    }
    if (data->len < m->payload_len) {
        if (end_stream) {
            return fail_close(m, "the peer closed inside its metadata");
        }
        msm_log(MSM_LOG_DEBUG, MSM_LC_FILTER, "[C%llu] Alpn Protocol matched. Waiting to read more "
                "metadata.", conn_id(m));
        return MSM_FILTER_STOP;
    }
    read_payload(m, data);
    return MSM_FILTER_CONTINUE;
}

enum msm_filter_status msm_mx_on_write(void *filter, struct msm_buf *data, bool end_stream)
{
    struct mx *m = filter;
    (void)data;
    (void)end_stream;
    if (m->st == ST_ALPN) {
        start(m); /* reading the peer's preamble is on_data's business */
    }
    return MSM_FILTER_CONTINUE;
}

void *msm_mx_filter_new(void *config, struct msm_filter_handle *h)
{
    struct mx *m = MSM_NEW(struct mx);
    m->cfg = config;
    m->h = h;
    return m;
}

void *msm_mx_upstream_filter_new(void *config, struct msm_upstream_filter_handle *h)
{
    struct mx *m = MSM_NEW(struct mx);
    m->cfg = config;
    m->uh = h;
    return m;
}

void msm_mx_filter_free(void *filter)
{
    struct mx *m = filter;
    unpublish(m);
    peer_free(m->peer);
    free(m);
}
