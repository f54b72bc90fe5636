// In-process HTTP server: limits, timeouts, pipelining and edge cases over real sockets.
#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/socket.h>
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
// From the sanitizer runtime (<sanitizer/allocator_interface.h>, which GCC does not install).
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

#include <atomic>
#include <cctype>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "evnet/engine.h"
#include "evnet/http/parser.h"
#include "evnet/http/server.h"
#include "http_server_test_util.h"
#include "http_test_util.h"

namespace http = evnet::http;
using namespace std::chrono_literals;
using proto_test::client;
using proto_test::kGet;
using proto_test::read_replies;
using proto_test::test_server;

namespace {

http::router basic_router() {
  http::router r;
  r.get("/plaintext", [](const http::request&, http::response& res) {
    res.start(200).header("Content-Type", "text/plain").body("Hello, World!");
  });
  r.post("/echo", [](const http::request& req, http::response& res) {
    res.start(200).header("Content-Type", "application/octet-stream").body(req.body);
  });
  r.get("/throw", [](const http::request&, http::response&) { throw std::runtime_error("x"); });
  r.get("/chunked", [](const http::request&, http::response& res) {
    res.start(200).begin_chunked();
    res.chunk("part1,");
    res.chunk("part2");
    res.end_chunked();
  });
  return r;
}

// ---------------- in-process server: limits and edge cases ----------------

// The client's request has stalled: the server must answer 408 after its 300 ms timeout (not
// before 250 ms, well before 3 s), without keep-alive, with `body` if given, then close.
void expect_408_after_timeout_then_close(client& c, const char* body) {
  auto t0 = std::chrono::steady_clock::now();
  bool eof = false;
  auto r = read_replies(c, 1, &eof);
  auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 408);
  if (body != nullptr) {
    EXPECT_EQ(r[0].body, body);
  }
  EXPECT_FALSE(r[0].keep_alive);
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 3s);
  std::string rest = c.recv_until_eof(&eof);
  EXPECT_TRUE(eof) << "connection must be closed after 408";
}

// Bytes the program's allocator holds now, all threads together.
std::size_t allocated_bytes() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return __sanitizer_get_current_allocated_bytes();
#else
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;  // heap chunks in use + large mmap'd ones
#endif
}

// One 900 KiB upload echoed back on a keep-alive connection: once answered, neither the buffered
// request body nor the composed response may stay allocated for the rest of the connection
// (the net layer gives its own buffers back as soon as they are empty). Both kept their
// capacity: the idle connection held about 2 MiB more until it closed.
TEST(http_server, a_large_body_does_not_stay_allocated_on_a_keep_alive_connection) {
  test_server s(basic_router());
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  const auto post = [&](std::size_t n) {
    std::string req = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(n) +
                      "\r\n\r\n" + std::string(n, 'b');
    if (!c.send(req)) {
      return std::size_t{0};
    }
    req = {};
    auto r = read_replies(c, 1);
    if (r.size() != 1 || r[0].status != 200) {
      ADD_FAILURE() << r.size() << " replies, status " << (r.empty() ? 0 : r[0].status);
      return std::size_t{0};
    }
    return r[0].body.size();
  };
  ASSERT_EQ(post(1000), 1000u);  // the connection and its buffers are set up
  std::this_thread::sleep_for(50ms);
  const std::size_t before = allocated_bytes();
  constexpr std::size_t kBody = 900u << 10;  // under the server's and the test parser's 1 MiB
  ASSERT_EQ(post(kBody), kBody);
  std::size_t after = allocated_bytes();
  bool given_back = after < before + (256u << 10);
  for (auto end = std::chrono::steady_clock::now() + 3s;
       !given_back && std::chrono::steady_clock::now() < end;) {
    std::this_thread::sleep_for(10ms);
    after = allocated_bytes();
    given_back = after < before + (256u << 10);
  }
  EXPECT_TRUE(given_back) << "the idle keep-alive connection still holds "
                          << (after - before) / 1024 << " KiB more than before the upload";
  EXPECT_EQ(post(10), 10u);  // and it still serves
}

