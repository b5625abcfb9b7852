// Quantized GGUF models: checkpoints quantized in memory (model/quantize.h: Q8_0, Q4_0, Q4_K,
// Q6_K) written as GGUF and read back hand back the very blocks that were written, under
// llama.cpp's file_type and quantization_version and with their scheme; run through the
// quantized kernels they give exactly the logits of the same quantized weights in memory, and
// stay within the measured quantization error of the float model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <ostream>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "model/gguf.h"
#include "model/gguf_model.h"
#include "model/quantize.h"
#include "model/synth.h"
#include "tiny_checkpoint.h"
#include "util/json.h"
#include "util/npy.h"
#include "util/rng.h"
#include "util/thread_pool.h"

namespace fgnet {
namespace {

using testing::TempDir;

std::string FixtureDir(const std::string& name) {
  return std::string(FGNET_TEST_DATA_DIR) + "/parity/" + name;
}

// The bound weights of a checkpoint, in a fixed order, with their canonical names.
std::vector<std::pair<std::string, TensorView>> Bound(const Checkpoint& ck) {
  const Gemma3Weights& w = ck.weights();
  std::vector<std::pair<std::string, TensorView>> out = {{"embed_tokens", w.embed_tokens},
                                                         {"norm", w.norm}};
  if (!ck.config().tie_word_embeddings) out.emplace_back("lm_head", w.lm_head);
  for (std::size_t i = 0; i < w.layers.size(); ++i) {
    const Gemma3LayerWeights& l = w.layers[i];
    const std::string p = std::to_string(i) + ".";
    for (const auto& [name, t] :
         std::vector<std::pair<std::string, const TensorView*>>{{"q_proj", &l.q_proj},
                                                                {"k_proj", &l.k_proj},
                                                                {"v_proj", &l.v_proj},
                                                                {"o_proj", &l.o_proj},
                                                                {"gate_proj", &l.gate_proj},
                                                                {"up_proj", &l.up_proj},
                                                                {"down_proj", &l.down_proj}}) {
      out.emplace_back(p + name, *t);
    }
  }
  return out;
}

// Every matrix of `got` (read from GGUF) holds the bytes of the same matrix of `want` (written).
void ExpectSameMatrices(const Checkpoint& got, const Checkpoint& want) {
  const auto g = Bound(got);
  const auto w = Bound(want);
  ASSERT_EQ(g.size(), w.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (g[i].first == "norm") continue;  // 1 + w in the file (checked by gguf_model_test)
    ASSERT_EQ(g[i].second.dtype, w[i].second.dtype) << g[i].first;
    ASSERT_EQ(g[i].second.shape, w[i].second.shape) << g[i].first;
    EXPECT_EQ(std::memcmp(g[i].second.data, w[i].second.data, g[i].second.num_bytes()), 0)
        << g[i].first;
  }
}

std::vector<float> PromptLogits(const Checkpoint& ck, const std::vector<std::int32_t>& prompt) {
  auto model = Gemma3Model::Create(ck.config(), ck.weights());
  FGNET_CHECK(model.ok());
  ThreadPool pool(2);
  KVCache kv = model->NewKVCache(static_cast<std::int64_t>(prompt.size()));
  std::vector<float> logits;
  FGNET_CHECK(model->Forward(prompt, kv, pool, LogitsMode::kAll, &logits).ok());
  return logits;
}

double MaxAbsDiff(std::span<const float> a, std::span<const float> b) {
  double worst = a.size() == b.size() ? 0.0 : INFINITY;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  return worst;
}

// RMS(a - b) / RMS(b).
double RelativeRms(std::span<const float> a, std::span<const float> b) {
  double err = 0.0, ref = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    err += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    ref += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(err / ref);
}

// Quantizes `source` with `scheme`, writes it as GGUF, reads it back and checks the file and the
// checkpoint against the one in memory. Returns the logits of the file's model on `prompt`.
std::vector<float> RoundTrip(const Checkpoint& source, QuantScheme scheme,
                             const std::vector<std::int32_t>& prompt,
                             std::set<DType>* types = nullptr) {
  ThreadPool pool(2);
  auto quantized = QuantizeCheckpoint(source, scheme, pool);
  FGNET_CHECK(quantized.ok());
  TempDir dir;
  const std::string name(QuantSchemeName(scheme));
  const std::string path = dir.File("model." + name + ".gguf");
  const Status written = WriteGemma3Gguf(*quantized, path);
  EXPECT_TRUE(written.ok()) << written.error().message();

  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok());
  if (!file.ok()) return {};
  const std::int64_t file_type = scheme == QuantScheme::kQ8_0   ? 7    // MOSTLY_Q8_0
                                 : scheme == QuantScheme::kQ4_0 ? 2    // MOSTLY_Q4_0
                                                                : 15;  // MOSTLY_Q4_K_M
  EXPECT_EQ(file->Find("general.file_type")->AsInt(), file_type);
  EXPECT_EQ(file->Find("general.quantization_version")->AsInt(), 2);
  EXPECT_EQ(*file->Find("fgnet.quantization")->AsString(), name);
  for (const GgufTensorInfo& t : file->tensors()) {
    if (types != nullptr) types->insert(t.view.dtype);
  }

