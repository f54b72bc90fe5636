// evnet — HTTP/1.1 server on the net layer: a router (method + exact path or path pattern such
// as /users/:id → handler), keep-alive, pipelining with responses in request order, limits,
// header and body timeouts, and protocol upgrades (WebSocket) through the same parser.
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
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "evnet/engine.h"
#include "evnet/handler.h"
#include "evnet/http/parser.h"
#include "evnet/http/response.h"

namespace evnet::http {

/// The parameters a pattern route captured from a request path (see router): `:name` segments
/// and the `*name` catch-all, in the order they appear in the pattern. Names point into the
/// router, values into the request target (raw bytes as received: not percent-decoded), so
/// filling one allocates nothing; both are valid during the handler call only. An exact route
/// captures nothing. Used by one thread at a time (the server keeps one per connection and
/// fills it on that connection's loop thread).
class route_params {
 public:
  /// Most parameters one pattern may have; router::add refuses patterns with more.
  static constexpr std::size_t kMax = 8;

  /// One captured parameter.
  struct entry {
    std::string_view name;   ///< The name in the pattern, without ':' or '*'.
    std::string_view value;  ///< The matched bytes of the path.
  };

  /// The value of parameter `name`, or an empty view if the route has none by that name.
  /// `found` (optional) tells an absent parameter from an empty catch-all. Any thread that may
  /// read the object.
  std::string_view get(std::string_view name, bool* found = nullptr) const noexcept {
    for (std::size_t i = 0; i < size_; ++i) {
      if (entries_[i].name == name) {
        if (found != nullptr) {
          *found = true;
        }
        return entries_[i].value;
      }
    }
    if (found != nullptr) {
      *found = false;
    }
    return {};
  }
  /// Number of captured parameters.
  std::size_t size() const noexcept { return size_; }
  /// True when nothing was captured.
  bool empty() const noexcept { return size_ == 0; }
  /// The captured parameters, in pattern order.
  const entry* begin() const noexcept { return entries_; }
  /// End of the captured parameters.
  const entry* end() const noexcept { return entries_ + size_; }

 private:
  friend class router;
  entry entries_[kMax];
  std::size_t size_ = 0;
};

/// A complete request as seen by a route handler. Views are valid during the handler call only.
struct request {
  const http::message& head;  ///< Method, target, headers (see http::message).
  std::string_view body;      ///< The decoded body when server_options::buffer_body, else empty.
  evnet::conn& connection;    ///< The connection (loop thread only).
  /// What a pattern route captured, or nullptr (an exact route, or a request made by hand).
  const route_params* params = nullptr;

