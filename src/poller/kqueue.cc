// evnet — kqueue backend (BSD/macOS). See backend.h for the contract.
//
// Status: compiled where <sys/event.h> exists. This project's CI runs on Linux, where no kqueue
// exists (Debian 12 ships no libkqueue): there the poller suites run this file against a
// user-space kqueue emulation over epoll (tests/kqueue_shim/kqueue_emul.cc, built with
// EVNET_KQUEUE_SHIM by tests/poller_kqueue.cmake). That checks this file's logic against
// kqueue(2)'s documented semantics as the emulation models them, not against a BSD kernel.
//
// Mapping: interest read/write → EVFILT_READ / EVFILT_WRITE knotes for the fd; edge → EV_CLEAR;
// one-shot → EV_DISPATCH (re-armed by modify() with EV_ENABLE); the wake-up is an EVFILT_USER
// event triggered with NOTE_TRIGGER (a self-pipe where EVFILT_USER is missing). kqueue reports
// each filter separately, so a descriptor readable and writable at once gets two callbacks in
// one round, one with io_event::readable and one with io_event::writable.
#include "poller/backend.h"

// EVNET_KQUEUE_SHIM: Linux builds against tests/kqueue_shim (the compile check in
// tests/poller.cmake, and the emulated-kqueue test variants in tests/poller_kqueue.cmake).
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__) || \
    defined(__DragonFly__) || defined(EVNET_KQUEUE_SHIM)

#include <fcntl.h>
#include <poll.h>
#include <sys/event.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <ctime>

namespace evnet::detail {
namespace {

using udata_t = decltype(static_cast<struct kevent*>(nullptr)->udata);

udata_t to_udata(const void* p) noexcept {
  // udata is void* on FreeBSD/macOS/OpenBSD and intptr_t on older NetBSD.
  return (udata_t)(const_cast<void*>(p));  // NOLINT(google-readability-casting)
}

void* from_udata(udata_t u) noexcept {
  return (void*)(u);  // NOLINT(google-readability-casting)
}

void set_kev(struct kevent& k, std::uintptr_t ident, short filter, unsigned short flags,
             const void* udata) noexcept {
  k = {};
  k.ident = ident;
  k.filter = filter;
  k.flags = flags;
  k.udata = to_udata(udata);
}

// EV_EOF on the read filter only says the peer will send nothing more (a half-close, or a pipe
// without writer); kqueue has no flag for "both directions are gone", which io_event::hangup
// promises (epoll's EPOLLHUP). poll(2) has it: POLLHUP on a socket that can neither receive nor
// send (FreeBSD's sopoll: SBS_CANTRCVMORE and SBS_CANTSENDMORE; Linux likewise) and on a pipe
// whose writer is gone. It is asked only when EV_EOF arrives: one call per EOF event. No events
// are requested (POLLHUP is reported regardless), so a poll() that derives POLLHUP from a read
// EOF (macOS builds poll() on kqueue) has nothing to derive it from; that is read from the
// systems' sources, not tested: the tests run Linux's poll().
bool hung_up(std::uintptr_t ident) noexcept {
  struct pollfd p = {};
  p.fd = static_cast<int>(ident);
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) != 0;
}

bool wants(interest what, interest bit) noexcept {
  return (static_cast<unsigned>(what) & static_cast<unsigned>(bit)) != 0;
}

unsigned short mode_flags(trigger_mode mode) noexcept {
  switch (mode) {
    case trigger_mode::edge:
      return EV_CLEAR;
    case trigger_mode::oneshot:
      return EV_DISPATCH;
    case trigger_mode::level:
      break;
  }
  return 0;
}

class kqueue_backend final : public poller_backend {
 public:
  kqueue_backend(const poller_options& options, int kq)
      : poller_backend(options), kq_(kq), events_(options.initial_events) {}

  ~kqueue_backend() override {
    if (kq_ >= 0) {
      ::close(kq_);
    }
#if !defined(EVFILT_USER)
    if (pipe_[0] >= 0) {
      ::close(pipe_[0]);
    }
    if (pipe_[1] >= 0) {
      ::close(pipe_[1]);
    }
#endif
  }

  std::string_view name() const noexcept override {
    return "kqueue";
  }

