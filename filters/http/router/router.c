/* envoy.filters.http.router, per request.
 *
 * A request goes through attempts. Each attempt: pick a host, get a stream from the host's
 * pool, send the headers, the body received so far and then the rest as it arrives, wait for
 * the response. A response (or a reset) may be retried while nothing went downstream yet and
 * the retry policy allows it: the attempt is dropped, a jittered exponential backoff runs, and a
 * new attempt re-sends the buffered request (bodies over the buffer limit are not retried).
 *
 * Timers: the route timeout starts when the downstream request is complete; the per-try
 * timeout when an attempt's request is complete upstream; backoff between attempts.
 *
 * Lifetime: the router lives as long as its stream (freed by the connection manager, deferred).
 * An attempt is freed through msm_defer, since its codec callbacks may be on the stack when the
 * stream is destroyed. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer/recycle.h"
#include "common/alloc.h"
#include "common/fmt.h"
#include "common/log.h"
#include "event/deferred.h"
#include "event/loop.h"
#include "event/tqueue.h"
#include "filters/http/router/router.h"
#include "filters/http/router/upgrade.h"
#include "filters/http/router/shadow.h"
#include "http/codec.h"
#include "http/pool.h"
#include "http/route.h"
#include "net/conn.h"
#include "server/worker.h"
#include "upstream/cluster.h"

/* Bounded copy of the string <src> into <dst> (<n> bytes), truncating as snprintf would: the
 * per-request stream-info fields are filled with this rather than snprintf("%s"). */
static void copy_str(char *dst, size_t n, const char *src)
{
    size_t len = strnlen(src, n - 1);
    memcpy(dst, src, len);
    dst[len] = '\0';
}

struct router;

struct attempt {
    struct router *r; /* NULL once the router let go */
    struct ev_loop *loop;
    struct msm_pool_req *pending;
    struct msm_upconn *uc;
    struct msm_hstream *cs;
    struct msm_host *host; /* reference */
    bool rq_reserved;
    bool req_end_sent;
    bool resp_headers;
    bool resp_end;
    bool up_read_disabled;
    bool retriable;      /* the response asked for a retry that could not happen */
    int status;
};

struct router {
    struct msm_http_stream *s;
    const struct msm_router_config *cfg;
    struct ev_loop *loop;
    const struct msm_route *route;
    struct msm_cluster *cluster; /* reference */
    enum msm_http_proto proto;
    struct msm_hdrs req;
    bool forwarding; /* headers were accepted for forwarding */
    /* Request body: everything (when retries may re-send it) or the part not sent yet. */
    struct msm_buf body;
    bool retain;
    struct msm_hdrs *trailers;
    struct msm_shadow *shadow; /* mirrors still fed (shadow.c), until the request is complete */
    bool down_end;
    bool down_paused;
    /* Policy for this request */
    uint32_t retry_on;
    uint32_t retries_left;
    uint32_t per_try_ms;
    uint32_t timeout_ms;
    const struct msm_retry_policy *pol;
    uint32_t hdr_codes[8];
    int n_hdr_codes;
    bool previous_hosts;
    bool timeout_retry; /* the retry under way follows a per-try timeout */
    uint32_t host_attempts;
    uint64_t hash;              /* the route's hash_policy for a hashing cluster, 0 = none */
    struct msm_hdrs *set_cookie; /* cookies the hash policy generated, for the response */
    /* Attempts */
    struct attempt *a;
    uint32_t attempts;
    struct msm_host **tried; /* tried_first, or the heap past its size (retries) */
    int n_tried;
    struct msm_host *tried_first[2];
    bool retry_reserved;
    struct msm_tq_entry timeout; /* the route timeout: a timeout queue entry, no heap update */
    ev_timer per_try, backoff;
    ev_timer max_dur; /* the cluster's max_stream_duration, for the attempt in flight */
    double start, try_start;
    bool resp_started;
    enum msm_pool_kind tunnel; /* upgrade / CONNECT (upgrade.c): MSM_POOL_PLAIN otherwise */
    bool tunnel_up;            /* the answer opened it: data flows until both half-close */
    bool finished;
    bool destroyed;
};

static void start_attempt(struct router *r);
static void attempt_drop(struct attempt *a, bool reset);
static void send_body_to_attempt(struct router *r);

/* ---- helpers ------------------------------------------------------------------------------------ */

/* <v>: a header's value or NULL. The callers look up constant names with msm_hdrs_get, whose
 * length and filter bit fold (absent, the usual case, costs a bit test). */
static uint32_t header_u32(const char *v, bool *found)
{
    uint64_t x = 0;
    *found = v && msm_http_parse_u64(v, strlen(v), &x) && x <= UINT32_MAX;
    return *found ? (uint32_t)x : 0;
}

static struct msm_cluster_http_stats *hstats(struct router *r)
{
    return &r->cluster->sh->http.stats;
}

static void start_timer(struct router *r, ev_timer *t, uint32_t ms)
{
    ev_timer_stop(r->loop, t);
    ev_timer_set(t, ms / 1000.0, 0);
    ev_timer_start(r->loop, t);
}

/* Every header operation of the route, most or least specific first per the config. */
static void apply_ops(struct router *r, struct msm_hdrs *h, bool request)
{
    const struct msm_route *rt = r->route;
    const struct msm_route_config *rc = msm_hs_route_config(r->s);
    int wc = msm_hs_route_wc(r->s);
    const struct msm_header_ops *lv[4];
    int n = 0;
    if (wc >= 0) {
        lv[n++] = request ? &rt->wc[wc].req : &rt->wc[wc].resp;
    }
    lv[n++] = request ? &rt->req : &rt->resp;
    lv[n++] = request ? &rt->vh->req : &rt->vh->resp;
    if (rc) {
        lv[n++] = request ? &rc->req : &rc->resp;
    }
    int n_ops = 0;
    for (int i = 0; i < n; i++) {
        n_ops += lv[i]->n_add + lv[i]->n_remove;
    }
    if (!n_ops) {
        return; /* the common case: nothing to format the value context for */
    }
    const struct msm_conn *dc = msm_hs_conn(r->s);
    char remote[64] = "", local[64] = "", up[64] = "";
    if (dc) {
        msm_address_str(&dc->remote, remote, sizeof(remote));
        msm_address_str(&dc->local, local, sizeof(local));
    }
    if (r->a && r->a->uc) {
        copy_str(up, sizeof(up), msm_upconn_peer(r->a->uc));
    }
    struct msm_hv_ctx vc = {.downstream_remote = remote, .downstream_local = local,
                            .upstream_remote = up,
                            .protocol = msm_http_proto_name(msm_hs_protocol(r->s)),
                            .request_id = msm_hdrs_get(msm_hs_request_headers(r->s),
                                                       "x-request-id")};
    bool most_specific_wins = rc && rc->most_specific_wins;
    for (int i = 0; i < n; i++) {
        int k = most_specific_wins ? n - 1 - i : i;
        msm_header_ops_apply(lv[k], h, &vc);
    }
}

