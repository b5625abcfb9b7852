// The CUDA half of CreateModel, in builds with the CUDA backend.
#include <cstdio>

#include "backend/cuda/device.h"
#include "device/create_model.h"
#include "device/cuda_factory.h"
#include "device/cuda_model.h"

namespace fgnet {

Result<std::unique_ptr<Model>> CreateCudaModel(const Gemma3Config& config,
                                               const Gemma3Weights& weights, int index) {
  FGNET_ASSIGN_OR_RETURN(std::unique_ptr<CudaModel> model,
                         CudaModel::Create(config, weights, index));
  return std::unique_ptr<Model>(std::move(model));
}

std::vector<std::string> DescribeCudaDevices() {
  std::vector<std::string> out;
  auto devices = cuda::ListCudaDevices();
  if (!devices.ok()) return out;
  for (const cuda::CudaDeviceInfo& d : *devices) {
    char line[256];
    std::snprintf(line, sizeof(line), "cuda:%d  %s, %.1f GiB, sm_%d%d", d.index, d.name.c_str(),
                  static_cast<double>(d.memory_bytes) / (1 << 30), d.compute_major,
                  d.compute_minor);
    out.emplace_back(line);
  }
  return out;
}

bool CudaBackendBuilt() { return true; }

}  // namespace fgnet
