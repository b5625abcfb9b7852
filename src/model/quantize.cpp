#include "model/quantize.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/aligned.h"
#include "backend/cpu/quant.h"
#include "model/io_util.h"

namespace fgnet {
namespace {

// What QuantizeCheckpoint allocates, plus the source storage that the kept tensors view.
struct QuantizedStorage {
  cpu::AlignedVector<std::uint8_t> bytes;
  std::shared_ptr<const void> source;
};

// One matrix to convert.
struct Job {
  std::string name;
  const TensorView* source = nullptr;
  DType dtype = DType::kF32;
  std::size_t rows = 0, cols = 0;
  std::size_t offset = 0;      // into QuantizedStorage::bytes
  std::size_t first_unit = 0;  // work units [first_unit, first_unit + units) of the loop
  std::size_t units = 0;
};

constexpr std::size_t kRowsPerUnit = 64;

bool AnyQuantized(const Gemma3Weights& w) {
  if (IsQuantized(w.embed_tokens.dtype) || IsQuantized(w.lm_head.dtype)) return true;
  for (const Gemma3LayerWeights& l : w.layers) {
    for (const TensorView* v :
         {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) {
      if (IsQuantized(v->dtype)) return true;
    }
  }
  return false;
}

}  // namespace

Result<QuantScheme> ParseQuantScheme(std::string_view name) {
  for (QuantScheme s : {QuantScheme::kQ8_0, QuantScheme::kQ4_0, QuantScheme::kQ4_K}) {
    if (name == QuantSchemeName(s)) return s;
  }
  return MakeError("unknown quantization scheme ", QuoteName(name),
                   " (expected q8_0, q4_0 or q4_k)");
}

std::string_view QuantSchemeName(QuantScheme scheme) {
  switch (scheme) {
    case QuantScheme::kQ8_0:
      return "q8_0";
    case QuantScheme::kQ4_0:
      return "q4_0";
    case QuantScheme::kQ4_K:
      return "q4_k";
  }
  return "?";
}

DType QuantizedDType(QuantScheme scheme, bool embedding, std::int64_t in_features, DType stored) {
  DType want = DType::kQ8_0;
  switch (scheme) {
    case QuantScheme::kQ8_0:
      want = DType::kQ8_0;
      break;
    case QuantScheme::kQ4_0:
      want = embedding ? DType::kQ8_0 : DType::kQ4_0;
      break;
    case QuantScheme::kQ4_K:
      if (embedding) {
        want = in_features % 256 == 0 ? DType::kQ6_K : DType::kQ8_0;
      } else {
        want = in_features % 256 == 0 ? DType::kQ4_K : DType::kQ4_0;
      }
      break;
  }
  if (in_features <= 0 || static_cast<std::size_t>(in_features) % DTypeBlockElements(want) != 0) {
    return stored;
  }
  return want;
}

Result<Checkpoint> QuantizeCheckpoint(const Checkpoint& source, QuantScheme scheme,
                                      ThreadPool& pool) {
  const Gemma3Weights& w = source.weights();
  if (source.quantization() != "none" || AnyQuantized(w)) {
    return MakeError(source.dir(), ": the checkpoint is already quantized (",
                     source.quantization() != "none" ? source.quantization() : "quantized weights",
                     "); quantize the float checkpoint it was made from");
  }
  // The bound matrices, by the address of their data (names differ between layouts; a tied
  // lm_head is the embedding itself).
  std::map<const void*, bool> matrices;  // data -> is an embedding / output matrix
  matrices[w.embed_tokens.data] = true;
  if (!source.config().tie_word_embeddings) matrices[w.lm_head.data] = true;
  for (const Gemma3LayerWeights& l : w.layers) {
    for (const TensorView* v :
         {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) {
      matrices[v->data] = false;
    }
  }

  std::vector<Job> jobs;
  std::size_t total_bytes = 0, total_units = 0, max_cols = 0;
  for (const auto& [name, entry] : source.tensors().all()) {
    const auto it = matrices.find(entry.view.data);
    if (it == matrices.end() || entry.view.rank() != 2) continue;
    const TensorView& v = entry.view;
    const DType dtype = QuantizedDType(scheme, it->second, v.dim(1), v.dtype);
    if (dtype == v.dtype) continue;
    Job job;
    job.name = name;
    job.source = &entry.view;
    job.dtype = dtype;
    job.rows = static_cast<std::size_t>(v.dim(0));
    job.cols = static_cast<std::size_t>(v.dim(1));
    job.offset = total_bytes;
    job.first_unit = total_units;
    job.units = (job.rows + kRowsPerUnit - 1) / kRowsPerUnit;
    total_bytes += (job.rows * DTypeRowBytes(dtype, job.cols) + cpu::kAlignment - 1) /
                   cpu::kAlignment * cpu::kAlignment;
    total_units += job.units;
    max_cols = std::max(max_cols, job.cols);
    jobs.push_back(std::move(job));
  }

  auto storage = std::make_shared<QuantizedStorage>();
  storage->source = source.storage();
  storage->bytes.resize(total_bytes);
  std::vector<std::vector<float>> rows(pool.num_threads(), std::vector<float>(max_cols));
  std::atomic<std::size_t> bad_job{jobs.size()};  // a job with a non-finite weight
  pool.ParallelFor(total_units, 1, [&](std::size_t begin, std::size_t end, std::size_t thread) {
    float* row = rows[thread].data();
    std::size_t j = 0;
    for (std::size_t unit = begin; unit < end; ++unit) {
      while (unit >= jobs[j].first_unit + jobs[j].units) ++j;
      const Job& job = jobs[j];
      const std::size_t src_row_bytes = DTypeRowBytes(job.source->dtype, job.cols);
      const std::size_t dst_row_bytes = DTypeRowBytes(job.dtype, job.cols);
      const std::size_t r0 = (unit - job.first_unit) * kRowsPerUnit;
      const std::size_t r1 = std::min(job.rows, r0 + kRowsPerUnit);
      for (std::size_t r = r0; r < r1; ++r) {
        cpu::DequantizeRow(job.source->dtype,
                           static_cast<const std::uint8_t*>(job.source->data) + r * src_row_bytes,
                           job.cols, row);
        bool finite = true;
        for (std::size_t k = 0; k < job.cols; ++k) finite = finite && std::isfinite(row[k]);
        if (!finite) {
          std::size_t expected = jobs.size();
          bad_job.compare_exchange_strong(expected, j);
          std::fill(row, row + job.cols, 0.0f);
        }
        cpu::QuantizeRow(job.dtype, row, job.cols,
                         storage->bytes.data() + job.offset + r * dst_row_bytes);
      }
    }
  });
  if (bad_job.load() < jobs.size()) {
    const Job& job = jobs[bad_job.load()];
    return MakeError(source.tensors().FileOf(job.name), ": tensor ", QuoteName(job.name),
                     " holds a NaN or infinity and cannot be quantized");
  }

  Checkpoint::Parts parts;
  parts.format = CheckpointFormat::kInMemory;
  parts.path = source.dir();
  parts.config_path = source.config_path();
  parts.config = source.config();
  parts.tensors = TensorIndex(source.tensors().source());
  const std::string note =
      std::string(" (") + std::string(QuantSchemeName(scheme)) + ", in memory)";
  std::map<std::string, const Job*> by_name;
  for (const Job& job : jobs) by_name[job.name] = &job;
  for (const auto& [name, entry] : source.tensors().all()) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) {
      parts.tensors.Add(name, entry.view, entry.file);
      continue;
    }
    const Job& job = *it->second;
    TensorView view;
    view.dtype = job.dtype;
    view.shape = entry.view.shape;
    view.data = storage->bytes.data() + job.offset;
    parts.tensors.Add(name, std::move(view), entry.file + note);
  }
  parts.storage = std::move(storage);
  parts.side_dir = source.side_dir();
  parts.norms_include_one = w.norms_include_one;
  parts.content_hash = source.content_hash();
  parts.quantization = std::string(QuantSchemeName(scheme));
  return Checkpoint::FromTensors(std::move(parts));
}

}  // namespace fgnet
