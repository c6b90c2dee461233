# libFuzzer targets (see msm_fuzz_target in test/CMakeLists.txt); corpora in corpus/<name>/.
# Config codec (src/config): JSON decode/encode, YAML, binary -> JSON with Any expansion.
msm_fuzz_target(fuzz_pbjson ${CMAKE_CURRENT_LIST_DIR}/fuzz_pbjson.c)
msm_fuzz_target(fuzz_yaml ${CMAKE_CURRENT_LIST_DIR}/fuzz_yaml.c)
msm_fuzz_target(fuzz_pb_binary ${CMAKE_CURRENT_LIST_DIR}/fuzz_pb_binary.c)
