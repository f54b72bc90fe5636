// Tests of the net layer's engine and conn over real sockets on 127.0.0.1 (port 0).
#include <gtest/gtest.h>
// sigaction() is POSIX, declared by <signal.h>; <csignal> only promises std::signal().
#include <signal.h>  // NOLINT(modernize-deprecated-headers)

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "evnet/conn.h"
#include "evnet/engine.h"  // Test that the header is self-contained.
#include "evnet/event.h"
#include "evnet/loop.h"
#include "net_test_util.h"

namespace evnet {
namespace {

using namespace std::chrono_literals;
using test::booted_handler;
using test::connect_tcp;
using test::echo_handler;
using test::engine_runner;
using test::local_tcp;
using test::recv_n;
using test::send_all;
using test::wait_for;

TEST(net_engine, echo_roundtrip) {
  echo_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 100; ++i) {
    const std::string msg = "message " + std::to_string(i);
    ASSERT_TRUE(send_all(fd, msg));
    EXPECT_EQ(recv_n(fd, msg.size()), msg);
  }
  ::close(fd);
  EXPECT_TRUE(wait_for([&] { return h.closes.load() == 1; }));
  r.stop();
  EXPECT_FALSE(r.result());
  EXPECT_EQ(h.opens.load(), 1);
  EXPECT_EQ(h.closes.load(), 1);
}

TEST(net_engine, large_echo_through_buffers) {
  echo_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  ASSERT_GE(fd, 0);
  std::string big(4 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) {
    big[i] = static_cast<char>('a' + i % 26);
  }
  // Send from a helper thread while this one reads, so neither side's buffers deadlock.
  std::thread writer([&] { EXPECT_TRUE(send_all(fd, big)); });
  const std::string back = recv_n(fd, big.size());
  writer.join();
  EXPECT_EQ(back.size(), big.size());
  EXPECT_TRUE(back == big);
  ::close(fd);
}

TEST(net_engine, run_rejects_bad_address_without_callbacks) {
  echo_handler h;
  engine e;
  EXPECT_TRUE(e.run(h, {"bogus://x"}));
  EXPECT_TRUE(e.run(h, {"tcp://127.0.0.1:99999"}));
  EXPECT_FALSE(e.running());
  EXPECT_EQ(h.opens.load(), 0);
}

TEST(net_engine, stop_before_run_returns_after_boot) {
  echo_handler h;
  engine e;
  e.stop();
  EXPECT_FALSE(e.run(h, local_tcp()));
}

struct greeting_handler : booted_handler {
  action on_open(conn& c) override {
    c.write(std::string_view("hello\n"));
    return close_on_open ? action::close : action::none;
  }
  void on_close(conn& c, std::error_code ec) override {
    (void)c;
    std::lock_guard<std::mutex> lock(mu);
    reasons.push_back(ec);
  }
  bool close_on_open = false;
  std::mutex mu;
  std::vector<std::error_code> reasons;
};

TEST(net_engine, on_open_greeting_then_close_action) {
  greeting_handler h;
  h.close_on_open = true;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(test::recv_until_eof(fd), "hello\n");  // greeting flushed before the close
  ::close(fd);
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard<std::mutex> lock(h.mu);
    return h.reasons.size() == 1;
  }));
  std::lock_guard<std::mutex> lock(h.mu);
  EXPECT_FALSE(h.reasons[0]) << h.reasons[0].message();
}

TEST(net_engine, peer_close_reports_peer_closed_once) {
  greeting_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(recv_n(fd, 6), "hello\n");
  ::close(fd);
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard<std::mutex> lock(h.mu);
    return !h.reasons.empty();
  }));
  std::this_thread::sleep_for(50ms);
  r.stop();
  std::lock_guard<std::mutex> lock(h.mu);
  ASSERT_EQ(h.reasons.size(), 1u);
  EXPECT_EQ(h.reasons[0], make_error_code(errc::peer_closed));
}

struct close_in_traffic_handler : booted_handler {
  action on_traffic(conn& c) override {
    c.write(std::string_view("bye"));
    c.close();
    // The close is deferred: the conn is still usable until this callback returns.
    still_open_inside = c.state() == conn_state::open;
    c.discard();
    return action::none;
  }
  void on_close(conn& c, std::error_code ec) override {
    (void)c;
    reason = ec;
    closes.fetch_add(1);
  }
  std::atomic<bool> still_open_inside{false};
  std::atomic<int> closes{0};
  std::error_code reason;
};

