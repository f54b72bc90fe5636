// Cross-thread tasks, wake-up coalescing, priorities, the low-priority cap, stop() and close()
// with tasks pending.
#include <pthread.h>
// sigaction() is POSIX, declared by <signal.h>; <csignal> only promises std::signal().
#include <signal.h>  // NOLINT(modernize-deprecated-headers)
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "poller_test_util.h"

namespace evnet::test {
namespace {

using namespace std::chrono_literals;

// Runs rounds until `done()` or the deadline; returns whether done() became true.
template <class Done>
bool poll_until(poller& p, Done done, std::chrono::seconds limit = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    auto r = p.poll_once(100ms);
    EXPECT_TRUE(r) << r.error().message();
    if (!r) {
      return false;
    }
  }
  return true;
}

TEST(PollerTasks, eight_threads_100k_tasks_each_run_exactly_once) {
  auto p = open_poller();
  constexpr int kThreads = 8;
  constexpr int kPerThread = 100000;
  // Touched only by tasks, i.e. on the loop thread.
  std::vector<int> hits(std::size_t{kThreads} * kPerThread, 0);
  std::vector<int> last_high(kThreads, -1);
  std::vector<int> last_low(kThreads, -1);
  int out_of_order = 0;
  int total = 0;
  std::atomic<int> failures{0};
  std::vector<std::thread> producers;
  producers.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const bool high = (i % 3) == 0;
        std::error_code ec =
            p->trigger(high ? task_priority::high : task_priority::low, [&, t, i, high] {
              ++hits[static_cast<std::size_t>(t) * kPerThread + i];
              ++total;
              // Each priority queue is FIFO per producer.
              int& last = high ? last_high[t] : last_low[t];
              if (i <= last) {
                ++out_of_order;
              }
              last = i;
            });
        if (ec) {
          failures.fetch_add(1);
        }
      }
    });
  }
  const bool done = poll_until(
      *p, [&] { return total == kThreads * kPerThread; }, 240s);
  for (auto& th : producers) {
    th.join();
  }
  EXPECT_TRUE(done) << "only " << total << " tasks ran";
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(out_of_order, 0);
  int wrong = 0;
  for (int h : hits) {
    wrong += h != 1;
  }
  EXPECT_EQ(wrong, 0);
  // Nothing left over, and nothing runs twice in later rounds.
  EXPECT_EQ(p->pending_tasks(), 0U);
  EXPECT_TRUE(p->poll_once(0ms));
  EXPECT_EQ(total, kThreads * kPerThread);
}

TEST(PollerTasks, high_runs_before_low_within_a_round) {
  auto p = open_poller();
  std::vector<int> order;
  // Interleave the two priorities; all are queued before the round starts.
  for (int i = 0; i < 20; ++i) {
    const bool high = i % 2 == 1;
    ASSERT_FALSE(p->trigger(high ? task_priority::high : task_priority::low,
                            [&order, i] { order.push_back(i); }));
  }
  EXPECT_EQ(p->pending_tasks(), 20U);
  ASSERT_TRUE(p->poll_once(0ms));
  ASSERT_EQ(order.size(), 20U);
  for (int k = 0; k < 10; ++k) {
    EXPECT_EQ(order[k] % 2, 1) << "position " << k;
  }
  for (int k = 10; k < 20; ++k) {
    EXPECT_EQ(order[k] % 2, 0) << "position " << k;
  }
  // FIFO within a priority.
  for (int k = 1; k < 10; ++k) {
    EXPECT_LT(order[k - 1], order[k]);
  }
  for (int k = 11; k < 20; ++k) {
    EXPECT_LT(order[k - 1], order[k]);
  }
  EXPECT_EQ(p->pending_tasks(), 0U);
}

TEST(PollerTasks, low_tasks_capped_at_256_per_round_high_uncapped) {
  auto p = open_poller();
  int low = 0;
  int high = 0;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(p->trigger(task_priority::low, [&] { ++low; }));
  }
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(p->trigger(task_priority::high, [&] { ++high; }));
  }
  ASSERT_TRUE(p->poll_once(0ms));
  EXPECT_EQ(high, 1000);
  EXPECT_EQ(low, 256);
  EXPECT_EQ(p->pending_tasks(), 744U);
  ASSERT_TRUE(p->poll_once(0ms));
  EXPECT_EQ(low, 512);
  ASSERT_TRUE(p->poll_once(0ms));
  EXPECT_EQ(low, 768);
  ASSERT_TRUE(p->poll_once(0ms));
  EXPECT_EQ(low, 1000);
  EXPECT_EQ(p->pending_tasks(), 0U);
}

