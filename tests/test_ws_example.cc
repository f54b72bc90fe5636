// The ws_echo_server example (contract in shared DESIGN.md) against real clients: Python's
// websockets library and headless Chromium. Each client run is bounded by a timeout.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdlib>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "evnet/engine.h"
#include "evnet/http/server.h"
#include "proto_test_util.h"

namespace http = evnet::http;
using namespace std::chrono_literals;
using proto_test::child;

namespace {

// "r=a%20b" → "a b" (only what encodeURIComponent produces).
std::string percent_decode(std::string_view q) {
  if (q.substr(0, 2) == "r=") {
    q.remove_prefix(2);
  }
  std::string out;
  for (std::size_t i = 0; i < q.size(); ++i) {
    if (q[i] == '%' && i + 2 < q.size()) {
      out.push_back(static_cast<char>(std::stoi(std::string(q.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(q[i]);
    }
  }
  return out;
}

struct example {
  child proc;
  int port = 0;
  example() {
    std::string bin = proto_test::binary_dir() + "/examples/ws_echo_server";
    if (proto_test::executable(bin) && proc.start({bin, "--port", "0", "--loops", "1"}, false)) {
      port = proc.wait_listening();
    }
  }
};

constexpr const char* kPython = "/usr/bin/python3";

bool python_websockets_available() {
  if (!proto_test::executable(kPython)) {
    return false;
  }
  std::string out;
  return proto_test::run({kPython, "-c", "import websockets"}, out, 30s) == 0;
}

void run_python(const char* scenario) {
  if (!python_websockets_available()) {
    GTEST_SKIP() << "/usr/bin/python3 with the websockets module (Debian python3-websockets) is "
                    "not installed";
  }
  example ex;
  ASSERT_GT(ex.port, 0) << "ws_echo_server did not start: " << ex.proc.captured;
  std::string script = proto_test::source_dir() + "/tests/ws_python_client.py";
  std::string out;
  int st = proto_test::run({kPython, script, std::to_string(ex.port), scenario}, out, 90s);
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find(std::string("OK ") + scenario), std::string::npos) << out;
  // The server must still be healthy and exit cleanly.
  ex.proc.signal(SIGTERM);
  EXPECT_EQ(ex.proc.wait_exit(10s), 0) << ex.proc.captured;
}

TEST(ws_python, text) {
  run_python("text");
}
TEST(ws_python, binary) {
  run_python("binary");
}
TEST(ws_python, fragmented) {
  run_python("fragmented");
}
TEST(ws_python, ping) {
  run_python("ping");
}
TEST(ws_python, close_code_and_reason_echoed) {
  run_python("close");
}
TEST(ws_python, permessage_deflate) {
  run_python("compression");
}
TEST(ws_python, eight_mib_message) {
  run_python("large");
}
TEST(ws_python, over_16_mib_is_1009) {
  run_python("too_big");
}

// Stopping the server (SIGTERM) says 1001 "going away" to a connected client and completes
// the close handshake before the TCP close (Python's websockets reports ConnectionClosedOK).
TEST(ws_python, server_stop_says_going_away) {
  if (!python_websockets_available()) {
    GTEST_SKIP() << "/usr/bin/python3 with the websockets module is not installed";
  }
  example ex;
  ASSERT_GT(ex.port, 0) << "ws_echo_server did not start: " << ex.proc.captured;
  child py;
  ASSERT_TRUE(py.start({kPython, proto_test::source_dir() + "/tests/ws_python_client.py",
                        std::to_string(ex.port), "going_away"}));
  ASSERT_TRUE(py.wait_for("CONNECTED", 30s)) << py.captured;
  ex.proc.signal(SIGTERM);
  EXPECT_EQ(py.wait_exit(30s), 0) << py.captured;
  EXPECT_NE(py.captured.find("OK going_away"), std::string::npos) << py.captured;
  EXPECT_EQ(ex.proc.wait_exit(10s), 0) << ex.proc.captured;
}

TEST(ws_example, exits_zero_on_sigint) {
  example ex;
  ASSERT_GT(ex.port, 0);
  ex.proc.signal(SIGINT);
  EXPECT_EQ(ex.proc.wait_exit(10s), 0);
}

TEST(ws_example, ws_client_example_verifies_every_echo) {
  example ex;
  ASSERT_GT(ex.port, 0);
  std::string bin = proto_test::binary_dir() + "/examples/ws_client";
  ASSERT_TRUE(proto_test::executable(bin));
  std::string url = "ws://127.0.0.1:" + std::to_string(ex.port) + "/";
  std::string out;
  EXPECT_EQ(proto_test::run({bin, "--url", url, "--connections", "4", "--count", "200", "--size",
                             "1000", "--window", "4"},
                            out, 60s),
            0)
      << out;
  EXPECT_NE(out.find("messages 800 verified, errors 0"), std::string::npos) << out;
  EXPECT_EQ(
      proto_test::run({bin, "--url", url, "--count", "50", "--size", "70000", "--text"}, out, 60s),
      0)
      << out;
  // A refused connection makes it fail.
  ex.proc.signal(SIGTERM);
  ASSERT_EQ(ex.proc.wait_exit(10s), 0);
  EXPECT_NE(proto_test::run({bin, "--url", url, "--count", "1"}, out, 60s), 0) << out;
}

TEST(ws_example, bad_handshakes_are_refused) {
  example ex;
  ASSERT_GT(ex.port, 0);
  {
    proto_test::client c(ex.port);
    ASSERT_TRUE(
        c.send("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"));
    bool eof = false;
    std::string r = c.recv_until_eof(&eof);
    EXPECT_EQ(r.rfind("HTTP/1.1 426", 0), 0u) << r;
    EXPECT_NE(r.find("Sec-WebSocket-Version: 13"), std::string::npos) << r;
    EXPECT_TRUE(eof);
  }
  {
    proto_test::client c(ex.port);
    ASSERT_TRUE(
        c.send("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: bad\r\nSec-WebSocket-Version: 13\r\n\r\n"));
    bool eof = false;
    std::string r = c.recv_until_eof(&eof);
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r;
  }
}

std::string find_chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (proto_test::executable(p)) {
      return p;
    }
  }
  return {};
}

// The page the browser runs: it talks to ws_echo_server on `ws_port` and reports what it saw to
// the test's own HTTP server with GET /report?r=... .
std::string page(int ws_port) {
  return R"(<!doctype html><html><head><meta charset="utf-8"></head><body><script>
const log = [];
function report(s) { fetch('/report?r=' + encodeURIComponent(s + ';' + log.join(';'))); }
const ws = new WebSocket('ws://127.0.0.1:)" +
         std::to_string(ws_port) + R"(/');
ws.binaryType = 'arraybuffer';
const plan = ['hello', 'κόσμε 😀', new Uint8Array([0, 1, 2, 255]), 'x'.repeat(100000)];
let i = 0;
ws.onopen = () => { log.push('open ext=' + ws.extensions); ws.send(plan[0]); };
ws.onmessage = (ev) => {
  const want = plan[i];
  let ok;
  if (typeof want === 'string') {
    ok = typeof ev.data === 'string' && ev.data === want;
    log.push('text ' + (want.length > 20 ? want.length + ' chars' : want) + (ok ? ' ok' : ' BAD'));
  } else {
    const got = new Uint8Array(ev.data);
    ok = got.length === want.length && got.every((v, k) => v === want[k]);
    log.push('binary ' + got.length + (ok ? ' ok' : ' BAD'));
  }
  if (!ok) { ws.close(); return; }
  if (++i < plan.length) ws.send(plan[i]); else ws.close(1000, 'bye');
};
ws.onclose = (ev) => {
  log.push('close ' + ev.code);
  report(i === plan.length && ev.code === 1000 ? 'RESULT PASS' : 'RESULT FAIL');
};
</script></body></html>)";
}

TEST(ws_chromium, page_exchanges_messages_with_echo_server) {
  std::string chromium = find_chromium();
  if (chromium.empty()) {
    GTEST_SKIP() << "chromium is not installed (scripts/deps test installs it)";
  }
  example ex;
  ASSERT_GT(ex.port, 0);

  // The test's own HTTP server serves the page and receives the report.
  std::mutex mu;
  std::condition_variable cv;
  std::string result;
  http::router r;
  std::string html = page(ex.port);
  r.get("/page", [&html](const http::request&, http::response& res) {
    res.start(200).header("Content-Type", "text/html; charset=utf-8").body(html);
  });
  r.get("/report", [&](const http::request& req, http::response& res) {
    {
      std::lock_guard<std::mutex> lk(mu);
      result = percent_decode(req.head.query);
    }
    cv.notify_all();
    res.start(200).body("thanks");
  });
  auto promise = std::make_shared<std::promise<int>>();
  auto port_future = promise->get_future();
  http::server_options o;
  o.on_boot = [promise](evnet::engine& e) {
    promise->set_value(e.listen_addresses().at(0).port());
  };
  http::server srv(std::move(r), o);
  std::thread t([&] { (void)srv.run({"tcp://127.0.0.1:0"}); });
  ASSERT_EQ(port_future.wait_for(10s), std::future_status::ready);
  int page_port = port_future.get();

  char dir[] = "/tmp/evnet_chromium_XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  child browser;
  ASSERT_TRUE(browser.start({chromium, "--headless", "--no-sandbox", "--disable-gpu",
                             "--no-first-run", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--disable-quic",
                             "--disable-dev-shm-usage", std::string("--user-data-dir=") + dir,
                             "http://127.0.0.1:" + std::to_string(page_port) + "/page"}));
  std::string got;
  {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait_for(lk, 60s, [&] { return !result.empty(); });
    got = result;
  }
  browser.kill_and_wait();
  srv.stop();
  t.join();
  std::string rm;
  (void)proto_test::run({"/bin/rm", "-rf", dir}, rm, 30s);
  std::printf("browser reported: %s\n", got.c_str());
  ASSERT_FALSE(got.empty()) << "the browser never reported; its output:\n" << browser.captured;
  EXPECT_NE(got.find("RESULT PASS"), std::string::npos) << got;
  EXPECT_NE(got.find("open ext=permessage-deflate"), std::string::npos) << got;
  EXPECT_NE(got.find("text hello ok"), std::string::npos) << got;
  EXPECT_NE(got.find("binary 4 ok"), std::string::npos) << got;
  EXPECT_NE(got.find("text 100000 chars ok"), std::string::npos) << got;
  EXPECT_NE(got.find("close 1000"), std::string::npos) << got;
}

}  // namespace
