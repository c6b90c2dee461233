/* Istio standard metrics (see istio_stats.h). */
#include "stats/istio_stats.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "stats/config.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbutil.h"
#include "stats/stats.h"
#include "stats/tags.h"

/* Standard tags, in the order istio_stats.cc knows them (all_tags_). */
#define ISTIO_TAGS(X)                                                                             \
    X(REPORTER, "reporter") X(SOURCE_WORKLOAD, "source_workload")                                 \
    X(SOURCE_WORKLOAD_NAMESPACE, "source_workload_namespace")                                     \
    X(SOURCE_PRINCIPAL, "source_principal") X(SOURCE_APP, "source_app")                          \
    X(SOURCE_VERSION, "source_version") X(SOURCE_CANONICAL_SERVICE, "source_canonical_service")   \
    X(SOURCE_CANONICAL_REVISION, "source_canonical_revision")                                     \
    X(SOURCE_CLUSTER, "source_cluster") X(DESTINATION_WORKLOAD, "destination_workload")           \
    X(DESTINATION_WORKLOAD_NAMESPACE, "destination_workload_namespace")                           \
    X(DESTINATION_PRINCIPAL, "destination_principal") X(DESTINATION_APP, "destination_app")       \
    X(DESTINATION_VERSION, "destination_version")                                                 \
    X(DESTINATION_SERVICE, "destination_service")                                                 \
    X(DESTINATION_SERVICE_NAME, "destination_service_name")                                       \
    X(DESTINATION_SERVICE_NAMESPACE, "destination_service_namespace")                             \
    X(DESTINATION_CANONICAL_SERVICE, "destination_canonical_service")                             \
    X(DESTINATION_CANONICAL_REVISION, "destination_canonical_revision")                           \
    X(DESTINATION_CLUSTER, "destination_cluster") X(REQUEST_PROTOCOL, "request_protocol")         \
    X(RESPONSE_FLAGS, "response_flags")                                                           \
    X(CONNECTION_SECURITY_POLICY, "connection_security_policy")                                   \
    X(RESPONSE_CODE, "response_code") X(GRPC_RESPONSE_STATUS, "grpc_response_status")

enum tag {
#define X(e, s) T_##e,
    ISTIO_TAGS(X)
#undef X
        N_TAGS
};

static const char *const tag_names[N_TAGS] = {
#define X(e, s) s,
    ISTIO_TAGS(X)
#undef X
};

#define ISTIO_METRICS(X)                                                                          \
    X(REQUESTS_TOTAL, "requests_total") X(REQUEST_DURATION, "request_duration_milliseconds")       \
    X(REQUEST_BYTES, "request_bytes") X(RESPONSE_BYTES, "response_bytes")                         \
    X(REQUEST_MESSAGES, "request_messages_total") X(RESPONSE_MESSAGES, "response_messages_total") \
    X(TCP_OPENED, "tcp_connections_opened_total") X(TCP_CLOSED, "tcp_connections_closed_total")   \
    X(TCP_SENT, "tcp_sent_bytes_total") X(TCP_RECEIVED, "tcp_received_bytes_total")

enum metric {
#define X(e, s) M_##e,
    ISTIO_METRICS(X)
#undef X
        N_METRICS
};

static const char *const metric_names[N_METRICS] = {
#define X(e, s) s,
    ISTIO_METRICS(X)
#undef X
};

/* ---- node ----------------------------------------------------------------------------------- */

static struct {
    char *workload_name, *namespace_name, *canonical_name, *canonical_revision, *cluster_id,
        *app_name, *app_version, *istio_version;
} node;

static struct msm_stat *istio_build;

static const Google__Protobuf__Value *field(const Google__Protobuf__Struct *st, const char *k)
{
    for (size_t i = 0; st && i < st->n_fields; i++) {
        if (!strcmp(st->fields[i]->key, k)) {
            return st->fields[i]->value;
        }
    }
    return NULL;
}

static char *string_field(const Google__Protobuf__Struct *st, const char *k)
{
    const Google__Protobuf__Value *v = field(st, k);
    return msm_xstrdup(v && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE
                           ? v->string_value
                           : "");
}

