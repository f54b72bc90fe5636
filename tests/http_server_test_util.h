// An in-process HTTP server on its own thread, for tests over real sockets. Test-only code.
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <system_error>
#include <thread>
#include <utility>

#include "evnet/engine.h"
#include "evnet/http/server.h"

namespace proto_test {

/// Serves `r` on 127.0.0.1 and a port the kernel picks, on its own thread, until stop() or
/// destruction. port() is 0 when the server did not boot within 10 s.
class test_server {
 public:
  explicit test_server(evnet::http::router r, evnet::http::server_options o = {},
                       evnet::engine_options eo = {}) {
    auto p = std::make_shared<std::promise<int>>();
    auto f = p->get_future();
    o.on_boot = [p](evnet::engine& e) { p->set_value(e.listen_addresses().at(0).port()); };
    srv_ = std::make_unique<evnet::http::server>(std::move(r), std::move(o));
    thread_ = std::thread([this, eo] { ec_ = srv_->run({"tcp://127.0.0.1:0"}, eo); });
    if (f.wait_for(std::chrono::seconds(10)) == std::future_status::ready) {
      port_ = f.get();
    }
  }
  ~test_server() { stop(); }
  test_server(const test_server&) = delete;
  test_server& operator=(const test_server&) = delete;
  /// Stops the server and joins its thread (once).
  void stop() {
    if (thread_.joinable()) {
      srv_->stop();
      thread_.join();
    }
  }
  int port() const { return port_; }
  /// What run() returned (after stop()).
  std::error_code error() const { return ec_; }

 private:
  std::unique_ptr<evnet::http::server> srv_;
  std::thread thread_;
  std::error_code ec_;
  int port_ = 0;
};

}  // namespace proto_test
