// evnet — conn: one connection (TCP, Unix stream, or a UDP datagram's sender) served by a loop.
//
// This is a public header.
//
// State machine (state() may be read from any thread):
//
//   connecting ──(connect done)──► open ──(close(), action::close, EOF, error, limit)──► closing
//        │                          │                                                     │
//        └──(refused / timeout)─────┴──(immediate close when no output is pending)──► closed ◄┘
//
//   connecting  an outbound dial in progress (engine::dial); no callback has run yet. A dial that
//               fails goes straight to closed and only its dial callback is told.
//   open        on_open has run (or is running); input is read and on_traffic called.
//   closing     a close was requested: reading stopped; pending output is being flushed
//               (bounded by engine_options::close_linger), then, if the peer is still sending,
//               its input read away until its EOF (engine_options::lingering_close). No more
//               on_traffic.
//   closed      the fd is closed, on_close has run (exactly once), queued cross-thread sends and
//               unfinished send_async() completions were completed with errc::aborted.
//
// Lifetime: the loop owns every conn through a shared_ptr; a conn is never freed while one of
// its callbacks runs (a closed conn is kept until the end of the loop round). Hold a
// std::shared_ptr<conn> (shared_from_this()) to keep one across threads or rounds; a closed
// conn stays a valid object whose send() returns errc::closed.
//
// Threading: methods marked "loop thread" must be called on the conn's loop thread (inside its
// callbacks, or in a task posted to its loop); this is asserted in debug builds. Methods marked
// "any thread" are safe from any thread at any time, even racing the close.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <any>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "evnet/address.h"
#include "evnet/handler.h"
#include "evnet/poller.h"
#include "evnet/ring_buffer.h"

namespace evnet {

class loop;
class engine;
class timer;

namespace detail {
struct loop_internals;
struct send_completion_list;
class udp_batch;
/// std::system_category(), fetched once (`std::error_code{}` calls it out of line each time).
extern const std::error_category& g_system_category;
}  // namespace detail

/// A connection's lifecycle stage (see the file comment).
enum class conn_state : std::uint8_t { connecting, open, closing, closed };

/// Completion of send_async(): runs on the conn's loop thread once with {} when every byte of the
/// send has been handed to the kernel, or errc::aborted / errc::closed / errc::queue_full if it
/// never will be.
using send_callback = std::function<void(std::error_code)>;

/// One connection. Created by the engine; users get references in handler callbacks.
class conn : public std::enable_shared_from_this<conn> {
 public:
  /// Internal: made by the engine's loops. Not for users (the loop pointer must be valid).
  conn(loop& owner, int fd, transport kind, bool client) noexcept;
  /// Runs wherever the last shared_ptr is released (any thread); by then the loop has closed
  /// the fd and completed every pending send callback (the close answers sends still queued
  /// from other threads with errc::aborted, and refuses later ones with errc::closed).
  ~conn();
  conn(const conn&) = delete;
  conn& operator=(const conn&) = delete;

  // ---- identity (see each for the thread) ----

  /// The socket descriptor, for advanced use (setsockopt...); -1 once closed. Loop thread.
  /// Do not close it or read/write it behind the conn's back.
  int fd() const noexcept { return fd_; }
  /// A number unique among the connections of one engine. Any thread.
  std::uint64_t id() const noexcept { return id_; }
  /// The current state (a snapshot). Any thread.
  conn_state state() const noexcept { return state_.load(std::memory_order_acquire); }
  /// True while state() is open. Any thread.
  bool is_open() const noexcept { return state() == conn_state::open; }
  /// tcp, unix_stream or udp. Any thread.
  transport kind() const noexcept { return kind_; }
  /// True for a connection made by engine::dial (false when accepted or adopted). Any thread.
  bool is_client() const noexcept { return client_; }
  /// The loop that serves this connection. Any thread.
  evnet::loop& owner() const noexcept { return *loop_; }
  /// Our address (getsockname on first use, then cached; an empty address if the socket has
  /// none or the query fails). Loop thread.
  const socket_address& local_address() const noexcept;
  /// The peer's address (from accept/connect; for UDP, the sender of the current datagram), by
  /// value: the conn keeps an IP address in 28 bytes, not a 136-byte socket_address. Still
  /// valid in on_close. Loop thread.
  socket_address peer_address() const noexcept;
  /// Bytes of memory the input and output ring buffers hold now (their capacity, not their
  /// content): 0 for an idle connection once the buffer sweep has run. Loop thread.
  std::size_t buffer_capacity() const noexcept { return in_.capacity() + out_.capacity(); }

  // ---- input (loop thread) ----

