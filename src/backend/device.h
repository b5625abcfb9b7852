// Compute devices and memory on them: what lets one model interface (model/model.h) run on the
// CPU or on a GPU.
//
// A Device names where work runs ("cpu", "cuda", "cuda:1"; "cuda" is "cuda:0"). A Memory is a
// block of bytes on one device, addressed in that device's address space: the KV block pool
// (kv/block_pool.h) keeps its blocks in a Memory that the model allocates, so the same pool and
// block tables serve every backend.
// Thread-safety: Device is a value; a Memory is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "util/status.h"

namespace fgnet {

struct Device {
  enum class Kind : std::uint8_t { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;  // the GPU's ordinal (0 for the CPU)

  static Device Cpu() { return {}; }
  static Device Cuda(int index = 0) { return {Kind::kCuda, index}; }
  bool is_cpu() const { return kind == Kind::kCpu; }
  bool is_cuda() const { return kind == Kind::kCuda; }
  std::string ToString() const;  // "cpu", "cuda:0"
  bool operator==(const Device&) const = default;
};

// Parses "cpu", "cuda" or "cuda:N". Error: anything else, naming the value.
Result<Device> ParseDevice(std::string_view text);

class Memory {
 public:
  virtual ~Memory() = default;
  // The first byte, in the device's address space (64-byte aligned at least).
  virtual void* data() const = 0;
  virtual std::size_t bytes() const = 0;
  virtual Device device() const = 0;
  // Copies `bytes` from offset `from` to offset `to` (the ranges must not overlap), ordered
  // before any later work of the device's owner on this memory.
  virtual void Copy(std::size_t to, std::size_t from, std::size_t bytes) = 0;
};

// Host memory, left uninitialised: pages are committed as they are first written, so a large
// KV pool costs nothing until blocks are used.
std::unique_ptr<Memory> AllocateHostMemory(std::size_t bytes);

}  // namespace fgnet
