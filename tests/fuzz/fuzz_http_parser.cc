// libFuzzer target: the HTTP/1.1 parser. The input is parsed whole and again in pieces whose
// sizes come from the input; both runs must report the same events (bodies merged), need_more
// must consume all input, and every view must stay valid (each piece is a fresh allocation, so
// a stale view trips ASan).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "evnet/http/parser.h"

namespace {

using transcript = std::vector<std::pair<char, std::string>>;

void add(transcript& t, char kind, std::string_view text) {
  // Body bytes may be cut at different places; merge consecutive body records.
  if (kind == 'B' && !t.empty() && t.back().first == 'B') {
    t.back().second.append(text);
    return;
  }
  t.emplace_back(kind, std::string(text));
}

transcript run(evnet::http::parser::kind kind, std::string_view data, std::size_t split) {
  evnet::http::parser_limits limits;
  limits.max_head_bytes = 1024;
  limits.max_target_bytes = 256;
  limits.max_headers = 16;
  limits.max_body_bytes = 4096;
  evnet::http::parser p(kind, limits);
  transcript log;
  std::size_t pos = 0, step = 0;
  while (pos < data.size()) {
    std::size_t n = split == 0 ? data.size() : 1 + (step++ * 7) % split;
    if (n > data.size() - pos) {
      n = data.size() - pos;
    }
    std::string piece(data.substr(pos, n));
    pos += n;
    std::string_view in = piece;
    for (;;) {
      auto s = p.parse(in);
      if (s.consumed > in.size()) {
        std::abort();
      }
      in.remove_prefix(s.consumed);
      if (s.event == evnet::http::parse_event::need_more) {
        if (!in.empty()) {
          std::abort();
        }
        break;
      }
      if (s.event == evnet::http::parse_event::error) {
        add(log, 'E', std::to_string(p.error_status()));
        return log;
      }
      if (s.event == evnet::http::parse_event::head) {
        const auto& m = p.message();
        std::string h = std::string(m.method_text) + " " + std::string(m.target) + " " +
                        std::to_string(m.status) + " " + std::to_string(m.keep_alive);
        for (const auto& f : m.headers) {
          h += "|" + std::string(f.name) + ":" + std::string(f.value);
        }
        add(log, 'H', h);
      } else if (s.event == evnet::http::parse_event::body) {
        add(log, 'B', s.body);
      } else {
        std::string t;
        for (const auto& f : p.message().trailers) {
          t += std::string(f.name) + ":" + std::string(f.value);
        }
        add(log, 'D', t);
      }
    }
  }
  return log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  auto kind =
      (data[0] & 1) ? evnet::http::parser::kind::response : evnet::http::parser::kind::request;
  std::size_t split = 1 + (data[0] >> 1) % 16;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (run(kind, in, 0) != run(kind, in, split)) {
    std::abort();
  }
  return 0;
}
