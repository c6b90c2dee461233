/* Fan-out across workers: one upstream session per (cluster, URL) in the whole process, however
 * the clients of a stream are spread over the workers (see rtsp_private.h for the object model
 * and docs/rtsp.md, "Fan-out across workers").
 *
 * The first worker whose client asks for a stream creates the stream's entry in the
 * process-wide registry and owns its *hub* (rtsp_source.c: the upstream RTSP session, its
 * sockets, the relay). A client of the same stream on another worker binds to that worker's
 * *mirror* of the hub, created on first need and attached to the hub by message.
 *
 * Control: messages (struct rtsp_xmsg) through a per-worker inbox (a queue under the registry
 * lock, plus an ev_async), addressed to a source by its process-unique id. Between two workers
 * they arrive in the order they were posted. A message for a source that is gone is dropped,
 * except an ATTACH, which is answered "failed".
 *   mirror -> hub: ATTACH, DETACH; SETUP_TRACK, PLAY_UP, VERIFY: upstream operations a client of
 *                  the mirror needs (failures come back as ANSWERs to that client);
 *                  SUB_SETUP, SUB_PLAY, SUB_PAUSE, SUB_REMOVE: the client's subscriber records
 *                  at the hub.
 *   hub -> mirror: PUBLISH: the hub's state (SDP, tracks, play, failure, the server side's
 *                  identity once known: a reference to its struct rtsp_upeer), after every progress
 *                  and in answer to every operation; ANSWER: a failure, or the server's verdict
 *                  on a DESCRIBE, for one client; SETUP_DONE, PLAY_INFO: answers to SUB_SETUP
 *                  and SUB_PLAY; ACTIVITY: RTCP of a client reached the hub's sockets (its
 *                  session is alive).
 *
 * Media: the hub keeps a record (struct rtsp_subtrack with <peer> set) for each subscriber of
 * each mirror. UDP subscribers are served like local ones: in the same sendmmsg batches from the
 * track's shared downstream socket pair, on the hub's loop (so clients everywhere are told the
 * same server_port, and their RTCP reaches the hub). Interleaved subscribers are served by their
 * own worker, where their connection lives: the hub copies each packet once per such worker
 * into a single-producer single-consumer ring (struct rtsp_ring, one per (hub worker, mirror
 * worker) pair, RING_BYTES), which the mirror's worker drains on its loop and fans out to its
 * interleaved subscribers. A full ring drops the packet and counts it (rtp_dropped_handoff):
 * the hub never waits for another worker.
 *
 * Locks: one mutex (g.mu, the registry lock) guards the process-wide registry, the table of
 * workers and the inboxes. It is taken to find or create a stream's entry (a worker's first
 * client of that stream), when a hub or mirror goes away, and to post a message: control-plane
 * events, never per packet. The rings are lock-free (atomic head and tail; an atomic "woken"
 * flag makes a burst cost one ev_async_send).
 *
 * Lifetimes:
 *   entry   listed while its hub is alive and has not failed; freed once unlisted and held by
 *           no mirror. Its mirror count (under the lock) also keeps a lingering hub alive while
 *           a mirror is on its way (rtsp_stream_busy);
 *   hub     while local clients or attached mirrors remain, then the linger (rtsp_source.c);
 *   mirror  while local clients remain (no linger of its own: the hub lingers); it fails with
 *           its hub;
 *   rings, inbox  until the worker's loop is freed. Loops are freed only after every worker
 *           thread has stopped (server shutdown), so no thread touches a freed worker's ring or
 *           inbox; a message to a freed worker is freed at once.
 * When the process stops, each worker closes its clients (mirrors detach, hubs lose their
 * local clients); a hub with mirrors on a worker still running goes when its loop is freed, and
 * its mirrors fail (their clients are closed): there is no hand-over of a live session, since
 * workers only ever stop together.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "event/deferred.h"
#include "filters/network/rtsp_proxy/rtsp_private.h"

#define RING_BYTES (2u << 20) /* a power of two: ~4 s of one 4 Mbit/s stream */
#define REC_HDR 16u
#define REC_ALIGN(n) (((n) + 15u) & ~(size_t)15u)
#define ACTIVITY_EVERY 1.0 /* s: at most one ACTIVITY per remote subscriber per second */

/* ---- process-wide state ------------------------------------------------------------------- */

struct rtsp_stream {
    struct rtsp_stream *next;
    char *key;
    int owner;       /* worker of the hub */
    uint64_t hub_id; /* fixed when the entry is made, before the hub exists */
    int mirrors;     /* mirrors holding the entry (attached or on their way) */
    bool listed;     /* in g.streams */
};

