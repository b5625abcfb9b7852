#include "device/cuda_model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/device.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/ops.h"
#include "device/cuda_weights.h"
#include "kv/paged_sequence.h"
#include "model/gemma3_model.h"
#include "tensor/dtype.h"

namespace fgnet {
namespace {

// Rows of one pass: a 2,048-token prompt runs as one pass (about 34 KB of activations per row for
// the 270M shapes).
constexpr std::size_t kMaxPassRows = 2048;
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

// KV blocks in GPU memory. Copies are queued on the model's stream, so they are ordered before the
// next forward that reads the blocks.
class CudaKVMemory final : public Memory {
 public:
  CudaKVMemory(cuda::DeviceMemory memory, std::shared_ptr<StreamState> state)
      : memory_(std::move(memory)), state_(std::move(state)) {}
  ~CudaKVMemory() override { cudaSetDevice(state_->device); }

  void* data() const override { return memory_.data(); }
  std::size_t bytes() const override { return memory_.bytes(); }
  Device device() const override { return Device::Cuda(state_->device); }
  void Copy(std::size_t to, std::size_t from, std::size_t bytes) override {
    FGNET_CHECK_LE(to + bytes, memory_.bytes());
    FGNET_CHECK_LE(from + bytes, memory_.bytes());
    char* base = static_cast<char*>(memory_.data());
    cudaSetDevice(state_->device);
    state_->Record(cuda::CudaCheck(
        cudaMemcpyAsync(base + to, base + from, bytes, cudaMemcpyDeviceToDevice, state_->stream),
        "KV block copy (cudaMemcpyAsync)"));
  }

 private:
  cuda::DeviceMemory memory_;
  std::shared_ptr<StreamState> state_;
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

std::size_t AlignUp(std::size_t n, std::size_t a = 256) { return (n + a - 1) / a * a; }

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
  std::int32_t lora_adapters = 0;  // adapters of the pass (groups a site)
  bool lora_epilogue = false;      // adapters' updates in the products' epilogue
  std::int32_t lora_per_row = 0;   // then: most adapters of one row

  std::string Key() const {
    std::string key;
    const auto put = [&key](std::int32_t v) { key.append(reinterpret_cast<const char*>(&v), 4); };
    for (std::int32_t v : {rows, seqs, max_pos, logit_rows, std::int32_t{argmax},
                           std::int32_t{full}, std::int32_t{top}, std::int32_t{filter}, lora_rows,
                           max_rank, std::int32_t{lora_epilogue}, lora_per_row}) {
      put(v);
    }
    for (const auto* list : {&site_count, &site_rank})
      for (std::int32_t v : *list) put(v);
    return key;
  }
};

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
      row_entries, entry_adapter;
  std::vector<float> lora_scales;
  std::vector<cuda::RowFilter> filters;  // per logit row
  std::vector<std::uint64_t> filter_words;
  std::vector<std::int32_t> penalized;
  std::vector<LogitDest> logit_dest;
  std::vector<HostLoraGroup> lora;
  std::vector<cuda::LoraGroup> lora_groups;
};

}  // namespace

struct CudaModel::Impl : ForwardDims, DeviceWeights {
  Gemma3Config config;
  std::string name;
  std::shared_ptr<StreamState> state;
  std::int64_t window = 0;
  cuda::AttentionShape attention[2];

  // Everything below is used under `mu` by one forward at a time.
  mutable std::mutex mu;
  mutable std::optional<cuda::MatMulContext> matmul;
  mutable Scratch activations, attention_ws, lora_ws, logits, staging;
  mutable PinnedBuffer host_staging, host_logits;
  mutable std::list<std::pair<std::string, DeviceAdapter>> adapters;  // most recent first
  mutable std::unordered_map<std::string,
                             std::list<std::pair<std::string, DeviceAdapter>>::iterator>
      adapter_index;
  mutable HostPass host;
  mutable StagingLayout staging_layout;
  mutable std::uint64_t moves = 0;  // reallocations of the pass buffers (stales graphs)
  bool use_graphs = true;
  mutable std::unordered_map<std::string, GraphEntry> graphs;
  mutable std::uint64_t graph_launches = 0;

  ~Impl() { ClearGraphs(); }
  Result<const DeviceAdapter*> Resident(const LoraAdapter& adapter) const;
  // Whether a pass of `rows` rows adds the adapters' updates in its products' epilogue (with one
  // shrink launch per input instead of a shrink and an expand per site): every layer product on
  // the BF16 GEMV path.
  bool LoraInEpilogue(std::size_t rows) const;
  Status RunPass(std::span<const PassSegment> segments) const;
  // Every kernel and device-to-host copy of a pass whose description is in the staging buffer.
  Status Enqueue(const PassShape& shape, const kv::BlockPool& pool, std::size_t c) const;
  Status Capture(const std::function<Status()>& enqueue, cudaGraphExec_t* exec) const;
  // Hands logit row i of the current chunk to its owner (after the stream has synchronised).
  Status Deliver(const LogitDest& d, std::size_t i, const LogitsLayout& ll) const;
  void ClearGraphs() const;
};

CudaModel::CudaModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CudaModel::~CudaModel() {
  if (impl_ != nullptr) cudaSetDevice(impl_->state->device);
}

const Gemma3Config& CudaModel::config() const { return impl_->config; }
Device CudaModel::device() const { return Device::Cuda(impl_->state->device); }
std::string CudaModel::device_name() const { return impl_->name; }

std::uint64_t CudaModel::graph_launches() const {
  std::lock_guard lock(impl_->mu);
  return impl_->graph_launches;
}

std::size_t CudaModel::device_bytes() const {
  std::lock_guard lock(impl_->mu);
  std::size_t bytes = impl_->weight_memory.bytes() + impl_->activations.bytes() +
                      impl_->attention_ws.bytes() + impl_->lora_ws.bytes() + impl_->logits.bytes() +
                      impl_->staging.bytes() + impl_->matmul->device_bytes();
  for (const auto& [key, adapter] : impl_->adapters) bytes += adapter.bytes;
  return bytes;
}

