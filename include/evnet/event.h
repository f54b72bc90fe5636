// evnet — event: a libevent-style event base with fd events, timers, tickers, signals and
// priorities, built on evnet::poller.
//
// This is a public header. An event_base owns a poller, a timer structure (a hierarchical
// timing wheel by default, or a 4-ary min-heap) and one ready queue per priority. An event
// watches an fd for read and/or write readiness, optionally with a timeout, or is a pure timer,
// or watches a signal. Events are one-shot unless ev_flag::persist is set.
//
// Threading: an event_base and its events belong to one thread, the *loop thread* (the thread
// that calls dispatch()/loop_once(); before the first round, the thread that sets things up).
// Every member function is loop-thread only unless its comment says otherwise; exit() and
// run_in_loop() are safe from any thread. Every callback runs on the loop thread, from inside
// dispatch()/loop_once(), never from inside attach()/detach(). While a round runs on one
// thread, attach/detach/rearm/set_priority/activate and dispatch/loop_once called from another
// thread fail with errc::wrong_thread instead of corrupting the base (destroying an event
// there is asserted against in debug builds).
//
// Ownership: the caller owns its events, and the base must outlive them. Destroying a base
// while events still exist is detected in every build: the remaining events are orphaned
// (detached, their callbacks never run again) and every later call on them fails with
// errc::closed instead of touching freed memory; debug builds also print a warning to stderr.
//
// One loop round (loop_once) is: wait in the poller (bounded by the next timer deadline, zero
// if events are already ready), run fd/signal readiness into the ready queues, refresh the
// cached time, move expired timers into the ready queues, then run ready callbacks highest
// priority first, at most event_base_options::max_callbacks_per_round of them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <system_error>

#include "evnet/detail/timer_node.h"
#include "evnet/poller.h"
#include "evnet/result.h"

