#include "evnet/http/parser.h"

#include <array>
#include <bit>
#include <cstring>
#include <new>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "http/bytes.h"
#include "http/text.h"

namespace evnet::http {
namespace {

// Where the authority of an absolute-form target begins (after "scheme://"), or 0 when `t`
// (not empty) is not in that form.
std::size_t absolute_form_authority(std::string_view t) noexcept {
  // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then "://"
  auto alpha = [](char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; };
  if (!alpha(t.front())) {
    return 0;
  }
  std::size_t i = 1;
  while (i < t.size() && (alpha(t[i]) || (t[i] >= '0' && t[i] <= '9') || t[i] == '+' ||
                          t[i] == '-' || t[i] == '.')) {
    ++i;
  }
  return t.substr(i, 3) == "://" ? i + 3 : 0;
}

// The path of an absolute-form target without its query (RFC 9112 §3.2.2,
// "http://host:port/p", which a server MUST accept): the part after the authority, "/" when
// empty. A target that is not in that form (authority-form for CONNECT, "*") is its own path.
[[gnu::noinline]] std::string_view absolute_form_path_slow(std::string_view t) noexcept {
  const std::size_t authority = absolute_form_authority(t);
  if (authority == 0) {
    return t;
  }
  const std::size_t slash = t.find('/', authority);
  return slash == std::string_view::npos ? std::string_view("/") : t.substr(slash);
}

// The path of a request target without its query: an origin-form target ("/p") is its own
// path, checked inline; other forms take absolute_form_path_slow().
[[gnu::always_inline]] inline std::string_view absolute_form_path(std::string_view t) noexcept {
  if (t.empty() || t.front() == '/') [[likely]] {
    return t;
  }
  return absolute_form_path_slow(t);
}

// Longest chunk-size line accepted (size, whitespace and extension, without the CRLF).
constexpr std::uint32_t kMaxChunkLine = 4096;

// ASCII letters and digits, plus the bytes of `extra`.
constexpr std::array<bool, 256> make_alnum_table(std::string_view extra) {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) {
    t[c] = true;
  }
  for (int c = 'a'; c <= 'z'; ++c) {
    t[c] = true;
  }
  for (int c = 'A'; c <= 'Z'; ++c) {
    t[c] = true;
  }
  for (char c : extra) {
    t[static_cast<unsigned char>(c)] = true;
  }
  return t;
}

// RFC 9110 tchar: the characters allowed in methods and field names.
constexpr std::array<bool, 256> make_tchar_table() {
  return make_alnum_table("!#$%&'*+-.^_`|~");
}
constexpr auto kTchar = make_tchar_table();

// reg-name bytes of a Host value (RFC 3986 §3.2.2: unreserved, sub-delims, and '%' of a
// pct-encoding); also the bytes of an IPv6 or IPvFuture literal inside brackets (':' added).
constexpr std::array<bool, 256> make_host_table() {
  return make_alnum_table("-._~!$&'()*+,;=%");
}
constexpr auto kHostChar = make_host_table();

// Request-target bytes for the fast path: 0 ends the target (CTL, SP, DEL), 2 is '?', 1 is any
// other byte. The same set parse_start_line accepts.
constexpr std::array<std::uint8_t, 256> make_target_table() {
  std::array<std::uint8_t, 256> t{};
  for (int c = 0x21; c < 0x100; ++c) {
    t[c] = 1;
  }
  t[0x7f] = 0;
  t['?'] = 2;
  return t;
}
constexpr auto kTarget = make_target_table();

// Field-value bytes (RFC 9110 field-value, as field_value_ok): anything but a CTL other than
// HTAB, and DEL.
constexpr std::array<bool, 256> make_value_table() {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x100; ++c) {
    t[c] = true;
  }
  t[0x7f] = false;
  t['\t'] = true;
  return t;
}
constexpr auto kValue = make_value_table();

// First byte of [p, e) that ends a request target (CTL, SP or DEL), or e; `question` gets the
// first '?' before it (unchanged if none). Sixteen bytes per step with SSE2.
const char* scan_target(const char* p, const char* e, const char*& question) noexcept {
#if defined(__SSE2__)
  const __m128i space = _mm_set1_epi8(0x20);
  const __m128i del = _mm_set1_epi8(0x7f);
  const __m128i qmark = _mm_set1_epi8('?');
  while (e - p >= 16) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    // Unsigned x <= 0x20 exactly when min(x, 0x20) == x.
    const __m128i stop =
        _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(x, space), x), _mm_cmpeq_epi8(x, del));
    const auto stop_mask = static_cast<unsigned>(_mm_movemask_epi8(stop));
    auto q_mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(x, qmark)));
    if (stop_mask != 0) {
      q_mask &= (stop_mask & (0u - stop_mask)) - 1;  // only '?' before the first stop byte
    }
    if (q_mask != 0 && question == nullptr) {
      question = p + std::countr_zero(q_mask);
    }
    if (stop_mask != 0) {
      return p + std::countr_zero(stop_mask);
    }
    p += 16;
  }
#endif
  for (; p < e; ++p) {
    const std::uint8_t c = kTarget[static_cast<unsigned char>(*p)];
    if (c == 0) {
      break;
    }
    if (c == 2 && question == nullptr) {
      question = p;
    }
  }
  return p;
}

// First byte of [p, e) that a field value may not hold (a CTL other than HTAB, or DEL), or e.
const char* scan_value(const char* p, const char* e) noexcept {
#if defined(__SSE2__)
  const __m128i below_space = _mm_set1_epi8(0x1f);
  const __m128i tab = _mm_set1_epi8('\t');
  const __m128i del = _mm_set1_epi8(0x7f);
  while (e - p >= 16) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i ctl =
        _mm_andnot_si128(_mm_cmpeq_epi8(x, tab), _mm_cmpeq_epi8(_mm_min_epu8(x, below_space), x));
    const auto mask =
        static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(ctl, _mm_cmpeq_epi8(x, del))));
    if (mask != 0) {
      return p + std::countr_zero(mask);
    }
    p += 16;
  }
