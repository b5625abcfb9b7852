// GGUF LoRA adapters (model/gguf_lora.h): round trips (plain LoRA exactly; rsLoRA and
// per-module scales with the scale folded into B), the layout llama.cpp expects, llama.cpp's
// alpha semantics, and rejection of files that are not adapters for the base.
#include "model/gguf_lora.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/quant.h"
#include "fails_with.h"
#include "model/gguf.h"
#include "tiny_checkpoint.h"

namespace fgnet {
namespace {

using testing::FailsWith;
using testing::TempDir;

// Deterministic values of A and B.
float Value(std::size_t layer, std::size_t module, std::size_t i, bool b) {
  const std::uint32_t h =
      static_cast<std::uint32_t>((layer * 7 + module) * 1000003 + i * 31 + (b ? 17 : 0));
  return static_cast<float>(static_cast<int>(h % 2001) - 1000) / 1024.0f;
}

// An adapter on `base` adapting `modules` of every layer with rank(m) and scale(m).
template <class RankFn, class ScaleFn>
LoraAdapter MakeAdapter(const Gemma3Config& base, const std::vector<LoraModule>& modules,
                        RankFn rank, ScaleFn scale) {
  LoraAdapter adapter;
  adapter.name = "expert";
  adapter.format = "in-memory";
  adapter.layers.resize(static_cast<std::size_t>(base.num_hidden_layers));
  for (std::size_t l = 0; l < adapter.layers.size(); ++l) {
    for (LoraModule m : modules) {
      const auto [out, in] = LoraModuleShape(base, m);
      LoraLayer& layer = adapter.layers[l][static_cast<std::size_t>(m)];
      layer.rank = rank(m);
      layer.scale = scale(m);
      layer.a.resize(layer.rank * static_cast<std::size_t>(in));
      layer.b.resize(static_cast<std::size_t>(out) * layer.rank);
      for (std::size_t i = 0; i < layer.a.size(); ++i) {
        layer.a[i] = Value(l, static_cast<std::size_t>(m), i, false);
      }
      for (std::size_t i = 0; i < layer.b.size(); ++i) {
        layer.b[i] = Value(l, static_cast<std::size_t>(m), i, true);
      }
    }
  }
  adapter.content_hash = LoraContentHash(adapter);
  return adapter;
}

const std::vector<LoraModule> kAll(kAllLoraModules.begin(), kAllLoraModules.end());

class GgufLoraTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) const { return dir_.File(name); }

  // Writes an adapter file by hand: metadata, then (name, view) tensors.
  std::string WriteRaw(const std::vector<std::pair<std::string, GgufValue>>& metadata,
                       const std::vector<std::pair<std::string, TensorView>>& tensors) {
    GgufWriter writer;
    for (const auto& [k, v] : metadata) writer.Set(k, v);
    for (const auto& [n, t] : tensors) writer.AddTensor(n, t);
    const std::string path = Path("raw.gguf");
    FGNET_CHECK(writer.Write(path).ok());
    return path;
  }

  static std::vector<std::pair<std::string, GgufValue>> AdapterMetadata() {
    return {{"general.architecture", GgufValue::String("gemma3")},
            {"general.type", GgufValue::String("adapter")},
            {"adapter.type", GgufValue::String("lora")},
            {"adapter.lora.alpha", GgufValue::F32(8.0f)}};
  }

  Gemma3Config base_ = testing::TinyConfig();
  TempDir dir_;
  // A [2, 8] and B [8, 2]: a rank-2 update of q_proj ([8, 8] in the tiny base).
  std::vector<float> a_ = std::vector<float>(16, 0.5f);
  std::vector<float> b_ = std::vector<float>(16, 0.25f);
};

