#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <vector>

#include "util/rng.h"

namespace fgnet {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> RandomLogits(std::size_t n, std::uint64_t seed, float scale = 4.0f) {
  Philox rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = (rng.NextFloat() * 2.0f - 1.0f) * scale;
  return v;
}

std::set<std::int32_t> Ids(const std::vector<TokenLogit>& c) {
  std::set<std::int32_t> s;
  for (const TokenLogit& t : c) s.insert(t.id);
  return s;
}

// --- Straightforward references (full sorts, dense vectors, -inf marks removed tokens). ------

void RefRepetitionPenalty(std::vector<float>& logits, const std::vector<std::int32_t>& ids,
                          float penalty) {
  std::set<std::int32_t> distinct(ids.begin(), ids.end());
  for (const std::int32_t id : distinct) {
    if (id < 0 || id >= static_cast<std::int32_t>(logits.size())) continue;
    float& v = logits[id];
    v = v < 0 ? v * penalty : v / penalty;
  }
}

void RefTopK(std::vector<float>& logits, int k) {
  if (k <= 0 || k >= static_cast<int>(logits.size())) return;
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  const float kth = sorted[k - 1];
  for (float& v : logits) {
    if (v < kth) v = -kInf;
  }
}

std::vector<double> RefSoftmax(const std::vector<float>& logits) {
  double m = -kInf;
  for (const float v : logits) m = std::max<double>(m, v);
  std::vector<double> p(logits.size());
  double total = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    p[i] = logits[i] == -kInf ? 0.0 : std::exp(static_cast<double>(logits[i]) - m);
    total += p[i];
  }
  for (double& x : p) x /= total;
  return p;
}

// transformers' TopPLogitsWarper: ascending sort, cumulative probability, remove <= 1 - p, keep
// the last (largest). Ties sorted so that the larger id counts as "smaller".
void RefTopP(std::vector<float>& logits, float top_p) {
  if (top_p >= 1.0f) return;
  const std::vector<double> p = RefSoftmax(logits);
  std::vector<std::int32_t> order(logits.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::int32_t>(i);
  std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    if (logits[a] != logits[b]) return logits[a] < logits[b];
    return a > b;
  });
  double cumulative = 0;
  for (std::size_t r = 0; r + 1 < order.size(); ++r) {
    cumulative += p[order[r]];
    if (cumulative <= 1.0 - top_p) logits[order[r]] = -kInf;
  }
}

void RefMinP(std::vector<float>& logits, float min_p) {
  if (min_p <= 0) return;
  const std::vector<double> p = RefSoftmax(logits);
  const double top = *std::max_element(p.begin(), p.end());
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (p[i] < min_p * top) logits[i] = -kInf;
  }
}

// The whole chain; returns the final distribution (id -> probability).
std::map<std::int32_t, double> RefDistribution(std::vector<float> logits,
                                               const std::vector<std::int32_t>& history,
                                               const SamplingParams& params) {
  RefRepetitionPenalty(logits, history, params.repetition_penalty);
  if (params.greedy()) {
    const auto it = std::max_element(logits.begin(), logits.end());
    return {{static_cast<std::int32_t>(it - logits.begin()), 1.0}};
  }
  for (float& v : logits) v = v / params.temperature;
  RefTopK(logits, params.top_k);
  RefTopP(logits, params.top_p);
  RefMinP(logits, params.min_p);
  const std::vector<double> p = RefSoftmax(logits);
  std::map<std::int32_t, double> dist;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (logits[i] != -kInf) dist[static_cast<std::int32_t>(i)] = p[i];
  }
  return dist;
}

std::vector<TokenLogit> AllCandidates(const std::vector<float>& logits) {
  std::vector<TokenLogit> c;
  SelectTopK(logits, 0, &c);
  return c;
}

std::set<std::int32_t> Alive(const std::vector<float>& logits) {
  std::set<std::int32_t> s;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > -kInf) s.insert(static_cast<std::int32_t>(i));
  }
  return s;
}

// --- Tests --------------------------------------------------------------------------------------

