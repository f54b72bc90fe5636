// libFuzzer target: the permessage-deflate inflater under a size limit (compression bombs,
// corrupt streams, context takeover across messages), plus a deflate → inflate round trip of
// the input that must give the input back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "evnet/ws/deflate.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  bool no_takeover = data[0] & 1;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  constexpr std::uint64_t kLimit = 1 << 20;

  // Arbitrary bytes as two consecutive compressed messages sharing one context.
  evnet::ws::inflater inf(15, no_takeover);
  std::size_t cut = in.size() / 2;
  for (std::string_view msg : {in.substr(0, cut), in.substr(cut)}) {
    std::string out;
    auto r = inf.inflate_message(msg, out, kLimit);
    if (out.size() > kLimit + 1) {
      std::abort();
    }
    if (r != evnet::ws::inflate_result::ok) {
      break;
    }
  }

  // Round trip.
  evnet::ws::deflater d(9 + data[0] % 7, no_takeover);
  evnet::ws::inflater back(15, no_takeover);
  for (int k = 0; k < 2; ++k) {
    std::string c, out;
    if (!d.deflate_message(in, c)) {
      std::abort();
    }
    if (back.inflate_message(c, out, kLimit) != evnet::ws::inflate_result::ok) {
      std::abort();
    }
    if (out != in) {
      std::abort();
    }
  }
  return 0;
}
