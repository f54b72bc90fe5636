// evnet — ASCII helpers shared by the HTTP parser and the WebSocket extension parser (internal
// header, not installed).
#pragma once

#include <string_view>

namespace evnet::http::detail {

/// `v` without leading and trailing optional whitespace (SP and HTAB, RFC 9110 §5.6.3).
/// Pure; safe from any thread.
inline std::string_view trim_ows(std::string_view v) noexcept {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
    v.remove_prefix(1);
  }
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
    v.remove_suffix(1);
  }
  return v;
}

}  // namespace evnet::http::detail
