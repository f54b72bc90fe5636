// evnet — event layer: event_base, event, timer, ticker.
#include "evnet/event.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "event/timer_heap.h"
#include "event/timer_wheel.h"
#include "poller/backend.h"
#include "poller/round.h"

// EVNET_KQUEUE_SHIM (tests/poller_kqueue.cmake) builds the event layer as on a BSD: over the
// kqueue backend, with signals through the self-pipe.
#if defined(__linux__) && !defined(EVNET_KQUEUE_SHIM)
#include <pthread.h>
#include <sys/signalfd.h>
#define EVNET_HAVE_SIGNALFD 1
#endif

namespace evnet {
namespace detail {

class base_impl;

namespace {

constexpr std::uint32_t kIoFlags = ev_flag::read | ev_flag::write;
constexpr int kMaxSignal = 65;  // signal numbers 1..64

const std::error_category& g_system_category = std::system_category();

std::int64_t clock_ns() noexcept {
  // steady_clock's clock, read without libstdc++'s out-of-line wrapper (twice per round).
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// now + delay, capped: a delay as large as nanoseconds::max() means "not in our lifetime",
// never a deadline that wrapped into the past.
std::int64_t deadline_after(std::int64_t now, std::int64_t delay) noexcept {
  std::int64_t d;
  return __builtin_add_overflow(now, delay, &d) ? INT64_MAX : d;
}

interest to_interest(std::uint32_t flags) noexcept {
  switch (flags & kIoFlags) {
    case ev_flag::read:
      return interest::read;
    case ev_flag::write:
      return interest::write;
    default:
      return interest::read_write;
  }
}

}  // namespace

// Test hook (tests/test_event_signals.cc): called by stop_signal() on the self-pipe path once it
// has drained the pipe for the signal's last event, i.e. where a delivery can arrive after the
// drain. Null in production: one load on that rare path.
extern void (*g_self_pipe_drained_hook)(int signo);
void (*g_self_pipe_drained_hook)(int signo) = nullptr;

namespace {

// ---- signal delivery through a self-pipe (every POSIX system) --------------------------------
//
// One process-wide sigaction handler per watched signal writes the signal number, one byte, to
// the pipe of every base watching it; each base reads its pipe in the loop like any fd. The
// handler only loads atomics and calls write(), both async-signal-safe. A base leaving the
// table clears its slot, then waits until no handler is running before it may close the pipe,
// so a handler never writes to a closed (or reused) descriptor. The handler's "running" count
// and slot load, and the base's slot store and count load, are sequentially consistent: with
// weaker orders each side could miss the other's write (a handler still holding the old fd
// while the base sees no handler running).

constexpr int kMaxSignalBases = 16;  // bases watching one signal at once

// Write ends plus one (0: free slot). Zero-initialised before any code runs.
constinit std::atomic<int> g_sig_pipes[kMaxSignal][kMaxSignalBases];
// Set by the handler when it writes a slot's byte, cleared by the base once it has read it:
// the pipe holds at most one byte per signal, so a storm of one signal cannot fill it and
// drown the byte of another (a delivery whose write is skipped coalesces with the byte still
// unread, which the base reads and reports after clearing the flag).
constinit std::atomic<bool> g_sig_unread[kMaxSignal][kMaxSignalBases];
constinit std::atomic<int> g_sig_handlers_running{0};
// Changes to the table and the dispositions (never touched by the handler).
constinit std::mutex g_sig_mu;
constinit int g_sig_watchers[kMaxSignal] = {};
struct sigaction g_sig_previous[kMaxSignal];  // restored when the last watcher leaves

// signalfd path: the bases watching each signal (guarded by g_sig_mu). A process-directed
// signal is pending once, and the first base to read its signalfd takes it; that base passes
// the delivery on to the others, so every base watching a signal sees each delivery, as on the
// self-pipe path (event.h, ev_flag::signal).
#ifdef EVNET_HAVE_SIGNALFD
std::vector<base_impl*> g_sigfd_bases[kMaxSignal];
#endif

void self_pipe_handler(int signo) {
  g_sig_handlers_running.fetch_add(1, std::memory_order_seq_cst);
  if (signo > 0 && signo < kMaxSignal) {
    const int saved = errno;
    const auto byte = static_cast<unsigned char>(signo);
    for (int i = 0; i < kMaxSignalBases; ++i) {
      const int fd = g_sig_pipes[signo][i].load(std::memory_order_seq_cst) - 1;
      if (fd >= 0 && !g_sig_unread[signo][i].exchange(true, std::memory_order_seq_cst)) {
        [[maybe_unused]] const ssize_t n = ::write(fd, &byte, 1);
      }
    }
    errno = saved;
  }
  g_sig_handlers_running.fetch_sub(1, std::memory_order_seq_cst);
}

std::error_code self_pipe_watch(int signo, int write_fd) {
  std::lock_guard<std::mutex> lock(g_sig_mu);
  std::atomic<int>* free_slot = nullptr;
  for (std::atomic<int>& slot : g_sig_pipes[signo]) {
    if (slot.load(std::memory_order_relaxed) == 0) {
      free_slot = &slot;
      break;
    }
  }
  if (free_slot == nullptr) {
    return std::make_error_code(std::errc::device_or_resource_busy);
  }
  g_sig_unread[signo][free_slot - g_sig_pipes[signo]].store(false, std::memory_order_seq_cst);
  free_slot->store(write_fd + 1, std::memory_order_release);
  if (g_sig_watchers[signo] == 0) {
    struct sigaction sa {};
    sa.sa_handler = &self_pipe_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (::sigaction(signo, &sa, &g_sig_previous[signo]) != 0) {
      const std::error_code ec(errno, std::system_category());
      free_slot->store(0, std::memory_order_release);
      return ec;
    }
  }
  ++g_sig_watchers[signo];
  return {};
}

void self_pipe_unwatch(int signo, int write_fd) noexcept {
  std::lock_guard<std::mutex> lock(g_sig_mu);
  for (std::atomic<int>& slot : g_sig_pipes[signo]) {
    if (slot.load(std::memory_order_relaxed) == write_fd + 1) {
      slot.store(0, std::memory_order_seq_cst);
      if (--g_sig_watchers[signo] == 0) {
        ::sigaction(signo, &g_sig_previous[signo], nullptr);
      }
      break;
    }
  }
}

// The base whose pipe's write end is write_fd has read signo's byte: the next delivery writes
// one again. Cleared before the base reports the signal, so a delivery whose write was skipped
// meanwhile is covered by that report.
void self_pipe_read(int signo, int write_fd) noexcept {
  for (int i = 0; i < kMaxSignalBases; ++i) {
    if (g_sig_pipes[signo][i].load(std::memory_order_seq_cst) == write_fd + 1) {
      g_sig_unread[signo][i].store(false, std::memory_order_seq_cst);
      return;
    }
  }
}

// After a base's slots are cleared: a handler that loaded one of its descriptors before the
// clear has finished with it once no handler runs.
void self_pipe_quiesce() noexcept {
  while (g_sig_handlers_running.load(std::memory_order_seq_cst) != 0) {
    std::this_thread::yield();
  }
}

}  // namespace

/// All events watching one fd share this poller registration (the poller allows one
/// attachment per fd). Slots are owned by the base and never freed before it, so a pointer to
/// one stays valid across callbacks that destroy events.
struct fd_slot {
  poll_attachment att;
  event* head = nullptr;         // events watching the fd (read, write or both)
  std::uint32_t registered = 0;  // ev_flag::read|write currently registered with the poller
};

/// The base's state. Lives behind event_base so events can point at it.
class base_impl {
 public:
  base_impl(const event_base_options& options, std::unique_ptr<evnet::poller> p)
      : options_(options),
        poller_(std::move(p)),
        now_ns_(clock_ns()),
        use_heap_(options.timers == timer_structure::heap),
        wheel_(options.wheel_tick.count(), now_ns_),
        ready_(static_cast<std::size_t>(options.priorities)) {
    for (ready_queue& q : ready_) {
      q.tail = &q.head;
    }
#ifdef EVNET_HAVE_SIGNALFD
    sigemptyset(&sigmask_);
    use_signalfd_ = options.signals != signal_delivery::self_pipe;
#endif
  }

