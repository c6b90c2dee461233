/* Upstream transport sockets: a cluster's transport_socket and transport_socket_matches
 * (Istio's auto-mTLS: {tlsMode: istio} endpoints get the TLS socket, the others raw_buffer),
 * and the endpoint labels they match on. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"

#include "common/alloc.h"
#include "config/pbjson.h"
#include "net/conn.h"
#include "tls/tls.h"
#include "upstream/cluster.h"
#include "xds/strmap.h"

#define TSM_KEY "envoy.transport_socket_match"

/* ---- labels ------------------------------------------------------------------------------- */

/* google.protobuf.Value in a canonical text form, so that equal values compare equal. */
static char *value_text(const Google__Protobuf__Value *v)
{
    if (!v) {
        return msm_xstrdup("z");
    }
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        return msm_xasprintf("s:%s", v->string_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        return msm_xasprintf("n:%.17g", v->number_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return msm_xstrdup(v->bool_value ? "b:1" : "b:0");
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        struct msm_err err;
        char *j = msm_pbjson_encode_text(&v->base, NULL, false, &err);
        char *s = msm_xasprintf("j:%s", j ? j : "?");
        free(j);
        return s;
    }
    default:
        return msm_xstrdup("z");
    }
}

static int cmp_idx_keys(const void *a, const void *b, void *arg)
{
    const Google__Protobuf__Struct *st = arg;
    return strcmp(st->fields[*(const size_t *)a]->key, st->fields[*(const size_t *)b]->key);
}

/* One block holding the struct, the key/value arrays and their strings (a host's labels are
 * one allocation: 30k endpoints would otherwise make 180k). <keys>/<vals> are copied. */
static struct msm_tsm_meta *meta_pack(int n, char *const *keys, char *const *vals,
                                      const char *workload, uint64_t hash)
{
    size_t len = sizeof(struct msm_tsm_meta) + 2 * ((size_t)n + 1) * sizeof(char *);
    for (int i = 0; i < n; i++) {
        len += strlen(keys[i]) + strlen(vals[i]) + 2;
    }
    len += workload ? strlen(workload) + 1 : 0;
    struct msm_tsm_meta *m = msm_xcalloc(1, len);
    atomic_init(&m->refs, 1);
    m->n = n;
    m->hash = hash;
    m->keys = (char **)(m + 1);
    m->vals = m->keys + n + 1;
    char *p = (char *)(m->vals + n + 1);
    for (int i = 0; i < n; i++) {
        size_t kl = strlen(keys[i]) + 1, vl = strlen(vals[i]) + 1;
        m->keys[i] = memcpy(p, keys[i], kl);
        p += kl;
        m->vals[i] = memcpy(p, vals[i], vl);
        p += vl;
    }
    if (workload) {
        m->istio_workload = strcpy(p, workload);
    }
    return m;
}

/* The labels of <st> (may be NULL) plus the istio workload <wl> (may be NULL); NULL when both
 * are empty. */
static struct msm_tsm_meta *meta_from_struct(const Google__Protobuf__Struct *st, const char *wl)
{
    size_t n = st ? st->n_fields : 0;
    if (!n && !wl) {
        return NULL;
    }
    size_t *idx = msm_xcalloc(n + 1, sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        idx[i] = i;
    }
    if (n) {
        qsort_r(idx, n, sizeof(size_t), cmp_idx_keys, (void *)st);
    }
    char **keys = msm_xcalloc(n + 1, sizeof(char *));
    char **vals = msm_xcalloc(n + 1, sizeof(char *));
    uint64_t hash = 0;
    if (n) {
        XXH3_state_t *h = XXH3_createState();
        XXH3_64bits_reset(h);
        for (size_t i = 0; i < n; i++) {
            const Google__Protobuf__Struct__FieldsEntry *f = st->fields[idx[i]];
            keys[i] = f->key;
            vals[i] = value_text(f->value);
            XXH3_64bits_update(h, keys[i], strlen(keys[i]) + 1);
            XXH3_64bits_update(h, vals[i], strlen(vals[i]) + 1);
        }
        hash = XXH3_64bits_digest(h);
        if (!hash) {
            hash = 1; /* 0 means "no labels" */
        }
        XXH3_freeState(h);
    }
    if (wl) {
        hash = XXH3_64bits_withSeed(wl, strlen(wl), hash);
        if (!hash) {
            hash = 1;
        }
    }
    struct msm_tsm_meta *m = meta_pack((int)n, keys, vals, wl, hash);
    for (size_t i = 0; i < n; i++) {
        free(vals[i]);
    }
    free(keys);
    free(vals);
    free(idx);
    return m;
}

