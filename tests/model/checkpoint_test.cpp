// Checkpoint::Open on tiny checkpoints written with WriteSafetensors: binding in every dtype,
// tied and untied heads, multimodal prefixes, sharding, missing files, and every way the config
// can disagree with the tensors.
#include "model/checkpoint.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "fails_with.h"
#include "tiny_checkpoint.h"

namespace fgnet {
namespace {

using testing::FailsWith;
using testing::TempDir;
using testing::TinyConfig;
using testing::TinyOptions;
using testing::TinyTensorShapes;
using testing::TinyValue;
using testing::ValueAt;
using testing::WriteFile;
using testing::WriteTinyCheckpoint;

// Every bound view holds the values written for its name.
void ExpectBound(const Checkpoint& ck, const std::string& prefix, DType dtype) {
  const Gemma3Config& c = ck.config();
  const Gemma3Weights& w = ck.weights();
  const auto check = [&](const TensorView& v, const std::string& name,
                         std::vector<std::int64_t> shape) {
    SCOPED_TRACE(name);
    EXPECT_EQ(v.dtype, dtype);
    EXPECT_EQ(v.shape, shape);
    ASSERT_NE(v.data, nullptr);
    for (std::int64_t i = 0; i < v.num_elements(); ++i)
      ASSERT_EQ(ValueAt(v, i), TinyValue(name, i));
  };
  const std::int64_t h = c.hidden_size;
  check(w.embed_tokens, prefix + "embed_tokens.weight", {c.vocab_size, h});
  check(w.norm, prefix + "norm.weight", {h});
  ASSERT_EQ(w.layers.size(), static_cast<std::size_t>(c.num_hidden_layers));
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const auto& l = w.layers[static_cast<std::size_t>(i)];
    const std::string p = prefix + "layers." + std::to_string(i) + ".";
    check(l.input_layernorm, p + "input_layernorm.weight", {h});
    check(l.q_proj, p + "self_attn.q_proj.weight", {c.q_dim(), h});
    check(l.k_proj, p + "self_attn.k_proj.weight", {c.kv_dim(), h});
    check(l.v_proj, p + "self_attn.v_proj.weight", {c.kv_dim(), h});
    check(l.o_proj, p + "self_attn.o_proj.weight", {h, c.q_dim()});
    check(l.q_norm, p + "self_attn.q_norm.weight", {c.head_dim});
    check(l.k_norm, p + "self_attn.k_norm.weight", {c.head_dim});
    check(l.post_attention_layernorm, p + "post_attention_layernorm.weight", {h});
    check(l.pre_feedforward_layernorm, p + "pre_feedforward_layernorm.weight", {h});
    check(l.gate_proj, p + "mlp.gate_proj.weight", {c.intermediate_size, h});
    check(l.up_proj, p + "mlp.up_proj.weight", {c.intermediate_size, h});
    check(l.down_proj, p + "mlp.down_proj.weight", {h, c.intermediate_size});
    check(l.post_feedforward_layernorm, p + "post_feedforward_layernorm.weight", {h});
  }
}

std::uint64_t TinyParameters(const Gemma3Config& c) {
  std::uint64_t n = 0;
  for (const auto& [name, shape] : TinyTensorShapes(c)) {
    std::uint64_t e = 1;
    for (const auto d : shape) e *= static_cast<std::uint64_t>(d);
    n += e;
  }
  return n;
}

TEST(CheckpointTest, OpensTiedCheckpointsInEveryDtype) {
  for (const DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    TempDir dir;
    const Gemma3Config config = TinyConfig();
    TinyOptions options;
    options.dtype = dtype;
    ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), config, options).ok());
    auto ck = Checkpoint::Open(dir.path());
    ASSERT_TRUE(ck.ok()) << ck.error().message();
    EXPECT_EQ(ck->dir(), dir.path());
    EXPECT_EQ(ck->config_path(), dir.File("config.json"));
    EXPECT_EQ(ck->tensor_prefix(), "model.");
    EXPECT_TRUE(ck->config() == config);
    ExpectBound(*ck, "model.", dtype);
    EXPECT_EQ(ck->weights().lm_head.data, ck->weights().embed_tokens.data);
    EXPECT_EQ(ck->weights().lm_head.shape, ck->weights().embed_tokens.shape);
    EXPECT_TRUE(ck->unused_tensors().empty());
    EXPECT_EQ(ck->num_model_parameters(), TinyParameters(config));
    EXPECT_EQ(ck->tensors().total_elements(), TinyParameters(config));
    EXPECT_EQ(ck->tensors().BytesByDType(),
              (std::map<DType, std::uint64_t>{{dtype, TinyParameters(config) * DTypeSize(dtype)}}));
  }
}

