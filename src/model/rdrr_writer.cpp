// Writing RDRR packages (model/rdrr.h): shard layout, hashing while writing, and replacing the
// target directory only once the whole package is in place.
#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "model/io_util.h"
#include "model/rdrr.h"
#include "model/rdrr_manifest.h"
#include "util/sha256.h"

namespace fgnet {
namespace {

using OrderedJson = nlohmann::ordered_json;
using rdrr::kAlignment;
using rdrr::Span;

struct PackageTensor {
  std::string name;
  TensorView view;
  std::string role;
};

struct SideFile {
  std::string name;    // in the package
  std::string source;  // path to copy from
};

std::string ErrnoText() { return std::strerror(errno); }

// Where each tensor's bytes go. Tensors are packed in order at 4096-aligned offsets; a tensor that
// does not fit the rest of the current shard starts a new one; a tensor larger than a whole shard
// fills the rest of the current shard and continues in the next ones, so every piece but the last
// ends exactly at the shard limit (a multiple of 4096).
std::vector<std::vector<Span>> PlanLayout(const std::vector<PackageTensor>& tensors,
                                          std::uint64_t max_shard, std::size_t* num_shards) {
  std::vector<std::vector<Span>> layout;
  std::size_t shard = 0;
  std::uint64_t pos = 0;  // end of the data in `shard`
  const auto align = [](std::uint64_t v) { return (v + kAlignment - 1) / kAlignment * kAlignment; };
  for (const PackageTensor& t : tensors) {
    const std::uint64_t size = t.view.num_bytes();
    std::uint64_t offset = align(pos);
    std::vector<Span> spans;
    if (size <= max_shard) {
      if (offset + size > max_shard) {
        ++shard;
        offset = 0;
      }
      spans.push_back({shard, offset, size});
      pos = offset + size;
    } else {
      if (offset >= max_shard) {
        ++shard;
        offset = 0;
      }
      std::uint64_t left = size;
      while (true) {
        const std::uint64_t take = std::min(left, max_shard - offset);
        spans.push_back({shard, offset, take});
        left -= take;
        pos = offset + take;
        if (left == 0) break;
        ++shard;
        offset = 0;
      }
    }
    layout.push_back(std::move(spans));
  }
  *num_shards = tensors.empty() ? 0 : shard + 1;
  return layout;
}

// A file being written, hashed as its bytes go out.
class HashedFile {
 public:
  HashedFile() = default;
  ~HashedFile() {
    if (f_ != nullptr) std::fclose(f_);
  }
  HashedFile(const HashedFile&) = delete;
  HashedFile& operator=(const HashedFile&) = delete;