  /// Bytes received and not yet consumed. Loop thread.
  std::size_t inbound_size() const noexcept { return in_.size() + scratch_.size(); }
  /// The first min(n, inbound_size()) unconsumed bytes, without consuming them. The views are
  /// valid until the input is next consumed or the current callback returns. Loop thread.
  input_view peek(std::size_t n = static_cast<std::size_t>(-1)) const noexcept {
    if (in_.empty()) {  // the common case: this round's bytes, still in the read buffer
      input_view v;
      v.first = {reinterpret_cast<const std::byte*>(scratch_.data()),
                 n < scratch_.size() ? n : scratch_.size()};
      return v;
    }
    return in_.peek(n);
  }
  /// Writable views of the same bytes as peek(n), for protocols that transform their input in
  /// place before consuming it (WebSocket unmasking). The memory belongs to this connection
  /// until it is consumed (the loop's read buffer for this round's bytes, or the connection's
  /// own ring), so writing it changes only what this connection's later peek()/next() return;
  /// peek() hands out const views so that ordinary readers cannot edit input by accident.
  /// Same validity as peek(). Loop thread.
  struct writable_view {
    std::span<std::byte> first;
    std::span<std::byte> second;
  };
  writable_view peek_writable(std::size_t n = static_cast<std::size_t>(-1)) noexcept {
    const input_view v = peek(n);
    return {{const_cast<std::byte*>(v.first.data()), v.first.size()},     // NOLINT: see above
            {const_cast<std::byte*>(v.second.data()), v.second.size()}};  // NOLINT
  }
  /// Like peek(n), then consumes those bytes. The views stay valid until the current callback
  /// returns (consumed bytes are not overwritten before then). Loop thread.
  input_view next(std::size_t n = static_cast<std::size_t>(-1)) noexcept {
    input_view v;
    if (in_.empty()) {
      const std::size_t len = n < scratch_.size() ? n : scratch_.size();
      v.first = {reinterpret_cast<const std::byte*>(scratch_.data()), len};
      if (len == scratch_.size()) {
        scratch_.remove_suffix(len);  // all of it (next() with no argument): only the size moves
      } else {
        scratch_.remove_prefix(len);
      }
      return v;
    }
    return next_buffered(n);
  }
  /// Consumes min(n, inbound_size()) bytes; returns how many. Loop thread.
  std::size_t discard(std::size_t n = static_cast<std::size_t>(-1)) noexcept {
    if (in_.empty()) {
      const std::size_t len = n < scratch_.size() ? n : scratch_.size();
      scratch_.remove_prefix(len);
      return len;
    }
    return in_.discard(n);
  }
  /// Copies up to n bytes into dst and consumes them; returns the count. Loop thread.
  std::size_t read(void* dst, std::size_t n) noexcept;
  /// Consumes and returns every unconsumed byte as a string (allocates). Loop thread.
  std::string read_all();

  // ---- output (loop thread) ----

  /// Writes n bytes: sends at once when nothing is buffered, buffers only what the kernel did
  /// not take, flushes the rest when the socket becomes writable (writev). Returns {} when the
  /// bytes were sent or buffered; errc::closed if the conn is closing/closed (nothing sent);
  /// a system error (EPIPE, ECONNRESET) if the socket failed — the conn then closes with that
  /// reason after the current callback. May call handler::on_high_water. Loop thread.
  /// For UDP, sends one datagram to peer_address(); errc::queue_full when 4 MiB of datagrams
  /// are already waiting for the socket to take them (the datagram is dropped).
  std::error_code write(const void* data, std::size_t n) {
    // Inline fast path (the common case of a request/response server): open, nothing buffered,
    // no deadline bookkeeping, and the kernel takes every byte. slow_ covers the first three.
    if (!slow_) [[likely]] {
      const ssize_t w = ::send(fd_, data, n, MSG_NOSIGNAL);
      if (w == static_cast<ssize_t>(n)) [[likely]] {
        out_accepted_ += n;
        return std::error_code(0, detail::g_system_category);
      }
      return write_rest(static_cast<const char*>(data), n, w);
    }
    return write_slow(data, n);
  }
  /// write(data.data(), data.size()). Loop thread.
  std::error_code write(std::string_view data) { return write(data.data(), data.size()); }
  /// write(data.data(), data.size()). Loop thread.
  std::error_code write(std::span<const std::byte> data) { return write(data.data(), data.size()); }
  /// Writes both pieces of a view (for example, input just taken with next()) as one stream:
  /// one system call even when the view wraps. Loop thread.
  std::error_code write(const input_view& data) {
    if (data.second.empty()) {
      return write(data.first.data(), data.first.size());
    }
    // The pieces by value: a reference passed out of line would make the caller build the
    // view in memory on every call, the common one-piece case included.
    return write_two(data.first, data.second);
  }
  /// Writes several pieces as one stream (one writev when nothing is buffered). Same results as
  /// write(). For UDP, the pieces form one datagram. Loop thread.
  std::error_code writev(std::span<const std::string_view> parts);
  /// Bytes buffered and not yet handed to the kernel. Loop thread.
  std::size_t outbound_size() const noexcept { return out_.size(); }

