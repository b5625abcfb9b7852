// A fixed pool of worker threads for data-parallel loops. Passed explicitly to whoever needs it
// (no global pool). The calling thread takes part in every loop, so a pool of N threads has N-1
// workers. Workers spin briefly before sleeping, which keeps the per-loop cost of the many small
// loops of a decode step low. A loop waits only for the chunks that were claimed, never for a
// worker that has not woken up: when other processes hold the cores, the caller simply runs
// more of the chunks itself instead of stalling for a scheduler time slice.
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
  // Claims and runs chunks of loop `loop` until none is left (or another loop has started).
  void RunChunks(std::uint32_t loop, std::size_t thread_index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<std::uint32_t> loop_{0};  // bumped to start a loop (and at shutdown)
  bool stop_ = false;                   // guarded by mutex_

  // The loop in flight. Written before `claim_` publishes the loop; read only by a thread that
  // has claimed one of its chunks, which the caller waits for before it writes them again.
  const RangeFn* fn_ = nullptr;
  std::size_t n_ = 0;
  std::size_t chunk_ = 1;
  std::uint32_t num_chunks_ = 0;  // read by the caller only
  // The loop number, its chunk count and the next chunk to claim (see thread_pool.cpp).
  std::atomic<std::uint64_t> claim_{0};
  std::atomic<std::uint32_t> done_{0};  // chunks of the current loop that have finished
};

}  // namespace fgnet
