# Istio's TCP metadata exchange (filters/network/metadata_exchange): the preamble codec against
# goldens, the workload metadata rules, the state machine over a socketpair, cluster filters.
msm_unit_test(test_metadata_exchange
  ${CMAKE_SOURCE_DIR}/test/unit/metadata_exchange/test_metadata_exchange.c)
