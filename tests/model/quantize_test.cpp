// QuantizeCheckpoint: scheme names, the type each tensor gets, the checkpoint it builds, and the
// forward pass on it against the same model with the dequantized weights stored as F32.

#include "model/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/quant.h"
#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "model/synth.h"
#include "tiny_checkpoint.h"
#include "util/rng.h"

namespace fgnet {
namespace {

// hidden 256 and intermediate 512 (Q4_K / Q6_K fit), q_dim 160 (only Q4_0 / Q8_0 fit).
Gemma3Config SmallConfig(bool tied) {
  Gemma3Config c = Gemma3_270MConfig();
  c.vocab_size = 96;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 80;
  c.query_pre_attn_scalar = 80;
  c.sliding_window = 4;
  c.layer_types = {LayerType::kSliding, LayerType::kGlobal};
  c.tie_word_embeddings = tied;
  return c;
}

Checkpoint OpenSynth(const testing::TempDir& dir, const Gemma3Config& config, DType dtype) {
  SynthOptions options;
  options.dtype = dtype;
  options.seed = 5;
  options.weight_stddev = 0.05f;
  EXPECT_TRUE(WriteRandomCheckpoint(config, options, dir.path()).ok());
  auto ck = Checkpoint::Open(dir.path());
  EXPECT_TRUE(ck.ok()) << ck.error().message();
  return std::move(ck).value();
}

// An F32 in-memory copy of `source` (every tensor decoded), with `mutate(name, values)` applied.
Result<Checkpoint> F32Copy(
    const Checkpoint& source,
    const std::function<void(const std::string&, std::vector<float>&)>& mutate = {}) {
  auto buffers = std::make_shared<std::vector<std::vector<float>>>();
  buffers->reserve(source.tensors().size());
  Checkpoint::Parts parts;
  parts.format = CheckpointFormat::kInMemory;
  parts.path = source.dir();
  parts.config_path = source.config_path();
  parts.config = source.config();
  parts.tensors = TensorIndex(source.tensors().source());
  for (const auto& [name, entry] : source.tensors().all()) {
    const TensorView& v = entry.view;
    std::vector<float> values(static_cast<std::size_t>(v.num_elements()));
    const std::size_t cols = static_cast<std::size_t>(v.shape.back());
    const std::size_t row_bytes = DTypeRowBytes(v.dtype, cols);
    for (std::size_t r = 0; r < values.size() / cols; ++r) {
      cpu::DequantizeRow(v.dtype, static_cast<const std::uint8_t*>(v.data) + r * row_bytes, cols,
                         values.data() + r * cols);
    }
    if (mutate) mutate(name, values);
    buffers->push_back(std::move(values));
    parts.tensors.Add(name, TensorView{DType::kF32, v.shape, buffers->back().data()}, entry.file);
  }
  parts.storage = buffers;
  parts.norms_include_one = source.weights().norms_include_one;
  return Checkpoint::FromTensors(std::move(parts));
}

std::vector<float> RunLogits(const Checkpoint& ck, std::span<const std::int32_t> tokens) {
  auto model = Gemma3Model::Create(ck.config(), ck.weights());
  EXPECT_TRUE(model.ok()) << model.error().message();
  if (!model.ok()) return {};
  ThreadPool pool(2);
  KVCache kv = model->NewKVCache(static_cast<std::int64_t>(tokens.size()));
  std::vector<float> logits;
  const Status st = model->Forward(tokens, kv, pool, LogitsMode::kAll, &logits);
  EXPECT_TRUE(st.ok()) << st.error().message();
  return logits;
}

std::vector<std::int32_t> Prompt(std::int64_t vocab, std::size_t n) {
  Philox rng(21);
  std::vector<std::int32_t> ids(n);
  for (auto& id : ids) id = static_cast<std::int32_t>(rng.NextU32() % vocab);
  return ids;
}

TEST(QuantScheme, NamesRoundTripAndUnknownNamesListTheValidOnes) {
  for (QuantScheme s : {QuantScheme::kQ8_0, QuantScheme::kQ4_0, QuantScheme::kQ4_K}) {
    auto parsed = ParseQuantScheme(QuantSchemeName(s));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, s);
  }
  const auto bad = ParseQuantScheme("q5_k");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("'q5_k'"), std::string::npos) << bad.error().message();
  EXPECT_NE(bad.error().message().find("q8_0, q4_0 or q4_k"), std::string::npos);
  EXPECT_FALSE(ParseQuantScheme("Q8_0").ok());
}

