// ws_echo_server — the WebSocket example of the contract in shared DESIGN.md.
//
// WebSocket on "/": every text or binary message is echoed back with the same opcode. Messages
// up to 16 MiB are accepted; permessage-deflate is offered. Reading from a client pauses while
// more than the engine's high-water mark (4 MiB) of its echoes wait to be sent. Any other path
// answers 404, except GET /echo.html, a small page whose script talks to this server (used by the
// browser test).
//
// Usage: ws_echo_server [--port P] [--loops N] [--help]
// Prints "listening on <port>" (flushed) once bound; exits 0 on SIGINT/SIGTERM.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "evnet/conn.h"
#include "evnet/ws/server.h"
#include "example_args.h"

namespace {

struct echo final : evnet::ws::handler {
  void on_message(const evnet::ws::connection_ptr& c, evnet::ws::opcode type,
                  std::string_view data) override {
    (void)c->send(type, data);
  }
  // A client that sends without reading our echoes would make them pile up: stop reading from it
  // while its output is above the engine's high-water mark, so memory stays bounded and the
  // client's own sends stall instead. Both run on the connection's loop thread.
  void on_high_water(const evnet::ws::connection_ptr& c) override { c->raw().pause_read(); }
  void on_drain(const evnet::ws::connection_ptr& c) override { c->raw().resume_read(); }
};

// A page for browsers: opens a WebSocket back to this server, exchanges messages (text, binary,
// a large text) and writes the outcome into the DOM, so `chromium --dump-dom` prints it.
constexpr const char* kPage = R"(<!doctype html>
<html><head><meta charset="utf-8"><title>evnet ws echo</title></head>
<body><pre id="result">pending</pre>
<script>
const out = document.getElementById('result');
const log = [];
function done(s) { out.textContent = s + '\n' + log.join('\n'); }
try {
  const ws = new WebSocket('ws://' + location.host + '/');
  ws.binaryType = 'arraybuffer';
  const big = 'x'.repeat(100000);
  const plan = ['hello', 'κόσμε 😀', new Uint8Array([0, 1, 2, 255]), big];
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
    if (!ok) { done('RESULT: FAIL'); ws.close(); return; }
    if (++i < plan.length) { ws.send(plan[i]); } else { ws.close(1000, 'bye'); }
  };
  ws.onclose = (ev) => {
    log.push('close ' + ev.code);
    done(i === plan.length && ev.code === 1000 ? 'RESULT: PASS' : 'RESULT: FAIL');
  };
  ws.onerror = () => { log.push('error'); };
} catch (e) { done('RESULT: FAIL ' + e); }
</script></body></html>
)";

void usage(const char* argv0) {
  std::printf(
      "usage: %s [--port P] [--loops N] [--help]\n"
      "  --port P   listen on 0.0.0.0:P (0 = any free port; default 8081)\n"
      "  --loops N  reactor threads (0 = one per core; default 1)\n"
      "WebSocket echo on '/'; prints 'listening on <port>' once bound.\n",
      argv0);
}

}  // namespace

int main(int argc, char** argv) {
  long port = 8081;
  long loops = 1;
  if (const int status = example::parse_port_loops(argc, argv, port, loops, usage); status >= 0) {
    return status;
  }

  echo h;
  evnet::ws::options o;
  o.max_frame_bytes = 16u << 20;
  o.max_message_bytes = 16u << 20;
  o.permessage_deflate = true;
  evnet::ws::server srv(h, o, "/");
  srv.routes().get("/echo.html", [](const evnet::http::request&, evnet::http::response& res) {
    res.start(200).header("Content-Type", "text/html; charset=utf-8").body(kPage);
  });
  srv.http_options().on_boot = [](evnet::engine& e) {
    auto addrs = e.listen_addresses();
    example::announce(std::to_string(addrs.empty() ? 0u : unsigned{addrs[0].port()}));
  };
  example::stop_on_signals(srv);
  std::signal(SIGPIPE, SIG_IGN);

  evnet::engine_options eo;
  eo.loops = static_cast<std::size_t>(loops);
  eo.accept = loops == 1 ? evnet::accept_model::acceptor : evnet::accept_model::reuse_port;
  eo.max_input = 64u << 20;  // room for a 16 MiB message plus framing
  std::error_code ec = srv.run({"tcp://0.0.0.0:" + std::to_string(port)}, eo);
  example::clear_stop_target<evnet::ws::server>();
  if (ec) {
    std::fprintf(stderr, "ws_echo_server: %s\n", ec.message().c_str());
    return 1;
  }
  return 0;
}
