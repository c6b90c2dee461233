/* The xDS thread: gRPC C core streams for ADS and standalone config sources.
 *
 * One completion queue, polled by this thread only. Events on it:
 *   - call ops: a call has at most one SEND_MESSAGE and one RECV_MESSAGE in flight, plus
 *     SEND_INITIAL_METADATA, RECV_INITIAL_METADATA and RECV_STATUS_ON_CLIENT; a call object
 *     (struct tcall) is freed when its last op completed;
 *   - kicks: the main thread wakes the loop by starting a call on a lame channel, which fails at
 *     once and so lands on the queue (gRPC C core has no user event for a completion queue);
 *   - a 1 s poll deadline (shorter when a reconnect is due) as a backstop and for timers.
 *
 * Per source (struct tsource) the stream goes IDLE -> ACTIVE (a call exists) -> BACKOFF (the
 * call ended; retry at <retry_at>) -> ACTIVE ... A source is IDLE until something is
 * subscribed on it. Protocol state per type (struct tstate): the interest set from the main
 * thread, the accepted SotW version, the nonces, Delta's known resource versions and what the
 * server was told on the current stream, and the responses still waiting for the main thread's
 * decision. See xds/README.md for the request rules. */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "xds/xds-private.h"

#define ADS_SOTW_METHOD "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define ADS_DELTA_METHOD "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#define POLL_MS 1000
/* How long shutdown waits for gRPC to complete cancelled calls before giving up on them. */
#define SHUTDOWN_WAIT_MS 10000

enum tag_kind {
    TAG_SEND_MD = 0,
    TAG_RECV_MD = 1,
    TAG_RECV = 2,
    TAG_SEND = 3,
    TAG_STATUS = 4,
    TAG_KICK = 5,
    TAG_CONN = 6, /* connectivity state watch of a source's channel */
};

struct tcall;
struct tsource;

struct ttag {
    enum tag_kind kind;
    struct tcall *c;
    struct tsource *s; /* TAG_CONN */
};

/* A response waiting for its decision. */
struct pend {
    struct pend *next;
    uint64_t gen;
    char *nonce;
    /* Delta bookkeeping, applied to <known> when ACKed. */
    int n;
    char **names;
    char **versions;
    int n_removed;
    char **removed;
};

struct tstate {
    char *type_url;
    struct msm_strmap desired; /* interest set: name -> NULL */
    bool wildcard;
    /* SotW */
    char *version; /* last accepted version_info (kept across streams) */
    char *nonce;   /* last nonce received on the current stream */
    /* Delta */
    struct msm_strmap known; /* name -> char *version, accepted resources (across streams) */
    struct msm_strmap sent;  /* what the server was told on the current stream */
    /* Current stream */
    bool requested; /* a request for the type went out on this stream */
    int pending;    /* responses of this stream without a decision */
    bool dirty;     /* SotW interest changed while a decision was pending */
    struct pend *pq_head, *pq_tail;
};

struct sendq {
    struct sendq *next;
    uint8_t *buf;
    size_t len;
};

enum src_state {
    SRC_IDLE = 0,
    SRC_ACTIVE = 1,
    SRC_BACKOFF = 2,
};

struct tsource {
    int id;
    bool delta;
    bool node_first_only;
    const char *method; /* NULL = ADS */
    struct msm_xds_target tg;
    struct msm_xds_cp_stats *cp;
    struct msm_xds_cx_stats *cx; /* NULL: the target is not a cluster */
    grpc_channel *ch;
    struct ttag t_conn;
    bool watching;                  /* t_conn is armed */
    grpc_connectivity_state conn;   /* last state seen */
    bool cx_up;                     /* counted in upstream_cx_active */
    struct tcall *call;
    uint64_t gen;
    enum src_state state;
    int64_t retry_at;
    uint64_t backoff_next;
    bool node_sent;
    bool connected;
    struct sendq *sq_head, *sq_tail;
    int sq_n;
    bool send_busy;
    struct tstate **types;
    int n_types;
};

struct tcall {
    struct msm_xds_thread *t;
    struct tsource *s; /* NULL once detached (stream over, waiting for the last ops) */
    grpc_call *call;
    uint64_t gen;
    int ops;
    struct ttag t_send_md, t_recv_md, t_recv, t_send, t_status;
    grpc_metadata_array md_in, trailing;
    grpc_status_code status;
    grpc_slice details;
    grpc_byte_buffer *rbuf, *sbuf;
    grpc_metadata *md_out;
    size_t n_md_out;
    bool got_msg;
};

struct kick {
    struct ttag tag;
    grpc_call *call;
    grpc_metadata_array md;
    grpc_status_code st;
    grpc_slice det;
};

struct msm_xds_thread {
    struct msm_xds *x;
    pthread_t th;
    bool running;
    grpc_completion_queue *cq;
    grpc_channel *lame;
    /* Commands from the main thread. */
    pthread_mutex_t mu;
    struct msm_xds_cmd *q_head, *q_tail;
    atomic_bool kick_pending;
    atomic_int kicks_in_flight;
    atomic_bool stop;
    /* Thread-owned from here on. */
    struct tsource **srcs;
    int n_srcs;
    int live_calls;
    uint64_t rng;
};

/* ---- small helpers ------------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    gpr_timespec t = gpr_now(GPR_CLOCK_MONOTONIC);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static gpr_timespec deadline_in_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static uint64_t rnd(struct msm_xds_thread *t)
{
    /* xorshift64*: jitter only, not security. */
    uint64_t v = t->rng;
    v ^= v >> 12;
    v ^= v << 25;
    v ^= v >> 27;
    t->rng = v;
    return v * 2685821657736338717ULL;
}

