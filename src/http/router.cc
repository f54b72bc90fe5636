// The router: exact routes (a linear scan, unchanged by patterns) and the pattern tree for
// `:name` and `*name` segments. See the router comment in evnet/http/server.h for the rules.
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "evnet/error.h"
#include "evnet/http/server.h"

namespace evnet::http {

namespace {

// Paths and segments are compared inline with overlapping word loads: a call to memcmp costs
// more than the work for strings of a few bytes. Forced inline: with two callers (the exact
// routes and the pattern tree) the compiler would otherwise make it a call on the exact-path
// lookup.
[[gnu::always_inline]] inline bool same_bytes(const char* a, const char* b,
                                              std::size_t n) noexcept {
  if (n >= 8) {
    std::uint64_t x, y;
    for (std::size_t i = 0; i + 8 < n; i += 8) {
      std::memcpy(&x, a + i, 8);
      std::memcpy(&y, b + i, 8);
      if (x != y) {
        return false;
      }
    }
    std::memcpy(&x, a + n - 8, 8);
    std::memcpy(&y, b + n - 8, 8);
    return x == y;
  }
  if (n >= 4) {
    std::uint32_t x0, y0, x1, y1;
    std::memcpy(&x0, a, 4);
    std::memcpy(&y0, b, 4);
    std::memcpy(&x1, a + n - 4, 4);
    std::memcpy(&y1, b + n - 4, 4);
    return x0 == y0 && x1 == y1;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) {
      return false;
    }
  }
  return true;
}

// A path is a pattern when some segment starts with ':' or '*'. Only segments count (the text
// after a '/'), so an exact path such as "*" (OPTIONS *) stays exact.
bool is_pattern(std::string_view path) noexcept {
  for (std::size_t i = 0; i + 1 < path.size(); ++i) {
    if (path[i] == '/' && (path[i + 1] == ':' || path[i + 1] == '*')) {
      return true;
    }
  }
  return false;
}

bool valid_param_name(std::string_view name) noexcept {
  if (name.empty()) {
    return false;
  }
  for (char ch : name) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

std::string_view method_token(http::method m) noexcept {
  switch (m) {
    case method::get:
      return "GET";
    case method::head:
      return "HEAD";
    case method::post:
      return "POST";
    case method::put:
      return "PUT";
    case method::del:
      return "DELETE";
    case method::options:
      return "OPTIONS";
    case method::patch:
      return "PATCH";
    case method::connect:
      return "CONNECT";
    case method::trace:
      return "TRACE";
    case method::other:
      break;
  }
  return "(other method)";
}

// One segment of a pattern, as parsed by router::add_pattern.
struct pattern_segment {
  enum class kind : std::uint8_t { literal, param, catch_all } type;
  std::string_view text;  // the literal, or the name without ':' / '*'
};

}  // namespace

router& router::add(http::method m, std::string path, route_handler h) {
  std::string why;
  if (try_add(m, std::move(path), std::move(h), &why)) {
    throw std::invalid_argument(why);
  }
  return *this;
}

std::error_code router::try_add(http::method m, std::string path, route_handler h,
                                std::string* why) {
  return add_target(m, std::move(path), target{std::move(h), {}}, why);
}

router& router::stream(http::method m, std::string path, stream_handler h) {
  std::string why;
  if (try_stream(m, std::move(path), std::move(h), &why)) {
    throw std::invalid_argument(why);
  }
  return *this;
}

std::error_code router::try_stream(http::method m, std::string path, stream_handler h,
                                   std::string* why) {
  if (!h) {
    if (why != nullptr) {
      *why = "evnet::http::router: stream route " + std::string(method_token(m)) + ' ' + path +
             " refused: empty handler";
    }
    return make_error_code(errc::invalid_argument);
  }
  // What find() hands to a caller that runs routes itself: the reader over the buffered body.
  route_handler plain = [h](const request& req, response& res) {
    std::unique_ptr<body_reader> reader = h(req, res);
    if (!reader || res.started()) {
      return;
    }
    if (!req.body.empty()) {
      reader->on_data(req.body, res);
      if (res.started()) {
        return;
      }
    }
    reader->on_end(req, res);
  };
  std::error_code ec = add_target(m, std::move(path), target{std::move(plain), std::move(h)}, why);
  if (!ec) {
    has_streams_ = true;
  }
  return ec;
}

std::error_code router::add_target(http::method m, std::string path, target t, std::string* why) {
  std::string reason;
  if (m == method::other) {
    reason = "method::other stands for any unrecognised method and is never matched";
  } else if (is_pattern(path)) {
    reason = add_pattern(m, path, t);
  } else {
    for (const auto& r : routes_) {
      if (r.method == m && r.path == path) {
        reason = "this method and path were already added";
        break;
      }
    }
    if (reason.empty()) {
      routes_.push_back({m, std::move(path), std::move(t)});
      return {};
    }
  }
  if (reason.empty()) {
    return {};
  }
  if (why != nullptr) {
    *why = "evnet::http::router: route ";
    *why += method_token(m);
    *why += ' ';
    *why += path;
    *why += " refused: ";
    *why += reason;
  }
  return make_error_code(errc::invalid_argument);
}

// Checks the whole pattern against its own rules and the tree before changing anything, so a
// refused pattern leaves the router as it was. Returns the reason for a refusal, or "".
std::string router::add_pattern(http::method m, std::string_view path, target& h) {
  if (path.empty() || path.front() != '/') {
    return "a pattern must start with '/'";
  }
  // 1. Split and check the pattern on its own.
  std::vector<pattern_segment> segments;
  std::size_t params = 0;
  std::string_view rest = path.substr(1);
  for (;;) {
    std::size_t cut = rest.find('/');
    std::string_view seg = rest.substr(0, cut);
    if (!segments.empty() && segments.back().type == pattern_segment::kind::catch_all) {
      return "the catch-all *" + std::string(segments.back().text) + " must be the last segment";
    }
    pattern_segment ps{pattern_segment::kind::literal, seg};
    if (!seg.empty() && (seg.front() == ':' || seg.front() == '*')) {
      ps.type =
          seg.front() == ':' ? pattern_segment::kind::param : pattern_segment::kind::catch_all;
      ps.text = seg.substr(1);
      if (!valid_param_name(ps.text)) {
        return "parameter '" + std::string(seg) + "' needs a name of letters, digits, '_' or '-'";
      }
      for (const auto& before : segments) {
        if (before.type != pattern_segment::kind::literal && before.text == ps.text) {
          return "parameter name '" + std::string(ps.text) + "' is used twice";
        }
      }
      if (++params > route_params::kMax) {
        return "more than " + std::to_string(route_params::kMax) + " parameters";
      }
    }
    segments.push_back(ps);
    if (cut == std::string_view::npos) {
      break;
    }
    rest = rest.substr(cut + 1);
  }

  // 2. Walk the existing tree along the pattern: a parameter or catch-all of another name at the
  // same position, or the same method already at the end, is a conflict.
  std::uint32_t at = nodes_.empty() ? kNoNode : 0;
  for (std::size_t i = 0; i < segments.size() && at != kNoNode; ++i) {
    const node& n = nodes_[at];
    const pattern_segment& ps = segments[i];
    std::uint32_t next = kNoNode;
    switch (ps.type) {
      case pattern_segment::kind::literal:
        for (const auto& lit : n.literals) {
          if (lit.first == ps.text) {
            next = lit.second;
            break;
          }
        }
        break;
      case pattern_segment::kind::param:
        if (n.param_child != kNoNode) {
          if (n.param_name != ps.text) {
            return "parameter :" + std::string(ps.text) +
                   " is at the position of :" + n.param_name + " in an earlier pattern";
          }
          next = n.param_child;
        }
        break;
      case pattern_segment::kind::catch_all:
        if (!n.catch_all_name.empty() && n.catch_all_name != ps.text) {
          return "catch-all *" + std::string(ps.text) + " is at the position of *" +
                 n.catch_all_name + " in an earlier pattern";
        }
        for (const auto& ph : n.catch_all_handlers) {
          if (ph.method == m) {
            return "this method and pattern were already added";
          }
        }
        break;
    }
    if (i + 1 == segments.size() && ps.type != pattern_segment::kind::catch_all &&
        next != kNoNode) {
      for (const auto& ph : nodes_[next].handlers) {
        if (ph.method == m) {
          return "this method and pattern were already added";
        }
      }
    }
    at = next;
  }

  // 3. Insert. nodes_ may reallocate while children are added, so nodes are named by index.
  if (nodes_.empty()) {
    nodes_.emplace_back();
  }
  at = 0;
  for (const pattern_segment& ps : segments) {
    switch (ps.type) {
      case pattern_segment::kind::literal: {
        std::uint32_t next = kNoNode;
        for (const auto& lit : nodes_[at].literals) {
          if (lit.first == ps.text) {
            next = lit.second;
            break;
          }
        }
        if (next == kNoNode) {
          next = static_cast<std::uint32_t>(nodes_.size());
          nodes_.emplace_back();
          nodes_[at].literals.emplace_back(std::string(ps.text), next);
        }
        at = next;
        break;
      }
      case pattern_segment::kind::param:
        if (nodes_[at].param_child == kNoNode) {
          auto child = static_cast<std::uint32_t>(nodes_.size());
          nodes_.emplace_back();
          nodes_[at].param_child = child;
          nodes_[at].param_name = std::string(ps.text);
        }
        at = nodes_[at].param_child;
        break;
      case pattern_segment::kind::catch_all:
        nodes_[at].catch_all_name = std::string(ps.text);
        nodes_[at].catch_all_handlers.push_back({m, std::move(h)});
        return {};
    }
  }
  nodes_[at].handlers.push_back({m, std::move(h)});
  return {};
}

router& router::upgrade(std::string path, upgrade_handler h) {
  upgrades_.emplace_back(std::move(path), std::move(h));
  return *this;
}

// The exact routes, in the order added (a linear scan: a server has few, and most requests hit
// one of them). Sets 405 when the path is routed for another method only, 501 for a method
// the parser does not recognise (tested on a miss only: no route has method::other).
const router::target* router::find_exact(http::method m, std::string_view path,
                                         int& status) const noexcept {
  status = 404;
  for (const auto& r : routes_) {
    if (r.path.size() != path.size() || !same_bytes(r.path.data(), path.data(), path.size())) {
      continue;
    }
    if (r.method == m && m != method::other) {
      return &r.handler;
    }
    status = 405;
  }
  if (m == method::other) {
    // RFC 9110 §9.1: a method the server does not recognise is 501 Not Implemented, not a 405
    // (for a known method the resource does not allow) nor a 404.
    status = 501;
  }
  return nullptr;
}

const router::target* router::find_target(http::method m, std::string_view path, int& status,
                                          route_params& params) const noexcept {
  params.size_ = 0;
  const target* t = find_exact(m, path, status);
  if (t == nullptr && has_patterns()) {
    t = find_pattern(m, path, status, params);
  }
  return t;
}

const route_handler* router::find(http::method m, std::string_view path, int& status,
                                  route_params& params) const noexcept {
  const target* t = find_target(m, path, status, params);
  return t != nullptr ? &t->plain : nullptr;
}

// No exact route of method `m` matched: the pattern tree, which may turn a 404 into a 405.
const router::target* router::find_pattern(http::method m, std::string_view path, int& status,
                                           route_params& params) const noexcept {
  params.size_ = 0;
  bool other_method = false;
  const target* t = match(0, path, m, params, other_method);
  if (t == nullptr && other_method) {
    status = 405;  // match() left `params` empty: each failed branch takes its capture back
  }
  if (m == method::other) {
    status = 501;  // as find_exact
  }
  return t;
}

const route_handler* router::find(http::method m, std::string_view path,
                                  int& status) const noexcept {
  route_params unused;
  return find(m, path, status, unused);
}

// Depth-first, in precedence order (literal, then `:name`, then `*name`), backtracking when a
// branch ends without a route of method `m`, so the first route found is the one the class
// comment's precedence picks. `rest` is the part of the path still to match, starting at its
// '/' (or empty at the end). `other_method` is set when some route of another method matches,
// which turns the 404 into a 405 if nothing of method `m` does. Every node on a path from the
// root belongs to a pattern with at most route_params::kMax parameters, so `params` cannot
// overflow; the bound is checked anyway.
const router::target* router::match(std::uint32_t at, std::string_view rest, http::method m,
                                    route_params& params, bool& other_method) const noexcept {
  const node& n = nodes_[at];
  if (rest.empty()) {
    for (const auto& ph : n.handlers) {
      if (ph.method == m && m != method::other) {
        return &ph.handler;
      }
      other_method = true;
    }
    return nullptr;
  }
  if (rest.front() != '/') {
    return nullptr;  // e.g. "*" or an absolute-form target: only exact routes can match
  }
  std::string_view tail = rest.substr(1);  // what a catch-all here would capture
  std::size_t cut = tail.find('/');
  std::string_view segment = tail.substr(0, cut);
  std::string_view next = cut == std::string_view::npos ? std::string_view{} : tail.substr(cut);
  for (const auto& lit : n.literals) {
    if (lit.first.size() == segment.size() &&
        same_bytes(lit.first.data(), segment.data(), segment.size())) {
      if (const target* h = match(lit.second, next, m, params, other_method)) {
        return h;
      }
      break;
    }
  }
  std::size_t mark = params.size_;
  if (n.param_child != kNoNode && !segment.empty() && mark < route_params::kMax) {
    params.entries_[mark] = {n.param_name, segment};
    params.size_ = mark + 1;
    if (const target* h = match(n.param_child, next, m, params, other_method)) {
      return h;
    }
    params.size_ = mark;
  }
  if (mark < route_params::kMax) {
    for (const auto& ph : n.catch_all_handlers) {
      if (ph.method == m && m != method::other) {
        params.entries_[mark] = {n.catch_all_name, tail};
        params.size_ = mark + 1;
        return &ph.handler;
      }
      other_method = true;
    }
  }
  return nullptr;
}

std::string router::allowed(std::string_view path) const {
  // Asks find() once per method rather than walking the routes a second way, so the list
  // cannot disagree with what a request of each method would get.
  static constexpr method kMethods[] = {method::get,   method::head,    method::post,
                                        method::put,   method::del,     method::options,
                                        method::patch, method::connect, method::trace};
  std::string out;
  bool get = false;
  for (const method m : kMethods) {
    int status = 0;
    route_params params;
    bool routed = find(m, path, status, params) != nullptr;
    if (m == method::get) {
      get = routed;
    } else if (m == method::head) {
      routed = routed || get;  // the server answers HEAD with the GET route
    }
    if (routed) {
      if (!out.empty()) {
        out += ", ";
      }
      out += method_token(m);
    }
  }
  return out;
}

const upgrade_handler* router::find_upgrade(std::string_view path) const noexcept {
  for (const auto& u : upgrades_) {
    if (u.first == path) {
      return &u.second;
    }
  }
  return nullptr;
}

}  // namespace evnet::http
