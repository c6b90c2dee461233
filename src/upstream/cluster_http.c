#include "upstream/cluster_http.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"

#include "common/alloc.h"
#include "config/pbjson.h"
#include "config/pbutil.h"
#include "http/protocol_options.h"
#include "upstream/cluster.h"
#include "xds/strmap.h"

/* The deprecated cluster-level HTTP fields are what older control planes send. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define HTTP_OPTIONS_KEY "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#define N_CODES 1000

typedef Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions PbHttpOptions;

static const struct msm_cluster_http_cfg defaults = {
    .proto = MSM_UPSTREAM_HTTP1,
    .h1 = MSM_HCODEC_OPTS_DEFAULT(1),
    .h2 = MSM_HCODEC_OPTS_DEFAULT(2147483647),
    .idle_timeout_ms = 3600 * 1000,
};

const struct msm_cluster_http_cfg *msm_cluster_http_cfg_of(const struct msm_cluster_cfg *c)
{
    return c->http ? c->http : &defaults;
}

/* A config's allocation: refcounted, since every cluster of an Istio sidecar carries the same
 * options. The last one built is findable (weak: cleared by its last unref, under <box_mu>);
 * cluster configs may be freed on any thread. Configs are compared bytewise: they are calloc'ed
 * and filled from <defaults> (zero padding), and hold no owned pointers. */
struct http_box {
    atomic_int refs;
    struct msm_cluster_http_cfg cfg;
};

static pthread_mutex_t box_mu = PTHREAD_MUTEX_INITIALIZER;
static struct http_box *box_last;

static struct http_box *box_of(struct msm_cluster_http_cfg *h)
{
    return (struct http_box *)((char *)h - offsetof(struct http_box, cfg));
}

static struct msm_cluster_http_cfg *http_cfg_new(void)
{
    struct http_box *b = MSM_NEW(struct http_box);
    atomic_init(&b->refs, 1);
    memcpy(&b->cfg, &defaults, sizeof(defaults));
    return &b->cfg;
}

/* <h> (just built, not shared yet), or the equal config built before it. */
static struct msm_cluster_http_cfg *http_cfg_share(struct msm_cluster_http_cfg *h)
{
    struct http_box *b = box_of(h);
    pthread_mutex_lock(&box_mu);
    struct http_box *l = box_last;
    if (l && !memcmp(&l->cfg, h, sizeof(*h))) {
        atomic_fetch_add(&l->refs, 1);
        pthread_mutex_unlock(&box_mu);
        free(b);
        return &l->cfg;
    }
    box_last = b;
    pthread_mutex_unlock(&box_mu);
    return h;
}

void msm_cluster_http_cfg_free(struct msm_cluster_http_cfg *h)
{
    if (!h) {
        return;
    }
    struct http_box *b = box_of(h);
    pthread_mutex_lock(&box_mu);
    bool last = atomic_fetch_sub(&b->refs, 1) == 1;
    if (last && box_last == b) {
        box_last = NULL;
    }
    pthread_mutex_unlock(&box_mu);
    if (last) {
        free(b);
    }
}

static int common_options(const Envoy__Config__Core__V3__HttpProtocolOptions *p,
                          struct msm_cluster_http_cfg *h, struct msm_err *err)
{
    if (!p) {
        return 0;
    }
    int64_t idle = msm_pb_duration_ms(p->idle_timeout, h->idle_timeout_ms);
    int64_t dur = msm_pb_duration_ms(p->max_connection_duration, 0);
    int64_t sdur = msm_pb_duration_ms(p->max_stream_duration, 0);
    if (idle < 0 || dur < 0 || sdur < 0) {
        return msm_err_set(err, "common_http_protocol_options: durations must not be negative");
    }
    h->max_stream_duration_ms = sdur > UINT32_MAX ? UINT32_MAX : (uint32_t)sdur;
    h->idle_timeout_ms = idle > UINT32_MAX ? UINT32_MAX : (uint32_t)idle;
    h->max_connection_duration_ms = dur > UINT32_MAX ? UINT32_MAX : (uint32_t)dur;
    h->max_requests_per_connection = msm_pb_u32(p->max_requests_per_connection, 0);
    uint32_t mh = msm_pb_u32(p->max_headers_count, 0);
    if (mh) {
        h->h1.max_headers_count = h->h2.max_headers_count = mh;
    }
    return 0;
}

