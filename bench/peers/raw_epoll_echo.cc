// raw_epoll_echo: the practical limit for a one-thread echo server on Linux, written by hand.
//
// Edge-triggered epoll, each connection registered once (EPOLLIN | EPOLLRDHUP, no epoll_ctl per
// message); on readiness it reads into one shared buffer and writes the bytes straight back from
// it ("read then write in place"). A read that returns less than the buffer means the socket is
// drained, so no second read is spent to see EAGAIN: one read and one write per message, with
// epoll_wait amortised over the ready connections. Bytes the kernel will not take right now are
// kept per connection and flushed on EPOLLOUT, which is only requested while such bytes exist.
#include <unistd.h>

#include <cerrno>

#include "raw_epoll_common.h"

namespace {

constexpr size_t kBufSize = 64 * 1024;
constexpr size_t kMaxPending = 1 << 20;  // stop reading while this much output is queued

char g_buf[kBufSize];

// Reads until the socket is drained (a short read), echoing each chunk as it arrives.
bool on_readable(raw::conn* c) {
  while (c->pending.size() < kMaxPending) {
    const ssize_t n = ::read(c->fd, g_buf, kBufSize);
    if (n > 0) {
      if (!raw::send_bytes(c, g_buf, static_cast<size_t>(n))) return false;
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

void nothing_per_round() {}

}  // namespace

int main(int argc, char** argv) {
  const peer::args args = peer::parse_args(argc, argv, "raw_epoll_echo");
  const int lfd = raw::start(args, "raw_epoll_echo");
  if (lfd < 0) return 1;
  raw::run<raw::conn, on_readable, nothing_per_round>(lfd, -1);
  return 0;
}
