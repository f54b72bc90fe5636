// evnet — poller internals: the seam between the poller facade and its kernel backends.
//
// This is an internal header, not installed. poller.cc implements the facade (argument checks,
// attachment bookkeeping, task queues, stop/wake-up protocol); one file per backend (epoll.cc,
// kqueue.cc, io_uring.cc) implements the kernel side by deriving from poller_backend.
//
// Wake-up protocol (shared by every backend):
//   producer: lock; push task; ++pending_; if (!wake_pending_.exchange(true)) wake(); unlock;
//   loop:     on the wake-up event: wake_pending_.store(false)  (BEFORE draining the queues),
//             then after I/O dispatch: if (pending_ != 0) lock, swap the queues out, run them.
// A producer that finds wake_pending_ already set skips the system call: the loop has not yet
// cleared the flag, so it will drain the queue after clearing it and will see that task. A
// producer that pushes after the clear sees the flag false and wakes the loop again, so no
// wake-up is lost. Second line of defence: before it blocks, the loop looks at pending_ and
// does not wait at all when tasks are queued. A producer on the loop thread itself (inside a
// round) never writes: that check covers it. The write happens under the queue lock so that
// close() (which takes it) cannot complete, and the backend be destroyed, while a producer
// has yet to write (see poller::trigger).
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <system_error>
#include <vector>

#include "evnet/error.h"
#include "evnet/poller.h"
#include "evnet/result.h"

namespace evnet::detail {

/// What a backend's wait returns when a signal handler interrupted it (EINTR) and nothing else
/// is asked of the loop (see poller_backend::interrupted()). poller_round() hands it to its
/// caller: poll_once() reports an empty round, the event base's blocking round waits again.
inline constexpr std::ptrdiff_t kInterrupted = PTRDIFF_MIN + 2;

/// Base of every kernel backend. Holds the state the facade shares with the backend; the
/// virtual functions are the kernel side. Loop-thread members are marked; the task queue is
/// guarded by task_mutex_; the atomics may be touched from any thread.
class poller_backend {
 public:
  explicit poller_backend(const poller_options& options) noexcept
      : min_events_(options.initial_events), max_events_(options.max_events) {}
  virtual ~poller_backend() = default;
  poller_backend(const poller_backend&) = delete;
  poller_backend& operator=(const poller_backend&) = delete;

  // ---- kernel side, implemented by each backend ----

  /// "epoll", "kqueue", ...
  virtual std::string_view name() const noexcept = 0;
  /// Registers a.fd with the kernel, user data = &a. Loop thread. The facade has checked the
  /// arguments and the attachment state; the backend maps kernel errors (EEXIST →
  /// errc::already_registered; others as system errors).
  virtual std::error_code add(poll_attachment& a, interest what, trigger_mode mode) noexcept = 0;
  /// Changes/re-arms a registration. Loop thread. ENOENT → errc::not_registered.
  virtual std::error_code modify(poll_attachment& a, interest what, trigger_mode mode) noexcept = 0;
  /// Removes a registration from the kernel. Loop thread. ENOENT → errc::not_registered.
  virtual std::error_code remove(poll_attachment& a) noexcept = 0;
  /// Waits up to timeout_ms (-1 = forever) and dispatches every fetched event: callbacks of
  /// attachments (request_stop(), relaxed, when one returns poll_action::stop) and the wake-up
  /// event (calling on_wake()). Returns the number of callbacks run, or the kernel error as
  /// -errno (a plain integer: it comes back in a register, once per round), or kStaleWake for
  /// a wait that fetched only a stale wake-up (poller_round() then waits again), or
  /// interrupted() for a wait that EINTR ended with nothing fetched. Adjusts the event array
  /// size afterwards. Loop thread.
  virtual std::ptrdiff_t wait_and_dispatch(int timeout_ms) = 0;
  /// Blanks events already fetched for `a` later in the batch being dispatched, so a callback
  /// that removes (and frees) `a` is never followed by a call through a dangling pointer.
  /// Loop thread; a no-op outside dispatch.
  virtual void invalidate(const poll_attachment& a) noexcept = 0;
  /// Makes the loop's wait return. Any thread; async-signal-safe (one write/kevent call).
  virtual void wake() noexcept = 0;
  /// Closes the kernel poll object; the wake-up object stays valid until destruction so that
  /// a racing stop()/trigger() never writes to a recycled descriptor. Loop thread.
  virtual void close_kernel() noexcept = 0;
  /// Current size of the event array. Loop thread.
  virtual std::size_t event_capacity() const noexcept = 0;

