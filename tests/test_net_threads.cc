// Cross-thread use of connections and loops: send/send_async/close from other threads, bounded
// send queue, posting tasks, backpressure (pause/resume, high-water, drain). Labelled tsan.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "evnet/conn.h"
#include "evnet/engine.h"
#include "evnet/loop.h"
#include "net_test_util.h"

namespace evnet {
namespace {

using namespace std::chrono_literals;
using test::booted_handler;
using test::connect_tcp;
using test::engine_runner;
using test::local_tcp;
using test::recv_n;
using test::send_all;
using test::wait_for;

// Publishes every opened conn to the test thread.
struct keeper : booted_handler {
  action on_open(conn& c) override {
    std::lock_guard<std::mutex> lock(mu);
    conns.push_back(c.shared_from_this());
    return action::none;
  }
  void on_close(conn& c, std::error_code ec) override {
    (void)c;
    std::lock_guard<std::mutex> lock(mu);
    reasons.push_back(ec);
  }
  std::shared_ptr<conn> wait_conn(std::size_t i = 0) {
    wait_for([&] {
      std::lock_guard<std::mutex> lock(mu);
      return conns.size() > i;
    });
    std::lock_guard<std::mutex> lock(mu);
    return conns.size() > i ? conns[i] : nullptr;
  }
  std::size_t closed() {
    std::lock_guard<std::mutex> lock(mu);
    return reasons.size();
  }
  std::mutex mu;
  std::vector<std::shared_ptr<conn>> conns;
  std::vector<std::error_code> reasons;
};

TEST(net_threads, send_from_other_threads_arrives_in_order_per_thread) {
  keeper h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  auto c = h.wait_conn();
  ASSERT_TRUE(c);
  std::vector<std::thread> ts;
  ts.reserve(3);
  for (int t = 0; t < 3; ++t) {
    ts.emplace_back([c, t] {
      for (int i = 0; i < 200; ++i) {
        ASSERT_FALSE(
            c->send(std::string(1, static_cast<char>('a' + t)) + static_cast<char>('0' + i % 10)));
      }
    });
  }
  for (auto& t : ts) {
    t.join();
  }
  const std::string got = recv_n(fd, std::size_t{3} * 200 * 2);
  ASSERT_EQ(got.size(), 1200u);
  int next[3] = {0, 0, 0};
  for (std::size_t i = 0; i < got.size(); i += 2) {
    const int t = got[i] - 'a';
    ASSERT_TRUE(t >= 0 && t < 3);
    EXPECT_EQ(got[i + 1], static_cast<char>('0' + next[t]++ % 10));
  }
  ::close(fd);
}

TEST(net_threads, send_async_completes_after_the_bytes_reach_the_kernel) {
  keeper h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  auto c = h.wait_conn();
  std::promise<std::error_code> done;
  std::atomic<bool> on_loop{false};
  ASSERT_FALSE(c->send_async("payload", [&](std::error_code ec) {
    on_loop = c->owner().in_loop_thread();
    done.set_value(ec);
  }));
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(f.get());
  EXPECT_TRUE(on_loop.load());
  EXPECT_EQ(recv_n(fd, 7), "payload");
  ::close(fd);
}

TEST(net_threads, send_async_still_buffered_at_close_completes_with_aborted) {
  keeper h;
  engine_options o;
  o.close_linger = 50ms;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  int small = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  auto c = h.wait_conn();
  // 32 MiB the client never reads: most stays buffered; its completion must not be lost.
  std::promise<std::error_code> done;
  ASSERT_FALSE(
      c->send_async(std::string(32u << 20, 'z'), [&](std::error_code ec) { done.set_value(ec); }));
  std::this_thread::sleep_for(100ms);
  c->close();
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get(), make_error_code(errc::aborted));
  ::close(fd);
}

TEST(net_threads, send_to_closed_conn_returns_error_and_never_calls_back) {
  keeper h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  auto c = h.wait_conn();
  ::close(fd);
  ASSERT_TRUE(wait_for([&] { return h.closed() == 1; }));
  EXPECT_EQ(c->state(), conn_state::closed);
  EXPECT_EQ(c->send("late"), make_error_code(errc::closed));
  bool called = false;
  EXPECT_EQ(c->send_async("late", [&](std::error_code) { called = true; }),
            make_error_code(errc::closed));
  c->close();  // harmless
  r.stop();
  EXPECT_FALSE(called);
  // Still safe after the engine has stopped.
  EXPECT_EQ(c->send("after stop"), make_error_code(errc::closed));
}

// Sends 64 KiB messages from the test thread (the cross-thread send path) until one fails or
// 64 MiB were queued; returns the first error, or {} if none failed.
std::error_code send_until_error(conn& c) {
  std::error_code last;
  for (int i = 0; i < 1024 && !last; ++i) {
    last = c.send(std::string(std::size_t{64} * 1024, 'q'));
  }
  return last;
}

TEST(net_threads, send_queue_limit_fails_with_queue_full) {
  keeper h;
  engine_options o;
  o.send_queue_limit = 1u << 20;
  o.send_buffer = 64 * 1024;  // small kernel buffers: the bytes pile up with us
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  int small = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  auto c = h.wait_conn();
  const std::error_code last = send_until_error(*c);
  EXPECT_EQ(last, make_error_code(errc::queue_full));
  EXPECT_TRUE(c->is_open()) << "policy fail keeps the connection";
  ::close(fd);
}

TEST(net_threads, send_queue_limit_with_close_policy_closes) {
  keeper h;
  engine_options o;
  o.send_queue_limit = 1u << 20;
  o.send_buffer = 64 * 1024;
  o.queue_policy = send_queue_policy::close;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  int small = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  auto c = h.wait_conn();
  const std::error_code last = send_until_error(*c);
  EXPECT_EQ(last, make_error_code(errc::queue_full));
  ASSERT_TRUE(wait_for([&] { return h.closed() == 1; }));
  std::lock_guard<std::mutex> lock(h.mu);
  EXPECT_EQ(h.reasons[0], make_error_code(errc::queue_full));
  ::close(fd);
}

TEST(net_threads, close_from_another_thread) {
  keeper h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  auto c = h.wait_conn();
  ASSERT_FALSE(c->send("bye"));
  c->close();
  EXPECT_EQ(test::recv_until_eof(fd), "bye");
  ASSERT_TRUE(wait_for([&] { return h.closed() == 1; }));
  std::lock_guard<std::mutex> lock(h.mu);
  EXPECT_FALSE(h.reasons[0]);
  ::close(fd);
}

TEST(net_threads, abort_from_another_thread_reports_reason) {
  keeper h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  auto c = h.wait_conn();
  c->abort(make_error_code(errc::protocol_error));
  EXPECT_TRUE(test::sees_close(fd));
  ASSERT_TRUE(wait_for([&] { return h.closed() == 1; }));
  std::lock_guard<std::mutex> lock(h.mu);
  EXPECT_EQ(h.reasons[0], make_error_code(errc::protocol_error));
  ::close(fd);
}

TEST(net_threads, post_and_dispatch_run_on_the_loop_thread) {
  keeper h;
  engine_options o;
  o.loops = 3;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}, o));
  std::atomic<int> right{0};
  for (std::size_t i = 0; i < 3; ++i) {
    loop& l = r.get().get_loop(i);
    ASSERT_FALSE(l.post([&] { right += l.in_loop_thread() ? 1 : 100; }));
    ASSERT_FALSE(l.dispatch([&] { right += l.in_loop_thread() ? 1 : 100; }));
    EXPECT_FALSE(l.in_loop_thread());
  }
  ASSERT_TRUE(wait_for([&] { return right.load() >= 6; }));
  EXPECT_EQ(right.load(), 6);
  EXPECT_EQ(r.get().get_loop(0).post(nullptr), make_error_code(errc::invalid_argument));
}

