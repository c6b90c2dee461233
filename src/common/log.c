#include "common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"

int msm_log_levels[MSM_LC_COUNT] = {
#define MSM_LOG_X(e, s) [MSM_LC_##e] = MSM_LOG_INFO,
    MSM_LOG_COMPONENTS(MSM_LOG_X)
#undef MSM_LOG_X
};

static const char *const component_names[MSM_LC_COUNT] = {
#define MSM_LOG_X(e, s) [MSM_LC_##e] = s,
    MSM_LOG_COMPONENTS(MSM_LOG_X)
#undef MSM_LOG_X
};

static const char *const level_names[] = {"trace", "debug", "info", "warning",
                                          "error", "critical", "off"};
static const char level_short[] = "TDIWEC";

/* A compiled pattern: literal text and flag characters. */
struct piece {
    char flag; /* 0 = literal */
    char *lit;
};

struct pattern {
    struct piece *p;
    int n;
};

struct format {
    struct pattern text;
    char **keys; /* json mode when nkeys > 0 */
    struct pattern *vals;
    int nkeys;
    struct format *retired; /* the format this one replaced: kept reachable, never freed */
};

/* The active format is replaced rarely (startup) and read on every line; lines in flight keep
 * the old one, which is never freed but stays reachable through <retired> (a handful of bytes
 * per reconfiguration; leak checkers stay quiet). */
static struct format *active;
static pthread_mutex_t fmt_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = 2;

int msm_log_level_parse(const char *s)
{
    if (!strcmp(s, "warn")) {
        return MSM_LOG_WARN;
    }
    for (int i = 0; i < (int)MSM_ARRAY_SIZE(level_names); i++) {
        if (!strcmp(s, level_names[i])) {
            return i;
        }
    }
    return -1;
}

const char *msm_log_level_name(enum msm_log_level lvl)
{
    return (unsigned)lvl < MSM_ARRAY_SIZE(level_names) ? level_names[lvl] : "?";
}

int msm_log_component_find(const char *name)
{
    for (int i = 0; i < MSM_LC_COUNT; i++) {
        if (!strcmp(name, component_names[i])) {
            return i;
        }
    }
    return -1;
}

const char *msm_log_component_name(enum msm_log_component c)
{
    return (unsigned)c < MSM_LC_COUNT ? component_names[c] : "?";
}

void msm_log_set_all(enum msm_log_level lvl)
{
    for (int i = 0; i < MSM_LC_COUNT; i++) {
        __atomic_store_n(&msm_log_levels[i], (int)lvl, __ATOMIC_RELAXED);
    }
}

void msm_log_set(enum msm_log_component c, enum msm_log_level lvl)
{
    __atomic_store_n(&msm_log_levels[c], (int)lvl, __ATOMIC_RELAXED);
}

void msm_log_set_fd(int fd)
{
    log_fd = fd;
}

static void compile(struct pattern *out, const char *pat)
{
    out->p = NULL;
    out->n = 0;
    size_t cap = 0;
    const char *s = pat;
    while (*s) {
        out->p = msm_xgrow(out->p, sizeof(*out->p), &cap, (size_t)out->n + 1);
        struct piece *pc = &out->p[out->n++];
        if (s[0] == '%' && s[1]) {
            pc->flag = s[1];
            pc->lit = NULL;
            s += 2;
            continue;
        }
        const char *e = strchr(s + 1, '%');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        pc->flag = 0;
        pc->lit = msm_xstrndup(s, len);
        s += len;
    }
}

int msm_log_set_format(const char *pattern, const char *const *json, int njson)
{
    struct format *f = MSM_NEW(struct format);
    if (json && njson > 0) {
        f->nkeys = njson;
        f->keys = msm_xcalloc((size_t)njson, sizeof(char *));
        f->vals = msm_xcalloc((size_t)njson, sizeof(struct pattern));
        for (int i = 0; i < njson; i++) {
            f->keys[i] = msm_xstrdup(json[2 * i]);
            compile(&f->vals[i], json[2 * i + 1]);
        }
    } else {
        compile(&f->text, pattern ? pattern : MSM_LOG_DEFAULT_FORMAT);
    }
    pthread_mutex_lock(&fmt_lock);
    f->retired = active;
    __atomic_store_n(&active, f, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&fmt_lock);
    return 0;
}

/* Bounded line buffer; a line longer than this is truncated, never split. */
struct line {
    char b[8192];
    size_t n;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (n > sizeof(l->b) - 1 - l->n) {
        n = sizeof(l->b) - 1 - l->n;
    }
    memcpy(l->b + l->n, s, n);
    l->n += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void putf(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct line *l, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0) {
        put(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
    }
}

/* JSON string escaping (without the quotes). */
static void put_json(struct line *l, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': puts_(l, "\\\""); break;
        case '\\': puts_(l, "\\\\"); break;
        case '\n': puts_(l, "\\n"); break;
        case '\r': puts_(l, "\\r"); break;
        case '\t': puts_(l, "\\t"); break;
        default:
            if (c < 0x20) {
                putf(l, "\\u%04x", c);
            } else {
                put(l, (const char *)&c, 1);
            }
        }
    }
}

