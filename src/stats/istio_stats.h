#pragma once
/* Istio's standard metrics (istio/proxy source/extensions/filters/http/istio_stats), driven by
 * stats.PluginConfig: istio_build; the TCP families istio_tcp_connections_opened_total,
 * istio_tcp_connections_closed_total, istio_tcp_sent_bytes_total, istio_tcp_received_bytes_total
 * (filters/network/istio_stats); the HTTP families istio_requests_total (counter),
 * istio_request_duration_milliseconds, istio_request_bytes, istio_response_bytes (histograms,
 * Envoy's default buckets as Istio's sidecars use them) and, for gRPC,
 * istio_request_messages_total / istio_response_messages_total (filters/http/istio_stats).
 *
 * Label values follow istio_stats.cc exactly (populatePeerInfo):
 * - the local side comes from the node metadata (WORKLOAD_NAME, NAMESPACE, CLUSTER_ID, LABELS
 *   app/version/service.istio.io/canonical-name|revision, ISTIO_VERSION), installed once with
 *   msm_istio_set_node();
 * - the peer side from a struct msm_istio_peer: what the metadata exchange read from the peer,
 *   or on the client side the chosen endpoint's filter_metadata istio.workload string
 *   ("name;namespace;canonical-service;canonical-revision;cluster", msm_istio_peer_parse);
 * - destination_service from the cluster's filter_metadata istio.services[0].{host,name}, the
 *   special cluster names (BlackHoleCluster, PassthroughCluster, InboundPassthroughCluster*), or
 *   the Host header unless disable_host_header_fallback;
 * - principals from the peer/local certificate URI SANs; connection_security_policy mutual_tls
 *   on the server when both SANs exist, none otherwise, unknown on the client.
 * Missing values are "unknown" (canonical revisions: "latest").
 * Label order is Envoy's: reporter, the 19 peer labels, request_protocol, (HTTP only)
 * response_code and grpc_response_status, response_flags, connection_security_policy. The gRPC
 * message counters carry only reporter and the peer labels, as istio_stats.cc reports them.
 *
 * Overrides (PluginConfig.metrics): drop a metric, remove standard tags, set a tag to an
 * expression or add one. Expressions are CEL upstream; here a string literal ('x' or "x") is
 * its value and any other expression evaluates to "unknown" (logged once at config time).
 * definitions (custom metrics) are ignored with a warning.
 *
 * Series (one label set) are created on first use on any thread and kept by the config that
 * created them: counts survive as long as a config with the same labels is alive. Stats are
 * named "istiocustom.<metric>" with explicit tags, so /stats/prometheus prints them without the
 * envoy_ prefix, with labels in Envoy's order. */
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct msm_stats_store;

struct msm_istio_peer {
    const char *workload_name, *namespace_name, *canonical_name, *canonical_revision;
    const char *app_name, *app_version, *cluster_id, *identity;
};

/* "name;namespace;canonical-service;canonical-revision;cluster" (endpoint metadata
 * istio.workload) into <out>, whose strings point into <buf> (a copy of <s>, <n> bytes). False
 * when it has not five fields. */
bool msm_istio_peer_parse(const char *s, char *buf, size_t n, struct msm_istio_peer *out);

enum msm_istio_reporter {
    MSM_ISTIO_CLIENT = 0,  /* outbound sidecar: reporter="source" */
    MSM_ISTIO_SERVER = 1,  /* inbound sidecar: reporter="destination" */
    MSM_ISTIO_GATEWAY = 2, /* waypoint: reporter="waypoint" */
};

/* What one connection's labels are computed from (all strings borrowed; NULL = absent). */
struct msm_istio_conn {
    const struct msm_istio_peer *peer;
    const char *cluster_name;      /* upstream cluster (special names) */
    const char *service_host, *service_name; /* cluster metadata istio.services[0] */
    const char *host_header;       /* HTTP only */
    const char *route_name;
    const char *peer_san, *local_san;
    const char *response_flags;    /* "-" when none */
    const char *request_protocol;  /* "tcp", "http", "grpc" */
    /* HTTP only (NULL for TCP): "200" ("0" before a response); the gRPC status as a number,
     * "" when not gRPC. */
    const char *response_code, *grpc_status;
};

