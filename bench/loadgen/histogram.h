// Log-linear latency histogram in the style of HdrHistogram, for the load generators.
//
// Values (nanoseconds) below 2^(kSubBits+1) get a bucket each; above that every power-of-two
// range is split into 2^kSubBits equal buckets, so the relative error of a reported percentile
// is below 2^-kSubBits (< 0.8% with 7 bits) at any magnitude, and recording is a few
// instructions with no allocation. Self-contained: the load generators must not depend on evnet.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

namespace bench {

class log_linear_histogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr int kMaxLog2 = 44;  // About 4.9 hours in nanoseconds: far beyond any run.

  log_linear_histogram() : counts_(bucket_of((uint64_t{1} << kMaxLog2) - 1) + 1, 0) {}

  /// Records one value in nanoseconds (clamped to the largest bucket).
  void record(uint64_t v) {
    const uint64_t top = (uint64_t{1} << kMaxLog2) - 1;
    ++counts_[bucket_of(std::min(v, top))];
    ++total_;
    max_ = std::max(max_, v);
  }

  void reset() {
    std::fill(counts_.begin(), counts_.end(), 0);
    total_ = 0;
    max_ = 0;
  }

  uint64_t count() const { return total_; }
  uint64_t max() const { return max_; }

  /// The value at quantile q in [0, 1]: the upper edge of the bucket holding the q-th value
  /// (never an underestimate), or 0 when empty.
  uint64_t value_at(double q) const {
    if (total_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(total_));
    if (rank >= total_) rank = total_ - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen > rank) return std::min(upper_edge(i), max_);
    }
    return max_;
  }

  static size_t bucket_of(uint64_t v) {
    if (v < (uint64_t{1} << (kSubBits + 1))) return static_cast<size_t>(v);
    const int m = std::bit_width(v) - 1;  // floor(log2 v) >= kSubBits + 1
    const int shift = m - kSubBits;
    return static_cast<size_t>(shift) * (size_t{1} << kSubBits) + static_cast<size_t>(v >> shift);
  }

  static uint64_t upper_edge(size_t idx) {
    const size_t linear = size_t{1} << (kSubBits + 1);
    if (idx < linear) return idx;
    const size_t per = size_t{1} << kSubBits;
    const size_t shift = idx / per - 1;
    const uint64_t mant = idx - shift * per;
    return ((mant + 1) << shift) - 1;
  }

 private:
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  uint64_t max_ = 0;
};

}  // namespace bench
