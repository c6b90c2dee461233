#pragma once
#include "filter/http.h"

extern const struct msm_http_filter_ops msm_fault_ops;
