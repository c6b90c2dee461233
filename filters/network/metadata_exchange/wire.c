/* The istio-peer-exchange preamble codec (see wire.h): a small protobuf writer and reader for
 * google.protobuf.Any / Struct / Value / ListValue, written from the protobuf encoding spec
 * (https://protobuf.dev/programming-guides/encoding/) and struct.proto's field numbers:
 *   Any       { string type_url = 1; bytes value = 2; }
 *   Struct    { map<string, Value> fields = 1; }   entry { string key = 1; Value value = 2; }
 *   Value     { oneof kind { NullValue null_value = 1; double number_value = 2;
 *                            string string_value = 3; bool bool_value = 4;
 *                            Struct struct_value = 5; ListValue list_value = 6; } }
 *   ListValue { repeated Value values = 1; }
 * Writing follows protobuf's (C++) serializer byte for byte: fields in number order, a map entry
 * always carries both key and value, a set oneof member is written even at its default ("" is
 * 0x1A 0x00), deterministic mode sorts map entries by key. */
#include "filters/network/metadata_exchange/wire.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

bool msm_mx_header_parse(const uint8_t *h, uint32_t *len)
{
    uint32_t magic = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    *len = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
    return magic == MSM_MX_MAGIC;
}

/* ---- writer ------------------------------------------------------------------------------- */

struct wbuf {
    uint8_t *p;
    size_t len, cap;
};

static void wb_put(struct wbuf *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) {
            cap *= 2;
        }
        b->p = msm_xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) {
        memcpy(b->p + b->len, d, n);
        b->len += n;
    }
}

static void wb_varint(struct wbuf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    wb_put(b, tmp, n);
}

static void wb_tag(struct wbuf *b, uint32_t field, uint32_t wt)
{
    wb_varint(b, (uint64_t)field << 3 | wt);
}

static void wb_len(struct wbuf *b, uint32_t field, const void *d, size_t n)
{
    wb_tag(b, field, WT_LEN);
    wb_varint(b, n);
    wb_put(b, d, n);
}

static void enc_struct(struct wbuf *b, const json_t *obj);

static void enc_list(struct wbuf *b, const json_t *arr);

/* One google.protobuf.Value's fields (the message body) for <v>. */
static void enc_value(struct wbuf *b, const json_t *v)
{
    struct wbuf sub = {0};
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        enc_struct(&sub, v);
        wb_len(b, 5, sub.p, sub.len);
        break;
    case JSON_ARRAY:
        enc_list(&sub, v);
        wb_len(b, 6, sub.p, sub.len);
        break;
    case JSON_STRING:
        wb_len(b, 3, json_string_value(v), json_string_length(v));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        wb_tag(b, 4, WT_VARINT);
        wb_varint(b, json_is_true(v) ? 1 : 0);
        break;
    case JSON_INTEGER:
    case JSON_REAL: {
        double d = json_number_value(v);
        uint64_t u;
        memcpy(&u, &d, sizeof(u));
        uint8_t le[8];
        for (int i = 0; i < 8; i++) {
            le[i] = (uint8_t)(u >> (8 * i));
        }
        wb_tag(b, 2, WT_I64);
        wb_put(b, le, sizeof(le));
        break;
    }
    case JSON_NULL:
    default:
        wb_tag(b, 1, WT_VARINT);
        wb_varint(b, 0);
        break;
    }
    free(sub.p);
}

static void enc_list(struct wbuf *b, const json_t *arr)
{
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v) {
        struct wbuf sub = {0};
        enc_value(&sub, v);
        wb_len(b, 1, sub.p, sub.len);
        free(sub.p);
    }
}

struct kv {
    const char *key;
    size_t klen;
    const json_t *v;
};

/* protobuf's MapSorter: std::string operator<, i.e. unsigned bytewise, shorter prefix first. */
static int kv_cmp(const void *a, const void *b)
{
    const struct kv *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (c) {
        return c;
    }
    return x->klen < y->klen ? -1 : x->klen > y->klen;
}

