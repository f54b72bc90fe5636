#include "evnet/ws/frame.h"

#include <sys/random.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define EVNET_WS_AVX2 1
#endif

#include <bit>
#include <cstring>
#include <ctime>

#include "evnet/ws/deflate.h"

namespace evnet::ws {
namespace {

read_step need_more(std::size_t consumed) noexcept {
  read_step s;
  s.consumed = consumed;
  return s;
}

constexpr bool is_control(opcode op) noexcept {
  return (static_cast<unsigned>(op) & 0x8) != 0;
}

// The wire size allowed for `limit` bytes of compressed content: the limits count inflated
// bytes, but incompressible data grows a little when deflated (5 bytes per 64 KiB stored block,
// plus the block headers of a short message), so the compressed length is bounded loosely here
// and the inflated size is checked against `limit` itself when the message is inflated.
constexpr std::uint64_t compressed_bound(std::uint64_t limit) noexcept {
  const std::uint64_t slack = limit / 1000 + 1024;
  return limit > UINT64_MAX - slack ? UINT64_MAX : limit + slack;
}

std::size_t header_size(unsigned char b1) noexcept {
  std::size_t n = 2;
  unsigned len7 = b1 & 0x7F;
  if (len7 == 126) {
    n += 2;
  } else if (len7 == 127) {
    n += 8;
  }
  if (b1 & 0x80) {
    n += 4;
  }
  return n;
}

}  // namespace

bool is_valid_close_code(std::uint16_t code) noexcept {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

std::size_t write_frame_header(char* out, opcode op, std::uint64_t len, bool fin, bool rsv1,
                               const std::uint8_t* mask_key) noexcept {
  auto* o = reinterpret_cast<unsigned char*>(out);
  o[0] =
      static_cast<unsigned char>((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | static_cast<unsigned>(op));
  unsigned char mask_bit = mask_key ? 0x80 : 0;
  std::size_t n;
  if (len < 126) {
    o[1] = static_cast<unsigned char>(mask_bit | len);
    n = 2;
  } else if (len <= 0xFFFF) {
    o[1] = mask_bit | 126;
    o[2] = static_cast<unsigned char>(len >> 8);
    o[3] = static_cast<unsigned char>(len);
    n = 4;
  } else {
    o[1] = mask_bit | 127;
    for (int i = 0; i < 8; ++i) {
      o[2 + i] = static_cast<unsigned char>(len >> (56 - 8 * i));
    }
    n = 10;
  }
  if (mask_key) {
    std::memcpy(o + n, mask_key, 4);
    n += 4;
  }
  return n;
}

namespace {

#if defined(EVNET_WS_AVX2)
// The AVX2 loop is compiled for AVX2 only (the rest of the library targets baseline x86-64) and
// chosen at run time, so one binary runs everywhere and uses 32-byte registers where it can.
// Masks whole 32-byte blocks and returns how many bytes it did; the caller finishes the tail.
__attribute__((target("avx2"))) std::size_t mask_blocks_avx2(char* data, std::size_t len,
                                                             std::uint64_t k8) noexcept {
  const __m256i k = _mm256_set1_epi64x(static_cast<long long>(k8));
  std::size_t i = 0;
  // Eight registers per step: the loop overhead is paid once per 256 bytes.
  for (; i + 256 <= len; i += 256) {
    // Written out: GCC at -O2 keeps an inner loop of eight as a loop.
    auto* p = reinterpret_cast<__m256i*>(data + i);
    _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), k));
    _mm256_storeu_si256(p + 1, _mm256_xor_si256(_mm256_loadu_si256(p + 1), k));
    _mm256_storeu_si256(p + 2, _mm256_xor_si256(_mm256_loadu_si256(p + 2), k));
    _mm256_storeu_si256(p + 3, _mm256_xor_si256(_mm256_loadu_si256(p + 3), k));
    _mm256_storeu_si256(p + 4, _mm256_xor_si256(_mm256_loadu_si256(p + 4), k));
    _mm256_storeu_si256(p + 5, _mm256_xor_si256(_mm256_loadu_si256(p + 5), k));
    _mm256_storeu_si256(p + 6, _mm256_xor_si256(_mm256_loadu_si256(p + 6), k));
    _mm256_storeu_si256(p + 7, _mm256_xor_si256(_mm256_loadu_si256(p + 7), k));
  }
  for (; i + 32 <= len; i += 32) {
    auto* p = reinterpret_cast<__m256i*>(data + i);
    _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), k));
  }
  return i;
}

