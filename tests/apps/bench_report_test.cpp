// Benchmark report (JSON structure, markdown) and the memory bandwidth measurement.
#include "apps/fgnet/bench_report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "apps/fgnet/mem_bandwidth.h"
#include "test_files.h"
#include "util/rng.h"

namespace fgnet::cli {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

// True when `text` matches `pattern`, where 'd' stands for any digit.
bool MatchesPattern(const std::string& text, const std::string& pattern) {
  if (text.size() != pattern.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool ok = pattern[i] == 'd' ? (text[i] >= '0' && text[i] <= '9') : text[i] == pattern[i];
    if (!ok) return false;
  }
  return true;
}

BenchReport SampleReport() {
  BenchReport r;
  r.timestamp = "2025-01-31T12:00:00Z";
  r.build = BuildInfo{"0.1.0", "Release", "g++ 12.2.0", false, "/src", "unknown"};
  r.git.commit = "0123456789abcdef0123456789abcdef01234567";
  r.git.ref = "refs/heads/main";
  r.git.source = "checkout";
  r.machine.cpu_model = "Test CPU | with pipe";
  r.machine.logical_cores = 8;
  r.machine.available_cores = 4;
  r.machine.simd_features = {"avx2", "avx512f"};
  r.machine.simd_dispatch = "AVX3";
  r.machine.memory_bytes = std::uint64_t{16} << 30;
  r.machine.os = "Linux 6.1 x86_64";
  r.settings = {{"threads", 4}, {"repeat", 3}};
  r.results = {{"memory read bandwidth", 25.5, "GB/s", "best of 3"},
               {"decode", std::numeric_limits<double>::quiet_NaN(), "tokens/s", "not run"}};
  return r;
}

TEST(BenchReportTest, JsonStructure) {
  const Json j = BenchReportToJson(SampleReport());
  EXPECT_EQ(j["schema"], "fgnet-bench/1");
  EXPECT_EQ(j["timestamp"], "2025-01-31T12:00:00Z");

  const Json& fgnet = j["fgnet"];
  EXPECT_EQ(fgnet["version"], "0.1.0");
  EXPECT_EQ(fgnet["commit"], "0123456789abcdef0123456789abcdef01234567");
  EXPECT_EQ(fgnet["commit_source"], "checkout");
  EXPECT_EQ(fgnet["ref"], "refs/heads/main");
  EXPECT_EQ(fgnet["build_type"], "Release");
  EXPECT_EQ(fgnet["compiler"], "g++ 12.2.0");
  EXPECT_EQ(fgnet["sanitizers"], false);

  const Json& m = j["machine"];
  EXPECT_EQ(m["cpu"], "Test CPU | with pipe");
  EXPECT_EQ(m["logical_cores"], 8);
  EXPECT_EQ(m["available_cores"], 4);
  EXPECT_EQ(m["simd_features"], Json::array({"avx2", "avx512f"}));
  EXPECT_EQ(m["simd_dispatch"], "AVX3");
  EXPECT_EQ(m["memory_bytes"], std::uint64_t{16} << 30);
  EXPECT_EQ(m["os"], "Linux 6.1 x86_64");

  EXPECT_EQ(j["settings"]["threads"], 4);
  ASSERT_TRUE(j["results"].is_array());
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["name"], "memory read bandwidth");
  EXPECT_DOUBLE_EQ(j["results"][0]["value"].get<double>(), 25.5);
  EXPECT_EQ(j["results"][0]["unit"], "GB/s");
  EXPECT_EQ(j["results"][0]["notes"], "best of 3");
  EXPECT_TRUE(j["results"][1]["value"].is_null());  // NaN is not JSON

  // The text form parses back to the same value.
  auto round_trip = ParseJson(j.dump(), "report");
  ASSERT_TRUE(round_trip.ok());
  EXPECT_EQ(*round_trip, j);
}