static struct {
    pthread_mutex_t mu;
    struct rtsp_stream *streams;
    struct rtsp_wstate **ws; /* by wid; NULL once freed */
    int n_ws;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

static _Atomic uint64_t next_id = 1;

uint64_t rtsp_new_id(void)
{
    return atomic_fetch_add(&next_id, 1);
}

/* Single producer (the hub's worker), single consumer (the mirror's worker). Records of
 * REC_HDR + payload rounded up to 16, never split: a record that does not fit before the end
 * is preceded by a skip record up to the end. head and tail count bytes and never wrap. */
struct rtsp_ring {
    _Atomic uint64_t head; /* written by the producer */
    char pad0[56];
    _Atomic uint64_t tail; /* written by the consumer */
    char pad1[56];
    atomic_bool woken; /* the consumer has been signalled and has not drained yet */
    struct rtsp_wstate *consumer;
    uint8_t *buf;
};

struct ring_rec {
    uint32_t len;
    uint8_t track;
    uint8_t rtcp;
    uint8_t skip;
    uint8_t pad;
    uint64_t mirror;
};

/* ---- messages ------------------------------------------------------------------------------ */

enum xkind {
    X_ATTACH = 0,
    X_DETACH = 1,
    X_SETUP_TRACK = 2,
    X_PLAY_UP = 3,
    X_VERIFY = 4,
    X_SUB_SETUP = 5,
    X_SUB_PLAY = 6,
    X_SUB_PAUSE = 7,
    X_SUB_REMOVE = 8,
    X_PUBLISH = 9, /* first of the hub -> mirror kinds */
    X_ANSWER = 10,
    X_SETUP_DONE = 11,
    X_PLAY_INFO = 12,
    X_ACTIVITY = 13,
};

struct pub_track {
    char url[MSM_RTSP_URL_MAX];
    char media[16];
    uint32_t clock_rate;
    enum rtsp_track_state state;
    bool have_ssrc;
    uint32_t ssrc;
    struct msm_rtp_pt_set rtx;
    bool nack_ok;
};

/* What a mirror knows of its hub (a copy, owned by the message). */
struct pub {
    enum rtsp_source_state state;
    int fail_status;
    char *fail_headers;
    char base[MSM_RTSP_URL_MAX];
    char *sdp;
    size_t sdp_len;
    char *describe_headers;
    bool auth_gated;
    int n_tracks;
    struct pub_track tracks[RTSP_MAX_TRACKS];
    enum rtsp_play_state play;
    char *range;
    struct rtsp_upeer *upeer; /* reference: the server side, once the hub knows it */
};

struct rtsp_xmsg {
    struct rtsp_xmsg *next;
    enum xkind kind;
    uint64_t to;   /* a source of the receiving worker */
    uint64_t from; /* the sending source */
    int from_wid;
    uint64_t client;
    uint32_t seq; /* the client's xseq (answers to SUB_SETUP, SUB_PLAY) */
    int track;
    bool tcp, playing, mux;
    int status;
    enum rtsp_answer answer;
    uint16_t port;
    bool have_ssrc;
    uint32_t ssrc;
    int family;
    char *uri, *auth, *headers;
    struct rtsp_ring *ring;
    struct sockaddr_storage rtp_to, rtcp_to, peer_ip;
    struct pub *pub;
    struct rtsp_seqinfo info[RTSP_MAX_TRACKS];
    struct rtsp_smetrics *ms; /* SUB_SETUP, SUB_PLAY: the client session's metrics (reference) */
};

static void pub_free(struct pub *p)
{
    if (!p) {
        return;
    }
    free(p->fail_headers);
    free(p->sdp);
    free(p->describe_headers);
    free(p->range);
    rtsp_upeer_unref(p->upeer);
    free(p);
}

static void xmsg_free(struct rtsp_xmsg *m)
{
    free(m->uri);
    free(m->auth);
    free(m->headers);
    pub_free(m->pub);
    rtsp_smetrics_unref(m->ms);
    free(m);
}

static char *dup_or_null(const char *s)
{
    return s ? msm_xstrdup(s) : NULL;
}

static struct rtsp_xmsg *xmsg_new(enum xkind kind, uint64_t to, const struct rtsp_source *from)
{
    struct rtsp_xmsg *m = MSM_NEW(struct rtsp_xmsg);
    m->kind = kind;
    m->to = to;
    m->from = from->id;
    m->from_wid = from->ws->wid;
    m->track = -1;
    return m;
}

/* Queue <m> for worker <wid> (any thread; takes <m>, freed if that worker is gone). */
static void xpost(int wid, struct rtsp_xmsg *m)
{
    pthread_mutex_lock(&g.mu);
    struct rtsp_wstate *ws = wid >= 0 && wid < g.n_ws ? g.ws[wid] : NULL;
    if (ws) {
        m->next = NULL;
        if (ws->in_tail) {
            ws->in_tail->next = m;
        } else {
            ws->in_head = m;
        }
        ws->in_tail = m;
        ev_async_send(ws->loop, &ws->async);
    }
    pthread_mutex_unlock(&g.mu);
    if (!ws) {
        xmsg_free(m);
    }
}

/* ---- rings --------------------------------------------------------------------------------- */

static struct rtsp_ring *ring_new(struct rtsp_wstate *consumer)
{
    struct rtsp_ring *r = MSM_NEW(struct rtsp_ring);
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    atomic_init(&r->woken, false);
    r->consumer = consumer;
    r->buf = msm_xmalloc(RING_BYTES); /* pages are touched as the ring goes round */
    return r;
}

/* The ring worker <producer> hands <ws> media through (made on first need). */
static struct rtsp_ring *ring_for(struct rtsp_wstate *ws, int producer)
{
    if (producer >= ws->n_rings) {
        size_t cap = (size_t)ws->n_rings;
        ws->rings = msm_xgrow(ws->rings, sizeof(*ws->rings), &cap, (size_t)producer + 1);
        memset(ws->rings + ws->n_rings, 0, (cap - (size_t)ws->n_rings) * sizeof(*ws->rings));
        ws->n_rings = (int)cap;
    }
    if (!ws->rings[producer]) {
        ws->rings[producer] = ring_new(ws);
    }
    return ws->rings[producer];
}

/* Producer: copy <n> packets of track <track> of mirror <mirror> into <r>; returns how many fit
 * (the others are dropped). Wakes the consumer once per drain cycle. */
static int ring_push(struct rtsp_ring *r, uint64_t mirror, int track, bool rtcp,
                     const struct msm_udp_pkt *pk, int n)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    int ok = 0;
    for (int i = 0; i < n; i++) {
        size_t need = REC_HDR + REC_ALIGN(pk[i].len);
        size_t pos = (size_t)(head & (RING_BYTES - 1));
        size_t room = RING_BYTES - pos;
        size_t total = need <= room ? need : room + need;
        if (head + total - tail > RING_BYTES) {
            tail = atomic_load_explicit(&r->tail, memory_order_acquire);
            if (head + total - tail > RING_BYTES) {
                continue;
            }
        }
        if (need > room) {
            struct ring_rec *sk = (struct ring_rec *)(r->buf + pos);
            memset(sk, 0, sizeof(*sk));
            sk->skip = 1;
            head += room;
            pos = 0;
        }
        struct ring_rec *h = (struct ring_rec *)(r->buf + pos);
        h->len = (uint32_t)pk[i].len;
        h->track = (uint8_t)track;
        h->rtcp = rtcp;
        h->skip = 0;
        h->pad = 0;
        h->mirror = mirror;
        memcpy(r->buf + pos + REC_HDR, pk[i].data, pk[i].len);
        head += need;
        ok++;
    }
    if (ok) {
        atomic_store(&r->head, head);
        if (!atomic_exchange(&r->woken, true)) {
            ev_async_send(r->consumer->loop, &r->consumer->async);
        }
    }
    return ok;
}

