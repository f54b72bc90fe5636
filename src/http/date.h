// evnet — the per-thread Date cache behind response_writer::add_date(), exposed to the server so
// it reads the clock once per batch of requests instead of once per response (internal header,
// not installed).
#pragma once

#include <string_view>

namespace evnet::http::detail {

/// The status line cached_ok_and_date() begins with; the Date line follows it.
inline constexpr std::string_view kOkStatusLine = "HTTP/1.1 200 OK\r\n";

/// Rebuilds the calling thread's cached Date line if the second changed (reads the coarse
/// clock). Any thread; touches only that thread's cache.
void refresh_date() noexcept;

/// "HTTP/1.1 200 OK\r\nDate: <IMF-fixdate>\r\n" as of the calling thread's last refresh_date()
/// (or add_date()/http_date()); empty before the first. Any thread. The view points into that
/// thread's cache, which later refreshes rewrite in place (same length): it stays valid, and
/// reads the current date, for as long as the thread lives.
std::string_view cached_ok_and_date() noexcept;

/// "Date: <IMF-fixdate>\r\n" from the same cache, with the same rules.
std::string_view cached_date_line() noexcept;

}  // namespace evnet::http::detail
