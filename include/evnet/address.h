// evnet — addresses: endpoint URLs ("tcp://127.0.0.1:8080", "unix:///run/x.sock") and
// socket_address, a sockaddr_storage with its length.
//
// This is a public header. Everything here is thread-agnostic: the functions are pure (or only
// call thread-safe libc functions such as getaddrinfo/getsockname) and may be called from any
// thread; a socket_address or endpoint value is an ordinary value type (no internal sharing), so
// distinct objects may be used concurrently and one object may be read concurrently. No callbacks.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "evnet/result.h"

namespace evnet {

/// The transport an endpoint names.
enum class transport {
  /// A TCP byte stream (schemes tcp, tcp4, tcp6).
  tcp,
  /// UDP datagrams (schemes udp, udp4, udp6).
  udp,
  /// A Unix-domain byte stream (SOCK_STREAM; scheme unix).
  unix_stream,
};

/// A parsed endpoint URL: what to listen on or connect to, before name resolution.
///
/// Plain value type; thread-agnostic (see the file comment).
struct endpoint {
  /// The transport named by the scheme.
  transport proto = transport::tcp;
  /// AF_UNSPEC for tcp:// and udp:// (either family, decided by the host), AF_INET for tcp4:// and
  /// udp4://, AF_INET6 for tcp6:// and udp6:// (bound IPv6-only), AF_UNIX for unix://.
  int family = AF_UNSPEC;
  /// Host part without brackets ("127.0.0.1", "::1", "localhost"); empty means the wildcard
  /// address of the family (0.0.0.0, or :: for tcp6/udp6). Empty for unix://.
  std::string host;
  /// Port number (0 asks the kernel for any free port). Unused for unix://.
  std::uint16_t port = 0;
  /// Absolute socket path for unix://; empty otherwise.
  std::string path;

  /// The canonical URL: "tcp://127.0.0.1:80", "tcp6://[::1]:0", "unix:///tmp/x.sock".
  /// parse_endpoint(e.to_string()) gives back an equal endpoint. Thread-agnostic.
  std::string to_string() const;

  /// Member-wise equality. Thread-agnostic.
  bool operator==(const endpoint&) const = default;
};

/// Parses an endpoint URL. Accepted forms:
///   tcp://HOST:PORT, tcp4://HOST:PORT, tcp6://[V6]:PORT (also udp, udp4, udp6),
///   unix:///ABSOLUTE/PATH.
/// HOST is an IPv4 literal, a bracketed IPv6 literal ("[::1]"), a host name ("localhost"), or
/// empty (":8080", the wildcard address). PORT is decimal 0..65535 and required. tcp4 rejects an
/// IPv6 literal and tcp6 an IPv4 literal. A unix path must be absolute and fit in sun_path.
/// Nothing may follow the port (no path, query or fragment).
///
/// On failure returns errc::bad_address; if `reason` is not null it receives a one-line human
/// explanation ("port 70000 is out of range (0..65535)"). Thread-agnostic, pure.
result<endpoint> parse_endpoint(std::string_view url, std::string* reason = nullptr);

/// A socket address of any family (IPv4, IPv6, Unix): a sockaddr_storage and its length, so it
/// can be passed straight to bind/connect/sendto and filled by accept/recvfrom.
///
/// Plain value type; thread-agnostic (see the file comment).
class socket_address {
 public:
  /// An empty address: family() == AF_UNSPEC, length() == 0.
  socket_address() noexcept;

  /// Copies `len` bytes of `sa` (clamped to sizeof(sockaddr_storage)).
  socket_address(const sockaddr* sa, socklen_t len) noexcept;

  /// An IPv4/IPv6 address from a numeric literal ("127.0.0.1", "::1") and a port; errc::bad_address
  /// if `ip` is not a numeric literal. Thread-agnostic, pure.
  static result<socket_address> from_ip(std::string_view ip, std::uint16_t port);

  /// A Unix-domain address for `path` (errc::bad_address if empty or too long for sun_path).
  /// A leading '@' names a Linux abstract socket. Thread-agnostic, pure.
  static result<socket_address> from_unix_path(std::string_view path);

  /// The address fd is bound to (getsockname). Thread-agnostic; the fd is only read.
  static result<socket_address> local_of(int fd);

  /// The address of fd's peer (getpeername); ENOTCONN if not connected. Thread-agnostic.
  static result<socket_address> peer_of(int fd);

  /// Resolves an endpoint to one address: numeric hosts directly, the wildcard for an empty host,
  /// "localhost" to 127.0.0.1 (or ::1 for tcp6/udp6), other names with getaddrinfo
  /// (AI_NUMERICSERV, first answer of the endpoint's family). unix:// gives an AF_UNIX address.
  /// Failures: errc::bad_address (family mismatch, name not found). May block on DNS for
  /// non-numeric names other than "localhost": call it off the loop thread for those.
  /// Thread-agnostic.
  static result<socket_address> resolve(const endpoint& ep);

  /// AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC when empty.
  int family() const noexcept { return length_ == 0 ? AF_UNSPEC : storage_.ss_family; }

  /// The port in host byte order for IPv4/IPv6; 0 for other families.
  std::uint16_t port() const noexcept;

  /// "127.0.0.1:8080", "[::1]:80" ("[fe80::1%2]:80" with a scope id), "/tmp/x.sock",
  /// "@name" for an abstract Unix socket, "(unnamed)" for an unbound Unix socket, "" when empty.
  std::string to_string() const;

  /// For bind/connect/sendto.
  const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  /// For accept/recvfrom/getsockname: pass with capacity() as the length, then set_length().
  sockaddr* data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
  /// The meaningful length in bytes.
  socklen_t length() const noexcept { return length_; }
  /// Sets the length after the kernel filled data() (clamped to capacity()).
  void set_length(socklen_t len) noexcept;
  /// sizeof(sockaddr_storage).
  static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_storage); }

  /// Same family, address bytes and port (or path). Thread-agnostic.
  bool operator==(const socket_address& other) const noexcept;

 private:
  sockaddr_storage storage_;
  socklen_t length_ = 0;
};

}  // namespace evnet