static struct rtsp_source *find_source(struct rtsp_wstate *ws, uint64_t id)
{
    for (struct rtsp_source *s = ws->all; s; s = s->anext) {
        if (s->id == id) {
            return s;
        }
    }
    return NULL;
}

typedef void ring_deliver_fn(void *ctx, uint64_t mirror, int track, bool rtcp,
                             struct msm_udp_pkt *pk, int n);

/* A batch from the ring to the interleaved subscribers of a mirror's track. */
static void deliver(void *ctx, uint64_t mirror, int track, bool rtcp, struct msm_udp_pkt *pk,
                    int n)
{
    struct rtsp_wstate *ws = ctx;
    struct rtsp_source *s = find_source(ws, mirror);
    if (s && s->remote && !s->dead && track < s->n_tracks) {
        rtsp_track_fan_out(&s->tracks[track], pk, n, rtcp);
    }
}

/* Consumer: hand what the ring holds to <fn>, in batches (up to MSM_UDP_BATCH) of one mirror's
 * track. The records stay in place until all of them are handed over (each client copies what
 * it sends). */
static void ring_drain(struct rtsp_ring *r, ring_deliver_fn *fn, void *ctx)
{
    atomic_store(&r->woken, false);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load(&r->head);
    struct msm_udp_pkt pk[MSM_UDP_BATCH];
    int n = 0, track = 0;
    uint64_t mirror = 0;
    bool rtcp = false;
    while (tail < head) {
        size_t pos = (size_t)(tail & (RING_BYTES - 1));
        const struct ring_rec *h = (const struct ring_rec *)(r->buf + pos);
        if (h->skip) {
            tail += RING_BYTES - pos;
            continue;
        }
        if (n && (h->mirror != mirror || h->track != track || (bool)h->rtcp != rtcp ||
                  n == MSM_UDP_BATCH)) {
            fn(ctx, mirror, track, rtcp, pk, n);
            n = 0;
        }
        mirror = h->mirror;
        track = h->track;
        rtcp = h->rtcp;
        memset(&pk[n], 0, sizeof(pk[n]));
        pk[n].data = r->buf + pos + REC_HDR;
        pk[n].len = h->len;
        n++;
        tail += REC_HDR + REC_ALIGN(h->len);
    }
    if (n) {
        fn(ctx, mirror, track, rtcp, pk, n);
    }
    atomic_store_explicit(&r->tail, tail, memory_order_release);
}

/* ---- per-worker state ------------------------------------------------------------------- */

static const char wstate_key = 0;

static void dispatch(struct rtsp_wstate *ws, struct rtsp_xmsg *m);

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct rtsp_wstate *ws = MSM_CONTAINER_OF(w, struct rtsp_wstate, async);
    for (;;) {
        pthread_mutex_lock(&g.mu);
        struct rtsp_xmsg *m = ws->in_head;
        ws->in_head = ws->in_tail = NULL;
        pthread_mutex_unlock(&g.mu);
        if (!m) {
            break;
        }
        while (m) {
            struct rtsp_xmsg *next = m->next;
            dispatch(ws, m);
            xmsg_free(m);
            m = next;
        }
    }
    for (int i = 0; i < ws->n_rings; i++) {
        if (ws->rings[i]) {
            ring_drain(ws->rings[i], deliver, ws);
        }
    }
}

static void *wstate_create(struct ev_loop *loop)
{
    struct rtsp_wstate *ws = MSM_NEW(struct rtsp_wstate);
    ws->loop = loop;
    ev_async_init(&ws->async, on_async);
    ev_async_start(loop, &ws->async);
    ev_unref(loop); /* an idle inbox does not keep the loop alive */
    pthread_mutex_lock(&g.mu);
    size_t cap = (size_t)g.n_ws;
    g.ws = msm_xgrow(g.ws, sizeof(*g.ws), &cap, (size_t)g.n_ws + 1);
    ws->wid = g.n_ws++;
    g.ws[ws->wid] = ws;
    pthread_mutex_unlock(&g.mu);
    return ws;
}

/* The loop is being freed (every worker thread has stopped): drop queued messages, tear every
 * source down (lingering hubs send TEARDOWN), free the rings handed to us. */
