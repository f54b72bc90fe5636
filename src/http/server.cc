#include "evnet/http/server.h"

#include <any>
#include <atomic>
#include <charconv>
#include <cstring>
#include <string>
#include <vector>

#include "evnet/conn.h"
#include "evnet/loop.h"
#include "evnet/ring_buffer.h"
#include "http/bytes.h"
#include "http/date.h"
#include "http/text.h"

namespace evnet::http {
// Short byte strings (header names and values, small bodies) are copied inline with
// overlapping word loads: a call to memcpy costs more than the work for strings of a few bytes.
// Longer ones go to the library.
void detail::copy_bytes(char* d, const char* s, std::size_t n) noexcept {
  if (n > 16) {
    if (n <= 64) {
      detail::copy_blocks16(d, s, n);  // the cached status line and Date are 54 bytes
      return;
    }
    std::memcpy(d, s, n);
  } else if (n >= 8) {
    std::uint64_t x, y;
    std::memcpy(&x, s, 8);
    std::memcpy(&y, s + n - 8, 8);
    std::memcpy(d, &x, 8);
    std::memcpy(d + n - 8, &y, 8);
  } else if (n >= 4) {
    std::uint32_t x, y;
    std::memcpy(&x, s, 4);
    std::memcpy(&y, s + n - 4, 4);
    std::memcpy(d, &x, 4);
    std::memcpy(d + n - 4, &y, 4);
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      d[i] = s[i];
    }
  }
}

// ---- response ----

void detail::out_buffer::grow(std::size_t n) {
  std::size_t cap = capacity_ ? capacity_ * 2 : 4096;
  while (cap - size_ < n) {
    cap *= 2;
  }
  auto bigger = std::make_unique<char[]>(cap);
  if (size_ != 0) {
    std::memcpy(bigger.get(), data_.get(), size_);
  }
  data_ = std::move(bigger);
  capacity_ = cap;
}

void detail::out_buffer::replace(std::size_t at, std::size_t n, std::string_view bytes) {
  const std::size_t tail = size_ - at - n;
  if (bytes.size() > n) {
    (void)extend(bytes.size() - n);
  } else {
    size_ -= n - bytes.size();
  }
  char* d = data_.get();
  std::memmove(d + at + bytes.size(), d + at + n, tail);
  if (!bytes.empty()) {
    std::memcpy(d + at, bytes.data(), bytes.size());
  }
}

inline void response::put(std::string_view bytes) {
  detail::copy_bytes(out_.extend(bytes.size()), bytes.data(), bytes.size());
}

// A handler's own "Connection" header: with the "close" option the peer is told this is the
// last response, so the server must close after it (RFC 9112 §9.6) rather than keep reading
// requests the client will not wait for. Returns true when the field is not to be sent as
// written: its options go into the response's one Connection field (merge_connection), beside
// what the server says itself ("close" on the last response, an HTTP/1.0 keep-alive's answer).
bool response::note_connection(std::string_view name, std::string_view value) noexcept {
  if (!iequals(name, "Connection")) {
    return false;
  }
  for (std::string_view rest = value; !rest.empty();) {
    const std::size_t comma = rest.find(',');
    if (iequals(detail::trim_ows(rest.substr(0, comma)), "close")) {
      close_requested_ = true;
      break;
    }
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
  }
  try {
    merge_connection(value);
  } catch (...) {
    // Out of memory composing the field: the handler's other options are not sent; its
    // "close" is still honoured (the server's close or the connection's end says it).
  }
  return true;
}

// Adds the comma-separated `options` to the head's one Connection field (RFC 9110 §7.6.1; a
// second field would be the same list split, and a "keep-alive" in one beside a "close" in the
// other contradicts it): the field already written is rewritten in place with them, or a new
// one is written. Each option is kept once, in order, and "keep-alive" is dropped from a list
// that says "close". A CR, LF or NUL in an option is sent as a space (see header()).
void response::merge_connection(std::string_view options) {
  std::string_view old;
  std::size_t old_len = 0;
  if (connection_line_ != std::string_view::npos) {
    const std::string_view line = out_.view().substr(connection_line_);
    old_len = line.find("\r\n") + 2;      // written by this function or start(): it ends
    old = line.substr(12, old_len - 14);  // after "Connection: ", before the CRLF
  }
  std::vector<std::string_view> list;
  bool close = false;
  for (std::string_view in : {old, options}) {
    while (!in.empty()) {
      const std::size_t comma = in.find(',');
      const std::string_view t = detail::trim_ows(in.substr(0, comma));
      in = comma == std::string_view::npos ? std::string_view{} : in.substr(comma + 1);
      if (t.empty()) {
        continue;
      }
      close = close || iequals(t, "close");
      bool seen = false;
      for (std::string_view u : list) {
        seen = seen || iequals(u, t);
      }
      if (!seen) {
        list.push_back(t);
      }
    }
  }
  std::string field = "Connection: ";
  bool first = true;
  for (std::string_view t : list) {
    if (close && iequals(t, "keep-alive")) {
      continue;
    }
    if (!first) {
      field += ", ";
    }
    field += t;
    first = false;
  }
  if (first) {
    return;  // nothing to say (an empty value)
  }
  detail::blank_line_breaks(field.data(), field.size());
  field += "\r\n";
  if (connection_line_ == std::string_view::npos) {
    connection_line_ = out_.size();
  }
  out_.replace(connection_line_, old_len, field);
}

// Content-Length and Transfer-Encoding are written by body() and begin_chunked() only.
bool response::is_framing_field(std::string_view name) noexcept {
  return iequals(name, "Content-Length") || iequals(name, "Transfer-Encoding");
}

// Caller's text inside a line of the head: each CR, LF and NUL is sent as a space, so that it
// cannot end the line and write lines of its own (response splitting).
void response::put_in_line(std::string_view bytes) {
  char* at = out_.extend(bytes.size());
  detail::copy_bytes(at, bytes.data(), bytes.size());
  detail::blank_line_breaks(at, bytes.size());
}