TEST(net_engine, close_inside_on_traffic) {
  close_in_traffic_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  ASSERT_TRUE(send_all(fd, "x"));
  EXPECT_EQ(test::recv_until_eof(fd), "bye");
  ASSERT_TRUE(wait_for([&] { return h.closes.load() == 1; }));
  EXPECT_TRUE(h.still_open_inside.load());
  r.stop();
  EXPECT_EQ(h.closes.load(), 1);
  EXPECT_FALSE(h.reason);
  ::close(fd);
}

// Consumes only complete lines; the rest must be kept and presented again with new bytes.
struct line_handler : booted_handler {
  action on_traffic(conn& c) override {
    for (;;) {
      const input_view v = c.peek();
      std::size_t nl = v.size();
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] == std::byte{'\n'}) {
          nl = i;
          break;
        }
      }
      if (nl == v.size()) {
        break;
      }
      std::string line(nl, '\0');
      c.read(line.data(), nl);
      c.discard(1);
      std::lock_guard<std::mutex> lock(mu);
      lines.push_back(line);
      c.write("<" + line + ">\n");
    }
    return action::none;
  }
  std::mutex mu;
  std::vector<std::string> lines;
};

TEST(net_engine, partial_input_is_kept_between_calls) {
  line_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  const std::string text = "alpha\nbeta\ngamma-delta-epsilon\n";
  for (char ch : text) {  // byte by byte: every line arrives in pieces
    ASSERT_TRUE(send_all(fd, std::string(1, ch)));
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(recv_n(fd, text.size() + 6), "<alpha>\n<beta>\n<gamma-delta-epsilon>\n");
  ::close(fd);
  r.stop();
  std::lock_guard<std::mutex> lock(h.mu);
  EXPECT_EQ(h.lines, (std::vector<std::string>{"alpha", "beta", "gamma-delta-epsilon"}));
}

struct api_handler : booted_handler {
  action on_open(conn& c) override {
    c.context() = std::string("ctx");
    fd_ok = c.fd() >= 0;
    peer_ok =
        c.peer_address().port() != 0 && c.peer_address().to_string().rfind("127.0.0.1", 0) == 0;
    local_ok = c.local_address().port() == port.load();
    return action::none;
  }
  action on_traffic(conn& c) override {
    if (c.inbound_size() < 10) {
      return action::none;  // wait for all 10 bytes
    }
    ctx_ok = std::any_cast<std::string>(&c.context()) != nullptr;
    EXPECT_EQ(to_string(c.peek(3)), "012");
    EXPECT_EQ(to_string(c.next(2)), "01");
    EXPECT_EQ(c.discard(3), 3u);
    char b[2];
    EXPECT_EQ(c.read(b, 2), 2u);
    EXPECT_EQ(std::string(b, 2), "56");
    EXPECT_EQ(c.read_all(), "789");
    EXPECT_EQ(c.inbound_size(), 0u);
    const std::string_view parts[3] = {"a", "bc", "def"};
    EXPECT_FALSE(c.writev(parts));
    EXPECT_EQ(c.outbound_size(), 0u);
    return action::none;
  }
  std::atomic<std::uint16_t> port{0};
  std::atomic<bool> fd_ok{false}, peer_ok{false}, local_ok{false}, ctx_ok{false};
};

TEST(net_engine, conn_input_api_context_and_addresses) {
  api_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  h.port = r.port();
  const int fd = connect_tcp(r.port());
  for (char ch : std::string("0123456789")) {
    ASSERT_TRUE(send_all(fd, std::string(1, ch)));
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(recv_n(fd, 6), "abcdef");
  EXPECT_TRUE(h.fd_ok.load());
  EXPECT_TRUE(h.peer_ok.load());
  EXPECT_TRUE(h.local_ok.load());
  EXPECT_TRUE(h.ctx_ok.load());
  ::close(fd);
}

TEST(net_engine, multi_loop_round_robin_distribution) {
  struct h_t : echo_handler {
    action on_open(conn& c) override {
      std::lock_guard<std::mutex> lock(mu);
      per_loop[c.owner().index()]++;
      return echo_handler::on_open(c);
    }
    std::mutex mu;
    std::map<std::size_t, int> per_loop;
  } h;
  engine_options o;
  o.loops = 4;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  EXPECT_EQ(r.get().loop_count(), 4u);
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) {
    fds.push_back(connect_tcp(r.port()));
    ASSERT_TRUE(send_all(fds.back(), "ping"));
    EXPECT_EQ(recv_n(fds.back(), 4), "ping");
  }
  std::lock_guard<std::mutex> lock(h.mu);
  ASSERT_EQ(h.per_loop.size(), 4u);
  for (auto& [loop, n] : h.per_loop) {
    EXPECT_EQ(n, 2) << "loop " << loop;
  }
  for (int fd : fds) {
    ::close(fd);
  }
}

TEST(net_engine, multi_loop_least_connections) {
  struct h_t : echo_handler {
    action on_open(conn& c) override {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(c.owner().index());
      return echo_handler::on_open(c);
    }
    std::mutex mu;
    std::vector<std::size_t> order;
  } h;
  engine_options o;
  o.loops = 3;
  o.balance = balance_policy::least_connections;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) {
    fds.push_back(connect_tcp(r.port()));
    ASSERT_TRUE(send_all(fds.back(), "x"));
    EXPECT_EQ(recv_n(fds.back(), 1), "x");
  }
  // Close the conn on the loop that got the second one; the next goes there.
  std::size_t freed;
  {
    std::lock_guard<std::mutex> lock(h.mu);
    ASSERT_EQ(h.order.size(), 3u);
    EXPECT_EQ(std::set<std::size_t>(h.order.begin(), h.order.end()).size(), 3u);
    freed = h.order[1];
  }
  ::close(fds[1]);
  fds[1] = -1;  // closed: the final loop must not close the number again (it may be reused)
  ASSERT_TRUE(wait_for([&] { return r.get().get_loop(freed).connection_count() == 0; }));
  const int fd = connect_tcp(r.port());
  ASSERT_TRUE(send_all(fd, "y"));
  EXPECT_EQ(recv_n(fd, 1), "y");
  {
    std::lock_guard<std::mutex> lock(h.mu);
    EXPECT_EQ(h.order.back(), freed);
  }
  ::close(fd);
  for (int f : fds) {
    if (f >= 0) {
      ::close(f);
    }
  }
}

