// The CUDA model's internals, shared by its two sources: cuda_model.cpp (creation, adapters, the
// pass description, graphs, delivery of results) and cuda_forward.cpp (the kernels of a pass).
// Not part of the backend's interface.
// Thread-safety: see CudaModel; Impl is used under its mutex by one forward at a time.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/device.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/ops.h"
#include "device/cuda_model.h"
#include "device/cuda_weights.h"
#include "kv/paged_sequence.h"

namespace fgnet {
namespace cuda_model_internal {

// Rows of one pass: a step of up to 4,096 tokens (EngineOptions::max_batch_tokens) runs as one
// pass. A pass has a fixed cost, the latency of its ~170 kernels (about what a 16-row pass takes:
// 0.8 ms on an H200), which a 2,064-token prompt cut at 2,048 rows paid twice. Its buffers take
// about 50 KB a row for the 270M shapes (36 KB of activations, the products' BF16 terms and the
// GeGLU's up products): 200 MB at 4,096 rows, held only where the engine's steps are that long.
constexpr std::size_t kMaxPassRows = 4096;
// Rows whose logits are computed at once ([rows, vocab] f32 on the GPU and in pinned memory).
constexpr std::size_t kLogitRows = 64;
// Adapters kept resident beyond those of the current pass (least recently used go first).
constexpr std::size_t kMaxResidentAdapters = 256;

// The stream every call of one model runs on, and a CUDA error from work queued outside a forward
// (block copies of the KV pool), reported by the next forward.
struct StreamState {
  int device = 0;
  cudaStream_t stream = nullptr;
  std::mutex mu;
  Status deferred = Ok();

  ~StreamState() {
    if (stream != nullptr) {
      cudaSetDevice(device);
      cudaStreamDestroy(stream);
    }
  }
  void Record(Status s) {
    if (s.ok()) return;
    std::lock_guard lock(mu);
    if (deferred.ok()) deferred = std::move(s);
  }
  Status Take() {
    std::lock_guard lock(mu);
    return std::exchange(deferred, Ok());
  }
};

// Device memory that only grows (contents are not kept when it does): exactly to the first size
// asked, then by a quarter more than asked, so that passes growing step by step reallocate
// rarely. `moves` counts the reallocations of every buffer that shares it, so that stale CUDA
// graphs are recognised.
class Scratch {
 public:
  Status Reserve(std::size_t bytes, std::uint64_t* moves) {
    if (memory_.bytes() >= bytes) return Ok();
    const std::size_t want = memory_.bytes() == 0 ? bytes : bytes + bytes / 4;
    memory_ = cuda::DeviceMemory();
    FGNET_ASSIGN_OR_RETURN(memory_, cuda::DeviceMemory::Allocate(want));
    ++*moves;
    return Ok();
  }
  template <typename T>
  T* as(std::size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(memory_.data()) + byte_offset);
  }
  std::size_t bytes() const { return memory_.bytes(); }

 private:
  cuda::DeviceMemory memory_;
};

// Page-locked host memory that only grows.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  Status Reserve(std::size_t bytes, std::uint64_t* moves) {
    if (bytes_ >= bytes) return Ok();
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = nullptr;
    bytes_ = 0;
    const std::size_t want = bytes + bytes / 4;
    FGNET_TRY(cuda::CudaCheck(cudaMallocHost(&data_, want), "cudaMallocHost"));
    bytes_ = want;
    ++*moves;
    return Ok();
  }
  template <typename T>
  T* as(std::size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(data_) + byte_offset);
  }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// One adapter on the GPU: A and B (module scale folded into B) per layer and module.
struct DeviceAdapter {
  cuda::DeviceMemory memory;
  struct Module {
    const float* a = nullptr;
    const float* b = nullptr;
    std::int32_t rank = 0;
  };
  std::vector<std::array<Module, kNumLoraModules>> layers;
  std::size_t bytes = 0;
};

inline std::size_t AlignUp(std::size_t n, std::size_t a = 256) { return (n + a - 1) / a * a; }

