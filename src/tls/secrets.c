/* The secret manager: static and SDS secrets, subscriptions, and context rebuilds on
 * rotation. See secrets.h. */
#include "tls/secrets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/rstore.h"
#include "tls/tls_private.h"
#include "xds/xds.h"

struct msm_secret_manager {
    struct msm_stats_store *st;
    struct msm_xds *xds;
    struct msm_secret_provider **v;
    int n;
};

struct msm_secret_manager *msm_secrets;

struct msm_secret_manager *msm_secrets_new(struct msm_stats_store *st)
{
    struct msm_secret_manager *sm = MSM_NEW(struct msm_secret_manager);
    sm->st = st;
    return sm;
}

void msm_secret_provider_unref(struct msm_secret_provider *p)
{
    if (!p || atomic_fetch_sub(&p->refs, 1) != 1) {
        return;
    }
    msm_secret_free(p->cur);
    free(p->name);
    free(p->source);
    free(p->version);
    free(p->proto);
    free(p);
}

void msm_secrets_free(struct msm_secret_manager *sm)
{
    if (!sm) {
        return;
    }
    for (int i = 0; i < sm->n; i++) {
        msm_secret_provider_unref(sm->v[i]);
    }
    free(sm->v);
    if (msm_secrets == sm) {
        msm_secrets = NULL;
    }
    free(sm);
}

struct msm_secret_watch *msm_secret_watch_add(struct msm_secret_provider *p,
                                              struct msm_tls_factory *f)
{
    struct msm_secret_watch *w = MSM_NEW(struct msm_secret_watch);
    w->f = f;
    pthread_mutex_lock(&msm_tls_lock);
    w->next = p->watch;
    if (p->watch) {
        p->watch->prev = w;
    }
    p->watch = w;
    pthread_mutex_unlock(&msm_tls_lock);
    return w;
}

/* O(1): every cluster of an Istio sidecar watches the same two secrets, so a scan of the list
 * per removed factory made replacing N clusters O(N^2). */
void msm_secret_watch_remove(struct msm_secret_provider *p, struct msm_secret_watch *w)
{
    pthread_mutex_lock(&msm_tls_lock);
    if (w->prev) {
        w->prev->next = w->next;
    } else {
        p->watch = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    }
    pthread_mutex_unlock(&msm_tls_lock);
    free(w);
}

static bool same_source(const struct msm_secret_provider *p, const uint8_t *src, size_t len)
{
    if (!p->source || !src) {
        return !p->source && !src;
    }
    return p->source_len == len && !memcmp(p->source, src, len);
}

/* Tell the xDS client the full set of names wanted on config source <source> (packed). */
static void resubscribe(struct msm_secret_manager *sm, const uint8_t *source, size_t source_len)
{
    if (!sm->xds || !source) {
        return;
    }
    const char **names = msm_xcalloc((size_t)sm->n + 1, sizeof(char *));
    int k = 0;
    for (int i = 0; i < sm->n; i++) {
        if (sm->v[i]->subscribed && same_source(sm->v[i], source, source_len)) {
            names[k++] = sm->v[i]->name;
        }
    }
    Envoy__Config__Core__V3__ConfigSource *src =
        envoy__config__core__v3__config_source__unpack(NULL, source_len, source);
    struct msm_err err = {{0}};
    if (!src) {
        msm_log(MSM_LOG_ERROR, MSM_LC_SECRET, "SDS: cannot decode a config source");
    } else if (msm_xds_subscribe(sm->xds, src, MSM_XDS_TYPE_SECRET, names, k, false, "sds.{}.",
                                 &err) < 0) {
        msm_log(MSM_LOG_ERROR, MSM_LC_SECRET, "SDS subscription (%d secret(s)) failed: %s", k,
                err.msg);
    }
    if (src) {
        envoy__config__core__v3__config_source__free_unpacked(src, NULL);
    }
    free(names);
}

static struct msm_secret_provider *provider_new(struct msm_secret_manager *sm, const char *name)
{
    struct msm_secret_provider *p = MSM_NEW(struct msm_secret_provider);
    atomic_init(&p->refs, 1); /* the manager's */
    p->name = msm_xstrdup(name);
    sm->v = msm_xrealloc(sm->v, (size_t)(sm->n + 1) * sizeof(*sm->v));
    sm->v[sm->n++] = p;
    return p;
}

