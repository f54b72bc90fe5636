// WebSocket codecs: handshake, UTF-8, frame reader/writer and permessage-deflate. Every reader
// case is re-fed whole, byte by byte, in random splits and at every two-way split.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "evnet/http/parser.h"
#include "evnet/ws/deflate.h"
#include "evnet/ws/frame.h"
#include "evnet/ws/handshake.h"
#include "evnet/ws/utf8.h"
#include "proto_test_util.h"

namespace ws = evnet::ws;
namespace http = evnet::http;

namespace {

// A frame as a peer would send it. `mask` = the client role.
std::string frame(ws::opcode op, std::string_view payload, bool fin = true, bool mask = true,
                  bool rsv1 = false) {
  std::string out;
  ws::append_frame(out, op, payload, mask, fin, rsv1);
  return out;
}

std::string raw_frame(unsigned char b0, unsigned char b1_len, std::string_view payload,
                      bool mask = true) {
  std::string out;
  out.push_back(static_cast<char>(b0));
  out.push_back(static_cast<char>((mask ? 0x80 : 0) | b1_len));
  const std::uint8_t key[4] = {1, 2, 3, 4};
  if (mask) {
    out.append(reinterpret_cast<const char*>(key), 4);
  }
  std::size_t start = out.size();
  out.append(payload);
  if (mask) {
    ws::apply_mask(out.data() + start, payload.size(), key);
  }
  return out;
}

std::string close_payload(std::uint16_t code, std::string_view reason) {
  std::string p;
  p.push_back(static_cast<char>(code >> 8));
  p.push_back(static_cast<char>(code & 0xFF));
  p.append(reason);
  return p;
}

// Runs the reader over `chunks` and returns a log like {"text:hello", "ping:x", "error:1002"}.
std::vector<std::string> run(ws::reader& r, const std::vector<std::string>& chunks) {
  std::vector<std::string> log;
  for (const auto& c : chunks) {
    std::vector<char> buf(c.begin(), c.end());
    std::span<char> in(buf);
    for (;;) {
      ws::read_step s = r.next(in);
      EXPECT_LE(s.consumed, in.size());
      in = in.subspan(s.consumed);
      switch (s.event) {
        case ws::read_event::need_more:
          EXPECT_TRUE(in.empty());
          goto next_chunk;
        case ws::read_event::message:
          log.push_back((s.type == ws::opcode::text ? "text:" : "binary:") + std::string(s.data));
          break;
        case ws::read_event::ping:
          log.push_back("ping:" + std::string(s.data));
          break;
        case ws::read_event::pong:
          log.push_back("pong:" + std::string(s.data));
          break;
        case ws::read_event::close:
          log.push_back("close:" + std::to_string(s.code) + ":" + std::string(s.reason));
          break;
        case ws::read_event::error:
          log.push_back("error:" + std::to_string(s.code));
          return log;
      }
    }
  next_chunk:;
  }
  return log;
}

std::vector<std::vector<std::string>> splits_of(const std::string& s) {
  std::vector<std::vector<std::string>> all;
  all.push_back({s});
  std::vector<std::string> bytes;
  for (char c : s) {
    bytes.emplace_back(1, c);
  }
  all.push_back(bytes);
  std::mt19937 rng(7);
  for (int r = 0; r < 20; ++r) {
    std::vector<std::string> parts;
    for (std::size_t i = 0; i < s.size();) {
      std::size_t n = std::uniform_int_distribution<std::size_t>(1, 23)(rng);
      parts.push_back(s.substr(i, n));
      i += n;
    }
    all.push_back(parts);
  }
  if (s.size() < 4096) {
    for (std::size_t i = 1; i < s.size(); ++i) {
      all.push_back({s.substr(0, i), s.substr(i)});
    }
  }
  return all;
}

std::vector<std::string> read_all(const std::string& input, ws::reader_config cfg = {},
                                  bool with_inflater = false) {
  std::vector<std::string> expect;
  bool first = true;
  for (const auto& parts : splits_of(input)) {
    ws::inflater inf(15, false);
    ws::reader r(cfg);
    if (with_inflater) {
      r.set_inflater(&inf);
    }
    auto got = run(r, parts);
    if (first) {
      expect = got;
      first = false;
    } else {
      EXPECT_EQ(got, expect) << "split into " << parts.size() << " parts differs";
      if (got != expect) {
        break;
      }
    }
  }
  return expect;
}

using log_t = std::vector<std::string>;

TEST(ws_handshake, accept_key_matches_rfc_example) {
  auto a = ws::accept_key("dGhlIHNhbXBsZSBub25jZQ==");
  EXPECT_EQ(std::string(a.data(), a.size()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(ws_handshake, key_format) {
  EXPECT_TRUE(ws::is_valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
  EXPECT_FALSE(ws::is_valid_key("dGhlIHNhbXBsZSBub25jZQ="));
  EXPECT_FALSE(ws::is_valid_key("dGhlIHNhbXBsZSBub25jZR=="));  // non-zero padding bits
  EXPECT_FALSE(ws::is_valid_key("dGhlIHNhbXBsZSBub2!jZQ=="));
  EXPECT_FALSE(ws::is_valid_key(""));
  std::string k = ws::generate_key();
  EXPECT_TRUE(ws::is_valid_key(k)) << k;
  EXPECT_NE(k, ws::generate_key());
}

struct upgrade_case {
  const char* name;
  std::string request;
  int status;
};

TEST(ws_handshake, check_upgrade_table) {
  const std::string ok_headers =
      "Host: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
  std::vector<upgrade_case> cases = {
      {"ok", "GET /chat HTTP/1.1\r\n" + ok_headers + "Sec-WebSocket-Version: 13\r\n\r\n", 0},
      {"post", "POST /chat HTTP/1.1\r\n" + ok_headers + "Sec-WebSocket-Version: 13\r\n\r\n", 400},
      {"version_8", "GET / HTTP/1.1\r\n" + ok_headers + "Sec-WebSocket-Version: 8\r\n\r\n", 426},
      {"no_version", "GET / HTTP/1.1\r\n" + ok_headers + "\r\n", 426},
      {"no_upgrade",
       "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
       "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"no_connection_token",
       "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"bad_key",
       "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
       400},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    http::request_parser p;
    ASSERT_EQ(p.parse(c.request).event, http::parse_event::head);
    auto r = ws::check_upgrade(p.message());
    EXPECT_EQ(r.status, c.status);
    if (c.status == 0) {
      EXPECT_EQ(r.key, "dGhlIHNhbXBsZSBub25jZQ==");
    } else {
      EXPECT_FALSE(r.reason.empty());
    }
  }
}

TEST(ws_handshake, response_round_trips_through_client_check) {
  std::string key = ws::generate_key();
  std::string req;
  ws::write_client_request(req, "example.com:80", "/chat", key, "chat, superchat",
                           ws::deflate_offer());
  http::request_parser rp;
  ASSERT_EQ(rp.parse(req).event, http::parse_event::head);
  auto chk = ws::check_upgrade(rp.message());
  ASSERT_EQ(chk.status, 0) << chk.reason;
  std::string resp;
  ws::write_upgrade_response(resp, chk.key, "chat", "permessage-deflate");
  http::response_parser p;
  ASSERT_EQ(p.parse(resp).event, http::parse_event::head);
  EXPECT_EQ(ws::check_server_response(p.message(), key), "");
  EXPECT_EQ(p.message().header("sec-websocket-protocol"), "chat");
  EXPECT_NE(ws::check_server_response(p.message(), ws::generate_key()), "");
}

// RFC 6455 §11.3: Sec-WebSocket-Key and Sec-WebSocket-Version MUST NOT appear more than once in
// a request, Sec-WebSocket-Accept and Sec-WebSocket-Protocol not more than once in a response.
// Only the first field was read, so a second one (a second key a front end may have checked
// instead, a second accept or subprotocol) passed unseen; Python's websockets refuses each
// ("multiple values"). The server answers 400 now, and the client fails the handshake.
TEST(ws_handshake, fields_allowed_once_are_refused_twice) {
  const std::string key = "dGhlIHNhbXBsZSBub25jZQ==";
  const std::string other = "AQIDBAUGBwgJCgsMDQ4PEA==";
  const std::string head =
      "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  for (const std::string& fields :
       {"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Key: " + other +
            "\r\nSec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Key: " + key + "\r\nsec-websocket-key: " + key +
            "\r\nSec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Key: " + key +
            "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Key: " + key +
            "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 8\r\n"}) {
    SCOPED_TRACE(fields);
    http::request_parser p;
    const std::string req = head + fields + "\r\n";
    ASSERT_EQ(p.parse(req).event, http::parse_event::head);
    auto r = ws::check_upgrade(p.message());
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.reason.find("more than one"), std::string_view::npos) << r.reason;
  }
  const auto accept = ws::accept_key(key);
  const std::string good =
      "Sec-WebSocket-Accept: " + std::string(accept.data(), accept.size()) + "\r\n";
  const std::string rhead =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  struct tcase {
    std::string fields;
    std::string_view expect;
  };
  for (const tcase& t :
       {tcase{good, ""}, tcase{good + "Sec-WebSocket-Protocol: chat\r\n", ""},
        tcase{good + good, "more than one Sec-WebSocket-Accept"},
        tcase{good + "Sec-WebSocket-Accept: x\r\n", "more than one Sec-WebSocket-Accept"},
        tcase{good + "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: evil\r\n",
              "more than one Sec-WebSocket-Protocol"},
        tcase{good + "Sec-WebSocket-Protocol: chat\r\nsec-websocket-protocol: chat\r\n",
              "more than one Sec-WebSocket-Protocol"}}) {
    SCOPED_TRACE(t.fields);
    http::response_parser p;
    const std::string resp = rhead + t.fields + "\r\n";
    ASSERT_EQ(p.parse(resp).event, http::parse_event::head);
    EXPECT_EQ(ws::check_server_response(p.message(), key), t.expect);
  }
}

TEST(ws_handshake, refusal_426_names_version) {
  std::string out;
  ws::write_upgrade_refusal(out, 426, "unsupported version");
  http::response_parser p;
  ASSERT_EQ(p.parse(out).event, http::parse_event::head);
  EXPECT_EQ(p.message().status, 426);
  EXPECT_EQ(p.message().header("Sec-WebSocket-Version"), "13");
  EXPECT_FALSE(p.message().keep_alive);
}

TEST(ws_utf8, valid_and_invalid_sequences) {
  EXPECT_TRUE(ws::is_valid_utf8(""));
  EXPECT_TRUE(ws::is_valid_utf8("plain ascii text that is longer than eight bytes"));
  EXPECT_TRUE(ws::is_valid_utf8("κόσμε"));
  EXPECT_TRUE(ws::is_valid_utf8("\xF0\x9F\x98\x80 emoji"));
  EXPECT_TRUE(ws::is_valid_utf8("\xEF\xBF\xBF"));       // U+FFFF
  EXPECT_TRUE(ws::is_valid_utf8("\xF4\x8F\xBF\xBF"));   // U+10FFFF
  EXPECT_FALSE(ws::is_valid_utf8("\xC0\x80"));          // overlong NUL
  EXPECT_FALSE(ws::is_valid_utf8("\xE0\x80\xAF"));      // overlong '/'
  EXPECT_FALSE(ws::is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(ws::is_valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(ws::is_valid_utf8("\xF5\x80\x80\x80"));
  EXPECT_FALSE(ws::is_valid_utf8("\xFF"));
  EXPECT_FALSE(ws::is_valid_utf8("\x80"));
  EXPECT_FALSE(ws::is_valid_utf8("abc\xE2\x82"));  // truncated
  EXPECT_FALSE(ws::is_valid_utf8("abcdefghij\xCE"));
}

TEST(ws_utf8, code_point_split_across_feeds) {
  std::string s = "a\xF0\x9F\x98\x80z\xCE\xBA";
  for (std::size_t i = 0; i <= s.size(); ++i) {
    ws::utf8_validator v;
    EXPECT_TRUE(v.feed(s.substr(0, i)));
    EXPECT_TRUE(v.feed(s.substr(i)));
    EXPECT_TRUE(v.complete());
  }
  ws::utf8_validator v;
  EXPECT_TRUE(v.feed("\xF0\x9F"));
  EXPECT_FALSE(v.complete());
  EXPECT_FALSE(v.feed("A"));  // fails at the first bad byte, not at the end
}

TEST(ws_reader, single_frames) {
  EXPECT_EQ(read_all(frame(ws::opcode::text, "hello")), log_t{"text:hello"});
  EXPECT_EQ(read_all(frame(ws::opcode::binary, std::string("\0\1\2", 3))),
            log_t{std::string("binary:\0\1\2", 10)});
  EXPECT_EQ(read_all(frame(ws::opcode::text, "")), log_t{"text:"});
  std::string mid(300, 'm');
  EXPECT_EQ(read_all(frame(ws::opcode::binary, mid)), log_t{"binary:" + mid});
  std::string big(70000, 'b');
  EXPECT_EQ(read_all(frame(ws::opcode::binary, big)), log_t{"binary:" + big});
}

TEST(ws_reader, several_messages_in_one_buffer) {
  std::string in = frame(ws::opcode::text, "one") + frame(ws::opcode::binary, "two") +
                   frame(ws::opcode::ping, "p") + frame(ws::opcode::text, "three");
  EXPECT_EQ(read_all(in), (log_t{"text:one", "binary:two", "ping:p", "text:three"}));
}

TEST(ws_reader, fragmented_with_interleaved_control_frames) {
  std::string in = frame(ws::opcode::text, "Hel", false) + frame(ws::opcode::ping, "p1") +
                   frame(ws::opcode::continuation, "lo ", false) + frame(ws::opcode::pong, "p2") +
                   frame(ws::opcode::continuation, "world", true);
  EXPECT_EQ(read_all(in), (log_t{"ping:p1", "pong:p2", "text:Hello world"}));
}

TEST(ws_reader, utf8_code_point_split_across_fragments_is_valid) {
  std::string in = frame(ws::opcode::text, "a\xF0\x9F", false) +
                   frame(ws::opcode::continuation, "\x98\x80", true);
  EXPECT_EQ(read_all(in), log_t{"text:a\xF0\x9F\x98\x80"});
}

TEST(ws_reader, invalid_utf8_is_1007) {
  EXPECT_EQ(read_all(frame(ws::opcode::text, "\xC0\x80")), log_t{"error:1007"});
  // Truncated at the end of a fragmented message.
  EXPECT_EQ(read_all(frame(ws::opcode::text, "ok\xE2", false) +
                     frame(ws::opcode::continuation, "", true)),
            log_t{"error:1007"});
  // Detected in the first fragment, before the message is complete (fail fast).
  EXPECT_EQ(read_all(frame(ws::opcode::text, "\xFF", false)), log_t{"error:1007"});
  // Binary messages are not checked.
  EXPECT_EQ(read_all(frame(ws::opcode::binary, "\xFF")), log_t{"binary:\xFF"});
}

TEST(ws_reader, protocol_violations_are_1002) {
  struct c {
    const char* name;
    std::string input;
  };
  std::vector<c> cases = {
      {"unmasked_client_frame", frame(ws::opcode::text, "x", true, false)},
      {"rsv2", raw_frame(0x80 | 0x20 | 0x1, 1, "x")},
      {"rsv3", raw_frame(0x80 | 0x10 | 0x2, 1, "x")},
      {"rsv1_without_deflate", raw_frame(0x80 | 0x40 | 0x1, 1, "x")},
      {"opcode_3", raw_frame(0x83, 1, "x")},
      {"opcode_b", raw_frame(0x8B, 1, "x")},
      {"fragmented_ping", raw_frame(0x09, 1, "x")},
      {"long_ping", raw_frame(0x89, 126, "") + std::string("\x00\x7e", 2)},
      {"continuation_first", frame(ws::opcode::continuation, "x")},
      {"text_inside_fragmented",
       frame(ws::opcode::text, "a", false) + frame(ws::opcode::text, "b")},
      {"close_one_byte", frame(ws::opcode::close, "x")},
      {"close_code_1005_on_wire", frame(ws::opcode::close, close_payload(1005, ""))},
      {"close_code_999", frame(ws::opcode::close, close_payload(999, ""))},
      {"close_code_2000", frame(ws::opcode::close, close_payload(2000, ""))},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.name);
    EXPECT_EQ(read_all(k.input), log_t{"error:1002"});
  }
}

TEST(ws_reader, client_role_rejects_masked_frames) {
  ws::reader_config cfg;
  cfg.role = ws::role::client;
  EXPECT_EQ(read_all(frame(ws::opcode::text, "hi", true, false), cfg), log_t{"text:hi"});
  EXPECT_EQ(read_all(frame(ws::opcode::text, "hi", true, true), cfg), log_t{"error:1002"});
}

TEST(ws_reader, close_frames) {
  EXPECT_EQ(read_all(frame(ws::opcode::close, close_payload(1000, "bye"))),
            log_t{"close:1000:bye"});
  EXPECT_EQ(read_all(frame(ws::opcode::close, "")), log_t{"close:1005:"});
  EXPECT_EQ(read_all(frame(ws::opcode::close, close_payload(4000, "app"))),
            log_t{"close:4000:app"});
  EXPECT_EQ(read_all(frame(ws::opcode::close, close_payload(1000, "\xFF"))), log_t{"error:1007"});
}

TEST(ws_reader, size_limits_are_1009) {
  ws::reader_config cfg;
  cfg.max_frame_bytes = 100;
  cfg.max_message_bytes = 150;
  EXPECT_EQ(read_all(frame(ws::opcode::binary, std::string(100, 'x')), cfg),
            log_t{"binary:" + std::string(100, 'x')});
  EXPECT_EQ(read_all(frame(ws::opcode::binary, std::string(101, 'x')), cfg), log_t{"error:1009"});
  EXPECT_EQ(read_all(frame(ws::opcode::binary, std::string(80, 'x'), false) +
                         frame(ws::opcode::continuation, std::string(80, 'x')),
                     cfg),
            log_t{"error:1009"});
  // A 64-bit length with the top bit set is a protocol error, not a huge allocation.
  std::string huge = raw_frame(0x82, 127, "");
  huge.insert(2, std::string("\x80\0\0\0\0\0\0\1", 8));
  EXPECT_EQ(read_all(huge, cfg), log_t{"error:1002"});
}

TEST(ws_reader, zero_copy_for_whole_frames) {
  std::string f = frame(ws::opcode::binary, "zero-copy payload");
  std::vector<char> buf(f.begin(), f.end());
  ws::reader r;
  auto s = r.next(buf);
  ASSERT_EQ(s.event, ws::read_event::message);
  EXPECT_EQ(s.data, "zero-copy payload");
  EXPECT_GE(s.data.data(), buf.data());
  EXPECT_LT(s.data.data(), buf.data() + buf.size()) << "whole frames are unmasked in place";
  EXPECT_EQ(s.consumed, buf.size());
  EXPECT_TRUE(r.idle());
}

TEST(ws_writer, header_sizes_and_mask_round_trip) {
  char h[ws::kMaxFrameHeader];
  EXPECT_EQ(ws::write_frame_header(h, ws::opcode::text, 125), 2u);
  EXPECT_EQ(ws::write_frame_header(h, ws::opcode::text, 126), 4u);
  EXPECT_EQ(ws::write_frame_header(h, ws::opcode::text, 65535), 4u);
  EXPECT_EQ(ws::write_frame_header(h, ws::opcode::text, 65536), 10u);
  std::uint8_t key[4] = {9, 8, 7, 6};
  EXPECT_EQ(ws::write_frame_header(h, ws::opcode::binary, 5, true, false, key), 6u);
  std::string data = "mask me in pieces, please!";
  std::string copy = data;
  std::size_t pos = ws::apply_mask(copy.data(), 5, key);
  ws::apply_mask(copy.data() + 5, copy.size() - 5, key, pos);
  EXPECT_NE(copy, data);
  ws::apply_mask(copy.data(), copy.size(), key);
  EXPECT_EQ(copy, data);
}

TEST(ws_writer, apply_mask_matches_bytewise_reference) {
  const std::uint8_t key[4] = {0xA1, 0x02, 0xF3, 0x74};
  // Every length up to 300 covers each loop (8-, 16- and 32-byte steps, the 128-byte AVX2 step
  // where the CPU has it) and every tail; a few larger ones cover long runs of the widest loop.
  std::vector<std::size_t> lengths;
  for (std::size_t len = 0; len <= 300; ++len) {
    lengths.push_back(len);
  }
  for (std::size_t len : {511u, 512u, 513u, 4096u, 4101u, 65539u}) {
    lengths.push_back(len);
  }
  for (std::size_t offset = 0; offset < 4; ++offset) {
    for (std::size_t len : lengths) {
      std::string data(len + 3, '\0');
      for (std::size_t i = 0; i < data.size(); ++i) {
        data[i] = static_cast<char>(i * 7 + len);
      }
      std::string expect = data;
      // Unaligned start (+3) so the vector loop sees unaligned addresses too.
      for (std::size_t i = 0; i < len; ++i) {
        expect[3 + i] = static_cast<char>(expect[3 + i] ^ key[(offset + i) & 3]);
      }
      std::size_t next = ws::apply_mask(data.data() + 3, len, key, offset);
      ASSERT_EQ(data, expect) << "offset " << offset << " len " << len;
      EXPECT_EQ(next, (offset + len) & 3);
    }
  }
}

TEST(ws_writer, append_close_truncates_reason) {
  std::string out;
  ws::append_close(out, 1001, std::string(200, 'r'), false);
  ws::reader_config cfg;
  cfg.role = ws::role::client;
  EXPECT_EQ(read_all(out, cfg), log_t{"close:1001:" + std::string(123, 'r')});
}

TEST(ws_deflate, negotiation_table) {
  struct c {
    std::string offer;
    bool accepted;
    std::string response;
  };
  std::vector<c> cases = {
      {"permessage-deflate", true, "permessage-deflate"},
      {"permessage-deflate; client_max_window_bits", true, "permessage-deflate"},
      {"permessage-deflate; server_no_context_takeover; client_no_context_takeover", true,
       "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
      {"permessage-deflate; server_max_window_bits=10", true,
       "permessage-deflate; server_max_window_bits=10"},
      {"permessage-deflate; server_max_window_bits=8, permessage-deflate", true,
       "permessage-deflate; server_max_window_bits=8"},
      {"permessage-deflate; server_max_window_bits=16", false, ""},
      {"permessage-deflate; unknown_param", false, ""},
      {"permessage-deflate; server_no_context_takeover; server_no_context_takeover", false, ""},
      {"x-webkit-deflate-frame", false, ""},
      {"foo, permessage-deflate; client_max_window_bits=\"12\"", true,
       "permessage-deflate; client_max_window_bits=12"},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.offer);
    std::string resp;
    auto p = ws::negotiate_deflate(k.offer, resp);
    EXPECT_EQ(p.has_value(), k.accepted);
    if (k.accepted) {
      EXPECT_EQ(resp, k.response);
      auto back = ws::parse_deflate_response(resp);
      ASSERT_TRUE(back.has_value());
      EXPECT_EQ(back->server_no_context_takeover, p->server_no_context_takeover);
      EXPECT_EQ(back->server_max_window_bits, p->server_max_window_bits);
    }
  }
  EXPECT_FALSE(ws::parse_deflate_response("permessage-deflate; client_max_window_bits"));
  EXPECT_FALSE(ws::parse_deflate_response("permessage-deflate, permessage-deflate"));
}

// RFC 7692 §7.1.1.1: a server accepts our server_no_context_takeover by naming it; a response
// without it does not accept our offer (the client must fail the connection). Unasked, the
// server may name it. A server's client_max_window_bits=8 is kept as 8 (it was raised to 9).
TEST(ws_deflate, response_must_accept_server_no_context_takeover) {
  ws::deflate_params offered;
  offered.server_no_context_takeover = true;
  EXPECT_FALSE(ws::parse_deflate_response("permessage-deflate", offered));
  EXPECT_FALSE(
      ws::parse_deflate_response("permessage-deflate; client_no_context_takeover", offered));
  auto p = ws::parse_deflate_response("permessage-deflate; server_no_context_takeover", offered);
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->server_no_context_takeover);
  p = ws::parse_deflate_response("permessage-deflate; server_no_context_takeover");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->server_no_context_takeover);
  p = ws::parse_deflate_response("permessage-deflate; client_max_window_bits=8");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->client_max_window_bits, 8);
}

// RFC 7692 §7.1.1.2: a client that offers client_no_context_takeover tells the server it will
// not use context takeover "even if the server doesn't include" the parameter in its response,
// so a server may reset its decompressor per message on the strength of the offer alone. The
// client took a response without the parameter as leave to keep its history: its second
// message then referred back to the first, which such a server's decompressor has forgotten.
TEST(ws_deflate, an_offered_client_no_context_takeover_holds_without_the_servers_echo) {
  ws::deflate_params offered;
  offered.client_no_context_takeover = true;
  const auto hinted = ws::parse_deflate_response("permessage-deflate", offered);
  ASSERT_TRUE(hinted);
  EXPECT_TRUE(hinted->client_no_context_takeover);
  auto p = ws::parse_deflate_response("permessage-deflate; client_no_context_takeover", offered);
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->client_no_context_takeover);
  p = ws::parse_deflate_response("permessage-deflate");  // not offered: the server decides
  ASSERT_TRUE(p);
  EXPECT_FALSE(p->client_no_context_takeover);
  // What that means on the wire: the client compresses each message on its own, so a server
  // that resets its inflater per message reads the second message too.
  ws::deflater client_side(hinted->client_max_window_bits, hinted->client_no_context_takeover);
  ws::inflater server_side(15, true);
  for (int i = 0; i < 2; ++i) {
    std::string wire;
    ASSERT_TRUE(client_side.deflate_message("the same words, the same words", wire));
    std::string plain;
    ASSERT_EQ(server_side.inflate_message(wire, plain, 1000), ws::inflate_result::ok) << i;
    EXPECT_EQ(plain, "the same words, the same words");
  }
}

