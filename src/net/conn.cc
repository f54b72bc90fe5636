// evnet — conn: the per-connection I/O paths (see include/evnet/conn.h).
//
// Hot path for a request/response exchange (what the echo benchmark measures):
//   epoll_wait → poller calls attachment callback → handle_io → handle_read: one read() into the
//   loop's 64 KiB scratch buffer (a short read means the socket is drained: no second read to
//   see EAGAIN) → on_traffic sees the bytes in place (no copy) → write() with an empty output
//   buffer sends at once (one send()). No allocation, lock, refcount change or epoll_ctl:
//   the fd is registered once, edge-triggered for read and write.
#include "evnet/conn.h"

// GCC guesses that on_traffic() is the base class's no-op and tests for it before every call
// (a compare and a branch per message, never right for a real handler).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-devirtualize-speculatively")
#endif

#include <sys/socket.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <climits>
#include <cstring>
#include <limits>
#include <new>

#include "evnet/engine.h"
#include "evnet/event.h"
#include "net/internals.h"
#include "net/udp_batch.h"

namespace evnet {

using detail::loop_internals;

namespace {

// Empty buffers larger than this are freed at once; smaller ones are kept (a connection that
// once buffered a partial message likely will again) and cost at most this much.
constexpr std::size_t kKeepCapacity = 4096;
constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();
// What a graceful close reads away at most (at the close, then while lingering) before it
// gives up and lets the kernel reset the connection.
constexpr std::uint64_t kLingerBudget = std::uint64_t{16} << 20;

std::error_code sys_error(int err) noexcept {
  return {err, std::system_category()};
}

}  // namespace

conn::conn(loop& owner, int fd, transport kind, bool client) noexcept
    : loop_(&owner), li_(&owner.internals()), fd_(fd), kind_(kind), client_(client) {
  if (const engine_options* o = li_->opts) {
    const std::int64_t idle = std::chrono::nanoseconds(o->idle_timeout).count();
    const std::int64_t read = std::chrono::nanoseconds(o->read_timeout).count();
    const std::int64_t write = std::chrono::nanoseconds(o->write_timeout).count();
    if (idle > 0 || read > 0 || write > 0) {
      deadline_state& d = deadlines();
      d.idle_ns = idle;
      d.read_ns = read;
      d.write_ns = write;
      stamp_ = true;
    }
  }
  refresh_gates();  // and slow_, which depends on stamp_
}

conn::deadline_state& conn::deadlines() {
  if (!dl_) {
    dl_ = std::make_unique<deadline_state>();
  }
  return *dl_;
}

void conn::set_timeouts(std::chrono::milliseconds idle, std::chrono::milliseconds read,
                        std::chrono::milliseconds write) noexcept {
  assert(loop_->in_loop_thread());
  const std::int64_t idle_ns = std::chrono::nanoseconds(idle).count();
  const std::int64_t read_ns = std::chrono::nanoseconds(read).count();
  const std::int64_t write_ns = std::chrono::nanoseconds(write).count();
  const bool had = stamp_;
  stamp_ = idle_ns > 0 || read_ns > 0 || write_ns > 0;
  refresh_slow();
  if (!stamp_ && !dl_) {
    return;
  }
  deadline_state& d = deadlines();
  d.idle_ns = idle_ns;
  d.read_ns = read_ns;
  d.write_ns = write_ns;
  if (!stamp_) {
    return;
  }
  if (!had) {
    d.last_read_ns = d.last_write_ns = loop_internals::clock_ns();
  }
  arm_deadline();
}

void conn::refresh_gates() noexcept {
  const bool open = state_.load(std::memory_order_relaxed) == conn_state::open;
  // A close requested inside a callback (close_pending_) stops reading at once: no more
  // on_traffic, even from a read loop or a resumed read that runs before the close does. An
  // abort (a discarding close) also refuses writes at once: it discards pending output.
  read_gate_ = !open || read_eof_ || read_paused_ || close_pending_;
  write_gate_ = !open || shutdown_pending_ || write_shutdown_ || kind_ == transport::udp ||
                (close_pending_ && discard_output_);
  refresh_slow();
}

void conn::refresh_slow() noexcept {
  slow_ = read_gate_ || write_gate_ || stamp_ || !out_.empty() ||
          li_->max_input < loop_internals::kScratchSize;
}

void conn::set_state(conn_state s) noexcept {
  state_.store(s, std::memory_order_release);
  refresh_gates();
}

socket_address conn::peer_address() const noexcept {
  if (peer_long_) {
    return *peer_long_;
  }
  return {reinterpret_cast<const sockaddr*>(peer_short_), peer_short_len_};
}

void conn::set_peer(const socket_address& a) {
  if (kind_ != transport::udp && a.length() <= sizeof peer_short_) {
    std::memcpy(peer_short_, a.data(), a.length());
    peer_short_len_ = static_cast<std::uint8_t>(a.length());
    peer_long_.reset();
    return;
  }
  if (peer_long_) {
    *peer_long_ = a;
  } else {
    peer_long_ = std::make_unique<socket_address>(a);
  }
}

std::mutex& conn::xq_mu() const noexcept {
  return li_->send_queue_locks[id_ % loop_internals::kSendQueueLocks];
}

const socket_address& conn::local_address() const noexcept {
  // Allocated on first use: few connections are ever asked, and an inline socket_address would
  // cost every idle connection 136 bytes.
  static const socket_address unknown;
  if (!local_) {
    if (fd_ < 0) {
      return unknown;
    }
    auto a = socket_address::local_of(fd_);
    if (!a) {
      return unknown;  // not cached: a later call may succeed
    }
    local_.reset(new (std::nothrow) socket_address(*a));
    if (!local_) {
      return unknown;
    }
  }
  return *local_;
}

// ---- input ----

std::size_t conn::read(void* dst, std::size_t n) noexcept {
  const input_view v = peek(n);
  if (v.empty()) {
    return 0;
  }
  char* out = static_cast<char*>(dst);
  std::memcpy(out, v.first.data(), v.first.size());
  if (!v.second.empty()) {
    std::memcpy(out + v.first.size(), v.second.data(), v.second.size());
  }
  return discard(v.size());
}

std::string conn::read_all() {
  std::string s = to_string(peek());
  discard(s.size());
  return s;
}

// ---- output ----

std::error_code conn::write_slow(const void* data, std::size_t n) {
  assert(loop_->in_loop_thread());
  if (write_gate_ || !out_.empty()) {
    return write_gated(data, n);
  }
  // Nothing buffered: hand the bytes to the kernel at once; usually it takes them all.
  const ssize_t w = ::send(fd_, data, n, MSG_NOSIGNAL);
  if (w != static_cast<ssize_t>(n)) {
    return write_rest(static_cast<const char*>(data), n, w);
  }
  out_accepted_ += n;
  if (stamp_) {
    dl_->last_write_ns = loop_internals::clock_ns();
  }
  return std::error_code(0, detail::g_system_category);
}

std::error_code conn::write_gated(const void* data, std::size_t n) {
  if (write_gate_) {
    if (kind_ == transport::udp && state_.load(std::memory_order_relaxed) == conn_state::open) {
      iovec iov{const_cast<void*>(data), n};
      return write_udp(&iov, 1);
    }
    return errc::closed;
  }
  // Output is already waiting: keep the order, buffer behind it.
  out_accepted_ += n;
  out_.append(data, n);
  buffered_output();
  return {};
}

std::error_code conn::write_rest(const char* p, std::size_t n, ssize_t w) {
  std::size_t sent = 0;
  if (w < 0) {
    const int err = errno;
    if (err == EINTR) {
      return write(p, n);
    }
    if (err != EAGAIN && err != EWOULDBLOCK) {
      output_failed(err);
      return sys_error(err);
    }
  } else {
    sent = static_cast<std::size_t>(w);
  }
  out_accepted_ += n;
  if (stamp_) {
    dl_->last_write_ns = loop_internals::clock_ns();
  }
  out_.append(p + sent, n - sent);
  buffered_output();
  return {};
}

input_view conn::next_buffered(std::size_t n) noexcept {
  const input_view v = in_.peek(n);
  in_.discard(v.size());
  return v;
}

std::error_code conn::write_two(std::span<const std::byte> first,
                                std::span<const std::byte> second) {
  const std::string_view parts[2] = {as_chars(first), as_chars(second)};
  return writev(parts);
}

std::error_code conn::writev(std::span<const std::string_view> parts) {
  assert(loop_->in_loop_thread());
  if (write_gate_ &&
      (kind_ != transport::udp || state_.load(std::memory_order_relaxed) != conn_state::open)) {
    return errc::closed;
  }
  constexpr std::size_t kMaxIov = 64;
  if (parts.size() > kMaxIov) {
    if (kind_ == transport::udp) {
      // Rare: the pieces still form one datagram.
      std::string joined;
      for (std::string_view part : parts) {
        joined.append(part);
      }
      return write(joined);
    }
    // Rare: write the pieces one by one (still one stream, in order).
    for (std::string_view part : parts) {
      if (auto ec = write(part.data(), part.size())) {
        return ec;
      }
    }
    return {};
  }
  iovec iov[kMaxIov];
  std::size_t total = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    iov[i].iov_base = const_cast<char*>(parts[i].data());
    iov[i].iov_len = parts[i].size();
    total += parts[i].size();
  }
  if (kind_ == transport::udp) {
    return write_udp(iov, static_cast<int>(parts.size()));
  }
  out_accepted_ += total;
  std::size_t sent = 0;
  if (out_.empty()) {
    const ssize_t w = detail::writev_nosignal(fd_, iov, static_cast<int>(parts.size()));
    if (w < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        const int err = errno;
        output_failed(err);
        return sys_error(err);
      }
    } else {
      sent = static_cast<std::size_t>(w);
    }
    if (stamp_) {
      dl_->last_write_ns = loop_internals::clock_ns();
    }
    if (sent == total) {
      return {};
    }
  }
  for (std::string_view part : parts) {
    if (sent >= part.size()) {
      sent -= part.size();
      continue;
    }
    out_.append(part.data() + sent, part.size() - sent);
    sent = 0;
  }
  buffered_output();
  return {};
}

