// Tests of engine::dial: outbound TCP and Unix connections served by the same loops and handler.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "evnet/conn.h"
#include "evnet/engine.h"
#include "net_test_util.h"

namespace evnet {
namespace {

using namespace std::chrono_literals;
using test::booted_handler;
using test::engine_runner;
using test::result_log;
using test::wait_for;

// Echoes on the server side; on the client side sends a greeting and collects the answer.
struct both_sides : booted_handler {
  action on_open(conn& c) override {
    if (c.is_client()) {
      client_opened = true;
      const std::string* ctx = std::any_cast<std::string>(&c.context());
      c.write(ctx != nullptr ? *ctx : std::string("no context"));
    }
    return action::none;
  }
  action on_traffic(conn& c) override {
    if (!c.is_client()) {
      c.write(c.next());
      return action::none;
    }
    std::lock_guard<std::mutex> lock(mu);
    answer += c.read_all();
    return answer.size() >= 5 ? action::close : action::none;
  }
  void on_close(conn& c, std::error_code ec) override {
    (void)ec;
    if (c.is_client()) {
      client_closed++;
    }
  }
  std::string get() {
    std::lock_guard<std::mutex> lock(mu);
    return answer;
  }
  std::mutex mu;
  std::string answer;
  std::atomic<bool> client_opened{false};
  std::atomic<int> client_closed{0};
};

TEST(net_client, dial_connects_and_is_served_by_the_handler) {
  both_sides h;
  engine_options o;
  o.loops = 2;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"tcp://127.0.0.1:0"}, o));
  result_log out;
  dial_options d;
  d.timeout = 2s;
  d.context = std::string("hello");
  d.on_result = out.callback();
  ASSERT_FALSE(r.get().dial("tcp://127.0.0.1:" + std::to_string(r.port()), std::move(d)));
  ASSERT_TRUE(wait_for([&] { return h.get() == "hello"; }));
  ASSERT_TRUE(wait_for([&] { return h.client_closed.load() == 1; }));
  std::lock_guard<std::mutex> lock(out.mu);
  EXPECT_EQ(out.calls, 1);
  EXPECT_TRUE(out.had_conn);
  EXPECT_FALSE(out.ec);
}

TEST(net_client, dial_refused_reports_econnrefused_once) {
  both_sides h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}));
  // A port nobody listens on: bind one, note it, close it.
  const int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(probe, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  ::close(probe);
  result_log out;
  dial_options d;
  d.on_result = out.callback();
  ASSERT_FALSE(r.get().dial("tcp://127.0.0.1:" + std::to_string(port), std::move(d)));
  ASSERT_TRUE(wait_for([&] { return out.count() == 1; }));
  std::this_thread::sleep_for(20ms);
  std::lock_guard<std::mutex> lock(out.mu);
  EXPECT_EQ(out.calls, 1);
  EXPECT_FALSE(out.had_conn);
  EXPECT_EQ(out.ec, std::errc::connection_refused) << out.ec.message();
  EXPECT_FALSE(h.client_opened.load());
  EXPECT_EQ(h.client_closed.load(), 0);  // never opened: no on_close
  EXPECT_EQ(r.get().connection_count(), 0u);
}

// A listener that never accepts, with its accept queue filled: further SYNs are dropped, so
// a connect to it neither succeeds nor fails. Closes every socket it made on destruction.
class full_listener {
 public:
  full_listener() {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    listening_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                 ::listen(fd_, 0) == 0 &&
                 ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0;
    url_ = "tcp://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    for (int i = 0; i < 4; ++i) {
      const int f = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      // Non-blocking on purpose: the connect stays in progress and only fills the queue.
      (void)::connect(f, reinterpret_cast<sockaddr*>(&a), sizeof a);
      fillers_.push_back(f);
    }
    std::this_thread::sleep_for(50ms);
  }
  ~full_listener() {
    for (int f : fillers_) {
      ::close(f);
    }
    ::close(fd_);
  }
  full_listener(const full_listener&) = delete;
  full_listener& operator=(const full_listener&) = delete;

  /// True when bind(), listen() and getsockname() succeeded.
  bool listening() const { return listening_; }
  /// "tcp://127.0.0.1:<port>" of the listener.
  const std::string& url() const { return url_; }

 private:
  int fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  bool listening_ = false;
  std::string url_;
  std::vector<int> fillers_;
};

TEST(net_client, dial_times_out_with_connect_timeout) {
  both_sides h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}));
  const full_listener l;
  ASSERT_TRUE(l.listening());
  result_log out;
  dial_options d;
  d.timeout = 200ms;
  d.on_result = out.callback();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_FALSE(r.get().dial(l.url(), std::move(d)));
  ASSERT_TRUE(wait_for([&] { return out.count() == 1; }, 5s));
  const auto took = std::chrono::steady_clock::now() - t0;
  std::lock_guard<std::mutex> lock(out.mu);
  EXPECT_EQ(out.ec, make_error_code(errc::connect_timeout)) << out.ec.message();
  EXPECT_FALSE(out.had_conn);
  EXPECT_GE(took, 190ms);
  EXPECT_LT(took, 2s);
  EXPECT_FALSE(h.client_opened.load());
}

