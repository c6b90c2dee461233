#include "upstream/cluster.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/extensions/load_balancing_policies/least_request/v3/least_request.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "config/pbutil.h"
#include "config/types.h"
#include "filter/upstream.h"
#include "stats/istio_stats.h"
#include "upstream/priority.h"
#include "xds/strmap.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_BUFFER_LIMIT (1024 * 1024)
#define DEFAULT_DNS_REFRESH_MS 5000

/* ---- config -------------------------------------------------------------------------------- */

void msm_cluster_cfg_unref(struct msm_cluster_cfg *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) {
        return;
    }
    for (int i = 0; i < c->n_dns_eps; i++) {
        free(c->dns_eps[i].hostname);
        msm_tsm_meta_free(c->dns_eps[i].meta);
    }
    msm_cluster_transport_deinit(c);
    free(c->dns_eps);
    free(c->static_addrs);
    free(c->static_weights);
    msm_topology_deinit(&c->static_topo);
    if (c->eds_service_name != c->name) {
        free(c->eds_service_name);
    }
    free(c->istio_service_host);
    free(c->istio_service_name);
    free(c->eds_source);
    free(c->eds_api);
    msm_hc_cfg_free(c->hc);
    msm_cluster_http_cfg_free(c->http);
    msm_upstream_filters_unref(c->filters);
    if (c->stat_name != c->name) {
        free(c->stat_name);
    }
    msm_name_unref(c->name);
    free(c);
}

static int lb_from_proto(const Envoy__Config__Cluster__V3__Cluster *p, struct msm_cluster_cfg *c,
                         struct msm_err *err)
{
    switch (p->lb_policy) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN:
        c->lb = MSM_LB_ROUND_ROBIN;
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST:
        c->lb = MSM_LB_LEAST_REQUEST;
        if (p->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_LEAST_REQUEST_LB_CONFIG) {
            c->lr_choice_count = msm_pb_u32(p->least_request_lb_config->choice_count, 2);
            if (c->lr_choice_count < 2) {
                return msm_err_set(err, "least_request_lb_config.choice_count: must be >= 2");
            }
        }
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM:
        c->lb = MSM_LB_RANDOM;
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED:
        if (c->type != MSM_CLUSTER_ORIGINAL_DST) {
            return msm_err_set(err, "lb_policy: CLUSTER_PROVIDED is only valid for ORIGINAL_DST "
                                    "clusters");
        }
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LOAD_BALANCING_POLICY_CONFIG: {
        const Envoy__Config__Cluster__V3__LoadBalancingPolicy *lbp = p->load_balancing_policy;
        if (!lbp || !lbp->n_policies) {
            return msm_err_set(err, "load_balancing_policy: at least one policy is required");
        }
        /* Envoy takes the first policy it supports. */
        for (size_t i = 0; i < lbp->n_policies; i++) {
            const Envoy__Config__Core__V3__TypedExtensionConfig *tc =
                lbp->policies[i]->typed_extension_config;
            if (!tc || !tc->typed_config) {
                continue;
            }
            const char *t = tc->typed_config->type_url;
            const char *slash = strrchr(t, '/');
            t = slash ? slash + 1 : t;
            if (!strcmp(t, "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin")) {
                c->lb = MSM_LB_ROUND_ROBIN;
                return 0;
            }
            if (!strcmp(t, "envoy.extensions.load_balancing_policies.random.v3.Random")) {
                c->lb = MSM_LB_RANDOM;
                return 0;
            }
            if (!strcmp(t,
                        "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest")) {
                c->lb = MSM_LB_LEAST_REQUEST;
                ProtobufCMessage *m = msm_pb_any_unpack(tc->typed_config, NULL, NULL, err);
                if (!m) {
                    msm_err_prefix(err, "load_balancing_policy.policies[%zu]", i);
                    return MSM_EINVAL;
                }
                Envoy__Extensions__LoadBalancingPolicies__LeastRequest__V3__LeastRequest *lr =
                    (void *)m;
                c->lr_choice_count = msm_pb_u32(lr->choice_count, 2);
                protobuf_c_message_free_unpacked(m, NULL);
                if (c->lr_choice_count < 2) {
                    return msm_err_set(err, "load_balancing_policy: choice_count must be >= 2");
                }
                return 0;
            }
        }
        return msm_err_set(err, "load_balancing_policy: none of the %zu policies is supported "
                                "(supported: round_robin, least_request, random)",
                           lbp->n_policies);
    }
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH:
        c->lb = MSM_LB_RING_HASH;
        c->ring_min = 1024;
        c->ring_max = 8 * 1024 * 1024;
        if (p->lb_config_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_RING_HASH_LB_CONFIG) {
            const Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig *r = p->ring_hash_lb_config;
            if (r->hash_function !=
                ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__HASH_FUNCTION__XX_HASH) {
                return msm_err_set(err, "ring_hash_lb_config.hash_function: only XX_HASH is "
                                        "supported");
            }
            c->ring_min = r->minimum_ring_size ? r->minimum_ring_size->value : c->ring_min;
            c->ring_max = r->maximum_ring_size ? r->maximum_ring_size->value : c->ring_max;
            if (!c->ring_min || c->ring_min > c->ring_max || c->ring_max > 8 * 1024 * 1024) {
                return msm_err_set(err, "ring_hash_lb_config: need 0 < minimum_ring_size <= "
                                        "maximum_ring_size <= 8388608");
            }
        }
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__MAGLEV:
        c->lb = MSM_LB_MAGLEV;
        c->maglev_size = 65537;
        if (p->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_MAGLEV_LB_CONFIG &&
            p->maglev_lb_config->table_size) {
            c->maglev_size = p->maglev_lb_config->table_size->value;
            if (c->maglev_size < 2 || c->maglev_size > 5000011) {
                return msm_err_set(err, "maglev_lb_config.table_size: must be in [2, 5000011]");
            }
        }
        return 0;
    default:
        return msm_err_set(err, "lb_policy: unknown value %d", (int)p->lb_policy);
    }
}

