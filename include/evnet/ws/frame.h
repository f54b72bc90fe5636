// evnet — WebSocket framing (RFC 6455 §5): opcodes, close codes, the frame writer and the
// streaming message reader.
//
// This is a public header. Nothing here does I/O or owns threads; an instance is used by one
// thread at a time (normally the loop thread of the connection).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "evnet/ws/utf8.h"

namespace evnet::ws {

class inflater;

namespace detail {
struct reader_test_access;  // tests only: the capacity of the message buffers
}  // namespace detail

/// Frame opcodes (RFC 6455 §5.2).
enum class opcode : std::uint8_t {
  continuation = 0x0,
  text = 0x1,
  binary = 0x2,
  close = 0x8,
  ping = 0x9,
  pong = 0xA,
};

/// Close status codes (RFC 6455 §7.4.1).
// The codes are named like enumerators (close_code::normal, as std::errc), not kName constants:
// they are the values of one set, always written with the namespace, and a plain integer type
// so that any code received on the wire can be held.
// NOLINTBEGIN(readability-identifier-naming)
namespace close_code {
inline constexpr std::uint16_t normal = 1000;
inline constexpr std::uint16_t going_away = 1001;
inline constexpr std::uint16_t protocol_error = 1002;
inline constexpr std::uint16_t unsupported_data = 1003;
inline constexpr std::uint16_t no_status = 1005;  ///< Never sent: the close frame had no code.
inline constexpr std::uint16_t abnormal = 1006;   ///< Never sent: closed without a close frame.
inline constexpr std::uint16_t invalid_payload = 1007;
inline constexpr std::uint16_t policy_violation = 1008;
inline constexpr std::uint16_t message_too_big = 1009;
inline constexpr std::uint16_t mandatory_extension = 1010;
inline constexpr std::uint16_t internal_error = 1011;
}  // namespace close_code
// NOLINTEND(readability-identifier-naming)

/// True if `code` may appear in a close frame on the wire (1000-1003, 1007-1014, 3000-4999).
bool is_valid_close_code(std::uint16_t code) noexcept;

/// Which end of the connection we are: a server requires masked frames from its peer and sends
/// unmasked ones; a client does the opposite.
enum class role : std::uint8_t { server, client };

/// Largest frame header: 2 + 8 (64-bit length) + 4 (mask key).
inline constexpr std::size_t kMaxFrameHeader = 14;

/// Writes a frame header into `out` and returns its size (2..14). With a mask key, the MASK bit
/// is set and the key appended; the caller must then mask the payload with apply_mask().
/// Safe from any thread.
std::size_t write_frame_header(char* out, opcode op, std::uint64_t payload_len, bool fin = true,
                               bool rsv1 = false, const std::uint8_t* mask_key = nullptr) noexcept;

/// XORs `len` bytes with the 4-byte key, starting at key position `offset % 4` (so a payload
/// can be masked in pieces). Returns the key position after the last byte. Safe from any thread.
std::size_t apply_mask(char* data, std::size_t len, const std::uint8_t key[4],
                       std::size_t offset = 0) noexcept;

/// Four unpredictable bytes for a client frame's masking key (RFC 6455 §5.3). Uses a per-thread
/// generator seeded from the OS entropy source. Safe from any thread.
std::array<std::uint8_t, 4> random_mask_key() noexcept;

/// Appends a complete frame to `out`; masks the payload with a random key when `mask` is true
/// (the client role). Safe from any thread for distinct strings.
void append_frame(std::string& out, opcode op, std::string_view payload, bool mask, bool fin = true,
                  bool rsv1 = false);

/// Appends a close frame with `code` and `reason`. A reason longer than 123 bytes is cut at 123
/// bytes to fit the 125-byte control frame limit; cutting it on a UTF-8 boundary is the
/// caller's job. Code 1005 (no status) or 0 sends an empty close frame. Safe from any thread for
/// distinct strings.
void append_close(std::string& out, std::uint16_t code, std::string_view reason, bool mask);

/// Limits and options of a reader. The size limits count payload bytes after inflate: the
/// frames of a compressed message may be a little larger on the wire (up to limit + limit/1000
/// + 1 KiB, what deflate adds to incompressible data), and its inflated size must be within
/// max_message_bytes (and max_frame_bytes too when it came in one frame).
struct reader_config {
  ws::role role = ws::role::server;             ///< Our role (decides the masking rule).
  std::uint64_t max_frame_bytes = 16u << 20;    ///< Larger frames → close 1009.
  std::uint64_t max_message_bytes = 16u << 20;  ///< Larger messages → 1009.
  bool validate_utf8 = true;                    ///< Check text messages and close reasons.
};

/// What reader::next() found.
enum class read_event : std::uint8_t {
  need_more,  ///< All input consumed; call again with more.
  message,    ///< A complete text or binary message in `data`.
  ping,       ///< A ping; `data` is its payload (answer with a pong carrying it).
  pong,       ///< A pong; `data` is its payload.
  close,      ///< A valid close frame: `code` (1005 if none) and `reason`.
  error,      ///< Protocol violation: close the connection with `code` and `reason`. Sticky.
};

/// Result of reader::next().
struct read_step {
  read_event event = read_event::need_more;
  std::size_t consumed = 0;      ///< Input bytes consumed (remove them from the front).
  opcode type = opcode::binary;  ///< text or binary for `message`.
  std::string_view data;         ///< Message or control payload (see reader::next).
  std::uint16_t code = 0;        ///< Close code for `close` / `error`.
  std::string_view reason;       ///< Close reason for `close` / `error`.
};

/// Streaming WebSocket reader: frames → messages. Accepts input in any split, enforces RFC 6455
/// (masking direction, reserved bits and opcodes, control frame rules, continuation order,
/// UTF-8 of text across fragments) and size limits, and reassembles fragmented messages.
/// With an inflater attached (permessage-deflate negotiated), RSV1 marks compressed messages.
class reader {
 public:
  /// Creates a reader; allocates nothing until a fragmented or compressed message arrives.
  explicit reader(reader_config cfg = {}) noexcept : cfg_(cfg) {}

