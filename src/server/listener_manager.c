#include "server/listener_manager.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <xxhash.h>

#include "envoy/config/listener/v3/listener.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "net/listener.h"
#include "server/server.h"
#include "http/rds.h"

struct lm_entry {
    char *name;
    struct msm_listener_cfg *cfg;
    struct msm_listen_socket *sock; /* NULL for bind_to_port: false */
    /* <cfg> waits for TLS secrets (warming): the version it replaces keeps serving meanwhile
     * (NULL for a new listener, which is not served yet). */
    bool warming;
    struct msm_listener_cfg *active;
    struct msm_listen_socket *active_sock;
    bool is_static;
    bool inbound; /* traffic_direction INBOUND (/drain_listeners?inboundonly) */
    bool stopped; /* /drain_listeners: no longer served, socket closed */
    char *version;
    double last_updated;
    uint8_t *proto;
    size_t proto_len;
    uint64_t hash;
};

struct msm_listener_manager {
    struct msm_server *srv;
    int n_workers;
    int stop_mode; /* /drain_listeners: 0 none, 1 inbound listeners stopped, 2 all stopped */
    struct lm_entry **e;
    int n;
};

static double wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

struct msm_listener_manager *msm_lm_new(struct msm_server *srv, int n_workers)
{
    struct msm_listener_manager *lm = MSM_NEW(struct msm_listener_manager);
    lm->srv = srv;
    lm->n_workers = n_workers > 0 ? n_workers : 1;
    return lm;
}

static void entry_free(struct lm_entry *e)
{
    msm_listener_cfg_unref(e->active);
    msm_listen_socket_unref(e->active_sock);
    msm_listener_cfg_unref(e->cfg);
    msm_listen_socket_unref(e->sock);
    free(e->name);
    free(e->version);
    free(e->proto);
    free(e);
}

void msm_lm_free(struct msm_listener_manager *lm)
{
    if (!lm) {
        return;
    }
    for (int i = 0; i < lm->n; i++) {
        entry_free(lm->e[i]);
    }
    free(lm->e);
    free(lm);
}

int msm_lm_count(const struct msm_listener_manager *lm)
{
    return lm->n;
}

/* ---- sockets ------------------------------------------------------------------------------- */

static int bind_one(const struct msm_address *a, bool reuse_port, uint32_t backlog,
                    bool listen_now, int *out, struct msm_err *err)
{
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return msm_err_set(err, "socket: %s", strerror(errno));
    }
    int one = 1;
    if (a->sa.ss_family != AF_UNIX) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (reuse_port) {
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        }
    } else {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&a->sa;
        struct stat st;
        /* A stale socket file from a previous run would make bind fail; only sockets are
         * removed, never regular files. */
        if (un->sun_path[0] && stat(un->sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            unlink(un->sun_path);
        }
    }
    if (bind(fd, (const struct sockaddr *)&a->sa, a->len) < 0) {
        int e = errno;
        close(fd);
        char s[MSM_ADDRSTRLEN];
        msm_address_str(a, s, sizeof(s));
        return msm_err_set(err, "cannot bind '%s': %s", s, strerror(e));
    }
    if (a->sa.ss_family == AF_UNIX && a->pipe_mode) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&a->sa;
        if (un->sun_path[0] && chmod(un->sun_path, (mode_t)a->pipe_mode) < 0) {
            int e = errno;
            close(fd);
            return msm_err_set(err, "chmod '%s': %s", un->sun_path, strerror(e));
        }
    }
    if (listen_now && listen(fd, (int)backlog) < 0) {
        int e = errno;
        close(fd);
        return msm_err_set(err, "listen: %s", strerror(e));
    }
    *out = fd;
    return 0;
}

/* One fd per worker with SO_REUSEPORT (IP), else one shared fd. Bound at once (an address
 * in use is a NACK); listen() only with <listen_now>: a warming listener refuses connections
 * until it becomes active (start_listening), as Envoy defers its listen(). */
static struct msm_listen_socket *open_listener(const struct msm_listener_cfg *l, int nworkers,
                                               bool listen_now, struct msm_err *err)
{
    struct msm_listen_socket *ls = MSM_NEW(struct msm_listen_socket);
    atomic_init(&ls->refs, 1);
    bool ip = l->addr.sa.ss_family != AF_UNIX;
    int n = ip && l->reuse_port ? nworkers : 1;
    ls->fds = msm_xcalloc((size_t)n, sizeof(int));
    ls->addr = l->addr;
    for (int i = 0; i < n; i++) {
        if (bind_one(&ls->addr, l->reuse_port, l->backlog, listen_now, &ls->fds[i], err) < 0) {
            ls->nfds = i;
            msm_listen_socket_unref(ls);
            return NULL;
        }
        ls->nfds = i + 1;
        if (i == 0 && ip) {
            /* Port 0: every worker socket must share the port the kernel picked. */
            struct msm_address got;
            got.len = sizeof(got.sa);
            getsockname(ls->fds[0], (struct sockaddr *)&got.sa, &got.len);
            got.pipe_mode = 0;
            ls->addr = got;
        }
    }
    return ls;
}

