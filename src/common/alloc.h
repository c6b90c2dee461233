#pragma once
/* Allocation: every allocation in msm-proxy goes through these. Out of memory is fatal (the
 * process aborts with a message): a data plane that limps on after OOM corrupts sessions in
 * ways nobody can debug. None of these ever return NULL. Free with plain free(). */
#include <stdarg.h>
#include <stddef.h>

void *msm_xmalloc(size_t n);
void *msm_xcalloc(size_t nmemb, size_t size);
void *msm_xrealloc(void *p, size_t n);
/* Grow <p> (holding <*cap> elements of <elem> bytes) so it can hold at least <need>. */
void *msm_xgrow(void *p, size_t elem, size_t *cap, size_t need);
char *msm_xstrdup(const char *s);
char *msm_xstrndup(const char *s, size_t n);
char *msm_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *msm_xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

#define MSM_NEW(type) ((type *)msm_xcalloc(1, sizeof(type)))
#define MSM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MSM_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