static void wstate_destroy(void *p)
{
    struct rtsp_wstate *ws = p;
    ws->closing = true;
    pthread_mutex_lock(&g.mu);
    g.ws[ws->wid] = NULL;
    struct rtsp_xmsg *m = ws->in_head;
    ws->in_head = ws->in_tail = NULL;
    bool last = true;
    for (int i = 0; i < g.n_ws; i++) {
        last = last && !g.ws[i];
    }
    if (last) {
        free(g.ws);
        g.ws = NULL;
        g.n_ws = 0;
    }
    pthread_mutex_unlock(&g.mu);
    while (m) {
        struct rtsp_xmsg *next = m->next;
        xmsg_free(m);
        m = next;
    }
    while (ws->all) {
        rtsp_source_destroy(ws->all);
    }
    for (int i = 0; i < ws->n_rings; i++) {
        if (ws->rings[i]) {
            free(ws->rings[i]->buf);
            free(ws->rings[i]);
        }
    }
    free(ws->rings);
    ev_ref(ws->loop);
    ev_async_stop(ws->loop, &ws->async);
    free(ws);
}

struct rtsp_wstate *rtsp_wstate(struct ev_loop *loop)
{
    return msm_loop_local(loop, &wstate_key, wstate_create, wstate_destroy);
}

void rtsp_ws_link(struct rtsp_source *s)
{
    struct rtsp_wstate *ws = s->ws;
    s->aprev = NULL;
    s->anext = ws->all;
    if (ws->all) {
        ws->all->aprev = s;
    }
    ws->all = s;
}

void rtsp_ws_unlink(struct rtsp_source *s)
{
    if (s->aprev) {
        s->aprev->anext = s->anext;
    } else if (s->ws->all == s) {
        s->ws->all = s->anext;
    }
    if (s->anext) {
        s->anext->aprev = s->aprev;
    }
    s->anext = s->aprev = NULL;
}

/* ---- registries ---------------------------------------------------------------------------- */

struct rtsp_source *rtsp_registry_find(struct rtsp_wstate *ws, const char *key)
{
    for (struct rtsp_source *s = ws->head; s; s = s->next) {
        if (!strcmp(s->key, key)) {
            return s;
        }
    }
    return NULL;
}

void rtsp_registry_add(struct rtsp_source *s)
{
    struct rtsp_wstate *ws = s->ws;
    s->prev = NULL;
    s->next = ws->head;
    if (ws->head) {
        ws->head->prev = s;
    }
    ws->head = s;
    s->in_registry = true;
}

/* Under g.mu: free <st> once nothing refers to it. */
static void stream_maybe_free_locked(struct rtsp_stream *st)
{
    if (!st->listed && st->mirrors <= 0) {
        free(st->key);
        free(st);
    }
}

static void stream_unlist_locked(struct rtsp_stream *st)
{
    if (!st->listed) {
        return;
    }
    struct rtsp_stream **pp = &g.streams;
    while (*pp && *pp != st) {
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = st->next;
    }
    st->listed = false;
    st->next = NULL;
}

void rtsp_registry_remove(struct rtsp_source *s)
{
    if (s->in_registry) {
        if (s->prev) {
            s->prev->next = s->next;
        } else {
            s->ws->head = s->next;
        }
        if (s->next) {
            s->next->prev = s->prev;
        }
        s->next = s->prev = NULL;
        s->in_registry = false;
    }
    if (!s->remote && s->stream) {
        /* Our hub leaves the process-wide registry: the next client makes a new one. */
        pthread_mutex_lock(&g.mu);
        stream_unlist_locked(s->stream);
        stream_maybe_free_locked(s->stream);
        pthread_mutex_unlock(&g.mu);
        s->stream = NULL;
    }
}

struct rtsp_stream *rtsp_stream_claim(struct rtsp_wstate *ws, const char *key)
{
    pthread_mutex_lock(&g.mu);
    struct rtsp_stream *st = g.streams;
    while (st && strcmp(st->key, key) != 0) {
        st = st->next;
    }
    if (st && st->owner == ws->wid) {
        /* Ours but not in our registry: cannot happen (a hub leaves both at once); start a
         * new entry rather than trust it. */
        stream_unlist_locked(st);
        stream_maybe_free_locked(st);
        st = NULL;
    }
    if (st) {
        st->mirrors++; /* the caller makes a mirror holding it */
    } else {
        st = MSM_NEW(struct rtsp_stream);
        st->key = msm_xstrdup(key);
        st->owner = ws->wid;
        st->hub_id = rtsp_new_id();
        st->listed = true;
        st->next = g.streams;
        g.streams = st;
    }
    pthread_mutex_unlock(&g.mu);
    return st;
}

bool rtsp_stream_is_remote(const struct rtsp_stream *st, const struct rtsp_wstate *ws)
{
    return st->owner != ws->wid; /* owner and hub_id never change: read without the lock */
}

void rtsp_stream_set_hub(struct rtsp_stream *st, struct rtsp_source *hub)
{
    hub->id = st->hub_id;
    hub->stream = st;
}

bool rtsp_stream_busy(struct rtsp_source *s)
{
    if (!s->stream) {
        return false;
    }
    pthread_mutex_lock(&g.mu);
    bool busy = s->stream->mirrors > 0;
    pthread_mutex_unlock(&g.mu);
    return busy;
}

/* ---- mirror side --------------------------------------------------------------------------- */

