// Readiness semantics of the poller on real descriptors: level/edge/one-shot triggering,
// interest sets, hang-up and error flags (shutdown, close, RST), modify/remove (also inside a
// callback, with the removed attachment freed), the event-array sizing policy, and stop.
#include <sys/socket.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "poller_test_util.h"

namespace evnet::test {
namespace {

using namespace std::chrono_literals;

TEST(PollerSemantics, backend_is_epoll_and_array_starts_at_128) {
  auto p = open_epoll_poller();
  EXPECT_EQ(p->backend_name(), "epoll");
  EXPECT_EQ(p->event_capacity(), 128U);
  EXPECT_TRUE(p->is_open());
}

TEST(PollerSemantics, level_fires_every_round_while_readable) {
  auto p = open_poller();
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::level));
  EXPECT_EQ(run_round(*p), 0U);  // nothing to read yet
  write_byte(sp.b.get());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(run_round(*p), 1U);
  }
  ASSERT_EQ(r.calls.size(), 3U);
  for (auto ev : r.calls) {
    EXPECT_EQ(ev, io_event::readable);
  }
  drain(sp.a.get());
  EXPECT_EQ(run_round(*p), 0U);  // drained: level stops reporting
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, function_pointer_attachment_gets_events_and_context) {
  auto p = open_poller();
  socket_pair sp;
  struct seen_t {
    int calls = 0;
    std::uint32_t events = 0;
    int fd = -1;
  } seen;
  poll_attachment a;
  a.fd = sp.a.get();
  a.context = &seen;
  a.function = [](poll_attachment& att, std::uint32_t ev) {
    auto* s = static_cast<seen_t*>(att.context);
    ++s->calls;
    s->events = ev;
    s->fd = att.fd;
    return poll_action::stop;
  };
  ASSERT_FALSE(p->add(a, interest::read, trigger_mode::edge));
  write_byte(sp.b.get());
  // The function's poll_action::stop ends poll() cleanly, as a callback's would.
  EXPECT_FALSE(p->poll());
  EXPECT_EQ(seen.calls, 1);
  EXPECT_EQ(seen.events, io_event::readable);
  EXPECT_EQ(seen.fd, sp.a.get());
  EXPECT_FALSE(p->remove(a));
}

TEST(PollerSemantics, function_pointer_takes_precedence_over_callback) {
  auto p = open_poller();
  socket_pair sp;
  int function_calls = 0;
  int callback_calls = 0;
  poll_attachment a;
  a.fd = sp.a.get();
  a.context = &function_calls;
  a.function = [](poll_attachment& att, std::uint32_t) {
    ++*static_cast<int*>(att.context);
    return poll_action::proceed;
  };
  a.callback = [&](int, std::uint32_t) {
    ++callback_calls;
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(a, interest::read, trigger_mode::level));
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p), 1U);
  EXPECT_EQ(function_calls, 1);
  EXPECT_EQ(callback_calls, 0);
  EXPECT_FALSE(p->remove(a));
}

TEST(PollerSemantics, edge_fires_once_per_arrival) {
  auto p = open_poller();
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::edge));
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p), 1U);
  // Not drained, but no new arrival: nothing more.
  EXPECT_EQ(run_round(*p), 0U);
  EXPECT_EQ(run_round(*p), 0U);
  // A new arrival fires again, even though the old byte is still unread.
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p), 1U);
  EXPECT_EQ(run_round(*p), 0U);
  EXPECT_EQ(r.calls.size(), 2U);
  EXPECT_EQ(drain(sp.a.get()), 2U);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, oneshot_needs_rearm_via_modify) {
  auto p = open_poller();
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::oneshot));
  EXPECT_EQ(r.att.current_mode(), trigger_mode::oneshot);
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p), 1U);
  // Disarmed: neither the unread byte nor a new arrival is reported.
  EXPECT_EQ(run_round(*p), 0U);
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p), 0U);
  // Re-arming reports the pending data once more.
  ASSERT_FALSE(p->modify(r.att, interest::read));
  EXPECT_EQ(run_round(*p), 1U);
  EXPECT_EQ(run_round(*p), 0U);
  EXPECT_EQ(r.calls.size(), 2U);
  EXPECT_FALSE(p->remove(r.att));
}

