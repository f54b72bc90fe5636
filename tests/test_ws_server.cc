// WebSocket server in-process: protocol violations and close codes with a raw-socket client that
// crafts frames, then evnet's own ws::client against ws::server (echo, close codes, limits,
// permessage-deflate, cross-thread sends). Real sockets on 127.0.0.1.
#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>

#include "evnet/engine.h"
#include "evnet/ws/client.h"
#include "evnet/ws/frame.h"
#include "evnet/ws/handshake.h"
#include "evnet/ws/server.h"
#include "proto_test_util.h"
#include "ws/session.h"
#include "ws/url.h"

namespace ws = evnet::ws;
using namespace std::chrono_literals;

namespace evnet::ws::detail {

// The bytes held by a connection's per-message buffers (the reader's reassembly and inflate
// buffers, the session's staging and compression buffers). Loop thread of the connection.
struct reader_test_access {
  static std::size_t capacity(const reader& r) {
    return r.msg_buf_.capacity() + r.inflated_.capacity();
  }
};
struct session_test_access {
  static std::size_t capacity(const connection& c) {
    const session* s = session::of(c);
    return s ? s->out_.capacity() + s->scratch_.capacity() +
                   reader_test_access::capacity(s->reader_)
             : 0;
  }
};

}  // namespace evnet::ws::detail

namespace {

// Echoes messages; "close:<code>" makes the server close with that code.
class recording_handler : public ws::handler {
 public:
  void on_open(const ws::connection_ptr& c) override {
    std::lock_guard<std::mutex> lk(mu_);
    last_ = c;
    ++opened_;
    cv_.notify_all();
  }
  void on_message(const ws::connection_ptr& c, ws::opcode type, std::string_view data) override {
    if (data.substr(0, 6) == "close:") {
      (void)c->close(static_cast<std::uint16_t>(std::stoi(std::string(data.substr(6)))), "asked");
      return;
    }
    (void)c->send(type, data);
  }
  void on_close(const ws::connection_ptr&, std::uint16_t code, std::string_view reason) override {
    std::lock_guard<std::mutex> lk(mu_);
    closes_.emplace_back(code, std::string(reason));
    cv_.notify_all();
  }
  void on_connect_failed(std::string_view, std::string_view what) override {
    std::lock_guard<std::mutex> lk(mu_);
    failures_.emplace_back(what);
    cv_.notify_all();
  }
  // Waits for the n-th close and returns it.
  std::pair<std::uint16_t, std::string> wait_close(std::size_t n = 1) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, 10s, [&] { return closes_.size() >= n; });
    return closes_.size() >= n ? closes_[n - 1] : std::make_pair<std::uint16_t, std::string>(0, "");
  }
  ws::connection_ptr wait_open() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, 10s, [&] { return opened_ > 0; });
    return last_;
  }
  std::string wait_failure() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, 10s, [&] { return !failures_.empty(); });
    return failures_.empty() ? "" : failures_[0];
  }

  std::mutex& mu() { return mu_; }
  // The closes so far; hold mu() while reading.
  const std::vector<std::pair<std::uint16_t, std::string>>& closes() const { return closes_; }

 protected:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::uint16_t, std::string>> closes_;
  std::vector<std::string> failures_;
  ws::connection_ptr last_;
  int opened_ = 0;
};

// Polls pred every 5 ms until it holds or `timeout` passes.
template <typename Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

class test_ws_server {
 public:
  // `routes`, if given, adds plain HTTP routes to the server's router before it runs.
  explicit test_ws_server(ws::handler& h, ws::options o = {},
                          const std::function<void(evnet::http::router&)>& routes = {})
      : srv_(h, std::move(o), "/") {
    if (routes) {
      routes(srv_.routes());
    }
    auto p = std::make_shared<std::promise<int>>();
    auto f = p->get_future();
    srv_.http_options().on_boot = [p](evnet::engine& e) {
      p->set_value(e.listen_addresses().at(0).port());
    };
    thread_ = std::thread([this] { (void)srv_.run({"tcp://127.0.0.1:0"}); });
    if (f.wait_for(10s) == std::future_status::ready) {
      port_ = f.get();
    }
  }
  ~test_ws_server() { stop(); }
  // Stops the server and waits for run() to return; returns how long that took.
  std::chrono::milliseconds stop() {
    const auto t0 = std::chrono::steady_clock::now();
    if (thread_.joinable()) {
      srv_.stop();
      thread_.join();
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 t0);
  }
  int port() const { return port_; }
  std::string url() const { return "ws://127.0.0.1:" + std::to_string(port_) + "/"; }

 private:
  ws::server srv_;
  std::thread thread_;
  int port_ = 0;
};

// A raw client: does the handshake by hand, sends crafted frames, reads frames.
struct raw_ws {
  proto_test::client tcp;
  ws::reader reader{[] {
    ws::reader_config c;
    c.role = ws::role::client;
    return c;
  }()};
  std::vector<char> pending;

  explicit raw_ws(int port, std::string_view first_frames = {}, std::string_view extensions = {})
      : tcp(port) {
    std::string key = ws::generate_key();
    std::string req;
    ws::write_client_request(req, "127.0.0.1", "/", key, {}, extensions);
    req.append(first_frames);
    EXPECT_TRUE(tcp.send(req));
    std::string resp;
    while (resp.find("\r\n\r\n") == std::string::npos) {
      std::string s = tcp.recv_some();
      if (s.empty()) {
        break;
      }
      resp += s;
    }
    EXPECT_EQ(resp.rfind("HTTP/1.1 101", 0), 0u) << resp;
    auto end = resp.find("\r\n\r\n");
    if (end != std::string::npos) {
      pending.assign(resp.begin() + end + 4, resp.end());
    }
  }

  bool send_frame(ws::opcode op, std::string_view payload, bool fin = true) {
    std::string f;
    ws::append_frame(f, op, payload, true, fin);
    return tcp.send(f);
  }

  // Next event from the server; `event` is need_more on EOF/timeout.
  ws::read_step next(std::string& data) {
    for (;;) {
      if (!pending.empty()) {
        ws::read_step s = reader.next(pending);
        if (s.event != ws::read_event::need_more) {
          data.assign(s.data.empty() ? std::string_view(s.reason) : s.data);
          pending.erase(pending.begin(), pending.begin() + static_cast<long>(s.consumed));
          return s;
        }
        pending.clear();
      }
      std::string more = tcp.recv_some();
      if (more.empty()) {
        return {};
      }
      pending.assign(more.begin(), more.end());
    }
  }

  // The next frame from the server as it is on the wire, without the reader (which knows no
  // permessage-deflate): its first byte (FIN, RSV, opcode) and payload. False on EOF/timeout.
  bool next_raw(unsigned& b0, std::string& payload) {
    auto need = [&](std::size_t n) {
      while (pending.size() < n) {
        std::string more = tcp.recv_some();
        if (more.empty()) {
          return false;
        }
        pending.insert(pending.end(), more.begin(), more.end());
      }
      return true;
    };
    if (!need(2)) {
      return false;
    }
    b0 = static_cast<unsigned char>(pending[0]);
    std::uint64_t len = static_cast<unsigned char>(pending[1]) & 0x7f;
    std::size_t at = 2;
    if (len >= 126) {
      at = len == 126 ? 4 : 10;
      if (!need(at)) {
        return false;
      }
      len = 0;
      for (std::size_t i = 2; i < at; ++i) {
        len = (len << 8) | static_cast<unsigned char>(pending[i]);
      }
    }
    if (!need(at + len)) {
      return false;
    }
    payload.assign(pending.begin() + static_cast<long>(at),
                   pending.begin() + static_cast<long>(at + len));
    pending.erase(pending.begin(), pending.begin() + static_cast<long>(at + len));
    return true;
  }

  bool eof_follows() {
    bool eof = false;
    std::string rest = tcp.recv_until_eof(&eof);
    return eof;
  }
};

void expect_close(raw_ws& c, std::uint16_t code) {
  std::string data;
  ws::read_step s = c.next(data);
  ASSERT_EQ(s.event, ws::read_event::close) << "got event " << int(s.event);
  EXPECT_EQ(s.code, code) << data;
  EXPECT_TRUE(c.eof_follows()) << "server must close TCP after a failing close";
}

