// evnet — WebSocket client on the net layer's dialer (engine::dial): opening handshake,
// masking of every frame with a fresh random key, permessage-deflate offer, close handshake.
//
// This is a public header. See ws/connection.h for the thread contract of the callbacks and of
// connection's methods.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "evnet/engine.h"
#include "evnet/ws/connection.h"

namespace evnet::ws {

/// Client settings.
struct client_options : options {
  /// Sec-WebSocket-Protocol offer (comma-separated tokens, RFC 6455 §4.1), empty for none.
  /// connect() refuses any other value with errc::invalid_argument (a CR or LF in it would
  /// write lines of its own into the request).
  std::string protocols;
  /// The connection is failed if the handshake has not completed within this time.
  std::chrono::milliseconds handshake_timeout{10000};
  /// Engine settings of the client's own engine (loops, buffers...).
  engine_options engine;
};

/// A WebSocket client with its own engine running on a background thread.
class client {
 public:
  /// `h` must outlive the client. Owner thread.
  explicit client(handler& h, client_options o = {});
  /// Stops the engine and joins its thread: each open WebSocket is sent a 1001 "going away"
  /// close and ends when the server's reply arrives (on_close with 1001) or when the engine's
  /// stop_grace ends (on_close with 1006); a connection still in its handshake fails.
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// Starts the engine thread; returns once it is ready to dial. Owner thread, once.
  std::error_code start();
  /// Opens "ws://host[:port][/path][?query]" (host a numeric address or "localhost"; port 80
  /// by default; an empty path is "/", so "ws://host:port?q" requests "/?q"). The request's Host
  /// field names the port only when it is not 80 (RFC 6455 §4.1). On success the
  /// handler's on_open runs on a loop thread; on failure on_connect_failed does. Returns an
  /// error (and calls nothing) if the URL is malformed (bad_address), the protocols offer is
  /// not a list of tokens (invalid_argument) or the client is not running.
  /// Any thread after start().
  std::error_code connect(std::string_view url);
  /// Stops the engine and joins its thread (as the destructor). Owner thread.
  void stop();

 private:
  class impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace evnet::ws