TEST(net_engine, multi_loop_source_hash_keeps_one_client_on_one_loop) {
  struct h_t : echo_handler {
    action on_open(conn& c) override {
      std::lock_guard<std::mutex> lock(mu);
      loops.insert(c.owner().index());
      return echo_handler::on_open(c);
    }
    std::mutex mu;
    std::set<std::size_t> loops;
  } h;
  engine_options o;
  o.loops = 4;
  o.balance = balance_policy::source_hash;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  for (int i = 0; i < 6; ++i) {
    const int fd = connect_tcp(r.port());
    ASSERT_TRUE(send_all(fd, "z"));
    EXPECT_EQ(recv_n(fd, 1), "z");
    ::close(fd);
  }
  std::lock_guard<std::mutex> lock(h.mu);
  EXPECT_EQ(h.loops.size(), 1u);  // every client is 127.0.0.1
}

TEST(net_engine, reuse_port_mode_serves_on_every_loop) {
  struct h_t : echo_handler {
    action on_open(conn& c) override {
      std::lock_guard<std::mutex> lock(mu);
      loops.insert(c.owner().index());
      return echo_handler::on_open(c);
    }
    std::mutex mu;
    std::set<std::size_t> loops;
  } h;
  engine_options o;
  o.loops = 2;
  o.accept = accept_model::reuse_port;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  std::vector<int> fds;
  for (int i = 0; i < 40; ++i) {
    const int fd = connect_tcp(r.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "r"));
    EXPECT_EQ(recv_n(fd, 1), "r");
    fds.push_back(fd);
  }
  {
    std::lock_guard<std::mutex> lock(h.mu);
    // The kernel hashes the 4-tuple over both listeners; 40 clients all landing on one loop
    // is (1/2)^39 unlikely.
    EXPECT_EQ(h.loops.size(), 2u);
  }
  for (int fd : fds) {
    ::close(fd);
  }
}

TEST(net_engine, several_addresses_in_one_engine) {
  echo_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"tcp://127.0.0.1:0", "tcp4://127.0.0.1:0"}));
  ASSERT_EQ(r.get().listen_addresses().size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const int fd = connect_tcp(r.port(i));
    ASSERT_TRUE(send_all(fd, "multi"));
    EXPECT_EQ(recv_n(fd, 5), "multi");
    ::close(fd);
  }
}

TEST(net_engine, max_connections_refuses_cleanly) {
  struct h_t : echo_handler {
    void on_accept_error(std::error_code ec) override {
      if (ec == make_error_code(errc::connection_limit)) {
        limit_errors.fetch_add(1);
      }
    }
    std::atomic<int> limit_errors{0};
  } h;
  engine_options o;
  o.max_connections = 2;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int a = connect_tcp(r.port());
  const int b = connect_tcp(r.port());
  ASSERT_TRUE(send_all(a, "a"));
  ASSERT_TRUE(send_all(b, "b"));
  EXPECT_EQ(recv_n(a, 1), "a");
  EXPECT_EQ(recv_n(b, 1), "b");
  const int c = connect_tcp(r.port());
  ASSERT_GE(c, 0);
  EXPECT_TRUE(test::sees_close(c));  // refused: accepted and closed, not left hanging
  EXPECT_TRUE(wait_for([&] { return h.limit_errors.load() == 1; }));
  EXPECT_EQ(r.get().refused_count(), 1u);
  EXPECT_EQ(h.opens.load(), 2);
  ::close(a);
  ASSERT_TRUE(wait_for([&] { return r.get().connection_count() == 1; }));
  const int d = connect_tcp(r.port());
  ASSERT_TRUE(send_all(d, "d"));
  EXPECT_EQ(recv_n(d, 1), "d");  // room again
  ::close(b);
  ::close(c);
  ::close(d);
}

