#pragma once
/* Internals shared by the main-thread side (xds.c) and the gRPC thread (xds_thread.c). See
 * xds/README.md. Nothing here is used outside xds/. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "envoy/config/core/v3/base.pb-c.h"

#include "event/loop.h"
#include "stats/stats.h"
#include "xds/strmap.h"
#include "xds/xds.h"
#include "xds/xds_proto.h"
#include "xds/xds_target.h"

/* Envoy's subscription stats (source/common/config ALL_SUBSCRIPTION_STATS); version_text is a
 * text readout created beside them. */
#define MSM_XDS_SUB_STATS(C, G, H)                                                               \
    C(init_fetch_timeout) C(update_attempt) C(update_failure) C(update_rejected)                \
    C(update_success) G(update_time) G(version) H(update_duration)
MSM_STATS_STRUCT(msm_xds_sub_stats, MSM_XDS_SUB_STATS);
MSM_STATS_INIT_FN(msm_xds_sub_stats, MSM_XDS_SUB_STATS)

/* Envoy's ALL_CONTROL_PLANE_STATS (identifier is not kept). Created on the main thread; the
 * gauges are written by the xDS thread (relaxed atomics) while the client lives. */
#define MSM_XDS_CP_STATS(C, G, H) C(rate_limit_enforced) G(connected_state) G(pending_requests)
MSM_STATS_STRUCT(msm_xds_cp_stats, MSM_XDS_CP_STATS);
MSM_STATS_INIT_FN(msm_xds_cp_stats, MSM_XDS_CP_STATS)

/* The connection of an envoy_grpc source counted in its cluster's stats as Envoy does
 * ("cluster.xds-grpc.upstream_cx_*"): the xDS thread updates them when the gRPC channel enters
 * and leaves READY. */
#define MSM_XDS_CX_STATS(C, G, H)                                                                 \
    C(upstream_cx_total) G(upstream_cx_active) C(upstream_cx_connect_fail)
MSM_STATS_STRUCT(msm_xds_cx_stats, MSM_XDS_CX_STATS);
MSM_STATS_INIT_FN(msm_xds_cx_stats, MSM_XDS_CX_STATS)

/* Envoy's initial_fetch_timeout when a ConfigSource leaves it unset. */
#define MSM_XDS_DEFAULT_INIT_FETCH_TIMEOUT_MS 15000
/* Largest response accepted (gRPC max receive message length); istiod pushes big configs. */
#define MSM_XDS_MAX_MESSAGE (128 * 1024 * 1024)
/* Envoy's reconnect backoff (GrpcStream: RETRY_INITIAL_DELAY_MS, RETRY_MAX_DELAY_MS). */
#define MSM_XDS_BACKOFF_BASE_MS 500
#define MSM_XDS_BACKOFF_MAX_MS 30000

/* ---- main thread side ---------------------------------------------------------------------- */

struct msm_xds_stat_block {
    struct msm_xds_sub_stats s;
    struct msm_stat *version_text;
};

/* One subscription: a wildcard type, or one name of a named type. */
struct msm_xds_name_sub {
    struct msm_xds *x;
    struct msm_xds_type_sub *ts;
    char *name; /* NULL for the wildcard subscription */
    struct msm_xds_stat_block *stats; /* NULL = no stats */
    ev_timer init_timer;
    bool timer_on;
    bool ready;
};

/* Main-side state of one type on one source. */
struct msm_xds_type_sub {
    char *type_url;
    bool wildcard;
    struct msm_xds_name_sub *wild;  /* when wildcard */
    struct msm_strmap names;        /* name -> struct msm_xds_name_sub * */
};

/* A config source: the ADS stream (id 0 when configured) or one standalone stream (one per
 * distinct api_config_source and type, as Envoy opens one per subscription). */
struct msm_xds_source {
    int id;
    char *key;         /* "ads", or hex of the packed api_config_source + "|" + type URL */
    bool delta;
    bool node_first_only;
    struct msm_xds_target target;
    struct msm_xds_cp_stats cp;
    struct msm_xds_cx_stats cx; /* zero unless the target is a cluster */
    struct msm_xds_type_sub **types;
    int n_types;
};

struct msm_xds_thread;

struct msm_xds {
    struct ev_loop *loop;
    struct msm_mailbox mb;
    struct msm_stats_store *st;
    msm_xds_apply_fn *apply;
    void *apply_arg;
    msm_xds_ready_fn *ready;
    void *ready_arg;
    Envoy__Config__Bootstrap__V3__Bootstrap *bootstrap; /* private copy */
    Envoy__Config__Core__V3__Node *node; /* private copy with user agent set; read-only */
    bool has_ads;
    struct msm_xds_source **sources;
    int n_sources;
    struct msm_xds_thread *thread;
    bool started;
    bool stopping; /* msm_xds_free running: events are dropped */
    atomic_bool lazy; /* msm_xds_set_lazy; read by the xDS thread */
};

/* ---- commands: main -> xDS thread ---------------------------------------------------------- */

enum msm_xds_cmd_kind {
    MSM_XDS_CMD_ADD_SOURCE = 0,
    MSM_XDS_CMD_SUBSCRIBE = 1,
    MSM_XDS_CMD_DECISION = 2,
};

struct msm_xds_cmd {
    struct msm_xds_cmd *next;
    enum msm_xds_cmd_kind kind;
    int src;
    /* ADD_SOURCE */
    bool delta;
    bool node_first_only;
    struct msm_xds_target target;
    struct msm_xds_cp_stats *cp; /* owned by the main-side source, outlives the thread */
    struct msm_xds_cx_stats *cx; /* likewise; NULL when the target is not a cluster */
    const char *method;          /* static string; NULL = ADS */
    /* SUBSCRIBE and DECISION */
    char *type_url;
    /* SUBSCRIBE */
    char **names; /* sorted, unique */
    int n;
    bool wildcard;
    /* DECISION */
    uint64_t gen;
    char *nonce;
    bool accepted;
    char *version_info;
    char *error;
};

void msm__xds_cmd_free(struct msm_xds_cmd *c);

/* ---- events: xDS thread -> main (through x->mb) --------------------------------------------- */

enum msm_xds_event_kind {
    MSM_XDS_EV_RESPONSE = 0,
    MSM_XDS_EV_STREAM_DOWN = 1,
};

struct msm_xds_event {
    struct msm_xds *x;
    enum msm_xds_event_kind kind;
    int src;
    uint64_t gen;
    struct msm_xds_decoded *d; /* RESPONSE, owned */
};

/* Mailbox task (main thread): handles and frees a struct msm_xds_event. */
void msm__xds_on_event(void *arg);

/* ---- the xDS thread (xds_thread.c) ------------------------------------------------------------ */

/* Create the gRPC side (grpc_init, completion queue). Main thread. */
struct msm_xds_thread *msm__xds_thread_new(struct msm_xds *x);
/* Start the thread: 0 or a negative errno. */
int msm__xds_thread_start(struct msm_xds_thread *t);
/* Queue <c> (ownership passes) and wake the thread. Main thread; also before start. */
void msm__xds_thread_post(struct msm_xds_thread *t, struct msm_xds_cmd *c);
/* Stop and join the thread (cancelling every call and waiting for gRPC to complete them), free
 * everything, grpc_shutdown. Main thread. */
void msm__xds_thread_free(struct msm_xds_thread *t);