/* common_lb_config: the panic threshold and locality weighting (priority.h). */
static int common_lb_from_proto(const Envoy__Config__Cluster__V3__Cluster__CommonLbConfig *p,
                                struct msm_cluster_cfg *c, struct msm_err *err)
{
    c->panic_threshold = 50;
    if (!p) {
        return 0;
    }
    if (p->healthy_panic_threshold) {
        double v = p->healthy_panic_threshold->value;
        if (!(v >= 0 && v <= 100)) {
            return msm_err_set(err, "common_lb_config.healthy_panic_threshold: must be in "
                                    "[0, 100]");
        }
        c->panic_threshold = (double)(uint32_t)v; /* truncated to whole percent, as Envoy */
    }
    c->locality_weighted =
        p->locality_config_specifier_case ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_LOCALITY_WEIGHTED_LB_CONFIG;
    return 0;
}

static int breakers_from_proto(const Envoy__Config__Cluster__V3__CircuitBreakers *cb,
                               struct msm_cluster_cfg *c, struct msm_err *err)
{
    c->max_connections = 1024;
    c->max_pending_requests = 1024;
    c->max_requests = 1024;
    c->max_retries = 3;
    if (!cb) {
        return 0;
    }
    for (size_t i = 0; i < cb->n_thresholds; i++) {
        const Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *t = cb->thresholds[i];
        if (t->priority != ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__DEFAULT) {
            continue; /* HIGH priority applies to HTTP routes marked high; TCP uses DEFAULT */
        }
        c->max_connections = msm_pb_u32(t->max_connections, 1024);
        c->max_pending_requests = msm_pb_u32(t->max_pending_requests, 1024);
        c->max_requests = msm_pb_u32(t->max_requests, 1024);
        c->max_retries = msm_pb_u32(t->max_retries, 3);
        c->track_remaining = t->track_remaining;
    }
    (void)err;
    return 0;
}

