# Poller layer tests (owner: poller engineer). Real descriptors only: socketpairs, pipes,
# eventfds, TCP on 127.0.0.1. The task and error suites start threads, so they also run in the
# ThreadSanitizer pass (label tsan).
evnet_test(test_poller_semantics LAYERS poller)
evnet_test(test_poller_tasks LAYERS poller LABELS tsan TIMEOUT 300)
evnet_test(test_poller_errors LAYERS poller LABELS tsan)
