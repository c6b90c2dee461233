/* Route matching and route actions' request rewriting (see route.h). Any thread; read-only
 * on the route config. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "http/route.h"

/* ---- strings --------------------------------------------------------------------------------------- */

static bool eq_n(const char *a, const char *b, size_t n, bool ic)
{
    return ic ? strncasecmp(a, b, n) == 0 : memcmp(a, b, n) == 0;
}

/* All values of <name> joined by "," (Envoy's getAllOfHeaderAsString). NULL when absent. */
static char *joined_value(const struct msm_hdrs *h, const char *name, size_t *len)
{
    size_t total = 0;
    int n = 0;
    const char *only = NULL;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!strcmp(h->v[i].name, name)) {
            total += h->v[i].vlen + 1;
            n++;
            only = h->v[i].value;
            *len = h->v[i].vlen;
        }
    }
    if (!n) {
        return NULL;
    }
    if (n == 1) {
        return msm_xstrndup(only, *len);
    }
    char *o = msm_xmalloc(total);
    size_t k = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!strcmp(h->v[i].name, name)) {
            if (k) {
                o[k++] = ',';
            }
            memcpy(o + k, h->v[i].value, h->v[i].vlen);
            k += h->v[i].vlen;
        }
    }
    o[k] = '\0';
    *len = k;
    return o;
}

static bool parse_i64(const char *s, size_t n, int64_t *out)
{
    if (!n || n > 20) {
        return false;
    }
    char buf[24];
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    long long v = strtoll(buf, &end, 10);
    if (*end || end == buf) {
        return false;
    }
    *out = v;
    return true;
}

bool msm_header_match(const struct msm_header_match *m, const struct msm_hdrs *h)
{
    size_t len = 0;
    char *v = joined_value(h, m->name, &len);
    if (!v && !m->missing_as_empty) {
        if (m->invert) {
            return m->kind == MSM_HM_PRESENT && m->present;
        }
        return m->kind == MSM_HM_PRESENT && !m->present;
    }
    const char *val = v ? v : "";
    bool match = false;
    switch (m->kind) {
    case MSM_HM_PRESENT:
        match = m->present;
        break;
    case MSM_HM_RANGE: {
        int64_t x;
        match = parse_i64(val, len, &x) && x >= m->start && x < m->end;
        break;
    }
    case MSM_HM_STRING:
        match = msm_str_matcher_match(&m->sm, val, len);
        break;
    }
    free(v);
    return match != m->invert;
}

/* ---- query parameters ----------------------------------------------------------------------------- */

bool msm_http_query_param(const char *path, const char *name, const char **val, size_t *vlen)
{
    const char *q = strchr(path, '?');
    if (!q) {
        return false;
    }
    q++;
    size_t nl = strlen(name);
    while (*q && *q != '#') {
        const char *e = q;
        while (*e && *e != '&' && *e != '#') {
            e++;
        }
        const char *eq = memchr(q, '=', (size_t)(e - q));
        const char *kend = eq ? eq : e;
        if ((size_t)(kend - q) == nl && !memcmp(q, name, nl)) {
            *val = eq ? eq + 1 : e;
            *vlen = eq ? (size_t)(e - eq - 1) : 0;
            return true;
        }
        q = *e == '&' ? e + 1 : e;
    }
    return false;
}

/* ---- virtual hosts ---------------------------------------------------------------------------------- */