struct msm_istio_config;
struct msm_istio_tcp;  /* one TCP series: the four counters for one label set */
struct msm_istio_http; /* one HTTP series: the request counter and the three histograms */
struct msm_istio_grpc; /* the two gRPC message counters of one peer label set */

/* A cluster's envoy.config.core.v3.Metadata (<md>, may be NULL): filter_metadata
 * istio.services[0].host and .name into malloc'ed *<host> / *<name> (NULL when absent). */
void msm_istio_cluster_services(const void *md, char **host, char **name);
/* The same metadata's istio.external and istio.disable_mx booleans (false unless a bool true):
 * the HTTP peer metadata exchange does not announce us to such clusters. */
void msm_istio_cluster_flags(const void *md, bool *external, bool *disable_mx);

/* Node metadata (envoy.config.core.v3.Node), copied; main thread at start-up. NULL clears. */
void msm_istio_set_node(const void *node);
/* The istio_build gauge (component="proxy", tag=<ISTIO_VERSION or unknown>) = 1, in <st>; done
 * by every istio.stats config, as Envoy's recordVersion. */
void msm_istio_record_version(struct msm_stats_store *st);
/* Release what the module keeps (istio_build); before the store is freed. */
void msm_istio_shutdown(void);

/* From a stats.PluginConfig (<proto>); <traffic_direction> is the listener's
 * (envoy.config.core.v3.TrafficDirection: 1 inbound, 2 outbound). NULL with <err>. */
struct msm_istio_config *msm_istio_config_new(const void *proto, int traffic_direction,
                                              struct msm_stats_store *st, struct msm_err *err);
void msm_istio_config_free(struct msm_istio_config *c);
/* The config_new / config_free of the istio.stats filters (network and HTTP): the filter's
 * config object is the struct msm_istio_config itself. */
int msm_istio_filter_config_new(const void *proto, int traffic_direction,
                                struct msm_stats_store *st, void **out, struct msm_err *err);
void msm_istio_filter_config_free(void *config);
enum msm_istio_reporter msm_istio_reporter(const struct msm_istio_config *c);
uint32_t msm_istio_tcp_reporting_ms(const struct msm_istio_config *c);

/* The series for <conn> (created on first use; valid while <c> is). Any thread. */
struct msm_istio_tcp *msm_istio_tcp_series(struct msm_istio_config *c,
                                           const struct msm_istio_conn *conn);
void msm_istio_tcp_opened(struct msm_istio_tcp *s);
void msm_istio_tcp_bytes(struct msm_istio_tcp *s, uint64_t sent, uint64_t received);
void msm_istio_tcp_closed(struct msm_istio_tcp *s);

/* The HTTP series for <conn> (request_protocol "http" or "grpc", response_code set); created on
 * first use, valid while <c> is. Any thread. */
struct msm_istio_http *msm_istio_http_series(struct msm_istio_config *c,
                                             const struct msm_istio_conn *conn);
/* One finished request: istio_requests_total += 1, and <duration_ms>, <request_bytes>,
 * <response_bytes> recorded in the three histograms (metrics the config drops are skipped). */
void msm_istio_http_request(struct msm_istio_http *s, uint64_t duration_ms,
                            uint64_t request_bytes, uint64_t response_bytes);
/* The gRPC message counters for <conn>'s peer labels (the rest of <conn> is not used). */
struct msm_istio_grpc *msm_istio_grpc_series(struct msm_istio_config *c,
                                             const struct msm_istio_conn *conn);
void msm_istio_grpc_messages(struct msm_istio_grpc *s, uint64_t requests, uint64_t responses);

/* The standard labels of <conn> as Envoy's stats filter builds them (reporter first,
 * request_protocol, response_flags, connection_security_policy last), with <c>'s overrides of
 * <metric> ("tcp_sent_bytes_total", ...) applied: <names>/<values> get up to <max> entries.
 * Returns the count, or -1 when <c> drops the metric. For the HTTP families and tests. */
int msm_istio_labels(const struct msm_istio_config *c, const char *metric,
                     const struct msm_istio_conn *conn, const char **names, const char **values,
                     int max);