// The arrays describing a pass, at fixed offsets of the staging buffer (pinned on the host, and
// on the device) for given capacities, so that their addresses stay the same from pass to pass
// (CUDA graphs capture them) until a pass needs more room.
struct StagingLayout {
  struct Sizes {
    std::size_t rows = 0, seqs = 0, tables = 0, lora_rows = 0, lora_groups = 0, row_entries = 0;
    std::size_t filter_words = 0, penalized = 0;  // allowed-token words and penalised ids
  };
  Sizes capacity;
  std::size_t ids = 0, row_pos = 0, row_seq = 0, logit_rows = 0, filters = 0, seq_table = 0,
              lora_rows_at = 0, lora_scales = 0, lora_groups_at = 0, row_entries_at = 0,
              entry_adapter_at = 0, tables_at = 0, words_at = 0, penalized_at = 0, total = 0;

  bool Holds(const Sizes& n) const {
    const Sizes& c = capacity;
    return n.rows <= c.rows && n.seqs <= c.seqs && n.tables <= c.tables &&
           n.lora_rows <= c.lora_rows && n.lora_groups <= c.lora_groups &&
           n.row_entries <= c.row_entries && n.filter_words <= c.filter_words &&
           n.penalized <= c.penalized;
  }
  // Room for `n` and for twice the variable-length arrays, at least what `old` had.
  static StagingLayout For(const Sizes& n, const Sizes& old, std::size_t groups) {
    StagingLayout l;
    Sizes& c = l.capacity;
    c.rows = std::max(n.rows, old.rows);
    c.seqs = std::max(n.seqs, old.seqs);
    c.tables = std::max(n.tables * 2, old.tables);
    c.lora_rows = std::max(n.lora_rows * 2, old.lora_rows);
    c.lora_groups = std::max(n.lora_groups * 2, old.lora_groups);
    c.row_entries = std::max(n.row_entries * 2, old.row_entries);
    c.filter_words = std::max(n.filter_words, old.filter_words);
    c.penalized = std::max(n.penalized * 2, old.penalized);
    std::size_t at = 0;
    const auto place = [&at](std::size_t bytes) {
      const std::size_t here = at;
      at = AlignUp(at + bytes);
      return here;
    };
    l.ids = place(c.rows * 4);
    l.row_pos = place(c.rows * 4);
    l.row_seq = place(c.rows * 4);
    l.logit_rows = place(c.rows * 4);
    l.filters = place(c.rows * sizeof(cuda::RowFilter));
    l.seq_table = place(groups * c.seqs * 4);
    l.lora_rows_at = place(c.lora_rows * 4);
    l.lora_scales = place(c.lora_rows * 4);
    l.lora_groups_at = place(c.lora_groups * sizeof(cuda::LoraGroup));
    l.row_entries_at = place(c.row_entries * 4);
    l.entry_adapter_at = place(c.lora_rows * 4);
    l.tables_at = place(c.tables * 4);
    l.words_at = place(c.filter_words * 8);
    l.penalized_at = place(c.penalized * 4);
    l.total = at;
    return l;
  }
};

// What the kernels of a pass depend on besides the contents of the staging buffer: passes of
// equal shapes launch identical kernels, so a CUDA graph captured for one replays the other.
struct PassShape {
  std::int32_t rows = 0, seqs = 0, max_pos = 0;
  std::int32_t logit_rows = 0;
  bool argmax = false, full = false, top = false;  // some logit row wants its argmax / its
                                                   // logits / its largest logits
  bool filter = false;                             // some logit row has a LogitsFilter
  std::int32_t lora_rows = 0, max_rank = 0;
  std::vector<std::int32_t> site_first, site_count, site_rank;  // per (layer, module); empty
                                                                // without adapters
  std::int32_t lora_adapters = 0;    // adapters of the pass (groups a site)
  std::int32_t lora_group_rows = 0;  // most rows one adapter has (the grouped launches' grids)
  bool lora_epilogue = false;        // adapters' updates in the products' epilogue
  std::int32_t lora_per_row = 0;     // then: most adapters of one row

