#include "net/listener.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "envoy/config/listener/v3/listener.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "config/pbutil.h"
#include "config/types.h"
#include "tls/tls.h"

#define DEFAULT_BUFFER_LIMIT (1024 * 1024)

/* ---- CIDR ------------------------------------------------------------------------------------ */

int msm_cidr_parse(const char *prefix, uint32_t len, struct msm_cidr *out, struct msm_err *err)
{
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, prefix, out->addr) == 1) {
        out->family = AF_INET;
        if (len > 32) {
            return msm_err_set(err, "prefix_len %u too long for IPv4 '%s'", len, prefix);
        }
    } else if (inet_pton(AF_INET6, prefix, out->addr) == 1) {
        out->family = AF_INET6;
        if (len > 128) {
            return msm_err_set(err, "prefix_len %u too long for IPv6 '%s'", len, prefix);
        }
    } else {
        return msm_err_set(err, "malformed IP address: '%s'", prefix);
    }
    out->len = len;
    return 0;
}

bool msm_cidr_contains(const struct msm_cidr *c, const struct msm_address *a)
{
    const uint8_t *ip;
    uint8_t mapped[4];
    int fam = a->sa.ss_family;
    if (fam == AF_INET) {
        ip = (const uint8_t *)&((const struct sockaddr_in *)&a->sa)->sin_addr;
    } else if (fam == AF_INET6) {
        ip = (const uint8_t *)&((const struct sockaddr_in6 *)&a->sa)->sin6_addr;
        /* IPv4-mapped IPv6 peers match IPv4 ranges. */
        const struct in6_addr *v6 = &((const struct sockaddr_in6 *)&a->sa)->sin6_addr;
        if (c->family == AF_INET && IN6_IS_ADDR_V4MAPPED(v6)) {
            memcpy(mapped, ip + 12, 4);
            ip = mapped;
            fam = AF_INET;
        }
    } else {
        return false;
    }
    if (fam != c->family) {
        return false;
    }
    uint32_t full = c->len / 8, rem = c->len % 8;
    if (memcmp(ip, c->addr, full) != 0) {
        return false;
    }
    if (rem) {
        uint8_t mask = (uint8_t)(0xFF << (8 - rem));
        return (ip[full] & mask) == (c->addr[full] & mask);
    }
    return true;
}

/* ---- building ---------------------------------------------------------------------------------- */

static void chain_free(struct msm_filter_chain *fc)
{
    if (!fc) {
        return;
    }
    msm_tls_factory_unref(fc->tls);
    for (int i = 0; i < fc->n; i++) {
        if (fc->f[i].ops && fc->f[i].config && fc->f[i].ops->config_free) {
            fc->f[i].ops->config_free(fc->f[i].config);
        }
        free(fc->f[i].name);
    }
    free(fc->f);
    struct msm_chain_match *m = &fc->match;
    free(m->prefix);
    free(m->dsrc);
    free(m->src);
    free(m->sports);
    for (int i = 0; i < m->n_server_names; i++) {
        free(m->server_names[i]);
    }
    free(m->server_names);
    for (int i = 0; i < m->n_alpn; i++) {
        free(m->alpn[i]);
    }
    free(m->alpn);
    free(m->transport_protocol);
    free(fc->name);
    free(fc);
}

int msm_cidrs_from_proto(struct Envoy__Config__Core__V3__CidrRange *const *v, size_t n,
                         struct msm_cidr **out, int *nout, const char *field,
                         struct msm_err *err)
{
    *out = n ? msm_xcalloc(n, sizeof(**out)) : NULL;
    *nout = (int)n;
    for (size_t i = 0; i < n; i++) {
        if (msm_cidr_parse(v[i]->address_prefix, msm_pb_u32(v[i]->prefix_len, 0), &(*out)[i],
                           err) < 0) {
            msm_err_prefix(err, "%s[%zu]", field, i);
            return MSM_EINVAL;
        }
    }
    return 0;
}

static char **strv(char **v, size_t n)
{
    char **o = n ? msm_xcalloc(n, sizeof(char *)) : NULL;
    for (size_t i = 0; i < n; i++) {
        o[i] = msm_xstrdup(v[i]);
    }
    return o;
}

