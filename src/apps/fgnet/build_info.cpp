#include "apps/fgnet/build_info.h"

// Defined for this file only by src/apps/fgnet/CMakeLists.txt.
#ifndef FGNET_VERSION
#define FGNET_VERSION "unknown"
#endif
#ifndef FGNET_BUILD_TYPE
#define FGNET_BUILD_TYPE "unknown"
#endif
#ifndef FGNET_SOURCE_DIR
#define FGNET_SOURCE_DIR ""
#endif
#ifndef FGNET_CONFIGURE_COMMIT
#define FGNET_CONFIGURE_COMMIT "unknown"
#endif
#ifndef FGNET_SANITIZERS
#define FGNET_SANITIZERS 0
#endif

namespace fgnet::cli {

BuildInfo GetBuildInfo() {
  BuildInfo b;
  b.version = FGNET_VERSION;
  b.build_type = FGNET_BUILD_TYPE;
#if defined(__clang__)
  b.compiler = "clang++ " __clang_version__;
#elif defined(__GNUC__)
  b.compiler = "g++ " __VERSION__;
#else
  b.compiler = "unknown";
#endif
  b.sanitizers = FGNET_SANITIZERS != 0;
  b.source_dir = FGNET_SOURCE_DIR;
  b.configure_commit = FGNET_CONFIGURE_COMMIT;
  if (b.configure_commit.empty()) b.configure_commit = "unknown";
  return b;
}

}  // namespace fgnet::cli
