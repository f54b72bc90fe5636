# Tests of the net layer's engine, loops, connections and buffers (owned by the net-core
# engineer). Each TEST is its own process (see tests/CMakeLists.txt); tests that use more than
# one thread are labelled tsan so they also run under ThreadSanitizer.
evnet_test(test_ring_buffer LAYERS net)
evnet_test(test_net_engine LAYERS net LABELS tsan)
evnet_test(test_net_faults LAYERS net LABELS tsan TIMEOUT 180)
evnet_test(test_net_client LAYERS net LABELS tsan)
evnet_test(test_net_transports LAYERS net LABELS tsan)
evnet_test(test_net_threads LAYERS net LABELS tsan)
evnet_test(test_net_adopt LAYERS net LABELS tsan)
