#include "server/server.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "accesslog/file.h"
#include "admin/admin.h"
#include "stats/istio_stats.h"
#include "common/alloc.h"
#include "common/log.h"
#include "config/bootstrap.h"
#include "config/node.h"
#include "config/pbutil.h"
#include "event/deferred.h"
#include "http/rds.h"
#include "net/listener.h"
#include "server/dynamic.h"
#include "server/listener_manager.h"
#include "server/worker.h"
#include "tls/secrets.h"
#include "tls/tls_certs.h"
#include "upstream/cluster_manager.h"

const char *msm_server_state_name(enum msm_server_state s)
{
    switch (s) {
    case MSM_STATE_LIVE: return "LIVE";
    case MSM_STATE_DRAINING: return "DRAINING";
    case MSM_STATE_PRE_INITIALIZING: return "PRE_INITIALIZING";
    case MSM_STATE_INITIALIZING: return "INITIALIZING";
    }
    return "UNKNOWN";
}

static void set_state(struct msm_server *srv, enum msm_server_state s)
{
    srv->state = s;
    msm_stat_set(srv->sst.state, (uint64_t)s);
    msm_stat_set(srv->sst.live, s == MSM_STATE_LIVE);
}

/* ---- logging from the bootstrap ------------------------------------------------------------- */

static int apply_log_config(const struct msm_server *srv, struct msm_err *err)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap *b = srv->bootstrap;
    const Envoy__Config__Bootstrap__V3__Bootstrap__ApplicationLogConfig *alc =
        b->application_log_config;
    if (!alc || !alc->log_format) {
        return 0;
    }
    if (srv->opts->log_format_set) {
        return msm_err_set(err, "Only one of ApplicationLogConfig.log_format or CLI option "
                                "--log-format can be specified.");
    }
    const Envoy__Config__Bootstrap__V3__Bootstrap__ApplicationLogConfig__LogFormat *lf =
        alc->log_format;
    if (lf->log_format_case ==
        ENVOY__CONFIG__BOOTSTRAP__V3__BOOTSTRAP__APPLICATION_LOG_CONFIG__LOG_FORMAT__LOG_FORMAT_TEXT_FORMAT) {
        return msm_log_set_format(lf->text_format, NULL, 0);
    }
    if (lf->log_format_case ==
        ENVOY__CONFIG__BOOTSTRAP__V3__BOOTSTRAP__APPLICATION_LOG_CONFIG__LOG_FORMAT__LOG_FORMAT_JSON_FORMAT) {
        const Google__Protobuf__Struct *st = lf->json_format;
        const char **kv = msm_xcalloc(st->n_fields * 2 + 1, sizeof(char *));
        int n = 0;
        for (size_t i = 0; i < st->n_fields; i++) {
            const Google__Protobuf__Value *v = st->fields[i]->value;
            if (!v || v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE) {
                free(kv);
                return msm_err_set(err, "application_log_config.log_format.json_format.%s: only "
                                        "string values are supported",
                                   st->fields[i]->key);
            }
            kv[2 * n] = st->fields[i]->key;
            kv[2 * n + 1] = v->string_value;
            n++;
        }
        int rc = msm_log_set_format(NULL, kv, n);
        free(kv);
        return rc;
    }
    return 0;
}

/* ---- building config ---------------------------------------------------------------------- */

static int build_static(struct msm_server *srv, bool validate_only, struct msm_err *err)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap *b = srv->bootstrap;
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = b->static_resources;
    size_t nc = sr ? sr->n_clusters : 0, nl = sr ? sr->n_listeners : 0;
    /* Static secrets first: TLS contexts of static clusters and listeners refer to them. */
    for (size_t i = 0; sr && i < sr->n_secrets; i++) {
        if (msm_secrets_add_static(msm_secrets, sr->secrets[i], err) < 0) {
            msm_err_prefix(err, "static_resources.secrets[%zu]", i);
            return MSM_EINVAL;
        }
    }
    for (size_t i = 0; i < nc; i++) {
        if (msm_cm_add(srv->cm, sr->clusters[i], "", true, validate_only, err) < 0) {
            msm_err_prefix(err, "static_resources.clusters[%zu]", i);
            return MSM_EINVAL;
        }
    }
    for (size_t i = 0; i < nl; i++) {
        if (msm_lm_add(srv->lmgr, sr->listeners[i], "", true, validate_only, err) < 0) {
            msm_err_prefix(err, "static_resources.listeners[%zu]", i);
            return MSM_EINVAL;
        }
    }
    return 0;
}

