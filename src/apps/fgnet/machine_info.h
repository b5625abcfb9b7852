// A description of the machine a benchmark runs on: CPU model, cores, SIMD features, memory, OS.
// Read from /proc and uname on Linux; fields that cannot be read are "unknown" / 0.
// Thread-safety: plain functions and values.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fgnet::cli {

struct MachineInfo {
  std::string cpu_model = "unknown";
  int logical_cores = 0;    // online logical CPUs
  int available_cores = 0;  // CPUs this process may run on (its affinity mask)
  // Notable SIMD features reported by the CPU, e.g. {"avx2", "avx512f", "avx512_bf16"}.
  std::vector<std::string> simd_features;
  // The best Highway target compiled in and supported by this CPU, e.g. "AVX3".
  std::string simd_dispatch = "unknown";
  std::uint64_t memory_bytes = 0;  // total physical memory
  std::string os = "unknown";      // "Linux 6.1.0 x86_64 (Debian GNU/Linux 12 (bookworm))"
};

// Describes the running machine.
MachineInfo DescribeMachine();

// The parts of /proc/cpuinfo the description uses (first processor entry).
struct CpuInfo {
  std::string model;               // "model name" (x86) or a fallback; empty when absent
  std::vector<std::string> flags;  // "flags" (x86) or "Features" (Arm)
};
CpuInfo ParseCpuInfo(std::string_view text);

// The notable SIMD features among `flags`, in a fixed order (SSE4.2 ... AVX-512, AMX, Arm SIMD).
std::vector<std::string> SelectSimdFeatures(std::span<const std::string> flags);

// MemTotal of /proc/meminfo in bytes; nullopt when absent or malformed.
std::optional<std::uint64_t> ParseMemTotal(std::string_view meminfo);

// PRETTY_NAME of /etc/os-release without quotes; empty when absent.
std::string ParseOsPrettyName(std::string_view os_release);

}  // namespace fgnet::cli