struct reason_handler : booted_handler {
  void on_close(conn& c, std::error_code ec) override {
    (void)c;
    std::lock_guard<std::mutex> lock(mu);
    reasons.push_back(ec);
  }
  std::vector<std::error_code> get() {
    std::lock_guard<std::mutex> lock(mu);
    return reasons;
  }
  std::mutex mu;
  std::vector<std::error_code> reasons;
};

TEST(net_engine, idle_timeout_closes_with_its_reason) {
  struct h_t : reason_handler {
    action on_traffic(conn& c) override {
      c.write(c.next());
      return action::none;
    }
  } h;
  engine_options o;
  o.idle_timeout = 150ms;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  const auto t0 = std::chrono::steady_clock::now();
  // Activity pushes the deadline back: 5 exchanges 60 ms apart outlive one timeout.
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(60ms);
    ASSERT_TRUE(send_all(fd, "k"));
    ASSERT_EQ(recv_n(fd, 1), "k") << "closed too early at exchange " << i;
  }
  EXPECT_TRUE(test::sees_close(fd));
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(elapsed, 300ms + 150ms);
  ASSERT_TRUE(wait_for([&] { return h.get().size() == 1; }));
  EXPECT_EQ(h.get()[0], make_error_code(errc::idle_timeout));
  ::close(fd);
}

TEST(net_engine, read_timeout_closes_with_its_reason) {
  struct h_t : reason_handler {
    action on_open(conn& c) override {
      // Keep writing so the conn is never idle; only reads are missing.
      id = c.owner().run_every(20ms, [&c, self = c.shared_from_this()] {
        if (c.is_open()) {
          c.write(std::string_view("."));
        }
      });
      return action::none;
    }
    void on_close(conn& c, std::error_code ec) override {
      c.owner().cancel(id);
      reason_handler::on_close(c, ec);
    }
    timer_id id = 0;
  } h;
  engine_options o;
  o.read_timeout = 150ms;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  EXPECT_TRUE(test::sees_close(fd));
  ASSERT_TRUE(wait_for([&] { return h.get().size() == 1; }));
  EXPECT_EQ(h.get()[0], make_error_code(errc::read_timeout));
  ::close(fd);
}

TEST(net_engine, write_timeout_closes_with_its_reason) {
  struct h_t : reason_handler {
    action on_open(conn& c) override {
      // Fill the socket: the client never reads, so output stops making progress.
      const std::string chunk(1 << 20, 'w');
      for (int i = 0; i < 16; ++i) {
        c.write(chunk);
      }
      return action::none;
    }
  } h;
  engine_options o;
  o.write_timeout = 200ms;
  o.send_buffer = 64 * 1024;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  int small = 16 * 1024;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  ASSERT_TRUE(wait_for([&] { return h.get().size() == 1; }, 5s));
  EXPECT_EQ(h.get()[0], make_error_code(errc::write_timeout));
  ::close(fd);
}

TEST(net_engine, per_conn_timeouts_override_engine_options) {
  struct h_t : reason_handler {
    action on_open(conn& c) override {
      c.set_timeouts(100ms, 0ms, 0ms);  // the engine has none configured
      return action::none;
    }
    action on_traffic(conn& c) override {
      c.discard();
      c.set_timeouts(0ms, 0ms, 0ms);  // after the first bytes: no timeout at all
      return action::none;
    }
  } h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int quiet = connect_tcp(r.port());
  const int talker = connect_tcp(r.port());
  ASSERT_TRUE(send_all(talker, "hi"));
  EXPECT_TRUE(test::sees_close(quiet));
  ASSERT_TRUE(wait_for([&] { return h.get().size() == 1; }));
  EXPECT_EQ(h.get()[0], make_error_code(errc::idle_timeout));
  std::this_thread::sleep_for(250ms);
  EXPECT_EQ(h.get().size(), 1u) << "the talker's timeout was lifted";
  ::close(quiet);
  ::close(talker);
}

