// CUDA devices and device memory: what the CUDA backend's kernels run on.
//
// ListCudaDevices() reports the GPUs the CUDA runtime sees (none, without a driver or a GPU: not
// an error). DeviceBuffer<T> owns device memory (cudaMalloc; never managed memory) and copies to
// and from the host; every failure is a Status naming the call and the CUDA error.
// Thread-safety: ListCudaDevices is reentrant; a DeviceBuffer is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "util/status.h"

namespace fgnet::cuda {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  std::uint64_t memory_bytes = 0;
  int multiprocessors = 0;
};

Result<std::vector<CudaDeviceInfo>> ListCudaDevices();

// The error of a failed CUDA runtime call, or of the last kernel launch: "WHAT: CUDA error N
// (name): description".
Status CudaCheck(int error, const char* what);
Status CudaLastError(const char* what);

// Untyped device memory.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  ~DeviceMemory();
  DeviceMemory(DeviceMemory&& other) noexcept;
  DeviceMemory& operator=(DeviceMemory&& other) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;

  static Result<DeviceMemory> Allocate(std::size_t bytes);
  Status CopyFromHost(const void* src, std::size_t bytes, std::size_t offset = 0);
  Status CopyToHost(void* dst, std::size_t bytes, std::size_t offset = 0) const;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// Device memory holding `size()` elements of T.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Result<DeviceBuffer> Allocate(std::size_t count) {
    FGNET_ASSIGN_OR_RETURN(DeviceMemory memory, DeviceMemory::Allocate(count * sizeof(T)));
    DeviceBuffer b;
    b.memory_ = std::move(memory);
    b.count_ = count;
    return b;
  }
  static Result<DeviceBuffer> FromHost(std::span<const T> values) {
    FGNET_ASSIGN_OR_RETURN(DeviceBuffer b, Allocate(values.size()));
    FGNET_TRY(b.memory_.CopyFromHost(values.data(), values.size_bytes()));
    return b;
  }
  Result<std::vector<T>> ToHost() const {
    std::vector<T> out(count_);
    FGNET_TRY(memory_.CopyToHost(out.data(), count_ * sizeof(T)));
    return out;
  }
  T* data() const { return static_cast<T*>(memory_.data()); }
  std::size_t size() const { return count_; }

 private:
  DeviceMemory memory_;
  std::size_t count_ = 0;
};

}  // namespace fgnet::cuda
