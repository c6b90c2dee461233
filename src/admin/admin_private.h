#pragma once
/* Endpoint handlers implemented outside admin.c. */
#include "admin/admin.h"

void msm_admin_config_dump(struct msm_server *srv, const struct msm_admin_req *rq,
                           struct msm_admin_resp *rs);
