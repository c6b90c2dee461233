#pragma once
/* Timeout queues: per-request timeouts without a libev heap update per start and stop.
 *
 * All timeouts of one duration on one loop share one queue: deadlines started "now + ms" only
 * grow, so a start appends at the tail and a stop unlinks in O(1); one ev_timer per queue is
 * armed for the head's deadline. The timer is lazy: removing the head leaves it armed (when it
 * fires, entries not yet due are skipped and it is re-armed for the new head); it is stopped
 * only when the queue empties. An entry fires at its deadline exactly as an ev_timer started
 * with the same timeout would (libev's notion of now, ev_now()).
 *
 * Loop-local (msm_loop_local): use on the loop's thread only. Queues live until the loop is
 * freed; entries must be stopped before their memory goes. */
#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

struct msm_tq_entry;
struct msm_tq;

/* Called once the deadline passed, with <e> already out of its queue (it may start again). */
typedef void msm_tq_fn(struct ev_loop *loop, struct msm_tq_entry *e);

struct msm_tq_entry {
    struct msm_tq_entry *prev, *next;
    struct msm_tq *q; /* NULL: not started */
    double at;        /* deadline (ev_now() seconds) */
    msm_tq_fn *cb;
};

static inline void msm_tq_entry_init(struct msm_tq_entry *e, msm_tq_fn *cb)
{
    e->prev = e->next = NULL;
    e->q = NULL;
    e->at = 0;
    e->cb = cb;
}

static inline bool msm_tq_active(const struct msm_tq_entry *e)
{
    return e->q != NULL;
}

/* (Re)start <e> to fire <ms> (> 0) milliseconds from now. */
void msm_tq_start(struct ev_loop *loop, struct msm_tq_entry *e, uint32_t ms);
/* (Re)start <e> to fire <ms> (> 0) milliseconds after <since>, an ev_now() time not in the
 * future (an idle timeout counted from the last activity). */
void msm_tq_start_from(struct ev_loop *loop, struct msm_tq_entry *e, uint32_t ms, double since);
/* Stop <e> (nothing if not started). */
void msm_tq_stop(struct msm_tq_entry *e);