// A compressor asked for an 8-bit window (a peer's client_max_window_bits=8, or its offer of
// server_max_window_bits=8, which the server now accepts) must not refer back farther than 256
// bytes. zlib has no 8-bit raw window and runs with 9; this checks, against zlib's own inflate
// held to 256 bytes, that its matches still stay within 250 bytes: messages full of repeats at
// every distance up to 600, with and without context takeover, at three levels.
TEST(ws_deflate, window_of_8_bits_stays_within_256_bytes) {
  std::mt19937 rng(7);
  std::string data;
  while (data.size() < (256u << 10)) {
    const std::size_t d = 1 + rng() % 600;
    if (data.size() < d) {
      data += static_cast<char>(rng());
      continue;
    }
    const std::size_t len = 3 + rng() % 40;
    for (std::size_t k = 0; k < len; ++k) {
      data += data[data.size() - d];
    }
    data += static_cast<char>(rng());
  }
  for (int level : {1, 6, 9}) {
    for (bool nct : {false, true}) {
      SCOPED_TRACE(testing::Message() << "level " << level << (nct ? ", no context takeover" : ""));
      ws::deflater d(8, nct, level);
      z_stream z{};
      ASSERT_EQ(inflateInit2(&z, -8), Z_OK);
      std::size_t compressed_total = 0;
      for (std::size_t at = 0; at < data.size(); at += 64u << 10) {
        const std::string_view msg = std::string_view(data).substr(at, 64u << 10);
        std::string c;
        ASSERT_TRUE(d.deflate_message(msg, c));
        compressed_total += c.size();
        c += std::string("\x00\x00\xff\xff", 4);  // RFC 7692 §7.2.2
        std::string back(msg.size() + 64, '\0');
        z.next_in = reinterpret_cast<Bytef*>(c.data());
        z.avail_in = static_cast<uInt>(c.size());
        z.next_out = reinterpret_cast<Bytef*>(back.data());
        z.avail_out = static_cast<uInt>(back.size());
        const int r = inflate(&z, Z_SYNC_FLUSH);
        ASSERT_TRUE(r == Z_OK || r == Z_BUF_ERROR) << r << " " << (z.msg ? z.msg : "");
        ASSERT_EQ(z.avail_in, 0u);
        back.resize(back.size() - z.avail_out);
        ASSERT_EQ(back, msg);
        if (nct) {
          ASSERT_EQ(inflateReset(&z), Z_OK);
        }
      }
      inflateEnd(&z);
      EXPECT_LT(compressed_total, data.size() * 3 / 4) << "no matches were made";
    }
  }
}

