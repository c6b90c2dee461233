#pragma once
/* The accept pipeline on a worker: what happens between accept() and the filter chain.
 *
 *   1. original destination: SO_ORIGINAL_DST (iptables REDIRECT) when the listener has
 *      use_original_dst or an enabled envoy.filters.listener.original_dst; the connection's
 *      local address becomes the original destination;
 *   2. use_original_dst hand-off: the connection is processed by the listener bound to the
 *      original destination (exact ip:port, then the wildcard address with that port), as
 *      Istio's virtualOutbound (15001) requires; else by the receiving listener;
 *   3. inspection (tls_inspector, http_inspector, each subject to filter_disabled): the first
 *      bytes are peeked, never consumed, until both decided, bounded by
 *      listener_filters_timeout;
 *   4. filter-chain match on (destination, SNI, transport, ALPN, source) and the session.
 * A connection waiting in 3 is a "pending" connection: counted in downstream_pre_cx_active,
 * owned by the worker, closed on worker stop. */
#include "net/address.h"

struct msm_worker;
struct msm_listener_cfg;
struct msm_listen_socket;
struct msm_pending;

/* <fd> was just accepted on listener <l> (borrowed from the worker's snapshot). */
void msm_accept_start(struct msm_worker *w, struct msm_listener_cfg *l, int fd,
                      const struct msm_address *listen_addr, const struct msm_address *remote);
/* Close every pending connection (worker stop/drain). */
void msm_accept_close_all(struct msm_worker *w);