TEST(PollerTasks, low_backlog_makes_next_round_not_block) {
  auto p = open_poller();
  int low = 0;
  for (int i = 0; i < 600; ++i) {
    ASSERT_FALSE(p->trigger(task_priority::low, [&] { ++low; }));
  }
  const auto t0 = std::chrono::steady_clock::now();
  // Timeouts of 10 s: each round must return at once because tasks are still queued.
  ASSERT_TRUE(p->poll_once(10s));
  ASSERT_TRUE(p->poll_once(10s));
  ASSERT_TRUE(p->poll_once(10s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(low, 600);
}

TEST(PollerTasks, io_is_dispatched_every_round_while_low_tasks_are_capped) {
  auto p = open_poller();
  socket_pair sp;
  std::vector<int> tasks_seen_by_io;
  int low = 0;
  poll_attachment a;
  a.fd = sp.a.get();
  a.callback = [&](int, std::uint32_t) {
    tasks_seen_by_io.push_back(low);
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(a, interest::read));  // level: readable every round
  write_byte(sp.b.get());
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(p->trigger(task_priority::low, [&] { ++low; }));
  }
  for (int r = 0; r < 4; ++r) {
    ASSERT_TRUE(p->poll_once(1s));
  }
  // I/O ran in every round, interleaved with batches of at most 256 tasks.
  EXPECT_EQ(tasks_seen_by_io, (std::vector<int>{0, 256, 512, 768}));
  EXPECT_EQ(low, 1000);
  EXPECT_FALSE(p->remove(a));
}

TEST(PollerTasks, task_queued_by_a_task_runs_in_the_next_round) {
  auto p = open_poller();
  int stage = 0;
  ASSERT_FALSE(p->trigger(task_priority::high, [&] {
    stage = 1;
    EXPECT_FALSE(p->trigger(task_priority::high, [&] { stage = 2; }));
  }));
  ASSERT_TRUE(p->poll_once(0ms));
  EXPECT_EQ(stage, 1);
  EXPECT_EQ(p->pending_tasks(), 1U);
  ASSERT_TRUE(p->poll_once(10s));  // must not block: a task is pending
  EXPECT_EQ(stage, 2);
}

// Many triggers while a wake-up is pending cost one eventfd write. The poller never reads its
// edge-triggered wake-up eventfd back, so the counter shown in /proc/self/fdinfo is exactly
// the number of wake-up writes.
TEST(PollerTasks, wakeups_are_coalesced_many_triggers_one_write) {
  auto [owner, wakefd] = open_poller_with_wakefd();
  poller* p = owner.get();
  ASSERT_GE(wakefd, 0);
  EXPECT_EQ(eventfd_count(wakefd), 0U);
  int ran = 0;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(p->trigger(task_priority::low, [&] { ++ran; }));
  }
  EXPECT_EQ(eventfd_count(wakefd), 1U);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(p->trigger(task_priority::high, [&] { ++ran; }));
  }
  EXPECT_EQ(eventfd_count(wakefd), 1U);
  ASSERT_TRUE(poll_until(*p, [&] { return ran == 2000; }));
  EXPECT_EQ(eventfd_count(wakefd), 1U);
  // The wake-up was consumed: the next trigger writes again, once.
  for (int i = 0; i < 10; ++i) {
    ASSERT_FALSE(p->trigger(task_priority::low, [&] { ++ran; }));
  }
  EXPECT_EQ(eventfd_count(wakefd), 2U);
  ASSERT_TRUE(poll_until(*p, [&] { return ran == 2010; }));
}

TEST(PollerTasks, wakeups_coalesced_across_four_producer_threads) {
  auto [owner, wakefd] = open_poller_with_wakefd();
  poller* p = owner.get();
  ASSERT_GE(wakefd, 0);
  std::atomic<int> ran{0};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        EXPECT_FALSE(p->trigger(task_priority::high, [&] { ran.fetch_add(1); }));
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  // Nobody polled in between, so the whole burst needed a single write.
  EXPECT_EQ(eventfd_count(wakefd), 1U);
  ASSERT_TRUE(poll_until(*p, [&] { return ran.load() == 40000; }));
}