static char *dup_or_null(const char *s)
{
    return s ? msm_xstrdup(s) : NULL;
}

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = dup_or_null(s);
}

/* ---- kicks -------------------------------------------------------------------------------- */

static void kick(struct msm_xds_thread *t)
{
    if (atomic_exchange(&t->kick_pending, true)) {
        return;
    }
    struct kick *k = MSM_NEW(struct kick);
    k->tag.kind = TAG_KICK;
    grpc_metadata_array_init(&k->md);
    k->call = grpc_channel_create_call(t->lame, NULL, GRPC_PROPAGATE_DEFAULTS, t->cq,
                                       grpc_slice_from_static_string("/msm.xds/kick"), NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[1].data.recv_status_on_client.trailing_metadata = &k->md;
    ops[1].data.recv_status_on_client.status = &k->st;
    ops[1].data.recv_status_on_client.status_details = &k->det;
    /* No access to <k> between the increment and the batch: the xDS thread may free it as
     * soon as the batch started. */
    grpc_call *call = k->call;
    void *tag = &k->tag;
    atomic_fetch_add(&t->kicks_in_flight, 1);
    grpc_call_error e = grpc_call_start_batch(call, ops, 2, tag, NULL);
    if (e != GRPC_CALL_OK) {
        /* Never expected; the 1 s poll still picks the command up. */
        msm_log(MSM_LOG_ERROR, MSM_LC_XDS, "xds: wakeup call failed: %s",
                grpc_call_error_to_string(e));
        atomic_fetch_sub(&t->kicks_in_flight, 1);
        grpc_call_unref(k->call);
        grpc_metadata_array_destroy(&k->md);
        free(k);
    }
}

static void kick_done(struct msm_xds_thread *t, struct ttag *tag)
{
    struct kick *k = MSM_CONTAINER_OF(tag, struct kick, tag);
    grpc_call_unref(k->call);
    grpc_metadata_array_destroy(&k->md);
    grpc_slice_unref(k->det);
    free(k);
    atomic_fetch_sub(&t->kicks_in_flight, 1);
}

/* ---- type state ---------------------------------------------------------------------------- */

static void pend_free(struct pend *p)
{
    free(p->nonce);
    for (int i = 0; i < p->n; i++) {
        msm_name_unref(p->names[i]);
        msm_name_unref(p->versions[i]);
    }
    free(p->names);
    free(p->versions);
    for (int i = 0; i < p->n_removed; i++) {
        free(p->removed[i]);
    }
    free(p->removed);
    free(p);
}

/* <known>'s versions are interned: a push gives most resources the same one. */
static void strmap_free_vals(struct msm_strmap *m)
{
    void *v;
    for (size_t i = 0; msm_strmap_next(m, &i, NULL, &v);) {
        msm_name_unref(v);
    }
    msm_strmap_deinit(m);
}

static void tstate_free(struct tstate *ts)
{
    free(ts->type_url);
    msm_strmap_deinit(&ts->desired);
    free(ts->version);
    free(ts->nonce);
    strmap_free_vals(&ts->known);
    msm_strmap_deinit(&ts->sent);
    while (ts->pq_head) {
        struct pend *p = ts->pq_head;
        ts->pq_head = p->next;
        pend_free(p);
    }
    free(ts);
}

static struct tstate *find_type(struct tsource *s, const char *type_url)
{
    for (int i = 0; i < s->n_types; i++) {
        if (!strcmp(s->types[i]->type_url, type_url)) {
            return s->types[i];
        }
    }
    return NULL;
}

static bool interested(const struct tstate *ts)
{
    return ts->wildcard || ts->desired.n > 0;
}

static bool wants(const struct tstate *ts, const char *name)
{
    return ts->wildcard || msm_strmap_has(&ts->desired, name);
}

/* ---- requests ----------------------------------------------------------------------------- */

static void enqueue(struct tsource *s, uint8_t *buf, size_t len)
{
    struct sendq *q = MSM_NEW(struct sendq);
    q->buf = buf;
    q->len = len;
    if (s->sq_tail) {
        s->sq_tail->next = q;
    } else {
        s->sq_head = q;
    }
    s->sq_tail = q;
    s->sq_n++;
    if (s->cp) {
        msm_stat_set(s->cp->pending_requests, (uint64_t)s->sq_n);
    }
}

static void clear_sendq(struct tsource *s)
{
    while (s->sq_head) {
        struct sendq *q = s->sq_head;
        s->sq_head = q->next;
        free(q->buf);
        free(q);
    }
    s->sq_tail = NULL;
    s->sq_n = 0;
    if (s->cp) {
        msm_stat_set(s->cp->pending_requests, 0);
    }
}

static void send_request(struct msm_xds_thread *t, struct tsource *s, struct msm_xds_req *r)
{
    if (!s->node_first_only || !s->node_sent) {
        r->node = t->x->node;
        s->node_sent = true;
    }
    size_t len;
    uint8_t *buf = msm_xds_pack_request(s->delta, r, &len);
    enqueue(s, buf, len);
    msm_log(MSM_LOG_DEBUG, MSM_LC_XDS,
            "xds: %s: request %s names=%zu unsub=%zu nonce='%s'%s%s", s->tg.desc, r->type_url,
            r->n_names, r->n_unsub, r->nonce ? r->nonce : "", r->error ? " NACK: " : "",
            r->error ? r->error : "");
}

/* SotW: every request carries the whole interest set, the last accepted version and a nonce. */
static void send_sotw(struct msm_xds_thread *t, struct tsource *s, struct tstate *ts,
                      const char *nonce, const char *error)
{
    const char **names = msm_strmap_sorted_keys(&ts->desired);
    struct msm_xds_req r = {
        .type_url = ts->type_url,
        .version_info = ts->version,
        .names = names,
        .n_names = ts->desired.n,
        .nonce = nonce,
        .error = error,
    };
    send_request(t, s, &r);
    free(names);
    ts->requested = true;
    ts->dirty = false;
}

/* Delta: the first request of a type on a stream subscribes to everything wanted and tells the
 * versions already held (initial_resource_versions). */
static void send_delta_initial(struct msm_xds_thread *t, struct tsource *s, struct tstate *ts)
{
    const char **names = msm_strmap_sorted_keys(&ts->desired);
    size_t nn = ts->desired.n;
    const char **sub = msm_xcalloc(nn + 2, sizeof(*sub));
    size_t ns = 0;
    if (ts->wildcard && nn) {
        sub[ns++] = "*"; /* new-style wildcard alongside explicit names */
    }
    for (size_t i = 0; i < nn; i++) {
        sub[ns++] = names[i];
    }
    const char **kn = msm_xcalloc(ts->known.n + 1, sizeof(*kn));
    const char **kv = msm_xcalloc(ts->known.n + 1, sizeof(*kv));
    size_t nk = 0;
    const char *key;
    void *val;
    for (size_t i = 0; msm_strmap_next(&ts->known, &i, &key, &val);) {
        if (wants(ts, key)) {
            kn[nk] = key;
            kv[nk] = val;
            nk++;
        }
    }
    struct msm_xds_req r = {
        .type_url = ts->type_url,
        .names = sub,
        .n_names = ns,
        .irv_names = kn,
        .irv_versions = kv,
        .n_irv = nk,
    };
    send_request(t, s, &r);
    msm_strmap_deinit(&ts->sent);
    for (size_t i = 0; i < ns; i++) {
        msm_strmap_put(&ts->sent, sub[i], NULL, NULL);
    }
    free(kn);
    free(kv);
    free(sub);
    free(names);
    ts->requested = true;
}

/* Delta: a spontaneous request (no nonce) with what changed in the interest set. */
static void send_delta_diff(struct msm_xds_thread *t, struct tsource *s, struct tstate *ts)
{
    struct msm_strmap want;
    msm_strmap_init(&want); /* becomes <sent> */
    const char *key;
    for (size_t i = 0; msm_strmap_next(&ts->desired, &i, &key, NULL);) {
        msm_strmap_put(&want, key, NULL, NULL);
    }
    if (ts->wildcard && ts->desired.n) {
        msm_strmap_put(&want, "*", NULL, NULL);
    }
    const char **sub = msm_xcalloc(want.n + 1, sizeof(*sub));
    const char **unsub = msm_xcalloc(ts->sent.n + 1, sizeof(*unsub));
    size_t ns = 0, nu = 0;
    const char **wk = msm_strmap_sorted_keys(&want);
    for (size_t i = 0; i < want.n; i++) {
        if (!msm_strmap_has(&ts->sent, wk[i])) {
            sub[ns++] = wk[i];
        }
    }
    const char **sk = msm_strmap_sorted_keys(&ts->sent);
    for (size_t i = 0; i < ts->sent.n; i++) {
        if (!msm_strmap_has(&want, sk[i])) {
            unsub[nu++] = sk[i];
        }
    }
    if (ns || nu) {
        struct msm_xds_req r = {
            .type_url = ts->type_url,
            .names = sub,
            .n_names = ns,
            .unsub = unsub,
            .n_unsub = nu,
        };
        send_request(t, s, &r);
    }
    free(sk);
    free(wk);
    free(sub);
    free(unsub);
    msm_strmap_deinit(&ts->sent);
    ts->sent = want;
}

static void send_initial(struct msm_xds_thread *t, struct tsource *s, struct tstate *ts)
{
    if (s->delta) {
        send_delta_initial(t, s, ts);
    } else {
        send_sotw(t, s, ts, NULL, NULL);
    }
}

/* ---- calls -------------------------------------------------------------------------------- */

static void tcall_maybe_free(struct tcall *c)
{
    if (c->ops > 0 || c->s) {
        return;
    }
    grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md_in);
    grpc_metadata_array_destroy(&c->trailing);
    grpc_slice_unref(c->details);
    if (c->rbuf) {
        grpc_byte_buffer_destroy(c->rbuf);
    }
    if (c->sbuf) {
        grpc_byte_buffer_destroy(c->sbuf);
    }
    for (size_t i = 0; i < c->n_md_out; i++) {
        grpc_slice_unref(c->md_out[i].key);
        grpc_slice_unref(c->md_out[i].value);
    }
    free(c->md_out);
    c->t->live_calls--;
    free(c);
}

