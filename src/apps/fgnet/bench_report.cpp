#include "apps/fgnet/bench_report.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

namespace fgnet::cli {
namespace {

// Escapes the characters that would break a markdown table cell.
std::string Cell(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (!std::isfinite(v)) return "n/a";
  char buffer[64];
  const double magnitude = std::fabs(v);
  const int decimals = magnitude >= 100 ? 1 : (magnitude >= 1 || magnitude == 0 ? 2 : 4);
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, v);
  return buffer;
}

std::string FormatGiB(std::uint64_t bytes) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.1f GiB", static_cast<double>(bytes) / (1u << 30));
  return buffer;
}

std::string Join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += separator;
    out += items[i];
  }
  return out;
}

std::string SettingsText(const Json& settings) {
  std::string out;
  if (!settings.is_object()) return settings.dump();
  for (auto it = settings.begin(); it != settings.end(); ++it) {
    if (!out.empty()) out += ", ";
    out += it.key() + "=" + (it->is_string() ? it->get<std::string>() : it->dump());
  }
  return out;
}

}  // namespace

std::string UtcTimestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

BenchReport StartBenchReport() {
  BenchReport report;
  report.timestamp = UtcTimestamp();
  report.build = GetBuildInfo();
  report.git = DescribeGitCommit(report.build.source_dir, report.build.build_commit);
  report.machine = DescribeMachine();
  return report;
}

std::vector<Measurement> BandwidthMeasurements(const BandwidthResult& bw) {
  std::ostringstream notes;
  notes << "best of " << bw.runs << ", " << (bw.buffer_bytes >> 20) << " MiB buffer, " << bw.threads
        << (bw.threads == 1 ? " thread" : " threads");
  return {
      Measurement{"memory read bandwidth", bw.read_gb_per_s, "GB/s", notes.str()},
      Measurement{"memory copy bandwidth", bw.copy_gb_per_s, "GB/s",
                  notes.str() + ", read + written bytes"},
  };
}

Json BenchReportToJson(const BenchReport& r) {
  Json fgnet = {
      {"version", r.build.version},       {"commit", r.git.commit},
      {"commit_source", r.git.source},    {"ref", r.git.ref},
      {"build_type", r.build.build_type}, {"compiler", r.build.compiler},
      {"sanitizers", r.build.sanitizers},
  };
  Json machine = {
      {"cpu", r.machine.cpu_model},
      {"logical_cores", r.machine.logical_cores},
      {"available_cores", r.machine.available_cores},
      {"simd_features", r.machine.simd_features},
      {"simd_dispatch", r.machine.simd_dispatch},
      {"memory_bytes", r.machine.memory_bytes},
      {"os", r.machine.os},
  };
  Json results = Json::array();
  for (const Measurement& m : r.results) {
    // JSON has no NaN or infinity: a missing figure is null.
    Json value = std::isfinite(m.value) ? Json(m.value) : Json(nullptr);
    results.push_back({{"name", m.name}, {"value", value}, {"unit", m.unit}, {"notes", m.notes}});
  }
  return Json{{"schema", kBenchSchema},    {"timestamp", r.timestamp},
              {"fgnet", std::move(fgnet)}, {"machine", std::move(machine)},
              {"settings", r.settings},    {"results", std::move(results)}};
}

std::string BenchContextToMarkdown(const BenchReport& r) {
  std::string commit = r.git.ShortCommit();
  if (!r.git.Branch().empty()) commit += " (" + r.git.Branch() + ")";
  if (r.git.source == "build") commit += " (recorded at build time)";
  std::string build = r.build.build_type + ", " + r.build.compiler + ", fgnet " + r.build.version;
  if (r.build.sanitizers) build += ", ASan+UBSan (figures not representative)";
  std::string simd =
      r.machine.simd_features.empty() ? "none reported" : Join(r.machine.simd_features, " ");
  simd += " (dispatch: " + r.machine.simd_dispatch + ")";
  const std::string cores = std::to_string(r.machine.logical_cores) + " logical (" +
                            std::to_string(r.machine.available_cores) + " available)";

  std::ostringstream os;
  os << "| Field | Value |\n|---|---|\n";
  const auto row = [&](const char* field, const std::string& value) {
    os << "| " << field << " | " << Cell(value) << " |\n";
  };
  row("Commit", commit);
  row("Build", build);
  row("CPU", r.machine.cpu_model);
  row("Cores", cores);
  row("SIMD", simd);
  row("Memory", r.machine.memory_bytes ? FormatGiB(r.machine.memory_bytes) : "unknown");
  row("OS", r.machine.os);
  row("Date", r.timestamp);
  if (r.settings.is_object() && !r.settings.empty()) row("Settings", SettingsText(r.settings));
  return os.str();
}

std::string BenchReportToMarkdown(const BenchReport& r) {
  std::ostringstream os;
  os << BenchContextToMarkdown(r);
  os << "\n| Measurement | Value | Unit | Notes |\n|---|---:|---|---|\n";
  for (const Measurement& m : r.results) {
    os << "| " << Cell(m.name) << " | " << FormatValue(m.value) << " | " << Cell(m.unit) << " | "
       << Cell(m.notes) << " |\n";
  }
  return os.str();
}

Status WriteBenchReportJson(const BenchReport& report, const std::string& path) {
  return WriteJsonFile(BenchReportToJson(report), path);
}

Status WriteJsonFile(const Json& json, const std::string& path) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return MakeError(path, ": cannot open for writing: ", std::strerror(errno));
  file << json.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  file.close();
  if (!file) return MakeError(path, ": write failed");
  return Ok();
}

}  // namespace fgnet::cli
