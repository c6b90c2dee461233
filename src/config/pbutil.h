#pragma once
/* Small helpers for reading Envoy protos (protobuf-c structs) into plain C config. */
#include <stdbool.h>
#include <stdint.h>

#include "envoy/config/core/v3/address.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

#include "common/err.h"
#include "net/address.h"

/* Duration in milliseconds (rounded up for sub-ms positives), <dflt> when unset; negative
 * durations are an error the caller reports. */
static inline int64_t msm_pb_duration_ms(const Google__Protobuf__Duration *d, int64_t dflt)
{
    if (!d) {
        return dflt;
    }
    int64_t ms = d->seconds * 1000 + d->nanos / 1000000;
    if (ms == 0 && d->nanos > 0) {
        ms = 1;
    }
    return ms;
}

static inline uint32_t msm_pb_u32(const Google__Protobuf__UInt32Value *v, uint32_t dflt)
{
    return v ? v->value : dflt;
}

static inline bool msm_pb_bool(const Google__Protobuf__BoolValue *v, bool dflt)
{
    return v ? v->value : dflt;
}

/* An Address that must be concrete (IP literal or pipe): listeners, STATIC endpoints, bind
 * config. MSM_EINVAL with the reason otherwise. */
int msm_pb_address(const Envoy__Config__Core__V3__Address *a, struct msm_address *out,
                   struct msm_err *err);
