#include "evnet/ws/client.h"

#include <future>
#include <thread>

#include "evnet/ring_buffer.h"
#include "ws/lists.h"
#include "ws/session.h"
#include "ws/url.h"

namespace evnet::ws {
namespace {

// RFC 6455 §4.1 / §11.3.4: the offer is a list of tokens. Anything else — a CR or LF above
// all — would write the application's own lines into the request.
bool valid_protocol_offer(std::string_view offer) {
  return offer.empty() ||
         !detail::any_item(offer, [](std::string_view t) { return !http::detail::is_token(t); });
}

}  // namespace

bool detail::parse_ws_url(std::string_view url, ws_url& out) {
  // The scheme is case-insensitive (RFC 3986 §3.1): "WS://h/" is the same URI as "ws://h/".
  if (!http::iequals(url.substr(0, 5), "ws://")) {
    return false;
  }
  url.remove_prefix(5);
  // What goes into the request line and Host: no space or control byte (which could inject
  // headers), and no fragment (RFC 6455 §3: a ws URI has none).
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '#') {
      return false;
    }
  }
  // The authority ends at the path or, when the path is empty, at the query (RFC 6455 §3:
  // "ws://host:port?q" is valid, and its request target is "/?q").
  const std::size_t slash = url.find_first_of("/?");
  const std::string_view hp = url.substr(0, slash);
  // host, then ":port" or nothing; an IPv6 literal keeps its brackets in both fields.
  std::size_t host_end = std::string_view::npos;
  if (!hp.empty() && hp.front() == '[') {
    const std::size_t close = hp.find(']');
    if (close == std::string_view::npos || close == 1) {
      return false;  // unclosed, or "[]"
    }
    host_end = close + 1;
    if (host_end < hp.size() && hp[host_end] != ':') {
      return false;
    }
  } else {
    host_end = hp.find(':');
  }
  const std::string_view host = hp.substr(0, host_end);
  std::string_view port =
      host_end < hp.size() ? hp.substr(host_end + 1) : std::string_view{};  // after the ':'
  if (host.empty()) {
    return false;
  }
  for (char c : port) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  // RFC 3986 §3.2.3: an empty port is the scheme's default; leading zeros name the same port.
  while (port.size() > 1 && port.front() == '0') {
    port.remove_prefix(1);
  }
  if (port.size() > 5 || (port.size() == 5 && port > "65535")) {
    return false;
  }
  // RFC 6455 §4.1 (item 4 of the client's requirements): the Host is the host, "followed by
  // ':' and the port if the port is not the default" (80 for ws), as browsers send it.
  const bool default_port = port.empty() || port == "80";
  out.host = std::string(host);
  if (!default_port) {
    out.host += ':';
    out.host += port;
  }
  out.dial = std::string(host) + ":" + (default_port ? std::string("80") : std::string(port));
  if (slash == std::string_view::npos) {
    out.target = "/";
  } else if (url[slash] == '?') {
    out.target = "/" + std::string(url.substr(slash));
  } else {
    out.target = std::string(url.substr(slash));
  }
  return true;
}

namespace {

// Per-connection client state, kept in the conn's context slot.
struct client_conn {
  std::string url;
  detail::ws_url where;
  std::string key;
  http::response_parser parser;
  std::unique_ptr<detail::session> session;
  bool failed = false;
  timer_id timer = 0;
};

}  // namespace

class client::impl final : public evnet::handler {
 public:
  impl(ws::handler& h, client_options o) : h_(h), opts_(std::move(o)) {}

  void on_boot(evnet::engine&) override { booted_.set_value(); }

  action on_open(evnet::conn& c) override {
    auto* st = state(c);
    if (!st) {
      return action::close;
    }
    st->key = generate_key();
    std::string req;
    write_client_request(req, st->where.host, st->where.target, st->key, opts_.protocols,
                         opts_.permessage_deflate ? deflate_offer(opts_.deflate) : std::string());
    (void)c.write(req);
    if (opts_.handshake_timeout.count() > 0) {
      std::weak_ptr<evnet::conn> weak = c.shared_from_this();
      st->timer = c.owner().run_after(opts_.handshake_timeout, [this, weak] {
        auto sp = weak.lock();
        if (!sp) {
          return;
        }
        auto* s = state(*sp);
        if (!s || s->session || s->failed) {
          return;
        }
        s->timer = 0;
        fail(*sp, *s, "handshake timed out");
        sp->close();
      });
    }
    return action::none;
  }

  action on_traffic(evnet::conn& c) override {
    auto* st = state(c);
    if (!st || st->failed) {
      c.discard();
      return action::close;
    }
    if (st->session) {
      return st->session->on_traffic(c);
    }
    input_view v = c.peek();
    std::size_t consumed = 0;
    for (std::string_view piece : {as_chars(v.first), as_chars(v.second)}) {
      for (;;) {
        http::parse_step s = st->parser.parse(piece);
        piece.remove_prefix(s.consumed);
        consumed += s.consumed;
        if (s.event == http::parse_event::need_more) {
          break;
        }
        if (s.event == http::parse_event::error) {
          fail(c, *st, "malformed handshake response");
          return action::close;
        }
        if (s.event == http::parse_event::head) {
          c.discard(consumed);
          return upgrade(c, *st);
        }
      }
    }
    c.discard(consumed);
    return action::none;
  }

