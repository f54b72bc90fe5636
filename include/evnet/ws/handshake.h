// evnet — the WebSocket opening handshake (RFC 6455 §4) on top of evnet's HTTP parser.
//
// This is a public header. Every function is pure (no I/O, no shared state) and safe from any
// thread.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <string_view>

#include "evnet/http/parser.h"

namespace evnet::ws {

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)), 28 characters.
/// Computed with OpenSSL's libcrypto.
std::array<char, 28> accept_key(std::string_view key) noexcept;

/// True if `key` is the base64 encoding of exactly 16 bytes (RFC 6455 §4.2.1 item 5).
bool is_valid_key(std::string_view key) noexcept;

/// A fresh random Sec-WebSocket-Key (client side; 16 random bytes, base64).
std::string generate_key();

/// Chooses a subprotocol from the client's comma-separated Sec-WebSocket-Protocol list (in
/// ws::server, the values of all the request's Sec-WebSocket-Protocol fields, joined with ", ").
/// Return one of the offered tokens, or an empty view for "none". Runs on the thread that
/// validates the handshake (the connection's loop thread in ws::server).
using subprotocol_selector = std::function<std::string_view(std::string_view offered)>;

/// Outcome of validating an upgrade request.
struct upgrade_check {
  int status = 0;           ///< 0 if acceptable, else the HTTP status to answer (400, 426).
  std::string_view reason;  ///< Why it was refused (static text).
  std::string_view key;     ///< Sec-WebSocket-Key (view into the request) when acceptable.
};

/// Validates a client's opening handshake: GET, HTTP/1.1, Upgrade: websocket, Connection
/// containing "upgrade", a valid Sec-WebSocket-Key and Sec-WebSocket-Version 13 (anything else
/// gets 426 so the client can retry with a version we speak). Either field given twice is a
/// 400 (RFC 6455 §11.3.1, §11.3.5: at most once in a request).
upgrade_check check_upgrade(const http::message& request) noexcept;

/// Appends the "101 Switching Protocols" response; `protocol` and `extensions` are added as
/// Sec-WebSocket-Protocol / Sec-WebSocket-Extensions when non-empty.
void write_upgrade_response(std::string& out, std::string_view key, std::string_view protocol = {},
                            std::string_view extensions = {});

/// Appends a refusal (`status` 400 or 426 etc.) that closes the connection; a 426 carries
/// "Sec-WebSocket-Version: 13".
void write_upgrade_refusal(std::string& out, int status, std::string_view reason);

/// Client side: appends the upgrade request for `host` (with port if not default) and `target`.
void write_client_request(std::string& out, std::string_view host, std::string_view target,
                          std::string_view key, std::string_view protocols = {},
                          std::string_view extensions = {});

/// Client side: checks the server's response to our request with `key`: 101, Upgrade:
/// websocket, Connection containing "upgrade", one Sec-WebSocket-Accept that answers `key`, at
/// most one Sec-WebSocket-Protocol (RFC 6455 §11.3.3, §11.3.4). Returns an empty view if the
/// handshake succeeded, else a static description of the failure.
std::string_view check_server_response(const http::message& response,
                                       std::string_view key) noexcept;

}  // namespace evnet::ws