struct rtsp_source *rtsp_mirror_new(struct rtsp_client *c, struct rtsp_stream *st, char *key,
                                    const char *cluster, const struct msm_rtsp_msg *req)
{
    struct rtsp_wstate *ws = rtsp_wstate(c->loop);
    struct rtsp_source *s = rtsp_source_alloc(ws, c->cfg, key, cluster, req);
    s->remote = true;
    s->owner_wid = st->owner;
    s->hub_id = st->hub_id;
    s->stream = st;
    s->state = RTSP_SRC_CONNECTING; /* until the hub publishes */
    rtsp_registry_add(s);
    msm_stat_inc(s->cfg->stats.fanout_mirrors_active);
    struct rtsp_xmsg *m = xmsg_new(X_ATTACH, s->hub_id, s);
    m->ring = ring_for(ws, st->owner);
    xpost(s->owner_wid, m);
    msm_log(MSM_LOG_DEBUG, MSM_LC_RTSP, "rtsp: %s (cluster '%s'): mirror of worker %d's session",
            s->url, cluster, s->owner_wid);
    return s;
}

void rtsp_mirror_detach(struct rtsp_source *s)
{
    struct rtsp_stream *st = s->stream;
    s->stream = NULL;
    if (st) {
        pthread_mutex_lock(&g.mu);
        st->mirrors--;
        stream_maybe_free_locked(st);
        pthread_mutex_unlock(&g.mu);
    }
    xpost(s->owner_wid, xmsg_new(X_DETACH, s->hub_id, s));
}

static struct rtsp_xmsg *client_msg(enum xkind kind, struct rtsp_source *s,
                                    const struct rtsp_client *c)
{
    struct rtsp_xmsg *m = xmsg_new(kind, s->hub_id, s);
    m->client = c->id;
    return m;
}

void rtsp_mirror_setup_track(struct rtsp_source *s, int idx, bool tcp, struct rtsp_client *c,
                             const char *uri, const char *auth)
{
    struct rtsp_track *t = &s->tracks[idx];
    if (t->state != RTSP_TRACK_NONE) {
        return;
    }
    t->state = RTSP_TRACK_SETTING_UP; /* until the hub publishes what it did */
    struct rtsp_xmsg *m = client_msg(X_SETUP_TRACK, s, c);
    m->track = idx;
    m->tcp = tcp;
    m->uri = dup_or_null(uri);
    m->auth = dup_or_null(auth);
    xpost(s->owner_wid, m);
}

void rtsp_mirror_play(struct rtsp_source *s, struct rtsp_client *c, const char *uri,
                      const char *auth)
{
    if (s->play != RTSP_PLAY_IDLE) {
        return;
    }
    s->play = RTSP_PLAY_PENDING;
    struct rtsp_xmsg *m = client_msg(X_PLAY_UP, s, c);
    m->uri = dup_or_null(uri);
    m->auth = dup_or_null(auth);
    xpost(s->owner_wid, m);
}

void rtsp_mirror_verify(struct rtsp_source *s, struct rtsp_client *c, const char *uri,
                        const char *auth)
{
    struct rtsp_xmsg *m = client_msg(X_VERIFY, s, c);
    m->uri = dup_or_null(uri);
    m->auth = dup_or_null(auth);
    xpost(s->owner_wid, m);
}

void rtsp_mirror_sub_setup(struct rtsp_source *s, struct rtsp_client *c, int idx,
                           const struct rtsp_subtrack *sub)
{
    struct rtsp_xmsg *m = client_msg(X_SUB_SETUP, s, c);
    m->seq = ++c->xseq;
    m->track = idx;
    m->tcp = sub->tcp;
    m->mux = sub->rtcp_mux;
    m->rtp_to = sub->rtp_to;
    m->rtcp_to = sub->rtcp_to;
    m->peer_ip = c->peer;
    m->family = c->peer.ss_family;
    m->playing = c->playing;
    m->ms = rtsp_smetrics_ref(c->ms); /* NULL before the client's first session exists */
    c->xwait = RTSP_XW_SETUP;
    c->x_ready = false;
    c->x_subs = true;
    xpost(s->owner_wid, m);
}

void rtsp_mirror_sub_play(struct rtsp_source *s, struct rtsp_client *c)
{
    struct rtsp_xmsg *m = client_msg(X_SUB_PLAY, s, c);
    m->seq = ++c->xseq;
    m->ms = rtsp_smetrics_ref(c->ms);
    c->xwait = RTSP_XW_PLAY;
    c->x_ready = false;
    xpost(s->owner_wid, m);
}

void rtsp_mirror_sub_pause(struct rtsp_source *s, struct rtsp_client *c)
{
    xpost(s->owner_wid, client_msg(X_SUB_PAUSE, s, c));
}

void rtsp_mirror_sub_remove(struct rtsp_source *s, struct rtsp_client *c, int idx)
{
    struct rtsp_xmsg *m = client_msg(X_SUB_REMOVE, s, c);
    m->track = idx;
    xpost(s->owner_wid, m);
}

static void set_fail(struct rtsp_client *c, int status, const char *headers)
{
    c->fail_status = status;
    free(c->fail_headers);
    c->fail_headers = dup_or_null(headers);
}

