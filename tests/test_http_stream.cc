// Streaming request bodies (router::stream, http::body_reader) over real sockets: pieces arrive
// as they are read and are never buffered whole; refusals at the head and mid-body; limits;
// client resets, timeouts and malformed bodies reach the reader as on_abort; deferred answers.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "evnet/error.h"
#include "evnet/http/server.h"
#include "http_server_test_util.h"
#include "http_test_util.h"

namespace http = evnet::http;
using namespace std::chrono_literals;
using proto_test::client;
using proto_test::read_replies;
using proto_test::test_server;

namespace {

// What the readers of one test saw; written on the loop thread, read by the test.
struct upload_log {
  std::mutex mu;
  std::condition_variable cv;
  int handler_calls = 0;
  int ends = 0;
  int aborts = 0;
  std::error_code abort_reason;
  std::uint64_t bytes = 0;
  std::size_t pieces = 0;
  std::size_t largest = 0;
  std::string data;
  std::string trailer;

  // Waits until `pred` holds (under the lock) or 5 s pass; returns whether it held.
  template <class Pred>
  bool wait(Pred pred) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, 5s, [&] { return pred(*this); });
  }
};

// What the test readers do in on_abort: count it, keep the reason, wake the test.
void record_abort(upload_log& log, std::error_code why) noexcept {
  {
    std::lock_guard<std::mutex> lk(log.mu);
    log.aborts += 1;
    log.abort_reason = why;
  }
  log.cv.notify_all();
}

// Records every piece; answers "bytes=N" at the end. Answers `refuse_after` bytes early with
// 413 when set, or throws from on_data / on_end when asked to.
class recording_reader : public http::body_reader {
 public:
  explicit recording_reader(std::shared_ptr<upload_log> log) : log_(std::move(log)) {}
  std::uint64_t refuse_after = UINT64_MAX;
  bool throw_in_data = false;
  bool throw_in_end = false;

  void on_data(std::string_view piece, http::response& early) override {
    std::uint64_t total = 0;
    {
      std::lock_guard<std::mutex> lk(log_->mu);
      log_->bytes += piece.size();
      log_->pieces += 1;
      log_->largest = std::max(log_->largest, piece.size());
      log_->data.append(piece);
      total = log_->bytes;
    }
    log_->cv.notify_all();
    if (throw_in_data) {
      throw std::runtime_error("reader failed");
    }
    if (total > refuse_after) {
      early.start(413).header("Content-Type", "text/plain").body("enough\n");
    }
  }
  void on_end(const http::request& req, http::response& res) override {
    if (throw_in_end) {
      throw std::runtime_error("reader failed at the end");
    }
    std::string answer;
    {
      std::lock_guard<std::mutex> lk(log_->mu);
      log_->ends += 1;
      log_->trailer = std::string(req.head.header("X-Never"));  // a head field: absent
      for (const auto& t : req.head.trailers) {
        log_->trailer += std::string(t.name) + "=" + std::string(t.value);
      }
      answer = "bytes=" + std::to_string(log_->bytes);
    }
    log_->cv.notify_all();
    res.start(200).header("Content-Type", "text/plain").body(answer);
  }
  void on_abort(std::error_code why) noexcept override { record_abort(*log_, why); }

 private:
  std::shared_ptr<upload_log> log_;
};

struct reader_config {
  std::uint64_t refuse_after = UINT64_MAX;
  bool throw_in_data = false;
  bool throw_in_end = false;
};

// PUT /upload streams into a recording reader; PUT /locked refuses at the head with 401;
// PUT /broken throws from the stream handler; POST /echo is a buffered route; GET /plaintext.
http::router stream_router(const std::shared_ptr<upload_log>& log, reader_config cfg = {}) {
  http::router r;
  r.stream(http::method::put, "/upload",
           [log, cfg](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
             {
               std::lock_guard<std::mutex> lk(log->mu);
               log->handler_calls += 1;
             }
             auto rd = std::make_unique<recording_reader>(log);
             rd->refuse_after = cfg.refuse_after;
             rd->throw_in_data = cfg.throw_in_data;
             rd->throw_in_end = cfg.throw_in_end;
             return rd;
           });
  r.stream(http::method::put, "/locked",
           [log](const http::request&, http::response& res) -> std::unique_ptr<http::body_reader> {
             {
               std::lock_guard<std::mutex> lk(log->mu);
               log->handler_calls += 1;
             }
             res.start(401).header("Content-Type", "text/plain").body("no\n");
             return nullptr;
           });
  r.stream(http::method::put, "/broken",
           [](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
             throw std::runtime_error("handler failed");
           });
  r.post("/echo", [](const http::request& req, http::response& res) {
    res.start(200).header("Content-Type", "application/octet-stream").body(req.body);
  });
  r.get("/plaintext", [](const http::request&, http::response& res) {
    res.start(200).header("Content-Type", "text/plain").body("Hello, World!");
  });
  return r;
}

