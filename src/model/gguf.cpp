#include "model/gguf.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>

#include "model/io_util.h"

namespace fgnet {

static_assert(std::endian::native == std::endian::little,
              "GGUF files are read and written as little-endian");

namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr std::uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
constexpr std::size_t kMaxKeyBytes = 65535;
constexpr std::size_t kMaxTensorNameBytes = 64;
constexpr int kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;
// Smallest encodings, used to reject counts the file cannot hold before allocating for them.
constexpr std::uint64_t kMinKvBytes = 8 + 1 + 4 + 1;                  // key of 1 byte, u8 value
constexpr std::uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;  // 1-byte name, 1 dim

// ggml's type names by id (docs/gguf.md of ggml); removed ids are empty.
constexpr std::string_view kGgmlTypeNames[] = {
    "F32",   "F16",        "Q4_0",       "Q4_1",       "",         "",         "Q5_0",
    "Q5_1",  "Q8_0",       "Q8_1",       "Q2_K",       "Q3_K",     "Q4_K",     "Q5_K",
    "Q6_K",  "Q8_K",       "IQ2_XXS",    "IQ2_XS",     "IQ3_XXS",  "IQ1_S",    "IQ4_NL",
    "IQ3_S", "IQ2_S",      "IQ4_XS",     "I8",         "I16",      "I32",      "I64",
    "F64",   "IQ1_M",      "BF16",       "Q4_0_4_4",   "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",
    "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};

std::uint64_t AlignUp(std::uint64_t offset, std::uint64_t alignment) {
  return offset + (alignment - offset % alignment) % alignment;
}

bool IsValidType(std::uint32_t id) { return id <= static_cast<std::uint32_t>(GgufType::kFloat64); }

// Bytes of one element of a fixed-size type; 0 for strings and arrays.
std::uint64_t FixedSize(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

// The smallest encoding of one element of type t.
std::uint64_t MinEncodedSize(GgufType t) {
  if (t == GgufType::kString) return 8;
  if (t == GgufType::kArray) return 4 + 8;
  return FixedSize(t);
}

// Why `key` is not a valid metadata key, or empty when it is.
std::string KeyProblem(std::string_view key) {
  if (key.empty()) return "is empty";
  if (key.size() > kMaxKeyBytes) return "is longer than 65535 bytes";
  for (const char ch : key) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) return "is not printable ASCII without spaces";
  }
  return {};
}

// Why `name` is not a valid tensor name, or empty when it is.
std::string TensorNameProblem(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name.size() > kMaxTensorNameBytes) {
    return "is " + std::to_string(name.size()) + " bytes long (at most 64)";
  }
  return {};
}

bool MulOverflows(std::uint64_t a, std::uint64_t b, std::uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

}  // namespace

std::string_view GgufTypeName(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
      return "u8";
    case GgufType::kInt8:
      return "i8";
    case GgufType::kUint16:
      return "u16";
    case GgufType::kInt16:
      return "i16";
    case GgufType::kUint32:
      return "u32";
    case GgufType::kInt32:
      return "i32";
    case GgufType::kFloat32:
      return "f32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "u64";
    case GgufType::kInt64:
      return "i64";
    case GgufType::kFloat64:
      return "f64";
  }
  return "?";
}

std::uint32_t GgmlTypeOf(DType t) {
  switch (t) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return 1;
    case DType::kQ4_0:
      return 2;
    case DType::kQ8_0:
      return 8;
    case DType::kQ4_K:
      return 12;
    case DType::kQ6_K:
      return 14;
    case DType::kBF16:
      return 30;
  }
  return 0;
}

std::optional<DType> DTypeOfGgmlType(std::uint32_t id) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_K,
                  DType::kQ6_K}) {
    if (GgmlTypeOf(t) == id) return t;
  }
  return std::nullopt;
}

