// evnet — poller internals: the kernel's poll bits as io_event bits, shared by the epoll
// backend (epoll_wait() reports EPOLL* bits) and the io_uring backend (POLL_ADD completions
// carry POLL* bits). Linux only. Internal, not installed.
#pragma once

#include <poll.h>
#include <sys/epoll.h>

#include <cstdint>

#include "evnet/poller.h"

namespace evnet::detail {

// The kernel ABI fixes the EPOLL*/POLL* values (the two sets are equal), so the mapping is a few
// shifts and masks instead of five tests per event: it runs once per event on the hot path.
static_assert(EPOLLIN == 0x1 && EPOLLOUT == 0x4 && EPOLLERR == 0x8 && EPOLLHUP == 0x10 &&
              EPOLLRDHUP == 0x2000);
static_assert(POLLIN == 0x1 && POLLOUT == 0x4 && POLLERR == 0x8 && POLLHUP == 0x10 &&
              POLLRDHUP == 0x2000);
static_assert(io_event::readable == 1 && io_event::writable == 2 && io_event::read_hangup == 4 &&
              io_event::hangup == 8 && io_event::error == 16);

/// The io_event bits for a mask of EPOLL* or POLL* bits. Pure; any thread.
///   IN     0x1    → readable    0x1       OUT    0x4    → writable    0x2
///   HUP    0x10   → hangup      0x8       RDHUP  0x2000 → read_hangup 0x4
///   ERR    0x8    → error       0x10
inline std::uint32_t io_bits(std::uint32_t ev) noexcept {
  return (ev & 0x1U)             // IN
         | ((ev >> 1) & 0xAU)    // OUT and HUP
         | ((ev >> 11) & 0x4U)   // RDHUP
         | ((ev << 1) & 0x10U);  // ERR
}

}  // namespace evnet::detail
