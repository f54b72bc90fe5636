// Timer structures: evnet's hierarchical wheel and 4-ary heap (raw, and through the public
// evnet::timer API on an event_base) against libevent 2.1's evtimer_add/evtimer_del.
//
// Workloads (each benchmark iteration handles kN timers; items/s = timer operations/s):
//   add_cancel  kN timers added with random deadlines 1..61 s out, then all cancelled
//   add_fire    kN timers added with random deadlines 0..1 ms out, then all fired
//   rearm       kR timers pending, each re-armed 10 times (pushed back, as an idle timeout is)
// "raw" rows drive the structure directly with precomputed absolute deadlines; "api" rows go
// through timer::attach/detach/rearm and loop_once (clock read per attach outside the loop,
// callback dispatch), which is what libevent's rows measure too.
#include <benchmark/benchmark.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "event/timer_heap.h"
#include "event/timer_wheel.h"
#include "evnet/event.h"

namespace {

constexpr std::size_t kN = 1'000'000;
constexpr std::size_t kR = 100'000;
constexpr int kRearms = 10;

using evnet::detail::timer_heap;
using evnet::detail::timer_node;
using evnet::detail::timer_wheel;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Random offsets in [lo, lo + span) nanoseconds, fixed seed.
std::vector<std::int64_t> offsets(std::size_t n, std::int64_t lo, std::int64_t span) {
  std::mt19937_64 rng(42);
  std::vector<std::int64_t> v(n);
  for (auto& x : v) {
    x = lo + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span));
  }
  return v;
}

const std::vector<std::int64_t>& cancel_offsets() {
  static const auto v = offsets(kN, 1'000'000'000, 60'000'000'000);
  return v;
}
const std::vector<std::int64_t>& fire_offsets() {
  static const auto v = offsets(kN, 0, 1'000'000);
  return v;
}
const std::vector<std::int64_t>& rearm_offsets() {
  static const auto v = offsets(kR * kRearms, 30'000'000'000, 1'000'000'000);
  return v;
}

timeval to_tv(std::int64_t ns) {
  return timeval{static_cast<time_t>(ns / 1'000'000'000),
                 static_cast<suseconds_t>((ns % 1'000'000'000) / 1000)};
}

// ---- raw structures ----------------------------------------------------------------------------

template <class S>
std::unique_ptr<S> make_structure(std::int64_t now);
template <>
std::unique_ptr<timer_wheel> make_structure<timer_wheel>(std::int64_t now) {
  return std::make_unique<timer_wheel>(1'000'000, now);
}
template <>
std::unique_ptr<timer_heap> make_structure<timer_heap>(std::int64_t) {
  return std::make_unique<timer_heap>();
}

// The add+cancel bodies are out-of-line functions named work_add_cancel_* so that callgrind can
// count exactly their instructions (--toggle-collect='work_add_cancel_*'): a figure that does
// not drift with the load of a shared machine.
template <class S>
[[gnu::noinline]] std::size_t work_add_cancel_raw(S& s, std::vector<timer_node>& nodes,
                                                  const std::vector<std::int64_t>& off,
                                                  std::int64_t now) {
  for (std::size_t i = 0; i < kN; ++i) {
    s.add(&nodes[i], now + off[i]);
  }
  for (std::size_t i = 0; i < kN; ++i) {
    s.remove(&nodes[i]);
  }
  return s.size();
}

template <class S>
void raw_add_cancel(benchmark::State& state) {
  const auto& off = cancel_offsets();
  std::vector<timer_node> nodes(kN);
  for (auto _ : state) {
    const std::int64_t now = now_ns();
    auto s = make_structure<S>(now);
    benchmark::DoNotOptimize(work_add_cancel_raw(*s, nodes, off, now));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kN));
  state.counters["bytes_per_timer"] = sizeof(timer_node);
}

template <class S>
void raw_add_fire(benchmark::State& state) {
  const auto& off = fire_offsets();
  std::vector<timer_node> nodes(kN);
  std::size_t fired = 0;
  for (auto _ : state) {
    const std::int64_t now = now_ns();
    auto s = make_structure<S>(now);
    for (std::size_t i = 0; i < kN; ++i) {
      s->add(&nodes[i], now + off[i]);
    }
    // Time moves forward in 1 ms-ish steps (as loop rounds would) until all have fired.
    for (std::int64_t t = now; !s->empty(); t += 250'000) {
      fired += s->expire(t, [](timer_node*) {});
    }
  }
  benchmark::DoNotOptimize(fired);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kN));
}

template <class S>
void raw_rearm(benchmark::State& state) {
  const auto& off = rearm_offsets();
  std::vector<timer_node> nodes(kR);
  for (auto _ : state) {
    state.PauseTiming();
    const std::int64_t now = now_ns();
    auto s = make_structure<S>(now);
    for (std::size_t i = 0; i < kR; ++i) {
      s->add(&nodes[i], now + off[i]);
    }
    state.ResumeTiming();
    for (int r = 0; r < kRearms; ++r) {
      const std::int64_t t = now + std::int64_t{r} * 1'000'000;  // each pass happens a little later
      for (std::size_t i = 0; i < kR; ++i) {
        s->remove(&nodes[i]);
        s->add(&nodes[i], t + off[static_cast<std::size_t>(r) * kR + i]);
      }
    }
    state.PauseTiming();
    for (std::size_t i = 0; i < kR; ++i) {
      s->remove(&nodes[i]);
    }
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kR * kRearms));
}

