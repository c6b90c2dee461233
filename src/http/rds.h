#pragma once
/* RDS on the main thread: the route configurations that HTTP connection managers with
 * `rds {route_config_name, config_source}` serve from.
 *
 * Flow (Envoy's RdsRouteConfigSubscription + listener warming):
 * - A network filter config declares what it needs through msm_network_filter_ops.rds_dep
 *   (src/filter/network.h). The server collects the names of every listener it knows
 *   (msm_rds_sync) and subscribes to them (one interest set per config source), with stats
 *   under "http.<hcm stat_prefix>.rds.<name>.".
 * - A listener (new or modified) is not served until each of its names is ready: its first
 *   response was applied or rejected, or its initial_fetch_timeout fired. Until then the old
 *   version of a modified listener keeps serving; a new one is not bound into snapshots.
 * - Each RouteConfiguration is compiled (src/http/route.h) when it arrives; a bad one is
 *   NACKed with its field path and the previous version stays. Compiled configs go into every
 *   snapshot; HCMs look theirs up by name per request, so an update reaches existing
 *   connections at their next request, as in Envoy. */
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct msm_rds;
struct msm_snapshot;
struct msm_route_config;

struct msm_rds *msm_rds_new(void);
void msm_rds_free(struct msm_rds *r);

/* Apply (compile and store) RouteConfiguration <proto> named <name>. Returns 1 when the
 * configuration changed, 0 when identical, MSM_EINVAL with <err> (the NACK reason). The name
 * becomes ready either way. */
int msm_rds_put(struct msm_rds *r, const char *name, const void *proto, struct msm_err *err);
/* Delta removal: the name has no configuration any more (its HCMs answer 404). */
bool msm_rds_remove(struct msm_rds *r, const char *name);
/* First response decided or initial fetch timeout: listeners waiting for <name> may serve. */
bool msm_rds_mark_ready(struct msm_rds *r, const char *name);
bool msm_rds_ready(const struct msm_rds *r, const char *name);
/* Add every compiled configuration to <s>. */
void msm_rds_fill_snapshot(const struct msm_rds *r, struct msm_snapshot *s);
/* Borrowed compiled configuration of <name>, or NULL. */
struct msm_route_config *msm_rds_get(const struct msm_rds *r, const char *name);
int msm_rds_count(const struct msm_rds *r);