/* The listener becomes active: listen() on its sockets (again, harmlessly, when they already
 * listen for the version it replaces). */
static void start_listening(const struct msm_listener_cfg *l, struct msm_listen_socket *ls)
{
    for (int i = 0; ls && i < ls->nfds; i++) {
        if (listen(ls->fds[i], (int)l->backlog) < 0) {
            msm_log(MSM_LOG_ERROR, MSM_LC_CONFIG, "listener '%s': listen: %s", l->name,
                    strerror(errno));
        }
    }
}

/* ---- add / remove ------------------------------------------------------------------------- */

static struct lm_entry *find(const struct msm_listener_manager *lm, const char *name, int *idx)
{
    for (int i = 0; i < lm->n; i++) {
        if (!strcmp(lm->e[i]->name, name)) {
            *idx = i;
            return lm->e[i];
        }
    }
    return NULL;
}

/* The RDS route configurations <l>'s filters serve from (HCMs with rds), borrowed from <l>:
 * up to <max> into <out>; returns the total. */
static int rds_deps(const struct msm_listener_cfg *l, const struct msm_filter_rds_dep **out,
                    int max)
{
    int n = 0;
    for (int i = 0; i <= l->n_chains; i++) {
        const struct msm_filter_chain *c = i < l->n_chains ? l->chains[i] : l->default_chain;
        for (int k = 0; c && k < c->n; k++) {
            const struct msm_filter_rds_dep *d =
                c->f[k].ops && c->f[k].ops->rds_dep ? c->f[k].ops->rds_dep(c->f[k].config) : NULL;
            if (d && n < max) {
                out[n] = d;
            }
            n += d != NULL;
        }
    }
    return n;
}

static bool rds_ready(const struct msm_listener_manager *lm, const struct msm_listener_cfg *l)
{
    const struct msm_filter_rds_dep *d[64];
    int n = rds_deps(l, d, 64);
    for (int i = 0; i < n && i < 64; i++) {
        if (!lm->srv->rds || !msm_rds_ready(lm->srv->rds, d[i]->name)) {
            return false;
        }
    }
    return true;
}

/* Ready to serve: TLS contexts have their secrets, RDS route configurations arrived. */
static bool cfg_warm(const struct msm_listener_manager *lm, const struct msm_listener_cfg *l)
{
    return msm_listener_cfg_warm(l) && rds_ready(lm, l);
}

int msm_lm_rds_deps(const struct msm_listener_manager *lm, const struct msm_filter_rds_dep **out,
                    int max)
{
    int n = 0;
    for (int i = 0; i < lm->n; i++) {
        const struct msm_filter_rds_dep *d[64];
        int k = rds_deps(lm->e[i]->cfg, d, 64);
        for (int j = 0; j < k && j < 64; j++) {
            bool dup = false;
            for (int x = 0; x < n && x < max && !dup; x++) {
                dup = !strcmp(out[x]->name, d[j]->name);
            }
            if (!dup) {
                if (n < max) {
                    out[n] = d[j];
                }
                n++;
            }
        }
    }
    return n;
}

int msm_lm_rds_pending(const struct msm_listener_manager *lm)
{
    int n = 0;
    for (int i = 0; i < lm->n; i++) {
        n += !rds_ready(lm, lm->e[i]->cfg);
    }
    return n;
}

