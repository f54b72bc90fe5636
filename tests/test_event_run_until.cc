// event_base::holder::run_until(): rounds until a flag is set, exit() or an error, with the
// round_end work between rounds. Run on epoll (whose dispatch the round inlines) and io_uring
// (through the backend's virtual call), so both ways into the poller's round are covered.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "evnet/event.h"

namespace {

using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

class run_until : public ::testing::TestWithParam<evnet::backend_kind> {
 protected:
  void SetUp() override {
    evnet::event_base_options o;
    o.poller.backend = GetParam();
    auto b = evnet::event_base::create(o);
    if (!b && b.error() == evnet::errc::unsupported) {
      GTEST_SKIP() << "backend not available here";
    }
    ASSERT_TRUE(b.has_value()) << b.error().message();
    base = std::move(*b);
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  }
  void TearDown() override {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
  // Runs run_until() while another thread does `first`, then sets the flag and wakes the loop
  // with a task; returns how long the run took.
  clk::duration run_until_another_thread_stops_it(const std::function<void()>& first) {
    std::atomic<bool> stop{false};
    std::thread other([&] {
      first();
      stop.store(true, std::memory_order_release);
      EXPECT_FALSE(base->run_in_loop([] {}));
    });
    auto held = base->hold();
    EXPECT_TRUE(held.has_value());
    const auto start = clk::now();
    if (held) {
      EXPECT_FALSE(held->run_until(stop));
    }
    const clk::duration took = clk::now() - start;
    other.join();
    return took;
  }
  std::unique_ptr<evnet::event_base> base;
  int fds[2] = {-1, -1};
};

TEST_P(run_until, a_flag_already_set_returns_before_any_round) {
  int ran = 0;
  evnet::timer t(*base, [&] { ++ran; });
  ASSERT_FALSE(t.attach(0ms));  // would run in the first round
  std::atomic<bool> stop{true};
  auto held = base->hold();
  ASSERT_TRUE(held.has_value());
  EXPECT_FALSE(held->run_until(stop));
  EXPECT_EQ(ran, 0);
  EXPECT_FALSE(held->loop_once(true));  // the round it did not run
  EXPECT_EQ(ran, 1);
}

TEST_P(run_until, a_flag_set_by_a_callback_ends_the_run_after_that_round) {
  // A persistent, level-triggered read event fires once per round while its byte is unread.
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  std::atomic<bool> stop{false};
  int calls = 0;
  evnet::event ev(*base, fds[0], evnet::ev_flag::read | evnet::ev_flag::persist,
                  [&](int, std::uint32_t) {
                    if (++calls == 3) stop.store(true, std::memory_order_release);
                  });
  ASSERT_FALSE(ev.attach());
  auto held = base->hold();
  ASSERT_TRUE(held.has_value());
  EXPECT_FALSE(held->run_until(stop));
  EXPECT_EQ(calls, 3);
}

TEST_P(run_until, another_thread_ends_it_with_the_flag_and_a_task) {
  // Nothing else to do: the loop blocks in the kernel until the task wakes it.
  EXPECT_LT(run_until_another_thread_stops_it([] { std::this_thread::sleep_for(50ms); }), 5s);
}

TEST_P(run_until, exit_ends_it_with_stopped_and_the_next_run_goes_on) {
  std::atomic<bool> stop{false};
  int fired = 0;
  evnet::timer t(*base, [&] {
    if (++fired == 1) {
      base->exit();
    } else {
      stop = true;
    }
  });
  ASSERT_FALSE(t.attach(1ms));
  auto held = base->hold();
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->run_until(stop), evnet::errc::stopped);
  EXPECT_EQ(fired, 1);
  ASSERT_FALSE(t.attach(1ms));
  EXPECT_FALSE(held->run_until(stop));
  EXPECT_EQ(fired, 2);
}

TEST_P(run_until, round_end_runs_after_each_round_that_asked_for_it_and_outside_callbacks) {
  std::atomic<bool> stop{false};
  struct state {
    bool pending = false;
    bool in_callback = false;
    std::vector<std::string> log;
  } st;
  int calls = 0;
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  evnet::event ev(*base, fds[0], evnet::ev_flag::read | evnet::ev_flag::persist,
                  [&](int, std::uint32_t) {
                    st.in_callback = true;
                    ++calls;
                    st.log.push_back("cb" + std::to_string(calls));
                    // Rounds 2 and 4 leave work for the end of the round; 1 and 3 do not.
                    if (calls % 2 == 0) st.pending = true;
                    if (calls == 5) stop = true;
                    st.in_callback = false;
                  });
  ASSERT_FALSE(ev.attach());
  const evnet::event_base::round_end after{&st.pending,
                                           [](void* p) {
                                             auto& s = *static_cast<state*>(p);
                                             EXPECT_FALSE(s.in_callback);
                                             s.log.emplace_back("end");
                                             s.pending = false;
                                           },
                                           &st};
  auto held = base->hold();
  ASSERT_TRUE(held.has_value());
  EXPECT_FALSE(held->run_until(stop, after));
  EXPECT_EQ(st.log, (std::vector<std::string>{"cb1", "cb2", "end", "cb3", "cb4", "end", "cb5"}));
}

TEST_P(run_until, a_timer_due_while_blocked_runs) {
  std::atomic<bool> stop{false};
  const auto start = clk::now();
  evnet::timer t(*base, [&] { stop = true; });
  ASSERT_FALSE(t.attach(30ms));
  auto held = base->hold();
  ASSERT_TRUE(held.has_value());
  EXPECT_FALSE(held->run_until(stop));
  EXPECT_GE(clk::now() - start, 30ms);  // never early (event_base_options::wheel_tick)
}

// A round of run_until() does not test open_ or exit() at its start (only where either can
// come unseen); these pin the places where they can.
TEST_P(run_until, a_poll_callback_that_closes_the_poller_ends_it_with_closed) {
  // The close is deferred to the end of the poller's round, which then ends stopped.
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  std::atomic<bool> stop{false};
  int calls = 0;
  evnet::poll_attachment a;
  a.fd = fds[0];
  a.callback = [&](int, std::uint32_t) {
    ++calls;
    base->poller().close();
    return evnet::poll_action::proceed;
  };
  ASSERT_FALSE(base->poller().add(a, evnet::interest::read));
  auto held = base->hold();
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->run_until(stop), evnet::errc::closed);
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(base->poller().is_open());
}

