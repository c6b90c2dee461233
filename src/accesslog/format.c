/* Access log format strings and dictionaries (see format.h). */
#include "accesslog/format.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "google/protobuf/struct.pb-c.h"

#include "common/alloc.h"
#include "http/headers.h"
#include "upstream/cluster.h"

/* ---- operators ------------------------------------------------------------------------------ */

enum op {
    OP_LITERAL = 0,
    OP_DASH, /* accepted, data not kept: always unavailable */
    OP_START_TIME,
    OP_DURATION,
    OP_REQUEST_DURATION,
    OP_RESPONSE_DURATION,
    OP_RESPONSE_TX_DURATION,
    OP_REQUEST_TX_DURATION,
    OP_BYTES_RECEIVED,
    OP_BYTES_SENT,
    OP_PROTOCOL,
    OP_RESPONSE_CODE,
    OP_RESPONSE_CODE_DETAILS,
    OP_CONNECTION_TERMINATION_DETAILS,
    OP_RESPONSE_FLAGS,
    OP_RESPONSE_FLAGS_LONG,
    OP_UPSTREAM_HOST,
    OP_UPSTREAM_CLUSTER,
    OP_UPSTREAM_CLUSTER_RAW,
    OP_UPSTREAM_LOCAL_ADDRESS,
    OP_UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT,
    OP_UPSTREAM_LOCAL_PORT,
    OP_UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT,
    OP_UPSTREAM_REMOTE_PORT,
    OP_UPSTREAM_TRANSPORT_FAILURE_REASON,
    OP_UPSTREAM_REQUEST_ATTEMPT_COUNT,
    OP_UPSTREAM_CONNECTION_ID,
    OP_DOWNSTREAM_REMOTE_ADDRESS,
    OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT,
    OP_DOWNSTREAM_REMOTE_PORT,
    OP_DOWNSTREAM_DIRECT_REMOTE_ADDRESS,
    OP_DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT,
    OP_DOWNSTREAM_LOCAL_ADDRESS,
    OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT,
    OP_DOWNSTREAM_LOCAL_PORT,
    OP_REQUESTED_SERVER_NAME,
    OP_ROUTE_NAME,
    OP_CONNECTION_ID,
    OP_CONST, /* HOSTNAME, ENVIRONMENT(X): resolved at config time into <arg> */
    OP_PEER_URI_SAN,
    OP_LOCAL_URI_SAN,
    OP_UP_PEER_URI_SAN,
    OP_UP_LOCAL_URI_SAN,
    OP_TLS_VERSION,
    OP_TLS_CIPHER,
    OP_DOWNSTREAM_TRANSPORT_FAILURE_REASON,
    OP_REQ,
    OP_RESP,
    OP_TRAILER,
    OP_REQ_WITHOUT_QUERY,
};

enum arg_rule {
    ARG_NONE = 0,     /* no (args) allowed */
    ARG_OPTIONAL = 1, /* START_TIME */
    ARG_REQUIRED = 2, /* headers, ENVIRONMENT */
    ARG_ANY = 3,      /* the "-" ones: whatever they take */
};

struct op_desc {
    const char *name;
    enum op op;
    enum arg_rule args;
};

