// evnet — poller: a portable readiness facility over epoll or io_uring (Linux) and kqueue
// (BSD/macOS).
//
// This is a public header. It is the lowest layer of evnet: register a file descriptor with a
// callback, choose read/write interest and level/edge/one-shot triggering, run a blocking poll
// loop, and hand the loop tasks from any thread. The event, net and ws layers are built on it,
// and it is usable alone (see examples/poll_echo.cc).
//
// Threading: a poller belongs to the thread that calls poll()/poll_once() (the *loop thread*).
// add/modify/remove/close must be called on the loop thread, or while no thread is polling
// (set-up before the loop starts, tear-down after it returned); a call from another thread while
// one is polling is refused with errc::wrong_thread. trigger() and stop() are safe from any
// thread, and stop() also from a signal handler. Callbacks and tasks always run on the loop
// thread, and must not throw.
//
// One round of poll_once(): wait in the kernel (not at all if tasks are queued), dispatch every
// fetched event to its attachment's callback, run all queued high-priority tasks, then at most
// kLowTasksPerRound low-priority ones.
//
// Backends: epoll on Linux (the default there, tested). io_uring on Linux when asked for
// (readiness through IORING_OP_POLL_ADD; tested where the kernel allows io_uring). kqueue on
// BSD/macOS is compiled there but never run on those systems (this project's CI is Linux-only;
// it runs the kqueue backend against a kqueue emulation over epoll instead); on kqueue a
// descriptor ready for read and write is reported in two callbacks (one for a one-shot
// registration, which is disarmed as a whole as on epoll), and a second attachment for
// an already registered fd is not detected. On io_uring a poll request holds a reference to the
// file, so a descriptor closed without remove() stays open in the kernel until remove() or
// close() (the other differences are listed at the top of src/poller/io_uring.cc).
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
struct poller_access;
}  // namespace detail

/// Which readiness the caller wants to hear about. Hang-up and error conditions are reported
/// whatever the interest (epoll always reports them; EPOLLRDHUP is always requested).
enum class interest : std::uint8_t {
  read = 1,        ///< readable (data, EOF, or a pending accept)
  write = 2,       ///< writable (room in the send buffer, or a connect completed)
  read_write = 3,  ///< both
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

/// Bits passed to a poll callback. Several may be set at once: a reset TCP peer, for instance,
/// shows as readable | writable | read_hangup | hangup | error. The values are those of Linux's
/// EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP and EPOLLERR (equal to the POLL* ones), so the epoll
/// and io_uring backends hand the kernel's mask over with one AND instead of converting it bit
/// by bit; kqueue sets them by name. Use the names, never the numbers.
// Named like enumerators (io_event::readable), not kName constants, as ev_flag in event.h.
// NOLINTBEGIN(readability-identifier-naming)
namespace io_event {
inline constexpr std::uint32_t readable = 0x001U;  ///< data (or EOF, or a pending accept) to read
inline constexpr std::uint32_t writable = 0x004U;  ///< room in the send buffer
/// The peer shut down its write side: reads will reach EOF (EPOLLRDHUP; kqueue EV_EOF on read).
inline constexpr std::uint32_t read_hangup = 0x2000U;
/// Both directions are gone: peer closed after our shutdown, RST, pipe writer closed
/// (EPOLLHUP; kqueue EV_EOF on write, or on read with a socket error or with poll() reporting
/// POLLHUP).
inline constexpr std::uint32_t hangup = 0x010U;
/// An error is pending on the fd; read it with getsockopt(SO_ERROR) (EPOLLERR; kqueue EV_ERROR
/// or EV_EOF with an error in fflags).
inline constexpr std::uint32_t error = 0x008U;
/// Every bit above: a backend never reports any other.
inline constexpr std::uint32_t all = readable | writable | read_hangup | hangup | error;
}  // namespace io_event
// NOLINTEND(readability-identifier-naming)

/// What a callback tells the poll loop.
enum class poll_action : std::uint8_t {
  proceed,  ///< keep polling
  stop,     ///< finish this round, then make poll() return cleanly
};

/// Callback for a registered descriptor: (fd, io_event bits). Runs on the loop thread, inside
/// poll()/poll_once(). It may call add/modify/remove on any attachment (including its own),
/// trigger(), stop() and close() (deferred to the end of the round); it must not throw.
using poll_callback = std::function<poll_action(int fd, std::uint32_t events)>;

struct poll_attachment;

/// The lighter alternative to poll_callback: a plain function, called with the attachment itself
/// (use poll_attachment::context, or the attachment's address inside a larger object, to find
/// your state) and the io_event bits. It spares the std::function indirection on every event,
/// which matters to a server handling millions of events a second; evnet's connections use it.
/// Same thread and re-entrancy rules as poll_callback; it must not throw.
using poll_function = poll_action (*)(poll_attachment& a, std::uint32_t events);

/// A descriptor registration. The kernel's user data points at this object (epoll_data.ptr,
/// kevent udata) or names its slot (io_uring), so no search happens per event. The caller owns it
/// and must keep it alive (and at a stable address) until remove() returns, close() returns or the
/// poller is destroyed. Removing it inside any callback is safe, and so is freeing it right after:
/// events already fetched for it in the same round are discarded. A callback may even remove and
/// free its own attachment, provided it touches nothing it captured afterwards. Fill `fd` and
/// `callback` (or `function`) before add(); do not change `fd` while registered. Not copyable in a
/// meaningful way while registered (a copy would share the bookkeeping), so copy or move it only
/// when unregistered.
struct poll_attachment {
  // (`function` and `context` come first: they are what a dispatch reads, so an attachment
  // embedded after its owner's other hot fields adds 16 bytes to them, not 56.)

