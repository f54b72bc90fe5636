// Helpers shared by the poller tests: real descriptors (socketpairs, pipes, eventfds, TCP on
// 127.0.0.1) owned by small RAII wrappers, and a look into the poller's wake-up eventfd.
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
// setenv() is POSIX, declared by <stdlib.h>; <cstdlib> only promises the C library's part.
#include <stdlib.h>  // NOLINT(modernize-deprecated-headers)
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "evnet/poller.h"

namespace evnet::test {

/// Closes a descriptor on destruction.
class fd_guard {
 public:
  fd_guard() = default;
  explicit fd_guard(int fd) : fd_(fd) {}
  fd_guard(fd_guard&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  fd_guard& operator=(fd_guard&& o) noexcept {
    reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~fd_guard() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

/// Records every callback invocation: the io_event bits, in order.
struct recorder {
  poll_attachment att;
  std::vector<std::uint32_t> calls;
  explicit recorder(int fd) {
    att.fd = fd;
    att.callback = [this](int, std::uint32_t ev) {
      calls.push_back(ev);
      return poll_action::proceed;
    };
  }
};

/// An attachment for `fd` whose callback does nothing, for cases about registration itself.
inline poll_attachment quiet_attachment(int fd) {
  poll_attachment a;
  a.fd = fd;
  a.callback = [](int, std::uint32_t) { return poll_action::proceed; };
  return a;
}

/// Runs one poll round and returns how many callbacks it ran; a failed round is a test failure
/// and counts as 0.
inline std::size_t run_round(poller& p,
                             std::chrono::milliseconds timeout = std::chrono::milliseconds{0}) {
  auto r = p.poll_once(timeout);
  EXPECT_TRUE(r) << r.error().message();
  return r ? *r : 0;
}

/// Sets the environment variable `name` to `value`, or removes it if `value` is null. setenv()
/// must not race with getenv() on another thread; the cases that call this run no other thread
/// at that point, which is why the check is silenced here and nowhere else.
inline void set_env(const char* name, const char* value) {
  if (value != nullptr) {
    ::setenv(name, value, 1);  // NOLINT(concurrency-mt-unsafe)
  } else {
    ::unsetenv(name);  // NOLINT(concurrency-mt-unsafe)
  }
}

inline void set_nonblocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/// A connected AF_UNIX stream socketpair, both ends non-blocking.
struct socket_pair {
  fd_guard a;
  fd_guard b;
  socket_pair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    a.reset(fds[0]);
    b.reset(fds[1]);
  }
};

/// A non-blocking pipe.
struct pipe_pair {
  fd_guard r;
  fd_guard w;
  pipe_pair() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
    r.reset(fds[0]);
    w.reset(fds[1]);
  }
};

/// A connected TCP pair over 127.0.0.1 (port 0, the kernel picks), both ends non-blocking.
struct tcp_pair {
  fd_guard client;
  fd_guard server;
  tcp_pair() {
    fd_guard listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listener.get(), 4), 0);
    socklen_t len = sizeof addr;
    EXPECT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    client.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    server.reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    EXPECT_GE(server.get(), 0);
    set_nonblocking(client.get());
    set_nonblocking(server.get());
    const int one = 1;
    ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(server.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
};

/// Opens a poller with the default backend, which honours EVNET_POLLER, so the same suite can
/// be run once per backend (`EVNET_POLLER=io_uring ctest ...`, as libevent's test.sh does).
inline std::unique_ptr<poller> open_poller(poller_options options = {}) {
  auto p = poller::open(options);
  EXPECT_TRUE(p) << p.error().message();
  return p ? std::move(*p) : nullptr;
}

/// Opens an epoll poller, for tests of epoll-specific behaviour (kernel error codes, the
/// wake-up eventfd).
inline std::unique_ptr<poller> open_epoll_poller() {
  poller_options o;
  o.backend = backend_kind::epoll;
  return open_poller(o);
}

inline void write_byte(int fd, char c = 'x') {
  ASSERT_EQ(::write(fd, &c, 1), 1);
}

/// Reads and discards everything available on a non-blocking fd; returns the byte count.
inline std::size_t drain(int fd) {
  std::size_t total = 0;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      break;
    }
    total += static_cast<std::size_t>(n);
  }
  return total;
}

/// The eventfds currently open in this process.
inline std::set<int> open_eventfds() {
  std::set<int> out;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) {
    return out;
  }
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') {
      continue;
    }
    char target[256] = {};
    std::string link = std::string("/proc/self/fd/") + e->d_name;
    ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n > 0 && std::string(target, static_cast<std::size_t>(n)) == "anon_inode:[eventfd]") {
      out.insert(std::stoi(e->d_name));
    }
  }
  ::closedir(d);
  return out;
}

/// The counter of an eventfd, read from /proc/self/fdinfo without consuming it. The poller
/// never reads its wake-up eventfd back (it is edge-triggered), so this counter is exactly the
/// number of wake-up writes the poller has made.
inline std::uint64_t eventfd_count(int fd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
  std::string key;
  while (in >> key) {
    if (key == "eventfd-count:") {
      std::string hex;
      in >> hex;
      return std::stoull(hex, nullptr, 16);
    }
  }
  ADD_FAILURE() << "no eventfd-count in fdinfo of fd " << fd;
  return 0;
}

