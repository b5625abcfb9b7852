fgnet_add_test(forward_test
  SOURCES forward_test.cpp forward_reference.cpp alloc_counter.cpp
  LIBS fgnet_forward)
