// Edges of the io_uring backend that epoll does not have: CQEs still in flight for an
// attachment that was removed and freed (or modified, or whose slot was reused), many
// registrations (SQ flushes), a CQ overflow that ends multishot polls, the file reference a
// poll request holds, cross-thread wake-ups, and the fallback when io_uring_setup is refused.
// The general semantics run on io_uring through the re-run of the poller suites
// (poller_io_uring.cmake); here the same scenarios are also compared against epoll directly.
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "poller_test_util.h"

namespace evnet::test {
namespace {

using namespace std::chrono_literals;

// io_uring_blocked_reason() (poller_test_util.h) tells why io_uring may legitimately be missing.

// Every case is skipped where io_uring is unavailable for a known reason; anywhere else an
// io_uring poller that fails to open is a failure, not a skip.
class PollerIoUring : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason;
    const std::error_code ec = try_open_io_uring(reason);
    if (!ec) {
      return;
    }
    if (!reason.empty()) {
      GTEST_SKIP() << "io_uring unavailable: " << reason;
    }
    FAIL() << "io_uring poller failed to open: " << ec.message();
  }
};

std::unique_ptr<poller> open_uring(poller_options o = {}) {
  o.backend = backend_kind::io_uring;
  auto p = poller::open(o);
  EXPECT_TRUE(p) << p.error().message();
  return p ? std::move(*p) : nullptr;
}

std::unique_ptr<poller> open_kind(backend_kind kind) {
  poller_options o;
  o.backend = kind;
  auto p = poller::open(o);
  EXPECT_TRUE(p) << p.error().message();
  return p ? std::move(*p) : nullptr;
}

TEST_F(PollerIoUring, opens_by_kind_and_by_environment) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->backend_name(), "io_uring");
  EXPECT_EQ(p->event_capacity(), 128U);
  set_env("EVNET_POLLER", "io_uring");
  auto e = poller::open();
  set_env("EVNET_POLLER", nullptr);
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ((*e)->backend_name(), "io_uring");
  // Without the variable, automatic stays on epoll (see the measurements in the report).
  auto d = poller::open();
  ASSERT_TRUE(d);
  EXPECT_EQ((*d)->backend_name(), "epoll");
}

// POLL_ADD would only fail later, in a CQE; add() checks the descriptor itself so that it
// returns epoll's errors synchronously (the poller suites check these on epoll only).
TEST_F(PollerIoUring, add_reports_epolls_errors_synchronously) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  int closed = ::eventfd(0, EFD_CLOEXEC);
  ::close(closed);
  poll_attachment a = quiet_attachment(closed);
  std::error_code ec = p->add(a, interest::read);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor) << ec.message();
  EXPECT_EQ(ec.category(), std::system_category());

  const char* dir = std::getenv("EVNET_BINARY_DIR");
  std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/poller_io_uring_regular";
  fd_guard f(::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  ASSERT_GE(f.get(), 0);
  ::unlink(path.c_str());
  poll_attachment file = quiet_attachment(f.get());
  EXPECT_EQ(p->add(file, interest::read), std::errc::operation_not_permitted);

  socket_pair sp;
  poll_attachment first = quiet_attachment(sp.a.get());
  poll_attachment second = quiet_attachment(sp.a.get());
  ASSERT_FALSE(p->add(first, interest::read));
  EXPECT_EQ(p->add(second, interest::write), errc::already_registered);
  EXPECT_FALSE(second.registered());
  // A dup() of the same socket is another fd: allowed, as with epoll.
  fd_guard dup(::dup(sp.a.get()));
  poll_attachment third = quiet_attachment(dup.get());
  EXPECT_FALSE(p->add(third, interest::write));
  EXPECT_EQ(p->registered_count(), 2U);
  EXPECT_FALSE(p->remove(first));
  EXPECT_FALSE(p->remove(third));
}

TEST_F(PollerIoUring, modify_and_remove_after_fd_closed_report_ebadf) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  socket_pair sp;
  poll_attachment a = quiet_attachment(sp.a.release());
  ASSERT_FALSE(p->add(a, interest::read));
  EXPECT_EQ(run_round(*p), 0U);
  ::close(a.fd);
  EXPECT_EQ(p->modify(a, interest::write), std::errc::bad_file_descriptor);
  EXPECT_EQ(a.current_interest(), interest::read);
  EXPECT_EQ(p->remove(a), std::errc::bad_file_descriptor);
  EXPECT_FALSE(a.registered());
  EXPECT_EQ(p->registered_count(), 0U);
  EXPECT_EQ(run_round(*p), 0U);
}