static int endpoints_from_proto(const Envoy__Config__Cluster__V3__Cluster *p,
                                struct msm_cluster_cfg *c, struct msm_err *err)
{
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la = p->load_assignment;
    if (!la) {
        return 0;
    }
    size_t cap_s = 0, cap_d = 0;
    for (size_t i = 0; i < la->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lle = la->endpoints[i];
        if (lle->priority != 0 && c->type != MSM_CLUSTER_STATIC) {
            return msm_err_set(err, "load_assignment.endpoints[%zu].priority: only priority 0 is "
                                    "supported for DNS clusters yet", i);
        }
        for (size_t j = 0; j < lle->n_lb_endpoints; j++) {
            const Envoy__Config__Endpoint__V3__LbEndpoint *lbe = lle->lb_endpoints[j];
            if (lbe->host_identifier_case !=
                ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT) {
                return msm_err_set(err, "load_assignment.endpoints[%zu].lb_endpoints[%zu]: an "
                                        "endpoint is required (endpoint_name is not supported)",
                                   i, j);
            }
            const Envoy__Config__Endpoint__V3__Endpoint *ep = lbe->endpoint;
            uint32_t w = msm_pb_u32(lbe->load_balancing_weight, 1);
            if (w == 0) {
                return msm_err_set(err, "load_assignment.endpoints[%zu].lb_endpoints[%zu]."
                                        "load_balancing_weight: must be >= 1", i, j);
            }
            if (c->type == MSM_CLUSTER_STRICT_DNS || c->type == MSM_CLUSTER_LOGICAL_DNS) {
                const Envoy__Config__Core__V3__Address *a = ep ? ep->address : NULL;
                if (!a || a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS) {
                    return msm_err_set(err, "load_assignment.endpoints[%zu].lb_endpoints[%zu]."
                                            "endpoint.address: DNS clusters need a socket_address",
                                       i, j);
                }
                const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
                if (!sa->address[0]) {
                    return msm_err_set(err, "load_assignment.endpoints[%zu].lb_endpoints[%zu]."
                                            "endpoint.address.socket_address.address: empty", i, j);
                }
                c->dns_eps = msm_xgrow(c->dns_eps, sizeof(*c->dns_eps), &cap_d,
                                       (size_t)c->n_dns_eps + 1);
                struct msm_dns_endpoint *d = &c->dns_eps[c->n_dns_eps++];
                d->hostname = msm_xstrdup(sa->address);
                d->port = sa->port_specifier_case ==
                                  ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE
                              ? sa->port_value
                              : 0;
                d->weight = w;
                d->meta = msm_tsm_meta_from_proto(lbe->metadata, lle->metadata);
                if (d->port > 65535) {
                    return msm_err_set(err, "load_assignment.endpoints[%zu].lb_endpoints[%zu]: "
                                            "port %u out of range", i, j, d->port);
                }
                continue;
            }
            c->static_addrs = msm_xgrow(c->static_addrs, sizeof(*c->static_addrs), &cap_s,
                                        (size_t)c->n_static + 1);
            size_t cap_w = cap_s;
            c->static_weights = msm_xrealloc(c->static_weights, cap_w * sizeof(uint32_t));
            c->static_meta = msm_xrealloc(c->static_meta, cap_w * sizeof(*c->static_meta));
            c->static_meta[c->n_static] = NULL;
            if (msm_pb_address(ep ? ep->address : NULL, &c->static_addrs[c->n_static], err) < 0) {
                msm_err_prefix(err, "load_assignment.endpoints[%zu].lb_endpoints[%zu].endpoint."
                                    "address", i, j);
                return MSM_EINVAL;
            }
            c->static_meta[c->n_static] = msm_tsm_meta_from_proto(lbe->metadata, lle->metadata);
            c->static_weights[c->n_static++] = w;
        }
    }
    if (c->type == MSM_CLUSTER_STATIC) {
        int n = 0;
        if (msm_topology_from_cla(la, &c->static_topo, &n, err) < 0) {
            msm_err_prefix(err, "load_assignment");
            return MSM_EINVAL;
        }
    }
    if (c->type == MSM_CLUSTER_LOGICAL_DNS && c->n_dns_eps != 1) {
        return msm_err_set(err, "LOGICAL_DNS clusters must have a single locality_lb_endpoint and "
                                "a single lb_endpoint (got %d endpoints)", c->n_dns_eps);
    }
    return 0;
}

/* eds_config's api_config_source case */
#define API_SOURCE ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE

static int type_from_proto(const Envoy__Config__Cluster__V3__Cluster *p, struct msm_cluster_cfg *c,
                           struct msm_err *err)
{
    if (p->cluster_discovery_type_case ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_CLUSTER_TYPE) {
        return msm_err_set(err, "cluster_type '%s': custom cluster types are not supported",
                           p->cluster_type->name);
    }
    switch (p->type) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC:
        c->type = MSM_CLUSTER_STATIC;
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS:
        c->type = MSM_CLUSTER_STRICT_DNS;
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS:
        c->type = MSM_CLUSTER_LOGICAL_DNS;
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS:
        c->type = MSM_CLUSTER_EDS;
        if (p->eds_cluster_config && p->eds_cluster_config->service_name[0]) {
            /* Istio names the service as the cluster: one string for both. */
            const char *sn = p->eds_cluster_config->service_name;
            c->eds_service_name = c->name && !strcmp(sn, c->name) ? c->name : msm_xstrdup(sn);
        }
        if (p->eds_cluster_config && p->eds_cluster_config->eds_config) {
            const ProtobufCMessage *src = &p->eds_cluster_config->eds_config->base;
            c->eds_source_len = protobuf_c_message_get_packed_size(src);
            c->eds_source = msm_xmalloc(c->eds_source_len + 1);
            protobuf_c_message_pack(src, c->eds_source);
            const Envoy__Config__Core__V3__ConfigSource *cs = p->eds_cluster_config->eds_config;
            if (cs->config_source_specifier_case == API_SOURCE && cs->api_config_source) {
                c->eds_api_len = protobuf_c_message_get_packed_size(&cs->api_config_source->base);
                c->eds_api = msm_xmalloc(c->eds_api_len + 1);
                protobuf_c_message_pack(&cs->api_config_source->base, c->eds_api);
            }
        }
        return 0;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST:
        c->type = MSM_CLUSTER_ORIGINAL_DST;
        if (p->lb_config_case ==
                ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_ORIGINAL_DST_LB_CONFIG &&
            p->original_dst_lb_config->use_http_header) {
            return msm_err_set(err, "original_dst_lb_config.use_http_header: not supported");
        }
        return 0;
    default:
        return msm_err_set(err, "type: unknown discovery type %d", (int)p->type);
    }
}