std::string pattern_bytes(std::size_t n) {
  std::string s(n, '\0');
  std::uint32_t x = 12345;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

// `body` in chunked coding, `chunk` bytes per chunk, then `trailer` lines and the end.
std::string chunked(std::string_view body, std::size_t chunk, std::string_view trailer = {}) {
  std::string out;
  char size[32];
  for (std::size_t at = 0; at < body.size(); at += chunk) {
    std::size_t n = std::min(chunk, body.size() - at);
    std::snprintf(size, sizeof size, "%zx\r\n", n);
    out += size;
    out.append(body.substr(at, n));
    out += "\r\n";
  }
  out += "0\r\n";
  out += trailer;
  out += "\r\n";
  return out;
}

std::string put_head(std::string_view path, std::string_view framing) {
  return "PUT " + std::string(path) + " HTTP/1.1\r\nHost: x\r\n" + std::string(framing) + "\r\n";
}

std::string length_framing(std::size_t n) {
  return "Content-Length: " + std::to_string(n) + "\r\n";
}

// Sends `data` in `step`-byte writes (the server sees it over several reads).
bool send_in_steps(client& c, std::string_view data, std::size_t step) {
  for (std::size_t at = 0; at < data.size(); at += step) {
    if (!c.send(data.substr(at, std::min(step, data.size() - at)))) {
      return false;
    }
  }
  return true;
}

}  // namespace

TEST(http_stream, a_large_body_arrives_in_pieces_and_the_connection_is_kept) {
  auto log = std::make_shared<upload_log>();
  test_server s(stream_router(log));  // buffered limit: the default 1 MiB
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  const std::string body = pattern_bytes(8u << 20);  // 8 MiB: 8 times the buffered limit
  ASSERT_TRUE(c.send(put_head("/upload", length_framing(body.size()))));
  ASSERT_TRUE(send_in_steps(c, body, 64 * 1024));
  ASSERT_TRUE(c.send(proto_test::kGet));  // pipelined behind the upload
  auto r = read_replies(c, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].status, 200);
  EXPECT_EQ(r[0].body, "bytes=8388608");
  EXPECT_TRUE(r[0].keep_alive);
  EXPECT_EQ(r[1].body, "Hello, World!");
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->handler_calls, 1);
  EXPECT_EQ(log->ends, 1);
  EXPECT_EQ(log->aborts, 0);
  EXPECT_TRUE(log->data == body) << "the reader must get every byte, in order";
  // Handed over as read, not collected: many pieces, none near the body's size.
  EXPECT_GT(log->pieces, 8u);
  EXPECT_LE(log->largest, 1u << 20);
}

TEST(http_stream, chunked_body_split_anywhere_is_decoded_with_its_trailers) {
  auto log = std::make_shared<upload_log>();
  test_server s(stream_router(log));
  ASSERT_GT(s.port(), 0);
  const std::string body = pattern_bytes(3000);
  const std::string wire =
      put_head("/upload", "Transfer-Encoding: chunked\r\n") + chunked(body, 700, "X-Sum: 42\r\n");
  for (std::size_t step : {std::size_t{1}, std::size_t{7}, std::size_t{1000}}) {
    {
      std::lock_guard<std::mutex> lk(log->mu);
      log->data.clear();
      log->bytes = 0;
    }
    client c(s.port());
    ASSERT_TRUE(send_in_steps(c, wire, step));
    auto r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u) << "step " << step;
    EXPECT_EQ(r[0].body, "bytes=3000");
    std::lock_guard<std::mutex> lk(log->mu);
    EXPECT_TRUE(log->data == body) << "step " << step;
    EXPECT_EQ(log->trailer, "X-Sum=42");
  }
}

TEST(http_stream, refusal_at_the_head_sends_no_100_continue_and_closes_after_the_answer) {
  auto log = std::make_shared<upload_log>();
  test_server s(stream_router(log));
  ASSERT_GT(s.port(), 0);
  {
    // Refused: the client, which waits for 100 Continue before its body, gets the final answer
    // instead, marked as the last; what it then sends anyway is read and dropped, and the
    // connection ends with EOF (not a reset that could destroy the answer).
    client c(s.port());
    ASSERT_TRUE(c.send(put_head("/locked", length_framing(200000) + "Expect: 100-continue\r\n")));
    auto r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 401);
    EXPECT_EQ(r[0].body, "no\n");
    EXPECT_FALSE(r[0].keep_alive);
    (void)c.send(pattern_bytes(200000));
    bool eof = false;
    (void)c.recv_until_eof(&eof);
    EXPECT_TRUE(eof);
  }
  {
    // Accepted: 100 Continue first, then the answer.
    client c(s.port());
    ASSERT_TRUE(c.send(put_head("/upload", length_framing(5) + "Expect: 100-continue\r\n")));
    auto r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 100);
    ASSERT_TRUE(c.send("hello"));
    r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].body, "bytes=5");
  }
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->handler_calls, 2);
  EXPECT_EQ(log->aborts, 0);
}

TEST(http_stream, a_request_without_a_body_ends_its_reader_at_once) {
  auto log = std::make_shared<upload_log>();
  test_server s(stream_router(log));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  // No body: on_end at once; a refusal of a bodiless request keeps the connection.
  ASSERT_TRUE(c.send(put_head("/upload", length_framing(0)) + put_head("/locked", "") +
                     put_head("/upload", "")));
  auto r = read_replies(c, 3);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].body, "bytes=0");
  EXPECT_EQ(r[1].status, 401);
  EXPECT_TRUE(r[1].keep_alive);
  EXPECT_EQ(r[2].body, "bytes=0");
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->ends, 2);
}

