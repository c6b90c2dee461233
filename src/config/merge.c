/* protobuf MergeFrom() and deep copy over protobuf-c descriptors (see merge.h). Presence is
 * decided exactly as protobuf_c_message_pack() decides it (msm__field_present), so merging
 * never resurrects a value the wire format would not carry. */
#include "config/merge.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "config/pbjson-private.h"

static void merge_into(ProtobufCMessage *dst, const ProtobufCMessage *src);

static void *memdup(const void *p, size_t n)
{
    void *q = msm_xmalloc(n);
    memcpy(q, p, n);
    return q;
}

/* Deep-copy one value of <f>'s type from <src> to <dst> (which holds nothing to free). */
static void copy_value(const ProtobufCFieldDescriptor *f, void *dst, const void *src)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)src;
        *(char **)dst = msm_xstrdup(s ? s : "");
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *s = src;
        ProtobufCBinaryData *d = dst;
        d->len = s->len;
        d->data = s->len ? memdup(s->data, s->len) : NULL;
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *s = *(ProtobufCMessage *const *)src;
        *(ProtobufCMessage **)dst = s ? msm_pb_dup(s) : msm__msg_new(f->descriptor);
        break;
    }
    default:
        memcpy(dst, src, msm__elem_size(f->type));
        break;
    }
}

/* Free what a singular member of <f> at <member> owns, leaving it empty. */
static void free_value(const ProtobufCFieldDescriptor *f, void *member)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        char *s = *(char **)member;
        if (s && s != f->default_value) {
            free(s);
        }
        *(char **)member = NULL;
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = member;
        const ProtobufCBinaryData *def = f->default_value;
        if (b->data && (!def || def->data != b->data)) {
            free(b->data);
        }
        b->data = NULL;
        b->len = 0;
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage *m = *(ProtobufCMessage **)member;
        if (m && (const void *)m != f->default_value) {
            protobuf_c_message_free_unpacked(m, NULL);
        }
        *(ProtobufCMessage **)member = NULL;
        break;
    }
    default:
        break;
    }
}

static bool keys_equal(const ProtobufCFieldDescriptor *kf, const ProtobufCMessage *a,
                       const ProtobufCMessage *b)
{
    const void *ka = (const char *)a + kf->offset;
    const void *kb = (const char *)b + kf->offset;
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        const char *sa = *(char *const *)ka;
        const char *sb = *(char *const *)kb;
        return !strcmp(sa ? sa : "", sb ? sb : "");
    }
    if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        return !*(const protobuf_c_boolean *)ka == !*(const protobuf_c_boolean *)kb;
    }
    return !memcmp(ka, kb, msm__elem_size(kf->type));
}

static void merge_map(ProtobufCMessage *dst, const ProtobufCMessage *src,
                      const ProtobufCFieldDescriptor *f)
{
    const ProtobufCFieldDescriptor *kf = &((const ProtobufCMessageDescriptor *)f->descriptor)
                                              ->fields[0];
    size_t sn = *(const size_t *)((const char *)src + f->quantifier_offset);
    ProtobufCMessage *const *sarr = *(ProtobufCMessage **const *)((const char *)src + f->offset);
    size_t *dn = (size_t *)((char *)dst + f->quantifier_offset);
    ProtobufCMessage ***darr = (ProtobufCMessage ***)((char *)dst + f->offset);
    for (size_t i = 0; i < sn; i++) {
        if (!sarr[i]) {
            continue;
        }
        size_t j;
        for (j = 0; j < *dn; j++) {
            if ((*darr)[j] && keys_equal(kf, (*darr)[j], sarr[i])) {
                break;
            }
        }
        if (j < *dn) {
            protobuf_c_message_free_unpacked((*darr)[j], NULL);
            (*darr)[j] = msm_pb_dup(sarr[i]);
            continue;
        }
        *darr = msm_xrealloc(*darr, (*dn + 1) * sizeof(**darr));
        (*darr)[(*dn)++] = msm_pb_dup(sarr[i]);
    }
}

