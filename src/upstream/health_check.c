#include "upstream/health_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/core/v3/health_check.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbutil.h"
#include "net/conn.h"
#include "upstream/cluster.h"
#include "upstream/priority.h"

struct hc_host;

struct msm_hc {
    struct ev_loop *loop;
    const struct msm_hc_cfg *cfg;
    struct msm_hc_stats stats;
    char *name;
    struct hc_host **h;
    int n;
};

/* One checked host: a timer between checks, at most one check connection in flight. */
struct hc_host {
    struct msm_hc *hc;
    struct msm_host *host; /* reference */
    ev_timer timer;
    struct msm_conn *c;
    uint32_t ok_streak, fail_streak;
    int recv_pos; /* next expected payload */
    bool checking;
};

/* ---- config -------------------------------------------------------------------------------- */

static int payload(const Envoy__Config__Core__V3__HealthCheck__Payload *p, uint8_t **out,
                   size_t *len, struct msm_err *err)
{
    if (p->payload_case == ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__PAYLOAD__PAYLOAD_BINARY) {
        *out = msm_xmalloc(p->binary.len + 1);
        memcpy(*out, p->binary.data, p->binary.len);
        *len = p->binary.len;
        return 0;
    }
    if (p->payload_case != ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__PAYLOAD__PAYLOAD_TEXT) {
        return msm_err_set(err, "payload: text or binary is required");
    }
    /* text is hex */
    size_t n = strlen(p->text);
    if (n % 2) {
        return msm_err_set(err, "payload.text: odd number of hex digits");
    }
    *out = msm_xmalloc(n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(p->text + 2 * i, "%2x", &v) != 1) {
            free(*out);
            *out = NULL;
            return msm_err_set(err, "payload.text: not hex");
        }
        (*out)[i] = (uint8_t)v;
    }
    *len = n / 2;
    return 0;
}

void msm_hc_cfg_free(struct msm_hc_cfg *c)
{
    if (!c) {
        return;
    }
    free(c->send);
    for (int i = 0; i < c->n_recv; i++) {
        free(c->recv[i]);
    }
    free(c->recv);
    free(c->recv_len);
    free(c);
}

static int ms(const Google__Protobuf__Duration *d, int64_t dflt, uint32_t *out, const char *f,
              struct msm_err *err)
{
    int64_t v = msm_pb_duration_ms(d, dflt);
    if (v < 0 || v > UINT32_MAX) {
        return msm_err_set(err, "%s: out of range", f);
    }
    *out = (uint32_t)v;
    return 0;
}

int msm_hc_cfg_from_proto(const void *const *checks, size_t n, struct msm_hc_cfg **out,
                          struct msm_err *err)
{
    *out = NULL;
    if (!n) {
        return 0;
    }
    if (n > 1) {
        return msm_err_set(err, "health_checks: only one health check per cluster is supported");
    }
    const Envoy__Config__Core__V3__HealthCheck *p = checks[0];
    if (p->health_checker_case !=
        ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_TCP_HEALTH_CHECK) {
        return msm_err_set(err, "health_checks[0]: only tcp_health_check is supported yet");
    }
    if (p->alt_port || p->tls_options || p->transport_socket_match_criteria) {
        return msm_err_set(err, "health_checks[0]: alt_port/tls_options/"
                                "transport_socket_match_criteria are not supported");
    }
    struct msm_hc_cfg *c = MSM_NEW(struct msm_hc_cfg);
    if (!p->timeout || !p->interval) {
        msm_err_set(err, "health_checks[0]: timeout and interval are required");
        goto fail;
    }
    if (ms(p->timeout, 0, &c->timeout_ms, "timeout", err) < 0 ||
        ms(p->interval, 0, &c->interval_ms, "interval", err) < 0 ||
        ms(p->interval_jitter, 0, &c->jitter_ms, "interval_jitter", err) < 0 ||
        ms(p->unhealthy_interval, c->interval_ms, &c->unhealthy_interval_ms,
           "unhealthy_interval", err) < 0) {
        goto fail;
    }
    if (!c->timeout_ms || !c->interval_ms) {
        msm_err_set(err, "health_checks[0]: timeout and interval must be positive");
        goto fail;
    }
    c->unhealthy_threshold = msm_pb_u32(p->unhealthy_threshold, 0);
    c->healthy_threshold = msm_pb_u32(p->healthy_threshold, 0);
    if (!c->unhealthy_threshold || !c->healthy_threshold) {
        msm_err_set(err, "health_checks[0]: unhealthy_threshold and healthy_threshold are "
                         "required");
        goto fail;
    }
    const Envoy__Config__Core__V3__HealthCheck__TcpHealthCheck *t = p->tcp_health_check;
    if (t->proxy_protocol_config) {
        msm_err_set(err, "tcp_health_check.proxy_protocol_config: not supported");
        goto fail;
    }
    if (t->send && payload(t->send, &c->send, &c->send_len, err) < 0) {
        msm_err_prefix(err, "tcp_health_check.send");
        goto fail;
    }
    c->recv = msm_xcalloc(t->n_receive + 1, sizeof(uint8_t *));
    c->recv_len = msm_xcalloc(t->n_receive + 1, sizeof(size_t));
    for (size_t i = 0; i < t->n_receive; i++) {
        if (payload(t->receive[i], &c->recv[i], &c->recv_len[i], err) < 0) {
            msm_err_prefix(err, "tcp_health_check.receive[%zu]", i);
            goto fail;
        }
        c->n_recv = (int)i + 1;
    }
    *out = c;
    return 0;
fail:
    msm_hc_cfg_free(c);
    return MSM_EINVAL;
}

