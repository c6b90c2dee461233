/* envoy.filters.network.http_connection_manager: streams. One request/response exchange, its
 * HTTP filter instances and their iteration (Envoy's FilterManager), local replies, the
 * per-stream timeouts, and the filter-facing API (msm_hs_*, src/filter/http.h).
 *
 * Decoding runs filters 0..n-1 on the request, encoding n-1..0 on the response. A filter that
 * returns STOP on headers holds the stream at its index (dec_pos / enc_pos); body and trailers
 * arriving meanwhile are buffered here (bounded by buffer_limit: 413 for requests, a reset for
 * responses) and replayed when it continues. On data, STOP means the filter took the bytes.
 *
 * Lifetime: a stream is destroyed when its response end went to the codec (the rest of an
 * unfinished request is abandoned, as Envoy does), or on a reset from either side. Destroying
 * tells every filter (on_destroy), releases the codec stream and the route configuration, and
 * frees the memory later (msm_defer): a filter's own call may be on the stack. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer/recycle.h"
#include "common/alloc.h"
#include "common/log.h"
#include "config/snapshot.h"
#include "event/deferred.h"
#include "event/loop.h"
#include "filter/manager.h"
#include "filters/network/http_connection_manager/hcm_private.h"
#include "server/worker.h"
#include "upstream/cluster.h"

static void encode_headers_from(struct hstream *st, int from, struct msm_hdrs *h, bool end);
static void encode_data_from(struct hstream *st, int from, struct msm_buf *b, bool end);
static void encode_trailers_from(struct hstream *st, int from, struct msm_hdrs *t);
static void decode_data_from(struct hstream *st, int from, struct msm_buf *b, bool end);
static void decode_trailers_from(struct hstream *st, int from, struct msm_hdrs *t);
static void select_route(struct hstream *st);

/* ---- lifecycle -------------------------------------------------------------------------------------- */

static void stream_free(void *p)
{
    struct hstream *st = p;
    for (int i = 0; i < st->nf; i++) {
        if (st->f[i].inst && st->f[i].f->ops->filter_free) {
            st->f[i].f->ops->filter_free(st->f[i].inst);
        }
    }
    msm_recycle_free(st->f, st->f_size);
    msm_hdrs_deinit(&st->req);
    msm_buf_deinit(&st->dec_buf);
    msm_buf_deinit(&st->enc_buf);
    msm_hdrs_free(st->dec_trailers);
    msm_hdrs_free(st->enc_headers);
    msm_hdrs_free(st->enc_trailers);
    msm_hdrs_free(st->log_resp_headers);
    msm_hdrs_free(st->log_resp_trailers);
    msm_route_config_unref(st->rc);
    free(st->upgrade);
    msm_recycle_free(st, sizeof(*st));
}

/* ---- access log ------------------------------------------------------------------------------------ */

/* The stream's MSM_RF bits as the access log's enum msm_response_flag bits (matched by short
 * name: the two lists share their order today, but nothing ties them). */
static uint64_t log_flags(uint32_t flags)
{
    static const char *const names[] = {
#define MSM__RF_NAME(e, s) s,
        MSM_RF_LIST(MSM__RF_NAME)
#undef MSM__RF_NAME
    };
    uint64_t out = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (flags & (1u << i)) {
            int f = msm_response_flag_parse(names[i]);
            if (f >= 0) {
                out |= 1ull << f;
            }
        }
    }
    return out;
}

/* <a> and <b> are the same IP and port (binary compare: no formatting per host). */
static bool same_ip_port(const struct msm_address *a, const struct msm_address *b)
{
    if (a->sa.ss_family != b->sa.ss_family) {
        return false;
    }
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->sa, *y = (const void *)&b->sa;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a->sa, *y = (const void *)&b->sa;
        return x->sin6_port == y->sin6_port &&
               !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
    }
    return false;
}

/* The host the router connected to, named <peer> ("10.0.0.1:8080", "[::1]:80", a pipe path),
 * among <c>'s hosts, or NULL. */
static struct msm_host *log_find_host(const struct msm_cluster *c, const char *peer)
{
    if (!c->hosts || !peer[0]) {
        return NULL;
    }
    const char *colon = strrchr(peer, ':');
    struct msm_address want;
    bool ip = false;
    if (colon && peer[0] != '/' && peer[0] != '@') {
        char host[64];
        const char *b = peer[0] == '[' ? peer + 1 : peer;
        size_t n = (size_t)(colon - b) - (peer[0] == '[' ? 1 : 0);
        if (n < sizeof(host)) {
            memcpy(host, b, n);
            host[n] = 0;
            ip = msm_address_from_ip(host, (uint32_t)strtoul(colon + 1, NULL, 10), &want,
                                     NULL) == 0;
        }
    }
    char buf[MSM_ADDRSTRLEN + 8];
    for (int i = 0; i < c->hosts->n; i++) {
        const struct msm_address *a = &c->hosts->hosts[i]->addr;
        if (ip ? same_ip_port(a, &want)
               : (msm_address_str(a, buf, sizeof(buf)), !strcmp(buf, peer))) {
            return c->hosts->hosts[i];
        }
    }
    return NULL;
}

