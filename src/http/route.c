/* RouteConfiguration proto -> struct msm_route_config (see route.h). Main thread.
 *
 * Every field is either implemented, accepted because it has no effect here (stats-only
 * virtual_clusters, rate_limits without a rate-limit filter, decorator), or rejected with its
 * path. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "config/pbutil.h"
#include "config/types.h"
#include "filter/http.h"
#include "http/route.h"

/* Deprecated fields are still sent by control planes (Istio's older releases among them) and
 * keep their meaning: reading them is deliberate. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define DEFAULT_ROUTE_TIMEOUT_MS 15000
#define DEFAULT_MAX_DIRECT_BODY 4096
#define MAX_DOMAINS_PER_CONFIG 100000

typedef Envoy__Config__Route__V3__RouteConfiguration PbRouteConfig;
typedef Envoy__Config__Route__V3__VirtualHost PbVhost;
typedef Envoy__Config__Route__V3__Route PbRoute;
typedef Envoy__Config__Route__V3__RouteMatch PbMatch;
typedef Envoy__Config__Route__V3__RouteAction PbAction;
typedef Envoy__Config__Route__V3__RetryPolicy PbRetry;
typedef Envoy__Config__Core__V3__HeaderValueOption PbHvo;
typedef Envoy__Type__Matcher__V3__StringMatcher PbStringMatcher;

/* ---- string and header matchers --------------------------------------------------------------- */

int msm_header_match_from_proto(const void *proto, struct msm_header_match *out,
                                struct msm_err *err)
{
    const Envoy__Config__Route__V3__HeaderMatcher *p = proto;
    memset(out, 0, sizeof(*out));
    if (!p->name[0]) {
        return msm_err_set(err, "name: must not be empty");
    }
    out->name = msm_xstrdup(p->name);
    for (char *c = out->name; *c; c++) {
        *c = (char)tolower((unsigned char)*c);
    }
    out->invert = p->invert_match;
    out->missing_as_empty = p->treat_missing_header_as_empty;
    switch (p->header_match_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH:
        msm_str_matcher_literal(&out->sm, MSM_STR_EXACT, p->exact_match, false);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PREFIX_MATCH:
        msm_str_matcher_literal(&out->sm, MSM_STR_PREFIX, p->prefix_match, false);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SUFFIX_MATCH:
        msm_str_matcher_literal(&out->sm, MSM_STR_SUFFIX, p->suffix_match, false);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_CONTAINS_MATCH:
        msm_str_matcher_literal(&out->sm, MSM_STR_CONTAINS, p->contains_match, false);
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH:
        if (!p->safe_regex_match) {
            return msm_err_set(err, "safe_regex_match: a regex is required");
        }
        if (msm_str_matcher_regex(&out->sm, p->safe_regex_match->regex, err) < 0) {
            msm_err_prefix(err, "safe_regex_match");
            return MSM_EINVAL;
        }
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_RANGE_MATCH:
        out->kind = MSM_HM_RANGE;
        out->start = p->range_match->start;
        out->end = p->range_match->end;
        if (out->start >= out->end) {
            return msm_err_set(err, "range_match: start must be below end");
        }
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
        out->kind = MSM_HM_PRESENT;
        out->present = p->present_match;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH:
        if (msm_str_matcher_from_proto(p->string_match, &out->sm, err) < 0) {
            msm_err_prefix(err, "string_match");
            return MSM_EINVAL;
        }
        return 0;
    default:
        /* No specifier: the header must be present (Envoy's legacy semantics). */
        out->kind = MSM_HM_PRESENT;
        out->present = true;
        return 0;
    }
}

void msm_header_match_deinit(struct msm_header_match *m)
{
    free(m->name);
    msm_str_matcher_deinit(&m->sm);
    memset(m, 0, sizeof(*m));
}

/* ---- header operations -------------------------------------------------------------------------- */

