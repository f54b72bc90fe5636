// Signal events delivered through the self-pipe (signal_delivery::self_pipe): the portable way,
// the default where there is no signalfd. A binary of its own: test_event's signalfd cases
// block SIGUSR1/SIGUSR2 in the thread, and a blocked signal never reaches a handler.
#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <thread>
#include <vector>

#include "evnet/event.h"

namespace evnet::detail {
// event.cc's test hook: called once the self-pipe has been drained for a signal's last event.
extern void (*g_self_pipe_drained_hook)(int signo);
}  // namespace evnet::detail

namespace {

using namespace std::chrono_literals;
using evnet::ev_flag::persist;
using evnet::ev_flag::signal;
using evnet::ev_flag::timeout;
using clk = std::chrono::steady_clock;

std::unique_ptr<evnet::event_base> make_pipe_base() {
  evnet::event_base_options o;
  o.signals = evnet::signal_delivery::self_pipe;
  auto b = evnet::event_base::create(o);
  EXPECT_TRUE(b.has_value()) << b.error().message();
  return std::move(*b);
}

template <class Pred>
void run_until(evnet::event_base& b, Pred done, std::chrono::milliseconds budget = 2000ms) {
  const auto end = clk::now() + budget;
  while (!done() && clk::now() < end) {
    evnet::timer wake(b, [] {});
    ASSERT_FALSE(wake.attach(10ms));
    ASSERT_FALSE(b.loop_once(false));
  }
}

// The handler the process had before evnet's, to see it restored.
std::atomic<int> g_own_handler_calls{0};
void own_handler(int) {
  g_own_handler_calls.fetch_add(1);
}

void (*current_handler(int signo))(int) {
  struct sigaction now {};
  ::sigaction(signo, nullptr, &now);
  return now.sa_handler;
}

// Puts back the default disposition whatever a test left.
struct restore_default {
  explicit restore_default(int s) : signo(s) {}
  ~restore_default() { std::signal(signo, SIG_DFL); }
  int signo;
};

TEST(event_signals, self_pipe_event_fires_on_each_raise) {
  restore_default guard(SIGUSR1);
  auto b = make_pipe_base();
  std::vector<std::uint32_t> fired;
  evnet::event ev(*b, SIGUSR1, signal | persist, [&](int signo, std::uint32_t f) {
    EXPECT_EQ(signo, SIGUSR1);
    fired.push_back(f);
  });
  ASSERT_FALSE(ev.attach());
  ASSERT_EQ(::raise(SIGUSR1), 0);  // not blocked: evnet's handler runs now and writes the pipe
  run_until(*b, [&] { return !fired.empty(); });
  ASSERT_EQ(fired.size(), 1U);
  EXPECT_EQ(fired[0], signal);
  ASSERT_EQ(::raise(SIGUSR1), 0);
  run_until(*b, [&] { return fired.size() == 2; });
  EXPECT_EQ(fired.size(), 2U);
}

// As event.rearm_keeps_a_signal_delivery_already_queued (signalfd), through the self-pipe: a
// rearm() that pushes the timeout back keeps the delivery already read from the pipe.
TEST(event_signals, self_pipe_rearm_keeps_a_signal_delivery_already_queued) {
  restore_default guard(SIGUSR1);
  auto b = make_pipe_base();
  int calls = 0;
  evnet::event ev(*b, SIGUSR1, signal | persist, [&](int, std::uint32_t) { ++calls; });
  ASSERT_FALSE(ev.set_priority(b->priorities() - 1));
  ASSERT_FALSE(ev.attach(1h));
  bool queued = false;
  evnet::timer pusher(*b, [&] {
    queued = ev.ready();
    EXPECT_FALSE(ev.rearm(1h));
  });
  ASSERT_FALSE(pusher.set_priority(0));
  ASSERT_EQ(::raise(SIGUSR1), 0);  // evnet's handler writes the pipe now
  ASSERT_FALSE(pusher.attach(0ns));
  ASSERT_FALSE(b->loop_once(true));
  EXPECT_TRUE(queued);
  run_until(
      *b, [&] { return calls != 0; }, 200ms);
  EXPECT_EQ(calls, 1) << "the signal was lost by rearm()";
  EXPECT_FALSE(ev.detach());
}

// Self-pipe twins of event.a_signal_caught_before_the_last_detach_is_not_reported_after_it
// and event.a_signal_during_a_one_shot_callback_reaches_the_reattached_event (signalfd).
// A byte written while the event was attached is dropped with the detach, whether or not a
// round read the pipe before the event is attached again (the read used to decide).
TEST(event_signals, self_pipe_a_signal_caught_before_the_last_detach_is_not_reported_after_it) {
  restore_default guard(SIGUSR2);
  std::signal(SIGUSR2, SIG_IGN);  // the disposition restored between detach and attach
  auto b = make_pipe_base();
  int calls = 0;
  evnet::event ev(*b, SIGUSR2, signal | persist, [&](int, std::uint32_t) { ++calls; });
  for (const bool round_between : {true, false}) {
    ASSERT_FALSE(ev.attach());
    ASSERT_EQ(::raise(SIGUSR2), 0);
    ASSERT_FALSE(ev.detach());
    if (round_between) {
      run_until(
          *b, [] { return false; }, 20ms);
    }
    ASSERT_FALSE(ev.attach());
    run_until(
        *b, [] { return false; }, 50ms);
    EXPECT_EQ(calls, 0) << "a signal from before the detach reached the event attached after it"
                        << (round_between ? " (a round between)" : " (no round between)");
    ASSERT_EQ(::raise(SIGUSR2), 0);
    run_until(
        *b, [&] { return calls != 0; }, 500ms);
    EXPECT_EQ(calls, 1);
    calls = 0;
    ASSERT_FALSE(ev.detach());
  }
}

// A delivery that comes once the last detach has drained the pipe is not the base's: the
// previous disposition takes it, and it never reaches an event attached later. The drain used to
// come before the handler's table forgot the pipe, so such a delivery (here: raised by the
// test hook right after the drain) left its byte in the pipe for the next attach.
TEST(event_signals, self_pipe_a_signal_after_the_last_detachs_drain_never_reaches_a_later_event) {
  restore_default guard(SIGUSR2);
  std::signal(SIGUSR2, SIG_IGN);  // the disposition restored by the detach
  auto b = make_pipe_base();
  int calls = 0;
  evnet::event ev(*b, SIGUSR2, signal | persist, [&](int, std::uint32_t) { ++calls; });
  ASSERT_FALSE(ev.attach());
  evnet::detail::g_self_pipe_drained_hook = [](int signo) { ::raise(signo); };
  const std::error_code detached = ev.detach();
  evnet::detail::g_self_pipe_drained_hook = nullptr;
  ASSERT_FALSE(detached);
  ASSERT_FALSE(ev.attach());
  run_until(
      *b, [] { return false; }, 50ms);
  EXPECT_EQ(calls, 0) << "a signal raised after the detach's drain reached the event attached "
                         "after it";
  ASSERT_EQ(::raise(SIGUSR2), 0);
  run_until(
      *b, [&] { return calls != 0; }, 500ms);
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(ev.detach());
}

TEST(event_signals, self_pipe_a_signal_during_a_one_shot_callback_reaches_the_reattached_event) {
  restore_default guard(SIGUSR1);
  std::signal(SIGUSR1, &own_handler);
  g_own_handler_calls = 0;
  auto b = make_pipe_base();
  int calls = 0;
  evnet::event ev(*b, SIGUSR1, signal, [&](int, std::uint32_t) {
    if (++calls == 1) {
      EXPECT_EQ(::raise(SIGUSR1), 0);
      EXPECT_FALSE(ev.attach());
    }
  });
  ASSERT_FALSE(ev.attach());
  ASSERT_EQ(::raise(SIGUSR1), 0);
  run_until(
      *b, [&] { return calls >= 2; }, 500ms);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(g_own_handler_calls.load(), 0) << "the previous handler took the signal meanwhile";
  EXPECT_FALSE(ev.detach());
}

// Self-pipe twin of event.a_drain_inside_a_one_shot_signal_callback_keeps_its_own_signals_delivery:
// the stop of SIGUSR2's last event, inside SIGUSR1's one-shot callback, drains the pipe and
// read SIGUSR1's byte while no event of it was linked: the re-attached event never saw it.
TEST(event_signals, self_pipe_a_drain_inside_a_one_shot_signal_callback_keeps_its_delivery) {
  restore_default guard1(SIGUSR1);
  restore_default guard2(SIGUSR2);
  auto b = make_pipe_base();
  int calls = 0;
  evnet::event other(*b, SIGUSR2, signal | persist, [](int, std::uint32_t) {});
  evnet::event ev(*b, SIGUSR1, signal, [&](int, std::uint32_t) {
    if (++calls == 1) {
      EXPECT_EQ(::raise(SIGUSR1), 0);  // evnet's handler writes the pipe now
      EXPECT_FALSE(other.detach());    // SIGUSR2's last event: its stop drains the pipe
      EXPECT_FALSE(ev.attach());
    }
  });
  ASSERT_FALSE(other.attach());
  ASSERT_FALSE(ev.attach());
  ASSERT_EQ(::raise(SIGUSR1), 0);
  run_until(
      *b, [&] { return calls >= 2; }, 500ms);
  EXPECT_EQ(calls, 2) << "the SIGUSR1 read by SIGUSR2's drain was lost";
  EXPECT_FALSE(ev.detach());
}

// Several bases watching one signal each see every delivery (event.h), on this path as with
// signalfd (event.every_base_watching_a_signal_sees_each_delivery).
TEST(event_signals, self_pipe_every_base_watching_a_signal_sees_each_delivery) {
  restore_default guard(SIGUSR1);
  auto b1 = make_pipe_base();
  auto b2 = make_pipe_base();
  int calls1 = 0;
  int calls2 = 0;
  evnet::event e1(*b1, SIGUSR1, signal | persist, [&](int, std::uint32_t) { ++calls1; });
  evnet::event e2(*b2, SIGUSR1, signal | persist, [&](int, std::uint32_t) { ++calls2; });
  ASSERT_FALSE(e1.attach());
  ASSERT_FALSE(e2.attach());
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(::raise(SIGUSR1), 0);
    run_until(
        *b1, [&] { return calls1 == i; }, 500ms);
    run_until(
        *b2, [&] { return calls2 == i; }, 500ms);
    EXPECT_EQ(calls1, i);
    EXPECT_EQ(calls2, i) << "delivery " << i;
  }
  EXPECT_FALSE(e1.detach());
  EXPECT_FALSE(e2.detach());
}

