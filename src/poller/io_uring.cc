// evnet — io_uring backend (Linux), readiness over IORING_OP_POLL_ADD. See backend.h for the
// contract and io_uring.h for the factory.
//
// Raw system calls (io_uring_setup / io_uring_enter) and mmap'd rings, no liburing: the backend
// needs a dozen lines of ring plumbing, not a new package dependency.
//
// How the three trigger modes map onto poll requests (measured on this kernel, 6.18):
//   edge    → one multishot POLL_ADD (IORING_POLL_ADD_MULTI). The kernel posts a CQE on every
//             wake-up of the file's wait queue (each new arrival), like EPOLLET; when the kernel
//             ends the multishot (a CQE without IORING_CQE_F_MORE, e.g. after a CQ overflow) it
//             is re-armed on the next round.
//   oneshot → one single-shot POLL_ADD, re-armed only by modify(), like EPOLLONESHOT.
//   level   → a single-shot POLL_ADD that the backend re-arms at the start of every round after
//             it fired. A single-shot poll completes at once when the file is already ready, so
//             each round reports the condition again while it holds, like epoll's default.
//             IORING_POLL_ADD_LEVEL is no alternative: this kernel rejects it (alone or with
//             MULTI) with EINVAL, and io_uring has no notion of a "round" to re-report in.
// The re-arm SQEs ride in the round's single io_uring_enter, so level mode costs no extra
// system call while at most 256 (the SQ size) fire per round, but it costs kernel work per
// event (measured: ~2.4× epoll's CPU per level event).
//
// Several CQEs of one registration in one round (a multishot posts one per wake-up) are merged
// into one callback with the bits OR-ed, so a callback runs at most once per registration per
// round, as with epoll.
//
// Differences from epoll that callers can see: a poll request holds a reference to the file,
// so a descriptor closed without remove() stays open in the kernel (the socket is not closed)
// until remove() or close() of the poller; remove() sends its cancel at once outside a round,
// with the next round's io_uring_enter inside one. After a CQ overflow (more than 4096 — or
// 4 × max_events — readiness changes between two rounds) an edge registration may be reported
// once more than epoll would. add()/modify()/remove() each make one fstat/fcntl call to return
// epoll's errors (EBADF, EPERM) synchronously. A registered anonymous-inode file (eventfd,
// timerfd, signalfd, ...) holds one extra descriptor, a duplicate that lets add() tell, with
// kcmp(), the same file from another one at the fd number (epoll's EEXIST rule).
//
// Lifetime: a CQE's user_data is never the attachment's address. It is a tag (generation << 32 |
// slot index) into slots_, and every new kernel request for a slot (add, modify, level re-arm,
// remove) bumps the slot's generation. A CQE whose generation is not the slot's current one is
// stale — its attachment may have been removed and freed, or modified since — and is dropped
// without touching the attachment. So remove() may free the attachment at once, even inside a
// callback, while the kernel still holds the old request and will post its -ECANCELED later.
#include "poller/io_uring.h"

#if defined(__linux__) && __has_include(<linux/io_uring.h>)

#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <vector>

#include "poller/poll_bits.h"

namespace evnet::detail {
namespace {

// Older uapi headers lack some names; the values are kernel ABI and never change.
#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IOSQE_CQE_SKIP_SUCCESS
#define IOSQE_CQE_SKIP_SUCCESS (1U << 6)
#endif
#ifndef IORING_FEAT_CQE_SKIP
#define IORING_FEAT_CQE_SKIP (1U << 11)
#endif

int sys_io_uring_setup(unsigned entries, io_uring_params* p) noexcept {
  return static_cast<int>(::syscall(__NR_io_uring_setup, entries, p));
}

int sys_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags,
                       const void* arg, std::size_t argsz) noexcept {
  return static_cast<int>(
      ::syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz));
}

// The getevents argument of IORING_ENTER_EXT_ARG (struct io_uring_getevents_arg), declared here
// because older uapi headers name its third field differently.
struct getevents_arg {
  std::uint64_t sigmask;
  std::uint32_t sigmask_sz;
  std::uint32_t min_wait_usec;
  std::uint64_t ts;
};

// The kernel's timespec for io_uring (struct __kernel_timespec).
struct kernel_timespec {
  std::int64_t tv_sec;
  long long tv_nsec;
};

constexpr std::uint64_t kWakeTag = ~std::uint64_t{0};  // the wake-up eventfd's multishot poll
constexpr std::uint64_t kIgnoreTag = kWakeTag - 1;     // POLL_REMOVE results (failures only)
constexpr std::uint32_t kNoSlot = ~std::uint32_t{0};