TEST(ws_server, handshake_with_first_frame_in_same_packet) {
  recording_handler h;
  test_ws_server s(h);
  std::string f;
  ws::append_frame(f, ws::opcode::text, "early", true);
  raw_ws c(s.port(), f);
  std::string data;
  auto st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::message);
  EXPECT_EQ(st.type, ws::opcode::text);
  EXPECT_EQ(data, "early");
}

TEST(ws_server, echoes_with_same_opcode_and_fragments) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  ASSERT_TRUE(c.send_frame(ws::opcode::binary, std::string("\0\1\2", 3)));
  std::string data;
  auto st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::message);
  EXPECT_EQ(st.type, ws::opcode::binary);
  EXPECT_EQ(data, std::string("\0\1\2", 3));
  ASSERT_TRUE(c.send_frame(ws::opcode::text, "frag", false));
  ASSERT_TRUE(c.send_frame(ws::opcode::ping, "mid"));
  ASSERT_TRUE(c.send_frame(ws::opcode::continuation, "mented", true));
  st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::pong);
  EXPECT_EQ(data, "mid");
  st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::message);
  EXPECT_EQ(data, "fragmented");
}

// Empty payloads staged during a callback batch (a ping with the default payload, an empty text)
// have no data pointer: the staging copy must not hand memcpy a null pointer (UBSan aborted the
// server process here).
class empty_payload_handler : public ws::handler {
 public:
  void on_open(const ws::connection_ptr& c) override { (void)c->ping(); }
  void on_message(const ws::connection_ptr& c, ws::opcode, std::string_view) override {
    (void)c->ping();
    (void)c->send_text({});
  }
  void on_ping(const ws::connection_ptr& c, std::string_view) override { (void)c->send_binary({}); }
};

TEST(ws_server, empty_ping_and_message_sent_from_callbacks) {
  empty_payload_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  std::string data = "x";
  ws::read_step st = c.next(data);  // on_open's ping
  ASSERT_EQ(st.event, ws::read_event::ping);
  EXPECT_EQ(data, "");
  ASSERT_TRUE(c.send_frame(ws::opcode::text, "hi"));
  st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::ping);
  EXPECT_EQ(data, "");
  data = "x";
  st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::message);
  EXPECT_EQ(st.type, ws::opcode::text);
  EXPECT_EQ(data, "");
  ASSERT_TRUE(c.send_frame(ws::opcode::ping, {}));
  st = c.next(data);  // the automatic pong, then on_ping's empty binary message
  ASSERT_EQ(st.event, ws::read_event::pong);
  EXPECT_EQ(data, "");
  data = "x";
  st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::message);
  EXPECT_EQ(st.type, ws::opcode::binary);
  EXPECT_EQ(data, "");
}

// Large echoes are written straight from the input (unmasked in place) together with the staged
// small ones: many of each in one batch (more than the per-batch limit of such payloads), a ping
// among them, and frames split across reads so that some sit in the connection's own buffer.
TEST(ws_server, pipelined_large_and_small_echoes_keep_order) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  struct sent_msg {
    ws::opcode type;
    std::string data;
  };
  std::vector<sent_msg> plan;
  for (int i = 0; i < 40; ++i) {
    std::string big(512 + static_cast<std::size_t>(i) * 97, '\0');
    for (std::size_t k = 0; k < big.size(); ++k) {
      big[k] = static_cast<char>((k * 13 + static_cast<std::size_t>(i)) & 0xFF);
    }
    plan.push_back({ws::opcode::binary, std::move(big)});
    plan.push_back({ws::opcode::text, "small " + std::to_string(i)});
  }
  plan.push_back({ws::opcode::binary, std::string(70000, 'L')});  // 64-bit length
  std::string wire;
  for (std::size_t i = 0; i < plan.size(); ++i) {
    ws::append_frame(wire, plan[i].type, plan[i].data, true);
    if (i == 10) {
      ws::append_frame(wire, ws::opcode::ping, "among", true);
    }
  }
  // Three pieces with pauses, cut inside frames.
  std::size_t cut1 = wire.size() / 3 + 5, cut2 = 2 * wire.size() / 3 + 7;
  ASSERT_TRUE(c.tcp.send(std::string_view(wire).substr(0, cut1)));
  std::this_thread::sleep_for(30ms);
  ASSERT_TRUE(c.tcp.send(std::string_view(wire).substr(cut1, cut2 - cut1)));
  std::this_thread::sleep_for(30ms);
  ASSERT_TRUE(c.tcp.send(std::string_view(wire).substr(cut2)));
  bool pong = false;
  for (std::size_t i = 0; i < plan.size();) {
    std::string data;
    ws::read_step st = c.next(data);
    if (st.event == ws::read_event::pong) {
      EXPECT_EQ(data, "among");
      EXPECT_FALSE(pong);
      pong = true;
      continue;
    }
    ASSERT_EQ(st.event, ws::read_event::message) << "message " << i;
    EXPECT_EQ(st.type, plan[i].type) << "message " << i;
    ASSERT_EQ(data, plan[i].data) << "message " << i;
    ++i;
  }
  EXPECT_TRUE(pong);
}

TEST(ws_server, unmasked_client_frame_is_1002) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  std::string f;
  ws::append_frame(f, ws::opcode::text, "no mask", false);
  ASSERT_TRUE(c.tcp.send(f));
  expect_close(c, 1002);
  EXPECT_EQ(h.wait_close().first, 1002);
}

TEST(ws_server, reserved_opcode_is_1002) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  ASSERT_TRUE(c.send_frame(static_cast<ws::opcode>(0x3), "x"));
  expect_close(c, 1002);
}

TEST(ws_server, invalid_utf8_is_1007) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  ASSERT_TRUE(c.send_frame(ws::opcode::text, "ok\xC3", false));
  ASSERT_TRUE(c.send_frame(ws::opcode::continuation, "(", true));
  expect_close(c, 1007);
  EXPECT_EQ(h.wait_close().first, 1007);
}

TEST(ws_server, message_over_limit_is_1009) {
  recording_handler h;
  ws::options o;
  o.max_message_bytes = 1000;
  test_ws_server s(h, o);
  raw_ws c(s.port());
  ASSERT_TRUE(c.send_frame(ws::opcode::binary, std::string(600, 'a'), false));
  ASSERT_TRUE(c.send_frame(ws::opcode::continuation, std::string(600, 'a'), true));
  expect_close(c, 1009);
}

TEST(ws_server, client_close_code_is_echoed) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  std::string payload = "\x0F\xA1reason";  // 4001
  ASSERT_TRUE(c.send_frame(ws::opcode::close, payload));
  std::string data;
  auto st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::close);
  EXPECT_EQ(st.code, 4001);
  EXPECT_TRUE(c.eof_follows());
  auto cl = h.wait_close();
  EXPECT_EQ(cl.first, 4001);
  EXPECT_EQ(cl.second, "reason");
}

TEST(ws_server, server_initiated_close_waits_for_reply) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  ASSERT_TRUE(c.send_frame(ws::opcode::text, "close:4002"));
  std::string data;
  auto st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::close);
  EXPECT_EQ(st.code, 4002);
  EXPECT_EQ(data, "asked");
  // Messages after the server's close are dropped, then our close reply completes it.
  ASSERT_TRUE(c.send_frame(ws::opcode::text, "late"));
  ASSERT_TRUE(c.send_frame(ws::opcode::close, "\x0F\xA2"));
  EXPECT_TRUE(c.eof_follows());
  EXPECT_EQ(h.wait_close().first, 4002);
}

// connection::close with a code that may not be sent (1006, 1015, 999, 5000...) sent it anyway,
// and the peer failed the connection with 1002; it now returns invalid_argument and sends
// nothing. A reason over 123 bytes was cut mid-character (the peer failed with 1007): it is cut
// at a UTF-8 boundary now.
class bad_close_handler : public recording_handler {
 public:
  // "\xC3\xA9" (é) straddles byte 123: the cut keeps the 122 ASCII bytes.
  static std::string long_reason() { return std::string(122, 'r') + "\xC3\xA9\xC3\xA9tail"; }
  void on_message(const ws::connection_ptr& c, ws::opcode, std::string_view data) override {
    if (data == "bad") {
      std::string refused;
      for (std::uint16_t code : {999, 1004, 1006, 1015, 2999, 5000}) {
        if (c->close(code, "no") == evnet::errc::invalid_argument) {
          refused += std::to_string(code) + " ";
        }
      }
      (void)c->send_text(refused + (c->is_open() ? "open" : "closing"));
      return;
    }
    (void)c->close(4001, long_reason());
  }
};

