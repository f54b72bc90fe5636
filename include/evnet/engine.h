// evnet — engine: listeners plus N reactor loops serving connections through a handler.
//
// This is a public header. Typical use:
//
//   struct echo : evnet::handler {
//     evnet::action on_traffic(evnet::conn& c) override {
//       c.write(c.next());   // zero-copy view of the input, sent straight back
//       return evnet::action::none;
//     }
//   };
//   evnet::engine e;
//   echo h;
//   std::error_code ec = e.run(h, {"tcp://127.0.0.1:9000"});   // blocks until e.stop()
//
// Threading: run() blocks its calling thread, which becomes loop 0 (and the acceptor in
// accept_model::acceptor). Loops 1..N-1 run on threads the engine starts and joins. stop() is
// safe from any thread and from a signal handler. Other methods say where they may be called.
#pragma once

#include <any>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "evnet/address.h"
#include "evnet/handler.h"
#include "evnet/loop.h"

namespace evnet {

class conn;

namespace detail {
struct engine_internals;
}

/// How incoming connections reach the loops.
enum class accept_model : std::uint8_t {
  /// One listener per address, accepted by loop 0, which hands each new fd to a loop chosen by
  /// engine_options::balance.
  acceptor,
  /// SO_REUSEPORT: every loop has its own listener per address and accepts for itself; the
  /// kernel spreads connections (balance is ignored). UDP listeners are per loop in this mode.
  /// A Unix socket path can be bound only once: loop 0 accepts on it and hands connections
  /// out by engine_options::balance, as in acceptor mode.
  reuse_port,
};

/// How the acceptor picks a loop for a new connection (accept_model::acceptor).
enum class balance_policy : std::uint8_t {
  /// Loops in turn.
  round_robin,
  /// The loop serving the fewest connections (ties → lowest index).
  least_connections,
  /// A hash of the peer's IP address (same client → same loop).
  source_hash,
};

/// What conn::send()/send_async() do when the cross-thread send limit would be exceeded.
enum class send_queue_policy : std::uint8_t {
  /// Fail that send with errc::queue_full; the connection stays open.
  fail,
  /// Fail that send with errc::queue_full and close the connection with that reason.
  close,
};

/// Settings of an engine run. Zero durations and sizes mean "off" unless said otherwise.
struct engine_options {
  /// Number of loops (threads); 0, the default, = one per core
  /// (std::thread::hardware_concurrency()).
  std::size_t loops = 0;
  /// Accept model (see accept_model).
  accept_model accept = accept_model::acceptor;
  /// Loop choice for accept_model::acceptor.
  balance_policy balance = balance_policy::round_robin;

  /// TCP_NODELAY on accepted and dialled TCP sockets.
  bool no_delay = true;
  /// SO_KEEPALIVE on TCP sockets, with keep_alive_interval (0 = kernel defaults) as
  /// TCP_KEEPIDLE and TCP_KEEPINTVL.
  bool keep_alive = false;
  std::chrono::seconds keep_alive_interval{0};
  /// SO_SNDBUF / SO_RCVBUF in bytes for listeners and connections; 0 = kernel default.
  int send_buffer = 0;
  int recv_buffer = 0;
  /// listen() backlog.
  int backlog = 1024;

