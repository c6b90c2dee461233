#include "xds/xds_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include "common/alloc.h"
#include "common/pbwire.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "xds/strmap.h"

#define RESOURCE_WRAPPER_URL "type.googleapis.com/envoy.service.discovery.v3.Resource"

#if defined(__SANITIZE_ADDRESS__)
#define ARENA_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_MALLOC 1
#endif
#endif

/* ---- decode arenas ----------------------------------------------------------------------------
 * A response is decoded into bump arenas of mmap'ed blocks instead of one malloc per field: a
 * 10k-cluster CDS response is some 500k allocations, and its memory would stay in the xDS
 * thread's malloc arena after it is freed (glibc keeps per-thread arenas), on top of the
 * clusters built from it. Blocks go back to the system as soon as every resource with data in
 * them is released (msm_xds_decoded_release, once applied) or the response is freed. Under
 * AddressSanitizer every allocation is its own malloc'ed "block", so overflows stay visible. */
#define ARENA_BLOCK ((size_t)1 << 20)

struct arena_block {
    uint8_t *base; /* NULL once released */
    size_t size, used;
    int users; /* resources with data in it; released at 0 */
};

struct msm_xds_arena {
    struct arena_block *b;
    size_t n, cap;
};

static void block_drop(struct arena_block *b)
{
    if (!b->base) {
        return;
    }
#ifdef ARENA_MALLOC
    free(b->base);
#else
    munmap(b->base, b->size);
#endif
    b->base = NULL;
}

static void *arena_alloc(void *data, size_t size)
{
    struct msm_xds_arena *a = data;
    size = (size + 15) & ~(size_t)15;
    struct arena_block *cur = a->n ? &a->b[a->n - 1] : NULL;
#ifdef ARENA_MALLOC
    cur = NULL;
#endif
    if (!cur || !cur->base || cur->size - cur->used < size) {
        a->b = msm_xgrow(a->b, sizeof(*a->b), &a->cap, a->n + 1);
        cur = &a->b[a->n++];
        memset(cur, 0, sizeof(*cur));
#ifdef ARENA_MALLOC
        cur->size = size ? size : 1;
        cur->base = msm_xmalloc(cur->size);
#else
        cur->size = size > ARENA_BLOCK ? (size + 4095) & ~(size_t)4095 : ARENA_BLOCK;
        void *p = mmap(NULL, cur->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "msm-proxy: out of memory mapping %zu bytes, aborting\n", cur->size);
            abort(); /* as msm_xmalloc */
        }
        cur->base = p;
#endif
    }
    void *r = cur->base + cur->used;
    cur->used += size;
    return r;
}

static void arena_free(void *data, void *p)
{
    (void)data;
    (void)p; /* everything goes with its block */
}

static void arena_deinit(struct msm_xds_arena *a)
{
    for (size_t i = 0; i < a->n; i++) {
        block_drop(&a->b[i]);
    }
    free(a->b);
    memset(a, 0, sizeof(*a));
}

/* The block of <a> holding <p>, or a->n. */
static size_t block_of(const struct msm_xds_arena *a, const void *p)
{
    const uint8_t *q = p;
    for (size_t i = 0; i < a->n; i++) {
        if (a->b[i].base && q >= a->b[i].base && q < a->b[i].base + a->b[i].size) {
            return i;
        }
    }
    return a->n;
}

/* The response's own arena while its resources are decoded in order: protobuf-c allocated each
 * resource's data after the previous one's (the Resource or Any struct first), so the blocks
 * between <keep> (the response struct and its resources array) and the one holding <next>
 * (the next resource to decode) only hold resources already decoded. */
static void outer_progress(struct msm_xds_arena *outer, size_t keep, const void *next)
{
#ifndef ARENA_MALLOC
    size_t upto = block_of(outer, next);
    for (size_t j = keep + 1; j < upto; j++) {
        block_drop(&outer->b[j]);
    }
#else
    (void)outer;
    (void)keep;
    (void)next;
#endif
}

static ProtobufCAllocator arena_allocator(struct msm_xds_arena *a)
{
    ProtobufCAllocator al = {.alloc = arena_alloc, .free = arena_free, .allocator_data = a};
    return al;
}

static char *arena_strdup(struct msm_xds_arena *a, const char *s)
{
    size_t n = strlen(s ? s : "") + 1;
    return memcpy(arena_alloc(a, n), s ? s : "", n);
}

