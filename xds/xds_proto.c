#include "xds/xds_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include "common/alloc.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "xds/strmap.h"

#define RESOURCE_WRAPPER_URL "type.googleapis.com/envoy.service.discovery.v3.Resource"

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

static char *errdup(const struct msm_err *e)
{
    return msm_xstrdup(e->msg);
}

/* Unpack <any> as a resource of type <desc> (the response's type). SotW resources may come
 * wrapped in envoy.service.discovery.v3.Resource (Envoy accepts that for TTLs): then <*name>
 * and <*version> are taken from the wrapper and <*wrapper> owns them. */
static ProtobufCMessage *unpack_one(const Google__Protobuf__Any *any,
                                    const ProtobufCMessageDescriptor *desc, const char *type_url,
                                    ProtobufCMessage **wrapper, struct msm_err *err)
{
    if (!any) {
        msm_err_set(err, "empty Any");
        return NULL;
    }
    const char *url = str_or_empty(any->type_url);
    if (wrapper && !strcmp(url, RESOURCE_WRAPPER_URL)) {
        ProtobufCMessage *w = msm_pb_unpack(&envoy__service__discovery__v3__resource__descriptor,
                                            any->value.data, any->value.len, err);
        if (!w) {
            return NULL;
        }
        const Envoy__Service__Discovery__V3__Resource *r = (const void *)w;
        if (!r->resource) {
            /* A TTL heartbeat: nothing to decode. */
            *wrapper = w;
            return NULL;
        }
        ProtobufCMessage *m = unpack_one(r->resource, desc, type_url, NULL, err);
        if (!m) {
            protobuf_c_message_free_unpacked(w, NULL);
            return NULL;
        }
        *wrapper = w;
        return m;
    }
    if (strcmp(url, type_url) != 0) {
        msm_err_set(err, "type URL %s embedded in an individual Any does not match the "
                         "message-wide type URL %s in DiscoveryResponse",
                    url, type_url);
        return NULL;
    }
    return msm_pb_unpack(desc, any->value.data, any->value.len, err);
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
    d->error = errdup(&e);
}

/* Drop the decoded resources: a response is applied whole or not at all. */
static void drop_resources(struct msm_xds_decoded *d)
{
    for (int i = 0; i < d->n; i++) {
        protobuf_c_message_free_unpacked((ProtobufCMessage *)d->res[i].msg, NULL);
    }
    d->n = 0;
}

/* SotW wrappers must stay alive as long as the names point into them. */
struct wrappers {
    ProtobufCMessage **v;
    size_t n, cap;
};

static void decode_sotw(struct msm_xds_decoded *d, const ProtobufCMessageDescriptor *desc,
                        struct wrappers *wr)
{
    const Envoy__Service__Discovery__V3__DiscoveryResponse *r = (const void *)d->resp;
    d->version_info = str_or_empty(r->version_info);
    d->nonce = str_or_empty(r->nonce);
    d->res = msm_xcalloc(r->n_resources + 1, sizeof(*d->res));
    for (size_t i = 0; i < r->n_resources; i++) {
        struct msm_err e;
        ProtobufCMessage *w = NULL;
        ProtobufCMessage *m = unpack_one(r->resources[i], desc, d->type_url, &w, &e);
        if (w) {
            wr->v = msm_xgrow(wr->v, sizeof(*wr->v), &wr->cap, wr->n + 1);
            wr->v[wr->n++] = w;
        }
        if (!m && w) {
            continue; /* heartbeat */
        }
        if (!m) {
            set_error(d, "resources[%zu]: %s", i, e.msg);
            return;
        }
        struct msm_xds_resource *res = &d->res[d->n++];
        res->msg = m;
        res->version = d->version_info;
        if (w) {
            const Envoy__Service__Discovery__V3__Resource *rw = (const void *)w;
            res->name = rw->name && rw->name[0] ? rw->name : msm_xds_resource_name(m);
            res->version = rw->version && rw->version[0] ? rw->version : d->version_info;
        } else {
            res->name = msm_xds_resource_name(m);
        }
    }
}

