#include "evnet/http/server.h"

#include <any>

#include "evnet/conn.h"
#include "evnet/loop.h"
#include "evnet/ring_buffer.h"

namespace evnet::http {

// ---- response ----

response& response::start(int status, std::string_view reason) {
  started_ = true;
  writer_.status(status, reason).add_date();
  if (last_) {
    writer_.close_connection();
  } else if (keep_alive_10_) {
    writer_.header("Connection", "keep-alive");
  }
  return *this;
}

response& response::header(std::string_view name, std::string_view value) {
  writer_.header(name, value);
  return *this;
}

void response::body(std::string_view body) {
  if (head_request_) {
    writer_.end_headers(body.size());
  } else {
    writer_.body(body);
  }
  finished_ = true;
}

void response::begin_chunked() {
  writer_.begin_chunked();
}

void response::chunk(std::string_view data) {
  if (!head_request_) {
    writer_.chunk(data);
  }
}

void response::end_chunked() {
  if (!head_request_) {
    writer_.end_chunked();
  }
  finished_ = true;
}

// ---- router ----

router& router::add(http::method m, std::string path, route_handler h) {
  routes_.push_back({m, std::move(path), std::move(h)});
  return *this;
}

router& router::upgrade(std::string path, upgrade_handler h) {
  upgrades_.emplace_back(std::move(path), std::move(h));
  return *this;
}

const route_handler* router::find(http::method m, std::string_view path,
                                  int& status) const noexcept {
  status = 404;
  for (const auto& r : routes_) {
    if (r.path != path) {
      continue;
    }
    if (r.method == m && m != method::other) {
      return &r.handler;
    }
    status = 405;
  }
  return nullptr;
}

const upgrade_handler* router::find_upgrade(std::string_view path) const noexcept {
  for (const auto& u : upgrades_) {
    if (u.first == path) {
      return &u.second;
    }
  }
  return nullptr;
}

// ---- server ----

struct server::session {
  explicit session(const parser_limits& l) : parser(l) {}
  request_parser parser;
  std::string out;   // responses staged during one batch, written with one call
  std::string body;  // request body when buffer_body
  std::unique_ptr<upgraded_protocol> upgraded;
  bool closing = false;    // the last response is staged; further input is ignored
  bool lingering = false;  // an error was answered; input is drained until EOF or linger ends
  std::chrono::steady_clock::time_point last_activity;
  std::chrono::steady_clock::time_point head_start;
  timer_id timer = 0;
};

server::session* server::session_of(evnet::conn& c) noexcept {
  auto* p = std::any_cast<session*>(&c.context());
  return p ? *p : nullptr;
}

server::server(router r, server_options opts) : router_(std::move(r)), opts_(std::move(opts)) {}
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
  auto* s = new session(opts_.limits);
  s->out.reserve(4096);
  c.context() = s;
  s->last_activity = s->head_start = c.owner().now();
  auto first = opts_.header_timeout;
  if (opts_.keep_alive_timeout.count() > 0 &&
      (first.count() == 0 || opts_.keep_alive_timeout < first)) {
    first = opts_.keep_alive_timeout;
  }
  if (first.count() > 0) {
    arm_timer(c, *s, first);
  }
  return action::none;
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
  if (s.lingering || s.closing) {
    c.close();
    return;
  }
  auto now = c.owner().now();
  steady_clock::time_point deadline = steady_clock::time_point::max();
  if (!s.parser.idle() && !s.parser.in_body()) {
    if (opts_.header_timeout.count() > 0) {
      deadline = s.head_start + opts_.header_timeout;
      if (now >= deadline) {
        answer_error(c, s, 408, "header timeout");
        (void)c.write(s.out);
        s.out.clear();
        (void)c.shutdown_write();
        arm_timer(c, s, opts_.linger);
        return;
      }
    }
  } else if (s.parser.idle() && opts_.keep_alive_timeout.count() > 0) {
    deadline = s.last_activity + opts_.keep_alive_timeout;
    if (now >= deadline) {
      c.close();
      return;
    }
  }
  auto wait =
      deadline == steady_clock::time_point::max()
          ? (opts_.header_timeout.count() > 0 ? opts_.header_timeout : opts_.keep_alive_timeout)
          : duration_cast<milliseconds>(deadline - now) + milliseconds(1);
  if (wait.count() <= 0) {
    wait = milliseconds(1);
  }
  arm_timer(c, s, wait);
}