/* The hub's state becomes ours; a failed hub fails us (clients with a session are closed). */
static void mirror_apply(struct rtsp_source *s, struct pub *p)
{
    if (s->state == RTSP_SRC_FAILED) {
        return;
    }
    rtsp_upeer_set(s, p->upeer); /* clients of this worker report the hub's upstream peer */
    if (p->state == RTSP_SRC_FAILED) {
        s->state = RTSP_SRC_FAILED;
        s->fail_status = p->fail_status ? p->fail_status : 503;
        free(s->fail_headers);
        s->fail_headers = p->fail_headers;
        p->fail_headers = NULL;
        msm_log(MSM_LOG_DEBUG, MSM_LC_RTSP, "rtsp: mirror of %s: the session failed (%d)",
                s->url, s->fail_status);
        rtsp_registry_remove(s);
        for (struct rtsp_client *c = s->clients; c; c = c->bnext) {
            if (c->has_session) {
                rtsp_client_source_lost(c);
            }
        }
    } else if (p->state == RTSP_SRC_READY) {
        s->state = RTSP_SRC_READY;
        snprintf(s->base, sizeof(s->base), "%s", p->base);
        free(s->sdp);
        s->sdp = p->sdp;
        s->sdp_len = p->sdp_len;
        p->sdp = NULL;
        free(s->describe_headers);
        s->describe_headers = p->describe_headers;
        p->describe_headers = NULL;
        s->auth_gated = p->auth_gated;
        s->n_tracks = p->n_tracks;
        for (int i = 0; i < p->n_tracks; i++) {
            struct rtsp_track *t = &s->tracks[i];
            const struct pub_track *pt = &p->tracks[i];
            snprintf(t->url, sizeof(t->url), "%s", pt->url);
            snprintf(t->media, sizeof(t->media), "%s", pt->media);
            t->clock_rate = pt->clock_rate;
            t->state = pt->state;
            t->have_ssrc = pt->have_ssrc;
            t->ssrc = pt->ssrc;
            t->rtx = pt->rtx;
            t->nack_ok = pt->nack_ok;
        }
        s->play = p->play;
        free(s->range);
        s->range = p->range;
        p->range = NULL;
    }
    rtsp_source_wake_all(s);
}

static struct rtsp_client *client_find(struct rtsp_source *s, uint64_t id)
{
    for (struct rtsp_client *c = s->clients; c; c = c->bnext) {
        if (c->id == id) {
            return c;
        }
    }
    return NULL;
}

static void on_mirror_msg(struct rtsp_source *s, struct rtsp_xmsg *m)
{
    if (m->kind == X_PUBLISH) {
        mirror_apply(s, m->pub);
        return;
    }
    struct rtsp_client *c = client_find(s, m->client);
    if (!c) {
        return; /* gone meanwhile */
    }
    switch (m->kind) {
    case X_ANSWER:
        c->verify_pending = false; /* whatever failed, a new DESCRIBE may ask again */
        if (m->answer == RTSP_ANSWER_VERIFIED) {
            if (m->status == 200) {
                c->verified = true;
            } else {
                set_fail(c, m->status, m->headers);
            }
        } else {
            set_fail(c, m->status, m->headers);
        }
        rtsp_client_wake(c);
        break;
    case X_SETUP_DONE:
        if (c->xwait == RTSP_XW_SETUP && m->seq == c->xseq) {
            c->xwait = RTSP_XW_NONE;
            c->x_ready = true;
            c->x_status = m->status;
            c->x_dn_port = m->port;
            c->x_have_ssrc = m->have_ssrc;
            c->x_ssrc = m->ssrc;
            rtsp_client_wake(c);
        }
        break;
    case X_PLAY_INFO:
        if (c->xwait == RTSP_XW_PLAY && m->seq == c->xseq) {
            c->xwait = RTSP_XW_NONE;
            c->x_ready = true;
            memcpy(c->x_info, m->info, sizeof(c->x_info));
            rtsp_client_wake(c);
        }
        break;
    case X_ACTIVITY:
        rtsp_client_activity(c);
        break;
    default:
        break;
    }
}

/* ---- hub side ------------------------------------------------------------------------------ */

static struct pub *pub_make(const struct rtsp_source *s)
{
    struct pub *p = MSM_NEW(struct pub);
    p->state = s->state;
    p->fail_status = s->fail_status;
    p->fail_headers = dup_or_null(s->fail_headers);
    snprintf(p->base, sizeof(p->base), "%s", s->base);
    if (s->sdp) {
        p->sdp = msm_xstrndup(s->sdp, s->sdp_len);
        p->sdp_len = s->sdp_len;
    }
    p->describe_headers = dup_or_null(s->describe_headers);
    p->auth_gated = s->auth_gated;
    p->n_tracks = s->n_tracks;
    for (int i = 0; i < s->n_tracks; i++) {
        const struct rtsp_track *t = &s->tracks[i];
        struct pub_track *pt = &p->tracks[i];
        snprintf(pt->url, sizeof(pt->url), "%s", t->url);
        snprintf(pt->media, sizeof(pt->media), "%s", t->media);
        pt->clock_rate = t->clock_rate;
        pt->state = t->state;
        pt->have_ssrc = t->have_ssrc;
        pt->ssrc = t->ssrc;
        pt->rtx = t->rtx;
        pt->nack_ok = t->nack_ok;
    }
    p->play = s->play;
    p->range = dup_or_null(s->range);
    p->upeer = rtsp_upeer_ref(s->upeer);
    return p;
}

static struct rtsp_xmsg *peer_msg(enum xkind kind, const struct rtsp_source *s,
                                  const struct rtsp_peer *peer)
{
    return xmsg_new(kind, peer->mirror_id, s);
}

void rtsp_hub_publish(struct rtsp_source *s, struct rtsp_peer *peer)
{
    for (struct rtsp_peer *p = peer ? peer : s->peers; p; p = peer ? NULL : p->next) {
        struct rtsp_xmsg *m = peer_msg(X_PUBLISH, s, p);
        m->pub = pub_make(s);
        xpost(p->wid, m);
    }
}

void rtsp_hub_answer(struct rtsp_source *s, struct rtsp_peer *peer, uint64_t client_id,
                     enum rtsp_answer kind, int status, const char *headers)
{
    struct rtsp_xmsg *m = peer_msg(X_ANSWER, s, peer);
    m->client = client_id;
    m->answer = kind;
    m->status = status;
    m->headers = dup_or_null(headers);
    xpost(peer->wid, m);
}

