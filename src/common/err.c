#include "common/err.h"

#include <stdio.h>
#include <string.h>

int msm_err_vset(struct msm_err *err, const char *fmt, va_list ap)
{
    if (err) {
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    }
    return MSM_EINVAL;
}

int msm_err_set(struct msm_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    msm_err_vset(err, fmt, ap);
    va_end(ap);
    return MSM_EINVAL;
}

void msm_err_prefix(struct msm_err *err, const char *fmt, ...)
{
    if (!err) {
        return;
    }
    char pre[MSM_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    char tmp[MSM_ERR_LEN];
    snprintf(tmp, sizeof(tmp), "%s: %s", pre, err->msg);
    memcpy(err->msg, tmp, sizeof(tmp));
}
