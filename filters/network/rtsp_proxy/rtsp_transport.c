/* RTSP Transport header parser and serializer (see rtsp_transport.h). */
#include "filters/network/rtsp_proxy/rtsp_transport.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

struct span {
    const char *p;
    size_t n;
};

static struct span trim(struct span s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.n--;
    }
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t')) {
        s.n--;
    }
    return s;
}

static bool ieq(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && !strncasecmp(s.p, lit, n);
}

/* Decimal number <= max; false on anything else. */
static bool parse_uint(struct span s, uint32_t max, uint32_t *out)
{
    if (!s.n || s.n > 10) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(s.p[i] - '0');
    }
    if (v > max) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* "a-b" or "a" (b = a + 1); values <= max. */
static bool parse_range(struct span s, uint32_t max, uint32_t out[2])
{
    const char *dash = memchr(s.p, '-', s.n);
    if (!dash) {
        if (!parse_uint(trim(s), max, &out[0])) {
            return false;
        }
        out[1] = out[0] + 1 <= max ? out[0] + 1 : out[0];
        return true;
    }
    struct span a = {s.p, (size_t)(dash - s.p)};
    struct span b = {dash + 1, (size_t)(s.p + s.n - dash - 1)};
    return parse_uint(trim(a), max, &out[0]) && parse_uint(trim(b), max, &out[1]);
}

static bool copy_str(struct span s, char *dst, size_t cap)
{
    s = trim(s);
    if (s.n >= 2 && s.p[0] == '"' && s.p[s.n - 1] == '"') {
        s.p++;
        s.n -= 2;
    }
    if (!s.n || s.n >= cap) {
        return false;
    }
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        /* host names, IPv4/IPv6 literals, optional ":port" / brackets */
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_')) {
            return false;
        }
    }
    memcpy(dst, s.p, s.n);
    dst[s.n] = '\0';
    return true;
}

/* A host as the proxy stores it: brackets only around IPv6 literals in 2.0 forms, never kept. */
static bool host_ok(const char *h)
{
    return !strchr(h, '[') && !strchr(h, ']');
}

/* RTSP 2.0 dest_addr/src_addr: "host:port" or ":port" or "[v6]:port", possibly quoted; keeps
 * the host part in <dst> and returns the port (0 if none) in *port. */
static bool parse_addr2(struct span s, char *dst, size_t cap, uint32_t *port)
{
    char tmp[MSM_RTSP_ADDR_MAX + 8]; /* room for brackets and ":port" around a full host */
    if (!copy_str(s, tmp, sizeof(tmp))) {
        return false;
    }
    *port = 0;
    char *host = tmp;
    char *colon = NULL;
    if (tmp[0] == '[') {
        char *rb = strchr(tmp, ']');
        if (!rb) {
            return false;
        }
        *rb = '\0';
        host = tmp + 1;
        if (rb[1] == ':') {
            colon = rb + 1;
        } else if (rb[1]) {
            return false;
        }
    } else {
        colon = strrchr(tmp, ':');
        if (colon && strchr(tmp, ':') != colon) {
            colon = NULL; /* bare IPv6 literal */
        }
    }
    if (colon) {
        *colon = '\0';
        struct span ps = {colon + 1, strlen(colon + 1)};
        if (!parse_uint(ps, 65535, port)) {
            return false;
        }
    }
    size_t hl = strlen(host);
    if (hl >= cap || !host_ok(host)) {
        return false;
    }
    memcpy(dst, host, hl + 1);
    return true;
}

static bool parse_ssrc(struct span s, uint32_t *out)
{
    s = trim(s);
    /* 2.0 allows a '/'-separated list: keep the first */
    const char *slash = memchr(s.p, '/', s.n);
    if (slash) {
        s.n = (size_t)(slash - s.p);
    }
    if (!s.n || s.n > 8) {
        return false;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        int d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        } else {
            return false;
        }
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return true;
}

/* The transport-id: RTP/AVP[/UDP|/TCP] and the secure/feedback profiles. 1 known, 0 another
 * protocol (skipped), -1 malformed. */
static int parse_proto(struct span s, struct msm_rtsp_transport *t)
{
    s = trim(s);
    const char *p = s.p;
    size_t n = s.n;
    if (n < 7 || strncasecmp(p, "RTP/", 4) != 0) {
        return n ? 0 : -1;
    }
    p += 4;
    n -= 4;
    const char *slash = memchr(p, '/', n);
    struct span prof = {p, slash ? (size_t)(slash - p) : n};
    if (ieq(prof, "AVP")) {
        t->profile = MSM_RTSP_AVP;
    } else if (ieq(prof, "SAVP")) {
        t->profile = MSM_RTSP_SAVP;
    } else if (ieq(prof, "AVPF")) {
        t->profile = MSM_RTSP_AVPF;
    } else if (ieq(prof, "SAVPF")) {
        t->profile = MSM_RTSP_SAVPF;
    } else {
        return 0;
    }
    t->lower = MSM_RTSP_LOWER_UDP;
    if (slash) {
        struct span low = {slash + 1, (size_t)(p + n - slash - 1)};
        if (ieq(low, "TCP")) {
            t->lower = MSM_RTSP_LOWER_TCP;
        } else if (!ieq(low, "UDP")) {
            return 0;
        }
    }
    return 1;
}