static char *label(const Google__Protobuf__Struct *md, const char *k)
{
    const Google__Protobuf__Value *l = field(md, "LABELS");
    return string_field(l && l->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE
                            ? l->struct_value
                            : NULL,
                        k);
}

static void node_clear(void)
{
    free(node.workload_name);
    free(node.namespace_name);
    free(node.canonical_name);
    free(node.canonical_revision);
    free(node.cluster_id);
    free(node.app_name);
    free(node.app_version);
    free(node.istio_version);
    memset(&node, 0, sizeof(node));
}

void msm_istio_set_node(const void *proto)
{
    const Envoy__Config__Core__V3__Node *n = proto;
    node_clear();
    const Google__Protobuf__Struct *md = n ? n->metadata : NULL;
    node.workload_name = string_field(md, "WORKLOAD_NAME");
    node.namespace_name = string_field(md, "NAMESPACE");
    node.cluster_id = string_field(md, "CLUSTER_ID");
    node.istio_version = string_field(md, "ISTIO_VERSION");
    node.canonical_name = label(md, "service.istio.io/canonical-name");
    node.canonical_revision = label(md, "service.istio.io/canonical-revision");
    node.app_name = label(md, "app");
    node.app_version = label(md, "version");
}

static const char *nv(const char *s)
{
    return s ? s : "";
}

void msm_istio_record_version(struct msm_stats_store *st)
{
    if (istio_build && istio_build->store == st) {
        return;
    }
    msm_stat_unref(istio_build);
    const char *v = node.istio_version && node.istio_version[0] ? node.istio_version : "unknown";
    struct msm_tag tags[2] = {{(char *)"component", (char *)"proxy"}, {(char *)"tag", (char *)v}};
    istio_build = msm_stats_get_tagged(st, MSM_STAT_GAUGE, MSM_STATS_ISTIO_NS ".istio_build", tags,
                                       2);
    msm_stat_set(istio_build, 1);
}

void msm_istio_shutdown(void)
{
    msm_stat_unref(istio_build);
    istio_build = NULL;
    node_clear();
}

bool msm_istio_peer_parse(const char *s, char *buf, size_t n, struct msm_istio_peer *out)
{
    memset(out, 0, sizeof(*out));
    if (!s || strlen(s) + 1 > n) {
        return false;
    }
    strcpy(buf, s);
    char *parts[5];
    int k = 0;
    char *p = buf;
    while (k < 5) {
        parts[k++] = p;
        char *semi = strchr(p, ';');
        if (!semi) {
            break;
        }
        *semi = '\0';
        p = semi + 1;
    }
    if (k < 5) {
        return false;
    }
    out->workload_name = parts[0];
    out->namespace_name = parts[1];
    out->canonical_name = parts[2];
    out->canonical_revision = parts[3];
    out->cluster_id = parts[4];
    out->app_name = "";
    out->app_version = "";
    return true;
}

void msm_istio_cluster_services(const void *proto, char **host, char **name)
{
    const Envoy__Config__Core__V3__Metadata *md = proto;
    *host = *name = NULL;
    for (size_t i = 0; md && i < md->n_filter_metadata; i++) {
        const Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *e = md->filter_metadata[i];
        if (strcmp(e->key, "istio") != 0) {
            continue;
        }
        const Google__Protobuf__Value *s = field(e->value, "services");
        if (!s || s->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE ||
            !s->list_value->n_values) {
            return;
        }
        const Google__Protobuf__Value *first = s->list_value->values[0];
        if (first->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE) {
            return;
        }
        const Google__Protobuf__Value *h = field(first->struct_value, "host");
        const Google__Protobuf__Value *n = field(first->struct_value, "name");
        if (h && h->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE) {
            *host = msm_xstrdup(h->string_value);
        }
        if (n && n->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE) {
            *name = msm_xstrdup(n->string_value);
        }
        return;
    }
}

