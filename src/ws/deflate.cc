#include "evnet/ws/deflate.h"

#include <zlib.h>

#include <cstring>

#include "evnet/http/parser.h"
#include "http/text.h"

namespace evnet::ws {
namespace {

// Splits `s` at `sep` into the first piece and the rest.
std::string_view take(std::string_view& s, char sep) {
  std::size_t i = s.find(sep);
  std::string_view head = s.substr(0, i);
  s = i == std::string_view::npos ? std::string_view{} : s.substr(i + 1);
  return http::detail::trim_ows(head);
}

// Window bits parameter value: 8..15, optionally quoted. -1 when invalid.
int window_bits(std::string_view v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
    v = v.substr(1, v.size() - 2);
  }
  if (v.size() == 1 && v[0] >= '8' && v[0] <= '9') {
    return v[0] - '0';
  }
  if (v.size() == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') {
    return 10 + (v[1] - '0');
  }
  return -1;
}

struct offer {
  bool ok = true;
  bool server_nct = false, client_nct = false;
  bool has_server_bits = false, has_client_bits = false;
  int server_bits = 15, client_bits = 15;
};

// Parses the parameters of one permessage-deflate element (after its name).
offer parse_params(std::string_view params, bool response) {
  offer o;
  while (!params.empty()) {
    std::string_view p = take(params, ';');
    std::string_view name = take(p, '=');
    std::string_view value = http::detail::trim_ows(p);
    bool has_value = !value.empty();
    if (http::iequals(name, "server_no_context_takeover")) {
      if (o.server_nct || has_value) {
        o.ok = false;
      }
      o.server_nct = true;
    } else if (http::iequals(name, "client_no_context_takeover")) {
      if (o.client_nct || has_value) {
        o.ok = false;
      }
      o.client_nct = true;
    } else if (http::iequals(name, "server_max_window_bits")) {
      int b = window_bits(value);
      if (o.has_server_bits || b < 0) {
        o.ok = false;
      }
      o.has_server_bits = true;
      o.server_bits = b;
    } else if (http::iequals(name, "client_max_window_bits")) {
      // In an offer the value is optional ("I can limit my window if you ask").
      int b = has_value ? window_bits(value) : 15;
      if (o.has_client_bits || b < 0 || (response && !has_value)) {
        o.ok = false;
      }
      o.has_client_bits = true;
      o.client_bits = b;
    } else {
      o.ok = false;
    }
  }
  return o;
}

}  // namespace

std::optional<deflate_params> negotiate_deflate(std::string_view offers, std::string& response,
                                                const deflate_params& want) {
  while (!offers.empty()) {
    std::string_view ext = take(offers, ',');
    std::string_view name = take(ext, ';');
    if (!http::iequals(name, "permessage-deflate")) {
      continue;
    }
    offer o = parse_params(ext, false);
    if (!o.ok) {
      continue;
    }
    deflate_params p;
    p.server_no_context_takeover = o.server_nct || want.server_no_context_takeover;
    p.client_no_context_takeover = o.client_nct || want.client_no_context_takeover;
    p.server_max_window_bits = o.has_server_bits ? o.server_bits : 15;
    if (want.server_max_window_bits < p.server_max_window_bits) {
      p.server_max_window_bits = want.server_max_window_bits < 8 ? 8 : want.server_max_window_bits;
    }
    // We may only name client_max_window_bits if the client offered it.
    p.client_max_window_bits = o.has_client_bits ? o.client_bits : 15;
    bool send_client_bits = false;
    if (o.has_client_bits && want.client_max_window_bits < p.client_max_window_bits) {
      p.client_max_window_bits = want.client_max_window_bits < 8 ? 8 : want.client_max_window_bits;
      send_client_bits = true;
    } else if (o.has_client_bits && p.client_max_window_bits < 15) {
      send_client_bits = true;
    }
    response = "permessage-deflate";
    if (p.server_no_context_takeover) {
      response += "; server_no_context_takeover";
    }
    if (p.client_no_context_takeover) {
      response += "; client_no_context_takeover";
    }
    if (o.has_server_bits || p.server_max_window_bits < 15) {
      response += "; server_max_window_bits=" + std::to_string(p.server_max_window_bits);
    }
    if (send_client_bits) {
      response += "; client_max_window_bits=" + std::to_string(p.client_max_window_bits);
    }
    return p;
  }
  return std::nullopt;
}