  /// The path parameter `name` of a pattern route (`/users/:id` → param("id")), or an empty
  /// view when the route has no such parameter. `found` (optional) tells an absent parameter
  /// from an empty catch-all. The view points into the request target (not percent-decoded)
  /// and is valid during the handler call only. Loop thread of the request's connection.
  std::string_view param(std::string_view name, bool* found = nullptr) const noexcept {
    if (params == nullptr) {
      if (found != nullptr) {
        *found = false;
      }
      return {};
    }
    return params->get(name, found);
  }
};

namespace detail {

/// The bytes a connection's responses are composed into during one batch (internal: the server
/// owns one per connection and hands it to the connection with one write). Responses write
/// straight into it; it grows by doubling and is kept between batches, so a connection in its
/// steady state allocates nothing, unless a batch made it larger than the server keeps
/// (clear_and_trim()). Loop thread only.
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
  /// Replaces the n bytes at `at` (at + n <= size()) with `bytes`, moving the bytes after them.
  void replace(std::size_t at, std::size_t n, std::string_view bytes);
  /// Drops everything; keeps the memory.
  void clear() noexcept { size_ = 0; }
  /// Drops everything, and gives the memory back if it grew past `keep` bytes: one large
  /// response must not stay allocated for the rest of a keep-alive connection.
  void clear_and_trim(std::size_t keep) noexcept {
    size_ = 0;
    if (capacity_ > keep) [[unlikely]] {
      data_.reset();
      capacity_ = 0;
    }
  }
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

/// Length of "HTTP/1.1 200 OK\r\nDate: <IMF-fixdate>\r\n" (the fixed-width Date line).
inline constexpr std::size_t kOkHeadBytes = 17 + 6 + 29 + 2;

/// Copies n bytes for the response writer. Inline, so that a length known where it is called
/// (a literal header name or body) becomes a few stores; other lengths take copy_bytes, which
/// for a few bytes is cheaper than a call into memcpy.
void copy_bytes(char* d, const char* s, std::size_t n) noexcept;
#if defined(__GNUC__)
[[gnu::always_inline]]
#endif
inline void
copy_short(char* d, const char* s, std::size_t n) noexcept {
#if defined(__GNUC__)
  if (__builtin_constant_p(n)) {
    std::memcpy(d, s, n);
    return;
  }
#endif
  copy_bytes(d, s, n);
}

}  // namespace detail

class response;
class deferred_response;
class server;

namespace detail {
struct deferred_state;
}  // namespace detail

/// Builds the response to one request into the connection's output for the batch. A handler
/// must finish it (body(), or end_chunked() after begin_chunked()) before returning, or
/// defer() it; a handler that does neither gets a 500. Loop thread only.
///
/// A call out of order does nothing: start() once started, header() before start() or once
/// the head has ended (body(), begin_chunked()), body() or begin_chunked() outside the head,
/// chunk() and end_chunked() outside a chunked body. Written, such bytes would land between
/// or inside responses (a second answer to one request is taken by the client for the answer
/// to its next one), so a handler bug costs that handler's response, not the connection's.
///
/// Every piece is written in place into that output (no intermediate string); only the
/// Content-Length digits are formatted per response.
class response {
 public:
  /// Status line, then the Date header and, when this is the connection's last response,
  /// "Connection: close". Must be called first, once. A CR, LF or NUL in `reason` is sent
  /// as a space. `status` must be a final status, 200..599 (RFC 9110 §15): an interim 1xx
  /// cannot be the one response to a request (the client would wait on for the final one), and
  /// other ints are not statuses. Any other value is a handler bug and is sent as "500 Internal
  /// Server Error" (its reason dropped); the headers and body are sent as written.
  response& start(int status, std::string_view reason = {}) {
    // The common answer (200, nothing to add to the head) copies the cached status line and
    // Date in one constant-length copy, inline in the handler.
    if (status == 200 && reason.empty() && ok_head_.size() == detail::kOkHeadBytes && !last_ &&
        !keep_alive_10_ && !started_) {
      started_ = head_open_ = true;
      std::memcpy(out_.extend(detail::kOkHeadBytes), ok_head_.data(), detail::kOkHeadBytes);
      return *this;
    }
    return start_general(status, reason);
  }
  /// Adds a header (after start()). A header whose `name` is not a token (RFC 9110 §5.1: empty,
  /// or holding a space, ':', a control byte, a byte above 0x7e...) is not sent, as Go's
  /// net/http drops it: no client could read it as the field meant. A CR or LF would end the
  /// field and let the value write fields (or a body) of its own — response splitting — so, as
  /// Go's net/http does, each CR or LF in `value` is sent as a space, and so is a NUL (RFC 9110
  /// §5.5: a recipient refuses it or reads it as a space). A
  /// "Connection" header whose value has the "close" option makes this the connection's last
  /// response: the server closes the connection after it and answers no request pipelined
  /// behind it (RFC 9112 §9.6, as Go's net/http does for a handler that sets it). The head
  /// carries one Connection field (RFC 9110 §7.6.1: a list): the options of every "Connection"
  /// header given here, in order, and what the server says itself — "close" when the
  /// connection closes after this response (the client asked to close, an HTTP/1.0 client did
  /// not ask for keep-alive, a body streamed to an HTTP/1.0 client, the handler's own close),
  /// "keep-alive" to confirm an HTTP/1.0 client's keep-alive — each option once, and never a
  /// "keep-alive" beside a "close" (the handler's is dropped). The handler's other options
  /// ("upgrade", the names of hop-by-hop fields) are kept. The framing
  /// is the server's: body() sends Content-Length, begin_chunked() Transfer-Encoding, so a
  /// "Content-Length" or "Transfer-Encoding" header given here is not sent (a second framing,
  /// or two lengths, lets a client and a proxy split the stream differently: RFC 9112 §6.3).
  /// The Date is the server's too (start() sends it; RFC 9110 §5.3 allows one Date field), so
  /// a "Date" header given here is not sent either.
  response& header(std::string_view name, std::string_view value) {
    // A table lookup per byte of the name.
    if (!detail::is_token(name)) [[unlikely]] {
      return *this;  // not a field name: dropped
    }
    return header_of_token(name, value);
  }
  /// The same for a name given as a string literal (or another char array): with the length
  /// known at compile time the token check unrolls, and for a literal it folds away entirely
  /// (one table lookup per byte of "Content-Type" was a tenth of a pipelined request's cost).
  /// An array whose string is shorter than the array takes the general path above.
  template <std::size_t N>
  response& header(const char (&name)[N], std::string_view value) {
    const std::string_view n(name);  // strlen: a constant for a literal
    if (n.size() == N - 1 && detail::is_token_of_length<N - 1>(name)) [[likely]] {
      return header_of_token(n, value);
    }
    return header(n, value);
  }
  /// Content-Length and the body (omitted for a HEAD request); ends the response. For a status
  /// that has no content (204, 304: RFC 9110 §6.4.1) neither is sent.
  void body(std::string_view body) {
    // A body under 10,000 bytes: its Content-Length digits are written here, inline, so that a
    // literal body costs a handful of stores; longer ones (and HEAD, and a keep-alive to
    // confirm to an HTTP/1.0 client) are formatted out of line.
    const std::size_t n = body.size();
    if (n >= 10000 || head_request_ || bodiless_status_ || keep_alive_10_ || !head_open_) {
      body_general(body);
      return;
    }
    constexpr std::string_view kName = "Content-Length: ";
    const std::size_t digits = n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : 4;
    char* at = out_.extend(kName.size() + digits + 4 + n);
    std::memcpy(at, kName.data(), kName.size());
    at += kName.size();
    std::size_t v = n;
    for (std::size_t i = digits; i-- > 0; v /= 10) {
      at[i] = static_cast<char>('0' + v % 10);
    }
    at += digits;
    constexpr std::string_view kEnd = "\r\n\r\n";  // copied without a terminating NUL
    std::memcpy(at, kEnd.data(), kEnd.size());
    detail::copy_short(at + 4, body.data(), n);
    head_open_ = false;
    finished_ = true;
  }
  /// Starts a chunked body (Transfer-Encoding: chunked). To an HTTP/1.0 client, which does not
  /// know chunked coding (RFC 9112 §6.1), the chunks are sent as they are and the end of the
  /// body is the end of the connection, which closes after this response.
  void begin_chunked();
  /// One chunk of a chunked body.
  void chunk(std::string_view data);
  /// Ends a chunked body; ends the response.
  void end_chunked();
  /// True once start() was called.
  bool started() const noexcept { return started_; }
  /// True once the response is complete.
  bool finished() const noexcept { return finished_; }
  /// True when the connection must close after this response: a streamed body to an HTTP/1.0
  /// client (delimited by the close), or a "Connection: close" header added by header().
  bool must_close() const noexcept { return raw_body_ || close_requested_; }

