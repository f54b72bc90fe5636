# kqueue backend tests on Linux, through an emulation (owner: kqueue engineer).
#
# src/poller/kqueue.cc cannot run against a BSD kernel here, so it runs against
# tests/kqueue_shim/kqueue_emul.cc: a user-space kqueue()/kevent() over epoll, written for these
# tests (what it models and what it does not is listed at its top). The poller layer's sources
# are compiled a second time with EVNET_KQUEUE_SHIM, which enables the kqueue backend against
# tests/kqueue_shim/sys/event.h; the production library is unchanged (kqueue unsupported on
# Linux). Two variants, as the compile check in tests/poller.cmake: "user" (wake-up through
# EVFILT_USER) and "nouser" (EVFILT_USER missing, wake-up through kqueue.cc's self-pipe).
#
# 1. The poller engineer's suites run against each variant with EVNET_POLLER=kqueue, under the
#    name prefixes "kqueue." and "kqueue_nouser.", as tests/poller_io_uring.cmake does for
#    io_uring. Filtered out, each for a reason that has nothing to do with kqueue.cc's logic:
#    - cases that open epoll explicitly (open_epoll_poller(): epoll's identity, its kernel error
#      codes, its wake-up eventfd's counter) would only re-test epoll; test_poller_kqueue.cc
#      checks the kqueue side of the same contracts (closed descriptors, stale registrations);
#    - kqueue_backend_is_unsupported_on_linux and env_var_selects_backend_for_automatic assert
#      that the production Linux build has no kqueue, which this build deliberately has;
#    - read_write_interest_reports_both_in_one_call: kqueue reports each filter separately, so
#      a descriptor readable and writable at once gets two callbacks in one round, a documented
#      difference (include/evnet/poller.h, kqueue.cc's header comment), not a bug;
#    - pipe_reader_closed_reports_error_to_writer: on kqueue a pipe whose reader closed is
#      EV_EOF on the write filter with no error code (FreeBSD's filt_pipewrite), which
#      io_event documents as hangup without error; epoll's EPOLLERR has no kqueue counterpart.
# 2. test_poller_kqueue.cc: the emulation's own semantics (EV_DISPATCH, EV_RECEIPT errors,
#    EV_EOF, EVFILT_USER, stale descriptors) and the kqueue versions of the epoll-only cases.
if(NOT CMAKE_SYSTEM_NAME STREQUAL "Linux")
  return()
endif()

set(_evnet_kq_filtered
  PollerSemantics.backend_is_epoll_and_array_starts_at_128
  PollerSemantics.rounds_without_foreign_tasks_make_no_read_or_write_syscalls
  PollerSemantics.read_write_interest_reports_both_in_one_call
  PollerSemantics.pipe_reader_closed_reports_error_to_writer
  PollerErrors.add_closed_fd_is_bad_file_descriptor
  PollerErrors.second_attachment_for_same_fd_is_already_registered
  PollerErrors.add_regular_file_is_operation_not_permitted
  PollerErrors.remove_after_fd_closed_reports_ebadf_and_forgets_attachment
  PollerErrors.modify_after_fd_closed_reports_system_error
  PollerErrors.kqueue_backend_is_unsupported_on_linux
  PollerErrors.env_var_selects_backend_for_automatic
  PollerTasks.wakeups_are_coalesced_many_triggers_one_write
  PollerTasks.wakeups_coalesced_across_four_producer_threads
  PollerTasks.trigger_from_the_loop_needs_no_wakeup_write)
list(JOIN _evnet_kq_filtered ":" _evnet_kq_filter)

# The ENVIRONMENT list's separators must be escaped to reach the generated test script as one
# value (the GoogleTest module expands it several times). Seven backslashes after parsing, found
# by looking at the generated tests/*_tests.cmake (evnet_test() passes its list through one
# more variable and uses eight).
set(_evnet_kq_sep "\\\\\\\\\\\\\\;")
set(_evnet_kq_env
  "EVNET_POLLER=kqueue${_evnet_kq_sep}EVNET_SOURCE_DIR=${PROJECT_SOURCE_DIR}${_evnet_kq_sep}EVNET_BINARY_DIR=${PROJECT_BINARY_DIR}")

