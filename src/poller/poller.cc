// evnet — poller facade: argument checks, attachment bookkeeping, task queues, stop/wake-up.
// The kernel side lives in one file per backend (epoll.cc, kqueue.cc); see backend.h.
#include "evnet/poller.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "poller/backend.h"
#include "poller/io_uring.h"
#include "poller/round.h"

namespace evnet {
namespace {

// This thread's identity for the pollers: a poller being polled records the address of its
// polling thread's token (poller_backend::owner_). It lets trigger() skip the wake-up system
// call when the loop queues a task for itself (the loop checks pending_ before it blocks), and
// lets add/modify/remove detect calls from a foreign thread during polling. Kept per poller,
// not as "the poller this thread polls": a thread may poll a second poller from inside a
// callback of the first, or hold two, and each must still know it as its owner.
// initial-exec: a single %fs-relative address even when evnet is a shared library.
thread_local char tls_token __attribute__((tls_model("initial-exec"))) = 0;

int to_timeout_ms(std::chrono::milliseconds timeout) noexcept {
  if (timeout.count() < 0) {
    return -1;
  }
  if (timeout.count() > INT_MAX) {
    return INT_MAX;
  }
  return static_cast<int>(timeout.count());
}

void link(detail::poller_backend& b, poll_attachment& a) noexcept {
  a.prev_ = nullptr;
  a.next_ = b.head_;
  if (b.head_ != nullptr) {
    b.head_->prev_ = &a;
  }
  b.head_ = &a;
  ++b.registered_;
}

void unlink(detail::poller_backend& b, poll_attachment& a) noexcept {
  if (a.prev_ != nullptr) {
    a.prev_->next_ = a.next_;
  } else {
    b.head_ = a.next_;
  }
  if (a.next_ != nullptr) {
    a.next_->prev_ = a.prev_;
  }
  a.prev_ = a.next_ = nullptr;
  a.owner_ = nullptr;
  --b.registered_;
}

// add/modify/remove are loop-thread operations. While some thread is polling, a call from
// another thread would race with dispatch, so it is refused instead of corrupting state.
bool foreign_thread(const detail::poller_backend& b) noexcept {
  return b.polling_.load(std::memory_order_relaxed) &&
         b.owner_.load(std::memory_order_relaxed) != &tls_token;
}

// The checks modify() and remove() share, in the order their documentation lists the errors.
std::error_code check_registered(const detail::poller_backend& b, const poll_attachment& a,
                                 const poller* self) noexcept {
  if (!b.open_) {
    return errc::closed;
  }
  if (foreign_thread(b)) {
    return errc::wrong_thread;
  }
  if (a.owner_ != self) {
    return errc::not_registered;
  }
  return {};
}

}  // namespace

result<std::unique_ptr<poller>> poller::open(const poller_options& options) {
  if (options.initial_events == 0 || options.max_events < options.initial_events ||
      options.max_events > static_cast<std::size_t>(INT_MAX)) {
    return errc::invalid_argument;
  }
  backend_kind kind = options.backend;
  if (kind == backend_kind::automatic) {
    // An explicit choice from the environment wins, as muduo's MUDUO_USE_POLL and libevent's
    // EVENT_NO* do; it lets the same test binary run once per backend.
    const char* env = std::getenv("EVNET_POLLER");
    if (env != nullptr && *env != '\0') {
      if (std::strcmp(env, "epoll") == 0) {
        kind = backend_kind::epoll;
      } else if (std::strcmp(env, "kqueue") == 0) {
        kind = backend_kind::kqueue;
      } else if (std::strcmp(env, "io_uring") == 0) {
        kind = backend_kind::io_uring;
      } else {
        return errc::invalid_argument;
      }
    } else {
#if defined(__linux__)
      kind = backend_kind::epoll;
#else
      kind = backend_kind::kqueue;
#endif
    }
  }
  result<std::unique_ptr<detail::poller_backend>> backend = errc::unsupported;
  switch (kind) {
    case backend_kind::epoll:
      backend = detail::make_epoll_backend(options);
      break;
    case backend_kind::kqueue:
      backend = detail::make_kqueue_backend(options);
      break;
    case backend_kind::io_uring:
      backend = detail::make_io_uring_backend(options);
      break;
    case backend_kind::automatic:
      return errc::unsupported;
  }
  if (!backend) {
    return backend.error();
  }
  std::unique_ptr<poller> p(new poller(std::move(*backend)));
  p->backend_->facade_ = p.get();
  return p;
}

poller::poller(std::unique_ptr<detail::poller_backend> backend) : backend_(std::move(backend)) {}

poller::~poller() {
  // Even a close() deferred from inside a round must happen now: the object is going away.
  backend_->in_round_ = false;
  close();
}

std::error_code poller::add(poll_attachment& a, interest what, trigger_mode mode) {
  detail::poller_backend& b = *backend_;
  if (!b.open_) {
    return errc::closed;
  }
  if (foreign_thread(b)) {
    return errc::wrong_thread;
  }
  if (a.fd < 0 || (a.function == nullptr && !a.callback)) {
    return errc::invalid_argument;
  }
  if (a.owner_ != nullptr) {
    return errc::already_registered;
  }
  if (a.function == nullptr) {
    // Dispatch makes one direct call per event: a callback-only attachment goes through a
    // forwarder, so no event pays a test for which of the two is set.
    a.function = &detail::call_poll_callback;
  }
  if (std::error_code ec = b.add(a, what, mode)) {
    return ec;
  }
  a.owner_ = this;
  a.interest_ = what;
  a.mode_ = mode;
  link(b, a);
  return {};
}

std::error_code poller::modify(poll_attachment& a, interest what, trigger_mode mode) {
  detail::poller_backend& b = *backend_;
  if (std::error_code ec = check_registered(b, a, this)) {
    return ec;
  }
  if (std::error_code ec = b.modify(a, what, mode)) {
    return ec;
  }
  a.interest_ = what;
  a.mode_ = mode;
  return {};
}

std::error_code poller::remove(poll_attachment& a) {
  detail::poller_backend& b = *backend_;
  if (std::error_code ec = check_registered(b, a, this)) {
    return ec;
  }
  // Forget the attachment whatever the kernel says (e.g. EBADF when the caller closed the fd
  // first): the caller is about to free it, so no event may reach it any more.
  std::error_code ec = b.remove(a);
  b.invalidate(a);
  unlink(b, a);
  return ec;
}

std::error_code poller::poll() {
  // Held for the whole run, not round by round: between two rounds another thread's
  // add()/modify()/remove() would be let through and race with the next dispatch.
  result<holder> h = hold();
  if (!h) {
    return h.error() == errc::closed ? std::error_code{} : h.error();
  }
  for (;;) {
    result<std::size_t> r = h->poll_once(std::chrono::milliseconds(-1));
    if (!r) {
      std::error_code ec = r.error();
      if (ec == errc::stopped || ec == errc::closed) {
        return {};
      }
      return ec;
    }
  }
}

// Runs the queued tasks of one round: every high-priority task queued before the swap, then a
// bounded batch of low ones. Tasks queued while these run wait for the next round, so a task
// that re-queues itself cannot starve I/O. If a task calls close(), the rest of the batch is
// destroyed without running. Kept out of line: the I/O-only round stays small.
[[gnu::noinline]] void detail::run_tasks(poller_backend& b) {
  if (b.wait_bound_ != nullptr) {
    *b.wait_bound_ = -1;  // the event base's round ends with these tasks (backend.h)
  }
  std::size_t ran = 0;
  {
    std::lock_guard<std::mutex> lock(b.task_mutex_);
    b.high_run_.swap(b.high_);
    if (b.low_pos_ == b.low_run_.size()) {
      b.low_run_.clear();
      b.low_pos_ = 0;
      b.low_run_.swap(b.low_);
    }
  }
  for (task& t : b.high_run_) {
    if (!b.close_deferred_) {
      t();
    }
    ++ran;
  }
  b.high_run_.clear();
  const std::size_t end = std::min(b.low_run_.size(), b.low_pos_ + poller::kLowTasksPerRound);
  while (b.low_pos_ < end && !b.close_deferred_) {
    task& t = b.low_run_[b.low_pos_++];
    t();
    t = nullptr;  // release what it captured now, not when the batch is recycled
    ++ran;
  }
  b.pending_.fetch_sub(ran, std::memory_order_relaxed);
}

namespace {

// One round (see detail::poller_round), its result as poll_once() returns it.
[[gnu::always_inline]] inline void run_round(detail::poller_backend& b,
                                             std::chrono::milliseconds timeout,
                                             result<std::size_t>& out) {
  const std::ptrdiff_t ran = detail::poller_round(b, to_timeout_ms(timeout));
  if (ran >= 0) [[likely]] {
    out = static_cast<std::size_t>(ran);
  } else if (ran == detail::kRoundStopped) {
    out = errc::stopped;
  } else if (ran == detail::kInterrupted) {
    out = std::size_t{0};  // EINTR: an empty round (poller.h)
  } else {
    out = std::error_code(static_cast<int>(-ran), std::system_category());
  }
}

// Takes the loop thread's ownership; on failure stores the reason in `out`.
[[gnu::always_inline]] inline bool acquire(detail::poller_backend& b, result<std::size_t>& out) {
  bool expected = false;
  if (!b.open_ || !b.polling_.compare_exchange_strong(expected, true, std::memory_order_acquire))
      [[unlikely]] {
    // Closed; or polling already: re-entered from a callback on this thread, or another thread.
    out = !b.open_                                                 ? errc::closed
          : b.owner_.load(std::memory_order_relaxed) == &tls_token ? errc::invalid_argument
                                                                   : errc::wrong_thread;
    return false;
  }
  b.owner_.store(&tls_token, std::memory_order_relaxed);
  return true;
}

void release(detail::poller_backend& b) noexcept {
  b.owner_.store(nullptr, std::memory_order_relaxed);
  b.polling_.store(false, std::memory_order_release);
}

}  // namespace

result<std::size_t> poller::poll_once(std::chrono::milliseconds timeout) {
  result<std::size_t> out = std::size_t{0};
  detail::poller_backend& b = *backend_;
  if (!acquire(b, out)) [[unlikely]] {
    return out;
  }
  run_round(b, timeout, out);
  release(b);
  if (b.close_deferred_) [[unlikely]] {
    b.close_deferred_ = false;
    close();
    out = errc::closed;
  }
  return out;
}

result<poller::holder> poller::hold() {
  result<std::size_t> out = std::size_t{0};
  if (!acquire(*backend_, out)) {
    return out.error();
  }
  return holder(this);
}

poller::holder::~holder() {
  if (p_ != nullptr && p_->backend_->polling_.load(std::memory_order_relaxed) &&
      p_->backend_->owner_.load(std::memory_order_relaxed) == &tls_token) {
    release(*p_->backend_);
  }
}

result<std::size_t> poller::holder::poll_once(std::chrono::milliseconds timeout) {
  result<std::size_t> out = std::size_t{0};
  detail::poller_backend& b = *p_->backend_;
  if (!b.open_) [[unlikely]] {
    out = errc::closed;
    return out;
  }
  run_round(b, timeout, out);
  if (b.close_deferred_) [[unlikely]] {
    detail::poller_access::close_deferred(*this);
    out = errc::closed;
  }
  return out;
}

void detail::poller_access::close_deferred(poller::holder& h) {
  // close() refuses nothing from the loop thread, and must not see the poller as busy.
  poller_backend& b = *h.p_->backend_;
  b.close_deferred_ = false;
  release(b);
  h.p_->close();
}

void poller::stop() noexcept {
  detail::poller_backend& b = *backend_;
  // No thread_local access here: TLS may allocate on first use in a shared library, which is
  // not async-signal-safe. Waking unconditionally costs one write when called on the loop.
  b.request_stop(std::memory_order_seq_cst);
  b.wake();
}

std::error_code poller::trigger(task_priority priority, task fn) {
  if (!fn) {
    return errc::invalid_argument;
  }
  detail::poller_backend& b = *backend_;
  // The wake-up is written before the lock is released. Once it is released the loop may run
  // the task, and what the task starts may end with the poller closed and destroyed (an engine
  // whose stop() the task requested); close() takes this lock, so it cannot finish while a
  // producer is still between its push and its wake-up. Only a producer that wins the
  // coalescing exchange writes, so the lock is rarely held across the system call.
  std::lock_guard<std::mutex> lock(b.task_mutex_);
  if (b.tasks_closed_) {
    return errc::closed;  // fn is destroyed on return, never run
  }
  (priority == task_priority::high ? b.high_ : b.low_).push_back(std::move(fn));
  b.pending_.fetch_add(1, std::memory_order_relaxed);
  // The loop queueing for itself needs no wake-up: it looks at pending_ before blocking.
  if (b.owner_.load(std::memory_order_relaxed) != &tls_token &&
      !b.wake_pending_.exchange(true, std::memory_order_acq_rel)) {
    b.wake();
  }
  return {};
}

std::size_t poller::close() {
  detail::poller_backend& b = *backend_;
  if (!b.open_) {
    return 0;
  }
  if (foreign_thread(b)) {
    return 0;  // misuse: another thread is polling; refuse, do not race
  }
  if (b.in_round_) {
    // Called from a callback or task: finishing the round first keeps the batch being
    // dispatched and the task vector being iterated intact. poll_once() closes on its way out.
    b.close_deferred_ = true;
    // And the round ends as stopped (detail::poller_round): its caller then looks for the
    // deferred close on its rare branch, not after every round.
    b.request_stop(std::memory_order_relaxed);
    // Queued as pending_tasks() counts them: the low backlog already swapped out of the queue
    // (loop-local, and dropped by the deferred close as well) included.
    std::size_t queued = b.low_run_.size() - b.low_pos_;
    std::lock_guard<std::mutex> lock(b.task_mutex_);
    queued += b.high_.size() + b.low_.size();
    return queued;
  }
  b.open_ = false;
  std::vector<task> high;
  std::vector<task> low;
  {
    std::lock_guard<std::mutex> lock(b.task_mutex_);
    b.tasks_closed_ = true;
    high.swap(b.high_);
    low.swap(b.low_);
  }
  std::size_t dropped =
      high.size() + low.size() + (b.low_run_.size() - b.low_pos_) + b.high_run_.size();
  b.pending_.fetch_sub(dropped, std::memory_order_relaxed);
  // Destroy the tasks outside the lock: their destructors may call trigger() (which now fails).
  high.clear();
  low.clear();
  b.high_run_.clear();
  b.low_run_.clear();
  b.low_pos_ = 0;
  while (b.head_ != nullptr) {
    unlink(b, *b.head_);
  }
  b.close_kernel();
  return dropped;
}

bool poller::is_open() const noexcept {
  return backend_->open_;
}

std::string_view poller::backend_name() const noexcept {
  return backend_->name();
}

std::size_t poller::event_capacity() const noexcept {
  return backend_->event_capacity();
}

std::size_t poller::pending_tasks() const noexcept {
  return backend_->pending_.load(std::memory_order_relaxed) & ~detail::poller_backend::kStopBits;
}

std::size_t poller::registered_count() const noexcept {
  return backend_->registered_;
}

}  // namespace evnet
