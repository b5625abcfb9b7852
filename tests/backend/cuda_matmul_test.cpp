// The CUDA matrix products (GEMV and cuBLAS paths) and the grouped LoRA kernels against scalar
// double-accumulation references, with outputs poisoned with NaN (or filled with random values
// where the kernels accumulate). Skipped where no CUDA device is present (CI); run on a GPU
// machine. The perf mode is in cuda_matmul_perf_test.cpp.
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

struct Shape {
  std::size_t in, out;
};

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

std::vector<float> Download(const DeviceBuffer<float>& d) {
  auto h = d.ToHost();
  EXPECT_TRUE(h.ok()) << h.error().message();
  return h.ok() ? std::move(*h) : std::vector<float>();
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

// ---- Grouped LoRA ----

struct HostGroup {
  std::int32_t rank;
  std::vector<std::int32_t> rows;
  std::vector<float> scales;
};

struct LoraCase {
  std::size_t in, out, ldx, ldy, batch;  // batch: rows of x and y
  std::vector<HostGroup> groups;
};

// Applies the groups on the device to y (random, poisoned nowhere: every row must keep its value
// unless a group updates it) and compares with the double reference.
void CheckLora(const LoraCase& c, Uniform& rng) {
  const std::vector<float> x = rng.Floats(c.batch * c.ldx);
  const std::vector<float> y0 = rng.Floats(c.batch * c.ldy, 2.0f);
  std::vector<std::vector<float>> a, b;
  std::vector<std::int32_t> row_index;
  std::vector<float> row_scale;
  std::int32_t max_rank = 0;
  for (const HostGroup& g : c.groups) {
    a.push_back(rng.Floats(static_cast<std::size_t>(g.rank) * c.in, 0.05f));
    b.push_back(rng.Floats(c.out * static_cast<std::size_t>(g.rank), 0.05f));
    row_index.insert(row_index.end(), g.rows.begin(), g.rows.end());
    row_scale.insert(row_scale.end(), g.scales.begin(), g.scales.end());
    max_rank = std::max(max_rank, g.rank);
  }
  auto up = [](const auto& v) {
    auto d = DeviceBuffer<typename std::decay_t<decltype(v)>::value_type>::FromHost(v);
    EXPECT_TRUE(d.ok());
    return std::move(*d);
  };
  std::vector<DeviceBuffer<float>> d_a, d_b;
  std::vector<LoraGroup> groups;
  std::int32_t first = 0;
  for (std::size_t i = 0; i < c.groups.size(); ++i) {
    d_a.push_back(up(a[i]));
    d_b.push_back(up(b[i]));
    const auto count = static_cast<std::int32_t>(c.groups[i].rows.size());
    groups.push_back({.a = d_a.back().data(),
                      .b = d_b.back().data(),
                      .rank = c.groups[i].rank,
                      .first = first,
                      .count = count});
    first += count;
  }
  const auto total_rows = static_cast<std::int32_t>(row_index.size());
  auto d_groups = DeviceBuffer<LoraGroup>::FromHost(groups);
  ASSERT_TRUE(d_groups.ok());
  DeviceBuffer<float> d_x = up(x), d_y = up(y0);
  DeviceBuffer<std::int32_t> d_rows = up(row_index);
  DeviceBuffer<float> d_scales = up(row_scale);
  DeviceBuffer<float> d_ws =
      up(std::vector<float>(static_cast<std::size_t>(max_rank) * total_rows, std::nanf("")));
  const Status s = LoraApply(d_x.data(), c.ldx, c.in, d_y.data(), c.ldy, c.out, d_groups->data(),
                             static_cast<std::int32_t>(groups.size()), max_rank, d_rows.data(),
                             d_scales.data(), total_rows, d_ws.data());
  ASSERT_TRUE(s.ok()) << s.error().message();
  auto got = d_y.ToHost();
  ASSERT_TRUE(got.ok());

  std::vector<double> want(y0.begin(), y0.end());
  std::vector<double> mag(y0.size());
  for (std::size_t i = 0; i < y0.size(); ++i) mag[i] = std::fabs(y0[i]);
  for (std::size_t gi = 0; gi < c.groups.size(); ++gi) {
    const HostGroup& g = c.groups[gi];
    for (std::size_t j = 0; j < g.rows.size(); ++j) {
      const std::size_t row = static_cast<std::size_t>(g.rows[j]);
      std::vector<double> t(static_cast<std::size_t>(g.rank)), tmag(t.size());
      for (std::size_t q = 0; q < t.size(); ++q) {
        for (std::size_t k = 0; k < c.in; ++k) {
          const double term = static_cast<double>(a[gi][q * c.in + k]) * x[row * c.ldx + k];
          t[q] += term;
          tmag[q] += std::fabs(term);
        }
      }
      for (std::size_t o = 0; o < c.out; ++o) {
        double sum = 0, m = 0;
        for (std::size_t q = 0; q < t.size(); ++q) {
          sum += b[gi][o * t.size() + q] * t[q];
          m += std::fabs(b[gi][o * t.size() + q]) * tmag[q];
        }
        want[row * c.ldy + o] += g.scales[j] * sum;
        mag[row * c.ldy + o] += std::fabs(g.scales[j]) * m;
      }
    }
  }
  for (std::size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR((*got)[i], want[i], 1e-5 * mag[i] + 1e-30)
        << "row " << i / c.ldy << " column " << i % c.ldy;
  }
}

std::vector<float> Scales(std::size_t n, float first, float step) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = first + step * static_cast<float>(i);
  return v;
}