void msm_istio_cluster_flags(const void *proto, bool *external, bool *disable_mx)
{
    const Envoy__Config__Core__V3__Metadata *md = proto;
    *external = *disable_mx = false;
    for (size_t i = 0; md && i < md->n_filter_metadata; i++) {
        const Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *e = md->filter_metadata[i];
        if (strcmp(e->key, "istio") != 0) {
            continue;
        }
        const Google__Protobuf__Value *x = field(e->value, "external");
        const Google__Protobuf__Value *d = field(e->value, "disable_mx");
        *external = x && x->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE && x->bool_value;
        *disable_mx = d && d->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE &&
                      d->bool_value;
        return;
    }
}

/* ---- config --------------------------------------------------------------------------------- */

#define OVR_NONE (-2)
#define OVR_REMOVE (-1)

struct addition {
    char *name;
    int expr;
};

struct metric_cfg {
    bool drop;
    int ovr[N_TAGS]; /* OVR_NONE, OVR_REMOVE or an expression index */
    struct addition *add;
    int n_add;
    size_t cap_add;
};

/* One label set's stats, created on first use and kept by the config. Its kind says which
 * metrics (series_metrics); the public series types are this struct under another name. */
enum series_kind {
    SK_TCP = 0,
    SK_HTTP = 1,
    SK_GRPC = 2,
};
#define SERIES_STATS 4

struct series {
    struct series *next;
    uint64_t hash;
    char *key;
    struct msm_stat *st[SERIES_STATS]; /* NULL: the config drops that metric */
};

struct msm_istio_tcp {
    struct series s;
};

struct msm_istio_http {
    struct series s;
};

struct msm_istio_grpc {
    struct series s;
};

static const struct {
    int metric[SERIES_STATS];
    enum msm_stat_type type[SERIES_STATS];
    int n;
} series_metrics[] = {
    [SK_TCP] = {{M_TCP_OPENED, M_TCP_CLOSED, M_TCP_SENT, M_TCP_RECEIVED},
                {MSM_STAT_COUNTER, MSM_STAT_COUNTER, MSM_STAT_COUNTER, MSM_STAT_COUNTER}, 4},
    [SK_HTTP] = {{M_REQUESTS_TOTAL, M_REQUEST_DURATION, M_REQUEST_BYTES, M_RESPONSE_BYTES},
                 {MSM_STAT_COUNTER, MSM_STAT_HISTOGRAM, MSM_STAT_HISTOGRAM, MSM_STAT_HISTOGRAM},
                 4},
    [SK_GRPC] = {{M_REQUEST_MESSAGES, M_RESPONSE_MESSAGES},
                 {MSM_STAT_COUNTER, MSM_STAT_COUNTER}, 2},
};

struct msm_istio_config {
    enum msm_istio_reporter reporter;
    bool disable_host_header_fallback;
    uint32_t tcp_reporting_ms;
    struct metric_cfg m[N_METRICS];
    char **exprs; /* an expression's value: the literal, or NULL (evaluates to "unknown") */
    int n_exprs;
    size_t cap_exprs;
    struct msm_stats_store *st;
    pthread_mutex_t mu;
    struct series **buckets;
    size_t n_buckets, n_series;
};

static int find_metric(const char *name)
{
    for (int i = 0; i < N_METRICS; i++) {
        if (!strcmp(metric_names[i], name)) {
            return i;
        }
    }
    return -1;
}

static int find_tag(const char *name)
{
    for (int i = 0; i < N_TAGS; i++) {
        if (!strcmp(tag_names[i], name)) {
            return i;
        }
    }
    return -1;
}

/* A CEL string literal, 'x' or "x", is its value; anything else evaluates to "unknown" here. */
static int expr_add(struct msm_istio_config *c, const char *expr)
{
    size_t n = strlen(expr);
    while (n && (expr[0] == ' ' || expr[0] == '\t')) {
        expr++;
        n--;
    }
    while (n && (expr[n - 1] == ' ' || expr[n - 1] == '\t')) {
        n--;
    }
    char *lit = NULL;
    if (n >= 2 && (expr[0] == '\'' || expr[0] == '"') && expr[n - 1] == expr[0] &&
        !memchr(expr + 1, expr[0], n - 2)) {
        lit = msm_xstrndup(expr + 1, n - 2);
    } else {
        msm_log(MSM_LOG_WARN, MSM_LC_FILTER, "istio.stats: expression '%.*s' is not supported "
                "(only string literals): its value will be \"unknown\"", (int)n, expr);
    }
    c->exprs = msm_xgrow(c->exprs, sizeof(char *), &c->cap_exprs, (size_t)c->n_exprs + 1);
    c->exprs[c->n_exprs] = lit;
    return c->n_exprs++;
}

