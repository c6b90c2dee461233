#include "stats/flush.h"

#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"

void msm_memory_usage(struct msm_memory_usage *m)
{
    memset(m, 0, sizeof(*m));
    struct mallinfo2 mi = mallinfo2();
    m->allocated = (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
    m->heap_size = (uint64_t)mi.arena + (uint64_t)mi.hblkhd;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        unsigned long size = 0, resident = 0;
        if (fscanf(f, "%lu %lu", &size, &resident) == 2) {
            m->physical = (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
        }
        fclose(f);
    }
    if (!m->allocated) {
        /* Another allocator (a sanitizer's, tcmalloc preloaded) leaves mallinfo2 empty: the
         * resident size is the best remaining estimate. */
        m->allocated = m->heap_size = m->physical;
    }
}

static void on_warm(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    struct msm_stats_flusher *f = MSM_CONTAINER_OF(w, struct msm_stats_flusher, warm);
    /* ~2000 extractions: a few milliseconds, so nothing else waits long. */
    if (!msm_stats_prewarm(f->st, 2000)) {
        ev_idle_stop(loop, w);
        /* And the name order every export starts from (cached until a stat comes or goes): a
         * big store sorts it in a thread, collected by the next export. */
        if (msm_stats_order_prefetch(f->st, false) ||
            msm_stats_order_fresh(f->st, MSM_STATS_ORDER_NAME)) {
            return; /* (a fresh order: an export sorted it, no copy of it is needed here) */
        }
        size_t n = 0;
        struct msm_stat **v = msm_stats_list_ordered(f->st, MSM_STATS_ORDER_NAME,
                                                     msm_stats_cmp_name, NULL, &n);
        msm_stats_list_free(v, n);
    }
}

void msm_stats_flush_now(struct msm_stats_flusher *f)
{
    msm_stats_flush_histograms(f->st);
    if (f->loop && !ev_is_active(&f->warm)) {
        ev_idle_start(f->loop, &f->warm);
    }
    f->flushes++;
    if (f->cb) {
        f->cb(f->arg);
    }
}

static void on_flush(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_stats_flusher *f = MSM_CONTAINER_OF(w, struct msm_stats_flusher, timer);
    msm_stats_flush_now(f);
}

void msm_stats_flusher_start(struct msm_stats_flusher *f, struct ev_loop *loop,
                             struct msm_stats_store *st, uint32_t interval_ms,
                             msm_stats_flush_cb *cb, void *arg)
{
    f->loop = loop;
    f->st = st;
    f->cb = cb;
    f->arg = arg;
    f->flushes = 0;
    double iv = (interval_ms ? interval_ms : 5000) / 1000.0;
    ev_timer_init(&f->timer, on_flush, iv, iv);
    ev_timer_start(loop, &f->timer);
    ev_idle_init(&f->warm, on_warm);
    ev_idle_start(loop, &f->warm);
}

void msm_stats_flusher_stop(struct msm_stats_flusher *f)
{
    if (f->loop) {
        ev_timer_stop(f->loop, &f->timer);
        ev_idle_stop(f->loop, &f->warm);
    }
}
