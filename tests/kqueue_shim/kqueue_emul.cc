// A user-space kqueue()/kevent() for Linux, built over epoll, so that src/poller/kqueue.cc can
// run in this project's Linux CI (tests/poller_kqueue.cmake). Test code only: it is linked into
// the kqueue variants of the poller test executables, never into the library.
//
// It implements what FreeBSD's kqueue(2) documents for the features kqueue.cc uses, as far as
// epoll lets it:
//  - knotes keyed by (ident, filter); EVFILT_READ and EVFILT_WRITE on one descriptor are
//    independent: each filter has its own epoll registration, in an inner epoll instance per
//    filter (ep_[kRead], ep_[kWrite]), so each has its own trigger mode (EV_CLEAR = EPOLLET,
//    otherwise level) and its own enabled state. Keyed wake-ups keep a data arrival from
//    waking the write filter and vice versa. Both inner instances and the EVFILT_USER eventfd
//    are registered level-triggered in the outer epoll instance, which is the kqueue
//    descriptor itself (so close() on it works as it does on a kqueue).
//  - EV_ADD (on an existing knote: updates udata and keeps the flags it was created with, as
//    kqueue does), EV_DELETE, EV_ENABLE, EV_DISABLE; EV_ADD and EV_ENABLE re-evaluate the
//    filter, so pending readiness is reported again (epoll re-polls on ADD/MOD).
//  - EV_DISPATCH: a delivered knote is disabled (its registration deleted) until EV_ENABLE.
//    EV_ONESHOT: a delivered knote is deleted.
//  - EV_RECEIPT and errors: a change that fails, or any change with EV_RECEIPT, produces an
//    EV_ERROR entry with data = errno (0 on success) while there is room in the event list, and
//    kevent() then returns those entries without waiting; a failed change with no room left makes
//    kevent() fail with that errno. Errors: ENOENT (no such knote), EBADF (bad descriptor),
//    EINVAL (unknown filter), and what epoll_ctl says (EPERM for a regular file).
//  - EV_EOF: on EVFILT_READ when epoll reports EPOLLRDHUP or EPOLLHUP (the peer shut down its
//    write side, or a pipe lost its writer); on EVFILT_WRITE when epoll reports EPOLLHUP (both
//    directions gone) or, for a non-socket, EPOLLERR (a pipe lost its reader). On a socket with
//    EPOLLERR the entry also carries a non-zero fflags (see "not modelled" for its value).
//    EVFILT_READ's data is the number of bytes readable (FIONREAD) on sockets and pipes.
//  - EVFILT_USER (not in the EVNET_KQUEUE_SHIM_NO_USER build): knotes in a small fixed table,
//    triggered with NOTE_TRIGGER through an eventfd; EV_CLEAR resets the triggered state on
//    delivery. A change that only triggers takes no lock and allocates nothing, so kevent() may be
//    called from a signal handler or any thread for it, as with a real kqueue.
//  - fault injection for tests (not a kqueue feature): kqueue_emul_fail_change(nth, err) makes
//    the nth EVFILT_READ/EVFILT_WRITE change from then on (in any kqueue) fail with err, leaving
//    its knote as it was; the changes around it in the same call are applied as usual. And
//    kqueue_emul_before_wait(fn, arg): fn(arg) runs on the calling thread as each kevent() call
//    that collects events starts its wait (after its changes), until it is set back to null.
//  - timeouts: NULL blocks, a zero timespec polls, others wait (rounded up to milliseconds);
//    a wait that is woken only by events that turn out to be stale goes on waiting for the rest
//    of the timeout. A signal interrupts the wait with EINTR.
//  - a closed descriptor loses its knotes, as kqueue drops them at close(): epoll forgets a
//    closed file by itself, and the emulation notices at the next change for that descriptor
//    number (fstat fails; the number now names a different file (device/inode); or
//    EPOLL_CTL_ADD succeeds where the knote's registration should have made it fail with
//    EEXIST). Events are tagged with a generation number so a stale registration is ignored.
//
// Not modelled (so tests cannot vouch for these on a real kqueue):
//  - regular files, vnodes, EVFILT_TIMER/SIGNAL/PROC/VNODE, NOTE_LOWAT, EVFILT_USER's fflags
//    arithmetic (NOTE_FFAND...), more than kUserSlots EVFILT_USER knotes per kqueue;
//  - EV_EOF on the write filter after our own shutdown(SHUT_WR) alone (Linux still reports
//    EPOLLOUT, FreeBSD sets EV_EOF); EVFILT_WRITE's data (send-buffer space) is always 0;
//  - the real socket error in fflags: Linux only hands it out by consuming it (SO_ERROR clears
//    it), which would steal it from the program, so fflags is EIO, standing for "an error is
//    pending";
//  - a descriptor closed while a dup() of it stays open: epoll keeps that registration, kqueue
//    would drop the knote; an anonymous-inode descriptor (eventfd) closed while its knotes are all
//    disabled and its number reused is not noticed (its device/inode are shared);
//  - the emulated kqueue's state is released when its descriptor number is reused by a later
//    kqueue() call (close() itself cannot be observed), and kqueue descriptors are limited to
//    numbers below kMaxKqueues;
//  - ordering: events come grouped by filter, not in kqueue's activation order.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/event.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <unordered_map>

