#include "evnet/address.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace evnet {
namespace {

std::error_code fail(std::string* reason, std::string text) {
  if (reason) {
    *reason = std::move(text);
  }
  return make_error_code(errc::bad_address);
}

bool is_ipv4_literal(const std::string& s) {
  in_addr a;
  return inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool is_ipv6_literal(const std::string& s) {
  in6_addr a;
  return inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

// A DNS-style name: labels of letters, digits, '-' and '_' separated by dots. We are strict here
// so that typos such as "tcp://local host:80" fail at parse time rather than at resolve time.
bool is_host_name(std::string_view s) {
  if (s.empty() || s.size() > 253) {
    return false;
  }
  std::size_t label = 0;
  for (char c : s) {
    if (c == '.') {
      if (label == 0) {
        return false;
      }
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok || ++label > 63) {
      return false;
    }
  }
  return true;
}

constexpr std::size_t kSunPathMax = sizeof(sockaddr_un{}.sun_path);

const char* scheme_of(const endpoint& ep) {
  switch (ep.proto) {
    case transport::tcp:
      return ep.family == AF_INET ? "tcp4" : ep.family == AF_INET6 ? "tcp6" : "tcp";
    case transport::udp:
      return ep.family == AF_INET ? "udp4" : ep.family == AF_INET6 ? "udp6" : "udp";
    case transport::unix_stream:
      return "unix";
  }
  return "?";
}

}  // namespace

std::string endpoint::to_string() const {
  std::string out = scheme_of(*this);
  out += "://";
  if (proto == transport::unix_stream) {
    return out + path;
  }
  if (host.find(':') != std::string::npos) {
    out += '[';
    out += host;
    out += ']';
  } else {
    out += host;
  }
  out += ':';
  out += std::to_string(port);
  return out;
}

result<endpoint> parse_endpoint(std::string_view url, std::string* reason) {
  const std::size_t sep = url.find("://");
  if (sep == std::string_view::npos) {
    return fail(reason, "missing \"://\" after the scheme in \"" + std::string(url) + "\"");
  }
  const std::string_view scheme = url.substr(0, sep);
  std::string_view rest = url.substr(sep + 3);
  endpoint ep;
  if (scheme == "tcp" || scheme == "tcp4" || scheme == "tcp6") {
    ep.proto = transport::tcp;
  } else if (scheme == "udp" || scheme == "udp4" || scheme == "udp6") {
    ep.proto = transport::udp;
  } else if (scheme == "unix") {
    ep.proto = transport::unix_stream;
    ep.family = AF_UNIX;
    if (rest.empty() || rest.front() != '/') {
      return fail(reason, "unix socket path must be absolute (unix:///path), got \"" +
                              std::string(rest) + "\"");
    }
    if (rest.size() >= kSunPathMax) {
      return fail(reason, "unix socket path is " + std::to_string(rest.size()) +
                              " bytes; the limit is " + std::to_string(kSunPathMax - 1));
    }
    if (rest.find('\0') != std::string_view::npos) {
      return fail(reason, "unix socket path contains a NUL byte");
    }
    ep.path = std::string(rest);
    return ep;
  } else {
    return fail(reason, "unknown scheme \"" + std::string(scheme) +
                            "\" (expected tcp, tcp4, tcp6, udp, udp4, udp6 or unix)");
  }
  if (scheme.back() == '4') {
    ep.family = AF_INET;
  }
  if (scheme.back() == '6') {
    ep.family = AF_INET6;
  }

  // Split host and port. An IPv6 literal must be bracketed because it contains colons itself.
  std::string_view host;
  std::string_view port_text;
  if (!rest.empty() && rest.front() == '[') {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) {
      return fail(reason, "missing ']' after IPv6 address");
    }
    host = rest.substr(1, close - 1);
    std::string_view after = rest.substr(close + 1);
    if (after.empty() || after.front() != ':') {
      return fail(reason, "expected \":PORT\" after \"[" + std::string(host) + "]\"");
    }
    port_text = after.substr(1);
    if (!is_ipv6_literal(std::string(host))) {
      return fail(reason, "\"" + std::string(host) + "\" is not an IPv6 address");
    }
  } else {
    const std::size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) {
      return fail(reason, "missing \":PORT\" in \"" + std::string(url) + "\"");
    }
    host = rest.substr(0, colon);
    port_text = rest.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return fail(reason, "IPv6 address must be bracketed, as in tcp6://[::1]:80");
    }
    if (!host.empty() && !is_host_name(host)) {
      return fail(reason, "\"" + std::string(host) + "\" is not a valid host name or address");
    }
  }
  if (port_text.empty()) {
    return fail(reason, "empty port");
  }
  for (char c : port_text) {
    if (c < '0' || c > '9') {
      return fail(reason, "port \"" + std::string(port_text) + "\" is not a decimal number");
    }
  }
  if (port_text.size() > 5) {
    return fail(reason, "port " + std::string(port_text) + " is out of range (0..65535)");
  }
  unsigned long port = 0;
  for (char c : port_text) {
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  if (port > 65535) {
    return fail(reason, "port " + std::to_string(port) + " is out of range (0..65535)");
  }
  ep.host = std::string(host);
  ep.port = static_cast<std::uint16_t>(port);
  if (ep.family == AF_INET && is_ipv6_literal(ep.host)) {
    return fail(reason, std::string(scheme) + ":// needs an IPv4 address, got " + ep.host);
  }
  if (ep.family == AF_INET6 && is_ipv4_literal(ep.host)) {
    return fail(reason, std::string(scheme) + ":// needs an IPv6 address, got " + ep.host);
  }
  return ep;
}