// The wake-up eventfd is polled by a multishot request and never read back, so its counter is
// the number of wake-up writes: coalesced to one per round, none from the loop itself.
TEST_F(PollerIoUring, wakeups_are_coalesced_and_loop_triggers_need_no_write) {
  const std::set<int> before = open_eventfds();
  auto p = open_uring();
  ASSERT_TRUE(p);
  int wakefd = -1;
  for (int fd : open_eventfds()) {
    if (before.count(fd) == 0) {
      wakefd = fd;
    }
  }
  ASSERT_GE(wakefd, 0);
  EXPECT_EQ(eventfd_count(wakefd), 0U);
  int ran = 0;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(p->trigger(task_priority::low, [&] { ++ran; }));
  }
  EXPECT_EQ(eventfd_count(wakefd), 1U);
  while (ran < 1000) {
    ASSERT_TRUE(p->poll_once(1000ms));
  }
  EXPECT_EQ(eventfd_count(wakefd), 1U);
  ASSERT_FALSE(p->trigger(task_priority::high, [&] {
    ++ran;
    EXPECT_FALSE(p->trigger(task_priority::low, [&] { ++ran; }));
  }));
  EXPECT_EQ(eventfd_count(wakefd), 2U);
  ASSERT_TRUE(p->poll_once(1000ms));
  EXPECT_EQ(ran, 1001);
  EXPECT_EQ(eventfd_count(wakefd), 2U);  // queued on the loop thread: no write
  ASSERT_TRUE(p->poll_once(10s));        // and yet the round does not block
  EXPECT_EQ(ran, 1002);
}

// One scenario per trigger mode, run on both backends: the callback sequences must be equal.
// Rounds: add; idle; 1 byte; idle; idle; 1 more byte; modify(read) (re-arms a one-shot);
// drain; idle.
std::vector<std::vector<std::uint32_t>> scenario(backend_kind kind, trigger_mode mode) {
  auto p = open_kind(kind);
  std::vector<std::vector<std::uint32_t>> rounds;
  if (!p) {
    return rounds;
  }
  socket_pair sp;
  recorder r(sp.a.get());
  EXPECT_FALSE(p->add(r.att, interest::read, mode));
  auto round = [&] {
    r.calls.clear();
    run_round(*p);
    rounds.push_back(r.calls);
  };
  round();
  write_byte(sp.b.get());
  round();
  round();
  round();
  write_byte(sp.b.get());
  round();
  EXPECT_FALSE(p->modify(r.att, interest::read));
  round();
  round();
  drain(sp.a.get());
  round();
  round();
  shutdown(sp.b.get(), SHUT_WR);
  round();
  round();
  EXPECT_FALSE(p->remove(r.att));
  return rounds;
}

TEST_F(PollerIoUring, level_edge_oneshot_sequences_match_epoll) {
  for (trigger_mode mode : {trigger_mode::level, trigger_mode::edge, trigger_mode::oneshot}) {
    const auto epoll = scenario(backend_kind::epoll, mode);
    const auto uring = scenario(backend_kind::io_uring, mode);
    EXPECT_EQ(uring, epoll) << "trigger mode " << static_cast<int>(mode);
  }
  // And the sequences are the ones each mode promises (guards against both being wrong alike).
  const auto level = scenario(backend_kind::io_uring, trigger_mode::level);
  ASSERT_EQ(level.size(), 11U);
  EXPECT_TRUE(level[0].empty());
  for (int i = 1; i <= 6; ++i) {
    EXPECT_EQ(level[i].size(), 1U) << i;  // every round while readable
  }
  EXPECT_TRUE(level[7].empty());  // drained
  const auto edge = scenario(backend_kind::io_uring, trigger_mode::edge);
  EXPECT_EQ(edge[1].size(), 1U);
  EXPECT_TRUE(edge[2].empty());
  EXPECT_EQ(edge[4].size(), 1U);  // a new arrival
  const auto once = scenario(backend_kind::io_uring, trigger_mode::oneshot);
  EXPECT_EQ(once[1].size(), 1U);
  EXPECT_TRUE(once[4].empty());   // disarmed despite a new byte
  EXPECT_EQ(once[5].size(), 1U);  // re-armed by modify
}

// The peer's shutdown reaches a write-only registration as read_hangup, as with EPOLLRDHUP.
TEST_F(PollerIoUring, hangup_bits_match_epoll_for_rst) {
  std::vector<std::uint32_t> seen;
  for (backend_kind kind : {backend_kind::epoll, backend_kind::io_uring}) {
    auto p = open_kind(kind);
    ASSERT_TRUE(p);
    tcp_pair tp;
    recorder r(tp.server.get());
    ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::level));
    linger lg{1, 0};
    ASSERT_EQ(::setsockopt(tp.client.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    tp.client.reset();  // RST
    EXPECT_EQ(run_round(*p, 1000ms), 1U);
    ASSERT_EQ(r.calls.size(), 1U);
    seen.push_back(r.calls[0]);
    EXPECT_FALSE(p->remove(r.att));
  }
  EXPECT_EQ(seen[1], seen[0]);
  EXPECT_NE(seen[1] & io_event::error, 0U);
  EXPECT_NE(seen[1] & io_event::hangup, 0U);
}