// One-shot for read and write: one report, then the whole registration stays disarmed (on
// kqueue, whose EV_DISPATCH disables only the filter that fired, the read filter used to report
// the data that arrived later without a re-arm).
TEST(PollerSemantics, oneshot_read_write_is_reported_once_until_modify) {
  auto p = open_poller();
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read_write, trigger_mode::oneshot));
  EXPECT_EQ(run_round(*p), 1U);  // writable
  ASSERT_EQ(r.calls.size(), 1U);
  EXPECT_NE(r.calls[0] & io_event::writable, 0U);
  // Data arrives: still disarmed, for the read side too.
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p), 0U);
  EXPECT_EQ(run_round(*p), 0U);
  // Re-armed: both conditions hold, and they come in one report.
  ASSERT_FALSE(p->modify(r.att, interest::read_write));
  EXPECT_EQ(run_round(*p), 1U);
  EXPECT_EQ(run_round(*p), 0U);
  ASSERT_EQ(r.calls.size(), 2U);
  EXPECT_NE(r.calls[1] & io_event::readable, 0U);
  EXPECT_NE(r.calls[1] & io_event::writable, 0U);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, oneshot_rearmed_from_inside_its_callback) {
  auto p = open_poller();
  socket_pair sp;
  poll_attachment a;
  int calls = 0;
  a.fd = sp.a.get();
  a.callback = [&](int fd, std::uint32_t) {
    ++calls;
    char c;
    EXPECT_EQ(::read(fd, &c, 1), 1);
    EXPECT_FALSE(p->modify(a, interest::read));  // re-arm for the next byte
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(a, interest::read, trigger_mode::oneshot));
  for (int i = 0; i < 3; ++i) {
    write_byte(sp.b.get());
    EXPECT_EQ(run_round(*p), 1U);
  }
  EXPECT_EQ(calls, 3);
  EXPECT_FALSE(p->remove(a));
}

TEST(PollerSemantics, read_write_interest_reports_both_in_one_call) {
  auto p = open_poller();
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read_write));
  EXPECT_EQ(r.att.current_interest(), interest::read_write);
  EXPECT_EQ(run_round(*p), 1U);  // writable only
  ASSERT_EQ(r.calls.size(), 1U);
  EXPECT_EQ(r.calls[0], io_event::writable);
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p), 1U);
  ASSERT_EQ(r.calls.size(), 2U);
  EXPECT_EQ(r.calls[1], io_event::readable | io_event::writable);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, modify_switches_interest_read_to_write_and_back) {
  auto p = open_poller();
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read));
  EXPECT_EQ(run_round(*p), 0U);  // writable, but nobody asked
  ASSERT_FALSE(p->modify(r.att, interest::write));
  EXPECT_EQ(r.att.current_interest(), interest::write);
  EXPECT_EQ(run_round(*p), 1U);
  EXPECT_EQ(r.calls.back(), io_event::writable);
  write_byte(sp.b.get());
  ASSERT_FALSE(p->modify(r.att, interest::read));
  EXPECT_EQ(run_round(*p), 1U);
  EXPECT_EQ(r.calls.back(), io_event::readable);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, modify_level_to_edge_changes_trigger) {
  auto p = open_poller();
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::level));
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p), 1U);
  EXPECT_EQ(run_round(*p), 1U);
  ASSERT_FALSE(p->modify(r.att, interest::read, trigger_mode::edge));
  EXPECT_EQ(r.att.current_mode(), trigger_mode::edge);
  // EPOLL_CTL_MOD re-evaluates readiness once, then edge semantics apply.
  EXPECT_LE(run_round(*p), 1U);
  EXPECT_EQ(run_round(*p), 0U);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, write_interest_on_full_socket_fires_when_drained) {
  auto p = open_poller();
  socket_pair sp;
  // Fill a's send buffer.
  std::vector<char> chunk(65536, 'z');
  while (::write(sp.a.get(), chunk.data(), chunk.size()) > 0) {
  }
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::write, trigger_mode::edge));
  EXPECT_EQ(run_round(*p), 0U);
  drain(sp.b.get());
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  EXPECT_EQ(r.calls.back(), io_event::writable);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, remove_stops_events_and_keeps_fd_open) {
  auto p = open_poller();
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read));
  EXPECT_TRUE(r.att.registered());
  EXPECT_EQ(p->registered_count(), 1U);
  write_byte(sp.b.get());
  ASSERT_FALSE(p->remove(r.att));
  EXPECT_FALSE(r.att.registered());
  EXPECT_EQ(p->registered_count(), 0U);
  EXPECT_EQ(run_round(*p), 0U);
  EXPECT_TRUE(r.calls.empty());
  char c;
  EXPECT_EQ(::read(sp.a.get(), &c, 1), 1);  // the fd is still usable
  // The same attachment can be registered again.
  ASSERT_FALSE(p->add(r.att, interest::write));
  EXPECT_EQ(run_round(*p), 1U);
  EXPECT_FALSE(p->remove(r.att));
}