Result<std::unique_ptr<Memory>> CudaModel::AllocateKV(std::size_t bytes) const {
  FGNET_TRY(cuda::CudaCheck(cudaSetDevice(impl_->state->device), "cudaSetDevice"));
  auto memory = cuda::DeviceMemory::Allocate(bytes);
  if (!memory.ok()) {
    return MakeError("KV cache of ", bytes >> 20, " MiB on ", impl_->name, ": ",
                     memory.error().message());
  }
  return std::unique_ptr<Memory>(new CudaKVMemory(std::move(*memory), impl_->state));
}

Result<std::unique_ptr<CudaModel>> CudaModel::Create(const Gemma3Config& config,
                                                     const Gemma3Weights& weights,
                                                     int device_index) {
  // The CPU model's checks of the config and every tensor's shape.
  FGNET_TRY(Gemma3Model::Create(config, weights));
  FGNET_ASSIGN_OR_RETURN(std::vector<cuda::CudaDeviceInfo> devices, cuda::ListCudaDevices());
  if (device_index < 0 || device_index >= static_cast<int>(devices.size())) {
    return MakeError("device cuda:", device_index, " does not exist: this machine has ",
                     devices.size(), " CUDA device", devices.size() == 1 ? "" : "s");
  }
  const cuda::CudaDeviceInfo& info = devices[static_cast<std::size_t>(device_index)];
  if (info.compute_major < 8) {
    return MakeError("device cuda:", device_index, " (", info.name, ") has compute capability ",
                     info.compute_major, ".", info.compute_minor, "; fgnet needs 8.0 or newer");
  }
  FGNET_TRY(cuda::CudaCheck(cudaSetDevice(device_index), "cudaSetDevice"));

  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  const Gemma3Config& c = config;
  m.config = c;
  m.name = "cuda:" + std::to_string(device_index) + " (" + info.name + ")";
  m.state = std::make_shared<StreamState>();
  m.state->device = device_index;
  FGNET_TRY(cuda::CudaCheck(cudaStreamCreateWithFlags(&m.state->stream, cudaStreamNonBlocking),
                            "cudaStreamCreateWithFlags"));
  static_cast<ForwardDims&>(m) = ForwardDims::Of(c);
  m.window = c.sliding_window;
  // FGNET_CUDA_GRAPHS=0 launches every kernel one by one (for measuring what graphs save).
  if (const char* graphs = std::getenv("FGNET_CUDA_GRAPHS"); graphs != nullptr) {
    m.use_graphs = std::string_view(graphs) != "0";
  }
  if (m.head_dim % 32 != 0 || m.head_dim > 256) {
    return MakeError("config: head_dim ", m.head_dim,
                     " is not supported on CUDA (a multiple of 32, at most 256)");
  }
  for (std::size_t in : {m.hidden, m.q_dim, m.intermediate}) {
    if (in % 8 != 0) {
      return MakeError(
          "config: the CUDA backend needs hidden_size, heads * head_dim and "
          "intermediate_size to be multiples of 8 (got ",
          in, ")");
    }
  }

  for (int r = 0; r < 2; ++r) {
    cuda::AttentionShape& a = m.attention[r];
    a.heads = static_cast<std::int32_t>(m.heads);
    a.kv_heads = static_cast<std::int32_t>(m.kv_heads);
    a.head_dim = static_cast<std::int32_t>(m.head_dim);
    a.scale = static_cast<float>(std::pow(c.query_pre_attn_scalar, -0.5));
    a.softcap = c.attn_logit_softcapping ? static_cast<float>(*c.attn_logit_softcapping) : 0.0f;
    a.window = r == 0 ? static_cast<std::int32_t>(c.sliding_window) : 0;
  }
  FGNET_ASSIGN_OR_RETURN(DeviceWeights uploaded, UploadWeights(c, weights, m.name));
  static_cast<DeviceWeights&>(m) = std::move(uploaded);
  FGNET_ASSIGN_OR_RETURN(cuda::MatMulContext mm, cuda::MatMulContext::Create(m.state->stream));
  m.matmul.emplace(std::move(mm));
  return std::unique_ptr<CudaModel>(new CudaModel(std::move(impl)));
}

Result<const DeviceAdapter*> CudaModel::Impl::Resident(const LoraAdapter& adapter) const {
  const std::string& key = adapter.content_hash;
  if (auto it = adapter_index.find(key); it != adapter_index.end()) {
    adapters.splice(adapters.begin(), adapters, it->second);
    return &it->second->second;
  }
  // Pack every adapted module's A and B (B scaled by the module's scale), then one upload.
  std::vector<float> packed;
  struct At {
    std::size_t a, b;
    std::int32_t rank;
  };
  std::vector<std::array<At, kNumLoraModules>> at(adapter.layers.size());
  for (std::size_t l = 0; l < adapter.layers.size(); ++l) {
    for (LoraModule module : kAllLoraModules) {
      const LoraLayer& layer = adapter.layers[l][static_cast<std::size_t>(module)];
      At& a = at[l][static_cast<std::size_t>(module)];
      a.rank = static_cast<std::int32_t>(layer.rank);
      if (!layer.active()) continue;
      a.a = packed.size();
      packed.insert(packed.end(), layer.a.begin(), layer.a.end());
      packed.resize(AlignUp(packed.size(), 64));
      a.b = packed.size();
      for (float v : layer.b) packed.push_back(v * layer.scale);
      packed.resize(AlignUp(packed.size(), 64));
    }
  }
  DeviceAdapter d;
  d.bytes = std::max<std::size_t>(packed.size(), 1) * sizeof(float);
  auto memory = cuda::DeviceMemory::Allocate(d.bytes);
  if (!memory.ok()) {
    return MakeError("adapter '", adapter.name, "' on ", name, ": ", memory.error().message());
  }
  d.memory = std::move(*memory);
  FGNET_TRY(d.memory.CopyFromHost(packed.data(), packed.size() * sizeof(float)));
  const auto* base = static_cast<const float*>(d.memory.data());
  d.layers.resize(at.size());
  for (std::size_t l = 0; l < at.size(); ++l) {
    for (std::size_t i = 0; i < kNumLoraModules; ++i) {
      if (at[l][i].rank == 0) continue;
      d.layers[l][i] = {base + at[l][i].a, base + at[l][i].b, at[l][i].rank};
    }
  }
  adapters.emplace_front(key, std::move(d));
  adapter_index[key] = adapters.begin();
  return &adapters.front().second;
}

