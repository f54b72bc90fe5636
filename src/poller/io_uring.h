// evnet — poller internals: the io_uring backend's factory (io_uring.cc). Internal, not installed.
#pragma once

#include "poller/backend.h"

namespace evnet::detail {

/// Opens an io_uring readiness backend. Returns errc::unsupported where this build has no
/// <linux/io_uring.h>, or where io_uring_setup fails because the kernel lacks io_uring, has it
/// disabled (kernel.io_uring_disabled, seccomp, io_uring_group) or is older than 5.11 (no
/// IORING_FEAT_EXT_ARG). Safe from any thread.
result<std::unique_ptr<poller_backend>> make_io_uring_backend(const poller_options& options);

}  // namespace evnet::detail
