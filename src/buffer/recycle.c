#include "buffer/recycle.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

#if defined(__SANITIZE_ADDRESS__)
#define RECYCLE_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RECYCLE_OFF 1
#endif
#endif

#ifdef RECYCLE_OFF

void *msm_recycle_alloc(size_t size)
{
    return msm_xmalloc(size);
}

void msm_recycle_free(void *p, size_t size)
{
    (void)size;
    free(p);
}

void msm_recycle_thread_cleanup(void)
{
}

#else

/* Size classes 64 B .. 8 KiB (powers of two); larger objects go straight to malloc. */
#define CLASS_MIN_SHIFT 6
#define N_CLASSES 8
/* Bytes kept per class and thread: requests arrive in bursts (one event-loop pass serves every
 * ready connection), so a class must hold a burst's worth of objects to be reused by the next. */
#define CLASS_BUDGET (256 * 1024)

struct free_obj {
    struct free_obj *next;
};

static _Thread_local struct free_obj *stack[N_CLASSES];
static _Thread_local int depth[N_CLASSES];

static int class_of(size_t size)
{
    size_t c = (size_t)1 << CLASS_MIN_SHIFT;
    for (int i = 0; i < N_CLASSES; i++, c <<= 1) {
        if (size <= c) {
            return i;
        }
    }
    return -1;
}

void *msm_recycle_alloc(size_t size)
{
    int k = class_of(size);
    if (k < 0) {
        return msm_xmalloc(size);
    }
    struct free_obj *o = stack[k];
    if (!o) {
        return msm_xmalloc((size_t)1 << (CLASS_MIN_SHIFT + k));
    }
    stack[k] = o->next;
    depth[k]--;
    return o;
}

void msm_recycle_free(void *p, size_t size)
{
    if (!p) {
        return;
    }
    int k = class_of(size);
    if (k >= 0 && (size_t)depth[k] << (CLASS_MIN_SHIFT + k) < CLASS_BUDGET) {
        struct free_obj *o = p;
        o->next = stack[k];
        stack[k] = o;
        depth[k]++;
        return;
    }
    free(p);
}

void msm_recycle_thread_cleanup(void)
{
    for (int k = 0; k < N_CLASSES; k++) {
        while (stack[k]) {
            struct free_obj *o = stack[k];
            stack[k] = o->next;
            free(o);
        }
        depth[k] = 0;
    }
}

#endif

void *msm_recycle_calloc(size_t size)
{
    void *p = msm_recycle_alloc(size);
    memset(p, 0, size); /* the caller sees <size> bytes only */
    return p;
}