  Status Open(const std::string& path) {
    path_ = path;
    f_ = std::fopen(path.c_str(), "wbx");
    if (f_ == nullptr) return MakeError(path, ": cannot create: ", ErrnoText());
    return Ok();
  }
  Status Write(const void* data, std::size_t n) {
    if (n == 0) return Ok();
    if (std::fwrite(data, 1, n, f_) != n) return MakeError(path_, ": write failed: ", ErrnoText());
    hash_.Update(data, n);
    size_ += n;
    return Ok();
  }
  Status PadTo(std::uint64_t offset) {
    static const std::uint8_t kZeros[kAlignment] = {};
    while (size_ < offset) {
      FGNET_TRY(Write(kZeros, static_cast<std::size_t>(
                                  std::min<std::uint64_t>(offset - size_, sizeof(kZeros)))));
    }
    return Ok();
  }
  // Flushes to disk and closes; returns the file's entry.
  Result<rdrr::FileEntry> Close(const std::string& name) {
    const bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
    const int err = errno;
    const bool closed = std::fclose(f_) == 0;
    f_ = nullptr;
    if (!ok || !closed) {
      return MakeError(path_, ": write failed: ", std::strerror(ok ? errno : err));
    }
    return rdrr::FileEntry{name, size_, hash_.FinishHex()};
  }
  std::uint64_t size() const { return size_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
  Sha256 hash_;
  std::uint64_t size_ = 0;
};

Result<rdrr::FileEntry> CopyFile(const std::string& from, const std::string& to,
                                 const std::string& name) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> in(std::fopen(from.c_str(), "rb"), &std::fclose);
  if (in == nullptr) return MakeError(from, ": cannot open: ", ErrnoText());
  HashedFile out;
  FGNET_TRY(out.Open(to));
  std::vector<char> buf(1 << 20);
  std::size_t got = 0;
  while ((got = std::fread(buf.data(), 1, buf.size(), in.get())) > 0) {
    FGNET_TRY(out.Write(buf.data(), got));
  }
  if (std::ferror(in.get()) != 0) return MakeError(from, ": read error");
  return out.Close(name);
}

Status WriteText(const std::string& path, const std::string& text) {
  HashedFile out;
  FGNET_TRY(out.Open(path));
  FGNET_TRY(out.Write(text.data(), text.size()));
  FGNET_TRY(out.Close(""));
  return Ok();
}

std::string StripTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

std::pair<std::string, std::string> SplitPath(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

bool IsPackageFileName(const std::string& name, const std::set<std::string>& listed) {
  if (name == rdrr::kManifestName || listed.contains(name)) return true;
  if (name == "tokenizer.json" || name == "tokenizer_config.json" ||
      name == "generation_config.json") {
    return true;
  }
  // shard_NNNNN.bin
  return name.size() == 15 && name.starts_with("shard_") && name.ends_with(".bin") &&
         std::all_of(name.begin() + 6, name.begin() + 11,
                     [](char c) { return c >= '0' && c <= '9'; });
}

enum class Target : std::uint8_t { kAbsent, kEmpty, kPackage };

// What `dir` holds now; an error when it may not be replaced.
Result<Target> InspectTarget(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return Target::kAbsent;
    return MakeError(dir, ": cannot inspect: ", ErrnoText());
  }
  if (!S_ISDIR(st.st_mode)) {
    return MakeError(dir, ": exists and is not a directory (refusing to overwrite it)");
  }
  std::error_code ec;
  std::vector<std::filesystem::directory_entry> entries;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    entries.push_back(*it);
  }
  if (ec) return MakeError(dir, ": cannot list: ", ec.message());
  if (entries.empty()) return Target::kEmpty;
  const std::string manifest = JoinPath(dir, rdrr::kManifestName);
  if (!IsRegularFile(manifest)) {
    return MakeError(dir, ": not empty and not an RDRR package (refusing to overwrite it)");
  }
  // Files the old manifest lists, where it can be read.
  std::set<std::string> listed;
  if (Result<Json> old = ReadJsonFile(manifest); old.ok() && old->is_object()) {
    for (const char* key : {"shards", "files"}) {
      const auto it = old->find(key);
      if (it == old->end() || !it->is_array()) continue;
      for (const Json& e : *it) {
        if (e.is_object() && e.contains("fileName") && e["fileName"].is_string()) {
          listed.insert(e["fileName"].get<std::string>());
        }
      }
    }
  }
  for (const auto& e : entries) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file(ec) || !IsPackageFileName(name, listed)) {
      return MakeError(dir, ": holds ", QuoteName(name),
                       ", which is not part of an RDRR package (refusing to overwrite it)");
    }
  }
  return Target::kPackage;
}

void SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Moves the finished package `tmp` to `dir`, replacing what InspectTarget found there.
Status Install(const std::string& tmp, const std::string& dir, Target target) {
  std::error_code ec;
  if (target != Target::kPackage) {
    if (::rename(tmp.c_str(), dir.c_str()) != 0) {
      return MakeError(dir, ": cannot move the new package into place: ", ErrnoText());
    }
    return Ok();
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    std::filesystem::remove_all(tmp, ec);  // now the old package
    return Ok();
  }
  if (errno != EINVAL && errno != ENOSYS) {
    return MakeError(dir, ": cannot swap in the new package: ", ErrnoText());
  }
  // No atomic exchange on this file system: move the old package aside first.
  const std::string old = tmp + ".old";
  if (::rename(dir.c_str(), old.c_str()) != 0) {
    return MakeError(dir, ": cannot move the old package aside: ", ErrnoText());
  }
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    const std::string why = ErrnoText();
    ::rename(old.c_str(), dir.c_str());
    return MakeError(dir, ": cannot move the new package into place: ", why);
  }
  std::filesystem::remove_all(old, ec);
  return Ok();
}

// Writes the shards, side files and manifest into `tmp`; `head` holds the type-specific fields.
Status WriteContents(const std::string& dir, const std::string& tmp, OrderedJson head,
                     const std::vector<PackageTensor>& tensors, const std::vector<SideFile>& side,
                     bool with_files, std::uint64_t max_shard) {
  std::size_t num_shards = 0;
  const std::vector<std::vector<Span>> layout = PlanLayout(tensors, max_shard, &num_shards);
  // Pieces in file order: shard by shard, by offset (the plan assigns them in that order).
  struct Piece {
    const PackageTensor* tensor;
    std::uint64_t begin;  // within the tensor
    Span span;
  };
  std::vector<Piece> pieces;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    std::uint64_t begin = 0;
    for (const Span& s : layout[i]) {
      pieces.push_back({&tensors[i], begin, s});
      begin += s.size;
    }
  }
  std::vector<rdrr::FileEntry> shards;
  std::size_t p = 0;
  for (std::size_t shard = 0; shard < num_shards; ++shard) {
    const std::string name = rdrr::ShardFileName(shard);
    HashedFile out;
    FGNET_TRY(out.Open(JoinPath(tmp, name)));
    for (; p < pieces.size() && pieces[p].span.shard == shard; ++p) {
      const Piece& piece = pieces[p];
      FGNET_TRY(out.PadTo(piece.span.offset));
      const auto* data = static_cast<const std::uint8_t*>(piece.tensor->view.data);
      if (piece.span.size > 0 && data == nullptr) {
        return MakeError(dir, ": tensor ", QuoteName(piece.tensor->name), " has no data");
      }
      FGNET_TRY(out.Write(data + piece.begin, piece.span.size));
    }
    FGNET_ASSIGN_OR_RETURN(rdrr::FileEntry entry, out.Close(name));
    shards.push_back(std::move(entry));
  }

  OrderedJson shard_list = OrderedJson::array();
  for (std::size_t i = 0; i < shards.size(); ++i) {
    shard_list.push_back({{"index", i},
                          {"fileName", shards[i].file_name},
                          {"size", shards[i].size},
                          {"hash", shards[i].hash}});
  }
  OrderedJson tensor_map = OrderedJson::object();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const PackageTensor& t = tensors[i];
    const std::vector<Span>& spans = layout[i];
    OrderedJson e = {{"shard", spans[0].shard},
                     {"offset", spans[0].offset},
                     {"size", t.view.num_bytes()},
                     {"shape", t.view.shape},
                     {"dtype", std::string(DTypeName(t.view.dtype))},
                     {"role", t.role}};
    if (spans.size() > 1) {
      OrderedJson list = OrderedJson::array();
      for (const Span& s : spans) {
        list.push_back({{"shard", s.shard}, {"offset", s.offset}, {"size", s.size}});
      }
      e["spans"] = std::move(list);
    }
    tensor_map[t.name] = std::move(e);
  }
  head["shards"] = std::move(shard_list);
  head["tensors"] = std::move(tensor_map);
  if (with_files) {
    OrderedJson files = OrderedJson::array();
    for (const SideFile& s : side) {
      FGNET_ASSIGN_OR_RETURN(const rdrr::FileEntry e,
                             CopyFile(s.source, JoinPath(tmp, s.name), s.name));
      files.push_back({{"fileName", e.file_name}, {"size", e.size}, {"hash", e.hash}});
    }
    head["files"] = std::move(files);
  }
  return WriteText(JoinPath(tmp, rdrr::kManifestName), head.dump(2) + "\n");
}

