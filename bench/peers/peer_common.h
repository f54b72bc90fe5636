// Shared by the peer servers in bench/peers/: the same command line and start-up contract as
// evnet's examples (shared DESIGN.md "Example contract"), so scripts/bench can drive every
// server the same way. Each peer is one thread; `--loops` is accepted only as 1.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace peer {

struct args {
  int port = 0;
};

inline args parse_args(int argc, char** argv, const char* name) {
  args a;
  for (int i = 1; i < argc; ++i) {
    std::string_view s = argv[i];
    if (s == "--port" && i + 1 < argc) {
      a.port = std::atoi(argv[++i]);
    } else if (s == "--loops" && i + 1 < argc && std::strcmp(argv[i + 1], "1") == 0) {
      ++i;
    } else {
      std::fprintf(stderr, "usage: %s --port P (0 = any free port) [--loops 1]\n", name);
      std::exit(2);
    }
  }
  return a;
}

/// Prints the contract line scripts/bench waits for, flushed so a pipe sees it at once.
inline void announce(int port) {
  std::printf("listening on %d\n", port);
  std::fflush(stdout);
}

}  // namespace peer
