/* RTSP URLs and SDP rewriting (see rtsp_sdp.h). */
#include "filters/network/rtsp_proxy/rtsp_sdp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buffer/buf.h"
#include "common/alloc.h"

bool msm_rtsp_url_is_absolute(const char *s, size_t n)
{
    for (size_t i = 0; i < n && i < 16; i++) {
        char c = s[i];
        if (c == ':') {
            return i > 0 && i + 2 < n && s[i + 1] == '/' && s[i + 2] == '/';
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '-' || c == '.')) {
            return false;
        }
    }
    return false;
}

int msm_rtsp_url_parse(const char *s, size_t n, struct msm_rtsp_url *u)
{
    memset(u, 0, sizeof(*u));
    if (n > MSM_RTSP_URL_MAX) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 32 || c >= 127) {
            return -1;
        }
    }
    size_t i = 0;
    while (i < n && s[i] != ':') {
        i++;
    }
    if (i + 3 > n || s[i + 1] != '/' || s[i + 2] != '/') {
        return -1;
    }
    u->scheme = s;
    u->scheme_len = i;
    if (!((i == 4 && !strncasecmp(s, "rtsp", 4)) || (i == 5 && !strncasecmp(s, "rtsps", 5)) ||
          (i == 5 && !strncasecmp(s, "rtspu", 5)))) {
        return -1;
    }
    const char *a = s + i + 3, *end = s + n;
    const char *ae = a;
    while (ae < end && *ae != '/' && *ae != '?' && *ae != '#') {
        ae++;
    }
    /* userinfo: up to the last '@' of the authority */
    const char *h = a;
    for (const char *q = a; q < ae; q++) {
        if (*q == '@') {
            h = q + 1;
        }
    }
    const char *pe = ae; /* end of host[:port] */
    const char *colon = NULL;
    if (h < pe && *h == '[') {
        const char *rb = memchr(h, ']', (size_t)(pe - h));
        if (!rb) {
            return -1;
        }
        u->host = h + 1;
        u->host_len = (size_t)(rb - h - 1);
        if (rb + 1 < pe) {
            if (rb[1] != ':') {
                return -1;
            }
            colon = rb + 1;
        }
    } else {
        colon = memchr(h, ':', (size_t)(pe - h));
        u->host = h;
        u->host_len = (size_t)((colon ? colon : pe) - h);
    }
    if (!u->host_len) {
        return -1;
    }
    for (size_t k = 0; k < u->host_len; k++) {
        char c = u->host[k];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '.' || c == '-' || c == ':' || c == '_' || c == '%')) {
            return -1;
        }
    }
    if (colon) {
        const char *ps = colon + 1;
        if (ps == pe) {
            u->port = 0; /* "host:" is allowed (empty port) */
        } else {
            uint32_t v = 0;
            for (const char *q = ps; q < pe; q++) {
                if (*q < '0' || *q > '9' || q - ps >= 5) {
                    return -1;
                }
                v = v * 10 + (uint32_t)(*q - '0');
            }
            if (v > 65535) {
                return -1;
            }
            u->port = v;
        }
    }
    u->rest = ae;
    u->rest_len = (size_t)(end - ae);
    const char *qm = memchr(ae, '?', (size_t)(end - ae));
    const char *hash = memchr(ae, '#', (size_t)(end - ae));
    const char *path_end = qm ? qm : (hash ? hash : end);
    u->path = ae;
    u->path_len = (size_t)(path_end - ae);
    if (qm) {
        u->query = qm + 1;
        u->query_len = (size_t)((hash && hash > qm ? hash : end) - (qm + 1));
    }
    return 0;
}

int msm_rtsp_url_rebase(const char *s, size_t n, const char *authority, char *out, size_t cap)
{
    struct msm_rtsp_url u;
    if (msm_rtsp_url_parse(s, n, &u) < 0) {
        return -1;
    }
    int w = snprintf(out, cap, "%.*s://%s%.*s", (int)u.scheme_len, u.scheme, authority,
                     (int)u.rest_len, u.rest);
    if (w < 0 || (size_t)w >= cap) {
        return -1;
    }
    return w;
}

