// Tests of evnet::ring_buffer: lazy allocation, growth, wrap-around views, release.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "evnet/ring_buffer.h"  // Test that the header is self-contained.

namespace evnet {
namespace {

TEST(ring_buffer, empty_ring_holds_no_memory) {
  ring_buffer r;
  EXPECT_EQ(r.capacity(), 0u);
  EXPECT_TRUE(r.empty());
  EXPECT_TRUE(r.peek().empty());
  EXPECT_EQ(r.discard(10), 0u);
  iovec iov[2];
  EXPECT_EQ(r.free_space(iov), 0);
  EXPECT_EQ(r.data_iov(iov), 0);
}

TEST(ring_buffer, append_peek_discard) {
  ring_buffer r;
  r.append("hello world");
  EXPECT_EQ(r.size(), 11u);
  EXPECT_EQ(r.capacity(), ring_buffer::kMinCapacity);
  EXPECT_EQ(to_string(r.peek(5)), "hello");
  EXPECT_EQ(r.discard(6), 6u);
  EXPECT_EQ(to_string(r.peek()), "world");
  char buf[8] = {};
  EXPECT_EQ(r.read(buf, sizeof buf), 5u);
  EXPECT_EQ(std::string(buf, 5), "world");
  EXPECT_TRUE(r.empty());
}

TEST(ring_buffer, wrap_around_gives_two_pieces) {
  ring_buffer r;
  r.reserve(16);
  const std::size_t cap = r.capacity();
  r.append(std::string(cap - 4, 'a'));
  r.discard(cap - 8);   // 4 'a' left near the end
  r.append("bcdefgh");  // wraps
  const input_view v = r.peek();
  EXPECT_EQ(v.size(), 11u);
  EXPECT_EQ(v.first.size(), 8u);  // 4 old bytes + 4 new ones up to the end
  EXPECT_EQ(v.second.size(), 3u);
  EXPECT_EQ(to_string(v), "aaaabcdefgh");
  EXPECT_EQ(r.capacity(), cap);  // no growth was needed
  iovec iov[2];
  EXPECT_EQ(r.data_iov(iov), 2);
}

TEST(ring_buffer, growth_keeps_order_across_wrap) {
  ring_buffer r;
  std::string expect;
  for (int i = 0; i < 1000; ++i) {
    const std::string chunk = std::to_string(i) + ",";
    r.append(chunk);
    expect += chunk;
    if (i % 3 == 0) {
      const std::size_t n = r.discard(2);
      expect.erase(0, n);
    }
  }
  EXPECT_EQ(to_string(r.peek()), expect);
  EXPECT_EQ(r.capacity() & (r.capacity() - 1), 0u) << "power of two";
}

TEST(ring_buffer, free_space_and_commit) {
  ring_buffer r;
  r.reserve(100);
  iovec iov[2];
  const int n = r.free_space(iov);
  ASSERT_GE(n, 1);
  std::memcpy(iov[0].iov_base, "xyz", 3);
  r.commit(3);
  EXPECT_EQ(to_string(r.peek()), "xyz");
}

TEST(ring_buffer, release_frees_memory) {
  ring_buffer r;
  r.append(std::string(5000, 'z'));
  EXPECT_GE(r.capacity(), 5000u);
  r.release();
  EXPECT_EQ(r.capacity(), 0u);
  EXPECT_TRUE(r.empty());
  r.append("again");
  EXPECT_EQ(to_string(r.peek()), "again");
}

TEST(ring_buffer, move_transfers_contents) {
  ring_buffer a;
  a.append("moved");
  ring_buffer b(std::move(a));
  EXPECT_EQ(to_string(b.peek()), "moved");
  EXPECT_EQ(a.capacity(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty
  ring_buffer c;
  c = std::move(b);
  EXPECT_EQ(to_string(c.peek()), "moved");
}

}  // namespace
}  // namespace evnet
