#include "util/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FGNET_CPU_RELAX() _mm_pause()
#else
#define FGNET_CPU_RELAX() std::this_thread::yield()
#endif

namespace fgnet {
namespace {
constexpr int kSpinIterations = 1 << 14;
// The claim word: loop number (32 bits) | chunk count (16 bits) | next chunk (16 bits). Keeping
// the count in the word means a claim never reads a field the next loop may be rewriting.
constexpr std::size_t kMaxChunks = 1u << 15;
std::uint64_t ClaimWord(std::uint32_t loop, std::uint32_t chunks, std::uint32_t next) {
  return (static_cast<std::uint64_t>(loop) << 32) | (static_cast<std::uint64_t>(chunks) << 16) |
         next;
}
}  // namespace

ThreadPool::ThreadPool(std::size_t num_threads) {
  if (num_threads == 0) {
    num_threads = std::max<std::size_t>(1, std::thread::hardware_concurrency());
  }
  workers_.reserve(num_threads - 1);
  for (std::size_t i = 1; i < num_threads; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    loop_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks(std::uint32_t loop, std::size_t thread_index) {
  std::uint64_t claim = claim_.load(std::memory_order_acquire);
  for (;;) {
    if (static_cast<std::uint32_t>(claim >> 32) != loop) return;  // a later loop has started
    const auto chunks = static_cast<std::uint32_t>((claim >> 16) & 0xffff);
    const auto chunk = static_cast<std::uint32_t>(claim & 0xffff);
    if (chunk >= chunks) return;
    if (!claim_.compare_exchange_weak(claim, claim + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      continue;  // `claim` was reloaded
    }
    const std::size_t begin = static_cast<std::size_t>(chunk) * chunk_;
    (*fn_)(begin, std::min(n_, begin + chunk_), thread_index);
    done_.fetch_add(1, std::memory_order_acq_rel);
    claim = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::WorkerLoop(std::size_t thread_index) {
  std::uint32_t seen = 0;
  for (;;) {
    // Spin first: loops of a decode step follow each other within microseconds.
    int spins = 0;
    while (loop_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      FGNET_CPU_RELAX();
      ++spins;
    }
    if (loop_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return loop_.load(std::memory_order_acquire) != seen; });
    }
    seen = loop_.load(std::memory_order_acquire);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_) return;
    }
    RunChunks(seen, thread_index);
  }
}

void ThreadPool::ParallelFor(std::size_t n, std::size_t grain, const RangeFn& fn) {
  if (n == 0) return;
  grain = std::max<std::size_t>(1, grain);
  const std::size_t threads = num_threads();
  if (threads == 1 || n <= grain) {
    fn(0, n, 0);
    return;
  }
  // About four chunks per thread balances load without much scheduling traffic.
  const std::size_t target_chunks = threads * 4;
  chunk_ = std::max(grain, (n + target_chunks - 1) / target_chunks);
  chunk_ = std::max(chunk_, (n + kMaxChunks - 1) / kMaxChunks);
  fn_ = &fn;
  n_ = n;
  num_chunks_ = static_cast<std::uint32_t>((n + chunk_ - 1) / chunk_);
  done_.store(0, std::memory_order_relaxed);
  std::uint32_t loop;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    loop = loop_.load(std::memory_order_relaxed) + 1;
    claim_.store(ClaimWord(loop, num_chunks_, 0), std::memory_order_release);
    loop_.store(loop, std::memory_order_release);
  }
  wake_.notify_all();
  RunChunks(loop, 0);
  // Wait for chunks that workers claimed and are still running; unclaimed ones do not exist.
  while (done_.load(std::memory_order_acquire) != num_chunks_) {
    FGNET_CPU_RELAX();
  }
  fn_ = nullptr;
}

}  // namespace fgnet
