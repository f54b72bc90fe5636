#include "evnet/ws/handshake.h"

#include <openssl/evp.h>
#include <sys/random.h>

#include <cstdlib>
#include <cstring>

namespace evnet::ws {
namespace {

constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// Appends "<name>: <value>\r\n", or nothing for an empty value (the handshake's optional
// Sec-WebSocket-Protocol and Sec-WebSocket-Extensions headers, on both sides).
void append_optional_header(std::string& out, std::string_view name, std::string_view value) {
  if (value.empty()) {
    return;
  }
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

// How many fields named `name` (ASCII case-insensitive) the message has.
std::size_t field_count(const http::message& m, std::string_view name) noexcept {
  std::size_t n = 0;
  for (const http::header_field& f : m.headers) {
    n += http::iequals(f.name, name) ? 1 : 0;
  }
  return n;
}

int b64_value(char c) noexcept {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+') {
    return 62;
  }
  if (c == '/') {
    return 63;
  }
  return -1;
}

}  // namespace

std::array<char, 28> accept_key(std::string_view key) noexcept {
  char buf[128];
  std::size_t n = key.size() > sizeof buf - kGuid.size() ? sizeof buf - kGuid.size() : key.size();
  std::memcpy(buf, key.data(), n);
  std::memcpy(buf + n, kGuid.data(), kGuid.size());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  EVP_Digest(buf, n + kGuid.size(), digest, &dlen, EVP_sha1(), nullptr);
  unsigned char b64[32];
  EVP_EncodeBlock(b64, digest, 20);  // 20 bytes → 28 characters + NUL
  std::array<char, 28> out{};
  std::memcpy(out.data(), b64, 28);
  return out;
}

bool is_valid_key(std::string_view key) noexcept {
  // 16 bytes encode to 22 significant characters and "==". The last significant character
  // carries 2 data bits, so its low 4 bits must be zero.
  if (key.size() != 24 || key[22] != '=' || key[23] != '=') {
    return false;
  }
  for (std::size_t i = 0; i < 22; ++i) {
    if (b64_value(key[i]) < 0) {
      return false;
    }
  }
  return (b64_value(key[21]) & 0x0F) == 0;
}

std::string generate_key() {
  unsigned char raw[16];
  if (getrandom(raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw)) {
    // getrandom cannot fail for 16 bytes once the pool is initialised; fall back regardless.
    for (auto& b : raw) {
      b = static_cast<unsigned char>(std::rand());
    }
  }
  unsigned char b64[32];
  EVP_EncodeBlock(b64, raw, 16);
  return std::string(reinterpret_cast<char*>(b64), 24);
}

upgrade_check check_upgrade(const http::message& req) noexcept {
  upgrade_check r;
  if (req.method != http::method::get) {
    return {400, "WebSocket upgrade must use GET", {}};
  }
  if (req.version_minor < 1) {
    return {400, "WebSocket upgrade requires HTTP/1.1", {}};
  }
  if (!req.header_has_token("upgrade", "websocket")) {
    return {400, "missing Upgrade: websocket", {}};
  }
  if (!req.header_has_token("connection", "upgrade")) {
    return {400, "Connection header lacks the upgrade token", {}};
  }
  // RFC 6455 §11.3.1 and §11.3.5: Sec-WebSocket-Key and Sec-WebSocket-Version appear at most
  // once in a request; with two, which one the answer is for is a guess (a front end may have
  // checked the other).
  if (field_count(req, "sec-websocket-version") > 1) {
    return {400, "more than one Sec-WebSocket-Version", {}};
  }
  if (field_count(req, "sec-websocket-key") > 1) {
    return {400, "more than one Sec-WebSocket-Key", {}};
  }
  bool found = false;
  std::string_view version = req.header("sec-websocket-version", &found);
  if (!found || version != "13") {
    return {426, "unsupported Sec-WebSocket-Version", {}};
  }
  std::string_view key = req.header("sec-websocket-key", &found);
  if (!found || !is_valid_key(key)) {
    return {400, "missing or malformed Sec-WebSocket-Key", {}};
  }
  r.key = key;
  return r;
}

void write_upgrade_response(std::string& out, std::string_view key, std::string_view protocol,
                            std::string_view extensions) {
  auto accept = accept_key(key);
  out.append(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: ");
  out.append(accept.data(), accept.size());
  out.append("\r\n");
  append_optional_header(out, "Sec-WebSocket-Protocol", protocol);
  append_optional_header(out, "Sec-WebSocket-Extensions", extensions);
  out.append("\r\n");
}

void write_upgrade_refusal(std::string& out, int status, std::string_view reason) {
  out.append("HTTP/1.1 ");
  out.append(std::to_string(status));
  out.append(status == 426   ? " Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
             : status == 500 ? " Internal Server Error\r\n"
                             : " Bad Request\r\n");
  out.append("Connection: close\r\nContent-Type: text/plain\r\nContent-Length: ");
  out.append(std::to_string(reason.size() + 1));
  out.append("\r\n\r\n");
  out.append(reason);
  out.append("\n");
}

void write_client_request(std::string& out, std::string_view host, std::string_view target,
                          std::string_view key, std::string_view protocols,
                          std::string_view extensions) {
  out.append("GET ");
  out.append(target.empty() ? std::string_view("/") : target);
  out.append(" HTTP/1.1\r\nHost: ");
  out.append(host);
  out.append("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n");
  out.append("Sec-WebSocket-Key: ");
  out.append(key);
  out.append("\r\n");
  append_optional_header(out, "Sec-WebSocket-Protocol", protocols);
  append_optional_header(out, "Sec-WebSocket-Extensions", extensions);
  out.append("\r\n");
}

std::string_view check_server_response(const http::message& resp, std::string_view key) noexcept {
  if (resp.status != 101) {
    return "server did not switch protocols";
  }
  if (!resp.header_has_token("upgrade", "websocket")) {
    return "missing Upgrade: websocket";
  }
  if (!resp.header_has_token("connection", "upgrade")) {
    return "missing Connection: upgrade";
  }
  auto expect = accept_key(key);
  // RFC 6455 §11.3.3: one Sec-WebSocket-Accept (a second one, whatever it says, is not the
  // answer of a server that read our key).
  if (field_count(resp, "sec-websocket-accept") > 1) {
    return "more than one Sec-WebSocket-Accept";
  }
  if (resp.header("sec-websocket-accept") != std::string_view(expect.data(), expect.size())) {
    return "wrong Sec-WebSocket-Accept";
  }
  // §11.3.4: the server selects one subprotocol, in one Sec-WebSocket-Protocol field.
  if (field_count(resp, "sec-websocket-protocol") > 1) {
    return "more than one Sec-WebSocket-Protocol";
  }
  return {};
}

}  // namespace evnet::ws