TEST(ws_server, close_refuses_unsendable_codes_and_cuts_the_reason_on_a_character) {
  bad_close_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  auto sc = h.wait_open();
  ASSERT_TRUE(sc);
  EXPECT_EQ(sc->close(1006), evnet::errc::invalid_argument);  // from another thread: checked too
  ASSERT_TRUE(c.send_frame(ws::opcode::text, "bad"));
  std::string data;
  ws::read_step st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::message) << "event " << int(st.event) << ": " << data;
  EXPECT_EQ(data, "999 1004 1006 1015 2999 5000 open");
  ASSERT_TRUE(c.send_frame(ws::opcode::text, "long"));
  st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::close) << "event " << int(st.event) << ": " << data;
  EXPECT_EQ(st.code, 4001);
  EXPECT_EQ(data, std::string(122, 'r'));
  ASSERT_TRUE(c.send_frame(ws::opcode::close, std::string("\x0f\xa1", 2)));  // 4001
  EXPECT_EQ(h.wait_close().first, 4001);
}

TEST(ws_server, close_times_out_without_reply) {
  recording_handler h;
  ws::options o;
  o.close_timeout = 200ms;
  test_ws_server s(h, o);
  raw_ws c(s.port());
  ASSERT_TRUE(c.send_frame(ws::opcode::text, "close:1000"));
  std::string data;
  ASSERT_EQ(c.next(data).event, ws::read_event::close);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.eof_follows());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_EQ(h.wait_close().first, 1006) << "no close frame was received";
}

TEST(ws_server, tcp_drop_reports_1006) {
  recording_handler h;
  test_ws_server s(h);
  {
    raw_ws c(s.port());
    ASSERT_TRUE(c.send_frame(ws::opcode::text, "hi"));
    std::string data;
    ASSERT_EQ(c.next(data).event, ws::read_event::message);
  }
  EXPECT_EQ(h.wait_close().first, 1006);
}

TEST(ws_server, cross_thread_send_and_close) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  ws::connection_ptr conn = h.wait_open();
  ASSERT_TRUE(conn);
  std::thread t([&] {
    for (int i = 0; i < 100; ++i) {
      EXPECT_FALSE(conn->send_text("m" + std::to_string(i)));
    }
    EXPECT_FALSE(conn->close(4100, "from another thread"));
  });
  t.join();
  std::string data;
  for (int i = 0; i < 100; ++i) {
    auto st = c.next(data);
    ASSERT_EQ(st.event, ws::read_event::message);
    EXPECT_EQ(data, "m" + std::to_string(i));
  }
  auto st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::close);
  EXPECT_EQ(st.code, 4100);
  EXPECT_EQ(conn->send_text("too late"), evnet::errc::closed);
}

// A stopping server says 1001 "going away" to each open WebSocket and keeps reading until the
// peer's close reply, which ends the connection (RFC 6455 §7.1.2: a clean close both ways).
TEST(ws_server, stop_says_going_away_and_completes_the_close_handshake) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  ASSERT_TRUE(c.send_frame(ws::opcode::text, "hi"));
  std::string data;
  ASSERT_EQ(c.next(data).event, ws::read_event::message);
  std::future<std::chrono::milliseconds> took =
      std::async(std::launch::async, [&] { return s.stop(); });
  auto st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::close);
  EXPECT_EQ(st.code, ws::close_code::going_away);
  EXPECT_EQ(data, "going away");
  ASSERT_TRUE(c.send_frame(ws::opcode::close, "\x03\xE9"));  // 1001 echoed
  EXPECT_TRUE(c.eof_follows());
  EXPECT_EQ(h.wait_close().first, ws::close_code::going_away) << "the peer's reply arrived";
  EXPECT_LT(took.get(), 1000ms) << "the reply ended it, not the stop grace period";
}

// A peer that never answers the 1001 does not hold the stop beyond the grace period; the
// server reports 1006 (no close frame received), as for any unanswered close.
TEST(ws_server, stop_with_a_silent_peer_ends_within_the_grace_period) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port());
  ASSERT_TRUE(h.wait_open());
  std::future<std::chrono::milliseconds> took =
      std::async(std::launch::async, [&] { return s.stop(); });
  std::string data;
  auto st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::close);
  EXPECT_EQ(st.code, ws::close_code::going_away);
  EXPECT_TRUE(c.eof_follows());
  EXPECT_LT(took.get(), 3000ms);  // stop_grace is 1 s
  EXPECT_EQ(h.wait_close().first, ws::close_code::abnormal);
}

// Keepalive (options::ping_interval): a silent peer is pinged; its pong (like any frame)
// keeps the connection, and another silence brings another ping.
// Options with keepalive on.
ws::options keepalive(std::chrono::milliseconds interval, std::chrono::milliseconds timeout) {
  ws::options o;
  o.ping_interval = interval;
  o.ping_timeout = timeout;
  return o;
}

TEST(ws_server, keepalive_pings_a_silent_peer_and_its_pong_keeps_the_connection) {
  recording_handler h;
  test_ws_server s(h, keepalive(100ms, 400ms));
  raw_ws c(s.port());
  std::string data;
  for (int i = 0; i < 2; ++i) {
    ws::read_step st = c.next(data);
    ASSERT_EQ(st.event, ws::read_event::ping) << "round " << i;
    ASSERT_TRUE(c.send_frame(ws::opcode::pong, data));
  }
  ASSERT_TRUE(c.send_frame(ws::opcode::text, "still here"));
  ws::read_step st = c.next(data);
  while (st.event == ws::read_event::ping) {  // a third ping may come first on a slow machine
    ASSERT_TRUE(c.send_frame(ws::opcode::pong, data));
    st = c.next(data);
  }
  ASSERT_EQ(st.event, ws::read_event::message);
  EXPECT_EQ(data, "still here");
  std::lock_guard<std::mutex> lk(h.mu());
  EXPECT_TRUE(h.closes().empty()) << "closed with " << h.closes()[0].first;
}

// A peer that answers nothing within ping_timeout is failed with 1011 and its TCP connection
// closed without waiting close_timeout for a reply.
TEST(ws_server, keepalive_fails_a_peer_that_never_answers_with_1011) {
  recording_handler h;
  ws::options o = keepalive(100ms, 300ms);
  o.close_timeout = 10s;
  test_ws_server s(h, o);
  raw_ws c(s.port());
  std::string data;
  ASSERT_EQ(c.next(data).event, ws::read_event::ping);
  const auto t0 = std::chrono::steady_clock::now();
  ws::read_step st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::close);
  EXPECT_EQ(st.code, ws::close_code::internal_error);
  EXPECT_EQ(data, "keepalive ping timeout");
  EXPECT_TRUE(c.eof_follows());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "waited close_timeout for a reply";
  EXPECT_EQ(h.wait_close().first, ws::close_code::internal_error);
}

// A peer that keeps talking is never pinged.
TEST(ws_server, keepalive_does_not_ping_a_busy_peer) {
  recording_handler h;
  test_ws_server s(h, keepalive(300ms, 300ms));
  raw_ws c(s.port());
  std::string data;
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(c.send_frame(ws::opcode::text, "m" + std::to_string(i)));
    ws::read_step st = c.next(data);
    ASSERT_EQ(st.event, ws::read_event::message) << "message " << i;
    EXPECT_EQ(data, "m" + std::to_string(i));
    std::this_thread::sleep_for(30ms);
  }
}

// ---------------- evnet's ws::client against ws::server ----------------

class client_handler : public recording_handler {
 public:
  void on_message(const ws::connection_ptr&, ws::opcode type, std::string_view data) override {
    std::lock_guard<std::mutex> lk(mu_);
    messages_.emplace_back(type, std::string(data));
    cv_.notify_all();
  }
  std::vector<std::pair<ws::opcode, std::string>> wait_messages(std::size_t n) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, 10s, [&] { return messages_.size() >= n; });
    return messages_;
  }
  // Waits until the handshake failed (its reason) or opened ("opened with <extensions>").
  std::string wait_handshake() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, 10s, [&] { return opened_ > 0 || !failures_.empty(); });
    if (!failures_.empty()) {
      return failures_[0];
    }
    return last_ ? "opened with \"" + last_->extensions() + "\"" : "";
  }

 private:
  std::vector<std::pair<ws::opcode, std::string>> messages_;
};

