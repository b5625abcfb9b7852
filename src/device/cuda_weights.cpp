#include "device/cuda_weights.h"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/ops.h"
#include "model/gemma3_model.h"
#include "tensor/dtype.h"

namespace fgnet {
namespace {

std::size_t AlignUp(std::size_t n, std::size_t a = 256) { return (n + a - 1) / a * a; }

// A weight as BF16 bits, rounding F32 and F16 (round to nearest even).
Result<std::vector<std::uint16_t>> ToBF16(const TensorView& t, const std::string& name) {
  const auto n = static_cast<std::size_t>(t.num_elements());
  std::vector<std::uint16_t> out(n);
  switch (t.dtype) {
    case DType::kBF16:
      std::memcpy(out.data(), t.data, n * sizeof(std::uint16_t));
      break;
    case DType::kF32:
      for (std::size_t i = 0; i < n; ++i) out[i] = F32ToBF16(t.as<float>()[i]);
      break;
    case DType::kF16:
      for (std::size_t i = 0; i < n; ++i) out[i] = F32ToBF16(F16ToF32(t.as<std::uint16_t>()[i]));
      break;
    default:
      return MakeError(
          "tensor '", name, "' is ", DTypeName(t.dtype),
          ": the CUDA backend reads F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K weights");
  }
  return out;
}

// Host copies of everything uploaded, packed in one buffer with 256-byte aligned offsets.
class UploadPlan {
 public:
  std::size_t Add(const void* data, std::size_t bytes) {
    const std::size_t at = AlignUp(bytes_.size());
    bytes_.resize(at + bytes);
    std::memcpy(bytes_.data() + at, data, bytes);
    return at;
  }
  template <typename T>
  std::size_t Add(const std::vector<T>& v) {
    return Add(v.data(), v.size() * sizeof(T));
  }
  const std::vector<char>& bytes() const { return bytes_; }

 private:
  std::vector<char> bytes_;
};

// Where a matrix went in the upload: BF16 at `at`, or repacked values at `at` and scales at
// `scales_at`.
struct MatrixAt {
  std::size_t at = 0, scales_at = 0;
  bool quantized = false;
  cuda::QuantLayout layout = cuda::QuantLayout::kInt8G32;
  std::size_t rows = 0, cols = 0;

