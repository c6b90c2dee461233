/* RouteAction.hash_policy (see hash_policy.h). */
#include "http/hash_policy.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "envoy/config/route/v3/route_components.pb-c.h"

#include "common/alloc.h"
#include "http/headers.h"
#include "http/regex.h"
#include "http/route.h"
#include "net/address.h"
#include "upstream/lb/hash_lb.h"

typedef Envoy__Config__Route__V3__RouteAction__HashPolicy PbHashPolicy;

/* Envoy validates these names as HTTP_HEADER_NAME / _VALUE with strict off: no NUL, CR or LF.
 * A cookie's parts also go into a Set-Cookie value: nothing that would end or split it. */
static bool text_ok(const char *s, bool cookie_part)
{
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n' || (cookie_part && (*s == ';' || *s == '"'))) {
            return false;
        }
    }
    return true;
}

static int cookie_from_proto(const Envoy__Config__Route__V3__RouteAction__HashPolicy__Cookie *c,
                             struct msm_hash_method *m, struct msm_err *err)
{
    if (!c->name[0]) {
        return msm_err_set(err, "cookie.name: must not be empty");
    }
    if (!text_ok(c->name, true) || strchr(c->name, '=') || strchr(c->name, ' ')) {
        return msm_err_set(err, "cookie.name: '%s' is not a cookie name", c->name);
    }
    if (!text_ok(c->path, true)) {
        return msm_err_set(err, "cookie.path: CR, LF, ';' and '\"' are not allowed");
    }
    m->name = msm_xstrdup(c->name);
    m->path = msm_xstrdup(c->path);
    if (c->ttl) {
        m->has_ttl = true;
        m->ttl_s = c->ttl->seconds; /* Envoy takes the seconds only */
    }
    m->attrs = c->n_attributes ? msm_xcalloc(c->n_attributes, sizeof(*m->attrs)) : NULL;
    for (size_t i = 0; i < c->n_attributes; i++) {
        const Envoy__Config__Route__V3__RouteAction__HashPolicy__CookieAttribute *a =
            c->attributes[i];
        if (!a->name[0] || !text_ok(a->name, true) || !text_ok(a->value, true)) {
            return msm_err_set(err, "cookie.attributes[%zu]: the name must be set, and neither "
                                    "part may hold CR, LF, ';' or '\"'", i);
        }
        struct msm_hash_cookie_attr *o = &m->attrs[m->n_attrs++];
        o->name = msm_xstrdup(a->name);
        o->value = msm_xstrdup(a->value);
    }
    return 0;
}

/* A method keyed by one non-empty name (<field> for the NACK). */
static int named(struct msm_hash_method *m, enum msm_hash_kind kind, const char *name,
                 const char *field, struct msm_err *err)
{
    if (!name[0]) {
        return msm_err_set(err, "%s: must not be empty", field);
    }
    m->kind = kind;
    m->name = msm_xstrdup(name);
    return 0;
}

