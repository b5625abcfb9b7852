#include "util/npy.h"

#include <cstring>
#include <fstream>

#include "util/mapped_file.h"

namespace fgnet {
namespace {

std::size_t ItemSize(const std::string& descr) {
  if (descr == "<f4" || descr == "<i4" || descr == "<u4") return 4;
  if (descr == "<f8" || descr == "<i8" || descr == "<u8") return 8;
  if (descr == "<f2" || descr == "<i2" || descr == "<u2") return 2;
  if (descr == "|u1" || descr == "|i1" || descr == "|b1") return 1;
  return 0;
}

// Extracts the quoted value of `key` from the header dict, e.g. 'descr': '<f4'.
bool FindQuoted(const std::string& header, const std::string& key, std::string* out) {
  const auto k = header.find("'" + key + "'");
  if (k == std::string::npos) return false;
  const auto q1 = header.find('\'', k + key.size() + 2);
  if (q1 == std::string::npos) return false;
  const auto q2 = header.find('\'', q1 + 1);
  if (q2 == std::string::npos) return false;
  *out = header.substr(q1 + 1, q2 - q1 - 1);
  return true;
}

}  // namespace

std::int64_t NpyArray::num_elements() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

Result<std::vector<float>> NpyArray::AsFloat32() const {
  const auto n = static_cast<std::size_t>(num_elements());
  std::vector<float> out(n);
  if (dtype == "<f4") {
    std::memcpy(out.data(), data.data(), n * 4);
  } else if (dtype == "<f8") {
    for (std::size_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, data.data() + i * 8, 8);
      out[i] = static_cast<float>(v);
    }
  } else {
    return MakeError("npy dtype ", dtype, " is not a float type");
  }
  return out;
}

Result<std::vector<std::int64_t>> NpyArray::AsInt64() const {
  const auto n = static_cast<std::size_t>(num_elements());
  std::vector<std::int64_t> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == "<i8") {
      std::memcpy(&out[i], data.data() + i * 8, 8);
    } else if (dtype == "<i4") {
      std::int32_t v;
      std::memcpy(&v, data.data() + i * 4, 4);
      out[i] = v;
    } else if (dtype == "<u4") {
      std::uint32_t v;
      std::memcpy(&v, data.data() + i * 4, 4);
      out[i] = v;
    } else {
      return MakeError("npy dtype ", dtype, " is not an integer type");
    }
  }
  return out;
}

Result<NpyArray> ReadNpy(const std::string& path) {
  FGNET_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  const auto* p = file.data();
  const std::size_t size = file.size();
  if (size < 10 || std::memcmp(p, "\x93NUMPY", 6) != 0) {
    return MakeError(path, ": not a .npy file (bad magic)");
  }
  const int major = p[6];
  std::size_t header_len = 0;
  std::size_t offset = 0;
  if (major == 1) {
    header_len = p[8] | (p[9] << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) return MakeError(path, ": truncated .npy header");
    header_len = static_cast<std::size_t>(p[8]) | (static_cast<std::size_t>(p[9]) << 8) |
                 (static_cast<std::size_t>(p[10]) << 16) | (static_cast<std::size_t>(p[11]) << 24);
    offset = 12;
  } else {
    return MakeError(path, ": unsupported .npy version ", major);
  }
  if (offset + header_len > size) return MakeError(path, ": truncated .npy header");
  const std::string header(reinterpret_cast<const char*>(p + offset), header_len);
  NpyArray array;
  if (!FindQuoted(header, "descr", &array.dtype)) {
    return MakeError(path, ": .npy header has no descr");
  }
  if (header.find("'fortran_order': False") == std::string::npos) {
    return MakeError(path, ": only C-order .npy arrays are supported");
  }
  const auto s = header.find("'shape'");
  const auto lp = header.find('(', s);
  const auto rp = header.find(')', lp);
  if (s == std::string::npos || lp == std::string::npos || rp == std::string::npos) {
    return MakeError(path, ": .npy header has no shape");
  }
  const std::string dims = header.substr(lp + 1, rp - lp - 1);
  std::size_t pos = 0;
  while (pos < dims.size()) {
    while (pos < dims.size() && (dims[pos] == ' ' || dims[pos] == ',')) ++pos;
    if (pos >= dims.size()) break;
    std::size_t used = 0;
    array.shape.push_back(std::stoll(dims.substr(pos), &used));
    pos += used;
  }
  const std::size_t item = ItemSize(array.dtype);
  if (item == 0) return MakeError(path, ": unsupported .npy dtype ", array.dtype);
  const std::size_t bytes = static_cast<std::size_t>(array.num_elements()) * item;
  const std::size_t data_offset = offset + header_len;
  if (data_offset + bytes > size) {
    return MakeError(path, ": .npy data is truncated (", size - data_offset, " of ", bytes,
                     " bytes)");
  }
  array.data.assign(p + data_offset, p + data_offset + bytes);
  return array;
}

Status WriteNpyFloat32(const std::string& path, const std::vector<std::int64_t>& shape,
                       const float* data) {
  std::string dims;
  std::int64_t n = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    dims += (i ? ", " : "") + std::to_string(shape[i]);
    n *= shape[i];
  }
  if (shape.size() == 1) dims += ",";  // numpy spells a 1-d shape "(n,)"
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Pad so that magic + len + header + '\n' is a multiple of 64.
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return MakeError(path, ": cannot open for writing");
  const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(magic, 8);
  const std::uint16_t len = static_cast<std::uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * 4));
  if (!out) return MakeError(path, ": write failed");
  return Ok();
}

}  // namespace fgnet
