#include "http/headers.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buffer/recycle.h"
#include "common/alloc.h"

#define FIRST_CAP 16     /* entries: a typical request or response fits */
#define FIRST_CHUNK 512  /* bytes, with the chunk header */
#define MAX_CHUNK 8192

struct msm_hdrs_chunk {
    struct msm_hdrs_chunk *next;
    uint32_t used, cap; /* bytes of data[] */
    char data[];
};

void msm_hdrs_init(struct msm_hdrs *h)
{
    memset(h, 0, sizeof(*h));
}

void msm_hdrs_deinit(struct msm_hdrs *h)
{
    while (h->chunks) {
        struct msm_hdrs_chunk *c = h->chunks;
        h->chunks = c->next;
        msm_recycle_free(c, sizeof(*c) + c->cap);
    }
    if (h->v) { /* no call for the empty maps of a request (moved from, or never filled) */
        msm_recycle_free(h->v, (size_t)h->cap * sizeof(*h->v));
    }
    memset(h, 0, sizeof(*h));
}

/* <n> bytes for a name and value from the map's chunks. */
static char *str_alloc(struct msm_hdrs *h, size_t n)
{
    struct msm_hdrs_chunk *c = h->chunks;
    if (!c || c->cap - c->used < n) {
        size_t size = c ? (sizeof(*c) + c->cap) * 2 : FIRST_CHUNK;
        if (size > MAX_CHUNK) {
            size = MAX_CHUNK;
        }
        if (size < sizeof(*c) + n) {
            size = sizeof(*c) + n; /* a huge value gets a chunk of its own */
        }
        c = msm_recycle_alloc(size); /* nothing reads past <used> */
        c->cap = (uint32_t)(size - sizeof(*c));
        c->used = 0;
        c->next = h->chunks;
        h->chunks = c;
    }
    char *p = c->data + c->used;
    c->used += (uint32_t)n;
    return p;
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

/* Loads and stores of a word at any alignment (memcpy of a constant size: one instruction). */
static inline uint64_t ld64(const char *s)
{
    uint64_t w;
    memcpy(&w, s, 8);
    return w;
}

static inline uint32_t ld32(const char *s)
{
    uint32_t w;
    memcpy(&w, s, 4);
    return w;
}

static inline void st64(char *d, uint64_t w)
{
    memcpy(d, &w, 8);
}

static inline void st32(char *d, uint32_t w)
{
    memcpy(d, &w, 4);
}

/* memcpy without a call for the short names and values of most fields: up to 32 bytes as words
 * at both ends, which overlap in the middle (the bytes they share get the same value twice). A
 * call and the library's size dispatch cost more than the copy itself. */
static inline void copy_short(char *d, const char *s, size_t n)
{
    if (n >= 8) {
        if (n > 32) {
            memcpy(d, s, n);
            return;
        }
        uint64_t a = ld64(s), b = ld64(s + n - 8);
        if (n > 16) {
            uint64_t c = ld64(s + 8), e = ld64(s + n - 16);
            st64(d + 8, c);
            st64(d + n - 16, e);
        }
        st64(d, a);
        st64(d + n - 8, b);
    } else if (n >= 4) {
        uint32_t a = ld32(s), b = ld32(s + n - 4);
        st32(d, a);
        st32(d + n - 4, b);
    } else if (n) {
        d[0] = s[0]; /* 1 to 3 bytes: first, middle, last */
        d[n >> 1] = s[n >> 1];
        d[n - 1] = s[n - 1];
    }
}

/* Do <n> bytes at <a> and <b> match? Without a call up to 16 bytes (every well-known name but a
 * few), by the same overlapping words as copy_short. */
static inline bool bytes_eq(const char *a, const char *b, size_t n)
{
    if (n >= 8) {
        if (n > 16) {
            return !memcmp(a, b, n);
        }
        return !((ld64(a) ^ ld64(b)) | (ld64(a + n - 8) ^ ld64(b + n - 8)));
    }
    if (n >= 4) {
        return !((ld32(a) ^ ld32(b)) | (ld32(a + n - 4) ^ ld32(b + n - 4)));
    }
    return !n || (a[0] == b[0] && a[n >> 1] == b[n >> 1] && a[n - 1] == b[n - 1]);
}

/* Copy <n> bytes of <s> to <d> with ASCII A-Z lower-cased (no locale lookup), eight bytes at a
 * time: in each byte of the 7-bit part, adding 0x80 - 'A' sets the top bit from 'A' up and
 * adding 0x7f - 'Z' from past 'Z' (no carry crosses bytes); bytes >= 0x80 are left alone. */
static inline uint64_t fold_word(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t low7 = w & ~highs;
    uint64_t upper = ((low7 + (0x80 - 'A') * ones) ^ (low7 + (0x7f - 'Z') * ones)) & ~w & highs;
    return w | upper >> 2; /* 0x80 >> 2 = 0x20 = 'a' - 'A' */
}

static inline void fold_lower(char *d, const char *s, size_t n)
{
    if (n >= 8) { /* the first and last words (overlapping when n % 8), then any between */
        uint64_t a = fold_word(ld64(s)), b = fold_word(ld64(s + n - 8));
        for (size_t i = 8; i + 8 < n; i += 8) {
            st64(d + i, fold_word(ld64(s + i)));
        }
        st64(d, a);
        st64(d + n - 8, b);
    } else if (n >= 4) {
        uint32_t a = (uint32_t)fold_word(ld32(s)), b = (uint32_t)fold_word(ld32(s + n - 4));
        st32(d, a);
        st32(d + n - 4, b);
    } else {
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            d[i] = (char)((unsigned)(c - 'A') < 26u ? c + ('a' - 'A') : c);
        }
    }
}

