// The serving engine against itself and the model: greedy output is the same alone, in a batch of
// 32 requests with mixed adapters, after preemption and from prefix-cache hits (whose logits are
// within 1e-4 of a cold run); pinned nested prefixes, activated adapters sharing base KV,
// approximate sharing (and the divergence it causes), logit ensembles against the members'
// logits, greedy and top-k selection under grammars and repetition penalties (in the model) equal
// to the sampler's on the whole row, per-request errors, back-pressure, cancellation, deadlines,
// priorities, metrics, a random seeded workload after which every block is free, and bf16 keys
// and values where the device holds them.

#include <cmath>
#include <cstdio>
#include <thread>

#include "engine/sampler.h"
#include "grammar/grammar.h"
#include "gtest/gtest.h"
#include "model/kv_cache.h"
#include "serving_test_support.h"

namespace fgnet {
namespace {

using testing::Ids;
using testing::ServingFixture;

Request Greedy(std::vector<std::int32_t> prompt, std::vector<AdapterSpec> adapters = {},
               std::int64_t max_tokens = 10) {
  Request r;
  r.prompt_ids = std::move(prompt);
  r.adapters = std::move(adapters);
  r.max_tokens = max_tokens;
  return r;
}

std::vector<AdapterSpec> AdapterMix(int i) {
  switch (i % 5) {
    case 0:
      return {};
    case 1:
      return {{"a", 1.0f}};
    case 2:
      return {{"b", 0.7f}};
    case 3:
      return {{"a", 0.5f}, {"b", 0.5f}};
    default:
      return {{"act", 1.0f}};
  }
}

// A prompt for request i: some share a common start, some contain the activation tokens.
std::vector<std::int32_t> PromptFor(int i) {
  std::vector<std::int32_t> p =
      Ids(static_cast<std::size_t>(3 + (i * 7) % 37), 100 + static_cast<std::uint64_t>(i));
  if (i % 3 == 0) {
    std::vector<std::int32_t> common = Ids(20, 7);
    p.insert(p.begin(), common.begin(), common.end());
  }
  if (i % 5 == 4) p.insert(p.begin() + static_cast<std::ptrdiff_t>(p.size() / 2), {5, 6});
  return p;
}

std::vector<std::int32_t> RunAlone(ServingFixture& f, const Request& r) {
  EngineOptions options;
  options.prefix_cache = false;
  auto engine = f.NewEngine(options);
  RequestHandle handle = engine->Submit(r);
  const Completion& c = handle.Wait();
  EXPECT_TRUE(c.status.ok()) << c.status.error().message();
  return c.ids;
}

void ExpectAllBlocksFree(Engine& engine) {
  engine.FlushPrefixCache();
  const EngineMetrics m = engine.Metrics();
  EXPECT_EQ(m.kv_blocks_free, m.kv_blocks_total);
  EXPECT_EQ(m.kv_blocks_used, 0);
  EXPECT_EQ(m.kv_blocks_cached, 0);
  EXPECT_GT(m.kv_block_bytes, 0);
  EXPECT_LE(m.kv_blocks_peak, m.kv_blocks_total);
}

// `r` submitted twice in turn to `engine`: the cold run, then the one that finds its prefix cached.
std::pair<Completion, Completion> ColdThenHot(Engine& engine, const Request& r) {
  RequestHandle cold = engine.Submit(r);
  Completion first = cold.Wait();
  RequestHandle hot = engine.Submit(r);
  return {std::move(first), hot.Wait()};
}

// Largest |a - b| over two completions' returned logits (of equal size).
double MaxLogitDifference(const Completion& a, const Completion& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.logits.size() && i < b.logits.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(a.logits[i]) - b.logits[i]));
  return worst;
}

class ServingTest : public ::testing::Test {
 protected:
  ServingFixture f_;
};

