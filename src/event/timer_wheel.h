// evnet — detail: a hierarchical timing wheel over evnet::detail::timer_node.
//
// Internal header. Seven levels of 64 slots; level L slot s holds timers whose due tick agrees
// with the wheel's current tick above digit L and has digit L equal to s (digits are 6 bits).
// Insert and cancel are O(1) (intrusive list + one bit in a 64-bit occupancy mask per level);
// expiry jumps straight to the next occupied slot with count-trailing-zeros, so an idle wheel
// costs nothing per tick, and each timer is re-filed ("cascaded") at most once per level.
//
// Invariant (cur_ = last processed tick): every node at level L has due tick d with
// (d >> 6(L+1)) == (cur_ >> 6(L+1)) and digit_L(d) > digit_L(cur_). Therefore the lowest
// non-empty level holds the earliest timers, and when cur_ advances to a value no later than
// the earliest due tick only the slot the new cur_ enters needs re-filing.
#pragma once

#include <bit>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "evnet/detail/timer_node.h"

namespace evnet::detail {

class timer_wheel {
 public:
  static constexpr int kBits = 6;
  static constexpr int kSlots = 1 << kBits;
  static constexpr int kLevels = 7;  // 42 bits of ticks: 139 years at 1 ms
  static constexpr int kSpanBits = kBits * kLevels;
  static constexpr std::uint32_t kDuePos = kLevels * kSlots;  // the "already due" list
  static constexpr std::uint32_t kOverflowPos = kDuePos + 1;  // beyond this 2^42-tick epoch

  /// `tick_ns` is the resolution; `now_ns` is the current time (ticks before it are "done").
  explicit timer_wheel(std::int64_t tick_ns = 1'000'000, std::int64_t now_ns = 0) noexcept
      : tick_ns_(tick_ns), cur_(static_cast<std::uint64_t>(now_ns / tick_ns)) {}
  timer_wheel(const timer_wheel&) = delete;
  timer_wheel& operator=(const timer_wheel&) = delete;

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::int64_t tick_ns() const noexcept { return tick_ns_; }

  /// Links `n` (not queued) to fire once the clock reaches `deadline_ns`. O(1).
  void add(timer_node* n, std::int64_t deadline_ns) noexcept {
    assert(!n->queued());
    n->deadline = deadline_ns;
    place(n, due_tick(deadline_ns));
    ++size_;
  }

  /// Unlinks a queued node. O(1).
  void remove(timer_node* n) noexcept {
    assert(n->queued());
    unlink(n);
    --size_;
  }

  /// A lower bound of the earliest deadline (exact when it lies within the next 64 ticks), or
  /// nothing when the wheel is empty. Waiting until it and calling expire() is always correct.
  std::optional<std::int64_t> next_deadline() noexcept {
    if (size_ == 0) {
      return std::nullopt;
    }
    if (!horizon_exact_) {
      set_horizon(first_start());
      horizon_exact_ = true;
    }
    return horizon_ns_;
  }

  /// Unlinks every node whose deadline is <= now_ns and calls fire(node) for each (the node is
  /// no longer queued when fire runs, so fire may re-add it or add/remove others).
  template <class Fire>
  [[gnu::always_inline]] std::size_t expire(std::int64_t now_ns, Fire&& fire) {
    // The common round: nothing can be due before the horizon (one compare, inlined into the
    // loop; no division). cur_ is left behind; that is safe, because every node is filed
    // relative to the cur_ it was placed with, and the full pass copes with any jump of the
    // clock.
    if (now_ns < horizon_ns_) [[likely]] {
      return 0;
    }
    return expire_pass(now_ns, fire);
  }

 private:
  template <class Fire>
  [[gnu::noinline]] std::size_t expire_pass(std::int64_t now_ns, Fire& fire) {
    const auto now_tick = static_cast<std::uint64_t>(now_ns / tick_ns_);
    std::size_t fired = 0;
    for (;;) {
      while (due_ != nullptr) {
        timer_node* n = due_;
        unlink(n);
        --size_;
        ++fired;
        fire(n);
      }
      int level = 0;
      while (level < kLevels && occupied_[level] == 0) {
        ++level;
      }
      timer_node* list;
      if (level < kLevels) {
        const int slot = std::countr_zero(occupied_[level]);
        const std::uint64_t start = slot_start(level, slot);
        if (start > now_tick) {
          break;
        }
        cur_ = start;
        list = slots_[level][slot];
        slots_[level][slot] = nullptr;
        occupied_[level] &= ~(std::uint64_t{1} << slot);
      } else if (overflow_ != nullptr) {
        // Every level is empty: the next thing that can happen is entering the next epoch,
        // where the overflow nodes may fit the wheel.
        const std::uint64_t start = next_epoch();
        if (start > now_tick) {
          break;
        }
        cur_ = start;
        list = overflow_;
        overflow_ = nullptr;
      } else {
        break;
      }
      // Re-file relative to the new cur_: lower levels, the due list, or overflow again.
      while (list != nullptr) {
        timer_node* n = list;
        list = n->next;
        place(n, due_tick(n->deadline));
      }
    }
    // Safe: nothing is due by now_tick, so no level below the highest digit that changes is
    // occupied, and an occupied overflow list means now_tick is still inside this epoch.
    if (now_tick > cur_) {
      cur_ = now_tick;
    }
    set_horizon(first_start());
    horizon_exact_ = true;
    return fired;
  }

