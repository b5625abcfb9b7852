// Models and adapters in any supported format, behind one call each, so that every place that
// accepts a model or an adapter accepts all of them:
//   models:   a Hugging Face checkpoint directory (config.json + safetensors), an RDRR package
//             (a directory with manifest.json), or a GGUF file;
//   adapters: a PEFT adapter directory (adapter_config.json + adapter_model.safetensors), an RDRR
//             adapter package, or a GGUF LoRA file.
// The format is recognised from the contents (manifest.json, adapter_config.json, the GGUF magic),
// not from the name.
#pragma once

#include <string>

#include "model/checkpoint.h"
#include "model/lora.h"
#include "util/status.h"

namespace fgnet {

enum class FileFormat : std::uint8_t { kHuggingFace, kPeft, kRdrr, kGguf, kUnknown };

// What `path` holds, judged from its contents; kUnknown for anything unrecognised or missing.
FileFormat DetectFormat(const std::string& path);

// Opens a model. Errors: anything the format's reader reports, and a path that holds no model
// (naming what was looked for).
Result<Checkpoint> OpenModel(const std::string& path);

// Loads an adapter made for `base`, checked against it: shapes, and for RDRR packages the base's
// content hash (which is computed from the base's weights if no package recorded it).
Result<LoraAdapter> LoadAdapter(const std::string& path, const Checkpoint& base);

}  // namespace fgnet