TEST(PollerTasks, trigger_from_the_loop_needs_no_wakeup_write) {
  auto [owner, wakefd] = open_poller_with_wakefd();
  poller* p = owner.get();
  ASSERT_GE(wakefd, 0);
  int ran = 0;
  ASSERT_FALSE(p->trigger(task_priority::high, [&] {
    ++ran;
    for (int i = 0; i < 100; ++i) {
      EXPECT_FALSE(p->trigger(task_priority::low, [&] { ++ran; }));
    }
  }));
  EXPECT_EQ(eventfd_count(wakefd), 1U);
  ASSERT_TRUE(p->poll_once(0ms));
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(eventfd_count(wakefd), 1U);  // queued on the loop thread: no write
  ASSERT_TRUE(p->poll_once(10s));        // and yet the round does not block
  EXPECT_EQ(ran, 101);
}

TEST(PollerTasks, trigger_from_another_thread_wakes_a_blocked_poll) {
  auto p = open_poller();
  std::atomic<bool> ran{false};
  std::thread producer([&] {
    std::this_thread::sleep_for(50ms);
    EXPECT_FALSE(p->trigger(task_priority::low, [&] { ran = true; }));
  });
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(p->poll_once(20s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  producer.join();
  if (!ran) {
    ASSERT_TRUE(p->poll_once(0ms));  // the task may be queued after the wake-up's round
  }
  EXPECT_TRUE(ran);
}

// Ping-pong between a producer and a loop that blocks without a timeout to speak of: the
// producer queues one task, waits until it ran, queues the next. This hammers the window where
// the loop clears the wake-up flag while a trigger() arrives; a lost wake-up would leave a round
// blocked for its whole 5 s timeout.
TEST(PollerTasks, ping_pong_triggers_never_lose_a_wakeup) {
  auto p = open_poller();
  constexpr int kRounds = 20000;
  std::atomic<int> ran{0};
  std::thread producer([&] {
    for (int i = 0; i < kRounds; ++i) {
      EXPECT_FALSE(p->trigger(i % 2 ? task_priority::high : task_priority::low,
                              [&] { ran.fetch_add(1, std::memory_order_release); }));
      while (ran.load(std::memory_order_acquire) <= i) {
        std::this_thread::yield();
      }
    }
  });
  auto slowest = std::chrono::steady_clock::duration::zero();
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (ran.load(std::memory_order_acquire) < kRounds &&
         std::chrono::steady_clock::now() < deadline) {
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(p->poll_once(5s));
    slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
  }
  producer.join();
  EXPECT_EQ(ran.load(), kRounds);
  EXPECT_LT(slowest, 2s) << "a round waited for its timeout: a wake-up was lost";
}

// A wake-up whose reason is gone must not end a later wait: a task queued from another thread
// while the loop dispatches I/O runs in that same round (the loop sees it queued after the
// dispatch), and its wake-up is fetched by the next round's wait, which returned at once with
// nothing to do, as did the one after a stop() that was consumed before the kernel wait. Both
// rounds must wait for their timeout instead.
TEST(PollerTasks, a_stale_wakeup_does_not_end_a_later_wait_early) {
  auto p = open_poller();
  socket_pair sp;
  int ran = 0;
  poll_attachment a;
  a.fd = sp.a.get();
  a.callback = [&](int, std::uint32_t) {
    char c;
    EXPECT_EQ(::read(sp.a.get(), &c, 1), 1);
    std::thread producer([&] { EXPECT_FALSE(p->trigger(task_priority::high, [&] { ++ran; })); });
    producer.join();
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(a, interest::read));
  write_byte(sp.b.get());
  EXPECT_EQ(run_round(*p, 1000ms), 1U);
  EXPECT_EQ(ran, 1);  // the task ran in the round that queued it
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run_round(*p, 200ms), 0U);
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 150ms) << "the round after a task's round returned after "
                           << std::chrono::duration_cast<std::chrono::microseconds>(waited).count()
                           << " us";
  // stop() between rounds: the next round returns at once (documented) and consumes it; the
  // round after it waits.
  p->stop();
  auto r = p->poll_once(10s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::stopped);
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run_round(*p, 200ms), 0U);
  waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 150ms) << "the round after a consumed stop() returned after "
                           << std::chrono::duration_cast<std::chrono::microseconds>(waited).count()
                           << " us";
  EXPECT_FALSE(p->remove(a));
}

TEST(PollerTasks, stop_from_inside_a_task_ends_poll) {
  auto p = open_poller();
  int after = 0;
  ASSERT_FALSE(p->trigger(task_priority::high, [&] { p->stop(); }));
  ASSERT_FALSE(p->trigger(task_priority::high, [&] { ++after; }));
  EXPECT_FALSE(p->poll());
  EXPECT_EQ(after, 1);  // the round was finished
}