TEST(net_client, dial_unix_socket) {
  both_sides h;
  const std::string path = "/tmp/evnet_test_dial_" + std::to_string(::getpid()) + ".sock";
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"unix://" + path}));
  dial_options d;
  d.context = std::string("unix!");
  ASSERT_FALSE(r.get().dial("unix://" + path, std::move(d)));
  ASSERT_TRUE(wait_for([&] { return h.get() == "unix!"; }));
  r.stop();
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "socket file removed at stop";
}

TEST(net_client, dial_that_cannot_start_never_calls_back) {
  both_sides h;
  engine e;
  result_log out;
  dial_options d0;
  d0.on_result = out.callback();
  EXPECT_EQ(e.dial("tcp://127.0.0.1:1", std::move(d0)), make_error_code(errc::stopped));
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}));
  dial_options d1;
  d1.on_result = out.callback();
  EXPECT_TRUE(r.get().dial("nonsense", std::move(d1)));
  dial_options d2;
  d2.on_result = out.callback();
  EXPECT_TRUE(r.get().dial("udp://127.0.0.1:9", std::move(d2)));
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(out.count(), 0);
}

TEST(net_client, dial_pending_at_stop_reports_engine_stopping) {
  both_sides h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}));
  const full_listener l;
  ASSERT_TRUE(l.listening());
  result_log out;
  dial_options d;
  d.on_result = out.callback();
  ASSERT_FALSE(r.get().dial(l.url(), std::move(d)));
  std::this_thread::sleep_for(50ms);
  r.stop();
  std::lock_guard<std::mutex> lock(out.mu);
  EXPECT_EQ(out.calls, 1);
  EXPECT_EQ(out.ec, make_error_code(errc::engine_stopping)) << out.ec.message();
}

// A conn closed inside on_result never reaches on_open, so on_close is not owed either (the
// handler's contract: on_close exactly once for every conn whose on_open was called). It used
// to get on_close without on_open.
struct open_close_counter : booted_handler {
  action on_open(conn& c) override {
    (c.is_client() ? client_opens : server_opens)++;
    return action::none;
  }
  void on_close(conn& c, std::error_code ec) override {
    (void)ec;
    (c.is_client() ? client_closes : server_closes)++;
  }
  std::atomic<int> client_opens{0}, client_closes{0}, server_opens{0}, server_closes{0};
};

TEST(net_client, conn_closed_in_on_result_gets_neither_on_open_nor_on_close) {
  open_close_counter h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"tcp://127.0.0.1:0"}));
  result_log out;
  dial_options d;
  d.on_result = [&out](conn* c, std::error_code ec) {
    out.callback()(c, ec);
    if (c != nullptr) {
      c->close();
    }
  };
  ASSERT_FALSE(r.get().dial("tcp://127.0.0.1:" + std::to_string(r.port()), std::move(d)));
  // The server side sees the connection open and then the client's close.
  ASSERT_TRUE(wait_for([&] { return h.server_closes.load() == 1; }));
  EXPECT_EQ(h.server_opens.load(), 1);
  EXPECT_EQ(out.count(), 1);
  EXPECT_EQ(h.client_opens.load(), 0);
  EXPECT_EQ(h.client_closes.load(), 0);
  EXPECT_EQ(r.get().connection_count(), 0u);
}

// A Unix dial connects at once, inside the loop task that starts it: a close() in on_result
// is deferred there (a task counts as a callback), and on_open and on_close both ran.
TEST(net_client, unix_conn_closed_in_on_result_gets_neither_on_open_nor_on_close) {
  open_close_counter h;
  const std::string path = "/tmp/evnet_test_dial_close_" + std::to_string(::getpid()) + ".sock";
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"unix://" + path}));
  result_log out;
  dial_options d;
  d.on_result = [&out](conn* c, std::error_code ec) {
    out.callback()(c, ec);
    if (c != nullptr) {
      c->close();
    }
  };
  ASSERT_FALSE(r.get().dial("unix://" + path, std::move(d)));
  ASSERT_TRUE(wait_for([&] { return h.server_closes.load() == 1; }));
  r.stop();
  EXPECT_EQ(out.count(), 1);
  EXPECT_EQ(h.server_opens.load(), 1);
  EXPECT_EQ(h.client_opens.load(), 0);
  EXPECT_EQ(h.client_closes.load(), 0);
}

}  // namespace
}  // namespace evnet