static void add_addition(struct metric_cfg *m, const char *tag, int expr)
{
    m->add = msm_xgrow(m->add, sizeof(*m->add), &m->cap_add, (size_t)m->n_add + 1);
    m->add[m->n_add].name = msm_xstrdup(tag);
    m->add[m->n_add].expr = expr;
    m->n_add++;
}

static int cmp_dim(const void *a, const void *b)
{
    typedef const Stats__MetricConfig__DimensionsEntry dim_entry;
    dim_entry *x = *(dim_entry *const *)a;
    dim_entry *y = *(dim_entry *const *)b;
    return strcmp(x->key, y->key);
}

/* One PluginConfig.metrics entry, as istio_stats.cc's Config constructor applies it. */
static void apply_metric_config(struct msm_istio_config *c, const Stats__MetricConfig *mc)
{
    int only = mc->name && mc->name[0] ? find_metric(mc->name) : -1;
    bool named = mc->name && mc->name[0];
    if (mc->drop) {
        if (only >= 0) {
            c->m[only].drop = true;
        }
        return;
    }
    for (size_t i = 0; i < mc->n_tags_to_remove; i++) {
        int t = find_tag(mc->tags_to_remove[i]);
        if (t < 0) {
            msm_log(MSM_LOG_INFO, MSM_LC_FILTER, "istio.stats: tag is not standard: %s",
                    mc->tags_to_remove[i]);
            continue;
        }
        for (int m = 0; m < N_METRICS; m++) {
            if (!named || m == only) {
                c->m[m].ovr[t] = OVR_REMOVE;
            }
        }
    }
    Stats__MetricConfig__DimensionsEntry **dims =
        msm_xcalloc(mc->n_dimensions + 1, sizeof(*dims));
    if (mc->n_dimensions) {
        memcpy(dims, mc->dimensions, mc->n_dimensions * sizeof(*dims));
        qsort(dims, mc->n_dimensions, sizeof(*dims), cmp_dim);
    }
    for (size_t i = 0; i < mc->n_dimensions; i++) {
        int e = expr_add(c, dims[i]->value ? dims[i]->value : "");
        int t = find_tag(dims[i]->key);
        for (int m = 0; m < N_METRICS; m++) {
            if (named && m != only) {
                continue;
            }
            if (t < 0) {
                add_addition(&c->m[m], dims[i]->key, e);
            } else {
                c->m[m].ovr[t] = e;
            }
        }
    }
    free(dims);
}

struct msm_istio_config *msm_istio_config_new(const void *proto, int traffic_direction,
                                              struct msm_stats_store *st, struct msm_err *err)
{
    const Stats__PluginConfig *p = proto;
    (void)err;
    struct msm_istio_config *c = MSM_NEW(struct msm_istio_config);
    c->st = st;
    pthread_mutex_init(&c->mu, NULL);
    c->n_buckets = 64;
    c->buckets = msm_xcalloc(c->n_buckets, sizeof(*c->buckets));
    for (int m = 0; m < N_METRICS; m++) {
        for (int t = 0; t < N_TAGS; t++) {
            c->m[m].ovr[t] = OVR_NONE;
        }
    }
    c->reporter = MSM_ISTIO_CLIENT;
    if (p->reporter == STATS__REPORTER__SERVER_GATEWAY) {
        c->reporter = MSM_ISTIO_GATEWAY;
    } else if (traffic_direction == ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND) {
        c->reporter = MSM_ISTIO_SERVER;
    }
    c->disable_host_header_fallback = p->disable_host_header_fallback;
    c->tcp_reporting_ms = (uint32_t)msm_pb_duration_ms(p->tcp_reporting_duration, 5000);
    for (size_t i = 0; i < p->n_definitions; i++) {
        msm_log(MSM_LOG_WARN, MSM_LC_FILTER, "istio.stats: custom metric definition '%s' is not "
                "supported; ignored", p->definitions[i]->name);
    }
    for (size_t i = 0; i < p->n_metrics; i++) {
        apply_metric_config(c, p->metrics[i]);
    }
    msm_istio_record_version(st);
    return c;
}

