// Per-target decoding of quantized blocks (layouts in backend/cpu/quant.h) into f32 vectors, and
// the kernels built on it: row dequantization (the packed regime of matmul.cpp and EmbedRows)
// and dot products of quantized rows with f32 activations (the decode regime).
// Dequantization gives exactly the values of DequantizeRow (same operations in the same order).
// The dot products are rearranged for speed: a block's (or sub-block's) integer-valued weights
// are dotted with x first and the sum scaled once, and the offsets of Q4_0 (8) and Q4_K (the
// mins) are applied through sums of x over each 32 elements computed once per call. They differ
// from a dot product with the dequantized row by f32 rounding only. Included once per Highway
// target, hence the toggling include guard.

#if defined(FGNET_BACKEND_CPU_QUANT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FGNET_BACKEND_CPU_QUANT_INL_H_
#undef FGNET_BACKEND_CPU_QUANT_INL_H_
#else
#define FGNET_BACKEND_CPU_QUANT_INL_H_
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "backend/cpu/quant.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
// DF, VF.
#include "backend/cpu/gemm-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fgnet::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DI = hn::Rebind<std::int32_t, DF>;
using VI = hn::Vec<DI>;

// Chunks of Lanes(DF) consecutive elements never straddle a sub-block (16 elements at least).
static_assert(hn::MaxLanes(DF()) <= 16, "decoders assume at most 16 f32 lanes");

// Lanes(DF) bytes widened to i32 lanes.
HWY_INLINE VI LoadBytes(const std::uint8_t* HWY_RESTRICT p) {
  const hn::Rebind<std::uint8_t, DF> du8;
  return hn::PromoteTo(DI(), hn::LoadU(du8, p));
}

HWY_INLINE VF ToFloat(VI v) { return hn::ConvertTo(DF(), v); }

// The f16 block scale at p (unaligned): one conversion instruction where the target has F16C,
// else HalfToFloat. Both are exact.
HWY_INLINE float LoadScale(const std::uint8_t* HWY_RESTRICT p) {
#if HWY_TARGET <= HWY_AVX2 && HWY_ARCH_X86
  const hn::CappedTag<float, 1> d1;
  const hn::Rebind<hwy::float16_t, decltype(d1)> dh1;
  hwy::float16_t h;
  std::memcpy(&h, p, 2);
  return hn::GetLane(hn::PromoteTo(d1, hn::LoadU(dh1, &h)));
#else
  return LoadHalf(p);
#endif
}

// Bytes ahead of the current block that the dot kernels prefetch: the decode regime reads each
// row once, and the block decoding leaves the hardware prefetcher too little slack on its own
// (without it, decoding and memory latency added up instead of overlapping).
inline constexpr std::size_t kPrefetchBytes = 1024;

template <class Q>
HWY_INLINE void PrefetchBlock(const std::uint8_t* block) {
  for (std::size_t off = 0; off < Q::kBytes; off += 64) hwy::Prefetch(block + kPrefetchBytes + off);
}

// Block decoders. Decode(b, visit) calls visit(offset, w, slot) for every chunk of Lanes(DF)
// consecutive elements of the block, w holding elements [offset, offset + Lanes) as f32.
// Offsets are visited in an order of the decoder's choosing; `slot` (0 or 1) alternates between
// consecutive visits, so that a sum can keep two independent accumulator chains.
// Dot<G>(b, x, ldx, xsums, ldxs, acc, corr) adds the block's dot product with G tokens
// (x + g * ldx: the tokens' elements of this block; xsums + g * ldxs: their sums over each 32)
// to acc[g] minus corr[g] (vectors summed and corr subtracted once, at the end of the row).
// kType: the DType; kElements / kBytes: the block's size.
struct Q8_0Decoder {
  static constexpr DType kType = DType::kQ8_0;
  static constexpr std::size_t kElements = 32, kBytes = 34;
  template <class Visit>
  static HWY_INLINE void Decode(const std::uint8_t* HWY_RESTRICT b, const Visit& visit) {
    const DF d;
    const std::size_t L = hn::Lanes(d);
    const hn::Rebind<std::int8_t, DF> di8;
    const VF vd = hn::Set(d, LoadScale(b + q8_0::kD));
    const auto* qs = reinterpret_cast<const std::int8_t*>(b + q8_0::kQs);
    for (std::size_t i = 0; i < 32; i += L) {
      visit(i, hn::Mul(ToFloat(hn::PromoteTo(DI(), hn::LoadU(di8, qs + i))), vd), (i / L) % 2);
    }
  }
  // acc[g] += d * (q . x_g) for G tokens (x_g = x + g * ldx, the block's elements); the scale
  // multiplies the block's sum rather than each weight.
  template <std::size_t G>
  static HWY_INLINE void Dot(const std::uint8_t* HWY_RESTRICT b, const float* HWY_RESTRICT x,
                             std::size_t ldx, const float* HWY_RESTRICT /*xsums*/,
                             std::size_t /*ldxs*/, VF* HWY_RESTRICT acc,
                             float* HWY_RESTRICT /*corr*/) {
    const DF d;
    const std::size_t L = hn::Lanes(d);
    const hn::Rebind<std::int8_t, DF> di8;
    const auto* qs = reinterpret_cast<const std::int8_t*>(b + q8_0::kQs);
    VF part[G];
    for (std::size_t g = 0; g < G; ++g) part[g] = hn::Zero(d);
    for (std::size_t i = 0; i < 32; i += L) {
      const VF w = ToFloat(hn::PromoteTo(DI(), hn::LoadU(di8, qs + i)));
      for (std::size_t g = 0; g < G; ++g) {
        const VF xv = hn::LoadU(d, x + g * ldx + i);
        part[g] = hn::MulAdd(w, xv, part[g]);
      }
    }
    const VF vd = hn::Set(d, LoadScale(b + q8_0::kD));
    for (std::size_t g = 0; g < G; ++g) acc[g] = hn::MulAdd(vd, part[g], acc[g]);
  }
};

