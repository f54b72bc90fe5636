// Framing decoders: how fast line_decoder and length_field_decoder split a buffer into frames.
//
// Each iteration decodes every frame of a 64 KiB buffer, consuming as on_traffic would.
// "split" rows present the buffer as two halves cut in the middle of a frame (a wrapped ring
// buffer); only the one straddling frame per pass needs a copy. items/s = frames/s.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "evnet/framing.h"

namespace {

constexpr std::size_t kBuffer = std::size_t{64} * 1024;

std::string make_lines(std::size_t line_size) {
  std::string s;
  while (s.size() + line_size + 1 <= kBuffer) {
    s.append(line_size, 'x');
    s.push_back('\n');
  }
  return s;
}

std::string make_length_frames(std::size_t body_size) {
  std::string s;
  const std::string body(body_size, 'y');
  evnet::length_field_options o;
  while (s.size() + body_size + 4 <= kBuffer) {
    (void)evnet::encode_length_prefixed(o, std::as_bytes(std::span(body)), s);
  }
  return s;
}

template <class Decoder>
void run(benchmark::State& state, Decoder& d, const std::string& data, bool split) {
  const auto all = std::as_bytes(std::span(data));
  const std::size_t cut = split ? data.size() / 2 + 3 : data.size();
  std::string scratch;
  std::size_t frames = 0;
  for (auto _ : state) {
    evnet::input_view in{all.first(cut), all.subspan(cut)};
    for (;;) {
      auto r = d.decode(in);
      if (!r || !*r) {
        break;
      }
      auto text = (*r)->text(scratch);
      benchmark::DoNotOptimize(text.data());
      const std::size_t used = (*r)->consumed;
      in = in.subview(used, in.size() - used);
      ++frames;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(frames));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * data.size()));
}

void line_decode(benchmark::State& state) {
  const std::string data = make_lines(static_cast<std::size_t>(state.range(0)));
  evnet::line_decoder d;
  run(state, d, data, state.range(1) != 0);
}
BENCHMARK(line_decode)->ArgsProduct({{16, 64, 1024}, {0, 1}})->ArgNames({"line", "split"});

void length_decode(benchmark::State& state) {
  const std::string data = make_length_frames(static_cast<std::size_t>(state.range(0)));
  evnet::length_field_decoder d;
  run(state, d, data, state.range(1) != 0);
}
BENCHMARK(length_decode)->ArgsProduct({{16, 64, 1024}, {0, 1}})->ArgNames({"body", "split"});

}  // namespace

BENCHMARK_MAIN();