std::error_code conn::write_udp(const iovec* iov, int iovcnt) noexcept {
  if (udp_batch_ == nullptr) {
    return errc::closed;
  }
  bool queued;
  if (iovcnt == 1) {
    queued = udp_batch_->queue(*peer_long_,
                               {static_cast<const std::byte*>(iov[0].iov_base), iov[0].iov_len});
  } else {
    std::string joined;  // rare: a multi-piece datagram
    for (int i = 0; i < iovcnt; ++i) {
      joined.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
    }
    queued = udp_batch_->queue(*peer_long_, as_bytes(joined));
  }
  if (!queued) {
    return errc::queue_full;  // the kernel has not taken the last 4 MiB of replies
  }
  // As send_to(): inside the receive batch the reply leaves with the batch's (one sendmmsg);
  // elsewhere (a timer, a task) it leaves now.
  if (!in_udp_batch_) {
    auto r = udp_batch_->flush(fd_);
    if (!r) {
      return r.error();
    }
  }
  return {};
}

void conn::buffered_output() noexcept {
  slow_ = true;  // output waits: writes queue behind it, events flush it
  loop_internals& lp = loop_->internals();
  lp.want_sweep();
  want_drain_ = true;
  out_bytes_.store(out_.size(), std::memory_order_relaxed);
  if (dl_ && dl_->write_ns > 0) {
    arm_deadline();
  }
  const std::size_t hwm = lp.opts->high_water_mark;
  if (!above_high_water_ && hwm != 0 && out_.size() > hwm) {
    above_high_water_ = true;
    lp.enter();
    lp.h->on_high_water(*this);
    lp.leave();
  }
}

void conn::output_failed(int err) noexcept {
  // The peer is gone (EPIPE, ECONNRESET): nothing buffered can be delivered any more.
  request_close(sys_error(err), true);
}

bool conn::flush() noexcept {
  iovec iov[2];
  const int cnt = out_.data_iov(iov);
  if (cnt == 0) {
    return true;
  }
  const ssize_t w = detail::writev_nosignal(fd_, iov, cnt);
  if (w < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return true;
    }
    output_failed(errno);
    return false;
  }
  out_.discard(static_cast<std::size_t>(w));
  if (stamp_) {
    dl_->last_write_ns = loop_internals::clock_ns();
  }
  if (completions_ && !completions_->items.empty()) {
    const std::uint64_t flushed = out_accepted_ - out_.size();
    while (!completions_->items.empty() && completions_->items.front().first <= flushed) {
      send_callback cb = std::move(completions_->items.front().second);
      completions_->items.pop_front();
      loop_internals& lp = loop_->internals();
      lp.enter();
      cb({});
      lp.leave();
    }
    // A completion may have closed the conn (or aborted it).
    if (state_.load(std::memory_order_relaxed) == conn_state::closed) {
      return false;
    }
  }
  if (out_.empty()) {
    output_drained();
  } else {
    out_bytes_.store(out_.size(), std::memory_order_relaxed);
  }
  return true;
}

