// The report of a benchmark run: where it ran (machine, build, commit, date), its settings and its
// measurements. Written as a markdown table for people and as JSON for tools.
//
// JSON schema "fgnet-bench/1":
//   {"schema": "fgnet-bench/1", "timestamp": "2025-01-31T12:00:00Z",
//    "fgnet": {"version", "commit", "commit_source", "ref", "build_type", "compiler",
//    "sanitizers"}, "machine": {"cpu", "logical_cores", "available_cores", "simd_features": [...],
//                "simd_dispatch", "memory_bytes", "os"},
//    "settings": {...free-form object of the run's options...},
//    "results": [{"name", "value", "unit", "notes"}, ...]}
// Thread-safety: plain functions and values.
#pragma once

#include <string>
#include <vector>

#include "apps/fgnet/build_info.h"
#include "apps/fgnet/git_info.h"
#include "apps/fgnet/machine_info.h"
#include "apps/fgnet/mem_bandwidth.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet::cli {

inline constexpr const char* kBenchSchema = "fgnet-bench/1";

struct Measurement {
  std::string name;  // e.g. "memory read bandwidth"
  double value = 0;
  std::string unit;   // e.g. "GB/s", "tokens/s", "ms"
  std::string notes;  // conditions, e.g. "best of 5, 1024 MiB buffer, 2 threads"
};

struct BenchReport {
  std::string timestamp;  // UTC, ISO 8601
  BuildInfo build;
  GitInfo git;
  MachineInfo machine;
  Json settings = Json::object();
  std::vector<Measurement> results;
};

// A report with timestamp, build, commit and machine filled in for the running process.
BenchReport StartBenchReport();

// The read and copy figures of a bandwidth measurement as report rows.
std::vector<Measurement> BandwidthMeasurements(const BandwidthResult& bandwidth);

Json BenchReportToJson(const BenchReport& report);

// A "Field | Value" table of the context followed by a "Measurement | Value | Unit | Notes" table.
std::string BenchReportToMarkdown(const BenchReport& report);
// The context table alone (for benchmarks that print their own table of results).
std::string BenchContextToMarkdown(const BenchReport& report);

// Writes the JSON (indented, trailing newline) to `path`; errors name the path.
Status WriteBenchReportJson(const BenchReport& report, const std::string& path);
Status WriteJsonFile(const Json& json, const std::string& path);

// The current time as "YYYY-MM-DDTHH:MM:SSZ".
std::string UtcTimestamp();

}  // namespace fgnet::cli
