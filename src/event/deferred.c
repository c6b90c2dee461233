#include "event/deferred.h"

#include <stdlib.h>

#include "common/alloc.h"

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    msm_defer_run(loop);
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
    struct msm_task *t = msm_xmalloc(sizeof(*t));
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
            free(t);
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
