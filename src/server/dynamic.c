/* Dynamic configuration: what the server does with xDS updates (main thread).
 *
 * Start-up follows Envoy: static clusters warm -> CDS (wildcard) first response applied and
 * every cluster warm (EDS arrived or its initial fetch timed out) -> LDS (wildcard) first
 * response applied -> workers start -> LIVE. After that every accepted update publishes a new
 * snapshot.
 *
 * ACK/NACK: a response is applied resource by resource; valid resources take effect, and if any
 * resource was rejected the whole response is NACKed with every reason (as Envoy's LDS/CDS do),
 * so the control plane sees the problem while the good part of the config serves. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "filter/network.h"
#include "http/rds.h"
#include "server/dynamic.h"
#include "server/listener_manager.h"
#include "server/server.h"
#include "tls/secrets.h"
#include "upstream/cluster_manager.h"
#include "xds/strmap.h"
#include "xds/xds.h"

#define T_LISTENER MSM_XDS_TYPE_LISTENER
#define T_CLUSTER MSM_XDS_TYPE_CLUSTER
#define T_CLA MSM_XDS_TYPE_ENDPOINT
#define T_ROUTE MSM_XDS_TYPE_ROUTE
#define T_SECRET MSM_XDS_TYPE_SECRET

/* Collects per-resource errors into one NACK message. */
struct errs {
    char msg[MSM_ERR_LEN];
    int n;
};

static void add_err(struct errs *e, const char *what, const char *why)
{
    size_t l = strlen(e->msg);
    if (l < sizeof(e->msg) - 1) {
        snprintf(e->msg + l, sizeof(e->msg) - l, "%s%s: %s", e->n ? "; " : "", what, why);
    }
    e->n++;
}

/* The names an update carries (SotW: everything else of the type is removed). A hash set, so
 * that removal by absence stays linear in the number of resources. */
static void update_names(const struct msm_xds_update *u, struct msm_strmap *m)
{
    msm_strmap_init_borrowed(m); /* <u> outlives it */
    for (int i = 0; i < u->n; i++) {
        msm_strmap_put(m, u->resources[i].name, NULL, NULL);
    }
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = msm_xstrdup(v ? v : "");
}

/* EDS for each EDS cluster, by its service name, through its own eds_config: the clusters on
 * ADS (ads/self: Istio gives every one `ads {}`) share the ADS stream, each distinct
 * api_config_source gets its own stream, and a stream left without EDS clusters is
 * unsubscribed. The subscription stats are Envoy's cluster.<name>.update_* . */
static void subscribe_eds(struct msm_server *srv)
{
    int ng = 0;
    struct msm_cm_eds_group *g = msm_cm_eds_groups(srv->cm, &ng);
    for (int i = 0; i < ng; i++) {
        struct msm_err err;
        Envoy__Config__Core__V3__ConfigSource *src =
            g[i].source ? envoy__config__core__v3__config_source__unpack(NULL, g[i].source_len,
                                                                         g[i].source)
                        : NULL;
        if (msm_xds_subscribe(srv->xds, src, T_CLA, (const char *const *)g[i].names, g[i].n,
                              false, "cluster.{}.", &err) < 0) {
            msm_log(MSM_LOG_ERROR, MSM_LC_XDS, "EDS subscription (%d name(s)) failed: %s",
                    g[i].n, err.msg);
        }
        if (src) {
            envoy__config__core__v3__config_source__free_unpacked(src, NULL);
        }
    }
    msm_cm_eds_groups_free(g, ng);
}

static int apply_cds(struct msm_server *srv, const struct msm_xds_update *u, struct errs *e)
{
    int changes = 0;
    for (int i = 0; i < u->n; i++) {
        struct msm_err err = {{0}};
        const struct msm_xds_resource *res = &u->resources[i];
        int r;
        if (res->bytes && msm_cm_same_bytes(srv->cm, res->name, res->bytes, res->len,
                                            res->version)) {
            r = MSM_CM_UNCHANGED; /* a SotW resend: not even unpacked */
        } else {
            const ProtobufCMessage *m = msm_xds_update_msg(u, i, &err);
            r = m ? msm_cm_add_packed(srv->cm, m, res->bytes, res->len, res->version, false,
                                      false, &err)
                  : MSM_EINVAL;
        }
        msm_xds_update_release(u, i); /* built: its decoded message may go */
        if (r < 0) {
            add_err(e, u->resources[i].name, err.msg);
        } else if (r != MSM_CM_UNCHANGED) {
            changes++;
        }
    }
    if (u->sotw) {
        int n = 0;
        char **names = msm_cm_dynamic_names(srv->cm, &n);
        struct msm_strmap keep;
        update_names(u, &keep);
        for (int i = 0; i < n; i++) {
            if (!msm_strmap_has(&keep, names[i]) && msm_cm_remove(srv->cm, names[i]) == 0) {
                changes++;
            }
        }
        msm_strmap_deinit(&keep);
        msm_strv_free(names, n);
    }
    for (int i = 0; i < u->n_removed; i++) {
        if (msm_cm_remove(srv->cm, u->removed[i]) == 0) {
            changes++;
        }
    }
    set_str(&srv->cds_version, u->version_info);
    srv->cds_received = true;
    /* Only when the set of EDS service names changed: a one-cluster change on top of 10k
     * clusters must not resend (and re-diff) a 10k-name subscription. */
    if (msm_cm_eds_names_changed(srv->cm)) {
        subscribe_eds(srv);
    }
    return changes;
}

