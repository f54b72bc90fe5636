// echo_client — a client built on engine::dial: opens --conns connections to an echo server,
// sends --count messages of --size bytes on each (one in flight per connection), verifies every
// echoed byte, and prints the totals. Exit status 0 when every message came back intact.
//
//   echo_client --port P [--host 127.0.0.1] | --unix PATH
//               [--conns 10] [--count 1000] [--size 64] [--loops N] [--timeout MS]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "evnet/conn.h"
#include "evnet/engine.h"
#include "example_args.h"

namespace {

struct settings {
  std::size_t conns = 10;
  std::size_t count = 1000;
  std::size_t size = 64;
};

// Per-connection progress, kept in conn::context().
struct session {
  std::size_t sent = 0;     // messages sent
  std::size_t matched = 0;  // bytes of the current echo verified
};

class client final : public evnet::handler {
 public:
  explicit client(const settings& s) : s_(s) {
    message_.resize(s.size);
    for (std::size_t i = 0; i < s.size; ++i) {
      message_[i] = static_cast<char>('A' + i % 26);
    }
  }

  evnet::action on_open(evnet::conn& c) override {
    c.context() = session{};
    send_next(c);
    return evnet::action::none;
  }

  evnet::action on_traffic(evnet::conn& c) override {
    auto& st = std::any_cast<session&>(c.context());
    for (;;) {
      const evnet::input_view v = c.peek(s_.size - st.matched);
      if (v.empty()) {
        break;
      }
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (static_cast<char>(v[i]) != message_[st.matched + i]) {
          mismatches_.fetch_add(1);
          return evnet::action::close;
        }
      }
      st.matched += v.size();
      bytes_.fetch_add(v.size(), std::memory_order_relaxed);
      c.discard(v.size());
      if (st.matched < s_.size) {
        break;
      }
      st.matched = 0;
      messages_.fetch_add(1, std::memory_order_relaxed);
      if (st.sent == s_.count) {
        return evnet::action::close;  // all echoed
      }
      send_next(c);
    }
    return evnet::action::none;
  }

  void on_close(evnet::conn& c, std::error_code ec) override {
    if (ec) {
      errors_.fetch_add(1);
      std::fprintf(stderr, "echo_client: connection %llu: %s\n",
                   static_cast<unsigned long long>(c.id()), ec.message().c_str());
    }
    finish_one(c.owner().owner());
  }

  // Dial failures (refused, timeout) arrive here; the conn never opened.
  void dial_failed(evnet::engine& e, std::error_code ec) {
    errors_.fetch_add(1);
    std::fprintf(stderr, "echo_client: connect failed: %s\n", ec.message().c_str());
    finish_one(e);
  }

  std::size_t messages() const { return messages_.load(); }
  std::size_t bytes() const { return bytes_.load(); }
  std::size_t errors() const { return errors_.load(); }
  std::size_t mismatches() const { return mismatches_.load(); }

 private:
  void send_next(evnet::conn& c) {
    auto& st = std::any_cast<session&>(c.context());
    ++st.sent;
    c.write(message_);
  }
  void finish_one(evnet::engine& e) {
    if (done_.fetch_add(1) + 1 == s_.conns) {
      e.stop();
    }
  }

  settings s_;
  std::string message_;
  std::atomic<std::size_t> messages_{0}, bytes_{0}, errors_{0}, mismatches_{0}, done_{0};
};

}  // namespace

int main(int argc, char** argv) {
  settings s;
  std::string host = "127.0.0.1";
  std::string port;
  std::string unix_path;
  long timeout_ms = 5000;
  evnet::engine_options opts;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf(
          "usage: %s --port P [--host H] | --unix PATH\n"
          "          [--conns N=10] [--count N=1000] [--size BYTES=64] [--loops N=1]\n"
          "          [--timeout MS=5000]\n",
          argv[0]);
      return 0;
    } else if (a == "--port") {
      port = example::value_of(argc, argv, i);
    } else if (a == "--host") {
      host = example::value_of(argc, argv, i);
    } else if (a == "--unix") {
      unix_path = example::value_of(argc, argv, i);
    } else if (a == "--conns") {
      s.conns = std::strtoul(example::value_of(argc, argv, i).c_str(), nullptr, 10);
    } else if (a == "--count") {
      s.count = std::strtoul(example::value_of(argc, argv, i).c_str(), nullptr, 10);
    } else if (a == "--size") {
      s.size = std::strtoul(example::value_of(argc, argv, i).c_str(), nullptr, 10);
    } else if (a == "--loops") {
      opts.loops = std::strtoul(example::value_of(argc, argv, i).c_str(), nullptr, 10);
    } else if (a == "--timeout") {
      timeout_ms = std::strtol(example::value_of(argc, argv, i).c_str(), nullptr, 10);
    } else {
      std::fprintf(stderr, "unknown option %s (try --help)\n", a.c_str());
      return 2;
    }
  }
  if ((port.empty() && unix_path.empty()) || s.conns == 0 || s.count == 0 || s.size == 0) {
    std::fprintf(stderr, "echo_client: need --port or --unix, and non-zero counts\n");
    return 2;
  }
  const std::string url = unix_path.empty() ? "tcp://" + host + ":" + port : "unix://" + unix_path;

  struct runner : evnet::handler {
    client& c;
    std::string url;
    std::size_t conns;
    std::chrono::milliseconds timeout;
    explicit runner(client& cl) : c(cl) {}
    void on_boot(evnet::engine& e) override {
      for (std::size_t i = 0; i < conns; ++i) {
        evnet::dial_options d;
        d.timeout = timeout;
        d.on_result = [this, &e](evnet::conn* conn, std::error_code ec) {
          if (conn == nullptr) {
            c.dial_failed(e, ec);
          }
        };
        if (std::error_code ec = e.dial(url, std::move(d))) {
          std::fprintf(stderr, "echo_client: %s: %s\n", url.c_str(), ec.message().c_str());
          c.dial_failed(e, ec);
        }
      }
    }
    evnet::action on_open(evnet::conn& x) override { return c.on_open(x); }
    evnet::action on_traffic(evnet::conn& x) override { return c.on_traffic(x); }
    void on_close(evnet::conn& x, std::error_code ec) override { c.on_close(x, ec); }
  };

  client cl(s);
  runner h(cl);
  h.url = url;
  h.conns = s.conns;
  h.timeout = std::chrono::milliseconds(timeout_ms);
  evnet::engine engine;
  example::stop_on_signals(engine);
  const auto t0 = std::chrono::steady_clock::now();
  if (std::error_code ec = engine.run(h, {}, opts)) {
    std::fprintf(stderr, "echo_client: %s\n", ec.message().c_str());
    return 1;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "conns=%zu size=%zu msgs=%zu bytes=%zu secs=%.3f msgs_per_s=%.0f errors=%zu "
      "mismatches=%zu\n",
      s.conns, s.size, cl.messages(), cl.bytes(), secs, cl.messages() / (secs > 0 ? secs : 1),
      cl.errors(), cl.mismatches());
  const bool ok = cl.errors() == 0 && cl.mismatches() == 0 && cl.messages() == s.conns * s.count;
  return ok ? 0 : 1;
}