/* One access log entry for the request (Envoy logs each stream when it is destroyed). */
static void log_stream(struct hstream *st)
{
    struct hcm_conn *hc = st->hc;
    const struct msm_hcm_config *cfg = hc->cfg;
    double now = ev_now(hc->loop);
    struct msm_stream_info si;
    msm_si_init(&si, st->info.start, st->info.start);
    const struct msm_stream_info *ci = msm_filter_stream_info(hc->h);
    if (ci) {
        /* the connection's downstream part (addresses after original_dst, TLS, listener) */
        si.connection_id = ci->connection_id;
        si.downstream_local = ci->downstream_local;
        si.downstream_remote = ci->downstream_remote;
        si.downstream_direct_remote = ci->downstream_direct_remote;
        si.has_downstream = ci->has_downstream;
        si.requested_server_name = ci->requested_server_name;
        si.downstream_peer_uri_san = ci->downstream_peer_uri_san;
        si.downstream_local_uri_san = ci->downstream_local_uri_san;
        si.downstream_tls_version = ci->downstream_tls_version;
        si.downstream_tls_cipher = ci->downstream_tls_cipher;
        si.listener_name = ci->listener_name;
        si.downstream_peer = ci->downstream_peer;
        si.downstream_peer_done = ci->downstream_peer_done;
        si.downstream_peer_metadata = ci->downstream_peer_metadata;
        si.downstream_peer_state = ci->downstream_peer_state;
    }
    si.end = now;
    si.last_downstream_rx = st->remote_end_at; /* REQUEST_DURATION */
    si.last_downstream_tx = st->local_end ? now : 0;
    si.protocol = msm_http_proto_name(st->proto);
    si.response_code = st->info.status > 0 ? (uint32_t)st->info.status : 0;
    si.response_code_details = st->info.details;
    si.response_flags = log_flags(st->info.flags);
    si.request_headers = &st->req;
    si.response_headers = st->log_resp_headers;
    si.response_trailers = st->log_resp_trailers;
    si.bytes_received = st->info.rx_body;
    si.bytes_sent = st->info.tx_body;
    si.attempt_count = st->info.attempts;
    si.route_name = st->route && st->route->name && st->route->name[0] ? st->route->name : NULL;
    si.upstream_local = st->info.upstream_local;
    si.has_upstream_local = st->info.upstream_local.len > 0;
    si.first_upstream_rx = st->info.first_upstream_rx;
    si.last_upstream_tx = st->info.last_upstream_tx;
    si.upstream_transport_failure_reason =
        st->info.upstream_failure[0] ? st->info.upstream_failure : NULL;
    /* The router records the cluster and host by name; the log wants the objects (the cluster's
     * alt_stat_name, the host's address). Both may have left the snapshot since: then "-". */
    struct msm_worker *w = hc->w;
    struct msm_cluster *c = st->info.upstream_cluster[0] && w && w->snap
                                ? msm_snapshot_cluster(w->snap, st->info.upstream_cluster)
                                : NULL;
    if (c) {
        msm_si_set_upstream(&si, c->cfg, log_find_host(c, st->info.upstream_host));
    }
    msm_access_logs_emit(&cfg->logs, &si, now);
    msm_si_deinit(&si);
}

static void touch(struct hstream *st)
{
    st->last_activity = ev_now(st->hc->loop);
}

void msm_hcm_stream_destroy(struct hstream *st, bool reset)
{
    if (st->destroyed) {
        return;
    }
    struct hcm_conn *hc = st->hc;
    const struct msm_hcm_config *cfg = hc->cfg;
    st->destroyed = true;
    msm_timer_stop(st->hc->loop, &st->req_timer);
    msm_timer_stop(st->hc->loop, &st->dur_timer);
    msm_tq_stop(&st->idle_timer);
    if (st->cs) {
        struct msm_hstream *cs = st->cs;
        st->cs = NULL;
        if (reset && !(cs->local_end && cs->remote_end)) {
            msm_stat_inc(cfg->stats.downstream_rq_tx_reset);
            /* Envoy (doEndStream, RFC 9113 8.5): a CONNECT or upgrade on HTTP/2 whose upstream
             * connection failed or broke (UF, UC) is reset with CONNECT_ERROR. */
            cs->connect_error =
                st->upgrade && st->proto == MSM_HTTP_2 &&
                (st->info.flags & (MSM_RF(UPSTREAM_CONNECTION_FAILURE) |
                                   MSM_RF(UPSTREAM_CONNECTION_TERMINATION)));
            cs->codec->ops->reset(cs);
        }
        cs->codec->ops->release(cs);
    }
    for (int i = 0; i < st->nf; i++) {
        if (st->f[i].inst && st->f[i].f->ops->on_destroy) {
            st->f[i].f->ops->on_destroy(st->f[i].inst);
        }
    }
    if (cfg->logs.n) {
        log_stream(st);
    }
    msm_hcm_upgrade_done(st);
    msm_stat_dec(cfg->stats.downstream_rq_active);
    if (!reset) {
        msm_stat_inc(cfg->stats.downstream_rq_completed);
    }
    msm_stat_record(cfg->stats.downstream_rq_time,
                    (uint64_t)((ev_now(hc->loop) - st->info.start) * 1000.0));
    if (st->prev) {
        st->prev->next = st->next;
    } else {
        hc->streams = st->next;
    }
    if (st->next) {
        st->next->prev = st->prev;
    }
    st->next = st->prev = NULL;
    msm_defer(hc->loop, stream_free, st);
    msm_hcm_conn_stream_gone(hc, st);
}

