#include "network/combine.h"

#include <gtest/gtest.h>

namespace fgnet::network {
namespace {

Candidate Make(std::string node, std::string text, double weight = 1.0, double score = 1.0) {
  Candidate c;
  c.node_id = std::move(node);
  c.output = ExtractStructured(text);
  c.weight = weight;
  c.validation.score = score;
  c.validation.ok = score == 1.0;
  return c;
}

CombinerSpec Spec(CombinerSpec::Kind kind) {
  CombinerSpec spec;
  spec.kind = kind;
  return spec;
}

TEST(CombineTest, MajorityAndWeightedPickDifferentWinners) {
  // Two light nodes agree (key order differs, same JSON); one heavy node disagrees.
  std::vector<Candidate> c = {Make("a", R"({"x": 1, "y": 2})", 0.2),
                              Make("b", R"({"y": 2, "x": 1})", 0.3), Make("c", R"({"x": 3})", 0.9)};
  auto majority = CombineOutputs(Spec(CombinerSpec::Kind::kMajority), c);
  ASSERT_TRUE(majority.ok());
  EXPECT_EQ(majority->method, "winner");
  // Within the winning output's group: score, then weight (b's 0.3 beats a's 0.2).
  EXPECT_EQ(majority->winner, "b");
  EXPECT_EQ(majority->text, R"({"y": 2, "x": 1})");
  ASSERT_EQ(majority->votes.size(), 2u);
  EXPECT_EQ(majority->votes[0]["nodes"], Json::array({"a", "b"}));
  EXPECT_EQ(majority->votes[0]["count"], 2);
  EXPECT_NEAR(majority->votes[0]["weight"].get<double>(), 0.5, 1e-12);
  EXPECT_EQ(majority->reason, "majority: 2 of 3 votes for the output of a, b");

  auto weighted = CombineOutputs(Spec(CombinerSpec::Kind::kWeighted), c);
  ASSERT_TRUE(weighted.ok());
  EXPECT_EQ(weighted->winner, "c");
  EXPECT_EQ(weighted->votes[0]["nodes"], Json::array({"c"}));

  // The spec's weights override the candidates' own.
  CombinerSpec spec = Spec(CombinerSpec::Kind::kWeighted);
  spec.weights = {{"c", 0.1}};
  EXPECT_EQ(CombineOutputs(spec, c)->winner, "b");
}

TEST(CombineTest, MajorityTieBreaksByScoreThenWeightThenOrder) {
  std::vector<Candidate> c = {Make("a", "alpha", 1.0, 0.5), Make("b", "beta", 1.0, 1.0)};
  auto d = CombineOutputs(Spec(CombinerSpec::Kind::kMajority), c);
  EXPECT_EQ(d->winner, "b");
  EXPECT_NE(d->reason.find("tie broken"), std::string::npos);
  c = {Make("a", "alpha", 1.0), Make("b", "beta", 2.0)};
  EXPECT_EQ(CombineOutputs(Spec(CombinerSpec::Kind::kMajority), c)->winner, "b");
  c = {Make("a", "alpha"), Make("b", "beta")};
  EXPECT_EQ(CombineOutputs(Spec(CombinerSpec::Kind::kMajority), c)->winner, "a");
  // Whitespace differences in text vote together.
  c = {Make("a", "one"), Make("b", "two  words"), Make("c", " two\nwords ")};
  EXPECT_EQ(CombineOutputs(Spec(CombinerSpec::Kind::kMajority), c)->winner, "b");
}

TEST(CombineTest, BestByScoreThenWeightThenOrder) {
  std::vector<Candidate> c = {Make("a", "x", 5.0, 0.5), Make("b", "y", 1.0, 0.75),
                              Make("c", "z", 2.0, 0.75)};
  auto d = CombineOutputs(Spec(CombinerSpec::Kind::kBest), c);
  EXPECT_EQ(d->winner, "c");
  EXPECT_EQ(d->text, "z");
  EXPECT_EQ(d->reason, "best: c has the best validation score 0.75 (weight 2)");
}

const char* kFilesA =
    R"({"files": [{"path": "src/x.ts", "code": "export const x = 1;", "exports": ["x"]},
                  {"path": "src/y.ts", "code": "export const y = 1;", "exports": ["y"]}]})";
const char* kFilesB =
    R"({"files": [{"path": "src/y.ts", "code": "export const y = 2;", "exports": ["y"]},
                  {"path": "src/x.ts", "code": "export const x = 2;", "exports": ["x"]}]})";