/* ---- local replies ------------------------------------------------------------------------------ */

static void finish(struct router *r)
{
    r->finished = true;
    msm_tq_stop(&r->timeout);
    msm_timer_stop(r->loop, &r->per_try);
    msm_timer_stop(r->loop, &r->backoff);
    msm_timer_stop(r->loop, &r->max_dur);
}

static void reply(struct router *r, int status, const char *body, const char *details,
                  uint32_t flags)
{
    finish(r);
    msm_hs_send_local_reply(r->s, status, body, details, flags);
}

static const char *reset_text(enum msm_http_reset why)
{
    switch (why) {
    case MSM_RESET_CONNECTION_FAILURE: return "connection failure";
    case MSM_RESET_CONNECTION_TERMINATION: return "connection termination";
    case MSM_RESET_REFUSED: return "remote refused stream reset";
    case MSM_RESET_OVERFLOW: return "overflow";
    case MSM_RESET_PROTOCOL_ERROR: return "protocol error";
    case MSM_RESET_LOCAL: return "local reset";
    default: return "remote reset";
    }
}

static uint32_t reset_flag(enum msm_http_reset why)
{
    switch (why) {
    case MSM_RESET_CONNECTION_FAILURE: return MSM_RF(UPSTREAM_CONNECTION_FAILURE);
    case MSM_RESET_CONNECTION_TERMINATION: return MSM_RF(UPSTREAM_CONNECTION_TERMINATION);
    case MSM_RESET_OVERFLOW: return MSM_RF(UPSTREAM_OVERFLOW);
    case MSM_RESET_PROTOCOL_ERROR: return MSM_RF(UPSTREAM_PROTOCOL_ERROR);
    case MSM_RESET_LOCAL: return MSM_RF(LOCAL_RESET);
    default: return MSM_RF(UPSTREAM_REMOTE_RESET);
    }
}

/* ---- retries ---------------------------------------------------------------------------------- */

static bool code_retriable(const struct router *r, int status)
{
    uint32_t on = r->retry_on;
    if ((on & MSM_RETRY_5XX) && status >= 500 && status < 600) {
        return true;
    }
    if ((on & MSM_RETRY_GATEWAY_ERROR) && status >= 502 && status <= 504) {
        return true;
    }
    if ((on & MSM_RETRY_RETRIABLE_4XX) && status == 409) {
        return true;
    }
    if (on & MSM_RETRY_RETRIABLE_STATUS_CODES) {
        for (int i = 0; r->pol && i < r->pol->n_codes; i++) {
            if ((int)r->pol->codes[i] == status) {
                return true;
            }
        }
        for (int i = 0; i < r->n_hdr_codes; i++) {
            if ((int)r->hdr_codes[i] == status) {
                return true;
            }
        }
    }
    return false;
}

static bool grpc_retriable(const struct router *r, const struct msm_hdrs *h)
{
    const char *gs = msm_hdrs_get(h, "grpc-status");
    if (!gs) {
        return false;
    }
    int code = atoi(gs);
    uint32_t on = r->retry_on;
    return (code == 1 && (on & MSM_RETRY_GRPC_CANCELLED)) ||
           (code == 4 && (on & MSM_RETRY_GRPC_DEADLINE_EXCEEDED)) ||
           (code == 8 && (on & MSM_RETRY_GRPC_RESOURCE_EXHAUSTED)) ||
           (code == 13 && (on & MSM_RETRY_GRPC_INTERNAL)) ||
           (code == 14 && (on & MSM_RETRY_GRPC_UNAVAILABLE));
}

static bool reset_retriable(const struct router *r, enum msm_http_reset why)
{
    uint32_t on = r->retry_on;
    if (why == MSM_RESET_OVERFLOW) {
        return false;
    }
    if (on & (MSM_RETRY_5XX | MSM_RETRY_GATEWAY_ERROR | MSM_RETRY_RESET)) {
        return true;
    }
    if ((on & MSM_RETRY_CONNECT_FAILURE) && why == MSM_RESET_CONNECTION_FAILURE) {
        return true;
    }
    if ((on & MSM_RETRY_REFUSED_STREAM) && why == MSM_RESET_REFUSED) {
        return true;
    }
    return (on & MSM_RETRY_RESET_BEFORE_REQUEST) && r->a && !r->a->req_end_sent &&
           !r->a->resp_headers;
}

static void on_backoff(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct router *r = MSM_CONTAINER_OF(t, struct router, backoff);
    if (r->retry_reserved) {
        msm_cluster_retry_release(r->cluster);
        r->retry_reserved = false;
    }
    if (!r->destroyed && !r->finished) {
        start_attempt(r);
    }
}

/* Try to schedule another attempt. false when no retry is allowed (then the caller forwards
 * what it has). <why> was retriable. */
static bool try_retry(struct router *r)
{
    r->timeout_retry = false;
    if (r->resp_started || r->finished || !r->retain) {
        if (!r->retain) {
            msm_stat_inc(r->cluster->sh->stats.retry_or_shadow_abandoned);
        }
        return false;
    }
    if (!r->retries_left) {
        msm_stat_inc(hstats(r)->upstream_rq_retry_limit_exceeded);
        msm_hs_info(r->s)->flags |= MSM_RF(UPSTREAM_RETRY_LIMIT_EXCEEDED);
        return false;
    }
    if (!msm_cluster_retry_reserve(r->cluster)) {
        return false;
    }
    r->retry_reserved = true;
    r->retries_left--;
    msm_stat_inc(hstats(r)->upstream_rq_retry);
    msm_stat_inc(hstats(r)->upstream_rq_retry_backoff_exponential);
    uint32_t base = r->pol ? r->pol->backoff_base_ms : 25;
    uint32_t max = r->pol ? r->pol->backoff_max_ms : 250;
    uint64_t interval = base;
    for (uint32_t i = 1; i < r->attempts && interval < max; i++) {
        interval *= 2;
    }
    if (interval > max) {
        interval = max;
    }
    uint32_t ms = (uint32_t)(msm_random() % (interval ? interval : 1));
    msm_timer_stop(r->loop, &r->per_try);
    start_timer(r, &r->backoff, ms);
    return true;
}

/* ---- attempts ---------------------------------------------------------------------------------- */

static void attempt_free(void *p)
{
    struct attempt *a = p;
    msm_host_unref(a->host);
    msm_recycle_free(a, sizeof(*a));
}