void conn::output_drained() noexcept {
  out_bytes_.store(0, std::memory_order_relaxed);
  refresh_slow();
  if (out_.capacity() > kKeepCapacity) {
    out_.release();
  }
  above_high_water_ = false;
  if (shutdown_pending_ && fd_ >= 0) {
    shutdown_pending_ = false;
    refresh_gates();
    if (shutdown_now()) {
      return;  // the socket failed: the conn is closing with that error
    }
  }
  if (state_.load(std::memory_order_relaxed) == conn_state::closing) {
    do_close();
    return;
  }
  if (want_drain_ && state_.load(std::memory_order_relaxed) == conn_state::open) {
    want_drain_ = false;
    loop_internals& lp = loop_->internals();
    lp.enter();
    lp.h->on_drain(*this);
    lp.leave();
  }
}

// ---- I/O events ----

namespace {
constexpr std::uint32_t kReadBits =
    io_event::readable | io_event::read_hangup | io_event::hangup | io_event::error;
constexpr std::uint32_t kHangupBits = io_event::read_hangup | io_event::hangup | io_event::error;
}  // namespace

[[gnu::always_inline]] inline void conn::handle_io(std::uint32_t events) noexcept {
  // Steady state of a request/response connection: open, nothing buffered, no deadlines,
  // readable. One byte says whether anything else applies; a hang-up or error (once in a
  // connection's life) takes the general path too.
  // One test for the event: readable and no hang-up bit (a writable-only event with slow_
  // clear, where nothing is buffered, also goes the general way; it has nothing to do there).
  if (slow_ || (events & (kHangupBits | io_event::readable)) != io_event::readable) [[unlikely]] {
    handle_io_slow(events);
    return;
  }
  if (!in_.empty()) [[unlikely]] {
    read_loop(false);
    return;
  }
  read_fast();
}

// The fast path's read: slow_ clear (so no deadline to stamp and no max_input one read can
// pass), no input kept, no hang-up in the event. A short read means the socket is drained: no
// second read() just to see EAGAIN. The rare results (EOF, error, a full buffer: more may be
// waiting) are told apart before the handler's call, which leaves one value fewer to keep
// across it.
[[gnu::always_inline]] inline void conn::read_fast() noexcept {
  char* const scratch = li_->scratch.get();
  const ssize_t n = ::read(fd_, scratch, loop_internals::kScratchSize);
  // One compare for n <= 0 and n == kScratchSize.
  if (static_cast<std::size_t>(n) - 1 >= loop_internals::kScratchSize - 1) [[unlikely]] {
    read_fast_rare(n);
    return;
  }
  scratch_ = std::string_view(scratch, static_cast<std::size_t>(n));
  deliver<true>();
}

void conn::read_fast_rare(ssize_t n) noexcept {
  if (n <= 0) {
    if (read_failed(n)) {
      read_loop(false);  // EINTR
    }
    return;
  }
  scratch_ = std::string_view(li_->scratch.get(), static_cast<std::size_t>(n));
  deliver<true>();
  read_loop(false);  // the buffer was full: read on
}

void conn::handle_io_slow(std::uint32_t events) noexcept {
  if (state_.load(std::memory_order_relaxed) == conn_state::connecting) {
    handle_connect(events);
    return;
  }
  if (lingering_) {
    linger_read();
    return;
  }
  if ((events & io_event::writable) != 0 && !out_.empty()) {
    if (!flush()) {
      return;
    }
  }
  if ((events & io_event::error) != 0 && read_gate_ &&
      state_.load(std::memory_order_relaxed) != conn_state::closed) {
    // Not reading (paused, or after EOF) and nothing to flush, so no system call would notice
    // that the socket failed; ask it directly rather than wait for a timeout.
    if (std::error_code ec = detail::socket_error(fd_)) {
      request_close(ec, true);
      return;
    }
  }
  if ((events & kReadBits) != 0) {
    handle_read((events & kHangupBits) != 0);
  }
}

// One read into the loop's scratch buffer and the handler's turn, for a connection with no
// input kept from before, on the general path (deadlines, a small max_input, a hang-up in the
// event; read_fast() is the common case). Returns whether to read again.
[[gnu::always_inline]] inline bool conn::read_in_place(bool until_eof) noexcept {
  loop_internals& lp = *li_;
  char* const scratch = lp.scratch.get();
  const ssize_t n = ::read(fd_, scratch, loop_internals::kScratchSize);
  if (n <= 0) [[unlikely]] {
    return read_failed(n);  // true for EINTR only
  }
  scratch_ = std::string_view(scratch, static_cast<std::size_t>(n));
  // The whole input is this read: its size alone decides the max_input check. One test for
  // the two rare cases.
  const bool over = static_cast<std::size_t>(n) > lp.max_input;
  if (stamp_ | over) [[unlikely]] {
    if (!after_read_rare(over)) {
      return false;
    }
  }
  // A short read means the socket is drained: no second read() just to see EAGAIN (unless a
  // hang-up came with the event: then the EOF or error is still to be read, and no new edge
  // will announce it).
  const bool again = static_cast<std::size_t>(n) == loop_internals::kScratchSize || until_eof;
  deliver<false>();
  return again;
}

// The handler's turn; then what it left unconsumed is kept. Fast: the input ring was empty
// before the call, so it cannot hold memory the handler just freed (a ring emptied some other
// way is left to the buffer sweep).
template <bool Fast>
[[gnu::always_inline]] inline void conn::deliver() noexcept {
  loop_internals& lp = *li_;
  lp.enter();
  const action a = lp.h->on_traffic(*this);
  lp.leave();
  if (!scratch_.empty() || (!Fast && in_.capacity() > kKeepCapacity)) {
    [[unlikely]] after_traffic_slow();
  }
  if (a != action::none) {
    [[unlikely]] apply(a);
  }
}

[[gnu::always_inline]] inline void conn::handle_read(bool until_eof) noexcept {
  // A closing conn no longer reads (if the peer reset it, the next flush finds out); a paused
  // one leaves the bytes in the kernel.
  if (read_gate_) {
    return;
  }
  if (!in_.empty() || read_in_place(until_eof)) [[unlikely]] {
    read_loop(until_eof);
  }
}

