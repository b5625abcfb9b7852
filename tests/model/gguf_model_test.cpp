// Gemma 3 GGUF files (model/gguf_model.h): the parity fixtures written as GGUF (F32, F16, BF16)
// must give transformers' logits within 1e-3 and the same greedy continuations; the config and
// the tensors must survive the trip; llama.cpp's assumptions apply where GGUF is silent; and
// broken files are rejected with one-line errors naming the file and the key or tensor.
#include "model/gguf_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "fails_with.h"
#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "model/gguf.h"
#include "tiny_checkpoint.h"
#include "util/json.h"
#include "util/npy.h"
#include "util/thread_pool.h"

namespace fgnet {
namespace {

using testing::FailsWith;
using testing::TempDir;

constexpr double kTolerance = 1e-3;

std::string FixtureDir(const std::string& name) {
  return std::string(FGNET_TEST_DATA_DIR) + "/parity/" + name;
}

std::vector<std::int32_t> Ids(const Json& json, const char* key) {
  std::vector<std::int32_t> ids;
  for (const Json& v : json.at(key)) ids.push_back(v.get<std::int32_t>());
  return ids;
}

// transformers' outputs on a parity fixture (see parity_test.cpp).
struct Reference {
  std::vector<std::int32_t> prompt;
  std::vector<std::int32_t> generated;
  std::vector<float> logits;  // [prompt, vocab]
};

Reference LoadReference(const std::string& dir) {
  Reference ref;
  auto prompt = ReadJsonFile(dir + "/prompt.json");
  auto greedy = ReadJsonFile(dir + "/greedy.json");
  auto logits = ReadNpy(dir + "/logits.npy");
  FGNET_CHECK(prompt.ok() && greedy.ok() && logits.ok());
  ref.prompt = Ids(*prompt, "input_ids");
  ref.generated = Ids(*greedy, "generated_ids");
  ref.logits = std::move(logits->AsFloat32()).value();
  return ref;
}

double MaxAbsDiff(std::span<const float> a, std::span<const float> b) {
  double worst = a.size() == b.size() ? 0.0 : INFINITY;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  return worst;
}

std::int32_t Argmax(std::span<const float> v) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = i;
  }
  return static_cast<std::int32_t>(best);
}

// Logits at every prompt position, and the greedy continuation of `n_new` tokens.
struct ModelRun {
  std::vector<float> logits;
  std::vector<std::int32_t> generated;
};

ModelRun RunModel(const Checkpoint& ck, const std::vector<std::int32_t>& prompt,
                  std::size_t n_new) {
  auto model = Gemma3Model::Create(ck.config(), ck.weights());
  FGNET_CHECK(model.ok());
  ThreadPool pool(2);
  ModelRun run;
  KVCache all = model->NewKVCache(static_cast<std::int64_t>(prompt.size()));
  FGNET_CHECK(model->Forward(prompt, all, pool, LogitsMode::kAll, &run.logits).ok());
  KVCache kv = model->NewKVCache(static_cast<std::int64_t>(prompt.size() + n_new));
  std::vector<float> last;
  FGNET_CHECK(model->Forward(prompt, kv, pool, LogitsMode::kLast, &last).ok());
  for (std::size_t i = 0; i < n_new; ++i) {
    const std::int32_t next = Argmax(last);
    run.generated.push_back(next);
    if (i + 1 < n_new) {
      FGNET_CHECK(
          model
              ->Forward(std::span<const std::int32_t>(&next, 1), kv, pool, LogitsMode::kLast, &last)
              .ok());
    }
  }
  return run;
}

// The config as GGUF can carry it: the informational fields are not kept.
Gemma3Config Comparable(Gemma3Config c) {
  c.architectures = {"Gemma3ForCausalLM"};
  c.model_type = "gemma3_text";
  c.torch_dtype.clear();
  c.multimodal = false;
  return c;
}

struct ParityCase {
  const char* fixture;
  std::optional<DType> dtype;  // nullopt: as stored
  const char* label;
};

void PrintTo(const ParityCase& p, std::ostream* os) { *os << p.fixture << " as " << p.label; }

