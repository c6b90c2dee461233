#pragma once
/* Per-loop context: deferred deletion (objects whose callbacks may still be on the stack are
 * freed before the loop next blocks, as Envoy's dispatcher deferredDelete does), a back-pointer
 * to the owning thread object, and the dispatch of ready events.
 *
 * Dispatch: libev runs a poll's ready callbacks last-in first-out. Each round of callbacks is
 * wrapped (ev_set_invoke_pending_cb) so that
 * - connection io callbacks only queue themselves (msm_ready_defer) and run after the round, in
 *   the kernel's readiness order: the connection that became ready first is served first;
 * - writes made during the round are coalesced per connection (msm_flush_defer) and leave
 *   after it, one system call for what several callbacks wrote (headers and body, frames of
 *   several streams), as Envoy's connections flush on the next write event.
 * Everything queued runs before the loop blocks again. Outside a round (shutdown paths, code
 * that runs before the loop) nothing is deferred. */
#include <ev.h>
#include <stdbool.h>

#include "event/loop.h"

/* Work queued until the end of the current round of callbacks (see above). */
struct msm_ready {
    struct msm_ready *next;
    void (*fn)(struct msm_ready *r);
};

struct msm_loop_ctx {
    ev_prepare prep;
    bool in_round;           /* libev's callbacks of one round are running */
    struct msm_ready *ready; /* io callbacks of the round, pushed at the head */
    struct msm_ready *flush; /* connections with coalesced writes */
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
/* Queue <r> to run after the current round of callbacks, in the kernel's readiness order. False
 * outside a round: the caller does its work now. */
bool msm_ready_defer(struct ev_loop *loop, struct msm_ready *r);
/* Queue <r> (a connection's flush) to run once the round and its ready queue are done. False
 * outside a round: the caller writes now. */
bool msm_flush_defer(struct ev_loop *loop, struct msm_ready *r);
/* Run deferred tasks now (shutdown paths). */
void msm_defer_run(struct ev_loop *loop);
/* The state of <key> on <loop> (the loop's thread only): created by <create> on first use;
 * <destroy> runs when the loop is freed, after its connections are gone and before the last
 * deferred frees, so it may close connections and defer frees itself. */
void *msm_loop_local(struct ev_loop *loop, const void *key, void *(*create)(struct ev_loop *loop),
                     void (*destroy)(void *state));
/* Process-unique connection ids ("[C42]" in logs). */
unsigned long long msm_next_conn_id(void);
