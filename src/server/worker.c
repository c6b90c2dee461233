#include "server/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "event/deferred.h"
#include "filter/manager.h"
#include "server/accept.h"
#include "server/server.h"
#include "net/listener.h"

/* Accepts per readiness event when the listener does not say (fairness across listeners). */
#define DEFAULT_ACCEPT_BATCH 64

struct msm_wlistener {
    struct msm_wlistener *next;
    struct msm_worker *w;
    ev_io io;
    int fd;
    struct msm_listener_cfg *cfg;
    struct msm_listen_socket *sock;
};

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct msm_wlistener *wl = MSM_CONTAINER_OF(io, struct msm_wlistener, io);
    uint32_t batch = wl->cfg->max_accept_per_event ? wl->cfg->max_accept_per_event
                                                   : DEFAULT_ACCEPT_BATCH;
    for (uint32_t i = 0; i < batch && !wl->w->draining; i++) {
        struct msm_address remote;
        remote.len = sizeof(remote.sa);
        int fd = accept4(wl->fd, (struct sockaddr *)&remote.sa, &remote.len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EINVAL) {
                /* The main thread shut the socket down (listener removed or drained): it stays
                 * readable and every accept fails, so stop watching it instead of spinning. */
                msm_log(MSM_LOG_DEBUG, MSM_LC_CONN_HANDLER,
                        "listener '%s': socket shut down, no longer accepting", wl->cfg->name);
                ev_io_stop(loop, io);
                return;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                msm_log(MSM_LOG_WARN, MSM_LC_CONN_HANDLER, "listener '%s': accept: %s",
                        wl->cfg->name, strerror(errno));
            }
            return;
        }
        if (remote.sa.ss_family == AF_UNIX) {
            remote = wl->sock->addr; /* unnamed peer: report the listener's path */
        }
        msm_accept_start(wl->w, wl->cfg, fd, &wl->sock->addr, &remote);
    }
}

static void wlistener_free(struct msm_wlistener *wl)
{
    ev_io_stop(wl->w->loop, &wl->io);
    msm_listener_cfg_unref(wl->cfg);
    msm_listen_socket_unref(wl->sock);
    free(wl);
}

/* Make the accept watchers match <s>: keep sockets that stay (swapping their config), stop the
 * ones that went away (their connections go on with the config they started with). */
static void reconcile(struct msm_worker *w, struct msm_snapshot *s)
{
    struct msm_wlistener **pp = &w->listeners;
    while (*pp) {
        struct msm_wlistener *wl = *pp;
        struct msm_snap_listener *keep = NULL;
        for (int i = 0; i < s->n_listeners; i++) {
            if (s->listeners[i].sock == wl->sock) {
                keep = &s->listeners[i];
                break;
            }
        }
        if (!keep || w->draining) {
            *pp = wl->next;
            wlistener_free(wl);
            continue;
        }
        if (keep->cfg != wl->cfg) {
            msm_listener_cfg_unref(wl->cfg);
            wl->cfg = msm_listener_cfg_ref(keep->cfg);
        }
        pp = &wl->next;
    }
    if (w->draining) {
        return;
    }
    for (int i = 0; i < s->n_listeners; i++) {
        struct msm_listen_socket *ls = s->listeners[i].sock;
        if (!ls) {
            continue;
        }
        bool have = false;
        for (struct msm_wlistener *wl = w->listeners; wl && !have; wl = wl->next) {
            have = wl->sock == ls;
        }
        if (have) {
            continue;
        }
        struct msm_wlistener *wl = MSM_NEW(struct msm_wlistener);
        wl->w = w;
        wl->cfg = msm_listener_cfg_ref(s->listeners[i].cfg);
        wl->sock = msm_listen_socket_ref(ls);
        wl->fd = ls->fds[ls->nfds > 1 ? w->id % ls->nfds : 0];
        ev_io_init(&wl->io, on_accept, wl->fd, EV_READ);
        ev_io_start(w->loop, &wl->io);
        wl->next = w->listeners;
        w->listeners = wl;
    }
}

