#pragma once
/* The stats flush timer (main thread), Envoy's stats_flush_interval: every interval (bootstrap
 * stats_flush_interval, default 5 s) it closes the histograms' interval and calls the owner's
 * callback, which refreshes the gauges that are sampled rather than counted (server.
 * memory_allocated, memory_heap_size, memory_physical_size, total_connections...).
 * Also the process memory numbers (/memory and those gauges). */
#include <ev.h>
#include <stdint.h>

#include "stats/stats.h"

struct msm_memory_usage {
    uint64_t allocated;      /* malloc'ed bytes in use (mallinfo2 uordblks + hblkhd) */
    uint64_t heap_size;      /* bytes the allocator holds (arena + hblkhd) */
    uint64_t physical;       /* resident set size */
    uint64_t pageheap_free;  /* 0: glibc has no page heap */
    uint64_t pageheap_unmapped;
    uint64_t thread_cache;
};

void msm_memory_usage(struct msm_memory_usage *m);

typedef void msm_stats_flush_cb(void *arg);

struct msm_stats_flusher {
    struct ev_loop *loop;
    struct msm_stats_store *st;
    ev_timer timer;
    ev_idle warm; /* msm_stats_prewarm in small steps while the loop is idle */
    msm_stats_flush_cb *cb;
    void *arg;
    uint64_t flushes;
};

/* Start flushing every <interval_ms> (0 = 5000). <cb> may be NULL. */
void msm_stats_flusher_start(struct msm_stats_flusher *f, struct ev_loop *loop,
                             struct msm_stats_store *st, uint32_t interval_ms,
                             msm_stats_flush_cb *cb, void *arg);
void msm_stats_flusher_stop(struct msm_stats_flusher *f);
/* Flush now (also what the timer does). */
void msm_stats_flush_now(struct msm_stats_flusher *f);
