#include "evnet/framing.h"

#include <cstring>
#include <limits>

namespace evnet {
namespace {

constexpr std::size_t kNotFound = static_cast<std::size_t>(-1);

// The position of the first `b` in stream positions [from, to) of `in`, or kNotFound.
std::size_t find_byte(const input_view& in, std::size_t from, std::size_t to, std::byte b) {
  const std::size_t n1 = in.first.size();
  if (from < n1) {
    const std::size_t end = to < n1 ? to : n1;
    if (const void* p = std::memchr(in.first.data() + from, static_cast<int>(b), end - from)) {
      return static_cast<std::size_t>(static_cast<const std::byte*>(p) - in.first.data());
    }
    from = n1;
  }
  if (from < to) {
    const std::size_t off = from - n1;
    if (const void* p = std::memchr(in.second.data() + off, static_cast<int>(b), to - from)) {
      return n1 + static_cast<std::size_t>(static_cast<const std::byte*>(p) - in.second.data());
    }
  }
  return kNotFound;
}

std::optional<frame> make_frame(const input_view& in, std::size_t payload_offset,
                                std::size_t payload_size, std::size_t consumed) {
  return frame{in.subview(payload_offset, payload_size), consumed};
}

}  // namespace

// ---- input_view / frame ----------------------------------------------------------------------

input_view input_view::subview(std::size_t offset, std::size_t count) const noexcept {
  const std::size_t n1 = first.size();
  input_view out;
  if (offset < n1) {
    const std::size_t take = count < n1 - offset ? count : n1 - offset;
    out.first = first.subspan(offset, take);
    if (count > take) {
      out.second = second.subspan(0, count - take);
    }
  } else {
    // Entirely in the second piece: present it as the first so callers see one contiguous span.
    out.first = second.subspan(offset - n1, count);
  }
  return out;
}

void input_view::copy_to(std::size_t offset, std::span<std::byte> out) const noexcept {
  const input_view v = subview(offset, out.size());
  if (!v.first.empty()) {
    std::memcpy(out.data(), v.first.data(), v.first.size());
  }
  if (!v.second.empty()) {
    std::memcpy(out.data() + v.first.size(), v.second.data(), v.second.size());
  }
}

input_view input_view::of(std::string_view s) noexcept {
  return {std::as_bytes(std::span<const char>(s.data(), s.size())), {}};
}

std::span<const std::byte> frame::bytes(std::vector<std::byte>& scratch) const {
  if (contiguous()) {
    return payload.first;
  }
  scratch.resize(payload.size());
  payload.copy_to(0, scratch);
  return scratch;
}

std::string_view frame::text(std::string& scratch) const {
  if (contiguous()) {
    return {reinterpret_cast<const char*>(payload.first.data()), payload.first.size()};
  }
  scratch.resize(payload.size());
  payload.copy_to(0, std::as_writable_bytes(std::span<char>(scratch.data(), scratch.size())));
  return scratch;
}

// ---- line_decoder ----------------------------------------------------------------------------

result<std::optional<frame>> line_decoder::decode(input_view in) noexcept {
  const std::size_t max_delim = opts_.delimiter == line_delimiter::lf ? 1 : 2;
  // No acceptable line can end beyond this many bytes; searching further is pointless.
  // (Capped: max_line_length may be SIZE_MAX, "no limit".)
  const std::size_t limit =
      opts_.max_line_length > SIZE_MAX - max_delim ? SIZE_MAX : opts_.max_line_length + max_delim;
  const std::size_t n = in.size() < limit ? in.size() : limit;
  std::size_t pos = scanned_ <= n ? scanned_ : 0;
  for (;;) {
    const std::size_t idx = find_byte(in, pos, n, std::byte{'\n'});
    if (idx == kNotFound) {
      scanned_ = n;
      if (in.size() >= limit) {
        return errc::frame_too_large;
      }
      return std::optional<frame>{};
    }
    const bool cr_before = idx > 0 && in[idx - 1] == std::byte{'\r'};
    std::size_t delim_len = 1;
    if (opts_.delimiter == line_delimiter::crlf) {
      if (!cr_before) {
        pos = idx + 1;  // A bare '\n' is content in crlf mode.
        continue;
      }
      delim_len = 2;
    } else if (opts_.delimiter == line_delimiter::lf_or_crlf && cr_before) {
      delim_len = 2;
    }
    const std::size_t content = idx + 1 - delim_len;
    if (content > opts_.max_line_length) {
      return errc::frame_too_large;
    }
    scanned_ = 0;
    return make_frame(in, 0, opts_.strip_delimiter ? content : idx + 1, idx + 1);
  }
}

// ---- length_field_decoder --------------------------------------------------------------------

std::error_code length_field_options::validate() const noexcept {
  switch (length_field_size) {
    case 1:
    case 2:
    case 4:
    case 8:
      // header_size() (offset + field) must not wrap.
      return length_field_offset > SIZE_MAX - length_field_size
                 ? make_error_code(errc::invalid_argument)
                 : std::error_code{};
    default:
      return make_error_code(errc::invalid_argument);
  }
}

result<std::optional<frame>> length_field_decoder::decode(input_view in) const noexcept {
  if (auto ec = opts_.validate()) {
    return ec;
  }
  const std::size_t hs = opts_.header_size();
  if (in.size() < hs) {
    return std::optional<frame>{};
  }
  std::byte raw[8];
  in.copy_to(opts_.length_field_offset, std::span<std::byte>(raw, opts_.length_field_size));
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < opts_.length_field_size; ++i) {
    const std::size_t k = opts_.order == byte_order::big ? i : opts_.length_field_size - 1 - i;
    value = (value << 8) | static_cast<std::uint64_t>(raw[k]);
  }
  // Work in signed 64-bit with explicit overflow checks: an 8-byte field can announce anything.
  if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return errc::frame_too_large;
  }
  std::int64_t body = 0;
  if (__builtin_add_overflow(static_cast<std::int64_t>(value), opts_.length_adjustment, &body)) {
    return errc::frame_too_large;
  }
  if (body < 0) {
    return errc::protocol_error;
  }
  const auto ubody = static_cast<std::uint64_t>(body);
  if (ubody > opts_.max_frame_size || hs + ubody > opts_.max_frame_size) {
    return errc::frame_too_large;
  }
  const std::size_t total = hs + static_cast<std::size_t>(ubody);
  if (in.size() < total) {
    return std::optional<frame>{};
  }
  if (opts_.strip_header) {
    return make_frame(in, hs, total - hs, total);
  }
  return make_frame(in, 0, total, total);
}