/* ---- snapshots ---------------------------------------------------------------------------- */

void msm_server_publish(struct msm_server *srv)
{
    struct msm_snapshot *s = msm_snapshot_new();
    s->version = ++srv->snap_version;
    msm_lm_fill_snapshot(srv->lmgr, s);
    msm_cm_fill_snapshot(srv->cm, s);
    msm_rds_fill_snapshot(srv->rds, s);
    msm_snapshot_seal(s);
    for (int i = 0; i < srv->n_workers; i++) {
        msm_worker_post_snapshot(srv->workers[i], msm_snapshot_ref(s));
    }
    msm_snapshot_unref(srv->snap);
    srv->snap = s;
}

static void on_clusters_changed(void *arg)
{
    struct msm_server *srv = arg;
    if (srv->state == MSM_STATE_LIVE || srv->state == MSM_STATE_DRAINING) {
        msm_server_publish(srv);
    }
    if (srv->dyn_phase != MSM_DYN_NONE) {
        msm_dynamic_advance(srv);
    }
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* Leave the main loop; msm_server_run then stops and joins the workers. */
static void finish(struct msm_server *srv)
{
    ev_break(srv->loop, EVBREAK_ALL);
}

/* A worker finished draining. The message carries only the server (nothing allocated), so a
 * message still queued when the main loop has already exited leaks nothing. */
static void do_worker_drained(void *arg)
{
    struct msm_server *srv = arg;
    if (++srv->drained_workers >= srv->n_workers && srv->shutting_down) {
        msm_log(MSM_LOG_INFO, MSM_LC_MAIN, "all connections drained, exiting");
        finish(srv);
    }
}

void msm_server_post_worker_drained(struct msm_server *srv, int worker_id)
{
    (void)worker_id;
    msm_mailbox_post(&srv->mb, do_worker_drained, srv);
}

static void on_drain_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_server *srv = MSM_CONTAINER_OF(w, struct msm_server, drain_deadline);
    msm_log(MSM_LOG_INFO, MSM_LC_MAIN, "drain time over, exiting");
    finish(srv);
}

void msm_server_shutdown(struct msm_server *srv, bool now)
{
    if (srv->shutting_down) {
        if (now) {
            finish(srv);
        }
        return;
    }
    srv->shutting_down = true;
    set_state(srv, MSM_STATE_DRAINING);
    /* Stop listening now so new clients are refused (ECONNREFUSED) instead of waiting in the
     * accept queue until exit; the fds stay valid for the workers' watchers until they let go. */
    msm_lm_stop_listening(srv->lmgr);
    if (now || !srv->n_workers) {
        finish(srv);
        return;
    }
    uint32_t ms = srv->opts->drain_time_s * 1000;
    for (int i = 0; i < srv->n_workers; i++) {
        msm_worker_post_drain(srv->workers[i], ms);
    }
    /* Workers close leftovers at the deadline; this is the backstop. */
    ev_timer_init(&srv->drain_deadline, on_drain_deadline, ms / 1000.0 + 1.0, 0);
    ev_timer_start(srv->loop, &srv->drain_deadline);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_server *srv = w->data;
    if (w->signum == SIGTERM) {
        msm_log(MSM_LOG_WARN, MSM_LC_MAIN, "caught SIGTERM%s",
                srv->shutting_down ? " again, exiting now" : ", draining");
        msm_server_shutdown(srv, srv->shutting_down);
    } else if (w->signum == SIGINT) {
        msm_log(MSM_LOG_WARN, MSM_LC_MAIN, "caught SIGINT");
        msm_server_shutdown(srv, true);
    } else if (w->signum == SIGUSR1) {
        msm_log(MSM_LOG_INFO, MSM_LC_MAIN, "caught SIGUSR1, reopening logs");
        msm_al_files_reopen();
    }
}

