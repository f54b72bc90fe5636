// echo_server — evnet's main benchmark target: echoes every byte back.
//
//   echo_server [--port P] [--host H] [--loops N] [--reuseport] [--udp] [--unix PATH]
//
// Prints "listening on <port>" (or the Unix path) once bound, serves until SIGINT/SIGTERM, then
// exits 0. The handler is as lean as a hand-written server: the input is presented in place
// (in the loop's read buffer) and written straight back, so a request costs one read() and one
// send() and no allocation.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "evnet/conn.h"
#include "evnet/engine.h"
#include "example_args.h"

namespace {

class echo final : public evnet::handler {
 public:
  explicit echo(std::string what) : what_(std::move(what)) {}
  void on_boot(evnet::engine& e) override {
    std::string shown = what_;
    if (shown.empty()) {
      shown = std::to_string(e.listen_addresses().at(0).port());
    }
    example::announce(shown);
  }
  evnet::action on_traffic(evnet::conn& c) override {
    c.write(c.next());
    return evnet::action::none;
  }

 private:
  std::string what_;
};

void usage(const char* argv0) {
  std::printf(
      "usage: %s [--port P] [--host H] [--loops N] [--reuseport] [--udp] [--unix PATH]\n"
      "  --port P      TCP/UDP port (0 = any free port; default 0)\n"
      "  --host H      address to bind (default 127.0.0.1)\n"
      "  --loops N     reactor threads (0 = one per core; default 1)\n"
      "  --reuseport   one SO_REUSEPORT listener per loop instead of one acceptor\n"
      "  --udp         echo UDP datagrams instead of TCP\n"
      "  --unix PATH   listen on a Unix stream socket instead of TCP\n",
      argv0);
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  std::string port = "0";
  std::string unix_path;
  bool udp = false;
  evnet::engine_options opts;
  opts.loops = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] { return example::value_of(argc, argv, i); };
    if (a == "--help" || a == "-h") {
      usage(argv[0]);
      return 0;
    } else if (a == "--port") {
      port = value();
    } else if (a == "--host") {
      host = value();
    } else if (a == "--loops") {
      opts.loops = static_cast<std::size_t>(std::strtoul(value().c_str(), nullptr, 10));
    } else if (a == "--reuseport") {
      opts.accept = evnet::accept_model::reuse_port;
    } else if (a == "--udp") {
      udp = true;
    } else if (a == "--unix") {
      unix_path = value();
    } else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      usage(argv[0]);
      return 2;
    }
  }
  std::string url;
  if (!unix_path.empty()) {
    url = "unix://" + unix_path;
  } else {
    const std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    url = std::string(udp ? "udp://" : "tcp://") + h + ":" + port;
  }

  evnet::engine engine;
  example::stop_on_signals(engine);

  echo handler(unix_path);
  const std::error_code ec = engine.run(handler, {url}, opts);
  if (ec) {
    std::fprintf(stderr, "echo_server: %s: %s\n", url.c_str(), ec.message().c_str());
    return 1;
  }
  return 0;
}
