// The forward pass of a checkpoint on a chosen device: the CPU (model/gemma3_model.h) or an
// NVIDIA GPU (device/cuda_model.h, built when the CUDA toolkit was found at build time).
// Thread-safety: reentrant.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/device.h"
#include "model/model.h"
#include "model/weights.h"
#include "util/status.h"

namespace fgnet {

// `config` and `weights` must outlive the model. Errors: a CUDA device in a build without CUDA,
// a GPU index the machine does not have, and the model's own errors.
Result<std::unique_ptr<Model>> CreateModel(const Gemma3Config& config, const Gemma3Weights& weights,
                                           Device device);

// True when this build includes the CUDA backend.
bool CudaBackendBuilt();

// "cpu" and one line per GPU ("cuda:0  NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90"), for --help and
// error messages; empty GPU list without CUDA.
std::vector<std::string> DescribeDevices();

}  // namespace fgnet
