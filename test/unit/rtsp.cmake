# RTSP proxy parsers (filters/network/rtsp_proxy) and the RTP engine (src/rtp).
msm_unit_test(test_rtsp_parse ${CMAKE_CURRENT_LIST_DIR}/rtsp/test_rtsp_parse.c)
msm_unit_test(test_rtp_stats ${CMAKE_CURRENT_LIST_DIR}/rtp/test_rtp_stats.c)
msm_unit_test(test_rtsp_ring ${CMAKE_CURRENT_LIST_DIR}/rtsp/test_rtsp_ring.c)
msm_unit_test(test_rtcp_feedback ${CMAKE_CURRENT_LIST_DIR}/rtp/test_rtcp_feedback.c)
msm_unit_test(test_rtsp_metrics ${CMAKE_CURRENT_LIST_DIR}/rtsp/test_rtsp_metrics.c)