std::string_view GgmlTypeName(std::uint32_t id) {
  constexpr std::size_t n = sizeof(kGgmlTypeNames) / sizeof(kGgmlTypeNames[0]);
  if (id < n && !kGgmlTypeNames[id].empty()) return kGgmlTypeNames[id];
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// GgufValue

bool GgufArray::operator==(const GgufArray&) const = default;

GgufValue GgufValue::StringArray(const std::vector<std::string>& items) {
  std::vector<GgufValue> values;
  values.reserve(items.size());
  for (const auto& s : items) values.push_back(String(s));
  return Array(GgufType::kString, std::move(values));
}

std::optional<std::int64_t> GgufValue::AsInt() const {
  return std::visit(
      [](const auto& v) -> std::optional<std::int64_t> {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, float> ||
                      std::is_same_v<T, double> || std::is_same_v<T, std::string> ||
                      std::is_same_v<T, GgufArray>) {
          return std::nullopt;
        } else if constexpr (std::is_same_v<T, std::uint64_t>) {
          if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
            return std::nullopt;
          }
          return static_cast<std::int64_t>(v);
        } else {
          return static_cast<std::int64_t>(v);
        }
      },
      v_);
}

std::optional<double> GgufValue::AsDouble() const {
  if (const float* f = std::get_if<float>(&v_)) return static_cast<double>(*f);
  if (const double* d = std::get_if<double>(&v_)) return *d;
  if (const auto i = AsInt()) return static_cast<double>(*i);
  return std::nullopt;
}

std::optional<bool> GgufValue::AsBool() const {
  if (const bool* b = std::get_if<bool>(&v_)) return *b;
  return std::nullopt;
}

std::optional<std::uint64_t> GgufValue::AsU64() const {
  if (const std::uint64_t* u = std::get_if<std::uint64_t>(&v_)) return *u;
  return std::nullopt;
}

std::optional<float> GgufValue::AsF32() const {
  if (const float* f = std::get_if<float>(&v_)) return *f;
  return std::nullopt;
}

std::string GgufValue::Describe() const {
  std::ostringstream os;
  std::visit(
      [&os](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          os << QuoteName(v);
        } else if constexpr (std::is_same_v<T, GgufArray>) {
          constexpr std::size_t kShown = 8;
          const bool nested = v.type == GgufType::kArray;
          if (v.items.size() > kShown || nested) {
            os << "[" << GgufTypeName(v.type) << " x " << v.items.size() << "]";
          } else {
            os << "[";
            for (std::size_t i = 0; i < v.items.size(); ++i) {
              os << (i ? ", " : "") << v.items[i].Describe();
            }
            os << "]";
          }
        } else if constexpr (std::is_same_v<T, bool>) {
          os << (v ? "true" : "false");
        } else if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::int8_t>) {
          os << static_cast<int>(v);
        } else {
          os << v;
        }
      },
      v_);
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Reading

class GgufParser {
 public:
  GgufParser(const std::string& path, const std::uint8_t* data, std::uint64_t size)
      : path_(path), data_(data), size_(size) {}

  Status Parse(GgufFile* out) {
    FGNET_TRY(ParseHeader(out));
    FGNET_TRY(ParseMetadata(out));
    FGNET_TRY(ParseAlignment(out));
    FGNET_TRY(ParseTensorInfos(out));
    return PlaceTensors(out);
  }

 private:
  std::uint64_t left() const { return size_ - pos_; }

  Error Truncated(std::string_view what, std::uint64_t need) const {
    return MakeError(path_, ": truncated: ", what, " at offset ", pos_, " needs ", need,
                     " bytes but the file ends ", left(), " bytes later");
  }

  template <class T>
  bool Take(T* out) {
    if (left() < sizeof(T)) return false;
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }

  template <class T>
  Status Read(T* out, std::string_view what) {
    if (!Take(out)) return Truncated(what, sizeof(T));
    return Ok();
  }

  // A string; `what` is called to describe it only when there is an error.
  template <class What>
  Status ReadString(std::string* out, const What& what) {
    std::uint64_t len = 0;
    if (!Take(&len)) return Truncated(what() + " (its length)", 8);
    if (len > left()) {
      return MakeError(path_, ": ", what(), ": string length ", len, " at offset ", pos_ - 8,
                       " exceeds the ", left(), " bytes left in the file");
    }
    out->assign(reinterpret_cast<const char*>(data_ + pos_), static_cast<std::size_t>(len));
    pos_ += len;
    return Ok();
  }

