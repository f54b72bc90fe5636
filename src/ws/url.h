// Internal: the parts of a "ws://" URL the WebSocket client uses (not installed).
#pragma once

#include <string>
#include <string_view>

namespace evnet::ws::detail {

/// A parsed "ws://host[:port][/path][?query]".
struct ws_url {
  std::string dial;    ///< Where to connect: "127.0.0.1:8080", "[::1]:80" (port 80 if none).
  std::string host;    ///< The Host field: the authority, without the port when it is 80.
  std::string target;  ///< The request target: "/path?q", "/" for an empty path.
};

/// Parses `url` into `out`; false when it is not a ws URL this client can use (another
/// scheme, no host, a space, control byte or fragment, a malformed IPv6 literal or port).
/// Pure; any thread.
bool parse_ws_url(std::string_view url, ws_url& out);

}  // namespace evnet::ws::detail
