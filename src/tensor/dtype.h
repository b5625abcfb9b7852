// Element types of weights and activations, and exact conversions between them.
//
// Besides the plain float types there are block-quantized weight types with the byte layouts of
// GGML (and hence GGUF): a row of a quantized matrix is a sequence of blocks, each covering
// DTypeBlockElements() consecutive weights in DTypeBlockBytes() bytes. The layouts are spelled
// out in backend/cpu/quant.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace fgnet {

enum class DType : std::uint8_t {
  kF32,
  kF16,
  kBF16,
  kQ8_0,  // blocks of 32: f16 scale, 32 x int8
  kQ4_0,  // blocks of 32: f16 scale, 16 bytes of 4-bit values (offset 8)
  kQ4_K,  // super-blocks of 256: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes
  kQ6_K,  // super-blocks of 256: 128 bytes low 4 bits, 64 bytes high 2 bits, 16 x int8 scales, f16
};

constexpr bool IsQuantized(DType t) {
  return t == DType::kQ8_0 || t == DType::kQ4_0 || t == DType::kQ4_K || t == DType::kQ6_K;
}

// Weights per block: 1 for the float types.
constexpr std::size_t DTypeBlockElements(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      return 1;
    case DType::kQ8_0:
    case DType::kQ4_0:
      return 32;
    case DType::kQ4_K:
    case DType::kQ6_K:
      return 256;
  }
  return 1;
}

// Bytes per block (per element for the float types).
constexpr std::size_t DTypeBlockBytes(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kQ8_0:
      return 34;
    case DType::kQ4_0:
      return 18;
    case DType::kQ4_K:
      return 144;
    case DType::kQ6_K:
      return 210;
  }
  return 0;
}

// Bytes per element of a float type (FGNET code never asks this of a quantized type: use
// DTypeRowBytes).
constexpr std::size_t DTypeSize(DType t) { return IsQuantized(t) ? 0 : DTypeBlockBytes(t); }

// Bytes of a row of `elements` weights; `elements` must be a multiple of DTypeBlockElements(t)
// (returns 0 otherwise).
constexpr std::size_t DTypeRowBytes(DType t, std::size_t elements) {
  const std::size_t block = DTypeBlockElements(t);
  return elements % block == 0 ? elements / block * DTypeBlockBytes(t) : 0;
}

// Names as safetensors and GGUF spell them: "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K",
// "Q6_K".
std::string_view DTypeName(DType t);
// Any of the names above.
std::optional<DType> ParseDTypeName(std::string_view name);
// Only the float types, which safetensors can hold.
std::optional<DType> ParseSafetensorsDType(std::string_view name);

// bfloat16: the top 16 bits of an IEEE float32. Widening is exact.
inline float BF16ToF32(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even, NaN kept quiet (as torch does).
inline std::uint16_t F32ToBF16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40);
  const std::uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

// IEEE half precision. Widening is exact.
float F16ToF32(std::uint16_t h);
std::uint16_t F32ToF16(float f);

}  // namespace fgnet
