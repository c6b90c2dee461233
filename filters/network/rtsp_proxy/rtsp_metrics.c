/* Per-session metrics of the RTSP proxy (see rtsp_private.h, struct rtsp_smetrics): one object
 * per client session and per upstream session, in a process-wide list that GET /rtsp/sessions
 * renders, with a stat block of its own while the config's max_session_stats allows.
 *
 * Stats of a session are named "rtsp.<prefix>.session.<id>.<role>.<stream>.<stat>"; the tag
 * extractors (src/stats/tags.c) turn them into msm_rtsp_session_<stat>{msm_rtsp_prefix,
 * msm_rtsp_session, msm_rtsp_role, msm_rtsp_stream}. They are created on the worker that starts
 * the session (rare, bounded, off the packet path, as the per-stream stats are) and released
 * with the object's last reference: the store removes a stat with its last reference, so a
 * Prometheus scrape after the session ended no longer shows it.
 *
 * Threads: the object is shared by the client's worker and, for a client of a mirror, the hub's
 * worker (which sends its UDP media and reads its RTCP); values are atomics, the reference count
 * is atomic, the list is under its own lock (taken when a session starts or ends and by the
 * admin handler, never per packet).
 */
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "filters/network/rtsp_proxy/rtsp_private.h"

static struct {
    pthread_mutex_t mu;
    struct rtsp_smetrics *head;
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *role_name(enum rtsp_role r)
{
    return r == RTSP_ROLE_UPSTREAM ? "upstream" : "client";
}

struct rtsp_smetrics *rtsp_smetrics_new(struct msm_rtsp_config *cfg, enum rtsp_role role,
                                        const char *id, const char *stream, double now)
{
    struct rtsp_smetrics *m = MSM_NEW(struct rtsp_smetrics);
    atomic_init(&m->refs, 1);
    m->cfg = msm_rtsp_config_ref(cfg);
    m->role = role;
    snprintf(m->id, sizeof(m->id), "%s", id);
    snprintf(m->stream, sizeof(m->stream), "%s", stream);
    m->created = now;
    if (cfg->max_session_stats &&
        atomic_fetch_add(&cfg->session_stats, 1) < cfg->max_session_stats) {
        char prefix[384];
        snprintf(prefix, sizeof(prefix), "%ssession.%s.%s.%s.", cfg->stat_prefix, m->id,
                 role_name(role), m->stream);
        msm_rtsp_session_stats_init(cfg->store, prefix, &m->st);
        if (role == RTSP_ROLE_CLIENT) {
            msm_rtsp_client_session_stats_init(cfg->store, prefix, &m->cst);
        } else {
            msm_rtsp_upstream_session_stats_init(cfg->store, prefix, &m->ust);
        }
        m->has_stats = true;
        msm_stat_inc(cfg->stats.sessions_tracked);
    } else {
        if (cfg->max_session_stats) {
            atomic_fetch_sub(&cfg->session_stats, 1);
        }
        msm_stat_inc(cfg->stats.sessions_untracked);
    }
    pthread_mutex_lock(&reg.mu);
    m->next = reg.head;
    if (reg.head) {
        reg.head->prev = m;
    }
    reg.head = m;
    pthread_mutex_unlock(&reg.mu);
    return m;
}

struct rtsp_smetrics *rtsp_smetrics_ref(struct rtsp_smetrics *m)
{
    if (m) {
        atomic_fetch_add(&m->refs, 1);
    }
    return m;
}

void rtsp_smetrics_unref(struct rtsp_smetrics *m)
{
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1) {
        return;
    }
    /* Out of the list first: the admin handler reads the stats under the list lock. */
    pthread_mutex_lock(&reg.mu);
    if (m->prev) {
        m->prev->next = m->next;
    } else {
        reg.head = m->next;
    }
    if (m->next) {
        m->next->prev = m->prev;
    }
    pthread_mutex_unlock(&reg.mu);
    if (m->has_stats) {
        msm_rtsp_session_stats_deinit(&m->st);
        msm_rtsp_client_session_stats_deinit(&m->cst);
        msm_rtsp_upstream_session_stats_deinit(&m->ust);
        atomic_fetch_sub(&m->cfg->session_stats, 1);
        msm_stat_dec(m->cfg->stats.sessions_tracked);
    }
    msm_rtsp_config_unref(m->cfg);
    free(m);
}

void rtsp_smetrics_set_address(struct rtsp_smetrics *m, const char *addr)
{
    if (!m) {
        return;
    }
    pthread_mutex_lock(&reg.mu);
    snprintf(m->address, sizeof(m->address), "%s", addr);
    pthread_mutex_unlock(&reg.mu);
}

void rtsp_smetrics_add_transport(struct rtsp_smetrics *m, bool tcp)
{
    if (m) {
        atomic_fetch_or(&m->transport, tcp ? RTSP_TRANSPORT_TCP : RTSP_TRANSPORT_UDP);
    }
}

void rtsp_smetrics_tx(struct rtsp_smetrics *m, bool rtcp, uint64_t packets, uint64_t bytes,
                      uint64_t rtx)
{
    if (!m || !m->has_stats || !packets) {
        return;
    }
    if (rtcp) {
        msm_stat_add(m->st.rtcp_tx_packets, packets);
        msm_stat_add(m->st.rtcp_tx_bytes, bytes);
        return;
    }
    msm_stat_add(m->st.rtp_tx_packets, packets);
    msm_stat_add(m->st.rtp_tx_bytes, bytes);
    if (rtx) {
        msm_stat_add(m->st.retransmitted_packets, rtx);
    }
}