  /// Maximum connections open at once across the engine (accepted ones; dialled and adopted
  /// ones count too, but are never refused by it); 0 = unlimited. Beyond it a new client is
  /// accepted and closed at once and handler::on_accept_error gets errc::connection_limit.
  std::size_t max_connections = 0;
  /// Close a connection with errc::idle_timeout when nothing was read or written for this long.
  std::chrono::milliseconds idle_timeout{0};
  /// Close with errc::read_timeout when nothing was read for this long.
  std::chrono::milliseconds read_timeout{0};
  /// Close with errc::write_timeout when buffered output made no progress for this long.
  std::chrono::milliseconds write_timeout{0};
  /// How long a closing connection may take to flush its output before it is closed anyway
  /// (its on_close then reports no error: the close was asked for). 0 closes at once, dropping
  /// whatever output the kernel has not taken yet.
  std::chrono::milliseconds close_linger{5000};
  /// A graceful close whose peer may still be sending (the close left input unconsumed, or
  /// input waited in the socket when the output had been flushed) lingers: our FIN is sent and
  /// what the peer sends is read away until its EOF, for at most this long and 16 MiB, then the
  /// fd is closed and on_close follows, with the close's reason (nginx's and Apache's "lingering
  /// close"). A socket closed while input arrives is reset, and the reset drops the part of the
  /// answer the kernel still holds for the peer. No linger for a peer that sent nothing more,
  /// nor at all when close_linger is 0 (close at once); during stop() a linger ends with
  /// stop_grace at the latest. A lingering connection still counts toward max_connections.
  /// 0 = never linger.
  std::chrono::milliseconds lingering_close{3000};

  /// Close with errc::input_too_large when unconsumed input would exceed this; 0 = unlimited.
  std::size_t max_input = 64u << 20;
  /// handler::on_high_water fires when buffered output rises above this (0 disables it).
  std::size_t high_water_mark = 4u << 20;
  /// How often each loop frees connection buffers that stayed empty: an output buffer empty at
  /// a sweep, an input buffer empty at two sweeps in a row (buffers above 4 KiB are freed as
  /// soon as they empty). The sweep runs only while some connection of the loop holds buffer
  /// memory, so a loop whose connections buffer nothing never wakes up for it. 0 = never sweep
  /// (small buffers are then kept until the conn closes).
  std::chrono::milliseconds buffer_sweep_interval{5000};
  /// Bound on bytes queued by send()/send_async() from other threads plus buffered output;
  /// 0 = unlimited (not recommended).
  std::size_t send_queue_limit = 64u << 20;
  /// What happens when send_queue_limit would be exceeded.
  send_queue_policy queue_policy = send_queue_policy::fail;