TEST(ws_client, echo_and_close_codes_both_sides) {
  recording_handler server_h;
  test_ws_server s(server_h);
  client_handler h;
  ws::client cl(h);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(s.url()));
  auto c = h.wait_open();
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->send_text("hello"));
  EXPECT_FALSE(c->send_binary(std::string(70000, '\x7f')));
  auto msgs = h.wait_messages(2);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].first, ws::opcode::text);
  EXPECT_EQ(msgs[0].second, "hello");
  EXPECT_EQ(msgs[1].first, ws::opcode::binary);
  EXPECT_EQ(msgs[1].second.size(), 70000u);
  EXPECT_FALSE(c->close(4003, "client done"));
  EXPECT_EQ(h.wait_close().first, 4003);
  auto sc = server_h.wait_close();
  EXPECT_EQ(sc.first, 4003);
  EXPECT_EQ(sc.second, "client done");
}

// Stopping a client says 1001 "going away" to the server, which echoes it: both sides report
// 1001.
TEST(ws_client, stop_says_going_away_to_the_server) {
  recording_handler server_h;
  test_ws_server s(server_h);
  client_handler h;
  ws::client cl(h);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(s.url()));
  ASSERT_TRUE(h.wait_open());
  ASSERT_TRUE(server_h.wait_open());
  cl.stop();
  EXPECT_EQ(h.wait_close().first, ws::close_code::going_away);
  auto sc = server_h.wait_close();
  EXPECT_EQ(sc.first, ws::close_code::going_away);
  EXPECT_EQ(sc.second, "going away");
}

// The client's keepalive pings the server when it is silent; the server answers, so the
// connection lives on (and still echoes).
TEST(ws_client, keepalive_pings_are_answered_by_the_server) {
  struct ping_counter : recording_handler {
    void on_ping(const ws::connection_ptr&, std::string_view) override { ++pings; }
    std::atomic<int> pings{0};
  } server_h;
  test_ws_server s(server_h);
  client_handler h;
  ws::client_options co;
  co.ping_interval = 100ms;
  co.ping_timeout = 300ms;
  ws::client cl(h, co);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(s.url()));
  auto c = h.wait_open();
  ASSERT_TRUE(c);
  EXPECT_TRUE(wait_until([&] { return server_h.pings.load() >= 2; }, 10s));
  EXPECT_FALSE(c->send_text("after pings"));
  auto msgs = h.wait_messages(1);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].second, "after pings");
  std::lock_guard<std::mutex> lk(h.mu());
  EXPECT_TRUE(h.closes().empty());
}

// Our client sends `size` bytes (uncompressed) to our server limited to `limit`: both ends
// must report 1009.
void expect_1009_both_ends(std::size_t limit, std::size_t size) {
  recording_handler server_h;
  ws::options o;
  o.max_message_bytes = limit;
  test_ws_server s(server_h, o);
  client_handler h;
  ws::client_options co;
  co.permessage_deflate = false;
  ws::client cl(h, co);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(s.url()));
  auto c = h.wait_open();
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->send_binary(std::string(size, 'x')));
  EXPECT_EQ(h.wait_close().first, 1009);
  EXPECT_EQ(server_h.wait_close().first, 1009);
}

TEST(ws_client, server_limit_reported_as_1009) {
  expect_1009_both_ends(1000, 2000);
}

TEST(ws_client, permessage_deflate_negotiated_and_used) {
  recording_handler server_h;
  test_ws_server s(server_h);
  client_handler h;
  ws::client cl(h);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(s.url()));
  auto c = h.wait_open();
  ASSERT_TRUE(c);
  EXPECT_NE(c->extensions().find("permessage-deflate"), std::string::npos);
  std::string big;
  for (int i = 0; i < 5000; ++i) {
    big += "compressible text " + std::to_string(i % 10);
  }
  EXPECT_FALSE(c->send_text(big));
  EXPECT_FALSE(c->send_text("short"));
  auto msgs = h.wait_messages(2);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].second, big);
  EXPECT_EQ(msgs[1].second, "short");
}

// RFC 7692 §7.2.1 by hand with zlib (not evnet's codec): raw DEFLATE (windowBits -15) ended with
// Z_SYNC_FLUSH, whose trailing 00 00 ff ff is removed.
std::string raw_deflate(std::string_view in) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, static_cast<uLong>(in.size())) + 16, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_SYNC_FLUSH), Z_OK);
  EXPECT_EQ(z.avail_in, 0u);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  EXPECT_GE(out.size(), 4u);
  EXPECT_EQ(out.substr(out.size() - 4), std::string("\x00\x00\xff\xff", 4));
  out.resize(out.size() - 4);
  return out;
}

// The inverse: appends 00 00 ff ff and inflates raw DEFLATE; "" (and a test failure) on error.
std::string raw_inflate(std::string_view in) {
  std::string src(in);
  src.append("\x00\x00\xff\xff", 4);
  z_stream z{};
  EXPECT_EQ(inflateInit2(&z, -15), Z_OK);
  z.next_in = reinterpret_cast<Bytef*>(src.data());
  z.avail_in = static_cast<uInt>(src.size());
  std::string out;
  char buf[4096];
  int rc = Z_OK;
  while (rc == Z_OK && z.avail_in > 0) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_SYNC_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
  }
  inflateEnd(&z);
  EXPECT_TRUE(rc == Z_OK || rc == Z_BUF_ERROR) << "inflate: " << rc;
  return rc == Z_OK || rc == Z_BUF_ERROR ? out : std::string();
}

// Reads from a raw client until the response head is complete (it may carry more after it);
// false if the connection ends first.
bool read_head(proto_test::client& tcp, std::string& in) {
  while (in.find("\r\n\r\n") == std::string::npos) {
    std::string more = tcp.recv_some();
    if (more.empty()) {
      ADD_FAILURE() << "no complete handshake response: " << in;
      return false;
    }
    in += more;
  }
  return true;
}

// permessage-deflate on the wire, with a client written here from the RFCs: it offers the
// extension, sends a masked text message compressed by zlib with RSV1 set, and reads the echo's
// frame itself. The server must have inflated ours (else the echo differs) and compressed its
// own: RSV1 set, a payload smaller than the text that inflates back to it.
TEST(ws_server, permessage_deflate_frames_are_compressed_on_the_wire) {
  recording_handler h;
  test_ws_server s(h);
  ASSERT_GT(s.port(), 0);
  proto_test::client tcp(s.port());
  ASSERT_TRUE(tcp.ok());
  ASSERT_TRUE(
      tcp.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"));
  std::string in;
  ASSERT_TRUE(read_head(tcp, in));
  const std::size_t head_end = in.find("\r\n\r\n") + 4;
  const std::string head = in.substr(0, head_end);
  in.erase(0, head_end);
  ASSERT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << head;
  // RFC 6455 §1.3's sample key and accept value.
  EXPECT_NE(head.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), std::string::npos)
      << head;
  ASSERT_NE(head.find("Sec-WebSocket-Extensions: permessage-deflate"), std::string::npos) << head;

  std::string text;
  for (int i = 0; i < 40; ++i) {
    text += "compressible text, line " + std::to_string(i % 4) + "; ";
  }
  ASSERT_LT(text.size(), 65536u);
  const std::string payload = raw_deflate(text);
  ASSERT_LT(payload.size(), text.size());
  // FIN | RSV1 | text; MASK | 16-bit length; masking key; masked payload (RFC 6455 §5.2, §5.3).
  std::string frame;
  frame.push_back(static_cast<char>(0x80 | 0x40 | 0x1));
  if (payload.size() < 126) {
    frame.push_back(static_cast<char>(0x80 | payload.size()));
  } else {
    frame.push_back(static_cast<char>(0x80 | 126));
    frame.push_back(static_cast<char>(payload.size() >> 8));
    frame.push_back(static_cast<char>(payload.size() & 0xff));
  }
  const char key[4] = {0x12, 0x34, 0x56, 0x78};
  frame.append(key, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) {
    frame.push_back(static_cast<char>(payload[i] ^ key[i % 4]));
  }
  ASSERT_TRUE(tcp.send(frame));

  // The echo: one unmasked frame (FIN, RSV1, text).
  auto need = [&](std::size_t n) {
    while (in.size() < n) {
      std::string more = tcp.recv_some();
      if (more.empty()) {
        return false;
      }
      in += more;
    }
    return true;
  };
  ASSERT_TRUE(need(2)) << "no echo frame";
  const auto b0 = static_cast<unsigned char>(in[0]);
  const auto b1 = static_cast<unsigned char>(in[1]);
  EXPECT_EQ(b0 & 0x80, 0x80) << "FIN";
  EXPECT_EQ(b0 & 0x40, 0x40) << "RSV1: the server's echo is not compressed";
  EXPECT_EQ(b0 & 0x30, 0) << "RSV2/RSV3";
  ASSERT_EQ(b0 & 0x0f, 0x1) << "opcode (a close here means the server rejected our frame)";
  ASSERT_EQ(b1 & 0x80, 0) << "a server frame is not masked";
  std::size_t len = b1 & 0x7f;
  std::size_t at = 2;
  if (len == 126) {
    ASSERT_TRUE(need(4));
    len = (static_cast<std::size_t>(static_cast<unsigned char>(in[2])) << 8) |
          static_cast<unsigned char>(in[3]);
    at = 4;
  }
  ASSERT_NE(len, 127u) << "unexpectedly large echo";
  ASSERT_TRUE(need(at + len)) << "echo frame cut short";
  const std::string echoed = in.substr(at, len);
  EXPECT_LT(echoed.size(), text.size()) << "the echo's payload is not compressed";
  EXPECT_EQ(raw_inflate(echoed), text);
}

