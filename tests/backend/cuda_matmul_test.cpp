// The CUDA matrix products (GEMV and cuBLAS paths, fused products, residual inputs) against
// scalar double-accumulation references, with outputs poisoned with NaN (or filled with random
// values where the kernels accumulate). Skipped where no CUDA device is present (CI); run on a
// GPU machine. The grouped LoRA kernels are in cuda_lora_test.cpp, the perf mode in
// cuda_matmul_perf_test.cpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backend/cuda/device.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/ops.h"
#include "cuda_matmul_support.h"
#include "tensor/dtype.h"

namespace fgnet::cuda {
namespace {

// Checks y (as computed on the device) against the double reference of y0 + x W^T (y0 = 0 unless
// accumulating) for the outputs o % stride == 0, with an error bound relative to sum |x_k w_k|.
void ExpectMatMulNear(const std::vector<float>& got, const std::vector<float>& x, std::size_t rows,
                      std::size_t in, const std::vector<std::uint16_t>& w, std::size_t out,
                      const std::vector<float>* y0, double rel, std::size_t stride = 1) {
  ASSERT_EQ(got.size(), rows * out);
  std::vector<float> wf(in);
  for (std::size_t o = 0; o < out; o += stride) {
    for (std::size_t k = 0; k < in; ++k) wf[k] = BF16ToF32(w[o * in + k]);
    for (std::size_t r = 0; r < rows; ++r) {
      double sum = y0 != nullptr ? (*y0)[r * out + o] : 0.0;
      double mag = std::fabs(sum);
      for (std::size_t k = 0; k < in; ++k) {
        const double term = static_cast<double>(x[r * in + k]) * wf[k];
        sum += term;
        mag += std::fabs(term);
      }
      ASSERT_NEAR(got[r * out + o], sum, rel * mag + 1e-30)
          << "row " << r << " output " << o << " (rows " << rows << ", in " << in << ", out " << out
          << ")";
    }
  }
}

void ExpectSameBits(const std::vector<float>& got, const std::vector<float>& want,
                    const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(std::bit_cast<std::uint32_t>(got[i]), std::bit_cast<std::uint32_t>(want[i]))
        << what << " element " << i << ": " << got[i] << " vs " << want[i];
  }
}

TEST_F(CudaMatMulTest, GemvMatchesTheReference) {
  // 270M shapes, sizes that leave lanes and tiles partly filled, and an `out` large enough for the
  // four-rows-per-warp kernel with a partial last tile.
  const Shape shapes[] = {{8, 1},      {24, 5},     {640, 1024}, {640, 256},
                          {2048, 640}, {1032, 257}, {640, 16901}};
  for (const Shape& s : shapes) {
    const std::vector<std::uint16_t> w = rng_.BF16(s.out * s.in);
    DeviceBuffer<std::uint16_t> d_w = Upload(w);
    for (std::size_t rows = 1; rows <= MatMulContext::kMaxGemvRows; ++rows) {
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(testing::Message() << "in " << s.in << " out " << s.out << " rows " << rows
                                        << " accumulate " << accumulate);
        const std::vector<float> x = rng_.Floats(rows * s.in);
        const std::vector<float> y0 = rng_.Floats(rows * s.out, 4.0f);
        const std::vector<float> got =
            RunMatMul(x, rows, s.in, d_w, s.out, accumulate ? &y0 : nullptr);
        ExpectMatMulNear(got, x, rows, s.in, w, s.out, accumulate ? &y0 : nullptr, 3e-5);
      }
    }
  }
}

TEST_F(CudaMatMulTest, GemvSplitsRowsThatDoNotFitInSharedMemoryTogether) {
  // 4 rows of 16384 floats are 256 KiB: more than one block's shared memory (the f32 GEMV; the
  // tensor-core GEMV of more rows stages no activations).
  const std::size_t rows = 4, in = 16384, out = 45;
  const std::vector<std::uint16_t> w = rng_.BF16(out * in);
  DeviceBuffer<std::uint16_t> d_w = Upload(w);
  const std::vector<float> x = rng_.Floats(rows * in);
  const std::vector<float> got = RunMatMul(x, rows, in, d_w, out, nullptr);
  ExpectMatMulNear(got, x, rows, in, w, out, nullptr, 3e-5);
}

TEST_F(CudaMatMulTest, GemvReadsActivationsThatAreNotVectorAligned) {
  const std::size_t in = 640, out = 300;
  const std::vector<std::uint16_t> w = rng_.BF16(out * in);
  DeviceBuffer<std::uint16_t> d_w = Upload(w);
  for (std::size_t rows : {1u, 3u, 8u, 12u, 16u}) {
    SCOPED_TRACE(rows);
    const std::vector<float> x = rng_.Floats(rows * in);
    std::vector<float> shifted(rows * in + 1, std::nanf(""));
    std::copy(x.begin(), x.end(), shifted.begin() + 1);
    DeviceBuffer<float> d_x = Upload(shifted);
    DeviceBuffer<float> d_y = Upload(std::vector<float>(rows * out, std::nanf("")));
    const Status s = ctx_->MatMul(d_x.data() + 1, rows, in, d_w.data(), out, d_y.data());
    ASSERT_TRUE(s.ok()) << s.error().message();
    auto got = d_y.ToHost();
    ASSERT_TRUE(got.ok());
    ExpectMatMulNear(*got, x, rows, in, w, out, nullptr, 3e-5);
  }
}

