#include "apps/fgnet/machine_info.h"

#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>

#include "hwy/targets.h"
#include "util/mapped_file.h"

namespace fgnet::cli {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// Calls fn(key, value) for every "key : value" line of `text` until fn returns false.
template <class Fn>
void ForEachKeyValue(std::string_view text, char separator, Fn fn) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    const std::size_t sep = line.find(separator);
    if (sep == std::string_view::npos) {
      if (!fn(Trim(line), std::string_view())) return;
      continue;
    }
    if (!fn(Trim(line.substr(0, sep)), Trim(line.substr(sep + 1)))) return;
  }
}

std::vector<std::string> SplitWords(std::string_view s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    while (pos < s.size() && s[pos] == ' ') ++pos;
    std::size_t end = s.find(' ', pos);
    if (end == std::string_view::npos) end = s.size();
    if (end > pos) out.emplace_back(s.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

std::string ReadOr(const std::string& path) {
  auto text = ReadFileToString(path);
  return text.ok() ? std::move(text).value() : std::string();
}

std::string HighwayDispatchTarget() {
  const std::int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  if (targets == 0) return "unknown";
  // Lower bits are the better targets.
  return hwy::TargetName(targets & -targets);
}

}  // namespace

CpuInfo ParseCpuInfo(std::string_view text) {
  // Every processor repeats the same model and flags; the first occurrence of each is kept.
  CpuInfo info;
  std::string fallback_model;
  ForEachKeyValue(text, ':', [&](std::string_view key, std::string_view value) {
    if (key == "model name" && info.model.empty()) {
      info.model = value;
    } else if ((key == "flags" || key == "Features") && info.flags.empty()) {
      info.flags = SplitWords(value);
    } else if ((key == "Hardware" || key == "cpu model") && fallback_model.empty()) {
      fallback_model = value;
    }
    return true;
  });
  if (info.model.empty()) info.model = fallback_model;
  return info;
}

std::vector<std::string> SelectSimdFeatures(std::span<const std::string> flags) {
  static constexpr std::string_view kNotable[] = {
      "sse4_2",      "avx",        "avx2",     "fma",      "f16c",        "avx_vnni",
      "avx512f",     "avx512dq",   "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
      "avx512_fp16", "avx512vbmi", "amx_tile", "amx_bf16", "amx_int8",    "asimd",
      "asimdhp",     "asimddp",    "bf16",     "i8mm",     "sve",         "sve2"};
  std::vector<std::string> out;
  for (const std::string_view feature : kNotable) {
    if (std::find(flags.begin(), flags.end(), feature) != flags.end()) {
      out.emplace_back(feature);
    }
  }
  return out;
}

std::optional<std::uint64_t> ParseMemTotal(std::string_view meminfo) {
  std::optional<std::uint64_t> bytes;
  ForEachKeyValue(meminfo, ':', [&](std::string_view key, std::string_view value) {
    if (key != "MemTotal") return true;
    std::uint64_t kib = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), kib);
    const std::string_view unit = Trim(value.substr(end - value.data()));
    if (ec == std::errc() && (unit == "kB" || unit.empty())) bytes = kib * 1024;
    return false;
  });
  return bytes;
}

std::string ParseOsPrettyName(std::string_view os_release) {
  std::string name;
  ForEachKeyValue(os_release, '=', [&](std::string_view key, std::string_view value) {
    if (key != "PRETTY_NAME") return true;
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    name = value;
    return false;
  });
  return name;
}

MachineInfo DescribeMachine() {
  MachineInfo m;
  const CpuInfo cpu = ParseCpuInfo(ReadOr("/proc/cpuinfo"));
  if (!cpu.model.empty()) m.cpu_model = cpu.model;
  m.simd_features = SelectSimdFeatures(cpu.flags);
  m.simd_dispatch = HighwayDispatchTarget();

  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  m.logical_cores = online > 0 ? static_cast<int>(online) : 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  m.available_cores =
      sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : m.logical_cores;

  if (auto bytes = ParseMemTotal(ReadOr("/proc/meminfo"))) m.memory_bytes = *bytes;

  struct utsname u;
  if (uname(&u) == 0) {
    m.os = std::string(u.sysname) + " " + u.release + " " + u.machine;
    const std::string pretty = ParseOsPrettyName(ReadOr("/etc/os-release"));
    if (!pretty.empty()) m.os += " (" + pretty + ")";
  }
  return m;
}

}  // namespace fgnet::cli
