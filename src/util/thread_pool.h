// A fixed pool of worker threads for data-parallel loops. Passed explicitly to whoever needs it
// (no global pool). The calling thread takes part in every loop, so a pool of N threads has N-1
// workers. Workers spin briefly before sleeping, which keeps the per-loop cost of the many small
// loops of a decode step low.
// Thread-safety: ParallelFor may be called from one thread at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fgnet {

class ThreadPool {
 public:
  // num_threads == 0 picks the number of hardware threads.
  explicit ThreadPool(std::size_t num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  std::size_t num_threads() const { return workers_.size() + 1; }

  // Runs fn(begin, end, thread_index) over [0, n) split into chunks of at least `grain` items.
  // Returns when every chunk has run. thread_index < num_threads().
  using RangeFn = std::function<void(std::size_t begin, std::size_t end, std::size_t thread_index)>;
  void ParallelFor(std::size_t n, std::size_t grain, const RangeFn& fn);

 private:
  void WorkerLoop(std::size_t thread_index);
  void RunChunks(std::size_t thread_index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> stop_{false};

  // The loop in flight.
  const RangeFn* fn_ = nullptr;
  std::size_t n_ = 0;
  std::size_t chunk_ = 1;
  std::atomic<std::size_t> next_{0};
  std::atomic<std::size_t> pending_workers_{0};
};

}  // namespace fgnet