TEST_F(CudaMatMulTest, GemvHandlesTheTiedOutputMatrix) {
  // The 270M model's output matrix: 262144 x 640 BF16 (335 MB); every 13th output is checked.
  const std::size_t in = 640, out = 262144;
  const std::vector<std::uint16_t> w = rng_.BF16(out * in);
  DeviceBuffer<std::uint16_t> d_w = Upload(w);
  // The f32 GEMV, and the tensor-core GEMV taking two tiles a round.
  for (std::size_t rows : {1u, 4u, 8u, 16u}) {
    SCOPED_TRACE(rows);
    const std::vector<float> x = rng_.Floats(rows * in);
    const std::vector<float> got = RunMatMul(x, rows, in, d_w, out, nullptr);
    ExpectMatMulNear(got, x, rows, in, w, out, nullptr, 3e-5, 13);
  }
  // The cuBLAS path on the same matrix.
  const std::size_t rows = 24;
  const std::vector<float> x = rng_.Floats(rows * in);
  const std::vector<float> got = RunMatMul(x, rows, in, d_w, out, nullptr);
  ExpectMatMulNear(got, x, rows, in, w, out, nullptr, 3e-5, 13);
}

TEST_F(CudaMatMulTest, ARowsResultDoesNotDependOnTheRowsBesideIt) {
  // The same row alone (GEMV) and among 24 (cuBLAS): equal up to the order of the f32 sums.
  const std::size_t in = 640, out = 2048, rows = 24;
  const std::vector<std::uint16_t> w = rng_.BF16(out * in);
  DeviceBuffer<std::uint16_t> d_w = Upload(w);
  const std::vector<float> x = rng_.Floats(rows * in);
  const std::vector<float> many = RunMatMul(x, rows, in, d_w, out, nullptr);
  const std::vector<float> first(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(in));
  const std::vector<float> alone = RunMatMul(first, 1, in, d_w, out, nullptr);
  for (std::size_t o = 0; o < out; ++o)
    ASSERT_NEAR(alone[o], many[o], 2e-4f * (1.0f + std::fabs(many[o]))) << "output " << o;
}

TEST_F(CudaMatMulTest, TensorCoreRowsDoNotDependOnTheRowsBesideThem) {
  // Passes of 5 to 16 rows (the tensor-core GEMV) share their first 5 rows: those rows' results
  // are the same bits in every pass, whatever the other rows hold (here: large values, which
  // would change the rounding of any sum they shared).
  const std::size_t in = 1032, out = 257, first = MatMulContext::kMinTensorCoreRows;
  const std::vector<std::uint16_t> w = rng_.BF16(out * in);
  DeviceBuffer<std::uint16_t> d_w = Upload(w);
  const std::vector<float> shared = rng_.Floats(first * in);
  std::vector<float> want;
  for (std::size_t rows = first; rows <= MatMulContext::kMaxGemvRows; ++rows) {
    SCOPED_TRACE(rows);
    std::vector<float> x = shared;
    const std::vector<float> rest = rng_.Floats((rows - first) * in, 1e4f);
    x.insert(x.end(), rest.begin(), rest.end());
    std::vector<float> got = RunMatMul(x, rows, in, d_w, out, nullptr);
    got.resize(first * out);
    if (want.empty()) {
      ExpectMatMulNear(got, shared, first, in, w, out, nullptr, 3e-5);
      want = got;
    }
    ExpectSameBits(got, want, "the shared rows");
  }
}