// The batch holds events for both a and b. Whichever callback runs first removes the other
// attachment and frees it; the freed one must never be called (ASan reports a use after free
// if the poller calls through the stale pointer).
TEST(PollerSemantics, remove_inside_callback_discards_freed_attachments_later_event) {
  auto p = open_poller();
  socket_pair s1;
  socket_pair s2;
  std::unique_ptr<poll_attachment> att[2];
  int calls = 0;
  for (int i = 0; i < 2; ++i) {
    att[i] = std::make_unique<poll_attachment>();
    att[i]->fd = i == 0 ? s1.a.get() : s2.a.get();
    att[i]->callback = [&, other = 1 - i](int, std::uint32_t) {
      ++calls;
      EXPECT_FALSE(p->remove(*att[other]));
      att[other].reset();  // freed while its event is still in the fetched array
      return poll_action::proceed;
    };
    ASSERT_FALSE(p->add(*att[i], interest::read));
  }
  write_byte(s1.b.get());
  write_byte(s2.b.get());
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(p->registered_count(), 1U);
  for (auto& a : att) {
    if (a) {
      EXPECT_FALSE(p->remove(*a));
    }
  }
}

// Same, with many attachments in one batch: the first callback removes and frees all others.
TEST(PollerSemantics, remove_many_inside_callback_none_of_them_called) {
  auto p = open_poller();
  constexpr int kN = 50;
  std::vector<socket_pair> pairs(kN);
  std::vector<std::unique_ptr<poll_attachment>> atts(kN);
  int calls = 0;
  for (int i = 0; i < kN; ++i) {
    atts[i] = std::make_unique<poll_attachment>();
    atts[i]->fd = pairs[i].a.get();
    atts[i]->callback = [&, i](int, std::uint32_t) {
      ++calls;
      for (int j = 0; j < kN; ++j) {
        if (j != i && atts[j]) {
          EXPECT_FALSE(p->remove(*atts[j]));
          atts[j].reset();
        }
      }
      return poll_action::proceed;
    };
    ASSERT_FALSE(p->add(*atts[i], interest::read));
    write_byte(pairs[i].b.get());
  }
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(p->registered_count(), 1U);
  for (auto& a : atts) {
    if (a) {
      EXPECT_FALSE(p->remove(*a));
    }
  }
}

