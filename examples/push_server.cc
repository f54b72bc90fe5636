// push_server — the seed's "server timing push": every second (or --interval ms) it sends the
// current time to every connected client, from a timer on loop 0, with conn::send(), which is
// safe from any thread (clients on other loops receive it through their loop's task queue).
//
//   push_server [--port P] [--loops N] [--interval MS]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "evnet/conn.h"
#include "evnet/engine.h"
#include "example_args.h"

namespace {

class pusher final : public evnet::handler {
 public:
  explicit pusher(std::chrono::milliseconds interval) : interval_(interval) {}

  void on_boot(evnet::engine& e) override {
    example::announce(std::to_string(e.listen_addresses().at(0).port()));
    e.run_every(interval_, [this] { push_all(); });
  }
  evnet::action on_open(evnet::conn& c) override {
    std::lock_guard<std::mutex> lock(mu_);
    clients_[c.id()] = c.shared_from_this();
    return evnet::action::none;
  }
  evnet::action on_traffic(evnet::conn& c) override {
    c.discard();  // clients only listen
    return evnet::action::none;
  }
  void on_close(evnet::conn& c, std::error_code) override {
    std::lock_guard<std::mutex> lock(mu_);
    clients_.erase(c.id());
  }

 private:
  void push_all() {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    char line[64];
    std::tm tm{};
    gmtime_r(&t, &tm);
    const std::size_t n = std::strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ\n", &tm);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, c] : clients_) {
      // A slow client's queue is bounded (engine_options::send_queue_limit): the send fails with
      // queue_full instead of growing memory, and the next tick tries again.
      (void)c->send(std::string(line, n));
    }
  }

  std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::unordered_map<std::uint64_t, std::shared_ptr<evnet::conn>> clients_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string port = "0";
  long interval = 1000;
  evnet::engine_options opts;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf(
          "usage: %s [--port P] [--loops N] [--interval MS]\n"
          "  pushes the time to every client every MS milliseconds (default 1000)\n",
          argv[0]);
      return 0;
    } else if (a == "--port") {
      port = example::value_of(argc, argv, i);
    } else if (a == "--loops") {
      opts.loops = std::strtoul(example::value_of(argc, argv, i).c_str(), nullptr, 10);
    } else if (a == "--interval") {
      interval = std::strtol(example::value_of(argc, argv, i).c_str(), nullptr, 10);
    } else {
      std::fprintf(stderr, "unknown option %s (try --help)\n", a.c_str());
      return 2;
    }
  }
  evnet::engine engine;
  example::stop_on_signals(engine);
  pusher h(std::chrono::milliseconds(interval > 0 ? interval : 1000));
  const std::string url = "tcp://127.0.0.1:" + port;
  if (std::error_code ec = engine.run(h, {url}, opts)) {
    std::fprintf(stderr, "push_server: %s: %s\n", url.c_str(), ec.message().c_str());
    return 1;
  }
  return 0;
}
