#include "config/snapshot.h"

#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/alloc.h"
#include "http/route.h"

struct msm_snapshot *msm_snapshot_new(void)
{
    struct msm_snapshot *s = MSM_NEW(struct msm_snapshot);
    atomic_init(&s->refs, 1);
    return s;
}

struct msm_snapshot *msm_snapshot_ref(struct msm_snapshot *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void msm_snapshot_unref(struct msm_snapshot *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) {
        return;
    }
    for (int i = 0; i < s->n_listeners; i++) {
        msm_listener_cfg_unref(s->listeners[i].cfg);
        msm_listen_socket_unref(s->listeners[i].sock);
    }
    free(s->listeners);
    for (int i = 0; i < s->n_clusters; i++) {
        msm_cluster_unref(s->clusters[i]);
    }
    free(s->clusters);
    for (int i = 0; i < s->n_routes; i++) {
        free(s->routes[i].name);
        msm_route_config_unref(s->routes[i].rc);
    }
    free(s->routes);
    free(s);
}

void msm_snapshot_add_listener(struct msm_snapshot *s, struct msm_listener_cfg *l,
                               struct msm_listen_socket *sock)
{
    s->listeners = msm_xrealloc(s->listeners, (size_t)(s->n_listeners + 1) * sizeof(*s->listeners));
    s->listeners[s->n_listeners].cfg = msm_listener_cfg_ref(l);
    s->listeners[s->n_listeners].sock = sock ? msm_listen_socket_ref(sock) : NULL;
    s->n_listeners++;
}

void msm_snapshot_add_cluster(struct msm_snapshot *s, struct msm_cluster *c)
{
    s->clusters = msm_xrealloc(s->clusters, (size_t)(s->n_clusters + 1) * sizeof(*s->clusters));
    s->clusters[s->n_clusters++] = msm_cluster_ref(c);
}

void msm_snapshot_add_route(struct msm_snapshot *s, const char *name, struct msm_route_config *rc)
{
    s->routes = msm_xrealloc(s->routes, (size_t)(s->n_routes + 1) * sizeof(*s->routes));
    s->routes[s->n_routes].name = msm_xstrdup(name);
    s->routes[s->n_routes].rc = msm_route_config_ref(rc);
    s->n_routes++;
}

static int route_by_name(const void *a, const void *b)
{
    const struct msm_snap_route *x = a, *y = b;
    return strcmp(x->name, y->name);
}

static int by_name(const void *a, const void *b)
{
    const struct msm_cluster *x = *(struct msm_cluster *const *)a;
    const struct msm_cluster *y = *(struct msm_cluster *const *)b;
    return strcmp(x->cfg->name, y->cfg->name);
}

void msm_snapshot_seal(struct msm_snapshot *s)
{
    /* qsort wants a non-NULL base even for 0 elements. */
    if (s->n_clusters) {
        qsort(s->clusters, (size_t)s->n_clusters, sizeof(*s->clusters), by_name);
    }
    if (s->n_routes) {
        qsort(s->routes, (size_t)s->n_routes, sizeof(*s->routes), route_by_name);
    }
}

struct msm_route_config *msm_snapshot_route(const struct msm_snapshot *s, const char *name)
{
    int lo = 0, hi = s->n_routes - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(name, s->routes[mid].name);
        if (!c) {
            return s->routes[mid].rc;
        }
        if (c < 0) {
            hi = mid - 1;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

struct msm_cluster *msm_snapshot_cluster(const struct msm_snapshot *s, const char *name)
{
    int lo = 0, hi = s->n_clusters - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(name, s->clusters[mid]->cfg->name);
        if (!c) {
            return s->clusters[mid];
        }
        if (c < 0) {
            hi = mid - 1;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

struct msm_listen_socket *msm_listen_socket_ref(struct msm_listen_socket *ls)
{
    atomic_fetch_add(&ls->refs, 1);
    return ls;
}

void msm_listen_socket_unref(struct msm_listen_socket *ls)
{
    if (!ls || atomic_fetch_sub(&ls->refs, 1) != 1) {
        return;
    }
    for (int i = 0; i < ls->nfds; i++) {
        if (ls->fds[i] >= 0) {
            close(ls->fds[i]);
        }
    }
    if (ls->addr.sa.ss_family == AF_UNIX) {
        /* We created the path; remove it so a restart can bind again. */
        const char *path = ((const struct sockaddr_un *)&ls->addr.sa)->sun_path;
        if (path[0]) {
            unlink(path);
        }
    }
    free(ls->fds);
    free(ls);
}
