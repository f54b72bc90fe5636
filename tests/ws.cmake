# WebSocket layer tests (owner: protocols engineer).
# Codec tests link the codec sources on the common layer only (see tests/http.cmake).
set(EVNET_WS_CODEC_SOURCES ${PROJECT_SOURCE_DIR}/src/http/parser.cc
    ${PROJECT_SOURCE_DIR}/src/ws/deflate.cc ${PROJECT_SOURCE_DIR}/src/ws/frame.cc
    ${PROJECT_SOURCE_DIR}/src/ws/handshake.cc ${PROJECT_SOURCE_DIR}/src/ws/utf8.cc)
evnet_test(test_ws_codec LAYERS common LIBS OpenSSL::Crypto ZLIB::ZLIB SOURCES ${EVNET_WS_CODEC_SOURCES})