/* Fill <e> with copies of name (lower-cased unless <lower> says it is) and value, side by side
 * in the map's chunks: the value always starts right after the name's NUL. */
static inline void entry_set(struct msm_hdrs *h, struct msm_hdr *e, const char *name,
                             size_t nlen, const char *value, size_t vlen, bool lower)
{
    char *p = str_alloc(h, nlen + vlen + 2);
    if (lower) {
        copy_short(p, name, nlen);
    } else {
        fold_lower(p, name, nlen);
    }
    p[nlen] = '\0';
    copy_short(p + nlen + 1, value, vlen);
    p[nlen + 1 + vlen] = '\0';
    e->name = p;
    e->value = p + nlen + 1;
    e->nlen = (uint32_t)nlen;
    e->vlen = (uint32_t)vlen;
    h->filter |= msm_hdrs_name_bit(p, nlen);
}

static struct msm_hdr *insert_at(struct msm_hdrs *h, uint32_t pos)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? (size_t)h->cap * 2 : FIRST_CAP;
        struct msm_hdr *v = msm_recycle_alloc(cap * sizeof(*v)); /* [n, cap) unread */
        if (h->n) {
            memcpy(v, h->v, h->n * sizeof(*v));
        }
        msm_recycle_free(h->v, (size_t)h->cap * sizeof(*h->v));
        h->v = v;
        h->cap = (uint32_t)cap;
    }
    if (pos < h->n) { /* most entries are appended: no call */
        memmove(&h->v[pos + 1], &h->v[pos], (h->n - pos) * sizeof(*h->v));
    }
    h->n++;
    return &h->v[pos];
}

static void add(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                size_t vlen, bool lower)
{
    uint32_t pos = h->n;
    if (nlen && name[0] == ':') {
        /* Pseudo-headers stay in front of regular ones (HTTP/2 requires it on the wire). */
        pos = 0;
        while (pos < h->n && h->v[pos].name[0] == ':') {
            pos++;
        }
    }
    struct msm_hdr *e = insert_at(h, pos);
    entry_set(h, e, name, nlen, value, vlen, lower);
    h->bytes += nlen + vlen;
}

void msm_hdrs_add(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                  size_t vlen)
{
    add(h, name, nlen, value, vlen, false);
}

void msm_hdrs_add_lc(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                     size_t vlen)
{
    add(h, name, nlen, value, vlen, true);
}

/* A lower-case name at the end: no pseudo-header search, no call while the array has room. */
static inline void append_lc(struct msm_hdrs *h, const char *name, size_t nlen,
                             const char *value, size_t vlen)
{
    struct msm_hdr *e = h->n < h->cap ? &h->v[h->n++] : insert_at(h, h->n);
    entry_set(h, e, name, nlen, value, vlen, true);
    h->bytes += nlen + vlen;
}

void msm_hdrs_append_lc(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                        size_t vlen)
{
    append_lc(h, name, nlen, value, vlen);
}

void msm_hdrs_addz(struct msm_hdrs *h, const char *name, const char *value)
{
    msm_hdrs_add(h, name, strlen(name), value, strlen(value));
}

/* Is <e> called <name> (<nlen> bytes)? The lengths and first bytes settle most mismatches
 * without a call: every lookup scans the whole map, several times per request. */
