#pragma once
/* Upstream network filters: a cluster's `filters` (envoy.config.cluster.v3.Filter), run on every
 * connection the cluster's users open to its hosts (Envoy's NamedUpstreamNetworkFilterConfig-
 * Factory). Istio puts `istio.metadata_exchange` there, so that the client sidecar writes and
 * strips the istio-peer-exchange preamble on its upstream connections.
 *
 * Contract of struct msm_upstream_filter_ops (one const instance per filter type):
 * - name / config_type / config_new / config_free: as for network filters (filter/network.h);
 *   config_new runs on the main thread while the cluster is built; ctx->listener_name is the
 *   cluster name.
 * - filter_new (worker): one instance per upstream connection, made right after the connect
 *   started (the transport handshake may still be running); never fails.
 * - on_data: bytes read from the upstream, in the connection's read buffer; they run in list
 *   order. MSM_FILTER_CONTINUE passes what is left to the next filter and then to the owner;
 *   MSM_FILTER_STOP keeps the bytes in the buffer (they are offered again, with the new ones,
 *   at the next read).
 * - on_write: bytes the owner is about to write to the upstream, in reverse list order. Called
 *   only once the connection is established (TLS handshake done), as Envoy's tcp_proxy writes
 *   only then. A filter must return MSM_FILTER_CONTINUE and leave <data> in place.
 * - filter_free: when the owner is done with the connection (possibly after it closed, and after
 *   the downstream session is gone).
 * Optional slots may be NULL.
 *
 * Only tcp_proxy runs them today; the HTTP connection pools do not (in Istio their connections
 * negotiate istio-http/1.x or istio-h2 via istio.alpn, never istio-peer-exchange, so the exchange
 * would step aside there anyway).
 *
 * The owner (tcp_proxy) keeps the chain for the life of the upstream connection's user: it
 * gives the chain pointers to its own fields holding the connection and the downstream stream
 * info, and sets those fields to NULL when the connection closes / the session goes away, so a
 * filter sees NULL from then on. Worker thread only. */
#include <stdbool.h>

#include "buffer/buf.h"
#include "common/err.h"
#include "filter/network.h"

struct msm_upstream_filter_handle;
struct msm_stream_info;

struct msm_upstream_filter_ops {
    const char *name;
    const char *config_type;
    int (*config_new)(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx, void **config,
                      struct msm_err *err);
    void (*config_free)(void *config);
    void *(*filter_new)(void *config, struct msm_upstream_filter_handle *h);
    enum msm_filter_status (*on_data)(void *filter, struct msm_buf *data, bool end_stream);
    enum msm_filter_status (*on_write)(void *filter, struct msm_buf *data, bool end_stream);
    void (*filter_free)(void *filter);
};

/* A cluster's filters, built once (immutable, refcounted: the cluster config and every chain
 * using it hold a reference). */
struct msm_upstream_filters;

/* Build from the cluster's `filters` (<filters>: Envoy__Config__Cluster__V3__Filter *[<n>]).
 * *<out> is NULL when <n> is 0. An unknown or unsupported filter is an error naming it, unless
 * <validate_only> (--mode validate), where it is a warning and the filter is left out. Main
 * thread. Returns 0 or MSM_EINVAL with <err>. */
int msm_upstream_filters_new(const void *const *filters, size_t n, const char *cluster,
                             bool validate_only, struct msm_upstream_filters **out,
                             struct msm_err *err);
struct msm_upstream_filters *msm_upstream_filters_ref(struct msm_upstream_filters *fs);
void msm_upstream_filters_unref(struct msm_upstream_filters *fs);

/* The instances for one upstream connection. <conn> and <si> point at the owner's fields (the
 * connection, the downstream session's stream info), read at each use. Takes a reference to
 * <fs>. */
struct msm_upstream_chain;
struct msm_upstream_chain *msm_upstream_chain_new(struct msm_upstream_filters *fs,
                                                  struct msm_conn *const *conn,
                                                  struct msm_stream_info *const *si);
/* Run on_data / on_write (see the contract above); MSM_FILTER_STOP when a filter stopped. */
enum msm_filter_status msm_upstream_chain_on_data(struct msm_upstream_chain *ch,
                                                  struct msm_buf *data, bool end_stream);
enum msm_filter_status msm_upstream_chain_on_write(struct msm_upstream_chain *ch,
                                                   struct msm_buf *data, bool end_stream);
/* Free the instances (NULL is a no-op). */
void msm_upstream_chain_free(struct msm_upstream_chain *ch);

/* --- what an upstream filter instance may call ---------------------------------------------- */
/* The upstream connection; NULL once it closed. */
struct msm_conn *msm_upstream_filter_conn(struct msm_upstream_filter_handle *h);
/* The downstream session's stream info (its upstream part is this connection's); NULL once the
 * session is gone. */
struct msm_stream_info *msm_upstream_filter_stream_info(struct msm_upstream_filter_handle *h);
/* Write <data> (all of it is moved) to the upstream ahead of the bytes being written now: through
 * the filters after this one in write order, then the connection (Envoy's
 * injectWriteDataToFilterChain). */
void msm_upstream_filter_inject(struct msm_upstream_filter_handle *h, struct msm_buf *data);
/* Close the upstream connection (the owner sees its LOCAL_CLOSE, at once or after the flush). */
void msm_upstream_filter_close(struct msm_upstream_filter_handle *h, enum msm_close_type how);
