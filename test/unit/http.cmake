# HTTP: header maps, the HTTP/1.1 and HTTP/2 codecs (src/http), route configurations and
# matching, HCM path normalization.
msm_unit_test(test_http_route ${CMAKE_CURRENT_LIST_DIR}/http/test_http_route.c)
msm_unit_test(test_http_codec ${CMAKE_CURRENT_LIST_DIR}/http/test_http_codec.c)
# Header maps (lookups, replace/remove, chunked storage) and per-request address strings.
msm_unit_test(test_http_headers ${CMAKE_CURRENT_LIST_DIR}/http/test_http_headers.c)
# Upgrades and CONNECT: HTTP/1.1 tunnels, the TCP tunnel codec, extended CONNECT, routes.
msm_unit_test(test_http_upgrade ${CMAKE_CURRENT_LIST_DIR}/http/test_http_upgrade.c)
msm_unit_test(test_http_fixtures ${CMAKE_CURRENT_LIST_DIR}/http/test_http_fixtures.c)
# Istio's HTTP peer metadata exchange: the header codec, the null-VM Wasm plugin mapping.
msm_unit_test(test_peer_metadata ${CMAKE_CURRENT_LIST_DIR}/http/test_peer_metadata.c)
# Request mirror policies and the "-shadow" host; the x-forwarded-client-cert element.
msm_unit_test(test_http_mirror_xfcc ${CMAKE_CURRENT_LIST_DIR}/http/test_http_mirror_xfcc.c)
# RouteAction.hash_policy: Envoy's hashes of headers, cookies (generated too), source IP and
# query parameters, their fold, and the NACK reasons.
msm_unit_test(test_http_hash_policy ${CMAKE_CURRENT_LIST_DIR}/http/test_http_hash_policy.c)
