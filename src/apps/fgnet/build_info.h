// Facts about this build of fgnet: version, build type, compiler and sanitizers (fixed at configure
// time), the source directory, and the git commit of the sources the build compiled.
// Thread-safety: plain values.
#pragma once

#include <string>

namespace fgnet::cli {

struct BuildInfo {
  std::string version;       // project version, e.g. "0.1.0"
  std::string build_type;    // CMAKE_BUILD_TYPE, e.g. "Release"
  std::string compiler;      // e.g. "g++ 12.2.0"
  bool sanitizers = false;   // built with ASan + UBSan
  std::string source_dir;    // the repository root the build was configured from
  std::string build_commit;  // `git rev-parse HEAD` when it was built, or "unknown"
};

BuildInfo GetBuildInfo();

}  // namespace fgnet::cli