static void on_req_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct hstream *st = MSM_CONTAINER_OF(t, struct hstream, req_timer);
    msm_stat_inc(st->hc->cfg->stats.downstream_rq_timeout);
    msm_hcm_local_reply(st, st->nf - 1, 408, "request timeout", "request_overall_timeout", 0);
}

static void on_duration_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct hstream *st = MSM_CONTAINER_OF(t, struct hstream, dur_timer);
    msm_stat_inc(st->hc->cfg->stats.downstream_rq_max_duration_reached);
    st->grpc_status = 4; /* DEADLINE_EXCEEDED */
    msm_hcm_local_reply(st, st->nf - 1, 408, "downstream duration timeout",
                        "max_duration_timeout", MSM_RF(DURATION_TIMEOUT));
}

/* Envoy's ActiveStream::refreshDurationTimeout, once the route is known: a gRPC request's
 * grpc-timeout when the route lets it in (grpc_timeout_header_max, capped unless 0, less the
 * offset), else the route's max_stream_duration (0: none), else the connection manager's; the
 * time the stream already lived counts. */
static void start_duration_timer(struct hstream *st)
{
    const struct msm_route *r = st->route;
    const char *gt = r && r->has_grpc_max ? msm_hdrs_get(&st->req, "grpc-timeout") : NULL;
    uint64_t ms;
    if (gt && msm_grpc_timeout_ms(gt, &ms)) {
        if (r->grpc_max_ms && ms > r->grpc_max_ms) {
            ms = r->grpc_max_ms;
        }
        if (ms && r->grpc_offset_ms) {
            ms = r->grpc_offset_ms < ms ? ms - r->grpc_offset_ms : 0;
        }
    } else if (r && r->has_msd) {
        if (!r->max_stream_duration_ms) {
            return;
        }
        ms = r->max_stream_duration_ms;
    } else if (st->hc->cfg->max_stream_duration_ms) {
        ms = st->hc->cfg->max_stream_duration_ms;
    } else {
        return;
    }
    double left = st->info.start + ms / 1000.0 - ev_now(st->hc->loop);
    ev_timer_set(&st->dur_timer, left > 0 ? left : 0, 0);
    ev_timer_start(st->hc->loop, &st->dur_timer);
}

static void on_idle_timeout(struct ev_loop *loop, struct msm_tq_entry *t)
{
    struct hstream *st = MSM_CONTAINER_OF(t, struct hstream, idle_timer);
    double left = st->last_activity + st->idle_ms / 1000.0 - ev_now(loop);
    if (left > 0.001) {
        msm_tq_start_from(loop, t, st->idle_ms, st->last_activity);
        return;
    }
    msm_stat_inc(st->hc->cfg->stats.downstream_rq_idle_timeout);
    msm_hcm_local_reply(st, st->nf - 1, 408, "stream timeout", "stream_idle_timeout",
                        MSM_RF(STREAM_IDLE_TIMEOUT));
}

void msm_hcm_stream_set_chain(struct hstream *st, const struct msm_hcm_filter *fs, int n)
{
    msm_recycle_free(st->f, st->f_size);
    st->nf = 0;
    st->f_size = ((size_t)n + 1) * sizeof(*st->f);
    st->f = msm_recycle_calloc(st->f_size);
    for (int i = 0; i < n; i++) {
        if (!fs[i].ops) {
            continue; /* accepted no-op */
        }
        struct hfilter *f = &st->f[st->nf];
        f->h.st = st;
        f->h.idx = st->nf;
        f->f = &fs[i];
        st->nf++;
    }
    st->enc_pos = st->nf;
}