/* Let go of attempt <a>: cancel its pool request or reset/release its stream, release its
 * breakers. <reset> resets a stream that did not finish both ways. */
static void attempt_drop(struct attempt *a, bool reset)
{
    struct router *r = a->r;
    if (a->pending) {
        msm_pool_cancel(a->pending);
        a->pending = NULL;
    }
    if (a->cs) {
        struct msm_hstream *cs = a->cs;
        a->cs = NULL;
        if (reset || !(a->req_end_sent && a->resp_end)) {
            if (r) {
                msm_stat_inc(hstats(r)->upstream_rq_tx_reset);
            }
            cs->codec->ops->reset(cs);
        }
        cs->codec->ops->release(cs);
    }
    if (a->host) {
        atomic_fetch_sub(&a->host->active_rq, 1);
    }
    if (r && a->rq_reserved) {
        msm_cluster_rq_release(r->cluster);
        msm_stat_dec(r->cluster->sh->stats.upstream_rq_active);
        a->rq_reserved = false;
    }
    if (r && r->a == a) {
        r->a = NULL;
        msm_timer_stop(r->loop, &r->max_dur);
    }
    a->r = NULL;
    msm_defer(a->loop, attempt_free, a);
}

/* The response ended: count the attempt (before the response end reaches the client, which
 * may destroy the stream). */
static void count_done(struct router *r)
{
    msm_stat_record(hstats(r)->upstream_rq_time,
                    (uint64_t)((ev_now(r->loop) - r->try_start) * 1000.0));
    if (r->attempts > 1 && !(r->a && r->a->retriable)) {
        msm_stat_inc(hstats(r)->upstream_rq_retry_success);
    }
}

/* Both directions are done: release the upstream stream (the connection is reusable). */
static void attempt_complete(struct attempt *a)
{
    struct router *r = a->r;
    if (!r || r->a != a || !a->resp_end || !a->req_end_sent) {
        return;
    }
    attempt_drop(a, false);
}

/* Envoy's details of an upstream reset, "<base>{<reset reason>[,<transport failure>]}" with
 * spaces as '_' ("upstream_reset_before_response_started{connection_failure,delayed_connect_
 * error:_Connection_refused}"), built in <info>'s buffer. */
static const char *reset_details(struct msm_hstream_info *info, const char *base,
                                 enum msm_http_reset why, const char *transport)
{
    char *d = info->details_buf;
    snprintf(d, sizeof(info->details_buf), "%s{%s%s%s}", base, reset_text(why),
             transport ? "," : "", transport ? transport : "");
    for (char *p = d; *p; p++) {
        *p = *p == ' ' ? '_' : *p;
    }
    return d;
}

/* The attempt failed before a response went downstream: retry, or answer. */
static void attempt_failed(struct router *r, enum msm_http_reset why, const char *detail)
{
    struct msm_hstream_info *info = msm_hs_info(r->s);
    if (r->a) {
        if (r->a->host) {
            msm_outlier_report(r->cluster, r->a->host, MSM_OUTLIER_LOCAL_FAILURE);
        }
        attempt_drop(r->a, true);
    }
    if (r->resp_started) {
        /* Flagged either way (Envoy's onUpstreamAbort): a tunnel's UC/UF makes the connection
         * manager reset an HTTP/2 CONNECT with CONNECT_ERROR. */
        info->flags |= reset_flag(why);
        info->details = reset_details(info, "upstream_reset_after_response_started", why, NULL);
        msm_stat_inc(r->cfg->stats.rq_reset_after_downstream_response_started);
        finish(r);
        msm_hs_reset(r->s);
        return;
    }
    if (reset_retriable(r, why) && try_retry(r)) {
        return;
    }
    info->flags |= reset_flag(why);
    if (why == MSM_RESET_CONNECTION_FAILURE && detail) {
        snprintf(info->upstream_failure, sizeof(info->upstream_failure), "%s%s",
                 strncmp(detail, "delayed connect error", 21) ? "delayed connect error: " : "",
                 detail);
    }
    char body[256];
    if (why == MSM_RESET_CONNECTION_FAILURE && detail) {
        snprintf(body, sizeof(body), "upstream connect error or disconnect/reset before headers. "
                 "reset reason: %s, transport failure reason: %s", reset_text(why), detail);
    } else {
        snprintf(body, sizeof(body), "upstream connect error or disconnect/reset before headers. "
                 "reset reason: %s", reset_text(why));
    }
    reply(r, 503, body,
          reset_details(info, "upstream_reset_before_response_started", why,
                        why == MSM_RESET_CONNECTION_FAILURE && detail ? info->upstream_failure
                                                                      : NULL),
          0);
}

static void up_on_headers(void *ctx, struct msm_hdrs *h, bool end_stream)
{
    struct attempt *a = ctx;
    struct router *r = a->r;
    if (!r) {
        return;
    }
    int status = msm_hdrs_status(h, 0);
    a->resp_headers = true;
    a->status = status;
    a->resp_end = end_stream;
    msm_timer_stop(r->loop, &r->per_try);
    msm_cluster_count_status(r->cluster, status);
    if (status >= 500) {
        msm_outlier_report(r->cluster, a->host,
                           status >= 502 && status <= 504 ? MSM_OUTLIER_GATEWAY : MSM_OUTLIER_5XX);
    } else {
        msm_outlier_report(r->cluster, a->host, MSM_OUTLIER_SUCCESS);
    }
    if (r->tunnel && msm_router_opens_tunnel(&r->req, status)) {
        r->tunnel_up = true; /* no route timeout on a tunnel: the idle timeout applies */
        msm_tq_stop(&r->timeout);
    }
    a->retriable = code_retriable(r, status) || grpc_retriable(r, h);
    if (a->retriable && try_retry(r)) {
        attempt_drop(a, true);
        return;
    }
    for (uint32_t i = 0; r->set_cookie && i < r->set_cookie->n; i++) {
        const struct msm_hdr *sc = &r->set_cookie->v[i];
        msm_hdrs_add(h, "set-cookie", 10, sc->value, sc->vlen);
    }
    apply_ops(r, h, false);
    if (!r->cfg->suppress_envoy_headers) {
        char t[24];
        size_t tl = msm_fmt_u64(t, (uint64_t)((ev_now(r->loop) - r->try_start) * 1000.0));
        msm_hdrs_setn(h, "x-envoy-upstream-service-time", t, tl);
    }
    if (r->route->vh->include_attempt_count_in_response) {
        char n[16];
        snprintf(n, sizeof(n), "%u", r->attempts);
        msm_hdrs_set(h, "x-envoy-attempt-count", n);
    }
    msm_hs_info(r->s)->first_upstream_rx = ev_now(r->loop);
    r->resp_started = true;
    if (end_stream) {
        finish(r);
        count_done(r);
    }
    msm_hs_encode_headers(r->s, h, end_stream);
    attempt_complete(a);
}