int msm_lm_add(struct msm_listener_manager *lm, const void *proto, const char *version,
               bool is_static, bool validate_only, struct msm_err *err)
{
    struct msm_server *srv = lm->srv;
    const ProtobufCMessage *pm = proto;
    size_t len = protobuf_c_message_get_packed_size(pm);
    uint8_t *bytes = msm_xmalloc(len + 1);
    protobuf_c_message_pack(pm, bytes);
    uint64_t hash = XXH3_64bits(bytes, len);
    struct msm_build_opts bo = {.stats = srv->stats, .validate_only = validate_only,
                                .allow_unknown_fields = srv->opts->allow_unknown_static_fields,
                                .traffic_direction = (int)((const Envoy__Config__Listener__V3__Listener *)
                                                               proto)->traffic_direction};
    struct msm_listener_cfg *l = msm_listener_cfg_from_proto(proto, &bo, err);
    if (!l) {
        msm_stat_inc(srv->lm.listener_create_failure);
        free(bytes);
        return MSM_EINVAL;
    }
    int idx = -1;
    struct lm_entry *old = find(lm, l->name, &idx);
    if (old && (old->is_static || is_static)) {
        msm_err_set(err, "error adding listener: '%s' has duplicate name%s", l->name,
                    old->is_static && !is_static ? " (a static listener cannot be updated by "
                                                   "LDS)"
                                                 : "");
        goto fail;
    }
    if (old && old->hash == hash) {
        free(old->version);
        old->version = msm_xstrdup(version ? version : "");
        msm_listener_cfg_unref(l);
        free(bytes);
        return MSM_LM_UNCHANGED;
    }
    /* Another listener may not bind the same address. */
    for (int i = 0; i < lm->n; i++) {
        struct lm_entry *o = lm->e[i];
        if (o != old && o->cfg->bind_to_port && l->bind_to_port &&
            msm_address_eq(&o->cfg->addr, &l->addr) && msm_address_port(&l->addr) != 0) {
            char a[MSM_ADDRSTRLEN];
            msm_address_str(&l->addr, a, sizeof(a));
            msm_err_set(err, "error adding listener '%s': listener '%s' already uses %s",
                        l->name, o->name, a);
            goto fail;
        }
    }
    struct msm_listen_socket *sock = NULL;
    bool warm = validate_only || cfg_warm(lm, l);
    if (l->bind_to_port && !validate_only) {
        if (old && old->sock && msm_address_eq(&old->cfg->addr, &l->addr)) {
            sock = msm_listen_socket_ref(old->sock);
            if (warm) {
                start_listening(l, sock); /* it may still be a warming predecessor's */
            }
        } else {
            sock = open_listener(l, lm->n_workers, warm, err);
            if (!sock) {
                msm_err_prefix(err, "listener '%s'", l->name);
                goto fail;
            }
            char a[MSM_ADDRSTRLEN];
            msm_address_str(&sock->addr, a, sizeof(a));
            msm_log(MSM_LOG_INFO, MSM_LC_CONFIG, "listener '%s' bound to %s", l->name, a);
        }
    }
    struct lm_entry *e = MSM_NEW(struct lm_entry);
    e->name = msm_xstrdup(l->name);
    e->cfg = l;
    e->sock = sock;
    e->is_static = is_static;
    e->version = msm_xstrdup(version ? version : "");
    e->last_updated = wall_now();
    e->proto = bytes;
    e->proto_len = len;
    e->hash = hash;
    e->inbound = ((const Envoy__Config__Listener__V3__Listener *)proto)->traffic_direction ==
                 ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND;
    if (lm->stop_mode == 2 || (lm->stop_mode == 1 && e->inbound)) {
        /* Listeners of a stopped kind stay stopped across LDS updates (Envoy). */
        e->stopped = true;
        msm_listen_socket_unref(e->sock);
        e->sock = NULL;
    }
    if (!warm) {
        /* TLS secrets pending: serve the previous version until they arrive. */
        e->warming = true;
        if (old) {
            e->active = old->warming ? old->active : old->cfg;
            e->active_sock = old->warming ? old->active_sock : old->sock;
            if (e->active) {
                msm_listener_cfg_ref(e->active);
            }
            if (e->active_sock) {
                msm_listen_socket_ref(e->active_sock);
            }
        }
        msm_log(MSM_LOG_INFO, MSM_LC_CONFIG, "listener '%s' is warming: waiting for TLS "
                "secrets or RDS route configurations", l->name);
    }
    if (old) {
        entry_free(old);
        lm->e[idx] = e;
        msm_stat_inc(srv->lm.listener_modified);
        msm_stat_inc(srv->lm.listener_in_place_updated);
    } else {
        lm->e = msm_xrealloc(lm->e, (size_t)(lm->n + 1) * sizeof(*lm->e));
        lm->e[lm->n++] = e;
        msm_stat_inc(srv->lm.listener_added);
    }
    msm_stat_inc(srv->lm.listener_create_success);
    msm_stat_set(srv->lm.total_listeners_active, (uint64_t)lm->n);
    msm_stat_set(srv->lm.total_listeners_warming, (uint64_t)msm_lm_warming(lm));
    return old ? MSM_LM_MODIFIED : MSM_LM_ADDED;
fail:
    msm_stat_inc(srv->lm.listener_create_failure);
    msm_listener_cfg_unref(l);
    free(bytes);
    return MSM_EINVAL;
}