constexpr unsigned kSqEntries = 256;

std::uint64_t make_tag(std::uint32_t index, std::uint32_t gen) noexcept {
  return (std::uint64_t{gen} << 32) | index;
}

std::uint32_t poll_mask(interest what) noexcept {
  // POLLRDHUP is always requested so a half-close is reported as read_hangup even to a
  // write-only registration (epoll.cc does the same with EPOLLRDHUP).
  std::uint32_t ev = POLLRDHUP;
  if ((static_cast<unsigned>(what) & static_cast<unsigned>(interest::read)) != 0) {
    ev |= POLLIN;
  }
  if ((static_cast<unsigned>(what) & static_cast<unsigned>(interest::write)) != 0) {
    ev |= POLLOUT;
  }
  return ev;
}

// The kernel reads poll32_events with its 16-bit halves swapped on big-endian hosts (it keeps
// the layout of the old 16-bit field), so the mask is stored swapped there.
inline std::uint32_t poll_events(std::uint32_t mask) noexcept {
  if constexpr (std::endian::native == std::endian::big) {
    return (mask << 16) | (mask >> 16);
  }
  return mask;
}

// One registration's kernel state. Indexed by the low half of a CQE tag.
struct slot {
  poll_attachment* att = nullptr;  // null while the slot is free
  std::uint32_t gen = 0;           // generation of the newest request; never reset
  // Registration id: bumped only when the slot is released, so an event fetched this round
  // survives a modify() from an earlier callback (it bumps gen), as epoll keeps it.
  std::uint32_t reg = 0;
  std::uint32_t mask = 0;  // POLLIN/POLLOUT/POLLRDHUP
  trigger_mode mode = trigger_mode::level;
  bool armed = false;  // a request tagged (index, gen) may still be live in the kernel
  std::uint32_t next_free = kNoSlot;
  // A duplicate of the registered fd, kept only for a file whose inode is shared by other
  // files (an eventfd, timerfd, signalfd, ...: one anonymous inode for all), so add() can still
  // tell the same file from another one at a reused fd number (see add()). -1 otherwise.
  int twin = -1;
  std::uint32_t batch_pos = 0;    // index in batch_ when batch_round is the current round
  std::uint64_t batch_round = 0;  // round in which this slot was last put in batch_
};

// A registration that is ready this round, with the bits of all its CQEs.
struct ready {
  std::uint32_t index;
  std::uint32_t reg;  // the slot's registration id when the CQE was reaped
  std::uint32_t bits;
};

class io_uring_backend final : public poller_backend {
 public:
  io_uring_backend(const poller_options& options, int wakefd)
      : poller_backend(options),
        wakefd_(wakefd),
        capacity_(options.initial_events),
        batch_(options.initial_events) {}

  ~io_uring_backend() override {
    close_kernel();
    ::close(wakefd_);
  }

  // Creates the ring and maps it. Returns errc::unsupported where io_uring is missing, disabled
  // (kernel.io_uring_disabled, seccomp) or too old for what this backend needs.
  std::error_code setup() noexcept {
    io_uring_params p{};
    // Every readiness of every registration that arrives between two reaps needs a CQ entry
    // (epoll's ready list has no such bound). Overflow is survivable — the kernel keeps the
    // excess (IORING_FEAT_NODROP) — but it ends the multishot polls it could not post to; they
    // are re-armed and then report their current readiness once more. 4096 entries (64 KiB)
    // or 4 × max_events make that rare.
    unsigned cq = 4096;
    while (cq < 4 * max_events_ && cq < 65536) {
      cq *= 2;
    }
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL |
              IORING_SETUP_COOP_TASKRUN;
    p.cq_entries = cq;
    ring_fd_ = sys_io_uring_setup(kSqEntries, &p);
    if (ring_fd_ < 0 && errno == EINVAL) {
      // Kernels before 5.18/5.19 refuse the newer flags; they only save work, so retry without.
      std::memset(&p, 0, sizeof p);
      p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
      p.cq_entries = cq;
      ring_fd_ = sys_io_uring_setup(kSqEntries, &p);
    }
    if (ring_fd_ < 0) {
      const int err = errno;
      // ENOSYS: not built in; EPERM: io_uring_disabled=2 or seccomp; EACCES: not in the
      // io_uring_group. All mean "this machine has no usable io_uring" to the caller.
      if (err == ENOSYS || err == EPERM || err == EACCES || err == EINVAL) {
        return errc::unsupported;
      }
      return {err, std::system_category()};
    }
    // EXT_ARG (5.11) carries the wait timeout in io_uring_enter itself; NODROP (5.5) keeps CQEs
    // when the CQ is full. Without them one enter per round is not possible.
    if ((p.features & IORING_FEAT_EXT_ARG) == 0 || (p.features & IORING_FEAT_NODROP) == 0) {
      return errc::unsupported;
    }
    cqe_skip_ = (p.features & IORING_FEAT_CQE_SKIP) != 0;

    sq_ring_size_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    cq_ring_size_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
    single_mmap_ = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single_mmap_) {
      if (cq_ring_size_ > sq_ring_size_) {
        sq_ring_size_ = cq_ring_size_;
      }
      cq_ring_size_ = sq_ring_size_;
    }
    sq_ring_ = ::mmap(nullptr, sq_ring_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                      ring_fd_, IORING_OFF_SQ_RING);
    if (sq_ring_ == MAP_FAILED) {
      sq_ring_ = nullptr;
      return {errno, std::system_category()};
    }
    if (single_mmap_) {
      cq_ring_ = sq_ring_;
    } else {
      cq_ring_ = ::mmap(nullptr, cq_ring_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                        ring_fd_, IORING_OFF_CQ_RING);
      if (cq_ring_ == MAP_FAILED) {
        cq_ring_ = nullptr;
        return {errno, std::system_category()};
      }
    }
    sqes_size_ = p.sq_entries * sizeof(io_uring_sqe);
    void* sqes = ::mmap(nullptr, sqes_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                        ring_fd_, IORING_OFF_SQES);
    if (sqes == MAP_FAILED) {
      return {errno, std::system_category()};
    }
    sqes_ = static_cast<io_uring_sqe*>(sqes);