namespace evnet {

/// Event flags: what an event watches (constructor) and what fired (callback argument).
// The flags are named like enumerators (ev_flag::read, as std::ios_base::in), not kName
// constants: they are the values of one flag set, always written with the namespace.
// NOLINTBEGIN(readability-identifier-naming)
namespace ev_flag {
inline constexpr std::uint32_t read = 1;     ///< fd is readable (or at EOF / in error)
inline constexpr std::uint32_t write = 2;    ///< fd is writable (or in error)
inline constexpr std::uint32_t timeout = 4;  ///< the timeout given to attach() passed
inline constexpr std::uint32_t persist = 8;  ///< stay attached after firing (else one-shot)
/// The fd argument is a signal number. How it arrives is event_base_options::signals:
/// - signalfd (Linux's default): attaching the first event for a signal blocks it with
///   pthread_sigmask in the calling thread, and it stays blocked after the last event detaches
///   (unblocking could deliver a pending one with its default action). If the signal's
///   disposition is SIG_IGN (as SIGINT is in background jobs), it is reset to SIG_DFL, because
///   an ignored signal is discarded even while blocked. Block the signal in every thread
///   (simplest: in main() before starting threads), otherwise the kernel may deliver it to
///   another thread and signalfd never sees it.
/// - self_pipe (the default elsewhere, and on request on Linux): the first event for a signal
///   in the process installs a sigaction handler (SA_RESTART) that writes the signal number
///   to a pipe of each base watching it; the previous disposition is restored when the last
///   event for it, in any base, detaches. Do not block the signal, and do not install another
///   handler for it meanwhile. At most 16 bases watch one signal at once (then attach fails
///   with EBUSY).
/// Every base watching a signal sees each delivery, on both paths: the signalfd that reads a
/// delivery (the kernel gives it to one) has it passed on to the other bases watching it
/// through their signalfd, as a task their loops run. (Bases on different paths for one
/// signal do not share: a blocked signal never reaches the self-pipe's handler, and one
/// caught by the handler never reaches a signalfd.)
/// Several deliveries in one round coalesce into one callback.
/// Signals no event watches, the same on both paths: a delivery caught while an event of the
/// base watched the signal but not yet read when the last such event detaches is dropped with
/// it (as detach() drops a pending dispatch); it never reaches an event attached later. A
/// one-shot event counts as watching while its callback runs (a signal arriving then reaches
/// it if the callback attaches it again, also when the callback's detach of another signal's
/// last event reads it from the channel meanwhile). A signal sent while no event watches it is not
/// the base's: with signalfd it stays pending (blocked) until an event is attached for it, with
/// self_pipe the previous disposition takes it.
inline constexpr std::uint32_t signal = 16;
}  // namespace ev_flag
// NOLINTEND(readability-identifier-naming)

/// How signal events (ev_flag::signal) reach the base; see ev_flag::signal.
enum class signal_delivery : std::uint8_t {
  automatic,  ///< signalfd on Linux, self_pipe elsewhere
  signalfd,   ///< Linux only (elsewhere attaching a signal event fails with errc::unsupported)
  self_pipe,  ///< a sigaction handler writes to a pipe the loop reads; every POSIX system
};

/// Which structure keeps the pending timers. Both are measured in bench/README.md.
enum class timer_structure : std::uint8_t {
  wheel,  ///< hierarchical timing wheel: O(1) add/cancel/re-arm, tick-granular (default)
  heap,   ///< 4-ary min-heap: O(log n) add/cancel, nanosecond-exact ordering
};

/// Options for event_base::create.
struct event_base_options {
  /// Number of priority levels, at least 1 (0 is the highest). New events get priorities/2.
  int priorities = 3;
  /// Options of the poller the base opens.
  poller_options poller;
  /// Timer structure. The wheel won the measurements (bench/README.md "Timer structures").
  timer_structure timers = timer_structure::wheel;
  /// Wheel resolution. A timer fires at the first tick boundary at or after its deadline, so
  /// it is never early. The poller waits in whole milliseconds, rounded up (epoll_wait's unit),
  /// so a timer is up to one tick plus 1 ms late (plus scheduling latency): about 1.4 ms late
  /// on average with the default 1 ms tick, and a tick below 1 ms buys no precision. A ticker
  /// that falls more than a period behind skips the ticks it missed.
  std::chrono::nanoseconds wheel_tick = std::chrono::milliseconds(1);
  /// Callbacks run per loop round, at most; the rest stay queued for the next round (which
  /// then polls without blocking). Bounds latency of I/O behind a burst of ready events.
  std::size_t max_callbacks_per_round = 1024;
  /// How signal events are delivered (see ev_flag::signal).
  signal_delivery signals = signal_delivery::automatic;
};

class event;
class event_base;

namespace detail {
class base_impl;
struct fd_slot;
}  // namespace detail

/// Callback of an event: (fd or signal number, the ev_flag bits that fired). Runs on the loop
/// thread. It may attach, detach or destroy any event (itself included), create events, and
/// call exit(); it must not destroy the base or call dispatch()/loop_once().
using event_callback = std::function<void(int fd, std::uint32_t fired_flags)>;

/// The event loop: a poller, a timer structure and per-priority ready queues.
///
/// Priorities: one FIFO ready queue per level; each callback slot of a round takes the head of
/// the highest-priority non-empty queue. Low priorities can starve: when high-priority events
/// are ready every round in numbers above max_callbacks_per_round, lower ones wait.
class event_base {
 public:
  /// Opens a poller and builds a base. Safe from any thread; the base then belongs to the
  /// thread that uses it. Errors: errc::invalid_argument (priorities < 1, tick <= 0), or the
  /// poller's open() error.
  static result<std::unique_ptr<event_base>> create(const event_base_options& options = {});

  /// Closes the poller. Events still alive are orphaned (see the header comment). Loop thread
  /// only, never from inside a callback.
  ~event_base();
  event_base(const event_base&) = delete;
  event_base& operator=(const event_base&) = delete;

  /// The underlying poller. Loop thread only. The net layer registers its connection fds on it
  /// directly; such registrations are invisible to the base (dispatch() does not count them),
  /// and an fd registered there cannot also have an evnet::event.
  evnet::poller& poller() noexcept;

  /// The loop's notion of now. Inside a round it is read once after the poller wakes (the
  /// first use from a poller callback or task reads it, so it never predates the wait) and
  /// then cached for every callback of the round; outside a round it is the current time.
  /// Deadlines given to attach() are relative to it. Loop thread only.
  std::chrono::steady_clock::time_point now() const noexcept;

  /// Re-reads the clock into the cache. Loop thread only.
  void update_time() noexcept;

