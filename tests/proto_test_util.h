// Helpers for the HTTP/WebSocket tests: child processes (example servers, curl, python,
// chromium) with timeouts, and a blocking TCP client. Test-only code.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
// kill() is POSIX, declared by <signal.h>; <csignal> only promises std::signal().
#include <signal.h>  // NOLINT(modernize-deprecated-headers)
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace proto_test {

/// `n` pseudo-random bytes from `seed` (incompressible: deflate makes them larger).
inline std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(s.data() + i, &v, n - i < 8 ? n - i : 8);
  }
  return s;
}

inline std::string binary_dir() {
  const char* d = std::getenv("EVNET_BINARY_DIR");
  if (d && *d) {
    return d;
  }
  // Fallback: test binaries live in <binary dir>/tests/.
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) {
    return ".";
  }
  std::string exe(buf, static_cast<std::size_t>(n));
  exe = exe.substr(0, exe.rfind('/'));
  return exe.substr(0, exe.rfind('/'));
}
inline std::string source_dir() {
  const char* d = std::getenv("EVNET_SOURCE_DIR");
  return d ? d : ".";
}
inline bool executable(const std::string& path) {
  return ::access(path.c_str(), X_OK) == 0;
}

/// A child process whose stdout (and stderr, if merged) we read through a pipe.
struct child {
  pid_t pid = -1;
  int out = -1;
  std::string captured;

  child() = default;
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() { kill_and_wait(); }

  /// Starts argv[0] with stdout (and stderr when merge_stderr) on a pipe.
  bool start(const std::vector<std::string>& argv, bool merge_stderr = true) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
      return false;
    }
    pid = ::fork();
    if (pid < 0) {
      return false;
    }
    if (pid == 0) {
      ::dup2(p[1], 1);
      if (merge_stderr) {
        ::dup2(p[1], 2);
      }
      ::setpgid(0, 0);
      std::vector<char*> args;
      args.reserve(argv.size() + 1);
      for (auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
      }
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::close(p[1]);
    out = p[0];
    return true;
  }

  /// Reads output until `needle` appears or the timeout passes; returns true if found.
  bool wait_for(const std::string& needle, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (captured.find(needle) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return false;
      }
      if (!read_some(static_cast<int>(left.count()))) {
        return captured.find(needle) != std::string::npos;
      }
    }
    return true;
  }

  /// Reads whatever is available within `ms`; false on EOF/timeout with nothing read.
  bool read_some(int ms) {
    if (out < 0) {
      return false;
    }
    pollfd pfd{out, POLLIN, 0};
    if (::poll(&pfd, 1, ms) <= 0) {
      return false;
    }
    char buf[4096];
    ssize_t n = ::read(out, buf, sizeof buf);
    if (n <= 0) {
      ::close(out);
      out = -1;
      return false;
    }
    captured.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  /// "listening on <port>" → port, or 0 on timeout.
  int wait_listening(std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
    if (!wait_for("\n", timeout)) {
      return 0;
    }
    auto pos = captured.find("listening on ");
    if (pos == std::string::npos) {
      return 0;
    }
    return std::atoi(captured.c_str() + pos + 13);
  }

  /// Waits for exit; returns the exit status, 128+signal, or -1 on timeout (then kills).
  int wait_exit(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      while (read_some(0)) {
      }
      int st = 0;
      pid_t r = ::waitpid(pid, &st, WNOHANG);
      if (r == pid) {
        pid = -1;
        while (read_some(50)) {
        }
        if (WIFEXITED(st)) {
          return WEXITSTATUS(st);
        }
        if (WIFSIGNALED(st)) {
          return 128 + WTERMSIG(st);
        }
        return -1;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        kill_and_wait();
        return -1;
      }
      read_some(20);
    }
  }

  /// Sends `sig` to the child.
  void signal(int sig) {
    if (pid > 0) {
      ::kill(pid, sig);
    }
  }

  void kill_and_wait() {
    if (pid > 0) {
      ::kill(-pid, SIGKILL);  // its own process group: also ends grandchildren (chromium)
      ::kill(pid, SIGKILL);
      int st;
      ::waitpid(pid, &st, 0);
      pid = -1;
    }
    if (out >= 0) {
      ::close(out);
      out = -1;
    }
  }
};

/// Runs argv to completion (bounded by `timeout`), capturing stdout+stderr into `output`.
/// Returns the exit status (or -1 on timeout / 128+signal).
inline int run(const std::vector<std::string>& argv, std::string& output,
               std::chrono::milliseconds timeout) {
  child c;
  if (!c.start(argv)) {
    return -1;
  }
  int st = c.wait_exit(timeout);
  output = c.captured;
  return st;
}

/// A blocking TCP client to 127.0.0.1:port with a receive timeout.
struct client {
  int fd = -1;
  explicit client(int port, int timeout_ms = 5000) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      fd = -1;
      return;
    }
    timeval tv{timeout_ms / 1000, static_cast<suseconds_t>(timeout_ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~client() {
    if (fd >= 0) {
      ::close(fd);
    }
  }
  client(const client&) = delete;
  client& operator=(const client&) = delete;
  bool ok() const { return fd >= 0; }
  bool send(std::string_view s) {
    while (!s.empty()) {
      ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      s.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  /// Receives once (up to 64 KiB); "" on EOF, timeout or error. `eof` is set only for a real
  /// EOF (recv() returned 0); `timed_out` only when the receive timeout passed first.
  std::string recv_some(bool* eof = nullptr, bool* timed_out = nullptr) {
    char buf[65536];
    ssize_t n = 0;
    do {
      n = ::recv(fd, buf, sizeof buf, 0);
    } while (n < 0 && errno == EINTR);
    if (eof) {
      *eof = n == 0;
    }
    if (timed_out) {
      *timed_out = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }
  /// Receives until EOF or timeout; returns everything and sets `eof`.
  std::string recv_until_eof(bool* eof) {
    std::string all;
    for (;;) {
      bool e = false;
      std::string s = recv_some(&e);
      if (s.empty()) {
        *eof = e;
        return all;
      }
      all += s;
    }
  }
};

}  // namespace proto_test
