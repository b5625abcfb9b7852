// Per-target GEMM building blocks shared by matmul.cpp and attention.cpp: a register-blocked
// f32 micro-kernel over packed panels, the packing routines, and weight-row loaders that widen
// BF16 / F16 exactly to f32. Included once per Highway target (foreach_target.h), hence the
// toggling include guard.

#if defined(FGNET_BACKEND_CPU_GEMM_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FGNET_BACKEND_CPU_GEMM_INL_H_
#undef FGNET_BACKEND_CPU_GEMM_INL_H_
#else
#define FGNET_BACKEND_CPU_GEMM_INL_H_
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "tensor/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace fgnet::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Micro-kernel shape: kMR rows of A (tokens) by kNV vectors of output columns. The accumulators
// (kMR * kNV), the kNV panel vectors and one broadcast must fit the register file: 32 registers
// with AVX-512, 16 otherwise.
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
inline constexpr std::size_t kMR = 6;
inline constexpr std::size_t kNV = 4;
#elif HWY_TARGET == HWY_SCALAR
inline constexpr std::size_t kMR = 4;
inline constexpr std::size_t kNV = 4;
#else
inline constexpr std::size_t kMR = 6;
inline constexpr std::size_t kNV = 2;
#endif

// Columns of one packed panel.
HWY_INLINE std::size_t PanelWidth() { return kNV * hn::Lanes(DF()); }

// ---- Widening loads of weight rows ----
// One f32 vector from Lanes(d) consecutive weights.
HWY_INLINE VF LoadWidened(DF d, const float* HWY_RESTRICT p) { return hn::LoadU(d, p); }
HWY_INLINE VF LoadWidened(DF d, const hwy::bfloat16_t* HWY_RESTRICT p) {
  const hn::Rebind<hwy::bfloat16_t, DF> dbf;
  return hn::PromoteTo(d, hn::LoadU(dbf, p));
}
HWY_INLINE VF LoadWidened(DF d, const hwy::float16_t* HWY_RESTRICT p) {
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(d, hn::LoadU(dh, p));
}
HWY_INLINE float WidenScalar(float v) { return v; }
HWY_INLINE float WidenScalar(hwy::bfloat16_t v) { return BF16ToF32(v.bits); }
HWY_INLINE float WidenScalar(hwy::float16_t v) { return F16ToF32(v.bits); }

// dst[0, n) = f32(src[0, n)) * scale.
template <typename T>
HWY_INLINE void WidenRow(const T* HWY_RESTRICT src, std::size_t n, float scale,
                         float* HWY_RESTRICT dst) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  const VF vs = hn::Set(d, scale);
  std::size_t i = 0;
  for (; i + L <= n; i += L) hn::StoreU(hn::Mul(LoadWidened(d, src + i), vs), d, dst + i);
  for (; i < n; ++i) dst[i] = WidenScalar(src[i]) * scale;
}

// ---- Packing ----
// panel[k, r] = f32(rows[r * ld + k]) for r < nrows, k < K; zero for nrows <= r < PanelWidth().
// (B given transposed: the rows of a weight matrix, or keys.)
// BF16 / F16 rows are first widened one after the other into `scratch` (PanelWidth() * K
// floats): the panel's rows are adjacent in memory, so this reads one sequential stream, which
// the hardware prefetcher follows at full bandwidth (reading the rows tile by tile, one stream
// per row, ran at a fifth of it). F32 rows are read in place (scratch unused, may be null).
// The transpose then works on 4 x 4 blocks of 128-bit vectors.
template <typename T>
HWY_NOINLINE void PackTransposed(const T* HWY_RESTRICT rows, std::size_t ld, std::size_t nrows,
                                 std::size_t K, float* HWY_RESTRICT panel,
                                 float* HWY_RESTRICT scratch) {
  const std::size_t nr = PanelWidth();
  const float* src;
  std::size_t src_ld;
  if constexpr (std::is_same_v<T, float>) {
    src = rows;
    src_ld = ld;
  } else {
    for (std::size_t r = 0; r < nrows; ++r) WidenRow(rows + r * ld, K, 1.0f, scratch + r * K);
    src = scratch;
    src_ld = K;
  }
  std::size_t k = 0;
#if HWY_TARGET != HWY_SCALAR
  const std::size_t full = nrows / 4 * 4;  // rows handled by whole 4 x 4 blocks
  const hn::CappedTag<float, 4> d4;        // 128-bit vectors
  for (; k + 4 <= K; k += 4) {
    float* o = panel + k * nr;
    for (std::size_t r = 0; r < full; r += 4) {
      const float* t = src + r * src_ld + k;
      const auto a = hn::LoadU(d4, t);
      const auto b = hn::LoadU(d4, t + src_ld);
      const auto c = hn::LoadU(d4, t + 2 * src_ld);
      const auto e = hn::LoadU(d4, t + 3 * src_ld);
      const auto ab_lo = hn::InterleaveLower(d4, a, b);  // a0 b0 a1 b1
      const auto ce_lo = hn::InterleaveLower(d4, c, e);  // c0 e0 c1 e1
      const auto ab_hi = hn::InterleaveUpper(d4, a, b);  // a2 b2 a3 b3
      const auto ce_hi = hn::InterleaveUpper(d4, c, e);  // c2 e2 c3 e3
      hn::StoreU(hn::ConcatLowerLower(d4, ce_lo, ab_lo), d4, o + r);
      hn::StoreU(hn::ConcatUpperUpper(d4, ce_lo, ab_lo), d4, o + nr + r);
      hn::StoreU(hn::ConcatLowerLower(d4, ce_hi, ab_hi), d4, o + 2 * nr + r);
      hn::StoreU(hn::ConcatUpperUpper(d4, ce_hi, ab_hi), d4, o + 3 * nr + r);
    }
    for (std::size_t kk = k; kk < k + 4; ++kk) {
      for (std::size_t r = full; r < nrows; ++r) panel[kk * nr + r] = src[r * src_ld + kk];
      for (std::size_t r = nrows; r < nr; ++r) panel[kk * nr + r] = 0.0f;
    }
  }
#endif
  for (; k < K; ++k) {
    for (std::size_t r = 0; r < nrows; ++r) panel[k * nr + r] = src[r * src_ld + k];
    for (std::size_t r = nrows; r < nr; ++r) panel[k * nr + r] = 0.0f;
  }
}

