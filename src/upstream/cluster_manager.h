#pragma once
/* The cluster manager (main thread): owns every cluster's config, shared state and current host
 * set, static and dynamic (CDS); resolves STRICT_DNS and LOGICAL_DNS clusters; turns EDS
 * ClusterLoadAssignments into host sets. Workers only see clusters through snapshots.
 *
 * Warming (as Envoy): a new cluster enters snapshots only once it has its first host set (DNS
 * answered, EDS arrived, or its initial fetch timed out) and its TLS contexts have their SDS
 * secrets (msm_cluster_cfg_warm). A modified cluster keeps serving with
 * its previous version until the new one is warm. Stats of a cluster name survive updates. */
#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "config/snapshot.h"
#include "stats/stats.h"
#include "upstream/dns.h"

#define MSM_CM_STATS(C, G, H)                                                                     \
    C(cluster_added) C(cluster_modified) C(cluster_removed) C(cluster_updated)                    \
    C(cluster_updated_via_merge) C(update_merge_cancelled) C(update_out_of_merge_window)          \
    G(active_clusters) G(warming_clusters)
MSM_STATS_STRUCT(msm_cm_stats, MSM_CM_STATS);
MSM_STATS_INIT_FN(msm_cm_stats, MSM_CM_STATS)

struct msm_cluster_manager;

typedef void msm_cm_cb(void *arg);

enum msm_cm_result {
    MSM_CM_ADDED = 0,
    MSM_CM_MODIFIED = 1,
    MSM_CM_UNCHANGED = 2,
};

/* <changed> runs (main thread) when a cluster finished warming or its hosts changed
 * asynchronously (DNS), after msm_cm_start. */
struct msm_cluster_manager *msm_cm_new(struct ev_loop *loop, struct msm_stats_store *st,
                                       msm_cm_cb *changed, void *arg);
void msm_cm_free(struct msm_cluster_manager *cm);
/* Add or update a cluster from an envoy.config.cluster.v3.Cluster proto. Returns
 * enum msm_cm_result, or MSM_EINVAL/MSM_EUNSUPPORTED with <err>. Static clusters can be
 * neither replaced nor removed by CDS. <validate_only>: check without resolving anything. */
int msm_cm_add(struct msm_cluster_manager *cm, const void *cluster_proto, const char *version,
               bool is_static, bool validate_only, struct msm_err *err);
/* Same, with <bytes> (<len>) a serialization of <cluster_proto> (the xDS resource as received):
 * kept for config_dump instead of packing the message again. NULL = pack. */
/* A CDS resource resent unchanged: true (and its version recorded) when cluster <name> is a
 * dynamic one whose bytes as received were exactly <bytes>, so there is nothing to build (what
 * msm_cm_add_packed would return MSM_CM_UNCHANGED for, without unpacking the resource). */
bool msm_cm_same_bytes(struct msm_cluster_manager *cm, const char *name, const uint8_t *bytes,
                       size_t len, const char *version);
int msm_cm_add_packed(struct msm_cluster_manager *cm, const void *cluster_proto,
                      const uint8_t *bytes, size_t len, const char *version, bool is_static,
                      bool validate_only, struct msm_err *err);
/* Remove a dynamic cluster; MSM_ENOTFOUND if absent, MSM_EINVAL if static. */
int msm_cm_remove(struct msm_cluster_manager *cm, const char *name);
/* Apply an envoy.config.endpoint.v3.ClusterLoadAssignment to every EDS cluster whose service
 * name matches (and cache it for clusters added later). MSM_EINVAL with <err> on bad input. */
int msm_cm_apply_eds(struct msm_cluster_manager *cm, const void *cla_proto, const char *version,
                     struct msm_err *err);
/* Same with the assignment's bytes as received (see msm_cm_add_packed; NULL = pack). */
int msm_cm_apply_eds_packed(struct msm_cluster_manager *cm, const void *cla_proto,
                            const uint8_t *bytes, size_t len, const char *version,
                            struct msm_err *err);
/* The EDS resource went away (Delta removal): its clusters keep no hosts. */
void msm_cm_remove_eds(struct msm_cluster_manager *cm, const char *service_name);
/* An EDS cluster's initial fetch timed out: it finishes warming with no hosts. */
void msm_cm_eds_timeout(struct msm_cluster_manager *cm, const char *service_name);
/* TLS secrets arrived (or their initial fetch timed out): clusters whose TLS contexts were
 * waiting publish their hosts and finish warming (the <changed> callback runs). Returns how
 * many did. Main thread. */
int msm_cm_secrets_changed(struct msm_cluster_manager *cm);
/* Start resolution; <init_done> runs once every cluster added so far is warm. */
void msm_cm_start(struct msm_cluster_manager *cm, msm_cm_cb *init_done, void *arg);
/* Add every warm cluster's current version to <s>. */
void msm_cm_fill_snapshot(struct msm_cluster_manager *cm, struct msm_snapshot *s);
int msm_cm_count(const struct msm_cluster_manager *cm);
int msm_cm_warming(const struct msm_cluster_manager *cm);
/* EDS service names needed by the current clusters (sorted, unique); free with
 * msm_strv_free. */
char **msm_cm_eds_names(const struct msm_cluster_manager *cm, int *n);
/* Whether the set of EDS service names changed since the last call (true on the first call):
 * a CDS update that only modifies clusters needs no new EDS subscription. */
bool msm_cm_eds_names_changed(struct msm_cluster_manager *cm);
/* The eds_config of the first EDS cluster (packed ConfigSource); NULL when no EDS cluster has
 * one. Borrowed. */
const uint8_t *msm_cm_eds_source(const struct msm_cluster_manager *cm, size_t *len);
/* The EDS subscriptions to make: the service names of the EDS clusters grouped by the stream
 * their eds_config names (every ads/self source is the ADS stream; each distinct
 * api_config_source its own), each with one of the group's ConfigSources (packed, copied; NULL
 * for ADS clusters without eds_config). A group that had names at the previous call and has
 * none now comes with n == 0, to be unsubscribed. Free with msm_cm_eds_groups_free. */
struct msm_cm_eds_group {
    uint8_t *source;
    size_t source_len;
    char **names; /* sorted, unique */
    int n;
};
struct msm_cm_eds_group *msm_cm_eds_groups(struct msm_cluster_manager *cm, int *n);
void msm_cm_eds_groups_free(struct msm_cm_eds_group *g, int n);
/* Names of dynamic clusters (for SotW removal by absence); free with msm_strv_free. */
char **msm_cm_dynamic_names(const struct msm_cluster_manager *cm, int *n);
void msm_strv_free(char **v, int n);

/* For /config_dump: iterate clusters with their last accepted proto bytes. */
struct msm_cm_dump_item {
    const char *name;
    bool is_static;
    bool warming;
    const char *version;
    double last_updated; /* epoch seconds */
    const uint8_t *proto;
    size_t proto_len;
};
typedef void msm_cm_dump_fn(void *arg, const struct msm_cm_dump_item *it);
void msm_cm_dump(const struct msm_cluster_manager *cm, msm_cm_dump_fn *fn, void *arg);
/* Endpoint assignments last applied (packed ClusterLoadAssignment), for config_dump. */
typedef void msm_cm_eds_dump_fn(void *arg, const char *service, const uint8_t *cla, size_t len,
                                const char *version, double last_updated);
void msm_cm_dump_eds(const struct msm_cluster_manager *cm, msm_cm_eds_dump_fn *fn, void *arg);