int msm_secrets_provider(struct msm_secret_manager *sm, const char *name, const void *srcp,
                         struct msm_secret_provider **out, struct msm_err *err)
{
    const ProtobufCMessage *src = srcp;
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (src) {
        len = protobuf_c_message_get_packed_size(src);
        bytes = msm_xmalloc(len + 1);
        protobuf_c_message_pack(src, bytes);
    }
    for (int i = 0; i < sm->n; i++) {
        struct msm_secret_provider *p = sm->v[i];
        if (!strcmp(p->name, name) && same_source(p, bytes, len)) {
            free(bytes);
            atomic_fetch_add(&p->refs, 1);
            *out = p;
            return 0;
        }
    }
    if (!src) {
        return msm_err_set(err, "Unknown static secret: %s", name);
    }
    struct msm_secret_provider *p = provider_new(sm, name);
    p->source = bytes;
    p->source_len = len;
    p->subscribed = true;
    resubscribe(sm, p->source, p->source_len);
    atomic_fetch_add(&p->refs, 1);
    *out = p;
    return 0;
}

int msm_secrets_add_static(struct msm_secret_manager *sm, const void *proto, struct msm_err *err)
{
    const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = proto;
    if (!s->name || !s->name[0]) {
        return msm_err_set(err, "a static secret needs a name");
    }
    for (int i = 0; i < sm->n; i++) {
        if (!sm->v[i]->source && !strcmp(sm->v[i]->name, s->name)) {
            return msm_err_set(err, "Duplicate static TlsCertificate secret name %s", s->name);
        }
    }
    struct msm_secret *sec = msm_secret_from_proto(s, err);
    if (!sec) {
        msm_err_prefix(err, "secret '%s'", s->name);
        return MSM_EINVAL;
    }
    struct msm_secret_provider *p = provider_new(sm, s->name);
    p->cur = sec;
    p->version = msm_xstrdup("");
    p->last_updated = msm_wall_now();
    p->proto_len = protobuf_c_message_get_packed_size(&s->base);
    p->proto = msm_xmalloc(p->proto_len + 1);
    protobuf_c_message_pack(&s->base, p->proto);
    return 0;
}

void msm_secrets_set_xds(struct msm_secret_manager *sm, struct msm_xds *x)
{
    sm->xds = x;
    if (!x) {
        return;
    }
    /* One call per distinct source. */
    for (int i = 0; i < sm->n; i++) {
        struct msm_secret_provider *p = sm->v[i];
        bool first = true;
        for (int j = 0; j < i && first; j++) {
            first = !(sm->v[j]->subscribed && same_source(sm->v[j], p->source, p->source_len));
        }
        if (p->subscribed && first) {
            resubscribe(sm, p->source, p->source_len);
        }
    }
}

/* Rebuild every factory using <p> after its secret changed. */
static void rotate(struct msm_secret_provider *p)
{
    pthread_mutex_lock(&msm_tls_lock);
    for (struct msm_secret_watch *w = p->watch; w; w = w->next) {
        struct msm_err err = {{0}};
        bool had = w->f->cur != NULL;
        int r = msm_tls_factory_rebuild(w->f, &err);
        if (r < 0) {
            msm_log(MSM_LOG_WARN, MSM_LC_SECRET, "secret '%s': cannot rebuild the TLS context "
                    "of %s: %s", p->name, w->f->owner, err.msg);
        } else if (r > 0) {
            msm_stat_inc(w->f->stats->fac.ssl_context_update_by_sds);
            msm_log(MSM_LOG_DEBUG, MSM_LC_SECRET, "secret '%s': %s TLS context of %s", p->name,
                    had ? "rotated the" : "built the", w->f->owner);
        }
    }
    pthread_mutex_unlock(&msm_tls_lock);
}

