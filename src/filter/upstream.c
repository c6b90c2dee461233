/* Upstream (cluster) network filters: the registry, config building and per-connection chains
 * (see upstream.h). */
#include "filter/upstream.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/filter.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "filters/network/metadata_exchange/metadata_exchange.h"
#include "stats/stats.h"

/* What this build implements as an upstream filter (Envoy registers these separately from the
 * downstream network filters). */
static const struct msm_upstream_filter_ops *const upstream_filters[] = {
    &msm_mx_upstream_ops,
};

struct factory {
    const struct msm_upstream_filter_ops *ops;
    void *config;
};

struct msm_upstream_filters {
    atomic_int refs;
    struct factory *f;
    int n;
};

struct msm_upstream_filter_handle {
    struct msm_upstream_chain *ch;
    int index;
    const struct msm_upstream_filter_ops *ops;
    void *inst;
};

struct msm_upstream_chain {
    struct msm_upstream_filters *fs;
    struct msm_conn *const *conn;
    struct msm_stream_info *const *si;
    struct msm_upstream_filter_handle *h;
};

static const struct msm_upstream_filter_ops *find(const char *type, const char *name)
{
    for (size_t i = 0; i < sizeof(upstream_filters) / sizeof(upstream_filters[0]); i++) {
        const struct msm_upstream_filter_ops *o = upstream_filters[i];
        if (type ? !strcmp(o->config_type, type) : !strcmp(o->name, name)) {
            return o;
        }
    }
    return NULL;
}