#endif
  while (p < e && kValue[static_cast<unsigned char>(*p)]) {
    ++p;
  }
  return p;
}

// memcpy for a head of a few dozen bytes without the call. Neither range may be shorter than n.
void copy_head(char* d, const char* s, std::size_t n) noexcept {
  if (n >= 16) {
    detail::copy_blocks16(d, s, n);
    return;
  }
  std::memcpy(d, s, n);
}

std::uint64_t load64(const char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

std::uint32_t load32(const char* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The word a constant string has in memory (host byte order), for compares against load64/32.
template <class T, std::size_t N>
constexpr T word_of(const char (&s)[N]) noexcept {
  static_assert(N - 1 == sizeof(T));
  T v = 0;
  for (std::size_t i = sizeof(T); i-- > 0;) {
    v = static_cast<T>((v << 8) | static_cast<unsigned char>(s[i]));
  }
  if constexpr (std::endian::native == std::endian::big) {
    T r = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      r = static_cast<T>((r << 8) | static_cast<unsigned char>(s[i]));
    }
    return r;
  }
  return v;
}

// ASCII case-insensitive equality of a field name with a lower-case literal made of letters
// and '-' (4 to 24 characters), a word at a time. OR-ing 0x20 folds exactly the case pairs of
// letters; for '-' (0x2D) it also maps 0x0D, which is not a tchar and so never occurs in a
// parsed field name.
template <std::size_t N>
bool name_is(std::string_view n, const char (&lit)[N]) noexcept {
  constexpr std::size_t kLen = N - 1;
  static_assert(kLen >= 4 && kLen <= 24);
  if (n.size() != kLen) {
    return false;
  }
  const char* d = n.data();
  if constexpr (kLen < 8) {
    constexpr std::uint32_t kFold = 0x20202020u;
    return ((load32(d) | kFold) == load32(lit)) &&
           ((load32(d + kLen - 4) | kFold) == load32(lit + kLen - 4));
  } else {
    constexpr std::uint64_t kFold = 0x2020202020202020ull;
    std::uint64_t diff = 0;
    for (std::size_t i = 0; i + 8 < kLen; i += 8) {
      diff |= (load64(d + i) | kFold) ^ load64(lit + i);
    }
    diff |= (load64(d + kLen - 8) | kFold) ^ load64(lit + kLen - 8);
    return diff == 0;
  }
}

constexpr unsigned char lower(unsigned char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c | 0x20) : c;
}

bool byte_ok(unsigned char u) noexcept {
  return !((u < 0x20 && u != '\t') || u == 0x7f);
}

// True if no byte of `v` is a control character other than HTAB (RFC 9110 field-value). Eight
// bytes per step: a word is checked byte by byte only if it may hold a byte below 0x20 or a
// DEL (the SWAR tests below never miss one; they may flag a word that is fine, e.g. for a tab).
bool field_value_ok(std::string_view v) noexcept {
  const char* p = v.data();
  std::size_t n = v.size(), i = 0;
  constexpr std::uint64_t kOnes = 0x0101010101010101ull, kHigh = 0x8080808080808080ull;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t x;
    std::memcpy(&x, p + i, 8);
    std::uint64_t below_space = (x - 0x20 * kOnes) & ~x & kHigh;
    std::uint64_t y = x ^ (0x7F * kOnes);
    std::uint64_t is_del = (y - kOnes) & ~y & kHigh;
    if (below_space | is_del) {
      for (std::size_t k = 0; k < 8; ++k) {
        if (!byte_ok(static_cast<unsigned char>(p[i + k]))) {
          return false;
        }
      }
    }
  }
  for (; i < n; ++i) {
    if (!byte_ok(static_cast<unsigned char>(p[i]))) {
      return false;
    }
  }
  return true;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

// Byte classes of a Host value: 1 a reg-name byte that stands for itself, 2 '%' (starts a
// pct-encoding), 3 ':' (starts the port); 0 anything else.
constexpr std::array<std::uint8_t, 256> make_host_class_table() {
  std::array<std::uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] = kHostChar[c] ? 1 : 0;
  }
  t['%'] = 2;
  t[':'] = 3;
  return t;
}
constexpr auto kHostClass = make_host_class_table();

// A Host field value: uri-host [ ":" port ] (RFC 9112 §3.2, RFC 3986 §3.2.2), or empty (a
// target without an authority). A '%' must start a pct-encoding.
bool valid_host(std::string_view v) noexcept {
  const char* p = v.data();
  const char* const e = p + v.size();
  if (p != e && *p == '[') {
    for (++p; p != e && *p != ']'; ++p) {
      if (!kHostChar[static_cast<unsigned char>(*p)] && *p != ':') {
        return false;
      }
    }
    if (p == e || p == v.data() + 1) {
      return false;  // no closing bracket, or an empty literal
    }
    ++p;
    if (p != e && *p != ':') {
      return false;
    }
  } else {
    for (; p != e; ++p) {
      const std::uint8_t k = kHostClass[static_cast<unsigned char>(*p)];
      if (k == 1) {
        continue;
      }
      if (k == 3) {
        break;
      }
      if (k == 2 && e - p > 2 && hex_value(p[1]) >= 0 && hex_value(p[2]) >= 0) {
        p += 2;
        continue;
      }
      return false;
    }
  }
  if (p == e) {
    return true;
  }
  for (++p; p != e; ++p) {  // the port
    if (static_cast<unsigned>(*p - '0') > 9) {
      return false;
    }
  }
  return true;
}

// RFC 9112 §3.2: the request-target forms a method may use. CONNECT takes only the
// authority-form (uri-host ":" port, §3.2.3); OPTIONS also the asterisk-form "*" (§3.2.4);
// every method but CONNECT the origin-form ("/p") and the absolute-form ("scheme://...").
// Anything else ("GET *", "GET foo") is no target the server could route.
bool target_fits_method(method m, std::string_view t) noexcept {
  if (m == method::connect) {
    const std::size_t colon = t.rfind(':');
    return colon != std::string_view::npos && colon + 1 < t.size() && t.front() != '/' &&
           (t.front() != '[' || t[colon - 1] == ']') && valid_host(t);
  }
  if (t.front() == '/') {
    return true;
  }
  if (t.size() == 1 && t.front() == '*') {
    return m == method::options;
  }
  return absolute_form_authority(t) != 0;
}

