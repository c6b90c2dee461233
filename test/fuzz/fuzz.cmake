# libFuzzer targets (see msm_fuzz_target in test/CMakeLists.txt); corpora in corpus/<name>/.
# Config codec (src/config): JSON decode/encode, YAML, binary -> JSON with Any expansion.
msm_fuzz_target(fuzz_pbjson ${CMAKE_CURRENT_LIST_DIR}/fuzz_pbjson.c)
msm_fuzz_target(fuzz_yaml ${CMAKE_CURRENT_LIST_DIR}/fuzz_yaml.c)
msm_fuzz_target(fuzz_pb_binary ${CMAKE_CURRENT_LIST_DIR}/fuzz_pb_binary.c)
# RTSP proxy (filters/network/rtsp_proxy): the message stream parser, the Transport header,
# SDP rewriting and URL helpers.
msm_fuzz_target(fuzz_rtsp_parser ${CMAKE_CURRENT_LIST_DIR}/fuzz_rtsp_parser.c)
msm_fuzz_target(fuzz_rtsp_transport ${CMAKE_CURRENT_LIST_DIR}/fuzz_rtsp_transport.c)
msm_fuzz_target(fuzz_sdp_rewrite ${CMAKE_CURRENT_LIST_DIR}/fuzz_sdp_rewrite.c)
# RTP engine (src/rtp): RTP headers, RTCP summaries (reports, generic NACKs), NACK re-issuing.
msm_fuzz_target(fuzz_rtcp ${CMAKE_CURRENT_LIST_DIR}/fuzz_rtcp.c)
# xDS client (xds/): (Delta)DiscoveryResponse decoding and the ACK/NACK it leads to.
msm_fuzz_target(fuzz_xds_response ${CMAKE_CURRENT_LIST_DIR}/fuzz_xds_response.c)
# Listener filters (src/net/inspect*.c): protocol sniffing on peeked bytes.
msm_fuzz_target(fuzz_http_inspect ${CMAKE_CURRENT_LIST_DIR}/fuzz_http_inspect.c)
# TLS inspector (src/net/inspect_tls.c): ClientHello parsing on peeked bytes.
msm_fuzz_target(fuzz_tls_inspector ${CMAKE_CURRENT_LIST_DIR}/fuzz_tls_inspector.c)
# Observability (issue 6): access log format strings and dictionaries; admin query strings and
# stat names through the tag extractors.
msm_fuzz_target(fuzz_access_log_format ${CMAKE_CURRENT_LIST_DIR}/fuzz_access_log_format.c)
msm_fuzz_target(fuzz_admin_query ${CMAKE_CURRENT_LIST_DIR}/fuzz_admin_query.c)
# HTTP (src/http, the HTTP connection manager): the HTTP/1.1 codecs (server and client), the
# HTTP/2 server session, route matching with path normalization.
msm_fuzz_target(fuzz_http1 ${CMAKE_CURRENT_LIST_DIR}/fuzz_http1.c)
msm_fuzz_target(fuzz_http2 ${CMAKE_CURRENT_LIST_DIR}/fuzz_http2.c)
msm_fuzz_target(fuzz_route_match ${CMAKE_CURRENT_LIST_DIR}/fuzz_route_match.c)
# Istio's TCP metadata exchange (filters/network/metadata_exchange): the istio-peer-exchange
# preamble (header, Any(Struct)) and the peer workload metadata read from it.
msm_fuzz_target(fuzz_mx_preamble ${CMAKE_CURRENT_LIST_DIR}/fuzz_mx_preamble.c)
# Istio's HTTP peer metadata exchange (filters/http/peer_metadata): the x-envoy-peer-metadata
# header value (base64 of a Struct).
msm_fuzz_target(fuzz_peer_metadata ${CMAKE_CURRENT_LIST_DIR}/fuzz_peer_metadata.c)
# Route configurations (src/http/route.c, hash_policy.c) built from arbitrary JSON, then used.
msm_fuzz_target(fuzz_route_config ${CMAKE_CURRENT_LIST_DIR}/fuzz_route_config.c)