// The handler writes one byte per delivery and drops it when the pipe is full, which is fine
// while the pipe holds a byte of the same signal. A storm of one signal (70,000 before the
// loop reads: more than the 64 KiB pipe holds) filled it with that signal's bytes, and a
// different signal arriving then was dropped entirely: its event never fired.
TEST(event_signals, self_pipe_a_storm_of_one_signal_does_not_drown_another) {
  restore_default guard1(SIGUSR1);
  restore_default guard2(SIGUSR2);
  auto b = make_pipe_base();
  int storm = 0;
  int other = 0;
  evnet::event ev1(*b, SIGUSR1, signal | persist, [&](int, std::uint32_t) { ++storm; });
  evnet::event ev2(*b, SIGUSR2, signal | persist, [&](int, std::uint32_t) { ++other; });
  ASSERT_FALSE(ev1.attach());
  ASSERT_FALSE(ev2.attach());
  for (int i = 0; i < 70'000; ++i) {
    ASSERT_EQ(::raise(SIGUSR1), 0);
  }
  ASSERT_EQ(::raise(SIGUSR2), 0);
  run_until(
      *b, [&] { return other != 0 && storm != 0; }, 500ms);
  EXPECT_EQ(other, 1) << "SIGUSR2 was lost behind the SIGUSR1 storm";
  EXPECT_GE(storm, 1);
  // Later deliveries of both still arrive.
  const int storm_before = storm;
  ASSERT_EQ(::raise(SIGUSR1), 0);
  ASSERT_EQ(::raise(SIGUSR2), 0);
  run_until(
      *b, [&] { return other == 2 && storm > storm_before; }, 500ms);
  EXPECT_EQ(other, 2);
  EXPECT_GT(storm, storm_before);
  EXPECT_FALSE(ev1.detach());
  EXPECT_FALSE(ev2.detach());
}

