/* envoy.filters.network.http_connection_manager: what Envoy's ConnectionManagerUtility does to
 * headers. Requests: validation (method, absolute path, authority), path normalization, host
 * port stripping, hop-by-hop removal, x-forwarded-for/-proto, x-envoy-* sanitizing for edge
 * requests, x-request-id, x-forwarded-client-cert, via. Responses: server, date, x-request-id,
 * via. Local replies: Envoy's shape (content-length, text/plain body). */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "filter/manager.h"
#include "filters/network/http_connection_manager/hcm_private.h"
#include "net/transport.h"
#include "tls/tls.h"
#include "server/worker.h"
#include "upstream/cluster.h"

/* Request headers only Envoy itself may set: removed from edge (external) requests. A list of
 * literals expanded into one msm_hdrs_remove each: every name's length and filter bit fold to
 * constants, so a name that is absent (nearly always) costs one bit test. */
#define INTERNAL_REQUEST_HEADERS(X)                                                             \
    X("x-envoy-decorator-operation") X("x-envoy-downstream-service-cluster")                   \
    X("x-envoy-downstream-service-node") X("x-envoy-expected-rq-timeout-ms")                   \
    X("x-envoy-force-trace") X("x-envoy-internal") X("x-envoy-ip-tags")                        \
    X("x-envoy-retriable-status-codes") X("x-envoy-retriable-header-names")                    \
    X("x-envoy-retry-grpc-on") X("x-envoy-retry-on") X("x-envoy-max-retries")                  \
    X("x-envoy-upstream-alt-stat-name") X("x-envoy-upstream-rq-per-try-timeout-ms")            \
    X("x-envoy-upstream-rq-timeout-alt-response") X("x-envoy-upstream-rq-timeout-ms")          \
    X("x-envoy-hedge-on-per-try-timeout") X("x-envoy-original-path")

/* Hop-by-hop headers, removed from requests and responses; with <keep_upgrade>
 * (msm_hcm_upgrade_keeps) "connection" and "upgrade" stay. Constant names, as above. */
static void remove_hop_by_hop(struct msm_hdrs *h, bool keep_upgrade)
{
    if (!keep_upgrade) {
        msm_hdrs_remove(h, "connection");
        msm_hdrs_remove(h, "upgrade");
    }
    msm_hdrs_remove(h, "keep-alive");
    msm_hdrs_remove(h, "proxy-connection");
    msm_hdrs_remove(h, "transfer-encoding");
}

/* ---- ids and dates -------------------------------------------------------------------------------- */

/* "00".."ff": two hex digits per byte value, one table load each. */
static const char hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* RFC 4122 version 4 (random) UUID, lower-case: 122 bits of the thread's xoshiro256** stream
 * (seeded from getrandom), the version and variant bits set, formatted from hex_pairs at fixed
 * offsets (the dashes after bytes 4, 6, 8 and 10). */
void msm_hcm_uuid4(char out[37])
{
    uint64_t a = msm_random(), b = msm_random();
    uint8_t u[16];
    memcpy(u, &a, 8);
    memcpy(u + 8, &b, 8);
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
#define HEX2(i, at) memcpy(out + (at), hex_pairs + 2 * u[i], 2)
    HEX2(0, 0), HEX2(1, 2), HEX2(2, 4), HEX2(3, 6);
    HEX2(4, 9), HEX2(5, 11);
    HEX2(6, 14), HEX2(7, 16);
    HEX2(8, 19), HEX2(9, 21);
    HEX2(10, 24), HEX2(11, 26), HEX2(12, 28), HEX2(13, 30), HEX2(14, 32), HEX2(15, 34);
#undef HEX2
    out[8] = out[13] = out[18] = out[23] = '-';
    out[36] = '\0';
}

/* RFC 7231 IMF-fixdate, recomputed once per second per thread; its length in *len. */
static const char *http_date(size_t *len)
{
    static _Thread_local char buf[40];
    static _Thread_local size_t buf_len;
    static _Thread_local time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        buf_len = strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    *len = buf_len;
    return buf;
}

/* ---- paths ---------------------------------------------------------------------------------------- */

