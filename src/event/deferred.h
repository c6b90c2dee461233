#pragma once
/* Per-loop context: deferred deletion (objects whose callbacks may still be on the stack are
 * freed before the loop next blocks, as Envoy's dispatcher deferredDelete does) and a
 * back-pointer to the owning thread object. */
#include <ev.h>

#include "event/loop.h"

struct msm_loop_ctx {
    ev_prepare prep;
    struct msm_task *deferred;
    struct msm_task **tail;
    void *owner; /* struct msm_worker * or struct msm_server * */
    unsigned long long next_conn_id;
    struct msm_loop_local *locals;
};

/* Per-loop state of a subsystem that keeps objects beyond any connection (RTSP fan-out
 * sources): see msm_loop_local. */
struct msm_loop_local {
    struct msm_loop_local *next;
    const void *key;
    void *state;
    void (*destroy)(void *state);
};

/* Create a loop with a context (EVFLAG_AUTO; main thread uses the default loop). */
struct ev_loop *msm_loop_new(void *owner, int is_default);
void msm_loop_free(struct ev_loop *loop);
struct msm_loop_ctx *msm_loop_ctx(struct ev_loop *loop);
/* Free <p> with <fn> once the current callback stack has unwound. */
void msm_defer(struct ev_loop *loop, msm_task_fn *fn, void *p);
/* Run deferred tasks now (shutdown paths). */
void msm_defer_run(struct ev_loop *loop);
/* The state of <key> on <loop> (the loop's thread only): created by <create> on first use;
 * <destroy> runs when the loop is freed, after its connections are gone and before the last
 * deferred frees, so it may close connections and defer frees itself. */
void *msm_loop_local(struct ev_loop *loop, const void *key, void *(*create)(struct ev_loop *loop),
                     void (*destroy)(void *state));
/* Process-unique connection ids ("[C42]" in logs). */
unsigned long long msm_next_conn_id(void);