static bool start_op(struct tcall *c, grpc_op *op, struct ttag *tag)
{
    grpc_call_error e = grpc_call_start_batch(c->call, op, 1, tag, NULL);
    if (e != GRPC_CALL_OK) {
        msm_log(MSM_LOG_ERROR, MSM_LC_XDS, "xds: grpc_call_start_batch(%d): %s", (int)op->op,
                grpc_call_error_to_string(e));
        return false;
    }
    c->ops++;
    return true;
}

static void start_recv(struct tcall *c)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->rbuf;
    c->rbuf = NULL;
    if (!start_op(c, &op, &c->t_recv)) {
        grpc_call_cancel(c->call, NULL);
    }
}

static void flush(struct tsource *s)
{
    struct tcall *c = s->call;
    if (!c || s->send_busy || !s->sq_head) {
        return;
    }
    struct sendq *q = s->sq_head;
    s->sq_head = q->next;
    if (!s->sq_head) {
        s->sq_tail = NULL;
    }
    s->sq_n--;
    if (s->cp) {
        msm_stat_set(s->cp->pending_requests, (uint64_t)s->sq_n);
    }
    grpc_slice sl = grpc_slice_new(q->buf, q->len, free);
    c->sbuf = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    free(q);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = c->sbuf;
    if (start_op(c, &op, &c->t_send)) {
        s->send_busy = true;
    } else {
        grpc_byte_buffer_destroy(c->sbuf);
        c->sbuf = NULL;
        grpc_call_cancel(c->call, NULL);
    }
}

