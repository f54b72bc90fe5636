// evnet — loop: one reactor thread (see include/evnet/loop.h).
//
// A loop round is event_base::loop_once(): epoll_wait (bounded by the next timer), connection
// and listener callbacks straight from the poller, timers, then queued tasks. After every round
// the loop frees the connections closed during it (so no conn is freed while a callback that
// refers to it is on the stack) and checks for a stop request.
#include "evnet/loop.h"

#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>

#include "evnet/conn.h"
#include "evnet/engine.h"
#include "evnet/event.h"
#include "net/internals.h"

namespace evnet {
namespace detail {

namespace {
thread_local loop* t_current_loop = nullptr;

// Closes an accepted descriptor unless a loop adopted it: a hand-off task destroyed without
// running (its loop stopped) must not leak the fd or the connection count.
struct fd_handoff {
  int fd;
  loop_internals* target;
  fd_handoff(int f, loop_internals* t) : fd(f), target(t) {}
  fd_handoff(const fd_handoff&) = delete;
  fd_handoff& operator=(const fd_handoff&) = delete;
  ~fd_handoff() {
    if (fd >= 0) {
      ::close(fd);
      target->conn_count.fetch_sub(1, std::memory_order_relaxed);
      target->eng.internals().conn_count.fetch_sub(1, std::memory_order_relaxed);
    }
  }
};

bool is_errno(std::error_code ec, int e) noexcept {
  // Compares addresses: no member call on the category (under EMFILE, UBSan's vptr check of
  // such a call cannot complete and reports a false error).
  return ec.value() == e && &ec.category() == &g_system_category;
}
}  // namespace

loop* current_loop() noexcept {
  return t_current_loop;
}

const std::error_category& g_system_category = std::system_category();

loop_internals::loop_internals(loop& l, engine& e) : self(l), eng(e) {}

loop_internals::~loop_internals() {
  sweep_timer.reset();
  close_listeners();
  timers.clear();
  tick_timer.reset();
  stop_timer.reset();
  dead_timers.clear();
  graveyard.clear();
}

std::error_code loop_internals::init() {
  engine_internals& ei = eng.internals();
  h = ei.h;
  opts = &ei.opts;
  max_input = opts->max_input != 0 ? opts->max_input : static_cast<std::size_t>(-1);
  event_base_options bo;
  bo.priorities = 1;
  auto b = event_base::create(bo);
  if (!b) {
    return b.error();
  }
  base = std::move(*b);
  poll = &base->poller();
  scratch = std::make_unique<char[]>(kScratchSize);
  return {};
}

bool loop_internals::in_thread() const noexcept {
  return t_current_loop == &self;
}

// ---- connections ----

std::shared_ptr<conn> loop_internals::make_conn(int fd, transport kind, bool client) {
  auto c = std::make_shared<conn>(self, fd, kind, client);
  c->id_ = eng.internals().next_conn_id.fetch_add(1, std::memory_order_relaxed);
  c->self_ = c;
  link_live(c.get());
  c->attachment_.fd = fd;
  c->attachment_.function = &conn::on_poll_event;
  c->attachment_.context = c.get();
  return c;
}

void loop_internals::link_live(conn* c) noexcept {
  c->live_prev_ = nullptr;
  c->live_next_ = live_head;
  if (live_head != nullptr) {
    live_head->live_prev_ = c;
  }
  live_head = c;
}

void loop_internals::unlink_live(conn* c) noexcept {
  if (c->live_prev_ != nullptr) {
    c->live_prev_->live_next_ = c->live_next_;
  } else if (live_head == c) {
    live_head = c->live_next_;
  }
  if (c->live_next_ != nullptr) {
    c->live_next_->live_prev_ = c->live_prev_;
  }
  c->live_prev_ = c->live_next_ = nullptr;
}

void loop_internals::retire(std::shared_ptr<conn> c) {
  graveyard.push_back(std::move(c));
  retired = true;
}

void loop_internals::drain_closes() noexcept {
  // Closes requested by on_close handlers below join this batch (the queue is not empty while
  // it is walked, so they do not set the flag again). Entered with gate 0: depth 0, flag 1.
  closes_flagged = false;
  gate = 2;  // depth 1 (as if in a callback) while the queue is walked, flag 0
  // An index, not a range-for: those handlers append to pending_closes while it is walked.
  // NOLINTNEXTLINE(modernize-loop-convert)
  for (std::size_t i = 0; i < pending_closes.size(); ++i) {
    std::shared_ptr<conn> c = pending_closes[i];
    if (c->close_pending_) {
      --gate;
      c->begin_close();
      ++gate;
    }
  }
  pending_closes.clear();
  --gate;
}

void loop_internals::adopt(int fd, const socket_address& peer, transport kind) {
  engine_internals& ei = eng.internals();
  if (stopping) {
    ::close(fd);
    conn_count.fetch_sub(1, std::memory_order_relaxed);
    ei.conn_count.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  std::shared_ptr<conn> c = make_conn(fd, kind, false);
  c->set_peer(peer);
  if (std::error_code ec = poll->add(c->attachment_, interest::read_write, trigger_mode::edge)) {
    c->discard_output_ = true;
    c->do_close();  // not opened: no on_close
    h->on_accept_error(ec);
    return;
  }
  c->open_in_loop();
}

void loop_internals::start_dial(const socket_address& addr, transport kind, dial_options& options) {
  engine_internals& ei = eng.internals();
  auto fail = [&](std::error_code ec) {
    conn_count.fetch_sub(1, std::memory_order_relaxed);
    ei.conn_count.fetch_sub(1, std::memory_order_relaxed);
    if (options.on_result) {
      enter();
      options.on_result(nullptr, ec);
      leave();
    }
  };
  if (stopping) {
    fail(make_error_code(errc::engine_stopping));
    return;
  }
  bool in_progress = false;
  auto fd = start_connect(addr, kind, &in_progress);
  if (!fd) {
    fail(fd.error());
    return;
  }
  (void)apply_socket_options(*fd, kind, ei.sockopts);
  std::shared_ptr<conn> c = make_conn(*fd, kind, true);
  c->set_peer(addr);
  c->context_ = std::move(options.context);
  if (options.on_result) {
    c->dial_result_ =
        std::make_unique<std::function<void(conn*, std::error_code)>>(std::move(options.on_result));
  }
  c->set_state(in_progress ? conn_state::connecting : conn_state::open);
  if (std::error_code ec = poll->add(c->attachment_, interest::read_write, trigger_mode::edge)) {
    c->set_state(conn_state::connecting);
    c->fail_connect(ec);
    return;
  }
  if (!in_progress) {
    c->open_in_loop();
    return;
  }
  if (options.timeout.count() > 0) {
    c->deadlines().connect_ns = clock_ns() + std::chrono::nanoseconds(options.timeout).count();
    c->arm_deadline();
  }
}

void adopt_request::abandon() noexcept {
  if (fd < 0) {
    return;
  }
  ::close(fd);
  fd = -1;
  loop_count->fetch_sub(1, std::memory_order_relaxed);
  engine_count->fetch_sub(1, std::memory_order_relaxed);
}

void loop_internals::start_adopt(adopt_request& r) {
  auto refuse = [&](std::error_code ec) {
    if (r.options.on_result) {
      enter();
      r.options.on_result(nullptr, ec);
      leave();
    }
  };
  if (stopping) {
    r.abandon();
    refuse(make_error_code(errc::engine_stopping));
    return;
  }
  const int fd = std::exchange(r.fd, -1);
  (void)apply_socket_options(fd, r.kind, eng.internals().sockopts);
  std::shared_ptr<conn> c = make_conn(fd, r.kind, false);
  c->set_peer(r.peer);
  c->context_ = std::move(r.options.context);
  if (std::error_code ec = poll->add(c->attachment_, interest::read_write, trigger_mode::edge)) {
    c->discard_output_ = true;
    c->do_close();  // not opened: no on_close; gives back the counts and closes the fd
    refuse(ec);
    return;
  }
  if (r.options.on_result) {
    c->dial_result_ = std::make_unique<std::function<void(conn*, std::error_code)>>(
        std::move(r.options.on_result));
  }
  c->open_in_loop();  // calls on_result, then on_open
}

// ---- listeners ----

std::error_code loop_internals::add_listener(listen_spec& spec, int fd) {
  auto l = std::make_unique<listener>();
  l->spec = &spec;
  l->fd = fd;
  l->attachment.fd = fd;
  listener* raw = l.get();
  std::error_code ec;
  if (spec.ep.proto == transport::udp) {
    l->udp = std::make_shared<conn>(self, fd, transport::udp, false);
    l->udp->id_ = eng.internals().next_conn_id.fetch_add(1, std::memory_order_relaxed);
    l->udp->opened_ = false;
    l->udp->peer_long_ = std::make_unique<socket_address>();  // each datagram's sender
    l->batch = std::make_unique<udp_batch>(16, 65535);
    l->udp->udp_batch_ = l->batch.get();
    l->attachment.callback = [this, raw](int, std::uint32_t events) {
      on_udp(*raw, events);
      return poll_action::proceed;
    };
    ec = poll->add(l->attachment, interest::read_write, trigger_mode::edge);
  } else {
    // Level-triggered: accept a bounded batch per round and let the poller report the rest.
    l->attachment.callback = [this, raw](int, std::uint32_t) {
      on_accept(*raw);
      return poll_action::proceed;
    };
    ec = poll->add(l->attachment, interest::read, trigger_mode::level);
  }
  if (ec) {
    close_listener(fd, spec.ep);
    return ec;
  }
  listeners.push_back(std::move(l));
  return {};
}

void loop_internals::close_listeners() noexcept {
  for (auto& l : listeners) {
    if (l->attachment.registered()) {
      poll->remove(l->attachment);
    }
    if (l->fd >= 0) {
      close_listener(l->fd, l->spec->ep);
    }
    l->fd = -1;
    if (l->udp) {
      l->udp->set_state(conn_state::closed);
      l->udp->fd_ = -1;
      l->udp->udp_batch_ = nullptr;
      l->udp.reset();
    }
  }
  listeners.clear();
}

void loop_internals::on_accept(listener& l) noexcept {
  engine_internals& ei = eng.internals();
  const transport kind = l.spec->ep.proto;
  for (int i = 0; i < 128; ++i) {
    socket_address peer;
    auto r = accept_socket(l.fd, &peer);
    if (!r) {
      const std::error_code ec = r.error();
      if (is_errno(ec, EAGAIN) || is_errno(ec, EWOULDBLOCK)) {
        return;
      }
      if (is_errno(ec, ECONNABORTED) || is_errno(ec, EINTR)) {
        continue;
      }
      if (is_errno(ec, EMFILE) || is_errno(ec, ENFILE)) {
        // Out of descriptors: shed the waiting clients with the reserve fd so they see a close
        // instead of hanging, and so this level-triggered listener does not spin.
        while (!spare.shed_one(l.fd)) {
          ei.refused.fetch_add(1, std::memory_order_relaxed);
        }
      }
      h->on_accept_error(ec);
      return;
    }
    const int fd = *r;
    const std::size_t max = opts->max_connections;
    const std::size_t before = ei.conn_count.fetch_add(1, std::memory_order_relaxed);
    if (max != 0 && before >= max) {
      ei.conn_count.fetch_sub(1, std::memory_order_relaxed);
      ::close(fd);
      ei.refused.fetch_add(1, std::memory_order_relaxed);
      h->on_accept_error(make_error_code(errc::connection_limit));
      continue;
    }
    if (kind == transport::tcp) {
      (void)apply_socket_options(fd, kind, ei.sockopts);
    }
    const std::size_t target =
        opts->accept == accept_model::reuse_port && kind != transport::unix_stream
            ? self.index()
            : ei.pick_loop(&peer);
    loop_internals& tl = ei.loops[target]->internals();
    tl.conn_count.fetch_add(1, std::memory_order_relaxed);
    if (&tl == this) {
      adopt(fd, peer, kind);
      continue;
    }
    auto handoff = std::make_shared<fd_handoff>(fd, &tl);
    std::error_code pec = tl.self.post([handoff, peer, kind] {
      loop_internals& t = *handoff->target;
      const int f = handoff->fd;
      handoff->fd = -1;
      t.adopt(f, peer, kind);
    });
    (void)pec;  // on failure the hand-off closed the fd and fixed the counts
  }
}

void loop_internals::on_udp(listener& l, std::uint32_t events) noexcept {
  if (l.udp) {
    l.udp->handle_udp_read(l.fd, events);
  }
}

// ---- timers ----

timer_id loop_internals::add_timer(timer_id id, std::chrono::nanoseconds delay, bool repeat,
                                   std::function<void()> fn) {
  auto e = std::make_unique<timer_entry>();
  timer_entry* raw = e.get();
  e->fn = std::move(fn);
  if (repeat) {
    e->every = std::make_unique<evnet::ticker>(*base, [this, raw] {
      enter();
      raw->fn();
      leave();
    });
    if (e->every->attach(delay)) {
      return 0;
    }
  } else {
    e->once = std::make_unique<evnet::timer>(*base, [this, raw, id] {
      raw->done = true;
      finish_timer(id);
      enter();
      raw->fn();
      leave();
    });
    if (e->once->attach(delay < std::chrono::nanoseconds::zero() ? std::chrono::nanoseconds(0)
                                                                 : delay)) {
      return 0;
    }
  }
  timers.emplace(id, std::move(e));
  return id;
}

void loop_internals::cancel_in_loop(timer_id id) noexcept {
  auto it = timers.find(id);
  if (it == timers.end() || it->second->done) {
    return;
  }
  timer_entry& e = *it->second;
  if (e.once) {
    e.once->detach();
  }
  if (e.every) {
    e.every->detach();
  }
  e.done = true;
  // Freed after the round: the timer may be cancelling itself from its own callback.
  finish_timer(id);
}

// ---- run ----

void loop_internals::start_ticker() {
  tick_timer = std::make_unique<evnet::timer>(*base, [this] {
    enter();
    const std::chrono::milliseconds next = h->on_tick();
    leave();
    if (next.count() > 0 && !stopping) {
      (void)tick_timer->attach(next);
    }
  });
  (void)tick_timer->attach(std::chrono::nanoseconds(0));
}

void loop_internals::release_idle_buffers() noexcept {
  // Runs outside every callback, so no input view handed to a handler can point into a buffer.
  bool held = false;  // some ring still holds memory after this sweep
  for (conn* c = live_head; c != nullptr; c = c->live_next_) {
    if (c->in_.empty() && c->in_.capacity() != 0) {
      if (c->in_idle_) {
        c->in_.release();
      } else {
        c->in_idle_ = true;  // empty at this sweep: freed at the next one if still empty
        held = true;
      }
    } else {
      c->in_idle_ = false;
      held = held || c->in_.capacity() != 0;
    }
    if (c->out_.empty() && c->out_.capacity() != 0) {
      c->out_.release();
    }
    held = held || c->out_.capacity() != 0;
  }
  if (!held) {
    // Nothing left to free: stop until a ring takes memory again (want_sweep()).
    (void)sweep_timer->detach();
  }
}

void loop_internals::free_retired() noexcept {
  retired = false;
  graveyard.clear();
  dead_timers.clear();
  for (timer_id id : finished_timers) {
    timers.erase(id);
  }
  finished_timers.clear();
}

void loop_internals::begin_stop() {
  stopping = true;
  stop_deadline_ns = clock_ns() + std::chrono::nanoseconds(opts->stop_grace).count();
  close_listeners();
  if (tick_timer) {
    tick_timer->detach();
  }
  // Wake up when the grace period ends even if nothing else happens.
  stop_timer = std::make_unique<evnet::timer>(*base, [] {});
  (void)stop_timer->attach(opts->stop_grace);
  std::vector<std::shared_ptr<conn>> all;
  for (conn* c = live_head; c != nullptr; c = c->live_next_) {
    all.push_back(c->shared_from_this());
  }
  for (auto& c : all) {
    if (c->opened_ && c->state() == conn_state::open) {
      enter();
      const action a = h->on_stopping(*c);
      leave();
      if (a == action::none) {
        continue;  // the handler closes it (at the latest when the grace period ends)
      }
    }
    c->request_close(make_error_code(errc::engine_stopping), false);
  }
}

void loop_internals::run() {
  t_current_loop = &self;
  thread_id = std::this_thread::get_id();
  engine_internals& ei = eng.internals();
  if (self.index() == 0 && opts->ticker) {
    start_ticker();
  }
  // Buffers above 4 KiB are freed as soon as they empty; smaller ones are kept while a
  // connection is busy (it will likely need them again) and freed by this sweep once they have
  // stayed empty, so an idle connection holds no buffer memory.
  if (opts->buffer_sweep_interval.count() > 0) {
    // Not attached yet: want_sweep() arms it when a connection's ring first takes memory.
    sweep_timer = std::make_unique<evnet::ticker>(*base, [this] { release_idle_buffers(); });
  }
  // The loop thread owns its base for the whole run: the per-round ownership checks of
  // event_base::loop_once() and poller::poll_once() are made once here.
  result<event_base::holder> held = base->hold();
  if (!held) {
    eng.stop();  // cannot happen for a base only this loop uses; do not spin if it does
    t_current_loop = nullptr;
    return;
  }
  // Until stop(): the base runs its rounds itself (one entry for all of them); what the rounds
  // retired is freed after each, as after_round() does.
  const event_base::round_end free_after{
      &retired, [](void* self) { static_cast<loop_internals*>(self)->free_retired(); }, this};
  for (;;) {
    if (!stopping) {
      const std::error_code ec = held->run_until(ei.stop_flag, free_after);
      if (ec && ec != std::error_code(errc::stopped)) {
        // The kernel facility failed (it should not): stop the whole engine rather than spin.
        eng.stop();
      }
      if (ei.stop_flag.load(std::memory_order_acquire)) {
        begin_stop();
      }
      continue;
    }
    if (live_head == nullptr || clock_ns() >= stop_deadline_ns) {
      break;
    }
    (void)held->loop_once(false);  // stopping already: a failure changes nothing now
    after_round();
  }
  // Whatever did not finish flushing within the grace period is closed now.
  std::vector<std::shared_ptr<conn>> rest;
  for (conn* c = live_head; c != nullptr; c = c->live_next_) {
    rest.push_back(c->shared_from_this());
  }
  for (auto& c : rest) {
    if (c->state() == conn_state::connecting) {
      c->fail_connect(make_error_code(errc::engine_stopping));
    } else {
      if (!c->close_reason_ && !c->lingering_) {
        // (A lingering close had flushed its output: it keeps the reason it was asked with.)
        c->close_reason_ = make_error_code(errc::engine_stopping);
      }
      c->discard_output_ = true;
      c->do_close();
    }
  }
  rest.clear();
  after_round();
  // Refuse new tasks, then run the ones already queued (send completions learn of the abort).
  // A post() that found `closed` still false may not have queued its task yet: wait for it, or
  // the task would be queued after the last rounds and destroyed unrun by the poller's close(),
  // though post() said it was accepted. (Seq-cst on both sides: a post() that does not see
  // `closed` has raised `posting` before this load, so it is waited for.)
  closed.store(true, std::memory_order_seq_cst);
  while (posting.load(std::memory_order_seq_cst) != 0) {
    std::this_thread::yield();
  }
  (void)held->loop_once(true);
  (void)held->loop_once(true);
  // A stop() from another thread that lands just before a round makes the poller skip that
  // round's tasks (seen for the first of these two when stop() is called again and again): run
  // rounds until none is left. Bounded: the tasks run here cannot queue others (`closed` is
  // set).
  for (int i = 0; i < 16 && poll->pending_tasks() != 0; ++i) {
    (void)held->loop_once(true);
  }
  after_round();
  for (auto& [id, e] : timers) {
    if (e->once) {
      e->once->detach();
    }
    if (e->every) {
      e->every->detach();
    }
  }
  timers.clear();
  tick_timer.reset();
  stop_timer.reset();
  sweep_timer.reset();
  t_current_loop = nullptr;
}

void loop_internals::release_after_run() noexcept {
  scratch.reset();
  // Its tasks ran in run()'s last rounds; a late post() is refused by `closed` before it
  // reaches the poller, and the poller refuses it too once closed.
  (void)poll->close();
}

}  // namespace detail

// ---- loop (public facade) ----

loop::loop(engine& owner, std::size_t index)
    : engine_(&owner), index_(index), in_(std::make_unique<detail::loop_internals>(*this, owner)) {}

loop::~loop() = default;

bool loop::in_loop_thread() const noexcept {
  return detail::t_current_loop == this;
}

std::error_code loop::post(std::function<void()> fn) {
  if (!fn) {
    return errc::invalid_argument;
  }
  // Counted from before the test of `closed` until the task is queued: the loop's run() waits
  // for the count to drop after it sets `closed`, so an accepted task always runs.
  struct posting_scope {
    std::atomic<int>& n;
    explicit posting_scope(std::atomic<int>& c) noexcept : n(c) {
      n.fetch_add(1, std::memory_order_seq_cst);
    }
    ~posting_scope() { n.fetch_sub(1, std::memory_order_release); }
    posting_scope(const posting_scope&) = delete;
    posting_scope& operator=(const posting_scope&) = delete;
  } counted(in_->posting);
  if (in_->closed.load(std::memory_order_seq_cst)) {
    return errc::closed;
  }
  // A task is a callback like the others: a close it causes (a failed write included) takes
  // effect when it returns, so the conns and handler state it touches stay as they were
  // during the call.
  detail::loop_internals* li = in_.get();
  return in_->poll->trigger(task_priority::high, [li, f = std::move(fn)] {
    struct scope {
      detail::loop_internals* li;
      explicit scope(detail::loop_internals* l) noexcept : li(l) { li->enter(); }
      ~scope() { li->leave(); }
      scope(const scope&) = delete;
      scope& operator=(const scope&) = delete;
    } guard(li);
    f();
  });
}

std::error_code loop::dispatch(std::function<void()> fn) {
  if (!fn) {
    return errc::invalid_argument;
  }
  if (in_loop_thread()) {
    fn();
    return {};
  }
  return post(std::move(fn));
}

timer_id loop::run_after(std::chrono::nanoseconds delay, std::function<void()> fn) {
  if (!fn) {
    return 0;
  }
  const timer_id id = engine_->internals().new_timer_id(index_);
  if (in_loop_thread()) {
    return in_->add_timer(id, delay, false, std::move(fn));
  }
  return post_timer(id, delay, false, std::move(fn));
}

timer_id loop::post_timer(timer_id id, std::chrono::nanoseconds delay, bool repeat,
                          std::function<void()> fn) {
  {
    std::lock_guard lock(in_->pending_timers_mu);
    in_->pending_timers.insert(id);
  }
  if (post([this, id, delay, repeat, fn = std::move(fn)]() mutable {
        if (in_->take_pending_timer(id)) {
          in_->add_timer(id, delay, repeat, std::move(fn));
        }
      })) {
    std::lock_guard lock(in_->pending_timers_mu);
    in_->pending_timers.erase(id);
    return 0;
  }
  return id;
}

timer_id loop::run_every(std::chrono::nanoseconds period, std::function<void()> fn) {
  if (!fn || period.count() <= 0) {
    return 0;
  }
  const timer_id id = engine_->internals().new_timer_id(index_);
  if (in_loop_thread()) {
    return in_->add_timer(id, period, true, std::move(fn));
  }
  return post_timer(id, period, true, std::move(fn));
}

void loop::cancel(timer_id id) noexcept {
  if (id == 0) {
    return;
  }
  {
    // Not created yet (its creation task is still queued): dropping the id is the whole
    // cancellation, from any thread.
    std::lock_guard lock(in_->pending_timers_mu);
    if (in_->pending_timers.erase(id) != 0) {
      return;
    }
  }
  if (in_loop_thread()) {
    in_->cancel_in_loop(id);
    return;
  }
  (void)post([this, id] { in_->cancel_in_loop(id); });
}

std::chrono::steady_clock::time_point loop::now() const noexcept {
  return in_->base->now();
}

std::size_t loop::connection_count() const noexcept {
  return in_->conn_count.load(std::memory_order_relaxed);
}

event_base& loop::base() noexcept {
  return *in_->base;
}

}  // namespace evnet
