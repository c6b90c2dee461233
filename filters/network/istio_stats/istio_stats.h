#pragma once
/* istio.stats (stats.PluginConfig) on TCP filter chains: Istio's istio_tcp_* metrics. */
#include "filter/network.h"

extern const struct msm_network_filter_ops msm_istio_stats_ops;
