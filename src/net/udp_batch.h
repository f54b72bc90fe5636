// evnet — batched UDP I/O: receive up to N datagrams with one recvmmsg(2) and send queued replies
// to up to N peers with one sendmmsg(2), falling back to recvfrom/sendto where those are missing.
//
// This is an internal header (namespace evnet::detail); it is not installed.
//
// Threading: a udp_batch is owned by the thread that polls its socket (a loop thread); it is not
// synchronised and never calls back. Its functions are otherwise thread-agnostic wrappers over
// system calls on the fd they are given.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <span>
#include <system_error>
#include <vector>

#include "evnet/address.h"
#include "evnet/result.h"

// recvmmsg/sendmmsg exist on Linux (and recent FreeBSD/NetBSD, not enabled here yet). A build
// may force the portable fallback with -DEVNET_HAVE_MMSG=0 (the tests build both).
#ifndef EVNET_HAVE_MMSG
#if defined(__linux__)
#define EVNET_HAVE_MMSG 1
#else
#define EVNET_HAVE_MMSG 0
#endif
#endif

namespace evnet::detail {

/// One received datagram: its bytes (a span into the batch's preallocated buffer, valid until the
/// next receive() on the same batch) and the sender's address.
struct udp_datagram {
  /// The payload; at most the batch's max_datagram bytes.
  std::span<const std::byte> data;
  /// The sender.
  socket_address peer;
  /// True when the datagram was longer than the buffer and was cut (MSG_TRUNC).
  bool truncated = false;
};

/// Preallocated buffers for batched UDP receives and sends.
///
/// receive() fills up to batch_size() datagrams at once; queue() copies replies into the batch's
/// own send storage (so the caller's buffers may be reused at once) and flush() sends everything
/// queued with as few sendmmsg calls as possible, keeping the unsent tail queued when the socket
/// would block.
///
/// Threading: one batch per socket per loop thread; not synchronised; no callbacks.
class udp_batch {
 public:
  /// Allocates `batch_size` receive slots of `max_datagram` bytes each (64 KiB - 1 holds any
  /// IPv4/IPv6 UDP payload; smaller values truncate longer datagrams, reported per datagram).
  explicit udp_batch(std::size_t batch_size = 32, std::size_t max_datagram = 65535);

  udp_batch(const udp_batch&) = delete;
  udp_batch& operator=(const udp_batch&) = delete;

  /// Receives up to batch_size() datagrams without blocking (MSG_DONTWAIT), with one recvmmsg call
  /// (or a recvfrom loop where recvmmsg is missing). Returns the datagrams received, in arrival
  /// order, as spans into the batch valid until the next receive(); an empty span when none was
  /// waiting (EAGAIN is not an error); a system error otherwise (ECONNREFUSED can be reported on a
  /// connected UDP socket after an ICMP port-unreachable).
  result<std::span<const udp_datagram>> receive(int fd);

  /// Most bytes queued and not yet sent: while the socket will not take more (EAGAIN), a
  /// datagram that would pass this is refused (UDP may drop; memory must not grow unbounded).
  static constexpr std::size_t kMaxQueuedBytes = 4u << 20;

  /// Queues a copy of `data` for `peer`; the datagram is sent by the next flush(), in batches of
  /// batch_size(). Never blocks. Returns false (nothing queued) when the bytes queued and not
  /// yet sent would pass kMaxQueuedBytes; one datagram is always accepted into an empty queue.
  /// An empty `peer` (default-constructed) sends on a connected socket without a destination.
  [[nodiscard]] bool queue(const socket_address& peer, std::span<const std::byte> data);

  /// Sends the queued datagrams with sendmmsg (or sendto), batch_size() per call, without
  /// blocking. Returns the number sent. Stops and keeps the unsent datagrams queued (in order)
  /// when the socket would block (EAGAIN; poll for writability and flush again) — that is a
  /// partial flush, not an error. A datagram the kernel rejects for its own reason (EMSGSIZE, an
  /// unreachable peer) is dropped and its error returned as the result only when nothing else was
  /// sent; UDP gives no delivery guarantee, so one bad peer must not block replies to the others.
  result<std::size_t> flush(int fd);

  /// Datagrams queued and not yet sent.
  std::size_t queued() const noexcept { return out_.size() - out_head_; }

  /// Receive slots (and the largest sendmmsg batch).
  std::size_t batch_size() const noexcept { return slots_; }

  /// Bytes per receive slot.
  std::size_t max_datagram() const noexcept { return max_datagram_; }

  /// Whether this build uses recvmmsg/sendmmsg (false: the recvfrom/sendto fallback).
  static constexpr bool uses_mmsg() noexcept { return EVNET_HAVE_MMSG != 0; }

  /// Test hook: caps how many messages one sendmmsg call is handed (0 = batch_size()), so tests
  /// can exercise the partial-send path deterministically.
  void set_send_cap_for_test(std::size_t cap) noexcept { send_cap_ = cap; }

 private:
  struct outgoing {
    socket_address peer;
    std::size_t offset;  // Into out_bytes_.
    std::size_t size;
  };

  void compact_out() noexcept;

  std::size_t slots_;
  std::size_t max_datagram_;
  std::vector<std::byte> in_bytes_;
  std::vector<udp_datagram> in_;
  std::vector<iovec> in_iov_;
#if EVNET_HAVE_MMSG
  std::vector<mmsghdr> in_msgs_;
  std::vector<mmsghdr> out_msgs_;
#endif
  std::vector<iovec> out_iov_;
  std::vector<outgoing> out_;
  std::vector<std::byte> out_bytes_;
  std::size_t out_head_ = 0;
  std::size_t send_cap_ = 0;
};

}  // namespace evnet::detail