method method_from(std::string_view m) noexcept {
  switch (m.size()) {
    case 3:
      if (m == "GET") {
        return method::get;
      }
      if (m == "PUT") {
        return method::put;
      }
      break;
    case 4:
      if (m == "POST") {
        return method::post;
      }
      if (m == "HEAD") {
        return method::head;
      }
      break;
    case 5:
      if (m == "PATCH") {
        return method::patch;
      }
      if (m == "TRACE") {
        return method::trace;
      }
      break;
    case 6:
      if (m == "DELETE") {
        return method::del;
      }
      break;
    case 7:
      if (m == "OPTIONS") {
        return method::options;
      }
      if (m == "CONNECT") {
        return method::connect;
      }
      break;
    default:
      break;
  }
  return method::other;
}

// Parses "HTTP/1.x"; returns the minor version, -1 when malformed, -2 when not HTTP/1.
int parse_version(std::string_view v) noexcept {
  if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || v[6] != '.') {
    return -1;
  }
  if (v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9') {
    return -1;
  }
  if (v[5] != '1') {
    return -2;
  }
  return v[7] == '0' ? 0 : 1;
}

// Iterates the comma-separated tokens of a header value.
template <class F>
bool for_each_token(std::string_view v, F&& f) {
  while (!v.empty()) {
    std::size_t comma = v.find(',');
    std::string_view tok = http::detail::trim_ows(v.substr(0, comma));
    if (!tok.empty() && f(tok)) {
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    v.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(static_cast<unsigned char>(a[i])) != lower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view message::header(std::string_view name, bool* found) const noexcept {
  for (const auto& h : headers) {
    if (iequals(h.name, name)) {
      if (found) {
        *found = true;
      }
      return h.value;
    }
  }
  if (found) {
    *found = false;
  }
  return {};
}

bool message::header_has_token(std::string_view name, std::string_view token) const noexcept {
  for (const auto& h : headers) {
    if (!iequals(h.name, name)) {
      continue;
    }
    if (for_each_token(h.value, [&](std::string_view t) { return iequals(t, token); })) {
      return true;
    }
  }
  return false;
}

parser::parser(kind k, parser_limits limits) : kind_(k), limits_(limits) {
  // A head always needs room for at least a minimal start line.
  if (limits_.max_head_bytes < 64) {
    limits_.max_head_bytes = 64;
  }
}
parser::~parser() = default;
parser::parser(parser&&) noexcept = default;
parser& parser::operator=(parser&&) noexcept = default;

void parser::reset() noexcept {
  state_ = state::start;
  head_len_ = line_start_ = trailer_start_ = 0;
  remaining_ = body_total_ = 0;
  chunk_line_ = 0;
  chunk_ext_ = chunk_ext::none;
  chunk_ws_ = chunk_cr_ = false;
  error_status_ = 0;
  error_reason_ = "";
}

bool parser::in_body() const noexcept {
  switch (state_) {
    case state::body_length:
    case state::body_eof:
    case state::chunk_size:
    case state::chunk_data:
    case state::chunk_crlf:
    case state::trailers:
      return true;
    default:
      return false;
  }
}

parse_step parser::fail(int status, const char* reason) {
  state_ = state::error;
  error_status_ = status;
  error_reason_ = reason;
  return {parse_event::error, 0, {}};
}

parse_step parser::finish_message(std::size_t consumed) {
  // complete_without_body() (parser.h) does the same for a message that ends at its head.
  state_ = state::start;
  head_len_ = 0;
  return {parse_event::done, consumed, {}};
}

bool parser::finish_on_eof() noexcept {
  if (state_ != state::body_eof) {
    return false;
  }
  state_ = state::done_pending;
  return true;
}

// The first bytes of a message: skip empty lines, reset the message, then the fast head path
// or the line-by-line one.
parse_step parser::parse_start(std::string_view in) {
  // RFC 9112 §2.2: a server should ignore at least one empty line before a request line.
  std::size_t skip = 0;
  while (skip < in.size() && (in[skip] == '\r' || in[skip] == '\n')) {
    ++skip;
  }
  if (skip == in.size()) {
    return {parse_event::need_more, skip, {}};
  }
  if (!head_buf_) {
    head_buf_ = std::make_unique<char[]>(limits_.max_head_bytes);
  }
  // Start a fresh message; clear() keeps the vectors' capacity, so no allocation. The header
  // fields are replaced by the fast path or cleared before the line-by-line one.
  msg_.trailers.clear();
  msg_.method = method::other;
  msg_.method_text = msg_.target = msg_.path = msg_.query = msg_.reason = {};
  msg_.status = 0;
  msg_.version_minor = 1;
  msg_.content_length = 0;
  msg_.has_content_length = msg_.chunked = msg_.upgrade = msg_.expect_continue = false;
  msg_.keep_alive = true;
  head_len_ = line_start_ = 0;
  body_total_ = 0;
  state_ = state::head;
  if (kind_ == kind::request && fast_path_) {
    bool plain = false;
    if (std::size_t used = fast_request_head(in.data() + skip, in.size() - skip, plain)) {
      ++fast_heads_;
      if (plain) {
        // No field on_head_complete interprets but Host, which a 1.1 request has: no body,
        // and the version alone decides keep-alive.
        msg_.keep_alive = msg_.version_minor >= 1;
        state_ = state::done_pending;
        return {parse_event::head, skip + used, {}};
      }
      parse_step s = on_head_complete();
      s.consumed = skip + used;
      return s;
    }
  }
  msg_.headers.clear();
  parse_step s = accumulate_lines(in.substr(skip), false);
  s.consumed += skip;
  return s;
}

parse_step parser::parse(std::string_view in) {
  // The two states every request passes through are handled here, outside the frame of the
  // state machine below.
  if (state_ == state::done_pending) {
    return finish_message(0);
  }
  if (state_ == state::start) {
    return parse_start(in);
  }
  return parse_state(in);
}

// One byte of a chunk extension (RFC 9112 §7.1.1):
//   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//   chunk-ext-name = token; chunk-ext-val = token / quoted-string
// The line's CR is judged by the caller (an extension may end after a name or a value).
parser::chunk_ext parser::next_chunk_ext(chunk_ext s, unsigned char c) noexcept {
  const bool ws = c == ' ' || c == '\t';
  const bool tchar = kTchar[c];
  switch (s) {
    case chunk_ext::before_name:
      return ws ? s : tchar ? chunk_ext::name : chunk_ext::bad;
    case chunk_ext::name:
    case chunk_ext::after_name:
      if (tchar && s == chunk_ext::name) {
        return s;
      }
      return ws         ? chunk_ext::after_name
             : c == '=' ? chunk_ext::before_value
             : c == ';' ? chunk_ext::before_name
                        : chunk_ext::bad;
    case chunk_ext::before_value:
      return ws         ? s
             : c == '"' ? chunk_ext::quoted
             : tchar    ? chunk_ext::token_value
                        : chunk_ext::bad;
    case chunk_ext::token_value:
    case chunk_ext::after_quoted:
    case chunk_ext::after_value:
      if (tchar && s == chunk_ext::token_value) {
        return s;
      }
      return ws ? chunk_ext::after_value : c == ';' ? chunk_ext::before_name : chunk_ext::bad;
    case chunk_ext::quoted:
      // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 9110 §5.6.4)
      if (c == '"') {
        return chunk_ext::after_quoted;
      }
      if (c == '\\') {
        return chunk_ext::quoted_pair;
      }
      return ws || (c >= 0x21 && c != 0x7f) ? s : chunk_ext::bad;
    case chunk_ext::quoted_pair:
      // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
      return ws || (c >= 0x21 && c != 0x7f) ? chunk_ext::quoted : chunk_ext::bad;
    case chunk_ext::none:
    case chunk_ext::bad:
      break;
  }
  return chunk_ext::bad;
}

parse_step parser::parse_state(std::string_view in) {
  switch (state_) {
    case state::error:
      return {parse_event::error, 0, {}};

    case state::done_pending:
      return finish_message(0);

    case state::start:
      return parse_start(in);

    case state::head:
      return accumulate_lines(in, false);

    case state::trailers:
      return accumulate_lines(in, true);

    case state::body_length:
    case state::chunk_data: {
      if (remaining_ == 0) {
        if (state_ == state::body_length) {
          return finish_message(0);
        }
        state_ = state::chunk_crlf;
        return parse(in);
      }
      if (in.empty()) {
        return {parse_event::need_more, 0, {}};
      }
      std::size_t n = in.size() < remaining_ ? in.size() : static_cast<std::size_t>(remaining_);
      remaining_ -= n;
      if (remaining_ == 0 && state_ == state::chunk_data) {
        state_ = state::chunk_crlf;
        chunk_cr_ = false;
      }
      return {parse_event::body, n, in.substr(0, n)};
    }

    case state::body_eof: {
      if (in.empty()) {
        return {parse_event::need_more, 0, {}};
      }
      // The body's size is unknown until the close: the bytes up to the limit are delivered,
      // whatever the input's split, and the first byte beyond it is the error.
      const std::uint64_t room = limits_.max_body_bytes - body_total_;
      if (room == 0) {
        return fail(413, "body too large");
      }
      const std::size_t n = in.size() < room ? in.size() : static_cast<std::size_t>(room);
      body_total_ += n;
      return {parse_event::body, n, in.substr(0, n)};
    }

    case state::chunk_crlf: {
      std::size_t i = 0;
      for (; i < in.size(); ++i) {
        char c = in[i];
        if (c == '\r' && !chunk_cr_) {
          chunk_cr_ = true;
        } else if (c == '\n' && chunk_cr_) {  // CRLF only: RFC 9112 §7.1
          state_ = state::chunk_size;
          chunk_line_ = 0;
          chunk_ext_ = chunk_ext::none;
          chunk_ws_ = chunk_cr_ = false;
          remaining_ = 0;
          parse_step s = parse(in.substr(i + 1));
          s.consumed += i + 1;
          return s;
        } else {
          return fail(400, "missing CRLF after chunk data");
        }
      }
      return {parse_event::need_more, i, {}};
    }

    case state::chunk_size: {
      for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '\n') {
          // CRLF only (RFC 9112 §7.1; bare LF is tolerated in the head, not here): a front end
          // that took a bare LF as part of an extension would frame the body differently.
          if (!chunk_cr_) {
            return fail(400, "bare LF in chunk size line");
          }
          if (chunk_line_ == 0) {
            return fail(400, "missing chunk size");
          }
          std::size_t used = i + 1;
          if (remaining_ == 0) {
            state_ = state::trailers;
            trailer_start_ = line_start_ = head_len_;
            parse_step s = parse(in.substr(used));
            s.consumed += used;
            return s;
          }
          // Compared before adding: a chunk size near 2^64 would wrap the running total past
          // the limit (body_total_ never exceeds max_body_bytes, so the subtraction cannot).
          if (remaining_ > limits_.max_body_bytes - body_total_) {
            return fail(413, "body too large");
          }
          body_total_ += remaining_;
          state_ = state::chunk_data;
          parse_step s = parse(in.substr(used));
          s.consumed += used;
          return s;
        }
        if (chunk_cr_) {
          return fail(400, "bare CR in chunk size line");
        }
        if (c == '\r') {
          if (chunk_ws_ && chunk_ext_ == chunk_ext::none) {
            // RFC 9112 §7.1: whitespace after the size only before an extension's ';' (BWS);
            // "5 \r\n" is refused as llhttp refuses it unless made lenient: a front end that
            // reads such a line otherwise frames the body differently (request smuggling).
            return fail(400, "whitespace at the end of a chunk size line");
          }
          // An extension ends after its name or its value, not inside a quoted string nor
          // after a ';', an '=' or whitespace.
          if (chunk_ext_ != chunk_ext::none && chunk_ext_ != chunk_ext::name &&
              chunk_ext_ != chunk_ext::token_value && chunk_ext_ != chunk_ext::after_quoted) {
            return fail(400, "malformed chunk extension");
          }
          chunk_cr_ = true;
          continue;
        }
        // Every byte of the line counts (leading zeros, whitespace, the extension): the line
        // is bounded so a peer cannot stream it forever. chunk_line_ counts it, which
        // until the first non-digit is the size's digits.
        if (++chunk_line_ > kMaxChunkLine) {
          return fail(400, "chunk size line too long");
        }
        if (chunk_ext_ != chunk_ext::none) {
          // Extensions are ignored, but must follow the grammar (a name is a token: "0;\r\n"
          // is malformed), so that a front end cannot read the line otherwise.
          chunk_ext_ = next_chunk_ext(chunk_ext_, static_cast<unsigned char>(c));
          if (chunk_ext_ == chunk_ext::bad) {
            return fail(400, "malformed chunk extension");
          }
          continue;
        }
        if (chunk_ws_) {
          // After the size's whitespace only more of it, then ';' and an extension (RFC 9112
          // §7.1.1: BWS before the ';'); a CR here is refused above.
          if (c == ';') {
            chunk_ext_ = chunk_ext::before_name;
          } else if (c != ' ' && c != '\t') {
            return fail(400, "bad chunk size");
          }
          continue;
        }
        int h = hex_value(c);
        if (h >= 0) {
          if (remaining_ >> 60) {
            return fail(400, "chunk size overflow");
          }
          remaining_ = (remaining_ << 4) | static_cast<unsigned>(h);
          continue;
        }
        if (chunk_line_ > 1 && c == ';') {  // this byte is counted: a digit came before
          chunk_ext_ = chunk_ext::before_name;
          continue;
        }
        if (chunk_line_ > 1 && (c == ' ' || c == '\t')) {
          chunk_ws_ = true;
          continue;
        }
        return fail(400, "bad chunk size");
      }
      return {parse_event::need_more, in.size(), {}};
    }
  }
  return {parse_event::need_more, 0, {}};
}

parse_step parser::accumulate_lines(std::string_view in, bool trailers) {
  std::size_t consumed = 0;
  while (consumed < in.size()) {
    const char* p = in.data() + consumed;
    std::size_t avail = in.size() - consumed;
    const void* nl = std::memchr(p, '\n', avail);
    std::size_t take = nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - p) + 1 : avail;
    if (head_len_ + take > limits_.max_head_bytes) {
      if (!trailers && line_start_ == 0 && kind_ == kind::request) {
        if (note_method(std::string_view(p, take))) {
          return fail(501, "method not implemented");
        }
        return fail(414, "request line too long");
      }
      return fail(431, trailers ? "trailer section too large" : "header section too large");
    }
    std::memcpy(head_buf_.get() + head_len_, p, take);
    head_len_ += take;
    consumed += take;
    if (!nl) {
      // A request line that has no end yet but is already longer than any allowed target.
      if (!trailers && line_start_ == 0 && kind_ == kind::request &&
          head_len_ > limits_.max_target_bytes + 32) {
        if (note_method({})) {
          return fail(501, "method not implemented");
        }
        return fail(414, "request target too long");
      }
      return {parse_event::need_more, consumed, {}};
    }
    // The same bound as the early check above, so the answer does not depend on how the
    // input was split.
    if (!trailers && line_start_ == 0 && kind_ == kind::request &&
        head_len_ - 1 > limits_.max_target_bytes + 32) {
      if (note_method({})) {
        return fail(501, "method not implemented");
      }
      return fail(414, "request target too long");
    }
    std::string_view line(head_buf_.get() + line_start_, head_len_ - 1 - line_start_);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    bool first = !trailers && line_start_ == 0;
    line_start_ = head_len_;
    if (line.empty()) {
      if (first) {
        return fail(400, "empty start line");
      }
      if (trailers) {
        return finish_message(consumed);
      }
      parse_step s = on_head_complete();
      s.consumed = consumed;
      return s;
    }
    if (first) {
      if (!parse_start_line(line)) {
        return {parse_event::error, 0, {}};
      }
    } else {
      if (!parse_field_line(line, trailers ? msg_.trailers : msg_.headers)) {
        return {parse_event::error, 0, {}};
      }
    }
  }
  return {parse_event::need_more, consumed, {}};
}