  DeviceMatrix On(const char* base) const {
    DeviceMatrix m;
    if (!quantized) {
      m.bf16 = reinterpret_cast<const std::uint16_t*>(base + at);
    } else {
      m.quant = {layout, reinterpret_cast<const std::uint8_t*>(base + at),
                 reinterpret_cast<const float*>(base + scales_at), rows, cols};
    }
    return m;
  }
};

std::string LayerName(std::size_t layer, const char* suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix + ".weight";
}

}  // namespace

Result<DeviceWeights> UploadWeights(const Gemma3Config& config, const Gemma3Weights& weights,
                                    const std::string& device_name) {
  const Gemma3Config& c = config;
  UploadPlan plan;
  // Quantized matrices keep their values (repacked); float ones become BF16.
  const auto matrix = [&plan](const TensorView& t, const std::string& name) -> Result<MatrixAt> {
    MatrixAt at;
    if (IsQuantized(t.dtype)) {
      const auto rows = static_cast<std::size_t>(t.shape[0]);
      const auto cols = static_cast<std::size_t>(t.shape[1]);
      auto packed = cuda::PackQuantMatrix(t.dtype, t.data, rows, cols);
      if (!packed.ok()) return MakeError("tensor '", name, "': ", packed.error().message());
      at.quantized = true;
      at.layout = packed->layout;
      at.rows = rows;
      at.cols = cols;
      at.at = plan.Add(packed->values);
      at.scales_at = plan.Add(packed->scales);
      return at;
    }
    FGNET_ASSIGN_OR_RETURN(std::vector<std::uint16_t> bits, ToBF16(t, name));
    at.at = plan.Add(bits);
    return at;
  };
  const auto norm = [&plan, &weights](const TensorView& t, const std::string& name,
                                      std::int64_t dim) -> Result<std::size_t> {
    FGNET_ASSIGN_OR_RETURN(std::vector<float> f,
                           GemmaNormFactor(t, name, dim, weights.norms_include_one));
    return plan.Add(f);
  };
  FGNET_ASSIGN_OR_RETURN(const MatrixAt embed_at,
                         matrix(weights.embed_tokens, "model.embed_tokens.weight"));
  MatrixAt lm_head_at = embed_at;
  if (!weights.lm_head.empty() && weights.lm_head.data != weights.embed_tokens.data) {
    FGNET_ASSIGN_OR_RETURN(lm_head_at, matrix(weights.lm_head, "lm_head.weight"));
  }
  FGNET_ASSIGN_OR_RETURN(const std::size_t final_norm_at,
                         norm(weights.norm, "model.norm.weight", c.hidden_size));
  std::size_t inv_freq_at[2];
  const double thetas[2] = {c.rope_theta_local, c.rope_theta_global};
  const double scalings[2] = {c.rope_scaling_local, c.rope_scaling_global};
  const auto head_dim = static_cast<std::size_t>(c.head_dim);
  for (int r = 0; r < 2; ++r) {
    std::vector<float> inv(head_dim / 2);
    cpu::RopeInvFreq(thetas[r], scalings[r], head_dim, inv.data());
    inv_freq_at[r] = plan.Add(inv);
  }
  struct LayerOffsets {
    MatrixAt q, k, v, o, gate, up, down;
    std::size_t in, post_attn, pre_ff, post_ff, qn, kn;
  };
  std::vector<LayerOffsets> offsets(weights.layers.size());
  for (std::size_t l = 0; l < weights.layers.size(); ++l) {
    const Gemma3LayerWeights& w = weights.layers[l];
    LayerOffsets& o = offsets[l];
    FGNET_ASSIGN_OR_RETURN(o.q, matrix(w.q_proj, LayerName(l, "self_attn.q_proj")));
    FGNET_ASSIGN_OR_RETURN(o.k, matrix(w.k_proj, LayerName(l, "self_attn.k_proj")));
    FGNET_ASSIGN_OR_RETURN(o.v, matrix(w.v_proj, LayerName(l, "self_attn.v_proj")));
    FGNET_ASSIGN_OR_RETURN(o.o, matrix(w.o_proj, LayerName(l, "self_attn.o_proj")));
    FGNET_ASSIGN_OR_RETURN(o.gate, matrix(w.gate_proj, LayerName(l, "mlp.gate_proj")));
    FGNET_ASSIGN_OR_RETURN(o.up, matrix(w.up_proj, LayerName(l, "mlp.up_proj")));
    FGNET_ASSIGN_OR_RETURN(o.down, matrix(w.down_proj, LayerName(l, "mlp.down_proj")));
    FGNET_ASSIGN_OR_RETURN(o.in,
                           norm(w.input_layernorm, LayerName(l, "input_layernorm"), c.hidden_size));
    FGNET_ASSIGN_OR_RETURN(
        o.post_attn,
        norm(w.post_attention_layernorm, LayerName(l, "post_attention_layernorm"), c.hidden_size));
    FGNET_ASSIGN_OR_RETURN(
        o.pre_ff, norm(w.pre_feedforward_layernorm, LayerName(l, "pre_feedforward_layernorm"),
                       c.hidden_size));
    FGNET_ASSIGN_OR_RETURN(
        o.post_ff, norm(w.post_feedforward_layernorm, LayerName(l, "post_feedforward_layernorm"),
                        c.hidden_size));
    FGNET_ASSIGN_OR_RETURN(o.qn, norm(w.q_norm, LayerName(l, "self_attn.q_norm"), c.head_dim));
    FGNET_ASSIGN_OR_RETURN(o.kn, norm(w.k_norm, LayerName(l, "self_attn.k_norm"), c.head_dim));
  }
  auto uploaded = cuda::DeviceMemory::Allocate(plan.bytes().size());
  if (!uploaded.ok()) {
    return MakeError("weights (", plan.bytes().size() >> 20, " MiB) on ", device_name, ": ",
                     uploaded.error().message());
  }
  DeviceWeights result;
  result.weight_memory = std::move(*uploaded);
  FGNET_TRY(result.weight_memory.CopyFromHost(plan.bytes().data(), plan.bytes().size()));
  const char* base = static_cast<const char*>(result.weight_memory.data());
  const auto f32 = [base](std::size_t at) { return reinterpret_cast<const float*>(base + at); };
  result.embed = embed_at.On(base);
  result.lm_head = lm_head_at.On(base);
  result.final_norm = f32(final_norm_at);
  for (int r = 0; r < 2; ++r) result.inv_freq[r] = f32(inv_freq_at[r]);
  result.layers.resize(offsets.size());
  for (std::size_t l = 0; l < offsets.size(); ++l) {
    const LayerOffsets& o = offsets[l];
    result.layers[l] = {o.q.On(base),     o.k.On(base),
                        o.v.On(base),     o.o.On(base),
                        o.gate.On(base),  o.up.On(base),
                        o.down.On(base),  f32(o.in),
                        f32(o.post_attn), f32(o.pre_ff),
                        f32(o.post_ff),   f32(o.qn),
                        f32(o.kn),        c.is_sliding(static_cast<std::int64_t>(l))};
  }
  return result;
}

}  // namespace fgnet
