// Element types of weights and activations, and exact conversions between them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace fgnet {

enum class DType : std::uint8_t { kF32, kF16, kBF16 };

// Bytes per element.
constexpr std::size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 0;
}

// Names as safetensors spells them: "F32", "F16", "BF16".
std::string_view DTypeName(DType t);
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