// The first callback of a round removes and frees every other attachment while their CQEs are
// already in the completion queue (the event array holds one CQE per round, so the rest wait
// there). None of them may be called: ASan would report the use after free.
TEST_F(PollerIoUring, remove_and_free_with_cqes_in_flight) {
  poller_options o;
  o.initial_events = 1;
  o.max_events = 1;
  auto p = open_uring(o);
  ASSERT_TRUE(p);
  constexpr int kN = 16;
  std::vector<std::unique_ptr<socket_pair>> pairs;
  std::vector<std::unique_ptr<poll_attachment>> atts;
  int calls = 0;
  for (int i = 0; i < kN; ++i) {
    pairs.push_back(std::make_unique<socket_pair>());
    auto a = std::make_unique<poll_attachment>();
    a->fd = pairs.back()->a.get();
    a->callback = [&, fd = a->fd](int, std::uint32_t) {
      ++calls;
      // Remove and free every other attachment; their CQEs are queued behind this one.
      for (auto& att : atts) {
        if (att && att->registered() && att->fd != fd) {
          EXPECT_FALSE(p->remove(*att));
          att.reset();
        }
      }
      return poll_action::proceed;
    };
    ASSERT_FALSE(p->add(*a, interest::read, trigger_mode::edge));
    atts.push_back(std::move(a));
  }
  for (auto& sp : pairs) {
    write_byte(sp->b.get());
  }
  for (int i = 0; i < 10; ++i) {
    run_round(*p, 50ms);
  }
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(p->registered_count(), 1U);
  // New data on the removed descriptors reaches nobody.
  for (auto& sp : pairs) {
    write_byte(sp->b.get());
  }
  for (int i = 0; i < 5; ++i) {
    run_round(*p, 10ms);
  }
  EXPECT_EQ(calls, 2);  // only the survivor's new arrival
  for (auto& a : atts) {
    if (a) {
      EXPECT_FALSE(p->remove(*a));
    }
  }
}

// remove() then immediate free, before the add was even submitted, and with the kernel's
// -ECANCELED completion still to come.
TEST_F(PollerIoUring, remove_before_first_round_then_free) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  socket_pair sp;
  write_byte(sp.b.get());
  auto a = std::make_unique<recorder>(sp.a.get());
  ASSERT_FALSE(p->add(a->att, interest::read, trigger_mode::level));
  ASSERT_FALSE(p->remove(a->att));
  a.reset();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(run_round(*p, 10ms), 0U);
  }
}

// A slot freed by remove() is reused by the next add(); the old request's CQEs carry the old
// generation and must not reach the new attachment.
TEST_F(PollerIoUring, reused_slot_ignores_previous_registrations_cqes) {
  poller_options o;
  o.initial_events = 1;
  o.max_events = 1;
  auto p = open_uring(o);
  ASSERT_TRUE(p);
  socket_pair busy;   // readable: its CQE will be queued
  socket_pair quiet;  // never readable
  socket_pair first;  // dispatched first, does the swap
  write_byte(busy.b.get());
  auto old_rec = std::make_unique<recorder>(busy.a.get());
  recorder fresh(quiet.a.get());
  poll_attachment swapper;
  swapper.fd = first.a.get();
  swapper.callback = [&](int, std::uint32_t) {
    if (old_rec) {
      EXPECT_FALSE(p->remove(old_rec->att));
      old_rec.reset();
      EXPECT_FALSE(p->add(fresh.att, interest::read, trigger_mode::level));
    }
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(swapper, interest::read, trigger_mode::oneshot));
  ASSERT_FALSE(p->add(old_rec->att, interest::read, trigger_mode::edge));
  write_byte(first.b.get());
  for (int i = 0; i < 6; ++i) {
    run_round(*p, 20ms);
  }
  EXPECT_EQ(old_rec, nullptr);
  EXPECT_TRUE(fresh.calls.empty());  // quiet was never readable
  write_byte(quiet.b.get());
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  EXPECT_EQ(fresh.calls.size(), 1U);
  EXPECT_FALSE(p->remove(fresh.att));
  EXPECT_FALSE(p->remove(swapper));
}

// modify() while a CQE of the old request is queued: only the new interest is reported.
TEST_F(PollerIoUring, modify_discards_queued_cqe_of_old_request) {
  poller_options o;
  o.initial_events = 1;
  o.max_events = 1;
  auto p = open_uring(o);
  ASSERT_TRUE(p);
  socket_pair first;
  socket_pair target;
  write_byte(target.b.get());  // target readable and writable
  recorder r(target.a.get());
  poll_attachment changer;
  changer.fd = first.a.get();
  changer.callback = [&](int, std::uint32_t) {
    EXPECT_FALSE(p->modify(r.att, interest::write, trigger_mode::oneshot));
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(changer, interest::read, trigger_mode::oneshot));
  ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::edge));
  write_byte(first.b.get());
  for (int i = 0; i < 5; ++i) {
    run_round(*p, 20ms);
  }
  // The read CQE queued before the modify was dropped; the write one-shot fired once.
  ASSERT_EQ(r.calls.size(), 1U);
  EXPECT_EQ(r.calls[0] & (io_event::readable | io_event::writable), io_event::writable);
  EXPECT_FALSE(p->remove(r.att));
  EXPECT_FALSE(p->remove(changer));
}