// A posted task is a callback like on_traffic: a close it causes (here an abort, as a failed
// write would) takes effect when it returns, so the task can go on using the conn and whatever
// state its handler keeps for it (which on_close would tear down).
TEST(net_threads, a_close_caused_inside_a_posted_task_takes_effect_when_it_returns) {
  keeper h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  auto c = h.wait_conn();
  std::promise<std::pair<std::size_t, bool>> seen;
  ASSERT_FALSE(c->owner().post([&] {
    c->abort(make_error_code(errc::protocol_error));
    // Still here: on_close has not run and the conn has not changed state under the task.
    seen.set_value({h.closed(), c->state() == conn_state::open});
  }));
  auto f = seen.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  const auto [closed_inside, open_inside] = f.get();
  EXPECT_EQ(closed_inside, 0u) << "on_close ran inside the task";
  EXPECT_TRUE(open_inside);
  ASSERT_TRUE(wait_for([&] { return h.closed() == 1; }));
  EXPECT_TRUE(test::sees_close(fd));
  std::lock_guard<std::mutex> lock(h.mu);
  EXPECT_EQ(h.reasons[0], make_error_code(errc::protocol_error));
  ::close(fd);
}

TEST(net_threads, pause_read_stops_delivery_until_resume) {
  struct h_t : booted_handler {
    action on_traffic(conn& c) override {
      received += c.read_all().size();
      if (!paused_once) {
        paused_once = true;
        c.pause_read();
        self = c.shared_from_this();
        c.owner().run_after(150ms, [this] { self->resume_read(); });
      }
      return action::none;
    }
    std::atomic<std::size_t> received{0};
    bool paused_once = false;
    std::shared_ptr<conn> self;
  } h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp()));
  const int fd = connect_tcp(r.port());
  ASSERT_TRUE(send_all(fd, "first"));
  ASSERT_TRUE(wait_for([&] { return h.received.load() == 5; }));
  ASSERT_TRUE(send_all(fd, "second"));
  std::this_thread::sleep_for(60ms);
  EXPECT_EQ(h.received.load(), 5u) << "paused: nothing delivered";
  ASSERT_TRUE(wait_for([&] { return h.received.load() == 11; }));
  ::close(fd);
  r.stop();
  h.self.reset();
}

