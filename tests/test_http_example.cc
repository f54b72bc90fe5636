// The http_server example (contract in shared DESIGN.md) driven by raw sockets and by curl.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "evnet/engine.h"
#include "evnet/http/parser.h"
#include "evnet/http/server.h"
#include "http_test_util.h"

using namespace std::chrono_literals;
using proto_test::child;
using proto_test::client;
using proto_test::kGet;
using proto_test::read_replies;

namespace {

// The http_server example as a child process.
struct example {
  child proc;
  int port = 0;
  explicit example(const std::vector<std::string>& extra = {}) {
    std::string bin = proto_test::binary_dir() + "/examples/http_server";
    std::vector<std::string> argv{bin, "--port", "0", "--loops", "1"};
    for (auto& e : extra) {
      argv.push_back(e);
    }
    if (proto_test::executable(bin) && proc.start(argv, false)) {
      port = proc.wait_listening();
    }
  }
};

// ---------------- the example binary ----------------

TEST(http_example, plaintext_and_404) {
  example ex;
  ASSERT_GT(ex.port, 0) << "http_server did not start: " << ex.proc.captured;
  client c(ex.port);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c.send(kGet));
  auto r = read_replies(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 200);
  EXPECT_EQ(r[0].body, "Hello, World!");
  EXPECT_EQ(r[0].header("content-type"), "text/plain");
  EXPECT_EQ(r[0].header("date").size(), 29u);
  ASSERT_TRUE(c.send("GET /other HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = read_replies(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 404);
}

TEST(http_example, pipelined_responses_in_request_order) {
  example ex;
  ASSERT_GT(ex.port, 0);
  client c(ex.port);
  std::string batch;
  for (int i = 0; i < 16; ++i) {
    batch += (i % 4 == 3) ? "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n" : std::string(kGet);
  }
  ASSERT_TRUE(c.send(batch));
  auto r = read_replies(c, 16);
  ASSERT_EQ(r.size(), 16u);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(r[i].status, (i % 4 == 3) ? 404 : 200) << i;
  }
}

TEST(http_example, exits_zero_on_sigint) {
  example ex;
  ASSERT_GT(ex.port, 0);
  ex.proc.signal(SIGINT);
  EXPECT_EQ(ex.proc.wait_exit(10s), 0);
}

TEST(http_example, exits_zero_on_sigterm_with_open_connection) {
  example ex;
  ASSERT_GT(ex.port, 0);
  client c(ex.port);
  ASSERT_TRUE(c.send(kGet));
  ASSERT_EQ(read_replies(c, 1).size(), 1u);
  ex.proc.signal(SIGTERM);
  EXPECT_EQ(ex.proc.wait_exit(10s), 0);
}

TEST(http_example, help_exits_zero) {
  std::string out;
  std::string bin = proto_test::binary_dir() + "/examples/http_server";
  ASSERT_TRUE(proto_test::executable(bin));
  EXPECT_EQ(proto_test::run({bin, "--help"}, out, 10s), 0);
  EXPECT_NE(out.find("--port"), std::string::npos);
}

// Every example names a bad option: an unknown one, one missing its value, a bad value; exit 2.
TEST(examples, bad_options_are_named_and_exit_2) {
  struct probe {
    const char* binary;
    std::vector<std::string> args;
    const char* says;
  };
  const std::vector<probe> probes = {
      {"http_server", {"--bogus"}, "unknown argument: --bogus"},
      {"http_server", {"--port"}, "--port needs a value"},
      {"http_server", {"--port", "x"}, "bad value for --port"},
      {"ws_echo_server", {"--loops"}, "--loops needs a value"},
      {"event_echo", {"--bogus"}, "unknown option: --bogus"},
      {"event_echo", {"--port", "99999"}, "bad value for --port"},
      {"ticker", {"--bogus"}, "unknown option: --bogus"},
      {"ticker", {"--count"}, "--count needs a value"},
  };
  for (const probe& p : probes) {
    const std::string bin = proto_test::binary_dir() + "/examples/" + p.binary;
    if (!proto_test::executable(bin)) {
      ADD_FAILURE() << bin << " not built";
      continue;
    }
    std::vector<std::string> argv{bin};
    argv.insert(argv.end(), p.args.begin(), p.args.end());
    std::string out;
    EXPECT_EQ(proto_test::run(argv, out, 10s), 2) << p.binary << " " << p.args[0];
    EXPECT_NE(out.find(p.says), std::string::npos) << p.binary << ": " << out;
  }
}

// ---------------- curl against the example ----------------

bool have_curl() {
  return proto_test::executable("/usr/bin/curl");
}

TEST(http_curl, keep_alive_reuses_one_connection) {
  if (!have_curl()) {
    GTEST_SKIP() << "curl is not installed (scripts/deps test installs it)";
  }
  example ex;
  ASSERT_GT(ex.port, 0);
  std::string url = "http://127.0.0.1:" + std::to_string(ex.port) + "/plaintext";
  std::string out;
  int st = proto_test::run({"/usr/bin/curl", "-sv", "--max-time", "10", url, url, url}, out, 20s);
  ASSERT_EQ(st, 0) << out;
  std::size_t count = 0;
  for (std::size_t p = 0; (p = out.find("Hello, World!", p)) != std::string::npos; ++p) {
    ++count;
  }
  EXPECT_EQ(count, 3u) << out;
  EXPECT_NE(out.find("Re-using existing connection"), std::string::npos) << out;
  EXPECT_EQ(out.find("Connection #1"), std::string::npos) << "a second connection was opened";
}

TEST(http_curl, chunked_upload_is_consumed_and_connection_reused) {
  if (!have_curl()) {
    GTEST_SKIP() << "curl is not installed (scripts/deps test installs it)";
  }
  example ex;
  ASSERT_GT(ex.port, 0);
  std::string base = "http://127.0.0.1:" + std::to_string(ex.port);
  // 200 KB from a file, sent chunked; the server must read and discard it, answer, and keep
  // the connection usable for the next request.
  char path[] = "/tmp/evnet_upload_XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string data(200000, 'u');
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::close(fd);
  std::string out;
  int st = proto_test::run({"/usr/bin/curl", "-sv", "--max-time", "10", "-H",
                            "Transfer-Encoding: chunked", "--data-binary", std::string("@") + path,
                            base + "/upload", "--next", "-sv", base + "/plaintext"},
                           out, 20s);
  ::unlink(path);
  ASSERT_EQ(st, 0) << out;
  EXPECT_NE(out.find("< HTTP/1.1 404"), std::string::npos) << out;
  EXPECT_NE(out.find("Hello, World!"), std::string::npos) << out;
  EXPECT_NE(out.find("Re-using existing connection"), std::string::npos) << out;
}

TEST(http_curl, unknown_path_is_404) {
  if (!have_curl()) {
    GTEST_SKIP() << "curl is not installed (scripts/deps test installs it)";
  }
  example ex;
  ASSERT_GT(ex.port, 0);
  std::string out;
  int st =
      proto_test::run({"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                       "10", "http://127.0.0.1:" + std::to_string(ex.port) + "/nope"},
                      out, 20s);
  ASSERT_EQ(st, 0);
  EXPECT_EQ(out, "404");
}

TEST(http_curl, oversized_headers_get_431) {
  if (!have_curl()) {
    GTEST_SKIP() << "curl is not installed (scripts/deps test installs it)";
  }
  example ex;
  ASSERT_GT(ex.port, 0);
  std::string out;
  int st = proto_test::run({"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "--max-time", "10", "-H", "X-Big: " + std::string(16000, 'b'),
                            "http://127.0.0.1:" + std::to_string(ex.port) + "/plaintext"},
                           out, 20s);
  ASSERT_EQ(st, 0) << out;
  EXPECT_EQ(out, "431");
}

}  // namespace
