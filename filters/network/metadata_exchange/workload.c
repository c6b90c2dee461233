/* Workload metadata conversions of Istio's exchange (see workload.h). */
#include "filters/network/metadata_exchange/workload.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

#define OWNER_PREFIX "kubernetes://apis/apps/v1/namespaces/"

static const char *const type_names[] = {
    [MSM_MX_WORKLOAD_POD] = "pod",
    [MSM_MX_WORKLOAD_DEPLOYMENT] = "deployment",
    [MSM_MX_WORKLOAD_JOB] = "job",
    [MSM_MX_WORKLOAD_CRONJOB] = "cronjob",
};

const char *msm_mx_workload_type_name(enum msm_mx_workload_type t)
{
    return t > MSM_MX_WORKLOAD_UNKNOWN && t <= MSM_MX_WORKLOAD_CRONJOB ? type_names[t] : NULL;
}

static enum msm_mx_workload_type type_from_suffix(const char *s, size_t n)
{
    for (int t = MSM_MX_WORKLOAD_POD; t <= MSM_MX_WORKLOAD_CRONJOB; t++) {
        if (strlen(type_names[t]) == n && !memcmp(type_names[t], s, n)) {
            return (enum msm_mx_workload_type)t;
        }
    }
    return MSM_MX_WORKLOAD_UNKNOWN;
}

enum msm_mx_workload_type msm_mx_workload_parse_owner(const char *owner, const char *workload)
{
    size_t on = strlen(owner), wn = strlen(workload);
    /* As Envoy: the removed tail is not compared with "s/<workload>", only its length counts. */
    if (on <= wn + 2) {
        return MSM_MX_WORKLOAD_UNKNOWN;
    }
    size_t end = on - wn - 2;
    const char *slash = NULL;
    for (size_t i = end; i > 0; i--) {
        if (owner[i - 1] == '/') {
            slash = owner + i - 1;
            break;
        }
    }
    if (!slash) {
        return MSM_MX_WORKLOAD_UNKNOWN;
    }
    return type_from_suffix(slash + 1, (size_t)(owner + end - (slash + 1)));
}

/* A key that holds a NUL byte matches none of ours (protobuf keys are length-delimited). */
static bool key_is(const char *key, size_t klen, const char *name)
{
    return strlen(name) == klen && !memcmp(key, name, klen);
}

/* Value::string_value(): the string, or "" for any other kind. */
static const char *sv(const json_t *v)
{
    return json_is_string(v) ? json_string_value(v) : "";
}

static bool in_list(const char *k, char *const *list, int n)
{
    for (int i = 0; i < n; i++) {
        if (!strcmp(list[i], k)) {
            return true;
        }
    }
    return false;
}

void msm_mx_workload_from_struct(const json_t *md, char *const *additional_labels,
                                 int n_additional_labels, const char *region, const char *zone,
                                 struct msm_mx_workload *out)
{
    const char *instance = "", *ns = "", *owner = "", *workload = "", *cluster = "";
    const char *identity = "", *reg = "", *zn = "", *cname = "", *crev = "", *app = "";
    const char *ver = "";
    const char *key, *lk;
    size_t klen, lklen;
    json_t *v, *lv;
    memset(out, 0, sizeof(*out));
    json_object_keylen_foreach((json_t *)md, key, klen, v) {
        if (key_is(key, klen, "NAME")) {
            instance = sv(v);
        } else if (key_is(key, klen, "NAMESPACE")) {
            ns = sv(v);
        } else if (key_is(key, klen, "OWNER")) {
            owner = sv(v);
        } else if (key_is(key, klen, "WORKLOAD_NAME")) {
            workload = sv(v);
        } else if (key_is(key, klen, "CLUSTER_ID")) {
            cluster = sv(v);
        } else if (key_is(key, klen, "IDENTITY")) {
            identity = sv(v);
        } else if (key_is(key, klen, "REGION")) {
            reg = sv(v);
        } else if (key_is(key, klen, "AVAILABILITY_ZONE")) {
            zn = sv(v);
        } else if (key_is(key, klen, "LABELS")) {
            json_object_keylen_foreach(json_is_object(v) ? v : NULL, lk, lklen, lv) {
                /* The qualified app/version labels win over the short ones, in any order. */
                if (key_is(lk, lklen, "service.istio.io/canonical-name")) {
                    cname = sv(lv);
                } else if (key_is(lk, lklen, "service.istio.io/canonical-revision")) {
                    crev = sv(lv);
                } else if (key_is(lk, lklen, "app.kubernetes.io/name")) {
                    app = sv(lv);
                } else if (key_is(lk, lklen, "app") && !app[0]) {
                    app = sv(lv);
                } else if (key_is(lk, lklen, "app.kubernetes.io/version")) {
                    ver = sv(lv);
                } else if (key_is(lk, lklen, "version") && !ver[0]) {
                    ver = sv(lv);
                } else if (strlen(lk) == lklen &&
                           in_list(lk, additional_labels, n_additional_labels)) {
                    out->label_keys = msm_xrealloc(out->label_keys,
                                                   (size_t)(out->n_labels + 1) * sizeof(char *));
                    out->label_values = msm_xrealloc(out->label_values,
                                                     (size_t)(out->n_labels + 1) * sizeof(char *));
                    out->label_keys[out->n_labels] = msm_xstrdup(lk);
                    out->label_values[out->n_labels++] = msm_xstrdup(sv(lv));
                }
            }
        }
    }
    if (!reg[0] && region) {
        reg = region;
    }
    if (!zn[0] && zone) {
        zn = zone;
    }
    out->instance_name = msm_xstrdup(instance);
    out->cluster_name = msm_xstrdup(cluster);
    out->namespace_name = msm_xstrdup(ns);
    out->workload_name = msm_xstrdup(workload);
    out->canonical_name = msm_xstrdup(cname);
    out->canonical_revision = msm_xstrdup(crev);
    out->app_name = msm_xstrdup(app);
    out->app_version = msm_xstrdup(ver);
    out->identity = msm_xstrdup(identity);
    out->region = msm_xstrdup(reg);
    out->zone = msm_xstrdup(zn);
    out->type = msm_mx_workload_parse_owner(owner, workload);
}

