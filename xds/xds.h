#pragma once
/* xDS client: Envoy's ADS (State of the World and Delta) and standalone gRPC config sources
 * (SDS through sds-grpc) on gRPC C core. See xds/README.md for the thread model, ownership and
 * the ACK/NACK rules.
 *
 * Threads: every function here runs on the main thread (the loop given to msm_xds_new). gRPC
 * runs on a private xDS thread started by msm_xds_start; decoded responses come back to the
 * main loop through a mailbox, the apply callback decides, and the decision (ACK/NACK) goes back
 * to the xDS thread, which sends it. The callbacks below are always called on the main thread,
 * never from inside msm_xds_subscribe. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <protobuf-c/protobuf-c.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"

#include "common/err.h"
#include "stats/stats.h"

/* Type URLs of the resources a sidecar subscribes to. */
#define MSM_XDS_TYPE_LISTENER "type.googleapis.com/envoy.config.listener.v3.Listener"
#define MSM_XDS_TYPE_CLUSTER "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define MSM_XDS_TYPE_ENDPOINT "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define MSM_XDS_TYPE_ROUTE "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
#define MSM_XDS_TYPE_SECRET "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
#define MSM_XDS_TYPE_ECDS "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"

/* One resource of an update. Everything is borrowed: valid only during the apply call (copy
 * what you keep; protobuf-c messages never outlive config building). */
struct msm_xds_resource {
    const char *name;
    /* Delta: the resource's version; SotW: the response's version_info. */
    const char *version;
    /* The decoded resource: the Any unpacked into the type's message (TypedStruct payloads are
     * not involved at this level). Never NULL, except for a client with lazy decoding
     * (msm_xds_set_lazy): there, read it with msm_xds_update_msg. */
    const ProtobufCMessage *msg;
    /* The bytes <msg> was decoded from (a serialization of it), <len> of them; NULL for types
     * whose consumers do not keep them (only clusters and route configurations have them, and
     * every lazily decoded resource). */
    const uint8_t *bytes;
    size_t len;
};

struct msm_xds_update {
    const char *type_url;
    /* State of the world: for a wildcard subscription (LDS/CDS), <resources> is the full set
     * and a resource that is absent was removed. For named subscriptions (EDS/RDS/SDS) it holds
     * the subscribed resources the response carried; absence means nothing. */
    bool sotw;
    /* Only resources of the current interest set (all of them for a wildcard subscription). */
    const struct msm_xds_resource *resources;
    int n;
    /* Delta removed_resources (of the interest set); always 0 for SotW. */
    const char *const *removed;
    int n_removed;
    /* SotW version_info / Delta system_version_info ("" when absent). */
    const char *version_info;
    void *priv_; /* msm_xds_update_release's bookkeeping */
};

/* The apply callback is done with resources[<i>]: its decoded message is freed now (msg becomes
 * NULL; name and version stay valid until the callback returns), so a 10k-resource response
 * gives its memory back while it is applied. Optional. */
void msm_xds_update_release(const struct msm_xds_update *u, int i);

/* resources[<i>].msg; with lazy decoding, unpacked now (it stays valid until the next
 * msm_xds_update_msg for another resource or its release: take them one at a time). NULL with
 * <err> when it does not unpack (a NACK of that resource), or was released. */
const ProtobufCMessage *msm_xds_update_msg(const struct msm_xds_update *u, int i,
                                           struct msm_err *err);

/* Called on the main thread for every response of a subscribed type. Return 0 to ACK, or a
 * negative code with <err> set to NACK the whole response: the NACK carries error_detail
 * {code: 13 (INTERNAL, as Envoy), message: err->msg} and the previous version stays accepted.
 * The callback may call msm_xds_subscribe (e.g. CDS adding EDS names); it must not call
 * msm_xds_free. A response whose resources cannot be decoded never reaches this callback: it is
 * NACKed with the decode error. */
typedef int msm_xds_apply_fn(void *arg, const struct msm_xds_update *u, struct msm_err *err);

/* Called on the main thread once per subscription (a wildcard type, or one name of a named
 * type) when its first response was decided (ACKed or NACKed, as Envoy ends init on a rejected
 * update too), or when its initial_fetch_timeout fired (then <type>.init_fetch_timeout is
 * counted). <name_or_null> is NULL for a wildcard subscription. The server uses it to finish
 * warming. May call msm_xds_subscribe. */