static void up_on_data(void *ctx, struct msm_buf *data, bool end_stream)
{
    struct attempt *a = ctx;
    struct router *r = a->r;
    if (!r || !r->resp_started) {
        msm_buf_drain(data, data->len);
        return;
    }
    if (end_stream) {
        a->resp_end = true;
        finish(r);
        count_done(r);
    }
    msm_hs_encode_data(r->s, data, end_stream);
    if (end_stream) {
        attempt_complete(a);
    }
}

static void up_on_trailers(void *ctx, struct msm_hdrs *t)
{
    struct attempt *a = ctx;
    struct router *r = a->r;
    if (!r || !r->resp_started) {
        return;
    }
    a->resp_end = true;
    finish(r);
    count_done(r);
    msm_hs_encode_trailers(r->s, t);
    attempt_complete(a);
}

static void up_on_reset(void *ctx, enum msm_http_reset why)
{
    struct attempt *a = ctx;
    struct router *r = a->r;
    struct msm_hstream *cs = a->cs;
    a->cs = NULL;
    if (cs) {
        cs->codec->ops->release(cs);
    }
    if (!r) {
        return;
    }
    msm_stat_inc(hstats(r)->upstream_rq_rx_reset);
    attempt_failed(r, why, NULL);
}

static void up_on_watermark(void *ctx, bool above)
{
    struct attempt *a = ctx;
    struct router *r = a->r;
    /* The upstream cannot take more request body: stop reading the downstream. */
    if (r && above != r->down_paused) {
        r->down_paused = above;
        msm_hs_read_disable(r->s, above);
    }
}

static const struct msm_hstream_cbs up_cbs = {
    .on_headers = up_on_headers,
    .on_data = up_on_data,
    .on_trailers = up_on_trailers,
    .on_reset = up_on_reset,
    .on_watermark = up_on_watermark,
};

/* Send whatever of the request body this attempt has not got yet. */
static void send_body_to_attempt(struct router *r)
{
    struct attempt *a = r->a;
    if (!a || !a->cs || a->req_end_sent) {
        return;
    }
    struct msm_buf b;
    msm_buf_init(&b);
    if (r->retain) {
        msm_buf_copy(&b, &r->body); /* kept for a retry */
    } else {
        msm_buf_move(&b, &r->body);
    }
    bool end = r->down_end && !r->trailers;
    if (b.len || end) {
        a->req_end_sent = end;
        a->cs->codec->ops->encode_data(a->cs, &b, end);
    }
    msm_buf_deinit(&b);
    if (a->cs && r->down_end && r->trailers && !a->req_end_sent) {
        a->req_end_sent = true;
        a->cs->codec->ops->encode_trailers(a->cs, r->trailers);
    }
}

static void request_sent(struct router *r)
{
    if (r->a && r->a->req_end_sent && msm_hs_info(r->s)->last_upstream_tx < r->try_start) {
        msm_hs_info(r->s)->last_upstream_tx = ev_now(r->loop); /* %REQUEST_TX_DURATION% */
    }
    if (r->a && r->a->req_end_sent && r->per_try_ms && !r->a->resp_headers) {
        start_timer(r, &r->per_try, r->per_try_ms);
    }
}

/* %UPSTREAM_HOST% names the host even when it cannot be reached (UF), as Envoy does. Formatted
 * only when no connection names it at once (on_pool_ready copies the pool's string). */
static void name_host(struct router *r, const struct msm_host *h)
{
    struct msm_hstream_info *info = msm_hs_info(r->s);
    msm_address_str(&h->addr, info->upstream_host, sizeof(info->upstream_host));
}

static void on_pool_ready(void *ctx, struct msm_upconn *uc)
{
    struct attempt *a = ctx;
    struct router *r = a->r;
    a->pending = NULL;
    if (!r) {
        return;
    }
    a->uc = uc;
    if (r->tunnel) {
        msm_upconn_claim_tunnel(uc); /* HTTP/1.1 from an ALPN-negotiating pool: its own */
    }
    a->cs = msm_upconn_new_stream(uc, &up_cbs, a);
    struct msm_hstream_info *info = msm_hs_info(r->s);
    copy_str(info->upstream_host, sizeof(info->upstream_host), msm_upconn_peer(uc));
    /* istio.stats: the identities of the upstream TLS. */
    const struct msm_tls_info *tls = msm_upconn_tls_info(uc);
    const struct msm_address *ula = msm_upconn_local_address(uc);
    info->upstream_local = ula ? *ula : (struct msm_address){0};
    copy_str(info->upstream_peer_san, sizeof(info->upstream_peer_san),
             tls && tls->peer_cert_validated && tls->n_uri_sans ? tls->uri_sans[0] : "");
    copy_str(info->upstream_local_san, sizeof(info->upstream_local_san),
             tls && tls->local_uri_san ? tls->local_uri_san : "");
    msm_stat_inc(r->cluster->sh->stats.upstream_rq_total);
    msm_stat_inc(r->cluster->sh->stats.upstream_rq_active);
    atomic_fetch_add(&a->host->rq_total, 1);
    r->try_start = ev_now(r->loop);
    uint32_t msd = msm_cluster_http_cfg_of(r->cluster->cfg)->max_stream_duration_ms;
    if (msd) {
        start_timer(r, &r->max_dur, msd);
    }
    if (r->attempts > 1 && r->route->vh->include_is_timeout_retry) {
        msm_hdrs_set(&r->req, "x-envoy-is-timeout-retry", r->timeout_retry ? "true" : "false");
    }
    if (r->route->vh->include_attempt_count) {
        char n[16];
        snprintf(n, sizeof(n), "%u", r->attempts);
        msm_hdrs_set(&r->req, "x-envoy-attempt-count", n);
    }
    bool end = r->down_end && !r->body.len && !r->trailers;
    a->req_end_sent = end;
    a->cs->codec->ops->encode_headers(a->cs, &r->req, end);
    if (r->a == a && !end) {
        send_body_to_attempt(r);
    }
    if (r->down_paused && r->a == a && !r->retain) {
        r->down_paused = false;
        msm_hs_read_disable(r->s, false);
    }
    request_sent(r);
}

static void on_pool_failure(void *ctx, enum msm_pool_failure f, const char *detail)
{
    struct attempt *a = ctx;
    struct router *r = a->r;
    a->pending = NULL;
    if (!r) {
        return;
    }
    if (a->host) {
        name_host(r, a->host);
    }
    enum msm_http_reset why = f == MSM_POOL_OVERFLOW ? MSM_RESET_OVERFLOW
                              : f == MSM_POOL_CONNECTION_LOST ? MSM_RESET_CONNECTION_TERMINATION
                                                              : MSM_RESET_CONNECTION_FAILURE;
    if (f == MSM_POOL_CONNECT_TIMEOUT) {
        detail = "delayed connect error: 110";
    }
    attempt_failed(r, why, detail);
}

