// evnet — incremental UTF-8 validation for WebSocket text messages (RFC 3629 / RFC 6455 §8.1).
//
// This is a public header. The validator is a small value type with no threads: one thread at
// a time may use an instance.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace evnet::ws {

/// Validates UTF-8 fed in pieces of any size, so a code point may straddle fragments.
/// Rejects overlong forms, surrogates (U+D800..U+DFFF) and code points above U+10FFFF as
/// soon as the offending byte is seen. ASCII runs are checked eight bytes at a time.
class utf8_validator {
 public:
  /// Feeds more bytes; returns false as soon as the input cannot be valid UTF-8 (sticky).
  bool feed(const char* data, std::size_t len) noexcept;
  /// Convenience overload of feed().
  bool feed(std::string_view s) noexcept { return feed(s.data(), s.size()); }
  /// True if everything fed so far is valid and no code point is left unfinished.
  bool complete() const noexcept { return !failed_ && need_ == 0; }
  /// True once invalid input was seen.
  bool failed() const noexcept { return failed_; }
  /// Starts over for a new message.
  void reset() noexcept { need_ = 0, lo_ = 0x80, hi_ = 0xBF, failed_ = false; }

 private:
  std::uint8_t need_ = 0;   // continuation bytes still expected
  std::uint8_t lo_ = 0x80;  // allowed range of the next continuation byte
  std::uint8_t hi_ = 0xBF;
  bool failed_ = false;
};

/// True if `s` is complete, valid UTF-8. Safe from any thread.
bool is_valid_utf8(std::string_view s) noexcept;

}  // namespace evnet::ws