// ---- encoders --------------------------------------------------------------------------------

std::error_code encode_length_header(const length_field_options& opts, std::size_t body_size,
                                     std::span<std::byte> header) noexcept {
  if (auto ec = opts.validate()) {
    return ec;
  }
  const std::size_t hs = opts.header_size();
  if (header.size() < hs) {
    return make_error_code(errc::invalid_argument);
  }
  if (body_size > opts.max_frame_size || hs + body_size > opts.max_frame_size) {
    return make_error_code(errc::frame_too_large);
  }
  std::int64_t value = 0;
  if (__builtin_sub_overflow(static_cast<std::int64_t>(body_size), opts.length_adjustment,
                             &value) ||
      value < 0) {
    return make_error_code(errc::frame_too_large);
  }
  const std::size_t bits = opts.length_field_size * 8;
  if (bits < 64 && static_cast<std::uint64_t>(value) >> bits != 0) {
    return make_error_code(errc::frame_too_large);
  }
  auto v = static_cast<std::uint64_t>(value);
  std::byte* field = header.data() + opts.length_field_offset;
  for (std::size_t i = 0; i < opts.length_field_size; ++i) {
    const std::size_t k = opts.order == byte_order::little ? i : opts.length_field_size - 1 - i;
    field[k] = static_cast<std::byte>(v & 0xff);
    v >>= 8;
  }
  return {};
}

namespace {

template <class Container>
std::error_code append_length_prefixed(const length_field_options& opts,
                                       std::span<const std::byte> body, Container& out) {
  std::byte header[64];
  if (opts.header_size() > sizeof header) {
    // A long prefix before the field is legal; build it in a temporary instead.
    std::vector<std::byte> big(opts.header_size());
    if (auto ec = encode_length_header(opts, body.size(), big)) {
      return ec;
    }
    const auto* h = reinterpret_cast<const typename Container::value_type*>(big.data());
    out.insert(out.end(), h, h + big.size());
  } else {
    std::memset(header, 0, sizeof header);
    if (auto ec = encode_length_header(opts, body.size(), header)) {
      return ec;
    }
    const auto* h = reinterpret_cast<const typename Container::value_type*>(header);
    out.insert(out.end(), h, h + opts.header_size());
  }
  const auto* b = reinterpret_cast<const typename Container::value_type*>(body.data());
  out.insert(out.end(), b, b + body.size());
  return {};
}

}  // namespace

std::error_code encode_length_prefixed(const length_field_options& opts,
                                       std::span<const std::byte> body, std::string& out) {
  return append_length_prefixed(opts, body, out);
}

std::error_code encode_length_prefixed(const length_field_options& opts,
                                       std::span<const std::byte> body,
                                       std::vector<std::byte>& out) {
  return append_length_prefixed(opts, body, out);
}

std::error_code encode_line(std::string_view line, line_delimiter delimiter, std::string& out) {
  switch (delimiter) {
    case line_delimiter::lf:
      if (line.find('\n') != std::string_view::npos) {
        return make_error_code(errc::invalid_argument);
      }
      break;
    case line_delimiter::lf_or_crlf:
      if (line.find('\n') != std::string_view::npos || (!line.empty() && line.back() == '\r')) {
        return make_error_code(errc::invalid_argument);
      }
      break;
    case line_delimiter::crlf:
      // A bare '\n' or a trailing '\r' reads back intact (the decoder ends the line at the first
      // '\n' preceded by '\r', which is the delimiter's); only an embedded "\r\n" splits it.
      if (line.find("\r\n") != std::string_view::npos) {
        return make_error_code(errc::invalid_argument);
      }
      break;
  }
  out.append(line);
  out.append(delimiter == line_delimiter::crlf ? "\r\n" : "\n");
  return {};
}

}  // namespace evnet
