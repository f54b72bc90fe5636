// libev_echo: the idiomatic libev echo server — one ev_io watcher per connection; on EV_READ it
// reads into a loop-wide buffer and writes the bytes straight back. Bytes the kernel refuses are
// kept per connection and the watcher is switched to EV_WRITE until they are flushed (libev's
// usual way to wait for writability without a second watcher).
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "peer_common.h"

namespace {

constexpr size_t kBufSize = 64 * 1024;
char g_buf[kBufSize];

struct connection {
  ev_io io;  // first member: the watcher pointer is the connection pointer
  std::string pending;
};

void close_conn(struct ev_loop* loop, connection* c) {
  ev_io_stop(loop, &c->io);
  ::close(c->io.fd);
  delete c;
}

void on_io(struct ev_loop* loop, ev_io* w, int revents) {
  auto* c = reinterpret_cast<connection*>(w);
  if (revents & EV_WRITE) {
    const ssize_t n = ::write(w->fd, c->pending.data(), c->pending.size());
    if (n < 0 && errno != EAGAIN && errno != EINTR) return close_conn(loop, c);
    if (n > 0) c->pending.erase(0, static_cast<size_t>(n));
    if (c->pending.empty()) {
      std::string().swap(c->pending);
      ev_io_stop(loop, w);
      ev_io_set(w, w->fd, EV_READ);
      ev_io_start(loop, w);
    }
    return;
  }
  const ssize_t n = ::read(w->fd, g_buf, kBufSize);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return close_conn(loop, c);
  if (n < 0) return;
  const ssize_t sent = ::write(w->fd, g_buf, static_cast<size_t>(n));
  if (sent < 0 && errno != EAGAIN && errno != EINTR) return close_conn(loop, c);
  const size_t done = sent > 0 ? static_cast<size_t>(sent) : 0;
  if (done < static_cast<size_t>(n)) {
    c->pending.assign(g_buf + done, static_cast<size_t>(n) - done);
    ev_io_stop(loop, w);
    ev_io_set(w, w->fd, EV_WRITE);
    ev_io_start(loop, w);
  }
}

void on_accept(struct ev_loop* loop, ev_io* w, int) {
  for (;;) {
    const int fd = ::accept4(w->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto* c = new connection;
    ev_io_init(&c->io, on_io, fd, EV_READ);
    ev_io_start(loop, &c->io);
  }
}

void on_signal(struct ev_loop* loop, ev_signal*, int) {
  ev_break(loop, EVBREAK_ALL);
}

}  // namespace

int main(int argc, char** argv) {
  const peer::args args = peer::parse_args(argc, argv, "libev_echo");
  signal(SIGPIPE, SIG_IGN);
  struct ev_loop* loop = ev_default_loop(EVBACKEND_EPOLL);
  int port = 0;
  const int lfd = peer::listen_loopback(args.port, "libev_echo", &port);
  if (lfd < 0) return 1;
  ev_io accept_watcher;
  ev_io_init(&accept_watcher, on_accept, lfd, EV_READ);
  ev_io_start(loop, &accept_watcher);
  ev_signal sigint, sigterm;
  ev_signal_init(&sigint, on_signal, SIGINT);
  ev_signal_init(&sigterm, on_signal, SIGTERM);
  ev_signal_start(loop, &sigint);
  ev_signal_start(loop, &sigterm);
  peer::announce(port);
  ev_run(loop, 0);
  return 0;
}