// ---- evnet public API
// ----------------------------------------------------------------------------

std::unique_ptr<evnet::event_base> make_base(evnet::timer_structure which) {
  evnet::event_base_options o;
  o.timers = which;
  o.max_callbacks_per_round = kN;
  return std::move(*evnet::event_base::create(o));
}

std::vector<std::unique_ptr<evnet::timer>> make_timers(evnet::event_base& b, std::size_t n,
                                                       std::size_t* counter) {
  std::vector<std::unique_ptr<evnet::timer>> v;
  v.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    v.push_back(std::make_unique<evnet::timer>(b, [counter] { ++*counter; }));
  }
  return v;
}

[[gnu::noinline]] void work_add_cancel_api(std::vector<std::unique_ptr<evnet::timer>>& ts,
                                           const std::vector<std::int64_t>& off) {
  for (std::size_t i = 0; i < kN; ++i) {
    (void)ts[i]->attach(std::chrono::nanoseconds(off[i]));
  }
  for (std::size_t i = 0; i < kN; ++i) {
    (void)ts[i]->detach();
  }
}

void api_add_cancel(benchmark::State& state, evnet::timer_structure which) {
  const auto& off = cancel_offsets();
  auto b = make_base(which);
  std::size_t fired = 0;
  auto ts = make_timers(*b, kN, &fired);
  for (auto _ : state) {
    work_add_cancel_api(ts, off);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kN));
  state.counters["bytes_per_timer"] = sizeof(evnet::timer);
}

void api_add_fire(benchmark::State& state, evnet::timer_structure which) {
  const auto& off = fire_offsets();
  auto b = make_base(which);
  std::size_t fired = 0;
  auto ts = make_timers(*b, kN, &fired);
  for (auto _ : state) {
    fired = 0;
    for (std::size_t i = 0; i < kN; ++i) {
      (void)ts[i]->attach(std::chrono::nanoseconds(off[i]));
    }
    while (fired < kN) {
      (void)b->loop_once(false);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kN));
}

void api_rearm(benchmark::State& state, evnet::timer_structure which) {
  const auto& off = rearm_offsets();
  auto b = make_base(which);
  std::size_t fired = 0;
  auto ts = make_timers(*b, kR, &fired);
  for (auto _ : state) {
    state.PauseTiming();
    for (std::size_t i = 0; i < kR; ++i) {
      (void)ts[i]->attach(std::chrono::nanoseconds(off[i]));
    }
    state.ResumeTiming();
    for (int r = 0; r < kRearms; ++r) {
      for (std::size_t i = 0; i < kR; ++i) {
        (void)ts[i]->rearm(std::chrono::nanoseconds(off[static_cast<std::size_t>(r) * kR + i]));
      }
    }
    state.PauseTiming();
    for (std::size_t i = 0; i < kR; ++i) {
      (void)ts[i]->detach();
    }
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kR * kRearms));
}

// ---- libevent ----------------------------------------------------------------------------------

