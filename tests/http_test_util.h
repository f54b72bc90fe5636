// HTTP test helpers: reading and parsing responses from a blocking client. Test-only code.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "evnet/http/parser.h"
#include "proto_test_util.h"

namespace proto_test {

namespace http = evnet::http;

/// A keep-alive request for the examples' GET /plaintext route.
inline constexpr char kGet[] = "GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";

struct reply {
  int status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool keep_alive = true;
  std::string header(std::string_view name) const {
    for (auto& h : headers) {
      if (http::iequals(h.first, name)) {
        return h.second;
      }
    }
    return {};
  }
};

// Reads from `c` until `n` responses are parsed, the server closes, or the receive timeout
// passes. `eof` tells whether the server really closed the connection (recv() returned 0): when
// the responses end first, one more receive checks it. `timed_out` tells whether a receive timed
// out instead (the connection was still open then) — never counted as a close.
inline std::vector<reply> read_replies(client& c, std::size_t n, bool* eof = nullptr,
                                       bool head_request = false, bool* timed_out = nullptr) {
  std::vector<reply> out;
  http::response_parser p;
  p.set_head_request(head_request);
  reply cur;
  bool closed = false;
  bool timeout = false;
  bool stopped = false;  // EOF, timeout or error before `n` responses
  while (out.size() < n) {
    bool e = false;
    bool t = false;
    std::string data = c.recv_some(&e, &t);
    if (data.empty()) {
      stopped = true;
      closed = e;
      timeout = t;
      // A response delimited by the close ends there; not on a timeout or an error.
      if (closed && p.finish_on_eof()) {
        (void)p.parse({});
        out.push_back(cur);
      }
      break;
    }
    std::string_view in = data;
    for (;;) {
      auto s = p.parse(in);
      in.remove_prefix(s.consumed);
      if (s.event == http::parse_event::need_more || s.event == http::parse_event::error) {
        break;
      }
      if (s.event == http::parse_event::head) {
        cur = reply{};
        cur.status = p.message().status;
        cur.keep_alive = p.message().keep_alive;
        for (auto& h : p.message().headers) {
          cur.headers.emplace_back(h.name, h.value);
        }
      } else if (s.event == http::parse_event::body) {
        cur.body.append(s.body);
      } else if (s.event == http::parse_event::done) {
        out.push_back(cur);
      }
    }
  }
  if (eof && !stopped) {
    bool e = false;
    bool t = false;
    std::string more = c.recv_some(&e, &t);
    closed = more.empty() && e;
    timeout = more.empty() && t;
  }
  if (eof) {
    *eof = closed;
  }
  if (timed_out) {
    *timed_out = timeout;
  }
  return out;
}

}  // namespace proto_test
