// evnet — HTTP/1.1 streaming message parser (requests and responses).
//
// This is a public header. The parser is a plain object with no threads and no I/O: every
// member must be called by one thread at a time (normally the loop thread that owns the
// connection). It accepts its input in any split, down to one byte per call.
//
// The head (request/status line, header fields, trailers) is copied into one buffer that the
// parser allocates once, on first use, and reuses for every later message, so parsing a request
// on the common path allocates nothing. Every std::string_view handed out by request()/response()
// points into that buffer. Body bytes are never copied: body events hand back views into the
// caller's input.
//
// Two paths, one answer: a request head that arrives whole in one call, with CRLF line ends and
// nothing wrong with it, is parsed in a single vectorised pass; everything else (a head split
// across calls, bare LF, any error or limit) goes line by line. The fast pass gives up rather
// than decide anything the line-by-line path would decide differently, and the tests compare
// the two on every input they use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace evnet::http {

namespace detail {
struct parser_test_access;  // tests only: compares the fast and the slow head paths
}  // namespace detail

/// Methods recognised by the parser; any other token is `other` (see message::method_text).
enum class method : std::uint8_t {
  other,
  get,
  head,
  post,
  put,
  del,
  options,
  patch,
  connect,
  trace
};

/// One header field; both views point into the parser's head buffer.
struct header_field {
  std::string_view name;   ///< As received (case preserved).
  std::string_view value;  ///< Leading and trailing whitespace removed.
};

/// Size limits enforced while parsing. Exceeding one is an error carrying the listed status.
struct parser_limits {
  std::size_t max_head_bytes = 8192;       ///< Request/status line + fields (431 when exceeded).
  std::size_t max_target_bytes = 4096;     ///< Request target (414 when exceeded).
  std::size_t max_headers = 64;            ///< Number of header fields (431 when exceeded).
  std::uint64_t max_body_bytes = 1 << 20;  ///< Decoded body size (413 when exceeded).
};

/// A parsed message head. Valid from the `head` event until the parser starts the next
/// message (the first call to parse() after `done`) or is reset/destroyed.
struct message {
  // Request fields (request parser only).
  http::method method = http::method::other;  ///< Recognised method, or `other`.
  std::string_view method_text;               ///< The method token as received.
  /// Request target, e.g. "/a/b?x=1". Its form fits the method, or the request is a 400 (RFC
  /// 9112 §3.2): origin-form ("/p") or absolute-form ("http://h/p") for every method but
  /// CONNECT, the asterisk-form "*" for OPTIONS only, the authority-form ("h:443") for CONNECT
  /// only.
  std::string_view target;
  /// Target up to '?' (or the whole target). For an absolute-form target
  /// ("http://h:8080/a?x=1", RFC 9112 §3.2.2) the part after the authority, "/a" ("/" if
  /// none); `target` keeps the whole form and the Host field is left as sent.
  std::string_view path;
  std::string_view query;  ///< After '?', without it; empty if none.
  // Response fields (response parser only).
  int status = 0;           ///< Status code, e.g. 200.
  std::string_view reason;  ///< Reason phrase, possibly empty.
  // Both kinds.
  int version_minor = 1;               ///< 0 for HTTP/1.0, 1 for HTTP/1.1.
  std::vector<header_field> headers;   ///< In order received; capacity is reused.
  std::vector<header_field> trailers;  ///< Trailer fields of a chunked body.
  std::uint64_t content_length = 0;    ///< Valid when has_content_length.
  bool has_content_length = false;     ///< A Content-Length header was present.
  bool chunked = false;                ///< Transfer-Encoding: chunked.
  bool keep_alive = true;              ///< Connection persists after this message.
  bool upgrade = false;                ///< Connection: upgrade and an Upgrade header, in HTTP/1.1.
  bool expect_continue = false;        ///< Expect: 100-continue (requests).

  /// First header whose name equals `name` ignoring ASCII case; empty view if absent.
  /// `found` (optional) tells an absent header from an empty one.
  std::string_view header(std::string_view name, bool* found = nullptr) const noexcept;
  /// True if the comma-separated header `name` contains `token` (ASCII case-insensitive),
  /// looking at every field with that name.
  bool header_has_token(std::string_view name, std::string_view token) const noexcept;
};

