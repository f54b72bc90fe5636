// evnet — ring_buffer implementation (see include/evnet/ring_buffer.h).
#include "evnet/ring_buffer.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace evnet {

ring_buffer::~ring_buffer() {
  std::free(data_);
}

ring_buffer::ring_buffer(ring_buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      capacity_(std::exchange(other.capacity_, 0)),
      head_(std::exchange(other.head_, 0)),
      tail_(std::exchange(other.tail_, 0)) {}

ring_buffer& ring_buffer::operator=(ring_buffer&& other) noexcept {
  if (this != &other) {
    std::free(data_);
    data_ = std::exchange(other.data_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
    head_ = std::exchange(other.head_, 0);
    tail_ = std::exchange(other.tail_, 0);
  }
  return *this;
}

input_view ring_buffer::peek(std::size_t n) const noexcept {
  const std::size_t len = std::min(n, size());
  if (len == 0) {
    return {};
  }
  const std::size_t start = static_cast<std::size_t>(head_) & (capacity_ - 1);
  const std::size_t first = std::min(len, capacity_ - start);
  const auto* base = reinterpret_cast<const std::byte*>(data_);
  input_view v;
  v.first = std::span<const std::byte>(base + start, first);
  if (first < len) {
    v.second = std::span<const std::byte>(base, len - first);
  }
  return v;
}

std::size_t ring_buffer::discard(std::size_t n) noexcept {
  const std::size_t len = std::min(n, size());
  head_ += len;
  // Restarting at offset 0 when empty keeps the next append (usually a whole message)
  // contiguous, so readers see a single piece.
  if (head_ == tail_) {
    head_ = tail_ = 0;
  }
  return len;
}

std::size_t ring_buffer::read(void* dst, std::size_t n) noexcept {
  const input_view v = peek(n);
  if (v.empty()) {
    return 0;
  }
  std::memcpy(dst, v.first.data(), v.first.size());
  if (!v.second.empty()) {
    std::memcpy(static_cast<char*>(dst) + v.first.size(), v.second.data(), v.second.size());
  }
  return discard(v.size());
}

void ring_buffer::grow(std::size_t need) {
  std::size_t cap = std::max(kMinCapacity, std::bit_ceil(need));
  char* fresh = static_cast<char*>(std::malloc(cap));
  if (fresh == nullptr) {
    throw std::bad_alloc();
  }
  const std::size_t len = size();
  if (len != 0) {
    const input_view v = peek(len);
    std::memcpy(fresh, v.first.data(), v.first.size());
    if (!v.second.empty()) {
      std::memcpy(fresh + v.first.size(), v.second.data(), v.second.size());
    }
  }
  std::free(data_);
  data_ = fresh;
  capacity_ = cap;
  head_ = 0;
  tail_ = len;
}

void ring_buffer::reserve(std::size_t n) {
  if (capacity_ - size() < n) {
    grow(size() + n);
  }
}

void ring_buffer::append(const void* data, std::size_t n) {
  if (n == 0) {
    return;
  }
  reserve(n);
  const std::size_t start = static_cast<std::size_t>(tail_) & (capacity_ - 1);
  const std::size_t first = std::min(n, capacity_ - start);
  std::memcpy(data_ + start, data, first);
  if (first < n) {
    std::memcpy(data_, static_cast<const char*>(data) + first, n - first);
  }
  tail_ += n;
}

int ring_buffer::free_space(iovec iov[2]) noexcept {
  const std::size_t free = capacity_ - size();
  if (free == 0) {
    return 0;
  }
  const std::size_t start = static_cast<std::size_t>(tail_) & (capacity_ - 1);
  const std::size_t first = std::min(free, capacity_ - start);
  iov[0].iov_base = data_ + start;
  iov[0].iov_len = first;
  if (first == free) {
    return 1;
  }
  iov[1].iov_base = data_;
  iov[1].iov_len = free - first;
  return 2;
}

int ring_buffer::data_iov(iovec iov[2]) const noexcept {
  const input_view v = peek();
  if (v.first.empty()) {
    return 0;
  }
  iov[0].iov_base = const_cast<std::byte*>(v.first.data());
  iov[0].iov_len = v.first.size();
  if (v.second.empty()) {
    return 1;
  }
  iov[1].iov_base = const_cast<std::byte*>(v.second.data());
  iov[1].iov_len = v.second.size();
  return 2;
}

void ring_buffer::release() noexcept {
  std::free(data_);
  data_ = nullptr;
  capacity_ = 0;
  head_ = tail_ = 0;
}

}  // namespace evnet