  ~base_impl() {
    assert(!in_round_ && "an event_base must not be destroyed from inside its callbacks");
#ifdef EVNET_HAVE_SIGNALFD
    // Out of the signalfd registry before anything goes: another base's loop may be passing a
    // delivery on to this one (see forward_signals()).
    for (int signo = 1; signo < kMaxSignal; ++signo) {
      if (use_signalfd_ && sig_started_[signo]) {
        sigfd_unregister(signo);
      }
    }
#endif
    std::size_t orphans = 0;
    // Orphan every event still alive: it must never reach this memory again.
    while (all_ != nullptr) {
      event* ev = all_;
      unlink_all(ev);
      timer_node* n = ev;
      n->next = nullptr;
      n->pprev = nullptr;
      n->pos = timer_node::kNotQueued;
      ev->ready_next_ = nullptr;
      ev->ready_pprev_ = nullptr;
      ev->watch_next_ = nullptr;
      ev->watch_pprev_ = nullptr;
      ev->attached_ = false;
      ev->base_ = nullptr;
      ++orphans;
    }
#ifndef NDEBUG
    if (orphans != 0) {
      std::fprintf(stderr,
                   "evnet: event_base destroyed while %zu event(s) still exist; they are "
                   "orphaned and fail with errc::closed (the base must outlive its events)\n",
                   orphans);
    }
#endif
    poller_->close();
#ifdef EVNET_HAVE_SIGNALFD
    if (sigfd_ >= 0) {
      ::close(sigfd_);
    }
#endif
    if (sig_pipe_[1] >= 0) {
      for (int signo = 1; signo < kMaxSignal; ++signo) {
        if (sig_started_[signo]) {
          self_pipe_unwatch(signo, sig_pipe_[1]);
        }
      }
      self_pipe_quiesce();
      ::close(sig_pipe_[0]);
      ::close(sig_pipe_[1]);
    }
  }

  base_impl(const base_impl&) = delete;
  base_impl& operator=(const base_impl&) = delete;

  // ---- bookkeeping of all events -------------------------------------------------------------

  void link_all(event* ev) noexcept {
    ev->all_next_ = all_;
    if (all_ != nullptr) {
      all_->all_pprev_ = &ev->all_next_;
    }
    ev->all_pprev_ = &all_;
    all_ = ev;
  }

  void unlink_all(event* ev) noexcept {
    *ev->all_pprev_ = ev->all_next_;
    if (ev->all_next_ != nullptr) {
      ev->all_next_->all_pprev_ = ev->all_pprev_;
    }
    ev->all_next_ = nullptr;
    ev->all_pprev_ = nullptr;
  }

  // ---- timers ----------------------------------------------------------------------------------

  void add_timer(event* ev, std::int64_t deadline) {
    ev->spare = timer_seq_++;  // arm order: equal deadlines fire first-armed first
    if (use_heap_) {
      heap_.add(ev, deadline);
    } else {
      wheel_.add(ev, deadline);
    }
    count_timers();
  }

  void cancel_timer(event* ev) noexcept {
    if (!ev->queued()) {
      return;
    }
    if (use_heap_) {
      heap_.remove(ev);
    } else {
      wheel_.remove(ev);
    }
    count_timers();
  }

  // timers_ follows the timer structure's size (after every add, remove and expiry): the
  // round's two "any timers?" tests are then one load each, whichever structure is in use.
  void count_timers() noexcept {
    timers_ = use_heap_ ? heap_.size() : wheel_.size();
  }

  std::optional<std::int64_t> next_deadline() noexcept {
    return use_heap_ ? heap_.next_deadline() : wheel_.next_deadline();
  }

  [[gnu::always_inline]] void expire_timers() {
    // Expired timers become ready in deadline order, and in arm order for equal deadlines (as
    // libuv promises): neither structure pops them that way (the wheel's slot lists are LIFO,
    // the heap has no tie-break), so one expiry's timers are sorted before they are made ready.
    expired_.clear();
    auto collect = [this](timer_node* n) { expired_.push_back(n); };
    if (use_heap_) {
      heap_.expire(now_ns_, collect);
    } else {
      wheel_.expire(now_ns_, collect);
    }
    count_timers();
    if (expired_.size() > 1) {
      std::sort(expired_.begin(), expired_.end(), [](const timer_node* a, const timer_node* b) {
        if (a->deadline != b->deadline) {
          return a->deadline < b->deadline;
        }
        // Serial-number order (RFC 1982): correct across the counter's wrap while the armed
        // timers span fewer than 2^31 arms.
        return static_cast<std::int32_t>(a->spare - b->spare) < 0;
      });
    }
    for (timer_node* n : expired_) {
      activate(static_cast<event*>(n), ev_flag::timeout);
    }
  }

  // The time deadlines are measured from: the round's cached time inside the loop (libevent's
  // choice: one clock read per round), a fresh reading outside it. While the poller waits and
  // then runs its own callbacks and tasks (net-layer connections live there), the cache is
  // invalid: the first use reads the clock, so nothing is measured from before the wait.
  std::int64_t current_ns() noexcept {
    if (!time_valid_) {
      now_ns_ = clock_ns();
      time_valid_ = in_round_;
    }
    return now_ns_;
  }

  // ---- ready queues ----------------------------------------------------------------------------

  struct ready_queue {
    event* head = nullptr;
    event** tail = nullptr;
  };

  void activate(event* ev, std::uint32_t bits) noexcept {
    ev->fired_ |= bits;
    if (ev->ready_pprev_ != nullptr) {
      return;
    }
    ready_queue& q = ready_[ev->priority_];
    ev->ready_next_ = nullptr;
    ev->ready_pprev_ = q.tail;
    *q.tail = ev;
    q.tail = &ev->ready_next_;
    ++ready_count_;
  }

  void unready(event* ev) noexcept {
    if (ev->ready_pprev_ == nullptr) {
      return;
    }
    ready_queue& q = ready_[ev->priority_];
    *ev->ready_pprev_ = ev->ready_next_;
    if (ev->ready_next_ != nullptr) {
      ev->ready_next_->ready_pprev_ = ev->ready_pprev_;
    } else {
      q.tail = ev->ready_pprev_;
    }
    ev->ready_next_ = nullptr;
    ev->ready_pprev_ = nullptr;
    --ready_count_;
  }

  event* pop_ready() noexcept {
    for (ready_queue& q : ready_) {
      if (q.head != nullptr) {
        event* ev = q.head;
        unready(ev);
        return ev;
      }
    }
    return nullptr;
  }

