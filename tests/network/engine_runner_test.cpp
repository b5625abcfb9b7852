// EngineNodeRunner on a random model with Gemma 3's vocabulary and FunctionGemma's tokenizer: a
// node's output equals a direct engine request on the same prompt ids, pinned prefixes are
// shared by the nodes that share prompt parts and adapters (and only by them), contracts
// constrain the output, deadlines, cancellation and unknown adapters end a node cleanly, and
// logit ensembles run. Also: the expert adapters of an experts set load into a registry, and the
// example adapters of examples/adapters/ load against the FunctionGemma 270M config.

#include "network/engine_runner.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "forward_reference.h"
#include "gemma_vocab_model.h"
#include "gtest/gtest.h"
#include "model/gemma3_model.h"
#include "model/model_files.h"
#include "model/peft.h"
#include "model/synth.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/function_call.h"
#include "tokenizer/functiongemma_vocab.h"

namespace fgnet::network {
namespace {

using testing::GemmaVocabConfig;

class EngineRunnerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tokenizer = testing::FunctionGemmaTestTokenizer();
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message();
    tokenizer_ = new Tokenizer(std::move(*tokenizer));
    ckpt_ = new fgnet::testing::RandomCheckpoint(GemmaVocabConfig(), DType::kF32, 7);
    auto model = Gemma3Model::Create(ckpt_->config(), ckpt_->weights());
    ASSERT_TRUE(model.ok());
    model_ = new Gemma3Model(std::move(*model));
    registry_ = new AdapterRegistry(GemmaVocabConfig());
    for (const auto& [name, seed] : {std::pair<std::string, int>{"a", 1}, {"b", 2}}) {
      ASSERT_TRUE(registry_
                      ->Add(RandomLoraAdapter(GemmaVocabConfig(), 4,
                                              static_cast<std::uint64_t>(seed), name, 0.3f))
                      .ok());
    }
  }
  static void TearDownTestSuite() {
    delete registry_;
    delete model_;
    delete ckpt_;
    delete tokenizer_;
  }

  void SetUp() override {
    EngineOptions options;
    options.threads = 2;
    options.stop_ids = {*tokenizer_->TokenId("<end_of_turn>"), *tokenizer_->TokenId("<eos>")};
    auto engine = Engine::Create(*model_, "random", tokenizer_, registry_, options);
    ASSERT_TRUE(engine.ok());
    engine_ = std::move(*engine);
  }

  static PromptParts Parts(const std::string& domain_id, const std::string& role,
                           const std::string& user) {
    PromptParts p;
    p.system = "You are one expert of a network that writes web applications.";
    p.domain_id = domain_id;
    p.domain = "Context of the " + domain_id + " domain: components, styles and tests.";
    p.role = role;
    p.user = user;
    return p;
  }

  static NodeCall Call(const std::string& adapter, PromptParts parts, std::int64_t max_tokens = 8) {
    NodeCall call;
    call.node_id = "n";
    call.expert_id = "e";
    if (!adapter.empty()) call.adapters = {{adapter, 1.0f}};
    call.prompt = std::move(parts);
    call.max_tokens = max_tokens;
    return call;
  }

  static NodeResult Run(NodeRunner& runner, NodeCall call) {
    std::unique_ptr<NodeRunner::Pending> pending = runner.Start(std::move(call));
    NodeResult result = pending->Wait();
    EXPECT_TRUE(pending->done());
    EXPECT_EQ(pending->generated_tokens(), result.completion_tokens);
    return result;
  }

  static Tokenizer* tokenizer_;
  static fgnet::testing::RandomCheckpoint* ckpt_;
  static Gemma3Model* model_;
  static AdapterRegistry* registry_;
  std::unique_ptr<Engine> engine_;
};

Tokenizer* EngineRunnerTest::tokenizer_ = nullptr;
fgnet::testing::RandomCheckpoint* EngineRunnerTest::ckpt_ = nullptr;
Gemma3Model* EngineRunnerTest::model_ = nullptr;
AdapterRegistry* EngineRunnerTest::registry_ = nullptr;