std::string deflate_offer(const deflate_params& want) {
  std::string s = "permessage-deflate";
  if (want.server_no_context_takeover) {
    s += "; server_no_context_takeover";
  }
  if (want.client_no_context_takeover) {
    s += "; client_no_context_takeover";
  }
  if (want.server_max_window_bits < 15) {
    s += "; server_max_window_bits=" + std::to_string(want.server_max_window_bits);
  }
  s += "; client_max_window_bits";
  return s;
}

std::optional<deflate_params> parse_deflate_response(std::string_view value,
                                                     const deflate_params& offered) {
  std::string_view ext = value;
  std::string_view first = take(ext, ',');
  if (!ext.empty()) {
    return std::nullopt;  // we offered one extension; more is invalid
  }
  std::string_view name = take(first, ';');
  if (!http::iequals(name, "permessage-deflate")) {
    return std::nullopt;
  }
  offer o = parse_params(first, true);
  if (!o.ok) {
    return std::nullopt;
  }
  // RFC 7692 §7.1.2.1: a server accepts our server_max_window_bits=N by answering with the same
  // or a smaller value. A larger one, or none (its window is then 15 bits), is not what we
  // offered. (client_max_window_bits is always in our offer, so the server may name it.)
  if (offered.server_max_window_bits < 15 &&
      (!o.has_server_bits || o.server_bits > offered.server_max_window_bits)) {
    return std::nullopt;
  }
  // §7.1.1.1: a server accepts our server_no_context_takeover by naming it too; a response
  // without it accepts an offer we did not make. (It may name it unasked.)
  if (offered.server_no_context_takeover && !o.server_nct) {
    return std::nullopt;
  }
  deflate_params p;
  p.server_no_context_takeover = o.server_nct;
  // §7.1.1.2: our client_no_context_takeover binds us whether or not the server names it (it
  // may reset its decompressor per message on the strength of the offer alone).
  p.client_no_context_takeover = o.client_nct || offered.client_no_context_takeover;
  p.server_max_window_bits = o.server_bits;
  p.client_max_window_bits = o.client_bits;  // 8 too: see deflater::deflater()
  return p;
}

struct inflater::impl {
  z_stream z{};
  bool reset_each = false;
  bool ok = false;
};

inflater::inflater(int window_bits, bool no_context_takeover) : impl_(std::make_unique<impl>()) {
  (void)window_bits;
  // Inflating with the largest window accepts any peer window, so the peer's value only
  // matters for its compressor.
  impl_->ok = inflateInit2(&impl_->z, -15) == Z_OK;
  impl_->reset_each = no_context_takeover;
}

inflater::~inflater() {
  if (impl_->ok) {
    inflateEnd(&impl_->z);
  }
}