TEST(ws_deflate, round_trip_with_and_without_context_takeover) {
  for (bool nct : {false, true}) {
    ws::deflater d(15, nct);
    ws::inflater i(15, nct);
    std::vector<std::string> msgs = {"hello hello hello hello", "", std::string(100000, 'a'),
                                     "hello hello hello hello", "\x01\x02\x03"};
    std::size_t second_size = 0;
    for (std::size_t k = 0; k < msgs.size(); ++k) {
      std::string c, back;
      ASSERT_TRUE(d.deflate_message(msgs[k], c));
      if (k == 3) {
        second_size = c.size();
      }
      ASSERT_EQ(i.inflate_message(c, back, 1 << 20), ws::inflate_result::ok);
      EXPECT_EQ(back, msgs[k]);
    }
    (void)second_size;
  }
}

TEST(ws_deflate, compression_bomb_is_refused) {
  ws::deflater d(15, false, 9);
  std::string bomb;
  ASSERT_TRUE(d.deflate_message(std::string(64 << 20, '\0'), bomb));
  EXPECT_LT(bomb.size(), 128u * 1024);
  ws::inflater i(15, false);
  std::string out;
  EXPECT_EQ(i.inflate_message(bomb, out, 1 << 20), ws::inflate_result::too_big);
  EXPECT_LE(out.size(), (1u << 20) + 1);
  ws::inflater j(15, false);
  out.clear();
  EXPECT_EQ(j.inflate_message("\xFF\xFF\xFF garbage", out, 1 << 20), ws::inflate_result::corrupt);
}