struct Q4_0Decoder {
  static constexpr DType kType = DType::kQ4_0;
  static constexpr std::size_t kElements = 32, kBytes = 18;
  template <class Visit>
  static HWY_INLINE void Decode(const std::uint8_t* HWY_RESTRICT b, const Visit& visit) {
    const DF d;
    const DI di;
    const std::size_t L = hn::Lanes(d);
    const VF vd = hn::Set(d, LoadScale(b + q4_0::kD));
    const VI mask = hn::Set(di, 15), eight = hn::Set(di, 8);
    for (std::size_t i = 0; i < 16; i += L) {
      const VI bytes = LoadBytes(b + q4_0::kQs + i);
      visit(i, hn::Mul(ToFloat(hn::Sub(hn::And(bytes, mask), eight)), vd), 0);
      visit(16 + i, hn::Mul(ToFloat(hn::Sub(hn::ShiftRight<4>(bytes), eight)), vd), 1);
    }
  }
  // acc[g] += d * (nibbles . x_g) and corr[g] += 8 * d * sum(x_g) (subtracted at the end), for
  // G tokens; xsums[g * ldxs] is the block's sum of x_g.
  template <std::size_t G>
  static HWY_INLINE void Dot(const std::uint8_t* HWY_RESTRICT b, const float* HWY_RESTRICT x,
                             std::size_t ldx, const float* HWY_RESTRICT xsums, std::size_t ldxs,
                             VF* HWY_RESTRICT acc, float* HWY_RESTRICT corr) {
    const DF d;
    const DI di;
    const std::size_t L = hn::Lanes(d);
    const VI mask = hn::Set(di, 15);
    VF part[G];
    for (std::size_t g = 0; g < G; ++g) part[g] = hn::Zero(d);
    for (std::size_t i = 0; i < 16; i += L) {
      const VI bytes = LoadBytes(b + q4_0::kQs + i);
      const VF lo = ToFloat(hn::And(bytes, mask));
      const VF hi = ToFloat(hn::ShiftRight<4>(bytes));
      for (std::size_t g = 0; g < G; ++g) {
        const float* xg = x + g * ldx;
        const VF x0 = hn::LoadU(d, xg + i);
        part[g] = hn::MulAdd(lo, x0, part[g]);
        part[g] = hn::MulAdd(hi, hn::LoadU(d, xg + 16 + i), part[g]);
      }
    }
    const float scale = LoadScale(b + q4_0::kD);
    const VF vd = hn::Set(d, scale);
    for (std::size_t g = 0; g < G; ++g) {
      acc[g] = hn::MulAdd(vd, part[g], acc[g]);
      corr[g] += 8.0f * scale * xsums[g * ldxs];
    }
  }
};

