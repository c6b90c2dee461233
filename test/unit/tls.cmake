# TLS transport sockets, contexts, SDS secrets (src/tls) and the TLS inspector (src/net).
msm_unit_test(test_tls ${CMAKE_CURRENT_LIST_DIR}/tls/test_tls.c)
target_include_directories(test_tls PRIVATE ${CMAKE_SOURCE_DIR})
msm_unit_test(test_tls_readahead ${CMAKE_CURRENT_LIST_DIR}/tls/test_tls_readahead.c)
target_include_directories(test_tls_readahead PRIVATE ${CMAKE_SOURCE_DIR})
msm_unit_test(test_tls_inspect ${CMAKE_CURRENT_LIST_DIR}/tls/test_tls_inspect.c)
target_include_directories(test_tls_inspect PRIVATE ${CMAKE_SOURCE_DIR})