  std::string Key() const {
    std::string key;
    const auto put = [&key](std::int32_t v) { key.append(reinterpret_cast<const char*>(&v), 4); };
    for (std::int32_t v : {rows, seqs, max_pos, logit_rows, std::int32_t{argmax},
                           std::int32_t{full}, std::int32_t{top}, std::int32_t{filter}, lora_rows,
                           max_rank, std::int32_t{lora_epilogue}, lora_per_row, lora_group_rows}) {
      put(v);
    }
    for (const auto* list : {&site_count, &site_rank})
      for (std::int32_t v : *list) put(v);
    return key;
  }
};

// Decode passes of at most this many rows (on BF16 weights, without adapters at the products)
// fold each residual update into the staging of the next GEMV's input (cuda::ResidualInput):
// every block of the GEMV normalises the rows itself, where the launch it saves costs more. Per
// layer on an H200, RMSNormAddToNorm + the q/k/v products against a residual input
// (CudaMatMulTest.PerfFusedDecode, a row's norm in one round trip to memory): 3.52 -> 2.74 us at 1
// row, 4.34 -> 3.41 at 4, 4.81 -> 4.34 at 8 (tensor cores), 5.33 -> 5.84 at 16; 16-row decode and
// the first token after a cached prefix measured no faster with 16 here.
constexpr std::size_t kMaxStagedRows = 8;

// Decode passes of at most this many rows run as CUDA graphs, and so do passes of several tokens
// of a sequence (a prompt's short remainder after a cached prefix) of at most kMaxGraphChunkRows.
constexpr std::int32_t kMaxGraphRows = 256;
constexpr std::int32_t kMaxGraphChunkRows = 64;
// Graph passes round the longest position up to a multiple of this, so that one graph serves
// many steps (attention treats the extra keys as masked).
constexpr std::int32_t kGraphPositionStep = 256;
// Graphs kept before the cache is emptied.
constexpr std::size_t kMaxGraphs = 512;

// One captured pass shape.
struct GraphEntry {
  cudaGraphExec_t exec = nullptr;
  std::uint64_t generation = 0;  // of the buffers it captured
  bool seen = false;             // ran once eagerly at that generation
  bool failed = false;           // capture did not work: always run eagerly
};

// The activations of a pass of `rows` rows, float offsets into one buffer (each 64-float
// aligned): the residual stream x and its second buffer x_next (a fused residual input writes the
// new residual there: cuda::ResidualInput), the normalised input h, q, k, v, the attention output,
// a product's output o, and the MLP's gate and up.
struct ActivationLayout {
  enum Buffer : std::size_t { kX, kXNext, kH, kQ, kK, kV, kAttn, kO, kGate, kUp, kCount };
  std::array<std::size_t, kCount> at{};
  std::size_t floats = 0;
  static ActivationLayout For(std::size_t rows, std::size_t hidden, std::size_t q_dim,
                              std::size_t kv_dim, std::size_t intermediate) {
    const std::array<std::size_t, kCount> sizes = {
        hidden, hidden, hidden, q_dim, kv_dim, kv_dim, q_dim, hidden, intermediate, intermediate};
    ActivationLayout l;
    for (std::size_t i = 0; i < kCount; ++i) {
      l.at[i] = l.floats;
      l.floats += AlignUp(rows * sizes[i], 64);
    }
    return l;
  }
};

// Where a row's logits go: a host row, only the id of its largest logit (kArgmax), or its
// largest logits (kTop; the step's logits when those might not be enough).
struct LogitDest {
  float* dst;
  std::int32_t* token;
  const SequenceStep* select = nullptr;
};