  /// Answers later: the handler returns without a response and the returned handle sends it,
  /// from any thread, when it is ready (work on a thread pool, a call to another service).
  /// Until it is finished the connection answers nothing else: requests pipelined behind this
  /// one wait, unread, in order, and no keep-alive or header timeout runs. Must be called
  /// before start(); afterwards this object must not be used (what is written to it is
  /// dropped). Returns an empty handle (whose respond() fails with errc::invalid_argument) if
  /// the response was started, or for a response not made by the server. Handler only (loop
  /// thread). See deferred_response.
  deferred_response defer();

  /// Internal: made by the server for each request. `last`: the connection closes after this
  /// response; `keep_alive_10`: an HTTP/1.0 client asked for keep-alive (must be confirmed).
  /// `ok_head`: "HTTP/1.1 200 OK\r\nDate: ...\r\n" from this thread's Date cache, or empty for
  /// the response to read the cache itself. `http10`: the request was HTTP/1.0.
  response(detail::out_buffer& out, bool head_request, bool last, bool keep_alive_10,
           std::string_view ok_head = {}, bool http10 = false) noexcept
      : out_(out),
        ok_head_(ok_head),
        head_request_(head_request),
        last_(last),
        keep_alive_10_(keep_alive_10),
        http10_(http10) {}

 private:
  void put(std::string_view bytes);
  bool note_connection(std::string_view name, std::string_view value) noexcept;
  static bool is_framing_field(std::string_view name) noexcept;
  // header() for a name known to be a token.
  response& header_of_token(std::string_view name, std::string_view value) {
    if (!head_open_) [[unlikely]] {
      return *this;  // before start(), or after the head ended: see the class comment
    }
    // "Connection"; a literal name of another length folds this away.
    if (name.size() == 10 && note_connection(name, value)) [[unlikely]] {
      return *this;  // the server's own Connection field says what happens
    }
    // "Content-Length" and "Transfer-Encoding"; folds away for literal names of other lengths.
    if ((name.size() == 14 || name.size() == 17) && is_framing_field(name)) [[unlikely]] {
      return *this;
    }
    // "Date", compared inline (other four-byte names, such as "Vary", pay four byte tests).
    if (name.size() == 4 && (name[0] | 0x20) == 'd' && (name[1] | 0x20) == 'a' &&
        (name[2] | 0x20) == 't' && (name[3] | 0x20) == 'e') [[unlikely]] {
      return *this;
    }
    if (detail::may_hold_line_break(value.data(), value.size())) [[unlikely]] {
      return header_with_breaks(name, value);
    }
    char* at = out_.extend(name.size() + value.size() + 4);
    detail::copy_short(at, name.data(), name.size());
    at += name.size();
    at[0] = ':';
    at[1] = ' ';
    detail::copy_short(at + 2, value.data(), value.size());
    at += 2 + value.size();
    at[0] = '\r';
    at[1] = '\n';
    return *this;
  }
  response& header_with_breaks(std::string_view name, std::string_view value);
  void put_in_line(std::string_view bytes);
  response& start_general(int status, std::string_view reason);
  void confirm_keep_alive();
  void merge_connection(std::string_view options);
  void body_general(std::string_view body);