// header() for a value that may hold a CR, LF or NUL (or only a tab, or another control byte:
// the quick test cannot tell); the name is a token.
response& response::header_with_breaks(std::string_view name, std::string_view value) {
  put(name);
  put(": ");
  put_in_line(value);
  put("\r\n");
  return *this;
}

response& response::start_general(int status, std::string_view reason) {
  if (started_) [[unlikely]] {
    return *this;  // once only (see the class comment)
  }
  started_ = head_open_ = true;
  if (status < 200 || status > 599) [[unlikely]] {
    // RFC 9110 §15: a status is three digits, and this is the request's one, final, response:
    // an interim 1xx would leave the client waiting for the final one (and taking the next
    // response for it). Any other int is no status. Either is the handler's bug: the status
    // line says 500; what the handler writes after it is sent as written.
    status = 500;
    reason = {};
  }
  bodiless_status_ = status == 204 || status == 304;
  // "HTTP/1.1 200 OK\r\nDate: ...\r\n": the server passes the batch's copy of the cached view;
  // a response made without one (or before the first refresh) asks the cache itself.
  std::string_view ok_head = ok_head_;
  if (ok_head.empty()) {
    detail::refresh_date();
    ok_head = detail::cached_ok_and_date();
  }
  if (status == 200 && reason.empty()) {
    put(ok_head);  // status line and Date with one copy
  } else {
    if (reason.empty()) {
      reason = reason_phrase(status);
    }
    char line[13];
    detail::status_line_prefix(line, status);
    put(std::string_view(line, sizeof line));
    put_in_line(reason);
    put("\r\n");
    put(ok_head.substr(detail::kOkStatusLine.size()));  // the Date line
  }
  if (last_) {
    connection_line_ = out_.size();  // the handler's Connection options join this field
    put("Connection: close\r\n");
  }
  // An HTTP/1.0 client's keep-alive is confirmed where the head ends (confirm_keep_alive):
  // the handler may still end the connection, and one Connection field must say so.
  return *this;
}

// The "keep-alive" an HTTP/1.0 client asked for, confirmed as the head ends: only then is it
// known that the handler did not end the connection with a "Connection: close" of its own
// (not sent: note_connection) or a body streamed to the close (begin_chunked says "close").
void response::confirm_keep_alive() {
  if (keep_alive_10_) {
    merge_connection(close_requested_ ? std::string_view("close") : std::string_view("keep-alive"));
  }
}

void response::body_general(std::string_view body) {
  if (!head_open_) [[unlikely]] {
    return;  // before start(), or the head already ended
  }
  head_open_ = false;
  confirm_keep_alive();
  if (bodiless_status_) {
    put("\r\n");  // no content, so no Content-Length either (RFC 9110 §8.6)
    finished_ = true;
    return;
  }
  // "Content-Length: <n>\r\n\r\n" composed in place (room for the longest number, the rest
  // given back), then the body.
  constexpr std::string_view kName = "Content-Length: ";
  constexpr std::size_t kMax = kName.size() + 20 + 4;
  char* at = out_.extend(kMax);
  std::memcpy(at, kName.data(), kName.size());
  char* end = std::to_chars(at + kName.size(), at + kName.size() + 20, body.size()).ptr;
  constexpr std::string_view kEnd = "\r\n\r\n";  // copied without a terminating NUL
  std::memcpy(end, kEnd.data(), kEnd.size());
  out_.truncate(out_.size() - static_cast<std::size_t>(at + kMax - (end + kEnd.size())));
  if (!head_request_) {
    put(body);
  }
  finished_ = true;
}

void response::begin_chunked() {
  if (!head_open_) [[unlikely]] {
    return;  // before start(), or the head already ended
  }
  head_open_ = false;
  chunked_ = true;
  if (bodiless_status_) {
    confirm_keep_alive();
    put("\r\n");
    return;
  }
  if (http10_) {
    // RFC 9112 §6.1: no Transfer-Encoding to a 1.0 client; the close ends the body, and the
    // head's one Connection field says so (a keep-alive asked for is not confirmed).
    if (!last_) {
      merge_connection("close");
    }
    put("\r\n");
    raw_body_ = true;
    return;
  }
  put("Transfer-Encoding: chunked\r\n\r\n");
}

void response::chunk(std::string_view data) {
  if (!chunked_ || finished_ || head_request_ || bodiless_status_ || data.empty()) {
    return;  // an empty chunk would end the stream
  }
  if (raw_body_) {
    put(data);
    return;
  }
  char size[24];
  char* end = std::to_chars(size, size + 20, data.size(), 16).ptr;
  end[0] = '\r';
  end[1] = '\n';
  put(std::string_view(size, static_cast<std::size_t>(end + 2 - size)));
  put(data);
  put("\r\n");
}

void response::end_chunked() {
  if (!chunked_ || finished_) [[unlikely]] {
    return;  // no chunked body to end
  }
  if (!head_request_ && !bodiless_status_ && !raw_body_) {
    put("0\r\n\r\n");
  }
  finished_ = true;
}

// ---- deferred responses ----

// What a deferred response needs after its handler returned. The flags and `loop` are set
// once, on the loop thread, before any other thread sees the state; `out` and `res` are used
// on the loop thread only; `done` is read anywhere.
struct detail::deferred_state {
  std::weak_ptr<evnet::conn> conn;
  evnet::loop* loop = nullptr;
  bool head_request = false;
  bool last = false;
  bool keep_alive_10 = false;
  bool http10 = false;
  std::atomic<bool> done{false};  // finished, or the connection closed
  detail::out_buffer out;
  std::unique_ptr<response> res;  // made by the first fill
};

