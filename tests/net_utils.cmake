# Tests of the net layer's self-contained building blocks: addresses, sockets, framing, UDP
# batching. They build their sources directly (SOURCES) on top of the common layer so that they do
# not depend on the rest of src/net/ (the engine), which is developed at the same time.
set(EVNET_NETUTIL_SRC ${PROJECT_SOURCE_DIR}/src/net)
evnet_test(test_address LAYERS common SOURCES ${EVNET_NETUTIL_SRC}/address.cc)
evnet_test(test_socket LAYERS common
  SOURCES ${EVNET_NETUTIL_SRC}/address.cc ${EVNET_NETUTIL_SRC}/socket.cc)
evnet_test(test_framing LAYERS common SOURCES ${EVNET_NETUTIL_SRC}/framing.cc)
evnet_test(test_udp_batch LAYERS common
  SOURCES ${EVNET_NETUTIL_SRC}/address.cc ${EVNET_NETUTIL_SRC}/socket.cc
          ${EVNET_NETUTIL_SRC}/udp_batch.cc)
evnet_test(test_udp_batch_fallback LAYERS common
  SOURCES ${EVNET_NETUTIL_SRC}/address.cc ${EVNET_NETUTIL_SRC}/socket.cc
          ${EVNET_NETUTIL_SRC}/udp_batch.cc)
target_compile_definitions(test_udp_batch_fallback PRIVATE EVNET_HAVE_MMSG=0)