const struct msm_vhost *msm_route_vhost(const struct msm_route_config *rc,
                                        const struct msm_hdrs *req)
{
    const char *auth = msm_hdrs_get(req, ":authority");
    char host[512];
    size_t hl = 0;
    if (auth) {
        for (; auth[hl] && hl < sizeof(host) - 1; hl++) {
            host[hl] = (char)tolower((unsigned char)auth[hl]);
        }
    }
    host[hl] = '\0';
    if (rc->ignore_port) {
        /* Strip ":port" (not inside an IPv6 literal). */
        char *colon = strrchr(host, ':');
        char *bracket = strrchr(host, ']');
        if (colon && (!bracket || colon > bracket)) {
            bool digits = colon[1] != '\0';
            for (const char *c = colon + 1; *c; c++) {
                digits = digits && isdigit((unsigned char)*c);
            }
            if (digits) {
                *colon = '\0';
                hl = (size_t)(colon - host);
            }
        }
    }
    for (int i = 0; i < rc->n_domains; i++) {
        const struct msm_domain_entry *e = &rc->domains[i];
        switch (e->kind) {
        case MSM_DOM_EXACT:
            if (e->len == hl && !memcmp(e->key, host, hl)) {
                return e->vh;
            }
            break;
        case MSM_DOM_SUFFIX:
            if (hl > e->len && !memcmp(host + hl - e->len, e->key, e->len)) {
                return e->vh;
            }
            break;
        case MSM_DOM_PREFIX:
            if (hl > e->len && !memcmp(host, e->key, e->len)) {
                return e->vh;
            }
            break;
        case MSM_DOM_ANY:
            break;
        }
    }
    return rc->any;
}

/* ---- routes --------------------------------------------------------------------------------------------- */

static bool path_match(const struct msm_route_match *m, const char *path)
{
    size_t full = strlen(path);
    size_t plen = strcspn(path, "?#");
    bool ic = !m->case_sensitive;
    switch (m->kind) {
    case MSM_PATH_PREFIX:
        return full >= m->plen && eq_n(path, m->path, m->plen, ic);
    case MSM_PATH_EXACT:
        return plen == m->plen && eq_n(path, m->path, plen, ic);
    case MSM_PATH_REGEX:
        return msm_regex_full_match(m->re, path, plen);
    case MSM_PATH_SEP_PREFIX:
        return plen >= m->plen && eq_n(path, m->path, m->plen, ic) &&
               (plen == m->plen || path[m->plen] == '/');
    case MSM_PATH_CONNECT:
        return false; /* route_matches decides on the method */
    }
    return false;
}

static bool route_matches(const struct msm_route *r, const struct msm_hdrs *req, uint64_t rnd)
{
    const struct msm_route_match *m = &r->m;
    const char *path = msm_hdrs_get(req, ":path");
    if (m->kind == MSM_PATH_CONNECT) {
        /* connect_matcher: CONNECT requests only, which never match a path matcher (an
         * extended CONNECT arrives as an upgrade GET with its path). */
        const char *method = msm_hdrs_get(req, ":method");
        if (!method || strcmp(method, "CONNECT") != 0) {
            return false;
        }
        if (!path) {
            path = "";
        }
    } else if (!path || !path_match(m, path)) {
        return false;
    }
    if (m->fraction_den && rnd % m->fraction_den >= m->fraction_num) {
        return false;
    }
    if (m->grpc) {
        if (!msm_http_is_grpc_content_type(msm_hdrs_get(req, "content-type"))) {
            return false;
        }
    }
    for (int i = 0; i < m->n_hdrs; i++) {
        if (!msm_header_match(&m->hdrs[i], req)) {
            return false;
        }
    }
    for (int i = 0; i < m->n_qs; i++) {
        const char *v;
        size_t vl;
        if (!msm_http_query_param(path, m->qs[i].name, &v, &vl)) {
            return false;
        }
        if (!m->qs[i].present_only && !msm_str_matcher_match(&m->qs[i].sm, v, vl)) {
            return false;
        }
    }
    return true;
}

const struct msm_route *msm_route_match(const struct msm_vhost *vh, const struct msm_hdrs *req,
                                        uint64_t rnd)
{
    for (int i = 0; i < vh->n_routes; i++) {
        if (route_matches(&vh->routes[i], req, rnd)) {
            return &vh->routes[i];
        }
    }
    return NULL;
}

const struct msm_route *msm_route_select(const struct msm_route_config *rc,
                                         const struct msm_hdrs *req, uint64_t rnd)
{
    const struct msm_vhost *vh = msm_route_vhost(rc, req);
    return vh ? msm_route_match(vh, req, rnd) : NULL;
}

int msm_route_pick_weighted(const struct msm_route *r, uint64_t rnd)
{
    uint64_t x = rnd % r->total_weight;
    for (int i = 0; i < r->n_wc; i++) {
        if (x < r->wc[i].weight) {
            return i;
        }
        x -= r->wc[i].weight;
    }
    return r->n_wc - 1;
}

