// evnet — poller internals: one poller round, inline for its two callers (poller.cc's
// poll_once() and the event base's round in event.cc, which holds its poller). Internal header.
#pragma once

#include <cstddef>
#include <cstdint>

#include "poller/backend.h"
#include "poller/epoll.h"

namespace evnet::detail {

/// What poller_round() returns when the round ends with a stop (poller::stop(), or a callback
/// that returned poll_action::stop); otherwise it returns the number of callbacks run (>= 0), a
/// kernel error as -errno, or kInterrupted (backend.h: a signal handler ended the wait).
inline constexpr std::ptrdiff_t kRoundStopped = PTRDIFF_MIN;

/// One round, for the thread that owns the poller: poll_once() and holder::poll_once() run it,
/// and so does the event base's round, inline, for the base that holds its poller (one call
/// level fewer per round; see poller_access). The hot path is: one relaxed load of the stop
/// flag and of the task count, the kernel wait and dispatch, the same two loads again. No lock
/// and no system call besides the wait unless tasks are queued or a stop was requested. The
/// caller has checked open_ and handles close_deferred_ afterwards. timeout_ms: -1 = forever.
[[gnu::always_inline]] inline std::ptrdiff_t poller_round(poller_backend& b, int timeout_ms) {
  b.in_round_ = true;
  std::ptrdiff_t ran;
  if (b.stop_requested_.load(std::memory_order_relaxed) &&
      b.stop_requested_.exchange(false, std::memory_order_acq_rel)) [[unlikely]] {
    // A stop requested before the round (or by a signal handler) ends it without waiting.
    ran = kRoundStopped;
  } else {
    // Queued tasks (including a low-priority backlog) must not wait for I/O: just check.
    // Relaxed is enough: a task queued concurrently also wakes the kernel wait.
    if (b.pending_.load(std::memory_order_relaxed) != 0) {
      timeout_ms = 0;
    }
    for (;;) {
#if defined(__linux__)
      // The epoll backend's dispatch inline, a compare instead of a virtual call.
      ran = b.inline_epoll_ ? static_cast<epoll_backend&>(b).dispatch_round(timeout_ms)
                            : b.wait_and_dispatch(timeout_ms);
#else
      ran = b.wait_and_dispatch(timeout_ms);
#endif
      if (ran >= 0) [[likely]] {
        if (b.pending_.load(std::memory_order_relaxed) != 0 && !b.close_deferred_) {
          run_tasks(b);
        }
        if (b.stop_in_loop_ || b.stop_requested_.load(std::memory_order_relaxed)) [[unlikely]] {
          b.stop_in_loop_ = false;
          b.stop_requested_.store(false, std::memory_order_relaxed);
          ran = kRoundStopped;
        }
        break;
      }
      if (ran != kStaleWake) {
        break;  // a kernel error, or kInterrupted
      }
      // Woken by nothing but a stale wake-up (kStaleWake): wait again.
    }
  }
  b.in_round_ = false;
  return ran;
}

/// The event base's way into a poller it holds (poller.h befriends it), so that its round can
/// run the poller's round inline rather than through poller::holder::poll_once().
struct poller_access {
  static poller_backend& backend(poller::holder& h) noexcept { return *h.p_->backend_; }
  /// What holder::poll_once() does after a round in which close() was called from a callback
  /// or task: releases the hold and closes. The round's result is then errc::closed.
  static void close_deferred(poller::holder& h);
};

}  // namespace evnet::detail