  std::error_code add(poll_attachment& a, interest what, trigger_mode mode) noexcept override {
    struct kevent changes[2];
    int n = 0;
    const unsigned short flags = EV_ADD | EV_ENABLE | EV_RECEIPT | mode_flags(mode);
    if (wants(what, interest::read)) {
      set_kev(changes[n++], a.fd, EVFILT_READ, flags, &a);
    }
    if (wants(what, interest::write)) {
      set_kev(changes[n++], a.fd, EVFILT_WRITE, flags, &a);
    }
    std::error_code ec = apply(changes, n);
    if (ec) {
      // Do not leave half a registration behind (read added, write refused).
      struct kevent undo[2];
      int m = 0;
      for (int i = 0; i < n; ++i) {
        set_kev(undo[m++], a.fd, changes[i].filter, EV_DELETE | EV_RECEIPT, nullptr);
      }
      (void)apply(undo, m);
    }
    return ec;
  }

  std::error_code modify(poll_attachment& a, interest what, trigger_mode mode) noexcept override {
    // Up to four changes (a mode change deletes and re-adds both filters), applied by one
    // kevent() call that reports each change's own status. One that fails leaves the others
    // applied, so each change comes with its inverse, and on a failure the applied ones are
    // undone, last first: the registration is the old one again ("On error `a` keeps its
    // previous registration", poller.h), not half of each (the read filter gone, the write one
    // not added, while the facade still records read interest).
    struct kevent changes[4];
    struct kevent undo[4];  // undo[i] reverses changes[i]; filter 0: nothing to reverse
    int n = 0;
    const interest old = a.current_interest();
    const trigger_mode old_mode = a.current_mode();
    // The EV_CLEAR/EV_DISPATCH behaviour of an existing knote is fixed when it is added, so a
    // mode change deletes and re-adds the filters.
    const bool mode_changed = mode != old_mode;
    const unsigned short flags = EV_ADD | EV_ENABLE | EV_RECEIPT | mode_flags(mode);
    for (short filter : {static_cast<short>(EVFILT_READ), static_cast<short>(EVFILT_WRITE)}) {
      const interest bit = filter == EVFILT_READ ? interest::read : interest::write;
      const bool had = wants(old, bit);
      const bool want = wants(what, bit);
      if (had && (!want || mode_changed)) {
        set_kev(changes[n], a.fd, filter, EV_DELETE | EV_RECEIPT, nullptr);
        set_kev(undo[n], a.fd, filter, EV_ADD | EV_ENABLE | EV_RECEIPT | mode_flags(old_mode), &a);
        ++n;
      }
      if (want) {
        set_kev(changes[n], a.fd, filter, flags, &a);
        if (had && !mode_changed) {
          undo[n] = {};  // the knote stays; EV_ADD only re-enabled it (re-arms a one-shot)
        } else {
          set_kev(undo[n], a.fd, filter, EV_DELETE | EV_RECEIPT, nullptr);
        }
        ++n;
      }
    }
    int status[4];
    std::error_code ec = apply(changes, n, status);
    if (ec) {
      struct kevent reverse[4];
      int m = 0;
      for (int i = n - 1; i >= 0; --i) {
        if (status[i] == 0 && undo[i].filter != 0) {
          reverse[m++] = undo[i];
        }
      }
      (void)apply(reverse, m);
    }
    return ec;
  }

  std::error_code remove(poll_attachment& a) noexcept override {
    struct kevent changes[2];
    int n = 0;
    const interest old = a.current_interest();
    if (wants(old, interest::read)) {
      set_kev(changes[n++], a.fd, EVFILT_READ, EV_DELETE | EV_RECEIPT, nullptr);
    }
    if (wants(old, interest::write)) {
      set_kev(changes[n++], a.fd, EVFILT_WRITE, EV_DELETE | EV_RECEIPT, nullptr);
    }
    return apply(changes, n);
  }