static grpc_channel *make_channel(const struct msm_xds_target *tg)
{
    grpc_arg args[10];
    int n = 0;
#define ARG_INT(k, v)                                                                             \
    do {                                                                                          \
        args[n].type = GRPC_ARG_INTEGER;                                                          \
        args[n].key = (char *)(k);                                                                \
        args[n].value.integer = (v);                                                              \
        n++;                                                                                      \
    } while (0)
#define ARG_STR(k, v)                                                                             \
    do {                                                                                          \
        args[n].type = GRPC_ARG_STRING;                                                           \
        args[n].key = (char *)(k);                                                                \
        args[n].value.string = (char *)(v);                                                       \
        n++;                                                                                      \
    } while (0)
    ARG_INT(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, MSM_XDS_MAX_MESSAGE);
    ARG_INT(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, MSM_XDS_BACKOFF_BASE_MS);
    ARG_INT(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, MSM_XDS_BACKOFF_MAX_MS);
    ARG_INT(GRPC_ARG_ENABLE_RETRIES, 0);
    ARG_STR(GRPC_ARG_PRIMARY_USER_AGENT_STRING, "envoy/msm-proxy-" MSM_VERSION);
    if (tg->keepalive_time_ms > 0) {
        ARG_INT(GRPC_ARG_KEEPALIVE_TIME_MS, tg->keepalive_time_ms);
        ARG_INT(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, tg->keepalive_timeout_ms);
        /* Keep pinging an idle stream: xDS streams are quiet for long stretches. */
        ARG_INT(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    }
    if (tg->sni) {
        ARG_STR(GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, tg->sni);
    }
    if (tg->authority) {
        ARG_STR(GRPC_ARG_DEFAULT_AUTHORITY, tg->authority);
    }
#undef ARG_INT
#undef ARG_STR
    grpc_channel_args ca = {.num_args = (size_t)n, .args = args};
    grpc_channel_credentials *creds;
    if (tg->tls) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = tg->key_pem, .cert_chain = tg->cert_pem};
        creds = grpc_ssl_credentials_create(tg->root_pem, tg->cert_pem ? &pair : NULL, NULL,
                                            NULL);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    grpc_channel *ch = grpc_channel_create(tg->target, creds, &ca);
    grpc_channel_credentials_release(creds);
    return ch;
}

static const char *method_for(const struct tsource *s)
{
    if (s->method) {
        return s->method;
    }
    return s->delta ? ADS_DELTA_METHOD : ADS_SOTW_METHOD;
}

/* Count the channel's connection in the cluster's stats, as Envoy counts its xDS connection:
 * one more total and active when the channel becomes READY, active released when it leaves
 * READY, a connect failure when connecting ends in TRANSIENT_FAILURE. The watch is re-armed
 * with a bounded deadline so shutdown never waits on it for long. */
static void watch_conn(struct msm_xds_thread *t, struct tsource *s)
{
    s->t_conn = (struct ttag){TAG_CONN, NULL, s};
    s->watching = true;
    grpc_channel_watch_connectivity_state(s->ch, s->conn, deadline_in_ms(POLL_MS), t->cq,
                                          &s->t_conn);
}

static void conn_update(struct tsource *s, grpc_connectivity_state st)
{
    if (s->cx && st != s->conn) {
        if (st == GRPC_CHANNEL_READY && !s->cx_up) {
            s->cx_up = true;
            msm_stat_inc(s->cx->upstream_cx_total);
            msm_stat_inc(s->cx->upstream_cx_active);
        } else if (st != GRPC_CHANNEL_READY && s->cx_up) {
            s->cx_up = false;
            msm_stat_dec(s->cx->upstream_cx_active);
        } else if (st == GRPC_CHANNEL_TRANSIENT_FAILURE && s->conn == GRPC_CHANNEL_CONNECTING) {
            msm_stat_inc(s->cx->upstream_cx_connect_fail);
        }
    }
    s->conn = st;
}

static void on_conn(struct msm_xds_thread *t, struct tsource *s)
{
    s->watching = false;
    if (!s->ch) {
        return;
    }
    conn_update(s, grpc_channel_check_connectivity_state(s->ch, 0));
    if (!atomic_load(&t->stop) && s->conn != GRPC_CHANNEL_SHUTDOWN) {
        watch_conn(t, s);
    }
}