TEST(PollerTasks, stop_from_another_thread_ends_a_blocked_poll) {
  auto p = open_poller();
  std::thread stopper([&] {
    std::this_thread::sleep_for(50ms);
    p->stop();
  });
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(p->poll());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  stopper.join();
}

TEST(PollerTasks, stop_before_poll_returns_without_blocking) {
  auto p = open_poller();
  p->stop();
  auto r = p->poll_once(10s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::stopped);
  // Consumed: the next round is an ordinary one.
  EXPECT_TRUE(p->poll_once(0ms));
}

poller* g_signal_poller = nullptr;
extern "C" void on_alarm(int) {
  g_signal_poller->stop();
}

TEST(PollerTasks, stop_from_a_signal_handler_ends_poll) {
  auto p = open_poller();
  g_signal_poller = p.get();
  struct sigaction sa {};
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(::sigaction(SIGALRM, &sa, nullptr), 0);
  itimerval it{};
  it.it_value.tv_usec = 50000;
  ASSERT_EQ(::setitimer(ITIMER_REAL, &it, nullptr), 0);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(p->poll());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  signal(SIGALRM, SIG_DFL);
  g_signal_poller = nullptr;
}

// Counts live copies of a task's captured state.
struct token {
  std::shared_ptr<int> ref = std::make_shared<int>(0);
};

TEST(PollerTasks, close_with_tasks_pending_destroys_them_without_running) {
  auto p = open_poller();
  token tok;
  int ran = 0;
  for (int i = 0; i < 5; ++i) {
    ASSERT_FALSE(p->trigger(task_priority::high, [&ran, r = tok.ref] { ++ran; }));
  }
  for (int i = 0; i < 7; ++i) {
    ASSERT_FALSE(p->trigger(task_priority::low, [&ran, r = tok.ref] { ++ran; }));
  }
  EXPECT_EQ(tok.ref.use_count(), 13);
  EXPECT_EQ(p->close(), 12U);
  EXPECT_EQ(ran, 0);
  EXPECT_EQ(tok.ref.use_count(), 1);  // all destroyed
  EXPECT_EQ(p->pending_tasks(), 0U);
  // Later triggers fail; their task is destroyed, never run.
  EXPECT_EQ(p->trigger(task_priority::high, [&ran, r = tok.ref] { ++ran; }), errc::closed);
  EXPECT_EQ(p->trigger(task_priority::low, [&ran, r = tok.ref] { ++ran; }), errc::closed);
  EXPECT_EQ(tok.ref.use_count(), 1);
  EXPECT_EQ(p->close(), 0U);  // idempotent
  EXPECT_EQ(ran, 0);
}

// Queues 1,000 low-priority tasks and runs one round, which runs 256 of them: 744 are left in
// the backlog.
void leave_a_low_backlog(poller& p, int& ran) {
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(p.trigger(task_priority::low, [&ran] { ++ran; }));
  }
  ASSERT_TRUE(p.poll_once(0ms));
  EXPECT_EQ(ran, 256);
}

TEST(PollerTasks, close_counts_the_unrun_low_backlog) {
  auto p = open_poller();
  int ran = 0;
  leave_a_low_backlog(*p, ran);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_FALSE(p->trigger(task_priority::high, [&] { ++ran; }));
  EXPECT_EQ(p->close(), 745U);
  EXPECT_EQ(p->pending_tasks(), 0U);
  EXPECT_EQ(ran, 256);
}

// close() from a callback is deferred to the end of the round; what it returns is the number
// of tasks queued at the time of the call, as pending_tasks() counts them: the low-priority
// backlog of earlier rounds included (744 here, dropped unrun by the deferred close). It
// returned 0: only the two queues were counted, not the backlog already swapped out of them.
TEST(PollerTasks, close_inside_a_callback_counts_the_unrun_low_backlog) {
  auto p = open_poller();
  int ran = 0;
  leave_a_low_backlog(*p, ran);
  ASSERT_FALSE(HasFatalFailure());
  socket_pair s;
  poll_attachment a;
  a.fd = s.a.get();
  std::size_t pending_then = 0;
  std::size_t counted = 0;
  a.callback = [&](int, std::uint32_t) {
    pending_then = p->pending_tasks();
    counted = p->close();
    return poll_action::proceed;
  };
  ASSERT_FALSE(p->add(a, interest::read));
  write_byte(s.b.get());
  auto r = p->poll_once(1000ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::closed);
  EXPECT_EQ(pending_then, 744U);
  EXPECT_EQ(counted, 744U);
  EXPECT_EQ(ran, 256);
  EXPECT_EQ(p->pending_tasks(), 0U);
}

