#include "model/synth.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "model/safetensors.h"
#include "util/rng.h"
#include "util/status.h"

namespace fgnet {
namespace {

// An owned tensor to be written.
struct OwnedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;
};

// Approximately normal values (sum of four uniforms, variance-corrected): cheap and adequate for
// random weights. Each tensor draws from its own Philox stream, so tensors are independent of the
// order in which they are made.
OwnedTensor MakeTensor(std::string name, std::vector<std::int64_t> shape, DType dtype, float stddev,
                       std::uint64_t seed, std::uint64_t stream) {
  OwnedTensor t{std::move(name), std::move(shape), {}};
  std::int64_t n = 1;
  for (auto d : t.shape) n *= d;
  t.bytes.resize(static_cast<std::size_t>(n) * DTypeSize(dtype));
  Philox rng(seed, stream);
  // Sum of 4 U(0,1) has variance 1/3; scale to unit variance.
  const float scale = stddev * std::sqrt(3.0f);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint32_t a = rng.NextU32();
    const std::uint32_t b = rng.NextU32();
    const float u = static_cast<float>((a & 0xffff) + (a >> 16) + (b & 0xffff) + (b >> 16)) *
                        (1.0f / 65536.0f) -
                    2.0f;
    const float v = u * scale;
    const auto index = static_cast<std::size_t>(i);
    switch (dtype) {
      case DType::kF32:
        std::memcpy(t.bytes.data() + index * 4, &v, 4);
        break;
      case DType::kBF16: {
        const std::uint16_t h = F32ToBF16(v);
        std::memcpy(t.bytes.data() + index * 2, &h, 2);
        break;
      }
      case DType::kF16: {
        const std::uint16_t h = F32ToF16(v);
        std::memcpy(t.bytes.data() + index * 2, &h, 2);
        break;
      }
      default:
        FGNET_CHECK(false && "synth writes float tensors only");
    }
  }
  return t;
}

}  // namespace

Gemma3Config Gemma3_270MConfig() {
  Gemma3Config c;
  c.model_type = "gemma3_text";
  c.architectures = {"Gemma3ForCausalLM"};
  c.vocab_size = 262144;
  c.hidden_size = 640;
  c.intermediate_size = 2048;
  c.num_hidden_layers = 18;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 1;
  c.head_dim = 256;
  c.max_position_embeddings = 32768;
  c.sliding_window = 512;
  c.layer_types.clear();
  for (int i = 0; i < 18; ++i) {
    c.layer_types.push_back((i + 1) % 6 == 0 ? LayerType::kGlobal : LayerType::kSliding);
  }
  c.rope_theta_global = 1'000'000.0;
  c.rope_theta_local = 10'000.0;
  c.query_pre_attn_scalar = 256;
  c.rms_norm_eps = 1e-6;
  c.hidden_activation = "gelu_pytorch_tanh";
  c.tie_word_embeddings = true;
  c.bos_token_id = 2;
  c.eos_token_ids = {1};
  c.pad_token_id = 0;
  c.torch_dtype = "bfloat16";
  return c;
}

std::optional<Gemma3Config> FindPresetConfig(std::string_view name) {
  if (name == "gemma-3-270m" || name == "functiongemma-270m") return Gemma3_270MConfig();
  return std::nullopt;
}