  std::ptrdiff_t wait_and_dispatch(int timeout_ms) override {
    struct timespec ts;
    struct timespec* tsp = nullptr;
    if (timeout_ms >= 0) {
      ts.tv_sec = timeout_ms / 1000;
      ts.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1000000L;
      tsp = &ts;
    }
    int n = ::kevent(kq_, nullptr, 0, events_.data(), static_cast<int>(events_.size()), tsp);
    // Nothing but a stale wake-up (see stale_wake()): it was pending before the wait began,
    // so the wait took no time; wait again, with the same timeout.
    while (n == 1 && timeout_ms != 0 && from_udata(events_[0].udata) == &kq_) [[unlikely]] {
        drain_wake();
        on_wake();
        if (!stale_wake()) {
          break;
        }
        n = ::kevent(kq_, nullptr, 0, events_.data(), static_cast<int>(events_.size()), tsp);
      }
    if (n < 0) {
      if (errno == EINTR) {
        return interrupted(timeout_ms);
      }
      return -errno;
    }
    std::ptrdiff_t ran = 0;
    batch_size_ = n;
    for (int i = 0; i < n; ++i) {
      const struct kevent& k = events_[i];
      void* const p = from_udata(k.udata);
      if (p == &kq_) {
        // Empty the self-pipe before clearing the coalescing flag, never after: a trigger()
        // between the two would otherwise see the flag clear, write its byte and set the flag,
        // and the drain would then swallow that byte, leaving the flag set with nothing in the
        // pipe, so every later trigger() skips its write and the loop sleeps through its tasks.
        // (EVFILT_USER needs no drain.) Found by PollerTasks.ping_pong_triggers_never_lose_a_
        // wakeup against the kqueue emulation without EVFILT_USER: 8 hangs in 150 runs.
        drain_wake();
        on_wake();
        continue;
      }
      if (p == nullptr) {
        continue;  // removed earlier in this batch
      }
      auto* const a = static_cast<poll_attachment*>(p);
      std::uint32_t bits = bits_of(k);
      if (a->mode_ == trigger_mode::oneshot && a->interest_ == interest::read_write) [[unlikely]] {
        bits |= oneshot_both(*a, i, n, k.filter);
      }
      ++ran;
      if (dispatch_attachment(a, bits)) {
        request_stop(std::memory_order_relaxed);  // ends the round
      }
    }
    batch_size_ = 0;
    const std::size_t cap = next_capacity(events_.size(), static_cast<std::size_t>(n));
    if (cap != events_.size()) {
      std::vector<struct kevent>(cap).swap(events_);
    }
    return ran;
  }

  // The io_event bits of one kevent.
  static std::uint32_t bits_of(const struct kevent& k) noexcept {
    std::uint32_t bits = 0;
    if ((k.flags & EV_ERROR) != 0) {
      bits |= io_event::error;
    } else if (k.filter == EVFILT_READ) {
      bits |= io_event::readable;
      if ((k.flags & EV_EOF) != 0) {
        bits |= io_event::read_hangup;
        // fflags carries the socket error (e.g. ECONNRESET) when the peer reset.
        if (k.fflags != 0) {
          bits |= io_event::hangup | io_event::error;
        } else if (hung_up(k.ident)) {
          bits |= io_event::hangup;
        }
      }
    } else if (k.filter == EVFILT_WRITE) {
      bits |= io_event::writable;
      if ((k.flags & EV_EOF) != 0) {
        bits |= io_event::hangup;
        if (k.fflags != 0) {
          bits |= io_event::error;
        }
      }
    }
    return bits;
  }

  // A one-shot registration for read and write is two EV_DISPATCH knotes, and EV_DISPATCH
  // disables only the one that fired. epoll's one-shot disarms the whole registration, and so
  // does the contract: "reported once, then disarmed until modify() re-arms it". So the other
  // filter's entry later in this batch is folded into this report (one callback), and if the
  // other filter did not fire it is disabled too; modify() enables both again. Returns the
  // folded bits.
  std::uint32_t oneshot_both(poll_attachment& a, int i, int n, short fired_filter) noexcept {
    std::uint32_t bits = 0;
    bool other_fired = false;
    for (int j = i + 1; j < n; ++j) {
      if (from_udata(events_[j].udata) == &a) {
        bits |= bits_of(events_[j]);
        other_fired = other_fired || events_[j].filter != fired_filter;
        events_[j].udata = to_udata(nullptr);
      }
    }
    if (!other_fired) {
      struct kevent change;
      set_kev(change, static_cast<std::uintptr_t>(a.fd),
              fired_filter == EVFILT_READ ? EVFILT_WRITE : EVFILT_READ, EV_DISABLE | EV_RECEIPT,
              &a);
      (void)apply(&change, 1);
    }
    return bits;
  }

