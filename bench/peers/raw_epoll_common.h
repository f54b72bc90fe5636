// The hand-written epoll loop shared by the raw peers (raw_epoll_echo, raw_epoll_http): one
// listener on 127.0.0.1, connections registered once, edge-triggered, with write interest
// added only while output is pending; SIGINT/SIGTERM end the loop. Each peer supplies its
// connection type (derived from raw::conn) and its on_readable(); everything else is here, so
// the two measure the same loop.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "peer_common.h"

namespace raw {

struct conn {
  int fd = -1;
  bool out_armed = false;
  std::string pending;  // bytes the kernel did not take yet
};

inline int g_ep = -1;
inline volatile sig_atomic_t g_stop = 0;
inline sigset_t g_wait_mask;  // the mask during the wait: the stop signals unblocked

inline void on_signal(int) {
  g_stop = 1;
}

inline void arm_out(conn* c, bool on) {
  if (c->out_armed == on) return;
  c->out_armed = on;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (on ? EPOLLOUT : 0u);
  ev.data.ptr = c;
  epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
}

// Writes `n` bytes, queueing what the kernel refuses. False when the connection must close.
inline bool send_bytes(conn* c, const char* p, size_t n) {
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

inline bool flush_pending(conn* c) {
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

// Stop signals, SIGPIPE ignored, and the listener registered on a new epoll set. Returns the
// listening fd, or -1 after printing why.
inline int start(const peer::args& args, const char* name) {
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

  int port = 0;
  const int lfd = peer::listen_loopback(args.port, name, &port);
  if (lfd < 0) return -1;
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;  // the listener
  epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &lev);
  peer::announce(port);
  return lfd;
}

template <class Conn>
void close_conn(Conn* c) {
  ::close(c->fd);  // also removes it from the epoll set
  delete c;
}

template <class Conn>
void accept_all(int lfd) {
  for (;;) {
    const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a transient error (EMFILE): try on the next readiness
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto* c = new Conn{};
    c->fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = static_cast<conn*>(c);  // always the base's address (arm_out stores it too)
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0) close_conn(c);
  }
}

// The loop: wait (up to timeout_ms), then flush and read each ready connection; `OnReadable`
// returns false when the connection must close. `EachRound` runs after every wait. Both are
// template arguments (functions known at compile time), so every call is direct and can be
// inlined: taken as a run-time function pointer, the call cost raw_epoll_echo 17-19
// instructions per echo (callgrind), which a raw baseline must not pay.
template <class Conn, bool (*OnReadable)(Conn*), void (*EachRound)()>
void run(int lfd, int timeout_ms) {
  epoll_event evs[1024];
  while (!g_stop) {
    const int n = epoll_pwait(g_ep, evs, 1024, timeout_ms, &g_wait_mask);
    EachRound();
    for (int i = 0; i < n; ++i) {
      auto* base = static_cast<conn*>(evs[i].data.ptr);
      if (base == nullptr) {
        accept_all<Conn>(lfd);
        continue;
      }
      auto* c = static_cast<Conn*>(base);
      const uint32_t e = evs[i].events;
      bool ok = true;
      if ((e & EPOLLOUT) && !c->pending.empty()) ok = flush_pending(c);
      if (ok && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) ok = OnReadable(c);
      if (!ok) close_conn(c);
    }
  }
}

}  // namespace raw
