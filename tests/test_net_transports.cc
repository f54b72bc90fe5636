// Tests of the engine's other transports: UDP datagrams and Unix stream sockets.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "evnet/conn.h"
#include "evnet/engine.h"
#include "net_test_util.h"

namespace evnet {
namespace {

using namespace std::chrono_literals;
using test::booted_handler;
using test::echo_handler;
using test::engine_runner;
using test::recv_n;
using test::send_all;
using test::wait_for;

int udp_client() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // An ephemeral port on loopback; if binding failed, the test's first exchange fails.
  (void)::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  test::set_timeouts(fd, 3s);
  return fd;
}

void udp_send(int fd, std::uint16_t port, std::string_view msg) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::sendto(fd, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a),
            static_cast<ssize_t>(msg.size()));
}

std::string udp_recv(int fd) {
  char buf[65536];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  return n < 0 ? std::string("<timeout>") : std::string(buf, static_cast<std::size_t>(n));
}

struct udp_echo : booted_handler {
  action on_traffic(conn& c) override {
    EXPECT_EQ(c.kind(), transport::udp);
    const std::string d = c.read_all();
    c.write("[" + d + "]");
    datagrams++;
    return action::none;
  }
  std::atomic<int> datagrams{0};
};

TEST(net_transports, udp_keeps_datagram_boundaries_and_replies_to_sender) {
  udp_echo h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"udp://127.0.0.1:0"}));
  const int a = udp_client();
  const int b = udp_client();
  udp_send(a, r.port(), "one");
  udp_send(a, r.port(), "two2");
  udp_send(b, r.port(), std::string(1000, 'B'));
  udp_send(a, r.port(), "");
  EXPECT_EQ(udp_recv(a), "[one]");
  EXPECT_EQ(udp_recv(a), "[two2]");
  EXPECT_EQ(udp_recv(a), "[]");
  EXPECT_EQ(udp_recv(b), "[" + std::string(1000, 'B') + "]");
  EXPECT_TRUE(wait_for([&] { return h.datagrams.load() == 4; }));
  ::close(a);
  ::close(b);
}

// Replies that are not written inside on_traffic: the handler keeps the sender's address and
// answers later — from a loop timer and from a thread of its own — with send_to().
TEST(net_transports, udp_send_to_answers_later_from_a_timer_and_another_thread) {
  struct h_t : booted_handler {
    action on_traffic(conn& c) override {
      const std::string d = c.read_all();
      const socket_address peer = c.peer_address();
      std::shared_ptr<conn> self = c.shared_from_this();
      // After the callback, on the loop thread.
      c.owner().run_after(1ms,
                          [self, peer, d] { EXPECT_FALSE(self->send_to(peer, "timer:" + d)); });
      // From another thread, with a completion on the loop thread.
      std::lock_guard lock(mu);
      threads.emplace_back([this, self, peer, d] {
        const std::error_code ec = self->send_to(peer, "thread:" + d, [this](std::error_code e) {
          if (!e) completions++;
        });
        EXPECT_FALSE(ec);
      });
      // send() from another thread cannot know the peer of a UDP conn.
      std::promise<std::error_code> p;
      std::thread([&p, self] { p.set_value(self->send("x")); }).join();
      EXPECT_EQ(p.get_future().get(), make_error_code(errc::unsupported));
      return action::none;
    }
    ~h_t() override {
      for (auto& t : threads) t.join();
    }
    std::mutex mu;
    std::vector<std::thread> threads;
    std::atomic<int> completions{0};
  } h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"udp://127.0.0.1:0"}));
  const int a = udp_client();
  const int b = udp_client();
  udp_send(a, r.port(), "A");
  udp_send(b, r.port(), "B");
  std::set<std::string> got_a{udp_recv(a), udp_recv(a)};
  std::set<std::string> got_b{udp_recv(b), udp_recv(b)};
  EXPECT_EQ(got_a, (std::set<std::string>{"timer:A", "thread:A"}));
  EXPECT_EQ(got_b, (std::set<std::string>{"timer:B", "thread:B"}));
  EXPECT_TRUE(wait_for([&] { return h.completions.load() == 2; }));
  r.stop();
  ::close(a);
  ::close(b);
}

TEST(net_transports, send_to_on_a_tcp_conn_is_unsupported) {
  struct h_t : booted_handler {
    action on_traffic(conn& c) override {
      result = c.send_to(c.peer_address(), "x");
      done = true;
      return action::none;
    }
    std::error_code result;
    std::atomic<bool> done{false};
  } h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, test::local_tcp()));
  const int fd = test::connect_tcp(r.port());
  ASSERT_GE(fd, 0);
  send_all(fd, "hi");
  ASSERT_TRUE(wait_for([&] { return h.done.load(); }));
  EXPECT_EQ(h.result, make_error_code(errc::unsupported));
  ::close(fd);
}

