#pragma once
/* Errors. Functions return 0 or a negative code (-errno or MSM_E*); config and control-plane
 * errors also fill a caller-owned struct msm_err whose text ends up in a log line, a
 * non-zero exit or a NACK's error_detail. No allocation on the error path. */
#include <stdarg.h>
#include <stddef.h>

enum msm_errcode {
    MSM_OK = 0,
    MSM_EINVAL = -1000, /* invalid configuration or input */
    MSM_EUNSUPPORTED = -1001,
    MSM_ENOTFOUND = -1002,
    MSM_EAGAIN = -1003,
    MSM_ELIMIT = -1004, /* a configured or hard limit was reached */
};

#define MSM_ERR_LEN 2048

struct msm_err {
    char msg[MSM_ERR_LEN];
};

/* Set <err> (may be NULL) to the formatted message; returns MSM_EINVAL so callers can write
 * `return msm_err_set(err, ...)`. */
int msm_err_set(struct msm_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int msm_err_vset(struct msm_err *err, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Prepend "<prefix>: " to the message already in <err> (field path context, e.g. a listener
 * name). Truncates on overflow rather than failing. */
void msm_err_prefix(struct msm_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