/// What one call to parser::parse() found.
enum class parse_event : std::uint8_t {
  need_more,  ///< All input consumed; call again with more.
  head,       ///< The head is complete: message() is valid.
  body,       ///< `body` holds body bytes (a view into the input passed to parse()).
  done,       ///< The message is complete (after its trailers, if chunked).
  error,      ///< Malformed or over a limit; see error_status()/error_reason(). Sticky.
};

/// Result of parser::parse(): the event and how many input bytes were consumed.
struct parse_step {
  parse_event event = parse_event::need_more;
  std::size_t consumed = 0;
  std::string_view body;  ///< Only for parse_event::body.
};

/// ASCII case-insensitive equality, exposed for header handling by users.
bool iequals(std::string_view a, std::string_view b) noexcept;

/// Streaming HTTP/1.x parser. Construct a request or a response parser; then call parse()
/// repeatedly, removing `consumed` bytes from the front of the input each time, until it
/// returns need_more (wait for more input) or error.
///
/// Keep-alive and pipelining: after `done`, the next call starts the next message, so a buffer
/// holding several pipelined requests yields head/body/done for each in order.
class parser {
 public:
  /// Which start line to expect.
  enum class kind : std::uint8_t { request, response };

  /// Creates a parser; allocates nothing until the first byte arrives. Any thread.
  explicit parser(kind k, parser_limits limits = {});
  /// Frees the head buffer. Owner thread.
  ~parser();
  /// Moves the state and the head buffer (views from the source follow the buffer). Owner
  /// thread.
  parser(parser&&) noexcept;
  /// Move assignment, as the move constructor. Owner thread.
  parser& operator=(parser&&) noexcept;

  /// Parses as much of `input` as forms the next event. Calling thread: the owner.
  /// After `error` every later call returns `error` with consumed = 0 until reset().
  parse_step parse(std::string_view input);

  /// Optional shortcut after a `head` event: if the message has no body (its `done` would be the
  /// next event), completes it exactly as that `done` does — the next parse() begins the next
  /// message — and returns true, saving a parse() call per request. Otherwise returns false and
  /// changes nothing. Calling thread: the owner.
  bool complete_without_body() noexcept {
    if (state_ != state::done_pending) {
      return false;
    }
    state_ = state::start;
    head_len_ = 0;
    return true;
  }

  /// Forgets any partial message and error; keeps the head buffer for reuse.
  void reset() noexcept;

  /// The current message head; meaningful after `head` (see message's lifetime note).
  const http::message& message() const noexcept { return msg_; }

  /// Response parser only: the request this response answers was HEAD (no body follows) —
  /// set before the response's first byte.
  void set_head_request(bool head) noexcept { head_request_ = head; }

  /// Response parser only: the peer closed the connection. A response whose body is
  /// delimited by the close completes; returns true if that happened (message is done).
  bool finish_on_eof() noexcept;

  /// Request parser only: a request line that has not ended (a client that stalls, answered
  /// 408) was never parsed, so message().method is `other`; when its first bytes already hold
  /// a whole method token and the space after it, this sets message().method from them, so
  /// that an answer to "HEAD /x" follows HEAD's rules (no content). Does nothing otherwise.
  /// Calling thread: the owner.
  void note_unfinished_method() noexcept;

  /// HTTP status describing the error (400, 413, 414, 431, 501, 505); 0 if none. A request
  /// line too long because of its method (8 or more method characters before any space: no
  /// known method is that long) is 501, as RFC 9112 §3 asks, not 414.
  int error_status() const noexcept { return error_status_; }
  /// Short static description of the error; empty if none.
  std::string_view error_reason() const noexcept { return error_reason_; }
  /// True between `head` and `done`, i.e. the parser is inside a message body.
  bool in_body() const noexcept;
  /// True when no byte of a next message has been seen (a clean point to close a connection).
  bool idle() const noexcept { return state_ == state::start && head_len_ == 0; }