static const struct op_desc ops[] = {
    {"START_TIME", OP_START_TIME, ARG_OPTIONAL},
    {"DURATION", OP_DURATION, ARG_NONE},
    {"REQUEST_DURATION", OP_REQUEST_DURATION, ARG_NONE},
    {"RESPONSE_DURATION", OP_RESPONSE_DURATION, ARG_NONE},
    {"RESPONSE_TX_DURATION", OP_RESPONSE_TX_DURATION, ARG_NONE},
    {"REQUEST_TX_DURATION", OP_REQUEST_TX_DURATION, ARG_NONE},
    {"BYTES_RECEIVED", OP_BYTES_RECEIVED, ARG_NONE},
    {"BYTES_SENT", OP_BYTES_SENT, ARG_NONE},
    {"PROTOCOL", OP_PROTOCOL, ARG_NONE},
    {"RESPONSE_CODE", OP_RESPONSE_CODE, ARG_NONE},
    {"RESPONSE_CODE_DETAILS", OP_RESPONSE_CODE_DETAILS, ARG_NONE},
    {"CONNECTION_TERMINATION_DETAILS", OP_CONNECTION_TERMINATION_DETAILS, ARG_NONE},
    {"RESPONSE_FLAGS", OP_RESPONSE_FLAGS, ARG_NONE},
    {"RESPONSE_FLAGS_LONG", OP_RESPONSE_FLAGS_LONG, ARG_NONE},
    {"UPSTREAM_HOST", OP_UPSTREAM_HOST, ARG_NONE},
    {"UPSTREAM_REMOTE_ADDRESS", OP_UPSTREAM_HOST, ARG_NONE},
    {"UPSTREAM_CLUSTER", OP_UPSTREAM_CLUSTER, ARG_NONE},
    {"UPSTREAM_CLUSTER_RAW", OP_UPSTREAM_CLUSTER_RAW, ARG_NONE},
    {"UPSTREAM_LOCAL_ADDRESS", OP_UPSTREAM_LOCAL_ADDRESS, ARG_NONE},
    {"UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", OP_UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT, ARG_NONE},
    {"UPSTREAM_LOCAL_PORT", OP_UPSTREAM_LOCAL_PORT, ARG_NONE},
    {"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", OP_UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, ARG_NONE},
    {"UPSTREAM_REMOTE_PORT", OP_UPSTREAM_REMOTE_PORT, ARG_NONE},
    {"UPSTREAM_TRANSPORT_FAILURE_REASON", OP_UPSTREAM_TRANSPORT_FAILURE_REASON, ARG_NONE},
    {"UPSTREAM_REQUEST_ATTEMPT_COUNT", OP_UPSTREAM_REQUEST_ATTEMPT_COUNT, ARG_NONE},
    {"UPSTREAM_CONNECTION_ID", OP_UPSTREAM_CONNECTION_ID, ARG_NONE},
    {"DOWNSTREAM_REMOTE_ADDRESS", OP_DOWNSTREAM_REMOTE_ADDRESS, ARG_NONE},
    {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT,
     ARG_NONE},
    {"DOWNSTREAM_REMOTE_PORT", OP_DOWNSTREAM_REMOTE_PORT, ARG_NONE},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS", OP_DOWNSTREAM_DIRECT_REMOTE_ADDRESS, ARG_NONE},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
     OP_DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT, ARG_NONE},
    {"DOWNSTREAM_LOCAL_ADDRESS", OP_DOWNSTREAM_LOCAL_ADDRESS, ARG_NONE},
    {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT,
     ARG_NONE},
    {"DOWNSTREAM_LOCAL_PORT", OP_DOWNSTREAM_LOCAL_PORT, ARG_NONE},
    {"REQUESTED_SERVER_NAME", OP_REQUESTED_SERVER_NAME, ARG_NONE},
    {"ROUTE_NAME", OP_ROUTE_NAME, ARG_NONE},
    {"CONNECTION_ID", OP_CONNECTION_ID, ARG_NONE},
    {"HOSTNAME", OP_CONST, ARG_NONE},
    {"ENVIRONMENT", OP_CONST, ARG_REQUIRED},
    {"DOWNSTREAM_PEER_URI_SAN", OP_PEER_URI_SAN, ARG_NONE},
    {"DOWNSTREAM_LOCAL_URI_SAN", OP_LOCAL_URI_SAN, ARG_NONE},
    {"DOWNSTREAM_TLS_VERSION", OP_TLS_VERSION, ARG_NONE},
    {"DOWNSTREAM_TLS_CIPHER", OP_TLS_CIPHER, ARG_NONE},
    {"DOWNSTREAM_TRANSPORT_FAILURE_REASON", OP_DOWNSTREAM_TRANSPORT_FAILURE_REASON, ARG_NONE},
    {"REQ", OP_REQ, ARG_REQUIRED},
    {"REQUEST_HEADER", OP_REQ, ARG_REQUIRED},
    {"RESP", OP_RESP, ARG_REQUIRED},
    {"RESPONSE_HEADER", OP_RESP, ARG_REQUIRED},
    {"TRAILER", OP_TRAILER, ARG_REQUIRED},
    {"RESPONSE_TRAILER", OP_TRAILER, ARG_REQUIRED},
    {"REQ_WITHOUT_QUERY", OP_REQ_WITHOUT_QUERY, ARG_REQUIRED},
    /* accepted, always "-" here */
    {"DYNAMIC_METADATA", OP_DASH, ARG_ANY},
    {"CLUSTER_METADATA", OP_DASH, ARG_ANY},
    {"UPSTREAM_METADATA", OP_DASH, ARG_ANY},
    {"METADATA", OP_DASH, ARG_ANY},
    {"FILTER_STATE", OP_DASH, ARG_ANY},
    {"UPSTREAM_FILTER_STATE", OP_DASH, ARG_ANY},
    {"CEL", OP_DASH, ARG_ANY},
    {"TRACE_ID", OP_DASH, ARG_ANY},
    {"GRPC_STATUS", OP_DASH, ARG_ANY},
    {"GRPC_STATUS_NUMBER", OP_DASH, ARG_ANY},
    {"VIRTUAL_CLUSTER_NAME", OP_DASH, ARG_ANY},
    {"STREAM_ID", OP_DASH, ARG_ANY},
    {"UNIQUE_ID", OP_DASH, ARG_ANY},
    {"UPSTREAM_WIRE_BYTES_SENT", OP_DASH, ARG_ANY},
    {"UPSTREAM_WIRE_BYTES_RECEIVED", OP_DASH, ARG_ANY},
    {"UPSTREAM_HEADER_BYTES_SENT", OP_DASH, ARG_ANY},
    {"UPSTREAM_HEADER_BYTES_RECEIVED", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_WIRE_BYTES_SENT", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_WIRE_BYTES_RECEIVED", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_HEADER_BYTES_SENT", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_HEADER_BYTES_RECEIVED", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_PEER_SUBJECT", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_PEER_ISSUER", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_PEER_FINGERPRINT_256", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_PEER_SERIAL", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_PEER_CERT", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_LOCAL_SUBJECT", OP_DASH, ARG_ANY},
    {"DOWNSTREAM_TLS_SESSION_ID", OP_DASH, ARG_ANY},
    {"UPSTREAM_PEER_URI_SAN", OP_UP_PEER_URI_SAN, ARG_NONE},
    {"UPSTREAM_LOCAL_URI_SAN", OP_UP_LOCAL_URI_SAN, ARG_NONE},
    {"UPSTREAM_TLS_VERSION", OP_DASH, ARG_ANY},
    {"UPSTREAM_TLS_CIPHER", OP_DASH, ARG_ANY},
    {"LOCAL_REPLY_BODY", OP_DASH, ARG_ANY},
    {"ACCESS_LOG_TYPE", OP_DASH, ARG_ANY},
};