TEST(net_transports, udp_burst_is_drained) {
  udp_echo h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"udp://127.0.0.1:0"}));
  const int a = udp_client();
  int rcv = 1 << 20;
  ::setsockopt(a, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  for (int i = 0; i < 200; ++i) {
    udp_send(a, r.port(), "m" + std::to_string(i));
  }
  std::set<std::string> got;
  for (int i = 0; i < 200; ++i) {
    got.insert(udp_recv(a));
  }
  EXPECT_EQ(got.size(), 200u);
  EXPECT_EQ(got.count("[m199]"), 1u);
  ::close(a);
}

TEST(net_transports, udp_with_reuse_port_on_two_loops) {
  udp_echo h;
  engine_options o;
  o.loops = 2;
  o.accept = accept_model::reuse_port;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"udp://127.0.0.1:0"}, o));
  for (int i = 0; i < 10; ++i) {
    const int a = udp_client();
    udp_send(a, r.port(), "x");
    EXPECT_EQ(udp_recv(a), "[x]");
    ::close(a);
  }
}

std::string temp_socket_path(const char* tag) {
  return "/tmp/evnet_test_" + std::string(tag) + "_" + std::to_string(::getpid()) + ".sock";
}

TEST(net_transports, unix_stream_echo) {
  echo_handler h;
  const std::string path = temp_socket_path("echo");
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"unix://" + path}));
  ASSERT_EQ(r.get().listen_addresses().at(0).family(), AF_UNIX);
  const int fd = test::connect_unix(path);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "over unix"));
  EXPECT_EQ(recv_n(fd, 9), "over unix");
  ::close(fd);
  ASSERT_TRUE(wait_for([&] { return h.closes.load() == 1; }));
  r.stop();
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "socket file removed at stop";
}

// local_address() is looked up on first use and cached: on an accepted Unix connection it is
// the listener's path, the same object on every call, and still readable in on_close.
struct local_address_handler : booted_handler {
  action on_open(conn& c) override {
    const socket_address& a = c.local_address();
    std::lock_guard<std::mutex> lock(mu);
    first = a.to_string();
    family = a.family();
    same_object = &a == &c.local_address();
    return action::none;
  }
  void on_close(conn& c, std::error_code) override {
    std::lock_guard<std::mutex> lock(mu);
    at_close = c.local_address().to_string();
    closed = true;
  }
  std::mutex mu;
  std::string first, at_close;
  int family = AF_UNSPEC;
  bool same_object = false;
  bool closed = false;
};

TEST(net_transports, local_address_of_a_unix_conn_is_the_listener_path_and_cached) {
  local_address_handler h;
  const std::string path = temp_socket_path("local");
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"unix://" + path}));
  const int fd = test::connect_unix(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard<std::mutex> lock(h.mu);
    return h.closed;
  }));
  r.stop();
  std::lock_guard<std::mutex> lock(h.mu);
  EXPECT_EQ(h.family, AF_UNIX);
  EXPECT_NE(h.first.find(path), std::string::npos) << h.first;
  EXPECT_TRUE(h.same_object);
  EXPECT_EQ(h.at_close, h.first);
}

// peer_address() for each kind of peer: an IPv4 or IPv6 one is kept inline in the conn, a named
// Unix peer (longer than that) in a block of its own, an unnamed Unix peer as "(unnamed)". Each
// is the address the client sees as its own (getsockname), and still readable in on_close after
// the peer reset the connection.
struct peer_address_handler : booted_handler {
  action on_open(conn& c) override {
    std::lock_guard<std::mutex> lock(mu);
    at_open = c.peer_address();
    return action::none;
  }
  void on_close(conn& c, std::error_code) override {
    std::lock_guard<std::mutex> lock(mu);
    at_close = c.peer_address();
    closed = true;
  }
  std::mutex mu;
  socket_address at_open, at_close;
  bool closed = false;
};

// Connects fd (a fresh socket of the listener's family) to `to`, resets it (SO_LINGER 0) and
// returns the address the client had, as getsockname reports it.
socket_address connect_and_reset(int fd, const socket_address& to) {
  EXPECT_EQ(::connect(fd, to.data(), to.length()), 0) << std::strerror(errno);
  auto mine = socket_address::local_of(fd);
  EXPECT_TRUE(mine);
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(fd);
  return mine ? *mine : socket_address{};
}

