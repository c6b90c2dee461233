# Command-line options (src/server/options.c): Envoy's CLI semantics, pilot-agent's command line.
msm_unit_test(test_options ${CMAKE_SOURCE_DIR}/test/unit/server/test_options.c)
