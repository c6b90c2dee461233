#pragma once
/* A config snapshot: everything a worker needs to serve, immutable and refcounted.
 *
 * Built on the main thread (static bootstrap, xDS updates, DNS changes), posted to every worker,
 * which swaps its pointer and drops the old reference. Parts are shared between successive
 * snapshots by reference (listener configs, clusters), so a snapshot is cheap to rebuild. */
#include <stdatomic.h>
#include <stdint.h>

#include "net/listener.h"
#include "upstream/cluster.h"

/* A bound listening socket, owned by the listener manager and referenced by snapshots so its
 * fds stay open while any worker may still watch them. */
struct msm_listen_socket {
    atomic_int refs;
    struct msm_address addr; /* as bound (port 0 resolved) */
    int *fds;                /* one per worker with SO_REUSEPORT, else a single shared fd */
    int nfds;
};

struct msm_route_config; /* http/route.h */

/* An RDS route configuration by name (HCMs with rds look theirs up per request). */
struct msm_snap_route {
    char *name;
    struct msm_route_config *rc;
};

struct msm_snap_listener {
    struct msm_listener_cfg *cfg;
    struct msm_listen_socket *sock; /* NULL for bind_to_port: false listeners */
};

struct msm_snapshot {
    atomic_int refs;
    uint64_t version;
    struct msm_snap_listener *listeners;
    int n_listeners;
    struct msm_cluster **clusters; /* sorted by name */
    int n_clusters;
    struct msm_snap_route *routes; /* sorted by name */
    int n_routes;
};

struct msm_snapshot *msm_snapshot_new(void);
struct msm_snapshot *msm_snapshot_ref(struct msm_snapshot *s);
void msm_snapshot_unref(struct msm_snapshot *s);
/* Takes new references. Clusters must be added in any order, then msm_snapshot_seal sorts. */
void msm_snapshot_add_listener(struct msm_snapshot *s, struct msm_listener_cfg *l,
                               struct msm_listen_socket *sock);
void msm_snapshot_add_cluster(struct msm_snapshot *s, struct msm_cluster *c);
/* Takes a new reference to <rc>. */
void msm_snapshot_add_route(struct msm_snapshot *s, const char *name, struct msm_route_config *rc);
void msm_snapshot_seal(struct msm_snapshot *s);
/* Borrowed pointer valid while the snapshot is. */
struct msm_cluster *msm_snapshot_cluster(const struct msm_snapshot *s, const char *name);
/* RDS route configuration <name>, or NULL. Borrowed, valid while the snapshot is. */
struct msm_route_config *msm_snapshot_route(const struct msm_snapshot *s, const char *name);

struct msm_listen_socket *msm_listen_socket_ref(struct msm_listen_socket *ls);
void msm_listen_socket_unref(struct msm_listen_socket *ls);