static int match_from_proto(const Envoy__Config__Listener__V3__FilterChainMatch *p,
                            struct msm_chain_match *m, struct msm_err *err)
{
    if (!p) {
        return 0;
    }
    if (p->destination_port) {
        m->has_dport = true;
        m->dport = p->destination_port->value;
        if (m->dport < 1 || m->dport > 65535) {
            return msm_err_set(err, "destination_port: %u out of range", m->dport);
        }
    }
    if (msm_cidrs_from_proto(p->prefix_ranges, p->n_prefix_ranges, &m->prefix, &m->n_prefix,
                             "prefix_ranges", err) < 0 ||
        msm_cidrs_from_proto(p->direct_source_prefix_ranges, p->n_direct_source_prefix_ranges,
                             &m->dsrc, &m->n_dsrc, "direct_source_prefix_ranges", err) < 0 ||
        msm_cidrs_from_proto(p->source_prefix_ranges, p->n_source_prefix_ranges, &m->src,
                             &m->n_src, "source_prefix_ranges", err) < 0) {
        return MSM_EINVAL;
    }
    if (p->address_suffix[0] || p->suffix_len) {
        return msm_err_set(err, "address_suffix/suffix_len: not supported (Envoy ignores them "
                                "too; remove them)");
    }
    m->source_type = (int)p->source_type;
    if (p->n_source_ports) {
        m->sports = msm_xcalloc(p->n_source_ports, sizeof(uint32_t));
        memcpy(m->sports, p->source_ports, p->n_source_ports * sizeof(uint32_t));
        m->n_sports = (int)p->n_source_ports;
    }
    m->server_names = strv(p->server_names, p->n_server_names);
    m->n_server_names = (int)p->n_server_names;
    if (p->transport_protocol[0]) {
        m->transport_protocol = msm_xstrdup(p->transport_protocol);
    }
    m->alpn = strv(p->application_protocols, p->n_application_protocols);
    m->n_alpn = (int)p->n_application_protocols;
    return 0;
}