static int method_from_proto(const PbHashPolicy *p, struct msm_hash_method *m,
                             struct msm_err *err)
{
    m->terminal = p->terminal;
    switch (p->policy_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_HEADER: {
        const char *n = p->header->header_name;
        if (!n[0] || !text_ok(n, false)) {
            return msm_err_set(err, "header.header_name: '%s' is not a header name", n);
        }
        m->kind = MSM_HASH_HEADER;
        m->name = msm_xstrdup(n);
        for (char *c = m->name; *c; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
        const Envoy__Type__Matcher__V3__RegexMatchAndSubstitute *rw = p->header->regex_rewrite;
        if (rw) {
            if (!rw->pattern) {
                return msm_err_set(err, "header.regex_rewrite.pattern: required");
            }
            m->re = msm_regex_new(rw->pattern->regex, err);
            if (!m->re) {
                msm_err_prefix(err, "header.regex_rewrite.pattern");
                return MSM_EINVAL;
            }
            m->re_sub = msm_xstrdup(rw->substitution);
        }
        return 0;
    }
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_COOKIE:
        m->kind = MSM_HASH_COOKIE;
        return cookie_from_proto(p->cookie, m, err);
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_CONNECTION_PROPERTIES:
        m->kind = MSM_HASH_SOURCE_IP;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_QUERY_PARAMETER:
        return named(m, MSM_HASH_QUERY, p->query_parameter->name, "query_parameter.name", err);
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_FILTER_STATE:
        return named(m, MSM_HASH_FILTER_STATE, p->filter_state->key, "filter_state.key", err);
    default:
        return msm_err_set(err, "one of header, cookie, connection_properties, "
                                "query_parameter or filter_state is required");
    }
}

int msm_hash_policy_from_proto(const void *const *p, size_t n, struct msm_hash_policy *out,
                               struct msm_err *err)
{
    memset(out, 0, sizeof(*out));
    out->v = n ? msm_xcalloc(n, sizeof(*out->v)) : NULL;
    for (size_t i = 0; i < n; i++) {
        const PbHashPolicy *hp = p[i];
        /* connection_properties without source_ip hashes nothing: Envoy keeps no method for
         * it (its terminal flag included). */
        if (hp->policy_specifier_case ==
                ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_CONNECTION_PROPERTIES &&
            !hp->connection_properties->source_ip) {
            continue;
        }
        if (method_from_proto(hp, &out->v[out->n++], err) < 0) {
            msm_err_prefix(err, "hash_policy[%zu]", i);
            return MSM_EINVAL;
        }
    }
    return 0;
}

void msm_hash_policy_deinit(struct msm_hash_policy *hp)
{
    for (int i = 0; i < hp->n; i++) {
        struct msm_hash_method *m = &hp->v[i];
        free(m->name);
        msm_regex_free(m->re);
        free(m->re_sub);
        free(m->path);
        for (int k = 0; k < m->n_attrs; k++) {
            free(m->attrs[k].name);
            free(m->attrs[k].value);
        }
        free(m->attrs);
    }
    free(hp->v);
    memset(hp, 0, sizeof(*hp));
}

/* ---- evaluation (workers) ------------------------------------------------------------------- */

struct sv {
    const char *p;
    size_t n;
};

static int sv_cmp(const void *a, const void *b)
{
    const struct sv *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

#define MAX_HASHED_VALUES 128

/* Every value of the header, each rewritten when asked, sorted, chained through XXH64's seed:
 * the same hash whatever their order (Envoy's HashUtil::xxHash64 over a span). */
static bool hash_header(const struct msm_hash_method *m, const struct msm_hdrs *req,
                        uint64_t *out)
{
    /* "host" is :authority here, as codecs store it; Envoy would find no "host" header. */
    const char *name = strcmp(m->name, "host") ? m->name : ":authority";
    size_t nlen = strlen(name);
    struct sv vals[MAX_HASHED_VALUES];
    char *owned[MAX_HASHED_VALUES];
    int n = 0;
    for (uint32_t i = 0; i < req->n && n < MAX_HASHED_VALUES; i++) {
        const struct msm_hdr *e = &req->v[i];
        if (e->nlen != nlen || memcmp(e->name, name, nlen)) {
            continue;
        }
        owned[n] = m->re ? msm_regex_replace_all(m->re, e->value, e->vlen, m->re_sub) : NULL;
        vals[n].p = owned[n] ? owned[n] : e->value;
        vals[n].n = owned[n] ? strlen(owned[n]) : e->vlen;
        n++;
    }
    if (!n) {
        return false;
    }
    qsort(vals, (size_t)n, sizeof(vals[0]), sv_cmp);
    uint64_t h = 0;
    for (int i = 0; i < n; i++) {
        h = XXH64(vals[i].p, vals[i].n, h);
    }
    for (int i = 0; i < n; i++) {
        free(owned[i]);
    }
    *out = h;
    return true;
}

/* Envoy's Utility::parseCookieValue: the first "<name>=<value>" among the ';'-separated pairs
 * of every Cookie header (leading spaces skipped, one pair of double quotes removed). */
static bool cookie_value(const struct msm_hdrs *req, const char *name, struct sv *out)
{
    size_t nl = strlen(name);
    for (uint32_t i = 0; i < req->n; i++) {
        const struct msm_hdr *e = &req->v[i];
        if (e->nlen != 6 || memcmp(e->name, "cookie", 6)) {
            continue;
        }
        const char *s = e->value, *end = e->value + e->vlen;
        while (s < end) {
            const char *semi = memchr(s, ';', (size_t)(end - s));
            const char *pe = semi ? semi : end;
            const char *k = s;
            while (k < pe && *k == ' ') {
                k++;
            }
            const char *eq = memchr(s, '=', (size_t)(pe - s));
            if (eq && eq >= k && (size_t)(eq - k) == nl && !memcmp(k, name, nl)) {
                const char *v = eq + 1;
                size_t vl = (size_t)(pe - v);
                if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                    v++;
                    vl -= 2;
                }
                out->p = v;
                out->n = vl;
                return true;
            }
            s = pe + 1;
        }
    }
    return false;
}

/* A cookie for a client that has none: Envoy's value, and its Set-Cookie line to <cb>. */
static bool generate_cookie(const struct msm_hash_method *m, const struct msm_hash_input *in,
                            msm_hash_cookie_cb cb, void *ctx, uint64_t *out)
{
    if (!cb || !in->remote || !in->local) {
        return false;
    }
    char both[2 * (MSM_ADDRSTRLEN + 8)];
    msm_address_str(in->remote, both, MSM_ADDRSTRLEN + 8);
    size_t l = strlen(both);
    msm_address_str(in->local, both + l, sizeof(both) - l);
    char value[17];
    snprintf(value, sizeof(value), "%016llx",
             (unsigned long long)XXH64(both, strlen(both), 0));
    size_t cap = strlen(m->name) + strlen(m->path) + 96;
    for (int i = 0; i < m->n_attrs; i++) {
        cap += strlen(m->attrs[i].name) + strlen(m->attrs[i].value) + 4;
    }
    char *sc = msm_xmalloc(cap);
    int n = snprintf(sc, cap, "%s=\"%s\"", m->name, value);
    if (m->ttl_s) {
        n += snprintf(sc + n, cap - (size_t)n, "; Max-Age=%lld", (long long)m->ttl_s);
    }
    if (m->path[0]) {
        n += snprintf(sc + n, cap - (size_t)n, "; Path=%s", m->path);
    }
    for (int i = 0; i < m->n_attrs; i++) {
        const struct msm_hash_cookie_attr *a = &m->attrs[i];
        n += snprintf(sc + n, cap - (size_t)n, a->value[0] ? "; %s=%s" : "; %s", a->name,
                      a->value);
    }
    n += snprintf(sc + n, cap - (size_t)n, "; HttpOnly");
    cb(ctx, sc, (size_t)n);
    free(sc);
    *out = XXH64(value, 16, 0);
    return true;
}

static bool eval_one(const struct msm_hash_method *m, const struct msm_hash_input *in,
                     msm_hash_cookie_cb cb, void *ctx, uint64_t *out)
{
    switch (m->kind) {
    case MSM_HASH_HEADER:
        return in->req && hash_header(m, in->req, out);
    case MSM_HASH_COOKIE: {
        struct sv v;
        if (in->req && cookie_value(in->req, m->name, &v) && v.n) {
            *out = XXH64(v.p, v.n, 0);
            return true;
        }
        return m->has_ttl && generate_cookie(m, in, cb, ctx, out);
    }
    case MSM_HASH_SOURCE_IP:
        return in->remote && msm_lb_hash_ip(in->remote, out);
    case MSM_HASH_QUERY: {
        const char *path = in->req ? msm_hdrs_get(in->req, ":path") : NULL;
        const char *v;
        size_t vl;
        if (!path || !msm_http_query_param(path, m->name, &v, &vl)) {
            return false;
        }
        *out = XXH64(v, vl, 0);
        return true;
    }
    case MSM_HASH_FILTER_STATE:
    default:
        return false;
    }
}

bool msm_hash_policy_eval(const struct msm_hash_policy *hp, const struct msm_hash_input *in,
                          msm_hash_cookie_cb cookie_cb, void *ctx, uint64_t *hash)
{
    bool have = false;
    uint64_t h = 0;
    for (int i = 0; i < hp->n; i++) {
        uint64_t x;
        if (eval_one(&hp->v[i], in, cookie_cb, ctx, &x)) {
            /* Rotating keeps two identical policies from cancelling out. */
            h = (have ? (h << 1) | (h >> 63) : 0) ^ x;
            have = true;
        }
        if (hp->v[i].terminal && have) {
            break;
        }
    }
    if (have) {
        *hash = h ? h : 1;
    }
    return have;
}