  /// Parses the next event from `input`, unmasking payload bytes IN PLACE (the input is
  /// modified). A message that arrives as one unfragmented, uncompressed frame entirely inside
  /// `input` is returned as a view into `input` (no copy); otherwise `data` points into the
  /// reader's own buffer. Either way `data` is valid until the next call or until the input is
  /// discarded. Owner thread only.
  read_step next(std::span<char> input);

  /// Enables permessage-deflate decoding with `inf` (not owned; nullptr disables).
  void set_inflater(ws::inflater* inf) noexcept { inflater_ = inf; }
  /// Current configuration.
  const reader_config& config() const noexcept { return cfg_; }
  /// True when no frame is partially read (a clean point, e.g. for tests).
  bool idle() const noexcept { return state_ == state::header && hdr_len_ == 0 && !in_message_; }
  /// Frees the buffers of reassembled and inflated messages if they hold more than 64 KiB and
  /// no message is being assembled, so that one large message does not keep its memory for
  /// the reader's life. Invalidates the `data` of the last step. Owner thread only.
  void release_buffers() noexcept;

 private:
  friend struct detail::reader_test_access;
  enum class state : std::uint8_t { header, payload, failed };

  read_step fail(std::uint16_t code, const char* reason);
  read_step finish_frame(std::size_t consumed, bool& emit);
  read_step deliver_message(std::size_t consumed, std::string_view data);
  bool begin_frame(const unsigned char* h);

  reader_config cfg_;
  ws::inflater* inflater_ = nullptr;
  state state_ = state::header;
  // Header of the frame being read.
  unsigned char hdr_[kMaxFrameHeader];
  std::size_t hdr_len_ = 0;
  bool fin_ = false;
  bool masked_ = false;
  opcode op_ = opcode::continuation;
  std::uint8_t mask_[4] = {};
  std::size_t mask_pos_ = 0;
  std::uint64_t remaining_ = 0;
  std::uint64_t frame_len_ = 0;
  // Message being assembled across frames.
  bool in_message_ = false;
  bool compressed_ = false;
  opcode msg_type_ = opcode::binary;
  std::uint64_t msg_len_ = 0;  // wire bytes of the message so far
  std::uint64_t msg_frames_ = 0;
  // Sticky error.
  std::uint16_t fail_code_ = 0;
  const char* fail_reason_ = "";
  std::size_t ctrl_len_ = 0;
  utf8_validator utf8_;
  // Below: only fragmented, compressed or control messages use these.
  std::string msg_buf_;
  std::string inflated_;
  // Control frame payload (at most 125 bytes).
  char ctrl_[125];
};

}  // namespace evnet::ws