TEST(SamplingParams, Validate) {
  EXPECT_TRUE(SamplingParams{}.Validate().ok());
  SamplingParams p;
  p.temperature = -0.1f;
  EXPECT_NE(p.Validate().error().message().find("temperature"), std::string::npos);
  p = {};
  p.top_k = -1;
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.top_p = 0.0f;
  EXPECT_NE(p.Validate().error().message().find("top_p 0 is not in (0, 1]"), std::string::npos);
  p.top_p = 1.5f;
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.min_p = 1.5f;
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.repetition_penalty = 0.0f;
  EXPECT_FALSE(p.Validate().ok());
  p.repetition_penalty = NAN;
  EXPECT_FALSE(p.Validate().ok());
}

TEST(Sampler, RepetitionPenaltyMatchesReference) {
  std::vector<float> logits = RandomLogits(100, 1);
  std::vector<float> expected = logits;
  const std::vector<std::int32_t> ids = {3, 3, 7, 99, 0, -5, 100, 7, 42};
  RefRepetitionPenalty(expected, ids, 1.3f);
  ApplyRepetitionPenalty(logits, ids, 1.3f);
  EXPECT_EQ(logits, expected);
  // Negative logits are multiplied (pushed down), positive ones divided.
  std::vector<float> two = {-2.0f, 2.0f};
  ApplyRepetitionPenalty(two, std::vector<std::int32_t>{0, 1}, 2.0f);
  EXPECT_EQ(two, (std::vector<float>{-4.0f, 1.0f}));
}

TEST(Sampler, ArgMaxFirstMaximumWinsAndSkipsNaN) {
  EXPECT_EQ(ArgMax(std::vector<float>{1, 3, 2, 3}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{NAN, -1, NAN, 0}), 3);
  EXPECT_EQ(ArgMax(std::vector<float>{-kInf, -kInf}), -1);
  EXPECT_EQ(ArgMax(std::vector<float>{}), -1);
}

TEST(Sampler, TopKMatchesReferenceIncludingTies) {
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> logits = RandomLogits(500, 100 + trial);
    // Quantise to create many ties, and kill a few entries.
    for (float& v : logits) v = std::round(v * 2.0f) / 2.0f;
    logits[7] = -kInf;
    logits[11] = NAN;
    for (const int k : {0, 1, 2, 5, 40, 499, 500, 1000}) {
      std::vector<float> expected = logits;
      expected[11] = -kInf;
      RefTopK(expected, k);
      std::vector<TokenLogit> got;
      SelectTopK(logits, k, &got);
      EXPECT_EQ(Ids(got), Alive(expected)) << "trial " << trial << " k " << k;
    }
  }
}

TEST(Sampler, TopPMatchesReference) {
  for (int trial = 0; trial < 40; ++trial) {
    // Small lists and one larger than the first partial-sort head (256).
    const std::size_t n = trial % 4 == 0 ? 3000 : 50;
    const std::vector<float> logits = RandomLogits(n, 300 + trial, trial % 2 == 0 ? 8.0f : 1.0f);
    for (const float p : {0.01f, 0.3f, 0.5f, 0.9f, 0.95f, 0.999f, 1.0f}) {
      std::vector<float> expected = logits;
      RefTopP(expected, p);
      std::vector<TokenLogit> c = AllCandidates(logits);
      KeepTopP(c, p);
      EXPECT_EQ(Ids(c), Alive(expected)) << "trial " << trial << " p " << p;
      EXPECT_TRUE(std::is_sorted(c.begin(), c.end(), [](const TokenLogit& a, const TokenLogit& b) {
        return a.id < b.id;
      }));
    }
  }
}

TEST(Sampler, TopPOnAFlatDistributionKeepsAlmostEverything) {
  const std::vector<float> logits(20000, 0.5f);
  std::vector<TokenLogit> c = AllCandidates(logits);
  KeepTopP(c, 0.99123f);
  // Removed: the ascending prefix whose mass is <= 0.00877, i.e. 175 tokens (largest ids first).
  std::vector<float> expected = logits;
  RefTopP(expected, 0.99123f);
  EXPECT_EQ(Ids(c), Alive(expected));
  EXPECT_EQ(c.size(), 19825u);
  EXPECT_EQ(c.back().id, 19824);
}

