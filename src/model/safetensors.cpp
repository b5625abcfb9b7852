#include "model/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <tuple>
#include <utility>

#include "model/io_util.h"

namespace fgnet {
namespace {

constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::string_view kIndexName = "model.safetensors.index.json";
constexpr std::string_view kSingleName = "model.safetensors";

std::string RangeString(std::uint64_t begin, std::uint64_t end) {
  std::string out = "[";
  out += std::to_string(begin);
  out += ", ";
  out += std::to_string(end);
  out += "]";
  return out;
}

std::uint64_t ReadLittleEndian64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses the header JSON, reporting duplicate top-level keys (nlohmann keeps only the last).
Result<Json> ParseHeaderJson(std::string_view text, const std::string& path) {
  std::set<std::string> seen;
  std::string duplicate;
  bool has_duplicate = false;
  auto on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::key && depth == 1 && !has_duplicate && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) {
        has_duplicate = true;
        duplicate = key;
      }
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(text.begin(), text.end(), on_event);
  } catch (const Json::exception& e) {
    return MakeError(path, ": header is not valid JSON: ", OneLine(e.what()));
  }
  if (!header.is_object()) {
    return MakeError(path, ": header must be a JSON object, got ", header.type_name());
  }
  if (has_duplicate) {
    return MakeError(path, ": header lists tensor ", QuoteName(duplicate), " twice");
  }
  return header;
}

struct HeaderEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

Result<std::uint64_t> ReadOffset(const Json& value, const std::string& where) {
  if (!value.is_number_unsigned()) {
    return MakeError(where, ": data_offsets must hold two non-negative integers, got ",
                     DescribeJson(value));
  }
  return value.get<std::uint64_t>();
}

Result<HeaderEntry> ParseEntry(const std::string& path, const std::string& name, const Json& value,
                               std::uint64_t data_size) {
  const std::string where = path + ": tensor " + QuoteName(name);
  if (!value.is_object()) {
    return MakeError(where, ": entry must be a JSON object, got ", value.type_name());
  }
  HeaderEntry entry;
  entry.name = name;

  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end()) return MakeError(where, ": missing 'dtype'");
  if (!dtype_it->is_string()) {
    return MakeError(where, ": 'dtype' must be a string, got ", dtype_it->type_name());
  }
  const auto& dtype_name = dtype_it->get_ref<const std::string&>();
  const auto dtype = ParseSafetensorsDType(dtype_name);
  if (!dtype) {
    return MakeError(where, ": unsupported dtype ", QuoteName(dtype_name),
                     " (fgnet reads F32, BF16 and F16)");
  }
  entry.dtype = *dtype;

  const auto shape_it = value.find("shape");
  if (shape_it == value.end()) return MakeError(where, ": missing 'shape'");
  if (!shape_it->is_array()) {
    return MakeError(where, ": 'shape' must be an array, got ", shape_it->type_name());
  }
  std::uint64_t elements = 1;
  bool overflow = false;
  for (const Json& dim : *shape_it) {
    if (dim.is_number_integer() && !dim.is_number_unsigned()) {
      return MakeError(where, ": shape ", DescribeJson(*shape_it), " has a negative dimension");
    }
    if (!dim.is_number_unsigned()) {
      return MakeError(where, ": shape must be an array of integers, got ",
                       DescribeJson(*shape_it));
    }
    const auto d = dim.get<std::uint64_t>();
    if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return MakeError(where, ": shape ", DescribeJson(*shape_it), " has a dimension too large");
    }
    entry.shape.push_back(static_cast<std::int64_t>(d));
    overflow = overflow || __builtin_mul_overflow(elements, d, &elements);
  }
  std::uint64_t bytes = 0;
  overflow = overflow || __builtin_mul_overflow(elements, DTypeSize(entry.dtype), &bytes);

  const auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end()) return MakeError(where, ": missing 'data_offsets'");
  if (!offsets_it->is_array() || offsets_it->size() != 2) {
    return MakeError(where, ": data_offsets must be an array of two integers, got ",
                     DescribeJson(*offsets_it));
  }
  FGNET_ASSIGN_OR_RETURN(entry.begin, ReadOffset((*offsets_it)[0], where));
  FGNET_ASSIGN_OR_RETURN(entry.end, ReadOffset((*offsets_it)[1], where));
  const std::string range = RangeString(entry.begin, entry.end);
  if (entry.begin > entry.end) {
    return MakeError(where, ": data_offsets ", range, " begin after they end");
  }
  if (entry.end > data_size) {
    return MakeError(where, ": data_offsets ", range, " exceed the data size ", data_size);
  }
  if (overflow) {
    return MakeError(where, ": shape ", ShapeToString(entry.shape), " of ", DTypeName(entry.dtype),
                     " is too large (its byte size overflows)");
  }
  if (bytes != entry.end - entry.begin) {
    return MakeError(where, ": shape ", ShapeToString(entry.shape), " of ", DTypeName(entry.dtype),
                     " needs ", bytes, " bytes but data_offsets ", range, " hold ",
                     entry.end - entry.begin);
  }
  return entry;
}

