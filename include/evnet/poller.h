// evnet — poller: a portable readiness facility over epoll (Linux) and kqueue (BSD/macOS).
//
// This is a public header. It is the lowest layer of evnet: register a file descriptor with a
// callback, choose read/write interest and level/edge/one-shot triggering, run a blocking poll
// loop, and hand the loop tasks from any thread. The event, net and ws layers are built on it,
// and it is usable alone (see examples/poll_echo.cc).
//
// Threading: a poller belongs to the thread that calls poll()/poll_once() (the *loop thread*).
// add/modify/remove must be called on the loop thread, or before polling starts. trigger() and
// stop() are safe from any thread. Callbacks and tasks always run on the loop thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <system_error>

#include "evnet/result.h"

namespace evnet {

class poller;

namespace detail {
class poller_backend;
}

/// Which readiness the caller wants to hear about.
enum class interest : std::uint8_t {
  read = 1,
  write = 2,
  read_write = 3,
};

/// How readiness is reported.
enum class trigger_mode : std::uint8_t {
  /// Reported on every poll round while the condition holds (epoll default, kqueue default).
  level,
  /// Reported once per new arrival/transition (EPOLLET, EV_CLEAR); the callback must drain.
  edge,
  /// Reported once, then disarmed until modify() re-arms it (EPOLLONESHOT, EV_DISPATCH).
  oneshot,
};

/// Bits passed to a poll callback. Several may be set at once.
namespace io_event {
inline constexpr std::uint32_t readable = 1U << 0;  ///< data (or EOF, or a pending accept) to read
inline constexpr std::uint32_t writable = 1U << 1;  ///< room in the send buffer
inline constexpr std::uint32_t read_hangup = 1U << 2;  ///< peer shut down its write side (EOF)
inline constexpr std::uint32_t hangup = 1U << 3;       ///< both directions are gone (EPOLLHUP, RST)
inline constexpr std::uint32_t error = 1U << 4;        ///< an error is pending on the fd (SO_ERROR)
}  // namespace io_event

/// What a callback tells the poll loop.
enum class poll_action : std::uint8_t {
  proceed,  ///< keep polling
  stop,     ///< finish this round, then make poll() return cleanly
};

/// Callback for a registered descriptor: (fd, io_event bits). Runs on the loop thread.
using poll_callback = std::function<poll_action(int fd, std::uint32_t events)>;

/// A descriptor registration. The kernel's user data (epoll_data.ptr / kevent udata) points at
/// this object, so no lookup happens per event. The caller owns it and must keep it alive (and
/// at a stable address) until remove() returns or the poller is destroyed. Removing it inside
/// any callback is safe: events already fetched for it in the same round are discarded.
struct poll_attachment {
  int fd = -1;
  poll_callback callback;

  /// True between a successful add() and remove(). Loop thread only.
  bool registered() const noexcept { return owner_ != nullptr; }
  interest current_interest() const noexcept { return interest_; }
  trigger_mode current_mode() const noexcept { return mode_; }

  // Bookkeeping owned by the poller; do not touch. The poller links registered attachments
  // into an intrusive list so close() and ~poller() can mark them unregistered.
  poller* owner_ = nullptr;
  interest interest_ = interest::read;
  trigger_mode mode_ = trigger_mode::level;
  poll_attachment* prev_ = nullptr;
  poll_attachment* next_ = nullptr;
};

/// Which kernel facility backs a poller.
enum class backend_kind : std::uint8_t {
  automatic,  ///< the best available here: EVNET_POLLER env var if set, else epoll / kqueue
  epoll,
  kqueue,
  io_uring,  ///< reserved: no io_uring backend yet; open() returns errc::unsupported
};

/// Priority of a task handed to the loop with trigger().
enum class task_priority : std::uint8_t {
  high,  ///< all queued high-priority tasks run every round, before low ones
  low,   ///< at most kLowTasksPerRound run per round so I/O is never starved
};

/// A unit of work run on the loop thread.
using task = std::function<void()>;

/// Options for poller::open.
struct poller_options {
  backend_kind backend = backend_kind::automatic;
  /// Initial size of the event array; it doubles (up to max_events) when a round fills it and
  /// halves (down to this value) when rounds use less than a quarter of it.
  std::size_t initial_events = 128;
  std::size_t max_events = 1024;
};

/// The readiness facility. Not copyable or movable: attachments point back at it.
class poller {
 public:
  /// Low-priority tasks run per poll round, at most.
  static constexpr std::size_t kLowTasksPerRound = 256;

