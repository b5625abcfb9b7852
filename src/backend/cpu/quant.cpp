#include "backend/cpu/quant.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/status.h"

namespace fgnet::cpu {
namespace {

constexpr float kHalfMax = 65504.0f;

// f32 -> f16 bits, clamped to the finite range (a scale never becomes inf).
std::uint16_t ToHalf(float f) { return F32ToF16(std::clamp(f, -kHalfMax, kHalfMax)); }
float RoundTripHalf(float f) { return HalfToFloat(ToHalf(f)); }

void StoreHalf(std::uint8_t* p, std::uint16_t h) { std::memcpy(p, &h, 2); }

// round(v) (halves away from zero) clamped to [lo, hi]; NaN gives lo (never an out-of-range
// float-to-int conversion). Rounds via truncation, which is exact here, rather than std::round,
// a library call on the baseline instruction set.
int ClampRound(float v, int lo, int hi) {
  if (!(v >= static_cast<float>(lo))) return lo;
  if (v > static_cast<float>(hi)) return hi;
  const int i = static_cast<int>(v);
  const float frac = v - static_cast<float>(i);  // exact: |v| is small
  return i + static_cast<int>(frac >= 0.5f) - static_cast<int>(frac <= -0.5f);  // branch-free
}

// ---- Dequantization ----

void DequantQ8_0(const std::uint8_t* b, float* y) {
  const float d = LoadHalf(b + q8_0::kD);
  const auto* qs = reinterpret_cast<const std::int8_t*>(b + q8_0::kQs);
  for (int i = 0; i < 32; ++i) y[i] = static_cast<float>(qs[i]) * d;
}

void DequantQ4_0(const std::uint8_t* b, float* y) {
  const float d = LoadHalf(b + q4_0::kD);
  const std::uint8_t* qs = b + q4_0::kQs;
  for (int i = 0; i < 16; ++i) {
    y[i] = static_cast<float>((qs[i] & 15) - 8) * d;
    y[i + 16] = static_cast<float>((qs[i] >> 4) - 8) * d;
  }
}

void DequantQ4_K(const std::uint8_t* b, float* y) {
  const float d = LoadHalf(b + q4_k::kD);
  const float dmin = LoadHalf(b + q4_k::kDmin);
  const std::uint8_t* qs = b + q4_k::kQs;
  for (int g = 0; g < 4; ++g) {
    int sc0, m0, sc1, m1;
    UnpackQ4KScaleMin(b + q4_k::kScales, 2 * g, &sc0, &m0);
    UnpackQ4KScaleMin(b + q4_k::kScales, 2 * g + 1, &sc1, &m1);
    const float d0 = d * static_cast<float>(sc0), min0 = dmin * static_cast<float>(m0);
    const float d1 = d * static_cast<float>(sc1), min1 = dmin * static_cast<float>(m1);
    for (int l = 0; l < 32; ++l) {
      const std::uint8_t q = qs[32 * g + l];
      y[64 * g + l] = d0 * static_cast<float>(q & 15) - min0;
      y[64 * g + 32 + l] = d1 * static_cast<float>(q >> 4) - min1;
    }
  }
}

void DequantQ6_K(const std::uint8_t* b, float* y) {
  const float d = LoadHalf(b + q6_k::kD);
  const auto* sc = reinterpret_cast<const std::int8_t*>(b + q6_k::kScales);
  for (int h = 0; h < 2; ++h) {
    const std::uint8_t* ql = b + q6_k::kQl + 64 * h;
    const std::uint8_t* qh = b + q6_k::kQh + 32 * h;
    const std::int8_t* s = sc + 8 * h;
    float* out = y + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = (ql[l] & 15) | ((qh[l] >> 0) & 3) << 4;
      const int q2 = (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4;
      const int q3 = (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4;
      const int q4 = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4;
      out[l] = (d * static_cast<float>(s[is])) * static_cast<float>(q1 - 32);
      out[l + 32] = (d * static_cast<float>(s[is + 2])) * static_cast<float>(q2 - 32);
      out[l + 64] = (d * static_cast<float>(s[is + 4])) * static_cast<float>(q3 - 32);
      out[l + 96] = (d * static_cast<float>(s[is + 6])) * static_cast<float>(q4 - 32);
    }
  }
}

// ---- Q8_0 and Q4_0: GGML's round-to-nearest ----

void QuantQ8_0(const float* x, std::uint8_t* b) {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = std::min(amax / 127.0f, kHalfMax);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreHalf(b + q8_0::kD, ToHalf(d));
  auto* qs = reinterpret_cast<std::int8_t*>(b + q8_0::kQs);
  for (int i = 0; i < 32; ++i) qs[i] = static_cast<std::int8_t>(ClampRound(x[i] * id, -127, 127));
}

void QuantQ4_0(const float* x, std::uint8_t* b) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < 32; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  const float d = std::clamp(max / -8.0f, -kHalfMax, kHalfMax);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreHalf(b + q4_0::kD, ToHalf(d));
  std::uint8_t* qs = b + q4_0::kQs;
  const auto nibble = [&](float v) {
    const float t = v * id + 8.5f;  // >= 0.5 up to rounding: floor is truncation
    if (!(t >= 0.0f)) return std::uint8_t{0};
    return static_cast<std::uint8_t>(t >= 15.0f ? 15 : static_cast<int>(t));
  };
  for (int i = 0; i < 16; ++i) {
    qs[i] = static_cast<std::uint8_t>(nibble(x[i]) | nibble(x[i + 16]) << 4);
  }
}

// ---- Least-squares helpers ----

// Fit of x ~ s * a - m over pairs (a_i, x_i) with m >= 0 (m = 0 when `with_min` is false).
// Returns false when the system is degenerate.
struct AffineSums {
  double n = 0, sa = 0, saa = 0, sx = 0, sax = 0;
  void Add(double a, double x) {
    n += 1;
    sa += a;
    saa += a * a;
    sx += x;
    sax += a * x;
  }
  bool Solve(bool with_min, float* s, float* m) const {
    if (with_min) {
      const double det = n * saa - sa * sa;
      if (det > 0) {
        const double ss = (n * sax - sa * sx) / det;
        const double mm = (sa * sax - saa * sx) / det;
        if (mm >= 0 && ss >= 0) {
          *s = static_cast<float>(ss);
          *m = static_cast<float>(mm);
          return true;
        }
      }
    }
    if (saa <= 0) return false;
    *s = static_cast<float>(sax / saa);
    *m = 0.0f;
    return true;
  }
};

// ---- Q4_K ----

// Rounds x to q in 0..15 for x ~ s * q - m; returns the squared error.
double AffineRound(const float* x, int n, float s, float m, std::uint8_t* q) {
  double err = 0;
  const float is = s > 0.0f ? 1.0f / s : 0.0f;
  for (int i = 0; i < n; ++i) {
    q[i] = static_cast<std::uint8_t>(s > 0.0f ? ClampRound((x[i] + m) * is, 0, 15) : 0);
    const double e = static_cast<double>(s * static_cast<float>(q[i]) - m) - x[i];
    err += e * e;
  }
  return err;
}

// The affine fit of one sub-block of 32 (see the header).
void FitSubBlockQ4K(const float* x, float* best_s, float* best_m) {
  constexpr int n = 32;
  float lo = 0.0f, hi = x[0];
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  *best_m = -lo;
  *best_s = 0.0f;
  if (!(hi > lo)) return;  // constant block: s = 0, m = -lo represents it exactly
  std::uint8_t q[n];
  double best = std::numeric_limits<double>::infinity();
  // Candidate steps: the full range over 15 levels, and slightly wider and narrower ones (a
  // narrower step clips the extremes but resolves the bulk better).
  for (int t = -2; t <= 3; ++t) {
    float s = (hi - lo) / (15.0f + 0.4f * static_cast<float>(t));
    float m = -lo;
    for (int iter = 0; iter < 2; ++iter) {
      const double err = AffineRound(x, n, s, m, q);
      if (err < best) {
        best = err;
        *best_s = s;
        *best_m = m;
      }
      AffineSums sums;
      for (int i = 0; i < n; ++i) sums.Add(q[i], x[i]);
      if (!sums.Solve(/*with_min=*/true, &s, &m)) break;
    }
  }
}

void QuantQ4_K(const float* x, std::uint8_t* b) {
  float s[8], m[8];
  float max_s = 0.0f, max_m = 0.0f;
  for (int j = 0; j < 8; ++j) {
    FitSubBlockQ4K(x + 32 * j, &s[j], &m[j]);
    max_s = std::max(max_s, s[j]);
    max_m = std::max(max_m, m[j]);
  }
  float d = RoundTripHalf(max_s / 63.0f);
  float dmin = RoundTripHalf(max_m / 63.0f);
  int sc[8], mq[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = d > 0.0f ? ClampRound(s[j] / d, 0, 63) : 0;
    mq[j] = dmin > 0.0f ? ClampRound(m[j] / dmin, 0, 63) : 0;
  }
  // Rounds every q against the stored scales; returns the squared error.
  std::uint8_t q[256], best_q[256];
  const auto round_all = [&](float dd, float dm) {
    double err = 0;
    for (int j = 0; j < 8; ++j) {
      err += AffineRound(x + 32 * j, 32, dd * static_cast<float>(sc[j]),
                         dm * static_cast<float>(mq[j]), q + 32 * j);
    }
    return err;
  };
  double best = round_all(d, dmin);
  std::memcpy(best_q, q, 256);
  float best_d = d, best_dmin = dmin;
  for (int iter = 0; iter < 2; ++iter) {
    // x ~ d * (sc q) - dmin * m over the whole super-block.
    double saa = 0, sab = 0, sbb = 0, sax = 0, sbx = 0;
    for (int i = 0; i < 256; ++i) {
      const int j = i / 32;  // sub-block
      const double a = static_cast<double>(sc[j]) * q[i];
      const double bb = mq[j];
      saa += a * a;
      sab += a * bb;
      sbb += bb * bb;
      sax += a * x[i];
      sbx += bb * x[i];
    }
    // Minimise sum (d a - e b - x)^2: [saa, -sab; sab, -sbb] [d, e] = [sax, sbx].
    const double det = sab * sab - saa * sbb;
    double nd = 0, ne = dmin;
    if (det != 0) {
      nd = (-sax * sbb + sab * sbx) / det;
      ne = (saa * sbx - sab * sax) / det;
    } else if (saa > 0 && sbb == 0) {  // no mins: d alone
      nd = sax / saa;
    } else {
      break;
    }
    if (!(nd >= 0) || !(ne >= 0)) break;
    d = RoundTripHalf(static_cast<float>(nd));
    dmin = RoundTripHalf(static_cast<float>(ne));
    const double err = round_all(d, dmin);
    if (!(err < best)) break;
    best = err;
    std::memcpy(best_q, q, 256);
    best_d = d;
    best_dmin = dmin;
  }
  StoreHalf(b + q4_k::kD, ToHalf(best_d));
  StoreHalf(b + q4_k::kDmin, ToHalf(best_dmin));
  PackQ4KScalesMins(sc, mq, b + q4_k::kScales);
  std::uint8_t* qs = b + q4_k::kQs;
  for (int g = 0; g < 4; ++g) {
    for (int l = 0; l < 32; ++l) {
      qs[32 * g + l] = static_cast<std::uint8_t>(best_q[64 * g + l] | best_q[64 * g + 32 + l] << 4);
    }
  }
}

// ---- Q6_K ----

// Rounds x to k in -32..31 for x ~ s * k; returns the squared error.
double SymmetricRound(const float* x, int n, float s, int* k) {
  double err = 0;
  const float is = s != 0.0f ? 1.0f / s : 0.0f;
  for (int i = 0; i < n; ++i) {
    k[i] = s != 0.0f ? ClampRound(x[i] * is, -32, 31) : 0;
    const double e = static_cast<double>(s * static_cast<float>(k[i])) - x[i];
    err += e * e;
  }
  return err;
}

float FitSubBlockQ6K(const float* x) {
  constexpr int n = 16;
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (amax == 0.0f) return 0.0f;
  int k[n];
  double best = std::numeric_limits<double>::infinity();
  float best_s = 0.0f;
  // The extreme value mapped to -32 (the longer side of the range) or a little past it (a finer
  // step that clips it), or to 31 or a little past it.
  constexpr float kDivisors[] = {-32.0f, -33.0f, -34.0f, -35.0f, -36.0f, 31.0f, 32.0f, 33.0f};
  for (const float divisor : kDivisors) {
    float s = max / divisor;
    for (int iter = 0; iter < 2; ++iter) {
      const double err = SymmetricRound(x, n, s, k);
      if (err < best) {
        best = err;
        best_s = s;
      }
      AffineSums sums;
      for (int i = 0; i < n; ++i) sums.Add(k[i], x[i]);
      float m = 0.0f;
      if (!sums.Solve(/*with_min=*/false, &s, &m)) break;
    }
  }
  return best_s;
}

void QuantQ6_K(const float* x, std::uint8_t* b) {
  float s[16];
  float amax = 0.0f;
  for (int j = 0; j < 16; ++j) {
    s[j] = FitSubBlockQ6K(x + 16 * j);
    amax = std::max(amax, std::fabs(s[j]));
  }
  float d = RoundTripHalf(amax / 127.0f);
  int sc[16];
  for (int j = 0; j < 16; ++j) sc[j] = d > 0.0f ? ClampRound(s[j] / d, -127, 127) : 0;
  int k[256], best_k[256];
  const auto round_all = [&](float dd) {
    double err = 0;
    for (int j = 0; j < 16; ++j) {
      err += SymmetricRound(x + 16 * j, 16, dd * static_cast<float>(sc[j]), k + 16 * j);
    }
    return err;
  };
  double best = round_all(d);
  std::memcpy(best_k, k, sizeof(k));
  float best_d = d;
  for (int iter = 0; iter < 2; ++iter) {
    double saa = 0, sax = 0;
    for (int i = 0; i < 256; ++i) {
      const int j = i / 16;  // sub-block
      const double a = static_cast<double>(sc[j]) * k[i];
      saa += a * a;
      sax += a * x[i];
    }
    if (saa <= 0) break;
    d = RoundTripHalf(static_cast<float>(sax / saa));
    const double err = round_all(d);
    if (!(err < best)) break;
    best = err;
    std::memcpy(best_k, k, sizeof(k));
    best_d = d;
  }
  StoreHalf(b + q6_k::kD, ToHalf(best_d));
  auto* scales = reinterpret_cast<std::int8_t*>(b + q6_k::kScales);
  for (int j = 0; j < 16; ++j) scales[j] = static_cast<std::int8_t>(sc[j]);
  std::uint8_t* ql = b + q6_k::kQl;
  std::uint8_t* qh = b + q6_k::kQh;
  for (int h = 0; h < 2; ++h) {
    const int* kk = best_k + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const int q1 = kk[l] + 32, q2 = kk[l + 32] + 32, q3 = kk[l + 64] + 32, q4 = kk[l + 96] + 32;
      ql[64 * h + l] = static_cast<std::uint8_t>((q1 & 15) | (q3 & 15) << 4);
      ql[64 * h + l + 32] = static_cast<std::uint8_t>((q2 & 15) | (q4 & 15) << 4);
      qh[32 * h + l] =
          static_cast<std::uint8_t>((q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
    }
  }
}

}  // namespace

void PackQ4KScalesMins(const int* sc, const int* m, std::uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < 4; ++j) {
    FGNET_CHECK(sc[j] >= 0 && sc[j] < 64 && m[j] >= 0 && m[j] < 64);
    scales[j] = static_cast<std::uint8_t>(sc[j]);
    scales[j + 4] = static_cast<std::uint8_t>(m[j]);
  }
  for (int j = 4; j < 8; ++j) {
    FGNET_CHECK(sc[j] >= 0 && sc[j] < 64 && m[j] >= 0 && m[j] < 64);
    scales[j + 4] = static_cast<std::uint8_t>((sc[j] & 15) | (m[j] & 15) << 4);
    scales[j - 4] = static_cast<std::uint8_t>(scales[j - 4] | (sc[j] >> 4) << 6);
    scales[j] = static_cast<std::uint8_t>(scales[j] | (m[j] >> 4) << 6);
  }
}

void DequantizeRow(DType type, const void* src, std::size_t n, float* dst) {
  const std::size_t block = DTypeBlockElements(type);
  FGNET_CHECK_EQ(n % block, 0u);
  const auto* bytes = static_cast<const std::uint8_t*>(src);
  const std::size_t stride = DTypeBlockBytes(type);
  switch (type) {
    case DType::kF32:
      if (n > 0) std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kBF16:
    case DType::kF16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = type == DType::kBF16 ? BF16ToF32(h) : F16ToF32(h);
      }
      return;
    case DType::kQ8_0:
      for (std::size_t i = 0; i < n / block; ++i) DequantQ8_0(bytes + i * stride, dst + i * block);
      return;
    case DType::kQ4_0:
      for (std::size_t i = 0; i < n / block; ++i) DequantQ4_0(bytes + i * stride, dst + i * block);
      return;
    case DType::kQ4_K:
      for (std::size_t i = 0; i < n / block; ++i) DequantQ4_K(bytes + i * stride, dst + i * block);
      return;
    case DType::kQ6_K:
      for (std::size_t i = 0; i < n / block; ++i) DequantQ6_K(bytes + i * stride, dst + i * block);
      return;
  }
}

