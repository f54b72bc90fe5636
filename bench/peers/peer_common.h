// Shared by the peer servers in bench/peers/: the same command line and start-up contract as
// evnet's examples (shared DESIGN.md "Example contract"), so scripts/bench can drive every
// server the same way. Each peer is one thread; `--loops` is accepted only as 1.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace peer {

struct args {
  int port = 0;
};

inline args parse_args(int argc, char** argv, const char* name) {
  args a;
  for (int i = 1; i < argc; ++i) {
    std::string_view s = argv[i];
    if (s == "--port" && i + 1 < argc) {
      a.port = std::atoi(argv[++i]);
    } else if (s == "--loops" && i + 1 < argc && std::strcmp(argv[i + 1], "1") == 0) {
      ++i;
    } else {
      std::fprintf(stderr, "usage: %s --port P (0 = any free port) [--loops 1]\n", name);
      std::exit(2);
    }
  }
  return a;
}

/// Prints the contract line scripts/bench waits for, flushed so a pipe sees it at once.
inline void announce(int port) {
  std::printf("listening on %d\n", port);
  std::fflush(stdout);
}

/// A non-blocking listening TCP socket on 127.0.0.1:`port` (0 = any free port), SO_REUSEADDR,
/// backlog 4096. Returns the fd and stores the bound port in `*bound`, or prints
/// "<name>: listen: <reason>" and returns -1.
inline int listen_loopback(int port, const char* name, int* bound) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(fd, 4096) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::fprintf(stderr, "%s: listen: %s\n", name, std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return -1;
  }
  *bound = ntohs(addr.sin_port);
  return fd;
}

}  // namespace peer