struct msm_cluster_cfg *msm_cluster_cfg_from_proto(const void *proto, bool validate_only,
                                                  struct msm_err *err)
{
    const Envoy__Config__Cluster__V3__Cluster *p = proto;
    if (!p->name[0]) {
        msm_err_set(err, "name: a cluster needs a name");
        return NULL;
    }
    struct msm_cluster_cfg *c = MSM_NEW(struct msm_cluster_cfg);
    atomic_init(&c->refs, 1);
    c->name = msm_name_intern(p->name); /* the same string as the xDS client's and CM's keys */
    c->stat_name = p->alt_stat_name[0] ? msm_xstrdup(p->alt_stat_name) : c->name;
    msm_istio_cluster_services(p->metadata, &c->istio_service_host, &c->istio_service_name);
    msm_istio_cluster_flags(p->metadata, &c->istio_external, &c->istio_disable_mx);
    int64_t ct = msm_pb_duration_ms(p->connect_timeout, DEFAULT_CONNECT_TIMEOUT_MS);
    c->per_connection_buffer_limit = msm_pb_u32(p->per_connection_buffer_limit_bytes,
                                                DEFAULT_BUFFER_LIMIT);
    c->lr_choice_count = 2;
    if (ct <= 0 || ct > UINT32_MAX) {
        msm_err_set(err, "connect_timeout: must be positive");
        goto fail;
    }
    c->connect_timeout_ms = (uint32_t)ct;
    if (type_from_proto(p, c, err) < 0 || lb_from_proto(p, c, err) < 0 ||
        breakers_from_proto(p->circuit_breakers, c, err) < 0 ||
        common_lb_from_proto(p->common_lb_config, c, err) < 0) {
        goto fail;
    }
    if (p->upstream_bind_config && p->upstream_bind_config->source_address) {
        Envoy__Config__Core__V3__Address a = ENVOY__CONFIG__CORE__V3__ADDRESS__INIT;
        a.address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
        a.socket_address = p->upstream_bind_config->source_address;
        if (msm_pb_address(&a, &c->bind, err) < 0) {
            msm_err_prefix(err, "upstream_bind_config.source_address");
            goto fail;
        }
        c->has_bind = true;
    }
    if (p->upstream_connection_options && p->upstream_connection_options->tcp_keepalive) {
        const Envoy__Config__Core__V3__TcpKeepalive *k = p->upstream_connection_options->tcp_keepalive;
        c->keepalive = true;
        c->keepalive_probes = msm_pb_u32(k->keepalive_probes, 0);
        c->keepalive_time = msm_pb_u32(k->keepalive_time, 0);
        c->keepalive_interval = msm_pb_u32(k->keepalive_interval, 0);
    }
    c->dns_family = (enum msm_dns_family)p->dns_lookup_family;
    if ((int)c->dns_family < 0 || c->dns_family > MSM_DNS_ALL) {
        msm_err_set(err, "dns_lookup_family: unknown value %d", (int)p->dns_lookup_family);
        goto fail;
    }
    int64_t rr = msm_pb_duration_ms(p->dns_refresh_rate, DEFAULT_DNS_REFRESH_MS);
    if (rr < 1) {
        msm_err_set(err, "dns_refresh_rate: must be at least 1ms");
        goto fail;
    }
    c->dns_refresh_ms = (uint32_t)(rr > UINT32_MAX ? UINT32_MAX : rr);
    c->dns_failure_refresh_base_ms = c->dns_refresh_ms;
    c->dns_failure_refresh_max_ms = c->dns_refresh_ms * 10;
    if (p->dns_failure_refresh_rate) {
        int64_t b = msm_pb_duration_ms(p->dns_failure_refresh_rate->base_interval, rr);
        int64_t m = msm_pb_duration_ms(p->dns_failure_refresh_rate->max_interval, b * 10);
        if (b < 1 || m < b) {
            msm_err_set(err, "dns_failure_refresh_rate: need 0 < base_interval <= max_interval");
            goto fail;
        }
        c->dns_failure_refresh_base_ms = (uint32_t)b;
        c->dns_failure_refresh_max_ms = (uint32_t)m;
    }
    c->respect_dns_ttl = p->respect_dns_ttl;
    if (endpoints_from_proto(p, c, err) < 0) {
        goto fail;
    }
    if (msm_outlier_cfg_from_proto(p->outlier_detection, &c->outlier, err) < 0 ||
        msm_hc_cfg_from_proto((const void *const *)p->health_checks, p->n_health_checks, &c->hc,
                              err) < 0) {
        goto fail;
    }
    if (c->type == MSM_CLUSTER_STATIC && c->n_dns_eps) {
        msm_err_set(err, "STATIC clusters take IP endpoints only");
        goto fail;
    }
    if (msm_cluster_transport_from_proto(p, c, err) < 0 ||
        msm_cluster_http_from_proto(p, c, err) < 0 ||
        msm_upstream_filters_new((const void *const *)p->filters, p->n_filters, p->name,
                                 validate_only, &c->filters, err) < 0) {
        goto fail;
    }
    return c;
fail:
    msm_err_prefix(err, "cluster '%s'", p->name);
    msm_cluster_cfg_unref(c);
    return NULL;
}