TEST_F(EngineRunnerTest, RendersTheChatFormats) {
  PromptParts p;
  p.system = " S ";
  p.domain = "D";
  p.role = "R";
  p.user = " U\n";
  auto fg = RenderNodePrompt(p, {}, ChatFormat::kFunctionGemma);
  ASSERT_TRUE(fg.ok()) << fg.error().message();
  EXPECT_EQ(fg->system, "<bos><start_of_turn>developer\nS");
  EXPECT_EQ(fg->domain, "\n\nD");
  EXPECT_EQ(fg->role, "\n\nR");
  EXPECT_EQ(fg->rest, "<end_of_turn>\n<start_of_turn>user\nU<end_of_turn>\n<start_of_turn>model\n");

  auto g3 = RenderNodePrompt(p, {}, ChatFormat::kGemma3);
  ASSERT_TRUE(g3.ok()) << g3.error().message();
  EXPECT_EQ(g3->Full(),
            "<bos><start_of_turn>user\nS\n\nD\n\nR\n\nU<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(g3->system, "<bos><start_of_turn>user\nS");

  p.domain.clear();  // no domain: left out with its separator
  auto no_domain = RenderNodePrompt(p, {}, ChatFormat::kFunctionGemma);
  ASSERT_TRUE(no_domain.ok());
  EXPECT_EQ(no_domain->domain, "");
  EXPECT_EQ(no_domain->role, "\n\nR");

  OutputContract calls;
  calls.kind = OutputContract::Kind::kFunctionCalls;
  calls.tools = Json::parse(R"([{"type": "function", "function": {"name": "go",
      "description": "Go", "parameters": {"type": "object", "properties": {}}}}])");
  auto with_tools = RenderNodePrompt(p, calls, ChatFormat::kFunctionGemma);
  ASSERT_TRUE(with_tools.ok()) << with_tools.error().message();
  auto expected = RenderFunctionGemmaPrompt(
      Json::parse(
          R"([{"role": "developer", "content": "S\n\nR"}, {"role": "user", "content": "U"}])"),
      calls.tools);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(with_tools->Full(), *expected);
  EXPECT_NE(with_tools->role.find("<start_function_declaration>declaration:go{"),
            std::string::npos);
  EXPECT_FALSE(RenderNodePrompt(p, calls, ChatFormat::kGemma3).ok());
  EXPECT_EQ(ResolveChatFormat(ChatFormat::kAuto, *tokenizer_), ChatFormat::kFunctionGemma);
}