  auto ck = OpenGgufCheckpoint(path);
  EXPECT_TRUE(ck.ok()) << ck.error().message();
  if (!ck.ok()) return {};
  EXPECT_EQ(ck->quantization(), name);
  EXPECT_EQ(ck->content_hash(), source.content_hash());
  ExpectSameMatrices(*ck, *quantized);
  const std::vector<float> logits = PromptLogits(*ck, prompt);
  // The same blocks through the same kernels: the same logits, bit for bit.
  const std::vector<float> in_memory = PromptLogits(*quantized, prompt);
  EXPECT_EQ(std::memcmp(logits.data(), in_memory.data(), logits.size() * sizeof(float)), 0)
      << name << ": max diff " << MaxAbsDiff(logits, in_memory);
  return logits;
}

struct FixtureCase {
  const char* fixture;
  QuantScheme scheme;
  // Bounds on |logits - transformers' float logits| and on RMS(diff) / RMS(transformers'),
  // about 1.5 times the measured figures (in the test's name order).
  double max_error;
  double rms_error;
};

void PrintTo(const FixtureCase& c, std::ostream* os) {
  *os << c.fixture << " " << QuantSchemeName(c.scheme);
}

class GgufQuantFixtureTest : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(GgufQuantFixtureTest, RoundTripsAndStaysWithinQuantizationError) {
  const FixtureCase& c = GetParam();
  auto source = Checkpoint::Open(FixtureDir(c.fixture));
  ASSERT_TRUE(source.ok()) << source.error().message();
  auto prompt_json = ReadJsonFile(FixtureDir(c.fixture) + "/prompt.json");
  ASSERT_TRUE(prompt_json.ok());
  std::vector<std::int32_t> prompt;
  for (const Json& v : prompt_json->at("input_ids")) prompt.push_back(v.get<std::int32_t>());
  auto reference = ReadNpy(FixtureDir(c.fixture) + "/logits.npy");
  ASSERT_TRUE(reference.ok());
  const std::vector<float> want = std::move(reference->AsFloat32()).value();