/* Connections of a replaced or removed listener, closed after the drain time unless their
 * filter chain still exists unchanged in the listener's config of that moment. Keyed by
 * listener name: a connection may have started on any older version of the listener. */
struct wdrain {
    struct wdrain *next;
    struct msm_worker *w;
    char *name;
    ev_timer timer;
};

static void drain_free(struct wdrain *d)
{
    ev_timer_stop(d->w->loop, &d->timer);
    msm_stat_dec(d->w->server->lm.total_filter_chains_draining);
    free(d->name);
    free(d);
}

static const struct msm_listener_cfg *current_cfg(const struct msm_snapshot *s, const char *name)
{
    for (int i = 0; s && i < s->n_listeners; i++) {
        if (!strcmp(s->listeners[i].cfg->name, name)) {
            return s->listeners[i].cfg;
        }
    }
    return NULL;
}

/* A session of listener <name> that the current config no longer covers. */
static bool stale(const struct msm_session *s, const char *name, const struct msm_listener_cfg *cur)
{
    if (s->lcfg == cur || strcmp(s->lcfg->name, name) != 0) {
        return false;
    }
    return !cur || !msm_listener_chain_by_hash(cur, s->chain->hash);
}

static void on_drain_done(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct wdrain *d = MSM_CONTAINER_OF(t, struct wdrain, timer);
    struct msm_worker *w = d->w;
    const struct msm_listener_cfg *cur = current_cfg(w->snap, d->name);
    int closed = 0;
    struct msm_session *s = w->sessions;
    while (s) {
        struct msm_session *next = s->next;
        if (stale(s, d->name, cur)) {
            msm_conn_close(s->conn, MSM_CLOSE_FLUSH);
            closed++;
        }
        s = next;
    }
    if (closed) {
        msm_log(MSM_LOG_DEBUG, MSM_LC_CONN_HANDLER, "%s: drained %d connection(s) of listener '%s'",
                w->name, closed, d->name);
    }
    struct wdrain **pp = &w->drains;
    while (*pp && *pp != d) {
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = d->next;
    }
    drain_free(d);
}

/* Compare the outgoing and incoming snapshots: a listener whose config went away (removed, or
 * replaced by a new version) gets a drain when this worker has connections the new config does
 * not cover. */
static void schedule_drains(struct msm_worker *w, const struct msm_snapshot *old,
                            const struct msm_snapshot *cur)
{
    for (int i = 0; old && i < old->n_listeners; i++) {
        const struct msm_listener_cfg *l = old->listeners[i].cfg;
        const struct msm_listener_cfg *now = current_cfg(cur, l->name);
        if (now == l) {
            continue;
        }
        bool used = false;
        for (struct msm_session *s = w->sessions; s && !used; s = s->next) {
            used = stale(s, l->name, now);
        }
        if (!used) {
            continue;
        }
        struct wdrain *d = MSM_NEW(struct wdrain);
        d->w = w;
        d->name = msm_xstrdup(l->name);
        ev_timer_init(&d->timer, on_drain_done, w->server->opts->drain_time_s, 0);
        ev_timer_start(w->loop, &d->timer);
        d->next = w->drains;
        w->drains = d;
        msm_stat_inc(w->server->lm.total_filter_chains_draining);
    }
}

struct snap_msg {
    struct msm_worker *w;
    struct msm_snapshot *s;
};

static void do_snapshot(void *arg)
{
    struct snap_msg *m = arg;
    struct msm_worker *w = m->w;
    reconcile(w, m->s);
    schedule_drains(w, w->snap, m->s);
    struct msm_snapshot *old = w->snap;
    w->snap = m->s;
    msm_snapshot_unref(old);
    free(m);
}

void msm_worker_post_snapshot(struct msm_worker *w, struct msm_snapshot *s)
{
    struct snap_msg *m = msm_xmalloc(sizeof(*m));
    m->w = w;
    m->s = s;
    msm_mailbox_post(&w->mb, do_snapshot, m);
}

