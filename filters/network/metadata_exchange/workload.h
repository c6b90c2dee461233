#pragma once
/* A workload's metadata as Istio's exchange carries it: Envoy's Istio::Common::
 * WorkloadMetadataObject (istio/proxy extensions/common/metadata_object.{h,cc} at 9ba5437151af).
 *
 * - msm_mx_workload_from_struct() is convertStructToWorkloadMetadata(): read from a node
 *   metadata Struct (ours, to send) or from a peer's "x-envoy-peer-metadata" Struct (received).
 *   Keys: NAME, NAMESPACE, OWNER, WORKLOAD_NAME, CLUSTER_ID, IDENTITY, REGION,
 *   AVAILABILITY_ZONE (string values only; anything else reads as ""), and in LABELS:
 *   service.istio.io/canonical-name, service.istio.io/canonical-revision,
 *   app.kubernetes.io/name (else app), app.kubernetes.io/version (else version), plus the
 *   config's additional_labels. The node's locality fills REGION / AVAILABILITY_ZONE when the
 *   metadata has none (istio/proxy >= 1.30; pass NULL for a received Struct). The workload
 *   type comes from OWNER ("kubernetes://apis/apps/v1/namespaces/<ns>/deployments/<name>").
 *   Older proxies (<= 1.23, flatbuffer-based) sent more node keys (ISTIO_VERSION, MESH_ID,
 *   PLATFORM_METADATA, APP_CONTAINERS, INSTANCE_IPS, every label); readers of either version
 *   take only the keys above, so both interoperate.
 * - msm_mx_workload_to_struct() is convertWorkloadMetadataToStruct(): exactly what is sent under
 *   "x-envoy-peer-metadata" (empty fields left out, LABELS always present, OWNER rebuilt from the
 *   type as "kubernetes://apis/apps/v1/namespaces/<ns>/<type>s/<workload>").
 * - msm_mx_workload_state() is WorkloadMetadataObject::serializeAsProto(): Envoy's filter state
 *   value "downstream_peer" / "upstream_peer" (keys type, workload, name, cluster, namespace,
 *   service, revision, app, version, identity, region, availability_zone, labels).
 * Strings are never NULL ("" when absent). */
#include <jansson.h>

#include "stats/istio_stats.h"

enum msm_mx_workload_type {
    MSM_MX_WORKLOAD_UNKNOWN = 0,
    MSM_MX_WORKLOAD_POD = 1,
    MSM_MX_WORKLOAD_DEPLOYMENT = 2,
    MSM_MX_WORKLOAD_JOB = 3,
    MSM_MX_WORKLOAD_CRONJOB = 4,
};

struct msm_mx_workload {
    char *instance_name, *cluster_name, *namespace_name, *workload_name;
    char *canonical_name, *canonical_revision, *app_name, *app_version;
    char *identity, *region, *zone;
    enum msm_mx_workload_type type;
    int n_labels; /* additional_labels present in LABELS */
    char **label_keys, **label_values;
};

/* Fill <out> (overwritten) from <md> (a JSON object; NULL = empty). <region>/<zone> (may be NULL)
 * are the node's locality. Release with msm_mx_workload_deinit. */
void msm_mx_workload_from_struct(const json_t *md, char *const *additional_labels,
                                 int n_additional_labels, const char *region, const char *zone,
                                 struct msm_mx_workload *out);
void msm_mx_workload_deinit(struct msm_mx_workload *w);
/* The peer labels of Istio's metrics (stats/istio_stats.h) for <w>; the strings stay <w>'s. */
struct msm_istio_peer msm_mx_workload_labels(const struct msm_mx_workload *w);
/* New JSON objects (caller owns the reference). */
json_t *msm_mx_workload_to_struct(const struct msm_mx_workload *w);
json_t *msm_mx_workload_state(const struct msm_mx_workload *w);
/* "pod", "deployment", "job", "cronjob", or NULL for unknown. */
const char *msm_mx_workload_type_name(enum msm_mx_workload_type t);
/* Envoy's parseOwner(<owner>, <workload>): strip "s/<workload>" from the end of <owner>, take
 * the path segment before it as the type. */
enum msm_mx_workload_type msm_mx_workload_parse_owner(const char *owner, const char *workload);