  const std::vector<float> got = RoundTrip(*source, c.scheme, prompt);
  ASSERT_EQ(got.size(), want.size());
  const double max_error = MaxAbsDiff(got, want);
  const double rms_error = RelativeRms(got, want);
  RecordProperty("max_abs_logit_error", std::to_string(max_error));
  RecordProperty("relative_rms_logit_error", std::to_string(rms_error));
  EXPECT_LE(max_error, c.max_error);
  EXPECT_LE(rms_error, c.rms_error);
  EXPECT_GT(max_error, 1e-3) << "suspiciously exact for quantized weights";
}

// The parity fixtures are small random models, and sensitive ones: rounding gqa_f32_v5's weights
// to BF16 (0.4% relative error) already moves its logits by 0.73. Measured (max, relative RMS):
// mqa_bf16_v4 q8_0 0.34 / 0.015, q4_0 5.2 / 0.26; gqa_f32_v5 q8_0 0.61 / 0.028, q4_0 12.6 / 0.37;
// nested_mm q8_0 0.82 / 0.033, q4_0 14.8 / 0.51; untied_f16 q8_0 0.57 / 0.027, q4_0 8.1 / 0.34.
INSTANTIATE_TEST_SUITE_P(
    Fixtures, GgufQuantFixtureTest,
    ::testing::Values(FixtureCase{"mqa_bf16_v4", QuantScheme::kQ8_0, 0.5, 0.023},
                      FixtureCase{"mqa_bf16_v4", QuantScheme::kQ4_0, 8.0, 0.4},
                      FixtureCase{"gqa_f32_v5", QuantScheme::kQ8_0, 0.9, 0.042},
                      FixtureCase{"gqa_f32_v5", QuantScheme::kQ4_0, 19.0, 0.55},
                      FixtureCase{"nested_mm", QuantScheme::kQ8_0, 1.25, 0.05},
                      FixtureCase{"nested_mm", QuantScheme::kQ4_0, 22.0, 0.76},
                      FixtureCase{"untied_f16", QuantScheme::kQ8_0, 0.86, 0.04},
                      FixtureCase{"untied_f16", QuantScheme::kQ4_0, 12.0, 0.51}),
    [](const ::testing::TestParamInfo<FixtureCase>& param_info) {
      return std::string(param_info.param.fixture) + "_" +
             std::string(QuantSchemeName(param_info.param.scheme));
    });

// Every block type: a synthetic model whose dimensions are multiples of 256, with an untied
// output matrix (Q4_K projections, Q6_K embedding and lm_head under q4_k).
TEST(GgufQuantTest, EveryBlockTypeRoundTrips) {
  Gemma3Config c = Gemma3_270MConfig();
  c.vocab_size = 256;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 128;
  c.query_pre_attn_scalar = 128;
  c.sliding_window = 8;
  c.layer_types = {LayerType::kSliding, LayerType::kGlobal};
  c.tie_word_embeddings = false;
  TempDir dir;
  SynthOptions options;
  options.dtype = DType::kBF16;
  options.seed = 5;
  options.weight_stddev = 0.06f;
  ASSERT_TRUE(WriteRandomCheckpoint(c, options, dir.path()).ok());
  auto source = Checkpoint::Open(dir.path());
  ASSERT_TRUE(source.ok()) << source.error().message();
  Philox rng(11);
  std::vector<std::int32_t> prompt(16);
  for (auto& id : prompt) id = static_cast<std::int32_t>(rng.NextU32() % 256);
  const std::vector<float> want = PromptLogits(*source, prompt);
  // Measured against the BF16 model (max, relative RMS): q8_0 0.054 / 0.014, q4_0 0.76 / 0.18,
  // q4_k 0.65 / 0.16.
  const struct {
    QuantScheme scheme;
    double max_error;
    double rms_error;
  } cases[] = {{QuantScheme::kQ8_0, 0.08, 0.021},
               {QuantScheme::kQ4_0, 1.15, 0.28},
               {QuantScheme::kQ4_K, 1.0, 0.24}};
  std::vector<double> rms;
  for (const auto& q : cases) {
    std::set<DType> types;
    const std::vector<float> got = RoundTrip(*source, q.scheme, prompt, &types);
    ASSERT_EQ(got.size(), want.size());
    const std::string name(QuantSchemeName(q.scheme));
    rms.push_back(RelativeRms(got, want));
    RecordProperty("max_abs_logit_error_" + name, std::to_string(MaxAbsDiff(got, want)));
    RecordProperty("relative_rms_logit_error_" + name, std::to_string(rms.back()));
    EXPECT_LE(MaxAbsDiff(got, want), q.max_error) << name;
    EXPECT_LE(rms.back(), q.rms_error) << name;
    if (q.scheme == QuantScheme::kQ4_K) {
      EXPECT_EQ(types, (std::set<DType>{DType::kF32, DType::kQ4_K, DType::kQ6_K}));
    }
  }
  EXPECT_LT(rms[0], rms[2]);  // q8_0 beats q4_k
  EXPECT_LT(rms[2], rms[1]);  // q4_k beats q4_0
}

}  // namespace
}  // namespace fgnet