TEST(ws_reader, compressed_messages_with_inflater) {
  ws::deflater d(15, false);
  std::string c1, c2;
  ASSERT_TRUE(d.deflate_message("compressed text compressed text", c1));
  ASSERT_TRUE(d.deflate_message("compressed text again", c2));
  // Second message relies on the first's context; fragmented to test RSV1 on the first frame.
  std::string in = frame(ws::opcode::text, c1, true, true, true) +
                   frame(ws::opcode::text, c2.substr(0, 3), false, true, true) +
                   frame(ws::opcode::continuation, c2.substr(3), true, true, false);
  EXPECT_EQ(read_all(in, {}, true),
            (log_t{"text:compressed text compressed text", "text:compressed text again"}));
  // RSV1 on a continuation frame is a protocol error even with the extension.
  std::string bad = frame(ws::opcode::text, c1.substr(0, 2), false, true, true) +
                    frame(ws::opcode::continuation, c1.substr(2), true, true, true);
  EXPECT_EQ(read_all(bad, {}, true), log_t{"error:1002"});
}

// The limits count inflated bytes: incompressible data grows when deflated, and a message at the
// limit must still be accepted although its compressed frame is longer than the limit (it was
// refused with 1009 "frame too large"). Past the limit after inflate it is 1009.
TEST(ws_reader, compressed_size_limits_count_inflated_bytes) {
  ws::reader_config cfg;
  cfg.max_frame_bytes = 4096;
  cfg.max_message_bytes = 4096;
  const std::string at_limit = proto_test::random_bytes(4096, 1);
  std::string c;
  ws::deflater d(15, true);
  ASSERT_TRUE(d.deflate_message(at_limit, c));
  ASSERT_GT(c.size(), cfg.max_frame_bytes);
  EXPECT_EQ(read_all(frame(ws::opcode::binary, c, true, true, true), cfg, true),
            log_t{"binary:" + at_limit});
  // One byte more, incompressible (the wire length is within the loose bound) or compressible
  // (a small frame): refused once inflated.
  c.clear();
  ASSERT_TRUE(d.deflate_message(proto_test::random_bytes(4097, 2), c));
  EXPECT_EQ(read_all(frame(ws::opcode::binary, c, true, true, true), cfg, true),
            log_t{"error:1009"});
  c.clear();
  ASSERT_TRUE(d.deflate_message(std::string(4097, 'a'), c));
  ASSERT_LT(c.size(), 100u);
  EXPECT_EQ(read_all(frame(ws::opcode::binary, c, true, true, true), cfg, true),
            log_t{"error:1009"});
  // Far past the loose wire bound: refused from the header, before any payload is buffered.
  EXPECT_EQ(
      read_all(frame(ws::opcode::binary, std::string(8192, 'x'), true, true, true), cfg, true),
      log_t{"error:1009"});
  // A single compressed frame is held to max_frame_bytes after inflate; fragments of a larger
  // message only to max_message_bytes.
  cfg.max_message_bytes = 8192;
  const std::string text(5000, 't');
  c.clear();
  ASSERT_TRUE(d.deflate_message(text, c));
  EXPECT_EQ(read_all(frame(ws::opcode::text, c, true, true, true), cfg, true), log_t{"error:1009"});
  EXPECT_EQ(read_all(frame(ws::opcode::text, c.substr(0, 4), false, true, true) +
                         frame(ws::opcode::continuation, c.substr(4), true, true, false),
                     cfg, true),
            log_t{"text:" + text});
}