void expect_peer(peer_address_handler& h, const socket_address& client) {
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard<std::mutex> lock(h.mu);
    return h.closed;
  }));
  std::lock_guard<std::mutex> lock(h.mu);
  EXPECT_EQ(h.at_open.family(), client.family());
  EXPECT_TRUE(h.at_open == client) << h.at_open.to_string() << " vs " << client.to_string();
  EXPECT_TRUE(h.at_close == client) << h.at_close.to_string() << " vs " << client.to_string();
}

TEST(net_transports, peer_address_of_every_kind_of_peer) {
  {
    SCOPED_TRACE("tcp4");
    peer_address_handler h;
    engine_runner r;
    ASSERT_TRUE(r.start(h, test::local_tcp()));
    const socket_address client =
        connect_and_reset(::socket(AF_INET, SOCK_STREAM, 0), r.get().listen_addresses().at(0));
    EXPECT_NE(client.port(), 0);
    expect_peer(h, client);
  }
  {
    SCOPED_TRACE("tcp6");
    peer_address_handler h;
    engine_runner r;
    if (r.start(h, {"tcp6://[::1]:0"})) {
      const socket_address client =
          connect_and_reset(::socket(AF_INET6, SOCK_STREAM, 0), r.get().listen_addresses().at(0));
      EXPECT_EQ(client.to_string().rfind("[::1]:", 0), 0u) << client.to_string();
      expect_peer(h, client);
    }
  }
  for (const bool named : {false, true}) {
    SCOPED_TRACE(named ? "unix, named client" : "unix, unnamed client");
    peer_address_handler h;
    const std::string path = temp_socket_path(named ? "peer_named" : "peer_unnamed");
    engine_runner r;
    ASSERT_TRUE(r.start(h, {"unix://" + path}));
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const std::string client_path = temp_socket_path("peer_client_with_a_long_name");
    if (named) {
      ::unlink(client_path.c_str());
      auto a = socket_address::from_unix_path(client_path);
      ASSERT_TRUE(a);
      ASSERT_EQ(::bind(fd, a->data(), a->length()), 0) << std::strerror(errno);
    }
    auto to = socket_address::from_unix_path(path);
    ASSERT_TRUE(to);
    const socket_address client = connect_and_reset(fd, *to);
    expect_peer(h, client);
    std::lock_guard<std::mutex> lock(h.mu);
    EXPECT_EQ(h.at_open.to_string(), named ? client_path : "(unnamed)");
    ::unlink(client_path.c_str());
  }
}

// In reuse_port mode a Unix path still has one listener (loop 0's), but its connections are
// spread over every loop like in acceptor mode.
TEST(net_transports, unix_listener_in_reuse_port_mode_spreads_over_loops) {
  struct h_t : booted_handler {
    action on_open(conn& c) override {
      std::lock_guard lock(mu);
      loops.insert(c.owner().index());
      opened++;
      return action::none;
    }
    std::mutex mu;
    std::set<std::size_t> loops;
    std::atomic<int> opened{0};
  } h;
  const std::string path = temp_socket_path("reuseport");
  engine_options o;
  o.loops = 2;
  o.accept = accept_model::reuse_port;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"unix://" + path}, o));
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) {
    fds.push_back(test::connect_unix(path));
    ASSERT_GE(fds.back(), 0);
  }
  ASSERT_TRUE(wait_for([&] { return h.opened.load() == 4; }));
  {
    std::lock_guard lock(h.mu);
    EXPECT_EQ(h.loops, (std::set<std::size_t>{0, 1}));  // round-robin: both loops
  }
  for (int fd : fds) ::close(fd);
  r.stop();
}

TEST(net_transports, unix_stale_socket_file_is_replaced) {
  const std::string path = temp_socket_path("stale");
  {
    // A socket file left behind by a dead server: bound, never unlinked.
    const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    ::unlink(path.c_str());
    ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ::close(s);
  }
  echo_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"unix://" + path}));
  const int fd = test::connect_unix(path);
  ASSERT_TRUE(send_all(fd, "fresh"));
  EXPECT_EQ(recv_n(fd, 5), "fresh");
  ::close(fd);
}

TEST(net_transports, tcp_unix_and_udp_in_one_engine) {
  struct h_t : booted_handler {
    action on_traffic(conn& c) override {
      c.write(c.next());
      return action::none;
    }
  } h;
  const std::string path = temp_socket_path("mixed");
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"tcp://127.0.0.1:0", "unix://" + path, "udp://127.0.0.1:0"}));
  const int t = test::connect_tcp(r.port(0));
  ASSERT_TRUE(send_all(t, "tcp"));
  EXPECT_EQ(recv_n(t, 3), "tcp");
  const int u = test::connect_unix(path);
  ASSERT_TRUE(send_all(u, "unix"));
  EXPECT_EQ(recv_n(u, 4), "unix");
  const int d = udp_client();
  udp_send(d, r.port(2), "udp");
  EXPECT_EQ(udp_recv(d), "udp");
  ::close(t);
  ::close(u);
  ::close(d);
}