struct Q4_KDecoder {
  static constexpr DType kType = DType::kQ4_K;
  static constexpr std::size_t kElements = 256, kBytes = 144;
  template <class Visit>
  static HWY_INLINE void Decode(const std::uint8_t* HWY_RESTRICT b, const Visit& visit) {
    const DF d;
    const DI di;
    const std::size_t L = hn::Lanes(d);
    const float dd = LoadScale(b + q4_k::kD);
    const float dmin = LoadScale(b + q4_k::kDmin);
    const VI mask = hn::Set(di, 15);
    for (int g = 0; g < 4; ++g) {
      int sc0, m0, sc1, m1;
      UnpackQ4KScaleMin(b + q4_k::kScales, 2 * g, &sc0, &m0);
      UnpackQ4KScaleMin(b + q4_k::kScales, 2 * g + 1, &sc1, &m1);
      const VF d0 = hn::Set(d, dd * static_cast<float>(sc0));
      const VF min0 = hn::Set(d, dmin * static_cast<float>(m0));
      const VF d1 = hn::Set(d, dd * static_cast<float>(sc1));
      const VF min1 = hn::Set(d, dmin * static_cast<float>(m1));
      const std::uint8_t* qs = b + q4_k::kQs + 32 * g;
      for (std::size_t l = 0; l < 32; l += L) {
        const VI bytes = LoadBytes(qs + l);
        visit(64 * g + l, hn::Sub(hn::Mul(d0, ToFloat(hn::And(bytes, mask))), min0), 0);
        visit(64 * g + 32 + l, hn::Sub(hn::Mul(d1, ToFloat(hn::ShiftRight<4>(bytes))), min1), 1);
      }
    }
  }
  // Per sub-block j: acc[g] += (d * sc[j]) * (q . x_g) and corr[g] += (dmin * m[j]) * sum(x_g)
  // (subtracted at the end), for G tokens; xsums[g * ldxs + j] is sub-block j's sum of x_g.
  template <std::size_t G>
  static HWY_INLINE void Dot(const std::uint8_t* HWY_RESTRICT b, const float* HWY_RESTRICT x,
                             std::size_t ldx, const float* HWY_RESTRICT xsums, std::size_t ldxs,
                             VF* HWY_RESTRICT acc, float* HWY_RESTRICT corr) {
    const DF d;
    const DI di;
    const std::size_t L = hn::Lanes(d);
    const float dd = LoadScale(b + q4_k::kD);
    const float dmin = LoadScale(b + q4_k::kDmin);
    const VI mask = hn::Set(di, 15);
    for (int grp = 0; grp < 4; ++grp) {
      int sc0, m0, sc1, m1;
      UnpackQ4KScaleMin(b + q4_k::kScales, 2 * grp, &sc0, &m0);
      UnpackQ4KScaleMin(b + q4_k::kScales, 2 * grp + 1, &sc1, &m1);
      const std::uint8_t* qs = b + q4_k::kQs + 32 * grp;
      VF p0[G], p1[G];
      for (std::size_t g = 0; g < G; ++g) p0[g] = p1[g] = hn::Zero(d);
      for (std::size_t l = 0; l < 32; l += L) {
        const VI bytes = LoadBytes(qs + l);
        const VF lo = ToFloat(hn::And(bytes, mask));
        const VF hi = ToFloat(hn::ShiftRight<4>(bytes));
        for (std::size_t g = 0; g < G; ++g) {
          const float* xg = x + g * ldx + 64 * grp;
          const VF x0 = hn::LoadU(d, xg + l);
          const VF x1 = hn::LoadU(d, xg + 32 + l);
          p0[g] = hn::MulAdd(lo, x0, p0[g]);
          p1[g] = hn::MulAdd(hi, x1, p1[g]);
        }
      }
      const VF d0 = hn::Set(d, dd * static_cast<float>(sc0));
      const VF d1 = hn::Set(d, dd * static_cast<float>(sc1));
      const float min0 = dmin * static_cast<float>(m0), min1 = dmin * static_cast<float>(m1);
      for (std::size_t g = 0; g < G; ++g) {
        acc[g] = hn::Add(acc[g], hn::MulAdd(d1, p1[g], hn::Mul(d0, p0[g])));
        corr[g] += min0 * xsums[g * ldxs + 2 * grp] + min1 * xsums[g * ldxs + 2 * grp + 1];
      }
    }
  }
};