  /// If not null, called on the loop thread instead of `callback` (see poll_function). Set
  /// before add(), unchanged while registered. When it is null, add() sets it to an internal
  /// forwarder to `callback` (which then must stay set while registered).
  poll_function function = nullptr;
  /// Free for the owner of the attachment (typically the object `function` acts on); the poller
  /// never reads it.
  void* context = nullptr;
  /// The descriptor to watch; the caller owns it (the poller never closes it). Set before
  /// add(), unchanged while registered.
  int fd = -1;
  /// Called on the loop thread with this fd and the io_event bits that fired, unless `function`
  /// is set. One of the two must be set before add().
  poll_callback callback;

  /// True between a successful add() and remove() (or close()/destruction of the poller).
  /// Loop thread only.
  bool registered() const noexcept { return owner_ != nullptr; }
  /// The interest of the last successful add()/modify(). Loop thread only.
  interest current_interest() const noexcept { return interest_; }
  /// The trigger mode of the last successful add()/modify(). Loop thread only.
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
  /// The best available here: the EVNET_POLLER environment variable if set ("epoll",
  /// "kqueue" or "io_uring"; anything else makes open() fail with errc::invalid_argument),
  /// else epoll on Linux and kqueue elsewhere.
  automatic,
  epoll,  ///< Linux epoll with an eventfd wake-up
  /// BSD/macOS kqueue with an EVFILT_USER wake-up (CI runs it only against an emulation)
  kqueue,
  /// Linux io_uring, readiness via IORING_OP_POLL_ADD; open() fails with errc::unsupported
  /// where the build or the kernel lacks it (or it is disabled). Never chosen by automatic.
  io_uring,
};

/// Priority of a task handed to the loop with trigger().
enum class task_priority : std::uint8_t {
  high,  ///< all queued high-priority tasks run every round, before low ones
  low,   ///< at most kLowTasksPerRound run per round so I/O is never starved
};

/// A unit of work run on the loop thread (from poll()/poll_once()); it must not throw. It may
/// call any poller function, including trigger() (the new task runs in a later round).
using task = std::function<void()>;

/// Options for poller::open.
struct poller_options {
  /// The kernel facility; see backend_kind.
  backend_kind backend = backend_kind::automatic;
  /// Initial size of the event array (at least 1). It doubles (up to max_events) when a round
  /// fills it, and halves (never below this value) after 16 consecutive rounds that each used
  /// less than a quarter of it; the hysteresis keeps bursty traffic from reallocating.
  std::size_t initial_events = 128;
  /// Largest size of the event array (at least initial_events, at most INT_MAX).
  std::size_t max_events = 1024;
};

/// The readiness facility. Not copyable or movable: attachments point back at it.
class poller {
 public:
  /// Low-priority tasks run per poll round, at most.
  static constexpr std::size_t kLowTasksPerRound = 256;

