// poll_echo — a TCP echo server written directly on evnet's poller (no event or net layer),
// like the seeds' prototypes. It is the first load target of scripts/bench, so it is lean:
// edge-triggered, one read buffer shared by all connections, a write straight back, and only
// the remainder of a short write is copied into a per-connection buffer (then write interest
// is enabled until it drains).
//
//   poll_echo [--port P] [--host ADDR] [--help]
//
// Prints "listening on <port>" on stdout (flushed) once bound; exits 0 on SIGINT/SIGTERM.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
// sigaction() is POSIX, declared by <signal.h>; <csignal> only promises std::signal().
#include <signal.h>  // NOLINT(modernize-deprecated-headers)
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "evnet/error.h"
#include "evnet/poller.h"

namespace {

using evnet::interest;
namespace io_event = evnet::io_event;
using evnet::poll_action;
using evnet::poll_attachment;
using evnet::poller;
using evnet::trigger_mode;

constexpr std::size_t kReadBuffer = std::size_t{64} * 1024;
// Past this much unsent data a connection stops reading until the peer catches up, so a peer
// that sends without reading cannot grow our memory without bound.
constexpr std::size_t kHighWater = std::size_t{4} * 1024 * 1024;

// Read by the signal handler: a lock-free atomic, as async-signal-safety requires.
std::atomic<poller*> g_poller{nullptr};

extern "C" void on_signal(int) {
  // poller::stop() is async-signal-safe: an atomic store and a write to the wake-up eventfd.
  if (poller* p = g_poller.load()) {
    p->stop();
  }
}

class server;

struct connection {
  poll_attachment att;
  server* owner = nullptr;
  std::vector<char> out;    // bytes not yet written back
  std::size_t out_pos = 0;  // first unsent byte in `out`
  bool queued = false;      // `out` holds unsent bytes (new data must queue behind them)
  bool want_write = false;  // write interest currently enabled
  bool paused = false;      // stopped reading because `out` passed kHighWater
  bool eof = false;         // the peer finished sending; close once `out` is written
  bool hup_seen = false;    // an event reported the peer's FIN (or an error) not yet read
};

class server {
 public:
  explicit server(poller& p) : poller_(p) {}

  ~server() {
    for (auto& c : conns_) {
      if (c) {
        close_conn(c.get());
      }
    }
    if (listener_.fd >= 0) {
      (void)poller_.remove(listener_);
      ::close(listener_.fd);
    }
    if (spare_fd_ >= 0) {
      ::close(spare_fd_);
    }
  }

  // Binds and listens; returns the bound port or -1.
  int listen_on(const char* host, int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      return fail("socket");
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
      std::fprintf(stderr, "poll_echo: bad IPv4 address %s\n", host);
      ::close(fd);
      return -1;
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd, SOMAXCONN) != 0) {
      ::close(fd);
      return fail("bind/listen");
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    // A spare descriptor to shed connections when the process runs out (EMFILE), so the
    // listener does not stay readable forever.
    spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    listener_.fd = fd;
    listener_.callback = [this](int, std::uint32_t) {
      accept_all();
      return poll_action::proceed;
    };
    if (std::error_code ec = poller_.add(listener_, interest::read, trigger_mode::edge)) {
      std::fprintf(stderr, "poll_echo: add listener: %s\n", ec.message().c_str());
      return -1;
    }
    return ntohs(addr.sin_port);
  }

 private:
  static int fail(const char* what) {
    // Not strerror(): the standard does not require it to be thread-safe.
    std::fprintf(stderr, "poll_echo: %s: %s\n", what, evnet::last_system_error().message().c_str());
    return -1;
  }