static int filter_from_proto(const Envoy__Config__Listener__V3__Filter *p,
                             const struct msm_build_opts *o, const char *listener,
                             struct msm_filter_factory *out, struct msm_err *err)
{
    out->name = msm_xstrdup(p->name);
    if (p->config_type_case == ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_CONFIG_DISCOVERY) {
        return msm_err_set(err, "config_discovery (ECDS) is not supported yet");
    }
    ProtobufCMessage *msg = NULL;
    const char *type = NULL;
    struct msm_pbjson_opts jo = {.allow_unknown_fields = o->allow_unknown_fields};
    if (p->config_type_case == ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG) {
        msg = msm_pb_any_unpack(p->typed_config, NULL, &jo, err);
        if (!msg) {
            msm_err_prefix(err, "typed_config");
            return MSM_EINVAL;
        }
        type = msg->descriptor->name;
    }
    bool known = false;
    const struct msm_network_filter_ops *ops = msm_network_filter_find(type, p->name, &known);
    if (!ops) {
        int rc = 0;
        if (!known && !type) {
            rc = msm_err_set(err, "unknown network filter '%s' (no typed_config)", p->name);
        } else if (!o->validate_only) {
            rc = msm_err_set(err, "network filter '%s' (%s) is not supported yet", p->name,
                             type ? type : "no typed_config");
        } else {
            msm_log(MSM_LOG_WARN, MSM_LC_CONFIG, "listener '%s': network filter '%s' (%s) is not "
                    "supported yet: serving this config will fail", listener, p->name, type);
        }
        if (msg) {
            protobuf_c_message_free_unpacked(msg, NULL);
        }
        return rc;
    }
    if (!msg) {
        const ProtobufCMessageDescriptor *d = msm_types_find(ops->config_type);
        if (!d) {
            return msm_err_set(err, "internal: config type %s not registered", ops->config_type);
        }
        msg = msm_xmalloc(d->sizeof_message);
        protobuf_c_message_init(d, msg);
    }
    struct msm_factory_ctx ctx = {.stats = o->stats, .listener_name = listener,
                                  .allow_unknown_fields = o->allow_unknown_fields,
                                  .traffic_direction = o->traffic_direction};
    int rc = ops->config_new(msg, &ctx, &out->config, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (rc < 0) {
        msm_err_prefix(err, "%s", ops->name);
        return rc;
    }
    out->ops = ops;
    return 0;
}

static struct msm_filter_chain *chain_from_proto(const Envoy__Config__Listener__V3__FilterChain *p,
                                                 const struct msm_build_opts *o,
                                                 const char *listener, const char *scope,
                                                 struct msm_err *err)
{
    struct msm_filter_chain *fc = MSM_NEW(struct msm_filter_chain);
    fc->name = msm_xstrdup(p->name);
    size_t sz = protobuf_c_message_get_packed_size(&p->base);
    uint8_t *buf = msm_xmalloc(sz + 1);
    protobuf_c_message_pack(&p->base, buf);
    fc->hash = XXH3_64bits(buf, sz);
    free(buf);
    if (match_from_proto(p->filter_chain_match, &fc->match, err) < 0) {
        msm_err_prefix(err, "filter_chain_match");
        goto fail;
    }
    if (p->transport_socket) {
        char owner[320];
        snprintf(owner, sizeof(owner), "listener '%s' filter chain '%s'", listener, p->name);
        if (msm_tls_factory_from_proto(p->transport_socket, true, scope, owner, &fc->tls,
                                       err) < 0) {
            goto fail;
        }
    }
    int64_t hs = msm_pb_duration_ms(p->transport_socket_connect_timeout,
                                    MSM_DEFAULT_HANDSHAKE_TIMEOUT_MS);
    if (hs < 0 || hs > UINT32_MAX) {
        msm_err_set(err, "transport_socket_connect_timeout: out of range");
        goto fail;
    }
    fc->transport_timeout_ms = (uint32_t)hs;
    if (!p->n_filters) {
        msm_err_set(err, "filters: a filter chain needs at least one network filter");
        goto fail;
    }
    fc->f = msm_xcalloc(p->n_filters, sizeof(*fc->f));
    for (size_t i = 0; i < p->n_filters; i++) {
        fc->n = (int)i + 1;
        if (filter_from_proto(p->filters[i], o, listener, &fc->f[i], err) < 0) {
            msm_err_prefix(err, "filters[%zu] '%s'", i, p->filters[i]->name);
            goto fail;
        }
        bool last = i + 1 == p->n_filters;
        if (fc->f[i].ops && fc->f[i].ops->terminal && !last) {
            msm_err_set(err, "filters[%zu]: terminal filter '%s' must be the last in its chain", i,
                        fc->f[i].ops->name);
            goto fail;
        }
        if (fc->f[i].ops && last && !fc->f[i].ops->terminal && !fc->f[i].ops->may_terminate) {
            msm_err_set(err, "filters[%zu]: the last filter '%s' is not a terminal filter", i,
                        fc->f[i].ops->name);
            goto fail;
        }
    }
    return fc;
fail:
    chain_free(fc);
    return NULL;
}

static void pred_free(struct msm_lf_pred *p);

struct msm_listener_cfg *msm_listener_cfg_ref(struct msm_listener_cfg *l)
{
    atomic_fetch_add(&l->refs, 1);
    return l;
}

void msm_listener_cfg_unref(struct msm_listener_cfg *l)
{
    if (!l || atomic_fetch_sub(&l->refs, 1) != 1) {
        return;
    }
    for (int i = 0; i < l->n_chains; i++) {
        chain_free(l->chains[i]);
    }
    free(l->chains);
    chain_free(l->default_chain);
    for (int i = 0; i < l->n_lfs; i++) {
        pred_free(l->lfs[i].disabled);
        free(l->lfs[i].disabled);
    }
    free(l->lfs);
    if (l->stat_prefix) {
        msm_listener_stats_deinit(&l->stats);
    }
    free(l->stat_prefix);
    free(l->name);
    free(l);
}

/* ---- listener filters ------------------------------------------------------------------------ */

static void pred_free(struct msm_lf_pred *p)
{
    for (int i = 0; p && i < p->n_sub; i++) {
        pred_free(&p->sub[i]);
    }
    if (p) {
        free(p->sub);
    }
}

static int pred_from_proto(const Envoy__Config__Listener__V3__ListenerFilterChainMatchPredicate *pp,
                           struct msm_lf_pred *out, int depth, struct msm_err *err)
{
    memset(out, 0, sizeof(*out));
    if (depth > 16) {
        return msm_err_set(err, "filter_disabled: nested too deeply");
    }
    const Envoy__Config__Listener__V3__ListenerFilterChainMatchPredicate__MatchSet *set = NULL;
    switch (pp->rule_case) {
    case ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER_CHAIN_MATCH_PREDICATE__RULE_ANY_MATCH:
        out->kind = MSM_LFP_ANY;
        return 0;
    case ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER_CHAIN_MATCH_PREDICATE__RULE_DESTINATION_PORT_RANGE:
        out->kind = MSM_LFP_DPORT;
        out->start = pp->destination_port_range->start;
        out->end = pp->destination_port_range->end;
        if (out->start > out->end) {
            return msm_err_set(err, "filter_disabled.destination_port_range: start > end");
        }
        return 0;
    case ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER_CHAIN_MATCH_PREDICATE__RULE_NOT_MATCH:
        out->kind = MSM_LFP_NOT;
        out->sub = msm_xcalloc(1, sizeof(*out->sub));
        out->n_sub = 1;
        return pred_from_proto(pp->not_match, out->sub, depth + 1, err);
    case ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER_CHAIN_MATCH_PREDICATE__RULE_OR_MATCH:
        out->kind = MSM_LFP_OR;
        set = pp->or_match;
        break;
    case ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER_CHAIN_MATCH_PREDICATE__RULE_AND_MATCH:
        out->kind = MSM_LFP_AND;
        set = pp->and_match;
        break;
    default:
        return msm_err_set(err, "filter_disabled: a rule is required");
    }
    if (set->n_rules < 2) {
        return msm_err_set(err, "filter_disabled: or_match/and_match need at least 2 rules");
    }
    out->sub = msm_xcalloc(set->n_rules, sizeof(*out->sub));
    out->n_sub = (int)set->n_rules;
    for (size_t i = 0; i < set->n_rules; i++) {
        if (pred_from_proto(set->rules[i], &out->sub[i], depth + 1, err) < 0) {
            return MSM_EINVAL;
        }
    }
    return 0;
}

static bool pred_eval(const struct msm_lf_pred *p, uint32_t dport)
{
    switch (p->kind) {
    case MSM_LFP_ANY:
        return true;
    case MSM_LFP_DPORT:
        return (int64_t)dport >= p->start && (int64_t)dport < p->end;
    case MSM_LFP_NOT:
        return !pred_eval(&p->sub[0], dport);
    case MSM_LFP_OR:
        for (int i = 0; i < p->n_sub; i++) {
            if (pred_eval(&p->sub[i], dport)) {
                return true;
            }
        }
        return false;
    case MSM_LFP_AND:
        for (int i = 0; i < p->n_sub; i++) {
            if (!pred_eval(&p->sub[i], dport)) {
                return false;
            }
        }
        return true;
    }
    return false;
}

bool msm_listener_filter_enabled(const struct msm_listener_filter *f, uint32_t dport)
{
    return !f->disabled || !pred_eval(f->disabled, dport);
}

static const struct {
    const char *name, *type;
    enum msm_lf_kind kind;
} listener_filter_types[] = {
    {"envoy.filters.listener.original_dst",
     "envoy.extensions.filters.listener.original_dst.v3.OriginalDst", MSM_LF_ORIGINAL_DST},
    {"envoy.filters.listener.tls_inspector",
     "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector", MSM_LF_TLS_INSPECTOR},
    {"envoy.filters.listener.http_inspector",
     "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector", MSM_LF_HTTP_INSPECTOR},
};

static int listener_filters_from_proto(const Envoy__Config__Listener__V3__Listener *p,
                                       struct msm_listener_cfg *l, const struct msm_build_opts *o,
                                       struct msm_err *err)
{
    l->lfs = msm_xcalloc(p->n_listener_filters + 1, sizeof(*l->lfs));
    for (size_t i = 0; i < p->n_listener_filters; i++) {
        const Envoy__Config__Listener__V3__ListenerFilter *f = p->listener_filters[i];
        const char *type = NULL;
        if (f->config_type_case ==
            ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_CONFIG_DISCOVERY) {
            return msm_err_set(err, "listener_filters[%zu] '%s': config_discovery is not supported",
                               i, f->name);
        }
        if (f->config_type_case ==
            ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG) {
            type = strrchr(f->typed_config->type_url, '/');
            type = type ? type + 1 : f->typed_config->type_url;
        }
        int found = -1;
        for (size_t k = 0; k < MSM_ARRAY_SIZE(listener_filter_types); k++) {
            if (type ? !strcmp(type, listener_filter_types[k].type)
                     : !strcmp(f->name, listener_filter_types[k].name)) {
                found = (int)k;
            }
        }
        if (found < 0) {
            if (o->validate_only && type && msm_types_find(type)) {
                msm_log(MSM_LOG_WARN, MSM_LC_CONFIG, "listener '%s': listener filter '%s' (%s) "
                        "is not supported yet: serving this config will fail", p->name, f->name,
                        type);
                continue;
            }
            return msm_err_set(err, "listener_filters[%zu] '%s' (%s): not supported", i, f->name,
                               type ? type : "no typed_config");
        }
        struct msm_listener_filter *lf = &l->lfs[l->n_lfs++];
        lf->kind = listener_filter_types[found].kind;
        if (f->filter_disabled) {
            lf->disabled = msm_xcalloc(1, sizeof(*lf->disabled));
            if (pred_from_proto(f->filter_disabled, lf->disabled, 0, err) < 0) {
                msm_err_prefix(err, "listener_filters[%zu] '%s'", i, f->name);
                return MSM_EINVAL;
            }
        }
    }
    int64_t t = msm_pb_duration_ms(p->listener_filters_timeout, 15000);
    if (t < 0 || t > UINT32_MAX) {
        return msm_err_set(err, "listener_filters_timeout: out of range");
    }
    l->lf_timeout_ms = (uint32_t)t;
    l->continue_on_lf_timeout = p->continue_on_listener_filters_timeout;
    return 0;
}

static void unsupported_listener_fields(const Envoy__Config__Listener__V3__Listener *p,
                                        const struct msm_build_opts *o, struct msm_err *err)
{
    if (p->udp_listener_config || (p->address && p->address->address_case ==
                                                     ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS &&
                                   p->address->socket_address->protocol ==
                                       ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__UDP)) {
        msm_err_set(err, "UDP listeners are not supported yet");
    } else if (p->api_listener) {
        msm_err_set(err, "api_listener is not supported");
    } else if (p->filter_chain_matcher) {
        msm_err_set(err, "filter_chain_matcher is not supported yet (use filter_chain_match)");
    } else if (p->n_additional_addresses) {
        msm_err_set(err, "additional_addresses: not supported yet");
    } else if (p->listener_specifier_case ==
               ENVOY__CONFIG__LISTENER__V3__LISTENER__LISTENER_SPECIFIER_INTERNAL_LISTENER) {
        msm_err_set(err, "internal_listener: not supported");
    }
}

struct msm_listener_cfg *msm_listener_cfg_from_proto(const void *proto,
                                                     const struct msm_build_opts *o,
                                                     struct msm_err *err)
{
    const Envoy__Config__Listener__V3__Listener *p = proto;
    struct msm_err e2 = {{0}};
    struct msm_listener_cfg *l = MSM_NEW(struct msm_listener_cfg);
    atomic_init(&l->refs, 1);
    l->name = msm_xstrdup(p->name);
    err->msg[0] = '\0';
    unsupported_listener_fields(p, o, err);
    if (err->msg[0]) {
        goto fail;
    }
    if (msm_pb_address(p->address, &l->addr, err) < 0) {
        msm_err_prefix(err, "address");
        goto fail;
    }
    if (listener_filters_from_proto(p, l, o, err) < 0) {
        goto fail;
    }
    if (!p->name[0]) {
        /* Envoy names unnamed static listeners after a UUID; the address is more useful. */
        free(l->name);
        char a[MSM_ADDRSTRLEN];
        msm_address_stat_name(&l->addr, a, sizeof(a));
        l->name = msm_xstrdup(a);
    }
    l->bind_to_port = msm_pb_bool(p->bind_to_port, true);
    l->use_original_dst = msm_pb_bool(p->use_original_dst, false);
    l->reuse_port = msm_pb_bool(p->enable_reuse_port, true);
    l->backlog = msm_pb_u32(p->tcp_backlog_size, 1024);
    l->buffer_limit = msm_pb_u32(p->per_connection_buffer_limit_bytes, DEFAULT_BUFFER_LIMIT);
    l->max_accept_per_event = msm_pb_u32(p->max_connections_to_accept_per_socket_event, 0);
    if (!p->n_filter_chains && !p->default_filter_chain) {
        msm_err_set(err, "filter_chains: a listener needs at least one filter chain");
        goto fail;
    }
    /* The stat scope first: TLS contexts of the chains count under it. */
    char a[MSM_ADDRSTRLEN];
    msm_address_stat_name(&l->addr, a, sizeof(a));
    l->stat_prefix = msm_xasprintf("listener.%s.", p->stat_prefix[0] ? p->stat_prefix : a);
    msm_listener_stats_init(o->stats, l->stat_prefix, &l->stats);
    l->chains = msm_xcalloc(p->n_filter_chains + 1, sizeof(*l->chains));
    for (size_t i = 0; i < p->n_filter_chains; i++) {
        l->chains[i] = chain_from_proto(p->filter_chains[i], o, l->name, l->stat_prefix, err);
        if (!l->chains[i]) {
            msm_err_prefix(err, "filter_chains[%zu]%s%s%s", i,
                           p->filter_chains[i]->name[0] ? " '" : "", p->filter_chains[i]->name,
                           p->filter_chains[i]->name[0] ? "'" : "");
            goto fail;
        }
        l->n_chains = (int)i + 1;
    }
    if (p->default_filter_chain) {
        l->default_chain = chain_from_proto(p->default_filter_chain, o, l->name, l->stat_prefix,
                                            err);
        if (!l->default_chain) {
            msm_err_prefix(err, "default_filter_chain");
            goto fail;
        }
    }
    size_t sz = protobuf_c_message_get_packed_size(&p->base);
    uint8_t *buf = msm_xmalloc(sz);
    protobuf_c_message_pack(&p->base, buf);
    l->hash = XXH3_64bits(buf, sz);
    free(buf);
    (void)e2;
    return l;
fail:
    msm_err_prefix(err, "listener '%s'", p->name);
    msm_listener_cfg_unref(l);
    return NULL;
}

/* ---- filter chain match -------------------------------------------------------------------------- */

/* Specificity of one criterion for one chain: 0 = no match, 1 = matches by being unset
 * (wildcard), larger = a more specific match. Envoy keeps only the chains with the highest
 * score at each step. */
static int score_cidr(const struct msm_cidr *v, int n, const struct msm_address *a)
{
    if (!n) {
        return 1;
    }
    int best = 0;
    for (int i = 0; i < n; i++) {
        if (a && msm_cidr_contains(&v[i], a)) {
            int s = 2 + (int)v[i].len;
            best = s > best ? s : best;
        }
    }
    return best;
}

static int score_sni(const struct msm_chain_match *m, const char *sni)
{
    if (!m->n_server_names) {
        return 1;
    }
    if (!sni || !*sni) {
        return 0;
    }
    int best = 0;
    size_t sl = strlen(sni);
    for (int i = 0; i < m->n_server_names; i++) {
        const char *n = m->server_names[i];
        if (!strcasecmp(n, sni)) {
            return 1000; /* exact beats any wildcard */
        }
        if (n[0] == '*' && n[1] == '.') {
            size_t nl = strlen(n + 1);
            if (sl > nl && !strcasecmp(sni + sl - nl, n + 1)) {
                int s = 2 + (int)nl; /* longer suffix is more specific */
                best = s > best ? s : best;
            }
        }
    }
    return best;
}

static bool is_local(const struct msm_address *remote, const struct msm_address *local)
{
    if (!remote) {
        return false;
    }
    if (remote->sa.ss_family == AF_UNIX) {
        return true;
    }
    if (remote->sa.ss_family == AF_INET) {
        uint32_t ip = ntohl(((const struct sockaddr_in *)&remote->sa)->sin_addr.s_addr);
        if ((ip >> 24) == 127) {
            return true;
        }
    } else if (remote->sa.ss_family == AF_INET6) {
        if (IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&remote->sa)->sin6_addr)) {
            return true;
        }
    }
    char a[MSM_ADDRSTRLEN], b[MSM_ADDRSTRLEN];
    msm_address_ip_str(remote, a, sizeof(a));
    msm_address_ip_str(local, b, sizeof(b));
    return !strcmp(a, b);
}

