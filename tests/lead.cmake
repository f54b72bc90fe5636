# Project-wide checks: the installed package works for an out-of-tree consumer, and every
# public header compiles on its own.
add_test(NAME install_consumer
  COMMAND ${CMAKE_COMMAND}
    -DBINARY_DIR=${PROJECT_BINARY_DIR} -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
    -DWORK_DIR=${PROJECT_BINARY_DIR}/consumer-test
    "-DCXX_FLAGS=${CMAKE_CXX_FLAGS}" "-DLINKER_FLAGS=${CMAKE_EXE_LINKER_FLAGS}"
    -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
    -P ${PROJECT_SOURCE_DIR}/cmake/consumer_test.cmake)
set_tests_properties(install_consumer PROPERTIES TIMEOUT 300 LABELS slow)

# "Test that the header file is self-contained" (Asio's rule): one TU per public header.
file(GLOB_RECURSE public_headers CONFIGURE_DEPENDS
  RELATIVE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/include/evnet/*.h)
set(header_tus "")
foreach(h IN LISTS public_headers)
  string(MAKE_C_IDENTIFIER "${h}" id)
  set(tu ${PROJECT_BINARY_DIR}/header_check/${id}.cc)
  file(CONFIGURE OUTPUT ${tu} CONTENT "#include <${h}>\n#include <${h}>  // and include guards work\n")
  list(APPEND header_tus ${tu})
endforeach()
add_library(header_self_contained OBJECT ${header_tus})
target_include_directories(header_self_contained PRIVATE ${PROJECT_SOURCE_DIR}/include)

# The README's C++ snippets compile against the current API (one translation unit each), so
# the front page cannot drift from the headers.
file(READ ${PROJECT_SOURCE_DIR}/README.md readme)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/README.md)
# CMake lists are ';'-separated and bracket-aware, so protect those characters of the code.
string(REPLACE ";" "<SEMICOLON>" readme "${readme}")
string(REPLACE "[" "<LBRACKET>" readme "${readme}")
string(REPLACE "]" "<RBRACKET>" readme "${readme}")
string(REGEX MATCHALL "```cpp\n[^`]*```" snippets "${readme}")
set(snippet_tus "")
set(i 0)
foreach(snippet IN LISTS snippets)
  string(REGEX REPLACE "^```cpp\n" "" code "${snippet}")
  string(REGEX REPLACE "```$" "" code "${code}")
  string(REPLACE "<SEMICOLON>" ";" code "${code}")
  string(REPLACE "<LBRACKET>" "[" code "${code}")
  string(REPLACE "<RBRACKET>" "]" code "${code}")
  math(EXPR i "${i} + 1")
  set(tu ${PROJECT_BINARY_DIR}/readme_snippets/snippet_${i}.cc)
  file(CONFIGURE OUTPUT ${tu} CONTENT "// Extracted from README.md (snippet ${i}).\n${code}" @ONLY)
  list(APPEND snippet_tus ${tu})
endforeach()
if(snippet_tus)
  add_library(readme_snippets OBJECT ${snippet_tus})
  target_include_directories(readme_snippets PRIVATE ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(readme_snippets PRIVATE OpenSSL::Crypto ZLIB::ZLIB)
endif()
