// Reading RDRR packages (model/rdrr.h): manifest, verification of shards and side files, mapping
// the shards, and handing the tensors to Checkpoint::FromTensors or into a LoraAdapter.
#include "model/rdrr.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "model/io_util.h"
#include "model/rdrr_manifest.h"
#include "util/mapped_file.h"
#include "util/sha256.h"

namespace fgnet {
namespace {

using rdrr::Manifest;
using rdrr::Span;

// What the tensor views of an opened package point into.
struct PackageStorage {
  std::vector<MappedFile> shards;
  // Tensors split over several shards: their pieces mapped back to back (address, length) ...
  std::vector<std::pair<void*, std::size_t>> joined;
  // ... or, where the pages do not allow that, copied.
  std::vector<std::unique_ptr<std::uint64_t[]>> copies;

  PackageStorage() = default;
  PackageStorage(const PackageStorage&) = delete;
  PackageStorage& operator=(const PackageStorage&) = delete;
  ~PackageStorage() {
    for (const auto& [addr, length] : joined) ::munmap(addr, length);
  }
};

struct Package {
  std::string dir;
  std::string manifest_path;
  Manifest manifest;
  std::shared_ptr<PackageStorage> storage;
  TensorIndex tensors;
};

// Zero-size tensors point here rather than at nothing.
alignas(64) const std::uint8_t kEmptyTensor[64] = {};

std::string ShardRef(std::size_t i, const char* field) {
  return std::string(rdrr::kManifestName) + " shards[" + std::to_string(i) + "]." + field;
}

Result<Manifest> ReadManifest(const std::string& dir, const std::string& path) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return MakeError(dir, ": cannot open RDRR package: ", std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return MakeError(dir, ": not an RDRR package directory");
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return MakeError(path, ": missing (an RDRR package needs manifest.json)");
  }
  if (static_cast<std::uint64_t>(st.st_size) > rdrr::kMaxManifestBytes) {
    return MakeError(path, ": ", st.st_size, " bytes is implausibly large for a manifest");
  }
  FGNET_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  Result<Json> json = ParseJson(text, path);
  if (!json.ok()) return Error(OneLine(json.error().message()));
  return rdrr::ParseManifest(*json, path);
}

Status CheckHash(const std::string& path, const std::string& actual, const std::string& expected,
                 const std::string& ref) {
  if (actual != expected) {
    return MakeError(path, ": SHA-256 ", actual, " does not match ", ref, " ", expected,
                     " (the file is corrupt)");
  }
  return Ok();
}

// Maps every shard and checks its size and hash.
Status MapShards(const std::string& dir, const Manifest& m, PackageStorage* storage) {
  for (std::size_t i = 0; i < m.shards.size(); ++i) {
    const rdrr::FileEntry& e = m.shards[i];
    const std::string path = JoinPath(dir, e.file_name);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      return MakeError(path, ": missing (listed in ", ShardRef(i, "fileName"),
                       "): ", std::strerror(errno));
    }
    if (static_cast<std::uint64_t>(st.st_size) != e.size) {
      return MakeError(path, ": ", st.st_size, " bytes, but ", ShardRef(i, "size"), " is ", e.size,
                       " (truncated or replaced)");
    }
    FGNET_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
    if (file.size() != e.size) {
      return MakeError(path, ": ", file.size(), " bytes, but ", ShardRef(i, "size"), " is ", e.size,
                       " (truncated or replaced)");
    }
    Sha256 h;
    h.Update(file.data(), file.size());
    FGNET_TRY(CheckHash(path, h.FinishHex(), e.hash, ShardRef(i, "hash")));
    storage->shards.push_back(std::move(file));
  }
  return Ok();
}

Status CheckSideFiles(const std::string& dir, const Manifest& m) {
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    const rdrr::FileEntry& e = m.files[i];
    const std::string path = JoinPath(dir, e.file_name);
    const std::string ref = std::string(rdrr::kManifestName) + " files[" + std::to_string(i) + "]";
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return MakeError(path, ": missing (listed in ", ref, ".fileName)");
    }
    if (static_cast<std::uint64_t>(st.st_size) != e.size) {
      return MakeError(path, ": ", st.st_size, " bytes, but ", ref, ".size is ", e.size,
                       " (truncated or replaced)");
    }
    FGNET_ASSIGN_OR_RETURN(const std::string hash, Sha256File(path));
    FGNET_TRY(CheckHash(path, hash, e.hash, ref + ".hash"));
  }
  return Ok();
}