// panel[k, j] = b[k * ldb + j] for j < ncols, k < K; zero for ncols <= j < PanelWidth().
// (B given as a row-major [K, N] matrix, e.g. values.)
HWY_INLINE void PackKN(const float* HWY_RESTRICT b, std::size_t ldb, std::size_t ncols,
                       std::size_t K, float* HWY_RESTRICT panel) {
  const std::size_t nr = PanelWidth();
  for (std::size_t k = 0; k < K; ++k) {
    std::memcpy(panel + k * nr, b + k * ldb, ncols * sizeof(float));
    if (ncols < nr) std::memset(panel + k * nr + ncols, 0, (nr - ncols) * sizeof(float));
  }
}

// ---- Micro-kernel ----
// C[m, j] (+)= sum_k A[m, k] * panel[k, j] for m < MR, j < ncols (<= PanelWidth()).
template <std::size_t MR>
HWY_INLINE void MicroKernel(const float* HWY_RESTRICT a, std::size_t lda,
                            const float* HWY_RESTRICT panel, std::size_t K, float* c,
                            std::size_t ldc, std::size_t ncols, bool accumulate) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  const std::size_t nr = kNV * L;
  VF acc[MR][kNV];
  for (std::size_t r = 0; r < MR; ++r) {
    for (std::size_t v = 0; v < kNV; ++v) acc[r][v] = hn::Zero(d);
  }
  const float* HWY_RESTRICT arow[MR];
  for (std::size_t r = 0; r < MR; ++r) arow[r] = a + r * lda;
  for (std::size_t k = 0; k < K; ++k) {
    const float* HWY_RESTRICT p = panel + k * nr;
    VF b[kNV];
    for (std::size_t v = 0; v < kNV; ++v) b[v] = hn::Load(d, p + v * L);
    for (std::size_t r = 0; r < MR; ++r) {
      const VF av = hn::Set(d, arow[r][k]);
      for (std::size_t v = 0; v < kNV; ++v) acc[r][v] = hn::MulAdd(av, b[v], acc[r][v]);
    }
  }
  if (ncols == nr) {
    for (std::size_t r = 0; r < MR; ++r) {
      for (std::size_t v = 0; v < kNV; ++v) {
        float* cp = c + r * ldc + v * L;
        VF sum = acc[r][v];
        if (accumulate) sum = hn::Add(hn::LoadU(d, cp), sum);
        hn::StoreU(sum, d, cp);
      }
    }
    return;
  }
  HWY_ALIGN float tmp[kNV * hn::MaxLanes(DF())];
  for (std::size_t r = 0; r < MR; ++r) {
    for (std::size_t v = 0; v < kNV; ++v) hn::Store(acc[r][v], d, tmp + v * L);
    float* cr = c + r * ldc;
    for (std::size_t j = 0; j < ncols; ++j) cr[j] = accumulate ? cr[j] + tmp[j] : tmp[j];
  }
}

template <std::size_t MR>
HWY_INLINE void MicroKernelTail(std::size_t rows, const float* a, std::size_t lda,
                                const float* panel, std::size_t K, float* c, std::size_t ldc,
                                std::size_t ncols, bool accumulate) {
  if constexpr (MR > 0) {
    if (rows == MR) {
      MicroKernel<MR>(a, lda, panel, K, c, ldc, ncols, accumulate);
    } else {
      MicroKernelTail<MR - 1>(rows, a, lda, panel, K, c, ldc, ncols, accumulate);
    }
  }
}

