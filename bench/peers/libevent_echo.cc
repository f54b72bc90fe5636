// libevent_echo: the idiomatic libevent 2 echo server — an evconnlistener hands each accepted
// socket to a bufferevent, and the read callback moves the whole input evbuffer to the output
// evbuffer (evbuffer_add_buffer, no copy). One event_base, one thread.
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>

#include <cstdio>

#include "peer_common.h"

namespace {

void on_read(bufferevent* bev, void*) {
  evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

void on_event(bufferevent* bev, short what, void*) {
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(bev);
}

void on_accept(evconnlistener* listener, evutil_socket_t fd, sockaddr*, int, void*) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  event_base* base = evconnlistener_get_base(listener);
  bufferevent* bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (bev == nullptr) {
    evutil_closesocket(fd);
    return;
  }
  bufferevent_setcb(bev, on_read, nullptr, on_event, nullptr);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

void on_signal(evutil_socket_t, short, void* base) {
  event_base_loopbreak(static_cast<event_base*>(base));
}

}  // namespace

int main(int argc, char** argv) {
  const peer::args args = peer::parse_args(argc, argv, "libevent_echo");
  signal(SIGPIPE, SIG_IGN);
  event_base* base = event_base_new();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(args.port));
  evconnlistener* listener =
      evconnlistener_new_bind(base, on_accept, nullptr, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE,
                              4096, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  if (listener == nullptr) {
    std::perror("libevent_echo: listen");
    return 1;
  }
  socklen_t len = sizeof addr;
  getsockname(evconnlistener_get_fd(listener), reinterpret_cast<sockaddr*>(&addr), &len);
  event* sigint = evsignal_new(base, SIGINT, on_signal, base);
  event* sigterm = evsignal_new(base, SIGTERM, on_signal, base);
  event_add(sigint, nullptr);
  event_add(sigterm, nullptr);
  peer::announce(ntohs(addr.sin_port));
  event_base_dispatch(base);
  event_free(sigint);
  event_free(sigterm);
  evconnlistener_free(listener);
  event_base_free(base);
  return 0;
}
