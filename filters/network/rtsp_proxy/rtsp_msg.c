/* RTSP message parser (see rtsp_msg.h for what it accepts and refuses). */
#include "filters/network/rtsp_proxy/rtsp_msg.h"

#include <string.h>
#include <strings.h>

static const char *const method_names[MSM_RTSP_M_COUNT] = {
    [MSM_RTSP_M_UNKNOWN] = "UNKNOWN",
    [MSM_RTSP_M_OPTIONS] = "OPTIONS",
    [MSM_RTSP_M_DESCRIBE] = "DESCRIBE",
    [MSM_RTSP_M_ANNOUNCE] = "ANNOUNCE",
    [MSM_RTSP_M_SETUP] = "SETUP",
    [MSM_RTSP_M_PLAY] = "PLAY",
    [MSM_RTSP_M_PAUSE] = "PAUSE",
    [MSM_RTSP_M_RECORD] = "RECORD",
    [MSM_RTSP_M_REDIRECT] = "REDIRECT",
    [MSM_RTSP_M_GET_PARAMETER] = "GET_PARAMETER",
    [MSM_RTSP_M_SET_PARAMETER] = "SET_PARAMETER",
    [MSM_RTSP_M_TEARDOWN] = "TEARDOWN",
    [MSM_RTSP_M_PLAY_NOTIFY] = "PLAY_NOTIFY",
};

enum msm_rtsp_method msm_rtsp_method_parse(const char *p, size_t n)
{
    for (int i = 1; i < MSM_RTSP_M_COUNT; i++) {
        if (strlen(method_names[i]) == n && !memcmp(method_names[i], p, n)) {
            return (enum msm_rtsp_method)i;
        }
    }
    return MSM_RTSP_M_UNKNOWN;
}

const char *msm_rtsp_method_name(enum msm_rtsp_method m)
{
    return (unsigned)m < MSM_RTSP_M_COUNT ? method_names[m] : "UNKNOWN";
}

const char *msm_rtsp_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 301: return "Moved Permanently";
    case 302: return "Moved Temporarily";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 413: return "Request Entity Too Large";
    case 414: return "Request-URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Parameter Not Understood";
    case 453: return "Not Enough Bandwidth";
    case 454: return "Session Not Found";
    case 455: return "Method Not Valid in This State";
    case 459: return "Aggregate Operation Not Allowed";
    case 460: return "Only Aggregate Operation Allowed";
    case 461: return "Unsupported Transport";
    case 463: return "Destination Prohibited";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Time-out";
    case 505: return "RTSP Version Not Supported";
    case 551: return "Option Not Supported";
    default: break;
    }
    if (status >= 200 && status < 300) {
        return "OK";
    }
    return status >= 500 ? "Server Error" : "Client Error";
}

bool msm_rtsp_str_eq(struct msm_rtsp_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && !memcmp(s.p, lit, n);
}

bool msm_rtsp_str_ieq(struct msm_rtsp_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && !strncasecmp(s.p, lit, n);
}

bool msm_rtsp_str_iprefix(struct msm_rtsp_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n >= n && !strncasecmp(s.p, lit, n);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

struct msm_rtsp_str msm_rtsp_trim(struct msm_rtsp_str s)
{
    while (s.n && (is_ws(s.p[0]) || s.p[0] == '\r' || s.p[0] == '\n')) {
        s.p++;
        s.n--;
    }
    while (s.n && (is_ws(s.p[s.n - 1]) || s.p[s.n - 1] == '\r' || s.p[s.n - 1] == '\n')) {
        s.n--;
    }
    return s;
}

/* Token characters of RFC 2326 (method and header names). */
static bool is_tchar(unsigned char c)
{
    if (c <= 32 || c >= 127) {
        return false;
    }
    return !strchr("()<>@,;:\\\"/[]?={}", c);
}

/* Find the end of the head: offset just past the blank line, or 0 when not yet complete.
 * Accepts CRLF CRLF and bare LF LF (and mixes). *bad set on a NUL byte. */
static size_t head_end(const char *d, size_t len, size_t limit, bool *bad)
{
    size_t max = len < limit ? len : limit;
    for (size_t i = 0; i < max; i++) {
        if (d[i] == '\0') {
            *bad = true;
            return 0;
        }
        if (d[i] != '\n') {
            continue;
        }
        size_t j = i + 1;
        if (j < len && d[j] == '\r') {
            j++;
        }
        if (j < len && d[j] == '\n') {
            return j + 1;
        }
    }
    return 0;
}

/* Next line of [p, end): sets *line (without its line end) and returns the start of the next. */
static const char *next_line(const char *p, const char *end, struct msm_rtsp_str *line)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *e = nl ? nl : end;
    line->p = p;
    line->n = (size_t)(e - p);
    if (line->n && line->p[line->n - 1] == '\r') {
        line->n--;
    }
    return nl ? nl + 1 : end;
}

