// In-memory quantization of a checkpoint: the weights of a float (F32, BF16, F16) checkpoint
// converted to block-quantized types (backend/cpu/quant.h), held quantized and computed with
// directly by the kernels.
//
// Schemes and the type each tensor gets:
//   q8_0  every linear weight, the embedding and an untied lm_head: Q8_0
//   q4_0  linear weights Q4_0; the embedding and an untied lm_head Q8_0
//   q4_k  linear weights Q4_K where in_features is a multiple of 256, else Q4_0; the embedding
//         and an untied lm_head Q6_K where hidden_size is a multiple of 256, else Q8_0.
//         Gemma 3 270M has hidden_size 640, which is not: its q/k/v/gate/up projections
//         (in_features 640) get Q4_0, o_proj (1024) and down_proj (2048) Q4_K, and the tied
//         embedding Q8_0.
// Norm weights stay as they are, and so does any matrix whose in_features is not a multiple of
// 32 (no block type fits it; only tiny test models have such shapes). Tensors the model does not
// bind (a vision tower, an ignored tied lm_head) are kept as they are too.
// The result is a kInMemory Checkpoint with the source's tensor names, config, side files
// (tokenizer.json, ...), norm convention and content hash (a quantized conversion keeps the hash
// of the model it was made from), and quantization() = the scheme's name. It owns the quantized
// buffers and keeps the source's storage alive for the tensors it shares, so it may outlive
// `source`.
// Thread-safety: plain functions; QuantizeCheckpoint uses `pool` (one caller at a time).
#pragma once

#include <cstdint>
#include <string_view>

#include "model/checkpoint.h"
#include "tensor/dtype.h"
#include "util/status.h"
#include "util/thread_pool.h"

namespace fgnet {

enum class QuantScheme : std::uint8_t { kQ8_0, kQ4_0, kQ4_K };

// "q8_0", "q4_0" or "q4_k"; an error listing the valid names otherwise.
Result<QuantScheme> ParseQuantScheme(std::string_view name);
std::string_view QuantSchemeName(QuantScheme scheme);

// The type a weight matrix with rows of `in_features` gets under `scheme` (see the table above):
// `embedding` for the embedding and an untied lm_head. `stored` when no block type fits.
DType QuantizedDType(QuantScheme scheme, bool embedding, std::int64_t in_features, DType stored);

// Errors: a source that is already quantized (any bound weight of a quantized type, or a
// quantization() other than "none"), a weight holding a NaN or infinity (naming the tensor).
Result<Checkpoint> QuantizeCheckpoint(const Checkpoint& source, QuantScheme scheme,
                                      ThreadPool& pool);

}  // namespace fgnet