TEST(net_threads, high_water_then_drain_callbacks) {
  struct h_t : booted_handler {
    action on_open(conn& c) override {
      for (int i = 0; i < 8; ++i) {
        c.write(std::string(std::size_t{512} * 1024, 'h'));
      }
      return action::none;
    }
    void on_high_water(conn& c) override {
      high++;
      buffered_at_high = c.outbound_size();
    }
    void on_drain(conn& c) override {
      drained++;
      EXPECT_EQ(c.outbound_size(), 0u);
    }
    std::atomic<int> high{0}, drained{0};
    std::atomic<std::size_t> buffered_at_high{0};
  } h;
  engine_options o;
  o.high_water_mark = 1u << 20;
  o.send_buffer = 64 * 1024;  // small kernel buffers so most of the 4 MiB stays with us
  engine_runner r;
  ASSERT_TRUE(r.start(h, local_tcp(), o));
  const int fd = connect_tcp(r.port());
  ASSERT_TRUE(wait_for([&] { return h.high.load() == 1; }));
  EXPECT_GT(h.buffered_at_high.load(), o.high_water_mark);
  EXPECT_EQ(recv_n(fd, std::size_t{8} * 512 * 1024).size(), 8u * 512 * 1024);
  ASSERT_TRUE(wait_for([&] { return h.drained.load() == 1; }));
  EXPECT_EQ(h.high.load(), 1);
  ::close(fd);
}

// A timer made on another thread is created by a task the loop has not run yet. A cancel
// that gets there first — on the loop thread, or from another thread — must still win; the
// creation task then creates nothing.
TEST(net_threads, cancel_overtaking_a_cross_thread_timer_creation_wins) {
  keeper h;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}));
  loop& l = r.get().get_loop(0);
  std::atomic<int> fired{0}, control{0};
  std::atomic<timer_id> id{0};
  std::promise<void> go;
  std::shared_future<void> go_f = go.get_future().share();
  std::promise<void> cancelled_on_loop;
  // Hold the loop inside a task: everything posted after it (the creations below) waits.
  ASSERT_FALSE(l.post([&, go_f] {
    go_f.wait();
    l.cancel(id.load());  // on the loop thread, before the creation task has run
    cancelled_on_loop.set_value();
  }));
  id = l.run_after(1ms, [&] { fired += 1; });
  ASSERT_NE(id.load(), 0u);
  const timer_id other = l.run_after(1ms, [&] { fired += 100; });
  ASSERT_NE(other, 0u);
  l.cancel(other);  // from this thread, also before its creation task has run
  const timer_id kept = l.run_after(1ms, [&] { control++; });
  ASSERT_NE(kept, 0u);
  go.set_value();
  cancelled_on_loop.get_future().wait();
  ASSERT_TRUE(wait_for([&] { return control.load() == 1; }));  // the uncancelled one runs
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(fired.load(), 0);
}