TEST(net_transports, tcp6_loopback) {
  echo_handler h;
  engine_runner r;
  if (!r.start(h, {"tcp6://[::1]:0"})) {
    GTEST_SKIP() << "no IPv6 loopback here";
  }
  const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(r.port());
  a.sin6_addr = in6addr_loopback;
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  test::set_timeouts(fd, 3s);
  ASSERT_TRUE(send_all(fd, "six"));
  EXPECT_EQ(recv_n(fd, 3), "six");
  ::close(fd);
}

// close(), abort() and action::close on a UDP listener's conn leave the listener alone: it
// keeps serving, the connection count stays 0 and max_connections still admits TCP clients.
// (The listener's fd used to be closed, the count went below zero, and the fd number was
// closed a second time at stop, possibly someone else's by then.)
struct udp_closer : booted_handler {
  action on_traffic(conn& c) override {
    const std::string d = c.read_all();
    c.write("[" + d + "]");
    fd.store(c.fd());
    if (d == "close") {
      c.close();
    } else if (d == "abort") {
      c.abort(make_error_code(errc::aborted));
    } else if (d == "action") {
      return action::close;
    }
    return action::none;
  }
  action on_open(conn& c) override {
    (void)c;
    tcp_opened++;
    return action::none;
  }
  void on_accept_error(std::error_code ec) override {
    (void)ec;
    accept_errors++;
  }
  std::atomic<int> fd{-1};
  std::atomic<int> tcp_opened{0};
  std::atomic<int> accept_errors{0};
};

TEST(net_transports, closing_a_udp_listeners_conn_leaves_the_listener_serving) {
  udp_closer h;
  engine_options o;
  o.loops = 1;
  o.max_connections = 1;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"udp://127.0.0.1:0", "tcp://127.0.0.1:0"}, o));
  const int u = udp_client();
  for (const char* m : {"close", "abort", "action", "still here"}) {
    udp_send(u, r.port(0), m);
    EXPECT_EQ(udp_recv(u), std::string("[") + m + "]");
  }
  EXPECT_GE(::fcntl(h.fd.load(), F_GETFD), 0);  // the listener's fd is still open
  EXPECT_EQ(r.get().connection_count(), 0u);
  const int t = test::connect_tcp(r.port(1));  // admitted: the count did not wrap
  ASSERT_GE(t, 0);
  ASSERT_TRUE(wait_for([&] { return h.tcp_opened.load() == 1; }));
  EXPECT_EQ(h.accept_errors.load(), 0);
  ::close(t);
  ::close(u);
}

// write() on a UDP conn outside on_traffic (a timer) sends at once, as send_to() does; it
// used to wait in the batch until another datagram arrived.
struct udp_late_writer : booted_handler {
  action on_traffic(conn& c) override {
    if (c.read_all() == "ping") {
      auto self = c.shared_from_this();
      c.owner().run_after(20ms, [self] { EXPECT_FALSE(self->write("late")); });
    }
    return action::none;
  }
};

TEST(net_transports, udp_write_from_a_timer_is_sent_at_once) {
  udp_late_writer h;
  engine_options o;
  o.loops = 1;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"udp://127.0.0.1:0"}, o));
  const int u = udp_client();
  udp_send(u, r.port(0), "ping");
  EXPECT_EQ(udp_recv(u), "late");  // 3 s receive timeout
  ::close(u);
}

// writev() with more pieces than one writev call takes still sends one datagram.
struct udp_many_pieces : booted_handler {
  action on_traffic(conn& c) override {
    c.discard();
    std::vector<std::string> owned;
    for (int i = 0; i < 100; ++i) {
      owned.push_back(std::to_string(i % 10));
    }
    const std::vector<std::string_view> parts(owned.begin(), owned.end());
    EXPECT_FALSE(c.writev(parts));
    return action::none;
  }
};

TEST(net_transports, udp_writev_of_many_pieces_is_one_datagram) {
  udp_many_pieces h;
  engine_options o;
  o.loops = 1;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {"udp://127.0.0.1:0"}, o));
  const int u = udp_client();
  udp_send(u, r.port(0), "x");
  std::string want;
  for (int i = 0; i < 100; ++i) {
    want += std::to_string(i % 10);
  }
  EXPECT_EQ(udp_recv(u), want);
  test::set_timeouts(u, 200ms);
  EXPECT_EQ(udp_recv(u), "<timeout>");  // and nothing more
  ::close(u);
}

}  // namespace
}  // namespace evnet