static void close_all(struct msm_worker *w)
{
    msm_accept_close_all(w);
    while (w->sessions) {
        struct msm_session *s = w->sessions;
        msm_conn_close(s->conn, MSM_CLOSE_NOFLUSH); /* unlinks s through on_event */
    }
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_worker *w = MSM_CONTAINER_OF(t, struct msm_worker, drain_timer);
    msm_log(MSM_LOG_INFO, MSM_LC_MAIN, "%s: drain time over, closing %llu connections", w->name,
            (unsigned long long)w->n_sessions);
    close_all(w);
}

struct drain_msg {
    struct msm_worker *w;
    uint32_t ms;
};

static void do_drain(void *arg)
{
    struct drain_msg *m = arg;
    struct msm_worker *w = m->w;
    w->draining = true;
    while (w->listeners) {
        struct msm_wlistener *wl = w->listeners;
        w->listeners = wl->next;
        wlistener_free(wl);
    }
    if (!w->n_sessions) {
        msm_server_post_worker_drained(w->server, w->id);
    } else if (m->ms) {
        ev_timer_init(&w->drain_timer, on_drain_timeout, m->ms / 1000.0, 0);
        ev_timer_start(w->loop, &w->drain_timer);
    } else {
        close_all(w);
    }
    free(m);
}

void msm_worker_post_drain(struct msm_worker *w, uint32_t drain_ms)
{
    struct drain_msg *m = msm_xmalloc(sizeof(*m));
    m->w = w;
    m->ms = drain_ms;
    msm_mailbox_post(&w->mb, do_drain, m);
}

void msm_worker_session_closed(struct msm_worker *w)
{
    if (w->draining && !w->n_sessions && !w->stopping) {
        ev_timer_stop(w->loop, &w->drain_timer);
        msm_server_post_worker_drained(w->server, w->id);
    }
}

static void do_stop(void *arg)
{
    struct msm_worker *w = arg;
    w->stopping = true;
    while (w->drains) {
        struct wdrain *d = w->drains;
        w->drains = d->next;
        drain_free(d);
    }
    w->draining = true;
    ev_timer_stop(w->loop, &w->drain_timer);
    while (w->listeners) {
        struct msm_wlistener *wl = w->listeners;
        w->listeners = wl->next;
        wlistener_free(wl);
    }
    close_all(w);
    ev_break(w->loop, EVBREAK_ALL);
}

void msm_worker_post_stop(struct msm_worker *w)
{
    msm_mailbox_post(&w->mb, do_stop, w);
}

static void *worker_main(void *arg)
{
    struct msm_worker *w = arg;
    char tname[16];
    snprintf(tname, sizeof(tname), "wrk:%s", w->name);
    pthread_setname_np(pthread_self(), tname);
    /* Keep the loop alive until told to stop, even with nothing to watch. */
    ev_ref(w->loop);
    ev_run(w->loop, 0);
    ev_unref(w->loop);
    /* Sessions are closed; run deferred frees, release the config. */
    msm_defer_run(w->loop);
    msm_snapshot_unref(w->snap);
    w->snap = NULL;
    msm_buf_thread_cleanup();
    return NULL;
}

struct msm_worker *msm_worker_new(struct msm_server *srv, int id)
{
    struct msm_worker *w = MSM_NEW(struct msm_worker);
    w->id = id;
    snprintf(w->name, sizeof(w->name), "worker_%d", id);
    w->server = srv;
    w->loop = msm_loop_new(w, 0);
    if (!w->loop) {
        free(w);
        return NULL;
    }
    msm_mailbox_init(&w->mb, w->loop);
    ev_timer_init(&w->drain_timer, on_drain_timeout, 0, 0);
    return w;
}

int msm_worker_start(struct msm_worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc) {
        return -rc;
    }
    w->started = true;
    return 0;
}

void msm_worker_join(struct msm_worker *w)
{
    pthread_join(w->thread, NULL);
}

void msm_worker_free(struct msm_worker *w)
{
    if (!w) {
        return;
    }
    msm_mailbox_deinit(&w->mb);
    msm_loop_free(w->loop);
    free(w);
}