  void accept_all() {
    for (;;) {
      int fd = ::accept4(listener_.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) {
          continue;
        }
        if ((errno == EMFILE || errno == ENFILE) && spare_fd_ >= 0) {
          ::close(spare_fd_);
          int victim = ::accept(listener_.fd, nullptr, nullptr);
          if (victim >= 0) {
            ::close(victim);
          }
          spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
          continue;
        }
        return;  // EAGAIN: drained (edge-triggered), or an error we cannot act on
      }
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<connection>();
      c->owner = this;
      c->att.fd = fd;
      connection* raw = c.get();
      c->att.callback = [raw](int, std::uint32_t events) {
        raw->owner->on_event(raw, events);
        return poll_action::proceed;
      };
      if (poller_.add(c->att, interest::read, trigger_mode::edge)) {
        ::close(fd);
        continue;
      }
      if (static_cast<std::size_t>(fd) >= conns_.size()) {
        conns_.resize(fd + 1);
      }
      conns_[fd] = std::move(c);
    }
  }

  void on_event(connection* c, std::uint32_t events) {
    if ((events & (io_event::error | io_event::hangup)) != 0 &&
        (events & io_event::readable) == 0) {
      close_conn(c);
      return;
    }
    if ((events & (io_event::read_hangup | io_event::hangup | io_event::error)) != 0) {
      // Edge-triggered: this is the only report of the FIN. Reads must go on to EOF, since a
      // short read no longer means "nothing more" (see read_all).
      c->hup_seen = true;
    }
    if ((events & io_event::writable) != 0 && !flush(c)) {
      return;
    }
    if ((events & io_event::readable) != 0 && !c->paused) {
      read_all(c);
    }
  }

  // Reads until the socket is drained, echoing each chunk. Returns false if `c` was closed.
  // The common case — read a message, write it straight back in full — stays in this loop;
  // everything else is out of line.
  bool read_all(connection* c) {
    const int fd = c->att.fd;
    for (;;) {
      const ssize_t n = ::read(fd, buf_, sizeof buf_);
      if (n <= 0) [[unlikely]] {
        if (n < 0 && errno == EINTR) {
          continue;
        }
        return read_ended(c, n);
      }
      if (!c->queued) [[likely]] {
        const ssize_t w = ::write(fd, buf_, static_cast<std::size_t>(n));
        if (w != n && !queue_rest(c, static_cast<std::size_t>(n), w)) {
          return false;
        }
      } else if (!queue(c, buf_, static_cast<std::size_t>(n))) {
        return false;
      }
      if (c->paused) {
        return true;
      }
      // A short read drained the socket; a later arrival raises a new edge. Not so for a FIN
      // already reported: it arrived before this read, so no new edge will announce it.
      if (static_cast<std::size_t>(n) < sizeof buf_ && !c->hup_seen) {
        return true;
      }
    }
  }

  // read() returned 0 (EOF) or -1. Returns false if `c` was closed.
  [[gnu::noinline]] bool read_ended(connection* c, ssize_t n) {
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return true;
    }
    if (n == 0 && c->queued) {
      // EOF: the peer will not send more; finish when our output is gone.
      c->eof = true;
      c->paused = true;
      return true;
    }
    close_conn(c);
    return false;
  }

  // A direct write of buf_[0, len) wrote `w` bytes (or failed): queue the rest.
  [[gnu::noinline]] bool queue_rest(connection* c, std::size_t len, ssize_t w) {
    if (w < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        close_conn(c);
        return false;
      }
      w = 0;
    }
    return queue(c, buf_ + w, len - static_cast<std::size_t>(w));
  }

  // Appends to the connection's output and enables write interest until it drains.
  [[gnu::noinline]] bool queue(connection* c, const char* data, std::size_t len) {
    if (!c->queued) {
      c->out.clear();
      c->out_pos = 0;
      c->queued = true;
    }
    c->out.insert(c->out.end(), data, data + len);
    if (c->out.size() - c->out_pos > kHighWater) {
      c->paused = true;
    }
    if (!c->want_write) {
      c->want_write = true;
      (void)poller_.modify(c->att, interest::read_write, trigger_mode::edge);
    }
    return true;
  }

  // Writes queued output. Returns false if `c` was closed.
  bool flush(connection* c) {
    while (c->out_pos < c->out.size()) {
      const ssize_t w = ::write(c->att.fd, c->out.data() + c->out_pos, c->out.size() - c->out_pos);
      if (w > 0) {
        c->out_pos += static_cast<std::size_t>(w);
        continue;
      }
      if (w < 0 && errno == EINTR) {
        continue;
      }
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return true;
      }
      close_conn(c);
      return false;
    }
    c->out.clear();
    c->out_pos = 0;
    c->queued = false;
    if (c->want_write) {
      c->want_write = false;
      (void)poller_.modify(c->att, interest::read, trigger_mode::edge);
    }
    if (c->eof) {
      close_conn(c);
      return false;
    }
    if (c->paused) {
      // Reading stopped without draining the socket, so no new edge may come: resume here.
      c->paused = false;
      return read_all(c);
    }
    return true;
  }

  void close_conn(connection* c) {
    const int fd = c->att.fd;
    (void)poller_.remove(c->att);  // also discards its later events in this round
    ::close(fd);
    conns_[fd].reset();  // may destroy the callback that is running: nothing touches it after
  }

  poller& poller_;
  alignas(64) char buf_[kReadBuffer];  // one read buffer for every connection
  poll_attachment listener_;
  int spare_fd_ = -1;
  std::vector<std::unique_ptr<connection>> conns_;  // indexed by fd
};

void usage(FILE* to) {
  std::fputs(
      "usage: poll_echo [--port P] [--host ADDR] [--help]\n"
      "  TCP echo server on evnet's poller (edge-triggered).\n"
      "  --port P     port to listen on; 0 (default) lets the kernel pick\n"
      "  --host ADDR  IPv4 address to bind (default 127.0.0.1)\n"
      "  Prints 'listening on <port>' once bound; SIGINT/SIGTERM stop it (exit 0).\n",
      to);
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  const char* host = "127.0.0.1";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    }
    if ((arg == "--port" || arg == "--host") && i + 1 < argc) {
      const char* value = argv[++i];
      if (arg == "--host") {
        host = value;
        continue;
      }
      char* end = nullptr;
      const long v = std::strtol(value, &end, 10);
      if (end == value || *end != '\0' || v < 0 || v > 65535) {
        std::fprintf(stderr, "poll_echo: bad port '%s'\n", value);
        return 2;
      }
      port = static_cast<int>(v);
      continue;
    }
    std::fprintf(stderr, "poll_echo: unknown argument '%s'\n", arg.c_str());
    usage(stderr);
    return 2;
  }

  auto opened = poller::open();
  if (!opened) {
    std::fprintf(stderr, "poll_echo: poller: %s\n", opened.error().message().c_str());
    return 1;
  }
  std::unique_ptr<poller> p = std::move(*opened);
  int rc = 0;
  {
    server s(*p);
    const int bound = s.listen_on(host, port);
    if (bound < 0) {
      return 1;
    }

    g_poller = p.get();
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);  // a peer that resets mid-write must not kill the server

    std::printf("listening on %d\n", bound);
    std::fflush(stdout);

    if (std::error_code ec = p->poll()) {
      std::fprintf(stderr, "poll_echo: poll: %s\n", ec.message().c_str());
      rc = 1;
    }
  }
  // Signals after this point have nothing to stop; the handler sees a null poller.
  g_poller = nullptr;
  return rc;
}