class GgufParityTest : public ::testing::TestWithParam<ParityCase> {};

TEST_P(GgufParityTest, LogitsAndGreedyMatchTransformers) {
  const ParityCase& p = GetParam();
  auto hf = Checkpoint::Open(FixtureDir(p.fixture));
  ASSERT_TRUE(hf.ok()) << hf.error().message();
  TempDir dir;
  const std::string path = dir.File(std::string(p.fixture) + ".gguf");
  GgufWriteOptions options;
  options.float_dtype = p.dtype;
  const Status written = WriteGemma3Gguf(*hf, path, options);
  ASSERT_TRUE(written.ok()) << written.error().message();
  auto ck = OpenGgufCheckpoint(path);
  ASSERT_TRUE(ck.ok()) << ck.error().message();

  EXPECT_EQ(ck->format(), CheckpointFormat::kGguf);
  EXPECT_TRUE(ck->weights().norms_include_one);
  EXPECT_EQ(ck->config(), Comparable(hf->config()));
  EXPECT_EQ(ck->content_hash(), hf->content_hash());
  const DType want = p.dtype.value_or(hf->weights().embed_tokens.dtype);
  EXPECT_EQ(ck->weights().layers[0].q_proj.dtype, want);
  EXPECT_EQ(ck->weights().embed_tokens.dtype, want);
  EXPECT_EQ(ck->weights().norm.dtype, DType::kF32);
  EXPECT_EQ(ck->quantization(), "none");

  const Reference ref = LoadReference(FixtureDir(p.fixture));
  const ModelRun run = RunModel(*ck, ref.prompt, ref.generated.size());
  const double error = MaxAbsDiff(run.logits, ref.logits);
  RecordProperty("max_abs_logit_error", std::to_string(error));
  EXPECT_LE(error, kTolerance) << p.fixture << " as " << p.label;
  EXPECT_EQ(run.generated, ref.generated) << p.fixture << " as " << p.label;
  if (!p.dtype) {
    // Same weights, same norms (1 + w rounded to f32 either way): the same logits, bit for bit.
    const ModelRun hf_run = RunModel(*hf, ref.prompt, 0);
    EXPECT_EQ(run.logits, hf_run.logits) << p.fixture;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufParityTest,
                         ::testing::Values(ParityCase{"mqa_bf16_v4", std::nullopt, "BF16"},
                                           ParityCase{"mqa_bf16_v4", DType::kF32, "F32"},
                                           ParityCase{"mqa_bf16_v4", DType::kF16, "F16"},
                                           ParityCase{"gqa_f32_v5", std::nullopt, "F32"},
                                           ParityCase{"nested_mm", std::nullopt, "BF16"},
                                           ParityCase{"nested_mm", DType::kF32, "F32"},
                                           ParityCase{"untied_f16", std::nullopt, "F16"},
                                           ParityCase{"untied_f16", DType::kF32, "F32"}),
                         [](const ::testing::TestParamInfo<ParityCase>& param_info) {
                           return std::string(param_info.param.fixture) + "_" +
                                  param_info.param.label;
                         });

// Copies a GGUF file, letting `edit` change its metadata and tensors.
using Metadata = std::vector<std::pair<std::string, GgufValue>>;
using Tensors = std::vector<std::pair<std::string, TensorView>>;
Status Rewrite(const std::string& from, const std::string& to,
               const std::function<void(Metadata&, Tensors&)>& edit) {
  FGNET_ASSIGN_OR_RETURN(const GgufFile file, GgufFile::Open(from));
  Metadata metadata;
  for (const auto& kv : file.metadata()) {
    if (kv.first != "general.alignment") metadata.push_back(kv);
  }
  Tensors tensors;
  for (const GgufTensorInfo& t : file.tensors()) tensors.emplace_back(t.name, t.view);
  edit(metadata, tensors);
  GgufWriter writer(file.alignment());
  for (const auto& [k, v] : metadata) writer.Set(k, v);
  for (const auto& [n, t] : tensors) writer.AddTensor(n, t);
  return writer.Write(to);
}

void SetKey(Metadata& m, const std::string& key, GgufValue value) {
  for (auto& kv : m) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  m.emplace_back(key, std::move(value));
}

void EraseKey(Metadata& m, const std::string& key) {
  std::erase_if(m, [&](const auto& kv) { return kv.first == key; });
}

class GgufModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto hf = Checkpoint::Open(FixtureDir("gqa_f32_v5"));
    ASSERT_TRUE(hf.ok()) << hf.error().message();
    hf_ = std::make_unique<Checkpoint>(std::move(hf).value());
    good_ = dir_.File("good.gguf");
    ASSERT_TRUE(WriteGemma3Gguf(*hf_, good_).ok());
  }

  Result<Checkpoint> OpenEdited(const std::function<void(Metadata&, Tensors&)>& edit) {
    const std::string path = dir_.File("edited.gguf");
    const Status s = Rewrite(good_, path, edit);
    if (!s.ok()) return s.error();
    return OpenGgufCheckpoint(path);
  }

  TempDir dir_;
  std::unique_ptr<Checkpoint> hf_;
  std::string good_;
};