bool CudaModel::Impl::LoraInEpilogue(std::size_t rows) const {
  using cuda::MatMulContext;
  for (const LayerWeights& w : layers) {
    const std::pair<const DeviceMatrix*, std::size_t> products[] = {
        {&w.q, q_dim * hidden},           {&w.k, kv_dim * hidden},
        {&w.v, kv_dim * hidden},          {&w.o, hidden * q_dim},
        {&w.gate, intermediate * hidden}, {&w.up, intermediate * hidden},
        {&w.down, hidden * intermediate}};
    for (const auto& [matrix, weights] : products) {
      if (matrix->quantized() || !MatMulContext::TakesGemv(rows, weights)) return false;
    }
  }
  return true;
}

Status CudaModel::ForwardBatch(std::span<const SequenceStep> steps, ThreadPool& /*pool*/,
                               ForwardScratch& scratch) const {
  Impl& m = *impl_;
  FGNET_TRY(ValidateSteps(m.config, device(), steps));
  std::lock_guard lock(m.mu);
  FGNET_TRY(cuda::CudaCheck(cudaSetDevice(m.state->device), "cudaSetDevice"));
  FGNET_TRY(m.state->Take());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const auto* paged = dynamic_cast<const kv::PagedSequence*>(steps[i].kv);
    if (paged == nullptr || paged->pool().memory().data() == nullptr) {
      return MakeError("Forward: sequence ", i,
                       ": the CUDA backend needs a paged KV cache from the model's AllocateKV");
    }
  }
  FGNET_TRY(
      RunInPasses(m.config.vocab_size, steps, kMaxPassRows, scratch, /*host_select=*/false,
                  [&m](std::span<const PassSegment> segments) { return m.RunPass(segments); }));
  // Evict adapters beyond the resident limit (none of them is in use once the forward is done).
  while (m.adapters.size() > kMaxResidentAdapters) {
    m.adapter_index.erase(m.adapters.back().first);
    m.adapters.pop_back();
  }
  return Ok();
}

