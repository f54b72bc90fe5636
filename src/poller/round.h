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

/// How poller_round() reaches the backend's wait and dispatch: asking inline_epoll_ each round,
/// or known by the caller for a whole run (the event base's run_until() asks once).
enum class round_dispatch { ask, epoll_inline, virtual_call };

/// A stop requested (kStopBits in pending_): taken (the bits cleared, and recorded in
/// stops_taken_) with a locked and, out of line so the round's common path only loads the word.
[[gnu::noinline]] inline bool take_stop_request(poller_backend& b) noexcept {
  b.stops_taken_ = b.pending_.fetch_and(~poller_backend::kStopBits, std::memory_order_acq_rel) &
                   poller_backend::kStopBits;
  return b.stops_taken_ != 0;
}

/// The end of a round that found pending_ non-zero: the queued tasks run (unless close() was
/// called), then a stop requested during the round (stop(), a callback's poll_action::stop, a
/// deferred close(), or any of them from a task) ends it: kRoundStopped instead of `ran`.
inline std::ptrdiff_t finish_asked_round(poller_backend& b, std::ptrdiff_t ran) {
  if ((b.pending_.load(std::memory_order_relaxed) & ~poller_backend::kStopBits) != 0 &&
      !b.close_deferred_) {
    run_tasks(b);
  }
  if ((b.pending_.load(std::memory_order_relaxed) & poller_backend::kStopBits) != 0) {
    take_stop_request(b);
    return kRoundStopped;
  }
  return ran;
}

/// One round, for the thread that owns the poller: poll_once() and holder::poll_once() run it,
/// and so does the event base's round, inline, for the base that holds its poller (one call
/// level fewer per round; see poller_access). The hot path is: one relaxed load of pending_
/// (queued tasks and the stop bit in one word), the kernel wait and dispatch, the same load
/// again. No lock and no system call besides the wait unless tasks are queued or a stop was
/// requested. The caller has checked open_ and handles close_deferred_ afterwards: a close()
/// from inside the round also requests a stop, so such a round ends with kRoundStopped (or an
/// error) and a caller may test close_deferred_ on that rare branch only. timeout_ms: -1 =
/// forever.
template <round_dispatch D = round_dispatch::ask>
[[gnu::always_inline]] inline std::ptrdiff_t poller_round(poller_backend& b, int timeout_ms) {
  b.in_round_ = true;
  std::ptrdiff_t ran;
  if (const std::size_t asked = b.pending_.load(std::memory_order_relaxed); asked != 0)
      [[unlikely]] {
    // A stop requested before the round (or by a signal handler) ends it without waiting.
    if ((asked & poller_backend::kStopBits) != 0 && take_stop_request(b)) {
      b.in_round_ = false;
      return kRoundStopped;
    }
    // Queued tasks (including a low-priority backlog) must not wait for I/O: just check.
    // Relaxed is enough: a task queued concurrently also wakes the kernel wait.
    timeout_ms = 0;
  }
  for (;;) {
#if defined(__linux__)
    // The epoll backend's dispatch inline, a compare (or nothing) instead of a virtual call.
    if constexpr (D == round_dispatch::epoll_inline) {
      ran = static_cast<epoll_backend&>(b).dispatch_round(timeout_ms);
    } else if constexpr (D == round_dispatch::virtual_call) {
      ran = b.wait_and_dispatch(timeout_ms);
    } else {
      ran = b.inline_epoll_ ? static_cast<epoll_backend&>(b).dispatch_round(timeout_ms)
                            : b.wait_and_dispatch(timeout_ms);
    }
#else
    ran = b.wait_and_dispatch(timeout_ms);
#endif
    if (ran >= 0) [[likely]] {
      if (b.pending_.load(std::memory_order_relaxed) != 0) [[unlikely]] {
        ran = finish_asked_round(b, ran);
      }
      break;
    }
    if (ran != kStaleWake) {
      break;  // a kernel error, or kInterrupted
    }
    // Woken by nothing but a stale wake-up (kStaleWake): wait again.
  }
  b.in_round_ = false;
  return ran;
}

/// The event base's way into a poller it holds (poller.h befriends it), so that its round can
/// run the poller's round inline rather than through poller::holder::poll_once().
struct poller_access {
  static poller_backend& backend(poller::holder& h) noexcept { return *h.p_->backend_; }
  static poller_backend& backend(poller& p) noexcept { return *p.backend_; }
  /// What holder::poll_once() does after a round in which close() was called from a callback
  /// or task: releases the hold and closes. The round's result is then errc::closed.
  static void close_deferred(poller::holder& h);
};

}  // namespace evnet::detail