TEST(event_signals, self_pipe_restores_the_previous_disposition_after_the_last_watcher) {
  restore_default guard(SIGUSR1);
  std::signal(SIGUSR1, &own_handler);
  g_own_handler_calls = 0;
  auto b1 = make_pipe_base();
  auto b2 = make_pipe_base();
  int calls1 = 0;
  int calls2 = 0;
  auto e1 = std::make_unique<evnet::event>(*b1, SIGUSR1, signal | persist,
                                           [&](int, std::uint32_t) { ++calls1; });
  auto e2 = std::make_unique<evnet::event>(*b2, SIGUSR1, signal | persist,
                                           [&](int, std::uint32_t) { ++calls2; });
  ASSERT_FALSE(e1->attach());
  ASSERT_FALSE(e2->attach());
  EXPECT_NE(current_handler(SIGUSR1), &own_handler);

  // Both bases see one delivery; the process's own handler does not run.
  ASSERT_EQ(::raise(SIGUSR1), 0);
  run_until(*b1, [&] { return calls1 == 1; });
  run_until(*b2, [&] { return calls2 == 1; });
  EXPECT_EQ(calls1, 1);
  EXPECT_EQ(calls2, 1);
  EXPECT_EQ(g_own_handler_calls.load(), 0);

  // One watcher left: still evnet's.
  e1.reset();
  EXPECT_NE(current_handler(SIGUSR1), &own_handler);
  ASSERT_EQ(::raise(SIGUSR1), 0);
  run_until(*b2, [&] { return calls2 == 2; });
  EXPECT_EQ(calls2, 2);
  EXPECT_EQ(g_own_handler_calls.load(), 0);

  // None left: the process's handler is back and gets the next one.
  ASSERT_FALSE(e2->detach());
  EXPECT_EQ(current_handler(SIGUSR1), &own_handler);
  ASSERT_EQ(::raise(SIGUSR1), 0);
  EXPECT_EQ(g_own_handler_calls.load(), 1);
  EXPECT_EQ(calls1, 1);
  EXPECT_EQ(calls2, 2);
}