/* ---- shared, hosts, sets -------------------------------------------------------------------- */

/* The circuit breaker and outlier stats of a cluster. With Istio's stats_matcher all of them
 * are the store's sinks for every cluster: such blocks are one, refcounted (the findable one is
 * cleared by its last unref, under <sh_mu>; clusters may be freed on any thread). */
struct sh_stats {
    atomic_int refs;
    struct msm_stats_store *st;
    struct msm_cb_stats cb;
    struct msm_outlier_stats outlier;
};

static pthread_mutex_t sh_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sh_stats *sh_sinks;

static bool all_sinks(struct msm_stat *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!v[i]->sink) {
            return false;
        }
    }
    return true;
}

static void sh_stats_free(struct sh_stats *b)
{
    msm_cb_stats_deinit(&b->cb);
    msm_outlier_stats_deinit(&b->outlier);
    free(b);
}

static void shared_stats(struct msm_cluster_shared *s, struct msm_stats_store *st,
                         const char *stat_name)
{
    struct sh_stats *b = MSM_NEW(struct sh_stats);
    atomic_init(&b->refs, 1);
    b->st = st;
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "cluster.%s.circuit_breakers.default.", stat_name);
    msm_cb_stats_init(st, prefix, &b->cb);
    snprintf(prefix, sizeof(prefix), "cluster.%s.outlier_detection.", stat_name);
    msm_outlier_stats_init(st, prefix, &b->outlier);
    if (all_sinks((struct msm_stat *const *)&b->cb, sizeof(b->cb) / sizeof(struct msm_stat *)) &&
        all_sinks((struct msm_stat *const *)&b->outlier,
                  sizeof(b->outlier) / sizeof(struct msm_stat *))) {
        pthread_mutex_lock(&sh_mu);
        if (sh_sinks && sh_sinks->st == st) {
            atomic_fetch_add(&sh_sinks->refs, 1);
            sh_stats_free(b);
            b = sh_sinks;
        } else {
            sh_sinks = b;
        }
        pthread_mutex_unlock(&sh_mu);
    }
    s->cb = &b->cb;
    s->outlier = &b->outlier;
}

static void shared_stats_unref(struct msm_cluster_shared *s)
{
    struct sh_stats *b = (struct sh_stats *)((char *)s->cb - offsetof(struct sh_stats, cb));
    pthread_mutex_lock(&sh_mu);
    bool last = atomic_fetch_sub(&b->refs, 1) == 1;
    if (last && sh_sinks == b) {
        sh_sinks = NULL;
    }
    pthread_mutex_unlock(&sh_mu);
    if (last) {
        sh_stats_free(b);
    }
}

struct msm_cluster_shared *msm_cluster_shared_new(const struct msm_cluster_cfg *cfg,
                                                  struct msm_stats_store *st)
{
    struct msm_cluster_shared *s = MSM_NEW(struct msm_cluster_shared);
    atomic_init(&s->refs, 1);
    s->name = msm_name_ref(cfg->name);
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "cluster.%s.", cfg->stat_name);
    msm_cluster_stats_init(st, prefix, &s->stats);
    shared_stats(s, st, cfg->stat_name);
    msm_cluster_http_shared_init(&s->http, cfg->stat_name, st);
    if (cfg->track_remaining) {
        msm_stat_set(s->cb->remaining_cx, cfg->max_connections);
        msm_stat_set(s->cb->remaining_pending, cfg->max_pending_requests);
        msm_stat_set(s->cb->remaining_rq, cfg->max_requests);
        msm_stat_set(s->cb->remaining_retries, cfg->max_retries);
    }
    return s;
}

