// libFuzzer target: the WebSocket reader (frames → messages), with and without
// permessage-deflate. The input is read whole and in pieces; both runs must agree, and
// need_more must consume all input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "evnet/ws/deflate.h"
#include "evnet/ws/frame.h"

namespace {

using transcript = std::vector<std::pair<int, std::string>>;

transcript run(const std::uint8_t* data, std::size_t size, std::uint8_t flags, std::size_t split) {
  evnet::ws::reader_config cfg;
  cfg.role = (flags & 1) ? evnet::ws::role::client : evnet::ws::role::server;
  cfg.max_frame_bytes = 1 << 16;
  cfg.max_message_bytes = 1 << 17;
  evnet::ws::reader r(cfg);
  evnet::ws::inflater inf(15, (flags & 4) != 0);
  if (flags & 2) {
    r.set_inflater(&inf);
  }
  transcript log;
  std::size_t pos = 0, step = 0;
  while (pos < size) {
    std::size_t n = split == 0 ? size : 1 + (step++ * 5) % split;
    if (n > size - pos) {
      n = size - pos;
    }
    std::vector<char> piece(data + pos, data + pos + n);
    pos += n;
    std::span<char> in(piece);
    for (;;) {
      auto s = r.next(in);
      if (s.consumed > in.size()) {
        std::abort();
      }
      in = in.subspan(s.consumed);
      if (s.event == evnet::ws::read_event::need_more) {
        if (!in.empty()) {
          std::abort();
        }
        break;
      }
      std::string text(s.data);
      if (s.event == evnet::ws::read_event::close || s.event == evnet::ws::read_event::error) {
        text = std::to_string(s.code) + ":" + std::string(s.reason);
      }
      log.emplace_back(static_cast<int>(s.event) * 16 + static_cast<int>(s.type), text);
      if (s.event == evnet::ws::read_event::error) {
        return log;
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
  std::uint8_t flags = data[0];
  std::size_t split = 1 + (flags >> 3) % 16;
  if (run(data + 1, size - 1, flags, 0) != run(data + 1, size - 1, flags, split)) {
    std::abort();
  }
  return 0;
}