Status CudaModel::Impl::RunPass(std::span<const PassSegment> segments) const {
  const cudaStream_t stream = state->stream;
  const PassSegment& last = segments.back();
  const std::size_t c = last.row + last.count;
  const auto& kv0 = static_cast<const kv::PagedSequence&>(*segments.front().step->kv);
  const kv::BlockPool& pool = kv0.pool();
  const kv::KVLayout& layout = pool.layout();
  const auto groups = static_cast<std::size_t>(layout.num_groups());
  const std::size_t nseq = segments.size();

  // --- Host-side description of the pass -------------------------------------------------------
  PassShape shape;
  shape.rows = static_cast<std::int32_t>(c);
  shape.seqs = static_cast<std::int32_t>(nseq);
  std::vector<std::int32_t>& ids = host.ids;
  std::vector<std::int32_t>& row_pos = host.row_pos;
  std::vector<std::int32_t>& row_seq = host.row_seq;
  std::vector<std::int32_t>& logit_rows = host.logit_rows;
  std::vector<LogitDest>& logit_dest = host.logit_dest;
  std::vector<std::int32_t>& seq_table = host.seq_table;
  std::vector<std::int32_t>& tables = host.tables;
  ids.resize(c);
  row_pos.resize(c);
  row_seq.resize(c);
  logit_rows.clear();
  logit_dest.clear();
  seq_table.assign(groups * nseq, 0);
  tables.clear();
  std::vector<cuda::RowFilter>& filters = host.filters;
  std::vector<std::uint64_t>& filter_words = host.filter_words;
  std::vector<std::int32_t>& penalized = host.penalized;
  filters.clear();
  filter_words.clear();
  penalized.clear();
  // A kArgmax or kTop row's filter: its bitset and ids appended to the pass's arrays.
  const auto add_filter = [&](const LogitsFilter& f) {
    cuda::RowFilter row;
    if (!f.allowed.empty()) {
      row.allowed = static_cast<std::int32_t>(filter_words.size());
      filter_words.insert(filter_words.end(), f.allowed.begin(), f.allowed.end());
    }
    if (f.repetition_penalty != 1.0f && !f.penalized.empty()) {
      row.penalized = static_cast<std::int32_t>(penalized.size());
      row.count = static_cast<std::int32_t>(f.penalized.size());
      row.penalty = f.repetition_penalty;
      penalized.insert(penalized.end(), f.penalized.begin(), f.penalized.end());
    }
    shape.filter = shape.filter || !f.empty();
    filters.push_back(row);
  };
  bool decode = true;  // one token per sequence
  for (std::size_t s = 0; s < nseq; ++s) {
    const PassSegment& seg = segments[s];
    const auto& kv = static_cast<const kv::PagedSequence&>(*seg.step->kv);
    if (&kv.pool() != &pool) {
      return MakeError("Forward: the sequences of one batch must share one KV block pool");
    }
    decode = decode && seg.count == 1;
    for (std::size_t i = 0; i < seg.count; ++i) {
      const std::size_t row = seg.row + i;
      ids[row] = seg.step->tokens[seg.offset + i];
      row_pos[row] = static_cast<std::int32_t>(seg.first_pos + static_cast<std::int64_t>(i));
      row_seq[row] = static_cast<std::int32_t>(s);
      if (seg.token != nullptr && i == seg.count - 1) {
        logit_rows.push_back(static_cast<std::int32_t>(row));
        logit_dest.push_back({nullptr, seg.token});
        add_filter(seg.step->filter);
        shape.argmax = true;
      } else if (seg.select != nullptr && i == seg.count - 1) {
        logit_rows.push_back(static_cast<std::int32_t>(row));
        logit_dest.push_back({nullptr, nullptr, seg.select});
        add_filter(seg.step->filter);
        shape.top = true;
      } else if (seg.logits != nullptr && i >= seg.logits_begin) {
        logit_rows.push_back(static_cast<std::int32_t>(row));
        logit_dest.push_back({seg.logits + (i - seg.logits_begin) * vocab, nullptr});
        filters.emplace_back();
        shape.full = true;
      }
    }
    shape.max_pos = std::max(shape.max_pos, row_pos[seg.row + seg.count - 1]);
    const std::int64_t end = seg.first_pos + static_cast<std::int64_t>(seg.count);
    const std::int64_t blocks = (end + layout.block_size - 1) / layout.block_size;
    for (std::size_t g = 0; g < groups; ++g) {
      seq_table[g * nseq + s] = static_cast<std::int32_t>(tables.size());
      for (std::int64_t b = 0; b < blocks; ++b)
        tables.push_back(kv.block(static_cast<std::int64_t>(g), b));
    }
  }
  shape.logit_rows = static_cast<std::int32_t>(logit_rows.size());
  const bool graph = use_graphs && shape.rows <= (decode ? kMaxGraphRows : kMaxGraphChunkRows) &&
                     shape.logit_rows <= static_cast<std::int32_t>(kLogitRows);
  if (graph) {
    shape.max_pos = (shape.max_pos / kGraphPositionStep + 1) * kGraphPositionStep - 1;
  }

  // LoRA: one group per adapter, holding the rows it applies to.
  std::vector<HostLoraGroup>& lora = host.lora;
  lora.clear();
  for (const PassSegment& seg : segments) {
    for (const AdapterUse& use : seg.step->adapters) {
      const std::int64_t skip = std::clamp<std::int64_t>(use.start - seg.first_pos, 0,
                                                         static_cast<std::int64_t>(seg.count));
      if (skip == static_cast<std::int64_t>(seg.count)) continue;
      std::size_t gi = 0;
      while (gi < lora.size() && lora[gi].key != use.adapter) ++gi;
      if (gi == lora.size()) {
        FGNET_ASSIGN_OR_RETURN(const DeviceAdapter* d, Resident(*use.adapter));
        lora.push_back({use.adapter, d, {}, {}});
      }
      for (std::size_t r = seg.row + static_cast<std::size_t>(skip); r < seg.row + seg.count; ++r) {
        lora[gi].rows.push_back(static_cast<std::int32_t>(r));
        lora[gi].scales.push_back(use.scale);
      }
    }
  }
  std::vector<std::int32_t>& lora_rows = host.lora_rows;
  std::vector<float>& lora_scales = host.lora_scales;
  std::vector<cuda::LoraGroup>& lora_groups = host.lora_groups;
  lora_rows.clear();
  lora_scales.clear();
  lora_groups.clear();
  std::vector<std::int32_t> group_first(lora.size());
  for (std::size_t g = 0; g < lora.size(); ++g) {
    group_first[g] = static_cast<std::int32_t>(lora_rows.size());
    lora_rows.insert(lora_rows.end(), lora[g].rows.begin(), lora[g].rows.end());
    lora_scales.insert(lora_scales.end(), lora[g].scales.begin(), lora[g].scales.end());
  }
  if (!lora.empty()) {
    const std::size_t sites = layers.size() * kNumLoraModules;
    shape.site_first.assign(sites, 0);
    shape.site_count.assign(sites, 0);
    shape.site_rank.assign(sites, 0);
    // Every site holds one group per adapter, in the adapters' order (rank 0 where an adapter
    // leaves the module alone), so that a site's group of adapter g is at site_first + g and the
    // sites of one layer follow each other; a site no adapter touches counts no groups.
    for (std::size_t site = 0; site < sites; ++site) {
      shape.site_first[site] = static_cast<std::int32_t>(lora_groups.size());
      for (std::size_t g = 0; g < lora.size(); ++g) {
        const DeviceAdapter::Module& mod =
            lora[g].adapter->layers[site / kNumLoraModules][site % kNumLoraModules];
        lora_groups.push_back({mod.a, mod.b, mod.rank, group_first[g],
                               static_cast<std::int32_t>(lora[g].rows.size())});
        shape.site_rank[site] = std::max(shape.site_rank[site], mod.rank);
      }
      shape.site_count[site] =
          shape.site_rank[site] > 0 ? static_cast<std::int32_t>(lora.size()) : 0;
    }
    shape.max_rank = *std::max_element(shape.site_rank.begin(), shape.site_rank.end());
    shape.lora_adapters = static_cast<std::int32_t>(lora.size());
  }
  shape.lora_rows = static_cast<std::int32_t>(lora_rows.size());
  // Decode-sized passes add the adapters' updates in the products' epilogue: per row the entries
  // of lora_rows it has (row_entries, lora_per_row a row), and each entry's adapter.
  std::vector<std::int32_t>& row_entries = host.row_entries;
  std::vector<std::int32_t>& entry_adapter = host.entry_adapter;
  row_entries.clear();
  entry_adapter.clear();
  shape.lora_epilogue = !lora.empty() && LoraInEpilogue(c);
  if (shape.lora_epilogue) {
    std::vector<std::int32_t> per_row(c, 0);
    for (std::size_t g = 0; g < lora.size(); ++g) {
      for (const std::int32_t row : lora[g].rows) {
        shape.lora_per_row = std::max(shape.lora_per_row, ++per_row[static_cast<std::size_t>(row)]);
        entry_adapter.push_back(static_cast<std::int32_t>(g));
      }
    }
    row_entries.assign(c * static_cast<std::size_t>(shape.lora_per_row), -1);
    std::fill(per_row.begin(), per_row.end(), 0);
    for (std::size_t i = 0; i < lora_rows.size(); ++i) {
      const auto row = static_cast<std::size_t>(lora_rows[i]);
      row_entries[row * static_cast<std::size_t>(shape.lora_per_row) +
                  static_cast<std::size_t>(per_row[row]++)] = static_cast<std::int32_t>(i);
    }
  }

  // --- Buffers: staging at fixed offsets, activations, workspaces -------------------------------
  const StagingLayout::Sizes needed{c,
                                    nseq,
                                    tables.size(),
                                    lora_rows.size(),
                                    lora_groups.size(),
                                    row_entries.size(),
                                    filter_words.size(),
                                    penalized.size()};
  if (!staging_layout.Holds(needed)) {
    staging_layout = StagingLayout::For(needed, staging_layout.capacity, groups);
    ++moves;
  }
  const StagingLayout& sl = staging_layout;
  FGNET_TRY(host_staging.Reserve(sl.total, &moves));
  FGNET_TRY(staging.Reserve(sl.total, &moves));
  const auto put = [this](std::size_t offset, const auto& v) {
    if (!v.empty()) std::memcpy(host_staging.as<char>(offset), v.data(), v.size() * sizeof(v[0]));
  };
  put(sl.ids, ids);
  put(sl.row_pos, row_pos);
  put(sl.row_seq, row_seq);
  put(sl.logit_rows, logit_rows);
  put(sl.seq_table, seq_table);
  put(sl.lora_rows_at, lora_rows);
  put(sl.lora_scales, lora_scales);
  put(sl.lora_groups_at, lora_groups);
  put(sl.row_entries_at, row_entries);
  put(sl.entry_adapter_at, entry_adapter);
  put(sl.tables_at, tables);
  put(sl.filters, filters);
  put(sl.words_at, filter_words);
  put(sl.penalized_at, penalized);
  const std::size_t upload = !penalized.empty()      ? sl.penalized_at + penalized.size() * 4
                             : !filter_words.empty() ? sl.words_at + filter_words.size() * 8
                                                     : sl.tables_at + tables.size() * 4;
  const std::size_t sizes[] = {c * hidden, c * hidden,       c * q_dim,
                               c * kv_dim, c * kv_dim,       c * q_dim,
                               c * hidden, c * intermediate, c * intermediate};
  std::size_t floats = 0;
  for (std::size_t size : sizes) floats += AlignUp(size, 64);
  FGNET_TRY(activations.Reserve(floats * sizeof(float), &moves));
  cuda::PassRows rows0;
  rows0.rows = shape.rows;
  rows0.num_seqs = shape.seqs;
  rows0.max_pos = shape.max_pos;
  std::size_t attention_floats = 0;
  for (int r = 0; r < 2; ++r) {
    attention_floats =
        std::max(attention_floats, cuda::PagedAttentionWorkspace(rows0, attention[r]));
  }
  FGNET_TRY(
      attention_ws.Reserve(std::max<std::size_t>(attention_floats, 1) * sizeof(float), &moves));
  // The shrinks' results: a slot a site of the q/k/v sites shrunk together.
  const std::size_t lora_slots = 3;
  FGNET_TRY(lora_ws.Reserve(
      std::max<std::size_t>(
          lora_slots * static_cast<std::size_t>(shape.max_rank) * lora_rows.size(), 1) *
          sizeof(float),
      &moves));
  const std::size_t logit_chunk = std::min(kLogitRows, std::max<std::size_t>(logit_rows.size(), 1));
  const LogitsLayout ll = LogitsLayout::For(logit_chunk, vocab);
  FGNET_TRY(logits.Reserve(ll.total, &moves));
  FGNET_TRY(host_logits.Reserve(ll.workspace, &moves));

  FGNET_TRY(cuda::CudaCheck(cudaMemcpyAsync(staging.as<char>(), host_staging.as<char>(), upload,
                                            cudaMemcpyHostToDevice, stream),
                            "cudaMemcpyAsync (pass description)"));

  // --- The kernels: replayed from a graph, captured, or launched one by one ---------------------
  const auto enqueue = [&]() -> Status { return Enqueue(shape, pool, c); };
  bool ran = false;
  if (graph) {
    std::string key = shape.Key();
    const void* memory = pool.memory().data();
    key.append(reinterpret_cast<const char*>(&memory), sizeof(memory));
    const std::uint64_t generation = moves + matmul->generation();
    if (graphs.size() >= kMaxGraphs && graphs.find(key) == graphs.end()) ClearGraphs();
    GraphEntry& entry = graphs[key];
    if (entry.generation != generation) {
      if (entry.exec != nullptr) cudaGraphExecDestroy(entry.exec);
      entry = GraphEntry{nullptr, generation, false, entry.failed};
    }
    if (entry.exec == nullptr && entry.seen && !entry.failed) {
      // Second pass of this shape at this generation: every buffer has its size, capture it.
      Status captured = Capture(enqueue, &entry.exec);
      if (!captured.ok()) {
        entry.failed = true;
        entry.exec = nullptr;
      }
    }
    if (entry.exec != nullptr) {
      FGNET_TRY(cuda::CudaCheck(cudaGraphLaunch(entry.exec, stream), "cudaGraphLaunch"));
      ran = true;
      ++graph_launches;
    }
    entry.seen = true;
  }
  if (!ran) FGNET_TRY(enqueue());
  FGNET_TRY(cuda::CudaCheck(cudaStreamSynchronize(stream), "forward pass"));

  // --- Results to their owners (Enqueue handed out each chunk of a longer list itself) ---------
  if (logit_dest.size() <= logit_chunk) {
    for (std::size_t i = 0; i < logit_dest.size(); ++i) FGNET_TRY(Deliver(logit_dest[i], i, ll));
  }
  for (const PassSegment& seg : segments)
    seg.step->kv->Advance(static_cast<std::int64_t>(seg.count));
  return Ok();
}