  /// Runs rounds until no events remain or exit() is called. "Events remaining" means: an
  /// attached event (fd, timer, ticker or signal), a ready event not yet dispatched, or a task
  /// queued with run_in_loop(). Registrations made directly on poller() do not count: code
  /// that relies only on those must drive the loop with loop_once(). Loop thread only (the
  /// calling thread becomes the loop thread). Returns {} on a clean return, the kernel error
  /// that stopped polling, errc::invalid_argument when called from inside a callback, or
  /// errc::wrong_thread while another thread runs a round.
  std::error_code dispatch();

  /// Runs one round; waits for something to happen unless `nonblocking` (then it only
  /// collects what is ready now). A blocking round that waits for the next timer returns only
  /// once that timer ran (or something else happened first: readiness, a task, exit()), even
  /// where the wheel's bound on the deadline ends the kernel's wait early. A signal handler
  /// that is not the base's interrupting the wait (EINTR) does not end it, as in libuv and
  /// libevent: the round waits again; a handler that wants the loop back calls exit() (or
  /// poller().stop(), which is async-signal-safe), or the program watches the signal with an
  /// ev_flag::signal event. Returns {} ,
  /// errc::stopped if exit() was requested (the request is consumed), a kernel error,
  /// errc::invalid_argument from inside a callback, or errc::wrong_thread while another thread runs
  /// a round. Loop thread only.
  std::error_code loop_once(bool nonblocking = false);

  /// The calling thread's hold on the base (and its poller) across many rounds: loop_once()
  /// takes the loop thread's ownership on every call and gives it back; a loop that runs round
  /// after round (the net layer's) takes it once. While it is held, the base behaves as during
  /// a round: other threads' loop-thread-only calls get errc::wrong_thread, and this thread's
  /// dispatch()/loop_once() get errc::invalid_argument. Loop thread only; released by the
  /// destructor on the same thread, before the base is destroyed.
  /// Work for the end of every run_until() round, as libev's check watchers: after each round
  /// in which *pending is true, fn(arg) runs on the loop thread, outside any callback (a round
  /// with nothing to do pays one load). pending == nullptr: none.
  struct round_end {
    const bool* pending = nullptr;
    void (*fn)(void*) = nullptr;
    void* arg = nullptr;
  };

  class holder {
   public:
    holder(holder&& other) noexcept : b_(other.b_) { other.b_ = nullptr; }
    holder& operator=(holder&&) = delete;
    ~holder();
    /// One round, with the same effects and results as event_base::loop_once().
    std::error_code loop_once(bool nonblocking = false);
    /// Runs rounds, each as loop_once(false), until `stop` is found set before a round (an
    /// acquire load; {} is returned), or a round ends with exit() (errc::stopped) or an error
    /// (returned). For a loop built on the base: it enters once for all its rounds, not once
    /// per round. Whoever sets `stop` from another thread also wakes the loop (exit(), or a
    /// task). See round_end for work to do between rounds.
    std::error_code run_until(const std::atomic<bool>& stop, round_end after);
    std::error_code run_until(const std::atomic<bool>& stop) { return run_until(stop, {}); }

   private:
    friend class event_base;
    explicit holder(detail::base_impl* b) noexcept : b_(b) {}
    detail::base_impl* b_;
  };

  /// Takes the hold for the calling thread. Errors: errc::invalid_argument (inside a callback,
  /// or already held by this thread), errc::wrong_thread (another thread runs a round or holds
  /// it), errc::closed (the poller was closed).
  result<holder> hold();

  /// Makes dispatch() return once the running callback (if any) returns; events still ready
  /// stay queued for the next round. Safe from any thread (wakes a waiting loop). A request
  /// made while no loop runs makes the next dispatch()/loop_once() return at once, and only
  /// that one; one made while a callback runs ends that loop_once() only, and the next one
  /// waits as usual. (From another thread, exit() wakes the loop with a stop of its own in the
  /// poller, not poller().stop(): a poller().stop() from elsewhere arriving with it still ends
  /// the round it reaches, also when the loop had already returned on the exit() request.)
  void exit() noexcept;

  /// Queues `fn` to run on the loop thread during the next round (high priority poller task).
  /// Safe from any thread. Errors: errc::closed, errc::invalid_argument (empty function).
  std::error_code run_in_loop(task fn);

