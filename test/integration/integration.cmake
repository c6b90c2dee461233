# Integration tests: the real msm-proxy binary against real peers on loopback, driven by stdlib
# Python (Debian's /usr/bin/python3 on purpose: another python3 may come first on PATH). One ctest
# per test_<name>.py; every port is picked at run time, so they run in parallel (ctest -j).
# Run one by hand: /usr/bin/python3 test/integration/test_tcp.py --binary build/msm-proxy -k echo
set(MSM_INTEG_PYTHON /usr/bin/python3 CACHE FILEPATH "Python 3 (stdlib only) for integration tests")
file(GLOB _integ_tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/test_*.py)
foreach(_t ${_integ_tests})
  get_filename_component(_name ${_t} NAME_WE)
  string(REGEX REPLACE "^test_" "" _name ${_name})
  add_test(NAME integ_${_name}
    COMMAND ${MSM_INTEG_PYTHON} ${CMAKE_SOURCE_DIR}/test/integration/test_${_name}.py
            --binary $<TARGET_FILE:msm-proxy> --shared ${MSM_SHARED_DIR})
  set_tests_properties(integ_${_name} PROPERTIES LABELS integration TIMEOUT 240
    ENVIRONMENT PYTHONDONTWRITEBYTECODE=1)
endforeach()
