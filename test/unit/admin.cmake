# Observability (src/stats, src/admin, src/accesslog): tag extraction against Istio's bootstrap
# stats_tags and Envoy's defaults, the /stats and /stats/prometheus renderers, Istio's standard
# metric labels, access log formats (Istio's default format from the fixtures), filters and files.
msm_unit_test(test_tags ${CMAKE_CURRENT_LIST_DIR}/stats/test_tags.c)
msm_unit_test(test_stats_render ${CMAKE_CURRENT_LIST_DIR}/admin/test_stats_render.c)
msm_unit_test(test_access_log ${CMAKE_CURRENT_LIST_DIR}/accesslog/test_access_log.c)
msm_unit_test(test_istio_stats ${CMAKE_CURRENT_LIST_DIR}/stats/test_istio_stats.c)
