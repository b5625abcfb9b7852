fgnet_add_test(chat_test
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/chat_format_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/function_call_test.cpp
  LIBS fgnet_chat)