TEST_P(run_until, an_event_callback_that_closes_the_poller_ends_it_with_closed) {
  // A base event's callback runs outside the poller's round: its close() is at once, and the
  // next round must not wait on the closed poller.
  std::atomic<bool> stop{false};
  int fired = 0;
  evnet::timer t(*base, [&] {
    ++fired;
    base->poller().close();
  });
  ASSERT_FALSE(t.attach(1ms));
  auto held = base->hold();
  ASSERT_TRUE(held.has_value());
  const auto start = clk::now();
  EXPECT_EQ(held->run_until(stop), evnet::errc::closed);
  EXPECT_LT(clk::now() - start, 5s);
  EXPECT_EQ(fired, 1);
}

TEST_P(run_until, exit_from_round_end_work_ends_it_with_stopped) {
  std::atomic<bool> stop{false};
  bool pending = false;
  int ends = 0;
  int fired = 0;
  evnet::timer t(*base, [&] {
    ++fired;
    pending = true;
  });
  ASSERT_FALSE(t.attach(1ms));
  struct ctx {
    evnet::event_base* b;
    bool* pending;
    int* ends;
  } c{base.get(), &pending, &ends};
  const evnet::event_base::round_end after{&pending,
                                           [](void* p) {
                                             auto& x = *static_cast<ctx*>(p);
                                             *x.pending = false;
                                             ++*x.ends;
                                             x.b->exit();
                                           },
                                           &c};
  auto held = base->hold();
  ASSERT_TRUE(held.has_value());
  const auto start = clk::now();
  // Nothing else would wake the loop: without the test after round_end's work it would block.
  EXPECT_EQ(held->run_until(stop, after), evnet::errc::stopped);
  EXPECT_LT(clk::now() - start, 5s);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(ends, 1);
}

TEST_P(run_until, a_poller_stop_without_the_flag_does_not_end_it) {
  // Someone else's stop (poller::stop(), not exit() and not the flag): the run goes on.
  EXPECT_GE(run_until_another_thread_stops_it([this] {
              std::this_thread::sleep_for(20ms);
              base->poller().stop();
              std::this_thread::sleep_for(30ms);
            }),
            50ms);
}

INSTANTIATE_TEST_SUITE_P(backends, run_until,
                         ::testing::Values(evnet::backend_kind::epoll,
                                           evnet::backend_kind::io_uring),
                         [](const auto& info) {
                           return info.param == evnet::backend_kind::epoll ? "epoll" : "io_uring";
                         });

}  // namespace
