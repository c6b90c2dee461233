#pragma once
/* Dynamic configuration (xDS) on the server: start-up sequencing and applying updates to the
 * listener and cluster managers. Main thread. */
#include "common/err.h"

struct msm_server;

enum msm_dyn_phase {
    MSM_DYN_NONE = 0, /* static bootstrap only */
    MSM_DYN_CDS = 1,  /* waiting for the first CDS response and cluster warming */
    MSM_DYN_LDS = 2,  /* waiting for the first LDS response */
    MSM_DYN_DONE = 3,
};

/* Create the xDS client when the bootstrap has dynamic_resources (no-op otherwise). */
int msm_dynamic_init(struct msm_server *srv, struct msm_err *err);
/* After static clusters are warm: subscribe CDS and move through the phases. */
int msm_dynamic_start(struct msm_server *srv, struct msm_err *err);
/* Re-check the phase (after clusters warmed asynchronously). */
void msm_dynamic_advance(struct msm_server *srv);
void msm_dynamic_free(struct msm_server *srv);
