// Helpers for the net layer's tests: run an engine on a background thread, blocking clients
// with timeouts, polling waits. Real sockets on 127.0.0.1, port 0.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "evnet/conn.h"
#include "evnet/engine.h"
#include "evnet/handler.h"
#include "evnet/loop.h"

namespace evnet::test {

using namespace std::chrono_literals;

/// The listen list of most tests: TCP on 127.0.0.1, port 0. A function rather than a global
/// vector, whose construction before main() could throw where no test can catch it.
inline std::vector<std::string> local_tcp() {
  return {"tcp://127.0.0.1:0"};
}

/// A handler base that reports boot to the test thread. Tests derive from it and call
/// booted_handler::on_boot if they override on_boot.
class booted_handler : public handler {
 public:
  void on_boot(engine& e) override {
    (void)e;
    booted_.set_value();
  }
  std::future<void> booted() { return booted_.get_future(); }

 private:
  std::promise<void> booted_;
};

/// Runs an engine on a thread; stops and joins it on destruction.
class engine_runner {
 public:
  engine_runner() = default;
  ~engine_runner() { stop(); }

  /// Starts the engine and waits (up to 5 s) for on_boot. Returns false on failure.
  bool start(booted_handler& h, std::vector<std::string> addrs, engine_options opts = {}) {
    auto booted = h.booted();
    thread_ = std::thread([this, &h, addrs = std::move(addrs), opts] {
      result_ = engine_.run(h, addrs, opts);
      done_.store(true);
    });
    for (int i = 0; i < 500; ++i) {
      if (booted.wait_for(10ms) == std::future_status::ready) {
        addrs_ = engine_.listen_addresses();
        return true;
      }
      if (done_.load()) {
        break;
      }
    }
    return false;
  }

  /// Stops the engine and joins; returns how long run() took to return after stop().
  std::chrono::milliseconds stop() {
    if (!thread_.joinable()) {
      return 0ms;
    }
    const auto t0 = std::chrono::steady_clock::now();
    engine_.stop();
    thread_.join();
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 t0);
  }

  engine& get() { return engine_; }
  std::uint16_t port(std::size_t i = 0) const { return addrs_.at(i).port(); }
  std::error_code result() const { return result_; }
  bool done() const { return done_.load(); }

 private:
  engine engine_;
  std::thread thread_;
  std::error_code result_;
  std::atomic<bool> done_{false};
  std::vector<socket_address> addrs_;
};

/// Records the calls of a dial or adopt on_result callback (any thread).
struct result_log {
  std::mutex mu;
  int calls = 0;
  bool had_conn = false;
  std::error_code ec;
  std::function<void(conn*, std::error_code)> callback() {
    return [this](conn* c, std::error_code e) {
      std::lock_guard<std::mutex> lock(mu);
      ++calls;
      had_conn = c != nullptr;
      ec = e;
    };
  }
  int count() {
    std::lock_guard<std::mutex> lock(mu);
    return calls;
  }
};

/// Polls `pred` every 2 ms until it is true or `timeout` passes.
inline bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) {
      return true;
    }
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

inline void set_timeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/// A blocking TCP client connected to 127.0.0.1:port (5 s I/O timeouts); -1 on failure.
/// `rcvbuf` > 0 sets SO_RCVBUF before connecting (a small window: a peer that reads slowly).
inline int connect_tcp(std::uint16_t port, int rcvbuf = 0) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  if (rcvbuf > 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  set_timeouts(fd, 5s);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/// A blocking Unix stream client; -1 on failure.
inline int connect_unix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  set_timeouts(fd, 5s);
  return fd;
}

inline bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) {
        continue;
      }
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

/// Reads exactly n bytes (or fewer on EOF/timeout/error).
inline std::string recv_n(int fd, std::size_t n) {
  std::string out;
  out.resize(n);
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, out.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      break;
    }
    got += static_cast<std::size_t>(r);
  }
  out.resize(got);
  return out;
}

/// Reads until EOF (or timeout/error); returns the bytes.
inline std::string recv_until_eof(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      break;
    }
    out.append(buf, static_cast<std::size_t>(r));
  }
  return out;
}

/// True if the peer closed (recv returns 0 or ECONNRESET) within the socket's timeout.
inline bool sees_close(int fd) {
  char buf[256];
  for (;;) {
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r == 0) {
      return true;
    }
    if (r < 0) {
      return errno == ECONNRESET;
    }
  }
}

/// An echo handler counting opens and closes.
class echo_handler : public booted_handler {
 public:
  action on_open(conn& c) override {
    (void)c;
    opens.fetch_add(1);
    return action::none;
  }
  action on_traffic(conn& c) override {
    c.write(c.next());
    return action::none;
  }
  void on_close(conn& c, std::error_code ec) override {
    (void)c;
    (void)ec;
    closes.fetch_add(1);
  }
  std::atomic<int> opens{0};
  std::atomic<int> closes{0};
};

}  // namespace evnet::test