  void on_high_water(evnet::conn& c) override {
    auto* st = state(c);
    if (st && st->session) {
      st->session->high_water();
    }
  }

  void on_drain(evnet::conn& c) override {
    auto* st = state(c);
    if (st && st->session) {
      st->session->drained();
    }
  }

  action on_stopping(evnet::conn& c) override {
    auto* st = state(c);
    return st && st->session ? st->session->on_stopping(c) : action::close;
  }

  void on_close(evnet::conn& c, std::error_code reason) override {
    auto* st = state(c);
    if (!st) {
      return;
    }
    if (st->timer) {
      c.owner().cancel(st->timer), st->timer = 0;
    }
    if (st->session) {
      st->session->on_close(c, reason);
    } else if (!st->failed) {
      fail(c, *st, "connection closed during the handshake");
    }
    st->session.reset();
    c.context().reset();
  }

  std::error_code connect(std::string_view url) {
    auto st = std::make_shared<client_conn>();
    st->url = std::string(url);
    if (!detail::parse_ws_url(url, st->where)) {
      return errc::bad_address;
    }
    if (!valid_protocol_offer(opts_.protocols)) {
      return errc::invalid_argument;
    }
    evnet::dial_options d;
    d.context = st;
    d.on_result = [this, st](evnet::conn* c, std::error_code ec) {
      if (!c || ec) {
        h_.on_connect_failed(st->url, ec ? ec.message() : "connect failed");
      }
    };
    return engine_.dial("tcp://" + st->where.dial, std::move(d));
  }

  std::error_code start() {
    auto ready = booted_.get_future();
    std::promise<std::error_code> result;
    auto run_result = result.get_future();
    thread_ = std::thread([this, p = std::move(result)]() mutable {
      p.set_value(engine_.run(*this, {}, opts_.engine));
    });
    // Either the engine boots, or run() fails before boot.
    for (;;) {
      if (ready.wait_for(std::chrono::milliseconds(5)) == std::future_status::ready) {
        return {};
      }
      if (run_result.wait_for(std::chrono::milliseconds(0)) == std::future_status::ready) {
        thread_.join();
        std::error_code ec = run_result.get();
        return ec ? ec : make_error_code(errc::stopped);
      }
    }
  }

  void stop() {
    engine_.stop();
    if (thread_.joinable()) {
      thread_.join();
    }
  }

 private:
  static client_conn* state(evnet::conn& c) {
    auto* p = std::any_cast<std::shared_ptr<client_conn>>(&c.context());
    return p ? p->get() : nullptr;
  }

  void fail(evnet::conn&, client_conn& st, std::string_view what) {
    if (st.failed) {
      return;
    }
    st.failed = true;
    h_.on_connect_failed(st.url, what);
  }

  action upgrade(evnet::conn& c, client_conn& st) {
    const http::message& m = st.parser.message();
    std::string_view problem = check_server_response(m, st.key);
    if (!problem.empty()) {
      fail(c, st, problem);
      return action::close;
    }
    std::optional<deflate_params> deflate;
    // RFC 6455 §9.1: several Sec-WebSocket-Extensions fields are one list (RFC 9110 §5.3), so
    // every field is checked: an extension or parameter we did not offer in a second field
    // fails the connection as it does in the first.
    bool has_ext = false;
    std::string ext;
    for (const http::header_field& f : m.headers) {
      if (http::iequals(f.name, "sec-websocket-extensions")) {
        if (!f.value.empty()) {
          ext += ext.empty() ? "" : ", ";
          ext += f.value;
        }
        has_ext = true;
      }
    }
    if (has_ext) {
      if (opts_.permessage_deflate) {
        deflate = parse_deflate_response(ext, opts_.deflate);
      }
      if (!deflate) {
        fail(c, st, "server accepted an extension we did not offer");
        return action::close;
      }
    }
    bool has_protocol = false;
    std::string protocol(m.header("sec-websocket-protocol", &has_protocol));
    if (has_protocol && !detail::offered_protocol(opts_.protocols, protocol)) {
      // RFC 6455 §4.1: a subprotocol the client did not offer fails the connection.
      fail(c, st, "server selected a subprotocol we did not offer");
      return action::close;
    }
    if (st.timer) {
      c.owner().cancel(st.timer), st.timer = 0;
    }
    st.session =
        std::make_unique<detail::session>(c, h_, opts_, role::client, protocol, std::move(ext),
                                          st.where.target, deflate ? &*deflate : nullptr);
    std::string out;
    st.session->on_upgraded(c, out);
    if (!out.empty()) {
      (void)c.write(out);
    }
    if (c.inbound_size() > 0) {
      return st.session->on_traffic(c);
    }
    return action::none;
  }

  ws::handler& h_;
  client_options opts_;
  evnet::engine engine_;
  std::promise<void> booted_;
  std::thread thread_;
};

client::client(handler& h, client_options o) : impl_(std::make_unique<impl>(h, std::move(o))) {}
client::~client() {
  impl_->stop();
}
std::error_code client::start() {
  return impl_->start();
}
std::error_code client::connect(std::string_view url) {
  return impl_->connect(url);
}
void client::stop() {
  impl_->stop();
}

}  // namespace evnet::ws
