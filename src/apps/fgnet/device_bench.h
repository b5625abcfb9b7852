// `fgnet bench --device cuda[:N]`: the serving figures of a model on a GPU, taken through the
// Engine (the path users run), and the table that sets them beside a PyTorch + transformers
// baseline measured on the same machine (tools/bench_transformers.py --json):
//   - batch-1 decode: tokens/s and ms/token p50/p99 of one greedy sequence (128-token prompt,
//     256 new tokens), from the arrival times of its streamed tokens;
//   - prefill: tokens/s of one cold 2,048-token prompt (time to its first token: the forward
//     with every KV write, plus one sampling step);
//   - aggregate decode tokens/s of 16 and 64 concurrent sequences, each with its own random
//     rank-16 adapter on all seven projections, and the same batch without adapters;
//   - time to first token of a 2,048-token prefix + 16-token suffix, cold and with the prefix
//     in the prefix cache;
//   - the GPU memory of an 8-expert network: the weights, 8 resident rank-16 adapters, and the
//     KV blocks 8 sequences of 4,096 tokens hold (CUDA context excluded, as PyTorch's
//     max_memory_allocated excludes it), with f32 and, where the model supports them, bf16 keys
//     and values (transformers keeps a bf16 model's in bf16).
// The other measurements use options.kv_dtype.
// Thread-safety: plain functions.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "apps/fgnet/bench_report.h"
#include "apps/fgnet/serve_bench.h"
#include "engine/adapter_registry.h"
#include "model/model.h"
#include "tensor/dtype.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet::cli {

struct DeviceBenchOptions {
  std::int64_t decode_prompt = 128;
  std::int64_t decode_tokens = 256;
  std::int64_t prefill_tokens = 2048;
  std::vector<std::int64_t> concurrency = {16, 64};
  std::int64_t lora_rank = 16;
  std::int64_t batch_prompt = 128;  // per sequence of the concurrent decode runs
  std::int64_t prefix_tokens = 2048;
  std::int64_t suffix_tokens = 16;
  std::int64_t experts = 8;
  std::int64_t expert_context = 4096;
  int repeat = 3;  // best of (median for the per-token latencies)
  DType kv_dtype = DType::kF32;
  std::uint64_t seed = 0;
};

struct DeviceBenchResult {
  std::string device;
  double decode_tokens_per_s = 0;
  double decode_ms_p50 = 0;
  double decode_ms_p99 = 0;
  double prefill_tokens_per_s = 0;
  ServeBenchResult serve;  // concurrent decode and time to first token
  // The 8-expert network, once per KV element type measured.
  struct Network {
    DType kv_dtype = DType::kF32;
    double weights_mib = 0;   // and cuBLAS's workspace
    double adapters_mib = 0;  // and the engine's pass buffers
    double kv_mib = 0;
    double total_mib() const { return weights_mib + adapters_mib + kv_mib; }
  };
  std::vector<Network> networks;
};

// Runs every measurement on `model` (a device model), with engines it creates; random adapters
// "serve-bench-<i>" are added to `registry`. `log` gets progress.
Result<DeviceBenchResult> RunDeviceBench(const Model& model, AdapterRegistry& registry,
                                         const DeviceBenchOptions& options, std::ostream& log);

// Report rows.
std::vector<Measurement> DeviceMeasurements(const DeviceBenchResult& result,
                                            const DeviceBenchOptions& options);

// The markdown comparison: one row per figure, fgnet beside the baseline's figure (a
// tools/bench_transformers.py JSON report; null: fgnet alone) and fgnet's advantage (the ratio
// oriented so that above 1 means fgnet is better: faster, or less memory).
std::string DeviceBenchTable(const DeviceBenchResult& result, const DeviceBenchOptions& options,
                             const Json* baseline);

}  // namespace fgnet::cli
