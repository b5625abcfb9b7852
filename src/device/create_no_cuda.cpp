// The CUDA half of CreateModel, in builds without the CUDA backend.
#include "device/create_model.h"
#include "device/cuda_factory.h"

namespace fgnet {

Result<std::unique_ptr<Model>> CreateCudaModel(const Gemma3Config& /*config*/,
                                               const Gemma3Weights& /*weights*/, int index) {
  return MakeError("device cuda:", index,
                   ": this fgnet was built without CUDA (no nvcc was found at build time)");
}

std::vector<std::string> DescribeCudaDevices() { return {}; }

bool CudaBackendBuilt() { return false; }

}  // namespace fgnet