Status WritePackage(const std::string& dir_arg, OrderedJson head,
                    const std::vector<PackageTensor>& tensors, const std::vector<SideFile>& side,
                    bool with_files, std::uint64_t max_shard) {
  const std::string dir = StripTrailingSlashes(dir_arg);
  if (dir.empty()) return MakeError("RDRR package: empty output path");
  if (max_shard < kAlignment || max_shard % kAlignment != 0) {
    return MakeError(dir, ": max_shard_bytes ", max_shard, " is not a positive multiple of ",
                     kAlignment);
  }
  FGNET_ASSIGN_OR_RETURN(const Target target, InspectTarget(dir));
  const auto [parent, base] = SplitPath(dir);
  std::string tmpl = JoinPath(parent, "." + base + ".tmp-XXXXXX");
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    return MakeError(tmpl, ": cannot create a temporary directory: ", ErrnoText());
  }
  const std::string tmp = buf.data();
  ::chmod(tmp.c_str(), 0755);  // mkdtemp makes it private; a package is an ordinary directory
  Status status = WriteContents(dir, tmp, std::move(head), tensors, side, with_files, max_shard);
  if (status.ok()) status = Install(tmp, dir, target);
  if (!status.ok()) {
    std::error_code ec;
    std::filesystem::remove_all(tmp, ec);
    return status;
  }
  SyncDirectory(parent);
  return Ok();
}

std::string DefaultId(const std::string& id, const std::string& dir) {
  if (!id.empty()) return id;
  return SplitPath(StripTrailingSlashes(dir)).second;
}

// The checkpoint's quantization, or, for quantized weights marked "none", the quantized dtype
// holding the most bytes ("q8_0").
std::string QuantizationOf(const Checkpoint& ck) {
  if (ck.quantization() != "none" && !ck.quantization().empty()) return ck.quantization();
  std::uint64_t best = 0;
  std::string name = "none";
  for (const auto& [dtype, bytes] : ck.tensors().BytesByDType()) {
    if (IsQuantized(dtype) && bytes > best) {
      best = bytes;
      name = std::string(DTypeName(dtype));
      std::transform(name.begin(), name.end(), name.begin(),
                     [](char c) { return static_cast<char>(std::tolower(c)); });
    }
  }
  return name;
}

}  // namespace

Status WriteRdrrModel(const Checkpoint& ck, const std::string& dir,
                      const RdrrWriteOptions& options) {
  std::vector<PackageTensor> tensors;
  for (const auto& [name, entry] : ck.tensors().all()) {
    tensors.push_back({name, entry.view, std::string(rdrr::BaseTensorRole(name))});
  }
  OrderedJson head;
  head["version"] = rdrr::kVersion;
  head["modelId"] = DefaultId(options.model_id, dir);
  head["modelType"] = "base";
  head["architecture"] = rdrr::kArchitecture;
  head["quantization"] = QuantizationOf(ck);
  head["eosTokenIds"] = ck.config().eos_token_ids;
  head["hashAlgorithm"] = rdrr::kHashAlgorithm;
  head["contentHash"] = ck.content_hash();
  if (ck.weights().norms_include_one) head["normsIncludeOne"] = true;
  head["config"] = OrderedJson(Gemma3ConfigToJson(ck.config()));
  std::vector<SideFile> side;
  for (const auto& [name, path] :
       {std::pair<const char*, std::string>{"tokenizer.json", ck.tokenizer_path()},
        {"tokenizer_config.json", ck.tokenizer_config_path()},
        {"generation_config.json", ck.generation_config_path()}}) {
    if (!path.empty()) side.push_back({name, path});
  }
  return WritePackage(dir, std::move(head), tensors, side, /*with_files=*/true,
                      options.max_shard_bytes);
}

