// evnet — the epoll backend's class (Linux), an internal header. The class is here, not in
// epoll.cc, so that poller_round() (round.h) can call its dispatch directly, inlined, rather than
// through the virtual wait_and_dispatch(): the event base's round, the poller's round and the
// epoll dispatch then compile to one function. The rest of the backend is in epoll.cc.
#pragma once

#if defined(__linux__)

#include <sys/epoll.h>

#include <cerrno>
#include <cstdint>
#include <vector>

#include "poller/backend.h"

namespace evnet::detail {

class epoll_backend final : public poller_backend {
 public:
  epoll_backend(const poller_options& options, int epfd, int wakefd);
  ~epoll_backend() override;

  std::string_view name() const noexcept override { return "epoll"; }
  std::error_code add(poll_attachment& a, interest what, trigger_mode mode) noexcept override;
  std::error_code modify(poll_attachment& a, interest what, trigger_mode mode) noexcept override;
  std::error_code remove(poll_attachment& a) noexcept override;
  std::ptrdiff_t wait_and_dispatch(int timeout_ms) override { return dispatch_round(timeout_ms); }
  void invalidate(const poll_attachment& a) noexcept override;
  void wake() noexcept override;
  void close_kernel() noexcept override;
  std::size_t event_capacity() const noexcept override {
    return static_cast<std::size_t>(capacity_);
  }
  std::error_code register_wake() noexcept;

  /// wait_and_dispatch(), inline for poller_round().
  [[gnu::always_inline]] std::ptrdiff_t dispatch_round(int timeout_ms) {
    wait_ms_ = timeout_ms;  // a member: the rare stale wake-up test below needs it
    const int n = ::epoll_wait(epfd_, events_.data(), capacity_, timeout_ms);
    if (n < 0) [[unlikely]] {
      return errno == EINTR ? interrupted(timeout_ms) : wait_failed();
    }
    // Wake-ups and removed attachments are counted (rare) in a member: a local would hold a
    // register across the callbacks.
    skipped_ = 0;
    // A local pointer: the array is not reallocated during dispatch, and the compiler could not
    // otherwise keep it in a register across the opaque callbacks.
    epoll_event* const evs = events_.data();
    batch_size_ = n;
    epoll_event* const end = evs + n;
    for (epoll_event* e = evs; e != end; ++e) {
      void* const p = e->data.ptr;
      // One compare for the two rare cases: 0 (the attachment was removed earlier in this
      // batch) and kWakeTag (the wake-up eventfd).
      if (reinterpret_cast<std::uintptr_t>(p) <= kWakeTag) [[unlikely]] {
        // Nothing but a stale wake-up (see stale_wake()): wait again, with the same timeout.
        // Told apart here, on the wake-up's own rare path, not before the loop on every wait.
        if (p != nullptr && woken_in_vain()) {
          batch_size_ = 0;
          return kStaleWake;
        }
        ++skipped_;
        continue;
      }
      // epoll reports only what was asked (readable, writable, read hang-up) plus error and
      // hang-up, all io_event bits already: no mask needed (static_asserts in poll_bits.h).
      if (dispatch_attachment(static_cast<poll_attachment*>(p), e->events)) {
        request_stop(std::memory_order_relaxed);  // ends the round (round.h)
      }
    }
    // The batch's size is read back from its member: n kept across the callbacks would cost
    // the loop a register or a stack slot.
    const int fetched = batch_size_;
    batch_size_ = 0;
    // Common case first (next_capacity()'s own first test): an array at its initial size that
    // was not filled keeps its size. One compare (see resize_at_).
    if (fetched >= resize_at_) [[unlikely]] {
      resize_events(static_cast<std::size_t>(fetched));
    }
    const std::ptrdiff_t ran = static_cast<std::ptrdiff_t>(fetched) - skipped_;
    if (ran < 0) {
      __builtin_unreachable();  // skipped_ <= fetched: the callers' tests for ran < 0 go
    }
    return ran;
  }

 private:
  std::ptrdiff_t wait_failed() noexcept;
  /// The wake-up event came in the current batch: on_wake(), and whether it was all the wait
  /// fetched and stale. Out of line, so that none of it is hoisted into the dispatch loop.
  [[gnu::noinline]] bool woken_in_vain() noexcept;
  void resize_events(std::size_t used);

  int epfd_;
  // The wake-up registration's user data: no attachment lives at address 1.
  static constexpr std::uintptr_t kWakeTag = 1;
  int wakefd_;
  std::vector<epoll_event> events_;
  int capacity_;  // events_.size(), kept as the int epoll_wait takes (no division per round)
  // A batch of at least this many events asks resize_events(): capacity_ while the array has
  // its initial size (it grows only when filled), 0 above it (the shrink policy counts every
  // round). The policy's common case in one compare.
  int resize_at_;
  int batch_size_ = 0;          // events fetched by the current epoll_wait (0 outside dispatch)
  int wait_ms_ = 0;             // the current wait's timeout
  std::ptrdiff_t skipped_ = 0;  // events of the current batch that ran no callback
};

}  // namespace evnet::detail

#endif  // __linux__