Status CheckNoOverlap(const std::string& path, std::vector<const HeaderEntry*> entries) {
  // Empty ranges hold no bytes and cannot overlap anything.
  std::erase_if(entries, [](const HeaderEntry* e) { return e->begin == e->end; });
  std::sort(entries.begin(), entries.end(), [](const HeaderEntry* a, const HeaderEntry* b) {
    return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
  });
  for (std::size_t i = 1; i < entries.size(); ++i) {
    const HeaderEntry& prev = *entries[i - 1];
    const HeaderEntry& cur = *entries[i];
    if (cur.begin < prev.end) {
      return MakeError(path, ": tensors ", QuoteName(prev.name), " ",
                       RangeString(prev.begin, prev.end), " and ", QuoteName(cur.name), " ",
                       RangeString(cur.begin, cur.end), " overlap");
    }
  }
  return Ok();
}

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

Status WriteWholeFile(const std::string& path, const std::vector<std::string_view>& parts) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return MakeError(path, ": cannot create ", tmp, ": ", std::strerror(errno));
  }
  bool ok = true;
  for (std::string_view part : parts) {
    if (!part.empty() && std::fwrite(part.data(), 1, part.size(), f) != part.size()) ok = false;
  }
  if (std::fclose(f) != 0) ok = false;
  if (!ok) {
    std::remove(tmp.c_str());
    return MakeError(path, ": write failed: ", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return MakeError(path, ": cannot rename ", tmp, " into place: ", std::strerror(err));
  }
  return Ok();
}

}  // namespace

Result<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  SafetensorsFile st;
  FGNET_ASSIGN_OR_RETURN(st.file_, MappedFile::Open(path));
  const std::uint64_t size = st.file_.size();
  if (size < 8) {
    return MakeError(path, ": file is ", size,
                     " bytes, too short for the 8-byte header length of a safetensors file");
  }
  const std::uint64_t header_len = ReadLittleEndian64(st.file_.data());
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return MakeError(path, ": header length ", header_len, " is implausibly large (limit ",
                     kMaxSafetensorsHeaderBytes, " bytes)");
  }
  if (header_len > size - 8) {
    return MakeError(path, ": header length ", header_len, " runs past the end of the file (", size,
                     " bytes)");
  }
  if (header_len == 0) return MakeError(path, ": header is empty");
  const std::string_view header_text(reinterpret_cast<const char*>(st.file_.data() + 8),
                                     static_cast<std::size_t>(header_len));
  // JSON text never holds a raw NUL; the parser would stop there and ignore the rest.
  if (const auto nul = header_text.find('\0'); nul != std::string_view::npos) {
    return MakeError(path, ": header holds a NUL byte at offset ", nul);
  }
  FGNET_ASSIGN_OR_RETURN(Json header, ParseHeaderJson(header_text, path));

  const std::uint64_t data_start = 8 + header_len;
  const std::uint64_t data_size = size - data_start;
  std::vector<HeaderEntry> entries;
  entries.reserve(header.size());
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) {
        return MakeError(path, ": __metadata__ must be an object of strings, got ",
                         value.type_name());
      }
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) {
          return MakeError(path, ": __metadata__ value of ", QuoteName(key),
                           " must be a string, got ", text.type_name());
        }
        st.metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    FGNET_ASSIGN_OR_RETURN(HeaderEntry entry, ParseEntry(path, name, value, data_size));
    entries.push_back(std::move(entry));
  }
  std::vector<const HeaderEntry*> pointers;
  pointers.reserve(entries.size());
  for (const auto& e : entries) pointers.push_back(&e);
  FGNET_TRY(CheckNoOverlap(path, std::move(pointers)));

  const std::uint8_t* data = st.file_.data() + data_start;
  for (auto& e : entries) {
    TensorView view;
    view.dtype = e.dtype;
    view.shape = std::move(e.shape);
    const std::uint8_t* ptr = data + e.begin;
    const std::size_t bytes = static_cast<std::size_t>(e.end - e.begin);
    if (bytes > 0 && reinterpret_cast<std::uintptr_t>(ptr) % DTypeSize(e.dtype) != 0) {
      // Views of misaligned elements would be undefined behaviour: keep an aligned copy.
      auto copy = std::make_unique<std::uint64_t[]>((bytes + 7) / 8);
      std::memcpy(copy.get(), ptr, bytes);
      ptr = reinterpret_cast<const std::uint8_t*>(copy.get());
      st.realigned_.push_back(std::move(copy));
    }
    view.data = ptr;
    st.tensors_.emplace(std::move(e.name), std::move(view));
  }
  return st;
}