TEST_F(ServingTest, ABatchOf32MixedAdapterRequestsEqualsEachAlone) {
  std::vector<std::vector<std::int32_t>> alone;
  for (int i = 0; i < 32; ++i)
    alone.push_back(RunAlone(f_, Greedy(PromptFor(i), AdapterMix(i), 12)));
  auto engine = f_.NewEngine();
  std::vector<RequestHandle> handles;
  for (int i = 0; i < 32; ++i)
    handles.push_back(engine->Submit(Greedy(PromptFor(i), AdapterMix(i), 12)));
  for (int i = 0; i < 32; ++i) {
    const Completion& c = handles[static_cast<std::size_t>(i)].Wait();
    ASSERT_TRUE(c.status.ok()) << c.status.error().message();
    EXPECT_EQ(c.ids, alone[static_cast<std::size_t>(i)]) << "request " << i;
    EXPECT_EQ(c.finish_reason, "length");
    EXPECT_EQ(c.usage.completion_tokens, 12);
  }
  const EngineMetrics m = engine->Metrics();
  EXPECT_EQ(m.requests_finished, 32u);
  EXPECT_EQ(m.per_adapter.at("a").requests, 7u);  // i % 5 == 1 for i < 32
  EXPECT_LT(m.steps, 32u * 12u);                  // requests shared forward passes
  // The steps' wall time holds their forward passes and the scheduler's own work.
  EXPECT_GT(m.forward_ms, 0.0);
  EXPECT_GT(m.step_ms, m.forward_ms);
  ExpectAllBlocksFree(*engine);
}

TEST_F(ServingTest, PreemptedRequestsFinishWithTheSameOutput) {
  std::vector<std::vector<std::int32_t>> alone;
  for (int i = 0; i < 12; ++i)
    alone.push_back(RunAlone(f_, Greedy(PromptFor(i), AdapterMix(i), 30)));
  EngineOptions options;
  options.block_size = 4;
  options.kv_blocks = 60;  // about two requests' worth
  options.max_batch_tokens = 8;
  auto engine = f_.NewEngine(options);
  std::vector<RequestHandle> handles;
  for (int i = 0; i < 12; ++i)
    handles.push_back(engine->Submit(Greedy(PromptFor(i), AdapterMix(i), 30)));
  for (int i = 0; i < 12; ++i) {
    const Completion& c = handles[static_cast<std::size_t>(i)].Wait();
    ASSERT_TRUE(c.status.ok()) << c.status.error().message();
    EXPECT_EQ(c.ids, alone[static_cast<std::size_t>(i)]) << "request " << i;
  }
  EXPECT_GT(engine->Metrics().preemptions, 0u);
  ExpectAllBlocksFree(*engine);
}

TEST_F(ServingTest, ABudgetSmallerThanTheBatchServesEveryoneInTurn) {
  EngineOptions options;
  options.max_batch_tokens = 3;
  auto engine = f_.NewEngine(options);
  std::vector<RequestHandle> handles;
  for (int i = 0; i < 8; ++i)
    handles.push_back(engine->Submit(Greedy(PromptFor(i), AdapterMix(i), 9)));
  for (int i = 0; i < 8; ++i) {
    const Completion& c = handles[static_cast<std::size_t>(i)].Wait();
    EXPECT_EQ(c.ids, RunAlone(f_, Greedy(PromptFor(i), AdapterMix(i), 9))) << i;
  }
  const EngineMetrics m = engine->Metrics();
  EXPECT_LE(m.step_tokens, m.steps * 3);
}

