// Counts the heap allocations (operator new) of the test binary it is linked into.
#pragma once

namespace fgnet::testing {

// Calls of any operator new so far, from any thread.
long AllocationCount();

}  // namespace fgnet::testing
