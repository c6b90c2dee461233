#pragma once
/* A store of named resources kept as their accepted protobuf bytes (route configurations and
 * secrets until their consumers land, and for /config_dump). Main thread only. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct msm_rstore_item {
    char *name;
    char *version;
    double last_updated; /* epoch seconds */
    uint8_t *bytes;
    size_t len;
};

struct msm_rstore {
    const char *type; /* full message name, e.g. "envoy.config.route.v3.RouteConfiguration" */
    struct msm_rstore_item *v;
    int n;
};

void msm_rstore_init(struct msm_rstore *s, const char *type);
void msm_rstore_deinit(struct msm_rstore *s);
/* Insert or replace <name>; the bytes are copied. Returns true when the content changed. */
bool msm_rstore_put(struct msm_rstore *s, const char *name, const char *version,
                    const uint8_t *bytes, size_t len);
bool msm_rstore_remove(struct msm_rstore *s, const char *name);
const struct msm_rstore_item *msm_rstore_get(const struct msm_rstore *s, const char *name);
double msm_wall_now(void);