  friend class server;
  detail::out_buffer& out_;
  std::string_view ok_head_;
  // Set by the server for a handler's response (defer() needs them); null otherwise.
  evnet::conn* conn_ = nullptr;
  std::shared_ptr<detail::deferred_state>* defer_slot_ = nullptr;
  // Where this response's one Connection field starts in out_ (merge_connection); npos: none.
  std::size_t connection_line_ = std::string_view::npos;
  bool head_request_;
  bool last_;
  bool keep_alive_10_;
  bool http10_;
  bool started_ = false;
  bool finished_ = false;
  bool head_open_ = false;        // started, and the head not ended yet: header() may write
  bool chunked_ = false;          // begin_chunked() ended the head: chunk() may write
  bool bodiless_status_ = false;  // 204, 304: no Content-Length, no body
  bool raw_body_ = false;         // chunks sent unframed (HTTP/1.0), ended by the close
  bool close_requested_ = false;  // the handler sent "Connection: close"
};

/// The handle of a response deferred by response::defer(). Copies share one response. Every
/// member may be called from any thread.
///
/// respond(fill) runs `fill` on the connection's loop thread with the deferred response, which
/// it fills as a handler would (start, header, body; or begin_chunked and chunks); what it
/// writes is sent at once, but a head only once it has ended (body() or begin_chunked(): its
/// Connection field may change until then). A response may be built over several calls (a
/// chunked stream: one call begins it, later ones add chunks, the last ends it); calls run in
/// the order they were made from one thread. Once a call has finished the response, the connection
/// goes on with the requests that waited behind it (or closes, if the request asked for it). A
/// `fill` that throws, or that neither starts nor finishes a response while the last handle is
/// dropped, ends it as a handler would: a 500 if nothing was started, else the connection is closed
/// (the stream is cut). When the last copy of the handle is destroyed before the response was
/// finished, the same happens.
///
/// The request (its head, body and params) is not kept: copy what the answer needs before the
/// handler returns. respond() returns errc::closed when the connection has closed or the
/// response was finished (fill is then not run), errc::invalid_argument for an empty handle.
/// A connection that closes while a fill is queued drops it. An engine stop waits for pending
/// deferred responses up to engine_options::stop_grace, then closes their connections. A
/// handle may be used (and fails with errc::closed) after the server stops, until the server
/// object is destroyed.
class deferred_response {
 public:
  deferred_response() = default;
  /// See the class comment. Any thread.
  std::error_code respond(std::function<void(response&)> fill);
  /// Shorthand: the whole response at once (status, Content-Type, body; the strings are
  /// copied; an empty content_type sends no Content-Type field). Any thread.
  std::error_code respond(int status, std::string_view content_type, std::string_view body);
  /// True once the response is finished or its connection closed: further respond() calls
  /// fail. Any thread.
  bool done() const noexcept;
  /// False for an empty handle.
  explicit operator bool() const noexcept { return owner_ != nullptr; }

 private:
  friend class response;
  struct owner;  // the last copy's destruction ends an unfinished response
  explicit deferred_response(std::shared_ptr<owner> o) : owner_(std::move(o)) {}
  std::shared_ptr<owner> owner_;
};

/// A route handler. Runs on the connection's loop thread.
using route_handler = std::function<void(const request& req, response& res)>;

namespace detail {
struct body_flow;
}  // namespace detail

/// Continues a streamed request body that its reader paused (body_reader::pause). Copies share
/// one body; every member may be called from any thread.
class body_resumer {
 public:
  body_resumer() = default;
  /// Lets the body go on: on the connection's loop thread, the pieces already read are offered
  /// first, then reading from the socket resumes. A resume counts for a pause made in the
  /// on_data call during or after which it is called — so a worker handed a piece may resume
  /// whether the reader called pause() before or after the hand-off — and does nothing for a
  /// body that is not paused, or is paused by a later on_data call (a resume left over from an
  /// earlier piece, or a second one, never lifts a later pause). Returns errc::closed once the
  /// body is over (the reader got on_end or on_abort, or answered early),
  /// errc::invalid_argument for an empty handle. Any thread.
  std::error_code resume();
  /// False for an empty handle.
  explicit operator bool() const noexcept { return flow_ != nullptr; }

