#pragma once
/* A downstream session: an accepted connection plus its network filter chain instances
 * (Envoy's FilterManager). Worker thread only. */
#include "accesslog/stream_info.h"
#include "filter/network.h"
#include "net/listener.h"

struct msm_worker;

struct msm_filter_handle {
    struct msm_session *s;
    int index;
    const struct msm_network_filter_ops *ops;
    void *inst;
};

struct msm_session {
    struct msm_session *next, *prev; /* worker's session list */
    struct msm_worker *w;
    struct msm_conn *conn;
    struct msm_listener_cfg *lcfg; /* reference: keeps the chain alive */
    const struct msm_filter_chain *chain;
    struct msm_filter_handle *fh;
    int n;
    int n_active;   /* filters that still see the connection (msm_filter_take_over) */
    int init_pos;   /* next filter whose on_new_connection has not run */
    bool init_done; /* every on_new_connection continued: reading may start */
    int read_pos;   /* a filter that stopped read iteration, or -1 */
    bool closed;
    bool handshaking; /* TLS handshake in progress: filters have not started */
    double start;
    struct msm_stream_info si; /* access logs, Istio stats (msm_filter_stream_info) */
};

/* Create the session for <conn> on <chain> and run on_new_connection. Takes ownership of
 * <conn>; takes a new reference to <lcfg>. */
struct msm_session *msm_session_new(struct msm_worker *w, struct msm_conn *conn,
                                    struct msm_listener_cfg *lcfg,
                                    const struct msm_filter_chain *chain);
