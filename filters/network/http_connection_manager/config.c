/* Config glue for envoy.filters.network.http_connection_manager: proto ->
 * struct msm_hcm_config. Main thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "config/pbutil.h"
#include "config/snapshot.h"
#include "config/types.h"
#include "filters/network/http_connection_manager/hcm.h"
#include "http/protocol_options.h"

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager PbHcm;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter PbHttpFilter;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__UpgradeConfig
    PbUpgrade;

#define DEFAULT_STREAM_IDLE_MS (5 * 60 * 1000)
#define DEFAULT_IDLE_MS (3600 * 1000)
#define DEFAULT_DRAIN_MS 5000
#define DEFAULT_DELAYED_CLOSE_MS 1000
#define DEFAULT_BUFFER_LIMIT (1024 * 1024)

/* The dependency the listener manager reads (see network.h rds_dep). */
struct hcm_cfg_priv {
    struct msm_hcm_config c;
    struct msm_filter_rds_dep dep;
};

static void chain_free(struct msm_hcm_filter *f, int n)
{
    for (int i = 0; i < n; i++) {
        if (f[i].ops && f[i].config && f[i].ops->config_free) {
            f[i].ops->config_free(f[i].config);
        }
        free(f[i].name);
    }
    free(f);
}

static void config_free(void *p)
{
    struct hcm_cfg_priv *pv = p;
    if (!pv) {
        return;
    }
    struct msm_hcm_config *c = &pv->c;
    chain_free(c->filters, c->n_filters);
    msm_route_config_unref(c->route_config);
    free(c->rds_name);
    free(c->internal);
    free(c->rds_source);
    free(c->rds_stat_prefix);
    if (c->stat_prefix) {
        msm_hcm_stats_deinit(&c->stats);
        msm_http1_stats_deinit(&c->h1stats);
        msm_http2_stats_deinit(&c->h2stats);
    }
    msm_access_logs_deinit(&c->logs);
    free(c->stat_prefix);
    free(c->server_name);
    free(c->via);
    free((char *)c->h1opts.default_host_for_http_10);
    for (int i = 0; i < c->n_upgrades; i++) {
        free(c->upgrades[i].type);
        chain_free(c->upgrades[i].filters, c->upgrades[i].n_filters);
    }
    free(c->upgrades);
    free(pv);
}

static int ms(const Google__Protobuf__Duration *d, int64_t dflt, const char *field, uint32_t *out,
              struct msm_err *err)
{
    if (d && (d->seconds < 0 || d->nanos < 0)) {
        return msm_err_set(err, "%s: must not be negative", field);
    }
    int64_t v = msm_pb_duration_ms(d, dflt);
    *out = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    return 0;
}

/* One entry of http_filters[]: an implemented filter, an accepted no-op, an optional filter we
 * skip, or a NACK. <last> is whether it is the last entry (the terminal filter's place). */