 private:
  friend class body_reader;
  explicit body_resumer(std::shared_ptr<detail::body_flow> f) : flow_(std::move(f)) {}
  std::shared_ptr<detail::body_flow> flow_;
};

/// Takes one request's body as it arrives, for a streaming route (router::stream): the body is
/// never buffered whole, so an upload of any size costs the connection's input buffer and no
/// more. Created by the route's stream_handler when the request's head is complete; every
/// method runs on the connection's loop thread; the server destroys the reader there after its
/// last call (on_end or on_abort).
///
/// Backpressure: a piece is handed over synchronously and the next is read only after on_data
/// returns, so a reader that consumes slowly (a disk write) slows the client through TCP flow
/// control, and none that returns holds more than one piece. A reader that hands pieces to
/// something asynchronous (another connection, a worker thread) calls pause() in on_data and
/// resumer().resume() once it can take more: meanwhile the server reads nothing more from the
/// socket, so the client stalls once the kernel's buffers are full.
class body_reader {
 public:
  virtual ~body_reader() = default;
  /// The next piece of the body, decoded (chunked coding removed); the view is valid during the
  /// call only. To refuse the rest (too large for this reader, a bad checksum so far), answer
  /// `early` here (e.g. 413 or 422): the server then calls neither on_end nor on_abort, sends
  /// the answer with "Connection: close", stops sending, and reads and drops what the client
  /// still sends for server_options::linger before closing. An early answer that is started
  /// but not finished, or an exception, is answered 500 the same way.
  virtual void on_data(std::string_view piece, response& early) = 0;
  /// The whole body arrived (after a chunked body's trailers, which `req.head.trailers` holds):
  /// answer `res` as a route handler does, now or deferred (response::defer). `req.body` is
  /// empty. An exception is answered 500 as a handler's.
  virtual void on_end(const request& req, response& res) = 0;
  /// The body will not complete, and no answer from the reader can be sent: the client closed or
  /// reset (errc::closed, or the connection's own error), the body was malformed
  /// (errc::protocol_error) or over server_options::max_stream_body_bytes
  /// (errc::message_too_big) — both answered 400 / 413 by the server —, it stalled past
  /// server_options::body_timeout (errc::timed_out; answered 408), or the engine stopped
  /// (errc::engine_stopping). Called at most once, instead of on_end; the default does
  /// nothing. Must not throw.
  virtual void on_abort(std::error_code why) noexcept { (void)why; }

 protected:
  /// From on_data: take no further piece (nor on_end) until resume() is called on resumer().
  /// The server stops reading the socket; body_timeout does not run while paused (the wait is
  /// the application's) and restarts on resume; a client that resets or an engine stop still
  /// ends the body with on_abort. Outside on_data (or before the server has installed the
  /// reader, i.e. in the stream_handler) it does nothing. Loop thread.
  void pause() noexcept;
  /// The handle that resumes this body from any thread; it stays valid (and safe to use) after
  /// the reader is destroyed and after the server stops, until the server object is destroyed
  /// (as a conn is safe until its engine is). Empty before the server has installed the reader.
  /// Loop thread.
  body_resumer resumer() const { return body_resumer(flow_); }

 private:
  friend class server;
  std::shared_ptr<detail::body_flow> flow_;  // set by the server when it installs the reader
};

/// The handler of a streaming route, called once the request's head is complete, before any
/// body byte is read. Returns the reader that takes the body (a request without a body gets
/// on_end at once). Or refuses the request: answer `res` (401, 403, 413 from Content-Length,
/// 415...) and return nullptr; a client that sent "Expect: 100-continue" is then never told to
/// continue, and if a body follows, the answer carries "Connection: close" and the body is read
/// and dropped for server_options::linger before the connection closes. When a reader is
/// returned, anything written to `res` is dropped; returning nullptr without a finished answer
/// (or throwing) is answered 500. `res` cannot be deferred (defer() returns an empty handle):
/// defer in on_end. `req.body` is empty. Loop thread of the connection.
using stream_handler =
    std::function<std::unique_ptr<body_reader>(const request& req, response& res)>;

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
  /// The engine is stopping; same contract as evnet::handler::on_stopping. The default lets
  /// the engine close the connection.
  virtual action on_stopping(evnet::conn& c) {
    (void)c;
    return action::close;
  }
};

