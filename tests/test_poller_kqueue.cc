// The kqueue emulation over epoll (tests/kqueue_shim/kqueue_emul.cc), checked against the
// semantics kqueue(2) documents, so that the poller suites run against it can be trusted; and
// the kqueue side of the poller contracts that the shared suites check on epoll only (closed
// descriptors, a descriptor number reused after close). Built only into the kqueue test
// variants (tests/poller_kqueue.cmake); real descriptors throughout.
#include <sys/event.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <vector>

#include "poller_test_util.h"

namespace evnet::test {
namespace {

using namespace std::chrono_literals;

/// An emulated kqueue descriptor, closed on destruction.
struct kq_fd {
  fd_guard fd{::kqueue()};
  kq_fd() { EXPECT_GE(fd.get(), 0); }
  int get() const { return fd.get(); }
};

struct kevent make_kev(std::uintptr_t ident, short filter, unsigned short flags,
                       void* udata = nullptr, unsigned fflags = 0) {
  struct kevent k;
  EV_SET(&k, ident, filter, flags, fflags, 0, udata);
  return k;
}

/// Applies one change without a receipt; returns 0 or the errno kevent() failed with.
int change(int kq, struct kevent k) {
  return ::kevent(kq, &k, 1, nullptr, 0, nullptr) == 0 ? 0 : errno;
}

/// Collects events with a zero timeout.
std::vector<struct kevent> poll_events(int kq, int room = 16) {
  std::vector<struct kevent> out(static_cast<std::size_t>(room));
  const timespec zero{0, 0};
  const int n = ::kevent(kq, nullptr, 0, out.data(), room, &zero);
  EXPECT_GE(n, 0) << errno;
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

TEST(KqueueEmulation, receipt_reports_every_change_and_does_not_wait) {
  kq_fd kq;
  socket_pair sp;
  int closed = ::dup(sp.a.get());
  ::close(closed);
  write_byte(sp.b.get());  // readable: must not be collected by a call that returns receipts
  struct kevent changes[4] = {
      make_kev(sp.a.get(), EVFILT_READ, EV_ADD | EV_RECEIPT),
      make_kev(sp.b.get(), EVFILT_WRITE, EV_DELETE | EV_RECEIPT),  // no such knote
      make_kev(closed, EVFILT_READ, EV_ADD | EV_RECEIPT),          // bad descriptor
      make_kev(sp.a.get(), -42, EV_ADD | EV_RECEIPT),              // no such filter
  };
  struct kevent out[4];
  ASSERT_EQ(::kevent(kq.get(), changes, 4, out, 4, nullptr), 4);
  const long expected[4] = {0, ENOENT, EBADF, EINVAL};
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(out[i].flags & EV_ERROR) << i;
    EXPECT_EQ(out[i].data, expected[i]) << i;
    EXPECT_EQ(out[i].ident, changes[i].ident) << i;
  }
  // The successful change took effect.
  auto evs = poll_events(kq.get());
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_EQ(evs[0].filter, EVFILT_READ);
}

TEST(KqueueEmulation, failed_change_without_room_fails_the_call) {
  kq_fd kq;
  socket_pair sp;
  EXPECT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_DELETE)), ENOENT);
  EXPECT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_WRITE, EV_ENABLE)), ENOENT);
  EXPECT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_ADD)), 0);
  EXPECT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_DELETE)), 0);
  EXPECT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_DELETE)), ENOENT);
}

TEST(KqueueEmulation, dispatch_disables_after_delivery_until_enabled) {
  kq_fd kq;
  socket_pair sp;
  int tag = 0;
  ASSERT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_ADD | EV_DISPATCH, &tag)), 0);
  write_byte(sp.b.get());
  auto evs = poll_events(kq.get());
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_EQ(evs[0].udata, &tag);
  EXPECT_EQ(evs[0].data, 1);                   // bytes readable
  EXPECT_TRUE(poll_events(kq.get()).empty());  // disabled, though still readable
  write_byte(sp.b.get());
  EXPECT_TRUE(poll_events(kq.get()).empty());
  ASSERT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_ENABLE)), 0);
  evs = poll_events(kq.get());
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_EQ(evs[0].data, 2);
  // The knote still exists while disabled: deleting it works once.
  EXPECT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_DELETE)), 0);
}