int msm_istio_filter_config_new(const void *proto, int traffic_direction,
                                struct msm_stats_store *st, void **out, struct msm_err *err)
{
    struct msm_istio_config *c = msm_istio_config_new(proto, traffic_direction, st, err);
    if (!c) {
        return MSM_EINVAL;
    }
    *out = c;
    return 0;
}

void msm_istio_filter_config_free(void *config)
{
    msm_istio_config_free(config);
}

void msm_istio_config_free(struct msm_istio_config *c)
{
    if (!c) {
        return;
    }
    for (size_t b = 0; b < c->n_buckets; b++) {
        while (c->buckets[b]) {
            struct series *s = c->buckets[b];
            c->buckets[b] = s->next;
            for (int i = 0; i < SERIES_STATS; i++) {
                msm_stat_unref(s->st[i]);
            }
            free(s->key);
            free(s);
        }
    }
    free(c->buckets);
    for (int m = 0; m < N_METRICS; m++) {
        for (int k = 0; k < c->m[m].n_add; k++) {
            free(c->m[m].add[k].name);
        }
        free(c->m[m].add);
    }
    for (int i = 0; i < c->n_exprs; i++) {
        free(c->exprs[i]);
    }
    free(c->exprs);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

enum msm_istio_reporter msm_istio_reporter(const struct msm_istio_config *c)
{
    return c->reporter;
}

uint32_t msm_istio_tcp_reporting_ms(const struct msm_istio_config *c)
{
    return c->tcp_reporting_ms;
}

/* ---- labels (istio_stats.cc populatePeerInfo) ------------------------------------------------ */

struct labels {
    int tag[N_TAGS + 1];
    const char *val[N_TAGS + 1];
    int n;
    int n_peer;       /* reporter and the peer labels: the first n_peer entries */
    char ns_buf[256]; /* the namespace taken from a SAN */
};

static void push(struct labels *l, enum tag t, const char *v)
{
    l->tag[l->n] = t;
    l->val[l->n] = v;
    l->n++;
}

static const char *or_unknown(const char *s)
{
    return s && s[0] ? s : "unknown";
}

static const char *or_latest(const char *s)
{
    return s && s[0] ? s : "latest";
}

/* "<domain>/ns/<namespace>/sa/<account>" -> namespace. */
static const char *san_namespace(const char *san, char *buf, size_t n)
{
    const char *p = san ? strstr(san, "/ns/") : NULL;
    if (!p) {
        return NULL;
    }
    p += 4;
    const char *end = strchr(p, '/');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len >= n) {
        len = n - 1;
    }
    memcpy(buf, p, len);
    buf[len] = '\0';
    return buf;
}

static bool special_cluster(const char *name)
{
    return !strcmp(name, "BlackHoleCluster") || !strcmp(name, "PassthroughCluster") ||
           !strcmp(name, "InboundPassthroughCluster") ||
           !strcmp(name, "InboundPassthroughClusterIpv4") ||
           !strcmp(name, "InboundPassthroughClusterIpv6");
}