TEST_F(EngineRunnerTest, GreedyOutputEqualsADirectRequestOnThePromptIds) {
  EngineNodeRunner runner(*engine_, *tokenizer_, *registry_);
  const PromptParts parts = Parts("frontend", "You write React components.", "A login form.");
  const NodeResult result = Run(runner, Call("a", parts));
  ASSERT_TRUE(result.status.ok()) << result.status.error().message();
  EXPECT_GT(result.completion_tokens, 0);

  auto rendered = RenderNodePrompt(parts, {}, ChatFormat::kFunctionGemma);
  ASSERT_TRUE(rendered.ok());
  std::vector<std::int32_t> ids;
  for (const std::string* piece :
       {&rendered->system, &rendered->domain, &rendered->role, &rendered->rest}) {
    const std::vector<std::int32_t> part = tokenizer_->Encode(*piece);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  Request direct;
  direct.prompt_ids = ids;
  direct.adapters = {{"a", 1.0f}};
  direct.max_tokens = 8;
  RequestHandle handle = engine_->Submit(direct);
  const Completion& c = handle.Wait();
  ASSERT_TRUE(c.status.ok()) << c.status.error().message();
  EXPECT_EQ(result.text, c.text);
  EXPECT_EQ(result.finish_reason, c.finish_reason);
  EXPECT_EQ(result.completion_tokens, c.usage.completion_tokens);
  EXPECT_EQ(result.prompt_tokens, static_cast<std::int64_t>(ids.size()));
  // The pieces start at "\n\n" or a turn marker: here the split tokenization is the whole one.
  EXPECT_EQ(tokenizer_->Encode(rendered->Full()), ids);
}

TEST_F(EngineRunnerTest, NodesShareThePrefixesOfTheirSharedParts) {
  EngineNodeRunner runner(*engine_, *tokenizer_, *registry_);
  const PromptParts react = Parts("frontend", "You write React components.", "A login form.");
  NodeResult first = Run(runner, Call("a", react));
  ASSERT_TRUE(first.status.ok()) << first.status.error().message();
  EXPECT_TRUE(first.prefix_hits.empty());  // pinned by this call: no hits
  EXPECT_EQ(runner.pinned_prefixes(), 3u);

  PromptParts again = react;
  again.user = "A sign-up form.";
  NodeResult second = Run(runner, Call("a", again));
  ASSERT_TRUE(second.status.ok()) << second.status.error().message();
  EXPECT_EQ(second.prefix_hits, (std::vector<std::string>{"system", "domain", "role"}));
  auto rendered = RenderNodePrompt(again, {}, ChatFormat::kFunctionGemma);
  ASSERT_TRUE(rendered.ok());
  const auto head = static_cast<std::int64_t>(tokenizer_->Encode(rendered->system).size() +
                                              tokenizer_->Encode(rendered->domain).size() +
                                              tokenizer_->Encode(rendered->role).size());
  EXPECT_GE(second.cached_tokens, head);
  EXPECT_EQ(runner.pinned_prefixes(), 3u);

  const PromptParts db = Parts("backend", "You design database schemas.", "A users table.");
  NodeResult other_domain = Run(runner, Call("a", db));
  ASSERT_TRUE(other_domain.status.ok()) << other_domain.status.error().message();
  EXPECT_EQ(other_domain.prefix_hits, (std::vector<std::string>{"system"}));
  EXPECT_EQ(runner.pinned_prefixes(), 5u);

  // Another adapter set pins prefixes of its own.
  NodeResult other_adapter = Run(runner, Call("b", react));
  ASSERT_TRUE(other_adapter.status.ok()) << other_adapter.status.error().message();
  EXPECT_TRUE(other_adapter.prefix_hits.empty());
  EXPECT_NE(other_adapter.text, first.text);  // the adapter matters
  EXPECT_EQ(runner.pinned_prefixes(), 8u);
  NodeResult base = Run(runner, Call("", react));
  ASSERT_TRUE(base.status.ok()) << base.status.error().message();
  EXPECT_TRUE(base.prefix_hits.empty());
  EXPECT_EQ(runner.pinned_prefixes(), 11u);

  // Nodes started together pin a prefix once; the others wait for it and hit it.
  std::vector<std::unique_ptr<NodeRunner::Pending>> pendings;
  const PromptParts css = Parts("frontend", "You write CSS.", "A dark theme.");
  for (int i = 0; i < 3; ++i) pendings.push_back(runner.Start(Call("a", css)));
  int role_hits = 0;
  for (auto& p : pendings) {
    const NodeResult r = p->Wait();
    ASSERT_TRUE(r.status.ok()) << r.status.error().message();
    role_hits += static_cast<int>(r.prefix_hits.size() == 3);
  }
  EXPECT_EQ(role_hits, 2);
  EXPECT_EQ(runner.pinned_prefixes(), 12u);

  runner.ReleasePrefixes();
  EXPECT_EQ(runner.pinned_prefixes(), 0u);
  NodeResult after = Run(runner, Call("a", react));
  ASSERT_TRUE(after.status.ok());
  EXPECT_TRUE(after.prefix_hits.empty());
  EXPECT_EQ(after.text, first.text);
}

TEST_F(EngineRunnerTest, WithoutPinningTheWholePromptIsSent) {
  EngineNodeRunner runner(*engine_, *tokenizer_, *registry_, {.pin_prefixes = false});
  const PromptParts parts = Parts("frontend", "You write React components.", "A login form.");
  NodeResult result = Run(runner, Call("a", parts));
  ASSERT_TRUE(result.status.ok()) << result.status.error().message();
  EXPECT_TRUE(result.prefix_hits.empty());
  EXPECT_EQ(runner.pinned_prefixes(), 0u);
  auto rendered = RenderNodePrompt(parts, {}, ChatFormat::kFunctionGemma);
  ASSERT_TRUE(rendered.ok());
  EXPECT_EQ(result.prompt_tokens,
            static_cast<std::int64_t>(tokenizer_->Encode(rendered->Full()).size()));
}

TEST_F(EngineRunnerTest, JsonSchemaContractOutputParses) {
  EngineNodeRunner runner(*engine_, *tokenizer_, *registry_);
  NodeCall call = Call("a", Parts("backend", "You answer in JSON.", "A user."), 60);
  call.output.kind = OutputContract::Kind::kJsonSchema;
  call.output.schema = Json::parse(R"({"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
      "required": ["name", "age"], "additionalProperties": false})");
  const NodeResult result = Run(runner, call);
  ASSERT_TRUE(result.status.ok()) << result.status.error().message();
  EXPECT_EQ(result.finish_reason, "stop") << result.text;
  auto parsed = ParseJson(result.text, "output");
  ASSERT_TRUE(parsed.ok()) << result.text;
  EXPECT_TRUE((*parsed)["name"].is_string());
  EXPECT_TRUE((*parsed)["age"].is_number_integer());
}