Status SafetensorsSet::Add(SafetensorsFile file) {
  for (const auto& [name, view] : file.tensors()) {
    const auto it = file_index_.find(name);
    if (it != file_index_.end()) {
      return MakeError("tensor ", QuoteName(name), " is in both ", files_[it->second].path(),
                       " and ", file.path());
    }
  }
  const std::size_t index = files_.size();
  for (const auto& [name, view] : file.tensors()) {
    all_.emplace(name, view);
    file_index_.emplace(name, index);
  }
  files_.push_back(std::move(file));
  return Ok();
}

Result<SafetensorsSet> SafetensorsSet::OpenFiles(const std::vector<std::string>& paths) {
  if (paths.empty()) return Error("no safetensors files given");
  SafetensorsSet set;
  set.source_ = paths.front();
  for (const auto& path : paths) {
    FGNET_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
    FGNET_TRY(set.Add(std::move(file)));
  }
  return set;
}

Result<SafetensorsSet> SafetensorsSet::OpenDirectory(const std::string& dir) {
  const std::string single = JoinPath(dir, kSingleName);
  if (IsRegularFile(single)) return OpenFiles({single});
  const std::string index_path = JoinPath(dir, kIndexName);
  if (!IsRegularFile(index_path)) {
    return MakeError(dir, ": no ", kSingleName, " or ", kIndexName);
  }
  FGNET_ASSIGN_OR_RETURN(Json index, ReadJsonFile(index_path));
  if (!index.is_object()) {
    return MakeError(index_path, ": must be a JSON object, got ", index.type_name());
  }
  const auto map_it = index.find("weight_map");
  if (map_it == index.end()) return MakeError(index_path, ": missing 'weight_map'");
  if (!map_it->is_object()) {
    return MakeError(index_path, ": 'weight_map' must be an object, got ", map_it->type_name());
  }
  if (map_it->empty()) return MakeError(index_path, ": 'weight_map' is empty");

  std::map<std::string, std::string> shard_of;         // tensor -> shard file name
  std::map<std::string, std::string> first_tensor_of;  // shard -> a tensor mapped to it
  for (const auto& [name, shard] : map_it->items()) {
    if (!shard.is_string()) {
      return MakeError(index_path, ": weight_map entry of tensor ", QuoteName(name),
                       " must be a shard file name, got ", shard.type_name());
    }
    const auto& file_name = shard.get_ref<const std::string&>();
    if (!IsPlainFileName(file_name)) {
      return MakeError(index_path, ": tensor ", QuoteName(name), " maps to ", QuoteName(file_name),
                       ", which is not a file name inside the checkpoint directory");
    }
    shard_of.emplace(name, file_name);
    first_tensor_of.emplace(file_name, name);
  }

  SafetensorsSet set;
  set.source_ = index_path;
  for (const auto& [file_name, tensor] : first_tensor_of) {
    const std::string shard_path = JoinPath(dir, file_name);
    if (!IsRegularFile(shard_path)) {
      return MakeError(index_path, ": shard ", QuoteName(file_name), " (of tensor ",
                       QuoteName(tensor), ") does not exist: ", shard_path);
    }
    FGNET_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(shard_path));
    const Status added = set.Add(std::move(file));
    if (!added.ok()) return added.error().WithContext(index_path);
  }
  for (const auto& [name, file_name] : shard_of) {
    const auto it = set.file_index_.find(name);
    if (it == set.file_index_.end()) {
      return MakeError(index_path, ": tensor ", QuoteName(name), " is mapped to shard ",
                       QuoteName(file_name), ", which has no such tensor");
    }
    const std::string& actual = set.files_[it->second].path();
    if (actual != JoinPath(dir, file_name)) {
      return MakeError(index_path, ": tensor ", QuoteName(name), " is mapped to shard ",
                       QuoteName(file_name), " but lives in ", actual);
    }
  }
  for (const auto& [name, file_i] : set.file_index_) {
    if (!shard_of.contains(name)) {
      return MakeError(index_path, ": tensor ", QuoteName(name), " in ", set.files_[file_i].path(),
                       " is not listed in weight_map");
    }
  }
  return set;
}