static int parse_param(struct span prm, struct msm_rtsp_transport *t)
{
    prm = trim(prm);
    if (!prm.n) {
        return 0; /* ";;" */
    }
    const char *eq = memchr(prm.p, '=', prm.n);
    struct span key = {prm.p, eq ? (size_t)(eq - prm.p) : prm.n};
    struct span val = {eq ? eq + 1 : prm.p + prm.n, eq ? (size_t)(prm.p + prm.n - eq - 1) : 0};
    key = trim(key);
    val = trim(val);
    uint32_t r[2], v;
    if (ieq(key, "unicast")) {
        t->multicast = false;
    } else if (ieq(key, "multicast")) {
        t->multicast = true;
    } else if (ieq(key, "client_port")) {
        if (!parse_range(val, 65535, r)) {
            return -1;
        }
        t->has_client_port = true;
        t->client_port[0] = (uint16_t)r[0];
        t->client_port[1] = (uint16_t)r[1];
    } else if (ieq(key, "server_port")) {
        if (!parse_range(val, 65535, r)) {
            return -1;
        }
        t->has_server_port = true;
        t->server_port[0] = (uint16_t)r[0];
        t->server_port[1] = (uint16_t)r[1];
    } else if (ieq(key, "port")) {
        if (!parse_range(val, 65535, r)) {
            return -1;
        }
        t->has_port = true;
        t->port[0] = (uint16_t)r[0];
        t->port[1] = (uint16_t)r[1];
    } else if (ieq(key, "interleaved")) {
        if (!parse_range(val, 255, r)) {
            return -1;
        }
        t->has_interleaved = true;
        t->interleaved[0] = (uint8_t)r[0];
        t->interleaved[1] = (uint8_t)r[1];
    } else if (ieq(key, "ttl")) {
        if (!parse_uint(val, 255, &v)) {
            return -1;
        }
        t->has_ttl = true;
        t->ttl = (uint8_t)v;
    } else if (ieq(key, "ssrc")) {
        if (!parse_ssrc(val, &t->ssrc)) {
            return -1;
        }
        t->has_ssrc = true;
    } else if (ieq(key, "destination")) {
        if (val.n && (!copy_str(val, t->destination, sizeof(t->destination)) ||
                      !host_ok(t->destination))) {
            return -1;
        }
    } else if (ieq(key, "source")) {
        if (!copy_str(val, t->source, sizeof(t->source)) || !host_ok(t->source)) {
            return -1;
        }
    } else if (ieq(key, "dest_addr")) {
        /* 2.0: "host:port[/...]" list; keep the first (RTP) */
        const char *sl = memchr(val.p, '/', val.n);
        struct span first = {val.p, sl ? (size_t)(sl - val.p) : val.n};
        if (!parse_addr2(first, t->destination, sizeof(t->destination), &v)) {
            return -1;
        }
        if (v) {
            t->has_client_port = true;
            t->client_port[0] = (uint16_t)v;
            t->client_port[1] = (uint16_t)(v < 65535 ? v + 1 : v);
        }
    } else if (ieq(key, "src_addr")) {
        const char *sl = memchr(val.p, '/', val.n);
        struct span first = {val.p, sl ? (size_t)(sl - val.p) : val.n};
        if (!parse_addr2(first, t->source, sizeof(t->source), &v)) {
            return -1;
        }
        if (v) {
            t->has_server_port = true;
            t->server_port[0] = (uint16_t)v;
            t->server_port[1] = (uint16_t)(v < 65535 ? v + 1 : v);
        }
    } else if (ieq(key, "mode")) {
        struct span m = val;
        if (m.n >= 2 && m.p[0] == '"' && m.p[m.n - 1] == '"') {
            m.p++;
            m.n -= 2;
        }
        m = trim(m);
        t->has_mode = true;
        if (ieq(m, "RECORD") || ieq(m, "receive")) {
            t->mode_record = true;
        } else if (ieq(m, "PLAY") || ieq(m, "play")) {
            t->mode_record = false;
        } else {
            return -1;
        }
    } else if (ieq(key, "append")) {
        t->append = true;
    } else if (ieq(key, "RTCP-mux")) {
        t->rtcp_mux = true;
    }
    /* layers, setup, connection, MIKEY...: not used by the proxy */
    return 0;
}