  // ---- cross-thread output (any thread) ----

  /// Queues `data` to be written on the loop thread (immediately, in order, when called on the
  /// loop thread). Any thread. Errors, with nothing queued: errc::closed (closing/closed),
  /// errc::queue_full (queued cross-thread bytes plus buffered output would exceed
  /// engine_options::send_queue_limit; with send_queue_policy::close the conn is also closed
  /// with that reason). Bytes queued when the conn closes are dropped.
  std::error_code send(std::string data);
  /// Like send(), and `done` runs on the loop thread once the bytes have all been handed to the
  /// kernel ({}), or with errc::aborted if the conn closed first. If send_async returns an
  /// error, `done` is never called. Any thread. On the loop thread the bytes are written at
  /// once, in order with write() and send(); `done` still runs later, never inside this call.
  std::error_code send_async(std::string data, send_callback done);
  /// UDP only: sends `data` as one datagram to `to` — typically a peer_address() copied in
  /// on_traffic, to answer later or from another thread. Any thread; on the loop thread the
  /// datagram is queued (sent with the batch inside on_traffic, at once otherwise), from other
  /// threads it is handed to the loop (counted against engine_options::send_queue_limit).
  /// `done`, if given, runs on the loop thread once with {} when the kernel took the datagram
  /// or queued it for the next writability, or with an error. Errors returned (then `done`
  /// never runs): errc::unsupported (not a UDP conn), errc::closed, errc::queue_full (the
  /// cross-thread queue is full, or 4 MiB of datagrams already wait for the socket).
  /// (send()/send_async() on a UDP conn from another thread return errc::unsupported: its
  /// peer changes with every datagram, so they would not know where to send.)
  std::error_code send_to(const socket_address& to, std::string data, send_callback done = {});

  // ---- control ----

  /// Requests a graceful close: stop reading (no on_traffic after this call, even inside a
  /// callback), flush pending output (bounded by engine_options::close_linger), read away what
  /// the peer sent meanwhile (a socket closed with unread input is reset, and the reset drops
  /// the output still queued for the peer), close the fd, call on_close with an empty reason.
  /// If the peer may still be sending (input was left unconsumed, or there was input to read
  /// away), the close lingers first: our FIN is sent and what arrives is read away until the
  /// peer's EOF, for at most engine_options::lingering_close and 16 MiB; the conn stays closing
  /// meanwhile.
  /// Inside a callback of this conn the close happens when the callback returns; from another
  /// thread it
  /// is posted to the loop. Idempotent; a no-op once closing. Any thread. A UDP listener's
  /// conn is not closed (its socket is the listener's; stopping the engine closes it), and the
  /// same holds for abort() and action::close.
  void close() noexcept;
  /// Like close() but discards pending output and reports `reason` to on_close (unless an
  /// earlier abort gave one). On a conn already closing (flushing after close()) it ends the
  /// flush: at once, or inside a callback when the outermost callback returns (writes after
  /// it in that callback return errc::closed). Any thread.
  void abort(std::error_code reason) noexcept;
  /// Shuts down our sending side (FIN) once pending output is flushed; reading continues.
  /// Returns errc::closed when not open (or aborting), errc::unsupported for UDP. If the kernel
  /// refuses the shutdown (the peer has reset the connection), nothing is half-closed: the error
  /// is returned (ECONNRESET, or ENOTCONN) and the conn closes with it after the current
  /// callback, as after a failed write(). With output still pending the shutdown happens after
  /// the flush, and such a failure then closes the conn with its error (on_close reports it).
  /// Loop thread.
  std::error_code shutdown_write() noexcept;
  /// Stops reading from the socket (backpressure); the kernel buffers, then the peer stalls.
  /// Loop thread.
  void pause_read() noexcept;
  /// Resumes reading; bytes that arrived meanwhile are read and delivered at once (in a task
  /// on this loop, not inside this call), after input the handler left unconsumed is offered
  /// again (once, however often reading was paused and resumed before that task). Loop thread.
  // NOLINTNEXTLINE(bugprone-exception-escape): only std::bad_alloc (the task), which terminates
  void resume_read() noexcept;
  /// True between pause_read() and resume_read(). Loop thread.
  bool read_paused() const noexcept { return read_paused_; }

