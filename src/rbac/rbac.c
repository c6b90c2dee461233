#include "rbac/rbac.h"

#include <stdlib.h>
#include <string.h>

#include "envoy/config/rbac/v3/rbac.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/matcher.h"
#include "config/pbutil.h"
#include "http/route.h"
#include "net/listener.h"
#include "stats/stats.h"

enum kind {
    K_ANY = 0,
    K_AND,
    K_OR,
    K_NOT,
    K_DST_IP,
    K_DST_PORT,
    K_DST_PORT_RANGE,
    K_SNI,
    K_HEADER,
    K_PATH,
    K_AUTHENTICATED,
    K_PEER_PRINCIPAL,  /* filter_state io.istio.peer_principal */
    K_SOURCE_IP,       /* remote_ip / source_ip */
    K_DIRECT_REMOTE_IP,
    K_CLAIM,           /* metadata istio_authn request.auth.* */
};

struct node {
    enum kind kind;
    struct node *sub;
    int n_sub;
    struct msm_cidr cidr;
    uint32_t port_lo, port_hi; /* [lo, hi) */
    struct msm_str_matcher sm;
    bool has_sm;
    struct msm_header_match hm;
    bool has_hm;
    char **claim_path;
    int n_claim;
};

struct policy {
    char *name;
    struct node perms, princ; /* K_OR of the lists */
};

struct msm_rbac {
    enum msm_rbac_action action;
    struct policy *p;
    int n;
};

static void node_deinit(struct node *n)
{
    for (int i = 0; i < n->n_sub; i++) {
        node_deinit(&n->sub[i]);
    }
    free(n->sub);
    if (n->has_sm) {
        msm_str_matcher_deinit(&n->sm);
    }
    if (n->has_hm) {
        msm_header_match_deinit(&n->hm);
    }
    for (int i = 0; i < n->n_claim; i++) {
        free(n->claim_path[i]);
    }
    free(n->claim_path);
}

void msm_rbac_free(struct msm_rbac *r)
{
    if (!r) {
        return;
    }
    for (int i = 0; i < r->n; i++) {
        free(r->p[i].name);
        node_deinit(&r->p[i].perms);
        node_deinit(&r->p[i].princ);
    }
    free(r->p);
    free(r);
}

enum msm_rbac_action msm_rbac_action(const struct msm_rbac *r)
{
    return r->action;
}

#define MAX_DEPTH 32

static int cidr(const Envoy__Config__Core__V3__CidrRange *c, struct node *n, struct msm_err *err)
{
    return msm_cidr_parse(c->address_prefix, msm_pb_u32(c->prefix_len, 0), &n->cidr, err);
}

static int sm(const void *p, struct node *n, struct msm_err *err)
{
    if (!p) {
        return msm_err_set(err, "a string matcher is required");
    }
    if (msm_str_matcher_from_proto(p, &n->sm, err) < 0) {
        return MSM_EINVAL;
    }
    n->has_sm = true;
    return 0;
}

/* Istio puts JWT claims under metadata filter "istio_authn", path "request.auth.claims", <claim>,
 * value list_match one_of string_match (or a string_match for "request.auth.principal"...). */
static int claim(const Envoy__Type__Matcher__V3__MetadataMatcher *m, struct node *n,
                 struct msm_err *err)
{
    if (strcmp(m->filter, "istio_authn") != 0) {
        return msm_err_set(err, "metadata: only Istio's istio_authn request claims are supported "
                                "(filter '%s')", m->filter);
    }
    if (m->invert || !m->value || !m->n_path) {
        return msm_err_set(err, "metadata: unsupported istio_authn matcher shape");
    }
    n->claim_path = msm_xcalloc(m->n_path, sizeof(char *));
    for (size_t i = 0; i < m->n_path; i++) {
        n->claim_path[i] = msm_xstrdup(m->path[i]->key);
        n->n_claim = (int)i + 1;
    }
    const Envoy__Type__Matcher__V3__ValueMatcher *v = m->value;
    if (v->match_pattern_case == ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_STRING_MATCH) {
        return sm(v->string_match, n, err);
    }
    if (v->match_pattern_case == ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_LIST_MATCH &&
        v->list_match->match_pattern_case ==
            ENVOY__TYPE__MATCHER__V3__LIST_MATCHER__MATCH_PATTERN_ONE_OF &&
        v->list_match->one_of->match_pattern_case ==
            ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_STRING_MATCH) {
        return sm(v->list_match->one_of->string_match, n, err);
    }
    return msm_err_set(err, "metadata: unsupported istio_authn value matcher");
}