TEST(net_engine, max_input_closes_with_its_reason) {
  struct h_t : reason_handler {
    action on_traffic(conn& c) override {
      (void)c;  // never consumes
      return action::none;
    }
  } h;
  engine_options o;
  o.max_input = 1000;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  ASSERT_TRUE(send_all(fd, std::string(600, 'a')));
  std::this_thread::sleep_for(30ms);
  EXPECT_TRUE(h.get().empty());
  send_all(fd, std::string(600, 'b'));
  EXPECT_TRUE(test::sees_close(fd));
  ASSERT_TRUE(wait_for([&] { return h.get().size() == 1; }));
  EXPECT_EQ(h.get()[0], make_error_code(errc::input_too_large));
  ::close(fd);
}

TEST(net_engine, shutdown_write_sends_fin_and_keeps_reading) {
  struct h_t : booted_handler {
    action on_open(conn& c) override {
      c.write(std::string_view("done"));
      EXPECT_FALSE(c.shutdown_write());
      EXPECT_EQ(c.write(std::string_view("late")), make_error_code(errc::closed));
      return action::none;
    }
    action on_traffic(conn& c) override {
      got += c.read_all();
      return action::none;
    }
    action on_read_eof(conn& c) override {
      (void)c;
      eof = true;
      return action::close;
    }
    std::string got;
    std::atomic<bool> eof{false};
  } h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  EXPECT_EQ(test::recv_until_eof(fd), "done");  // our FIN arrived
  ASSERT_TRUE(send_all(fd, "still reading"));
  ::shutdown(fd, SHUT_WR);
  ASSERT_TRUE(wait_for([&] { return h.eof.load(); }));
  r.stop();
  EXPECT_EQ(h.got, "still reading");
  ::close(fd);
}

// A connection that kept a partial line in its input buffer and then went idle gives the
// buffer back at the sweep (empty at two sweeps in a row); with the sweep off it keeps it.
struct line_keeper : booted_handler {
  action on_open(conn& c) override {
    std::lock_guard lock(mu);
    c_ = c.shared_from_this();
    return action::none;
  }
  action on_traffic(conn& c) override {
    const auto v = c.peek();
    const std::string s = to_string(v);
    const auto nl = s.rfind('\n');
    if (nl != std::string::npos) c.discard(nl + 1);  // complete lines only
    kept_after_traffic = c.buffer_capacity();
    traffic++;
    return action::none;
  }
  std::size_t capacity_now() {
    std::shared_ptr<conn> c;
    {
      std::lock_guard lock(mu);
      c = c_;
    }
    std::promise<std::size_t> p;
    auto f = p.get_future();
    if (c->owner().post([&p, c] { p.set_value(c->buffer_capacity()); })) return 0;
    return f.get();
  }
  std::mutex mu;
  std::shared_ptr<conn> c_;
  std::atomic<std::size_t> kept_after_traffic{0};
  std::atomic<int> traffic{0};
};

std::size_t capacity_after_idle(std::chrono::milliseconds sweep) {
  line_keeper h;
  engine_options o;
  o.buffer_sweep_interval = sweep;
  engine_runner r;
  EXPECT_TRUE(r.start(h, test::local_tcp(), o));
  const int fd = test::connect_tcp(r.port());
  EXPECT_GE(fd, 0);
  send_all(fd, "partial");  // kept: copied into the conn's input ring
  EXPECT_TRUE(wait_for([&] { return h.traffic.load() == 1; }));
  std::this_thread::sleep_for(20ms);
  send_all(fd, " line\n");  // consumed: the ring is empty but keeps its memory
  EXPECT_TRUE(wait_for([&] { return h.traffic.load() == 2; }));
  EXPECT_GT(h.kept_after_traffic.load(), 0u);
  std::this_thread::sleep_for(300ms);  // several sweeps at 20 ms
  const std::size_t cap = h.capacity_now();
  ::close(fd);
  r.stop();
  return cap;
}

TEST(net_engine, idle_connection_buffers_are_freed_by_the_sweep) {
  EXPECT_EQ(capacity_after_idle(20ms), 0u);
  EXPECT_GT(capacity_after_idle(0ms), 0u);  // control: no sweep, the buffer stays
}

// The sweep stops once it finds no buffer memory held, and starts again when a ring next takes
// memory: a second idle period frees the buffer again.
TEST(net_engine, buffer_sweep_restarts_after_it_stopped) {
  line_keeper h;
  engine_options o;
  o.buffer_sweep_interval = 20ms;
  engine_runner r;
  ASSERT_TRUE(r.start(h, test::local_tcp(), o));
  const int fd = test::connect_tcp(r.port());
  ASSERT_GE(fd, 0);
  for (int round = 1; round <= 2; ++round) {
    send_all(fd, "partial");  // kept in the input ring: the ring takes memory
    ASSERT_TRUE(wait_for([&] { return h.traffic.load() == 2 * round - 1; }));
    send_all(fd, " line\n");  // consumed; the empty ring keeps its memory until the sweep
    ASSERT_TRUE(wait_for([&] { return h.traffic.load() == 2 * round; }));
    EXPECT_GT(h.kept_after_traffic.load(), 0u) << "round " << round;
    // Freed at the second sweep that finds it empty; after that the sweep stops.
    EXPECT_TRUE(wait_for([&] { return h.capacity_now() == 0; })) << "round " << round;
    std::this_thread::sleep_for(100ms);  // several periods with nothing held
  }
  ::close(fd);
  r.stop();
}