static int http_filter_from_proto(const PbHttpFilter *p, struct msm_http_factory_ctx *fctx,
                                  bool last, struct msm_hcm_filter *out, bool *skip,
                                  struct msm_err *err)
{
    *skip = false;
    out->name = msm_xstrdup(p->name);
    if (!p->name[0]) {
        return msm_err_set(err, "name: must not be empty");
    }
    if (p->config_type_case ==
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_CONFIG_DISCOVERY) {
        return msm_err_set(err, "config_discovery (ECDS) is not supported yet");
    }
    /* Disabled by default: built all the same, it runs where a route's typed_per_filter_config
     * enables it (hcm_stream.c). */
    out->disabled = p->disabled;
    if (p->disabled && last) {
        return msm_err_set(err, "the last (terminal) filter cannot be disabled by default");
    }
    ProtobufCMessage *msg = NULL;
    const char *type = NULL;
    struct msm_pbjson_opts jo = {.allow_unknown_fields = fctx->allow_unknown_fields};
    if (p->config_type_case ==
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG) {
        msg = msm_pb_any_unpack(p->typed_config, NULL, &jo, err);
        if (!msg) {
            if (p->is_optional) {
                *skip = true;
                return 0;
            }
            msm_err_prefix(err, "typed_config");
            return MSM_EINVAL;
        }
        type = msg->descriptor->name;
    }
    if (type && !strcmp(type, "envoy.extensions.filters.http.wasm.v3.Wasm")) {
        /* Istio's null-VM plugins become the native filters (http_registry.c). */
        ProtobufCMessage *native = NULL;
        const struct msm_http_filter_ops *wops =
            msm_http_filter_wasm(msg, fctx->traffic_direction, &native, err);
        protobuf_c_message_free_unpacked(msg, NULL);
        msg = native;
        if (!wops) {
            if (p->is_optional) {
                *skip = true;
                return 0;
            }
            msm_err_prefix(err, "typed_config");
            return MSM_EINVAL;
        }
        type = msg->descriptor->name;
    }
    bool known = false;
    const struct msm_http_filter_ops *ops = msm_http_filter_find(type, p->name, &known);
    if (ops && !ops->config_new) {
        ops = NULL; /* registered but not implemented yet */
    }
    int rc = 0;
    if (!ops) {
        const char *why = type ? msm_http_filter_noop_reason(type) : NULL;
        if (why) {
            msm_log(MSM_LOG_DEBUG, MSM_LC_HTTP, "http filter '%s': accepted as a no-op (%s)",
                    p->name, why);
        } else if (p->is_optional) {
            msm_log(MSM_LOG_INFO, MSM_LC_HTTP, "optional http filter '%s' (%s) is not supported; "
                    "skipped", p->name, type ? type : "no typed_config");
            *skip = true;
        } else if (!known && !type) {
            rc = msm_err_set(err, "unknown http filter '%s' (no typed_config)", p->name);
        } else {
            rc = msm_err_set(err, "http filter '%s' (%s) is not supported yet", p->name,
                             type ? type : "no typed_config");
        }
    } else {
        if (!msg) {
            const ProtobufCMessageDescriptor *d = msm_types_find(ops->config_type);
            msg = d ? msm_xmalloc(d->sizeof_message) : NULL;
            if (msg) {
                protobuf_c_message_init(d, msg);
            }
        }
        fctx->filter_name = p->name;
        rc = msg ? ops->config_new(msg, fctx, &out->config, err)
                 : msm_err_set(err, "internal: config type %s not registered", ops->config_type);
        if (rc == 0) {
            out->ops = ops;
        }
        if (rc == 0 && ops->terminal && !last) {
            rc = msm_err_set(err, "terminal filter '%s' must be the last http filter", p->name);
        }
    }
    if (msg) {
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    return rc;
}

/* A filter chain: http_filters[], or an upgrade's own (upgrade_configs[].filters, built the
 * same way, Envoy's FilterChainHelper). <field> names the list in error messages. The entries
 * made so far stay in *<out> on failure (the caller frees them). */
static int chain_from_proto(PbHttpFilter *const *list, size_t n, const char *field,
                            struct msm_factory_ctx *ctx, const struct msm_hcm_config *c,
                            struct msm_hcm_filter **out, int *n_out, struct msm_err *err)
{
    struct msm_http_factory_ctx fctx = {.stats = ctx->stats, .stat_prefix = c->stat_prefix,
                                        .allow_unknown_fields = ctx->allow_unknown_fields,
                                        .traffic_direction = ctx->traffic_direction};
    *out = msm_xcalloc(n + 1, sizeof(**out));
    for (size_t i = 0; i < n; i++) {
        bool skip;
        struct msm_hcm_filter *f = &(*out)[*n_out];
        int rc = http_filter_from_proto(list[i], &fctx, i + 1 == n, f, &skip, err);
        if (rc < 0) {
            (*n_out)++;
            msm_err_prefix(err, "%s[%zu] '%s'", field, i, list[i]->name);
            return MSM_EINVAL;
        }
        if (skip) {
            free(f->name);
            memset(f, 0, sizeof(*f));
            continue;
        }
        (*n_out)++;
    }
    if (!*n_out || !(*out)[*n_out - 1].ops || !(*out)[*n_out - 1].ops->terminal) {
        return msm_err_set(err, "%s: the last http filter must be a terminal filter "
                                "(envoy.filters.http.router)", field);
    }
    return 0;
}

static int filters_from_proto(const PbHcm *p, struct msm_factory_ctx *ctx,
                              struct msm_hcm_config *c, struct msm_err *err)
{
    return chain_from_proto(p->http_filters, p->n_http_filters, "http_filters", ctx, c,
                            &c->filters, &c->n_filters, err);
}

static int codec_from_proto(const PbHcm *p, struct msm_hcm_config *c, struct msm_err *err)
{
    switch (p->codec_type) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__AUTO:
        c->codec_type = MSM_HCM_AUTO;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP1:
        c->codec_type = MSM_HCM_HTTP1;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2:
        c->codec_type = MSM_HCM_HTTP2;
        break;
    default:
        return msm_err_set(err, "codec_type: HTTP/3 is not supported");
    }
    msm_hcodec_opts_default(&c->h1opts);
    msm_hcodec_opts_default(&c->h2opts);
    c->h2opts.max_concurrent_streams = 2147483647;
    uint32_t kb = msm_pb_u32(p->max_request_headers_kb, 60);
    if (kb < 1 || kb > 8192) {
        return msm_err_set(err, "max_request_headers_kb: must be in [1, 8192]");
    }
    c->h1opts.max_headers_kb = c->h2opts.max_headers_kb = kb;
    if (msm_h1_options_from_proto(p->http_protocol_options, &c->h1opts, true, err) < 0) {
        return MSM_EINVAL;
    }
    const Envoy__Config__Core__V3__Http2ProtocolOptions *h2p = p->http2_protocol_options;
    if (msm_h2_options_from_proto(h2p, &c->h2opts, err) < 0) {
        return MSM_EINVAL;
    }
    /* Envoy's precedence: the HTTP/2 override, else the HCM's field, else the deprecated
     * HTTP/2 field; default false (an invalid request ends the connection). HTTP/1 always ends
     * the connection after its 400. */
    if (!(h2p && h2p->override_stream_error_on_invalid_http_message) &&
        p->stream_error_on_invalid_http_message) {
        c->h2opts.stream_error_on_invalid_messaging = p->stream_error_on_invalid_http_message->value;
    }
    if (p->http3_protocol_options) {
        return msm_err_set(err, "http3_protocol_options: HTTP/3 is not supported");
    }
    const Envoy__Config__Core__V3__HttpProtocolOptions *cp = p->common_http_protocol_options;
    if (ms(cp ? cp->idle_timeout : NULL, DEFAULT_IDLE_MS, "common_http_protocol_options."
           "idle_timeout", &c->idle_timeout_ms, err) < 0 ||
        ms(cp ? cp->max_connection_duration : NULL, 0, "common_http_protocol_options."
           "max_connection_duration", &c->max_connection_duration_ms, err) < 0 ||
        ms(cp ? cp->max_stream_duration : NULL, 0, "common_http_protocol_options."
           "max_stream_duration", &c->max_stream_duration_ms, err) < 0) {
        return MSM_EINVAL;
    }
    if (cp) {
        uint32_t mh = msm_pb_u32(cp->max_headers_count, 100);
        c->h1opts.max_headers_count = c->h2opts.max_headers_count = mh;
        c->max_requests_per_connection = msm_pb_u32(cp->max_requests_per_connection, 0);
        switch (cp->headers_with_underscores_action) {
        case ENVOY__CONFIG__CORE__V3__HTTP_PROTOCOL_OPTIONS__HEADERS_WITH_UNDERSCORES_ACTION__ALLOW:
            break;
        case ENVOY__CONFIG__CORE__V3__HTTP_PROTOCOL_OPTIONS__HEADERS_WITH_UNDERSCORES_ACTION__REJECT_REQUEST:
            c->h1opts.underscores = c->h2opts.underscores = MSM_UNDERSCORES_REJECT;
            break;
        case ENVOY__CONFIG__CORE__V3__HTTP_PROTOCOL_OPTIONS__HEADERS_WITH_UNDERSCORES_ACTION__DROP_HEADER:
            c->h1opts.underscores = c->h2opts.underscores = MSM_UNDERSCORES_DROP;
            break;
        default:
            return msm_err_set(err, "common_http_protocol_options.headers_with_underscores_action: "
                                    "unknown value %d", (int)cp->headers_with_underscores_action);
        }
    }
    return 0;
}