static const Google__Protobuf__Struct *tsm_struct(const Envoy__Config__Core__V3__Metadata *md)
{
    for (size_t i = 0; md && i < md->n_filter_metadata; i++) {
        if (!strcmp(md->filter_metadata[i]->key, TSM_KEY)) {
            return md->filter_metadata[i]->value;
        }
    }
    return NULL;
}

/* filter_metadata istio.workload of <md> when it is a string. */
static const char *istio_workload(const Envoy__Config__Core__V3__Metadata *md)
{
    for (size_t i = 0; md && i < md->n_filter_metadata; i++) {
        const Google__Protobuf__Struct *st = md->filter_metadata[i]->value;
        if (strcmp(md->filter_metadata[i]->key, "istio") != 0 || !st) {
            continue;
        }
        for (size_t k = 0; k < st->n_fields; k++) {
            const Google__Protobuf__Value *v = st->fields[k]->value;
            if (!strcmp(st->fields[k]->key, "workload") && v &&
                v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE) {
                return v->string_value;
            }
        }
    }
    return NULL;
}

/* The match labels of transport_socket_matches are the same in every cluster of an Istio
 * sidecar ({tlsMode: istio}): the last few built are kept (a reference each) and reused. */
#define INTERN_N 4
static pthread_mutex_t intern_mu = PTHREAD_MUTEX_INITIALIZER;
static struct msm_tsm_meta *interned[INTERN_N];
static unsigned intern_next;

static struct msm_tsm_meta *meta_intern(struct msm_tsm_meta *m)
{
    if (!m) {
        return NULL;
    }
    struct msm_tsm_meta *drop = NULL;
    pthread_mutex_lock(&intern_mu);
    for (int i = 0; i < INTERN_N; i++) {
        if (interned[i] && msm_tsm_meta_eq(interned[i], m)) {
            struct msm_tsm_meta *r = msm_tsm_meta_copy(interned[i]);
            pthread_mutex_unlock(&intern_mu);
            msm_tsm_meta_free(m);
            return r;
        }
    }
    drop = interned[intern_next];
    interned[intern_next] = msm_tsm_meta_copy(m);
    intern_next = (intern_next + 1) % INTERN_N;
    pthread_mutex_unlock(&intern_mu);
    msm_tsm_meta_free(drop);
    return m;
}

struct msm_tsm_meta *msm_tsm_meta_from_proto(const void *md, const void *locality_md)
{
    const Google__Protobuf__Struct *st = tsm_struct(md);
    return meta_from_struct(st ? st : tsm_struct(locality_md), istio_workload(md));
}

bool msm_tsm_meta_eq(const struct msm_tsm_meta *a, const struct msm_tsm_meta *b)
{
    if (a == b) {
        return true;
    }
    if (!a || !b || a->hash != b->hash || a->n != b->n ||
        !a->istio_workload != !b->istio_workload ||
        (a->istio_workload && strcmp(a->istio_workload, b->istio_workload) != 0)) {
        return false;
    }
    for (int i = 0; i < a->n; i++) {
        if (strcmp(a->keys[i], b->keys[i]) != 0 || strcmp(a->vals[i], b->vals[i]) != 0) {
            return false;
        }
    }
    return true;
}

struct msm_tsm_meta *msm_tsm_meta_copy(const struct msm_tsm_meta *m)
{
    if (!m) {
        return NULL;
    }
    struct msm_tsm_meta *c = (struct msm_tsm_meta *)m;
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void msm_tsm_meta_free(struct msm_tsm_meta *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) {
        free(m);
    }
}

void msm_host_set_tsm(struct msm_host *h, struct msm_tsm_meta *m)
{
    msm_tsm_meta_free(h->tsm);
    h->tsm = m;
}