TEST_F(CudaMatMulTest, GemvLaunchesFromSeveralThreadsAtOnce) {
  // Threads with their own streams and contexts launch one kernel (the GEMV of 2 rows) with
  // different amounts of dynamic shared memory (their inputs' lengths, from 8 KiB to 128 KiB),
  // over and over: every launch runs and gives the same bits as the thread's first.
  constexpr std::size_t kRows = 2, kOut = 256;
  constexpr int kLaunches = 300;
  const std::size_t thread_in[] = {1024, 16384, 4096, 12288, 2048, 8192};
  std::vector<std::string> failures(std::size(thread_in));
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < std::size(thread_in); ++t) {
    const std::size_t in = thread_in[t];
    Uniform rng(100 + t);
    const std::vector<float> x = rng.Floats(kRows * in);
    const std::vector<std::uint16_t> w = rng.BF16(kOut * in);
    threads.emplace_back([&failures, t, in, x, w] {
      std::string& failure = failures[t];
      cudaStream_t stream = nullptr;
      if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
        failure = "no stream";
        return;
      }
      auto ctx = MatMulContext::Create(stream);
      auto d_x = DeviceBuffer<float>::FromHost(x);
      auto d_w = DeviceBuffer<std::uint16_t>::FromHost(w);
      auto d_y = DeviceBuffer<float>::Allocate(kRows * kOut);
      if (!ctx.ok() || !d_x.ok() || !d_w.ok() || !d_y.ok()) failure = "no context or buffers";
      std::vector<float> first, got(kRows * kOut);
      for (int i = 0; i < kLaunches && failure.empty(); ++i) {
        const Status s = ctx->MatMul(d_x->data(), kRows, in, d_w->data(), kOut, d_y->data(), false);
        if (!s.ok()) {
          failure = "launch " + std::to_string(i) + ": " + s.error().message();
        } else if (cudaMemcpyAsync(got.data(), d_y->data(), got.size() * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream) != cudaSuccess ||
                   cudaStreamSynchronize(stream) != cudaSuccess) {
          failure = "launch " + std::to_string(i) + " did not run";
        } else if (first.empty()) {
          first = got;
        } else if (std::memcmp(got.data(), first.data(), got.size() * sizeof(float)) != 0) {
          failure = "launch " + std::to_string(i) + " gave other bits";
        }
      }
      cudaStreamDestroy(stream);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (std::size_t t = 0; t < std::size(thread_in); ++t) {
    EXPECT_EQ(failures[t], "") << "inputs of " << thread_in[t];
  }
}

TEST_F(CudaMatMulTest, GemmMatchesTheReference) {
  const Shape shapes[] = {{24, 5}, {640, 1024}, {2048, 640}, {640, 2048}};
  for (const Shape& s : shapes) {
    const std::vector<std::uint16_t> w = rng_.BF16(s.out * s.in);
    DeviceBuffer<std::uint16_t> d_w = Upload(w);
    for (std::size_t rows : {17u, 33u, 64u}) {
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(testing::Message() << "in " << s.in << " out " << s.out << " rows " << rows
                                        << " accumulate " << accumulate);
        const std::vector<float> x = rng_.Floats(rows * s.in);
        const std::vector<float> y0 = rng_.Floats(rows * s.out, 4.0f);
        const std::vector<float> got =
            RunMatMul(x, rows, s.in, d_w, s.out, accumulate ? &y0 : nullptr);
        // The activations split into two BF16 terms: within 2^-16 of the f32 products.
        ExpectMatMulNear(got, x, rows, s.in, w, s.out, accumulate ? &y0 : nullptr, 3e-5);
      }
    }
  }
}

TEST_F(CudaMatMulTest, WorkspaceGrowsAcrossCalls) {
  const std::size_t in = 640, out = 256;
  const std::vector<std::uint16_t> w = rng_.BF16(out * in);
  DeviceBuffer<std::uint16_t> d_w = Upload(w);
  for (std::size_t rows : {20u, 200u, 40u, 700u}) {
    SCOPED_TRACE(rows);
    const std::vector<float> x = rng_.Floats(rows * in);
    const std::vector<float> got = RunMatMul(x, rows, in, d_w, out, nullptr);
    ExpectMatMulNear(got, x, rows, in, w, out, nullptr, 3e-5, 7);
  }
}

TEST_F(CudaMatMulTest, RejectsAnInputSizeThatIsNotAMultipleOf8) {
  DeviceBuffer<std::uint16_t> d_w = Upload(std::vector<std::uint16_t>(12 * 4));
  DeviceBuffer<float> d_x = Upload(std::vector<float>(12 * 20));
  DeviceBuffer<float> d_y = Upload(std::vector<float>(4 * 20));
  for (std::size_t rows : {1u, 20u}) {
    const Status s = ctx_->MatMul(d_x.data(), rows, 12, d_w.data(), 4, d_y.data());
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message().find("multiple of 8"), std::string::npos) << s.error().message();
  }
}

// ---- Fused products: MatMulMany, MatMulGeGLU ----

