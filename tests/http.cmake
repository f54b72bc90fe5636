# HTTP/1.1 layer tests (owner: protocols engineer).
# The codec tests build the codec sources directly on the common layer: the codecs do not depend
# on the net layer, and this keeps them buildable while the layers below are being changed.
set(EVNET_HTTP_CODEC_SOURCES ${PROJECT_SOURCE_DIR}/src/http/parser.cc
    ${PROJECT_SOURCE_DIR}/src/http/response.cc)
evnet_test(test_http_parser LAYERS common SOURCES ${EVNET_HTTP_CODEC_SOURCES})