static const struct msm_pool_cbs pool_cbs = {
    .on_ready = on_pool_ready,
    .on_failure = on_pool_failure,
};

static bool tried(const struct router *r, const struct msm_host *h)
{
    for (int i = 0; i < r->n_tried; i++) {
        if (msm_address_eq(&r->tried[i]->addr, &h->addr)) {
            return true;
        }
    }
    return false;
}

static struct msm_host *pick_host(struct router *r)
{
    struct msm_cluster *c = r->cluster;
    if (c->cfg->type == MSM_CLUSTER_ORIGINAL_DST) {
        const struct msm_conn *dc = msm_hs_conn(r->s);
        return dc ? msm_host_new(&dc->local, NULL, 1) : NULL;
    }
    struct msm_host *h = NULL;
    uint32_t tries = r->previous_hosts && r->n_tried ? r->host_attempts : 1;
    for (uint32_t i = 0; i < tries; i++) {
        h = msm_lb_choose_attempt(c, r->hash, i);
        if (!h || !r->previous_hosts || !tried(r, h)) {
            break;
        }
    }
    if (h) {
        atomic_fetch_add(&h->refs, 1);
    }
    return h;
}

/* upstream_http_protocol_options auto_sni / auto_san_validation: the name the upstream TLS
 * is for, the request's authority without its port (lower-case, brackets off an IPv6
 * literal); NULL when the cluster asks for neither or there is no usable authority. */
static const char *tls_host_name(struct router *r, char *buf, size_t n)
{
    const struct msm_cluster_http_cfg *hc = msm_cluster_http_cfg_of(r->cluster->cfg);
    const char *a = hc->auto_sni || hc->auto_san_validation ? msm_hdrs_get(&r->req, ":authority")
                                                             : NULL;
    if (!a || !a[0]) {
        return NULL;
    }
    const char *end = a + strlen(a);
    if (a[0] == '[') {
        const char *rb = strchr(a, ']');
        if (!rb) {
            return NULL;
        }
        a++;
        end = rb;
    } else {
        const char *colon = strrchr(a, ':');
        if (colon && !strchr(colon + 1, ':')) {
            end = colon;
        }
    }
    size_t l = (size_t)(end - a);
    if (!l || l >= n) {
        return NULL;
    }
    for (size_t i = 0; i < l; i++) {
        buf[i] = (char)tolower((unsigned char)a[i]);
    }
    buf[l] = '\0';
    return buf;
}

static void start_attempt(struct router *r)
{
    struct msm_host *h = pick_host(r);
    if (!h) {
        msm_stat_inc(r->cluster->sh->stats.upstream_cx_none_healthy);
        reply(r, 503, "no healthy upstream", "no_healthy_upstream", MSM_RF(NO_HEALTHY_UPSTREAM));
        return;
    }
    if (!msm_cluster_rq_reserve(r->cluster)) {
        msm_host_unref(h);
        attempt_failed(r, MSM_RESET_OVERFLOW, NULL);
        return;
    }
    struct attempt *a = msm_recycle_calloc(sizeof(*a));
    a->r = r;
    a->loop = r->loop;
    a->host = h;
    a->rq_reserved = true;
    atomic_fetch_add(&h->active_rq, 1);
    r->a = a;
    r->attempts++;
    msm_hs_info(r->s)->attempts = r->attempts;
    msm_hs_info(r->s)->upstream_endpoint = h; /* istio.stats: the endpoint's metadata */
    if (r->n_tried < (int)MSM_ARRAY_SIZE(r->tried_first)) {
        r->tried = r->tried_first;
    } else if (r->tried == r->tried_first) {
        r->tried = msm_xmalloc((size_t)(r->n_tried + 1) * sizeof(*r->tried));
        memcpy(r->tried, r->tried_first, sizeof(r->tried_first));
    } else {
        r->tried = msm_xrealloc(r->tried, (size_t)(r->n_tried + 1) * sizeof(*r->tried));
    }
    atomic_fetch_add(&h->refs, 1);
    r->tried[r->n_tried++] = h;
    const struct msm_hstream_info *hi = msm_hs_info(r->s);
    /* An upgrade or forwarded CONNECT to an HTTP/2 upstream is a stream of the cluster's
     * HTTP/2 pool (extended CONNECT, http2.c), as Envoy does; else a connection of its own.
     * auto_config over TLS: the mixed pool's, as whatever its handshake picks (pool.h). */
    bool own_conn = r->tunnel && !(r->tunnel == MSM_POOL_TUNNEL_HTTP1 &&
                                   (r->proto == MSM_HTTP_2 || msm_pool_alpn_mixed(r->cluster, h)));
    char host[256];
    const char *hn = tls_host_name(r, host, sizeof(host));
    struct msm_pool *p =
        own_conn ? msm_pool_get_tunnel(r->loop, r->cluster, h, r->tunnel, hi->alpn_override,
                                        hi->n_alpn_override, hn)
                  : msm_pool_get_alpn(r->loop, r->cluster, h, r->proto, hi->alpn_override,
                                      hi->n_alpn_override, hn);
    a->pending = msm_pool_request(p, &pool_cbs, a);
    if (a->pending) {
        name_host(r, h); /* waiting; a connection at once names its peer (on_pool_ready) */
    }
}

/* ---- timers ------------------------------------------------------------------------------------- */

static void on_timeout(struct ev_loop *loop, struct msm_tq_entry *t)
{
    (void)loop;
    struct router *r = MSM_CONTAINER_OF(t, struct router, timeout);
    msm_stat_inc(hstats(r)->upstream_rq_timeout);
    if (r->a) {
        if (r->a->host) {
            msm_outlier_report(r->cluster, r->a->host, MSM_OUTLIER_LOCAL_FAILURE);
        }
        attempt_drop(r->a, true);
    }
    if (r->resp_started) {
        finish(r);
        msm_hs_reset(r->s);
        return;
    }
    reply(r, 504, "upstream request timeout", "upstream_response_timeout",
          MSM_RF(UPSTREAM_REQUEST_TIMEOUT));
}

/* The attempt in flight ran out of time (<stat> counted): it is reset, then retried when the
 * policy has one of <retry_bits> (a "timeout retry" for x-envoy-is-timeout-retry when
 * <timeout_retry>), else the client gets <status> or, once the response started, a reset. */