void conn::read_loop(bool until_eof) noexcept {
  if (offer_kept_ && !offer_kept_input()) [[unlikely]] {
    return;
  }
  while (!read_gate_) {
    if (in_.empty()) {
      if (!read_in_place(until_eof)) {
        return;
      }
      continue;
    }
    // Part of a message is kept: read into the ring, which then holds everything unconsumed.
    std::size_t asked;
    const ssize_t n = read_into_ring(&asked);
    if (n <= 0) {
      if (read_failed(n)) {
        continue;  // EINTR
      }
      return;
    }
    if (!after_read_rare(in_.size() > li_->max_input)) {
      return;
    }
    deliver<false>();
    if (static_cast<std::size_t>(n) < asked && !until_eof) {
      return;
    }
  }
}

bool conn::after_read_rare(bool over) noexcept {
  if (stamp_) {
    dl_->last_read_ns = loop_internals::clock_ns();
  }
  if (over) {
    scratch_ = {};
    request_close(make_error_code(errc::input_too_large), true);
    return false;
  }
  return true;
}

poll_action conn::on_poll_event(poll_attachment& a, std::uint32_t events) noexcept {
  // A plain function, not a poll_callback: the poller calls it directly, with no std::function
  // invoker in between. Defined here so handle_io and handle_read inline into it.
  static_cast<conn*>(a.context)->handle_io(events);
  return poll_action::proceed;
}

conn::~conn() {
  // do_close() answered the cross-thread queue and refuses further sends; this only matters for
  // a conn that was never served (its loop failed before it reached do_close()).
  for (queued_send& q : xq_) {
    if (q.done) {
      q.done(make_error_code(errc::aborted));
    }
  }
  // do_close() ran for every connection (the loop closes them all before it stops), so the fd
  // and the registration are gone; UDP conns borrow their listener's fd.
  assert(!attachment_.registered());
  if (fd_ >= 0 && kind_ != transport::udp) {
    ::close(fd_);
  }
}

ssize_t conn::read_into_ring(std::size_t* asked) noexcept {
  // Part of a message is kept: read into the ring's free space, overflowing into the scratch
  // buffer (muduo's readv trick), then append the overflow to the ring.
  char* const scratch = li_->scratch.get();
  iovec iov[3];
  int cnt = in_.free_space(iov);
  std::size_t room = 0;
  for (int i = 0; i < cnt; ++i) {
    room += iov[i].iov_len;
  }
  iov[cnt].iov_base = scratch;
  iov[cnt].iov_len = loop_internals::kScratchSize;
  ++cnt;
  *asked = room + loop_internals::kScratchSize;
  const ssize_t n = ::readv(fd_, iov, cnt);
  if (n > 0) {
    const auto got = static_cast<std::size_t>(n);
    const std::size_t into = got < room ? got : room;
    in_.commit(into);
    if (got > into) {
      in_.append(scratch, got - into);
    }
  }
  return n;
}

bool conn::read_failed(ssize_t n) noexcept {
  if (n == 0) {
    loop_internals& lp = *li_;
    read_eof_ = true;
    refresh_gates();
    lp.enter();
    const action a = lp.h->on_read_eof(*this);
    lp.leave();
    if (a == action::close) {
      request_close(make_error_code(errc::peer_closed), false);
    } else {
      apply(a);
    }
    return false;
  }
  const int err = errno;
  if (err == EINTR) {
    return true;
  }
  if (err == EAGAIN || err == EWOULDBLOCK) {
    return false;
  }
  request_close(sys_error(err), true);
  return false;
}

void conn::after_traffic_slow() noexcept {
  if (state_.load(std::memory_order_relaxed) == conn_state::closed) {
    scratch_ = {};
    return;
  }
  if (!scratch_.empty()) {
    // The handler left part of this read unconsumed: keep it for the next call.
    in_.append(scratch_);
    scratch_ = {};
    li_->want_sweep();
  } else if (in_.empty() && in_.capacity() > kKeepCapacity) {
    in_.release();
  }
}

void conn::apply(action a) noexcept {
  if (a == action::close) {
    request_close({}, false);
  } else if (a == action::shutdown) {
    loop_->owner().stop();
  }
}

void conn::handle_udp_read(int listen_fd, std::uint32_t events) noexcept {
  // Datagrams arrive in batches (one recvmmsg for up to batch_size()); replies written in
  // on_traffic are queued in the batch and sent together (one sendmmsg) after the batch.
  loop_internals& lp = *li_;
  detail::udp_batch& batch = *udp_batch_;
  if ((events & io_event::writable) != 0 && batch.queued() != 0) {
    (void)batch.flush(listen_fd);
  }
  if ((events & io_event::readable) == 0) {
    return;
  }
  for (;;) {
    auto got = batch.receive(listen_fd);
    if (!got || got->empty()) {
      break;  // drained (or an ICMP error report: nothing to deliver)
    }
    in_udp_batch_ = true;
    for (const detail::udp_datagram& d : *got) {
      *peer_long_ = d.peer;
      scratch_ = as_chars(d.data);
      lp.enter();
      const action a = lp.h->on_traffic(*this);
      lp.leave();
      scratch_ = {};  // datagram semantics: what the handler did not consume is dropped
      if (a == action::shutdown) {
        loop_->owner().stop();
      }
    }
    in_udp_batch_ = false;
    if (batch.queued() != 0) {
      (void)batch.flush(listen_fd);
    }
    if (got->size() < batch.batch_size()) {
      break;  // fewer than asked: the socket is drained
    }
  }
  // Whatever the kernel would not take now waits for writability (the socket is registered
  // edge-triggered for both directions).
}

// ---- connect (client side) ----

void conn::handle_connect(std::uint32_t events) noexcept {
  if ((events & (io_event::writable | io_event::error | io_event::hangup)) == 0) {
    return;
  }
  std::error_code ec = detail::socket_error(fd_);
  if (!ec && (events & (io_event::error | io_event::hangup)) != 0 &&
      (events & io_event::writable) == 0) {
    ec = std::make_error_code(std::errc::connection_refused);
  }
  if (ec) {
    fail_connect(ec);
    return;
  }
  open_in_loop();
  if ((events & (io_event::readable | io_event::read_hangup)) != 0) {
    handle_read((events & io_event::read_hangup) != 0);
  }
}