  // ---- fds -----------------------------------------------------------------------------------

  fd_slot* slot_for(int fd) {
    const auto i = static_cast<std::size_t>(fd);
    if (i >= slots_.size()) {
      slots_.resize(i + 1 > 2 * slots_.size() ? i + 1 : 2 * slots_.size());
    }
    std::unique_ptr<fd_slot>& s = slots_[i];
    if (!s) {
      s = std::make_unique<fd_slot>();
      s->att.fd = fd;
      fd_slot* raw = s.get();
      s->att.callback = [this, raw](int, std::uint32_t bits) {
        on_fd(raw, bits);
        return poll_action::proceed;
      };
    }
    return s.get();
  }

  fd_slot* existing_slot(int fd) const noexcept {
    const auto i = static_cast<std::size_t>(fd);
    return i < slots_.size() ? slots_[i].get() : nullptr;
  }

  static std::uint32_t wanted(const fd_slot* s) noexcept {
    std::uint32_t w = 0;
    for (const event* e = s->head; e != nullptr; e = e->watch_next_) {
      w |= e->flags_ & kIoFlags;
    }
    return w;
  }

  std::error_code watch_fd(event* ev) {
    fd_slot* s = slot_for(ev->fd_);
    const std::uint32_t want = wanted(s) | (ev->flags_ & kIoFlags);
    if (!s->att.registered()) {
      if (std::error_code ec = poller_->add(s->att, to_interest(want))) {
        return ec;
      }
    } else if (s->head == nullptr) {
      // Registered but unwatched: a one-shot event was detached for its callback, which may
      // have closed the fd and opened another with the same number. MOD verifies the kernel
      // registration still refers to a live file; if not, register afresh (EBADF surfaces).
      if (poller_->modify(s->att, to_interest(want))) {
        (void)poller_->remove(s->att);
        s->registered = 0;
        if (std::error_code ec = poller_->add(s->att, to_interest(want))) {
          return ec;
        }
      }
    } else if (want != s->registered) {
      if (std::error_code ec = poller_->modify(s->att, to_interest(want))) {
        return ec;
      }
    } else if (::fcntl(ev->fd_, F_GETFD) < 0) {
      return last_system_error();  // joining a live registration: no syscall caught EBADF
    }
    s->registered = want;
    ev->watch_next_ = s->head;
    if (s->head != nullptr) {
      s->head->watch_pprev_ = &ev->watch_next_;
    }
    ev->watch_pprev_ = &s->head;
    s->head = ev;
    return {};
  }

  static void unlink_watch(event* ev) noexcept {
    if (ev->watch_pprev_ == nullptr) {
      return;
    }
    *ev->watch_pprev_ = ev->watch_next_;
    if (ev->watch_next_ != nullptr) {
      ev->watch_next_->watch_pprev_ = ev->watch_pprev_;
    }
    ev->watch_next_ = nullptr;
    ev->watch_pprev_ = nullptr;
  }

  // Brings the poller registration in line with the events still watching the fd.
  void reconcile(fd_slot* s) noexcept {
    if (!s->att.registered()) {
      return;
    }
    const std::uint32_t want = wanted(s);
    if (want == s->registered) {
      return;
    }
    if (want == 0) {
      (void)poller_->remove(s->att);  // EBADF after a close is fine: it is forgotten anyway
    } else if (poller_->modify(s->att, to_interest(want))) {
      (void)poller_->remove(s->att);
      if (poller_->add(s->att, to_interest(want))) {
        s->registered = 0;
        return;
      }
    }
    s->registered = want;
  }

  void on_fd(fd_slot* s, std::uint32_t bits) noexcept {
    std::uint32_t fired = 0;
    if ((bits &
         (io_event::readable | io_event::read_hangup | io_event::hangup | io_event::error)) != 0) {
      fired |= ev_flag::read;
    }
    if ((bits & (io_event::writable | io_event::hangup | io_event::error)) != 0) {
      fired |= ev_flag::write;
    }
    for (event* e = s->head; e != nullptr; e = e->watch_next_) {
      const std::uint32_t f = e->flags_ & fired;
      if (f != 0) {
        activate(e, f);
      }
    }
  }

  // ---- signals -------------------------------------------------------------------------------

  std::error_code watch_signal(event* ev) {
    const int signo = ev->fd_;
    if (signo < 1 || signo >= kMaxSignal || signo == SIGKILL || signo == SIGSTOP) {
      return errc::invalid_argument;
    }
    if (!sig_started_[signo]) {
      if (std::error_code ec = start_signal(signo)) {
        return ec;
      }
      sig_started_[signo] = true;
    }
    ev->watch_next_ = sig_heads_[signo];
    if (sig_heads_[signo] != nullptr) {
      sig_heads_[signo]->watch_pprev_ = &ev->watch_next_;
    }
    ev->watch_pprev_ = &sig_heads_[signo];
    sig_heads_[signo] = ev;
    return {};
  }

  void unwatch_signal(event* ev) noexcept {
    unlink_watch(ev);
    const int signo = ev->fd_;
    if (signo > 0 && signo < kMaxSignal && sig_heads_[signo] == nullptr && sig_started_[signo]) {
      stop_signal(signo);
    }
  }

  // The first event for signo in this base: have the signal delivered here.
  std::error_code start_signal(int signo) {
#ifdef EVNET_HAVE_SIGNALFD
    if (use_signalfd_) {
      // signalfd only sees signals that are blocked; otherwise the default action (or a
      // handler) takes them first. Block it in this thread (documented in event.h).
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, signo);
      if (int rc = pthread_sigmask(SIG_BLOCK, &one, nullptr); rc != 0) {
        return {rc, std::system_category()};
      }
      // An ignored signal is discarded when generated, even while blocked, so signalfd would
      // never see it (a background job inherits SIGINT ignored, for instance). Asking for the
      // event means wanting it: restore the default action, which blocking keeps harmless.
      struct sigaction old {};
      if (::sigaction(signo, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) {
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        ::sigaction(signo, &dfl, nullptr);
      }
      sigaddset(&sigmask_, signo);
      if (std::error_code ec = update_signalfd()) {
        sigdelset(&sigmask_, signo);
        return ec;
      }
      std::lock_guard<std::mutex> lock(g_sig_mu);
      g_sigfd_bases[signo].push_back(this);
      return {};
    }
#else
    if (options_.signals == signal_delivery::signalfd) {
      return errc::unsupported;
    }
#endif
    if (std::error_code ec = open_signal_pipe()) {
      return ec;
    }
    return self_pipe_watch(signo, sig_pipe_[1]);
  }