namespace {

constexpr int kMaxKqueues = 1 << 16;
constexpr int kUserSlots = 8;
constexpr int kRead = 0;
constexpr int kWrite = 1;
// Outer-epoll tags: which inner source became ready.
constexpr std::uint64_t kTagRead = 0;
constexpr std::uint64_t kTagWrite = 1;
constexpr std::uint64_t kTagUser = 2;
constexpr unsigned short kKeptFlags = EV_CLEAR | EV_DISPATCH | EV_ONESHOT;
// The fflags reported with EV_EOF when a socket has an error pending (see "not modelled").
constexpr unsigned kPendingErrorFflags = EIO;

struct fd_knote {
  bool present = false;
  bool enabled = false;
  bool registered = false;  // in ep_[filter]
  unsigned short flags = 0;
  void* udata = nullptr;
};

struct fd_entry {
  fd_knote kn[2];
  dev_t dev = 0;
  ino_t ino = 0;
  mode_t type = 0;
  std::uint32_t gen = 0;
};

// An EVFILT_USER knote. Every field is atomic because NOTE_TRIGGER touches the table without
// the lock (possibly from a signal handler); EV_ADD/EV_DELETE/delivery change it under the lock.
struct user_knote {
  std::atomic<bool> in_use{false};
  std::atomic<std::uintptr_t> ident{0};
  std::atomic<bool> enabled{false};
  std::atomic<bool> triggered{false};
  std::atomic<unsigned short> flags{0};
  std::atomic<void*> udata{nullptr};
};

struct kq_state {
  int epfd = -1;  // the kqueue descriptor handed out
  int ep[2] = {-1, -1};
  int efd = -1;
  std::mutex mu;
  std::unordered_map<int, fd_entry> fds;  // guarded by mu
  std::uint32_t next_gen = 1;             // guarded by mu
  bool read_first = true;                 // guarded by mu: alternates which filter is read first
  std::array<user_knote, kUserSlots> users;

