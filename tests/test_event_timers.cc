// Tests of the timer structures (wheel, heap) and of timers/tickers on a real event base.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "event/timer_heap.h"
#include "event/timer_wheel.h"
#include "evnet/event.h"

#if defined(EVNET_KQUEUE_SHIM)
#include <sys/event.h>  // the kqueue emulation's kqueue_emul_before_wait()
#endif

namespace {

using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;
using evnet::detail::timer_heap;
using evnet::detail::timer_node;
using evnet::detail::timer_wheel;

constexpr std::int64_t kMs = 1'000'000;

// Drives a structure against a brute-force model with random adds, cancels and time steps
// that span every wheel level (and beyond it, to exercise the far-future clamp).
// small_steps: the clock moves by 0–2 ticks per step and next_deadline() is asked only every
// seventh step, so expire() mostly runs with nothing due (the wheel's horizon fast path) and
// after cancellations that leave its horizon a stale lower bound.
template <class S>
void check_against_model(S& s, std::int64_t tick, bool exact, bool small_steps = false) {
  std::mt19937_64 rng(12345);
  std::vector<timer_node> nodes(4000);
  std::vector<bool> fired(nodes.size());
  std::int64_t now = 1000 * kMs;
  const std::int64_t spans[] = {kMs, 64 * kMs, 4096 * kMs, 262144 * kMs, 1LL << 48};
  for (int step = 0; step < 400; ++step) {
    for (int k = 0; k < 30; ++k) {
      auto i = rng() % nodes.size();
      if (nodes[i].queued()) {
        s.remove(&nodes[i]);
      } else {
        const std::int64_t span = spans[rng() % 5];
        s.add(&nodes[i], now + static_cast<std::int64_t>(rng() % span) - kMs / 2);
        fired[i] = false;
      }
    }
    // Advance by a random amount, sometimes small, sometimes across many levels.
    const auto adv = small_steps ? static_cast<std::int64_t>(rng() % (2 * tick + 1))
                                 : static_cast<std::int64_t>(rng() % spans[rng() % 4]);
    now += adv;
    s.expire(now, [&](timer_node* n) {
      const auto i = static_cast<std::size_t>(n - nodes.data());
      EXPECT_LE(n->deadline, now) << "fired early";
      EXPECT_FALSE(fired[i]);
      fired[i] = true;
    });
    std::size_t queued = 0;
    for (auto& node : nodes) {
      if (!node.queued()) {
        continue;
      }
      ++queued;
      if (exact) {
        ASSERT_GT(node.deadline, now) << "missed at step " << step;
      } else {
        // The wheel fires at tick granularity: a pending node must be due after this tick.
        ASSERT_GT((node.deadline + tick - 1) / tick, now / tick) << "missed " << step;
      }
    }
    ASSERT_EQ(queued, s.size());
    if (small_steps && step % 7 != 0) {
      continue;
    }
    if (auto next = s.next_deadline()) {
      std::int64_t min_deadline = INT64_MAX;
      for (auto& n : nodes) {
        if (n.queued()) {
          min_deadline = std::min(min_deadline, n.deadline);
        }
      }
      EXPECT_LE(*next, (min_deadline + tick - 1) / tick * tick) << "next_deadline too late";
    }
  }
}

TEST(timer_structures, wheel_matches_brute_force_model) {
  timer_wheel w(kMs, 1000 * kMs);
  check_against_model(w, kMs, false);
}

TEST(timer_structures, wheel_matches_model_in_small_steps) {
  timer_wheel w(kMs, 1000 * kMs);
  check_against_model(w, kMs, false, true);
}

TEST(timer_structures, heap_matches_brute_force_model) {
  timer_heap h;
  check_against_model(h, 1, true);
}

TEST(timer_structures, wheel_far_future_timer_fires_after_overflow_refile) {
  timer_wheel w(kMs, 0);
  timer_node far;
  const std::int64_t deadline = (std::int64_t{1} << 43) * kMs;  // beyond the 42-bit span
  w.add(&far, deadline);
  int fired = 0;
  std::int64_t now = 0;
  // Follow next_deadline() like the loop does; each hop must make progress.
  for (int hops = 0; hops < 1000 && fired == 0; ++hops) {
    auto next = w.next_deadline();
    ASSERT_TRUE(next.has_value());
    ASSERT_GE(*next, now);
    now = std::max(now + kMs, *next);
    w.expire(now, [&](timer_node* n) {
      EXPECT_EQ(n, &far);
      EXPECT_GE(now, deadline);
      ++fired;
    });
  }
  EXPECT_EQ(fired, 1);
}

TEST(timer_structures, wheel_expire_callback_may_add_and_remove) {
  timer_wheel w(kMs, 0);
  std::vector<timer_node> n(3);
  w.add(&n[0], 5 * kMs);
  w.add(&n[1], 6 * kMs);
  int count = 0;
  w.expire(10 * kMs, [&](timer_node* x) {
    ++count;
    if (x == &n[0]) {
      w.remove(&n[1]);        // cancel a due sibling
      w.add(&n[2], 9 * kMs);  // already due: fires in this same expire()
    }
  });
  EXPECT_EQ(count, 2);
  EXPECT_TRUE(w.empty());
}

// ---- timers on an event base, both structures --------------------------------------------------

class base_timers : public ::testing::TestWithParam<evnet::timer_structure> {
 protected:
  std::unique_ptr<evnet::event_base> make() {
    evnet::event_base_options o;
    o.timers = GetParam();
    auto b = evnet::event_base::create(o);
    EXPECT_TRUE(b.has_value());
    return std::move(*b);
  }
};

TEST_P(base_timers, timers_never_fire_before_their_deadline) {
  auto b = make();
  std::mt19937 rng(7);
  struct rec {
    clk::time_point earliest;
    clk::time_point fired;
  };
  std::vector<rec> recs(300);
  std::vector<std::unique_ptr<evnet::timer>> ts;
  for (auto& r : recs) {
    const auto delay = std::chrono::microseconds(rng() % 150'000);
    ts.push_back(std::make_unique<evnet::timer>(*b, [&r] { r.fired = clk::now(); }));
    r.earliest = clk::now() + delay;
    ASSERT_FALSE(ts.back()->attach(delay));
  }
  ASSERT_FALSE(b->dispatch());
  for (std::size_t i = 0; i < recs.size(); ++i) {
    EXPECT_GE(recs[i].fired, recs[i].earliest) << "timer " << i << " fired early";
    EXPECT_LT(recs[i].fired - recs[i].earliest, 500ms) << "timer " << i << " very late";
  }
}

TEST_P(base_timers, hundred_thousand_timers_cancelled_from_callbacks) {
  auto b = make();
  constexpr int kN = 100'000;
  std::vector<std::unique_ptr<evnet::timer>> victims;
  victims.reserve(kN);
  int victim_fired = 0;
  for (int i = 0; i < kN; ++i) {
    victims.push_back(std::make_unique<evnet::timer>(*b, [&] { ++victim_fired; }));
    // Spread over 2 s .. 12 s so several wheel levels hold some.
    ASSERT_FALSE(victims.back()->attach(2s + std::chrono::microseconds((i * 7919) % 10'000'000)));
  }
  // 100 killer timers at 1..10 ms each cancel 1% of the victims from their callback.
  std::vector<std::unique_ptr<evnet::timer>> killers;
  int next = 0;
  for (int k = 0; k < 100; ++k) {
    killers.push_back(std::make_unique<evnet::timer>(*b, [&] {
      for (int j = 0; j < kN / 100; ++j) {
        EXPECT_FALSE(victims[static_cast<std::size_t>(next++)]->detach());
      }
    }));
    ASSERT_FALSE(killers.back()->attach(std::chrono::milliseconds(1 + k % 10)));
  }
  const auto start = clk::now();
  ASSERT_FALSE(b->dispatch());  // returns as soon as nothing is attached
  EXPECT_EQ(next, kN);
  EXPECT_EQ(victim_fired, 0);
  EXPECT_EQ(b->attached_events(), 0U);
  EXPECT_LT(clk::now() - start, 2s);  // before any victim was due
}

TEST_P(base_timers, timer_cancels_itself_and_a_sibling_due_in_same_round) {
  auto b = make();
  int a = 0, c = 0;
  std::unique_ptr<evnet::timer> t2;
  evnet::timer t1(*b, [&] {
    ++a;
    t2.reset();  // due in the same round, already in the ready queue
  });
  t2 = std::make_unique<evnet::timer>(*b, [&] { ++c; });
  ASSERT_FALSE(t1.set_priority(0));
  ASSERT_FALSE(t1.attach(5ms));
  ASSERT_FALSE(t2->attach(5ms));
  std::this_thread::sleep_for(10ms);
  ASSERT_FALSE(b->dispatch());
  EXPECT_EQ(a, 1);
  EXPECT_EQ(c, 0);
}

// A delay as large as nanoseconds::max() is "never" (in our lifetime), not a deadline that
// wrapped into the past: it used to overflow (UBSan: signed overflow) and fire at once.
TEST_P(base_timers, huge_delays_do_not_wrap_into_the_past) {
  auto b = make();
  int huge_fired = 0;
  bool short_fired = false;
  const auto max = std::chrono::nanoseconds::max();
  evnet::timer t1(*b, [&] { ++huge_fired; });
  evnet::timer t2(*b, [&] { ++huge_fired; });
  evnet::ticker k(*b, [&] { ++huge_fired; });
  evnet::timer near_max(*b, [&] { ++huge_fired; });
  evnet::timer shortt(*b, [&] { short_fired = true; });
  ASSERT_FALSE(t1.attach(max));
  ASSERT_FALSE(t2.attach(1ms));
  ASSERT_FALSE(t2.rearm(max));
  ASSERT_FALSE(k.attach(max));
  ASSERT_FALSE(near_max.attach(max - 1ms));
  ASSERT_FALSE(shortt.attach(20ms));
  const auto start = clk::now();
  while (!short_fired && clk::now() - start < 5s) {
    ASSERT_FALSE(b->loop_once());
  }
  EXPECT_TRUE(short_fired);
  for (int i = 0; i < 3; ++i) {
    ASSERT_FALSE(b->loop_once(true));
  }
  EXPECT_EQ(huge_fired, 0);
  EXPECT_TRUE(t1.attached());
  EXPECT_TRUE(k.attached());
}

TEST_P(base_timers, rearm_pushes_the_deadline_back) {
  auto b = make();
  clk::time_point fired{};
  evnet::timer t(*b, [&] { fired = clk::now(); });
  ASSERT_FALSE(t.attach(30ms));
  const auto start = clk::now();
  // Re-arm every 10 ms for 100 ms: it must not fire until 30 ms after the last re-arm.
  int rearms = 0;
  evnet::ticker pusher(*b, [&] {
    if (++rearms <= 10) {
      EXPECT_FALSE(t.rearm(30ms));
    }
  });
  ASSERT_FALSE(pusher.attach(10ms));
  while (fired == clk::time_point{} && clk::now() - start < 2s) {
    ASSERT_FALSE(b->loop_once());
  }
  ASSERT_NE(fired, clk::time_point{});
  EXPECT_GE(fired - start, 130ms);
}

TEST_P(base_timers, ticker_over_one_second_fires_expected_count_without_drift) {
  auto b = make();
  std::vector<clk::time_point> ticks;
  std::vector<clk::time_point> deadlines;
  evnet::ticker* self = nullptr;
  evnet::ticker t(*b, [&] {
    ticks.push_back(clk::now());
    deadlines.push_back(self->deadline());  // the next deadline, already re-armed
    std::this_thread::sleep_for(2ms);       // callback work must not push the schedule back
  });
  self = &t;
  const auto start = clk::now();
  ASSERT_FALSE(t.attach(10ms));
  const auto first_deadline = t.deadline();
  evnet::timer stop(*b, [&] { b->exit(); });
  ASSERT_FALSE(stop.attach(1005ms));
  ASSERT_FALSE(b->dispatch());
  // 100 periods fit in 1 s. A ticker that drifted by its 2 ms of callback work would manage
  // about 1 s / 12 ms = 83; allow for a loaded 2-core machine, where a tick whose whole period
  // was missed is skipped (not replayed).
  EXPECT_GE(ticks.size(), 88U);
  EXPECT_LE(ticks.size(), 101U);
  // No drift: every scheduled deadline is an exact multiple of the period from the first.
  for (const auto& d : deadlines) {
    EXPECT_EQ((d - first_deadline) % 10ms, 0ns);
  }
  // Each tick fires close to its own deadline (deadlines[i] is the next one, so subtract a
  // period); the median is robust to a few scheduling hiccups.
  std::vector<clk::duration> lags;
  for (std::size_t i = 0; i < ticks.size(); ++i) {
    lags.push_back(ticks[i] - (deadlines[i] - 10ms));
  }
  ASSERT_FALSE(lags.empty());
  for (const auto& l : lags) {
    EXPECT_GE(l, 0ns) << "a tick fired before its deadline";
  }
  std::nth_element(lags.begin(), lags.begin() + lags.size() / 2, lags.end());
  EXPECT_LT(lags[lags.size() / 2], 5ms);
  EXPECT_GE(ticks.front() - start, 10ms);
}

// A tick left queued by exit() (the rest of the round's ready events wait for the next round)
// runs when the loop resumes, possibly many periods later. Its next deadline was computed from
// the round's cached time, stale then (no other timer made the round read the clock), so it
// lay in the past and the ticker fired again at once: the missed ticks were replayed as a
// burst of two instead of skipped.
TEST_P(base_timers, tick_deferred_by_exit_skips_the_periods_missed_meanwhile) {
  auto b = make();
  int ticks = 0;
  evnet::ticker t(*b, [&] { ++ticks; });
  evnet::timer stopper(*b, [&] { b->exit(); });
  ASSERT_FALSE(stopper.set_priority(0));  // runs first, and its exit() leaves the tick queued
  ASSERT_FALSE(t.set_priority(b->priorities() - 1));
  ASSERT_FALSE(stopper.attach(100ms));
  ASSERT_FALSE(t.attach(200ms));
  std::this_thread::sleep_for(250ms);  // both due
  EXPECT_EQ(b->loop_once(true), evnet::errc::stopped);
  EXPECT_EQ(ticks, 0);
  std::this_thread::sleep_for(1000ms);  // five periods with no loop running
  const auto resumed = clk::now();
  ASSERT_FALSE(b->loop_once(true));
  EXPECT_EQ(ticks, 1);
  EXPECT_GT(t.deadline(), resumed)
      << "next tick "
      << std::chrono::duration_cast<std::chrono::milliseconds>(resumed - t.deadline()).count()
      << " ms in the past";
  ASSERT_FALSE(b->loop_once(true));
  EXPECT_EQ(ticks, 1);
  EXPECT_FALSE(t.detach());
}

// A blocking loop_once() with only a timer armed waits for that timer and runs it. The wheel
// answers next_deadline() with the start of the timer's slot, a lower bound that lies up to 63
// ticks early for a timer more than 64 ticks away: the round woke there, re-filed the slot,
// found nothing due and returned having run nothing.
TEST_P(base_timers, blocking_loop_once_runs_the_only_timer_armed) {
  auto b = make();
  for (auto delay : {100ms, 170ms, 250ms}) {
    int fired = 0;
    evnet::timer t(*b, [&] { ++fired; });
    const auto start = clk::now();
    ASSERT_FALSE(t.attach(delay));
    ASSERT_FALSE(b->loop_once(false));
    const auto waited = clk::now() - start;
    EXPECT_EQ(fired, 1) << delay.count() << " ms timer: loop_once() returned after "
                        << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()
                        << " ms having run nothing";
    EXPECT_GE(waited, delay);
  }
}

// A blocking loop_once() that runs a task returns (event.h: a task ends the wait for the
// timer). On a wheel whose tick lagged while it idled (here 60 ms at a 10 us tick: more than
// 4096 ticks), the bound of a new timer's slot lies in the past; the round polled without
// waiting, ran the task, took the empty expiry for the bound's early wake-up and waited again
// for the timer: loop_once() returned 20 ms later, once the timer had run.
TEST_P(base_timers, a_task_ends_a_blocking_loop_once_on_a_wheel_that_idled) {
  evnet::event_base_options o;
  o.timers = GetParam();
  o.wheel_tick = std::chrono::microseconds(10);
  auto created = evnet::event_base::create(o);
  ASSERT_TRUE(created.has_value());
  auto b = std::move(*created);
  for (int i = 0; i < 8; ++i) {  // the bound is in the past for about 4 timers in 5
    std::this_thread::sleep_for(60ms);
    int fired = 0;
    int ran = 0;
    evnet::timer t(*b, [&] { ++fired; });
    ASSERT_FALSE(t.attach(20ms + std::chrono::milliseconds(i)));
    ASSERT_FALSE(b->run_in_loop([&] { ++ran; }));
    const auto start = clk::now();
    EXPECT_FALSE(b->loop_once());
    EXPECT_EQ(ran, 1);
    EXPECT_EQ(fired, 0)
        << "loop_once() waited for the timer after the task ran: "
        << std::chrono::duration_cast<std::chrono::microseconds>(clk::now() - start).count()
        << " us";
  }
}

#if defined(EVNET_KQUEUE_SHIM)
// A blocking loop_once() that runs a task returns, also when the task's wake-up lands exactly as
// the wait for the wheel's early bound of a timer (the start of the timer's slot, here 48 ms
// before it) ends: the round ran the task, found nothing due at the bound and waited again
// until the timer ran. The landing is made exact with the kqueue emulation's hook: the task is
// queued by the loop thread as its wait starts, so no wake-up ends the wait before the bound.
// (Only in the kqueue-emulation build; the round's logic is the same over every backend.)
TEST(base_timers_wheel, a_task_whose_wake_up_lands_on_the_wheels_bound_ends_the_wait) {
  auto created = evnet::event_base::create();
  ASSERT_TRUE(created.has_value());
  auto b = std::move(*created);
  int fired = 0;
  int ran = 0;
  evnet::timer t(*b, [&] { ++fired; });
  // A deadline 48 ticks (1 ms each) past the start of its 64-tick slot, which is the bound.
  const auto due_tick = [&] {
    const auto ns = t.deadline().time_since_epoch() / 1ns;
    return ns / 1'000'000 + (ns % 1'000'000 != 0);
  };
  ASSERT_FALSE(t.attach(300ms));
  ASSERT_FALSE(t.rearm(300ms + std::chrono::milliseconds((48 - due_tick() % 64 + 64) % 64)));
  ASSERT_GE(due_tick() % 64, 40) << "the clock moved between two attaches";
  struct queue_a_task {
    evnet::event_base* base;
    int* ran;
  } q{b.get(), &ran};
  kqueue_emul_before_wait(
      [](void* arg) {
        kqueue_emul_before_wait(nullptr, nullptr);
        auto* q = static_cast<queue_a_task*>(arg);
        EXPECT_FALSE(q->base->run_in_loop([r = q->ran] { ++*r; }));
      },
      &q);
  const auto start = clk::now();
  EXPECT_FALSE(b->loop_once());
  kqueue_emul_before_wait(nullptr, nullptr);
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(fired, 0)
      << "loop_once() waited for the timer after the task ran: "
      << std::chrono::duration_cast<std::chrono::milliseconds>(clk::now() - start).count() << " ms";
}
#endif

TEST_P(base_timers, far_future_timer_can_be_attached_and_cancelled) {
  auto b = make();
  evnet::timer t(*b, [] { ADD_FAILURE() << "must not fire"; });
  ASSERT_FALSE(t.attach(std::chrono::hours(24 * 365 * 200)));
  ASSERT_FALSE(b->loop_once(true));
  EXPECT_TRUE(t.attached());
  ASSERT_FALSE(t.detach());
  EXPECT_FALSE(b->dispatch());
}

TEST_P(base_timers, zero_delay_timer_runs_next_round) {
  auto b = make();
  int n = 0;
  evnet::timer t(*b, [&] { ++n; });
  ASSERT_FALSE(t.attach(0ns));
  ASSERT_FALSE(b->loop_once(true));
  EXPECT_EQ(n, 1);
}

// A zero-delay timer armed from a callback runs in the next round, not the current one: one
// that re-armed itself ran max_callbacks_per_round (1,024) times in one loop_once(), with no
// I/O polled in between.
TEST_P(base_timers, zero_delay_timer_rearmed_from_its_callback_runs_once_per_round) {
  auto b = make();
  int n = 0;
  evnet::timer t(*b, [&] {
    ++n;
    EXPECT_FALSE(t.attach(0ns));
  });
  ASSERT_FALSE(t.attach(0ns));
  ASSERT_FALSE(b->loop_once(true));
  EXPECT_EQ(n, 1);
  ASSERT_FALSE(b->loop_once(true));
  EXPECT_EQ(n, 2);
  EXPECT_FALSE(t.detach());
}

// rearm(0) is detach() + attach(0): inside a round the timer runs in the next round, not the
// current one. An armed timer re-armed at zero from another callback was made ready at once
// and ran in the same round.
TEST_P(base_timers, armed_timer_rearmed_to_zero_inside_a_round_runs_next_round) {
  auto b = make();
  int later = 0;
  evnet::timer t(*b, [&] { ++later; });
  ASSERT_FALSE(t.attach(1h));
  evnet::timer kick(*b, [&] { EXPECT_FALSE(t.rearm(0ns)); });
  ASSERT_FALSE(kick.attach(0ns));
  ASSERT_FALSE(b->loop_once(true));
  EXPECT_EQ(later, 0);
  EXPECT_TRUE(t.attached());
  ASSERT_FALSE(b->loop_once(true));
  EXPECT_EQ(later, 1);
  EXPECT_FALSE(t.attached());
}

// Timers with the same deadline fire in the order they were armed (libuv's promise). The wheel
// fired them in reverse (its slot lists are LIFO), the heap in no particular order.
TEST_P(base_timers, equal_deadlines_fire_in_arm_order) {
  auto b = make();
  std::vector<int> order;
  std::vector<std::unique_ptr<evnet::timer>> timers;
  for (int i = 0; i < 8; ++i) {
    timers.push_back(std::make_unique<evnet::timer>(*b, [&order, i] { order.push_back(i); }));
  }
  // Armed from one timer's callback: the round's cached time makes their deadlines equal.
  // Several delays: how often the wheel re-files a batch (each re-filing reverses a slot's
  // list) depends on the level the deadline lands in.
  for (auto delay : {2ms, 10ms, 200ms}) {
    order.clear();
    evnet::timer arm(*b, [&] {
      for (auto& t : timers) {
        EXPECT_FALSE(t->attach(delay));
      }
    });
    ASSERT_FALSE(arm.attach(1ms));
    const auto give_up = std::chrono::steady_clock::now() + 5s;
    while (order.size() < timers.size() && std::chrono::steady_clock::now() < give_up) {
      ASSERT_FALSE(b->loop_once(false));
    }
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7})) << delay.count() << " ms";
  }
}

INSTANTIATE_TEST_SUITE_P(structures, base_timers,
                         ::testing::Values(evnet::timer_structure::wheel,
                                           evnet::timer_structure::heap),
                         [](const auto& info) {
                           return info.param == evnet::timer_structure::wheel ? "wheel" : "heap";
                         });

}  // namespace