 private:
  enum class state : std::uint8_t {
    start,         // waiting for the first byte of a message (leading CRLFs skipped)
    head,          // accumulating the head into head_buf_
    body_length,   // Content-Length body
    body_eof,      // response body delimited by connection close
    chunk_size,    // hex size + extensions up to LF
    chunk_data,    // chunk payload
    chunk_crlf,    // CRLF after a chunk's payload
    trailers,      // trailer section, accumulated into head_buf_
    done_pending,  // the message is complete; `done` still to be reported
    error,
  };

  friend struct detail::parser_test_access;

  parse_step fail(int status, const char* reason);
  parse_step on_head_complete();
  parse_step parse_start(std::string_view in);
  parse_step parse_state(std::string_view in);
  std::size_t fast_request_head(const char* b, std::size_t n, bool& plain);
  bool parse_start_line(std::string_view line);
  bool parse_field_line(std::string_view line, std::vector<header_field>& into);
  parse_step accumulate_lines(std::string_view input, bool trailers);
  bool note_method(std::string_view more) noexcept;
  parse_step finish_message(std::size_t consumed);
  bool known_valid_host(std::string_view v) noexcept;
  bool remember_valid_host(std::string_view v) noexcept;

  kind kind_;
  state state_ = state::start;
  bool head_request_ = false;
  parser_limits limits_;
  std::unique_ptr<char[]> head_buf_;  // max_head_bytes, allocated once
  std::size_t head_len_ = 0;
  std::size_t line_start_ = 0;     // start of the current line in head_buf_
  std::size_t trailer_start_ = 0;  // where trailers begin in head_buf_
  std::uint64_t remaining_ = 0;    // body or chunk bytes left
  std::uint64_t body_total_ = 0;   // decoded body bytes so far
  std::uint32_t chunk_line_ = 0;   // bytes of the chunk-size line so far (bounded)
  // Where a chunk-size line's extension is (RFC 9112 §7.1.1); none before its first ';'.
  enum class chunk_ext : std::uint8_t {
    none,
    before_name,   // after ';' (and BWS): a token must follow
    name,          // in chunk-ext-name
    after_name,    // BWS after the name: '=' or ';' must follow
    before_value,  // after '=' (and BWS): a token or a quoted-string must follow
    token_value,   // in a token value
    quoted,        // in a quoted-string value
    quoted_pair,   // after a backslash inside it
    after_quoted,  // right after the closing quote
    after_value,   // BWS after the value: ';' must follow
    bad,           // not the grammar: the line is refused
  };
  static chunk_ext next_chunk_ext(chunk_ext s, unsigned char c) noexcept;
  chunk_ext chunk_ext_ = chunk_ext::none;
  bool chunk_ws_ = false;  // whitespace after the chunk size (only ";" may follow)
  bool chunk_cr_ = false;  // saw CR in chunk_crlf / chunk size line
  bool fast_path_ = true;  // tests turn it off to compare against the line-by-line path
  // The last Host value found valid on this connection: a client sends the same one every
  // time, so the fast path compares it instead of validating it again. It starts as the empty
  // value (valid), so the length is never above the buffer's size (a sentinel such as 0xff
  // would match a 255-byte Host and compare past the buffer: found by fuzz_http_parser).
  std::uint8_t valid_host_len_ = 0;
  char valid_host_[39] = {};
  std::uint64_t fast_heads_ = 0;  // heads parsed by fast_request_head (tests read it)
  int error_status_ = 0;
  const char* error_reason_ = "";
  http::message msg_;
};

/// A request parser (parser::kind::request).
class request_parser : public parser {
 public:
  /// See parser::parser.
  explicit request_parser(parser_limits limits = {}) : parser(kind::request, limits) {}
};

/// A response parser (parser::kind::response), used by the WebSocket client and tests.
class response_parser : public parser {
 public:
  /// See parser::parser.
  explicit response_parser(parser_limits limits = {}) : parser(kind::response, limits) {}
};

}  // namespace evnet::http
