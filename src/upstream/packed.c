#include "upstream/packed.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/pbwire.h"

/* Encoding: a sequence of varint ops. Even op: a literal run of op/2 bytes follows. Odd op: a
 * copy of op/2 + MIN_MATCH bytes from the reference, at the varint offset that follows. */
#define MIN_MATCH 4
#define HT_BITS 12
#define REF_MAX 65534 /* positions are kept as uint16_t + 1 */

struct msm_packed_ref {
    atomic_int refs;
    size_t len;
    uint16_t *table; /* 4-byte hash -> position + 1; only while it is its kind's reference */
    uint8_t data[];
};

static void ref_unref(struct msm_packed_ref *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
        free(r->table);
        free(r);
    }
}

static uint32_t hash4(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return (v * 2654435761u) >> (32 - HT_BITS);
}

static struct msm_packed_ref *ref_new(const uint8_t *b, size_t len)
{
    struct msm_packed_ref *r = msm_xmalloc(sizeof(*r) + len);
    atomic_init(&r->refs, 1);
    r->len = len;
    memcpy(r->data, b, len);
    r->table = msm_xcalloc((size_t)1 << HT_BITS, sizeof(uint16_t));
    for (size_t i = 0; i + MIN_MATCH <= len; i++) {
        r->table[hash4(b + i)] = (uint16_t)(i + 1);
    }
    return r;
}

static size_t put_literals(uint8_t *o, const uint8_t *lit, size_t n)
{
    if (!n) {
        return 0;
    }
    size_t k = msm_pb_put_varint(o, (uint64_t)n << 1);
    memcpy(o + k, lit, n);
    return k + n;
}

/* Encode <in> against <r> into <o> (at least len + 3 * (len / MIN_MATCH + 1) + 16 bytes). */
static size_t encode(const struct msm_packed_ref *r, const uint8_t *in, size_t len, uint8_t *o)
{
    size_t n = 0, lit = 0, i = 0;
    while (i + MIN_MATCH <= len) {
        uint16_t c = r->table[hash4(in + i)];
        size_t pos = (size_t)c - 1;
        if (!c || memcmp(r->data + pos, in + i, MIN_MATCH) != 0) {
            i++;
            continue;
        }
        size_t m = MIN_MATCH;
        while (i + m < len && pos + m < r->len && r->data[pos + m] == in[i + m]) {
            m++;
        }
        n += put_literals(o + n, in + lit, i - lit);
        n += msm_pb_put_varint(o + n, ((uint64_t)(m - MIN_MATCH) << 1) | 1);
        n += msm_pb_put_varint(o + n, pos);
        i += m;
        lit = i;
    }
    n += put_literals(o + n, in + lit, len - lit);
    return n;
}

static bool decode(const struct msm_packed_ref *r, const uint8_t *p, size_t len, uint8_t *o,
                   size_t olen)
{
    size_t i = 0, n = 0;
    while (i < len) {
        uint64_t op, off;
        if (!msm_pb_varint(p, len, &i, &op)) {
            return false;
        }
        if (!(op & 1)) {
            uint64_t k = op >> 1;
            if (k > len - i || k > olen - n) {
                return false;
            }
            memcpy(o + n, p + i, (size_t)k);
            i += (size_t)k;
            n += (size_t)k;
            continue;
        }
        uint64_t k = (op >> 1) + MIN_MATCH;
        if (!msm_pb_varint(p, len, &i, &off) || off > r->len || k > r->len - off || k > olen - n) {
            return false;
        }
        memcpy(o + n, r->data + off, (size_t)k);
        n += (size_t)k;
    }
    return n == olen;
}

void msm_packed_clear(struct msm_packed *p)
{
    free(p->data);
    ref_unref(p->ref);
    memset(p, 0, sizeof(*p));
}

void msm_packed_set(struct msm_packed_kind *k, struct msm_packed *out, const uint8_t *bytes,
                    size_t len)
{
    msm_packed_clear(out);
    out->raw_len = len;
    if (len < 64) {
        out->data = msm_xmalloc(len + 1);
        memcpy(out->data, bytes, len);
        out->len = len;
        return;
    }
    uint8_t *o = msm_xmalloc(len + 3 * (len / MIN_MATCH + 1) + 16);
    size_t n = k->ref ? encode(k->ref, bytes, len, o) : len;
    if (n > len / 2 && len <= REF_MAX) {
        /* Not like the reference (or none yet): this one becomes it. The previous reference
         * stays with the resources encoded against it, without its table. */
        if (k->ref) {
            free(k->ref->table);
            k->ref->table = NULL;
            ref_unref(k->ref);
        }
        k->ref = ref_new(bytes, len);
        n = encode(k->ref, bytes, len, o);
    }
    if (!k->ref || n >= len) {
        memcpy(o, bytes, len);
        out->data = msm_xrealloc(o, len + 1);
        out->len = len;
        return;
    }
    out->data = msm_xrealloc(o, n + 1);
    out->len = n;
    out->ref = k->ref;
    atomic_fetch_add(&k->ref->refs, 1);
}

const uint8_t *msm_packed_get(const struct msm_packed *p, uint8_t **tmp)
{
    *tmp = NULL;
    if (!p->ref) {
        return p->data;
    }
    uint8_t *o = msm_xmalloc(p->raw_len + 1);
    if (!decode(p->ref, p->data, p->len, o, p->raw_len)) {
        free(o);
        return NULL;
    }
    *tmp = o;
    return o;
}

void msm_packed_kind_deinit(struct msm_packed_kind *k)
{
    ref_unref(k->ref);
    k->ref = NULL;
}