bool cpu_has_avx2() noexcept {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return has;
}

// Below this size the SSE2 loop is as fast and skips the CPU check.
constexpr std::size_t kAvx2MinBytes = 128;
#endif

}  // namespace

namespace {

// Masks data[i, len) with the rotated key `k` (k8 = k twice); the portable loops.
inline void mask_from(char* data, std::size_t i, std::size_t len, std::uint32_t k,
                      std::uint64_t k8) noexcept {
#if defined(__SSE2__)
  // Sixteen bytes per step where SSE2 exists (every x86-64).
  const __m128i k16 = _mm_set1_epi64x(static_cast<long long>(k8));
  for (; i + 32 <= len; i += 32) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + i));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + i + 16));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(data + i), _mm_xor_si128(a, k16));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(data + i + 16), _mm_xor_si128(b, k16));
  }
#endif
  for (; i + 8 <= len; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, data + i, 8);
    w ^= k8;
    std::memcpy(data + i, &w, 8);
  }
  unsigned char kb[4];
  std::memcpy(kb, &k, 4);
  for (; i < len; ++i) {
    data[i] = static_cast<char>(data[i] ^ kb[i & 3]);
  }
}

#if defined(EVNET_WS_AVX2)
// Long payloads: the AVX2 blocks where the CPU has them, then the portable loops. Kept out of
// line so that apply_mask stays a leaf function (no register saves) for short payloads.
[[gnu::noinline]] std::size_t mask_long(char* data, std::size_t len, std::uint32_t k,
                                        std::uint64_t k8, std::size_t offset) noexcept {
  const std::size_t i = cpu_has_avx2() ? mask_blocks_avx2(data, len, k8) : 0;
  if (i != len) {
    mask_from(data, i, len, k, k8);
  }
  return (offset + len) & 3;
}
#endif

}  // namespace

std::size_t apply_mask(char* data, std::size_t len, const std::uint8_t key[4],
                       std::size_t offset) noexcept {
  // The key repeats every four bytes; rotate it to `offset` once and XOR eight bytes per step
  // (little and big endian both work: a rotation by whole bytes of the loaded word).
  std::uint32_t k;
  std::memcpy(&k, key, 4);
  unsigned shift = static_cast<unsigned>(offset & 3) * 8;
  if (shift) {
    if constexpr (std::endian::native == std::endian::little) {
      k = (k >> shift) | (k << (32 - shift));
    } else {
      k = (k << shift) | (k >> (32 - shift));
    }
  }
  const std::uint64_t k8 = (std::uint64_t{k} << 32) | k;
#if defined(EVNET_WS_AVX2)
  if (len >= kAvx2MinBytes) {
    return mask_long(data, len, k, k8, offset);  // a tail call
  }
#endif
  mask_from(data, 0, len, k, k8);
  return (offset + len) & 3;
}

std::array<std::uint8_t, 4> random_mask_key() noexcept {
  // xorshift64* seeded once per thread from getrandom(): unpredictable to the page script that
  // RFC 6455 §10.3 worries about, and cheap per frame.
  thread_local std::uint64_t state = [] {
    std::uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != static_cast<ssize_t>(sizeof s) || s == 0) {
      s = static_cast<std::uint64_t>(std::time(nullptr)) * 0x9E3779B97F4A7C15ull | 1;
    }
    return s;
  }();
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  std::uint64_t r = state * 0x2545F4914F6CDD1Dull;
  return {static_cast<std::uint8_t>(r >> 24), static_cast<std::uint8_t>(r >> 32),
          static_cast<std::uint8_t>(r >> 40), static_cast<std::uint8_t>(r >> 48)};
}

void append_frame(std::string& out, opcode op, std::string_view payload, bool mask, bool fin,
                  bool rsv1) {
  char hdr[kMaxFrameHeader];
  std::array<std::uint8_t, 4> key{};
  if (mask) {
    key = random_mask_key();
  }
  std::size_t n =
      write_frame_header(hdr, op, payload.size(), fin, rsv1, mask ? key.data() : nullptr);
  std::size_t start = out.size();
  out.append(hdr, n);
  out.append(payload);
  if (mask) {
    apply_mask(out.data() + start + n, payload.size(), key.data());
  }
}

