// Highway compiles the kernel below once per SIMD target; everything else is inside HWY_ONCE.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "apps/fgnet/mem_bandwidth.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace fgnet::cli {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Four independent accumulators keep several loads in flight per cycle.
std::uint64_t SumWordsImpl(const std::uint64_t* HWY_RESTRICT words, std::size_t n) {
  const hn::ScalableTag<std::uint64_t> d;
  const std::size_t lanes = hn::Lanes(d);
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  std::size_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    a0 = hn::Add(a0, hn::LoadU(d, words + i));
    a1 = hn::Add(a1, hn::LoadU(d, words + i + lanes));
    a2 = hn::Add(a2, hn::LoadU(d, words + i + 2 * lanes));
    a3 = hn::Add(a3, hn::LoadU(d, words + i + 3 * lanes));
  }
  // Lanes are added in scalar code: the AVX-512 reduction intrinsic adds them as signed integers,
  // which wraps (undefined behaviour) for large sums.
  HWY_ALIGN std::uint64_t lanes_out[hn::MaxLanes(d)];
  hn::Store(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)), d, lanes_out);
  std::uint64_t sum = 0;
  for (std::size_t lane = 0; lane < lanes; ++lane) sum += lanes_out[lane];
  for (; i < n; ++i) sum += words[i];
  return sum;
}

}  // namespace HWY_NAMESPACE
}  // namespace fgnet::cli
HWY_AFTER_NAMESPACE();

#if HWY_ONCE

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "apps/fgnet/mem_bandwidth.h"

namespace fgnet::cli {

HWY_EXPORT(SumWordsImpl);

std::uint64_t SumWords(const std::uint64_t* words, std::size_t n) {
  return HWY_DYNAMIC_DISPATCH(SumWordsImpl)(words, n);
}

namespace {

constexpr std::size_t kMinBufferBytes = std::size_t{64} << 10;
constexpr std::size_t kAlignment = 4096;
constexpr std::size_t kGrainWords = (std::size_t{256} << 10) / sizeof(std::uint64_t);

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

struct alignas(64) PartialSum {
  std::uint64_t value = 0;
};

double Seconds(std::chrono::steady_clock::duration d) {
  // A floor of 1 ns keeps the figure finite on a clock too coarse for a tiny buffer.
  return std::max(std::chrono::duration<double>(d).count(), 1e-9);
}

// Sum of 0, 1, ..., n-1 modulo 2^64.
std::uint64_t SumOfIndices(std::uint64_t n) {
  return n % 2 == 0 ? (n / 2) * (n - 1) : n * ((n - 1) / 2);
}

}  // namespace

Result<BandwidthResult> MeasureMemoryBandwidth(ThreadPool& pool, const BandwidthOptions& options) {
  if (options.buffer_bytes < kMinBufferBytes) {
    return MakeError("memory bandwidth: buffer of ", options.buffer_bytes,
                     " bytes is too small (at least ", kMinBufferBytes, ")");
  }
  if (options.runs < 1) return MakeError("memory bandwidth: runs must be at least 1");
  const std::size_t bytes = options.buffer_bytes / kAlignment * kAlignment;
  std::unique_ptr<void, FreeDeleter> storage(std::aligned_alloc(kAlignment, bytes));
  if (!storage) {
    return MakeError("memory bandwidth: cannot allocate ", bytes >> 20, " MiB");
  }
  auto* words = static_cast<std::uint64_t*>(storage.get());
  const std::size_t n = bytes / sizeof(std::uint64_t);
  const std::size_t half = n / 2;

  BandwidthResult result;
  result.buffer_bytes = bytes;
  result.threads = pool.num_threads();
  result.runs = options.runs;

  // Fault the pages in from the threads that will read them.
  pool.ParallelFor(n, kGrainWords, [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t i = begin; i < end; ++i) words[i] = i;
  });

  std::vector<PartialSum> partial(pool.num_threads());
  const std::uint64_t expected_sum = SumOfIndices(n);
  for (int run = 0; run < options.runs; ++run) {
    for (PartialSum& p : partial) p.value = 0;
    const auto start = std::chrono::steady_clock::now();
    pool.ParallelFor(n, kGrainWords, [&](std::size_t begin, std::size_t end, std::size_t thread) {
      partial[thread].value += SumWords(words + begin, end - begin);
    });
    const double seconds = Seconds(std::chrono::steady_clock::now() - start);
    std::uint64_t sum = 0;
    for (const PartialSum& p : partial) sum += p.value;
    if (sum != expected_sum) {
      return MakeError("memory bandwidth: read self-check failed (sum ", sum, ", expected ",
                       expected_sum, ")");
    }
    result.read_runs.push_back(static_cast<double>(bytes) / seconds / 1e9);
  }

  for (int run = 0; run < options.runs; ++run) {
    const auto start = std::chrono::steady_clock::now();
    pool.ParallelFor(half, kGrainWords, [&](std::size_t begin, std::size_t end, std::size_t) {
      std::memcpy(words + half + begin, words + begin, (end - begin) * sizeof(std::uint64_t));
    });
    const double seconds = Seconds(std::chrono::steady_clock::now() - start);
    for (const std::size_t i : {std::size_t{0}, half / 3, half - 1}) {
      if (words[half + i] != i) {
        return MakeError("memory bandwidth: copy self-check failed at word ", i);
      }
    }
    result.copy_runs.push_back(2.0 * static_cast<double>(half * sizeof(std::uint64_t)) / seconds /
                               1e9);
  }

  result.read_gb_per_s = *std::max_element(result.read_runs.begin(), result.read_runs.end());
  result.copy_gb_per_s = *std::max_element(result.copy_runs.begin(), result.copy_runs.end());
  return result;
}

}  // namespace fgnet::cli

#endif  // HWY_ONCE
