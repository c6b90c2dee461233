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
# xDS client (xds/): (Delta)DiscoveryResponse decoding and the ACK/NACK it leads to.
msm_fuzz_target(fuzz_xds_response ${CMAKE_CURRENT_LIST_DIR}/fuzz_xds_response.c)
# Listener filters (src/net/inspect*.c): protocol sniffing on peeked bytes.
msm_fuzz_target(fuzz_http_inspect ${CMAKE_CURRENT_LIST_DIR}/fuzz_http_inspect.c)