static void merge_repeated(ProtobufCMessage *dst, const ProtobufCMessage *src,
                           const ProtobufCFieldDescriptor *f)
{
    size_t sn = *(const size_t *)((const char *)src + f->quantifier_offset);
    if (!sn) {
        return;
    }
    if (msm__is_map_field(src->descriptor, f)) {
        merge_map(dst, src, f);
        return;
    }
    size_t es = msm__elem_size(f->type);
    const char *sarr = *(char *const *)((const char *)src + f->offset);
    size_t *dn = (size_t *)((char *)dst + f->quantifier_offset);
    char **darr = (char **)((char *)dst + f->offset);
    *darr = msm_xrealloc(*darr, (*dn + sn) * es);
    for (size_t i = 0; i < sn; i++) {
        copy_value(f, *darr + (*dn) * es, sarr + i * es);
        (*dn)++;
    }
}

static void merge_oneof(ProtobufCMessage *dst, const ProtobufCMessage *src,
                        const ProtobufCFieldDescriptor *f)
{
    uint32_t *dcase = (uint32_t *)((char *)dst + f->quantifier_offset);
    void *dm = (char *)dst + f->offset;
    const void *sm = (const char *)src + f->offset;
    if (*dcase == f->id && f->type == PROTOBUF_C_TYPE_MESSAGE && *(ProtobufCMessage **)dm) {
        merge_into(*(ProtobufCMessage **)dm, *(ProtobufCMessage *const *)sm);
        return;
    }
    if (*dcase) {
        const ProtobufCFieldDescriptor *old =
            protobuf_c_message_descriptor_get_field(dst->descriptor, *dcase);
        if (old) {
            free_value(old, (char *)dst + old->offset);
        }
        memset(dm, 0, msm__elem_size(f->type));
    }
    copy_value(f, dm, sm);
    *dcase = f->id;
}

static void merge_field(ProtobufCMessage *dst, const ProtobufCMessage *src,
                        const ProtobufCFieldDescriptor *f)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        merge_repeated(dst, src, f);
        return;
    }
    if (!msm__field_present(src, f)) {
        return;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        merge_oneof(dst, src, f);
        return;
    }
    void *dm = (char *)dst + f->offset;
    const void *sm = (const char *)src + f->offset;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        ProtobufCMessage *d = *(ProtobufCMessage **)dm;
        const ProtobufCMessage *s = *(ProtobufCMessage *const *)sm;
        if (!s) {
            return; /* proto2 required message left NULL */
        }
        if (d && (const void *)d != f->default_value) {
            merge_into(d, s);
        } else {
            *(ProtobufCMessage **)dm = msm_pb_dup(s);
        }
        return;
    }
    free_value(f, dm);
    copy_value(f, dm, sm);
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING) {
        *(protobuf_c_boolean *)((char *)dst + f->quantifier_offset) = 1;
    }
}

static void merge_unknown(ProtobufCMessage *dst, const ProtobufCMessage *src)
{
    if (!src->n_unknown_fields) {
        return;
    }
    size_t n = dst->n_unknown_fields;
    dst->unknown_fields = msm_xrealloc(dst->unknown_fields,
                                       (n + src->n_unknown_fields) * sizeof(*dst->unknown_fields));
    for (unsigned i = 0; i < src->n_unknown_fields; i++) {
        ProtobufCMessageUnknownField *u = &dst->unknown_fields[n + i];
        *u = src->unknown_fields[i];
        u->data = u->len ? memdup(src->unknown_fields[i].data, u->len) : NULL;
    }
    dst->n_unknown_fields += src->n_unknown_fields;
}

static void merge_into(ProtobufCMessage *dst, const ProtobufCMessage *src)
{
    const ProtobufCMessageDescriptor *desc = src->descriptor;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        merge_field(dst, src, &desc->fields[i]);
    }
    merge_unknown(dst, src);
}

int msm_pb_merge(ProtobufCMessage *dst, const ProtobufCMessage *src, struct msm_err *err)
{
    if (!dst || !src) {
        return msm_err_set(err, "merge: missing message");
    }
    if (dst->descriptor != src->descriptor &&
        strcmp(dst->descriptor->name, src->descriptor->name) != 0) {
        return msm_err_set(err, "cannot merge %s into %s", src->descriptor->name,
                           dst->descriptor->name);
    }
    merge_into(dst, src);
    return 0;
}

ProtobufCMessage *msm_pb_dup(const ProtobufCMessage *msg)
{
    ProtobufCMessage *copy = msm__msg_new(msg->descriptor);
    merge_into(copy, msg);
    return copy;
}