/// Decides an upgrade request for a path. Runs on the connection's loop thread. Either appends
/// a complete refusal (e.g. 400/426) to `out` and returns nullptr — the connection is then
/// closed after the write — or appends the 101 response and returns the protocol that takes
/// over. An exception is answered 500 (what it appended is dropped) and the connection closed.
using upgrade_handler = std::function<std::unique_ptr<upgraded_protocol>(
    evnet::conn& c, const http::message& req, std::string& out)>;

/// Maps method + path to handlers. A path is either exact or a pattern; a pattern has at least
/// one segment (the text after a '/') that starts with ':' or '*':
///
///  - `/users/:id` — `:name` matches exactly one non-empty segment (no '/'): `/users/42`, not
///    `/users/` nor `/users/42/x`.
///  - `/static/*rest` — `*name` matches the rest of the path after its '/', which may be empty
///    and may contain '/': `/static/`, `/static/css/a.css` (rest = "css/a.css"), but not
///    `/static`. It must be the last segment.
///
/// Names are letters, digits, '_' and '-'; ':' or '*' elsewhere in a segment is literal. Values
/// are read in the handler with request::param. Matching is on message::path, the target up to
/// '?', so the query string never takes part; paths are compared as received (no
/// percent-decoding, no dot-segment removal), and a trailing slash is significant: `/users/:id`
/// does not match `/users/42/`, and there is no redirect between the two forms.
///
/// Precedence, among the routes of the request's method and independent of the order routes
/// were added: an exact route wins over any pattern; between patterns, segments are compared
/// from the left and at the first one where they differ a literal beats `:name`, which beats
/// `*name`. So with `/users/new`, `/users/:id` and `/users/*rest`, `/users/new` gets the first,
/// `/users/42` the second and `/users/42/posts` the third. When no route of the request's
/// method matches but a route of another method does, the answer is 405 with an Allow header
/// listing the methods that are routed for the path (RFC 9110 §15.5.6), for exact routes and
/// patterns alike; when none matches, 404. A method the parser does not recognise
/// (method::other: "FOO", "PROPFIND"...) is answered 501 Not Implemented whatever the path
/// (RFC 9110 §9.1), without Allow. HEAD falls back to GET's route.
///
/// Exact-path lookups cost what they did before patterns existed: exact routes are kept apart
/// and checked first, and the pattern tree is only walked when no exact route of the request's
/// method matched and at least one pattern was added. The tree walk backtracks where a literal
/// branch dead-ends, so its cost grows with the registered patterns that share a prefix, not
/// with the request.
///
/// Build it before run(); read-only afterwards (so any thread may read it concurrently).
class router {
 public:
  /// Adds a route for method `m` and an exact path or a pattern (see the class comment).
  /// Throws std::invalid_argument, with a message naming the route and the reason, when the
  /// route is refused: method::other (it stands for every unrecognised method, so a route for
  /// it could never be matched); the same method and path added twice; a pattern that does not
  /// start with '/'; an empty or malformed parameter name, or one used twice in the pattern; a
  /// catch-all that is not the last segment; more than route_params::kMax parameters; or a
  /// parameter at the same position as an earlier pattern's parameter (or catch-all) of
  /// another name (`/users/:id` then `/users/:name/posts`), because one request could not say
  /// which name applies. A refused route changes nothing. Owner thread, before the server
  /// runs (setup is the only place this layer throws; see try_add for a non-throwing form).
  router& add(http::method m, std::string path, route_handler h);
  /// add() without exceptions: returns errc::invalid_argument, and the reason in `why` if
  /// given, when the route is refused (nothing is changed then); an empty code when added.
  /// Owner thread, before the server runs.
  std::error_code try_add(http::method m, std::string path, route_handler h,
                          std::string* why = nullptr);
  /// Shorthand for add(method::get, ...). Throws like add().
  router& get(std::string path, route_handler h) {
    return add(method::get, std::move(path), std::move(h));
  }
  /// Shorthand for add(method::post, ...). Throws like add().
  router& post(std::string path, route_handler h) {
    return add(method::post, std::move(path), std::move(h));
  }
  /// Adds a streaming route: `h` is called when a request's head is complete and returns the
  /// body_reader that receives its body piece by piece (see stream_handler). Same paths,
  /// precedence and refusals as add(); a method and path can have one route, plain or
  /// streaming. Bodies of streaming routes are limited by server_options::
  /// max_stream_body_bytes instead of parser_limits::max_body_bytes. A streaming route found
  /// through find() and called as a plain route_handler gets the request's buffered body as its
  /// one piece; there (unlike in the server) an answer that `h` writes while also returning a
  /// reader is kept, and the reader is destroyed uncalled, and an early answer left unfinished
  /// by on_data is sent as it stands and the connection closed (as for any plain handler)
  /// rather than replaced by a 500. Throws like add(). Owner thread, before the server runs.
  router& stream(http::method m, std::string path, stream_handler h);
  /// stream() without exceptions, as try_add(). Owner thread, before the server runs.
  std::error_code try_stream(http::method m, std::string path, stream_handler h,
                             std::string* why = nullptr);
  /// Routes upgrade requests (Connection: upgrade) for `path` to `h`. Before run(). Upgrade
  /// paths are exact only: ':' and '*' are literal here, and the first of two handlers added
  /// for one path is the one used.
  router& upgrade(std::string path, upgrade_handler h);