TEST(CheckpointTest, ViewsSurviveMoves) {
  TempDir dir;
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig()).ok());
  auto ck = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  Checkpoint moved = std::move(ck).value();
  Checkpoint again = std::move(moved);
  ExpectBound(again, "model.", DType::kF32);
}

TEST(CheckpointTest, UntiedCheckpointsBindLmHead) {
  TempDir dir;
  Gemma3Config config = TinyConfig();
  config.tie_word_embeddings = false;
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), config).ok());
  auto ck = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  const TensorView& head = ck->weights().lm_head;
  EXPECT_NE(head.data, ck->weights().embed_tokens.data);
  EXPECT_EQ(head.shape, (std::vector<std::int64_t>{32, 8}));
  EXPECT_EQ(ValueAt(head, 5), TinyValue("lm_head.weight", 5));
  EXPECT_EQ(ck->num_model_parameters(), TinyParameters(config));
}

TEST(CheckpointTest, UntiedCheckpointWithoutLmHeadIsAnError) {
  TempDir dir;
  Gemma3Config config = TinyConfig();
  config.tie_word_embeddings = false;
  TinyOptions options;
  options.omit = {"lm_head.weight"};
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), config, options).ok());
  EXPECT_TRUE(FailsWith(Checkpoint::Open(dir.path()),
                        {dir.File("model.safetensors"), "missing tensor 'lm_head.weight'",
                         dir.File("config.json"), "tie_word_embeddings is false"}));
}

TEST(CheckpointTest, TiedCheckpointIgnoresAStoredLmHead) {
  TempDir dir;
  TinyOptions options;
  options.force_lm_head = true;
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig(), options).ok());
  auto ck = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_EQ(ck->weights().lm_head.data, ck->weights().embed_tokens.data);
  EXPECT_EQ(ck->unused_tensors(), (std::vector<std::string>{"lm_head.weight"}));
}

TEST(CheckpointTest, ReadsMultimodalPrefixes) {
  const struct {
    const char* prefix;
    const char* lm_head;
  } layouts[] = {{"language_model.model.", "language_model.lm_head.weight"},
                 {"model.language_model.", "lm_head.weight"}};
  for (const auto& layout : layouts) {
    SCOPED_TRACE(layout.prefix);
    TempDir dir;
    Gemma3Config config = TinyConfig();
    config.tie_word_embeddings = false;
    Json json = {{"model_type", "gemma3"},
                 {"architectures", {"Gemma3ForConditionalGeneration"}},
                 {"tie_word_embeddings", false},
                 {"text_config", Gemma3ConfigToJson(config)}};
    json["text_config"].erase("architectures");
    TinyOptions options;
    options.dtype = DType::kBF16;
    options.prefix = layout.prefix;
    options.lm_head = layout.lm_head;
    options.config_json = json;
    options.extra = {{"vision_tower.embeddings.patch_embedding.weight", {4, 3, 2, 2}},
                     {"multi_modal_projector.mm_input_projection_weight", {4, 8}}};
    ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), config, options).ok());
    auto ck = Checkpoint::Open(dir.path());
    ASSERT_TRUE(ck.ok()) << ck.error().message();
    EXPECT_TRUE(ck->config().multimodal);
    EXPECT_EQ(ck->tensor_prefix(), layout.prefix);
    ExpectBound(*ck, layout.prefix, DType::kBF16);
    EXPECT_EQ(ValueAt(ck->weights().lm_head, 3), TinyValue(layout.lm_head, 3));
    EXPECT_EQ(ck->unused_tensors(),
              (std::vector<std::string>{"multi_modal_projector.mm_input_projection_weight",
                                        "vision_tower.embeddings.patch_embedding.weight"}));
  }
}

TEST(CheckpointTest, RejectsTwoTextModels) {
  TempDir dir;
  TinyOptions options;
  options.extra = {{"language_model.model.embed_tokens.weight", {32, 8}}};
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig(), options).ok());
  EXPECT_TRUE(FailsWith(
      Checkpoint::Open(dir.path()),
      {dir.File("model.safetensors"), "two text models", "'model.'", "'language_model.model.'"}));
}

