// evnet — framing: split a byte stream into messages without ever waiting for the rest of a frame.
//
// This is a public header. The decoders read input given as two spans (the two halves of a ring
// buffer, as a connection's input exposes it), find at most one complete frame, and tell the
// caller how many bytes that frame occupies; they never consume, copy or block. Typical use in
// on_traffic:
//
//   for (;;) {
//     auto f = decoder.decode(view_of_input);             // zero-copy spans into the input
//     if (!f) { conn.close(); break; }                    // frame_too_large, protocol_error
//     if (!*f) break;                                     // half a frame: wait for more bytes
//     handle((*f)->text(scratch));                        // copies only if the frame straddles
//     conn.discard((*f)->consumed);                       // then decode the next one
//   }
//
// Threading: decoders are plain objects with a little scan state (so a long partial line is not
// rescanned from the start on every call); they are not synchronised, so use one per connection on
// that connection's thread. The encoders and input_view/frame helpers are thread-agnostic pure
// functions. Nothing here runs callbacks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "evnet/result.h"

namespace evnet {

/// A read-only view of buffered input in (at most) two pieces: `first` then `second`, as the two
/// halves of a ring buffer. Either piece may be empty. The view does not own the bytes.
/// Thread-agnostic value type.
struct input_view {
  /// The bytes that come first in the stream.
  std::span<const std::byte> first;
  /// The bytes that follow `first`.
  std::span<const std::byte> second;

  /// Total bytes in both pieces.
  std::size_t size() const noexcept { return first.size() + second.size(); }
  /// Whether both pieces are empty.
  bool empty() const noexcept { return size() == 0; }
  /// The byte at stream position `i` (i < size()).
  std::byte operator[](std::size_t i) const noexcept {
    return i < first.size() ? first[i] : second[i - first.size()];
  }
  /// The bytes [offset, offset + count) of the stream, still in (at most) two pieces.
  /// Requires offset + count <= size().
  input_view subview(std::size_t offset, std::size_t count) const noexcept;
  /// Copies the bytes [offset, offset + out.size()) into `out`. Requires the range to be in view.
  void copy_to(std::size_t offset, std::span<std::byte> out) const noexcept;
  /// A view of one contiguous string (second piece empty); for tests and simple callers.
  static input_view of(std::string_view s) noexcept;
};

/// One decoded frame: its payload (spans into the input given to decode) and how many input
/// bytes the frame occupies, header and delimiter included. The spans stay valid until the caller
/// changes the input (typically by discarding `consumed` bytes). Thread-agnostic value type.
struct frame {
  /// The payload, in one piece or split where the input's two halves meet.
  input_view payload;
  /// Bytes to discard from the input once the payload has been used.
  std::size_t consumed = 0;

  /// Whether the payload is one contiguous span (no copy needed).
  bool contiguous() const noexcept { return payload.second.empty(); }
  /// The payload as one span: payload.first itself when contiguous (zero-copy), otherwise the
  /// payload copied into `scratch` (resized to fit) and a span over it.
  std::span<const std::byte> bytes(std::vector<std::byte>& scratch) const;
  /// The payload as text, zero-copy when contiguous, otherwise copied into `scratch`.
  std::string_view text(std::string& scratch) const;
};

/// What ends a line for line_decoder and encode_line.
enum class line_delimiter {
  /// "\n"; a '\r' before it is part of the line.
  lf,
  /// "\r\n" only; a bare '\n' is part of the line.
  crlf,
  /// "\n" with an optional '\r' before it, which is stripped too (Netty's LineBasedFrameDecoder).
  lf_or_crlf,
};

/// Settings of a line_decoder.
struct line_options {
  /// Which bytes end a line.
  line_delimiter delimiter = line_delimiter::lf;
  /// The longest accepted line, delimiter excluded. A longer line fails with errc::frame_too_large
  /// as soon as max_line_length + delimiter bytes are buffered without a delimiter, so an endless
  /// line never grows the input buffer without bound.
  std::size_t max_line_length = std::size_t{64} * 1024;
  /// Whether the payload excludes the delimiter (true) or includes it (false).
  bool strip_delimiter = true;
};

/// Splits input into delimiter-terminated lines.
///
/// The decoder remembers how far it searched in a partial line, so successive calls on a growing
/// input cost O(new bytes), not O(line). It assumes each call sees the same stream from the same
/// starting byte until a frame is returned (after which the caller discards frame.consumed); call
/// reset() if the caller drops input some other way.
///
/// Threading: one decoder per connection, used on that connection's thread; not synchronised.
class line_decoder {
 public:
  /// A decoder with the given settings.
  explicit line_decoder(line_options opts = {}) noexcept : opts_(opts) {}

