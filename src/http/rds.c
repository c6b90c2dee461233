#include "http/rds.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include <protobuf-c/protobuf-c.h>

#include "common/alloc.h"
#include "config/snapshot.h"
#include "http/route.h"

struct rds_entry {
    char *name;
    struct msm_route_config *rc; /* NULL: nothing accepted (yet) */
    uint64_t hash;               /* of the accepted proto */
    bool ready;
};

struct msm_rds {
    struct rds_entry *v;
    int n;
};

struct msm_rds *msm_rds_new(void)
{
    return MSM_NEW(struct msm_rds);
}

void msm_rds_free(struct msm_rds *r)
{
    if (!r) {
        return;
    }
    for (int i = 0; i < r->n; i++) {
        free(r->v[i].name);
        msm_route_config_unref(r->v[i].rc);
    }
    free(r->v);
    free(r);
}

static struct rds_entry *find(const struct msm_rds *r, const char *name)
{
    for (int i = 0; i < r->n; i++) {
        if (!strcmp(r->v[i].name, name)) {
            return &r->v[i];
        }
    }
    return NULL;
}

static struct rds_entry *find_or_add(struct msm_rds *r, const char *name)
{
    struct rds_entry *e = find(r, name);
    if (e) {
        return e;
    }
    r->v = msm_xrealloc(r->v, (size_t)(r->n + 1) * sizeof(*r->v));
    e = &r->v[r->n++];
    memset(e, 0, sizeof(*e));
    e->name = msm_xstrdup(name);
    return e;
}

int msm_rds_put(struct msm_rds *r, const char *name, const void *proto, struct msm_err *err)
{
    struct rds_entry *e = find_or_add(r, name);
    e->ready = true;
    const ProtobufCMessage *m = proto;
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = msm_xmalloc(len + 1);
    protobuf_c_message_pack(m, b);
    uint64_t h = XXH3_64bits(b, len);
    free(b);
    if (e->rc && e->hash == h) {
        return 0;
    }
    struct msm_route_config *rc = msm_route_config_new(proto, NULL, err);
    if (!rc) {
        return MSM_EINVAL;
    }
    msm_route_config_unref(e->rc);
    e->rc = rc;
    e->hash = h;
    return 1;
}

bool msm_rds_remove(struct msm_rds *r, const char *name)
{
    struct rds_entry *e = find(r, name);
    if (!e || !e->rc) {
        return false;
    }
    msm_route_config_unref(e->rc);
    e->rc = NULL;
    e->hash = 0;
    return true;
}

bool msm_rds_mark_ready(struct msm_rds *r, const char *name)
{
    struct rds_entry *e = find_or_add(r, name);
    bool was = e->ready;
    e->ready = true;
    return !was;
}

bool msm_rds_ready(const struct msm_rds *r, const char *name)
{
    const struct rds_entry *e = find(r, name);
    return e && e->ready;
}

void msm_rds_fill_snapshot(const struct msm_rds *r, struct msm_snapshot *s)
{
    for (int i = 0; i < r->n; i++) {
        if (r->v[i].rc) {
            msm_snapshot_add_route(s, r->v[i].name, r->v[i].rc);
        }
    }
}

struct msm_route_config *msm_rds_get(const struct msm_rds *r, const char *name)
{
    const struct rds_entry *e = find(r, name);
    return e ? e->rc : NULL;
}

int msm_rds_count(const struct msm_rds *r)
{
    return r->n;
}