static void attempt_timed_out(struct router *r, struct msm_stat *stat, uint32_t retry_bits,
                              bool timeout_retry, int status, const char *body,
                              const char *details, uint32_t flags)
{
    msm_stat_inc(stat);
    if (r->a) {
        attempt_drop(r->a, true);
    }
    if (!r->resp_started && (r->retry_on & retry_bits) && try_retry(r)) {
        r->timeout_retry = timeout_retry;
        return;
    }
    if (r->resp_started) {
        finish(r);
        msm_hs_reset(r->s);
        return;
    }
    reply(r, status, body, details, flags);
}

static void on_per_try(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct router *r = MSM_CONTAINER_OF(t, struct router, per_try);
    attempt_timed_out(r, hstats(r)->upstream_rq_per_try_timeout,
                      MSM_RETRY_5XX | MSM_RETRY_GATEWAY_ERROR | MSM_RETRY_RESET, true, 504,
                      "upstream request timeout", "upstream_per_try_timeout",
                      MSM_RF(UPSTREAM_REQUEST_TIMEOUT));
}

/* Envoy's UpstreamRequest::onStreamMaxDurationReached: the upstream request lived past the
 * cluster's max_stream_duration; retried as a reset; 408, or 504 once the client's request
 * was complete. */
static void on_max_duration(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct router *r = MSM_CONTAINER_OF(t, struct router, max_dur);
    attempt_timed_out(r, hstats(r)->upstream_rq_max_duration_reached, MSM_RETRY_RESET, false,
                      r->down_end ? 504 : 408, "upstream max stream duration reached",
                      "upstream_max_stream_duration_reached",
                      MSM_RF(UPSTREAM_MAX_STREAM_DURATION_REACHED));
}

/* ---- decoding --------------------------------------------------------------------------------- */

void *msm_router_filter_new(void *config, struct msm_http_stream *s)
{
    struct router *r = msm_recycle_calloc(sizeof(*r));
    r->s = s;
    r->cfg = config;
    r->loop = msm_hs_loop(s);
    msm_hdrs_init(&r->req);
    msm_buf_init(&r->body);
    msm_tq_entry_init(&r->timeout, on_timeout);
    ev_timer_init(&r->per_try, on_per_try, 0, 0);
    ev_timer_init(&r->max_dur, on_max_duration, 0, 0);
    ev_timer_init(&r->backoff, on_backoff, 0, 0);
    r->start = ev_now(r->loop);
    return r;
}

static const char *cluster_name(struct router *r, const struct msm_hdrs *h)
{
    const struct msm_route *rt = r->route;
    switch (rt->kind) {
    case MSM_ROUTE_CLUSTER:
        return rt->cluster;
    case MSM_ROUTE_CLUSTER_HEADER:
        return msm_hdrs_get(h, rt->cluster_header);
    case MSM_ROUTE_WEIGHTED: {
        uint64_t rnd = msm_random();
        if (rt->wc_header) {
            const char *v = msm_hdrs_get(h, rt->wc_header);
            uint64_t x;
            if (v && msm_http_parse_u64(v, strlen(v), &x)) {
                rnd = x;
            }
        }
        int i = msm_route_pick_weighted(rt, rnd);
        msm_hs_set_route_wc(r->s, i);
        return rt->wc[i].cluster_header ? msm_hdrs_get(h, rt->wc[i].cluster_header)
                                        : rt->wc[i].name;
    }
    default:
        return NULL;
    }
}

/* Envoy's Grpc::Common::toGrpcTimeout: milliseconds while they fit in 8 digits, then the
 * largest unit that does. */
static void set_grpc_timeout(struct msm_hdrs *h, uint64_t ms)
{
    static const char units[] = "mSMH";
    int u = 0;
    if (ms > 99999999) {
        ms /= 1000;
        u++;
    }
    while (ms > 99999999) {
        if (units[u] == 'H') {
            ms = 99999999;
            break;
        }
        ms /= 60;
        u++;
    }
    char v[24];
    snprintf(v, sizeof(v), "%llu%c", (unsigned long long)ms, units[u]);
    msm_hdrs_set(h, "grpc-timeout", v);
}

/* Timeouts and retry policy for this request: the route's, overridden by x-envoy-* headers
 * (which are removed before forwarding). */
static void request_policy(struct router *r, struct msm_hdrs *h)
{
    const struct msm_route *rt = r->route;
    bool found;
    r->timeout_ms = rt->has_timeout ? rt->timeout_ms : 15000;
    /* Envoy's old gRPC timeouts (max_grpc_timeout set, no max_stream_duration): the request's
     * grpc-timeout (none: infinity) less the offset, capped unless the cap is 0. */
    bool grpc_old = !rt->new_timeouts && rt->has_max_grpc && msm_hs_is_grpc(r->s);
    if (grpc_old) {
        const char *gt = msm_hdrs_get(h, "grpc-timeout");
        uint64_t g = 0;
        if (!gt || !msm_grpc_timeout_ms(gt, &g)) {
            g = 0;
        }
        if (rt->grpc_timeout_offset_ms && rt->grpc_timeout_offset_ms < g) {
            g -= rt->grpc_timeout_offset_ms;
        }
        if (rt->max_grpc_ms && (!g || g > rt->max_grpc_ms)) {
            g = rt->max_grpc_ms;
        }
        r->timeout_ms = g > UINT32_MAX ? UINT32_MAX : (uint32_t)g;
    }
    uint32_t t = header_u32(msm_hdrs_get(h, "x-envoy-upstream-rq-timeout-ms"), &found);
    if (found) {
        r->timeout_ms = t;
    }
    r->pol = rt->retry;
    r->retry_on = r->pol ? r->pol->retry_on : 0;
    r->retries_left = r->pol ? r->pol->num_retries : 0;
    r->per_try_ms = r->pol ? r->pol->per_try_timeout_ms : 0;
    r->previous_hosts = r->pol && r->pol->previous_hosts;
    r->host_attempts = r->pol ? r->pol->host_selection_max_attempts : 1;
    const char *ro = msm_hdrs_get(h, "x-envoy-retry-on");
    const char *rg = msm_hdrs_get(h, "x-envoy-retry-grpc-on");
    if (ro || rg) {
        uint32_t bits = (ro ? msm_retry_on_parse(ro) : 0) | (rg ? msm_retry_on_parse(rg) : 0);
        r->retry_on |= bits;
        if (!r->pol) {
            r->retries_left = 1;
        }
    }
    uint32_t mr = header_u32(msm_hdrs_get(h, "x-envoy-max-retries"), &found);
    if (found) {
        r->retries_left = mr;
    }
    t = header_u32(msm_hdrs_get(h, "x-envoy-upstream-rq-per-try-timeout-ms"), &found);
    if (found) {
        r->per_try_ms = t;
    }
    const char *codes = msm_hdrs_get(h, "x-envoy-retriable-status-codes");
    for (const char *p = codes; p && *p && r->n_hdr_codes < 8;) {
        while (*p == ' ' || *p == ',') {
            p++;
        }
        int v = atoi(p);
        if (v >= 100 && v < 600) {
            r->hdr_codes[r->n_hdr_codes++] = (uint32_t)v;
        }
        while (*p && *p != ',') {
            p++;
        }
    }
    if (r->per_try_ms && r->timeout_ms && r->per_try_ms >= r->timeout_ms) {
        r->per_try_ms = 0; /* Envoy: a per-try timeout beyond the global one is ignored */
    }
    uint32_t expected = r->per_try_ms ? r->per_try_ms : r->timeout_ms;
    if (grpc_old && expected) {
        set_grpc_timeout(h, expected); /* the upstream learns the deadline it really has */
    }
}