/* Stats flush (stats_flush_interval): the gauges Envoy samples rather than counts. */
static void on_stats_flush(void *arg)
{
    struct msm_server *srv = arg;
    struct msm_memory_usage mu;
    msm_memory_usage(&mu);
    msm_stat_set(srv->sst.memory_allocated, mu.allocated);
    msm_stat_set(srv->sst.memory_heap_size, mu.heap_size);
    msm_stat_set(srv->sst.memory_physical_size, mu.physical);
    msm_stat_set(srv->sst.total_connections, msm_lm_total_connections(srv->lmgr));
    msm_stat_set(srv->sst.uptime, (uint64_t)(ev_now(srv->loop) - srv->start_time));
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct msm_server *srv = MSM_CONTAINER_OF(w, struct msm_server, tick);
    msm_stat_set(srv->sst.uptime, (uint64_t)(ev_now(loop) - srv->start_time));
}

void msm_server_init_complete(struct msm_server *srv)
{
    if (srv->shutting_down || srv->state == MSM_STATE_LIVE) {
        return;
    }
    msm_stat_record(srv->sst.initialization_time_ms,
                    (uint64_t)((ev_now(srv->loop) - srv->start_time) * 1000.0));
    if (srv->opts->mode == MSM_MODE_INIT_ONLY) {
        msm_log(MSM_LOG_INFO, MSM_LC_MAIN, "init_only mode: initialized, exiting");
        ev_break(srv->loop, EVBREAK_ALL);
        return;
    }
    for (int i = 0; i < srv->n_workers; i++) {
        if (msm_worker_start(srv->workers[i]) < 0) {
            msm_log(MSM_LOG_CRITICAL, MSM_LC_MAIN, "cannot start worker %d", i);
            srv->exit_code = 1;
            ev_break(srv->loop, EVBREAK_ALL);
            return;
        }
    }
    msm_server_publish(srv);
    msm_stat_set(srv->lm.workers_started, 1);
    set_state(srv, MSM_STATE_LIVE);
    msm_log(MSM_LOG_INFO, MSM_LC_MAIN, "all clusters initialized, %d workers started, LIVE",
            srv->n_workers);
}

/* Static clusters are warm: with xDS, continue with CDS/LDS; else go LIVE. */
static void on_init_done(void *arg)
{
    struct msm_server *srv = arg;
    if (srv->shutting_down) {
        return;
    }
    if (!srv->xds) {
        msm_server_init_complete(srv);
        return;
    }
    struct msm_err err = {{0}};
    if (msm_dynamic_start(srv, &err) < 0) {
        msm_log(MSM_LOG_CRITICAL, MSM_LC_MAIN, "cannot start dynamic configuration: %s", err.msg);
        srv->exit_code = 1;
        ev_break(srv->loop, EVBREAK_ALL);
    }
}

static void server_init_stats(struct msm_server *srv)
{
    msm_server_stats_init(srv->stats, "server.", &srv->sst);
    msm_lm_stats_init(srv->stats, "listener_manager.", &srv->lm);
    msm_stat_set(srv->sst.concurrency, (uint64_t)srv->n_workers);
    msm_stat_set(srv->sst.hot_restart_epoch, srv->opts->restart_epoch);
    msm_stat_set(srv->sst.days_until_first_cert_expiring, UINT32_MAX);
    msm_stat_set(srv->sst.seconds_until_first_ocsp_response_expiring, 0);
    set_state(srv, MSM_STATE_PRE_INITIALIZING);
}

