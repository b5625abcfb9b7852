#include "util/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace fgnet {
namespace {

TEST(ThreadPool, EveryIndexRunsExactlyOnce) {
  for (std::size_t threads : {1u, 2u, 4u}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (std::size_t n : {0u, 1u, 7u, 1000u, 4097u}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, 3, [&](std::size_t begin, std::size_t end, std::size_t t) {
        ASSERT_LT(t, threads);
        for (std::size_t i = begin; i < end; ++i) hits[i].fetch_add(1);
      });
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
    }
  }
}

TEST(ThreadPool, ManyShortLoopsInARow) {
  ThreadPool pool(3);
  std::atomic<long> sum{0};
  for (int iter = 0; iter < 2000; ++iter) {
    pool.ParallelFor(64, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
      long local = 0;
      for (std::size_t i = begin; i < end; ++i) local += static_cast<long>(i);
      sum.fetch_add(local);
    });
  }
  EXPECT_EQ(sum.load(), 2000L * (63 * 64 / 2));
}

}  // namespace
}  // namespace fgnet