/* One transport-spec (no commas inside). 1 parsed, 0 skipped (other protocol), -1 malformed. */
static int parse_spec(struct span s, struct msm_rtsp_transport *t)
{
    memset(t, 0, sizeof(*t));
    const char *semi = memchr(s.p, ';', s.n);
    struct span proto = {s.p, semi ? (size_t)(semi - s.p) : s.n};
    int rc = parse_proto(proto, t);
    if (rc <= 0) {
        return rc;
    }
    const char *p = semi ? semi + 1 : s.p + s.n;
    const char *end = s.p + s.n;
    int nparams = 0;
    while (p < end) {
        const char *q = memchr(p, ';', (size_t)(end - p));
        struct span prm = {p, q ? (size_t)(q - p) : (size_t)(end - p)};
        if (++nparams > 32 || parse_param(prm, t) < 0) {
            return -1;
        }
        p = q ? q + 1 : end;
    }
    return 1;
}

int msm_rtsp_transport_parse(const char *v, size_t n, struct msm_rtsp_transport *out, int max)
{
    int count = 0, specs = 0;
    const char *p = v, *end = v + n;
    if (!n || n > 4096) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 32 && c != '\t' && c != '\r' && c != '\n') {
            return -1;
        }
    }
    while (p < end) {
        /* commas inside quotes do not split (mode="PLAY,RECORD" is not valid, but be safe) */
        const char *q = p;
        bool inq = false;
        while (q < end && (inq || *q != ',')) {
            if (*q == '"') {
                inq = !inq;
            }
            q++;
        }
        struct span s = {p, (size_t)(q - p)};
        s = trim(s);
        if (s.n) {
            if (++specs > MSM_RTSP_MAX_TRANSPORTS) {
                return -1;
            }
            if (count < max) {
                int rc = parse_spec(s, &out[count]);
                if (rc < 0) {
                    return -1;
                }
                count += rc;
            }
        }
        p = q < end ? q + 1 : end;
    }
    return specs ? count : -1;
}

static const char *profile_name(enum msm_rtsp_profile p)
{
    switch (p) {
    case MSM_RTSP_SAVP: return "SAVP";
    case MSM_RTSP_AVPF: return "AVPF";
    case MSM_RTSP_SAVPF: return "SAVPF";
    default: return "AVP";
    }
}

int msm_rtsp_transport_format(const struct msm_rtsp_transport *t, bool v2, char *buf, size_t n)
{
    size_t off = 0;
    int w;
#define PUT(...)                                                                                  \
    do {                                                                                          \
        w = snprintf(buf + off, n - off, __VA_ARGS__);                                            \
        if (w < 0 || (size_t)w >= n - off) {                                                      \
            return -1;                                                                            \
        }                                                                                         \
        off += (size_t)w;                                                                         \
    } while (0)
    if (!n) {
        return -1;
    }
    buf[0] = '\0';
    PUT("RTP/%s%s;%s", profile_name(t->profile), t->lower == MSM_RTSP_LOWER_TCP ? "/TCP" : "",
        t->multicast ? "multicast" : "unicast");
    if (v2) {
        if (t->destination[0] || (t->has_client_port && t->lower == MSM_RTSP_LOWER_UDP)) {
            bool v6 = strchr(t->destination, ':') != NULL;
            if (t->has_client_port) {
                PUT(";dest_addr=\"%s%s%s:%u\"/\"%s%s%s:%u\"", v6 ? "[" : "", t->destination,
                    v6 ? "]" : "", t->client_port[0], v6 ? "[" : "", t->destination,
                    v6 ? "]" : "", t->client_port[1]);
            }
        }
        if (t->has_server_port && t->lower == MSM_RTSP_LOWER_UDP) {
            bool v6 = strchr(t->source, ':') != NULL;
            PUT(";src_addr=\"%s%s%s:%u\"/\"%s%s%s:%u\"", v6 ? "[" : "", t->source, v6 ? "]" : "",
                t->server_port[0], v6 ? "[" : "", t->source, v6 ? "]" : "", t->server_port[1]);
        }
    } else {
        if (t->destination[0]) {
            PUT(";destination=%s", t->destination);
        }
        if (t->source[0]) {
            PUT(";source=%s", t->source);
        }
        if (t->has_client_port) {
            PUT(";client_port=%u-%u", t->client_port[0], t->client_port[1]);
        }
        if (t->has_server_port) {
            PUT(";server_port=%u-%u", t->server_port[0], t->server_port[1]);
        }
    }
    if (t->has_interleaved) {
        PUT(";interleaved=%u-%u", t->interleaved[0], t->interleaved[1]);
    }
    if (t->has_port) {
        PUT(";port=%u-%u", t->port[0], t->port[1]);
    }
    if (t->has_ttl) {
        PUT(";ttl=%u", t->ttl);
    }
    if (t->has_ssrc) {
        PUT(";ssrc=%08X", t->ssrc);
    }
    if (t->rtcp_mux) {
        PUT(";RTCP-mux");
    }
    if (t->has_mode) {
        PUT(";mode=\"%s\"", t->mode_record ? "RECORD" : "PLAY");
    }
#undef PUT
    return (int)off;
}