  /// Opens a poller. Safe from any thread. Fails with errc::unsupported for a backend this
  /// build or kernel lacks (kqueue on Linux; io_uring on a kernel without it or older than
  /// 5.11, or where it is disabled by sysctl, seccomp or io_uring_group),
  /// errc::invalid_argument for bad options or a bad EVNET_POLLER value, or the system error
  /// of the kernel call that created the backend (epoll_create1, eventfd, kqueue, io_uring_setup,
  /// mmap, ...).
  static result<std::unique_ptr<poller>> open(const poller_options& options = {});

  /// Closes the poller as close() does (pending tasks destroyed unrun, attachments marked
  /// unregistered) and releases the kernel objects. Loop thread, while it is not polling.
  ~poller();
  poller(const poller&) = delete;
  poller& operator=(const poller&) = delete;

  /// Registers `a.fd` with interest and trigger mode; from then on `a.function` (if set) or
  /// `a.callback` runs on the loop thread when the fd is ready. Loop thread only (or while nobody
  /// polls). Errors (nothing is registered then): errc::closed after close(); errc::wrong_thread
  /// from another thread while one polls; errc::invalid_argument for an attachment with neither
  /// function nor callback, or with a negative fd; errc::already_registered if `a` is registered
  /// (here or with another poller) or another attachment has the same fd (epoll's EEXIST); a system
  /// error from the kernel, e.g. std::errc::bad_file_descriptor for a closed fd or
  /// std::errc::operation_not_permitted for a regular file.
  std::error_code add(poll_attachment& a, interest what, trigger_mode mode = trigger_mode::level);

  /// Changes interest and/or trigger mode; also re-arms a one-shot registration. Loop thread
  /// only. On error `a` keeps its previous registration. Errors: errc::closed;
  /// errc::wrong_thread; errc::not_registered if `a` is not registered with this poller (or the
  /// kernel says ENOENT); a system error (e.g. EBADF if the fd was closed; EAGAIN on io_uring
  /// while the kernel takes no submissions).
  std::error_code modify(poll_attachment& a, interest what, trigger_mode mode);
  /// Same, keeping the current trigger mode. Loop thread only.
  std::error_code modify(poll_attachment& a, interest what) { return modify(a, what, a.mode_); }

  /// Unregisters `a`; its callback is not called again, not even for events already fetched
  /// in the current round, so `a` may be freed as soon as this returns. Does not close the fd:
  /// remove before closing it. Loop thread only. Errors: errc::closed; errc::wrong_thread;
  /// errc::not_registered if `a` is not registered with this poller. If the kernel refuses the
  /// removal (e.g. EBADF because the fd was already closed) its error is returned, but `a` is
  /// forgotten all the same.
  std::error_code remove(poll_attachment& a);

  /// Runs poll rounds until a callback returns poll_action::stop, stop() is called, or the
  /// poller is closed (also from a callback). Blocks the calling thread, which becomes the loop
  /// thread and holds the poller for the whole run (as hold() does), between rounds too: other
  /// threads' add/modify/remove/close are refused with errc::wrong_thread until it returns.
  /// Returns an empty error_code on a clean stop or close, errc::wrong_thread if another
  /// thread is polling, errc::invalid_argument from inside a callback or task, or the kernel
  /// error that ended polling. Signals (EINTR) do not end it.
  std::error_code poll();

