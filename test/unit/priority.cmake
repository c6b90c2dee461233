# Priority levels, localities, panic (src/upstream/priority.c).
msm_unit_test(test_priority ${CMAKE_SOURCE_DIR}/test/unit/upstream/test_priority.c)
