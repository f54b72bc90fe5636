// evnet — byte helpers shared by the HTTP parser, response writer and server (internal header,
// not installed).
#pragma once

#include <cstddef>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace evnet::http::detail {

/// Copies n >= 16 bytes without a call into memcpy: 16-byte blocks, the last one overlapping
/// the one before (heads and cached header lines are a few dozen bytes). Neither range may be
/// shorter than n. Pure; any thread.
inline void copy_blocks16(char* d, const char* s, std::size_t n) noexcept {
#if defined(__SSE2__)
  for (std::size_t i = 0; i + 16 < n; i += 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(d + n - 16),
                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + n - 16)));
#else
  std::memcpy(d, s, n);
#endif
}

/// The 13 bytes "HTTP/1.1 NNN " of a status line for a three-digit `status`. Pure; any thread.
inline void status_line_prefix(char (&out)[13], int status) noexcept {
  std::memcpy(out, "HTTP/1.1 ", 9);
  out[9] = static_cast<char>('0' + status / 100 % 10);
  out[10] = static_cast<char>('0' + status / 10 % 10);
  out[11] = static_cast<char>('0' + status % 10);
  out[12] = ' ';
}

}  // namespace evnet::http::detail