static void base_labels(const struct msm_istio_config *c, const struct msm_istio_conn *k,
                        struct labels *l, char *svc_name_buf, size_t svc_name_n)
{
    l->n = 0;
    push(l, T_REPORTER, c->reporter == MSM_ISTIO_SERVER    ? "destination"
                        : c->reporter == MSM_ISTIO_GATEWAY ? "waypoint"
                                                           : "source");
    const struct msm_istio_peer *peer = k->peer;
    /* destination service, with the client-side fallbacks */
    const char *svc_host = "", *svc_name = "";
    if (!c->disable_host_header_fallback && k->host_header) {
        svc_host = svc_name = k->host_header;
    }
    if (k->route_name && !strcmp(k->route_name, "block_all")) {
        svc_name = "BlackHoleCluster";
    } else if (k->route_name && !strcmp(k->route_name, "allow_any")) {
        svc_name = "PassthroughCluster";
    } else if (k->cluster_name && special_cluster(k->cluster_name)) {
        svc_name = k->cluster_name;
    } else if (k->service_host || k->service_name) {
        if (k->service_host) {
            svc_host = k->service_host;
        }
        if (k->service_name) {
            svc_name = k->service_name;
        } else {
            const char *dot = strchr(svc_host, '.');
            size_t len = dot ? (size_t)(dot - svc_host) : strlen(svc_host);
            if (len >= svc_name_n) {
                len = svc_name_n - 1;
            }
            memcpy(svc_name_buf, svc_host, len);
            svc_name_buf[len] = '\0';
            svc_name = svc_name_buf;
        }
    }
    const char *peer_san = k->peer_san ? k->peer_san : "";
    const char *local_san = k->local_san ? k->local_san : "";
    const char *peer_ns =
        peer_san[0] ? san_namespace(peer_san, l->ns_buf, sizeof(l->ns_buf)) : NULL;
    if ((!peer_ns || !peer_ns[0]) && peer) {
        peer_ns = peer->namespace_name;
    }
    const char *canonical = nv(node.canonical_name);
    if (c->reporter != MSM_ISTIO_CLIENT) {
        push(l, T_SOURCE_WORKLOAD, or_unknown(peer ? peer->workload_name : NULL));
        push(l, T_SOURCE_CANONICAL_SERVICE, or_unknown(peer ? peer->canonical_name : NULL));
        push(l, T_SOURCE_CANONICAL_REVISION, or_latest(peer ? peer->canonical_revision : NULL));
        push(l, T_SOURCE_WORKLOAD_NAMESPACE, or_unknown(peer_ns));
        push(l, T_SOURCE_PRINCIPAL, or_unknown(peer_san));
        push(l, T_SOURCE_APP, or_unknown(peer ? peer->app_name : NULL));
        push(l, T_SOURCE_VERSION, or_unknown(peer ? peer->app_version : NULL));
        push(l, T_SOURCE_CLUSTER, or_unknown(peer ? peer->cluster_id : NULL));
        push(l, T_DESTINATION_WORKLOAD, nv(node.workload_name));
        push(l, T_DESTINATION_WORKLOAD_NAMESPACE, nv(node.namespace_name));
        push(l, T_DESTINATION_PRINCIPAL, or_unknown(local_san));
        push(l, T_DESTINATION_APP, nv(node.app_name));
        push(l, T_DESTINATION_VERSION, nv(node.app_version));
        push(l, T_DESTINATION_SERVICE, svc_host[0] ? svc_host : canonical);
        push(l, T_DESTINATION_CANONICAL_SERVICE, canonical);
        push(l, T_DESTINATION_CANONICAL_REVISION, nv(node.canonical_revision));
        push(l, T_DESTINATION_SERVICE_NAME, svc_name[0] ? svc_name : canonical);
        push(l, T_DESTINATION_SERVICE_NAMESPACE, nv(node.namespace_name));
        push(l, T_DESTINATION_CLUSTER, nv(node.cluster_id));
    } else {
        push(l, T_SOURCE_WORKLOAD, nv(node.workload_name));
        push(l, T_SOURCE_CANONICAL_SERVICE, canonical);
        push(l, T_SOURCE_CANONICAL_REVISION, nv(node.canonical_revision));
        push(l, T_SOURCE_WORKLOAD_NAMESPACE, nv(node.namespace_name));
        push(l, T_SOURCE_PRINCIPAL, or_unknown(local_san));
        push(l, T_SOURCE_APP, nv(node.app_name));
        push(l, T_SOURCE_VERSION, nv(node.app_version));
        push(l, T_SOURCE_CLUSTER, nv(node.cluster_id));
        push(l, T_DESTINATION_WORKLOAD, or_unknown(peer ? peer->workload_name : NULL));
        push(l, T_DESTINATION_WORKLOAD_NAMESPACE, or_unknown(peer_ns));
        push(l, T_DESTINATION_PRINCIPAL, or_unknown(peer_san));
        push(l, T_DESTINATION_APP, or_unknown(peer ? peer->app_name : NULL));
        push(l, T_DESTINATION_VERSION, or_unknown(peer ? peer->app_version : NULL));
        push(l, T_DESTINATION_SERVICE, or_unknown(svc_host));
        push(l, T_DESTINATION_CANONICAL_SERVICE, or_unknown(peer ? peer->canonical_name : NULL));
        push(l, T_DESTINATION_CANONICAL_REVISION,
             or_latest(peer ? peer->canonical_revision : NULL));
        push(l, T_DESTINATION_SERVICE_NAME, or_unknown(svc_name));
        push(l, T_DESTINATION_SERVICE_NAMESPACE, or_unknown(peer_ns));
        push(l, T_DESTINATION_CLUSTER, or_unknown(peer ? peer->cluster_id : NULL));
    }
    l->n_peer = l->n;
    push(l, T_REQUEST_PROTOCOL, k->request_protocol ? k->request_protocol : "tcp");
    if (k->response_code) {
        push(l, T_RESPONSE_CODE, k->response_code);
        push(l, T_GRPC_RESPONSE_STATUS, k->grpc_status ? k->grpc_status : "");
    }
    push(l, T_RESPONSE_FLAGS, k->response_flags ? k->response_flags : "-");
    bool mtls = peer_san[0] && local_san[0];
    push(l, T_CONNECTION_SECURITY_POLICY,
         c->reporter == MSM_ISTIO_CLIENT ? "unknown" : mtls ? "mutual_tls" : "none");
}

