#pragma once
/* Per-thread recycling of fixed-size per-request objects (streams, filter instances, codec
 * streams). A request allocates and frees the same few structures every time; some are over
 * 1 KiB, and glibc answers each such allocation with malloc_consolidate (a sweep of its fast
 * bins) and returns the memory to the system in between. Freed objects go to a bounded stack
 * per size class and thread instead, and come back zeroed.
 *
 * msm_recycle_free must be called on the thread that will reuse the memory (any thread is
 * safe: the memory is plain heap) with the size given to msm_recycle_calloc. Under
 * AddressSanitizer nothing is recycled, so use-after-free stays detectable. */
#include <stddef.h>

/* Zeroed memory of at least <size> bytes; never NULL (out of memory aborts). */
void *msm_recycle_calloc(size_t size);
/* The same without zeroing. */
void *msm_recycle_alloc(size_t size);
/* Give back <p> (NULL is fine), allocated by msm_recycle_[c]alloc(<size>). */
void msm_recycle_free(void *p, size_t size);
/* Free this thread's recycled objects (at thread exit, with msm_buf_thread_cleanup). */
void msm_recycle_thread_cleanup(void);
