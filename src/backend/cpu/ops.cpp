// SIMD elementwise and row-wise kernels (see ops.h). Compiled once per Highway target.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backend/cpu/ops.cpp"
#include <cmath>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// Per-target code below.
#include "backend/cpu/gemm-inl.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/quant-inl.h"
#include "backend/cpu/vec-inl.h"
#include "util/status.h"

HWY_BEFORE_NAMESPACE();
namespace fgnet::cpu::HWY_NAMESPACE {

HWY_INLINE float InvRms(const float* x, std::size_t dim, float eps) {
  const float mean = SumOfSquares(x, dim) / static_cast<float>(dim);
  return 1.0f / std::sqrt(mean + eps);
}

void RMSNormImpl(const float* x, std::size_t rows, std::size_t dim, const float* scale, float eps,
                 float* y) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    const float inv = InvRms(xr, dim, eps);
    const VF vinv = hn::Set(d, inv);
    std::size_t i = 0;
    for (; i + L <= dim; i += L) {
      hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(d, xr + i), vinv), hn::LoadU(d, scale + i)), d, yr + i);
    }
    for (; i < dim; ++i) yr[i] = (xr[i] * inv) * scale[i];
  }
}

void RMSNormAddToImpl(const float* x, std::size_t rows, std::size_t dim, const float* scale,
                      float eps, float* residual) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = residual + r * dim;
    const float inv = InvRms(xr, dim, eps);
    const VF vinv = hn::Set(d, inv);
    std::size_t i = 0;
    for (; i + L <= dim; i += L) {
      const VF normed = hn::Mul(hn::Mul(hn::LoadU(d, xr + i), vinv), hn::LoadU(d, scale + i));
      hn::StoreU(hn::Add(hn::LoadU(d, yr + i), normed), d, yr + i);
    }
    for (; i < dim; ++i) yr[i] += (xr[i] * inv) * scale[i];
  }
}

void RoPEImpl(float* x, std::size_t rows, std::size_t heads, std::size_t head_dim, const float* cos,
              const float* sin) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  const std::size_t half = head_dim / 2;
  for (std::size_t r = 0; r < rows; ++r) {
    const float* c = cos + r * half;
    const float* s = sin + r * half;
    for (std::size_t h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * head_dim;
      std::size_t i = 0;
      // Products and sums rounded separately (no FMA), as x * cos + rotate_half(x) * sin.
      for (; i + L <= half; i += L) {
        const VF x1 = hn::LoadU(d, v + i);
        const VF x2 = hn::LoadU(d, v + half + i);
        const VF vc = hn::LoadU(d, c + i);
        const VF vs = hn::LoadU(d, s + i);
        hn::StoreU(hn::Sub(hn::Mul(x1, vc), hn::Mul(x2, vs)), d, v + i);
        hn::StoreU(hn::Add(hn::Mul(x2, vc), hn::Mul(x1, vs)), d, v + half + i);
      }
      for (; i < half; ++i) {
        const float x1 = v[i];
        const float x2 = v[half + i];
        const float a = x1 * c[i];
        const float b = x2 * s[i];
        const float e = x2 * c[i];
        const float f = x1 * s[i];
        v[i] = a - b;
        v[half + i] = e + f;
      }
    }
  }
}

void GeluTanhMulImpl(const float* gate, const float* up, std::size_t n, float* out) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  std::size_t i = 0;
  for (; i + L <= n; i += L) {
    hn::StoreU(hn::Mul(GeluTanh(d, hn::LoadU(d, gate + i)), hn::LoadU(d, up + i)), d, out + i);
  }
  if (i < n) {
    // Tail through a full vector so it gets the same arithmetic as the body.
    HWY_ALIGN float g[hn::MaxLanes(DF())] = {};
    HWY_ALIGN float u[hn::MaxLanes(DF())] = {};
    const std::size_t rem = n - i;
    std::memcpy(g, gate + i, rem * sizeof(float));
    std::memcpy(u, up + i, rem * sizeof(float));
    hn::Store(hn::Mul(GeluTanh(d, hn::Load(d, g)), hn::Load(d, u)), d, g);
    std::memcpy(out + i, g, rem * sizeof(float));
  }
}

void SoftmaxImpl(float* x, std::size_t n) { SoftmaxRow(x, n); }

void SoftcapImpl(float* x, std::size_t n, float cap) {
  TransformInPlace(x, n, 0.0f, [cap](DF d, VF v) {
    const VF vc = hn::Set(d, cap);
    return hn::Mul(hn::Tanh(d, hn::Div(v, vc)), vc);
  });
}