  /// Finds the first complete line in `in`. Returns a frame; std::nullopt when the line is not
  /// complete yet (nothing to consume); errc::frame_too_large when the line exceeds
  /// max_line_length. Never consumes or copies.
  result<std::optional<frame>> decode(input_view in) noexcept;

  /// Forgets the partial-line scan position.
  void reset() noexcept { scanned_ = 0; }

  /// The settings.
  const line_options& options() const noexcept { return opts_; }

 private:
  line_options opts_;
  std::size_t scanned_ = 0;
};

/// Byte order of a length field.
enum class byte_order {
  /// Most significant byte first (network order).
  big,
  /// Least significant byte first.
  little,
};

/// Settings of a length_field_decoder and of encode_length_prefixed.
///
/// A frame is laid out as [length_field_offset bytes][length field][body]. The body length is
/// (length field value + length_adjustment); use a negative adjustment when the value counts the
/// header too (e.g. -4 when a 4-byte field at offset 0 counts itself).
struct length_field_options {
  /// Bytes before the length field (e.g. a type or version byte), part of the header.
  std::size_t length_field_offset = 0;
  /// Size of the length field: 1, 2, 4 or 8 bytes.
  std::size_t length_field_size = 4;
  /// Byte order of the length field.
  byte_order order = byte_order::big;
  /// Added to the field's value to get the body length.
  std::int64_t length_adjustment = 0;
  /// Whether the payload is the body only (true) or the whole frame, header included (false).
  bool strip_header = true;
  /// The largest accepted frame in bytes, header included. A larger announced frame fails with
  /// errc::frame_too_large as soon as its header is buffered (before its body arrives).
  std::size_t max_frame_size = std::size_t{16} * 1024 * 1024;

  /// Bytes of header before the body: length_field_offset + length_field_size.
  std::size_t header_size() const noexcept { return length_field_offset + length_field_size; }
  /// errc::invalid_argument if length_field_size is not 1, 2, 4 or 8; {} otherwise.
  std::error_code validate() const noexcept;
};

/// Splits input into length-prefixed frames.
///
/// Threading: stateless apart from its settings; one per connection or shared read-only.
class length_field_decoder {
 public:
  /// A decoder with the given settings (checked by decode; see length_field_options::validate).
  explicit length_field_decoder(length_field_options opts = {}) noexcept : opts_(opts) {}

  /// Finds the first complete frame in `in`. Returns a frame; std::nullopt when the header or body
  /// is not complete yet; errc::frame_too_large when the announced frame exceeds max_frame_size
  /// (or cannot be represented); errc::protocol_error when the body length comes out negative;
  /// errc::invalid_argument for invalid settings. Never consumes or copies.
  result<std::optional<frame>> decode(input_view in) const noexcept;

  /// The settings.
  const length_field_options& options() const noexcept { return opts_; }

 private:
  length_field_options opts_;
};

/// Writes the length field for a body of `body_size` bytes at opts.length_field_offset inside
/// `header` (which must hold opts.header_size() bytes; the bytes before the field are left for the
/// caller to fill). Errors: errc::invalid_argument (bad settings or short header),
/// errc::frame_too_large (the frame exceeds max_frame_size or the value does not fit the field,
/// or is negative after the adjustment). Thread-agnostic, pure.
std::error_code encode_length_header(const length_field_options& opts, std::size_t body_size,
                                     std::span<std::byte> header) noexcept;

/// Appends one whole frame to `out`: zero bytes for the part before the length field, the length
/// field, then `body`. Same errors as encode_length_header; `out` is unchanged on error.
/// Thread-agnostic, pure.
std::error_code encode_length_prefixed(const length_field_options& opts,
                                       std::span<const std::byte> body, std::string& out);
/// The same, appending to a byte vector.
std::error_code encode_length_prefixed(const length_field_options& opts,
                                       std::span<const std::byte> body,
                                       std::vector<std::byte>& out);

/// Appends `line` and the delimiter ("\n" for lf and lf_or_crlf, "\r\n" for crlf) to `out`.
/// errc::invalid_argument if the decoder on the other side would not get `line` back: a '\n' in
/// the line (lf, lf_or_crlf), "\r\n" in it (crlf), or a trailing '\r' (lf_or_crlf strips it).
/// `out` is unchanged on error. Thread-agnostic, pure.
std::error_code encode_line(std::string_view line, line_delimiter delimiter, std::string& out);

}  // namespace evnet