static void start_stream(struct msm_xds_thread *t, struct tsource *s)
{
    if (!s->ch) {
        s->ch = make_channel(&s->tg);
        s->conn = grpc_channel_check_connectivity_state(s->ch, 0);
        if (s->cx) {
            watch_conn(t, s);
        }
    } else {
        /* Our backoff decides when to retry: do not wait for the channel's own. */
        grpc_channel_reset_connect_backoff(s->ch);
    }
    struct tcall *c = MSM_NEW(struct tcall);
    c->t = t;
    c->s = s;
    c->gen = ++s->gen;
    c->t_send_md = (struct ttag){TAG_SEND_MD, c, NULL};
    c->t_recv_md = (struct ttag){TAG_RECV_MD, c, NULL};
    c->t_recv = (struct ttag){TAG_RECV, c, NULL};
    c->t_send = (struct ttag){TAG_SEND, c, NULL};
    c->t_status = (struct ttag){TAG_STATUS, c, NULL};
    grpc_metadata_array_init(&c->md_in);
    grpc_metadata_array_init(&c->trailing);
    c->details = grpc_empty_slice();
    t->live_calls++;
    grpc_slice method = grpc_slice_from_static_string(method_for(s));
    c->call = grpc_channel_create_call(s->ch, NULL, GRPC_PROPAGATE_DEFAULTS, t->cq, method, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    s->call = c;
    s->state = SRC_ACTIVE;
    s->node_sent = false;
    s->send_busy = false;
    clear_sendq(s);
    msm_log(MSM_LOG_DEBUG, MSM_LC_XDS, "xds: %s: starting stream %s (#%llu)", s->tg.desc,
            method_for(s), (unsigned long long)c->gen);

    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    if (s->tg.n_md) {
        c->md_out = msm_xcalloc((size_t)s->tg.n_md, sizeof(*c->md_out));
        for (int i = 0; i < s->tg.n_md; i++) {
            c->md_out[i].key = grpc_slice_from_copied_string(s->tg.md_keys[i]);
            c->md_out[i].value = grpc_slice_from_copied_string(s->tg.md_vals[i]);
        }
        c->n_md_out = (size_t)s->tg.n_md;
        op.data.send_initial_metadata.count = c->n_md_out;
        op.data.send_initial_metadata.metadata = c->md_out;
    }
    bool ok = start_op(c, &op, &c->t_send_md);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_INITIAL_METADATA;
    op.data.recv_initial_metadata.recv_initial_metadata = &c->md_in;
    ok = ok && start_op(c, &op, &c->t_recv_md);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &c->trailing;
    op.data.recv_status_on_client.status = &c->status;
    op.data.recv_status_on_client.status_details = &c->details;
    if (!start_op(c, &op, &c->t_status)) {
        /* Without a status op nothing would ever end this call: drop it and retry later. */
        grpc_call_cancel(c->call, NULL);
        c->s = NULL;
        s->call = NULL;
        s->state = SRC_BACKOFF;
        s->retry_at = now_ms() + MSM_XDS_BACKOFF_MAX_MS;
        tcall_maybe_free(c);
        return;
    }
    if (!ok) {
        grpc_call_cancel(c->call, NULL);
        return;
    }
    start_recv(c);
    /* Stream-level state starts over; what was accepted (versions) is kept. */
    for (int i = 0; i < s->n_types; i++) {
        struct tstate *ts = s->types[i];
        ts->requested = false;
        ts->pending = 0;
        ts->dirty = false;
        set_str(&ts->nonce, NULL);
        msm_strmap_deinit(&ts->sent);
    }
    for (int i = 0; i < s->n_types; i++) {
        if (interested(s->types[i])) {
            send_initial(t, s, s->types[i]);
        }
    }
    flush(s);
}

static void set_connected(struct tsource *s, bool up)
{
    if (s->connected == up) {
        return;
    }
    s->connected = up;
    if (s->cp) {
        msm_stat_set(s->cp->connected_state, up ? 1 : 0);
    }
    msm_log(up ? MSM_LOG_INFO : MSM_LOG_WARN, MSM_LC_XDS, "xds: %s: %s", s->tg.desc,
            up ? "connected" : "disconnected");
}

static void post_event(struct msm_xds_thread *t, enum msm_xds_event_kind kind, int src,
                       uint64_t gen, struct msm_xds_decoded *d)
{
    struct msm_xds_event *ev = MSM_NEW(struct msm_xds_event);
    ev->x = t->x;
    ev->kind = kind;
    ev->src = src;
    ev->gen = gen;
    ev->d = d;
    msm_mailbox_post(&t->x->mb, msm__xds_on_event, ev);
}

/* Envoy's JitteredExponentialBackOffStrategy: uniform in [0, interval), the interval doubling
 * from 500 ms up to 30 s, reset when a response arrives. */
static int64_t next_backoff(struct msm_xds_thread *t, struct tsource *s)
{
    if (!s->backoff_next) {
        s->backoff_next = MSM_XDS_BACKOFF_BASE_MS;
    }
    uint64_t cur = s->backoff_next;
    s->backoff_next = cur < MSM_XDS_BACKOFF_MAX_MS / 2 ? cur * 2 : MSM_XDS_BACKOFF_MAX_MS;
    uint64_t d = rnd(t) % cur;
    return (int64_t)(d ? d : 1);
}

static void stream_closed(struct msm_xds_thread *t, struct tcall *c)
{
    struct tsource *s = c->s;
    c->s = NULL;
    if (!s || s->call != c) {
        return;
    }
    s->call = NULL;
    s->send_busy = false;
    clear_sendq(s);
    char *det = grpc_slice_to_c_string(c->details);
    int64_t delay = next_backoff(t, s);
    msm_log(MSM_LOG_WARN, MSM_LC_XDS,
            "xds: %s: stream closed: gRPC status %d%s%s; reconnecting in %lld ms", s->tg.desc,
            (int)c->status, det[0] ? ": " : "", det, (long long)delay);
    gpr_free(det);
    set_connected(s, false);
    s->state = SRC_BACKOFF;
    s->retry_at = now_ms() + delay;
    post_event(t, MSM_XDS_EV_STREAM_DOWN, s->id, c->gen, NULL);
}

static void release_slice(void *arg)
{
    grpc_slice_unref(*(grpc_slice *)arg);
}

/* Responses at least this big are followed by malloc_trim (see on_message). */
#define TRIM_AFTER ((size_t)1 << 20)

static void on_message(struct msm_xds_thread *t, struct tcall *c)
{
    struct tsource *s = c->s;
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, c->rbuf)) {
        msm_log(MSM_LOG_WARN, MSM_LC_XDS, "xds: %s: unreadable message; closing the stream",
                s->tg.desc);
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "unreadable message", NULL);
        return;
    }
    grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    /* The message is in <sl> now: its slices go before decoding (a 10 MB response would
     * otherwise be held three times: slices, contiguous copy, decode). */
    grpc_byte_buffer_destroy(c->rbuf);
    c->rbuf = NULL;
    struct msm_err err;
    size_t len = GRPC_SLICE_LENGTH(sl);
    if (len >= TRIM_AFTER) {
        /* Those slices (as big as the message, freed into malloc's arenas) go back to the
         * system before decoding: with the 10k-cluster config built, the EDS response's
         * decoding is the peak of the apply. */
        malloc_trim(0);
    }
    struct msm_xds_decoded *d =
        msm_xds_decode_ex(s->delta, GRPC_SLICE_START_PTR(sl), len,
                          atomic_load_explicit(&t->x->lazy, memory_order_relaxed), release_slice,
                          &sl, &err);
    if (len >= TRIM_AFTER) {
        /* gRPC's buffers for it are free again: give them back to the system rather than
         * keep them in this thread's malloc arena while the main thread builds the config. */
        malloc_trim(0);
    }
    if (!d) {
        /* Nothing to NACK without a nonce: as Envoy when a message does not parse, end the
         * stream and reconnect with backoff. */
        msm_log(MSM_LOG_WARN, MSM_LC_XDS, "xds: %s: %s; closing the stream", s->tg.desc,
                err.msg);
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "malformed response", NULL);
        return;
    }
    c->got_msg = true;
    s->backoff_next = MSM_XDS_BACKOFF_BASE_MS;
    set_connected(s, true);
    struct tstate *ts = find_type(s, d->type_url);
    if (!ts || (!interested(ts) && !ts->requested)) {
        msm_log(MSM_LOG_WARN, MSM_LC_XDS,
                "xds: %s: ignoring the message for type URL %s as it has no current "
                "subscribers", s->tg.desc, d->type_url);
        msm_xds_decoded_free(d);
        return;
    }
    msm_log(MSM_LOG_DEBUG, MSM_LC_XDS, "xds: %s: response %s version '%s' nonce '%s': %d "
            "resources, %d removed%s%s", s->tg.desc, d->type_url, d->version_info, d->nonce,
            d->n, d->n_removed, d->error ? ", bad: " : "", d->error ? d->error : "");
    if (!s->delta) {
        set_str(&ts->nonce, d->nonce);
    }
    struct pend *p = MSM_NEW(struct pend);
    p->gen = c->gen;
    p->nonce = msm_xstrdup(d->nonce);
    if (s->delta && !d->error) {
        p->names = msm_xcalloc((size_t)d->n + 1, sizeof(char *));
        p->versions = msm_xcalloc((size_t)d->n + 1, sizeof(char *));
        for (int i = 0; i < d->n; i++) {
            /* Interned: the same strings as the known versions and the main thread's maps,
             * not 10k more copies until the ACK. */
            p->names[i] = msm_name_intern(d->res[i].name);
            p->versions[i] = msm_name_intern(d->res[i].version);
        }
        p->n = d->n;
        p->removed = msm_xcalloc((size_t)d->n_removed + 1, sizeof(char *));
        for (int i = 0; i < d->n_removed; i++) {
            p->removed[i] = msm_xstrdup(d->removed[i]);
        }
        p->n_removed = d->n_removed;
    }
    if (ts->pq_tail) {
        ts->pq_tail->next = p;
    } else {
        ts->pq_head = p;
    }
    ts->pq_tail = p;
    ts->pending++;
    post_event(t, MSM_XDS_EV_RESPONSE, s->id, c->gen, d);
}