struct hstream *msm_hcm_stream_new(struct hcm_conn *hc, struct msm_hstream *cs)
{
    const struct msm_hcm_config *cfg = hc->cfg;
    struct hstream *st = msm_recycle_calloc(sizeof(*st));
    st->hc = hc;
    st->cs = cs;
    st->proto = hc->proto == MSM_HTTP_11 && cs && cs->http10 ? MSM_HTTP_10 : hc->proto;
    st->wc = -1;
    st->idle_ms = cfg->stream_idle_timeout_ms;
    st->info.start = ev_now(hc->loop);
    st->last_activity = st->info.start;
    msm_hdrs_init(&st->req);
    msm_buf_init(&st->dec_buf);
    msm_buf_init(&st->enc_buf);
    msm_hcm_stream_set_chain(st, cfg->filters, cfg->n_filters);
    ev_timer_init(&st->req_timer, on_req_timeout, 0, 0);
    ev_timer_init(&st->dur_timer, on_duration_timeout, 0, 0);
    st->grpc_status = -1;
    msm_tq_entry_init(&st->idle_timer, on_idle_timeout);
    st->next = hc->streams;
    if (hc->streams) {
        hc->streams->prev = st;
    }
    hc->streams = st;
    hc->n_streams++;
    hc->requests++;
    /* hc->idle stays armed: it does nothing while streams exist (on_idle), and the last stream
     * going re-arms it. Not stopping it here spares two timer-heap updates per request. */
    msm_stat_inc(cfg->stats.downstream_rq_total);
    msm_stat_inc(hc->proto == MSM_HTTP_2 ? cfg->stats.downstream_rq_http2_total
                                         : cfg->stats.downstream_rq_http1_total);
    msm_stat_inc(cfg->stats.downstream_rq_active);
    return st;
}

/* ---- the response end and local replies ----------------------------------------------------------- */

static void on_local_end(struct hstream *st)
{
    st->local_end = true;
    if (st->tunneling && !st->remote_end) {
        return; /* a tunnel's half-close: the client's direction goes on (s_on_data ends it) */
    }
    if (!st->remote_end) {
        msm_stat_inc(st->hc->cfg->stats.downstream_rq_response_before_rq_complete);
    }
    msm_hcm_stream_destroy(st, false);
}

static void count_status(struct hstream *st, int status)
{
    const struct msm_hcm_config *cfg = st->hc->cfg;
    st->info.status = status;
    switch (status / 100) {
    case 1: msm_stat_inc(cfg->stats.downstream_rq_1xx); break;
    case 2: msm_stat_inc(cfg->stats.downstream_rq_2xx); break;
    case 3: msm_stat_inc(cfg->stats.downstream_rq_3xx); break;
    case 4: msm_stat_inc(cfg->stats.downstream_rq_4xx); break;
    default: msm_stat_inc(cfg->stats.downstream_rq_5xx); break;
    }
}

static void codec_headers(struct hstream *st, struct msm_hdrs *h, bool end)
{
    int status = msm_hdrs_status(h, 0);
    msm_hcm_upgrade_on_response(st, status);
    /* Envoy disarms request_timeout once the response starts. */
    msm_timer_stop(st->hc->loop, &st->req_timer);
    msm_hcm_finalize_response(st, h);
    count_status(st, status);
    if (!st->info.details) {
        st->info.details = "via_upstream"; /* local replies and the router set their own */
    }
    st->info.tx_header_bytes += h->bytes;
    touch(st);
    if (st->hc->cfg->logs.n && !st->log_resp_headers) {
        st->log_resp_headers = msm_hdrs_new();
        msm_hdrs_copy(st->log_resp_headers, h);
    }
    if (st->cs) {
        st->cs->codec->ops->encode_headers(st->cs, h, end);
    }
    if (end && !st->destroyed) {
        on_local_end(st);
    }
}

static void codec_data(struct hstream *st, struct msm_buf *b, bool end)
{
    st->info.tx_body += b->len;
    touch(st);
    if (st->cs) {
        st->cs->codec->ops->encode_data(st->cs, b, end);
    } else {
        msm_buf_drain(b, b->len);
    }
    if (end && !st->destroyed) {
        on_local_end(st);
    }
}

static void codec_trailers(struct hstream *st, struct msm_hdrs *t)
{
    st->info.tx_header_bytes += t->bytes;
    touch(st);
    if (st->hc->cfg->logs.n && !st->log_resp_trailers) {
        st->log_resp_trailers = msm_hdrs_new();
        msm_hdrs_copy(st->log_resp_trailers, t);
    }
    if (st->cs) {
        st->cs->codec->ops->encode_trailers(st->cs, t);
    }
    if (!st->destroyed) {
        on_local_end(st);
    }
}