TEST(http_stream, an_early_answer_from_the_reader_stops_the_upload) {
  auto log = std::make_shared<upload_log>();
  reader_config cfg;
  cfg.refuse_after = 100000;
  test_server s(stream_router(log, cfg));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  const std::string body = pattern_bytes(4u << 20);
  ASSERT_TRUE(c.send(put_head("/upload", length_framing(body.size()))));
  // The server stops reading the body but drains it: every send completes.
  std::thread sender([&c, &body] { (void)send_in_steps(c, body, 64 * 1024); });
  auto r = read_replies(c, 1);
  sender.join();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 413);
  EXPECT_EQ(r[0].body, "enough\n");
  EXPECT_FALSE(r[0].keep_alive);
  bool eof = false;
  (void)c.recv_until_eof(&eof);
  EXPECT_TRUE(eof);
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->ends, 0);
  EXPECT_EQ(log->aborts, 0) << "a reader that answered is not told it was aborted";
  EXPECT_LT(log->bytes, body.size());
}

TEST(http_stream, a_client_that_resets_mid_body_aborts_the_reader_once) {
  auto log = std::make_shared<upload_log>();
  test_server s(stream_router(log));
  ASSERT_GT(s.port(), 0);
  {
    client c(s.port());
    ASSERT_TRUE(c.send(put_head("/upload", length_framing(1000000))));
    ASSERT_TRUE(c.send(pattern_bytes(300000)));
    ASSERT_TRUE(log->wait([](upload_log& l) { return l.bytes == 300000; }));
    linger lg{1, 0};  // close with a reset
    ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  ASSERT_TRUE(log->wait([](upload_log& l) { return l.aborts == 1; }));
  {
    std::lock_guard<std::mutex> lk(log->mu);
    EXPECT_TRUE(log->abort_reason) << "a reset is an error";
    EXPECT_EQ(log->ends, 0);
  }
  {
    // A clean half-close before the body is complete aborts too.
    client c(s.port());
    ASSERT_TRUE(c.send(put_head("/upload", "Transfer-Encoding: chunked\r\n") + "10\r\nabc"));
    ASSERT_TRUE(log->wait([](upload_log& l) { return l.bytes == 300003; }));
    ::shutdown(c.fd, SHUT_WR);
    ASSERT_TRUE(log->wait([](upload_log& l) { return l.aborts == 2; }));
  }
  std::this_thread::sleep_for(50ms);
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->aborts, 2);
  EXPECT_EQ(log->ends, 0);
}

TEST(http_stream, stream_limit_malformed_body_and_stall_abort_with_413_400_408) {
  auto log = std::make_shared<upload_log>();
  http::server_options o;
  o.max_stream_body_bytes = 10000;
  o.body_timeout = 300ms;
  test_server s(stream_router(log), o);
  ASSERT_GT(s.port(), 0);
  struct abort_case {
    std::string wire;
    int status;
    evnet::errc reason;
  };
  const std::vector<abort_case> cases = {
      {put_head("/upload", "Transfer-Encoding: chunked\r\n") + chunked(pattern_bytes(20000), 4000),
       413, evnet::errc::message_too_big},
      {put_head("/upload", "Transfer-Encoding: chunked\r\n") + "10\r\n0123456789abcdef\r\nzz\r\n",
       400, evnet::errc::protocol_error},
      // A chunk extension without a name (RFC 9112 §7.1.1: chunk-ext-name is a token).
      {put_head("/upload", "Transfer-Encoding: chunked\r\n") + "5\r\nhello\r\n0;\r\n\r\n", 400,
       evnet::errc::protocol_error},
      {put_head("/upload", length_framing(5000)) + "only this", 408, evnet::errc::timed_out},
  };
  int aborts = 0;
  for (const auto& k : cases) {
    client c(s.port());
    ASSERT_TRUE(c.send(k.wire));
    auto r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u) << k.status;
    EXPECT_EQ(r[0].status, k.status);
    EXPECT_FALSE(r[0].keep_alive);
    ++aborts;
    ASSERT_TRUE(log->wait([aborts](upload_log& l) { return l.aborts == aborts; }));
    std::lock_guard<std::mutex> lk(log->mu);
    EXPECT_EQ(log->abort_reason, make_error_code(k.reason)) << k.status;
  }
  {
    // A Content-Length over the limit is refused before any reader exists.
    client c(s.port());
    ASSERT_TRUE(c.send(put_head("/upload", length_framing(10001))));
    auto r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 413);
  }
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->handler_calls, 4);
  EXPECT_EQ(log->ends, 0);
}

TEST(http_stream, buffered_routes_keep_their_own_limit_beside_streaming_ones) {
  auto log = std::make_shared<upload_log>();
  http::server_options o;
  o.limits.max_body_bytes = 1000;  // streams: no limit
  test_server s(stream_router(log), o);
  ASSERT_GT(s.port(), 0);
  const std::string post_cl = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: ";
  {
    client c(s.port());
    ASSERT_TRUE(c.send(post_cl + "1000\r\n\r\n" + std::string(1000, 'a')));
    auto r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].body, std::string(1000, 'a'));
  }
  for (const std::string& wire :
       {post_cl + "1001\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
            chunked(std::string(1500, 'b'), 600)}) {
    client c(s.port());
    ASSERT_TRUE(c.send(wire));
    auto r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 413);
  }
  {
    // The streaming route beside it takes 100 times that.
    client c(s.port());
    ASSERT_TRUE(c.send(put_head("/upload", length_framing(100000)) + pattern_bytes(100000)));
    auto r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].body, "bytes=100000");
  }
}