static const struct {
    const char *name;
    enum msm_hv_var var;
} hv_vars[] = {
    {"DOWNSTREAM_REMOTE_ADDRESS", MSM_HV_DOWNSTREAM_REMOTE_ADDRESS},
    {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", MSM_HV_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT},
    {"DOWNSTREAM_LOCAL_ADDRESS", MSM_HV_DOWNSTREAM_LOCAL_ADDRESS},
    {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", MSM_HV_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT},
    {"DOWNSTREAM_LOCAL_PORT", MSM_HV_DOWNSTREAM_LOCAL_PORT},
    {"UPSTREAM_REMOTE_ADDRESS", MSM_HV_UPSTREAM_REMOTE_ADDRESS},
    {"PROTOCOL", MSM_HV_PROTOCOL},
    {"HOSTNAME", MSM_HV_HOSTNAME},
    {"START_TIME", MSM_HV_START_TIME},
};

static void add_part(struct msm_header_op *op, enum msm_hv_var var, const char *s, size_t n)
{
    op->parts = msm_xrealloc(op->parts, (size_t)(op->n_parts + 1) * sizeof(*op->parts));
    struct msm_hv_part *p = &op->parts[op->n_parts++];
    p->var = var;
    p->text = var == MSM_HV_LITERAL ? msm_xstrndup(s, n) : NULL;
}

/* Split a header value into literal text and %VARIABLE% parts ("%%" is a literal %). */
static int parse_value(struct msm_header_op *op, const char *v, struct msm_err *err)
{
    const char *lit = v;
    char buf[4096];
    size_t bl = 0;
    for (const char *p = v; *p;) {
        if (*p != '%') {
            if (bl < sizeof(buf)) {
                buf[bl++] = *p;
            }
            p++;
            continue;
        }
        if (p[1] == '%') {
            if (bl < sizeof(buf)) {
                buf[bl++] = '%';
            }
            p += 2;
            continue;
        }
        const char *e = strchr(p + 1, '%');
        if (!e) {
            return msm_err_set(err, "value '%s': unterminated %% variable", lit);
        }
        size_t n = (size_t)(e - p - 1);
        int found = -1;
        for (size_t i = 0; i < MSM_ARRAY_SIZE(hv_vars); i++) {
            if (strlen(hv_vars[i].name) == n && !strncmp(hv_vars[i].name, p + 1, n)) {
                found = (int)i;
            }
        }
        if (found < 0) {
            return msm_err_set(err, "value '%s': header formatter %%%.*s%% is not supported", lit,
                               (int)n, p + 1);
        }
        if (bl) {
            add_part(op, MSM_HV_LITERAL, buf, bl);
            bl = 0;
        }
        add_part(op, hv_vars[found].var, NULL, 0);
        p = e + 1;
    }
    if (bl || !op->n_parts) {
        add_part(op, MSM_HV_LITERAL, buf, bl);
    }
    return 0;
}

static void header_ops_free(struct msm_header_ops *o)
{
    for (int i = 0; i < o->n_add; i++) {
        free(o->add[i].name);
        for (int k = 0; k < o->add[i].n_parts; k++) {
            free(o->add[i].parts[k].text);
        }
        free(o->add[i].parts);
    }
    free(o->add);
    for (int i = 0; i < o->n_remove; i++) {
        free(o->remove[i]);
    }
    free(o->remove);
    memset(o, 0, sizeof(*o));
}

static bool lower_name_ok(const char *n)
{
    if (!n[0]) {
        return false;
    }
    return msm_http_is_token(n[0] == ':' ? n + 1 : n, strlen(n[0] == ':' ? n + 1 : n));
}

/* Header names a route may not touch (Envoy: pseudo-headers and Host are off limits for
 * removal; adding them is limited to :authority / host rewriting elsewhere). */
static int header_ops_from_proto(PbHvo **add, size_t n_add, char **rm, size_t n_rm,
                                 const char *what, struct msm_header_ops *o, struct msm_err *err)
{
    o->add = n_add ? msm_xcalloc(n_add, sizeof(*o->add)) : NULL;
    for (size_t i = 0; i < n_add; i++) {
        const PbHvo *h = add[i];
        struct msm_header_op *op = &o->add[o->n_add++];
        if (!h->header || !lower_name_ok(h->header->key)) {
            return msm_err_set(err, "%s_headers_to_add[%zu].header.key: invalid header name", what,
                               i);
        }
        op->name = msm_xstrdup(h->header->key);
        for (char *c = op->name; *c; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
        if (op->name[0] == ':' || !strcmp(op->name, "host")) {
            return msm_err_set(err, "%s_headers_to_add[%zu]: ':'-prefixed or host headers may "
                                    "not be modified", what, i);
        }
        const char *val = h->header->value;
        char *raw = NULL;
        if (h->header->raw_value.len) {
            raw = msm_xstrndup((const char *)h->header->raw_value.data, h->header->raw_value.len);
            val = raw;
        }
        if (!msm_http_valid_value(val, strlen(val))) {
            free(raw);
            return msm_err_set(err, "%s_headers_to_add[%zu].header.value: invalid characters",
                               what, i);
        }
        int rc = parse_value(op, val, err);
        free(raw);
        if (rc < 0) {
            msm_err_prefix(err, "%s_headers_to_add[%zu].header", what, i);
            return rc;
        }
        op->keep_empty = h->keep_empty_value;
        if (h->append) {
            op->action = h->append->value ? MSM_HOP_APPEND : MSM_HOP_OVERWRITE;
        } else {
            op->action = (enum msm_hop_action)h->append_action;
            if ((int)op->action < 0 || op->action > MSM_HOP_OVERWRITE_IF_EXISTS) {
                return msm_err_set(err, "%s_headers_to_add[%zu].append_action: unknown value",
                                   what, i);
            }
        }
    }
    o->remove = n_rm ? msm_xcalloc(n_rm, sizeof(char *)) : NULL;
    for (size_t i = 0; i < n_rm; i++) {
        char *n = msm_xstrdup(rm[i]);
        for (char *c = n; *c; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
        o->remove[o->n_remove++] = n;
        if (!lower_name_ok(n) || n[0] == ':' || !strcmp(n, "host")) {
            return msm_err_set(err, "%s_headers_to_remove[%zu]: '%s' may not be removed", what, i,
                               rm[i]);
        }
    }
    return 0;
}

#define HEADER_OPS(p, req_or_resp, o, err)                                                        \
    header_ops_from_proto((p)->req_or_resp##_headers_to_add, (p)->n_##req_or_resp##_headers_to_add, \
                          (p)->req_or_resp##_headers_to_remove,                                    \
                          (p)->n_##req_or_resp##_headers_to_remove, #req_or_resp, (o), (err))

/* ---- per-filter configs ---------------------------------------------------------------------- */

static void per_filters_free(struct msm_per_filters *pf)
{
    for (int i = 0; i < pf->n; i++) {
        if (pf->v[i].ops && pf->v[i].config && pf->v[i].ops->route_config_free) {
            pf->v[i].ops->route_config_free(pf->v[i].config);
        }
        free(pf->v[i].name);
    }
    free(pf->v);
    memset(pf, 0, sizeof(*pf));
}

static const struct msm_http_filter_ops *ops_for(const struct msm_route_build_ctx *ctx,
                                                 const char *name, const char *type)
{
    for (int i = 0; ctx && i < ctx->n_filters; i++) {
        if (!strcmp(ctx->filter_names[i], name) && ctx->filter_ops[i] &&
            ctx->filter_ops[i]->route_config_type &&
            !strcmp(ctx->filter_ops[i]->route_config_type, type)) {
            return ctx->filter_ops[i];
        }
    }
    return msm_http_filter_find_route_type(type);
}

static int one_per_filter(const char *name, const Google__Protobuf__Any *any,
                          const struct msm_route_build_ctx *ctx, struct msm_per_filter *out,
                          struct msm_err *err)
{
    out->name = msm_xstrdup(name);
    struct msm_pbjson_opts jo = {.allow_unknown_fields = true};
    ProtobufCMessage *msg = msm_pb_any_unpack(any, NULL, &jo, err);
    if (!msg) {
        return MSM_EINVAL;
    }
    bool optional = false;
    if (!strcmp(msg->descriptor->name, "envoy.config.route.v3.FilterConfig")) {
        const Envoy__Config__Route__V3__FilterConfig *fc = (const void *)msg;
        optional = fc->is_optional;
        out->disabled = fc->disabled;
        ProtobufCMessage *inner = NULL;
        if (fc->config) {
            inner = msm_pb_any_unpack(fc->config, NULL, &jo, err);
            if (!inner) {
                protobuf_c_message_free_unpacked(msg, NULL);
                msm_err_prefix(err, "config");
            return MSM_EINVAL;
            }
        }
        protobuf_c_message_free_unpacked(msg, NULL);
        msg = inner;
        if (!msg) {
            return 0; /* disabled without a config */
        }
    }
    const char *type = msg->descriptor->name;
    const struct msm_http_filter_ops *ops = ops_for(ctx, name, type);
    int rc = 0;
    if (ops && ops->route_config_new) {
        rc = ops->route_config_new(msg, &out->config, err);
        if (rc == 0) {
            out->ops = ops;
        }
    } else if (!msm_http_filter_noop_reason(type) && !optional &&
               !(ctx && ctx->validate_only)) {
        rc = msm_err_set(err, "per-route config type %s is not supported", type);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

#define PER_FILTERS(p, ctx, out, err)                                                             \
    per_filters_from_proto((const void *const *)(p)->typed_per_filter_config,                     \
                           (p)->n_typed_per_filter_config, (ctx), (out), (err))

static int per_filters_from_proto(const void *const *entries, size_t n,
                                  const struct msm_route_build_ctx *ctx,
                                  struct msm_per_filters *out, struct msm_err *err)
{
    out->v = n ? msm_xcalloc(n, sizeof(*out->v)) : NULL;
    for (size_t i = 0; i < n; i++) {
        /* Every TypedPerFilterConfigEntry has the same layout {base, key, value}. */
        const Envoy__Config__Route__V3__RouteConfiguration__TypedPerFilterConfigEntry *e =
            entries[i];
        out->n++;
        if (!e->value) {
            return msm_err_set(err, "typed_per_filter_config['%s']: a config is required", e->key);
        }
        if (one_per_filter(e->key, e->value, ctx, &out->v[i], err) < 0) {
            msm_err_prefix(err, "typed_per_filter_config['%s']", e->key);
            return MSM_EINVAL;
        }
    }
    return 0;
}

/* ---- retry policy ------------------------------------------------------------------------------ */

uint32_t msm_retry_on_parse(const char *s)
{
    static const struct {
        const char *tok;
        uint32_t bit;
    } toks[] = {
        {"5xx", MSM_RETRY_5XX},
        {"gateway-error", MSM_RETRY_GATEWAY_ERROR},
        {"connect-failure", MSM_RETRY_CONNECT_FAILURE},
        {"retriable-4xx", MSM_RETRY_RETRIABLE_4XX},
        {"refused-stream", MSM_RETRY_REFUSED_STREAM},
        {"retriable-status-codes", MSM_RETRY_RETRIABLE_STATUS_CODES},
        {"reset", MSM_RETRY_RESET},
        {"reset-before-request", MSM_RETRY_RESET_BEFORE_REQUEST},
        {"retriable-headers", MSM_RETRY_RETRIABLE_HEADERS},
        {"cancelled", MSM_RETRY_GRPC_CANCELLED},
        {"deadline-exceeded", MSM_RETRY_GRPC_DEADLINE_EXCEEDED},
        {"resource-exhausted", MSM_RETRY_GRPC_RESOURCE_EXHAUSTED},
        {"unavailable", MSM_RETRY_GRPC_UNAVAILABLE},
        {"internal", MSM_RETRY_GRPC_INTERNAL},
        {"http3-post-connect-failure", MSM_RETRY_HTTP3_POST_CONNECT},
    };
    uint32_t bits = 0;
    for (size_t i = 0; i < MSM_ARRAY_SIZE(toks); i++) {
        if (msm_http_token_in_list(s, toks[i].tok)) {
            bits |= toks[i].bit;
        }
    }
    return bits;
}

static void retry_free(struct msm_retry_policy *r)
{
    if (r) {
        free(r->codes);
        free(r);
    }
}

static int ms_field(const Google__Protobuf__Duration *d, int64_t dflt, const char *field,
                    uint32_t *out, struct msm_err *err)
{
    if (d && (d->seconds < 0 || d->nanos < 0)) {
        return msm_err_set(err, "%s: must not be negative", field);
    }
    int64_t ms = msm_pb_duration_ms(d, dflt);
    if (ms > UINT32_MAX) {
        ms = UINT32_MAX;
    }
    *out = (uint32_t)ms;
    return 0;
}

/* ---- request mirror policies ----------------------------------------------------------------- */

typedef Envoy__Config__Route__V3__RouteAction__RequestMirrorPolicy PbMirror;

static void mirrors_free(struct msm_mirror_policies *m)
{
    for (int i = 0; i < m->n; i++) {
        free(m->v[i].cluster);
        free(m->v[i].cluster_header);
    }
    free(m->v);
    memset(m, 0, sizeof(*m));
}

/* Envoy's ShadowPolicyImpl: exactly one of cluster and cluster_header; without runtime_fraction
 * every request is mirrored, with one its default_value decides (0 when unset: none).
 * trace_sampled only concerns tracing. */
static int mirrors_from_proto(PbMirror *const *p, size_t n, struct msm_mirror_policies *out,
                              struct msm_err *err)
{
    static const uint64_t dens[] = {100, 10000, 1000000};
    out->v = n ? msm_xcalloc(n, sizeof(*out->v)) : NULL;
    for (size_t i = 0; i < n; i++) {
        struct msm_mirror_policy *m = &out->v[out->n++];
        const char *cl = p[i]->cluster, *ch = p[i]->cluster_header;
        if (cl[0] && ch[0]) {
            return msm_err_set(err, "request_mirror_policies[%zu]: only one of cluster '%s' or "
                                    "cluster_header '%s' can be specified", i, cl, ch);
        }
        if (!cl[0] && !ch[0]) {
            return msm_err_set(err, "request_mirror_policies[%zu]: exactly one of cluster or "
                                    "cluster_header is required", i);
        }
        if (cl[0]) {
            m->cluster = msm_xstrdup(cl);
        } else {
            m->cluster_header = msm_xstrdup(ch);
            for (char *c = m->cluster_header; *c; c++) {
                *c = (char)tolower((unsigned char)*c);
            }
        }
        m->num = 100;
        m->den = 100;
        const Envoy__Config__Core__V3__RuntimeFractionalPercent *rf = p[i]->runtime_fraction;
        if (rf) {
            const Envoy__Type__V3__FractionalPercent *f = rf->default_value;
            m->num = f ? f->numerator : 0;
            if (f && ((int)f->denominator < 0 || (size_t)f->denominator >= MSM_ARRAY_SIZE(dens))) {
                return msm_err_set(err, "request_mirror_policies[%zu].runtime_fraction."
                                        "default_value.denominator: unknown", i);
            }
            m->den = f ? dens[f->denominator] : 100;
        }
        m->keep_host = p[i]->disable_shadow_host_suffix_append;
    }
    return 0;
}

static int retry_from_proto(const PbRetry *p, struct msm_retry_policy **out, struct msm_err *err)
{
    struct msm_retry_policy *r = MSM_NEW(struct msm_retry_policy);
    *out = r;
    r->retry_on = msm_retry_on_parse(p->retry_on);
    r->num_retries = msm_pb_u32(p->num_retries, 1);
    r->host_selection_max_attempts =
        p->host_selection_retry_max_attempts > 0 ? (uint32_t)p->host_selection_retry_max_attempts
                                                 : 1;
    if (ms_field(p->per_try_timeout, 0, "per_try_timeout", &r->per_try_timeout_ms, err) < 0 ||
        ms_field(p->per_try_idle_timeout, 0, "per_try_idle_timeout", &r->per_try_idle_timeout_ms,
                 err) < 0) {
        return MSM_EINVAL;
    }
    r->backoff_base_ms = 25;
    r->backoff_max_ms = 250;
    if (p->retry_back_off) {
        if (!p->retry_back_off->base_interval) {
            return msm_err_set(err, "retry_back_off.base_interval: required");
        }
        if (ms_field(p->retry_back_off->base_interval, 25, "retry_back_off.base_interval",
                     &r->backoff_base_ms, err) < 0 ||
            ms_field(p->retry_back_off->max_interval, (int64_t)r->backoff_base_ms * 10,
                     "retry_back_off.max_interval", &r->backoff_max_ms, err) < 0) {
            return MSM_EINVAL;
        }
        if (!r->backoff_base_ms) {
            return msm_err_set(err, "retry_back_off.base_interval: must be at least 1ms");
        }
        if (r->backoff_max_ms < r->backoff_base_ms) {
            return msm_err_set(err, "retry_back_off.max_interval: must be >= base_interval");
        }
    }
    if (p->n_retriable_status_codes) {
        r->codes = msm_xcalloc(p->n_retriable_status_codes, sizeof(uint32_t));
        memcpy(r->codes, p->retriable_status_codes,
               p->n_retriable_status_codes * sizeof(uint32_t));
        r->n_codes = (int)p->n_retriable_status_codes;
    }
    for (size_t i = 0; i < p->n_retry_host_predicate; i++) {
        const Envoy__Config__Route__V3__RetryPolicy__RetryHostPredicate *hp =
            p->retry_host_predicate[i];
        const char *t = hp->typed_config ? hp->typed_config->type_url : "";
        if (!strcmp(hp->name, "envoy.retry_host_predicates.previous_hosts") ||
            strstr(t, "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate")) {
            r->previous_hosts = true;
        } else {
            return msm_err_set(err, "retry_host_predicate[%zu] '%s': only previous_hosts is "
                                    "supported", i, hp->name);
        }
    }
    if (p->retry_priority) {
        return msm_err_set(err, "retry_priority: not supported (one priority level)");
    }
    if (p->n_retry_options_predicates) {
        return msm_err_set(err, "retry_options_predicates: not supported");
    }
    if (p->rate_limited_retry_back_off) {
        return msm_err_set(err, "rate_limited_retry_back_off: not supported");
    }
    if (p->n_retriable_headers || p->n_retriable_request_headers) {
        return msm_err_set(err, "%s: not supported yet",
                           p->n_retriable_headers ? "retriable_headers"
                                                  : "retriable_request_headers");
    }
    return 0;
}

/* ---- route match --------------------------------------------------------------------------- */

static void match_free(struct msm_route_match *m)
{
    free(m->path);
    msm_regex_free(m->re);
    for (int i = 0; i < m->n_hdrs; i++) {
        msm_header_match_deinit(&m->hdrs[i]);
    }
    free(m->hdrs);
    for (int i = 0; i < m->n_qs; i++) {
        free(m->qs[i].name);
        msm_str_matcher_deinit(&m->qs[i].sm);
    }
    free(m->qs);
}

static int match_from_proto(const PbMatch *p, struct msm_route_match *m, struct msm_err *err)
{
    if (!p) {
        return msm_err_set(err, "match: required");
    }
    m->case_sensitive = msm_pb_bool(p->case_sensitive, true);
    switch (p->path_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX:
        m->kind = MSM_PATH_PREFIX;
        m->path = msm_xstrdup(p->prefix);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH:
        m->kind = MSM_PATH_EXACT;
        m->path = msm_xstrdup(p->path);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH_SEPARATED_PREFIX:
        m->kind = MSM_PATH_SEP_PREFIX;
        m->path = msm_xstrdup(p->path_separated_prefix);
        if (!m->path[0] || m->path[0] != '/' || strpbrk(m->path, "?#") ||
            (strlen(m->path) > 1 && m->path[strlen(m->path) - 1] == '/')) {
            return msm_err_set(err, "match.path_separated_prefix: must start with '/', not end "
                                    "with '/' and contain no '?' or '#'");
        }
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX:
        m->kind = MSM_PATH_REGEX;
        m->re = p->safe_regex ? msm_regex_new(p->safe_regex->regex, err) : NULL;
        if (!m->re) {
            if (p->safe_regex) {
                msm_err_prefix(err, "match.safe_regex");
                return MSM_EINVAL;
            }
            return msm_err_set(err, "match.safe_regex: a regex is required");
        }
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_CONNECT_MATCHER:
        m->kind = MSM_PATH_CONNECT;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH_MATCH_POLICY:
        return msm_err_set(err, "match.path_match_policy: not supported");
    default:
        return msm_err_set(err, "match: one of prefix, path, safe_regex or "
                                "path_separated_prefix is required");
    }
    if (m->path) {
        m->plen = strlen(m->path);
    }
    m->grpc = p->grpc != NULL;
    if (p->tls_context) {
        return msm_err_set(err, "match.tls_context: not supported yet");
    }
    if (p->n_dynamic_metadata) {
        return msm_err_set(err, "match.dynamic_metadata: not supported");
    }
    if (p->runtime_fraction && p->runtime_fraction->default_value) {
        const Envoy__Type__V3__FractionalPercent *f = p->runtime_fraction->default_value;
        static const uint64_t dens[] = {100, 10000, 1000000};
        if ((int)f->denominator < 0 || (size_t)f->denominator >= MSM_ARRAY_SIZE(dens)) {
            return msm_err_set(err, "match.runtime_fraction.default_value.denominator: unknown");
        }
        m->fraction_num = f->numerator;
        m->fraction_den = dens[f->denominator];
    }
    m->hdrs = p->n_headers ? msm_xcalloc(p->n_headers, sizeof(*m->hdrs)) : NULL;
    for (size_t i = 0; i < p->n_headers; i++) {
        m->n_hdrs++;
        if (msm_header_match_from_proto(p->headers[i], &m->hdrs[i], err) < 0) {
            msm_err_prefix(err, "match.headers[%zu]", i);
            return MSM_EINVAL;
        }
    }
    m->qs = p->n_query_parameters ? msm_xcalloc(p->n_query_parameters, sizeof(*m->qs)) : NULL;
    for (size_t i = 0; i < p->n_query_parameters; i++) {
        const Envoy__Config__Route__V3__QueryParameterMatcher *q = p->query_parameters[i];
        struct msm_query_match *qm = &m->qs[m->n_qs++];
        qm->name = msm_xstrdup(q->name);
        if (!q->name[0]) {
            return msm_err_set(err, "match.query_parameters[%zu].name: must not be empty", i);
        }
        if (q->query_parameter_match_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_STRING_MATCH) {
            if (msm_str_matcher_from_proto(q->string_match, &qm->sm, err) < 0) {
                msm_err_prefix(err, "match.query_parameters[%zu].string_match", i);
                return MSM_EINVAL;
            }
        } else {
            qm->present_only = true;
        }
    }
    return 0;
}

/* ---- route ------------------------------------------------------------------------------------- */

static void redirect_free(struct msm_redirect *r)
{
    free(r->scheme);
    free(r->host);
    free(r->path);
    free(r->prefix_rewrite);
    msm_regex_free(r->re);
    free(r->re_sub);
}

static void route_free(struct msm_route *r)
{
    free(r->name);
    match_free(&r->m);
    free(r->cluster);
    free(r->cluster_header);
    for (int i = 0; i < r->n_wc; i++) {
        struct msm_weighted_cluster *w = &r->wc[i];
        free(w->name);
        free(w->cluster_header);
        free(w->host_rewrite);
        header_ops_free(&w->req);
        header_ops_free(&w->resp);
        per_filters_free(&w->pf);
    }
    free(r->wc);
    free(r->wc_header);
    retry_free(r->own_retry);
    free(r->prefix_rewrite);
    msm_regex_free(r->regex_rewrite);
    free(r->regex_sub);
    free(r->host_rewrite);
    free(r->host_rewrite_header);
    redirect_free(&r->redir);
    free(r->direct_body);
    header_ops_free(&r->req);
    header_ops_free(&r->resp);
    per_filters_free(&r->pf);
    free(r->decorator);
    msm_hash_policy_deinit(&r->hash);
    mirrors_free(&r->own_mirrors);
    for (int i = 0; i < r->n_upgrades; i++) {
        free(r->upgrades[i].type);
    }
    free(r->upgrades);
}

static int weighted_from_proto(const Envoy__Config__Route__V3__WeightedCluster *p,
                               const struct msm_route_build_ctx *ctx, struct msm_route *r,
                               struct msm_err *err)
{
    if (!p->n_clusters) {
        return msm_err_set(err, "route.weighted_clusters.clusters: at least one is required");
    }
    if (p->runtime_key_prefix[0]) {
        msm_log(MSM_LOG_DEBUG, MSM_LC_CONFIG, "route.weighted_clusters.runtime_key_prefix ignored (no "
                "runtime)");
    }
    if (p->random_value_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__RANDOM_VALUE_SPECIFIER_HEADER_NAME) {
        r->wc_header = msm_xstrdup(p->header_name);
    }
    r->wc = msm_xcalloc(p->n_clusters, sizeof(*r->wc));
    for (size_t i = 0; i < p->n_clusters; i++) {
        const Envoy__Config__Route__V3__WeightedCluster__ClusterWeight *c = p->clusters[i];
        struct msm_weighted_cluster *w = &r->wc[r->n_wc++];
        if (!c->name[0] && !c->cluster_header[0]) {
            return msm_err_set(err, "route.weighted_clusters.clusters[%zu]: name or cluster_header is "
                                    "required", i);
        }
        w->name = msm_xstrdup(c->name);
        w->cluster_header = c->cluster_header[0] ? msm_xstrdup(c->cluster_header) : NULL;
        w->weight = msm_pb_u32(c->weight, 0);
        r->total_weight += w->weight;
        if (c->metadata_match) {
            return msm_err_set(err, "route.weighted_clusters.clusters[%zu].metadata_match: subset load "
                                    "balancing is not supported", i);
        }
        if (c->host_rewrite_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__CLUSTER_WEIGHT__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL) {
            w->host_rewrite = msm_xstrdup(c->host_rewrite_literal);
        }
        if (HEADER_OPS(c, request, &w->req, err) < 0 || HEADER_OPS(c, response, &w->resp, err) < 0 ||
            PER_FILTERS(c, ctx, &w->pf, err) < 0) {
            msm_err_prefix(err, "route.weighted_clusters.clusters[%zu]", i);
            return MSM_EINVAL;
        }
    }
    if (!r->total_weight) {
        return msm_err_set(err, "route.weighted_clusters: the sum of weights must be positive");
    }
    return 0;
}

/* RouteAction.upgrade_configs -> r->upgrades (Envoy: types lower-cased and unique; a
 * connect_config only on "CONNECT", where it makes the CONNECT end here). */
static int upgrades_from_proto(const PbAction *a, struct msm_route *r, struct msm_err *err)
{
    if (!a->n_upgrade_configs) {
        return 0;
    }
    r->upgrades = msm_xcalloc(a->n_upgrade_configs, sizeof(*r->upgrades));
    for (size_t i = 0; i < a->n_upgrade_configs; i++) {
        const Envoy__Config__Route__V3__RouteAction__UpgradeConfig *u = a->upgrade_configs[i];
        if (!u->upgrade_type || !u->upgrade_type[0]) {
            return msm_err_set(err, "route.upgrade_configs[%zu].upgrade_type: must not be empty",
                               i);
        }
        if (msm_route_upgrade_find(r, u->upgrade_type)) {
            return msm_err_set(err, "route.upgrade_configs[%zu]: duplicate upgrade %s", i,
                               u->upgrade_type);
        }
        struct msm_route_upgrade *e = &r->upgrades[r->n_upgrades++];
        e->type = msm_xstrdup(u->upgrade_type);
        for (char *c = e->type; *c; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
        e->enabled = msm_pb_bool(u->enabled, true);
        if (!u->connect_config) {
            continue;
        }
        if (strcmp(u->upgrade_type, "CONNECT") != 0) {
            return msm_err_set(err, "route.upgrade_configs[%zu]: non-CONNECT upgrade type %s has "
                                    "connect_config", i, u->upgrade_type);
        }
        if (u->connect_config->proxy_protocol_config) {
            return msm_err_set(err, "route.upgrade_configs[%zu].connect_config."
                                    "proxy_protocol_config: not supported", i);
        }
        if (u->connect_config->allow_post) {
            return msm_err_set(err, "route.upgrade_configs[%zu].connect_config.allow_post: not "
                                    "supported", i);
        }
        e->connect_terminate = true;
    }
    return 0;
}

const struct msm_route_upgrade *msm_route_upgrade_find(const struct msm_route *r,
                                                       const char *type)
{
    for (int i = 0; i < r->n_upgrades; i++) {
        if (!strcasecmp(r->upgrades[i].type, type)) {
            return &r->upgrades[i];
        }
    }
    return NULL;
}

static int action_from_proto(const PbAction *a, const struct msm_route_build_ctx *ctx,
                             struct msm_route *r, struct msm_err *err)
{
    switch (a->cluster_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER:
        if (!a->cluster[0]) {
            return msm_err_set(err, "route.cluster: must not be empty");
        }
        r->kind = MSM_ROUTE_CLUSTER;
        r->cluster = msm_xstrdup(a->cluster);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER_HEADER:
        if (!a->cluster_header[0]) {
            return msm_err_set(err, "route.cluster_header: must not be empty");
        }
        r->kind = MSM_ROUTE_CLUSTER_HEADER;
        r->cluster_header = msm_xstrdup(a->cluster_header);
        for (char *c = r->cluster_header; *c; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS:
        r->kind = MSM_ROUTE_WEIGHTED;
        if (weighted_from_proto(a->weighted_clusters, ctx, r, err) < 0) {
            return MSM_EINVAL;
        }
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER_SPECIFIER_PLUGIN:
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_INLINE_CLUSTER_SPECIFIER_PLUGIN:
        return msm_err_set(err, "route.cluster_specifier_plugin: not supported");
    default:
        return msm_err_set(err, "route: one of cluster, cluster_header or weighted_clusters is "
                                "required");
    }
    r->cluster_not_found_code =
        a->cluster_not_found_response_code ==
                ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_NOT_FOUND_RESPONSE_CODE__NOT_FOUND
            ? 404
        : a->cluster_not_found_response_code ==
                ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_NOT_FOUND_RESPONSE_CODE__INTERNAL_SERVER_ERROR
            ? 500
            : 503;
    r->has_timeout = true;
    if (ms_field(a->timeout, DEFAULT_ROUTE_TIMEOUT_MS, "route.timeout", &r->timeout_ms, err) < 0 ||
        ms_field(a->idle_timeout, 0, "route.idle_timeout", &r->idle_timeout_ms, err) < 0) {
        return MSM_EINVAL;
    }
    r->has_idle_timeout = a->idle_timeout != NULL;
    if (upgrades_from_proto(a, r, err) < 0) {
        return MSM_EINVAL;
    }
    const Envoy__Config__Route__V3__RouteAction__MaxStreamDuration *msd = a->max_stream_duration;
    if (msd) {
        r->new_timeouts = true;
        r->has_msd = msd->max_stream_duration != NULL;
        r->has_grpc_max = msd->grpc_timeout_header_max != NULL;
        if (ms_field(msd->max_stream_duration, 0, "route.max_stream_duration.max_stream_duration",
                     &r->max_stream_duration_ms, err) < 0 ||
            ms_field(msd->grpc_timeout_header_max, 0,
                     "route.max_stream_duration.grpc_timeout_header_max", &r->grpc_max_ms,
                     err) < 0 ||
            ms_field(msd->grpc_timeout_header_offset, 0,
                     "route.max_stream_duration.grpc_timeout_header_offset", &r->grpc_offset_ms,
                     err) < 0) {
            return MSM_EINVAL;
        }
    }
    r->has_max_grpc = a->max_grpc_timeout != NULL;
    if (ms_field(a->max_grpc_timeout, 0, "route.max_grpc_timeout", &r->max_grpc_ms, err) < 0 ||
        ms_field(a->grpc_timeout_offset, 0, "route.grpc_timeout_offset",
                 &r->grpc_timeout_offset_ms, err) < 0) {
        return MSM_EINVAL;
    }
    if (a->prefix_rewrite[0] || a->regex_rewrite) {
        if (a->prefix_rewrite[0] && a->regex_rewrite) {
            return msm_err_set(err, "route: prefix_rewrite and regex_rewrite are exclusive");
        }
        if (a->prefix_rewrite[0]) {
            if (r->m.kind == MSM_PATH_REGEX) {
                return msm_err_set(err, "route.prefix_rewrite: cannot be used with a safe_regex "
                                        "match");
            }
            r->prefix_rewrite = msm_xstrdup(a->prefix_rewrite);
        } else {
            if (!a->regex_rewrite->pattern) {
                return msm_err_set(err, "route.regex_rewrite.pattern: required");
            }
            r->regex_rewrite = msm_regex_new(a->regex_rewrite->pattern->regex, err);
            if (!r->regex_rewrite) {
                msm_err_prefix(err, "route.regex_rewrite.pattern");
            return MSM_EINVAL;
            }
            r->regex_sub = msm_xstrdup(a->regex_rewrite->substitution);
        }
    }
    switch (a->host_rewrite_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL:
        r->host_rewrite = msm_xstrdup(a->host_rewrite_literal);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_AUTO_HOST_REWRITE:
        r->auto_host_rewrite = a->auto_host_rewrite && a->auto_host_rewrite->value;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_HEADER:
        r->host_rewrite_header = msm_xstrdup(a->host_rewrite_header);
        for (char *c = r->host_rewrite_header; *c; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_PATH_REGEX:
        return msm_err_set(err, "route.host_rewrite_path_regex: not supported yet");
    default:
        break;
    }
    r->append_xfh = a->append_x_forwarded_host;
    if (a->retry_policy && retry_from_proto(a->retry_policy, &r->own_retry, err) < 0) {
        msm_err_prefix(err, "route.retry_policy");
        return MSM_EINVAL;
    }
    if (a->retry_policy_typed_config) {
        return msm_err_set(err, "route.retry_policy_typed_config: not supported");
    }
    if (mirrors_from_proto(a->request_mirror_policies, a->n_request_mirror_policies,
                           &r->own_mirrors, err) < 0) {
        msm_err_prefix(err, "route");
        return MSM_EINVAL;
    }
    if (a->metadata_match) {
        return msm_err_set(err, "route.metadata_match: subset load balancing is not supported");
    }
    if (a->path_rewrite_policy) {
        return msm_err_set(err, "route.path_rewrite_policy: not supported");
    }
    if (a->internal_redirect_policy || a->max_internal_redirects ||
        a->internal_redirect_action) {
        return msm_err_set(err, "route.internal_redirect_policy: internal redirects are not "
                                "supported");
    }
    if (a->hedge_policy) {
        return msm_err_set(err, "route.hedge_policy: request hedging is not supported");
    }
    if (a->cors) {
        return msm_err_set(err, "route.cors: the deprecated route-level CORS policy is not "
                                "supported (use typed_per_filter_config)");
    }
    if (msm_hash_policy_from_proto((const void *const *)a->hash_policy, a->n_hash_policy,
                                   &r->hash, err) < 0) {
        msm_err_prefix(err, "route");
        return MSM_EINVAL;
    }
    /* rate_limits: no rate-limit filter; priority: one priority level. Neither changes what
     * this proxy does. */
    return 0;
}

static int direct_from_proto(const Envoy__Config__Route__V3__DirectResponseAction *d,
                             uint32_t max_body, struct msm_route *r, struct msm_err *err)
{
    r->kind = MSM_ROUTE_DIRECT;
    if (d->status < 200 || d->status > 599) {
        return msm_err_set(err, "direct_response.status: %u is out of range [200, 600)",
                           d->status);
    }
    r->direct_status = (int)d->status;
    if (!d->body) {
        return 0;
    }
    const Envoy__Config__Core__V3__DataSource *b = d->body;
    switch (b->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        r->direct_body_len = strlen(b->inline_string);
        r->direct_body = msm_xstrndup(b->inline_string, r->direct_body_len);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        r->direct_body_len = b->inline_bytes.len;
        r->direct_body = msm_xstrndup((const char *)b->inline_bytes.data, b->inline_bytes.len);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME: {
        FILE *f = fopen(b->filename, "rb");
        if (!f) {
            return msm_err_set(err, "direct_response.body.filename: cannot open '%s'",
                               b->filename);
        }
        r->direct_body = msm_xmalloc((size_t)max_body + 2);
        r->direct_body_len = fread(r->direct_body, 1, (size_t)max_body + 1, f);
        fclose(f);
        break;
    }
    default:
        return msm_err_set(err, "direct_response.body: only inline_string, inline_bytes and "
                                "filename are supported");
    }
    r->has_direct_body = true;
    if (r->direct_body_len > max_body) {
        return msm_err_set(err, "direct_response.body: size %zu exceeds "
                                "max_direct_response_body_size_bytes %u", r->direct_body_len,
                           max_body);
    }
    return 0;
}

static int redirect_from_proto(const Envoy__Config__Route__V3__RedirectAction *p,
                               struct msm_route *r, struct msm_err *err)
{
    struct msm_redirect *d = &r->redir;
    static const int codes[] = {301, 302, 303, 307, 308};
    r->kind = MSM_ROUTE_REDIRECT;
    if ((int)p->response_code < 0 || (size_t)p->response_code >= MSM_ARRAY_SIZE(codes)) {
        return msm_err_set(err, "redirect.response_code: unknown value");
    }
    d->status = codes[p->response_code];
    if (p->scheme_rewrite_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_HTTPS_REDIRECT) {
        d->scheme = p->https_redirect ? msm_xstrdup("https") : NULL;
    } else if (p->scheme_rewrite_specifier_case ==
               ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_SCHEME_REDIRECT) {
        d->scheme = msm_xstrdup(p->scheme_redirect);
        for (char *c = d->scheme; *c; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
    }
    d->host = p->host_redirect[0] ? msm_xstrdup(p->host_redirect) : NULL;
    d->port = p->port_redirect;
    d->strip_query = p->strip_query;
    switch (p->path_rewrite_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PATH_REDIRECT:
        d->path = msm_xstrdup(p->path_redirect);
        break;
    case ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PREFIX_REWRITE:
        d->prefix_rewrite = msm_xstrdup(p->prefix_rewrite);
        break;
    case ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_REGEX_REWRITE:
        if (!p->regex_rewrite->pattern) {
            return msm_err_set(err, "redirect.regex_rewrite.pattern: required");
        }
        d->re = msm_regex_new(p->regex_rewrite->pattern->regex, err);
        if (!d->re) {
            msm_err_prefix(err, "redirect.regex_rewrite.pattern");
            return MSM_EINVAL;
        }
        d->re_sub = msm_xstrdup(p->regex_rewrite->substitution);
        break;
    default:
        break;
    }
    return 0;
}

static int route_from_proto(const PbRoute *p, const struct msm_route_build_ctx *ctx,
                            uint32_t max_body, struct msm_route *r, struct msm_err *err)
{
    r->name = msm_xstrdup(p->name);
    if (match_from_proto(p->match, &r->m, err) < 0) {
        return MSM_EINVAL;
    }
    switch (p->action_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE:
        if (action_from_proto(p->route, ctx, r, err) < 0) {
            return MSM_EINVAL;
        }
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_REDIRECT:
        if (redirect_from_proto(p->redirect, r, err) < 0) {
            return MSM_EINVAL;
        }
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_DIRECT_RESPONSE:
        if (direct_from_proto(p->direct_response, max_body, r, err) < 0) {
            return MSM_EINVAL;
        }
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_NON_FORWARDING_ACTION:
        r->kind = MSM_ROUTE_NON_FORWARDING;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_FILTER_ACTION:
        return msm_err_set(err, "filter_action: not supported");
    default:
        return msm_err_set(err, "action: one of route, redirect or direct_response is required");
    }
    if (HEADER_OPS(p, request, &r->req, err) < 0 || HEADER_OPS(p, response, &r->resp, err) < 0 ||
        PER_FILTERS(p, ctx, &r->pf, err) < 0) {
        return MSM_EINVAL;
    }
    if (p->decorator && p->decorator->operation[0]) {
        r->decorator = msm_xstrdup(p->decorator->operation);
    }
    r->buffer_limit = msm_pb_u32(p->per_request_buffer_limit_bytes, 0);
    /* metadata (Istio's filter_metadata.istio.config), tracing and stat_prefix only feed
     * observability, which reads them from the proto in /config_dump. */
    return 0;
}

/* ---- virtual hosts and domains ------------------------------------------------------------------ */

static void vhost_free(struct msm_vhost *v)
{
    free(v->name);
    for (int i = 0; i < v->n_domains; i++) {
        free(v->domains[i]);
    }
    free(v->domains);
    for (int i = 0; i < v->n_routes; i++) {
        route_free(&v->routes[i]);
    }
    free(v->routes);
    header_ops_free(&v->req);
    header_ops_free(&v->resp);
    retry_free(v->retry);
    per_filters_free(&v->pf);
    free(v->stat_prefix);
    mirrors_free(&v->mirrors);
}

static int vhost_from_proto(const PbVhost *p, const struct msm_route_build_ctx *ctx,
                            uint32_t max_body, struct msm_vhost *v, struct msm_err *err)
{
    v->name = msm_xstrdup(p->name);
    if (!p->name[0]) {
        return msm_err_set(err, "name: must not be empty");
    }
    if (!p->n_domains) {
        return msm_err_set(err, "domains: at least one is required");
    }
    v->domains = msm_xcalloc(p->n_domains, sizeof(char *));
    for (size_t i = 0; i < p->n_domains; i++) {
        char *d = msm_xstrdup(p->domains[i]);
        for (char *c = d; *c; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
        v->domains[v->n_domains++] = d;
        size_t l = strlen(d);
        char *star = strchr(d, '*');
        if (!l || (star && star != d && star != d + l - 1) || (star && strchr(star + 1, '*'))) {
            return msm_err_set(err, "domains[%zu] '%s': a wildcard may only be the first or last "
                                    "character", i, p->domains[i]);
        }
    }
    if (p->matcher) {
        return msm_err_set(err, "matcher: not supported");
    }
    if (p->cors) {
        return msm_err_set(err, "cors: the deprecated virtual-host CORS policy is not supported "
                                "(use typed_per_filter_config)");
    }
    if (p->hedge_policy) {
        return msm_err_set(err, "hedge_policy: request hedging is not supported");
    }
    if (mirrors_from_proto(p->request_mirror_policies, p->n_request_mirror_policies, &v->mirrors,
                           err) < 0) {
        return MSM_EINVAL;
    }
    if (p->retry_policy_typed_config) {
        return msm_err_set(err, "retry_policy_typed_config: not supported");
    }
    v->require_tls = (int)p->require_tls;
    if (p->retry_policy && retry_from_proto(p->retry_policy, &v->retry, err) < 0) {
        msm_err_prefix(err, "retry_policy");
        return MSM_EINVAL;
    }
    if (HEADER_OPS(p, request, &v->req, err) < 0 || HEADER_OPS(p, response, &v->resp, err) < 0 ||
        PER_FILTERS(p, ctx, &v->pf, err) < 0) {
        return MSM_EINVAL;
    }
    v->include_attempt_count = p->include_request_attempt_count;
    v->include_attempt_count_in_response = p->include_attempt_count_in_response;
    v->include_is_timeout_retry = p->include_is_timeout_retry_header;
    v->buffer_limit = msm_pb_u32(p->per_request_buffer_limit_bytes, 0);
    v->stat_prefix = msm_xasprintf("vhost.%s.", p->name);
    v->routes = p->n_routes ? msm_xcalloc(p->n_routes, sizeof(*v->routes)) : NULL;
    for (size_t i = 0; i < p->n_routes; i++) {
        struct msm_route *r = &v->routes[v->n_routes++];
        r->vh = v;
        if (route_from_proto(p->routes[i], ctx, max_body, r, err) < 0) {
            msm_err_prefix(err, "routes[%zu]%s%s%s", i, p->routes[i]->name[0] ? " '" : "",
                           p->routes[i]->name, p->routes[i]->name[0] ? "'" : "");
            return MSM_EINVAL;
        }
        r->retry = r->own_retry ? r->own_retry : v->retry;
    }
    return 0;
}

static int domain_cmp(const void *a, const void *b)
{
    const struct msm_domain_entry *x = a, *y = b;
    if (x->kind != y->kind) {
        return (int)x->kind - (int)y->kind;
    }
    if (x->kind != MSM_DOM_EXACT && x->len != y->len) {
        return x->len > y->len ? -1 : 1; /* longest wildcard first */
    }
    return strcmp(x->key, y->key);
}

static int index_domains(struct msm_route_config *rc, struct msm_err *err)
{
    int total = 0;
    for (int i = 0; i < rc->n_vhosts; i++) {
        total += rc->vhosts[i].n_domains;
    }
    if (total > MAX_DOMAINS_PER_CONFIG) {
        return msm_err_set(err, "virtual_hosts: too many domains (%d)", total);
    }
    rc->domains = total ? msm_xcalloc((size_t)total, sizeof(*rc->domains)) : NULL;
    for (int i = 0; i < rc->n_vhosts; i++) {
        struct msm_vhost *v = &rc->vhosts[i];
        for (int k = 0; k < v->n_domains; k++) {
            const char *d = v->domains[k];
            size_t l = strlen(d);
            if (!strcmp(d, "*")) {
                if (rc->any) {
                    return msm_err_set(err, "Only a single wildcard domain is permitted in route "
                                            "%s", rc->name);
                }
                rc->any = v;
                continue;
            }
            struct msm_domain_entry *e = &rc->domains[rc->n_domains++];
            e->vh = v;
            if (d[0] == '*') {
                e->kind = MSM_DOM_SUFFIX;
                e->key = msm_xstrdup(d + 1);
            } else if (d[l - 1] == '*') {
                e->kind = MSM_DOM_PREFIX;
                e->key = msm_xstrndup(d, l - 1);
            } else {
                e->kind = MSM_DOM_EXACT;
                e->key = msm_xstrdup(d);
            }
            e->len = strlen(e->key);
        }
    }
    if (rc->n_domains > 1) { /* qsort(NULL, 0) is undefined */
        qsort(rc->domains, (size_t)rc->n_domains, sizeof(*rc->domains), domain_cmp);
    }
    for (int i = 1; i < rc->n_domains; i++) {
        const struct msm_domain_entry *a = &rc->domains[i - 1], *b = &rc->domains[i];
        if (a->kind == b->kind && !strcmp(a->key, b->key)) {
            return msm_err_set(err, "Only unique values for domains are permitted. Duplicate "
                                    "entry of domain %s%s%s in route %s",
                               a->kind == MSM_DOM_SUFFIX ? "*" : "", a->key,
                               a->kind == MSM_DOM_PREFIX ? "*" : "", rc->name);
        }
    }
    return 0;
}

/* ---- route configuration ----------------------------------------------------------------------- */

static void rc_free(struct msm_route_config *rc)
{
    for (int i = 0; i < rc->n_vhosts; i++) {
        vhost_free(&rc->vhosts[i]);
    }
    free(rc->vhosts);
    for (int i = 0; i < rc->n_domains; i++) {
        free(rc->domains[i].key);
    }
    free(rc->domains);
    header_ops_free(&rc->req);
    header_ops_free(&rc->resp);
    for (int i = 0; i < rc->n_internal_only; i++) {
        free(rc->internal_only[i]);
    }
    free(rc->internal_only);
    per_filters_free(&rc->pf);
    mirrors_free(&rc->mirrors);
    free(rc->name);
    free(rc);
}

/* Each route's mirror policies: its own, else its virtual host's, else the configuration's. */
static void resolve_mirrors(struct msm_route_config *rc)
{
    for (int i = 0; i < rc->n_vhosts; i++) {
        struct msm_vhost *v = &rc->vhosts[i];
        const struct msm_mirror_policies *dflt = v->mirrors.n ? &v->mirrors
                                                 : rc->mirrors.n ? &rc->mirrors
                                                                 : NULL;
        for (int k = 0; k < v->n_routes; k++) {
            struct msm_route *r = &v->routes[k];
            r->mirrors = r->own_mirrors.n ? &r->own_mirrors : dflt;
        }
    }
}

static bool pf_disables(const struct msm_per_filters *pf)
{
    for (int i = 0; i < pf->n; i++) {
        if (pf->v[i].disabled) {
            return true;
        }
    }
    return false;
}

/* Whether streams must look for filters disabled per route (not for weighted clusters: Envoy
 * decides it from the route entry). */
static bool any_disabled_filter(const struct msm_route_config *rc)
{
    bool any = pf_disables(&rc->pf);
    for (int i = 0; i < rc->n_vhosts && !any; i++) {
        const struct msm_vhost *v = &rc->vhosts[i];
        any = pf_disables(&v->pf);
        for (int k = 0; k < v->n_routes && !any; k++) {
            any = pf_disables(&v->routes[k].pf);
        }
    }
    return any;
}

struct msm_route_config *msm_route_config_new(const void *proto,
                                              const struct msm_route_build_ctx *ctx,
                                              struct msm_err *err)
{
    const PbRouteConfig *p = proto;
    struct msm_route_config *rc = MSM_NEW(struct msm_route_config);
    atomic_init(&rc->refs, 1);
    rc->name = msm_xstrdup(p->name);
    rc->ignore_port = p->ignore_port_in_host_matching;
    rc->most_specific_wins = p->most_specific_header_mutations_wins;
    rc->max_direct_body = msm_pb_u32(p->max_direct_response_body_size_bytes,
                                     DEFAULT_MAX_DIRECT_BODY);
    if (p->vhds) {
        msm_err_set(err, "vhds: not supported");
        goto fail;
    }
    if (p->n_cluster_specifier_plugins) {
        msm_err_set(err, "cluster_specifier_plugins: not supported");
        goto fail;
    }
    if (mirrors_from_proto(p->request_mirror_policies, p->n_request_mirror_policies, &rc->mirrors,
                           err) < 0) {
        goto fail;
    }
    if (p->ignore_path_parameters_in_path_matching) {
        msm_err_set(err, "ignore_path_parameters_in_path_matching: not supported");
        goto fail;
    }
    if (HEADER_OPS(p, request, &rc->req, err) < 0 || HEADER_OPS(p, response, &rc->resp, err) < 0 ||
        PER_FILTERS(p, ctx, &rc->pf, err) < 0) {
        goto fail;
    }
    rc->internal_only = p->n_internal_only_headers
                            ? msm_xcalloc(p->n_internal_only_headers, sizeof(char *))
                            : NULL;
    for (size_t i = 0; i < p->n_internal_only_headers; i++) {
        char *n = msm_xstrdup(p->internal_only_headers[i]);
        for (char *c = n; *c; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
        rc->internal_only[rc->n_internal_only++] = n;
    }
    rc->vhosts = p->n_virtual_hosts ? msm_xcalloc(p->n_virtual_hosts, sizeof(*rc->vhosts)) : NULL;
    for (size_t i = 0; i < p->n_virtual_hosts; i++) {
        struct msm_vhost *v = &rc->vhosts[rc->n_vhosts++];
        if (vhost_from_proto(p->virtual_hosts[i], ctx, rc->max_direct_body, v, err) < 0) {
            msm_err_prefix(err, "virtual_hosts[%zu]%s%s%s", i,
                           p->virtual_hosts[i]->name[0] ? " '" : "", p->virtual_hosts[i]->name,
                           p->virtual_hosts[i]->name[0] ? "'" : "");
            goto fail;
        }
    }
    if (index_domains(rc, err) < 0) {
        goto fail;
    }
    resolve_mirrors(rc);
    rc->any_disabled_filter = any_disabled_filter(rc);
    return rc;
fail:
    rc_free(rc);
    return NULL;
}

struct msm_route_config *msm_route_config_ref(struct msm_route_config *rc)
{
    atomic_fetch_add(&rc->refs, 1);
    return rc;
}

void msm_route_config_unref(struct msm_route_config *rc)
{
    if (rc && atomic_fetch_sub(&rc->refs, 1) == 1) {
        rc_free(rc);
    }
}