TEST(CheckpointTest, RejectsWeightsWithoutAGemmaModel) {
  TempDir dir;
  TinyOptions options;
  options.prefix = "transformer.";
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig(), options).ok());
  EXPECT_TRUE(FailsWith(Checkpoint::Open(dir.path()), {dir.File("model.safetensors"),
                                                       "missing tensor 'model.embed_tokens.weight'",
                                                       "not a Gemma 3 checkpoint"}));
}

TEST(CheckpointTest, OpensShardedCheckpoints) {
  TempDir dir;
  Gemma3Config config = TinyConfig();
  config.tie_word_embeddings = false;
  TinyOptions options;
  options.num_shards = 3;
  options.dtype = DType::kF16;
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), config, options).ok());
  auto ck = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_EQ(ck->tensors().num_files(), 3u);
  ExpectBound(*ck, "model.", DType::kF16);
  EXPECT_EQ(ck->num_model_parameters(), TinyParameters(config));
}

TEST(CheckpointTest, ShardedErrorsNameTheIndex) {
  TempDir dir;
  TinyOptions options;
  options.num_shards = 2;
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig(), options).ok());
  std::remove(dir.File("model-2.safetensors").c_str());
  EXPECT_TRUE(FailsWith(
      Checkpoint::Open(dir.path()),
      {dir.File("model.safetensors.index.json"), "shard 'model-2.safetensors'", "does not exist"}));
}

TEST(CheckpointTest, SideFilePaths) {
  TempDir dir;
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig()).ok());
  auto ck = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_EQ(ck->tokenizer_path(), "");
  EXPECT_EQ(ck->tokenizer_config_path(), "");
  EXPECT_EQ(ck->generation_config_path(), "");
  WriteFile(dir.File("tokenizer.json"), "{}");
  WriteFile(dir.File("tokenizer_config.json"), "{}");
  WriteFile(dir.File("generation_config.json"), "{}");
  EXPECT_EQ(ck->tokenizer_path(), dir.File("tokenizer.json"));
  EXPECT_EQ(ck->tokenizer_config_path(), dir.File("tokenizer_config.json"));
  EXPECT_EQ(ck->generation_config_path(), dir.File("generation_config.json"));
}

TEST(CheckpointTest, MissingPathsAreNamed) {
  TempDir dir;
  EXPECT_TRUE(FailsWith(Checkpoint::Open(dir.File("absent")),
                        {dir.File("absent"), "cannot open checkpoint directory"}));
  WriteFile(dir.File("file"), "x");
  EXPECT_TRUE(FailsWith(Checkpoint::Open(dir.File("file")),
                        {dir.File("file"), "not a checkpoint directory"}));
  EXPECT_TRUE(
      FailsWith(Checkpoint::Open(dir.path()),
                {dir.File("config.json"), "missing (a checkpoint directory needs config.json)"}));
  WriteFile(dir.File("config.json"), Gemma3ConfigToJson(TinyConfig()).dump());
  EXPECT_TRUE(FailsWith(Checkpoint::Open(dir.path()),
                        {dir.path(), "no model.safetensors or model.safetensors.index.json"}));
}

TEST(CheckpointTest, BadConfigAndBadWeightsAreNamed) {
  TempDir dir;
  TinyOptions options;
  options.config_json = Json{{"model_type", "llama"}};
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig(), options).ok());
  EXPECT_TRUE(FailsWith(Checkpoint::Open(dir.path()),
                        {dir.File("config.json"), "unsupported model_type 'llama'"}));
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig()).ok());
  WriteFile(dir.File("model.safetensors"), "garbage!");
  EXPECT_TRUE(FailsWith(Checkpoint::Open(dir.path()), {dir.File("model.safetensors"), "header"}));
}

// The weights are written for `weights` and config.json says `config`.
Result<Checkpoint> OpenMismatched(const TempDir& dir, const Gemma3Config& weights,
                                  const Gemma3Config& config, TinyOptions options = {}) {
  options.config_json = Gemma3ConfigToJson(config);
  EXPECT_TRUE(WriteTinyCheckpoint(dir.path(), weights, options).ok());
  return Checkpoint::Open(dir.path());
}