  /// How long stop() lets connections flush pending output (and handlers finish a farewell
  /// begun in handler::on_stopping) before closing them anyway.
  std::chrono::milliseconds stop_grace{1000};
  /// Call handler::on_tick (on loop 0) from the start of the run.
  bool ticker = false;
};

/// Options for engine::dial().
struct dial_options {
  /// Fail with errc::connect_timeout if not connected within this; 0 = no limit (the kernel's).
  std::chrono::milliseconds timeout{0};
  /// Stored in the conn's context() before on_open runs.
  std::any context;
  /// Loop to serve the connection; -1 = chosen by engine_options::balance.
  int loop = -1;
  /// Called once on the serving loop's thread: with the conn and {} just before on_open, or
  /// with nullptr and the error (ECONNREFUSED, errc::connect_timeout, errc::engine_stopping...)
  /// when the connection never opened. May be empty. Closing the conn here means on_open is
  /// not called, nor on_close.
  std::function<void(conn*, std::error_code)> on_result;
};

/// Options for engine::adopt().
struct adopt_options {
  /// Stored in the conn's context() before on_open runs.
  std::any context;
  /// Loop to serve the connection; -1 = chosen by engine_options::balance.
  int loop = -1;
  /// Called once on the serving loop's thread: with the conn and {} just before on_open, or
  /// with nullptr and errc::engine_stopping when the engine stopped before the loop took the
  /// socket (the engine has then closed it). May be empty.
  std::function<void(conn*, std::error_code)> on_result;
};

/// The reactor engine. Construct, then run(); stop() from anywhere.
class engine {
 public:
  /// An idle engine. Any thread.
  engine();
  /// Must not be destroyed while run() is executing.
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Binds every address ("tcp://", "tcp4://", "tcp6://", "udp://", "unix://" URLs; may be
  /// empty for a client-only engine), starts the loops, calls handler.on_boot, serves until
  /// stop() (or a callback returns action::shutdown), then offers every open connection to
  /// handler.on_stopping and closes it (on_close with errc::engine_stopping after a flush
  /// bounded by stop_grace; or by the handler itself, within stop_grace), joins the loop
  /// threads, calls handler.on_shutdown and returns {}. If setup fails (bad address, bind
  /// error) nothing is called on the handler and the error is returned. One run at a time: a
  /// run() while another is executing returns errc::invalid_argument at once; the engine may be
  /// run again after run() returns. Blocks the calling thread.
  std::error_code run(handler& h, const std::vector<std::string>& addresses,
                      const engine_options& options = {});

  /// Asks run() to finish (see run()). Any thread, and async-signal-safe (atomic stores and an
  /// eventfd write). Before run() starts it makes the next run() return at once after boot.
  void stop() noexcept;

  /// True from the start of run() until it returns. Any thread.
  bool running() const noexcept { return running_.load(std::memory_order_acquire); }

  /// Number of loops of the current run. Valid from on_boot until on_shutdown; any thread.
  std::size_t loop_count() const noexcept;
  /// Loop i of the current run (i < loop_count()). Valid from on_boot until on_shutdown; any
  /// thread (the reference; the loop's own methods say where they may be called).
  loop& get_loop(std::size_t i) noexcept;

  /// The bound addresses, one per listen address in run()'s order (the kernel's port for
  /// port 0). Valid from on_boot until run() returns; any thread.
  std::vector<socket_address> listen_addresses() const;

  /// Open connections across all loops (a snapshot). Any thread.
  std::size_t connection_count() const noexcept;
  /// Clients refused because of max_connections or shed on EMFILE (a snapshot). Any thread.
  std::uint64_t refused_count() const noexcept;

  /// run_after on loop 0 (see loop::run_after). Any thread while running; 0 otherwise.
  timer_id run_after(std::chrono::nanoseconds delay, std::function<void()> fn);
  /// run_every on loop 0 (see loop::run_every). Any thread while running; 0 otherwise.
  timer_id run_every(std::chrono::nanoseconds period, std::function<void()> fn);
  /// Cancels a timer made by this engine's run_after/run_every or any of its loops'. Any
  /// thread.
  void cancel(timer_id id) noexcept;

  /// Starts an outbound connection to `url` ("tcp://host:port", "tcp4://", "tcp6://",
  /// "unix:///path") served by one of the loops with the run's handler. The result is reported
  /// through options.on_result and, once open, the handler (on_open ... on_close). Any thread
  /// while running (from on_boot on). Returns an error, and then never calls on_result, when the
  /// dial cannot start: errc::bad_address (unparsable/unresolvable URL, udp), errc::stopped
  /// (not running / stopping). Host names other than numeric literals and "localhost" are
  /// resolved in the calling thread (may block).
  std::error_code dial(std::string_view url, dial_options options = {});

  /// Hands an already connected stream socket (TCP over IPv4/IPv6, or a Unix stream socket:
  /// one end of a socketpair(), a connection accepted or made by other code, an inherited fd) to
  /// one of the loops, which then serves it like an accepted connection with the run's handler:
  /// on_open ... on_close, the engine's socket options (TCP_NODELAY, keep-alive, buffer sizes),
  /// deadlines and limits; is_client() is false. Like a dialed connection it counts toward
  /// max_connections (it holds an fd and buffers as any other) but is never refused by it: the
  /// limit refuses accepted clients only. The fd is made non-blocking and close-on-exec.
  /// Any thread while running (from on_boot on). On success the engine owns the fd and closes
  /// it; on an error return the caller still owns it, untouched apart from the checks:
  /// errc::bad_descriptor (not an open socket), errc::unsupported (not SOCK_STREAM, or not
  /// AF_INET/AF_INET6/AF_UNIX), errc::invalid_argument (a listening socket),
  /// std::errc::not_connected (not connected, or a connect still in progress),
  /// errc::stopped (not running / stopping).
  std::error_code adopt(int fd, adopt_options options = {});

  /// Internal state, for the net layer's own files.
  detail::engine_internals& internals() noexcept { return *in_; }

 private:
  std::atomic<bool> running_{false};
  std::unique_ptr<detail::engine_internals> in_;
};

}  // namespace evnet