TEST(Sampler, MinPMatchesReference) {
  for (int trial = 0; trial < 30; ++trial) {
    const std::vector<float> logits = RandomLogits(200, 500 + trial, 5.0f);
    for (const float min_p : {0.0f, 0.01f, 0.1f, 0.5f, 1.0f}) {
      std::vector<float> expected = logits;
      RefMinP(expected, min_p);
      std::vector<TokenLogit> c = AllCandidates(logits);
      KeepMinP(c, min_p);
      EXPECT_EQ(Ids(c), Alive(expected)) << "trial " << trial << " min_p " << min_p;
    }
  }
}

void ExpectDistributionMatches(const std::vector<float>& logits,
                               const std::vector<std::int32_t>& history,
                               const SamplingParams& params) {
  Sampler sampler(params);
  sampler.AddHistory(history);
  const auto got = sampler.Distribution(logits);
  ASSERT_TRUE(got.ok()) << got.error().message();
  const std::map<std::int32_t, double> want = RefDistribution(logits, history, params);
  ASSERT_EQ(got->size(), want.size());
  for (const auto& [id, p] : *got) {
    ASSERT_TRUE(want.count(id)) << id;
    EXPECT_NEAR(p, want.at(id), 1e-9) << id;
  }
}

TEST(Sampler, WholeChainMatchesReference) {
  const std::vector<std::int32_t> history = {5, 17, 17, 230, 999, 3};
  int trial = 0;
  for (const float temperature : {0.0f, 0.3f, 1.0f, 1.7f}) {
    for (const int top_k : {0, 1, 10, 64}) {
      for (const float top_p : {1.0f, 0.9f, 0.5f}) {
        for (const float min_p : {0.0f, 0.05f}) {
          SamplingParams p;
          p.temperature = temperature;
          p.top_k = top_k;
          p.top_p = top_p;
          p.min_p = min_p;
          p.repetition_penalty = trial % 2 == 0 ? 1.0f : 1.3f;
          const std::vector<float> logits = RandomLogits(1000, 900 + trial++, 6.0f);
          ExpectDistributionMatches(logits, history, p);
        }
      }
    }
  }
}

TEST(Sampler, FullVocabularyMatchesReference) {
  const std::vector<float> logits = RandomLogits(262144, 42, 12.0f);
  SamplingParams p;
  p.top_k = 64;
  p.top_p = 0.95f;
  ExpectDistributionMatches(logits, {1, 2, 3}, p);
  p.top_k = 0;  // top-p alone on 262144 candidates
  p.top_p = 0.9f;
  ExpectDistributionMatches(logits, {}, p);
  p.top_p = 1.0f;
  p.min_p = 0.2f;
  ExpectDistributionMatches(logits, {}, p);
}

TEST(Sampler, GreedyPicksTheFirstMaximumOfThePenalisedLogits) {
  const std::vector<float> logits = {1.0f, 3.0f, 0.5f, 3.0f, 2.9f};
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler greedy(p);
  EXPECT_EQ(*greedy.Sample(logits), 1);
  p = {};
  p.do_sample = false;
  p.repetition_penalty = 2.0f;
  Sampler penalised(p);
  penalised.AddHistory(std::vector<std::int32_t>{1});
  EXPECT_EQ(*penalised.Sample(logits), 3);
  penalised.Accept(3);
  EXPECT_EQ(*penalised.Sample(logits), 4);
}

TEST(Sampler, NoFiniteLogitIsAnError) {
  const std::vector<float> logits = {-kInf, NAN, -kInf};
  Sampler sampler(SamplingParams{});
  EXPECT_FALSE(sampler.Sample(logits).ok());
  SamplingParams g;
  g.temperature = 0;
  Sampler greedy(g);
  EXPECT_FALSE(greedy.Sample(logits).ok());
}

TEST(Sampler, SameSeedSameTokens) {
  const std::vector<float> logits = RandomLogits(5000, 7, 3.0f);
  SamplingParams p;
  p.top_k = 50;
  p.seed = 1234;
  Sampler a(p), b(p);
  p.seed = 1235;
  Sampler c(p);
  int differ = 0;
  for (int i = 0; i < 300; ++i) {
    const std::int32_t x = *a.Sample(logits);
    ASSERT_EQ(x, *b.Sample(logits));
    differ += x != *c.Sample(logits);
  }
  EXPECT_GT(differ, 200);
}