  /// Overrides engine_options::idle_timeout / read_timeout / write_timeout for this connection
  /// (zero disables one); they count from the last activity, and closing with errc::idle_timeout
  /// / read_timeout / write_timeout works as for the engine-wide settings. Pushing a deadline
  /// back costs nothing per message (the timer is re-armed lazily when it fires). Useful for
  /// protocol phases (a short header timeout, then a long keep-alive). Loop thread.
  void set_timeouts(std::chrono::milliseconds idle, std::chrono::milliseconds read,
                    std::chrono::milliseconds write) noexcept;

  /// A slot for user data (a session object...). Loop thread (or synchronise yourself).
  std::any& context() noexcept { return context_; }

 private:
  friend struct detail::loop_internals;
  friend class loop;
  friend class engine;

  void handle_io(std::uint32_t events) noexcept;
  void handle_io_slow(std::uint32_t events) noexcept;
  ssize_t read_into_ring(std::size_t* asked) noexcept;
  bool read_failed(ssize_t n) noexcept;
  bool after_read_rare(bool over) noexcept;
  static poll_action on_poll_event(poll_attachment& a, std::uint32_t events) noexcept;
  void set_state(conn_state s) noexcept;
  void refresh_gates() noexcept;
  void refresh_slow() noexcept;
  std::error_code write_two(std::span<const std::byte> first, std::span<const std::byte> second);
  // next() from the input ring: out of line, so a handler's inlined next() keeps no value of
  // the ring's in registers (each one a save and a restore on every call of the handler).
  input_view next_buffered(std::size_t n) noexcept;
  std::error_code write_gated(const void* data, std::size_t n);
  std::error_code write_slow(const void* data, std::size_t n);
  std::error_code write_rest(const char* p, std::size_t n, ssize_t sent);
  void after_traffic_slow() noexcept;
  void handle_read(bool until_eof) noexcept;
  bool read_in_place(bool until_eof) noexcept;
  void read_fast() noexcept;
  void read_fast_rare(ssize_t n) noexcept;
  void read_loop(bool until_eof) noexcept;
  bool offer_kept_input() noexcept;
  template <bool Fast>
  void deliver() noexcept;
  void handle_udp_read(int listen_fd, std::uint32_t events) noexcept;
  void handle_connect(std::uint32_t events) noexcept;
  bool flush() noexcept;
  void open_in_loop() noexcept;
  void fail_connect(std::error_code ec) noexcept;
  void apply(action a) noexcept;
  void request_close(std::error_code reason, bool discard_output) noexcept;
  void begin_close() noexcept;
  void do_close() noexcept;
  std::error_code shutdown_now() noexcept;
  enum class drain_result : std::uint8_t { drained, finished, over_budget };
  drain_result discard_input(std::uint64_t* budget) noexcept;
  bool start_lingering(std::uint64_t budget) noexcept;
  void linger_read() noexcept;
  void output_failed(int err) noexcept;
  void buffered_output() noexcept;
  void output_drained() noexcept;
  void complete_sends(std::error_code ec) noexcept;
  void complete_when_flushed(send_callback cb);
  void arm_deadline() noexcept;
  void on_deadline() noexcept;
  std::int64_t next_deadline() const noexcept;
  std::error_code write_udp(const iovec* iov, int iovcnt) noexcept;
  std::error_code queue_send(std::string data, send_callback done);
  void drain_sends() noexcept;

  // Layout: what every message touches (the loop, the fd, the flags, the buffers, the output
  // count, the context and the poller's attachment) comes first, in the object's first three
  // or four cache lines; over 1,000 connections an echo touched six before.
  loop* loop_;
  detail::loop_internals* li_;  // loop_->internals(), one load less on the hot path
  int fd_;
  transport kind_;
  bool client_;
  std::atomic<conn_state> state_{conn_state::open};

  // Loop-thread flags. read_gate_/write_gate_ summarise "must not read/write now" (state not
  // open, EOF, paused, shut down, UDP) so the hot paths test one byte.
  bool read_gate_ = false;
  bool write_gate_ = false;
  // Anything off the common path: read_gate_ || write_gate_ || stamp_ || output buffered ||
  // a max_input smaller than one read. The event path and the inline write() test this one
  // byte; refresh_slow() recomputes it wherever one of those changes.
  bool slow_ = false;
  bool close_pending_ = false;   // a close was requested inside a callback
  bool discard_output_ = false;  // abort(): drop output on close
  bool opened_ = false;          // on_open was called (so on_close is owed)
  bool read_paused_ = false;
  bool resume_posted_ = false;  // a resume_read() task is queued: one re-offers the input
  bool offer_kept_ = false;     // input kept from before a pause is yet to be offered again
  bool read_eof_ = false;
  bool shutdown_pending_ = false;  // shutdown_write() waiting for the flush
  bool write_shutdown_ = false;
  bool above_high_water_ = false;
  bool want_drain_ = false;
  bool in_idle_ = false;          // in_ was empty (holding memory) at the last buffer sweep
  bool stamp_ = false;            // record activity times: some deadline applies to this conn
  bool unread_at_close_ = false;  // the close left input unconsumed: the peer may still send
  bool lingering_ = false;  // closing: output flushed, FIN sent, reading away until the peer's EOF