int msm_lm_remove(struct msm_listener_manager *lm, const char *name)
{
    int idx;
    struct lm_entry *e = find(lm, name, &idx);
    if (!e) {
        return MSM_ENOTFOUND;
    }
    if (e->is_static) {
        return MSM_EINVAL;
    }
    /* Stop accepting now; workers let go of the fds when the next snapshot arrives. */
    for (int k = 0; e->sock && k < e->sock->nfds; k++) {
        shutdown(e->sock->fds[k], SHUT_RDWR);
    }
    lm->e[idx] = lm->e[--lm->n];
    entry_free(e);
    msm_stat_inc(lm->srv->lm.listener_removed);
    msm_stat_set(lm->srv->lm.total_listeners_warming, (uint64_t)msm_lm_warming(lm));
    msm_stat_set(lm->srv->lm.total_listeners_active, (uint64_t)lm->n);
    return 0;
}

void msm_lm_fill_snapshot(struct msm_listener_manager *lm, struct msm_snapshot *s)
{
    for (int i = 0; i < lm->n; i++) {
        struct lm_entry *e = lm->e[i];
        if (e->stopped) {
            continue;
        }
        if (!e->warming) {
            msm_snapshot_add_listener(s, e->cfg, e->sock);
        } else if (e->active) {
            msm_snapshot_add_listener(s, e->active, e->active_sock);
        }
    }
}

int msm_lm_secrets_changed(struct msm_listener_manager *lm)
{
    int n = 0;
    for (int i = 0; i < lm->n; i++) {
        struct lm_entry *e = lm->e[i];
        if (e->warming && cfg_warm(lm, e->cfg)) {
            e->warming = false;
            if (!e->stopped) {
                start_listening(e->cfg, e->sock);
            }
            msm_listener_cfg_unref(e->active);
            msm_listen_socket_unref(e->active_sock);
            e->active = NULL;
            e->active_sock = NULL;
            msm_log(MSM_LOG_INFO, MSM_LC_CONFIG, "listener '%s': secrets and routes ready, warm",
                    e->name);
            n++;
        }
    }
    msm_stat_set(lm->srv->lm.total_listeners_warming, (uint64_t)msm_lm_warming(lm));
    return n;
}

int msm_lm_warming(const struct msm_listener_manager *lm)
{
    int n = 0;
    for (int i = 0; i < lm->n; i++) {
        n += lm->e[i]->warming;
    }
    return n;
}

char **msm_lm_dynamic_names(const struct msm_listener_manager *lm, int *n)
{
    char **v = msm_xcalloc((size_t)lm->n + 1, sizeof(char *));
    int k = 0;
    for (int i = 0; i < lm->n; i++) {
        if (!lm->e[i]->is_static) {
            v[k++] = msm_xstrdup(lm->e[i]->name);
        }
    }
    *n = k;
    return v;
}

void msm_lm_stop_listening(struct msm_listener_manager *lm)
{
    for (int i = 0; i < lm->n; i++) {
        struct msm_listen_socket *ls = lm->e[i]->sock;
        for (int k = 0; ls && k < ls->nfds; k++) {
            shutdown(ls->fds[k], SHUT_RDWR);
        }
    }
}

void msm_lm_dump(const struct msm_listener_manager *lm, msm_lm_dump_fn *fn, void *arg)
{
    for (int i = 0; i < lm->n; i++) {
        const struct lm_entry *e = lm->e[i];
        struct msm_lm_dump_item it = {.name = e->name, .is_static = e->is_static,
                                      .version = e->version, .last_updated = e->last_updated,
                                      .proto = e->proto, .proto_len = e->proto_len,
                                      .sock = e->sock, .addr = &e->cfg->addr};
        fn(arg, &it);
    }
}

/* ---- /drain_listeners and stats (admin) ----------------------------------------------------- */

int msm_lm_stop_listeners(struct msm_listener_manager *lm, bool inbound_only)
{
    int mode = inbound_only ? 1 : 2;
    if (mode > lm->stop_mode) {
        lm->stop_mode = mode;
    }
    int n = 0;
    for (int i = 0; i < lm->n; i++) {
        struct lm_entry *e = lm->e[i];
        if (e->stopped || (inbound_only && !e->inbound)) {
            continue;
        }
        e->stopped = true;
        /* The workers drop their references with the next snapshot; the last one closes the
         * socket, so new clients are refused from then on. */
        msm_listen_socket_unref(e->sock);
        e->sock = NULL;
        msm_stat_inc(lm->srv->lm.listener_stopped);
        n++;
    }
    return n;
}

uint64_t msm_lm_total_connections(const struct msm_listener_manager *lm)
{
    uint64_t n = 0;
    for (int i = 0; i < lm->n; i++) {
        n += msm_stat_value(lm->e[i]->cfg->stats.downstream_cx_active);
    }
    return n;
}
