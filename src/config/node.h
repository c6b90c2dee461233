#pragma once
/* The bootstrap's node (Envoy's LocalInfo): a plain-C copy of envoy.config.core.v3.Node for the
 * filters that describe this proxy to its peers (Istio's metadata exchange sends the node
 * metadata; stats label the local side with it).
 *
 * Threads and lifetime: msm_node_set() runs once on the main thread when the bootstrap is loaded,
 * before any listener, cluster or worker exists; from then on the copy is immutable and may be
 * read from any thread until msm_node_clear() at shutdown (after the last config user). */
#include <jansson.h>

struct msm_node {
    char *id;      /* node.id ("sidecar~10.1.2.3~pod.ns~ns.svc.cluster.local"); "" when unset */
    char *cluster; /* node.cluster */
    char *region, *zone, *sub_zone; /* node.locality; "" when unset */
    json_t *metadata; /* node.metadata (a google.protobuf.Struct) as a JSON object; NULL if unset */
};

/* Copy <node_proto> (an Envoy__Config__Core__V3__Node, may be NULL = an empty node), replacing
 * an earlier copy. Main thread, before workers start. */
void msm_node_set(const void *node_proto);
/* The copy; never NULL (an empty node before msm_node_set). */
const struct msm_node *msm_node_get(void);
/* Release the copy (the node becomes empty again). */
void msm_node_clear(void);
