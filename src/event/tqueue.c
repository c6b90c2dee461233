#include "event/tqueue.h"

#include <stdlib.h>

#include "common/alloc.h"
#include "event/deferred.h"

struct msm_tq {
    ev_timer w;
    struct ev_loop *loop;
    struct msm_tq_entry *head, *tail;
    double armed_at; /* the deadline w was armed for (valid while w is active) */
    uint32_t ms;
    bool firing;
};

/* The loop's queues by duration: open addressing, power-of-two capacity. Durations can come
 * from requests (grpc-timeout): past <limit> queues, empty ones are freed before a new one is
 * made, so their number stays bounded by the timeouts actually running. */
struct tq_set {
    struct ev_loop *loop;
    struct msm_tq **slot;
    size_t cap, n, limit;
};

#define TQ_MIN_LIMIT 64

static const char tq_key;

static void on_fire(struct ev_loop *loop, ev_timer *w, int revents);

static void *set_create(struct ev_loop *loop)
{
    struct tq_set *s = MSM_NEW(struct tq_set);
    s->loop = loop;
    s->cap = 8;
    s->limit = TQ_MIN_LIMIT;
    s->slot = msm_xcalloc(s->cap, sizeof(*s->slot));
    return s;
}

static void set_destroy(void *state)
{
    struct tq_set *s = state;
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slot[i]) {
            ev_timer_stop(s->loop, &s->slot[i]->w);
            free(s->slot[i]);
        }
    }
    free(s->slot);
    free(s);
}

static size_t hash_ms(uint32_t ms, size_t cap)
{
    return (size_t)((ms * 2654435761u) & (cap - 1));
}

static void set_put(struct msm_tq **slot, size_t cap, struct msm_tq *q)
{
    size_t i = hash_ms(q->ms, cap);
    while (slot[i]) {
        i = (i + 1) & (cap - 1);
    }
    slot[i] = q;
}

/* Free the empty queues and rebuild the table with the others (into <cap> slots). */
static void set_rebuild(struct tq_set *s, size_t cap)
{
    struct msm_tq **slot = msm_xcalloc(cap, sizeof(*slot));
    size_t n = 0;
    for (size_t j = 0; j < s->cap; j++) {
        struct msm_tq *q = s->slot[j];
        if (!q) {
            continue;
        }
        if (!q->head && !q->firing) {
            ev_timer_stop(s->loop, &q->w);
            free(q);
            continue;
        }
        set_put(slot, cap, q);
        n++;
    }
    free(s->slot);
    s->slot = slot;
    s->cap = cap;
    s->n = n;
}

static struct msm_tq *tq_get(struct ev_loop *loop, uint32_t ms)
{
    struct tq_set *s = msm_loop_local(loop, &tq_key, set_create, set_destroy);
    size_t i = hash_ms(ms, s->cap);
    for (; s->slot[i]; i = (i + 1) & (s->cap - 1)) {
        if (s->slot[i]->ms == ms) {
            return s->slot[i];
        }
    }
    if (s->n >= s->limit) {
        set_rebuild(s, s->cap);
        s->limit = s->n * 2 > TQ_MIN_LIMIT ? s->n * 2 : TQ_MIN_LIMIT;
    }
    if ((s->n + 1) * 2 > s->cap) {
        set_rebuild(s, s->cap * 2);
    }
    struct msm_tq *q = MSM_NEW(struct msm_tq);
    q->loop = loop;
    q->ms = ms;
    ev_timer_init(&q->w, on_fire, 0, 0);
    set_put(s->slot, s->cap, q);
    s->n++;
    return q;
}

/* Make w fire no later than the head's deadline. */
static void arm(struct msm_tq *q)
{
    if (q->firing || !q->head) {
        return; /* on_fire arms for what is left when it is done */
    }
    if (ev_is_active(&q->w)) {
        if (q->armed_at <= q->head->at) {
            return; /* fires early enough: on_fire skips what is not due */
        }
        ev_timer_stop(q->loop, &q->w);
    }
    double left = q->head->at - ev_now(q->loop);
    ev_timer_set(&q->w, left > 0 ? left : 0, 0);
    ev_timer_start(q->loop, &q->w);
    q->armed_at = q->head->at;
}

static void unlink_entry(struct msm_tq *q, struct msm_tq_entry *e)
{
    if (e->prev) {
        e->prev->next = e->next;
    } else {
        q->head = e->next;
    }
    if (e->next) {
        e->next->prev = e->prev;
    } else {
        q->tail = e->prev;
    }
    e->prev = e->next = NULL;
    e->q = NULL;
}

static void on_fire(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct msm_tq *q = MSM_CONTAINER_OF(w, struct msm_tq, w);
    double now = ev_now(loop);
    q->firing = true;
    /* The microsecond absorbs rounding between the deadline and libev's own arithmetic. */
    while (q->head && q->head->at <= now + 1e-6) {
        struct msm_tq_entry *e = q->head;
        unlink_entry(q, e);
        e->cb(loop, e);
    }
    q->firing = false;
    arm(q); /* for what is left (libev stopped w before calling here) */
}

void msm_tq_start_from(struct ev_loop *loop, struct msm_tq_entry *e, uint32_t ms, double since)
{
    if (e->q) {
        msm_tq_stop(e);
    }
    struct msm_tq *q = tq_get(loop, ms);
    e->q = q;
    e->at = since + ms / 1000.0;
    /* Later than (or as late as) everything queued, unless <since> is in the past. */
    struct msm_tq_entry *p = q->tail;
    while (p && p->at > e->at) {
        p = p->prev;
    }
    e->prev = p;
    e->next = p ? p->next : q->head;
    if (e->next) {
        e->next->prev = e;
    } else {
        q->tail = e;
    }
    if (p) {
        p->next = e;
    } else {
        q->head = e;
        arm(q);
    }
}

void msm_tq_start(struct ev_loop *loop, struct msm_tq_entry *e, uint32_t ms)
{
    msm_tq_start_from(loop, e, ms, ev_now(loop));
}

void msm_tq_stop(struct msm_tq_entry *e)
{
    struct msm_tq *q = e->q;
    if (!q) {
        return;
    }
    unlink_entry(q, e);
    if (!q->head && !q->firing) {
        /* Nothing left: an armed timer would only wake the loop (and keep it alive). */
        ev_timer_stop(q->loop, &q->w);
    }
}
