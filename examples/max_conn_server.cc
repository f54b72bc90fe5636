// max_conn_server — an echo server that serves at most --max N connections at once; clients
// beyond the limit are accepted and closed at once (they see EOF), and counted.
//
//   max_conn_server [--port P] [--loops N] [--max N]
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "evnet/conn.h"
#include "evnet/engine.h"
#include "example_args.h"

namespace {

class limited_echo final : public evnet::handler {
 public:
  void on_boot(evnet::engine& e) override {
    example::announce(std::to_string(e.listen_addresses().at(0).port()));
  }
  evnet::action on_traffic(evnet::conn& c) override {
    c.write(c.next());
    return evnet::action::none;
  }
  void on_accept_error(std::error_code ec) override {
    if (ec == evnet::errc::connection_limit) {
      refused_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  void on_shutdown(evnet::engine& e) override {
    std::fprintf(stderr, "max_conn_server: refused %llu connections over the limit\n",
                 static_cast<unsigned long long>(e.refused_count()));
  }

 private:
  std::atomic<unsigned long long> refused_{0};
};

}  // namespace

int main(int argc, char** argv) {
  std::string port = "0";
  evnet::engine_options opts;
  opts.max_connections = 100;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf("usage: %s [--port P] [--loops N] [--max N (default 100)]\n", argv[0]);
      return 0;
    } else if (a == "--port") {
      port = example::value_of(argc, argv, i);
    } else if (a == "--loops") {
      opts.loops = std::strtoul(example::value_of(argc, argv, i).c_str(), nullptr, 10);
    } else if (a == "--max") {
      opts.max_connections = std::strtoul(example::value_of(argc, argv, i).c_str(), nullptr, 10);
    } else {
      std::fprintf(stderr, "unknown option %s (try --help)\n", a.c_str());
      return 2;
    }
  }
  evnet::engine engine;
  example::stop_on_signals(engine);
  limited_echo h;
  const std::string url = "tcp://127.0.0.1:" + port;
  if (std::error_code ec = engine.run(h, {url}, opts)) {
    std::fprintf(stderr, "max_conn_server: %s: %s\n", url.c_str(), ec.message().c_str());
    return 1;
  }
  return 0;
}
