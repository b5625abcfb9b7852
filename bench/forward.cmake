# forward_bench: decode and prefill speed of the CPU forward pass on random weights of the
# Gemma 3 270M shapes (see the comment at the top of forward_bench.cpp).
execute_process(COMMAND git rev-parse --short HEAD WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                OUTPUT_VARIABLE FGNET_BENCH_COMMIT OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
add_executable(forward_bench forward_bench.cpp)
target_link_libraries(forward_bench PRIVATE fgnet_forward)
target_compile_definitions(forward_bench PRIVATE FGNET_BENCH_COMMIT="${FGNET_BENCH_COMMIT}")
fgnet_configure_target(forward_bench)
