#include "backend/cpu/reference.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "backend/cpu/quant.h"
#include "util/status.h"

namespace fgnet::cpu::reference {

float WeightAt(const WeightMatrix& w, std::size_t r, std::size_t c) {
  if (IsQuantized(w.dtype)) {
    // Decode the block holding the element.
    const std::size_t block = DTypeBlockElements(w.dtype);
    const auto* row = static_cast<const std::uint8_t*>(w.data) + r * DTypeRowBytes(w.dtype, w.cols);
    float values[256];
    DequantizeRow(w.dtype, row + c / block * DTypeBlockBytes(w.dtype), block, values);
    return values[c % block];
  }
  const std::size_t i = r * w.cols + c;
  switch (w.dtype) {
    case DType::kF32:
      return static_cast<const float*>(w.data)[i];
    case DType::kBF16:
      return BF16ToF32(static_cast<const std::uint16_t*>(w.data)[i]);
    case DType::kF16:
      return F16ToF32(static_cast<const std::uint16_t*>(w.data)[i]);
    default:
      break;
  }
  return 0.0f;
}

void RowAt(const WeightMatrix& w, std::size_t r, float* out) {
  const std::size_t row_bytes = DTypeRowBytes(w.dtype, w.cols);
  FGNET_CHECK(row_bytes > 0 || w.cols == 0);
  DequantizeRow(w.dtype, static_cast<const std::uint8_t*>(w.data) + r * row_bytes, w.cols, out);
}

void MatMul(const float* x, std::size_t n, std::size_t ldx, const WeightMatrix& w, float* y,
            std::size_t ldy) {
  std::vector<float> row(w.cols);
  for (std::size_t j = 0; j < w.rows; ++j) {
    RowAt(w, j, row.data());
    for (std::size_t t = 0; t < n; ++t) {
      double sum = 0.0;
      for (std::size_t k = 0; k < w.cols; ++k) {
        sum += static_cast<double>(x[t * ldx + k]) * row[k];
      }
      y[t * ldy + j] = static_cast<float>(sum);
    }
  }
}

void GemmF32(const float* a, std::size_t lda, std::size_t M, const float* b, std::size_t ldb,
             bool b_is_kn, std::size_t K, std::size_t N, float* c, std::size_t ldc,
             bool accumulate) {
  for (std::size_t m = 0; m < M; ++m) {
    for (std::size_t j = 0; j < N; ++j) {
      double sum = accumulate ? c[m * ldc + j] : 0.0;
      for (std::size_t k = 0; k < K; ++k) {
        const float bkj = b_is_kn ? b[k * ldb + j] : b[j * ldb + k];
        sum += static_cast<double>(a[m * lda + k]) * bkj;
      }
      c[m * ldc + j] = static_cast<float>(sum);
    }
  }
}

namespace {
float InvRms(const float* x, std::size_t dim, float eps) {
  double ss = 0.0;
  for (std::size_t i = 0; i < dim; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float mean = static_cast<float>(ss / static_cast<double>(dim));
  return 1.0f / std::sqrt(mean + eps);
}
}  // namespace

void RMSNorm(const float* x, std::size_t rows, std::size_t dim, const float* scale, float eps,
             float* y) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float inv = InvRms(x + r * dim, dim, eps);
    for (std::size_t i = 0; i < dim; ++i) y[r * dim + i] = (x[r * dim + i] * inv) * scale[i];
  }
}

void RMSNormAddTo(const float* x, std::size_t rows, std::size_t dim, const float* scale, float eps,
                  float* residual) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float inv = InvRms(x + r * dim, dim, eps);
    for (std::size_t i = 0; i < dim; ++i) {
      residual[r * dim + i] += (x[r * dim + i] * inv) * scale[i];
    }
  }
}

void RoPE(float* x, std::size_t rows, std::size_t heads, std::size_t head_dim, const float* cos,
          const float* sin) {
  const std::size_t half = head_dim / 2;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * head_dim;
      for (std::size_t i = 0; i < half; ++i) {
        const float c = cos[r * half + i];
        const float s = sin[r * half + i];
        const float x1 = v[i];
        const float x2 = v[i + half];
        const float a = x1 * c;
        const float b = x2 * s;
        const float d = x2 * c;
        const float e = x1 * s;
        v[i] = a - b;
        v[i + half] = d + e;
      }
    }
  }
}

