// evnet — WebSocket server: upgrades go through evnet's HTTP server (same parser, same router),
// then frames are parsed in place from the connection's input.
//
// This is a public header. See ws/connection.h for the thread contract of the callbacks and of
// connection's methods.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "evnet/engine.h"
#include "evnet/http/server.h"
#include "evnet/ws/connection.h"

namespace evnet::ws {

/// Adds a WebSocket endpoint at `path` to an HTTP router: upgrade requests for `path` are
/// validated (400/426 on a bad handshake), a subprotocol and permessage-deflate are negotiated,
/// and the connection is handed to `h`. `h` must outlive the server. Call before the server
/// runs; owner thread.
void add_endpoint(http::router& r, std::string path, handler& h, const options& o = {});

/// For an application that serves add_endpoint() routes from its own evnet::handler (an
/// http::server subclass run on its own engine): call these from that handler's
/// on_high_water / on_drain so that ws::handler::on_high_water / on_drain run for WebSocket
/// connections (ws::server does this itself). Return false, doing nothing, when `c` carries no
/// WebSocket session. Loop thread of `c`; the ws callbacks run inside the call.
bool forward_high_water(evnet::conn& c);
/// See forward_high_water.
bool forward_drain(evnet::conn& c);

/// A ready-made server: an HTTP server whose router serves WebSocket at `path` (plus any HTTP
/// routes you add with routes() before run()). A request for `path` that is not a WebSocket
/// upgrade is answered 426 Upgrade Required ("Upgrade: websocket"), unless a GET route you
/// added serves `path`.
class server {
 public:
  /// `h` must outlive the server. Owner thread.
  explicit server(handler& h, options o = {}, std::string path = "/");
  ~server();

  /// The router, to add plain HTTP routes (e.g. a page) before run(). Owner thread.
  http::router& routes() noexcept { return router_; }
  /// HTTP settings (limits, timeouts, on_boot) before run(). Owner thread.
  http::server_options& http_options() noexcept { return http_opts_; }

  /// Serves `addresses` until stop(); blocks the calling thread. See engine::run.
  /// eo.high_water_mark is the threshold of handler::on_high_water.
  std::error_code run(const std::vector<std::string>& addresses, const engine_options& eo = {});
  /// Stops run(). Any thread; async-signal-safe (atomic loads and stores, then engine::stop()).
  /// Each open WebSocket is sent a 1001 "going away" close and ends when the peer's close reply
  /// arrives (on_close with 1001), or when the engine's stop_grace (or close_timeout) ends
  /// (on_close with 1006); plain HTTP connections are closed after their output is flushed.
  /// The request is remembered: a stop() before run() makes run() return right after it has
  /// bound its addresses, and so does every later run() of this server.
  void stop() noexcept;

 private:
  http::router router_;
  http::server_options http_opts_;
  handler& handler_;
  options opts_;
  std::string path_;
  std::atomic<http::server*> running_{nullptr};
  std::atomic<bool> stop_requested_{false};
};

}  // namespace evnet::ws