static int score(const struct msm_chain_match *m, int step, const struct msm_conn_meta *c)
{
    switch (step) {
    case 0:
        return !m->has_dport ? 1 : (c->local && msm_address_port(c->local) == m->dport) ? 2 : 0;
    case 1:
        return score_cidr(m->prefix, m->n_prefix, c->local);
    case 2:
        return score_sni(m, c->sni);
    case 3:
        return !m->transport_protocol ? 1
               : (c->transport && !strcmp(c->transport, m->transport_protocol)) ? 2
                                                                                 : 0;
    case 4:
        if (!m->n_alpn) {
            return 1;
        }
        for (int i = 0; i < m->n_alpn; i++) {
            for (int j = 0; j < c->n_alpn; j++) {
                if (!strcmp(m->alpn[i], c->alpn[j])) {
                    return 2;
                }
            }
        }
        return 0;
    case 5:
        return score_cidr(m->dsrc, m->n_dsrc, c->direct_remote);
    case 6: {
        if (m->source_type == 0) {
            return 1;
        }
        bool local = is_local(c->remote, c->local);
        return (m->source_type == 1) == local ? 2 : 0;
    }
    case 7:
        return score_cidr(m->src, m->n_src, c->remote);
    case 8:
        if (!m->n_sports) {
            return 1;
        }
        for (int i = 0; i < m->n_sports; i++) {
            if (c->remote && msm_address_port(c->remote) == m->sports[i]) {
                return 2;
            }
        }
        return 0;
    default:
        return 1;
    }
}