static inline bool name_eq(const struct msm_hdr *e, const char *name, size_t nlen)
{
    return e->nlen == nlen && e->name[0] == name[0] && bytes_eq(e->name, name, nlen);
}

const struct msm_hdr *msm_hdrs_findn(const struct msm_hdrs *h, const char *name, size_t nlen)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (name_eq(&h->v[i], name, nlen)) {
            return &h->v[i];
        }
    }
    return NULL;
}

int msm_hdrs_countn(const struct msm_hdrs *h, const char *name, size_t nlen)
{
    int n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        n += name_eq(&h->v[i], name, nlen);
    }
    return n;
}

static void remove_at(struct msm_hdrs *h, uint32_t i)
{
    h->bytes -= h->v[i].nlen + h->v[i].vlen;
    memmove(&h->v[i], &h->v[i + 1], (h->n - i - 1) * sizeof(*h->v));
    h->n--;
}

/* Remove every entry matching <name> (<nlen> bytes) or, with <prefix>, starting with it. The
 * filter keeps the removed names' bits (another name may share one; a stale bit costs a scan,
 * rebuilding it would cost more on every removal). */
static int remove_matching(struct msm_hdrs *h, const char *name, size_t nlen, bool prefix)
{
    int n = 0;
    for (uint32_t i = 0; i < h->n;) {
        const struct msm_hdr *e = &h->v[i];
        if (prefix ? e->nlen >= nlen && !memcmp(e->name, name, nlen) : name_eq(e, name, nlen)) {
            remove_at(h, i);
            n++;
        } else {
            i++;
        }
    }
    return n;
}

int msm_hdrs_removen(struct msm_hdrs *h, const char *name, size_t nlen)
{
    return remove_matching(h, name, nlen, false);
}

int msm_hdrs_remove_prefix(struct msm_hdrs *h, const char *prefix)
{
    return remove_matching(h, prefix, strlen(prefix), true);
}

/* msm_hdrs_set_nv and msm_hdrs_set_lc: <lower> says <name> is lower-case already (copied, not
 * folded, when it is appended). */
static inline void set_entry(struct msm_hdrs *h, const char *name, size_t nlen,
                             const char *value, size_t vlen, bool lower)
{
    uint32_t n = h->filter & msm_hdrs_name_bit(name, nlen) ? h->n : 0; /* 0: not there */
    for (uint32_t i = 0; i < n; i++) {
        if (name_eq(&h->v[i], name, nlen)) {
            /* Replace the first in place (keeps order), drop the others. The same value (a date
             * from the same second as the upstream's) is left as it is: no copy. */
            struct msm_hdr *e = &h->v[i];
            if (e->vlen != vlen || !bytes_eq(e->value, value, vlen)) {
                h->bytes -= e->vlen;
                entry_set(h, e, name, nlen, value, vlen, true);
                h->bytes += vlen;
            }
            for (uint32_t k = i + 1; k < h->n;) {
                if (name_eq(&h->v[k], name, nlen)) {
                    remove_at(h, k);
                } else {
                    k++;
                }
            }
            return;
        }
    }
    if (lower && nlen && name[0] != ':') {
        append_lc(h, name, nlen, value, vlen); /* a regular name goes last, as add puts it */
    } else {
        add(h, name, nlen, value, vlen, lower);
    }
}

void msm_hdrs_set_nv(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                     size_t vlen)
{
    set_entry(h, name, nlen, value, vlen, false);
}

void msm_hdrs_set_lc(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                     size_t vlen)
{
    set_entry(h, name, nlen, value, vlen, true);
}