// The method of a request line refused before it is whole (too long), read from its first
// bytes — the head buffer's, then `more` — so that the answer to a HEAD request has no body
// either. No known method is longer than 7 bytes, so 8 bytes tell. Returns true when those 8
// bytes are all method characters: a method longer than any known, which RFC 9112 §3 has a
// server answer 501 (not 414: the line is long because of its method).
bool parser::note_method(std::string_view more) noexcept {
  char first[8];
  std::size_t n = head_len_ < sizeof first ? head_len_ : sizeof first;
  std::memcpy(first, head_buf_.get(), n);
  for (std::size_t i = 0; i < more.size() && n < sizeof first; ++i) {
    first[n++] = more[i];
  }
  const std::string_view start(first, n);
  const std::size_t space = start.find(' ');
  if (space != std::string_view::npos) {
    msg_.method = method_from(start.substr(0, space));
    return false;
  }
  for (char c : start) {
    if (!kTchar[static_cast<unsigned char>(c)]) {
      return false;
    }
  }
  return n == sizeof first;
}

void parser::note_unfinished_method() noexcept {
  // The request line is the head buffer's first line (leading empty lines are not kept).
  if (kind_ == kind::request && state_ == state::head && line_start_ == 0 && head_len_ > 0) {
    (void)note_method({});
  }
}