/* Where a decoded response keeps its memory (private to this file). */
struct msm_xds_mem {
    struct msm_xds_arena strs; /* names, versions, nonce, type URL, SotW wrappers */
    struct msm_xds_arena res;  /* the resources */
    size_t *first, *last;      /* per resource: its blocks in <res> */
    const uint8_t *bytes;      /* the bytes of the resource unpack_one just decoded */
    size_t len;
    bool keep_bytes;           /* see keeps_bytes */
    /* Lazy decoding (msm_xds_decode_ex): resources are checked and kept as bytes; each is
     * unpacked into <scratch> when asked for (msm_xds_decoded_msg), one at a time. */
    bool lazy;
    const ProtobufCMessageDescriptor *desc;
    struct msm_xds_arena scratch;
    int scratch_of; /* the resource whose message is in <scratch>, -1 = none */
};

/* Types whose consumers keep the resources packed and are worth the copy: clusters (their
 * packing is 8% of applying 10k) and route configurations. Not assignments: packing one is
 * cheap, and an EDS response arrives while the clusters' memory peaks. */
static bool keeps_bytes(const char *type_url)
{
    return !strcmp(type_url, MSM_XDS_TYPE_CLUSTER) || !strcmp(type_url, MSM_XDS_TYPE_ROUTE);
}

/* Types decoded lazily when asked (msm_xds_decode_ex <lazy>): the big ones of an Istio push,
 * whose decoded form is ~5x their bytes and would sit beside the config built from them. */
static bool decodes_lazily(const char *type_url)
{
    return !strcmp(type_url, MSM_XDS_TYPE_CLUSTER) || !strcmp(type_url, MSM_XDS_TYPE_ENDPOINT) ||
           !strcmp(type_url, MSM_XDS_TYPE_LISTENER);
}

/* ---- wire check --------------------------------------------------------------------------------
 * What protobuf_c_message_unpack would reject, found without unpacking (lazy decoding checks a
 * whole response before any of it is applied): malformed varints, lengths past the end, group
 * wire types, tag 0, a known field with a wire type its type cannot have, a packed field whose
 * bytes are not whole elements; plus the nesting bound of msm_pb_unpack. */

/* A field's tag as protobuf-c reads it (parse_tag_and_wiretype): at most 5 bytes, the field
 * number in 32 bits (high bits of a 5th byte dropped); a one-byte tag of field 0 is an error,
 * a longer encoding of 0 is an unknown field. Returns the bytes used, 0 on error. */
static size_t wire_tag(const uint8_t *p, size_t len, uint32_t *field, unsigned *wt)
{
    size_t max = len > 5 ? 5 : len;
    uint32_t tag = (uint32_t)(p[0] & 0x7f) >> 3;
    unsigned shift = 4;
    *wt = p[0] & 7;
    if (!(p[0] & 0x80)) {
        *field = tag;
        return tag ? 1 : 0;
    }
    for (size_t n = 1; n < max; n++) {
        tag |= (uint32_t)(p[n] & 0x7f) << shift;
        if (!(p[n] & 0x80)) {
            *field = tag;
            return n + 1;
        }
        shift += 7;
    }
    return 0;
}

/* The wire type of one element of a field of <type>: 0 varint, 1 64-bit, 2 length, 5 32-bit. */
static unsigned wire_type_of(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return 5;
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 1;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
        return 2;
    default:
        return 0;
    }
}

static bool wire_packed_ok(unsigned elem, const uint8_t *p, size_t len)
{
    if (elem == 5) {
        return len % 4 == 0;
    }
    if (elem == 1) {
        return len % 8 == 0;
    }
    for (size_t i = 0; i < len;) {
        uint64_t v;
        if (!msm_pb_varint(p, len, &i, &v)) {
            return false;
        }
    }
    return true;
}