TEST(http_stream, exceptions_in_the_handler_or_the_reader_are_500) {
  for (int where = 0; where < 3; ++where) {
    auto log = std::make_shared<upload_log>();
    reader_config cfg;
    cfg.throw_in_data = where == 1;
    cfg.throw_in_end = where == 2;
    test_server s(stream_router(log, cfg));
    ASSERT_GT(s.port(), 0);
    client c(s.port());
    ASSERT_TRUE(
        c.send(put_head(where == 0 ? "/broken" : "/upload", length_framing(10)) + "0123456789"));
    auto r = read_replies(c, 1);
    ASSERT_EQ(r.size(), 1u) << where;
    EXPECT_EQ(r[0].status, 500) << where;
    EXPECT_FALSE(r[0].keep_alive) << where;
    bool eof = false;
    (void)c.recv_until_eof(&eof);
    EXPECT_TRUE(eof) << where;
  }
}

// RFC 9110 §9.3.2: the 500 for a HEAD request (with a body, served by the GET route) whose
// stream handler or reader throws has no content either; the server's 500 was made as for a
// GET and carried "Internal Server Error\n".
TEST(http_stream, the_500_for_a_failing_head_request_has_no_body) {
  for (int where = 0; where < 3; ++where) {
    SCOPED_TRACE(where);
    auto log = std::make_shared<upload_log>();
    http::router r;
    r.stream(
        http::method::get, "/g",
        [log, where](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
          if (where == 0) {
            throw std::runtime_error("handler failed");
          }
          auto rd = std::make_unique<recording_reader>(log);
          rd->throw_in_data = where == 1;
          rd->throw_in_end = where == 2;
          return rd;
        });
    test_server s(std::move(r));
    ASSERT_GT(s.port(), 0);
    client c(s.port());
    ASSERT_TRUE(c.send("HEAD /g HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"));
    bool eof = false;
    const std::string all = c.recv_until_eof(&eof);
    EXPECT_TRUE(eof);
    ASSERT_EQ(all.rfind("HTTP/1.1 500", 0), 0u) << all;
    EXPECT_EQ(all.find("\r\n\r\n") + 4, all.size()) << "bytes after the head: " << all;
  }
}

TEST(http_stream, on_end_may_defer_and_requests_behind_wait_in_order) {
  auto log = std::make_shared<upload_log>();
  std::mutex mu;
  std::vector<http::deferred_response> pending;
  http::router r;
  struct deferring_reader : http::body_reader {
    std::mutex* mu;
    std::vector<http::deferred_response>* pending;
    std::size_t n = 0;
    void on_data(std::string_view piece, http::response&) override { n += piece.size(); }
    void on_end(const http::request&, http::response& res) override {
      std::lock_guard<std::mutex> lk(*mu);
      pending->push_back(res.defer());
    }
  };
  r.stream(http::method::put, "/later",
           [&](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
             auto rd = std::make_unique<deferring_reader>();
             rd->mu = &mu;
             rd->pending = &pending;
             return rd;
           });
  r.get("/plaintext", [](const http::request&, http::response& res) {
    res.start(200).header("Content-Type", "text/plain").body("Hello, World!");
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send(put_head("/later", length_framing(4)) + "abcd" + proto_test::kGet));
  http::deferred_response d;
  for (int i = 0; i < 500 && !d; ++i) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (!pending.empty()) {
        d = pending.front();
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(d);
  std::thread([d]() mutable { EXPECT_FALSE(d.respond(202, "text/plain", "later")); }).join();
  auto replies = read_replies(c, 2);
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[0].status, 202);
  EXPECT_EQ(replies[0].body, "later");
  EXPECT_EQ(replies[1].body, "Hello, World!");
}

TEST(http_stream, an_engine_stop_aborts_an_upload_in_progress) {
  auto log = std::make_shared<upload_log>();
  test_server s(stream_router(log));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send(put_head("/upload", length_framing(1000)) + "part"));
  ASSERT_TRUE(log->wait([](upload_log& l) { return l.bytes == 4; }));
  s.stop();
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->aborts, 1);
  EXPECT_TRUE(log->abort_reason);
  EXPECT_EQ(log->ends, 0);
}

// Pauses the body after each of its first `pauses` pieces and queues the resumer for the test;
// counts any piece (or end) delivered while it is paused.
struct pause_log : upload_log {
  bool paused_now = false;
  int violations = 0;
  int pauses = 0;
  std::vector<http::body_resumer> to_resume;
};

