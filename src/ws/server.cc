#include "evnet/ws/server.h"

#include "ws/lists.h"
#include "ws/session.h"

namespace evnet::ws {

namespace {

// Everything an endpoint needs, kept alive by the router's upgrade handler.
struct endpoint {
  handler* h;
  options opts;
};

// The HTTP server of ws::server::run, which also passes the net layer's backpressure
// callbacks on to the WebSocket sessions.
class hooked_http_server final : public http::server {
 public:
  using http::server::server;
  void on_high_water(evnet::conn& c) override { (void)forward_high_water(c); }
  void on_drain(evnet::conn& c) override {
    if (!forward_drain(c)) {
      http::server::on_drain(c);  // not upgraded: a paused HTTP pipeline may resume
    }
  }
};

// The value of the list header `name`: every field with that name (ASCII case-insensitive),
// joined with ", " in the order received, since a list may be split over several fields (RFC
// 6455 §11.3.4, RFC 9110 §5.3). One field is returned as it is; `buf` holds a joined value.
// `found` tells whether any field was present; empty fields add no element.
std::string_view list_header(const http::message& req, std::string_view name, std::string& buf,
                             bool& found) {
  found = false;
  std::string_view first;
  std::size_t n = 0;
  for (const http::header_field& f : req.headers) {
    if (!http::iequals(f.name, name)) {
      continue;
    }
    found = true;
    if (f.value.empty()) {
      continue;
    }
    if (n++ == 0) {
      first = f.value;
      continue;
    }
    if (n == 2) {
      buf.assign(first);
    }
    buf.append(", ").append(f.value);
  }
  return n > 1 ? std::string_view(buf) : first;
}

}  // namespace

bool forward_high_water(evnet::conn& c) {
  detail::session* s = detail::session::of(c);
  if (!s) {
    return false;
  }
  s->high_water();
  return true;
}

bool forward_drain(evnet::conn& c) {
  detail::session* s = detail::session::of(c);
  if (!s) {
    return false;
  }
  s->drained();
  return true;
}

void add_endpoint(http::router& r, std::string path, handler& h, const options& o) {
  auto ep = std::make_shared<endpoint>(endpoint{&h, o});
  r.upgrade(std::move(path),
            [ep](evnet::conn& c, const http::message& req,
                 std::string& out) -> std::unique_ptr<http::upgraded_protocol> {
              auto refuse = [&](int status, std::string_view reason) {
                const std::size_t at = out.size();
                write_upgrade_refusal(out, status, reason);
                if (req.method == http::method::head) {
                  // RFC 9110 §9.3.2: a response to HEAD has no content (its Content-Length
                  // still says the size); the client would take the text for a next response.
                  out.resize(out.find("\r\n\r\n", at) + 4);
                }
              };
              upgrade_check chk = check_upgrade(req);
              if (chk.status != 0) {
                refuse(chk.status, chk.reason);
                return nullptr;
              }
              std::string protocol;
              std::string joined_protocols, joined_extensions;
              bool has_protocols = false;
              std::string_view offered =
                  list_header(req, "sec-websocket-protocol", joined_protocols, has_protocols);
              if (has_protocols && ep->opts.select_protocol) {
                protocol = ep->opts.select_protocol(offered);
                if (!protocol.empty() && !detail::offered_protocol(offered, protocol)) {
                  // RFC 6455 §4.2.2: the server selects one of the values the client offered,
                  // or none. Anything else is the selector's bug (and a header injection if it
                  // holds CR LF): refused here rather than sent.
                  refuse(500, "subprotocol not offered by the client");
                  return nullptr;
                }
              }
              std::string ext;
              std::optional<deflate_params> deflate;
              bool has_ext = false;
              std::string_view ext_offer =
                  list_header(req, "sec-websocket-extensions", joined_extensions, has_ext);
              if (has_ext && ep->opts.permessage_deflate) {
                deflate = negotiate_deflate(ext_offer, ext, ep->opts.deflate);
              }
              write_upgrade_response(out, chk.key, protocol, ext);
              return std::make_unique<detail::session>(
                  c, *ep->h, ep->opts, role::server, std::move(protocol), std::move(ext),
                  std::string(req.target), deflate ? &*deflate : nullptr);
            });
}

server::server(handler& h, options o, std::string path)
    : handler_(h), opts_(std::move(o)), path_(std::move(path)) {}

server::~server() = default;

std::error_code server::run(const std::vector<std::string>& addresses, const engine_options& eo) {
  http::router r = router_;
  add_endpoint(r, path_, handler_, opts_);
  // A plain request for the endpoint (a browser or curl, or an upgrade whose Connection field a
  // proxy stripped) was a 404, as if nothing were there. RFC 9110 §15.5.22: 426 Upgrade
  // Required, with the Upgrade field naming the protocol (and "upgrade" in Connection, §7.8),
  // as Python's websockets answers. Unless a GET route of the application serves the path.
  int status = 0;
  if (r.find(http::method::get, path_, status) == nullptr) {
    (void)r.try_add(http::method::get, path_, [](const http::request&, http::response& res) {
      res.start(426)
          .header("Upgrade", "websocket")
          .header("Connection", "upgrade")
          .header("Sec-WebSocket-Version", "13")
          .header("Content-Type", "text/plain")
          .body(
              "this is a WebSocket endpoint: the request must be a WebSocket "
              "upgrade (Upgrade: websocket, Connection: Upgrade)\n");
    });
  }
  hooked_http_server srv(std::move(r), http_opts_);
  running_.store(&srv, std::memory_order_release);
  if (stop_requested_.load(std::memory_order_acquire)) {
    srv.stop();
  }
  std::error_code ec = srv.run(addresses, eo);
  running_.store(nullptr, std::memory_order_release);
  return ec;
}

void server::stop() noexcept {
  stop_requested_.store(true, std::memory_order_release);
  if (http::server* s = running_.load(std::memory_order_acquire)) {
    s->stop();
  }
}

}  // namespace evnet::ws