static void build_upstream_request(struct router *r, const struct msm_hdrs *down)
{
    const struct msm_route *rt = r->route;
    struct msm_hdrs *h = &r->req;
    msm_hdrs_copy(h, down);
    /* The router's own request headers: one msm_hdrs_remove per literal, so each name's length
     * and filter bit are constants and an absent one costs a bit test. */
    msm_hdrs_remove(h, "x-envoy-upstream-rq-timeout-ms");
    msm_hdrs_remove(h, "x-envoy-upstream-rq-per-try-timeout-ms");
    msm_hdrs_remove(h, "x-envoy-max-retries");
    msm_hdrs_remove(h, "x-envoy-retry-on");
    msm_hdrs_remove(h, "x-envoy-retry-grpc-on");
    msm_hdrs_remove(h, "x-envoy-retriable-status-codes");
    msm_hdrs_remove(h, "x-envoy-retriable-header-names");
    msm_hdrs_remove(h, "x-envoy-upstream-rq-timeout-alt-response");
    msm_hdrs_remove(h, "x-envoy-hedge-on-per-try-timeout");
    msm_hdrs_remove(h, "x-envoy-expected-rq-timeout-ms");
    const char *path = msm_hdrs_get(h, ":path");
    char *np = path ? msm_route_rewrite_path(rt, path) : NULL;
    if (np) {
        if (!r->cfg->suppress_envoy_headers) {
            msm_hdrs_set(h, "x-envoy-original-path", path);
        }
        msm_hdrs_set(h, ":path", np);
        free(np);
    }
    const char *host = NULL;
    int wc = msm_hs_route_wc(r->s);
    if (wc >= 0 && rt->wc[wc].host_rewrite) {
        host = rt->wc[wc].host_rewrite;
    } else if (rt->host_rewrite) {
        host = rt->host_rewrite;
    } else if (rt->host_rewrite_header) {
        host = msm_hdrs_get(down, rt->host_rewrite_header);
    }
    if (host && host[0]) {
        const char *orig = msm_hdrs_get(h, ":authority");
        if (rt->append_xfh && orig) {
            msm_hdrs_set(h, "x-forwarded-host", orig);
        }
        char *hc = msm_xstrdup(host);
        msm_hdrs_set(h, ":authority", hc);
        free(hc);
    }
    apply_ops(r, h, true);
    if (r->timeout_ms && !r->cfg->suppress_envoy_headers) {
        char t[24];
        size_t tl = msm_fmt_u64(t, r->per_try_ms ? r->per_try_ms : r->timeout_ms);
        msm_hdrs_setn(h, "x-envoy-expected-rq-timeout-ms", t, tl);
    }
}

/* Direct responses and redirects answer from the route. */
static enum msm_hf_status answer_from_route(struct router *r, const struct msm_hdrs *down)
{
    const struct msm_route *rt = r->route;
    struct msm_hdrs h;
    msm_hdrs_init(&h);
    char code[8];
    struct msm_buf b;
    msm_buf_init(&b);
    if (rt->kind == MSM_ROUTE_REDIRECT) {
        msm_stat_inc(r->cfg->stats.rq_redirect);
        snprintf(code, sizeof(code), "%d", rt->redir.status);
        const struct msm_conn *dc = msm_hs_conn(r->s);
        char *loc = msm_route_redirect_location(rt, down, dc && msm_conn_tls_info(dc));
        msm_hdrs_set(&h, ":status", code);
        msm_hdrs_set(&h, "location", loc);
        msm_hdrs_set(&h, "content-length", "0");
        free(loc);
        msm_hs_info(r->s)->details = "via_upstream";
    } else {
        msm_stat_inc(r->cfg->stats.rq_direct_response);
        snprintf(code, sizeof(code), "%d", rt->direct_status);
        msm_hdrs_set(&h, ":status", code);
        char len[24];
        snprintf(len, sizeof(len), "%zu", rt->direct_body_len);
        msm_hdrs_set(&h, "content-length", len);
        if (rt->direct_body_len) {
            msm_hdrs_set(&h, "content-type", "text/plain");
            msm_buf_append(&b, rt->direct_body, rt->direct_body_len);
        }
        msm_hs_info(r->s)->details = "direct_response";
    }
    apply_ops(r, &h, false);
    finish(r);
    r->resp_started = true;
    bool head = !strcmp(msm_hdrs_get(down, ":method"), "HEAD");
    if (head) {
        msm_buf_drain(&b, b.len);
    }
    msm_hs_encode_headers(r->s, &h, b.len == 0);
    if (b.len && !r->destroyed) {
        msm_hs_encode_data(r->s, &b, true);
    }
    msm_buf_deinit(&b);
    msm_hdrs_deinit(&h);
    return MSM_HF_STOP;
}

static void add_set_cookie(void *ctx, const char *value, size_t len)
{
    struct router *r = ctx;
    if (!r->set_cookie) {
        r->set_cookie = msm_hdrs_new();
    }
    msm_hdrs_add(r->set_cookie, "set-cookie", 10, value, len);
}

/* The route's hash_policy on the downstream request as it reached the router (before the
 * route's header operations, as Envoy computes it when it picks the connection pool). Only
 * for a cluster whose balancer uses it: Envoy asks for the hash only then, so only then is a
 * cookie generated. */
static void request_hash(struct router *r, const struct msm_hdrs *h)
{
    const struct msm_conn *dc = msm_hs_conn(r->s);
    struct msm_hash_input in = {.req = h, .remote = dc ? &dc->remote : NULL,
                                .local = dc ? &dc->local : NULL};
    uint64_t x;
    if (msm_hash_policy_eval(&r->route->hash, &in, add_set_cookie, r, &x)) {
        r->hash = x;
    }
}