TEST(Sampler, DrawEndpoints) {
  const std::vector<TokenLogit> c = {{2, 0.0f}, {5, -kInf}, {9, 0.0f}, {11, -kInf}};
  std::vector<double> scratch;
  EXPECT_EQ(DrawFromCandidates(c, 0.0, &scratch), 2);
  EXPECT_EQ(DrawFromCandidates(c, 0.4999, &scratch), 2);
  EXPECT_EQ(DrawFromCandidates(c, 0.5001, &scratch), 9);
  EXPECT_EQ(DrawFromCandidates(c, 0.9999999, &scratch), 9);
  EXPECT_EQ(DrawFromCandidates(c, std::nextafter(1.0, 0.0), &scratch), 9);
}

TEST(Sampler, TopPWithTiesKeepsLowerIdsFirst) {
  // Four equal tokens of 0.25: top_p 0.5 keeps two (mass before the third is 0.5), the lower ids.
  std::vector<TokenLogit> c = {{7, 1.0f}, {3, 1.0f}, {9, 1.0f}, {1, 1.0f}};
  KeepTopP(c, 0.5f);
  EXPECT_EQ(Ids(c), (std::set<std::int32_t>{1, 3}));
  // Many ties across the quickselect range.
  std::vector<float> logits(1000);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(i % 7);
  for (const float p : {0.1f, 0.33f, 0.77f}) {
    std::vector<float> expected = logits;
    RefTopP(expected, p);
    std::vector<TokenLogit> all = AllCandidates(logits);
    KeepTopP(all, p);
    EXPECT_EQ(Ids(all), Alive(expected)) << p;
  }
}

// With a fixed seed the frequencies are deterministic; the bounds are about 4 standard
// deviations for 200000 draws.
TEST(Sampler, SampledFrequenciesFollowTheDistribution) {
  const std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  std::vector<float> logits;
  for (const double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  SamplingParams params;
  params.seed = 2024;
  Sampler sampler(params);
  const int n = 200000;
  std::vector<int> counts(probs.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[*sampler.Sample(logits)];
  for (std::size_t i = 0; i < probs.size(); ++i) {
    const double sd = std::sqrt(probs[i] * (1 - probs[i]) / n);
    EXPECT_NEAR(counts[i] / static_cast<double>(n), probs[i], 4 * sd) << i;
  }
  // Top-k 2 renormalises over the two best: 0.625 / 0.375; temperature 0.5 squares the odds.
  params.top_k = 2;
  params.temperature = 0.5f;
  Sampler top2(params);
  std::vector<int> c2(probs.size(), 0);
  for (int i = 0; i < n; ++i) ++c2[*top2.Sample(logits)];
  const double p0 = 0.25 / (0.25 + 0.09);
  EXPECT_NEAR(c2[0] / static_cast<double>(n), p0, 4 * std::sqrt(p0 * (1 - p0) / n));
  EXPECT_EQ(c2[2] + c2[3], 0);
}

}  // namespace
}  // namespace fgnet

