#include "forward_reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "util/rng.h"
#include "util/status.h"

namespace fgnet::testing {

RandomCheckpoint::RandomCheckpoint(const Gemma3Config& config, DType dtype, std::uint64_t seed)
    : config_(config), dtype_(dtype), seed_(seed) {
  const std::int64_t H = config.hidden_size, I = config.intermediate_size, V = config.vocab_size;
  const std::int64_t QD = config.q_dim(), KVD = config.kv_dim(), HD = config.head_dim;
  const double in_h = 1.0 / std::sqrt(static_cast<double>(H));
  weights_.embed_tokens = Make({V, H}, 1.0, 0.0);
  weights_.norm = Make({H}, 0.5, 0.0);
  weights_.lm_head = weights_.embed_tokens;
  for (std::int64_t l = 0; l < config.num_hidden_layers; ++l) {
    Gemma3LayerWeights w;
    w.input_layernorm = Make({H}, 0.5, 0.0);
    w.q_proj = Make({QD, H}, 1.7 * in_h, 0.0);
    w.k_proj = Make({KVD, H}, 1.7 * in_h, 0.0);
    w.v_proj = Make({KVD, H}, 1.7 * in_h, 0.0);
    w.o_proj = Make({H, QD}, 1.7 / std::sqrt(static_cast<double>(QD)), 0.0);
    w.q_norm = Make({HD}, 0.5, 0.0);
    w.k_norm = Make({HD}, 0.5, 0.0);
    w.post_attention_layernorm = Make({H}, 0.5, 0.0);
    w.pre_feedforward_layernorm = Make({H}, 0.5, 0.0);
    w.gate_proj = Make({I, H}, 1.7 * in_h, 0.0);
    w.up_proj = Make({I, H}, 1.7 * in_h, 0.0);
    w.down_proj = Make({H, I}, 1.7 / std::sqrt(static_cast<double>(I)), 0.0);
    w.post_feedforward_layernorm = Make({H}, 0.5, 0.0);
    weights_.layers.push_back(w);
  }
}

TensorView RandomCheckpoint::Make(std::vector<std::int64_t> shape, double scale, double offset) {
  Philox rng(seed_, stream_++);
  TensorView t;
  t.dtype = dtype_;
  t.shape = std::move(shape);
  const std::size_t n = static_cast<std::size_t>(t.num_elements());
  std::vector<std::uint8_t> bytes(n * DTypeSize(dtype_));
  for (std::size_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(offset + scale * (2.0 * rng.NextDouble() - 1.0));
    if (dtype_ == DType::kF32) {
      std::memcpy(bytes.data() + 4 * i, &v, 4);
    } else {
      const std::uint16_t h = dtype_ == DType::kBF16 ? F32ToBF16(v) : F32ToF16(v);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  storage_.push_back(std::move(bytes));
  t.data = storage_.back().data();
  return t;
}

double RandomCheckpoint::At(const TensorView& t, std::size_t i) {
  switch (t.dtype) {
    case DType::kF32:
      return t.as<float>()[i];
    case DType::kBF16:
      return BF16ToF32(t.as<std::uint16_t>()[i]);
    case DType::kF16:
      return F16ToF32(t.as<std::uint16_t>()[i]);
    default:
      FGNET_CHECK(false && "quantized tensor in the float reference");
  }
  return 0.0;
}

namespace {

using Vec = std::vector<double>;

// y = W x for W [rows, cols].
Vec Linear(const TensorView& w, const Vec& x) {
  const std::size_t rows = static_cast<std::size_t>(w.dim(0));
  const std::size_t cols = static_cast<std::size_t>(w.dim(1));
  Vec y(rows, 0.0);
  for (std::size_t r = 0; r < rows; ++r) {
    double s = 0.0;
    for (std::size_t c = 0; c < cols; ++c) s += RandomCheckpoint::At(w, r * cols + c) * x[c];
    y[r] = s;
  }
  return y;
}

// RMSNorm with the (1 + w) factor over x[offset, offset + dim).
void Norm(Vec& x, std::size_t offset, std::size_t dim, const TensorView& w, double eps) {
  double ss = 0.0;
  for (std::size_t i = 0; i < dim; ++i) ss += x[offset + i] * x[offset + i];
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
  for (std::size_t i = 0; i < dim; ++i) {
    x[offset + i] = x[offset + i] * inv * (1.0 + RandomCheckpoint::At(w, i));
  }
}

// transformers' f32 recipe for the RoPE angles; cos/sin in double.
void Rotate(Vec& x, std::size_t offset, std::size_t head_dim, std::int64_t pos, double theta,
            double scaling) {
  const std::size_t half = head_dim / 2;
  for (std::size_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float power =
        static_cast<float>(std::pow(static_cast<double>(static_cast<float>(theta)), exponent));
    const float inv_freq = (1.0f / power) / static_cast<float>(scaling);
    const float angle = static_cast<float>(pos) * inv_freq;
    const double c = std::cos(static_cast<double>(angle));
    const double s = std::sin(static_cast<double>(angle));
    const double x1 = x[offset + i];
    const double x2 = x[offset + half + i];
    x[offset + i] = x1 * c - x2 * s;
    x[offset + half + i] = x2 * c + x1 * s;
  }
}

double GeluTanh(double x) {
  const double k = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

}  // namespace

std::vector<std::int32_t> RandomTokens(std::size_t n, std::int64_t vocab, std::uint64_t seed) {
  Philox rng(seed);
  std::vector<std::int32_t> t(n);
  for (auto& id : t)
    id = static_cast<std::int32_t>(rng.NextU32() % static_cast<std::uint32_t>(vocab));
  return t;
}

std::vector<double> ReferenceForward(const Gemma3Config& cfg, const Gemma3Weights& weights,
                                     std::span<const std::int32_t> tokens) {
  const std::size_t n = tokens.size();
  const std::size_t H = static_cast<std::size_t>(cfg.hidden_size);
  const std::size_t V = static_cast<std::size_t>(cfg.vocab_size);
  const std::size_t heads = static_cast<std::size_t>(cfg.num_attention_heads);
  const std::size_t kv_heads = static_cast<std::size_t>(cfg.num_key_value_heads);
  const std::size_t hd = static_cast<std::size_t>(cfg.head_dim);
  const std::size_t group = heads / kv_heads;
  const double eps = cfg.rms_norm_eps;
  // f32 embedding scale, as transformers' f32 run uses.
  const double embed_scale = static_cast<float>(std::sqrt(static_cast<double>(H)));

  std::vector<Vec> x(n, Vec(H));
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t i = 0; i < H; ++i) {
      x[t][i] =
          RandomCheckpoint::At(weights.embed_tokens, static_cast<std::size_t>(tokens[t]) * H + i) *
          embed_scale;
    }
  }
  for (std::size_t l = 0; l < weights.layers.size(); ++l) {
    const Gemma3LayerWeights& w = weights.layers[l];
    const bool sliding = cfg.is_sliding(static_cast<std::int64_t>(l));
    const double theta = sliding ? cfg.rope_theta_local : cfg.rope_theta_global;
    const double scaling = sliding ? cfg.rope_scaling_local : cfg.rope_scaling_global;
    std::vector<Vec> q(n), k(n), v(n);
    for (std::size_t t = 0; t < n; ++t) {
      Vec h = x[t];
      Norm(h, 0, H, w.input_layernorm, eps);
      q[t] = Linear(w.q_proj, h);
      k[t] = Linear(w.k_proj, h);
      v[t] = Linear(w.v_proj, h);
      for (std::size_t hh = 0; hh < heads; ++hh) {
        Norm(q[t], hh * hd, hd, w.q_norm, eps);
        Rotate(q[t], hh * hd, hd, static_cast<std::int64_t>(t), theta, scaling);
      }
      for (std::size_t hh = 0; hh < kv_heads; ++hh) {
        Norm(k[t], hh * hd, hd, w.k_norm, eps);
        Rotate(k[t], hh * hd, hd, static_cast<std::int64_t>(t), theta, scaling);
      }
    }
    const double scale = std::pow(cfg.query_pre_attn_scalar, -0.5);
    for (std::size_t t = 0; t < n; ++t) {
      Vec attn(heads * hd, 0.0);
      for (std::size_t hh = 0; hh < heads; ++hh) {
        const std::size_t kvh = hh / group;
        Vec scores(t + 1, -INFINITY);
        double mx = -INFINITY;
        for (std::size_t j = 0; j <= t; ++j) {
          if (sliding && j + static_cast<std::size_t>(cfg.sliding_window) <= t) continue;
          double s = 0.0;
          for (std::size_t i = 0; i < hd; ++i) s += q[t][hh * hd + i] * k[j][kvh * hd + i];
          s *= scale;
          if (cfg.attn_logit_softcapping) {
            const double cap = *cfg.attn_logit_softcapping;
            s = cap * std::tanh(s / cap);
          }
          scores[j] = s;
          mx = std::max(mx, s);
        }
        double sum = 0.0;
        for (double& s : scores) {
          s = std::exp(s - mx);
          sum += s;
        }
        for (std::size_t j = 0; j <= t; ++j) {
          for (std::size_t i = 0; i < hd; ++i) {
            attn[hh * hd + i] += scores[j] / sum * v[j][kvh * hd + i];
          }
        }
      }
      Vec o = Linear(w.o_proj, attn);
      Norm(o, 0, H, w.post_attention_layernorm, eps);
      for (std::size_t i = 0; i < H; ++i) x[t][i] += o[i];
      Vec h = x[t];
      Norm(h, 0, H, w.pre_feedforward_layernorm, eps);
      const Vec gate = Linear(w.gate_proj, h);
      const Vec up = Linear(w.up_proj, h);
      Vec act(gate.size());
      for (std::size_t i = 0; i < act.size(); ++i) act[i] = GeluTanh(gate[i]) * up[i];
      Vec down = Linear(w.down_proj, act);
      Norm(down, 0, H, w.post_feedforward_layernorm, eps);
      for (std::size_t i = 0; i < H; ++i) x[t][i] += down[i];
    }
  }
  std::vector<double> logits(n * V);
  for (std::size_t t = 0; t < n; ++t) {
    Vec h = x[t];
    Norm(h, 0, H, weights.norm, eps);
    const Vec out = Linear(weights.lm_head.empty() ? weights.embed_tokens : weights.lm_head, h);
    for (std::size_t j = 0; j < V; ++j) {
      double z = out[j];
      if (cfg.final_logit_softcapping) {
        const double cap = *cfg.final_logit_softcapping;
        z = cap * std::tanh(z / cap);
      }
      logits[t * V + j] = z;
    }
  }
  return logits;
}

}  // namespace fgnet::testing
