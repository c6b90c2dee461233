#include "accesslog/stream_info.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "upstream/cluster.h"

static const char *const short_names[MSM_RF_COUNT] = {
#define MSM_RF_X(e, s, l) s,
    MSM_RESPONSE_FLAGS(MSM_RF_X)
#undef MSM_RF_X
};

static const char *const long_names[MSM_RF_COUNT] = {
#define MSM_RF_X(e, s, l) l,
    MSM_RESPONSE_FLAGS(MSM_RF_X)
#undef MSM_RF_X
};

void msm_si_init(struct msm_stream_info *si, double now, double wall)
{
    memset(si, 0, sizeof(*si));
    si->start = now;
    si->start_wall = wall;
}

void msm_si_set_termination_details(struct msm_stream_info *si, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(si->termination_buf, sizeof(si->termination_buf), fmt, ap);
    va_end(ap);
    si->connection_termination_details = si->termination_buf;
}

void msm_si_deinit(struct msm_stream_info *si)
{
    msm_si_set_upstream(si, NULL, NULL);
}

void msm_si_set_upstream(struct msm_stream_info *si, struct msm_cluster_cfg *cluster,
                         struct msm_host *host)
{
    if (cluster) {
        atomic_fetch_add(&cluster->refs, 1);
    }
    if (host) {
        atomic_fetch_add(&host->refs, 1);
    }
    msm_cluster_cfg_unref(si->upstream_cluster);
    msm_host_unref(si->upstream_host);
    si->upstream_cluster = cluster;
    si->upstream_host = host;
}

int msm_si_flags_str(const struct msm_stream_info *si, bool long_form, char *out, size_t n)
{
    size_t k = 0;
    out[0] = '\0';
    for (int f = 0; f < MSM_RF_COUNT; f++) {
        if (!msm_si_has_flag(si, (enum msm_response_flag)f)) {
            continue;
        }
        int w = snprintf(out + k, n - k, "%s%s", k ? "," : "",
                         long_form ? long_names[f] : short_names[f]);
        if (w < 0 || (size_t)w >= n - k) {
            k = n - 1;
            break;
        }
        k += (size_t)w;
    }
    if (!k) {
        return snprintf(out, n, "-");
    }
    return (int)k;
}

int msm_response_flag_parse(const char *s)
{
    for (int f = 0; f < MSM_RF_COUNT; f++) {
        if (!strcmp(s, short_names[f])) {
            return f;
        }
    }
    return -1;
}
