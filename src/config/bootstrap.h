#pragma once
/* Loading the bootstrap as Envoy does: -c file (JSON, YAML, binary .pb), --config-yaml merged
 * over it with protobuf MergeFrom semantics, then the CLI's node overrides. */
#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

#include "common/err.h"
#include "server/options.h"

/* Returns a bootstrap freed with protobuf_c_message_free_unpacked(&b->base, NULL), or NULL with
 * <err> naming the file and the field path. */
Envoy__Config__Bootstrap__V3__Bootstrap *msm_bootstrap_load(const struct msm_options *o,
                                                            struct msm_err *err);
/* Parse one document (by file name extension, or JSON then YAML when unknown). */
Envoy__Config__Bootstrap__V3__Bootstrap *msm_bootstrap_parse(const char *name, const char *text,
                                                             size_t len, bool allow_unknown,
                                                             struct msm_err *err);