// A randomized version of the two tests above: every round, callbacks remove and free random
// attachments (often ones whose events are later in the same batch), sometimes their own, and
// register fresh ones — frequently at the address just freed — for the same descriptors. A
// callback must only ever run for a live attachment; ASan reports any call through a freed one.
TEST(PollerSemantics, random_remove_free_and_readd_inside_callbacks) {
  auto p = open_poller();
  constexpr int kSlots = 48;
  std::vector<socket_pair> pairs(kSlots);
  std::vector<std::unique_ptr<poll_attachment>> slots(kSlots);
  std::uint64_t rng = 0x9E3779B97F4A7C15ULL;
  auto next = [&rng] {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  };
  long calls = 0;
  long stale_calls = 0;
  std::function<void(int)> make;
  make = [&](int i) {
    auto a = std::make_unique<poll_attachment>();
    a->fd = pairs[i].a.get();
    poll_attachment* self = a.get();
    a->callback = [&, i, self](int fd, std::uint32_t) {
      // Copies, since freeing our own attachment destroys this closure and its captures.
      const int me = i;
      auto& all = slots;
      auto& rand = next;
      auto& pl = *p;
      ++calls;
      if (all[me].get() != self || fd != pairs[me].a.get()) {
        ++stale_calls;
      }
      for (int k = 0; k < 3; ++k) {
        const int j = static_cast<int>(rand() % kSlots);
        const auto dice = rand() % 4;
        if (dice == 0 && all[j]) {
          EXPECT_FALSE(pl.remove(*all[j]));
          all[j].reset();  // may be this very callback's attachment
          if (j == me) {
            return poll_action::proceed;  // nothing captured may be touched now
          }
        } else if (dice == 1 && !all[j]) {
          make(j);  // a new attachment, often at the address just freed
        }
      }
      return poll_action::proceed;
    };
    ASSERT_FALSE(p->add(*a, interest::read, trigger_mode::level));
    slots[i] = std::move(a);
  };
  for (int i = 0; i < kSlots; ++i) {
    make(i);
    write_byte(pairs[i].b.get());  // level-triggered and never drained: ready every round
  }
  for (int round = 0; round < 2000; ++round) {
    ASSERT_TRUE(p->poll_once(0ms));
    for (int i = 0; i < kSlots; ++i) {
      if (!slots[i] && next() % 2 == 0) {
        make(i);
      }
    }
  }
  EXPECT_GT(calls, 10000);
  EXPECT_EQ(stale_calls, 0);
  std::size_t live = 0;
  for (auto& a : slots) {
    if (a) {
      ++live;
      EXPECT_FALSE(p->remove(*a));
    }
  }
  EXPECT_EQ(p->registered_count(), 0U);
  EXPECT_GT(live, 0U);
}

TEST(PollerSemantics, remove_self_inside_callback_then_free) {
  auto p = open_poller();
  socket_pair sp;
  auto a = std::make_unique<poll_attachment>();
  int calls = 0;
  a->fd = sp.a.get();
  a->callback = [&](int, std::uint32_t) {
    ++calls;
    EXPECT_FALSE(p->remove(*a));
    a.reset();  // destroys the running std::function; nothing captured is touched after
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(*a, interest::read_write));
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p), 1U);
  EXPECT_EQ(run_round(*p), 0U);
  EXPECT_EQ(calls, 1);
}