TEST(BenchReportTest, Markdown) {
  const std::string md = BenchReportToMarkdown(SampleReport());
  EXPECT_TRUE(md.starts_with("| Field | Value |\n|---|---|\n")) << md;
  EXPECT_THAT(md, HasSubstr("| Commit | 0123456789ab (main) |\n"));
  EXPECT_THAT(md, HasSubstr("| Build | Release, g++ 12.2.0, fgnet 0.1.0 |\n"));
  EXPECT_THAT(md, HasSubstr("| CPU | Test CPU \\| with pipe |\n"));  // escaped
  EXPECT_THAT(md, HasSubstr("| Cores | 8 logical (4 available) |\n"));
  EXPECT_THAT(md, HasSubstr("| SIMD | avx2 avx512f (dispatch: AVX3) |\n"));
  EXPECT_THAT(md, HasSubstr("| Memory | 16.0 GiB |\n"));
  EXPECT_THAT(md, HasSubstr("| OS | Linux 6.1 x86_64 |\n"));
  EXPECT_THAT(md, HasSubstr("| Date | 2025-01-31T12:00:00Z |\n"));
  EXPECT_THAT(md, HasSubstr("| Settings | repeat=3, threads=4 |\n"));
  EXPECT_THAT(md, HasSubstr("| Measurement | Value | Unit | Notes |\n|---|---:|---|---|\n"));
  EXPECT_THAT(md, HasSubstr("| memory read bandwidth | 25.50 | GB/s | best of 3 |\n"));
  EXPECT_THAT(md, HasSubstr("| decode | n/a | tokens/s | not run |\n"));
  // Every table line has matching pipes: 3 for the context table, 5 for the results.
  std::istringstream lines(md);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    std::size_t pipes = 0;
    for (std::size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '|' && (i == 0 || line[i - 1] != '\\')) ++pipes;
    }
    EXPECT_TRUE(pipes == 3 || pipes == 5) << line;
  }
}

TEST(BenchReportTest, MarkdownFlagsSanitizerAndBuildCommit) {
  BenchReport r = SampleReport();
  r.build.sanitizers = true;
  r.git.source = "build";
  r.git.ref = "";
  const std::string md = BenchReportToMarkdown(r);
  EXPECT_THAT(md, HasSubstr("ASan+UBSan (figures not representative)"));
  EXPECT_THAT(md, HasSubstr("| Commit | 0123456789ab (recorded at build time) |"));
}

TEST(BenchReportTest, WritesJsonFile) {
  TempDir dir;
  const BenchReport r = SampleReport();
  ASSERT_TRUE(WriteBenchReportJson(r, dir.File("r.json")).ok());
  auto read = ReadJsonFile(dir.File("r.json"));
  ASSERT_TRUE(read.ok()) << read.error().message();
  EXPECT_EQ(*read, BenchReportToJson(r));
  EXPECT_EQ(testing::ReadFile(dir.File("r.json")).back(), '\n');

  const Status bad = WriteBenchReportJson(r, dir.File("missing/r.json"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message(), HasSubstr(dir.File("missing/r.json") + ": cannot open"));
}

TEST(BenchReportTest, StartBenchReportFillsContext) {
  const BenchReport r = StartBenchReport();
  EXPECT_TRUE(MatchesPattern(r.timestamp, "dddd-dd-ddTdd:dd:ddZ")) << r.timestamp;
  EXPECT_FALSE(r.build.version.empty());
  EXPECT_FALSE(r.build.compiler.empty());
  EXPECT_FALSE(r.git.commit.empty());
  EXPECT_GE(r.machine.logical_cores, 1);
#if defined(__SANITIZE_ADDRESS__)
  EXPECT_TRUE(r.build.sanitizers);
#endif
}

TEST(BenchReportTest, BandwidthMeasurementRows) {
  BandwidthResult bw;
  bw.read_gb_per_s = 20;
  bw.copy_gb_per_s = 15;
  bw.buffer_bytes = std::size_t{64} << 20;
  bw.threads = 1;
  bw.runs = 3;
  const auto rows = BandwidthMeasurements(bw);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].name, "memory read bandwidth");
  EXPECT_EQ(rows[0].value, 20);
  EXPECT_EQ(rows[0].unit, "GB/s");
  EXPECT_EQ(rows[0].notes, "best of 3, 64 MiB buffer, 1 thread");
  EXPECT_EQ(rows[1].name, "memory copy bandwidth");
  EXPECT_EQ(rows[1].value, 15);
  EXPECT_EQ(rows[1].notes, "best of 3, 64 MiB buffer, 1 thread, read + written bytes");
}