// One contiguous view of a tensor split over several shards: the pieces mapped back to back
// where each starts on a page boundary and all but the last are whole pages, else a copy.
const void* JoinSpans(const std::string& dir, const Manifest& m, const rdrr::TensorEntry& t,
                      PackageStorage* storage) {
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  bool mappable = page > 0;
  for (std::size_t i = 0; mappable && i < t.spans.size(); ++i) {
    const Span& s = t.spans[i];
    mappable = s.offset % page == 0 && (i + 1 == t.spans.size() || s.size % page == 0);
  }
  if (mappable) {
    const std::size_t length = static_cast<std::size_t>((t.size + page - 1) / page * page);
    void* base = ::mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bool ok = base != MAP_FAILED;
    std::uint64_t done = 0;
    for (std::size_t i = 0; ok && i < t.spans.size(); ++i) {
      const Span& s = t.spans[i];
      const std::string path = JoinPath(dir, m.shards[s.shard].file_name);
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      ok = fd >= 0;
      if (ok && s.size > 0) {
        void* want = static_cast<std::uint8_t*>(base) + done;
        void* got = ::mmap(want, static_cast<std::size_t>(s.size), PROT_READ,
                           MAP_PRIVATE | MAP_FIXED, fd, static_cast<off_t>(s.offset));
        ok = got == want;
      }
      if (fd >= 0) ::close(fd);
      done += s.size;
    }
    if (ok) {
      storage->joined.emplace_back(base, length);
      return base;
    }
    if (base != MAP_FAILED) ::munmap(base, length);
  }
  auto copy = std::make_unique<std::uint64_t[]>(static_cast<std::size_t>((t.size + 7) / 8));
  auto* out = reinterpret_cast<std::uint8_t*>(copy.get());
  for (const Span& s : t.spans) {
    if (s.size == 0) continue;
    std::memcpy(out, storage->shards[s.shard].data() + s.offset, static_cast<std::size_t>(s.size));
    out += s.size;
  }
  const void* data = copy.get();
  storage->copies.push_back(std::move(copy));
  return data;
}

// Reads and checks the manifest (the caller checks the package type before the shards are
// read), then maps and verifies the shards and side files and builds the tensor views.
Result<Package> MapPackage(const std::string& dir, const std::string& manifest_path,
                           Manifest manifest) {
  Package p;
  p.dir = dir;
  p.manifest_path = manifest_path;
  p.manifest = std::move(manifest);
  p.storage = std::make_shared<PackageStorage>();
  const Manifest& m = p.manifest;
  FGNET_TRY(MapShards(dir, m, p.storage.get()));
  FGNET_TRY(CheckSideFiles(dir, m));
  p.tensors = TensorIndex(manifest_path);
  for (const auto& [name, t] : m.tensors) {
    const void* data = nullptr;
    if (t.size == 0) {
      data = kEmptyTensor;
    } else if (t.spans.size() == 1) {
      data = p.storage->shards[t.spans[0].shard].data() + t.spans[0].offset;
    } else {
      data = JoinSpans(dir, m, t, p.storage.get());
    }
    p.tensors.Add(name, TensorView{t.dtype, t.shape, data},
                  JoinPath(dir, m.shards[t.spans[0].shard].file_name));
  }
  return p;
}

std::string ManifestPath(const std::string& dir) { return JoinPath(dir, rdrr::kManifestName); }

// f32 values of an adapter tensor (F32, F16 or BF16).
std::vector<float> ReadFloats(const TensorView& v) {
  const auto n = static_cast<std::size_t>(v.num_elements());
  std::vector<float> out(n);
  if (v.dtype == DType::kF32) {
    if (n > 0) std::memcpy(out.data(), v.data, n * sizeof(float));
    return out;
  }
  const auto* bytes = static_cast<const std::uint8_t*>(v.data);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint16_t h;
    std::memcpy(&h, bytes + 2 * i, 2);
    out[i] = v.dtype == DType::kBF16 ? BF16ToF32(h) : F16ToF32(h);
  }
  return out;
}

}  // namespace

