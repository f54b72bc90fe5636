// evnet — permessage-deflate (RFC 7692): parameter negotiation and the zlib codecs.
//
// This is a public header. Codec objects hold zlib streams and are used by one thread at a time
// (the connection's loop thread); the negotiation functions are pure and safe from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace evnet::ws {

/// Negotiated permessage-deflate parameters (RFC 7692 §7.1).
struct deflate_params {
  bool server_no_context_takeover = false;  ///< Server resets its compressor per message.
  bool client_no_context_takeover = false;  ///< Client resets its compressor per message.
  int server_max_window_bits = 15;          ///< LZ77 window of the server's compressor (8..15).
  int client_max_window_bits = 15;          ///< LZ77 window of the client's compressor (8..15).
};

/// Server side: picks the first acceptable permessage-deflate offer in a
/// Sec-WebSocket-Extensions header value. On success returns the agreed parameters and sets
/// `response` to the value for our Sec-WebSocket-Extensions response header. `want` gives the
/// server's own preferences (e.g. server_no_context_takeover to save memory per connection).
/// Offers with unknown or malformed parameters are skipped, as RFC 7692 §5 requires.
std::optional<deflate_params> negotiate_deflate(std::string_view offers, std::string& response,
                                                const deflate_params& want = {});

/// Client side: the offer string for our request (RFC 7692 §7.1).
std::string deflate_offer(const deflate_params& want = {});

/// Client side: parses the server's Sec-WebSocket-Extensions response to our offer. `offered`
/// is what was given to deflate_offer(). Returns the parameters in force, or nullopt if the
/// response is invalid (the client must then fail the connection, RFC 7692 §7.1): unknown,
/// duplicate or malformed parameters, a window outside 8..15, or a response that does not accept
/// what we offered: with server_max_window_bits=N offered, one without server_max_window_bits
/// or with one above N; with server_no_context_takeover offered, one without it. With
/// client_no_context_takeover offered, the result has it whether or not the response names it
/// (RFC 7692 §7.1.1.2: the offer tells the server we will not use context takeover).
std::optional<deflate_params> parse_deflate_response(std::string_view value,
                                                     const deflate_params& offered = {});

/// Outcome of inflater::inflate_message().
enum class inflate_result : std::uint8_t { ok, too_big, corrupt };

/// Decompresses messages of one direction. Owner thread only.
class inflater {
 public:
  /// `window_bits` is the peer's max_window_bits; `no_context_takeover` the peer's flag.
  inflater(int window_bits, bool no_context_takeover);
  ~inflater();
  inflater(const inflater&) = delete;
  inflater& operator=(const inflater&) = delete;

  /// Appends the inflated form of one whole compressed message to `out`. Stops and returns
  /// too_big as soon as the output would pass `max_bytes`, so a compression bomb costs at most
  /// `max_bytes` of memory and the matching CPU time.
  inflate_result inflate_message(std::string_view compressed, std::string& out,
                                 std::uint64_t max_bytes);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Compresses messages of one direction. Owner thread only.
class deflater {
 public:
  /// `window_bits` is our max_window_bits (8..15); `no_context_takeover` our flag.
  deflater(int window_bits, bool no_context_takeover, int level = 1);
  ~deflater();
  deflater(const deflater&) = delete;
  deflater& operator=(const deflater&) = delete;

  /// Appends the compressed form of one whole message to `out` (without the trailing
  /// 00 00 FF FF, per RFC 7692 §7.2.1). Returns false on an internal zlib failure.
  bool deflate_message(std::string_view message, std::string& out);

  /// Forgets the compression history, as a new deflater would. Call it when a message that
  /// deflate_message() compressed is sent uncompressed after all (RSV1 is chosen per message,
  /// RFC 7692 §6): later messages must not refer back to bytes the peer never inflated.
  void reset() noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace evnet::ws
