/* /config_dump: envoy.admin.v3.ConfigDump as Envoy prints it (proto3 JSON, original field
 * names): bootstrap, clusters, endpoints (?include_eds), listeners, routes, secrets, each with
 * version_info and last_updated; private keys redacted. Built as a JSON tree from the accepted
 * protobuf bytes each manager keeps, so what is printed is exactly what was applied. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"

#include "admin/admin.h"
#include "admin/admin_private.h"
#include "common/alloc.h"
#include "config/pbjson.h"
#include "server/listener_manager.h"
#include "server/server.h"
#include "tls/secrets.h"
#include "upstream/cluster_manager.h"

#define TYPE_PREFIX "type.googleapis.com/"

static json_t *timestamp(double t)
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    char buf[64];
    int ms = (int)lround((t - (double)s) * 1000.0);
    if (ms > 999) {
        ms = 999;
    }
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    return json_string(buf);
}

/* Encode stored bytes of <desc> as a JSON Any object ("@type" first). NULL on error. */
static json_t *any_of(const ProtobufCMessageDescriptor *desc, const uint8_t *b, size_t len)
{
    struct msm_err err;
    ProtobufCMessage *m = msm_pb_unpack(desc, b, len, &err);
    if (!m) {
        return NULL;
    }
    json_t *j = msm_pbjson_encode(m, NULL, &err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (!j) {
        return NULL;
    }
    json_t *o = json_object();
    char t[256];
    snprintf(t, sizeof(t), TYPE_PREFIX "%s", desc->name);
    json_object_set_new(o, "@type", json_string(t));
    json_object_update(o, j);
    json_decref(j);
    return o;
}

/* Replace private key material anywhere under <j> (Envoy redacts sensitive fields). */
static void redact(json_t *j)
{
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            redact(v);
        }
        return;
    }
    if (!json_is_object(j)) {
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        if (!strcmp(k, "private_key") && json_is_object(v)) {
            if (json_object_get(v, "inline_bytes")) {
                json_object_set_new(v, "inline_bytes", json_string("W3JlZGFjdGVkXQ=="));
            }
            if (json_object_get(v, "inline_string")) {
                json_object_set_new(v, "inline_string", json_string("[redacted]"));
            }
        } else {
            redact(v);
        }
    }
}

struct ctx {
    json_t *statics, *active, *warming;
};

static void on_cluster(void *arg, const struct msm_cm_dump_item *it)
{
    struct ctx *c = arg;
    json_t *any = any_of(&envoy__config__cluster__v3__cluster__descriptor, it->proto,
                         it->proto_len);
    if (!any) {
        return;
    }
    json_t *o = json_object();
    if (!it->is_static) {
        json_object_set_new(o, "version_info", json_string(it->version));
    }
    json_object_set_new(o, "cluster", any);
    json_object_set_new(o, "last_updated", timestamp(it->last_updated));
    json_array_append_new(it->is_static ? c->statics : it->warming ? c->warming : c->active, o);
}

static json_t *clusters_dump(struct msm_server *srv)
{
    struct ctx c = {json_array(), json_array(), json_array()};
    msm_cm_dump(srv->cm, on_cluster, &c);
    json_t *o = json_object();
    json_object_set_new(o, "@type", json_string(TYPE_PREFIX "envoy.admin.v3.ClustersConfigDump"));
    if (srv->cds_version && srv->cds_version[0]) {
        json_object_set_new(o, "version_info", json_string(srv->cds_version));
    }
    json_object_set_new(o, "static_clusters", c.statics);
    json_object_set_new(o, "dynamic_active_clusters", c.active);
    json_object_set_new(o, "dynamic_warming_clusters", c.warming);
    return o;
}

static void on_listener(void *arg, const struct msm_lm_dump_item *it)
{
    struct ctx *c = arg;
    json_t *any = any_of(&envoy__config__listener__v3__listener__descriptor, it->proto,
                         it->proto_len);
    if (!any) {
        return;
    }
    json_t *o = json_object();
    if (it->is_static) {
        json_object_set_new(o, "listener", any);
        json_object_set_new(o, "last_updated", timestamp(it->last_updated));
        json_array_append_new(c->statics, o);
        return;
    }
    json_t *st = json_object();
    json_object_set_new(st, "version_info", json_string(it->version));
    json_object_set_new(st, "listener", any);
    json_object_set_new(st, "last_updated", timestamp(it->last_updated));
    json_object_set_new(o, "name", json_string(it->name));
    json_object_set_new(o, "active_state", st);
    json_array_append_new(c->active, o);
}

static json_t *listeners_dump(struct msm_server *srv)
{
    struct ctx c = {json_array(), json_array(), NULL};
    msm_lm_dump(srv->lmgr, on_listener, &c);
    json_t *o = json_object();
    json_object_set_new(o, "@type",
                        json_string(TYPE_PREFIX "envoy.admin.v3.ListenersConfigDump"));
    if (srv->lds_version && srv->lds_version[0]) {
        json_object_set_new(o, "version_info", json_string(srv->lds_version));
    }
    json_object_set_new(o, "static_listeners", c.statics);
    json_object_set_new(o, "dynamic_listeners", c.active);
    return o;
}