// ---- socket_address --------------------------------------------------------------------------

socket_address::socket_address() noexcept {
  std::memset(&storage_, 0, sizeof storage_);
}

socket_address::socket_address(const sockaddr* sa, socklen_t len) noexcept : socket_address() {
  if (len > capacity()) {
    len = capacity();
  }
  if (sa && len > 0) {
    std::memcpy(&storage_, sa, len);
  }
  length_ = sa ? len : 0;
}

void socket_address::set_length(socklen_t len) noexcept {
  length_ = len > capacity() ? capacity() : len;
}

result<socket_address> socket_address::from_ip(std::string_view ip, std::uint16_t port) {
  const std::string s(ip);
  sockaddr_in v4{};
  if (inet_pton(AF_INET, s.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(port);
    return socket_address(reinterpret_cast<sockaddr*>(&v4), sizeof v4);
  }
  sockaddr_in6 v6{};
  if (inet_pton(AF_INET6, s.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    return socket_address(reinterpret_cast<sockaddr*>(&v6), sizeof v6);
  }
  return errc::bad_address;
}

result<socket_address> socket_address::from_unix_path(std::string_view path) {
  if (path.empty() || path.size() >= kSunPathMax) {
    return errc::bad_address;
  }
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path.data(), path.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (path.front() == '@') {
    // Abstract namespace: the name starts with a NUL byte and its length is exact (no NUL end).
    un.sun_path[0] = '\0';
  } else {
    len += 1;  // Include the terminating NUL, as the kernel reports it back from getsockname.
  }
  return socket_address(reinterpret_cast<sockaddr*>(&un), len);
}

result<socket_address> socket_address::local_of(int fd) {
  socket_address out;
  socklen_t len = capacity();
  if (::getsockname(fd, out.data(), &len) != 0) {
    return last_system_error();
  }
  out.set_length(len);
  return out;
}

result<socket_address> socket_address::peer_of(int fd) {
  socket_address out;
  socklen_t len = capacity();
  if (::getpeername(fd, out.data(), &len) != 0) {
    return last_system_error();
  }
  out.set_length(len);
  return out;
}

result<socket_address> socket_address::resolve(const endpoint& ep) {
  if (ep.proto == transport::unix_stream) {
    return from_unix_path(ep.path);
  }
  if (ep.host.empty()) {
    return from_ip(ep.family == AF_INET6 ? "::" : "0.0.0.0", ep.port);
  }
  if (ep.host == "localhost") {
    return from_ip(ep.family == AF_INET6 ? "::1" : "127.0.0.1", ep.port);
  }
  if (is_ipv4_literal(ep.host)) {
    if (ep.family == AF_INET6) {
      return errc::bad_address;
    }
    return from_ip(ep.host, ep.port);
  }
  if (is_ipv6_literal(ep.host)) {
    if (ep.family == AF_INET) {
      return errc::bad_address;
    }
    return from_ip(ep.host, ep.port);
  }
  addrinfo hints{};
  hints.ai_family = ep.family;
  hints.ai_socktype = ep.proto == transport::udp ? SOCK_DGRAM : SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
  addrinfo* list = nullptr;
  const std::string service = std::to_string(ep.port);
  if (::getaddrinfo(ep.host.c_str(), service.c_str(), &hints, &list) != 0 || list == nullptr) {
    return errc::bad_address;
  }
  socket_address out(list->ai_addr, list->ai_addrlen);
  ::freeaddrinfo(list);
  return out;
}

std::uint16_t socket_address::port() const noexcept {
  switch (family()) {
    case AF_INET:
      return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    case AF_INET6:
      return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    default:
      return 0;
  }
}

std::string socket_address::to_string() const {
  char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 16];
  switch (family()) {
    case AF_INET: {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(&storage_);
      if (!inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf)) {
        return "?";
      }
      return std::string(buf) + ":" + std::to_string(ntohs(v4->sin_port));
    }
    case AF_INET6: {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
      if (!inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf)) {
        return "?";
      }
      std::string out = "[";
      out += buf;
      if (v6->sin6_scope_id != 0) {
        out += "%" + std::to_string(v6->sin6_scope_id);
      }
      out += "]:";
      out += std::to_string(ntohs(v6->sin6_port));
      return out;
    }
    case AF_UNIX: {
      const auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
      const std::size_t base = offsetof(sockaddr_un, sun_path);
      if (length_ <= base) {
        return "(unnamed)";
      }
      std::size_t n = length_ - base;
      if (un->sun_path[0] == '\0') {
        return "@" + std::string(un->sun_path + 1, n - 1);
      }
      return std::string(un->sun_path, strnlen(un->sun_path, n));
    }
    default:
      return "";
  }
}

bool socket_address::operator==(const socket_address& other) const noexcept {
  if (family() != other.family()) {
    return false;
  }
  switch (family()) {
    case AF_INET: {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&storage_);
      const auto* b = reinterpret_cast<const sockaddr_in*>(&other.storage_);
      return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    case AF_INET6: {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&storage_);
      const auto* b = reinterpret_cast<const sockaddr_in6*>(&other.storage_);
      return a->sin6_port == b->sin6_port && a->sin6_scope_id == b->sin6_scope_id &&
             std::memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0;
    }
    case AF_UNSPEC:
      return true;
    default:
      return to_string() == other.to_string();
  }
}

}  // namespace evnet
