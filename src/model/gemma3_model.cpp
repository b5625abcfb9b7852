#include "model/gemma3_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>

#include "backend/cpu/attention.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "tensor/dtype.h"

namespace fgnet {
namespace {

// Tokens per internal pass of a long Forward call: bounds the scratch memory (about 36 KB of
// activations per token for the 270M shapes) while keeping the matmuls large.
constexpr std::size_t kMaxChunk = 512;
// Positions whose RoPE cos/sin tables Create() precomputes (8 MB for head_dim 256); later
// positions get theirs computed per call.
constexpr std::int64_t kRopeTablePositions = 4096;
// Row-wise work below this many rows runs on the calling thread only.
constexpr std::size_t kMinRowsToParallelize = 16;

std::string LayerTensorName(std::size_t layer, std::string_view suffix) {
  return "model.layers." + std::to_string(layer) + "." + std::string(suffix) + ".weight";
}

Status CheckShape(const TensorView& t, const std::string& name,
                  std::initializer_list<std::int64_t> expected) {
  const std::vector<std::int64_t> want(expected);
  if (t.empty()) return MakeError("tensor '", name, "' is missing");
  if (t.shape != want) {
    return MakeError("tensor '", name, "' has shape ", ShapeToString(t.shape),
                     " but the config implies ", ShapeToString(want));
  }
  return Ok();
}

Result<cpu::WeightMatrix> Matrix(const TensorView& t, const std::string& name, std::int64_t rows,
                                 std::int64_t cols) {
  FGNET_TRY(CheckShape(t, name, {rows, cols}));
  if (static_cast<std::size_t>(cols) % DTypeBlockElements(t.dtype) != 0) {
    return MakeError("tensor '", name, "' is ", DTypeName(t.dtype), " but its rows of ", cols,
                     " are not a whole number of blocks of ", DTypeBlockElements(t.dtype));
  }
  return cpu::WeightMatrix::FromTensor(t);
}

// Runs fn(begin, end) over [0, rows), in parallel when there are enough rows.
template <class F>
void ForRows(ThreadPool& pool, std::size_t rows, const F& fn) {
  if (rows < kMinRowsToParallelize || pool.num_threads() == 1) {
    fn(std::size_t{0}, rows);
    return;
  }
  pool.ParallelFor(
      rows, kMinRowsToParallelize / 2,
      [&](std::size_t begin, std::size_t end, std::size_t /*thread*/) { fn(begin, end); });
}

struct LayerParams {
  cpu::WeightMatrix q, k, v, o, gate, up, down;
  std::vector<float> input_norm, post_attention_norm, pre_feedforward_norm, post_feedforward_norm;
  std::vector<float> q_norm, k_norm;
  bool sliding = false;
};

}  // namespace

Result<std::vector<float>> GemmaNormFactor(const TensorView& t, const std::string& name,
                                           std::int64_t dim, bool includes_one) {
  FGNET_TRY(CheckShape(t, name, {dim}));
  if (IsQuantized(t.dtype))
    return MakeError("tensor '", name, "' is ", DTypeName(t.dtype),
                     ": norms must be F32, BF16 or F16");
  const float one = includes_one ? 0.0f : 1.0f;
  std::vector<float> scale(static_cast<std::size_t>(dim));
  for (std::size_t i = 0; i < scale.size(); ++i) {
    float w = 0.0f;
    switch (t.dtype) {
      case DType::kF32:
        w = t.as<float>()[i];
        break;
      case DType::kBF16:
        w = BF16ToF32(t.as<std::uint16_t>()[i]);
        break;
      case DType::kF16:
        w = F16ToF32(t.as<std::uint16_t>()[i]);
        break;
      default:
        break;
    }
    scale[i] = one + w;
  }
  return scale;
}

struct Gemma3Model::Impl : ForwardDims {
  Gemma3Config config;
  cpu::WeightMatrix embed, lm_head;
  std::vector<float> final_norm;
  std::vector<LayerParams> layers;
  // RoPE inverse frequencies, cos/sin tables [rope_positions, head_dim / 2] and attention
  // parameters; index 0 sliding layers, 1 global layers.
  std::vector<float> inv_freq[2];
  std::int64_t rope_positions = 0;
  std::vector<float> rope_cos[2], rope_sin[2];
  cpu::AttentionParams attention[2];