  ~kq_state() {
    for (int fd : {ep[kRead], ep[kWrite], efd}) {
      if (fd >= 0) {
        ::close(fd);
      }
    }
  }
};

std::array<std::atomic<kq_state*>, kMaxKqueues> g_kqueues{};

int filter_index(short filter) {
  return filter == EVFILT_READ ? kRead : kWrite;
}

std::uint64_t make_data(int fd, std::uint32_t gen) {
  return (static_cast<std::uint64_t>(gen) << 32) | static_cast<std::uint32_t>(fd);
}

std::uint32_t filter_mask(int f, const fd_knote& kn) {
  std::uint32_t ev = f == kRead ? (EPOLLIN | EPOLLRDHUP) : EPOLLOUT;
  if ((kn.flags & EV_CLEAR) != 0) {
    ev |= EPOLLET;
  }
  return ev;
}

// Brings filter f's epoll registration in line with its knote: registered iff present and
// enabled. `reevaluate` re-polls an already registered descriptor (EV_ADD/EV_ENABLE semantics).
// Returns 0 or the errno of epoll_ctl.
int sync_registration(kq_state& st, int fd, fd_entry& e, int f, bool reevaluate) {
  fd_knote& kn = e.kn[f];
  const bool want = kn.present && kn.enabled;
  epoll_event ev{};
  ev.events = filter_mask(f, kn);
  ev.data.u64 = make_data(fd, e.gen);
  if (!want) {
    if (kn.registered) {
      (void)::epoll_ctl(st.ep[f], EPOLL_CTL_DEL, fd, &ev);
      kn.registered = false;
    }
    return 0;
  }
  if (!kn.registered) {
    if (::epoll_ctl(st.ep[f], EPOLL_CTL_ADD, fd, &ev) != 0) {
      return errno;
    }
    kn.registered = true;
    return 0;
  }
  if (reevaluate && ::epoll_ctl(st.ep[f], EPOLL_CTL_MOD, fd, &ev) != 0) {
    return errno;
  }
  return 0;
}

void drop_entry(kq_state& st, int fd) {
  auto it = st.fds.find(fd);
  if (it == st.fds.end()) {
    return;
  }
  for (int f : {kRead, kWrite}) {
    if (it->second.kn[f].registered) {
      epoll_event ev{};
      (void)::epoll_ctl(st.ep[f], EPOLL_CTL_DEL, fd, &ev);  // fails harmlessly if stale
    }
  }
  st.fds.erase(it);
}

// Drops the knotes of `fd` if the descriptor number no longer names the file they were made for
// (kqueue removed them when that file's descriptor was closed).
void forget_if_stale(kq_state& st, int fd, const struct stat& sb) {
  auto it = st.fds.find(fd);
  if (it == st.fds.end()) {
    return;
  }
  fd_entry& e = it->second;
  bool stale = e.dev != sb.st_dev || e.ino != sb.st_ino || e.type != (sb.st_mode & S_IFMT);
  for (int f : {kRead, kWrite}) {
    if (!stale && e.kn[f].registered) {
      // EEXIST proves the registration is still there for this very file. Success means epoll
      // had forgotten it (the file was closed): undo the probe and forget the knotes.
      epoll_event ev{};
      ev.events = filter_mask(f, e.kn[f]);
      ev.data.u64 = make_data(fd, e.gen);
      if (::epoll_ctl(st.ep[f], EPOLL_CTL_ADD, fd, &ev) == 0) {
        (void)::epoll_ctl(st.ep[f], EPOLL_CTL_DEL, fd, &ev);
        e.kn[f].registered = false;
        stale = true;
      }
    }
  }
  if (stale) {
    drop_entry(st, fd);
  }
}

// Fault injection (kqueue_emul_fail_change()): the countdown to the EVFILT_READ/EVFILT_WRITE
// change that fails, and its errno.
std::atomic<int> g_fail_countdown{0};
std::atomic<int> g_fail_errno{0};
// kqueue_emul_before_wait(): called on the waiting thread as a kevent() call starts its wait.
std::atomic<void (*)(void*)> g_before_wait{nullptr};
std::atomic<void*> g_before_wait_arg{nullptr};

// One EVFILT_READ/EVFILT_WRITE change, under st.mu. Returns 0 or an errno.
int change_fd_filter(kq_state& st, const struct kevent& kev) {
  if (g_fail_countdown.load(std::memory_order_relaxed) > 0 &&
      g_fail_countdown.fetch_sub(1, std::memory_order_relaxed) == 1) {
    return g_fail_errno.load(std::memory_order_relaxed);  // injected: nothing changed
  }
  if (kev.ident > static_cast<std::uintptr_t>(INT_MAX)) {
    return EBADF;
  }
  const int fd = static_cast<int>(kev.ident);
  const int f = filter_index(kev.filter);
  struct stat sb {};
  if (::fstat(fd, &sb) != 0) {
    drop_entry(st, fd);  // closed: kqueue would have dropped its knotes
    return EBADF;
  }
  forget_if_stale(st, fd, sb);
  auto it = st.fds.find(fd);
  fd_knote* kn = it != st.fds.end() && it->second.kn[f].present ? &it->second.kn[f] : nullptr;

  if ((kev.flags & EV_DELETE) != 0) {
    if (kn == nullptr) {
      return ENOENT;
    }
    kn->present = false;
    (void)sync_registration(st, fd, it->second, f, false);
    *kn = fd_knote{};
    if (!it->second.kn[kRead].present && !it->second.kn[kWrite].present) {
      st.fds.erase(it);
    }
    return 0;
  }

  bool created = false;
  if ((kev.flags & EV_ADD) != 0) {
    if (it == st.fds.end()) {
      fd_entry e;
      e.dev = sb.st_dev;
      e.ino = sb.st_ino;
      e.type = sb.st_mode & S_IFMT;
      e.gen = st.next_gen++;
      it = st.fds.emplace(fd, e).first;
    }
    kn = &it->second.kn[f];
    if (!kn->present) {
      created = true;
      kn->present = true;
      kn->enabled = true;
      kn->flags = kev.flags & kKeptFlags;
    }
    kn->udata = kev.udata;
  } else if (kn == nullptr) {
    return ENOENT;
  }
  if ((kev.flags & EV_ENABLE) != 0) {
    kn->enabled = true;
  } else if ((kev.flags & EV_DISABLE) != 0) {
    kn->enabled = false;
  }
  const bool reevaluate = (kev.flags & (EV_ADD | EV_ENABLE)) != 0;
  const int err = sync_registration(st, fd, it->second, f, reevaluate);
  if (err != 0 && created) {
    *kn = fd_knote{};
    if (!it->second.kn[kRead].present && !it->second.kn[kWrite].present) {
      st.fds.erase(it);
    }
  }
  return err;
}

#if defined(EVFILT_USER)
user_knote* find_user(kq_state& st, std::uintptr_t ident) {
  for (user_knote& u : st.users) {
    if (u.in_use.load(std::memory_order_acquire) &&
        u.ident.load(std::memory_order_acquire) == ident) {
      return &u;
    }
  }
  return nullptr;
}

void trigger_user(kq_state& st, user_knote& u) {
  u.triggered.store(true, std::memory_order_seq_cst);
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(st.efd, &one, sizeof one);
}

bool is_pure_trigger(const struct kevent& kev) {
  return kev.filter == EVFILT_USER &&
         (kev.flags & (EV_ADD | EV_DELETE | EV_ENABLE | EV_DISABLE)) == 0;
}

// A change that only triggers (or does nothing): no lock, no allocation; async-signal-safe.
int change_user_lock_free(kq_state& st, const struct kevent& kev) {
  user_knote* u = find_user(st, kev.ident);
  if (u == nullptr) {
    return ENOENT;
  }
  if ((kev.fflags & NOTE_TRIGGER) != 0) {
    trigger_user(st, *u);
  }
  return 0;
}

// Any other EVFILT_USER change, under st.mu.
int change_user(kq_state& st, const struct kevent& kev) {
  user_knote* u = find_user(st, kev.ident);
  if ((kev.flags & EV_DELETE) != 0) {
    if (u == nullptr) {
      return ENOENT;
    }
    u->in_use.store(false, std::memory_order_release);
    u->triggered.store(false);
    return 0;
  }
  if ((kev.flags & EV_ADD) != 0) {
    if (u == nullptr) {
      for (user_knote& slot : st.users) {
        if (!slot.in_use.load()) {
          u = &slot;
          break;
        }
      }
      if (u == nullptr) {
        return ENOMEM;  // more EVFILT_USER knotes than this emulation holds
      }
      u->ident.store(kev.ident);
      u->flags.store(kev.flags & kKeptFlags);
      u->enabled.store(true);
      u->triggered.store(false);
      u->udata.store(kev.udata);
      u->in_use.store(true, std::memory_order_release);
    } else {
      u->udata.store(kev.udata);
    }
  } else if (u == nullptr) {
    return ENOENT;
  }
  if ((kev.flags & EV_ENABLE) != 0) {
    u->enabled.store(true);
  } else if ((kev.flags & EV_DISABLE) != 0) {
    u->enabled.store(false);
  }
  if ((kev.fflags & NOTE_TRIGGER) != 0) {
    trigger_user(st, *u);
  } else if (u->enabled.load() && u->triggered.load()) {
    // Still active (no EV_CLEAR, or re-enabled): make the next wait see it.
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(st.efd, &one, sizeof one);
  }
  return 0;
}
#endif

// Reports the filter f events fetched from ep_[f] into out[0..room); returns the count.
int harvest_filter(kq_state& st, int f, struct kevent* out, int room) {
  constexpr int kChunk = 256;
  epoll_event evs[kChunk];
  int n = 0;
  while (n < room) {
    const int want = std::min(room - n, kChunk);
    const int got = ::epoll_wait(st.ep[f], evs, want, 0);
    if (got <= 0) {
      break;
    }
    for (int i = 0; i < got; ++i) {
      const int fd = static_cast<int>(evs[i].data.u64 & 0xffffffffU);
      const auto gen = static_cast<std::uint32_t>(evs[i].data.u64 >> 32);
      auto it = st.fds.find(fd);
      if (it == st.fds.end() || it->second.gen != gen || !it->second.kn[f].registered) {
        continue;  // stale: a registration of a file closed behind our back
      }
      fd_entry& e = it->second;
      fd_knote& kn = e.kn[f];
      const std::uint32_t r = evs[i].events;
      const bool socket = e.type == S_IFSOCK;
      struct kevent& k = out[n];
      k = {};
      k.ident = static_cast<std::uintptr_t>(fd);
      k.filter = f == kRead ? EVFILT_READ : EVFILT_WRITE;
      k.flags = kn.flags;
      k.udata = kn.udata;
      bool eof = false;
      if (f == kRead) {
        eof = (r & (EPOLLRDHUP | EPOLLHUP)) != 0;
        if (socket || e.type == S_IFIFO) {
          int avail = 0;
          if (::ioctl(fd, FIONREAD, &avail) == 0) {
            k.data = avail;
          }
        }
      } else {
        eof = (r & EPOLLHUP) != 0 || (!socket && (r & EPOLLERR) != 0);
      }
      if (eof) {
        k.flags |= EV_EOF;
        if (socket && (r & EPOLLERR) != 0) {
          k.fflags = kPendingErrorFflags;
        }
      }
      ++n;
      if ((kn.flags & EV_ONESHOT) != 0) {
        kn.present = false;
        (void)sync_registration(st, fd, e, f, false);
        kn = fd_knote{};
        if (!e.kn[kRead].present && !e.kn[kWrite].present) {
          st.fds.erase(it);
        }
      } else if ((kn.flags & EV_DISPATCH) != 0) {
        kn.enabled = false;
        (void)sync_registration(st, fd, e, f, false);
      }
    }
    if (got < want) {
      break;
    }
  }
  return n;
}

#if defined(EVFILT_USER)
bool user_pending(kq_state& st) {
  for (user_knote& u : st.users) {
    if (u.in_use.load() && u.enabled.load() && u.triggered.load()) {
      return true;
    }
  }
  return false;
}

int harvest_user(kq_state& st, struct kevent* out, int room) {
  std::uint64_t count = 0;
  [[maybe_unused]] ssize_t r = ::read(st.efd, &count, sizeof count);  // reset before the scan
  int n = 0;
  for (user_knote& u : st.users) {
    if (n == room) {
      // Left active: make the next wait see it.
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t w = ::write(st.efd, &one, sizeof one);
      break;
    }
    if (!u.in_use.load() || !u.enabled.load() || !u.triggered.load()) {
      continue;
    }
    struct kevent& k = out[n++];
    k = {};
    k.ident = u.ident.load();
    k.filter = EVFILT_USER;
    const unsigned short flags = u.flags.load();
    k.flags = flags;
    k.udata = u.udata.load();
    if ((flags & EV_CLEAR) != 0) {
      u.triggered.store(false);
    }
    if ((flags & EV_ONESHOT) != 0) {
      u.in_use.store(false, std::memory_order_release);
      u.triggered.store(false);
    } else if ((flags & EV_DISPATCH) != 0) {
      u.enabled.store(false);
    }
  }
  return n;
}
#endif

std::int64_t now_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

extern "C" void kqueue_emul_fail_change(int nth, int err) {
  g_fail_errno.store(err, std::memory_order_relaxed);
  g_fail_countdown.store(nth, std::memory_order_relaxed);
}

extern "C" void kqueue_emul_before_wait(void (*fn)(void*), void* arg) {
  g_before_wait_arg.store(arg, std::memory_order_relaxed);
  g_before_wait.store(fn, std::memory_order_release);
}

extern "C" int kqueue(void) {
  auto st = new (std::nothrow) kq_state;
  if (st == nullptr) {
    errno = ENOMEM;
    return -1;
  }
  st->epfd = ::epoll_create1(EPOLL_CLOEXEC);
  st->ep[kRead] = ::epoll_create1(EPOLL_CLOEXEC);
  st->ep[kWrite] = ::epoll_create1(EPOLL_CLOEXEC);
  st->efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  bool ok = st->epfd >= 0 && st->ep[kRead] >= 0 && st->ep[kWrite] >= 0 && st->efd >= 0 &&
            st->epfd < kMaxKqueues;
  const std::pair<int, std::uint64_t> sources[] = {
      {st->ep[kRead], kTagRead}, {st->ep[kWrite], kTagWrite}, {st->efd, kTagUser}};
  for (const auto& [fd, tag] : sources) {
    if (ok) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = tag;
      ok = ::epoll_ctl(st->epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
    }
  }
  if (!ok) {
    const int err = st->epfd >= kMaxKqueues ? EMFILE : errno;
    if (st->epfd >= 0) {
      ::close(st->epfd);
    }
    delete st;
    errno = err;
    return -1;
  }
  // The descriptor number may belong to an earlier emulated kqueue that was closed; its state
  // can be released now (nobody may use a closed kqueue descriptor any more).
  delete g_kqueues[st->epfd].exchange(st, std::memory_order_acq_rel);
  return st->epfd;
}

extern "C" int kevent(int kq, const struct kevent* changelist, int nchanges,
                      struct kevent* eventlist, int nevents, const struct timespec* timeout) {
  if (kq < 0 || kq >= kMaxKqueues) {
    errno = EBADF;
    return -1;
  }
  kq_state* const stp = g_kqueues[kq].load(std::memory_order_acquire);
  if (stp == nullptr) {
    errno = EBADF;
    return -1;
  }
  kq_state& st = *stp;
  if (nchanges < 0 || nevents < 0 || (nchanges > 0 && changelist == nullptr) ||
      (nevents > 0 && eventlist == nullptr)) {
    errno = EINVAL;
    return -1;
  }
  if (timeout != nullptr &&
      (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000L)) {
    errno = EINVAL;
    return -1;
  }