  // The last event for signo in this base is gone. A delivery caught for it and not yet read
  // goes with it, on both paths, as detach() drops a pending dispatch: the channel is drained
  // first (deliveries of other signals read meanwhile are queued for their events). Left to
  // the next round, the self-pipe's byte was dropped or not depending on whether an event was
  // attached again before it, and the signalfd kept the signal pending for any event attached
  // later, however much later.
  void stop_signal(int signo) noexcept {
    sig_started_[signo] = false;
#ifdef EVNET_HAVE_SIGNALFD
    if (use_signalfd_) {
      if (sigfd_ >= 0) {
        on_signal();
      }
      // Deliveries another base passed on and this one has not taken yet go too.
      sigfd_unregister(signo);
      sig_caught_[signo] = false;
      // The signal stays blocked: unblocking could deliver a pending one with its default
      // action (terminating the process for SIGINT/SIGTERM).
      sigdelset(&sigmask_, signo);
      (void)update_signalfd();
      return;
    }
#endif
    // Out of the handler's table first, then drained: no byte of signo can reach the pipe
    // after the drain. The other order left a window (the drain done, the slot still set) in
    // which a delivery wrote a byte that no drain removed, so the next round reported it to
    // whatever event was attached by then, however much later. A handler that loaded the slot
    // before it was cleared may still be writing: self_pipe_quiesce() waits for it. The
    // previous disposition is back once no base watches the signal; the pipe stays open for
    // the base's life (it carries the other signals' bytes).
    self_pipe_unwatch(signo, sig_pipe_[1]);
    self_pipe_quiesce();
    if (sig_pipe_[0] >= 0) {
      on_signal_pipe();
    }
    sig_caught_[signo] = false;
    if (g_self_pipe_drained_hook != nullptr) [[unlikely]] {
      g_self_pipe_drained_hook(signo);
    }
  }

  // A delivery of signo read from the signalfd or the pipe (or passed on by another base). With
  // no event linked while the signal is still delivered here, a one-shot event's callback is
  // running (see process()): the delivery is kept for what that callback attaches. (Read then
  // when the callback detaches the last event of another signal, whose stop drains the
  // channel; dropped, the signal was lost although the callback attached its event again.)
  void deliver_signal(int signo) noexcept {
    if (sig_heads_[signo] == nullptr) {
      sig_caught_[signo] = sig_started_[signo];
      return;
    }
    for (event* e = sig_heads_[signo]; e != nullptr; e = e->watch_next_) {
      activate(e, ev_flag::signal);
    }
  }

