// The answers of the hand-written HTTP responders (raw_epoll_http, raw_uring_http), shared so
// that both send the same bytes: `GET /plaintext` answers 200 with the 13-byte body
// `Hello, World!`, Content-Type and a Date header (formatted once per second); any other
// request answers 404. Only GET without a body is understood, as wrk sends it.
#pragma once

#include <time.h>

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

namespace raw_http {

inline time_t g_date_second = 0;
inline char g_ok[256];
inline std::size_t g_ok_len = 0;
inline char g_not_found[256];
inline std::size_t g_not_found_len = 0;

// Formats both answers again when the second changed.
inline void refresh_date() {
  const time_t now = time(nullptr);
  if (now == g_date_second) return;
  g_date_second = now;
  tm gmt;
  gmtime_r(&now, &gmt);
  char date[64];
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &gmt);
  g_ok_len = static_cast<std::size_t>(std::snprintf(g_ok, sizeof g_ok,
                                                    "HTTP/1.1 200 OK\r\nServer: raw\r\n"
                                                    "Content-Type: text/plain\r\n"
                                                    "Content-Length: 13\r\n"
                                                    "Date: %s\r\n\r\nHello, World!",
                                                    date));
  g_not_found_len = static_cast<std::size_t>(std::snprintf(
      g_not_found, sizeof g_not_found,
      "HTTP/1.1 404 Not Found\r\nServer: raw\r\nContent-Length: 0\r\nDate: %s\r\n\r\n", date));
}

// Appends a response for every complete request in [p, p+n) to `out`; returns the bytes used.
inline std::size_t answer_requests(const char* p, std::size_t n, std::string& out) {
  std::size_t used = 0;
  while (used < n) {
    const void* end = memmem(p + used, n - used, "\r\n\r\n", 4);
    if (end == nullptr) break;
    const char* req = p + used;
    if (n - used >= 15 && std::memcmp(req, "GET /plaintext ", 15) == 0) {
      out.append(g_ok, g_ok_len);
    } else {
      out.append(g_not_found, g_not_found_len);
    }
    used = static_cast<std::size_t>(static_cast<const char*>(end) - p) + 4;
  }
  return used;
}

}  // namespace raw_http