TEST_F(CudaMatMulTest, LoraApplyMatchesTheReference) {
  // 24 rows; rows 21 and 23 are in no group (their y must stay as it was, columns past `out` too);
  // rows 0..19 are in a rank-16 group, the even rows also in a rank-1 group, some rows in a rank-2
  // group; the last group holds row 5 twice.
  const std::vector<HostGroup> groups = {
      {16, Range(0, 20), Scales(20, 0.5f, 0.1f)},
      {1, Range(0, 24, 2), Scales(12, 2.0f, -0.25f)},
      {2, {3, 22, 7, 20, 11, 5, 0, 13, 17}, Scales(9, 1.0f, 0.5f)},
      {16, {5, 9, 5}, {0.25f, 1.0f, -1.0f}},
  };
  const Shape shapes[] = {{640, 1024}, {640, 256}, {1024, 640}, {640, 2048}, {2048, 640}};
  for (const Shape& s : shapes) {
    SCOPED_TRACE(testing::Message() << "in " << s.in << " out " << s.out);
    CheckLora({.in = s.in,
               .out = s.out,
               .ldx = s.in + 8,
               .ldy = s.out + 3,
               .batch = 24,
               .groups = groups},
              rng_);
  }
}

// The adapters' updates in the GEMV epilogue (one LoraShrink of the sites sharing x, then the
// fused products with a LoraEpilogue), and by one LoraShrink and one LoraExpand of several sites,
// against the products followed by LoraApply per site: the
// same bits for rows with one adapter, within rounding for the row that mixes two (whose separate
// updates are added atomically in no fixed order). Three adapters of ranks 16, 4 and 2 (the second
// leaves the k site alone), the last row with none; q/k/v through MatMulMany, gate/up through
// MatMulGeGLU.
TEST_F(CudaMatMulTest, LoraEpilogueEqualsTheSeparateUpdates) {
  const std::size_t in = 640, n_ff = 2048;
  const std::vector<std::size_t> qkv = {1024, 256, 256};
  const std::int32_t ranks[3] = {16, 4, 2};
  const std::int32_t max_rank = 16;
  std::vector<DeviceBuffer<std::uint16_t>> d_w;
  for (std::size_t out : {qkv[0], qkv[1], qkv[2], n_ff, n_ff})
    d_w.push_back(Upload(rng_.BF16(out * in)));
  // A and B per (site, adapter): sites 0-2 q/k/v, 3-4 gate/up.
  const std::size_t site_out[5] = {qkv[0], qkv[1], qkv[2], n_ff, n_ff};
  std::vector<DeviceBuffer<float>> d_ab;
  std::vector<std::array<std::pair<const float*, const float*>, 3>> ab(5);
  for (std::size_t site = 0; site < 5; ++site) {
    for (std::size_t g = 0; g < 3; ++g) {
      d_ab.push_back(Upload(rng_.Floats(static_cast<std::size_t>(ranks[g]) * in, 0.05f)));
      const float* a = d_ab.back().data();
      d_ab.push_back(
          Upload(rng_.Floats(site_out[site] * static_cast<std::size_t>(ranks[g]), 0.05f)));
      ab[site][g] = {a, d_ab.back().data()};
    }
  }
  for (std::size_t rows : {1u, 5u, 13u, 16u}) {
    SCOPED_TRACE(rows);
    // Entries: row r under adapter r % 3, row 0 also under adapter 1; the last row (of several)
    // under none.
    std::vector<std::vector<std::int32_t>> members(3);
    std::vector<std::vector<float>> scales(3);
    for (std::size_t r = 0; r < rows; ++r) {
      if (rows > 1 && r == rows - 1) continue;
      members[r % 3].push_back(static_cast<std::int32_t>(r));
      scales[r % 3].push_back(0.5f + 0.25f * static_cast<float>(r % 4));
    }
    members[1].push_back(0);
    scales[1].push_back(-0.75f);
    std::vector<std::int32_t> lora_rows, entry_adapter, first(3);
    std::vector<float> entry_scale;
    for (std::size_t g = 0; g < 3; ++g) {
      first[g] = static_cast<std::int32_t>(lora_rows.size());
      lora_rows.insert(lora_rows.end(), members[g].begin(), members[g].end());
      entry_scale.insert(entry_scale.end(), scales[g].begin(), scales[g].end());
      entry_adapter.insert(entry_adapter.end(), members[g].size(), static_cast<std::int32_t>(g));
    }
    const std::int32_t per_row = 2;
    std::vector<std::int32_t> row_entries(rows * per_row, -1);
    for (std::size_t i = 0; i < lora_rows.size(); ++i) {
      std::int32_t* slot = &row_entries[static_cast<std::size_t>(lora_rows[i]) * per_row];
      (slot[0] < 0 ? slot[0] : slot[1]) = static_cast<std::int32_t>(i);
    }
    std::vector<LoraGroup> groups;
    for (std::size_t site = 0; site < 5; ++site) {
      for (std::size_t g = 0; g < 3; ++g) {
        const bool absent = site == 1 && g == 1;
        groups.push_back({absent ? nullptr : ab[site][g].first,
                          absent ? nullptr : ab[site][g].second, absent ? 0 : ranks[g], first[g],
                          static_cast<std::int32_t>(members[g].size())});
      }
    }
    const auto total = static_cast<std::int32_t>(lora_rows.size());
    DeviceBuffer<LoraGroup> d_groups = Upload(groups);
    DeviceBuffer<std::int32_t> d_rows = Upload(lora_rows), d_entries = Upload(row_entries),
                               d_adapter = Upload(entry_adapter);
    DeviceBuffer<float> d_scale = Upload(entry_scale);
    const std::size_t slot = static_cast<std::size_t>(max_rank) * static_cast<std::size_t>(total);
    DeviceBuffer<float> d_ws = Upload(std::vector<float>(3 * slot, std::nanf("")));
    const std::vector<float> x = rng_.Floats(rows * in);
    DeviceBuffer<float> d_x = Upload(x);
    LoraEpilogue epilogue;
    epilogue.rows = {d_entries.data(), per_row, d_adapter.data(), d_scale.data(), max_rank};
    const auto nan = [&](std::size_t count) {
      return Upload(std::vector<float>(count, std::nanf("")));
    };

    // q/k/v.
    ASSERT_TRUE(LoraShrink(d_x.data(), in, in, d_groups.data(), 9, 3, max_rank, d_rows.data(),
                           total, d_ws.data())
                    .ok());
    std::vector<DeviceBuffer<float>> fused, separate;
    std::vector<MatMulContext::MatMulOutput> fused_out, separate_out;
    for (std::size_t i = 0; i < 3; ++i) {
      fused.push_back(nan(rows * qkv[i]));
      separate.push_back(nan(rows * qkv[i]));
      fused_out.push_back({d_w[i].data(), qkv[i], fused.back().data()});
      separate_out.push_back({d_w[i].data(), qkv[i], separate.back().data()});
      epilogue.sites[i] = {d_groups.data() + 3 * i, d_ws.data() + i * slot};
    }
    ASSERT_TRUE(ctx_->MatMulMany(d_x.data(), rows, in, fused_out, &epilogue).ok());
    ASSERT_TRUE(ctx_->MatMulMany(d_x.data(), rows, in, separate_out).ok());
    DeviceBuffer<float> d_ws2 = nan(slot);
    for (std::size_t i = 0; i < 3; ++i) {
      ASSERT_TRUE(LoraApply(d_x.data(), in, in, separate[i].data(), qkv[i], qkv[i],
                            d_groups.data() + 3 * i, 3, max_rank, d_rows.data(), d_scale.data(),
                            total, d_ws2.data())
                      .ok());
    }
    const auto compare = [&](const std::vector<float>& got, const std::vector<float>& want,
                             std::size_t out, float rel, const char* what) {
      for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t o = 0; o < out; ++o) {
          const float g = got[r * out + o], w = want[r * out + o];
          if (r == 0 || rel > 0) {
            ASSERT_NEAR(g, w, (r == 0 ? 1e-5f : rel) * (1.0f + std::fabs(w)))
                << what << " row " << r << " output " << o;
          } else {
            ASSERT_EQ(g, w) << what << " row " << r << " output " << o;
          }
        }
      }
    };
    for (std::size_t i = 0; i < 3; ++i) {
      compare(Download(fused[i]), Download(separate[i]), qkv[i], 0.0f, "q/k/v");
    }
    // The same three sites' updates by one LoraShrink and one LoraExpand after plain products.
    std::vector<DeviceBuffer<float>> grouped;
    std::vector<MatMulContext::MatMulOutput> grouped_out;
    std::vector<LoraExpandSite> expand_sites;
    for (std::size_t i = 0; i < 3; ++i) {
      grouped.push_back(nan(rows * qkv[i]));
      grouped_out.push_back({d_w[i].data(), qkv[i], grouped.back().data()});
      expand_sites.push_back({grouped.back().data(), qkv[i], qkv[i]});
    }
    ASSERT_TRUE(ctx_->MatMulMany(d_x.data(), rows, in, grouped_out).ok());
    DeviceBuffer<float> d_ws3 = nan(3 * slot);
    ASSERT_TRUE(LoraShrink(d_x.data(), in, in, d_groups.data(), 9, 3, max_rank, d_rows.data(),
                           total, d_ws3.data())
                    .ok());
    ASSERT_TRUE(LoraExpand(expand_sites, d_groups.data(), 3, max_rank, d_rows.data(),
                           d_scale.data(), total, d_ws3.data())
                    .ok());
    for (std::size_t i = 0; i < 3; ++i) {
      compare(Download(grouped[i]), Download(separate[i]), qkv[i], 0.0f, "q/k/v grouped");
    }

    // gate/up, and the GeGLU.
    ASSERT_TRUE(LoraShrink(d_x.data(), in, in, d_groups.data() + 9, 6, 3, max_rank, d_rows.data(),
                           total, d_ws.data())
                    .ok());
    epilogue.sites[0] = {d_groups.data() + 9, d_ws.data()};
    epilogue.sites[1] = {d_groups.data() + 12, d_ws.data() + slot};
    DeviceBuffer<float> d_out = nan(rows * n_ff), d_up = nan(rows * n_ff);
    ASSERT_TRUE(ctx_->MatMulGeGLU(d_x.data(), rows, in, d_w[3].data(), d_w[4].data(), n_ff,
                                  d_out.data(), d_up.data(), &epilogue)
                    .ok());
    DeviceBuffer<float> d_g = nan(rows * n_ff), d_u = nan(rows * n_ff), d_ref = nan(rows * n_ff);
    ASSERT_TRUE(ctx_->MatMul(d_x.data(), rows, in, d_w[3].data(), n_ff, d_g.data()).ok());
    ASSERT_TRUE(ctx_->MatMul(d_x.data(), rows, in, d_w[4].data(), n_ff, d_u.data()).ok());
    for (const auto& [y, site] : {std::pair{d_g.data(), 3}, std::pair{d_u.data(), 4}}) {
      ASSERT_TRUE(LoraApply(d_x.data(), in, in, y, n_ff, n_ff, d_groups.data() + 3 * site, 3,
                            max_rank, d_rows.data(), d_scale.data(), total, d_ws2.data())
                      .ok());
    }
    ASSERT_TRUE(GeluTanhMul(d_g.data(), d_u.data(), rows * n_ff, d_ref.data()).ok());
    compare(Download(d_out), Download(d_ref), n_ff, 1e-6f, "GeGLU");
  }
}

TEST_F(CudaMatMulTest, LoraApplyHandlesLargeGroups) {
  // A prefill-sized group (more rows than one block takes) beside single-row groups.
  const std::vector<HostGroup> groups = {
      {8, Range(0, 300), Scales(300, 1.0f, 0.0f)},
      {4, {299}, {0.5f}},
      {16, {7}, {2.0f}},
  };
  CheckLora({.in = 640, .out = 2048, .ldx = 640, .ldy = 2048, .batch = 300, .groups = groups},
            rng_);
}

}  // namespace
}  // namespace fgnet::cuda
