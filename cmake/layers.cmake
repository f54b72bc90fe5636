# Helpers that build evnet out of per-layer OBJECT libraries.
#
#   evnet_layer(<name> [DEPS <layer>...] [LIBS <imported targets>...])
#       OBJECT library evnet_<name> from src/<name>/*.cc (none yet is fine).
#   evnet_link_layers(<target> <layer>...)
#       Links <target> against the objects of the named layers and of every layer below them.
#   evnet_combined_libraries()
#       libevnet.a (target evnet_static, exported as evnet::evnet) and libevnet.so
#       (target evnet_shared, exported as evnet::evnet_shared) from all layer objects.

set_property(GLOBAL PROPERTY EVNET_LAYERS "")

function(evnet_layer name)
  cmake_parse_arguments(L "" "" "DEPS;LIBS" ${ARGN})
  file(GLOB srcs CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/src/${name}/*.cc")
  if(NOT srcs)
    # An empty layer still needs one translation unit to be a valid OBJECT library.
    set(stub "${PROJECT_BINARY_DIR}/layer_stub_${name}.cc")
    file(WRITE "${stub}" "// layer ${name} has no sources yet\nnamespace evnet::detail { [[maybe_unused]] static int layer_stub_${name}; }\n")
    set(srcs "${stub}")
  endif()
  add_library(evnet_${name} OBJECT ${srcs})
  set_target_properties(evnet_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  # The library calls user handlers through virtual functions whose overrides it never sees.
  # GCC's speculative devirtualization guesses the handler base's default instead, adding a
  # vtable load, compare and branch to every call (one per message in conn::on_poll_event)
  # that a real program never takes.
  target_compile_options(evnet_${name} PRIVATE
    $<$<CXX_COMPILER_ID:GNU>:-fno-devirtualize-speculatively>)
  target_include_directories(evnet_${name}
    PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  foreach(dep IN LISTS L_DEPS)
    target_link_libraries(evnet_${name} PUBLIC evnet_${dep})
  endforeach()
  if(L_LIBS)
    target_link_libraries(evnet_${name} PUBLIC ${L_LIBS})
  endif()
  set_property(GLOBAL PROPERTY EVNET_LAYER_DEPS_${name} "${L_DEPS}")
  set_property(GLOBAL APPEND PROPERTY EVNET_LAYERS ${name})
endfunction()

# Collects <layer> and everything below it, lowest first.
function(_evnet_layer_closure out)
  set(result "")
  foreach(layer IN LISTS ARGN)
    get_property(deps GLOBAL PROPERTY EVNET_LAYER_DEPS_${layer})
    if(deps)
      _evnet_layer_closure(sub ${deps})
      list(APPEND result ${sub})
    endif()
    list(APPEND result ${layer})
  endforeach()
  list(REMOVE_DUPLICATES result)
  set(${out} "${result}" PARENT_SCOPE)
endfunction()

function(evnet_link_layers target)
  _evnet_layer_closure(layers ${ARGN})
  foreach(layer IN LISTS layers)
    target_link_libraries(${target} PRIVATE evnet_${layer})
  endforeach()
endfunction()

function(evnet_combined_libraries)
  get_property(layers GLOBAL PROPERTY EVNET_LAYERS)
  set(objs "")
  set(libs "")
  foreach(layer IN LISTS layers)
    list(APPEND objs $<TARGET_OBJECTS:evnet_${layer}>)
    get_target_property(layer_libs evnet_${layer} INTERFACE_LINK_LIBRARIES)
    foreach(lib IN LISTS layer_libs)
      if(NOT lib MATCHES "^evnet_")
        list(APPEND libs ${lib})
      endif()
    endforeach()
  endforeach()
  list(REMOVE_DUPLICATES libs)
  foreach(kind static shared)
    string(TOUPPER ${kind} KIND)
    add_library(evnet_${kind} ${KIND} ${objs})
    set_target_properties(evnet_${kind} PROPERTIES OUTPUT_NAME evnet LINKER_LANGUAGE CXX
      VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR})
    target_include_directories(evnet_${kind} PUBLIC
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    target_compile_features(evnet_${kind} PUBLIC cxx_std_20)
    target_link_libraries(evnet_${kind} PUBLIC ${libs})
  endforeach()
  set_target_properties(evnet_static PROPERTIES EXPORT_NAME evnet)
  set_target_properties(evnet_shared PROPERTIES EXPORT_NAME evnet_shared)
  add_library(evnet::evnet ALIAS evnet_static)
  add_library(evnet::evnet_shared ALIAS evnet_shared)
endfunction()