/* ---- checking ------------------------------------------------------------------------------ */

static void schedule(struct hc_host *h)
{
    const struct msm_hc_cfg *c = h->hc->cfg;
    bool healthy = !atomic_load(&h->host->hc_unhealthy);
    double s = (healthy ? c->interval_ms : c->unhealthy_interval_ms) / 1000.0;
    if (c->jitter_ms) {
        s += (double)(msm_random() % c->jitter_ms) / 1000.0;
    }
    ev_timer_stop(h->hc->loop, &h->timer);
    ev_timer_set(&h->timer, s, 0);
    ev_timer_start(h->hc->loop, &h->timer);
}

static void update_healthy_gauge(struct msm_hc *hc)
{
    uint64_t n = 0;
    for (int i = 0; i < hc->n; i++) {
        n += !atomic_load(&hc->h[i]->host->hc_unhealthy);
    }
    msm_stat_set(hc->stats.healthy, n);
}

static void result(struct hc_host *h, bool ok, bool network)
{
    struct msm_hc *hc = h->hc;
    char a[MSM_ADDRSTRLEN];
    msm_address_str(&h->host->addr, a, sizeof(a));
    if (ok) {
        msm_stat_inc(hc->stats.success);
        h->fail_streak = 0;
        if (++h->ok_streak >= hc->cfg->healthy_threshold &&
            atomic_exchange(&h->host->hc_unhealthy, false)) {
            msm_log(MSM_LOG_INFO, MSM_LC_HC, "cluster '%s': host %s is healthy", hc->name, a);
            msm_health_changed();
        }
    } else {
        msm_stat_inc(hc->stats.failure);
        if (network) {
            msm_stat_inc(hc->stats.network_failure);
        }
        h->ok_streak = 0;
        if (++h->fail_streak >= hc->cfg->unhealthy_threshold &&
            !atomic_exchange(&h->host->hc_unhealthy, true)) {
            msm_log(MSM_LOG_INFO, MSM_LC_HC, "cluster '%s': host %s is unhealthy", hc->name, a);
            msm_health_changed();
        }
    }
    update_healthy_gauge(hc);
    h->checking = false;
    if (h->c) {
        struct msm_conn *c = h->c;
        h->c = NULL;
        msm_conn_set_handler(c, NULL, NULL);
        msm_conn_close(c, MSM_CLOSE_NOFLUSH);
    }
    schedule(h);
}

static void hc_on_read(struct msm_conn *c, void *ctx, bool end_stream)
{
    struct hc_host *h = ctx;
    const struct msm_hc_cfg *cfg = h->hc->cfg;
    /* Expected payloads must appear in order; bytes between them are ignored. */
    while (h->recv_pos < cfg->n_recv) {
        ssize_t at = msm_buf_search(&c->in, cfg->recv[h->recv_pos], cfg->recv_len[h->recv_pos],
                                    0);
        if (at < 0) {
            break;
        }
        msm_buf_drain(&c->in, (size_t)at + cfg->recv_len[h->recv_pos]);
        h->recv_pos++;
    }
    if (h->recv_pos == cfg->n_recv) {
        result(h, true, false);
        return;
    }
    if (end_stream || c->in.len > 64 * 1024) {
        result(h, false, false);
    }
}