// Bit-for-bit equality of two device results.
double GeluTanh(double g) {
  return 0.5 * g * (1.0 + std::tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
}

// Checks out [rows, n] against the double reference gelu_tanh(x W_gate^T) * (x W_up^T), the error
// bound propagated from the products' bound rel * sum |x_k w_k| (|gelu_tanh'| < 1.2) plus the f32
// evaluation of gelu_tanh.
void ExpectGeGLUNear(const std::vector<float>& got, const std::vector<float>& x, std::size_t rows,
                     std::size_t in, const std::vector<std::uint16_t>& wg,
                     const std::vector<std::uint16_t>& wu, std::size_t n, double rel) {
  ASSERT_EQ(got.size(), rows * n);
  std::vector<float> gf(in), uf(in);
  for (std::size_t o = 0; o < n; ++o) {
    for (std::size_t k = 0; k < in; ++k) {
      gf[k] = BF16ToF32(wg[o * in + k]);
      uf[k] = BF16ToF32(wu[o * in + k]);
    }
    for (std::size_t r = 0; r < rows; ++r) {
      double g = 0, gm = 0, u = 0, um = 0;
      for (std::size_t k = 0; k < in; ++k) {
        const double xk = x[r * in + k];
        g += xk * gf[k];
        gm += std::fabs(xk * gf[k]);
        u += xk * uf[k];
        um += std::fabs(xk * uf[k]);
      }
      const double want = GeluTanh(g) * u;
      const double bound = rel * (1.2 * gm * std::fabs(u) + std::fabs(GeluTanh(g)) * um) +
                           1e-6 * std::fabs(g * u) + 1e-30;
      ASSERT_NEAR(got[r * n + o], want, bound) << "row " << r << " output " << o << " (rows "
                                               << rows << ", in " << in << ", n " << n << ")";
    }
  }
}

const std::size_t kFusedRows[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 64};

TEST_F(CudaMatMulTest, MatMulManyMatchesTheReferenceAndSeparateProducts) {
  struct Case {
    std::size_t in;
    std::vector<std::size_t> outs;
  };
  // q/k/v of the 270M model; odd sizes with an empty output; enough rows for the four-rows-per-warp
  // kernel, with partial last tiles in both outputs; rows that do not fit in shared memory
  // together.
  const Case cases[] = {{640, {1024, 256, 256}},
                        {1032, {257, 5, 0, 1}},
                        {24, {3, 7}},
                        {640, {16901, 643}},
                        {16384, {45, 13}}};
  for (const Case& c : cases) {
    std::vector<std::vector<std::uint16_t>> w;
    std::vector<DeviceBuffer<std::uint16_t>> d_w;
    for (std::size_t out : c.outs) {
      w.push_back(rng_.BF16(out * c.in));
      d_w.push_back(Upload(w.back()));
    }
    for (std::size_t rows : kFusedRows) {
      if (c.in == 16384 && rows != 4 && rows != 16) continue;
      SCOPED_TRACE(testing::Message()
                   << "in " << c.in << " outputs " << c.outs.size() << " rows " << rows);
      const std::vector<float> x = rng_.Floats(rows * c.in);
      DeviceBuffer<float> d_x = Upload(x);
      std::vector<DeviceBuffer<float>> d_y;
      std::vector<MatMulContext::MatMulOutput> outputs;
      for (std::size_t i = 0; i < c.outs.size(); ++i) {
        d_y.push_back(Upload(std::vector<float>(rows * c.outs[i], std::nanf(""))));
        outputs.push_back({d_w[i].data(), c.outs[i], d_y.back().data()});
      }
      const Status s = ctx_->MatMulMany(d_x.data(), rows, c.in, outputs);
      ASSERT_TRUE(s.ok()) << s.error().message();
      for (std::size_t i = 0; i < c.outs.size(); ++i) {
        SCOPED_TRACE(testing::Message() << "output " << i);
        const std::vector<float> got = Download(d_y[i]);
        ExpectMatMulNear(got, x, rows, c.in, w[i], c.outs[i], nullptr, 3e-5,
                         c.outs[i] > 4096 ? 7 : 1);
        // The same bits as MatMul alone on the GEMV path (a pair of cuBLAS products may run as
        // one batched product, summed in another order: the reference check above holds it).
        if (MatMulContext::TakesGemv(rows)) {
          ExpectSameBits(got, RunMatMul(x, rows, c.in, d_w[i], c.outs[i], nullptr),
                         "MatMulMany vs MatMul");
        }
      }
    }
  }
}

TEST_F(CudaMatMulTest, MatMulGeGLUMatchesTheReferenceAndSeparateOps) {
  // gate/up of the 270M model; odd sizes; enough outputs for two rows of each matrix per warp,
  // with a partial last tile; rows that do not fit in shared memory together.
  const Shape shapes[] = {{640, 2048}, {1032, 257}, {24, 5}, {640, 4225}, {16384, 45}};
  for (const Shape& s : shapes) {
    const std::vector<std::uint16_t> wg = rng_.BF16(s.out * s.in);
    const std::vector<std::uint16_t> wu = rng_.BF16(s.out * s.in);
    DeviceBuffer<std::uint16_t> d_wg = Upload(wg), d_wu = Upload(wu);
    for (std::size_t rows : kFusedRows) {
      if (s.in == 16384 && rows != 4 && rows != 16) continue;
      SCOPED_TRACE(testing::Message() << "in " << s.in << " n " << s.out << " rows " << rows);
      const std::vector<float> x = rng_.Floats(rows * s.in);
      DeviceBuffer<float> d_x = Upload(x);
      DeviceBuffer<float> d_out = Upload(std::vector<float>(rows * s.out, std::nanf("")));
      const Status st =
          ctx_->MatMulGeGLU(d_x.data(), rows, s.in, d_wg.data(), d_wu.data(), s.out, d_out.data());
      ASSERT_TRUE(st.ok()) << st.error().message();
      const std::vector<float> got = Download(d_out);
      ExpectGeGLUNear(got, x, rows, s.in, wg, wu, s.out, 3e-5);

      // The up products in the caller's scratch instead of the context's workspace.
      DeviceBuffer<float> d_scratch = Upload(std::vector<float>(rows * s.out, std::nanf("")));
      DeviceBuffer<float> d_out2 = Upload(std::vector<float>(rows * s.out, std::nanf("")));
      ASSERT_TRUE(ctx_->MatMulGeGLU(d_x.data(), rows, s.in, d_wg.data(), d_wu.data(), s.out,
                                    d_out2.data(), d_scratch.data())
                      .ok());
      // The cuBLAS path may run the two products as one batched product (where the buffers lie
      // one after the other), summed in another order: it is held to the reference.
      if (!MatMulContext::TakesGemv(rows)) {
        ExpectGeGLUNear(Download(d_out2), x, rows, s.in, wg, wu, s.out, 3e-5);
        continue;
      }
      ExpectSameBits(Download(d_out2), got, "MatMulGeGLU with an up scratch");

      // On the GEMV path: two MatMul calls and GeluTanhMul.
      DeviceBuffer<float> d_g = Upload(std::vector<float>(rows * s.out, std::nanf("")));
      DeviceBuffer<float> d_u = Upload(std::vector<float>(rows * s.out, std::nanf("")));
      DeviceBuffer<float> d_ref = Upload(std::vector<float>(rows * s.out, std::nanf("")));
      ASSERT_TRUE(ctx_->MatMul(d_x.data(), rows, s.in, d_wg.data(), s.out, d_g.data()).ok());
      ASSERT_TRUE(ctx_->MatMul(d_x.data(), rows, s.in, d_wu.data(), s.out, d_u.data()).ok());
      ASSERT_TRUE(GeluTanhMul(d_g.data(), d_u.data(), rows * s.out, d_ref.data()).ok());
      const std::vector<float> ref = Download(d_ref);
      for (std::size_t i = 0; i < ref.size(); ++i) {
        ASSERT_NEAR(got[i], ref[i], 1e-6 * std::fabs(ref[i]) + 1e-30) << "element " << i;
      }
    }
  }
}

// Terms a producer leaves (InputTerms) are taken by the next call when it is a many-row product
// of their input, and forgotten by any other call; MatMulGeGLU leaves its output's terms.
TEST_F(CudaMatMulTest, InputTermsAreTakenByTheNextProductOfTheirInputOnly) {
  const std::size_t rows = 40, in = 640, out = 256;
  const std::vector<std::uint16_t> w = rng_.BF16(out * in);
  DeviceBuffer<std::uint16_t> d_w = Upload(w);
  const std::vector<float> x = rng_.Floats(rows * in);
  DeviceBuffer<float> d_x = Upload(x), d_other = Upload(rng_.Floats(rows * in));
  const auto product = [&](const float* input) {
    DeviceBuffer<float> d_y = Upload(std::vector<float>(rows * out, std::nanf("")));
    const Status s = ctx_->MatMul(input, rows, in, d_w.data(), out, d_y.data());
    EXPECT_TRUE(s.ok()) << s.error().message();
    return Download(d_y);
  };
  // Terms of zeros stand for x: a product that takes them gives zeros.
  const auto zero_terms = [&](const float* input) {
    auto terms = ctx_->InputTerms(input, rows, in);
    ASSERT_TRUE(terms.ok()) << terms.error().message();
    ASSERT_EQ(cudaMemset(*terms, 0, 2 * rows * in * sizeof(std::uint16_t)), cudaSuccess);
  };
  const std::vector<float> want = product(d_x.data());
  ExpectMatMulNear(want, x, rows, in, w, out, nullptr, 3e-5);

  zero_terms(d_x.data());
  EXPECT_EQ(product(d_x.data()), std::vector<float>(rows * out, 0.0f));
  // Taken once: the next product of x splits it again.
  ExpectSameBits(product(d_x.data()), want, "after the terms were taken");
  // Forgotten by a product of another input, and by a GEMV-path product of x.
  zero_terms(d_x.data());
  product(d_other.data());
  ExpectSameBits(product(d_x.data()), want, "after another input's product");
  zero_terms(d_x.data());
  {
    DeviceBuffer<float> d_y = Upload(std::vector<float>(2 * out, std::nanf("")));
    ASSERT_TRUE(ctx_->MatMul(d_x.data(), 2, in, d_w.data(), out, d_y.data()).ok());
  }
  ExpectSameBits(product(d_x.data()), want, "after a GEMV product");

  // MatMulGeGLU's output terms, taken by a product of the output: the same bits as splitting it.
  const std::size_t n = 640;
  const std::vector<std::uint16_t> wg = rng_.BF16(n * in), wu = rng_.BF16(n * in);
  DeviceBuffer<std::uint16_t> d_wg = Upload(wg), d_wu = Upload(wu);
  const std::vector<std::uint16_t> wd = rng_.BF16(out * n);
  DeviceBuffer<std::uint16_t> d_wd = Upload(wd);
  DeviceBuffer<float> d_act = Upload(std::vector<float>(rows * n, std::nanf("")));
  ASSERT_TRUE(
      ctx_->MatMulGeGLU(d_x.data(), rows, in, d_wg.data(), d_wu.data(), n, d_act.data()).ok());
  DeviceBuffer<float> d_taken = Upload(std::vector<float>(rows * out, std::nanf("")));
  ASSERT_TRUE(ctx_->MatMul(d_act.data(), rows, n, d_wd.data(), out, d_taken.data()).ok());
  const std::vector<float> act = Download(d_act);
  DeviceBuffer<float> d_copy = Upload(act);
  DeviceBuffer<float> d_split = Upload(std::vector<float>(rows * out, std::nanf("")));
  ASSERT_TRUE(ctx_->MatMul(d_copy.data(), rows, n, d_wd.data(), out, d_split.data()).ok());
  ExpectSameBits(Download(d_taken), Download(d_split), "GeGLU output terms");
}

// Two many-row products of one shape whose weights and outputs lie one after the other (k and v;
// gate and up, as the model places them) run as one batched product per term: the same results
// as products apart, to the reference's tolerance.
TEST_F(CudaMatMulTest, ProductsSideBySideMatchTheReference) {
  const std::size_t rows = 48, in = 640, out = 256;
  const std::vector<std::uint16_t> w = rng_.BF16(2 * out * in);  // [w0; w1]
  DeviceBuffer<std::uint16_t> d_w = Upload(w);
  const std::vector<float> x = rng_.Floats(rows * in);
  DeviceBuffer<float> d_x = Upload(x);
  DeviceBuffer<float> d_y = Upload(std::vector<float>(2 * rows * out, std::nanf("")));
  const MatMulContext::MatMulOutput outputs[] = {
      {d_w.data(), out, d_y.data()}, {d_w.data() + out * in, out, d_y.data() + rows * out}};
  ASSERT_TRUE(ctx_->MatMulMany(d_x.data(), rows, in, outputs).ok());
  const std::vector<float> y = Download(d_y);
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    const std::vector<std::uint16_t> wi(w.begin() + i * out * in, w.begin() + (i + 1) * out * in);
    const std::vector<float> yi(y.begin() + i * rows * out, y.begin() + (i + 1) * rows * out);
    ExpectMatMulNear(yi, x, rows, in, wi, out, nullptr, 3e-5);
  }
  // gate and up side by side, the up products right after the GeGLU's output.
  DeviceBuffer<float> d_out = Upload(std::vector<float>(2 * rows * out, std::nanf("")));
  ASSERT_TRUE(ctx_->MatMulGeGLU(d_x.data(), rows, in, d_w.data(), d_w.data() + out * in, out,
                                d_out.data(), d_out.data() + rows * out)
                  .ok());
  std::vector<float> got = Download(d_out);
  got.resize(rows * out);
  const std::vector<std::uint16_t> wg(w.begin(), w.begin() + out * in);
  const std::vector<std::uint16_t> wu(w.begin() + out * in, w.end());
  ExpectGeGLUNear(got, x, rows, in, wg, wu, out, 3e-5);
}

