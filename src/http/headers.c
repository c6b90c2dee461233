#include "http/headers.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

void msm_hdrs_init(struct msm_hdrs *h)
{
    memset(h, 0, sizeof(*h));
}

void msm_hdrs_deinit(struct msm_hdrs *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        free(h->v[i].name); /* one allocation holds name and value */
    }
    free(h->v);
    memset(h, 0, sizeof(*h));
}

struct msm_hdrs *msm_hdrs_new(void)
{
    return MSM_NEW(struct msm_hdrs);
}

void msm_hdrs_free(struct msm_hdrs *h)
{
    if (!h) {
        return;
    }
    msm_hdrs_deinit(h);
    free(h);
}

/* Fill <e> with copies of name (lower-cased) and value in one allocation. */
static void entry_set(struct msm_hdr *e, const char *name, size_t nlen, const char *value,
                      size_t vlen)
{
    char *p = msm_xmalloc(nlen + vlen + 2);
    for (size_t i = 0; i < nlen; i++) {
        p[i] = (char)tolower((unsigned char)name[i]);
    }
    p[nlen] = '\0';
    memcpy(p + nlen + 1, value, vlen);
    p[nlen + 1 + vlen] = '\0';
    e->name = p;
    e->value = p + nlen + 1;
    e->nlen = (uint32_t)nlen;
    e->vlen = (uint32_t)vlen;
}

static struct msm_hdr *insert_at(struct msm_hdrs *h, uint32_t pos)
{
    if (h->n == h->cap) {
        size_t cap = h->cap;
        h->v = msm_xgrow(h->v, sizeof(*h->v), &cap, (size_t)h->n + 1);
        h->cap = (uint32_t)cap;
    }
    memmove(&h->v[pos + 1], &h->v[pos], (h->n - pos) * sizeof(*h->v));
    h->n++;
    return &h->v[pos];
}

void msm_hdrs_add(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                  size_t vlen)
{
    uint32_t pos = h->n;
    if (nlen && name[0] == ':') {
        /* Pseudo-headers stay in front of regular ones (HTTP/2 requires it on the wire). */
        pos = 0;
        while (pos < h->n && h->v[pos].name[0] == ':') {
            pos++;
        }
    }
    entry_set(insert_at(h, pos), name, nlen, value, vlen);
    h->bytes += nlen + vlen;
}

void msm_hdrs_addz(struct msm_hdrs *h, const char *name, const char *value)
{
    msm_hdrs_add(h, name, strlen(name), value, strlen(value));
}

const struct msm_hdr *msm_hdrs_find(const struct msm_hdrs *h, const char *name)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (!strcmp(h->v[i].name, name)) {
            return &h->v[i];
        }
    }
    return NULL;
}

const char *msm_hdrs_get(const struct msm_hdrs *h, const char *name)
{
    const struct msm_hdr *e = msm_hdrs_find(h, name);
    return e ? e->value : NULL;
}

int msm_hdrs_count(const struct msm_hdrs *h, const char *name)
{
    int n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        n += !strcmp(h->v[i].name, name);
    }
    return n;
}

static void remove_at(struct msm_hdrs *h, uint32_t i)
{
    h->bytes -= h->v[i].nlen + h->v[i].vlen;
    free(h->v[i].name);
    memmove(&h->v[i], &h->v[i + 1], (h->n - i - 1) * sizeof(*h->v));
    h->n--;
}

int msm_hdrs_remove(struct msm_hdrs *h, const char *name)
{
    int n = 0;
    for (uint32_t i = 0; i < h->n;) {
        if (!strcmp(h->v[i].name, name)) {
            remove_at(h, i);
            n++;
        } else {
            i++;
        }
    }
    return n;
}

int msm_hdrs_remove_prefix(struct msm_hdrs *h, const char *prefix)
{
    size_t pl = strlen(prefix);
    int n = 0;
    for (uint32_t i = 0; i < h->n;) {
        if (!strncmp(h->v[i].name, prefix, pl)) {
            remove_at(h, i);
            n++;
        } else {
            i++;
        }
    }
    return n;
}

void msm_hdrs_setn(struct msm_hdrs *h, const char *name, const char *value, size_t vlen)
{
    size_t nlen = strlen(name);
    for (uint32_t i = 0; i < h->n; i++) {
        if (!strcmp(h->v[i].name, name)) {
            /* Replace the first in place (keeps order), drop the others. */
            h->bytes -= h->v[i].vlen;
            free(h->v[i].name);
            entry_set(&h->v[i], name, nlen, value, vlen);
            h->bytes += vlen;
            for (uint32_t k = i + 1; k < h->n;) {
                if (!strcmp(h->v[k].name, name)) {
                    remove_at(h, k);
                } else {
                    k++;
                }
            }
            return;
        }
    }
    msm_hdrs_add(h, name, nlen, value, vlen);
}

void msm_hdrs_set(struct msm_hdrs *h, const char *name, const char *value)
{
    msm_hdrs_setn(h, name, value, strlen(value));
}

void msm_hdrs_copy(struct msm_hdrs *dst, const struct msm_hdrs *src)
{
    for (uint32_t i = 0; i < src->n; i++) {
        msm_hdrs_add(dst, src->v[i].name, src->v[i].nlen, src->v[i].value, src->v[i].vlen);
    }
}

void msm_hdrs_move(struct msm_hdrs *dst, struct msm_hdrs *src)
{
    msm_hdrs_deinit(dst);
    *dst = *src;
    memset(src, 0, sizeof(*src));
}

bool msm_http_token_in_list(const char *value, const char *tok)
{
    size_t tl = strlen(tok);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        const char *s = p;
        while (*p && *p != ',') {
            p++;
        }
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) {
            e--;
        }
        if ((size_t)(e - s) == tl && !strncasecmp(s, tok, tl)) {
            return true;
        }
    }
    return false;
}

static bool tchar(unsigned char c)
{
    if (isalnum(c)) {
        return true;
    }
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool msm_http_is_token(const char *s, size_t n)
{
    if (!n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!tchar((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

bool msm_http_valid_value(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return false;
        }
    }
    return true;
}

bool msm_http_parse_u64(const char *s, size_t n, uint64_t *out)
{
    if (!n || n > 19) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

const char *msm_http_reason(int code)
{
    switch (code) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
