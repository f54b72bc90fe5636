// WebSocket write backpressure: handler::on_high_water / on_drain and
// connection::buffered_amount() / above_high_water(), with a real client on 127.0.0.1 that stops
// reading (small socket buffers, so output piles up in the server), then resumes.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "evnet/conn.h"
#include "evnet/engine.h"
#include "evnet/ws/client.h"
#include "evnet/ws/frame.h"
#include "evnet/ws/handshake.h"
#include "evnet/ws/server.h"
#include "proto_test_util.h"

namespace ws = evnet::ws;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kHighWater = 256 * 1024;
constexpr std::size_t kMessage = 16 * 1024;
constexpr int kSmallBuffer = 16 * 1024;  // socket buffers, so the kernel holds little
// What a producer that stops at above_high_water() can have buffered at most: the mark, the
// up to 64 KiB a callback batch stages before writing (see connection.h), and the message that
// crossed.
constexpr std::size_t kBound = kHighWater + 64 * 1024 + kMessage + 2 * ws::kMaxFrameHeader;

// Message i: its number, then a pattern that depends on it, so a lost, repeated, reordered or
// corrupted message is detected.
std::string message(std::uint32_t i) {
  std::string m(kMessage, '\0');
  std::memcpy(m.data(), &i, sizeof i);
  for (std::size_t k = sizeof i; k < m.size(); ++k) {
    m[k] = static_cast<char>((k * 31 + i * 7) & 0xFF);
  }
  return m;
}

// Runs a ws::server on its own thread with the given engine options.
class server_thread {
 public:
  server_thread(ws::handler& h, evnet::engine_options eo) : srv_(h, ws::options{}, "/") {
    auto p = std::make_shared<std::promise<int>>();
    auto f = p->get_future();
    srv_.http_options().on_boot = [p](evnet::engine& e) {
      p->set_value(e.listen_addresses().at(0).port());
    };
    thread_ = std::thread([this, eo] { (void)srv_.run({"tcp://127.0.0.1:0"}, eo); });
    if (f.wait_for(10s) == std::future_status::ready) {
      port_ = f.get();
    }
  }
  ~server_thread() {
    srv_.stop();
    thread_.join();
  }
  int port() const { return port_; }

 private:
  ws::server srv_;
  std::thread thread_;
  int port_ = 0;
};

// Message i of `size` bytes for the example test (the same scheme, bigger).
std::string big_message(std::uint32_t i, std::size_t size) {
  std::string m = message(i);
  m.resize(size);
  for (std::size_t k = kMessage; k < size; ++k) {
    m[k] = static_cast<char>((k * 29 + i) & 0xFF);
  }
  return m;
}

// A blocking client with small socket buffers that reads only when asked to.
class slow_client {
 public:
  explicit slow_client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    // Before connect(), so the advertised window stays small.
    (void)::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &kSmallBuffer, sizeof kSmallBuffer);
    (void)::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &kSmallBuffer, sizeof kSmallBuffer);
    timeval tv{10, 0};
    (void)::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_), fd_ = -1;
      return;
    }
    std::string req;
    ws::write_client_request(req, "127.0.0.1", "/", ws::generate_key());
    if (!send_all(req)) {
      return;
    }
    std::string head;
    char ch;
    // Byte by byte up to the blank line, so no frame byte is read with the head.
    while (head.size() < 4096 && head.find("\r\n\r\n") == std::string::npos) {
      if (::recv(fd_, &ch, 1, 0) != 1) {
        return;
      }
      head += ch;
    }
    upgraded_ = head.rfind("HTTP/1.1 101", 0) == 0;
  }
  ~slow_client() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  bool upgraded() const { return upgraded_; }

  bool send_all(std::string_view s) {
    while (!s.empty()) {
      ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      s.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  bool send_message(std::string_view payload) {
    std::string f;
    ws::append_frame(f, ws::opcode::binary, payload, true);
    return send_all(f);
  }
  // The next data message, or nullopt on EOF, timeout or a protocol error.
  std::optional<std::string> next_message() {
    for (;;) {
      if (!pending_.empty()) {
        ws::read_step s = reader_.next(pending_);
        if (s.event == ws::read_event::message) {
          std::string m(s.data);
          pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(s.consumed));
          return m;
        }
        if (s.event != ws::read_event::need_more) {
          return std::nullopt;
        }
        pending_.clear();  // the reader kept what it needs of an incomplete frame
      }
      char buf[65536];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        return std::nullopt;
      }
      pending_.assign(buf, buf + n);
    }
  }

 private:
  int fd_ = -1;
  bool upgraded_ = false;
  ws::reader reader_{[] {
    ws::reader_config c;
    c.role = ws::role::client;
    c.max_message_bytes = c.max_frame_bytes = 4u << 20;
    return c;
  }()};
  std::vector<char> pending_;
};