TEST(MemBandwidthTest, SumWordsMatchesScalarSum) {
  // Lengths around the vector and unroll widths, at unaligned starts.
  std::vector<std::uint64_t> data(300);
  Philox rng(1234, 0);
  for (auto& w : data) w = rng.NextU64();
  for (std::size_t offset : {0u, 1u, 3u}) {
    for (std::size_t n = 0; n + offset <= data.size(); n += 7) {
      const std::uint64_t expected =
          std::accumulate(data.begin() + offset, data.begin() + offset + n, std::uint64_t{0});
      EXPECT_EQ(SumWords(data.data() + offset, n), expected) << "offset " << offset << " n " << n;
    }
  }
}

TEST(MemBandwidthTest, MeasuresPositiveFiniteBandwidth) {
  ThreadPool pool(2);
  BandwidthOptions options;
  options.buffer_bytes = std::size_t{4} << 20;
  options.runs = 2;
  auto result = MeasureMemoryBandwidth(pool, options);
  ASSERT_TRUE(result.ok()) << result.error().message();
  EXPECT_TRUE(std::isfinite(result->read_gb_per_s));
  EXPECT_TRUE(std::isfinite(result->copy_gb_per_s));
  EXPECT_GT(result->read_gb_per_s, 0.0);
  EXPECT_GT(result->copy_gb_per_s, 0.0);
  EXPECT_EQ(result->buffer_bytes, options.buffer_bytes);
  EXPECT_EQ(result->threads, 2u);
  EXPECT_EQ(result->runs, 2);
  ASSERT_EQ(result->read_runs.size(), 2u);
  ASSERT_EQ(result->copy_runs.size(), 2u);
  EXPECT_EQ(result->read_gb_per_s, std::max(result->read_runs[0], result->read_runs[1]));
  EXPECT_EQ(result->copy_gb_per_s, std::max(result->copy_runs[0], result->copy_runs[1]));
}

TEST(MemBandwidthTest, OddBufferSizeAndSingleThread) {
  ThreadPool pool(1);
  BandwidthOptions options;
  options.buffer_bytes = (std::size_t{1} << 20) + 12345;  // rounded down to whole pages
  options.runs = 1;
  auto result = MeasureMemoryBandwidth(pool, options);
  ASSERT_TRUE(result.ok()) << result.error().message();
  EXPECT_EQ(result->buffer_bytes, (std::size_t{1} << 20) + 12288);
  EXPECT_GT(result->read_gb_per_s, 0.0);
}

TEST(MemBandwidthTest, RejectsBadOptions) {
  ThreadPool pool(1);
  BandwidthOptions small;
  small.buffer_bytes = 1000;
  auto too_small = MeasureMemoryBandwidth(pool, small);
  ASSERT_FALSE(too_small.ok());
  EXPECT_EQ(too_small.error().message(),
            "memory bandwidth: buffer of 1000 bytes is too small (at least 65536)");
  BandwidthOptions no_runs;
  no_runs.buffer_bytes = std::size_t{1} << 20;
  no_runs.runs = 0;
  auto zero = MeasureMemoryBandwidth(pool, no_runs);
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.error().message(), "memory bandwidth: runs must be at least 1");
}

}  // namespace
}  // namespace fgnet::cli
