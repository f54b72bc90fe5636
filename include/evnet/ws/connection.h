// evnet — a WebSocket connection handle and the callbacks of a WebSocket server or client
// (gev's WebSocket API idea: on_open, on_message that may reply, on_close).
//
// This is a public header.
//
// Threading: every callback of ws::handler runs on the loop thread that serves the connection,
// never concurrently for one connection (callbacks for connections on different loops may run
// concurrently). connection's send_text/send_binary/send/ping/close are safe from any thread:
// on the loop thread they write at once (inside a callback, replies are batched into one write at
// the end of the current input batch, or earlier once 64 KiB are waiting); from other threads they
// are posted to the loop, in order, and the returned code only says whether the call could be
// posted (errc::closed once the loop has stopped): a failure of the send itself on the loop thread
// is not reported back.
#pragma once

#include <any>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "evnet/ws/deflate.h"
#include "evnet/ws/frame.h"
#include "evnet/ws/handshake.h"

namespace evnet {
class conn;
}

namespace evnet::ws {

namespace detail {
class session;
}

/// One WebSocket connection. Owned through connection_ptr; stays a valid object after it
/// closes (sends then return errc::closed). Must not be used after the engine/server/client
/// that served it has finished running.
class connection : public std::enable_shared_from_this<connection> {
 public:
  /// Sends a text message (must be valid UTF-8; not checked). Any thread. errc::closed once a
  /// close was sent or the connection is gone.
  std::error_code send_text(std::string_view text) { return send(opcode::text, text); }
  /// Sends a binary message. Any thread.
  std::error_code send_binary(std::string_view data) { return send(opcode::binary, data); }
  /// Sends a message with opcode text or binary (others: errc::invalid_argument). Any thread.
  std::error_code send(opcode type, std::string_view data);
  /// Sends a ping (payload ≤ 125 bytes, else errc::invalid_argument). Any thread.
  std::error_code ping(std::string_view payload = {});
  /// Starts the close handshake: sends a close frame with `code` and `reason`, then waits for
  /// the peer's close frame (bounded by the close timeout) and closes the TCP connection.
  /// on_close follows. Any thread; a no-op if already closing.
  /// `code` must be one that may be sent (is_valid_close_code: 1000-1003, 1007-1014,
  /// 3000-4999), or 1005 (or 0) for a close frame without a code and reason; any other (1006,
  /// 1015, 999...) returns errc::invalid_argument and sends nothing, as a peer would fail the
  /// connection with 1002 on receiving it. A reason longer than 123 bytes (what the frame has
  /// room for) is cut to at most 123 bytes at a UTF-8 character boundary.
  std::error_code close(std::uint16_t code = close_code::normal, std::string_view reason = {});

  /// True until a close frame was sent or received or the TCP connection closed. Any thread.
  bool is_open() const noexcept { return state_.load(std::memory_order_acquire) == kOpen; }

  // ---- write backpressure ----

  /// Bytes sent on this connection (frames, headers included) that the kernel has not taken
  /// yet: buffered in the TCP connection because the peer reads slower than we send, plus
  /// replies staged during the current input batch. 0 once closed. Loop thread (sends from
  /// other threads are counted once their posted task has run).
  std::size_t buffered_amount() const noexcept;
  /// True between handler::on_high_water and handler::on_drain: the peer is not keeping up,
  /// so a producer should hold back. Any thread (a snapshot; on the loop thread it is exact).
  bool above_high_water() const noexcept {
    return above_high_water_.load(std::memory_order_acquire);
  }
  /// The negotiated subprotocol ("" if none). Any thread (set before on_open).
  const std::string& subprotocol() const noexcept { return subprotocol_; }
  /// The negotiated Sec-WebSocket-Extensions value ("" if none). Any thread.
  const std::string& extensions() const noexcept { return extensions_; }
  /// The request target of the opening handshake (e.g. "/chat?room=1"). Any thread.
  const std::string& target() const noexcept { return target_; }
  /// A slot for user data. Loop thread (or synchronise yourself).
  std::any& context() noexcept { return context_; }
  /// The underlying TCP connection. Loop thread for its loop-only methods.
  evnet::conn& raw() const noexcept { return *conn_; }

  /// Internal: created by the server/client on the loop thread.
  connection(std::shared_ptr<evnet::conn> c, std::string subprotocol, std::string extensions,
             std::string target);
  ~connection();

 private:
  friend class detail::session;
  static constexpr int kOpen = 0, kClosing = 1, kClosed = 2;
  std::error_code send_in_loop(opcode type, std::string_view data);
  std::error_code close_in_loop(std::uint16_t code, std::string_view reason);

