// raw_epoll_http: the practical limit for a one-thread HTTP/1.1 plaintext responder, by hand.
//
// Same event loop as raw_epoll_echo (edge-triggered, one registration per connection, a short
// read means drained). Each read is scanned for complete requests (GET without a body, as wrk
// sends them); the responses to every complete request in the batch are built in one buffer and
// sent with ONE write, which is what makes pipelined requests cheap. `GET /plaintext` answers
// 200 with the 13-byte body `Hello, World!`, Content-Type and a Date header (formatted once per
// second); any other request line answers 404. It is deliberately not a general HTTP server: no
// request bodies, no chunked encoding — it exists to show what the work itself costs.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "peer_common.h"

namespace {

constexpr size_t kBufSize = 64 * 1024;
constexpr size_t kMaxRequest = 8 * 1024;

struct connection {
  int fd;
  bool out_armed = false;
  std::string partial;  // an incomplete request carried to the next read
  std::string pending;  // response bytes the kernel did not take yet
};

volatile sig_atomic_t g_stop = 0;
sigset_t g_wait_mask;  // the mask during the wait: the stop signals unblocked
void on_signal(int) {
  g_stop = 1;
}

int g_ep = -1;
char g_in[kBufSize];
std::string g_out;
time_t g_date_second = 0;
char g_ok[256];
size_t g_ok_len = 0;
char g_not_found[256];
size_t g_not_found_len = 0;

void refresh_date() {
  const time_t now = time(nullptr);
  if (now == g_date_second) return;
  g_date_second = now;
  tm gmt;
  gmtime_r(&now, &gmt);
  char date[64];
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &gmt);
  g_ok_len = static_cast<size_t>(std::snprintf(g_ok, sizeof g_ok,
                                               "HTTP/1.1 200 OK\r\nServer: raw\r\n"
                                               "Content-Type: text/plain\r\nContent-Length: 13\r\n"
                                               "Date: %s\r\n\r\nHello, World!",
                                               date));
  g_not_found_len = static_cast<size_t>(std::snprintf(
      g_not_found, sizeof g_not_found,
      "HTTP/1.1 404 Not Found\r\nServer: raw\r\nContent-Length: 0\r\nDate: %s\r\n\r\n", date));
}

void close_conn(connection* c) {
  ::close(c->fd);
  delete c;
}

void arm_out(connection* c, bool on) {
  if (c->out_armed == on) return;
  c->out_armed = on;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (on ? EPOLLOUT : 0u);
  ev.data.ptr = c;
  epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
}

bool write_all(connection* c, const char* p, size_t n) {
  if (!c->pending.empty()) {
    c->pending.append(p, n);
    return true;
  }
  while (n > 0) {
    const ssize_t w = ::write(c->fd, p, n);
    if (w > 0) {
      p += w;
      n -= static_cast<size_t>(w);
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      c->pending.assign(p, n);
      arm_out(c, true);
      return true;
    } else {
      return false;
    }
  }
  return true;
}

// Appends a response for every complete request in [p, p+n) to g_out; returns the bytes used.
size_t answer_requests(const char* p, size_t n) {
  size_t used = 0;
  while (used < n) {
    const void* end = memmem(p + used, n - used, "\r\n\r\n", 4);
    if (end == nullptr) break;
    const char* req = p + used;
    if (n - used >= 15 && std::memcmp(req, "GET /plaintext ", 15) == 0) {
      g_out.append(g_ok, g_ok_len);
    } else {
      g_out.append(g_not_found, g_not_found_len);
    }
    used = static_cast<size_t>(static_cast<const char*>(end) - p) + 4;
  }
  return used;
}

bool on_readable(connection* c) {
  for (;;) {
    const ssize_t n = ::read(c->fd, g_in, kBufSize);
    if (n == 0) return false;
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN;
    }
    g_out.clear();
    if (c->partial.empty()) {
      const size_t used = answer_requests(g_in, static_cast<size_t>(n));
      c->partial.assign(g_in + used, static_cast<size_t>(n) - used);
    } else {
      c->partial.append(g_in, static_cast<size_t>(n));
      const size_t used = answer_requests(c->partial.data(), c->partial.size());
      c->partial.erase(0, used);
    }
    if (c->partial.size() > kMaxRequest) return false;
    if (!g_out.empty() && !write_all(c, g_out.data(), g_out.size())) return false;
    if (static_cast<size_t>(n) < kBufSize) return true;
  }
}

bool flush_pending(connection* c) {
  size_t off = 0;
  while (off < c->pending.size()) {
    const ssize_t w = ::write(c->fd, c->pending.data() + off, c->pending.size() - off);
    if (w > 0) {
      off += static_cast<size_t>(w);
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      c->pending.erase(0, off);
      return true;
    } else {
      return false;
    }
  }
  std::string().swap(c->pending);
  arm_out(c, false);
  return true;
}

void on_accept(int lfd) {
  for (;;) {
    const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto* c = new connection{fd, false, {}, {}};
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0) close_conn(c);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const peer::args args = peer::parse_args(argc, argv, "raw_epoll_http");
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // The stop signals are blocked except inside the wait (epoll_pwait unblocks them
  // atomically), so one arriving between the g_stop check and the wait cannot be lost.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop_signals, &g_wait_mask);
  g_out.reserve(kBufSize * 4);

  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(args.port));
  socklen_t len = sizeof addr;
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(lfd, 4096) != 0 ||
      getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("raw_epoll_http: listen");
    return 1;
  }
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;
  epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &lev);
  refresh_date();
  peer::announce(ntohs(addr.sin_port));

  epoll_event evs[1024];
  while (!g_stop) {
    const int n = epoll_pwait(g_ep, evs, 1024, 1000, &g_wait_mask);
    refresh_date();
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<connection*>(evs[i].data.ptr);
      if (c == nullptr) {
        on_accept(lfd);
        continue;
      }
      const uint32_t e = evs[i].events;
      bool ok = true;
      if ((e & EPOLLOUT) && !c->pending.empty()) ok = flush_pending(c);
      if (ok && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) ok = on_readable(c);
      if (!ok) close_conn(c);
    }
  }
  return 0;
}
