#include "model/model_files.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "model/gguf_lora.h"
#include "model/gguf_model.h"
#include "model/io_util.h"
#include "model/peft.h"
#include "model/rdrr.h"

namespace fgnet {
namespace {

bool HasGgufMagic(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char magic[4] = {};
  const bool ok = std::fread(magic, 1, 4, f) == 4 && std::memcmp(magic, "GGUF", 4) == 0;
  std::fclose(f);
  return ok;
}

}  // namespace

FileFormat DetectFormat(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return FileFormat::kUnknown;
  if (S_ISREG(st.st_mode)) return HasGgufMagic(path) ? FileFormat::kGguf : FileFormat::kUnknown;
  if (!S_ISDIR(st.st_mode)) return FileFormat::kUnknown;
  if (IsRdrrPackage(path)) return FileFormat::kRdrr;
  if (IsRegularFile(JoinPath(path, "adapter_config.json"))) return FileFormat::kPeft;
  if (IsRegularFile(JoinPath(path, "config.json"))) return FileFormat::kHuggingFace;
  return FileFormat::kUnknown;
}

Result<Checkpoint> OpenModel(const std::string& path) {
  switch (DetectFormat(path)) {
    case FileFormat::kRdrr:
      return OpenRdrrCheckpoint(path);
    case FileFormat::kGguf:
      return OpenGgufCheckpoint(path);
    case FileFormat::kPeft:
      return MakeError(path, ": is a PEFT adapter, not a model (pass it with --adapter)");
    case FileFormat::kHuggingFace:
    case FileFormat::kUnknown:
      break;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    return MakeError(path,
                     ": not a model: expected a GGUF file, a Hugging Face checkpoint directory or "
                     "an RDRR package");
  }
  return Checkpoint::Open(path);
}

Result<LoraAdapter> LoadAdapter(const std::string& path, const Checkpoint& base) {
  switch (DetectFormat(path)) {
    case FileFormat::kPeft:
      return LoadPeftAdapter(path, base.config());
    case FileFormat::kRdrr:
      return LoadRdrrAdapter(path, base.config(), base.content_hash());
    case FileFormat::kGguf:
      return LoadGgufAdapter(path, base.config());
    case FileFormat::kHuggingFace:
      return MakeError(path, ": is a model checkpoint, not an adapter");
    case FileFormat::kUnknown:
      break;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return MakeError(path, ": cannot open adapter: ", std::strerror(errno));
  }
  return MakeError(path,
                   ": not an adapter: expected a PEFT directory (adapter_config.json), an RDRR "
                   "adapter package (manifest.json) or a GGUF LoRA file");
}

}  // namespace fgnet