Status CudaModel::Impl::Deliver(const LogitDest& d, std::size_t i, const LogitsLayout& ll) const {
  if (d.token != nullptr) *d.token = host_logits.as<std::int32_t>(ll.ids)[i];
  if (d.dst != nullptr) {
    std::memcpy(d.dst, host_logits.as<float>() + i * vocab, vocab * sizeof(float));
  }
  if (d.select != nullptr) {
    std::vector<TopLogit>& top = *d.select->top;
    top.clear();
    const float* values = host_logits.as<float>(ll.top_values) + i * kTopLogits;
    const std::int32_t* ids = host_logits.as<std::int32_t>(ll.top_ids) + i * kTopLogits;
    for (std::size_t k = 0; k < kTopLogits; ++k) {
      if (static_cast<std::size_t>(ids[k]) < vocab) top.push_back({ids[k], values[k]});
    }
    if (!TopIsComplete(top, d.select->top_k, d.select->top_temperature)) {
      // The sampler needs the whole row: it is still in the device's logits buffer.
      top.clear();
      FGNET_TRY(cuda::CudaCheck(cudaMemcpy(d.select->logits->data(), logits.as<float>() + i * vocab,
                                           vocab * sizeof(float), cudaMemcpyDeviceToHost),
                                "cudaMemcpy (logits row)"));
    }
  }
  return Ok();
}