struct deferred_response::owner {
  std::shared_ptr<detail::deferred_state> st;
  owner() = default;
  owner(const owner&) = delete;
  owner& operator=(const owner&) = delete;
  // The last handle is gone: an unfinished response is ended as an abandoned handler's is.
  ~owner() {
    if (st && !st->done.load(std::memory_order_acquire)) {
      (void)st->loop->post([s = std::move(st)] { server::run_deferred(s, {}); });
    }
  }
};

deferred_response response::defer() {
  if (conn_ == nullptr || defer_slot_ == nullptr || started_ || *defer_slot_) {
    return {};
  }
  auto st = std::make_shared<detail::deferred_state>();
  st->conn = conn_->shared_from_this();
  st->loop = &conn_->owner();
  st->head_request = head_request_;
  st->last = last_;
  st->keep_alive_10 = keep_alive_10_;
  st->http10 = http10_;
  *defer_slot_ = st;
  auto o = std::make_shared<deferred_response::owner>();
  o->st = std::move(st);
  return deferred_response(std::move(o));
}

std::error_code deferred_response::respond(std::function<void(response&)> fill) {
  if (!owner_) {
    return errc::invalid_argument;
  }
  const std::shared_ptr<detail::deferred_state>& st = owner_->st;
  if (!fill) {
    return errc::invalid_argument;
  }
  if (st->done.load(std::memory_order_acquire)) {
    return errc::closed;
  }
  if (st->loop->post([st, f = std::move(fill)] { server::run_deferred(st, f); })) {
    return errc::closed;  // the loop has stopped
  }
  return {};
}

std::error_code deferred_response::respond(int status, std::string_view content_type,
                                           std::string_view body) {
  return respond([status, type = std::string(content_type), b = std::string(body)](response& r) {
    r.start(status);
    if (!type.empty()) {
      r.header("Content-Type", type);  // none rather than an empty field (RFC 9110 §8.3)
    }
    r.body(b);
  });
}

bool deferred_response::done() const noexcept {
  return !owner_ || owner_->st->done.load(std::memory_order_acquire);
}

// A streamed body's flow control, shared by its reader and the reader's resumers. `loop` and
// `conn` are set before any other thread sees it; `in_data`, `paused` and `pause_piece` are
// used on the loop thread only; `piece` and `over` are read anywhere.
//
// A resume counts for the pause made in the on_data call during or after which it was called:
// resume() reads `piece` (the number of the latest on_data call) and the loop lifts a pause only
// for a resume that saw that pause's piece or a later one. So a resume that a worker calls for
// a piece it was handed lifts the pause of that piece's call (whether pause() came before or
// after the hand-off), and a resume left over from an earlier piece (or called twice) cannot
// lift a later pause.
struct detail::body_flow {
  std::weak_ptr<evnet::conn> conn;
  evnet::loop* loop = nullptr;
  server* srv = nullptr;
  bool in_data = false;  // on_data is running: pause() applies
  bool paused = false;
  std::uint64_t pause_piece = 0;        // the on_data call that paused
  std::atomic<std::uint64_t> piece{0};  // on_data calls so far, counting the one running
  std::atomic<bool> over{false};        // the reader got its last call, or the connection closed
};

void body_reader::pause() noexcept {
  if (flow_ && flow_->in_data) {
    flow_->paused = true;
    flow_->pause_piece = flow_->piece.load(std::memory_order_relaxed);
  }
}

std::error_code body_resumer::resume() {
  if (!flow_) {
    return errc::invalid_argument;
  }
  if (flow_->over.load(std::memory_order_acquire)) {
    return errc::closed;
  }
  const std::uint64_t seen = flow_->piece.load(std::memory_order_acquire);
  if (flow_->loop->post([f = flow_, seen] { server::resume_body(f, seen); })) {
    return errc::closed;  // the loop has stopped
  }
  return {};
}

// While a response is deferred the connection keeps reading, so that a client that leaves is
// seen (its EOF closes the connection and the application's handle reports done()); requests
// it pipelines meanwhile stay in the input buffer, unparsed, and reading pauses once they are
// more than one request head's worth, so they cannot grow it without bound.
namespace {
// The answer to a handler (or deferred fill) that failed before starting a response; the
// connection closes after it.
void write_internal_error(detail::out_buffer& out, bool head_request) {
  response r500(out, head_request, true, false);
  r500.start(500).header("Content-Type", "text/plain").body("Internal Server Error\n");
}

// After a handler (or a reader's on_end) answered into `res`, staged in `out` from `mark`: one
// that failed or started nothing gets a 500 instead. Returns true when the connection must end
// after this response: then, and also when a started response was left unfinished (the stream
// is unframed; ending the connection is the only honest repair) or is a body streamed to an
// HTTP/1.0 client (ended by the close).
bool settle_response(detail::out_buffer& out, std::size_t mark, const response& res, bool failed,
                     bool head_request) {
  if (failed || !res.started()) {
    out.truncate(mark);
    write_internal_error(out, head_request);
    return true;
  }
  return !res.finished() || res.must_close();
}

// What a connection keeps between requests of its composed responses and buffered request
// body: more (one large upload or answer) is given back once it has been used, as the net
// layer gives back its ring buffers and the WebSocket layer its message buffers.
constexpr std::size_t kKeepBuffer = std::size_t{64} * 1024;

void hold_input_while_deferred(evnet::conn& c, std::size_t max_head) noexcept {
  if (c.inbound_size() > max_head) {
    c.pause_read();
  }
}
}  // namespace

// ---- server ----

