/* msm-proxy entry point: Envoy's command line, then validate or serve. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "common/log.h"
#include "server/options.h"
#include "server/server.h"

static void apply_log_options(const struct msm_options *o)
{
    msm_log_set_all((enum msm_log_level)o->log_level);
    for (int i = 0; i < o->n_component_levels; i++) {
        int c = msm_log_component_find(o->component_levels[i].component);
        if (c >= 0) {
            msm_log_set((enum msm_log_component)c,
                        (enum msm_log_level)o->component_levels[i].level);
        }
    }
    msm_log_set_format(o->log_format_set ? o->log_format : NULL, NULL, 0);
}

int main(int argc, char **argv)
{
    struct msm_options o;
    struct msm_err err = {{0}};
    if (msm_options_parse(&o, argc, argv, &err) < 0) {
        fprintf(stderr, "error: %s\n", err.msg);
        fprintf(stderr, "For complete USAGE and HELP type: %s --help\n", argv[0]);
        msm_options_deinit(&o);
        return 1;
    }
    if (o.help) {
        msm_options_usage(stdout, argv[0]);
        msm_options_deinit(&o);
        return 0;
    }
    if (o.hot_restart_version) {
        /* No hot restart in msm-proxy (pilot-agent passes --disable-hot-restart). */
        printf("disabled\n");
        msm_options_deinit(&o);
        return 0;
    }
    if (o.version) {
        printf("\n%s  version: msm-proxy/%s/RELEASE\n\n", argv[0], MSM_VERSION);
        msm_options_deinit(&o);
        return 0;
    }
    apply_log_options(&o);
    if (o.enable_core_dump) {
        struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
        if (setrlimit(RLIMIT_CORE, &rl) != 0) {
            msm_log(MSM_LOG_WARN, MSM_LC_MAIN, "--enable-core-dump: cannot raise RLIMIT_CORE");
        }
    }
    int rc;
    if (o.mode == MSM_MODE_VALIDATE) {
        if (msm_server_validate(&o, &err) < 0) {
            fprintf(stderr, "error initializing configuration '%s': %s\n",
                    o.config_path ? o.config_path : "--config-yaml", err.msg);
            rc = 1;
        } else {
            printf("configuration '%s' OK\n", o.config_path ? o.config_path : "--config-yaml");
            rc = 0;
        }
    } else {
        rc = msm_server_run(&o);
    }
    msm_options_deinit(&o);
    return rc;
}