  std::shared_ptr<evnet::conn> conn_;
  std::atomic<int> state_{kOpen};
  std::atomic<bool> above_high_water_{false};  // written on the loop thread only
  detail::session* session_ = nullptr;         // loop thread only; null once closed
  std::string subprotocol_;
  std::string extensions_;
  std::string target_;
  std::any context_;
};

/// Shared handle to a connection.
using connection_ptr = std::shared_ptr<connection>;

/// Callbacks of a WebSocket server or client. Override what you need. All run on the
/// connection's loop thread. None should throw: an exception escaping on_open, on_message,
/// on_ping, on_pong, on_high_water or on_drain is caught and the connection is failed with
/// 1011, one escaping on_close is caught and ignored, and on_connect_failed must not throw (it
/// would terminate the process).
class handler {
 public:
  virtual ~handler() = default;
  /// The handshake completed. May send.
  virtual void on_open(const connection_ptr& c) { (void)c; }
  /// A complete message (text is valid UTF-8). `data` is valid during the call only. May reply
  /// with c->send_*(): replies made here are written together after the input batch.
  virtual void on_message(const connection_ptr& c, opcode type, std::string_view data) {
    (void)c, (void)type, (void)data;
  }
  /// A ping arrived (the pong was already queued automatically).
  virtual void on_ping(const connection_ptr& c, std::string_view payload) {
    (void)c, (void)payload;
  }
  /// A pong arrived.
  virtual void on_pong(const connection_ptr& c, std::string_view payload) {
    (void)c, (void)payload;
  }
  /// The connection's buffered output (buffered_amount()) rose above the engine's high-water
  /// mark, engine_options::high_water_mark (4 MiB by default; pass the engine options to
  /// server::run or client_options::engine): the peer reads slower than we send. Stop
  /// producing, or pause reading with c->raw().pause_read() (an echo), until on_drain.
  /// Runs on the connection's loop thread, inside the write that crossed the mark (a send made
  /// on the loop thread, the task that performs a send posted from another thread, or the
  /// write of a callback batch), once per crossing; above_high_water() is already true. Sending
  /// from here is allowed: the bytes are buffered after those of the crossing write.
  virtual void on_high_water(const connection_ptr& c) { (void)c; }
  /// After on_high_water, all buffered output has been handed to the kernel (buffered_amount()
  /// is 0 and above_high_water() false again): resume producing. Runs on the connection's loop
  /// thread when the socket became writable. Not called when the connection closes while above
  /// the mark (on_close follows instead).
  virtual void on_drain(const connection_ptr& c) { (void)c; }
  /// The connection closed, exactly once per on_open: `code`/`reason` from the peer's close
  /// frame (1005 if it had no code), or the code we failed the connection with (1002, 1007,
  /// 1009...), or 1006 when the TCP connection ended without a close frame.
  virtual void on_close(const connection_ptr& c, std::uint16_t code, std::string_view reason) {
    (void)c, (void)code, (void)reason;
  }
  /// Client only: a connect() failed before on_open (refused, handshake rejected...). `url` is
  /// the URL given to connect(). Runs on a loop thread of the client.
  virtual void on_connect_failed(std::string_view url, std::string_view what) {
    (void)url, (void)what;
  }
};

/// Settings shared by servers and clients.
struct options {
  /// Largest frame and message accepted (after inflate); larger → close 1009.
  std::uint64_t max_frame_bytes = 16u << 20;
  std::uint64_t max_message_bytes = 16u << 20;
  /// Offer (client) / accept (server) permessage-deflate.
  bool permessage_deflate = true;
  /// Our permessage-deflate preferences (see negotiate_deflate).
  deflate_params deflate;
  /// Messages shorter than this are sent uncompressed even when deflate is on (RSV1 is per
  /// message), because compressing tiny payloads costs more than it saves. A message that
  /// deflate does not make smaller (random or already compressed data) is sent uncompressed
  /// too, and the compressor's history is then reset.
  std::size_t deflate_min_bytes = 64;
  /// Server: picks the subprotocol (see subprotocol_selector); empty = none. A value that is
  /// not one of those the client offered is not sent: the handshake is answered 500.
  subprotocol_selector select_protocol;
  /// After we send a close frame, how long to wait for the peer's before closing TCP. Once the
  /// close handshake is done a client also waits this long at most for the server to close the
  /// TCP connection first (RFC 6455 §7.1.1: the server, not the client, holds TIME_WAIT). When we
  /// fail the connection (1002, 1007, 1009...) the close frame is followed by a FIN and the
  /// peer's bytes are read and dropped until its EOF or this timeout, so a peer still sending
  /// reads our close code instead of a reset.
  std::chrono::milliseconds close_timeout{5000};
  /// Keepalive (0 = off, the default): a connection from which nothing has been received for
  /// ping_interval is sent a ping, checked every ping_interval (so the ping goes out between
  /// one and two intervals of silence). If nothing at all arrives within ping_timeout after
  /// that ping (a pong, or any other frame), the peer is taken for gone: the connection is
  /// failed with 1011 "keepalive ping timeout" and its TCP connection closed without waiting
  /// for a reply (on_close with 1011). While the application has paused reading
  /// (raw().pause_read()) silence is not held against the peer. Pings from the peer are
  /// answered whether or not this is on.
  std::chrono::milliseconds ping_interval{0};
  std::chrono::milliseconds ping_timeout{20000};
};

}  // namespace evnet::ws