// Sends messages 0..total-1 as fast as the backpressure allows: stops at on_high_water (or
// when above_high_water() says so), continues from on_drain.
class producer : public ws::handler {
 public:
  explicit producer(std::uint32_t total, bool marker = false) : total_(total), marker_(marker) {}

  void on_open(const ws::connection_ptr& c) override {
    // A small kernel send buffer (no autotuning), so the connection's own buffer fills soon.
    (void)::setsockopt(c->raw().fd(), SOL_SOCKET, SO_SNDBUF, &kSmallBuffer, sizeof kSmallBuffer);
    produce(c);
  }
  void on_high_water(const ws::connection_ptr& c) override {
    std::lock_guard<std::mutex> lk(mu_);
    ++high_waters_;
    above_at_high_water_ = c->above_high_water();
    buffered_at_high_water_ = c->buffered_amount();
    cv_.notify_all();
    if (marker_) {
      // Sent while the send that crossed the mark is still being written.
      EXPECT_FALSE(c->send_text("marker " + std::to_string(high_waters_)));
    }
  }
  void on_drain(const ws::connection_ptr& c) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++drains_;
      drains_after_high_water_ += high_waters_ > 0 ? 1 : 0;
      buffered_at_drain_max_ = std::max(buffered_at_drain_max_, c->buffered_amount());
      above_at_drain_ = above_at_drain_ || c->above_high_water();
      cv_.notify_all();
    }
    produce(c);
  }
  void on_close(const ws::connection_ptr&, std::uint16_t, std::string_view) override {
    std::lock_guard<std::mutex> lk(mu_);
    closed_ = true;
    cv_.notify_all();
  }

  void produce(const ws::connection_ptr& c) {
    while (sent_ < total_ && !c->above_high_water()) {
      ASSERT_FALSE(c->send_binary(message(sent_)));
      ++sent_;
      std::lock_guard<std::mutex> lk(mu_);
      max_buffered_ = std::max(max_buffered_, c->buffered_amount());
    }
    std::lock_guard<std::mutex> lk(mu_);
    sent_snapshot_ = sent_;
  }

  bool wait_high_water() {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, 10s, [&] { return high_waters_ > 0; });
  }
  // Waits until every high-water was followed by its drain (the last drain runs on the loop
  // thread a little after the peer has read the last byte). Call with mu_ held.
  bool wait_balanced(std::unique_lock<std::mutex>& lk) {
    return cv_.wait_for(lk, 10s, [&] { return drains_ == high_waters_; });
  }

  std::mutex mu_;
  std::condition_variable cv_;
  const std::uint32_t total_;
  const bool marker_;       // send a text message from each on_high_water
  std::uint32_t sent_ = 0;  // loop thread
  std::uint32_t sent_snapshot_ = 0;
  int high_waters_ = 0;
  int drains_ = 0;
  int drains_after_high_water_ = 0;
  bool above_at_high_water_ = false;
  bool above_at_drain_ = false;
  bool closed_ = false;
  std::size_t buffered_at_high_water_ = 0;
  std::size_t buffered_at_drain_max_ = 0;
  std::size_t max_buffered_ = 0;
};

}  // namespace