/* An ATTACH to a hub that is gone: the mirror fails (its clients get 503 and come again). */
static void reply_gone(struct rtsp_wstate *ws, const struct rtsp_xmsg *in)
{
    struct rtsp_xmsg *m = MSM_NEW(struct rtsp_xmsg);
    m->kind = X_PUBLISH;
    m->to = in->from;
    m->from = in->to;
    m->from_wid = ws->wid;
    m->pub = MSM_NEW(struct pub);
    m->pub->state = RTSP_SRC_FAILED;
    m->pub->fail_status = 503;
    xpost(in->from_wid, m);
}

static struct rtsp_peer *peer_find(struct rtsp_source *s, uint64_t mirror_id)
{
    for (struct rtsp_peer *p = s->peers; p; p = p->next) {
        if (p->mirror_id == mirror_id) {
            return p;
        }
    }
    return NULL;
}

/* A record starts or stops receiving: UDP ones are in the track's list (served with the local
 * ones), interleaved ones are counted per worker (served through the ring). */
static void rsub_play(struct rtsp_source *s, struct rtsp_peer *p, struct rtsp_subtrack *sub,
                      bool on)
{
    if (sub->playing == on) {
        return;
    }
    sub->playing = on;
    if (!sub->tcp) {
        if (on) {
            rtsp_track_link(sub->t, sub);
        } else {
            rtsp_track_unlink(sub->t, sub);
        }
        return;
    }
    p->tcp_playing[sub->t->idx] += on ? 1 : -1;
    if (s->sstats && sub->t->idx == 0) {
        if (on) {
            msm_stat_inc(s->sstats->subscribers);
        } else {
            msm_stat_dec(s->sstats->subscribers);
        }
    }
    if (sub->t->idx == 0 && s->ms && s->ms->has_stats) {
        if (on) {
            msm_stat_inc(s->ms->ust.subscribers);
        } else {
            msm_stat_dec(s->ms->ust.subscribers);
        }
    }
}

/* Remove the records of <client> (every one when <client> is 0) on track <idx> (-1: all). */
static void rsub_remove(struct rtsp_source *s, struct rtsp_peer *p, uint64_t client, int idx)
{
    struct rtsp_subtrack **pp = &p->subs;
    while (*pp) {
        struct rtsp_subtrack *sub = *pp;
        if ((client && sub->client_id != client) || (idx >= 0 && sub->t->idx != idx)) {
            pp = &sub->rnext;
            continue;
        }
        *pp = sub->rnext;
        rsub_play(s, p, sub, false);
        rtsp_smetrics_unref(sub->ms);
        free(sub);
    }
}

static void hub_attach(struct rtsp_source *s, const struct rtsp_xmsg *m)
{
    struct rtsp_peer *p = MSM_NEW(struct rtsp_peer);
    p->mirror_id = m->from;
    p->wid = m->from_wid;
    p->ring = m->ring;
    p->next = s->peers;
    s->peers = p;
    s->n_peers++;
    if (ev_is_active(&s->linger)) {
        ev_timer_stop(s->loop, &s->linger);
    }
    rtsp_hub_publish(s, p);
}

static void peer_free(struct rtsp_source *s, struct rtsp_peer *p)
{
    rsub_remove(s, p, 0, -1);
    for (struct rtsp_pending *q = s->pend; q; q = q->next) {
        if (q->who.peer == p) {
            q->who.peer = NULL;
        }
    }
    free(p);
}

static void hub_detach(struct rtsp_source *s, struct rtsp_peer *p)
{
    struct rtsp_peer **pp = &s->peers;
    while (*pp != p) {
        pp = &(*pp)->next;
    }
    *pp = p->next;
    s->n_peers--;
    peer_free(s, p);
    rtsp_source_release(s);
}

void rtsp_hub_drop_peers(struct rtsp_source *s)
{
    while (s->peers) {
        struct rtsp_peer *p = s->peers;
        s->peers = p->next;
        s->n_peers--;
        struct rtsp_xmsg *m = peer_msg(X_PUBLISH, s, p);
        m->pub = MSM_NEW(struct pub);
        m->pub->state = RTSP_SRC_FAILED;
        m->pub->fail_status = 503;
        xpost(p->wid, m);
        peer_free(s, p);
    }
}

static void hub_sub_setup(struct rtsp_source *s, struct rtsp_peer *p, const struct rtsp_xmsg *m)
{
    struct rtsp_xmsg *a = peer_msg(X_SETUP_DONE, s, p);
    struct rtsp_subtrack *sub;
    a->client = m->client;
    a->seq = m->seq;
    a->status = 503;
    struct rtsp_track *t = m->track >= 0 && m->track < s->n_tracks ? &s->tracks[m->track] : NULL;
    if (s->state != RTSP_SRC_READY || !t || t->state != RTSP_TRACK_READY) {
        goto out;
    }
    if (!m->tcp) {
        a->status = rtsp_track_open_downstream(t, m->family);
        if (a->status) {
            goto out;
        }
    }
    rsub_remove(s, p, m->client, m->track);
    sub = MSM_NEW(struct rtsp_subtrack);
    sub->t = t;
    sub->tcp = m->tcp;
    sub->rtcp_mux = m->mux;
    sub->rtp_to = m->rtp_to;
    sub->rtcp_to = m->mux ? m->rtp_to : m->rtcp_to;
    sub->peer = p;
    sub->client_id = m->client;
    sub->peer_ip = m->peer_ip;
    sub->ms = rtsp_smetrics_ref(m->ms);
    sub->rnext = p->subs;
    p->subs = sub;
    if (m->playing) {
        rsub_play(s, p, sub, true);
    }
    a->status = 200;
    a->port = t->dn_port;
    a->have_ssrc = t->have_ssrc;
    a->ssrc = t->ssrc;
out:
    xpost(p->wid, a);
}