struct Q6_KDecoder {
  static constexpr DType kType = DType::kQ6_K;
  static constexpr std::size_t kElements = 256, kBytes = 210;
  template <class Visit>
  static HWY_INLINE void Decode(const std::uint8_t* HWY_RESTRICT b, const Visit& visit) {
    const DF d;
    const DI di;
    const std::size_t L = hn::Lanes(d);
    const float dd = LoadScale(b + q6_k::kD);
    const auto* scales = reinterpret_cast<const std::int8_t*>(b + q6_k::kScales);
    const VI low4 = hn::Set(di, 15), bits01 = hn::Set(di, 3), bits23 = hn::Set(di, 12);
    const VI bits45 = hn::Set(di, 0x30), bits67 = hn::Set(di, 0xC0), offset = hn::Set(di, 32);
    for (std::size_t h = 0; h < 2; ++h) {
      const std::uint8_t* ql = b + q6_k::kQl + 64 * h;
      const std::uint8_t* qh = b + q6_k::kQh + 32 * h;
      const std::int8_t* sc = scales + 8 * h;
      for (std::size_t l = 0; l < 32; l += L) {
        const std::size_t is = l / 16;
        const VI a = LoadBytes(ql + l);
        const VI c = LoadBytes(ql + l + 32);
        const VI hb = LoadBytes(qh + l);
        // The high two bits of the four quarters, moved to bits 4-5.
        const VI q1 = hn::Or(hn::And(a, low4), hn::ShiftLeft<4>(hn::And(hb, bits01)));
        const VI q2 = hn::Or(hn::And(c, low4), hn::ShiftLeft<2>(hn::And(hb, bits23)));
        const VI q3 = hn::Or(hn::ShiftRight<4>(a), hn::And(hb, bits45));
        const VI q4 = hn::Or(hn::ShiftRight<4>(c), hn::ShiftRight<2>(hn::And(hb, bits67)));
        const auto scaled = [&](VI q, std::size_t s) {
          const VF vs = hn::Set(d, dd * static_cast<float>(sc[s]));
          return hn::Mul(vs, ToFloat(hn::Sub(q, offset)));
        };
        visit(128 * h + l, scaled(q1, is), 0);
        visit(128 * h + 32 + l, scaled(q2, is + 2), 1);
        visit(128 * h + 64 + l, scaled(q3, is + 4), 0);
        visit(128 * h + 96 + l, scaled(q4, is + 6), 1);
      }
    }
  }
  // acc[g] += w . x_g with the weights decoded exactly (a sub-block of 16 has too few elements
  // for a factored scale to pay).
  template <std::size_t G>
  static HWY_INLINE void Dot(const std::uint8_t* HWY_RESTRICT b, const float* HWY_RESTRICT x,
                             std::size_t ldx, const float* HWY_RESTRICT /*xsums*/,
                             std::size_t /*ldxs*/, VF* HWY_RESTRICT acc,
                             float* HWY_RESTRICT /*corr*/) {
    const DF d;
    VF other[G];
    for (std::size_t g = 0; g < G; ++g) other[g] = hn::Zero(d);
    Decode(b, [&](std::size_t off, VF w, int slot) HWY_ATTR {
      VF* target = slot == 0 ? acc : other;
      for (std::size_t g = 0; g < G; ++g) {
        target[g] = hn::MulAdd(w, hn::LoadU(d, x + g * ldx + off), target[g]);
      }
    });
    for (std::size_t g = 0; g < G; ++g) acc[g] = hn::Add(acc[g], other[g]);
  }
};

// dst[0, K) = f32(row) * scale. K: a multiple of Q::kElements.
template <class Q>
HWY_INLINE void DequantRowScaled(const std::uint8_t* HWY_RESTRICT row, std::size_t K, float scale,
                                 float* HWY_RESTRICT dst) {
  const DF d;
  const VF vs = hn::Set(d, scale);
  for (std::size_t blk = 0; blk < K / Q::kElements; ++blk) {
    float* out = dst + blk * Q::kElements;
    if (scale == 1.0f) {
      Q::Decode(row + blk * Q::kBytes,
                [&](std::size_t off, VF w, int) HWY_ATTR { hn::StoreU(w, d, out + off); });
    } else {
      Q::Decode(row + blk * Q::kBytes, [&](std::size_t off, VF w, int)
                                           HWY_ATTR { hn::StoreU(hn::Mul(w, vs), d, out + off); });
    }
  }
}

// Runs fn.template operator()<Q>() with the decoder of `type` (a quantized DType).
template <class Fn>
HWY_INLINE void WithDecoder(DType type, const Fn& fn) {
  switch (type) {
    case DType::kQ8_0:
      fn.template operator()<Q8_0Decoder>();
      return;
    case DType::kQ4_0:
      fn.template operator()<Q4_0Decoder>();
      return;
    case DType::kQ4_K:
      fn.template operator()<Q4_KDecoder>();
      return;
    case DType::kQ6_K:
      fn.template operator()<Q6_KDecoder>();
      return;
    default:
      break;
  }
}

