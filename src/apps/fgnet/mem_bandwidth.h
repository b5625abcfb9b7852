// Memory bandwidth measurement: multi-threaded streaming read and copy of a buffer much larger
// than the caches. Used by `fgnet bench` so that model throughput can be read against what the
// machine's memory can deliver (a decode step of a small model streams all its weights).
//
// Read:  every thread sums 64-bit words of its share of the buffer with a SIMD loop (Highway,
//        dynamic dispatch). Bandwidth = buffer bytes / seconds.
// Copy:  the first half of the buffer is copied to the second half (memcpy per chunk).
//        Bandwidth = (bytes read + bytes written) / seconds, as STREAM counts it.
// Each figure is the best of `runs` runs; GB/s means 1e9 bytes per second. The buffer is filled
// (and so faulted in) by the same threads before timing. Results are checked (the read sum
// against its closed form, the copy at a few positions) so the compiler cannot drop the work.
// Thread-safety: MeasureMemoryBandwidth uses the pool and must not run concurrently with other
// users of that pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "util/status.h"
#include "util/thread_pool.h"

namespace fgnet::cli {

struct BandwidthOptions {
  std::size_t buffer_bytes = std::size_t{1} << 30;  // at least 64 KiB
  int runs = 5;                                     // at least 1
};

struct BandwidthResult {
  double read_gb_per_s = 0;       // best run
  double copy_gb_per_s = 0;       // best run, read + written bytes
  std::vector<double> read_runs;  // every run, GB/s
  std::vector<double> copy_runs;
  std::size_t buffer_bytes = 0;
  std::size_t threads = 0;
  int runs = 0;
};

// Allocates options.buffer_bytes and measures. Errors: options out of range, allocation failure,
// a failed self-check.
Result<BandwidthResult> MeasureMemoryBandwidth(ThreadPool& pool, const BandwidthOptions& options);

// Wrapping sum of words[0, n) with the best SIMD target of this CPU.
std::uint64_t SumWords(const std::uint64_t* words, std::size_t n);

}  // namespace fgnet::cli
