#pragma once
/* The cluster manager (main thread): owns every cluster's config, shared state and current host
 * set; runs DNS resolution for STRICT_DNS and LOGICAL_DNS clusters; tells the server when a host
 * set changed so a new snapshot is published. Workers only see clusters through snapshots. */
#include <ev.h>
#include <stdbool.h>

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

struct msm_cluster_manager *msm_cm_new(struct ev_loop *loop, struct msm_stats_store *st,
                                       msm_cm_cb *changed, void *arg);
void msm_cm_free(struct msm_cluster_manager *cm);
/* Add or replace a cluster from an envoy.config.cluster.v3.Cluster proto. <validate_only>:
 * check without resolving or starting anything. MSM_EINVAL with <err> on a bad cluster. */
int msm_cm_add(struct msm_cluster_manager *cm, const void *cluster_proto, bool validate_only,
               struct msm_err *err);
/* Start resolution; <init_done> runs once every cluster has its first host set (or its first
 * resolution failed, as Envoy does). */
void msm_cm_start(struct msm_cluster_manager *cm, msm_cm_cb *init_done, void *arg);
/* Add every cluster's current version to <s>. */
void msm_cm_fill_snapshot(struct msm_cluster_manager *cm, struct msm_snapshot *s);
int msm_cm_count(const struct msm_cluster_manager *cm);