TEST(QuantScheme, TypePerTensor) {
  const DType bf16 = DType::kBF16;
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ8_0, false, 640, bf16), DType::kQ8_0);
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ8_0, true, 640, bf16), DType::kQ8_0);
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ4_0, false, 640, bf16), DType::kQ4_0);
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ4_0, true, 640, bf16), DType::kQ8_0);
  // The 270M model: hidden 640 is not a multiple of 256, q_dim 1024 and intermediate 2048 are.
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ4_K, false, 640, bf16), DType::kQ4_0);
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ4_K, false, 1024, bf16), DType::kQ4_K);
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ4_K, false, 2048, bf16), DType::kQ4_K);
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ4_K, true, 640, bf16), DType::kQ8_0);
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ4_K, true, 256, bf16), DType::kQ6_K);
  // No block fits: kept.
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ8_0, false, 48, bf16), bf16);
  EXPECT_EQ(QuantizedDType(QuantScheme::kQ4_K, true, 40, DType::kF16), DType::kF16);
}

TEST(QuantizeCheckpoint, TypesShapesAndMetadata) {
  testing::TempDir dir;
  const Checkpoint source = OpenSynth(dir, SmallConfig(/*tied=*/false), DType::kBF16);
  ThreadPool pool(2);
  for (QuantScheme scheme : {QuantScheme::kQ8_0, QuantScheme::kQ4_0, QuantScheme::kQ4_K}) {
    SCOPED_TRACE(std::string(QuantSchemeName(scheme)));
    auto q = QuantizeCheckpoint(source, scheme, pool);
    ASSERT_TRUE(q.ok()) << q.error().message();
    EXPECT_EQ(q->format(), CheckpointFormat::kInMemory);
    EXPECT_EQ(q->quantization(), QuantSchemeName(scheme));
    EXPECT_EQ(q->content_hash(), source.content_hash());
    EXPECT_EQ(q->config(), source.config());
    EXPECT_EQ(q->side_dir(), source.side_dir());
    EXPECT_EQ(q->tensors().size(), source.tensors().size());
    const Gemma3Weights& w = q->weights();
    const bool k = scheme == QuantScheme::kQ4_K;
    const DType embed = k ? DType::kQ6_K : DType::kQ8_0;
    const DType linear256 = scheme == QuantScheme::kQ8_0 ? DType::kQ8_0
                            : k                          ? DType::kQ4_K
                                                         : DType::kQ4_0;
    const DType linear160 = scheme == QuantScheme::kQ8_0 ? DType::kQ8_0 : DType::kQ4_0;
    EXPECT_EQ(w.embed_tokens.dtype, embed);
    EXPECT_EQ(w.lm_head.dtype, embed);
    EXPECT_NE(w.lm_head.data, w.embed_tokens.data);
    EXPECT_EQ(w.norm.dtype, DType::kBF16);
    EXPECT_EQ(w.norm.data, source.weights().norm.data);  // shared, not copied
    for (const Gemma3LayerWeights& l : w.layers) {
      EXPECT_EQ(l.q_proj.dtype, linear256);
      EXPECT_EQ(l.k_proj.dtype, linear256);
      EXPECT_EQ(l.v_proj.dtype, linear256);
      EXPECT_EQ(l.gate_proj.dtype, linear256);
      EXPECT_EQ(l.up_proj.dtype, linear256);
      EXPECT_EQ(l.down_proj.dtype, linear256);  // in_features 512
      EXPECT_EQ(l.o_proj.dtype, linear160);     // in_features 160
      EXPECT_EQ(l.q_proj.shape, (std::vector<std::int64_t>{160, 256}));
      EXPECT_EQ(l.o_proj.shape, (std::vector<std::int64_t>{256, 160}));
      EXPECT_EQ(l.down_proj.shape, (std::vector<std::int64_t>{256, 512}));
      EXPECT_EQ(l.q_norm.dtype, DType::kBF16);
      EXPECT_EQ(l.input_layernorm.dtype, DType::kBF16);
    }
    // The quantized views hold the values QuantizeRow makes of the source rows.
    const TensorView& src = source.weights().layers[1].up_proj;
    const TensorView& dst = w.layers[1].up_proj;
    std::vector<float> row(256);
    std::vector<std::uint8_t> want(DTypeRowBytes(dst.dtype, 256));
    cpu::DequantizeRow(src.dtype, static_cast<const std::uint8_t*>(src.data) + 7 * 256 * 2, 256,
                       row.data());
    cpu::QuantizeRow(dst.dtype, row.data(), 256, want.data());
    EXPECT_EQ(0,
              std::memcmp(want.data(), static_cast<const std::uint8_t*>(dst.data) + 7 * want.size(),
                          want.size()));
  }
}

