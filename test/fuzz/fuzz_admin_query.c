/* Admin query strings (src/admin/admin.c) and stat names (src/stats/tags.c): arbitrary query
 * strings decode within their buffers; arbitrary stat names go through Envoy's default tag
 * extractors and Istio's, and the tag-extracted name is never longer than the name.
 * Input: "<query>\n<stat name>". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "admin/admin_private.h"
#include "common/alloc.h"
#include "envoy/config/metrics/v3/stats.pb-c.h"
#include "stats/tags.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct msm_tag_producer *defaults, *istio;

static void setup(void)
{
    if (defaults) {
        return;
    }
    struct msm_err err;
    defaults = msm_tag_producer_new(NULL, NULL, 0, &err);
    static const char *const re[][2] = {
        {"cluster_name", "^cluster(\\.(.+);)"},
        {"http_conn_manager_prefix",
         "^http\\.(((?:[_.[:digit:]\\w]*|[_\\[\\]aAbBcCdDeEfF[:digit:]\\w\\:]*));\\.)"},
        {"tcp_prefix", "^tcp\\.((.*?)\\.)\\w+?$"},
        {"response_code", "_rq(_(\\d{3}))$"},
        {"listener_address",
         "^listener\\.(((?:[_.[:digit:]]*|[_\\[\\]aAbBcCdDeEfF[:digit:]]*))\\.)"},
        {"tag", "(tag\\.(.+?);\\.)"}};
    Envoy__Config__Metrics__V3__TagSpecifier ts[6], *tp[6];
    for (int i = 0; i < 6; i++) {
        envoy__config__metrics__v3__tag_specifier__init(&ts[i]);
        ts[i].tag_name = (char *)re[i][0];
        ts[i].tag_value_case = ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__TAG_VALUE_REGEX;
        ts[i].regex = (char *)re[i][1];
        tp[i] = &ts[i];
    }
    Envoy__Config__Metrics__V3__StatsConfig sc = ENVOY__CONFIG__METRICS__V3__STATS_CONFIG__INIT;
    Google__Protobuf__BoolValue no = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    sc.use_all_default_tags = &no;
    sc.n_stats_tags = 6;
    sc.stats_tags = tp;
    istio = msm_tag_producer_new(&sc, NULL, 0, &err);
    if (!defaults || !istio) {
        abort();
    }
}

static void extract(struct msm_tag_producer *p, const char *name)
{
    struct msm_tag *tags;
    int n;
    char *out = msm_tag_producer_produce(p, name, &tags, &n);
    if (strlen(out) > strlen(name)) {
        abort();
    }
    free(out);
    msm_tags_free(tags, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384) {
        return 0;
    }
    setup();
    char *in = msm_xstrndup((const char *)data, size);
    char *nl = strchr(in, '\n');
    const char *name = "";
    if (nl) {
        *nl = '\0';
        name = nl + 1;
    }
    const char *query = in;
    char val[64], key[32];
    int n = msm_admin_query_count(query);
    for (int i = 0; i < n + 1; i++) {
        bool got = msm_admin_query_at(query, i, key, sizeof(key), val, sizeof(val));
        if (got != (i < n) || (got && (strlen(key) >= sizeof(key) || strlen(val) >= sizeof(val)))) {
            abort();
        }
    }
    static const char *const names[] = {"filter", "usedonly", "format", "type", "mask"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int rc = msm_admin_query_get(query, names[i], val, sizeof(val));
        if (rc != 0 && rc != 1 && rc != MSM_ELIMIT) {
            abort();
        }
        if (rc == 1 && strlen(val) >= sizeof(val)) {
            abort();
        }
    }
    extract(defaults, name);
    extract(istio, name);
    free(in);
    return 0;
}