static void on_eds(void *arg, const char *service, const uint8_t *cla, size_t len,
                   const char *version, double last_updated)
{
    (void)service;
    json_t *arr = arg;
    json_t *any = any_of(&envoy__config__endpoint__v3__cluster_load_assignment__descriptor, cla,
                         len);
    if (!any) {
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "version_info", json_string(version));
    json_object_set_new(o, "endpoint_config", any);
    json_object_set_new(o, "last_updated", timestamp(last_updated));
    json_array_append_new(arr, o);
}

static json_t *endpoints_dump(struct msm_server *srv)
{
    json_t *dyn = json_array();
    msm_cm_dump_eds(srv->cm, on_eds, dyn);
    json_t *o = json_object();
    json_object_set_new(o, "@type",
                        json_string(TYPE_PREFIX "envoy.admin.v3.EndpointsConfigDump"));
    json_object_set_new(o, "dynamic_endpoint_configs", dyn);
    return o;
}

static json_t *store_dump(const struct msm_rstore *s, const ProtobufCMessageDescriptor *d,
                          const char *dump_type, const char *list_key, const char *item_key,
                          bool with_name)
{
    json_t *arr = json_array();
    for (int i = 0; i < s->n; i++) {
        const struct msm_rstore_item *it = &s->v[i];
        json_t *any = any_of(d, it->bytes, it->len);
        if (!any) {
            continue;
        }
        json_t *o = json_object();
        if (with_name) {
            json_object_set_new(o, "name", json_string(it->name));
        }
        json_object_set_new(o, "version_info", json_string(it->version));
        json_object_set_new(o, "last_updated", timestamp(it->last_updated));
        json_object_set_new(o, item_key, any);
        json_array_append_new(arr, o);
    }
    json_t *o = json_object();
    char t[128];
    snprintf(t, sizeof(t), TYPE_PREFIX "%s", dump_type);
    json_object_set_new(o, "@type", json_string(t));
    json_object_set_new(o, list_key, arr);
    return o;
}

struct secrets_ctx {
    json_t *statics, *active, *warming;
};

static void on_secret(void *arg, const struct msm_secret_dump_item *it)
{
    struct secrets_ctx *c = arg;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(it->name));
    if (!it->is_static) {
        json_object_set_new(o, "version_info", json_string(it->version));
    }
    if (it->proto) {
        json_object_set_new(o, "last_updated", timestamp(it->last_updated));
        json_t *any = any_of(&envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
                             it->proto, it->proto_len);
        if (any) {
            json_object_set_new(o, "secret", any);
        }
    }
    json_array_append_new(it->is_static ? c->statics : it->proto ? c->active : c->warming, o);
}

/* Envoy's SecretsConfigDump: static secrets, SDS secrets in use and those still awaited
 * (private keys are redacted by the caller). */
static json_t *secrets_dump(void)
{
    struct secrets_ctx c = {json_array(), json_array(), json_array()};
    if (msm_secrets) {
        msm_secrets_dump(msm_secrets, on_secret, &c);
    }
    json_t *o = json_object();
    json_object_set_new(o, "@type", json_string(TYPE_PREFIX "envoy.admin.v3.SecretsConfigDump"));
    json_object_set_new(o, "static_secrets", c.statics);
    json_object_set_new(o, "dynamic_active_secrets", c.active);
    json_object_set_new(o, "dynamic_warming_secrets", c.warming);
    return o;
}

/* ---- ?mask= and ?resource= ------------------------------------------------------------------
 * mask is a FieldMask ("a,b.c"): every dump (or every resource with ?resource=) keeps only the
 * masked fields, nested paths going into sub-messages and into every element of a repeated
 * field; "@type" always stays. */

/* Parse "a,b.c" into a tree of JSON objects (leaves are true). */
static json_t *mask_tree(const char *mask)
{
    json_t *root = json_object();
    char *copy = msm_xstrdup(mask);
    for (char *save = NULL, *path = strtok_r(copy, ",", &save); path;
         path = strtok_r(NULL, ",", &save)) {
        json_t *node = root;
        char *save2 = NULL;
        for (char *part = strtok_r(path, ".", &save2); part && json_is_object(node);
             part = strtok_r(NULL, ".", &save2)) {
            bool last = save2 == NULL || *save2 == '\0';
            json_t *next = json_object_get(node, part);
            if (last) {
                json_object_set_new(node, part, json_true());
                break;
            }
            if (!next) {
                next = json_object();
                json_object_set_new(node, part, next);
            }
            node = next;
        }
    }
    free(copy);
    return root;
}