void append_close(std::string& out, std::uint16_t code, std::string_view reason, bool mask) {
  if (code == close_code::no_status || code == 0) {
    append_frame(out, opcode::close, {}, mask);
    return;
  }
  char body[125];
  body[0] = static_cast<char>(code >> 8);
  body[1] = static_cast<char>(code & 0xFF);
  std::size_t r = reason.size() > 123 ? 123 : reason.size();
  std::memcpy(body + 2, reason.data(), r);
  append_frame(out, opcode::close, std::string_view(body, 2 + r), mask);
}

void reader::release_buffers() noexcept {
  constexpr std::size_t kKeep = std::size_t{64} * 1024;
  if (inflated_.capacity() > kKeep) {
    std::string().swap(inflated_);
  }
  if (!in_message_ && msg_buf_.capacity() > kKeep) {
    std::string().swap(msg_buf_);
  }
}

read_step reader::fail(std::uint16_t code, const char* reason) {
  state_ = state::failed;
  fail_code_ = code;
  fail_reason_ = reason;
  read_step s;
  s.event = read_event::error;
  s.code = code;
  s.reason = reason;
  return s;
}

bool reader::begin_frame(const unsigned char* h) {
  unsigned b0 = h[0], b1 = h[1];
  fin_ = (b0 & 0x80) != 0;
  bool rsv1 = (b0 & 0x40) != 0;
  unsigned opv = b0 & 0x0F;
  masked_ = (b1 & 0x80) != 0;
  if (b0 & 0x30) {
    return fail(close_code::protocol_error, "reserved bits set"), false;
  }
  if (opv > 2 && (opv < 8 || opv > 10)) {
    return fail(close_code::protocol_error, "reserved opcode"), false;
  }
  op_ = static_cast<opcode>(opv);
  std::uint64_t len = b1 & 0x7F;
  std::size_t pos = 2;
  if (len == 126) {
    len = (std::uint64_t{h[2]} << 8) | h[3];
    pos = 4;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; ++i) {
      len = (len << 8) | h[2 + i];
    }
    pos = 10;
    if (len >> 63) {
      return fail(close_code::protocol_error, "frame length has the high bit set"), false;
    }
  }
  if (cfg_.role == role::server && !masked_) {
    return fail(close_code::protocol_error, "client frame is not masked"), false;
  }
  if (cfg_.role == role::client && masked_) {
    return fail(close_code::protocol_error, "server frame is masked"), false;
  }
  if (masked_) {
    std::memcpy(mask_, h + pos, 4);
  }
  mask_pos_ = 0;
  if (is_control(op_)) {
    if (!fin_) {
      return fail(close_code::protocol_error, "fragmented control frame"), false;
    }
    if (len > 125) {
      return fail(close_code::protocol_error, "control frame longer than 125"), false;
    }
    if (rsv1) {
      return fail(close_code::protocol_error, "RSV1 on a control frame"), false;
    }
    ctrl_len_ = 0;
  } else {
    // A frame of a compressed message (RSV1 on its first frame) carries compressed bytes, whose
    // inflated size is what the limits count: see compressed_bound.
    const bool compressed =
        op_ == opcode::continuation ? in_message_ && compressed_ : rsv1 && inflater_;
    if (len > (compressed ? compressed_bound(cfg_.max_frame_bytes) : cfg_.max_frame_bytes)) {
      return fail(close_code::message_too_big, "frame too large"), false;
    }
    if (op_ == opcode::continuation) {
      if (!in_message_) {
        return fail(close_code::protocol_error, "continuation without a message"), false;
      }
      if (rsv1) {
        return fail(close_code::protocol_error, "RSV1 on a continuation frame"), false;
      }
    } else {
      if (in_message_) {
        return fail(close_code::protocol_error, "new message inside a fragmented message"), false;
      }
      if (rsv1 && !inflater_) {
        return fail(close_code::protocol_error, "RSV1 set without a negotiated extension"), false;
      }
      in_message_ = true;
      compressed_ = rsv1;
      msg_type_ = op_;
      msg_len_ = 0;
      msg_frames_ = 0;
      utf8_.reset();
      msg_buf_.clear();
    }
    msg_len_ += len;
    ++msg_frames_;
    if (msg_len_ >
        (compressed ? compressed_bound(cfg_.max_message_bytes) : cfg_.max_message_bytes)) {
      return fail(close_code::message_too_big, "message too large"), false;
    }
  }
  remaining_ = frame_len_ = len;
  return true;
}

