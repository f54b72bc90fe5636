#include "net/socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>

namespace evnet::detail {
namespace {

std::error_code set_int_option(int fd, int level, int name, int value) {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0) {
    return last_system_error();
  }
  return {};
}

// Decides what to do with an existing path before binding a Unix listener there.
// Returns {} when the path is free (absent, or a stale socket we just removed).
std::error_code clear_stale_unix_path(const std::string& path, const socket_address& addr) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    return errno == ENOENT ? std::error_code{} : last_system_error();
  }
  // Never delete something that is not a socket: it is somebody's file, not our leftover.
  if (!S_ISSOCK(st.st_mode)) {
    return std::make_error_code(std::errc::address_in_use);
  }
  // A non-blocking probe: a live listener answers (or has a full backlog: EAGAIN) without ever
  // blocking us; a socket file whose server died refuses with ECONNREFUSED.
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) {
    return last_system_error();
  }
  int rc;
  do {
    rc = ::connect(probe, addr.data(), addr.length());
  } while (rc != 0 && errno == EINTR);
  const int err = rc == 0 ? 0 : errno;
  ::close(probe);
  if (err == ECONNREFUSED) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return last_system_error();
    }
    return {};
  }
  if (err == ENOENT) {
    return {};  // Removed by someone else between lstat and connect.
  }
  return std::make_error_code(std::errc::address_in_use);
}

}  // namespace

result<int> open_listener(const endpoint& ep, const listen_options& opts) {
  auto addr = socket_address::resolve(ep);
  if (!addr) {
    return addr.error();
  }
  if (ep.proto == transport::unix_stream) {
    if (auto ec = clear_stale_unix_path(ep.path, *addr)) {
      return ec;
    }
  }
  const int type = ep.proto == transport::udp ? SOCK_DGRAM : SOCK_STREAM;
  const int fd = ::socket(addr->family(), type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return last_system_error();
  }
  auto fail = [fd](std::error_code ec) -> result<int> {
    ::close(fd);
    return ec;
  };
  if (ep.proto != transport::unix_stream) {
    if (auto ec = set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1)) {
      return fail(ec);
    }
    if (opts.reuse_port) {
      if (auto ec = set_int_option(fd, SOL_SOCKET, SO_REUSEPORT, 1)) {
        return fail(ec);
      }
    }
    if (addr->family() == AF_INET6) {
      // tcp6:// means IPv6 only; tcp:// with an IPv6 host (e.g. "::") is dual-stack, whatever
      // the net.ipv6.bindv6only sysctl says.
      const int v6only = ep.family == AF_INET6 ? 1 : 0;
      if (auto ec = set_int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only)) {
        return fail(ec);
      }
    }
  }
  if (opts.recv_buffer > 0) {
    if (auto ec = set_int_option(fd, SOL_SOCKET, SO_RCVBUF, opts.recv_buffer)) {
      return fail(ec);
    }
  }
  if (opts.send_buffer > 0) {
    if (auto ec = set_int_option(fd, SOL_SOCKET, SO_SNDBUF, opts.send_buffer)) {
      return fail(ec);
    }
  }
  if (::bind(fd, addr->data(), addr->length()) != 0) {
    return fail(last_system_error());
  }
  if (type == SOCK_STREAM && ::listen(fd, opts.backlog) != 0) {
    return fail(last_system_error());
  }
  return fd;
}

void close_listener(int fd, const endpoint& ep) noexcept {
  if (ep.proto == transport::unix_stream && !ep.path.empty()) {
    struct stat st;
    if (::lstat(ep.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      ::unlink(ep.path.c_str());
    }
  }
  if (fd >= 0) {
    ::close(fd);
  }
}

std::error_code apply_socket_options(int fd, transport proto, const socket_options& opts) {
  std::error_code first;
  auto note = [&first](std::error_code ec) {
    if (ec && !first) {
      first = ec;
    }
  };
  if (proto == transport::tcp) {
    note(set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, opts.no_delay ? 1 : 0));
    note(set_int_option(fd, SOL_SOCKET, SO_KEEPALIVE, opts.keep_alive ? 1 : 0));
    if (opts.keep_alive && opts.keep_alive_interval.count() > 0) {
      const int secs = static_cast<int>(opts.keep_alive_interval.count());
      note(set_int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE, secs));
      note(set_int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL, secs));
    }
  }
  if (opts.recv_buffer > 0) {
    note(set_int_option(fd, SOL_SOCKET, SO_RCVBUF, opts.recv_buffer));
  }
  if (opts.send_buffer > 0) {
    note(set_int_option(fd, SOL_SOCKET, SO_SNDBUF, opts.send_buffer));
  }
  return first;
}

result<int> accept_socket(int listen_fd, socket_address* peer) {
  for (;;) {
    int fd;
    if (peer) {
      socklen_t len = socket_address::capacity();
      fd = ::accept4(listen_fd, peer->data(), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        peer->set_length(len);
      }
    } else {
      fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
    if (fd >= 0) {
      return fd;
    }
    if (errno != EINTR) {
      return last_system_error();
    }
  }
}

result<int> start_connect(const socket_address& addr, transport proto, bool* in_progress) {
  const int type = proto == transport::udp ? SOCK_DGRAM : SOCK_STREAM;
  const int fd = ::socket(addr.family(), type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return last_system_error();
  }
  if (::connect(fd, addr.data(), addr.length()) == 0) {
    if (in_progress) {
      *in_progress = false;
    }
    return fd;
  }
  // EINTR: the connect goes on asynchronously, exactly like EINPROGRESS (POSIX connect(2)).
  if (errno == EINPROGRESS || errno == EINTR) {
    if (in_progress) {
      *in_progress = true;
    }
    return fd;
  }
  const std::error_code ec = last_system_error();
  ::close(fd);
  return ec;
}

std::error_code socket_error(int fd) noexcept {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    return last_system_error();
  }
  return err == 0 ? std::error_code{} : std::error_code(err, std::system_category());
}

// ---- spare_fd --------------------------------------------------------------------------------

spare_fd::spare_fd() noexcept {
  reopen();
}

spare_fd::~spare_fd() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

void spare_fd::reopen() noexcept {
  if (fd_ < 0) {
    fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
}

std::error_code spare_fd::shed_one(int listen_fd) noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  std::error_code ec;
  int fd;
  do {
    fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd >= 0) {
    ::close(fd);
  } else {
    ec = last_system_error();
  }
  reopen();
  return ec;
}

// ---- SIGPIPE-free writes ---------------------------------------------------------------------

ssize_t send_nosignal(int fd, const void* data, std::size_t len) noexcept {
  ssize_t n;
  do {
    n = ::send(fd, data, len, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

ssize_t writev_nosignal(int fd, const iovec* iov, int iovcnt) noexcept {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<std::size_t>(iovcnt);
  ssize_t n;
  do {
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

}  // namespace evnet::detail
