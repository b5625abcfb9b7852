fgnet_add_test(parity_test
  SOURCES parity_test.cpp
  LIBS fgnet_model fgnet_forward)
