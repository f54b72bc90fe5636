// ws_client — a WebSocket client on evnet's dialer: connects to a URL, sends messages, checks that
// every echoed byte comes back in order, closes with 1000 and reports the rate. Against
// ws_echo_server it doubles as a small load generator (masking every frame, as clients must).
//
// Usage: ws_client [--url ws://127.0.0.1:8081/] [--connections C] [--count N] [--size S]
//                  [--window W] [--text] [--help]
// Exits 0 when every connection echoed every message intact and closed cleanly.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include "evnet/ws/client.h"

namespace {

struct settings {
  std::string url = "ws://127.0.0.1:8081/";
  long connections = 1;
  long count = 1000;
  long size = 64;
  long window = 1;
  bool text = false;
};

// Message `seq` is `size` bytes of a pattern that depends on seq, so reordering or corruption is
// caught. Text mode uses printable ASCII so it is valid UTF-8.
void fill(std::string& buf, long seq, long size, bool text) {
  buf.resize(static_cast<std::size_t>(size));
  for (long i = 0; i < size; ++i) {
    auto v = static_cast<unsigned>(seq * 31 + i);
    buf[static_cast<std::size_t>(i)] =
        text ? static_cast<char>('a' + v % 26) : static_cast<char>(v);
  }
}

struct per_conn {
  long sent = 0;
  long received = 0;
  std::string buf;
};

class load final : public evnet::ws::handler {
 public:
  explicit load(const settings& s) : s_(s) {}

  void on_open(const evnet::ws::connection_ptr& c) override {
    c->context() = per_conn{};
    auto& st = std::any_cast<per_conn&>(c->context());
    while (st.sent < s_.count && st.sent < s_.window) {
      send_next(c, st);
    }
  }

  void on_message(const evnet::ws::connection_ptr& c, evnet::ws::opcode type,
                  std::string_view data) override {
    auto& st = std::any_cast<per_conn&>(c->context());
    fill(st.buf, st.received, s_.size, s_.text);
    bool want_text = s_.text;
    if (data != st.buf || (type == evnet::ws::opcode::text) != want_text) {
      bad_.fetch_add(1);
      (void)c->close(evnet::ws::close_code::policy_violation, "echo mismatch");
      return;
    }
    ++st.received;
    total_.fetch_add(1, std::memory_order_relaxed);
    if (st.sent < s_.count) {
      send_next(c, st);
    }
    if (st.received == s_.count) {
      (void)c->close(evnet::ws::close_code::normal, "done");
    }
  }

  void on_close(const evnet::ws::connection_ptr& c, std::uint16_t code,
                std::string_view reason) override {
    auto* st = std::any_cast<per_conn>(&c->context());
    if (!st || st->received != s_.count || code != evnet::ws::close_code::normal) {
      std::fprintf(stderr, "connection closed early: code %u reason '%.*s'\n", code,
                   static_cast<int>(reason.size()), reason.data());
      bad_.fetch_add(1);
    }
    finish_one();
  }

  void on_connect_failed(std::string_view url, std::string_view what) override {
    std::fprintf(stderr, "connect to %.*s failed: %.*s\n", static_cast<int>(url.size()), url.data(),
                 static_cast<int>(what.size()), what.data());
    bad_.fetch_add(1);
    finish_one();
  }

  bool wait(std::chrono::seconds limit) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, limit, [&] { return done_ == s_.connections; });
  }
  long total() const { return total_.load(); }
  long bad() const { return bad_.load(); }

 private:
  void send_next(const evnet::ws::connection_ptr& c, per_conn& st) {
    fill(st.buf, st.sent, s_.size, s_.text);
    (void)(s_.text ? c->send_text(st.buf) : c->send_binary(st.buf));
    ++st.sent;
  }
  void finish_one() {
    std::lock_guard<std::mutex> lk(mu_);
    ++done_;
    cv_.notify_all();
  }

  const settings& s_;
  std::atomic<long> total_{0};
  std::atomic<long> bad_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  long done_ = 0;
};

void usage(const char* argv0) {
  std::printf(
      "usage: %s [--url ws://127.0.0.1:8081/] [--connections C] [--count N] [--size S]\n"
      "          [--window W] [--text] [--help]\n"
      "Sends N messages of S bytes on each of C connections (W in flight), verifies every\n"
      "echoed byte, closes with 1000 and prints the rate. Exit status 0 when all verified.\n",
      argv0);
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto num = [&](long& out) {
      if (i + 1 >= argc) {
        return false;
      }
      char* end = nullptr;
      out = std::strtol(argv[++i], &end, 10);
      return end && *end == '\0' && out >= 0;
    };
    if (a == "--help" || a == "-h") {
      usage(argv[0]);
      return 0;
    } else if (a == "--url" && i + 1 < argc) {
      s.url = argv[++i];
    } else if (a == "--text") {
      s.text = true;
    } else if (!((a == "--connections" && num(s.connections)) || (a == "--count" && num(s.count)) ||
                 (a == "--size" && num(s.size)) || (a == "--window" && num(s.window)))) {
      std::fprintf(stderr, "bad argument: %s\n", a.c_str());
      usage(argv[0]);
      return 2;
    }
  }
  if (s.window < 1) {
    s.window = 1;
  }

  load h(s);
  evnet::ws::client_options o;
  o.permessage_deflate = false;  // measure framing, not zlib
  o.engine.max_input = 64u << 20;
  evnet::ws::client cl(h, o);
  if (auto ec = cl.start()) {
    std::fprintf(stderr, "ws_client: %s\n", ec.message().c_str());
    return 1;
  }
  auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < s.connections; ++i) {
    if (auto ec = cl.connect(s.url)) {
      std::fprintf(stderr, "ws_client: bad url %s: %s\n", s.url.c_str(), ec.message().c_str());
      return 2;
    }
  }
  bool finished = h.wait(std::chrono::seconds(300));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  cl.stop();
  std::printf("messages %ld verified, errors %ld, %.3f s, %.0f msg/s\n", h.total(), h.bad(), secs,
              static_cast<double>(h.total()) / secs);
  return finished && h.bad() == 0 && h.total() == s.connections * s.count ? 0 : 1;
}