TEST(PollerSemantics, unix_shutdown_reports_read_hangup) {
  auto p = open_poller();
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read));
  ASSERT_EQ(::shutdown(sp.b.get(), SHUT_WR), 0);
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  ASSERT_EQ(r.calls.size(), 1U);
  EXPECT_TRUE(r.calls[0] & io_event::readable);  // EOF is readable
  EXPECT_TRUE(r.calls[0] & io_event::read_hangup);
  EXPECT_FALSE(r.calls[0] & io_event::hangup);
  EXPECT_FALSE(r.calls[0] & io_event::error);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, unix_peer_close_reports_hangup) {
  auto p = open_poller();
  socket_pair sp;
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::read));
  sp.b.reset();
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  ASSERT_EQ(r.calls.size(), 1U);
  EXPECT_TRUE(r.calls[0] & io_event::read_hangup);
  EXPECT_TRUE(r.calls[0] & io_event::hangup);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, hangup_reported_even_to_write_only_interest) {
  auto p = open_poller();
  socket_pair sp;
  std::vector<char> chunk(65536, 'z');
  while (::write(sp.a.get(), chunk.data(), chunk.size()) > 0) {
  }
  recorder r(sp.a.get());
  ASSERT_FALSE(p->add(r.att, interest::write, trigger_mode::edge));
  EXPECT_EQ(run_round(*p), 0U);
  sp.b.reset();
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  ASSERT_FALSE(r.calls.empty());
  EXPECT_TRUE(r.calls.back() & io_event::hangup);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, tcp_fin_reports_read_hangup_then_hangup_after_own_shutdown) {
  auto p = open_poller();
  tcp_pair tp;
  recorder r(tp.server.get());
  ASSERT_FALSE(p->add(r.att, interest::read));
  ASSERT_EQ(::shutdown(tp.client.get(), SHUT_WR), 0);
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  ASSERT_EQ(r.calls.size(), 1U);
  EXPECT_EQ(r.calls[0], io_event::readable | io_event::read_hangup);
  // Both directions closed: EPOLLHUP.
  ASSERT_EQ(::shutdown(tp.server.get(), SHUT_WR), 0);
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  EXPECT_TRUE(r.calls.back() & io_event::hangup);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, tcp_peer_close_reports_read_hangup) {
  auto p = open_poller();
  tcp_pair tp;
  recorder r(tp.server.get());
  ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::edge));
  tp.client.reset();
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  ASSERT_EQ(r.calls.size(), 1U);
  EXPECT_TRUE(r.calls[0] & io_event::read_hangup);
  EXPECT_FALSE(r.calls[0] & io_event::error);
  char c;
  EXPECT_EQ(::read(tp.server.get(), &c, 1), 0);  // EOF
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, tcp_rst_reports_error_and_hangup) {
  auto p = open_poller();
  tcp_pair tp;
  recorder r(tp.server.get());
  ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::edge));
  linger lg{1, 0};  // close() sends RST instead of FIN
  ASSERT_EQ(::setsockopt(tp.client.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  tp.client.reset();
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  ASSERT_EQ(r.calls.size(), 1U);
  EXPECT_TRUE(r.calls[0] & io_event::error);
  EXPECT_TRUE(r.calls[0] & io_event::hangup);
  EXPECT_TRUE(r.calls[0] & io_event::read_hangup);
  int err = 0;
  socklen_t len = sizeof err;
  ASSERT_EQ(::getsockopt(tp.server.get(), SOL_SOCKET, SO_ERROR, &err, &len), 0);
  EXPECT_EQ(err, ECONNRESET);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, pipe_writer_closed_reports_hangup_to_reader) {
  auto p = open_poller();
  pipe_pair pp;
  recorder r(pp.r.get());
  ASSERT_FALSE(p->add(r.att, interest::read));
  pp.w.reset();
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  ASSERT_EQ(r.calls.size(), 1U);
  EXPECT_TRUE(r.calls[0] & io_event::hangup);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, pipe_reader_closed_reports_error_to_writer) {
  auto p = open_poller();
  pipe_pair pp;
  recorder r(pp.w.get());
  ASSERT_FALSE(p->add(r.att, interest::write, trigger_mode::edge));
  EXPECT_EQ(run_round(*p), 1U);  // initially writable
  pp.r.reset();
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  EXPECT_TRUE(r.calls.back() & io_event::error);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, eventfd_is_readable_after_write) {
  auto p = open_poller();
  fd_guard efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  recorder r(efd.get());
  ASSERT_FALSE(p->add(r.att, interest::read, trigger_mode::edge));
  EXPECT_EQ(run_round(*p), 0U);
  std::uint64_t one = 1;
  ASSERT_EQ(::write(efd.get(), &one, sizeof one), 8);
  EXPECT_EQ(run_round(*p), 1U);
  EXPECT_EQ(r.calls[0], io_event::readable);
  EXPECT_FALSE(p->remove(r.att));
}

TEST(PollerSemantics, listener_readable_on_incoming_connection) {
  auto p = open_poller();
  fd_guard listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener.get(), 8), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  poll_attachment a;
  fd_guard accepted;
  a.fd = listener.get();
  a.callback = [&](int fd, std::uint32_t ev) {
    EXPECT_EQ(ev, io_event::readable);
    accepted.reset(::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(a, interest::read, trigger_mode::edge));
  fd_guard client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  EXPECT_GE(accepted.get(), 0);
  EXPECT_FALSE(p->remove(a));
}

// 1100 always-readable eventfds in level mode: each round fills the array, so it doubles
// 128 → 256 → 512 → 1024 and stops at max_events. With no events it halves back, one step per
// kShrinkAfterRounds sparse rounds, down to the initial size.
TEST(PollerSemantics, event_array_grows_to_1024_and_shrinks_back_to_128) {
  auto p = open_poller();
  constexpr int kFds = 1100;
  std::vector<fd_guard> fds;
  std::vector<std::unique_ptr<recorder>> recs;
  for (int i = 0; i < kFds; ++i) {
    fds.emplace_back(::eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC));
    ASSERT_GE(fds.back().get(), 0);
    recs.push_back(std::make_unique<recorder>(fds.back().get()));
    ASSERT_FALSE(p->add(recs.back()->att, interest::read));
  }
  EXPECT_EQ(p->event_capacity(), 128U);
  EXPECT_EQ(run_round(*p), 128U);
  EXPECT_EQ(p->event_capacity(), 256U);
  EXPECT_EQ(run_round(*p), 256U);
  EXPECT_EQ(p->event_capacity(), 512U);
  EXPECT_EQ(run_round(*p), 512U);
  EXPECT_EQ(p->event_capacity(), 1024U);
  EXPECT_EQ(run_round(*p), 1024U);
  EXPECT_EQ(p->event_capacity(), 1024U);  // capped at max_events
  // Level mode rotates the ready list, so every descriptor was reported at least once.
  for (auto& r : recs) {
    EXPECT_FALSE(r->calls.empty());
  }

  for (auto& r : recs) {
    ASSERT_FALSE(p->remove(r->att));
  }
  const unsigned k = 16;  // detail::poller_backend::kShrinkAfterRounds
  std::size_t expected = 1024;
  while (expected > 128) {
    for (unsigned i = 0; i + 1 < k; ++i) {
      EXPECT_EQ(run_round(*p), 0U);
      EXPECT_EQ(p->event_capacity(), expected);  // hysteresis: not yet
    }
    EXPECT_EQ(run_round(*p), 0U);
    expected /= 2;
    EXPECT_EQ(p->event_capacity(), expected);
  }
  for (unsigned i = 0; i < 2 * k; ++i) {
    EXPECT_EQ(run_round(*p), 0U);
  }
  EXPECT_EQ(p->event_capacity(), 128U);  // never below the initial size
}

