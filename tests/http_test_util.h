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

// Reads from `c` until `n` responses are parsed, EOF, or timeout. `eof` tells whether the
// server closed the connection (checked only after the responses, with a short wait).
inline std::vector<reply> read_replies(client& c, std::size_t n, bool* eof = nullptr,
                                       bool head_request = false) {
  std::vector<reply> out;
  http::response_parser p;
  p.set_head_request(head_request);
  reply cur;
  bool closed = false;
  while (out.size() < n && !closed) {
    bool e = false;
    std::string data = c.recv_some(&e);
    if (data.empty()) {
      closed = true;
      if (p.finish_on_eof()) {
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
  if (eof) {
    if (closed) {
      *eof = true;
    } else {
      bool e = false;
      std::string more = c.recv_some(&e);
      *eof = more.empty() && e;
    }
  }
  return out;
}

}  // namespace proto_test