static bool wire_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                    int depth)
{
    if (depth > MSM_PBJSON_MAX_DEPTH) {
        return false;
    }
    size_t i = 0;
    while (i < len) {
        uint64_t v;
        uint32_t id;
        unsigned wt;
        size_t used = wire_tag(p + i, len - i, &id, &wt);
        if (!used) {
            return false;
        }
        i += used;
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(desc, id);
        unsigned want = f ? wire_type_of(f->type) : wt;
        bool packed = f && wt == 2 && want != 2 && f->label == PROTOBUF_C_LABEL_REPEATED;
        /* protobuf-c reads a bool from any wire type (and a packed bool's bytes unchecked) */
        bool any_type = f && f->type == PROTOBUF_C_TYPE_BOOL;
        if (f && wt != want && !packed && !any_type) {
            return false;
        }
        switch (wt) {
        case 0:
            if (!msm_pb_varint(p, len, &i, &v)) {
                return false;
            }
            break;
        case 1:
        case 5:
            if (len - i < (wt == 1 ? 8u : 4u)) {
                return false;
            }
            i += wt == 1 ? 8 : 4;
            break;
        case 2:
            if (!msm_pb_varint(p, len, &i, &v) || v > len - i) {
                return false;
            }
            if (packed && !any_type && !wire_packed_ok(want, p + i, (size_t)v)) {
                return false;
            }
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                !wire_ok(f->descriptor, p + i, (size_t)v, depth + 1)) {
                return false;
            }
            i += (size_t)v;
            break;
        default:
            return false; /* groups (3, 4) and 6, 7 */
        }
    }
    return true;
}

/* The top-level string field <f> of the (checked) bytes (the last occurrence wins, as when
 * unpacking), in <a>; "" when absent. */
static char *wire_string(struct msm_xds_arena *a, const ProtobufCFieldDescriptor *f,
                         const uint8_t *p, size_t len)
{
    const uint8_t *s = (const uint8_t *)"";
    size_t n = 0;
    size_t i = 0;
    while (i < len) {
        uint64_t v = 0;
        uint32_t id;
        unsigned wt;
        size_t used = wire_tag(p + i, len - i, &id, &wt);
        if (!used) {
            break;
        }
        i += used;
        switch (wt) {
        case 0:
            msm_pb_varint(p, len, &i, &v);
            break;
        case 1:
            i += 8;
            break;
        case 5:
            i += 4;
            break;
        default:
            if (!msm_pb_varint(p, len, &i, &v) || v > len - i) {
                return arena_strdup(a, "");
            }
            if (id == f->id) {
                s = p + i;
                n = (size_t)v;
            }
            i += (size_t)v;
            break;
        }
    }
    char *o = arena_alloc(a, n + 1);
    memcpy(o, s, n);
    o[n] = '\0';
    return o;
}

/* A lazy resource's name as msm_xds_resource_name gives it once decoded (the lazy types have
 * no oneof around these fields). */
static char *wire_name(struct msm_xds_arena *a, const ProtobufCMessageDescriptor *desc,
                       const uint8_t *p, size_t len)
{
    static const char *const fields[] = {"name", "cluster_name"};
    for (size_t i = 0; i < MSM_ARRAY_SIZE(fields); i++) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(desc, fields[i]);
        if (f && f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED) {
            return wire_string(a, f, p, len);
        }
    }
    return arena_strdup(a, "");
}

/* ---- decoding ------------------------------------------------------------------------------ */

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

const char *msm_xds_resource_name(const ProtobufCMessage *m)
{
    static const char *const fields[] = {"name", "cluster_name"};
    for (size_t i = 0; i < MSM_ARRAY_SIZE(fields); i++) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(m->descriptor, fields[i]);
        if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED) {
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            const uint32_t *which = (const uint32_t *)((const char *)m + f->quantifier_offset);
            if (*which != f->id) {
                continue;
            }
        }
        const char *s = *(char *const *)((const char *)m + f->offset);
        return str_or_empty(s);
    }
    return "";
}

/* What unpack_one returns for a resource kept as bytes (lazy decoding). */
static ProtobufCMessage lazy_marker;

/* The name of resource <m> just returned by unpack_one. */
static const char *res_name(struct msm_xds_mem *mem, const ProtobufCMessage *m)
{
    return m == &lazy_marker ? wire_name(&mem->strs, mem->desc, mem->bytes, mem->len)
                             : msm_xds_resource_name(m);
}

/* Unpack <any> as a resource of type <desc> (the response's type) into the resource arena.
 * SotW resources may come wrapped in envoy.service.discovery.v3.Resource (Envoy accepts that
 * for TTLs): then <*wrapper> is set to the wrapper (in the strings arena), which carries the
 * name and version. */