void msm_cluster_shared_unref(struct msm_cluster_shared *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) {
        return;
    }
    msm_cluster_stats_deinit(&s->stats);
    shared_stats_unref(s);
    msm_cluster_http_shared_deinit(&s->http);
    msm_name_unref(s->name);
    free(s);
}

/* Most endpoints have no hostname: they share this one instead of 30k empty copies. */
static char no_hostname[] = "";

struct msm_host *msm_host_new(const struct msm_address *addr, const char *hostname,
                              uint32_t weight)
{
    struct msm_host *h = MSM_NEW(struct msm_host);
    atomic_init(&h->refs, 1);
    h->addr = *addr;
    h->hostname = hostname && hostname[0] ? msm_xstrdup(hostname) : no_hostname;
    h->weight = weight ? weight : 1;
    return h;
}

void msm_host_unref(struct msm_host *h)
{
    if (!h || atomic_fetch_sub(&h->refs, 1) != 1) {
        return;
    }
    if (h->hostname != no_hostname) {
        free(h->hostname);
    }
    msm_tsm_meta_free(h->tsm);
    free(h);
}

/* Smooth weighted round robin (nginx's algorithm) unrolled into a wheel, so workers share only
 * an atomic cursor. Weights are scaled down to keep the wheel at most 4096 slots. */
static void build_schedule(struct msm_host_set *hs)
{
    uint64_t total = 0;
    for (int i = 0; i < hs->n; i++) {
        total += hs->hosts[i]->weight;
    }
    uint64_t scale = total > 4096 ? (total + 4095) / 4096 : 1;
    int64_t *w = msm_xcalloc((size_t)hs->n, sizeof(int64_t));
    int64_t *cur = msm_xcalloc((size_t)hs->n, sizeof(int64_t));
    int64_t sum = 0;
    for (int i = 0; i < hs->n; i++) {
        w[i] = (int64_t)(hs->hosts[i]->weight / scale);
        if (w[i] < 1) {
            w[i] = 1;
        }
        sum += w[i];
    }
    hs->sched_len = (uint32_t)sum;
    hs->schedule = msm_xcalloc((size_t)sum, sizeof(uint16_t));
    for (int64_t k = 0; k < sum; k++) {
        int best = 0;
        for (int i = 0; i < hs->n; i++) {
            cur[i] += w[i];
            if (cur[i] > cur[best]) {
                best = i;
            }
        }
        cur[best] -= sum;
        hs->schedule[k] = (uint16_t)best;
    }
    free(w);
    free(cur);
}

struct msm_host_set *msm_host_set_new(struct msm_host **hosts, int n)
{
    struct msm_host_set *hs = MSM_NEW(struct msm_host_set);
    atomic_init(&hs->refs, 1);
    hs->n = n;
    hs->hosts = msm_xcalloc((size_t)(n ? n : 1), sizeof(*hosts));
    for (int i = 0; i < n; i++) {
        hs->hosts[i] = hosts[i];
        hs->total_weight += hosts[i]->weight;
        if (hosts[i]->weight != hosts[0]->weight) {
            hs->weighted = true;
        }
    }
    /* The wheel indexes hosts with 16 bits; larger sets fall back to weighted random. */
    if (hs->weighted && n <= 65535) {
        build_schedule(hs);
    }
    return hs;
}

void msm_topology_deinit(struct msm_topology *t)
{
    free(t->attr);
    free(t->loc_weight);
    memset(t, 0, sizeof(*t));
}

void msm_host_set_set_topology(struct msm_host_set *hs, const struct msm_topology *t)
{
    msm_topology_deinit(&hs->topo);
    if (!t || !t->attr) {
        return;
    }
    hs->topo = *t;
    hs->topo.attr = msm_xcalloc((size_t)hs->n + 1, sizeof(*t->attr));
    memcpy(hs->topo.attr, t->attr, (size_t)hs->n * sizeof(*t->attr));
    hs->topo.loc_weight = msm_xcalloc((size_t)t->n_loc + 1, sizeof(uint32_t));
    memcpy(hs->topo.loc_weight, t->loc_weight, (size_t)t->n_loc * sizeof(uint32_t));
}

static struct msm_host_attr host_attr(const struct msm_host_set *hs, int i)
{
    return hs->topo.attr ? hs->topo.attr[i] : (struct msm_host_attr){0};
}