uint64_t msm_host_tsm_hash(const struct msm_host *h)
{
    return h->tsm ? h->tsm->hash : 0;
}

/* Envoy's metadataLabelMatch: every label of <want> is in <have> with an equal value. */
static bool label_match(const struct msm_tsm_meta *want, const struct msm_tsm_meta *have)
{
    if (!want) {
        return true;
    }
    for (int i = 0; i < want->n; i++) {
        bool ok = false;
        for (int j = 0; have && j < have->n && !ok; j++) {
            ok = !strcmp(want->keys[i], have->keys[j]) && !strcmp(want->vals[i], have->vals[j]);
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* ---- the cluster's transports ------------------------------------------------------------- */

struct msm_tls_factory *msm_cluster_transport(const struct msm_cluster_cfg *c,
                                              const struct msm_host *h)
{
    for (int i = 0; i < c->n_tsm; i++) {
        if (label_match(c->tsm[i].match, h ? h->tsm : NULL)) {
            return c->tsm[i].tls;
        }
    }
    return c->tls;
}

void msm_cluster_attach_transport(const struct msm_cluster_cfg *c, const struct msm_host *h,
                                  struct msm_conn *conn)
{
    struct msm_tls_factory *f = msm_cluster_transport(c, h);
    if (f) {
        msm_conn_set_transport(conn, msm_tls_transport_new(f), 0);
    }
}

bool msm_cluster_cfg_warm(const struct msm_cluster_cfg *c)
{
    if (c->tls && !msm_tls_factory_warm(c->tls)) {
        return false;
    }
    for (int i = 0; i < c->n_tsm; i++) {
        if (c->tsm[i].tls && !msm_tls_factory_warm(c->tsm[i].tls)) {
            return false;
        }
    }
    return true;
}

int msm_cluster_transport_from_proto(const void *proto, struct msm_cluster_cfg *c,
                                     struct msm_err *err)
{
    const Envoy__Config__Cluster__V3__Cluster *p = proto;
    char scope[512], owner[512];
    snprintf(scope, sizeof(scope), "cluster.%s.", c->stat_name);
    snprintf(owner, sizeof(owner), "cluster '%s'", c->name);
    if (msm_tls_factory_from_proto(p->transport_socket, false, scope, owner, &c->tls, err) < 0) {
        return MSM_EINVAL;
    }
    if (!p->n_transport_socket_matches) {
        return 0;
    }
    c->tsm = msm_xcalloc(p->n_transport_socket_matches, sizeof(*c->tsm));
    for (size_t i = 0; i < p->n_transport_socket_matches; i++) {
        const Envoy__Config__Cluster__V3__Cluster__TransportSocketMatch *m =
            p->transport_socket_matches[i];
        struct msm_tsm *t = &c->tsm[c->n_tsm++];
        t->name = msm_name_intern(m->name ? m->name : ""); /* "tlsMode-istio": one copy */
        if (!t->name[0]) {
            return msm_err_set(err, "transport_socket_matches[%zu]: name is required", i);
        }
        t->match = meta_intern(meta_from_struct(m->match, NULL));
        snprintf(owner, sizeof(owner), "cluster '%s' transport socket match '%s'", c->name,
                 t->name);
        if (msm_tls_factory_from_proto(m->transport_socket, false, scope, owner, &t->tls, err) <
            0) {
            msm_err_prefix(err, "transport_socket_matches[%zu] '%s'", i, t->name);
            return MSM_EINVAL;
        }
    }
    return 0;
}

void msm_cluster_transport_deinit(struct msm_cluster_cfg *c)
{
    msm_tls_factory_unref(c->tls);
    c->tls = NULL;
    for (int i = 0; i < c->n_tsm; i++) {
        msm_name_unref(c->tsm[i].name);
        msm_tsm_meta_free(c->tsm[i].match);
        msm_tls_factory_unref(c->tsm[i].tls);
    }
    free(c->tsm);
    c->tsm = NULL;
    c->n_tsm = 0;
    for (int i = 0; c->static_meta && i < c->n_static; i++) {
        msm_tsm_meta_free(c->static_meta[i]);
    }
    free(c->static_meta);
    c->static_meta = NULL;
}