// An event already fetched for B in this round survives a modify() of B from A's callback, as
// with epoll (only remove() discards fetched events). It was dropped: a one-shot B re-armed by
// nobody never ran again, and the relay below stalled (A 1 call, B 0).
TEST_F(PollerIoUring, modify_from_another_callback_keeps_an_event_already_fetched) {
  for (backend_kind kind : {backend_kind::epoll, backend_kind::io_uring}) {
    SCOPED_TRACE(kind == backend_kind::epoll ? "epoll" : "io_uring");
    auto p = open_kind(kind);
    ASSERT_TRUE(p);
    socket_pair s;
    socket_pair t;
    poll_attachment a;
    poll_attachment b;
    int a_calls = 0;
    int b_calls = 0;
    // Two one-shot registrations that re-arm each other (a relay handing the turn over).
    a.fd = s.a.get();
    a.callback = [&](int, std::uint32_t) {
      ++a_calls;
      drain(s.a.get());
      drain(t.a.get());
      EXPECT_FALSE(p->modify(b, interest::read, trigger_mode::oneshot));
      return poll_action::proceed;
    };
    b.fd = t.a.get();
    b.callback = [&](int, std::uint32_t) {
      ++b_calls;
      EXPECT_FALSE(p->modify(a, interest::read, trigger_mode::oneshot));
      return poll_action::proceed;
    };
    ASSERT_FALSE(p->add(a, interest::read, trigger_mode::oneshot));
    ASSERT_FALSE(p->add(b, interest::read, trigger_mode::oneshot));
    write_byte(s.b.get());
    write_byte(t.b.get());
    // Both are fetched in the first round that sees them (A's first: its byte came first).
    for (int i = 0; i < 3; ++i) {
      run_round(*p, 20ms);
    }
    EXPECT_EQ(a_calls, 1);
    EXPECT_EQ(b_calls, 1);
    write_byte(s.b.get());  // A hears of it only if B ran and re-armed it
    for (int i = 0; i < 3; ++i) {
      run_round(*p, 20ms);
    }
    EXPECT_EQ(a_calls, 2);
    EXPECT_FALSE(p->remove(a));
    EXPECT_FALSE(p->remove(b));
  }
}

// The kernel ends every io_uring request of a thread that exits. Registrations made on a
// set-up thread (allowed while nobody polls), whose remove() of another one flushed the queue
// from that thread, were reported once with the error bit and never again after it exited.
// They are armed again from the loop thread, with nothing reported.
TEST_F(PollerIoUring, registrations_submitted_by_a_thread_that_exited_keep_working) {
  std::vector<std::unique_ptr<pipe_pair>> pipes;
  std::vector<std::unique_ptr<recorder>> recs;
  std::unique_ptr<poller> p;  // destroyed first: the attachments outlive it
  std::thread setup([&] {
    p = open_uring();
    for (int i = 0; i < 3; ++i) {
      pipes.push_back(std::make_unique<pipe_pair>());
      recs.push_back(std::make_unique<recorder>(pipes.back()->r.get()));
      EXPECT_FALSE(p->add(recs.back()->att, interest::read));
    }
    EXPECT_FALSE(p->remove(recs.back()->att));  // submits the queue from this thread
  });
  setup.join();
  ASSERT_TRUE(p);
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 2; ++i) {
      write_byte(pipes[static_cast<std::size_t>(i)]->w.get());
    }
    for (int k = 0; k < 5; ++k) {
      run_round(*p, 20ms);
    }
    for (int i = 0; i < 2; ++i) {
      drain(pipes[static_cast<std::size_t>(i)]->r.get());
    }
    for (int k = 0; k < 2; ++k) {
      run_round(*p, 0ms);  // level mode: the drained pipe is no longer reported
    }
  }
  for (int i = 0; i < 2; ++i) {
    const auto& calls = recs[static_cast<std::size_t>(i)]->calls;
    ASSERT_GE(calls.size(), 3U) << "registration " << i;
    for (std::uint32_t ev : calls) {
      EXPECT_EQ(ev & io_event::error, 0U) << "registration " << i;
      EXPECT_NE(ev & io_event::readable, 0U) << "registration " << i;
    }
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_FALSE(p->remove(recs[static_cast<std::size_t>(i)]->att));
  }
}

// The same, seen from one blocking wait of a poller opened by the loop thread (so its wake-up
// request lives on): the -ECANCELED CQEs of the set-up thread's requests are all the wait
// finds. It went back to waiting with the registrations re-armed only at the next round, so a
// byte already in the pipe was not reported within the wait (without a timeout, poll() would
// have waited forever). epoll reports it in this one call.
TEST_F(PollerIoUring, a_wait_that_finds_cancelled_registrations_rearms_them_before_resuming) {
  pipe_pair pipe;
  pipe_pair other;
  std::unique_ptr<recorder> rec;
  std::unique_ptr<recorder> removed;
  std::unique_ptr<poller> p = open_uring();  // destroyed first: the attachments outlive it
  ASSERT_TRUE(p);
  std::thread setup([&] {
    rec = std::make_unique<recorder>(pipe.r.get());
    removed = std::make_unique<recorder>(other.r.get());
    EXPECT_FALSE(p->add(rec->att, interest::read));
    EXPECT_FALSE(p->add(removed->att, interest::read));
    EXPECT_FALSE(p->remove(removed->att));  // submits the queue from this thread
  });
  setup.join();
  write_byte(pipe.w.get());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = p->poll_once(5000ms);
  const auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, 1U) << "after "
                    << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()
                    << " ms";
  ASSERT_EQ(rec->calls.size(), 1U);
  EXPECT_NE(rec->calls[0] & io_event::readable, 0U);
  EXPECT_EQ(rec->calls[0] & io_event::error, 0U);
  EXPECT_FALSE(p->remove(rec->att));
}