  void invalidate(const poll_attachment& a) noexcept override {
    for (int i = 0; i < batch_size_; ++i) {  // earlier entries are never read again
      if (from_udata(events_[i].udata) == &a) {
        events_[i].udata = to_udata(nullptr);
      }
    }
  }

  void wake() noexcept override {
    const int saved = errno;  // may run in a signal handler
#if defined(EVFILT_USER)
    struct kevent k;
    set_kev(k, 0, EVFILT_USER, 0, &kq_);
    k.fflags = NOTE_TRIGGER;
    (void)::kevent(kq_, &k, 1, nullptr, 0, nullptr);
#else
    const char c = 0;
    [[maybe_unused]] ssize_t r = ::write(pipe_[1], &c, 1);
#endif
    errno = saved;
  }

  // The kqueue descriptor is also the wake-up channel, so it stays open until destruction
  // (a racing stop() must never reach a recycled descriptor). After close() the facade refuses
  // every operation, so nothing polls it any more.
  void close_kernel() noexcept override {}

  std::size_t event_capacity() const noexcept override {
    return events_.size();
  }

  std::error_code register_wake() noexcept {
#if defined(EVFILT_USER)
    struct kevent k;
    set_kev(k, 0, EVFILT_USER, EV_ADD | EV_CLEAR | EV_RECEIPT, &kq_);
    return apply(&k, 1);
#else
    if (::pipe(pipe_) != 0) {
      return {errno, std::system_category()};
    }
    for (int fd : pipe_) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    struct kevent k;
    set_kev(k, static_cast<std::uintptr_t>(pipe_[0]), EVFILT_READ, EV_ADD | EV_CLEAR | EV_RECEIPT,
            &kq_);
    return apply(&k, 1);
#endif
  }

 private:
  // Applies a change list with EV_RECEIPT, so each change reports its own status instead of
  // the first failure aborting the rest silently.
  // The first failure is returned; `status`, if given, receives each change's errno (0: applied),
  // in the order of the changes (EV_RECEIPT reports every change, in order, and with room for
  // all of them the call itself fails only before any change, e.g. EBADF for the kqueue).
  std::error_code apply(struct kevent* changes, int n, int* status = nullptr) noexcept {
    if (n == 0) {
      return {};
    }
    struct kevent out[4];
    const int r = ::kevent(kq_, changes, n, out, n, nullptr);
    if (r < 0) {
      const int err = errno;
      for (int i = 0; status != nullptr && i < n; ++i) {
        status[i] = err;
      }
      return {err, std::system_category()};
    }
    std::error_code ec;
    for (int i = 0; i < n; ++i) {
      // A change without an entry (none should be missing) counts as not applied.
      const int err = i >= r                           ? EINVAL
                      : (out[i].flags & EV_ERROR) != 0 ? static_cast<int>(out[i].data)
                                                       : 0;
      if (status != nullptr) {
        status[i] = err;
      }
      if (err != 0 && !ec) {
        ec = registration_error(err);
      }
    }
    return ec;
  }

  void drain_wake() noexcept {
#if !defined(EVFILT_USER)
    char buf[64];
    while (::read(pipe_[0], buf, sizeof buf) > 0) {
    }
#endif
  }

  int kq_;
#if !defined(EVFILT_USER)
  int pipe_[2] = {-1, -1};
#endif
  std::vector<struct kevent> events_;
  int batch_size_ = 0;
};

}  // namespace

result<std::unique_ptr<poller_backend>> make_kqueue_backend(const poller_options& options) {
  const int kq = ::kqueue();
  if (kq < 0) {
    return std::error_code(errno, std::system_category());
  }
  ::fcntl(kq, F_SETFD, FD_CLOEXEC);
  auto backend = std::make_unique<kqueue_backend>(options, kq);
  if (std::error_code ec = backend->register_wake()) {
    return ec;
  }
  return std::unique_ptr<poller_backend>(std::move(backend));
}

}  // namespace evnet::detail

#else  // no <sys/event.h>

namespace evnet::detail {
result<std::unique_ptr<poller_backend>> make_kqueue_backend(const poller_options&) {
  return errc::unsupported;
}
}  // namespace evnet::detail

#endif
