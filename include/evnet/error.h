// evnet — error codes shared by every layer.
//
// This is a public header. Errors that come from the kernel are reported as
// std::system_category() codes (compare with std::errc::...); errors that evnet itself
// detects (misuse, state, limits, protocol violations) use evnet::errc below.
#pragma once

#include <string>
#include <system_error>

namespace evnet {

// One table, expanded into the enum and the messages (libuv's UV_ERRNO_MAP idea).
// Append new entries at the end of a group; never renumber.
#define EVNET_ERRC_MAP(XX)                                                 \
  XX(closed, 1, "the object is closed")                                    \
  XX(already_registered, 2, "descriptor is already registered")            \
  XX(not_registered, 3, "descriptor is not registered")                    \
  XX(bad_descriptor, 4, "bad file descriptor")                             \
  XX(invalid_argument, 5, "invalid argument")                              \
  XX(queue_full, 6, "queue is full")                                       \
  XX(aborted, 7, "operation aborted because its owner closed")             \
  XX(unsupported, 8, "not supported on this platform or backend")          \
  XX(wrong_thread, 9, "called from a thread that does not own the object") \
  XX(stopped, 10, "the loop was asked to stop")                            \
  XX(timed_out, 20, "operation timed out")                                 \
  XX(idle_timeout, 21, "connection idle for too long")                     \
  XX(read_timeout, 22, "read deadline passed")                             \
  XX(write_timeout, 23, "write deadline passed")                           \
  XX(connect_timeout, 24, "connect deadline passed")                       \
  XX(input_too_large, 30, "input buffer limit exceeded")                   \
  XX(output_too_large, 31, "output buffer limit exceeded")                 \
  XX(connection_limit, 32, "connection limit reached")                     \
  XX(frame_too_large, 33, "frame exceeds the configured maximum size")     \
  XX(engine_stopping, 40, "engine is shutting down")                       \
  XX(peer_closed, 41, "peer closed the connection")                        \
  XX(bad_address, 42, "malformed or unsupported address")                  \
  XX(protocol_error, 50, "protocol violation")                             \
  XX(message_too_big, 51, "message exceeds the configured maximum size")   \
  XX(invalid_utf8, 52, "text is not valid UTF-8")                          \
  XX(handshake_failed, 53, "handshake rejected")

/// Error conditions detected by evnet itself.
enum class errc : int {
#define EVNET_ERRC_ENUM(name, value, text) name = (value),
  EVNET_ERRC_MAP(EVNET_ERRC_ENUM)
#undef EVNET_ERRC_ENUM
};

/// The category of evnet::errc codes; its name() is "evnet". Safe from any thread.
const std::error_category& error_category() noexcept;

/// Makes an error_code of evnet's category. Safe from any thread.
std::error_code make_error_code(errc e) noexcept;

/// The current errno as a system_category error_code. Safe from any thread.
std::error_code last_system_error() noexcept;

}  // namespace evnet

template <>
struct std::is_error_code_enum<evnet::errc> : std::true_type {};