void msm_hcm_local_reply(struct hstream *st, int from, int status, const char *body,
                         const char *details, uint32_t flags)
{
    if (st->destroyed) {
        return;
    }
    st->info.flags |= flags;
    st->info.details = details;
    if (st->resp_started) {
        /* Too late for a response: the stream goes. */
        msm_hcm_stream_destroy(st, true);
        return;
    }
    st->resp_started = true;
    struct msm_hdrs h;
    struct msm_buf b;
    msm_hdrs_init(&h);
    msm_buf_init(&b);
    if (st->is_grpc) {
        msm_hcm_build_grpc_local_reply(status, st->grpc_status, body, &h);
    } else {
        msm_hcm_build_local_reply(st->hc, status, body, st->is_head, &h, &b);
    }
    bool has_body = b.len > 0;
    encode_headers_from(st, from, &h, !has_body);
    if (has_body && !st->destroyed) {
        encode_data_from(st, from, &b, true);
    }
    msm_buf_deinit(&b);
    msm_hdrs_deinit(&h);
}

void msm_hcm_raw_reply(struct hcm_conn *hc, struct msm_hstream *cs, int status,
                       const char *details)
{
    (void)details;
    struct msm_hdrs h;
    struct msm_buf b;
    msm_hdrs_init(&h);
    msm_buf_init(&b);
    msm_hcm_build_local_reply(hc, status, msm_http_reason(status), false, &h, &b);
    msm_hdrs_set(&h, "server", hc->cfg->server_name);
    cs->codec->ops->encode_headers(cs, &h, b.len == 0);
    if (b.len) {
        cs->codec->ops->encode_data(cs, &b, true);
    }
    msm_buf_deinit(&b);
    msm_hdrs_deinit(&h);
}

/* ---- encoding -------------------------------------------------------------------------------------- */

static void encode_headers_from(struct hstream *st, int from, struct msm_hdrs *h, bool end)
{
    for (int i = from; i >= 0; i--) {
        struct hfilter *f = &st->f[i];
        if (!f->f->ops->encode_headers) {
            continue;
        }
        enum msm_hf_status s = f->f->ops->encode_headers(f->inst, h, end);
        if (st->destroyed) {
            return;
        }
        if (s == MSM_HF_STOP) {
            st->enc_pos = i;
            st->enc_headers = msm_hdrs_new();
            msm_hdrs_move(st->enc_headers, h);
            st->enc_headers_end = end;
            return;
        }
    }
    st->enc_pos = -1;
    st->enc_headers_done = true;
    codec_headers(st, h, end);
    if (st->destroyed) {
        return;
    }
    if (st->enc_buf.len || st->enc_buf_end) {
        struct msm_buf b;
        msm_buf_init(&b);
        msm_buf_move(&b, &st->enc_buf);
        encode_data_from(st, from, &b, st->enc_buf_end && !st->enc_trailers);
        msm_buf_deinit(&b);
    }
    if (!st->destroyed && st->enc_trailers) {
        struct msm_hdrs *t = st->enc_trailers;
        st->enc_trailers = NULL;
        encode_trailers_from(st, from, t);
        msm_hdrs_free(t);
    }
}

static void encode_data_from(struct hstream *st, int from, struct msm_buf *b, bool end)
{
    if (!st->enc_headers_done) {
        if (st->enc_buf.len + b->len > st->hc->cfg->buffer_limit) {
            msm_stat_inc(st->hc->cfg->stats.rs_too_large);
            msm_buf_drain(b, b->len);
            msm_hcm_stream_destroy(st, true);
            return;
        }
        msm_buf_move(&st->enc_buf, b);
        st->enc_buf_end |= end;
        return;
    }
    for (int i = from; i >= 0; i--) {
        struct hfilter *f = &st->f[i];
        if (!f->f->ops->encode_data) {
            continue;
        }
        enum msm_hf_status s = f->f->ops->encode_data(f->inst, b, end);
        if (st->destroyed || s == MSM_HF_STOP) {
            return;
        }
    }
    codec_data(st, b, end);
}

static void encode_trailers_from(struct hstream *st, int from, struct msm_hdrs *t)
{
    if (!st->enc_headers_done) {
        if (!st->enc_trailers) {
            st->enc_trailers = msm_hdrs_new();
            msm_hdrs_move(st->enc_trailers, t);
        }
        return;
    }
    for (int i = from; i >= 0; i--) {
        struct hfilter *f = &st->f[i];
        if (!f->f->ops->encode_trailers) {
            continue;
        }
        enum msm_hf_status s = f->f->ops->encode_trailers(f->inst, t);
        if (st->destroyed || s == MSM_HF_STOP) {
            return;
        }
    }
    codec_trailers(st, t);
}

/* ---- decoding -------------------------------------------------------------------------------------- */

static void flush_decode_buffer(struct hstream *st)
{
    if (st->dec_buf.len || st->dec_buf_end) {
        struct msm_buf b;
        msm_buf_init(&b);
        msm_buf_move(&b, &st->dec_buf);
        bool end = st->dec_buf_end && !st->dec_trailers;
        st->dec_buf_end = false;
        decode_data_from(st, 0, &b, end);
        msm_buf_deinit(&b);
    }
    if (!st->destroyed && st->dec_trailers) {
        struct msm_hdrs *t = st->dec_trailers;
        st->dec_trailers = NULL;
        decode_trailers_from(st, 0, t);
        msm_hdrs_free(t);
    }
}

