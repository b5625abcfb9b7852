// Perf mode of the CUDA attention kernels (FGNET_CUDA_PERF=1): prints the time of decode and
// prefill passes of FunctionGemma-270M's attention shapes (no assertions): per call and back to
// back (Figures), and as 20 back-to-back calls captured in a CUDA graph and replayed
// (DecodeGraphFigures: decode attention of 1/4/16/64 rows at contexts 256/512/4096, and
// QKNormRopeWriteKV against QKNormRope + WriteKV).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/device.h"
#include "cuda_attention_support.h"

namespace fgnet::cuda {
namespace {

// ----------------------------------------------------------------------------------------------
// Perf mode: FunctionGemma-270M's attention (4 query heads, 1 kv head, head_dim 256, window
// 512), blocks of 16 positions, one layer per group. Prints the median of 20 timed runs.

class CudaAttentionPerf : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* env = std::getenv("FGNET_CUDA_PERF");
    if (env == nullptr || std::string(env) != "1") GTEST_SKIP() << "set FGNET_CUDA_PERF=1";
    if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  }

  // `rows` rows: `seqs` sequences, each with rows / seqs consecutive rows ending at position
  // last_pos. Returns the median time of a call in microseconds; *pipelined_us gets the mean
  // time of back-to-back calls, *bytes / *flops the KV bytes read and the attention FLOPs.
  // `one_row_each`: the same rows as `rows_per_seq` sequences of one row each sharing the first
  // sequence's blocks (a prompt's rows done by the split regime).
  double Time(int seqs, int rows_per_seq, int last_pos, int window, double* bytes, double* flops,
              double* pipelined_us, bool one_row_each = false) {
    constexpr int kHeads = 4, kHeadDim = 256, kBlock = 16;
    const std::int64_t row = kHeadDim;
    const std::int64_t block_elements = 2 * kBlock * row;
    const int blocks_per_seq = (last_pos + kBlock) / kBlock;
    std::vector<std::int32_t> row_seq, row_pos, seq_table, tables;
    int held = 0;
    *bytes = 0;
    *flops = 0;
    for (int s = 0; s < seqs; ++s) {
      const int first = last_pos - rows_per_seq + 1;
      const int lo = VisibleFrom(first, window);
      seq_table.push_back(static_cast<std::int32_t>(tables.size()));
      for (int j = 0; j < blocks_per_seq; ++j) {
        tables.push_back((j + 1) * kBlock - 1 < lo ? -1 : held++);
      }
      for (int p = first; p <= last_pos; ++p) {
        row_seq.push_back(s);
        row_pos.push_back(p);
        const double keys = p - VisibleFrom(p, window) + 1;
        *flops += keys * kHeads * kHeadDim * 4.0;
        if (p == last_pos) *bytes += (p - VisibleFrom(p, window) + 1) * row * 2.0 * sizeof(float);
      }
    }
    if (rows_per_seq > 1) *bytes = 0;  // prefill: the FLOPs are what counts
    if (one_row_each) {
      for (std::size_t r = 1; r < row_seq.size(); ++r) {
        row_seq[r] = static_cast<std::int32_t>(r);
        seq_table.push_back(seq_table[0]);
      }
      seqs = static_cast<int>(row_seq.size());
    }
    const std::size_t total = static_cast<std::size_t>(held) * block_elements;
    auto memory = DeviceBuffer<float>::Allocate(total);
    EXPECT_TRUE(memory.ok());
    if (!memory.ok()) return 0;
    // Fill with a repeated random pattern (values do not change the work).
    const std::vector<float> pattern = Random(rng_, std::size_t{1} << 22, 0.3f);
    for (std::size_t off = 0; off < total; off += pattern.size()) {
      const std::size_t n = std::min(pattern.size(), total - off);
      EXPECT_EQ(cudaMemcpy(memory->data() + off, pattern.data(), n * sizeof(float),
                           cudaMemcpyHostToDevice),
                cudaSuccess);
    }
    const int rows = static_cast<int>(row_seq.size());
    DeviceBuffer<std::int32_t> d_seq = Upload(row_seq), d_pos = Upload(row_pos),
                               d_seq_table = Upload(seq_table), d_tables = Upload(tables);
    DeviceBuffer<float> q =
        Upload(Random(rng_, static_cast<std::size_t>(rows) * kHeads * kHeadDim));
    DeviceBuffer<float> out = Poisoned(static_cast<std::size_t>(rows) * kHeads * kHeadDim);
    const PassRows pass{.rows = rows,
                        .row_seq = d_seq.data(),
                        .row_pos = d_pos.data(),
                        .seq_table = d_seq_table.data(),
                        .tables = d_tables.data(),
                        .num_seqs = seqs,
                        .max_pos = last_pos};
    const PagedLayer layer{.memory = memory->data(),
                           .block_elements = block_elements,
                           .block_size = kBlock,
                           .slot = 0,
                           .row = row};
    const AttentionShape shape{.heads = kHeads,
                               .kv_heads = 1,
                               .head_dim = kHeadDim,
                               .scale = 0.0625f,
                               .softcap = 0.0f,
                               .window = window};
    DeviceBuffer<float> ws = Poisoned(PagedAttentionWorkspace(pass, shape));
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    // Per call (launches included), median of 20 after 5 warm-up calls.
    std::vector<double> times;
    for (int i = 0; i < 25; ++i) {
      cudaEventRecord(start);
      const Status s = PagedAttention(q.data(), pass, layer, shape, out.data(), ws.data());
      cudaEventRecord(stop);
      cudaEventSynchronize(stop);
      EXPECT_TRUE(s.ok()) << s.error().message();
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      if (i >= 5) times.push_back(ms * 1000.0);
    }
    // Back to back: 20 calls queued at once, so that launch gaps are hidden.
    cudaEventRecord(start);
    for (int i = 0; i < 20; ++i) {
      EXPECT_TRUE(PagedAttention(q.data(), pass, layer, shape, out.data(), ws.data()).ok());
    }
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float total_ms = 0;
    cudaEventElapsedTime(&total_ms, start, stop);
    *pipelined_us = total_ms * 1000.0 / 20;
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    const std::vector<float> host = Download(out);
    for (float x : host) {
      if (!std::isfinite(x)) {
        ADD_FAILURE() << "non-finite output";
        break;
      }
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  }

  // Median time of one `call` in microseconds when kCalls calls, captured back to back in a CUDA
  // graph on `stream`, are replayed (15 timed replays after 2 warm-up ones).
  template <typename F>
  double GraphUs(cudaStream_t stream, F call) {
    constexpr int kCalls = 20;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    EXPECT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    for (int i = 0; i < kCalls; ++i) {
      const Status s = call(stream);
      EXPECT_TRUE(s.ok()) << s.error().message();
    }
    EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    std::vector<double> times;
    for (int i = 0; i < 17; ++i) {
      cudaEventRecord(start, stream);
      cudaGraphLaunch(exec, stream);
      cudaEventRecord(stop, stream);
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      if (i >= 2) times.push_back(ms * 1000.0 / kCalls);
    }
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  }

  // Decode pass of `rows` rows, one per sequence, each at position ctx - 1 (FunctionGemma-270M's
  // attention, blocks of 16): the graph-replayed time of PagedAttention (*attention_us), of
  // QKNormRope + WriteKV (*two_us) and of QKNormRopeWriteKV (*fused_us).
  void DecodeGraph(int rows, int ctx, int window, double* attention_us, double* two_us,
                   double* fused_us) {
    constexpr int kHeads = 4, kHeadDim = 256, kBlock = 16;
    const std::int64_t row = kHeadDim;
    const std::int64_t block_elements = 2 * kBlock * row;
    const int last = ctx - 1;
    const int blocks_per_seq = (last + kBlock) / kBlock;
    std::vector<std::int32_t> row_seq, row_pos, seq_table, tables;
    int held = 0;
    for (int s = 0; s < rows; ++s) {
      const int lo = VisibleFrom(last, window);
      seq_table.push_back(static_cast<std::int32_t>(tables.size()));
      for (int j = 0; j < blocks_per_seq; ++j) {
        tables.push_back((j + 1) * kBlock - 1 < lo ? -1 : held++);
      }
      row_seq.push_back(s);
      row_pos.push_back(last);
    }
    const std::size_t total = static_cast<std::size_t>(held) * block_elements;
    DeviceBuffer<float> memory = Upload(Random(rng_, total, 0.3f));
    DeviceBuffer<std::int32_t> d_seq = Upload(row_seq), d_pos = Upload(row_pos),
                               d_seq_table = Upload(seq_table), d_tables = Upload(tables);
    const std::size_t q_floats = static_cast<std::size_t>(rows) * kHeads * kHeadDim;
    DeviceBuffer<float> q = Upload(Random(rng_, q_floats));
    DeviceBuffer<float> k = Upload(Random(rng_, static_cast<std::size_t>(rows) * row));
    DeviceBuffer<float> v = Upload(Random(rng_, static_cast<std::size_t>(rows) * row));
    DeviceBuffer<float> scale = Upload(Random(rng_, kHeadDim, 0.1f));
    std::vector<float> inv_freq(kHeadDim / 2);
    cpu::RopeInvFreq(1e6, 1.0, kHeadDim, inv_freq.data());
    DeviceBuffer<float> d_inv = Upload(inv_freq);
    DeviceBuffer<float> out = Poisoned(q_floats);
    const PassRows pass{.rows = rows,
                        .row_seq = d_seq.data(),
                        .row_pos = d_pos.data(),
                        .seq_table = d_seq_table.data(),
                        .tables = d_tables.data(),
                        .num_seqs = rows,
                        .max_pos = last};
    const PagedLayer layer{.memory = memory.data(),
                           .block_elements = block_elements,
                           .block_size = kBlock,
                           .slot = 0,
                           .row = row};
    const AttentionShape shape{.heads = kHeads,
                               .kv_heads = 1,
                               .head_dim = kHeadDim,
                               .scale = 0.0625f,
                               .softcap = 0.0f,
                               .window = window};
    DeviceBuffer<float> ws = Poisoned(PagedAttentionWorkspace(pass, shape));
    cudaStream_t stream = nullptr;
    EXPECT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    // One uncaptured call first (a first call on a device may query it).
    EXPECT_TRUE(PagedAttention(q.data(), pass, layer, shape, out.data(), ws.data(), stream).ok());
    *attention_us = GraphUs(stream, [&](cudaStream_t st) {
      return PagedAttention(q.data(), pass, layer, shape, out.data(), ws.data(), st);
    });
    const std::vector<float> host = Download(out);
    for (float x : host) {
      if (!std::isfinite(x)) {
        ADD_FAILURE() << "non-finite output";
        break;
      }
    }
    *two_us = GraphUs(stream, [&](cudaStream_t st) -> Status {
      FGNET_TRY(QKNormRope(q.data(), k.data(), rows, kHeads, 1, kHeadDim, scale.data(),
                           scale.data(), 1e-6f, d_inv.data(), d_pos.data(), st));
      return WriteKV(k.data(), v.data(), pass, layer, st);
    });
    *fused_us = GraphUs(stream, [&](cudaStream_t st) {
      return QKNormRopeWriteKV(q.data(), k.data(), v.data(), pass, layer, kHeads, 1, kHeadDim,
                               scale.data(), scale.data(), 1e-6f, d_inv.data(), st);
    });
    cudaStreamDestroy(stream);
  }

  std::mt19937 rng_{99};
};

// Decode figures as a served model sees them: launches captured in a CUDA graph and replayed.
TEST_F(CudaAttentionPerf, DecodeGraphFigures) {
  auto devices = ListCudaDevices();
  ASSERT_TRUE(devices.ok());
  std::printf("device: %s (%d SMs); graph of 20 back-to-back calls, median of 15 replays\n",
              (*devices)[0].name.c_str(), (*devices)[0].multiprocessors);
  struct Ctx {
    int ctx, window;
  };
  for (const Ctx& c : {Ctx{256, 512}, Ctx{512, 512}, Ctx{4096, 512}, Ctx{4096, 0}}) {
    for (int rows : {1, 4, 16, 64}) {
      double att = 0, two = 0, fused = 0;
      DecodeGraph(rows, c.ctx, c.window, &att, &two, &fused);
      const double mb = rows * std::min(c.ctx, c.window > 0 ? c.window : c.ctx) * 256.0 * 8 / 1e6;
      std::printf(
          "graph decode %-7s ctx %4d rows %2d: attention %7.2f us (%6.1f GB/s) | qknorm+rope "
          "then write_kv %6.2f us, fused %6.2f us\n",
          c.window > 0 ? "sliding" : "global", c.ctx, rows, att, mb / att * 1e3, two, fused);
    }
  }
}

TEST_F(CudaAttentionPerf, Figures) {
  auto devices = ListCudaDevices();
  ASSERT_TRUE(devices.ok());
  std::printf("device: %s (%d SMs)\n", (*devices)[0].name.c_str(), (*devices)[0].multiprocessors);
  std::printf("shape: heads 4, kv_heads 1, head_dim 256, block 16, f32 KV\n");
  double bytes = 0, flops = 0, piped = 0;
  for (int window : {0, 512}) {
    for (int rows : {1, 16, 64}) {
      const double us = Time(rows, 1, 4095, window, &bytes, &flops, &piped);
      std::printf(
          "decode %-7s rows %2d ctx 4096: %8.1f us/call %7.1f GB/s | back-to-back %8.1f us "
          "%7.1f GB/s (%.1f MB KV)\n",
          window > 0 ? "sliding" : "global", rows, us, bytes / us / 1e3, piped, bytes / piped / 1e3,
          bytes / 1e6);
    }
  }
  for (int window : {0, 512}) {
    const double us = Time(1, 2048, 2047, window, &bytes, &flops, &piped);
    std::printf(
        "prefill %-7s rows 2048: %8.1f us/call %6.2f TFLOP/s | back-to-back %8.1f us %6.2f "
        "TFLOP/s\n",
        window > 0 ? "sliding" : "global", us, flops / us / 1e6, piped, flops / piped / 1e6);
  }
}

// A prompt's remainder after a cached prefix: 16 rows at positions 2048 .. 2063.
TEST_F(CudaAttentionPerf, RemainderFigures) {
  double bytes = 0, flops = 0, piped = 0;
  for (int window : {0, 512}) {
    const double us = Time(1, 16, 2063, window, &bytes, &flops, &piped);
    double split_piped = 0;
    const double split_us = Time(1, 16, 2063, window, &bytes, &flops, &split_piped, true);
    std::printf(
        "remainder %-7s rows 16 after 2048: tiles %8.1f us/call, back-to-back %8.1f us | as 16 "
        "split rows %8.1f us/call, back-to-back %8.1f us\n",
        window > 0 ? "sliding" : "global", us, piped, split_us, split_piped);
  }
}

}  // namespace
}  // namespace fgnet::cuda
