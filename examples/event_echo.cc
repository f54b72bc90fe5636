// event_echo — the seed's echo server on evnet's event base (event layer only, one thread).
//
//   event_echo [--port P]     P = 0 picks a free port; prints "listening on <port>" once bound
//
// A persistent read event on the listening socket accepts; each connection has a persistent
// read event that echoes, and a one-shot write event used only when the socket buffer is full
// (reading pauses until the backlog is flushed). SIGINT/SIGTERM arrive as signal events and end
// the loop with exit status 0.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <unordered_map>

#include "evnet/error.h"
#include "evnet/event.h"

namespace {

using evnet::ev_flag::persist;
using evnet::ev_flag::read;
using evnet::ev_flag::write;

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: event_echo [--port P] [--loops N]\n"
               "  --port P   TCP port to listen on (0 = any free port; default 1246)\n"
               "  --loops N  accepted for the example contract; this server runs one loop\n");
}

class server {
 public:
  explicit server(evnet::event_base& base) : base_(base) {}

  ~server() {
    conns_.clear();  // events before their fds, and all before the base
    if (listen_fd_ >= 0) {
      ::close(listen_fd_);
    }
  }

  bool listen(int port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) {
      return fail("socket");
    }
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
      return fail("bind");
    }
    if (::listen(listen_fd_, SOMAXCONN) < 0) {
      return fail("listen");
    }
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    acceptor_ = std::make_unique<evnet::event>(base_, listen_fd_, read | persist,
                                               [this](int fd, std::uint32_t) { accept(fd); });
    if (std::error_code ec = acceptor_->attach()) {
      std::fprintf(stderr, "attach listener: %s\n", ec.message().c_str());
      return false;
    }
    std::printf("listening on %d\n", ntohs(addr.sin_port));
    std::fflush(stdout);
    return true;
  }

 private:
  struct conn {
    int fd;
    std::string backlog;  // bytes the kernel did not take yet
    std::unique_ptr<evnet::event> reader;
    std::unique_ptr<evnet::event> writer;
    ~conn() {
      reader.reset();
      writer.reset();
      ::close(fd);
    }
  };

  static bool fail(const char* what) {
    // Not strerror(): the standard does not require it to be thread-safe.
    std::fprintf(stderr, "%s: %s\n", what, evnet::last_system_error().message().c_str());
    return false;
  }

  void accept(int lfd) {
    for (;;) {
      const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        return;  // EAGAIN (drained), or EMFILE etc.: try again next readiness
      }
      auto c = std::make_unique<conn>();
      c->fd = fd;
      c->reader = std::make_unique<evnet::event>(base_, fd, read | persist,
                                                 [this](int f, std::uint32_t) { on_read(f); });
      c->writer = std::make_unique<evnet::event>(base_, fd, write,
                                                 [this](int f, std::uint32_t) { on_write(f); });
      if (c->reader->attach()) {
        continue;  // ~conn closes it
      }
      conns_[fd] = std::move(c);
    }
  }

  void on_read(int fd) {
    conn& c = *conns_.at(fd);
    char buf[16384];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      conns_.erase(fd);  // destroys this event inside its own callback: supported
      return;
    }
    if (n < 0) {
      return;
    }
    send(c, buf, static_cast<std::size_t>(n));
  }

  void send(conn& c, const char* data, std::size_t len) {
    const ssize_t w = ::send(c.fd, data, len, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN) {
      conns_.erase(c.fd);
      return;
    }
    const std::size_t done = w < 0 ? 0 : static_cast<std::size_t>(w);
    if (done == len) {
      return;
    }
    // Backpressure: stop reading until the peer drains what we owe it.
    c.backlog.append(data + done, len - done);
    (void)c.reader->detach();
    (void)c.writer->attach();
  }

  void on_write(int fd) {
    conn& c = *conns_.at(fd);
    std::string pending;
    pending.swap(c.backlog);
    send(c, pending.data(), pending.size());
    auto it = conns_.find(fd);
    if (it != conns_.end() && it->second->backlog.empty()) {
      (void)it->second->reader->attach();
    }
  }

  evnet::event_base& base_;
  int listen_fd_ = -1;
  std::unique_ptr<evnet::event> acceptor_;
  std::unordered_map<int, std::unique_ptr<conn>> conns_;
};

}  // namespace

int main(int argc, char** argv) {
  int port = 1246;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if ((a == "--port" || a == "--loops") && i + 1 < argc) {
      char* end = nullptr;
      const long v = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || v < 0 || v > 65535) {
        std::fprintf(stderr, "bad value for %s: %s\n", a.c_str(), argv[i]);
        usage(stderr);
        return 2;
      }
      if (a == "--port") {
        port = static_cast<int>(v);
      }
      continue;
    }
    if (a == "--port" || a == "--loops") {
      std::fprintf(stderr, "%s needs a value\n", a.c_str());
    } else {
      std::fprintf(stderr, "unknown option: %s\n", a.c_str());
    }
    usage(stderr);
    return 2;
  }

  auto created = evnet::event_base::create();
  if (!created) {
    std::fprintf(stderr, "event_base: %s\n", created.error().message().c_str());
    return 1;
  }
  evnet::event_base& base = **created;
  // Signal events first: attaching blocks SIGINT/SIGTERM so they reach the signalfd.
  evnet::event on_int(base, SIGINT, evnet::ev_flag::signal,
                      [&](int, std::uint32_t) { base.exit(); });
  evnet::event on_term(base, SIGTERM, evnet::ev_flag::signal,
                       [&](int, std::uint32_t) { base.exit(); });
  if (on_int.attach() || on_term.attach()) {
    std::fprintf(stderr, "cannot watch SIGINT/SIGTERM\n");
    return 1;
  }
  std::signal(SIGPIPE, SIG_IGN);
  {
    server s(base);
    if (!s.listen(port)) {
      return 1;
    }
    if (std::error_code ec = base.dispatch()) {
      std::fprintf(stderr, "dispatch: %s\n", ec.message().c_str());
      return 1;
    }
  }
  return 0;
}