// The size limits count inflated bytes. An incompressible message exactly at the limit, evnet
// client to evnet server and back, both with permessage-deflate: deflate would make it larger
// than the limit on the wire, and it was refused with 1009 (nothing delivered). Now the sender
// sends it uncompressed, and a compressed frame may exceed the limit a little anyway.
TEST(ws_client, incompressible_message_at_the_limit_passes_with_deflate) {
  constexpr std::size_t kLimit = 1 << 20;
  recording_handler server_h;  // echoes
  ws::options so;
  so.max_frame_bytes = so.max_message_bytes = kLimit;
  test_ws_server s(server_h, so);
  client_handler h;
  ws::client_options co;
  co.max_frame_bytes = co.max_message_bytes = kLimit;
  ws::client cl(h, co);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(s.url()));
  auto c = h.wait_open();
  ASSERT_TRUE(c);
  ASSERT_NE(c->extensions().find("permessage-deflate"), std::string::npos);
  const std::string msg = proto_test::random_bytes(kLimit, 7);
  EXPECT_FALSE(c->send_binary(msg));
  std::string text;
  for (int i = 0; i < 2000; ++i) {
    text += "compressible after the incompressible " + std::to_string(i % 7) + "\n";
  }
  EXPECT_FALSE(c->send_text(text));
  auto msgs = h.wait_messages(2);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].second.size(), msg.size());
  EXPECT_TRUE(msgs[0].second == msg);
  EXPECT_EQ(msgs[1].second, text);
  std::lock_guard<std::mutex> lk(h.mu());
  EXPECT_TRUE(h.closes().empty());
}

// A message whose inflated size passes the limit is still refused with 1009, whatever its size
// on the wire (here a few hundred bytes).
TEST(ws_client, compressed_message_over_the_limit_after_inflate_is_1009) {
  constexpr std::size_t kLimit = 1 << 20;
  recording_handler server_h;
  ws::options so;
  so.max_frame_bytes = so.max_message_bytes = kLimit;
  test_ws_server s(server_h, so);
  client_handler h;
  ws::client cl(h);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(s.url()));
  auto c = h.wait_open();
  ASSERT_TRUE(c);
  ASSERT_NE(c->extensions().find("permessage-deflate"), std::string::npos);
  EXPECT_FALSE(c->send_binary(std::string(kLimit + 1, 'z')));
  EXPECT_EQ(h.wait_close().first, 1009);
  EXPECT_EQ(server_h.wait_close().first, 1009);
}

// A server that fails a connection while the peer is still sending (a 4 MiB message over a
// 64 KiB limit) must not reset it: closing with the peer's bytes unread sent a RST, and the
// evnet client, still writing, saw the reset before the close frame and reported 1006 (5 runs
// of 5). The server now follows its close frame with a FIN and reads the rest away.
TEST(ws_client, message_far_over_the_limit_still_gets_1009_while_the_client_sends) {
  for (int run = 0; run < 3; ++run) {
    SCOPED_TRACE(run);
    expect_1009_both_ends(std::size_t{64} << 10, std::size_t{4} << 20);
  }
}

// The server's echo of an incompressible message goes out uncompressed (RSV1 clear, RFC 7692
// §6 lets each message choose), and compression resumes for the next, compressible, message.
TEST(ws_server, incompressible_echo_is_sent_uncompressed) {
  recording_handler h;
  test_ws_server s(h);
  raw_ws c(s.port(), {}, "permessage-deflate");
  const std::string msg = proto_test::random_bytes(3000, 9);
  std::string f;
  ws::append_frame(f, ws::opcode::binary, raw_deflate(msg), true, true, true);
  ASSERT_TRUE(c.tcp.send(f));
  unsigned b0 = 0;
  std::string payload;
  ASSERT_TRUE(c.next_raw(b0, payload));
  EXPECT_EQ(b0, 0x82u) << "FIN, RSV1 clear, binary";
  EXPECT_TRUE(payload == msg);
  std::string text;
  for (int i = 0; i < 100; ++i) {
    text += "compressible text " + std::to_string(i % 3) + "; ";
  }
  f.clear();
  ws::append_frame(f, ws::opcode::text, raw_deflate(text), true, true, true);
  ASSERT_TRUE(c.tcp.send(f));
  ASSERT_TRUE(c.next_raw(b0, payload));
  EXPECT_EQ(b0, 0xC1u) << "FIN, RSV1, text";
  EXPECT_LT(payload.size(), text.size());
  // Inflated without the first message: the server's compressor forgot it.
  EXPECT_EQ(raw_inflate(payload), text);
}

// After a large message, an idle connection gives its large buffers back: both ends, after a
// 4 MiB incompressible echo (reassembled in the reader, staged in full by the server) and a
// 4 MiB compressible one (inflated, and compressed into the compression buffer). Each end held
// several times 4 MiB per connection before.
class probe_echo : public ws::handler {
 public:
  void on_message(const ws::connection_ptr& c, ws::opcode type, std::string_view data) override {
    if (data == "probe") {
      (void)c->send_text(std::to_string(ws::detail::session_test_access::capacity(*c)));
      return;
    }
    (void)c->send(type, data);
  }
};

class probing_client : public client_handler {
 public:
  void on_message(const ws::connection_ptr& c, ws::opcode type, std::string_view data) override {
    if (type == ws::opcode::text && data.size() < 32) {
      held_ = ws::detail::session_test_access::capacity(*c);
    }
    client_handler::on_message(c, type, data);
  }
  std::atomic<std::size_t> held_{0};
};

TEST(ws_client, buffers_are_released_after_a_large_message) {
  constexpr std::size_t kBig = 4 << 20;
  probe_echo server_h;
  test_ws_server s(server_h);
  probing_client h;
  ws::client cl(h);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(s.url()));
  auto c = h.wait_open();
  ASSERT_TRUE(c);
  ASSERT_NE(c->extensions().find("permessage-deflate"), std::string::npos);
  const std::string random = proto_test::random_bytes(kBig, 11);
  std::string text;
  while (text.size() < kBig) {
    text += "a compressible line of text " + std::to_string(text.size() % 13) + "\n";
  }
  EXPECT_FALSE(c->send_binary(random));
  EXPECT_FALSE(c->send_text(text));
  auto msgs = h.wait_messages(2);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_TRUE(msgs[0].second == random);
  EXPECT_TRUE(msgs[1].second == text);
  // Asked after both echoes arrived, so in a later input batch on both ends.
  EXPECT_FALSE(c->send_text("probe"));
  msgs = h.wait_messages(3);
  ASSERT_EQ(msgs.size(), 3u);
  // Far below one 4 MiB buffer: each buffer still held is at most 64 KiB.
  constexpr std::size_t kMost = 1 << 20;
  EXPECT_LT(std::stoul(msgs[2].second), kMost) << "server side";
  EXPECT_LT(h.held_.load(), kMost) << "client side";
}