/// Opens a poller and finds its wake-up eventfd (the one eventfd that appeared). Callers that
/// use the poller inside a lambda name it through a plain pointer, not a structured binding:
/// clang before 16 (our fuzz preset's compiler) cannot capture a structured binding.
inline std::pair<std::unique_ptr<poller>, int> open_poller_with_wakefd() {
  std::set<int> before = open_eventfds();
  auto p = open_epoll_poller();
  int wakefd = -1;
  for (int fd : open_eventfds()) {
    if (before.count(fd) == 0) {
      wakefd = fd;
    }
  }
  EXPECT_GE(wakefd, 0);
  return {std::move(p), wakefd};
}

/// remove() after the caller closed the fd: the backend reports EBADF (the kernel already
/// dropped the registration) and forgets the attachment anyway, so it can be freed. Shared by
/// the epoll and kqueue error suites.
inline void expect_remove_after_close_reports_ebadf(poller& p) {
  socket_pair sp;
  poll_attachment a = quiet_attachment(sp.a.release());
  ASSERT_FALSE(p.add(a, interest::read));
  ::close(a.fd);
  std::error_code ec = p.remove(a);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor) << ec.message();
  EXPECT_FALSE(a.registered());
  EXPECT_EQ(p.registered_count(), 0U);
}

/// Why io_uring may legitimately be missing here: disabled by sysctl, a seccomp filter (the
/// default profile of container runtimes refuses io_uring_setup), or a kernel without the
/// syscall or refusing it (a probe of io_uring_setup that gets ENOSYS, EPERM or EACCES instead of
/// the EFAULT its bad arguments earn). Empty when none applies: then a failure to open io_uring
/// is a bug, not a property of the machine.
inline std::string io_uring_blocked_reason() {
  std::ifstream disabled("/proc/sys/kernel/io_uring_disabled");
  int value = 0;
  if (disabled >> value && value != 0) {
    return "kernel.io_uring_disabled=" + std::to_string(value);
  }
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Seccomp:", 0) == 0 && line.find('2') != std::string::npos) {
      return "a seccomp filter is active";
    }
  }
#if defined(__linux__) && defined(__NR_io_uring_setup)
  if (::syscall(__NR_io_uring_setup, 0, nullptr) < 0 &&
      (errno == ENOSYS || errno == EPERM || errno == EACCES)) {
    const int err = errno;
    return std::string("io_uring_setup fails with ") + (err == ENOSYS ? "ENOSYS" : "EPERM/EACCES") +
           " (" + std::strerror(err) + ")";
  }
#elif !defined(__linux__)
  return "io_uring exists only on Linux";
#endif
  return {};
}

/// Opens an io_uring poller once to see whether this machine allows it. Returns {} when it
/// opens; otherwise sets `blocked` to the known reason (io_uring_blocked_reason()) when the
/// failure is errc::unsupported and the machine explains it, and returns the open error.
inline std::error_code try_open_io_uring(std::string& blocked) {
  poller_options o;
  o.backend = backend_kind::io_uring;
  auto p = poller::open(o);
  if (p) {
    return {};
  }
  const std::string reason = io_uring_blocked_reason();
  if (p.error() == errc::unsupported) {
    blocked = reason;
  }
  return p.error();
}

/// The poller suites run a second time with EVNET_POLLER=io_uring (tests/poller_io_uring.cmake).
/// There, before any case, io_uring is opened once. If it cannot be and the reason is a known
/// property of the machine (io_uring_blocked_reason()), no case runs: the skip message carries
/// the marker EVNET_IO_URING_UNAVAILABLE, the one text ctest reads as "skipped" for the re-run
/// (gtest itself prints no "[  SKIPPED ]" for a skip in a global set-up). If it cannot be
/// opened for any other reason, the run fails and the cases still run, failing on their own.
/// Without EVNET_POLLER=io_uring this does nothing.
class io_uring_rerun_environment : public ::testing::Environment {
 public:
  void SetUp() override {
    const char* env = std::getenv("EVNET_POLLER");
    if (env == nullptr || std::string_view(env) != "io_uring") {
      return;
    }
    std::string reason;
    const std::error_code ec = try_open_io_uring(reason);
    if (!ec) {
      return;
    }
    if (!reason.empty()) {
      GTEST_SKIP() << "EVNET_IO_URING_UNAVAILABLE: io_uring cannot be used here (" << reason
                   << "); the io_uring re-run of this suite is skipped";
    }
    // Non-fatal: a fatal failure here would make gtest mark every case skipped.
    ADD_FAILURE() << "EVNET_POLLER=io_uring but the io_uring poller failed to open: "
                  << ec.message() << " (no known reason: not sysctl, seccomp, ENOSYS or EPERM)";
  }
};

// Registered once per test binary (an inline variable), before main() runs the cases.
inline ::testing::Environment* const io_uring_rerun_env =
    ::testing::AddGlobalTestEnvironment(new io_uring_rerun_environment);

}  // namespace evnet::test