TEST_F(CudaMatMulTest, FusedProductsReadActivationsThatAreNotVectorAligned) {
  const std::size_t in = 640, n = 300;
  const std::vector<std::uint16_t> wg = rng_.BF16(n * in), wu = rng_.BF16(n * in);
  DeviceBuffer<std::uint16_t> d_wg = Upload(wg), d_wu = Upload(wu);
  for (std::size_t rows : {1u, 3u, 8u, 12u, 16u}) {
    SCOPED_TRACE(rows);
    const std::vector<float> x = rng_.Floats(rows * in);
    std::vector<float> shifted(rows * in + 1, std::nanf(""));
    std::copy(x.begin(), x.end(), shifted.begin() + 1);
    DeviceBuffer<float> d_x = Upload(shifted);
    DeviceBuffer<float> d_g = Upload(std::vector<float>(rows * n, std::nanf("")));
    DeviceBuffer<float> d_u = Upload(std::vector<float>(rows * n, std::nanf("")));
    DeviceBuffer<float> d_out = Upload(std::vector<float>(rows * n, std::nanf("")));
    const MatMulContext::MatMulOutput outputs[] = {{d_wg.data(), n, d_g.data()},
                                                   {d_wu.data(), n, d_u.data()}};
    ASSERT_TRUE(ctx_->MatMulMany(d_x.data() + 1, rows, in, outputs).ok());
    ASSERT_TRUE(
        ctx_->MatMulGeGLU(d_x.data() + 1, rows, in, d_wg.data(), d_wu.data(), n, d_out.data())
            .ok());
    ExpectMatMulNear(Download(d_g), x, rows, in, wg, n, nullptr, 3e-5);
    ExpectMatMulNear(Download(d_u), x, rows, in, wu, n, nullptr, 3e-5);
    ExpectGeGLUNear(Download(d_out), x, rows, in, wg, wu, n, 3e-5);
  }
}

