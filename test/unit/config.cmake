# Unit tests of the configuration codec (src/config): proto3 JSON, YAML, merge, and the round
# trip of every Istio fixture.
msm_unit_test(test_config_pbjson ${CMAKE_CURRENT_LIST_DIR}/config/test_pbjson.c)
msm_unit_test(test_config_yaml ${CMAKE_CURRENT_LIST_DIR}/config/test_yaml.c)
msm_unit_test(test_config_merge ${CMAKE_CURRENT_LIST_DIR}/config/test_merge.c)
msm_unit_test(test_config_fixtures ${CMAKE_CURRENT_LIST_DIR}/config/test_fixtures.c)
msm_unit_test(test_config_matcher ${CMAKE_CURRENT_LIST_DIR}/config/test_matcher.c)