// RFC 6455 §11.3.4: Sec-WebSocket-Protocol and Sec-WebSocket-Extensions may be split over
// several header fields, which form one comma-separated list. Only the first field was read:
// the selector saw "superchat" alone, and neither "chat" nor permessage-deflate was agreed.
// A HEAD request with the upgrade fields reaches the endpoint's upgrade handler, which refuses
// it (400: the handshake must use GET); the refusal carried its text as a body, which a client
// reading the answer to HEAD (RFC 9110 §9.3.2: no content) takes for the start of the next
// response. It has the head only now; a GET's refusal (426) keeps its text.
TEST(ws_server, refusal_of_a_head_upgrade_request_has_no_body) {
  recording_handler h;
  test_ws_server s(h);
  const std::string fields =
      " / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
  struct tcase {
    std::string request;
    const char* status;
    bool body;
  };
  for (const tcase& t :
       {tcase{"HEAD" + fields + "Sec-WebSocket-Version: 13\r\n\r\n", "HTTP/1.1 400", false},
        tcase{"GET" + fields + "Sec-WebSocket-Version: 8\r\n\r\n", "HTTP/1.1 426", true}}) {
    SCOPED_TRACE(t.request.substr(0, 4) + t.status);
    proto_test::client tcp(s.port());
    ASSERT_TRUE(tcp.ok());
    ASSERT_TRUE(tcp.send(t.request));
    bool eof = false;
    const std::string all = tcp.recv_until_eof(&eof);
    EXPECT_TRUE(eof);
    ASSERT_EQ(all.rfind(t.status, 0), 0u) << all;
    EXPECT_NE(all.find("Content-Length: "), std::string::npos) << all;
    const std::size_t end = all.find("\r\n\r\n") + 4;
    EXPECT_EQ(end < all.size(), t.body) << "bytes after the head: " << all;
  }
}

TEST(ws_server, list_headers_split_over_several_fields_are_joined) {
  recording_handler h;
  ws::options o;
  std::mutex mu;
  std::string seen;
  o.select_protocol = [&](std::string_view offered) -> std::string_view {
    std::lock_guard<std::mutex> lk(mu);
    seen = std::string(offered);
    return offered.find("superchat, chat") != std::string_view::npos ? "chat" : "";
  };
  test_ws_server s(h, o);
  proto_test::client tcp(s.port());
  ASSERT_TRUE(tcp.ok());
  ASSERT_TRUE(
      tcp.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: superchat\r\nsec-websocket-protocol: chat\r\n"
               "Sec-WebSocket-Extensions: x-unknown\r\n"
               "SEC-WEBSOCKET-EXTENSIONS: permessage-deflate\r\n\r\n"));
  std::string in;
  ASSERT_TRUE(read_head(tcp, in));
  const std::string head = in.substr(0, in.find("\r\n\r\n") + 4);
  ASSERT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << head;
  EXPECT_NE(head.find("Sec-WebSocket-Protocol: chat\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Sec-WebSocket-Extensions: permessage-deflate"), std::string::npos) << head;
  std::lock_guard<std::mutex> lk(mu);
  EXPECT_EQ(seen, "superchat, chat");
}

// A selector that returns a value the client did not offer (RFC 6455 §4.2.2 allows only one
// of the offered values, or none): it was written into the 101 as returned, CR LF included.
TEST(ws_server, a_selected_subprotocol_the_client_did_not_offer_is_refused_with_500) {
  recording_handler h;
  ws::options o;
  static constexpr const char* kPicks[] = {"other", "chat\r\nX-Injected: 1", "cha", "chat"};
  std::atomic<int> pick{0};  // read on the server's loop thread
  o.select_protocol = [&](std::string_view) -> std::string_view { return kPicks[pick.load()]; };
  test_ws_server s(h, o);
  for (int i = 0; i < 4; ++i) {
    const char* p = kPicks[i];
    SCOPED_TRACE(p);
    pick.store(i);
    proto_test::client tcp(s.port());
    ASSERT_TRUE(tcp.ok());
    ASSERT_TRUE(
        tcp.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: superchat , chat\r\n\r\n"));
    std::string in;
    ASSERT_TRUE(read_head(tcp, in));
    const std::string head = in.substr(0, in.find("\r\n\r\n") + 4);
    EXPECT_EQ(head.find("X-Injected"), std::string::npos) << head;
    if (std::string_view(p) == "chat") {
      EXPECT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << head;
      EXPECT_NE(head.find("Sec-WebSocket-Protocol: chat\r\n"), std::string::npos) << head;
    } else {
      EXPECT_EQ(head.rfind("HTTP/1.1 500", 0), 0u) << head;
      EXPECT_EQ(head.find("Sec-WebSocket-Protocol"), std::string::npos) << head;
    }
  }
}

TEST(ws_client, subprotocol_selected_and_context_takeover_negotiated) {
  recording_handler server_h;
  ws::options so;
  so.select_protocol = [](std::string_view offered) -> std::string_view {
    return offered.find("chat") != std::string_view::npos ? "chat" : "";
  };
  test_ws_server s(server_h, so);
  client_handler h;
  ws::client_options co;
  co.protocols = "superchat.v2, chat";
  co.deflate.server_no_context_takeover = true;
  co.deflate.client_no_context_takeover = true;
  co.deflate_min_bytes = 0;
  ws::client cl(h, co);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(s.url()));
  auto c = h.wait_open();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->subprotocol(), "chat");
  EXPECT_NE(c->extensions().find("server_no_context_takeover"), std::string::npos);
  EXPECT_NE(c->extensions().find("client_no_context_takeover"), std::string::npos);
  auto sc = server_h.wait_open();
  ASSERT_TRUE(sc);
  EXPECT_EQ(sc->subprotocol(), "chat");
  // Without context takeover every message is compressed on its own; all must round-trip.
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(c->send_text("repeat repeat repeat " + std::to_string(i)));
  }
  auto msgs = h.wait_messages(5);
  ASSERT_EQ(msgs.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(msgs[i].second, "repeat repeat repeat " + std::to_string(i));
  }
}

TEST(ws_client, connection_refused_reports_failure) {
  int port;
  {
    // Find a port nobody listens on: bind, read it, close.
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    ::close(fd);
  }
  client_handler h;
  ws::client cl(h);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect("ws://127.0.0.1:" + std::to_string(port) + "/"));
  EXPECT_FALSE(h.wait_failure().empty());
  EXPECT_EQ(cl.connect("http://not-ws"), evnet::errc::bad_address);
}

// What goes into the request line and Host is checked: no space, control byte or fragment
// (a URL with CR LF used to inject headers); an IPv6 literal without a port gets port 80, as
// other hosts do (it used to be refused).
TEST(ws_client, url_is_checked_before_it_reaches_the_request) {
  client_handler h;
  ws::client cl(h);
  ASSERT_FALSE(cl.start());
  for (const char* bad : {"ws://127.0.0.1:1/a HTTP/1.1\r\nX-Injected: 1", "ws://127.0.0.1:1/a b",
                          "ws://127.0.0.1:1/a\tb", "ws://127.0.0.1:1/p#frag", "ws://[::1/",
                          "ws://[::1]x/", "ws://127.0.0.1\r\n:1/"}) {
    EXPECT_EQ(cl.connect(bad), evnet::errc::bad_address) << bad;
  }
  // Accepted (the dials themselves may then fail: nothing listens on port 80 or 1).
  for (const char* good : {"ws://[::1]/", "ws://[::1]", "ws://[::1]:1/x?y=1", "ws://127.0.0.1/",
                           "ws://[::1]?y=1", "ws://127.0.0.1:1?y=1"}) {
    EXPECT_FALSE(cl.connect(good)) << good;
  }
  cl.stop();
}

// RFC 6455 §3: the path of a ws URI may be empty and followed by a query. "ws://host:port?q"
// was refused as a malformed address (the port was taken to be "port?q"); its request target
// is "/?q".
TEST(ws_client, url_with_a_query_and_no_path) {
  recording_handler server_h;
  test_ws_server s(server_h);
  client_handler h;
  ws::client cl(h);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect("ws://127.0.0.1:" + std::to_string(s.port()) + "?room=1"));
  auto c = h.wait_open();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->target(), "/?room=1");
  auto sc = server_h.wait_open();
  ASSERT_TRUE(sc);
  EXPECT_EQ(sc->target(), "/?room=1");
}