struct server::session {
  explicit session(const parser_limits& l) : parser(l) {}
  request_parser parser;
  detail::out_buffer out;   // responses composed during one batch, written with one call
  std::string upgrade_out;  // what an upgrade handler and its protocol write (std::string API)
  std::string body;         // request body when buffer_body
  // The streaming route's reader of the body being received (router::stream).
  std::unique_ptr<body_reader> reader;
  // Bytes of the current body, counted when routes stream (begin_body resets it): the server
  // then checks each body against its route's limit itself.
  std::uint64_t body_bytes = 0;
  std::unique_ptr<upgraded_protocol> upgraded;
  // A response deferred by its handler and not yet finished: nothing else is parsed or
  // answered meanwhile (response::defer()).
  std::shared_ptr<detail::deferred_state> deferred;
  bool stopping = false;       // the engine stops: close once the deferred response is sent
  bool closing = false;        // the last response is staged; further input is ignored
  bool lingering = false;      // an error was answered; input is drained until EOF or linger ends
  bool output_paused = false;  // max_pending_output reached: reading paused until on_drain
  // No request head has been received yet: the header timeout runs from the accept (head_start)
  // until the first one is, whether or not bytes of it came (server_options::header_timeout).
  bool fresh = true;
  std::chrono::steady_clock::time_point last_activity;
  std::chrono::steady_clock::time_point head_start;
  timer_id timer = 0;
  std::string_view ok_head;  // the Date cache's "200 OK + Date" head, as of this batch
  route_params params;       // what the current request's pattern route captured
};

server::session* server::session_of(evnet::conn& c) noexcept {
  auto* p = std::any_cast<session*>(&c.context());
  return p ? *p : nullptr;
}

server::server(router r, server_options opts)
    : router_(std::move(r)), opts_(std::move(opts)), parser_limits_(opts_.limits) {
  if (router_.has_streams() && opts_.max_stream_body_bytes > parser_limits_.max_body_bytes) {
    // The parser enforces the larger limit; the server checks each body against its route's.
    parser_limits_.max_body_bytes = opts_.max_stream_body_bytes;
  }
}
server::~server() = default;

std::error_code server::run(const std::vector<std::string>& addresses, const engine_options& eo) {
  return engine_.run(*this, addresses, eo);
}

void server::on_boot(evnet::engine& e) {
  if (opts_.on_boot) {
    opts_.on_boot(e);
  }
}

action server::on_open(evnet::conn& c) {
  auto* s = new session(parser_limits_);
  c.context() = s;
  s->last_activity = s->head_start = c.owner().now();
  if (auto first = shortest_timeout(); first.count() > 0) {
    arm_timer(c, *s, first);
  }
  return action::none;
}

// The shortest enabled timeout, or 0 when none is: how long the connection timer sleeps when no
// deadline is pending.
std::chrono::milliseconds server::shortest_timeout() const noexcept {
  std::chrono::milliseconds shortest{0};
  for (auto t : {opts_.header_timeout, opts_.body_timeout, opts_.keep_alive_timeout}) {
    if (t.count() > 0 && (shortest.count() == 0 || t < shortest)) {
      shortest = t;
    }
  }
  return shortest;
}

// Answers 408 from the timer: the answer is written now (no batch is in progress), the write
// side is shut, and the connection lingers as after any error answer.
void server::answer_timeout(evnet::conn& c, session& s, std::string_view reason) {
  // A request line that never ended holds no parsed method: read it from the line's first
  // bytes, so that the 408 to "HEAD /x" has no body either.
  s.parser.note_unfinished_method();
  answer_error(c, s, 408, reason);
  (void)c.write(s.out.view());
  s.out.clear_and_trim(kKeepBuffer);
  (void)c.shutdown_write();
  arm_timer(c, s, opts_.linger);
}

void server::arm_timer(evnet::conn& c, session& s, std::chrono::milliseconds after) {
  std::weak_ptr<evnet::conn> weak = c.shared_from_this();
  s.timer = c.owner().run_after(after, [this, weak] {
    auto sp = weak.lock();
    if (!sp) {
      return;
    }
    session* s2 = session_of(*sp);
    if (!s2) {
      return;
    }
    s2->timer = 0;
    on_timer(*sp, *s2);
  });
}

void server::on_timer(evnet::conn& c, session& s) {
  using namespace std::chrono;
  if (s.upgraded || c.state() != conn_state::open) {
    return;
  }
  if (s.deferred || (s.reader && s.reader->flow_->paused)) {
    // Waiting for the application, not for the client: no timeout applies. Look again later.
    if (auto wait = shortest_timeout(); wait.count() > 0) {
      arm_timer(c, s, wait);
    }
    return;
  }
  if (s.lingering || s.closing) {
    c.close();
    return;
  }
  auto now = c.owner().now();
  steady_clock::time_point deadline = steady_clock::time_point::max();
  if (s.parser.in_body()) {
    // last_activity moves with every read, so this measures the stall, not the upload.
    if (opts_.body_timeout.count() > 0) {
      deadline = s.last_activity + opts_.body_timeout;
      if (now >= deadline) {
        answer_timeout(c, s, "body timeout");
        return;
      }
    }
  } else if (!s.parser.idle()) {
    if (opts_.header_timeout.count() > 0) {
      deadline = s.head_start + opts_.header_timeout;
      if (now >= deadline) {
        answer_timeout(c, s, "header timeout");
        return;
      }
    }
  } else if (s.fresh && opts_.header_timeout.count() > 0) {
    // A new connection that has sent nothing (or only empty lines): its first request is due
    // within the header timeout of the accept, as with nginx's client_header_timeout, not the
    // keep-alive timeout of a connection that was served. There is no request to answer.
    deadline = s.head_start + opts_.header_timeout;
    if (now >= deadline) {
      c.close();
      return;
    }
  } else if (opts_.keep_alive_timeout.count() > 0) {
    // Idle means no request in progress and nothing left to deliver: a client still
    // downloading a response is not idle (a stalled one is engine_options::write_timeout's).
    if (c.outbound_size() > 0) {
      s.last_activity = now;
    }
    deadline = s.last_activity + opts_.keep_alive_timeout;
    if (now >= deadline) {
      c.close();
      return;
    }
  }
  if (deadline == steady_clock::time_point::max()) {
    // Nothing is due: look again after the shortest timeout (never, if all are disabled).
    if (auto wait = shortest_timeout(); wait.count() > 0) {
      arm_timer(c, s, wait);
    }
    return;
  }
  auto wait = duration_cast<milliseconds>(deadline - now) + milliseconds(1);
  if (wait.count() <= 0) {
    wait = milliseconds(1);
  }
  // Look again within the shortest timeout, whatever this deadline: a request that starts
  // meanwhile (a head after a keep-alive pause, a body after its head) is then held to its own
  // timeout, to the millisecond, instead of waiting for this deadline. The handler path never
  // touches the timer, so a request costs nothing here; an idle connection wakes once per
  // shortest timeout.
  if (const auto period = shortest_timeout(); period.count() > 0 && wait > period) {
    wait = period;
  }
  arm_timer(c, s, wait);
}

