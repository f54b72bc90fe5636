#include "evnet/http/response.h"

#include "http/bytes.h"
#include "http/date.h"

// clock_gettime() and gmtime_r() are POSIX, declared by <time.h>; <ctime> only promises the
// ISO C functions.
#include <time.h>  // NOLINT(modernize-deprecated-headers)

#include <charconv>
#include <cstdio>
#include <cstring>
#include <initializer_list>

namespace evnet::http {

// The IANA HTTP Status Code Registry's reason phrases (RFC 9110 §15, and the RFCs that added the
// others: 102, 207, 208, 423, 424, 507, 508 WebDAV; 103 RFC 8297; 226 RFC 3229; 425 RFC 8470;
// 428, 429, 431, 511 RFC 6585; 451 RFC 7725; 506 RFC 2295; 510 RFC 2774).
std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 102:
      return "Processing";
    case 103:
      return "Early Hints";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 203:
      return "Non-Authoritative Information";
    case 204:
      return "No Content";
    case 205:
      return "Reset Content";
    case 206:
      return "Partial Content";
    case 207:
      return "Multi-Status";
    case 208:
      return "Already Reported";
    case 226:
      return "IM Used";
    case 300:
      return "Multiple Choices";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 305:
      return "Use Proxy";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 402:
      return "Payment Required";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 407:
      return "Proxy Authentication Required";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 417:
      return "Expectation Failed";
    case 421:
      return "Misdirected Request";
    case 422:
      return "Unprocessable Content";
    case 423:
      return "Locked";
    case 424:
      return "Failed Dependency";
    case 425:
      return "Too Early";
    case 426:
      return "Upgrade Required";
    case 428:
      return "Precondition Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 451:
      return "Unavailable For Legal Reasons";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    case 506:
      return "Variant Also Negotiates";
    case 507:
      return "Insufficient Storage";
    case 508:
      return "Loop Detected";
    case 510:
      return "Not Extended";
    case 511:
      return "Network Authentication Required";
    default:
      return "Unknown";
  }
}

namespace {

// "HTTP/1.1 200 OK\r\nDate: <IMF-fixdate>\r\n", rebuilt at most once per second per thread: the
// server's most common response head and, from kDateAt on, the Date line alone.
constexpr std::size_t kDateAt = detail::kOkStatusLine.size();
struct date_cache {
  time_t sec = -1;
  char line[80] = "HTTP/1.1 200 OK\r\n";
  std::size_t len = 0;
};

thread_local date_cache t_date;

// Rebuilds the cache if the second changed. The coarse clock is read through the vDSO and costs
// a few nanoseconds.
const date_cache& current_date() noexcept {
  date_cache& c = t_date;
  timespec ts{};
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  if (ts.tv_sec != c.sec) {
    c.sec = ts.tv_sec;
    tm t{};
    gmtime_r(&ts.tv_sec, &t);
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int n =
        std::snprintf(c.line + kDateAt, sizeof c.line - kDateAt,
                      "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n", kDays[t.tm_wday], t.tm_mday,
                      kMonths[t.tm_mon], t.tm_year + 1900, t.tm_hour, t.tm_min, t.tm_sec);
    c.len = n > 0 ? kDateAt + static_cast<std::size_t>(n) : 0;
  }
  return c;
}

}  // namespace

namespace detail {

void refresh_date() noexcept {
  (void)current_date();
}

std::string_view cached_ok_and_date() noexcept {
  const date_cache& c = t_date;
  return c.len ? std::string_view(c.line, c.len) : std::string_view();
}

std::string_view cached_date_line() noexcept {
  const date_cache& c = t_date;
  return c.len ? std::string_view(c.line + kDateAt, c.len - kDateAt) : std::string_view();
}

}  // namespace detail

std::string_view http_date() noexcept {
  const date_cache& c = current_date();
  // Strip "HTTP/1.1 200 OK\r\nDate: " and "\r\n".
  return c.len > kDateAt + 8 ? std::string_view(c.line + kDateAt + 6, c.len - kDateAt - 8)
                             : std::string_view();
}

namespace {
// Appends `bytes` with each CR, LF and NUL made a space: caller's text inside a line of the
// head cannot end that line (response splitting).
void append_in_line(std::string& out, std::string_view bytes) {
  const std::size_t at = out.size();
  out.append(bytes);
  detail::blank_line_breaks(out.data() + at, bytes.size());
}
}  // namespace

response_writer& response_writer::status(int status, std::string_view reason) {
  if (status < 100 || status > 599) [[unlikely]] {
    // RFC 9110 §15: three digits, 100..599; the digits of any other int would be garbage.
    status = 500;
    reason = {};
  }
  // The common status lines are literals: one append instead of four.
  if (reason.empty()) {
    switch (status) {
      case 200:
        out_.append("HTTP/1.1 200 OK\r\n", 17);
        return *this;
      case 404:
        out_.append("HTTP/1.1 404 Not Found\r\n", 24);
        return *this;
      default:
        reason = reason_phrase(status);
    }
  }
  char code[13];
  detail::status_line_prefix(code, status);
  out_.append(code, 13);
  append_in_line(out_, reason);
  out_.append("\r\n", 2);
  return *this;
}

response_writer& response_writer::header(std::string_view name, std::string_view value) {
  if (!detail::is_token(name)) [[unlikely]] {
    return *this;  // not a field name (RFC 9110 §5.1): dropped, as Go's net/http does
  }
  out_.append(name);
  out_.append(": ", 2);
  append_in_line(out_, value);
  out_.append("\r\n", 2);
  return *this;
}

response_writer& response_writer::add_date() {
  const date_cache& c = current_date();
  if (c.len > kDateAt) {
    out_.append(c.line + kDateAt, c.len - kDateAt);
  }
  return *this;
}

void response_writer::end_headers(std::uint64_t content_length) {
  // "Content-Length: " and the number composed in place, then the blank line: one append.
  char buf[48] = "Content-Length: ";
  auto r = std::to_chars(buf + 16, buf + 40, content_length);
  std::memcpy(r.ptr, "\r\n\r\n", 4);
  out_.append(buf, static_cast<std::size_t>(r.ptr + 4 - buf));
}

void response_writer::body(std::string_view body) {
  end_headers(body.size());
  out_.append(body);
}

void response_writer::begin_chunked() {
  out_.append("Transfer-Encoding: chunked\r\n\r\n", 30);
}

void response_writer::chunk(std::string_view data) {
  if (data.empty()) {
    return;
  }
  char num[20];
  auto r = std::to_chars(num, num + sizeof num, data.size(), 16);
  out_.append(num, static_cast<std::size_t>(r.ptr - num));
  out_.append("\r\n", 2);
  out_.append(data);
  out_.append("\r\n", 2);
}

void response_writer::end_chunked() {
  out_.append("0\r\n\r\n", 5);
}

}  // namespace evnet::http