TEST_F(GgufModelTest, WritesLlamaCppMetadata) {
  auto file = GgufFile::Open(good_);
  ASSERT_TRUE(file.ok()) << file.error().message();
  const auto type_of = [&](const std::string& key) {
    const GgufValue* v = file->Find(key);
    return v == nullptr ? std::string("absent") : std::string(GgufTypeName(v->type()));
  };
  EXPECT_EQ(*file->Find("general.architecture")->AsString(), "gemma3");
  EXPECT_EQ(*file->Find("general.type")->AsString(), "model");
  EXPECT_EQ(*file->Find("general.name")->AsString(), "gqa_f32_v5");
  EXPECT_EQ(file->Find("general.file_type")->AsInt(), 0);  // ALL_F32
  EXPECT_EQ(type_of("general.quantization_version"), "absent");
  for (const char* key : {"gemma3.context_length", "gemma3.embedding_length", "gemma3.block_count",
                          "gemma3.feed_forward_length", "gemma3.attention.head_count",
                          "gemma3.attention.head_count_kv", "gemma3.attention.key_length",
                          "gemma3.attention.value_length", "gemma3.attention.sliding_window",
                          "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.padding_token_id"}) {
    EXPECT_EQ(type_of(key), "u32") << key;
  }
  for (const char* key : {"gemma3.attention.layer_norm_rms_epsilon", "gemma3.rope.freq_base",
                          "gemma3.final_logit_softcapping", "gemma3.rope.scaling.factor",
                          "gemma3.rope.freq_base_swa"}) {
    EXPECT_EQ(type_of(key), "f32") << key;
  }
  const Gemma3Config& c = hf_->config();
  EXPECT_EQ(file->Find("gemma3.embedding_length")->AsInt(), c.hidden_size);
  EXPECT_EQ(file->Find("gemma3.attention.sliding_window")->AsInt(), c.sliding_window);
  EXPECT_EQ(file->Find("gemma3.rope.freq_base")->AsF32(), 50000.0f);
  EXPECT_EQ(file->Find("gemma3.rope.freq_base_swa")->AsF32(), 5000.0f);
  EXPECT_EQ(*file->Find("gemma3.rope.scaling.type")->AsString(), "linear");
  EXPECT_EQ(file->Find("gemma3.rope.scaling.factor")->AsF32(), 4.0f);
  EXPECT_EQ(file->Find("gemma3.final_logit_softcapping")->AsF32(), 30.0f);
  // Layer types (full, sliding, sliding, full, sliding) are not llama.cpp's every-6th pattern.
  EXPECT_EQ(file->Find("gemma3.attention.sliding_window_pattern")->Describe(),
            "[false, true, true, false, true]");
  // query_pre_attn_scalar 16 = head_dim: what llama.cpp assumes, so not written.
  EXPECT_EQ(type_of("fgnet.query_pre_attn_scalar"), "absent");
  EXPECT_EQ(*file->Find("fgnet.content_hash")->AsString(), hf_->content_hash());

  // Names, shapes (innermost first in the file) and types of the tensors.
  EXPECT_EQ(file->tensors().size(), 2 + 13 * 5u);  // tied: no output.weight
  const GgufTensorInfo* q = file->FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape, (std::vector<std::int64_t>{64, 40}));
  const GgufTensorInfo* norm = file->FindTensor("blk.4.post_ffw_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->view.dtype, DType::kF32);
  // Norms hold 1 + w.
  const TensorView& w = hf_->weights().layers[4].post_feedforward_layernorm;
  EXPECT_EQ(norm->view.as<float>()[3], 1.0f + w.as<float>()[3]);
  for (const char* name :
       {"token_embd.weight", "output_norm.weight", "blk.2.attn_norm.weight", "blk.2.attn_k.weight",
        "blk.2.attn_v.weight", "blk.2.attn_output.weight", "blk.2.attn_q_norm.weight",
        "blk.2.attn_k_norm.weight", "blk.2.post_attention_norm.weight", "blk.2.ffn_norm.weight",
        "blk.2.ffn_gate.weight", "blk.2.ffn_up.weight", "blk.2.ffn_down.weight"}) {
    EXPECT_NE(file->FindTensor(name), nullptr) << name;
  }
}