static void on_tag(struct msm_xds_thread *t, struct ttag *tag, bool ok)
{
    /* Kicks are allocated by the main thread and handed over through gRPC's queue, which
     * orders the handoff; this acquire (paired with kick()'s increment) makes that order
     * visible to ThreadSanitizer, which cannot see inside libgrpc. */
    (void)atomic_load_explicit(&t->kicks_in_flight, memory_order_acquire);
    if (tag->kind == TAG_KICK) {
        kick_done(t, tag);
        return;
    }
    if (tag->kind == TAG_CONN) {
        on_conn(t, tag->s);
        return;
    }
    struct tcall *c = tag->c;
    c->ops--;
    struct tsource *s = c->s;
    switch (tag->kind) {
    case TAG_SEND_MD:
    case TAG_RECV_MD:
        /* Headers went out (the transport is up) or came back: the stream is established, as
         * Envoy counts it (connected_state is set when the stream starts, before any response:
         * a Delta server with nothing new to say may stay silent). */
        if (ok && s) {
            set_connected(s, true);
        }
        break;
    case TAG_RECV:
        if (ok && c->rbuf && s) {
            on_message(t, c);
            grpc_byte_buffer_destroy(c->rbuf);
            c->rbuf = NULL;
            if (c->s) {
                start_recv(c);
            }
        } else if (c->rbuf) {
            grpc_byte_buffer_destroy(c->rbuf);
            c->rbuf = NULL;
        }
        break;
    case TAG_SEND:
        grpc_byte_buffer_destroy(c->sbuf);
        c->sbuf = NULL;
        if (s) {
            s->send_busy = false;
            if (ok) {
                flush(s);
            }
        }
        break;
    case TAG_STATUS:
        stream_closed(t, c);
        break;
    case TAG_KICK:
    case TAG_CONN:
        break;
    }
    tcall_maybe_free(c);
}

/* ---- commands ----------------------------------------------------------------------------- */

