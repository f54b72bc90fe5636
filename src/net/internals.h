// evnet — net layer internals shared by conn.cc, loop.cc and engine.cc.
//
// This is an internal header (namespace evnet::detail); it is not installed.
//
// Threading: loop_internals is owned by one loop thread except the members marked atomic or
// "any thread"; engine_internals is shared by every loop thread and only holds immutable-after-
// boot data and atomics.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "evnet/address.h"
#include "evnet/conn.h"
#include "evnet/engine.h"
#include "evnet/event.h"
#include "evnet/handler.h"
#include "evnet/loop.h"
#include "net/socket.h"
#include "net/udp_batch.h"

namespace evnet::detail {

/// send_async completions waiting for their bytes to reach the kernel: (stream offset at which
/// the send ends, callback), in stream order.
struct send_completion_list {
  std::deque<std::pair<std::uint64_t, send_callback>> items;
};

/// One bound address of a run.
struct listen_spec {
  endpoint ep;
  socket_address bound;  // what the kernel gave us (port for port 0)
};

/// A listening (or bound UDP) socket served by one loop.
struct listener {
  listen_spec* spec = nullptr;
  int fd = -1;
  poll_attachment attachment;
  std::shared_ptr<conn> udp;         // the per-datagram conn for UDP listeners
  std::unique_ptr<udp_batch> batch;  // UDP: recvmmsg/sendmmsg buffers
};

/// A socket handed over by engine::adopt(), travelling to its loop in a posted task. If the
/// task never runs (the loop finished first), the destructor closes the fd and gives back the
/// connection counts taken for it.
struct adopt_request {
  int fd = -1;  // -1 once the loop took it
  transport kind = transport::tcp;
  socket_address peer;
  adopt_options options;
  std::atomic<std::size_t>* loop_count = nullptr;
  std::atomic<std::size_t>* engine_count = nullptr;

  adopt_request() = default;
  adopt_request(const adopt_request&) = delete;
  adopt_request& operator=(const adopt_request&) = delete;
  ~adopt_request() { abandon(); }
  /// Closes the fd, if still held, and gives back the counts.
  void abandon() noexcept;
};

/// Per-loop state. Loop thread only unless marked.
struct loop_internals {
  loop_internals(loop& l, engine& e);
  ~loop_internals();

  loop& self;
  engine& eng;
  handler* h = nullptr;
  const engine_options* opts = nullptr;
  std::unique_ptr<event_base> base;
  poller* poll = nullptr;           // base->poller(), cached (stop() uses it from any thread)
  std::unique_ptr<char[]> scratch;  // kScratchSize bytes: reads land here first
  static constexpr std::size_t kScratchSize = 64 * 1024;

  std::thread::id thread_id;
  std::atomic<std::size_t> conn_count{0};        // any thread (snapshot); includes conns in flight
  conn* live_head = nullptr;                     // intrusive list of conns not yet closed
  std::vector<std::shared_ptr<conn>> graveyard;  // closed this round, freed after it
  std::vector<std::unique_ptr<listener>> listeners;
  spare_fd spare;

  struct timer_entry {
    std::unique_ptr<evnet::timer> once;
    std::unique_ptr<evnet::ticker> every;
    std::function<void()> fn;
    bool done = false;
  };
  std::unordered_map<timer_id, std::unique_ptr<timer_entry>> timers;
  std::vector<timer_id> finished_timers;
  // Timers created from another thread whose creation task has not run yet. cancel() removes
  // an id from here (under the mutex) so that the creation task, finding it gone, creates
  // nothing: a cancel that overtakes the creation (from the loop thread, or from a thread
  // whose task would run first) still wins.
  std::mutex pending_timers_mu;
  std::unordered_set<timer_id> pending_timers;
  /// Loop thread: the creation task of a timer made on another thread. Returns false (and
  /// creates nothing) if it was cancelled meanwhile.
  bool take_pending_timer(timer_id id) {
    std::lock_guard lock(pending_timers_mu);
    return pending_timers.erase(id) != 0;
  }

  // The locks of the conns' cross-thread send queues (conn::xq_mu()), striped by conn id:
  // senders to different conns rarely share one, and a conn does not carry a 40-byte mutex.
  static constexpr std::size_t kSendQueueLocks = 16;
  std::array<std::mutex, kSendQueueLocks> send_queue_locks;

  // User callbacks running on this loop (nesting depth). Closes requested while one runs are
  // queued in pending_closes and performed when the outermost callback returns. `gate` is
  // 1 + depth - flag, where flag is 1 while closes are queued (and not being drained): leaving
  // the outermost callback with closes queued is the one case that takes it to 0, so leave()
  // is one decrement and one branch on its result whether or not closes wait (this runs once
  // per message; a decrement compared with 0 is two instructions, with any other value four).
  int gate = 1;
  bool closes_flagged = false;  // flag above
  std::vector<std::shared_ptr<conn>> pending_closes;
  std::vector<std::unique_ptr<evnet::timer>> dead_timers;  // conn timers, freed after the round
  std::size_t max_input = 0;  // opts->max_input, or SIZE_MAX for "unlimited"