// The URI scheme is case-insensitive (RFC 3986 §3.1): "WS://" was refused as a bad address.
TEST(ws_client, url_scheme_in_any_case) {
  recording_handler server_h;
  test_ws_server s(server_h);
  client_handler h;
  ws::client cl(h);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect("WS://127.0.0.1:" + std::to_string(s.port()) + "/"));
  ASSERT_TRUE(h.wait_open());
  EXPECT_EQ(cl.connect("WSS://127.0.0.1:1/"), evnet::errc::bad_address);  // no TLS
}

TEST(ws_client, handshake_refused_by_plain_http_server) {
  // ws::server routes only "/", so another path is a plain 404 and the client must fail.
  recording_handler server_h;
  test_ws_server s(server_h);
  client_handler h;
  ws::client cl(h);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect("ws://127.0.0.1:" + std::to_string(s.port()) + "/elsewhere"));
  EXPECT_EQ(h.wait_failure(), "server did not switch protocols");
}

// A handler that throws in on_open: the server fails the connection with 1011. When the peer
// answers the close, the server closes TCP at once; it used to wait for close_timeout.
class throwing_open_handler : public recording_handler {
 public:
  void on_open(const ws::connection_ptr&) override { throw std::runtime_error("handler threw"); }
};

TEST(ws_server, failure_outside_on_traffic_closes_tcp_when_the_peer_answers) {
  throwing_open_handler server_h;
  ws::options so;
  so.close_timeout = 4000ms;
  test_ws_server s(server_h, so);
  raw_ws c(s.port());
  std::string data;
  ws::read_step st = c.next(data);
  ASSERT_EQ(st.event, ws::read_event::close);
  EXPECT_EQ(st.code, 1011);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.send_frame(ws::opcode::close, std::string("\x03\xf3", 2)));  // 1011 echoed
  EXPECT_TRUE(c.eof_follows());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s) << "TCP stayed open until close_timeout";
}

// A one-shot handshake peer on 127.0.0.1:0 that answers the client's upgrade with `extra`
// header lines: a stand-in for a misbehaving server (ours would never answer this way).
class fake_ws_peer {
 public:
  // `then`, if given, runs on the peer's thread after the 101 (with the socket), instead of
  // holding the connection until the client gives up on it; the socket is closed after it.
  explicit fake_ws_peer(std::string extra, std::function<void(int)> then = {}) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(lfd_, 4), 0);
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this, extra = std::move(extra), then = std::move(then)] {
      const int fd = ::accept(lfd_, nullptr, nullptr);
      if (fd < 0) {
        return;
      }
      timeval tv{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      std::string req;
      char buf[2048];
      while (req.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
          break;
        }
        req.append(buf, static_cast<std::size_t>(n));
      }
      request_.set_value(req);
      const std::size_t k = req.find("Sec-WebSocket-Key: ");
      if (k != std::string::npos) {
        const auto acc = ws::accept_key(std::string_view(req).substr(k + 19, 24));
        const std::string resp =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: " +
            std::string(acc.data(), acc.size()) + "\r\n" + extra + "\r\n";
        (void)::send(fd, resp.data(), resp.size(), MSG_NOSIGNAL);
      }
      if (then) {
        then(fd);
      } else {
        // Hold the connection until the client gives up on it.
        while (::recv(fd, buf, sizeof buf, 0) > 0) {
        }
      }
      ::close(fd);
    });
  }
  ~fake_ws_peer() {
    ::shutdown(lfd_, SHUT_RDWR);
    thread_.join();
    ::close(lfd_);
  }
  fake_ws_peer(const fake_ws_peer&) = delete;
  fake_ws_peer& operator=(const fake_ws_peer&) = delete;
  std::string url() const { return "ws://127.0.0.1:" + std::to_string(port_) + "/"; }
  int port() const { return port_; }
  // The client's upgrade request as the peer read it ("" if none came within 10 s).
  std::string wait_request() {
    return request_future_.wait_for(10s) == std::future_status::ready ? request_future_.get()
                                                                      : std::string();
  }

 private:
  int lfd_ = -1;
  int port_ = 0;
  std::promise<std::string> request_;
  std::future<std::string> request_future_ = request_.get_future();
  std::thread thread_;
};

// RFC 6455 §4.1: a subprotocol the client did not offer fails the connection.
// The protocols offer goes into the request as written: a CR LF in it wrote the application's
// own header lines ("X-Injected: 1") into the handshake. connect() now refuses an offer that is
// not a comma-separated list of tokens.
TEST(ws_client, a_protocols_offer_that_is_not_a_list_of_tokens_is_refused) {
  for (const char* bad :
       {"chat\r\nX-Injected: 1", "chat\n", "a b", "chat,,x", ",", "chat;v=1", "caf\xc3\xa9"}) {
    client_handler h;
    ws::client_options co;
    co.protocols = bad;
    ws::client cl(h, co);
    ASSERT_FALSE(cl.start());
    EXPECT_EQ(cl.connect("ws://127.0.0.1:1/"), evnet::errc::invalid_argument) << bad;
    cl.stop();
  }
  for (const char* good : {"", "chat", " superchat , chat\t", "v1.json.api,x-y_z!"}) {
    client_handler h;
    ws::client_options co;
    co.protocols = good;
    ws::client cl(h, co);
    ASSERT_FALSE(cl.start());
    EXPECT_FALSE(cl.connect("ws://127.0.0.1:1/")) << good;  // the dial itself then fails
    cl.stop();
  }
}

TEST(ws_client, subprotocol_the_client_did_not_offer_fails_the_connection) {
  for (const char* offer : {"chat", ""}) {
    SCOPED_TRACE(offer);
    fake_ws_peer peer("Sec-WebSocket-Protocol: evil\r\n");
    client_handler h;
    ws::client_options co;
    co.protocols = offer;
    co.permessage_deflate = false;
    ws::client cl(h, co);
    ASSERT_FALSE(cl.start());
    ASSERT_FALSE(cl.connect(peer.url()));
    EXPECT_EQ(h.wait_failure(), "server selected a subprotocol we did not offer");
    cl.stop();
  }
  // An offered one is taken.
  fake_ws_peer peer("Sec-WebSocket-Protocol: chat\r\n");
  client_handler h;
  ws::client_options co;
  co.protocols = "superchat, chat";
  co.permessage_deflate = false;
  ws::client cl(h, co);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(peer.url()));
  auto c = h.wait_open();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->subprotocol(), "chat");
  cl.stop();
}

// RFC 6455 §7.1.1: once the close handshake is done the server closes the TCP connection first
// (so that it, not the client, holds TIME_WAIT); the client SHOULD wait for that, as browsers
// do. Ours closed TCP as soon as it had echoed the server's close frame: the server read EOF
// right after the echo. It now waits for the server's FIN (close_timeout at most), then
// reports the server's code.
TEST(ws_client, after_the_close_handshake_the_client_waits_for_the_server_to_close_tcp) {
  std::atomic<int> client_closed_first{-1};
  client_handler h;
  {
    fake_ws_peer peer("", [&](int fd) {
      const std::string close_frame(
          "\x88\x05\x03\xe8"
          "bye",
          7);  // 1000 "bye", unmasked
      (void)::send(fd, close_frame.data(), close_frame.size(), MSG_NOSIGNAL);
      std::string echo;
      char buf[64];
      while (echo.size() < 11) {  // 2 + 4 (mask) + 5
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
          return;
        }
        echo.append(buf, static_cast<std::size_t>(n));
      }
      timeval tv{0, 300000};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      client_closed_first = n == 0 ? 1 : 0;  // 0: the receive timed out, the client waits
    });
    ws::client_options co;
    co.permessage_deflate = false;
    ws::client cl(h, co);
    ASSERT_FALSE(cl.start());
    ASSERT_FALSE(cl.connect(peer.url()));
    ASSERT_TRUE(h.wait_open());
    auto closed = h.wait_close();
    EXPECT_EQ(closed.first, 1000);
    EXPECT_EQ(closed.second, "bye");
  }
  EXPECT_EQ(client_closed_first.load(), 0) << "the client closed TCP before the server did";
}

// What our client makes of a server's Sec-WebSocket-Extensions answer `ext` to the offer
// `offered`: "opened with ..." or the handshake failure (client_handler::wait_handshake()).
std::string client_outcome(const std::string& ext, const ws::deflate_params& offered) {
  fake_ws_peer peer("Sec-WebSocket-Extensions: " + ext + "\r\n");
  client_handler h;
  ws::client_options co;
  co.deflate = offered;
  ws::client cl(h, co);
  if (cl.start() || cl.connect(peer.url())) {
    return "client did not start";
  }
  std::string outcome = h.wait_handshake();
  cl.stop();
  return outcome;
}

