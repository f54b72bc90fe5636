// evnet — detail: the intrusive node every pending timer carries.
//
// Internal header (included by evnet/event.h); not part of the public API. Both timer
// structures in src/event/ (the hierarchical wheel and the 4-ary heap) link this same node, so
// an event_base can switch structure at creation time without changing the event layout.
#pragma once

#include <cstdint>

namespace evnet::detail {

/// One pending (or idle) timer. Owned by its event; the timer structure only links it.
/// The structure never allocates per node: the wheel links `next`/`pprev` into a slot list,
/// the heap stores {deadline, node*} in its array and keeps the position in `pos`.
/// All fields are loop-thread only.
struct timer_node {
  static constexpr std::uint32_t kNotQueued = 0xffffffffU;

  timer_node* next = nullptr;      ///< wheel: next node in the slot list
  timer_node** pprev = nullptr;    ///< wheel: the pointer that points at this node
  std::int64_t deadline = 0;       ///< absolute steady-clock nanoseconds
  std::uint32_t pos = kNotQueued;  ///< wheel: level*64+slot; heap: array index
  std::uint32_t spare = 0;         ///< free for the owner's use (the event base: arm order)

  /// True while the node is linked into a timer structure.
  bool queued() const noexcept { return pos != kNotQueued; }
};

static_assert(sizeof(timer_node) == 32, "a pending timer must stay small");

}  // namespace evnet::detail