Status CudaModel::Impl::Capture(const std::function<Status()>& enqueue,
                                cudaGraphExec_t* exec) const {
  const cudaStream_t stream = state->stream;
  FGNET_TRY(cuda::CudaCheck(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
                            "cudaStreamBeginCapture"));
  const Status enqueued = enqueue();
  cudaGraph_t graph = nullptr;
  const Status ended =
      cuda::CudaCheck(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
  if (!enqueued.ok() || !ended.ok()) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();
    return enqueued.ok() ? ended : enqueued;
  }
  const Status made = cuda::CudaCheck(cudaGraphInstantiate(exec, graph, 0), "cudaGraphInstantiate");
  cudaGraphDestroy(graph);
  return made;
}

void CudaModel::Impl::ClearGraphs() const {
  for (auto& [key, entry] : graphs) {
    if (entry.exec != nullptr) cudaGraphExecDestroy(entry.exec);
  }
  graphs.clear();
}

Status CudaModel::Impl::Enqueue(const PassShape& shape, const kv::BlockPool& pool,
                                std::size_t c) const {
  const cudaStream_t stream = state->stream;
  const kv::KVLayout& layout = pool.layout();
  const auto groups = static_cast<std::size_t>(layout.num_groups());
  const StagingLayout& sl = staging_layout;
  float* ptr[9];
  {
    const std::size_t sizes[] = {c * hidden, c * hidden,       c * q_dim,
                                 c * kv_dim, c * kv_dim,       c * q_dim,
                                 c * hidden, c * intermediate, c * intermediate};
    float* p = activations.as<float>();
    for (std::size_t i = 0; i < std::size(sizes); ++i) {
      ptr[i] = p;
      p += AlignUp(sizes[i], 64);
    }
  }
  float *x = ptr[0], *h = ptr[1], *q = ptr[2], *k = ptr[3], *v = ptr[4], *attn = ptr[5],
        *o = ptr[6], *gate = ptr[7], *up = ptr[8];
  std::vector<cuda::PassRows> pass(groups);
  for (std::size_t g = 0; g < groups; ++g) {
    cuda::PassRows& p = pass[g];
    p.rows = shape.rows;
    p.row_seq = staging.as<std::int32_t>(sl.row_seq);
    p.row_pos = staging.as<std::int32_t>(sl.row_pos);
    p.seq_table = staging.as<std::int32_t>(sl.seq_table) + g * static_cast<std::size_t>(shape.seqs);
    p.tables = staging.as<std::int32_t>(sl.tables_at);
    p.num_seqs = shape.seqs;
    p.max_pos = shape.max_pos;
  }
  const std::int32_t* d_lora_rows = staging.as<std::int32_t>(sl.lora_rows_at);
  const float* d_lora_scales = staging.as<float>(sl.lora_scales);
  const cuda::LoraGroup* d_lora_groups = staging.as<cuda::LoraGroup>(sl.lora_groups_at);
  const auto apply_lora = [&](std::size_t layer, LoraModule module, const float* in,
                              std::size_t ldx, std::size_t in_dim, float* out,
                              std::size_t out_dim) -> Status {
    const std::size_t site = layer * kNumLoraModules + static_cast<std::size_t>(module);
    if (shape.site_count.empty() || shape.site_count[site] == 0) return Ok();
    return cuda::LoraApply(in, ldx, in_dim, out, out_dim, out_dim,
                           d_lora_groups + shape.site_first[site], shape.site_count[site],
                           shape.site_rank[site], d_lora_rows, d_lora_scales, shape.lora_rows,
                           lora_ws.as<float>(), stream);
  };
  const auto has_lora = [&](std::size_t layer, LoraModule module) {
    const std::size_t site = layer * kNumLoraModules + static_cast<std::size_t>(module);
    return !shape.site_count.empty() && shape.site_count[site] > 0;
  };
  // The updates of the consecutive sites `modules` sharing `in`, to the outputs `sites`: one
  // shrink and one expand launch for all of them.
  const auto apply_lora_many = [&](std::size_t layer, std::initializer_list<LoraModule> modules,
                                   const float* in, std::size_t in_dim,
                                   std::initializer_list<cuda::LoraExpandSite> sites) -> Status {
    bool any = false;
    for (LoraModule module : modules) any = any || has_lora(layer, module);
    if (!any) return Ok();
    const std::size_t first = layer * kNumLoraModules + static_cast<std::size_t>(*modules.begin());
    const std::int32_t n = static_cast<std::int32_t>(shape.lora_adapters);
    const cuda::LoraGroup* site_groups = d_lora_groups + shape.site_first[first];
    FGNET_TRY(cuda::LoraShrink(in, in_dim, in_dim, site_groups,
                               static_cast<std::int32_t>(modules.size()) * n, n, shape.max_rank,
                               d_lora_rows, shape.lora_rows, lora_ws.as<float>(), stream));
    return cuda::LoraExpand(std::span(sites.begin(), sites.size()), site_groups, n, shape.max_rank,
                            d_lora_rows, d_lora_scales, shape.lora_rows, lora_ws.as<float>(),
                            stream);
  };
  // The epilogue path: one shrink of the consecutive sites `modules` sharing `in` (slot i for the
  // i-th), then `epilogue` names each one's groups and shrink result (none where no adapter
  // touches the module).
  const auto n_adapters = static_cast<std::int32_t>(shape.lora_adapters);
  const std::size_t slot_floats =
      static_cast<std::size_t>(shape.max_rank) * static_cast<std::size_t>(shape.lora_rows);
  const auto shrink = [&](std::size_t layer, std::initializer_list<LoraModule> modules,
                          const float* in, std::size_t in_dim,
                          cuda::LoraEpilogue* epilogue) -> Status {
    epilogue->rows = {staging.as<std::int32_t>(sl.row_entries_at), shape.lora_per_row,
                      staging.as<std::int32_t>(sl.entry_adapter_at), d_lora_scales, shape.max_rank};
    bool any = false;
    std::size_t slot = 0;
    for (LoraModule module : modules) {
      const std::size_t site = layer * kNumLoraModules + static_cast<std::size_t>(module);
      epilogue->sites[slot] = has_lora(layer, module)
                                  ? cuda::LoraSite{d_lora_groups + shape.site_first[site],
                                                   lora_ws.as<float>() + slot * slot_floats}
                                  : cuda::LoraSite{};
      any = any || has_lora(layer, module);
      ++slot;
    }
    if (!any) return Ok();
    const std::size_t first = layer * kNumLoraModules + static_cast<std::size_t>(*modules.begin());
    return cuda::LoraShrink(in, in_dim, in_dim, d_lora_groups + shape.site_first[first],
                            static_cast<std::int32_t>(modules.size()) * n_adapters, n_adapters,
                            shape.max_rank, d_lora_rows, shape.lora_rows, lora_ws.as<float>(),
                            stream);
  };
  cuda::MatMulContext& mm = *matmul;
  const auto product = [&mm](const float* in_x, std::size_t rows, std::size_t in,
                             const DeviceMatrix& w, std::size_t out, float* y) -> Status {
    if (w.quantized()) return mm.MatMul(in_x, rows, w.quant, y);
    return mm.MatMul(in_x, rows, in, w.bf16, out, y);
  };
  // Products of one x: in one launch where the matrices allow (all BF16, or all quantized alike),
  // else one by one.
  const auto products = [&](const float* in_x, std::size_t rows, std::size_t in,
                            std::initializer_list<std::pair<const DeviceMatrix*, float*>> outs,
                            std::initializer_list<std::size_t> sizes) -> Status {
    const DeviceMatrix& first = *outs.begin()->first;
    bool alike = true;
    for (const auto& [matrix, dst] : outs) {
      alike = alike && matrix->quantized() == first.quantized() &&
              (!matrix->quantized() || matrix->quant.layout == first.quant.layout);
    }
    if (alike && first.quantized()) {
      std::array<cuda::QuantProduct, cuda::MatMulContext::kMaxOutputs> quant{};
      std::size_t n = 0;
      for (const auto& [matrix, dst] : outs) quant[n++] = {&matrix->quant, dst};
      return mm.MatMulMany(in_x, rows, std::span(quant.data(), n));
    }
    if (alike) {
      std::array<cuda::MatMulContext::MatMulOutput, cuda::MatMulContext::kMaxOutputs> bf16{};
      std::size_t n = 0;
      auto size = sizes.begin();
      for (const auto& [matrix, dst] : outs) bf16[n++] = {matrix->bf16, *size++, dst};
      return mm.MatMulMany(in_x, rows, in, std::span(bf16.data(), n));
    }
    auto size = sizes.begin();
    for (const auto& [matrix, dst] : outs)
      FGNET_TRY(product(in_x, rows, in, *matrix, *size++, dst));
    return Ok();
  };

  // y = in W^T with the adapters' updates at (layer, module): in the product's epilogue, or by
  // LoraApply after it.
  const auto adapted_product = [&](std::size_t layer, LoraModule module, const float* in,
                                   std::size_t in_dim, const DeviceMatrix& w, std::size_t out_dim,
                                   float* y) -> Status {
    if (shape.lora_epilogue) {
      cuda::LoraEpilogue epilogue;
      FGNET_TRY(shrink(layer, {module}, in, in_dim, &epilogue));
      const cuda::MatMulContext::MatMulOutput out[] = {{w.bf16, out_dim, y}};
      return mm.MatMulMany(in, c, in_dim, out, &epilogue);
    }
    FGNET_TRY(product(in, c, in_dim, w, out_dim, y));
    return apply_lora(layer, module, in, in_dim, in_dim, y, out_dim);
  };

  const std::int32_t* ids = staging.as<std::int32_t>(sl.ids);
  if (embed.quantized()) {
    FGNET_TRY(cuda::EmbedRowsQuant(embed.quant, ids, c, embed_scale, x, stream));
  } else {
    FGNET_TRY(cuda::EmbedRows(DType::kBF16, embed.bf16, hidden, ids, c, embed_scale, x, stream));
  }
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const LayerWeights& w = layers[l];
    const int r = w.sliding ? 0 : 1;
    const auto group = static_cast<std::size_t>(layout.layer_group[l]);
    const cuda::PagedLayer paged{static_cast<float*>(pool.memory().data()),
                                 static_cast<std::int64_t>(layout.block_floats()),
                                 layout.block_size, layout.layer_slot[l], layout.row};
    // h = the input norm of x: the previous layer's last kernel computed it, except for layer 0.
    if (l == 0) FGNET_TRY(cuda::RMSNorm(x, c, hidden, w.input_norm, eps, h, nullptr, stream));
    cuda::LoraEpilogue epilogue;
    if (shape.lora_epilogue) {
      FGNET_TRY(shrink(l, {LoraModule::kQ, LoraModule::kK, LoraModule::kV}, h, hidden, &epilogue));
      const cuda::MatMulContext::MatMulOutput qkv[] = {
          {w.q.bf16, q_dim, q}, {w.k.bf16, kv_dim, k}, {w.v.bf16, kv_dim, v}};
      FGNET_TRY(mm.MatMulMany(h, c, hidden, qkv, &epilogue));
    } else {
      FGNET_TRY(products(h, c, hidden, {{&w.q, q}, {&w.k, k}, {&w.v, v}}, {q_dim, kv_dim, kv_dim}));
      FGNET_TRY(apply_lora_many(l, {LoraModule::kQ, LoraModule::kK, LoraModule::kV}, h, hidden,
                                {{q, q_dim, q_dim}, {k, kv_dim, kv_dim}, {v, kv_dim, kv_dim}}));
    }
    FGNET_TRY(cuda::QKNormRopeWriteKV(q, k, v, pass[group], paged, attention[r].heads,
                                      attention[r].kv_heads, attention[r].head_dim, w.q_norm,
                                      w.k_norm, eps, inv_freq[r], stream));
    FGNET_TRY(cuda::PagedAttention(q, pass[group], paged, attention[r], attn,
                                   attention_ws.as<float>(), stream));
    FGNET_TRY(adapted_product(l, LoraModule::kO, attn, q_dim, w.o, hidden, o));
    FGNET_TRY(cuda::RMSNormAddToNorm(o, c, hidden, w.post_attention_norm, eps, x,
                                     w.pre_feedforward_norm, h, stream));
    if (shape.lora_epilogue) {
      FGNET_TRY(shrink(l, {LoraModule::kGate, LoraModule::kUp}, h, hidden, &epilogue));
      FGNET_TRY(
          mm.MatMulGeGLU(h, c, hidden, w.gate.bf16, w.up.bf16, intermediate, gate, up, &epilogue));
    } else if (has_lora(l, LoraModule::kGate) || has_lora(l, LoraModule::kUp) ||
               w.gate.quantized() || w.up.quantized()) {
      // The products, adapters' updates to them, then the GeGLU.
      FGNET_TRY(
          products(h, c, hidden, {{&w.gate, gate}, {&w.up, up}}, {intermediate, intermediate}));
      FGNET_TRY(
          apply_lora_many(l, {LoraModule::kGate, LoraModule::kUp}, h, hidden,
                          {{gate, intermediate, intermediate}, {up, intermediate, intermediate}}));
      FGNET_TRY(cuda::GeluTanhMul(gate, up, c * intermediate, gate, stream));
    } else {
      FGNET_TRY(mm.MatMulGeGLU(h, c, hidden, w.gate.bf16, w.up.bf16, intermediate, gate, up));
    }
    FGNET_TRY(adapted_product(l, LoraModule::kDown, gate, intermediate, w.down, hidden, o));
    if (l + 1 < layers.size()) {
      FGNET_TRY(cuda::RMSNormAddToNorm(o, c, hidden, w.post_feedforward_norm, eps, x,
                                       layers[l + 1].input_norm, h, stream));
    } else {
      FGNET_TRY(cuda::RMSNormAddTo(o, c, hidden, w.post_feedforward_norm, eps, x, stream));
    }
  }

  // Logits, kLogitRows rows at a time. Rows that only want their argmax never leave the GPU:
  // their ids do (4 bytes a row). A pass with more logit rows than one chunk (a kAll prefill)
  // copies each chunk out as it goes, synchronising; a graph pass has a single chunk.
  const auto n_logits = static_cast<std::size_t>(shape.logit_rows);
  if (n_logits == 0) return Ok();
  const std::size_t chunk = std::min(kLogitRows, n_logits);
  const LogitsLayout ll = LogitsLayout::For(chunk, vocab);
  const std::size_t ids_at = ll.ids;
  for (std::size_t first = 0; first < n_logits; first += chunk) {
    const std::size_t n = std::min(chunk, n_logits - first);
    FGNET_TRY(cuda::RMSNorm(x, n, hidden, final_norm, eps, h,
                            staging.as<std::int32_t>(sl.logit_rows) + first, stream));
    FGNET_TRY(product(h, n, hidden, lm_head, vocab, logits.as<float>()));
    if (final_softcap > 0.0f)
      FGNET_TRY(cuda::Softcap(logits.as<float>(), n * vocab, final_softcap, stream));
    if (shape.filter) {
      FGNET_TRY(cuda::FilterRows(logits.as<float>(), n, vocab,
                                 staging.as<cuda::RowFilter>(sl.filters) + first,
                                 staging.as<std::uint64_t>(sl.words_at),
                                 staging.as<std::int32_t>(sl.penalized_at), stream));
    }
    if (shape.argmax) {
      FGNET_TRY(cuda::ArgmaxRows(logits.as<float>(), n, vocab, logits.as<std::int32_t>(ids_at),
                                 logits.as<char>(ll.workspace), stream));
      FGNET_TRY(cuda::CudaCheck(
          cudaMemcpyAsync(host_logits.as<std::int32_t>(ids_at), logits.as<std::int32_t>(ids_at),
                          n * sizeof(std::int32_t), cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync (sampled ids)"));
    }
    if (shape.top) {
      FGNET_TRY(cuda::TopRows(logits.as<float>(), n, vocab, logits.as<float>(ll.top_values),
                              logits.as<std::int32_t>(ll.top_ids), logits.as<char>(ll.workspace),
                              stream));
      FGNET_TRY(cuda::CudaCheck(
          cudaMemcpyAsync(host_logits.as<char>(ll.top_values), logits.as<char>(ll.top_values),
                          ll.workspace - ll.top_values, cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync (largest logits)"));
    }
    if (shape.full) {
      FGNET_TRY(cuda::CudaCheck(
          cudaMemcpyAsync(host_logits.as<float>(), logits.as<float>(), n * vocab * sizeof(float),
                          cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync (logits)"));
    }
    if (n_logits > chunk) {
      // Several chunks (never in a graph): hand each one out before the next overwrites it.
      FGNET_TRY(cuda::CudaCheck(cudaStreamSynchronize(stream), "forward pass"));
      for (std::size_t i = 0; i < n; ++i) FGNET_TRY(Deliver(host.logit_dest[first + i], i, ll));
    }
  }
  return Ok();
}

}  // namespace fgnet