enum msm_hf_status msm_router_decode_headers(void *f, struct msm_hdrs *h, bool end_stream)
{
    struct router *r = f;
    msm_stat_inc(r->cfg->stats.rq_total);
    r->down_end = end_stream;
    r->route = msm_hs_route(r->s);
    if (!r->route) {
        msm_stat_inc(r->cfg->stats.no_route);
        reply(r, 404, NULL, "route_not_found", MSM_RF(NO_ROUTE_FOUND));
        return MSM_HF_STOP;
    }
    const struct msm_route *rt = r->route;
    if (rt->kind == MSM_ROUTE_DIRECT || rt->kind == MSM_ROUTE_REDIRECT) {
        return answer_from_route(r, h);
    }
    if (rt->kind == MSM_ROUTE_NON_FORWARDING) {
        msm_stat_inc(r->cfg->stats.no_route);
        reply(r, 404, NULL, "route_not_found", MSM_RF(NO_ROUTE_FOUND));
        return MSM_HF_STOP;
    }
    const char *name = cluster_name(r, h);
    struct msm_worker *w = msm_hs_worker(r->s);
    struct msm_cluster *c = name && w->snap ? msm_snapshot_cluster(w->snap, name) : NULL;
    if (!c) {
        msm_stat_inc(r->cfg->stats.no_cluster);
        reply(r, rt->cluster_not_found_code, NULL, "cluster_not_found", MSM_RF(NO_CLUSTER_FOUND));
        return MSM_HF_STOP;
    }
    r->cluster = msm_cluster_ref(c);
    copy_str(msm_hs_info(r->s)->upstream_cluster, sizeof(msm_hs_info(r->s)->upstream_cluster),
             c->cfg->name);
    r->proto = msm_cluster_http_request_proto(msm_cluster_http_cfg_of(c->cfg),
                                              msm_hs_protocol(r->s));
    request_policy(r, h);
    if (rt->hash.n && msm_lb_uses_hash(c)) {
        request_hash(r, h);
    }
    r->tunnel = msm_router_tunnel_kind(rt, h);
    if (r->tunnel) {
        r->retry_on = 0; /* an upgrade or CONNECT is never retried */
        r->retries_left = 0;
        r->per_try_ms = 0;
    }
    build_upstream_request(r, h);
    /* A tunnel is never mirrored (Envoy). Mirrors leave now and get the body as it arrives. */
    r->shadow = r->tunnel ? NULL
                          : msm_shadow_begin(rt->mirrors, h, &r->req, &r->cfg->shadow_stats,
                                             r->s, r->cluster, r->timeout_ms, end_stream);
    r->retain = r->retries_left > 0;
    r->forwarding = true;
    if (end_stream && r->timeout_ms) {
        msm_tq_start(r->loop, &r->timeout, r->timeout_ms);
    }
    start_attempt(r);
    /* CONTINUE: the router is last, and the body must keep coming to it. */
    return MSM_HF_CONTINUE;
}

enum msm_hf_status msm_router_decode_data(void *f, struct msm_buf *data, bool end_stream)
{
    struct router *r = f;
    /* A tunnel's upstream half-closing (finished) leaves the client's direction open. */
    if (!r->forwarding || (r->finished && !r->tunnel_up)) {
        msm_shadow_cancel(&r->shadow); /* the main request ended before its body (Envoy) */
        msm_buf_drain(data, data->len);
        return MSM_HF_STOP;
    }
    if (end_stream) {
        r->down_end = true;
        if (r->timeout_ms && !r->tunnel_up) {
            msm_tq_start(r->loop, &r->timeout, r->timeout_ms);
        }
    }
    uint32_t limit = msm_hs_buffer_limit(r->s);
    msm_shadow_data(&r->shadow, data, end_stream);
    if (r->retain && r->body.len + data->len > limit) {
        /* Too big to replay: no more retries, and what was kept only waits to be sent. */
        r->retain = false;
        msm_stat_inc(r->cluster->sh->stats.retry_or_shadow_abandoned);
        if (r->a && r->a->cs) {
            msm_buf_drain(&r->body, r->body.len); /* the attempt already has all of it */
        }
    }
    msm_buf_move(&r->body, data);
    if (r->a && r->a->cs) {
        send_body_to_attempt(r);
        request_sent(r);
    } else if (!r->retain && r->body.len > limit && !r->down_paused) {
        /* No upstream stream yet: hold the client until there is one. */
        r->down_paused = true;
        msm_hs_read_disable(r->s, true);
    }
    return MSM_HF_STOP;
}

enum msm_hf_status msm_router_decode_trailers(void *f, struct msm_hdrs *t)
{
    struct router *r = f;
    if (!r->forwarding || r->finished) {
        msm_shadow_cancel(&r->shadow);
        return MSM_HF_STOP;
    }
    r->down_end = true;
    r->trailers = msm_hdrs_new();
    msm_hdrs_copy(r->trailers, t);
    msm_shadow_trailers(&r->shadow, t);
    if (r->timeout_ms) {
        msm_tq_start(r->loop, &r->timeout, r->timeout_ms);
    }
    if (r->a && r->a->cs) {
        send_body_to_attempt(r);
        request_sent(r);
    }
    return MSM_HF_STOP;
}

void msm_router_on_watermark(void *f, bool above)
{
    struct router *r = f;
    /* The client reads slowly: stop reading the upstream response. */
    struct attempt *a = r->a;
    if (!a || !a->cs || a->up_read_disabled == above) {
        return;
    }
    a->up_read_disabled = above;
    a->cs->codec->ops->read_disable(a->cs, above);
}

void msm_router_on_destroy(void *f)
{
    struct router *r = f;
    r->destroyed = true;
    msm_shadow_cancel(&r->shadow);
    msm_tq_stop(&r->timeout);
    msm_timer_stop(r->loop, &r->per_try);
    msm_timer_stop(r->loop, &r->backoff);
    msm_timer_stop(r->loop, &r->max_dur);
    if (r->a) {
        struct attempt *a = r->a;
        if (a->up_read_disabled && a->cs) {
            a->up_read_disabled = false;
            a->cs->codec->ops->read_disable(a->cs, false);
        }
        attempt_drop(a, !(a->req_end_sent && a->resp_end));
    }
    if (r->retry_reserved) {
        msm_cluster_retry_release(r->cluster);
        r->retry_reserved = false;
    }
}

void msm_router_filter_free(void *f)
{
    struct router *r = f;
    msm_hdrs_deinit(&r->req);
    msm_buf_deinit(&r->body);
    msm_hdrs_free(r->trailers);
    msm_hdrs_free(r->set_cookie);
    msm_shadow_cancel(&r->shadow);
    for (int i = 0; i < r->n_tried; i++) {
        msm_host_unref(r->tried[i]);
    }
    if (r->tried != r->tried_first) {
        free(r->tried);
    }
    msm_cluster_unref(r->cluster);
    msm_recycle_free(r, sizeof(*r));
}
