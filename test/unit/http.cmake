# HTTP: header maps, the HTTP/1.1 and HTTP/2 codecs (src/http), route configurations and
# matching, HCM path normalization.
msm_unit_test(test_http_route ${CMAKE_CURRENT_LIST_DIR}/http/test_http_route.c)
msm_unit_test(test_http_codec ${CMAKE_CURRENT_LIST_DIR}/http/test_http_codec.c)
msm_unit_test(test_http_fixtures ${CMAKE_CURRENT_LIST_DIR}/http/test_http_fixtures.c)