/* One cluster Filter into <out>; 1 when it is skipped (validate mode), 0, or MSM_EINVAL. */
static int factory_from_proto(const Envoy__Config__Cluster__V3__Filter *p, const char *cluster,
                              bool validate_only, struct factory *out, struct msm_err *err)
{
    if (p->config_discovery) {
        return msm_err_set(err, "config_discovery (ECDS) is not supported yet");
    }
    ProtobufCMessage *msg = NULL;
    const char *type = NULL;
    /* Like the HTTP protocol options: newer istiod versions may add fields to TypedStructs. */
    struct msm_pbjson_opts jo = {.allow_unknown_fields = true};
    if (p->typed_config) {
        msg = msm_pb_any_unpack(p->typed_config, NULL, &jo, err);
        if (!msg) {
            msm_err_prefix(err, "typed_config");
            return MSM_EINVAL;
        }
        type = msg->descriptor->name;
    }
    const struct msm_upstream_filter_ops *ops = find(type, p->name);
    if (!ops) {
        if (msg) {
            protobuf_c_message_free_unpacked(msg, NULL);
        }
        if (!validate_only) {
            return msm_err_set(err, "upstream network filter '%s' (%s) is not supported", p->name,
                               type ? type : "no typed_config");
        }
        msm_log(MSM_LOG_WARN, MSM_LC_CONFIG, "cluster '%s': upstream network filter '%s' (%s) is "
                "not supported: serving this config will fail", cluster, p->name,
                type ? type : "no typed_config");
        return 1;
    }
    if (!msg) {
        const ProtobufCMessageDescriptor *d = msm_types_find(ops->config_type);
        if (!d) {
            return msm_err_set(err, "internal: config type %s not registered", ops->config_type);
        }
        msg = msm_xmalloc(d->sizeof_message);
        protobuf_c_message_init(d, msg);
    }
    struct msm_factory_ctx ctx = {.stats = msm_stats, .listener_name = cluster};
    int rc = ops->config_new(msg, &ctx, &out->config, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (rc < 0) {
        msm_err_prefix(err, "%s", ops->name);
        return rc;
    }
    out->ops = ops;
    return 0;
}

int msm_upstream_filters_new(const void *const *filters, size_t n, const char *cluster,
                             bool validate_only, struct msm_upstream_filters **out,
                             struct msm_err *err)
{
    *out = NULL;
    if (!n) {
        return 0;
    }
    struct msm_upstream_filters *fs = MSM_NEW(struct msm_upstream_filters);
    atomic_init(&fs->refs, 1);
    fs->f = msm_xcalloc(n, sizeof(*fs->f));
    for (size_t i = 0; i < n; i++) {
        const Envoy__Config__Cluster__V3__Filter *p = filters[i];
        int rc = factory_from_proto(p, cluster, validate_only, &fs->f[fs->n], err);
        if (rc < 0) {
            msm_err_prefix(err, "filters[%zu] '%s'", i, p->name);
            msm_upstream_filters_unref(fs);
            return rc;
        }
        if (rc == 0) {
            fs->n++;
        }
    }
    if (!fs->n) {
        msm_upstream_filters_unref(fs);
        return 0;
    }
    *out = fs;
    return 0;
}

struct msm_upstream_filters *msm_upstream_filters_ref(struct msm_upstream_filters *fs)
{
    atomic_fetch_add(&fs->refs, 1);
    return fs;
}

void msm_upstream_filters_unref(struct msm_upstream_filters *fs)
{
    if (!fs || atomic_fetch_sub(&fs->refs, 1) != 1) {
        return;
    }
    for (int i = 0; i < fs->n; i++) {
        if (fs->f[i].ops->config_free) {
            fs->f[i].ops->config_free(fs->f[i].config);
        }
    }
    free(fs->f);
    free(fs);
}

/* ---- per connection ----------------------------------------------------------------------- */

struct msm_upstream_chain *msm_upstream_chain_new(struct msm_upstream_filters *fs,
                                                  struct msm_conn *const *conn,
                                                  struct msm_stream_info *const *si)
{
    struct msm_upstream_chain *ch = MSM_NEW(struct msm_upstream_chain);
    ch->fs = msm_upstream_filters_ref(fs);
    ch->conn = conn;
    ch->si = si;
    ch->h = msm_xcalloc((size_t)fs->n, sizeof(*ch->h));
    for (int i = 0; i < fs->n; i++) {
        struct msm_upstream_filter_handle *h = &ch->h[i];
        h->ch = ch;
        h->index = i;
        h->ops = fs->f[i].ops;
        h->inst = h->ops->filter_new(fs->f[i].config, h);
    }
    return ch;
}

enum msm_filter_status msm_upstream_chain_on_data(struct msm_upstream_chain *ch,
                                                  struct msm_buf *data, bool end_stream)
{
    for (int i = 0; i < ch->fs->n; i++) {
        struct msm_upstream_filter_handle *h = &ch->h[i];
        if (h->ops->on_data && h->ops->on_data(h->inst, data, end_stream) == MSM_FILTER_STOP) {
            return MSM_FILTER_STOP;
        }
        if (!*ch->conn) {
            return MSM_FILTER_STOP; /* a filter closed the connection */
        }
    }
    return MSM_FILTER_CONTINUE;
}

/* on_write from filter <from> down to the first one. */
static enum msm_filter_status write_from(struct msm_upstream_chain *ch, int from,
                                         struct msm_buf *data, bool end_stream)
{
    for (int i = from; i >= 0; i--) {
        struct msm_upstream_filter_handle *h = &ch->h[i];
        if (h->ops->on_write && h->ops->on_write(h->inst, data, end_stream) == MSM_FILTER_STOP) {
            return MSM_FILTER_STOP;
        }
    }
    return MSM_FILTER_CONTINUE;
}

enum msm_filter_status msm_upstream_chain_on_write(struct msm_upstream_chain *ch,
                                                   struct msm_buf *data, bool end_stream)
{
    return write_from(ch, ch->fs->n - 1, data, end_stream);
}

void msm_upstream_chain_free(struct msm_upstream_chain *ch)
{
    if (!ch) {
        return;
    }
    for (int i = 0; i < ch->fs->n; i++) {
        if (ch->h[i].inst && ch->h[i].ops->filter_free) {
            ch->h[i].ops->filter_free(ch->h[i].inst);
        }
    }
    free(ch->h);
    msm_upstream_filters_unref(ch->fs);
    free(ch);
}

struct msm_conn *msm_upstream_filter_conn(struct msm_upstream_filter_handle *h)
{
    return *h->ch->conn;
}

struct msm_stream_info *msm_upstream_filter_stream_info(struct msm_upstream_filter_handle *h)
{
    return *h->ch->si;
}

void msm_upstream_filter_inject(struct msm_upstream_filter_handle *h, struct msm_buf *data)
{
    struct msm_conn *c = *h->ch->conn;
    if (!c) {
        msm_buf_drain(data, data->len);
        return;
    }
    if (write_from(h->ch, h->index - 1, data, false) == MSM_FILTER_CONTINUE) {
        msm_conn_write(c, data, false);
    }
}

void msm_upstream_filter_close(struct msm_upstream_filter_handle *h, enum msm_close_type how)
{
    struct msm_conn *c = *h->ch->conn;
    if (c) {
        msm_conn_close(c, how);
    }
}