TEST_F(GgufLoraTest, PlainLoraRoundTripsExactly) {
  LoraAdapter adapter = MakeAdapter(
      base_, kAll, [](LoraModule) { return std::size_t{4}; }, [](LoraModule) { return 2.0f; });
  adapter.config.alora_invocation_tokens = {106, 7, 0};
  adapter.base_model_hash = std::string(64, 'a');
  adapter.content_hash = LoraContentHash(adapter);
  const std::string path = Path("my-expert.gguf");
  ASSERT_TRUE(WriteGgufAdapter(adapter, path).ok());

  auto loaded = LoadGgufAdapter(path, base_);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->name, "my-expert");
  EXPECT_EQ(loaded->path, path);
  EXPECT_EQ(loaded->format, "gguf");
  EXPECT_EQ(loaded->content_hash, adapter.content_hash);
  EXPECT_EQ(loaded->content_hash, LoraContentHash(*loaded));
  EXPECT_EQ(loaded->config.r, 4);
  EXPECT_EQ(loaded->config.lora_alpha, 8.0);
  EXPECT_EQ(loaded->config.alora_invocation_tokens, (std::vector<std::int32_t>{106, 7, 0}));
  EXPECT_EQ(loaded->config.target_modules, loaded->adapted_modules());
  EXPECT_EQ(loaded->config.target_modules.size(), 7u);
  EXPECT_EQ(loaded->base_model_hash, adapter.base_model_hash);
  for (std::size_t l = 0; l < adapter.layers.size(); ++l) {
    for (LoraModule m : kAll) {
      EXPECT_EQ(loaded->at(l, m).scale, 2.0f);
      EXPECT_EQ(loaded->at(l, m).a, adapter.at(l, m).a);
      EXPECT_EQ(loaded->at(l, m).b, adapter.at(l, m).b);
    }
  }
}

TEST_F(GgufLoraTest, WritesTheLayoutLlamaCppReads) {
  const LoraAdapter adapter = MakeAdapter(
      base_, {LoraModule::kQ, LoraModule::kDown}, [](LoraModule) { return std::size_t{3}; },
      [](LoraModule) { return 0.5f; });
  const std::string path = Path("layout.gguf");
  ASSERT_TRUE(WriteGgufAdapter(adapter, path).ok());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.error().message();
  EXPECT_EQ(*file->Find("general.architecture")->AsString(), "gemma3");
  EXPECT_EQ(*file->Find("general.type")->AsString(), "adapter");
  EXPECT_EQ(*file->Find("adapter.type")->AsString(), "lora");
  EXPECT_EQ(file->Find("adapter.lora.alpha")->AsF32(), 1.5f);  // 0.5 * rank 3
  EXPECT_EQ(file->Find("adapter.alora.invocation_tokens"), nullptr);
  EXPECT_EQ(file->tensors().size(), 3u * 2u * 2u);
  // lora_a: ggml dims [in, rank] = [hidden 8, 3]; lora_b: [rank, out].
  const GgufTensorInfo* a = file->FindTensor("blk.2.ffn_down.weight.lora_a");
  const GgufTensorInfo* b = file->FindTensor("blk.2.ffn_down.weight.lora_b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->shape, (std::vector<std::int64_t>{3, 16}));  // [rank, in = intermediate]
  EXPECT_EQ(b->shape, (std::vector<std::int64_t>{8, 3}));   // [out = hidden, rank]
  EXPECT_EQ(a->view.dtype, DType::kF32);
  EXPECT_EQ(a->view.as<float>()[5], adapter.at(2, LoraModule::kDown).a[5]);
  EXPECT_NE(file->FindTensor("blk.0.attn_q.weight.lora_a"), nullptr);
}

TEST_F(GgufLoraTest, RsLoraWithOneRankRoundTripsExactly) {
  // rsLoRA: scale = alpha / sqrt(r) = 16 / 2; GGUF's alpha becomes 8 * 4 = 32.
  const LoraAdapter adapter = MakeAdapter(
      base_, kAll, [](LoraModule) { return std::size_t{4}; }, [](LoraModule) { return 8.0f; });
  ASSERT_TRUE(WriteGgufAdapter(adapter, Path("rs.gguf")).ok());
  auto loaded = LoadGgufAdapter(Path("rs.gguf"), base_);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->config.lora_alpha, 32.0);
  EXPECT_EQ(loaded->content_hash, adapter.content_hash);
}