// Sums of x over every run of 32 elements, which the dot products of the types with an offset
// (Q4_0, Q4_K) need: xsums[t * (K / 32) + s] = sum of x[t * ldx + 32 s .. + 32) for t < n.
HWY_INLINE void SubBlockSums(const float* HWY_RESTRICT x, std::size_t n, std::size_t ldx,
                             std::size_t K, float* HWY_RESTRICT xsums) {
  const DF d;
  const std::size_t L = hn::Lanes(d);
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t s = 0; s < K / 32; ++s) {
      const float* p = x + t * ldx + 32 * s;
      VF sum = hn::LoadU(d, p);
      for (std::size_t i = L; i < 32; i += L) sum = hn::Add(sum, hn::LoadU(d, p + i));
      xsums[t * (K / 32) + s] = hn::GetLane(hn::SumOfLanes(d, sum));
    }
  }
}

// out[g * ldo] = sum_k f32(row[k]) * x[g * ldx + k] for g < G: one quantized row against G
// tokens, each decoded weight vector used G times. K: a multiple of Q::kElements; xsums: the
// tokens' SubBlockSums (rows K / 32 apart; Q4_0 and Q4_K read them).
template <std::size_t G, class Q>
HWY_INLINE void QuantDotTokens(const std::uint8_t* HWY_RESTRICT row, const float* HWY_RESTRICT x,
                               std::size_t ldx, const float* HWY_RESTRICT xsums, std::size_t K,
                               float* HWY_RESTRICT out, std::size_t ldo) {
  const DF d;
  constexpr std::size_t kSums = Q::kElements / 32;  // sub-block sums per block
  const std::size_t lds = K / 32;
  const std::size_t blocks = K / Q::kElements;
  // Even and odd blocks accumulate separately: two independent chains (named variables, not an
  // array indexed by the block, which would keep them in memory).
  VF even[G], odd[G];
  float corr[G];
  for (std::size_t g = 0; g < G; ++g) {
    even[g] = odd[g] = hn::Zero(d);
    corr[g] = 0.0f;
  }
  std::size_t blk = 0;
  for (; blk + 2 <= blocks; blk += 2) {
    const std::uint8_t* b = row + blk * Q::kBytes;
    PrefetchBlock<Q>(b);
    PrefetchBlock<Q>(b + Q::kBytes);
    Q::template Dot<G>(b, x + blk * Q::kElements, ldx, xsums + blk * kSums, lds, even, corr);
    Q::template Dot<G>(b + Q::kBytes, x + (blk + 1) * Q::kElements, ldx, xsums + (blk + 1) * kSums,
                       lds, odd, corr);
  }
  if (blk < blocks) {
    Q::template Dot<G>(row + blk * Q::kBytes, x + blk * Q::kElements, ldx, xsums + blk * kSums, lds,
                       even, corr);
  }
  for (std::size_t g = 0; g < G; ++g) {
    out[g * ldo] = hn::GetLane(hn::SumOfLanes(d, hn::Add(even[g], odd[g]))) - corr[g];
  }
}

// *out_a = row_a . x and *out_b = row_b . x: two rows from distant parts of a matrix read side by
// side as two sequential streams (see DotRowPair). xsums as for QuantDotTokens.
template <class Q>
HWY_INLINE void QuantDotRowPair(const std::uint8_t* HWY_RESTRICT row_a,
                                const std::uint8_t* HWY_RESTRICT row_b, const float* HWY_RESTRICT x,
                                const float* HWY_RESTRICT xsums, std::size_t K, float* out_a,
                                float* out_b) {
  const DF d;
  constexpr std::size_t kSums = Q::kElements / 32;
  VF acc_a = hn::Zero(d), acc_b = hn::Zero(d);
  float corr_a = 0.0f, corr_b = 0.0f;
  for (std::size_t blk = 0; blk < K / Q::kElements; ++blk) {
    const std::uint8_t* a = row_a + blk * Q::kBytes;
    const std::uint8_t* b = row_b + blk * Q::kBytes;
    PrefetchBlock<Q>(a);
    PrefetchBlock<Q>(b);
    const float* xb = x + blk * Q::kElements;
    const float* sb = xsums + blk * kSums;
    Q::template Dot<1>(a, xb, 0, sb, 0, &acc_a, &corr_a);
    Q::template Dot<1>(b, xb, 0, sb, 0, &acc_b, &corr_b);
  }
  *out_a = hn::GetLane(hn::SumOfLanes(d, acc_a)) - corr_a;
  *out_b = hn::GetLane(hn::SumOfLanes(d, acc_b)) - corr_b;
}

}  // namespace fgnet::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // FGNET_BACKEND_CPU_QUANT_INL_H_