void server::answer_error(evnet::conn&, session& s, int status, std::string_view reason) {
  if (s.reader) {
    // A streamed body ends here; its reader hears why (and answers nothing: this answer goes).
    std::unique_ptr<body_reader> r = take_reader(s);
    r->on_abort(make_error_code(status == 413   ? errc::message_too_big
                                : status == 408 ? errc::timed_out
                                                : errc::protocol_error));
  }
  detail::refresh_date();  // may run from a timer, outside any batch
  // A response to HEAD has no content (RFC 9110 §9.3.2), an error answer included: the parser
  // knows the method once the request line (or, for one too long, its first bytes) was read.
  response res(s.out, s.parser.message().method == method::head, true, false);
  res.start(status).header("Content-Type", "text/plain");
  std::string body(reason);
  body.push_back('\n');
  res.body(body);
  s.lingering = true;
}

void server::dispatch(evnet::conn& c, session& s) {
  const http::message& m = s.parser.message();
  const bool last = !m.keep_alive;
  const bool head = m.method == method::head;
  int status = 404;
  const route_params* params = nullptr;
  const router::target* t = router_.find_exact(m.method, m.path, status);
  if (!t) {
    // Not an exact route of this method: the patterns, then HEAD served as GET. Kept off the
    // exact-route path, which costs what it did before patterns existed.
    if (router_.has_patterns()) {
      t = router_.find_pattern(m.method, m.path, status, s.params);
    }
    if (!t && head) {
      t = router_.find_target(method::get, m.path, status, s.params);
    }
    params = &s.params;
  }
  response res(s.out, head, last, !last && m.version_minor == 0, s.ok_head, m.version_minor == 0);
  if (!t) {
    answer_unrouted(s, res, status, m.path, last);
    return;
  }
  if (t->stream) [[unlikely]] {
    stream_without_body(c, s, *t, params);  // `res` stays unused
    return;
  }
  const std::size_t mark = s.out.size();
  bool failed = false;
  res.conn_ = &c;
  res.defer_slot_ = &s.deferred;
  try {
    t->plain(request{m, s.body, c, params}, res);
  } catch (...) {
    // No exception may cross the loop: answer 500 instead of what the handler left.
    failed = true;
  }
  conclude(s, res, mark, failed, last);
}

// The answer to a request no route takes: 404, 405 (with Allow) or 501.
void server::answer_unrouted(session& s, response& res, int status, std::string_view path,
                             bool last) {
  res.start(status).header("Content-Type", "text/plain");
  if (status == 405) {
    res.header("Allow", router_.allowed(path));  // RFC 9110: a 405 lists what is allowed
  }
  res.body(status == 405   ? "Method Not Allowed\n"
           : status == 501 ? "Not Implemented\n"
                           : "Not Found\n");
  if (last) {
    s.closing = true;
  }
}

// A request that expects 100-continue, at its head: when no route takes it (404, 405, 501) it is
// answered now, without the 100 and before its body, and the connection closes after the answer
// (the body, if the client sends it anyway, is read away while it lingers). RFC 9110 §10.1.1:
// the point of the expectation is that a request refused on its head need not send its body;
// Go's net/http sends the 100 only once a handler reads the body. Returns true when answered.
bool server::refuse_unrouted_expectation(session& s) {
  const http::message& m = s.parser.message();
  int status = 404;
  const router::target* t = router_.find_target(m.method, m.path, status, s.params);
  if (t == nullptr && m.method == method::head) {
    t = router_.find_target(method::get, m.path, status, s.params);  // as dispatch() does
  }
  if (t != nullptr) {
    return false;
  }
  response res(s.out, m.method == method::head, true, false, s.ok_head, m.version_minor == 0);
  answer_unrouted(s, res, status, m.path, true);
  s.closing = false;
  s.lingering = true;
  return true;
}

// What follows a handler's (or a reader's on_end) call on `res`, staged in s.out from `mark`.
// Inline: it is the end of every plain request's dispatch.
#if defined(__GNUC__)
[[gnu::always_inline]]
#endif
inline void
server::conclude(session& s, const response& res, std::size_t mark, bool failed, bool last) {
  if (s.deferred) [[unlikely]] {
    // Answered later (run_deferred); whatever went into `res` after defer() is dropped. A
    // handler that threw after deferring dropped its handle too: the abandoned response
    // becomes a 500 there.
    s.out.truncate(mark);
    return;
  }
  if (settle_response(s.out, mark, res, failed, res.head_request_) || last) {
    s.closing = true;
  }
}

// The body of a streaming route's request is complete (or there was none): the reader answers,
// now or deferred, as a route handler does.
void server::end_stream(evnet::conn& c, session& s, std::unique_ptr<body_reader> r,
                        const route_params* params) {
  const http::message& m = s.parser.message();
  const bool last = !m.keep_alive;
  response res(s.out, m.method == method::head, last, !last && m.version_minor == 0, s.ok_head,
               m.version_minor == 0);
  res.conn_ = &c;
  res.defer_slot_ = &s.deferred;
  const std::size_t mark = s.out.size();
  bool failed = false;
  try {
    r->on_end(request{m, {}, c, params}, res);
  } catch (...) {
    failed = true;
  }
  conclude(s, res, mark, failed, last);
}

