// The weights of a Gemma 3 model on the GPU: every matrix, norm factor and RoPE table of a
// checkpoint packed into one host buffer and uploaded at once.
//
// Float matrices are held as BF16 (F32 and F16 rounded to nearest even); block-quantized ones
// (Q8_0, Q4_0, Q4_K, Q6_K) are repacked losslessly into the layouts of
// backend/cuda/quant_matmul.h. Norm weights become the f32 factors the forward multiplies by
// (GemmaNormFactor), and the RoPE inverse frequencies of sliding and global layers are f32 tables.
// Thread-safety: UploadWeights uses the calling thread's current CUDA device; the result is
// immutable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/device.h"
#include "backend/cuda/quant_matmul.h"
#include "model/config.h"
#include "model/weights.h"
#include "util/status.h"

namespace fgnet {

// A weight matrix [out, in] on the GPU: BF16, or block-quantized and repacked
// (backend/cuda/quant_matmul.h).
struct DeviceMatrix {
  const std::uint16_t* bf16 = nullptr;
  cuda::QuantMatrix quant;  // quant.values is null for a BF16 matrix
  bool quantized() const { return quant.values != nullptr; }
};

struct LayerWeights {
  DeviceMatrix q, k, v, o, gate, up, down;
  const float *input_norm, *post_attention_norm, *pre_feedforward_norm, *post_feedforward_norm;
  const float *q_norm, *k_norm;
  bool sliding = false;
};

struct DeviceWeights {
  cuda::DeviceMemory weight_memory;  // every weight, norm factor and RoPE table
  DeviceMatrix embed, lm_head;
  const float* final_norm = nullptr;
  const float* inv_freq[2] = {nullptr, nullptr};  // sliding, global
  std::vector<LayerWeights> layers;
};

// Packs and uploads `weights` to the current CUDA device; `device_name` names it in errors.
// Errors: a matrix of a type the GPU does not read, a norm weight GemmaNormFactor refuses, a
// quantized matrix whose rows are not whole blocks, out of device memory.
Result<DeviceWeights> UploadWeights(const Gemma3Config& config, const Gemma3Weights& weights,
                                    const std::string& device_name);

}  // namespace fgnet
