// Tests of src/net/udp_batch.h with real UDP sockets on 127.0.0.1 (and a Unix datagram pair for
// the would-block path, which loopback UDP never reaches).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "net/socket.h"
#include "net/udp_batch.h"

// test_udp_batch_fallback.cc includes this file with EVNET_HAVE_MMSG=0 and another suite name.
#ifndef UDP_BATCH_SUITE
#define UDP_BATCH_SUITE udp_batch
#endif

namespace evnet::detail {
namespace {

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

std::string text_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

int udp_server() {
  auto fd = open_listener(*parse_endpoint("udp4://127.0.0.1:0"), {});
  EXPECT_TRUE(fd) << fd.error().message();
  return *fd;
}

// A client socket connected to the server, so plain send() reaches it and recv() gets replies.
int udp_client(int server) {
  bool in_progress = false;
  auto fd = start_connect(*socket_address::local_of(server), transport::udp, &in_progress);
  EXPECT_TRUE(fd) << fd.error().message();
  return *fd;
}

bool wait_readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

struct received {
  std::string data;
  socket_address peer;
  bool truncated;
};

// Receives until `want` datagrams have arrived or 2 s pass; returns them in order.
std::vector<received> receive_n(udp_batch& batch, int fd, std::size_t want) {
  std::vector<received> out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (out.size() < want && std::chrono::steady_clock::now() < deadline) {
    if (!wait_readable(fd, 100)) {
      continue;
    }
    auto r = batch.receive(fd);
    EXPECT_TRUE(r) << r.error().message();
    if (!r) {
      break;
    }
    for (const auto& d : *r) {
      out.push_back({text_of(d.data), d.peer, d.truncated});
    }
  }
  return out;
}

std::string recv_one(int fd) {
  if (!wait_readable(fd, 2000)) {
    return "<timeout>";
  }
  char buf[70000];
  const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  return n < 0 ? "<error>" : std::string(buf, static_cast<std::size_t>(n));
}

TEST(UDP_BATCH_SUITE, datagram_boundaries_kept) {
  const int server = udp_server();
  const int client = udp_client(server);
  const std::vector<std::string> sent = {"a", "bb", "", std::string(1000, 'c'), "dd\nee"};
  for (const auto& s : sent) {
    ASSERT_EQ(send_nosignal(client, s.data(), s.size()), ssize_t(s.size()));
  }
  udp_batch batch(8, 2048);
  auto got = receive_n(batch, server, sent.size());
  ASSERT_EQ(got.size(), sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(got[i].data, sent[i]) << i;
    EXPECT_FALSE(got[i].truncated);
    EXPECT_EQ(got[i].peer, *socket_address::local_of(client));
  }
  ::close(client);
  ::close(server);
}

TEST(UDP_BATCH_SUITE, one_receive_takes_a_whole_batch) {
  const int server = udp_server();
  const int client = udp_client(server);
  for (int i = 0; i < 10; ++i) {
    const std::string s = "m" + std::to_string(i);
    ASSERT_EQ(send_nosignal(client, s.data(), s.size()), ssize_t(s.size()));
  }
  // Loopback delivers before send returns, so all 10 are queued now.
  ASSERT_TRUE(wait_readable(server, 2000));
  udp_batch batch(4, 64);
  std::vector<std::size_t> sizes;
  std::vector<std::string> all;
  for (;;) {
    auto r = batch.receive(server);
    ASSERT_TRUE(r);
    if (r->empty()) {
      break;
    }
    sizes.push_back(r->size());
    for (const auto& d : *r) {
      all.push_back(text_of(d.data));
    }
  }
  ASSERT_EQ(all.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(all[i], "m" + std::to_string(i));
  }
  if (udp_batch::uses_mmsg()) {
    EXPECT_EQ(sizes, (std::vector<std::size_t>{4, 4, 2})) << "recvmmsg should fill whole batches";
  }
  ::close(client);
  ::close(server);
}

TEST(UDP_BATCH_SUITE, receive_with_nothing_waiting_is_empty_not_error) {
  const int server = udp_server();
  udp_batch batch(4, 64);
  auto r = batch.receive(server);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->empty());
  EXPECT_EQ(batch.receive(-1).error(), std::errc::bad_file_descriptor);
  ::close(server);
}

TEST(UDP_BATCH_SUITE, oversize_datagram_is_truncated_and_flagged) {
  const int server = udp_server();
  const int client = udp_client(server);
  const std::string big(20, 'x');
  ASSERT_EQ(send_nosignal(client, big.data(), big.size()), 20);
  ASSERT_EQ(send_nosignal(client, "ok", 2), 2);
  udp_batch batch(4, 8);
  auto got = receive_n(batch, server, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].data, std::string(8, 'x'));
  EXPECT_TRUE(got[0].truncated);
  EXPECT_EQ(got[1].data, "ok");
  EXPECT_FALSE(got[1].truncated);
  ::close(client);
  ::close(server);
}

