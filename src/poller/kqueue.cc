// evnet — kqueue backend (BSD/macOS). See backend.h for the contract.
#include "poller/backend.h"

namespace evnet::detail {
// The kqueue backend proper is being written; until then this build has none.
result<std::unique_ptr<poller_backend>> make_kqueue_backend(const poller_options&) {
  return errc::unsupported;
}
}  // namespace evnet::detail