  /// The handler for a request, or nullptr; `status` then says why: 404, 405, or 501 for
  /// method::other (see the class comment). What a pattern route captured is written to
  /// `params` (emptied for an exact route); its views point into `path` and into this router.
  /// Any thread (read-only).
  const route_handler* find(http::method m, std::string_view path, int& status,
                            route_params& params) const noexcept;
  /// find() for a caller that does not need the parameters. Any thread (read-only).
  const route_handler* find(http::method m, std::string_view path, int& status) const noexcept;
  /// The methods routed for `path` (exact or pattern routes; HEAD whenever GET is), as the
  /// value of a 405 answer's Allow header: "GET, HEAD, POST". Empty when none is. Allocates;
  /// meant for the 405 path only. Any thread (read-only).
  std::string allowed(std::string_view path) const;
  /// The upgrade handler for the exact `path`, or nullptr. Any thread (read-only).
  const upgrade_handler* find_upgrade(std::string_view path) const noexcept;

 private:
  // What a route leads to: a plain handler, or for a streaming route the stream handler and,
  // in `plain`, an adapter that runs it over a buffered body (what find() returns).
  struct target {
    route_handler plain;
    stream_handler stream;  // empty for a plain route
  };
  struct route {
    http::method method;
    std::string path;
    target handler;
  };
  // The pattern tree: one node per segment position. Children are indices into nodes_ (so the
  // router stays copyable). A handler is kept at the node where its pattern ends, or in the
  // node's catch-all list when the pattern's last segment is `*name`.
  static constexpr std::uint32_t kNoNode = ~std::uint32_t{0};
  struct pattern_handler {
    http::method method;
    target handler;
  };
  struct node {
    std::vector<std::pair<std::string, std::uint32_t>> literals;  // segment → child
    std::uint32_t param_child = kNoNode;                          // `:name` child
    std::string param_name;                                       // its name
    std::string catch_all_name;                                   // `*name` here, if any
    std::vector<pattern_handler> handlers;                        // patterns ending here
    std::vector<pattern_handler> catch_all_handlers;              // `*name` patterns here
  };
  std::error_code add_target(http::method m, std::string path, target t, std::string* why);
  std::string add_pattern(http::method m, std::string_view path, target& t);
  // The server calls these two itself so that a request for an exact route costs one call, as
  // before patterns existed: the tree is reached only on a miss, and only if a pattern exists.
  friend class server;
  const target* find_exact(http::method m, std::string_view path, int& status) const noexcept;
  bool has_patterns() const noexcept { return !nodes_.empty(); }
  bool has_streams() const noexcept { return has_streams_; }
  const target* find_pattern(http::method m, std::string_view path, int& status,
                             route_params& params) const noexcept;
  const target* find_target(http::method m, std::string_view path, int& status,
                            route_params& params) const noexcept;
  const target* match(std::uint32_t at, std::string_view rest, http::method m, route_params& params,
                      bool& other_method) const noexcept;

  std::vector<route> routes_;
  std::vector<node> nodes_;  // empty until the first pattern; nodes_[0] is the root ('/')
  std::vector<std::pair<std::string, upgrade_handler>> upgrades_;
  bool has_streams_ = false;  // a streaming route was added
};

