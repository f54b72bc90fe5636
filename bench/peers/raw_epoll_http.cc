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

namespace {

constexpr size_t kBufSize = 64 * 1024;
constexpr size_t kMaxRequest = 8 * 1024;

struct connection : raw::conn {
  std::string partial;  // an incomplete request carried to the next read
};

char g_in[kBufSize];
std::string g_out;
time_t g_date_second = 0;
char g_ok[256];
size_t g_ok_len = 0;
char g_not_found[256];
size_t g_not_found_len = 0;

void refresh_date() {
  const time_t now = time(nullptr);
  if (now == g_date_second) return;
  g_date_second = now;
  tm gmt;
  gmtime_r(&now, &gmt);
  char date[64];
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &gmt);
  g_ok_len = static_cast<size_t>(std::snprintf(g_ok, sizeof g_ok,
                                               "HTTP/1.1 200 OK\r\nServer: raw\r\n"
                                               "Content-Type: text/plain\r\nContent-Length: 13\r\n"
                                               "Date: %s\r\n\r\nHello, World!",
                                               date));
  g_not_found_len = static_cast<size_t>(std::snprintf(
      g_not_found, sizeof g_not_found,
      "HTTP/1.1 404 Not Found\r\nServer: raw\r\nContent-Length: 0\r\nDate: %s\r\n\r\n", date));
}

// Appends a response for every complete request in [p, p+n) to g_out; returns the bytes used.
size_t answer_requests(const char* p, size_t n) {
  size_t used = 0;
  while (used < n) {
    const void* end = memmem(p + used, n - used, "\r\n\r\n", 4);
    if (end == nullptr) break;
    const char* req = p + used;
    if (n - used >= 15 && std::memcmp(req, "GET /plaintext ", 15) == 0) {
      g_out.append(g_ok, g_ok_len);
    } else {
      g_out.append(g_not_found, g_not_found_len);
    }
    used = static_cast<size_t>(static_cast<const char*>(end) - p) + 4;
  }
  return used;
}

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
      const size_t used = answer_requests(g_in, static_cast<size_t>(n));
      c->partial.assign(g_in + used, static_cast<size_t>(n) - used);
    } else {
      c->partial.append(g_in, static_cast<size_t>(n));
      const size_t used = answer_requests(c->partial.data(), c->partial.size());
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