static int routes_from_proto(const PbHcm *p, struct msm_factory_ctx *ctx, struct msm_hcm_config *c,
                             struct msm_err *err)
{
    switch (p->route_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG: {
        const char *names[64];
        const struct msm_http_filter_ops *ops[64];
        int n = c->n_filters < 64 ? c->n_filters : 64;
        for (int i = 0; i < n; i++) {
            names[i] = c->filters[i].name;
            ops[i] = c->filters[i].ops;
        }
        struct msm_route_build_ctx rb = {.filter_names = names, .filter_ops = ops,
                                         .n_filters = n};
        c->route_config = msm_route_config_new(p->route_config, &rb, err);
        if (!c->route_config) {
            msm_err_prefix(err, "route_config");
            return MSM_EINVAL;
        }
        return 0;
    }
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS: {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *r = p->rds;
        if (!r->route_config_name[0]) {
            return msm_err_set(err, "rds.route_config_name: must not be empty");
        }
        if (!r->config_source) {
            return msm_err_set(err, "rds.config_source: required");
        }
        c->rds_name = msm_xstrdup(r->route_config_name);
        c->rds_source_len = protobuf_c_message_get_packed_size(&r->config_source->base);
        c->rds_source = msm_xmalloc(c->rds_source_len + 1);
        protobuf_c_message_pack(&r->config_source->base, c->rds_source);
        c->rds_stat_prefix = msm_xasprintf("%srds.%s.", c->stat_prefix, r->route_config_name);
        (void)ctx;
        return 0;
    }
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_SCOPED_ROUTES:
        return msm_err_set(err, "scoped_routes: not supported");
    default:
        return msm_err_set(err, "route_specifier: one of rds or route_config is required");
    }
}