struct msm_istio_peer msm_mx_workload_labels(const struct msm_mx_workload *w)
{
    return (struct msm_istio_peer){
        .workload_name = w->workload_name,
        .namespace_name = w->namespace_name,
        .canonical_name = w->canonical_name,
        .canonical_revision = w->canonical_revision,
        .app_name = w->app_name,
        .app_version = w->app_version,
        .cluster_id = w->cluster_name,
        .identity = w->identity,
    };
}

void msm_mx_workload_deinit(struct msm_mx_workload *w)
{
    free(w->instance_name);
    free(w->cluster_name);
    free(w->namespace_name);
    free(w->workload_name);
    free(w->canonical_name);
    free(w->canonical_revision);
    free(w->app_name);
    free(w->app_version);
    free(w->identity);
    free(w->region);
    free(w->zone);
    for (int i = 0; i < w->n_labels; i++) {
        free(w->label_keys[i]);
        free(w->label_values[i]);
    }
    free(w->label_keys);
    free(w->label_values);
    memset(w, 0, sizeof(*w));
}

static void set_if(json_t *o, const char *k, const char *v)
{
    if (v[0]) {
        json_object_set_new(o, k, json_string(v));
    }
}

json_t *msm_mx_workload_to_struct(const struct msm_mx_workload *w)
{
    json_t *o = json_object();
    set_if(o, "NAME", w->instance_name);
    set_if(o, "NAMESPACE", w->namespace_name);
    set_if(o, "WORKLOAD_NAME", w->workload_name);
    set_if(o, "CLUSTER_ID", w->cluster_name);
    set_if(o, "IDENTITY", w->identity);
    json_t *labels = json_object();
    set_if(labels, "service.istio.io/canonical-name", w->canonical_name);
    set_if(labels, "service.istio.io/canonical-revision", w->canonical_revision);
    set_if(labels, "app", w->app_name);
    set_if(labels, "version", w->app_version);
    for (int i = 0; i < w->n_labels; i++) {
        json_object_set_new(labels, w->label_keys[i], json_string(w->label_values[i]));
    }
    json_object_set_new(o, "LABELS", labels);
    const char *type = msm_mx_workload_type_name(w->type);
    if (type) {
        char *owner = msm_xasprintf(OWNER_PREFIX "%s/%ss/%s", w->namespace_name, type,
                                    w->workload_name);
        json_object_set_new(o, "OWNER", json_string(owner));
        free(owner);
    }
    set_if(o, "REGION", w->region);
    set_if(o, "AVAILABILITY_ZONE", w->zone);
    return o;
}

json_t *msm_mx_workload_state(const struct msm_mx_workload *w)
{
    json_t *o = json_object();
    const char *type = msm_mx_workload_type_name(w->type);
    if (type) {
        json_object_set_new(o, "type", json_string(type));
    }
    set_if(o, "workload", w->workload_name);
    /* Envoy tests cluster_name here, not instance_name (kept for identical output). */
    if (w->cluster_name[0]) {
        json_object_set_new(o, "name", json_string(w->instance_name));
    }
    set_if(o, "cluster", w->cluster_name);
    set_if(o, "namespace", w->namespace_name);
    set_if(o, "service", w->canonical_name);
    set_if(o, "revision", w->canonical_revision);
    set_if(o, "app", w->app_name);
    set_if(o, "version", w->app_version);
    set_if(o, "identity", w->identity);
    set_if(o, "region", w->region);
    set_if(o, "availability_zone", w->zone);
    if (w->n_labels) {
        json_t *labels = json_object();
        for (int i = 0; i < w->n_labels; i++) {
            json_object_set_new(labels, w->label_keys[i], json_string(w->label_values[i]));
        }
        json_object_set_new(o, "labels", labels);
    }
    return o;
}