// After reset() a deflater's output does not refer to earlier messages: what a peer inflates
// without having seen them (sent uncompressed) decodes.
TEST(ws_deflate, reset_forgets_the_history) {
  const std::string first = proto_test::random_bytes(3000, 3);
  const std::string second = first.substr(100, 2000);
  for (bool reset : {false, true}) {
    ws::deflater d(15, false);
    std::string c1, c2;
    ASSERT_TRUE(d.deflate_message(first, c1));
    if (reset) {
      d.reset();
    }
    ASSERT_TRUE(d.deflate_message(second, c2));
    ws::inflater i(15, false);
    std::string back;
    const ws::inflate_result r = i.inflate_message(c2, back, 1 << 20);
    if (reset) {
      EXPECT_EQ(r, ws::inflate_result::ok);
      EXPECT_EQ(back, second);
    } else {
      // Without reset the second message is a back-reference into the first.
      EXPECT_LT(c2.size(), 100u);
      EXPECT_TRUE(r != ws::inflate_result::ok || back != second);
    }
  }
}

TEST(ws_reader, compressed_bomb_is_1009) {
  ws::deflater d(15, false, 9);
  std::string bomb;
  ASSERT_TRUE(d.deflate_message(std::string(8 << 20, 'A'), bomb));
  ws::reader_config cfg;
  cfg.max_message_bytes = 1 << 20;
  ws::inflater inf(15, false);
  ws::reader r(cfg);
  r.set_inflater(&inf);
  std::string f = frame(ws::opcode::binary, bomb, true, true, true);
  std::vector<char> buf(f.begin(), f.end());
  auto s = r.next(buf);
  EXPECT_EQ(s.event, ws::read_event::error);
  EXPECT_EQ(s.code, 1009);
}

}  // namespace