class pausing_reader : public http::body_reader {
 public:
  explicit pausing_reader(std::shared_ptr<pause_log> log) : log_(std::move(log)) {}
  void on_data(std::string_view piece, http::response&) override {
    {
      std::lock_guard<std::mutex> lk(log_->mu);
      if (log_->paused_now) {
        log_->violations += 1;
      }
      log_->bytes += piece.size();
      log_->data.append(piece);
      if (log_->pauses > 0) {
        log_->pauses -= 1;
        log_->paused_now = true;
        pause();
        log_->to_resume.push_back(resumer());
      }
    }
    log_->cv.notify_all();
  }
  void on_end(const http::request&, http::response& res) override {
    std::string answer;
    {
      std::lock_guard<std::mutex> lk(log_->mu);
      if (log_->paused_now) {
        log_->violations += 1;
      }
      log_->ends += 1;
      log_->to_resume.push_back(resumer());  // used after the end: must report closed
      answer = "bytes=" + std::to_string(log_->bytes);
    }
    log_->cv.notify_all();
    res.start(200).header("Content-Type", "text/plain").body(answer);
  }
  void on_abort(std::error_code why) noexcept override { record_abort(*log_, why); }

 private:
  std::shared_ptr<pause_log> log_;
};

http::router pausing_router(const std::shared_ptr<pause_log>& log) {
  http::router r;
  r.stream(http::method::put, "/upload",
           [log](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
             return std::make_unique<pausing_reader>(log);
           });
  return r;
}

// Waits for the reader to pause; returns its resumer (empty after 5 s).
http::body_resumer next_pause(pause_log& log) {
  std::unique_lock<std::mutex> lk(log.mu);
  if (!log.cv.wait_for(lk, 5s, [&] { return !log.to_resume.empty(); })) {
    return {};
  }
  http::body_resumer r = log.to_resume.front();
  log.to_resume.erase(log.to_resume.begin());
  return r;
}

TEST(http_stream, a_paused_body_stalls_the_client_until_resumed_from_another_thread) {
  auto log = std::make_shared<pause_log>();
  log->pauses = 3;
  http::server_options o;
  // Shorter than each pause (a paused body is not timed out), long enough for a slow (TSan)
  // build never to stall that long while the body flows.
  o.body_timeout = 500ms;
  test_server s(pausing_router(log), o);
  ASSERT_GT(s.port(), 0);
  client c(s.port(), 10000);
  const std::string body = pattern_bytes(32u << 20);
  std::atomic<std::size_t> sent{0};
  ASSERT_TRUE(c.send(put_head("/upload", length_framing(body.size()))));
  std::thread sender([&] {
    for (std::size_t at = 0; at < body.size(); at += 64 * 1024) {
      if (!c.send(std::string_view(body).substr(
              at, std::min<std::size_t>(64 * 1024, body.size() - at)))) {
        return;
      }
      sent += std::min<std::size_t>(64 * 1024, body.size() - at);
    }
  });
  for (int i = 0; i < 3; ++i) {
    http::body_resumer r = next_pause(*log);
    ASSERT_TRUE(r) << "pause " << i;
    std::this_thread::sleep_for(800ms);
    std::uint64_t got = 0;
    {
      std::lock_guard<std::mutex> lk(log->mu);
      got = log->bytes;
      log->paused_now = false;
    }
    if (i == 0) {
      // Nothing is read while paused: the client is held by the kernel's buffers (a few MiB
      // on loopback), far from the 32 MiB it wants to send.
      EXPECT_LT(sent.load(), 20u << 20) << "the client was not held back";
      EXPECT_LT(got, 20u << 20);
    }
    std::thread([r]() mutable { EXPECT_FALSE(r.resume()); }).join();
  }
  auto reply = read_replies(c, 1);
  sender.join();
  ASSERT_EQ(reply.size(), 1u);
  EXPECT_EQ(reply[0].status, 200);
  EXPECT_EQ(reply[0].body, "bytes=" + std::to_string(body.size()));
  http::body_resumer after_end = next_pause(*log);
  ASSERT_TRUE(after_end);
  EXPECT_EQ(after_end.resume(), make_error_code(evnet::errc::closed));
  EXPECT_EQ(http::body_resumer{}.resume(), make_error_code(evnet::errc::invalid_argument));
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->violations, 0) << "a piece or the end was delivered while paused";
  EXPECT_EQ(log->aborts, 0);
  EXPECT_TRUE(log->data == body);
}

// The body's last piece is paused and the client, having sent everything, waits for the answer:
// no byte will come to wake the connection, yet the resume must end the body and answer it.
TEST(http_stream, a_body_paused_on_its_last_piece_is_answered_after_the_resume) {
  auto log = std::make_shared<pause_log>();
  log->pauses = 2;
  test_server s(pausing_router(log));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  // Content-Length (the end is owed without another byte), then a chunked body whose
  // terminator arrived with the piece.
  for (const std::string& wire :
       {put_head("/upload", length_framing(10)) + "0123456789",
        put_head("/upload", "Transfer-Encoding: chunked\r\n") + "a\r\n0123456789\r\n0\r\n\r\n"}) {
    ASSERT_TRUE(c.send(wire));
    http::body_resumer r = next_pause(*log);
    ASSERT_TRUE(r);
    {
      std::lock_guard<std::mutex> lk(log->mu);
      log->paused_now = false;
    }
    std::thread([r]() mutable { EXPECT_FALSE(r.resume()); }).join();
    auto reply = read_replies(c, 1);
    ASSERT_EQ(reply.size(), 1u) << wire;
    EXPECT_EQ(reply[0].status, 200);
    EXPECT_TRUE(next_pause(*log));  // the resumer on_end queued
  }
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->violations, 0);
  EXPECT_EQ(log->ends, 2);
}

