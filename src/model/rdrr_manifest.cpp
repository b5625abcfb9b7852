#include "model/rdrr_manifest.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <tuple>

#include "model/io_util.h"
#include "tensor/tensor.h"

namespace fgnet::rdrr {
namespace {

constexpr std::size_t kMaxPathKey = 200;
constexpr std::int64_t kMaxDim = std::int64_t{1} << 40;
constexpr std::uint64_t kMaxElements = std::uint64_t{1} << 52;
constexpr std::uint64_t kMaxLayers = 1 << 16;
constexpr std::uint64_t kMaxRank = 1 << 20;

bool IsIdentifier(std::string_view key) {
  if (key.empty() || key.size() > kMaxPathKey) return false;
  for (std::size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string Elem(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

std::string QuoteJson(std::string_view text) {
  return Json(std::string(text)).dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Typed access to the members of a JSON object, with errors naming the manifest and JSON path.
class Fields {
 public:
  explicit Fields(const std::string& source) : source_(source) {}

  template <class... Parts>
  Error Fail(const std::string& path, const Parts&... parts) const {
    if (path.empty()) return MakeError(source_, ": ", parts...);
    return MakeError(source_, ": ", path, ": ", parts...);
  }

  // The member `key` of `object` (at `path`); nullptr when absent and not required.
  Result<const Json*> Get(const Json& object, const std::string& path, std::string_view key,
                          bool required = true) const {
    const auto it = object.find(key);
    if (it == object.end()) {
      if (required) return Fail(JsonPathChild(path, key), "missing");
      return static_cast<const Json*>(nullptr);
    }
    return &*it;
  }

  Status ExpectObject(const Json& v, const std::string& path) const {
    if (!v.is_object()) return Fail(path, "expected an object, got ", DescribeJson(v));
    return Ok();
  }
  Status ExpectArray(const Json& v, const std::string& path) const {
    if (!v.is_array()) return Fail(path, "expected an array, got ", DescribeJson(v));
    return Ok();
  }

  Result<std::string> String(const Json& v, const std::string& path) const {
    if (!v.is_string()) return Fail(path, "expected a string, got ", DescribeJson(v));
    return v.get<std::string>();
  }
  Result<std::uint64_t> Unsigned(const Json& v, const std::string& path) const {
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0)) {
      return Fail(path, "expected a non-negative integer, got ", DescribeJson(v));
    }
    return v.get<std::uint64_t>();
  }
  Result<double> Number(const Json& v, const std::string& path) const {
    if (!v.is_number() || !std::isfinite(v.get<double>())) {
      return Fail(path, "expected a finite number, got ", DescribeJson(v));
    }
    return v.get<double>();
  }
  Result<bool> Bool(const Json& v, const std::string& path) const {
    if (!v.is_boolean()) return Fail(path, "expected true or false, got ", DescribeJson(v));
    return v.get<bool>();
  }

  // Member shortcuts.
  Result<std::string> StringAt(const Json& o, const std::string& path, std::string_view key) const {
    FGNET_ASSIGN_OR_RETURN(const Json* v, Get(o, path, key));
    return String(*v, JsonPathChild(path, key));
  }
  Result<std::uint64_t> UnsignedAt(const Json& o, const std::string& path,
                                   std::string_view key) const {
    FGNET_ASSIGN_OR_RETURN(const Json* v, Get(o, path, key));
    return Unsigned(*v, JsonPathChild(path, key));
  }
  // A string that must equal `expected`.
  Status ConstantAt(const Json& o, const std::string& path, std::string_view key,
                    std::string_view expected) const {
    FGNET_ASSIGN_OR_RETURN(const std::string value, StringAt(o, path, key));
    if (value != expected) {
      return Fail(JsonPathChild(path, key), QuoteJson(value.substr(0, 40)),
                  " is not supported (expected ", QuoteJson(expected), ")");
    }
    return Ok();
  }
  Result<std::string> HashAt(const Json& o, const std::string& path, std::string_view key) const {
    FGNET_ASSIGN_OR_RETURN(std::string value, StringAt(o, path, key));
    if (!IsHexDigest(value)) {
      return Fail(JsonPathChild(path, key), QuoteJson(value.substr(0, 80)),
                  " is not a SHA-256 digest (64 lowercase hex digits)");
    }
    return value;
  }

 private:
  const std::string& source_;
};

Result<FileEntry> ParseFileEntry(const Fields& f, const Json& v, const std::string& path) {
  FGNET_TRY(f.ExpectObject(v, path));
  FileEntry e;
  FGNET_ASSIGN_OR_RETURN(e.file_name, f.StringAt(v, path, "fileName"));
  if (!IsPlainFileName(e.file_name) || e.file_name == kManifestName) {
    return f.Fail(JsonPathChild(path, "fileName"), QuoteJson(e.file_name.substr(0, 80)),
                  " is not a plain file name of the package");
  }
  FGNET_ASSIGN_OR_RETURN(e.size, f.UnsignedAt(v, path, "size"));
  FGNET_ASSIGN_OR_RETURN(e.hash, f.HashAt(v, path, "hash"));
  return e;
}

Result<std::vector<std::int64_t>> ParseShape(const Fields& f, const Json& v,
                                             const std::string& path) {
  FGNET_TRY(f.ExpectArray(v, path));
  if (v.size() > 8) return f.Fail(path, "has ", v.size(), " dimensions (at most 8)");
  std::vector<std::int64_t> shape;
  for (std::size_t i = 0; i < v.size(); ++i) {
    FGNET_ASSIGN_OR_RETURN(const std::uint64_t d, f.Unsigned(v[i], Elem(path, i)));
    if (d > static_cast<std::uint64_t>(kMaxDim)) {
      return f.Fail(Elem(path, i), d, " is implausibly large");
    }
    shape.push_back(static_cast<std::int64_t>(d));
  }
  return shape;
}

// The shard, offset and size of a tensor entry or of one of its spans (the extent unchecked).
Result<Span> ParseLocation(const Fields& f, const Json& v, const std::string& path,
                           const std::vector<FileEntry>& shards) {
  FGNET_TRY(f.ExpectObject(v, path));
  Span s;
  FGNET_ASSIGN_OR_RETURN(const std::uint64_t shard, f.UnsignedAt(v, path, "shard"));
  if (shard >= shards.size()) {
    return f.Fail(JsonPathChild(path, "shard"), shard, " is not a shard (the package has ",
                  shards.size(), ")");
  }
  s.shard = static_cast<std::size_t>(shard);
  FGNET_ASSIGN_OR_RETURN(s.offset, f.UnsignedAt(v, path, "offset"));
  if (s.offset % kAlignment != 0) {
    return f.Fail(JsonPathChild(path, "offset"), s.offset, " is not ", kAlignment, "-aligned");
  }
  FGNET_ASSIGN_OR_RETURN(s.size, f.UnsignedAt(v, path, "size"));
  return s;
}

Status CheckExtent(const Fields& f, const Span& s, const std::string& path,
                   const std::vector<FileEntry>& shards) {
  const FileEntry& shard = shards[s.shard];
  if (s.offset > shard.size || s.size > shard.size - s.offset) {
    return f.Fail(path, "bytes [", s.offset, ", ", s.offset + s.size, ") exceed shard ", s.shard,
                  " (", shard.file_name, ", ", shard.size, " bytes)");
  }
  return Ok();
}

Result<TensorEntry> ParseTensor(const Fields& f, const Json& v, const std::string& path,
                                const std::vector<FileEntry>& shards) {
  FGNET_TRY(f.ExpectObject(v, path));
  TensorEntry t;
  FGNET_ASSIGN_OR_RETURN(const std::string dtype, f.StringAt(v, path, "dtype"));
  const std::optional<DType> parsed = ParseDTypeName(dtype);
  if (!parsed) {
    return f.Fail(JsonPathChild(path, "dtype"), "unknown dtype ", QuoteJson(dtype.substr(0, 40)));
  }
  t.dtype = *parsed;
  FGNET_ASSIGN_OR_RETURN(const Json* shape, f.Get(v, path, "shape"));
  FGNET_ASSIGN_OR_RETURN(t.shape, ParseShape(f, *shape, JsonPathChild(path, "shape")));
  FGNET_ASSIGN_OR_RETURN(const Span whole, ParseLocation(f, v, path, shards));
  t.size = whole.size;
  Result<std::uint64_t> expected = TensorBytes(t.dtype, t.shape);
  if (!expected.ok()) return f.Fail(path, expected.error().message());
  if (t.size != *expected) {
    return f.Fail(JsonPathChild(path, "size"), t.size, " does not match shape ",
                  ShapeToString(t.shape), " of ", dtype, " (", *expected, " bytes)");
  }
  FGNET_ASSIGN_OR_RETURN(t.role, f.StringAt(v, path, "role"));

  FGNET_ASSIGN_OR_RETURN(const Json* spans, f.Get(v, path, "spans", /*required=*/false));
  if (spans == nullptr) {
    FGNET_TRY(CheckExtent(f, whole, path, shards));
    t.spans = {whole};
    return t;
  }
  const std::string spans_path = JsonPathChild(path, "spans");
  FGNET_TRY(f.ExpectArray(*spans, spans_path));
  if (spans->empty()) return f.Fail(spans_path, "is empty");
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < spans->size(); ++i) {
    const std::string span_path = Elem(spans_path, i);
    FGNET_ASSIGN_OR_RETURN(const Span s, ParseLocation(f, (*spans)[i], span_path, shards));
    FGNET_TRY(CheckExtent(f, s, span_path, shards));
    total += s.size;  // each size is at most its shard's, so the sum cannot wrap in practice
    if (total > t.size) {
      return f.Fail(spans_path, "the pieces hold more than the tensor's ", t.size, " bytes");
    }
    t.spans.push_back(s);
  }
  if (t.spans[0].shard != whole.shard || t.spans[0].offset != whole.offset) {
    return f.Fail(Elem(spans_path, 0), "starts at shard ", t.spans[0].shard, " offset ",
                  t.spans[0].offset, " but the tensor's shard and offset are ", whole.shard,
                  " and ", whole.offset);
  }
  if (total != t.size) {
    return f.Fail(spans_path, "the pieces hold ", total, " bytes but the tensor has ", t.size);
  }
  return t;
}

// No two tensors may share bytes.
Status CheckNoOverlap(const Fields& f, const std::map<std::string, TensorEntry>& tensors) {
  struct Piece {
    std::size_t shard;
    std::uint64_t begin;
    std::uint64_t end;
    const std::string* name;
  };
  std::vector<Piece> pieces;
  for (const auto& [name, t] : tensors) {
    for (const Span& s : t.spans) {
      if (s.size > 0) pieces.push_back({s.shard, s.offset, s.offset + s.size, &name});
    }
  }
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) {
    return std::tie(a.shard, a.begin) < std::tie(b.shard, b.begin);
  });
  for (std::size_t i = 1; i < pieces.size(); ++i) {
    const Piece& prev = pieces[i - 1];
    const Piece& cur = pieces[i];
    if (cur.shard == prev.shard && cur.begin < prev.end) {
      return f.Fail(JsonPathChild("tensors", *cur.name), "bytes [", cur.begin, ", ", cur.end,
                    ") of shard ", cur.shard, " overlap tensor ", QuoteJson(*prev.name));
    }
  }
  return Ok();
}

bool IsQuantizationName(std::string_view q) {
  if (q.empty() || q.size() > 32) return false;
  return std::all_of(q.begin(), q.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

Status ParseBase(const Fields& f, const Json& json, const std::string& source, Manifest* m) {
  FGNET_ASSIGN_OR_RETURN(const Json* config, f.Get(json, "", "config"));
  FGNET_TRY(f.ExpectObject(*config, "config"));
  FGNET_ASSIGN_OR_RETURN(m->config, ParseGemma3Config(*config, source + ": config"));

  FGNET_ASSIGN_OR_RETURN(const Json* eos, f.Get(json, "", "eosTokenIds"));
  FGNET_TRY(f.ExpectArray(*eos, "eosTokenIds"));
  std::vector<std::int64_t> eos_ids;
  for (std::size_t i = 0; i < eos->size(); ++i) {
    FGNET_ASSIGN_OR_RETURN(const std::uint64_t id, f.Unsigned((*eos)[i], Elem("eosTokenIds", i)));
    eos_ids.push_back(static_cast<std::int64_t>(id));
  }
  if (eos_ids != m->config.eos_token_ids) {
    return f.Fail("eosTokenIds", DescribeJson(*eos), " disagrees with config.eos_token_id ",
                  DescribeJson(Json(m->config.eos_token_ids)));
  }

  FGNET_ASSIGN_OR_RETURN(const Json* files, f.Get(json, "", "files", /*required=*/false));
  if (files != nullptr) {
    FGNET_TRY(f.ExpectArray(*files, "files"));
    std::set<std::string> names;
    for (const FileEntry& s : m->shards) names.insert(s.file_name);
    for (std::size_t i = 0; i < files->size(); ++i) {
      FGNET_ASSIGN_OR_RETURN(FileEntry e, ParseFileEntry(f, (*files)[i], Elem("files", i)));
      if (!names.insert(e.file_name).second) {
        return f.Fail(Elem("files", i) + ".fileName", QuoteJson(e.file_name), " is listed twice");
      }
      m->files.push_back(std::move(e));
    }
  }
  FGNET_ASSIGN_OR_RETURN(const Json* norms, f.Get(json, "", "normsIncludeOne", false));
  if (norms != nullptr) {
    FGNET_ASSIGN_OR_RETURN(m->norms_include_one, f.Bool(*norms, "normsIncludeOne"));
  }

  static const std::set<std::string_view> kRoles = {"embedding", "norm",    "attention",
                                                    "mlp",       "lm_head", "other"};
  for (const auto& [name, t] : m->tensors) {
    const std::string path = JsonPathChild("tensors", name);
    if (!kRoles.contains(t.role)) {
      return f.Fail(path + ".role", QuoteJson(t.role.substr(0, 40)),
                    " is not a role of a base-model tensor (embedding, norm, attention, mlp, "
                    "lm_head, other)");
    }
    if (m->quantization == "none" && IsQuantized(t.dtype)) {
      return f.Fail(path + ".dtype", DTypeName(t.dtype),
                    " is a quantized type but the quantization is \"none\"");
    }
  }
  return Ok();
}

Status ParseLoraConfig(const Fields& f, const Json& json, Manifest* m) {
  FGNET_ASSIGN_OR_RETURN(const Json* c, f.Get(json, "", "loraConfig"));
  const std::string path = "loraConfig";
  FGNET_TRY(f.ExpectObject(*c, path));
  LoraAdapterConfig& cfg = m->lora_config;
  FGNET_ASSIGN_OR_RETURN(const std::uint64_t rank, f.UnsignedAt(*c, path, "rank"));
  if (rank > kMaxRank) return f.Fail(path + ".rank", rank, " is implausibly large");
  cfg.r = static_cast<std::int64_t>(rank);
  FGNET_ASSIGN_OR_RETURN(const Json* alpha, f.Get(*c, path, "alpha"));
  FGNET_ASSIGN_OR_RETURN(cfg.lora_alpha, f.Number(*alpha, path + ".alpha"));
  FGNET_ASSIGN_OR_RETURN(const Json* targets, f.Get(*c, path, "targetModules"));
  FGNET_TRY(f.ExpectArray(*targets, path + ".targetModules"));
  for (std::size_t i = 0; i < targets->size(); ++i) {
    FGNET_ASSIGN_OR_RETURN(std::string t,
                           f.String((*targets)[i], Elem(path + ".targetModules", i)));
    cfg.target_modules.push_back(std::move(t));
  }
  FGNET_ASSIGN_OR_RETURN(const Json* rslora, f.Get(*c, path, "useRslora"));
  FGNET_ASSIGN_OR_RETURN(cfg.use_rslora, f.Bool(*rslora, path + ".useRslora"));
  FGNET_ASSIGN_OR_RETURN(const std::uint64_t layers, f.UnsignedAt(*c, path, "numLayers"));
  if (layers == 0 || layers > kMaxLayers) {
    return f.Fail(path + ".numLayers", layers, " is not a plausible number of layers");
  }
  m->num_layers = static_cast<std::size_t>(layers);
  FGNET_ASSIGN_OR_RETURN(const Json* tokens, f.Get(*c, path, "invocationTokens", false));
  if (tokens != nullptr) {
    const std::string tokens_path = path + ".invocationTokens";
    FGNET_TRY(f.ExpectArray(*tokens, tokens_path));
    if (tokens->empty()) return f.Fail(tokens_path, "is empty (omit it for a plain LoRA)");
    for (std::size_t i = 0; i < tokens->size(); ++i) {
      FGNET_ASSIGN_OR_RETURN(const std::uint64_t id,
                             f.Unsigned((*tokens)[i], Elem(tokens_path, i)));
      if (id > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) {
        return f.Fail(Elem(tokens_path, i), id, " is not a token id");
      }
      cfg.alora_invocation_tokens.push_back(static_cast<std::int32_t>(id));
    }
  }
  return Ok();
}

Status ParseLora(const Fields& f, const Json& json, Manifest* m) {
  FGNET_TRY(f.ConstantAt(json, "", "adapterType", "lora"));
  FGNET_ASSIGN_OR_RETURN(m->lora_config.base_model_name_or_path, f.StringAt(json, "", "baseModel"));
  FGNET_ASSIGN_OR_RETURN(m->base_model_hash, f.HashAt(json, "", "baseModelHash"));
  FGNET_TRY(ParseLoraConfig(f, json, m));

  FGNET_ASSIGN_OR_RETURN(const Json* modules, f.Get(json, "", "loraModules"));
  FGNET_TRY(f.ExpectObject(*modules, "loraModules"));
  for (const auto& [key, value] : modules->items()) {
    const std::string path = JsonPathChild("loraModules", key);
    const std::optional<AdapterTensorName> parsed = ParseAdapterTensorKey(key + ".lora_A");
    if (!parsed) return f.Fail(path, "is not a module key like \"layers.0.q_proj\"");
    if (parsed->layer >= m->num_layers) {
      return f.Fail(path, "layer ", parsed->layer, " is past loraConfig.numLayers ", m->num_layers);
    }
    FGNET_TRY(f.ExpectObject(value, path));
    ModuleEntry e;
    FGNET_ASSIGN_OR_RETURN(const std::uint64_t rank, f.UnsignedAt(value, path, "rank"));
    if (rank == 0 || rank > kMaxRank) {
      return f.Fail(path + ".rank", rank, " is not a plausible rank");
    }
    e.rank = static_cast<std::size_t>(rank);
    FGNET_ASSIGN_OR_RETURN(const Json* scale, f.Get(value, path, "scale"));
    FGNET_ASSIGN_OR_RETURN(const double s, f.Number(*scale, path + ".scale"));
    if (std::fabs(s) > std::numeric_limits<float>::max()) {
      return f.Fail(path + ".scale", s, " is out of the range of a float");
    }
    e.scale = static_cast<float>(s);
    m->modules[{parsed->layer, parsed->module}] = e;
  }

  std::set<std::string> seen;
  for (const auto& [name, t] : m->tensors) {
    const std::string path = JsonPathChild("tensors", name);
    const std::optional<AdapterTensorName> parsed = ParseAdapterTensorKey(name);
    if (!parsed) {
      return f.Fail(path, "is not an adapter tensor name like \"layers.0.q_proj.lora_A\"");
    }
    const char* role = parsed->is_b ? "lora_b" : "lora_a";
    if (t.role != role) {
      return f.Fail(path + ".role", QuoteJson(t.role.substr(0, 40)), " should be \"", role, "\"");
    }
    if (IsQuantized(t.dtype)) {
      return f.Fail(path + ".dtype", DTypeName(t.dtype),
                    " is not an adapter dtype (F32, F16 or BF16)");
    }
    const std::string key = AdapterModuleKey(parsed->layer, parsed->module);
    const auto it = m->modules.find({parsed->layer, parsed->module});
    if (it == m->modules.end()) {
      return f.Fail(path, "has no entry ", QuoteJson(key), " in loraModules");
    }
    const auto rank = static_cast<std::int64_t>(it->second.rank);
    const bool fits = t.shape.size() == 2 && t.shape[parsed->is_b ? 1 : 0] == rank;
    if (!fits) {
      return f.Fail(path + ".shape", ShapeToString(t.shape), " does not fit rank ", rank, " of ",
                    JsonPathChild("loraModules", key), " (expected ",
                    parsed->is_b ? "[out, rank]" : "[rank, in]", ")");
    }
    seen.insert(name);
  }
  for (const auto& [where, e] : m->modules) {
    for (const bool is_b : {false, true}) {
      const std::string name = AdapterTensorKey(where.first, where.second, is_b);
      if (!seen.contains(name)) {
        return f.Fail(JsonPathChild("loraModules", AdapterModuleKey(where.first, where.second)),
                      "has no tensor ", QuoteJson(name));
      }
    }
  }
  return Ok();
}

}  // namespace

Result<Manifest> ParseManifest(const Json& json, const std::string& source) {
  const Fields f(source);
  if (!json.is_object()) return f.Fail("", "expected a JSON object, got ", DescribeJson(json));
  Manifest m;
  FGNET_TRY(f.ConstantAt(json, "", "version", kVersion));
  FGNET_ASSIGN_OR_RETURN(m.model_id, f.StringAt(json, "", "modelId"));
  if (m.model_id.empty()) return f.Fail("modelId", "is empty");
  FGNET_ASSIGN_OR_RETURN(const std::string type, f.StringAt(json, "", "modelType"));
  if (type != "base" && type != "lora") {
    return f.Fail("modelType", QuoteJson(type.substr(0, 40)),
                  " is not supported (expected \"base\" or \"lora\")");
  }
  m.is_lora = type == "lora";
  FGNET_TRY(f.ConstantAt(json, "", "architecture", kArchitecture));
  FGNET_ASSIGN_OR_RETURN(m.quantization, f.StringAt(json, "", "quantization"));
  if (!IsQuantizationName(m.quantization)) {
    return f.Fail("quantization", QuoteJson(m.quantization.substr(0, 40)),
                  " is not a quantization name (\"none\", \"q8_0\", ...)");
  }
  FGNET_TRY(f.ConstantAt(json, "", "hashAlgorithm", kHashAlgorithm));

  FGNET_ASSIGN_OR_RETURN(const Json* shards, f.Get(json, "", "shards"));
  FGNET_TRY(f.ExpectArray(*shards, "shards"));
  std::set<std::string> shard_names;
  for (std::size_t i = 0; i < shards->size(); ++i) {
    const std::string path = Elem("shards", i);
    FGNET_ASSIGN_OR_RETURN(FileEntry e, ParseFileEntry(f, (*shards)[i], path));
    FGNET_ASSIGN_OR_RETURN(const std::uint64_t index, f.UnsignedAt((*shards)[i], path, "index"));
    if (index != i) return f.Fail(path + ".index", index, " is not the shard's position ", i);
    if (!shard_names.insert(e.file_name).second) {
      return f.Fail(path + ".fileName", QuoteJson(e.file_name), " is listed twice");
    }
    m.shards.push_back(std::move(e));
  }

  FGNET_ASSIGN_OR_RETURN(const Json* tensors, f.Get(json, "", "tensors"));
  FGNET_TRY(f.ExpectObject(*tensors, "tensors"));
  for (const auto& [name, value] : tensors->items()) {
    if (name.empty()) return f.Fail("tensors", "holds a tensor with an empty name");
    FGNET_ASSIGN_OR_RETURN(TensorEntry t,
                           ParseTensor(f, value, JsonPathChild("tensors", name), m.shards));
    m.tensors.emplace(name, std::move(t));
  }
  FGNET_TRY(CheckNoOverlap(f, m.tensors));
  FGNET_ASSIGN_OR_RETURN(m.content_hash, f.HashAt(json, "", "contentHash"));

  if (m.is_lora) {
    FGNET_TRY(ParseLora(f, json, &m));
  } else {
    FGNET_TRY(ParseBase(f, json, source, &m));
  }
  return m;
}

Result<std::uint64_t> TensorBytes(DType dtype, const std::vector<std::int64_t>& shape) {
  std::uint64_t elements = 1;
  for (const std::int64_t d : shape) {
    if (d < 0 || d > kMaxDim) return MakeError("shape ", ShapeToString(shape), " is invalid");
    if (__builtin_mul_overflow(elements, static_cast<std::uint64_t>(d), &elements) ||
        elements > kMaxElements) {
      return MakeError("shape ", ShapeToString(shape), " is implausibly large");
    }
  }
  if (!IsQuantized(dtype)) return elements * DTypeBlockBytes(dtype);
  if (shape.empty()) return MakeError(DTypeName(dtype), " needs at least one dimension");
  const auto cols = static_cast<std::uint64_t>(shape.back());
  const std::uint64_t block = DTypeBlockElements(dtype);
  if (cols % block != 0) {
    return MakeError("the last dimension of shape ", ShapeToString(shape),
                     " is not a multiple of the ", DTypeName(dtype), " block of ", block);
  }
  if (cols == 0) return std::uint64_t{0};
  return elements / cols * (cols / block * DTypeBlockBytes(dtype));
}

std::string_view BaseTensorRole(std::string_view name) {
  const auto ends_with = [&](std::string_view s) { return name.ends_with(s); };
  if (ends_with("embed_tokens.weight")) return "embedding";
  if (name == "lm_head.weight" || ends_with(".lm_head.weight")) return "lm_head";
  std::string_view stem = name;
  for (const std::string_view suffix : {".weight", ".bias"}) {
    if (stem.ends_with(suffix)) stem.remove_suffix(suffix.size());
  }
  const std::size_t dot = stem.rfind('.');
  const std::string_view last = dot == std::string_view::npos ? stem : stem.substr(dot + 1);
  if (last.find("norm") != std::string_view::npos) return "norm";
  if (name.find("self_attn.") != std::string_view::npos) return "attention";
  if (name.find("mlp.") != std::string_view::npos) return "mlp";
  return "other";
}

std::string AdapterModuleKey(std::size_t layer, LoraModule module) {
  return "layers." + std::to_string(layer) + "." + std::string(LoraModuleName(module));
}

std::string AdapterTensorKey(std::size_t layer, LoraModule module, bool is_b) {
  return AdapterModuleKey(layer, module) + (is_b ? ".lora_B" : ".lora_A");
}

std::optional<AdapterTensorName> ParseAdapterTensorKey(std::string_view name) {
  constexpr std::string_view kLayers = "layers.";
  if (!name.starts_with(kLayers)) return std::nullopt;
  AdapterTensorName out;
  std::string_view rest = name.substr(kLayers.size());
  if (rest.ends_with(".lora_A")) {
    out.is_b = false;
  } else if (rest.ends_with(".lora_B")) {
    out.is_b = true;
  } else {
    return std::nullopt;
  }
  rest.remove_suffix(7);
  const auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), out.layer);
  if (ec != std::errc() || ptr == rest.data() || ptr == rest.data() + rest.size() || *ptr != '.') {
    return std::nullopt;
  }
  const std::optional<LoraModule> module =
      ParseLoraModuleName(rest.substr(static_cast<std::size_t>(ptr - rest.data()) + 1));
  if (!module) return std::nullopt;
  out.module = *module;
  // Only the canonical spelling ("layers.3", not "layers.03").
  if (AdapterTensorKey(out.layer, out.module, out.is_b) != name) return std::nullopt;
  return out;
}

std::string ShardFileName(std::size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "shard_%05zu.bin", index);
  return buf;
}

std::string JsonPathChild(const std::string& path, std::string_view key) {
  std::string part;
  if (IsIdentifier(key)) {
    part = std::string(key);
  } else if (key.size() > kMaxPathKey) {
    part = QuoteJson(key.substr(0, kMaxPathKey)) + "...";
  } else {
    part = QuoteJson(key);
  }
  return path.empty() ? part : path + "." + part;
}

bool IsHexDigest(std::string_view text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool IsPlainFileName(std::string_view name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  return std::none_of(name.begin(), name.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return c == '/' || c == '\\' || u < 0x20 || u == 0x7f;
  });
}

}  // namespace fgnet::rdrr
