// evnet — socket helpers for the net layer: listeners, accept, non-blocking connect, socket
// options, the EMFILE spare-fd trick and SIGPIPE-free writes.
//
// This is an internal header (namespace evnet::detail); it is not installed.
//
// Threading: every function here is a thin, thread-agnostic wrapper over system calls on the fds
// it is given; any thread may call them, and nothing here calls back. The only stateful type,
// spare_fd, is not synchronised: give each accepting thread (each loop with a listener) its own.
//
// Errors are std::error_code of std::system_category() (compare with std::errc::...) for kernel
// failures, and evnet::errc::bad_address for addresses that cannot be resolved.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <system_error>

#include "evnet/address.h"
#include "evnet/result.h"

namespace evnet::detail {

/// How open_listener sets up a listening (or, for UDP, bound) socket.
struct listen_options {
  /// listen(2) backlog for stream sockets (the kernel caps it at net.core.somaxconn).
  int backlog = 1024;
  /// Set SO_REUSEPORT so several sockets (one per loop) can bind the same address and the kernel
  /// spreads incoming connections/datagrams between them.
  bool reuse_port = false;
  /// SO_RCVBUF in bytes; 0 keeps the kernel default. Accepted sockets inherit it.
  int recv_buffer = 0;
  /// SO_SNDBUF in bytes; 0 keeps the kernel default. Accepted sockets inherit it.
  int send_buffer = 0;
};

/// Creates a non-blocking, close-on-exec socket bound to `ep`:
/// - tcp/tcp4/tcp6: SO_REUSEADDR, SO_REUSEPORT if asked, IPV6_V6ONLY on for tcp6 (off for a
///   tcp:// endpoint with an IPv6 host, which then also accepts IPv4), bind, listen(backlog).
/// - udp/udp4/udp6: the same options, bound, no listen.
/// - unix: if the path exists and is a socket nobody accepts on (a probe connect() fails with
///   ECONNREFUSED), the stale file is unlinked first; if someone is accepting on it the result is
///   EADDRINUSE; if the path exists and is not a socket, EADDRINUSE as well (never unlinked).
/// Returns the fd (the caller owns it) or the error of the failing step. Thread-agnostic.
result<int> open_listener(const endpoint& ep, const listen_options& opts);

/// Closes a listener opened by open_listener and, for unix://, first unlinks its socket file if the
/// path still names a socket. Unlinking while we still listen is what keeps this safe: another
/// evnet server starting meanwhile finds our socket live and refuses (EADDRINUSE) instead of
/// replacing the file, so the file we remove is ours. Thread-agnostic.
void close_listener(int fd, const endpoint& ep) noexcept;

/// Per-connection socket options.
struct socket_options {
  /// TCP_NODELAY (TCP only): send small writes at once instead of waiting for Nagle's algorithm.
  bool no_delay = true;
  /// SO_KEEPALIVE (TCP only).
  bool keep_alive = false;
  /// With keep_alive: TCP_KEEPIDLE and TCP_KEEPINTVL in seconds; 0 keeps the kernel defaults.
  std::chrono::seconds keep_alive_interval{0};
  /// SO_RCVBUF in bytes; 0 keeps the kernel default.
  int recv_buffer = 0;
  /// SO_SNDBUF in bytes; 0 keeps the kernel default.
  int send_buffer = 0;
};

/// Applies `opts` to a connected (or accepted) socket. TCP options are skipped for udp and
/// unix_stream; buffer sizes apply to every transport. Returns the first failing setsockopt's
/// error (the remaining options are still attempted), or {} on success. Thread-agnostic.
std::error_code apply_socket_options(int fd, transport proto, const socket_options& opts);

/// Accepts one pending connection with accept4(SOCK_NONBLOCK | SOCK_CLOEXEC), retrying EINTR.
/// If `peer` is not null it receives the peer address. Errors are returned as is: EAGAIN when no
/// connection is pending, EMFILE/ENFILE when out of descriptors (see spare_fd), ECONNABORTED when
/// the client gave up before we accepted (just call again). Thread-agnostic.
result<int> accept_socket(int listen_fd, socket_address* peer);

/// Starts a non-blocking connect to `addr` on a new non-blocking, close-on-exec socket
/// (SOCK_STREAM for tcp/unix_stream, SOCK_DGRAM for udp). On success returns the fd and sets
/// *in_progress: false when connected at once (typical for Unix sockets and UDP), true when the
/// connect continues (EINPROGRESS): wait for writability, then read socket_error(fd).
/// On failure the socket is closed and the error returned (ECONNREFUSED is common for unix://;
/// EAGAIN means a Unix listener's backlog is full). Thread-agnostic.
result<int> start_connect(const socket_address& addr, transport proto, bool* in_progress);

/// The pending error of fd (getsockopt SO_ERROR, which also clears it); {} if none.
/// Use it after a non-blocking connect reports writable. Thread-agnostic.
std::error_code socket_error(int fd) noexcept;

/// The EMFILE/ENFILE reserve-descriptor trick (libev/muduo's idea, written for evnet).
///
/// Why: a level-triggered listener whose accept() fails with EMFILE stays readable forever, so the
/// loop spins at 100% CPU and the client waits in the backlog until it times out. Keeping one
/// descriptor in reserve (/dev/null opened read-only) lets us, when accept fails for lack of
/// descriptors, close the reserve, accept the pending client, close it at once (the client sees an
/// orderly close instead of hanging), and reopen the reserve.
///
/// Use: on EMFILE/ENFILE from accept_socket, call shed_one(listen_fd) in a loop until it returns
/// EAGAIN (backlog drained) or another error. Between the close of the reserve and the reopen,
/// another thread of the process may take the freed slot; then accept fails again and shed_one
/// returns that error (the listener stays readable and we retry on the next poll round).
///
/// Threading: not synchronised; one spare_fd per accepting thread. Thread-agnostic otherwise.
class spare_fd {
 public:
  /// Opens the reserve (/dev/null, O_RDONLY | O_CLOEXEC); valid() tells whether that worked.
  spare_fd() noexcept;
  /// Closes the reserve.
  ~spare_fd();
  spare_fd(const spare_fd&) = delete;
  spare_fd& operator=(const spare_fd&) = delete;

  /// Whether the reserve descriptor is currently held.
  bool valid() const noexcept { return fd_ >= 0; }

  /// Frees the reserve, accepts one pending client and closes it, then reopens the reserve.
  /// Returns {} if a client was accepted and closed; EAGAIN if none was pending; otherwise the
  /// accept error (EMFILE again if another thread took the slot). The reserve is reopened in every
  /// case when possible. Thread-agnostic but not synchronised (see the class comment).
  std::error_code shed_one(int listen_fd) noexcept;

 private:
  void reopen() noexcept;
  int fd_ = -1;
};

/// send(fd, data, len, MSG_NOSIGNAL), retrying EINTR: a write to a reset peer returns EPIPE
/// instead of raising SIGPIPE. Returns the byte count or -1 with errno set, like send(2), so it
/// stays cheap on the hot path. Works for TCP and Unix stream sockets. Thread-agnostic.
ssize_t send_nosignal(int fd, const void* data, std::size_t len) noexcept;

/// writev for sockets without SIGPIPE: sendmsg(fd, {iov, iovcnt}, MSG_NOSIGNAL), retrying EINTR.
/// Returns the byte count or -1 with errno set. `iovcnt` must not exceed IOV_MAX.
/// Thread-agnostic.
ssize_t writev_nosignal(int fd, const iovec* iov, int iovcnt) noexcept;

}  // namespace evnet::detail
