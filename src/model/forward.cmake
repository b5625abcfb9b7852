# The Gemma 3 forward pass and its KV cache (config-independent parts of the model layer).
add_library(fgnet_forward
  gemma3_model.cpp
  kv_cache.cpp)
target_link_libraries(fgnet_forward PUBLIC fgnet_backend fgnet_tensor fgnet_util)
fgnet_configure_target(fgnet_forward)