void conn::fail_connect(std::error_code ec) noexcept {
  loop_internals& lp = loop_->internals();
  set_state(conn_state::closed);
  if (attachment_.registered()) {
    lp.poll->remove(attachment_);
  }
  if (fd_ >= 0) {
    ::close(fd_);
  }
  fd_ = -1;
  retire_deadline_timer();
  lp.conn_count.fetch_sub(1, std::memory_order_relaxed);
  lp.eng.internals().conn_count.fetch_sub(1, std::memory_order_relaxed);
  lp.unlink_live(this);
  std::shared_ptr<conn> keep = std::move(self_);
  if (auto cb = std::move(dial_result_)) {
    lp.enter();
    (*cb)(nullptr, ec);
    lp.leave();
  }
  lp.retire(std::move(keep));
}

void conn::open_in_loop() noexcept {
  loop_internals& lp = loop_->internals();
  set_state(conn_state::open);
  if (stamp_) {
    dl_->last_read_ns = dl_->last_write_ns = loop_internals::clock_ns();
    arm_deadline();
  } else if (dl_ && dl_->timer) {
    dl_->timer->detach();  // a connect timeout no longer applies
    dl_->armed_ns = 0;
  }
  if (dial_result_) {
    auto cb = std::move(dial_result_);
    lp.enter();
    (*cb)(this, {});
    lp.leave();
    if (state_.load(std::memory_order_relaxed) != conn_state::open || close_pending_) {
      // Closed by on_result (at once, or deferred when on_result ran inside a task, as a dial
      // that connects at once does): on_open is not called, so on_close is not owed.
      return;
    }
  }
  opened_ = true;
  lp.enter();
  const action a = lp.h->on_open(*this);
  lp.leave();
  apply(a);
}

// ---- close ----

void conn::request_close(std::error_code reason, bool discard_output) noexcept {
  loop_internals& lp = loop_->internals();
  const conn_state st = state_.load(std::memory_order_relaxed);
  if (st == conn_state::closed) {
    return;
  }
  if (kind_ == transport::udp && !opened_) {
    // A UDP listener's conn: its socket is the listener's, and it was never counted as a
    // connection. Closing it would kill the listener; the engine's stop closes it.
    return;
  }
  if (st == conn_state::connecting) {
    fail_connect(reason ? reason : make_error_code(errc::aborted));
    return;
  }
  if (st == conn_state::closing) {
    // Already flushing; a failure (or abort) while flushing ends it now, or, inside a
    // callback, when the outermost callback returns. Its reason replaces a plain close's.
    if (!discard_output) {
      return;
    }
    discard_output_ = true;
    if (!close_reason_) {
      close_reason_ = reason;
    }
    if (lp.nesting() == 0) {
      do_close();
    } else if (!close_pending_) {
      close_pending_ = true;
      refresh_gates();
      lp.queue_close(shared_from_this());
    }
    return;
  }
  if (close_pending_) {
    // A second request before the deferred close runs: an abort (or a failed write) after a
    // plain close() makes it discarding, and its reason is kept unless one was given, as in
    // the closing state above.
    if (discard_output) {
      discard_output_ = true;
      if (!close_reason_) {
        close_reason_ = reason;
      }
      refresh_gates();
    }
    return;
  }
  close_reason_ = reason;
  discard_output_ = discard_output;
  if (lp.nesting() > 0) {
    // Inside a callback: close when the outermost callback returns, so the handler never sees
    // the conn change state (or its on_close run) underneath it.
    close_pending_ = true;
    refresh_gates();
    lp.queue_close(shared_from_this());
    return;
  }
  begin_close();
}

void conn::begin_close() noexcept {
  close_pending_ = false;
  const conn_state st = state_.load(std::memory_order_relaxed);
  if (st == conn_state::closed) {
    return;
  }
  if (st == conn_state::closing) {
    if (discard_output_) {
      do_close();  // aborted while flushing (request_close)
    }
    return;
  }
  set_state(conn_state::closing);
  unread_at_close_ = !scratch_.empty() || !in_.empty();
  scratch_ = {};
  if (!discard_output_ && !out_.empty() && fd_ >= 0) {
    // Let the buffered output drain (EPOLLOUT is already armed, edge-triggered); give up after
    // close_linger, or what is left of the stop grace period.
    loop_internals& lp = loop_->internals();
    std::int64_t linger = std::chrono::nanoseconds(lp.opts->close_linger).count();
    const std::int64_t now = loop_internals::clock_ns();
    if (lp.stopping && lp.stop_deadline_ns - now < linger) {
      linger = lp.stop_deadline_ns - now;
    }
    if (linger <= 0) {
      do_close();
      return;
    }
    deadlines().closing_ns = now + linger;
    arm_deadline();
    return;
  }
  do_close();
}