TEST(CombineTest, ConcatMergesMatchingFileLists) {
  std::vector<Candidate> c = {Make("a", kFilesA), Make("b", kFilesB), Make("c", kFilesA)};
  std::string why;
  EXPECT_TRUE(CanMerge(c, &why));
  auto d = CombineOutputs(Spec(CombinerSpec::Kind::kConcat), c);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->method, "merged");
  EXPECT_EQ(d->text,
            "// file: src/x.ts\nexport const x = 1;\n\nexport const x = 2;\n\n"
            "// file: src/y.ts\nexport const y = 1;\n\nexport const y = 2;");
  // Texts are joined by blank lines.
  std::vector<Candidate> t = {Make("a", "first"), Make("b", "second")};
  EXPECT_EQ(CombineOutputs(Spec(CombinerSpec::Kind::kConcat), t)->text, "first\n\nsecond");
}

TEST(CombineTest, MismatchedFilesGiveOneWinner) {
  const char* fewer =
      R"({"files": [{"path": "src/y.ts", "code": "export const y = 3;", "exports": ["y"]}]})";
  std::vector<Candidate> c = {Make("a", kFilesA, 1.0, 0.5), Make("b", fewer, 1.0, 1.0)};
  std::string why;
  EXPECT_FALSE(CanMerge(c, &why));
  EXPECT_EQ(why, "file lists differ: a has src/x.ts, b does not");
  auto d = CombineOutputs(Spec(CombinerSpec::Kind::kConcat), c);
  EXPECT_EQ(d->method, "winner");
  EXPECT_EQ(d->winner, "b");
  EXPECT_EQ(d->reason.rfind("file lists differ: a has src/x.ts, b does not", 0), 0u);

  const char* other_exports =
      R"({"files": [{"path": "src/x.ts", "code": "export const z = 1;", "exports": ["z"]},
                    {"path": "src/y.ts", "code": "export const y = 1;", "exports": ["y"]}]})";
  c = {Make("a", kFilesA), Make("b", other_exports)};
  EXPECT_FALSE(CanMerge(c, &why));
  EXPECT_EQ(why, "exports differ in src/x.ts: a exports x, b does not");
  auto llm = CombineOutputs(Spec(CombinerSpec::Kind::kLlmMerge), c);
  EXPECT_FALSE(llm->needs_llm_merge);
  EXPECT_EQ(llm->winner, "a");

  c = {Make("a", kFilesA), Make("b", "just text")};
  EXPECT_FALSE(CanMerge(c, &why));
  EXPECT_EQ(why, "file lists differ: a carries files, b carries none");
}

TEST(CombineTest, LlmMergePreparesAMerge) {
  std::vector<Candidate> c = {Make("a", kFilesA), Make("b", kFilesB)};
  auto d = CombineOutputs(Spec(CombinerSpec::Kind::kLlmMerge), c);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->needs_llm_merge);
  EXPECT_EQ(d->method, "merged");
  EXPECT_TRUE(d->text.empty());
  std::string prompt = LlmMergePrompt("Write x and y.", c);
  EXPECT_EQ(prompt, LlmMergePrompt("Write x and y.", c));
  EXPECT_NE(prompt.find("Task:\nWrite x and y.\n"), std::string::npos);
  EXPECT_NE(prompt.find("Candidate 1 (a):\n// file: src/x.ts\n// exports: x\nexport const x = 1;"),
            std::string::npos);
  EXPECT_NE(prompt.find("Candidate 2 (b):\n// file: src/y.ts"), std::string::npos);
}

TEST(CombineTest, ErrorsAndDeterminism) {
  EXPECT_FALSE(CombineOutputs(Spec(CombinerSpec::Kind::kMajority), {}).ok());
  EXPECT_FALSE(CombineOutputs(Spec(CombinerSpec::Kind::kEnsemble), {Make("a", "x")}).ok());
  auto single = CombineOutputs(Spec(CombinerSpec::Kind::kNone), {Make("a", "x")});
  EXPECT_EQ(single->winner, "a");
  std::vector<Candidate> c = {Make("a", "p", 0.4, 0.5), Make("b", "q", 0.4, 0.5),
                              Make("c", "p", 0.7, 1.0), Make("d", "q", 0.7, 1.0)};
  for (auto kind : {CombinerSpec::Kind::kMajority, CombinerSpec::Kind::kWeighted,
                    CombinerSpec::Kind::kBest, CombinerSpec::Kind::kConcat}) {
    auto first = CombineOutputs(Spec(kind), c);
    auto second = CombineOutputs(Spec(kind), c);
    EXPECT_EQ(first->winner, second->winner);
    EXPECT_EQ(first->text, second->text);
    EXPECT_EQ(first->reason, second->reason);
    EXPECT_EQ(first->votes, second->votes);
  }
  // A full tie (same count, score and weight) goes to the earlier node's output.
  EXPECT_EQ(CombineOutputs(Spec(CombinerSpec::Kind::kMajority), c)->winner, "c");
}

}  // namespace
}  // namespace fgnet::network
