# xDS client (xds/): unit tests of the wire and config code, the msm-xds-probe driver and the
# Python integration tests against the test control plane in test/controlplane/ (python3-grpcio,
# python3-protobuf). The tests live in test/xds/.
msm_unit_test(test_xds_unit ${CMAKE_SOURCE_DIR}/test/xds/test_xds_unit.c)

add_executable(msm-xds-probe ${CMAKE_SOURCE_DIR}/test/xds/msm_xds_probe.c)
target_compile_options(msm-xds-probe PRIVATE ${MSM_WARN})
target_link_libraries(msm-xds-probe PRIVATE msm_core)

set(MSM_XDS_PYTHON /usr/bin/python3 CACHE FILEPATH "Python 3 with grpcio and protobuf (Debian)")
file(GLOB _xds_py_tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/test/xds/test_*.py)
foreach(_t ${_xds_py_tests})
  get_filename_component(_name ${_t} NAME_WE)
  add_test(NAME xds_${_name}
    COMMAND ${MSM_XDS_PYTHON} ${_t} --probe $<TARGET_FILE:msm-xds-probe>
            --build ${CMAKE_BINARY_DIR} --shared ${MSM_SHARED_DIR})
  set_tests_properties(xds_${_name} PROPERTIES LABELS integration TIMEOUT 300
    ENVIRONMENT PYTHONDONTWRITEBYTECODE=1)
endforeach()