static uint32_t locality_weight(const struct msm_host_set *hs, int i)
{
    uint32_t l = host_attr(hs, i).locality;
    return hs->topo.loc_weight && (int)l < hs->topo.n_loc ? hs->topo.loc_weight[l] : 0;
}

void msm_host_set_unref(struct msm_host_set *hs)
{
    if (!hs || atomic_fetch_sub(&hs->refs, 1) != 1) {
        return;
    }
    msm_topology_deinit(&hs->topo);
    for (int i = 0; i < hs->n; i++) {
        msm_host_unref(hs->hosts[i]);
    }
    free(hs->hosts);
    free(hs->schedule);
    free(hs);
}

bool msm_host_set_same(const struct msm_host_set *a, const struct msm_host_set *b)
{
    if (a->n != b->n || a->topo.overprov != b->topo.overprov ||
        a->topo.weighted_health != b->topo.weighted_health) {
        return false;
    }
    for (int i = 0; i < a->n; i++) {
        bool found = false;
        struct msm_host_attr x = host_attr(a, i);
        for (int j = 0; j < b->n && !found; j++) {
            struct msm_host_attr y = host_attr(b, j);
            found = msm_address_eq(&a->hosts[i]->addr, &b->hosts[j]->addr) &&
                    a->hosts[i]->weight == b->hosts[j]->weight &&
                    msm_host_tsm_hash(a->hosts[i]) == msm_host_tsm_hash(b->hosts[j]) &&
                    x.priority == y.priority && x.health == y.health &&
                    x.eds_status == y.eds_status &&
                    x.locality == y.locality &&
                    locality_weight(a, i) == locality_weight(b, j);
        }
        if (!found) {
            return false;
        }
    }
    return true;
}

struct msm_cluster *msm_cluster_new(struct msm_cluster_cfg *cfg, struct msm_cluster_shared *sh,
                                    struct msm_host_set *hosts)
{
    struct msm_cluster *c = MSM_NEW(struct msm_cluster);
    atomic_init(&c->refs, 1);
    atomic_fetch_add(&cfg->refs, 1);
    atomic_fetch_add(&sh->refs, 1);
    atomic_fetch_add(&hosts->refs, 1);
    c->cfg = cfg;
    c->sh = sh;
    c->hosts = hosts;
    c->prio = msm_prio_new(cfg, hosts);
    if (c->prio) {
        /* the levels have their own tables */
    } else if (cfg->lb == MSM_LB_RING_HASH) {
        c->ring = msm_ring_new(hosts, cfg->ring_min, cfg->ring_max);
    } else if (cfg->lb == MSM_LB_MAGLEV) {
        c->maglev = msm_maglev_new(hosts, cfg->maglev_size);
    }
    return c;
}

struct msm_cluster *msm_cluster_ref(struct msm_cluster *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void msm_cluster_unref(struct msm_cluster *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) {
        return;
    }
    msm_ring_free(c->ring);
    msm_maglev_free(c->maglev);
    msm_prio_free(c->prio);
    msm_host_set_unref(c->hosts);
    msm_cluster_shared_unref(c->sh);
    msm_cluster_cfg_unref(c->cfg);
    free(c);
}

bool msm_cluster_cx_reserve(struct msm_cluster *c)
{
    unsigned max = c->cfg->max_connections;
    unsigned cur = atomic_load(&c->sh->active_cx);
    do {
        if (cur >= max) {
            msm_stat_inc(c->sh->stats.upstream_cx_overflow);
            return false;
        }
    } while (!atomic_compare_exchange_weak(&c->sh->active_cx, &cur, cur + 1));
    if (cur + 1 >= max) {
        msm_stat_set(c->sh->cb->cx_open, 1);
    }
    if (c->cfg->track_remaining) {
        msm_stat_set(c->sh->cb->remaining_cx, max - (cur + 1));
    }
    return true;
}

void msm_cluster_cx_release(struct msm_cluster *c)
{
    unsigned now = atomic_fetch_sub(&c->sh->active_cx, 1) - 1;
    if (now < c->cfg->max_connections) {
        msm_stat_set(c->sh->cb->cx_open, 0);
    }
    if (c->cfg->track_remaining) {
        msm_stat_set(c->sh->cb->remaining_cx, c->cfg->max_connections - now);
    }
}

