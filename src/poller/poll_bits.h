// evnet — poller internals: the kernel's poll bits as io_event bits, shared by the epoll
// backend (epoll_wait() reports EPOLL* bits) and the io_uring backend (POLL_ADD completions
// carry POLL* bits). Linux only. Internal, not installed.
#pragma once

#include <poll.h>
#include <sys/epoll.h>

#include <cstdint>

#include "evnet/poller.h"

namespace evnet::detail {

// io_event's bits are the kernel's EPOLL*/POLL* values (the kernel ABI fixes them, and the two
// sets are equal), so the mapping is one AND: it runs once per event on the hot path. The mask
// drops what we never report (EPOLLPRI, EPOLLRDNORM... as io_uring's poll masks may carry).
static_assert(EPOLLIN == io_event::readable && EPOLLOUT == io_event::writable &&
              EPOLLRDHUP == io_event::read_hangup && EPOLLHUP == io_event::hangup &&
              EPOLLERR == io_event::error);
static_assert(POLLIN == io_event::readable && POLLOUT == io_event::writable &&
              POLLRDHUP == io_event::read_hangup && POLLHUP == io_event::hangup &&
              POLLERR == io_event::error);

/// The io_event bits for a mask of EPOLL* or POLL* bits. Pure; any thread.
inline std::uint32_t io_bits(std::uint32_t ev) noexcept {
  return ev & io_event::all;
}

}  // namespace evnet::detail