// Only a stale CQE (the -ECANCELED of a removed registration) arrives during a wait: epoll
// would have kept waiting, so poll_once must not return early with zero callbacks.
TEST_F(PollerIoUring, stale_cqe_does_not_end_a_timed_wait_early) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::edge));
  EXPECT_EQ(run_round(*p), 0U);  // the multishot is live in the kernel
  // Inside a task (i.e. inside a round) the cancel is only queued; it goes out with the next
  // round's io_uring_enter, whose wait then sees the -ECANCELED CQE first.
  ASSERT_FALSE(p->trigger(task_priority::high, [&] { EXPECT_FALSE(p->remove(r.att)); }));
  ASSERT_TRUE(p->poll_once(1000ms));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run_round(*p, 200ms), 0U);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 150ms);
}

// The wait resumed after a stale CQE lasts until the caller's whole timeout: its remaining
// time was truncated to whole milliseconds, so poll_once(200ms) returned after 199.x ms, and an
// event base waiting for a timer returned before it was due, having run nothing.
TEST_F(PollerIoUring, a_wait_resumed_after_a_stale_cqe_lasts_the_whole_timeout) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  for (int i = 0; i < 3; ++i) {
    socket_pair sp;
    recorder r(sp.a.get());
    ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::edge));
    EXPECT_EQ(run_round(*p), 0U);
    ASSERT_FALSE(p->trigger(task_priority::high, [&] { EXPECT_FALSE(p->remove(r.att)); }));
    ASSERT_TRUE(p->poll_once(1000ms));
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(run_round(*p, 200ms), 0U);
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(waited, 200ms)
        << std::chrono::duration_cast<std::chrono::microseconds>(waited).count() << " us";
  }
}

// A multishot posts one CQE per wake-up: the peer draining our full send buffer in many reads
// produces several before the loop polls. epoll reports the fd once per round; so must we.
TEST_F(PollerIoUring, several_cqes_of_one_registration_make_one_callback) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  socket_pair sp;
  std::vector<char> chunk(65536, 'z');
  while (::write(sp.a.get(), chunk.data(), chunk.size()) > 0) {
  }
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read_write, trigger_mode::edge));
  EXPECT_EQ(run_round(*p), 0U);
  EXPECT_GT(drain(sp.b.get()), 4096U);  // many reads, many wake-ups of a's writers
  write_byte(sp.b.get());               // and a readable edge too
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  ASSERT_EQ(r.calls.size(), 1U);
  EXPECT_EQ(r.calls[0] & (io_event::readable | io_event::writable),
            io_event::readable | io_event::writable);
  EXPECT_FALSE(p->remove(r.att));
}

// Resident memory of this process, in KiB (/proc/self/status).
long resident_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stol(line.substr(6));
    }
  }
  ADD_FAILURE() << "no VmRSS in /proc/self/status";
  return 0;
}

// max_events bounds how far the event array may grow; epoll allocates only what the rounds
// needed. The io_uring backend sized its batch for max_events at open(), zero-filled: 12
// bytes per possible event, 201 MB for the 2^24 asked here (24 GiB at the documented limit
// INT_MAX) before any descriptor was registered. It now grows with the rounds as epoll's.
TEST_F(PollerIoUring, memory_follows_the_event_array_not_max_events) {
  poller_options o;
  o.max_events = std::size_t{1} << 24;
  const long before = resident_kib();
  auto p = open_uring(o);
  ASSERT_TRUE(p);
  const long grown = resident_kib() - before;
  EXPECT_LT(grown, 32 * 1024) << grown << " KiB resident after open()";
  EXPECT_EQ(p->event_capacity(), 128U);
  // The batch still grows as rounds fill it, and every ready descriptor is reported.
  std::vector<fd_guard> fds;
  std::vector<std::unique_ptr<recorder>> recs;
  for (int i = 0; i < 300; ++i) {
    fds.emplace_back(::eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC));
    recs.push_back(std::make_unique<recorder>(fds.back().get()));
    ASSERT_FALSE(p->add(recs.back()->att, interest::read, trigger_mode::edge));
  }
  std::size_t reported = 0;
  for (int round = 0; round < 10 && reported < recs.size(); ++round) {
    reported += run_round(*p, 100ms);
  }
  EXPECT_EQ(reported, recs.size());
  EXPECT_GE(p->event_capacity(), 256U);
  for (auto& r : recs) {
    ASSERT_EQ(r->calls.size(), 1U);
    ASSERT_FALSE(p->remove(r->att));
  }
}