/* Operators whose value is a number in typed JSON. */
static bool numeric(enum op o)
{
    switch (o) {
    case OP_DURATION:
    case OP_REQUEST_DURATION:
    case OP_RESPONSE_DURATION:
    case OP_RESPONSE_TX_DURATION:
    case OP_REQUEST_TX_DURATION:
    case OP_BYTES_RECEIVED:
    case OP_BYTES_SENT:
    case OP_RESPONSE_CODE:
    case OP_UPSTREAM_LOCAL_PORT:
    case OP_UPSTREAM_REMOTE_PORT:
    case OP_UPSTREAM_REQUEST_ATTEMPT_COUNT:
    case OP_UPSTREAM_CONNECTION_ID:
    case OP_DOWNSTREAM_REMOTE_PORT:
    case OP_DOWNSTREAM_LOCAL_PORT:
    case OP_CONNECTION_ID: return true;
    default: return false;
    }
}

struct token {
    enum op op;
    char *lit; /* OP_LITERAL text, OP_CONST value, START_TIME format (NULL = default) */
    size_t litlen;
    char *hdr, *alt; /* headers: lower-case main and alternative names */
    int max_len;     /* -1 = no limit */
};

struct fmt {
    struct token *t;
    int n;
    size_t cap;
};

/* ---- parsing -------------------------------------------------------------------------------- */

static struct token *fmt_add(struct fmt *f)
{
    f->t = msm_xgrow(f->t, sizeof(*f->t), &f->cap, (size_t)f->n + 1);
    struct token *t = &f->t[f->n++];
    memset(t, 0, sizeof(*t));
    t->max_len = -1;
    return t;
}

static void fmt_literal(struct fmt *f, const char *s, size_t n)
{
    if (!n) {
        return;
    }
    if (f->n && f->t[f->n - 1].op == OP_LITERAL) {
        struct token *t = &f->t[f->n - 1];
        t->lit = msm_xrealloc(t->lit, t->litlen + n + 1);
        memcpy(t->lit + t->litlen, s, n);
        t->litlen += n;
        t->lit[t->litlen] = '\0';
        return;
    }
    struct token *t = fmt_add(f);
    t->op = OP_LITERAL;
    t->lit = msm_xstrndup(s, n);
    t->litlen = n;
}

static void fmt_deinit(struct fmt *f)
{
    for (int i = 0; i < f->n; i++) {
        free(f->t[i].lit);
        free(f->t[i].hdr);
        free(f->t[i].alt);
    }
    free(f->t);
    memset(f, 0, sizeof(*f));
}

static char *lower_dup(const char *s, size_t n)
{
    char *o = msm_xstrndup(s, n);
    for (char *p = o; *p; p++) {
        *p = (char)tolower((unsigned char)*p);
    }
    return o;
}

static int parse_headers(struct token *t, const char *arg, size_t n, const char *name,
                         struct msm_err *err)
{
    const char *q = memchr(arg, '?', n);
    size_t n1 = q ? (size_t)(q - arg) : n;
    if (!n1 || (q && n1 + 1 == n)) {
        return msm_err_set(err, "Invalid header configuration. Format string contains empty "
                                "header in %s", name);
    }
    if (q && memchr(q + 1, '?', n - n1 - 1)) {
        return msm_err_set(err, "More than 1 alternative header specified in token: %s", name);
    }
    t->hdr = lower_dup(arg, n1);
    if (q) {
        t->alt = lower_dup(q + 1, n - n1 - 1);
    }
    return 0;
}