static int headers_from_proto(const PbHcm *p, struct msm_hcm_config *c, struct msm_err *err)
{
    c->use_remote_address = msm_pb_bool(p->use_remote_address, false);
    if (p->internal_address_config) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__InternalAddressConfig
            *ia = p->internal_address_config;
        c->has_internal = true;
        c->internal_unix = ia->unix_sockets;
        if (msm_cidrs_from_proto(ia->cidr_ranges, ia->n_cidr_ranges, &c->internal,
                                 &c->n_internal, "internal_address_config.cidr_ranges",
                                 err) < 0) {
            return MSM_EINVAL;
        }
    }
    c->xff_num_trusted_hops = p->xff_num_trusted_hops;
    c->skip_xff_append = p->skip_xff_append;
    c->generate_request_id = msm_pb_bool(p->generate_request_id, true);
    c->preserve_external_request_id = p->preserve_external_request_id;
    c->always_set_request_id_in_response = p->always_set_request_id_in_response;
    c->server_name = msm_xstrdup(p->server_name[0] ? p->server_name : "envoy");
    c->server_name_len = strlen(c->server_name);
    c->server_header_transformation = (int)p->server_header_transformation;
    int fcc = (int)p->forward_client_cert_details;
    if (fcc < MSM_FCC_SANITIZE || fcc > MSM_FCC_ALWAYS_FORWARD_ONLY) {
        return msm_err_set(err, "forward_client_cert_details: unknown value %d", fcc);
    }
    c->fcc = (enum msm_hcm_fcc)fcc;
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__SetCurrentClientCertDetails
        *cd = p->set_current_client_cert_details;
    if (cd) {
        c->xfcc_details = (cd->cert ? MSM_XFCC_CERT : 0u) | (cd->chain ? MSM_XFCC_CHAIN : 0u) |
                          (msm_pb_bool(cd->subject, false) ? MSM_XFCC_SUBJECT : 0u) |
                          (cd->uri ? MSM_XFCC_URI : 0u) | (cd->dns ? MSM_XFCC_DNS : 0u);
    }
    c->via = p->via[0] ? msm_xstrdup(p->via) : NULL;
    c->proxy_100_continue = p->proxy_100_continue;
    c->normalize_path = msm_pb_bool(p->normalize_path, false);
    c->merge_slashes = p->merge_slashes;
    c->escaped_slashes_action = (int)p->path_with_escaped_slashes_action;
    c->strip_matching_host_port = p->strip_matching_host_port;
    c->strip_any_host_port =
        p->strip_port_mode_case ==
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__STRIP_PORT_MODE_STRIP_ANY_HOST_PORT &&
        p->strip_any_host_port;
    c->strip_trailing_host_dot = p->strip_trailing_host_dot;
    c->append_x_forwarded_port = p->append_x_forwarded_port;
    if (p->n_original_ip_detection_extensions) {
        return msm_err_set(err, "original_ip_detection_extensions: not supported");
    }
    if (p->n_early_header_mutation_extensions) {
        return msm_err_set(err, "early_header_mutation_extensions: not supported");
    }
    if (p->local_reply_config) {
        return msm_err_set(err, "local_reply_config: not supported yet");
    }
    if (p->path_normalization_options) {
        return msm_err_set(err, "path_normalization_options: not supported");
    }
    if (p->typed_header_validation_config) {
        return msm_err_set(err, "typed_header_validation_config: not supported");
    }
    if (p->request_id_extension && p->request_id_extension->typed_config &&
        !strstr(p->request_id_extension->typed_config->type_url,
                "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig")) {
        return msm_err_set(err, "request_id_extension: only the UUID extension is supported");
    }
    return 0;
}