typedef void msm_xds_ready_fn(void *arg, const char *type_url, const char *name_or_null);

struct msm_xds;

/* Build the client from <b>'s dynamic_resources (ads_config, lds_config, cds_config) and node.
 * <b> is copied (not kept); <st> must outlive the client. Creates the control_plane.* stats.
 * Returns NULL with <err> set on a bad ads_config or an unsupported config source (REST,
 * filesystem, transport_api_version V2/AUTO, a cluster that cannot be a gRPC target, ...), and
 * NULL with err->msg[0] == '\0' when <b> has no dynamic_resources (nothing to do). Nothing is
 * connected before msm_xds_start. */
struct msm_xds *msm_xds_new(struct ev_loop *main_loop, const Envoy__Config__Bootstrap__V3__Bootstrap *b,
                            msm_xds_apply_fn *apply, void *arg, struct msm_stats_store *st,
                            struct msm_err *err);

/* Lazy decoding, for responses received from now on: clusters, assignments and listeners are
 * checked on the xDS thread (a malformed one NACKs the whole response, as before) but kept as
 * bytes, and each is unpacked on the main thread when the apply callback asks for it
 * (msm_xds_update_msg), so a big response never exists decoded all at once (a decoded 10k
 * cluster push is ~5x its 10 MB). Only for apply callbacks that use msm_xds_update_msg. */
void msm_xds_set_lazy(struct msm_xds *x, bool lazy);

/* Start the xDS thread. Streams open as soon as a config source has something subscribed
 * (subscriptions made before start are sent on the first stream). Returns 0 or a negative code
 * (thread creation failed). */
int msm_xds_start(struct msm_xds *x);

/* Stop the thread (cancels the calls, waits for gRPC to finish them, joins), then drop pending
 * responses without applying them and free everything. No callback runs during or after this
 * call. NULL is a no-op. */
void msm_xds_free(struct msm_xds *x);

/* Replace the interest set of <type_url> on config source <src> (NULL, `ads {}` or `self {}` =
 * the ADS stream; an api_config_source = a standalone stream, shared by every subscription
 * with an identical api_config_source). <names> (<n> of them, copied; duplicates ignored) is
 * the full new set; <wildcard> asks for every resource of the type (LDS/CDS: names NULL, n 0).
 * An empty, non-wildcard set unsubscribes the type.
 *
 * <stat_prefix> names Envoy's subscription stats (update_attempt, update_success,
 * update_rejected, update_failure, update_time, update_duration, version, version_text,
 * init_fetch_timeout): "cluster_manager.cds." / "listener_manager.lds." (one block for the
 * set), or a pattern with "{}" replaced by each name ("cluster.{}.", "sds.{}.": one block per
 * name). NULL: no stats. For standalone sources the stream's control_plane.* stats go under
 * the first subscription's (expanded) prefix.
 *
 * The initial_fetch_timeout of <src> (unset = 15 s as Envoy, 0 = wait forever) starts for each
 * new subscription now. Returns 0, or a negative code with <err> set (unknown type URL,
 * unsupported or invalid config source); nothing changes on error. */
int msm_xds_subscribe(struct msm_xds *x, const Envoy__Config__Core__V3__ConfigSource *src,
                      const char *type_url, const char *const *names, int n, bool wildcard,
                      const char *stat_prefix, struct msm_err *err);

/* Same, with one stat prefix per name (<stat_prefixes>[i] for <names>[i]; an entry may be
 * NULL for no stats), for RDS where each route name has its own HCM prefix
 * ("http.<hcm stat_prefix>.rds.<name>."). A name already subscribed keeps its stats. */
int msm_xds_subscribe_ex(struct msm_xds *x, const Envoy__Config__Core__V3__ConfigSource *src,
                         const char *type_url, const char *const *names,
                         const char *const *stat_prefixes, int n, bool wildcard,
                         struct msm_err *err);

/* Set the readiness callback (see msm_xds_ready_fn). Main thread, before msm_xds_start. */
void msm_xds_set_ready_cb(struct msm_xds *x, msm_xds_ready_fn *cb, void *arg);

/* True when the bootstrap configured ADS (ads_config). */
bool msm_xds_has_ads(const struct msm_xds *x);