TEST(net_engine, timers_run_after_run_every_cancel) {
  struct h_t : booted_handler {
    void on_boot(engine& e) override {
      eng = &e;
      booted_handler::on_boot(e);
    }
    engine* eng = nullptr;
  } h;
  engine_options o;
  o.loops = 2;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}, o));
  engine& e = r.get();
  std::atomic<int> once{0}, every{0}, cancelled{0}, on_loop1{0};
  std::atomic<bool> right_thread{false};
  const auto t0 = std::chrono::steady_clock::now();
  std::atomic<std::int64_t> fired_after_ms{0};
  EXPECT_NE(e.run_after(50ms,
                        [&] {
                          fired_after_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                               std::chrono::steady_clock::now() - t0)
                                               .count();
                          once++;
                        }),
            0u);
  const timer_id ev = e.run_every(10ms, [&] { every++; });
  const timer_id c = e.run_after(30ms, [&] { cancelled++; });
  e.cancel(c);
  loop& l1 = e.get_loop(1);
  l1.run_after(1ms, [&] {
    right_thread = l1.in_loop_thread();
    on_loop1++;
  });
  ASSERT_TRUE(wait_for([&] { return once.load() == 1 && every.load() >= 5; }));
  e.cancel(ev);
  std::this_thread::sleep_for(30ms);
  const int after_cancel = every.load();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(every.load(), after_cancel);
  EXPECT_EQ(cancelled.load(), 0);
  EXPECT_GE(fired_after_ms.load(), 50);
  EXPECT_TRUE(wait_for([&] { return on_loop1.load() == 1; }));
  EXPECT_TRUE(right_thread.load());
}

TEST(net_engine, repeating_timer_cancels_itself) {
  booted_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}));
  std::atomic<int> n{0};
  std::atomic<timer_id> id{0};
  loop& l = r.get().get_loop(0);
  std::promise<void> posted;
  l.post([&] {
    id = l.run_every(2ms, [&] {
      if (++n == 3) {
        l.cancel(id);
      }
    });
    posted.set_value();
  });
  posted.get_future().wait();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(n.load(), 3);
}

