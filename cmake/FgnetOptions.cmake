# Compiler settings shared by every fgnet target: fgnet_configure_target(<target>).

add_library(fgnet_options INTERFACE)
# C++ sources only: CUDA sources get their flags from their own target (backend/CMakeLists.txt).
target_compile_options(fgnet_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
  -Woverloaded-virtual -Wimplicit-fallthrough -Wno-missing-field-initializers>)
if(FGNET_WERROR)
  target_compile_options(fgnet_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()
if(CMAKE_BUILD_TYPE STREQUAL "Release" OR CMAKE_BUILD_TYPE STREQUAL "RelWithDebInfo")
  # Portable baseline; wider SIMD is chosen at run time by dynamic dispatch.
  target_compile_options(fgnet_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-O3 -fno-math-errno>)
endif()
if(FGNET_SANITIZE)
  target_compile_options(fgnet_options INTERFACE
    -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g
    # The sanitizers' instrumentation makes g++ 12 report maybe-uninitialized inside libstdc++
    # (<regex>, std::function); the optimised build keeps the warning.
    -Wno-maybe-uninitialized)
  target_link_options(fgnet_options INTERFACE -fsanitize=address,undefined)
endif()

function(fgnet_configure_target target)
  target_link_libraries(${target} PRIVATE fgnet_options)
endfunction()
