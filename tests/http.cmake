# HTTP/1.1 layer tests (owner: protocols engineer).
# The codec tests build the codec sources directly on the common layer: the codecs do not depend
# on the net layer, and this keeps them buildable while the layers below are being changed.
set(EVNET_HTTP_CODEC_SOURCES ${PROJECT_SOURCE_DIR}/src/http/parser.cc
    ${PROJECT_SOURCE_DIR}/src/http/response.cc)
evnet_test(test_http_parser LAYERS common SOURCES ${EVNET_HTTP_CODEC_SOURCES})
# In-process server tests (several threads: labelled tsan).
evnet_test(test_http_server LAYERS http LABELS tsan TIMEOUT 120)
# The http_server example (EVNET_BINARY_DIR/examples/http_server) driven by sockets and curl.
evnet_test(test_http_example LAYERS http TIMEOUT 120)
if(EVNET_BUILD_EXAMPLES)
  add_dependencies(test_http_example http_server)
endif()
# Router path patterns (:name, *name): matching tables, refused routes, and the server over
# sockets (the server runs on its own thread: labelled tsan).
evnet_test(test_http_router LAYERS http LABELS tsan TIMEOUT 60)
# Streaming request bodies (router::stream, body_reader) over sockets; the server runs on its
# own thread: labelled tsan.
evnet_test(test_http_stream LAYERS http LABELS tsan TIMEOUT 120)
# The upload_server example (streaming request bodies) driven by curl.
evnet_test(test_http_upload_example LAYERS http LIBS ZLIB::ZLIB TIMEOUT 180)
if(EVNET_BUILD_EXAMPLES)
  add_dependencies(test_http_upload_example upload_server)
endif()