TEST_F(EngineRunnerTest, FunctionCallContractOutputParses) {
  EngineNodeRunner runner(*engine_, *tokenizer_, *registry_);
  NodeCall call = Call("b", Parts("infra", "You route tasks.", "Deploy it."), 80);
  call.output.kind = OutputContract::Kind::kFunctionCalls;
  call.output.tools = Json::parse(R"([{"type": "function", "function": {"name": "deploy",
      "description": "Deploy", "parameters": {"type": "object", "properties": {
      "target": {"type": "string", "enum": ["staging", "prod"]}}, "required": ["target"]}}}])");
  const NodeResult result = Run(runner, call);
  ASSERT_TRUE(result.status.ok()) << result.status.error().message();
  EXPECT_NE(result.text.find("<start_function_call>call:deploy{target:<escape>"), std::string::npos)
      << result.text;
}

TEST_F(EngineRunnerTest, APastDeadlineEndsTheNode) {
  EngineNodeRunner runner(*engine_, *tokenizer_, *registry_);
  NodeCall call = Call("a", Parts("frontend", "You write React components.", "A form."), 50);
  call.deadline = std::chrono::steady_clock::now() - std::chrono::milliseconds(1);
  const NodeResult result = Run(runner, call);
  EXPECT_TRUE(result.status.ok());
  EXPECT_EQ(result.finish_reason, "deadline");
}

TEST_F(EngineRunnerTest, CancelEndsTheNode) {
  EngineNodeRunner runner(*engine_, *tokenizer_, *registry_);
  std::unique_ptr<NodeRunner::Pending> pending =
      runner.Start(Call("a", Parts("frontend", "You write React components.", "A form."), 500));
  pending->Cancel();
  const NodeResult result = pending->Wait();
  EXPECT_EQ(result.finish_reason, "cancelled");
  // Dropping a Pending without waiting cancels its node.
  runner.Start(Call("a", Parts("frontend", "You write React components.", "B."), 500)).reset();
}

TEST_F(EngineRunnerTest, UnknownAdaptersAndBadCallsAreErrorResults) {
  EngineNodeRunner runner(*engine_, *tokenizer_, *registry_);
  NodeCall call = Call("experts/missing", Parts("frontend", "Role.", "Task."));
  call.node_id = "style";
  NodeResult result = Run(runner, call);
  ASSERT_FALSE(result.status.ok());
  EXPECT_EQ(result.finish_reason, "error");
  EXPECT_NE(result.status.error().message().find("node 'style'"), std::string::npos);
  EXPECT_NE(result.status.error().message().find("unknown adapter 'experts/missing'"),
            std::string::npos)
      << result.status.error().message();
  EXPECT_EQ(runner.pinned_prefixes(), 0u);

  NodeCall bad_mode = Call("", Parts("frontend", "Role.", "Task."));
  bad_mode.ensemble = {{{{"a", 1.0f}}, 1.0}, {{{"b", 1.0f}}, 1.0}};
  bad_mode.ensemble_mode = "median";
  result = Run(runner, bad_mode);
  ASSERT_FALSE(result.status.ok());
  EXPECT_NE(result.status.error().message().find("median"), std::string::npos);

  NodeCall bad_schema = Call("a", Parts("frontend", "Role.", "Task."));
  bad_schema.output.kind = OutputContract::Kind::kJsonSchema;
  bad_schema.output.schema = Json::parse(R"({"type": "string", "pattern": "a+"})");
  result = Run(runner, bad_schema);
  ASSERT_FALSE(result.status.ok());
  EXPECT_EQ(result.finish_reason, "error");
}

