// raw_epoll_http: the practical limit for a one-thread HTTP/1.1 plaintext responder, by hand.
//
// Same event loop as raw_epoll_echo (edge-triggered, one registration per connection, a short
// read means drained). Each read is scanned for complete requests (GET without a body, as wrk
// sends them); the responses to every complete request in the batch are built in one buffer and
// sent with ONE write, which is what makes pipelined requests cheap. `GET /plaintext` answers
// 200 with the 13-byte body `Hello, World!`, Content-Type and a Date header (formatted once per
// second); any other request line answers 404. It is deliberately not a general HTTP server: no
// request bodies, no chunked encoding — it exists to show what the work itself costs.
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "raw_epoll_common.h"
#include "raw_http_answers.h"

namespace {

constexpr size_t kBufSize = 64 * 1024;
constexpr size_t kMaxRequest = 8 * 1024;

struct connection : raw::conn {
  std::string partial;  // an incomplete request carried to the next read
};

char g_in[kBufSize];
std::string g_out;
using raw_http::answer_requests;
using raw_http::refresh_date;

bool on_readable(connection* c) {
  for (;;) {
    const ssize_t n = ::read(c->fd, g_in, kBufSize);
    if (n == 0) return false;
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN;
    }
    g_out.clear();
    if (c->partial.empty()) {
      const size_t used = answer_requests(g_in, static_cast<size_t>(n), g_out);
      c->partial.assign(g_in + used, static_cast<size_t>(n) - used);
    } else {
      c->partial.append(g_in, static_cast<size_t>(n));
      const size_t used = answer_requests(c->partial.data(), c->partial.size(), g_out);
      c->partial.erase(0, used);
    }
    if (c->partial.size() > kMaxRequest) return false;
    if (!g_out.empty() && !raw::send_bytes(c, g_out.data(), g_out.size())) return false;
    if (static_cast<size_t>(n) < kBufSize) return true;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const peer::args args = peer::parse_args(argc, argv, "raw_epoll_http");
  g_out.reserve(kBufSize * 4);
  refresh_date();
  const int lfd = raw::start(args, "raw_epoll_http");
  if (lfd < 0) return 1;
  // A one-second wait bound keeps the Date header fresh when idle.
  raw::run<connection, on_readable, refresh_date>(lfd, 1000);
  return 0;
}