TEST(PollerSemantics, custom_event_array_bounds_are_honoured) {
  poller_options o;
  o.initial_events = 2;
  o.max_events = 6;
  auto p = open_poller(o);
  EXPECT_EQ(p->event_capacity(), 2U);
  std::vector<fd_guard> fds;
  std::vector<std::unique_ptr<recorder>> recs;
  for (int i = 0; i < 10; ++i) {
    fds.emplace_back(::eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC));
    recs.push_back(std::make_unique<recorder>(fds.back().get()));
    ASSERT_FALSE(p->add(recs.back()->att, interest::read));
  }
  EXPECT_EQ(run_round(*p), 2U);
  EXPECT_EQ(run_round(*p), 4U);
  EXPECT_EQ(run_round(*p), 6U);  // 8 would exceed max_events
  EXPECT_EQ(p->event_capacity(), 6U);
  for (auto& r : recs) {
    ASSERT_FALSE(p->remove(r->att));
  }
}

// Read-like and write-like system calls made by this thread so far (/proc/thread-self/io).
std::pair<long, long> thread_rw_syscalls() {
  std::ifstream in("/proc/thread-self/io");
  std::string key;
  long value = 0;
  long r = -1;
  long w = -1;
  while (in >> key >> value) {
    if (key == "syscr:") {
      r = value;
    }
    if (key == "syscw:") {
      w = value;
    }
  }
  EXPECT_GE(r, 0) << "no task I/O accounting in /proc/thread-self/io";
  return {r, w};
}

// The lean-hot-path promise: with no tasks queued, a round makes no system call besides
// epoll_wait — in particular no read or write of the wake-up eventfd. Tasks queued by the loop
// thread itself need no wake-up write either.
TEST(PollerSemantics, rounds_without_foreign_tasks_make_no_read_or_write_syscalls) {
  auto p = open_epoll_poller();
  socket_pair sp;
  int ran = 0;
  int calls = 0;
  poll_attachment a;
  a.fd = sp.a.get();
  a.callback = [&](int, std::uint32_t) {
    ++calls;
    // Queued on the loop thread, inside the round: no wake-up write is needed.
    EXPECT_FALSE(p->trigger(task_priority::high, [&] { ++ran; }));
    EXPECT_FALSE(p->trigger(task_priority::low, [&] { ++ran; }));
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(a, interest::read_write, trigger_mode::level));
  write_byte(sp.b.get());
  // Reading the counters costs read calls of its own: measure that first.
  const auto m0 = thread_rw_syscalls();
  const auto m1 = thread_rw_syscalls();
  const long self_reads = m1.first - m0.first;
  const auto before = thread_rw_syscalls();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(run_round(*p), 1U);
  }
  const auto after = thread_rw_syscalls();
  EXPECT_EQ(after.first - before.first, self_reads);
  EXPECT_EQ(after.second - before.second, 0);
  EXPECT_EQ(calls, 1000);
  EXPECT_EQ(ran, 2000);  // each round ran the two tasks its callback queued
  EXPECT_FALSE(p->remove(a));
}