// bf16 keys and values, where the device holds them (GPUs): a batch of mixed-adapter requests
// equals each request alone, prefix-cache hits continue exactly, and the pool is half the bytes.
// On the CPU the engine refuses them with a clear error.
TEST_F(ServingTest, Bf16KeysAndValuesServeWhereTheDeviceHoldsThem) {
  EngineOptions options;
  options.kv_dtype = DType::kBF16;
  options.threads = 2;
  if (!f_.engine_model().SupportsKVType(DType::kBF16)) {
    auto engine = Engine::Create(f_.engine_model(), "test-base", nullptr, &f_.registry(), options);
    ASSERT_FALSE(engine.ok());
    EXPECT_EQ(engine.error().message(),
              "engine: BF16 keys and values are not supported on cpu (F32 only)");
    return;
  }
  const auto run = [&](const std::vector<Request>& requests, EngineOptions o) {
    auto engine = f_.NewEngine(o);
    std::vector<RequestHandle> handles;
    for (const Request& r : requests) handles.push_back(engine->Submit(r));
    std::vector<std::vector<std::int32_t>> ids;
    for (RequestHandle& h : handles) {
      const Completion& c = h.Wait();
      EXPECT_TRUE(c.status.ok()) << c.status.error().message();
      ids.push_back(c.ids);
    }
    ExpectAllBlocksFree(*engine);
    return std::make_pair(ids, engine->Metrics().kv_block_bytes);
  };
  std::vector<Request> batch;
  for (int i = 0; i < 16; ++i) batch.push_back(Greedy(PromptFor(i), AdapterMix(i), 12));
  const auto [together, bf16_bytes] = run(batch, options);
  for (int i = 0; i < 16; i += 5) {
    SCOPED_TRACE(i);
    options.prefix_cache = false;
    EXPECT_EQ(run({batch[static_cast<std::size_t>(i)]}, options).first[0],
              together[static_cast<std::size_t>(i)]);
  }
  const auto [f32_ids, f32_bytes] = run({batch[0]}, EngineOptions{});
  EXPECT_EQ(2 * bf16_bytes, f32_bytes);
  // The prefix cache: the same prompt again continues as it did cold, its logits as close as bf16
  // keys allow (a key computed in a pass of another shape may round to the neighbouring bf16).
  options.prefix_cache = true;
  auto engine = f_.NewEngine(options);
  Request r = Greedy(Ids(45, 11), {}, 8);
  r.return_logits = true;
  const auto [cold, hot] = ColdThenHot(*engine, r);
  EXPECT_EQ(hot.usage.cached_tokens, 32);
  EXPECT_EQ(hot.ids, cold.ids);
  ASSERT_EQ(hot.logits.size(), cold.logits.size());
  const double worst = MaxLogitDifference(hot, cold);
  EXPECT_LE(worst, 2e-3);
  std::printf("bf16 KV, prefix hit vs cold: max |logit difference| %.3g\n", worst);
}

TEST_F(ServingTest, PrefixCacheHitsGiveTheColdLogits) {
  const std::vector<std::int32_t> prompt = Ids(45, 11);
  for (const auto& adapters : {std::vector<AdapterSpec>{}, std::vector<AdapterSpec>{{"a", 1.0f}}}) {
    auto engine = f_.NewEngine();
    Request r = Greedy(prompt, adapters, 8);
    r.return_logits = true;
    const auto [cold, hot] = ColdThenHot(*engine, r);
    ASSERT_TRUE(hot.status.ok());
    EXPECT_EQ(cold.usage.cached_tokens, 0);
    EXPECT_EQ(hot.usage.cached_tokens, 32);  // whole blocks of 16, the last token recomputed
    EXPECT_EQ(hot.ids, cold.ids);
    ASSERT_EQ(hot.logits.size(), cold.logits.size());
    const double worst = MaxLogitDifference(hot, cold);
    EXPECT_LE(worst, 1e-4);
    std::printf("prefix hit vs cold, %s: max |logit difference| %.3g\n",
                adapters.empty() ? "base" : "adapter a", worst);
    EXPECT_NEAR(engine->Metrics().prefix_hit_rate(), 32.0 / 90.0, 1e-9);
    ExpectAllBlocksFree(*engine);
  }
}

TEST_F(ServingTest, NestedPinnedPrefixesContinueExactly) {
  const std::vector<std::int32_t> system = Ids(19, 21), domain = Ids(13, 22), node = Ids(9, 23),
                                  task = Ids(7, 24);
  std::vector<std::int32_t> whole = system;
  for (const auto* part : {&domain, &node, &task})
    whole.insert(whole.end(), part->begin(), part->end());
  const std::vector<std::int32_t> want = RunAlone(f_, Greedy(whole, {{"a", 1.0f}}, 10));
  auto engine = f_.NewEngine();
  {
    auto level0 = engine->CreatePrefix({.prompt_ids = system, .adapters = {{"a", 1.0f}}});
    ASSERT_TRUE(level0.ok()) << level0.error().message();
    auto level1 =
        engine->CreatePrefix({.prompt_ids = domain, .adapters = {{"a", 1.0f}}, .parent = *level0});
    ASSERT_TRUE(level1.ok());
    auto level2 =
        engine->CreatePrefix({.prompt_ids = node, .adapters = {{"a", 1.0f}}, .parent = *level1});
    ASSERT_TRUE(level2.ok());
    EXPECT_EQ(level2->tokens().size(), 41u);
    Request r = Greedy(task, {{"a", 1.0f}}, 10);
    r.prefix = *level2;
    RequestHandle handle = engine->Submit(r);
    const Completion& c = handle.Wait();
    ASSERT_TRUE(c.status.ok()) << c.status.error().message();
    EXPECT_EQ(c.ids, want);
    EXPECT_EQ(c.usage.cached_tokens, 41);
    EXPECT_EQ(c.usage.prompt_tokens, 48);
    EXPECT_FALSE(c.prefix_approximate);
    // Pinned blocks survive a flush.
    engine->FlushPrefixCache();
    const EngineMetrics m = engine->Metrics();
    EXPECT_GT(m.kv_blocks_used, 0);
    EXPECT_GE(m.kv_blocks_peak, m.kv_blocks_used);
  }
  ExpectAllBlocksFree(*engine);  // the handles are gone
}

