# Tests of the net layer's self-contained building blocks: addresses, sockets, framing, UDP
# batching (src/net/{address,socket,framing,udp_batch}.cc, part of the net layer's objects).
evnet_test(test_address LAYERS net)
evnet_test(test_socket LAYERS net)
evnet_test(test_framing LAYERS net)
evnet_test(test_udp_batch LAYERS net)

# The same UDP tests against the portable recvmsg/sendto fallback. This target compiles its own
# copy of the sources with EVNET_HAVE_MMSG=0, so it links only the common layer (linking the net
# layer too would define udp_batch twice).
set(EVNET_NETUTIL_SRC ${PROJECT_SOURCE_DIR}/src/net)
evnet_test(test_udp_batch_fallback LAYERS common
  SOURCES ${EVNET_NETUTIL_SRC}/address.cc ${EVNET_NETUTIL_SRC}/socket.cc
          ${EVNET_NETUTIL_SRC}/udp_batch.cc)
target_compile_definitions(test_udp_batch_fallback PRIVATE EVNET_HAVE_MMSG=0)