static int apply_lds(struct msm_server *srv, const struct msm_xds_update *u, struct errs *e)
{
    int changes = 0;
    for (int i = 0; i < u->n; i++) {
        struct msm_err err = {{0}};
        const ProtobufCMessage *m = msm_xds_update_msg(u, i, &err);
        int r = m ? msm_lm_add(srv->lmgr, m, u->resources[i].version, false, false, &err)
                  : MSM_EINVAL;
        msm_xds_update_release(u, i);
        if (r < 0) {
            add_err(e, u->resources[i].name, err.msg);
        } else if (r != MSM_LM_UNCHANGED) {
            changes++;
        }
    }
    if (u->sotw) {
        int n = 0;
        char **names = msm_lm_dynamic_names(srv->lmgr, &n);
        struct msm_strmap keep;
        update_names(u, &keep);
        for (int i = 0; i < n; i++) {
            if (!msm_strmap_has(&keep, names[i]) && msm_lm_remove(srv->lmgr, names[i]) == 0) {
                changes++;
            }
        }
        msm_strmap_deinit(&keep);
        msm_strv_free(names, n);
    }
    for (int i = 0; i < u->n_removed; i++) {
        if (msm_lm_remove(srv->lmgr, u->removed[i]) == 0) {
            changes++;
        }
    }
    set_str(&srv->lds_version, u->version_info);
    srv->lds_received = true;
    return changes;
}

static int apply_eds(struct msm_server *srv, const struct msm_xds_update *u, struct errs *e)
{
    for (int i = 0; i < u->n; i++) {
        struct msm_err err = {{0}};
        const struct msm_xds_resource *res = &u->resources[i];
        const ProtobufCMessage *m = msm_xds_update_msg(u, i, &err);
        int r = m ? msm_cm_apply_eds_packed(srv->cm, m, res->bytes, res->len, res->version, &err)
                  : MSM_EINVAL;
        msm_xds_update_release(u, i);
        if (r < 0) {
            add_err(e, u->resources[i].name, err.msg);
        }
    }
    for (int i = 0; i < u->n_removed; i++) {
        msm_cm_remove_eds(srv->cm, u->removed[i]);
    }
    return 1;
}

/* SDS: secrets go to the secret manager, which rebuilds the TLS contexts that use them; clusters
 * and listeners that waited for them finish warming. */
static int apply_sds(struct msm_server *srv, const struct msm_xds_update *u, struct errs *e)
{
    struct msm_err err = {{0}};
    int r = msm_secrets_apply(msm_secrets, u, &err);
    if (r < 0) {
        add_err(e, "SDS", err.msg);
    }
    /* Every pushed secret may have made a context ready (rotation needs no new snapshot). */
    int changes = msm_lm_secrets_changed(srv->lmgr);
    changes += msm_cm_secrets_changed(srv->cm);
    return changes;
}

/* RDS: subscribe to the route configurations the listeners' HCMs name, one interest set per
 * config source (Istio puts them all on ADS), with Envoy's per-name stats
 * "http.<hcm stat_prefix>.rds.<name>.". Listeners wait (warming) until each name is ready. */