TEST_F(GgufLoraTest, ScalesAlphaCannotExpressAreFoldedIntoB) {
  // rsLoRA with two ranks (scale 16 / sqrt(r)), and an odd per-module scale.
  const auto rank = [](LoraModule m) {
    return m == LoraModule::kDown || m == LoraModule::kUp ? std::size_t{9} : std::size_t{4};
  };
  const auto scale = [&](LoraModule m) {
    if (m == LoraModule::kV) return 0.1f;
    return static_cast<float>(16.0 / std::sqrt(static_cast<double>(rank(m))));
  };
  const LoraAdapter adapter = MakeAdapter(base_, kAll, rank, scale);
  ASSERT_TRUE(WriteGgufAdapter(adapter, Path("folded.gguf")).ok());
  auto loaded = LoadGgufAdapter(Path("folded.gguf"), base_);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  // The rank-4 modules (the majority) keep their scale 8 exactly: alpha = 32.
  EXPECT_EQ(loaded->config.lora_alpha, 32.0);
  std::size_t exact = 0;
  for (std::size_t l = 0; l < adapter.layers.size(); ++l) {
    for (LoraModule m : kAll) {
      const LoraLayer& want = adapter.at(l, m);
      const LoraLayer& got = loaded->at(l, m);
      ASSERT_EQ(got.rank, want.rank);
      EXPECT_EQ(got.a, want.a);
      EXPECT_EQ(got.scale, 32.0f / static_cast<float>(want.rank));
      if (got.scale == want.scale) {
        ++exact;
        EXPECT_EQ(got.b, want.b);
        continue;
      }
      // scale * B is kept to f32 rounding.
      for (std::size_t i = 0; i < want.b.size(); ++i) {
        const double w = static_cast<double>(want.scale) * want.b[i];
        const double g = static_cast<double>(got.scale) * got.b[i];
        EXPECT_NEAR(g, w, 1e-6 * std::fabs(w) + 1e-12) << l << " " << LoraModuleName(m) << " " << i;
      }
    }
  }
  EXPECT_EQ(exact, 3u * 4u);  // q, k, o, gate in every layer
}

TEST_F(GgufLoraTest, AlphaFollowsLlamaCpp) {
  // No alpha (or 0): scale 1. F16 tensors are read as f32.
  std::vector<std::uint16_t> a16(16), b16(16);
  for (std::size_t i = 0; i < 16; ++i) {
    a16[i] = F32ToF16(0.5f);
    b16[i] = F32ToF16(-0.25f);
  }
  auto metadata = AdapterMetadata();
  metadata.pop_back();
  const std::string path = WriteRaw(
      metadata, {{"blk.1.attn_q.weight.lora_a", TensorView{DType::kF16, {2, 8}, a16.data()}},
                 {"blk.1.attn_q.weight.lora_b", TensorView{DType::kF16, {8, 2}, b16.data()}},
                 {"blk.1.attn_norm_norm.weight", TensorView{DType::kF32, {8}, a_.data()}}});
  auto loaded = LoadGgufAdapter(path, base_);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  const LoraLayer& q = loaded->at(1, LoraModule::kQ);
  EXPECT_EQ(q.rank, 2u);
  EXPECT_EQ(q.scale, 1.0f);
  EXPECT_EQ(q.a, std::vector<float>(16, 0.5f));
  EXPECT_EQ(q.b, std::vector<float>(16, -0.25f));
  EXPECT_FALSE(loaded->at(0, LoraModule::kQ).active());
  EXPECT_EQ(loaded->config.target_modules, std::vector<std::string>{"q_proj"});

  metadata.emplace_back("adapter.lora.alpha", GgufValue::F32(0.0f));
  loaded = LoadGgufAdapter(
      WriteRaw(metadata,
               {{"blk.1.attn_q.weight.lora_a", TensorView{DType::kF32, {2, 8}, a_.data()}},
                {"blk.1.attn_q.weight.lora_b", TensorView{DType::kF32, {8, 2}, b_.data()}}}),
      base_);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->at(1, LoraModule::kQ).scale, 1.0f);
}