TEST(ws_backpressure, slow_reader_gets_high_water_then_drain_and_every_message) {
  constexpr std::uint32_t kTotal = 256;  // 4 MiB: far more than the mark plus socket buffers
  producer h(kTotal);
  evnet::engine_options eo;
  eo.loops = 1;
  eo.high_water_mark = kHighWater;
  server_thread srv(h, eo);
  ASSERT_NE(srv.port(), 0);
  slow_client c(srv.port());
  ASSERT_TRUE(c.upgraded());

  // The client reads nothing: the server's output piles up until the mark.
  ASSERT_TRUE(h.wait_high_water());
  std::this_thread::sleep_for(200ms);
  {
    std::lock_guard<std::mutex> lk(h.mu_);
    EXPECT_EQ(h.high_waters_, 1);
    EXPECT_EQ(h.drains_after_high_water_, 0);
    EXPECT_TRUE(h.above_at_high_water_);
    EXPECT_GT(h.buffered_at_high_water_, kHighWater);
    // The producer stopped at the mark: memory stays bounded.
    EXPECT_LE(h.max_buffered_, kBound);
    EXPECT_LT(h.sent_snapshot_, kTotal);
  }

  // The client reads again: drains let the producer finish; every message arrives, in order.
  for (std::uint32_t i = 0; i < kTotal; ++i) {
    std::optional<std::string> m = c.next_message();
    ASSERT_TRUE(m.has_value()) << "message " << i;
    ASSERT_EQ(*m, message(i)) << "message " << i;
  }
  std::unique_lock<std::mutex> lk(h.mu_);
  EXPECT_TRUE(h.wait_balanced(lk)) << h.drains_ << " drains, " << h.high_waters_ << " crossings";
  EXPECT_GE(h.drains_after_high_water_, 1);
  EXPECT_EQ(h.buffered_at_drain_max_, 0u);
  EXPECT_FALSE(h.above_at_drain_);
  EXPECT_LE(h.max_buffered_, kBound);
}

// Sends made from on_high_water, while the crossing send is being written, are written once
// and after it: every binary message arrives once and in order, with one marker per crossing.
TEST(ws_backpressure, sends_from_on_high_water_are_written_once_in_order) {
  constexpr std::uint32_t kTotal = 256;
  producer h(kTotal, true);
  evnet::engine_options eo;
  eo.loops = 1;
  eo.high_water_mark = kHighWater;
  server_thread srv(h, eo);
  ASSERT_NE(srv.port(), 0);
  slow_client c(srv.port());
  ASSERT_TRUE(c.upgraded());
  ASSERT_TRUE(h.wait_high_water());
  std::this_thread::sleep_for(100ms);
  int markers = 0;
  for (std::uint32_t i = 0; i < kTotal;) {
    std::optional<std::string> m = c.next_message();
    ASSERT_TRUE(m.has_value()) << "message " << i;
    if (m->rfind("marker ", 0) == 0) {
      ++markers;
      EXPECT_EQ(*m, "marker " + std::to_string(markers));
      EXPECT_GT(i, 0u) << "a marker before the message that crossed the mark";
      continue;
    }
    ASSERT_EQ(*m, message(i)) << "message " << i;
    ++i;
  }
  std::unique_lock<std::mutex> lk(h.mu_);
  EXPECT_TRUE(h.wait_balanced(lk));
  // The last marker may follow the last message.
  lk.unlock();
  while (markers < h.high_waters_) {
    std::optional<std::string> m = c.next_message();
    ASSERT_TRUE(m.has_value());
    ++markers;
    EXPECT_EQ(*m, "marker " + std::to_string(markers));
  }
  EXPECT_GE(markers, 1);
}

namespace {

// An echo that pauses reading while its output is above the mark (as ws_echo_server does).
class pausing_echo : public ws::handler {
 public:
  void on_open(const ws::connection_ptr& c) override {
    (void)::setsockopt(c->raw().fd(), SOL_SOCKET, SO_SNDBUF, &kSmallBuffer, sizeof kSmallBuffer);
  }
  void on_message(const ws::connection_ptr& c, ws::opcode type, std::string_view data) override {
    (void)c->send(type, data);
    max_buffered_.store(std::max(max_buffered_.load(), c->buffered_amount()));
    max_inbound_.store(std::max(max_inbound_.load(), c->raw().inbound_size()));
  }
  void on_high_water(const ws::connection_ptr& c) override {
    ++high_waters_;
    c->raw().pause_read();
  }
  void on_drain(const ws::connection_ptr& c) override {
    ++drains_;
    c->raw().resume_read();
  }
  std::atomic<int> high_waters_{0};
  std::atomic<int> drains_{0};
  std::atomic<std::size_t> max_buffered_{0};
  std::atomic<std::size_t> max_inbound_{0};
};

}  // namespace