read_step reader::deliver_message(std::size_t consumed, std::string_view data) {
  in_message_ = false;
  if (compressed_) {
    inflated_.clear();
    // The inflated size against the real limits: the message's, and the frame's too when the
    // message was a single frame (the inflated bytes of one fragment are not known apart).
    std::uint64_t limit = cfg_.max_message_bytes;
    if (msg_frames_ == 1 && cfg_.max_frame_bytes < limit) {
      limit = cfg_.max_frame_bytes;
    }
    switch (inflater_->inflate_message(data, inflated_, limit)) {
      case inflate_result::ok:
        break;
      case inflate_result::too_big:
        return fail(close_code::message_too_big, "inflated message too large");
      case inflate_result::corrupt:
        return fail(close_code::invalid_payload, "corrupt compressed data");
    }
    data = inflated_;
    if (msg_type_ == opcode::text && cfg_.validate_utf8 && !is_valid_utf8(data)) {
      return fail(close_code::invalid_payload, "text message is not valid UTF-8");
    }
  } else if (msg_type_ == opcode::text && cfg_.validate_utf8 && !utf8_.complete()) {
    return fail(close_code::invalid_payload, "text message is not valid UTF-8");
  }
  read_step s;
  s.event = read_event::message;
  s.consumed = consumed;
  s.type = msg_type_;
  s.data = data;
  return s;
}

read_step reader::finish_frame(std::size_t consumed, bool& emit) {
  state_ = state::header;
  emit = true;
  read_step s;
  s.consumed = consumed;
  switch (op_) {
    case opcode::ping:
    case opcode::pong:
      s.event = op_ == opcode::ping ? read_event::ping : read_event::pong;
      s.data = std::string_view(ctrl_, ctrl_len_);
      return s;
    case opcode::close: {
      s.event = read_event::close;
      if (ctrl_len_ == 0) {
        s.code = close_code::no_status;
        return s;
      }
      if (ctrl_len_ == 1) {
        return fail(close_code::protocol_error, "close payload of one byte");
      }
      auto code = static_cast<std::uint16_t>((static_cast<unsigned char>(ctrl_[0]) << 8) |
                                             static_cast<unsigned char>(ctrl_[1]));
      if (!is_valid_close_code(code)) {
        return fail(close_code::protocol_error, "invalid close code");
      }
      std::string_view reason(ctrl_ + 2, ctrl_len_ - 2);
      if (cfg_.validate_utf8 && !is_valid_utf8(reason)) {
        return fail(close_code::invalid_payload, "close reason is not valid UTF-8");
      }
      s.code = code;
      s.reason = reason;
      return s;
    }
    default:
      break;
  }
  if (!fin_) {
    emit = false;
    return s;
  }
  return deliver_message(consumed, msg_buf_);
}