int msm_rtsp_url_resolve(const char *base, const char *control, char *out, size_t cap)
{
    int w;
    size_t cl = strlen(control);
    if (!cl || !strcmp(control, "*")) {
        w = snprintf(out, cap, "%s", base);
    } else if (msm_rtsp_url_is_absolute(control, cl)) {
        w = snprintf(out, cap, "%s", control);
    } else {
        size_t bl = strlen(base);
        bool slash = (bl && base[bl - 1] == '/') || control[0] == '/';
        if (control[0] == '/' && bl && base[bl - 1] == '/') {
            control++;
        }
        w = snprintf(out, cap, "%s%s%s", base, slash ? "" : "/", control);
    }
    if (w < 0 || (size_t)w >= cap) {
        return -1;
    }
    return w;
}

static uint32_t static_clock(int pt)
{
    switch (pt) {
    case 0: case 3: case 4: case 5: case 7: case 8: case 9: case 12: case 13: case 15: case 18:
        return 8000;
    case 6: return 16000;
    case 10: case 11: return 44100;
    case 16: return 11025;
    case 17: return 22050;
    case 14: case 25: case 26: case 28: case 31: case 32: case 33: case 34:
        return 90000;
    default: return 0;
    }
}

/* Next line of [p, end) without its line end; returns the start of the next one. */
static const char *line_next(const char *p, const char *end, const char **ls, size_t *ll)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *e = nl ? nl : end;
    *ls = p;
    *ll = (size_t)(e - p);
    if (*ll && p[*ll - 1] == '\r') {
        (*ll)--;
    }
    return nl ? nl + 1 : end;
}