TEST_F(ServingTest, OtherAdaptersReusePrefixesOnlyWhereExactOrAskedFor) {
  const std::vector<std::int32_t> system = Ids(24, 31);
  const std::vector<std::int32_t> task = {9, 5, 6, 12, 13};  // invokes "act"
  std::vector<std::int32_t> whole = system;
  whole.insert(whole.end(), task.begin(), task.end());
  auto engine = f_.NewEngine();
  auto base = engine->CreatePrefix({.prompt_ids = system});
  ASSERT_TRUE(base.ok());

  // An activated adapter invoked after the prefix: the base KV is exact.
  Request act = Greedy(task, {{"act", 1.0f}}, 10);
  act.prefix = *base;
  RequestHandle act_handle = engine->Submit(act);
  const Completion& act_done = act_handle.Wait();
  ASSERT_TRUE(act_done.status.ok()) << act_done.status.error().message();
  EXPECT_FALSE(act_done.prefix_approximate);
  EXPECT_EQ(act_done.ids, RunAlone(f_, Greedy(whole, {{"act", 1.0f}}, 10)));

  // A plain adapter: refused unless approximate sharing is asked for.
  Request plain = Greedy(task, {{"a", 1.0f}}, 6);
  plain.prefix = *base;
  plain.return_logits = true;
  RequestHandle refused = engine->Submit(plain);
  EXPECT_FALSE(refused.Wait().status.ok());
  EXPECT_NE(refused.Wait().status.error().message().find("approximate_prefix"), std::string::npos);
  plain.approximate_prefix = true;
  RequestHandle approx_handle = engine->Submit(plain);
  const Completion& approx = approx_handle.Wait();
  ASSERT_TRUE(approx.status.ok());
  EXPECT_TRUE(approx.prefix_approximate);

  // The divergence it causes: KL(exact || approximate) of the first next-token distribution.
  Request exact = Greedy(whole, {{"a", 1.0f}}, 6);
  exact.return_logits = true;
  RequestHandle exact_handle = engine->Submit(exact);
  const Completion& exact_done = exact_handle.Wait();
  const std::size_t vocab = 97;
  const auto log_softmax = [&](const float* l) {
    double mx = -1e300;
    for (std::size_t i = 0; i < vocab; ++i) mx = std::max(mx, static_cast<double>(l[i]));
    double sum = 0;
    for (std::size_t i = 0; i < vocab; ++i) sum += std::exp(l[i] - mx);
    std::vector<double> out(vocab);
    for (std::size_t i = 0; i < vocab; ++i) out[i] = l[i] - mx - std::log(sum);
    return out;
  };
  const std::vector<double> p = log_softmax(exact_done.logits.data());
  const std::vector<double> q = log_softmax(approx.logits.data());
  double kl = 0;
  for (std::size_t i = 0; i < vocab; ++i) kl += std::exp(p[i]) * (p[i] - q[i]);
  std::printf("approximate prefix sharing (base KV under adapter a): KL = %.4g nats\n", kl);
  EXPECT_GT(kl, 1e-6);  // it is an approximation, measurably
  EXPECT_TRUE(std::isfinite(kl));
}

