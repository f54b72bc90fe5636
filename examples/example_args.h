// Command-line helpers shared by the net layer's examples (not part of the library).
#pragma once

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "evnet/engine.h"

namespace example {

/// The engine a SIGINT/SIGTERM handler stops (engine::stop() is async-signal-safe).
inline evnet::engine* g_engine = nullptr;

inline void on_signal(int) {
  if (g_engine != nullptr) g_engine->stop();
}

/// Makes SIGINT and SIGTERM stop `e` gracefully (run() then returns and main exits 0).
inline void stop_on_signals(evnet::engine& e) {
  g_engine = &e;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

/// Returns argv[i + 1] and advances i, or exits with status 2 when it is missing.
inline std::string value_of(int argc, char** argv, int& i) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", argv[i]);
    std::exit(2);
  }
  return argv[++i];
}

/// Prints the example contract's start-up line, flushed so a pipe sees it at once.
inline void announce(const std::string& what) {
  std::printf("listening on %s\n", what.c_str());
  std::fflush(stdout);
}

}  // namespace example