// The framing is the server's: a handler's own Content-Length or Transfer-Encoding header was
// written beside the server's Content-Length (or chunked coding), giving a response with two
// lengths, or with both framings, that a client and a proxy may split differently.
TEST(http_server, a_handlers_framing_headers_are_not_sent) {
  http::router r;
  r.get("/length", [](const http::request&, http::response& res) {
    res.start(200).header("content-length", "5").header("Transfer-Encoding", "chunked");
    res.body("hello world");
  });
  r.get("/chunked", [](const http::request&, http::response& res) {
    res.start(200).header("Content-Length", "3").begin_chunked();
    res.chunk("abc");
    res.end_chunked();
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(
      c.send("GET /length HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string raw;
  while (raw.find("0\r\n\r\n") == std::string::npos) {
    std::string more = c.recv_some();
    if (more.empty()) {
      break;
    }
    raw += more;
  }
  const auto count = [](std::string_view text, std::string_view what) {
    std::size_t n = 0;
    for (std::size_t at = text.find(what); at != std::string_view::npos;
         at = text.find(what, at + 1)) {
      ++n;
    }
    return n;
  };
  const std::size_t second = raw.find("HTTP/1.1", 1);
  ASSERT_NE(second, std::string::npos) << raw;
  const std::string first_head = raw.substr(0, raw.find("\r\n\r\n"));
  const std::string second_head = raw.substr(second, raw.find("\r\n\r\n", second) - second);
  std::string lower = first_head;
  for (char& ch : lower) {
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  EXPECT_EQ(count(lower, "content-length"), 1u) << first_head;
  EXPECT_NE(first_head.find("Content-Length: 11"), std::string::npos) << first_head;
  EXPECT_EQ(count(first_head, "Transfer-Encoding"), 0u) << first_head;
  EXPECT_EQ(count(second_head, "Content-Length"), 0u) << second_head;
  EXPECT_EQ(count(second_head, "Transfer-Encoding: chunked"), 1u) << second_head;
  EXPECT_EQ(raw.substr(first_head.size() + 4, 11), "hello world");
  EXPECT_EQ(raw.substr(raw.find("\r\n\r\n", second) + 4), "3\r\nabc\r\n0\r\n\r\n");
}

// start() sends the Date; a handler's own Date header was sent beside it, and RFC 9110 §5.3
// allows one Date field (it is not a list). The server's is kept, the handler's dropped.
TEST(http_server, a_handlers_date_header_is_not_sent_beside_the_servers) {
  http::router r;
  r.get("/dated", [](const http::request&, http::response& res) {
    res.start(200).header("Date", "Sun, 06 Nov 1994 08:49:37 GMT").header("date", "x");
    res.header("Vary", "Accept").body("ok");
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send("GET /dated HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto rs = read_replies(c, 1);
  ASSERT_EQ(rs.size(), 1u);
  std::size_t dates = 0;
  for (const auto& h : rs[0].headers) {
    if (http::iequals(h.first, "date")) {
      ++dates;
      EXPECT_TRUE(h.second.ends_with(" GMT")) << h.second;
      EXPECT_NE(h.second, "Sun, 06 Nov 1994 08:49:37 GMT");
    }
  }
  EXPECT_EQ(dates, 1u);
  EXPECT_EQ(rs[0].header("vary"), "Accept");
  EXPECT_EQ(rs[0].body, "ok");
}

// A handler that answers twice (an early answer without its `return`), or adds a header after
// the head has ended, wrote those bytes between or inside responses: the second answer was
// taken by the client for the answer to its next request, and a header written into a chunked
// body broke its framing. Calls out of order now do nothing.
TEST(http_server, calls_out_of_order_on_a_response_do_not_reach_the_wire) {
  http::router r = basic_router();
  r.get("/twice", [](const http::request&, http::response& res) {
    res.start(400).body("bad\n");
    res.start(200).header("X-Second", "1").body("second");  // the missing `return`
    res.begin_chunked();
    res.end_chunked();
  });
  r.get("/late-header", [](const http::request&, http::response& res) {
    res.start(200).body("a");
    res.header("X-Late", "1");
  });
  r.get("/header-in-chunks", [](const http::request&, http::response& res) {
    res.start(200).begin_chunked();
    res.chunk("a");
    res.header("X-Late", "1");
    res.body("no");
    res.chunk("b");
    res.end_chunked();
    res.chunk("c");
    res.end_chunked();
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(
      c.send("GET /twice HTTP/1.1\r\nHost: x\r\n\r\nGET /late-header HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /header-in-chunks HTTP/1.1\r\nHost: x\r\n\r\n" +
             std::string(kGet)));
  auto rs = read_replies(c, 4);
  ASSERT_EQ(rs.size(), 4u);
  EXPECT_EQ(rs[0].status, 400);
  EXPECT_EQ(rs[0].body, "bad\n");
  EXPECT_EQ(rs[0].header("x-second"), "");
  EXPECT_EQ(rs[1].status, 200);
  EXPECT_EQ(rs[1].body, "a");
  EXPECT_EQ(rs[2].status, 200);
  EXPECT_EQ(rs[2].body, "ab");
  EXPECT_EQ(rs[3].status, 200);
  EXPECT_EQ(rs[3].body, "Hello, World!") << "the answer to the fourth request";
  for (const auto& rep : rs) {
    EXPECT_EQ(rep.header("x-late"), "");
    EXPECT_TRUE(rep.keep_alive);
  }
}

TEST(http_server, header_timeout_sends_408_and_closes) {
  http::server_options o;
  o.header_timeout = 300ms;
  test_server s(basic_router(), o);
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send("GET /plaintext HTTP/1.1\r\nHo"));
  expect_408_after_timeout_then_close(c, nullptr);
}

TEST(http_server, body_timeout_sends_408_and_closes) {
  http::server_options o;
  o.body_timeout = 300ms;
  test_server s(basic_router(), o);
  ASSERT_GT(s.port(), 0);
  for (const char* stalled : {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
                              "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nab"}) {
    SCOPED_TRACE(stalled);
    client c(s.port());
    ASSERT_TRUE(c.send(stalled));
    expect_408_after_timeout_then_close(c, "body timeout\n");
  }
}

// The connection's timer sleeps until the keep-alive deadline while it is idle; a request that
// starts during that sleep must still be held to its own (shorter) header or body timeout.
TEST(http_server, header_and_body_timeouts_hold_after_an_idle_keep_alive_period) {
  http::server_options o;
  o.header_timeout = 300ms;
  o.body_timeout = 300ms;
  o.keep_alive_timeout = 6s;
  test_server s(basic_router(), o);
  ASSERT_GT(s.port(), 0);
  for (const char* stalled : {"GET /plaintext HTTP/1.1\r\nHo",
                              "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab"}) {
    client c(s.port(), 8000);
    ASSERT_TRUE(c.send(kGet));
    ASSERT_EQ(read_replies(c, 1).size(), 1u);
    std::this_thread::sleep_for(450ms);  // the timer has fired once, idle
    ASSERT_TRUE(c.send(stalled));
    expect_408_after_timeout_then_close(c, nullptr);
  }
}

// A new connection's first request is due within header_timeout of the accept (as nginx's
// client_header_timeout): one that sends nothing was kept for keep_alive_timeout (here 6 s),
// and one that waited before starting its head got the whole header timeout again from its
// first byte.
TEST(http_server, a_new_connection_gets_the_header_timeout_for_its_first_request) {
  http::server_options o;
  o.header_timeout = 600ms;
  o.keep_alive_timeout = 6s;
  test_server s(basic_router(), o);
  ASSERT_GT(s.port(), 0);
  {
    client silent(s.port(), 8000);
    auto t0 = std::chrono::steady_clock::now();
    bool eof = false;
    const std::string got = silent.recv_until_eof(&eof);
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_TRUE(eof);
    EXPECT_TRUE(got.empty()) << "no request, no answer: " << got;
    EXPECT_GE(waited, 500ms);
    EXPECT_LT(waited, 3s) << "a connection that sent nothing waited for the keep-alive timeout";
  }
  {
    client late(s.port(), 8000);
    auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(450ms);
    ASSERT_TRUE(late.send("GET /plaintext HTTP/1.1\r\nHo"));
    bool eof = false;
    auto r = read_replies(late, 1, &eof);
    const auto waited = std::chrono::steady_clock::now() - t0;
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 408);
    EXPECT_LT(waited, 900ms) << "the header timeout restarted at the first byte";
  }
}

TEST(http_server, body_that_keeps_arriving_is_not_timed_out) {
  // Each byte comes well within the body timeout, the whole body well after it.
  http::server_options o;
  o.body_timeout = 400ms;
  test_server s(basic_router(), o);
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n"));
  auto t0 = std::chrono::steady_clock::now();
  for (char b : std::string("abcdef")) {
    std::this_thread::sleep_for(150ms);
    ASSERT_TRUE(c.send(std::string(1, b)));
  }
  auto r = read_replies(c, 1);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 800ms);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 200);
  EXPECT_EQ(r[0].body, "abcdef");
  EXPECT_TRUE(r[0].keep_alive);
  // The connection stays usable.
  ASSERT_TRUE(c.send(kGet));
  auto r2 = read_replies(c, 1);
  ASSERT_EQ(r2.size(), 1u);
  EXPECT_EQ(r2[0].status, 200);
}

TEST(http_server, target_too_long_414_then_close) {
  http::server_options o;
  o.limits.max_target_bytes = 256;
  test_server s(basic_router(), o);
  client c(s.port());
  ASSERT_TRUE(c.send("GET /" + std::string(1000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n"));
  bool eof = false;
  auto r = read_replies(c, 1, &eof);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 414);
  std::string rest = c.recv_until_eof(&eof);
  EXPECT_TRUE(eof);
}

TEST(http_server, body_too_large_413_then_close) {
  http::server_options o;
  o.limits.max_body_bytes = 1000;
  test_server s(basic_router(), o);
  client c(s.port());
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" +
                     std::string(5000, 'z')));
  bool eof = false;
  auto r = read_replies(c, 1, &eof);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 413);
  std::string rest = c.recv_until_eof(&eof);
  EXPECT_TRUE(eof);
}

TEST(http_server, malformed_request_400_then_close) {
  test_server s(basic_router());
  client c(s.port());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nBad Header\r\n\r\n"));
  bool eof = false;
  auto r = read_replies(c, 1, &eof);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 400);
  EXPECT_FALSE(r[0].keep_alive);
  std::string rest = c.recv_until_eof(&eof);
  EXPECT_TRUE(eof);
}

TEST(http_server, oversized_header_section_431) {
  test_server s(basic_router());
  client c(s.port());
  ASSERT_TRUE(
      c.send("GET /plaintext HTTP/1.1\r\nHost: x\r\nX: " + std::string(20000, 'h') + "\r\n\r\n"));
  auto r = read_replies(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 431);
}

TEST(http_server, chunked_body_delivered_to_handler) {
  test_server s(basic_router());
  client c(s.port());
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             "4\r\nabcd\r\n3\r\nefg\r\n0\r\nTrailer: t\r\n\r\n" +
             std::string(kGet)));
  auto r = read_replies(c, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].body, "abcdefg");
  EXPECT_EQ(r[1].body, "Hello, World!");
}

TEST(http_server, expect_100_continue) {
  test_server s(basic_router());
  client c(s.port());
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
             "Content-Length: 3\r\n\r\n"));
  std::string got = c.recv_some();
  EXPECT_EQ(got, "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(c.send("xyz"));
  auto r = read_replies(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].body, "xyz");
}