static int parse_version(const char *p, size_t n, int *maj, int *min)
{
    if (n != 8 || memcmp(p, "RTSP/", 5) != 0 || p[6] != '.' || p[5] < '0' || p[5] > '9' ||
        p[7] < '0' || p[7] > '9') {
        return MSM_RTSP_E_BAD;
    }
    *maj = p[5] - '0';
    *min = p[7] - '0';
    if (!((*maj == 1 && *min == 0) || (*maj == 2 && *min == 0))) {
        return MSM_RTSP_E_VERSION;
    }
    return 0;
}

static bool no_ctl(struct msm_rtsp_str s)
{
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if ((c < 32 && c != '\t') || c == 127) {
            return false;
        }
    }
    return true;
}

static int parse_start_line(struct msm_rtsp_str l, struct msm_rtsp_msg *m)
{
    if (!no_ctl(l)) {
        return MSM_RTSP_E_BAD;
    }
    const char *sp1 = memchr(l.p, ' ', l.n);
    if (!sp1) {
        return MSM_RTSP_E_BAD;
    }
    size_t first = (size_t)(sp1 - l.p);
    if (first >= 5 && !memcmp(l.p, "RTSP/", 5)) {
        /* Status-Line: RTSP/1.0 SP 3DIGIT SP Reason */
        m->is_response = true;
        int rc = parse_version(l.p, first, &m->ver_major, &m->ver_minor);
        if (rc < 0) {
            return rc;
        }
        const char *p = sp1 + 1, *end = l.p + l.n;
        if (end - p < 3 || p[0] < '1' || p[0] > '9' || p[1] < '0' || p[1] > '9' || p[2] < '0' ||
            p[2] > '9' || (end - p > 3 && p[3] != ' ')) {
            return MSM_RTSP_E_BAD;
        }
        m->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
        m->reason.p = p + 3;
        m->reason.n = (size_t)(end - (p + 3));
        m->reason = msm_rtsp_trim(m->reason);
        return 0;
    }
    /* Request-Line: Method SP Request-URI SP RTSP-Version */
    for (size_t i = 0; i < first; i++) {
        if (!is_tchar((unsigned char)l.p[i])) {
            return MSM_RTSP_E_BAD;
        }
    }
    if (!first) {
        return MSM_RTSP_E_BAD;
    }
    m->method_str.p = l.p;
    m->method_str.n = first;
    m->method = msm_rtsp_method_parse(l.p, first);
    const char *u = sp1 + 1, *end = l.p + l.n;
    const char *sp2 = NULL;
    for (const char *q = end; q > u; q--) { /* last space: URIs have none, be lenient anyway */
        if (q[-1] == ' ') {
            sp2 = q - 1;
            break;
        }
    }
    if (!sp2 || sp2 == u) {
        return MSM_RTSP_E_BAD;
    }
    m->uri.p = u;
    m->uri.n = (size_t)(sp2 - u);
    m->uri = msm_rtsp_trim(m->uri);
    if (!m->uri.n) {
        return MSM_RTSP_E_BAD;
    }
    for (size_t i = 0; i < m->uri.n; i++) {
        if (m->uri.p[i] == ' ' || m->uri.p[i] == '\t') {
            return MSM_RTSP_E_BAD;
        }
    }
    return parse_version(sp2 + 1, (size_t)(end - sp2 - 1), &m->ver_major, &m->ver_minor);
}

static int parse_content_length(struct msm_rtsp_str v, size_t max, size_t *out)
{
    if (!v.n || v.n > 10) {
        return MSM_RTSP_E_BAD;
    }
    size_t n = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') {
            return MSM_RTSP_E_BAD;
        }
        n = n * 10 + (size_t)(v.p[i] - '0');
    }
    if (n > max) {
        return MSM_RTSP_E_BODY_TOO_BIG;
    }
    *out = n;
    return 0;
}