  // ---- helpers for backends ----

  /// Called by a backend when it fetches its wake-up event. Clears the coalescing flag before
  /// the facade drains the queues (see the protocol above).
  void on_wake() noexcept { wake_pending_.store(false, std::memory_order_seq_cst); }

  /// After a wait that fetched the wake-up and nothing else (on_wake() called): true when
  /// nothing is asked of the loop, no task queued and no stop, so the wake-up is stale (its
  /// task ran in an earlier round that saw it queued after dispatch, or its stop was consumed
  /// before the kernel wait) and the backend resumes waiting rather than end the round empty.
  /// The queue is looked at under its lock: a producer that skipped its wake-up because the
  /// flag was still set has then either queued its task visibly, or takes the lock after us
  /// and sees the flag clear (so it wakes the resumed wait). Loop thread; rare path.
  bool stale_wake() noexcept {
    if ((pending_.load(std::memory_order_seq_cst) & kStopBits) != 0) {
      return false;
    }
    std::lock_guard<std::mutex> lock(task_mutex_);
    return pending_.load(std::memory_order_relaxed) == 0;
  }

  /// A wait a signal handler interrupted (EINTR) with nothing fetched: kInterrupted when no
  /// task is queued and no stop requested, so that a caller waiting for something can tell it
  /// from a round that ran tasks and wait again; otherwise an empty round (0) whose tasks and
  /// stop poller_round() handles as usual. (A task or stop that comes after this look writes
  /// the wake-up, so the next wait returns at once.) A wait that was not to block
  /// (timeout_ms == 0) is an empty round too: there is nothing to wait again for, and the
  /// caller need not keep the timeout across the round to tell. Loop thread; rare path.
  std::ptrdiff_t interrupted(int timeout_ms) const noexcept {
    return timeout_ms == 0 || pending_.load(std::memory_order_seq_cst) != 0 ? 0 : kInterrupted;
  }

  /// Sets kStopBit in pending_: stop() (seq_cst; any thread, async-signal-safe: one lock-free
  /// atomic or), a callback's poll_action::stop or a close() deferred to the round's end
  /// (relaxed; the loop thread).
  void request_stop(std::memory_order order) noexcept { pending_.fetch_or(kStopBit, order); }

  /// Sets kExitStopBit in pending_: the event base's exit() from another thread (any thread,
  /// async-signal-safe: one lock-free atomic or). True when it was not set already, so the
  /// caller writes the wake-up (one is on its way otherwise).
  bool request_exit_stop() noexcept {
    return (pending_.fetch_or(kExitStopBit, std::memory_order_seq_cst) & kExitStopBit) == 0;
  }

  /// Event-array sizing policy (gnet's): double when a round filled the array; halve (not
  /// below the initial size) after kShrinkAfterRounds consecutive rounds that used less than a
  /// quarter of it. Returns the new capacity. The hysteresis keeps a bursty server from
  /// reallocating on every burst. Loop thread.
  std::size_t next_capacity(std::size_t capacity, std::size_t used) noexcept {
    // Common case first: an array at its initial size that was not filled.
    if (capacity == min_events_ && used != capacity) {
      return capacity;
    }
    if (used == capacity) {
      sparse_rounds_ = 0;
      if (capacity >= max_events_) {
        return capacity;
      }
      return capacity * 2 < max_events_ ? capacity * 2 : max_events_;
    }
    if (used >= capacity / 4) {
      sparse_rounds_ = 0;
      return capacity;
    }
    if (++sparse_rounds_ < kShrinkAfterRounds) {
      return capacity;
    }
    sparse_rounds_ = 0;
    return capacity / 2 > min_events_ ? capacity / 2 : min_events_;
  }

  static constexpr unsigned kShrinkAfterRounds = 16;

  // ---- state shared with the facade (poller.cc) ----

  poller* facade_ = nullptr;  ///< the poller owning this backend (attachment owner_ value)
  const std::size_t min_events_;
  const std::size_t max_events_;
  unsigned sparse_rounds_ = 0;  ///< loop thread

