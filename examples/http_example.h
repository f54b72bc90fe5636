// Shared by the HTTP examples (http_server, upload_server): how they run their server.
#pragma once

#include <csignal>
#include <cstdio>
#include <string>
#include <system_error>
#include <utility>

#include "evnet/engine.h"
#include "evnet/http/server.h"
#include "example_args.h"

namespace example {

/// Serves `r` on 0.0.0.0:`port` with `loops` reactor threads (0 = one per core; one loop gets
/// a single acceptor, more get SO_REUSEPORT listeners), prints "listening on <port>" once bound
/// and stops on SIGINT/SIGTERM. Returns main's exit status (1 after printing run()'s error,
/// prefixed with `name`).
inline int serve_http(const char* name, evnet::http::router r, evnet::http::server_options opts,
                      unsigned long long port, unsigned long long loops) {
  opts.on_boot = [](evnet::engine& e) {
    auto addrs = e.listen_addresses();
    announce(std::to_string(addrs.empty() ? 0u : unsigned{addrs[0].port()}));
  };
  evnet::http::server srv(std::move(r), std::move(opts));
  stop_on_signals(srv);
  std::signal(SIGPIPE, SIG_IGN);

  evnet::engine_options eo;
  eo.loops = static_cast<std::size_t>(loops);
  eo.accept = loops == 1 ? evnet::accept_model::acceptor : evnet::accept_model::reuse_port;
  std::error_code ec = srv.run({"tcp://0.0.0.0:" + std::to_string(port)}, eo);
  clear_stop_target<evnet::http::server>();
  if (ec) {
    std::fprintf(stderr, "%s: %s\n", name, ec.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace example
