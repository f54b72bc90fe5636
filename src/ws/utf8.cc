#include "evnet/ws/utf8.h"

#include <cstring>

namespace evnet::ws {

bool utf8_validator::feed(const char* data, std::size_t len) noexcept {
  if (failed_) {
    return false;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  const unsigned char* end = p + len;
  while (p < end) {
    if (need_ == 0) {
      // Skip ASCII eight bytes at a time: text payloads are mostly ASCII.
      while (end - p >= 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        if (w & 0x8080808080808080ull) {
          break;
        }
        p += 8;
      }
      if (p == end) {
        break;
      }
      unsigned char c = *p++;
      if (c < 0x80) {
        continue;
      }
      // Lead bytes per the Unicode table of well-formed sequences (Table 3-7).
      lo_ = 0x80;
      hi_ = 0xBF;
      if (c >= 0xC2 && c <= 0xDF) {
        need_ = 1;
      } else if (c >= 0xE0 && c <= 0xEF) {
        need_ = 2;
        if (c == 0xE0) {
          lo_ = 0xA0;  // no overlong 3-byte forms
        } else if (c == 0xED) {
          hi_ = 0x9F;  // no surrogates
        }
      } else if (c >= 0xF0 && c <= 0xF4) {
        need_ = 3;
        if (c == 0xF0) {
          lo_ = 0x90;  // no overlong 4-byte forms
        } else if (c == 0xF4) {
          hi_ = 0x8F;  // nothing above U+10FFFF
        }
      } else {
        failed_ = true;
        return false;
      }
    } else {
      unsigned char c = *p++;
      if (c < lo_ || c > hi_) {
        failed_ = true;
        return false;
      }
      lo_ = 0x80;
      hi_ = 0xBF;
      --need_;
    }
  }
  return true;
}

bool is_valid_utf8(std::string_view s) noexcept {
  utf8_validator v;
  return v.feed(s) && v.complete();
}

}  // namespace evnet::ws