static void enc_struct(struct wbuf *b, const json_t *obj)
{
    size_t n = json_object_size(obj);
    if (!n) {
        return;
    }
    struct kv *kv = msm_xcalloc(n, sizeof(*kv));
    size_t k = 0;
    const char *key;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)obj, key, klen, v) {
        kv[k++] = (struct kv){key, klen, v};
    }
    if (k > 1) {
        qsort(kv, k, sizeof(*kv), kv_cmp);
    }
    for (size_t i = 0; i < k; i++) {
        struct wbuf val = {0}, entry = {0};
        enc_value(&val, kv[i].v);
        wb_len(&entry, 1, kv[i].key, kv[i].klen);
        wb_len(&entry, 2, val.p, val.len);
        wb_len(b, 1, entry.p, entry.len);
        free(val.p);
        free(entry.p);
    }
    free(kv);
}

uint8_t *msm_mx_struct_encode(const json_t *st, size_t *len)
{
    struct wbuf b = {0};
    if (json_is_object(st)) {
        enc_struct(&b, st);
    }
    if (!b.p) {
        b.p = msm_xmalloc(1);
    }
    *len = b.len;
    return b.p;
}

uint8_t *msm_mx_preamble_encode(const json_t *exchange, size_t *len)
{
    size_t slen;
    uint8_t *st = msm_mx_struct_encode(exchange, &slen);
    struct wbuf any = {0};
    static const char url[] = MSM_MX_STRUCT_TYPE_URL;
    wb_len(&any, 1, url, sizeof(url) - 1);
    if (slen) {
        wb_len(&any, 2, st, slen); /* proto3: an empty bytes field is not written */
    }
    free(st);
    struct wbuf out = {0};
    uint32_t n = (uint32_t)any.len;
    uint8_t h[MSM_MX_HEADER_LEN] = {
        (uint8_t)(MSM_MX_MAGIC >> 24), (uint8_t)(MSM_MX_MAGIC >> 16),
        (uint8_t)(MSM_MX_MAGIC >> 8),  (uint8_t)MSM_MX_MAGIC,
        (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n,
    };
    wb_put(&out, h, sizeof(h));
    wb_put(&out, any.p, any.len);
    free(any.p);
    *len = out.len;
    return out.p;
}

/* ---- reader ------------------------------------------------------------------------------- */

struct rd {
    const uint8_t *p, *end;
};

static bool rd_varint(struct rd *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) {
            return false;
        }
        uint8_t c = *r->p++;
        x |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false; /* more than 10 bytes */
}

/* A tag: field numbers are 1 .. 2^29-1 and the tag fits in 32 bits. */
static bool rd_tag(struct rd *r, uint32_t *field, uint32_t *wt)
{
    uint64_t t;
    if (!rd_varint(r, &t) || t > UINT32_MAX || (t >> 3) == 0) {
        return false;
    }
    *field = (uint32_t)(t >> 3);
    *wt = (uint32_t)(t & 7);
    return true;
}

static bool rd_len(struct rd *r, struct rd *sub)
{
    uint64_t n;
    if (!rd_varint(r, &n) || n > (uint64_t)(r->end - r->p)) {
        return false;
    }
    sub->p = r->p;
    sub->end = r->p + n;
    r->p += n;
    return true;
}

static bool rd_fixed(struct rd *r, size_t n, uint64_t *v)
{
    if ((size_t)(r->end - r->p) < n) {
        return false;
    }
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        x |= (uint64_t)r->p[i] << (8 * i);
    }
    r->p += n;
    *v = x;
    return true;
}

/* Skip one field of wire type <wt> whose tag was just read (groups up to their end tag). */
static bool skip_field(struct rd *r, uint32_t field, uint32_t wt, int depth)
{
    uint64_t v;
    struct rd sub;
    switch (wt) {
    case WT_VARINT:
        return rd_varint(r, &v);
    case WT_I64:
        return rd_fixed(r, 8, &v);
    case WT_I32:
        return rd_fixed(r, 4, &v);
    case WT_LEN:
        return rd_len(r, &sub);
    case WT_SGROUP:
        if (depth >= MSM_MX_MAX_DEPTH) {
            return false;
        }
        for (;;) {
            uint32_t f, w;
            if (!rd_tag(r, &f, &w)) {
                return false;
            }
            if (w == WT_EGROUP) {
                return f == field;
            }
            if (!skip_field(r, f, w, depth + 1)) {
                return false;
            }
        }
    default: /* an end-group without its start, or wire types 6 and 7 */
        return false;
    }
}

/* Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF), as proto3 requires of
 * string fields. */
static bool utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= k) {
            return false;
        }
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) {
                return false;
            }
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += k + 1;
    }
    return true;
}

static bool dec_string(struct rd *r, json_t **out)
{
    struct rd s;
    if (!rd_len(r, &s) || !utf8_ok(s.p, (size_t)(s.end - s.p))) {
        return false;
    }
    *out = json_stringn_nocheck((const char *)s.p, (size_t)(s.end - s.p));
    return true;
}

static bool dec_struct(struct rd *r, int depth, json_t *obj);
static bool dec_list(struct rd *r, int depth, json_t *arr);

static void replace(json_t **cur, json_t *v)
{
    json_decref(*cur);
    *cur = v;
}

/* Merge a Value message body into *<cur> (NULL = no kind yet), as protobuf's parser merges a
 * message: a scalar kind replaces what was there, a struct_value / list_value merges into the
 * one already set. On failure *<cur> may hold a partial value; the caller releases it. */
static bool dec_value(struct rd *r, int depth, json_t **cur)
{
    if (depth > MSM_MX_MAX_DEPTH) {
        return false;
    }
    while (r->p < r->end) {
        uint32_t f, wt;
        uint64_t v;
        json_t *s = NULL;
        struct rd sub;
        if (!rd_tag(r, &f, &wt)) {
            return false;
        }
        if (f == 1 && wt == WT_VARINT) { /* null_value */
            if (!rd_varint(r, &v)) {
                return false;
            }
            replace(cur, json_null());
        } else if (f == 2 && wt == WT_I64) { /* number_value */
            double d;
            if (!rd_fixed(r, 8, &v)) {
                return false;
            }
            memcpy(&d, &v, sizeof(d));
            /* JSON has no NaN or infinities: such a number reads as null. */
            replace(cur, isfinite(d) ? json_real(d) : json_null());
        } else if (f == 3 && wt == WT_LEN) { /* string_value */
            if (!dec_string(r, &s)) {
                return false;
            }
            replace(cur, s);
        } else if (f == 4 && wt == WT_VARINT) { /* bool_value */
            if (!rd_varint(r, &v)) {
                return false;
            }
            replace(cur, json_boolean(v != 0));
        } else if (f == 5 && wt == WT_LEN) { /* struct_value */
            if (!json_is_object(*cur)) {
                replace(cur, json_object());
            }
            if (!rd_len(r, &sub) || !dec_struct(&sub, depth + 1, *cur)) {
                return false;
            }
        } else if (f == 6 && wt == WT_LEN) { /* list_value */
            if (!json_is_array(*cur)) {
                replace(cur, json_array());
            }
            if (!rd_len(r, &sub) || !dec_list(&sub, depth + 1, *cur)) {
                return false;
            }
        } else if (!skip_field(r, f, wt, depth)) { /* unknown, or a known one mis-typed */
            return false;
        }
    }
    return true;
}

static bool dec_list(struct rd *r, int depth, json_t *arr)
{
    if (depth > MSM_MX_MAX_DEPTH) {
        return false;
    }
    while (r->p < r->end) {
        uint32_t f, wt;
        if (!rd_tag(r, &f, &wt)) {
            return false;
        }
        if (f == 1 && wt == WT_LEN) {
            struct rd sub;
            json_t *v = NULL;
            if (!rd_len(r, &sub) || !dec_value(&sub, depth + 1, &v)) {
                json_decref(v);
                return false;
            }
            json_array_append_new(arr, v ? v : json_null());
        } else if (!skip_field(r, f, wt, depth)) {
            return false;
        }
    }
    return true;
}

/* One map entry: key (default "") and value (default: no kind, read as null). A later entry
 * with the same key replaces an earlier one. */
