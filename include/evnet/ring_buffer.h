// evnet — ring_buffer: a growable byte ring used for a connection's input and output.
//
// This is a public header. The buffer holds no memory until bytes are first stored in it
// (so an idle connection costs only the object itself, 32 bytes), grows by powers of two, and
// can give its memory back with release() once it is empty. Readers see the stored bytes as
// at most two contiguous pieces (an input_view, from evnet/framing.h) without copying:
//
//        head                 tail                        capacity
//   [....|####### first #####|.........free...............]          (no wrap)
//   [## second ##|.....free.......|######## first #########]          (wrapped)
//                tail             head
//
// Threading: a ring_buffer is a plain value with no internal synchronisation. A connection's
// buffers are touched only on the connection's loop thread.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "evnet/framing.h"

namespace evnet {

// input_view (two spans over a ring's halves) is defined in evnet/framing.h so the frame
// decoders consume a connection's input directly.

/// The bytes of a span as characters. Thread-agnostic.
inline std::string_view as_chars(std::span<const std::byte> s) noexcept {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

/// A span of bytes over characters. Thread-agnostic.
inline std::span<const std::byte> as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

/// Copies both pieces of `v` into one string (allocates; for tests and slow paths).
/// Thread-agnostic.
inline std::string to_string(const input_view& v) {
  std::string s;
  s.reserve(v.size());
  s.append(as_chars(v.first));
  s.append(as_chars(v.second));
  return s;
}

/// A growable power-of-two byte ring with lazy allocation. Not thread-safe (see file comment).
class ring_buffer {
 public:
  /// Smallest capacity allocated.
  static constexpr std::size_t kMinCapacity = 256;

  /// An empty ring that owns no memory.
  ring_buffer() noexcept = default;
  /// Frees the memory.
  ~ring_buffer();
  /// Takes other's bytes and memory; other is left empty, owning nothing.
  ring_buffer(ring_buffer&& other) noexcept;
  /// Frees ours, then takes other's bytes and memory; other is left empty.
  ring_buffer& operator=(ring_buffer&& other) noexcept;
  ring_buffer(const ring_buffer&) = delete;
  ring_buffer& operator=(const ring_buffer&) = delete;

  /// Number of stored bytes.
  std::size_t size() const noexcept { return static_cast<std::size_t>(tail_ - head_); }
  /// True when no bytes are stored.
  bool empty() const noexcept { return tail_ == head_; }
  /// Bytes of memory held (0 before the first append or after release()).
  std::size_t capacity() const noexcept { return capacity_; }

  /// The first min(n, size()) stored bytes, without consuming them.
  input_view peek(std::size_t n = static_cast<std::size_t>(-1)) const noexcept;

  /// Consumes min(n, size()) bytes; returns how many. When the ring becomes empty its indices
  /// reset so the next append is contiguous.
  std::size_t discard(std::size_t n = static_cast<std::size_t>(-1)) noexcept;

  /// Copies up to n bytes into dst and consumes them; returns the count.
  std::size_t read(void* dst, std::size_t n) noexcept;

  /// Appends n bytes, growing (power of two) as needed.
  void append(const void* data, std::size_t n);
  /// Appends the bytes of `data`.
  void append(std::string_view data) { append(data.data(), data.size()); }

  /// Ensures at least n bytes of free space (may grow).
  void reserve(std::size_t n);

  /// Fills iov[0..1] with the free space (for readv); returns the number of iovecs used
  /// (0 when the ring holds no memory or is full). Follow with commit().
  int free_space(iovec iov[2]) noexcept;

  /// Marks n bytes written into the space returned by free_space() as stored.
  void commit(std::size_t n) noexcept { tail_ += n; }

  /// Fills iov[0..1] with the stored bytes (for writev); returns the number of iovecs used.
  int data_iov(iovec iov[2]) const noexcept;

  /// Drops every stored byte, keeping the memory.
  void clear() noexcept { head_ = tail_ = 0; }

  /// Drops every stored byte and frees the memory.
  void release() noexcept;

 private:
  void grow(std::size_t need);
  char* data_ = nullptr;
  std::size_t capacity_ = 0;  // 0 or a power of two
  std::uint64_t head_ = 0;    // logical index of the first stored byte
  std::uint64_t tail_ = 0;    // logical index one past the last stored byte
};

}  // namespace evnet