static ProtobufCMessage *unpack_one(struct msm_xds_mem *mem, const Google__Protobuf__Any *any,
                                    const ProtobufCMessageDescriptor *desc, const char *type_url,
                                    ProtobufCMessage **wrapper, struct msm_err *err)
{
    if (!any) {
        msm_err_set(err, "empty Any");
        return NULL;
    }
    const char *url = str_or_empty(any->type_url);
    if (wrapper && !strcmp(url, RESOURCE_WRAPPER_URL)) {
        ProtobufCAllocator al = arena_allocator(&mem->strs);
        const ProtobufCMessageDescriptor *rd = &envoy__service__discovery__v3__resource__descriptor;
        ProtobufCMessage *w = msm_pb_unpack_with(rd, &al, any->value.data, any->value.len, err);
        if (!w) {
            return NULL;
        }
        const Envoy__Service__Discovery__V3__Resource *r = (const void *)w;
        if (!r->resource) {
            *wrapper = w; /* a TTL heartbeat: nothing to decode */
            return NULL;
        }
        ProtobufCMessage *m = unpack_one(mem, r->resource, desc, type_url, NULL, err);
        if (m) {
            *wrapper = w;
        }
        return m;
    }
    if (strcmp(url, type_url) != 0) {
        msm_err_set(err, "type URL %s embedded in an individual Any does not match the "
                         "message-wide type URL %s in DiscoveryResponse",
                    url, type_url);
        return NULL;
    }
    mem->bytes = NULL;
    mem->len = 0;
    if (mem->lazy) {
        if (!wire_ok(desc, any->value.data, any->value.len, 1)) {
            msm_err_set(err, "%s: cannot parse %zu bytes of protobuf", desc->name,
                        any->value.len);
            return NULL;
        }
        uint8_t *b = arena_alloc(&mem->res, any->value.len + 1);
        memcpy(b, any->value.data ? any->value.data : (const uint8_t *)"", any->value.len);
        mem->bytes = b;
        mem->len = any->value.len;
        return &lazy_marker;
    }
    ProtobufCAllocator al = arena_allocator(&mem->res);
    ProtobufCMessage *m = msm_pb_unpack_with(desc, &al, any->value.data, any->value.len, err);
    if (m && mem->keep_bytes) {
        /* The resource's own bytes, beside it: consumers that keep resources packed (the
         * cluster manager, for config_dump) copy them instead of packing the message again. */
        uint8_t *b = arena_alloc(&mem->res, any->value.len + 1);
        memcpy(b, any->value.data ? any->value.data : (const uint8_t *)"", any->value.len);
        mem->bytes = b;
        mem->len = any->value.len;
    }
    return m;
}