TEST(KqueueEmulation, oneshot_deletes_after_delivery) {
  kq_fd kq;
  socket_pair sp;
  ASSERT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_ADD | EV_ONESHOT)), 0);
  write_byte(sp.b.get());
  EXPECT_EQ(poll_events(kq.get()).size(), 1U);
  EXPECT_TRUE(poll_events(kq.get()).empty());
  EXPECT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_DELETE)), ENOENT);
}

TEST(KqueueEmulation, clear_reports_once_per_arrival_level_every_call) {
  kq_fd kq;
  socket_pair s1;
  socket_pair s2;
  ASSERT_EQ(change(kq.get(), make_kev(s1.a.get(), EVFILT_READ, EV_ADD | EV_CLEAR)), 0);
  ASSERT_EQ(change(kq.get(), make_kev(s2.a.get(), EVFILT_READ, EV_ADD)), 0);
  write_byte(s1.b.get());
  write_byte(s2.b.get());
  EXPECT_EQ(poll_events(kq.get()).size(), 2U);
  for (int i = 0; i < 3; ++i) {
    auto evs = poll_events(kq.get());
    ASSERT_EQ(evs.size(), 1U);  // only the level-triggered one
    EXPECT_EQ(evs[0].ident, static_cast<std::uintptr_t>(s2.a.get()));
  }
  write_byte(s1.b.get());
  EXPECT_EQ(poll_events(kq.get()).size(), 2U);
}

// One descriptor, two filters with different modes and states: neither disturbs the other.
TEST(KqueueEmulation, read_and_write_filters_of_one_fd_are_independent) {
  kq_fd kq;
  socket_pair sp;
  ASSERT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_ADD)), 0);
  ASSERT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_WRITE, EV_ADD | EV_CLEAR)), 0);
  auto evs = poll_events(kq.get());
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_EQ(evs[0].filter, EVFILT_WRITE);
  EXPECT_TRUE(poll_events(kq.get()).empty());  // edge: reported once
  write_byte(sp.b.get());
  for (int i = 0; i < 2; ++i) {
    evs = poll_events(kq.get());
    ASSERT_EQ(evs.size(), 1U) << i;  // the data arrival is no write edge
    EXPECT_EQ(evs[0].filter, EVFILT_READ);
  }
  ASSERT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_DISABLE)), 0);
  EXPECT_TRUE(poll_events(kq.get()).empty());
  ASSERT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_WRITE, EV_DELETE)), 0);
  ASSERT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_ENABLE)), 0);
  EXPECT_EQ(poll_events(kq.get()).size(), 1U);
}

TEST(KqueueEmulation, eof_on_read_carries_remaining_bytes) {
  kq_fd kq;
  socket_pair sp;
  ASSERT_EQ(change(kq.get(), make_kev(sp.a.get(), EVFILT_READ, EV_ADD)), 0);
  ASSERT_EQ(::write(sp.b.get(), "abc", 3), 3);
  ASSERT_EQ(::shutdown(sp.b.get(), SHUT_WR), 0);
  auto evs = poll_events(kq.get());
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_TRUE(evs[0].flags & EV_EOF);
  EXPECT_EQ(evs[0].fflags, 0U);
  EXPECT_EQ(evs[0].data, 3);
}

TEST(KqueueEmulation, eof_on_write_when_the_pipe_reader_is_gone) {
  kq_fd kq;
  pipe_pair pp;
  ASSERT_EQ(change(kq.get(), make_kev(pp.w.get(), EVFILT_WRITE, EV_ADD | EV_CLEAR)), 0);
  auto evs = poll_events(kq.get());
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_FALSE(evs[0].flags & EV_EOF);
  pp.r.reset();
  evs = poll_events(kq.get());
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_TRUE(evs[0].flags & EV_EOF);
  EXPECT_EQ(evs[0].fflags, 0U);  // a pipe has no socket error
}

TEST(KqueueEmulation, zero_timeout_polls_and_a_timeout_waits) {
  kq_fd kq;
  struct kevent out[1];
  const timespec zero{0, 0};
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(::kevent(kq.get(), nullptr, 0, out, 1, &zero), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  const timespec thirty{0, 30000000};
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(::kevent(kq.get(), nullptr, 0, out, 1, &thirty), 0);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 29ms);
  // No room for events and no changes: returns at once even without a timeout.
  EXPECT_EQ(::kevent(kq.get(), nullptr, 0, nullptr, 0, nullptr), 0);
}

