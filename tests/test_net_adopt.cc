// Tests of engine::adopt: sockets connected by other code (a socketpair, an fd accepted or
// connected outside the engine) handed to a loop and served by the run's handler.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
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
using test::engine_runner;
using test::result_log;
using test::wait_for;

// Echoes; "bye" makes the server close. Records what the adopted conns looked like on open.
struct echo_handler : booted_handler {
  action on_open(conn& c) override {
    std::lock_guard<std::mutex> lock(mu);
    ++opened;
    kinds.push_back(c.kind());
    clients.push_back(c.is_client());
    loops.push_back(c.owner().index());
    const std::string* ctx = std::any_cast<std::string>(&c.context());
    contexts.push_back(ctx != nullptr ? *ctx : "");
    const int fl = ::fcntl(c.fd(), F_GETFL);
    nonblocking.push_back(fl >= 0 && (fl & O_NONBLOCK) != 0);
    const int fd_flags = ::fcntl(c.fd(), F_GETFD);
    cloexec.push_back(fd_flags >= 0 && (fd_flags & FD_CLOEXEC) != 0);
    if (c.kind() == transport::tcp) {
      int nd = 0;
      socklen_t len = sizeof nd;
      ::getsockopt(c.fd(), IPPROTO_TCP, TCP_NODELAY, &nd, &len);
      nodelay.push_back(nd != 0);
    }
    peers.push_back(c.peer_address().to_string());
    return action::none;
  }
  action on_traffic(conn& c) override {
    const std::string in = c.read_all();
    c.write(in);
    return in.find("bye") != std::string::npos ? action::close : action::none;
  }
  void on_close(conn& c, std::error_code ec) override {
    (void)c;
    std::lock_guard<std::mutex> lock(mu);
    ++closed;
    close_errors.push_back(ec);
  }
  int opened_count() {
    std::lock_guard<std::mutex> lock(mu);
    return opened;
  }
  int closed_count() {
    std::lock_guard<std::mutex> lock(mu);
    return closed;
  }

  std::mutex mu;
  int opened = 0;
  int closed = 0;
  std::vector<transport> kinds;
  std::vector<bool> clients;
  std::vector<std::size_t> loops;
  std::vector<std::string> contexts;
  std::vector<bool> nonblocking;
  std::vector<bool> cloexec;
  std::vector<bool> nodelay;
  std::vector<std::string> peers;
  std::vector<std::error_code> close_errors;
};

bool fd_is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

// A blocking socketpair; both ends close-on-exec, 5 s I/O timeouts.
bool make_pair(int sv[2]) {
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return false;
  }
  test::set_timeouts(sv[0], 5s);
  test::set_timeouts(sv[1], 5s);
  return true;
}

TEST(net_adopt, socketpair_end_is_served_and_closed_by_the_engine) {
  echo_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}));  // a client-only engine: nothing listens
  int sv[2];
  ASSERT_TRUE(make_pair(sv));
  result_log res;
  adopt_options o;
  o.context = std::string("pair");
  o.on_result = res.callback();
  ASSERT_FALSE(r.get().adopt(sv[1], std::move(o)));
  ASSERT_TRUE(test::send_all(sv[0], "hello"));
  EXPECT_EQ(test::recv_n(sv[0], 5), "hello");
  ASSERT_TRUE(test::send_all(sv[0], "bye"));
  EXPECT_EQ(test::recv_n(sv[0], 3), "bye");
  // EOF on our end means every copy of the other end is closed: the engine closed the fd.
  EXPECT_EQ(test::recv_until_eof(sv[0]), "");
  ASSERT_TRUE(wait_for([&] { return h.closed_count() == 1; }));
  ::close(sv[0]);
  {
    std::lock_guard<std::mutex> lock(res.mu);
    EXPECT_EQ(res.calls, 1);
    EXPECT_TRUE(res.had_conn);
    EXPECT_FALSE(res.ec);
  }
  std::lock_guard<std::mutex> lock(h.mu);
  ASSERT_EQ(h.opened, 1);
  EXPECT_EQ(h.kinds[0], transport::unix_stream);
  EXPECT_FALSE(h.clients[0]);
  EXPECT_EQ(h.contexts[0], "pair");
  EXPECT_TRUE(h.nonblocking[0]);  // socketpair() made it blocking: adopt() changed that
  EXPECT_TRUE(h.cloexec[0]);
  EXPECT_EQ(h.close_errors[0], std::error_code{});
}

TEST(net_adopt, accepted_tcp_socket_gets_the_engines_options_and_peer) {
  echo_handler h;
  engine_options eo;
  eo.loops = 2;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}, eo));
  // Our own listener and accept, outside the engine.
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen), 0);
  const int client = test::connect_tcp(ntohs(a.sin_port));
  ASSERT_GE(client, 0);
  const int accepted = ::accept(lfd, nullptr, nullptr);  // blocking, no options
  ASSERT_GE(accepted, 0);
  int nd = 0;
  socklen_t len = sizeof nd;
  ASSERT_EQ(::getsockopt(accepted, IPPROTO_TCP, TCP_NODELAY, &nd, &len), 0);
  ASSERT_EQ(nd, 0);  // so seeing it on below proves the engine applied its options
  sockaddr_in mine{};
  socklen_t mlen = sizeof mine;
  ASSERT_EQ(::getsockname(client, reinterpret_cast<sockaddr*>(&mine), &mlen), 0);
  const std::string client_addr = "127.0.0.1:" + std::to_string(ntohs(mine.sin_port));

  adopt_options o;
  o.loop = 1;
  ASSERT_FALSE(r.get().adopt(accepted, std::move(o)));
  ASSERT_TRUE(test::send_all(client, "ping"));
  EXPECT_EQ(test::recv_n(client, 4), "ping");
  ::close(client);  // the peer goes away: on_close once
  ASSERT_TRUE(wait_for([&] { return h.closed_count() == 1; }));
  ::close(lfd);
  std::lock_guard<std::mutex> lock(h.mu);
  ASSERT_EQ(h.opened, 1);
  EXPECT_EQ(h.kinds[0], transport::tcp);
  EXPECT_EQ(h.loops[0], 1u);
  EXPECT_EQ(h.peers[0], client_addr);
  ASSERT_EQ(h.nodelay.size(), 1u);
  EXPECT_TRUE(h.nodelay[0]);
  EXPECT_TRUE(h.nonblocking[0]);
}