// A client sends a body, a request behind it, and shuts its sending side while the reader has
// the body paused: reading is paused, so the EOF is read only after the resume, and the request
// kept in the input must be answered before the connection closes for it (the net layer offers
// kept input before the EOF; once the HTTP layer did so itself, with session::peer_eof).
TEST(http_stream, requests_behind_a_paused_body_are_answered_before_the_clients_eof) {
  auto log = std::make_shared<pause_log>();
  log->pauses = 1;
  test_server s(pausing_router(log));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send(put_head("/upload", length_framing(10)) + "0123456789" +
                     put_head("/upload", length_framing(3)) + "abc"));
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  http::body_resumer r = next_pause(*log);
  ASSERT_TRUE(r);
  std::this_thread::sleep_for(100ms);  // the EOF waits in the kernel meanwhile
  {
    std::lock_guard<std::mutex> lk(log->mu);
    log->paused_now = false;
  }
  std::thread([r]() mutable { EXPECT_FALSE(r.resume()); }).join();
  bool eof = false;
  auto replies = read_replies(c, 2, &eof);
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[0].status, 200);
  EXPECT_EQ(replies[0].body, "bytes=10");
  EXPECT_EQ(replies[1].status, 200);
  EXPECT_EQ(replies[1].body, "bytes=13");
  EXPECT_TRUE(eof) << "the connection must close after the client's EOF";
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->violations, 0);
  EXPECT_EQ(log->ends, 2);
  EXPECT_EQ(log->aborts, 0);
}

TEST(http_stream, a_client_that_resets_while_the_body_is_paused_aborts_the_reader) {
  auto log = std::make_shared<pause_log>();
  log->pauses = 1;
  test_server s(pausing_router(log));
  ASSERT_GT(s.port(), 0);
  http::body_resumer r;
  {
    client c(s.port());
    ASSERT_TRUE(c.send(put_head("/upload", length_framing(100000)) + "abc"));
    r = next_pause(*log);
    ASSERT_TRUE(r);
    linger lg{1, 0};
    ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  ASSERT_TRUE(log->wait([](upload_log& l) { return l.aborts == 1; }))
      << "a reset must end a paused body";
  EXPECT_EQ(r.resume(), make_error_code(evnet::errc::closed));
}

// A resume called before the pause it would lift — here from the reader itself, on the piece
// before the one that pauses, as a worker that frees a slot would — must not lift that pause:
// the three one-byte chunks arrive in one read, so the stale resume runs on the loop only after
// the second piece paused.
TEST(http_stream, a_resume_from_an_earlier_piece_does_not_lift_a_later_pause) {
  auto log = std::make_shared<pause_log>();
  http::router r;
  struct early_resumer : http::body_reader {
    std::shared_ptr<pause_log> log;
    int n = 0;
    void on_data(std::string_view piece, http::response&) override {
      std::lock_guard<std::mutex> lk(log->mu);
      if (log->paused_now) {
        log->violations += 1;
      }
      log->data.append(piece);
      if (++n == 1) {
        EXPECT_FALSE(resumer().resume());  // nothing is paused yet: a no-op, later too
      } else if (n == 2) {
        log->paused_now = true;
        pause();
        log->to_resume.push_back(resumer());
      }
      log->cv.notify_all();
    }
    void on_end(const http::request&, http::response& res) override {
      std::lock_guard<std::mutex> lk(log->mu);
      if (log->paused_now) {
        log->violations += 1;
      }
      log->ends += 1;
      res.start(200).header("Content-Type", "text/plain").body(log->data);
    }
  };
  r.stream(http::method::put, "/upload",
           [log](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
             auto rd = std::make_unique<early_resumer>();
             rd->log = log;
             return rd;
           });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send(put_head("/upload", "Transfer-Encoding: chunked\r\n") +
                     "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"));
  http::body_resumer paused = next_pause(*log);
  ASSERT_TRUE(paused);
  std::this_thread::sleep_for(300ms);  // the stale resume has run by now
  {
    std::lock_guard<std::mutex> lk(log->mu);
    EXPECT_EQ(log->data, "ab") << "the stale resume lifted the pause";
    EXPECT_EQ(log->ends, 0);
    log->paused_now = false;
  }
  std::thread([paused]() mutable { EXPECT_FALSE(paused.resume()); }).join();
  auto reply = read_replies(c, 1);
  ASSERT_EQ(reply.size(), 1u);
  EXPECT_EQ(reply[0].body, "abc");
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->violations, 0);
}