/// Server settings.
struct server_options {
  /// Parser limits (431/414/413 answers).
  parser_limits limits;
  /// A client that has started a request but not finished its headers within this time gets
  /// 408 and is closed; 0 disables. A new connection's first request runs from the accept (as
  /// nginx's client_header_timeout): its head must be complete within this time of the
  /// connection being opened, and a connection that has sent nothing by then is closed
  /// without an answer (there is no request to answer). When disabled, a new connection that
  /// sends nothing is held to keep_alive_timeout instead.
  std::chrono::milliseconds header_timeout{10000};
  /// A request whose head is complete but whose body (Content-Length or chunked) then receives
  /// no byte for this long gets 408 and is closed; 0 disables. The clock restarts with every
  /// read, so an upload that keeps making progress is never cut off.
  std::chrono::milliseconds body_timeout{30000};
  /// A keep-alive connection with no request in progress (after its first request; before
  /// it, header_timeout applies) is closed after this long; 0 disables.
  std::chrono::milliseconds keep_alive_timeout{60000};
  /// Collect request bodies for handlers (request::body). When false, bodies are read and
  /// discarded as they arrive, so no memory is spent on them. (Streaming routes are not
  /// affected: their readers get every piece.)
  bool buffer_body = true;
  /// Largest body a streaming route (router::stream) accepts: a larger Content-Length is
  /// answered 413 before the reader is created, a chunked body is cut with 413 at the first byte
  /// beyond it (the reader gets on_abort). Streamed bodies are not kept, so the default is no
  /// limit; buffered routes keep limits.max_body_bytes.
  std::uint64_t max_stream_body_bytes = UINT64_MAX;
  /// After an error answer the server stops sending, then keeps reading (and discarding) for at
  /// most this long so the client sees the answer instead of a reset.
  std::chrono::milliseconds linger{2000};
  /// Backpressure for pipelining: once a connection's unsent responses reach this many bytes,
  /// the server answers no further request and stops reading from it until they have all been
  /// sent (requests already read wait in the input buffer). A client that pipelines requests
  /// and never reads the answers so costs at most this plus one response. 0 disables.
  std::size_t max_pending_output = 1u << 20;
  /// Called from the server's on_boot (thread that called run()) with the engine, e.g. to print
  /// the bound port.
  std::function<void(evnet::engine&)> on_boot;
};

/// The HTTP server: an evnet::handler. Construct with a router, then run() (or pass it to an
/// engine you run yourself). A request that sends "Expect: 100-continue" is told to continue
/// when a route takes it (RFC 9110 §10.1.1); one that no route takes is answered 404, 405 or 501
/// at once, without the 100 and before its body, and the connection closes after the answer.
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
  /// evnet::handler: the peer finished sending; closes once output is flushed. Requests it
  /// sent before that and still waiting in the input (reading was paused by
  /// max_pending_output or a body reader) are answered first; a response being deferred is
  /// not waited for (the client is taken for gone). Loop thread.
  action on_read_eof(evnet::conn& c) override;
  /// evnet::handler: tears the session down (and the upgraded protocol's). Loop thread of `c`.
  void on_close(evnet::conn& c, std::error_code reason) override;
  /// evnet::handler: output all sent; resumes a connection paused by max_pending_output.
  /// Loop thread of `c`.
  void on_drain(evnet::conn& c) override;
  /// evnet::handler: the engine is stopping; an upgraded connection's protocol decides (a
  /// WebSocket session says "going away"), any other is closed. Loop thread of `c`.
  action on_stopping(evnet::conn& c) override;

 private:
  friend class deferred_response;
  friend class response;
  friend class body_resumer;
  struct session;
  static session* session_of(evnet::conn& c) noexcept;
  // Runs a deferred response's fill on its loop thread (fill empty: the handle was dropped).
  static void run_deferred(const std::shared_ptr<detail::deferred_state>& st,
                           const std::function<void(response&)>& fill) noexcept;
  action handle_input(evnet::conn& c, session& s);
  void answer_error(evnet::conn& c, session& s, int status, std::string_view reason);
  void dispatch(evnet::conn& c, session& s);
  void answer_unrouted(session& s, response& res, int status, std::string_view path, bool last);
  bool refuse_unrouted_expectation(session& s);
  void conclude(session& s, const response& res, std::size_t mark, bool failed, bool last);
  void end_stream(evnet::conn& c, session& s, std::unique_ptr<body_reader> r,
                  const route_params* params);
  void stream_without_body(evnet::conn& c, session& s, const router::target& t,
                           const route_params* params);
  bool begin_body(evnet::conn& c, session& s);
  static std::unique_ptr<body_reader> take_reader(session& s) noexcept;
  // Runs a body_resumer::resume on its loop thread.
  static void resume_body(const std::shared_ptr<detail::body_flow>& f, std::uint64_t seen) noexcept;
  enum class piece_result : std::uint8_t { taken, answered, paused };
  piece_result take_body_piece(evnet::conn& c, session& s, std::string_view piece);
  void arm_timer(evnet::conn& c, session& s, std::chrono::milliseconds after);
  void on_timer(evnet::conn& c, session& s);
  void answer_timeout(evnet::conn& c, session& s, std::string_view reason);
  std::chrono::milliseconds shortest_timeout() const noexcept;

  router router_;
  server_options opts_;
  parser_limits parser_limits_;  // opts_.limits, with the larger body limit if routes stream
  evnet::engine engine_;
};

}  // namespace evnet::http