// More registrations than the submission queue holds (256) but fewer than the completion queue
// (4096): add() flushes as it goes, every descriptor is reported exactly once per arrival, and
// removing them all leaves nothing behind.
TEST_F(PollerIoUring, many_registrations_each_fire_once) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  constexpr int kN = 3000;
  std::vector<fd_guard> fds;
  std::vector<std::unique_ptr<recorder>> recs;
  for (int i = 0; i < kN; ++i) {
    fds.emplace_back(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    ASSERT_GE(fds.back().get(), 0);
    recs.push_back(std::make_unique<recorder>(fds.back().get()));
    ASSERT_FALSE(p->add(recs.back()->att, interest::read, trigger_mode::edge));
  }
  EXPECT_EQ(run_round(*p), 0U);
  const std::uint64_t one = 1;
  for (auto& f : fds) {
    ASSERT_EQ(::write(f.get(), &one, sizeof one), 8);
  }
  std::size_t total = 0;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (total < kN && std::chrono::steady_clock::now() < deadline) {
    total += run_round(*p, 100ms);
  }
  EXPECT_EQ(total, static_cast<std::size_t>(kN));
  for (auto& r : recs) {
    EXPECT_EQ(r->calls.size(), 1U);
  }
  for (auto& r : recs) {
    ASSERT_FALSE(p->remove(r->att));
  }
  EXPECT_EQ(p->registered_count(), 0U);
  for (auto& f : fds) {
    ASSERT_EQ(::write(f.get(), &one, sizeof one), 8);
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(run_round(*p, 10ms), 0U);
  }
}

// More edge registrations fire at once than the completion queue holds (4096 entries for
// max_events 128): the kernel keeps the overflow and ends the multishot polls it could not
// post to. The backend must re-arm them, so the next arrival is still reported everywhere.
TEST_F(PollerIoUring, edge_registrations_survive_cq_overflow) {
  poller_options o;
  o.initial_events = 128;
  o.max_events = 128;
  auto p = open_uring(o);
  ASSERT_TRUE(p);
  constexpr int kN = 6000;
  std::vector<fd_guard> fds;
  std::vector<std::unique_ptr<recorder>> recs;
  for (int i = 0; i < kN; ++i) {
    fds.emplace_back(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    recs.push_back(std::make_unique<recorder>(fds.back().get()));
    ASSERT_FALSE(p->add(recs.back()->att, interest::read, trigger_mode::edge));
  }
  EXPECT_EQ(run_round(*p), 0U);
  const std::uint64_t one = 1;
  for (int wave = 1; wave <= 2; ++wave) {
    for (auto& f : fds) {
      ASSERT_EQ(::write(f.get(), &one, sizeof one), 8);
    }
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    for (;;) {
      std::size_t done = 0;
      for (auto& r : recs) {
        done += r->calls.size() >= static_cast<std::size_t>(wave) ? 1 : 0;
      }
      if (done == kN || std::chrono::steady_clock::now() > deadline) {
        break;
      }
      run_round(*p, 10ms);
    }
    for (int i = 0; i < 5; ++i) {
      run_round(*p, 0ms);
    }
    std::size_t exact = 0;
    for (auto& r : recs) {
      exact += r->calls.size() == static_cast<std::size_t>(wave) ? 1 : 0;
    }
    // A re-armed multishot reports the (still readable) eventfd once on re-arm, so a few may
    // see an extra report; none may be silent.
    std::size_t silent = 0;
    for (auto& r : recs) {
      silent += r->calls.size() < static_cast<std::size_t>(wave) ? 1 : 0;
    }
    EXPECT_EQ(silent, 0U) << "wave " << wave;
    EXPECT_GT(exact, 0U);
    for (auto& r : recs) {
      r->calls.resize(static_cast<std::size_t>(wave));
    }
  }
  for (auto& r : recs) {
    ASSERT_FALSE(p->remove(r->att));
  }
}

// A poll request holds a reference to the file. remove() outside a round sends the cancel at
// once, so closing the fd right after really closes the socket and the peer sees EOF.
TEST_F(PollerIoUring, remove_releases_the_file_so_close_reaches_the_peer) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::edge));
  EXPECT_EQ(run_round(*p), 0U);  // the poll request is now live in the kernel
  ASSERT_FALSE(p->remove(r.att));
  sp.a.reset();
  char c;
  for (int i = 0; i < 100; ++i) {  // the cancel completes asynchronously in the kernel
    ssize_t n = ::read(sp.b.get(), &c, 1);
    if (n == 0) {
      break;
    }
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(::read(sp.b.get(), &c, 1), 0);
}

// Inside a round the cancel rides with the next io_uring_enter: after one more round the peer
// sees EOF.
TEST_F(PollerIoUring, remove_inside_callback_then_close_reaches_peer_next_round) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  socket_pair sp;
  poll_attachment a;
  a.fd = sp.a.get();
  a.callback = [&](int fd, std::uint32_t) {
    EXPECT_FALSE(p->remove(a));
    EXPECT_EQ(sp.a.release(), fd);
    ::close(fd);
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(a, interest::read, trigger_mode::edge));
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  run_round(*p);
  char c;
  bool eof = false;
  for (int i = 0; i < 100 && !eof; ++i) {
    eof = ::read(sp.b.get(), &c, 1) == 0;
    if (!eof) {
      std::this_thread::sleep_for(1ms);
    }
  }
  EXPECT_TRUE(eof);
}

