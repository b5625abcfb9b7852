#include "tiny_checkpoint.h"

#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/status.h"

namespace fgnet::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/fgnet_model_io_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  FGNET_CHECK(::mkdtemp(buf.data()) != nullptr);
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  FGNET_CHECK(out.good());
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  FGNET_CHECK(in.good());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string RawSafetensors(const std::string& header, const std::string& data,
                           std::optional<std::uint64_t> declared_length) {
  const std::uint64_t n = declared_length.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

float ValueAt(const TensorView& view, std::int64_t i) {
  const auto* bytes = static_cast<const std::uint8_t*>(view.data);
  switch (view.dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, bytes + 4 * i, 4);
      return f;
    }
    case DType::kBF16:
    case DType::kF16: {
      std::uint16_t h;
      std::memcpy(&h, bytes + 2 * i, 2);
      return view.dtype == DType::kBF16 ? BF16ToF32(h) : F16ToF32(h);
    }
    default:
      FGNET_CHECK(false && "quantized tensor ");
  }
  return 0;
}

float TinyValue(const std::string& name, std::int64_t i) {
  std::uint32_t h = 2166136261u;
  for (const char c : name) h = (h ^ static_cast<std::uint8_t>(c)) * 16777619u;
  h = (h ^ static_cast<std::uint32_t>(i)) * 16777619u;
  h ^= h >> 13;
  return static_cast<float>(static_cast<int>(h % 64) - 32) / 8.0f;
}

void TensorStore::Add(const std::string& name, const std::vector<std::int64_t>& shape,
                      DType dtype) {
  TensorView view;
  view.dtype = dtype;
  view.shape = shape;
  const std::int64_t n = view.num_elements();
  std::vector<std::uint8_t> buf(view.num_bytes());
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = TinyValue(name, i);
    if (dtype == DType::kF32) {
      std::memcpy(buf.data() + 4 * i, &v, 4);
    } else {
      const std::uint16_t h = dtype == DType::kBF16 ? F32ToBF16(v) : F32ToF16(v);
      std::memcpy(buf.data() + 2 * i, &h, 2);
    }
  }
  buffers_.push_back(std::move(buf));
  view.data = buffers_.back().data();
  entries_.push_back({name, view});
}

std::vector<SafetensorsEntry> TensorStore::Subset(const std::set<std::string>& names) const {
  std::vector<SafetensorsEntry> out;
  for (const auto& e : entries_) {
    if (names.contains(e.name)) out.push_back(e);
  }
  return out;
}

Gemma3Config TinyConfig() {
  Gemma3Config c;
  c.vocab_size = 32;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  c.max_position_embeddings = 64;
  c.sliding_window = 4;
  c.layer_types = {LayerType::kSliding, LayerType::kSliding, LayerType::kGlobal};
  c.query_pre_attn_scalar = 4;
  c.architectures = {"Gemma3ForCausalLM"};
  return c;
}

std::map<std::string, std::vector<std::int64_t>> TinyTensorShapes(const Gemma3Config& c) {
  const std::int64_t h = c.hidden_size;
  std::map<std::string, std::vector<std::int64_t>> shapes = {
      {"embed_tokens.weight", {c.vocab_size, h}}, {"norm.weight", {h}}};
  if (!c.tie_word_embeddings) shapes["lm_head.weight"] = {c.vocab_size, h};
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    shapes[p + "input_layernorm.weight"] = {h};
    shapes[p + "self_attn.q_proj.weight"] = {c.q_dim(), h};
    shapes[p + "self_attn.k_proj.weight"] = {c.kv_dim(), h};
    shapes[p + "self_attn.v_proj.weight"] = {c.kv_dim(), h};
    shapes[p + "self_attn.o_proj.weight"] = {h, c.q_dim()};
    shapes[p + "self_attn.q_norm.weight"] = {c.head_dim};
    shapes[p + "self_attn.k_norm.weight"] = {c.head_dim};
    shapes[p + "post_attention_layernorm.weight"] = {h};
    shapes[p + "pre_feedforward_layernorm.weight"] = {h};
    shapes[p + "mlp.gate_proj.weight"] = {c.intermediate_size, h};
    shapes[p + "mlp.up_proj.weight"] = {c.intermediate_size, h};
    shapes[p + "mlp.down_proj.weight"] = {h, c.intermediate_size};
    shapes[p + "post_feedforward_layernorm.weight"] = {h};
  }
  return shapes;
}

Status WriteTinyCheckpoint(const std::string& dir, const Gemma3Config& c, const TinyOptions& o) {
  const Json config = o.config_json ? *o.config_json : Gemma3ConfigToJson(c);
  WriteFile(dir + "/config.json", config.dump(2));

  auto shapes = TinyTensorShapes(c);
  if (o.force_lm_head) shapes["lm_head.weight"] = {c.vocab_size, c.hidden_size};
  TensorStore store;
  for (const auto& [name, shape] : shapes) {
    if (o.omit.contains(name)) continue;
    const auto it = o.shapes.find(name);
    const std::string full = name == "lm_head.weight" ? o.lm_head : o.prefix + name;
    store.Add(full, it == o.shapes.end() ? shape : it->second, o.dtype);
  }
  for (const auto& [name, shape] : o.extra) store.Add(name, shape, o.dtype);

  if (o.num_shards <= 1) return WriteSafetensors(dir + "/model.safetensors", store.entries());
  std::vector<std::set<std::string>> shard_names(static_cast<std::size_t>(o.num_shards));
  std::map<std::string, std::string> weight_map;
  std::uint64_t total = 0;
  const auto& entries = store.entries();
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const std::size_t shard = i % shard_names.size();
    shard_names[shard].insert(entries[i].name);
    weight_map[entries[i].name] = "model-" + std::to_string(shard + 1) + ".safetensors";
    total += entries[i].tensor.num_bytes();
  }
  for (std::size_t s = 0; s < shard_names.size(); ++s) {
    FGNET_TRY(WriteSafetensors(dir + "/model-" + std::to_string(s + 1) + ".safetensors",
                               store.Subset(shard_names[s])));
  }
  return WriteSafetensorsIndex(dir + "/model.safetensors.index.json", weight_map, total);
}

}  // namespace fgnet::testing
