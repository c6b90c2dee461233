#pragma once
/* Threads and their loops. Each thread runs one libev loop; threads talk only through
 * mailboxes (a mutex-protected queue plus an ev_async: sends coalesce, so the handler drains the
 * whole queue). No code calls ev_* on another thread's loop. */
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>

typedef void msm_task_fn(void *arg);

struct msm_task {
    struct msm_task *next;
    msm_task_fn *fn;
    void *arg;
};

struct msm_mailbox {
    pthread_mutex_t mu;
    struct msm_task *head, *tail;
    ev_async async;
    struct ev_loop *loop;
};

/* Start a mailbox on <loop> (call on the loop's thread before other threads post). The async
 * watcher is unref'ed so an idle mailbox does not keep the loop alive. */
void msm_mailbox_init(struct msm_mailbox *mb, struct ev_loop *loop);
/* Stop and free queued tasks without running them (loop's thread). */
void msm_mailbox_deinit(struct msm_mailbox *mb);
/* Post <fn>(<arg>) to run on the mailbox's thread. Any thread. Ownership of <arg> passes to
 * the task. */
void msm_mailbox_post(struct msm_mailbox *mb, msm_task_fn *fn, void *arg);
/* Run everything queued now (used at shutdown). */
void msm_mailbox_drain(struct msm_mailbox *mb);

/* ev_timer_stop without the library call for a timer that is neither running nor pending (a
 * per-request timer that was never started, the usual case). */
static inline void msm_timer_stop(struct ev_loop *loop, ev_timer *t)
{
    if (ev_is_active(t) || ev_is_pending(t)) {
        ev_timer_stop(loop, t);
    }
}

/* Monotonic milliseconds (libev's notion of now for the calling loop). */
static inline double msm_now_ms(struct ev_loop *loop)
{
    return ev_now(loop) * 1000.0;
}