  bool open_ = true;             ///< loop thread: false after close()
  bool in_round_ = false;        ///< loop thread: inside poll_once (callbacks/tasks running)
  bool close_deferred_ = false;  ///< loop thread: close() was called from inside a round
  bool inline_epoll_ = false;    ///< an epoll_backend: poller_round() calls its dispatch directly
  std::atomic<bool> polling_{false};  ///< some thread is inside poll_once (or holds it)
  /// While polling_: the polling thread's token (poller.cc's tls_token), so that thread is
  /// known as the owner whatever other pollers it also polls or holds.
  std::atomic<const void*> owner_{nullptr};
  std::atomic<bool> wake_pending_{false};  ///< a wake-up is in flight (coalescing)

  /// Attachments registered, as an intrusive doubly linked list (loop thread), so close() and
  /// the destructor can mark them unregistered.
  poll_attachment* head_ = nullptr;
  std::size_t registered_ = 0;

  /// Cross-thread task queues, guarded by task_mutex_.
  std::mutex task_mutex_;
  std::vector<task> high_;
  std::vector<task> low_;
  bool tasks_closed_ = false;  ///< guarded by task_mutex_
  /// Tasks queued and not yet run (including the loop's local batch), and kStopBits: a stop
  /// was requested (request_stop(), request_exit_stop()). Any thread. One word, so that each of the
  /// round's two looks at whether anything is asked of the loop besides I/O is one load and one
  /// branch.
  std::atomic<std::size_t> pending_{0};
  static constexpr std::size_t kStopBit = std::size_t{1} << (sizeof(std::size_t) * 8 - 1);
  /// The event base's exit() stop (request_exit_stop()): it ends a round as kStopBit does, but
  /// is a bit of its own, so that the base can tell it from a poller stop that arrives with it
  /// (stops_taken_). With one bit for both, such a stop was taken for exit()'s and lost when
  /// exit()'s turned out stale (its request already taken by an earlier round).
  static constexpr std::size_t kExitStopBit = kStopBit >> 1;
  static constexpr std::size_t kStopBits = kStopBit | kExitStopBit;
  /// The stop bits (kStopBits) that the last round ending with kRoundStopped took (round.h).
  /// Loop thread.
  std::size_t stops_taken_ = 0;
  /// While an event base holds the poller: its round's timer bound (base_impl::timer_due_ in
  /// event.cc), which run_tasks() sets to -1, so that a round that ran tasks ends with them
  /// rather than wait again for a timer whose early bound it reached. Loop thread; set on the
  /// rare path only (tasks queued), so the round pays nothing for it.
  std::int64_t* wait_bound_ = nullptr;

  /// Loop-local batches, swapped with the queues under the lock (capacity is reused).
  std::vector<task> high_run_;
  std::vector<task> low_run_;
  std::size_t low_pos_ = 0;  ///< next low task to run in low_run_
};

/// What a backend's dispatch (epoll's, epoll.h) returns for a wait that fetched nothing but a
/// stale wake-up (see poller_backend::stale_wake()): the caller waits again, with the same
/// timeout (the wake-up was pending before the wait began, so the wait took no time).
inline constexpr std::ptrdiff_t kStaleWake = PTRDIFF_MIN + 1;

/// Runs the queued tasks of one round (poller.cc). Loop thread, inside the round.
void run_tasks(poller_backend& b);

/// Backend factories. Each returns errc::unsupported where its kernel facility is not
/// compiled in. Safe from any thread.
result<std::unique_ptr<poller_backend>> make_epoll_backend(const poller_options& options);
result<std::unique_ptr<poller_backend>> make_kqueue_backend(const poller_options& options);

/// What add(), modify() and remove() report for an errno from the kernel's registration call
/// (epoll_ctl, a kevent change): EEXIST → errc::already_registered, ENOENT →
/// errc::not_registered, anything else as a system error. Pure; any thread.
inline std::error_code registration_error(int err) noexcept {
  switch (err) {
    case EEXIST:
      return errc::already_registered;
    case ENOENT:
      return errc::not_registered;
    default:
      return {err, std::system_category()};
  }
}

/// The `function` poller::add() gives an attachment that has only a poll_callback. Loop thread.
inline poll_action call_poll_callback(poll_attachment& a, std::uint32_t bits) {
  return a.callback(a.fd, bits);
}

/// Each backend maps its readiness bits to io_event bits itself (epoll and io_uring share
/// poll_bits.h); this helper keeps the callback invocation in one place: one direct call of the
/// attachment's function (poller::add() made it non-null). Loop thread.
inline bool dispatch_attachment(poll_attachment* a, std::uint32_t bits) {
  return a->function(*a, bits) == poll_action::stop;
}

}  // namespace evnet::detail
