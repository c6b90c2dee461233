#pragma once
/* Worker threads. Each owns one libev loop, the listeners' accept watchers for its share of
 * the sockets, and every connection it accepted, for their whole life.
 *
 * The main thread talks to a worker only through its mailbox: new snapshots, drain, stop.
 * A worker never blocks and never touches another loop. */
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/snapshot.h"
#include "event/loop.h"

struct msm_server;
struct msm_session;
struct msm_wlistener;
struct wdrain;
struct msm_pending;

struct msm_worker {
    int id;
    char name[16]; /* "worker_<id>" */
    pthread_t thread;
    struct ev_loop *loop;
    struct msm_mailbox mb;
    struct msm_server *server;
    struct msm_snapshot *snap; /* current; sessions look clusters up here */
    struct msm_wlistener *listeners;
    struct msm_session *sessions; /* intrusive list of live downstream sessions */
    struct wdrain *drains;
    struct msm_pending *pending;  /* accepted, listener filters still inspecting */        /* replaced/removed listener configs being drained */
    uint64_t n_sessions;
    bool started;
    bool draining;
    bool stopping;
    ev_timer drain_timer;
};

struct msm_worker *msm_worker_new(struct msm_server *srv, int id);
int msm_worker_start(struct msm_worker *w);
/* From the main thread: post a snapshot (the worker takes the given reference). */
void msm_worker_post_snapshot(struct msm_worker *w, struct msm_snapshot *s);
/* Stop accepting; close idle and remaining connections after <drain_ms> (0 = now); <done> runs
 * on the worker when it has no connection left. */
void msm_worker_post_drain(struct msm_worker *w, uint32_t drain_ms);
/* Close everything and exit the thread; join with msm_worker_join. */
void msm_worker_post_stop(struct msm_worker *w);
/* A session ended (called by the session layer): finishes a drain when it was the last. */
void msm_worker_session_closed(struct msm_worker *w);
void msm_worker_join(struct msm_worker *w);
void msm_worker_free(struct msm_worker *w);
