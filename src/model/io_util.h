// Small utilities of the model layer's file readers: quoting untrusted text (tensor names, JSON
// values) so that error messages stay on one line, path checks, and reading tensors as f32.
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tensor/tensor.h"
#include "util/json.h"

namespace fgnet {

// 'text' with control characters and quotes escaped; text past 200 bytes is cut with "...".
std::string QuoteName(std::string_view text);

// `text` with every control character replaced by a space.
std::string OneLine(std::string_view text);

// A short one-line rendering of a JSON value: at most 60 characters, "..." when cut.
std::string DescribeJson(const Json& value);

// `dir` + "/" + `name` ("name" alone when `dir` is empty).
std::string JoinPath(const std::string& dir, std::string_view name);

// Whether `path` exists and is a regular file (following symlinks).
bool IsRegularFile(const std::string& path);

// The last component of a path without trailing '/' and without its extension:
// "a/b/model.gguf" -> "model", "experts/math/" -> "math".
std::string FileStem(const std::string& path);

// Every element of a tensor (any dtype, quantized ones decoded) as f32.
std::vector<float> TensorToF32(const TensorView& t);

}  // namespace fgnet