static void copy_bounded(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

int msm_sdp_parse(const char *sdp, size_t n, struct msm_sdp_media *m, int max,
                  char *session_control, size_t sc_cap)
{
    const char *p = sdp, *end = sdp + n;
    int count = -1; /* -1: session level */
    bool seen_v = false;
    if (session_control && sc_cap) {
        session_control[0] = '\0';
    }
    while (p < end) {
        const char *l;
        size_t ll;
        p = line_next(p, end, &l, &ll);
        if (ll < 2 || l[1] != '=' || memchr(l, '\0', ll)) {
            continue; /* not an SDP line (msm_sdp_rewrite drops those with NUL bytes) */
        }
        if (l[0] == 'v') {
            seen_v = true;
        } else if (l[0] == 'm') {
            count++;
            if (count >= max) {
                continue;
            }
            struct msm_sdp_media *x = &m[count];
            memset(x, 0, sizeof(*x));
            x->pt = -1;
            /* m=<media> <port>[/n] <proto> <fmt> ... */
            const char *q = l + 2, *le = l + ll;
            const char *sp = memchr(q, ' ', (size_t)(le - q));
            copy_bounded(x->type, sizeof(x->type), q, (size_t)((sp ? sp : le) - q));
            for (int field = 0; sp && field < 2; field++) {
                sp = memchr(sp + 1, ' ', (size_t)(le - sp - 1));
            }
            if (sp) {
                x->pt = 0;
                const char *f = sp + 1;
                int digits = 0;
                while (f < le && *f >= '0' && *f <= '9' && digits < 3) {
                    x->pt = x->pt * 10 + (*f - '0');
                    f++;
                    digits++;
                }
                if (!digits || x->pt > 127) {
                    x->pt = -1;
                } else {
                    x->clock_rate = static_clock(x->pt);
                }
            }
        } else if (l[0] == 'a' && ll > 10 && !strncmp(l, "a=control:", 10)) {
            if (count < 0) {
                if (session_control && sc_cap) {
                    copy_bounded(session_control, sc_cap, l + 10, ll - 10);
                }
            } else if (count < max) {
                copy_bounded(m[count].control, sizeof(m[count].control), l + 10, ll - 10);
            }
        } else if (l[0] == 'a' && ll > 10 && !strncmp(l, "a=rtcp-fb:", 10) && count >= 0 &&
                   count < max) {
            /* a=rtcp-fb:<pt or *> nack: generic NACK ("nack pli" and others are not) */
            const char *q = memchr(l + 10, ' ', ll - 10), *le = l + ll;
            while (q && q < le && *q == ' ') {
                q++;
            }
            const char *e = q;
            while (e && e < le && *e != ' ') {
                e++;
            }
            const char *rest = e;
            while (rest && rest < le && *rest == ' ') {
                rest++;
            }
            if (q && e - q == 4 && !strncasecmp(q, "nack", 4) && rest == le) {
                m[count].nack = true;
            }
        } else if (l[0] == 'a' && ll > 9 && !strncmp(l, "a=rtpmap:", 9) && count >= 0 &&
                   count < max) {
            /* a=rtpmap:<pt> <encoding>/<clock>[/<channels>] */
            char tmp[128];
            copy_bounded(tmp, sizeof(tmp), l + 9, ll - 9);
            int pt = atoi(tmp);
            char *slash = strchr(tmp, '/');
            char *sp = strchr(tmp, ' ');
            if (sp && slash && slash - sp == 4 && !strncasecmp(sp + 1, "rtx", 3)) {
                msm_rtp_pt_set_add(&m[count].rtx, pt); /* a retransmission stream's type */
            }
            if (pt == m[count].pt && slash) {
                long clock = strtol(slash + 1, NULL, 10);
                if (clock > 0 && clock <= 10000000) {
                    m[count].clock_rate = (uint32_t)clock;
                }
            }
        }
    }
    if (!seen_v) {
        return -1;
    }
    count++;
    return count > max ? max : count;
}

/* "IN IP4 <addr>[/ttl[/n]]" -> "IN <type> <conn_addr>" */
static void rewrite_conn(struct msm_buf *out, const char *prefix, const char *l, size_t ll,
                         const char *conn_addr)
{
    (void)l;
    (void)ll;
    const char *type = strchr(conn_addr, ':') ? "IP6" : "IP4";
    msm_buf_appendf(out, "%sIN %s %s\r\n", prefix, type, conn_addr);
}

char *msm_sdp_rewrite(const char *sdp, size_t n, const char *authority, const char *conn_addr,
                      size_t *out_len)
{
    struct msm_buf out;
    msm_buf_init(&out);
    const char *p = sdp, *end = sdp + n;
    char url[MSM_RTSP_URL_MAX + 256];
    while (p < end) {
        const char *l;
        size_t ll;
        p = line_next(p, end, &l, &ll);
        if (memchr(l, '\0', ll)) {
            continue; /* not text: such a line never reaches a client */
        }
        if (ll >= 2 && l[0] == 'c' && l[1] == '=' && ll >= 9 && !strncmp(l + 2, "IN IP", 5)) {
            rewrite_conn(&out, "c=", l, ll, conn_addr);
            continue;
        }
        if (ll > 10 && !strncmp(l, "a=control:", 10) &&
            msm_rtsp_url_is_absolute(l + 10, ll - 10)) {
            int w = msm_rtsp_url_rebase(l + 10, ll - 10, authority, url, sizeof(url));
            if (w >= 0) {
                msm_buf_appendf(&out, "a=control:%s\r\n", url);
                continue;
            }
        }
        if (ll > 7 && !strncmp(l, "a=rtcp:", 7)) {
            /* a=rtcp:<port> [IN IP4 <addr>]: the address, if any, becomes ours */
            const char *in = memmem(l, ll, " IN IP", 6);
            if (in) {
                char pfx[64];
                copy_bounded(pfx, sizeof(pfx), l, (size_t)(in - l) + 1);
                rewrite_conn(&out, pfx, l, ll, conn_addr);
                continue;
            }
        }
        if (!ll && p >= end) {
            break; /* no trailing empty line */
        }
        msm_buf_append(&out, l, ll);
        msm_buf_append(&out, "\r\n", 2);
    }
    size_t len = out.len;
    char *s = msm_xmalloc(len + 1);
    msm_buf_copyout(&out, 0, s, len);
    s[len] = '\0';
    msm_buf_deinit(&out);
    *out_len = len;
    return s;
}
