#pragma once
/* Internals shared by the admin files: endpoint handlers implemented outside admin.c and the
 * query-string helpers they use. */
#include "admin/admin.h"

struct msm_server;

typedef void msm_admin_handler(struct msm_server *srv, const struct msm_admin_req *rq,
                               struct msm_admin_resp *rs);

/* config_dump.c */
msm_admin_handler msm_admin_config_dump;
/* admin_stats.c: /stats, /stats/prometheus, /reset_counters */
msm_admin_handler msm_admin_stats;
msm_admin_handler msm_admin_stats_prometheus;
msm_admin_handler msm_admin_reset_counters;
/* admin_clusters.c: /clusters, /listeners */
msm_admin_handler msm_admin_clusters;
msm_admin_handler msm_admin_listeners;
/* admin_misc.c: /logging, /memory, /runtime, /certs, /drain_listeners */
msm_admin_handler msm_admin_logging;
msm_admin_handler msm_admin_memory;
msm_admin_handler msm_admin_runtime;
msm_admin_handler msm_admin_certs;
msm_admin_handler msm_admin_drain_listeners;
/* admin_rtsp.c: /rtsp/sessions */
msm_admin_handler msm_admin_rtsp_sessions;
/* Stop the graceful-drain timer (admin teardown). */
void msm_admin_drain_stop(struct msm_server *srv);

/* Longest decoded query parameter value accepted (a regex, a mask list...). */
#define MSM_ADMIN_MAX_PARAM 4096

/* Like msm_admin_query_param, but distinguishes "absent" (0), "present" (1) and "value too
 * long" (MSM_ELIMIT). */
int msm_admin_query_get(const char *query, const char *name, char *val, size_t n);
/* Number of parameters in <query>. */
int msm_admin_query_count(const char *query);
/* Iterate: the <i>th parameter's decoded key and value; false past the end. */
bool msm_admin_query_at(const char *query, int i, char *key, size_t kn, char *val, size_t vn);
