#include "evnet/error.h"

#include <cerrno>

namespace evnet {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "evnet"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
#define EVNET_ERRC_TEXT(name, value, text) \
  case errc::name:                         \
    return text;
      EVNET_ERRC_MAP(EVNET_ERRC_TEXT)
#undef EVNET_ERRC_TEXT
    }
    return "unknown evnet error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const category instance;
  return instance;
}

std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

std::error_code last_system_error() noexcept {
  return {errno, std::system_category()};
}

}  // namespace evnet