struct ctx {
    struct timespec ts;
    struct tm tm;
    enum msm_log_level lvl;
    enum msm_log_component comp;
    const char *file, *func, *msg;
    int line;
    bool json;
};

static void render(struct line *l, const struct pattern *p, const struct ctx *c)
{
    for (int i = 0; i < p->n; i++) {
        const struct piece *pc = &p->p[i];
        if (!pc->flag) {
            if (c->json) {
                put_json(l, pc->lit, strlen(pc->lit));
            } else {
                puts_(l, pc->lit);
            }
            continue;
        }
        const struct tm *tm = &c->tm;
        switch (pc->flag) {
        case 'Y': putf(l, "%04d", tm->tm_year + 1900); break;
        case 'm': putf(l, "%02d", tm->tm_mon + 1); break;
        case 'd': putf(l, "%02d", tm->tm_mday); break;
        case 'H': putf(l, "%02d", tm->tm_hour); break;
        case 'M': putf(l, "%02d", tm->tm_min); break;
        case 'S': putf(l, "%02d", tm->tm_sec); break;
        case 'T': putf(l, "%02d:%02d:%02d", tm->tm_hour, tm->tm_min, tm->tm_sec); break;
        case 'D': putf(l, "%02d/%02d/%02d", tm->tm_mon + 1, tm->tm_mday, tm->tm_year % 100); break;
        case 'e': putf(l, "%03ld", c->ts.tv_nsec / 1000000); break;
        case 'f': putf(l, "%06ld", c->ts.tv_nsec / 1000); break;
        case 'F': putf(l, "%09ld", c->ts.tv_nsec); break;
        case 'z': puts_(l, "+00:00"); break;
        case 'l': puts_(l, level_names[c->lvl]); break;
        case 'L': put(l, &level_short[c->lvl < MSM_LOG_OFF ? c->lvl : 0], 1); break;
        case 'n': puts_(l, component_names[c->comp]); break;
        case 't': putf(l, "%ld", (long)syscall(SYS_gettid)); break;
        case 'P': putf(l, "%ld", (long)getpid()); break;
        case 'g': puts_(l, c->file); break;
        case 's': {
            const char *b = strrchr(c->file, '/');
            puts_(l, b ? b + 1 : c->file);
            break;
        }
        case '#': putf(l, "%d", c->line); break;
        case '!': puts_(l, c->func); break;
        case 'v':
            if (c->json) {
                put_json(l, c->msg, strlen(c->msg));
            } else {
                puts_(l, c->msg);
            }
            break;
        case '_': /* Envoy: message with newlines escaped */
        case 'j': /* Envoy: JSON-escaped message */
            put_json(l, c->msg, strlen(c->msg));
            break;
        case '%': put(l, "%", 1); break;
        default: {
            char tmp[2] = {'%', pc->flag};
            put(l, tmp, 2);
        }
        }
    }
}

/* Source paths are logged relative to the source tree, as Envoy logs "source/...". */
static const char *short_file(const char *file)
{
#ifdef MSM_SOURCE_DIR
    size_t n = strlen(MSM_SOURCE_DIR);
    if (!strncmp(file, MSM_SOURCE_DIR, n) && file[n] == '/') {
        return file + n + 1;
    }
#endif
    return file;
}

void msm_log_write(enum msm_log_level lvl, enum msm_log_component comp, const char *file,
                   int line, const char *func, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct format *f = __atomic_load_n(&active, __ATOMIC_ACQUIRE);
    if (!f) {
        msm_log_set_format(NULL, NULL, 0);
        f = __atomic_load_n(&active, __ATOMIC_ACQUIRE);
    }
    struct ctx c = {.lvl = lvl, .comp = comp, .file = short_file(file), .func = func,
                    .msg = msg, .line = line};
    clock_gettime(CLOCK_REALTIME, &c.ts);
    gmtime_r(&c.ts.tv_sec, &c.tm);

    struct line l;
    l.n = 0;
    if (f->nkeys > 0) {
        c.json = true;
        puts_(&l, "{");
        for (int i = 0; i < f->nkeys; i++) {
            puts_(&l, i ? ",\"" : "\"");
            put_json(&l, f->keys[i], strlen(f->keys[i]));
            puts_(&l, "\":\"");
            render(&l, &f->vals[i], &c);
            puts_(&l, "\"");
        }
        puts_(&l, "}");
    } else {
        render(&l, &f->text, &c);
    }
    l.b[l.n++] = '\n';
    ssize_t w = write(log_fd, l.b, l.n);
    (void)w;
}