TEST(ws_backpressure, echo_pauses_reading_while_the_client_does_not_read) {
  constexpr std::uint32_t kTotal = 512;  // 8 MiB sent before the client reads anything
  pausing_echo h;
  evnet::engine_options eo;
  eo.loops = 1;
  eo.high_water_mark = kHighWater;
  server_thread srv(h, eo);
  ASSERT_NE(srv.port(), 0);
  slow_client c(srv.port());
  ASSERT_TRUE(c.upgraded());

  // The client writes everything before reading. Without backpressure the server would buffer
  // all 8 MiB of echoes; paused, it stops reading and the client's send blocks instead.
  std::atomic<std::uint32_t> written{0};
  std::thread writer([&] {
    for (std::uint32_t i = 0; i < kTotal; ++i) {
      if (!c.send_message(message(i))) {
        return;
      }
      written = i + 1;
    }
  });
  // Wait for the writer to stall against the paused server.
  std::uint32_t last = 0;
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(50ms);
    if (h.high_waters_ > 0 && written == last) {
      break;
    }
    last = written;
  }
  EXPECT_EQ(h.high_waters_.load(), 1);
  EXPECT_LT(written.load(), kTotal) << "the server kept reading above the mark";

  // On a failure the loop stops and the writer ends at its send timeout: never return with it
  // running.
  for (std::uint32_t i = 0; i < kTotal; ++i) {
    std::optional<std::string> m = c.next_message();
    if (!m || *m != message(i)) {
      ADD_FAILURE() << "message " << i << (m ? " differs" : " missing");
      break;
    }
  }
  writer.join();
  EXPECT_EQ(written.load(), kTotal);
  EXPECT_GE(h.drains_.load(), 1);
  // Output above the mark is bounded by what one input batch echoes after the crossing.
  EXPECT_LE(h.max_buffered_.load(), kHighWater + (1u << 20));
  EXPECT_LE(h.max_inbound_.load(), std::size_t{1} << 20);
}