  /// Same, with an explicit poller task priority. Safe from any thread.
  std::error_code trigger(task_priority priority, task fn);

  /// Number of priority levels. Any thread (immutable).
  int priorities() const noexcept;

  /// Attached events (fd, timer, signal), not counting ready-only or poller registrations.
  /// Loop thread only.
  std::size_t attached_events() const noexcept;

  /// The timer structure in use. Any thread (immutable).
  timer_structure timers() const noexcept;

 private:
  friend class event;
  explicit event_base(std::unique_ptr<detail::base_impl> impl);
  std::unique_ptr<detail::base_impl> impl_;
};

/// An fd event, a timer or a signal watcher. Owned by the caller; not copyable or movable (the
/// base links it by address); the destructor detaches it, and is safe inside any callback,
/// including the event's own.
///
/// Flags: ev_flag::read and/or ev_flag::write watch the fd; ev_flag::signal makes `fd` a
/// signal number; with none of these the event is a pure timer. ev_flag::persist keeps it
/// attached after it fires; ev_flag::timeout is informative (a timeout given to attach() always
/// applies) and is what the callback sees when the timeout fired.
///
/// Several events may watch the same fd (for example one read and one write event): the base
/// multiplexes them onto one poller registration. Detach (or destroy) every event of an fd
/// before closing it; the kernel forgets a closed fd on its own, and a stale registration
/// would then hide readiness of a new file that reuses the number. (With the io_uring poller
/// backend the kernel even keeps the closed file open until the registration is removed.)
class event : private detail::timer_node {
 public:
  /// Creates a detached event. Loop thread only. `cb` runs on the loop thread.
  event(event_base& base, int fd, std::uint32_t flags, event_callback cb);
  /// Detaches (see class comment). Loop thread only.
  ~event();
  event(const event&) = delete;
  event& operator=(const event&) = delete;

  /// Arms the event. For fd and signal events, `timeout` zero means no timeout; for a pure
  /// timer it is the delay (zero = the next round). A persistent event with a timeout re-arms
  /// the timeout every time it fires: from the previous deadline when it fired by timeout (no
  /// drift), from now when it fired by readiness (an inactivity timeout). O(1) and allocation
  /// free for the wheel. Loop thread only. Errors: errc::already_registered (attached),
  /// errc::invalid_argument (negative timeout, negative fd, bad signal number),
  /// std::errc::bad_file_descriptor (closed fd), errc::closed (the base is gone),
  /// errc::wrong_thread (a round runs on another thread), or the poller's / signalfd's error.
  /// A failed attach leaves the event detached.
  std::error_code attach(std::chrono::nanoseconds timeout = {});

  /// Detaches the event if attached and drops a pending dispatch; idempotent (detaching a
  /// detached event returns {}). Loop thread only. Errors: errc::closed (the base is gone),
  /// errc::wrong_thread (a round runs on another thread).
  std::error_code detach();

  /// detach() then attach(timeout): the cheap way to push a deadline back. On an attached
  /// event only the timeout part moves: a timeout that already fired and waits for dispatch is
  /// dropped, but readiness or a signal delivery already queued stays queued (a caught signal
  /// is never lost). Loop thread only.
  std::error_code rearm(std::chrono::nanoseconds timeout);

  /// Sets the priority (0 = highest, < base.priorities()); takes effect at once, also for a
  /// ready event. Loop thread only. Errors: errc::invalid_argument (out of range),
  /// errc::closed, errc::wrong_thread.
  std::error_code set_priority(int priority);

  /// Makes the event ready as if `fired_flags` had happened (libevent's event_active); it is
  /// dispatched in the current or next round. Works on detached events too. Loop thread only.
  /// Errors: errc::closed, errc::wrong_thread, errc::invalid_argument (the event has no
  /// callback).
  std::error_code activate(std::uint32_t fired_flags);

  /// Replaces the callback. Loop thread only (also from inside the callback itself, where the
  /// new callback takes effect from the next firing and the running one finishes). An empty
  /// callback makes the event's firings do nothing (it stays attached: detach() it to stop
  /// watching); attach() and activate() refuse an event without a callback.
  void set_callback(event_callback cb);

