#include "upstream/outlier.h"

#include <time.h>

#include "envoy/config/cluster/v3/outlier_detection.pb-c.h"

#include "common/log.h"
#include "config/pbutil.h"
#include "upstream/cluster.h"
#include "upstream/priority.h"

uint64_t msm_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int msm_outlier_cfg_from_proto(const void *proto, struct msm_outlier_cfg *o, struct msm_err *err)
{
    const Envoy__Config__Cluster__V3__OutlierDetection *p = proto;
    *o = (struct msm_outlier_cfg){0};
    if (!p) {
        return 0;
    }
    o->enabled = true;
    o->consecutive_5xx = msm_pb_u32(p->consecutive_5xx, 5);
    o->enforcing_5xx = msm_pb_u32(p->enforcing_consecutive_5xx, 100);
    o->consecutive_gw = msm_pb_u32(p->consecutive_gateway_failure, 5);
    o->enforcing_gw = msm_pb_u32(p->enforcing_consecutive_gateway_failure, 0);
    o->split_local = p->split_external_local_origin_errors;
    o->consecutive_local = msm_pb_u32(p->consecutive_local_origin_failure, 5);
    o->enforcing_local = msm_pb_u32(p->enforcing_consecutive_local_origin_failure, 100);
    int64_t base = msm_pb_duration_ms(p->base_ejection_time, 30000);
    int64_t max = msm_pb_duration_ms(p->max_ejection_time, 300000);
    if (base <= 0 || max < base || max > UINT32_MAX) {
        return msm_err_set(err, "outlier_detection: need 0 < base_ejection_time <= "
                                "max_ejection_time");
    }
    o->base_ejection_ms = (uint32_t)base;
    o->max_ejection_ms = (uint32_t)max;
    o->max_ejection_percent = msm_pb_u32(p->max_ejection_percent, 10);
    if (o->max_ejection_percent > 100 || o->enforcing_5xx > 100 || o->enforcing_gw > 100 ||
        o->enforcing_local > 100) {
        return msm_err_set(err, "outlier_detection: percentages must be <= 100");
    }
    /* Istio always sets enforcing_success_rate: 0; anything enforcing the statistical
     * detectors would be silently ignored, so it is rejected. */
    if (p->enforcing_success_rate && p->enforcing_success_rate->value) {
        return msm_err_set(err, "outlier_detection.enforcing_success_rate: success-rate "
                                "ejection is not supported yet (set it to 0)");
    }
    if (!p->enforcing_success_rate) {
        msm_log(MSM_LOG_WARN, MSM_LC_UPSTREAM, "outlier_detection: success-rate ejection "
                "(enforcing_success_rate defaults to 100) is not implemented; only consecutive "
                "errors eject hosts");
    }
    if (msm_pb_u32(p->enforcing_failure_percentage, 0) ||
        msm_pb_u32(p->enforcing_failure_percentage_local_origin, 0) ||
        msm_pb_u32(p->enforcing_local_origin_success_rate, 0)) {
        return msm_err_set(err, "outlier_detection: failure-percentage and local-origin "
                                "success-rate ejection are not supported yet");
    }
    if (p->n_monitors) {
        return msm_err_set(err, "outlier_detection.monitors: not supported");
    }
    return 0;
}

static bool roll(uint32_t percent)
{
    return percent >= 100 || (percent && msm_random() % 100 < percent);
}

/* Eject <h> if the cluster's ejection budget allows; <enforced> comes from the detector's
 * enforcement percentage. */