TEST_F(ServingTest, EnsemblesSampleFromTheWeightedMembersLogits) {
  const std::vector<std::int32_t> prompt = Ids(17, 41);
  auto engine = f_.NewEngine();
  for (EnsembleMode mode : {EnsembleMode::kWeightedMean, EnsembleMode::kMax}) {
    Request r;
    r.prompt_ids = prompt;
    r.max_tokens = 6;
    r.ensemble = {{{{"a", 1.0f}}, 3.0f}, {{{"b", 1.0f}}, 1.0f}};
    r.ensemble_mode = mode;
    r.return_logits = true;
    RequestHandle handle = engine->Submit(r);
    const Completion& c = handle.Wait();
    ASSERT_TRUE(c.status.ok()) << c.status.error().message();
    ASSERT_EQ(c.ids.size(), 6u);
    // Each member's logits along the chosen tokens, from the model directly.
    std::vector<std::int32_t> seq = prompt;
    seq.insert(seq.end(), c.ids.begin(), c.ids.end() - 1);
    std::vector<std::vector<float>> member(2);
    const char* names[] = {"a", "b"};
    for (int k = 0; k < 2; ++k) {
      KVCache cache = f_.model().NewKVCache(64);
      const AdapterUse use{f_.registry().Find(names[k]).get(), 1.0f, 0};
      ASSERT_TRUE(f_.model()
                      .Forward(seq, cache, *std::make_unique<ThreadPool>(1), LogitsMode::kAll,
                               &member[static_cast<std::size_t>(k)], std::span(&use, 1))
                      .ok());
    }
    const std::size_t vocab = 97;
    for (std::size_t step = 0; step < 6; ++step) {
      const std::size_t row = (prompt.size() - 1 + step) * vocab;
      std::vector<float> want(vocab);
      float scale = 1.0f;  // the tolerance is relative to the row's largest logit
      for (std::size_t i = 0; i < vocab; ++i) {
        const float a = 3.0f * member[0][row + i], b = member[1][row + i];
        want[i] = mode == EnsembleMode::kMax ? std::max(a, b) : (a + b) / 4.0f;
        scale = std::max(scale, std::fabs(want[i]));
      }
      for (std::size_t i = 0; i < vocab; ++i) {
        ASSERT_NEAR(c.logits[step * vocab + i], want[i], f_.LogitTolerance() * scale)
            << step << " " << i;
      }
      EXPECT_EQ(c.ids[step], ArgMax(std::span(c.logits).subspan(step * vocab, vocab)));
    }
  }
  ExpectAllBlocksFree(*engine);
}

// A vocabulary for the fixture's 97 tokens: 0 never, 1 a stop symbol, then single letters and
// digits and two-letter pieces.
std::shared_ptr<const TokenVocabulary> FixtureVocab() {
  std::vector<TokenVocabulary::Entry> entries = {{TokenKind::kNever, ""},
                                                 {TokenKind::kSymbol, "<eos>"}};
  for (char ch = 'a'; ch <= 'z'; ++ch) entries.push_back({TokenKind::kText, std::string(1, ch)});
  for (char ch = '0'; ch <= '9'; ++ch) entries.push_back({TokenKind::kText, std::string(1, ch)});
  for (int i = 0; entries.size() < 97; ++i) {
    entries.push_back(
        {TokenKind::kText, {static_cast<char>('a' + i % 26), static_cast<char>('a' + i / 26 * 5)}});
  }
  return TokenVocabulary::FromEntries(entries);
}

