// evnet — detail: a 4-ary min-heap over evnet::detail::timer_node.
//
// Internal header. The array holds {deadline, node*} pairs so sifting compares keys without
// touching the nodes (one cache line holds a parent's four children); each node stores its
// array index in `pos`, which makes cancel O(log n) without a search.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "evnet/detail/timer_node.h"

namespace evnet::detail {

class timer_heap {
 public:
  timer_heap() = default;
  timer_heap(const timer_heap&) = delete;
  timer_heap& operator=(const timer_heap&) = delete;

  std::size_t size() const noexcept { return heap_.size(); }
  bool empty() const noexcept { return heap_.empty(); }
  void reserve(std::size_t n) { heap_.reserve(n); }

  /// Links `n` (not queued) with `deadline_ns`. O(log n); allocates only when the array grows.
  void add(timer_node* n, std::int64_t deadline_ns) {
    assert(!n->queued());
    n->deadline = deadline_ns;
    heap_.push_back({deadline_ns, n});
    sift_up(heap_.size() - 1);
  }

  /// Unlinks a queued node. O(log n).
  void remove(timer_node* n) noexcept {
    assert(n->queued());
    const std::size_t i = n->pos;
    n->pos = timer_node::kNotQueued;
    const entry last = heap_.back();
    heap_.pop_back();
    if (i == heap_.size()) {
      return;
    }
    heap_[i] = last;
    last.node->pos = static_cast<std::uint32_t>(i);
    if (i > 0 && last.deadline < heap_[(i - 1) / 4].deadline) {
      sift_up(i);
    } else {
      sift_down(i);
    }
  }

  /// The earliest deadline, exactly.
  std::optional<std::int64_t> next_deadline() const noexcept {
    if (heap_.empty()) {
      return std::nullopt;
    }
    return heap_.front().deadline;
  }

  /// Pops every node with deadline <= now_ns and calls fire(node) for each.
  template <class Fire>
  std::size_t expire(std::int64_t now_ns, Fire&& fire) {
    std::size_t fired = 0;
    while (!heap_.empty() && heap_.front().deadline <= now_ns) {
      timer_node* n = heap_.front().node;
      remove(n);
      ++fired;
      fire(n);
    }
    return fired;
  }

 private:
  struct entry {
    std::int64_t deadline;
    timer_node* node;
  };

  void sift_up(std::size_t i) noexcept {
    const entry e = heap_[i];
    while (i > 0) {
      const std::size_t parent = (i - 1) / 4;
      if (heap_[parent].deadline <= e.deadline) {
        break;
      }
      heap_[i] = heap_[parent];
      heap_[i].node->pos = static_cast<std::uint32_t>(i);
      i = parent;
    }
    heap_[i] = e;
    e.node->pos = static_cast<std::uint32_t>(i);
  }

  void sift_down(std::size_t i) noexcept {
    const entry e = heap_[i];
    const std::size_t n = heap_.size();
    for (;;) {
      const std::size_t first = 4 * i + 1;
      if (first >= n) {
        break;
      }
      std::size_t best = first;
      const std::size_t end = first + 4 < n ? first + 4 : n;
      for (std::size_t c = first + 1; c < end; ++c) {
        if (heap_[c].deadline < heap_[best].deadline) {
          best = c;
        }
      }
      if (heap_[best].deadline >= e.deadline) {
        break;
      }
      heap_[i] = heap_[best];
      heap_[i].node->pos = static_cast<std::uint32_t>(i);
      i = best;
    }
    heap_[i] = e;
    e.node->pos = static_cast<std::uint32_t>(i);
  }

  std::vector<entry> heap_;
};

}  // namespace evnet::detail
