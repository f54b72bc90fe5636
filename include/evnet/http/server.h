// evnet — HTTP/1.1 server on the net layer: a router (method + path → handler), keep-alive,
// pipelining with responses in request order, limits, header and body timeouts, and protocol
// upgrades (WebSocket) through the same parser.
//
// This is a public header.
//
// Threading: an http::server is an evnet::handler; the engine calls it on each connection's loop
// thread. Route handlers and upgrade handlers run on the loop thread of the connection whose
// request they serve, possibly on several loops at once (one per connection), so shared state
// they touch must be synchronised by the user. The router must not be changed after run().
//
// Output: every response produced while handling one batch of input (one on_traffic call) is
// staged in a per-connection buffer and handed to the connection with ONE write, so a batch of
// pipelined requests is answered with one system call.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "evnet/engine.h"
#include "evnet/handler.h"
#include "evnet/http/parser.h"
#include "evnet/http/response.h"

namespace evnet::http {

/// A complete request as seen by a route handler. Views are valid during the handler call only.
struct request {
  const http::message& head;  ///< Method, target, headers (see http::message).
  std::string_view body;      ///< The decoded body when server_options::buffer_body, else empty.
  evnet::conn& connection;    ///< The connection (loop thread only).
};

namespace detail {

/// The bytes a connection's responses are composed into during one batch (internal: the server
/// owns one per connection and hands it to the connection with one write). Responses write
/// straight into it; it grows by doubling and never shrinks, so a connection in its steady state
/// allocates nothing. Loop thread only.
class out_buffer {
 public:
  /// Makes n more bytes part of the buffer and returns where they start (uninitialised).
  char* extend(std::size_t n) {
    if (capacity_ - size_ < n) {
      grow(n);
    }
    char* at = data_.get() + size_;
    size_ += n;
    return at;
  }
  /// Appends bytes.
  void append(std::string_view bytes) {
    if (!bytes.empty()) {
      std::memcpy(extend(bytes.size()), bytes.data(), bytes.size());
    }
  }
  /// Drops the bytes after the first n (n <= size()).
  void truncate(std::size_t n) noexcept { size_ = n; }
  /// Drops everything; keeps the memory.
  void clear() noexcept { size_ = 0; }
  /// Number of bytes.
  std::size_t size() const noexcept { return size_; }
  /// True when there are no bytes.
  bool empty() const noexcept { return size_ == 0; }
  /// The bytes; valid until the next change.
  std::string_view view() const noexcept { return {data_.get(), size_}; }

 private:
  void grow(std::size_t n);

  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace detail

/// Builds the response to one request into the connection's output for the batch. A handler
/// must finish it (body(), or end_chunked() after begin_chunked()) before returning; a handler
/// that does not start a response gets a 500. Loop thread only.
///
/// Every piece is written in place into that output (no intermediate string); only the
/// Content-Length digits are formatted per response.
class response {
 public:
  /// Status line, then the Date header and, when this is the connection's last response,
  /// "Connection: close". Must be called first, once.
  response& start(int status, std::string_view reason = {});
  /// Adds a header (after start()). Name and value must not contain CR/LF.
  response& header(std::string_view name, std::string_view value);
  /// Content-Length and the body (omitted for a HEAD request); ends the response.
  void body(std::string_view body);
  /// Starts a chunked body (Transfer-Encoding: chunked).
  void begin_chunked();
  /// One chunk of a chunked body.
  void chunk(std::string_view data);
  /// Ends a chunked body; ends the response.
  void end_chunked();
  /// True once start() was called.
  bool started() const noexcept { return started_; }
  /// True once the response is complete.
  bool finished() const noexcept { return finished_; }

  /// Internal: made by the server for each request. `last`: the connection closes after this
  /// response; `keep_alive_10`: an HTTP/1.0 client asked for keep-alive (must be confirmed).
  /// `ok_head`: "HTTP/1.1 200 OK\r\nDate: ...\r\n" from this thread's Date cache, or empty for
  /// the response to read the cache itself.
  response(detail::out_buffer& out, bool head_request, bool last, bool keep_alive_10,
           std::string_view ok_head = {}) noexcept
      : out_(out),
        ok_head_(ok_head),
        head_request_(head_request),
        last_(last),
        keep_alive_10_(keep_alive_10) {}

 private:
  void put(std::string_view bytes);