file(GLOB _evnet_kq_poller_srcs CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/src/poller/*.cc")

foreach(_variant IN ITEMS user nouser)
  set(_lib evnet_poller_kqemu_${_variant})
  set(_prefix "kqueue.")
  set(_suffix "_kqueue")
  if(_variant STREQUAL "nouser")
    set(_prefix "kqueue_nouser.")
    set(_suffix "_kqueue_nouser")
  endif()
  add_library(${_lib} OBJECT ${_evnet_kq_poller_srcs}
    ${CMAKE_CURRENT_SOURCE_DIR}/kqueue_shim/kqueue_emul.cc)
  target_include_directories(${_lib}
    PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/kqueue_shim ${PROJECT_SOURCE_DIR}/include
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  # Built as the poller layer is (cmake/layers.cmake): with -fPIC. Without it GCC's tsan build
  # inlines differently and raises a -Wmaybe-uninitialized false positive in poller.cc.
  set_target_properties(${_lib} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_compile_definitions(${_lib} PUBLIC EVNET_KQUEUE_SHIM)
  if(_variant STREQUAL "nouser")
    target_compile_definitions(${_lib} PUBLIC EVNET_KQUEUE_SHIM_NO_USER)
  endif()
  target_link_libraries(${_lib} PUBLIC evnet_common)

  foreach(_suite semantics tasks errors kqueue)
    set(_src ${CMAKE_CURRENT_SOURCE_DIR}/test_poller_${_suite}.cc)
    if(NOT EXISTS "${_src}")
      continue()
    endif()
    set(_exe test_poller_${_suite}${_suffix})
    if(_suite STREQUAL "kqueue")
      set(_exe test_poller_kqueue_emul${_suffix})
    endif()
    add_executable(${_exe} ${_src})
    target_link_libraries(${_exe} PRIVATE ${_lib} evnet_common GTest::gtest GTest::gmock
                          GTest::gtest_main)
    target_include_directories(${_exe} PRIVATE ${PROJECT_SOURCE_DIR}/src
                               ${PROJECT_SOURCE_DIR}/tests)
    target_compile_definitions(${_exe} PRIVATE
      EVNET_SOURCE_DIR_DEFAULT="${PROJECT_SOURCE_DIR}"
      EVNET_BINARY_DIR_DEFAULT="${PROJECT_BINARY_DIR}")
    # Same labels and timeouts as tests/poller.cmake. An empty LABELS value would swallow the
    # next keyword, so the pair is passed whole or not at all.
    set(_labels LABELS tsan)
    set(_timeout 120)
    set(_filter "-${_evnet_kq_filter}")
    if(_suite STREQUAL "semantics")
      set(_labels "")
    elseif(_suite STREQUAL "tasks")
      set(_timeout 300)
    elseif(_suite STREQUAL "kqueue")
      set(_labels "")  # single-threaded, as the semantics suite
      set(_filter "*")
    endif()
    if(_labels)
      evnet_tsan_test_target(${_exe})
    endif()
    gtest_discover_tests(${_exe} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
      TEST_PREFIX "${_prefix}" TEST_FILTER "${_filter}"
      PROPERTIES TIMEOUT ${_timeout} ${_labels} ENVIRONMENT "${_evnet_kq_env}")
  endforeach()
endforeach()

# 3. The event layer as it is built on a BSD: its sources compiled again with EVNET_KQUEUE_SHIM
#    (no signalfd: signal events go through the self-pipe) over the emulated kqueue poller
#    (EVTFILT_USER variant), and the event suites run against it with EVNET_POLLER=kqueue.
file(GLOB _evnet_kq_event_srcs CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/src/event/*.cc")
add_library(evnet_event_kqemu OBJECT ${_evnet_kq_event_srcs})
target_include_directories(evnet_event_kqemu PRIVATE ${PROJECT_SOURCE_DIR}/src)
set_target_properties(evnet_event_kqemu PROPERTIES POSITION_INDEPENDENT_CODE ON)
target_link_libraries(evnet_event_kqemu PUBLIC evnet_poller_kqemu_user)
foreach(_suite event event_timers event_signals)
  set(_exe test_${_suite}_kqueue)
  add_executable(${_exe} ${CMAKE_CURRENT_SOURCE_DIR}/test_${_suite}.cc)
  target_link_libraries(${_exe} PRIVATE evnet_event_kqemu evnet_poller_kqemu_user evnet_common
                        GTest::gtest GTest::gtest_main)
  target_include_directories(${_exe} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
  gtest_discover_tests(${_exe} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
    TEST_PREFIX "kqueue." PROPERTIES TIMEOUT 120 ENVIRONMENT "${_evnet_kq_env}")
endforeach()
