// evnet — epoll backend (Linux). See backend.h for the contract.
#include "poller/epoll.h"

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

}  // namespace

epoll_backend::epoll_backend(const poller_options& options, int epfd, int wakefd)
    : poller_backend(options),
      epfd_(epfd),
      wakefd_(wakefd),
      events_(options.initial_events),
      capacity_(static_cast<int>(options.initial_events)),
      resize_at_(capacity_) {
  inline_epoll_ = true;
}

epoll_backend::~epoll_backend() {
  close_kernel();
  ::close(wakefd_);
}

std::error_code epoll_backend::add(poll_attachment& a, interest what, trigger_mode mode) noexcept {
  epoll_event ev{};
  ev.events = epoll_bits(what, mode);
  ev.data.ptr = &a;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, a.fd, &ev) != 0) {
    return registration_error(errno);
  }
  return {};
}

std::error_code epoll_backend::modify(poll_attachment& a, interest what,
                                      trigger_mode mode) noexcept {
  epoll_event ev{};
  ev.events = epoll_bits(what, mode);
  ev.data.ptr = &a;
  if (::epoll_ctl(epfd_, EPOLL_CTL_MOD, a.fd, &ev) != 0) {
    return registration_error(errno);
  }
  return {};
}

std::error_code epoll_backend::remove(poll_attachment& a) noexcept {
  epoll_event ev{};  // kernels before 2.6.9 require a non-null pointer
  if (::epoll_ctl(epfd_, EPOLL_CTL_DEL, a.fd, &ev) != 0) {
    return registration_error(errno);
  }
  return {};
}

std::ptrdiff_t epoll_backend::wait_failed() noexcept {
  if (errno == EINTR) {
    return 0;  // a signal: an empty round, not an error
  }
  return -errno;
}

bool epoll_backend::woken_in_vain() noexcept {
  on_wake();
  return batch_size_ == 1 && wait_ms_ != 0 && stale_wake();
}

void epoll_backend::resize_events(std::size_t used) {
  const auto cap = next_capacity(static_cast<std::size_t>(capacity_), used);
  if (cap != static_cast<std::size_t>(capacity_)) {
    // A fresh vector, not resize(): shrinking must give the memory back.
    std::vector<epoll_event>(cap).swap(events_);
    capacity_ = static_cast<int>(cap);
    resize_at_ = cap == min_events_ ? capacity_ : 0;
  }
}

void epoll_backend::invalidate(const poll_attachment& a) noexcept {
  // Blanking the whole batch (not only the events after the current one) is equally correct,
  // since earlier entries are never looked at again, and spares the dispatch loop from
  // tracking its position.
  for (int i = 0; i < batch_size_; ++i) {
    if (events_[i].data.ptr == &a) {
      events_[i].data.ptr = nullptr;
    }
  }
}

void epoll_backend::wake() noexcept {
  // The eventfd is registered edge-triggered, so every write produces one new event and the
  // loop never has to read it back (one system call per wake-up, not two). Its counter
  // cannot realistically overflow: writes are coalesced.
  const std::uint64_t one = 1;
  const int saved = errno;  // may run in a signal handler
  [[maybe_unused]] ssize_t r = ::write(wakefd_, &one, sizeof one);
  errno = saved;
}

void epoll_backend::close_kernel() noexcept {
  if (epfd_ >= 0) {
    ::close(epfd_);
    epfd_ = -1;
  }
}

// The wake-up registration's user data is kWakeTag, which no attachment's address can be.
std::error_code epoll_backend::register_wake() noexcept {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = kWakeTag;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) != 0) {
    return {errno, std::system_category()};
  }
  return {};
}

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