static void set_error(struct msm_xds_decoded *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_error(struct msm_xds_decoded *d, const char *fmt, ...)
{
    struct msm_err e;
    va_list ap;
    va_start(ap, fmt);
    msm_err_vset(&e, fmt, ap);
    va_end(ap);
    free(d->error);
    d->error = msm_xstrdup(e.msg);
}

/* Record resource <m> (just unpacked into mem->res) as d->res[d->n]. */
static struct msm_xds_resource *add_resource(struct msm_xds_decoded *d, ProtobufCMessage *m,
                                             size_t first)
{
    struct msm_xds_mem *mem = d->mem;
    size_t last = mem->res.n - 1;
    for (size_t b = first; b <= last; b++) {
        mem->res.b[b].users++;
    }
    mem->first[d->n] = first;
    mem->last[d->n] = last;
    struct msm_xds_resource *res = &d->res[d->n++];
    res->msg = m == &lazy_marker ? NULL : m;
    res->bytes = mem->bytes;
    res->len = mem->len;
    return res;
}

/* The first block resource data may land in: the current one, or the next. */
static size_t next_block(const struct msm_xds_arena *a)
{
    return a->n ? a->n - 1 : 0;
}

static void decode_sotw(struct msm_xds_decoded *d, const ProtobufCMessage *resp,
                        const ProtobufCMessageDescriptor *desc, struct msm_xds_arena *outer)
{
    struct msm_xds_mem *mem = d->mem;
    const Envoy__Service__Discovery__V3__DiscoveryResponse *r = (const void *)resp;
    d->res = msm_xcalloc(r->n_resources + 1, sizeof(*d->res));
    mem->first = msm_xcalloc(r->n_resources + 1, sizeof(size_t));
    mem->last = msm_xcalloc(r->n_resources + 1, sizeof(size_t));
    size_t keep = r->n_resources ? block_of(outer, r->resources) : 0;
    for (size_t i = 0; i < r->n_resources; i++) {
        if (i) {
            outer_progress(outer, keep, r->resources[i]);
        }
        struct msm_err e;
        ProtobufCMessage *w = NULL;
        size_t first = next_block(&mem->res);
        ProtobufCMessage *m = unpack_one(mem, r->resources[i], desc, d->type_url, &w, &e);
        if (!m && w) {
            continue; /* heartbeat */
        }
        if (!m) {
            set_error(d, "resources[%zu]: %s", i, e.msg);
            return;
        }
        struct msm_xds_resource *res = add_resource(d, m, first);
        const Envoy__Service__Discovery__V3__Resource *rw = (const void *)w;
        const char *name = rw && rw->name && rw->name[0] ? rw->name : res_name(mem, m);
        /* Names outlive the resource (msm_xds_decoded_release): kept with the strings. */
        res->name = arena_strdup(&mem->strs, name);
        res->version = rw && rw->version && rw->version[0] ? rw->version : d->version_info;
    }
}

static void decode_delta(struct msm_xds_decoded *d, const ProtobufCMessage *resp,
                         const ProtobufCMessageDescriptor *desc, struct msm_xds_arena *outer)
{
    struct msm_xds_mem *mem = d->mem;
    const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = (const void *)resp;
    d->res = msm_xcalloc(r->n_resources + 1, sizeof(*d->res));
    mem->first = msm_xcalloc(r->n_resources + 1, sizeof(size_t));
    mem->last = msm_xcalloc(r->n_resources + 1, sizeof(size_t));
    size_t keep = r->n_resources ? block_of(outer, r->resources) : 0;
    for (size_t i = 0; i < r->n_resources; i++) {
        const Envoy__Service__Discovery__V3__Resource *rr = r->resources[i];
        if (i) {
            outer_progress(outer, keep, rr);
        }
        const char *name = str_or_empty(rr->name);
        if (!rr->resource) {
            continue; /* TTL heartbeat: refreshes, never updates */
        }
        struct msm_err e;
        size_t first = next_block(&mem->res);
        ProtobufCMessage *m = unpack_one(mem, rr->resource, desc, d->type_url, NULL, &e);
        if (!m) {
            set_error(d, "resource '%s': %s", name, e.msg);
            return;
        }
        struct msm_xds_resource *res = add_resource(d, m, first);
        res->name = arena_strdup(&mem->strs, name[0] ? name : res_name(mem, m));
        res->version = arena_strdup(&mem->strs, str_or_empty(rr->version));
    }
}

static void check_duplicates(struct msm_xds_decoded *d)
{
    struct msm_strmap seen;
    msm_strmap_init_borrowed(&seen);
    for (int i = 0; i < d->n && !d->error; i++) {
        bool added;
        msm_strmap_put(&seen, d->res[i].name, NULL, &added);
        if (!added) {
            set_error(d, "duplicate resource name '%s' in one %s", d->res[i].name,
                      d->delta ? "DeltaDiscoveryResponse" : "DiscoveryResponse");
        }
    }
    msm_strmap_deinit(&seen);
}

/* A response is applied whole or not at all: an error drops every decoded resource. */
static void drop_resources(struct msm_xds_decoded *d)
{
    arena_deinit(&d->mem->res);
    d->n = 0;
}

struct msm_xds_decoded *msm_xds_decode(bool delta, const uint8_t *data, size_t len,
                                       struct msm_err *err)
{
    return msm_xds_decode_ex(delta, data, len, false, NULL, NULL, err);
}

struct msm_xds_decoded *msm_xds_decode_ex(bool delta, const uint8_t *data, size_t len, bool lazy,
                                          void (*release)(void *arg), void *arg,
                                          struct msm_err *err)
{
    const ProtobufCMessageDescriptor *rdesc =
        delta ? &envoy__service__discovery__v3__delta_discovery_response__descriptor
              : &envoy__service__discovery__v3__discovery_response__descriptor;
    /* The response itself (with a copy of every resource's bytes) is only needed while its
     * resources are decoded: its own arena, dropped before returning. */
    struct msm_xds_arena outer = {0};
    ProtobufCAllocator oal = arena_allocator(&outer);
    ProtobufCMessage *resp = msm_pb_unpack_with(rdesc, &oal, data, len, err);
    if (release) {
        release(arg); /* everything is in <outer> now */
    }
    if (!resp) {
        arena_deinit(&outer);
        msm_err_prefix(err, "malformed %s", rdesc->name);
        return NULL;
    }
    struct msm_xds_decoded *d = MSM_NEW(struct msm_xds_decoded);
    struct msm_xds_mem *mem = MSM_NEW(struct msm_xds_mem);
    d->mem = mem;
    d->delta = delta;
    const char *type_url, *nonce, *version;
    size_t n_removed = 0;
    char **removed = NULL;
    if (delta) {
        const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = (const void *)resp;
        type_url = r->type_url;
        nonce = r->nonce;
        version = r->system_version_info;
        n_removed = r->n_removed_resources;
        removed = r->removed_resources;
    } else {
        const Envoy__Service__Discovery__V3__DiscoveryResponse *r = (const void *)resp;
        type_url = r->type_url;
        nonce = r->nonce;
        version = r->version_info;
    }
    d->type_url = arena_strdup(&mem->strs, type_url);
    d->nonce = arena_strdup(&mem->strs, nonce);
    d->version_info = arena_strdup(&mem->strs, version);
    d->removed = msm_xcalloc(n_removed + 1, sizeof(*d->removed));
    for (size_t i = 0; i < n_removed; i++) {
        d->removed[d->n_removed++] = arena_strdup(&mem->strs, removed[i]);
    }
    const ProtobufCMessageDescriptor *desc = msm_types_find_url(d->type_url);
    mem->keep_bytes = keeps_bytes(d->type_url);
    mem->lazy = lazy && desc && decodes_lazily(d->type_url);
    mem->desc = desc;
    mem->scratch_of = -1;
    if (!desc) {
        set_error(d, "unknown type URL '%s'", d->type_url);
    } else if (delta) {
        decode_delta(d, resp, desc, &outer);
    } else {
        decode_sotw(d, resp, desc, &outer);
    }
    arena_deinit(&outer);
    if (!d->error) {
        check_duplicates(d);
    }
    if (d->error) {
        drop_resources(d);
    }
    return d;
}

/* Empty <a> for the next message, keeping its first block mapped (one resource after another:
 * no mmap/munmap per resource). */
static void arena_reset(struct msm_xds_arena *a)
{
#ifdef ARENA_MALLOC
    arena_deinit(a);
#else
    for (size_t i = 1; i < a->n; i++) {
        block_drop(&a->b[i]);
    }
    if (a->n) {
        a->n = 1;
        a->b[0].used = 0;
    }
#endif
}

const ProtobufCMessage *msm_xds_decoded_msg(struct msm_xds_decoded *d, int i, struct msm_err *err)
{
    struct msm_xds_mem *mem = d->mem;
    if (i < 0 || i >= d->n) {
        msm_err_set(err, "no resource %d", i);
        return NULL;
    }
    struct msm_xds_resource *r = &d->res[i];
    if (r->msg || !mem->lazy) {
        if (!r->msg) {
            msm_err_set(err, "resource '%s' was released", r->name);
        }
        return r->msg;
    }
    if (!r->bytes) {
        msm_err_set(err, "resource '%s' was released", r->name);
        return NULL;
    }
    if (mem->scratch_of >= 0 && mem->scratch_of < d->n) {
        d->res[mem->scratch_of].msg = NULL; /* its memory is reused now */
    }
    arena_reset(&mem->scratch);
    ProtobufCAllocator al = arena_allocator(&mem->scratch);
    ProtobufCMessage *m = msm_pb_unpack_with(mem->desc, &al, r->bytes, r->len, err);
    mem->scratch_of = m ? i : -1;
    r->msg = m;
    return m;
}

bool msm_xds_decoded_lazy(const struct msm_xds_decoded *d)
{
    return d->mem->lazy;
}

void msm_xds_decoded_release(struct msm_xds_decoded *d, int i)
{
    struct msm_xds_mem *mem = d->mem;
    if (i < 0 || i >= d->n || (!d->res[i].msg && !d->res[i].bytes)) {
        return;
    }
    if (mem->scratch_of == i) {
        mem->scratch_of = -1;
    }
    d->res[i].msg = NULL;
    d->res[i].bytes = NULL;
    d->res[i].len = 0;
    for (size_t b = mem->first[i]; b <= mem->last[i] && b < mem->res.n; b++) {
        if (--mem->res.b[b].users == 0) {
            block_drop(&mem->res.b[b]);
        }
    }
}

void msm_xds_decoded_free(struct msm_xds_decoded *d)
{
    if (!d) {
        return;
    }
    arena_deinit(&d->mem->res);
    arena_deinit(&d->mem->strs);
    arena_deinit(&d->mem->scratch);
    free(d->mem->first);
    free(d->mem->last);
    free(d->mem);
    free(d->res);
    free(d->removed);
    free(d->error);
    free(d);
}

/* Copy at most <max> bytes of <s>, replacing bytes that are not valid UTF-8 by '?': proto3
 * strings must be UTF-8 and Go's decoder (istiod) rejects the whole request otherwise, while an
 * error message may quote bytes that came from the control plane. */
static char *utf8_sanitize(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
    }
    char *o = msm_xmalloc(n + 1);
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                   : (c & 0xf8) == 0xf0 ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) {
            ok = (p[i + k] & 0xc0) == 0x80;
        }
        if (ok && len == 2 && c < 0xc2) {
            ok = false; /* overlong */
        }
        if (ok && len == 3) {
            unsigned cp = ((c & 0x0fu) << 12) | ((p[i + 1] & 0x3fu) << 6) | (p[i + 2] & 0x3fu);
            ok = cp >= 0x800 && (cp < 0xd800 || cp > 0xdfff);
        }
        if (ok && len == 4) {
            unsigned cp = ((c & 0x07u) << 18) | ((p[i + 1] & 0x3fu) << 12) |
                          ((p[i + 2] & 0x3fu) << 6) | (p[i + 3] & 0x3fu);
            ok = cp >= 0x10000 && cp <= 0x10ffff;
        }
        if (!ok) {
            o[i] = '?';
            i++;
            continue;
        }
        memcpy(o + i, p + i, len);
        i += len;
    }
    o[n] = '\0';
    return o;
}