void GeluTanhMul(const float* gate, const float* up, std::size_t n, float* out) {
  const double k = std::sqrt(2.0 / std::numbers::pi);
  for (std::size_t i = 0; i < n; ++i) {
    const double g = gate[i];
    const double gelu = 0.5 * g * (1.0 + std::tanh(k * (g + 0.044715 * g * g * g)));
    out[i] = static_cast<float>(gelu * up[i]);
  }
}

void Softmax(float* x, std::size_t n) {
  if (n == 0) return;
  const double mx = *std::max_element(x, x + n);
  double sum = 0.0;
  std::vector<double> e(n);
  for (std::size_t i = 0; i < n; ++i) {
    e[i] = std::exp(static_cast<double>(x[i]) - mx);
    sum += e[i];
  }
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>(e[i] / sum);
}

void Softcap(float* x, std::size_t n, float cap) {
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = static_cast<float>(cap * std::tanh(static_cast<double>(x[i]) / cap));
  }
}

void EmbedRows(const WeightMatrix& table, std::span<const std::int32_t> ids, float scale,
               float* out) {
  std::vector<float> row(table.cols);
  for (std::size_t t = 0; t < ids.size(); ++t) {
    RowAt(table, static_cast<std::size_t>(ids[t]), row.data());
    for (std::size_t i = 0; i < table.cols; ++i) out[t * table.cols + i] = row[i] * scale;
  }
}

float Dot(const float* a, const float* b, std::size_t n) {
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(sum);
}

void Attention(const float* q, std::size_t n, std::int64_t first_pos, std::span<const KVSpan> kv,
               const AttentionParams& p, float* out) {
  FGNET_CHECK(!kv.empty());
  FGNET_CHECK_EQ(p.heads % p.kv_heads, 0u);
  const std::size_t group = p.heads / p.kv_heads;
  const std::size_t q_dim = p.heads * p.head_dim;
  // Flatten the spans into one list of positions.
  struct Key {
    std::int64_t pos;
    const float* k;
    const float* v;
  };
  std::vector<Key> keys;
  for (const KVSpan& s : kv) {
    for (std::size_t i = 0; i < s.count; ++i) {
      if (!keys.empty())
        FGNET_CHECK_EQ(keys.back().pos + 1, s.first_pos + static_cast<std::int64_t>(i));
      keys.push_back({s.first_pos + static_cast<std::int64_t>(i), s.keys + i * s.stride,
                      s.values + i * s.stride});
    }
  }
  std::vector<double> scores(keys.size());
  for (std::size_t t = 0; t < n; ++t) {
    const std::int64_t pos = first_pos + static_cast<std::int64_t>(t);
    for (std::size_t h = 0; h < p.heads; ++h) {
      const std::size_t kvh = h / group;
      const float* qv = q + t * q_dim + h * p.head_dim;
      double mx = -INFINITY;
      for (std::size_t j = 0; j < keys.size(); ++j) {
        const bool visible = keys[j].pos <= pos && (p.window <= 0 || keys[j].pos > pos - p.window);
        if (!visible) {
          scores[j] = -INFINITY;
          continue;
        }
        double s = 0.0;
        for (std::size_t i = 0; i < p.head_dim; ++i) {
          s += static_cast<double>(qv[i]) * keys[j].k[kvh * p.head_dim + i];
        }
        s *= p.scale;
        if (p.softcap > 0.0f) s = p.softcap * std::tanh(s / p.softcap);
        scores[j] = s;
        mx = std::max(mx, s);
      }
      FGNET_CHECK(mx > -INFINITY);
      double sum = 0.0;
      for (double& s : scores) {
        s = std::isinf(s) ? 0.0 : std::exp(s - mx);
        sum += s;
      }
      float* o = out + t * q_dim + h * p.head_dim;
      for (std::size_t i = 0; i < p.head_dim; ++i) {
        double acc = 0.0;
        for (std::size_t j = 0; j < keys.size(); ++j) {
          if (scores[j] != 0.0) acc += scores[j] * keys[j].v[kvh * p.head_dim + i];
        }
        o[i] = static_cast<float>(acc / sum);
      }
    }
  }
}

}  // namespace fgnet::cpu::reference