TEST(http_server, head_request_has_headers_only) {
  test_server s(basic_router());
  client c(s.port());
  ASSERT_TRUE(c.send("HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r1 = read_replies(c, 1, nullptr, true);
  ASSERT_EQ(r1.size(), 1u);
  EXPECT_EQ(r1[0].status, 200);
  EXPECT_EQ(r1[0].header("content-length"), "13");
  EXPECT_EQ(r1[0].body, "");
  ASSERT_TRUE(c.send(kGet));
  auto r2 = read_replies(c, 1);
  ASSERT_EQ(r2.size(), 1u);
  EXPECT_EQ(r2[0].body, "Hello, World!");
}

TEST(http_server, responses_larger_than_the_head_stage) {
  // A response composes its head in a small stage; heads, headers and bodies larger than it,
  // custom statuses and reasons must come out the same, in order, pipelined.
  http::router r;
  const std::string big_value(700, 'v');
  const std::string big_body(3000, 'b');
  r.get("/big", [&](const http::request&, http::response& res) {
    res.start(201, "Made").header("X-Big", big_value).header("X-Small", "s").body(big_body);
  });
  r.get("/many", [](const http::request&, http::response& res) {
    res.start(299);
    for (int i = 0; i < 40; ++i) {
      res.header("X-H" + std::to_string(i), std::string(20, static_cast<char>('a' + i % 26)));
    }
    res.body("ok");
  });
  test_server s(std::move(r));
  client c(s.port());
  ASSERT_TRUE(
      c.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /many HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto rs = read_replies(c, 3);
  ASSERT_EQ(rs.size(), 3u);
  for (int i : {0, 2}) {
    EXPECT_EQ(rs[i].status, 201);
    EXPECT_EQ(rs[i].header("x-big"), big_value);
    EXPECT_EQ(rs[i].header("x-small"), "s");
    EXPECT_FALSE(rs[i].header("date").empty());
    EXPECT_EQ(rs[i].body, big_body);
  }
  EXPECT_EQ(rs[1].status, 299);
  ASSERT_EQ(rs[1].headers.size(), 42u);  // Date, 40 fields, Content-Length
  EXPECT_EQ(rs[1].header("x-h39"), std::string(20, 'n'));
  EXPECT_EQ(rs[1].body, "ok");
}

TEST(http_server, plaintext_response_bytes_are_exact) {
  // The common 200 is composed inline (cached status line and Date, literal header and body):
  // its bytes must be exactly those of the general path, for a keep-alive request (the inline
  // path) and for the last one (the general path, which adds Connection: close).
  test_server s(basic_router());
  client c(s.port());
  ASSERT_TRUE(c.send(std::string(kGet) +
                     "GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  bool eof = false;
  std::string all = c.recv_until_eof(&eof);
  ASSERT_TRUE(eof);
  // Each "Date: Www, DD Mmm YYYY HH:MM:SS GMT" (35 bytes) is checked for its shape and then
  // replaced, so the comparison does not depend on the second the answers were written in.
  int dates = 0;
  for (std::size_t at = all.find("Date: "); at != std::string::npos;
       at = all.find("Date: ", at + 1)) {
    ASSERT_GE(all.size(), at + 37);
    EXPECT_EQ(all.substr(at + 31, 6), " GMT\r\n");
    all.replace(at, 35, "Date: D");
    ++dates;
  }
  EXPECT_EQ(dates, 2);
  const std::string keep =
      "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
      "Hello, World!";
  const std::string last =
      "HTTP/1.1 200 OK\r\nDate: D\r\nConnection: close\r\nContent-Type: text/plain\r\n"
      "Content-Length: 13\r\n\r\nHello, World!";
  EXPECT_EQ(all, keep + last);
}

TEST(http_server, content_length_of_every_width) {
  // Bodies whose Content-Length has 1 to 5 digits, around each width's edges: the inline writer
  // formats up to 4 digits, the general one the rest; HEAD sends the length without the body.
  http::router r;
  r.get("/len/:n", [](const http::request& req, http::response& res) {
    const std::size_t n = std::stoul(std::string(req.param("n")));
    res.start(200).body(std::string(n, static_cast<char>('a' + n % 26)));
  });
  test_server s(std::move(r));
  client c(s.port());
  const std::size_t sizes[] = {0, 1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 12345};
  std::string reqs;
  for (std::size_t n : sizes) {
    reqs += "GET /len/" + std::to_string(n) + " HTTP/1.1\r\nHost: x\r\n\r\n";
  }
  ASSERT_TRUE(c.send(reqs));
  auto rs = read_replies(c, std::size(sizes));
  ASSERT_EQ(rs.size(), std::size(sizes));
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    const std::size_t n = sizes[i];
    EXPECT_EQ(rs[i].status, 200);
    EXPECT_EQ(rs[i].header("content-length"), std::to_string(n));
    EXPECT_EQ(rs[i].body, std::string(n, static_cast<char>('a' + n % 26))) << n;
  }
  ASSERT_TRUE(c.send("HEAD /len/1234 HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto head = read_replies(c, 1, nullptr, true);
  ASSERT_EQ(head.size(), 1u);
  EXPECT_EQ(head[0].header("content-length"), "1234");
  EXPECT_EQ(head[0].body, "");
}

TEST(http_server, unfinished_response_is_flushed_then_closed) {
  http::router r;
  r.get("/half", [](const http::request&, http::response& res) {
    res.start(200).header("X-Half", "yes");  // no body(): the stream cannot be framed
  });
  test_server s(std::move(r));
  client c(s.port());
  ASSERT_TRUE(c.send("GET /half HTTP/1.1\r\nHost: x\r\n\r\n"));
  bool eof = false;
  std::string got = c.recv_until_eof(&eof);
  EXPECT_TRUE(eof);
  EXPECT_EQ(got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << got;
  EXPECT_NE(got.find("X-Half: yes\r\n"), std::string::npos) << got;
}

TEST(http_server, http10_closes_unless_keep_alive) {
  test_server s(basic_router());
  {
    client c(s.port());
    ASSERT_TRUE(c.send("GET /plaintext HTTP/1.0\r\n\r\n"));
    bool eof = false;
    std::string all = c.recv_until_eof(&eof);
    EXPECT_TRUE(eof);
    EXPECT_NE(all.find("Hello, World!"), std::string::npos);
  }
  {
    client c(s.port());
    ASSERT_TRUE(c.send("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].header("connection"), "keep-alive");
    ASSERT_TRUE(c.send("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    EXPECT_EQ(read_replies(c, 1).size(), 1u);
  }
}

TEST(http_server, connection_close_is_honoured_and_rest_ignored) {
  test_server s(basic_router());
  client c(s.port());
  ASSERT_TRUE(c.send("GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" +
                     std::string(kGet)));
  bool eof = false;
  bool timed_out = false;
  auto r = read_replies(c, 2, &eof, false, &timed_out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].keep_alive);
  EXPECT_FALSE(timed_out) << "the server kept the connection open after Connection: close";
  EXPECT_TRUE(eof) << "the server must close the connection after Connection: close";
}

// RFC 9112 §9.6: a server that sends "Connection: close" must close after that response. A
// handler that sends it itself (as Go's net/http lets one) ends the connection as a client's
// "Connection: close" does: the request pipelined behind it is not answered. Also for a
// deferred answer, and with "close" among other options in any case.
TEST(http_server, handler_connection_close_ends_the_connection) {
  http::router r = basic_router();
  r.get("/bye", [](const http::request&, http::response& res) {
    res.start(200).header("connection", "keep-alive, Close").body("bye");
  });
  r.get("/bye-later", [](const http::request&, http::response& res) {
    http::deferred_response d = res.defer();
    EXPECT_FALSE(d.respond([](http::response& later) {
      later.start(200).header("Connection", "close").body("later");
    }));
  });
  test_server s(std::move(r));
  for (const char* path : {"/bye", "/bye-later"}) {
    SCOPED_TRACE(path);
    client c(s.port(), 2000);
    ASSERT_TRUE(c.send(std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\n\r\n" + kGet));
    bool eof = false;
    bool timed_out = false;
    auto replies = read_replies(c, 2, &eof, false, &timed_out);
    ASSERT_GE(replies.size(), 1u);
    EXPECT_EQ(replies[0].status, 200);
    EXPECT_FALSE(replies[0].keep_alive);
    EXPECT_EQ(replies.size(), 1u) << "a request after the handler's Connection: close was answered";
    EXPECT_FALSE(timed_out) << "the connection stayed open after the handler's Connection: close";
    EXPECT_TRUE(eof) << "the server must close after sending Connection: close";
  }
}

// A CR or LF in a header or a reason phrase (text a handler took from a decoded query string,
// say) must not end the line: it would add fields of the sender's choosing, or end the head
// early and make the rest a body or a second response (response splitting). Each is sent as a
// space, as Go's net/http does, and a header whose name holds one is dropped; the framing
// holds, so the request pipelined behind is answered as the second response.
TEST(http_server, line_breaks_in_headers_cannot_split_the_response) {
  http::router r = basic_router();
  r.get("/split", [](const http::request&, http::response& res) {
    res.start(302, "Found\r\nX-Injected: reason")
        .header("Location", "/a\r\nSet-Cookie: evil=1")
        .header("X-Bad\r\nSet-Cookie: evil=2", "v")
        .header("X-Long", "0123456789abcdef\nX-Injected: long\r\n\r\nHTTP/1.1 200 OK")
        .header("X-Tab", "a\tb")
        .body("moved");
  });
  test_server s(std::move(r));
  client c(s.port(), 2000);
  ASSERT_TRUE(c.send("GET /split HTTP/1.1\r\nHost: x\r\n\r\n" + std::string(kGet)));
  auto replies = read_replies(c, 2);
  ASSERT_GE(replies.size(), 1u);
  const proto_test::reply& moved = replies[0];
  EXPECT_EQ(moved.status, 302);
  EXPECT_EQ(moved.header("set-cookie"), "");
  EXPECT_EQ(moved.header("x-injected"), "");
  EXPECT_EQ(moved.header("location"), "/a  Set-Cookie: evil=1");
  EXPECT_EQ(moved.header("x-long"), "0123456789abcdef X-Injected: long    HTTP/1.1 200 OK");
  EXPECT_EQ(moved.header("x-tab"), "a\tb");
  EXPECT_EQ(moved.body, "moved");
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[1].status, 200);
  EXPECT_EQ(replies[1].body, "Hello, World!");
}

// RFC 9110 §5.1: a field name is a token. A handler's header with an empty name, or one with
// a space, ':', a control byte or a byte above 0x7e, went out as written: a line such as
// ": v" or "X Y: v", which a strict client refuses (the whole response is lost) and a lenient
// one may read as another field. Such a field is not sent (Go's net/http drops it too); a NUL
// in a value is sent as a space, as CR and LF are (RFC 9110 §5.5). The response and the one
// pipelined behind it are answered intact.
TEST(http_server, a_header_whose_name_is_not_a_token_is_not_sent) {
  http::router r = basic_router();
  r.get("/names", [](const http::request&, http::response& res) {
    res.start(200)
        .header("", "empty")
        .header("X Space", "v")
        .header("X:Colon", "v")
        .header(std::string_view("X\0Nul", 5), "v")
        .header("X-High\x80", "v")
        .header("X-Tab\t", "v")
        .header("X-Nul-Value", std::string_view("a\0b", 3))
        .header("X-Good!#$%&'*+-.^_`|~", "v")
        .body("ok");
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  client c(s.port(), 2000);
  ASSERT_TRUE(c.send("GET /names HTTP/1.1\r\nHost: x\r\n\r\n" + std::string(kGet)));
  std::string all;
  while (all.find("Hello, World!") == std::string::npos) {
    std::string more = c.recv_some();
    ASSERT_FALSE(more.empty()) << all;
    all += more;
  }
  const std::string head = all.substr(0, all.find("\r\n\r\n") + 2);
  EXPECT_EQ(head.find("empty"), std::string::npos) << head;
  EXPECT_EQ(head.find("X Space"), std::string::npos) << head;
  EXPECT_EQ(head.find("X:Colon"), std::string::npos) << head;
  EXPECT_EQ(head.find("Nul: "), std::string::npos) << head;
  EXPECT_EQ(head.find("X-High"), std::string::npos) << head;
  EXPECT_EQ(head.find("X-Tab"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nX-Nul-Value: a b\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nX-Good!#$%&'*+-.^_`|~: v\r\n"), std::string::npos) << head;
  // And a client's parser takes both responses.
  client c2(s.port(), 2000);
  ASSERT_TRUE(c2.send("GET /names HTTP/1.1\r\nHost: x\r\n\r\n" + std::string(kGet)));
  auto replies = read_replies(c2, 2);
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[0].body, "ok");
  EXPECT_EQ(replies[1].body, "Hello, World!");
}

// header() has an overload for char arrays (string literals) whose token check runs at compile
// time; an array holding a shorter string, an array filled at run time, and a std::string name
// must get the same answer as a literal.
TEST(http_server, header_names_from_arrays_and_strings_are_checked_like_literals) {
  http::router r = basic_router();
  r.get("/names", [](const http::request&, http::response& res) {
    char short_token[32] = "X-Short";    // the string is shorter than the array
    char short_bad[32] = "X Short-Bad";  // ... and not a token
    char full_token[] = "X-Full";        // filled at run time below, then exactly full
    char full_bad[] = "X-Full-Bad";
    full_token[1] = '_';
    full_bad[1] = ':';
    const std::string str_token = "X-String";
    const std::string str_bad = "X String";
    res.start(200)
        .header(short_token, "1")
        .header(short_bad, "2")
        .header(full_token, "3")
        .header(full_bad, "4")
        .header(str_token, "5")
        .header(str_bad, "6")
        .body("ok");
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  client c(s.port(), 2000);
  ASSERT_TRUE(c.send("GET /names HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string all;
  while (all.find("\r\n\r\nok") == std::string::npos) {
    std::string more = c.recv_some();
    ASSERT_FALSE(more.empty()) << all;
    all += more;
  }
  const std::string head = all.substr(0, all.find("\r\n\r\n") + 2);
  EXPECT_NE(head.find("\r\nX-Short: 1\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nX_Full: 3\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nX-String: 5\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("Short-Bad"), std::string::npos) << head;
  EXPECT_EQ(head.find("Full-Bad"), std::string::npos) << head;
  EXPECT_EQ(head.find("X String"), std::string::npos) << head;
  EXPECT_EQ(head.find(std::string(1, '\0')), std::string::npos) << "a NUL in the head";
}

TEST(http_server, method_not_allowed_405_and_handler_exception_500) {
  test_server s(basic_router());
  client c(s.port());
  ASSERT_TRUE(
      c.send("DELETE /plaintext HTTP/1.1\r\nHost: x\r\n\r\nGET /throw HTTP/1.1\r\n"
             "Host: x\r\n\r\n"));
  bool eof = false;
  bool timed_out = false;
  auto r = read_replies(c, 2, &eof, false, &timed_out);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].status, 405);
  EXPECT_EQ(r[0].header("allow"), "GET, HEAD");  // an exact route's 405 lists its methods
  EXPECT_EQ(r[1].status, 500);
  EXPECT_FALSE(timed_out) << "after a 500 the connection stayed open";
  EXPECT_TRUE(eof) << "after a 500 the connection closes";
}

TEST(http_server, chunked_response_streams) {
  test_server s(basic_router());
  client c(s.port());
  ASSERT_TRUE(c.send("GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = read_replies(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].header("transfer-encoding"), "chunked");
  EXPECT_EQ(r[0].body, "part1,part2");
}

TEST(http_server, request_split_byte_by_byte_over_the_wire) {
  test_server s(basic_router());
  client c(s.port());
  std::string req = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
  for (char ch : req) {
    ASSERT_TRUE(c.send(std::string(1, ch)));
    std::this_thread::sleep_for(1ms);
  }
  auto r = read_replies(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].body, "hello");
}

TEST(http_server, idle_keep_alive_connection_closed) {
  http::server_options o;
  o.keep_alive_timeout = 300ms;
  test_server s(basic_router(), o);
  client c(s.port());
  ASSERT_TRUE(c.send(kGet));
  ASSERT_EQ(read_replies(c, 1).size(), 1u);
  auto t0 = std::chrono::steady_clock::now();
  bool eof = false;
  std::string rest = c.recv_until_eof(&eof);
  EXPECT_TRUE(eof);
  EXPECT_TRUE(rest.empty()) << "idle close sends nothing";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

TEST(http_server, many_connections_across_loops) {
  evnet::engine_options eo;
  eo.loops = 2;
  test_server s(basic_router(), {}, eo);
  std::vector<std::thread> ts;
  ts.reserve(4);
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        client c(s.port());
        std::string batch;
        for (int k = 0; k < 5; ++k) {
          batch += kGet;
        }
        if (!c.send(batch)) {
          return;
        }
        auto r = read_replies(c, 5);
        if (r.size() == 5 && r[4].body == "Hello, World!") {
          ++ok;
        }
      }
    });
  }
  for (auto& t : ts) {
    t.join();
  }
  EXPECT_EQ(ok.load(), 80);
}

// ---------------- responses the RFCs constrain (found by review; each failed before) ----------

http::router rfc_router(std::atomic<int>* upgrades = nullptr,
                        std::atomic<int>* big_calls = nullptr) {
  http::router r = basic_router();
  r.get("/nocontent", [](const http::request&, http::response& res) { res.start(204).body(""); });
  r.get("/notmodified",
        [](const http::request&, http::response& res) { res.start(304).body("ignored"); });
  r.get("/chunked204", [](const http::request&, http::response& res) {
    res.start(204).begin_chunked();
    res.chunk("ignored");
    res.end_chunked();
  });
  r.get("/big", [big_calls](const http::request&, http::response& res) {
    if (big_calls != nullptr) {
      (*big_calls)++;
    }
    res.start(200).body(std::string(std::size_t{32} * 1024, 'b'));
  });
  r.get("/huge", [](const http::request&, http::response& res) {
    res.start(200).body(std::string(std::size_t{4} << 20, 'h'));
  });
  r.upgrade("/up",
            [upgrades](evnet::conn&, const http::message&,
                       std::string& out) -> std::unique_ptr<http::upgraded_protocol> {
              if (upgrades != nullptr) {
                (*upgrades)++;
              }
              out +=
                  "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
              return nullptr;
            });
  return r;
}

// RFC 9110 §9.3.2: no content in a response to HEAD, the 500 for a throwing handler included.
TEST(http_server, head_request_500_has_no_body) {
  test_server s(rfc_router());
  client c(s.port());
  ASSERT_TRUE(c.send("HEAD /throw HTTP/1.1\r\nHost: x\r\n\r\n"));
  bool eof = false;
  const std::string all = c.recv_until_eof(&eof);
  EXPECT_TRUE(eof);
  ASSERT_EQ(all.rfind("HTTP/1.1 500", 0), 0u) << all;
  EXPECT_EQ(all.find("\r\n\r\n") + 4, all.size()) << "bytes after the head: " << all;
}

// RFC 9110 §9.3.2: the server's own error answers to a HEAD request carry no content either
// (Content-Length may state the size). They sent their text as a body, which a client reading
// a response to HEAD takes for the start of the next response.
TEST(http_server, error_answers_to_head_have_no_body) {
  http::server_options o;
  o.limits.max_body_bytes = 1000;
  o.limits.max_target_bytes = 256;
  o.header_timeout = 300ms;
  test_server s(rfc_router(), o);
  ASSERT_GT(s.port(), 0);
  struct tcase {
    const char* name;
    std::string request;
    const char* status;
  };
  const tcase cases[] = {
      {"400 field", "HEAD /plaintext HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", "HTTP/1.1 400"},
      {"400 request line", "HEAD  /plaintext HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400"},
      {"413", "HEAD /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
       "HTTP/1.1 413"},
      {"414 line", "HEAD /" + std::string(1000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n",
       "HTTP/1.1 414"},
      {"414 unfinished line", "HEAD /" + std::string(1000, 'a'), "HTTP/1.1 414"},
      {"414 line over the head limit", "HEAD /" + std::string(10000, 'a') + " HTTP/1.1\r\n\r\n",
       "HTTP/1.1 414"},
      {"431", "HEAD /plaintext HTTP/1.1\r\nHost: x\r\nX: " + std::string(20000, 'h') + "\r\n\r\n",
       "HTTP/1.1 431"},
      {"501", "HEAD /plaintext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
       "HTTP/1.1 501"},
      {"505", "HEAD /plaintext HTTP/2.0\r\nHost: x\r\n\r\n", "HTTP/1.1 505"},
      {"408", "HEAD /plaintext HTTP/1.1\r\nHo", "HTTP/1.1 408"},
      // The request line never ended: its method token and the space after it tell HEAD.
      {"408 unfinished request line", "HEAD /plaintext HTTP/1.1", "HTTP/1.1 408"},
      {"408 method and space only", "HEAD ", "HTTP/1.1 408"},
      {"408 after empty lines", "\r\n\r\nHEAD /pl", "HTTP/1.1 408"},
  };
  for (const tcase& t : cases) {
    SCOPED_TRACE(t.name);
    client c(s.port());
    ASSERT_TRUE(c.send(t.request));
    bool eof = false;
    const std::string all = c.recv_until_eof(&eof);
    EXPECT_TRUE(eof);
    ASSERT_EQ(all.rfind(t.status, 0), 0u) << all;
    EXPECT_NE(all.find("Content-Length: "), std::string::npos) << all;
    EXPECT_EQ(all.find("\r\n\r\n") + 4, all.size()) << "bytes after the head: " << all;
  }
}

// RFC 9110 §15: a status is three digits, 100..599, and the one response to a request is a
// final one (2xx..5xx). start() wrote any int: "HTTP/1.1 000", digits out of range for -5 and
// 1000, and a 1xx after which the client waits for the final response and takes the next one
// for it. Such a status is sent as 500, the rest of the response as written.
TEST(http_server, a_status_that_is_not_a_final_three_digit_code_is_sent_as_500) {
  http::router r = basic_router();
  r.get("/status/:n", [](const http::request& req, http::response& res) {
    res.start(std::stoi(std::string(req.param("n"))), "Mine").header("X-Set", "1").body("b");
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  const int bad[] = {0, 42, 99, 100, 101, 199, 600, 1000, -5};
  std::string reqs;
  for (int n : bad) {
    reqs += "GET /status/" + std::to_string(n) + " HTTP/1.1\r\nHost: x\r\n\r\n";
  }
  reqs += "GET /status/299 HTTP/1.1\r\nHost: x\r\n\r\n";
  reqs += kGet;
  client c(s.port());
  ASSERT_TRUE(c.send(reqs));
  auto rs = read_replies(c, std::size(bad) + 2);
  ASSERT_EQ(rs.size(), std::size(bad) + 2);
  for (std::size_t i = 0; i < std::size(bad); ++i) {
    SCOPED_TRACE(bad[i]);
    EXPECT_EQ(rs[i].status, 500);
    EXPECT_EQ(rs[i].header("x-set"), "1");
    EXPECT_EQ(rs[i].body, "b");
  }
  EXPECT_EQ(rs[std::size(bad)].status, 299);
  EXPECT_EQ(rs.back().body, "Hello, World!");
}

// RFC 9110 §6.4.1, §8.6: 1xx, 204 and 304 have no content and no Content-Length, whatever the
// handler passes; the pipelined response after them is framed correctly.
TEST(http_server, no_content_statuses_carry_no_length_and_no_body) {
  test_server s(rfc_router());
  client c(s.port());
  ASSERT_TRUE(c.send(
      "GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\nGET /notmodified HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /chunked204 HTTP/1.1\r\nHost: x\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string all;
  while (all.find("Hello, World!") == std::string::npos) {
    std::string more = c.recv_some();
    ASSERT_FALSE(more.empty()) << "so far: " << all;
    all += more;
  }
  const std::size_t plain = all.find("HTTP/1.1 200");
  ASSERT_NE(plain, std::string::npos);
  const std::string first_three = all.substr(0, plain);
  EXPECT_EQ(first_three.find("Content-Length"), std::string::npos) << first_three;
  EXPECT_EQ(first_three.find("Transfer-Encoding"), std::string::npos) << first_three;
  EXPECT_EQ(first_three.find("ignored"), std::string::npos) << first_three;
  // Three heads, each ending in an empty line, and nothing between them.
  std::size_t at = 0;
  for (const char* status : {"HTTP/1.1 204", "HTTP/1.1 304", "HTTP/1.1 204"}) {
    ASSERT_EQ(first_three.compare(at, 12, status), 0) << first_three;
    at = first_three.find("\r\n\r\n", at) + 4;
  }
  EXPECT_EQ(at, first_three.size());
  EXPECT_TRUE(all.ends_with("Hello, World!"));
}

// RFC 9112 §6.1: no Transfer-Encoding to an HTTP/1.0 client; a streamed body is sent as it is
// and ended by closing the connection, even when the client asked for keep-alive.
TEST(http_server, streamed_body_to_http10_is_unframed_and_ends_with_the_close) {
  for (const char* extra : {"", "Connection: keep-alive\r\n"}) {
    SCOPED_TRACE(extra);
    test_server s(rfc_router());
    client c(s.port());
    ASSERT_TRUE(c.send(std::string("GET /chunked HTTP/1.0\r\n") + extra + "\r\n"));
    bool eof = false;
    const std::string all = c.recv_until_eof(&eof);
    EXPECT_TRUE(eof);
    EXPECT_EQ(all.find("Transfer-Encoding"), std::string::npos) << all;
    EXPECT_NE(all.find("Connection: close"), std::string::npos) << all;
    EXPECT_TRUE(all.ends_with("\r\n\r\npart1,part2")) << all;
  }
}

// An HTTP/1.0 client that asked for keep-alive is told once what happens to the connection.
// start() confirmed "Connection: keep-alive" before the handler's choice was known, so a
// streamed body (ended by the close) added "Connection: close" beside it, and so did a
// handler's own "Connection: close": two contradicting fields.
// One response read from c: to the EOF when the server closes after it (connection "close"),
// else until it ends with body_end.
std::string read_response(client& c, std::string_view connection, std::string_view body_end) {
  std::string all;
  if (connection == "close") {
    bool eof = false;
    all = c.recv_until_eof(&eof);
    EXPECT_TRUE(eof);
    return all;
  }
  while (!all.ends_with(body_end)) {
    std::string more = c.recv_some();
    if (more.empty()) {
      ADD_FAILURE() << "the response stopped short: " << all;
      break;
    }
    all += more;
  }
  return all;
}

// The Connection fields (any case) of a response head.
std::size_t connection_fields(std::string_view head) {
  std::size_t fields = 0;
  for (std::size_t at = head.find("\r\n"); at != std::string_view::npos;
       at = head.find("\r\n", at + 1)) {
    if (http::iequals(head.substr(at + 2, 12), "Connection: ")) {
      ++fields;
    }
  }
  return fields;
}

TEST(http_server, http10_keep_alive_response_has_one_connection_field) {
  http::router r = rfc_router();
  r.get("/bye", [](const http::request&, http::response& res) {
    res.start(200).header("Connection", "close").body("bye");
  });
  r.get("/bye-chunked", [](const http::request&, http::response& res) {
    res.start(200).header("Connection", "close").begin_chunked();
    res.chunk("bye");
    res.end_chunked();
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  struct tcase {
    const char* path;
    const char* connection;  // the one Connection value expected
    const char* body_end;
  };
  for (const tcase& t :
       {tcase{"/chunked", "close", "\r\n\r\npart1,part2"}, tcase{"/bye", "close", "\r\n\r\nbye"},
        tcase{"/bye-chunked", "close", "\r\n\r\nbye"},
        tcase{"/nocontent", "keep-alive", "\r\n\r\n"},
        tcase{"/plaintext", "keep-alive", "\r\n\r\nHello, World!"}}) {
    SCOPED_TRACE(t.path);
    client c(s.port());
    ASSERT_TRUE(
        c.send(std::string("GET ") + t.path + " HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    const std::string all = read_response(c, t.connection, t.body_end);
    const std::string head = all.substr(0, all.find("\r\n\r\n") + 2);
    EXPECT_EQ(connection_fields(head), 1u) << head;
    EXPECT_NE(head.find(std::string("\r\nConnection: ") + t.connection + "\r\n"), std::string::npos)
        << head;
    EXPECT_TRUE(all.ends_with(t.body_end)) << all;
  }
}

// A handler's own "Connection: keep-alive" on a response after which the server closes (the
// client asked to close, an HTTP/1.0 request without keep-alive, a body streamed to a 1.0
// client, which the close ends) went out beside the server's "Connection: close": two fields
// that contradict each other (the client may wait for a next response on a connection that
// closes). And to a 1.0 keep-alive request the handler's keep-alive was sent beside the
// server's confirmation. The wire carries one Connection field, saying what the server does
// (as Go's net/http replaces the handler's field when it closes after the reply); to an
// HTTP/1.1 request that stays open the handler's own field is sent as it wrote it.
TEST(http_server, a_handlers_keep_alive_does_not_contradict_the_servers_close) {
  http::router r = basic_router();
  r.get("/ka", [](const http::request&, http::response& res) {
    res.start(200).header("Connection", "keep-alive").body("ka");
  });
  r.get("/ka-chunked", [](const http::request&, http::response& res) {
    res.start(200).header("connection", "Keep-Alive").begin_chunked();
    res.chunk("ka");
    res.end_chunked();
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  struct tcase {
    const char* name;
    const char* request;
    const char* connection;  // the one Connection value expected
    const char* body_end;
  };
  for (const tcase& t :
       {tcase{"1.1 close", "GET /ka HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "close",
              "\r\n\r\nka"},
        tcase{"1.1 close chunked",
              "GET /ka-chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "close",
              "0\r\n\r\n"},
        tcase{"1.0", "GET /ka HTTP/1.0\r\n\r\n", "close", "\r\n\r\nka"},
        tcase{"1.0 keep-alive streamed",
              "GET /ka-chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "close", "\r\n\r\nka"},
        tcase{"1.0 keep-alive", "GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "keep-alive",
              "\r\n\r\nka"},
        tcase{"1.1", "GET /ka HTTP/1.1\r\nHost: x\r\n\r\n", "keep-alive", "\r\n\r\nka"}}) {
    SCOPED_TRACE(t.name);
    client c(s.port(), 2000);
    ASSERT_TRUE(c.send(t.request));
    const std::string all = read_response(c, t.connection, t.body_end);
    const std::string head = all.substr(0, all.find("\r\n\r\n") + 2);
    EXPECT_EQ(connection_fields(head), 1u) << head;
    EXPECT_NE(head.find(std::string("onnection: ") + t.connection + "\r\n"), std::string::npos)
        << head;
    EXPECT_TRUE(all.ends_with(t.body_end)) << all;
  }
}

// The value of the one Connection field of a response head ("" if none; the test above checks
// there is one).
std::string connection_value(std::string_view head) {
  for (std::size_t at = head.find("\r\n"); at != std::string_view::npos;
       at = head.find("\r\n", at + 1)) {
    if (http::iequals(head.substr(at + 2, 12), "Connection: ")) {
      const std::size_t start = at + 14;
      return std::string(head.substr(start, head.find("\r\n", start) - start));
    }
  }
  return {};
}

// Where the server writes a Connection field itself (the last response, every HTTP/1.0 one)
// the handler's whole Connection header was dropped (ecc3951), its other options with it: a
// hop-by-hop field it names ("X-Hop": a proxy must then remove X-Hop), an "upgrade". RFC 9110
// §7.6.1: the field is a list of options; one field carries them all, the server's "close" (or
// an HTTP/1.0 keep-alive's answer) among them, each option once and never "keep-alive" beside
// "close" (the handler's keep-alive is what is dropped). Several Connection headers from the
// handler are one list too, and a deferred response whose head spans two fills is treated
// alike.
TEST(http_server, a_handlers_other_connection_options_are_kept_beside_the_servers_close) {
  http::router r = basic_router();
  r.get("/hop", [](const http::request&, http::response& res) {
    res.start(200).header("Connection", "X-Hop, keep-alive").header("X-Hop", "1").body("hop");
  });
  r.get("/hop-chunked", [](const http::request&, http::response& res) {
    res.start(200).header("Connection", "keep-alive , X-Hop").header("X-Hop", "1");
    res.begin_chunked();
    res.chunk("hop");
    res.end_chunked();
  });
  r.get("/two-fields", [](const http::request&, http::response& res) {
    res.start(200).header("Connection", "X-Hop").header("connection", "upgrade, x-hop");
    res.header("Upgrade", "y").body("hop");
  });
  r.get("/own-close", [](const http::request&, http::response& res) {
    res.start(200).header("Connection", "keep-alive").header("Connection", "X-Hop, close");
    res.body("hop");
  });
  r.get("/hop-deferred", [](const http::request&, http::response& res) {
    http::deferred_response d = res.defer();
    (void)d.respond([](http::response& w) { w.start(200).header("Connection", "X-Hop"); });
    (void)d.respond([](http::response& w) { w.header("X-Hop", "1").body("hop"); });
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  struct tcase {
    const char* name;
    const char* request;
    const char* connection;  // the one Connection field's value expected
    bool closes;
    const char* body_end;
  };
  const std::string close11 = " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  for (const tcase& t : {
           tcase{"1.1 close", "GET /hop", "close, X-Hop", true, "\r\n\r\nhop"},
           tcase{"1.1 close chunked", "GET /hop-chunked", "close, X-Hop", true, "0\r\n\r\n"},
           tcase{"1.1 close, two fields", "GET /two-fields", "close, X-Hop, upgrade", true,
                 "\r\n\r\nhop"},
           tcase{"1.1 close, deferred", "GET /hop-deferred", "close, X-Hop", true, "\r\n\r\nhop"},
           tcase{"1.0", "GET /hop HTTP/1.0\r\n\r\n", "close, X-Hop", true, "\r\n\r\nhop"},
           tcase{"1.0 keep-alive", "GET /hop HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                 "X-Hop, keep-alive", false, "\r\n\r\nhop"},
           tcase{"1.0 keep-alive streamed",
                 "GET /hop-chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "X-Hop, close",
                 true, "\r\n\r\nhop"},
           tcase{"1.0 keep-alive, deferred",
                 "GET /hop-deferred HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                 "X-Hop, keep-alive", false, "\r\n\r\nhop"},
           tcase{"1.1", "GET /hop HTTP/1.1\r\nHost: x\r\n\r\n", "X-Hop, keep-alive", false,
                 "\r\n\r\nhop"},
           tcase{"1.1, two fields", "GET /two-fields HTTP/1.1\r\nHost: x\r\n\r\n", "X-Hop, upgrade",
                 false, "\r\n\r\nhop"},
           tcase{"1.1, the handler's close", "GET /own-close HTTP/1.1\r\nHost: x\r\n\r\n",
                 "X-Hop, close", true, "\r\n\r\nhop"},
       }) {
    SCOPED_TRACE(t.name);
    client c(s.port(), 2000);
    std::string request = t.request;
    if (request.find(" HTTP/") == std::string::npos) {
      request += close11;
    }
    ASSERT_TRUE(c.send(request));
    const std::string all = read_response(c, t.closes ? "close" : "", t.body_end);
    const std::string head = all.substr(0, all.find("\r\n\r\n") + 2);
    EXPECT_EQ(connection_fields(head), 1u) << head;
    EXPECT_EQ(connection_value(head), t.connection) << head;
    EXPECT_TRUE(all.ends_with(t.body_end)) << all;
  }
}

// RFC 9110 §10.1.1: a client that sends "Expect: 100-continue" waits before sending the body so
// that a request refused on its head need not send it. The server sent "100 Continue" to every
// such request, also to one that no route takes, and answered its 404 or 405 only after reading
// the body it had just asked for (up to the body limit). It now answers such a request at once,
// without the 100 and with "Connection: close" (the body, if the client sends it anyway, is
// read away while the connection lingers), as Go's net/http does (it sends the 100 only when a
// handler reads the body); a routed request is still told to continue. Both with and without
// streaming routes (which take another path at the head).
TEST(http_server, an_expectation_no_route_takes_is_refused_before_the_body) {
  for (bool streams : {false, true}) {
    SCOPED_TRACE(streams ? "with a streaming route" : "buffered routes only");
    http::router r = basic_router();
    if (streams) {
      r.stream(http::method::put, "/stream",
               [](const http::request&, http::response& res) -> std::unique_ptr<http::body_reader> {
                 res.start(403).body("no\n");
                 return nullptr;
               });
    }
    test_server s(std::move(r));
    ASSERT_GT(s.port(), 0);
    struct tcase {
      const char* request_line;
      const char* status_line;
    };
    for (const tcase& t : {tcase{"POST /missing HTTP/1.1", "HTTP/1.1 404 Not Found\r\n"},
                           tcase{"PUT /plaintext HTTP/1.1", "HTTP/1.1 405 Method Not Allowed\r\n"},
                           tcase{"BREW /plaintext HTTP/1.1", "HTTP/1.1 501 Not Implemented\r\n"}}) {
      SCOPED_TRACE(t.request_line);
      client c(s.port(), 2000);
      ASSERT_TRUE(c.send(std::string(t.request_line) +
                         "\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
      bool eof = false;
      const std::string all = c.recv_until_eof(&eof);  // without sending the body
      EXPECT_TRUE(eof) << all;
      EXPECT_TRUE(all.starts_with(t.status_line)) << all;
      EXPECT_EQ(all.find("100 Continue"), std::string::npos) << all;
      EXPECT_NE(all.find("\r\nConnection: close\r\n"), std::string::npos) << all;
    }
    // A routed request is told to continue, and answered once its body came.
    client c(s.port(), 2000);
    ASSERT_TRUE(c.send(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
    EXPECT_EQ(c.recv_some(), "HTTP/1.1 100 Continue\r\n\r\n");
    ASSERT_TRUE(c.send("hello"));
    auto replies = read_replies(c, 1);
    ASSERT_EQ(replies.size(), 1u);
    EXPECT_EQ(replies[0].status, 200);
    EXPECT_EQ(replies[0].body, "hello");
  }
}

// An upgrade handler that throws (its own code, or a callback it calls, such as a WebSocket
// endpoint's subprotocol selector) let the exception out of on_traffic, which terminated the
// process: every connection of the server was lost to one request. It is answered 500 and the
// connection closed, as for a route handler, and the server goes on serving.
TEST(http_server, an_upgrade_handler_that_throws_is_answered_500) {
  http::router r = basic_router();
  r.upgrade("/up-throw",
            [](evnet::conn&, const http::message&,
               std::string& out) -> std::unique_ptr<http::upgraded_protocol> {
              out += "HTTP/1.1 101 Switching Protocols\r\n";  // half written, then a failure
              throw std::runtime_error("upgrade handler failed");
            });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  for (const char* method : {"GET", "HEAD"}) {
    SCOPED_TRACE(method);
    client c(s.port(), 2000);
    ASSERT_TRUE(c.send(std::string(kGet) + method +
                       " /up-throw HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n"
                       "Upgrade: x-proto\r\n\r\n" +
                       kGet));
    bool eof = false;
    const std::string all = c.recv_until_eof(&eof);
    EXPECT_TRUE(eof);
    const std::size_t second = all.find("HTTP/1.1", 1);
    ASSERT_NE(second, std::string::npos) << all;
    EXPECT_EQ(all.rfind("HTTP/1.1 200", 0), 0u) << all;
    EXPECT_EQ(all.compare(second, 12, "HTTP/1.1 500"), 0) << all;
    EXPECT_EQ(all.find("101"), std::string::npos) << all;
    EXPECT_EQ(all.find("HTTP/1.1", second + 1), std::string::npos) << "answered after the 500";
    if (std::string_view(method) == "HEAD") {
      EXPECT_TRUE(all.ends_with("\r\n\r\n")) << all;
    }
  }
  client after(s.port());
  ASSERT_TRUE(after.send(kGet));
  auto replies = read_replies(after, 1);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].status, 200);
}

// An upgrade request with a body is refused (400) before the upgrade handler sees it: its
// body bytes would otherwise be taken for the new protocol's.
TEST(http_server, upgrade_request_with_a_body_is_refused) {
  std::atomic<int> upgrades{0};
  test_server s(rfc_router(&upgrades));
  client c(s.port());
  ASSERT_TRUE(
      c.send("GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             "Content-Length: 5\r\n\r\nhello"));
  bool eof = false;
  auto r = read_replies(c, 1, &eof);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 400);
  EXPECT_EQ(upgrades.load(), 0);
  // Without a body the upgrade handler decides (here: 426).
  client c2(s.port());
  ASSERT_TRUE(
      c2.send("GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"));
  auto r2 = read_replies(c2, 1);
  ASSERT_EQ(r2.size(), 1u);
  EXPECT_EQ(r2[0].status, 426);
  EXPECT_EQ(upgrades.load(), 1);
}

// HTTP/1.0 has no upgrade (RFC 9110 §7.8: a server MUST ignore the field in a 1.0 request): it
// was handed to the upgrade handler. It is a plain request, routed as one (no GET route for
// /up: 404), and the upgrade handler is not called.
TEST(http_server, upgrade_field_of_an_http10_request_is_ignored) {
  std::atomic<int> upgrades{0};
  test_server s(rfc_router(&upgrades));
  ASSERT_GT(s.port(), 0);
  client c3(s.port());
  ASSERT_TRUE(c3.send("GET /up HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"));
  auto r3 = read_replies(c3, 1);
  ASSERT_EQ(r3.size(), 1u);
  EXPECT_EQ(r3[0].status, 404);
  EXPECT_EQ(upgrades.load(), 0);
}

// The keep-alive timeout is for a connection with nothing in progress: a client still
// downloading a response is not idle. (It used to be closed mid-download once the timeout
// and close_linger had passed.)
TEST(http_server, keep_alive_timeout_does_not_cut_a_slow_download) {
  http::server_options o;
  o.keep_alive_timeout = 100ms;
  evnet::engine_options eo;
  eo.close_linger = 100ms;
  eo.send_buffer = 16 * 1024;
  test_server s(rfc_router(), o, eo);
  client c(s.port());
  int small = 16 * 1024;
  ::setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  ASSERT_TRUE(c.send("GET /huge HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string all;
  const std::size_t want = std::size_t{4} << 20;
  const auto t0 = std::chrono::steady_clock::now();
  while (all.size() < want + 40 && std::chrono::steady_clock::now() - t0 < 20s) {
    std::string more = c.recv_some();
    if (more.empty()) {
      break;
    }
    all += more;
    if (std::chrono::steady_clock::now() - t0 < 800ms) {
      std::this_thread::sleep_for(20ms);  // slow for well past the keep-alive timeout
    }
  }
  const std::size_t head = all.find("\r\n\r\n");
  ASSERT_NE(head, std::string::npos);
  EXPECT_EQ(all.size() - (head + 4), want) << "the download was cut";
}

// A client that pipelines its requests and then shuts its sending side (nc -N, a batch
// client) is owed every answer. When max_pending_output had paused reading, the EOF was read as
// reading resumed, before the requests left in the input were offered again, and the server
// closed with them unanswered.
TEST(http_server, pipelined_requests_before_a_half_close_are_all_answered) {
  http::server_options o;
  o.max_pending_output = 64 * 1024;
  evnet::engine_options eo;
  eo.send_buffer = 16 * 1024;
  test_server s(rfc_router(), o, eo);
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  int small = 16 * 1024;
  ::setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  constexpr int kRequests = 100;  // 3.2 MiB of responses, 64 KiB of which may wait unsent
  std::string reqs;
  for (int i = 0; i < kRequests; ++i) {
    reqs += "GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
  }
  ASSERT_TRUE(c.send(reqs));
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  std::this_thread::sleep_for(300ms);  // the server pauses with the requests and the EOF unread
  bool eof = false;
  auto r = read_replies(c, kRequests, &eof);
  ASSERT_EQ(r.size(), std::size_t{kRequests}) << "the connection closed with requests unanswered";
  for (const auto& rep : r) {
    EXPECT_EQ(rep.status, 200);
    EXPECT_EQ(rep.body.size(), std::size_t{32} * 1024);
  }
  EXPECT_TRUE(eof) << "the server closes once the last request is answered";
}

// Pipelined requests from a client that never reads: the server stops answering (and
// reading) once max_pending_output bytes wait, instead of buffering every response; when the
// client reads, the rest are answered, in order.
TEST(http_server, pipelined_requests_wait_while_responses_are_unread) {
  std::atomic<int> calls{0};
  http::server_options o;
  o.max_pending_output = 64 * 1024;
  evnet::engine_options eo;
  eo.send_buffer = 16 * 1024;
  test_server s(rfc_router(nullptr, &calls), o, eo);
  client c(s.port());
  int small = 16 * 1024;
  ::setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  constexpr int kRequests = 200;  // 6.4 MiB of responses
  std::string reqs;
  for (int i = 0; i < kRequests; ++i) {
    reqs += "GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
  }
  ASSERT_TRUE(c.send(reqs));
  std::this_thread::sleep_for(300ms);
  // The limit plus what the two sockets' buffers hold, in 32 KiB responses: well under 200.
  EXPECT_LT(calls.load(), 40) << "responses were produced for a client that does not read";
  auto r = read_replies(c, kRequests);
  ASSERT_EQ(r.size(), static_cast<std::size_t>(kRequests));
  for (const auto& x : r) {
    EXPECT_EQ(x.status, 200);
    EXPECT_EQ(x.body.size(), std::size_t{32} * 1024);
  }
  EXPECT_EQ(calls.load(), kRequests);
}

// ---------------- deferred responses (response::defer) ----------------

// Worker threads that answer deferred responses after a delay, joined by the destructor.
class workers {
 public:
  ~workers() {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& t : threads_) {
      t.join();
    }
  }
  void later(std::chrono::milliseconds delay, std::function<void()> fn) {
    std::lock_guard<std::mutex> lk(mu_);
    threads_.emplace_back([delay, fn = std::move(fn)] {
      std::this_thread::sleep_for(delay);
      fn();
    });
  }

 private:
  std::mutex mu_;
  std::vector<std::thread> threads_;
};

// GET /slow/:ms answers "slow <ms>" from a worker thread after that many milliseconds;
// GET /plaintext answers at once; GET /stream streams three chunks over time from a worker.
http::router deferred_router(workers& w, std::atomic<int>* refused = nullptr) {
  http::router r = basic_router();
  r.get("/slow/:ms", [&w, refused](const http::request& req, http::response& res) {
    const std::string ms(req.param("ms"));
    http::deferred_response d = res.defer();
    w.later(std::chrono::milliseconds(std::stoi(ms)), [d, ms, refused]() mutable {
      if (d.respond(200, "text/plain", "slow " + ms) && refused != nullptr) {
        ++*refused;
      }
    });
  });
  r.get("/stream", [&w](const http::request&, http::response& res) {
    http::deferred_response d = res.defer();
    w.later(10ms, [d]() mutable {
      EXPECT_FALSE(d.respond([](http::response& r) { r.start(200).begin_chunked(); }));
      for (const char* part : {"a,", "b,", "c"}) {
        std::this_thread::sleep_for(20ms);
        EXPECT_FALSE(d.respond([part](http::response& r) { r.chunk(part); }));
      }
      EXPECT_FALSE(d.respond([](http::response& r) { r.end_chunked(); }));
    });
  });
  return r;
}

// respond(status, "", body): no Content-Type at all. It used to send an empty
// "Content-Type: " field, which RFC 9110 §8.3's grammar (type "/" subtype) does not allow.
TEST(http_deferred, shorthand_without_a_content_type_sends_no_content_type_field) {
  workers w;
  http::router r = basic_router();
  r.get("/untyped", [&w](const http::request&, http::response& res) {
    http::deferred_response d = res.defer();
    w.later(1ms, [d]() mutable { EXPECT_FALSE(d.respond(200, "", "x")); });
  });
  test_server s(std::move(r));
  client c(s.port());
  ASSERT_TRUE(c.send("GET /untyped HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string all = read_response(c, "keep-alive", "\r\n\r\nx");
  EXPECT_EQ(all.find("Content-Type"), std::string::npos) << all;
  EXPECT_TRUE(all.starts_with("HTTP/1.1 200 ")) << all;
}

// Pipelined requests behind a deferred one wait, and the answers come back in request order.
TEST(http_deferred, answers_from_another_thread_keep_pipelined_order) {
  workers w;
  test_server s(deferred_router(w));
  client c(s.port());
  ASSERT_TRUE(c.send(std::string(kGet) + "GET /slow/80 HTTP/1.1\r\nHost: x\r\n\r\n" + kGet +
                     "GET /slow/10 HTTP/1.1\r\nHost: x\r\n\r\n" + kGet));
  auto r = read_replies(c, 5);
  ASSERT_EQ(r.size(), 5u);
  const char* want[] = {"Hello, World!", "slow 80", "Hello, World!", "slow 10", "Hello, World!"};
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(r[i].status, 200) << i;
    EXPECT_EQ(r[i].body, want[i]) << i;
    EXPECT_TRUE(r[i].keep_alive) << i;
  }
}

// A deferred response may be streamed over several calls; the connection then carries on.
TEST(http_deferred, a_chunked_stream_over_time_then_keep_alive) {
  workers w;
  test_server s(deferred_router(w));
  client c(s.port());
  ASSERT_TRUE(c.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = read_replies(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].header("transfer-encoding"), "chunked");
  EXPECT_EQ(r[0].body, "a,b,c");
  ASSERT_TRUE(c.send(kGet));
  r = read_replies(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].body, "Hello, World!");
}

// No keep-alive, header or body timeout runs while the application works on an answer.
TEST(http_deferred, timeouts_do_not_run_while_an_answer_is_awaited) {
  workers w;
  http::server_options o;
  o.keep_alive_timeout = 150ms;
  o.header_timeout = 150ms;
  test_server s(deferred_router(w), o);
  client c(s.port());
  ASSERT_TRUE(c.send("GET /slow/600 HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = read_replies(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].body, "slow 600");
  ASSERT_TRUE(c.send(kGet));
  EXPECT_EQ(read_replies(c, 1).size(), 1u);
}

// Dropping the handle unanswered, or a fill that throws before starting, is a 500 and the
// connection closes (what was pipelined behind is not answered: the server cannot tell how
// the application meant to go on). defer() after start() gives an empty handle.
TEST(http_deferred, abandoned_or_failing_answers_are_500_and_close) {
  http::router r;
  r.get("/drop", [](const http::request&, http::response& res) { (void)res.defer(); });
  r.get("/throw", [](const http::request&, http::response& res) {
    http::deferred_response d = res.defer();
    EXPECT_FALSE(d.respond([](http::response&) -> void { throw std::runtime_error("x"); }));
  });
  r.get("/late", [](const http::request&, http::response& res) {
    res.start(200);
    http::deferred_response d = res.defer();
    EXPECT_FALSE(static_cast<bool>(d));
    EXPECT_EQ(d.respond(200, "text/plain", "x"), evnet::errc::invalid_argument);
    res.header("Content-Type", "text/plain").body("started");
  });
  test_server s(std::move(r));
  for (const char* path : {"/drop", "/throw"}) {
    client c(s.port());
    ASSERT_TRUE(c.send(std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\n\r\n" + kGet));
    bool eof = false;
    auto replies = read_replies(c, 2, &eof);
    ASSERT_EQ(replies.size(), 1u) << path;
    EXPECT_EQ(replies[0].status, 500) << path;
    EXPECT_TRUE(eof) << path;
  }
  client c(s.port());
  ASSERT_TRUE(c.send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto replies = read_replies(c, 1);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].body, "started");
}

// A client that asked to close gets the deferred answer, then the close. One that shuts its
// sending side while waiting is taken for gone (as nginx and Go's net/http do): the answer is
// dropped, the connection closed, and respond() reports errc::closed.
TEST(http_deferred, connection_close_ends_after_the_answer_and_half_close_drops_it) {
  workers w;
  std::atomic<int> refused{0};
  test_server s(deferred_router(w, &refused));
  {
    client c(s.port());
    ASSERT_TRUE(c.send("GET /slow/50 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    bool eof = false;
    auto r = read_replies(c, 2, &eof);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].body, "slow 50");
    EXPECT_FALSE(r[0].keep_alive);
    EXPECT_TRUE(eof);
  }
  EXPECT_EQ(refused.load(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send("GET /slow/300 HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  bool eof = false;
  auto r = read_replies(c, 1, &eof);
  EXPECT_TRUE(r.empty());
  EXPECT_TRUE(eof);
  for (int i = 0; i < 200 && refused.load() == 0; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(refused.load(), 1) << "the worker's respond() was told the connection closed";
}

// Once the connection is gone, respond() reports errc::closed and done() is true.
TEST(http_deferred, respond_after_the_client_left_reports_closed) {
  std::mutex mu;
  http::deferred_response kept;
  std::atomic<bool> deferred{false};
  http::router r;
  r.get("/keep", [&](const http::request&, http::response& res) {
    std::lock_guard<std::mutex> lk(mu);
    kept = res.defer();
    deferred = true;
  });
  test_server s(std::move(r));
  {
    client c(s.port());
    ASSERT_TRUE(c.send("GET /keep HTTP/1.1\r\nHost: x\r\n\r\n"));
    for (int i = 0; i < 500 && !deferred; ++i) {
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_TRUE(deferred);
  }
  std::lock_guard<std::mutex> lk(mu);
  for (int i = 0; i < 500 && !kept.done(); ++i) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(kept.done());
  EXPECT_EQ(kept.respond(200, "text/plain", "nobody listens"), evnet::errc::closed);
}

// An engine stop lets a pending deferred answer arrive within the grace period, then closes.
TEST(http_deferred, stop_waits_for_a_pending_answer_within_the_grace_period) {
  workers w;
  test_server s(deferred_router(w));
  client c(s.port());
  ASSERT_TRUE(c.send("GET /slow/300 HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::this_thread::sleep_for(50ms);  // the request is being worked on
  std::thread stopper([&] { s.stop(); });
  bool eof = false;
  auto r = read_replies(c, 2, &eof);
  stopper.join();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].body, "slow 300");
  EXPECT_TRUE(eof);
}

}  // namespace