/* ---- rewriting -------------------------------------------------------------------------------------- */

char *msm_route_rewrite_path(const struct msm_route *r, const char *path)
{
    if (r->prefix_rewrite) {
        size_t plen = strcspn(path, "?#");
        size_t matched = r->m.kind == MSM_PATH_EXACT ? plen : r->m.plen;
        if (matched > strlen(path)) {
            return NULL;
        }
        return msm_xasprintf("%s%s", r->prefix_rewrite, path + matched);
    }
    if (r->regex_rewrite) {
        size_t plen = strcspn(path, "?");
        char *np = msm_regex_replace_all(r->regex_rewrite, path, plen, r->regex_sub);
        if (!np) {
            return NULL;
        }
        char *o = msm_xasprintf("%s%s", np, path + plen);
        free(np);
        return o;
    }
    return NULL;
}

char *msm_route_redirect_location(const struct msm_route *r, const struct msm_hdrs *req,
                                  bool tls)
{
    const struct msm_redirect *d = &r->redir;
    const char *xfp = msm_hdrs_get(req, "x-forwarded-proto");
    const char *orig_scheme = xfp ? xfp : (tls ? "https" : "http");
    const char *scheme = d->scheme ? d->scheme : orig_scheme;
    const char *auth = msm_hdrs_get(req, ":authority");
    char host[512];
    snprintf(host, sizeof(host), "%s", d->host ? d->host : (auth ? auth : ""));
    /* Port handling as Envoy: an explicit port_redirect replaces the port; a scheme change
     * drops the default port of the original scheme. */
    char *colon = strrchr(host, ':');
    char *bracket = strrchr(host, ']');
    bool has_port = colon && (!bracket || colon > bracket);
    if (d->port) {
        if (has_port) {
            *colon = '\0';
        }
        char tmp[520];
        snprintf(tmp, sizeof(tmp), "%s:%u", host, d->port);
        snprintf(host, sizeof(host), "%s", tmp);
    } else if (d->scheme && has_port && strcmp(scheme, orig_scheme) != 0 &&
               ((!strcmp(colon, ":80") && !strcmp(orig_scheme, "http")) ||
                (!strcmp(colon, ":443") && !strcmp(orig_scheme, "https")))) {
        *colon = '\0';
    }
    const char *path = msm_hdrs_get(req, ":path");
    if (!path) {
        path = "/";
    }
    size_t plen = strcspn(path, "?");
    const char *query = d->strip_query ? "" : path + plen;
    char *np = NULL;
    if (d->path) {
        np = strchr(d->path, '?') ? msm_xstrdup(d->path) : msm_xasprintf("%s%s", d->path, query);
    } else if (d->prefix_rewrite) {
        size_t matched = r->m.kind == MSM_PATH_EXACT ? plen : r->m.plen;
        if (matched > plen) {
            matched = plen;
        }
        np = msm_xasprintf("%s%.*s%s", d->prefix_rewrite, (int)(plen - matched), path + matched,
                           query);
    } else if (d->re) {
        char *p = msm_regex_replace_all(d->re, path, plen, d->re_sub);
        np = msm_xasprintf("%s%s", p ? p : "/", query);
        free(p);
    } else {
        np = msm_xasprintf("%.*s%s", (int)plen, path, query);
    }
    char *loc = msm_xasprintf("%s://%s%s", scheme, host, np);
    free(np);
    return loc;
}

/* ---- header operations -------------------------------------------------------------------------------- */