namespace {

// Client side: the ws::client's connections get the same hooks.
class client_producer : public producer {
 public:
  using producer::producer;
  void on_open(const ws::connection_ptr& c) override {
    (void)::setsockopt(c->raw().fd(), SOL_SOCKET, SO_SNDBUF, &kSmallBuffer, sizeof kSmallBuffer);
    produce(c);
  }
};

// A server that does not read until told to.
class stalled_reader : public ws::handler {
 public:
  void on_open(const ws::connection_ptr& c) override {
    (void)::setsockopt(c->raw().fd(), SOL_SOCKET, SO_RCVBUF, &kSmallBuffer, sizeof kSmallBuffer);
    c->raw().pause_read();
    std::lock_guard<std::mutex> lk(mu_);
    conn_ = c;
    cv_.notify_all();
  }
  void on_message(const ws::connection_ptr&, ws::opcode, std::string_view data) override {
    std::lock_guard<std::mutex> lk(mu_);
    received_.emplace_back(data);
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  ws::connection_ptr conn_;
  std::vector<std::string> received_;
};

}  // namespace

// The client also sends a marker from each on_high_water (its frames are masked copies staged
// in the session, so a nested write must not send the bytes in hand twice).
TEST(ws_backpressure, client_gets_high_water_and_drain_too) {
  constexpr std::uint32_t kTotal = 128;
  stalled_reader server_h;
  evnet::engine_options seo;
  seo.loops = 1;
  server_thread srv(server_h, seo);
  ASSERT_NE(srv.port(), 0);

  client_producer h(kTotal, true);
  ws::client_options co;
  co.engine.loops = 1;
  co.engine.high_water_mark = kHighWater;
  co.permessage_deflate = false;  // the patterned messages would compress to almost nothing
  ws::client cl(h, co);
  ASSERT_FALSE(cl.start());
  ASSERT_FALSE(cl.connect("ws://127.0.0.1:" + std::to_string(srv.port()) + "/"));
  ASSERT_TRUE(h.wait_high_water());
  {
    std::lock_guard<std::mutex> lk(h.mu_);
    EXPECT_TRUE(h.above_at_high_water_);
    EXPECT_LE(h.max_buffered_, kBound);
  }
  // The server reads again (resume_read on its own loop thread).
  ws::connection_ptr sc;
  {
    // The server's on_open may run after the client has seen the 101 (and filled its buffer).
    std::unique_lock<std::mutex> lk(server_h.mu_);
    server_h.cv_.wait_for(lk, 10s, [&] { return server_h.conn_ != nullptr; });
    sc = server_h.conn_;
  }
  ASSERT_TRUE(sc);
  auto raw = sc->raw().shared_from_this();
  ASSERT_FALSE(raw->owner().post([raw] { raw->resume_read(); }));
  {
    std::unique_lock<std::mutex> lk(server_h.mu_);
    std::uint32_t next = 0;
    int markers = 0;
    std::size_t seen = 0;
    while (next < kTotal) {
      ASSERT_TRUE(server_h.cv_.wait_for(lk, 20s, [&] { return server_h.received_.size() > seen; }))
          << "message " << next;
      const std::string& m = server_h.received_[seen++];
      if (m.rfind("marker ", 0) == 0) {
        ++markers;
        EXPECT_EQ(m, "marker " + std::to_string(markers));
        continue;
      }
      ASSERT_EQ(m, message(next)) << "message " << next;
      ++next;
    }
    EXPECT_GE(markers, 1);
  }
  std::unique_lock<std::mutex> lk(h.mu_);
  EXPECT_TRUE(h.wait_balanced(lk)) << h.drains_ << " drains, " << h.high_waters_ << " crossings";
  EXPECT_GE(h.drains_after_high_water_, 1);
}

// The ws_echo_server example pauses reading from a client whose echoes pile up above the
// engine's mark (4 MiB there): a client that writes 64 MiB without reading stalls before the
// end (the kernel buffers at most about 36 MiB of it here: tcp_rmem's 32 MiB maximum plus
// tcp_wmem's 4 MiB), instead of the server buffering every echo; once the client reads, every
// echo arrives intact.
TEST(ws_backpressure, example_stops_reading_from_a_client_that_does_not_read) {
  const std::string bin = proto_test::binary_dir() + "/examples/ws_echo_server";
  if (!proto_test::executable(bin)) {
    GTEST_SKIP() << bin << " not built";
  }
  proto_test::child server;
  ASSERT_TRUE(server.start({bin, "--port", "0", "--loops", "1"}, false));
  const int port = server.wait_listening();
  ASSERT_GT(port, 0);
  constexpr std::uint32_t kCount = 1024;
  constexpr std::size_t kSize = 64 * 1024;  // 64 MiB in all
  slow_client c(port);
  ASSERT_TRUE(c.upgraded());
  std::atomic<std::uint32_t> written{0};
  std::thread writer([&] {
    for (std::uint32_t i = 0; i < kCount; ++i) {
      if (!c.send_message(big_message(i, kSize))) {
        return;
      }
      written = i + 1;
    }
  });
  // Wait until the writer has made no progress for half a second (or finished).
  std::uint32_t last = ~0u;
  for (int i = 0; i < 60 && written != kCount; ++i) {
    std::this_thread::sleep_for(500ms);
    if (written == last) {
      break;
    }
    last = written;
  }
  EXPECT_LT(written.load(), kCount) << "the server read every byte: its echoes were buffered";
  for (std::uint32_t i = 0; i < kCount; ++i) {
    std::optional<std::string> m = c.next_message();
    if (!m || *m != big_message(i, kSize)) {
      ADD_FAILURE() << "message " << i << (m ? " differs" : " missing");
      break;
    }
  }
  writer.join();
  EXPECT_EQ(written.load(), kCount);
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait_exit(10s), 0);
}
