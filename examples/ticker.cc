// ticker — prints the ticks of an evnet::ticker and how far each lags its deadline.
//
//   ticker [--period-ms N] [--count N]
//
// The ticker schedules each deadline from the previous one, so the lag column stays small
// however long the run (no drift). Ends after --count ticks, or on SIGINT/SIGTERM (status 0).
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "evnet/event.h"

namespace {
void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: ticker [--period-ms N] [--count N]\n"
               "  --period-ms N  period in milliseconds (default 100, > 0)\n"
               "  --count N      ticks before exiting (default 10; 0 = until SIGINT)\n");
}
}  // namespace

int main(int argc, char** argv) {
  long period_ms = 100;
  long count = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if ((a == "--period-ms" || a == "--count") && i + 1 < argc) {
      char* end = nullptr;
      const long v = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || v < 0 || (a == "--period-ms" && v == 0)) {
        std::fprintf(stderr, "bad value for %s: %s\n", a.c_str(), argv[i]);
        usage(stderr);
        return 2;
      }
      (a == "--count" ? count : period_ms) = v;
      continue;
    }
    if (a == "--period-ms" || a == "--count") {
      std::fprintf(stderr, "%s needs a value\n", a.c_str());
    } else {
      std::fprintf(stderr, "unknown option: %s\n", a.c_str());
    }
    usage(stderr);
    return 2;
  }

  auto created = evnet::event_base::create();
  if (!created) {
    std::fprintf(stderr, "event_base: %s\n", created.error().message().c_str());
    return 1;
  }
  evnet::event_base& base = **created;
  evnet::event on_int(base, SIGINT, evnet::ev_flag::signal,
                      [&](int, std::uint32_t) { base.exit(); });
  evnet::event on_term(base, SIGTERM, evnet::ev_flag::signal,
                       [&](int, std::uint32_t) { base.exit(); });
  if (on_int.attach() || on_term.attach()) {
    return 1;
  }

  using clk = std::chrono::steady_clock;
  const auto start = clk::now();
  long n = 0;
  clk::time_point due;
  evnet::ticker* self = nullptr;
  evnet::ticker t(base, [&] {
    const auto now = clk::now();
    const double at_ms = std::chrono::duration<double, std::milli>(now - start).count();
    const double lag_ms = std::chrono::duration<double, std::milli>(now - due).count();
    std::printf("tick %ld at %.3f ms (lag %.3f ms)\n", ++n, at_ms, lag_ms);
    std::fflush(stdout);
    due = self->deadline();  // already advanced by one period
    if (count != 0 && n >= count) {
      base.exit();
    }
  });
  self = &t;
  if (std::error_code ec = t.attach(std::chrono::milliseconds(period_ms))) {
    std::fprintf(stderr, "ticker: %s\n", ec.message().c_str());
    return 1;
  }
  due = t.deadline();
  if (std::error_code ec = base.dispatch()) {
    std::fprintf(stderr, "dispatch: %s\n", ec.message().c_str());
    return 1;
  }
  return 0;
}
