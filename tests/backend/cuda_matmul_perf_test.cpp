// Perf mode of the CUDA matrix products (FGNET_CUDA_PERF=1; no assertions beyond the calls
// succeeding): CudaMatMulTest.Perf prints the time of the 270M model's shapes on both paths and of
// LoraApply (16 and 64 adapters, a row each); PerfFusedDecode the per-layer decode time of the
// fused products, and of q/k/v staging a residual input, against separate calls, as 18 layers
// captured in a CUDA graph; PerfAdaptedDecode that of q/k/v with 16 adapters, with and without the
// shrink.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <utility>
#include <vector>

#include "backend/cuda/device.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/ops.h"
#include "cuda_matmul_support.h"

namespace fgnet::cuda {
namespace {

// A non-blocking stream for graph capture and a MatMulContext bound to it, released context
// first.
struct CaptureStream {
  cudaStream_t stream = nullptr;
  std::optional<MatMulContext> ctx;

  CaptureStream() = default;
  CaptureStream(const CaptureStream&) = delete;
  CaptureStream& operator=(const CaptureStream&) = delete;
  ~CaptureStream() {
    ctx.reset();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
  testing::AssertionResult Open() {
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
      return testing::AssertionFailure() << "cudaStreamCreateWithFlags failed";
    }
    auto made = MatMulContext::Create(stream);
    if (!made.ok()) return testing::AssertionFailure() << made.error().message();
    ctx.emplace(std::move(*made));
    return testing::AssertionSuccess();
  }
};

// Median time in microseconds of one replay of the CUDA graph that `issue` captures on `stream`
// (after one eager run), each replay timed with CUDA events after the L2 cache was flushed.
template <typename Issue>
double GraphMedianMicros(Issue issue, cudaStream_t stream, DeviceBuffer<std::uint8_t>& flush,
                         int repeats = 21) {
  EXPECT_TRUE(issue());  // eagerly: cuBLAS workspaces grow outside capture
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  EXPECT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const bool ok = issue();
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_TRUE(ok);
  EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  const double us = FlushedMedianMicros(
      [&] { EXPECT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess); }, stream, flush, repeats);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return us;
}

TEST_F(CudaMatMulTest, PerfFusedDecode) {
  if (!PerfRequested()) GTEST_SKIP() << "set FGNET_CUDA_PERF=1";
  // The 270M model's 18 layers, each with weights of its own (so that they come from memory).
  constexpr std::size_t kLayers = 18, kIn = 640, kQ = 1024, kKV = 256, kFF = 2048;
  CaptureStream capture;
  ASSERT_TRUE(capture.Open());
  cudaStream_t stream = capture.stream;
  MatMulContext& ctx = *capture.ctx;
  const std::size_t qkv = (kQ + 2 * kKV) * kIn, ff = kFF * kIn;
  DeviceBuffer<std::uint16_t> d_attn = Upload(rng_.BF16(kLayers * qkv, 0.05f));
  DeviceBuffer<std::uint16_t> d_mlp = Upload(rng_.BF16(kLayers * 2 * ff, 0.05f));
  const std::size_t max_rows = 16;
  DeviceBuffer<float> d_x = Upload(rng_.Floats(max_rows * kIn));
  auto d_q = DeviceBuffer<float>::Allocate(max_rows * kQ);
  auto d_k = DeviceBuffer<float>::Allocate(max_rows * kKV);
  auto d_v = DeviceBuffer<float>::Allocate(max_rows * kKV);
  auto d_g = DeviceBuffer<float>::Allocate(max_rows * kFF);
  auto d_u = DeviceBuffer<float>::Allocate(max_rows * kFF);
  auto d_h = DeviceBuffer<float>::Allocate(max_rows * kFF);
  auto d_hn = DeviceBuffer<float>::Allocate(max_rows * kIn);
  ASSERT_TRUE(d_q.ok() && d_k.ok() && d_v.ok() && d_g.ok() && d_u.ok() && d_h.ok() && d_hn.ok());
  DeviceBuffer<float> d_delta = Upload(rng_.Floats(max_rows * kIn));
  DeviceBuffer<float> d_res[] = {Upload(rng_.Floats(max_rows * kIn)),
                                 Upload(rng_.Floats(max_rows * kIn))};
  DeviceBuffer<float> d_post = Upload(rng_.Floats(kIn)), d_pre = Upload(rng_.Floats(kIn));
  auto flush = DeviceBuffer<std::uint8_t>::Allocate(256u << 20);
  ASSERT_TRUE(flush.ok());
  auto wq = [&](std::size_t l) { return d_attn.data() + l * qkv; };
  auto wk = [&](std::size_t l) { return wq(l) + kQ * kIn; };
  auto wv = [&](std::size_t l) { return wk(l) + kKV * kIn; };
  // Layer l's q/k/v products.
  auto qkv_outputs = [&](std::size_t l) {
    return std::array<MatMulContext::MatMulOutput, 3>{
        {{wq(l), kQ, d_q->data()}, {wk(l), kKV, d_k->data()}, {wv(l), kKV, d_v->data()}}};
  };
  auto wg = [&](std::size_t l) { return d_mlp.data() + l * 2 * ff; };
  auto wu = [&](std::size_t l) { return wg(l) + ff; };
  std::printf(
      "\ndevice: %s; %zu layers captured in a CUDA graph and replayed (L2 flushed before each "
      "replay; median of 21), time per layer\n",
      device_name_.c_str(), kLayers);
  std::printf("| part | rows | separate us | fused us | speedup |\n|---|---|---|---|---|\n");
  for (std::size_t rows : {1u, 4u, 8u, 16u}) {
    const float* x = d_x.data();
    const double qkv_separate = GraphMedianMicros(
        [&] {
          for (std::size_t l = 0; l < kLayers; ++l) {
            if (!ctx.MatMul(x, rows, kIn, wq(l), kQ, d_q->data()).ok() ||
                !ctx.MatMul(x, rows, kIn, wk(l), kKV, d_k->data()).ok() ||
                !ctx.MatMul(x, rows, kIn, wv(l), kKV, d_v->data()).ok()) {
              return false;
            }
          }
          return true;
        },
        stream, *flush);
    const double qkv_fused = GraphMedianMicros(
        [&] {
          for (std::size_t l = 0; l < kLayers; ++l) {
            const auto outputs = qkv_outputs(l);
            if (!ctx.MatMulMany(x, rows, kIn, outputs).ok()) return false;
          }
          return true;
        },
        stream, *flush);
    const double mlp_separate = GraphMedianMicros(
        [&] {
          for (std::size_t l = 0; l < kLayers; ++l) {
            if (!ctx.MatMul(x, rows, kIn, wg(l), kFF, d_g->data()).ok() ||
                !ctx.MatMul(x, rows, kIn, wu(l), kFF, d_u->data()).ok() ||
                !GeluTanhMul(d_g->data(), d_u->data(), rows * kFF, d_h->data(), stream).ok()) {
              return false;
            }
          }
          return true;
        },
        stream, *flush);
    const double mlp_fused = GraphMedianMicros(
        [&] {
          for (std::size_t l = 0; l < kLayers; ++l) {
            if (!ctx.MatMulGeGLU(x, rows, kIn, wg(l), wu(l), kFF, d_h->data()).ok()) return false;
          }
          return true;
        },
        stream, *flush);
    const double n = static_cast<double>(kLayers);
    std::printf("| q/k/v: 3 MatMul vs MatMulMany | %zu | %.2f | %.2f | %.2fx |\n", rows,
                qkv_separate / n, qkv_fused / n, qkv_separate / qkv_fused);
    std::printf("| gate/up: 2 MatMul + GeluTanhMul vs MatMulGeGLU | %zu | %.2f | %.2f | %.2fx |\n",
                rows, mlp_separate / n, mlp_fused / n, mlp_separate / mlp_fused);
    // The residual update before q/k/v: RMSNormAddToNorm into h then the products of h, or the
    // products staging it (the residual moving between two buffers, as in a forward pass).
    const double norm_separate = GraphMedianMicros(
        [&] {
          for (std::size_t l = 0; l < kLayers; ++l) {
            const auto outputs = qkv_outputs(l);
            if (!RMSNormAddToNorm(d_delta.data(), rows, kIn, d_post.data(), 1e-6f, d_res[0].data(),
                                  d_pre.data(), d_hn->data(), stream)
                     .ok() ||
                !ctx.MatMulMany(d_hn->data(), rows, kIn, outputs).ok()) {
              return false;
            }
          }
          return true;
        },
        stream, *flush);
    const double norm_staged = GraphMedianMicros(
        [&] {
          for (std::size_t l = 0; l < kLayers; ++l) {
            const auto outputs = qkv_outputs(l);
            const ResidualInput input{d_delta.data(), d_res[l % 2].data(), d_res[1 - l % 2].data(),
                                      d_post.data(),  d_pre.data(),        1e-6f};
            if (!ctx.MatMulMany(nullptr, rows, kIn, outputs, nullptr, &input).ok()) return false;
          }
          return true;
        },
        stream, *flush);
    std::printf(
        "| q/k/v after a residual update: RMSNormAddToNorm + MatMulMany vs a residual input | %zu "
        "| "
        "%.2f | %.2f | %.2fx |\n",
        rows, norm_separate / n, norm_staged / n, norm_separate / norm_staged);
  }
}

// The adapters' updates of the q/k/v products of 18 layers (16 adapters of rank 16 on all three,
// a row each), per layer: none; with a LoraShrink launch before the products; and the products
// with their epilogue alone (t a buffer already in memory): its cost without the shrink.
TEST_F(CudaMatMulTest, PerfAdaptedDecode) {
  if (!PerfRequested()) GTEST_SKIP() << "set FGNET_CUDA_PERF=1";
  constexpr std::size_t kLayers = 18, kIn = 640, kAdapters = 16;
  constexpr std::int32_t kRank = 16;
  const std::size_t outs[3] = {1024, 256, 256};
  CaptureStream capture;
  ASSERT_TRUE(capture.Open());
  cudaStream_t stream = capture.stream;
  MatMulContext& ctx = *capture.ctx;
  std::vector<DeviceBuffer<std::uint16_t>> w;
  std::vector<DeviceBuffer<float>> ab;
  std::vector<LoraGroup> groups;  // [layer][site][adapter]
  for (std::size_t l = 0; l < kLayers; ++l) {
    for (std::size_t site = 0; site < 3; ++site) {
      w.push_back(Upload(rng_.BF16(outs[site] * kIn, 0.05f)));
      for (std::size_t g = 0; g < kAdapters; ++g) {
        ab.push_back(Upload(rng_.Floats(kRank * kIn, 0.05f)));
        ab.push_back(Upload(rng_.Floats(outs[site] * kRank, 0.05f)));
        groups.push_back(
            {ab[ab.size() - 2].data(), ab.back().data(), kRank, static_cast<std::int32_t>(g), 1});
      }
    }
  }
  const DeviceBuffer<LoraGroup> d_groups = Upload(groups);
  const DeviceBuffer<float> d_x = Upload(rng_.Floats(kAdapters * kIn));
  std::vector<DeviceBuffer<float>> y;
  for (std::size_t site = 0; site < 3; ++site) y.push_back(Upload(rng_.Floats(16 * outs[site])));
  auto flush = DeviceBuffer<std::uint8_t>::Allocate(256u << 20);
  ASSERT_TRUE(flush.ok());
  std::printf(
      "\ndevice: %s; q/k/v of %zu layers, 16 adapters of rank 16 (a row each), in a CUDA graph "
      "(L2 flushed; median of 21), us per layer\n",
      device_name_.c_str(), kLayers);
  std::printf("| rows | plain | shrink + epilogue | epilogue alone |\n|---|---|---|---|\n");
  for (std::size_t rows : {1u, 4u, 8u, 16u}) {
    const auto n = static_cast<std::int32_t>(rows);
    const DeviceBuffer<std::int32_t> d_rows = Upload(Range(0, n)), d_adapter = Upload(Range(0, n));
    const DeviceBuffer<float> d_scale = Upload(std::vector<float>(rows, 0.5f));
    DeviceBuffer<float> d_t = Upload(std::vector<float>(kLayers * 3 * rows * kRank, 0.0f));
    // mode: 0 plain; 1 the shrink and the epilogue; 2 the epilogue alone.
    const auto run = [&](int mode) {
      for (std::size_t l = 0; l < kLayers; ++l) {
        const LoraGroup* lg = d_groups.data() + l * 3 * kAdapters;
        float* t = d_t.data() + l * 3 * rows * kRank;
        std::array<MatMulContext::MatMulOutput, 3> o{};
        LoraEpilogue e;
        e.rows = {d_rows.data(), 1, d_adapter.data(), d_scale.data(), kRank};
        for (std::size_t s = 0; s < 3; ++s) {
          o[s] = {w[3 * l + s].data(), outs[s], y[s].data()};
          e.sites[s] = {lg + s * kAdapters, t + s * rows * kRank};
        }
        if (mode == 1 && !LoraShrink(d_x.data(), kIn, kIn, lg, 3 * kAdapters, kAdapters, kRank,
                                     d_rows.data(), n, t, stream)
                              .ok()) {
          return false;
        }
        if (!ctx.MatMulMany(d_x.data(), rows, kIn, o, mode == 0 ? nullptr : &e).ok()) return false;
      }
      return true;
    };
    double us[3];
    for (int mode = 0; mode < 3; ++mode) {
      us[mode] = GraphMedianMicros([&] { return run(mode); }, stream, *flush) / kLayers;
    }
    std::printf("| %zu | %.2f | %.2f | %.2f |\n", rows, us[0], us[1], us[2]);
  }
}

const char* Path(std::size_t rows) {
  if (!MatMulContext::TakesGemv(rows)) return "cuBLAS";
  return rows >= MatMulContext::kMinTensorCoreRows ? "GEMV, tensor cores" : "GEMV";
}

TEST_F(CudaMatMulTest, Perf) {
  if (!PerfRequested()) GTEST_SKIP() << "set FGNET_CUDA_PERF=1";
  struct Named {
    const char* name;
    std::size_t out, in;
  };
  const Named shapes[] = {{"q", 1024, 640},       {"k/v", 256, 640},   {"o", 640, 1024},
                          {"gate/up", 2048, 640}, {"down", 640, 2048}, {"lm_head", 262144, 640}};
  const std::size_t max_rows = 2048;
  DeviceBuffer<std::uint16_t> d_w = Upload(rng_.BF16(262144 * 640, 0.05f));
  DeviceBuffer<float> d_x = Upload(rng_.Floats(max_rows * 2048));
  auto d_y = DeviceBuffer<float>::Allocate(max_rows * 262144);
  ASSERT_TRUE(d_y.ok());
  auto flush = DeviceBuffer<std::uint8_t>::Allocate(256u << 20);
  ASSERT_TRUE(flush.ok());
  std::printf("device: %s (L2 flushed before each timed run; median of 21)\n",
              device_name_.c_str());
  std::printf("| shape | out x in | rows | path | time us | GB/s (weights) | TFLOP/s |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const Named& s : shapes) {
    for (std::size_t rows : {1u, 4u, 8u, 16u, 64u, 2048u}) {
      const double us = MedianMicros(
          [&] { return ctx_->MatMul(d_x.data(), rows, s.in, d_w.data(), s.out, d_y->data()); },
          *flush);
      const double bytes = static_cast<double>(s.out * s.in * 2);
      const double flops = 2.0 * static_cast<double>(rows * s.in * s.out);
      std::printf("| %s | %zux%zu | %zu | %s | %.2f | %.0f | %.2f |\n", s.name, s.out, s.in, rows,
                  Path(rows), us, bytes / us * 1e-3, flops / us * 1e-6);
    }
  }
  // LoRA: 16 and 64 rows, each with its own rank-16 adapter; launches for all rows of each group
  // and for the one it has (group_rows 1).
  std::printf(
      "\n| LoRA site | in -> out | rows x adapters x rank | time us | group_rows 1 |\n"
      "|---|---|---|---|---|\n");
  const Named lora_shapes[] = {{"gate/up", 2048, 640}, {"down", 640, 2048}};
  constexpr int kRank = 16;
  for (const int adapters : {16, 64}) {
    for (const Named& s : lora_shapes) {
      std::vector<DeviceBuffer<float>> a, b;
      std::vector<LoraGroup> groups;
      for (int g = 0; g < adapters; ++g) {
        a.push_back(Upload(rng_.Floats(kRank * s.in, 0.05f)));
        b.push_back(Upload(rng_.Floats(s.out * kRank, 0.05f)));
        groups.push_back(
            {.a = a.back().data(), .b = b.back().data(), .rank = kRank, .first = g, .count = 1});
      }
      DeviceBuffer<LoraGroup> d_groups = Upload(groups);
      DeviceBuffer<std::int32_t> d_rows = Upload(Range(0, adapters));
      DeviceBuffer<float> d_scales = Upload(std::vector<float>(adapters, 0.5f));
      auto ws = DeviceBuffer<float>::Allocate(kRank * adapters);
      ASSERT_TRUE(ws.ok());
      double us[2];
      for (const int group_rows : {0, 1}) {
        us[group_rows] = MedianMicros(
            [&] {
              return LoraApply(d_x.data(), s.in, s.in, d_y->data(), s.out, s.out, d_groups.data(),
                               adapters, kRank, d_rows.data(), d_scales.data(), adapters,
                               ws->data(), nullptr, group_rows);
            },
            *flush);
      }
      std::printf("| %s | %zu -> %zu | %d x %d x %d | %.2f | %.2f |\n", s.name, s.in, s.out,
                  adapters, adapters, kRank, us[0], us[1]);
    }
  }
}

}  // namespace
}  // namespace fgnet::cuda