// The fd number of a registration the caller closed without remove() is reused by a new
// socket: epoll would have forgotten the old one, so the new add must succeed.
TEST_F(PollerIoUring, fd_number_reused_after_close_without_remove) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  socket_pair old_pair;
  recorder old_rec(old_pair.a.get());
  ASSERT_FALSE(p->add(old_rec.att, interest::read, trigger_mode::level));
  const int number = old_pair.a.get();
  old_pair.a.reset();
  socket_pair fresh;
  ASSERT_EQ(::dup2(fresh.a.get(), number), number);
  fd_guard reused(number);
  recorder new_rec(number);
  ASSERT_FALSE(p->add(new_rec.att, interest::read, trigger_mode::level));
  write_byte(fresh.b.get());
  EXPECT_GE(run_round(*p, 1000ms), 1U);
  EXPECT_FALSE(new_rec.calls.empty());
  EXPECT_FALSE(p->remove(new_rec.att));
  EXPECT_FALSE(p->remove(old_rec.att));  // the fd number is open again, so no EBADF
  EXPECT_EQ(p->registered_count(), 0U);
}

// As fd_number_reused_after_close_without_remove, with eventfds: every eventfd (timerfd,
// signalfd, ...) shares one anonymous inode, so the device and inode numbers add() compared
// said "the same file" for any of them, and the new eventfd was refused as already registered
// where epoll, which forgot the closed one, takes it. A second registration of the very same
// eventfd is still refused, as epoll's EEXIST, and a dup() of it is another fd: allowed.
TEST_F(PollerIoUring, fd_number_reused_by_another_eventfd_after_close_without_remove) {
  for (const backend_kind kind : {backend_kind::epoll, backend_kind::io_uring}) {
    SCOPED_TRACE(kind == backend_kind::epoll ? "epoll" : "io_uring");
    auto p = open_kind(kind);
    ASSERT_TRUE(p);
    fd_guard old_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    recorder old_rec(old_fd.get());
    ASSERT_FALSE(p->add(old_rec.att, interest::read, trigger_mode::level));
    EXPECT_EQ(run_round(*p), 0U);
    const int number = old_fd.get();
    old_fd.reset();
    fd_guard fresh(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    ASSERT_EQ(::dup2(fresh.get(), number), number);
    fd_guard reused(number);
    recorder new_rec(number);
    std::error_code ec = p->add(new_rec.att, interest::read, trigger_mode::level);
    EXPECT_FALSE(ec) << "a new eventfd at a reused number refused: " << ec.message();
    // The same eventfd once more: refused. A dup() of it: another fd, allowed.
    poll_attachment again = quiet_attachment(number);
    EXPECT_EQ(p->add(again, interest::read), errc::already_registered);
    fd_guard dup(::dup(number));
    poll_attachment twin = quiet_attachment(dup.get());
    EXPECT_FALSE(p->add(twin, interest::read));
    const std::uint64_t one = 1;
    ASSERT_EQ(::write(fresh.get(), &one, sizeof one), 8);
    EXPECT_GE(run_round(*p, 1000ms), 1U);
    EXPECT_FALSE(new_rec.calls.empty());
    if (new_rec.att.registered()) {
      EXPECT_FALSE(p->remove(new_rec.att));
    }
    EXPECT_FALSE(p->remove(twin));
    (void)p->remove(old_rec.att);  // epoll forgot it (ENOENT); io_uring still holds it
    EXPECT_EQ(p->registered_count(), 0U);
  }
}

// Producers on four threads trigger tasks and stop() while the loop is blocked in
// io_uring_enter; every task runs once (run under TSan too).
TEST_F(PollerIoUring, cross_thread_triggers_wake_the_ring) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  std::atomic<int> ran{0};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        EXPECT_FALSE(p->trigger(i % 2 ? task_priority::high : task_priority::low,
                                [&] { ran.fetch_add(1, std::memory_order_relaxed); }));
        if (i % 1000 == 0) {
          std::this_thread::yield();
        }
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (ran.load() < 80000 && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(p->poll_once(1000ms));
  }
  for (auto& th : threads) {
    th.join();
  }
  EXPECT_EQ(ran.load(), 80000);
  std::thread stopper([&] {
    std::this_thread::sleep_for(20ms);
    p->stop();
  });
  EXPECT_FALSE(p->poll());
  stopper.join();
}