// Greedy and top-k requests under a grammar and a repetition penalty select in the model (the
// grammar's bitset and the penalty as the step's LogitsFilter, no row to the host): the same tokens
// as the same requests returning their logits, which the sampler and the grammar take on the host.
TEST_F(ServingTest, SelectionUnderGrammarsAndPenaltiesEqualsTheSamplerOnTheWholeRow) {
  GrammarOptions options;
  options.stop_ids = {1};
  auto grammar = Grammar::FromRegex("[a-m]{2,9}([0-4]+|-[n-z]{1,5})", FixtureVocab(), options);
  ASSERT_TRUE(grammar.ok()) << grammar.error().message();
  std::vector<Request> requests;
  for (int i = 0; i < 16; ++i) {
    Request r = Greedy(PromptFor(i), AdapterMix(i), 6 + i % 11);
    if (i % 4 >= 2)
      r.sampling = {.temperature = 0.8f, .top_k = 5 + i % 3, .seed = 7u + static_cast<unsigned>(i)};
    if (i % 2 == 1) {
      r.grammar = *grammar;
      r.stop_ids = {1};
    }
    r.sampling.repetition_penalty = i % 3 == 0 ? 1.0f : 1.2f + 0.3f * static_cast<float>(i % 4);
    requests.push_back(std::move(r));
  }
  const auto run = [&](bool return_logits) {
    auto engine = f_.NewEngine();
    std::vector<RequestHandle> handles;
    for (Request r : requests) {
      r.return_logits = return_logits;
      handles.push_back(engine->Submit(std::move(r)));
    }
    std::vector<std::vector<std::int32_t>> ids;
    for (RequestHandle& h : handles) {
      const Completion& c = h.Wait();
      EXPECT_TRUE(c.status.ok()) << c.status.error().message();
      ids.push_back(c.ids);
    }
    EXPECT_GT(engine->Metrics().grammar_masks, 0u);
    ExpectAllBlocksFree(*engine);
    return ids;
  };
  const std::vector<std::vector<std::int32_t>> on_host = run(true);
  const std::vector<std::vector<std::int32_t>> in_model = run(false);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(in_model[i], on_host[i]) << "request " << i;
    EXPECT_GE(static_cast<std::int64_t>(in_model[i].size()),
              i % 2 == 1 ? 3 : requests[i].max_tokens)
        << "request " << i;
  }
}

TEST_F(ServingTest, ErrorsArePerRequest) {
  EngineOptions options;
  options.kv_blocks = 40;
  options.block_size = 4;
  options.max_batch_tokens = 8;
  auto engine = f_.NewEngine(options);
  RequestHandle good = engine->Submit(Greedy(Ids(10, 51), {{"a", 1.0f}}, 20));
  const auto error_of = [&](Request r) {
    RequestHandle h = engine->Submit(std::move(r));
    const Completion& c = h.Wait();
    EXPECT_EQ(c.finish_reason, "error");
    return c.status.ok() ? std::string() : c.status.error().message();
  };
  EXPECT_NE(error_of(Greedy(Ids(5, 1), {{"nope", 1.0f}})).find("unknown adapter 'nope'"),
            std::string::npos);
  EXPECT_NE(error_of(Greedy(Ids(600, 1))).find("does not fit the context of 512"),
            std::string::npos);
  EXPECT_NE(error_of(Greedy(Ids(300, 1), {}, 100)).find("out of KV memory"), std::string::npos);
  EXPECT_NE(error_of(Greedy({})).find("exactly one of"), std::string::npos);
  EXPECT_NE(error_of(Greedy({1, 2, 400})).find("prompt_ids[2] = 400"), std::string::npos);
  Request text;
  text.prompt = "hello";
  EXPECT_NE(error_of(text).find("needs a tokenizer"), std::string::npos);
  Request bad_sampling = Greedy(Ids(5, 1));
  bad_sampling.sampling.top_p = 2.0f;
  EXPECT_NE(error_of(bad_sampling).find("top_p"), std::string::npos);
  const Completion& done = good.Wait();
  EXPECT_TRUE(done.status.ok());
  EXPECT_EQ(done.ids.size(), 20u);
}

TEST_F(ServingTest, AFullQueueRefusesWithAClearError) {
  EngineOptions options;
  options.max_queue = 1;
  options.max_running = 1;
  auto engine = f_.NewEngine(options);
  std::vector<RequestHandle> handles;
  for (int i = 0; i < 6; ++i)
    handles.push_back(engine->Submit(Greedy(Ids(20, 60 + static_cast<std::uint64_t>(i)), {}, 200)));
  int refused = 0;
  for (RequestHandle& h : handles) {
    const Completion& c = h.Wait();
    if (!c.status.ok()) {
      EXPECT_NE(c.status.error().message().find("queue full"), std::string::npos);
      ++refused;
    }
  }
  EXPECT_GE(refused, 1);
  EXPECT_EQ(engine->Metrics().requests_rejected, static_cast<std::uint64_t>(refused));
}

