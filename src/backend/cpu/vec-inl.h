// Per-target vector helpers shared by ops.cpp and attention.cpp: reductions, in-place
// transforms with tail handling, softmax, GELU. Included once per Highway target, hence the
// toggling include guard.

#if defined(FGNET_BACKEND_CPU_VEC_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FGNET_BACKEND_CPU_VEC_INL_H_
#undef FGNET_BACKEND_CPU_VEC_INL_H_
#else
#define FGNET_BACKEND_CPU_VEC_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
// DF, VF, Dot1.
#include "backend/cpu/gemm-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fgnet::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sum of squares of x[0, n), in f32 with several lane-wise accumulators.
HWY_INLINE float SumOfSquares(const float* HWY_RESTRICT x, std::size_t n) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  VF s0 = hn::Zero(d);
  VF s1 = hn::Zero(d);
  std::size_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    const VF a = hn::LoadU(d, x + i);
    const VF b = hn::LoadU(d, x + i + L);
    s0 = hn::MulAdd(a, a, s0);
    s1 = hn::MulAdd(b, b, s1);
  }
  for (; i + L <= n; i += L) {
    const VF a = hn::LoadU(d, x + i);
    s0 = hn::MulAdd(a, a, s0);
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(s0, s1)));
  for (; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

// Applies f to every full vector of x[0, n) and, via a padded copy, to the tail.
template <class F>
HWY_INLINE void TransformInPlace(float* x, std::size_t n, float pad, const F& f) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  std::size_t i = 0;
  for (; i + L <= n; i += L) hn::StoreU(f(d, hn::LoadU(d, x + i)), d, x + i);
  if (i < n) {
    HWY_ALIGN float buf[hn::MaxLanes(DF())];
    for (std::size_t j = 0; j < L; ++j) buf[j] = pad;
    std::memcpy(buf, x + i, (n - i) * sizeof(float));
    hn::Store(f(d, hn::Load(d, buf)), d, buf);
    std::memcpy(x + i, buf, (n - i) * sizeof(float));
  }
}

HWY_INLINE float MaxOf(const float* x, std::size_t n) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  std::size_t i = 0;
  VF m = hn::Set(d, -HUGE_VALF);
  for (; i + L <= n; i += L) m = hn::Max(m, hn::LoadU(d, x + i));
  float mx = hn::GetLane(hn::MaxOfLanes(d, m));
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  return mx;
}

HWY_INLINE float SumOf(const float* x, std::size_t n) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  std::size_t i = 0;
  VF s = hn::Zero(d);
  for (; i + L <= n; i += L) s = hn::Add(s, hn::LoadU(d, x + i));
  float sum = hn::GetLane(hn::SumOfLanes(d, s));
  for (; i < n; ++i) sum += x[i];
  return sum;
}

HWY_INLINE void SoftmaxRow(float* x, std::size_t n) {
  if (n == 0) return;
  const float mx = MaxOf(x, n);
  TransformInPlace(x, n, 0.0f, [mx](DF d, VF v) { return hn::Exp(d, hn::Sub(v, hn::Set(d, mx))); });
  const float inv = 1.0f / SumOf(x, n);
  TransformInPlace(x, n, 0.0f, [inv](DF d, VF v) { return hn::Mul(v, hn::Set(d, inv)); });
}

// s = softmax(softcap(s * scale)) over s[0, n); softcap <= 0 means none.
HWY_INLINE void ScoresToProbs(float* s, std::size_t n, float scale, float softcap) {
  TransformInPlace(s, n, 0.0f, [scale](DF d, VF v) { return hn::Mul(v, hn::Set(d, scale)); });
  if (softcap > 0.0f) {
    TransformInPlace(s, n, 0.0f, [softcap](DF d, VF v) {
      const VF vc = hn::Set(d, softcap);
      return hn::Mul(hn::Tanh(d, hn::Div(v, vc)), vc);
    });
  }
  SoftmaxRow(s, n);
}

// s = exp(softcap(s * scale) - m) over s[0, n), where m is the largest transformed score;
// softcap <= 0 means none. Returns m and writes the sum of the exponentials to *sum.
HWY_INLINE float ScoresToExp(float* s, std::size_t n, float scale, float softcap, float* sum) {
  TransformInPlace(s, n, 0.0f, [scale](DF d, VF v) { return hn::Mul(v, hn::Set(d, scale)); });
  if (softcap > 0.0f) {
    TransformInPlace(s, n, 0.0f, [softcap](DF d, VF v) {
      const VF vc = hn::Set(d, softcap);
      return hn::Mul(hn::Tanh(d, hn::Div(v, vc)), vc);
    });
  }
  const float mx = MaxOf(s, n);
  TransformInPlace(s, n, 0.0f, [mx](DF d, VF v) { return hn::Exp(d, hn::Sub(v, hn::Set(d, mx))); });
  *sum = SumOf(s, n);
  return mx;
}

HWY_INLINE VF GeluTanh(DF d, VF x) {
  const VF kHalf = hn::Set(d, 0.5f);
  const VF kOne = hn::Set(d, 1.0f);
  const VF kBeta = hn::Set(d, 0.7978845608028654f);  // sqrt(2 / pi)
  const VF kKappa = hn::Set(d, 0.044715f);
  const VF x3 = hn::Mul(hn::Mul(x, x), x);
  const VF inner = hn::Mul(kBeta, hn::MulAdd(kKappa, x3, x));
  return hn::Mul(hn::Mul(kHalf, x), hn::Add(kOne, hn::Tanh(d, inner)));
}

}  // namespace fgnet::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // FGNET_BACKEND_CPU_VEC_INL_H_