TEST(net_engine, on_tick_repeats_with_returned_delay) {
  struct h_t : booted_handler {
    std::chrono::milliseconds on_tick() override { return ++ticks < 5 ? 5ms : 0ms; }
    std::atomic<int> ticks{0};
  } h;
  engine_options o;
  o.ticker = true;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}, o));
  ASSERT_TRUE(wait_for([&] { return h.ticks.load() == 5; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(h.ticks.load(), 5);
}

TEST(net_engine, action_shutdown_stops_the_engine) {
  struct h_t : booted_handler {
    action on_traffic(conn& c) override {
      c.discard();
      return action::shutdown;
    }
    void on_shutdown(engine& e) override {
      (void)e;
      shut = true;
    }
    std::atomic<bool> shut{false};
  } h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  ASSERT_TRUE(send_all(fd, "stop"));
  ASSERT_TRUE(wait_for([&] { return r.done(); }));
  EXPECT_TRUE(h.shut.load());
  ::close(fd);
}

TEST(net_engine, stop_flushes_pending_output_and_closes_all) {
  struct h_t : reason_handler {
    action on_traffic(conn& c) override {
      c.discard();
      c.write(std::string(std::size_t{256} * 1024, 'p'));  // more than the socket takes at once
      return action::none;
    }
  } h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  ASSERT_TRUE(send_all(fd, "go"));
  std::this_thread::sleep_for(50ms);
  std::string got;
  std::thread reader([&] { got = test::recv_until_eof(fd); });
  const auto took = r.stop();
  reader.join();
  EXPECT_EQ(got.size(), 256u * 1024) << "pending output flushed before the close";
  EXPECT_LT(took, 2000ms);
  ASSERT_EQ(h.get().size(), 1u);
  EXPECT_EQ(h.get()[0], make_error_code(errc::engine_stopping));
  ::close(fd);
}

// engine::stop() offers every open connection to on_stopping, once, on its loop thread,
// before closing it. A farewell written there reaches the peer. action::close (the default)
// lets the engine close the connection at once; action::none keeps it open and reading until
// the handler closes it (here on the peer's "ack") or stop_grace ends (engine_stopping). A
// connection the server closed before the stop is not offered.
struct farewell_handler : reason_handler {
  // The first byte a client sends says what its connection does at the stop: 'c' closes at
  // once, 'a' waits for an ack, 'n' waits for nothing (the grace period ends it), 'q' is
  // closed by the server before the stop.
  action on_traffic(conn& c) override {
    std::string in(c.peek().size(), '\0');
    c.read(in.data(), in.size());
    std::lock_guard<std::mutex> lock(mu);
    for (char ch : in) {
      const char k = kind.emplace(&c, ch).first->second;
      if (k == 'q') {
        return action::close;
      }
      if (ch == 'k' && k == 'a') {
        acked.push_back(k);
        return action::close;  // the farewell was answered
      }
    }
    return action::none;
  }
  action on_stopping(conn& c) override {
    std::lock_guard<std::mutex> lock(mu);
    const char k = kind[&c];
    offered.push_back(k);
    if (!c.owner().in_loop_thread() || c.state() != conn_state::open) {
      wrong_context = true;
    }
    c.write(std::string("bye ") + k + "\n");
    return k == 'c' ? action::close : action::none;
  }
  bool wrong_context = false;
  std::vector<char> offered;
  std::vector<char> acked;
  std::map<const conn*, char> kind;
};

TEST(net_engine, on_stopping_lets_each_open_conn_say_goodbye_then_closes_it) {
  farewell_handler h;
  engine_options o;
  o.loops = 2;
  o.stop_grace = 600ms;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  std::map<char, int> fd;
  for (char k : {'c', 'a', 'n', 'q'}) {
    fd[k] = connect_tcp(r.port());
    ASSERT_GE(fd[k], 0);
    ASSERT_TRUE(send_all(fd[k], std::string(1, k)));
  }
  EXPECT_TRUE(test::sees_close(fd['q']));
  ASSERT_TRUE(wait_for([&] { return h.get().size() == 1; }));  // 'q' closed before the stop
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard<std::mutex> lock(h.mu);
    return h.kind.size() == 4;
  }));
  const auto t0 = std::chrono::steady_clock::now();
  std::thread stopper([&] { r.stop(); });
  EXPECT_EQ(recv_n(fd['c'], 6), "bye c\n");
  EXPECT_TRUE(test::sees_close(fd['c']));
  EXPECT_EQ(recv_n(fd['a'], 6), "bye a\n");
  EXPECT_EQ(recv_n(fd['n'], 6), "bye n\n");
  // 'a' is still open and read: its ack ends it, before the grace period.
  ASSERT_TRUE(send_all(fd['a'], "k"));
  EXPECT_TRUE(test::sees_close(fd['a']));
  // 'n' is closed when stop_grace ends.
  EXPECT_TRUE(test::sees_close(fd['n']));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 550ms);
  stopper.join();
  std::lock_guard<std::mutex> lock(h.mu);
  EXPECT_FALSE(h.wrong_context);
  std::vector<char> offered = h.offered;
  std::sort(offered.begin(), offered.end());
  EXPECT_EQ(offered, (std::vector<char>{'a', 'c', 'n'})) << "once per open conn, not 'q'";
  EXPECT_EQ(h.acked, std::vector<char>{'a'});
  ASSERT_EQ(h.reasons.size(), 4u);
  int stopping = 0;
  for (const auto& ec : h.reasons) {
    stopping += ec == make_error_code(errc::engine_stopping) ? 1 : 0;
  }
  EXPECT_EQ(stopping, 2) << "'c' and 'n' closed by the stop; 'q' and 'a' (on its ack, within "
                            "the grace period) by the handler";
  for (auto& [k, f] : fd) {
    ::close(f);
  }
}

engine* g_signal_engine = nullptr;
void stop_from_signal(int) {
  g_signal_engine->stop();
}

TEST(net_engine, stop_from_a_signal_handler) {
  echo_handler h;
  engine_options o;
  o.loops = 2;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  ASSERT_TRUE(send_all(fd, "s"));
  EXPECT_EQ(recv_n(fd, 1), "s");
  g_signal_engine = &r.get();
  struct sigaction sa {};
  sa.sa_handler = stop_from_signal;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);
  ASSERT_EQ(::raise(SIGUSR1), 0);  // runs the handler on this (non-loop) thread
  ASSERT_TRUE(wait_for([&] { return r.done(); }));
  EXPECT_FALSE(r.result());
  EXPECT_EQ(h.closes.load(), 1);  // the open connection was closed by the stop
  EXPECT_TRUE(test::sees_close(fd));
  ::close(fd);
  signal(SIGUSR1, SIG_DFL);
}