/* Parse the command at <s> (just after '%'); returns its length up to and including the closing
 * '%', or a negative code with <err>. */
static int parse_command(struct fmt *f, const char *s, size_t pos, struct msm_err *err)
{
    size_t i = 0;
    while (isupper((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_') {
        i++;
    }
    size_t name_len = i;
    const char *arg = NULL;
    size_t arg_len = 0;
    if (name_len && s[i] == '(') {
        const char *close = strchr(s + i + 1, ')');
        if (!close) {
            goto bad;
        }
        arg = s + i + 1;
        arg_len = (size_t)(close - arg);
        i = (size_t)(close - s) + 1;
    }
    long max_len = -1;
    if (name_len && s[i] == ':' && isdigit((unsigned char)s[i + 1])) {
        char *end;
        max_len = strtol(s + i + 1, &end, 10);
        if (max_len > 1000000) {
            max_len = 1000000;
        }
        i = (size_t)(end - s);
    }
    if (!name_len || s[i] != '%') {
        goto bad;
    }
    char name[64];
    if (name_len >= sizeof(name)) {
        return msm_err_set(err, "Not supported field in StreamInfo: %.*s", (int)name_len, s);
    }
    memcpy(name, s, name_len);
    name[name_len] = '\0';
    const struct op_desc *d = NULL;
    for (size_t k = 0; k < MSM_ARRAY_SIZE(ops); k++) {
        if (!strcmp(ops[k].name, name)) {
            d = &ops[k];
            break;
        }
    }
    if (!d) {
        return msm_err_set(err, "Not supported field in StreamInfo: %s", name);
    }
    if (d->args == ARG_NONE && arg) {
        return msm_err_set(err, "%s does not take parameters", name);
    }
    if (d->args == ARG_REQUIRED && !arg) {
        return msm_err_set(err, "%s requires parameters", name);
    }
    struct token *t = fmt_add(f);
    t->op = d->op;
    t->max_len = (int)max_len;
    switch (d->op) {
    case OP_REQ:
    case OP_RESP:
    case OP_TRAILER:
    case OP_REQ_WITHOUT_QUERY:
        if (parse_headers(t, arg, arg_len, name, err) < 0) {
            return MSM_EINVAL;
        }
        break;
    case OP_START_TIME:
        t->lit = arg && arg_len ? msm_xstrndup(arg, arg_len) : NULL;
        break;
    case OP_CONST:
        if (!strcmp(name, "HOSTNAME")) {
            char host[256] = "";
            gethostname(host, sizeof(host) - 1);
            t->lit = msm_xstrdup(host);
        } else {
            char *var = msm_xstrndup(arg, arg_len);
            const char *v = getenv(var);
            free(var);
            t->lit = v ? msm_xstrdup(v) : NULL;
        }
        break;
    default: break;
    }
    return (int)i + 1;
bad:
    return msm_err_set(err, "Incorrect configuration: %s. Couldn't find valid command at "
                            "position %zu", s - pos - 1, pos);
}

static int fmt_parse(struct fmt *f, const char *s, struct msm_err *err)
{
    memset(f, 0, sizeof(*f));
    const char *start = s;
    const char *lit = s;
    while (*s) {
        if (*s != '%') {
            s++;
            continue;
        }
        fmt_literal(f, lit, (size_t)(s - lit));
        if (s[1] == '%') {
            fmt_literal(f, "%", 1);
            s += 2;
            lit = s;
            continue;
        }
        int n = parse_command(f, s + 1, (size_t)(s - start), err);
        if (n < 0) {
            fmt_deinit(f);
            return MSM_EINVAL;
        }
        s += 1 + n;
        lit = s;
    }
    fmt_literal(f, lit, (size_t)(s - lit));
    return 0;
}

/* ---- values --------------------------------------------------------------------------------- */

enum vkind {
    V_NULL = 0,
    V_STR = 1,
    V_U64 = 2,
};

struct val {
    enum vkind k;
    const char *s;
    size_t n;
    uint64_t u;
};

static void set_str(struct val *v, const char *s)
{
    if (s) {
        v->k = V_STR;
        v->s = s;
        v->n = strlen(s);
    }
}

static void set_u64(struct val *v, uint64_t u)
{
    v->k = V_U64;
    v->u = u;
}

static void set_ms(struct val *v, double from, double to)
{
    if (from > 0 && to >= from) {
        set_u64(v, (uint64_t)((to - from) * 1000.0));
    }
}

static void set_addr(struct val *v, const struct msm_address *a, int part, char *tmp,
                     size_t tn)
{
    if (!a || !a->len) {
        return;
    }
    if (part == 0) {
        msm_address_str(a, tmp, tn);
        set_str(v, tmp);
    } else if (part == 1) {
        msm_address_ip_str(a, tmp, tn);
        set_str(v, tmp);
    } else if (a->sa.ss_family != AF_UNIX) {
        set_u64(v, msm_address_port(a));
    }
}

/* strftime with Envoy's extensions: %f (9 digits), %<n>f, %E<n>S / %E*S (seconds with n
 * fractional digits), %s (epoch seconds). */
static size_t format_time(char *out, size_t n, const char *fmt, double wall)
{
    time_t secs = (time_t)wall;
    long nanos = (long)((wall - (double)secs) * 1e9);
    if (nanos < 0) {
        nanos = 0;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    if (!fmt) {
        size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
        k += (size_t)snprintf(out + k, n - k, ".%03ldZ", nanos / 1000000);
        return k < n ? k : n - 1;
    }
    size_t k = 0;
    for (const char *p = fmt; *p && k + 1 < n; p++) {
        if (*p != '%' || !p[1]) {
            out[k++] = *p;
            continue;
        }
        const char *q = p + 1;
        int digits = -1;
        if (*q == 'E' && (isdigit((unsigned char)q[1]) || q[1] == '*') && q[2] == 'S') {
            digits = q[1] == '*' ? 9 : q[1] - '0';
            k += strftime(out + k, n - k, "%S", &tm);
            if (digits > 0 && k + 1 < n) {
                char frac[16];
                snprintf(frac, sizeof(frac), "%09ld", nanos);
                k += (size_t)snprintf(out + k, n - k, ".%.*s", digits, frac);
            }
            p = q + 2;
            continue;
        }
        if (isdigit((unsigned char)*q) && q[1] == 'f') {
            digits = *q - '0';
            q++;
        }
        if (*q == 'f') {
            char frac[16];
            snprintf(frac, sizeof(frac), "%09ld", nanos);
            k += (size_t)snprintf(out + k, n - k, "%.*s", digits < 0 ? 9 : digits, frac);
            p = q;
            continue;
        }
        if (*q == 's') {
            k += (size_t)snprintf(out + k, n - k, "%lld", (long long)secs);
            p = q;
            continue;
        }
        char spec[3] = {'%', *q, '\0'};
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        k += strftime(out + k, n - k, spec, &tm);
#pragma GCC diagnostic pop
        p = q;
    }
    if (k >= n) {
        k = n - 1;
    }
    out[k] = '\0';
    return k;
}

static const char *header(const struct msm_hdrs *h, const struct token *t)
{
    if (!h) {
        return NULL;
    }
    const char *v = msm_hdrs_get(h, t->hdr);
    if (!v && t->alt) {
        v = msm_hdrs_get(h, t->alt);
    }
    return v;
}

static void eval(const struct token *t, const struct msm_stream_info *si, double now,
                 struct val *v, char *tmp, size_t tn)
{
    memset(v, 0, sizeof(*v));
    double end = si->end > 0 ? si->end : now;
    const struct msm_address *up = si->upstream_host ? &si->upstream_host->addr : NULL;
    switch (t->op) {
    case OP_LITERAL: v->k = V_STR; v->s = t->lit; v->n = t->litlen; break;
    case OP_DASH: break;
    case OP_START_TIME:
        format_time(tmp, tn, t->lit, si->start_wall);
        set_str(v, tmp);
        break;
    case OP_DURATION: set_ms(v, si->start, end); break;
    case OP_REQUEST_DURATION: set_ms(v, si->start, si->last_downstream_rx); break;
    case OP_RESPONSE_DURATION: set_ms(v, si->start, si->first_upstream_rx); break;
    case OP_RESPONSE_TX_DURATION: set_ms(v, si->first_upstream_rx, si->last_downstream_tx); break;
    case OP_REQUEST_TX_DURATION: set_ms(v, si->start, si->last_upstream_tx); break;
    case OP_BYTES_RECEIVED: set_u64(v, si->bytes_received); break;
    case OP_BYTES_SENT: set_u64(v, si->bytes_sent); break;
    case OP_PROTOCOL: set_str(v, si->protocol); break;
    case OP_RESPONSE_CODE: set_u64(v, si->response_code); break;
    case OP_RESPONSE_CODE_DETAILS: set_str(v, si->response_code_details); break;
    case OP_CONNECTION_TERMINATION_DETAILS: set_str(v, si->connection_termination_details); break;
    case OP_RESPONSE_FLAGS:
    case OP_RESPONSE_FLAGS_LONG:
        if (si->response_flags) {
            msm_si_flags_str(si, t->op == OP_RESPONSE_FLAGS_LONG, tmp, tn);
            set_str(v, tmp);
        }
        break;
    case OP_UPSTREAM_HOST: set_addr(v, up, 0, tmp, tn); break;
    case OP_UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT: set_addr(v, up, 1, tmp, tn); break;
    case OP_UPSTREAM_REMOTE_PORT: set_addr(v, up, 2, tmp, tn); break;
    case OP_UPSTREAM_CLUSTER:
        if (si->upstream_cluster) {
            set_str(v, si->upstream_cluster->stat_name);
        }
        break;
    case OP_UPSTREAM_CLUSTER_RAW:
        if (si->upstream_cluster) {
            set_str(v, si->upstream_cluster->name);
        }
        break;
    case OP_UPSTREAM_LOCAL_ADDRESS:
    case OP_UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT:
    case OP_UPSTREAM_LOCAL_PORT:
        if (si->has_upstream_local) {
            set_addr(v, &si->upstream_local, t->op - OP_UPSTREAM_LOCAL_ADDRESS, tmp, tn);
        }
        break;
    case OP_UPSTREAM_TRANSPORT_FAILURE_REASON:
        /* Envoy's formatter writes the reason with '_' for spaces. */
        if (si->upstream_transport_failure_reason) {
            snprintf(tmp, tn, "%s", si->upstream_transport_failure_reason);
            for (char *p = tmp; *p; p++) {
                *p = *p == ' ' ? '_' : *p;
            }
            set_str(v, tmp);
        }
        break;
    case OP_UPSTREAM_REQUEST_ATTEMPT_COUNT: set_u64(v, si->attempt_count); break;
    case OP_UPSTREAM_CONNECTION_ID:
        if (si->upstream_connection_id) {
            set_u64(v, si->upstream_connection_id);
        }
        break;
    case OP_DOWNSTREAM_REMOTE_ADDRESS:
    case OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT:
    case OP_DOWNSTREAM_REMOTE_PORT:
        if (si->has_downstream) {
            set_addr(v, &si->downstream_remote, t->op - OP_DOWNSTREAM_REMOTE_ADDRESS, tmp, tn);
        }
        break;
    case OP_DOWNSTREAM_DIRECT_REMOTE_ADDRESS:
    case OP_DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT:
        if (si->has_downstream) {
            set_addr(v, &si->downstream_direct_remote,
                     t->op - OP_DOWNSTREAM_DIRECT_REMOTE_ADDRESS, tmp, tn);
        }
        break;
    case OP_DOWNSTREAM_LOCAL_ADDRESS:
    case OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT:
    case OP_DOWNSTREAM_LOCAL_PORT:
        if (si->has_downstream) {
            set_addr(v, &si->downstream_local, t->op - OP_DOWNSTREAM_LOCAL_ADDRESS, tmp, tn);
        }
        break;
    case OP_REQUESTED_SERVER_NAME: set_str(v, si->requested_server_name); break;
    case OP_ROUTE_NAME: set_str(v, si->route_name); break;
    case OP_CONNECTION_ID:
        if (si->connection_id) {
            set_u64(v, si->connection_id);
        }
        break;
    case OP_CONST: set_str(v, t->lit); break;
    case OP_PEER_URI_SAN: set_str(v, si->downstream_peer_uri_san); break;
    case OP_LOCAL_URI_SAN: set_str(v, si->downstream_local_uri_san); break;
    case OP_UP_PEER_URI_SAN: set_str(v, si->upstream_peer_uri_san); break;
    case OP_UP_LOCAL_URI_SAN: set_str(v, si->upstream_local_uri_san); break;
    case OP_TLS_VERSION: set_str(v, si->downstream_tls_version); break;
    case OP_TLS_CIPHER: set_str(v, si->downstream_tls_cipher); break;
    case OP_DOWNSTREAM_TRANSPORT_FAILURE_REASON:
        set_str(v, si->downstream_transport_failure_reason);
        break;
    case OP_REQ: set_str(v, header(si->request_headers, t)); break;
    case OP_RESP: set_str(v, header(si->response_headers, t)); break;
    case OP_TRAILER: set_str(v, header(si->response_trailers, t)); break;
    case OP_REQ_WITHOUT_QUERY: {
        const char *h = header(si->request_headers, t);
        set_str(v, h);
        const char *qm = h ? strchr(h, '?') : NULL;
        if (qm) {
            v->n = (size_t)(qm - h);
        }
        break;
    }
    }
    if (v->k == V_STR && !v->n && t->op != OP_LITERAL && t->op < OP_REQ) {
        v->k = V_NULL; /* an empty field is unavailable, as Envoy's formatters treat it */
    }
    if (v->k == V_STR && t->max_len >= 0 && v->n > (size_t)t->max_len) {
        v->n = (size_t)t->max_len;
    }
}

/* ---- output --------------------------------------------------------------------------------- */

void msm_al_line_reset(struct msm_al_line *l)
{
    l->len = 0;
}

void msm_al_line_free(struct msm_al_line *l)
{
    free(l->p);
    memset(l, 0, sizeof(*l));
}

static void put(struct msm_al_line *l, const char *s, size_t n)
{
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 512;
        while (cap < l->len + n + 1) {
            cap *= 2;
        }
        l->p = msm_xrealloc(l->p, cap);
        l->cap = cap;
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
    l->p[l->len] = '\0';
}

static void put_u64(struct msm_al_line *l, uint64_t u)
{
    char tmp[24];
    int k = snprintf(tmp, sizeof(tmp), "%" PRIu64, u);
    put(l, tmp, (size_t)k);
}

static void put_json_str(struct msm_al_line *l, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(l, e, 2);
        } else if (c == '\n') {
            put(l, "\\n", 2);
        } else if (c == '\r') {
            put(l, "\\r", 2);
        } else if (c == '\t') {
            put(l, "\\t", 2);
        } else if (c < 0x20) {
            char e[8];
            int k = snprintf(e, sizeof(e), "\\u%04x", c);
            put(l, e, (size_t)k);
        } else {
            put(l, (const char *)&c, 1);
        }
    }
}

/* Render <f> as text; <json>: escape for a JSON string. */
static void render_text(const struct fmt *f, const struct msm_stream_info *si, double now,
                        bool omit_empty, bool json, struct msm_al_line *l)
{
    char tmp[512];
    for (int i = 0; i < f->n; i++) {
        struct val v;
        eval(&f->t[i], si, now, &v, tmp, sizeof(tmp));
        const char *s = v.s;
        size_t n = v.n;
        char num[24];
        if (v.k == V_U64) {
            n = (size_t)snprintf(num, sizeof(num), "%" PRIu64, v.u);
            s = num;
        } else if (v.k == V_NULL) {
            s = omit_empty ? "" : "-";
            n = omit_empty ? 0 : 1;
        }
        if (json) {
            put_json_str(l, s, n);
        } else {
            put(l, s, n);
        }
    }
}

/* ---- JSON dictionaries ---------------------------------------------------------------------- */

enum jkind {
    J_OBJECT = 0,
    J_FORMAT = 1,
    J_RAW = 2, /* a non-string scalar copied as it is (number, bool, null) */
};

struct jnode {
    char *key;
    enum jkind kind;
    struct jnode *kids;
    int nkids;
    struct fmt fmt;
    char *raw;
};

struct msm_al_formatter {
    bool json, typed, omit_empty;
    struct fmt text;
    struct jnode root;
};

static void jnode_deinit(struct jnode *n)
{
    free(n->key);
    for (int i = 0; i < n->nkids; i++) {
        jnode_deinit(&n->kids[i]);
    }
    free(n->kids);
    fmt_deinit(&n->fmt);
    free(n->raw);
}

static int by_key(const void *a, const void *b)
{
    return strcmp(((const struct jnode *)a)->key, ((const struct jnode *)b)->key);
}

static int jnode_build(struct jnode *n, const Google__Protobuf__Struct *st, int depth,
                       struct msm_err *err)
{
    if (depth > 16) {
        return msm_err_set(err, "json_format: nested too deeply");
    }
    n->kind = J_OBJECT;
    n->kids = msm_xcalloc(st->n_fields + 1, sizeof(*n->kids));
    for (size_t i = 0; i < st->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *e = st->fields[i];
        struct jnode *k = &n->kids[n->nkids++];
        k->key = msm_xstrdup(e->key ? e->key : "");
        const Google__Protobuf__Value *v = e->value;
        int rc = 0;
        if (!v) {
            k->kind = J_RAW;
            k->raw = msm_xstrdup("null");
            continue;
        }
        switch (v->kind_case) {
        case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
            rc = jnode_build(k, v->struct_value, depth + 1, err);
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
            k->kind = J_FORMAT;
            rc = fmt_parse(&k->fmt, v->string_value, err);
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: {
            char tmp[64];
            double d = v->number_value;
            if (d == (double)(long long)d) {
                snprintf(tmp, sizeof(tmp), "%lld", (long long)d);
            } else {
                snprintf(tmp, sizeof(tmp), "%.17g", d);
            }
            k->kind = J_RAW;
            k->raw = msm_xstrdup(tmp);
            break;
        }
        case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
            k->kind = J_RAW;
            k->raw = msm_xstrdup(v->bool_value ? "true" : "false");
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE:
            k->kind = J_RAW;
            k->raw = msm_xstrdup("null");
            break;
        default:
            rc = msm_err_set(err, "json_format.%s: only strings, numbers, booleans and nested "
                                  "objects are supported", k->key);
        }
        if (rc < 0) {
            if (!strstr(err->msg, "json_format")) {
                msm_err_prefix(err, "json_format.%s", k->key);
            }
            return MSM_EINVAL;
        }
    }
    if (n->nkids > 1) {
        qsort(n->kids, (size_t)n->nkids, sizeof(*n->kids), by_key);
    }
    return 0;
}

/* A format of exactly one operator keeps its type in typed JSON. */
static void render_value(const struct msm_al_formatter *f, const struct jnode *k,
                         const struct msm_stream_info *si, double now, struct msm_al_line *l)
{
    if (f->typed && k->fmt.n == 1 && k->fmt.t[0].op != OP_LITERAL) {
        char tmp[512];
        struct val v;
        eval(&k->fmt.t[0], si, now, &v, tmp, sizeof(tmp));
        if (v.k == V_NULL) {
            put(l, "null", 4);
        } else if (v.k == V_U64 && numeric(k->fmt.t[0].op)) {
            put_u64(l, v.u);
        } else if (v.k == V_U64) {
            put(l, "\"", 1);
            put_u64(l, v.u);
            put(l, "\"", 1);
        } else {
            put(l, "\"", 1);
            put_json_str(l, v.s, v.n);
            put(l, "\"", 1);
        }
        return;
    }
    put(l, "\"", 1);
    render_text(&k->fmt, si, now, f->omit_empty, true, l);
    put(l, "\"", 1);
}

/* Would this key be left out (omit_empty_values and an unavailable single operator)? */
static bool omitted(const struct msm_al_formatter *f, const struct jnode *k,
                    const struct msm_stream_info *si, double now)
{
    if (!f->omit_empty || k->kind != J_FORMAT || k->fmt.n != 1 ||
        k->fmt.t[0].op == OP_LITERAL) {
        return false;
    }
    char tmp[512];
    struct val v;
    eval(&k->fmt.t[0], si, now, &v, tmp, sizeof(tmp));
    return v.k == V_NULL;
}

static void render_object(const struct msm_al_formatter *f, const struct jnode *n,
                          const struct msm_stream_info *si, double now, struct msm_al_line *l)
{
    put(l, "{", 1);
    bool first = true;
    for (int i = 0; i < n->nkids; i++) {
        const struct jnode *k = &n->kids[i];
        if (omitted(f, k, si, now)) {
            continue;
        }
        if (!first) {
            put(l, ",", 1);
        }
        first = false;
        put(l, "\"", 1);
        put_json_str(l, k->key, strlen(k->key));
        put(l, "\":", 2);
        switch (k->kind) {
        case J_OBJECT: render_object(f, k, si, now, l); break;
        case J_RAW:
            if (f->typed) {
                put(l, k->raw, strlen(k->raw));
            } else {
                put(l, "\"", 1);
                put(l, k->raw, strlen(k->raw));
                put(l, "\"", 1);
            }
            break;
        case J_FORMAT: render_value(f, k, si, now, l); break;
        }
    }
    put(l, "}", 1);
}

/* ---- public --------------------------------------------------------------------------------- */

struct msm_al_formatter *msm_al_formatter_text(const char *fmt, bool omit_empty,
                                               struct msm_err *err)
{
    struct msm_al_formatter *f = MSM_NEW(struct msm_al_formatter);
    f->omit_empty = omit_empty;
    if (fmt_parse(&f->text, fmt ? fmt : MSM_AL_DEFAULT_FORMAT, err) < 0) {
        free(f);
        return NULL;
    }
    return f;
}

struct msm_al_formatter *msm_al_formatter_json(const void *st, bool typed, bool omit_empty,
                                               struct msm_err *err)
{
    struct msm_al_formatter *f = MSM_NEW(struct msm_al_formatter);
    f->json = true;
    f->typed = typed;
    f->omit_empty = omit_empty;
    if (jnode_build(&f->root, st, 0, err) < 0) {
        msm_al_formatter_free(f);
        return NULL;
    }
    return f;
}

void msm_al_formatter_free(struct msm_al_formatter *f)
{
    if (!f) {
        return;
    }
    fmt_deinit(&f->text);
    jnode_deinit(&f->root);
    free(f);
}

void msm_al_format(const struct msm_al_formatter *f, const struct msm_stream_info *si,
                   double now, struct msm_al_line *out)
{
    if (f->json) {
        render_object(f, &f->root, si, now, out);
        put(out, "\n", 1);
        return;
    }
    render_text(&f->text, si, now, f->omit_empty, false, out);
}