int msm_rtsp_parse(const char *data, size_t len, const struct msm_rtsp_limits *lim,
                   struct msm_rtsp_msg *m, size_t *total)
{
    memset(m, 0, sizeof(*m));
    size_t skip = 0;
    /* Tolerate empty lines between messages (RFC 2616-style robustness). */
    while (skip < len && (data[skip] == '\r' || data[skip] == '\n')) {
        skip++;
    }
    if (skip > lim->max_head) {
        return MSM_RTSP_E_BAD;
    }
    const char *d = data + skip;
    size_t dlen = len - skip;
    bool bad = false;
    size_t hend = head_end(d, dlen, lim->max_head, &bad);
    if (bad) {
        return MSM_RTSP_E_BAD;
    }
    if (!hend) {
        return dlen >= lim->max_head ? MSM_RTSP_E_HEAD_TOO_BIG : 0;
    }
    const char *p = d, *end = d + hend;
    struct msm_rtsp_str line;
    p = next_line(p, end, &line);
    int rc = parse_start_line(line, m);
    if (rc < 0) {
        return rc;
    }
    size_t clen = 0;
    bool have_clen = false;
    int max_headers = lim->max_headers < MSM_RTSP_MAX_HEADERS ? lim->max_headers
                                                               : MSM_RTSP_MAX_HEADERS;
    while (p < end) {
        p = next_line(p, end, &line);
        if (!line.n) {
            break; /* the blank line */
        }
        if (!no_ctl(line)) {
            return MSM_RTSP_E_BAD;
        }
        if (is_ws(line.p[0])) {
            /* obs-fold: continuation of the previous header's value */
            if (!m->n_hdr) {
                return MSM_RTSP_E_BAD;
            }
            struct msm_rtsp_hdr *h = &m->hdr[m->n_hdr - 1];
            h->value.n = (size_t)(line.p + line.n - h->value.p);
            h->value = msm_rtsp_trim(h->value);
            continue;
        }
        const char *colon = memchr(line.p, ':', line.n);
        if (!colon) {
            return MSM_RTSP_E_BAD;
        }
        struct msm_rtsp_str name = {line.p, (size_t)(colon - line.p)};
        name = msm_rtsp_trim(name);
        if (!name.n) {
            return MSM_RTSP_E_BAD;
        }
        for (size_t i = 0; i < name.n; i++) {
            if (!is_tchar((unsigned char)name.p[i])) {
                return MSM_RTSP_E_BAD;
            }
        }
        if (m->n_hdr >= max_headers) {
            return MSM_RTSP_E_HEAD_TOO_BIG;
        }
        struct msm_rtsp_hdr *h = &m->hdr[m->n_hdr++];
        h->name = name;
        h->value.p = colon + 1;
        h->value.n = (size_t)(line.p + line.n - (colon + 1));
        h->value = msm_rtsp_trim(h->value);
        if (msm_rtsp_str_ieq(name, "Content-Length")) {
            size_t v;
            rc = parse_content_length(h->value, lim->max_body, &v);
            if (rc < 0) {
                return rc;
            }
            if (have_clen && v != clen) {
                return MSM_RTSP_E_BAD; /* conflicting lengths: a smuggling vector */
            }
            clen = v;
            have_clen = true;
        }
    }
    if (dlen - hend < clen) {
        return 0;
    }
    m->body.p = d + hend;
    m->body.n = clen;
    m->total = skip + hend + clen;
    *total = m->total;
    return (int)(m->total > (size_t)0x7fffffff ? 0x7fffffff : m->total);
}

int msm_rtsp_next(const char *data, size_t len, const struct msm_rtsp_limits *lim,
                  struct msm_rtsp_msg *msg, uint8_t *channel, const uint8_t **payload,
                  size_t *plen, size_t *total)
{
    if (!len) {
        return MSM_RTSP_NEED_MORE;
    }
    if (data[0] == '$') {
        if (len < 4) {
            return MSM_RTSP_NEED_MORE;
        }
        const uint8_t *u = (const uint8_t *)data;
        size_t n = ((size_t)u[2] << 8) | u[3];
        if (len < 4 + n) {
            return MSM_RTSP_NEED_MORE;
        }
        *channel = u[1];
        *payload = u + 4;
        *plen = n;
        *total = 4 + n;
        return MSM_RTSP_FRAME;
    }
    int rc = msm_rtsp_parse(data, len, lim, msg, total);
    if (rc < 0) {
        return rc;
    }
    return rc > 0 ? MSM_RTSP_MESSAGE : MSM_RTSP_NEED_MORE;
}

const struct msm_rtsp_hdr *msm_rtsp_header(const struct msm_rtsp_msg *m, const char *name)
{
    for (int i = 0; i < m->n_hdr; i++) {
        if (msm_rtsp_str_ieq(m->hdr[i].name, name)) {
            return &m->hdr[i];
        }
    }
    return NULL;
}

bool msm_rtsp_cseq(const struct msm_rtsp_msg *m, uint32_t *out)
{
    const struct msm_rtsp_hdr *h = msm_rtsp_header(m, "CSeq");
    if (!h || !h->value.n || h->value.n > 9) {
        return false;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < h->value.n; i++) {
        char c = h->value.p[i];
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + (uint32_t)(c - '0');
    }
    *out = v;
    return true;
}

struct msm_rtsp_str msm_rtsp_session_id(const struct msm_rtsp_msg *m)
{
    struct msm_rtsp_str s = {"", 0};
    const struct msm_rtsp_hdr *h = msm_rtsp_header(m, "Session");
    if (!h) {
        return s;
    }
    s = h->value;
    const char *semi = memchr(s.p, ';', s.n);
    if (semi) {
        s.n = (size_t)(semi - s.p);
    }
    return msm_rtsp_trim(s);
}