  /// True while attached (a one-shot event is detached just before its callback runs).
  /// Loop thread only.
  bool attached() const noexcept { return attached_; }
  /// True while queued for dispatch in the current or next round. Loop thread only.
  bool ready() const noexcept { return ready_pprev_ != nullptr; }
  /// The priority (0 = highest). Loop thread only.
  int priority() const noexcept { return priority_; }
  /// The fd (or signal number, or -1 for a timer) given at construction. Any thread.
  int fd() const noexcept { return fd_; }
  /// The ev_flag bits given at construction. Any thread.
  std::uint32_t flags() const noexcept { return flags_; }
  /// True while the timeout part is armed. Loop thread only.
  bool has_deadline() const noexcept { return queued(); }
  /// The armed (or last armed) timeout deadline; for a persistent event, already the next one
  /// while its callback runs. Loop thread only.
  std::chrono::steady_clock::time_point deadline() const noexcept {
    return std::chrono::steady_clock::time_point(
        std::chrono::nanoseconds(static_cast<const detail::timer_node*>(this)->deadline));
  }

 private:
  friend class detail::base_impl;
  // The timer_node base is the event's timer: the timer structures link it without any
  // allocation, and the base converts a fired node back with a static_cast.

  detail::base_impl* base_;
  event* ready_next_ = nullptr;
  event** ready_pprev_ = nullptr;
  event* watch_next_ = nullptr;  // per-fd or per-signal list
  event** watch_pprev_ = nullptr;
  event* all_next_ = nullptr;  // every event of the base (for orphaning)
  event** all_pprev_ = nullptr;
  bool* destroyed_ = nullptr;  // set while the dispatcher runs this event's callback
  std::int64_t timeout_ns_ = 0;
  int fd_;
  std::uint32_t flags_;
  std::uint32_t fired_ = 0;
  std::uint8_t priority_ = 0;
  bool attached_ = false;
  bool cb_replaced_ = false;  // set_callback() called while the dispatcher runs the callback
  event_callback cb_;
};

/// A one-shot fd-less timer. Same threading and ownership rules as event.
class timer {
 public:
  /// Creates a detached timer. Loop thread only. `fn` runs on the loop thread.
  timer(event_base& base, std::function<void()> fn);
  /// Arms it to fire once after `delay` (zero = next round). Loop thread only. Same errors as
  /// event::attach.
  std::error_code attach(std::chrono::nanoseconds delay) { return ev_.attach(delay); }
  /// Cancels it; idempotent. Loop thread only.
  std::error_code detach() { return ev_.detach(); }
  /// Cancels if armed and arms again: O(1), allocation free. Loop thread only.
  std::error_code rearm(std::chrono::nanoseconds delay) { return ev_.rearm(delay); }
  /// See event::set_priority. Loop thread only.
  std::error_code set_priority(int p) { return ev_.set_priority(p); }
  /// True while armed. Loop thread only.
  bool attached() const noexcept { return ev_.attached(); }
  /// When it fires (valid while attached). Loop thread only.
  std::chrono::steady_clock::time_point deadline() const noexcept { return ev_.deadline(); }

 private:
  event ev_;
};

/// A repeating fd-less timer. The next deadline is the previous deadline plus the period, not
/// the callback time plus the period, so it does not drift; if the loop was blocked for more
/// than a period, the missed ticks are skipped (not replayed in a burst). Same rules as event.
class ticker {
 public:
  /// Creates a detached ticker. Loop thread only. `fn` runs on the loop thread.
  ticker(event_base& base, std::function<void()> fn);
  /// Starts ticking every `period` (> 0), first tick one period from now. Loop thread only.
  /// Errors as event::attach, plus errc::invalid_argument for a zero or negative period.
  std::error_code attach(std::chrono::nanoseconds period);
  /// Stops ticking; idempotent. Loop thread only.
  std::error_code detach() { return ev_.detach(); }
  /// See event::set_priority. Loop thread only.
  std::error_code set_priority(int p) { return ev_.set_priority(p); }
  /// True while armed. Loop thread only.
  bool attached() const noexcept { return ev_.attached(); }
  /// The next tick's deadline (inside the callback: already the following one). Loop thread
  /// only.
  std::chrono::steady_clock::time_point deadline() const noexcept { return ev_.deadline(); }

 private:
  event ev_;
};

}  // namespace evnet