bool msm_listener_cfg_warm(const struct msm_listener_cfg *l)
{
    for (int i = 0; i <= l->n_chains; i++) {
        const struct msm_filter_chain *c = i < l->n_chains ? l->chains[i] : l->default_chain;
        if (c && c->tls && !msm_tls_factory_warm(c->tls)) {
            return false;
        }
    }
    return true;
}

const struct msm_filter_chain *msm_listener_chain_by_hash(const struct msm_listener_cfg *l,
                                                          uint64_t hash)
{
    for (int i = 0; i < l->n_chains; i++) {
        if (l->chains[i]->hash == hash) {
            return l->chains[i];
        }
    }
    if (l->default_chain && l->default_chain->hash == hash) {
        return l->default_chain;
    }
    return NULL;
}

const struct msm_filter_chain *msm_listener_match(const struct msm_listener_cfg *l,
                                                  const struct msm_conn_meta *c)
{
    if (!l->n_chains) {
        return l->default_chain;
    }
    /* Candidates: small fixed array for the common case. */
    const struct msm_filter_chain *stack[64];
    const struct msm_filter_chain **cand = stack;
    if (l->n_chains > (int)MSM_ARRAY_SIZE(stack)) {
        cand = msm_xcalloc((size_t)l->n_chains, sizeof(*cand));
    }
    int n = l->n_chains;
    for (int i = 0; i < n; i++) {
        cand[i] = l->chains[i];
    }
    for (int step = 0; step < 9 && n > 0; step++) {
        int best = 0, k = 0;
        for (int i = 0; i < n; i++) {
            int s = score(&cand[i]->match, step, c);
            best = s > best ? s : best;
        }
        if (best == 0) {
            n = 0;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (score(&cand[i]->match, step, c) == best) {
                cand[k++] = cand[i];
            }
        }
        n = k;
    }
    const struct msm_filter_chain *r = n > 0 ? cand[0] : l->default_chain;
    if (cand != stack) {
        free(cand);
    }
    return r;
}
