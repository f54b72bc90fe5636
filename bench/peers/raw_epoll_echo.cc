// raw_epoll_echo: the practical limit for a one-thread echo server on Linux, written by hand.
//
// Edge-triggered epoll, each connection registered once (EPOLLIN | EPOLLRDHUP, no epoll_ctl per
// message); on readiness it reads into one shared buffer and writes the bytes straight back from
// it ("read then write in place"). A read that returns less than the buffer means the socket is
// drained, so no second read is spent to see EAGAIN: one read and one write per message, with
// epoll_wait amortised over the ready connections. Bytes the kernel will not take right now are
// kept per connection and flushed on EPOLLOUT, which is only requested while such bytes exist.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "peer_common.h"

namespace {

constexpr size_t kBufSize = 64 * 1024;
constexpr size_t kMaxPending = 1 << 20;  // stop reading while this much output is queued

struct connection {
  int fd;
  bool out_armed = false;
  std::string pending;  // echo bytes the kernel did not accept yet
};

volatile sig_atomic_t g_stop = 0;
sigset_t g_wait_mask;  // the mask during the wait: the stop signals unblocked
void on_signal(int) {
  g_stop = 1;
}

int g_ep = -1;
char g_buf[kBufSize];

void close_conn(connection* c) {
  ::close(c->fd);  // also removes it from the epoll set
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

// Writes `n` bytes, queueing what the kernel refuses. False when the connection must close.
bool send_bytes(connection* c, const char* p, size_t n) {
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
  std::string().swap(c->pending);  // give the memory back: idle connections stay small
  arm_out(c, false);
  return true;
}

// Reads until the socket is drained (a short read), echoing each chunk as it arrives.
bool on_readable(connection* c) {
  while (c->pending.size() < kMaxPending) {
    const ssize_t n = ::read(c->fd, g_buf, kBufSize);
    if (n > 0) {
      if (!send_bytes(c, g_buf, static_cast<size_t>(n))) return false;
      if (static_cast<size_t>(n) < kBufSize) return true;
    } else if (n == 0) {
      return false;
    } else if (errno == EINTR) {
      continue;
    } else {
      return errno == EAGAIN;
    }
  }
  return true;
}

void on_accept(int lfd) {
  for (;;) {
    const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a transient error (EMFILE): try on the next readiness
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto* c = new connection{fd, false, {}};
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0) close_conn(c);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const peer::args args = peer::parse_args(argc, argv, "raw_epoll_echo");
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
    std::perror("raw_epoll_echo: listen");
    return 1;
  }
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;  // the listener
  epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &lev);
  peer::announce(ntohs(addr.sin_port));

  epoll_event evs[1024];
  while (!g_stop) {
    const int n = epoll_pwait(g_ep, evs, 1024, -1, &g_wait_mask);
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