// A streaming route for a request without a body: the reader, if the handler makes one, ends at
// once. What the handler writes is the answer only when it refuses; it cannot be deferred.
void server::stream_without_body(evnet::conn& c, session& s, const router::target& t,
                                 const route_params* params) {
  const http::message& m = s.parser.message();
  const bool last = !m.keep_alive;
  const std::size_t mark = s.out.size();
  std::unique_ptr<body_reader> r;
  {
    response refusal(s.out, m.method == method::head, last, !last && m.version_minor == 0,
                     s.ok_head, m.version_minor == 0);
    bool failed = false;
    try {
      r = t.stream(request{m, {}, c, params}, refusal);
    } catch (...) {
      failed = true;
    }
    if (failed || !r) {
      conclude(s, refusal, mark, failed || !refusal.finished(), last);
      return;
    }
  }
  s.out.truncate(mark);
  end_stream(c, s, std::move(r), params);
}

// The head of a request with a body is complete and routes stream (router::stream): decides
// who takes the body and under which limit. Returns false when the request was answered now
// (a refusal); the connection then lingers.
bool server::begin_body(evnet::conn& c, session& s) {
  const http::message& m = s.parser.message();
  s.body_bytes = 0;
  int status = 404;
  const router::target* t = router_.find_target(m.method, m.path, status, s.params);
  if (t == nullptr && m.method == method::head) {
    t = router_.find_target(method::get, m.path, status, s.params);  // as dispatch() does
  }
  if (t == nullptr || !t->stream) {
    // A buffered route, or none (its 404 or 405 comes once the body is read, or at once to a
    // client that waits for a 100 Continue): the buffered limit, which the parser no longer
    // applies.
    if (t == nullptr && m.expect_continue && refuse_unrouted_expectation(s)) {
      return false;
    }
    if (m.has_content_length && m.content_length > opts_.limits.max_body_bytes) {
      answer_error(c, s, 413, "body too large");
      return false;
    }
    if (m.expect_continue) {
      s.out.append("HTTP/1.1 100 Continue\r\n\r\n");
    }
    return true;
  }
  if (m.has_content_length && m.content_length > opts_.max_stream_body_bytes) {
    answer_error(c, s, 413, "body too large");
    return false;
  }
  // A refusal is the last response: the body that follows is not read as a request.
  response res(s.out, m.method == method::head, true, false, s.ok_head, m.version_minor == 0);
  const std::size_t mark = s.out.size();
  std::unique_ptr<body_reader> reader;
  bool failed = false;
  try {
    reader = t->stream(request{m, {}, c, &s.params}, res);
  } catch (...) {
    failed = true;
  }
  if (!failed && reader) {
    s.out.truncate(mark);
    auto flow = std::make_shared<detail::body_flow>();
    flow->conn = c.shared_from_this();
    flow->loop = &c.owner();
    flow->srv = this;
    reader->flow_ = std::move(flow);
    s.reader = std::move(reader);
    if (m.expect_continue) {
      s.out.append("HTTP/1.1 100 Continue\r\n\r\n");
    }
    return true;
  }
  (void)settle_response(s.out, mark, res, failed || !res.finished(), m.method == method::head);
  s.lingering = true;
  return false;
}