// The common case in one pass over the caller's input: a request whose whole head is in `b`
// (n bytes, the first one not CR/LF), CRLF line endings, and nothing the line-by-line path
// would reject or flag. Returns the head's length (through its blank line) with msg_ filled
// and the head copied into head_buf_, or 0 — nothing decided — for anything else: an
// incomplete head, a bare LF, an error of any kind, a limit reached. The caller then parses
// the same bytes with accumulate_lines, which reports the exact answer, so this path can only
// be faster, never different (tests/test_http_parser.cc compares the two on every case).
// `plain` is set when no field but Host has a name on_head_complete interprets (by its length)
// and a 1.1 request has Host, so the caller may skip on_head_complete.
// Validates a Host value the connection has not sent before and remembers it. Out of line:
// the common case is the remembered one (known_valid_host).
bool parser::remember_valid_host(std::string_view v) noexcept {
  if (!valid_host(v)) {
    return false;
  }
  if (v.size() <= sizeof valid_host_) {
    std::memcpy(valid_host_, v.data(), v.size());
    valid_host_len_ = static_cast<std::uint8_t>(v.size());
  }
  return true;
}

// The fast path's Host check: the value the connection sent last time (a typical
// "host:port" of 8 to 16 bytes is two overlapping word compares), else validate.
[[gnu::always_inline]] inline bool parser::known_valid_host(std::string_view v) noexcept {
  const std::size_t n = v.size();
  if (n == valid_host_len_) {
    const char* const d = v.data();
    if (n >= 8 && n <= 16
            ? load64(d) == load64(valid_host_) && load64(d + n - 8) == load64(valid_host_ + n - 8)
            : std::memcmp(d, valid_host_, n) == 0) {
      return true;
    }
  }
  return remember_valid_host(v);
}