TEST(UDP_BATCH_SUITE, reply_reaches_the_right_sender) {
  const int server = udp_server();
  const int c1 = udp_client(server);
  const int c2 = udp_client(server);
  ASSERT_EQ(send_nosignal(c1, "from-1", 6), 6);
  ASSERT_EQ(send_nosignal(c2, "from-2", 6), 6);
  ASSERT_EQ(send_nosignal(c1, "again-1", 7), 7);
  udp_batch batch(8, 512);
  auto got = receive_n(batch, server, 3);
  ASSERT_EQ(got.size(), 3u);
  for (const auto& d : got) {
    const std::string reply = "echo:" + d.data;
    ASSERT_TRUE(batch.queue(d.peer, bytes_of(reply)));
  }
  EXPECT_EQ(batch.queued(), 3u);
  auto sent = batch.flush(server);
  ASSERT_TRUE(sent) << sent.error().message();
  EXPECT_EQ(*sent, 3u);
  EXPECT_EQ(batch.queued(), 0u);
  EXPECT_EQ(recv_one(c1), "echo:from-1");
  EXPECT_EQ(recv_one(c1), "echo:again-1");
  EXPECT_EQ(recv_one(c2), "echo:from-2");
  EXPECT_FALSE(wait_readable(c2, 50)) << "c2 got a reply meant for c1";
  ::close(c1);
  ::close(c2);
  ::close(server);
}

TEST(UDP_BATCH_SUITE, queue_copies_so_caller_buffers_may_be_reused) {
  const int server = udp_server();
  const int client = udp_client(server);
  const auto to = *socket_address::local_of(client);
  udp_batch batch(4, 64);
  std::string buf = "first";
  ASSERT_TRUE(batch.queue(to, bytes_of(buf)));
  buf = "SECOND";
  ASSERT_TRUE(batch.queue(to, bytes_of(buf)));
  buf.assign(5, '#');
  ASSERT_EQ(*batch.flush(server), 2u);
  EXPECT_EQ(recv_one(client), "first");
  EXPECT_EQ(recv_one(client), "SECOND");
  ::close(client);
  ::close(server);
}

TEST(UDP_BATCH_SUITE, flush_in_capped_batches_keeps_order) {
  const int server = udp_server();
  const int client = udp_client(server);
  const auto to = *socket_address::local_of(client);
  udp_batch batch(8, 64);
  batch.set_send_cap_for_test(2);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(batch.queue(to, bytes_of("r" + std::to_string(i))));
  }
  auto sent = batch.flush(server);
  ASSERT_TRUE(sent);
  EXPECT_EQ(*sent, 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(recv_one(client), "r" + std::to_string(i));
  }
  ::close(client);
  ::close(server);
}

TEST(UDP_BATCH_SUITE, partial_sendmmsg_on_rejected_datagram_continues_with_the_rest) {
  // A 70,000-byte datagram cannot be sent over UDP/IPv4 (EMSGSIZE): sendmmsg stops before it and
  // the next call fails on it. It must be dropped, and the replies behind it still go out.
  const int server = udp_server();
  const int client = udp_client(server);
  const auto to = *socket_address::local_of(client);
  udp_batch batch(8, 64);
  ASSERT_TRUE(batch.queue(to, bytes_of("before")));
  const std::string huge(70000, 'h');
  ASSERT_TRUE(batch.queue(to, bytes_of(huge)));
  ASSERT_TRUE(batch.queue(to, bytes_of("after")));
  auto sent = batch.flush(server);
  ASSERT_TRUE(sent) << sent.error().message();
  EXPECT_EQ(*sent, 2u);
  EXPECT_EQ(batch.queued(), 0u);
  EXPECT_EQ(recv_one(client), "before");
  EXPECT_EQ(recv_one(client), "after");
  // When nothing at all could be sent, the error is reported.
  ASSERT_TRUE(batch.queue(to, bytes_of(huge)));
  auto failed = batch.flush(server);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error(), std::errc::message_size);
  EXPECT_EQ(batch.queued(), 0u);
  ::close(client);
  ::close(server);
}