/* ---- load balancing ------------------------------------------------------------------------- */

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t msm_random(void)
{
    static _Thread_local uint64_t s[4];
    static _Thread_local bool seeded;
    if (!seeded) {
        if (getrandom(s, sizeof(s), 0) != (ssize_t)sizeof(s)) {
            s[0] = (uint64_t)(uintptr_t)&s ^ 0x9E3779B97F4A7C15ull;
            s[1] = 0xBF58476D1CE4E5B9ull;
            s[2] = 0x94D049BB133111EBull;
            s[3] = 1;
        }
        seeded = true;
    }
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static struct msm_host *pick_weighted_random(const struct msm_host_set *hs)
{
    if (!hs->weighted) {
        return hs->hosts[msm_random() % (uint64_t)hs->n];
    }
    uint64_t r = msm_random() % hs->total_weight;
    for (int i = 0; i < hs->n; i++) {
        if (r < hs->hosts[i]->weight) {
            return hs->hosts[i];
        }
        r -= hs->hosts[i]->weight;
    }
    return hs->hosts[hs->n - 1];
}

static struct msm_host *lb_pick(struct msm_cluster *c, uint64_t hash, uint32_t attempt)
{
    struct msm_lb_source src = {.hs = c->hosts, .ring = c->ring, .maglev = c->maglev};
    return msm_lb_pick_in(c, &src, hash, attempt);
}

/* Pick with the load balancer, skipping hosts ejected by outlier detection or failing active
 * health checks; when every try lands on such a host the last pick is used (Envoy's panic
 * mode). */
bool msm_lb_uses_hash(const struct msm_cluster *c)
{
    return c->cfg->lb == MSM_LB_RING_HASH || c->cfg->lb == MSM_LB_MAGLEV;
}

struct msm_host *msm_lb_choose(struct msm_cluster *c, uint64_t hash)
{
    return msm_lb_choose_attempt(c, hash, 0);
}

struct msm_host *msm_lb_choose_attempt(struct msm_cluster *c, uint64_t hash, uint32_t attempt)
{
    if (c->prio) {
        return msm_prio_choose(c, hash, attempt);
    }
    struct msm_host *h = lb_pick(c, hash, attempt);
    bool outlier = c->cfg->outlier.enabled && atomic_load(&c->sh->ejected);
    if (!h || (!outlier && !c->cfg->hc)) {
        return h;
    }
    uint64_t now = msm_mono_ms();
    for (int i = 0; i < c->hosts->n; i++) {
        if (!atomic_load_explicit(&h->hc_unhealthy, memory_order_relaxed) &&
            (!outlier || msm_outlier_host_ok(c, h, now))) {
            return h;
        }
        /* A hash policy keeps its key; move to the next host instead of re-hashing. */
        h = hash && (c->ring || c->maglev) ? c->hosts->hosts[(i + 1) % c->hosts->n]
                                           : lb_pick(c, hash, 0);
    }
    msm_stat_inc(c->sh->stats.lb_healthy_panic);
    return h;
}

struct msm_host *msm_lb_pick_in(struct msm_cluster *c, const struct msm_lb_source *src,
                                uint64_t hash, uint32_t attempt)
{
    const struct msm_host_set *hs = src->hs;
    if (!hs->n) {
        return NULL;
    }
    if (hs->n == 1) {
        return hs->hosts[0];
    }
    switch (c->cfg->lb) {
    case MSM_LB_ROUND_ROBIN: {
        unsigned k = atomic_fetch_add_explicit(&c->sh->rr_cursor, 1, memory_order_relaxed);
        if (hs->weighted) {
            return hs->schedule ? hs->hosts[hs->schedule[k % hs->sched_len]]
                                : pick_weighted_random(hs);
        }
        return hs->hosts[k % (unsigned)hs->n];
    }
    case MSM_LB_LEAST_REQUEST: {
        /* Power of <choice_count> choices: the least loaded of N (weighted) random picks. */
        struct msm_host *best = pick_weighted_random(hs);
        for (uint32_t i = 1; i < c->cfg->lr_choice_count; i++) {
            struct msm_host *h = pick_weighted_random(hs);
            if (atomic_load_explicit(&h->active_rq, memory_order_relaxed) <
                atomic_load_explicit(&best->active_rq, memory_order_relaxed)) {
                best = h;
            }
        }
        return best;
    }
    case MSM_LB_RING_HASH:
    case MSM_LB_MAGLEV: {
        if (!hash) {
            return pick_weighted_random(hs);
        }
        if (!src->ring && !src->maglev) {
            return pick_weighted_random(hs);
        }
        int k = src->ring ? msm_ring_pick(src->ring, hash, attempt)
                        : msm_maglev_pick(src->maglev, hash, attempt);
        return k >= 0 ? hs->hosts[k] : NULL;
    }
    case MSM_LB_RANDOM:
    default:
        return pick_weighted_random(hs);
    }
}