// kqueue drops a descriptor's knotes when it is closed: a new file that gets the same number
// starts without any.
TEST(KqueueEmulation, closing_an_fd_drops_its_knotes_even_if_the_number_is_reused) {
  kq_fd kq;
  socket_pair sp;
  const int n = sp.a.get();
  ASSERT_EQ(change(kq.get(), make_kev(n, EVFILT_READ, EV_ADD)), 0);
  sp.a.reset();
  EXPECT_EQ(change(kq.get(), make_kev(n, EVFILT_READ, EV_DELETE)), EBADF);
  socket_pair other;  // lowest free numbers: other.a reuses n
  ASSERT_EQ(other.a.get(), n);
  EXPECT_EQ(change(kq.get(), make_kev(n, EVFILT_READ, EV_DELETE)), ENOENT);
  ASSERT_EQ(change(kq.get(), make_kev(n, EVFILT_READ, EV_ADD)), 0);
  write_byte(other.b.get());
  EXPECT_EQ(poll_events(kq.get()).size(), 1U);
}

#if defined(EVFILT_USER)
TEST(KqueueEmulation, user_event_triggers_and_clear_resets_it) {
  kq_fd kq;
  int tag = 0;
  ASSERT_EQ(change(kq.get(), make_kev(7, EVFILT_USER, EV_ADD | EV_CLEAR, &tag)), 0);
  ASSERT_EQ(change(kq.get(), make_kev(8, EVFILT_USER, EV_ADD)), 0);
  EXPECT_TRUE(poll_events(kq.get()).empty());
  EXPECT_EQ(change(kq.get(), make_kev(9, EVFILT_USER, 0, nullptr, NOTE_TRIGGER)), ENOENT);
  ASSERT_EQ(change(kq.get(), make_kev(7, EVFILT_USER, 0, nullptr, NOTE_TRIGGER)), 0);
  ASSERT_EQ(change(kq.get(), make_kev(8, EVFILT_USER, 0, nullptr, NOTE_TRIGGER)), 0);
  auto evs = poll_events(kq.get());
  ASSERT_EQ(evs.size(), 2U);
  // Without EV_CLEAR the user event stays triggered; with it, it was reset by the delivery.
  for (int i = 0; i < 2; ++i) {
    evs = poll_events(kq.get());
    ASSERT_EQ(evs.size(), 1U);
    EXPECT_EQ(evs[0].ident, 8U);
  }
  ASSERT_EQ(change(kq.get(), make_kev(8, EVFILT_USER, EV_DELETE)), 0);
  EXPECT_TRUE(poll_events(kq.get()).empty());
  // A trigger wakes a blocked wait.
  ASSERT_EQ(change(kq.get(), make_kev(7, EVFILT_USER, 0, nullptr, NOTE_TRIGGER)), 0);
  struct kevent out[2];
  ASSERT_EQ(::kevent(kq.get(), nullptr, 0, out, 2, nullptr), 1);
  EXPECT_EQ(out[0].udata, &tag);
}
#endif

// The kqueue side of the poller contracts that test_poller_errors.cc checks on epoll only.
poller_options kqueue_options() {
  poller_options o;
  o.backend = backend_kind::kqueue;
  return o;
}

TEST(PollerKqueue, backend_is_kqueue_and_array_starts_at_128) {
  auto p = open_poller(kqueue_options());
  ASSERT_TRUE(p);
  EXPECT_EQ(p->backend_name(), "kqueue");
  EXPECT_EQ(p->event_capacity(), 128U);
}

TEST(PollerKqueue, add_closed_fd_is_bad_file_descriptor) {
  auto p = open_poller(kqueue_options());
  int fd = ::eventfd(0, EFD_CLOEXEC);
  ::close(fd);
  poll_attachment a = quiet_attachment(fd);
  std::error_code ec = p->add(a, interest::read_write);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor) << ec.message();
  EXPECT_FALSE(a.registered());
  EXPECT_EQ(p->registered_count(), 0U);
}