const TensorView* SafetensorsSet::Find(const std::string& name) const {
  const auto it = all_.find(name);
  return it == all_.end() ? nullptr : &it->second;
}

const std::string& SafetensorsSet::FileOf(const std::string& name) const {
  const auto it = file_index_.find(name);
  return it == file_index_.end() ? no_file_ : files_[it->second].path();
}

std::uint64_t SafetensorsSet::total_bytes() const {
  std::uint64_t n = 0;
  for (const auto& [name, view] : all_) n += view.num_bytes();
  return n;
}

std::uint64_t SafetensorsSet::total_elements() const {
  std::uint64_t n = 0;
  for (const auto& [name, view] : all_) n += static_cast<std::uint64_t>(view.num_elements());
  return n;
}

std::map<DType, std::uint64_t> SafetensorsSet::BytesByDType() const {
  std::map<DType, std::uint64_t> bytes;
  for (const auto& [name, view] : all_) bytes[view.dtype] += view.num_bytes();
  return bytes;
}

Status WriteSafetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                        const std::map<std::string, std::string>& metadata) {
  std::set<std::string_view> names;
  for (const auto& e : entries) {
    const std::string where = path + ": tensor " + QuoteName(e.name);
    if (e.name == kMetadataKey) return MakeError(where, ": the name is reserved");
    if (!names.insert(e.name).second) return MakeError(where, ": listed twice");
    for (const auto d : e.tensor.shape) {
      if (d < 0) return MakeError(where, ": negative dimension in ", ShapeToString(e.tensor.shape));
    }
    if (e.tensor.num_bytes() > 0 && e.tensor.data == nullptr) {
      return MakeError(where, ": has no data");
    }
  }
  // F32 first, then 2-byte types: contiguous data stays aligned to each element size.
  std::vector<std::size_t> order(entries.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return DTypeSize(entries[a].tensor.dtype) > DTypeSize(entries[b].tensor.dtype);
  });
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges(entries.size());
  std::uint64_t offset = 0;
  for (const std::size_t i : order) {
    ranges[i] = {offset, offset + entries[i].tensor.num_bytes()};
    offset = ranges[i].second;
  }
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& meta = header[std::string(kMetadataKey)];
    meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
  }
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    header[e.name] = {{"dtype", std::string(DTypeName(e.tensor.dtype))},
                      {"shape", e.tensor.shape},
                      {"data_offsets", {ranges[i].first, ranges[i].second}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);

  std::vector<std::string_view> parts = {std::string_view(length, 8), text};
  for (const std::size_t i : order) {
    parts.emplace_back(static_cast<const char*>(entries[i].tensor.data),
                       entries[i].tensor.num_bytes());
  }
  return WriteWholeFile(path, parts);
}

Status WriteSafetensorsIndex(const std::string& path,
                             const std::map<std::string, std::string>& weight_map,
                             std::uint64_t total_size) {
  nlohmann::ordered_json index = nlohmann::ordered_json::object();
  index["metadata"] = {{"total_size", total_size}};
  index["weight_map"] = nlohmann::ordered_json::object();
  for (const auto& [name, shard] : weight_map) index["weight_map"][name] = shard;
  const std::string text = index.dump(2) + "\n";
  return WriteWholeFile(path, {text});
}

}  // namespace fgnet
