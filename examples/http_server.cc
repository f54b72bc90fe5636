// http_server — the HTTP/1.1 example of the contract in shared DESIGN.md.
//
//   GET /plaintext → 200 "Hello, World!" (Content-Type: text/plain, Date); other paths → 404.
//   Keep-alive and pipelining; request bodies (Content-Length or chunked) are read and discarded.
//
// Usage: http_server [--port P] [--loops N] [--help]
//   --port P   TCP port on 127.0.0.1... (0.0.0.0; 0 = any free port), default 8080
//   --loops N  reactor threads (0 = one per core), default 1
// Prints "listening on <port>" (flushed) once bound; exits 0 on SIGINT/SIGTERM.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "evnet/http/server.h"
#include "http_example.h"

namespace {

void usage(const char* argv0) {
  std::printf(
      "usage: %s [--port P] [--loops N] [--help]\n"
      "  --port P   listen on 0.0.0.0:P (0 = any free port; default 8080)\n"
      "  --loops N  reactor threads (0 = one per core; default 1)\n"
      "Serves GET /plaintext -> 'Hello, World!'; prints 'listening on <port>' once bound.\n",
      argv0);
}

}  // namespace

int main(int argc, char** argv) {
  long port = 8080;
  long loops = 1;
  if (const int status = example::parse_port_loops(argc, argv, port, loops, usage); status >= 0) {
    return status;
  }

  evnet::http::router r;
  r.get("/plaintext", [](const evnet::http::request&, evnet::http::response& res) {
    res.start(200).header("Content-Type", "text/plain").body("Hello, World!");
  });

  evnet::http::server_options opts;
  opts.buffer_body = false;  // bodies are read and discarded
  return example::serve_http("http_server", std::move(r), opts,
                             static_cast<unsigned long long>(port),
                             static_cast<unsigned long long>(loops));
}
