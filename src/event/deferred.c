#include "event/deferred.h"

#include <stdlib.h>

#include "buffer/recycle.h"
#include "common/alloc.h"

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    msm_defer_run(loop);
}

static void run_queue(struct msm_ready **q)
{
    while (*q) {
        struct msm_ready *r = *q;
        *q = r->next;
        r->next = NULL;
        r->fn(r);
    }
}

/* One round of libev callbacks (after a poll, or the prepare watchers before it: events fed
 * during a round are invoked with the next prepare, before the loop blocks). */
static void invoke_pending(struct ev_loop *loop)
{
    struct msm_loop_ctx *c = msm_loop_ctx(loop);
    /* Until nothing is pending: an event fed by the queued work (a TLS connection with records
     * already decrypted, a flush that re-enabled reading) must run before the loop blocks, as
     * libev's own invoke loop would run it; the prepare round is followed by the poll. */
    do {
        c->in_round = true;
        do {
            ev_invoke_pending(loop);
            /* The io callbacks ran last-in first-out and each pushed itself at the head: the
             * queue is in readiness order. */
            run_queue(&c->ready);
        } while (ev_pending_count(loop));
        c->in_round = false;
        run_queue(&c->flush);
    } while (ev_pending_count(loop));
}

bool msm_ready_defer(struct ev_loop *loop, struct msm_ready *r)
{
    struct msm_loop_ctx *c = msm_loop_ctx(loop);
    if (!c || !c->in_round) {
        return false;
    }
    r->next = c->ready;
    c->ready = r;
    return true;
}

bool msm_flush_defer(struct ev_loop *loop, struct msm_ready *r)
{
    struct msm_loop_ctx *c = msm_loop_ctx(loop);
    if (!c || !c->in_round) {
        return false;
    }
    r->next = c->flush;
    c->flush = r;
    return true;
}

struct ev_loop *msm_loop_new(void *owner, int is_default)
{
    struct ev_loop *loop = is_default ? ev_default_loop(EVFLAG_AUTO) : ev_loop_new(EVFLAG_AUTO);
    if (!loop) {
        return NULL;
    }
    struct msm_loop_ctx *c = MSM_NEW(struct msm_loop_ctx);
    c->owner = owner;
    c->tail = &c->deferred;
    ev_prepare_init(&c->prep, on_prepare);
    ev_prepare_start(loop, &c->prep);
    ev_unref(loop);
    ev_set_userdata(loop, c);
    ev_set_invoke_pending_cb(loop, invoke_pending);
    return loop;
}

void msm_loop_free(struct ev_loop *loop)
{
    struct msm_loop_ctx *c = msm_loop_ctx(loop);
    msm_defer_run(loop);
    while (c->locals) {
        struct msm_loop_local *l = c->locals;
        c->locals = l->next;
        l->destroy(l->state);
        free(l);
        msm_defer_run(loop);
    }
    ev_ref(loop);
    ev_prepare_stop(loop, &c->prep);
    ev_set_invoke_pending_cb(loop, ev_invoke_pending);
    free(c);
    ev_set_userdata(loop, NULL);
    if (!ev_is_default_loop(loop)) {
        ev_loop_destroy(loop);
    }
}

struct msm_loop_ctx *msm_loop_ctx(struct ev_loop *loop)
{
    return ev_userdata(loop);
}

void msm_defer(struct ev_loop *loop, msm_task_fn *fn, void *p)
{
    struct msm_loop_ctx *c = msm_loop_ctx(loop);
    struct msm_task *t = msm_recycle_alloc(sizeof(*t)); /* two per HTTP request */
    t->next = NULL;
    t->fn = fn;
    t->arg = p;
    *c->tail = t;
    c->tail = &t->next;
}

void msm_defer_run(struct ev_loop *loop)
{
    struct msm_loop_ctx *c = msm_loop_ctx(loop);
    while (c->deferred) {
        struct msm_task *t = c->deferred;
        c->deferred = NULL;
        c->tail = &c->deferred;
        while (t) {
            struct msm_task *n = t->next;
            t->fn(t->arg);
            msm_recycle_free(t, sizeof(*t));
            t = n;
        }
    }
}

void *msm_loop_local(struct ev_loop *loop, const void *key, void *(*create)(struct ev_loop *loop),
                     void (*destroy)(void *state))
{
    struct msm_loop_ctx *c = msm_loop_ctx(loop);
    for (struct msm_loop_local *l = c->locals; l; l = l->next) {
        if (l->key == key) {
            return l->state;
        }
    }
    struct msm_loop_local *l = MSM_NEW(struct msm_loop_local);
    l->key = key;
    l->state = create(loop);
    l->destroy = destroy;
    l->next = c->locals;
    c->locals = l;
    return l->state;
}

unsigned long long msm_next_conn_id(void)
{
    static unsigned long long id;
    return __atomic_fetch_add(&id, 1, __ATOMIC_RELAXED);
}
