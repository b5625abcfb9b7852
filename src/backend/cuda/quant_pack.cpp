// Repacking GGML blocks into the GPU layouts of backend/cuda/quant_matmul.h (host code).
#include <cstring>

#include "backend/cpu/quant.h"
#include "backend/cuda/quant_matmul.h"

namespace fgnet::cuda {

QuantLayout QuantLayoutFor(DType type) {
  switch (type) {
    case DType::kQ6_K:
      return QuantLayout::kInt8G16;
    case DType::kQ4_0:
    case DType::kQ4_K:
      return QuantLayout::kUInt4G32;
    default:
      return QuantLayout::kInt8G32;
  }
}

std::size_t QuantGroupSize(QuantLayout layout) { return layout == QuantLayout::kInt8G16 ? 16 : 32; }

std::size_t QuantRowBytes(QuantLayout layout, std::size_t cols) {
  return layout == QuantLayout::kUInt4G32 ? cols / 2 : cols;
}

std::size_t QuantRowScales(QuantLayout layout, std::size_t cols) {
  const std::size_t groups = cols / QuantGroupSize(layout);
  return layout == QuantLayout::kUInt4G32 ? 2 * groups : groups;
}

namespace {

// 32 values (0-15) as 16 bytes: value k in the low nibble of byte k, value 16 + k in its high one.
void PackNibbles(const std::uint8_t* q, std::uint8_t* out) {
  for (int k = 0; k < 16; ++k) out[k] = static_cast<std::uint8_t>(q[k] | q[16 + k] << 4);
}

void PackRow(DType type, const std::uint8_t* row, std::size_t cols, std::uint8_t* values,
             float* scales) {
  const std::size_t block = DTypeBlockElements(type);
  const std::size_t stride = DTypeBlockBytes(type);
  for (std::size_t b = 0; b < cols / block; ++b) {
    const std::uint8_t* blk = row + b * stride;
    switch (type) {
      case DType::kQ8_0: {
        scales[b] = cpu::LoadHalf(blk + cpu::q8_0::kD);
        std::memcpy(values + 32 * b, blk + cpu::q8_0::kQs, 32);
        break;
      }
      case DType::kQ4_0: {
        const float d = cpu::LoadHalf(blk + cpu::q4_0::kD);
        scales[2 * b] = d;
        scales[2 * b + 1] = 8.0f * d;
        std::memcpy(values + 16 * b, blk + cpu::q4_0::kQs, 16);  // already in this order
        break;
      }
      case DType::kQ4_K: {
        const float d = cpu::LoadHalf(blk + cpu::q4_k::kD);
        const float dmin = cpu::LoadHalf(blk + cpu::q4_k::kDmin);
        const std::uint8_t* qs = blk + cpu::q4_k::kQs;
        for (int j = 0; j < 8; ++j) {
          int sc = 0, mn = 0;
          cpu::UnpackQ4KScaleMin(blk + cpu::q4_k::kScales, j, &sc, &mn);
          const std::size_t group = 8 * b + static_cast<std::size_t>(j);
          scales[2 * group] = d * static_cast<float>(sc);
          scales[2 * group + 1] = dmin * static_cast<float>(mn);
          // Sub-block j is the low (j even) or high (j odd) nibbles of qs[32 (j / 2) ..].
          std::uint8_t q[32];
          for (int l = 0; l < 32; ++l) {
            const std::uint8_t byte = qs[32 * (j / 2) + l];
            q[l] = static_cast<std::uint8_t>(j % 2 == 0 ? byte & 15 : byte >> 4);
          }
          PackNibbles(q, values + 16 * group);
        }
        break;
      }
      case DType::kQ6_K: {
        const float d = cpu::LoadHalf(blk + cpu::q6_k::kD);
        const auto* sc = reinterpret_cast<const std::int8_t*>(blk + cpu::q6_k::kScales);
        auto* out = reinterpret_cast<std::int8_t*>(values + 256 * b);
        for (int h = 0; h < 2; ++h) {
          const std::uint8_t* ql = blk + cpu::q6_k::kQl + 64 * h;
          const std::uint8_t* qh = blk + cpu::q6_k::kQh + 32 * h;
          std::int8_t* o = out + 128 * h;
          for (int l = 0; l < 32; ++l) {
            o[l] = static_cast<std::int8_t>(((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32);
            o[l + 32] =
                static_cast<std::int8_t>(((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32);
            o[l + 64] = static_cast<std::int8_t>(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
            o[l + 96] =
                static_cast<std::int8_t>(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
          }
        }
        // Element e of the block has scale sc[e / 16].
        for (int s = 0; s < 16; ++s) scales[16 * b + s] = d * static_cast<float>(sc[s]);
        break;
      }
      default:
        break;
    }
  }
}

}  // namespace

Result<PackedQuantMatrix> PackQuantMatrix(DType type, const void* data, std::size_t rows,
                                          std::size_t cols) {
  if (!IsQuantized(type)) {
    return MakeError("PackQuantMatrix: ", DTypeName(type), " is not a block-quantized type");
  }
  const std::size_t block = DTypeBlockElements(type);
  if (cols % block != 0) {
    return MakeError("PackQuantMatrix: rows of ", cols, " elements are not whole ", DTypeName(type),
                     " blocks of ", block);
  }
  PackedQuantMatrix m;
  m.layout = QuantLayoutFor(type);
  const std::size_t value_bytes = QuantRowBytes(m.layout, cols);
  const std::size_t row_scales = QuantRowScales(m.layout, cols);
  m.values.resize(rows * value_bytes);
  m.scales.resize(rows * row_scales);
  const std::size_t row_bytes = DTypeRowBytes(type, cols);
  const auto* bytes = static_cast<const std::uint8_t*>(data);
  for (std::size_t r = 0; r < rows; ++r) {
    PackRow(type, bytes + r * row_bytes, cols, m.values.data() + r * value_bytes,
            m.scales.data() + r * row_scales);
  }
  return m;
}

void UnpackQuantRow(const PackedQuantMatrix& m, std::size_t cols, std::size_t row, float* out) {
  const std::uint8_t* q = m.values.data() + row * QuantRowBytes(m.layout, cols);
  const float* s = m.scales.data() + row * QuantRowScales(m.layout, cols);
  const std::size_t group = QuantGroupSize(m.layout);
  for (std::size_t e = 0; e < cols; ++e) {
    const std::size_t g = e / group;
    switch (m.layout) {
      case QuantLayout::kInt8G32:
        out[e] = static_cast<float>(static_cast<std::int8_t>(q[e])) * s[g];
        break;
      case QuantLayout::kInt8G16:
        out[e] = s[g] * static_cast<float>(static_cast<std::int8_t>(q[e]));
        break;
      case QuantLayout::kUInt4G32: {
        const std::size_t k = e % 32;
        const std::uint8_t byte = q[16 * g + k % 16];
        const int nibble = k < 16 ? byte & 15 : byte >> 4;
        out[e] = s[2 * g] * static_cast<float>(nibble) - s[2 * g + 1];
        break;
      }
    }
  }
}

}  // namespace fgnet::cuda