TEST(net_engine, loop_clock_and_base_are_usable_on_the_loop_thread) {
  booted_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}));
  loop& l = r.get().get_loop(0);
  std::promise<bool> ok;
  ASSERT_FALSE(l.post([&] {
    const auto t = l.now();
    const bool clock_ok = t <= std::chrono::steady_clock::now();
    const bool base_ok = l.base().priorities() >= 1;
    ok.set_value(clock_ok && base_ok && l.index() == 0 && &l.owner() == &r.get());
  }));
  auto f = ok.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(f.get());
}

TEST(net_engine, engine_can_run_again_after_run_returns) {
  echo_handler h1;
  engine e;
  std::thread t([&] { EXPECT_FALSE(e.run(h1, local_tcp())); });
  h1.booted().wait();
  e.stop();
  t.join();
  echo_handler h2;
  std::thread t2([&] { EXPECT_FALSE(e.run(h2, local_tcp())); });
  h2.booted().wait();
  const int fd = connect_tcp(e.listen_addresses().at(0).port());
  ASSERT_TRUE(send_all(fd, "again"));
  EXPECT_EQ(recv_n(fd, 5), "again");
  ::close(fd);
  e.stop();
  t2.join();
}

// Lines that arrived in one read are answered one per call, pausing after each (backpressure
// for a pipelined protocol) and resuming from a timer. The lines already buffered when reading
// was paused are offered to on_traffic on resume; they used to wait for the peer's next bytes.
struct line_pacer : booted_handler {
  action on_traffic(conn& c) override {
    const input_view v = c.peek();
    std::string s(v.size(), '\0');
    v.copy_to(0, std::as_writable_bytes(std::span<char>(s)));
    const auto nl = s.find('\n');
    if (nl == std::string::npos) {
      return action::none;
    }
    c.discard(nl + 1);
    c.write(s.substr(0, nl + 1));
    c.pause_read();
    auto self = c.shared_from_this();
    c.owner().run_after(20ms, [self] { self->resume_read(); });
    return action::none;
  }
};

TEST(net_engine, resume_read_delivers_input_buffered_before_the_pause) {
  line_pacer h;
  engine_options o;
  o.loops = 1;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "a\nb\nc\n"));  // one write: usually one read on the server
  EXPECT_EQ(recv_n(fd, 6), "a\nb\nc\n");   // 5 s timeout
  // And the peer's EOF while the last lines wait still lets them all out first.
  ASSERT_TRUE(send_all(fd, "d\ne\n"));
  ::shutdown(fd, SHUT_WR);
  EXPECT_EQ(recv_n(fd, 4), "d\ne\n");
  ::close(fd);
}

// Reading paused and resumed twice in one callback re-offers the input it left once: one
// on_traffic call for the bytes still waiting, not one per resume_read().
struct pause_resume_twice : booted_handler {
  action on_traffic(conn& c) override {
    if (calls.fetch_add(1) == 0) {
      c.pause_read();
      c.resume_read();
      c.pause_read();
      c.resume_read();
    }
    return action::none;  // the bytes stay unconsumed
  }
  std::atomic<int> calls{0};
};

TEST(net_engine, pause_and_resume_twice_in_a_callback_offers_the_input_once) {
  pause_resume_twice h;
  engine_options o;
  o.loops = 1;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "abc"));
  ASSERT_TRUE(wait_for([&] { return h.calls.load() >= 2; }));
  std::this_thread::sleep_for(300ms);  // a second re-offer would come within this
  EXPECT_EQ(h.calls.load(), 2) << "the read and one re-offer of the unconsumed input";
  ::close(fd);
}

// On the loop thread send_async() writes at once like send(), so the two keep their order;
// its completion still comes later, never inside the call.
struct mixed_sender : booted_handler {
  action on_open(conn& c) override {
    EXPECT_FALSE(c.send_async("A", [this](std::error_code ec) {
      EXPECT_FALSE(ec);
      done++;
    }));
    EXPECT_FALSE(c.send("B"));
    EXPECT_FALSE(c.write("C"));
    EXPECT_EQ(done.load(), 0);  // not inside the call, nor before on_open returns
    return action::none;
  }
  std::atomic<int> done{0};
};

TEST(net_engine, send_async_on_the_loop_thread_keeps_order_with_send_and_write) {
  mixed_sender h;
  engine_options o;
  o.loops = 1;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(recv_n(fd, 3), "ABC");
  ASSERT_TRUE(wait_for([&] { return h.done.load() == 1; }));
  ::close(fd);
}

}  // namespace
}  // namespace evnet
