#include "ws/session.h"

#include <unordered_map>

#include "evnet/ring_buffer.h"

namespace evnet::ws {

// ---- connection ----

connection::connection(std::shared_ptr<evnet::conn> c, std::string subprotocol,
                       std::string extensions, std::string target)
    : conn_(std::move(c)),
      subprotocol_(std::move(subprotocol)),
      extensions_(std::move(extensions)),
      target_(std::move(target)) {}

connection::~connection() = default;

std::error_code connection::send(opcode type, std::string_view data) {
  if (type != opcode::text && type != opcode::binary) {
    return errc::invalid_argument;
  }
  if (!is_open()) {
    return errc::closed;
  }
  if (conn_->owner().in_loop_thread()) {
    return send_in_loop(type, data);
  }
  return conn_->owner().post([self = shared_from_this(), type, d = std::string(data)] {
    (void)self->send_in_loop(type, d);
  });
}

std::error_code connection::ping(std::string_view payload) {
  if (payload.size() > 125) {
    return errc::invalid_argument;
  }
  if (!is_open()) {
    return errc::closed;
  }
  if (conn_->owner().in_loop_thread()) {
    return send_in_loop(opcode::ping, payload);
  }
  return conn_->owner().post([self = shared_from_this(), d = std::string(payload)] {
    (void)self->send_in_loop(opcode::ping, d);
  });
}

namespace {

// `reason` cut to the 123 bytes a close frame has room for, at a UTF-8 character boundary
// (never before a continuation byte), so that the peer does not fail the connection with 1007.
std::string_view fit_close_reason(std::string_view reason) noexcept {
  constexpr std::size_t kMax = 123;
  if (reason.size() <= kMax) {
    return reason;
  }
  std::size_t n = kMax;
  while (n > 0 && (static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80) {
    --n;
  }
  return reason.substr(0, n);
}

}  // namespace

std::error_code connection::close(std::uint16_t code, std::string_view reason) {
  // 1005 (and 0) send a close frame without a code; any other code must be one a peer accepts,
  // or it would fail the connection with 1002 (1006, 1015, 999, 5000...).
  if (code != 0 && code != close_code::no_status && !is_valid_close_code(code)) {
    return errc::invalid_argument;
  }
  reason = fit_close_reason(reason);
  if (!is_open()) {
    return {};
  }
  if (conn_->owner().in_loop_thread()) {
    return close_in_loop(code, reason);
  }
  return conn_->owner().post([self = shared_from_this(), code, r = std::string(reason)] {
    (void)self->close_in_loop(code, r);
  });
}

std::size_t connection::buffered_amount() const noexcept {
  return conn_->outbound_size() + (session_ ? session_->staged_bytes() : 0);
}

std::error_code connection::send_in_loop(opcode type, std::string_view data) {
  if (!session_ || state_.load(std::memory_order_relaxed) != kOpen) {
    return errc::closed;
  }
  return session_->write_message(type, data);
}

std::error_code connection::close_in_loop(std::uint16_t code, std::string_view reason) {
  if (!session_ || state_.load(std::memory_order_relaxed) != kOpen) {
    return {};
  }
  session_->start_close(code, reason);
  return {};
}

namespace detail {

namespace {

// The server-role sessions of this thread by TCP connection, for the net layer's
// on_high_water/on_drain, which reach the HTTP server's handler and not the session. A session
// lives on one loop thread from construction to destruction, so a per-thread map needs no lock.
std::unordered_map<const evnet::conn*, session*>& sessions_of_thread() {
  thread_local std::unordered_map<const evnet::conn*, session*> m;
  return m;
}

}  // namespace

// ---- session ----

session* session::of(const evnet::conn& c) noexcept {
  auto& m = sessions_of_thread();
  auto it = m.find(&c);
  return it == m.end() ? nullptr : it->second;
}

session::session(evnet::conn& c, handler& h, const options& o, role r, std::string subprotocol,
                 std::string extensions, std::string target, const deflate_params* deflate)
    : tcp_(c),
      handler_(h),
      opts_(o),
      role_(r),
      reader_(reader_config{r, o.max_frame_bytes, o.max_message_bytes, true}) {
  if (deflate) {
    bool server = r == role::server;
    // We inflate what the peer compressed with its parameters, and deflate with ours.
    inflater_ = std::make_unique<inflater>(
        server ? deflate->client_max_window_bits : deflate->server_max_window_bits,
        server ? deflate->client_no_context_takeover : deflate->server_no_context_takeover);
    deflater_ = std::make_unique<deflater>(
        server ? deflate->server_max_window_bits : deflate->client_max_window_bits,
        server ? deflate->server_no_context_takeover : deflate->client_no_context_takeover);
    reader_.set_inflater(inflater_.get());
  }
  conn_ = std::make_shared<connection>(c.shared_from_this(), std::move(subprotocol),
                                       std::move(extensions), std::move(target));
  conn_->session_ = this;
  if (role_ == role::server) {
    sessions_of_thread()[&tcp_] = this;
  }
  if (opts_.ping_interval.count() > 0) {
    arm_keepalive(opts_.ping_interval);
  }
}

// The timer runs on the loop thread inside a callback scope (a close it causes is deferred
// until it returns) and is cancelled in on_close, so `this` is alive whenever it fires.
void session::arm_keepalive(std::chrono::milliseconds after) {
  keepalive_timer_ = tcp_.owner().run_after(after, [this] { keepalive_check(); });
}

void session::keepalive_check() {
  keepalive_timer_ = 0;
  if (close_sent_ || done_) {
    return;  // closing: close_timeout governs from here
  }
  if (heard_ || tcp_.read_paused()) {
    heard_ = false;
    ping_out_ = false;
    arm_keepalive(opts_.ping_interval);
    return;
  }
  if (!ping_out_) {
    ping_out_ = true;
    write_frame(opcode::ping, {}, false);
    arm_keepalive(opts_.ping_timeout.count() > 0 ? opts_.ping_timeout : opts_.ping_interval);
    return;
  }
  // Silent through a whole ping timeout: the peer (or the path to it) is gone. Say why, but
  // do not wait close_timeout for a reply that will not come.
  fail(close_code::internal_error, "keepalive ping timeout");
  tcp_.close();
}

session::~session() {
  if (keepalive_timer_) {
    tcp_.owner().cancel(keepalive_timer_);
  }
  if (conn_) {
    conn_->session_ = nullptr;
  }
  if (role_ == role::server) {
    sessions_of_thread().erase(&tcp_);
  }
}

template <typename F>
void session::guarded(F&& f) {
  try {
    f();
  } catch (...) {
    fail(close_code::internal_error, "handler threw");
  }
}

void session::high_water() {
  // Once per crossing: the flag is cleared by drained(). After a close nothing more is produced,
  // so the application is not told any more.
  if (conn_->state_.load(std::memory_order_relaxed) == connection::kClosed ||
      conn_->above_high_water_.load(std::memory_order_relaxed)) {
    return;
  }
  conn_->above_high_water_.store(true, std::memory_order_release);
  guarded([&] { handler_.on_high_water(conn_); });
}

void session::drained() {
  if (!conn_->above_high_water_.load(std::memory_order_relaxed)) {
    return;  // the net layer also reports drains of output that never reached the mark
  }
  conn_->above_high_water_.store(false, std::memory_order_release);
  if (conn_->state_.load(std::memory_order_relaxed) == connection::kClosed) {
    return;
  }
  guarded([&] { handler_.on_drain(conn_); });
}

std::size_t session::staged_bytes() const noexcept {
  return out_.size() + borrowed_bytes_;
}

void session::write_frame(opcode op, std::string_view payload, bool rsv1) {
  if (role_ == role::server) {
    if (staging_ != staging::none) {
      if (payload.size() >= kBorrowMin && staging_ == staging::traffic &&
          n_borrowed_ < kMaxBorrowed && in_input(payload)) {
        // Only the header is staged; the payload is written from the input (see borrowed).
        char* p = out_.reserve(kMaxFrameHeader);
        out_.commit(write_frame_header(p, op, payload.size(), true, rsv1));
        borrowed_[n_borrowed_++] = {out_.size(), payload.data(), payload.size()};
        borrowed_bytes_ += payload.size();
      } else {
        // Header and payload straight into the staging buffer: one write after the batch.
        char* p = out_.reserve(kMaxFrameHeader + payload.size());
        std::size_t n = write_frame_header(p, op, payload.size(), true, rsv1);
        if (!payload.empty()) {  // an empty view may have no data pointer (memcpy's is nonnull)
          std::memcpy(p + n, payload.data(), payload.size());
        }
        out_.commit(n + payload.size());
      }
      flush_if_staged_too_much();
      return;
    }
    char hdr[kMaxFrameHeader];
    std::size_t n = write_frame_header(hdr, op, payload.size(), true, rsv1);
    std::string_view parts[2] = {std::string_view(hdr, n), payload};
    (void)tcp_.writev(parts);
    return;
  }
  // A client masks a copy of the payload with a fresh key (RFC 6455 §5.3).
  auto key = random_mask_key();
  char* p = out_.reserve(kMaxFrameHeader + payload.size());
  std::size_t n = write_frame_header(p, op, payload.size(), true, rsv1, key.data());
  if (!payload.empty()) {  // an empty view may have no data pointer (memcpy's is nonnull)
    std::memcpy(p + n, payload.data(), payload.size());
    apply_mask(p + n, payload.size(), key.data());
  }
  out_.commit(n + payload.size());
  if (staging_ == staging::none) {
    flush();
  } else {
    flush_if_staged_too_much();
  }
}

void session::flush_if_staged_too_much() {
  // Staging saves system calls for many small replies; past kMaxStaged nothing is saved, and the
  // bytes must reach the TCP connection for its high-water mark to see them (a callback that
  // sends in a loop until above_high_water() would otherwise stage without bound). Both callers
  // of on_upgraded have written the 101 already, so writing early keeps the stream's order.
  if (out_.size() + borrowed_bytes_ >= kMaxStaged) {
    flush();
  }
}

bool session::in_input(std::string_view p) const noexcept {
  // Compared as integers: relational operators on pointers into different arrays are
  // unspecified.
  // The input is not consumed before flush(), so peek() still shows what process() parsed.
  const input_view v = tcp_.peek();
  const auto lo = reinterpret_cast<std::uintptr_t>(p.data());
  const std::uintptr_t hi = lo + p.size();
  for (const std::span<const std::byte>& in : {v.first, v.second}) {
    const auto a = reinterpret_cast<std::uintptr_t>(in.data());
    if (lo >= a && hi <= a + in.size()) {
      return true;
    }
  }
  return false;
}

void session::flush() {
  // A write may call on_high_water, and the application may send from there before the write
  // returns. What it stages then is written by this loop after the bytes already handed over;
  // a nested flush() must not write them (nor the bytes in hand) itself.
  if (flushing_ || (out_.empty() && n_borrowed_ == 0)) {
    return;
  }
  flushing_ = true;
  for (;;) {
    const std::size_t staged = out_.size();
    const std::size_t lent = n_borrowed_;
    if (lent == 0) {
      (void)tcp_.write(out_.view());
    } else {
      write_staged();
    }
    if (out_.size() == staged && n_borrowed_ == lent) [[likely]] {
      // Nothing was staged during the write.
      out_.clear();
      out_.shrink(kKeepCapacity);
      n_borrowed_ = 0;
      borrowed_bytes_ = 0;
      break;
    }
    out_.drop_front(staged);
    // Payloads lent during the write follow what was written: move them to the front.
    std::size_t lent_bytes = 0;
    for (std::size_t i = 0; i < lent; ++i) {
      lent_bytes += borrowed_[i].len;
    }
    for (std::size_t i = lent; i < n_borrowed_; ++i) {
      borrowed_[i - lent] = {borrowed_[i].at - staged, borrowed_[i].data, borrowed_[i].len};
    }
    n_borrowed_ -= lent;
    borrowed_bytes_ -= lent_bytes;
  }
  flushing_ = false;
}

void session::write_staged() {
  // Staged bytes and borrowed payloads interleaved in stream order: one writev.
  // Left uninitialised on purpose (a plain array would zero all 63 views per flush): only the
  // first n pieces are assigned, and assigning one begins the array's lifetime.
  union pieces {
    // Not `= default`: string_view's constructor is non-trivial, which would delete it.
    pieces() {}  // NOLINT(modernize-use-equals-default)
    std::string_view v[2 * kMaxBorrowed + 1];
  } parts;
  std::size_t n = 0;
  std::size_t from = 0;
  const std::string_view staged = out_.view();
  for (std::size_t i = 0; i < n_borrowed_; ++i) {
    const borrowed& b = borrowed_[i];
    if (b.at > from) {
      parts.v[n++] = staged.substr(from, b.at - from);
    }
    parts.v[n++] = std::string_view(b.data, b.len);
    from = b.at;
  }
  if (staged.size() > from) {
    parts.v[n++] = staged.substr(from);
  }
  (void)tcp_.writev(std::span<const std::string_view>(parts.v, n));
}

std::error_code session::write_message(opcode op, std::string_view payload) {
  if (close_sent_) {
    return errc::closed;
  }
  if (deflater_ && payload.size() >= opts_.deflate_min_bytes &&
      (op == opcode::text || op == opcode::binary)) {
    scratch_.clear();
    if (!deflater_->deflate_message(payload, scratch_)) {
      return errc::protocol_error;
    }
    const bool smaller = scratch_.size() < payload.size();
    if (smaller) {
      write_frame(op, scratch_, true);  // copied or written: scratch_ is free again
    } else {
      // Deflate did not help (incompressible data grows a little): the message goes out as it
      // is, RSV1 clear (RFC 7692 §6 lets each message choose), so that a message within the
      // peer's limit is not pushed past it on the wire. The compressor saw the message, the
      // peer's decompressor will not: start its history afresh.
      deflater_->reset();
    }
    if (scratch_.capacity() > kKeepCapacity) {
      std::string().swap(scratch_);
    }
    if (smaller) {
      return {};
    }
  }
  write_frame(op, payload, false);
  return {};
}

void session::start_close(std::uint16_t code, std::string_view reason) {
  if (close_sent_) {
    return;
  }
  close_sent_ = true;
  conn_->state_.store(connection::kClosing, std::memory_order_release);
  std::string frame;
  append_close(frame, code, reason, role_ == role::client);
  if (staging_ != staging::none) {
    out_.append(frame);
  } else if (!out_.empty()) {
    out_.append(frame);
    flush();
  } else {
    (void)tcp_.write(frame);
  }
  if (close_received_) {
    return;
  }
  // Wait for the peer's close frame, but not forever.
  std::weak_ptr<evnet::conn> weak = tcp_.shared_from_this();
  close_timer_ = tcp_.owner().run_after(opts_.close_timeout, [weak] {
    if (auto c = weak.lock()) {
      c->close();
    }
  });
}

void session::fail(std::uint16_t code, std::string_view reason) {
  close_code_ = code;
  close_reason_.assign(reason);
  start_close(code, reason);
  done_ = true;
  failed_ = true;
}

bool session::process(char* data, std::size_t len, std::size_t& consumed) {
  std::span<char> in(data, len);
  while (!done_) {
    // The reader keeps no state that an empty call would advance, so stop at the end.
    if (in.empty()) {
      return true;
    }
    read_step s = reader_.next(in);
    in = in.subspan(s.consumed);
    consumed += s.consumed;
    switch (s.event) {
      case read_event::need_more:
        return true;
      case read_event::message:
        if (close_sent_) {
          break;  // after our close, data is read and dropped (RFC 6455 §5.5.1)
        }
        guarded([&] { handler_.on_message(conn_, s.type, s.data); });
        break;
      case read_event::ping:
        if (!close_sent_) {
          write_frame(opcode::pong, s.data, false);
        }
        guarded([&] { handler_.on_ping(conn_, s.data); });
        break;
      case read_event::pong:
        guarded([&] { handler_.on_pong(conn_, s.data); });
        break;
      case read_event::close:
        close_received_ = true;
        close_code_ = s.code;
        close_reason_.assign(s.reason);
        // Echo the peer's code (an empty close is answered with an empty close).
        if (!close_sent_) {
          start_close(s.code, s.reason);
        }
        if (close_timer_) {
          tcp_.owner().cancel(close_timer_), close_timer_ = 0;
        }
        done_ = true;
        break;
      case read_event::error:
        fail(s.code, s.reason);
        break;
    }
  }
  return false;
}

action session::on_traffic(evnet::conn& c) {
  heard_ = true;
  if (done_) {
    c.discard();
    if (lingering_) {
      return action::none;  // reading the peer's bytes away until its EOF or close_timeout
    }
    // Failed outside on_traffic (a handler threw in on_open, on_high_water or on_drain): our
    // close frame is out, and whatever the peer sends now (its close reply, typically) ends
    // the TCP connection, instead of close_timeout.
    return action::close;
  }
  // The input bytes belong to this connection until consumed, so frames are unmasked in place.
  const evnet::conn::writable_view v = c.peek_writable();
  staging_ = staging::traffic;
  std::size_t consumed = 0;
  auto* a = reinterpret_cast<char*>(v.first.data());
  bool go = process(a, v.first.size(), consumed);
  if (go && !v.second.empty()) {
    auto* b = reinterpret_cast<char*>(v.second.data());
    process(b, v.second.size(), consumed);
  }
  staging_ = staging::none;
  // Written before the input is consumed: borrowed payloads point into it.
  flush();
  // The messages of this batch are delivered: a large one leaves no large buffer behind.
  reader_.release_buffers();
  if (!done_) {
    c.discard(consumed);
    return action::none;
  }
  c.discard();
  if (failed_ && !close_received_) {
    // We failed the connection (a message too large, a protocol error) and the peer may be
    // in the middle of sending: closing now, with its bytes unread, would reset the connection
    // and the peer, still writing, would see the reset before our close frame. Send a FIN after
    // the close frame instead and drop what arrives until the peer's EOF (on_read_eof closes)
    // or close_timeout (start_close armed it).
    if (!lingering_ && !c.shutdown_write()) {
      lingering_ = true;
      return action::none;
    }
  }
  if (role_ == role::client && close_received_ && !failed_) {
    // RFC 6455 §7.1.1: the server closes the TCP connection first (so that it, not the
    // client, holds TIME_WAIT); the client waits for its FIN (the client's on_read_eof closes)
    // for close_timeout at most, reading and dropping anything else.
    if (!lingering_) {
      lingering_ = true;
      std::weak_ptr<evnet::conn> weak = c.shared_from_this();
      close_timer_ = c.owner().run_after(opts_.close_timeout, [weak] {
        if (auto sc = weak.lock()) {
          sc->close();
        }
      });
    }
    return action::none;
  }
  // After a close frame was received the server closes the TCP connection once the close
  // reply is flushed (RFC 6455 §7.1.1).
  return action::close;
}

void session::on_upgraded(evnet::conn&, std::string& out) {
  staging_ = staging::open;
  guarded([&] { handler_.on_open(conn_); });
  staging_ = staging::none;
  out.append(out_.view());
  out_.clear();
  out_.shrink(kKeepCapacity);
}

action session::on_stopping(evnet::conn&) {
  if (done_) {
    return action::close;
  }
  start_close(close_code::going_away, "going away");
  return action::none;
}

void session::on_close(evnet::conn& c, std::error_code) {
  if (close_timer_) {
    c.owner().cancel(close_timer_), close_timer_ = 0;
  }
  if (keepalive_timer_) {
    c.owner().cancel(keepalive_timer_), keepalive_timer_ = 0;
  }
  conn_->state_.store(connection::kClosed, std::memory_order_release);
  conn_->above_high_water_.store(false, std::memory_order_release);
  conn_->session_ = nullptr;
  // RFC 6455 §7.1.5: the code of the peer's close frame, 1006 if none arrived; when we failed
  // the connection ourselves, the code we sent (more useful to the application).
  std::uint16_t code = close_code_;
  try {
    handler_.on_close(conn_, code, close_reason_);
  } catch (...) {
  }
}

}  // namespace detail
}  // namespace evnet::ws
