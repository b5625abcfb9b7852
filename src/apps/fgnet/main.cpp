// The fgnet executable. Everything is in the fgnet_cli library; main() only adapts argv and makes
// sure nothing escapes as a crash.
#include <cstdio>
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "apps/fgnet/commands.h"

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
    const fgnet::cli::App app = fgnet::cli::MakeFgnetApp();
    const int code = app.Run(args, std::cout, std::cerr);
    std::cout.flush();
    return code;
  } catch (const std::bad_alloc&) {
    std::fputs("fgnet: out of memory\n", stderr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fgnet: internal error: %s\n", e.what());
  } catch (...) {
    std::fputs("fgnet: internal error: unknown exception\n", stderr);
  }
  return fgnet::cli::kExitFailure;
}