void msm_hdrs_copy(struct msm_hdrs *dst, const struct msm_hdrs *src)
{
    if (dst->n || !src->n) {
        for (uint32_t i = 0; i < src->n; i++) {
            add(dst, src->v[i].name, src->v[i].nlen, src->v[i].value, src->v[i].vlen, true);
        }
        return;
    }
    /* Into an empty map (the router's upstream request): entries in the same order (pseudo-
     * headers already first), every name and value in one allocation, one copy per entry. */
    size_t cap = dst->cap ? dst->cap : FIRST_CAP;
    while (cap < (size_t)src->n + 4) {
        cap *= 2;
    }
    if (cap != dst->cap) {
        msm_recycle_free(dst->v, (size_t)dst->cap * sizeof(*dst->v));
        dst->v = msm_recycle_alloc(cap * sizeof(*dst->v));
        dst->cap = (uint32_t)cap;
    }
    const struct msm_hdrs_chunk *one = src->chunks->next ? NULL : src->chunks;
    if (one) {
        /* All of <src>'s strings in one chunk (most maps): its bytes in one copy, the entries
         * rebased onto it. Bytes of removed or replaced entries come along: at most the rest of
         * a first chunk (a chunk of its own holds one huge entry and nothing else). */
        char *base = str_alloc(dst, one->used);
        memcpy(base, one->data, one->used);
        for (uint32_t i = 0; i < src->n; i++) {
            const struct msm_hdr *s = &src->v[i];
            struct msm_hdr *d = &dst->v[i];
            d->name = base + (s->name - one->data);
            d->value = d->name + s->nlen + 1;
            d->nlen = s->nlen;
            d->vlen = s->vlen;
        }
        dst->n = src->n;
        dst->bytes = src->bytes;
        dst->filter = src->filter;
        return;
    }
    size_t total = 0;
    for (uint32_t i = 0; i < src->n; i++) {
        total += src->v[i].nlen + src->v[i].vlen + 2;
    }
    char *p = str_alloc(dst, total);
    for (uint32_t i = 0; i < src->n; i++) {
        const struct msm_hdr *s = &src->v[i];
        struct msm_hdr *d = &dst->v[i];
        size_t len = s->nlen + s->vlen + 2;
        copy_short(p, s->name, len); /* the name, its NUL, the value and its NUL */
        d->name = p;
        d->value = p + s->nlen + 1;
        d->nlen = s->nlen;
        d->vlen = s->vlen;
        p += len;
    }
    dst->n = src->n;
    dst->bytes = src->bytes;
    dst->filter = src->filter;
}

void msm_hdrs_move(struct msm_hdrs *dst, struct msm_hdrs *src)
{
    if (dst->v || dst->chunks) {
        msm_hdrs_deinit(dst);
    }
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

/* RFC 7230 tchar: ALPHA, DIGIT and "!#$%&'*+-.^_`|~" (ASCII rows of 16; bytes >= 0x80 are
 * not). A table: every header name of every HTTP/1 message goes through here. */
static const uint8_t tchars[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0,
};

static bool tchar(unsigned char c)
{
    return tchars[c];
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
    /* Eight bytes at a time: no byte below 0x20 and none equal to 0x7f (the usual case) settles
     * a word; a word with one (HTAB, or a bad byte) is checked byte by byte below. */
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        uint64_t del = w ^ (0x7f * ones);
        if (((w - 0x20 * ones) & ~w & highs) || ((del - ones) & ~del & highs)) {
            break;
        }
    }
    for (; i < n; i++) {
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

int msm_hdrs_status(const struct msm_hdrs *h, int dflt)
{
    const struct msm_hdr *e = msm_hdrs_find(h, ":status");
    if (!e) {
        return dflt;
    }
    const char *v = e->value;
    if (e->vlen == 3 && v[0] >= '0' && v[0] <= '9' && v[1] >= '0' && v[1] <= '9' && v[2] >= '0' &&
        v[2] <= '9') {
        return (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
    }
    return atoi(v);
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

bool msm_grpc_timeout_ms(const char *v, uint64_t *ms)
{
    size_t n = strlen(v);
    if (n < 2 || n > 9) {
        return false;
    }
    uint64_t x;
    if (!msm_http_parse_u64(v, n - 1, &x)) {
        return false;
    }
    switch (v[n - 1]) {
    case 'H': *ms = x * 3600000; return true;
    case 'M': *ms = x * 60000; return true;
    case 'S': *ms = x * 1000; return true;
    case 'm': *ms = x; return true;
    case 'u': *ms = (x + 999) / 1000; return true;
    case 'n': *ms = (x + 999999) / 1000000; return true;
    default: return false;
    }
}

int msm_grpc_status_of_http(int status)
{
    switch (status) {
    case 400: return 13; /* INTERNAL */
    case 401: return 16; /* UNAUTHENTICATED */
    case 403: return 7;  /* PERMISSION_DENIED */
    case 404: return 12; /* UNIMPLEMENTED */
    case 429:
    case 502:
    case 503:
    case 504: return 14; /* UNAVAILABLE */
    default: return 2;   /* UNKNOWN */
    }
}

bool msm_http_is_grpc_content_type(const char *ct)
{
    return ct && !strncasecmp(ct, "application/grpc", 16) &&
           (!ct[16] || ct[16] == '+' || ct[16] == ';');
}