static bool dec_entry(struct rd *r, int depth, json_t *obj)
{
    const uint8_t *key = (const uint8_t *)"";
    size_t klen = 0;
    json_t *val = NULL;
    if (depth > MSM_MX_MAX_DEPTH) {
        return false;
    }
    while (r->p < r->end) {
        uint32_t f, wt;
        struct rd sub;
        if (!rd_tag(r, &f, &wt)) {
            goto fail;
        }
        if (f == 1 && wt == WT_LEN) {
            if (!rd_len(r, &sub) || !utf8_ok(sub.p, (size_t)(sub.end - sub.p))) {
                goto fail;
            }
            key = sub.p;
            klen = (size_t)(sub.end - sub.p);
        } else if (f == 2 && wt == WT_LEN) {
            /* A repeated value field merges into the first (the value is a message). */
            if (!rd_len(r, &sub) || !dec_value(&sub, depth + 1, &val)) {
                goto fail;
            }
        } else if (!skip_field(r, f, wt, depth)) {
            goto fail;
        }
    }
    json_object_setn_new_nocheck(obj, (const char *)key, klen, val ? val : json_null());
    return true;
fail:
    json_decref(val);
    return false;
}

static bool dec_struct(struct rd *r, int depth, json_t *obj)
{
    if (depth > MSM_MX_MAX_DEPTH) {
        return false;
    }
    while (r->p < r->end) {
        uint32_t f, wt;
        if (!rd_tag(r, &f, &wt)) {
            return false;
        }
        if (f == 1 && wt == WT_LEN) {
            struct rd sub;
            if (!rd_len(r, &sub) || !dec_entry(&sub, depth + 1, obj)) {
                return false;
            }
        } else if (!skip_field(r, f, wt, depth)) {
            return false;
        }
    }
    return true;
}

/* Any::UnpackTo's type check: the type_url ends in "/google.protobuf.Struct". */
static bool is_struct_url(const uint8_t *u, size_t n)
{
    static const char name[] = "google.protobuf.Struct";
    size_t k = sizeof(name) - 1;
    return n >= k + 1 && u[n - k - 1] == '/' && !memcmp(u + n - k, name, k);
}

enum msm_mx_payload msm_mx_payload_decode(const uint8_t *p, size_t n, json_t **out)
{
    struct rd r = {p, p + n};
    const uint8_t *url = NULL, *val = (const uint8_t *)"";
    size_t url_len = 0, val_len = 0;
    *out = NULL;
    while (r.p < r.end) {
        uint32_t f, wt;
        struct rd sub;
        if (!rd_tag(&r, &f, &wt)) {
            return MSM_MX_PAYLOAD_BAD_ANY;
        }
        if ((f == 1 || f == 2) && wt == WT_LEN) {
            if (!rd_len(&r, &sub)) {
                return MSM_MX_PAYLOAD_BAD_ANY;
            }
            if (f == 1) {
                if (!utf8_ok(sub.p, (size_t)(sub.end - sub.p))) {
                    return MSM_MX_PAYLOAD_BAD_ANY;
                }
                url = sub.p;
                url_len = (size_t)(sub.end - sub.p);
            } else {
                val = sub.p;
                val_len = (size_t)(sub.end - sub.p);
            }
        } else if (!skip_field(&r, f, wt, 1)) {
            return MSM_MX_PAYLOAD_BAD_ANY;
        }
    }
    if (!url || !is_struct_url(url, url_len)) {
        return MSM_MX_PAYLOAD_BAD_STRUCT;
    }
    struct rd s = {val, val + val_len};
    json_t *obj = json_object();
    if (!dec_struct(&s, 1, obj)) {
        json_decref(obj);
        return MSM_MX_PAYLOAD_BAD_STRUCT;
    }
    *out = obj;
    return MSM_MX_PAYLOAD_OK;
}

bool msm_mx_struct_decode(const uint8_t *p, size_t n, json_t **out)
{
    struct rd s = {p, n ? p + n : p};
    json_t *obj = json_object();
    if (!dec_struct(&s, 1, obj)) {
        json_decref(obj);
        *out = NULL;
        return false;
    }
    *out = obj;
    return true;
}