void rtsp_smetrics_rx(struct rtsp_smetrics *m, bool rtcp, uint64_t packets, uint64_t bytes,
                      uint64_t rtx)
{
    if (!m || !m->has_stats || !packets) {
        return;
    }
    if (rtcp) {
        msm_stat_add(m->st.rtcp_rx_packets, packets);
        msm_stat_add(m->st.rtcp_rx_bytes, bytes);
        return;
    }
    msm_stat_add(m->st.rtp_rx_packets, packets);
    msm_stat_add(m->st.rtp_rx_bytes, bytes);
    if (rtx) {
        msm_stat_add(m->st.retransmitted_packets, rtx);
    }
}

void rtsp_smetrics_feedback(struct rtsp_smetrics *m, int track, uint32_t clock_rate,
                            const struct msm_rtcp_summary *sum)
{
    if (!m || !m->has_stats) {
        return;
    }
    if (sum->nack_packets) {
        msm_stat_add(m->st.retransmissions_requested, sum->nack_packets);
    }
    if (m->role != RTSP_ROLE_CLIENT || !sum->reports || track < 0 || track >= RTSP_MAX_TRACKS) {
        return;
    }
    /* A client reports each track on its own: the session's loss is their sum, its fraction
     * lost and jitter the worst track's. */
    atomic_store(&m->rep_lost[track], sum->lost);
    atomic_store(&m->rep_fraction[track], sum->fraction);
    uint64_t jus = clock_rate ? (uint64_t)sum->jitter * 1000000u / clock_rate : 0;
    atomic_store(&m->rep_jitter_us[track], jus);
    int64_t lost = 0;
    uint32_t frac = 0;
    uint64_t jit = 0;
    for (int i = 0; i < RTSP_MAX_TRACKS; i++) {
        lost += atomic_load(&m->rep_lost[i]);
        uint32_t f = atomic_load(&m->rep_fraction[i]);
        uint64_t j = atomic_load(&m->rep_jitter_us[i]);
        frac = f > frac ? f : frac;
        jit = j > jit ? j : jit;
    }
    msm_stat_set(m->cst.reported_lost, lost > 0 ? (uint64_t)lost : 0);
    msm_stat_set(m->cst.reported_fraction_lost_permille, (uint64_t)frac * 1000u / 256u);
    msm_stat_set(m->cst.reported_jitter_us, jit);
}

void rtsp_smetrics_setup_done(struct rtsp_smetrics *m, double seconds)
{
    if (!m || atomic_exchange(&m->setup_done, true)) {
        return;
    }
    if (m->has_stats) {
        msm_stat_set(m->st.setup_latency_ms, seconds > 0 ? (uint64_t)(seconds * 1000.0) : 0);
    }
}

/* ---- GET /rtsp/sessions -------------------------------------------------------------------- */

#define J_STAT(n) json_object_set_new(o, #n, json_integer((json_int_t)msm_stat_value(st->n)));

static json_t *session_json(const struct rtsp_smetrics *m, double now)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(m->id));
    json_object_set_new(o, "role", json_string(role_name(m->role)));
    /* "rtsp.<prefix>." -> "<prefix>" */
    const char *p = m->cfg->stat_prefix + 5;
    json_object_set_new(o, "stat_prefix", json_stringn(p, strlen(p) ? strlen(p) - 1 : 0));
    json_object_set_new(o, "stream", json_string(m->stream));
    json_object_set_new(o, m->role == RTSP_ROLE_CLIENT ? "client_address" : "server_address",
                        json_string(m->address));
    int tr = atomic_load(&m->transport);
    json_object_set_new(o, "transport",
                        json_string(tr == (RTSP_TRANSPORT_UDP | RTSP_TRANSPORT_TCP) ? "udp+tcp"
                                    : tr == RTSP_TRANSPORT_TCP                      ? "tcp"
                                    : tr == RTSP_TRANSPORT_UDP                      ? "udp"
                                                                                    : ""));
    json_object_set_new(o, "age_seconds", json_real(now > m->created ? now - m->created : 0));
    json_object_set_new(o, "stats", json_boolean(m->has_stats));
    if (!m->has_stats) {
        return o;
    }
    {
        const struct msm_rtsp_session_stats *st = &m->st;
        MSM_RTSP_SESSION_STATS(J_STAT, J_STAT, J_STAT)
    }
    if (m->role == RTSP_ROLE_CLIENT) {
        const struct msm_rtsp_client_session_stats *st = &m->cst;
        MSM_RTSP_CLIENT_SESSION_STATS(J_STAT, J_STAT, J_STAT)
    } else {
        const struct msm_rtsp_upstream_session_stats *st = &m->ust;
        MSM_RTSP_UPSTREAM_SESSION_STATS(J_STAT, J_STAT, J_STAT)
    }
    return o;
}

void rtsp_smetrics_admin(void *arg, json_t *sessions)
{
    (void)arg;
    double now = ev_time();
    pthread_mutex_lock(&reg.mu);
    for (struct rtsp_smetrics *m = reg.head; m; m = m->next) {
        json_array_append_new(sessions, session_json(m, now));
    }
    pthread_mutex_unlock(&reg.mu);
}

size_t rtsp_smetrics_count(void)
{
    size_t n = 0;
    pthread_mutex_lock(&reg.mu);
    for (struct rtsp_smetrics *m = reg.head; m; m = m->next) {
        n++;
    }
    pthread_mutex_unlock(&reg.mu);
    return n;
}