TEST_F(CudaMatMulTest, FusedProductsReplayInACudaGraph) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  auto made = MatMulContext::Create(stream);
  ASSERT_TRUE(made.ok()) << made.error().message();
  MatMulContext& ctx = *made;
  const std::size_t in = 640, q = 1024, kv = 256, n = 2048;
  DeviceBuffer<std::uint16_t> d_wq = Upload(rng_.BF16(q * in)), d_wk = Upload(rng_.BF16(kv * in));
  DeviceBuffer<std::uint16_t> d_wg = Upload(rng_.BF16(n * in)), d_wu = Upload(rng_.BF16(n * in));
  for (std::size_t rows : {3u, 16u}) {
    SCOPED_TRACE(rows);
    DeviceBuffer<float> d_x = Upload(rng_.Floats(rows * in));
    DeviceBuffer<float> d_q = Upload(std::vector<float>(rows * q, std::nanf("")));
    DeviceBuffer<float> d_k = Upload(std::vector<float>(rows * kv, std::nanf("")));
    DeviceBuffer<float> d_out = Upload(std::vector<float>(rows * n, std::nanf("")));
    const MatMulContext::MatMulOutput outputs[] = {{d_wq.data(), q, d_q.data()},
                                                   {d_wk.data(), kv, d_k.data()}};
    auto issue = [&] {
      EXPECT_TRUE(ctx.MatMulMany(d_x.data(), rows, in, outputs).ok());
      EXPECT_TRUE(
          ctx.MatMulGeGLU(d_x.data(), rows, in, d_wg.data(), d_wu.data(), n, d_out.data()).ok());
    };
    // Eagerly first (the cuBLAS path's workspace grows outside capture), then captured.
    issue();
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const std::vector<float> want_q = Download(d_q), want_k = Download(d_k),
                             want_out = Download(d_out);
    const std::uint64_t generation = ctx.generation();
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    issue();
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    EXPECT_EQ(ctx.generation(), generation);
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (DeviceBuffer<float>* b : {&d_q, &d_k, &d_out}) {
      ASSERT_EQ(cudaMemset(b->data(), 0xff, b->size() * sizeof(float)), cudaSuccess);  // NaN
    }
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    ExpectSameBits(Download(d_q), want_q, "q");
    ExpectSameBits(Download(d_k), want_k, "k");
    ExpectSameBits(Download(d_out), want_out, "GeGLU");
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  made = MatMulContext::Create();  // releases the context on `stream`
  cudaStreamDestroy(stream);
}