// on_end defers its answer after a resume (the body's last piece was paused): the connection
// must read again meanwhile, so that a client that leaves is seen and the application's
// handle reports done() instead of waiting for nobody.
TEST(http_stream, a_deferred_answer_after_a_resume_still_sees_the_client_leave) {
  auto log = std::make_shared<pause_log>();
  std::mutex mu;
  http::deferred_response kept;
  http::router r;
  struct pause_then_defer : http::body_reader {
    std::shared_ptr<pause_log> log;
    std::mutex* mu = nullptr;
    http::deferred_response* kept = nullptr;
    bool once = false;
    void on_data(std::string_view, http::response&) override {
      if (once) {
        return;  // (the ten bytes come in one read: this is the last piece)
      }
      once = true;
      std::lock_guard<std::mutex> lk(log->mu);
      pause();
      log->to_resume.push_back(resumer());
      log->cv.notify_all();
    }
    void on_end(const http::request&, http::response& res) override {
      std::lock_guard<std::mutex> lk(*mu);
      *kept = res.defer();
    }
  };
  r.stream(http::method::put, "/upload",
           [&](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
             auto rd = std::make_unique<pause_then_defer>();
             rd->log = log;
             rd->mu = &mu;
             rd->kept = &kept;
             return rd;
           });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  {
    client c(s.port());
    ASSERT_TRUE(c.send(put_head("/upload", length_framing(10)) + "0123456789"));
    http::body_resumer paused = next_pause(*log);
    ASSERT_TRUE(paused);
    std::thread([paused]() mutable { EXPECT_FALSE(paused.resume()); }).join();
    bool deferred = false;
    for (int i = 0; i < 500 && !deferred; ++i) {
      std::this_thread::sleep_for(10ms);
      std::lock_guard<std::mutex> lk(mu);
      deferred = static_cast<bool>(kept);
    }
    ASSERT_TRUE(deferred);
    std::lock_guard<std::mutex> lk(mu);
    EXPECT_FALSE(kept.done());
  }  // the client closes (FIN)
  bool done = false;
  for (int i = 0; i < 250 && !done; ++i) {
    std::this_thread::sleep_for(10ms);
    std::lock_guard<std::mutex> lk(mu);
    done = kept.done();
  }
  EXPECT_TRUE(done) << "the client's close went unseen while the answer was deferred";
}

// HEAD is served by a GET route (RFC 9110 §9.3.2), a streaming one included: a body sent with
// it goes to the route's reader like any other, under the streaming limit.
TEST(http_stream, a_head_request_with_a_body_streams_it_to_the_get_route) {
  auto log = std::make_shared<upload_log>();
  http::router r;
  r.stream(http::method::get, "/g",
           [log](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
             return std::make_unique<recording_reader>(log);
           });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send("HEAD /g HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"));
  ASSERT_TRUE(log->wait([](upload_log& l) { return l.ends == 1; }));
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->data, "hello");
  EXPECT_EQ(log->bytes, 5u);
}

// router::find() hands a caller that runs routes itself an adapter for a streaming route: it
// runs the reader over the request's buffered body (one piece), then on_end; a refusal or an
// early answer is the answer.
TEST(http_stream, find_runs_a_streaming_route_over_a_buffered_body) {
  auto log = std::make_shared<upload_log>();
  reader_config cfg;
  cfg.refuse_after = 5;  // a body over 5 bytes gets the reader's early 413
  auto inner = std::make_shared<http::router>(stream_router(log, cfg));
  http::router outer;
  outer.post("/via/*path", [inner](const http::request& req, http::response& res) {
    int status = 0;
    const http::route_handler* h =
        inner->find(http::method::put, "/" + std::string(req.param("path")), status);
    if (h == nullptr) {
      res.start(status).body("no route\n");
      return;
    }
    (*h)(http::request{req.head, req.body, req.connection, nullptr}, res);
  });
  test_server s(std::move(outer));
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  const std::string post = "POST /via/";
  ASSERT_TRUE(c.send(post + "upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd" + post +
                     "upload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + post +
                     "locked HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi" + post +
                     "upload HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n123456789"));
  auto r = read_replies(c, 4);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].body, "bytes=4");
  EXPECT_EQ(r[1].body, "bytes=4") << "an empty body adds no piece";
  EXPECT_EQ(r[2].status, 401);
  EXPECT_EQ(r[3].status, 413);
  std::lock_guard<std::mutex> lk(log->mu);
  EXPECT_EQ(log->data, "abcd123456789");
  EXPECT_EQ(log->ends, 2);
}

TEST(http_stream, stream_routes_are_refused_like_plain_ones) {
  http::router r;
  auto h = [](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
    return nullptr;
  };
  r.stream(http::method::put, "/u/:id", h);
  EXPECT_THROW(r.stream(http::method::put, "/u/:id", h), std::invalid_argument);
  EXPECT_THROW(r.add(http::method::put, "/u/:id", [](const http::request&, http::response&) {}),
               std::invalid_argument)
      << "one route per method and path, plain or streaming";
  EXPECT_TRUE(r.try_stream(http::method::put, "/v", {}));  // empty handler
  r.stream(http::method::put, "/v", h);
}

namespace {

// FNV-1a over the bytes, continued from `h`.
std::uint64_t fnv(std::uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) {
    h = (h ^ c) * 1099511628211ull;
  }
  return h;
}
constexpr std::uint64_t kFnvStart = 14695981039346656037ull;

std::string digest_answer(std::uint64_t bytes, std::uint64_t hash) {
  return "bytes=" + std::to_string(bytes) + " fnv=" + std::to_string(hash);
}

// Resumes paused bodies (and answers deferred responses) from its own thread, a little later,
// in the order they were handed over.
class resumer_thread {
 public:
  resumer_thread() : thread_([this] { run(); }) {}
  ~resumer_thread() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void later(http::body_resumer r) {
    later_do([r]() mutable {
      (void)r.resume();  // errc::closed if the body was ended meanwhile: fine
    });
  }
  void later_do(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_all();
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [this] { return done_ || !queue_.empty(); });
      if (queue_.empty()) {
        return;
      }
      std::function<void()> fn = std::move(queue_.front());
      queue_.erase(queue_.begin());
      lk.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(300));
      fn();
      lk.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::function<void()>> queue_;
  bool done_ = false;
  std::thread thread_;
};

