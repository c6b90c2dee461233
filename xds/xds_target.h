#pragma once
/* Where an xDS stream connects: a GrpcService (envoy_grpc naming a static cluster of the
 * bootstrap, or google_grpc with a target_uri) turned into a gRPC C core target URI, TLS
 * material and channel settings. Pure config code (no gRPC calls): main thread, testable. */
#include <stdbool.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/core/v3/grpc_service.pb-c.h"

#include "common/err.h"

struct msm_xds_target {
    /* gRPC target: "unix:<path>", "unix-abstract:<name>", "ipv4:<ip>:<port>[,...]",
     * "ipv6:[<ip>]:<port>[,...]", "dns:///<host>:<port>", or a google_grpc target_uri. */
    char *target;
    char *desc;      /* for logs: "cluster 'xds-grpc' (unix:./etc/istio/proxy/XDS)" */
    char *authority; /* EnvoyGrpc.authority, or NULL */
    char *stat_cluster; /* envoy_grpc: the cluster's stat name ("cluster.<it>.upstream_cx_*") */
    bool tls;
    char *root_pem;  /* trusted CA (NULL = gRPC's default roots) */
    char *cert_pem;  /* client certificate chain, or NULL */
    char *key_pem;   /* its private key, or NULL */
    char *sni;       /* TLS server name override, or NULL */
    /* HTTP/2 keepalive pings from the cluster's upstream_connection_options.tcp_keepalive
     * (keepalive_time -> ping interval; interval * probes -> ping timeout); 0 = off. */
    int keepalive_time_ms;
    int keepalive_timeout_ms;
    /* GrpcService.initial_metadata, sent on every stream. */
    char **md_keys;
    char **md_vals;
    int n_md;
};

/* Resolve <gs> against <b>'s static clusters into <out> (zeroed first). Returns 0, or a
 * negative code with <err> naming the field ("envoy_grpc.cluster_name 'x': unknown static
 * cluster", "... EDS cluster cannot be an xDS target", unreadable certificate files, ...). */
int msm_xds_target_resolve(const Envoy__Config__Bootstrap__V3__Bootstrap *b,
                           const Envoy__Config__Core__V3__GrpcService *gs,
                           struct msm_xds_target *out, struct msm_err *err);
void msm_xds_target_deinit(struct msm_xds_target *t);
/* Deep copy (for handing to the xDS thread). */
void msm_xds_target_copy(struct msm_xds_target *dst, const struct msm_xds_target *src);