TEST_F(GgufLoraTest, RejectsFilesThatAreNotAdapters) {
  auto metadata = AdapterMetadata();
  const std::vector<std::pair<std::string, TensorView>> pair = {
      {"blk.0.attn_q.weight.lora_a", TensorView{DType::kF32, {2, 8}, a_.data()}},
      {"blk.0.attn_q.weight.lora_b", TensorView{DType::kF32, {8, 2}, b_.data()}}};
  metadata[1].second = GgufValue::String("model");
  EXPECT_TRUE(FailsWith(LoadGgufAdapter(WriteRaw(metadata, pair), base_),
                        {"raw.gguf", "not a LoRA adapter", "general.type is 'model'"}));
  metadata.erase(metadata.begin() + 1);
  EXPECT_TRUE(FailsWith(LoadGgufAdapter(WriteRaw(metadata, pair), base_),
                        {"raw.gguf", "not a LoRA adapter", "general.type is absent"}));
  metadata = AdapterMetadata();
  metadata[0].second = GgufValue::String("llama");
  EXPECT_TRUE(FailsWith(LoadGgufAdapter(WriteRaw(metadata, pair), base_),
                        {"raw.gguf", "general.architecture is 'llama'", "expected 'gemma3'"}));
  metadata = AdapterMetadata();
  metadata[2].second = GgufValue::String("control_vector");
  EXPECT_TRUE(FailsWith(LoadGgufAdapter(WriteRaw(metadata, pair), base_),
                        {"raw.gguf", "adapter.type is 'control_vector'", "expected 'lora'"}));
  metadata = AdapterMetadata();
  metadata[3].second = GgufValue::String("8");
  EXPECT_TRUE(FailsWith(LoadGgufAdapter(WriteRaw(metadata, pair), base_),
                        {"raw.gguf", "adapter.lora.alpha must be a finite number"}));
  EXPECT_TRUE(FailsWith(LoadGgufAdapter(Path("absent.gguf"), base_), {"absent.gguf"}));
}

TEST_F(GgufLoraTest, RejectsUnpairedAndUnexpectedTensors) {
  const auto metadata = AdapterMetadata();
  EXPECT_TRUE(FailsWith(
      LoadGgufAdapter(WriteRaw(metadata, {{"blk.0.attn_q.weight.lora_a",
                                           TensorView{DType::kF32, {2, 8}, a_.data()}}}),
                      base_),
      {"raw.gguf", "'blk.0.attn_q.weight.lora_a' has no matching 'blk.0.attn_q.weight.lora_b'"}));
  EXPECT_TRUE(FailsWith(
      LoadGgufAdapter(WriteRaw(metadata, {{"blk.0.ffn_up.weight.lora_b",
                                           TensorView{DType::kF32, {16, 1}, b_.data()}}}),
                      base_),
      {"raw.gguf", "'blk.0.ffn_up.weight.lora_b' has no matching 'blk.0.ffn_up.weight.lora_a'"}));
  EXPECT_TRUE(FailsWith(
      LoadGgufAdapter(
          WriteRaw(metadata, {{"blk.0.attn_q.weight", TensorView{DType::kF32, {2, 8}, a_.data()}}}),
          base_),
      {"raw.gguf", "'blk.0.attn_q.weight'", "neither a '.lora_a' nor a '.lora_b'"}));
  EXPECT_TRUE(FailsWith(
      LoadGgufAdapter(
          WriteRaw(metadata,
                   {{"token_embd.weight.lora_a", TensorView{DType::kF32, {2, 8}, a_.data()}},
                    {"token_embd.weight.lora_b", TensorView{DType::kF32, {8, 2}, b_.data()}}}),
          base_),
      {"raw.gguf", "adapts 'token_embd.weight'", "cannot apply"}));
}

