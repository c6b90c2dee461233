/* Access log files and their flusher thread (see file.h).
 *
 * Locks: g_mu protects the file list, the flusher's wake-up state and every file's <refs>/<dead>
 * transitions; each file's <mu> protects its pending buffer. Lock order: g_mu, then f->mu.
 * Files are freed only by the flusher thread (or at shutdown), so the flusher can write without
 * holding g_mu. */
#include "accesslog/file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "stats/stats.h"

struct msm_al_file {
    struct msm_al_file *next;
    char *path;
    int fd;
    bool std; /* fd 1 or 2: never closed or reopened */
    int refs; /* under g_mu */
    bool dead;
    pthread_mutex_t mu;
    char *buf;
    size_t len, cap;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_flushed = PTHREAD_COND_INITIALIZER;
static struct msm_al_file *g_files;
static pthread_t g_thread;
static bool g_running, g_stop, g_kick, g_reopen;
static uint64_t g_flush_req, g_flush_done;
static uint32_t g_interval_ms = 10000;
static size_t g_min_bytes = 64 * 1024;

static struct {
    struct msm_stat *write_buffered, *write_completed, *write_failed, *flushed_by_timer,
        *reopen_failed, *total_buffered, *dropped;
} st;

static void stats_init(void)
{
    if (st.write_buffered || !msm_stats) {
        return;
    }
    st.write_buffered = msm_stats_get(msm_stats, MSM_STAT_COUNTER, "filesystem.write_buffered");
    st.write_completed = msm_stats_get(msm_stats, MSM_STAT_COUNTER,
                                       "filesystem.write_completed");
    st.write_failed = msm_stats_get(msm_stats, MSM_STAT_COUNTER, "filesystem.write_failed");
    st.flushed_by_timer = msm_stats_get(msm_stats, MSM_STAT_COUNTER,
                                        "filesystem.flushed_by_timer");
    st.reopen_failed = msm_stats_get(msm_stats, MSM_STAT_COUNTER, "filesystem.reopen_failed");
    st.total_buffered = msm_stats_get(msm_stats, MSM_STAT_GAUGE,
                                      "filesystem.write_total_buffered");
    st.dropped = msm_stats_get(msm_stats, MSM_STAT_COUNTER, "access_log_file.write_dropped");
}

static void stats_release(void)
{
    msm_stat_unref(st.write_buffered);
    msm_stat_unref(st.write_completed);
    msm_stat_unref(st.write_failed);
    msm_stat_unref(st.flushed_by_timer);
    msm_stat_unref(st.reopen_failed);
    msm_stat_unref(st.total_buffered);
    msm_stat_unref(st.dropped);
    memset(&st, 0, sizeof(st));
}

static void stat_add(struct msm_stat *s, uint64_t v)
{
    if (s) {
        msm_stat_add(s, v);
    }
}

static void stat_sub(struct msm_stat *s, uint64_t v)
{
    if (s) {
        msm_stat_sub(s, v);
    }
}

void msm_al_files_configure(uint32_t flush_interval_ms, uint32_t min_flush_kb)
{
    pthread_mutex_lock(&g_mu);
    g_interval_ms = flush_interval_ms ? flush_interval_ms : 10000;
    g_min_bytes = (size_t)(min_flush_kb ? min_flush_kb : 64) * 1024;
    pthread_mutex_unlock(&g_mu);
}

static int open_fd(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

/* ---- the flusher ---------------------------------------------------------------------------- */

/* Write all of <buf>; false on error (the rest is dropped, as Envoy does). */
static bool write_all(int fd, const char *buf, size_t n)
{
    while (n) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        buf += w;
        n -= (size_t)w;
    }
    return true;
}

static void flush_file(struct msm_al_file *f, bool reopen)
{
    pthread_mutex_lock(&f->mu);
    char *buf = f->buf;
    size_t len = f->len;
    f->buf = NULL;
    f->len = f->cap = 0;
    pthread_mutex_unlock(&f->mu);
    if (reopen && !f->std) {
        int fd = open_fd(f->path);
        if (fd >= 0) {
            close(f->fd);
            f->fd = fd;
        } else {
            stat_add(st.reopen_failed, 1);
        }
    }
    if (len) {
        stat_sub(st.total_buffered, len);
        if (write_all(f->fd, buf, len)) {
            stat_add(st.write_completed, 1);
        } else {
            stat_add(st.write_failed, 1);
        }
    }
    free(buf);
}

static void file_destroy(struct msm_al_file *f)
{
    if (!f->std) {
        close(f->fd);
    }
    pthread_mutex_destroy(&f->mu);
    free(f->buf);
    free(f->path);
    free(f);
}

/* One pass over every file (g_mu held on entry and exit, released while writing). */
static void flush_pass(bool reopen)
{
    size_t n = 0;
    for (struct msm_al_file *f = g_files; f; f = f->next) {
        n++;
    }
    struct msm_al_file **v = msm_xcalloc(n + 1, sizeof(*v));
    n = 0;
    for (struct msm_al_file *f = g_files; f; f = f->next) {
        v[n++] = f;
    }
    pthread_mutex_unlock(&g_mu);
    for (size_t i = 0; i < n; i++) {
        flush_file(v[i], reopen);
    }
    free(v);
    pthread_mutex_lock(&g_mu);
    /* Dead files: flush what arrived meanwhile and free them. */
    for (struct msm_al_file **pp = &g_files; *pp;) {
        struct msm_al_file *f = *pp;
        if (f->dead) {
            *pp = f->next;
            flush_file(f, false);
            file_destroy(f);
        } else {
            pp = &f->next;
        }
    }
}

static void *flusher_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_mu);
    while (!g_stop) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += g_interval_ms / 1000;
        deadline.tv_nsec += (long)(g_interval_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        bool timed_out = false;
        while (!g_kick && !g_stop && !timed_out) {
            timed_out = pthread_cond_timedwait(&g_wake, &g_mu, &deadline) == ETIMEDOUT;
        }
        bool reopen = g_reopen;
        uint64_t req = g_flush_req;
        g_reopen = false;
        g_kick = false;
        if (timed_out) {
            stat_add(st.flushed_by_timer, 1);
        }
        flush_pass(reopen);
        g_flush_done = req;
        pthread_cond_broadcast(&g_flushed);
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

/* g_mu held. */
static void start_flusher(void)
{
    if (g_running) {
        return;
    }
    g_stop = false;
    if (pthread_create(&g_thread, NULL, flusher_main, NULL) == 0) {
        g_running = true;
    } else {
        msm_log(MSM_LOG_ERROR, MSM_LC_FILE, "cannot start the access log flusher thread");
    }
}

/* ---- files ---------------------------------------------------------------------------------- */

struct msm_al_file *msm_al_file_open(const char *path, struct msm_err *err)
{
    if (!path || !path[0]) {
        msm_err_set(err, "path: must not be empty");
        return NULL;
    }
    stats_init();
    pthread_mutex_lock(&g_mu);
    for (struct msm_al_file *f = g_files; f; f = f->next) {
        if (!f->dead && !strcmp(f->path, path)) {
            f->refs++;
            pthread_mutex_unlock(&g_mu);
            return f;
        }
    }
    pthread_mutex_unlock(&g_mu);
    int fd;
    bool std = false;
    if (!strcmp(path, "/dev/stdout")) {
        fd = 1;
        std = true;
    } else if (!strcmp(path, "/dev/stderr")) {
        fd = 2;
        std = true;
    } else {
        fd = open_fd(path);
        if (fd < 0) {
            msm_err_set(err, "unable to open file '%s': %s", path, strerror(errno));
            return NULL;
        }
    }
    struct msm_al_file *f = MSM_NEW(struct msm_al_file);
    f->path = msm_xstrdup(path);
    f->fd = fd;
    f->std = std;
    f->refs = 1;
    pthread_mutex_init(&f->mu, NULL);
    pthread_mutex_lock(&g_mu);
    f->next = g_files;
    g_files = f;
    start_flusher();
    pthread_mutex_unlock(&g_mu);
    return f;
}

struct msm_al_file *msm_al_file_ref(struct msm_al_file *f)
{
    pthread_mutex_lock(&g_mu);
    f->refs++;
    pthread_mutex_unlock(&g_mu);
    return f;
}

void msm_al_file_unref(struct msm_al_file *f)
{
    if (!f) {
        return;
    }
    pthread_mutex_lock(&g_mu);
    if (--f->refs == 0) {
        f->dead = true;
        if (g_running) {
            g_kick = true;
            pthread_cond_signal(&g_wake);
        }
    }
    pthread_mutex_unlock(&g_mu);
}

void msm_al_file_write(struct msm_al_file *f, const char *data, size_t n)
{
    pthread_mutex_lock(&f->mu);
    if (f->len + n > MSM_AL_FILE_MAX_PENDING) {
        pthread_mutex_unlock(&f->mu);
        stat_add(st.dropped, 1);
        return;
    }
    if (f->len + n > f->cap) {
        size_t cap = f->cap ? f->cap : 16384;
        while (cap < f->len + n) {
            cap *= 2;
        }
        f->buf = msm_xrealloc(f->buf, cap);
        f->cap = cap;
    }
    bool crossed = f->len < g_min_bytes && f->len + n >= g_min_bytes;
    memcpy(f->buf + f->len, data, n);
    f->len += n;
    pthread_mutex_unlock(&f->mu);
    stat_add(st.write_buffered, 1);
    stat_add(st.total_buffered, n);
    if (crossed) {
        pthread_mutex_lock(&g_mu);
        g_kick = true;
        pthread_cond_signal(&g_wake);
        pthread_mutex_unlock(&g_mu);
    }
}

void msm_al_files_reopen(void)
{
    pthread_mutex_lock(&g_mu);
    g_reopen = true;
    g_kick = true;
    pthread_cond_signal(&g_wake);
    pthread_mutex_unlock(&g_mu);
}

void msm_al_files_flush(void)
{
    pthread_mutex_lock(&g_mu);
    if (!g_running) {
        flush_pass(false);
        pthread_mutex_unlock(&g_mu);
        return;
    }
    uint64_t want = ++g_flush_req;
    g_kick = true;
    pthread_cond_signal(&g_wake);
    while (g_flush_done < want && g_running) {
        pthread_cond_wait(&g_flushed, &g_mu);
    }
    pthread_mutex_unlock(&g_mu);
}

void msm_al_files_shutdown(void)
{
    pthread_mutex_lock(&g_mu);
    bool running = g_running;
    g_stop = true;
    pthread_cond_signal(&g_wake);
    pthread_mutex_unlock(&g_mu);
    if (running) {
        pthread_join(g_thread, NULL);
    }
    pthread_mutex_lock(&g_mu);
    g_running = false;
    for (struct msm_al_file *f = g_files; f; f = f->next) {
        f->dead = true;
    }
    flush_pass(false);
    g_stop = false;
    pthread_mutex_unlock(&g_mu);
    stats_release();
}