  // Changes, in order. The lock is taken only by a change that needs it, so a list that only
  // triggers EVFILT_USER knotes stays lock-free.
  std::unique_lock<std::mutex> lock(st.mu, std::defer_lock);
  int nerrors = 0;
  for (int i = 0; i < nchanges; ++i) {
    const struct kevent kev = changelist[i];  // a copy: the event list may alias the changes
    int err = 0;
#if defined(EVFILT_USER)
    if (is_pure_trigger(kev)) {
      err = change_user_lock_free(st, kev);
    } else
#endif
    {
      if (!lock.owns_lock()) {
        lock.lock();
      }
      if (kev.filter == EVFILT_READ || kev.filter == EVFILT_WRITE) {
        err = change_fd_filter(st, kev);
#if defined(EVFILT_USER)
      } else if (kev.filter == EVFILT_USER) {
        err = change_user(st, kev);
#endif
      } else {
        err = EINVAL;
      }
    }
    if (err != 0 || (kev.flags & EV_RECEIPT) != 0) {
      if (nevents == 0) {
        if (err != 0) {
          errno = err;
          return -1;
        }
        continue;
      }
      struct kevent& out = eventlist[nerrors++];
      out = kev;
      out.flags = EV_ERROR;
      out.data = err;
      --nevents;
    }
  }
  if (nerrors > 0) {
    return nerrors;  // as FreeBSD: error/receipt entries are returned without collecting events
  }
  if (nevents == 0) {
    return 0;
  }
  if (lock.owns_lock()) {
    lock.unlock();
  }