  // Input: bytes read this round that still sit in the loop's scratch buffer (never copied if
  // the callback consumes them), after the bytes kept from earlier rounds in in_.
  ring_buffer in_;
  std::string_view scratch_;
  ring_buffer out_;
  std::uint64_t out_accepted_ = 0;  // bytes ever accepted by write()/send()
  std::any context_;  // protocol layers (http, ws) find their session here on every message

  poll_attachment attachment_;
  std::uint64_t id_ = 0;
  mutable std::unique_ptr<socket_address> local_;  // see local_address()
  // The peer's address. What accept() or connect() gives for TCP (an IPv4 or IPv6 address, at
  // most 28 bytes) is kept inline; anything longer (a named Unix peer) and a UDP conn's peer
  // (replaced by every datagram, and read by every reply) live in peer_long_. A full
  // socket_address inline would add 108 bytes to every connection.
  void set_peer(const socket_address& a);
  alignas(8) unsigned char peer_short_[28] = {};
  std::uint8_t peer_short_len_ = 0;
  std::unique_ptr<socket_address> peer_long_;

  std::error_code close_reason_;

  // Deadlines, in the loop clock's nanoseconds. One timer per conn serves every deadline
  // (idle, read, write, close linger, connect): it is armed for the earliest one and, when it
  // fires, re-armed lazily for what remains, so recording activity costs one store. Only a
  // conn that has a deadline (a timeout set, a connect timeout, a close linger) carries the
  // block: the others pay 8 bytes, not 72. stamp_ implies dl_.
  struct deadline_state {
    std::int64_t idle_ns = 0;  // per-conn timeouts (engine_options' by default)
    std::int64_t read_ns = 0;
    std::int64_t write_ns = 0;
    std::int64_t last_read_ns = 0;
    std::int64_t last_write_ns = 0;
    std::int64_t closing_ns = 0;    // close linger ends (or the lingering close's read phase)
    std::uint64_t linger_left = 0;  // bytes a lingering close may still read away
    std::int64_t connect_ns = 0;    // connect timeout
    std::int64_t armed_ns = 0;      // when `timer` fires; 0 = not armed
    std::unique_ptr<evnet::timer> timer;
  };
  std::unique_ptr<deadline_state> dl_;
  deadline_state& deadlines();  // allocated on first use
  void retire_deadline_timer() noexcept;
  // Dialed conns only, until the dial's outcome is known (a pointer: 8 bytes on every
  // accepted conn instead of 32).
  std::unique_ptr<std::function<void(conn*, std::error_code)>> dial_result_;

  // Intrusive list of the loop's live connections.
  conn* live_prev_ = nullptr;
  conn* live_next_ = nullptr;

  // Output stream accounting for send_async completions (with out_accepted_ above).
  std::unique_ptr<detail::send_completion_list> completions_;

  // Cross-thread accounting (any thread).
  std::atomic<std::size_t> queued_bytes_{0};
  struct queued_send {
    std::string data;
    send_callback done;
  };
  // xq_, xq_scheduled_ and xq_closed_ are guarded by one of the loop's striped locks
  // (xq_mu()): a mutex of its own would add 40 bytes to every connection for a queue most never
  // use.
  std::mutex& xq_mu() const noexcept;
  std::vector<queued_send> xq_;
  bool xq_scheduled_ = false;  // a drain task is queued
  bool xq_closed_ = false;     // do_close() answered the queue: no more sends are queued
  void abort_queued_sends() noexcept;
  std::atomic<std::size_t> out_bytes_{0};

  std::shared_ptr<conn> self_;              // the loop's reference while not closed
  detail::udp_batch* udp_batch_ = nullptr;  // UDP: the listener's batch (replies queue there)
  bool in_udp_batch_ = false;               // UDP: inside handle_udp_read (it flushes after)
  std::error_code send_to_in_loop(const socket_address& to, std::string_view data) noexcept;
};

}  // namespace evnet
