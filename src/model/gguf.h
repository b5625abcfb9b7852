// GGUF files (the format of llama.cpp / ggml): reading, memory-mapped and zero-copy, and writing.
//
// Layout (little-endian; versions 2 and 3, which differ only in that 3 allows big-endian files,
// which are not supported here):
//   "GGUF", u32 version, u64 tensor_count, u64 metadata_kv_count,
//   metadata: key (string), u32 value type, value  (strings are u64 length + bytes; arrays are
//             u32 element type + u64 count + elements, and may nest),
//   tensor infos: name (string), u32 n_dims, u64 dims[n_dims] (innermost first), u32 ggml type,
//             u64 offset (relative to the data section, a multiple of the alignment),
//   padding to the alignment (general.alignment, a u32 power of two >= 8; 32 when absent),
//   tensor data.
// Shapes are exposed outermost first, as everywhere in fgnet: a GGUF tensor with dims
// [in, out] is a TensorView of shape [out, in].
//
// Reading validates everything and reports the first problem as one line naming the file: the
// magic, the version, the counts (against what the file can hold), every string length, every
// value type, bools other than 0/1, array nesting (at most 8 levels), duplicate keys,
// general.alignment, tensor names (1 to 64 bytes, unique), ranks (1 to 4), dims (positive,
// the innermost a whole number of blocks), the ggml type (F32, F16, BF16, Q8_0, Q4_0, Q4_K and
// Q6_K are supported; any other is an error naming the tensor and the type id), offsets
// (aligned, data inside the file) and overlaps between tensors.
// Thread-safety: a GgufFile is immutable after Open() and move-only (views stay valid across
// moves); GgufValue is a plain value; a GgufWriter must not be shared while being filled.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "tensor/tensor.h"
#include "util/mapped_file.h"
#include "util/status.h"

namespace fgnet {

// Metadata value types, with their ids in the file.
enum class GgufType : std::uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
// "u8", "i32", "f32", "string", "array", ...
std::string_view GgufTypeName(GgufType t);

inline constexpr std::uint32_t kGgufDefaultAlignment = 32;

// ggml's tensor type ids of the dtypes fgnet reads and writes.
std::uint32_t GgmlTypeOf(DType t);
// The DType of a ggml type id; nullopt for ids fgnet does not support.
std::optional<DType> DTypeOfGgmlType(std::uint32_t id);
// ggml's name of a type id ("Q5_K", "IQ2_XS", ...), or "unknown" for ids ggml does not define.
std::string_view GgmlTypeName(std::uint32_t id);

class GgufValue;

// An array value: elements of one type (arrays may nest, each inner array with its own type).
struct GgufArray {
  GgufType type = GgufType::kUint8;
  std::vector<GgufValue> items;

  bool operator==(const GgufArray&) const;
};

class GgufValue {
 public:
  GgufValue() : v_(std::uint8_t{0}) {}
  static GgufValue U8(std::uint8_t v) { return GgufValue(v); }
  static GgufValue I8(std::int8_t v) { return GgufValue(v); }
  static GgufValue U16(std::uint16_t v) { return GgufValue(v); }
  static GgufValue I16(std::int16_t v) { return GgufValue(v); }
  static GgufValue U32(std::uint32_t v) { return GgufValue(v); }
  static GgufValue I32(std::int32_t v) { return GgufValue(v); }
  static GgufValue F32(float v) { return GgufValue(v); }
  static GgufValue Bool(bool v) { return GgufValue(v); }
  static GgufValue String(std::string v) { return GgufValue(std::move(v)); }
  static GgufValue U64(std::uint64_t v) { return GgufValue(v); }
  static GgufValue I64(std::int64_t v) { return GgufValue(v); }
  static GgufValue F64(double v) { return GgufValue(v); }
  // Every item must have type `type` (checked by the writer).
  static GgufValue Array(GgufType type, std::vector<GgufValue> items) {
    return GgufValue(GgufArray{type, std::move(items)});
  }
  static GgufValue StringArray(const std::vector<std::string>& items);

  GgufType type() const { return static_cast<GgufType>(v_.index()); }

  // Any integer type whose value fits an int64.
  std::optional<std::int64_t> AsInt() const;
  // F32 or F64, or an integer type.
  std::optional<double> AsDouble() const;
  std::optional<bool> AsBool() const;
  const std::string* AsString() const { return std::get_if<std::string>(&v_); }
  const GgufArray* AsArray() const { return std::get_if<GgufArray>(&v_); }
  // The F32 value; nullopt for any other type.
  std::optional<float> AsF32() const;
  // The U64 value (all of its range); nullopt for any other type.
  std::optional<std::uint64_t> AsU64() const;

  // A short one-line rendering for messages and `inspect`: "'text'", "3", "[u32 x 5]".
  std::string Describe() const;

  bool operator==(const GgufValue& other) const { return v_ == other.v_; }

 private:
  // Alternatives in GgufType order, so index() is the type id.
  using Variant = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t,
                               std::uint32_t, std::int32_t, float, bool, std::string, GgufArray,
                               std::uint64_t, std::int64_t, double>;
  template <class T>
  explicit GgufValue(T v) : v_(std::in_place_type<T>, std::move(v)) {}

  Variant v_;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<std::int64_t> shape;  // outermost first (the file's dims reversed)
  std::uint32_t ggml_type = 0;
  std::uint64_t offset = 0;  // relative to the data section
  std::uint64_t size = 0;    // bytes
  TensorView view;           // into the mapping
};

class GgufFile {
 public:
  // Maps and validates `path` (see the comment at the top).
  static Result<GgufFile> Open(const std::string& path);

  GgufFile(GgufFile&&) noexcept = default;
  GgufFile& operator=(GgufFile&&) noexcept = default;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return file_.path(); }
  std::uint32_t version() const { return version_; }
  std::uint32_t alignment() const { return alignment_; }
  // File offset of the data section.
  std::uint64_t data_offset() const { return data_offset_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  // nullptr when absent.
  const GgufValue* Find(std::string_view key) const;

  // Tensors in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const GgufTensorInfo* FindTensor(std::string_view name) const;

 private:
  GgufFile() = default;
  friend class GgufParser;

  MappedFile file_;
  std::uint32_t version_ = 0;
  std::uint32_t alignment_ = kGgufDefaultAlignment;
  std::uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, std::size_t, std::less<>> key_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;
};

// Builds a GGUF file (version 3) as ggml and gguf-py lay it out: metadata in the order first
// set, tensor infos in the order added, zero padding to the alignment, then each tensor's data
// padded with zeros to the next multiple of the alignment (the last one too). The views'
// data must stay valid until Write() returns. general.alignment is written when the alignment is
// not the default 32 and must not be set by hand.
class GgufWriter {
 public:
  explicit GgufWriter(std::uint32_t alignment = kGgufDefaultAlignment);

  // Sets `key` (replacing an earlier value, which keeps its place).
  void Set(const std::string& key, GgufValue value);
  // Adds a tensor; `view.shape` is outermost first (written reversed, innermost first).
  void AddTensor(const std::string& name, const TensorView& view);

  // Writes the file under a temporary name and renames it into place. Errors (naming `path`):
  // invalid keys or names, duplicate tensors, array items of the wrong type, a rank outside
  // 1..4, an innermost dimension that is not a whole number of blocks, missing data, I/O.
  Status Write(const std::string& path) const;

 private:
  std::uint32_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, std::size_t> key_index_;
  std::vector<std::pair<std::string, TensorView>> tensors_;
};

}  // namespace fgnet