inflate_result inflater::inflate_message(std::string_view compressed, std::string& out,
                                         std::uint64_t max_bytes) {
  if (!impl_->ok) {
    return inflate_result::corrupt;
  }
  static constexpr unsigned char kTail[4] = {0x00, 0x00, 0xFF, 0xFF};
  z_stream& z = impl_->z;
  const std::size_t start = out.size();
  inflate_result result = inflate_result::ok;
  for (int part = 0; part < 2 && result == inflate_result::ok; ++part) {
    z.next_in = part == 0 ? reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()))
                          : const_cast<Bytef*>(kTail);
    z.avail_in = part == 0 ? static_cast<uInt>(compressed.size()) : 4u;
    for (;;) {
      std::uint64_t produced = out.size() - start;
      // Never grow the output more than one byte past the limit.
      std::uint64_t room = max_bytes + 1 - produced;
      std::uint64_t want = z.avail_in * 4ull + 1024;
      if (want > std::uint64_t{256} * 1024) {
        want = std::uint64_t{256} * 1024;
      }
      if (want > room) {
        want = room;
      }
      std::size_t old = out.size();
      out.resize(old + want);
      z.next_out = reinterpret_cast<Bytef*>(out.data() + old);
      z.avail_out = static_cast<uInt>(want);
      int rc = ::inflate(&z, Z_SYNC_FLUSH);
      out.resize(old + (want - z.avail_out));
      if (out.size() - start > max_bytes) {
        result = inflate_result::too_big;
        break;
      }
      if (rc == Z_STREAM_END) {
        // The peer ended the deflate stream (BFINAL); the next message starts a new one.
        inflateReset(&z);
        if (z.avail_in == 0) {
          break;
        }
        continue;
      }
      if (rc == Z_BUF_ERROR) {
        if (z.avail_in == 0) {
          break;  // no progress possible: all input used
        }
        if (z.avail_out == 0) {
          continue;
        }
        result = inflate_result::corrupt;
        break;
      }
      if (rc != Z_OK) {
        result = inflate_result::corrupt;
        break;
      }
      if (z.avail_in == 0 && z.avail_out > 0) {
        break;
      }
    }
  }
  if (result != inflate_result::ok || impl_->reset_each) {
    inflateReset(&z);
  }
  return result;
}

struct deflater::impl {
  z_stream z{};
  bool reset_each = false;
  bool ok = false;
};

deflater::deflater(int window_bits, bool no_context_takeover, int level)
    : impl_(std::make_unique<impl>()) {
  // zlib's raw deflate has no 256-byte window: asked for 8 bits it uses 9. That still keeps to
  // a peer's 8: with a 512-byte window zlib never matches farther back than the window less its
  // 262-byte lookahead, 250 bytes (test ws_deflate.window_of_8_bits_stays_within_256_bytes).
  if (window_bits < 9) {
    window_bits = 9;
  }
  if (window_bits > 15) {
    window_bits = 15;
  }
  impl_->ok =
      deflateInit2(&impl_->z, level, Z_DEFLATED, -window_bits, 8, Z_DEFAULT_STRATEGY) == Z_OK;
  impl_->reset_each = no_context_takeover;
}

deflater::~deflater() {
  if (impl_->ok) {
    deflateEnd(&impl_->z);
  }
}

bool deflater::deflate_message(std::string_view message, std::string& out) {
  if (!impl_->ok) {
    return false;
  }
  z_stream& z = impl_->z;
  const std::size_t start = out.size();
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(message.data()));
  z.avail_in = static_cast<uInt>(message.size());
  for (;;) {
    std::size_t want = deflateBound(&z, z.avail_in) + 16;
    std::size_t old = out.size();
    out.resize(old + want);
    z.next_out = reinterpret_cast<Bytef*>(out.data() + old);
    z.avail_out = static_cast<uInt>(want);
    int rc = ::deflate(&z, Z_SYNC_FLUSH);
    out.resize(old + (want - z.avail_out));
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      return false;
    }
    if (z.avail_in == 0 && z.avail_out > 0) {
      break;
    }
  }
  // A sync flush ends with an empty stored block, 00 00 FF FF, which the receiver re-adds.
  if (out.size() - start >= 4 &&
      std::memcmp(out.data() + out.size() - 4, "\x00\x00\xff\xff", 4) == 0) {
    out.resize(out.size() - 4);
  }
  if (out.size() == start) {
    out.push_back('\0');
  }
  if (impl_->reset_each) {
    deflateReset(&z);
  }
  return true;
}

void deflater::reset() noexcept {
  if (impl_->ok) {
    deflateReset(&impl_->z);
  }
}

}  // namespace evnet::ws
