# Micro-benchmarks of the event layer (owned by the event engineer).
# timers_bench compares evnet's timer structures with libevent's evtimer_add/evtimer_del.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(LIBEVENT_CORE QUIET IMPORTED_TARGET libevent_core)
endif()
if(TARGET PkgConfig::LIBEVENT_CORE)
  evnet_micro(timers_bench LAYERS event LIBS PkgConfig::LIBEVENT_CORE)
else()
  message(STATUS "libevent_core not found: skipping timers_bench (scripts/deps bench)")
endif()