  int timeout_ms = -1;
  if (timeout != nullptr) {
    const std::int64_t ms = static_cast<std::int64_t>(timeout->tv_sec) * 1000 +
                            (timeout->tv_nsec + 999999) / 1000000;  // rounded up
    timeout_ms = static_cast<int>(std::min<std::int64_t>(ms, INT_MAX));
  }
  if (void (*fn)(void*) = g_before_wait.load(std::memory_order_acquire); fn != nullptr) {
    fn(g_before_wait_arg.load(std::memory_order_relaxed));
  }
  const std::int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
  for (;;) {
    int wait_ms = timeout_ms;
#if defined(EVFILT_USER)
    if (user_pending(st)) {
      wait_ms = 0;  // a level-triggered EVFILT_USER knote is still active
    }
#endif
    epoll_event ready[3];
    const int r = ::epoll_wait(st.epfd, ready, 3, wait_ms);
    if (r < 0) {
      return -1;  // errno from epoll_wait (EINTR on a signal)
    }
    bool src[3] = {false, false, false};
    for (int i = 0; i < r; ++i) {
      src[ready[i].data.u64] = true;
    }
    int n = 0;
    {
      std::lock_guard<std::mutex> guard(st.mu);
#if defined(EVFILT_USER)
      if (src[kTagUser] || user_pending(st)) {
        n += harvest_user(st, eventlist + n, nevents - n);
      }
#else
      if (src[kTagUser]) {
        std::uint64_t count = 0;
        [[maybe_unused]] ssize_t rd = ::read(st.efd, &count, sizeof count);
      }
#endif
      // Alternate which filter goes first, so a full event list of one filter cannot starve
      // the other.
      const int first = st.read_first ? kRead : kWrite;
      st.read_first = !st.read_first;
      for (int f : {first, 1 - first}) {
        if (src[f] && n < nevents) {
          n += harvest_filter(st, f, eventlist + n, nevents - n);
        }
      }
    }
    if (n > 0 || timeout_ms == 0) {
      return n;
    }
    if (timeout_ms > 0) {
      const std::int64_t left = deadline - now_ms();
      if (left <= 0) {
        return 0;
      }
      timeout_ms = static_cast<int>(left);
    }
  }
}
