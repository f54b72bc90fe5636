// Internal: comma-separated header lists of the opening handshake (Sec-WebSocket-Protocol),
// shared by the server and the client.
#pragma once

#include <cstddef>
#include <string_view>

namespace evnet::ws::detail {

// Calls `f` with each comma-separated item of `list`, spaces and tabs around it trimmed (an
// empty list is one empty item); returns true as soon as `f` does.
template <class F>
bool any_item(std::string_view list, F f) {
  for (;;) {
    const std::size_t comma = list.find(',');
    std::string_view t = list.substr(0, comma);
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) {
      t.remove_prefix(1);
    }
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) {
      t.remove_suffix(1);
    }
    if (f(t)) {
      return true;
    }
    if (comma == std::string_view::npos) {
      return false;
    }
    list.remove_prefix(comma + 1);
  }
}

// Whether `chosen` is one of the comma-separated values of `offer` (compared exactly:
// subprotocol names are case-sensitive).
inline bool offered_protocol(std::string_view offer, std::string_view chosen) {
  return !chosen.empty() && any_item(offer, [chosen](std::string_view t) { return t == chosen; });
}

}  // namespace evnet::ws::detail