static void mask_apply(json_t *j, const json_t *tree)
{
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            mask_apply(v, tree);
        }
        return;
    }
    if (!json_is_object(j) || !json_is_object(tree)) {
        return;
    }
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(j, tmp, k, v) {
        const json_t *t = json_object_get(tree, k);
        if (!strcmp(k, "@type")) {
            continue;
        }
        if (!t) {
            json_object_del(j, k);
        } else if (json_is_object(t)) {
            mask_apply(v, t);
        }
    }
}

/* The message type of one entry of <field> in the dump of type <dump_type> (Envoy's
 * ?resource= output wraps each entry as an Any). */
static const char *entry_type(const char *field)
{
    static const struct {
        const char *field, *type;
    } types[] = {
        {"static_clusters", "ClustersConfigDump.StaticCluster"},
        {"dynamic_active_clusters", "ClustersConfigDump.DynamicCluster"},
        {"dynamic_warming_clusters", "ClustersConfigDump.DynamicCluster"},
        {"static_listeners", "ListenersConfigDump.StaticListener"},
        {"dynamic_listeners", "ListenersConfigDump.DynamicListener"},
        {"static_route_configs", "RoutesConfigDump.StaticRouteConfig"},
        {"dynamic_route_configs", "RoutesConfigDump.DynamicRouteConfig"},
        {"static_secrets", "SecretsConfigDump.StaticSecret"},
        {"dynamic_active_secrets", "SecretsConfigDump.DynamicSecret"},
        {"dynamic_warming_secrets", "SecretsConfigDump.DynamicSecret"},
        {"static_endpoint_configs", "EndpointsConfigDump.StaticEndpointConfig"},
        {"dynamic_endpoint_configs", "EndpointsConfigDump.DynamicEndpointConfig"},
    };
    for (size_t i = 0; i < MSM_ARRAY_SIZE(types); i++) {
        if (!strcmp(types[i].field, field)) {
            return types[i].type;
        }
    }
    return NULL;
}

void msm_admin_config_dump(struct msm_server *srv, const struct msm_admin_req *rq,
                           struct msm_admin_resp *rs)
{
    bool include_eds = msm_admin_query_param(rq->query, "include_eds", NULL, 0);
    char resource[128] = "";
    msm_admin_query_param(rq->query, "resource", resource, sizeof(resource));
    json_t *configs = json_array();
    json_t *boot = json_object();
    json_object_set_new(boot, "@type",
                        json_string(TYPE_PREFIX "envoy.admin.v3.BootstrapConfigDump"));
    struct msm_err err;
    json_t *bj = msm_pbjson_encode(&srv->bootstrap->base, NULL, &err);
    json_object_set_new(boot, "bootstrap", bj ? bj : json_object());
    json_object_set_new(boot, "last_updated", timestamp(srv->start_wall));
    json_array_append_new(configs, boot);
    json_array_append_new(configs, clusters_dump(srv));
    if (include_eds) {
        json_array_append_new(configs, endpoints_dump(srv));
    }
    json_array_append_new(configs, listeners_dump(srv));
    json_array_append_new(configs, store_dump(&srv->routes,
                                              &envoy__config__route__v3__route_configuration__descriptor,
                                              "envoy.admin.v3.RoutesConfigDump",
                                              "dynamic_route_configs", "route_config", false));
    json_array_append_new(configs, secrets_dump());
    redact(configs);
    char *mask = msm_xmalloc(MSM_ADMIN_MAX_PARAM);
    json_t *tree = NULL;
    if (msm_admin_query_get(rq->query, "mask", mask, MSM_ADMIN_MAX_PARAM) == 1 && mask[0]) {
        tree = mask_tree(mask);
    }
    free(mask);
    json_t *root = json_object();
    if (resource[0]) {
        /* ?resource=<repeated field>: the matching entries of every dump, flattened. */
        json_t *flat = json_array();
        size_t i;
        json_t *d;
        const char *et = entry_type(resource);
        json_array_foreach(configs, i, d) {
            json_t *list = json_object_get(d, resource);
            size_t k;
            json_t *e;
            json_array_foreach(list, k, e) {
                json_t *o = json_object();
                if (et) {
                    char t[160];
                    snprintf(t, sizeof(t), TYPE_PREFIX "envoy.admin.v3.%s", et);
                    json_object_set_new(o, "@type", json_string(t));
                }
                json_object_update(o, e);
                json_array_append_new(flat, o);
            }
        }
        if (!json_array_size(flat) && !strcmp(resource, "bootstrap")) {
            rs->status = 400;
        }
        if (tree) {
            mask_apply(flat, tree);
        }
        json_object_set_new(root, "configs", flat);
    } else {
        if (tree) {
            mask_apply(configs, tree);
        }
        json_object_set_new(root, "configs", configs);
        configs = NULL;
    }
    json_decref(tree);
    json_decref(configs);
    char *text = msm_pbjson_dumps(root, true);
    json_decref(root);
    msm_buf_append(&rs->body, text, strlen(text));
    msm_buf_append(&rs->body, "\n", 1);
    free(text);
    rs->content_type = "application/json";
    if (rs->status != 400) {
        rs->status = 200;
    }
}