TEST(net_threads, engine_timers_from_many_threads) {
  keeper h;
  engine_options o;
  o.loops = 2;
  engine_runner r;
  ASSERT_TRUE(r.start(h, {}, o));
  std::atomic<int> fired{0};
  std::vector<std::thread> ts;
  ts.reserve(4);
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        const timer_id id = r.get().run_after(1ms, [&] { fired++; });
        EXPECT_NE(id, 0u);
        const timer_id never = r.get().get_loop(1).run_after(10s, [&] { fired += 1000; });
        r.get().cancel(never);
      }
    });
  }
  for (auto& t : ts) {
    t.join();
  }
  ASSERT_TRUE(wait_for([&] { return fired.load() == 100; }));
  r.stop();
  EXPECT_EQ(fired.load(), 100);
}

// Threads holding a conn keep calling send_async() while the engine stops and run() returns.
// Every call must get an answer (an error, or a completion), never touch freed memory: the
// loops used to be destroyed at the end of run() while a sender that had seen the conn open
// was about to use its loop (ASan: heap-use-after-free within a few rounds).
struct holder_handler : booted_handler {
  action on_open(conn& c) override {
    std::lock_guard<std::mutex> lock(mu);
    held = c.shared_from_this();
    return action::none;
  }
  std::shared_ptr<conn> get() {
    std::lock_guard<std::mutex> lock(mu);
    return held;
  }
  std::mutex mu;
  std::shared_ptr<conn> held;
};

