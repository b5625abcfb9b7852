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
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks(std::size_t thread_index) {
  for (;;) {
    const std::size_t begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (begin >= n_) break;
    (*fn_)(begin, std::min(n_, begin + chunk_), thread_index);
  }
}

void ThreadPool::WorkerLoop(std::size_t thread_index) {
  std::uint64_t seen = 0;
  for (;;) {
    // Spin first: loops of a decode step follow each other within microseconds.
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      FGNET_CPU_RELAX();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    RunChunks(thread_index);
    pending_workers_.fetch_sub(1, std::memory_order_acq_rel);
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
  fn_ = &fn;
  n_ = n;
  next_.store(0, std::memory_order_relaxed);
  pending_workers_.store(workers_.size(), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  RunChunks(0);
  while (pending_workers_.load(std::memory_order_acquire) != 0) {
    FGNET_CPU_RELAX();
  }
  fn_ = nullptr;
}

}  // namespace fgnet