read_step reader::next(std::span<char> in) {
  if (state_ == state::failed) {
    read_step s;
    s.event = read_event::error;
    s.code = fail_code_;
    s.reason = fail_reason_;
    return s;
  }
  const std::size_t size = in.size();
  auto* bytes = reinterpret_cast<unsigned char*>(in.data());
  // Fast path for the common frame: a whole, final, unextended text/binary frame with a 7- or
  // 16-bit length and the masking our role expects, entirely in the input. Everything it skips
  // (fragments, control frames, RSV bits, limits) falls through to the general parser below.
  if (state_ == state::header && hdr_len_ == 0 && !in_message_ && size >= 2) {
    unsigned b0 = bytes[0], b1 = bytes[1];
    unsigned want_mask = cfg_.role == role::server ? 0x80 : 0;
    if ((b0 == 0x81 || b0 == 0x82) && (b1 & 0x80) == want_mask) {
      std::size_t len = b1 & 0x7F;
      std::size_t h = 2;
      bool simple = len < 126;
      if (len == 126 && size >= 4) {
        len = (std::size_t{bytes[2]} << 8) | bytes[3];
        h = 4;
        simple = true;
      }
      std::size_t mh = want_mask ? 4 : 0;
      if (simple) {
        if (size >= h + mh + len && len <= cfg_.max_frame_bytes && len <= cfg_.max_message_bytes) {
          char* p = in.data() + h + mh;
          if (mh) {
            apply_mask(p, len, bytes + h);
          }
          opcode op = b0 == 0x81 ? opcode::text : opcode::binary;
          if (op == opcode::text && cfg_.validate_utf8 && !is_valid_utf8({p, len})) {
            return fail(close_code::invalid_payload, "text message is not valid UTF-8");
          }
          read_step s;
          s.event = read_event::message;
          s.consumed = h + mh + len;
          s.type = op;
          s.data = std::string_view(p, len);
          return s;
        }
      }
    }
  }
  std::size_t consumed = 0;
  for (;;) {
    if (state_ == state::header) {
      const unsigned char* h;
      std::size_t avail = size - consumed;
      if (hdr_len_ == 0 && avail >= 2 && avail >= header_size(bytes[consumed + 1])) {
        // Common case: the whole header is in the input; parse it where it is.
        h = bytes + consumed;
        consumed += header_size(bytes[consumed + 1]);
      } else {
        while (hdr_len_ < 2 && consumed < size) {
          hdr_[hdr_len_++] = bytes[consumed++];
        }
        if (hdr_len_ < 2) {
          return need_more(consumed);
        }
        std::size_t need = header_size(hdr_[1]);
        std::size_t take = need - hdr_len_;
        if (take > size - consumed) {
          take = size - consumed;
        }
        std::memcpy(hdr_ + hdr_len_, bytes + consumed, take);
        hdr_len_ += take;
        consumed += take;
        if (hdr_len_ < need) {
          return need_more(consumed);
        }
        h = hdr_;
        hdr_len_ = 0;
      }
      if (!begin_frame(h)) {
        return next(in);  // reports the sticky error
      }
      state_ = state::payload;
      // Zero-copy path: a whole unfragmented, uncompressed data frame is in the input.
      if (fin_ && !compressed_ && (op_ == opcode::text || op_ == opcode::binary) &&
          remaining_ <= size - consumed) {
        auto n = static_cast<std::size_t>(remaining_);
        char* p = in.data() + consumed;
        if (masked_) {
          apply_mask(p, n, mask_);
        }
        consumed += n;
        remaining_ = 0;
        state_ = state::header;
        in_message_ = false;
        if (op_ == opcode::text && cfg_.validate_utf8 && !is_valid_utf8({p, n})) {
          return fail(close_code::invalid_payload, "text message is not valid UTF-8");
        }
        read_step s;
        s.event = read_event::message;
        s.consumed = consumed;
        s.type = op_;
        s.data = std::string_view(p, n);
        return s;
      }
      if (remaining_ == 0) {
        bool emit;
        read_step s = finish_frame(consumed, emit);
        if (emit || state_ == state::failed) {
          return s;
        }
        continue;
      }
    }
    std::size_t avail = size - consumed;
    if (avail == 0) {
      return need_more(consumed);
    }
    std::size_t n = avail < remaining_ ? avail : static_cast<std::size_t>(remaining_);
    char* p = in.data() + consumed;
    if (masked_) {
      mask_pos_ = apply_mask(p, n, mask_, mask_pos_);
    }
    if (is_control(op_)) {
      std::memcpy(ctrl_ + ctrl_len_, p, n);
      ctrl_len_ += n;
    } else {
      if (!compressed_ && msg_type_ == opcode::text && cfg_.validate_utf8 && !utf8_.feed(p, n)) {
        return fail(close_code::invalid_payload, "text message is not valid UTF-8");
      }
      msg_buf_.append(p, n);
    }
    consumed += n;
    remaining_ -= n;
    if (remaining_ == 0) {
      bool emit;
      read_step s = finish_frame(consumed, emit);
      if (emit || state_ == state::failed) {
        return s;
      }
    }
  }
}

}  // namespace evnet::ws