TEST(net_threads, send_async_racing_the_end_of_run_is_answered_and_safe) {
  for (int round = 0; round < 40; ++round) {
    holder_handler h;
    engine_options o;
    o.loops = 1;
    o.stop_grace = 0ms;
    engine_runner r;
    ASSERT_TRUE(r.start(h, local_tcp(), o));
    const int fd = connect_tcp(r.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(wait_for([&] { return h.get() != nullptr; }));
    std::shared_ptr<conn> c = h.get();
    std::atomic<bool> go{true};
    std::atomic<long> accepted{0};
    std::atomic<long> completed{0};
    std::vector<std::thread> senders;
    senders.reserve(2);
    for (int t = 0; t < 2; ++t) {
      senders.emplace_back([&] {
        while (go.load()) {
          if (!c->send_async("x", [&completed](std::error_code) { completed++; })) {
            accepted++;
          }
        }
      });
    }
    std::this_thread::sleep_for(2ms);
    r.stop();  // returns after run(): the loops are closed
    std::this_thread::sleep_for(2ms);
    go = false;
    for (auto& t : senders) {
      t.join();
    }
    EXPECT_EQ(c->send("late"), make_error_code(errc::closed));
    {
      std::lock_guard<std::mutex> lock(h.mu);
      h.held.reset();
    }
    c.reset();  // the last reference: completions of sends still queued run now (aborted)
    EXPECT_EQ(completed.load(), accepted.load()) << "round " << round;
    ::close(fd);
  }
}

// Lets `threads` run for `after`, stops the engine while they still run, then stops and joins
// them.
void stop_racing(engine_runner& r, std::atomic<bool>& go, std::vector<std::thread>& threads,
                 std::chrono::microseconds after) {
  std::this_thread::sleep_for(after);
  r.stop();
  go = false;
  for (auto& t : threads) {
    t.join();
  }
}

// Several threads keep calling send_async() on live connections (of two loops) while the engine
// stops. Every send that was accepted must be answered exactly once, by the time run() has
// returned and the senders have finished, with success or an abort/closed error. A sender that
// had seen the conn open could queue its send after the close; when its drain task was then
// refused (the loop had stopped) it took back its own send, but sends other threads had queued
// behind it were accepted and left to the conn's destructor, and a drain task accepted just
// before the loop's last rounds was destroyed unrun. The completion here holds its conn (a
// common pattern), so such an answer never came and the conn leaked.
TEST(net_threads, send_async_racing_stop_is_answered_exactly_once) {
  const auto end = std::chrono::steady_clock::now() + 2s;
  for (int round = 0; round < 60 && std::chrono::steady_clock::now() < end; ++round) {
    keeper h;
    engine_options o;
    o.loops = 2;
    o.stop_grace = 0ms;
    engine_runner r;
    ASSERT_TRUE(r.start(h, local_tcp(), o));
    constexpr std::size_t kConns = 4;
    std::vector<int> fds;
    for (std::size_t i = 0; i < kConns; ++i) {
      fds.push_back(connect_tcp(r.port()));
    }
    ASSERT_TRUE(h.wait_conn(kConns - 1));
    std::vector<std::shared_ptr<conn>> conns;
    {
      std::lock_guard<std::mutex> lock(h.mu);
      conns = h.conns;
    }
    std::atomic<bool> go{true};
    std::atomic<long> accepted{0};
    std::atomic<long> completed{0};
    std::atomic<long> twice{0};
    std::atomic<long> bad{0};
    std::vector<std::thread> senders;
    senders.reserve(4);
    for (int t = 0; t < 4; ++t) {
      senders.emplace_back([&, t] {
        std::size_t i = static_cast<std::size_t>(t);
        while (go.load(std::memory_order_relaxed)) {
          std::shared_ptr<conn> c = conns[i++ % kConns];
          auto once = std::make_shared<std::atomic<bool>>(false);
          const std::error_code ec = c->send_async("x", [&completed, &twice, &bad, c,
                                                         once](std::error_code e) {
            if (once->exchange(true)) {
              twice++;
              return;
            }
            if (e && e != make_error_code(errc::aborted) && e != make_error_code(errc::closed)) {
              bad++;
            }
            completed++;
          });
          if (!ec) {
            accepted++;
          }
        }
      });
    }
    stop_racing(r, go, senders, std::chrono::microseconds(200 * (round % 10)));
    const long before_release = completed.load();
    {
      std::lock_guard<std::mutex> lock(h.mu);
      h.conns.clear();
    }
    conns.clear();
    EXPECT_EQ(before_release, accepted.load())
        << "round " << round << ": accepted sends not answered when run() returned and the "
        << "senders finished (" << completed.load() - before_release
        << " more answered when the test dropped its conns)";
    EXPECT_EQ(completed.load(), accepted.load()) << "round " << round;
    EXPECT_EQ(twice.load(), 0) << "round " << round;
    EXPECT_EQ(bad.load(), 0) << "round " << round;
    for (int fd : fds) {
      ::close(fd);
    }
    if (HasFailure()) {
      break;
    }
  }
}

// Threads keep posting tasks to both loops while the engine stops: a post() that returns {}
// must run its task (loop.h). A post that tested `closed` just before the loop set it used to
// queue its task after the loop's last rounds; the poller's close() then destroyed it unrun.
TEST(net_threads, post_racing_stop_runs_every_accepted_task) {
  const auto end = std::chrono::steady_clock::now() + 2s;
  for (int round = 0; round < 200 && std::chrono::steady_clock::now() < end; ++round) {
    keeper h;
    engine_options o;
    o.loops = 2;
    o.stop_grace = 0ms;
    engine_runner r;
    ASSERT_TRUE(r.start(h, local_tcp(), o));
    std::atomic<bool> go{true};
    std::atomic<long> accepted{0};
    std::atomic<long> ran{0};
    std::vector<std::thread> posters;
    posters.reserve(4);
    for (int t = 0; t < 4; ++t) {
      posters.emplace_back([&, t] {
        loop& l = r.get().get_loop(static_cast<std::size_t>(t % 2));
        while (go.load(std::memory_order_relaxed)) {
          if (!l.post([&ran] { ran++; })) {
            accepted++;
          }
        }
      });
    }
    stop_racing(r, go, posters, std::chrono::microseconds(100 * (round % 10)));
    EXPECT_EQ(ran.load(), accepted.load()) << "round " << round << ": accepted tasks never ran";
    if (HasFailure()) {
      break;
    }
  }
}

}  // namespace
}  // namespace evnet