void QuantizeRow(DType type, const float* src, std::size_t n, void* dst) {
  const std::size_t block = DTypeBlockElements(type);
  FGNET_CHECK_EQ(n % block, 0u);
  auto* bytes = static_cast<std::uint8_t*>(dst);
  const std::size_t stride = DTypeBlockBytes(type);
  switch (type) {
    case DType::kF32:
      if (n > 0) std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kBF16:
    case DType::kF16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = type == DType::kBF16 ? F32ToBF16(src[i]) : F32ToF16(src[i]);
        std::memcpy(bytes + 2 * i, &h, 2);
      }
      return;
    case DType::kQ8_0:
      for (std::size_t i = 0; i < n / block; ++i) QuantQ8_0(src + i * block, bytes + i * stride);
      return;
    case DType::kQ4_0:
      for (std::size_t i = 0; i < n / block; ++i) QuantQ4_0(src + i * block, bytes + i * stride);
      return;
    case DType::kQ4_K:
      for (std::size_t i = 0; i < n / block; ++i) QuantQ4_K(src + i * block, bytes + i * stride);
      return;
    case DType::kQ6_K:
      for (std::size_t i = 0; i < n / block; ++i) QuantQ6_K(src + i * block, bytes + i * stride);
      return;
  }
}

}  // namespace fgnet::cpu