// Installs, on the calling thread only, a seccomp filter that makes system call `nr` fail
// with `err`.
bool fail_syscall_on_this_thread(long nr, int err) {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(nr), 0, 1),
      BPF_STMT(BPF_RET | BPF_K,
               SECCOMP_RET_ERRNO | (static_cast<std::uint32_t>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return false;
  }
  return ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

// io_uring_setup fails with EPERM — what a container runtime's default profile or
// kernel.io_uring_disabled=2 does.
bool deny_io_uring_setup_on_this_thread() {
  return fail_syscall_on_this_thread(__NR_io_uring_setup, EPERM);
}

// io_uring_enter fails with EBUSY — the kernel's answer while it cannot take submissions (a CQ
// backlog it cannot post): the submission queue then stays full.
bool refuse_io_uring_enter_on_this_thread() {
  return fail_syscall_on_this_thread(__NR_io_uring_enter, EBUSY);
}

// modify() while the kernel takes no submissions fills the SQ (a modify of a live request
// queues a cancel and a new poll). The one whose cancel took the last entry and whose new poll
// found no room returned an error with the old request cancelled and no new one: the
// registration was silent from then on, though modify()'s contract keeps the previous
// registration on error. Every registration must still be reported afterwards.
TEST_F(PollerIoUring, modify_refused_for_a_full_sq_keeps_the_registration_armed) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  constexpr int kN = 140;  // more modifies than the 256-entry SQ holds
  std::vector<fd_guard> fds;
  std::vector<std::unique_ptr<recorder>> recs;
  for (int i = 0; i < kN; ++i) {
    fds.emplace_back(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    recs.push_back(std::make_unique<recorder>(fds.back().get()));
    ASSERT_FALSE(p->add(recs.back()->att, interest::read, trigger_mode::level));
  }
  EXPECT_EQ(run_round(*p), 0U);  // every poll request is live in the kernel
  fd_guard odd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  recorder odd_rec(odd.get());
  int refused = -1;
  std::error_code refusal;
  std::thread t([&] {
    ASSERT_TRUE(refuse_io_uring_enter_on_this_thread());
    // One add first (one SQE), so a modify (two SQEs) straddles the end of the queue.
    ASSERT_FALSE(p->add(odd_rec.att, interest::read, trigger_mode::level));
    for (int i = 0; i < kN && refused < 0; ++i) {
      if (std::error_code ec = p->modify(recs[static_cast<std::size_t>(i)]->att, interest::read,
                                         trigger_mode::level)) {
        refused = i;
        refusal = ec;
      }
    }
  });
  t.join();
  ASSERT_GE(refused, 0) << "every modify was taken: the SQ never filled";
  EXPECT_EQ(refusal, std::errc::resource_unavailable_try_again) << refusal.message();
  const std::uint64_t one = 1;
  for (auto& f : fds) {
    ASSERT_EQ(::write(f.get(), &one, sizeof one), 8);
  }
  ASSERT_EQ(::write(odd.get(), &one, sizeof one), 8);
  for (int i = 0; i < 5; ++i) {
    run_round(*p, 100ms);
  }
  std::vector<int> silent;
  for (int i = 0; i < kN; ++i) {
    if (recs[static_cast<std::size_t>(i)]->calls.empty()) {
      silent.push_back(i);
    }
  }
  EXPECT_TRUE(silent.empty()) << silent.size() << " registration(s) never reported, the first #"
                              << silent.front() << " (modify #" << refused << " was refused)";
  EXPECT_FALSE(odd_rec.calls.empty());
  for (auto& r : recs) {
    EXPECT_FALSE(p->remove(r->att));
  }
  EXPECT_FALSE(p->remove(odd_rec.att));
}

// remove() whose cancel finds the SQ full and the kernel taking no submissions reports the
// error and forgets the attachment (poller.h), but the poll request must still be cancelled
// later: it holds a reference to the file, so a socket closed after such a remove() stayed
// open in the kernel until the poller was closed, and the peer never saw EOF.
TEST_F(PollerIoUring, remove_refused_for_a_full_sq_still_releases_the_file) {
  auto p = open_uring();
  ASSERT_TRUE(p);
  constexpr int kN = 140;
  std::vector<fd_guard> fds;
  std::vector<std::unique_ptr<recorder>> recs;
  for (int i = 0; i < kN; ++i) {
    fds.emplace_back(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    recs.push_back(std::make_unique<recorder>(fds.back().get()));
    ASSERT_FALSE(p->add(recs.back()->att, interest::read, trigger_mode::level));
  }
  socket_pair sp;
  recorder victim(sp.a.get());
  ASSERT_FALSE(p->add(victim.att, interest::read, trigger_mode::level));
  EXPECT_EQ(run_round(*p), 0U);  // every poll request is live in the kernel
  std::error_code refusal;
  std::thread t([&] {
    ASSERT_TRUE(refuse_io_uring_enter_on_this_thread());
    // Modifies fill the SQ (refused once it is full), then the remove finds no room either.
    for (auto& r : recs) {
      if (p->modify(r->att, interest::read, trigger_mode::level)) {
        break;
      }
    }
    refusal = p->remove(victim.att);
  });
  t.join();
  EXPECT_EQ(refusal, std::errc::resource_unavailable_try_again) << refusal.message();
  EXPECT_FALSE(victim.att.registered());
  sp.a.reset();
  bool eof = false;
  char c;
  for (int i = 0; i < 100 && !eof; ++i) {
    run_round(*p, 1ms);
    eof = ::read(sp.b.get(), &c, 1) == 0;
  }
  EXPECT_TRUE(eof) << "the socket stayed open in the kernel after remove() and close()";
  EXPECT_TRUE(victim.calls.empty());
  for (auto& r : recs) {
    EXPECT_FALSE(p->remove(r->att));
  }
}

TEST_F(PollerIoUring, refused_setup_is_unsupported_and_automatic_keeps_epoll) {
  std::thread t([] {
    ASSERT_TRUE(deny_io_uring_setup_on_this_thread());
    const std::set<int> before = open_eventfds();
    poller_options o;
    o.backend = backend_kind::io_uring;
    auto u = poller::open(o);
    ASSERT_FALSE(u);
    EXPECT_EQ(u.error(), errc::unsupported);
    EXPECT_EQ(open_eventfds(), before);  // the wake-up eventfd was not leaked
    auto d = poller::open();             // automatic: epoll, unaffected
    ASSERT_TRUE(d);
    EXPECT_EQ((*d)->backend_name(), "epoll");
  });
  t.join();
}

}  // namespace
}  // namespace evnet::test