static struct tsource *src_by_id(struct msm_xds_thread *t, int id)
{
    for (int i = 0; i < t->n_srcs; i++) {
        if (t->srcs[i]->id == id) {
            return t->srcs[i];
        }
    }
    return NULL;
}

static void cmd_add_source(struct msm_xds_thread *t, struct msm_xds_cmd *c)
{
    struct tsource *s = MSM_NEW(struct tsource);
    s->id = c->src;
    s->delta = c->delta;
    s->node_first_only = c->node_first_only;
    s->method = c->method;
    s->tg = c->target;
    memset(&c->target, 0, sizeof(c->target));
    s->cp = c->cp;
    s->cx = c->cx;
    t->srcs = msm_xrealloc(t->srcs, sizeof(*t->srcs) * (size_t)(t->n_srcs + 1));
    t->srcs[t->n_srcs++] = s;
}

static void cmd_subscribe(struct msm_xds_thread *t, struct msm_xds_cmd *c)
{
    struct tsource *s = src_by_id(t, c->src);
    if (!s) {
        return;
    }
    struct tstate *ts = find_type(s, c->type_url);
    if (!ts) {
        ts = MSM_NEW(struct tstate);
        ts->type_url = msm_xstrdup(c->type_url);
        s->types = msm_xrealloc(s->types, sizeof(*s->types) * (size_t)(s->n_types + 1));
        s->types[s->n_types++] = ts;
    }
    msm_strmap_deinit(&ts->desired);
    for (int i = 0; i < c->n; i++) {
        msm_strmap_put(&ts->desired, c->names[i], NULL, NULL);
    }
    ts->wildcard = c->wildcard;
    /* Envoy forgets a resource it lost interest in: no initial version for it later. */
    if (!ts->wildcard) {
        const char **kk = msm_strmap_sorted_keys(&ts->known);
        for (size_t i = 0; kk[i]; i++) {
            if (!msm_strmap_has(&ts->desired, kk[i])) {
                void *v = NULL;
                char *key = msm_xstrdup(kk[i]);
                msm_strmap_del(&ts->known, key, &v);
                free(key);
                msm_name_unref(v);
            }
        }
        free(kk);
    }
    if (s->state != SRC_ACTIVE) {
        return; /* sent when the stream (re)starts */
    }
    if (!s->delta) {
        if (ts->pending > 0) {
            ts->dirty = true; /* rides on the next ACK/NACK, with the latest nonce */
        } else if (interested(ts) || ts->requested) {
            send_sotw(t, s, ts, ts->nonce, NULL);
        }
    } else if (!ts->requested) {
        if (interested(ts)) {
            send_delta_initial(t, s, ts);
        }
    } else {
        send_delta_diff(t, s, ts);
    }
}

static void cmd_decision(struct msm_xds_thread *t, struct msm_xds_cmd *c)
{
    struct tsource *s = src_by_id(t, c->src);
    struct tstate *ts = s ? find_type(s, c->type_url) : NULL;
    if (!ts) {
        return;
    }
    /* Decisions come back in response order; find ours. */
    struct pend **pp = &ts->pq_head, *p = NULL, *prev = NULL;
    for (; *pp; prev = *pp, pp = &(*pp)->next) {
        if ((*pp)->gen == c->gen && !strcmp((*pp)->nonce, c->nonce)) {
            p = *pp;
            *pp = p->next;
            if (ts->pq_tail == p) {
                ts->pq_tail = prev;
            }
            break;
        }
    }
    if (c->accepted) {
        if (!s->delta) {
            set_str(&ts->version, c->version_info);
        } else if (p) {
            for (int i = 0; i < p->n; i++) {
                if (wants(ts, p->names[i])) {
                    void **slot = msm_strmap_put(&ts->known, p->names[i], NULL, NULL);
                    msm_name_unref(*slot);
                    *slot = msm_name_intern(p->versions[i]);
                }
            }
            for (int i = 0; i < p->n_removed; i++) {
                void *v = NULL;
                if (msm_strmap_del(&ts->known, p->removed[i], &v)) {
                    msm_name_unref(v);
                }
            }
        }
    }
    if (p) {
        pend_free(p);
    }
    if (c->gen != s->gen || s->state != SRC_ACTIVE) {
        return; /* the stream it answers is gone; the new one starts from the state above */
    }
    if (ts->pending > 0) {
        ts->pending--;
    }
    if (!s->delta) {
        send_sotw(t, s, ts, c->nonce, c->accepted ? NULL : c->error);
    } else {
        struct msm_xds_req r = {
            .type_url = ts->type_url,
            .nonce = c->nonce,
            .error = c->accepted ? NULL : c->error,
        };
        send_request(t, s, &r);
    }
}

static void drain_cmds(struct msm_xds_thread *t)
{
    pthread_mutex_lock(&t->mu);
    struct msm_xds_cmd *c = t->q_head;
    t->q_head = t->q_tail = NULL;
    pthread_mutex_unlock(&t->mu);
    while (c) {
        struct msm_xds_cmd *next = c->next;
        switch (c->kind) {
        case MSM_XDS_CMD_ADD_SOURCE:
            cmd_add_source(t, c);
            break;
        case MSM_XDS_CMD_SUBSCRIBE:
            cmd_subscribe(t, c);
            break;
        case MSM_XDS_CMD_DECISION:
            cmd_decision(t, c);
            break;
        }
        msm__xds_cmd_free(c);
        c = next;
    }
}