static void decode_headers_from(struct hstream *st, int from)
{
    bool end = st->remote_end && !st->dec_buf.len && !st->dec_buf_end && !st->dec_trailers;
    for (int i = from; i < st->nf; i++) {
        struct hfilter *f = &st->f[i];
        if (!f->f->ops->decode_headers) {
            continue;
        }
        st->dec_pos = i;
        enum msm_hf_status s = f->f->ops->decode_headers(f->inst, &st->req, end);
        if (st->destroyed || st->local_end) {
            return;
        }
        if (s == MSM_HF_STOP) {
            return; /* held at i until msm_hs_continue_decoding */
        }
    }
    st->dec_pos = st->nf;
    st->dec_headers_done = true;
    flush_decode_buffer(st);
}

static void decode_data_from(struct hstream *st, int from, struct msm_buf *b, bool end)
{
    if (st->local_end && !st->tunneling) {
        msm_buf_drain(b, b->len);
        return;
    }
    if (!st->dec_headers_done) {
        if (st->dec_buf.len + b->len > st->hc->cfg->buffer_limit) {
            msm_stat_inc(st->hc->cfg->stats.downstream_rq_too_large);
            msm_buf_drain(b, b->len);
            msm_hcm_local_reply(st, st->nf - 1, 413, "Payload Too Large", "request_payload_too_large",
                                0);
            return;
        }
        msm_buf_move(&st->dec_buf, b);
        st->dec_buf_end |= end;
        return;
    }
    for (int i = from; i < st->nf; i++) {
        struct hfilter *f = &st->f[i];
        if (!f->f->ops->decode_data) {
            continue;
        }
        enum msm_hf_status s = f->f->ops->decode_data(f->inst, b, end);
        if (st->destroyed || s == MSM_HF_STOP) {
            break;
        }
    }
    msm_buf_drain(b, b->len);
}

static void decode_trailers_from(struct hstream *st, int from, struct msm_hdrs *t)
{
    if (st->local_end) {
        return;
    }
    if (!st->dec_headers_done) {
        if (!st->dec_trailers) {
            st->dec_trailers = msm_hdrs_new();
            msm_hdrs_move(st->dec_trailers, t);
        }
        return;
    }
    for (int i = from; i < st->nf; i++) {
        struct hfilter *f = &st->f[i];
        if (!f->f->ops->decode_trailers) {
            continue;
        }
        enum msm_hf_status s = f->f->ops->decode_trailers(f->inst, t);
        if (st->destroyed || s == MSM_HF_STOP) {
            return;
        }
    }
}

/* ---- codec stream callbacks --------------------------------------------------------------------- */

/* Envoy's FilterManager, when it creates a stream's filters (after routing): a filter
 * disabled by default (HttpFilter.disabled) runs only where the route, its virtual host or the
 * route configuration has a typed_per_filter_config entry for it other than
 * FilterConfig{disabled: true}; any filter is left out where that entry disables it. Decided
 * once, before the filters exist; the terminal filter always stays. */
static void drop_disabled_filters(struct hstream *st)
{
    if (!st->route_done) {
        select_route(st); /* the router needs it anyway: routing first is Envoy's order too */
    }
    bool any = st->rc && st->rc->any_disabled_filter;
    for (int i = 0; i < st->nf && !any; i++) {
        any = st->f[i].f->disabled;
    }
    if (!any) {
        return;
    }
    int n = 0;
    for (int i = 0; i < st->nf; i++) {
        struct hfilter f = st->f[i];
        bool on = !f.f->disabled;
        const struct msm_per_filter *pf =
            st->route ? msm_route_per_filter(st->rc, st->route, -1, f.f->name) : NULL;
        if (pf) {
            on = !pf->disabled;
        }
        if (on || i == st->nf - 1) {
            f.h.idx = n;
            st->f[n++] = f;
        }
    }
    st->nf = n;
    st->enc_pos = n;
}

