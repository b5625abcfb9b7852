// Facts about this build of fgnet, fixed at configure time: version, build type, compiler,
// sanitizers, the source directory and the git commit seen when CMake configured the tree.
// Thread-safety: plain values.
#pragma once

#include <string>

namespace fgnet::cli {

struct BuildInfo {
  std::string version;           // project version, e.g. "0.1.0"
  std::string build_type;        // CMAKE_BUILD_TYPE, e.g. "Release"
  std::string compiler;          // e.g. "g++ 12.2.0"
  bool sanitizers = false;       // built with ASan + UBSan
  std::string source_dir;        // the repository root the build was configured from
  std::string configure_commit;  // `git rev-parse HEAD` at configure time, or "unknown"
};

BuildInfo GetBuildInfo();

}  // namespace fgnet::cli