void EmbedRowsImpl(const WeightMatrix* table, const std::int32_t* ids, std::size_t n, float scale,
                   float* out) {
  const std::size_t cols = table->cols;
  for (std::size_t t = 0; t < n; ++t) {
    const std::size_t row = static_cast<std::size_t>(ids[t]) * cols;
    float* dst = out + t * cols;
    if (IsQuantized(table->dtype)) {
      // Only this row is decoded.
      const auto* base = static_cast<const std::uint8_t*>(table->data) +
                         static_cast<std::size_t>(ids[t]) * DTypeRowBytes(table->dtype, cols);
      WithDecoder(table->dtype, [&]<class Q>() { DequantRowScaled<Q>(base, cols, scale, dst); });
      continue;
    }
    switch (table->dtype) {
      case DType::kF32:
        WidenRow(static_cast<const float*>(table->data) + row, cols, scale, dst);
        break;
      case DType::kBF16:
        WidenRow(static_cast<const hwy::bfloat16_t*>(table->data) + row, cols, scale, dst);
        break;
      case DType::kF16:
        WidenRow(static_cast<const hwy::float16_t*>(table->data) + row, cols, scale, dst);
        break;
      default:
        break;
    }
  }
}

std::int64_t ActiveTargetImpl() { return HWY_TARGET; }

float DotImpl(const float* a, const float* b, std::size_t n) { return Dot1(a, b, n); }

}  // namespace fgnet::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace fgnet::cpu {

HWY_EXPORT(RMSNormImpl);
HWY_EXPORT(RMSNormAddToImpl);
HWY_EXPORT(RoPEImpl);
HWY_EXPORT(GeluTanhMulImpl);
HWY_EXPORT(SoftmaxImpl);
HWY_EXPORT(SoftcapImpl);
HWY_EXPORT(EmbedRowsImpl);
HWY_EXPORT(DotImpl);
HWY_EXPORT(ActiveTargetImpl);

std::int64_t ActiveTarget() { return HWY_DYNAMIC_DISPATCH(ActiveTargetImpl)(); }
const char* ActiveTargetName() { return hwy::TargetName(ActiveTarget()); }

void RMSNorm(const float* x, std::size_t rows, std::size_t dim, const float* scale, float eps,
             float* y) {
  HWY_DYNAMIC_DISPATCH(RMSNormImpl)(x, rows, dim, scale, eps, y);
}

void RMSNormAddTo(const float* x, std::size_t rows, std::size_t dim, const float* scale, float eps,
                  float* residual) {
  HWY_DYNAMIC_DISPATCH(RMSNormAddToImpl)(x, rows, dim, scale, eps, residual);
}

void RoPE(float* x, std::size_t rows, std::size_t heads, std::size_t head_dim, const float* cos,
          const float* sin) {
  FGNET_CHECK_EQ(head_dim % 2, 0u);
  HWY_DYNAMIC_DISPATCH(RoPEImpl)(x, rows, heads, head_dim, cos, sin);
}

void RopeInvFreq(double theta, double scaling, std::size_t head_dim, float* inv_freq) {
  const float dim = static_cast<float>(head_dim);
  const float base = static_cast<float>(theta);
  for (std::size_t i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / dim;
    const float power = static_cast<float>(std::pow(static_cast<double>(base), exponent));
    inv_freq[i] = (1.0f / power) / static_cast<float>(scaling);
  }
}

void RopeTable(const float* inv_freq, std::size_t half, std::int64_t first_pos, std::size_t n,
               float* cos, float* sin) {
  for (std::size_t t = 0; t < n; ++t) {
    const float pos = static_cast<float>(first_pos + static_cast<std::int64_t>(t));
    for (std::size_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(pos * inv_freq[i]);
      cos[t * half + i] = static_cast<float>(std::cos(angle));
      sin[t * half + i] = static_cast<float>(std::sin(angle));
    }
  }
}

void GeluTanhMul(const float* gate, const float* up, std::size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(GeluTanhMulImpl)(gate, up, n, out);
}

void Softmax(float* x, std::size_t n) { HWY_DYNAMIC_DISPATCH(SoftmaxImpl)(x, n); }

void Softcap(float* x, std::size_t n, float cap) {
  FGNET_CHECK_GT(cap, 0.0f);
  HWY_DYNAMIC_DISPATCH(SoftcapImpl)(x, n, cap);
}

void EmbedRows(const WeightMatrix& table, std::span<const std::int32_t> ids, float scale,
               float* out) {
  FGNET_CHECK_EQ(table.cols % DTypeBlockElements(table.dtype), 0u);
  HWY_DYNAMIC_DISPATCH(EmbedRowsImpl)(&table, ids.data(), ids.size(), scale, out);
}

float Dot(const float* a, const float* b, std::size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotImpl)(a, b, n);
}

}  // namespace fgnet::cpu
#endif  // HWY_ONCE
