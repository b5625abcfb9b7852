#include "backend/cuda/device.h"

#include <cuda_runtime.h>

#include <utility>

namespace fgnet::cuda {

Status CudaCheck(int error, const char* what) {
  if (error == cudaSuccess) return Ok();
  const auto e = static_cast<cudaError_t>(error);
  return MakeError(what, ": CUDA error ", error, " (", cudaGetErrorName(e),
                   "): ", cudaGetErrorString(e));
}

Status CudaLastError(const char* what) { return CudaCheck(cudaGetLastError(), what); }

Result<std::vector<CudaDeviceInfo>> ListCudaDevices() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  std::vector<CudaDeviceInfo> devices;
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
    cudaGetLastError();  // clear the sticky error state of the query
    return devices;
  }
  FGNET_TRY(CudaCheck(e, "cudaGetDeviceCount"));
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    FGNET_TRY(CudaCheck(cudaGetDeviceProperties(&p, i), "cudaGetDeviceProperties"));
    devices.push_back({.index = i,
                       .name = p.name,
                       .compute_major = p.major,
                       .compute_minor = p.minor,
                       .memory_bytes = p.totalGlobalMem,
                       .multiprocessors = p.multiProcessorCount});
  }
  return devices;
}

DeviceMemory::~DeviceMemory() {
  if (data_ != nullptr) cudaFree(data_);
}

DeviceMemory::DeviceMemory(DeviceMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

Result<DeviceMemory> DeviceMemory::Allocate(std::size_t bytes) {
  DeviceMemory m;
  if (bytes == 0) return m;
  FGNET_TRY(CudaCheck(cudaMalloc(&m.data_, bytes), "cudaMalloc"));
  m.bytes_ = bytes;
  return m;
}

Status DeviceMemory::CopyFromHost(const void* src, std::size_t bytes, std::size_t offset) {
  if (offset + bytes > bytes_) {
    return MakeError("DeviceMemory::CopyFromHost: ", bytes, " bytes at offset ", offset,
                     " exceed the buffer's ", bytes_);
  }
  if (bytes == 0) return Ok();
  return CudaCheck(
      cudaMemcpy(static_cast<char*>(data_) + offset, src, bytes, cudaMemcpyHostToDevice),
      "cudaMemcpy (host to device)");
}

Status DeviceMemory::CopyToHost(void* dst, std::size_t bytes, std::size_t offset) const {
  if (offset + bytes > bytes_) {
    return MakeError("DeviceMemory::CopyToHost: ", bytes, " bytes at offset ", offset,
                     " exceed the buffer's ", bytes_);
  }
  if (bytes == 0) return Ok();
  return CudaCheck(
      cudaMemcpy(dst, static_cast<const char*>(data_) + offset, bytes, cudaMemcpyDeviceToHost),
      "cudaMemcpy (device to host)");
}

}  // namespace fgnet::cuda
