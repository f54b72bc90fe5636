# WebSocket layer tests (owner: protocols engineer).
# Codec tests link the codec sources on the common layer only (see tests/http.cmake).
set(EVNET_WS_CODEC_SOURCES ${PROJECT_SOURCE_DIR}/src/http/parser.cc
    ${PROJECT_SOURCE_DIR}/src/ws/deflate.cc ${PROJECT_SOURCE_DIR}/src/ws/frame.cc
    ${PROJECT_SOURCE_DIR}/src/ws/handshake.cc ${PROJECT_SOURCE_DIR}/src/ws/utf8.cc)
evnet_test(test_ws_codec LAYERS common LIBS OpenSSL::Crypto ZLIB::ZLIB SOURCES ${EVNET_WS_CODEC_SOURCES})
# ws_echo_server (EVNET_BINARY_DIR/examples/ws_echo_server) against Python's websockets client
# (tests/ws_python_client.py) and headless Chromium.
evnet_test(test_ws_example LAYERS http TIMEOUT 180 LABELS slow)
if(EVNET_BUILD_EXAMPLES)
  add_dependencies(test_ws_example ws_echo_server ws_client)
endif()
# In-process ws::server with a raw-socket client and evnet's own ws::client (several threads).
# Links zlib itself: one case compresses and inflates frames by hand, without evnet's codec.
evnet_test(test_ws_server LAYERS ws LIBS ZLIB::ZLIB LABELS tsan TIMEOUT 120)
# Write backpressure (on_high_water / on_drain, buffered_amount) against clients that stop
# reading; the server and the client run on their own threads.
# The last case runs the ws_echo_server example.
evnet_test(test_ws_backpressure LAYERS ws LABELS tsan TIMEOUT 120)
if(EVNET_BUILD_EXAMPLES)
  add_dependencies(test_ws_backpressure ws_echo_server)
endif()