  Status ParseHeader(GgufFile* out) {
    if (size_ < kHeaderBytes) {
      return MakeError(path_, ": file is ", size_, " bytes, too short for the ", kHeaderBytes,
                       "-byte GGUF header");
    }
    if (std::memcmp(data_, kMagic, 4) != 0) {
      char hex[32];
      std::snprintf(hex, sizeof(hex), "%02x %02x %02x %02x", data_[0], data_[1], data_[2],
                    data_[3]);
      return MakeError(path_, ": not a GGUF file (the first bytes are ", hex,
                       ", expected 47 47 55 46 'GGUF')");
    }
    pos_ = 4;
    std::uint32_t version = 0;
    FGNET_TRY(Read(&version, "the version"));
    if (version != 2 && version != 3) {
      if (version == 0x02000000u || version == 0x03000000u) {
        return MakeError(path_, ": big-endian GGUF files are not supported");
      }
      if (version == 1) {
        return MakeError(path_, ": GGUF version 1 is not supported (only versions 2 and 3)");
      }
      return MakeError(path_, ": unknown GGUF version ", version, " (only versions 2 and 3)");
    }
    out->version_ = version;
    FGNET_TRY(Read(&tensor_count_, "the tensor count"));
    FGNET_TRY(Read(&kv_count_, "the metadata count"));
    if (kv_count_ > left() / kMinKvBytes) {
      return MakeError(path_, ": metadata count ", kv_count_, " cannot fit in the ", left(),
                       " bytes after the header");
    }
    if (tensor_count_ > left() / kMinTensorInfoBytes) {
      return MakeError(path_, ": tensor count ", tensor_count_, " cannot fit in the ", left(),
                       " bytes after the header");
    }
    return Ok();
  }

  Status ReadValue(GgufType type, const std::string& key, int depth, GgufValue* out) {
    switch (type) {
      case GgufType::kUint8:
        return ReadScalar<std::uint8_t>(key, out);
      case GgufType::kInt8:
        return ReadScalar<std::int8_t>(key, out);
      case GgufType::kUint16:
        return ReadScalar<std::uint16_t>(key, out);
      case GgufType::kInt16:
        return ReadScalar<std::int16_t>(key, out);
      case GgufType::kUint32:
        return ReadScalar<std::uint32_t>(key, out);
      case GgufType::kInt32:
        return ReadScalar<std::int32_t>(key, out);
      case GgufType::kFloat32:
        return ReadScalar<float>(key, out);
      case GgufType::kUint64:
        return ReadScalar<std::uint64_t>(key, out);
      case GgufType::kInt64:
        return ReadScalar<std::int64_t>(key, out);
      case GgufType::kFloat64:
        return ReadScalar<double>(key, out);
      case GgufType::kBool: {
        std::uint8_t b = 0;
        if (!Take(&b)) return Truncated("the value of " + QuoteName(key), 1);
        if (b > 1) {
          return MakeError(path_, ": metadata ", QuoteName(key), ": bool byte ",
                           static_cast<int>(b), " at offset ", pos_ - 1, " is neither 0 nor 1");
        }
        *out = GgufValue::Bool(b != 0);
        return Ok();
      }
      case GgufType::kString: {
        std::string s;
        FGNET_TRY(ReadString(&s, [&] { return "metadata " + QuoteName(key); }));
        *out = GgufValue::String(std::move(s));
        return Ok();
      }
      case GgufType::kArray:
        return ReadArray(key, depth, out);
    }
    return MakeError(path_, ": metadata ", QuoteName(key), ": unknown value type");
  }