TEST_F(GgufLoraTest, QuantizedTensorsAreDequantized) {
  // convert_lora_to_gguf.py --outtype q8_0 writes Q8_0 tensors; A [2, 32] on a base with
  // hidden 32 is one Q8_0 block per row.
  Gemma3Config base = base_;
  base.hidden_size = 32;
  base.head_dim = 16;
  std::vector<float> a(64), b(64);
  for (std::size_t i = 0; i < 64; ++i) {
    a[i] = std::sin(static_cast<float>(i));
    b[i] = std::cos(static_cast<float>(i));
  }
  std::vector<std::uint8_t> q8(2 * 34);
  cpu::QuantizeRow(DType::kQ8_0, a.data(), 32, q8.data());
  cpu::QuantizeRow(DType::kQ8_0, a.data() + 32, 32, q8.data() + 34);
  std::vector<float> want(64);
  cpu::DequantizeRow(DType::kQ8_0, q8.data(), 64, want.data());
  auto loaded = LoadGgufAdapter(
      WriteRaw(AdapterMetadata(),
               {{"blk.2.attn_q.weight.lora_a", TensorView{DType::kQ8_0, {2, 32}, q8.data()}},
                {"blk.2.attn_q.weight.lora_b", TensorView{DType::kF32, {32, 2}, b.data()}}}),
      base);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->at(2, LoraModule::kQ).a, want);
  EXPECT_NE(want, a);  // really quantized
  EXPECT_EQ(loaded->at(2, LoraModule::kQ).b, b);
  EXPECT_EQ(loaded->at(2, LoraModule::kQ).scale, 4.0f);  // alpha 8 / rank 2
}

TEST_F(GgufLoraTest, RejectsShapeMismatchWithTheBase) {
  const auto metadata = AdapterMetadata();
  // attn_k is [kv_dim 4, hidden 8] in the base: B must be [4, rank].
  EXPECT_TRUE(FailsWith(
      LoadGgufAdapter(
          WriteRaw(metadata,
                   {{"blk.0.attn_k.weight.lora_a", TensorView{DType::kF32, {2, 8}, a_.data()}},
                    {"blk.0.attn_k.weight.lora_b", TensorView{DType::kF32, {8, 2}, b_.data()}}}),
          base_),
      {"raw.gguf", "do not fit the base model's 'blk.0.attn_k.weight' of shape [4, 8]",
       "expected [2, 8] and [4, 2]"}));
  // A's rank disagrees with B's.
  EXPECT_TRUE(FailsWith(
      LoadGgufAdapter(
          WriteRaw(metadata,
                   {{"blk.0.attn_q.weight.lora_a", TensorView{DType::kF32, {2, 8}, a_.data()}},
                    {"blk.0.attn_q.weight.lora_b", TensorView{DType::kF32, {4, 4}, b_.data()}}}),
          base_),
      {"raw.gguf", "not A [rank, in] and B [out, rank] of one rank"}));
  // Layer 3 of a 3-layer base.
  EXPECT_TRUE(FailsWith(
      LoadGgufAdapter(
          WriteRaw(metadata,
                   {{"blk.3.attn_q.weight.lora_a", TensorView{DType::kF32, {2, 8}, a_.data()}},
                    {"blk.3.attn_q.weight.lora_b", TensorView{DType::kF32, {8, 2}, b_.data()}}}),
          base_),
      {"raw.gguf", "adapts layer 3", "has 3 layers"}));
  // An adapter written for a wider base.
  Gemma3Config wide = base_;
  wide.hidden_size = 16;
  const LoraAdapter adapter = MakeAdapter(
      wide, {LoraModule::kO}, [](LoraModule) { return std::size_t{2}; },
      [](LoraModule) { return 1.0f; });
  ASSERT_TRUE(WriteGgufAdapter(adapter, Path("wide.gguf")).ok());
  EXPECT_TRUE(FailsWith(
      LoadGgufAdapter(Path("wide.gguf"), base_),
      {"wide.gguf", "'blk.0.attn_output.weight.lora_a' of shape [2, 8]", "of shape [8, 8]"}));
}

TEST_F(GgufLoraTest, WriterRejectsNegativeInvocationTokens) {
  LoraAdapter adapter = MakeAdapter(
      base_, {LoraModule::kQ}, [](LoraModule) { return std::size_t{1}; },
      [](LoraModule) { return 1.0f; });
  adapter.config.alora_invocation_tokens = {-1};
  EXPECT_TRUE(
      FailsWith(WriteGgufAdapter(adapter, Path("neg.gguf")), {"neg.gguf", "invocation token -1"}));
}

}  // namespace
}  // namespace fgnet