static int from_typed_options(const PbHttpOptions *p, struct msm_cluster_http_cfg *h,
                              struct msm_err *err)
{
    if (common_options(p->common_http_protocol_options, h, err) < 0) {
        return MSM_EINVAL;
    }
    if (p->n_http_filters) {
        return msm_err_set(err, "http_filters: upstream HTTP filters are not supported");
    }
    const Envoy__Config__Core__V3__UpstreamHttpProtocolOptions *u =
        p->upstream_http_protocol_options;
    if (u) {
        if (u->override_auto_sni_header[0]) {
            return msm_err_set(err, "upstream_http_protocol_options.override_auto_sni_header: "
                                    "not supported");
        }
        h->auto_sni = u->auto_sni;
        h->auto_san_validation = u->auto_san_validation;
    }
    switch (p->upstream_protocol_options_case) {
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG: {
        const Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__ExplicitHttpConfig *e =
            p->explicit_http_config;
        if (e->protocol_config_case ==
            ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS) {
            h->proto = MSM_UPSTREAM_HTTP2;
            return msm_h2_options_from_proto(e->http2_protocol_options, &h->h2, err);
        }
        if (msm_h1_options_from_proto(e->http_protocol_options, &h->h1, false, err) < 0) {
            return MSM_EINVAL;
        }
        if (e->protocol_config_case ==
            ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP3_PROTOCOL_OPTIONS) {
            return msm_err_set(err, "explicit_http_config.http3_protocol_options: HTTP/3 is not "
                                    "supported");
        }
        h->proto = MSM_UPSTREAM_HTTP1;
        return 0;
    }
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_USE_DOWNSTREAM_PROTOCOL_CONFIG:
        h->proto = MSM_UPSTREAM_HTTP_DOWNSTREAM;
        if (msm_h1_options_from_proto(p->use_downstream_protocol_config->http_protocol_options,
                                      &h->h1, false, err) < 0) {
            return MSM_EINVAL;
        }
        if (p->use_downstream_protocol_config->http3_protocol_options) {
            return msm_err_set(err, "use_downstream_protocol_config.http3_protocol_options: "
                                    "HTTP/3 is not supported");
        }
        return msm_h2_options_from_proto(
            p->use_downstream_protocol_config->http2_protocol_options, &h->h2, err);
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_AUTO_CONFIG:
        /* ALPN-negotiated per connection (http/pool.c, Envoy's mixed pool); a connection
         * without TLS, or whose handshake picked no protocol or another one, is HTTP/1.1. */
        h->proto = MSM_UPSTREAM_AUTO;
        if (msm_h1_options_from_proto(p->auto_config->http_protocol_options, &h->h1, false,
                                      err) < 0) {
            return MSM_EINVAL;
        }
        if (p->auto_config->http3_protocol_options) {
            return msm_err_set(err, "auto_config.http3_protocol_options: HTTP/3 is not "
                                    "supported");
        }
        return msm_h2_options_from_proto(p->auto_config->http2_protocol_options, &h->h2, err);
    default:
        return msm_err_set(err, "upstream_protocol_options: one of explicit_http_config, "
                                "use_downstream_protocol_config or auto_config is required");
    }
}

static int http_from_proto(const void *cluster_proto, struct msm_cluster_cfg *c,
                           struct msm_err *err);

int msm_cluster_http_from_proto(const void *cluster_proto, struct msm_cluster_cfg *c,
                                struct msm_err *err)
{
    int rc = http_from_proto(cluster_proto, c, err);
    if (rc == 0 && c->http) {
        c->http = http_cfg_share(c->http);
    }
    return rc;
}

static int http_from_proto(const void *cluster_proto, struct msm_cluster_cfg *c,
                           struct msm_err *err)
{
    const Envoy__Config__Cluster__V3__Cluster *p = cluster_proto;
    const Google__Protobuf__Any *any = NULL;
    for (size_t i = 0; i < p->n_typed_extension_protocol_options; i++) {
        if (!strcmp(p->typed_extension_protocol_options[i]->key, HTTP_OPTIONS_KEY)) {
            any = p->typed_extension_protocol_options[i]->value;
        }
    }
    bool legacy = p->http2_protocol_options || p->http_protocol_options ||
                  p->common_http_protocol_options ||
                  p->protocol_selection ==
                      ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_PROTOCOL_SELECTION__USE_DOWNSTREAM_PROTOCOL;
    if (!any && !legacy) {
        return 0;
    }
    struct msm_cluster_http_cfg *h = http_cfg_new();
    c->http = h;
    if (any) {
        if (legacy) {
            return msm_err_set(err, "typed_extension_protocol_options['%s']: cannot be combined "
                                    "with the deprecated cluster-level HTTP options",
                               HTTP_OPTIONS_KEY);
        }
        struct msm_pbjson_opts jo = {.allow_unknown_fields = true};
        ProtobufCMessage *m = msm_pb_any_unpack(
            any, &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor, &jo,
            err);
        if (!m) {
            msm_err_prefix(err, "typed_extension_protocol_options['%s']", HTTP_OPTIONS_KEY);
            return MSM_EINVAL;
        }
        int rc = from_typed_options((const PbHttpOptions *)m, h, err);
        protobuf_c_message_free_unpacked(m, NULL);
        if (rc < 0) {
            msm_err_prefix(err, "typed_extension_protocol_options['%s']", HTTP_OPTIONS_KEY);
        }
        return rc;
    }
    if (common_options(p->common_http_protocol_options, h, err) < 0) {
        return MSM_EINVAL;
    }
    if (p->http2_protocol_options) {
        h->proto = MSM_UPSTREAM_HTTP2;
        if (msm_h2_options_from_proto(p->http2_protocol_options, &h->h2, err) < 0) {
            return MSM_EINVAL;
        }
    }
    if (msm_h1_options_from_proto(p->http_protocol_options, &h->h1, false, err) < 0) {
        return MSM_EINVAL;
    }
    if (p->protocol_selection ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_PROTOCOL_SELECTION__USE_DOWNSTREAM_PROTOCOL) {
        h->proto = MSM_UPSTREAM_HTTP_DOWNSTREAM;
    }
    return 0;
}