    char* sq = static_cast<char*>(sq_ring_);
    char* cqr = static_cast<char*>(cq_ring_);
    sq_khead_ = reinterpret_cast<unsigned*>(sq + p.sq_off.head);
    sq_ktail_ = reinterpret_cast<unsigned*>(sq + p.sq_off.tail);
    sq_mask_ = *reinterpret_cast<unsigned*>(sq + p.sq_off.ring_mask);
    sq_entries_ = p.sq_entries;
    auto* array = reinterpret_cast<unsigned*>(sq + p.sq_off.array);
    // The indirection array maps ring positions to SQE indexes; identity, set once.
    for (unsigned i = 0; i < p.sq_entries; ++i) {
      array[i] = i;
    }
    cq_khead_ = reinterpret_cast<unsigned*>(cqr + p.cq_off.head);
    cq_ktail_ = reinterpret_cast<unsigned*>(cqr + p.cq_off.tail);
    cq_mask_ = *reinterpret_cast<unsigned*>(cqr + p.cq_off.ring_mask);
    cqes_ = reinterpret_cast<io_uring_cqe*>(cqr + p.cq_off.cqes);
    sq_tail_ = load_acquire(sq_ktail_);

    struct stat wake_st {};
    if (::fstat(wakefd_, &wake_st) == 0) {
      wake_dev_ = wake_st.st_dev;
      wake_ino_ = wake_st.st_ino;
    }
    arm_wake();
    // Submit the wake-up poll now, so a trigger() before the first round is not lost.
    if (std::error_code ec = flush()) {
      return ec;
    }
    return {};
  }

  std::string_view name() const noexcept override { return "io_uring"; }

  std::error_code add(poll_attachment& a, interest what, trigger_mode mode) noexcept override {
    // epoll_ctl checks the descriptor synchronously; POLL_ADD would only fail later, in a CQE.
    // One fstat gives epoll's answers: EBADF for a closed fd, EPERM for a file that cannot be
    // polled (regular files and directories; epoll refuses any file without ->poll, which
    // io_uring would instead report as always ready).
    struct stat st {};
    if (::fstat(a.fd, &st) != 0) {
      return {errno, std::system_category()};
    }
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
      return std::make_error_code(std::errc::operation_not_permitted);
    }
    const auto fd = static_cast<std::size_t>(a.fd);
    // Anonymous-inode files (eventfd, timerfd, signalfd, epoll, ...) all share the inode of
    // the wake-up eventfd: their device and inode numbers say nothing about which file it is.
    const bool shared_inode = st.st_dev == wake_dev_ && st.st_ino == wake_ino_;
    if (fd < by_fd_.size() && by_fd_[fd].index != kNoSlot) {
      const fd_entry& e = by_fd_[fd];
      // The same open file still behind this fd number: a second registration, as epoll's
      // EEXIST. A different file means the caller closed the old fd without remove() and the
      // number was reused; epoll forgets such a registration, so the new one is allowed (the
      // old slot lives on until its attachment is removed).
      if (e.dev == st.st_dev && e.ino == st.st_ino &&
          (!shared_inode || same_file(slots_[e.index].twin, a.fd))) {
        return errc::already_registered;
      }
    }
    const std::uint32_t index = allocate();
    slot& s = slots_[index];
    s.att = &a;
    // Without a duplicate (EMFILE), a later add() at this number cannot tell: it is allowed.
    s.twin = shared_inode ? ::fcntl(a.fd, F_DUPFD_CLOEXEC, 0) : -1;
    s.mask = poll_mask(what);
    s.mode = mode;
    if (fd >= by_fd_.size()) {
      by_fd_.resize(fd + 1);
    }
    by_fd_[fd] = fd_entry{index, st.st_dev, st.st_ino};
    if (std::error_code ec = arm(index)) {
      release(index, a.fd);
      return ec;
    }
    return {};
  }

  std::error_code modify(poll_attachment& a, interest what, trigger_mode mode) noexcept override {
    // As epoll_ctl(MOD) would, refuse a descriptor the caller already closed.
    if (::fcntl(a.fd, F_GETFD) < 0) {
      return {errno, std::system_category()};
    }
    const std::uint32_t index = find(a);
    if (index == kNoSlot) {
      return errc::not_registered;
    }
    // Room for the cancel and the new poll first: with the cancel queued in the SQ's last
    // entry and no room for the poll, the old request would be cancelled and no new one made,
    // leaving the registration silent while modify() reports an error.
    if (std::error_code ec = reserve(slots_[index].armed ? 2 : 1)) {
      return ec;
    }
    if (std::error_code ec = disarm(index)) {
      return ec;
    }
    slot& s = slots_[index];
    s.mask = poll_mask(what);
    s.mode = mode;
    return arm(index);
  }

  std::error_code remove(poll_attachment& a) noexcept override {
    const std::uint32_t index = find(a);
    if (index == kNoSlot) {
      return errc::not_registered;
    }
    std::error_code ec = disarm(index);
    if (ec) {
      // No room for the cancel (the kernel takes no submissions now). The attachment is
      // forgotten all the same, but its request must not stay live: it holds a reference to
      // the file, which a close() by the caller would then never really close. Sent with the
      // next round; the slot's next generation makes the request's CQEs stale meanwhile.
      cancels_.push_back(make_tag(index, slots_[index].gen));
    }
    release(index, a.fd);
    // The poll request holds a reference to the file: until the cancel reaches the kernel, a
    // close() of the fd would not really close the socket. Inside a round the cancel goes out
    // with the round's io_uring_enter a moment later; outside one, send it now.
    if (!ec && !in_round_) {
      ec = flush();
    }
    // Report a descriptor closed before remove() as epoll does (EBADF); the registration is
    // gone either way.
    if (!ec && ::fcntl(a.fd, F_GETFD) < 0) {
      ec = {errno, std::system_category()};
    }
    return ec;
  }

  std::ptrdiff_t wait_and_dispatch(int timeout_ms) override {
    // Level registrations that fired last round, and multishots the kernel ended, are armed
    // again; their SQEs go out with this round's single io_uring_enter.
    if (!cancels_.empty()) {
      cancel_pending();
    }
    if (!rearm_.empty()) {
      rearm_pending();
    }
    if (!wake_armed_) {
      arm_wake();
    }

    // A CQE wakes the wait even when it turns out stale (the -ECANCELED of a removed
    // registration, a failed POLL_REMOVE). epoll_wait would have kept waiting, so a wait that
    // produced nothing but such CQEs is resumed for the rest of the timeout.
    std::chrono::steady_clock::time_point deadline;
    if (timeout_ms > 0) {
      deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    }
    for (;;) {
      if (std::error_code ec = enter(timeout_ms)) {
        return -ec.value();  // a system error (errno) from io_uring_enter
      }
      bool woke = false;
      const bool reaped_any = reap(woke);
      // Nothing completed although the wait asked for a completion, before its timeout: a
      // signal handler ended it. io_uring_enter() reports EINTR then, or, when it submitted
      // SQEs, their count (see backend.h, interrupted()).
      if (!reaped_any && timeout_ms != 0 &&
          (eintr_ || timeout_ms < 0 || std::chrono::steady_clock::now() < deadline)) [[unlikely]] {
        return interrupted(timeout_ms);
      }
      // A wake-up alone ends the wait only if it still has a reason (see stale_wake()).
      if (batch_size_ != 0 || (woke && !stale_wake()) || !reaped_any || timeout_ms == 0) {
        break;
      }
      // Registrations the kernel cancelled (a -ECANCELED that is not ours) must be armed
      // before the wait resumes: re-armed only at the next round, they would miss what
      // arrives meanwhile, and a wait without a timeout would never end.
      if (!rearm_.empty()) {
        rearm_pending();
      }
      if (!wake_armed_) {
        arm_wake();  // a stale wake-up may have ended the multishot
      }
      if (timeout_ms > 0) {
        // Rounded up, as the first wait's whole milliseconds were: truncated, the resumed
        // wait ended up to a millisecond before the caller's timeout.
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
          break;
        }
        timeout_ms = static_cast<int>(left.count());
      }
    }

    std::ptrdiff_t ran = 0;
    for (std::size_t i = 0; i < batch_size_; ++i) {
      const ready& r = batch_[i];
      // A callback earlier in the batch may have removed (and freed) this one: its
      // registration id moved on then. A modify() does not drop the fetched event (epoll
      // delivers it too). Looked up afresh: slots_ may have grown.
      const slot& s = slots_[r.index];
      if (s.reg != r.reg || s.att == nullptr) {
        continue;
      }
      ++ran;
      if (dispatch_attachment(s.att, r.bits)) {
        request_stop(std::memory_order_relaxed);  // ends the round
      }
    }
    const std::size_t cap = next_capacity(capacity_, batch_size_);
    if (cap != capacity_) {
      // A fresh vector, as epoll.cc's event array: it follows the capacity both ways, so memory
      // is that of the rounds seen, not of max_events (which may be up to INT_MAX).
      std::vector<ready>(cap).swap(batch_);
      capacity_ = cap;
    }
    return ran;
  }

  // Queues a POLL_ADD for every registration in rearm_ still waiting for one (level ones that
  // fired, multishots the kernel ended, requests it cancelled); they go out with the next
  // io_uring_enter.
  void rearm_pending() {
    std::vector<std::uint64_t> batch;
    batch.swap(rearm_);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const std::uint64_t tag = batch[i];
      const auto index = static_cast<std::uint32_t>(tag);
      if (index < slots_.size() && slots_[index].gen == static_cast<std::uint32_t>(tag >> 32) &&
          slots_[index].att != nullptr && !slots_[index].armed && arm(index)) {
        // The SQ is full and the kernel will not take more now: the rest waits a round.
        rearm_.insert(rearm_.end(), batch.begin() + static_cast<std::ptrdiff_t>(i), batch.end());
        break;
      }
    }
    batch.clear();
    if (rearm_.empty()) {
      rearm_.swap(batch);  // keep the capacity
    }
  }

  // Queues the POLL_REMOVEs that remove() could not (see there); what still finds no room waits
  // for the next round.
  void cancel_pending() noexcept {
    std::size_t done = 0;
    for (; done < cancels_.size(); ++done) {
      std::error_code ec;
      io_uring_sqe* sqe = next_sqe(ec);
      if (sqe == nullptr) {
        break;
      }
      sqe->opcode = IORING_OP_POLL_REMOVE;
      sqe->fd = -1;
      sqe->addr = cancels_[done];
      sqe->user_data = kIgnoreTag;
      if (cqe_skip_) {
        sqe->flags = IOSQE_CQE_SKIP_SUCCESS;
      }
    }
    cancels_.erase(cancels_.begin(), cancels_.begin() + static_cast<std::ptrdiff_t>(done));
  }

  // Submits every queued SQE and waits up to timeout_ms (-1: forever, 0: not at all) for a
  // completion, in one io_uring_enter.
  std::error_code enter(int timeout_ms) noexcept {
    const unsigned to_submit = sq_tail_ - load_acquire(sq_khead_);
    store_release(sq_ktail_, sq_tail_);
    unsigned flags = IORING_ENTER_GETEVENTS;
    unsigned min_complete = timeout_ms == 0 ? 0 : 1;
    getevents_arg arg{};
    kernel_timespec ts{};
    const void* argp = nullptr;
    std::size_t argsz = 0;
    eintr_ = false;
    if (timeout_ms > 0) {
      ts.tv_sec = timeout_ms / 1000;
      ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000;
      arg.ts = reinterpret_cast<std::uint64_t>(&ts);
      flags |= IORING_ENTER_EXT_ARG;
      argp = &arg;
      argsz = sizeof arg;
    }
    // Nothing to wait for when completions are already queued (a round that hit the event
    // array's limit leaves the rest in the CQ).
    if (load_acquire(cq_ktail_) != *cq_khead_) {
      min_complete = 0;
    }
    if (sys_io_uring_enter(ring_fd_, to_submit, min_complete, flags, argp, argsz) < 0) {
      const int err = errno;
      // EINTR: a signal; ETIME: the timeout passed; EBUSY/EAGAIN: the kernel holds overflowed
      // CQEs or is short of memory for a moment. All are empty waits; the CQ is read anyway.
      if (err != EINTR && err != ETIME && err != EBUSY && err != EAGAIN) {
        return {err, std::system_category()};
      }
      eintr_ = err == EINTR;
    }
    return {};
  }

  // Moves this round's CQEs into batch_. Returns whether any CQE was consumed; sets `woke` when
  // one was the wake-up eventfd's.
  bool reap(bool& woke) noexcept {
    // Reap first, dispatch second, as epoll_wait fills its array before any callback runs.
    // Several CQEs of one registration in one round (a multishot posts one per wake-up, e.g. a
    // peer draining our send buffer in many reads) are merged into one entry with the bits
    // OR-ed, so a callback runs at most once per registration per round, as with epoll. At
    // most capacity_ registrations are gathered, like epoll's maxevents; the rest stay queued
    // in the CQ for the next round. Wake-up, ignored and stale CQEs take no room.
    ++round_;
    batch_size_ = 0;
    const unsigned start = *cq_khead_;
    unsigned head = start;
    const std::size_t nslots = slots_.size();
    std::size_t gathered = 0;
    while (gathered < capacity_) {
      if (head == load_acquire(cq_ktail_)) {
        break;
      }
      const io_uring_cqe cqe = cqes_[head & cq_mask_];
      ++head;
      if (cqe.user_data == kWakeTag) {
        if ((cqe.flags & IORING_CQE_F_MORE) == 0) {
          wake_armed_ = false;
        }
        on_wake();
        woke = true;
        continue;
      }
      if (cqe.user_data == kIgnoreTag) {
        continue;
      }
      const auto index = static_cast<std::uint32_t>(cqe.user_data);
      const auto gen = static_cast<std::uint32_t>(cqe.user_data >> 32);
      if (index >= nslots) {
        continue;
      }
      slot& s = slots_[index];
      if (s.gen != gen || s.att == nullptr) {
        continue;  // stale: removed or modified since
      }
      std::uint32_t bits;
      if (cqe.res == -ECANCELED) {
        // Not ours (our cancels made the CQE stale above): the kernel ended the request, as
        // it does for every request of a thread that exits — one submitted by a set-up
        // thread (remove() or a full SQ flushes outside the loop). Nothing fired: arm it
        // again, from the loop thread, whatever its mode, and report nothing.
        s.armed = false;
        rearm_.push_back(cqe.user_data);
        continue;
      }
      if (cqe.res < 0) {
        // The kernel could not poll the file (or cancelled the request on its own). The
        // registration stays disarmed; the caller hears about it as an error condition.
        s.armed = false;
        bits = io_event::error;
      } else {
        s.armed = (cqe.flags & IORING_CQE_F_MORE) != 0;
        bits = io_bits(static_cast<std::uint32_t>(cqe.res));
        if (!s.armed && s.mode != trigger_mode::oneshot) {
          rearm_.push_back(cqe.user_data);
        }
      }
      if (s.batch_round == round_) {
        batch_[s.batch_pos].bits |= bits;
      } else {
        s.batch_round = round_;
        s.batch_pos = static_cast<std::uint32_t>(gathered);
        batch_[gathered++] = ready{index, s.reg, bits};
      }
    }
    // Hand the entries back before any callback runs: a callback's flush (SQ full) may need
    // the room.
    batch_size_ = gathered;
    store_release(cq_khead_, head);
    return head != start;
  }

  // Entries of the batch are checked against their slot's generation right before their
  // callback, so a registration removed inside a callback is never reached by a later entry of
  // the same batch: nothing to blank here.
  void invalidate(const poll_attachment&) noexcept override {}

  void wake() noexcept override {
    // The eventfd is polled by a multishot (edge) request, so every write produces one CQE and
    // the loop never reads it back: one system call per wake-up, as with epoll.
    const std::uint64_t one = 1;
    const int saved = errno;  // may run in a signal handler
    [[maybe_unused]] ssize_t r = ::write(wakefd_, &one, sizeof one);
    errno = saved;
  }

  void close_kernel() noexcept override {
    // Closing the ring cancels every request and drops the file references they hold.
    if (sqes_ != nullptr) {
      ::munmap(sqes_, sqes_size_);
    }
    if (cq_ring_ != nullptr && cq_ring_ != sq_ring_) {
      ::munmap(cq_ring_, cq_ring_size_);
    }
    if (sq_ring_ != nullptr) {
      ::munmap(sq_ring_, sq_ring_size_);
    }
    sqes_ = nullptr;
    cq_ring_ = sq_ring_ = nullptr;
    if (ring_fd_ >= 0) {
      ::close(ring_fd_);
    }
    ring_fd_ = -1;
    for (slot& s : slots_) {
      if (s.twin >= 0) {
        ::close(s.twin);
      }
    }
    slots_.clear();
    by_fd_.clear();
    rearm_.clear();
    cancels_.clear();
    batch_size_ = 0;
    free_ = kNoSlot;
  }

  std::size_t event_capacity() const noexcept override { return capacity_; }

 private:
  struct fd_entry {
    std::uint32_t index = kNoSlot;
    dev_t dev = 0;
    ino_t ino = 0;
  };

  // The ring indexes are shared with the kernel: acquire what it published, release ours.
  static unsigned load_acquire(const unsigned* p) noexcept {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
  }
  static void store_release(unsigned* p, unsigned v) noexcept {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
  }

  std::uint32_t allocate() {
    if (free_ != kNoSlot) {
      const std::uint32_t index = free_;
      free_ = slots_[index].next_free;
      return index;
    }
    slots_.emplace_back();
    return static_cast<std::uint32_t>(slots_.size() - 1);
  }

  // Frees the slot for reuse. Its generation was bumped by disarm() (or is bumped here), so any
  // CQE still in flight for it is stale; a reused slot starts from the next generation.
  void release(std::uint32_t index, int fd) noexcept {
    slot& s = slots_[index];
    s.att = nullptr;
    if (s.twin >= 0) {
      ::close(s.twin);
      s.twin = -1;
    }
    s.armed = false;
    ++s.gen;
    ++s.reg;
    s.next_free = free_;
    free_ = index;
    const auto f = static_cast<std::size_t>(fd);
    if (fd >= 0 && f < by_fd_.size() && by_fd_[f].index == index) {
      by_fd_[f] = fd_entry{};
    }
  }

  // Whether `fd` is the open file `twin` duplicates (kcmp). Where kcmp is missing or refused
  // (a seccomp profile), and without a twin, it cannot tell and says no: a new file at a
  // reused number must not be refused, while a second registration of one file is a mistake
  // epoll would catch, harmless here (two slots, both reporting).
  static bool same_file(int twin, int fd) noexcept {
    if (twin < 0) {
      return false;
    }
    const pid_t self = ::getpid();
    return ::syscall(SYS_kcmp, self, self, KCMP_FILE, twin, fd) == 0;
  }

  std::uint32_t find(const poll_attachment& a) const noexcept {
    const auto f = static_cast<std::size_t>(a.fd);
    if (a.fd >= 0 && f < by_fd_.size()) {
      const std::uint32_t index = by_fd_[f].index;
      if (index != kNoSlot && slots_[index].att == &a) {
        return index;
      }
    }
    // The fd number was reused by a newer registration (see add()): look the slow way.
    for (std::uint32_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].att == &a) {
        return i;
      }
    }
    return kNoSlot;
  }

  // Queues a POLL_ADD for the slot under a new generation.
  std::error_code arm(std::uint32_t index) noexcept {
    std::error_code ec;
    io_uring_sqe* sqe = next_sqe(ec);
    if (sqe == nullptr) {
      return ec;
    }
    slot& s = slots_[index];
    ++s.gen;
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = s.att->fd;
    sqe->poll32_events = poll_events(s.mask);
    sqe->len = s.mode == trigger_mode::edge ? IORING_POLL_ADD_MULTI : 0;
    sqe->user_data = make_tag(index, s.gen);
    s.armed = true;
    return {};
  }

  // Queues a POLL_REMOVE for the slot's live request, if any, and makes its CQEs stale.
  std::error_code disarm(std::uint32_t index) noexcept {
    slot& s = slots_[index];
    if (s.armed) {
      std::error_code ec;
      io_uring_sqe* sqe = next_sqe(ec);
      if (sqe == nullptr) {
        return ec;
      }
      sqe->opcode = IORING_OP_POLL_REMOVE;
      sqe->fd = -1;
      sqe->addr = make_tag(index, s.gen);
      sqe->user_data = kIgnoreTag;
      // Success needs no CQE; a failure (ENOENT: a single-shot that already fired) is ignored.
      if (cqe_skip_) {
        sqe->flags = IOSQE_CQE_SKIP_SUCCESS;
      }
      s.armed = false;
    }
    ++s.gen;
    return {};
  }

  void arm_wake() noexcept {
    std::error_code ec;
    io_uring_sqe* sqe = next_sqe(ec);
    if (sqe == nullptr) {
      return;  // tried again next round
    }
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = wakefd_;
    sqe->poll32_events = poll_events(POLLIN);
    sqe->len = IORING_POLL_ADD_MULTI;
    sqe->user_data = kWakeTag;
    wake_armed_ = true;
  }

  // Makes sure `n` SQEs can be queued without a flush in between: flushes if fewer entries are
  // free, and fails with EAGAIN (nothing queued) if the kernel still does not take them.
  std::error_code reserve(unsigned n) noexcept {
    if (sq_entries_ - (sq_tail_ - load_acquire(sq_khead_)) >= n) {
      return {};
    }
    if (std::error_code ec = flush()) {
      return ec;
    }
    if (sq_entries_ - (sq_tail_ - load_acquire(sq_khead_)) < n) {
      return std::make_error_code(std::errc::resource_unavailable_try_again);
    }
    return {};
  }

  // A zeroed SQE at the tail, flushing the queue first when it is full (a burst of add()s, or
  // many level re-arms): the only case where a round costs more than one io_uring_enter.
  io_uring_sqe* next_sqe(std::error_code& ec) noexcept {
    if (sq_tail_ - load_acquire(sq_khead_) >= sq_entries_) {
      ec = flush();
      if (ec) {
        return nullptr;
      }
      if (sq_tail_ - load_acquire(sq_khead_) >= sq_entries_) {
        ec = std::make_error_code(std::errc::resource_unavailable_try_again);
        return nullptr;  // the kernel would not take them (CQ backlog); try next round
      }
    }
    io_uring_sqe* sqe = &sqes_[sq_tail_ & sq_mask_];
    std::memset(sqe, 0, sizeof *sqe);
    ++sq_tail_;
    return sqe;
  }

  // Submits queued SQEs without waiting.
  std::error_code flush() noexcept {
    for (;;) {
      const unsigned pending = sq_tail_ - load_acquire(sq_khead_);
      if (pending == 0) {
        return {};
      }
      store_release(sq_ktail_, sq_tail_);
      if (sys_io_uring_enter(ring_fd_, pending, 0, 0, nullptr, 0) < 0) {
        if (errno == EINTR) {
          continue;
        }
        // EBUSY/EAGAIN: the CQ backlog is full; the SQEs stay queued for the next round.
        if (errno == EBUSY || errno == EAGAIN) {
          return {};
        }
        return {errno, std::system_category()};
      }
    }
  }

  int ring_fd_ = -1;
  int wakefd_;
  dev_t wake_dev_ = 0;  // the wake-up eventfd's device and inode: the anonymous inode's
  ino_t wake_ino_ = 0;
  bool wake_armed_ = false;
  bool eintr_ = false;  // the last io_uring_enter() was interrupted by a signal handler
  bool cqe_skip_ = false;
  bool single_mmap_ = false;

  void* sq_ring_ = nullptr;
  void* cq_ring_ = nullptr;
  std::size_t sq_ring_size_ = 0;
  std::size_t cq_ring_size_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  std::size_t sqes_size_ = 0;
  unsigned* sq_khead_ = nullptr;
  unsigned* sq_ktail_ = nullptr;
  unsigned sq_mask_ = 0;
  unsigned sq_entries_ = 0;
  unsigned sq_tail_ = 0;  // local tail, published to the kernel by enter/flush
  unsigned* cq_khead_ = nullptr;
  unsigned* cq_ktail_ = nullptr;
  unsigned cq_mask_ = 0;
  io_uring_cqe* cqes_ = nullptr;

  std::size_t capacity_;  // CQEs handled per round: the "event array" of this backend
  std::vector<slot> slots_;
  std::uint32_t free_ = kNoSlot;
  std::vector<fd_entry> by_fd_;         // fd → its current slot (epoll's one-registration-per-fd)
  std::vector<std::uint64_t> rearm_;    // tags to arm again at the next round
  std::vector<std::uint64_t> cancels_;  // tags of requests still to cancel (see remove())
  // This round's ready registrations: batch_[0, batch_size_). Sized to capacity_ between
  // rounds (never beyond), so gathering never reallocates.
  std::vector<ready> batch_;
  std::size_t batch_size_ = 0;
  std::uint64_t round_ = 0;
};

}  // namespace

result<std::unique_ptr<poller_backend>> make_io_uring_backend(const poller_options& options) {
  const int wakefd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakefd < 0) {
    return std::error_code(errno, std::system_category());
  }
  auto backend = std::make_unique<io_uring_backend>(options, wakefd);
  if (std::error_code ec = backend->setup()) {
    return ec;
  }
  return std::unique_ptr<poller_backend>(std::move(backend));
}

}  // namespace evnet::detail

#else  // no <linux/io_uring.h>

namespace evnet::detail {
result<std::unique_ptr<poller_backend>> make_io_uring_backend(const poller_options&) {
  return errc::unsupported;
}
}  // namespace evnet::detail

#endif