  /// How many user callbacks are running. Loop thread.
  int nesting() const noexcept { return gate - 1 + static_cast<int>(closes_flagged); }
  /// Marks the start of a user callback. Loop thread.
  void enter() noexcept { ++gate; }
  /// Marks its end; the outermost one performs queued closes. Loop thread.
  [[gnu::always_inline]] void leave() noexcept {
    if (--gate == 0) drain_closes();
  }
  /// Queues c's close for when the outermost callback returns (only called inside one).
  /// Loop thread.
  void queue_close(std::shared_ptr<conn> c) {
    if (pending_closes.empty()) {
      closes_flagged = true;
      --gate;
    }
    pending_closes.push_back(std::move(c));
  }
  void drain_closes() noexcept;

  bool stopping = false;
  std::atomic<bool> closed{false};  // any thread: no more posts accepted
  // loop::post() calls between their test of `closed` and the task's hand-off to the poller
  // (any thread). run() waits for this to reach zero after setting `closed`, so every task a
  // post() accepted is queued before the last rounds and runs in them.
  std::atomic<int> posting{0};
  std::unique_ptr<evnet::timer> stop_timer;
  std::int64_t stop_deadline_ns = 0;
  std::unique_ptr<evnet::timer> tick_timer;
  // release_idle_buffers() every engine_options::buffer_sweep_interval, while some connection
  // holds buffer memory: armed by want_sweep() when a ring takes memory, stopped by the sweep
  // that finds none held. A loop whose connections buffer nothing (every read consumed, every
  // write taken whole by the socket) has no periodic wake-up and no timer to check per round.
  std::unique_ptr<evnet::ticker> sweep_timer;
  void release_idle_buffers() noexcept;
  void want_sweep() noexcept {
    if (sweep_timer && !sweep_timer->attached()) {
      (void)sweep_timer->attach(opts->buffer_sweep_interval);
    }
  }

  /// The base's cached round time (taken before the poll wait, so inside fd callbacks it can
  /// be as old as the wait). Use for arming timers, which the base measures from it.
  std::int64_t now_ns() const noexcept { return base->now().time_since_epoch().count(); }
  /// The clock now (vDSO, no system call). Use for activity stamps and deadline checks.
  static std::int64_t clock_ns() noexcept {
    return std::chrono::steady_clock::now().time_since_epoch().count();
  }
  bool in_thread() const noexcept;

  // Connections.
  void adopt(int fd, const socket_address& peer, transport kind);
  std::shared_ptr<conn> make_conn(int fd, transport kind, bool client);
  void link_live(conn* c) noexcept;
  void unlink_live(conn* c) noexcept;
  void retire(std::shared_ptr<conn> c);

  // Listeners.
  std::error_code add_listener(listen_spec& spec, int fd);
  void close_listeners() noexcept;
  void on_accept(listener& l) noexcept;
  void on_udp(listener& l, std::uint32_t events) noexcept;

  // Timers.
  timer_id add_timer(timer_id id, std::chrono::nanoseconds delay, bool repeat,
                     std::function<void()> fn);
  void cancel_in_loop(timer_id id) noexcept;

  // Client connections.
  void start_dial(const socket_address& addr, transport kind, dial_options& options);
  void start_adopt(struct adopt_request& r);

  // Run.
  std::error_code init();
  void run();
  void begin_stop();
  /// After run() and on_shutdown: frees what a finished loop no longer needs (the read buffer,
  /// the poller's kernel object), keeping what a late cross-thread call reads. Engine thread.
  void release_after_run() noexcept;
  /// Frees what the round retired (closed conns, conn timers, finished loop timers). Most
  /// rounds retire nothing, so the test is inline and the call is skipped. Loop thread.
  void after_round() noexcept {
    if (retired) [[unlikely]] {
      free_retired();
    }
  }
  bool retired = false;  // graveyard, dead_timers or finished_timers holds something
  /// A conn timer to free after the round. Loop thread.
  void retire_timer(std::unique_ptr<evnet::timer> t) {
    dead_timers.push_back(std::move(t));
    retired = true;
  }
  /// A loop timer (run_after/run_every) to forget after the round. Loop thread.
  void finish_timer(timer_id id) {
    finished_timers.push_back(id);
    retired = true;
  }
  void free_retired() noexcept;
  void start_ticker();
};

/// Shared state of one engine run.
struct engine_internals {
  handler* h = nullptr;
  engine_options opts;
  std::vector<std::unique_ptr<listen_spec>> specs;
  std::vector<std::unique_ptr<loop>> loops;
  std::atomic<bool> loops_published{false};
  std::atomic<int> stoppers{0};  // stop() calls in progress (signal handlers included)
  std::atomic<std::size_t> conn_count{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::uint64_t> next_conn_id{1};
  std::atomic<std::uint64_t> next_timer{1};
  std::atomic<std::size_t> round_robin{0};
  std::atomic<bool> stop_flag{false};  // stop() was called (any thread, signal handlers)
  socket_options sockopts;             // derived from opts

  /// Picks the loop for a new connection per opts.balance. Any thread.
  std::size_t pick_loop(const socket_address* peer) noexcept;
  /// A new timer id naming loop `index`.
  timer_id new_timer_id(std::size_t index) noexcept {
    return (next_timer.fetch_add(1, std::memory_order_relaxed) << 8) | (index & 0xff);
  }
};

/// An empty error_code without the out-of-line std::system_category() call that
/// `std::error_code{}` makes (it matters on the per-message path).
inline std::error_code no_error() noexcept {
  static const std::error_category& cat = std::system_category();
  return std::error_code(0, cat);
}

/// The calling thread's loop, or nullptr.
loop* current_loop() noexcept;

}  // namespace evnet::detail