TEST_F(EngineRunnerTest, EnsembleCallsRunAsOneEnsembleRequest) {
  EngineNodeRunner runner(*engine_, *tokenizer_, *registry_);
  const PromptParts parts = Parts("frontend", "You review code.", "Review this.");
  NodeCall call = Call("", parts, 8);
  call.ensemble = {{{{"a", 1.0f}}, 2.0}, {{{"b", 1.0f}}, 1.0}};
  call.ensemble_mode = "max";
  const NodeResult result = Run(runner, call);
  ASSERT_TRUE(result.status.ok()) << result.status.error().message();
  EXPECT_GT(result.completion_tokens, 0);
  EXPECT_TRUE(result.prefix_hits.empty());

  auto rendered = RenderNodePrompt(parts, {}, ChatFormat::kFunctionGemma);
  ASSERT_TRUE(rendered.ok());
  Request direct;
  direct.prompt = rendered->Full();
  direct.ensemble = {{{{"a", 1.0f}}, 2.0f}, {{{"b", 1.0f}}, 1.0f}};
  direct.ensemble_mode = EnsembleMode::kMax;
  direct.max_tokens = 8;
  RequestHandle handle = engine_->Submit(direct);
  const Completion& c = handle.Wait();
  ASSERT_TRUE(c.status.ok()) << c.status.error().message();
  EXPECT_EQ(result.text, c.text);
}

// --- Adapters ----------------------------------------------------------------------------------

class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<int> counter{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("fgnet_runner_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
                .string();
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(LoadExpertAdaptersTest, RegistersEveryAdapterUnderItsPath) {
  Gemma3Config config = GemmaVocabConfig();
  config.vocab_size = 300;
  ScratchDir dir;
  ASSERT_TRUE(WriteRandomCheckpoint(config, SynthOptions{}, dir.path() + "/base").ok());
  auto base = OpenModel(dir.path() + "/base");
  ASSERT_TRUE(base.ok()) << base.error().message();
  ASSERT_TRUE(WritePeftAdapter(RandomLoraAdapter(config, 2, 1, "x"), dir.path() + "/x").ok());
  ASSERT_TRUE(WritePeftAdapter(RandomLoraAdapter(config, 2, 2, "y"), dir.path() + "/y").ok());

  ExpertSet experts;
  experts.source = "experts.json";
  experts.experts.push_back({.id = "one", .adapters = {{dir.path() + "/x", 1.0f}}});
  experts.experts.push_back(
      {.id = "two", .adapters = {{dir.path() + "/x", 1.0f}, {dir.path() + "/y", 0.5f}}});
  AdapterRegistry registry(config);
  const Status loaded = LoadExpertAdapters(experts, *base, registry);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(registry.size(), 2u);
  EXPECT_NE(registry.Find(dir.path() + "/x"), nullptr);
  EXPECT_NE(registry.Find(dir.path() + "/y"), nullptr);

  experts.experts.push_back({.id = "three", .adapters = {{dir.path() + "/missing", 1.0f}}});
  const Status missing = LoadExpertAdapters(experts, *base, registry);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("experts.json: expert 'three': adapters[0]"),
            std::string::npos)
      << missing.error().message();
}

TEST(ExampleAdaptersTest, LoadAgainstTheFunctionGemmaConfig) {
  const std::string root = std::string(FGNET_TEST_DATA_DIR) + "/../../examples/adapters";
  const std::optional<Gemma3Config> config = FindPresetConfig("functiongemma-270m");
  ASSERT_TRUE(config.has_value());
  std::vector<std::string> hashes;
  for (const char* id :
       {"scaffold", "logic", "style", "test", "router", "frontend", "backend", "infra", "react",
        "css", "a11y", "api", "db", "auth", "docker", "k8s", "cicd"}) {
    auto adapter = LoadPeftAdapter(root + "/" + id, *config);
    ASSERT_TRUE(adapter.ok()) << id << ": " << adapter.error().message();
    EXPECT_EQ(adapter->name, id);
    std::size_t modules = 0;
    for (const auto& layer : adapter->layers) {
      for (const LoraLayer& m : layer) {
        if (!m.active()) continue;
        ++modules;
        EXPECT_EQ(m.rank, 2u) << id;
        EXPECT_FLOAT_EQ(m.scale, 2.0f) << id;
      }
    }
    EXPECT_EQ(modules, 6u) << id;  // q_proj and v_proj of layers 0, 8 and 17
    hashes.push_back(adapter->content_hash);
  }
  std::sort(hashes.begin(), hashes.end());
  EXPECT_EQ(std::unique(hashes.begin(), hashes.end()), hashes.end());
}

}  // namespace
}  // namespace fgnet::network