struct libevent_fixture {
  event_base* base = event_base_new();
  std::vector<event> evs;
  std::size_t fired = 0;
  explicit libevent_fixture(std::size_t n) : evs(n) {
    for (auto& e : evs) {
      event_assign(
          &e, base, -1, 0,
          [](evutil_socket_t, short, void* arg) { ++*static_cast<std::size_t*>(arg); }, &fired);
    }
  }
  ~libevent_fixture() { event_base_free(base); }
};

[[gnu::noinline]] void work_add_cancel_libevent(std::vector<event>& evs,
                                                const std::vector<std::int64_t>& off) {
  for (std::size_t i = 0; i < kN; ++i) {
    const timeval tv = to_tv(off[i]);
    evtimer_add(&evs[i], &tv);
  }
  for (std::size_t i = 0; i < kN; ++i) {
    evtimer_del(&evs[i]);
  }
}

void libevent_add_cancel(benchmark::State& state) {
  const auto& off = cancel_offsets();
  libevent_fixture f(kN);
  for (auto _ : state) {
    work_add_cancel_libevent(f.evs, off);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kN));
  state.counters["bytes_per_timer"] = sizeof(event);
}

void libevent_add_fire(benchmark::State& state) {
  const auto& off = fire_offsets();
  libevent_fixture f(kN);
  for (auto _ : state) {
    f.fired = 0;
    for (std::size_t i = 0; i < kN; ++i) {
      const timeval tv = to_tv(off[i]);
      evtimer_add(&f.evs[i], &tv);
    }
    while (f.fired < kN) {
      event_base_loop(f.base, EVLOOP_ONCE);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kN));
}

void libevent_rearm(benchmark::State& state) {
  const auto& off = rearm_offsets();
  libevent_fixture f(kR);
  for (auto _ : state) {
    state.PauseTiming();
    for (std::size_t i = 0; i < kR; ++i) {
      const timeval tv = to_tv(off[i]);
      evtimer_add(&f.evs[i], &tv);
    }
    state.ResumeTiming();
    for (int r = 0; r < kRearms; ++r) {
      for (std::size_t i = 0; i < kR; ++i) {
        // event_add on a pending timer reschedules it (libevent's own re-arm path).
        const timeval tv = to_tv(off[static_cast<std::size_t>(r) * kR + i]);
        evtimer_add(&f.evs[i], &tv);
      }
    }
    state.PauseTiming();
    for (std::size_t i = 0; i < kR; ++i) {
      evtimer_del(&f.evs[i]);
    }
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kR * kRearms));
}

constexpr auto kWheel = evnet::timer_structure::wheel;
constexpr auto kHeap = evnet::timer_structure::heap;

}  // namespace

BENCHMARK(raw_add_cancel<timer_wheel>)->Name("add_cancel/raw_wheel")->Unit(benchmark::kMillisecond);
BENCHMARK(raw_add_cancel<timer_heap>)->Name("add_cancel/raw_heap4")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(api_add_cancel, wheel, kWheel)
    ->Name("add_cancel/api_wheel")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(api_add_cancel, heap, kHeap)
    ->Name("add_cancel/api_heap4")
    ->Unit(benchmark::kMillisecond);
BENCHMARK(libevent_add_cancel)->Name("add_cancel/libevent")->Unit(benchmark::kMillisecond);

BENCHMARK(raw_add_fire<timer_wheel>)->Name("add_fire/raw_wheel")->Unit(benchmark::kMillisecond);
BENCHMARK(raw_add_fire<timer_heap>)->Name("add_fire/raw_heap4")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(api_add_fire, wheel, kWheel)
    ->Name("add_fire/api_wheel")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(api_add_fire, heap, kHeap)
    ->Name("add_fire/api_heap4")
    ->Unit(benchmark::kMillisecond);
BENCHMARK(libevent_add_fire)->Name("add_fire/libevent")->Unit(benchmark::kMillisecond);

BENCHMARK(raw_rearm<timer_wheel>)->Name("rearm/raw_wheel")->Unit(benchmark::kMillisecond);
BENCHMARK(raw_rearm<timer_heap>)->Name("rearm/raw_heap4")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(api_rearm, wheel, kWheel)->Name("rearm/api_wheel")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(api_rearm, heap, kHeap)->Name("rearm/api_heap4")->Unit(benchmark::kMillisecond);
BENCHMARK(libevent_rearm)->Name("rearm/libevent")->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