  /// Runs one round on the calling thread: waits up to `timeout` (negative = forever, zero =
  /// just check; no wait at all while tasks are queued) for events, dispatches them, then runs
  /// queued tasks. Returns the number of descriptor callbacks run; or errc::stopped when a
  /// stop was requested — by a callback or stop() during the round (which was completed), or
  /// before it (then nothing waits or runs) — and the request is consumed; errc::closed when
  /// the poller is closed (also by close() from inside this round); errc::invalid_argument when
  /// called from inside a callback or task; errc::wrong_thread while another thread polls; or
  /// the kernel's error. An interrupted wait (EINTR) is an empty round, not an error. A
  /// wake-up left over from a task that already ran or a stop already consumed does not end
  /// the wait.
  result<std::size_t> poll_once(std::chrono::milliseconds timeout);

  /// The calling thread's hold on the poller across many rounds: poll_once() takes the loop
  /// thread's ownership (and checks it is not re-entered) on every call and gives it back;
  /// a loop that polls round after round (the event and net layers) takes it once. While it is
  /// held, poll_once() on the poller from another thread returns errc::wrong_thread and from
  /// this thread errc::invalid_argument, exactly as during a round. Loop thread only; released
  /// by the destructor, which must run on the same thread.
  class holder {
   public:
    holder(holder&& other) noexcept : p_(other.p_) { other.p_ = nullptr; }
    holder& operator=(holder&&) = delete;
    ~holder();
    /// One round, with the same effects and results as poller::poll_once(). Loop thread.
    result<std::size_t> poll_once(std::chrono::milliseconds timeout);

   private:
    friend class poller;
    friend struct detail::poller_access;
    explicit holder(poller* p) noexcept : p_(p) {}
    poller* p_;
  };

  /// Takes the hold for the calling thread. Errors: errc::closed, errc::invalid_argument
  /// (inside a callback or task of this poller, or already held by this thread),
  /// errc::wrong_thread (another thread is polling or holds it).
  result<holder> hold();

  /// Asks the loop to return from poll() after the current round (poll_once() then returns
  /// errc::stopped); if nobody is polling, the next round returns at once. Safe from any
  /// thread, and async-signal-safe: it only stores an atomic flag and writes the wake-up
  /// descriptor (errno is preserved). Harmless after close().
  void stop() noexcept;

  /// Queues `fn` to run on the loop thread (in poll()/poll_once()) and wakes the loop if it is
  /// waiting. Safe from any thread (not from a signal handler: it locks and allocates). Tasks
  /// of one priority run in the order they were queued. Wake-ups are coalesced: while one is
  /// pending, further tasks cost no system call, and a task queued by the loop thread itself
  /// needs none. Errors (the task is then destroyed, never run): errc::closed after close();
  /// errc::invalid_argument for an empty function.
  std::error_code trigger(task_priority priority, task fn);

  /// Closes the kernel facility. Tasks still queued are destroyed without running (outside
  /// the queue lock, so their destructors may call trigger(), which fails with errc::closed);
  /// their number is returned. Registered attachments are marked unregistered (their fds stay
  /// open). Loop thread only. From inside a callback or task the close is deferred to the end
  /// of the current round (the rest of the round's tasks are then dropped) and the return value
  /// is only the number queued at the time of the call (the low-priority backlog of earlier
  /// rounds included; from a high-priority task, not the rest of its batch). Idempotent: later
  /// calls return 0.
  std::size_t close();

  /// True until close(). Loop thread only.
  bool is_open() const noexcept;

  /// The backend in use: "epoll", "io_uring" or "kqueue". Safe from any thread.
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
  friend struct detail::poller_access;
};

}  // namespace evnet
