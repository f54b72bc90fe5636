# io_uring backend tests (owner: io_uring engineer).
#
# 1. The poller engineer's suites run a second time with EVNET_POLLER=io_uring, as libevent's
#    test.sh re-runs its regress suite once per backend: the same executables, discovered again
#    under the name prefix "io_uring." (their open_poller() honours EVNET_POLLER). Cases that
#    open epoll explicitly (epoll's identity, its kernel error codes, its wake-up eventfd) would
#    only re-test epoll here, so they are filtered out; test_poller_io_uring.cc checks the same
#    contracts on io_uring.
# 2. test_poller_io_uring.cc: edges only io_uring has (CQEs in flight for a freed attachment,
#    slot reuse, CQ overflow, file references held by poll requests, refused io_uring_setup).
if(NOT CMAKE_SYSTEM_NAME STREQUAL "Linux")
  return()
endif()

set(_evnet_uring_epoll_only
  PollerSemantics.backend_is_epoll_and_array_starts_at_128
  PollerErrors.add_closed_fd_is_bad_file_descriptor
  PollerErrors.second_attachment_for_same_fd_is_already_registered
  PollerErrors.add_regular_file_is_operation_not_permitted
  PollerErrors.remove_after_fd_closed_reports_ebadf_and_forgets_attachment
  PollerErrors.modify_after_fd_closed_reports_system_error
  PollerTasks.wakeups_are_coalesced_many_triggers_one_write
  PollerTasks.wakeups_coalesced_across_four_producer_threads
  PollerTasks.trigger_from_the_loop_needs_no_wakeup_write)
list(JOIN _evnet_uring_epoll_only ":" _evnet_uring_filter)

# The ENVIRONMENT list's separators are escaped (seven backslashes after parsing, as in
# tests/poller_kqueue.cmake) so that all three entries reach the generated test script; a plain
# ';' turned the last two into property names and only EVNET_POLLER reached the tests.
set(_evnet_uring_sep "\\\\\\\\\\\\\\;")
set(_evnet_uring_env
  "EVNET_POLLER=io_uring${_evnet_uring_sep}EVNET_SOURCE_DIR=${PROJECT_SOURCE_DIR}${_evnet_uring_sep}EVNET_BINARY_DIR=${PROJECT_BINARY_DIR}")

foreach(_suite semantics tasks errors)
  if(NOT TARGET test_poller_${_suite})
    continue()
  endif()
  # Same labels and timeouts as tests/poller.cmake. An empty LABELS value would swallow the next
  # keyword, so the pair is passed whole or not at all.
  set(_labels LABELS tsan)
  set(_timeout 120)
  if(_suite STREQUAL "semantics")
    set(_labels "")
  elseif(_suite STREQUAL "tasks")
    set(_timeout 300)
  endif()
  # Where io_uring cannot be opened for a known reason (kernel.io_uring_disabled, a seccomp
  # filter, io_uring_setup refused with ENOSYS/EPERM), the suites' global environment
  # (io_uring_rerun_environment in poller_test_util.h) skips before any case runs and prints
  # the marker EVNET_IO_URING_UNAVAILABLE, which marks the ctest entry skipped. Failing to open
  # io_uring for any other reason fails; so does a case whose failure message contains
  # errc::unsupported's text (the old regex on that text turned such failures into skips).
  gtest_discover_tests(test_poller_${_suite} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
    TEST_PREFIX "io_uring." TEST_FILTER "-${_evnet_uring_filter}"
    PROPERTIES TIMEOUT ${_timeout} ${_labels}
    SKIP_REGULAR_EXPRESSION "EVNET_IO_URING_UNAVAILABLE"
    ENVIRONMENT "${_evnet_uring_env}")
endforeach()

# Registered by hand rather than with evnet_test() to mark a case skipped (not passed) when
# its fixture finds io_uring unavailable for a known reason (sysctl, seccomp).
if(EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/test_poller_io_uring.cc")
  add_executable(test_poller_io_uring test_poller_io_uring.cc)
  evnet_link_layers(test_poller_io_uring poller)
  target_include_directories(test_poller_io_uring PRIVATE ${PROJECT_SOURCE_DIR}/src
                             ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(test_poller_io_uring PRIVATE GTest::gtest GTest::gmock GTest::gtest_main)
  evnet_tsan_test_target(test_poller_io_uring)
  gtest_discover_tests(test_poller_io_uring DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT 120 LABELS tsan SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]"
    ENVIRONMENT "EVNET_SOURCE_DIR=${PROJECT_SOURCE_DIR};EVNET_BINARY_DIR=${PROJECT_BINARY_DIR}")
endif()