  // Buffers of one pass over `c` tokens, carved from the scratch.
  struct Buffers {
    float *x, *h, *q, *k, *v, *attn, *o, *gate, *up, *cos[2], *sin[2];
  };
  using Segment = PassSegment;
  Buffers Carve(ForwardScratch& scratch, std::size_t c) const;
  // Where a pass stops early to hand out hidden states instead of logits (HiddenStates).
  struct HiddenTap {
    std::size_t index;  // 0 .. layers.size(), as HiddenStates numbers them
    float* out;         // [rows of the pass, hidden]
  };
  void RunPass(std::span<const Segment> segments, ThreadPool& pool, ForwardScratch& scratch,
               const HiddenTap* tap = nullptr) const;
  void ApplyLora(LoraPlan& plan, std::size_t layer, std::initializer_list<LoraPlan::Site> sites,
                 ThreadPool& pool, cpu::Workspace& ws) const;
};

Gemma3Model::Gemma3Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gemma3Model::Gemma3Model(Gemma3Model&&) noexcept = default;
Gemma3Model& Gemma3Model::operator=(Gemma3Model&&) noexcept = default;
Gemma3Model::~Gemma3Model() = default;

const Gemma3Config& Gemma3Model::config() const { return impl_->config; }

Result<Gemma3Model> Gemma3Model::Create(const Gemma3Config& config, const Gemma3Weights& weights) {
  const Gemma3Config& c = config;
  if (c.hidden_size <= 0 || c.intermediate_size <= 0 || c.vocab_size <= 0 ||
      c.num_hidden_layers <= 0 || c.num_attention_heads <= 0 || c.num_key_value_heads <= 0 ||
      c.head_dim <= 0) {
    return MakeError(
        "config: hidden_size, intermediate_size, vocab_size, num_hidden_layers, "
        "num_attention_heads, num_key_value_heads and head_dim must be positive");
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return MakeError("config: num_attention_heads ", c.num_attention_heads,
                     " is not a multiple of num_key_value_heads ", c.num_key_value_heads);
  }
  if (c.head_dim % 2 != 0)
    return MakeError("config: head_dim ", c.head_dim, " must be even for RoPE");
  if (static_cast<std::int64_t>(c.layer_types.size()) != c.num_hidden_layers) {
    return MakeError("config: layer_types has ", c.layer_types.size(),
                     " entries but num_hidden_layers is ", c.num_hidden_layers);
  }
  const bool any_sliding = std::find(c.layer_types.begin(), c.layer_types.end(),
                                     LayerType::kSliding) != c.layer_types.end();
  if (any_sliding && c.sliding_window <= 0) {
    return MakeError("config: sliding_window must be positive, got ", c.sliding_window);
  }
  if (!(c.query_pre_attn_scalar > 0.0)) {
    return MakeError("config: query_pre_attn_scalar must be positive, got ",
                     c.query_pre_attn_scalar);
  }
  if (!(c.rms_norm_eps >= 0.0)) return MakeError("config: rms_norm_eps must not be negative");
  if (c.hidden_activation != "gelu_pytorch_tanh" && c.hidden_activation != "gelu_tanh") {
    return MakeError("config: hidden_activation '", c.hidden_activation,
                     "' is not supported (expected gelu_pytorch_tanh)");
  }
  for (double theta : {c.rope_theta_local, c.rope_theta_global}) {
    if (!(theta > 0.0)) return MakeError("config: RoPE theta must be positive, got ", theta);
  }
  for (double factor : {c.rope_scaling_local, c.rope_scaling_global}) {
    if (!(factor > 0.0))
      return MakeError("config: RoPE scaling factor must be positive, got ", factor);
  }
  if (c.final_logit_softcapping && !(*c.final_logit_softcapping > 0.0)) {
    return MakeError("config: final_logit_softcapping must be positive when set");
  }
  if (c.attn_logit_softcapping && !(*c.attn_logit_softcapping > 0.0)) {
    return MakeError("config: attn_logit_softcapping must be positive when set");
  }
  if (static_cast<std::int64_t>(weights.layers.size()) != c.num_hidden_layers) {
    return MakeError("weights: ", weights.layers.size(), " layers but num_hidden_layers is ",
                     c.num_hidden_layers);
  }

  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.config = c;
  static_cast<ForwardDims&>(m) = ForwardDims::Of(c);

  const std::int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const std::int64_t QD = c.q_dim(), KVD = c.kv_dim(), HD = c.head_dim;
  FGNET_ASSIGN_OR_RETURN(m.embed, Matrix(weights.embed_tokens, "model.embed_tokens.weight", V, H));
  if (weights.lm_head.empty()) {
    if (!c.tie_word_embeddings)
      return MakeError("tensor 'lm_head.weight' is missing (embeddings are not tied)");
    m.lm_head = m.embed;
  } else {
    FGNET_ASSIGN_OR_RETURN(m.lm_head, Matrix(weights.lm_head, "lm_head.weight", V, H));
  }
  const auto norm = [&weights](const TensorView& t, const std::string& name, std::int64_t dim) {
    return GemmaNormFactor(t, name, dim, weights.norms_include_one);
  };
  FGNET_ASSIGN_OR_RETURN(m.final_norm, norm(weights.norm, "model.norm.weight", H));

  m.layers.resize(weights.layers.size());
  for (std::size_t l = 0; l < weights.layers.size(); ++l) {
    const Gemma3LayerWeights& w = weights.layers[l];
    LayerParams& p = m.layers[l];
    const auto name = [l](std::string_view s) { return LayerTensorName(l, s); };
    FGNET_ASSIGN_OR_RETURN(p.q, Matrix(w.q_proj, name("self_attn.q_proj"), QD, H));
    FGNET_ASSIGN_OR_RETURN(p.k, Matrix(w.k_proj, name("self_attn.k_proj"), KVD, H));
    FGNET_ASSIGN_OR_RETURN(p.v, Matrix(w.v_proj, name("self_attn.v_proj"), KVD, H));
    FGNET_ASSIGN_OR_RETURN(p.o, Matrix(w.o_proj, name("self_attn.o_proj"), H, QD));
    FGNET_ASSIGN_OR_RETURN(p.gate, Matrix(w.gate_proj, name("mlp.gate_proj"), I, H));
    FGNET_ASSIGN_OR_RETURN(p.up, Matrix(w.up_proj, name("mlp.up_proj"), I, H));
    FGNET_ASSIGN_OR_RETURN(p.down, Matrix(w.down_proj, name("mlp.down_proj"), H, I));
    FGNET_ASSIGN_OR_RETURN(p.input_norm, norm(w.input_layernorm, name("input_layernorm"), H));
    FGNET_ASSIGN_OR_RETURN(p.post_attention_norm,
                           norm(w.post_attention_layernorm, name("post_attention_layernorm"), H));
    FGNET_ASSIGN_OR_RETURN(p.pre_feedforward_norm,
                           norm(w.pre_feedforward_layernorm, name("pre_feedforward_layernorm"), H));
    FGNET_ASSIGN_OR_RETURN(p.post_feedforward_norm, norm(w.post_feedforward_layernorm,
                                                         name("post_feedforward_layernorm"), H));
    FGNET_ASSIGN_OR_RETURN(p.q_norm, norm(w.q_norm, name("self_attn.q_norm"), HD));
    FGNET_ASSIGN_OR_RETURN(p.k_norm, norm(w.k_norm, name("self_attn.k_norm"), HD));
    p.sliding = c.is_sliding(static_cast<std::int64_t>(l));
  }

  const double thetas[2] = {c.rope_theta_local, c.rope_theta_global};
  const double scalings[2] = {c.rope_scaling_local, c.rope_scaling_global};
  for (int r = 0; r < 2; ++r) {
    m.inv_freq[r].resize(m.head_dim / 2);
    cpu::RopeInvFreq(thetas[r], scalings[r], m.head_dim, m.inv_freq[r].data());
    m.rope_positions =
        std::min(kRopeTablePositions, std::max<std::int64_t>(c.max_position_embeddings, 0));
    const std::size_t table = static_cast<std::size_t>(m.rope_positions) * (m.head_dim / 2);
    m.rope_cos[r].resize(table);
    m.rope_sin[r].resize(table);
    cpu::RopeTable(m.inv_freq[r].data(), m.head_dim / 2, 0,
                   static_cast<std::size_t>(m.rope_positions), m.rope_cos[r].data(),
                   m.rope_sin[r].data());
    cpu::AttentionParams& a = m.attention[r];
    a.heads = m.heads;
    a.kv_heads = m.kv_heads;
    a.head_dim = m.head_dim;
    a.scale = static_cast<float>(std::pow(c.query_pre_attn_scalar, -0.5));
    a.softcap = c.attn_logit_softcapping ? static_cast<float>(*c.attn_logit_softcapping) : 0.0f;
    a.window = r == 0 ? c.sliding_window : 0;
  }
  return Gemma3Model(std::move(impl));
}

Result<std::unique_ptr<Memory>> Gemma3Model::AllocateKV(std::size_t bytes) const {
  return AllocateHostMemory(bytes);
}

KVCache Gemma3Model::NewKVCache(std::int64_t max_tokens) const {
  return KVCache(impl_->config, max_tokens);
}

Gemma3Model::Impl::Buffers Gemma3Model::Impl::Carve(ForwardScratch& scratch, std::size_t c) const {
  // Every buffer starts on a cache line.
  const auto round = [](std::size_t floats) { return (floats + 15) / 16 * 16; };
  const std::size_t half = head_dim / 2;
  const std::size_t sizes[] = {
      c * hidden,       c * hidden,       c * q_dim, c * kv_dim, c * kv_dim, c * q_dim, c * hidden,
      c * intermediate, c * intermediate, c * half,  c * half,   c * half,   c * half};
  std::size_t total = 0;
  for (std::size_t s : sizes) total += round(s);
  if (scratch.activations.size() < total) scratch.activations.resize(total);
  float* p = scratch.activations.data();
  float* ptrs[std::size(sizes)];
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    ptrs[i] = p;
    p += round(sizes[i]);
  }
  return Buffers{ptrs[0],
                 ptrs[1],
                 ptrs[2],
                 ptrs[3],
                 ptrs[4],
                 ptrs[5],
                 ptrs[6],
                 ptrs[7],
                 ptrs[8],
                 {ptrs[9], ptrs[10]},
                 {ptrs[11], ptrs[12]}};
}