static void s_on_headers(void *ctx, struct msm_hdrs *h, bool end_stream)
{
    struct hstream *st = ctx;
    struct hcm_conn *hc = st->hc;
    const struct msm_hcm_config *cfg = hc->cfg;
    msm_hdrs_move(&st->req, h);
    st->remote_end = end_stream;
    st->remote_end_at = end_stream ? ev_now(st->hc->loop) : 0;
    touch(st);
    const char *details = NULL;
    int status = msm_hcm_prepare_request(st, &details);
    if (status) {
        msm_hcm_local_reply(st, -1, status, status == 404 ? NULL : msm_http_reason(status),
                            details, MSM_RF(DOWNSTREAM_PROTOCOL_ERROR));
        return;
    }
    if (st->upgrade) {
        /* Envoy routes before creating the filter chain: the route may veto the upgrade. */
        select_route(st);
        if (!msm_hcm_upgrade_accept(st, st->route)) {
            msm_hcm_local_reply(st, -1, 403, NULL, "upgrade_failed", 0);
            return;
        }
    }
    const char *expect = msm_hdrs_get(&st->req, "expect");
    if (expect && !strcasecmp(expect, "100-continue") && !cfg->proxy_100_continue) {
        /* Envoy answers 100-continue itself and does not forward the expectation. */
        msm_hdrs_remove(&st->req, "expect");
        if (!end_stream && st->cs) {
            st->cs->codec->ops->encode_100_continue(st->cs);
        }
    }
    if (cfg->request_timeout_ms && !end_stream) {
        ev_timer_set(&st->req_timer, cfg->request_timeout_ms / 1000.0, 0);
        ev_timer_start(hc->loop, &st->req_timer);
    }
    if (st->idle_ms) {
        msm_tq_start(hc->loop, &st->idle_timer, st->idle_ms);
    }
    drop_disabled_filters(st);
    start_duration_timer(st);
    for (int i = 0; i < st->nf; i++) {
        struct hfilter *f = &st->f[i];
        f->inst = f->f->ops->filter_new(f->f->config, &f->h);
    }
    decode_headers_from(st, 0);
}

static void s_on_data(void *ctx, struct msm_buf *data, bool end_stream)
{
    struct hstream *st = ctx;
    if (st->destroyed) {
        msm_buf_drain(data, data->len);
        return;
    }
    touch(st);
    st->info.rx_body += data->len;
    if (end_stream) {
        st->remote_end = true;
        st->remote_end_at = ev_now(st->hc->loop);
        msm_timer_stop(st->hc->loop, &st->req_timer);
    }
    decode_data_from(st, 0, data, end_stream);
    if (end_stream && st->tunneling && st->local_end && !st->destroyed) {
        msm_hcm_stream_destroy(st, false); /* the tunnel's second half-close */
    }
}

static void s_on_trailers(void *ctx, struct msm_hdrs *t)
{
    struct hstream *st = ctx;
    if (st->destroyed) {
        return;
    }
    touch(st);
    st->remote_end = true;
    st->remote_end_at = ev_now(st->hc->loop);
    msm_timer_stop(st->hc->loop, &st->req_timer);
    decode_trailers_from(st, 0, t);
}

static void s_on_reset(void *ctx, enum msm_http_reset r)
{
    struct hstream *st = ctx;
    (void)r;
    msm_stat_inc(st->hc->cfg->stats.downstream_rq_rx_reset);
    st->info.flags |= MSM_RF(DOWNSTREAM_CONNECTION_TERMINATION);
    struct msm_hstream *cs = st->cs;
    st->cs = NULL;
    if (cs) {
        cs->codec->ops->release(cs);
    }
    msm_hcm_stream_destroy(st, true);
}

static void s_on_watermark(void *ctx, bool above)
{
    struct hstream *st = ctx;
    for (int i = st->nf - 1; i >= 0 && !st->destroyed; i--) {
        if (st->f[i].inst && st->f[i].f->ops->on_watermark) {
            st->f[i].f->ops->on_watermark(st->f[i].inst, above);
        }
    }
}

const struct msm_hstream_cbs msm_hcm_stream_cbs = {
    .on_headers = s_on_headers,
    .on_data = s_on_data,
    .on_trailers = s_on_trailers,
    .on_reset = s_on_reset,
    .on_watermark = s_on_watermark,
};

/* ---- the filter-facing API (src/filter/http.h) ------------------------------------------------ */

struct msm_hdrs *msm_hs_request_headers(struct msm_http_stream *s)
{
    return &s->st->req;
}

static void select_route(struct hstream *st)
{
    struct msm_route_config *rc = msm_hcm_route_config(st->hc->cfg, st->hc->w->snap);
    if (rc != st->rc) {
        msm_route_config_unref(st->rc);
        st->rc = rc ? msm_route_config_ref(rc) : NULL;
    }
    st->route = st->rc ? msm_route_select(st->rc, &st->req, msm_random()) : NULL;
    st->route_done = true;
    st->wc = -1;
    if (st->route && st->route->has_idle_timeout && st->route->idle_timeout_ms != st->idle_ms) {
        /* The route's idle_timeout replaces stream_idle_timeout (0 turns it off). */
        st->idle_ms = st->route->idle_timeout_ms;
        msm_tq_stop(&st->idle_timer);
        if (st->idle_ms && !st->destroyed) {
            msm_tq_start(st->hc->loop, &st->idle_timer, st->idle_ms);
        }
    }
}

const struct msm_route *msm_hs_route(struct msm_http_stream *s)
{
    if (!s->st->route_done) {
        select_route(s->st);
    }
    return s->st->route;
}

