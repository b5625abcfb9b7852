// MatMul, MatMulMany and GemmF32 against the scalar references, on every SIMD target.

#include "backend/cpu/matmul.h"

#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/reference.h"
#include "test_support.h"

namespace fgnet::cpu {
namespace {

using testing::OwnedMatrix;
using testing::RandomMatrix;
using testing::RandomVector;

class MatMulTest : public testing::PerTarget {};
FGNET_INSTANTIATE_PER_TARGET(MatMulTest);

// |y - ref| <= tol * sum_k |x_k w_k|: f32 accumulation of K terms loses a few ulps of the
// magnitude of the terms, whatever the dtype of the weights (they are widened exactly, and
// quantized blocks decoded exactly to the values of DequantizeRow).
void ExpectMatMulClose(const float* x, std::size_t n, std::size_t ldx, const WeightMatrix& w,
                       const float* y, std::size_t ldy, const float* ref, const char* what) {
  const double tol = 2e-6 * std::sqrt(static_cast<double>(w.cols) + 1.0);
  std::vector<float> row(w.cols);
  for (std::size_t j = 0; j < w.rows; ++j) {
    reference::RowAt(w, j, row.data());
    for (std::size_t t = 0; t < n; ++t) {
      double abs_sum = 0.0;
      for (std::size_t k = 0; k < w.cols; ++k) abs_sum += std::fabs(x[t * ldx + k] * row[k]);
      ASSERT_LE(std::fabs(y[t * ldy + j] - ref[t * ldy + j]), tol * abs_sum + 1e-30)
          << what << " token " << t << " row " << j << " of [" << w.rows << ", " << w.cols
          << "], n = " << n;
    }
  }
}

TEST_P(MatMulTest, MatchesReferenceForEveryDtypeAndShape) {
  Philox rng(1234);
  ThreadPool pool(2);
  Workspace ws;
  // Both regimes (streaming below 12 tokens, packed from 12) with every remainder of the
  // four-token groups of the streaming regime.
  const std::size_t token_counts[] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 40};
  const std::size_t shapes[][2] = {{1, 1},   {5, 3},    {4, 16},    {17, 33},
                                   {64, 64}, {67, 100}, {130, 257}, {3, 640}};
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (const auto& shape : shapes) {
      const OwnedMatrix m = RandomMatrix(rng, dtype, shape[0], shape[1]);
      const WeightMatrix w = m.view();
      for (std::size_t n : token_counts) {
        const std::size_t ldx = w.cols + 3;
        const std::size_t ldy = w.rows + 2;
        const std::vector<float> x = RandomVector(rng, n * ldx);
        std::vector<float> y(n * ldy, -7.0f);
        std::vector<float> ref(n * ldy, -7.0f);
        MatMul(x.data(), n, ldx, w, y.data(), ldy, pool, ws);
        reference::MatMul(x.data(), n, ldx, w, ref.data(), ldy);
        ExpectMatMulClose(x.data(), n, ldx, w, y.data(), ldy, ref.data(), DTypeName(dtype).data());
        // Padding columns of y are left alone.
        for (std::size_t t = 0; t < n; ++t) {
          for (std::size_t j = w.rows; j < ldy; ++j) ASSERT_EQ(y[t * ldy + j], -7.0f);
        }
      }
    }
  }
}

TEST_P(MatMulTest, QuantizedMatchesReference) {
  Philox rng(4321);
  ThreadPool pool(2);
  Workspace ws;
  // Both regimes, the token-group remainders and odd row counts (the two-stream split of the
  // decode regime leaves one row over; packed panels are partly filled).
  const std::size_t token_counts[] = {1, 2, 5, 12, 37};
  const std::size_t rows[] = {1, 5, 67};
  for (DType dtype : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K}) {
    const std::size_t block = DTypeBlockElements(dtype);
    for (std::size_t blocks : {1, 3}) {
      for (std::size_t r : rows) {
        const std::size_t cols = blocks * block;
        const OwnedMatrix m = RandomMatrix(rng, dtype, r, cols, 0.5f);
        const WeightMatrix w = m.view();
        for (std::size_t n : token_counts) {
          const std::size_t ldx = cols + 3;
          const std::size_t ldy = r + 2;
          const std::vector<float> x = RandomVector(rng, n * ldx);
          std::vector<float> y(n * ldy, -7.0f);
          std::vector<float> ref(n * ldy, -7.0f);
          MatMul(x.data(), n, ldx, w, y.data(), ldy, pool, ws);
          reference::MatMul(x.data(), n, ldx, w, ref.data(), ldy);
          const std::string what = std::string(DTypeName(dtype)) + " [" + std::to_string(r) + ", " +
                                   std::to_string(cols) + "] n " + std::to_string(n);
          ExpectMatMulClose(x.data(), n, ldx, w, y.data(), ldy, ref.data(), what.c_str());
          for (std::size_t t = 0; t < n; ++t) {
            for (std::size_t j = r; j < ldy; ++j) ASSERT_EQ(y[t * ldy + j], -7.0f) << what;
          }
        }
      }
    }
  }
}