TEST(PollerSemantics, callback_stop_ends_poll_after_the_round) {
  auto p = open_poller();
  socket_pair s1;
  socket_pair s2;
  int calls = 0;
  poll_attachment a;
  poll_attachment b;
  a.fd = s1.a.get();
  b.fd = s2.a.get();
  a.callback = [&](int, std::uint32_t) {
    ++calls;
    return calls <= 2 ? poll_action::stop : poll_action::proceed;  // stop once
  };
  b.callback = [&](int, std::uint32_t) {
    ++calls;
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(a, interest::read));
  ASSERT_FALSE(p->add(b, interest::read));
  write_byte(s1.b.get());
  write_byte(s2.b.get());
  EXPECT_FALSE(p->poll());  // a clean stop is an empty error_code
  EXPECT_EQ(calls, 2);      // the round was finished: b ran too
  // The stop was consumed; polling works again.
  calls = 10;
  EXPECT_EQ(run_round(*p), 2U);
  EXPECT_FALSE(p->remove(a));
  EXPECT_FALSE(p->remove(b));
}

TEST(PollerSemantics, poll_once_reports_stopped_when_callback_stops) {
  auto p = open_poller();
  socket_pair sp;
  poll_attachment a;
  a.fd = sp.a.get();
  a.callback = [](int, std::uint32_t) { return poll_action::stop; };
  ASSERT_FALSE(p->add(a, interest::read));
  write_byte(sp.b.get());
  auto r = p->poll_once(1000ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::stopped);
  EXPECT_FALSE(p->remove(a));
}

TEST(PollerSemantics, poll_once_times_out_with_zero_callbacks) {
  auto p = open_poller();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run_round(*p, 30ms), 0U);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 25ms);
}

TEST(PollerSemantics, close_marks_attachments_unregistered_and_keeps_fds_open) {
  auto p = open_poller();
  socket_pair sp;
  recorder r1(sp.a.get());
  recorder r2(sp.b.get());
  ASSERT_FALSE(p->add(r1.att, interest::read));
  ASSERT_FALSE(p->add(r2.att, interest::write));
  EXPECT_EQ(p->registered_count(), 2U);
  EXPECT_EQ(p->close(), 0U);
  EXPECT_FALSE(p->is_open());
  EXPECT_FALSE(r1.att.registered());
  EXPECT_FALSE(r2.att.registered());
  EXPECT_EQ(p->registered_count(), 0U);
  write_byte(sp.b.get());  // both fds still open
  char c;
  EXPECT_EQ(::read(sp.a.get(), &c, 1), 1);
}

TEST(PollerSemantics, destroying_poller_marks_attachments_unregistered) {
  socket_pair sp;
  recorder r(sp.a.get());
  {
    auto p = open_poller();
    ASSERT_FALSE(p->add(r.att, interest::read));
  }
  EXPECT_FALSE(r.att.registered());
}

TEST(PollerSemantics, close_inside_callback_is_deferred_to_end_of_round) {
  auto p = open_poller();
  socket_pair s1;
  socket_pair s2;
  int calls = 0;
  poll_attachment a;
  poll_attachment b;
  a.fd = s1.a.get();
  b.fd = s2.a.get();
  a.callback = b.callback = [&](int, std::uint32_t) {
    ++calls;
    p->close();
    EXPECT_TRUE(p->is_open());  // still open until the round ends
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(a, interest::read));
  ASSERT_FALSE(p->add(b, interest::read));
  write_byte(s1.b.get());
  write_byte(s2.b.get());
  auto r = p->poll_once(1000ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::closed);
  EXPECT_EQ(calls, 2);
  EXPECT_FALSE(p->is_open());
  EXPECT_FALSE(a.registered());
  EXPECT_FALSE(p->poll());  // poll() on a closed poller returns at once, cleanly
}

}  // namespace
}  // namespace evnet::test
