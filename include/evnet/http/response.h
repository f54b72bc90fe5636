// evnet — HTTP/1.1 response writer and the cached Date header.
//
// This is a public header. A response_writer appends a response to a caller-owned
// std::string (normally a per-connection output staging buffer whose capacity is reused), so
// writing a small response allocates nothing once the buffer has grown to its working size.
// Nothing here performs I/O; every function is called by the thread that owns the string.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace evnet::http {

namespace detail {
/// False when [p, p + n) holds no CR and no LF; true when it may (any byte below 0x0E counts,
/// so a tab does too: the caller then looks byte by byte). Eight bytes per step. Pure.
inline bool may_hold_line_break(const char* p, std::size_t n) noexcept {
  constexpr std::uint64_t kOnes = 0x0101010101010101ull;
  constexpr std::uint64_t kHigh = 0x8080808080808080ull;
  auto below_0e = [](std::uint64_t x) { return ((x - 0x0E * kOnes) & ~x & kHigh) != 0; };
  if (n >= 8) {
    std::uint64_t x;
    for (std::size_t i = 0; i + 8 < n; i += 8) {
      std::memcpy(&x, p + i, 8);
      if (below_0e(x)) {
        return true;
      }
    }
    std::memcpy(&x, p + n - 8, 8);
    return below_0e(x);
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (static_cast<unsigned char>(p[i]) < 0x0E) {
      return true;
    }
  }
  return false;
}

/// Makes each CR, LF and NUL in [p, p + n) a space: the caller's text inside a line of a head
/// cannot end that line and write lines of its own (response splitting), nor carry the NUL that
/// RFC 9110 §5.5 has a recipient refuse or read as a space. Pure.
inline void blank_line_breaks(char* p, std::size_t n) noexcept {
  if (may_hold_line_break(p, n)) [[unlikely]] {
    for (std::size_t i = 0; i < n; ++i) {
      if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0') {
        p[i] = ' ';
      }
    }
  }
}

/// RFC 9110 §5.6.2 tchar, by byte: the bytes of a token (methods, field names).
struct tchar_table {
  bool is[256] = {};
  constexpr tchar_table() {
    for (int c = '0'; c <= '9'; ++c) {
      is[c] = true;
    }
    for (int c = 'a'; c <= 'z'; ++c) {
      is[c] = true;
      is[c - 'a' + 'A'] = true;
    }
    for (char c : std::string_view("!#$%&'*+-.^_`|~")) {
      is[static_cast<unsigned char>(c)] = true;
    }
  }
};
inline constexpr tchar_table kTchar{};

/// True when `s` is a token (RFC 9110 §5.6.2: one or more tchars), as a field name must be
/// (§5.1). One table lookup per byte. Pure.
inline bool is_token(std::string_view s) noexcept {
  if (s.empty()) {
    return false;
  }
  for (char c : s) {
    if (!kTchar.is[static_cast<unsigned char>(c)]) {
      return false;
    }
  }
  return true;
}

/// is_token() of the first N bytes at `p`, with N a constant: the loop unrolls, and for a
/// string literal the compiler evaluates every lookup, so the check costs nothing. Pure.
template <std::size_t N>
inline bool is_token_of_length(const char* p) noexcept {
  bool ok = N != 0;
#pragma GCC unroll 64
  for (std::size_t i = 0; i < N; ++i) {
    ok &= kTchar.is[static_cast<unsigned char>(p[i])];
  }
  return ok;
}
}  // namespace detail

/// Standard reason phrase for `status` ("OK", "Not Found", ...); "Unknown" if not listed.
/// Safe from any thread.
std::string_view reason_phrase(int status) noexcept;

/// The current time as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), recomputed at most
/// once per second per thread (thread-local cache, so no locking). Safe from any thread; the
/// view is valid until the calling thread's next call.
std::string_view http_date() noexcept;

/// Appends one HTTP/1.1 response (or a chunked stream) to `out`.
///
/// Usage: status() once, header() any number of times, then exactly one of body(),
/// end_headers() (a body of Content-Length bytes follows via raw()) or begin_chunked() followed
/// by chunk()... and end_chunked(). Date and Server-less minimal framing are the caller's
/// choice: add_date() appends the cached Date header.
class response_writer {
 public:
  /// Writes into `out` (appends; does not clear). Owner thread only.
  explicit response_writer(std::string& out) noexcept : out_(out) {}

  /// "HTTP/1.1 <status> <reason>\r\n"; an empty reason uses reason_phrase(status). A CR, LF or
  /// NUL in `reason` is sent as a space (it would end the status line early). A status outside
  /// 100..599 (RFC 9110 §15: three digits) is a caller bug and is written as "500 Internal
  /// Server Error" (its reason dropped).
  response_writer& status(int status, std::string_view reason = {});
  /// "<name>: <value>\r\n". A field whose `name` is not a token (RFC 9110 §5.1: empty, or
  /// holding a space, ':', a control byte, a byte above 0x7e...) is not written at all, as Go's
  /// net/http drops it: no recipient could read it as the field meant. A CR or LF in `value`
  /// would end the line and start a field (or the body) of the caller's data — response
  /// splitting — so each is sent as a space, as Go's net/http does, and so is a NUL (RFC 9110
  /// §5.5: a recipient refuses it or reads it as a space).
  response_writer& header(std::string_view name, std::string_view value);
  /// "Date: <http_date()>\r\n".
  response_writer& add_date();
  /// "Connection: close\r\n" — tell the peer this is the last response.
  response_writer& close_connection() { return header("Connection", "close"); }
  /// "Content-Length: n\r\n\r\n" followed by `body`.
  void body(std::string_view body);
  /// "Content-Length: n\r\n\r\n"; the caller appends n bytes afterwards with raw().
  void end_headers(std::uint64_t content_length);
  /// "Transfer-Encoding: chunked\r\n\r\n".
  void begin_chunked();
  /// One chunk ("<hex>\r\n<data>\r\n"); empty data is skipped (it would end the stream).
  void chunk(std::string_view data);
  /// The last chunk and an empty trailer section ("0\r\n\r\n").
  void end_chunked();
  /// Appends bytes verbatim.
  void raw(std::string_view bytes) { out_.append(bytes); }

 private:
  std::string& out_;
};

}  // namespace evnet::http