TEST_F(GgufModelTest, UntiedOutputAndEosListsAndBytesRoundTrip) {
  auto hf = Checkpoint::Open(FixtureDir("untied_f16"));
  ASSERT_TRUE(hf.ok());
  const std::string a = dir_.File("a.gguf");
  const std::string b = dir_.File("b.gguf");
  GgufWriteOptions options;
  options.name = "untied";
  ASSERT_TRUE(WriteGemma3Gguf(*hf, a, options).ok());
  auto ck = OpenGgufCheckpoint(a);
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_FALSE(ck->config().tie_word_embeddings);
  EXPECT_EQ(ck->config().eos_token_ids, (std::vector<std::int64_t>{1, 106}));
  EXPECT_NE(ck->weights().lm_head.data, ck->weights().embed_tokens.data);
  // A GGUF checkpoint (norms already 1 + w) written again gives the same file, byte for byte.
  ASSERT_TRUE(WriteGemma3Gguf(*ck, b, options).ok());
  EXPECT_EQ(testing::ReadFile(a), testing::ReadFile(b));
}

TEST_F(GgufModelTest, MultimodalCheckpointWritesTheTextModelOnly) {
  auto hf = Checkpoint::Open(FixtureDir("nested_mm"));
  ASSERT_TRUE(hf.ok());
  ASSERT_FALSE(hf->unused_tensors().empty());  // the vision tower
  const std::string path = dir_.File("mm.gguf");
  ASSERT_TRUE(WriteGemma3Gguf(*hf, path).ok());
  auto ck = OpenGgufCheckpoint(path);
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_TRUE(ck->unused_tensors().empty());
  EXPECT_EQ(ck->tensor_prefix(), "model.");
}

TEST_F(GgufModelTest, SideFilesComeFromTheFilesDirectory) {
  auto ck = OpenGgufCheckpoint(good_);
  ASSERT_TRUE(ck.ok());
  EXPECT_EQ(ck->tokenizer_path(), "");
  testing::WriteFile(dir_.File("tokenizer.json"), "{}");
  EXPECT_EQ(ck->tokenizer_path(), dir_.File("tokenizer.json"));
  EXPECT_EQ(ck->dir(), good_);
}

