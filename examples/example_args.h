// Command-line helpers shared by the net, HTTP and WebSocket examples (not part of the library).
#pragma once

// sigaction() is POSIX, declared by <signal.h>; <csignal> only promises std::signal().
#include <signal.h>  // NOLINT(modernize-deprecated-headers)

#include <cstdio>
#include <cstdlib>
#include <string>

namespace example {

/// The object a SIGINT/SIGTERM handler stops, one slot per type (set by stop_on_signals()).
template <class Stoppable>
inline Stoppable* g_stop_target = nullptr;

template <class Stoppable>
void stop_target_on_signal(int /*signo*/) {
  if (g_stop_target<Stoppable> != nullptr) {
    g_stop_target<Stoppable>->stop();
  }
}

/// Makes SIGINT and SIGTERM call `target.stop()`, which must be async-signal-safe (as
/// evnet::engine::stop(), http::server::stop() and ws::server::stop() are), so run() returns and
/// main exits 0. Call clear_stop_target() before `target` is destroyed. Main thread, before
/// the run starts.
template <class Stoppable>
void stop_on_signals(Stoppable& target) {
  g_stop_target<Stoppable> = &target;
  struct sigaction sa {};
  sa.sa_handler = stop_target_on_signal<Stoppable>;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

/// Makes a later SIGINT/SIGTERM do nothing instead of stopping a destroyed `Stoppable`.
template <class Stoppable>
void clear_stop_target() {
  g_stop_target<Stoppable> = nullptr;
}

/// Returns argv[i + 1] and advances i, or exits with status 2 when it is missing.
inline std::string value_of(int argc, char** argv, int& i) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", argv[i]);
    // Argument parsing runs before any thread starts, so exit() cannot race another thread.
    std::exit(2);  // NOLINT(concurrency-mt-unsafe)
  }
  return argv[++i];
}

/// Parses the arguments of the HTTP and WebSocket servers, "[--port P] [--loops N] [--help]",
/// into `port` and `loops` (left unchanged when not given). `usage` prints the help text.
/// Returns -1 to go on, or the status main should exit with (0 after --help, 2 on a bad or
/// unknown argument).
inline int parse_port_loops(int argc, char** argv, long& port, long& loops,
                            void (*usage)(const char* argv0)) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(argv[0]);
      return 0;
    }
    if ((a == "--port" || a == "--loops") && i + 1 < argc) {
      char* end = nullptr;
      const long v = std::strtol(argv[++i], &end, 10);
      if (end == nullptr || *end != '\0' || v < 0 || (a == "--port" && v > 65535)) {
        std::fprintf(stderr, "bad value for %s: %s\n", a.c_str(), argv[i]);
        return 2;
      }
      (a == "--port" ? port : loops) = v;
      continue;
    }
    if (a == "--port" || a == "--loops") {
      std::fprintf(stderr, "%s needs a value\n", argv[i]);
    } else {
      std::fprintf(stderr, "unknown argument: %s\n", argv[i]);
    }
    usage(argv[0]);
    return 2;
  }
  return -1;
}

/// Prints the example contract's start-up line, flushed so a pipe sees it at once.
inline void announce(const std::string& what) {
  std::printf("listening on %s\n", what.c_str());
  std::fflush(stdout);
}

}  // namespace example