  detail::out_buffer& out_;
  std::string_view ok_head_;
  bool head_request_;
  bool last_;
  bool keep_alive_10_;
  bool started_ = false;
  bool finished_ = false;
};

/// A route handler. Runs on the connection's loop thread.
using route_handler = std::function<void(const request& req, response& res)>;

/// A protocol that takes over a connection after an HTTP upgrade (e.g. a WebSocket session).
/// Its methods run on the connection's loop thread.
class upgraded_protocol {
 public:
  /// Destroyed on the loop thread after on_close.
  virtual ~upgraded_protocol() = default;
  /// Bytes arrived (including any that followed the upgrade request in the same read).
  /// Same contract as evnet::handler::on_traffic.
  virtual action on_traffic(evnet::conn& c) = 0;
  /// The connection closed; called exactly once.
  virtual void on_close(evnet::conn& c, std::error_code reason) = 0;
  /// Called right after the switch, once the 101 response has been handed to the connection.
  /// `out` is empty on entry; whatever is appended to it (e.g. a greeting) is written next.
  virtual void on_upgraded(evnet::conn& c, std::string& out) {
    (void)c;
    (void)out;
  }
};

/// Decides an upgrade request for a path. Runs on the connection's loop thread. Either appends
/// a complete refusal (e.g. 400/426) to `out` and returns nullptr — the connection is then
/// closed after the write — or appends the 101 response and returns the protocol that takes
/// over.
using upgrade_handler = std::function<std::unique_ptr<upgraded_protocol>(
    evnet::conn& c, const http::message& req, std::string& out)>;

/// Maps method + exact path to handlers. Unknown path → 404; known path, other method → 405.
/// Build it before run(); read-only afterwards (so any thread may read it concurrently).
class router {
 public:
  /// Adds a route. Owner thread, before the server runs.
  router& add(http::method m, std::string path, route_handler h);
  /// Shorthand for add(method::get, ...).
  router& get(std::string path, route_handler h) {
    return add(method::get, std::move(path), std::move(h));
  }
  /// Shorthand for add(method::post, ...).
  router& post(std::string path, route_handler h) {
    return add(method::post, std::move(path), std::move(h));
  }
  /// Routes upgrade requests (Connection: upgrade) for `path` to `h`. Before run().
  router& upgrade(std::string path, upgrade_handler h);

  /// The handler for a request, or nullptr; `status` tells 404 from 405 when nullptr.
  /// Any thread (read-only).
  const route_handler* find(http::method m, std::string_view path, int& status) const noexcept;
  /// The upgrade handler for `path`, or nullptr. Any thread (read-only).
  const upgrade_handler* find_upgrade(std::string_view path) const noexcept;

 private:
  struct route {
    http::method method;
    std::string path;
    route_handler handler;
  };
  std::vector<route> routes_;
  std::vector<std::pair<std::string, upgrade_handler>> upgrades_;
};

/// Server settings.
struct server_options {
  /// Parser limits (431/414/413 answers).
  parser_limits limits;
  /// A client that has started a request but not finished its headers within this time gets
  /// 408 and is closed; 0 disables.
  std::chrono::milliseconds header_timeout{10000};
  /// A request whose head is complete but whose body (Content-Length or chunked) then receives
  /// no byte for this long gets 408 and is closed; 0 disables. The clock restarts with every
  /// read, so an upload that keeps making progress is never cut off.
  std::chrono::milliseconds body_timeout{30000};
  /// A keep-alive connection with no request in progress is closed after this long; 0
  /// disables.
  std::chrono::milliseconds keep_alive_timeout{60000};
  /// Collect request bodies for handlers (request::body). When false, bodies are read and
  /// discarded as they arrive, so no memory is spent on them.
  bool buffer_body = true;
  /// After an error answer the server stops sending, then keeps reading (and discarding) for at
  /// most this long so the client sees the answer instead of a reset.
  std::chrono::milliseconds linger{2000};
  /// Called from the server's on_boot (thread that called run()) with the engine, e.g. to print
  /// the bound port.
  std::function<void(evnet::engine&)> on_boot;
};

/// The HTTP server: an evnet::handler. Construct with a router, then run() (or pass it to an
/// engine you run yourself).
class server : public evnet::handler {
 public:
  /// Takes the router and options. Any thread, before run().
  explicit server(router r, server_options opts = {});
  /// Must not be destroyed while run() is executing. Owner thread.
  ~server() override;

  /// Runs an engine serving `addresses` until stop(); see engine::run. Blocks the calling
  /// thread.
  std::error_code run(const std::vector<std::string>& addresses, const engine_options& eo = {});
  /// Stops a run() in progress. Any thread; async-signal-safe.
  void stop() noexcept { engine_.stop(); }
  /// The engine of run(). Any thread (see engine's own contracts).
  evnet::engine& get_engine() noexcept { return engine_; }

  /// evnet::handler: calls server_options::on_boot. Thread that called engine::run().
  void on_boot(evnet::engine& e) override;
  /// evnet::handler: creates the connection's session and header timer. Loop thread of `c`.
  action on_open(evnet::conn& c) override;
  /// evnet::handler: parses, routes and answers a batch of requests with one write (or hands
  /// the bytes to the upgraded protocol). Loop thread of `c`.
  action on_traffic(evnet::conn& c) override;
  /// evnet::handler: the peer finished sending; closes once output is flushed. Loop thread.
  action on_read_eof(evnet::conn& c) override;
  /// evnet::handler: tears the session down (and the upgraded protocol's). Loop thread of `c`.
  void on_close(evnet::conn& c, std::error_code reason) override;

 private:
  struct session;
  static session* session_of(evnet::conn& c) noexcept;
  action handle_input(evnet::conn& c, session& s);
  void answer_error(evnet::conn& c, session& s, int status, std::string_view reason);
  void dispatch(evnet::conn& c, session& s);
  void arm_timer(evnet::conn& c, session& s, std::chrono::milliseconds after);
  void on_timer(evnet::conn& c, session& s);
  void answer_timeout(evnet::conn& c, session& s, std::string_view reason);
  std::chrono::milliseconds shortest_timeout() const noexcept;

  router router_;
  server_options opts_;
  evnet::engine engine_;
};

}  // namespace evnet::http