  /// Opens a poller. Safe from any thread. Fails with errc::unsupported for a backend this
  /// build or kernel lacks, or with the system error of epoll_create1/kqueue/eventfd.
  static result<std::unique_ptr<poller>> open(const poller_options& options = {});

  /// Closes the kernel objects; see close().
  ~poller();
  poller(const poller&) = delete;
  poller& operator=(const poller&) = delete;

  /// Registers `a.fd` with interest and trigger mode. Loop thread only.
  /// Errors: errc::already_registered if `a` (or another attachment for the same fd) is
  /// registered; std::errc::bad_file_descriptor for a closed fd; errc::invalid_argument for an
  /// attachment without callback or with a negative fd; errc::closed after close().
  std::error_code add(poll_attachment& a, interest what, trigger_mode mode = trigger_mode::level);

  /// Changes interest and/or trigger mode; also re-arms a one-shot registration. Loop thread
  /// only. Errors: errc::not_registered if `a` is not registered with this poller.
  std::error_code modify(poll_attachment& a, interest what, trigger_mode mode);
  /// Same, keeping the current trigger mode.
  std::error_code modify(poll_attachment& a, interest what) { return modify(a, what, a.mode_); }

  /// Unregisters `a`. Pending events for it in the current round are discarded. Loop thread
  /// only. Does not close the fd. Errors: errc::not_registered.
  std::error_code remove(poll_attachment& a);

  /// Runs poll rounds until a callback returns poll_action::stop, stop() is called, or the
  /// poller is closed. Blocks the calling thread, which becomes the loop thread. Returns an
  /// empty error_code on a clean stop, or the kernel error that ended polling.
  std::error_code poll();

  /// Runs one round: waits up to `timeout` (negative = forever, zero = just check) for events,
  /// dispatches them, then runs queued tasks. Returns the number of descriptor callbacks run,
  /// or errc::stopped once a stop was requested (the request is consumed), or a kernel error.
  result<std::size_t> poll_once(std::chrono::milliseconds timeout);

  /// Asks the loop to return from poll() after the current round (poll_once() then returns
  /// errc::stopped). Safe from any thread, and async-signal-safe: it only stores an atomic
  /// flag and writes the wake-up descriptor.
  void stop() noexcept;

  /// Queues `fn` to run on the loop thread and wakes the loop if it is waiting. Safe from any
  /// thread. Wake-ups are coalesced: while one is pending, further tasks cost no system call.
  /// Errors: errc::closed after close() (the task is destroyed, never run);
  /// errc::invalid_argument for an empty function.
  std::error_code trigger(task_priority priority, task fn);

  /// Closes the kernel facility. Tasks still queued are destroyed without running; their
  /// number is returned. Registered attachments are forgotten (their fds stay open). Loop
  /// thread only, and not from inside a callback. Idempotent.
  std::size_t close();

  /// True until close(). Loop thread only.
  bool is_open() const noexcept;

  /// The backend in use: "epoll" or "kqueue".
  std::string_view backend_name() const noexcept;

  /// Current size of the event array (for tests and tuning). Loop thread only.
  std::size_t event_capacity() const noexcept;

  /// Number of tasks queued and not yet run. Safe from any thread (a snapshot).
  std::size_t pending_tasks() const noexcept;

  /// Number of attachments currently registered. Loop thread only.
  std::size_t registered_count() const noexcept;

 private:
  explicit poller(std::unique_ptr<detail::poller_backend> backend);
  std::unique_ptr<detail::poller_backend> backend_;
  friend class detail::poller_backend;
};

}  // namespace evnet