TEST(event_signals, self_pipe_receives_a_signal_that_was_ignored_and_ignores_it_again_after) {
  restore_default guard(SIGUSR2);
  std::signal(SIGUSR2, SIG_IGN);  // as SIGINT is in a background job
  auto b = make_pipe_base();
  int calls = 0;
  {
    evnet::event ev(*b, SIGUSR2, signal, [&](int, std::uint32_t) { ++calls; });
    ASSERT_FALSE(ev.attach());
    ASSERT_EQ(::raise(SIGUSR2), 0);
    ASSERT_FALSE(b->dispatch());  // one-shot: returns after it fired
    EXPECT_EQ(calls, 1);
  }
  EXPECT_EQ(current_handler(SIGUSR2), SIG_IGN);
}

TEST(event_signals, self_pipe_wakes_a_blocked_dispatch_when_another_thread_is_signalled) {
  restore_default guard(SIGUSR1);
  auto b = make_pipe_base();
  std::atomic<bool> fired{false};
  std::atomic<bool> armed{false};
  // Started before attach(), so the thread's signal mask is the process's plain one whatever
  // attach() does to the calling thread. raise() there runs the handler on that thread while
  // the loop thread sleeps in the poller.
  std::thread other([&] {
    while (!armed.load()) {
      std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(50ms);
    ASSERT_EQ(::raise(SIGUSR1), 0);
  });
  evnet::event ev(*b, SIGUSR1, signal | timeout,
                  [&](int, std::uint32_t f) { fired = (f & signal) != 0; });
  ASSERT_FALSE(ev.attach(5s));  // the timeout only bounds a failure
  armed = true;
  const auto start = clk::now();
  ASSERT_FALSE(b->dispatch());
  other.join();
  EXPECT_TRUE(fired.load());
  EXPECT_LT(clk::now() - start, 4s);
}

TEST(event_signals, destroying_a_base_that_still_watches_gives_the_signal_back) {
  restore_default guard(SIGUSR2);
  std::signal(SIGUSR2, &own_handler);
  g_own_handler_calls = 0;
  auto b = make_pipe_base();
  auto ev = std::make_unique<evnet::event>(*b, SIGUSR2, signal, [](int, std::uint32_t) {});
  ASSERT_FALSE(ev->attach());
  EXPECT_NE(current_handler(SIGUSR2), &own_handler);
  b.reset();  // the event is orphaned (the base must outlive its events; this is the fallback)
  EXPECT_EQ(current_handler(SIGUSR2), &own_handler);
  ASSERT_EQ(::raise(SIGUSR2), 0);
  EXPECT_EQ(g_own_handler_calls.load(), 1);
  EXPECT_EQ(ev->attach(), evnet::errc::closed);
}

// The table holds 16 bases per signal (event.h): the 17th is refused with EBUSY and nothing is
// left behind; once one leaves, another may join.
TEST(event_signals, self_pipe_refuses_a_seventeenth_base_for_one_signal) {
  restore_default guard(SIGUSR2);
  std::vector<std::unique_ptr<evnet::event_base>> bases;
  std::vector<std::unique_ptr<evnet::event>> events;
  for (int i = 0; i < 16; ++i) {
    bases.push_back(make_pipe_base());
    events.push_back(std::make_unique<evnet::event>(*bases.back(), SIGUSR2, signal | persist,
                                                    [](int, std::uint32_t) {}));
    ASSERT_FALSE(events.back()->attach()) << "base " << i;
  }
  auto extra_base = make_pipe_base();
  int extra_calls = 0;
  evnet::event extra(*extra_base, SIGUSR2, signal | persist,
                     [&](int, std::uint32_t) { ++extra_calls; });
  EXPECT_EQ(extra.attach(), std::make_error_code(std::errc::device_or_resource_busy));
  EXPECT_FALSE(extra.attached());
  events.front().reset();  // one base leaves
  ASSERT_FALSE(extra.attach());
  ASSERT_EQ(::raise(SIGUSR2), 0);
  run_until(*extra_base, [&] { return extra_calls == 1; });
  EXPECT_EQ(extra_calls, 1);
}

TEST(event_signals, self_pipe_rejects_bad_signal_numbers) {
  auto b = make_pipe_base();
  evnet::event kill_ev(*b, SIGKILL, signal, [](int, std::uint32_t) {});
  EXPECT_EQ(kill_ev.attach(), evnet::errc::invalid_argument);
  evnet::event stop_ev(*b, SIGSTOP, signal, [](int, std::uint32_t) {});
  EXPECT_EQ(stop_ev.attach(), evnet::errc::invalid_argument);
  evnet::event big(*b, 65, signal, [](int, std::uint32_t) {});
  EXPECT_EQ(big.attach(), evnet::errc::invalid_argument);
}

}  // namespace