// A residual input staged by the products equals RMSNormAddToNorm into h followed by the products
// of h, bit for bit: the products' outputs, and the new residual in `updated`, the old one left as
// it was.
TEST_F(CudaMatMulTest, ResidualInputsEqualTheNormThenTheProducts) {
  struct Case {
    std::size_t in, out, rows;
  };
  // The 270M model's q/k/v and gate/up at decode sizes, on the f32 GEMV (up to 4 rows) and on
  // tensor cores; rows that do not fit in shared memory together (several launches, each writing
  // its rows' new residual).
  const Case cases[] = {{640, 1024, 1},  {640, 1024, 3}, {640, 2048, 4},
                        {1032, 257, 2},  {16384, 45, 4}, {640, 1024, 8},
                        {640, 2048, 16}, {1032, 257, 9}, {16384, 45, 8}};
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "in " << c.in << " out " << c.out << " rows " << c.rows);
    const std::vector<std::uint16_t> wq = rng_.BF16(c.out * c.in), wk = rng_.BF16(c.out * c.in);
    DeviceBuffer<std::uint16_t> d_wq = Upload(wq), d_wk = Upload(wk);
    const std::vector<float> delta = rng_.Floats(c.rows * c.in, 4.0f);
    const std::vector<float> residual = rng_.Floats(c.rows * c.in, 2.0f);
    const std::vector<float> post = rng_.Floats(c.in), pre = rng_.Floats(c.in);
    DeviceBuffer<float> d_delta = Upload(delta), d_post = Upload(post), d_pre = Upload(pre);
    const auto poisoned = [&](std::size_t n) {
      return Upload(std::vector<float>(n, std::nanf("")));
    };

    // Apart: the norm into h (the residual updated in place), then the products of h.
    DeviceBuffer<float> d_res_apart = Upload(residual), d_h = poisoned(c.rows * c.in);
    ASSERT_TRUE(RMSNormAddToNorm(d_delta.data(), c.rows, c.in, d_post.data(), 1e-6f,
                                 d_res_apart.data(), d_pre.data(), d_h.data())
                    .ok());
    DeviceBuffer<float> d_q_apart = poisoned(c.rows * c.out), d_k_apart = poisoned(c.rows * c.out);
    const MatMulContext::MatMulOutput apart[] = {{d_wq.data(), c.out, d_q_apart.data()},
                                                 {d_wk.data(), c.out, d_k_apart.data()}};
    ASSERT_TRUE(ctx_->MatMulMany(d_h.data(), c.rows, c.in, apart).ok());
    DeviceBuffer<float> d_g_apart = poisoned(c.rows * c.out);
    ASSERT_TRUE(ctx_->MatMulGeGLU(d_h.data(), c.rows, c.in, d_wq.data(), d_wk.data(), c.out,
                                  d_g_apart.data())
                    .ok());

    // Fused: each product stages the residual input; the new residual goes to `updated`.
    DeviceBuffer<float> d_res = Upload(residual);
    for (bool geglu : {false, true}) {
      SCOPED_TRACE(geglu ? "MatMulGeGLU" : "MatMulMany");
      DeviceBuffer<float> d_updated = poisoned(c.rows * c.in);
      const ResidualInput input{d_delta.data(), d_res.data(), d_updated.data(),
                                d_post.data(),  d_pre.data(), 1e-6f};
      if (geglu) {
        DeviceBuffer<float> d_g = poisoned(c.rows * c.out);
        const Status s = ctx_->MatMulGeGLU(nullptr, c.rows, c.in, d_wq.data(), d_wk.data(), c.out,
                                           d_g.data(), nullptr, nullptr, &input);
        ASSERT_TRUE(s.ok()) << s.error().message();
        ExpectSameBits(Download(d_g), Download(d_g_apart), "GeGLU");
      } else {
        DeviceBuffer<float> d_q = poisoned(c.rows * c.out), d_k = poisoned(c.rows * c.out);
        const MatMulContext::MatMulOutput fused[] = {{d_wq.data(), c.out, d_q.data()},
                                                     {d_wk.data(), c.out, d_k.data()}};
        const Status s = ctx_->MatMulMany(nullptr, c.rows, c.in, fused, nullptr, &input);
        ASSERT_TRUE(s.ok()) << s.error().message();
        ExpectSameBits(Download(d_q), Download(d_q_apart), "first product");
        ExpectSameBits(Download(d_k), Download(d_k_apart), "second product");
      }
      ExpectSameBits(Download(d_updated), Download(d_res_apart), "new residual");
      ExpectSameBits(Download(d_res), residual, "old residual");
    }
  }
}

