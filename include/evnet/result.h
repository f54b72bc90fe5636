// evnet — result<T>: a value or a std::error_code (a small std::expected for C++20).
//
// This is a public header.
#pragma once

#include <cassert>
#include <optional>
#include <system_error>
#include <utility>

#include "evnet/error.h"

namespace evnet {

/// Holds either a T or the error_code explaining why there is none.
/// Accessing value() of an error result is a programming error (asserted in debug builds).
template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  result(std::error_code ec)                     // NOLINT(google-explicit-constructor)
      : code_(ec.value()), category_(&ec.category()) {
    assert(ec);
  }
  result(errc e) : result(make_error_code(e)) {}  // NOLINT(google-explicit-constructor)

  bool has_value() const noexcept { return value_.has_value(); }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & {
    assert(has_value());
    return *value_;
  }
  const T& value() const& {
    assert(has_value());
    return *value_;
  }
  T&& value() && {
    assert(has_value());
    return std::move(*value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  /// The error; a default (false) error_code when the result holds a value.
  std::error_code error() const noexcept {
    return category_ != nullptr ? std::error_code(code_, *category_) : std::error_code();
  }

 private:
  std::optional<T> value_;
  // The error as its two parts rather than a std::error_code member: a default-constructed
  // std::error_code calls std::system_category(), an out-of-line function, and a successful
  // result is built on every poll round.
  int code_ = 0;
  const std::error_category* category_ = nullptr;
};

}  // namespace evnet