static int apply_one(struct msm_secret_manager *sm, const char *name, const char *version,
                     const ProtobufCMessage *msg, struct msm_err *err)
{
    const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = (const void *)msg;
    if (strcmp(s->name, name) != 0) {
        return msm_err_set(err, "resource name '%s' differs from the secret's name '%s'", name,
                           s->name);
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *bytes = msm_xmalloc(len + 1);
    protobuf_c_message_pack(msg, bytes);
    /* Validate first: a bad secret is NACKed even when nothing uses it yet. */
    struct msm_secret *parsed = msm_secret_from_proto(s, err);
    if (!parsed) {
        free(bytes);
        return MSM_EINVAL;
    }
    int changed = 0;
    for (int i = 0; i < sm->n; i++) {
        struct msm_secret_provider *p = sm->v[i];
        if (!p->source || strcmp(p->name, name) != 0) {
            continue;
        }
        free(p->version);
        p->version = msm_xstrdup(version ? version : "");
        if (p->proto && p->proto_len == len && !memcmp(p->proto, bytes, len)) {
            continue;
        }
        if (!parsed) {
            /* Another config source with the same name: one parsed copy each. */
            parsed = msm_secret_from_proto(s, err);
            if (!parsed) {
                continue;
            }
        }
        msm_secret_free(p->cur);
        p->cur = parsed;
        free(p->proto);
        p->proto = msm_xmalloc(len + 1);
        memcpy(p->proto, bytes, len);
        p->proto_len = len;
        p->last_updated = msm_wall_now();
        parsed = NULL;
        rotate(p);
        changed++;
    }
    msm_secret_free(parsed);
    free(bytes);
    return changed;
}

int msm_secrets_apply(struct msm_secret_manager *sm, const struct msm_xds_update *u,
                      struct msm_err *err)
{
    int changes = 0, bad = 0;
    char msg[MSM_ERR_LEN] = "";
    for (int i = 0; i < u->n; i++) {
        struct msm_err e = {{0}};
        int r = apply_one(sm, u->resources[i].name, u->resources[i].version,
                          u->resources[i].msg, &e);
        if (r < 0) {
            size_t l = strlen(msg);
            snprintf(msg + l, sizeof(msg) - l, "%ssecret '%s': %s", bad ? "; " : "",
                     u->resources[i].name, e.msg);
            bad++;
        } else {
            changes += r;
        }
    }
    for (int i = 0; i < u->n_removed; i++) {
        /* Envoy keeps serving with the last secret; new contexts would not be any better. */
        msm_log(MSM_LOG_INFO, MSM_LC_SECRET, "SDS secret '%s' removed by the control plane; "
                "keeping its last value", u->removed[i]);
    }
    if (bad) {
        return msm_err_set(err, "%s", msg);
    }
    return changes;
}

int msm_secrets_fetch_timeout(struct msm_secret_manager *sm, const char *name)
{
    int n = 0;
    for (int i = 0; i < sm->n; i++) {
        struct msm_secret_provider *p = sm->v[i];
        if (p->source && !p->cur && !p->timed_out && !strcmp(p->name, name)) {
            p->timed_out = true;
            n++;
            msm_log(MSM_LOG_WARN, MSM_LC_SECRET, "SDS secret '%s': initial fetch timed out; "
                    "TLS connections that need it fail until it arrives", name);
        }
    }
    return n;
}

const char *msm_secrets_first_sds(const struct msm_secret_manager *sm)
{
    for (int i = 0; i < sm->n; i++) {
        if (sm->v[i]->source) {
            return sm->v[i]->name;
        }
    }
    return NULL;
}

void msm_secrets_gc(struct msm_secret_manager *sm)
{
    for (int i = 0; i < sm->n;) {
        struct msm_secret_provider *p = sm->v[i];
        /* Only the main thread takes references, so one left is the manager's own. */
        if (!p->source || atomic_load(&p->refs) != 1) {
            i++;
            continue;
        }
        sm->v[i] = sm->v[--sm->n];
        p->subscribed = false;
        /* Resubscribe the source without it (its name is no longer in the table). */
        msm_log(MSM_LOG_DEBUG, MSM_LC_SECRET, "SDS secret '%s' is no longer used", p->name);
        resubscribe(sm, p->source, p->source_len);
        msm_secret_provider_unref(p);
    }
}

void msm_secrets_dump(const struct msm_secret_manager *sm, msm_secret_dump_fn *fn, void *arg)
{
    for (int i = 0; i < sm->n; i++) {
        const struct msm_secret_provider *p = sm->v[i];
        struct msm_secret_dump_item it = {.name = p->name, .is_static = !p->source,
                                          .version = p->version ? p->version : "",
                                          .last_updated = p->last_updated, .proto = p->proto,
                                          .proto_len = p->proto_len};
        fn(arg, &it);
    }
}