  template <class T>
  Status ReadScalar(const std::string& key, GgufValue* out) {
    T v{};
    if (!Take(&v)) return Truncated("the value of " + QuoteName(key), sizeof(T));
    if constexpr (std::is_same_v<T, std::uint8_t>) *out = GgufValue::U8(v);
    if constexpr (std::is_same_v<T, std::int8_t>) *out = GgufValue::I8(v);
    if constexpr (std::is_same_v<T, std::uint16_t>) *out = GgufValue::U16(v);
    if constexpr (std::is_same_v<T, std::int16_t>) *out = GgufValue::I16(v);
    if constexpr (std::is_same_v<T, std::uint32_t>) *out = GgufValue::U32(v);
    if constexpr (std::is_same_v<T, std::int32_t>) *out = GgufValue::I32(v);
    if constexpr (std::is_same_v<T, float>) *out = GgufValue::F32(v);
    if constexpr (std::is_same_v<T, std::uint64_t>) *out = GgufValue::U64(v);
    if constexpr (std::is_same_v<T, std::int64_t>) *out = GgufValue::I64(v);
    if constexpr (std::is_same_v<T, double>) *out = GgufValue::F64(v);
    return Ok();
  }

  Status ReadArray(const std::string& key, int depth, GgufValue* out) {
    if (depth >= kMaxArrayDepth) {
      return MakeError(path_, ": metadata ", QuoteName(key), ": arrays nested deeper than ",
                       kMaxArrayDepth, " levels");
    }
    std::uint32_t type_id = 0;
    if (!Take(&type_id)) return Truncated("the array type of " + QuoteName(key), 4);
    if (!IsValidType(type_id)) {
      return MakeError(path_, ": metadata ", QuoteName(key), ": unknown array element type ",
                       type_id, " at offset ", pos_ - 4);
    }
    const auto type = static_cast<GgufType>(type_id);
    std::uint64_t count = 0;
    if (!Take(&count)) return Truncated("the array length of " + QuoteName(key), 8);
    if (count > left() / MinEncodedSize(type)) {
      return MakeError(path_, ": metadata ", QuoteName(key), ": array of ", count, " ",
                       GgufTypeName(type), " at offset ", pos_ - 8, " cannot fit in the ", left(),
                       " bytes left in the file");
    }
    std::vector<GgufValue> items(static_cast<std::size_t>(count));
    for (auto& item : items) FGNET_TRY(ReadValue(type, key, depth + 1, &item));
    *out = GgufValue::Array(type, std::move(items));
    return Ok();
  }

  Status ParseMetadata(GgufFile* out) {
    out->metadata_.reserve(static_cast<std::size_t>(kv_count_));
    for (std::uint64_t i = 0; i < kv_count_; ++i) {
      std::string key;
      FGNET_TRY(ReadString(&key, [&] { return "metadata key " + std::to_string(i); }));
      if (const std::string problem = KeyProblem(key); !problem.empty()) {
        return MakeError(path_, ": metadata key ", i, " ", QuoteName(key), " ", problem);
      }
      if (out->key_index_.contains(key)) {
        return MakeError(path_, ": metadata key ", QuoteName(key), " appears twice");
      }
      std::uint32_t type_id = 0;
      if (!Take(&type_id)) return Truncated("the value type of " + QuoteName(key), 4);
      if (!IsValidType(type_id)) {
        return MakeError(path_, ": metadata ", QuoteName(key), ": unknown value type ", type_id,
                         " at offset ", pos_ - 4);
      }
      GgufValue value;
      FGNET_TRY(ReadValue(static_cast<GgufType>(type_id), key, 0, &value));
      out->key_index_.emplace(key, out->metadata_.size());
      out->metadata_.emplace_back(std::move(key), std::move(value));
    }
    return Ok();
  }

  Status ParseAlignment(GgufFile* out) {
    const GgufValue* value = out->Find("general.alignment");
    if (value == nullptr) return Ok();
    if (value->type() != GgufType::kUint32) {
      return MakeError(path_, ": general.alignment must be a u32, found ",
                       GgufTypeName(value->type()));
    }
    const auto alignment = static_cast<std::uint32_t>(*value->AsInt());
    if (alignment < 8 || !std::has_single_bit(alignment)) {
      return MakeError(path_, ": general.alignment ", alignment,
                       " is not a power of two of at least 8");
    }
    out->alignment_ = alignment;
    return Ok();
  }