TEST(QuantizeCheckpoint, TiedEmbeddingIsQuantizedOnce) {
  testing::TempDir dir;
  const Checkpoint source = OpenSynth(dir, SmallConfig(/*tied=*/true), DType::kF32);
  ThreadPool pool(1);
  auto q = QuantizeCheckpoint(source, QuantScheme::kQ4_K, pool);
  ASSERT_TRUE(q.ok()) << q.error().message();
  EXPECT_EQ(q->weights().embed_tokens.dtype, DType::kQ6_K);
  EXPECT_EQ(q->weights().lm_head.data, q->weights().embed_tokens.data);
}

TEST(QuantizeCheckpoint, ForwardMatchesTheDequantizedWeightsInF32) {
  // The quantized kernels (decode and packed matmuls, embedding rows, the output projection)
  // against the float kernels on exactly the values the blocks hold: only the order of f32
  // sums differs.
  testing::TempDir dir;
  const Checkpoint source = OpenSynth(dir, SmallConfig(/*tied=*/false), DType::kBF16);
  ThreadPool pool(2);
  const std::vector<std::int32_t> prompt = Prompt(96, 14);
  for (QuantScheme scheme : {QuantScheme::kQ8_0, QuantScheme::kQ4_0, QuantScheme::kQ4_K}) {
    SCOPED_TRACE(std::string(QuantSchemeName(scheme)));
    auto q = QuantizeCheckpoint(source, scheme, pool);
    ASSERT_TRUE(q.ok()) << q.error().message();
    auto f = F32Copy(*q);
    ASSERT_TRUE(f.ok()) << f.error().message();
    // 14 tokens: the packed regime; then one more token: the decode regime.
    for (std::size_t n : {prompt.size(), std::size_t{1}}) {
      const auto tokens = std::span<const std::int32_t>(prompt).first(n);
      const std::vector<float> a = RunLogits(*q, tokens);
      const std::vector<float> b = RunLogits(*f, tokens);
      ASSERT_EQ(a.size(), b.size());
      double max_diff = 0, max_abs = 0;
      for (std::size_t i = 0; i < a.size(); ++i) {
        max_diff = std::max(max_diff, std::fabs(static_cast<double>(a[i]) - b[i]));
        max_abs = std::max(max_abs, std::fabs(static_cast<double>(b[i])));
      }
      EXPECT_LE(max_diff, 1e-4 * (1.0 + max_abs)) << n << " tokens";
      EXPECT_GT(max_abs, 0.1);
    }
  }
}

TEST(QuantizeCheckpoint, OutlivesItsSource) {
  testing::TempDir dir;
  auto source =
      std::make_unique<Checkpoint>(OpenSynth(dir, SmallConfig(/*tied=*/true), DType::kBF16));
  ThreadPool pool(2);
  auto q = QuantizeCheckpoint(*source, QuantScheme::kQ8_0, pool);
  ASSERT_TRUE(q.ok()) << q.error().message();
  const std::vector<std::int32_t> prompt = Prompt(96, 5);
  const std::vector<float> before = RunLogits(*q, prompt);
  source.reset();  // the norms still view its storage
  EXPECT_EQ(RunLogits(*q, prompt), before);
}

TEST(QuantizeCheckpoint, AlreadyQuantizedIsAnError) {
  testing::TempDir dir;
  const Checkpoint source = OpenSynth(dir, SmallConfig(/*tied=*/true), DType::kBF16);
  ThreadPool pool(2);
  auto q = QuantizeCheckpoint(source, QuantScheme::kQ4_0, pool);
  ASSERT_TRUE(q.ok()) << q.error().message();
  const auto again = QuantizeCheckpoint(*q, QuantScheme::kQ8_0, pool);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("already quantized (q4_0)"), std::string::npos)
      << again.error().message();
}

TEST(QuantizeCheckpoint, NonFiniteWeightIsAnErrorNamingTheTensor) {
  testing::TempDir dir;
  const Checkpoint source = OpenSynth(dir, SmallConfig(/*tied=*/true), DType::kBF16);
  auto bad = F32Copy(source, [](const std::string& name, std::vector<float>& values) {
    if (name == "model.layers.1.mlp.down_proj.weight") values[300] = std::nanf("");
  });
  ASSERT_TRUE(bad.ok()) << bad.error().message();
  ThreadPool pool(2);
  const auto q = QuantizeCheckpoint(*bad, QuantScheme::kQ8_0, pool);
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.error().message().find("'model.layers.1.mlp.down_proj.weight'"), std::string::npos)
      << q.error().message();
}

}  // namespace
}  // namespace fgnet
