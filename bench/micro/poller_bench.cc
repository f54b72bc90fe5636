// Micro-benchmarks of the poller (Google Benchmark).
//
//   BM_trigger_roundtrip   producers (1 or 4 threads) hand tasks to a loop thread running
//                          poll(); an iteration is a batch of kBatch tasks, timed until the
//                          loop has run all of them (queueing + wake-up + dispatch).
//   BM_trigger_enqueue     producer-side cost of trigger() alone while the loop drains.
//   BM_trigger_in_loop     tasks queued by the loop thread itself (no wake-up write) and run.
//   BM_poll_round          one poll_once(0) with N ready level-triggered eventfds (N = 1, 64,
//                          1024) and trivial callbacks.
//   BM_raw_epoll_round     the same N descriptors with a bare epoll_wait loop, as a baseline.
#include <benchmark/benchmark.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "evnet/poller.h"

namespace {

using namespace std::chrono_literals;

std::unique_ptr<evnet::poller> open_or_die(const evnet::poller_options& o = {}) {
  auto p = evnet::poller::open(o);
  if (!p) {
    std::fprintf(stderr, "poller::open: %s\n", p.error().message().c_str());
    std::abort();
  }
  return std::move(*p);
}

// A poller polled by its own thread for the duration of one benchmark run.
struct loop_thread {
  std::unique_ptr<evnet::poller> p = open_or_die();
  std::thread t{[this] { (void)p->poll(); }};
  ~loop_thread() {
    p->stop();
    t.join();
  }
};

loop_thread* g_loop = nullptr;  // created by thread 0 before the timing loop's start barrier

constexpr int kBatch = 1000;

void BM_trigger_roundtrip(benchmark::State& state) {
  if (state.thread_index() == 0) {
    g_loop = new loop_thread;
  }
  // Each producer counts the completion of its own tasks.
  auto done = std::make_unique<std::atomic<long>>(0);
  long sent = 0;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) {
      (void)g_loop->p->trigger(evnet::task_priority::high,
                               [d = done.get()] { d->fetch_add(1, std::memory_order_relaxed); });
    }
    sent += kBatch;
    while (done->load(std::memory_order_acquire) != sent) {
      std::this_thread::yield();
    }
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["ns_per_task"] =
      benchmark::Counter(static_cast<double>(state.iterations() * kBatch),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  if (state.thread_index() == 0) {
    delete g_loop;
    g_loop = nullptr;
  }
}
BENCHMARK(BM_trigger_roundtrip)->Threads(1)->UseRealTime();
BENCHMARK(BM_trigger_roundtrip)->Threads(4)->UseRealTime();

std::atomic<long> g_enqueued_done{0};

void BM_trigger_enqueue(benchmark::State& state) {
  if (state.thread_index() == 0) {
    g_loop = new loop_thread;
  }
  for (auto _ : state) {
    (void)g_loop->p->trigger(evnet::task_priority::high,
                             [] { g_enqueued_done.fetch_add(1, std::memory_order_relaxed); });
  }
  state.SetItemsProcessed(state.iterations());
  // Tasks the loop has not run yet are destroyed with it; they only touch a global.
  if (state.thread_index() == 0) {
    delete g_loop;
    g_loop = nullptr;
  }
}
BENCHMARK(BM_trigger_enqueue)->Threads(1)->UseRealTime();
BENCHMARK(BM_trigger_enqueue)->Threads(4)->UseRealTime();

void BM_trigger_in_loop(benchmark::State& state) {
  auto p = open_or_die();
  long ran = 0;
  // A task queues the batch from the loop thread, so none of them needs a wake-up write.
  for (auto _ : state) {
    (void)p->trigger(evnet::task_priority::high, [&] {
      for (int i = 0; i < kBatch; ++i) {
        (void)p->trigger(evnet::task_priority::high, [&] { ++ran; });
      }
    });
    (void)p->poll_once(0ms);  // runs the queuing task
    (void)p->poll_once(0ms);  // runs the batch
  }
  if (ran != state.iterations() * kBatch) {
    state.SkipWithError("tasks lost");
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_trigger_in_loop);

struct ready_fds {
  std::vector<int> fds;
  explicit ready_fds(int n) {
    for (int i = 0; i < n; ++i) {
      fds.push_back(::eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC));
    }
  }
  ~ready_fds() {
    for (int fd : fds) {
      ::close(fd);
    }
  }
};

void BM_poll_round(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  evnet::poller_options o;
  o.initial_events = 1024;  // one round sees every ready fd
  auto p = open_or_die(o);
  ready_fds rf(n);
  std::vector<evnet::poll_attachment> atts(static_cast<std::size_t>(n));
  long calls = 0;
  for (int i = 0; i < n; ++i) {
    atts[i].fd = rf.fds[i];
    atts[i].callback = [&calls](int, std::uint32_t) {
      ++calls;
      return evnet::poll_action::proceed;
    };
    (void)p->add(atts[i], evnet::interest::read, evnet::trigger_mode::level);
  }
  for (auto _ : state) {
    auto r = p->poll_once(0ms);
    benchmark::DoNotOptimize(r);
  }
  if (calls != state.iterations() * n) {
    state.SkipWithError("not every fd was dispatched");
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["ns_per_event"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  for (auto& a : atts) {
    (void)p->remove(a);
  }
}
BENCHMARK(BM_poll_round)->Arg(1)->Arg(64)->Arg(1024);

void BM_raw_epoll_round(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  ready_fds rf(n);
  for (int fd : rf.fds) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  std::vector<epoll_event> events(1024);
  long calls = 0;
  for (auto _ : state) {
    const int got = ::epoll_wait(ep, events.data(), 1024, 0);
    for (int i = 0; i < got; ++i) {
      calls += events[i].data.fd >= 0;
    }
    benchmark::DoNotOptimize(calls);
  }
  ::close(ep);
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["ns_per_event"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_raw_epoll_round)->Arg(1)->Arg(64)->Arg(1024);

}  // namespace

BENCHMARK_MAIN();