  Status ParseTensorInfos(GgufFile* out) {
    out->tensors_.reserve(static_cast<std::size_t>(tensor_count_));
    for (std::uint64_t i = 0; i < tensor_count_; ++i) {
      GgufTensorInfo info;
      FGNET_TRY(ReadString(&info.name, [&] { return "the name of tensor " + std::to_string(i); }));
      if (const std::string problem = TensorNameProblem(info.name); !problem.empty()) {
        return MakeError(path_, ": tensor ", i, " name ", QuoteName(info.name), " ", problem);
      }
      const std::string tensor = "tensor " + QuoteName(info.name);
      if (out->tensor_index_.contains(info.name)) {
        return MakeError(path_, ": ", tensor, " appears twice");
      }
      std::uint32_t n_dims = 0;
      FGNET_TRY(Read(&n_dims, "the rank of " + tensor));
      if (n_dims < 1 || n_dims > kMaxDims) {
        return MakeError(path_, ": ", tensor, ": rank ", n_dims, " is not between 1 and ",
                         kMaxDims);
      }
      std::vector<std::uint64_t> dims(n_dims);
      for (auto& d : dims) FGNET_TRY(Read(&d, "the dimensions of " + tensor));
      FGNET_TRY(Read(&info.ggml_type, "the type of " + tensor));
      FGNET_TRY(Read(&info.offset, "the data offset of " + tensor));

      const std::optional<DType> dtype = DTypeOfGgmlType(info.ggml_type);
      if (!dtype) {
        return MakeError(path_, ": ", tensor, ": ggml type ", info.ggml_type, " (",
                         GgmlTypeName(info.ggml_type),
                         ") is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
      }
      std::uint64_t rows = 1;
      for (std::uint32_t d = 0; d < n_dims; ++d) {
        if (dims[d] == 0 ||
            dims[d] > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
          return MakeError(path_, ": ", tensor, ": dimension ", d, " is ", dims[d]);
        }
        if (d > 0 && MulOverflows(rows, dims[d], &rows)) {
          return MakeError(path_, ": ", tensor, ": its dimensions overflow");
        }
      }
      const std::uint64_t block = DTypeBlockElements(*dtype);
      if (dims[0] % block != 0) {
        return MakeError(path_, ": ", tensor, ": innermost dimension ", dims[0],
                         " is not a multiple of the ", DTypeName(*dtype), " block of ", block);
      }
      std::uint64_t row_bytes = 0;
      if (MulOverflows(dims[0] / block, DTypeBlockBytes(*dtype), &row_bytes) ||
          MulOverflows(row_bytes, rows, &info.size)) {
        return MakeError(path_, ": ", tensor, ": its size overflows");
      }
      info.view.dtype = *dtype;
      for (auto it = dims.rbegin(); it != dims.rend(); ++it) {
        info.shape.push_back(static_cast<std::int64_t>(*it));
      }
      info.view.shape = info.shape;
      out->tensor_index_.emplace(info.name, out->tensors_.size());
      out->tensors_.push_back(std::move(info));
    }
    return Ok();
  }

  Status PlaceTensors(GgufFile* out) {
    const std::uint64_t alignment = out->alignment_;
    out->data_offset_ = AlignUp(pos_, alignment);
    const std::uint64_t data_bytes = size_ > out->data_offset_ ? size_ - out->data_offset_ : 0;
    std::vector<const GgufTensorInfo*> order;
    order.reserve(out->tensors_.size());
    for (GgufTensorInfo& info : out->tensors_) {
      const std::string tensor = "tensor " + QuoteName(info.name);
      if (info.offset % alignment != 0) {
        return MakeError(path_, ": ", tensor, ": data offset ", info.offset,
                         " is not a multiple of the alignment ", alignment);
      }
      if (info.offset > data_bytes || info.size > data_bytes - info.offset) {
        return MakeError(path_, ": ", tensor, ": data [", info.offset, ", ",
                         info.offset + info.size, ") of the data section at ", out->data_offset_,
                         " lies past the end of the file (", data_bytes, " bytes of data)");
      }
      info.view.data = data_ + out->data_offset_ + info.offset;
      order.push_back(&info);
    }
    std::sort(order.begin(), order.end(), [](const GgufTensorInfo* a, const GgufTensorInfo* b) {
      return a->offset < b->offset;
    });
    for (std::size_t i = 1; i < order.size(); ++i) {
      const GgufTensorInfo& prev = *order[i - 1];
      const GgufTensorInfo& cur = *order[i];
      if (cur.offset < prev.offset + prev.size) {
        return MakeError(path_, ": tensors ", QuoteName(prev.name), " [", prev.offset, ", ",
                         prev.offset + prev.size, ") and ", QuoteName(cur.name), " [", cur.offset,
                         ", ", cur.offset + cur.size, ") overlap");
      }
    }
    return Ok();
  }

  const std::string& path_;
  const std::uint8_t* data_;
  std::uint64_t size_;
  std::uint64_t pos_ = 0;
  std::uint64_t tensor_count_ = 0;
  std::uint64_t kv_count_ = 0;
};

Result<GgufFile> GgufFile::Open(const std::string& path) {
  GgufFile gguf;
  FGNET_ASSIGN_OR_RETURN(gguf.file_, MappedFile::Open(path));
  GgufParser parser(path, gguf.file_.data(), gguf.file_.size());
  FGNET_TRY(parser.Parse(&gguf));
  return gguf;
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  const auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

template <class T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

void PutString(std::string* out, std::string_view s) {
  Put<std::uint64_t>(out, s.size());
  out->append(s);
}

// Appends the encoding of `value`; errors name the key.
Status PutValue(std::string* out, const GgufValue& value, const std::string& key, int depth,
                const std::string& path) {
  if (const GgufArray* array = value.AsArray()) {
    if (depth >= kMaxArrayDepth) {
      return MakeError(path, ": metadata ", QuoteName(key), ": arrays nested deeper than ",
                       kMaxArrayDepth, " levels");
    }
    Put<std::uint32_t>(out, static_cast<std::uint32_t>(array->type));
    Put<std::uint64_t>(out, array->items.size());
    for (const GgufValue& item : array->items) {
      if (item.type() != array->type) {
        return MakeError(path, ": metadata ", QuoteName(key), ": an array of ",
                         GgufTypeName(array->type), " holds a ", GgufTypeName(item.type()));
      }
      FGNET_TRY(PutValue(out, item, key, depth + 1, path));
    }
    return Ok();
  }
  if (const std::string* s = value.AsString()) {
    PutString(out, *s);
    return Ok();
  }
  switch (value.type()) {
    case GgufType::kUint8:
    case GgufType::kInt8:
      Put<std::uint8_t>(out, static_cast<std::uint8_t>(*value.AsInt()));
      break;
    case GgufType::kUint16:
    case GgufType::kInt16:
      Put<std::uint16_t>(out, static_cast<std::uint16_t>(*value.AsInt()));
      break;
    case GgufType::kUint32:
    case GgufType::kInt32:
      Put<std::uint32_t>(out, static_cast<std::uint32_t>(*value.AsInt()));
      break;
    case GgufType::kUint64:
      Put<std::uint64_t>(out, *value.AsU64());
      break;
    case GgufType::kInt64:
      Put<std::int64_t>(out, *value.AsInt());
      break;
    case GgufType::kFloat32:
      Put<float>(out, *value.AsF32());
      break;
    case GgufType::kFloat64:
      Put<double>(out, *value.AsDouble());
      break;
    case GgufType::kBool:
      Put<std::uint8_t>(out, *value.AsBool() ? 1 : 0);
      break;
    case GgufType::kString:
    case GgufType::kArray:
      break;
  }
  return Ok();
}

}  // namespace

GgufWriter::GgufWriter(std::uint32_t alignment) : alignment_(alignment) {
  FGNET_CHECK(alignment >= 8 && std::has_single_bit(alignment));
}

void GgufWriter::Set(const std::string& key, GgufValue value) {
  FGNET_CHECK(key != "general.alignment");
  const auto it = key_index_.find(key);
  if (it != key_index_.end()) {
    metadata_[it->second].second = std::move(value);
    return;
  }
  key_index_.emplace(key, metadata_.size());
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::AddTensor(const std::string& name, const TensorView& view) {
  tensors_.emplace_back(name, view);
}

Status GgufWriter::Write(const std::string& path) const {
  std::vector<std::pair<std::string, GgufValue>> metadata = metadata_;
  if (alignment_ != kGgufDefaultAlignment) {
    metadata.emplace_back("general.alignment", GgufValue::U32(alignment_));
  }
  std::string head;
  head.append(kMagic, 4);
  Put<std::uint32_t>(&head, 3);
  Put<std::uint64_t>(&head, tensors_.size());
  Put<std::uint64_t>(&head, metadata.size());
  for (const auto& [key, value] : metadata) {
    if (const std::string problem = KeyProblem(key); !problem.empty()) {
      return MakeError(path, ": metadata key ", QuoteName(key), " ", problem);
    }
    PutString(&head, key);
    Put<std::uint32_t>(&head, static_cast<std::uint32_t>(value.type()));
    FGNET_TRY(PutValue(&head, value, key, 0, path));
  }

  std::map<std::string, int> seen;
  std::vector<std::uint64_t> offsets;
  std::uint64_t offset = 0;
  for (const auto& [name, view] : tensors_) {
    const std::string tensor = "tensor " + QuoteName(name);
    if (const std::string problem = TensorNameProblem(name); !problem.empty()) {
      return MakeError(path, ": ", tensor, " name ", problem);
    }
    if (!seen.emplace(name, 0).second) return MakeError(path, ": ", tensor, " added twice");
    if (view.rank() < 1 || view.rank() > kMaxDims) {
      return MakeError(path, ": ", tensor, ": rank ", view.rank(), " is not between 1 and ",
                       kMaxDims);
    }
    for (const std::int64_t d : view.shape) {
      if (d <= 0) {
        return MakeError(path, ": ", tensor, ": shape ", ShapeToString(view.shape),
                         " has a dimension below 1");
      }
    }
    if (DTypeRowBytes(view.dtype, static_cast<std::size_t>(view.shape.back())) == 0) {
      return MakeError(path, ": ", tensor, ": innermost dimension ", view.shape.back(),
                       " is not a multiple of the ", DTypeName(view.dtype), " block of ",
                       DTypeBlockElements(view.dtype));
    }
    if (view.data == nullptr) return MakeError(path, ": ", tensor, ": no data");
    PutString(&head, name);
    Put<std::uint32_t>(&head, static_cast<std::uint32_t>(view.rank()));
    for (auto it = view.shape.rbegin(); it != view.shape.rend(); ++it) {
      Put<std::uint64_t>(&head, static_cast<std::uint64_t>(*it));
    }
    Put<std::uint32_t>(&head, GgmlTypeOf(view.dtype));
    Put<std::uint64_t>(&head, offset);
    offsets.push_back(offset);
    offset = AlignUp(offset + view.num_bytes(), alignment_);
  }
  head.resize(AlignUp(head.size(), alignment_), '\0');

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return MakeError(path, ": cannot create ", tmp, ": ", std::strerror(errno));
  bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
  const std::string zeros(alignment_, '\0');
  std::uint64_t written = 0;
  for (std::size_t i = 0; ok && i < tensors_.size(); ++i) {
    const TensorView& view = tensors_[i].second;
    if (offsets[i] > written) {
      const std::size_t pad = static_cast<std::size_t>(offsets[i] - written);
      ok = std::fwrite(zeros.data(), 1, pad, f) == pad;
      written = offsets[i];
    }
    const std::size_t bytes = view.num_bytes();
    ok = ok && std::fwrite(view.data, 1, bytes, f) == bytes;
    written += bytes;
  }
  // Like ggml and gguf-py, pad the last tensor too: the data section is a whole number of
  // alignment units.
  if (ok && AlignUp(written, alignment_) > written) {
    const std::size_t pad = static_cast<std::size_t>(AlignUp(written, alignment_) - written);
    ok = std::fwrite(zeros.data(), 1, pad, f) == pad;
  }
  if (std::fclose(f) != 0) ok = false;
  if (!ok) {
    const int err = errno;
    std::remove(tmp.c_str());
    return MakeError(path, ": write failed: ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return MakeError(path, ": cannot rename ", tmp, " into place: ", std::strerror(err));
  }
  return Ok();
}

}  // namespace fgnet