  std::uint64_t due_tick(std::int64_t deadline_ns) const noexcept {
    if (deadline_ns <= 0) {
      return 0;
    }
    // Rounded up without deadline + tick - 1, which overflows for a capped deadline.
    return static_cast<std::uint64_t>(deadline_ns / tick_ns_ + (deadline_ns % tick_ns_ != 0));
  }

  // The tick of the earliest thing expire() would have to do: fire the due list, re-file the
  // lowest occupied slot, or enter the next epoch; "never" when the wheel is empty.
  std::uint64_t first_start() const noexcept {
    if (size_ == 0) {
      return kNever;
    }
    if (due_ != nullptr) {
      return cur_;
    }
    for (int level = 0; level < kLevels; ++level) {
      if (occupied_[level] != 0) {
        return slot_start(level, std::countr_zero(occupied_[level]));
      }
    }
    return next_epoch();  // only overflow nodes remain
  }

  void set_horizon(std::uint64_t tick) noexcept {
    horizon_ = tick;
    const auto max_tick = static_cast<std::uint64_t>(INT64_MAX / tick_ns_);
    horizon_ns_ = tick >= max_tick ? INT64_MAX : static_cast<std::int64_t>(tick) * tick_ns_;
  }

  std::uint64_t next_epoch() const noexcept { return ((cur_ >> kSpanBits) + 1) << kSpanBits; }

  std::uint64_t slot_start(int level, int slot) const noexcept {
    const int shift = kBits * (level + 1);
    const std::uint64_t high = shift >= 64 ? 0 : (cur_ >> shift) << shift;
    return high | (static_cast<std::uint64_t>(slot) << (kBits * level));
  }

  void place(timer_node* n, std::uint64_t due) noexcept {
    timer_node** head;
    std::uint64_t start;
    if (due <= cur_) {
      head = &due_;
      n->pos = kDuePos;
      start = cur_;
    } else if (((due ^ cur_) >> kSpanBits) != 0) {
      // Beyond this epoch (139 years at 1 ms ticks): parked until the wheel enters the next.
      head = &overflow_;
      n->pos = kOverflowPos;
      start = next_epoch();
    } else {
      const std::uint64_t diff = due ^ cur_;
      const int level = (63 - std::countl_zero(diff)) / kBits;
      const int slot = static_cast<int>((due >> (kBits * level)) & (kSlots - 1));
      head = &slots_[level][slot];
      occupied_[level] |= std::uint64_t{1} << slot;
      n->pos = static_cast<std::uint32_t>(level * kSlots + slot);
      start = slot_start(level, slot);
    }
    // A new earliest start keeps the horizon exact if it was; otherwise it stays a lower bound.
    if (start < horizon_) {
      set_horizon(start);
    }
    n->next = *head;
    if (n->next != nullptr) {
      n->next->pprev = &n->next;
    }
    n->pprev = head;
    *head = n;
  }

  void unlink(timer_node* n) noexcept {
    *n->pprev = n->next;
    if (n->next != nullptr) {
      n->next->pprev = n->pprev;
    }
    if (n->pos < kDuePos) {
      const auto level = n->pos / kSlots;
      const auto slot = n->pos % kSlots;
      if (slots_[level][slot] == nullptr) {
        occupied_[level] &= ~(std::uint64_t{1} << slot);
        horizon_exact_ = false;  // still a lower bound: expire() may do a pass for nothing
      }
    } else {
      horizon_exact_ = false;
    }
    n->next = nullptr;
    n->pprev = nullptr;
    n->pos = timer_node::kNotQueued;
  }

  static constexpr std::uint64_t kNever = ~std::uint64_t{0};

  std::int64_t tick_ns_;
  std::uint64_t cur_;
  // A lower bound of first_start(), so that expire() can return at once in the common round
  // when nothing is due (one compare instead of a scan of the levels), exact when
  // horizon_exact_ (next_deadline() makes it exact before answering).
  std::uint64_t horizon_ = kNever;
  // horizon_ in nanoseconds (saturated), which expire() compares the clock with directly.
  std::int64_t horizon_ns_ = INT64_MAX;
  bool horizon_exact_ = true;
  std::size_t size_ = 0;
  timer_node* due_ = nullptr;
  timer_node* overflow_ = nullptr;
  std::uint64_t occupied_[kLevels] = {};
  timer_node* slots_[kLevels][kSlots] = {};
};

}  // namespace evnet::detail