// C[m, j] (+)= sum_k A[m, k] * panel[k, j] for m < M, j < ncols (<= PanelWidth()).
inline HWY_NOINLINE void PanelGemm(const float* a, std::size_t lda, std::size_t M,
                                   const float* panel, std::size_t K, float* c, std::size_t ldc,
                                   std::size_t ncols, bool accumulate) {
  std::size_t m = 0;
  for (; m + kMR <= M; m += kMR) {
    MicroKernel<kMR>(a + m * lda, lda, panel, K, c + m * ldc, ldc, ncols, accumulate);
  }
  if (m < M) {
    MicroKernelTail<kMR - 1>(M - m, a + m * lda, lda, panel, K, c + m * ldc, ldc, ncols,
                             accumulate);
  }
}

// ---- Dot products of a weight row (the decode regime) ----
// out[g * ldo] = sum_k f32(w[k]) * x[g * ldx + k] for g < G: one row against G tokens, each
// loaded weight vector used G times.
template <std::size_t G, typename T>
HWY_INLINE void DotTokens(const T* HWY_RESTRICT w, const float* HWY_RESTRICT x, std::size_t ldx,
                          std::size_t K, float* HWY_RESTRICT out, std::size_t ldo) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  VF acc0[G];
  VF acc1[G];
  for (std::size_t g = 0; g < G; ++g) {
    acc0[g] = hn::Zero(d);
    acc1[g] = hn::Zero(d);
  }
  std::size_t k = 0;
  for (; k + 2 * L <= K; k += 2 * L) {
    const VF w0 = LoadWidened(d, w + k);
    const VF w1 = LoadWidened(d, w + k + L);
    for (std::size_t g = 0; g < G; ++g) {
      acc0[g] = hn::MulAdd(w0, hn::LoadU(d, x + g * ldx + k), acc0[g]);
      acc1[g] = hn::MulAdd(w1, hn::LoadU(d, x + g * ldx + k + L), acc1[g]);
    }
  }
  for (; k + L <= K; k += L) {
    const VF w0 = LoadWidened(d, w + k);
    for (std::size_t g = 0; g < G; ++g) {
      acc0[g] = hn::MulAdd(w0, hn::LoadU(d, x + g * ldx + k), acc0[g]);
    }
  }
  for (std::size_t g = 0; g < G; ++g) {
    float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(acc0[g], acc1[g])));
    for (std::size_t kk = k; kk < K; ++kk) sum += WidenScalar(w[kk]) * x[g * ldx + kk];
    out[g * ldo] = sum;
  }
}

// *out_a = wa . x and *out_b = wb . x for two rows from distant parts of a matrix: reading them
// together keeps two sequential streams in flight, which measured up to 15% more bandwidth than
// one when the memory system has bandwidth to spare.
template <typename T>
HWY_INLINE void DotRowPair(const T* HWY_RESTRICT wa, const T* HWY_RESTRICT wb,
                           const float* HWY_RESTRICT x, std::size_t K, float* out_a, float* out_b) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), b0 = hn::Zero(d), b1 = hn::Zero(d);
  std::size_t k = 0;
  for (; k + 2 * L <= K; k += 2 * L) {
    const VF x0 = hn::LoadU(d, x + k);
    const VF x1 = hn::LoadU(d, x + k + L);
    a0 = hn::MulAdd(LoadWidened(d, wa + k), x0, a0);
    a1 = hn::MulAdd(LoadWidened(d, wa + k + L), x1, a1);
    b0 = hn::MulAdd(LoadWidened(d, wb + k), x0, b0);
    b1 = hn::MulAdd(LoadWidened(d, wb + k + L), x1, b1);
  }
  for (; k + L <= K; k += L) {
    const VF x0 = hn::LoadU(d, x + k);
    a0 = hn::MulAdd(LoadWidened(d, wa + k), x0, a0);
    b0 = hn::MulAdd(LoadWidened(d, wb + k), x0, b0);
  }
  float sa = hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1)));
  float sb = hn::GetLane(hn::SumOfLanes(d, hn::Add(b0, b1)));
  for (; k < K; ++k) {
    sa += WidenScalar(wa[k]) * x[k];
    sb += WidenScalar(wb[k]) * x[k];
  }
  *out_a = sa;
  *out_b = sb;
}

// sum_k f32(w[k]) * x[k].
template <typename T>
HWY_INLINE float Dot1(const T* HWY_RESTRICT w, const float* HWY_RESTRICT x, std::size_t K) {
  float out;
  DotTokens<1>(w, x, 0, K, &out, 0);
  return out;
}

}  // namespace fgnet::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // FGNET_BACKEND_CPU_GEMM_INL_H_