TEST_F(CudaMatMulTest, ResidualInputsRejectBadArguments) {
  const std::size_t in = 16;
  DeviceBuffer<std::uint16_t> d_w = Upload(std::vector<std::uint16_t>(4096 * in));
  DeviceBuffer<float> d_x = Upload(std::vector<float>(20 * in));
  DeviceBuffer<float> d_y = Upload(std::vector<float>(20 * 4096));
  DeviceBuffer<float> d_res = Upload(std::vector<float>(20 * in));
  DeviceBuffer<float> d_updated = Upload(std::vector<float>(20 * in));
  DeviceBuffer<float> d_scale = Upload(std::vector<float>(in, 1.0f));
  const ResidualInput good{d_x.data(),     d_res.data(),   d_updated.data(),
                           d_scale.data(), d_scale.data(), 1e-6f};
  const MatMulContext::MatMulOutput one[] = {{d_w.data(), 8, d_y.data()}};
  const auto expect_error = [](const Status& s, const std::string& what) {
    ASSERT_FALSE(s.ok()) << what;
    EXPECT_NE(s.error().message().find(what), std::string::npos) << s.error().message();
  };
  expect_error(ctx_->MatMulMany(d_x.data(), 1, in, one, nullptr, &good), "both x and");
  ResidualInput in_place = good;
  in_place.updated = d_res.data();
  expect_error(ctx_->MatMulMany(nullptr, 1, in, one, nullptr, &in_place), "in place");
  ResidualInput unaligned = good;
  unaligned.residual = d_res.data() + 1;
  expect_error(ctx_->MatMulMany(nullptr, 1, in, one, nullptr, &unaligned), "16-byte aligned");
  ResidualInput no_pre = good;
  no_pre.pre = nullptr;
  expect_error(ctx_->MatMulGeGLU(nullptr, 1, in, d_w.data(), d_w.data(), 8, d_y.data(), nullptr,
                                 nullptr, &no_pre),
               "lacks a buffer");
  // 20 rows take cuBLAS, which has no residual staging.
  expect_error(ctx_->MatMulMany(nullptr, 20, in, one, nullptr, &good), "needs the GEMV path");
  expect_error(ctx_->MatMulGeGLU(nullptr, 20, in, d_w.data(), d_w.data(), 8, d_y.data(), nullptr,
                                 nullptr, &good),
               "needs the GEMV path");
  expect_error(ctx_->MatMulMany(nullptr, 1, in, one), "no input");
}

TEST_F(CudaMatMulTest, FusedProductsRejectBadArguments) {
  DeviceBuffer<std::uint16_t> d_w = Upload(std::vector<std::uint16_t>(16 * 8));
  DeviceBuffer<float> d_x = Upload(std::vector<float>(20 * 16));
  DeviceBuffer<float> d_y = Upload(std::vector<float>(20 * 8));
  for (std::size_t rows : {1u, 20u}) {
    const MatMulContext::MatMulOutput one[] = {{d_w.data(), 4, d_y.data()}};
    Status s = ctx_->MatMulMany(d_x.data(), rows, 12, one);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message().find("multiple of 8"), std::string::npos) << s.error().message();
    s = ctx_->MatMulGeGLU(d_x.data(), rows, 12, d_w.data(), d_w.data(), 4, d_y.data());
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message().find("multiple of 8"), std::string::npos) << s.error().message();
    const MatMulContext::MatMulOutput five[] = {{d_w.data(), 1, d_y.data()},
                                                {d_w.data(), 1, d_y.data() + 1},
                                                {d_w.data(), 1, d_y.data() + 2},
                                                {d_w.data(), 1, d_y.data() + 3},
                                                {d_w.data(), 1, d_y.data() + 4}};
    s = ctx_->MatMulMany(d_x.data(), rows, 8, five);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message().find("5 outputs"), std::string::npos) << s.error().message();
  }
}

}  // namespace
}  // namespace fgnet::cuda