/* Start streams that have something to ask for and whose backoff is over; send what queued. */
static void run_sources(struct msm_xds_thread *t)
{
    int64_t now = now_ms();
    for (int i = 0; i < t->n_srcs; i++) {
        struct tsource *s = t->srcs[i];
        bool want = false;
        for (int k = 0; k < s->n_types && !want; k++) {
            want = interested(s->types[k]);
        }
        if (s->state == SRC_IDLE && want) {
            start_stream(t, s);
        } else if (s->state == SRC_BACKOFF && now >= s->retry_at) {
            if (want) {
                start_stream(t, s);
            } else {
                s->state = SRC_IDLE;
            }
        }
        flush(s);
    }
}

static int64_t poll_ms(struct msm_xds_thread *t)
{
    int64_t now = now_ms(), wait = POLL_MS;
    for (int i = 0; i < t->n_srcs; i++) {
        if (t->srcs[i]->state == SRC_BACKOFF) {
            int64_t d = t->srcs[i]->retry_at - now;
            wait = d < wait ? d : wait;
        }
    }
    return wait < 0 ? 0 : wait;
}

/* ---- thread ------------------------------------------------------------------------------- */

static void shutdown_calls(struct msm_xds_thread *t)
{
    for (int i = 0; i < t->n_srcs; i++) {
        struct tsource *s = t->srcs[i];
        if (s->call) {
            struct tcall *c = s->call;
            s->call = NULL;
            c->s = NULL;
            grpc_call_cancel(c->call, NULL);
            tcall_maybe_free(c);
        }
    }
    int64_t until = now_ms() + SHUTDOWN_WAIT_MS;
    while ((t->live_calls > 0 || atomic_load(&t->kicks_in_flight) > 0) && now_ms() < until) {
        grpc_event ev = grpc_completion_queue_next(t->cq, deadline_in_ms(100), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            on_tag(t, ev.tag, ev.success);
        }
    }
    /* Connectivity watches are not re-armed once stopping; destroying the channels (thread
     * free) completes them and the queue's final drain collects them. */
    if (t->live_calls > 0) {
        msm_log(MSM_LOG_ERROR, MSM_LC_XDS, "xds: %d gRPC calls did not finish at shutdown",
                t->live_calls);
    }
}

static void *thread_main(void *arg)
{
    struct msm_xds_thread *t = arg;
    while (!atomic_load(&t->stop)) {
        grpc_event ev = grpc_completion_queue_next(t->cq, deadline_in_ms(poll_ms(t)), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            on_tag(t, ev.tag, ev.success);
        }
        /* Clear before draining: a command posted after the drain re-arms a kick. */
        atomic_store(&t->kick_pending, false);
        drain_cmds(t);
        if (!atomic_load(&t->stop)) {
            run_sources(t);
        }
    }
    shutdown_calls(t);
    return NULL;
}

struct msm_xds_thread *msm__xds_thread_new(struct msm_xds *x)
{
    grpc_init();
    struct msm_xds_thread *t = MSM_NEW(struct msm_xds_thread);
    t->x = x;
    pthread_mutex_init(&t->mu, NULL);
    atomic_init(&t->kick_pending, false);
    atomic_init(&t->kicks_in_flight, 0);
    atomic_init(&t->stop, false);
    t->cq = grpc_completion_queue_create_for_next(NULL);
    t->lame = grpc_lame_client_channel_create("msm-xds-kick", GRPC_STATUS_UNAVAILABLE, "kick");
    gpr_timespec now = gpr_now(GPR_CLOCK_REALTIME);
    t->rng = ((uint64_t)now.tv_sec * 1000000007ULL) ^ (uint64_t)now.tv_nsec ^
             (uint64_t)(uintptr_t)t;
    if (!t->rng) {
        t->rng = 88172645463325252ULL;
    }
    return t;
}

int msm__xds_thread_start(struct msm_xds_thread *t)
{
    int rc = pthread_create(&t->th, NULL, thread_main, t);
    if (rc != 0) {
        return -rc;
    }
    t->running = true;
    return 0;
}

void msm__xds_thread_post(struct msm_xds_thread *t, struct msm_xds_cmd *c)
{
    c->next = NULL;
    pthread_mutex_lock(&t->mu);
    if (t->q_tail) {
        t->q_tail->next = c;
    } else {
        t->q_head = c;
    }
    t->q_tail = c;
    pthread_mutex_unlock(&t->mu);
    kick(t);
}

static void tsource_free(struct tsource *s)
{
    clear_sendq(s);
    if (s->cx_up) {
        msm_stat_dec(s->cx->upstream_cx_active);
    }
    if (s->ch) {
        grpc_channel_destroy(s->ch);
    }
    for (int i = 0; i < s->n_types; i++) {
        tstate_free(s->types[i]);
    }
    free(s->types);
    msm_xds_target_deinit(&s->tg);
    free(s);
}

void msm__xds_thread_free(struct msm_xds_thread *t)
{
    if (!t) {
        return;
    }
    if (t->running) {
        atomic_store(&t->stop, true);
        atomic_store(&t->kick_pending, false);
        kick(t);
        pthread_join(t->th, NULL);
    } else {
        /* Never started: complete what is on the queue (kicks) here. */
        shutdown_calls(t);
    }
    /* Commands never handled are dropped. */
    pthread_mutex_lock(&t->mu);
    struct msm_xds_cmd *c = t->q_head;
    t->q_head = t->q_tail = NULL;
    pthread_mutex_unlock(&t->mu);
    while (c) {
        struct msm_xds_cmd *next = c->next;
        msm__xds_cmd_free(c);
        c = next;
    }
    for (int i = 0; i < t->n_srcs; i++) {
        tsource_free(t->srcs[i]);
    }
    free(t->srcs);
    grpc_channel_destroy(t->lame);
    grpc_completion_queue_shutdown(t->cq);
    while (grpc_completion_queue_next(t->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(t->cq);
    pthread_mutex_destroy(&t->mu);
    free(t);
    grpc_shutdown_blocking();
}
