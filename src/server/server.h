#pragma once
/* The server: main thread, start-up, config, workers, admin, signals and shutdown.
 *
 * States (server.state, as Envoy): PRE_INITIALIZING -> INITIALIZING (clusters resolving) ->
 * LIVE (workers started) -> DRAINING (SIGTERM or drain request) -> exit.
 * Signals: SIGTERM drains for --drain-time-s then exits (a second SIGTERM exits at once);
 * SIGINT exits at once; SIGUSR1 reopens log files; SIGPIPE is ignored. */
#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

#include "config/rstore.h"
#include "config/snapshot.h"
#include "event/loop.h"
#include "server/options.h"
#include "stats/flush.h"
#include "stats/stats.h"

enum msm_server_state {
    MSM_STATE_LIVE = 0,
    MSM_STATE_DRAINING = 1,
    MSM_STATE_PRE_INITIALIZING = 2,
    MSM_STATE_INITIALIZING = 3,
};

#define MSM_SERVER_STATS(C, G, H)                                                                 \
    G(uptime) G(concurrency) G(days_until_first_cert_expiring) G(hot_restart_epoch) G(live)       \
    G(memory_allocated) G(memory_heap_size) G(memory_physical_size) G(parent_connections)         \
    G(state) G(stats_recent_lookups) G(total_connections) G(version) C(debug_assertion_failures)  \
    C(envoy_bug_failures) C(envoy_notifications) C(dynamic_unknown_fields)                        \
    C(static_unknown_fields) C(dropped_stat_flushes) H(initialization_time_ms)                    \
    G(seconds_until_first_ocsp_response_expiring)
MSM_STATS_STRUCT(msm_server_stats, MSM_SERVER_STATS);
MSM_STATS_INIT_FN(msm_server_stats, MSM_SERVER_STATS)

#define MSM_LM_STATS(C, G, H)                                                                     \
    C(listener_added) C(listener_modified) C(listener_removed) C(listener_stopped)                \
    C(listener_create_success) C(listener_create_failure) C(listener_in_place_updated)           \
    G(total_filter_chains_draining) G(total_listeners_warming) G(total_listeners_active)          \
    G(total_listeners_draining) G(workers_started)
MSM_STATS_STRUCT(msm_lm_stats, MSM_LM_STATS);
MSM_STATS_INIT_FN(msm_lm_stats, MSM_LM_STATS)

struct msm_worker;
struct msm_admin;
struct msm_cluster_manager;
struct msm_listener_manager;
struct msm_xds;
struct msm_rds;

struct msm_server {
    struct ev_loop *loop;
    const struct msm_options *opts;
    Envoy__Config__Bootstrap__V3__Bootstrap *bootstrap;
    struct msm_stats_store *stats;
    struct msm_server_stats sst;
    struct msm_lm_stats lm;
    struct msm_cluster_manager *cm;
    struct msm_listener_manager *lmgr;
    struct msm_worker **workers;
    int n_workers;
    int drained_workers;
    struct msm_snapshot *snap;
    uint64_t snap_version;
    struct msm_admin *admin;
    struct msm_mailbox mb;
    enum msm_server_state state;
    ev_signal sig_term, sig_int, sig_usr1;
    ev_timer tick, drain_deadline;
    double start_time; /* ev_now at start */
    double start_wall; /* epoch seconds at start (bootstrap last_updated) */
    char *lds_version, *cds_version; /* last accepted LDS/CDS version_info */
    struct msm_rstore routes;  /* RDS RouteConfigurations (as received, for /config_dump) */
    struct msm_rds *rds;       /* RDS RouteConfigurations compiled (src/http/rds.h) */
    struct msm_rstore secrets; /* SDS and static Secrets */
    struct msm_xds *xds;       /* NULL without dynamic_resources */
    int dyn_phase;             /* enum msm_dyn_phase */
    bool cds_received, lds_received;
    int exit_code;
    bool shutting_down;
    bool healthcheck_failed;
    struct msm_stats_flusher flusher; /* stats_flush_interval: histograms, sampled gauges */
};

/* Run the server to completion; returns the process exit code. */
int msm_server_run(const struct msm_options *opts);
/* Build (and fully validate) everything from a bootstrap without serving: --mode validate.
 * 0, or MSM_EINVAL with <err>. */
int msm_server_validate(const struct msm_options *opts, struct msm_err *err);

/* Worker -> main notifications (any thread). */
void msm_server_post_worker_drained(struct msm_server *srv, int worker_id);
/* Main thread: drain listeners and exit after the drain time (immediately when <now>). */
void msm_server_shutdown(struct msm_server *srv, bool now);
const char *msm_server_state_name(enum msm_server_state s);
/* Build and post a new snapshot to the workers (main thread). */
void msm_server_publish(struct msm_server *srv);
/* Initialization finished (static clusters warm, and with xDS the first CDS/LDS applied):
 * start the workers and go LIVE (or exit in init_only mode). */
void msm_server_init_complete(struct msm_server *srv);
/* /drain_listeners?graceful: server.state DRAINING (/ready 503) without exiting. */
void msm_server_set_draining(struct msm_server *srv);
