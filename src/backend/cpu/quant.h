// Block-quantized weights: the byte layouts of Q8_0, Q4_0, Q4_K and Q6_K (those of GGML, hence
// GGUF), and scalar reference conversions of rows between f32 and every DType.
//
// A quantized row of n weights (n a multiple of DTypeBlockElements) is n / block consecutive
// blocks, each DTypeBlockBytes long. All multi-byte fields are little-endian; "f16" is an IEEE
// half. Blocks have no alignment requirement beyond that of their first byte (the kernels read
// fields with memcpy). Value of element i of a block:
//
//   Q8_0 (32 elements, 34 bytes)
//     [0, 2)    f16 d
//     [2, 34)   int8 qs[32]
//     x[i] = f32(qs[i]) * d
//
//   Q4_0 (32 elements, 18 bytes)
//     [0, 2)    f16 d
//     [2, 18)   uint8 qs[16]: elements 0..15 in the low nibbles, 16..31 in the high nibbles
//     x[i] = f32(nibble(i) - 8) * d
//
//   Q4_K (256 elements, 144 bytes): 8 sub-blocks of 32, each with a 6-bit scale sc[j] and a
//   6-bit min m[j]
//     [0, 2)    f16 d       (scale of the scales)
//     [2, 4)    f16 dmin    (scale of the mins)
//     [4, 16)   uint8 scales[12]: for j < 4, sc[j] = scales[j] & 63 and m[j] = scales[j + 4] & 63;
//               for j >= 4, sc[j] = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4 and
//               m[j] = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4
//     [16, 144) uint8 qs[128]: four groups of 64 elements; group g (elements 64g .. 64g + 63)
//               is qs[32g .. 32g + 31], whose low nibbles are elements 64g + l (sub-block 2g)
//               and high nibbles elements 64g + 32 + l (sub-block 2g + 1), l < 32
//     x = (d * sc[j]) * q - (dmin * m[j])      (two products, then the difference)
//
//   Q6_K (256 elements, 210 bytes): 16 sub-blocks of 16, each with an int8 scale
//     [0, 128)   uint8 ql[128]: low 4 bits
//     [128, 192) uint8 qh[64]: high 2 bits
//     [192, 208) int8 scales[16]
//     [208, 210) f16 d
//     Two halves of 128 elements; half h uses ql[64h ..], qh[32h ..], scales[8h ..]. For
//     l < 32, with ql' = ql + 64h, qh' = qh + 32h, s = 8h + l / 16:
//       element 128h + l      q = (ql'[l] & 15)      | ((qh'[l] >> 0) & 3) << 4, scale sc[s]
//       element 128h + 32 + l q = (ql'[l + 32] & 15) | ((qh'[l] >> 2) & 3) << 4, scale sc[s + 2]
//       element 128h + 64 + l q = (ql'[l] >> 4)      | ((qh'[l] >> 4) & 3) << 4, scale sc[s + 4]
//       element 128h + 96 + l q = (ql'[l + 32] >> 4) | ((qh'[l] >> 6) & 3) << 4, scale sc[s + 6]
//     x = (d * sc) * f32(q - 32)
//
// Quantizers (QuantizeRow); all are deterministic (the same input gives the same bytes):
//   Q8_0  round to nearest (halves away from zero) with d = amax / 127, amax the largest |x| of
//         the block, as GGML does.
//   Q4_0  as GGML: m the x of largest magnitude (with its sign), d = m / -8, nibble =
//         min(15, floor(x * (1 / d) + 8.5)): m itself is exact, the other extreme is clamped.
//   Q4_K  per sub-block, an affine fit x ~ s * q - m (s, m >= 0, q in 0..15): a few candidate
//         scales spanning [min(x, 0), max(x)] are tried, each refined by least squares on its
//         rounded q and rounded again; the fit of least squared error is kept. The super-block
//         scales are then d = max s / 63 and dmin = max m / 63 (rounded to f16), the sub-block
//         scales and mins are rounded to 6 bits, every q is rounded again against the scales
//         actually stored, and (d, dmin) are refined by least squares over the whole super-block
//         on the rounded values (twice), keeping whichever stored block has the least error.
//   Q6_K  per sub-block of 16, a symmetric fit x ~ s * k (k in -32..31): candidate scales that
//         map the largest |x| to -32, to 31 and to points in between, each refined by least
//         squares; the best is kept. d = max |s| / 127 (f16), sc = round(s / d), every k rounded
//         again against the stored scales, then d refined by least squares (twice), keeping the
//         best stored block.
// Round-trip error (RMS error over RMS) on Gaussian data: Q8_0 0.5%, Q6_K 1.7%, Q4_K 7.0%,
// Q4_0 8.4%; with 1% of outliers at 6x: 0.8%, 2.3%, 8.5%, 12.4% (quant_test.cpp asserts bounds).
// Inputs must be finite; a scale beyond the f16 range is clamped to the largest finite f16, so
// finite inputs always give finite outputs.
//
// Thread-safety: plain functions, reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "tensor/dtype.h"

namespace fgnet::cpu {

// Byte offsets of the fields described above.
namespace q8_0 {
inline constexpr std::size_t kD = 0, kQs = 2;
}  // namespace q8_0
namespace q4_0 {
inline constexpr std::size_t kD = 0, kQs = 2;
}  // namespace q4_0
namespace q4_k {
inline constexpr std::size_t kD = 0, kDmin = 2, kScales = 4, kQs = 16;
}  // namespace q4_k
namespace q6_k {
inline constexpr std::size_t kQl = 0, kQh = 128, kScales = 192, kD = 208;
}  // namespace q6_k

// dst[0, n) = the f32 values of the n elements at src, stored as `type` (any DType; the float
// types are widened exactly). For a quantized type, n must be a multiple of its block size
// (FGNET_CHECK).
void DequantizeRow(DType type, const void* src, std::size_t n, float* dst);

// Stores src[0, n) as `type` at dst (DTypeRowBytes(type, n) bytes): the quantizers above, or
// for the float types a copy (F32) or round-to-nearest-even (BF16, F16). For a quantized type, n
// must be a multiple of its block size (FGNET_CHECK).
void QuantizeRow(DType type, const float* src, std::size_t n, void* dst);

// The 6-bit scale and min of sub-block j (< 8) from a Q4_K block's 12 packed bytes.
inline void UnpackQ4KScaleMin(const std::uint8_t* scales, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4;
    *m = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4;
  }
}
// The inverse: packs 8 scales and 8 mins (each < 64, FGNET_CHECK) into 12 bytes.
void PackQ4KScalesMins(const int* sc, const int* m, std::uint8_t* scales);

// f16 bits to f32, exactly as F16ToF32 but inline and branch-free for finite values (the block
// scales are read once per block in the kernels' inner loops).
inline float HalfToFloat(std::uint16_t h) {
  const std::uint32_t magnitude = static_cast<std::uint32_t>(h & 0x7fffu) << 13;
  if (magnitude >= (0x7c00u << 13)) return F16ToF32(h);  // inf, NaN
  float f;
  std::memcpy(&f, &magnitude, 4);
  f *= 0x1p112f;  // rebias the exponent: exact, subnormal halves included
  return (h & 0x8000u) != 0 ? -f : f;
}

inline float LoadHalf(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

}  // namespace fgnet::cpu