// While the socket will not take more, the queue stops at kMaxQueuedBytes: queue() refuses the
// datagram that would pass it (it grew without bound before, at about 200 bytes per datagram
// here), and accepts again once a flush has sent some.
TEST(UDP_BATCH_SUITE, queue_is_bounded_while_the_socket_would_block) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  udp_batch batch(16, 1024);
  std::string msg(1000, 'q');
  // Fill the receiver until the kernel refuses, so nothing more leaves.
  for (;;) {
    ASSERT_TRUE(batch.queue(socket_address{}, bytes_of(msg)));
    auto r = batch.flush(sv[0]);
    ASSERT_TRUE(r) << r.error().message();
    if (batch.queued() > 0) {
      break;
    }
  }
  std::size_t accepted = batch.queued();
  while (accepted < 100000 && batch.queue(socket_address{}, bytes_of(msg))) {
    ++accepted;
  }
  EXPECT_LE(accepted * msg.size(), udp_batch::kMaxQueuedBytes);
  EXPECT_GT(accepted * msg.size(), udp_batch::kMaxQueuedBytes - 2 * msg.size());
  EXPECT_FALSE(batch.queue(socket_address{}, bytes_of(msg)));
  // Drain the receiver: a flush sends some, and the queue takes datagrams again.
  char buf[1024];
  while (::recv(sv[1], buf, sizeof buf, MSG_DONTWAIT) > 0) {
  }
  auto r = batch.flush(sv[0]);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_GT(*r, 0u);
  EXPECT_TRUE(batch.queue(socket_address{}, bytes_of(msg)));
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(UDP_BATCH_SUITE, partial_sendmmsg_on_would_block_keeps_the_tail_queued) {
  // A Unix datagram pair blocks when the receiver's queue is full (loopback UDP drops instead),
  // which makes sendmmsg return fewer messages than asked and the next call fail with EAGAIN.
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  const int sndbuf = 4096;
  ASSERT_EQ(::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
  udp_batch batch(16, 1024);
  const int total = 3000;
  for (int i = 0; i < total; ++i) {
    std::string msg = std::to_string(i);
    msg.resize(200, '.');
    ASSERT_TRUE(batch.queue(socket_address{}, bytes_of(msg)));  // Connected pair: no destination.
  }
  auto first = batch.flush(sv[0]);
  ASSERT_TRUE(first) << first.error().message();
  ASSERT_LT(*first, std::size_t(total)) << "the socket never filled up; test proves nothing";
  EXPECT_EQ(batch.queued(), total - *first);

  // Drain and flush alternately until everything went through; order must be preserved.
  std::size_t sent = *first;
  int next = 0;
  char buf[1024];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (next < total && std::chrono::steady_clock::now() < deadline) {
    ssize_t n;
    while ((n = ::recv(sv[1], buf, sizeof buf, MSG_DONTWAIT)) > 0) {
      ASSERT_EQ(n, 200);
      ASSERT_EQ(std::atoi(buf), next) << "datagrams reordered or lost";
      ++next;
    }
    if (batch.queued() > 0) {
      auto more = batch.flush(sv[0]);
      ASSERT_TRUE(more) << more.error().message();
      sent += *more;
    }
  }
  EXPECT_EQ(next, total);
  EXPECT_EQ(sent, std::size_t(total));
  EXPECT_EQ(batch.queued(), 0u);
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(UDP_BATCH_SUITE, ipv6_round_trip) {
  auto server = open_listener(*parse_endpoint("udp6://[::1]:0"), {});
  if (!server) {
    GTEST_SKIP() << "no IPv6 loopback: " << server.error().message();
  }
  const int client = udp_client(*server);
  ASSERT_EQ(send_nosignal(client, "six", 3), 3);
  udp_batch batch(2, 16);
  auto got = receive_n(batch, *server, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, "six");
  EXPECT_EQ(got[0].peer.family(), AF_INET6);
  ASSERT_TRUE(batch.queue(got[0].peer, bytes_of("back")));
  ASSERT_EQ(*batch.flush(*server), 1u);
  EXPECT_EQ(recv_one(client), "back");
  ::close(client);
  ::close(*server);
}

}  // namespace
}  // namespace evnet::detail
