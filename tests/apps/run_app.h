// Runs the fgnet program in process and captures what it prints.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "apps/fgnet/commands.h"

namespace fgnet::cli::testing {

struct Outcome {
  int code;
  std::string out;
  std::string err;
};

inline Outcome RunApp(const std::vector<std::string>& args) {
  const App app = MakeFgnetApp();
  std::ostringstream out, err;
  const int code = app.Run(args, out, err);
  return {code, out.str(), err.str()};
}

}  // namespace fgnet::cli::testing