static int perm(const Envoy__Config__Rbac__V3__Permission *p, struct node *n, bool http, int depth,
                struct msm_err *err);
static int princ(const Envoy__Config__Rbac__V3__Principal *p, struct node *n, bool http, int depth,
                 struct msm_err *err);

static int perm_list(Envoy__Config__Rbac__V3__Permission **v, size_t k, struct node *n,
                     enum kind kind, bool http, int depth, struct msm_err *err)
{
    n->kind = kind;
    n->sub = msm_xcalloc(k + 1, sizeof(*n->sub));
    for (size_t i = 0; i < k; i++) {
        n->n_sub = (int)i + 1;
        if (perm(v[i], &n->sub[i], http, depth + 1, err) < 0) {
            msm_err_prefix(err, "[%zu]", i);
            return MSM_EINVAL;
        }
    }
    return 0;
}

static int princ_list(Envoy__Config__Rbac__V3__Principal **v, size_t k, struct node *n,
                      enum kind kind, bool http, int depth, struct msm_err *err)
{
    n->kind = kind;
    n->sub = msm_xcalloc(k + 1, sizeof(*n->sub));
    for (size_t i = 0; i < k; i++) {
        n->n_sub = (int)i + 1;
        if (princ(v[i], &n->sub[i], http, depth + 1, err) < 0) {
            msm_err_prefix(err, "[%zu]", i);
            return MSM_EINVAL;
        }
    }
    return 0;
}

static int header(const void *hm, struct node *n, bool http, struct msm_err *err)
{
    if (!http) {
        return msm_err_set(err, "header: only valid in the HTTP RBAC filter");
    }
    n->kind = K_HEADER;
    if (msm_header_match_from_proto(hm, &n->hm, err) < 0) {
        return MSM_EINVAL;
    }
    n->has_hm = true;
    return 0;
}

static int url_path(const Envoy__Type__Matcher__V3__PathMatcher *pm, struct node *n, bool http,
                    struct msm_err *err)
{
    if (!http) {
        return msm_err_set(err, "url_path: only valid in the HTTP RBAC filter");
    }
    n->kind = K_PATH;
    return sm(pm->path, n, err);
}

static int perm(const Envoy__Config__Rbac__V3__Permission *p, struct node *n, bool http, int depth,
                struct msm_err *err)
{
    memset(n, 0, sizeof(*n));
    if (depth > MAX_DEPTH) {
        return msm_err_set(err, "permissions nested too deeply");
    }
    switch (p->rule_case) {
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES:
        return perm_list(p->and_rules->rules, p->and_rules->n_rules, n, K_AND, http, depth, err);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES:
        return perm_list(p->or_rules->rules, p->or_rules->n_rules, n, K_OR, http, depth, err);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY:
        n->kind = K_ANY;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE:
        n->kind = K_NOT;
        n->sub = msm_xcalloc(1, sizeof(*n->sub));
        n->n_sub = 1;
        return perm(p->not_rule, n->sub, http, depth + 1, err);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_IP:
        n->kind = K_DST_IP;
        return cidr(p->destination_ip, n, err);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT:
        n->kind = K_DST_PORT;
        n->port_lo = p->destination_port;
        n->port_hi = p->destination_port + 1;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT_RANGE:
        n->kind = K_DST_PORT_RANGE;
        if (p->destination_port_range->start < 0 ||
            p->destination_port_range->end < p->destination_port_range->start) {
            return msm_err_set(err, "destination_port_range: invalid range");
        }
        n->port_lo = (uint32_t)p->destination_port_range->start;
        n->port_hi = (uint32_t)p->destination_port_range->end;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_REQUESTED_SERVER_NAME:
        n->kind = K_SNI;
        return sm(p->requested_server_name, n, err);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER:
        return header(p->header, n, http, err);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH:
        return url_path(p->url_path, n, http, err);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_METADATA:
        n->kind = K_CLAIM;
        return claim(p->metadata, n, err);
    default:
        return msm_err_set(err, "permission rule %d is not supported", (int)p->rule_case);
    }
}