Status WriteRdrrAdapter(const LoraAdapter& a, const std::string& dir, const RdrrAdapterInfo& info) {
  const std::string where = a.path.empty() ? (a.name.empty() ? dir : a.name) : a.path;
  if (!rdrr::IsHexDigest(info.base_model_hash)) {
    return MakeError(where, ": the base model hash ", QuoteName(info.base_model_hash),
                     " is not a SHA-256 digest (64 lowercase hex digits)");
  }
  if (a.layers.empty()) return MakeError(where, ": the adapter has no layers");
  if (a.config.r < 0 || !std::isfinite(a.config.lora_alpha)) {
    return MakeError(where, ": the adapter config has r ", a.config.r, " and lora_alpha ",
                     a.config.lora_alpha);
  }
  std::vector<PackageTensor> tensors;
  OrderedJson modules = OrderedJson::object();
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    for (const LoraModule m : kAllLoraModules) {
      const LoraLayer& layer = a.at(l, m);
      if (!layer.active()) continue;
      const std::size_t r = layer.rank;
      const std::string key = rdrr::AdapterModuleKey(l, m);
      if (layer.a.empty() || layer.b.empty() || layer.a.size() % r != 0 ||
          layer.b.size() % r != 0 || !std::isfinite(layer.scale)) {
        return MakeError(where, ": ", key, ": A has ", layer.a.size(), " and B ", layer.b.size(),
                         " values, not multiples of rank ", r, ", or the scale ", layer.scale,
                         " is not finite");
      }
      const auto in = static_cast<std::int64_t>(layer.a.size() / r);
      const auto out = static_cast<std::int64_t>(layer.b.size() / r);
      const auto rank = static_cast<std::int64_t>(r);
      tensors.push_back({rdrr::AdapterTensorKey(l, m, false),
                         TensorView{DType::kF32, {rank, in}, layer.a.data()}, "lora_a"});
      tensors.push_back({rdrr::AdapterTensorKey(l, m, true),
                         TensorView{DType::kF32, {out, rank}, layer.b.data()}, "lora_b"});
      modules[key] = {{"rank", r}, {"scale", static_cast<double>(layer.scale)}};
    }
  }
  std::sort(tensors.begin(), tensors.end(),
            [](const PackageTensor& x, const PackageTensor& y) { return x.name < y.name; });
  OrderedJson config;
  config["rank"] = a.config.r;
  config["alpha"] = a.config.lora_alpha;
  config["targetModules"] =
      a.config.target_modules.empty() ? a.adapted_modules() : a.config.target_modules;
  config["useRslora"] = a.config.use_rslora;
  config["numLayers"] = a.layers.size();
  if (a.is_activated()) config["invocationTokens"] = a.config.alora_invocation_tokens;

  OrderedJson head;
  head["version"] = rdrr::kVersion;
  head["modelId"] = DefaultId(info.model_id.empty() ? a.name : info.model_id, dir);
  head["modelType"] = "lora";
  head["adapterType"] = "lora";
  head["architecture"] = rdrr::kArchitecture;
  head["quantization"] = "none";
  head["hashAlgorithm"] = rdrr::kHashAlgorithm;
  head["baseModel"] =
      info.base_model_id.empty() ? a.config.base_model_name_or_path : info.base_model_id;
  head["baseModelHash"] = info.base_model_hash;
  head["contentHash"] = LoraContentHash(a);
  head["loraConfig"] = std::move(config);
  head["loraModules"] = std::move(modules);
  return WritePackage(dir, std::move(head), tensors, {}, /*with_files=*/false,
                      RdrrWriteOptions{}.max_shard_bytes);
}

}  // namespace fgnet