TEST(PollerTasks, destroying_poller_destroys_pending_tasks_unrun) {
  token tok;
  int ran = 0;
  {
    auto p = open_poller();
    ASSERT_FALSE(p->trigger(task_priority::low, [&ran, r = tok.ref] { ++ran; }));
  }
  EXPECT_EQ(tok.ref.use_count(), 1);
  EXPECT_EQ(ran, 0);
}

// A task's destructor that calls trigger() while close() destroys it must get errc::closed,
// not deadlock on the queue lock.
TEST(PollerTasks, task_destructor_triggering_during_close_gets_closed) {
  auto p = open_poller();
  std::error_code seen;
  struct on_destroy {
    poller* p;
    std::error_code* seen;
    bool armed = true;
    on_destroy(poller* pp, std::error_code* s) : p(pp), seen(s) {}
    on_destroy(on_destroy&& o) noexcept : p(o.p), seen(o.seen) { o.armed = false; }
    on_destroy(const on_destroy& o) : p(o.p), seen(o.seen) {}
    ~on_destroy() {
      if (armed) {
        *seen = p->trigger(task_priority::low, [] {});
      }
    }
  };
  ASSERT_FALSE(p->trigger(task_priority::low, [d = on_destroy(p.get(), &seen)] { (void)d; }));
  EXPECT_EQ(p->close(), 1U);
  EXPECT_EQ(seen, errc::closed);
}

TEST(PollerTasks, close_inside_a_task_is_deferred_and_drops_the_rest) {
  auto p = open_poller();
  int ran = 0;
  ASSERT_FALSE(p->trigger(task_priority::high, [&] {
    ++ran;
    p->close();
  }));
  ASSERT_FALSE(p->trigger(task_priority::high, [&] { ++ran; }));
  ASSERT_FALSE(p->trigger(task_priority::low, [&] { ++ran; }));
  auto r = p->poll_once(0ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::closed);
  EXPECT_EQ(ran, 1);
  EXPECT_FALSE(p->is_open());
  EXPECT_EQ(p->pending_tasks(), 0U);
  EXPECT_EQ(p->trigger(task_priority::high, [] {}), errc::closed);
}

// Producers keep triggering while the loop runs and then closes: every attempt is accounted
// for exactly once, as run, dropped by close(), or refused with errc::closed.
TEST(PollerTasks, producers_racing_close_every_task_accounted_once) {
  auto p = open_poller();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  int ran = 0;  // loop thread only
  std::atomic<int> refused{0};
  std::atomic<int> other_errors{0};
  std::vector<std::thread> producers;
  producers.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        std::error_code ec =
            p->trigger(i % 2 ? task_priority::high : task_priority::low, [&] { ++ran; });
        if (ec == errc::closed) {
          refused.fetch_add(1);
        } else if (ec) {
          other_errors.fetch_add(1);
        }
      }
    });
  }
  // Run until some tasks ran, then close mid-stream.
  ASSERT_TRUE(poll_until(*p, [&] { return ran >= 1000; }));
  const std::size_t dropped = p->close();
  for (auto& th : producers) {
    th.join();
  }
  EXPECT_EQ(other_errors.load(), 0);
  EXPECT_EQ(static_cast<std::size_t>(ran) + dropped + static_cast<std::size_t>(refused.load()),
            static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_EQ(p->pending_tasks(), 0U);
}

// Once a producer's task has run, its trigger() no longer touches the poller, so the task may
// lead to the poller's destruction (as an engine's stop does) while trigger() is returning.
// The loop spins without blocking, so it often runs the task before the producer's wake-up
// write: that write must already be done (ASan: use after free; TSan: a race with the
// destructor's close of the wake-up descriptor, when it is not).
TEST(PollerTasks, poller_may_be_destroyed_once_a_foreign_task_ran) {
  for (int i = 0; i < 300; ++i) {
    auto p = open_poller();
    std::atomic<bool> ran{false};
    std::thread producer(
        [&] { EXPECT_FALSE(p->trigger(task_priority::high, [&] { ran.store(true); })); });
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!ran.load() && std::chrono::steady_clock::now() < deadline) {
      ASSERT_TRUE(p->poll_once(0ms));
    }
    ASSERT_TRUE(ran.load());
    p.reset();
    producer.join();
  }
}

}  // namespace
}  // namespace evnet::test
