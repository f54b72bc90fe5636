// Internal: the per-connection WebSocket protocol engine shared by the server and the client.
#pragma once

#include <cstring>
#include <memory>
#include <string>

#include "evnet/conn.h"
#include "evnet/http/server.h"
#include "evnet/loop.h"
#include "evnet/ws/connection.h"

namespace evnet::ws::detail {

/// A plain growable byte buffer for staged frames: cheaper than std::string appends on the
/// per-message path (no zero fill, no per-append bookkeeping beyond one capacity check).
class out_buffer {
 public:
  /// Space for at least n more bytes; follow with commit(). The pointer is valid until the
  /// next reserve.
  char* reserve(std::size_t n) {
    if (size_ + n > cap_) {
      grow(size_ + n);
    }
    return data_.get() + size_;
  }
  void commit(std::size_t n) noexcept { size_ += n; }
  void append(std::string_view s) {
    std::memcpy(reserve(s.size()), s.data(), s.size());
    size_ += s.size();
  }
  std::string_view view() const noexcept { return {data_.get(), size_}; }
  char* data() noexcept { return data_.get(); }
  bool empty() const noexcept { return size_ == 0; }
  void clear() noexcept { size_ = 0; }

 private:
  void grow(std::size_t need) {
    std::size_t cap = cap_ ? cap_ * 2 : 4096;
    while (cap < need) {
      cap *= 2;
    }
    auto d = std::make_unique<char[]>(cap);
    if (size_) {
      std::memcpy(d.get(), data_.get(), size_);
    }
    data_ = std::move(d);
    cap_ = cap;
  }
  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0;
  std::size_t cap_ = 0;
};

/// Runs RFC 6455 on one evnet::conn after the handshake. Loop thread only.
class session final : public http::upgraded_protocol {
 public:
  session(evnet::conn& c, handler& h, const options& o, role r, std::string subprotocol,
          std::string extensions, std::string target, const deflate_params* deflate);
  ~session() override;

  action on_traffic(evnet::conn& c) override;
  void on_close(evnet::conn& c, std::error_code reason) override;
  void on_upgraded(evnet::conn& c, std::string& out) override;

  /// Writes one frame (compressing / masking as negotiated). Loop thread.
  std::error_code write_message(opcode op, std::string_view payload);
  /// Sends a close frame and starts the close timer. Loop thread.
  void start_close(std::uint16_t code, std::string_view reason);

  const connection_ptr& handle() const noexcept { return conn_; }

 private:
  void write_frame(opcode op, std::string_view payload, bool rsv1);
  void flush();
  // Processes one contiguous piece of input; returns false when input processing must stop.
  bool process(char* data, std::size_t len, std::size_t& consumed);
  void fail(std::uint16_t code, std::string_view reason);

  evnet::conn& tcp_;
  handler& handler_;
  const options& opts_;
  role role_;
  connection_ptr conn_;
  reader reader_;
  std::unique_ptr<inflater> inflater_;
  std::unique_ptr<deflater> deflater_;
  out_buffer out_;         // frames staged during a callback batch
  std::string scratch_;    // compression output
  bool batching_ = false;  // inside on_traffic/on_upgraded: stage writes in out_
  bool close_sent_ = false;
  bool close_received_ = false;
  bool done_ = false;  // stop processing input (closing)
  std::uint16_t close_code_ = close_code::abnormal;
  std::string close_reason_;
  timer_id close_timer_ = 0;
};

}  // namespace evnet::ws::detail