static int princ(const Envoy__Config__Rbac__V3__Principal *p, struct node *n, bool http, int depth,
                 struct msm_err *err)
{
    memset(n, 0, sizeof(*n));
    if (depth > MAX_DEPTH) {
        return msm_err_set(err, "principals nested too deeply");
    }
    switch (p->identifier_case) {
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS:
        return princ_list(p->and_ids->ids, p->and_ids->n_ids, n, K_AND, http, depth, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS:
        return princ_list(p->or_ids->ids, p->or_ids->n_ids, n, K_OR, http, depth, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY:
        n->kind = K_ANY;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID:
        n->kind = K_NOT;
        n->sub = msm_xcalloc(1, sizeof(*n->sub));
        n->n_sub = 1;
        return princ(p->not_id, n->sub, http, depth + 1, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED:
        n->kind = K_AUTHENTICATED;
        if (p->authenticated->principal_name) {
            return sm(p->authenticated->principal_name, n, err);
        }
        return 0; /* any authenticated peer */
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_SOURCE_IP:
        n->kind = K_SOURCE_IP;
        return cidr(p->source_ip, n, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_REMOTE_IP:
        n->kind = K_SOURCE_IP;
        return cidr(p->remote_ip, n, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_DIRECT_REMOTE_IP:
        n->kind = K_DIRECT_REMOTE_IP;
        return cidr(p->direct_remote_ip, n, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_HEADER:
        return header(p->header, n, http, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_URL_PATH:
        return url_path(p->url_path, n, http, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_METADATA:
        n->kind = K_CLAIM;
        return claim(p->metadata, n, err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_FILTER_STATE: {
        const Envoy__Type__Matcher__V3__FilterStateMatcher *f = p->filter_state;
        if (strcmp(f->key, "io.istio.peer_principal") != 0) {
            return msm_err_set(err, "filter_state: key '%s' is not supported (only "
                                    "io.istio.peer_principal)", f->key);
        }
        if (f->matcher_case !=
            ENVOY__TYPE__MATCHER__V3__FILTER_STATE_MATCHER__MATCHER_STRING_MATCH) {
            return msm_err_set(err, "filter_state: a string_match is required");
        }
        n->kind = K_PEER_PRINCIPAL;
        return sm(f->string_match, n, err);
    }
    default:
        return msm_err_set(err, "principal identifier %d is not supported",
                           (int)p->identifier_case);
    }
}

struct msm_rbac *msm_rbac_from_proto(const void *proto, bool http, struct msm_err *err)
{
    const Envoy__Config__Rbac__V3__RBAC *p = proto;
    struct msm_rbac *r = MSM_NEW(struct msm_rbac);
    switch (p->action) {
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW: r->action = MSM_RBAC_ALLOW; break;
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY: r->action = MSM_RBAC_DENY; break;
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__LOG: r->action = MSM_RBAC_LOG; break;
    default:
        msm_err_set(err, "action: unknown value %d", (int)p->action);
        msm_rbac_free(r);
        return NULL;
    }
    r->p = msm_xcalloc(p->n_policies + 1, sizeof(*r->p));
    for (size_t i = 0; i < p->n_policies; i++) {
        const Envoy__Config__Rbac__V3__Policy *pol = p->policies[i]->value;
        struct policy *d = &r->p[i];
        r->n = (int)i + 1;
        d->name = msm_xstrdup(p->policies[i]->key);
        if (!pol) {
            msm_err_set(err, "policies['%s']: empty policy", d->name);
            goto fail;
        }
        if (pol->condition || pol->checked_condition) {
            msm_err_set(err, "policies['%s'].condition: CEL conditions are not supported",
                        d->name);
            goto fail;
        }
        if (!pol->n_permissions || !pol->n_principals) {
            msm_err_set(err, "policies['%s']: permissions and principals are required", d->name);
            goto fail;
        }
        if (perm_list(pol->permissions, pol->n_permissions, &d->perms, K_OR, http, 0, err) < 0) {
            msm_err_prefix(err, "policies['%s'].permissions", d->name);
            goto fail;
        }
        if (princ_list(pol->principals, pol->n_principals, &d->princ, K_OR, http, 0, err) < 0) {
            msm_err_prefix(err, "policies['%s'].principals", d->name);
            goto fail;
        }
    }
    return r;
fail:
    msm_rbac_free(r);
    return NULL;
}

/* ---- evaluation -------------------------------------------------------------------------- */

static bool str(const struct node *n, const char *s)
{
    return s && msm_str_matcher_match(&n->sm, s, strlen(s));
}

static bool authenticated(const struct node *n, const struct msm_rbac_ctx *c)
{
    if (!c->peer_validated) {
        return false;
    }
    if (!n->has_sm) {
        return true;
    }
    /* Envoy: the URI SANs, else the DNS SANs, else the subject. */
    if (c->n_uri_sans) {
        for (int i = 0; i < c->n_uri_sans; i++) {
            if (str(n, c->uri_sans[i])) {
                return true;
            }
        }
        return false;
    }
    if (c->n_dns_sans) {
        for (int i = 0; i < c->n_dns_sans; i++) {
            if (str(n, c->dns_sans[i])) {
                return true;
            }
        }
        return false;
    }
    return str(n, c->subject);
}

static bool eval(const struct node *n, const struct msm_rbac_ctx *c)
{
    switch (n->kind) {
    case K_ANY:
        return true;
    case K_AND:
        for (int i = 0; i < n->n_sub; i++) {
            if (!eval(&n->sub[i], c)) {
                return false;
            }
        }
        return true;
    case K_OR:
        for (int i = 0; i < n->n_sub; i++) {
            if (eval(&n->sub[i], c)) {
                return true;
            }
        }
        return false;
    case K_NOT:
        return !eval(&n->sub[0], c);
    case K_DST_IP:
        return c->local && msm_cidr_contains(&n->cidr, c->local);
    case K_DST_PORT:
    case K_DST_PORT_RANGE: {
        uint32_t port = c->local ? msm_address_port(c->local) : 0;
        return port >= n->port_lo && port < n->port_hi;
    }
    case K_SNI:
        return str(n, c->sni ? c->sni : "");
    case K_HEADER:
        return c->headers && msm_header_match(&n->hm, c->headers);
    case K_PATH:
        return str(n, c->path);
    case K_AUTHENTICATED:
        return authenticated(n, c);
    case K_PEER_PRINCIPAL:
        return c->peer_validated && c->n_uri_sans && str(n, c->uri_sans[0]);
    case K_SOURCE_IP:
        return c->remote && msm_cidr_contains(&n->cidr, c->remote);
    case K_DIRECT_REMOTE_IP:
        return c->direct_remote && msm_cidr_contains(&n->cidr, c->direct_remote);
    case K_CLAIM:
        return c->claim &&
               str(n, c->claim(c->claim_arg, (const char *const *)n->claim_path, n->n_claim));
    }
    return false;
}

bool msm_rbac_allowed(const struct msm_rbac *r, const struct msm_rbac_ctx *c, const char **policy)
{
    const char *matched = NULL;
    for (int i = 0; i < r->n && !matched; i++) {
        if (eval(&r->p[i].perms, c) && eval(&r->p[i].princ, c)) {
            matched = r->p[i].name;
        }
    }
    if (policy) {
        *policy = matched;
    }
    switch (r->action) {
    case MSM_RBAC_ALLOW:
        return matched != NULL;
    case MSM_RBAC_DENY:
        return matched == NULL;
    default:
        return true;
    }
}

/* ---- filter configs ------------------------------------------------------------------------- */

int msm_rbac_filter_cfg_build(struct msm_rbac_filter_cfg *c, const void *rules,
                              const void *shadow, bool has_matcher, bool http,
                              struct msm_err *err)
{
    memset(c, 0, sizeof(*c));
    if (has_matcher) {
        return msm_err_set(err, "matcher/shadow_matcher: the xDS matcher API is not supported "
                                "(use rules/shadow_rules)");
    }
    if (rules && !(c->rules = msm_rbac_from_proto(rules, http, err))) {
        msm_err_prefix(err, "rules");
        return MSM_EINVAL;
    }
    if (shadow && !(c->shadow = msm_rbac_from_proto(shadow, http, err))) {
        msm_err_prefix(err, "shadow_rules");
        msm_rbac_filter_cfg_deinit(c);
        return MSM_EINVAL;
    }
    return 0;
}

void msm_rbac_filter_cfg_stats(struct msm_rbac_filter_cfg *c, struct msm_stats_store *st,
                               const char *sp, const char *rp, const char *shp)
{
    c->allowed = msm_stats_getf(st, MSM_STAT_COUNTER, "%srbac.%sallowed", sp, rp);
    c->denied = msm_stats_getf(st, MSM_STAT_COUNTER, "%srbac.%sdenied", sp, rp);
    c->shadow_allowed = msm_stats_getf(st, MSM_STAT_COUNTER, "%srbac.%sshadow_allowed", sp, shp);
    c->shadow_denied = msm_stats_getf(st, MSM_STAT_COUNTER, "%srbac.%sshadow_denied", sp, shp);
}

void msm_rbac_filter_cfg_deinit(struct msm_rbac_filter_cfg *c)
{
    msm_rbac_free(c->rules);
    msm_rbac_free(c->shadow);
    msm_stat_unref(c->allowed);
    msm_stat_unref(c->denied);
    msm_stat_unref(c->shadow_allowed);
    msm_stat_unref(c->shadow_denied);
    memset(c, 0, sizeof(*c));
}