// Hashes the body; pauses after every third piece and has the resumer thread resume it. With
// `deferred`, the answer is deferred and sent from the resumer thread too.
class hashing_reader : public http::body_reader {
 public:
  hashing_reader(resumer_thread& t, bool deferred) : resumers_(t), deferred_(deferred) {}
  void on_data(std::string_view piece, http::response&) override {
    bytes_ += piece.size();
    hash_ = fnv(hash_, piece);
    if (++pieces_ % 3 == 0) {
      pause();
      resumers_.later(resumer());
    }
  }
  void on_end(const http::request&, http::response& res) override {
    if (deferred_) {
      resumers_.later_do([d = res.defer(), text = digest_answer(bytes_, hash_)]() mutable {
        EXPECT_FALSE(d.respond(200, "text/plain", text));
      });
      return;
    }
    res.start(200).header("Content-Type", "text/plain").body(digest_answer(bytes_, hash_));
  }

 private:
  resumer_thread& resumers_;
  bool deferred_;
  std::uint64_t bytes_ = 0;
  std::uint64_t hash_ = kFnvStart;
  std::size_t pieces_ = 0;
};

}  // namespace

// Pipelined mixes of streamed (paused and resumed from another thread), buffered and bodiless
// requests, Content-Length and chunked, sent in random splits: every request is answered, in
// order, with the digest of exactly the body it carried. Seeded, so a failure can be replayed.
TEST(http_stream, random_pipelined_mixes_over_random_splits_answer_every_body_in_order) {
  resumer_thread resumers;
  http::router r;
  r.stream(
      http::method::put, "/s",
      [&resumers](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
        return std::make_unique<hashing_reader>(resumers, false);
      });
  r.stream(
      http::method::put, "/d",
      [&resumers](const http::request&, http::response&) -> std::unique_ptr<http::body_reader> {
        return std::make_unique<hashing_reader>(resumers, true);
      });
  r.post("/b", [](const http::request& req, http::response& res) {
    res.start(200)
        .header("Content-Type", "text/plain")
        .body(digest_answer(req.body.size(), fnv(kFnvStart, req.body)));
  });
  r.get("/g", [](const http::request&, http::response& res) {
    res.start(200).header("Content-Type", "text/plain").body(digest_answer(0, kFnvStart));
  });
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  const unsigned seeds[] = {20261202u, 7u, 4242u};
  std::mt19937 rng;
  auto pick = [&rng](std::size_t lo, std::size_t hi) {
    return std::uniform_int_distribution<std::size_t>(lo, hi)(rng);
  };
  const std::string pool = pattern_bytes(300000);
  for (int step = 0; step < 72; ++step) {
    const unsigned seed = seeds[step / 24];
    const int conn = step % 24;
    if (conn == 0) {
      rng.seed(seed);
    }
    std::string wire;
    std::vector<std::string> expected;
    const std::size_t requests = pick(1, 6);
    for (std::size_t i = 0; i < requests; ++i) {
      // 0-1 streamed, 2 streamed and answered later, 3 buffered, 4 bodiless
      const std::size_t kind = pick(0, 4);
      if (kind == 4) {
        wire += "GET /g HTTP/1.1\r\nHost: x\r\n\r\n";
        expected.push_back(digest_answer(0, kFnvStart));
        continue;
      }
      const std::size_t size = kind == 3 ? pick(0, 60000) : pick(0, 250000);
      const std::string_view body = std::string_view(pool).substr(pick(0, 1000), size);
      const std::string head = kind == 3   ? "POST /b HTTP/1.1\r\nHost: x\r\n"
                               : kind == 2 ? "PUT /d HTTP/1.1\r\nHost: x\r\n"
                                           : "PUT /s HTTP/1.1\r\nHost: x\r\n";
      if (pick(0, 1) == 0) {
        wire += head + length_framing(size) + "\r\n";
        wire.append(body);
      } else {
        wire += head + "Transfer-Encoding: chunked\r\n\r\n" + chunked(body, pick(1, 70000));
      }
      expected.push_back(digest_answer(size, fnv(kFnvStart, body)));
    }
    client c(s.port(), 10000);
    ASSERT_TRUE(c.ok());
    // The sender splits the wire at random points (one byte to 64 KiB) while the main thread
    // reads the answers, so neither side's buffers can deadlock the exchange.
    std::thread sender([&c, &wire, seed, conn] {
      std::mt19937 split_rng(seed + static_cast<unsigned>(conn));
      for (std::size_t at = 0; at < wire.size();) {
        const std::size_t n = std::min(
            wire.size() - at, std::uniform_int_distribution<std::size_t>(1, 65536)(split_rng));
        if (!c.send(std::string_view(wire).substr(at, n))) {
          return;
        }
        at += n;
      }
    });
    auto replies = read_replies(c, expected.size());
    sender.join();
    ASSERT_EQ(replies.size(), expected.size()) << "seed " << seed << ", connection " << conn;
    for (std::size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(replies[i].status, 200) << "seed " << seed << ", connection " << conn << ", #" << i;
      EXPECT_EQ(replies[i].body, expected[i])
          << "seed " << seed << ", connection " << conn << ", #" << i;
    }
  }
}