constexpr const char* kNotOffered = "server accepted an extension we did not offer";

// RFC 7692 §7.1.2: the client offered server_max_window_bits=10 (and a bare
// client_max_window_bits); a response that does not keep to the offer fails the connection.
// A server window above 10, or none at all (15), went unchecked and the client connected.
TEST(ws_client, deflate_response_outside_the_offer_fails_the_connection) {
  ws::deflate_params offered;
  offered.server_max_window_bits = 10;
  for (const char* params : {"; server_max_window_bits=12", "", "; server_max_window_bits=16",
                             "; server_max_window_bits=7", "; server_max_window_bits",
                             "; server_max_window_bits=9; server_max_window_bits=9",
                             "; server_max_window_bits=10; client_max_window_bits",
                             "; server_max_window_bits=10; client_max_window_bits=16",
                             "; server_max_window_bits=10; x_unknown"}) {
    SCOPED_TRACE(params);
    EXPECT_EQ(client_outcome(std::string("permessage-deflate") + params, offered), kNotOffered);
  }
  // The same or a smaller window is taken, with client_max_window_bits named or not.
  for (const char* params :
       {"; server_max_window_bits=10", "; server_max_window_bits=9; client_max_window_bits=12"}) {
    SCOPED_TRACE(params);
    const std::string ext = std::string("permessage-deflate") + params;
    EXPECT_EQ(client_outcome(ext, offered), "opened with \"" + ext + "\"");
  }
}

// RFC 7692 §7.1.1.1: with server_no_context_takeover in our offer, a response without it accepts
// an offer we did not make (a server that ignored our request to keep no context); the client
// opened such connections.
TEST(ws_client, deflate_response_without_offered_server_no_context_takeover_fails) {
  ws::deflate_params offered;
  offered.server_no_context_takeover = true;
  EXPECT_EQ(client_outcome("permessage-deflate; client_max_window_bits=10", offered), kNotOffered);
  const std::string named = "permessage-deflate; server_no_context_takeover";
  EXPECT_EQ(client_outcome(named, offered), "opened with \"" + named + "\"");
}

// RFC 6455 §4.1: the Host field is the URI's host "followed by ':' and the port if the port is
// not the default" (80 for ws), as browsers send it. The client always appended the port,
// ":80" included ("Host: example.com:80" for "ws://example.com/"), which a server or proxy
// matching virtual hosts by name compares unequal. An IPv6 literal keeps its brackets in both
// the Host and the address dialled; an empty port or one with leading zeros is the same port.
TEST(ws_client, the_host_field_names_the_port_only_when_it_is_not_80) {
  struct tcase {
    const char* url;
    const char* host;  // the Host field
    const char* dial;  // the address dialled
  };
  for (const tcase& t : {
           tcase{"ws://example.com/", "example.com", "example.com:80"},
           tcase{"ws://example.com:80/x", "example.com", "example.com:80"},
           tcase{"WS://example.com:080?q", "example.com", "example.com:80"},
           tcase{"ws://example.com:/", "example.com", "example.com:80"},
           tcase{"ws://example.com:8080/", "example.com:8080", "example.com:8080"},
           tcase{"ws://127.0.0.1:1?y=1", "127.0.0.1:1", "127.0.0.1:1"},
           tcase{"ws://[::1]", "[::1]", "[::1]:80"},
           tcase{"ws://[::1]:80/", "[::1]", "[::1]:80"},
           tcase{"ws://[::1]:8080/p", "[::1]:8080", "[::1]:8080"},
       }) {
    SCOPED_TRACE(t.url);
    ws::detail::ws_url u;
    ASSERT_TRUE(ws::detail::parse_ws_url(t.url, u));
    EXPECT_EQ(u.host, t.host);
    EXPECT_EQ(u.dial, t.dial);
  }
  for (const char* bad : {"ws://:80/", "ws://[]/", "ws://h:x/", "ws://h:1:2/", "ws://h:65536/",
                          "ws://h:123456/", "ws://[::1]x/", "ws://[::1]:x/"}) {
    ws::detail::ws_url u;
    EXPECT_FALSE(ws::detail::parse_ws_url(bad, u)) << bad;
  }
  // Over a connection: a port that is not 80 is named.
  fake_ws_peer peer("");
  client_handler h;
  ws::client_options co;
  co.permessage_deflate = false;
  ws::client cl(h, co);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect(peer.url()));
  EXPECT_NE(peer.wait_request().find("\r\nHost: 127.0.0.1:" + std::to_string(peer.port()) + "\r\n"),
            std::string::npos);
  cl.stop();
}

// RFC 6455 §9.1: Sec-WebSocket-Extensions may be split over several fields, which together are
// one list (RFC 9110 §5.3). The client read only the first field, so an extension or a
// parameter it did not offer, sent in a second field, went unchecked and the connection opened
// (a server using an extension the client does not know: its frames are then misread). Every
// field is now part of the answer checked against the offer.
TEST(ws_client, every_extensions_field_of_the_servers_answer_is_checked) {
  for (const char* second :
       {"x-unknown", "permessage-deflate", "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; x_unknown"}) {
    SCOPED_TRACE(second);
    EXPECT_EQ(client_outcome(
                  std::string("permessage-deflate\r\nSec-WebSocket-Extensions: ") + second, {}),
              kNotOffered);
    // Whatever the field's name's case.
    EXPECT_EQ(client_outcome(
                  std::string("permessage-deflate\r\nsec-websocket-extensions: ") + second, {}),
              kNotOffered);
  }
  // An extension not offered in the first field and ours in the second: refused too.
  EXPECT_EQ(client_outcome("x-unknown\r\nSec-WebSocket-Extensions: permessage-deflate", {}),
            kNotOffered);
  // One accepted extension, in one field, with an empty field beside it: taken.
  EXPECT_EQ(client_outcome("permessage-deflate\r\nSec-WebSocket-Extensions: ", {}),
            "opened with \"permessage-deflate\"");
  EXPECT_EQ(client_outcome("permessage-deflate; server_no_context_takeover", {}),
            "opened with \"permessage-deflate; server_no_context_takeover\"");
}

// RFC 9110 §15.5.22: a request for the WebSocket endpoint that is not an upgrade (a browser or
// curl opening the URL, an upgrade whose Connection field a proxy stripped) was answered 404 Not
// Found, as if there were no endpoint. It is 426 Upgrade Required now, naming the protocol in
// Upgrade (and "upgrade" in Connection, §7.8) as Python's websockets answers; HEAD gets the same
// head. A GET route the application adds for the path still serves it.
TEST(ws_server, a_plain_request_for_the_endpoint_is_426_upgrade_required) {
  // What the server sends to `request` (which asks it to close after answering).
  auto answer = [](int port, const std::string& request) {
    proto_test::client c(port, 2000);
    bool eof = false;
    return c.send(request) ? c.recv_until_eof(&eof) : std::string();
  };
  recording_handler server_h;
  test_ws_server s(server_h);
  ASSERT_GT(s.port(), 0);
  for (const char* request :
       {"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: close\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"}) {
    SCOPED_TRACE(request);
    const std::string all = answer(s.port(), request);
    EXPECT_TRUE(all.starts_with("HTTP/1.1 426 Upgrade Required\r\n")) << all;
    EXPECT_NE(all.find("\r\nUpgrade: websocket\r\n"), std::string::npos) << all;
    EXPECT_NE(all.find("\r\nConnection: close, upgrade\r\n"), std::string::npos) << all;
  }
  // The WebSocket itself still opens.
  raw_ws c(s.port());
  ASSERT_TRUE(server_h.wait_open());
  // An application's page at the same path is kept.
  recording_handler h2;
  test_ws_server with_page(h2, {}, [](evnet::http::router& r) {
    r.get("/", [](const evnet::http::request&, evnet::http::response& res) {
      res.start(200).header("Content-Type", "text/html").body("<p>page</p>");
    });
  });
  ASSERT_GT(with_page.port(), 0);
  const std::string page =
      answer(with_page.port(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(page.starts_with("HTTP/1.1 200 OK\r\n")) << page;
  EXPECT_TRUE(page.ends_with("\r\n\r\n<p>page</p>")) << page;
}

}  // namespace