namespace fgnet {
namespace {

// A row's largest logits (a model's LogitsMode::kTop) give exactly the tokens the whole row gives,
// draw after draw, whenever TopIsComplete says they hold the sampler's candidates.
TEST(Sampler, SamplingFromTheTopLogitsEqualsSamplingFromTheRow) {
  int compared = 0;
  for (std::uint64_t seed = 0; seed < 40; ++seed) {
    std::vector<float> logits = RandomLogits(3000, 500 + seed, 6.0f);
    // Ties, dead values and NaN among the largest.
    logits[7] = logits[8] = logits[9] = 6.5f;
    logits[10] = -kInf;
    logits[11] = std::nanf("");
    if (seed % 4 == 0) std::fill(logits.begin() + 100, logits.begin() + 200, 7.0f);  // 100 ties
    SamplingParams p;
    p.top_k = static_cast<std::int32_t>(1 + seed % 63);
    p.top_p = seed % 3 == 0 ? 1.0f : 0.5f + 0.01f * static_cast<float>(seed);
    p.min_p = seed % 5 == 0 ? 0.05f : 0.0f;
    p.temperature = seed % 2 == 0 ? 1.0f : 0.3f + 0.1f * static_cast<float>(seed % 7);
    p.seed = seed;
    Sampler whole(p), from_top(p);
    ASSERT_TRUE(from_top.CanSampleFromTop());
    std::vector<TopLogit> top;
    SelectTopLogits(logits, &top);
    ASSERT_EQ(top.size(), kTopLogits);
    for (std::size_t i = 1; i < top.size(); ++i) {
      ASSERT_TRUE(top[i - 1].logit > top[i].logit ||
                  (top[i - 1].logit == top[i].logit && top[i - 1].id < top[i].id));
    }
    if (!TopIsComplete(top, p.top_k, p.temperature)) {
      EXPECT_EQ(seed % 4, 0u) << "only the row of 100 ties may not fit";
      continue;
    }
    ++compared;
    for (int draw = 0; draw < 50; ++draw) {
      auto a = whole.Sample(logits);
      auto b = from_top.SampleFromTop(top);
      ASSERT_TRUE(a.ok() && b.ok());
      ASSERT_EQ(*a, *b) << "seed " << seed << " draw " << draw;
    }
  }
  EXPECT_GE(compared, 25);
}

// Under a repetition penalty the model applies FillFilter's filter before selecting: sampling the
// filtered row (SamplePenalized), or its top (SampleFromTop), or taking its argmax gives the tokens
// Sample() gives on the raw row, as the history grows.
TEST(Sampler, ThePenaltyInTheModelEqualsThePenaltyInTheSampler) {
  for (const bool greedy : {true, false}) {
    SamplingParams p;
    p.do_sample = !greedy;
    p.top_k = 20;
    p.temperature = 0.7f;
    p.repetition_penalty = 1.6f;
    p.seed = 9;
    Sampler raw(p), filtered(p), from_top(p);
    for (Sampler* s : {&raw, &filtered, &from_top})
      s->AddHistory(std::vector<std::int32_t>{4, 9, 4});
    for (int step = 0; step < 40; ++step) {
      const std::vector<float> logits =
          RandomLogits(700, 900 + static_cast<std::uint64_t>(step), 3.0f);
      LogitsFilter filter;
      filtered.FillFilter(&filter);
      ASSERT_EQ(filter.repetition_penalty, 1.6f);
      std::vector<float> row = logits;
      ApplyLogitsFilter(row, filter);
      auto want = raw.Sample(logits);
      auto got = filtered.SamplePenalized(row);
      ASSERT_TRUE(want.ok() && got.ok());
      ASSERT_EQ(*got, *want) << "step " << step;
      if (greedy) {
        ASSERT_EQ(*want, ArgMax(row));
      } else {
        std::vector<TopLogit> top;
        SelectTopLogits(row, &top);
        ASSERT_TRUE(TopIsComplete(top, p.top_k, p.temperature));
        auto t = from_top.SampleFromTop(top);
        ASSERT_TRUE(t.ok());
        ASSERT_EQ(*t, *want) << "step " << step;
      }
      for (Sampler* s : {&raw, &filtered, &from_top}) s->Accept(*want);
    }
    LogitsFilter filter;
    raw.FillFilter(&filter);
    EXPECT_GT(filter.penalized.size(), 5u);  // the history grew, distinct ids only
  }
  Sampler plain{SamplingParams{}};
  LogitsFilter none;
  plain.FillFilter(&none);
  EXPECT_TRUE(none.empty());
}

TEST(Sampler, TopLogitsOfARowWithFewLiveValuesHoldThemAll) {
  std::vector<float> logits(500, -kInf);
  logits[3] = 1.0f;
  logits[400] = 2.0f;
  std::vector<TopLogit> top;
  SelectTopLogits(logits, &top);
  EXPECT_EQ(top[0].id, 400);
  EXPECT_EQ(top[1].id, 3);
  EXPECT_TRUE(TopIsComplete(top, 5, 1.0f));
  SamplingParams p;
  p.top_k = 5;
  Sampler s(p);
  for (int i = 0; i < 20; ++i) {
    auto t = s.SampleFromTop(top);
    ASSERT_TRUE(t.ok());
    EXPECT_TRUE(*t == 3 || *t == 400);
  }
}

}  // namespace
}  // namespace fgnet
