msm_unit_test(test_rbac ${CMAKE_SOURCE_DIR}/test/unit/rbac/test_rbac.c)