void server::answer_error(evnet::conn&, session& s, int status, std::string_view reason) {
  response res(s.out, false, true, false);
  res.start(status).header("Content-Type", "text/plain");
  std::string body(reason);
  body.push_back('\n');
  res.body(body);
  s.lingering = true;
}

void server::dispatch(evnet::conn& c, session& s) {
  const http::message& m = s.parser.message();
  bool last = !m.keep_alive;
  response res(s.out, m.method == method::head, last, !last && m.version_minor == 0);
  int status = 404;
  const route_handler* h = router_.find(m.method, m.path, status);
  if (!h && m.method == method::head) {
    h = router_.find(method::get, m.path, status);
  }
  if (!h) {
    res.start(status).header("Content-Type", "text/plain");
    res.body(status == 405 ? "Method Not Allowed\n" : "Not Found\n");
  } else {
    std::size_t mark = s.out.size();
    bool failed = false;
    try {
      (*h)(request{m, s.body, c}, res);
    } catch (...) {
      // No exception may cross the loop: answer 500 instead of what the handler left.
      failed = true;
    }
    if (failed || !res.started()) {
      s.out.resize(mark);
      response r500(s.out, false, true, false);
      r500.start(500).header("Content-Type", "text/plain").body("Internal Server Error\n");
      last = true;
    } else if (!res.finished()) {
      // A handler that started but did not finish a response leaves the stream unframed;
      // the only honest repair is to end the connection after what was written.
      last = true;
    }
  }
  if (last) {
    s.closing = true;
  }
}

action server::handle_input(evnet::conn& c, session& s) {
  input_view v = c.peek();
  std::size_t total = 0;
  bool stop = false;
  auto now = c.owner().now();
  s.last_activity = now;
  if (s.parser.idle()) {
    s.head_start = now;
  }
  for (std::string_view piece : {as_chars(v.first), as_chars(v.second)}) {
    while (!stop) {
      parse_step st = s.parser.parse(piece);
      piece.remove_prefix(st.consumed);
      total += st.consumed;
      switch (st.event) {
        case parse_event::need_more:
          break;
        case parse_event::head: {
          const http::message& m = s.parser.message();
          if (m.upgrade) {
            if (const upgrade_handler* up = router_.find_upgrade(m.path)) {
              s.upgraded = (*up)(c, m, s.out);
              if (!s.upgraded) {
                s.closing = true;
              }
              stop = true;
              break;
            }
          }
          s.body.clear();
          if (m.expect_continue && s.parser.in_body()) {
            s.out.append("HTTP/1.1 100 Continue\r\n\r\n");
          }
          continue;
        }
        case parse_event::body:
          if (opts_.buffer_body) {
            s.body.append(st.body);
          }
          continue;
        case parse_event::done:
          dispatch(c, s);
          if (s.closing) {
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
    (void)c.write(s.out);
    s.out.clear();
  }
  if (s.upgraded) {
    if (s.timer) {
      c.owner().cancel(s.timer), s.timer = 0;
    }
    s.upgraded->on_upgraded(c, s.out);
    if (!s.out.empty()) {
      (void)c.write(s.out);
      s.out.clear();
    }
    if (c.inbound_size() > 0) {
      return s.upgraded->on_traffic(c);
    }
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

action server::on_read_eof(evnet::conn& c) {
  (void)c;
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
  if (s->timer) {
    c.owner().cancel(s->timer);
  }
  c.context().reset();
  delete s;
}

}  // namespace evnet::http