static void decode_delta(struct msm_xds_decoded *d, const ProtobufCMessageDescriptor *desc)
{
    const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = (const void *)d->resp;
    d->version_info = str_or_empty(r->system_version_info);
    d->nonce = str_or_empty(r->nonce);
    d->removed = msm_xcalloc(r->n_removed_resources + 1, sizeof(*d->removed));
    for (size_t i = 0; i < r->n_removed_resources; i++) {
        d->removed[d->n_removed++] = str_or_empty(r->removed_resources[i]);
    }
    d->res = msm_xcalloc(r->n_resources + 1, sizeof(*d->res));
    for (size_t i = 0; i < r->n_resources; i++) {
        const Envoy__Service__Discovery__V3__Resource *rr = r->resources[i];
        const char *name = str_or_empty(rr->name);
        if (!rr->resource) {
            continue; /* TTL heartbeat: refreshes, never updates */
        }
        struct msm_err e;
        ProtobufCMessage *m = unpack_one(rr->resource, desc, d->type_url, NULL, &e);
        if (!m) {
            set_error(d, "resource '%s': %s", name, e.msg);
            return;
        }
        struct msm_xds_resource *res = &d->res[d->n++];
        res->msg = m;
        res->name = name[0] ? name : msm_xds_resource_name(m);
        res->version = str_or_empty(rr->version);
    }
}

static void check_duplicates(struct msm_xds_decoded *d)
{
    struct msm_strmap seen;
    msm_strmap_init(&seen);
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

struct msm_xds_decoded *msm_xds_decode(bool delta, const uint8_t *data, size_t len,
                                       struct msm_err *err)
{
    const ProtobufCMessageDescriptor *rdesc =
        delta ? &envoy__service__discovery__v3__delta_discovery_response__descriptor
              : &envoy__service__discovery__v3__discovery_response__descriptor;
    ProtobufCMessage *resp = msm_pb_unpack(rdesc, data, len, err);
    if (!resp) {
        msm_err_prefix(err, "malformed %s", rdesc->name);
        return NULL;
    }
    struct msm_xds_decoded *d = MSM_NEW(struct msm_xds_decoded);
    d->delta = delta;
    d->resp = resp;
    d->type_url = str_or_empty(delta ? ((Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *)
                                            resp)->type_url
                                     : ((Envoy__Service__Discovery__V3__DiscoveryResponse *)
                                            resp)->type_url);
    d->nonce = d->version_info = "";
    const ProtobufCMessageDescriptor *desc = msm_types_find_url(d->type_url);
    struct wrappers wr = {0};
    d->wrappers = NULL;
    if (!desc) {
        /* Still fill nonce/version so the NACK can name the response. */
        if (delta) {
            const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = (const void *)resp;
            d->nonce = str_or_empty(r->nonce);
            d->version_info = str_or_empty(r->system_version_info);
        } else {
            const Envoy__Service__Discovery__V3__DiscoveryResponse *r = (const void *)resp;
            d->nonce = str_or_empty(r->nonce);
            d->version_info = str_or_empty(r->version_info);
        }
        set_error(d, "unknown type URL '%s'", d->type_url);
        return d;
    }
    if (delta) {
        decode_delta(d, desc);
    } else {
        decode_sotw(d, desc, &wr);
    }
    if (!d->error) {
        check_duplicates(d);
    }
    if (d->error) {
        drop_resources(d);
    }
    d->wrappers = wr.v;
    d->n_wrappers = wr.n;
    return d;
}

void msm_xds_decoded_free(struct msm_xds_decoded *d)
{
    if (!d) {
        return;
    }
    drop_resources(d);
    free(d->res);
    free(d->removed);
    for (size_t i = 0; i < d->n_wrappers; i++) {
        protobuf_c_message_free_unpacked(d->wrappers[i], NULL);
    }
    free(d->wrappers);
    free(d->error);
    protobuf_c_message_free_unpacked(d->resp, NULL);
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
