// libuv_echo: a libuv echo server as a performance-aware libuv user writes it. uv_read_start
// reads into one loop-wide buffer (the loop is single-threaded and the bytes are consumed before
// the callback returns), uv_try_write sends them at once, and only bytes the kernel refuses are
// copied into a heap uv_write request. (The textbook example mallocs a buffer per read and frees
// it in the write callback; that is slower, and we want each library at its practical best.)
#include <netinet/in.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "peer_common.h"

namespace {

constexpr size_t kBufSize = 64 * 1024;
char g_buf[kBufSize];

struct write_req {
  uv_write_t req;
  uv_buf_t buf;
};

void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  *buf = uv_buf_init(g_buf, kBufSize);
}

void on_closed(uv_handle_t* h) {
  std::free(h);
}

void on_written(uv_write_t* req, int) {
  auto* w = reinterpret_cast<write_req*>(req);
  std::free(w->buf.base);
  std::free(w);
}

void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  if (nread < 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(stream), on_closed);
    return;
  }
  if (nread == 0) return;
  uv_buf_t out = uv_buf_init(buf->base, static_cast<unsigned>(nread));
  // Queued writes must keep their order, so try_write only when nothing is queued.
  int sent = stream->write_queue_size == 0 ? uv_try_write(stream, &out, 1) : 0;
  if (sent == UV_EAGAIN) sent = 0;
  if (sent < 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(stream), on_closed);
    return;
  }
  if (sent == nread) return;
  auto* w = static_cast<write_req*>(std::malloc(sizeof(write_req)));
  const size_t rest = static_cast<size_t>(nread) - static_cast<size_t>(sent);
  w->buf = uv_buf_init(static_cast<char*>(std::malloc(rest)), static_cast<unsigned>(rest));
  std::memcpy(w->buf.base, buf->base + sent, rest);
  uv_write(&w->req, stream, &w->buf, 1, on_written);
}

void on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* client = static_cast<uv_tcp_t*>(std::malloc(sizeof(uv_tcp_t)));
  uv_tcp_init(server->loop, client);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(client)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(client), on_closed);
    return;
  }
  uv_tcp_nodelay(client, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(client), on_alloc, on_read);
}

void on_signal(uv_signal_t* handle, int) {
  uv_stop(handle->loop);
}

}  // namespace

int main(int argc, char** argv) {
  const peer::args args = peer::parse_args(argc, argv, "libuv_echo");
  uv_loop_t* loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server);
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", args.port, &addr);
  if (uv_tcp_bind(&server, reinterpret_cast<const sockaddr*>(&addr), 0) != 0 ||
      uv_listen(reinterpret_cast<uv_stream_t*>(&server), 4096, on_connection) != 0) {
    std::fprintf(stderr, "libuv_echo: cannot listen\n");
    return 1;
  }
  int len = sizeof addr;
  uv_tcp_getsockname(&server, reinterpret_cast<sockaddr*>(&addr), &len);
  uv_signal_t sigint, sigterm;
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  peer::announce(ntohs(addr.sin_port));
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