void Gemma3Model::Impl::ApplyLora(LoraPlan& plan, std::size_t layer,
                                  std::initializer_list<LoraPlan::Site> sites, ThreadPool& pool,
                                  cpu::Workspace& ws) const {
  if (!plan.empty()) plan.Apply(layer, std::span<const LoraPlan::Site>(sites), pool, ws);
}

void Gemma3Model::Impl::RunPass(std::span<const Segment> segments, ThreadPool& pool,
                                ForwardScratch& scratch, const HiddenTap* tap) const {
  const Segment& last = segments.back();
  const std::size_t c = last.row + last.count;
  cpu::Workspace& ws = scratch.workspace;
  const Buffers b = Carve(scratch, c);
  // Decode-regime attention takes one float per visible key and thread: size that once for the
  // largest cache, so that decoding never grows it.
  std::int64_t capacity = 0;
  for (const Segment& seg : segments) capacity = std::max(capacity, seg.step->kv->capacity());
  ws.Reserve(pool.num_threads());
  for (std::size_t t = 0; t < pool.num_threads(); ++t) {
    ws.ForThread(t, static_cast<std::size_t>(capacity));
  }
  const std::size_t half = head_dim / 2;

  // RoPE cos/sin of every row: a view of the precomputed tables when the pass is one run of
  // positions inside them (a single sequence), else gathered per segment, and computed (in
  // parallel) for positions past the tables.
  const float* rope_c[2];
  const float* rope_s[2];
  const bool in_table = [&] {
    for (const Segment& seg : segments) {
      if (seg.first_pos + static_cast<std::int64_t>(seg.count) > rope_positions) return false;
    }
    return true;
  }();
  for (int r = 0; r < 2; ++r) {
    if (segments.size() == 1 && in_table) {
      rope_c[r] = rope_cos[r].data() + static_cast<std::size_t>(last.first_pos) * half;
      rope_s[r] = rope_sin[r].data() + static_cast<std::size_t>(last.first_pos) * half;
      continue;
    }
    for (const Segment& seg : segments) {
      float* cos = b.cos[r] + seg.row * half;
      float* sin = b.sin[r] + seg.row * half;
      if (seg.first_pos + static_cast<std::int64_t>(seg.count) <= rope_positions) {
        const std::size_t at = static_cast<std::size_t>(seg.first_pos) * half;
        std::memcpy(cos, rope_cos[r].data() + at, seg.count * half * sizeof(float));
        std::memcpy(sin, rope_sin[r].data() + at, seg.count * half * sizeof(float));
        continue;
      }
      ForRows(pool, seg.count, [&](std::size_t t0, std::size_t t1) {
        cpu::RopeTable(inv_freq[r].data(), half, seg.first_pos + static_cast<std::int64_t>(t0),
                       t1 - t0, cos + t0 * half, sin + t0 * half);
      });
    }
    rope_c[r] = b.cos[r];
    rope_s[r] = b.sin[r];
  }

  // Token ids, and the rows each adapter applies to.
  std::vector<std::int32_t>& ids = scratch.ids;
  ids.resize(c);
  LoraPlan& plan = scratch.lora;
  plan.Clear();
  for (const Segment& seg : segments) {
    std::memcpy(ids.data() + seg.row, seg.step->tokens.data() + seg.offset,
                seg.count * sizeof(std::int32_t));
    for (const AdapterUse& use : seg.step->adapters) {
      const std::int64_t skip = std::clamp<std::int64_t>(use.start - seg.first_pos, 0,
                                                         static_cast<std::int64_t>(seg.count));
      plan.Add(use.adapter, seg.row + static_cast<std::size_t>(skip), seg.row + seg.count,
               use.scale);
    }
  }

  cpu::EmbedRows(embed, ids, embed_scale, b.x);
  const std::size_t num_layers =
      tap == nullptr ? layers.size() : std::min(tap->index, layers.size());
  for (std::size_t l = 0; l < num_layers; ++l) {
    const LayerParams& p = layers[l];
    const int r = p.sliding ? 0 : 1;
    // Attention block.
    ForRows(pool, c, [&](std::size_t t0, std::size_t t1) {
      cpu::RMSNorm(b.x + t0 * hidden, t1 - t0, hidden, p.input_norm.data(), eps, b.h + t0 * hidden);
    });
    const cpu::MatMulOutput qkv[] = {{&p.q, b.q, q_dim}, {&p.k, b.k, kv_dim}, {&p.v, b.v, kv_dim}};
    cpu::MatMulMany(b.h, c, hidden, qkv, pool, ws);
    ApplyLora(plan, l,
              {{LoraModule::kQ, b.h, hidden, b.q, q_dim},
               {LoraModule::kK, b.h, hidden, b.k, kv_dim},
               {LoraModule::kV, b.h, hidden, b.v, kv_dim}},
              pool, ws);
    ForRows(pool, c, [&](std::size_t t0, std::size_t t1) {
      const std::size_t n = t1 - t0;
      cpu::RMSNorm(b.q + t0 * q_dim, n * heads, head_dim, p.q_norm.data(), eps, b.q + t0 * q_dim);
      cpu::RMSNorm(b.k + t0 * kv_dim, n * kv_heads, head_dim, p.k_norm.data(), eps,
                   b.k + t0 * kv_dim);
      cpu::RoPE(b.q + t0 * q_dim, n, heads, head_dim, rope_c[r] + t0 * half, rope_s[r] + t0 * half);
      cpu::RoPE(b.k + t0 * kv_dim, n, kv_heads, head_dim, rope_c[r] + t0 * half,
                rope_s[r] + t0 * half);
    });
    for (const Segment& seg : segments) {
      SequenceKV& kv = *seg.step->kv;
      const float* k = b.k + seg.row * kv_dim;
      const float* v = b.v + seg.row * kv_dim;
      // The oldest position any query of the chunk sees: a sliding layer's first query sees
      // window - 1 earlier positions, all of which the store still holds.
      const std::int64_t begin =
          p.sliding ? std::max<std::int64_t>(0, seg.first_pos - (config.sliding_window - 1)) : 0;
      std::vector<cpu::KVSpan>& spans = scratch.spans;
      spans.clear();
      kv.AppendSpans(static_cast<std::int64_t>(l), begin, &spans);
      spans.push_back({k, v, kv_dim, seg.first_pos, seg.count});
      cpu::Attention(b.q + seg.row * q_dim, seg.count, seg.first_pos, spans, attention[r],
                     b.attn + seg.row * q_dim, pool, ws);
      kv.Write(static_cast<std::int64_t>(l), seg.first_pos, seg.count, k, v);
    }
    cpu::MatMul(b.attn, c, q_dim, p.o, b.o, hidden, pool, ws);
    ApplyLora(plan, l, {{LoraModule::kO, b.attn, q_dim, b.o, hidden}}, pool, ws);
    ForRows(pool, c, [&](std::size_t t0, std::size_t t1) {
      cpu::RMSNormAddTo(b.o + t0 * hidden, t1 - t0, hidden, p.post_attention_norm.data(), eps,
                        b.x + t0 * hidden);
      cpu::RMSNorm(b.x + t0 * hidden, t1 - t0, hidden, p.pre_feedforward_norm.data(), eps,
                   b.h + t0 * hidden);
    });
    // MLP block.
    const cpu::MatMulOutput gate_up[] = {{&p.gate, b.gate, intermediate},
                                         {&p.up, b.up, intermediate}};
    cpu::MatMulMany(b.h, c, hidden, gate_up, pool, ws);
    ApplyLora(plan, l,
              {{LoraModule::kGate, b.h, hidden, b.gate, intermediate},
               {LoraModule::kUp, b.h, hidden, b.up, intermediate}},
              pool, ws);
    ForRows(pool, c, [&](std::size_t t0, std::size_t t1) {
      cpu::GeluTanhMul(b.gate + t0 * intermediate, b.up + t0 * intermediate,
                       (t1 - t0) * intermediate, b.gate + t0 * intermediate);
    });
    cpu::MatMul(b.gate, c, intermediate, p.down, b.o, hidden, pool, ws);
    ApplyLora(plan, l, {{LoraModule::kDown, b.gate, intermediate, b.o, hidden}}, pool, ws);
    ForRows(pool, c, [&](std::size_t t0, std::size_t t1) {
      cpu::RMSNormAddTo(b.o + t0 * hidden, t1 - t0, hidden, p.post_feedforward_norm.data(), eps,
                        b.x + t0 * hidden);
    });
  }
  for (const Segment& seg : segments) seg.step->kv->Advance(static_cast<std::int64_t>(seg.count));
  if (tap != nullptr) {
    if (tap->index < layers.size()) {
      std::memcpy(tap->out, b.x, c * hidden * sizeof(float));
    } else {
      ForRows(pool, c, [&](std::size_t t0, std::size_t t1) {
        cpu::RMSNorm(b.x + t0 * hidden, t1 - t0, hidden, final_norm.data(), eps,
                     tap->out + t0 * hidden);
      });
    }
    return;
  }

  // Logits: the final norm of the rows that need them, gathered into b.h, then the output matmul
  // straight into the destination when there is one, else into the scratch and copied out.
  std::size_t rows = 0;
  const Segment* only = nullptr;
  std::size_t with_logits = 0;
  for (const Segment& seg : segments) {
    if (seg.logits == nullptr) continue;
    const std::size_t n = seg.count - seg.logits_begin;
    std::memcpy(b.o + rows * hidden, b.x + (seg.row + seg.logits_begin) * hidden,
                n * hidden * sizeof(float));
    rows += n;
    only = &seg;
    ++with_logits;
  }
  if (rows == 0) return;
  ForRows(pool, rows, [&](std::size_t t0, std::size_t t1) {
    cpu::RMSNorm(b.o + t0 * hidden, t1 - t0, hidden, final_norm.data(), eps, b.h + t0 * hidden);
  });
  float* out = only->logits;
  if (with_logits > 1) {
    scratch.logits.resize(rows * vocab);
    out = scratch.logits.data();
  }
  cpu::MatMul(b.h, rows, hidden, lm_head, out, vocab, pool, ws);
  if (final_softcap > 0.0f) {
    pool.ParallelFor(rows * vocab, 4096,
                     [&](std::size_t begin, std::size_t end, std::size_t /*t*/) {
                       cpu::Softcap(out + begin, end - begin, final_softcap);
                     });
  }
  if (with_logits == 1) return;
  std::size_t row = 0;
  for (const Segment& seg : segments) {
    if (seg.logits == nullptr) continue;
    const std::size_t n = seg.count - seg.logits_begin;
    std::memcpy(seg.logits, out + row * vocab, n * vocab * sizeof(float));
    row += n;
  }
}