/* ---- shared counters and stats ---------------------------------------------------------------- */

void msm_cluster_http_shared_init(struct msm_cluster_http_shared *h, const char *stat_name,
                                  struct msm_stats_store *st)
{
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "cluster.%s.", stat_name);
    h->stat_name = msm_name_intern(stat_name); /* usually the cluster's name: no copy */
    msm_cluster_http_stats_init(st, prefix, &h->stats);
    atomic_init(&h->rq_code, NULL);
    h->store = st;
    atomic_init(&h->h1stats, NULL);
    atomic_init(&h->h2stats, NULL);
    atomic_init(&h->rq_active, 0);
    atomic_init(&h->rq_pending, 0);
    atomic_init(&h->retries_active, 0);
}

void msm_cluster_http_shared_deinit(struct msm_cluster_http_shared *h)
{
    msm_cluster_http_stats_deinit(&h->stats);
    _Atomic(struct msm_stat *) *codes = atomic_load(&h->rq_code);
    for (int i = 0; codes && i < N_CODES; i++) {
        msm_stat_unref(atomic_load(&codes[i]));
    }
    free(codes);
    struct msm_http1_stats *h1 = atomic_load(&h->h1stats);
    if (h1) {
        msm_http1_stats_deinit(h1);
        free(h1);
    }
    struct msm_http2_stats *h2 = atomic_load(&h->h2stats);
    if (h2) {
        msm_http2_stats_deinit(h2);
        free(h2);
    }
    msm_name_unref(h->stat_name);
    memset(h, 0, sizeof(*h));
}

/* One breaker: take a slot under <max>, or count <overflow>. */
static bool reserve(atomic_uint *cur, uint32_t max, struct msm_stat *open, struct msm_stat *rem,
                    bool track)
{
    unsigned v = atomic_load(cur);
    do {
        if (v >= max) {
            return false;
        }
    } while (!atomic_compare_exchange_weak(cur, &v, v + 1));
    if (v + 1 >= max) {
        msm_stat_set(open, 1);
    }
    if (track) {
        msm_stat_set(rem, max - (v + 1));
    }
    return true;
}

static void release(atomic_uint *cur, uint32_t max, struct msm_stat *open, struct msm_stat *rem,
                    bool track)
{
    unsigned now = atomic_fetch_sub(cur, 1) - 1;
    if (now < max) {
        msm_stat_set(open, 0);
    }
    if (track) {
        msm_stat_set(rem, max - now);
    }
}

bool msm_cluster_rq_reserve(struct msm_cluster *c)
{
    struct msm_cluster_shared *s = c->sh;
    if (!reserve(&s->http.rq_active, c->cfg->max_requests, s->cb->rq_open, s->cb->remaining_rq,
                 c->cfg->track_remaining)) {
        /* Envoy counts both pool overflows (max_requests, max_pending_requests) here. */
        msm_stat_inc(s->http.stats.upstream_rq_pending_overflow);
        return false;
    }
    return true;
}

void msm_cluster_rq_release(struct msm_cluster *c)
{
    struct msm_cluster_shared *s = c->sh;
    release(&s->http.rq_active, c->cfg->max_requests, s->cb->rq_open, s->cb->remaining_rq,
            c->cfg->track_remaining);
}

bool msm_cluster_pending_reserve(struct msm_cluster *c)
{
    struct msm_cluster_shared *s = c->sh;
    if (!reserve(&s->http.rq_pending, c->cfg->max_pending_requests, s->cb->rq_pending_open,
                 s->cb->remaining_pending, c->cfg->track_remaining)) {
        msm_stat_inc(s->http.stats.upstream_rq_pending_overflow);
        return false;
    }
    msm_stat_inc(s->http.stats.upstream_rq_pending_total);
    msm_stat_inc(s->http.stats.upstream_rq_pending_active);
    return true;
}