static void eject(struct msm_cluster *c, struct msm_host *h, bool enforced,
                  struct msm_stat *enforced_stat)
{
    const struct msm_outlier_cfg *o = &c->cfg->outlier;
    struct msm_outlier_stats *st = c->sh->outlier;
    if (!enforced) {
        return;
    }
    int n = c->hosts->n ? c->hosts->n : 1;
    unsigned active = atomic_load(&c->sh->ejected);
    if ((uint64_t)active * 100 >= (uint64_t)o->max_ejection_percent * (uint64_t)n &&
        active > 0) {
        msm_stat_inc(st->ejections_overflow);
        return;
    }
    uint64_t now = msm_mono_ms();
    uint64_t expected = 0;
    unsigned times = atomic_fetch_add(&h->ejections, 1) + 1;
    uint64_t dur = (uint64_t)o->base_ejection_ms * times;
    if (dur > o->max_ejection_ms) {
        dur = o->max_ejection_ms;
    }
    if (!atomic_compare_exchange_strong(&h->ejected_until, &expected, now + dur)) {
        return; /* another worker ejected it first */
    }
    atomic_fetch_add(&c->sh->ejected, 1);
    msm_health_changed();
    msm_stat_inc(st->ejections_active);
    msm_stat_inc(st->ejections_total);
    msm_stat_inc(st->ejections_enforced_total);
    msm_stat_inc(enforced_stat);
    char a[MSM_ADDRSTRLEN];
    msm_address_str(&h->addr, a, sizeof(a));
    msm_log(MSM_LOG_INFO, MSM_LC_UPSTREAM, "cluster '%s': host %s ejected for %llu ms",
            c->cfg->name, a, (unsigned long long)dur);
}

void msm_outlier_report(struct msm_cluster *c, struct msm_host *h, enum msm_outlier_result r)
{
    const struct msm_outlier_cfg *o = &c->cfg->outlier;
    if (!o->enabled) {
        return;
    }
    struct msm_outlier_stats *st = c->sh->outlier;
    if (r == MSM_OUTLIER_SUCCESS) {
        atomic_store(&h->cons_5xx, 0);
        atomic_store(&h->cons_gw, 0);
        atomic_store(&h->cons_local, 0);
        return;
    }
    if (r == MSM_OUTLIER_LOCAL_FAILURE && o->split_local) {
        if (atomic_fetch_add(&h->cons_local, 1) + 1 == o->consecutive_local) {
            msm_stat_inc(st->ejections_detected_consecutive_local_origin_failure);
            eject(c, h, roll(o->enforcing_local),
                  st->ejections_enforced_consecutive_local_origin_failure);
        }
        return;
    }
    /* Without the split, a local-origin failure counts as a gateway error (Envoy maps it to
     * 503), as do 502/503/504; every 5xx counts for consecutive_5xx. */
    bool gw = r == MSM_OUTLIER_GATEWAY || r == MSM_OUTLIER_LOCAL_FAILURE;
    if (gw && atomic_fetch_add(&h->cons_gw, 1) + 1 == o->consecutive_gw) {
        msm_stat_inc(st->ejections_detected_consecutive_gateway_failure);
        eject(c, h, roll(o->enforcing_gw), st->ejections_enforced_consecutive_gateway_failure);
    }
    if (atomic_fetch_add(&h->cons_5xx, 1) + 1 == o->consecutive_5xx) {
        msm_stat_inc(st->ejections_detected_consecutive_5xx);
        eject(c, h, roll(o->enforcing_5xx), st->ejections_enforced_consecutive_5xx);
    }
}

bool msm_outlier_host_ok(struct msm_cluster *c, struct msm_host *h, uint64_t now_ms)
{
    uint64_t until = atomic_load_explicit(&h->ejected_until, memory_order_relaxed);
    if (!until) {
        return true;
    }
    if (now_ms < until) {
        return false;
    }
    /* Time served: un-eject once (whoever wins the exchange does the accounting). */
    if (atomic_compare_exchange_strong(&h->ejected_until, &until, 0)) {
        atomic_fetch_sub(&c->sh->ejected, 1);
        msm_health_changed();
        msm_stat_dec(c->sh->outlier->ejections_active);
        atomic_store(&h->cons_5xx, 0);
        atomic_store(&h->cons_gw, 0);
        atomic_store(&h->cons_local, 0);
    }
    return true;
}