uint8_t *msm_xds_pack_request(bool delta, const struct msm_xds_req *r, size_t *len)
{
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    if (r->error) {
        st.code = 13; /* INTERNAL, as Envoy */
        st.message = utf8_sanitize(r->error, MSM_XDS_MAX_ERROR_DETAIL);
    }
    uint8_t *out;
    if (!delta) {
        Envoy__Service__Discovery__V3__DiscoveryRequest q =
            ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
        q.version_info = (char *)str_or_empty(r->version_info);
        q.node = (Envoy__Config__Core__V3__Node *)r->node;
        q.n_resource_names = r->n_names;
        q.resource_names = (char **)r->names;
        q.type_url = (char *)str_or_empty(r->type_url);
        q.response_nonce = (char *)str_or_empty(r->nonce);
        q.error_detail = r->error ? &st : NULL;
        *len = protobuf_c_message_get_packed_size(&q.base);
        out = msm_xmalloc(*len ? *len : 1);
        protobuf_c_message_pack(&q.base, out);
    } else {
        Envoy__Service__Discovery__V3__DeltaDiscoveryRequest q =
            ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
        Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry *ents =
            msm_xcalloc(r->n_irv + 1, sizeof(*ents));
        Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry **pents =
            msm_xcalloc(r->n_irv + 1, sizeof(*pents));
        for (size_t i = 0; i < r->n_irv; i++) {
            envoy__service__discovery__v3__delta_discovery_request__initial_resource_versions_entry__init(
                &ents[i]);
            ents[i].key = (char *)r->irv_names[i];
            ents[i].value = (char *)str_or_empty(r->irv_versions[i]);
            pents[i] = &ents[i];
        }
        q.node = (Envoy__Config__Core__V3__Node *)r->node;
        q.type_url = (char *)str_or_empty(r->type_url);
        q.n_resource_names_subscribe = r->n_names;
        q.resource_names_subscribe = (char **)r->names;
        q.n_resource_names_unsubscribe = r->n_unsub;
        q.resource_names_unsubscribe = (char **)r->unsub;
        q.n_initial_resource_versions = r->n_irv;
        q.initial_resource_versions = pents;
        q.response_nonce = (char *)str_or_empty(r->nonce);
        q.error_detail = r->error ? &st : NULL;
        *len = protobuf_c_message_get_packed_size(&q.base);
        out = msm_xmalloc(*len ? *len : 1);
        protobuf_c_message_pack(&q.base, out);
        free(pents);
        free(ents);
    }
    if (r->error) {
        free(st.message);
    }
    return out;
}
