/* The bootstrap node as plain C (see node.h). */
#include "config/node.h"

#include <stdlib.h>

#include "envoy/config/core/v3/base.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"

static struct msm_node node;
static bool node_set;

static char *str(const char *s)
{
    return msm_xstrdup(s ? s : "");
}

void msm_node_clear(void)
{
    free(node.id);
    free(node.cluster);
    free(node.region);
    free(node.zone);
    free(node.sub_zone);
    json_decref(node.metadata);
    node = (struct msm_node){0};
    node_set = false;
}

void msm_node_set(const void *node_proto)
{
    const Envoy__Config__Core__V3__Node *n = node_proto;
    msm_node_clear();
    node.id = str(n ? n->id : NULL);
    node.cluster = str(n ? n->cluster : NULL);
    node.region = str(n && n->locality ? n->locality->region : NULL);
    node.zone = str(n && n->locality ? n->locality->zone : NULL);
    node.sub_zone = str(n && n->locality ? n->locality->sub_zone : NULL);
    if (n && n->metadata) {
        struct msm_err err = {{0}};
        node.metadata = msm_pbjson_encode(&n->metadata->base, NULL, &err);
        if (!json_is_object(node.metadata)) {
            msm_log(MSM_LOG_WARN, MSM_LC_CONFIG, "node.metadata: cannot be copied (%s); peers "
                    "will see an empty node metadata", err.msg[0] ? err.msg : "not an object");
            json_decref(node.metadata);
            node.metadata = NULL;
        }
    }
    node_set = true;
}

const struct msm_node *msm_node_get(void)
{
    static const struct msm_node empty = {.id = "", .cluster = "", .region = "", .zone = "",
                                          .sub_zone = ""};
    return node_set ? &node : &empty;
}