static void subscribe_rds(struct msm_server *srv)
{
    enum { MAX_DEPS = 4096 };
    const struct msm_filter_rds_dep **deps = msm_xcalloc(MAX_DEPS, sizeof(*deps));
    int n = msm_lm_rds_deps(srv->lmgr, deps, MAX_DEPS);
    if (n > MAX_DEPS) {
        msm_log(MSM_LOG_ERROR, MSM_LC_RDS, "%d RDS route configurations; only %d subscribed", n,
                MAX_DEPS);
        n = MAX_DEPS;
    }
    const char **names = msm_xcalloc((size_t)n + 1, sizeof(char *));
    const char **prefixes = msm_xcalloc((size_t)n + 1, sizeof(char *));
    bool *done = msm_xcalloc((size_t)n + 1, sizeof(bool));
    struct msm_err err;
    for (int i = 0; i < n; i++) {
        if (done[i]) {
            continue;
        }
        int k = 0;
        for (int j = i; j < n; j++) {
            if (!done[j] && deps[j]->config_source_len == deps[i]->config_source_len &&
                !memcmp(deps[j]->config_source, deps[i]->config_source,
                        deps[i]->config_source_len)) {
                done[j] = true;
                names[k] = deps[j]->name;
                prefixes[k] = deps[j]->stat_prefix;
                k++;
            }
        }
        Envoy__Config__Core__V3__ConfigSource *src = envoy__config__core__v3__config_source__unpack(
            NULL, deps[i]->config_source_len, deps[i]->config_source);
        if (msm_xds_subscribe_ex(srv->xds, src, T_ROUTE, names, prefixes, k, false, &err) < 0) {
            msm_log(MSM_LOG_ERROR, MSM_LC_RDS, "RDS subscription for '%s' failed: %s", names[0],
                    err.msg);
        }
        if (src) {
            envoy__config__core__v3__config_source__free_unpacked(src, NULL);
        }
    }
    if (!n && msm_rds_count(srv->rds)) {
        msm_xds_subscribe_ex(srv->xds, NULL, T_ROUTE, NULL, NULL, 0, false, &err);
    }
    free(done);
    free(prefixes);
    free(names);
    free(deps);
}

/* Compile each RouteConfiguration; a bad one is rejected with its field path and the previous
 * version of that name keeps serving. */
static int apply_rds(struct msm_server *srv, const struct msm_xds_update *u, struct errs *e)
{
    int changes = 0;
    for (int i = 0; i < u->n; i++) {
        const struct msm_xds_resource *r = &u->resources[i];
        struct msm_err err = {{0}};
        int rc = msm_rds_put(srv->rds, r->name, r->msg, &err);
        if (rc < 0) {
            add_err(e, r->name, err.msg);
            continue;
        }
        changes += rc;
        if (r->bytes) {
            msm_rstore_put(&srv->routes, r->name, r->version, r->bytes, r->len);
        } else {
            size_t len = protobuf_c_message_get_packed_size(r->msg);
            uint8_t *b = msm_xmalloc(len + 1);
            protobuf_c_message_pack(r->msg, b);
            msm_rstore_put(&srv->routes, r->name, r->version, b, len);
            free(b);
        }
        msm_xds_update_release(u, i);
    }
    for (int i = 0; i < u->n_removed; i++) {
        changes += msm_rds_remove(srv->rds, u->removed[i]);
        msm_rstore_remove(&srv->routes, u->removed[i]);
    }
    changes += msm_lm_secrets_changed(srv->lmgr);
    return changes;
}

static void start_lds(struct msm_server *srv)
{
    struct msm_err err;
    const Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *d =
        srv->bootstrap->dynamic_resources;
    if (!d->lds_config) {
        srv->lds_received = true;
        return;
    }
    if (msm_xds_subscribe(srv->xds, d->lds_config, T_LISTENER, NULL, 0, true,
                          "listener_manager.lds.", &err) < 0) {
        msm_log(MSM_LOG_CRITICAL, MSM_LC_XDS, "LDS subscription failed: %s", err.msg);
        srv->lds_received = true;
    }
}

/* Move start-up along: CDS warm -> LDS -> LIVE. */
void msm_dynamic_advance(struct msm_server *srv)
{
    if (srv->dyn_phase == MSM_DYN_CDS && srv->cds_received && msm_cm_warming(srv->cm) == 0) {
        srv->dyn_phase = MSM_DYN_LDS;
        start_lds(srv);
    }
    /* Listeners of the first LDS response that wait for TLS secrets hold start-up (Envoy adds
     * their init targets to the server's init manager). */
    if (srv->dyn_phase == MSM_DYN_LDS && srv->lds_received && msm_lm_warming(srv->lmgr) == 0) {
        srv->dyn_phase = MSM_DYN_DONE;
        msm_server_init_complete(srv);
    }
}

