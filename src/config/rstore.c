#include "config/rstore.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/alloc.h"

double msm_wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

void msm_rstore_init(struct msm_rstore *s, const char *type)
{
    memset(s, 0, sizeof(*s));
    s->type = type;
}

static void item_free(struct msm_rstore_item *it)
{
    free(it->name);
    free(it->version);
    free(it->bytes);
}

void msm_rstore_deinit(struct msm_rstore *s)
{
    for (int i = 0; i < s->n; i++) {
        item_free(&s->v[i]);
    }
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static struct msm_rstore_item *find(const struct msm_rstore *s, const char *name)
{
    for (int i = 0; i < s->n; i++) {
        if (!strcmp(s->v[i].name, name)) {
            return &s->v[i];
        }
    }
    return NULL;
}

bool msm_rstore_put(struct msm_rstore *s, const char *name, const char *version,
                    const uint8_t *bytes, size_t len)
{
    struct msm_rstore_item *it = find(s, name);
    if (it && it->len == len && !memcmp(it->bytes, bytes, len)) {
        free(it->version);
        it->version = msm_xstrdup(version ? version : "");
        return false;
    }
    if (!it) {
        s->v = msm_xrealloc(s->v, (size_t)(s->n + 1) * sizeof(*s->v));
        it = &s->v[s->n++];
        memset(it, 0, sizeof(*it));
        it->name = msm_xstrdup(name);
    }
    free(it->version);
    free(it->bytes);
    it->version = msm_xstrdup(version ? version : "");
    it->bytes = msm_xmalloc(len + 1);
    memcpy(it->bytes, bytes, len);
    it->len = len;
    it->last_updated = msm_wall_now();
    return true;
}

bool msm_rstore_remove(struct msm_rstore *s, const char *name)
{
    struct msm_rstore_item *it = find(s, name);
    if (!it) {
        return false;
    }
    item_free(it);
    *it = s->v[--s->n];
    return true;
}

const struct msm_rstore_item *msm_rstore_get(const struct msm_rstore *s, const char *name)
{
    return find(s, name);
}
