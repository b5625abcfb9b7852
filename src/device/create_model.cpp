#include "device/create_model.h"

#include "device/cuda_factory.h"
#include "model/gemma3_model.h"

namespace fgnet {

Result<std::unique_ptr<Model>> CreateModel(const Gemma3Config& config, const Gemma3Weights& weights,
                                           Device device) {
  if (device.is_cuda()) return CreateCudaModel(config, weights, device.index);
  FGNET_ASSIGN_OR_RETURN(Gemma3Model model, Gemma3Model::Create(config, weights));
  return std::unique_ptr<Model>(std::make_unique<Gemma3Model>(std::move(model)));
}

std::vector<std::string> DescribeDevices() {
  std::vector<std::string> out = {"cpu"};
  for (std::string& line : DescribeCudaDevices()) out.push_back(std::move(line));
  return out;
}

}  // namespace fgnet