Result<std::uint64_t> WriteRandomCheckpoint(const Gemma3Config& config, const SynthOptions& options,
                                            const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return MakeError(dir, ": cannot create directory: ", ec.message());

  const std::int64_t h = config.hidden_size;
  std::vector<OwnedTensor> tensors;
  std::uint64_t stream = 0;
  auto add = [&](std::string name, std::vector<std::int64_t> shape, float stddev) {
    tensors.push_back(MakeTensor(std::move(name), std::move(shape), options.dtype, stddev,
                                 options.seed, stream++));
  };
  add("model.embed_tokens.weight", {config.vocab_size, h}, options.weight_stddev);
  add("model.norm.weight", {h}, options.norm_stddev);
  for (std::int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {h}, options.norm_stddev);
    add(p + "self_attn.q_proj.weight", {config.q_dim(), h}, options.weight_stddev);
    add(p + "self_attn.k_proj.weight", {config.kv_dim(), h}, options.weight_stddev);
    add(p + "self_attn.v_proj.weight", {config.kv_dim(), h}, options.weight_stddev);
    add(p + "self_attn.o_proj.weight", {h, config.q_dim()}, options.weight_stddev);
    add(p + "self_attn.q_norm.weight", {config.head_dim}, options.norm_stddev);
    add(p + "self_attn.k_norm.weight", {config.head_dim}, options.norm_stddev);
    add(p + "post_attention_layernorm.weight", {h}, options.norm_stddev);
    add(p + "pre_feedforward_layernorm.weight", {h}, options.norm_stddev);
    add(p + "mlp.gate_proj.weight", {config.intermediate_size, h}, options.weight_stddev);
    add(p + "mlp.up_proj.weight", {config.intermediate_size, h}, options.weight_stddev);
    add(p + "mlp.down_proj.weight", {h, config.intermediate_size}, options.weight_stddev);
    add(p + "post_feedforward_layernorm.weight", {h}, options.norm_stddev);
  }
  if (!config.tie_word_embeddings) {
    add("lm_head.weight", {config.vocab_size, h}, options.weight_stddev);
  }

  std::vector<SafetensorsEntry> entries;
  std::uint64_t total = 0;
  for (const auto& t : tensors) {
    entries.push_back({t.name, TensorView{options.dtype, t.shape, t.bytes.data()}});
    total += t.bytes.size();
  }
  Gemma3Config written = config;
  written.torch_dtype = options.dtype == DType::kF32    ? "float32"
                        : options.dtype == DType::kBF16 ? "bfloat16"
                                                        : "float16";
  const std::string config_path = dir + "/config.json";
  {
    std::ofstream out(config_path, std::ios::trunc);
    out << Gemma3ConfigToJson(written).dump(2) << "\n";
    if (!out) return MakeError(config_path, ": write failed");
  }
  FGNET_TRY(WriteSafetensors(dir + "/model.safetensors", entries, {{"format", "pt"}}));
  return total;
}

LoraAdapter RandomLoraAdapter(const Gemma3Config& config, std::size_t rank, std::uint64_t seed,
                              std::string name, float stddev) {
  LoraAdapter adapter;
  adapter.name = std::move(name);
  adapter.path = adapter.name;
  adapter.format = "in-memory";
  adapter.config.r = static_cast<std::int64_t>(rank);
  adapter.config.lora_alpha = static_cast<double>(rank);
  adapter.layers.resize(static_cast<std::size_t>(config.num_hidden_layers));
  std::uint64_t stream = 0;
  for (auto& layer : adapter.layers) {
    for (LoraModule m : kAllLoraModules) {
      const auto [out, in] = LoraModuleShape(config, m);
      LoraLayer& l = layer[static_cast<std::size_t>(m)];
      l.rank = rank;
      l.scale = 1.0f;
      const OwnedTensor a = MakeTensor("a", {static_cast<std::int64_t>(rank), in}, DType::kF32,
                                       stddev, seed, stream++);
      const OwnedTensor b = MakeTensor("b", {out, static_cast<std::int64_t>(rank)}, DType::kF32,
                                       stddev, seed, stream++);
      l.a.resize(a.bytes.size() / sizeof(float));
      l.b.resize(b.bytes.size() / sizeof(float));
      std::memcpy(l.a.data(), a.bytes.data(), a.bytes.size());
      std::memcpy(l.b.data(), b.bytes.data(), b.bytes.size());
    }
  }
  adapter.config.target_modules = adapter.adapted_modules();
  adapter.content_hash = LoraContentHash(adapter);
  return adapter;
}

}  // namespace fgnet