void msm_cluster_pending_release(struct msm_cluster *c)
{
    struct msm_cluster_shared *s = c->sh;
    msm_stat_dec(s->http.stats.upstream_rq_pending_active);
    release(&s->http.rq_pending, c->cfg->max_pending_requests, s->cb->rq_pending_open,
            s->cb->remaining_pending, c->cfg->track_remaining);
}

bool msm_cluster_retry_reserve(struct msm_cluster *c)
{
    struct msm_cluster_shared *s = c->sh;
    if (!reserve(&s->http.retries_active, c->cfg->max_retries, s->cb->rq_retry_open,
                 s->cb->remaining_retries, c->cfg->track_remaining)) {
        msm_stat_inc(s->http.stats.upstream_rq_retry_overflow);
        return false;
    }
    return true;
}

void msm_cluster_retry_release(struct msm_cluster *c)
{
    struct msm_cluster_shared *s = c->sh;
    release(&s->http.retries_active, c->cfg->max_retries, s->cb->rq_retry_open,
            s->cb->remaining_retries, c->cfg->track_remaining);
}

/* Envoy's CodecStats::atomicGet: the first caller makes the block (under the cluster
 * manager's sink scope, as the cluster's other stats: a stat stats_matcher rejects costs
 * nothing), a racing worker's duplicate is dropped. */
#define CODEC_STATS_GET(tag, field, proto)                                                        \
    struct msm_cluster_http_shared *h = &c->sh->http;                                             \
    struct tag *cur = atomic_load_explicit(&h->field, memory_order_acquire);                      \
    if (cur) {                                                                                    \
        return cur;                                                                               \
    }                                                                                             \
    char prefix[512];                                                                             \
    snprintf(prefix, sizeof(prefix), "cluster.%s." proto ".", h->stat_name);                      \
    struct tag *fresh = MSM_NEW(struct tag);                                                      \
    bool was = msm_stats_sink_rejected(true);                                                     \
    tag##_init(h->store, prefix, fresh);                                                          \
    msm_stats_sink_rejected(was);                                                                 \
    if (atomic_compare_exchange_strong(&h->field, &cur, fresh)) {                                 \
        return fresh;                                                                             \
    }                                                                                             \
    tag##_deinit(fresh);                                                                          \
    free(fresh);                                                                                  \
    return cur;

struct msm_http1_stats *msm_cluster_http1_stats(struct msm_cluster *c)
{
    CODEC_STATS_GET(msm_http1_stats, h1stats, "http1")
}

struct msm_http2_stats *msm_cluster_http2_stats(struct msm_cluster *c)
{
    CODEC_STATS_GET(msm_http2_stats, h2stats, "http2")
}

void msm_cluster_count_status(struct msm_cluster *c, int status)
{
    struct msm_cluster_http_shared *h = &c->sh->http;
    if (status < 100 || status >= N_CODES) {
        return;
    }
    _Atomic(struct msm_stat *) *codes = atomic_load_explicit(&h->rq_code, memory_order_acquire);
    if (!codes) {
        /* First response of the cluster: 8 KB per cluster only once it is used. */
        _Atomic(struct msm_stat *) *fresh = msm_xcalloc(N_CODES, sizeof(*fresh));
        if (atomic_compare_exchange_strong(&h->rq_code, &codes, fresh)) {
            codes = fresh;
        } else {
            free(fresh);
        }
    }
    struct msm_stat *s = atomic_load_explicit(&codes[status], memory_order_acquire);
    if (!s) {
        /* First response with this code for this cluster: create the counter (the store is
         * locked; a racing worker's duplicate reference is dropped). */
        bool was = msm_stats_sink_rejected(true); /* never read back (see msm_cm_add) */
        struct msm_stat *n = msm_stats_getf(c->sh->stats.upstream_rq_total->store,
                                            MSM_STAT_COUNTER, "cluster.%s.upstream_rq_%d", h->stat_name,
                                            status);
        msm_stats_sink_rejected(was);
        struct msm_stat *expected = NULL;
        if (atomic_compare_exchange_strong(&codes[status], &expected, n)) {
            s = n;
        } else {
            msm_stat_unref(n);
            s = expected;
        }
    }
    msm_stat_inc(s);
    switch (status / 100) {
    case 1: msm_stat_inc(h->stats.upstream_rq_1xx); break;
    case 2: msm_stat_inc(h->stats.upstream_rq_2xx); break;
    case 3: msm_stat_inc(h->stats.upstream_rq_3xx); break;
    case 4: msm_stat_inc(h->stats.upstream_rq_4xx); break;
    default: msm_stat_inc(h->stats.upstream_rq_5xx); break;
    }
    msm_stat_inc(h->stats.upstream_rq_completed);
}
