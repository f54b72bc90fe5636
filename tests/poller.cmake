# Poller layer tests (owner: poller engineer). Real descriptors only: socketpairs, pipes,
# eventfds, TCP on 127.0.0.1. The task and error suites start threads, so they also run in the
# ThreadSanitizer pass (label tsan).
evnet_test(test_poller_semantics LAYERS poller)
evnet_test(test_poller_tasks LAYERS poller LABELS tsan TIMEOUT 300)
evnet_test(test_poller_errors LAYERS poller LABELS tsan)

# The kqueue backend cannot run here (Linux CI, and Debian 12 has no libkqueue), but it must
# keep compiling as the backend interface changes: build it against a minimal stand-in for
# <sys/event.h>, with and without EVFILT_USER (the self-pipe fallback). Compile only.
foreach(variant IN ITEMS user nouser)
  add_library(poller_kqueue_compile_check_${variant} OBJECT ${PROJECT_SOURCE_DIR}/src/poller/kqueue.cc)
  target_include_directories(poller_kqueue_compile_check_${variant} PRIVATE
    ${CMAKE_CURRENT_SOURCE_DIR}/kqueue_shim ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/include)
  target_compile_definitions(poller_kqueue_compile_check_${variant} PRIVATE EVNET_KQUEUE_SHIM)
  if(variant STREQUAL "nouser")
    target_compile_definitions(poller_kqueue_compile_check_${variant} PRIVATE
      EVNET_KQUEUE_SHIM_NO_USER)
  endif()
endforeach()

# examples/poll_echo end to end (its contract and real echo traffic). The path is compiled in;
# without examples (tsan preset) the cases skip.
evnet_test(test_poll_echo LAYERS poller TIMEOUT 180)
if(TARGET test_poll_echo AND EVNET_BUILD_EXAMPLES)
  target_compile_definitions(test_poll_echo PRIVATE
    "EVNET_POLL_ECHO_PATH=\"$<TARGET_FILE:poll_echo>\"")
  add_dependencies(test_poll_echo poll_echo)
endif()