static void server_free(struct msm_server *srv)
{
    for (int i = 0; srv->workers && i < srv->n_workers; i++) {
        msm_worker_free(srv->workers[i]);
    }
    free(srv->workers);
    msm_dynamic_free(srv); /* first: no xDS callback may run into freed managers */
    msm_admin_free(srv->admin);
    msm_snapshot_unref(srv->snap);
    msm_lm_free(srv->lmgr);
    msm_rstore_deinit(&srv->routes);
    msm_rds_free(srv->rds);
    msm_rstore_deinit(&srv->secrets);
    free(srv->lds_version);
    free(srv->cds_version);
    if (srv->loop) {
        msm_defer_run(srv->loop);
    }
    msm_cm_free(srv->cm);
    msm_secrets_free(msm_secrets); /* after every TLS context user */
    msm_al_files_shutdown(); /* after the last access log user, before the stats go */
    msm_istio_shutdown();
    msm_node_clear();
    msm_server_stats_deinit(&srv->sst);
    msm_lm_stats_deinit(&srv->lm);
    if (srv->bootstrap) {
        protobuf_c_message_free_unpacked(&srv->bootstrap->base, NULL);
    }
    if (srv->loop) {
        msm_mailbox_deinit(&srv->mb);
        /* We are exiting already: a SIGTERM/SIGINT that lands now (pilot-agent or a test
         * repeating its signal) must not turn a clean exit 0 into death by signal. Block them
         * while libev restores the default actions, then ignore them. */
        sigset_t quit;
        sigemptyset(&quit);
        sigaddset(&quit, SIGTERM);
        sigaddset(&quit, SIGINT);
        sigaddset(&quit, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &quit, NULL);
        ev_signal_stop(srv->loop, &srv->sig_term);
        ev_signal_stop(srv->loop, &srv->sig_int);
        ev_signal_stop(srv->loop, &srv->sig_usr1);
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        signal(SIGUSR1, SIG_IGN);
        ev_timer_stop(srv->loop, &srv->tick);
        ev_timer_stop(srv->loop, &srv->drain_deadline);
        msm_stats_flusher_stop(&srv->flusher);
        msm_loop_free(srv->loop);
    }
    msm_stats_store_free(srv->stats);
    msm_stats = NULL;
    free(srv);
    msm_buf_thread_cleanup();
}

static struct msm_server *server_new(const struct msm_options *opts, struct msm_err *err)
{
    struct msm_server *srv = MSM_NEW(struct msm_server);
    srv->opts = opts;
    srv->stats = msm_stats_store_new();
    msm_stats = srv->stats;
    msm_secrets = msm_secrets_new(srv->stats);
    msm_admin_set_certs_provider(msm_tls_admin_certs, NULL);
    srv->n_workers = opts->concurrency ? (int)opts->concurrency : 1;
    server_init_stats(srv);
    srv->lmgr = msm_lm_new(srv, srv->n_workers);
    srv->start_wall = msm_wall_now();
    msm_rstore_init(&srv->routes, "envoy.config.route.v3.RouteConfiguration");
    srv->rds = msm_rds_new();
    msm_rstore_init(&srv->secrets, "envoy.extensions.transport_sockets.tls.v3.Secret");
    srv->bootstrap = msm_bootstrap_load(opts, err);
    if (!srv->bootstrap) {
        return srv;
    }
    msm_al_files_configure(opts->file_flush_interval_msec, opts->file_flush_min_size_kb);
    msm_istio_set_node(srv->bootstrap->node);
    msm_node_set(srv->bootstrap->node);
    if (apply_log_config(srv, err) < 0 ||
        msm_stats_configure(srv->stats, srv->bootstrap->stats_config, opts->stats_tags,
                            opts->n_stats_tags, err) < 0) {
        protobuf_c_message_free_unpacked(&srv->bootstrap->base, NULL);
        srv->bootstrap = NULL;
    }
    return srv;
}

int msm_server_validate(const struct msm_options *opts, struct msm_err *err)
{
    struct msm_server *srv = server_new(opts, err);
    int rc = MSM_EINVAL;
    if (srv->bootstrap) {
        srv->cm = msm_cm_new(NULL, srv->stats, NULL, NULL);
        rc = build_static(srv, true, err);
        if (rc == 0) {
            rc = msm_admin_validate(srv->bootstrap, err);
        }
    }
    server_free(srv);
    return rc;
}