std::size_t parser::fast_request_head(const char* b, std::size_t n, bool& plain) {
  // Lengths of the field names on_head_complete looks at, other than "host" (4).
  constexpr std::uint32_t kInterpretedLengths =
      (1u << 6) | (1u << 7) | (1u << 10) | (1u << 14) | (1u << 17);
  bool interpreted = false;
  bool host = false;
  bool host_field = false;  // the field being scanned is Host
  std::string_view host_value;
  const char* const e = b + n;
  const char* p = b;
  // Method: "GET " by one compare, anything else by the tchar scan of parse_start_line.
  method m = method::get;
  if (n >= 4 && load32(p) == word_of<std::uint32_t>("GET ")) {
    p += 3;
  } else {
    while (p < e && kTchar[static_cast<unsigned char>(*p)]) {
      ++p;
    }
    if (p == b || p == e || *p != ' ') {
      return 0;
    }
    m = method_from(std::string_view(b, static_cast<std::size_t>(p - b)));
  }
  const char* const method_end = p;
  // Target: up to the first CTL, SP or DEL; note the first '?'.
  const char* const t = ++p;
  const char* question = nullptr;
  p = scan_target(p, e, question);
  if (p == e) {
    return 0;
  }
  const auto tlen = static_cast<std::size_t>(p - t);
  // " HTTP/1.1\r\n" or " HTTP/1.0\r\n"; other versions take the slow path.
  if (tlen == 0 || tlen > limits_.max_target_bytes || *p != ' ' || e - p < 11 || p[9] != '\r' ||
      p[10] != '\n') {
    return 0;
  }
  // The origin-form, and "*" for OPTIONS; other forms (and CONNECT) take the slow path, which
  // checks that the form fits the method (target_fits_method).
  if (m == method::connect || (*t != '/' && !(tlen == 1 && *t == '*' && m == method::options))) {
    return 0;
  }
  const std::uint64_t version = load64(p + 1);
  int minor = 1;
  if (version != word_of<std::uint64_t>("HTTP/1.1")) {
    if (version != word_of<std::uint64_t>("HTTP/1.0")) {
      return 0;
    }
    minor = 0;
  }
  p += 11;
  // The request-line bound of accumulate_lines (line length with its CR, without its LF).
  if (static_cast<std::size_t>(p - 1 - b) > limits_.max_target_bytes + 32) {
    return 0;
  }
  // Field lines: name ':' OWS value OWS CRLF, until the empty line. The fields are collected
  // on the stack (a call per field into the vector costs more than the scan) with views that
  // already point where the head will be copied; msg_.headers is filled once, at the end.
  char* const buf = head_buf_.get();
  auto rebase = [b, buf](const char* at, std::size_t len) {
    return std::string_view(buf + (at - b), len);
  };
  constexpr std::size_t kMaxFastFields = 24;  // more fields take the line-by-line path
  const std::size_t max_fields =
      limits_.max_headers < kMaxFastFields ? limits_.max_headers : kMaxFastFields;
  // Uninitialised storage: value-initialising 24 fields would cost more than the scan.
  static_assert(std::is_trivially_copyable_v<header_field> &&
                std::is_trivially_destructible_v<header_field>);
  alignas(header_field) unsigned char storage[kMaxFastFields * sizeof(header_field)];
  auto* const fields = reinterpret_cast<header_field*>(storage);
  std::size_t count = 0;
  for (;;) {
    if (e - p < 2) {  // the head's size is checked once, at its end
      return 0;
    }
    if (*p == '\r') {
      if (p[1] != '\n') {
        return 0;
      }
      p += 2;
      break;
    }
    const char* const name = p;
    while (p < e && kTchar[static_cast<unsigned char>(*p)]) {
      ++p;
    }
    if (p == name || p == e || *p != ':' || count >= max_fields) {
      return 0;
    }
    const auto name_len = static_cast<std::size_t>(p - name);
    if (name_len < 32 && ((kInterpretedLengths >> name_len) & 1u) != 0) {
      interpreted = true;
    } else if (name_len == 4 && name_is(std::string_view(name, 4), "host")) {
      if (host) {
        return 0;  // a second Host: the line-by-line path answers 400
      }
      host = true;
      host_field = true;
    }
    ++p;
    while (p < e && (*p == ' ' || *p == '\t')) {
      ++p;
    }
    const char* const value = p;
    p = scan_value(p, e);
    const char* value_end = p;  // trailing OWS is not part of the value
    while (value_end != value && (value_end[-1] == ' ' || value_end[-1] == '\t')) {
      --value_end;
    }
    if (host_field) {  // checked after the loop: no call in it
      host_field = false;
      host_value = std::string_view(value, static_cast<std::size_t>(value_end - value));
    }
    if (e - p < 2 || p[0] != '\r' || p[1] != '\n') {
      return 0;
    }
    p += 2;
    new (fields + count++) header_field{rebase(name, name_len),
                                        rebase(value, static_cast<std::size_t>(value_end - value))};
  }
  const auto used = static_cast<std::size_t>(p - b);
  if (used > limits_.max_head_bytes) {
    return 0;
  }
  if (host && !known_valid_host(host_value)) {
    return 0;  // the line-by-line path answers 400
  }
  // Views must outlive the caller's input: copy the head to where the views point.
  copy_head(buf, b, used);
  // msg_.headers still holds the previous message's fields (parse_start leaves them for this
  // path): a client usually sends the same number each time, and then they are overwritten in
  // place; otherwise assign() reuses the capacity, so no allocation either way once grown.
  const header_field* const got = std::launder(fields);
  auto& headers = msg_.headers;
  if (headers.size() == count) {
    for (std::size_t i = 0; i < count; ++i) {
      headers[i] = got[i];
    }
  } else {
    headers.assign(got, got + count);
  }
  msg_.method = m;
  msg_.method_text = rebase(b, static_cast<std::size_t>(method_end - b));
  msg_.target = rebase(t, tlen);
  if (question != nullptr) {  // origin-form ("*" has no '?'): the path is the target's start
    msg_.path = rebase(t, static_cast<std::size_t>(question - t));
    msg_.query = rebase(question + 1, static_cast<std::size_t>(t + tlen - (question + 1)));
  } else {
    msg_.path = msg_.target;
  }
  msg_.version_minor = minor;
  head_len_ = line_start_ = used;
  plain = !interpreted && (host || minor == 0);
  return used;
}