TEST_P(MatMulTest, QuantizedOutputsMixedWithFloatOnes) {
  // q, k and v projections of different dtypes in one MatMulMany call, both regimes.
  Philox rng(77);
  ThreadPool pool(3);
  Workspace ws;
  const std::size_t K = 512;
  const OwnedMatrix a = RandomMatrix(rng, DType::kQ4_K, 33, K);
  const OwnedMatrix b = RandomMatrix(rng, DType::kBF16, 9, K);
  const OwnedMatrix c = RandomMatrix(rng, DType::kQ8_0, 70, K);
  const OwnedMatrix e = RandomMatrix(rng, DType::kQ6_K, 3, K);
  const WeightMatrix wa = a.view(), wb = b.view(), wc = c.view(), we = e.view();
  for (std::size_t n : {1, 3, 13}) {
    const std::vector<float> x = RandomVector(rng, n * K);
    std::vector<float> ya(n * 33), yb(n * 9), yc(n * 70), ye(n * 3);
    const MatMulOutput outs[] = {
        {&wa, ya.data(), 33}, {&wb, yb.data(), 9}, {&wc, yc.data(), 70}, {&we, ye.data(), 3}};
    MatMulMany(x.data(), n, K, outs, pool, ws);
    std::vector<float> ra(n * 33), rb(n * 9), rc(n * 70), re(n * 3);
    reference::MatMul(x.data(), n, K, wa, ra.data(), 33);
    reference::MatMul(x.data(), n, K, wb, rb.data(), 9);
    reference::MatMul(x.data(), n, K, wc, rc.data(), 70);
    reference::MatMul(x.data(), n, K, we, re.data(), 3);
    ExpectMatMulClose(x.data(), n, K, wa, ya.data(), 33, ra.data(), "Q4_K");
    ExpectMatMulClose(x.data(), n, K, wb, yb.data(), 9, rb.data(), "BF16");
    ExpectMatMulClose(x.data(), n, K, wc, yc.data(), 70, rc.data(), "Q8_0");
    ExpectMatMulClose(x.data(), n, K, we, ye.data(), 3, re.data(), "Q6_K");
  }
}

TEST_P(MatMulTest, ManyOutputsInOneLoop) {
  Philox rng(99);
  Workspace ws;
  for (std::size_t threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (std::size_t n : {1, 4, 11}) {
      const std::size_t K = 48;
      const OwnedMatrix a = RandomMatrix(rng, DType::kBF16, 70, K);
      const OwnedMatrix b = RandomMatrix(rng, DType::kF16, 9, K);
      const OwnedMatrix c = RandomMatrix(rng, DType::kF32, 33, K);
      const WeightMatrix wa = a.view(), wb = b.view(), wc = c.view();
      const std::vector<float> x = RandomVector(rng, n * K);
      std::vector<float> ya(n * 70), yb(n * 9), yc(n * 40);
      const MatMulOutput outs[] = {{&wa, ya.data(), 70}, {&wb, yb.data(), 9}, {&wc, yc.data(), 40}};
      MatMulMany(x.data(), n, K, outs, pool, ws);
      std::vector<float> ra(n * 70), rb(n * 9), rc(n * 40);
      reference::MatMul(x.data(), n, K, wa, ra.data(), 70);
      reference::MatMul(x.data(), n, K, wb, rb.data(), 9);
      reference::MatMul(x.data(), n, K, wc, rc.data(), 40);
      ExpectMatMulClose(x.data(), n, K, wa, ya.data(), 70, ra.data(), "a");
      ExpectMatMulClose(x.data(), n, K, wb, yb.data(), 9, rb.data(), "b");
      ExpectMatMulClose(x.data(), n, K, wc, yc.data(), 40, rc.data(), "c");
    }
  }
}

TEST_P(MatMulTest, LargeValuesDoNotOverflowF16Range) {
  // Activations beyond the f16 range (Gemma's exceed 65504) must stay exact in f32.
  Philox rng(5);
  ThreadPool pool(2);
  Workspace ws;
  const OwnedMatrix m = RandomMatrix(rng, DType::kF16, 12, 40);
  const WeightMatrix w = m.view();
  for (std::size_t n : {1, 16}) {
    const std::vector<float> x = RandomVector(rng, n * 40, -1e6f, 1e6f);
    std::vector<float> y(n * 12), ref(n * 12);
    MatMul(x.data(), n, 40, w, y.data(), 12, pool, ws);
    reference::MatMul(x.data(), n, 40, w, ref.data(), 12);
    ExpectMatMulClose(x.data(), n, 40, w, y.data(), 12, ref.data(), "large");
  }
}

TEST_P(MatMulTest, GemmF32BothLayoutsWithAccumulation) {
  Philox rng(7);
  Workspace ws;
  const std::size_t sizes[][3] = {{1, 1, 1}, {6, 64, 16}, {7, 65, 17}, {13, 3, 130}, {32, 256, 40}};
  for (const auto& s : sizes) {
    const std::size_t M = s[0], N = s[1], K = s[2];
    for (bool kn : {false, true}) {
      for (bool acc : {false, true}) {
        const std::size_t lda = K + 1, ldc = N + 5;
        const std::size_t ldb = kn ? N + 2 : K + 2;
        const std::vector<float> a = RandomVector(rng, M * lda);
        const std::vector<float> b = RandomVector(rng, (kn ? K : N) * ldb);
        std::vector<float> c = RandomVector(rng, M * ldc);
        std::vector<float> ref = c;
        GemmF32(a.data(), lda, M, b.data(), ldb, kn, K, N, c.data(), ldc, acc, ws);
        reference::GemmF32(a.data(), lda, M, b.data(), ldb, kn, K, N, ref.data(), ldc, acc);
        for (std::size_t m = 0; m < M; ++m) {
          for (std::size_t j = 0; j < ldc; ++j) {
            ASSERT_NEAR(c[m * ldc + j], ref[m * ldc + j], 1e-5 * (K + 1))
                << "M " << M << " N " << N << " K " << K << " kn " << kn << " acc " << acc << " at "
                << m << ", " << j;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace fgnet::cpu