int msm_server_run(const struct msm_options *opts)
{
    struct msm_err err = {{0}};
    signal(SIGPIPE, SIG_IGN);
    struct msm_server *srv = server_new(opts, &err);
    if (!srv->bootstrap) {
        msm_log(MSM_LOG_CRITICAL, MSM_LC_MAIN, "error initializing configuration '%s': %s",
                opts->config_path ? opts->config_path : "", err.msg);
        server_free(srv);
        return 1;
    }
    srv->loop = msm_loop_new(srv, 1);
    msm_mailbox_init(&srv->mb, srv->loop);
    srv->start_time = ev_now(srv->loop);
    srv->cm = msm_cm_new(srv->loop, srv->stats, on_clusters_changed, srv);
    msm_log(MSM_LOG_INFO, MSM_LC_MAIN, "msm-proxy %s starting: %d worker(s)", MSM_VERSION,
            srv->n_workers);
    if (build_static(srv, false, &err) < 0) {
        goto fail;
    }
    if (msm_dynamic_init(srv, &err) < 0) {
        goto fail;
    }
    if (!srv->xds) {
        int neds = 0;
        char **eds = msm_cm_eds_names(srv->cm, &neds);
        if (neds) {
            msm_err_set(&err, "cluster '%s' uses EDS but the bootstrap has no dynamic_resources",
                        eds[0]);
        }
        msm_strv_free(eds, neds);
        if (neds) {
            goto fail;
        }
        const char *sds = msm_secrets_first_sds(msm_secrets);
        if (sds) {
            msm_err_set(&err, "SDS secret '%s' needs an xDS client but the bootstrap has no "
                              "dynamic_resources", sds);
            goto fail;
        }
    }
    srv->admin = msm_admin_new(srv, &err);
    if (!srv->admin && err.msg[0]) {
        goto fail;
    }
    srv->workers = msm_xcalloc((size_t)srv->n_workers, sizeof(*srv->workers));
    for (int i = 0; i < srv->n_workers; i++) {
        srv->workers[i] = msm_worker_new(srv, i);
        if (!srv->workers[i]) {
            msm_err_set(&err, "cannot create worker loop %d", i);
            srv->n_workers = i;
            goto fail;
        }
    }
    ev_signal_init(&srv->sig_term, on_signal, SIGTERM);
    ev_signal_init(&srv->sig_int, on_signal, SIGINT);
    ev_signal_init(&srv->sig_usr1, on_signal, SIGUSR1);
    srv->sig_term.data = srv->sig_int.data = srv->sig_usr1.data = srv;
    ev_signal_start(srv->loop, &srv->sig_term);
    ev_signal_start(srv->loop, &srv->sig_int);
    ev_signal_start(srv->loop, &srv->sig_usr1);
    ev_timer_init(&srv->tick, on_tick, 1.0, 1.0);
    ev_timer_start(srv->loop, &srv->tick);
    msm_stats_flusher_start(&srv->flusher, srv->loop, srv->stats,
                            (uint32_t)msm_pb_duration_ms(srv->bootstrap->stats_flush_interval, 5000),
                            on_stats_flush, srv);
    ev_timer_init(&srv->drain_deadline, on_drain_deadline, 0, 0);
    set_state(srv, MSM_STATE_INITIALIZING);
    msm_cm_start(srv->cm, on_init_done, srv);
    ev_run(srv->loop, 0);
    for (int i = 0; i < srv->n_workers; i++) {
        if (srv->workers[i]->started) {
            msm_worker_post_stop(srv->workers[i]);
            msm_worker_join(srv->workers[i]);
        }
    }
    int code = srv->exit_code;
    msm_log(MSM_LOG_INFO, MSM_LC_MAIN, "exiting");
    server_free(srv);
    return code;
fail:
    msm_log(MSM_LOG_CRITICAL, MSM_LC_MAIN, "error initializing configuration '%s': %s",
            opts->config_path ? opts->config_path : "--config-yaml", err.msg);
    server_free(srv);
    return 1;
}

void msm_server_set_draining(struct msm_server *srv)
{
    set_state(srv, MSM_STATE_DRAINING);
}
