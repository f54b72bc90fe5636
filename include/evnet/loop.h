// evnet — loop: one reactor thread of an engine, owning an event base (poller + timers), the
// connections assigned to it and its timers.
//
// This is a public header. Loops are created by engine::run() (one per thread; loop 0 runs on
// the thread that called run()); when run() returns they are closed (post() refuses) but kept
// until the next run() or the engine's destruction, so that another thread still holding a
// conn of that run finds a closed loop, not freed memory. Users get references from
// engine::get_loop() or conn::owner().
//
// Threading: a loop belongs to its thread. Methods say whether they are loop-thread-only or safe
// from any thread. Callbacks given to a loop (post, run_after, run_every) always run on the loop
// thread, never inside the call that registered them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <system_error>

namespace evnet {

class engine;
class event_base;
class poller;

namespace detail {
struct loop_internals;
}

/// Identifies a timer made by run_after()/run_every() (on a loop or an engine) for cancel().
/// Never 0 for a valid timer; unique within one engine run.
using timer_id = std::uint64_t;

/// One reactor thread. Not copyable or movable.
class loop {
 public:
  /// Internal: created by engine::run().
  loop(engine& owner, std::size_t index);
  /// Destroyed by the next engine::run() or by the engine's destructor (closed, not destroyed,
  /// when run() returns).
  ~loop();
  loop(const loop&) = delete;
  loop& operator=(const loop&) = delete;

  /// Position of this loop in the engine (0 .. engine::loop_count()-1). Any thread.
  std::size_t index() const noexcept { return index_; }
  /// The engine this loop belongs to. Any thread.
  engine& owner() const noexcept { return *engine_; }
  /// True when called on this loop's thread. Any thread.
  bool in_loop_thread() const noexcept;

  /// Runs `fn` on the loop thread at the end of the current (or next) round; never inside this
  /// call. Like the handler's callbacks and timers, `fn` runs as a callback: a connection it
  /// closes (or whose write fails) is closed, and its on_close called, when `fn` returns, so
  /// what `fn` touches is not torn down under it. Any thread. Errors: errc::closed once the
  /// loop has stopped (fn is destroyed unrun); errc::invalid_argument for an empty fn.
  std::error_code post(std::function<void()> fn);
  /// Runs `fn` now when called on the loop thread, otherwise post(fn) (with post's errors).
  /// Any thread. errc::invalid_argument for an empty fn.
  std::error_code dispatch(std::function<void()> fn);

  /// Runs `fn` once after `delay` on the loop thread. Any thread. Returns an id for cancel(),
  /// or 0 if the loop has stopped or fn is empty (fn never runs).
  timer_id run_after(std::chrono::nanoseconds delay, std::function<void()> fn);
  /// Runs `fn` every `period` (first after one period) on the loop thread until cancelled.
  /// Any thread. Returns an id for cancel(), or 0 if the loop has stopped, fn is empty or
  /// period <= 0.
  timer_id run_every(std::chrono::nanoseconds period, std::function<void()> fn);
  /// Cancels a timer of this loop. On the loop thread the timer is guaranteed not to run after
  /// this returns (a repeating timer may cancel itself from its own callback), even if it was
  /// created on another thread and its creation had not reached the loop yet; from another
  /// thread the cancellation is posted, so a run already due may still happen (a timer not
  /// yet created never runs). Unknown or finished ids are ignored. Any thread.
  void cancel(timer_id id) noexcept;

  /// The loop's clock: the time at the start of the current round (cheap, cached). Loop thread.
  std::chrono::steady_clock::time_point now() const noexcept;

  /// Connections currently served by this loop (open or closing). Any thread (a snapshot).
  std::size_t connection_count() const noexcept;

  /// The loop's event base, for registering your own fds/events on this thread. Loop thread.
  event_base& base() noexcept;

  /// Internal state, for the net layer's own files.
  detail::loop_internals& internals() noexcept { return *in_; }

 private:
  timer_id post_timer(timer_id id, std::chrono::nanoseconds delay, bool repeat,
                      std::function<void()> fn);

  engine* engine_;
  std::size_t index_;
  std::unique_ptr<detail::loop_internals> in_;
};

}  // namespace evnet
