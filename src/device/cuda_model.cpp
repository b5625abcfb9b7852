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

#include "device/cuda_model_impl.h"
#include "model/gemma3_model.h"

namespace fgnet {

using cuda_model_internal::ActivationLayout;
using cuda_model_internal::AlignUp;
using cuda_model_internal::DeviceAdapter;
using cuda_model_internal::GraphEntry;
using cuda_model_internal::HostLoraGroup;
using cuda_model_internal::kGraphPositionStep;
using cuda_model_internal::kLogitRows;
using cuda_model_internal::kMaxGraphChunkRows;
using cuda_model_internal::kMaxGraphRows;
using cuda_model_internal::kMaxGraphs;
using cuda_model_internal::kMaxPassRows;
using cuda_model_internal::kMaxResidentAdapters;
using cuda_model_internal::LogitDest;
using cuda_model_internal::LogitsLayout;
using cuda_model_internal::PassShape;
using cuda_model_internal::StagingLayout;
using cuda_model_internal::StreamState;

namespace {

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

}  // namespace

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

bool CudaModel::SupportsKVType(DType dtype) const {
  return dtype == DType::kF32 || dtype == DType::kBF16;
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
  for (const LayerWeights& w : m.layers) {
    for (const DeviceMatrix* matrix : {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down})
      m.bf16_layers = m.bf16_layers && !matrix->quantized();
  }
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
    for (const HostLoraGroup& g : lora) {
      shape.lora_group_rows =
          std::max(shape.lora_group_rows, static_cast<std::int32_t>(g.rows.size()));
    }
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
    std::vector<std::int32_t>& per_row = host.row_adapters;
    per_row.assign(c, 0);
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
  const std::size_t floats = ActivationLayout::For(c, hidden, q_dim, kv_dim, intermediate).floats;
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
    // A later pool may reuse the memory with other blocks.
    const std::int64_t block[2] = {pool.layout().block_size,
                                   static_cast<std::int64_t>(pool.layout().dtype)};
    key.append(reinterpret_cast<const char*>(block), sizeof(block));
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

}  // namespace fgnet