// A piece of a body whose limit the server checks (routes stream): handed to the streaming
// route's reader, or kept for a buffered route. `answered` when the request was answered now
// (over its limit, or the reader answered early; the connection then lingers), `paused` when the
// reader paused the body.
server::piece_result server::take_body_piece(evnet::conn& c, session& s, std::string_view piece) {
  s.body_bytes += piece.size();
  if (!s.reader) {
    if (s.body_bytes > opts_.limits.max_body_bytes) {
      answer_error(c, s, 413, "body too large");
      return piece_result::answered;
    }
    if (opts_.buffer_body) {
      s.body.append(piece);
    }
    return piece_result::taken;
  }
  if (s.body_bytes > opts_.max_stream_body_bytes) {
    answer_error(c, s, 413, "body too large");  // tells the reader
    return piece_result::answered;
  }
  const http::message& m = s.parser.message();
  response early(s.out, m.method == method::head, true, false, s.ok_head, m.version_minor == 0);
  const std::size_t mark = s.out.size();
  bool failed = false;
  detail::body_flow& flow = *s.reader->flow_;
  flow.piece.store(flow.piece.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  flow.in_data = true;
  try {
    s.reader->on_data(piece, early);
  } catch (...) {
    failed = true;
  }
  flow.in_data = false;
  if (!failed && !early.started()) {
    return flow.paused ? piece_result::paused : piece_result::taken;
  }
  // The reader ended the request itself: no on_abort.
  (void)take_reader(s);
  (void)settle_response(s.out, mark, early, failed || !early.finished(), m.method == method::head);
  s.lingering = true;
  return piece_result::answered;
}

// Takes the reader out of the session for its last call (or none): its resumers see the body
// over from now on.
std::unique_ptr<body_reader> server::take_reader(session& s) noexcept {
  std::unique_ptr<body_reader> r = std::move(s.reader);
  if (r && r->flow_) {
    r->flow_->over.store(true, std::memory_order_release);
  }
  return r;
}

// On the loop thread, for body_resumer::resume: a body still paused by the session's current
// reader goes on, the pieces already read first (resume_read offers them from a fresh stack).
// `seen`: the on_data call the resume saw (detail::body_flow); an earlier pause's resume does
// nothing.
void server::resume_body(const std::shared_ptr<detail::body_flow>& f, std::uint64_t seen) noexcept {
  if (f->over.load(std::memory_order_relaxed) || !f->paused || seen < f->pause_piece) {
    return;
  }
  std::shared_ptr<evnet::conn> c = f->conn.lock();
  session* s = c ? session_of(*c) : nullptr;
  if (s == nullptr || !s->reader || s->reader->flow_ != f || c->state() != conn_state::open) {
    return;
  }
  f->paused = false;
  s->last_activity = c->owner().now();  // the body timeout counts from here
  if (c->inbound_size() == 0) {
    // Nothing buffered for resume_read to offer, but the parser may owe the body's end without
    // another byte (a Content-Length body whose last piece was paused, its client now waiting
    // for the answer): let it run now, from this task.
    if (f->srv->handle_input(*c, *s) == action::close) {
      c->close();
      return;
    }
    if (s->output_paused || (s->reader && s->reader->flow_->paused)) {
      return;  // held again: on_drain or the next resume lets it go on
    }
    // Reading resumes below, also when on_end deferred its answer: a deferred response keeps
    // reading (see hold_input_while_deferred), so that a client that leaves is seen.
  }
  c->pause_read();
  c->resume_read();
}

action server::handle_input(evnet::conn& c, session& s) {
  if (s.deferred) [[unlikely]] {
    // A response is awaited: the input waits until run_deferred resumes (see there).
    hold_input_while_deferred(c, opts_.limits.max_head_bytes);
    return action::none;
  }
  if (s.reader && s.reader->flow_->paused) [[unlikely]] {
    c.pause_read();  // a streamed body waits for its reader (resume_body)
    return action::none;
  }
  input_view v = c.peek();
  std::size_t total = 0;
  // One clock read per batch: every response of the batch takes its Date from this.
  detail::refresh_date();
  s.ok_head = detail::cached_ok_and_date();
  bool stop = false;
  // Bytes of responses this batch may stage before max_pending_output is reached: checked
  // with one compare per request.
  const std::size_t max_out = opts_.max_pending_output == 0 ? SIZE_MAX : opts_.max_pending_output;
  const std::size_t pending = c.outbound_size();
  const std::size_t out_room = pending >= max_out ? 0 : max_out - pending;
  auto over_output_limit = [&s, out_room] {
    if (s.out.size() < out_room) [[likely]] {
      return false;
    }
    s.output_paused = true;
    return true;
  };
  auto now = c.owner().now();
  s.last_activity = now;
  if (s.parser.idle() && !s.fresh) {
    s.head_start = now;
  }
  for (std::string_view piece : {as_chars(v.first), as_chars(v.second)}) {
    while (!stop) {
      // An idle parser has nothing to report without input (other states may: a finished
      // message's `done`), so an exhausted or empty piece ends here without a call.
      if (piece.empty() && s.parser.idle()) {
        break;
      }
      parse_step st = s.parser.parse(piece);
      piece.remove_prefix(st.consumed);
      total += st.consumed;
      switch (st.event) {
        case parse_event::need_more:
          break;
        case parse_event::head: {
          const http::message& m = s.parser.message();
          s.fresh = false;
          if (m.upgrade) {
            if (const upgrade_handler* up = router_.find_upgrade(m.path)) {
              if (m.chunked || (m.has_content_length && m.content_length > 0)) {
                // The body would have to be read as HTTP before the switch; an upgrade with
                // one is refused rather than its bytes taken for the new protocol's.
                answer_error(c, s, 400, "upgrade request with a body");
                stop = true;
                break;
              }
              try {
                s.upgraded = (*up)(c, m, s.upgrade_out);
              } catch (...) {
                // No exception may cross the loop (it would end the process): what the handler
                // wrote is dropped and the request answered 500, as a route handler's failure.
                s.upgraded.reset();
                s.upgrade_out.clear();
                write_internal_error(s.out, m.method == method::head);
                s.closing = true;
                stop = true;
                break;
              }
              s.out.append(s.upgrade_out);  // after any response before it in this batch
              s.upgrade_out.clear();
              if (!s.upgraded) {
                s.closing = true;
              }
              stop = true;
              break;
            }
          }
          s.body.clear();
          if (router_.has_streams() && s.parser.in_body()) [[unlikely]] {
            if (!begin_body(c, s)) {
              stop = true;
              break;
            }
            continue;
          }
          if (s.parser.complete_without_body()) {
            // No body follows: the request is complete now, without the `done` round trip.
            dispatch(c, s);
            if (s.closing || s.deferred || over_output_limit()) {
              stop = true;
            }
            s.head_start = now;
            continue;
          }
          if (m.expect_continue && s.parser.in_body()) [[unlikely]] {
            if (refuse_unrouted_expectation(s)) {
              stop = true;  // answered; the body is read away while the connection lingers
              break;
            }
            s.out.append("HTTP/1.1 100 Continue\r\n\r\n");
          }
          continue;
        }
        case parse_event::body:
          // Routes stream: begin_body decided who takes this body, under which limit.
          if (router_.has_streams()) [[unlikely]] {
            if (take_body_piece(c, s, st.body) == piece_result::taken) {
              continue;
            }
            stop = true;  // answered (lingering), or paused: the rest waits in the input
            break;
          }
          if (opts_.buffer_body) {
            s.body.append(st.body);
          }
          continue;
        case parse_event::done:
          if (s.reader) [[unlikely]] {
            end_stream(c, s, take_reader(s), &s.params);  // a streamed body is complete
          } else {
            dispatch(c, s);
            if (s.body.capacity() > kKeepBuffer) [[unlikely]] {
              // Handled (request views end with the handler call): a large body must not stay
              // allocated until the connection's next request.
              std::string().swap(s.body);
            }
          }
          if (s.closing || s.deferred || over_output_limit()) {
            stop = true;
          }
          if (s.parser.idle()) {
            s.head_start = now;
          }
          continue;
        case parse_event::error:
          answer_error(c, s, s.parser.error_status(), s.parser.error_reason());
          stop = true;
          break;
      }
      break;
    }
  }
  // Lingering or closing: nothing more will be parsed, so drop all input.
  if (s.lingering || s.closing) {
    c.discard();
  } else {
    c.discard(total);
  }
  if (!s.out.empty()) {
    (void)c.write(s.out.view());
    s.out.clear_and_trim(kKeepBuffer);
  }
  if (s.upgraded) {
    if (s.timer) {
      c.owner().cancel(s.timer), s.timer = 0;
    }
    s.upgraded->on_upgraded(c, s.upgrade_out);
    if (!s.upgrade_out.empty()) {
      (void)c.write(s.upgrade_out);
      s.upgrade_out.clear();
    }
    if (c.inbound_size() > 0) {
      return s.upgraded->on_traffic(c);
    }
    return action::none;
  }
  if (s.deferred) [[unlikely]] {
    hold_input_while_deferred(
        c, opts_.limits.max_head_bytes);  // the requests behind the deferred one wait
    return action::none;
  }
  if (s.reader && s.reader->flow_->paused) [[unlikely]] {
    c.pause_read();  // the reader paused the body: nothing more is read until resume_body
    return action::none;
  }
  if (s.output_paused && !s.closing) {
    if (c.outbound_size() == 0) {
      // The kernel took it all: no drain will come, so carry on with the requests left.
      s.output_paused = false;
      return c.inbound_size() > 0 ? handle_input(c, s) : action::none;
    }
    // The rest of the pipeline waits in the input buffer; on_drain resumes.
    c.pause_read();
    return action::none;
  }
  if (s.lingering) {
    // Stop sending but keep reading for a while, so the client reads our answer rather than
    // a reset caused by unread data in our receive buffer.
    (void)c.shutdown_write();
    if (s.timer) {
      c.owner().cancel(s.timer);
    }
    arm_timer(c, s, opts_.linger);
    return action::none;
  }
  if (s.closing) {
    return action::close;
  }
  return action::none;
}

action server::on_traffic(evnet::conn& c) {
  session* s = session_of(c);
  if (!s) {
    return action::close;
  }
  if (s->upgraded) {
    return s->upgraded->on_traffic(c);
  }
  if (s->lingering) {
    c.discard();
    return action::none;
  }
  return handle_input(c, *s);
}

void server::on_drain(evnet::conn& c) {
  session* s = session_of(c);
  if (s != nullptr && s->output_paused && !s->upgraded && !s->deferred) {
    s->output_paused = false;
    c.resume_read();  // offers the requests already read first
  }
}

action server::on_stopping(evnet::conn& c) {
  session* s = session_of(c);
  if (s != nullptr && s->upgraded) {
    return s->upgraded->on_stopping(c);
  }
  if (s != nullptr && s->deferred) {
    s->stopping = true;  // the answer may still come within the grace period; then close
    return action::none;
  }
  return action::close;
}

action server::on_read_eof(evnet::conn& c) {
  (void)c;
  // Also while a response is deferred: a client that shut its side is taken for gone (as nginx
  // and Go's net/http do), so the application learns it (deferred_response::done()). Requests
  // it sent before its EOF have all been offered by now, also those kept while reading was
  // paused (max_pending_output, a paused body reader): the net layer offers kept input again
  // after a resume before it reports the EOF (conn::offer_kept_input), and handle_input
  // answers every complete request it is offered unless it pauses reading again, which keeps
  // the EOF unread. What is left is part of a request that can never be completed.
  return action::close;
}

void server::on_close(evnet::conn& c, std::error_code reason) {
  session* s = session_of(c);
  if (!s) {
    return;
  }
  if (s->upgraded) {
    s->upgraded->on_close(c, reason);
  }
  if (s->reader) {
    std::unique_ptr<body_reader> r = take_reader(*s);
    r->on_abort(reason ? reason : make_error_code(errc::closed));
  }
  if (s->deferred) {
    s->deferred->done.store(true, std::memory_order_release);
  }
  if (s->timer) {
    c.owner().cancel(s->timer);
  }
  c.context().reset();
  delete s;
}

// On the loop thread, for a deferred response: runs the application's fill (an empty one: the
// last handle was dropped), sends what it wrote, and once the response is complete lets the
// connection go on with the requests that waited (or closes it).
void server::run_deferred(const std::shared_ptr<detail::deferred_state>& st,
                          const std::function<void(response&)>& fill) noexcept {
  if (st->done.load(std::memory_order_relaxed)) {
    return;
  }
  std::shared_ptr<evnet::conn> c = st->conn.lock();
  session* s = c ? session_of(*c) : nullptr;
  if (s == nullptr || s->deferred != st || c->state() != conn_state::open) {
    return;  // the connection closed meanwhile
  }
  detail::refresh_date();  // outside any batch
  if (!st->res) {
    st->res = std::make_unique<response>(st->out, st->head_request, st->last, st->keep_alive_10,
                                         std::string_view{}, st->http10);
  }
  response& r = *st->res;
  bool failed = !fill;
  if (fill) {
    try {
      fill(r);
    } catch (...) {
      failed = true;
    }
  }
  // A failed fill closes the connection: after a 500 if nothing was started, else the started
  // response cannot be repaired and the stream is cut.
  const bool close = failed;
  if (failed && !r.started()) {
    st->out.clear();
    write_internal_error(st->out, st->head_request);
  }
  // A head not ended yet stays in the buffer until it is (or the connection fails): its one
  // Connection field may still be rewritten (merge_connection), and half a head is of no use
  // to the client.
  if (st->out.size() != 0 && (close || !r.head_open_)) {
    (void)c->write(st->out.view());
    st->out.clear();
  }
  if (!close && !r.finished()) {
    return;  // more to come (a stream), from later calls
  }
  st->done.store(true, std::memory_order_release);
  s->deferred.reset();
  if (close || st->last || r.must_close() || s->stopping) {
    c->close();
    return;
  }
  s->last_activity = s->head_start = c->owner().now();
  // Offers the requests that waited in the input buffer first (resume_read does, from a fresh
  // stack), then reads on; the pause makes that happen whether or not reading was paused.
  c->pause_read();
  c->resume_read();
}

}  // namespace evnet::http