static void format_value(const struct msm_header_op *op, const struct msm_hv_ctx *vc, char *out,
                         size_t cap)
{
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < op->n_parts; i++) {
        const struct msm_hv_part *p = &op->parts[i];
        char tmp[128];
        const char *s = "";
        switch (p->var) {
        case MSM_HV_LITERAL:
            s = p->text;
            break;
        case MSM_HV_DOWNSTREAM_REMOTE_ADDRESS:
            s = vc && vc->downstream_remote ? vc->downstream_remote : "";
            break;
        case MSM_HV_DOWNSTREAM_LOCAL_ADDRESS:
            s = vc && vc->downstream_local ? vc->downstream_local : "";
            break;
        case MSM_HV_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT:
        case MSM_HV_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT: {
            const char *a = p->var == MSM_HV_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT
                                ? (vc ? vc->downstream_remote : NULL)
                                : (vc ? vc->downstream_local : NULL);
            snprintf(tmp, sizeof(tmp), "%s", a ? a : "");
            char *c = strrchr(tmp, ':');
            if (c && !strchr(tmp, ']') && strchr(tmp, ':') == c) {
                *c = '\0';
            } else if (c && tmp[0] == '[') {
                *c = '\0';
                size_t l = strlen(tmp);
                if (l && tmp[l - 1] == ']') {
                    tmp[l - 1] = '\0';
                }
                memmove(tmp, tmp + 1, strlen(tmp));
            }
            s = tmp;
            break;
        }
        case MSM_HV_DOWNSTREAM_LOCAL_PORT: {
            const char *a = vc && vc->downstream_local ? vc->downstream_local : "";
            const char *c = strrchr(a, ':');
            s = c ? c + 1 : "";
            break;
        }
        case MSM_HV_UPSTREAM_REMOTE_ADDRESS:
            s = vc && vc->upstream_remote ? vc->upstream_remote : "";
            break;
        case MSM_HV_PROTOCOL:
            s = vc && vc->protocol ? vc->protocol : "";
            break;
        case MSM_HV_REQUEST_ID:
            s = vc && vc->request_id ? vc->request_id : "";
            break;
        case MSM_HV_HOSTNAME:
            if (gethostname(tmp, sizeof(tmp)) != 0) {
                tmp[0] = '\0';
            }
            tmp[sizeof(tmp) - 1] = '\0';
            s = tmp;
            break;
        case MSM_HV_START_TIME:
            s = "";
            break;
        }
        size_t l = strlen(s);
        if (k + l >= cap) {
            l = cap - k - 1;
        }
        memcpy(out + k, s, l);
        k += l;
        out[k] = '\0';
    }
}

void msm_header_ops_apply(const struct msm_header_ops *ops, struct msm_hdrs *h,
                          const struct msm_hv_ctx *vc)
{
    for (int i = 0; i < ops->n_add; i++) {
        const struct msm_header_op *op = &ops->add[i];
        char val[4096];
        format_value(op, vc, val, sizeof(val));
        if (!val[0] && !op->keep_empty) {
            continue;
        }
        bool exists = msm_hdrs_find(h, op->name) != NULL;
        switch (op->action) {
        case MSM_HOP_APPEND:
            msm_hdrs_addz(h, op->name, val);
            break;
        case MSM_HOP_ADD_IF_ABSENT:
            if (!exists) {
                msm_hdrs_addz(h, op->name, val);
            }
            break;
        case MSM_HOP_OVERWRITE:
            msm_hdrs_set(h, op->name, val);
            break;
        case MSM_HOP_OVERWRITE_IF_EXISTS:
            if (exists) {
                msm_hdrs_set(h, op->name, val);
            }
            break;
        }
    }
    for (int i = 0; i < ops->n_remove; i++) {
        msm_hdrs_remove(h, ops->remove[i]);
    }
}

/* ---- per-filter configs ------------------------------------------------------------------------------- */

static const struct msm_per_filter *pf_find(const struct msm_per_filters *pf, const char *name)
{
    for (int i = 0; i < pf->n; i++) {
        if (!strcmp(pf->v[i].name, name)) {
            return &pf->v[i];
        }
    }
    return NULL;
}

const struct msm_per_filter *msm_route_per_filter(const struct msm_route_config *rc,
                                                  const struct msm_route *r, int wc,
                                                  const char *name)
{
    const struct msm_per_filter *f = NULL;
    if (r && wc >= 0 && wc < r->n_wc) {
        f = pf_find(&r->wc[wc].pf, name);
    }
    if (!f && r) {
        f = pf_find(&r->pf, name);
    }
    if (!f && r && r->vh) {
        f = pf_find(&r->vh->pf, name);
    }
    if (!f && rc) {
        f = pf_find(&rc->pf, name);
    }
    return f;
}