TEST_F(ServingTest, CancellingStreamsFreesBlocks) {
  auto engine = f_.NewEngine();
  RequestHandle h = engine->Submit(Greedy(Ids(30, 71), {{"b", 1.0f}}, 400));
  StreamEvent event;
  ASSERT_TRUE(h.Next(&event));
  h.Cancel();
  const Completion& c = h.Wait();
  EXPECT_EQ(c.finish_reason, "cancelled");
  EXPECT_LT(c.ids.size(), 400u);
  EXPECT_EQ(c.ids.front(), event.id);
  ExpectAllBlocksFree(*engine);
  // Streaming returns every id, in order.
  RequestHandle s = engine->Submit(Greedy(Ids(12, 72), {}, 15));
  std::vector<std::int32_t> streamed;
  while (s.Next(&event)) streamed.push_back(event.id);
  EXPECT_EQ(streamed, s.Wait().ids);
}

TEST_F(ServingTest, DeadlinesAndPriorities) {
  EngineOptions options;
  options.max_running = 1;
  auto engine = f_.NewEngine(options);
  Request late = Greedy(Ids(10, 81), {}, 50);
  late.deadline = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  RequestHandle late_handle = engine->Submit(late);
  EXPECT_EQ(late_handle.Wait().finish_reason, "deadline");
  // With one sequence at a time, a later request of higher priority overtakes a waiting one.
  RequestHandle first = engine->Submit(Greedy(Ids(10, 82), {}, 100));
  RequestHandle low = engine->Submit(Greedy(Ids(10, 83), {}, 10));
  Request high_request = Greedy(Ids(10, 84), {}, 10);
  high_request.priority = 5;
  RequestHandle high = engine->Submit(high_request);
  first.Wait();
  const double high_done = high.Wait().timings.total_ms;
  const double low_done = low.Wait().timings.total_ms;
  EXPECT_LT(high_done, low_done);
}

TEST_F(ServingTest, RandomWorkloadsLeaveEveryBlockFree) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    EngineOptions options;
    options.block_size = 4;
    options.kv_blocks = 90;
    options.max_batch_tokens = 16;
    auto engine = f_.NewEngine(options);
    Philox rng(seed);
    const auto pick = [&](std::uint32_t n) { return static_cast<int>(rng.NextU32() % n); };
    std::vector<PrefixHandle> prefixes;
    std::vector<RequestHandle> handles;
    for (int i = 0; i < 40; ++i) {
      if (pick(8) == 0) {
        PrefixRequest p{.prompt_ids = Ids(static_cast<std::size_t>(1 + pick(20)),
                                          seed * 100 + static_cast<std::uint64_t>(i))};
        if (!prefixes.empty() && pick(2) == 0)
          p.parent =
              prefixes[static_cast<std::size_t>(pick(static_cast<std::uint32_t>(prefixes.size())))];
        auto prefix = engine->CreatePrefix(p);
        ASSERT_TRUE(prefix.ok()) << prefix.error().message();
        prefixes.push_back(*prefix);
        continue;
      }
      Request r = Greedy(Ids(static_cast<std::size_t>(1 + pick(30)),
                             seed * 1000 + static_cast<std::uint64_t>(pick(6))),
                         AdapterMix(pick(5)), 1 + pick(25));
      if (!prefixes.empty() && pick(3) == 0) {
        r.prefix =
            prefixes[static_cast<std::size_t>(pick(static_cast<std::uint32_t>(prefixes.size())))];
        r.approximate_prefix = true;
      }
      if (pick(4) == 0) r.ensemble = {{{{"a", 1.0f}}, 1.0f}, {{}, 1.0f}}, r.adapters.clear();
      r.sampling = {.do_sample = true, .temperature = 0.8f, .seed = seed};
      handles.push_back(engine->Submit(r));
      if (pick(5) == 0)
        handles[static_cast<std::size_t>(pick(static_cast<std::uint32_t>(handles.size())))]
            .Cancel();
      if (pick(6) == 0 && !prefixes.empty()) prefixes.erase(prefixes.begin());
    }
    for (RequestHandle& h : handles) {
      const Completion& c = h.Wait();
      EXPECT_TRUE(c.status.ok() || c.finish_reason == "cancelled") << c.status.error().message();
    }
    prefixes.clear();
    handles.clear();
    ExpectAllBlocksFree(*engine);
  }
}

}  // namespace
}  // namespace fgnet
