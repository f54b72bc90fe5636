// evnet — epoll backend (Linux). See backend.h for the contract.
#include "poller/backend.h"

#if defined(__linux__)

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "poller/poll_bits.h"

namespace evnet::detail {
namespace {

// What epoll_wait can report for what epoll_bits() asks: each of these is an io_event bit, so
// dispatch hands the kernel's mask over unchanged.
static_assert(((EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLERR | EPOLLHUP) & ~io_event::all) == 0);

std::uint32_t epoll_bits(interest what, trigger_mode mode) noexcept {
  // EPOLLRDHUP is always requested so a half-close is reported as read_hangup even to a
  // write-only registration.
  std::uint32_t ev = EPOLLRDHUP;
  if ((static_cast<unsigned>(what) & static_cast<unsigned>(interest::read)) != 0) {
    ev |= EPOLLIN;
  }
  if ((static_cast<unsigned>(what) & static_cast<unsigned>(interest::write)) != 0) {
    ev |= EPOLLOUT;
  }
  if (mode == trigger_mode::edge) {
    ev |= EPOLLET;
  }
  if (mode == trigger_mode::oneshot) {
    ev |= EPOLLONESHOT;
  }
  return ev;
}

class epoll_backend final : public poller_backend {
 public:
  epoll_backend(const poller_options& options, int epfd, int wakefd)
      : poller_backend(options),
        epfd_(epfd),
        wakefd_(wakefd),
        events_(options.initial_events),
        capacity_(static_cast<int>(options.initial_events)) {}

  ~epoll_backend() override {
    close_kernel();
    ::close(wakefd_);
  }

  std::string_view name() const noexcept override { return "epoll"; }

  std::error_code add(poll_attachment& a, interest what, trigger_mode mode) noexcept override {
    epoll_event ev{};
    ev.events = epoll_bits(what, mode);
    ev.data.ptr = &a;
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, a.fd, &ev) != 0) {
      return registration_error(errno);
    }
    return {};
  }

  std::error_code modify(poll_attachment& a, interest what, trigger_mode mode) noexcept override {
    epoll_event ev{};
    ev.events = epoll_bits(what, mode);
    ev.data.ptr = &a;
    if (::epoll_ctl(epfd_, EPOLL_CTL_MOD, a.fd, &ev) != 0) {
      return registration_error(errno);
    }
    return {};
  }

  std::error_code remove(poll_attachment& a) noexcept override {
    epoll_event ev{};  // kernels before 2.6.9 require a non-null pointer
    if (::epoll_ctl(epfd_, EPOLL_CTL_DEL, a.fd, &ev) != 0) {
      return registration_error(errno);
    }
    return {};
  }

  std::ptrdiff_t wait_and_dispatch(int timeout_ms) override {
    int n = ::epoll_wait(epfd_, events_.data(), capacity_, timeout_ms);
    // Nothing but a stale wake-up (see stale_wake()): it was pending before the wait began,
    // so the wait took no time; wait again, with the same timeout.
    while (n == 1 && timeout_ms != 0 && events_[0].data.u64 == kWakeTag) [[unlikely]] {
        on_wake();
        if (!stale_wake()) {
          break;
        }
        n = ::epoll_wait(epfd_, events_.data(), capacity_, timeout_ms);
      }
    if (n < 0) {
      if (errno == EINTR) {
        return 0;  // a signal: an empty round, not an error
      }
      return -errno;
    }
    std::ptrdiff_t skipped = 0;  // wake-ups and removed attachments: counted, rare
    // A local pointer: the array is not reallocated during dispatch, and the compiler could not
    // otherwise keep it in a register across the opaque callbacks.
    epoll_event* const evs = events_.data();
    batch_size_ = n;
    for (int i = 0; i < n; ++i) {
      void* const p = evs[i].data.ptr;
      // One compare for the two rare cases: 0 (the attachment was removed earlier in this
      // batch) and kWakeTag (the wake-up eventfd).
      if (reinterpret_cast<std::uintptr_t>(p) <= kWakeTag) [[unlikely]] {
        if (p != nullptr) {
          on_wake();
        }
        ++skipped;
        continue;
      }
      // epoll reports only what was asked (readable, writable, read hang-up) plus error and
      // hang-up, all io_event bits already: no mask needed (static_asserts in poll_bits.h).
      if (dispatch_attachment(static_cast<poll_attachment*>(p), evs[i].events)) {
        stop_in_loop_ = true;
      }
    }
    const auto ran = static_cast<std::ptrdiff_t>(n) - skipped;
    batch_size_ = 0;
    const auto cap =
        next_capacity(static_cast<std::size_t>(capacity_), static_cast<std::size_t>(n));
    if (cap != static_cast<std::size_t>(capacity_)) {
      // A fresh vector, not resize(): shrinking must give the memory back.
      std::vector<epoll_event>(cap).swap(events_);
      capacity_ = static_cast<int>(cap);
    }
    return ran;
  }

  void invalidate(const poll_attachment& a) noexcept override {
    // Blanking the whole batch (not only the events after the current one) is equally correct,
    // since earlier entries are never looked at again, and spares the dispatch loop from
    // tracking its position.
    for (int i = 0; i < batch_size_; ++i) {
      if (events_[i].data.ptr == &a) {
        events_[i].data.ptr = nullptr;
      }
    }
  }

  void wake() noexcept override {
    // The eventfd is registered edge-triggered, so every write produces one new event and the
    // loop never has to read it back (one system call per wake-up, not two). Its counter
    // cannot realistically overflow: writes are coalesced.
    const std::uint64_t one = 1;
    const int saved = errno;  // may run in a signal handler
    [[maybe_unused]] ssize_t r = ::write(wakefd_, &one, sizeof one);
    errno = saved;
  }

  void close_kernel() noexcept override {
    if (epfd_ >= 0) {
      ::close(epfd_);
      epfd_ = -1;
    }
  }

  std::size_t event_capacity() const noexcept override {
    return static_cast<std::size_t>(capacity_);
  }

  // The wake-up registration's user data is kWakeTag, which no attachment's address can be.
  std::error_code register_wake() noexcept {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = kWakeTag;
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) != 0) {
      return {errno, std::system_category()};
    }
    return {};
  }

 private:
  int epfd_;
  // The wake-up registration's user data: no attachment lives at address 1.
  static constexpr std::uintptr_t kWakeTag = 1;
  int wakefd_;
  std::vector<epoll_event> events_;
  int capacity_;        // events_.size(), kept as the int epoll_wait takes (no division per round)
  int batch_size_ = 0;  // events fetched by the current epoll_wait (0 outside dispatch)
};

}  // namespace

result<std::unique_ptr<poller_backend>> make_epoll_backend(const poller_options& options) {
  const int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    return std::error_code(errno, std::system_category());
  }
  const int wakefd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakefd < 0) {
    std::error_code ec(errno, std::system_category());
    ::close(epfd);
    return ec;
  }
  auto backend = std::make_unique<epoll_backend>(options, epfd, wakefd);
  if (std::error_code ec = backend->register_wake()) {
    return ec;
  }
  return std::unique_ptr<poller_backend>(std::move(backend));
}

}  // namespace evnet::detail

#else  // !__linux__

namespace evnet::detail {
result<std::unique_ptr<poller_backend>> make_epoll_backend(const poller_options&) {
  return errc::unsupported;
}
}  // namespace evnet::detail

#endif