/* Apply the overrides of <metric> (overrideTags) to the first <nl> labels of <l>: into
 * parallel name/value arrays. */
static int override(const struct msm_istio_config *c, int metric, const struct labels *l, int nl,
                    const char **names, const char **values, int max)
{
    const struct metric_cfg *m = &c->m[metric];
    int n = 0;
    for (int i = 0; i < nl && n < max; i++) {
        int o = m->ovr[l->tag[i]];
        if (o == OVR_REMOVE) {
            continue;
        }
        names[n] = tag_names[l->tag[i]];
        values[n] = o == OVR_NONE ? l->val[i] : or_unknown(c->exprs[o]);
        n++;
    }
    for (int i = 0; i < m->n_add && n < max; i++) {
        names[n] = m->add[i].name;
        values[n] = or_unknown(c->exprs[m->add[i].expr]);
        n++;
    }
    return n;
}

int msm_istio_labels(const struct msm_istio_config *c, const char *metric,
                     const struct msm_istio_conn *conn, const char **names, const char **values,
                     int max)
{
    int m = find_metric(metric);
    if (m < 0 || c->m[m].drop) {
        return -1;
    }
    struct labels l;
    char svc[256];
    base_labels(c, conn, &l, svc, sizeof(svc));
    int nl = m == M_REQUEST_MESSAGES || m == M_RESPONSE_MESSAGES ? l.n_peer : l.n;
    return override(c, m, &l, nl, names, values, max);
}

/* ---- series ------------------------------------------------------------------------------- */

#define MAX_LABELS (N_TAGS + 16)

static struct msm_stat *series_stat(struct msm_istio_config *c, int metric,
                                    enum msm_stat_type type, const struct labels *l, int nl)
{
    if (c->m[metric].drop) {
        return NULL;
    }
    const char *names[MAX_LABELS], *values[MAX_LABELS];
    int n = override(c, metric, l, nl, names, values, MAX_LABELS);
    struct msm_tag tags[MAX_LABELS];
    for (int i = 0; i < n; i++) {
        tags[i].name = (char *)names[i];
        tags[i].value = (char *)values[i];
    }
    char name[96];
    snprintf(name, sizeof(name), MSM_STATS_ISTIO_NS ".istio_%s", metric_names[metric]);
    return msm_stats_get_tagged(c->st, type, name, tags, n);
}