bool parser::parse_start_line(std::string_view line) {
  if (kind_ == kind::request) {
    // One pass: method (tchars) SP target (no CTL/SP) SP version.
    const char* b = line.data();
    const char* e = b + line.size();
    const char* p = b;
    while (p < e && kTchar[static_cast<unsigned char>(*p)]) {
      ++p;
    }
    if (p == b || p == e) {
      return fail(400, "malformed request line"), false;
    }
    if (*p != ' ') {
      return fail(400, "bad method"), false;
    }
    std::string_view m(b, static_cast<std::size_t>(p - b));
    // Known before the rest of the line is checked: an error answer to HEAD has no body.
    msg_.method_text = m;
    msg_.method = method_from(m);
    const char* t = ++p;
    const char* question = nullptr;
    for (; p < e; ++p) {
      auto u = static_cast<unsigned char>(*p);
      if (u <= 0x20 || u == 0x7f) {
        break;
      }
      if (u == '?' && !question) {
        question = p;
      }
    }
    auto tlen = static_cast<std::size_t>(p - t);
    if (tlen > limits_.max_target_bytes) {
      return fail(414, "request target too long"), false;
    }
    if (tlen == 0) {
      return fail(400, "empty request target"), false;
    }
    if (p == e || *p != ' ') {
      return fail(400, "malformed request line"), false;
    }
    int minor = parse_version(std::string_view(p + 1, static_cast<std::size_t>(e - p - 1)));
    if (minor == -2) {
      return fail(505, "HTTP version not supported"), false;
    }
    if (minor < 0) {
      return fail(400, "malformed HTTP version"), false;
    }
    std::string_view target(t, tlen);
    if (!target_fits_method(msg_.method, target)) {
      return fail(400, "request target form not allowed for the method"), false;
    }
    msg_.target = target;
    std::string_view before_query = target;
    if (question) {
      auto q = static_cast<std::size_t>(question - t);
      before_query = target.substr(0, q);
      msg_.query = target.substr(q + 1);
    } else {
      msg_.query = {};
    }
    msg_.path = absolute_form_path(before_query);
    msg_.version_minor = minor;
    return true;
  }
  // status-line = HTTP-version SP status-code SP [ reason-phrase ]
  if (line.size() < 12 || line[8] != ' ') {
    return fail(400, "malformed status line"), false;
  }
  int minor = parse_version(line.substr(0, 8));
  if (minor == -2) {
    return fail(505, "HTTP version not supported"), false;
  }
  if (minor < 0) {
    return fail(400, "malformed HTTP version"), false;
  }
  int status = 0;
  for (std::size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') {
      return fail(400, "malformed status code"), false;
    }
    status = status * 10 + (line[i] - '0');
  }
  if (status < 100) {
    return fail(400, "malformed status code"), false;
  }
  if (line.size() > 12 && line[12] != ' ') {
    return fail(400, "malformed status line"), false;
  }
  msg_.version_minor = minor;
  msg_.status = status;
  msg_.reason = line.size() > 13 ? line.substr(13) : std::string_view{};
  return true;
}

bool parser::parse_field_line(std::string_view line, std::vector<header_field>& into) {
  if (line.front() == ' ' || line.front() == '\t') {
    return fail(400, "obsolete line folding"), false;
  }
  std::size_t colon = 0;
  while (colon < line.size() && kTchar[static_cast<unsigned char>(line[colon])]) {
    ++colon;
  }
  if (colon == 0 || colon == line.size() || line[colon] != ':') {
    return fail(400, "malformed header field"), false;
  }
  std::string_view value = http::detail::trim_ows(line.substr(colon + 1));
  if (!field_value_ok(value)) {
    return fail(400, "control character in header value"), false;
  }
  if (msg_.headers.size() + msg_.trailers.size() >= limits_.max_headers) {
    return fail(431, "too many header fields"), false;
  }
  into.push_back({line.substr(0, colon), value});
  return true;
}

