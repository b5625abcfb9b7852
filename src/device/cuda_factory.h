// The CUDA half of CreateModel (device/create_model.h): create_cuda.cpp in builds with the CUDA
// backend, create_no_cuda.cpp (errors and empty lists) in builds without. Internal to the layer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/weights.h"
#include "util/status.h"

namespace fgnet {

Result<std::unique_ptr<Model>> CreateCudaModel(const Gemma3Config& config,
                                               const Gemma3Weights& weights, int index);
std::vector<std::string> DescribeCudaDevices();

}  // namespace fgnet