static void grow(struct msm_istio_config *c)
{
    size_t nb = c->n_buckets * 2;
    struct series **b = msm_xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < c->n_buckets; i++) {
        while (c->buckets[i]) {
            struct series *s = c->buckets[i];
            c->buckets[i] = s->next;
            s->next = b[s->hash & (nb - 1)];
            b[s->hash & (nb - 1)] = s;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->n_buckets = nb;
}

/* The series of <kind> for <conn>: found by its label values, or created with its stats. The
 * returned memory is a struct msm_istio_<kind> (they are all a struct series). */
static struct series *series_get(struct msm_istio_config *c, enum series_kind kind,
                                 const struct msm_istio_conn *conn)
{
    struct labels l;
    char svc[256];
    base_labels(c, conn, &l, svc, sizeof(svc));
    int nl = kind == SK_GRPC ? l.n_peer : l.n;
    /* The key: the kind, then every base value, \x1f-separated (the overrides depend on
     * nothing else). */
    size_t len = 3;
    for (int i = 0; i < nl; i++) {
        len += strlen(l.val[i]) + 1;
    }
    char *key = msm_xmalloc(len);
    char *p = key;
    *p++ = (char)('0' + kind);
    *p++ = '\x1f';
    for (int i = 0; i < nl; i++) {
        size_t n = strlen(l.val[i]);
        memcpy(p, l.val[i], n);
        p += n;
        *p++ = '\x1f';
    }
    *p = '\0';
    uint64_t h = XXH3_64bits(key, (size_t)(p - key));
    pthread_mutex_lock(&c->mu);
    struct series *s = c->buckets[h & (c->n_buckets - 1)];
    while (s && (s->hash != h || strcmp(s->key, key) != 0)) {
        s = s->next;
    }
    if (s) {
        pthread_mutex_unlock(&c->mu);
        free(key);
        return s;
    }
    s = msm_xcalloc(1, sizeof(struct series));
    s->hash = h;
    s->key = key;
    for (int i = 0; i < series_metrics[kind].n; i++) {
        s->st[i] = series_stat(c, series_metrics[kind].metric[i], series_metrics[kind].type[i],
                               &l, nl);
    }
    if (++c->n_series > c->n_buckets) {
        grow(c);
    }
    s->next = c->buckets[h & (c->n_buckets - 1)];
    c->buckets[h & (c->n_buckets - 1)] = s;
    pthread_mutex_unlock(&c->mu);
    return s;
}

static void add(struct msm_stat *st, uint64_t v)
{
    if (st) {
        msm_stat_add(st, v);
    }
}

static void record(struct msm_stat *st, uint64_t v)
{
    if (st) {
        msm_stat_record(st, v);
    }
}

struct msm_istio_tcp *msm_istio_tcp_series(struct msm_istio_config *c,
                                           const struct msm_istio_conn *conn)
{
    return (struct msm_istio_tcp *)series_get(c, SK_TCP, conn);
}

void msm_istio_tcp_opened(struct msm_istio_tcp *s)
{
    add(s->s.st[0], 1);
}

void msm_istio_tcp_bytes(struct msm_istio_tcp *s, uint64_t sent, uint64_t received)
{
    add(s->s.st[2], sent);
    add(s->s.st[3], received);
}

void msm_istio_tcp_closed(struct msm_istio_tcp *s)
{
    add(s->s.st[1], 1);
}

struct msm_istio_http *msm_istio_http_series(struct msm_istio_config *c,
                                             const struct msm_istio_conn *conn)
{
    return (struct msm_istio_http *)series_get(c, SK_HTTP, conn);
}

void msm_istio_http_request(struct msm_istio_http *s, uint64_t duration_ms,
                            uint64_t request_bytes, uint64_t response_bytes)
{
    add(s->s.st[0], 1);
    record(s->s.st[1], duration_ms);
    record(s->s.st[2], request_bytes);
    record(s->s.st[3], response_bytes);
}

struct msm_istio_grpc *msm_istio_grpc_series(struct msm_istio_config *c,
                                             const struct msm_istio_conn *conn)
{
    return (struct msm_istio_grpc *)series_get(c, SK_GRPC, conn);
}

void msm_istio_grpc_messages(struct msm_istio_grpc *s, uint64_t requests, uint64_t responses)
{
    add(s->s.st[0], requests);
    add(s->s.st[1], responses);
}