TEST(CheckpointTest, ConfigThatDisagreesWithTheTensorsNamesKeyValueTensorAndShape) {
  const Gemma3Config base = TinyConfig();
  const struct {
    const char* what;
    void (*change)(Gemma3Config*);
    std::vector<std::string> fragments;
  } cases[] = {
      {"hidden_size",
       [](Gemma3Config* c) { c->hidden_size = 12; },
       {"hidden_size 12 disagrees with tensor 'model.embed_tokens.weight' of shape [32, 8]",
        "(expected [32, 12])"}},
      {"vocab_size",
       [](Gemma3Config* c) { c->vocab_size = 40; },
       {"vocab_size 40 disagrees with tensor 'model.embed_tokens.weight' of shape [32, 8]"}},
      {"intermediate_size",
       [](Gemma3Config* c) { c->intermediate_size = 24; },
       {"intermediate_size 24 disagrees with tensor 'model.layers.0.mlp.gate_proj.weight' of "
        "shape [16, 8]",
        "(expected [24, 8])"}},
      {"num_attention_heads",
       [](Gemma3Config* c) { c->num_attention_heads = 4; },
       {"num_attention_heads * head_dim = 4 * 4 = 16 disagrees with tensor "
        "'model.layers.0.self_attn.q_proj.weight' of shape [8, 8]"}},
      {"num_key_value_heads",
       [](Gemma3Config* c) { c->num_key_value_heads = 2; },
       {"num_key_value_heads * head_dim = 2 * 4 = 8 disagrees with tensor "
        "'model.layers.0.self_attn.k_proj.weight' of shape [4, 8]"}},
      {"head_dim",
       [](Gemma3Config* c) { c->head_dim = 2; },
       {"num_attention_heads * head_dim = 2 * 2 = 4 disagrees with tensor "
        "'model.layers.0.self_attn.q_proj.weight' of shape [8, 8]"}},
      {"num_hidden_layers fewer",
       [](Gemma3Config* c) {
         c->num_hidden_layers = 2;
         c->layer_types.resize(2);
       },
       {"num_hidden_layers 2 disagrees with tensor 'model.layers.2.", "of shape",
        "layer 2 is past the last layer 1"}},
      {"num_hidden_layers more",
       [](Gemma3Config* c) {
         c->num_hidden_layers = 4;
         c->layer_types.push_back(LayerType::kSliding);
       },
       {"missing tensor 'model.layers.3.input_layernorm.weight'", "num_hidden_layers is 4"}},
      {"tie_word_embeddings",
       [](Gemma3Config* c) { c->tie_word_embeddings = false; },
       {"missing tensor 'lm_head.weight'", "tie_word_embeddings is false"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    TempDir dir;
    Gemma3Config config = base;
    c.change(&config);
    const auto ck = OpenMismatched(dir, base, config);
    EXPECT_TRUE(FailsWith(ck, {dir.path()}));
    for (const auto& f : c.fragments) EXPECT_TRUE(FailsWith(ck, {f}));
    if (ck.ok()) continue;
    const std::string& m = ck.error().message();
    const bool names_config = m.find(dir.File("config.json")) != std::string::npos;
    const bool names_weights = m.find(dir.File("model.safetensors")) != std::string::npos;
    EXPECT_TRUE(names_config && (names_weights || m.find("missing tensor") != std::string::npos))
        << m;
  }
}

TEST(CheckpointTest, TensorOfTheWrongRankNamesEveryKey) {
  TempDir dir;
  TinyOptions options;
  options.shapes = {{"layers.1.self_attn.o_proj.weight", {64}}, {"norm.weight", {8, 1}}};
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig(), options).ok());
  EXPECT_TRUE(FailsWith(Checkpoint::Open(dir.path()),
                        {dir.File("config.json"),
                         "hidden_size 8 disagrees with tensor 'model.norm.weight' of shape [8, 1]",
                         dir.File("model.safetensors"), "(expected [8])"}));
  options.shapes = {{"layers.1.self_attn.o_proj.weight", {64}}};
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig(), options).ok());
  EXPECT_TRUE(FailsWith(Checkpoint::Open(dir.path()),
                        {dir.File("config.json"), dir.File("model.safetensors"),
                         "hidden_size 8 and num_attention_heads * head_dim = 2 * 4 = 8 disagree "
                         "with tensor 'model.layers.1.self_attn.o_proj.weight' of shape [64]"}));
}

TEST(CheckpointTest, MissingLayerTensorIsNamed) {
  TempDir dir;
  TinyOptions options;
  options.omit = {"layers.2.self_attn.k_norm.weight"};
  ASSERT_TRUE(WriteTinyCheckpoint(dir.path(), TinyConfig(), options).ok());
  EXPECT_TRUE(FailsWith(
      Checkpoint::Open(dir.path()),
      {dir.File("model.safetensors"), "missing tensor 'model.layers.2.self_attn.k_norm.weight'",
       "num_hidden_layers is 3"}));
}

}  // namespace
}  // namespace fgnet