TEST(net_adopt, refuses_what_it_cannot_serve_and_leaves_the_fd_to_the_caller) {
  echo_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}));
  engine& e = r.get();

  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  EXPECT_EQ(e.adopt(p[0]), make_error_code(errc::bad_descriptor));  // not a socket
  EXPECT_TRUE(fd_is_open(p[0]));
  ::close(p[0]);
  ::close(p[1]);
  EXPECT_EQ(e.adopt(p[0]), make_error_code(errc::bad_descriptor));  // closed
  EXPECT_EQ(e.adopt(-1), make_error_code(errc::bad_descriptor));

  const int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(udp, 0);
  EXPECT_EQ(e.adopt(udp), make_error_code(errc::unsupported));
  EXPECT_TRUE(fd_is_open(udp));
  ::close(udp);

  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  EXPECT_EQ(e.adopt(lfd), make_error_code(errc::invalid_argument));  // a listener
  EXPECT_TRUE(fd_is_open(lfd));
  ::close(lfd);

  const int fresh = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fresh, 0);
  const std::error_code not_connected = e.adopt(fresh);
  EXPECT_TRUE(not_connected == std::errc::not_connected) << not_connected.message();
  const int fl = ::fcntl(fresh, F_GETFL);
  EXPECT_EQ(fl & O_NONBLOCK, 0);  // refused before anything was changed
  ::close(fresh);

  EXPECT_EQ(h.opened_count(), 0);
  r.stop();
  int sv[2];
  ASSERT_TRUE(make_pair(sv));
  EXPECT_EQ(e.adopt(sv[1]), make_error_code(errc::stopped));  // not running
  EXPECT_TRUE(fd_is_open(sv[1]));
  ::close(sv[0]);
  ::close(sv[1]);
}

// adopt() from a loop callback just before stop(). Timers run after the round's poll and its
// tasks, so the loop takes the socket in the next round, which begins by seeing the stop: it
// reports engine_stopping, closes the fd and never opens the conn.
TEST(net_adopt, adopt_queued_at_stop_reports_engine_stopping_and_closes_the_fd) {
  echo_handler h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}));
  int sv[2];
  ASSERT_TRUE(make_pair(sv));
  result_log res;
  std::atomic<int> adopt_rc{-1};
  engine& e = r.get();
  e.run_after(1ms, [&] {
    adopt_options o;
    o.on_result = res.callback();
    adopt_rc = e.adopt(sv[1], std::move(o)).value();
    e.stop();
  });
  ASSERT_TRUE(wait_for([&] { return r.done(); }));
  r.stop();
  EXPECT_EQ(adopt_rc.load(), 0);
  EXPECT_EQ(test::recv_until_eof(sv[0]), "");  // the engine closed its end
  ::close(sv[0]);
  std::lock_guard<std::mutex> lock(res.mu);
  EXPECT_EQ(res.calls, 1);
  EXPECT_FALSE(res.had_conn);
  EXPECT_EQ(res.ec, make_error_code(errc::engine_stopping)) << res.ec.message();
  EXPECT_EQ(h.opened_count(), 0);
}

// Several threads adopt at once into a 2-loop engine; every socket is served and closed once.
TEST(net_adopt, many_threads_adopt_at_once) {
  echo_handler h;
  engine_options eo;
  eo.loops = 2;
  eo.balance = balance_policy::least_connections;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}, eo));
  constexpr std::size_t kThreads = 4;
  constexpr std::size_t kEach = 25;
  std::vector<int> ours(kThreads * kEach, -1);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (std::size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < kEach; ++i) {
        int sv[2];
        if (!make_pair(sv)) {
          ++failures;
          continue;
        }
        ours[t * kEach + i] = sv[0];
        if (r.get().adopt(sv[1])) {
          ++failures;
          ::close(sv[1]);
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  ASSERT_EQ(failures.load(), 0);
  for (std::size_t i = 0; i < ours.size(); ++i) {
    const std::string msg = "m" + std::to_string(i) + "bye";
    ASSERT_TRUE(test::send_all(ours[i], msg));
    EXPECT_EQ(test::recv_n(ours[i], msg.size()), msg);
    EXPECT_EQ(test::recv_until_eof(ours[i]), "");
    ::close(ours[i]);
  }
  ASSERT_TRUE(wait_for([&] { return h.closed_count() == static_cast<int>(kThreads * kEach); }));
  EXPECT_EQ(h.opened_count(), static_cast<int>(kThreads * kEach));
  std::lock_guard<std::mutex> lock(h.mu);
  int on_loop1 = 0;
  for (const std::size_t l : h.loops) {
    on_loop1 += l == 1 ? 1 : 0;
  }
  EXPECT_GT(on_loop1, 0);  // least-connections spread them over both loops
  EXPECT_LT(on_loop1, static_cast<int>(kThreads * kEach));
}

}  // namespace
}  // namespace evnet