// Byte offsets in the logits buffers (device and pinned host) for `chunk` rows: the logits, the
// argmax ids, the largest logits and their ids, and (device only) TopRows' and ArgmaxRows'
// workspace.
struct LogitsLayout {
  std::size_t ids, top_values, top_ids, workspace, total;
  static LogitsLayout For(std::size_t chunk, std::size_t vocab) {
    LogitsLayout l{};
    l.ids = AlignUp(chunk * vocab * sizeof(float));
    l.top_values = AlignUp(l.ids + chunk * sizeof(std::int32_t));
    l.top_ids = AlignUp(l.top_values + chunk * cuda::kTopRows * sizeof(float));
    l.workspace = AlignUp(l.top_ids + chunk * cuda::kTopRows * sizeof(std::int32_t));
    l.total = l.workspace + std::max(cuda::TopRowsWorkspace(chunk, vocab),
                                     cuda::ArgmaxRowsWorkspace(chunk, vocab));
    return l;
  }
};
static_assert(cuda::kTopRows == kTopLogits);

// The rows of a pass one adapter applies to.
struct HostLoraGroup {
  const LoraAdapter* key;
  const DeviceAdapter* adapter;
  std::vector<std::int32_t> rows;
  std::vector<float> scales;
};

// Host-side arrays of a pass, kept between passes so that decoding allocates nothing.
struct HostPass {
  std::vector<std::int32_t> ids, row_pos, row_seq, logit_rows, seq_table, tables, lora_rows,
      row_entries, entry_adapter, row_adapters;
  std::vector<float> lora_scales;
  std::vector<cuda::RowFilter> filters;  // per logit row
  std::vector<std::uint64_t> filter_words;
  std::vector<std::int32_t> penalized;
  std::vector<LogitDest> logit_dest;
  std::vector<HostLoraGroup> lora;
  std::vector<cuda::LoraGroup> lora_groups;
};

}  // namespace cuda_model_internal

struct CudaModel::Impl : ForwardDims, DeviceWeights {
  Gemma3Config config;
  std::string name;
  std::shared_ptr<cuda_model_internal::StreamState> state;
  std::int64_t window = 0;
  cuda::AttentionShape attention[2];
  bool bf16_layers = true;  // no layer matrix is quantized

  // Everything below is used under `mu` by one forward at a time.
  mutable std::mutex mu;
  mutable std::optional<cuda::MatMulContext> matmul;
  mutable cuda_model_internal::Scratch activations, attention_ws, lora_ws, logits, staging;
  mutable cuda_model_internal::PinnedBuffer host_staging, host_logits;
  mutable std::list<std::pair<std::string, cuda_model_internal::DeviceAdapter>>
      adapters;  // most recent first
  mutable std::unordered_map<
      std::string, std::list<std::pair<std::string, cuda_model_internal::DeviceAdapter>>::iterator>
      adapter_index;
  mutable cuda_model_internal::HostPass host;
  mutable cuda_model_internal::StagingLayout staging_layout;
  mutable std::uint64_t moves = 0;  // reallocations of the pass buffers (stales graphs)
  bool use_graphs = true;
  mutable std::unordered_map<std::string, cuda_model_internal::GraphEntry> graphs;
  mutable std::uint64_t graph_launches = 0;

  ~Impl() { ClearGraphs(); }
  Result<const cuda_model_internal::DeviceAdapter*> Resident(const LoraAdapter& adapter) const;
  // Whether a pass of `rows` rows adds the adapters' updates in its products' epilogue (with one
  // shrink launch per input instead of a shrink and an expand per site): every layer product on
  // the BF16 GEMV path.
  bool LoraInEpilogue(std::size_t rows) const {
    return bf16_layers && cuda::MatMulContext::TakesGemv(rows);
  }
  Status RunPass(std::span<const PassSegment> segments) const;
  // Every kernel and device-to-host copy of a pass whose description is in the staging buffer.
  Status Enqueue(const cuda_model_internal::PassShape& shape, const kv::BlockPool& pool,
                 std::size_t c) const;
  Status Capture(const std::function<Status()>& enqueue, cudaGraphExec_t* exec) const;
  // Hands logit row i of the current chunk to its owner (after the stream has synchronised).
  Status Deliver(const cuda_model_internal::LogitDest& d, std::size_t i,
                 const cuda_model_internal::LogitsLayout& ll) const;
  void ClearGraphs() const;
};

}  // namespace fgnet
