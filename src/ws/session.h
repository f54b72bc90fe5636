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

struct session_test_access;  // tests only: the capacity of the per-connection buffers

/// Per-connection buffers larger than this are freed once they are no longer in use (the reader
/// keeps the same bound, see reader::release_buffers).
inline constexpr std::size_t kKeepCapacity = 64 * 1024;

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
    if (s.empty()) {
      return;  // an empty view may have no data pointer (memcpy's is nonnull)
    }
    std::memcpy(reserve(s.size()), s.data(), s.size());
    size_ += s.size();
  }
  std::string_view view() const noexcept { return {data_.get(), size_}; }
  std::size_t size() const noexcept { return size_; }
  char* data() noexcept { return data_.get(); }
  bool empty() const noexcept { return size_ == 0; }
  void clear() noexcept { size_ = 0; }
  std::size_t capacity() const noexcept { return cap_; }
  /// When empty, frees the storage if it is larger than `keep` bytes (one large message must not
  /// pin its size for the connection's life).
  void shrink(std::size_t keep) noexcept {
    if (size_ == 0 && cap_ > keep) {
      data_.reset();
      cap_ = 0;
    }
  }
  /// Removes the first n bytes (n <= size()).
  void drop_front(std::size_t n) noexcept {
    if (n < size_) {
      std::memmove(data_.get(), data_.get() + n, size_ - n);
    }
    size_ -= n;
  }

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
  /// The engine is stopping: sends a 1001 "going away" close (unless a close was sent already)
  /// and keeps the connection open for the peer's reply, which ends it (or close_timeout, or
  /// the engine's stop grace period).
  action on_stopping(evnet::conn& c) override;

  /// Writes one frame (compressing / masking as negotiated). Loop thread.
  std::error_code write_message(opcode op, std::string_view payload);
  /// Sends a close frame and starts the close timer. Loop thread.
  void start_close(std::uint16_t code, std::string_view reason);

  const connection_ptr& handle() const noexcept { return conn_; }

  /// The TCP connection's output rose above the engine's high-water mark (evnet::handler::
  /// on_high_water) / drained after that (on_drain): tells the ws::handler. Loop thread.
  void high_water();
  void drained();
  /// Bytes staged for the end of the current callback batch. Loop thread.
  std::size_t staged_bytes() const noexcept;
  /// The server-role session serving `c`, or nullptr (sessions register themselves on their
  /// loop thread, so the lookup needs no lock). Loop thread of `c`.
  static session* of(const evnet::conn& c) noexcept;

 private:
  friend struct session_test_access;
  // The session of a connection handle (null once closed), for session_test_access.
  static session* of(const connection& c) noexcept { return c.session_; }
  void write_frame(opcode op, std::string_view payload, bool rsv1);
  // True when `p` lies entirely in the input being processed by on_traffic (see borrowed).
  bool in_input(std::string_view p) const noexcept;
  void flush();
  // Writes out_ with the borrowed payloads in place (n_borrowed_ > 0): one writev.
  void write_staged();
  void flush_if_staged_too_much();
  // Processes one contiguous piece of input; returns false when input processing must stop.
  bool process(char* data, std::size_t len, std::size_t& consumed);
  void fail(std::uint16_t code, std::string_view reason);
  // Keepalive (options::ping_interval): the timer's next check, and the check itself.
  void arm_keepalive(std::chrono::milliseconds after);
  void keepalive_check();
  // Runs a handler callback; an exception fails the connection with 1011.
  template <typename F>
  void guarded(F&& f);

  evnet::conn& tcp_;
  handler& handler_;
  const options& opts_;
  role role_;
  connection_ptr conn_;
  // Layout: the state every message touches (staging, the counts of borrowed payloads, out_,
  // the reader's fields) comes before the big arrays (borrowed_ here, the reader's control
  // frame buffer there), so over many connections a message touches few cache lines of it.
  // Where writes go: straight to the socket, or staged in out_ and written together at the end
  // of on_upgraded / on_traffic (only on_traffic's input can lend payloads: see borrowed).
  enum class staging : std::uint8_t { none, open, traffic };
  staging staging_ = staging::none;
  bool flushing_ = false;  // inside flush(): see there
  bool close_sent_ = false;
  bool close_received_ = false;
  bool done_ = false;  // stop processing input (closing)
  // We failed the connection (fail()) while the peer may still be sending: our close frame is
  // followed by a FIN and the peer's bytes are read and dropped until its EOF or close_timeout,
  // so that closing with its bytes unread does not reset the connection before it has read
  // the close frame (it would see 1006, not our code).
  bool lingering_ = false;
  bool failed_ = false;    // fail() was called
  bool heard_ = false;     // keepalive: bytes arrived since the last check
  bool ping_out_ = false;  // keepalive: our ping awaits any sign of life
  std::uint16_t close_code_ = close_code::abnormal;
  std::size_t n_borrowed_ = 0;
  std::size_t borrowed_bytes_ = 0;  // sum of borrowed_[i].len
  out_buffer out_;                  // frames staged during a callback batch
  reader reader_;
  std::unique_ptr<inflater> inflater_;
  std::unique_ptr<deflater> deflater_;
  // A reply payload staged by reference instead of copied into out_: it lies in this round's
  // input (an echo of a message unmasked in place), which stays untouched until on_traffic
  // returns, so flush() writes it from there with one writev. It belongs in the output stream
  // at byte `at` of out_. Only payloads of at least kBorrowMin bytes are worth an iovec.
  struct borrowed {
    std::size_t at;
    const char* data;
    std::size_t len;
  };
  static constexpr std::size_t kBorrowMin = 512;
  // conn::writev takes up to 64 pieces: each borrow adds at most two.
  static constexpr std::size_t kMaxBorrowed = 31;
  borrowed borrowed_[kMaxBorrowed];
  // Staged bytes (owned and borrowed) beyond which write_frame flushes before the batch ends.
  static constexpr std::size_t kMaxStaged = 64 * 1024;
  std::string scratch_;  // compression output
  std::string close_reason_;
  timer_id close_timer_ = 0;
  timer_id keepalive_timer_ = 0;
};

}  // namespace evnet::ws::detail
