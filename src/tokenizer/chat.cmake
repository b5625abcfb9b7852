# Chat formats (Gemma 3 turns, FunctionGemma declarations, calls and responses): text only.
add_library(fgnet_chat
  ${CMAKE_CURRENT_LIST_DIR}/chat_format.cpp
  ${CMAKE_CURRENT_LIST_DIR}/function_call.cpp
  ${CMAKE_CURRENT_LIST_DIR}/text_util.cpp)
target_link_libraries(fgnet_chat PUBLIC fgnet_util)
fgnet_configure_target(fgnet_chat)