TEST(PollerKqueue, remove_after_fd_closed_reports_ebadf_and_forgets_attachment) {
  expect_remove_after_close_reports_ebadf(*open_poller(kqueue_options()));
}

TEST(PollerKqueue, modify_after_fd_closed_reports_ebadf_and_keeps_interest) {
  auto p = open_poller(kqueue_options());
  socket_pair sp;
  poll_attachment a = quiet_attachment(sp.a.release());
  ASSERT_FALSE(p->add(a, interest::read));
  ::close(a.fd);
  std::error_code ec = p->modify(a, interest::write);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor) << ec.message();
  EXPECT_EQ(a.current_interest(), interest::read);
  (void)p->remove(a);
}

// The descriptor was closed without remove() and its number reused: the new file's
// registration starts fresh and gets its events (kqueue dropped the old knotes at close).
TEST(PollerKqueue, fd_number_reused_after_close_registers_fresh) {
  auto p = open_poller(kqueue_options());
  socket_pair sp;
  const int n = sp.a.get();
  recorder old_rec(n);
  ASSERT_FALSE(p->add(old_rec.att, interest::read));
  sp.a.reset();
  socket_pair other;
  ASSERT_EQ(other.a.get(), n);
  recorder rec(n);
  ASSERT_FALSE(p->add(rec.att, interest::read, trigger_mode::edge));
  write_byte(other.b.get());
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  EXPECT_EQ(rec.calls.size(), 1U);
  EXPECT_TRUE(old_rec.calls.empty());
  EXPECT_FALSE(p->remove(rec.att));
  EXPECT_EQ(p->remove(old_rec.att), errc::not_registered);  // its knote is long gone
}

/// The io_event bits of every callback in one zero-timeout round, or-ed.
std::uint32_t round_bits(poller& p, recorder& rec) {
  rec.calls.clear();
  (void)run_round(p);
  std::uint32_t bits = 0;
  for (std::uint32_t b : rec.calls) {
    bits |= b;
  }
  return bits;
}

// modify() from read to write is two kernel changes (delete the read filter, add the write
// one). The second failing must not leave the first applied: the attachment keeps its read
// registration, as poller.h promises, and remove() still finds it.
TEST(PollerKqueue, a_modify_failing_midway_keeps_the_old_registration) {
  auto p = open_poller(kqueue_options());
  socket_pair sp;
  recorder rec(sp.a.get());
  ASSERT_FALSE(p->add(rec.att, interest::read));
  kqueue_emul_fail_change(2, ENOMEM);  // the add of the write filter
  std::error_code ec = p->modify(rec.att, interest::write);
  kqueue_emul_fail_change(0, 0);
  EXPECT_EQ(ec, std::errc::not_enough_memory) << ec.message();
  EXPECT_EQ(rec.att.current_interest(), interest::read);
  write_byte(sp.b.get());
  EXPECT_EQ(round_bits(*p, rec), io_event::readable) << "the read filter was lost";
  EXPECT_FALSE(p->remove(rec.att));
}

// A mode change deletes and re-adds both filters (four changes); the last failing leaves
// neither the read filter in the new mode nor the write filter deleted: still level-triggered
// for both.
TEST(PollerKqueue, a_mode_change_failing_midway_keeps_the_old_mode_and_interest) {
  auto p = open_poller(kqueue_options());
  socket_pair sp;
  recorder rec(sp.a.get());
  ASSERT_FALSE(p->add(rec.att, interest::read_write));
  kqueue_emul_fail_change(4, ENOMEM);  // the re-add of the write filter, edge-triggered
  std::error_code ec = p->modify(rec.att, interest::read_write, trigger_mode::edge);
  kqueue_emul_fail_change(0, 0);
  EXPECT_EQ(ec, std::errc::not_enough_memory) << ec.message();
  EXPECT_EQ(rec.att.current_mode(), trigger_mode::level);
  write_byte(sp.b.get());
  const std::uint32_t both = io_event::readable | io_event::writable;
  EXPECT_EQ(round_bits(*p, rec), both);
  // Level-triggered: reported again without draining (edge would report nothing).
  EXPECT_EQ(round_bits(*p, rec), both);
  EXPECT_FALSE(p->remove(rec.att));
}

}  // namespace
}  // namespace evnet::test