Status Gemma3Model::Forward(std::span<const std::int32_t> tokens, KVCache& kv, ThreadPool& pool,
                            LogitsMode mode, std::vector<float>* logits,
                            std::span<const AdapterUse> adapters) const {
  const SequenceStep step{tokens, &kv, mode, logits, adapters};
  return ForwardBatch(std::span<const SequenceStep>(&step, 1), pool, kv.scratch());
}

Status Gemma3Model::HiddenStates(std::span<const std::int32_t> tokens, std::int64_t index,
                                 ThreadPool& pool, std::vector<float>* out,
                                 std::span<const AdapterUse> adapters) const {
  const Impl& m = *impl_;
  const std::int64_t L = m.config.num_hidden_layers;
  if (out == nullptr) return MakeError("HiddenStates: no output buffer given");
  if (tokens.empty()) return MakeError("HiddenStates: no tokens");
  if (index < -(L + 1) || index > L) {
    return MakeError("HiddenStates: index ", index, " is out of range [", -(L + 1), ", ", L,
                     "] for a model of ", L, " layers");
  }
  const std::int64_t at = index < 0 ? index + L + 1 : index;
  KVCache kv = NewKVCache(static_cast<std::int64_t>(tokens.size()));
  const SequenceStep step{tokens, &kv, LogitsMode::kNone, nullptr, adapters};
  FGNET_TRY(ValidateSteps(m.config, Device::Cpu(), std::span<const SequenceStep>(&step, 1)));
  out->resize(tokens.size() * m.hidden);
  for (std::size_t done = 0; done < tokens.size();) {
    const std::size_t count = std::min(kMaxChunk, tokens.size() - done);
    const Impl::Segment seg{&step, done, count, 0, kv.length(), count, nullptr};
    const Impl::HiddenTap tap{static_cast<std::size_t>(at), out->data() + done * m.hidden};
    m.RunPass(std::span<const Impl::Segment>(&seg, 1), pool, kv.scratch(), &tap);
    done += count;
  }
  return Ok();
}

Status Gemma3Model::ForwardBatch(std::span<const SequenceStep> steps, ThreadPool& pool,
                                 ForwardScratch& scratch) const {
  FGNET_TRY(ValidateSteps(impl_->config, Device::Cpu(), steps));
  // The callback captures one pointer, so that std::function keeps it without allocating
  // (decoding allocates nothing).
  struct Pass {
    const Impl* impl;
    ThreadPool* pool;
    ForwardScratch* scratch;
  } pass{impl_.get(), &pool, &scratch};
  return RunInPasses(impl_->config.vocab_size, steps, kMaxChunk, scratch, /*host_select=*/true,
                     [p = &pass](std::span<const PassSegment> segments) {
                       p->impl->RunPass(segments, *p->pool, *p->scratch);
                       return Ok();
                     });
}

}  // namespace fgnet
