// asio_echo: the idiomatic standalone-Asio echo server (the shape of Asio's own
// async_tcp_echo_server example): one io_context on one thread, a session per connection kept
// alive by shared_from_this, async_read_some into the session's buffer, then async_write of the
// bytes read, then read again. The io_context is told it runs on one thread
// (concurrency hint 1) so Asio may skip its internal locking.
#include <asio.hpp>
#include <cstdio>
#include <memory>

#include "peer_common.h"

namespace {

using asio::ip::tcp;

class session : public std::enable_shared_from_this<session> {
 public:
  explicit session(tcp::socket socket) : socket_(std::move(socket)) {}
  void start() { do_read(); }

 private:
  void do_read() {
    auto self(shared_from_this());
    socket_.async_read_some(asio::buffer(data_),
                            [this, self](std::error_code ec, std::size_t length) {
                              if (!ec) do_write(length);
                            });
  }

  void do_write(std::size_t length) {
    auto self(shared_from_this());
    asio::async_write(socket_, asio::buffer(data_, length),
                      [this, self](std::error_code ec, std::size_t) {
                        if (!ec) do_read();
                      });
  }

  tcp::socket socket_;
  char data_[64 * 1024];
};

class server {
 public:
  server(asio::io_context& io, unsigned short port)
      : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port)) {
    do_accept();
  }
  unsigned short port() const { return acceptor_.local_endpoint().port(); }

 private:
  void do_accept() {
    acceptor_.async_accept([this](std::error_code ec, tcp::socket socket) {
      if (!ec) {
        socket.set_option(tcp::no_delay(true));
        std::make_shared<session>(std::move(socket))->start();
      }
      do_accept();
    });
  }

  tcp::acceptor acceptor_;
};

}  // namespace

int main(int argc, char** argv) {
  const peer::args args = peer::parse_args(argc, argv, "asio_echo");
  asio::io_context io(1);
  server s(io, static_cast<unsigned short>(args.port));
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code, int) { io.stop(); });
  peer::announce(s.port());
  io.run();
  return 0;
}