static void hc_on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev)
{
    struct hc_host *h = ctx;
    if (h->c != c) {
        return;
    }
    if (ev == MSM_CONN_CONNECTED) {
        const struct msm_hc_cfg *cfg = h->hc->cfg;
        if (cfg->send_len) {
            struct msm_buf b;
            msm_buf_init(&b);
            msm_buf_append(&b, cfg->send, cfg->send_len);
            msm_conn_write(c, &b, false);
            msm_buf_deinit(&b);
        }
        if (!cfg->n_recv) {
            result(h, true, false); /* connect-only check */
        }
        return;
    }
    h->c = NULL; /* closed: the connection is gone */
    result(h, false, true);
}

static const struct msm_conn_handler hc_handler = {
    .on_read = hc_on_read,
    .on_event = hc_on_event,
};

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct hc_host *h = MSM_CONTAINER_OF(t, struct hc_host, timer);
    if (h->checking) {
        /* The check did not finish within timeout. */
        result(h, false, true);
        return;
    }
    msm_stat_inc(h->hc->stats.attempt);
    h->checking = true;
    h->recv_pos = 0;
    int rc = 0;
    h->c = msm_conn_connect(loop, &h->host->addr, NULL, h->hc->cfg->timeout_ms, &hc_handler, h,
                            &rc);
    if (!h->c) {
        result(h, false, true);
        return;
    }
    msm_conn_enable_half_close(h->c, true);
    msm_conn_start_reading(h->c);
    ev_timer_set(t, h->hc->cfg->timeout_ms / 1000.0, 0);
    ev_timer_start(loop, t);
}

static void hc_host_free(struct hc_host *h)
{
    ev_timer_stop(h->hc->loop, &h->timer);
    if (h->c) {
        msm_conn_set_handler(h->c, NULL, NULL);
        msm_conn_close(h->c, MSM_CLOSE_NOFLUSH);
    }
    msm_host_unref(h->host);
    free(h);
}

struct msm_hc *msm_hc_new(struct ev_loop *loop, const struct msm_hc_cfg *cfg, const char *stat_name,
                          struct msm_stats_store *st)
{
    struct msm_hc *hc = MSM_NEW(struct msm_hc);
    hc->loop = loop;
    hc->cfg = cfg;
    hc->name = msm_xstrdup(stat_name);
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "cluster.%s.health_check.", stat_name);
    msm_hc_stats_init(st, prefix, &hc->stats);
    return hc;
}

void msm_hc_free(struct msm_hc *hc)
{
    if (!hc) {
        return;
    }
    for (int i = 0; i < hc->n; i++) {
        hc_host_free(hc->h[i]);
    }
    free(hc->h);
    msm_hc_stats_deinit(&hc->stats);
    free(hc->name);
    free(hc);
}

void msm_hc_set_hosts(struct msm_hc *hc, const struct msm_host_set *hs)
{
    struct hc_host **nv = msm_xcalloc((size_t)hs->n + 1, sizeof(*nv));
    for (int i = 0; i < hs->n; i++) {
        for (int j = 0; j < hc->n; j++) {
            if (hc->h[j] && hc->h[j]->host == hs->hosts[i]) {
                nv[i] = hc->h[j];
                hc->h[j] = NULL;
                break;
            }
        }
        if (!nv[i]) {
            struct hc_host *h = MSM_NEW(struct hc_host);
            h->hc = hc;
            h->host = hs->hosts[i];
            atomic_fetch_add(&h->host->refs, 1);
            ev_timer_init(&h->timer, on_timer, 0, 0);
            /* First check soon, spread over the interval to avoid a burst. */
            ev_timer_set(&h->timer, (double)(msm_random() % (hc->cfg->interval_ms + 1)) / 1000.0 / 4,
                         0);
            ev_timer_start(hc->loop, &h->timer);
            nv[i] = h;
        }
    }
    for (int j = 0; j < hc->n; j++) {
        if (hc->h[j]) {
            hc_host_free(hc->h[j]);
        }
    }
    free(hc->h);
    hc->h = nv;
    hc->n = hs->n;
    update_healthy_gauge(hc);
}