void conn::do_close() noexcept {
  loop_internals& lp = loop_->internals();
  if (state_.load(std::memory_order_relaxed) == conn_state::closed) {
    return;
  }
  if (!lingering_ && fd_ >= 0 && !discard_output_ && !read_eof_ && kind_ != transport::udp) {
    // A graceful close: read away what the peer sent meanwhile (see discard_input()). If there
    // was some, or the close left input unconsumed, the peer may still be sending: the close
    // lingers until its EOF.
    std::uint64_t budget = kLingerBudget;
    if (discard_input(&budget) == drain_result::drained &&
        (budget != kLingerBudget || unread_at_close_) && start_lingering(budget)) {
      return;
    }
  }
  set_state(conn_state::closed);
  close_pending_ = false;
  if (attachment_.registered()) {
    lp.poll->remove(attachment_);
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  retire_deadline_timer();
  scratch_ = {};
  in_.release();
  out_.release();
  out_bytes_.store(0, std::memory_order_relaxed);
  lp.conn_count.fetch_sub(1, std::memory_order_relaxed);
  lp.eng.internals().conn_count.fetch_sub(1, std::memory_order_relaxed);
  lp.unlink_live(this);
  std::shared_ptr<conn> keep = std::move(self_);
  complete_sends(make_error_code(errc::aborted));
  if (kind_ != transport::udp) {
    abort_queued_sends();  // sends queued from other threads whose drain has not run yet
  }
  if (opened_) {
    lp.enter();
    lp.h->on_close(*this, close_reason_);
    lp.leave();
  }
  if (keep) {
    lp.retire(std::move(keep));
  }
}

// A socket closed with unread input makes the kernel answer with a reset (RFC 1122
// §4.2.2.13), and so does one that receives data after it was closed; the reset throws away the
// output still queued for the peer: a graceful close (the response flushed to the kernel, then
// close()) would lose its tail whenever the peer had sent more meanwhile (a pipelined request,
// the rest of an upload) or was still sending. So what the peer sent is read away first (one
// system call when nothing is waiting), and if there was some, or the handler had left input
// unconsumed (it refused a request without reading all of it), the close lingers: our FIN goes
// out and what arrives is read away until the peer's EOF (start_lingering()). Bounded: a peer
// that keeps sending gets the reset after 16 MiB in all, or engine_options::lingering_close.
//
// Reads away what the socket holds, up to *budget bytes (decremented): drained (nothing more
// for now), finished (the peer's EOF, or the socket failed: nothing more will come) or
// over_budget.
conn::drain_result conn::discard_input(std::uint64_t* budget) noexcept {
  const bool tcp = kind_ == transport::tcp;
  // MSG_TRUNC on TCP discards in the kernel without copying (Linux >= 2.4.4); a Unix stream
  // socket needs a buffer. Not the loop's read buffer: this may run from the end of another
  // conn's on_traffic (a close it requested), whose unconsumed input is still there.
  char buf[16384];
  for (;;) {
    if (*budget == 0) {
      return drain_result::over_budget;
    }
    const std::size_t room = tcp ? std::size_t{1} << 20 : sizeof buf;
    const std::size_t want = *budget < room ? static_cast<std::size_t>(*budget) : room;
    const ssize_t n = tcp ? ::recv(fd_, nullptr, want, MSG_TRUNC | MSG_DONTWAIT)
                          : ::recv(fd_, buf, want, MSG_DONTWAIT);
    if (n > 0) {
      *budget -= static_cast<std::uint64_t>(n);
      continue;
    }
    if (n == 0) {
      return drain_result::finished;
    }
    if (errno == EINTR) {
      continue;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK ? drain_result::drained : drain_result::finished;
  }
}

// The output is flushed (to the kernel) and the peer is still sending: send our FIN and keep the
// fd, reading away what arrives (linger_read()) until the peer's EOF, `budget` more bytes, or
// engine_options::lingering_close (cut short by the end of stop()'s grace period); then
// do_close() closes it, with the close's reason. False (close at once) when lingering is off
// (lingering_close or close_linger 0), or nothing is left to protect.
bool conn::start_lingering(std::uint64_t budget) noexcept {
  loop_internals& lp = *li_;
  if (lp.opts->close_linger.count() <= 0 || !out_.empty() || !attachment_.registered()) {
    return false;
  }
  std::int64_t bound = std::chrono::nanoseconds(lp.opts->lingering_close).count();
  const std::int64_t now = loop_internals::clock_ns();
  if (lp.stopping && lp.stop_deadline_ns - now < bound) {
    bound = lp.stop_deadline_ns - now;
  }
  if (bound <= 0) {
    return false;
  }
  if (!write_shutdown_ && ::shutdown(fd_, SHUT_WR) != 0) {
    return false;  // the peer reset the connection: nothing left to protect
  }
  lingering_ = true;
  write_shutdown_ = true;
  if (state_.load(std::memory_order_relaxed) != conn_state::closing) {
    set_state(conn_state::closing);
  }
  close_pending_ = false;
  scratch_ = {};
  in_.release();
  out_.release();
  deadline_state& d = deadlines();
  d.linger_left = budget;
  d.closing_ns = now + bound;
  arm_deadline();
  return true;
}

// A lingering conn's fd event: read away what came; close at the peer's EOF (or a failure, or
// when the byte budget is spent).
void conn::linger_read() noexcept {
  if (discard_input(&dl_->linger_left) != drain_result::drained) {
    do_close();
  }
}

void conn::complete_sends(std::error_code ec) noexcept {
  if (!completions_) {
    return;
  }
  loop_internals& lp = loop_->internals();
  while (!completions_->items.empty()) {
    send_callback cb = std::move(completions_->items.front().second);
    completions_->items.pop_front();
    lp.enter();
    cb(ec);
    lp.leave();
  }
}

// ---- deadlines ----

// A closed conn's timer may be the one running now: it is freed after the round.
void conn::retire_deadline_timer() noexcept {
  if (!dl_) {
    return;
  }
  if (dl_->timer) {
    dl_->timer->detach();
    li_->retire_timer(std::move(dl_->timer));
  }
  dl_->armed_ns = 0;
}

std::int64_t conn::next_deadline() const noexcept {
  if (!dl_) {
    return kNever;
  }
  const deadline_state& t = *dl_;
  const conn_state st = state_.load(std::memory_order_relaxed);
  if (st == conn_state::connecting) {
    return t.connect_ns != 0 ? t.connect_ns : kNever;
  }
  if (st == conn_state::closing) {
    return t.closing_ns != 0 ? t.closing_ns : kNever;
  }
  if (st != conn_state::open) {
    return kNever;
  }
  std::int64_t d = kNever;
  if (t.idle_ns > 0) {
    const std::int64_t last = t.last_read_ns > t.last_write_ns ? t.last_read_ns : t.last_write_ns;
    d = std::min(d, last + t.idle_ns);
  }
  if (t.read_ns > 0 && !read_paused_ && !read_eof_) {
    d = std::min(d, t.last_read_ns + t.read_ns);
  }
  if (t.write_ns > 0 && !out_.empty()) {
    d = std::min(d, t.last_write_ns + t.write_ns);
  }
  return d;
}

void conn::arm_deadline() noexcept {
  const std::int64_t d = next_deadline();
  if (d == kNever) {
    return;  // a timer already armed fires harmlessly and is not re-armed
  }
  deadline_state& t = *dl_;  // a deadline exists, so the block does
  if (t.armed_ns != 0 && t.armed_ns <= d) {
    return;  // fires earlier; re-armed lazily then
  }
  loop_internals& lp = loop_->internals();
  if (!t.timer) {
    t.timer = std::make_unique<evnet::timer>(*lp.base, [this] { on_deadline(); });
  }
  // Relative to the base's cached round time, which is never ahead of the clock: the timer
  // may fire late by the age of that cache (then re-armed lazily), never early.
  const std::int64_t delay = d - lp.now_ns();
  t.timer->rearm(std::chrono::nanoseconds(delay > 0 ? delay : 0));
  t.armed_ns = d;
}

void conn::on_deadline() noexcept {
  deadline_state& t = *dl_;  // its timer fired
  t.armed_ns = 0;
  const std::int64_t now = loop_internals::clock_ns();
  const conn_state st = state_.load(std::memory_order_relaxed);
  if (st == conn_state::connecting) {
    if (t.connect_ns != 0 && now >= t.connect_ns) {
      fail_connect(make_error_code(errc::connect_timeout));
      return;
    }
  } else if (st == conn_state::closing) {
    if (t.closing_ns != 0 && now >= t.closing_ns) {
      discard_output_ = true;
      do_close();
      return;
    }
  } else if (st == conn_state::open) {
    if (t.write_ns > 0 && !out_.empty() && now >= t.last_write_ns + t.write_ns) {
      request_close(make_error_code(errc::write_timeout), true);
      return;
    }
    if (t.read_ns > 0 && !read_paused_ && !read_eof_ && now >= t.last_read_ns + t.read_ns) {
      request_close(make_error_code(errc::read_timeout), false);
      return;
    }
    const std::int64_t last = t.last_read_ns > t.last_write_ns ? t.last_read_ns : t.last_write_ns;
    if (t.idle_ns > 0 && now >= last + t.idle_ns) {
      request_close(make_error_code(errc::idle_timeout), false);
      return;
    }
  } else {
    return;
  }
  arm_deadline();
}

// ---- cross-thread API ----

std::error_code conn::queue_send(std::string data, send_callback done) {
  if (kind_ == transport::udp) {
    return errc::unsupported;
  }
  if (state() != conn_state::open) {
    return errc::closed;
  }
  loop_internals& lp = *li_;
  const std::size_t n = data.size();
  const std::size_t limit = lp.opts->send_queue_limit;
  const std::size_t queued = queued_bytes_.fetch_add(n, std::memory_order_relaxed) + n;
  if (limit != 0 && queued + out_bytes_.load(std::memory_order_relaxed) > limit) {
    queued_bytes_.fetch_sub(n, std::memory_order_relaxed);
    if (lp.opts->queue_policy == send_queue_policy::close) {
      abort(make_error_code(errc::queue_full));
    }
    return errc::queue_full;
  }
  // One task per burst, not per send: sends queue here and the first one of a burst schedules
  // the drain, so a flood of small sends cannot bury other tasks (a close()) in the loop's queue.
  // The state test above may be stale by now: the queue itself says whether the close has
  // already answered it (do_close() sets xq_closed_ under the lock), so a send is either queued
  // before the close, which then answers it, or refused.
  bool schedule = false;
  {
    std::lock_guard<std::mutex> lock(xq_mu());
    if (xq_closed_) {
      queued_bytes_.fetch_sub(n, std::memory_order_relaxed);
      return errc::closed;
    }
    xq_.push_back({std::move(data), std::move(done)});
    if (!xq_scheduled_) {
      xq_scheduled_ = schedule = true;
    }
  }
  if (!schedule) {
    return {};
  }
  std::shared_ptr<conn> self = shared_from_this();
  if (loop_->post([self] { self->drain_sends(); })) {
    // The loop has stopped, so it closed this conn first, and that close answered every send
    // queued by then with errc::aborted, ours included: it was accepted.
    std::vector<queued_send> rest;
    {
      std::lock_guard<std::mutex> lock(xq_mu());
      if (xq_closed_) {
        return {};
      }
      // Not expected (every conn is closed before its loop refuses tasks); should it happen,
      // ours (the first entry: the queue was idle when we pushed) is taken back and the others,
      // already accepted, are answered here rather than left without an answer.
      rest.swap(xq_);
      xq_scheduled_ = false;
      xq_closed_ = true;
    }
    for (std::size_t i = 0; i < rest.size(); ++i) {
      queued_bytes_.fetch_sub(rest[i].data.size(), std::memory_order_relaxed);
      if (i != 0 && rest[i].done) {
        rest[i].done(make_error_code(errc::aborted));
      }
    }
    return errc::closed;
  }
  return {};
}

void conn::abort_queued_sends() noexcept {
  std::vector<queued_send> batch;
  {
    std::lock_guard<std::mutex> lock(xq_mu());
    xq_closed_ = true;  // later sends are refused (errc::closed) instead of queued unanswered
    batch.swap(xq_);    // a drain task still queued finds nothing
  }
  loop_internals& lp = *li_;
  for (queued_send& q : batch) {
    queued_bytes_.fetch_sub(q.data.size(), std::memory_order_relaxed);
    if (q.done) {
      lp.enter();
      q.done(make_error_code(errc::aborted));
      lp.leave();
    }
  }
}

void conn::drain_sends() noexcept {
  std::vector<queued_send> batch;
  {
    std::lock_guard<std::mutex> lock(xq_mu());
    batch.swap(xq_);
    xq_scheduled_ = false;
  }
  loop_internals& lp = *li_;
  // The whole batch is one callback context: a close or abort requested meanwhile (by the
  // completions, or by on_high_water inside write()) happens after it, so a completion is
  // never reported as a success for bytes a close then threw away (they complete with
  // errc::aborted when the close runs).
  lp.enter();
  for (queued_send& q : batch) {
    queued_bytes_.fetch_sub(q.data.size(), std::memory_order_relaxed);
    send_callback cb = std::move(q.done);
    if (state_.load(std::memory_order_relaxed) != conn_state::open ||
        (close_pending_ && discard_output_)) {
      if (cb) {
        cb(make_error_code(errc::aborted));
      }
      continue;
    }
    const std::error_code wec = write(q.data);
    if (!cb) {
      continue;
    }
    if (wec) {
      cb(wec);
    } else if (out_.empty()) {
      cb({});
    } else {
      complete_when_flushed(std::move(cb));
    }
  }
  lp.leave();
}

void conn::complete_when_flushed(send_callback cb) {
  if (!completions_) {
    completions_ = std::make_unique<detail::send_completion_list>();
  }
  completions_->items.emplace_back(out_accepted_, std::move(cb));
}

std::error_code conn::send_to_in_loop(const socket_address& to, std::string_view data) noexcept {
  if (udp_batch_ == nullptr || state_.load(std::memory_order_relaxed) != conn_state::open) {
    return errc::closed;
  }
  if (!udp_batch_->queue(to, as_bytes(data))) {
    return errc::queue_full;  // the kernel has not taken the last 4 MiB of datagrams
  }
  // Inside the receive batch the datagram leaves with the batch's replies (one sendmmsg);
  // elsewhere (a timer, a task) it leaves now. What the kernel will not take stays queued
  // until the socket is writable.
  if (!in_udp_batch_) {
    auto r = udp_batch_->flush(fd_);
    if (!r) {
      return r.error();
    }
  }
  return {};
}

std::error_code conn::send_to(const socket_address& to, std::string data, send_callback done) {
  if (kind_ != transport::udp) {
    return errc::unsupported;
  }
  loop_internals& lp = *li_;
  if (loop_->in_loop_thread()) {
    const std::error_code ec = send_to_in_loop(to, data);
    if (ec) {
      return ec;
    }
    if (done) {
      lp.enter();
      done({});
      lp.leave();
    }
    return {};
  }
  if (state() != conn_state::open) {
    return errc::closed;
  }
  const std::size_t n = data.size();
  const std::size_t limit = lp.opts->send_queue_limit;
  if (queued_bytes_.fetch_add(n, std::memory_order_relaxed) + n > limit && limit != 0) {
    queued_bytes_.fetch_sub(n, std::memory_order_relaxed);
    return errc::queue_full;
  }
  std::shared_ptr<conn> self = shared_from_this();
  if (loop_->post([self, to, n, data = std::move(data), done = std::move(done)]() mutable {
        self->queued_bytes_.fetch_sub(n, std::memory_order_relaxed);
        const std::error_code ec = self->send_to_in_loop(to, data);
        if (done) {
          loop_internals& l = *self->li_;
          l.enter();
          done(ec);
          l.leave();
        }
      })) {
    queued_bytes_.fetch_sub(n, std::memory_order_relaxed);
    return errc::closed;
  }
  return {};
}

std::error_code conn::send(std::string data) {
  if (loop_->in_loop_thread()) {
    if (kind_ == transport::udp) {
      return errc::unsupported;
    }
    return write(data);
  }
  return queue_send(std::move(data), nullptr);
}

std::error_code conn::send_async(std::string data, send_callback done) {
  if (kind_ == transport::udp || !loop_->in_loop_thread()) {
    return queue_send(std::move(data), std::move(done));
  }
  // On the loop thread, as send(): written now, in order with write() and send(). Only the
  // completion waits; it never runs inside this call.
  if (state_.load(std::memory_order_relaxed) != conn_state::open) {
    return errc::closed;
  }
  if (std::error_code ec = write(data)) {
    return ec;
  }
  if (!done) {
    return {};
  }
  const bool open = state_.load(std::memory_order_relaxed) == conn_state::open;
  if (open && !out_.empty()) {
    complete_when_flushed(std::move(done));
    return {};
  }
  // All handed to the kernel (or the conn closed inside write(), dropping the rest).
  const std::error_code result = open ? std::error_code{} : make_error_code(errc::aborted);
  std::shared_ptr<conn> self = shared_from_this();
  (void)loop_->post([self, result, cb = std::move(done)] {
    loop_internals& lp = *self->li_;
    lp.enter();
    cb(result);
    lp.leave();
  });
  return {};
}

void conn::close() noexcept {
  if (loop_->in_loop_thread()) {
    request_close({}, false);
    return;
  }
  if (state() == conn_state::closed) {
    return;
  }
  std::shared_ptr<conn> self = weak_from_this().lock();
  if (!self) {
    return;
  }
  (void)loop_->post([self] { self->request_close({}, false); });
}

void conn::abort(std::error_code reason) noexcept {
  if (loop_->in_loop_thread()) {
    request_close(reason, true);
    return;
  }
  if (state() == conn_state::closed) {
    return;
  }
  std::shared_ptr<conn> self = weak_from_this().lock();
  if (!self) {
    return;
  }
  (void)loop_->post([self, reason] { self->request_close(reason, true); });
}

std::error_code conn::shutdown_write() noexcept {
  assert(loop_->in_loop_thread());
  if (state_.load(std::memory_order_relaxed) != conn_state::open ||
      (close_pending_ && discard_output_)) {
    return errc::closed;
  }
  if (kind_ == transport::udp) {
    return errc::unsupported;
  }
  if (write_shutdown_ || shutdown_pending_) {
    return {};
  }
  if (out_.empty()) {
    return shutdown_now();
  }
  shutdown_pending_ = true;
  refresh_gates();
  return {};
}

// The write side is marked shut only once the kernel has sent our FIN. If it refuses (the peer
// reset the connection: ENOTCONN), nothing was half-closed: the conn closes with the socket's
// error (ECONNRESET, the cause, when the kernel still holds it), as after a failed write().
std::error_code conn::shutdown_now() noexcept {
  if (::shutdown(fd_, SHUT_WR) == 0) {
    write_shutdown_ = true;
    refresh_gates();
    return detail::no_error();
  }
  const int err = errno;
  std::error_code ec = detail::socket_error(fd_);
  if (!ec) {
    ec = sys_error(err);
  }
  request_close(ec, true);
  return ec;
}

void conn::pause_read() noexcept {
  assert(loop_->in_loop_thread());
  read_paused_ = true;
  refresh_gates();
}

// Only the task's allocation can throw here; running out of memory on the loop thread
// terminates, as everywhere else in the loop.
// NOLINTNEXTLINE(bugprone-exception-escape)
void conn::resume_read() noexcept {
  assert(loop_->in_loop_thread());
  if (!read_paused_) {
    return;
  }
  read_paused_ = false;
  refresh_gates();
  if (stamp_) {
    dl_->last_read_ns = loop_internals::clock_ns();
  }
  // The socket is edge-triggered: bytes that arrived while paused produced their edge already,
  // so read now (from a fresh stack, not inside the caller's callback).
  // Bytes already in the input buffer (they came with the read that preceded the pause, or
  // the handler left them) are offered to on_traffic first: no new edge would announce them.
  // One task is enough however often the reading is paused and resumed before it runs
  // (pause, resume, pause, resume in one callback offered the same input twice).
  if (resume_posted_) {
    return;
  }
  std::shared_ptr<conn> self = shared_from_this();
  resume_posted_ = !loop_->post([self] {
    self->resume_posted_ = false;
    if (self->state() != conn_state::open || self->read_paused_) {
      return;
    }
    if (!self->offer_kept_input()) {
      return;
    }
    self->handle_read(true);
  });
  offer_kept_ = resume_posted_;
}

// Input kept from before a pause is offered once after the resume, before anything read later
// (or the peer's EOF) is reported: by resume_read()'s task, or by read_loop() if an I/O event
// comes first (a flush that drains the output may resume reading, as HTTP's pipelining
// backpressure does, within the same event that reports the peer's FIN). Returns whether to
// go on reading.
bool conn::offer_kept_input() noexcept {
  if (!offer_kept_) {
    return true;
  }
  offer_kept_ = false;
  if (in_.empty()) {
    return true;
  }
  deliver<false>();
  return state_.load(std::memory_order_relaxed) == conn_state::open && !read_paused_;
}

}  // namespace evnet
