// Tests of evnet/framing.h: line and length-field decoders fed whole, byte by byte, and in random
// chunks whose buffered bytes are presented split at random points across two separate buffers
// (as a ring buffer's two halves are), plus encoders and a randomized round trip.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "evnet/framing.h"

namespace evnet {
namespace {

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// How a stream is delivered and how the buffered bytes are split into the view's two halves.
struct feed_plan {
  enum class chunks { whole, byte_by_byte, random } chunking = chunks::whole;
  // -1: split at a random point on each decode call; otherwise split at min(split, size).
  long split = -1;
  std::uint32_t seed = 1;
};

struct feed_result {
  std::vector<std::string> frames;
  std::error_code error;
  std::size_t left_over = 0;  // Buffered bytes not consumed at the end.
};

// Simulates a connection: bytes arrive in chunks into `buffered`; after each arrival the decoder
// is called until it needs more input, each time on a view whose halves live in two distinct heap
// blocks, so reading past a half is caught by ASan.
template <class Decoder>
feed_result feed(Decoder& decoder, const std::string& stream, const feed_plan& plan) {
  std::mt19937 rng(plan.seed);
  feed_result out;
  std::string buffered;
  std::size_t pos = 0;
  while (pos < stream.size()) {
    std::size_t n = stream.size() - pos;
    if (plan.chunking == feed_plan::chunks::byte_by_byte) {
      n = 1;
    }
    if (plan.chunking == feed_plan::chunks::random) {
      n = std::min<std::size_t>(n, 1 + rng() % 64);
    }
    buffered.append(stream, pos, n);
    pos += n;
    for (;;) {
      std::size_t k = plan.split < 0 ? rng() % (buffered.size() + 1)
                                     : std::min<std::size_t>(plan.split, buffered.size());
      // Separate allocations for the two halves (never empty vectors' null data for memcpy).
      std::vector<std::byte> a(k), b(buffered.size() - k);
      if (k) {
        std::memcpy(a.data(), buffered.data(), k);
      }
      if (!b.empty()) {
        std::memcpy(b.data(), buffered.data() + k, b.size());
      }
      input_view view{std::span<const std::byte>(a), std::span<const std::byte>(b)};
      auto r = decoder.decode(view);
      if (!r) {
        out.error = r.error();
        out.left_over = buffered.size();
        return out;
      }
      if (!*r) {
        break;
      }
      const frame& f = **r;
      EXPECT_LE(f.consumed, buffered.size());
      EXPECT_GT(f.consumed, 0u);
      std::string scratch;
      out.frames.emplace_back(f.text(scratch));
      // A contiguous payload must be zero-copy: a span into one of the input halves.
      if (f.contiguous() && !f.payload.first.empty()) {
        const std::byte* p = f.payload.first.data();
        const bool in_a = !a.empty() && p >= a.data() && p < a.data() + a.size();
        const bool in_b = !b.empty() && p >= b.data() && p < b.data() + b.size();
        EXPECT_TRUE(in_a || in_b) << "contiguous payload was copied";
      }
      buffered.erase(0, f.consumed);
    }
  }
  out.left_over = buffered.size();
  return out;
}

// Runs `check` for the stream delivered in every way we care about: whole with every split
// point, byte by byte with random splits, and random chunks with random splits (several seeds).
template <class MakeDecoder>
void for_every_feeding(const std::string& stream, MakeDecoder make,
                       const std::function<void(const feed_result&, const std::string&)>& check) {
  for (std::size_t split = 0; split <= stream.size(); ++split) {
    auto d = make();
    check(feed(d, stream, {feed_plan::chunks::whole, static_cast<long>(split), 1}),
          "whole, split at " + std::to_string(split));
  }
  for (std::uint32_t seed = 1; seed <= 4; ++seed) {
    auto d1 = make();
    check(feed(d1, stream, {feed_plan::chunks::byte_by_byte, -1, seed}),
          "byte by byte, seed " + std::to_string(seed));
    auto d2 = make();
    check(feed(d2, stream, {feed_plan::chunks::random, -1, seed}),
          "random chunks, seed " + std::to_string(seed));
  }
}

void expect_frames(const std::string& stream, const std::function<line_decoder()>& make,
                   const std::vector<std::string>& want, std::size_t left_over = 0) {
  for_every_feeding(stream, make, [&](const feed_result& r, const std::string& how) {
    EXPECT_FALSE(r.error) << how << ": " << r.error.message();
    EXPECT_EQ(r.frames, want) << how;
    EXPECT_EQ(r.left_over, left_over) << how;
  });
}

line_decoder lines(line_delimiter d, std::size_t max = std::size_t{64} * 1024, bool strip = true) {
  return line_decoder(line_options{d, max, strip});
}

// ---- input_view / frame helpers --------------------------------------------------------------

TEST(framing, input_view_subview_and_copy) {
  std::string a = "hello ", b = "world";
  input_view v{bytes_of(a), bytes_of(b)};
  EXPECT_EQ(v.size(), 11u);
  EXPECT_EQ(v[6], std::byte{'w'});
  auto s = v.subview(4, 4);  // "o wo", straddling
  EXPECT_EQ(s.first.size(), 2u);
  EXPECT_EQ(s.second.size(), 2u);
  auto t = v.subview(7, 3);  // "orl", entirely in the second half, presented as first
  EXPECT_EQ(t.first.size(), 3u);
  EXPECT_TRUE(t.second.empty());
  std::byte out[5];
  v.copy_to(3, out);
  EXPECT_EQ(std::memcmp(out, "lo wo", 5), 0);
  frame f{s, 0};
  std::string scratch;
  EXPECT_FALSE(f.contiguous());
  EXPECT_EQ(f.text(scratch), "o wo");
  std::vector<std::byte> vs;
  auto bs = f.bytes(vs);
  EXPECT_EQ(bs.size(), 4u);
  EXPECT_EQ(bs.data(), vs.data());
  frame g{t, 0};
  EXPECT_EQ(g.bytes(vs).data(), t.first.data()) << "contiguous payload must not be copied";
  EXPECT_EQ(input_view::of("abc").size(), 3u);
}

// ---- line_decoder ----------------------------------------------------------------------------

// SIZE_MAX as the maximum ("no limit") must not wrap the search limit to 0, which rejected
// every line.
TEST(framing, line_max_length_of_size_max_means_no_limit) {
  for (std::size_t max : {SIZE_MAX, SIZE_MAX - 1}) {
    expect_frames("hello\nworld\n", [max] { return lines(line_delimiter::lf, max); },
                  {"hello", "world"});
    expect_frames("hello\r\nworld\r\n", [max] { return lines(line_delimiter::crlf, max); },
                  {"hello", "world"});
    expect_frames("hello\r\nworld\n", [max] { return lines(line_delimiter::lf_or_crlf, max); },
                  {"hello", "world"});
  }
}

// An offset so large that offset + field size would wrap is refused as invalid.
TEST(framing, length_field_offset_that_would_wrap_is_invalid) {
  length_field_options o;
  o.length_field_size = 4;
  o.length_field_offset = SIZE_MAX - 1;
  EXPECT_EQ(o.validate(), make_error_code(errc::invalid_argument));
  o.length_field_offset = 3;
  EXPECT_FALSE(o.validate());
}

TEST(framing, line_lf_basic) {
  expect_frames("hello\nworld\n", [] { return lines(line_delimiter::lf); }, {"hello", "world"});
}

TEST(framing, line_lf_keeps_carriage_return) {
  expect_frames("a\r\nb\n", [] { return lines(line_delimiter::lf); }, {"a\r", "b"});
}

TEST(framing, line_crlf_bare_lf_is_content) {
  expect_frames("a\nb\r\nc\r\n\r\n", [] { return lines(line_delimiter::crlf); }, {"a\nb", "c", ""});
}

TEST(framing, line_lf_or_crlf_strips_both) {
  expect_frames("a\r\nb\n\r\n", [] { return lines(line_delimiter::lf_or_crlf); }, {"a", "b", ""});
}

TEST(framing, line_empty_lines) {
  expect_frames("\n\n\n", [] { return lines(line_delimiter::lf); }, {"", "", ""});
}

TEST(framing, line_partial_waits) {
  expect_frames(
      "one\ntwo", [] { return lines(line_delimiter::lf); }, {"one"}, 3);
  expect_frames(
      "one\r\ntwo\r", [] { return lines(line_delimiter::crlf); }, {"one"}, 4);
}

TEST(framing, line_keep_delimiter) {
  expect_frames("x\r\ny\n", [] { return lines(line_delimiter::lf_or_crlf, 100, false); },
                {"x\r\n", "y\n"});
}

TEST(framing, line_consumed_counts_delimiter) {
  auto d = lines(line_delimiter::crlf);
  auto r = d.decode(input_view::of("ab\r\ncd"));
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->consumed, 4u);
  EXPECT_EQ((*r)->payload.size(), 2u);
}

TEST(framing, line_crlf_split_between_cr_and_lf) {
  std::string a = "abc\r", b = "\n";
  auto d = lines(line_delimiter::crlf);
  auto partial = d.decode({bytes_of(a), {}});
  ASSERT_TRUE(partial);
  EXPECT_FALSE(*partial);
  auto r = d.decode({bytes_of(a), bytes_of(b)});
  ASSERT_TRUE(r && *r);
  std::string s;
  EXPECT_EQ((*r)->text(s), "abc");
  EXPECT_TRUE((*r)->contiguous());
  EXPECT_EQ((*r)->consumed, 5u);
}

TEST(framing, line_max_length_exact_is_accepted) {
  expect_frames("abcd\n", [] { return lines(line_delimiter::lf, 4); }, {"abcd"});
  expect_frames("abcd\r\n", [] { return lines(line_delimiter::crlf, 4); }, {"abcd"});
  expect_frames("abcd\r\n", [] { return lines(line_delimiter::lf_or_crlf, 4); }, {"abcd"});
  expect_frames("abc\r\n", [] { return lines(line_delimiter::lf, 4); }, {"abc\r"});
}

TEST(framing, line_too_long_is_an_error) {
  for (auto [delim, stream] :
       {std::pair{line_delimiter::lf, std::string("abcde\n")},
        std::pair{line_delimiter::crlf, std::string("abcde\r\n")},
        std::pair{line_delimiter::lf_or_crlf, std::string("abcde\n")},
        std::pair{line_delimiter::lf_or_crlf, std::string("abcde\r\n")},
        std::pair{line_delimiter::lf, std::string("ok\nabcdefghijklmnop")}}) {
    for_every_feeding(
        stream, [delim = delim] { return lines(delim, 4); },
        [](const feed_result& r, const std::string& how) {
          EXPECT_EQ(r.error, errc::frame_too_large) << how;
        });
  }
}

TEST(framing, line_too_long_detected_without_delimiter) {
  // An endless line must fail once max + delimiter bytes are buffered, not wait forever.
  auto d = lines(line_delimiter::lf, 4);
  auto r4 = d.decode(input_view::of("abcd"));
  ASSERT_TRUE(r4);
  EXPECT_FALSE(*r4);
  EXPECT_EQ(d.decode(input_view::of("abcde")).error(), errc::frame_too_large);
  auto c = lines(line_delimiter::crlf, 4);
  auto r5 = c.decode(input_view::of("abcd\r"));
  ASSERT_TRUE(r5);
  EXPECT_FALSE(*r5) << R"("abcd\r" may still become a valid 4-byte line)";
  EXPECT_EQ(c.decode(input_view::of("abcdef")).error(), errc::frame_too_large);
}

TEST(framing, line_reset_forgets_scan_position) {
  auto d = lines(line_delimiter::lf);
  auto r = d.decode(input_view::of("abcdef"));
  ASSERT_TRUE(r && !*r);
  d.reset();
  auto s = d.decode(input_view::of("x\n"));
  ASSERT_TRUE(s && *s);
  std::string scratch;
  EXPECT_EQ((*s)->text(scratch), "x");
}

// ---- length_field_decoder --------------------------------------------------------------------

length_field_options lf_opts(std::size_t size, byte_order order) {
  length_field_options o;
  o.length_field_size = size;
  o.order = order;
  return o;
}

std::string encode_all(const length_field_options& o, const std::vector<std::string>& bodies) {
  std::string out;
  for (const auto& b : bodies) {
    EXPECT_FALSE(encode_length_prefixed(o, bytes_of(b), out));
  }
  return out;
}

TEST(framing, length_field_header_bytes) {
  std::string body(0x0102, 'q');
  std::string be, le;
  ASSERT_FALSE(encode_length_prefixed(lf_opts(2, byte_order::big), bytes_of(body), be));
  ASSERT_FALSE(encode_length_prefixed(lf_opts(2, byte_order::little), bytes_of(body), le));
  EXPECT_EQ(be.substr(0, 2), std::string("\x01\x02", 2));
  EXPECT_EQ(le.substr(0, 2), std::string("\x02\x01", 2));
  std::string be8;
  ASSERT_FALSE(encode_length_prefixed(lf_opts(8, byte_order::big), bytes_of("abc"), be8));
  EXPECT_EQ(be8, std::string("\0\0\0\0\0\0\0\x03"
                             "abc",
                             11));
  std::string le4;
  ASSERT_FALSE(encode_length_prefixed(lf_opts(4, byte_order::little), bytes_of("ab"), le4));
  EXPECT_EQ(le4, std::string("\x02\0\0\0"
                             "ab",
                             6));
}

TEST(framing, length_field_every_size_and_order) {
  const std::vector<std::string> bodies = {"", "a", std::string(200, 'b'), "with\nnewline",
                                           std::string(1, '\0')};
  for (std::size_t size : {1u, 2u, 4u, 8u}) {
    for (auto order : {byte_order::big, byte_order::little}) {
      const auto o = lf_opts(size, order);
      const std::string stream = encode_all(o, bodies);
      for_every_feeding(
          stream, [&] { return length_field_decoder(o); },
          [&](const feed_result& r, const std::string& how) {
            EXPECT_FALSE(r.error) << size << "-byte " << how;
            EXPECT_EQ(r.frames, bodies) << size << "-byte " << how;
            EXPECT_EQ(r.left_over, 0u) << how;
          });
    }
  }
}

TEST(framing, length_field_offset_adjustment_and_no_strip) {
  // [magic 2 bytes][2-byte length counting the whole frame][body]
  length_field_options o;
  o.length_field_offset = 2;
  o.length_field_size = 2;
  o.length_adjustment = -4;
  o.strip_header = false;
  std::string f1 = std::string("\xCA\xFE\x00\x07", 4) + "abc";
  std::string f2 = std::string("\xCA\xFE\x00\x04", 4);
  std::string stream = f1 + f2 + std::string("\xCA\xFE\x00", 3);
  for_every_feeding(
      stream, [&] { return length_field_decoder(o); },
      [&](const feed_result& r, const std::string& how) {
        EXPECT_FALSE(r.error) << how;
        EXPECT_EQ(r.frames, (std::vector<std::string>{f1, f2})) << how;
        EXPECT_EQ(r.left_over, 3u) << how;
      });
  // The encoder writes the same layout (the magic is the caller's to fill; here it is zero).
  std::string enc;
  ASSERT_FALSE(encode_length_prefixed(o, bytes_of("abc"), enc));
  EXPECT_EQ(enc, std::string("\0\0\x00\x07", 4) + "abc");
  // With strip_header the payload is the body only.
  o.strip_header = true;
  length_field_decoder d(o);
  auto r = d.decode(input_view::of(f1));
  ASSERT_TRUE(r && *r);
  std::string s;
  EXPECT_EQ((*r)->text(s), "abc");
  EXPECT_EQ((*r)->consumed, 7u);
}

TEST(framing, length_field_too_large_detected_from_header_alone) {
  length_field_options o;
  o.max_frame_size = 10;
  length_field_decoder d(o);
  // Header announces 100 bytes; only the header is buffered: fail now, do not wait for 100 bytes.
  EXPECT_EQ(d.decode(input_view::of(std::string("\0\0\0\x64", 4))).error(), errc::frame_too_large);
  // 6 bytes of body + 4 of header = 10: accepted.
  auto ok =
      d.decode(input_view::of(std::string("\0\0\0\x06"
                                          "abcdef",
                                          10)));
  ASSERT_TRUE(ok && *ok);
  // 7 + 4 = 11: too large.
  EXPECT_EQ(d.decode(input_view::of(std::string("\0\0\0\x07", 4))).error(), errc::frame_too_large);
  for_every_feeding(
      std::string("\0\0\0\x01"
                  "x"
                  "\0\0\0\x64",
                  9),
      [&] { return length_field_decoder(o); },
      [](const feed_result& r, const std::string& how) {
        EXPECT_EQ(r.error, errc::frame_too_large) << how;
        EXPECT_EQ(r.frames, std::vector<std::string>{"x"}) << how;
      });
}

TEST(framing, length_field_huge_and_negative_lengths) {
  length_field_options o = lf_opts(8, byte_order::big);
  o.max_frame_size = std::numeric_limits<std::size_t>::max();
  length_field_decoder d(o);
  EXPECT_EQ(d.decode(input_view::of(std::string(8, '\xff'))).error(), errc::frame_too_large);
  // INT64_MAX plus a positive adjustment overflows: reported, not wrapped around.
  o.length_adjustment = 1;
  EXPECT_EQ(length_field_decoder(o)
                .decode(input_view::of(std::string("\x7f\xff\xff\xff\xff\xff\xff\xff", 8)))
                .error(),
            errc::frame_too_large);
  length_field_options neg;
  neg.length_adjustment = -4;  // The length counts the 4-byte header, so it must be >= 4.
  EXPECT_EQ(length_field_decoder(neg).decode(input_view::of(std::string("\0\0\0\x03", 4))).error(),
            errc::protocol_error);
}

TEST(framing, length_field_invalid_size) {
  length_field_options o;
  o.length_field_size = 3;
  EXPECT_EQ(o.validate(), errc::invalid_argument);
  EXPECT_EQ(length_field_decoder(o).decode(input_view::of("abcd")).error(), errc::invalid_argument);
  std::string out = "keep";
  EXPECT_EQ(encode_length_prefixed(o, bytes_of("x"), out), errc::invalid_argument);
  EXPECT_EQ(out, "keep");
}

TEST(framing, encode_rejects_unrepresentable_lengths) {
  std::string out = "keep";
  EXPECT_EQ(
      encode_length_prefixed(lf_opts(1, byte_order::big), bytes_of(std::string(256, 'x')), out),
      errc::frame_too_large);
  EXPECT_EQ(out, "keep");
  EXPECT_FALSE(
      encode_length_prefixed(lf_opts(1, byte_order::big), bytes_of(std::string(255, 'x')), out));
  EXPECT_EQ(out.size(), 4u + 1 + 255);
  length_field_options small;
  small.max_frame_size = 8;
  std::vector<std::byte> v;
  EXPECT_EQ(encode_length_prefixed(small, bytes_of("12345"), v), errc::frame_too_large);
  EXPECT_TRUE(v.empty());
  EXPECT_FALSE(encode_length_prefixed(small, bytes_of("1234"), v));
  EXPECT_EQ(v.size(), 8u);
  std::byte tiny[2];
  EXPECT_EQ(encode_length_header(length_field_options{}, 1, tiny), errc::invalid_argument);
}

TEST(framing, encode_line_checks_content) {
  std::string out;
  EXPECT_FALSE(encode_line("abc", line_delimiter::lf, out));
  EXPECT_FALSE(encode_line("a\nb", line_delimiter::crlf, out));
  EXPECT_FALSE(encode_line("c\r", line_delimiter::crlf, out));
  EXPECT_EQ(out, "abc\na\nb\r\nc\r\r\n");
  EXPECT_EQ(encode_line("a\nb", line_delimiter::lf, out), errc::invalid_argument);
  EXPECT_EQ(encode_line("a\r\nb", line_delimiter::crlf, out), errc::invalid_argument);
  EXPECT_EQ(encode_line("a\r", line_delimiter::lf_or_crlf, out), errc::invalid_argument);
  EXPECT_EQ(out, "abc\na\nb\r\nc\r\r\n");
  // What was encoded decodes back.
  expect_frames("a\nb\r\nc\r\r\n", [] { return lines(line_delimiter::crlf); }, {"a\nb", "c\r"});
}

// ---- randomized round trips ------------------------------------------------------------------

std::string random_bytes(std::mt19937& rng, std::size_t n, std::string_view alphabet) {
  std::string s(n, '\0');
  for (auto& c : s) {
    c = alphabet[rng() % alphabet.size()];
  }
  return s;
}

TEST(framing, randomized_length_field_round_trip) {
  const std::string alphabet(std::string("\0\x01\xff\n\rab", 7));
  for (std::uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    length_field_options o;
    o.length_field_size = std::size_t{1} << (rng() % 4);
    o.order = rng() % 2 ? byte_order::big : byte_order::little;
    o.length_field_offset = rng() % 3;
    o.length_adjustment = -static_cast<std::int64_t>(rng() % 2 ? o.header_size() : 0);
    const std::size_t max_body = o.length_field_size == 1 ? 200 : 600;
    std::vector<std::string> bodies(1 + rng() % 20);
    for (auto& b : bodies) {
      b = random_bytes(rng, rng() % max_body, alphabet);
    }
    const std::string stream = encode_all(o, bodies);
    length_field_decoder d(o);
    auto r = feed(d, stream, {feed_plan::chunks::random, -1, seed});
    ASSERT_FALSE(r.error) << "seed " << seed << ": " << r.error.message();
    ASSERT_EQ(r.frames, bodies) << "seed " << seed;
    ASSERT_EQ(r.left_over, 0u) << "seed " << seed;
  }
}

TEST(framing, randomized_line_round_trip) {
  for (std::uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    const auto delim = static_cast<line_delimiter>(rng() % 3);
    // Content alphabets each delimiter can carry: crlf lines may hold bare '\n' and '\r'.
    const std::string_view alphabet = delim == line_delimiter::crlf ? "ab\n\r " : "ab\r ";
    std::vector<std::string> lines_in(1 + rng() % 30);
    std::string stream;
    for (auto& l : lines_in) {
      do {
        l = random_bytes(rng, rng() % 120, alphabet);
      } while (encode_line(l, delim, stream));
    }
    line_decoder d(line_options{delim, 120, true});
    auto r = feed(d, stream, {feed_plan::chunks::random, -1, seed});
    ASSERT_FALSE(r.error) << "seed " << seed << ": " << r.error.message();
    ASSERT_EQ(r.frames, lines_in) << "seed " << seed;
    ASSERT_EQ(r.left_over, 0u) << "seed " << seed;
  }
}

}  // namespace
}  // namespace evnet
