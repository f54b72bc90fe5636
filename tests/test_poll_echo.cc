// examples/poll_echo end to end: the example contract (--help, "listening on <port>", exit 0 on
// SIGINT/SIGTERM) and real echo traffic over TCP on 127.0.0.1, including a peer that sends far
// more than it reads (the server's output buffering and read pausing), a half-close (the reply
// must be complete before the server closes) and a reset peer.
#include <poll.h>
// kill() is POSIX, declared by <signal.h>; <csignal> only promises std::signal().
#include <signal.h>  // NOLINT(modernize-deprecated-headers)
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "poller_test_util.h"

namespace evnet::test {
namespace {

using namespace std::chrono_literals;

// The example's path comes from the build (tests/poller.cmake); empty when examples are off.
std::string example_path() {
#ifdef EVNET_POLL_ECHO_PATH
  return EVNET_POLL_ECHO_PATH;
#else
  return {};
#endif
}

// A running poll_echo with its stdout on a pipe.
struct server_process {
  pid_t pid = -1;
  fd_guard out;
  int port = -1;

  explicit server_process(std::vector<std::string> args) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      return;
    }
    const std::string path = example_path();
    pid = ::fork();
    if (pid == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(path.c_str()));
      for (auto& a : args) {
        argv.push_back(a.data());
      }
      argv.push_back(nullptr);
      ::execv(path.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out.reset(fds[0]);
  }

  // Reads stdout until the "listening on <port>" line (or 10 s pass).
  bool wait_listening() {
    std::string text;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{out.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) {
        continue;
      }
      char buf[256];
      ssize_t n = ::read(out.get(), buf, sizeof buf);
      if (n <= 0) {
        return false;
      }
      text.append(buf, static_cast<std::size_t>(n));
      auto pos = text.find("listening on ");
      if (pos != std::string::npos && text.find('\n', pos) != std::string::npos) {
        port = std::stoi(text.substr(pos + 13));
        return port > 0;
      }
    }
    return false;
  }

  // Waits (up to 10 s) for the process to exit; returns its wait status or -1.
  int wait_exit() {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        pid = -1;
        return status;
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }

  ~server_process() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

fd_guard connect_to(int port) {
  fd_guard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) {
    c = static_cast<char>(gen());
  }
  return s;
}

// Sends `data` from a helper thread while this thread reads the echo (after `delay`).
std::string echo_round_trip(int fd, const std::string& data, std::chrono::milliseconds delay) {
  std::thread writer([&] {
    std::size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        break;
      }
      off += static_cast<std::size_t>(n);
    }
  });
  std::this_thread::sleep_for(delay);
  std::string got;
  std::vector<char> buf(1 << 16);
  while (got.size() < data.size()) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) {
      break;
    }
    got.append(buf.data(), static_cast<std::size_t>(n));
  }
  writer.join();
  return got;
}

class PollEcho : public ::testing::Test {
 protected:
  void SetUp() override {
    if (example_path().empty() || ::access(example_path().c_str(), X_OK) != 0) {
      GTEST_SKIP() << "examples/poll_echo not built in this preset";
    }
  }
};

TEST_F(PollEcho, help_exits_zero) {
  server_process s({"--help"});
  int status = s.wait_exit();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(PollEcho, bad_argument_exits_two) {
  server_process s({"--port", "not-a-port"});
  int status = s.wait_exit();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
}

TEST_F(PollEcho, echoes_many_connections_then_exits_zero_on_sigterm) {
  server_process s({"--port", "0"});
  ASSERT_TRUE(s.wait_listening());
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  clients.reserve(20);
  for (int c = 0; c < 20; ++c) {
    clients.emplace_back([&, c] {
      fd_guard fd = connect_to(s.port);
      for (int m = 0; m < 50; ++m) {
        std::string msg = random_bytes(1 + (m * 37 + c) % 3000, c * 1000 + m);
        if (echo_round_trip(fd.get(), msg, 0ms) != msg) {
          return;
        }
      }
      ok.fetch_add(1);
    });
  }
  for (auto& t : clients) {
    t.join();
  }
  EXPECT_EQ(ok.load(), 20);
  ASSERT_EQ(::kill(s.pid, SIGTERM), 0);
  int status = s.wait_exit();
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// The client sends 24 MiB before reading anything: the server must buffer, stop reading past
// its high-water mark, resume when the client drains, and lose or reorder nothing.
TEST_F(PollEcho, peer_that_sends_before_reading_gets_every_byte_in_order) {
  server_process s({"--port", "0"});
  ASSERT_TRUE(s.wait_listening());
  fd_guard fd = connect_to(s.port);
  const std::string data = random_bytes(24u << 20, 7);
  EXPECT_TRUE(echo_round_trip(fd.get(), data, 500ms) == data);
  ASSERT_EQ(::kill(s.pid, SIGINT), 0);
  int status = s.wait_exit();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// After the peer half-closes, the server still delivers the whole echo, then closes.
TEST_F(PollEcho, half_close_gets_complete_echo_then_eof) {
  server_process s({"--port", "0"});
  ASSERT_TRUE(s.wait_listening());
  fd_guard fd = connect_to(s.port);
  const std::string data = random_bytes(6u << 20, 11);
  std::thread writer([&] {
    std::size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd.get(), data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        break;
      }
      off += static_cast<std::size_t>(n);
    }
    ::shutdown(fd.get(), SHUT_WR);
  });
  std::string got;
  std::vector<char> buf(1 << 16);
  for (;;) {
    ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
    if (n <= 0) {
      break;
    }
    got.append(buf.data(), static_cast<std::size_t>(n));
  }
  writer.join();
  EXPECT_TRUE(got == data) << got.size() << " of " << data.size() << " bytes";
}

// A peer that resets mid-stream must not disturb the server or other connections.
TEST_F(PollEcho, reset_peer_does_not_disturb_others) {
  server_process s({"--port", "0"});
  ASSERT_TRUE(s.wait_listening());
  {
    fd_guard bad = connect_to(s.port);
    const std::string junk = random_bytes(1 << 20, 3);
    ASSERT_GT(::send(bad.get(), junk.data(), junk.size(), MSG_NOSIGNAL), 0);
    linger lg{1, 0};
    ASSERT_EQ(::setsockopt(bad.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  }  // closed with RST
  fd_guard good = connect_to(s.port);
  const std::string msg = random_bytes(100000, 5);
  EXPECT_TRUE(echo_round_trip(good.get(), msg, 0ms) == msg);
  ASSERT_EQ(::kill(s.pid, SIGTERM), 0);
  int status = s.wait_exit();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace evnet::test