TEST_F(GgufModelTest, LlamaCppAssumptionsApplyWhereGgufIsSilent) {
  // A file as llama.cpp's converter writes it: none of fgnet's extra keys.
  auto ck = OpenEdited([](Metadata& m, Tensors&) {
    for (const char* key : {"gemma3.rope.freq_base_swa", "gemma3.attention.sliding_window_pattern",
                            "fgnet.content_hash", "gemma3.rope.scaling.type"}) {
      EraseKey(m, key);
    }
  });
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  const Gemma3Config& c = ck->config();
  EXPECT_EQ(c.rope_theta_local, 10000.0);
  EXPECT_EQ(c.rope_theta_global, 50000.0);
  EXPECT_EQ(c.rope_scaling_global, 4.0);  // the type defaults to linear, as in llama.cpp
  EXPECT_EQ(c.rope_scaling_local, 1.0);
  EXPECT_EQ(c.query_pre_attn_scalar, 16.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);  // f32 read as the decimal it was written from
  // Every 6th layer global: layers 0-4 of 5 all slide.
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) EXPECT_TRUE(c.is_sliding(i)) << i;
  EXPECT_NE(ck->content_hash(), hf_->content_hash());  // computed from the GGUF weights

  // A period instead of per-layer bools; the legacy linear scale key; no sliding window.
  auto period = OpenEdited([](Metadata& m, Tensors&) {
    SetKey(m, "gemma3.attention.sliding_window_pattern", GgufValue::U32(2));
    EraseKey(m, "gemma3.rope.scaling.type");
    EraseKey(m, "gemma3.rope.scaling.factor");
    SetKey(m, "gemma3.rope.scale_linear", GgufValue::F32(2.0f));
  });
  ASSERT_TRUE(period.ok()) << period.error().message();
  EXPECT_EQ(period->config().layer_types,
            (std::vector<LayerType>{LayerType::kSliding, LayerType::kGlobal, LayerType::kSliding,
                                    LayerType::kGlobal, LayerType::kSliding}));
  EXPECT_EQ(period->config().rope_scaling_global, 2.0);
  auto global = OpenEdited([](Metadata& m, Tensors&) {
    EraseKey(m, "gemma3.attention.sliding_window");
    EraseKey(m, "gemma3.attention.sliding_window_pattern");
    SetKey(m, "gemma3.rope.scaling.type", GgufValue::String("none"));
  });
  ASSERT_TRUE(global.ok()) << global.error().message();
  for (std::int64_t i = 0; i < 5; ++i) EXPECT_FALSE(global->config().is_sliding(i));
  EXPECT_EQ(global->config().rope_scaling_global, 1.0);
}

TEST_F(GgufModelTest, QueryScaleOfThe27BModelIsHiddenOverHeads) {
  Gemma3Config c = testing::TinyConfig();
  c.num_hidden_layers = 62;
  c.layer_types.clear();
  for (int i = 0; i < 62; ++i) {
    c.layer_types.push_back(i % 6 < 5 ? LayerType::kSliding : LayerType::kGlobal);
  }
  c.hidden_size = 12;  // 12 / 2 heads = 6, head_dim 4
  c.query_pre_attn_scalar = 6;
  TempDir dir;
  ASSERT_TRUE(testing::WriteTinyCheckpoint(dir.path(), c).ok());
  auto hf = Checkpoint::Open(dir.path());
  ASSERT_TRUE(hf.ok()) << hf.error().message();
  const std::string path = dir.File("m.gguf");
  ASSERT_TRUE(WriteGemma3Gguf(*hf, path).ok());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->Find("fgnet.query_pre_attn_scalar"), nullptr);
  auto config = Gemma3ConfigFromGguf(*file);
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->query_pre_attn_scalar, 6.0);
  EXPECT_EQ(*config, Comparable(hf->config()));
}

TEST_F(GgufModelTest, ExtraMetadataAndFloatDtype) {
  GgufWriteOptions options;
  options.float_dtype = DType::kBF16;
  options.alignment = 128;
  options.extra_metadata = {{"tokenizer.ggml.model", GgufValue::String("llama")},
                            {"general.name", GgufValue::String("renamed")}};
  const std::string path = dir_.File("bf16.gguf");
  ASSERT_TRUE(WriteGemma3Gguf(*hf_, path, options).ok());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->alignment(), 128u);
  EXPECT_EQ(*file->Find("general.name")->AsString(), "renamed");
  EXPECT_EQ(*file->Find("tokenizer.ggml.model")->AsString(), "llama");
  EXPECT_EQ(file->Find("general.file_type")->AsInt(), 32);  // MOSTLY_BF16
  EXPECT_EQ(file->FindTensor("blk.0.ffn_up.weight")->view.dtype, DType::kBF16);
  EXPECT_EQ(file->FindTensor("blk.0.ffn_norm.weight")->view.dtype, DType::kF32);
  options.extra_metadata = {{"general.alignment", GgufValue::U32(64)}};
  EXPECT_TRUE(FailsWith(WriteGemma3Gguf(*hf_, path, options), {"general.alignment"}));
  options.extra_metadata.clear();
  options.float_dtype = DType::kQ8_0;
  EXPECT_TRUE(FailsWith(WriteGemma3Gguf(*hf_, path, options), {"float_dtype", "Q8_0"}));
}

