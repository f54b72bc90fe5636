// evnet — handler: the callbacks an engine calls for its connections (gnet's EventHandler
// idea, as a C++ class with no-op defaults: override only what you need).
//
// This is a public header.
//
// Threading: every connection lives on one loop thread. Callbacks about a connection
// (on_open, on_traffic, on_read_eof, on_high_water, on_drain, on_stopping, on_close) run on that
// connection's loop thread, never concurrently for the same connection; callbacks for
// connections on different loops may run concurrently, so a handler shared by several loops
// must synchronise its own shared state. on_boot, on_shutdown and on_tick are documented
// below. No callback may throw: an exception escaping a callback terminates the process
// (callbacks are invoked from noexcept contexts so no exception ever crosses a loop).
#pragma once

#include <chrono>
#include <system_error>

namespace evnet {

class conn;
class engine;

/// What a callback asks the engine to do next.
enum class action : unsigned char {
  /// Carry on.
  none,
  /// Close this connection gracefully: stop reading, flush pending output, then close. The
  /// close happens after the callback returns; on_close follows with an empty error_code.
  close,
  /// Stop the whole engine (as engine::stop()).
  shutdown,
};

/// Callbacks for an engine's connections. Derive, override what you need, pass to
/// engine::run(). The handler must outlive run().
class handler {
 public:
  virtual ~handler() = default;

  /// Called once on the thread that called engine::run(), after every listener is bound and
  /// every loop is created, before any connection is served. engine::listen_addresses() is
  /// valid here (useful with port 0).
  virtual void on_boot(engine& e) { (void)e; }

  /// A connection opened (accepted, or a dial completed). Loop thread of `c`. May write a
  /// greeting with c.write(). Returning action::close closes it (on_close still follows).
  /// Not called for UDP.
  virtual action on_open(conn& c) {
    (void)c;
    return action::none;
  }

  /// New bytes arrived. Loop thread of `c`. Read them with c.peek()/next()/discard(); bytes
  /// left unconsumed stay buffered (copied into the connection's ring buffer) and are
  /// presented again, with any new bytes, on the next call. For UDP, `c` is a per-datagram
  /// view whose input is exactly one datagram and whose write() replies to its sender.
  virtual action on_traffic(conn& c) {
    (void)c;
    return action::none;
  }

  /// The peer shut down its sending side (read EOF). Loop thread of `c`. The default closes the
  /// connection (pending output is still flushed first). Return action::none to keep writing
  /// to a half-closed peer; close it yourself later.
  virtual action on_read_eof(conn& c) {
    (void)c;
    return action::close;
  }

  /// The connection's buffered output rose above engine_options::high_water_mark. Loop thread
  /// of `c`; called from inside the write() that crossed the mark. Stop producing (or
  /// c.pause_read()) until on_drain().
  virtual void on_high_water(conn& c) { (void)c; }

  /// All buffered output was handed to the kernel after some had to be buffered (the socket
  /// was full). Loop thread of `c`. A good place to resume producing.
  virtual void on_drain(conn& c) { (void)c; }

  /// The connection closed. Called exactly once for every connection whose on_open was called
  /// (even if on_open returned action::close). Loop thread of `c`. `reason` is empty for a
  /// local close()/action::close, errc::peer_closed after the peer's EOF, a system error
  /// (ECONNRESET, EPIPE...) on a socket failure, errc::idle_timeout / read_timeout /
  /// write_timeout / input_too_large / engine_stopping for the engine's limits. The conn object
  /// stays valid for the duration of the call; afterwards c.send() returns errc::closed.
  virtual void on_close(conn& c, std::error_code reason) {
    (void)c;
    (void)reason;
  }

  /// Periodic tick when engine_options::ticker is true. Runs on loop 0's thread; first call
  /// right after on_boot. Return the delay until the next tick; zero or negative stops
  /// ticking.
  virtual std::chrono::milliseconds on_tick() { return std::chrono::milliseconds(0); }

  /// An accept failed or a connection was refused: errc::connection_limit (max_connections
  /// reached; the socket was accepted and closed at once), EMFILE/ENFILE (a client was shed
  /// with the spare descriptor), or another accept error. Runs on the accepting loop's thread.
  virtual void on_accept_error(std::error_code error) { (void)error; }

  /// The engine is stopping (engine::stop()) and `c` is open. Loop thread of `c`; called once,
  /// before the engine closes the connection, and not for connections already closing. The
  /// handler may write a farewell here (a protocol's "going away" message). Return
  /// action::close (the default) to let the engine close the connection gracefully now (pending
  /// output flushed within engine_options::stop_grace, on_close with errc::engine_stopping), or
  /// action::none to keep it open, still reading, and close it yourself, e.g. once the peer has
  /// answered the farewell: a connection still open when stop_grace ends is closed then (its
  /// on_close gets errc::engine_stopping).
  virtual action on_stopping(conn& c) {
    (void)c;
    return action::close;
  }

  /// Called once on the thread that called engine::run(), after every connection has been
  /// closed and every loop thread joined, just before run() returns.
  virtual void on_shutdown(engine& e) { (void)e; }
};

}  // namespace evnet