static void hub_sub_play(struct rtsp_source *s, struct rtsp_peer *p, const struct rtsp_xmsg *m)
{
    for (struct rtsp_subtrack *sub = p->subs; sub; sub = sub->rnext) {
        if (sub->client_id != m->client) {
            continue;
        }
        if (!sub->ms && m->ms) {
            /* Set up before the client's session existed: its metrics come with the PLAY. */
            sub->ms = rtsp_smetrics_ref(m->ms);
            sub->t->fan_dirty = true;
        }
        rsub_play(s, p, sub, true);
    }
    /* Linked in this very callback: the next packet of each track is the one announced. */
    struct rtsp_xmsg *a = peer_msg(X_PLAY_INFO, s, p);
    a->client = m->client;
    a->seq = m->seq;
    for (int i = 0; i < s->n_tracks; i++) {
        a->info[i] = rtsp_track_next_info(&s->tracks[i]);
    }
    xpost(p->wid, a);
}

static void on_hub_msg(struct rtsp_source *s, const struct rtsp_xmsg *m)
{
    if (m->kind == X_ATTACH) {
        hub_attach(s, m);
        return;
    }
    struct rtsp_peer *p = peer_find(s, m->from);
    if (!p) {
        return;
    }
    struct rtsp_who who = {.peer = p, .client_id = m->client};
    bool ready = s->state == RTSP_SRC_READY;
    switch (m->kind) {
    case X_DETACH:
        hub_detach(s, p);
        return;
    case X_SETUP_TRACK:
        if (ready && m->track >= 0 && m->track < s->n_tracks &&
            s->tracks[m->track].state == RTSP_TRACK_NONE) {
            int st = rtsp_hub_setup_track(s, m->track, m->tcp, &who, m->uri, m->auth);
            if (st || s->tracks[m->track].state == RTSP_TRACK_NONE) {
                rtsp_hub_answer(s, p, m->client, RTSP_ANSWER_FAIL, st ? st : 503, NULL);
            }
        }
        rtsp_hub_publish(s, p);
        return;
    case X_PLAY_UP:
        if (ready && s->play == RTSP_PLAY_IDLE) {
            rtsp_hub_play(s, &who, m->uri, m->auth);
            if (s->play == RTSP_PLAY_IDLE) {
                rtsp_hub_answer(s, p, m->client, RTSP_ANSWER_FAIL, 503, NULL);
            }
        }
        rtsp_hub_publish(s, p);
        return;
    case X_VERIFY:
        if (ready && s->up && m->uri) {
            rtsp_hub_verify(s, &who, m->uri, m->auth);
            return;
        }
        if (s->state != RTSP_SRC_FAILED) {
            rtsp_hub_answer(s, p, m->client, RTSP_ANSWER_FAIL, 503, NULL);
        }
        rtsp_hub_publish(s, p);
        return;
    case X_SUB_SETUP:
        hub_sub_setup(s, p, m);
        return;
    case X_SUB_PLAY:
        hub_sub_play(s, p, m);
        return;
    case X_SUB_PAUSE:
        for (struct rtsp_subtrack *sub = p->subs; sub; sub = sub->rnext) {
            if (sub->client_id == m->client) {
                rsub_play(s, p, sub, false);
            }
        }
        return;
    case X_SUB_REMOVE:
        rsub_remove(s, p, m->client, m->track);
        return;
    default:
        return;
    }
}

static void dispatch(struct rtsp_wstate *ws, struct rtsp_xmsg *m)
{
    struct rtsp_source *s = find_source(ws, m->to);
    if (m->kind >= X_PUBLISH) {
        if (s && s->remote && !s->dead) {
            on_mirror_msg(s, m);
        }
        return;
    }
    if (!s || s->remote || s->dead) {
        if (m->kind == X_ATTACH) {
            reply_gone(ws, m);
        }
        return;
    }
    on_hub_msg(s, m);
}

void rtsp_hub_handoff(struct rtsp_track *t, struct msm_udp_pkt *pk, int n, bool rtcp)
{
    struct rtsp_source *s = t->src;
    for (struct rtsp_peer *p = s->peers; p; p = p->next) {
        if (p->tcp_playing[t->idx] > 0 && p->ring) {
            int ok = ring_push(p->ring, p->mirror_id, t->idx, rtcp, pk, n);
            if (ok < n) {
                msm_stat_add(s->cfg->stats.rtp_dropped_handoff, (uint64_t)(n - ok));
            }
            if (!rtcp && ok > 0 && s->sstats) {
                /* The stream's media to the interleaved subscribers of that worker. */
                uint64_t bytes = 0;
                for (int i = 0; i < ok; i++) {
                    bytes += pk[i].len;
                }
                uint64_t subs = (uint64_t)p->tcp_playing[t->idx];
                msm_stat_add(s->sstats->rtp_tx_packets, (uint64_t)ok * subs);
                msm_stat_add(s->sstats->rtp_tx_bytes, bytes * subs);
            }
        }
    }
}

void rtsp_hub_remote_activity(struct rtsp_source *s, struct rtsp_subtrack *sub)
{
    double now = ev_now(s->loop);
    if (sub->peer && now - sub->act_posted >= ACTIVITY_EVERY) {
        sub->act_posted = now;
        struct rtsp_xmsg *m = peer_msg(X_ACTIVITY, s, sub->peer);
        m->client = sub->client_id;
        xpost(sub->peer->wid, m);
    }
}