TEST_F(GgufModelTest, RejectsWrongArchitecture) {
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "general.architecture", GgufValue::String("llama"));
                        }),
                        {"edited.gguf", "general.architecture is 'llama'", "expected 'gemma3'"}));
  EXPECT_TRUE(
      FailsWith(OpenEdited([](Metadata& m, Tensors&) { EraseKey(m, "general.architecture"); }),
                {"edited.gguf", "missing metadata 'general.architecture'"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "general.type", GgufValue::String("adapter"));
                        }),
                        {"edited.gguf", "general.type is 'adapter'", "LoRA adapter"}));
}

TEST_F(GgufModelTest, RejectsMissingTensor) {
  const auto drop = [](const char* name) {
    return [name](Metadata&, Tensors& t) {
      std::erase_if(t, [&](const auto& e) { return e.first == name; });
    };
  };
  EXPECT_TRUE(FailsWith(OpenEdited(drop("blk.3.ffn_up.weight")),
                        {"edited.gguf", "missing tensor 'blk.3.ffn_up.weight'"}));
  EXPECT_TRUE(FailsWith(OpenEdited(drop("output_norm.weight")),
                        {"edited.gguf", "missing tensor 'output_norm.weight'"}));
  EXPECT_TRUE(FailsWith(OpenEdited(drop("token_embd.weight")),
                        {"edited.gguf", "missing tensor 'token_embd.weight'"}));
}

TEST_F(GgufModelTest, RejectsShapesThatDisagreeWithTheMetadata) {
  std::vector<float> wrong(56 * 40);
  EXPECT_TRUE(FailsWith(
      OpenEdited([&](Metadata&, Tensors& t) {
        for (auto& [name, view] : t) {
          if (name == "blk.1.attn_q.weight") view = TensorView{DType::kF32, {56, 40}, wrong.data()};
        }
      }),
      {"edited.gguf", "tensor 'blk.1.attn_q.weight' has shape [56, 40], expected [64, 40]",
       "gemma3.attention.head_count 4"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "gemma3.feed_forward_length", GgufValue::U32(50));
                        }),
                        {"edited.gguf", "'blk.0.ffn_gate.weight' has shape [56, 40]",
                         "gemma3.feed_forward_length 50"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "gemma3.block_count", GgufValue::U32(4));
                          EraseKey(m, "gemma3.attention.sliding_window_pattern");
                        }),
                        {"edited.gguf", "'blk.4.", "layer 4", "gemma3.block_count is 4"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "tokenizer.ggml.tokens", GgufValue::StringArray({"a", "b"}));
                        }),
                        {"edited.gguf", "tokenizer.ggml.tokens has 2 tokens", "256 rows"}));
}

