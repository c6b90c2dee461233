#include "event/loop.h"

#include <stdlib.h>

#include "common/alloc.h"

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    msm_mailbox_drain(MSM_CONTAINER_OF(w, struct msm_mailbox, async));
}

void msm_mailbox_init(struct msm_mailbox *mb, struct ev_loop *loop)
{
    pthread_mutex_init(&mb->mu, NULL);
    mb->head = mb->tail = NULL;
    mb->loop = loop;
    ev_async_init(&mb->async, on_async);
    ev_async_start(loop, &mb->async);
    ev_unref(loop);
}

void msm_mailbox_deinit(struct msm_mailbox *mb)
{
    ev_ref(mb->loop);
    ev_async_stop(mb->loop, &mb->async);
    pthread_mutex_lock(&mb->mu);
    struct msm_task *t = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->mu);
    while (t) {
        struct msm_task *n = t->next;
        free(t);
        t = n;
    }
    pthread_mutex_destroy(&mb->mu);
}

void msm_mailbox_post(struct msm_mailbox *mb, msm_task_fn *fn, void *arg)
{
    struct msm_task *t = msm_xmalloc(sizeof(*t));
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;
    pthread_mutex_lock(&mb->mu);
    if (mb->tail) {
        mb->tail->next = t;
    } else {
        mb->head = t;
    }
    mb->tail = t;
    pthread_mutex_unlock(&mb->mu);
    ev_async_send(mb->loop, &mb->async);
}

void msm_mailbox_drain(struct msm_mailbox *mb)
{
    for (;;) {
        pthread_mutex_lock(&mb->mu);
        struct msm_task *t = mb->head;
        mb->head = mb->tail = NULL;
        pthread_mutex_unlock(&mb->mu);
        if (!t) {
            return;
        }
        while (t) {
            struct msm_task *n = t->next;
            t->fn(t->arg);
            free(t);
            t = n;
        }
    }
}
