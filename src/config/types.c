/* Type registry over the generated msm_api_messages[] table (see types.h). An open-addressing
 * hash table keyed by full name, built once. */
#include "config/types.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"

extern const ProtobufCMessageDescriptor *const msm_api_messages[];
extern const size_t msm_api_messages_count;

static pthread_once_t types_once = PTHREAD_ONCE_INIT;
static const ProtobufCMessageDescriptor **types_slots; /* NULL = empty */
static size_t types_mask;

static uint64_t name_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void types_build(void)
{
    size_t cap = 16;
    while (cap < msm_api_messages_count * 2) {
        cap <<= 1;
    }
    types_slots = msm_xcalloc(cap, sizeof(*types_slots));
    types_mask = cap - 1;
    for (size_t i = 0; i < msm_api_messages_count; i++) {
        const ProtobufCMessageDescriptor *d = msm_api_messages[i];
        size_t len = strlen(d->name);
        size_t pos = name_hash(d->name, len) & types_mask;
        while (types_slots[pos]) {
            if (!strcmp(types_slots[pos]->name, d->name)) {
                /* Two .proto files define the same message: keep the first, say so. */
                msm_log(MSM_LOG_WARN, MSM_LC_CONFIG, "duplicate message type %s in registry",
                        d->name);
                break;
            }
            pos = (pos + 1) & types_mask;
        }
        if (!types_slots[pos]) {
            types_slots[pos] = d;
        }
    }
}

const ProtobufCMessageDescriptor *msm_types_findn(const char *name, size_t len)
{
    pthread_once(&types_once, types_build);
    size_t pos = name_hash(name, len) & types_mask;
    while (types_slots[pos]) {
        const char *n = types_slots[pos]->name;
        if (!strncmp(n, name, len) && n[len] == '\0') {
            return types_slots[pos];
        }
        pos = (pos + 1) & types_mask;
    }
    return NULL;
}

const ProtobufCMessageDescriptor *msm_types_find(const char *full_name)
{
    if (!full_name) {
        return NULL;
    }
    return msm_types_findn(full_name, strlen(full_name));
}

const ProtobufCMessageDescriptor *msm_types_find_url(const char *type_url)
{
    if (!type_url) {
        return NULL;
    }
    const char *slash = strrchr(type_url, '/');
    const char *name = slash ? slash + 1 : type_url;
    return msm_types_findn(name, strlen(name));
}

size_t msm_types_count(void)
{
    return msm_api_messages_count;
}

const ProtobufCMessageDescriptor *msm_types_at(size_t i)
{
    return i < msm_api_messages_count ? msm_api_messages[i] : NULL;
}