TEST_F(GgufModelTest, RejectsBadMetadata) {
  EXPECT_TRUE(
      FailsWith(OpenEdited([](Metadata& m, Tensors&) { EraseKey(m, "gemma3.block_count"); }),
                {"edited.gguf", "missing metadata 'gemma3.block_count'"}));
  EXPECT_TRUE(FailsWith(
      OpenEdited([](Metadata& m, Tensors&) {
        SetKey(m, "gemma3.block_count", GgufValue::U64(1ull << 40));
      }),
      {"edited.gguf", "'gemma3.block_count' is 1099511627776", "more than fgnet supports"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "gemma3.block_count", GgufValue::U32(1000));
                        }),
                        {"edited.gguf", "gemma3.block_count 1000 but the file holds 67 tensors"}));
  EXPECT_TRUE(
      FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                  SetKey(m, "gemma3.attention.head_count", GgufValue::I32(0));
                }),
                {"edited.gguf", "'gemma3.attention.head_count' is 0, expected at least 1"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "gemma3.embedding_length", GgufValue::String("40"));
                        }),
                        {"edited.gguf", "'gemma3.embedding_length' must be an integer", "string"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "gemma3.attention.head_count_kv", GgufValue::U32(3));
                        }),
                        {"edited.gguf", "head_count 4 is not a multiple", "head_count_kv 3"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "gemma3.rope.scaling.type", GgufValue::String("yarn"));
                        }),
                        {"edited.gguf", "'yarn' is not supported"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "gemma3.attention.layer_norm_rms_epsilon",
                                 GgufValue::F32(-1.0f));
                        }),
                        {"edited.gguf", "layer_norm_rms_epsilon' is -1"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "gemma3.attention.sliding_window_pattern",
                                 GgufValue::Array(GgufType::kBool, {GgufValue::Bool(true)}));
                        }),
                        {"edited.gguf", "sliding_window_pattern", "5 bools"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "gemma3.attention.value_length", GgufValue::U32(8));
                        }),
                        {"edited.gguf", "value_length 8 differs"}));
  EXPECT_TRUE(FailsWith(OpenEdited([](Metadata& m, Tensors&) {
                          SetKey(m, "fgnet.content_hash", GgufValue::String("abc"));
                        }),
                        {"edited.gguf", "fgnet.content_hash 'abc'"}));
}

// Every truncation, and every byte of the header flipped, is either rejected with a one-line
// error or (for bytes that only change values) read; nothing crashes or reads out of bounds
// (the sanitizer build checks the latter).
TEST(GgufRobustnessTest, CorruptedFilesAreRejectedOrReadNeverCrash) {
  TempDir dir;
  ASSERT_TRUE(testing::WriteTinyCheckpoint(dir.path(), testing::TinyConfig()).ok());
  auto hf = Checkpoint::Open(dir.path());
  ASSERT_TRUE(hf.ok());
  const std::string good = dir.File("tiny.gguf");
  ASSERT_TRUE(WriteGemma3Gguf(*hf, good).ok());
  const std::string bytes = testing::ReadFile(good);
  auto file = GgufFile::Open(good);
  ASSERT_TRUE(file.ok());
  const auto header = static_cast<std::size_t>(file->data_offset());
  const std::string bad = dir.File("bad.gguf");
  for (std::size_t n = 0; n < bytes.size(); n += (n < header ? 7 : 499)) {
    testing::WriteFile(bad, bytes.substr(0, n));
    EXPECT_TRUE(FailsWith(OpenGgufCheckpoint(bad), {"bad.gguf"})) << "truncated to " << n;
  }
  // Flip bytes in place (rewriting one byte, not the file, keeps this fast on any disk).
  testing::WriteFile(bad, bytes);
  std::fstream io(bad, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(io.good());
  const auto put = [&](std::size_t i, char c) {
    io.seekp(static_cast<std::streamoff>(i));
    io.put(c);
    io.flush();
  };
  std::size_t rejected = 0;
  for (std::size_t i = 0; i < header; ++i) {
    // All bits of even bytes, the lowest bit of odd ones.
    const unsigned char x = i % 2 == 0 ? 0xffu : 0x01u;
    put(i, static_cast<char>(static_cast<unsigned char>(bytes[i]) ^ x));
    auto ck = OpenGgufCheckpoint(bad);
    if (!ck.ok()) {
      ++rejected;
      EXPECT_EQ(ck.error().message().find('\n'), std::string::npos);
      EXPECT_EQ(ck.error().message().rfind(bad, 0), 0u) << ck.error().message();
    }
    put(i, bytes[i]);
  }
  EXPECT_GT(rejected, header / 2);  // most header bytes matter
}

}  // namespace
}  // namespace fgnet