/* upgrade_configs: the types this connection manager turns into tunnels (hcm_upgrade.c), each
 * with its own filter chain when filters[] is not empty. */
static int upgrades_from_proto(const PbHcm *p, struct msm_factory_ctx *ctx,
                               struct msm_hcm_config *c, struct msm_err *err)
{
    if (!p->n_upgrade_configs) {
        return 0;
    }
    c->upgrades = msm_xcalloc(p->n_upgrade_configs, sizeof(*c->upgrades));
    for (size_t i = 0; i < p->n_upgrade_configs; i++) {
        const PbUpgrade *u = p->upgrade_configs[i];
        if (!u->upgrade_type || !u->upgrade_type[0]) {
            return msm_err_set(err, "upgrade_configs[%zu].upgrade_type: must not be empty", i);
        }
        for (int k = 0; k < c->n_upgrades; k++) {
            if (!strcasecmp(c->upgrades[k].type, u->upgrade_type)) {
                return msm_err_set(err, "upgrade_configs[%zu]: duplicate upgrade %s", i,
                                   u->upgrade_type);
            }
        }
        struct msm_hcm_upgrade *up = &c->upgrades[c->n_upgrades++];
        up->type = msm_xstrdup(u->upgrade_type);
        up->enabled = msm_pb_bool(u->enabled, true);
        if (u->n_filters) {
            char field[48];
            snprintf(field, sizeof(field), "upgrade_configs[%zu].filters", i);
            if (chain_from_proto(u->filters, u->n_filters, field, ctx, c, &up->filters,
                                 &up->n_filters, err) < 0) {
                return MSM_EINVAL;
            }
        }
    }
    return 0;
}

/* Fields that change what reaches upstreams, what is trusted or what is logged, and that this
 * proxy does not implement: refused with their names rather than ignored. (tracing is left
 * aside: there is no tracer, and istiod sets it on every HCM.) */
static int refuse_unimplemented(const PbHcm *p, struct msm_err *err)
{
    if (p->n_original_ip_detection_extensions) {
        return msm_err_set(err, "original_ip_detection_extensions: not supported (use "
                                "use_remote_address / xff_num_trusted_hops)");
    }
    if (p->n_early_header_mutation_extensions) {
        return msm_err_set(err, "early_header_mutation_extensions: not supported");
    }
    if (p->scheme_header_transformation &&
        p->scheme_header_transformation->transformation_case !=
            ENVOY__CONFIG__CORE__V3__SCHEME_HEADER_TRANSFORMATION__TRANSFORMATION__NOT_SET) {
        return msm_err_set(err, "scheme_header_transformation: not supported");
    }
    if (p->scheme_header_transformation && p->scheme_header_transformation->match_upstream) {
        return msm_err_set(err, "scheme_header_transformation.match_upstream: not supported");
    }
    if (p->add_user_agent && p->add_user_agent->value) {
        return msm_err_set(err, "add_user_agent: not supported");
    }
    if (p->represent_ipv4_remote_address_as_ipv4_mapped_ipv6) {
        return msm_err_set(err, "represent_ipv4_remote_address_as_ipv4_mapped_ipv6: not "
                                "supported");
    }
    if (p->proxy_status_config) {
        return msm_err_set(err, "proxy_status_config: not supported");
    }
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__HcmAccessLogOptions
        *al = p->access_log_options;
    if (al && (al->access_log_flush_interval || al->flush_access_log_on_new_request ||
               al->flush_log_on_tunnel_successfully_established)) {
        return msm_err_set(err, "access_log_options: periodic and early access log entries are "
                                "not supported (one entry per stream, at its end)");
    }
    return 0;
}