parse_step parser::on_head_complete() {
  bool request = kind_ == kind::request;
  bool has_te = false;
  bool te_chunked = false;
  bool conn_close = false, conn_keep_alive = false, conn_upgrade = false, has_upgrade = false;
  bool host = false;
  // Transfer-Encoding field lines are one list (RFC 9110 §5.3): its tokens are counted over
  // all of them, and the last one must be the only one, "chunked".
  int te_tokens = 0;
  bool te_last_chunked = false;
  // Dispatch on the name's length first: most fields are none of these, and the length check
  // is one comparison instead of a case-insensitive compare per candidate.
  for (const auto& h : msg_.headers) {
    const std::string_view n = h.name;
    switch (n.size()) {
      case 4:
        if (name_is(n, "host")) {
          // RFC 9112 §3.2: more than one Host, or an invalid one, is a 400.
          if (request && (host || !valid_host(h.value))) {
            return fail(400, host ? "more than one Host header" : "invalid Host header");
          }
          host = true;
        }
        break;
      case 6:
        // An HTTP/1.0 request's 100-continue expectation is ignored (RFC 9110 §10.1.1): a
        // 1.0 client is never sent a 1xx response.
        if (request && msg_.version_minor >= 1 && name_is(n, "expect") &&
            iequals(h.value, "100-continue")) {
          msg_.expect_continue = true;
        }
        break;
      case 7:
        if (name_is(n, "upgrade")) {
          has_upgrade = true;
        }
        break;
      case 10:
        if (name_is(n, "connection")) {
          for_each_token(h.value, [&](std::string_view t) {
            if (iequals(t, "close")) {
              conn_close = true;
            } else if (iequals(t, "keep-alive")) {
              conn_keep_alive = true;
            } else if (iequals(t, "upgrade")) {
              conn_upgrade = true;
            }
            return false;
          });
        }
        break;
      case 14:
        if (name_is(n, "content-length")) {
          std::uint64_t v = 0;
          if (h.value.empty()) {
            return fail(400, "bad Content-Length");
          }
          for (char c : h.value) {
            if (c < '0' || c > '9') {
              return fail(400, "bad Content-Length");
            }
            if (v > (UINT64_MAX - 9) / 10) {
              return fail(400, "Content-Length overflow");
            }
            v = v * 10 + static_cast<unsigned>(c - '0');
          }
          if (msg_.has_content_length && v != msg_.content_length) {
            return fail(400, "conflicting Content-Length");
          }
          msg_.has_content_length = true;
          msg_.content_length = v;
        }
        break;
      case 17:
        if (name_is(n, "transfer-encoding")) {
          has_te = true;
          for_each_token(h.value, [&](std::string_view t) {
            ++te_tokens;
            te_last_chunked = iequals(t, "chunked");
            return false;
          });
        }
        break;
      default:
        break;
    }
  }
  // Only "chunked" alone is decodable here; it must be the final coding (RFC 9112 §6.3), and
  // applied once.
  te_chunked = te_tokens == 1 && te_last_chunked;
  msg_.keep_alive = msg_.version_minor >= 1 ? !conn_close : (conn_keep_alive && !conn_close);
  if (has_te && msg_.version_minor == 0) {
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (a 1.0
    // intermediary may have framed it otherwise); it is served, then the connection closes.
    msg_.keep_alive = false;
  }
  // HTTP/1.0 has no protocol switch: its Upgrade field is ignored (RFC 9110 §7.8).
  msg_.upgrade = conn_upgrade && has_upgrade && msg_.version_minor >= 1;

  if (request) {
    if (msg_.version_minor >= 1 && !host) {
      return fail(400, "missing Host header");
    }
    if (has_te) {
      // A request carrying both framings is a smuggling vector; refuse it (RFC 9112 §6.1).
      if (msg_.has_content_length) {
        return fail(400, "both Content-Length and Transfer-Encoding");
      }
      if (!te_last_chunked) {
        // RFC 9112 §6.3: without chunked as the final coding the body's length cannot be
        // determined; the server MUST answer 400 and close.
        return fail(400, "final transfer coding is not chunked");
      }
      if (!te_chunked) {
        // Chunked is final, but a coding before it (gzip, a second chunked) is not decoded
        // here: 501, as for a coding not understood (§6.1).
        return fail(501, "unsupported Transfer-Encoding");
      }
      msg_.chunked = true;
      remaining_ = 0;
      chunk_line_ = 0;
      chunk_ext_ = chunk_ext::none;
      chunk_ws_ = chunk_cr_ = false;
      state_ = state::chunk_size;
    } else if (msg_.has_content_length && msg_.content_length > 0) {
      if (msg_.content_length > limits_.max_body_bytes) {
        return fail(413, "body too large");
      }
      remaining_ = msg_.content_length;
      state_ = state::body_length;
    } else {
      state_ = state::done_pending;
    }
    return {parse_event::head, 0, {}};
  }

  // Responses (RFC 9112 §6.3).
  int s = msg_.status;
  if (head_request_ || (s >= 100 && s < 200) || s == 204 || s == 304) {
    state_ = state::done_pending;
  } else if (has_te && te_last_chunked) {
    // RFC 9112 §6.3: the final coding, chunked, frames the body; codings before it (gzip) are
    // the content's, left to the caller (the Transfer-Encoding field names them).
    msg_.chunked = true;
    remaining_ = 0;
    chunk_line_ = 0;
    chunk_ext_ = chunk_ext::none;
    chunk_ws_ = chunk_cr_ = false;
    state_ = state::chunk_size;
  } else if (!has_te && msg_.has_content_length) {
    if (msg_.content_length > limits_.max_body_bytes) {
      return fail(413, "body too large");
    }
    remaining_ = msg_.content_length;
    state_ = remaining_ ? state::body_length : state::done_pending;
  } else {
    msg_.keep_alive = false;
    state_ = state::body_eof;
  }
  return {parse_event::head, 0, {}};
}

}  // namespace evnet::http