static int on_apply(void *arg, const struct msm_xds_update *u, struct msm_err *err)
{
    struct msm_server *srv = arg;
    struct errs e = {{0}, 0};
    int changes = 0;
    const char *t = u->type_url;
    if (!strcmp(t, T_CLUSTER)) {
        changes = apply_cds(srv, u, &e);
    } else if (!strcmp(t, T_LISTENER)) {
        changes = apply_lds(srv, u, &e);
    } else if (!strcmp(t, T_CLA)) {
        changes = apply_eds(srv, u, &e);
    } else if (!strcmp(t, T_ROUTE)) {
        changes = apply_rds(srv, u, &e);
    } else if (!strcmp(t, T_SECRET)) {
        changes = apply_sds(srv, u, &e);
    } else {
        return msm_err_set(err, "unsupported resource type %s", t);
    }
    if (changes && srv->dyn_phase == MSM_DYN_DONE) {
        msm_server_publish(srv);
    }
    if (!strcmp(t, T_CLUSTER) || !strcmp(t, T_LISTENER)) {
        msm_secrets_gc(msm_secrets); /* unsubscribe secrets nothing uses any more */
    }
    if (!strcmp(t, T_LISTENER)) {
        subscribe_rds(srv);
    }
    msm_dynamic_advance(srv);
    if (e.n) {
        msm_log(MSM_LOG_WARN, MSM_LC_CONFIG, "rejecting %s update (version %s): %s", t,
                u->version_info ? u->version_info : "", e.msg);
        return msm_err_set(err, "%s", e.msg);
    }
    return 0;
}

static void on_ready(void *arg, const char *type_url, const char *name)
{
    struct msm_server *srv = arg;
    if (!strcmp(type_url, T_CLUSTER)) {
        srv->cds_received = true;
    } else if (!strcmp(type_url, T_LISTENER)) {
        srv->lds_received = true;
    } else if (!strcmp(type_url, T_CLA) && name) {
        msm_cm_eds_timeout(srv->cm, name);
    } else if (!strcmp(type_url, T_ROUTE) && name && msm_rds_mark_ready(srv->rds, name)) {
        /* First RDS response decided or initial_fetch_timeout: its listeners may serve. */
        if (msm_lm_secrets_changed(srv->lmgr) && srv->dyn_phase == MSM_DYN_DONE) {
            msm_server_publish(srv);
        }
    } else if (!strcmp(type_url, T_SECRET) && name &&
               msm_secrets_fetch_timeout(msm_secrets, name) > 0) {
        int changes = msm_lm_secrets_changed(srv->lmgr);
        changes += msm_cm_secrets_changed(srv->cm);
        if (changes && srv->dyn_phase == MSM_DYN_DONE) {
            msm_server_publish(srv);
        }
    }
    msm_dynamic_advance(srv);
}

/* Blocks of 256 KiB and more are mmap'ed (and unmapped when freed) whatever their history:
 * glibc otherwise raises its mmap threshold to the largest block freed so far (up to 32 MiB),
 * after which a 10 MB gRPC message, the growing arrays and hash tables of 10k clusters all land
 * in the heaps and leave holes there once freed or grown (~8 MB resident at 10k clusters). */
#define MMAP_THRESHOLD (256 * 1024)

int msm_dynamic_init(struct msm_server *srv, struct msm_err *err)
{
#ifdef M_MMAP_THRESHOLD
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
#endif
    srv->xds = msm_xds_new(srv->loop, srv->bootstrap, on_apply, srv, srv->stats, err);
    if (!srv->xds) {
        return err->msg[0] ? MSM_EINVAL : 0;
    }
    msm_xds_set_lazy(srv->xds, true); /* every apply below reads with msm_xds_update_msg */
    msm_xds_set_ready_cb(srv->xds, on_ready, srv);
    msm_secrets_set_xds(msm_secrets, srv->xds); /* SDS secrets of static resources */
    /* Static clusters may wait for SDS secrets or EDS assignments over ADS (as Envoy, CDS only
     * starts once they are warm): their subscriptions go out now, not after a warm-up that
     * cannot end without them. */
    msm_cm_eds_names_changed(srv->cm);
    subscribe_eds(srv);
    if (msm_xds_start(srv->xds) < 0) {
        return msm_err_set(err, "cannot start the xDS client");
    }
    return 0;
}

int msm_dynamic_start(struct msm_server *srv, struct msm_err *err)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *d =
        srv->bootstrap->dynamic_resources;
    if (msm_xds_start(srv->xds) < 0) {
        return msm_err_set(err, "cannot start the xDS client");
    }
    srv->dyn_phase = MSM_DYN_CDS;
    if (msm_cm_eds_names_changed(srv->cm)) {
        subscribe_eds(srv); /* static EDS clusters changed meanwhile (not expected) */
    }
    subscribe_rds(srv); /* static listeners with rds */
    if (!d->cds_config) {
        srv->cds_received = true;
    } else if (msm_xds_subscribe(srv->xds, d->cds_config, T_CLUSTER, NULL, 0, true,
                                 "cluster_manager.cds.", err) < 0) {
        return MSM_EINVAL;
    }
    msm_dynamic_advance(srv);
    return 0;
}

void msm_dynamic_free(struct msm_server *srv)
{
    if (msm_secrets) {
        msm_secrets_set_xds(msm_secrets, NULL);
    }
    msm_xds_free(srv->xds);
    srv->xds = NULL;
}