static int config_new(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx, void **out,
                      struct msm_err *err)
{
    const PbHcm *p = (const void *)msg;
    struct hcm_cfg_priv *pv = MSM_NEW(struct hcm_cfg_priv);
    struct msm_hcm_config *c = &pv->c;
    if (!p->stat_prefix[0]) {
        msm_err_set(err, "stat_prefix: must not be empty");
        goto fail;
    }
    c->stat_prefix = msm_xasprintf("http.%s.", p->stat_prefix);
    msm_hcm_stats_init(ctx->stats, c->stat_prefix, &c->stats);
    msm_http1_stats_init(ctx->stats, "http1.", &c->h1stats);
    msm_http2_stats_init(ctx->stats, "http2.", &c->h2stats);
    c->buffer_limit = DEFAULT_BUFFER_LIMIT;
    if (codec_from_proto(p, c, err) < 0) {
        goto fail;
    }
    c->h2opts.h2stats = &c->h2stats;
    c->h1opts.h1stats = &c->h1stats;
    if (refuse_unimplemented(p, err) < 0 || headers_from_proto(p, c, err) < 0 ||
        filters_from_proto(p, ctx, c, err) < 0 || routes_from_proto(p, ctx, c, err) < 0 ||
        upgrades_from_proto(p, ctx, c, err) < 0) {
        goto fail;
    }
    if (ms(p->stream_idle_timeout, DEFAULT_STREAM_IDLE_MS, "stream_idle_timeout",
           &c->stream_idle_timeout_ms, err) < 0 ||
        ms(p->request_timeout, 0, "request_timeout", &c->request_timeout_ms, err) < 0 ||
        ms(p->request_headers_timeout, 0, "request_headers_timeout",
           &c->request_headers_timeout_ms, err) < 0 ||
        ms(p->drain_timeout, DEFAULT_DRAIN_MS, "drain_timeout", &c->drain_timeout_ms, err) < 0 ||
        ms(p->delayed_close_timeout, DEFAULT_DELAYED_CLOSE_MS, "delayed_close_timeout",
           &c->delayed_close_timeout_ms, err) < 0) {
        goto fail;
    }
    if (c->request_headers_timeout_ms) {
        msm_err_set(err, "request_headers_timeout: not supported yet");
        goto fail;
    }
    if (msm_access_logs_build((void *const *)p->access_log, p->n_access_log, &c->logs,
                              err) < 0) {
        goto fail;
    }
    /* tracing: spans are not produced yet; the config only names tags and sampling. */
    if (c->rds_name) {
        pv->dep.name = c->rds_name;
        pv->dep.stat_prefix = c->rds_stat_prefix;
        pv->dep.config_source = c->rds_source;
        pv->dep.config_source_len = c->rds_source_len;
    }
    *out = pv;
    return 0;
fail:
    config_free(pv);
    return MSM_EINVAL;
}

static const struct msm_filter_rds_dep *rds_dep(const void *config)
{
    const struct hcm_cfg_priv *pv = config;
    return pv->dep.name ? &pv->dep : NULL;
}

struct msm_route_config *msm_hcm_route_config(const struct msm_hcm_config *cfg,
                                              const struct msm_snapshot *snap)
{
    if (cfg->route_config) {
        return cfg->route_config;
    }
    return snap && cfg->rds_name ? msm_snapshot_route(snap, cfg->rds_name) : NULL;
}

const struct msm_network_filter_ops msm_hcm_ops = {
    .name = "envoy.filters.network.http_connection_manager",
    .config_type = "envoy.extensions.filters.network.http_connection_manager.v3."
                   "HttpConnectionManager",
    .terminal = true,
    .config_new = config_new,
    .config_free = config_free,
    .filter_new = msm_hcm_filter_new,
    .on_new_connection = msm_hcm_on_new_connection,
    .on_data = msm_hcm_on_data,
    .on_event = msm_hcm_on_event,
    .on_watermark = msm_hcm_on_watermark,
    .filter_free = msm_hcm_filter_free,
    .rds_dep = rds_dep,
};