  std::error_code open_signal_pipe() {
    if (sig_pipe_[0] >= 0) {
      return {};
    }
    int fds[2];
    if (::pipe(fds) != 0) {
      return last_system_error();
    }
    for (const int fd : fds) {
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    sig_att_.fd = fds[0];
    sig_att_.callback = [this](int, std::uint32_t) {
      on_signal_pipe();
      return poll_action::proceed;
    };
    if (std::error_code ec = poller_->add(sig_att_, interest::read)) {
      ::close(fds[0]);
      ::close(fds[1]);
      return ec;
    }
    sig_pipe_[0] = fds[0];
    sig_pipe_[1] = fds[1];
    return {};
  }

  void on_signal_pipe() noexcept {
    unsigned char got[64];
    for (;;) {
      const ssize_t n = ::read(sig_pipe_[0], got, sizeof got);
      if (n <= 0) {
        break;  // EAGAIN: drained
      }
      for (ssize_t i = 0; i < n; ++i) {
        const int signo = got[i];
        if (signo >= kMaxSignal) {
          continue;
        }
        self_pipe_read(signo, sig_pipe_[1]);
        deliver_signal(signo);
      }
      if (static_cast<std::size_t>(n) < sizeof got) {
        break;
      }
    }
  }

#ifdef EVNET_HAVE_SIGNALFD
  std::error_code update_signalfd() {
    if (sigfd_ >= 0) {
      if (::signalfd(sigfd_, &sigmask_, 0) < 0) {
        return last_system_error();
      }
      return {};
    }
    sigfd_ = ::signalfd(-1, &sigmask_, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigfd_ < 0) {
      return last_system_error();
    }
    sig_att_.fd = sigfd_;
    sig_att_.callback = [this](int, std::uint32_t) {
      on_signal();
      return poll_action::proceed;
    };
    if (std::error_code ec = poller_->add(sig_att_, interest::read)) {
      ::close(sigfd_);
      sigfd_ = -1;
      return ec;
    }
    return {};
  }

  void on_signal() noexcept {
    signalfd_siginfo info[16];
    std::uint64_t read_mask = 0;  // bit signo - 1
    for (;;) {
      const ssize_t n = ::read(sigfd_, info, sizeof info);
      if (n <= 0) {
        break;  // EAGAIN: drained
      }
      const auto count = static_cast<std::size_t>(n) / sizeof(signalfd_siginfo);
      for (std::size_t i = 0; i < count; ++i) {
        const auto signo = static_cast<int>(info[i].ssi_signo);
        if (signo <= 0 || signo >= kMaxSignal) {
          continue;
        }
        deliver_signal(signo);
        read_mask |= std::uint64_t{1} << (signo - 1);
      }
      if (count < 16) {
        break;
      }
    }
    if (read_mask != 0) {
      forward_signals(read_mask);
    }
  }

  // The signals in read_mask were read here: pass them on to every other base watching them
  // through its signalfd (the kernel gave each delivery to one reader only). Each base gets
  // one task for all it has not taken yet (sig_forwarded_), run by its own loop.
  void forward_signals(std::uint64_t read_mask) noexcept {
    std::lock_guard<std::mutex> lock(g_sig_mu);
    for (int signo = 1; signo < kMaxSignal; ++signo) {
      const std::uint64_t bit = std::uint64_t{1} << (signo - 1);
      if ((read_mask & bit) == 0) {
        continue;
      }
      for (base_impl* other : g_sigfd_bases[signo]) {
        if (other == this || other->sig_forwarded_.fetch_or(bit, std::memory_order_acq_rel) != 0) {
          continue;  // a task of that base's, not yet run, takes this signal too
        }
        bool queued = false;
        try {
          queued =
              !other->poller_->trigger(task_priority::high, [other] { other->take_forwarded(); });
        } catch (...) {  // std::bad_alloc: the delivery cannot be passed on
        }
        if (!queued) {
          other->sig_forwarded_.store(0, std::memory_order_release);
        }
      }
    }
  }

  // The task forward_signals() queued: on this base's loop thread, inside a round.
  void take_forwarded() noexcept {
    std::uint64_t bits = sig_forwarded_.exchange(0, std::memory_order_acq_rel);
    while (bits != 0) {
      const int signo = std::countr_zero(bits) + 1;
      bits &= bits - 1;
      if (sig_started_[signo]) {
        deliver_signal(signo);
      }
    }
  }

  // Leaves the registry for signo; deliveries passed on and not yet taken are dropped with it.
  void sigfd_unregister(int signo) noexcept {
    std::lock_guard<std::mutex> lock(g_sig_mu);
    std::vector<base_impl*>& v = g_sigfd_bases[signo];
    v.erase(std::remove(v.begin(), v.end(), this), v.end());
    sig_forwarded_.fetch_and(~(std::uint64_t{1} << (signo - 1)), std::memory_order_acq_rel);
  }
#endif

  // ---- attach / detach / dispatch --------------------------------------------------------------

  std::error_code attach(event* ev, std::int64_t timeout_ns) {
    if (ev->attached_) {
      return errc::already_registered;
    }
    // While its callback runs, the callback lives in the dispatcher's local (destroyed_ set).
    if (timeout_ns < 0 || (!ev->cb_ && (ev->destroyed_ == nullptr || ev->cb_replaced_))) {
      return errc::invalid_argument;
    }
    const bool sig = (ev->flags_ & ev_flag::signal) != 0;
    const bool io = !sig && (ev->flags_ & kIoFlags) != 0;
    if (sig) {
      if (std::error_code ec = watch_signal(ev)) {
        return ec;
      }
    } else if (io) {
      if (ev->fd_ < 0) {
        return errc::invalid_argument;
      }
      if (std::error_code ec = watch_fd(ev)) {
        return ec;
      }
    } else if (timeout_ns == 0 && (ev->flags_ & ev_flag::persist) != 0) {
      return errc::invalid_argument;  // a persistent zero-period timer would spin
    }
    ev->timeout_ns_ = timeout_ns;
    ev->attached_ = true;
    ++attached_;
    if (timeout_ns > 0) {
      add_timer(ev, deadline_after(current_ns(), timeout_ns));
    } else if (!sig && !io) {
      // A zero-delay timer runs in the next round. Outside a round it is simply ready; inside
      // one it is queued as already due (deadline 0: the wheel's due list, the heap's top), so
      // the next round's expiry makes it ready, after that round's poll. Made ready here, a
      // timer re-arming itself at zero would run max_callbacks_per_round times with no I/O.
      if (in_round_) {
        add_timer(ev, 0);
      } else {
        activate(ev, ev_flag::timeout);
      }
    }
    return {};
  }

  // Detaches the event; for fd events the poller registration is updated now unless `defer`
  // (the dispatcher defers it across the event's own callback, which usually re-attaches), and
  // so is a signal's delivery.
  void detach(event* ev, bool defer) noexcept {
    if (ev->attached_) {
      ev->attached_ = false;
      --attached_;
      cancel_timer(ev);
      if ((ev->flags_ & ev_flag::signal) != 0) {
        if (defer) {
          unlink_watch(ev);
        } else {
          unwatch_signal(ev);
        }
      } else if (ev->watch_pprev_ != nullptr) {
        unlink_watch(ev);
        if (!defer) {
          reconcile(existing_slot(ev->fd_));
        }
      }
    }
  }

  std::error_code rearm(event* ev, std::int64_t timeout_ns) {
    if (!ev->attached_ || timeout_ns < 0) {
      detach(ev, false);
      return attach(ev, timeout_ns);
    }
    // Attached: move only the timer part; the fd registration stays as it is.
    const bool timer_only = (ev->flags_ & (kIoFlags | ev_flag::signal)) == 0;
    if (timer_only && timeout_ns == 0 && (ev->flags_ & ev_flag::persist) != 0) {
      return errc::invalid_argument;
    }
    cancel_timer(ev);
    // Only a timeout that fired is dropped: the deadline moves. Readiness or a signal already
    // queued stays queued, as detach() + attach() would have kept it in the kernel: a signal
    // delivery has been read from the signalfd or the pipe and exists nowhere else.
    ev->fired_ &= ~ev_flag::timeout;
    if (ev->fired_ == 0) {
      unready(ev);
    }
    ev->timeout_ns_ = timeout_ns;
    if (timeout_ns > 0) {
      add_timer(ev, deadline_after(current_ns(), timeout_ns));
    } else if (timer_only) {
      // Zero = the next round, as attach(0) (rearm is detach + attach): inside a round queued
      // as already due, not made ready for this round's dispatch.
      if (in_round_) {
        add_timer(ev, 0);
      } else {
        activate(ev, ev_flag::timeout);
      }
    }
    return {};
  }

  void destroy(event* ev) noexcept {
    detach(ev, false);
    unready(ev);
    unlink_all(ev);
    if (ev->destroyed_ != nullptr) {
      *ev->destroyed_ = true;
    }
  }

  std::error_code set_priority(event* ev, int p) noexcept {
    if (p < 0 || p >= options_.priorities) {
      return errc::invalid_argument;
    }
    if (ev->ready_pprev_ != nullptr) {
      unready(ev);
      ev->priority_ = static_cast<std::uint8_t>(p);
      activate(ev, 0);
    } else {
      ev->priority_ = static_cast<std::uint8_t>(p);
    }
    return {};
  }

  // Runs one ready event: retire or re-arm it, then call its callback in a way that survives
  // the callback destroying the event.
  void process(event* ev) {
    const std::uint32_t fired = ev->fired_;
    ev->fired_ = 0;
    fd_slot* deferred = nullptr;
    int deferred_signal = 0;
    if ((ev->flags_ & ev_flag::persist) == 0) {
      if (ev->attached_ && ev->watch_pprev_ != nullptr && (ev->flags_ & ev_flag::signal) == 0) {
        deferred = existing_slot(ev->fd_);
      }
      // A one-shot signal event keeps its signal delivered here across its callback, which
      // usually attaches it again: stopped in between, the self-pipe path gave the signal back
      // to its previous disposition (by default, terminating the process) for the length of
      // the callback, and the signalfd path paid four system calls per firing.
      if (ev->attached_ && (ev->flags_ & ev_flag::signal) != 0) {
        deferred_signal = ev->fd_;
      }
      detach(ev, true);
      if (deferred != nullptr && deferred->head == nullptr) {
        // Nothing else watches the fd: leave the kernel now, while the fd is surely open. The
        // callback may close it (allowed: the event is detached), and a removal after that
        // fails with EBADF, leaving the registration in epoll for as long as the file stays
        // open elsewhere (a dup, a child): it would keep the loop busy and report the old
        // file's readiness to whatever later gets the fd number. A one-shot event re-attached
        // by its callback so costs one add more.
        reconcile(deferred);
        deferred = nullptr;
      }
    } else if (ev->attached_ && ev->timeout_ns_ > 0) {
      const std::int64_t period = ev->timeout_ns_;
      // current_ns(), not now_ns_: a round whose timer structure was empty after the poll did
      // not read the clock, and an event whose timeout fired in an earlier round (left queued
      // by exit() or the callback budget) may run here long after that.
      const std::int64_t now = current_ns();
      std::int64_t next;
      if ((fired & ev_flag::timeout) != 0 && !ev->queued()) {
        // From the previous deadline, so a ticker does not drift; skip whole missed periods.
        next = deadline_after(static_cast<timer_node*>(ev)->deadline, period);
        if (next <= now) {
          next += ((now - next) / period + 1) * period;
        }
      } else {
        next = deadline_after(now, period);  // readiness (or activate()) restarts it
      }
      cancel_timer(ev);
      add_timer(ev, next);
    }

    bool destroyed = false;
    ev->destroyed_ = &destroyed;
    // The callback runs from a local copy so that destroying the event (and with it cb_)
    // inside the callback does not destroy the running function object.
    event_callback cb = std::move(ev->cb_);
    ev->cb_replaced_ = false;
    if (cb) [[likely]] {
      cb(ev->fd_, fired);
    }
    if (!destroyed) {
      ev->destroyed_ = nullptr;
      // Restored unless the callback replaced itself, with an empty callback too: testing cb_
      // for emptiness cannot tell set_callback({}) from "not replaced".
      if (!ev->cb_replaced_) {
        ev->cb_ = std::move(cb);
      }
      ev->cb_replaced_ = false;
    }
    if (deferred != nullptr) {
      reconcile(deferred);
    }
    if (deferred_signal != 0 && sig_started_[deferred_signal]) {
      if (sig_heads_[deferred_signal] == nullptr) {
        stop_signal(deferred_signal);
      } else if (sig_caught_[deferred_signal]) {
        sig_caught_[deferred_signal] = false;
        deliver_signal(deferred_signal);  // read while the callback ran (deliver_signal())
      }
    }
  }

  // True when another thread is running a round right now: a loop-thread-only call from here
  // would race with it. (Between rounds any thread may use the base, e.g. to set up or tear
  // down before/after the loop thread runs; ordering those hand-overs is the caller's job.)
  bool foreign_thread() const noexcept {
    const std::thread::id r = running_.load(std::memory_order_relaxed);
    return r != std::thread::id() && r != std::this_thread::get_id();
  }

  // Why this thread may not start a round now, if it may not.
  std::error_code cannot_run() const noexcept {
    const std::thread::id r = running_.load(std::memory_order_acquire);
    if (r == std::thread::id()) {
      return {};
    }
    return r == std::this_thread::get_id() ? make_error_code(errc::invalid_argument)
                                           : make_error_code(errc::wrong_thread);
  }

  // Takes the loop thread's ownership of the base; the reason if it cannot.
  std::error_code acquire() noexcept {
    std::thread::id none;
    // Sequentially consistent, as exit()'s store and load: see exit().
    if (!running_.compare_exchange_strong(none, std::this_thread::get_id(),
                                          std::memory_order_seq_cst)) {
      return none == std::this_thread::get_id() ? make_error_code(errc::invalid_argument)
                                                : make_error_code(errc::wrong_thread);
    }
    return std::error_code(0, g_system_category);
  }
  void release() noexcept {
    running_.store(std::thread::id(), std::memory_order_release);
  }

  std::error_code loop_once(bool nonblocking) {
    // Through the poller's hold, as dispatch(): poll_once() reports a wait a signal handler
    // interrupted as an empty round, which the round could not tell from one that ran tasks,
    // and ended instead of waiting again (round()).
    if (std::error_code ec = hold()) {
      return ec;
    }
    struct unhold_guard {
      base_impl& b;
      ~unhold_guard() { b.unhold(); }
    } guard{*this};
    return round(nonblocking);
  }

  // event_base::hold(): the base's and its poller's ownership for a run of rounds.
  std::error_code hold() {
    if (std::error_code ec = acquire()) {
      return ec;
    }
    result<poller::holder> h = poller_->hold();
    if (!h) {
      release();
      return h.error();
    }
    held_.emplace(std::move(*h));
    held_backend_ = &detail::poller_access::backend(*held_);
    // Tasks run by a round end it (see round()): the poller clears the timer bound then.
    held_backend_->wait_bound_ = &timer_due_;
    return std::error_code(0, g_system_category);
  }
  void unhold() noexcept {
    held_backend_->wait_bound_ = nullptr;
    held_backend_ = nullptr;
    held_.reset();
    release();
  }

  // One round, by the thread that holds the base and its poller (hold(): loop_once(),
  // dispatch() and run_until() all take it). Inlined in its callers (run_until's loop above
  // all): a call level fewer per round. InRun: a round of
  // run_until(), which looks for an exit() request and a closed poller itself before its
  // first round and after round_end's work, the only places where either can come unseen
  // (see there); such a round skips those two tests at its start. D: how the poller's round
  // reaches its backend (run_until() decides once).
  template <bool InRun = false, detail::round_dispatch D = detail::round_dispatch::ask>
  [[gnu::always_inline]] std::error_code round(bool nonblocking) {
    if (!InRun && take_exit_request()) [[unlikely]] {
      return errc::stopped;
    }

    in_round_ = true;
    // time_valid_ is false here (it is true only inside a round), and set false again before
    // each repeat of the loop below: the cache is invalid until the poll returns.
    for (;;) {
      int wait_ms = -1;
      // The deadline a blocking wait ends at, if a timer's. A member, not a local: a value kept
      // across the inlined poll costs the dispatch loop a register.
      timer_due_ = -1;
      // One test for the round without ready events or timers (the I/O-only round).
      if ((ready_count_ | timers_) != 0 || nonblocking) {
        wait_ms = wait_for_ready_or_timers(nonblocking);
      }
      // Callbacks run by the poll, or detail::kRoundStopped (see below).
      // The poller's round inline (what holder::poll_once() runs): one call level fewer.
      detail::poller_backend& pb = *held_backend_;
      if (!InRun && !pb.open_) [[unlikely]] {
        return end_round_early(errc::closed);
      }
      std::ptrdiff_t ran = detail::poller_round<D>(pb, wait_ms);
      if (ran < 0) [[unlikely]] {  // one test on the common path for the rare outcomes
        if (ran == detail::kInterrupted) {
          // A signal handler that is not the base's ended a blocking wait, and nothing else
          // happened (no task, no stop: see poller_backend::interrupted(), which reports it for
          // blocking waits only). The round waits again, for the time left to its timer, as
          // libuv and libevent do (an exit() the handler requested ends it).
          if (!exit_requested_.load(std::memory_order_relaxed)) {
            time_valid_ = false;
            continue;
          }
          ran = 0;
        } else {
          // A close() from a callback or task of the poll: deferred to here. Such a round
          // always ends stopped (poller_round()), so this test sits on the rare branch.
          if (held_backend_->close_deferred_) {
            detail::poller_access::close_deferred(*held_);
            return end_round_early(errc::closed);
          }
          if (ran != detail::kRoundStopped) {
            return end_round_early(std::error_code(static_cast<int>(-ran), std::system_category()));
          }
          if (exit_stop_was_stale()) {
            time_valid_ = false;
            continue;
          }
        }
      }

      // The clock is read here only if a timer may be due (the poll's callbacks may have added
      // some). Without timers the round's time is read on first use, if anything asks for it
      // (current_ns()): a base that only watches fds reads no clock at all.
      if (timers_ != 0) {
        now_ns_ = clock_ns();
        time_valid_ = true;
        expire_timers();
        // The wheel's next_deadline() is only a lower bound for a timer more than 64 ticks
        // away (the start of its slot on a higher level, up to 63 ticks early): the wait ended
        // there, the expiry re-filed the slot and nothing was due. A blocking round that waited
        // for a timer and was woken by nothing else waits again (now for an exact or closer
        // bound) rather than return having run nothing. (The heap's deadline is exact: it
        // never loops.) Tested here, with the timers, to keep it off the I/O-only round.
        if (timer_due_ >= 0 && ran == 0 && ready_count_ == 0 && now_ns_ >= timer_due_ &&
            !exit_requested_.load(std::memory_order_relaxed)) [[unlikely]] {
          time_valid_ = false;
          continue;
        }
      }
      break;
    }
    if (ready_count_ != 0) {
      std::size_t budget = options_.max_callbacks_per_round;
      while (budget-- != 0 && !exit_requested_.load(std::memory_order_relaxed)) {
        event* ev = pop_ready();
        if (ev == nullptr) {
          break;
        }
        process(ev);
      }
      if constexpr (InRun) {
        // A callback here runs outside the poller's round, so a close() it makes is not
        // deferred: the next round, which does not test open_, must not start.
        if (!held_backend_->open_) [[unlikely]] {
          return end_round_poller_closed();
        }
      }
    }
    in_round_ = false;
    time_valid_ = false;
    if (take_exit_request()) [[unlikely]] {
      return errc::stopped;
    }
    // Not `return {}`: std::error_code's default constructor calls std::system_category(),
    // an out-of-line function, once per round.
    return std::error_code(0, g_system_category);
  }

  // The round's wait when events are ready (none), or for the next timer (sets timer_due_).
  [[gnu::always_inline]] int wait_for_ready_or_timers(bool nonblocking) noexcept {
    if (nonblocking || ready_count_ != 0) {
      return 0;
    }
    if (auto next = next_deadline()) {
      // The clock is read here only: a round that does not block does not need it.
      now_ns_ = clock_ns();
      const std::int64_t ns = *next - now_ns_;
      // Tasks run by the poll clear it (poller_backend::wait_bound_): the round then ends
      // with them rather than wait again for the timer (event.h: a task ends the wait), be
      // they queued before the wait (the wheel's bound already passed when its tick lagged
      // while it idled: the poll does not wait) or during it, their wake-up landing as the
      // wait for the bound ended.
      timer_due_ = *next;
      if (ns <= 0) [[unlikely]] {
        return 0;
      }
      // Round up: waking a little late is fine, waking early only costs another round.
      const std::int64_t ms = ns / 1'000'000 + (ns % 1'000'000 != 0);
      return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
    }
    return -1;
  }

  // An exit() request, taken (the flag cleared): the round that sees it ends. A plain load
  // first: the locked exchange and the rest are paid only when an exit was requested.
  // (Sequentially consistent, pairing with exit(); a plain mov on x86 all the same.)
  [[gnu::always_inline]] bool take_exit_request() noexcept {
    return exit_requested_.load(std::memory_order_seq_cst) && take_exit_request_slow();
  }
  [[gnu::noinline]] bool take_exit_request_slow() noexcept {
    if (!exit_requested_.exchange(false, std::memory_order_acq_rel)) {
      return false;
    }
    return true;
  }

  // The round's poll ended with errc::stopped: on someone else's poller stop (kStopBit), which
  // ends the round (false), or on exit()'s alone (kExitStopBit; see exit()). That one ends the
  // round if its request is still pending (the round returns on the flag); if a round already
  // returned on the request (the stop was sent while that round ran callbacks, after its
  // poll), the stop is stale and the wait starts again, as if it had never been sent (true).
  // The bits are taken before the request is looked at, as exit() sets them in the other
  // order. A poller stop that came with exit()'s counts: one bit for both took it for exit()'s.
  [[gnu::noinline]] bool exit_stop_was_stale() noexcept {
    return held_backend_->stops_taken_ == detail::poller_backend::kExitStopBit &&
           !exit_requested_.load(std::memory_order_seq_cst);
  }

  // A run_until() round whose event callback closed the poller: the round ends as any other
  // (stopped if exit() was called), and run_until() with errc::closed, what the next round
  // would have returned.
  [[gnu::noinline]] std::error_code end_round_poller_closed() noexcept {
    in_round_ = false;
    time_valid_ = false;
    return take_exit_request() ? std::error_code(errc::stopped) : std::error_code(errc::closed);
  }

  // A round that ends before its timers and ready events (the poller failed or was closed).
  [[gnu::noinline]] std::error_code end_round_early(std::error_code ec) noexcept {
    in_round_ = false;
    time_valid_ = false;
    return ec;
  }

  // event_base::holder::run_until(): rounds as round<true>(false) (InRun), the loop here so
  // that a loop built on the base enters it once, not once per round.
  std::error_code run_until(const std::atomic<bool>& stop, const event_base::round_end& after) {
    // Kept in members, not in registers across the inlined round, whose dispatch loop needs
    // every callee-saved register it can get.
    run_stop_ = &stop;
    run_after_ = after;
    static constexpr bool kNoRoundEnd = false;
    if (run_after_.pending == nullptr) {
      run_after_.pending = &kNoRoundEnd;  // one test per round, not two
    }
    if (run_stop_->load(std::memory_order_acquire)) {
      return std::error_code(0, g_system_category);
    }
    if (std::error_code ec = run_checks()) {
      return ec;
    }
    // The backend is asked once whether its dispatch can be inlined, not once per round.
#if defined(__linux__)
    if (held_backend_->inline_epoll_) {
      return run_rounds<detail::round_dispatch::epoll_inline>();
    }
#endif
    return run_rounds<detail::round_dispatch::virtual_call>();
  }

  // What a round of run_until() does not test at its start (see round()): an exit() request,
  // and a poller closed between rounds.
  std::error_code run_checks() noexcept {
    if (take_exit_request()) {
      return errc::stopped;
    }
    if (!held_backend_->open_) {
      return errc::closed;
    }
    return std::error_code(0, g_system_category);
  }

  template <detail::round_dispatch D>
  std::error_code run_rounds() {
    for (;;) {
      // No exit() or open_ test at the round's start: each round ends with an exit() test
      // (and an open_ test if it ran event callbacks, the only ones that can close the poller
      // at once), and between that and the next round only round_end's work runs, followed
      // by both tests. An exit() from another thread in between also stops the poller, so
      // the next round's wait returns at once and the test at that round's end sees the
      // request (its ready events are not run: the dispatch loop looks at the flag first).
      std::error_code ec = round<true, D>(false);
      if (*run_after_.pending) [[unlikely]] {
        run_after_.fn(run_after_.arg);
        if (!ec) {
          ec = run_checks();
        }
      }
      if (ec) [[unlikely]] {
        return ec;
      }
      if (run_stop_->load(std::memory_order_acquire)) {
        return std::error_code(0, g_system_category);
      }
    }
  }

  std::error_code dispatch() {
    // Held for the whole run, not round by round: between two rounds another thread's
    // attach/detach/rearm would be let through and race with the next round.
    if (std::error_code ec = hold()) {
      return ec;
    }
    struct unhold_guard {
      base_impl& b;
      ~unhold_guard() { b.unhold(); }
    } guard{*this};
    for (;;) {
      if (attached_ == 0 && ready_count_ == 0 && poller_->pending_tasks() == 0) {
        return {};
      }
      std::error_code ec = round(false);
      if (ec == errc::stopped) {
        return {};
      }
      if (ec) {
        return ec;
      }
    }
  }

  void exit() noexcept {
    exit_requested_.store(true, std::memory_order_seq_cst);
    // From a callback the flag suffices; so it does when no loop runs: the next round sees it
    // before it polls. Only a loop running on another thread may be blocked in the kernel and
    // need the poller's stop. A stop sent with no loop running was never consumed (the round
    // returns on the flag before polling) and made the round after it skip its wait.
    // Sequentially consistent with acquire()'s exchange and the round's load: either this
    // load sees the loop's thread, or that loop's first look at the flag sees it set.
    const std::thread::id r = running_.load(std::memory_order_seq_cst);
    if (r == std::thread::id() || r == std::this_thread::get_id()) {
      return;
    }
    // A stop of exit()'s own (kExitStopBit), so that a round receiving it can tell it from a
    // poller stop (exit_stop_was_stale()); at most one is pending, and one on its way wakes
    // the loop for this request too. A request a round has already taken (it returned, or
    // returns without waiting) needs none.
    if (!exit_requested_.load(std::memory_order_seq_cst)) {
      return;
    }
    detail::poller_backend& pb = detail::poller_access::backend(*poller_);
    if (pb.request_exit_stop()) {
      pb.wake();
    }
  }

  event_base_options options_;
  std::unique_ptr<evnet::poller> poller_;
  std::optional<poller::holder> held_;              // while an event_base::holder exists
  detail::poller_backend* held_backend_ = nullptr;  // held_'s poller's backend, while held
  std::int64_t now_ns_;
  bool use_heap_;
  bool in_round_ = false;
  bool time_valid_ = false;      // now_ns_ may be used without reading the clock
  std::int64_t timer_due_ = -1;  // round(): the timer deadline its blocking wait ends at, or -1
  std::size_t timers_ = 0;       // timers armed: heap_'s or wheel_'s size (count_timers())
  const std::atomic<bool>* run_stop_ = nullptr;  // run_until()'s arguments, while it runs
  event_base::round_end run_after_;
  timer_wheel wheel_;
  timer_heap heap_;
  std::uint32_t timer_seq_ = 0;       // arm counter (timer_node::spare), see add_timer
  std::vector<timer_node*> expired_;  // one expiry's timers, sorted (kept: no allocation)
  std::vector<ready_queue> ready_;
  std::size_t ready_count_ = 0;
  std::size_t attached_ = 0;
  std::vector<std::unique_ptr<fd_slot>> slots_;
  event* all_ = nullptr;
  std::atomic<bool> exit_requested_{false};
  std::atomic<std::thread::id> running_{};  // the thread inside loop_once(), if any
  // Signals: the events watching each signal number, and how the signals arrive (signalfd on
  // Linux unless signal_delivery::self_pipe was asked for; a self-pipe elsewhere).
  event* sig_heads_[kMaxSignal] = {};
  // Delivered to this base (start_signal() done): while an event watches the signal, and
  // across a one-shot signal event's callback (see process()).
  bool sig_started_[kMaxSignal] = {};
  // A delivery read while signo was delivered here but no event was linked (a one-shot
  // event's callback ran): reported to the events linked when that callback returns.
  bool sig_caught_[kMaxSignal] = {};
  // signalfd: signals other bases read and passed on, not yet taken (bit signo - 1).
  std::atomic<std::uint64_t> sig_forwarded_{0};
  poll_attachment sig_att_;     // the signalfd or the self-pipe's read end
  int sig_pipe_[2] = {-1, -1};  // self-pipe: read end, write end
#ifdef EVNET_HAVE_SIGNALFD
  bool use_signalfd_ = true;
  int sigfd_ = -1;
  sigset_t sigmask_;
#endif
};

}  // namespace detail

// ---- event_base --------------------------------------------------------------------------------

result<std::unique_ptr<event_base>> event_base::create(const event_base_options& options) {
  if (options.priorities < 1 || options.priorities > 256 || options.wheel_tick.count() <= 0 ||
      options.max_callbacks_per_round == 0) {
    return errc::invalid_argument;
  }
  result<std::unique_ptr<evnet::poller>> p = evnet::poller::open(options.poller);
  if (!p) {
    return p.error();
  }
  auto impl = std::make_unique<detail::base_impl>(options, std::move(*p));
  return std::unique_ptr<event_base>(new event_base(std::move(impl)));
}

event_base::event_base(std::unique_ptr<detail::base_impl> impl) : impl_(std::move(impl)) {}
event_base::~event_base() = default;

evnet::poller& event_base::poller() noexcept {
  return *impl_->poller_;
}

std::chrono::steady_clock::time_point event_base::now() const noexcept {
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(impl_->current_ns()));
}

void event_base::update_time() noexcept {
  impl_->now_ns_ = detail::clock_ns();
  impl_->time_valid_ = impl_->in_round_;
}
std::error_code event_base::dispatch() {
  return impl_->dispatch();
}
std::error_code event_base::loop_once(bool nonblocking) {
  return impl_->loop_once(nonblocking);
}
result<event_base::holder> event_base::hold() {
  if (std::error_code ec = impl_->hold()) {
    return ec;
  }
  return holder(impl_.get());
}
event_base::holder::~holder() {
  if (b_ != nullptr) {
    b_->unhold();
  }
}
std::error_code event_base::holder::loop_once(bool nonblocking) {
  return b_->round(nonblocking);
}
std::error_code event_base::holder::run_until(const std::atomic<bool>& stop, round_end after) {
  return b_->run_until(stop, after);
}
void event_base::exit() noexcept {
  impl_->exit();
}
std::error_code event_base::run_in_loop(task fn) {
  return impl_->poller_->trigger(task_priority::high, std::move(fn));
}
std::error_code event_base::trigger(task_priority priority, task fn) {
  return impl_->poller_->trigger(priority, std::move(fn));
}
int event_base::priorities() const noexcept {
  return impl_->options_.priorities;
}
std::size_t event_base::attached_events() const noexcept {
  return impl_->attached_;
}
timer_structure event_base::timers() const noexcept {
  return impl_->options_.timers;
}

// ---- event -------------------------------------------------------------------------------------

event::event(event_base& base, int fd, std::uint32_t flags, event_callback cb)
    : base_(base.impl_.get()), fd_(fd), flags_(flags), cb_(std::move(cb)) {
  priority_ = static_cast<std::uint8_t>(base_->options_.priorities / 2);
  base_->link_all(this);
}

event::~event() {
  if (base_ == nullptr) {
    return;
  }
  assert(!base_->foreign_thread() && "an event was destroyed on a thread other than its loop's");
  base_->destroy(this);
}

std::error_code event::attach(std::chrono::nanoseconds timeout) {
  if (base_ == nullptr) {
    return errc::closed;
  }
  if (base_->foreign_thread()) {
    return errc::wrong_thread;
  }
  return base_->attach(this, timeout.count());
}

std::error_code event::detach() {
  if (base_ == nullptr) {
    return errc::closed;
  }
  if (base_->foreign_thread()) {
    return errc::wrong_thread;
  }
  base_->detach(this, false);
  base_->unready(this);
  fired_ = 0;
  return {};
}

std::error_code event::rearm(std::chrono::nanoseconds timeout) {
  if (base_ == nullptr) {
    return errc::closed;
  }
  if (base_->foreign_thread()) {
    return errc::wrong_thread;
  }
  return base_->rearm(this, timeout.count());
}

std::error_code event::set_priority(int priority) {
  if (base_ == nullptr) {
    return errc::closed;
  }
  if (base_->foreign_thread()) {
    return errc::wrong_thread;
  }
  return base_->set_priority(this, priority);
}

std::error_code event::activate(std::uint32_t fired_flags) {
  if (base_ == nullptr) {
    return errc::closed;
  }
  if (base_->foreign_thread()) {
    return errc::wrong_thread;
  }
  if (!cb_ && (destroyed_ == nullptr || cb_replaced_)) {
    return errc::invalid_argument;
  }
  base_->activate(this, fired_flags);
  return {};
}

void event::set_callback(event_callback cb) {
  cb_ = std::move(cb);
  if (destroyed_ != nullptr) {
    cb_replaced_ = true;  // inside its own callback: process() must not restore the old one
  }
}

// ---- timer / ticker ----------------------------------------------------------------------------

namespace {
// One allocation per timer object (the user function does not fit the small buffer), none
// per arm/fire.
event_callback wrap(std::function<void()> fn) {
  if (!fn) {
    return {};
  }
  return [fn = std::move(fn)](int, std::uint32_t) { fn(); };
}
}  // namespace

timer::timer(event_base& base, std::function<void()> fn)
    : ev_(base, -1, ev_flag::timeout, wrap(std::move(fn))) {}

ticker::ticker(event_base& base, std::function<void()> fn)
    : ev_(base, -1, ev_flag::timeout | ev_flag::persist, wrap(std::move(fn))) {}

std::error_code ticker::attach(std::chrono::nanoseconds period) {
  if (period.count() <= 0) {
    return errc::invalid_argument;
  }
  return ev_.attach(period);
}

}  // namespace evnet
