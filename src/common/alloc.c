#include "common/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n)
{
    fprintf(stderr, "msm-proxy: out of memory allocating %zu bytes, aborting\n", n);
    abort();
}

void *msm_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        oom(n);
    }
    return p;
}

void *msm_xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p) {
        oom(nmemb * size);
    }
    return p;
}

void *msm_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        oom(n);
    }
    return q;
}

void *msm_xgrow(void *p, size_t elem, size_t *cap, size_t need)
{
    size_t c = *cap;
    if (need <= c) {
        return p;
    }
    if (c < 4) {
        c = 4;
    }
    while (c < need) {
        if (c > ((size_t)-1) / 2 / elem) {
            oom((size_t)-1);
        }
        c *= 2;
    }
    *cap = c;
    return msm_xrealloc(p, c * elem);
}

char *msm_xstrdup(const char *s)
{
    return msm_xstrndup(s, strlen(s));
}

char *msm_xstrndup(const char *s, size_t n)
{
    char *p = msm_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *msm_xvasprintf(const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0) {
        n = 0;
    }
    char *p = msm_xmalloc((size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *msm_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = msm_xvasprintf(fmt, ap);
    va_end(ap);
    return p;
}