static int hexv(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool unreserved(int c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

char *msm_hcm_normalize_path(const char *path, bool normalize, bool merge_slashes)
{
    if (path[0] != '/') {
        return NULL;
    }
    size_t plen = strcspn(path, "?");
    char *o = msm_xmalloc(plen + strlen(path + plen) + 1);
    size_t k = 0;
    /* 1. percent-decoding of unreserved characters, upper-case other escapes, '\' -> '/' */
    for (size_t i = 0; i < plen; i++) {
        char c = path[i];
        if (normalize && c == '%') {
            int h = i + 2 < plen ? hexv((unsigned char)path[i + 1]) : -1;
            int l = h >= 0 ? hexv((unsigned char)path[i + 2]) : -1;
            if (h < 0 || l < 0) {
                free(o);
                return NULL; /* a malformed escape */
            }
            int v = h * 16 + l;
            if (unreserved(v)) {
                o[k++] = (char)v;
            } else {
                o[k++] = '%';
                o[k++] = (char)toupper((unsigned char)path[i + 1]);
                o[k++] = (char)toupper((unsigned char)path[i + 2]);
            }
            i += 2;
        } else if (normalize && c == '\\') {
            o[k++] = '/';
        } else {
            o[k++] = c;
        }
    }
    o[k] = '\0';
    /* 2. merge slashes */
    if (merge_slashes) {
        size_t w = 0;
        for (size_t r = 0; r < k; r++) {
            if (o[r] == '/' && w && o[w - 1] == '/') {
                continue;
            }
            o[w++] = o[r];
        }
        k = w;
        o[k] = '\0';
    }
    /* 3. remove dot segments (RFC 3986 5.2.4) */
    if (normalize) {
        char *out = msm_xmalloc(k + 2);
        size_t w = 0;
        size_t r = 0;
        while (r < k) {
            /* o[r] == '/' at every segment start */
            size_t e = r + 1;
            while (e < k && o[e] != '/') {
                e++;
            }
            size_t sl = e - r - 1;
            const char *seg = o + r + 1;
            if (sl == 1 && seg[0] == '.') {
                if (e == k) {
                    out[w++] = '/';
                }
            } else if (sl == 2 && seg[0] == '.' && seg[1] == '.') {
                /* drop the last output segment with its leading '/' */
                while (w > 0 && out[w - 1] != '/') {
                    w--;
                }
                if (w > 0) {
                    w--;
                }
                if (e == k) {
                    out[w++] = '/';
                }
            } else {
                out[w++] = '/';
                memcpy(out + w, seg, sl);
                w += sl;
            }
            r = e;
        }
        if (!w) {
            out[w++] = '/';
        }
        out[w] = '\0';
        free(o);
        o = out;
        k = w;
    }
    /* the query string is kept as it is */
    char *res = msm_xasprintf("%s%s", o, path + plen);
    free(o);
    return res;
}

static bool has_escaped_slash(const char *p)
{
    size_t plen = strcspn(p, "?");
    for (size_t i = 0; i + 2 < plen + 0 && i + 2 < strlen(p); i++) {
        if (p[i] == '%' && (p[i + 1] == '2' && (p[i + 2] == 'f' || p[i + 2] == 'F'))) {
            return true;
        }
        if (p[i] == '%' && (p[i + 1] == '5' && (p[i + 2] == 'c' || p[i + 2] == 'C'))) {
            return true;
        }
    }
    return false;
}

static char *unescape_slashes(const char *p)
{
    size_t plen = strcspn(p, "?");
    char *o = msm_xmalloc(strlen(p) + 1);
    size_t k = 0;
    for (size_t i = 0; p[i]; i++) {
        if (i < plen && p[i] == '%' && i + 2 < plen + 1 && p[i + 1] &&
            ((p[i + 1] == '2' && (p[i + 2] == 'f' || p[i + 2] == 'F')) ||
             (p[i + 1] == '5' && (p[i + 2] == 'c' || p[i + 2] == 'C')))) {
            o[k++] = p[i + 1] == '2' ? '/' : '\\';
            i += 2;
        } else {
            o[k++] = p[i];
        }
    }
    o[k] = '\0';
    return o;
}

/* ---- addresses ------------------------------------------------------------------------------------ */

/* internal_address_config when set (its ranges, unix sockets if it says so), else Envoy's
 * legacy default: RFC 1918, loopback, IPv6 ULA and loopback, unix sockets. */
static bool is_internal(const struct msm_hcm_config *cfg, const struct msm_address *a)
{
    if (cfg->has_internal) {
        if (a->sa.ss_family == AF_UNIX) {
            return cfg->internal_unix;
        }
        for (int i = 0; i < cfg->n_internal; i++) {
            if (msm_cidr_contains(&cfg->internal[i], a)) {
                return true;
            }
        }
        return false;
    }
    if (a->sa.ss_family == AF_INET) {
        uint32_t ip = ntohl(((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr);
        return (ip >> 24) == 10 || (ip >> 20) == (172u << 4 | 1) || (ip >> 16) == (192u << 8 | 168) ||
               (ip >> 24) == 127;
    }
    if (a->sa.ss_family == AF_INET6) {
        const struct in6_addr *v6 = &((const struct sockaddr_in6 *)&a->sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(v6) || (v6->s6_addr[0] & 0xfe) == 0xfc;
    }
    return a->sa.ss_family == AF_UNIX;
}

static void strip_port(struct msm_hdrs *req, const struct msm_conn *c, bool any)
{
    const char *auth = msm_hdrs_get(req, ":authority");
    if (!auth) {
        return;
    }
    const char *colon = strrchr(auth, ':');
    const char *br = strrchr(auth, ']');
    if (!colon || (br && colon < br)) {
        return;
    }
    if (!any && (uint32_t)atoi(colon + 1) != msm_address_port(&c->local)) {
        return;
    }
    char *h = msm_xstrndup(auth, (size_t)(colon - auth));
    msm_hdrs_set(req, ":authority", h);
    free(h);
}

/* ---- x-forwarded-client-cert ---------------------------------------------------------------------- */

static void xfcc_kv(struct msm_buf *b, const char *key, const char *v, bool quote)
{
    msm_buf_appendf(b, "%s%s=%s%s%s", b->len ? ";" : "", key, quote ? "\"" : "", v ? v : "",
                    quote ? "\"" : "");
}

char *msm_hcm_xfcc_element(unsigned details, const struct msm_xfcc_peer *p)
{
    /* Envoy's order and quoting: By, Hash, then Cert, Chain, Subject, URI, DNS; values are
     * written as they are (no escaping: Envoy has none either), Cert/Chain/Subject quoted. */
    struct msm_buf b;
    msm_buf_init(&b);
    for (int i = 0; i < p->n_by; i++) {
        xfcc_kv(&b, "By", p->by[i], false);
    }
    if (p->hash && p->hash[0]) {
        xfcc_kv(&b, "Hash", p->hash, false);
    }
    if ((details & MSM_XFCC_CERT) && p->cert && p->cert[0]) {
        xfcc_kv(&b, "Cert", p->cert, true);
    }
    if ((details & MSM_XFCC_CHAIN) && p->chain && p->chain[0]) {
        xfcc_kv(&b, "Chain", p->chain, true);
    }
    if (details & MSM_XFCC_SUBJECT) {
        xfcc_kv(&b, "Subject", p->subject, true);
    }
    if (details & MSM_XFCC_URI) {
        for (int i = 0; i < p->n_uri; i++) {
            xfcc_kv(&b, "URI", p->uri[i], false);
        }
        if (!p->n_uri) {
            xfcc_kv(&b, "URI", "", false);
        }
    }
    for (int i = 0; (details & MSM_XFCC_DNS) && i < p->n_dns; i++) {
        xfcc_kv(&b, "DNS", p->dns[i], false);
    }
    char *out = msm_xmalloc(b.len + 1);
    msm_buf_copyout(&b, 0, out, b.len);
    out[b.len] = '\0';
    msm_buf_deinit(&b);
    return out;
}

/* APPEND_FORWARD / SANITIZE_SET on a mutual TLS connection: this hop's element, appended to
 * what came (joined with ',') or replacing it. */
static void set_xfcc(struct msm_hdrs *req, const struct msm_hcm_config *cfg,
                     const struct msm_tls_info *ti)
{
    struct msm_xfcc_peer p = {
        .hash = msm_tls_peer_cert_sha256(ti),
        .subject = ti->peer_subject,
        .uri = (const char *const *)ti->uri_sans,
        .n_uri = ti->n_uri_sans,
        .dns = (const char *const *)ti->dns_sans,
        .n_dns = ti->n_dns_sans,
    };
    p.n_by = msm_tls_local_uri_sans(ti, &p.by);
    if (cfg->xfcc_details & MSM_XFCC_CERT) {
        p.cert = msm_tls_peer_cert_pem(ti, false);
    }
    if (cfg->xfcc_details & MSM_XFCC_CHAIN) {
        p.chain = msm_tls_peer_cert_pem(ti, true);
    }
    char *el = msm_hcm_xfcc_element(cfg->xfcc_details, &p);
    struct msm_buf b;
    msm_buf_init(&b);
    for (uint32_t i = 0; cfg->fcc == MSM_FCC_APPEND_FORWARD && i < req->n; i++) {
        const struct msm_hdr *h = &req->v[i];
        if (h->vlen && !strcmp(h->name, "x-forwarded-client-cert")) {
            if (b.len) {
                msm_buf_append(&b, ",", 1);
            }
            msm_buf_append(&b, h->value, h->vlen);
        }
    }
    if (b.len) {
        msm_buf_append(&b, ",", 1);
    }
    msm_buf_append(&b, el, strlen(el));
    free(el);
    char *v = msm_xmalloc(b.len + 1);
    msm_buf_copyout(&b, 0, v, b.len);
    v[b.len] = '\0';
    msm_buf_deinit(&b);
    msm_hdrs_set(req, "x-forwarded-client-cert", v);
    free(v);
}

/* ---- requests ------------------------------------------------------------------------------------- */

static void mutate_request(struct hstream *st, bool tls)
{
    struct msm_hdrs *req = &st->req;
    const struct msm_hcm_config *cfg = st->hc->cfg;
    const struct msm_conn *conn = msm_filter_conn(st->hc->h);
    remove_hop_by_hop(req, msm_hcm_upgrade_keeps(st));
    const char *te = msm_hdrs_get(req, "te");
    if (te && !msm_http_token_in_list(te, "trailers")) {
        msm_hdrs_remove(req, "te");
    } else if (te) {
        msm_hdrs_set(req, "te", "trailers");
    }
    bool edge = false;
    if (cfg->use_remote_address) {
        char ip[MSM_ADDRSTRLEN];
        msm_address_ip_str(&conn->remote, ip, sizeof(ip));
        bool had_xff = msm_hdrs_find(req, "x-forwarded-for") != NULL;
        if (!cfg->skip_xff_append) {
            const char *xff = msm_hdrs_get(req, "x-forwarded-for");
            if (xff) {
                char *v = msm_xasprintf("%s,%s", xff, ip);
                msm_hdrs_set(req, "x-forwarded-for", v);
                free(v);
            } else {
                msm_hdrs_set(req, "x-forwarded-for", ip);
            }
        }
        if (cfg->xff_num_trusted_hops == 0 || !msm_hdrs_find(req, "x-forwarded-proto")) {
            msm_hdrs_set(req, "x-forwarded-proto", tls ? "https" : "http");
        }
        bool internal = !had_xff && is_internal(cfg, &conn->remote);
        edge = !internal;
        if (internal) {
            msm_hdrs_set(req, "x-envoy-internal", "true");
        } else {
            msm_hdrs_remove(req, "x-envoy-internal");
            msm_hdrs_set(req, "x-envoy-external-address", ip);
        }
    }
    if (!msm_hdrs_find(req, "x-forwarded-proto")) { /* absent: appended without a rescan */
        msm_hdrs_append_lc(req, "x-forwarded-proto", strlen("x-forwarded-proto"),
                           tls ? "https" : "http", tls ? 5 : 4);
    }
    if (cfg->append_x_forwarded_port && !msm_hdrs_find(req, "x-forwarded-port")) {
        char port[8];
        snprintf(port, sizeof(port), "%u", msm_address_port(&conn->local));
        msm_hdrs_set(req, "x-forwarded-port", port);
    }
    if (edge) {
#define REMOVE_INTERNAL(name) msm_hdrs_remove(req, name);
        INTERNAL_REQUEST_HEADERS(REMOVE_INTERNAL)
#undef REMOVE_INTERNAL
        const struct msm_route_config *rc = msm_hcm_route_config(cfg, st->hc->w->snap);
        for (int i = 0; rc && i < rc->n_internal_only; i++) {
            msm_hdrs_remove(req, rc->internal_only[i]);
        }
    }
    const char *rid = msm_hdrs_get(req, "x-request-id");
    if (cfg->generate_request_id && (!rid || (edge && !cfg->preserve_external_request_id))) {
        msm_hcm_uuid4(st->request_id);
        if (rid) { /* replaced in place (first) */
            msm_hdrs_setn(req, "x-request-id", st->request_id, 36);
        } else {
            msm_hdrs_append_lc(req, "x-request-id", strlen("x-request-id"), st->request_id, 36);
        }
    } else if (rid) {
        snprintf(st->request_id, sizeof(st->request_id), "%s", rid);
    }
    /* x-forwarded-client-cert: only mutual TLS peers may carry it forward. */
    const struct msm_tls_info *ti = msm_conn_tls_info(conn);
    bool mtls = ti && ti->peer_cert_presented;
    if (cfg->fcc != MSM_FCC_ALWAYS_FORWARD_ONLY &&
        (cfg->fcc == MSM_FCC_SANITIZE || !mtls || cfg->fcc == MSM_FCC_SANITIZE_SET)) {
        msm_hdrs_remove(req, "x-forwarded-client-cert");
    }
    if (mtls && (cfg->fcc == MSM_FCC_APPEND_FORWARD || cfg->fcc == MSM_FCC_SANITIZE_SET)) {
        set_xfcc(req, cfg, ti);
    }
    if (cfg->via) {
        const char *via = msm_hdrs_get(req, "via");
        char *v = via ? msm_xasprintf("%s, %s", via, cfg->via) : msm_xstrdup(cfg->via);
        msm_hdrs_set(req, "via", v);
        free(v);
    }
}

int msm_hcm_prepare_request(struct hstream *st, const char **details)
{
    struct msm_hdrs *req = &st->req;
    const struct msm_hcm_config *cfg = st->hc->cfg;
    const struct msm_conn *conn = msm_filter_conn(st->hc->h);
    const char *method = msm_hdrs_get(req, ":method");
    const char *ct = msm_hdrs_get(req, "content-type");
    st->is_grpc = msm_http_is_grpc_content_type(ct);
    if (!method) {
        *details = "missing_method";
        return 400;
    }
    st->is_head = !strcmp(method, "HEAD");
    msm_hcm_upgrade_detect(st); /* upgrade or CONNECT: allowed or not once routed */
    if (!msm_hdrs_find(req, ":authority")) {
        const char *host = msm_hdrs_get(req, "host");
        if (!host) {
            *details = "missing_host_header";
            return 400;
        }
        char *h = msm_xstrdup(host);
        msm_hdrs_set(req, ":authority", h);
        msm_hdrs_remove(req, "host");
        free(h);
    } else if (st->hc->proto == MSM_HTTP_2) {
        msm_hdrs_remove(req, "host");
    }
    const char *path = msm_hdrs_get(req, ":path");
    if (st->connect && !path) {
        /* authority-form CONNECT: nothing path- or port-related applies */
        mutate_request(st, msm_conn_tls_info(conn) != NULL);
        return 0;
    }
    if (!path || !path[0]) {
        *details = "missing_path_rejected";
        return 400;
    }
    if (path[0] != '/') {
        msm_stat_inc(cfg->stats.downstream_rq_non_relative_path);
        *details = "absolute_path_rejected";
        return 404;
    }
    /* A fragment is never sent by a browser; Istio's runtime strips rather than rejects. */
    const char *hash = strchr(path, '#');
    if (hash) {
        char *p = msm_xstrndup(path, (size_t)(hash - path));
        msm_hdrs_set(req, ":path", p);
        free(p);
        path = msm_hdrs_get(req, ":path");
    }
    if (cfg->normalize_path || cfg->merge_slashes) {
        char *np = msm_hcm_normalize_path(path, cfg->normalize_path, cfg->merge_slashes);
        if (!np) {
            msm_stat_inc(cfg->stats.downstream_rq_failed_path_normalization);
            *details = "path_normalization_failed";
            return 400;
        }
        msm_hdrs_set(req, ":path", np);
        free(np);
        path = msm_hdrs_get(req, ":path");
    }
    if ((cfg->escaped_slashes_action == 2 || cfg->escaped_slashes_action == 4) &&
        has_escaped_slash(path)) {
        if (cfg->escaped_slashes_action == 2) {
            msm_stat_inc(cfg->stats.downstream_rq_failed_path_normalization);
            *details = "escaped_slashes_rejected";
            return 400;
        }
        char *np = unescape_slashes(path);
        msm_hdrs_set(req, ":path", np);
        free(np);
    }
    if (cfg->strip_any_host_port || cfg->strip_matching_host_port) {
        strip_port(req, conn, cfg->strip_any_host_port);
    }
    if (cfg->strip_trailing_host_dot) {
        const char *a = msm_hdrs_get(req, ":authority");
        size_t l = a ? strcspn(a, ":") : 0;
        if (l && a[l - 1] == '.') {
            char *h = msm_xasprintf("%.*s%s", (int)(l - 1), a, a + l);
            msm_hdrs_set(req, ":authority", h);
            free(h);
        }
    }
    bool tls = msm_conn_tls_info(conn) != NULL;
    if (tls && st->hc->proto != MSM_HTTP_2) {
        msm_hdrs_set(req, ":scheme", "https"); /* HTTP/1 carries no scheme: the transport says */
    }
    mutate_request(st, tls);
    return 0;
}

/* ---- responses ------------------------------------------------------------------------------------ */

void msm_hcm_finalize_response(struct hstream *st, struct msm_hdrs *h)
{
    const struct msm_hcm_config *cfg = st->hc->cfg;
    remove_hop_by_hop(h, st->tunneling && msm_hcm_upgrade_keeps(st));
    if (cfg->server_header_transformation == 0) { /* OVERWRITE */
        msm_hdrs_setn(h, "server", cfg->server_name, cfg->server_name_len);
    } else if (cfg->server_header_transformation == 1 && !msm_hdrs_find(h, "server")) {
        msm_hdrs_append_lc(h, "server", strlen("server"), cfg->server_name, cfg->server_name_len);
    }
    size_t dl;
    const char *date = http_date(&dl);
    msm_hdrs_setn(h, "date", date, dl);
    if (cfg->always_set_request_id_in_response && st->request_id[0]) {
        msm_hdrs_set(h, "x-request-id", st->request_id);
    }
    if (cfg->via) {
        const char *via = msm_hdrs_get(h, "via");
        char *v = via ? msm_xasprintf("%s, %s", via, cfg->via) : msm_xstrdup(cfg->via);
        msm_hdrs_set(h, "via", v);
        free(v);
    }
}

void msm_hcm_build_grpc_local_reply(int status, int grpc_status, const char *text,
                                    struct msm_hdrs *h)
{
    char gs[8];
    snprintf(gs, sizeof(gs), "%d", grpc_status >= 0 ? grpc_status : msm_grpc_status_of_http(status));
    msm_hdrs_set(h, ":status", "200");
    msm_hdrs_set(h, "content-type", "application/grpc");
    msm_hdrs_set(h, "grpc-status", gs);
    if (text && text[0]) {
        /* gRPC's percent-encoding of grpc-message: controls, non-ASCII and '%'. */
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(text);
        char *m = msm_xmalloc(3 * n + 1), *o = m;
        for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
            if (*c < ' ' || *c > '~' || *c == '%') {
                *o++ = '%';
                *o++ = hex[*c >> 4];
                *o++ = hex[*c & 15];
            } else {
                *o++ = (char)*c;
            }
        }
        *o = 0;
        msm_hdrs_set(h, "grpc-message", m);
        free(m);
    }
    size_t dl;
    const char *date = http_date(&dl);
    msm_hdrs_setn(h, "date", date, dl);
}

void msm_hcm_build_local_reply(struct hcm_conn *hc, int status, const char *text, bool head,
                               struct msm_hdrs *h, struct msm_buf *body)
{
    (void)hc;
    char code[8], len[24];
    size_t tl = text ? strlen(text) : 0;
    snprintf(code, sizeof(code), "%d", status);
    snprintf(len, sizeof(len), "%zu", tl);
    msm_hdrs_set(h, ":status", code);
    msm_hdrs_set(h, "content-length", len);
    if (tl) {
        msm_hdrs_set(h, "content-type", "text/plain");
        if (!head) {
            msm_buf_append(body, text, tl);
        }
    }
    size_t dl;
    const char *date = http_date(&dl);
    msm_hdrs_setn(h, "date", date, dl);
}