const struct msm_route_config *msm_hs_route_config(struct msm_http_stream *s)
{
    if (!s->st->route_done) {
        select_route(s->st);
    }
    return s->st->rc;
}

void msm_hs_clear_route_cache(struct msm_http_stream *s)
{
    s->st->route_done = false;
    s->st->route = NULL;
}

int msm_hs_route_wc(struct msm_http_stream *s)
{
    return s->st->wc;
}

void msm_hs_set_route_wc(struct msm_http_stream *s, int wc)
{
    s->st->wc = wc;
}

void *msm_hs_per_route_config(struct msm_http_stream *s, bool *disabled)
{
    struct hstream *st = s->st;
    const struct msm_route *r = msm_hs_route(s);
    const struct msm_per_filter *pf =
        msm_route_per_filter(st->rc, r, st->wc, st->f[s->idx].f->name);
    if (disabled) {
        *disabled = pf && pf->disabled;
    }
    return pf ? pf->config : NULL;
}

void msm_hs_continue_decoding(struct msm_http_stream *s)
{
    struct hstream *st = s->st;
    if (st->destroyed || st->local_end || st->dec_headers_done || st->dec_pos != s->idx) {
        return;
    }
    decode_headers_from(st, s->idx + 1);
}

void msm_hs_continue_encoding(struct msm_http_stream *s)
{
    struct hstream *st = s->st;
    if (st->destroyed || st->enc_headers_done || st->enc_pos != s->idx || !st->enc_headers) {
        return;
    }
    struct msm_hdrs *h = st->enc_headers;
    st->enc_headers = NULL;
    encode_headers_from(st, s->idx - 1, h, st->enc_headers_end);
    msm_hdrs_free(h);
}

void msm_hs_send_local_reply(struct msm_http_stream *s, int status, const char *body,
                             const char *details, uint32_t flags)
{
    msm_hcm_local_reply(s->st, s->idx - 1, status, body, details, flags);
}

void msm_hs_encode_headers(struct msm_http_stream *s, struct msm_hdrs *h, bool end_stream)
{
    struct hstream *st = s->st;
    if (st->destroyed || st->resp_started) {
        return;
    }
    st->resp_started = true;
    encode_headers_from(st, s->idx - 1, h, end_stream);
}

void msm_hs_encode_data(struct msm_http_stream *s, struct msm_buf *data, bool end_stream)
{
    struct hstream *st = s->st;
    if (st->destroyed || !st->resp_started) {
        msm_buf_drain(data, data->len);
        return;
    }
    encode_data_from(st, s->idx - 1, data, end_stream);
}

void msm_hs_encode_trailers(struct msm_http_stream *s, struct msm_hdrs *t)
{
    struct hstream *st = s->st;
    if (st->destroyed || !st->resp_started) {
        return;
    }
    encode_trailers_from(st, s->idx - 1, t);
}

void msm_hs_encode_100_continue(struct msm_http_stream *s)
{
    struct hstream *st = s->st;
    if (!st->destroyed && st->cs && !st->resp_started) {
        st->cs->codec->ops->encode_100_continue(st->cs);
    }
}

void msm_hs_reset(struct msm_http_stream *s)
{
    if (!s->st->destroyed) {
        msm_hcm_stream_destroy(s->st, true);
    }
}

void msm_hs_read_disable(struct msm_http_stream *s, bool disable)
{
    struct hstream *st = s->st;
    if (st->destroyed || !st->cs) {
        return;
    }
    st->read_disabled += disable ? 1 : -1;
    st->cs->codec->ops->read_disable(st->cs, disable);
}

struct msm_hstream_info *msm_hs_info(struct msm_http_stream *s)
{
    return &s->st->info;
}

struct msm_worker *msm_hs_worker(struct msm_http_stream *s)
{
    return s->st->hc->w;
}

struct ev_loop *msm_hs_loop(struct msm_http_stream *s)
{
    return s->st->hc->loop;
}

const struct msm_conn *msm_hs_conn(struct msm_http_stream *s)
{
    return msm_filter_conn(s->st->hc->h);
}

int msm_hs_protocol(struct msm_http_stream *s)
{
    return (int)s->st->proto;
}

uint32_t msm_hs_buffer_limit(struct msm_http_stream *s)
{
    const struct msm_route *r = s->st->route;
    if (r && r->buffer_limit) {
        return r->buffer_limit;
    }
    if (r && r->vh && r->vh->buffer_limit) {
        return r->vh->buffer_limit;
    }
    return s->st->hc->cfg->buffer_limit;
}

const char *msm_hs_stat_prefix(struct msm_http_stream *s)
{
    return s->st->hc->cfg->stat_prefix;
}

bool msm_hs_is_grpc(struct msm_http_stream *s)
{
    return s->st->is_grpc;
}
