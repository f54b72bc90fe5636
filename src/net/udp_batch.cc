#include "net/udp_batch.h"

#include <cerrno>
#include <cstring>

namespace evnet::detail {
namespace {

bool would_block(int err) {
  return err == EAGAIN || err == EWOULDBLOCK;
}

}  // namespace

udp_batch::udp_batch(std::size_t batch_size, std::size_t max_datagram)
    : slots_(batch_size == 0 ? 1 : batch_size),
      max_datagram_(max_datagram == 0 ? 1 : max_datagram),
      in_bytes_(slots_ * max_datagram_),
      in_(slots_),
      in_iov_(slots_),
#if EVNET_HAVE_MMSG
      in_msgs_(slots_),
      out_msgs_(slots_),
#endif
      out_iov_(slots_) {
  // The receive side is wired once: slot i always reads into its own buffer and address.
  for (std::size_t i = 0; i < slots_; ++i) {
    in_iov_[i].iov_base = in_bytes_.data() + i * max_datagram_;
    in_iov_[i].iov_len = max_datagram_;
#if EVNET_HAVE_MMSG
    msghdr& h = in_msgs_[i].msg_hdr;
    h.msg_name = in_[i].peer.data();
    h.msg_iov = &in_iov_[i];
    h.msg_iovlen = 1;
#endif
  }
}

result<std::span<const udp_datagram>> udp_batch::receive(int fd) {
  std::size_t got = 0;
#if EVNET_HAVE_MMSG
  for (std::size_t i = 0; i < slots_; ++i) {
    in_msgs_[i].msg_hdr.msg_namelen = socket_address::capacity();
    in_msgs_[i].msg_hdr.msg_flags = 0;
    in_msgs_[i].msg_len = 0;
  }
  int n;
  do {
    n = ::recvmmsg(fd, in_msgs_.data(), static_cast<unsigned>(slots_), MSG_DONTWAIT, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (would_block(errno)) {
      return std::span<const udp_datagram>{};
    }
    return last_system_error();
  }
  got = static_cast<std::size_t>(n);
  for (std::size_t i = 0; i < got; ++i) {
    const msghdr& h = in_msgs_[i].msg_hdr;
    udp_datagram& d = in_[i];
    d.peer.set_length(h.msg_namelen);
    const std::size_t len =
        in_msgs_[i].msg_len < max_datagram_ ? in_msgs_[i].msg_len : max_datagram_;
    d.data = std::span<const std::byte>(in_bytes_.data() + i * max_datagram_, len);
    d.truncated = (h.msg_flags & MSG_TRUNC) != 0;
  }
#else
  // Fallback: one recvmsg per datagram (recvmsg rather than recvfrom to learn about MSG_TRUNC).
  for (; got < slots_; ++got) {
    udp_datagram& d = in_[got];
    msghdr h{};
    h.msg_name = d.peer.data();
    h.msg_namelen = socket_address::capacity();
    h.msg_iov = &in_iov_[got];
    h.msg_iovlen = 1;
    ssize_t n;
    do {
      n = ::recvmsg(fd, &h, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (would_block(errno)) {
        break;
      }
      if (got == 0) {
        return last_system_error();
      }
      break;  // Report what we have; the error will come back on the next call.
    }
    d.peer.set_length(h.msg_namelen);
    const auto len =
        static_cast<std::size_t>(n) < max_datagram_ ? static_cast<std::size_t>(n) : max_datagram_;
    d.data = std::span<const std::byte>(in_bytes_.data() + got * max_datagram_, len);
    d.truncated = (h.msg_flags & MSG_TRUNC) != 0;
  }
#endif
  return std::span<const udp_datagram>(in_.data(), got);
}

bool udp_batch::queue(const socket_address& peer, std::span<const std::byte> data) {
  const std::size_t offset = out_bytes_.size();
  // The sent prefix (before out_head_) is not counted: compact_out() drops it.
  const std::size_t unsent = queued() == 0 ? 0 : offset - out_[out_head_].offset;
  if (unsent != 0 && unsent + data.size() > kMaxQueuedBytes) {
    return false;
  }
  out_bytes_.insert(out_bytes_.end(), data.begin(), data.end());
  out_.push_back(outgoing{peer, offset, data.size()});
  return true;
}

void udp_batch::compact_out() noexcept {
  if (out_head_ == 0) {
    return;
  }
  if (out_head_ >= out_.size()) {
    out_.clear();
    out_bytes_.clear();
    out_head_ = 0;
    return;
  }
  // Drop the sent prefix so a queue that never fully drains cannot grow without bound.
  const std::size_t shift = out_[out_head_].offset;
  out_bytes_.erase(out_bytes_.begin(), out_bytes_.begin() + static_cast<std::ptrdiff_t>(shift));
  out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(out_head_));
  for (auto& o : out_) {
    o.offset -= shift;
  }
  out_head_ = 0;
}

result<std::size_t> udp_batch::flush(int fd) {
  std::size_t sent = 0;
  std::error_code first_error;
  const std::size_t per_call = send_cap_ != 0 && send_cap_ < slots_ ? send_cap_ : slots_;
  while (queued() > 0) {
    const std::size_t k = queued() < per_call ? queued() : per_call;
#if EVNET_HAVE_MMSG
    for (std::size_t i = 0; i < k; ++i) {
      const outgoing& o = out_[out_head_ + i];
      out_iov_[i].iov_base = out_bytes_.data() + o.offset;
      out_iov_[i].iov_len = o.size;
      msghdr& h = out_msgs_[i].msg_hdr;
      h = msghdr{};
      if (o.peer.length() > 0) {
        h.msg_name = const_cast<sockaddr*>(o.peer.data());
        h.msg_namelen = o.peer.length();
      }
      h.msg_iov = &out_iov_[i];
      h.msg_iovlen = 1;
    }
    int n;
    do {
      n = ::sendmmsg(fd, out_msgs_.data(), static_cast<unsigned>(k), MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
#else
    (void)k;
    int n;
    {
      const outgoing& o = out_[out_head_];
      ssize_t r;
      do {
        r = ::sendto(fd, out_bytes_.data() + o.offset, o.size, MSG_DONTWAIT | MSG_NOSIGNAL,
                     o.peer.length() > 0 ? o.peer.data() : nullptr, o.peer.length());
      } while (r < 0 && errno == EINTR);
      n = r < 0 ? -1 : 1;
    }
#endif
    if (n < 0) {
      if (would_block(errno)) {
        break;  // Partial flush: the rest stays queued, in order.
      }
      // sendmmsg reports an error only for the first message of a call (later failures end the
      // call early and show up on the next one), so exactly the head datagram failed: drop it.
      if (!first_error) {
        first_error = last_system_error();
      }
      ++out_head_;
      continue;
    }
    out_head_ += static_cast<std::size_t>(n);
    sent += static_cast<std::size_t>(n);
  }
  compact_out();
  if (sent == 0 && first_error) {
    return first_error;
  }
  return sent;
}

}  // namespace evnet::detail