Result<Checkpoint> OpenRdrrCheckpoint(const std::string& dir) {
  const std::string manifest_path = ManifestPath(dir);
  FGNET_ASSIGN_OR_RETURN(Manifest m, ReadManifest(dir, manifest_path));
  if (m.is_lora) {
    return MakeError(manifest_path,
                     ": modelType: \"lora\": this package is a LoRA adapter, not a model (load it "
                     "as an adapter on its base model)");
  }
  FGNET_ASSIGN_OR_RETURN(Package p, MapPackage(dir, manifest_path, std::move(m)));
  Checkpoint::Parts parts;
  parts.format = CheckpointFormat::kRdrr;
  parts.path = dir;
  parts.config_path = manifest_path;
  parts.config = p.manifest.config;
  parts.tensors = std::move(p.tensors);
  parts.storage = std::move(p.storage);
  parts.side_dir = dir;
  parts.norms_include_one = p.manifest.norms_include_one;
  parts.content_hash = p.manifest.content_hash;
  parts.quantization = p.manifest.quantization;
  return Checkpoint::FromTensors(std::move(parts));
}

Result<LoraAdapter> LoadRdrrAdapter(const std::string& dir, const Gemma3Config& base,
                                    const std::string& base_content_hash) {
  const std::string manifest_path = ManifestPath(dir);
  FGNET_ASSIGN_OR_RETURN(Manifest m, ReadManifest(dir, manifest_path));
  if (!m.is_lora) {
    return MakeError(manifest_path,
                     ": modelType: \"base\": this package is a base model, not a LoRA adapter "
                     "(open it as a model)");
  }
  if (!base_content_hash.empty() && m.base_model_hash != base_content_hash) {
    return MakeError(dir, ": adapter ", QuoteName(m.model_id), " was built for base ",
                     m.base_model_hash, " but the model is ", base_content_hash);
  }
  if (static_cast<std::int64_t>(m.num_layers) != base.num_hidden_layers) {
    return MakeError(manifest_path, ": loraConfig.numLayers: ", m.num_layers,
                     " but the base model has ", base.num_hidden_layers, " layers");
  }
  FGNET_ASSIGN_OR_RETURN(Package p, MapPackage(dir, manifest_path, std::move(m)));
  const Manifest& pm = p.manifest;

  LoraAdapter a;
  a.name = pm.model_id;
  a.path = dir;
  a.format = "rdrr";
  a.config = pm.lora_config;
  a.base_model_hash = pm.base_model_hash;
  a.layers.resize(pm.num_layers);
  for (const auto& [where, e] : pm.modules) {
    const auto [layer, module] = where;
    const auto [out, in] = LoraModuleShape(base, module);
    const auto rank = static_cast<std::int64_t>(e.rank);
    LoraLayer& dst = a.layers[layer][static_cast<std::size_t>(module)];
    dst.rank = e.rank;
    dst.scale = e.scale;
    for (const bool is_b : {false, true}) {
      const std::string name = rdrr::AdapterTensorKey(layer, module, is_b);
      const TensorView* v = p.tensors.Find(name);
      const std::vector<std::int64_t> want =
          is_b ? std::vector<std::int64_t>{out, rank} : std::vector<std::int64_t>{rank, in};
      if (v->shape != want) {
        return MakeError(manifest_path, ": ", rdrr::JsonPathChild("tensors", name),
                         ".shape: ", ShapeToString(v->shape), " does not fit the base model's ",
                         LoraModuleName(module), " weight [", out, ", ", in, "] (expected ",
                         ShapeToString(want), ")");
      }
      (is_b ? dst.b : dst.a) = ReadFloats(*v);
    }
  }
  a.content_hash = LoraContentHash(a);
  if (a.content_hash != pm.content_hash) {
    return MakeError(manifest_path, ": contentHash: ", pm.content_hash,
                     " differs from the hash of the adapter's values ", a.content_hash);
  }
  FGNET_TRY(ValidateLoraAdapter(a, base));
  return a;
}

bool IsRdrrPackage(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && IsRegularFile(ManifestPath(path));
}

}  // namespace fgnet
